//! One request/response exchange on an open connection.

use bytes::Bytes;
use h2::client::SendRequest;
use h2::{Reason, SendStream};
use http::header::{HeaderName, HeaderValue};

use super::{Event, EventQueue, FailKind, Request};

/// How an exchange ended, for the pool.
pub enum Outcome {
    Done,
    /// Cancelled by the caller; RST_STREAM(CANCEL) sent if the stream was open.
    Cancelled,
    /// The server refused the stream unprocessed (GOAWAY below it, REFUSED_STREAM): safe to send
    /// again on another connection. `goaway` says this connection takes no new streams.
    Refused {
        request: Request,
        goaway: bool,
    },
}

/// Headers HTTP/2 forbids (connection-specific) or that it carries as pseudo-headers.
const DROPPED: [&str; 7] = [
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

pub async fn exchange(send: SendRequest<Bytes>, request: Request, events: &EventQueue) -> Outcome {
    let handle = request.handle.clone();
    let mut open: Option<SendStream<Bytes>> = None;
    let result = tokio::select! {
        biased;
        _ = handle.cancelled() => None,
        r = run(send, &request, events, &mut open) => Some(r),
    };
    match result {
        None => {
            if let Some(stream) = open.as_mut() {
                stream.send_reset(Reason::CANCEL);
            }
            Outcome::Cancelled
        }
        Some(Ok(())) => Outcome::Done,
        Some(Err(Failure::Refused { goaway })) => Outcome::Refused { request, goaway },
        Some(Err(Failure::Failed(kind, message))) => {
            events.push(Event::Fail {
                token: request.token,
                kind,
                message,
            });
            Outcome::Done
        }
    }
}

enum Failure {
    Refused { goaway: bool },
    Failed(FailKind, String),
}

/// Before any response header: an error the server caused by not processing the stream.
fn before_response(e: h2::Error) -> Failure {
    if e.is_go_away() && e.is_remote() {
        return Failure::Refused { goaway: true };
    }
    if e.reason() == Some(Reason::REFUSED_STREAM) && e.is_remote() {
        return Failure::Refused { goaway: false };
    }
    after_response(e)
}

fn after_response(e: h2::Error) -> Failure {
    if e.is_io() || e.is_go_away() {
        Failure::Failed(
            FailKind::Broken,
            "the provider closed the connection mid-response".into(),
        )
    } else if e.is_reset() && e.is_remote() {
        Failure::Failed(
            FailKind::Broken,
            format!("the provider reset the stream: {e}"),
        )
    } else {
        Failure::Failed(
            FailKind::Protocol,
            format!("malformed HTTP/2 response from the provider: {e}"),
        )
    }
}

fn build(request: &Request) -> Result<http::Request<()>, Failure> {
    let bad = |what: String| Failure::Failed(FailKind::Protocol, what);
    let scheme = if request.origin.tls { "https" } else { "http" };
    let uri = format!("{scheme}://{}{}", request.authority, request.path);
    let mut builder = http::Request::post(uri);
    let headers = builder
        .headers_mut()
        .ok_or_else(|| bad("invalid provider URL".into()))?;
    let mut agent = false;
    for (name, value) in &request.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| bad(format!("refusing to send an invalid header name {name:?}")))?;
        if DROPPED.contains(&name.as_str()) {
            continue;
        }
        let value = HeaderValue::from_str(value).map_err(|_| {
            bad(format!(
                "refusing to send an invalid value for header {name}"
            ))
        })?;
        agent |= name == http::header::USER_AGENT;
        headers.append(name, value);
    }
    if !agent {
        headers.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static("ensemble-gateway"),
        );
    }
    headers.insert(http::header::CONTENT_LENGTH, request.body.len().into());
    builder
        .body(())
        .map_err(|e| bad(format!("invalid request: {e}")))
}

async fn run(
    send: SendRequest<Bytes>,
    request: &Request,
    events: &EventQueue,
    open: &mut Option<SendStream<Bytes>>,
) -> Result<(), Failure> {
    let head = build(request)?;
    let mut send = send.ready().await.map_err(before_response)?;
    let empty = request.body.is_empty();
    let (response, stream) = send.send_request(head, empty).map_err(before_response)?;
    let stream = open.insert(stream);
    if !empty {
        send_body(stream, request.body.clone())
            .await
            .map_err(before_response)?;
    }
    let response = response.await.map_err(before_response)?;
    let (parts, mut body) = response.into_parts();
    request.handle.set_flow(body.flow_control().clone());
    let headers = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    events.push(Event::Head {
        token: request.token,
        status: parts.status.as_u16(),
        headers,
    });
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(after_response)?;
        if chunk.is_empty() {
            continue;
        }
        events.push(Event::Data {
            token: request.token,
            data: chunk,
        });
    }
    events.push(Event::End {
        token: request.token,
    });
    Ok(())
}

/// The request body, as fast as the server's window allows.
async fn send_body(stream: &mut SendStream<Bytes>, mut body: Bytes) -> Result<(), h2::Error> {
    while !body.is_empty() {
        stream.reserve_capacity(body.len());
        let granted = std::future::poll_fn(|cx| stream.poll_capacity(cx)).await;
        let n = match granted {
            Some(n) => n?,
            None => break, // the stream closed; the response future reports why
        };
        if n == 0 {
            continue;
        }
        let piece = body.split_to(n.min(body.len()));
        stream.send_data(piece, body.is_empty())?;
    }
    Ok(())
}

//! One HTTP/2 connection: TCP, TLS with ALPN (or h2c with prior knowledge), the h2 handshake.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use h2::client::SendRequest;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::{Config, FailKind, Origin};

/// Why no connection came up.
#[derive(Debug, Clone)]
pub enum ConnectError {
    Failed(FailKind, String),
    /// TLS worked but the server picked HTTP/1.1 in ALPN.
    NotHttp2,
}

/// The TLS client configuration: trusted roots from the system store, or from `SSL_CERT_FILE` /
/// `SSL_CERT_DIR` when set (the same variables OpenSSL, and so the HTTP/1.1 client, honours).
pub fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        return Err(format!("no trusted CA certificates found{why}"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// An open connection: the handle to open streams on, and the future that drives it (to spawn).
pub struct Connected {
    pub send: SendRequest<Bytes>,
    pub driver: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

pub async fn connect(
    origin: &Origin,
    config: &Config,
    tls: Option<Result<Arc<rustls::ClientConfig>, String>>,
) -> Result<Connected, ConnectError> {
    let fail = |kind, what: String| ConnectError::Failed(kind, what);
    let attempt = async {
        let tcp = TcpStream::connect((origin.host.as_str(), origin.port))
            .await
            .map_err(|e| {
                fail(
                    FailKind::Connect,
                    format!("cannot connect to the provider ({origin}): {e}"),
                )
            })?;
        let _ = tcp.set_nodelay(true);
        match tls {
            None => handshake(tcp, origin, config).await,
            Some(tls) => {
                let tls = tls.map_err(|e| {
                    fail(
                        FailKind::Connect,
                        format!("TLS to the provider ({origin}) is not possible: {e}"),
                    )
                })?;
                let name = ServerName::try_from(origin.host.clone()).map_err(|_| {
                    fail(
                        FailKind::Connect,
                        format!("{:?} is not a valid TLS server name", origin.host),
                    )
                })?;
                let stream = tokio_rustls::TlsConnector::from(tls)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| {
                        fail(
                            FailKind::Connect,
                            format!("TLS handshake with the provider ({origin}) failed: {e}"),
                        )
                    })?;
                if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
                    return Err(ConnectError::NotHttp2);
                }
                handshake(stream, origin, config).await
            }
        }
    };
    match tokio::time::timeout(config.connect_timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(fail(
            FailKind::Connect,
            format!("connecting to the provider ({origin}) timed out"),
        )),
    }
}

/// Our stream limit until the server's SETTINGS arrive; no server announces this number, so its
/// change tells that they did.
const UNSETTLED: usize = 1_000_003;

async fn handshake<T>(io: T, origin: &Origin, config: &Config) -> Result<Connected, ConnectError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let failed = |e: h2::Error| {
        ConnectError::Failed(
            FailKind::Connect,
            format!("HTTP/2 handshake with the provider ({origin}) failed: {e}"),
        )
    };
    let streams = config.max_streams_per_connection as u32;
    let (send, connection) = h2::client::Builder::new()
        .enable_push(false)
        .initial_max_send_streams(UNSETTLED)
        .initial_window_size(config.stream_window)
        .initial_connection_window_size(config.stream_window.saturating_mul(streams))
        .handshake::<T, Bytes>(io)
        .await
        .map_err(failed)?;
    // Drive the connection until the server's SETTINGS are in, so the first streams already honour
    // its SETTINGS_MAX_CONCURRENT_STREAMS (one round trip, once per connection).
    let mut connection = Box::pin(connection);
    std::future::poll_fn(|cx| match connection.as_mut().poll(cx) {
        Poll::Ready(Ok(())) => Poll::Ready(Err(ConnectError::Failed(
            FailKind::Connect,
            format!("the provider ({origin}) closed the HTTP/2 connection at once"),
        ))),
        Poll::Ready(Err(e)) => Poll::Ready(Err(failed(e))),
        Poll::Pending if connection.max_concurrent_send_streams() != UNSETTLED => {
            Poll::Ready(Ok(()))
        }
        Poll::Pending => Poll::Pending,
    })
    .await?;
    Ok(Connected {
        send,
        driver: Box::pin(async move {
            // Ends when the connection closes; its streams see the error themselves.
            let _ = connection.await;
        }),
    })
}

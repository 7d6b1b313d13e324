//! The HTTP/2 upstream pool: multiplexed streams to providers, on a tokio runtime in its own thread.
//!
//! Python submits requests (`Client::submit`) and takes what happened to them in batches
//! (`Client::drain`), woken by one byte on a pipe that the asyncio loop watches: however many
//! streams progressed, the Python thread pays one wake-up per batch, and no socket work at all.
//!
//! Per origin (scheme, host, port) at most `max_connections_per_host` connections are open; a new
//! stream goes to a connection with room under the server's SETTINGS_MAX_CONCURRENT_STREAMS, else
//! a new connection is opened (up to the cap), else it waits for a stream to end (`pool`).
//! Flow control follows the consumer: a stream's receive window is released only when Python has
//! taken the bytes (`StreamHandle::release`), so a slow reader slows the provider instead of
//! filling memory. Cancelling a stream sends RST_STREAM(CANCEL); the connection stays up.

mod bridge;
mod connect;
mod pool;
mod stream;

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};

pub use bridge::EventQueue;

/// Pool geometry and timeouts.
#[derive(Debug, Clone)]
pub struct Config {
    pub connect_timeout: Duration,
    pub max_connections_per_host: usize,
    /// Our receive window per stream: unread bytes the provider may send ahead of the consumer.
    pub stream_window: u32,
    /// Streams we open on one connection at most, whatever the server allows (the connection
    /// window is sized for this many full stream windows, so one slow stream never blocks others).
    pub max_streams_per_connection: usize,
    /// A connection with no stream for this long is closed.
    pub idle_timeout: Duration,
    /// Under load, the reader is woken at most once per this long (see `EventQueue::run_waker`):
    /// the most a busy pool adds to an event's latency.
    pub wake_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            connect_timeout: Duration::from_secs(5),
            max_connections_per_host: 100,
            stream_window: 256 * 1024,
            max_streams_per_connection: 256,
            idle_timeout: Duration::from_secs(90),
            wake_interval: Duration::from_millis(2),
        }
    }
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// One POST to a provider.
#[derive(Debug)]
pub struct Request {
    pub token: u64,
    pub origin: Origin,
    /// `host[:port]` as the URL spells it (the `:authority` pseudo-header).
    pub authority: String,
    /// Path and query.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub handle: Arc<StreamHandle>,
    /// Times this request was refused unprocessed (GOAWAY, REFUSED_STREAM) and sent again.
    pub(crate) retries: u8,
}

impl Request {
    pub fn new(
        token: u64,
        origin: Origin,
        authority: String,
        path: String,
        headers: Vec<(String, String)>,
        body: Bytes,
    ) -> Request {
        Request {
            token,
            origin,
            authority,
            path,
            headers,
            body,
            handle: Arc::new(StreamHandle::default()),
            retries: 0,
        }
    }
}

/// Why a stream failed; each maps to the error code the HTTP/1.1 client uses for the same case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailKind {
    /// No usable connection: refused, timed out, TLS or HTTP/2 handshake failed (`connect_error`).
    Connect,
    /// The connection or stream broke after the request went out (`stream_broken`).
    Broken,
    /// The provider broke the protocol (`bad_upstream_response`).
    Protocol,
}

impl FailKind {
    pub fn code(self) -> &'static str {
        match self {
            FailKind::Connect => "connect_error",
            FailKind::Broken => "stream_broken",
            FailKind::Protocol => "bad_upstream_response",
        }
    }
}

/// What happened to a stream, for Python to apply in order.
#[derive(Debug)]
pub enum Event {
    Head {
        token: u64,
        status: u16,
        headers: Vec<(String, String)>,
    },
    Data {
        token: u64,
        data: Bytes,
    },
    End {
        token: u64,
    },
    Fail {
        token: u64,
        kind: FailKind,
        message: String,
    },
    /// The server chose HTTP/1.1 in ALPN: send this request (and later ones) over HTTP/1.1.
    Fallback {
        token: u64,
    },
}

impl Event {
    pub fn token(&self) -> u64 {
        match self {
            Event::Head { token, .. }
            | Event::Data { token, .. }
            | Event::End { token }
            | Event::Fail { token, .. }
            | Event::Fallback { token } => *token,
        }
    }
}

/// The caller's grip on one stream: give flow-control credit back, or cancel it.
#[derive(Debug, Default)]
pub struct StreamHandle {
    cancelled: AtomicBool,
    notify: Notify,
    flow: Mutex<Option<h2::FlowControl>>,
}

impl StreamHandle {
    /// Stop the stream: RST_STREAM(CANCEL) if it is open, never opened if it is still queued.
    pub fn cancel(&self) {
        if !self.cancelled.swap(true, Ordering::AcqRel) {
            self.notify.notify_one();
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// The consumer took `n` bytes: the provider may send that much more.
    pub fn release(&self, n: usize) {
        if let Some(flow) = self.flow.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            // An error means the stream is already gone; nothing left to give credit to.
            let _ = flow.release_capacity(n);
        }
    }

    pub(crate) fn set_flow(&self, flow: h2::FlowControl) {
        *self.flow.lock().unwrap_or_else(|e| e.into_inner()) = Some(flow);
    }

    pub(crate) async fn cancelled(&self) {
        while !self.is_cancelled() {
            self.notify.notified().await;
        }
    }
}

pub(crate) enum Command {
    Submit(Request),
    Shutdown,
}

/// The pool as Python's thread sees it.
pub struct Client {
    commands: mpsc::UnboundedSender<Command>,
    events: Arc<EventQueue>,
    connections: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Client {
    /// Start the runtime thread.
    pub fn start(config: Config) -> std::io::Result<Client> {
        let events = Arc::new(EventQueue::new()?);
        let connections = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::unbounded_channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let dispatcher = pool::Dispatcher::new(config, events.clone(), connections.clone());
        let thread = std::thread::Builder::new()
            .name("ensemble-h2".into())
            .spawn(move || {
                runtime.block_on(dispatcher.run(rx));
                runtime.shutdown_timeout(Duration::from_millis(500));
            })?;
        Ok(Client {
            commands: tx,
            events,
            connections,
            thread: Some(thread),
        })
    }

    /// Readable whenever `drain` has something.
    pub fn wake_fd(&self) -> RawFd {
        self.events.wake_fd()
    }

    /// Queue a request; its events arrive through `drain`. Returns the stream's handle.
    pub fn submit(&self, request: Request) -> Arc<StreamHandle> {
        let handle = request.handle.clone();
        let token = request.token;
        if self.commands.send(Command::Submit(request)).is_err() {
            self.events.push_now(Event::Fail {
                token,
                kind: FailKind::Connect,
                message: "the HTTP/2 client is closed".into(),
            });
        }
        handle
    }

    pub fn drain(&self) -> Vec<Event> {
        self.events.drain()
    }

    /// Open HTTP/2 connections, all origins together.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Close every connection and stop the thread.
    pub fn close(&mut self) {
        let _ = self.commands.send(Command::Shutdown);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.close();
    }
}

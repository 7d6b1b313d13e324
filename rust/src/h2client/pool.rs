//! The dispatcher: owns every origin's connections and waiting requests; runs on the runtime thread.
//!
//! Streams and connections run as their own tasks and report back here by message, so all pool
//! state has one owner and needs no lock.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use tokio::sync::mpsc;

use super::connect::{self, ConnectError};
use super::stream::{self, Outcome};
use super::{Command, Config, Event, EventQueue, FailKind, Origin, Request};

/// A refused request is sent again at most this often (each time on another connection).
const MAX_RETRIES: u8 = 3;
const TICK: Duration = Duration::from_secs(5);
/// Pause before another connect attempt to an origin whose last one failed.
const CONNECT_BACKOFF: Duration = Duration::from_secs(1);

enum Msg {
    Connected(Origin, Result<connect::Connected, ConnectError>),
    Closed(Origin, u64),
    Finished(Origin, u64, Outcome),
}

struct Conn {
    id: u64,
    send: SendRequest<Bytes>,
    active: usize,
    /// False after GOAWAY: in-flight streams finish, new ones go elsewhere.
    accepting: bool,
    idle_since: Instant,
}

#[derive(Default)]
struct OriginPool {
    conns: Vec<Conn>,
    connecting: usize,
    waiting: VecDeque<Request>,
    /// The server answered ALPN with HTTP/1.1: every request here falls back.
    http1: bool,
    /// After a failed connect while other connections serve: no new attempt before this.
    connect_after: Option<Instant>,
}

pub struct Dispatcher {
    config: Config,
    events: Arc<EventQueue>,
    connections: Arc<AtomicUsize>,
    origins: HashMap<Origin, OriginPool>,
    tls: Option<Result<Arc<rustls::ClientConfig>, String>>,
    next_conn: u64,
    tx: mpsc::UnboundedSender<Msg>,
    rx: Option<mpsc::UnboundedReceiver<Msg>>,
}

impl Dispatcher {
    pub fn new(config: Config, events: Arc<EventQueue>, connections: Arc<AtomicUsize>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Dispatcher {
            config,
            events,
            connections,
            origins: HashMap::new(),
            tls: None,
            next_conn: 0,
            tx,
            rx: Some(rx),
        }
    }

    pub async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let Some(mut msgs) = self.rx.take() else {
            return;
        };
        let events = self.events.clone();
        let interval = self.config.wake_interval;
        tokio::spawn(async move { events.run_waker(interval).await });
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(Command::Submit(request)) => self.submit(request),
                    Some(Command::Shutdown) | None => break,
                },
                Some(msg) = msgs.recv() => self.handle(msg),
                _ = tick.tick() => self.reap_idle(),
            }
        }
        // Dropping the pools drops every connection; the runtime's shutdown ends their tasks.
    }

    fn submit(&mut self, request: Request) {
        let origin = request.origin.clone();
        let pool = self.origins.entry(origin.clone()).or_default();
        if pool.http1 {
            self.events.push(Event::Fallback {
                token: request.token,
            });
            return;
        }
        pool.waiting.push_back(request);
        self.pump(&origin);
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Connected(origin, result) => self.connected(origin, result),
            Msg::Closed(origin, id) => {
                if let Some(pool) = self.origins.get_mut(&origin) {
                    pool.conns.retain(|c| c.id != id);
                }
                self.pump(&origin);
            }
            Msg::Finished(origin, id, outcome) => {
                if let Some(pool) = self.origins.get_mut(&origin) {
                    if let Some(conn) = pool.conns.iter_mut().find(|c| c.id == id) {
                        conn.active -= 1;
                        if conn.active == 0 {
                            conn.idle_since = Instant::now();
                        }
                        if let Outcome::Refused { goaway: true, .. } = outcome {
                            conn.accepting = false;
                        }
                    }
                    // A connection that went away is dropped once its last stream ended.
                    pool.conns.retain(|c| c.accepting || c.active > 0);
                    if let Outcome::Refused { mut request, .. } = outcome {
                        if request.retries >= MAX_RETRIES {
                            self.events.push(Event::Fail {
                                token: request.token,
                                kind: FailKind::Connect,
                                message: format!(
                                    "the provider ({origin}) refused the request {} times",
                                    request.retries + 1
                                ),
                            });
                        } else {
                            request.retries += 1;
                            pool.waiting.push_front(request);
                        }
                    }
                }
                self.pump(&origin);
            }
        }
    }

    fn connected(&mut self, origin: Origin, result: Result<connect::Connected, ConnectError>) {
        let Some(pool) = self.origins.get_mut(&origin) else {
            return;
        };
        pool.connecting -= 1;
        match result {
            Ok(connected) => {
                self.next_conn += 1;
                let id = self.next_conn;
                pool.conns.push(Conn {
                    id,
                    send: connected.send,
                    active: 0,
                    accepting: true,
                    idle_since: Instant::now(),
                });
                self.connections.fetch_add(1, Ordering::Relaxed);
                let (tx, count, driver) =
                    (self.tx.clone(), self.connections.clone(), connected.driver);
                let origin_ = origin.clone();
                tokio::spawn(async move {
                    driver.await;
                    count.fetch_sub(1, Ordering::Relaxed);
                    let _ = tx.send(Msg::Closed(origin_, id));
                });
            }
            Err(ConnectError::NotHttp2) => {
                pool.http1 = true;
                for request in pool.waiting.drain(..) {
                    self.events.push(Event::Fallback {
                        token: request.token,
                    });
                }
            }
            Err(ConnectError::Failed(kind, message)) => {
                // Requests another connection can still serve keep waiting; if none is left, the
                // connect error is theirs (the gateway fails over).
                if pool.connecting == 0 && !pool.conns.iter().any(|c| c.accepting) {
                    for request in pool.waiting.drain(..) {
                        self.events.push(Event::Fail {
                            token: request.token,
                            kind,
                            message: message.clone(),
                        });
                    }
                } else {
                    pool.connect_after = Some(Instant::now() + CONNECT_BACKOFF);
                }
            }
        }
        self.pump(&origin);
    }

    /// Start what can start: waiting requests onto connections with room, new connections for
    /// the rest (up to the cap).
    fn pump(&mut self, origin: &Origin) {
        let per_conn = self.config.max_streams_per_connection;
        let cap = self.config.max_connections_per_host;
        let Some(pool) = self.origins.get_mut(origin) else {
            return;
        };
        while let Some(request) = pool.waiting.front() {
            if request.handle.is_cancelled() {
                pool.waiting.pop_front();
                continue;
            }
            let room = pool
                .conns
                .iter_mut()
                .filter(|c| {
                    c.accepting && c.active < c.send.current_max_send_streams().min(per_conn)
                })
                .max_by_key(|c| c.active); // fill busy connections first: idle ones can expire
            let Some(conn) = room else { break };
            let request = pool.waiting.pop_front().expect("front was Some");
            conn.active += 1;
            let (send, id, tx, events) = (
                conn.send.clone(),
                conn.id,
                self.tx.clone(),
                self.events.clone(),
            );
            let origin_ = origin.clone();
            tokio::spawn(async move {
                let outcome = stream::exchange(send, request, &events).await;
                let _ = tx.send(Msg::Finished(origin_, id, outcome));
            });
        }
        if pool.waiting.is_empty() || pool.connect_after.is_some_and(|t| Instant::now() < t) {
            return;
        }
        pool.connect_after = None;
        // Enough new connections for the waiting streams (each takes ~per_conn until its
        // SETTINGS say otherwise), within the cap.
        let open = pool.conns.len() + pool.connecting;
        let wanted = pool.waiting.len().div_ceil(per_conn.max(1));
        let start = wanted
            .saturating_sub(pool.connecting)
            .min(cap.saturating_sub(open));
        for _ in 0..start {
            pool.connecting += 1;
            let tls = if origin.tls {
                Some(self.tls.get_or_insert_with(connect::tls_config).clone())
            } else {
                None
            };
            let (config, tx, origin_) = (self.config.clone(), self.tx.clone(), origin.clone());
            tokio::spawn(async move {
                let result = connect::connect(&origin_, &config, tls).await;
                let _ = tx.send(Msg::Connected(origin_, result));
            });
        }
    }

    fn reap_idle(&mut self) {
        let now = Instant::now();
        let idle = self.config.idle_timeout;
        for pool in self.origins.values_mut() {
            // Dropping our handle lets h2 close the connection (GOAWAY) once no stream uses it.
            pool.conns.retain(|c| {
                c.active > 0 || (c.accepting && now.duration_since(c.idle_since) < idle)
            });
        }
        self.origins.retain(|_, p| {
            !p.conns.is_empty() || p.connecting > 0 || !p.waiting.is_empty() || p.http1
        });
        let backed_off: Vec<Origin> = self
            .origins
            .iter()
            .filter(|(_, p)| !p.waiting.is_empty())
            .map(|(o, _)| o.clone())
            .collect();
        for origin in backed_off {
            self.pump(&origin);
        }
    }
}

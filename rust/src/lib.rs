//! Hot path of the Ensemble gateway: SSE framing, rate counters, API-key table, cache affinity.
//!
//! The core modules are plain Rust; the PyO3 binding layer below (the only PyO3 code) is compiled
//! only with the `python` feature, so `cargo test` runs without a Python interpreter.

pub mod affinity;
pub mod clock;
pub mod event_runs;
pub mod h2client;
pub mod json;
pub mod keys;
pub mod rank;
pub mod ratelimit;
pub mod responses_sse;
pub mod scan;
pub mod splice;
pub mod sse;

/// Every error the core can hand to Python, converted to an exception at one choke point
/// (`impl From<NativeError> for PyErr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NativeError {
    /// SSE bound violation → `SseError` (a `ValueError`).
    Sse(sse::SseError),
    /// Invalid limiter geometry → `ValueError`.
    Config(ratelimit::ConfigError),
    /// A digest that is not 32 bytes → `ValueError`.
    DigestLength(usize),
}

impl std::fmt::Display for NativeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NativeError::Sse(e) => e.fmt(f),
            NativeError::Config(e) => e.fmt(f),
            NativeError::DigestLength(n) => {
                write!(f, "a SHA-256 digest is 32 bytes, got {n}")
            }
        }
    }
}

impl std::error::Error for NativeError {}

impl From<sse::SseError> for NativeError {
    fn from(e: sse::SseError) -> Self {
        NativeError::Sse(e)
    }
}

impl From<ratelimit::ConfigError> for NativeError {
    fn from(e: ratelimit::ConfigError) -> Self {
        NativeError::Config(e)
    }
}

/// `bytes` → `[u8; 32]`.
pub fn digest_from_slice(b: &[u8]) -> Result<keys::Digest, NativeError> {
    b.try_into().map_err(|_| NativeError::DigestLength(b.len()))
}

#[cfg(feature = "python")]
mod bindings {
    use super::{
        affinity, clock, digest_from_slice, event_runs, h2client, keys, rank, ratelimit,
        responses_sse, scan, splice, sse, NativeError,
    };
    use pyo3::exceptions::PyValueError;
    use pyo3::prelude::*;
    use pyo3::pybacked::{PyBackedBytes, PyBackedStr};
    use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

    // Literal defaults in the signatures below (so `__text_signature__` shows them) must match
    // the core's constants.
    const _: () = assert!(sse::DEFAULT_MAX_LINE_BYTES == 1048576);
    const _: () = assert!(sse::DEFAULT_MAX_EVENT_BYTES == 8388608);
    const _: () = assert!(ratelimit::DEFAULT_WINDOW_MS == 60000);
    const _: () = assert!(ratelimit::DEFAULT_SLOTS == 60);

    pyo3::create_exception!(
        ensemble._native,
        SseError,
        PyValueError,
        "An upstream event stream broke a bound (line or event size). Terminal for that stream."
    );

    /// The one place Rust errors become Python exceptions.
    impl From<NativeError> for PyErr {
        fn from(e: NativeError) -> PyErr {
            let msg = e.to_string();
            match e {
                NativeError::Sse(_) => SseError::new_err(msg),
                NativeError::Config(_) | NativeError::DigestLength(_) => PyValueError::new_err(msg),
            }
        }
    }

    /// Incremental WHATWG server-sent-events parser; see `rust/src/sse.rs`.
    #[pyclass(module = "ensemble._native", name = "SseParser")]
    struct PySseParser {
        inner: sse::SseParser,
        /// The Python strings of the last event type and id, reused while they repeat
        /// (streams repeat both constantly), saving an allocation per event.
        last_type: Option<(String, Py<PyString>)>,
        last_id: Option<(String, Py<PyString>)>,
    }

    fn cached_str<'py>(
        py: Python<'py>,
        cache: &mut Option<(String, Py<PyString>)>,
        s: &str,
    ) -> Bound<'py, PyString> {
        match cache {
            Some((text, obj)) if text == s => obj.bind(py).clone(),
            Some((text, obj)) => {
                let new = PyString::new(py, s);
                text.clear();
                text.push_str(s);
                *obj = new.clone().unbind();
                new
            }
            None => {
                let new = PyString::new(py, s);
                *cache = Some((s.to_owned(), new.clone().unbind()));
                new
            }
        }
    }

    #[pymethods]
    impl PySseParser {
        #[new]
        #[pyo3(signature = (max_line_bytes = 1048576, max_event_bytes = 8388608))]
        fn new(max_line_bytes: usize, max_event_bytes: usize) -> Self {
            PySseParser {
                inner: sse::SseParser::new(max_line_bytes, max_event_bytes),
                last_type: None,
                last_id: None,
            }
        }

        /// Feed one chunk; returns the events it completed as
        /// `(event_type, data, last_event_id, retry_ms_or_None)`. Raises `SseError` on bounds.
        fn feed<'py>(&mut self, py: Python<'py>, chunk: &[u8]) -> PyResult<Bound<'py, PyList>> {
            let list = PyList::empty(py);
            let message = pyo3::intern!(py, "message");
            let mut py_err: Option<PyErr> = None;
            let (last_type, last_id) = (&mut self.last_type, &mut self.last_id);
            let res = self.inner.feed_with(chunk, &mut |ev: sse::EventRef<'_>| {
                if py_err.is_some() {
                    return;
                }
                let event_type = if ev.event_type == "message" {
                    message.clone()
                } else {
                    cached_str(py, last_type, ev.event_type)
                };
                let retry = match ev.retry {
                    Some(r) => match r.into_pyobject(py) {
                        Ok(int) => int.into_any(),
                        Err(never) => match never {},
                    },
                    None => py.None().into_bound(py),
                };
                let appended = (|| {
                    let tuple = PyTuple::new(
                        py,
                        [
                            event_type.into_any(),
                            PyString::new(py, ev.data).into_any(),
                            cached_str(py, last_id, ev.id).into_any(),
                            retry,
                        ],
                    )?;
                    list.append(tuple)
                })();
                if let Err(e) = appended {
                    py_err = Some(e);
                }
            });
            if let Some(e) = py_err {
                return Err(e);
            }
            res.map_err(NativeError::from)?;
            Ok(list)
        }

        /// End of stream: discard any unterminated event; the parser can then take a new stream
        /// (last event id and reconnection time are kept).
        fn close(&mut self) {
            self.inner.finish();
        }

        /// The last event ID buffer.
        #[getter]
        fn last_event_id(&self) -> &str {
            self.inner.last_event_id()
        }

        /// The latest valid `retry` value seen (milliseconds), or None.
        #[getter]
        fn reconnection_time(&self) -> Option<u64> {
            self.inner.reconnection_time()
        }
    }

    fn admission_tuple(a: ratelimit::Admission) -> (bool, u64, i64) {
        match a {
            ratelimit::Admission::Admitted => (true, 0, -1),
            ratelimit::Admission::Refused {
                retry_after_ms,
                scope_index,
            } => (false, retry_after_ms, scope_index as i64),
        }
    }

    /// Sliding-window RPM/TPM counters per scope; see `rust/src/ratelimit.rs`.
    #[pyclass(module = "ensemble._native", name = "RateLimiter", frozen)]
    struct PyRateLimiter {
        inner: ratelimit::RateLimiter,
    }

    #[pymethods]
    impl PyRateLimiter {
        #[new]
        #[pyo3(signature = (window_ms = 60000, slots = 60))]
        fn new(window_ms: u64, slots: usize) -> Result<Self, NativeError> {
            Ok(PyRateLimiter {
                inner: ratelimit::RateLimiter::new(window_ms, slots)?,
            })
        }

        #[getter]
        fn window_ms(&self) -> u64 {
            self.inner.window_ms()
        }

        #[getter]
        fn slots(&self) -> usize {
            self.inner.slots()
        }

        /// Create or update a scope's limits (0 = unlimited).
        fn configure(&self, scope: &str, rpm: u64, tpm: u64) {
            self.inner.configure(scope, rpm, tpm);
        }

        /// Forget a scope (limits, usage, undrained deltas). Returns whether it existed.
        fn remove(&self, scope: &str) -> bool {
            self.inner.remove(scope)
        }

        /// All-or-nothing admission: `(admitted, retry_after_ms, index_of_first_refusing_scope or -1)`.
        fn admit(&self, scopes: Vec<PyBackedStr>, tokens: u64, now_ms: u64) -> (bool, u64, i64) {
            admission_tuple(self.inner.admit(&scopes, tokens, now_ms))
        }

        /// What `admit` would answer now, without reserving anything.
        fn check(&self, scopes: Vec<PyBackedStr>, tokens: u64, now_ms: u64) -> (bool, u64, i64) {
            admission_tuple(self.inner.check(&scopes, tokens, now_ms))
        }

        /// Replace a reservation with the real token count.
        fn reconcile(
            &self,
            scopes: Vec<PyBackedStr>,
            reserved_tokens: u64,
            actual_tokens: u64,
            admitted_at_ms: u64,
            now_ms: u64,
        ) {
            self.inner.reconcile(
                &scopes,
                reserved_tokens,
                actual_tokens,
                admitted_at_ms,
                now_ms,
            );
        }

        /// Undo an admission: the request and its reserved tokens are returned to every listed scope.
        fn release(
            &self,
            scopes: Vec<PyBackedStr>,
            reserved_tokens: u64,
            admitted_at_ms: u64,
            now_ms: u64,
        ) {
            self.inner
                .release(&scopes, reserved_tokens, admitted_at_ms, now_ms);
        }

        /// `(limit_requests, remaining_requests, limit_tokens, remaining_tokens, reset_ms)`.
        fn snapshot(&self, scope: &str, now_ms: u64) -> (u64, u64, u64, u64, u64) {
            let s = self.inner.snapshot(scope, now_ms);
            (
                s.limit_requests,
                s.remaining_requests,
                s.limit_tokens,
                s.remaining_tokens,
                s.reset_ms,
            )
        }

        /// `(requests, tokens)` counted in the window at `now_ms`, global view included.
        fn usage(&self, scope: &str, now_ms: u64) -> (u64, u64) {
            self.inner.usage(scope, now_ms)
        }

        /// `([utilisation per scope], [requests per scope])` at `now_ms`: utilisation is the fullest
        /// of RPM/TPM against the scope's configured limits, -1.0 when it has none.
        fn load(&self, scopes: Vec<PyBackedStr>, now_ms: u64) -> (Vec<f64>, Vec<u64>) {
            self.inner.load(&scopes, now_ms).into_iter().unzip()
        }

        /// The pool of `scopes` ranked for a router: `(order, utilisations in that order)`; see
        /// `rust/src/rank.rs`. `floors`, `weights` and `in_flight` have one entry per scope or are
        /// empty (no floor, weight 1, nothing in flight).
        fn rank(
            &self,
            scopes: Vec<PyBackedStr>,
            floors: Vec<f64>,
            weights: Vec<u64>,
            in_flight: Vec<u64>,
            shift: usize,
            now_ms: u64,
        ) -> (Vec<usize>, Vec<f64>) {
            rank::rank(
                &self.inner.load(&scopes, now_ms),
                &floors,
                &weights,
                &in_flight,
                shift,
            )
        }

        /// `(scope, requests, tokens)` net local changes since the last drain.
        fn drain_deltas(&self) -> Vec<(String, i64, i64)> {
            self.inner.drain_deltas()
        }

        /// Refuse admissions to `scope` until `until_ms` (upstream 429 / no upstream capacity left).
        fn block_until(&self, scope: &str, until_ms: u64) {
            self.inner.block_until(scope, until_ms);
        }

        /// Other instances' usage in the current window (valid for one window from `now_ms`).
        fn set_global(&self, scope: &str, requests: u64, tokens: u64, now_ms: u64) {
            self.inner.set_global(scope, requests, tokens, now_ms);
        }

        fn __len__(&self) -> usize {
            self.inner.len()
        }
    }

    /// SHA-256 digest → record (any Python object); see `rust/src/keys.rs`.
    #[pyclass(module = "ensemble._native", name = "KeyTable", frozen)]
    struct PyKeyTable {
        inner: keys::KeyTable<Py<PyAny>>,
    }

    #[pymethods]
    impl PyKeyTable {
        #[new]
        fn new() -> Self {
            PyKeyTable {
                inner: keys::KeyTable::new(),
            }
        }

        /// Replace all entries; each digest must be 32 bytes.
        fn load(&self, entries: Vec<(PyBackedBytes, Py<PyAny>)>) -> Result<(), NativeError> {
            let parsed = entries
                .into_iter()
                .map(|(d, v)| Ok((digest_from_slice(&d)?, v)))
                .collect::<Result<Vec<_>, NativeError>>()?;
            // The displaced records are dropped here, after the table lock is released.
            drop(self.inner.load(parsed));
            Ok(())
        }

        /// Insert or replace one record.
        fn upsert(&self, digest: &[u8], record: Py<PyAny>) -> Result<(), NativeError> {
            drop(self.inner.upsert(digest_from_slice(digest)?, record));
            Ok(())
        }

        /// Remove one record; returns whether it existed.
        fn remove(&self, digest: &[u8]) -> Result<bool, NativeError> {
            Ok(self.inner.remove(&digest_from_slice(digest)?).is_some())
        }

        /// `sha256(api_key)` → record, or None. A string that is not valid Unicode (lone
        /// surrogates, e.g. from a mangled header) matches no key rather than raising.
        fn lookup(&self, py: Python<'_>, api_key: &Bound<'_, PyString>) -> Option<Py<PyAny>> {
            let key = api_key.to_str().ok()?;
            self.inner.lookup_with(key.as_bytes(), |v| v.clone_ref(py))
        }

        /// Digest (32 bytes) → record, or None.
        fn lookup_digest(
            &self,
            py: Python<'_>,
            digest: &[u8],
        ) -> Result<Option<Py<PyAny>>, NativeError> {
            let d = digest_from_slice(digest)?;
            Ok(self.inner.lookup_digest_with(&d, |v| v.clone_ref(py)))
        }

        fn __len__(&self) -> usize {
            self.inner.len()
        }
    }

    /// The affinity keys of one request; see `rust/src/affinity.rs`.
    #[pyclass(module = "ensemble._native", name = "PromptKeys", frozen)]
    struct PyPromptKeys {
        inner: affinity::PromptKeys,
    }

    #[pymethods]
    impl PyPromptKeys {
        #[getter]
        fn full(&self) -> u64 {
            self.inner.full
        }

        #[getter]
        fn full_tokens(&self) -> u64 {
            self.inner.full_tokens
        }

        #[getter]
        fn previous(&self) -> Option<u64> {
            self.inner.previous
        }

        #[getter]
        fn previous_tokens(&self) -> u64 {
            self.inner.previous_tokens
        }

        #[getter]
        fn lead(&self) -> Option<u64> {
            self.inner.lead
        }

        #[getter]
        fn lead_tokens(&self) -> u64 {
            self.inner.lead_tokens
        }

        #[getter]
        fn session(&self) -> Option<&str> {
            match &self.inner.session {
                Some(affinity::Key::Session(_, s)) => Some(s),
                _ => None,
            }
        }
    }

    /// Feed one Python string to `f` as UTF-8 (lossily for lone surrogates, which cannot be
    /// encoded: such a prompt still gets a fingerprint instead of an error).
    fn with_text<R>(s: &Bound<'_, PyString>, f: impl FnOnce(&str) -> R) -> R {
        match s.to_str() {
            Ok(text) => f(text),
            Err(_) => f(&s.to_string_lossy()),
        }
    }

    /// The affinity keys of a prompt: `messages` (any iterable) are objects with a `role` string and either a
    /// string `content` or a `text()` method (ensemble.types.Message). The texts are hashed where
    /// they are, with no joined copy.
    #[pyfunction]
    #[pyo3(signature = (model_tag, session_id, messages))]
    fn prompt_keys(
        model_tag: u32,
        session_id: Option<&str>,
        messages: &Bound<'_, PyAny>,
    ) -> PyResult<PyPromptKeys> {
        let py = messages.py();
        let (role_attr, content_attr, text_attr) = (
            pyo3::intern!(py, "role"),
            pyo3::intern!(py, "content"),
            pyo3::intern!(py, "text"),
        );
        let mut hasher = affinity::PromptHasher::with_capacity(messages.len().unwrap_or(0));
        for m in messages.try_iter()? {
            let m = m?;
            let role = m.getattr(role_attr)?;
            let role = role.cast::<PyString>()?;
            let content = m.getattr(content_attr)?;
            let text = match content.cast_into::<PyString>() {
                Ok(s) => s,
                Err(_) => m.call_method0(text_attr)?.cast_into::<PyString>()?,
            };
            with_text(role, |r| with_text(&text, |t| hasher.push(r, t)));
        }
        Ok(PyPromptKeys {
            inner: hasher.finish(model_tag, session_id),
        })
    }

    /// Prompt-prefix / session → endpoint, LRU + TTL; see `rust/src/affinity.rs`. Endpoints are
    /// small integers chosen by the caller.
    #[pyclass(module = "ensemble._native", name = "AffinityTable")]
    struct PyAffinityTable {
        inner: affinity::AffinityTable,
    }

    #[pymethods]
    impl PyAffinityTable {
        #[new]
        fn new(max_entries: usize) -> Self {
            PyAffinityTable {
                inner: affinity::AffinityTable::new(max_entries),
            }
        }

        /// `[(endpoint, estimated cached prompt tokens), …]` of the endpoints holding a prefix
        /// of this prompt, the most tokens first; None when no endpoint does.
        fn lookup<'py>(
            &mut self,
            py: Python<'py>,
            keys: PyRef<'_, PyPromptKeys>,
            now_ms: u64,
        ) -> PyResult<Option<Bound<'py, PyList>>> {
            let found = self.inner.lookup(&keys.inner, now_ms);
            if found.is_empty() {
                return Ok(None);
            }
            PyList::new(py, found.as_slice()).map(Some)
        }

        /// The request succeeded on `endpoint`: remember its keys for `ttl_ms`.
        fn remember(
            &mut self,
            keys: PyRef<'_, PyPromptKeys>,
            endpoint: u32,
            now_ms: u64,
            ttl_ms: u64,
        ) {
            self.inner.remember(&keys.inner, endpoint, now_ms, ttl_ms);
        }

        #[getter]
        fn max_entries(&self) -> usize {
            self.inner.max_entries()
        }

        #[getter]
        fn hits(&self) -> u64 {
            self.inner.hits
        }

        #[getter]
        fn misses(&self) -> u64 {
            self.inner.misses
        }

        #[getter]
        fn evictions(&self) -> u64 {
            self.inner.evictions
        }

        fn __len__(&self) -> usize {
            self.inner.len()
        }
    }

    /// SHA-256 of the UTF-8 encoding of `data`.
    #[pyfunction]
    fn sha256_digest<'py>(py: Python<'py>, data: &str) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &keys::sha256(data.as_bytes()))
    }

    /// Constant-time comparison (a length mismatch returns False at once).
    #[pyfunction]
    fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
        keys::constant_time_eq(a, b)
    }

    /// Where the event holding the first `"usage": {` of `data` starts, and the offset just
    /// after that `{`; None when there is none (`splice.rs`).
    #[pyfunction]
    fn usage_event(data: &[u8]) -> Option<(usize, usize)> {
        splice::usage_object(data).map(|(at, after)| (splice::event_start(data, at), after))
    }

    /// Milliseconds of the monotonic clock (`CLOCK_MONOTONIC` on Unix).
    #[pyfunction]
    fn monotonic_ms() -> u64 {
        clock::monotonic_ms()
    }

    /// Cumulative CRC32C over the parts: the fingerprint of each leading prefix.
    #[pyfunction]
    fn prefix_fingerprint(parts: Vec<PyBackedBytes>) -> Vec<u32> {
        keys::prefix_fingerprint(&parts)
    }

    /// The HTTP/2 upstream pool (a tokio runtime on its own thread); see `rust/src/h2client/`.
    #[pyclass(module = "ensemble._native", name = "H2Pool", frozen)]
    struct PyH2Pool {
        inner: std::sync::Mutex<Option<h2client::Client>>,
        wake_fd: i32,
    }

    /// One stream's handle: flow-control credit back to the provider, or cancel (RST_STREAM).
    /// Dropping it cancels the stream, so a forgotten response never keeps the provider working.
    #[pyclass(module = "ensemble._native", name = "H2Stream", frozen)]
    struct PyH2Stream {
        inner: std::sync::Arc<h2client::StreamHandle>,
    }

    impl Drop for PyH2Stream {
        fn drop(&mut self) {
            self.inner.cancel();
        }
    }

    #[pymethods]
    impl PyH2Stream {
        /// The consumer took `n` bytes of the body.
        fn release(&self, n: usize) {
            self.inner.release(n);
        }

        /// Reset the stream (or drop it before it opens). Idempotent.
        fn cancel(&self) {
            self.inner.cancel();
        }
    }

    #[pymethods]
    impl PyH2Pool {
        #[new]
        #[pyo3(signature = (connect_timeout, max_connections_per_host = 100, stream_window = 262144))]
        fn new(
            connect_timeout: f64,
            max_connections_per_host: usize,
            stream_window: u32,
        ) -> PyResult<Self> {
            if !(connect_timeout.is_finite() && connect_timeout > 0.0) {
                return Err(PyValueError::new_err(
                    "connect_timeout must be a positive number",
                ));
            }
            if max_connections_per_host == 0 {
                return Err(PyValueError::new_err(
                    "max_connections_per_host must be at least 1",
                ));
            }
            let config = h2client::Config {
                connect_timeout: std::time::Duration::from_secs_f64(connect_timeout),
                max_connections_per_host,
                stream_window: stream_window.max(65535),
                ..h2client::Config::default()
            };
            let client = h2client::Client::start(config)
                .map_err(|e| pyo3::exceptions::PyOSError::new_err(e.to_string()))?;
            let wake_fd = client.wake_fd();
            Ok(PyH2Pool {
                inner: std::sync::Mutex::new(Some(client)),
                wake_fd,
            })
        }

        /// Readable when `drain()` has events.
        fn fileno(&self) -> i32 {
            self.wake_fd
        }

        /// Send `POST path` to `host:port` (TLS when `tls`); its events come through `drain()`
        /// under `token`.
        #[allow(clippy::too_many_arguments)]
        fn submit(
            &self,
            token: u64,
            tls: bool,
            host: String,
            port: u16,
            authority: String,
            path: String,
            headers: Vec<(String, String)>,
            body: &[u8],
        ) -> PyResult<PyH2Stream> {
            let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let client = guard.as_ref().ok_or_else(|| {
                pyo3::exceptions::PyRuntimeError::new_err("the HTTP/2 pool is closed")
            })?;
            let origin = h2client::Origin { tls, host, port };
            let request = h2client::Request::new(
                token,
                origin,
                authority,
                path,
                headers,
                bytes::Bytes::copy_from_slice(body),
            );
            Ok(PyH2Stream {
                inner: client.submit(request),
            })
        }

        /// Everything that happened since the last call, in order, as one flat list of
        /// `token, kind, payload` triples: 0 headers `(status, {name: value})`, 1 data `bytes`,
        /// 2 end `None`, 3 failure `(code, message)`, 4 fall back to HTTP/1.1 `None`. Flat, not a
        /// tuple per event: tuples are tracked by Python's GC, and at tens of thousands of events a
        /// second the collections they trigger were a visible share of the client's CPU.
        fn drain<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
            let events = match self
                .inner
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
            {
                Some(client) => client.drain(),
                None => Vec::new(),
            };
            let list = PyList::empty(py);
            for event in events {
                let item = match event {
                    h2client::Event::Head {
                        token,
                        status,
                        headers,
                    } => {
                        let map = pyo3::types::PyDict::new(py);
                        for (k, v) in headers {
                            map.set_item(k, v)?;
                        }
                        (token, 0u8, (status, map).into_pyobject(py)?.into_any())
                    }
                    h2client::Event::Data { token, data } => {
                        (token, 1, PyBytes::new(py, &data).into_any())
                    }
                    h2client::Event::End { token } => (token, 2, py.None().into_bound(py)),
                    h2client::Event::Fail {
                        token,
                        kind,
                        message,
                    } => (
                        token,
                        3,
                        (kind.code(), message).into_pyobject(py)?.into_any(),
                    ),
                    h2client::Event::Fallback { token } => (token, 4, py.None().into_bound(py)),
                };
                list.append(item.0)?;
                list.append(item.1)?;
                list.append(item.2)?;
            }
            Ok(list)
        }

        /// Open HTTP/2 connections (all hosts).
        fn connections(&self) -> usize {
            self.inner
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map_or(0, |c| c.connections())
        }

        /// Close every connection and stop the pool's thread.
        fn close(&self, py: Python<'_>) {
            let client = self.inner.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(mut client) = client {
                py.detach(move || client.close());
            }
        }
    }

    /// A scanner item as `StreamScanner.feed` hands it: `(kind, key, text)` or `(-1, type, data)`.
    fn scan_item(py: Python<'_>, item: scan::Item) -> PyResult<Bound<'_, PyAny>> {
        Ok(match item {
            scan::Item::Run { kind, key, text } => {
                (kind as i64, key, text).into_pyobject(py)?.into_any()
            }
            scan::Item::Event { event_type, data } => {
                (-1i64, event_type, data).into_pyobject(py)?.into_any()
            }
        })
    }

    /// An item as `EventRunScanner.feed` hands it: a merged text run is `(4, key, (text, ends))`
    /// with `ends` as little-endian u32 bytes; anything else as `scan_item` hands it.
    fn run_item(py: Python<'_>, item: event_runs::RunItem) -> PyResult<Bound<'_, PyAny>> {
        match item {
            event_runs::RunItem::Text { key, text, ends } => {
                let ends: Vec<u8> = ends.iter().flat_map(|e| e.to_le_bytes()).collect();
                Ok((4i64, key, (text, PyBytes::new(py, &ends)))
                    .into_pyobject(py)?
                    .into_any())
            }
            event_runs::RunItem::Item(item) => scan_item(py, item),
        }
    }

    /// The frame both scanners' `feed` share: scan one read, `regroup` its items, and hand
    /// Python `(cut, [to_py(item), ...])`.
    fn feed_scanner<'py, T>(
        py: Python<'py>,
        scanner: &mut scan::StreamScanner,
        chunk: &[u8],
        regroup: impl FnOnce(Vec<scan::Item>) -> Vec<T>,
        to_py: impl Fn(Python<'py>, T) -> PyResult<Bound<'py, PyAny>>,
    ) -> PyResult<(usize, Bound<'py, PyList>)> {
        let (cut, items) = scanner.feed(chunk).map_err(NativeError::from)?;
        let list = PyList::empty(py);
        for item in regroup(items) {
            list.append(to_py(py, item)?)?;
        }
        Ok((cut, list))
    }

    /// The same-format fast path's scanner (core: `scan.rs`): frames one provider stream and
    /// decodes its common events natively, one call per network read.
    #[pyclass(module = "ensemble._native", name = "StreamScanner")]
    struct PyStreamScanner {
        inner: scan::StreamScanner,
    }

    #[pymethods]
    impl PyStreamScanner {
        /// `merge`: consecutive fragments of one block become one run per read (false: one
        /// run per event).
        #[new]
        #[pyo3(signature = (format, merge = true))]
        fn new(format: &str, merge: bool) -> PyResult<Self> {
            let format = scan::Format::from_name(format).ok_or_else(|| {
                PyValueError::new_err(format!("no stream scanner for the {format:?} wire format"))
            })?;
            let mut inner = scan::StreamScanner::new(format);
            inner.set_merge(merge);
            Ok(PyStreamScanner { inner })
        }

        /// Scan one network read. Returns `(cut, items)`: the length of the read's prefix that
        /// ends at its last event boundary, and its items in order: `(kind, key, text)` runs
        /// (kind 0 text, 1 thinking, 2 tool arguments, 3 the latest usage object as JSON) and
        /// `(-1, event_type, data)` events for the provider's decoder. Raises `SseError` on bounds.
        fn feed<'py>(
            &mut self,
            py: Python<'py>,
            chunk: &[u8],
        ) -> PyResult<(usize, Bound<'py, PyList>)> {
            feed_scanner(py, &mut self.inner, chunk, |items| items, scan_item)
        }

        /// End of stream: an unterminated event is discarded.
        fn close(&mut self) {
            self.inner.finish();
        }

        /// (events decoded natively, events handed to the decoder) so far.
        #[getter]
        fn counts(&self) -> (u64, u64) {
            self.inner.counts()
        }
    }

    /// A `StreamScanner` for a format that renders one event per upstream event: see
    /// `rust/src/event_runs.rs`.
    #[pyclass(module = "ensemble._native", name = "EventRunScanner")]
    struct PyEventRunScanner {
        inner: scan::StreamScanner,
    }

    #[pymethods]
    impl PyEventRunScanner {
        #[new]
        fn new(format: &str) -> PyResult<Self> {
            // One run per event from the scanner, merged here with the events' ends.
            let scanner = PyStreamScanner::new(format, false)?;
            Ok(PyEventRunScanner {
                inner: scanner.inner,
            })
        }

        /// `StreamScanner.feed`'s items, but the text of consecutive events for one block is one
        /// `(4, key, (text, ends))` run: `ends` holds where each event's fragment ends (UTF-8
        /// byte offsets in `text`, little-endian u32).
        fn feed<'py>(
            &mut self,
            py: Python<'py>,
            chunk: &[u8],
        ) -> PyResult<(usize, Bound<'py, PyList>)> {
            feed_scanner(py, &mut self.inner, chunk, event_runs::merge_text, run_item)
        }

        fn close(&mut self) {
            self.inner.finish();
        }
    }

    /// Responses delta events for the fragments of a merged text run; see
    /// `rust/src/responses_sse.rs`. Returns `(events, next sequence number)`.
    #[pyfunction]
    fn responses_deltas<'py>(
        py: Python<'py>,
        prefix: &[u8],
        suffix: &[u8],
        seq: u64,
        text: &str,
        ends: &[u8],
    ) -> PyResult<(Bound<'py, PyBytes>, u64)> {
        let offsets = ends.chunks_exact(4);
        let bad = || PyValueError::new_err("ends: not offsets that cut the whole text");
        if !offsets.remainder().is_empty() {
            return Err(bad());
        }
        let offsets = offsets.map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
        let mut out =
            Vec::with_capacity(text.len() + ends.len() / 4 * (prefix.len() + suffix.len() + 24));
        let next = responses_sse::write_deltas(&mut out, prefix, suffix, seq, text, offsets)
            .ok_or_else(bad)?;
        Ok((PyBytes::new(py, &out), next))
    }

    #[pymodule]
    fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
        let py = m.py();
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        m.add(
            "build_profile",
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
        )?;
        m.add("SseError", py.get_type::<SseError>())?;
        m.add_class::<PySseParser>()?;
        m.add_class::<PyStreamScanner>()?;
        m.add_class::<PyEventRunScanner>()?;
        m.add_function(wrap_pyfunction!(responses_deltas, m)?)?;
        m.add_class::<PyRateLimiter>()?;
        m.add_class::<PyKeyTable>()?;
        m.add_function(wrap_pyfunction!(sha256_digest, m)?)?;
        m.add_function(wrap_pyfunction!(constant_time_eq, m)?)?;
        m.add_function(wrap_pyfunction!(prefix_fingerprint, m)?)?;
        m.add_class::<PyPromptKeys>()?;
        m.add_class::<PyAffinityTable>()?;
        m.add_function(wrap_pyfunction!(prompt_keys, m)?)?;
        m.add_function(wrap_pyfunction!(monotonic_ms, m)?)?;
        m.add_function(wrap_pyfunction!(usage_event, m)?)?;
        m.add_class::<PyH2Pool>()?;
        m.add_class::<PyH2Stream>()?;
        Ok(())
    }
}

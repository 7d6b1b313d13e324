//! Sliding-window request (RPM) and token (TPM) counters per scope.
//!
//! A *scope* is an opaque string such as `key:<key_id>` or `ep:<endpoint_id>:<model>`. The window
//! (default 60 s) is split into fixed sub-slots (default 60); usage in the window at time `t` is the
//! sum of the slots whose interval started within the last `slots` slot lengths, plus the global view
//! (other instances' usage) if it is still fresh.
//!
//! * Limits of 0 mean unlimited. A scope that was never configured (nor given a global view) is
//!   unlimited and not tracked; `configure(scope, 0, 0)` tracks usage without limiting it.
//! * [`RateLimiter::admit`] is all-or-nothing across its scopes: either every scope gets 1 request
//!   and `tokens` reserved in the current slot, or nothing changes. Scopes are locked in a fixed
//!   order so concurrent admissions never deadlock and never lose an update.
//! * [`RateLimiter::reconcile`] replaces a reservation with the real token count in the slot where
//!   the reservation was recorded if that slot is still in the window; if it has left the window,
//!   only an excess (actual > reserved) is charged, to the current slot.
//! * [`RateLimiter::release`] undoes an admission completely, request included (the caller passes
//!   only the scopes it wants refunded, e.g. the endpoint scope on failover but not the key scope).
//! * Deltas (local net usage changes since the last drain) feed the Redis sync; the global view it
//!   pulls is added to local usage until one window after it was set, then ignored (so a dead
//!   Redis degrades to local-only limits).
//!
//! * [`RateLimiter::block_until`] makes a scope refuse everything until a time (an upstream 429's
//!   `retry-after`, or upstream headers saying its quota is spent until a reset time), with the
//!   same exact `retry_after_ms`; [`RateLimiter::check`] is `admit` without reserving (routing).
//!
//! Time is always passed in (`now_ms`); the core never reads a clock.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, MutexGuard};

/// Default window length.
pub const DEFAULT_WINDOW_MS: u64 = 60_000;
/// Default number of sub-slots per window.
pub const DEFAULT_SLOTS: usize = 60;

const SHARDS: usize = 32;
const EMPTY: u64 = u64::MAX;

/// Invalid limiter configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Result of an admission check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Admitted; 1 request and the tokens are reserved in every scope.
    Admitted,
    /// Refused; nothing was reserved.
    Refused {
        /// Milliseconds until every refusing scope has room for this request (a full window if
        /// the request can never fit, e.g. more tokens than the TPM limit).
        retry_after_ms: u64,
        /// Index (in the caller's list) of the first refusing scope.
        scope_index: usize,
    },
}

/// Limits and remaining capacity of one scope, for `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub limit_requests: u64,
    /// 0 when the request limit is 0 (unlimited).
    pub remaining_requests: u64,
    pub limit_tokens: u64,
    /// 0 when the token limit is 0 (unlimited).
    pub remaining_tokens: u64,
    /// Milliseconds until all usage now counted in the window has left it.
    pub reset_ms: u64,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    epoch: u64,
    requests: i64,
    tokens: i64,
}

const EMPTY_SLOT: Slot = Slot {
    epoch: EMPTY,
    requests: 0,
    tokens: 0,
};

#[derive(Debug, Default)]
struct Scope {
    rpm: u64,
    tpm: u64,
    /// Allocated on first use (`slots` entries), so idle configured scopes stay small.
    ring: Vec<Slot>,
    delta_requests: i64,
    delta_tokens: i64,
    global_requests: u64,
    global_tokens: u64,
    global_until_ms: u64,
    /// Listed in its shard's `dirty` list (changed since the last drain).
    dirty: bool,
    /// Refuse every admission before this time (upstream 429 / exhausted upstream quota).
    blocked_until_ms: u64,
}

/// One lock's worth of scopes, plus the names changed since the last drain, so draining costs
/// O(active scopes) rather than O(configured scopes).
#[derive(Debug, Default)]
struct Shard {
    scopes: HashMap<String, Scope>,
    dirty: Vec<String>,
}

impl Shard {
    /// The scope, marked as changed.
    fn touch(&mut self, name: &str) -> Option<&mut Scope> {
        let s = self.scopes.get_mut(name)?;
        if !s.dirty {
            s.dirty = true;
            self.dirty.push(name.to_owned());
        }
        Some(s)
    }
}

/// Geometry shared by every scope.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    slot_ms: u64,
    slots: u64,
}

impl Geometry {
    fn epoch(&self, now_ms: u64) -> u64 {
        now_ms / self.slot_ms
    }

    /// Is a slot stamped `epoch` counted at current epoch `cur`? Slots stamped in the future
    /// (a caller with a slightly later clock) count too.
    fn in_window(&self, epoch: u64, cur: u64) -> bool {
        epoch != EMPTY && epoch.saturating_add(self.slots) > cur
    }

    /// When a slot stamped `epoch` leaves the window.
    fn expiry_ms(&self, epoch: u64) -> u64 {
        epoch
            .saturating_add(self.slots)
            .saturating_mul(self.slot_ms)
    }
}

impl Scope {
    fn global_active(&self, now_ms: u64) -> bool {
        now_ms < self.global_until_ms
    }

    fn usage(&self, g: Geometry, now_ms: u64) -> (u64, u64) {
        let cur = g.epoch(now_ms);
        let (mut r, mut t) = (0i64, 0i64);
        for s in &self.ring {
            if g.in_window(s.epoch, cur) {
                r += s.requests;
                t += s.tokens;
            }
        }
        let (mut r, mut t) = (r.max(0) as u64, t.max(0) as u64);
        if self.global_active(now_ms) {
            r = r.saturating_add(self.global_requests);
            t = t.saturating_add(self.global_tokens);
        }
        (r, t)
    }

    fn fits(&self, used: (u64, u64), tokens: u64) -> bool {
        (self.rpm == 0 || used.0.saturating_add(1) <= self.rpm)
            && (self.tpm == 0 || used.1.saturating_add(tokens) <= self.tpm)
    }

    /// Usage leaving the window in time order: (time, requests, tokens).
    fn expiries(&self, g: Geometry, now_ms: u64) -> Vec<(u64, i64, i64)> {
        let cur = g.epoch(now_ms);
        let mut ev: Vec<(u64, i64, i64)> = self
            .ring
            .iter()
            .filter(|s| g.in_window(s.epoch, cur) && (s.requests != 0 || s.tokens != 0))
            .map(|s| (g.expiry_ms(s.epoch), s.requests, s.tokens))
            .collect();
        if self.global_active(now_ms) && (self.global_requests != 0 || self.global_tokens != 0) {
            ev.push((
                self.global_until_ms,
                i64::try_from(self.global_requests).unwrap_or(i64::MAX),
                i64::try_from(self.global_tokens).unwrap_or(i64::MAX),
            ));
        }
        ev.sort_unstable_by_key(|e| e.0);
        ev
    }

    /// Soonest delay after which a request of `tokens` fits, assuming no new usage.
    fn retry_after(&self, g: Geometry, now_ms: u64, tokens: u64, window_ms: u64) -> u64 {
        if self.rpm == 0 && self.tpm == 0 {
            return 0;
        }
        if self.tpm != 0 && tokens > self.tpm {
            return window_ms;
        }
        let (mut r, mut t) = self.usage(g, now_ms);
        for (at, dr, dt) in self.expiries(g, now_ms) {
            r = r.saturating_sub(dr.max(0) as u64);
            t = t.saturating_sub(dt.max(0) as u64);
            if self.fits((r, t), tokens) {
                return at.saturating_sub(now_ms);
            }
        }
        window_ms
    }

    fn slot_mut(&mut self, g: Geometry, epoch: u64) -> &mut Slot {
        if self.ring.is_empty() {
            self.ring = vec![EMPTY_SLOT; g.slots as usize];
        }
        let idx = (epoch % g.slots) as usize;
        let slot = &mut self.ring[idx];
        if slot.epoch != epoch {
            *slot = Slot {
                epoch,
                requests: 0,
                tokens: 0,
            };
        }
        slot
    }

    /// The slot stamped `epoch` if it still exists and is in the window at `cur`.
    fn existing_slot_mut(&mut self, g: Geometry, epoch: u64, cur: u64) -> Option<&mut Slot> {
        if self.ring.is_empty() || !g.in_window(epoch, cur) {
            return None;
        }
        let idx = (epoch % g.slots) as usize;
        let slot = &mut self.ring[idx];
        (slot.epoch == epoch).then_some(slot)
    }

    fn add(&mut self, g: Geometry, now_ms: u64, requests: i64, tokens: i64) {
        let slot = self.slot_mut(g, g.epoch(now_ms));
        slot.requests += requests;
        slot.tokens += tokens;
        self.delta_requests += requests;
        self.delta_tokens += tokens;
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Thread-safe sliding-window limiter; see the module docs.
#[derive(Debug)]
pub struct RateLimiter {
    window_ms: u64,
    geometry: Geometry,
    shards: Box<[Mutex<Shard>]>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::new(DEFAULT_WINDOW_MS, DEFAULT_SLOTS).expect("default geometry is valid")
    }
}

fn shard_of(scope: &str) -> usize {
    let mut h = DefaultHasher::new();
    scope.hash(&mut h);
    (h.finish() as usize) % SHARDS
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code panics while holding a shard lock; recover the data if it ever happened.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RateLimiter {
    /// `window_ms` must be a positive multiple of `slots`, and `slots` at least 1.
    pub fn new(window_ms: u64, slots: usize) -> Result<Self, ConfigError> {
        if slots == 0 {
            return Err(ConfigError("slots must be at least 1".into()));
        }
        let slots_u = slots as u64;
        if window_ms == 0 || !window_ms.is_multiple_of(slots_u) {
            return Err(ConfigError(format!(
                "window_ms ({window_ms}) must be a positive multiple of slots ({slots})"
            )));
        }
        let shards = (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect();
        Ok(RateLimiter {
            window_ms,
            geometry: Geometry {
                slot_ms: window_ms / slots_u,
                slots: slots_u,
            },
            shards,
        })
    }

    pub fn window_ms(&self) -> u64 {
        self.window_ms
    }

    pub fn slots(&self) -> usize {
        self.geometry.slots as usize
    }

    /// Create or update a scope's limits (0 = unlimited). Usage already counted is kept.
    pub fn configure(&self, scope: &str, rpm: u64, tpm: u64) {
        let mut shard = lock(&self.shards[shard_of(scope)]);
        let s = shard.scopes.entry(scope.to_owned()).or_default();
        s.rpm = rpm;
        s.tpm = tpm;
    }

    /// Forget a scope entirely (limits, usage, undrained deltas). Returns whether it existed.
    pub fn remove(&self, scope: &str) -> bool {
        lock(&self.shards[shard_of(scope)])
            .scopes
            .remove(scope)
            .is_some()
    }

    /// Number of tracked scopes.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).scopes.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lock the shards holding `scopes` in ascending shard order; returns the guards and, per
    /// scope, the index of its guard.
    fn lock_scopes<S: AsRef<str>>(&self, scopes: &[S]) -> (Vec<MutexGuard<'_, Shard>>, Vec<usize>) {
        let ids: Vec<usize> = scopes.iter().map(|s| shard_of(s.as_ref())).collect();
        let mut order = ids.clone();
        order.sort_unstable();
        order.dedup();
        let guards = order.iter().map(|&i| lock(&self.shards[i])).collect();
        let pos = ids
            .iter()
            .map(|id| order.binary_search(id).expect("shard id is in order"))
            .collect();
        (guards, pos)
    }

    /// All-or-nothing admission of 1 request and `tokens` reserved tokens in every scope.
    /// Duplicate scopes count once. Unknown scopes are unlimited.
    pub fn admit<S: AsRef<str>>(&self, scopes: &[S], tokens: u64, now_ms: u64) -> Admission {
        self.decide(scopes, tokens, now_ms, true)
    }

    /// What [`RateLimiter::admit`] would answer now, without reserving anything (for routing:
    /// skip candidates that are at their limit).
    pub fn check<S: AsRef<str>>(&self, scopes: &[S], tokens: u64, now_ms: u64) -> Admission {
        self.decide(scopes, tokens, now_ms, false)
    }

    fn decide<S: AsRef<str>>(
        &self,
        scopes: &[S],
        tokens: u64,
        now_ms: u64,
        reserve: bool,
    ) -> Admission {
        let g = self.geometry;
        let (mut guards, pos) = self.lock_scopes(scopes);
        let mut refused: Option<(u64, usize)> = None;
        for (i, scope) in scopes.iter().enumerate() {
            let Some(s) = guards[pos[i]].scopes.get(scope.as_ref()) else {
                continue;
            };
            let blocked = s.blocked_until_ms.saturating_sub(now_ms);
            let limited = s.rpm != 0 || s.tpm != 0;
            if blocked > 0 || (limited && !s.fits(s.usage(g, now_ms), tokens)) {
                // Usage only drains over time, so the later of the two is exact.
                let wait = blocked.max(s.retry_after(g, now_ms, tokens, self.window_ms));
                refused = Some(match refused {
                    None => (wait, i),
                    Some((w, first)) => (w.max(wait), first),
                });
            }
        }
        if let Some((retry_after_ms, scope_index)) = refused {
            return Admission::Refused {
                retry_after_ms,
                scope_index,
            };
        }
        if reserve {
            let t = to_i64(tokens);
            for (i, scope) in scopes.iter().enumerate() {
                let scope = scope.as_ref();
                if scopes[..i].iter().any(|p| p.as_ref() == scope) {
                    continue;
                }
                if let Some(s) = guards[pos[i]].touch(scope) {
                    s.add(g, now_ms, 1, t);
                }
            }
        }
        Admission::Admitted
    }

    /// Replace a reservation of `reserved_tokens` made at `admitted_at_ms` by `actual_tokens`.
    pub fn reconcile<S: AsRef<str>>(
        &self,
        scopes: &[S],
        reserved_tokens: u64,
        actual_tokens: u64,
        admitted_at_ms: u64,
        now_ms: u64,
    ) {
        let diff = to_i64(actual_tokens) - to_i64(reserved_tokens);
        if diff == 0 {
            return;
        }
        self.adjust(scopes, 0, diff, admitted_at_ms, now_ms, true);
    }

    /// Undo an admission made at `admitted_at_ms`: the request and its reserved tokens are
    /// returned to every listed scope, if the slot is still in the window.
    pub fn release<S: AsRef<str>>(
        &self,
        scopes: &[S],
        reserved_tokens: u64,
        admitted_at_ms: u64,
        now_ms: u64,
    ) {
        self.adjust(
            scopes,
            -1,
            -to_i64(reserved_tokens),
            admitted_at_ms,
            now_ms,
            false,
        );
    }

    fn adjust<S: AsRef<str>>(
        &self,
        scopes: &[S],
        requests: i64,
        tokens: i64,
        at_ms: u64,
        now_ms: u64,
        excess_to_current: bool,
    ) {
        let g = self.geometry;
        let (at, cur) = (g.epoch(at_ms), g.epoch(now_ms));
        let (mut guards, pos) = self.lock_scopes(scopes);
        for (i, scope) in scopes.iter().enumerate() {
            let scope = scope.as_ref();
            if scopes[..i].iter().any(|p| p.as_ref() == scope) {
                continue;
            }
            let Some(s) = guards[pos[i]].touch(scope) else {
                continue;
            };
            if let Some(slot) = s.existing_slot_mut(g, at, cur) {
                slot.requests += requests;
                slot.tokens += tokens;
                s.delta_requests += requests;
                s.delta_tokens += tokens;
            } else if excess_to_current && tokens > 0 {
                s.add(g, now_ms, 0, tokens);
            }
        }
    }

    /// Limits and remaining capacity of a scope (all zero for an unknown scope).
    pub fn snapshot(&self, scope: &str, now_ms: u64) -> Snapshot {
        let g = self.geometry;
        let shard = lock(&self.shards[shard_of(scope)]);
        let Some(s) = shard.scopes.get(scope) else {
            return Snapshot::default();
        };
        let (r, t) = s.usage(g, now_ms);
        let reset_ms = s
            .expiries(g, now_ms)
            .last()
            .map_or(0, |e| e.0.saturating_sub(now_ms));
        Snapshot {
            limit_requests: s.rpm,
            remaining_requests: s.rpm.saturating_sub(r),
            limit_tokens: s.tpm,
            remaining_tokens: s.tpm.saturating_sub(t),
            reset_ms,
        }
    }

    /// Local usage `(requests, tokens)` in the window at `now_ms`, global view included.
    pub fn usage(&self, scope: &str, now_ms: u64) -> (u64, u64) {
        let shard = lock(&self.shards[shard_of(scope)]);
        shard
            .scopes
            .get(scope)
            .map_or((0, 0), |s| s.usage(self.geometry, now_ms))
    }

    /// Per scope, how full it is at `now_ms` and the requests counted in its window (global view
    /// included): `(utilisation, requests)`, where utilisation is the fullest of requests / rpm and
    /// tokens / tpm against the scope's configured limits, or -1.0 when it has none (rpm = tpm = 0)
    /// or is unknown. One call for a whole pool, so a router ranks its endpoints in one crossing.
    pub fn load<S: AsRef<str>>(&self, scopes: &[S], now_ms: u64) -> Vec<(f64, u64)> {
        scopes
            .iter()
            .map(|name| {
                let name = name.as_ref();
                let shard = lock(&self.shards[shard_of(name)]);
                let Some(s) = shard.scopes.get(name) else {
                    return (-1.0, 0);
                };
                let (r, t) = s.usage(self.geometry, now_ms);
                let mut util = -1.0f64;
                if s.rpm != 0 {
                    util = r as f64 / s.rpm as f64;
                }
                if s.tpm != 0 {
                    util = util.max(t as f64 / s.tpm as f64);
                }
                (util, r)
            })
            .collect()
    }

    /// Net local usage changes `(scope, requests, tokens)` since the last drain, and reset them.
    /// Scopes with no change are omitted. Values can be negative after releases/reconciles.
    pub fn drain_deltas(&self) -> Vec<(String, i64, i64)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            let shard = &mut *shard;
            for name in std::mem::take(&mut shard.dirty) {
                let Some(s) = shard.scopes.get_mut(&name) else {
                    continue; // removed since
                };
                s.dirty = false;
                if s.delta_requests != 0 || s.delta_tokens != 0 {
                    out.push((name, s.delta_requests, s.delta_tokens));
                    s.delta_requests = 0;
                    s.delta_tokens = 0;
                }
            }
        }
        out
    }

    /// Refuse admissions to `scope` until `until_ms` (e.g. an upstream 429 with `retry-after`,
    /// or upstream rate-limit headers reporting no capacity left until their reset time). A later
    /// call replaces the earlier one; `until_ms <= now` lifts it. Creates the scope if unknown.
    pub fn block_until(&self, scope: &str, until_ms: u64) {
        let mut shard = lock(&self.shards[shard_of(scope)]);
        shard
            .scopes
            .entry(scope.to_owned())
            .or_default()
            .blocked_until_ms = until_ms;
    }

    /// Set other instances' usage of `scope` in the current window; counted by admission and
    /// snapshots until `now_ms + window_ms`. Creates the scope (unlimited) if unknown.
    pub fn set_global(&self, scope: &str, requests: u64, tokens: u64, now_ms: u64) {
        let mut shard = lock(&self.shards[shard_of(scope)]);
        let s = shard.scopes.entry(scope.to_owned()).or_default();
        s.global_requests = requests;
        s.global_tokens = tokens;
        s.global_until_ms = now_ms.saturating_add(self.window_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn rl() -> RateLimiter {
        RateLimiter::new(60_000, 60).unwrap()
    }

    fn refused(retry_after_ms: u64, scope_index: usize) -> Admission {
        Admission::Refused {
            retry_after_ms,
            scope_index,
        }
    }

    #[test]
    fn geometry_validation() {
        assert!(RateLimiter::new(60_000, 0).is_err());
        assert!(RateLimiter::new(0, 1).is_err());
        assert!(RateLimiter::new(1000, 7).is_err());
        assert!(RateLimiter::new(1000, 10).is_ok());
    }

    #[test]
    fn unknown_and_unlimited_scopes_admit() {
        let r = rl();
        for _ in 0..1000 {
            assert_eq!(r.admit(&["nope"], 1_000_000, 0), Admission::Admitted);
        }
        assert!(r.is_empty());
        r.configure("k", 0, 0);
        for _ in 0..10 {
            assert_eq!(r.admit(&["k"], 5, 0), Admission::Admitted);
        }
        // Unlimited scopes are still tracked.
        assert_eq!(r.usage("k", 0), (10, 50));
        assert_eq!(r.snapshot("nope", 0), Snapshot::default());
    }

    #[test]
    fn rpm_limit_and_window_rollover() {
        let r = rl();
        r.configure("k", 3, 0);
        assert_eq!(r.admit(&["k"], 0, 0), Admission::Admitted);
        assert_eq!(r.admit(&["k"], 0, 10_500), Admission::Admitted);
        assert_eq!(r.admit(&["k"], 0, 20_000), Admission::Admitted);
        // Full; the first request (slot 0) leaves the window at 60 000.
        assert_eq!(r.admit(&["k"], 0, 30_000), refused(30_000, 0));
        assert_eq!(r.admit(&["k"], 0, 59_999), refused(1, 0));
        assert_eq!(r.admit(&["k"], 0, 60_000), Admission::Admitted);
        // Slot 10 (10 000..11 000) leaves at 70 000.
        assert_eq!(r.admit(&["k"], 0, 60_001), refused(9_999, 0));
        // Long idle: everything rolled out.
        let s = r.snapshot("k", 200_000);
        assert_eq!((s.remaining_requests, s.reset_ms), (3, 0));
    }

    #[test]
    fn tpm_limit_with_retry_after() {
        let r = rl();
        r.configure("k", 0, 100);
        assert_eq!(r.admit(&["k"], 60, 1_000), Admission::Admitted);
        assert_eq!(r.admit(&["k"], 30, 5_000), Admission::Admitted);
        // 90 used; 20 more does not fit until the 60 leave (at 61 000).
        assert_eq!(r.admit(&["k"], 20, 6_000), refused(55_000, 0));
        // 10 fits now.
        assert_eq!(r.admit(&["k"], 10, 6_000), Admission::Admitted);
        // A request larger than the limit can never fit: a full window.
        assert_eq!(r.admit(&["k"], 101, 6_000), refused(60_000, 0));
    }

    #[test]
    fn multi_scope_all_or_nothing() {
        let r = rl();
        r.configure("key:a", 10, 0);
        r.configure("ep:x:m", 1, 0);
        assert_eq!(r.admit(&["key:a", "ep:x:m"], 0, 0), Admission::Admitted);
        assert_eq!(r.admit(&["key:a", "ep:x:m"], 0, 1), refused(59_999, 1));
        // The key scope was not charged by the refused admission.
        assert_eq!(r.usage("key:a", 1), (1, 0));
        // When both refuse, retry_after covers both and the index is the first.
        r.configure("key:b", 1, 0);
        assert_eq!(r.admit(&["key:b"], 0, 30_000), Admission::Admitted);
        assert_eq!(r.admit(&["key:b", "ep:x:m"], 0, 30_000), refused(60_000, 0));
        assert_eq!(r.admit(&["ep:x:m", "key:b"], 0, 59_000), refused(31_000, 0));
    }

    #[test]
    fn check_reserves_nothing() {
        let r = rl();
        r.configure("k", 1, 0);
        assert_eq!(r.check(&["k"], 0, 0), Admission::Admitted);
        assert_eq!(r.check(&["k"], 0, 0), Admission::Admitted);
        assert_eq!(r.usage("k", 0), (0, 0));
        assert!(r.drain_deltas().is_empty());
        assert_eq!(r.admit(&["k"], 0, 0), Admission::Admitted);
        assert_eq!(r.check(&["k"], 0, 1_000), refused(59_000, 0));
    }

    #[test]
    fn block_until_refuses_with_exact_retry() {
        let r = rl();
        r.block_until("ep", 5_000);
        assert_eq!(r.admit(&["key", "ep"], 0, 1_000), refused(4_000, 1));
        assert_eq!(r.check(&["ep"], 0, 4_999), refused(1, 0));
        assert_eq!(r.admit(&["ep"], 0, 5_000), Admission::Admitted);
        // Combined with a full window: the later of the two.
        r.configure("ep", 1, 0);
        r.block_until("ep", 10_000);
        assert_eq!(r.admit(&["ep"], 0, 6_000), refused(59_000, 0));
        r.block_until("ep", 90_000);
        assert_eq!(r.admit(&["ep"], 0, 6_000), refused(84_000, 0));
        r.block_until("ep", 0);
        assert_eq!(r.admit(&["ep"], 0, 65_000), Admission::Admitted);
    }

    #[test]
    fn duplicate_scopes_count_once() {
        let r = rl();
        r.configure("k", 2, 0);
        assert_eq!(r.admit(&["k", "k"], 0, 0), Admission::Admitted);
        assert_eq!(r.usage("k", 0), (1, 0));
        r.release(&["k", "k"], 0, 0, 0);
        assert_eq!(r.usage("k", 0), (0, 0));
    }

    #[test]
    fn reconcile_adjusts_reservation_slot() {
        let r = rl();
        r.configure("k", 0, 1000);
        assert_eq!(r.admit(&["k"], 500, 1_000), Admission::Admitted);
        r.reconcile(&["k"], 500, 120, 1_000, 30_000);
        assert_eq!(r.usage("k", 30_000), (1, 120));
        // The corrected amount leaves the window with the original slot.
        assert_eq!(r.usage("k", 61_000), (0, 0));
        // Higher than reserved.
        assert_eq!(r.admit(&["k"], 100, 70_000), Admission::Admitted);
        r.reconcile(&["k"], 100, 900, 70_000, 75_000);
        assert_eq!(r.usage("k", 75_000), (1, 900));
        assert_eq!(r.admit(&["k"], 101, 75_000), refused(55_000, 0));
    }

    #[test]
    fn reconcile_after_slot_left_window() {
        let r = rl();
        r.configure("k", 0, 0);
        r.admit(&["k"], 100, 0);
        // Lower: nothing to give back any more.
        r.reconcile(&["k"], 100, 10, 0, 120_000);
        assert_eq!(r.usage("k", 120_000), (0, 0));
        // Higher: the excess is charged now.
        r.admit(&["k"], 100, 200_000);
        r.reconcile(&["k"], 100, 250, 200_000, 300_000);
        assert_eq!(r.usage("k", 300_000), (0, 150));
    }

    #[test]
    fn release_returns_request_and_tokens() {
        let r = rl();
        r.configure("k", 1, 100);
        assert_eq!(r.admit(&["k"], 100, 0), Admission::Admitted);
        assert!(matches!(r.admit(&["k"], 1, 10), Admission::Refused { .. }));
        r.release(&["k"], 100, 0, 10);
        assert_eq!(r.admit(&["k"], 100, 10), Admission::Admitted);
        // Releasing after the slot left the window changes nothing.
        r.release(&["k"], 100, 10, 100_000);
        assert_eq!(r.usage("k", 100_000), (0, 0));
        assert_eq!(r.drain_deltas(), vec![("k".to_string(), 1, 100)]);
    }

    #[test]
    fn snapshot_headers() {
        let r = rl();
        r.configure("k", 10, 1000);
        r.admit(&["k"], 100, 2_500);
        r.admit(&["k"], 50, 7_000);
        let s = r.snapshot("k", 8_000);
        assert_eq!(
            s,
            Snapshot {
                limit_requests: 10,
                remaining_requests: 8,
                limit_tokens: 1000,
                remaining_tokens: 850,
                reset_ms: 59_000,
            }
        );
        // Over-committed by reconcile: remaining saturates at 0.
        r.reconcile(&["k"], 50, 5000, 7_000, 8_000);
        assert_eq!(r.snapshot("k", 8_000).remaining_tokens, 0);
    }

    #[test]
    fn deltas_drain_once() {
        let r = rl();
        r.configure("a", 0, 0);
        r.configure("b", 5, 0);
        r.admit(&["a", "b"], 10, 0);
        r.admit(&["a"], 5, 0);
        r.reconcile(&["a"], 5, 7, 0, 1);
        let mut d = r.drain_deltas();
        d.sort();
        assert_eq!(d, vec![("a".into(), 2, 17), ("b".into(), 1, 10)]);
        assert!(r.drain_deltas().is_empty());
    }

    #[test]
    fn global_view_added_then_expires() {
        let r = rl();
        r.configure("ep", 10, 0);
        r.set_global("ep", 9, 0, 0);
        assert_eq!(r.admit(&["ep"], 0, 1_000), Admission::Admitted);
        // 9 global + 1 local = 10: full until the global view goes stale at 60 000.
        assert_eq!(r.admit(&["ep"], 0, 2_000), refused(58_000, 0));
        let s = r.snapshot("ep", 2_000);
        assert_eq!((s.remaining_requests, s.reset_ms), (0, 59_000));
        // A fresh global view replaces the old one.
        r.set_global("ep", 0, 0, 3_000);
        assert_eq!(r.admit(&["ep"], 0, 3_000), Admission::Admitted);
        // Global views do not count as local deltas.
        assert_eq!(r.drain_deltas(), vec![("ep".into(), 2, 0)]);
        // set_global creates an unknown scope as unlimited.
        r.set_global("new", 100, 100, 0);
        assert_eq!(r.admit(&["new"], 1, 0), Admission::Admitted);
    }

    #[test]
    fn clock_skew_between_callers() {
        let r = rl();
        r.configure("k", 2, 0);
        assert_eq!(r.admit(&["k"], 0, 5_000), Admission::Admitted);
        // A caller whose clock is slightly behind still sees the newer usage.
        assert_eq!(r.admit(&["k"], 0, 4_000), Admission::Admitted);
        assert!(matches!(
            r.admit(&["k"], 0, 4_500),
            Admission::Refused { .. }
        ));
    }

    #[test]
    fn load_is_the_fullest_limit_per_scope() {
        let r = rl();
        r.configure("rpm", 4, 0);
        r.configure("tpm", 100, 1000);
        r.configure("free", 0, 0);
        r.admit(&["rpm", "tpm", "free"], 300, 0);
        let load = r.load(&["rpm", "tpm", "free", "unknown"], 10);
        assert_eq!(load, vec![(0.25, 1), (0.3, 1), (-1.0, 1), (-1.0, 0)]);
        // Out of the window: empty again.
        assert_eq!(r.load(&["rpm"], 120_000), vec![(0.0, 0)]);
    }

    #[test]
    fn remove_scope() {
        let r = rl();
        r.configure("k", 1, 0);
        r.admit(&["k"], 0, 0);
        assert!(r.remove("k"));
        assert!(!r.remove("k"));
        assert_eq!(r.admit(&["k"], 0, 0), Admission::Admitted);
    }

    #[test]
    fn concurrent_drains_account_for_every_change() {
        let r = Arc::new(rl());
        let scopes: Vec<String> = (0..6).map(|i| format!("key:{i}")).collect();
        for s in &scopes {
            r.configure(s, 0, 0);
        }
        r.configure("ep", 0, 0);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let drainer = {
            let (r, stop) = (Arc::clone(&r), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut sums: HashMap<String, (i64, i64)> = HashMap::new();
                loop {
                    let done = stop.load(std::sync::atomic::Ordering::SeqCst);
                    for (name, dr, dt) in r.drain_deltas() {
                        let e = sums.entry(name).or_default();
                        e.0 += dr;
                        e.1 += dt;
                    }
                    if done {
                        return sums;
                    }
                }
            })
        };
        let workers: Vec<_> = (0..3usize)
            .map(|t| {
                let r = Arc::clone(&r);
                let scopes = scopes.clone();
                std::thread::spawn(move || {
                    for i in 0..3_000usize {
                        let pair = [scopes[(i + t) % 6].as_str(), "ep"];
                        let now = (i % 40) as u64 * 10;
                        assert_eq!(r.admit(&pair, 10, now), Admission::Admitted);
                        match i % 3 {
                            0 => r.reconcile(&pair, 10, 4, now, now + 5),
                            1 => r.release(&pair, 10, now, now + 5),
                            _ => {}
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let sums = drainer.join().unwrap();
        // Every change made while the drainer ran was drained exactly once.
        for name in scopes.iter().map(String::as_str).chain(["ep"]) {
            let (req, tok) = r.usage(name, 500);
            let got = sums.get(name).copied().unwrap_or_default();
            assert_eq!(got, (req as i64, tok as i64), "{name}");
        }
        // 9000 admissions: a third reconciled to 4 tokens, a third released.
        assert_eq!(r.usage("ep", 500), (6_000, 3_000 * 4 + 3_000 * 10));
    }

    #[test]
    fn threads_no_lost_update() {
        let r = Arc::new(rl());
        let scopes: Vec<String> = (0..8).map(|i| format!("s{i}")).collect();
        for s in &scopes {
            r.configure(s, 0, 0);
        }
        r.configure("capped", 1000, 0);
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let r = Arc::clone(&r);
                let scopes = scopes.clone();
                std::thread::spawn(move || {
                    let mut admitted = 0u64;
                    for i in 0..5_000usize {
                        let a = &scopes[(i + t) % 8];
                        let b = &scopes[(i * 7 + t) % 8];
                        if r.admit(&[a.as_str(), b.as_str(), "capped"], 3, 1_000)
                            == Admission::Admitted
                        {
                            admitted += 1;
                        }
                    }
                    admitted
                })
            })
            .collect();
        let admitted: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(admitted, 1000);
        assert_eq!(r.usage("capped", 1_000), (1000, 3000));
        let total: u64 = scopes.iter().map(|s| r.usage(s, 1_000).0).sum();
        // Each admission charges one or two distinct uncapped scopes; at least 1000 charges.
        assert!((1000..=2000).contains(&total));
    }
}

//! Cache affinity: which endpoint most likely holds a prompt prefix in its provider's cache.
//!
//! Two parts, both plain Rust (the Python binding is in `lib.rs`):
//!
//! * [`PromptHasher`] turns a request's messages into its [`PromptKeys`]: CRC32C fingerprints of
//!   the whole prompt, of the previous turn's prompt and of the leading system prompt, each tagged
//!   with the model, plus the client's session id. Every message contributes its role's first
//!   character, its text and a `\0` separator, so `("ab", "c")` and `("a", "bc")` differ; the bytes
//!   are fed to the CRC as they are, with nothing concatenated.
//! * [`AffinityTable`]: key → the endpoints holding that prefix (up to [`MAX_HOLDERS`], most
//!   recent first, each with its cached tokens and the provider's cache TTL, refreshed when
//!   remembered again) in an LRU bounded by `max_entries`. A request that had to move leaves its
//!   older copy as a fallback: when its endpoint cannot take the next turn, the router sends it to
//!   the endpoint that holds the most of the prompt instead of a cold one. A lookup does not
//!   refresh an entry's LRU position (providers refresh their cache on use, and `remember` runs
//!   after every successful request, which does); expired holders found by a lookup are dropped.

use std::collections::HashMap;

/// Providers only cache prompts from about this size on (Anthropic and OpenAI: 1024 tokens).
pub const MIN_CACHEABLE_TOKENS: u64 = 1024;
/// The gateway's estimate of characters (UTF-8 bytes) per token.
pub const CHARS_PER_TOKEN: u64 = 4;

/// A key of the affinity table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// `model_tag << 32 | crc32c` of a prompt prefix.
    Prefix(u64),
    /// (model tag, the client's session id).
    Session(u32, Box<str>),
}

/// The affinity keys of one request, with the estimated prompt tokens behind each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PromptKeys {
    pub session: Option<Key>,
    pub full: u64,
    pub full_tokens: u64,
    /// The previous turn's whole prompt: everything before the last answer and question.
    pub previous: Option<u64>,
    pub previous_tokens: u64,
    /// The leading system message(s), when something follows them.
    pub lead: Option<u64>,
    pub lead_tokens: u64,
}

/// Builds [`PromptKeys`] one message at a time.
#[derive(Debug, Default)]
pub struct PromptHasher {
    crc: u32,
    size: u64,
    /// (fingerprint, bytes so far) after each message.
    prefixes: Vec<(u32, u64)>,
    /// Number of leading system messages.
    lead: usize,
}

impl PromptHasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(messages: usize) -> Self {
        PromptHasher {
            prefixes: Vec::with_capacity(messages),
            ..Self::default()
        }
    }

    /// Add the next message: its role (`system`, `user`, …) and its text.
    pub fn push(&mut self, role: &str, text: &str) {
        let mut head = [0u8; 4];
        let head = role
            .chars()
            .next()
            .map_or(&[][..], |c| c.encode_utf8(&mut head).as_bytes());
        self.crc = crc32c::crc32c_append(self.crc, head);
        self.crc = crc32c::crc32c_append(self.crc, text.as_bytes());
        self.crc = crc32c::crc32c_append(self.crc, b"\0");
        self.size += (head.len() + text.len() + 1) as u64;
        if role == "system" && self.lead == self.prefixes.len() {
            self.lead += 1;
        }
        self.prefixes.push((self.crc, self.size));
    }

    /// The keys on the model tagged `model_tag`; an empty session id is no session.
    pub fn finish(self, model_tag: u32, session: Option<&str>) -> PromptKeys {
        let tag = u64::from(model_tag) << 32;
        let key = |(crc, _): (u32, u64)| tag | u64::from(crc);
        let tokens = |(_, size): (u32, u64)| size / CHARS_PER_TOKEN;
        let n = self.prefixes.len();
        let last = self.prefixes.last().copied().unwrap_or((0, 0));
        let mut keys = PromptKeys {
            session: session
                .filter(|s| !s.is_empty())
                .map(|s| Key::Session(model_tag, s.into())),
            full: key(last),
            full_tokens: tokens(last),
            ..PromptKeys::default()
        };
        if n > 2 {
            let p = self.prefixes[n - 3];
            keys.previous = Some(key(p));
            keys.previous_tokens = tokens(p);
        }
        if 0 < self.lead && self.lead < n {
            let p = self.prefixes[self.lead - 1];
            keys.lead = Some(key(p));
            keys.lead_tokens = tokens(p);
        }
        keys
    }
}

const NIL: usize = usize::MAX;

/// How many endpoints one key remembers. A prompt that had to leave its endpoint (busy, cooling
/// down) is then in two caches: the older copy stays a fallback until its TTL ends.
pub const MAX_HOLDERS: usize = 3;

/// One endpoint's copy of a prompt prefix in its provider's cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Holder {
    endpoint: u32,
    /// Estimated tokens of the prefix that endpoint holds (u32: no prompt is 4 G tokens).
    tokens: u32,
    expires_ms: u64,
}

#[derive(Debug)]
struct Node {
    key: Key,
    /// Most recently remembered first; `len` of them are in use.
    holders: [Holder; MAX_HOLDERS],
    len: u8,
    /// Towards the oldest entry.
    prev: usize,
    /// Towards the newest entry.
    next: usize,
}

impl Node {
    fn live(&self) -> &[Holder] {
        &self.holders[..usize::from(self.len)]
    }

    /// Drop the holders whose cache copy has expired; true when none is left.
    fn expire(&mut self, now_ms: u64) -> bool {
        let mut kept = 0;
        for i in 0..usize::from(self.len) {
            if self.holders[i].expires_ms > now_ms {
                self.holders[kept] = self.holders[i];
                kept += 1;
            }
        }
        self.len = kept as u8;
        kept == 0
    }

    /// `holder` becomes the most recent; an older copy on the same endpoint is replaced and,
    /// when full, the least recent other endpoint is forgotten.
    fn promote(&mut self, holder: Holder) {
        let len = usize::from(self.len);
        let at = self.holders[..len]
            .iter()
            .position(|h| h.endpoint == holder.endpoint)
            .unwrap_or(len.min(MAX_HOLDERS - 1));
        self.holders.copy_within(0..at, 1);
        self.holders[0] = holder;
        if at == len && len < MAX_HOLDERS {
            self.len += 1;
        }
    }
}

/// The endpoints that hold a request's prompt prefix, the most cached tokens first: what
/// [`AffinityTable::lookup`] returns (no allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Holders {
    items: [(u32, u64); MAX_HOLDERS],
    len: usize,
}

impl Holders {
    pub fn as_slice(&self) -> &[(u32, u64)] {
        &self.items[..self.len]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn first(&self) -> Option<(u32, u64)> {
        self.as_slice().first().copied()
    }

    /// Count `tokens` for `endpoint` (keeping its best figure), in order of tokens, then of arrival.
    fn offer(&mut self, endpoint: u32, tokens: u64) {
        let mut at = self.len;
        if let Some(i) = self.as_slice().iter().position(|&(e, _)| e == endpoint) {
            if self.items[i].1 >= tokens {
                return;
            }
            // Take it out; it goes back in at its new rank below.
            self.items.copy_within(i + 1..self.len, i);
            self.len -= 1;
            at = self.len;
        }
        while at > 0 && self.items[at - 1].1 < tokens {
            at -= 1;
        }
        if at >= MAX_HOLDERS {
            return;
        }
        let end = self.len.min(MAX_HOLDERS - 1);
        self.items.copy_within(at..end, at + 1);
        self.items[at] = (endpoint, tokens);
        self.len = (self.len + 1).min(MAX_HOLDERS);
    }
}

/// LRU + TTL map from affinity keys to the endpoints holding that prefix (up to [`MAX_HOLDERS`],
/// each with its cached tokens and its own expiry).
///
/// Nodes live in a slab (`nodes`, with freed slots reused) linked oldest → newest, so inserts,
/// refreshes, removals and evictions are O(1) with no allocation once the table is warm.
#[derive(Debug)]
pub struct AffinityTable {
    map: HashMap<Key, usize>,
    nodes: Vec<Node>,
    free: Vec<usize>,
    oldest: usize,
    newest: usize,
    max_entries: usize,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
}

impl AffinityTable {
    /// `max_entries` below 1 is taken as 1.
    pub fn new(max_entries: usize) -> Self {
        AffinityTable {
            map: HashMap::new(),
            nodes: Vec::new(),
            free: Vec::new(),
            oldest: NIL,
            newest: NIL,
            max_entries: max_entries.max(1),
            hits: 0,
            misses: 0,
            evictions: 0,
        }
    }

    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn unlink(&mut self, i: usize) {
        let (prev, next) = (self.nodes[i].prev, self.nodes[i].next);
        match prev {
            NIL => self.oldest = next,
            p => self.nodes[p].next = next,
        }
        match next {
            NIL => self.newest = prev,
            n => self.nodes[n].prev = prev,
        }
    }

    fn link_newest(&mut self, i: usize) {
        self.nodes[i].prev = self.newest;
        self.nodes[i].next = NIL;
        match self.newest {
            NIL => self.oldest = i,
            n => self.nodes[n].next = i,
        }
        self.newest = i;
    }

    fn remove_slot(&mut self, i: usize) {
        self.unlink(i);
        self.map.remove(&self.nodes[i].key);
        self.free.push(i);
    }

    /// The live holders under `key`; expired ones are dropped (the entry too when none is left).
    fn get(&mut self, key: &Key, now_ms: u64) -> &[Holder] {
        let Some(&i) = self.map.get(key) else {
            return &[];
        };
        if self.nodes[i].expire(now_ms) {
            self.remove_slot(i);
            return &[];
        }
        self.nodes[i].live()
    }

    /// The endpoints holding a prefix of this prompt, the most cached tokens first (ties: the
    /// session's, then the previous turn's, then the system prompt's entry, each most recent
    /// first), each endpoint's tokens capped by the prompt it would be a prefix of.
    pub fn lookup(&mut self, keys: &PromptKeys, now_ms: u64) -> Holders {
        let mut found = Holders::default();
        let previous = keys.previous.map(Key::Prefix);
        let lead = keys.lead.map(Key::Prefix);
        let candidates = [
            (keys.session.as_ref(), keys.full_tokens),
            (previous.as_ref(), keys.previous_tokens),
            (lead.as_ref(), keys.lead_tokens),
        ];
        for (key, cap) in candidates {
            let Some(key) = key else { continue };
            for h in self.get(key, now_ms) {
                let tokens = u64::from(h.tokens).min(cap);
                if tokens > 0 {
                    found.offer(h.endpoint, tokens);
                }
            }
        }
        if found.is_empty() {
            self.misses += 1;
        } else {
            self.hits += 1;
        }
        found
    }

    fn put(&mut self, key: &Key, holder: Holder, now_ms: u64) {
        if let Some(&i) = self.map.get(key) {
            let node = &mut self.nodes[i];
            node.expire(now_ms);
            node.promote(holder);
            self.unlink(i);
            self.link_newest(i);
            return;
        }
        let mut holders = [Holder::default(); MAX_HOLDERS];
        holders[0] = holder;
        let node = Node {
            key: key.clone(),
            holders,
            len: 1,
            prev: NIL,
            next: NIL,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.nodes[i] = node;
                i
            }
            None => {
                self.nodes.push(node);
                self.nodes.len() - 1
            }
        };
        self.map.insert(key.clone(), i);
        self.link_newest(i);
        if self.map.len() > self.max_entries {
            self.remove_slot(self.oldest);
            self.evictions += 1;
        }
    }

    /// The request succeeded on `endpoint`: its prompt is now in that endpoint's cache for
    /// `ttl_ms`; other endpoints' copies stay until their own TTL ends.
    pub fn remember(&mut self, keys: &PromptKeys, endpoint: u32, now_ms: u64, ttl_ms: u64) {
        let expires_ms = now_ms.saturating_add(ttl_ms);
        let holder = |tokens: u64| Holder {
            endpoint,
            tokens: u32::try_from(tokens).unwrap_or(u32::MAX),
            expires_ms,
        };
        let cacheable = keys.full_tokens >= MIN_CACHEABLE_TOKENS;
        if let Some(session) = &keys.session {
            self.put(session, holder(keys.full_tokens), now_ms);
        }
        if cacheable {
            self.put(&Key::Prefix(keys.full), holder(keys.full_tokens), now_ms);
        }
        if let Some(lead) = keys.lead {
            if keys.lead_tokens >= MIN_CACHEABLE_TOKENS {
                self.put(&Key::Prefix(lead), holder(keys.lead_tokens), now_ms);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(tag: u32, session: Option<&str>, messages: &[(&str, &str)]) -> PromptKeys {
        let mut h = PromptHasher::new();
        for (role, text) in messages {
            h.push(role, text);
        }
        h.finish(tag, session)
    }

    fn big(c: char, tokens: usize) -> String {
        c.to_string().repeat(tokens * CHARS_PER_TOKEN as usize)
    }

    #[test]
    fn fingerprints_match_the_crc_of_the_joined_parts() {
        let k = keys(3, None, &[("system", "abc"), ("user", "hi")]);
        let joined = b"sabc\0uhi\0";
        assert_eq!(k.full, 3 << 32 | u64::from(crc32c::crc32c(joined)));
        assert_eq!(k.full_tokens, joined.len() as u64 / CHARS_PER_TOKEN);
        assert_eq!(k.lead, Some(3 << 32 | u64::from(crc32c::crc32c(b"sabc\0"))));
        assert_eq!(k.lead_tokens, 1);
        assert_eq!(k.previous, None);
        // Message boundaries matter.
        let other = keys(3, None, &[("system", "ab"), ("user", "chi")]);
        assert_ne!(other.full, k.full);
        // The model tag separates the same prompt on two models.
        assert_ne!(
            keys(4, None, &[("system", "abc"), ("user", "hi")]).full,
            k.full
        );
    }

    #[test]
    fn previous_turn_and_lead() {
        let turns = [
            ("system", "s"),
            ("system", "t"),
            ("user", "q1"),
            ("assistant", "a1"),
            ("user", "q2"),
        ];
        let k = keys(0, Some("abc"), &turns);
        let three = keys(0, None, &turns[..3]);
        assert_eq!(k.previous, Some(three.full));
        assert_eq!(k.previous_tokens, three.full_tokens);
        assert_eq!(k.lead, Some(keys(0, None, &turns[..2]).full));
        assert_eq!(k.session, Some(Key::Session(0, "abc".into())));
        // Only system messages: nothing follows them, so no lead key.
        assert_eq!(keys(0, None, &[("system", "s")]).lead, None);
        // A system message after a user message does not extend the lead.
        let late = keys(0, None, &[("user", "u"), ("system", "s"), ("user", "v")]);
        assert_eq!(late.lead, None);
        // Non-ASCII text counts its UTF-8 bytes.
        assert_eq!(keys(0, None, &[("user", "ééé")]).full_tokens, 2);
        assert_eq!(keys(0, None, &[]), PromptKeys::default());
        assert_eq!(keys(0, Some(""), &[("user", "u")]).session, None);
    }

    #[test]
    fn lookup_prefers_the_most_tokens_and_counts() {
        let mut t = AffinityTable::new(100);
        let sys = big('s', 2000);
        let first = keys(0, Some("s1"), &[("system", &sys), ("user", "q1")]);
        t.remember(&first, 7, 0, 1000);
        assert_eq!(t.len(), 3); // session, whole prompt, lead
        let next = keys(
            0,
            Some("s1"),
            &[
                ("system", &sys),
                ("user", "q1"),
                ("assistant", "a"),
                ("user", "q2"),
            ],
        );
        // Session entry: the first prompt's tokens, capped by this prompt's.
        assert_eq!(t.lookup(&next, 10).as_slice(), [(7, first.full_tokens)]);
        // Another conversation on the same system prompt hits the lead only.
        let other = keys(0, None, &[("system", &sys), ("user", "zz")]);
        assert_eq!(t.lookup(&other, 10).first(), Some((7, first.lead_tokens)));
        let unrelated = keys(0, None, &[("user", "zz")]);
        assert!(t.lookup(&unrelated, 10).is_empty());
        assert_eq!((t.hits, t.misses), (2, 1));
    }

    #[test]
    fn small_prompts_remember_only_the_session() {
        let mut t = AffinityTable::new(100);
        t.remember(&keys(0, None, &[("user", "h")]), 1, 0, 1000);
        assert!(t.is_empty());
        let with_session = keys(0, Some("s"), &[("user", "h")]); // 3 bytes: 0 tokens
        t.remember(&with_session, 1, 0, 1000);
        assert_eq!(t.len(), 1);
        // A session hit worth 0 tokens is no hit.
        assert!(t.lookup(&with_session, 1).is_empty());
    }

    #[test]
    fn entries_expire_and_refresh() {
        let mut t = AffinityTable::new(100);
        let k = keys(0, Some("s"), &[("user", &big('x', 2000))]);
        t.remember(&k, 1, 0, 1000);
        assert_eq!(t.lookup(&k, 999).first().map(|h| h.0), Some(1));
        t.remember(&k, 2, 500, 1000); // moved: endpoint 1 keeps its copy until 1000
        let both = t.lookup(&k, 999);
        assert_eq!(
            both.as_slice().iter().map(|h| h.0).collect::<Vec<_>>(),
            [2, 1]
        );
        assert_eq!(t.lookup(&k, 1000).as_slice().len(), 1); // endpoint 1's copy expired
        assert_eq!(t.lookup(&k, 1499).first().map(|h| h.0), Some(2));
        assert!(t.lookup(&k, 1500).is_empty());
        // The expired session entry found by the lookup is dropped; the whole-prompt entry (not
        // looked up: this prompt is not the previous turn of itself) waits for LRU eviction.
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn lru_evicts_the_least_recently_remembered() {
        let mut t = AffinityTable::new(2);
        let a = keys(0, None, &[("user", &big('a', 2000))]);
        let b = keys(0, None, &[("user", &big('b', 2000))]);
        let c = keys(0, None, &[("user", &big('c', 2000))]);
        t.remember(&a, 1, 0, 10_000);
        t.remember(&b, 2, 0, 10_000);
        t.remember(&a, 1, 1, 10_000); // a is now the newest
        t.remember(&c, 3, 2, 10_000); // evicts b
        assert_eq!(t.len(), 2);
        assert_eq!(t.evictions, 1);
        assert!(t.lookup(&b, 3).is_empty());
        // Lookups go through `previous`/`lead`/`session` only; check the map directly.
        assert!(t.map.contains_key(&Key::Prefix(a.full)));
        assert!(t.map.contains_key(&Key::Prefix(c.full)));
        // Freed slots are reused.
        let d = keys(0, None, &[("user", &big('d', 2000))]);
        t.remember(&d, 4, 3, 10_000);
        assert_eq!(t.nodes.len(), 3);
        assert_eq!(t.evictions, 2);
        // A table of one still works.
        let mut one = AffinityTable::new(0);
        one.remember(&a, 1, 0, 10);
        one.remember(&b, 1, 0, 10);
        assert_eq!((one.len(), one.evictions, one.max_entries()), (1, 1, 1));
    }

    #[test]
    fn a_moved_session_keeps_its_older_copies_as_fallbacks() {
        let mut t = AffinityTable::new(100);
        let sys = big('s', 3000);
        let mut turns: Vec<(&str, String)> = vec![("system", sys.clone()), ("user", "q0".into())];
        let view = |turns: &Vec<(&str, String)>| {
            let m: Vec<(&str, &str)> = turns.iter().map(|(r, x)| (*r, x.as_str())).collect();
            keys(0, Some("s"), &m)
        };
        t.remember(&view(&turns), 1, 0, 10_000); // turn 1 on endpoint 1
        turns.push(("assistant", big('a', 500)));
        turns.push(("user", "q1".into()));
        t.remember(&view(&turns), 2, 1, 10_000); // turn 2 had to move to endpoint 2
        turns.push(("assistant", big('b', 500)));
        turns.push(("user", "q2".into()));
        let k = view(&turns);
        let found = t.lookup(&k, 2);
        // Endpoint 2 holds the longer prefix; endpoint 1 the first turn's (via the session and
        // the system prompt), so it is the fallback.
        let [(e2, t2), (e1, t1)] = found.as_slice() else {
            panic!("{found:?}")
        };
        assert_eq!((*e2, *e1), (2, 1));
        assert!(t2 > t1 && *t1 >= 3000);
        // Back on endpoint 1: it is now the most recent and holds the most.
        t.remember(&k, 1, 3, 10_000);
        turns.push(("assistant", "x".into()));
        turns.push(("user", "q3".into()));
        assert_eq!(t.lookup(&view(&turns), 4).first().map(|h| h.0), Some(1));
    }

    #[test]
    fn holders_are_bounded_and_ranked() {
        let mut h = Holders::default();
        for (e, tokens) in [(1, 10), (2, 30), (3, 20), (4, 5), (2, 25), (1, 40), (5, 20)] {
            h.offer(e, tokens);
        }
        assert_eq!(h.as_slice(), [(1, 40), (2, 30), (3, 20)]);
        let mut t = AffinityTable::new(10);
        let k = keys(0, Some("s"), &[("user", &big('x', 2000))]);
        for e in 0..5 {
            t.remember(&k, e, u64::from(e), 10_000);
        }
        // Every endpoint remembered the same tokens: the most recent MAX_HOLDERS, newest first.
        let found: Vec<u32> = t.lookup(&k, 10).as_slice().iter().map(|h| h.0).collect();
        assert_eq!(found, [4, 3, 2]);
        assert_eq!(t.len(), 2); // the session and the whole prompt: holders are not entries
    }
}

//! Cache affinity: which endpoint most likely holds a prompt prefix in its provider's cache.
//!
//! Two parts, both plain Rust (the Python binding is in `lib.rs`):
//!
//! * [`PromptHasher`] turns a request's messages into its [`PromptKeys`]: CRC32C fingerprints of
//!   the whole prompt, of the previous turn's prompt and of the leading system prompt, each tagged
//!   with the model, plus the client's session id. Every message contributes its role's first
//!   character, its text and a `\0` separator, so `("ab", "c")` and `("a", "bc")` differ; the bytes
//!   are fed to the CRC as they are, with nothing concatenated.
//! * [`AffinityTable`]: key → (endpoint, cached tokens), each entry living for the provider's cache
//!   TTL (refreshed when remembered again) in an LRU bounded by `max_entries`. A lookup does not
//!   refresh an entry's LRU position (providers refresh their cache on use, and `remember` runs
//!   after every successful request, which does); an expired entry found by a lookup is dropped.

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

#[derive(Debug)]
struct Node {
    key: Key,
    endpoint: u32,
    expires_ms: u64,
    tokens: u64,
    /// Towards the oldest entry.
    prev: usize,
    /// Towards the newest entry.
    next: usize,
}

/// LRU + TTL map from affinity keys to (endpoint index, cached tokens).
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

    /// The live entry under `key` as (endpoint, tokens); an expired one is dropped.
    fn get(&mut self, key: &Key, now_ms: u64) -> Option<(u32, u64)> {
        let &i = self.map.get(key)?;
        let node = &self.nodes[i];
        if node.expires_ms <= now_ms {
            self.remove_slot(i);
            return None;
        }
        Some((node.endpoint, node.tokens))
    }

    /// (endpoint, estimated cached prompt tokens) of the best live entry for `keys`, if any:
    /// the one promising the most tokens, each capped by the prompt it would be a prefix of.
    pub fn lookup(&mut self, keys: &PromptKeys, now_ms: u64) -> Option<(u32, u64)> {
        let mut best: Option<(u32, u64)> = None;
        let mut best_tokens = 0;
        let previous = keys.previous.map(Key::Prefix);
        let lead = keys.lead.map(Key::Prefix);
        let candidates = [
            (keys.session.as_ref(), keys.full_tokens),
            (previous.as_ref(), keys.previous_tokens),
            (lead.as_ref(), keys.lead_tokens),
        ];
        for (key, cap) in candidates {
            let Some(key) = key else { continue };
            if let Some((endpoint, tokens)) = self.get(key, now_ms) {
                let tokens = tokens.min(cap);
                if tokens > best_tokens {
                    best = Some((endpoint, tokens));
                    best_tokens = tokens;
                }
            }
        }
        if best.is_some() {
            self.hits += 1;
        } else {
            self.misses += 1;
        }
        best
    }

    fn put(&mut self, key: &Key, endpoint: u32, expires_ms: u64, tokens: u64) {
        if let Some(&i) = self.map.get(key) {
            let node = &mut self.nodes[i];
            node.endpoint = endpoint;
            node.expires_ms = expires_ms;
            node.tokens = tokens;
            self.unlink(i);
            self.link_newest(i);
            return;
        }
        let node = Node {
            key: key.clone(),
            endpoint,
            expires_ms,
            tokens,
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

    /// The request succeeded on `endpoint`: its prompt is now in that endpoint's cache for `ttl_ms`.
    pub fn remember(&mut self, keys: &PromptKeys, endpoint: u32, now_ms: u64, ttl_ms: u64) {
        let expires = now_ms.saturating_add(ttl_ms);
        let cacheable = keys.full_tokens >= MIN_CACHEABLE_TOKENS;
        if let Some(session) = &keys.session {
            self.put(session, endpoint, expires, keys.full_tokens);
        }
        if cacheable {
            self.put(&Key::Prefix(keys.full), endpoint, expires, keys.full_tokens);
        }
        if let Some(lead) = keys.lead {
            if keys.lead_tokens >= MIN_CACHEABLE_TOKENS {
                self.put(&Key::Prefix(lead), endpoint, expires, keys.lead_tokens);
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
        assert_eq!(t.lookup(&next, 10), Some((7, first.full_tokens)));
        // Another conversation on the same system prompt hits the lead only.
        let other = keys(0, None, &[("system", &sys), ("user", "zz")]);
        assert_eq!(t.lookup(&other, 10), Some((7, first.lead_tokens)));
        let unrelated = keys(0, None, &[("user", "zz")]);
        assert_eq!(t.lookup(&unrelated, 10), None);
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
        assert_eq!(t.lookup(&with_session, 1), None);
    }

    #[test]
    fn entries_expire_and_refresh() {
        let mut t = AffinityTable::new(100);
        let k = keys(0, Some("s"), &[("user", &big('x', 2000))]);
        t.remember(&k, 1, 0, 1000);
        assert_eq!(t.lookup(&k, 999).map(|h| h.0), Some(1));
        t.remember(&k, 2, 500, 1000); // moved and refreshed
        assert_eq!(t.lookup(&k, 1499).map(|h| h.0), Some(2));
        assert_eq!(t.lookup(&k, 1500), None);
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
        assert!(t.lookup(&b, 3).is_none());
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
}

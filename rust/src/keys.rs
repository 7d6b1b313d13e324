//! API-key table: SHA-256 digest of the raw key → record.
//!
//! Only digests are stored. A lookup hashes the presented key, finds the entry by digest and then
//! compares the full stored digest with the computed one in constant time (`subtle`), so the final
//! equality decision does not leak timing about how many bytes matched.
//!
//! Mutations hand back the records they displace instead of dropping them under the lock: the
//! caller drops them after the lock is released (for the Python binding, dropping a record can run
//! arbitrary Python code, which must not happen while the table is locked).

use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use subtle::ConstantTimeEq;

/// A SHA-256 digest.
pub type Digest = [u8; 32];

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> Digest {
    Sha256::digest(data).into()
}

/// Constant-time equality for equal-length inputs (a length mismatch returns false at once; the
/// length is not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Cumulative CRC32C over `parts`: entry `i` is the CRC of `parts[0] ++ … ++ parts[i]`.
/// Boundaries are not encoded, so the fingerprint of a prefix depends only on its bytes.
pub fn prefix_fingerprint<P: AsRef<[u8]>>(parts: &[P]) -> Vec<u32> {
    let mut crc = 0u32;
    parts
        .iter()
        .map(|p| {
            crc = crc32c::crc32c_append(crc, p.as_ref());
            crc
        })
        .collect()
}

/// Thread-safe digest → record map.
#[derive(Debug)]
pub struct KeyTable<V> {
    map: RwLock<HashMap<Digest, (Digest, V)>>,
}

impl<V> Default for KeyTable<V> {
    fn default() -> Self {
        KeyTable {
            map: RwLock::new(HashMap::new()),
        }
    }
}

impl<V> KeyTable<V> {
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<Digest, (Digest, V)>> {
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<Digest, (Digest, V)>> {
        self.map.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Replace the whole table; returns the previous contents (drop them after this returns).
    pub fn load<I: IntoIterator<Item = (Digest, V)>>(&self, entries: I) -> Vec<V> {
        let new: HashMap<Digest, (Digest, V)> =
            entries.into_iter().map(|(d, v)| (d, (d, v))).collect();
        let old = std::mem::replace(&mut *self.write(), new);
        old.into_values().map(|(_, v)| v).collect()
    }

    /// Insert or replace one record; returns the replaced record.
    pub fn upsert(&self, digest: Digest, record: V) -> Option<V> {
        self.write()
            .insert(digest, (digest, record))
            .map(|(_, v)| v)
    }

    /// Remove one record; returns it.
    pub fn remove(&self, digest: &Digest) -> Option<V> {
        self.write().remove(digest).map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Look up by digest and apply `f` to the record under the read lock.
    pub fn lookup_digest_with<R>(&self, digest: &Digest, f: impl FnOnce(&V) -> R) -> Option<R> {
        let map = self.read();
        let (stored, v) = map.get(digest)?;
        if bool::from(stored.ct_eq(digest)) {
            Some(f(v))
        } else {
            None
        }
    }

    /// Look up by raw API key (hashed here) and apply `f` to the record under the read lock.
    pub fn lookup_with<R>(&self, api_key: &[u8], f: impl FnOnce(&V) -> R) -> Option<R> {
        self.lookup_digest_with(&sha256(api_key), f)
    }
}

impl<V: Clone> KeyTable<V> {
    /// Look up by raw API key and clone the record.
    pub fn lookup(&self, api_key: &[u8]) -> Option<V> {
        self.lookup_with(api_key, V::clone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn hex(d: &[u8]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn sha256_known_vectors() {
        assert_eq!(
            hex(&sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn ct_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn crc_prefixes() {
        // CRC32C check value.
        assert_eq!(prefix_fingerprint(&[b"123456789"]), vec![0xE306_9283]);
        let split = prefix_fingerprint(&[&b"1234"[..], b"", b"56789"]);
        assert_eq!(split.len(), 3);
        assert_eq!(split[0], prefix_fingerprint(&[b"1234"])[0]);
        assert_eq!(split[1], split[0]);
        assert_eq!(split[2], 0xE306_9283);
        assert!(prefix_fingerprint::<&[u8]>(&[]).is_empty());
    }

    #[test]
    fn load_upsert_remove_lookup() {
        let t: KeyTable<String> = KeyTable::new();
        assert!(t.is_empty());
        let old = t.load(vec![
            (sha256(b"ens_a"), "A".to_string()),
            (sha256(b"ens_b"), "B".to_string()),
        ]);
        assert!(old.is_empty());
        assert_eq!(t.len(), 2);
        assert_eq!(t.lookup(b"ens_a").as_deref(), Some("A"));
        assert_eq!(t.lookup(b"ens_c"), None);
        assert_eq!(t.upsert(sha256(b"ens_c"), "C".into()), None);
        assert_eq!(
            t.upsert(sha256(b"ens_a"), "A2".into()).as_deref(),
            Some("A")
        );
        assert_eq!(t.lookup(b"ens_a").as_deref(), Some("A2"));
        assert_eq!(t.remove(&sha256(b"ens_b")).as_deref(), Some("B"));
        assert_eq!(t.remove(&sha256(b"ens_b")), None);
        assert_eq!(t.lookup(b"ens_b"), None);
        let mut old = t.load(vec![(sha256(b"ens_z"), "Z".to_string())]);
        old.sort();
        assert_eq!(old, vec!["A2".to_string(), "C".to_string()]);
        assert_eq!(t.len(), 1);
        assert_eq!(t.lookup_with(b"ens_z", |v| v.len()), Some(1));
    }

    #[test]
    fn concurrent_readers_and_writers() {
        let t: Arc<KeyTable<u64>> = Arc::new(KeyTable::new());
        t.load((0..100u64).map(|i| (sha256(format!("k{i}").as_bytes()), i)));
        let handles: Vec<_> = (0..4u64)
            .map(|n| {
                let t = Arc::clone(&t);
                std::thread::spawn(move || {
                    for i in 0..2_000u64 {
                        let k = format!("k{}", i % 100);
                        if n == 0 {
                            t.upsert(sha256(k.as_bytes()), i % 100);
                        } else {
                            assert_eq!(t.lookup(k.as_bytes()), Some(i % 100));
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(t.len(), 100);
    }
}

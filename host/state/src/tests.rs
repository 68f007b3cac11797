use super::*;

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
        assert_eq!(fresh.get(7, id2, &5u32.to_be_bytes()).unwrap(), Some(&5u32.to_le_bytes()[..]));
        b.flush_to_disk().unwrap();
    }
    let b = StateBackend::open(&path, false).unwrap();
    let mut s = b.operator("op", 1 << 20).unwrap();
    let id = s.declare("v", StateKind::Value).unwrap();
    assert_eq!(s.get(7, id, &999u32.to_be_bytes()).unwrap(), Some(&999u32.to_le_bytes()[..]));
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
            let old = s.get(kg, id, &key).unwrap().map(|v| u64::from_le_bytes(v.try_into().unwrap()));
            assert_eq!(old, if round == 0 { None } else { Some(round - 1) }, "key {i} round {round}");
            s.put(kg, id, &key, &round.to_le_bytes());
            if i % 500 == 0 {
                s.maintain().unwrap();
                assert!(s.cache_bytes() <= budget + 500 * 200, "cache {} over budget", s.cache_bytes());
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
    assert_eq!(entries, vec![(b"y".to_vec(), b"2".to_vec()), (b"z".to_vec(), b"3".to_vec())]);
    s.map_clear(3, m, b"key").unwrap();
    assert!(s.map_entries(3, m, b"key").unwrap().is_empty());
    assert_eq!(s.map_entries(3, m, b"key2").unwrap().len(), 1);
    assert_eq!(s.map_get(3, m, b"key2", b"x").unwrap(), Some(&b"other key"[..]));
}

#[test]
fn redeclaring_with_another_kind_is_refused() {
    let (_d, b) = backend();
    let mut s = b.operator("op", 1 << 20).unwrap();
    s.declare("n", StateKind::Value).unwrap();
    let err = s.declare("n", StateKind::Map).unwrap_err().to_string();
    assert!(err.contains("declared as value state"), "{err}");
}

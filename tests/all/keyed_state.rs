//! Keyed state: it survives across batches, and keys never mix, also with
//! parallelism > 1 on both sides of a key-by.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use sluice_runtime::{wit, InstanceConfig, Runtime};
use sluice_state::StateBackend;
use sluice_tests::plugins::fixtures;
use sluice_tests::*;
use sluice_types::metrics::Metrics;

fn rec(key: &str, value: &str) -> wit::Record {
    wit::Record {
        key: Some(key.as_bytes().to_vec()),
        value: value.as_bytes().to_vec(),
        event_time: None,
        headers: vec![],
    }
}

fn counts(result: &wit::BatchResult) -> Vec<(String, u64)> {
    result
        .emits
        .iter()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_slice(&e.record.value).unwrap();
            (
                v["key"].as_str().unwrap().to_string(),
                v["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// `input` lines (`key:rest`) → split-key → keyed count → `out.jsonl`, with
/// the count's dead letters in `dead.jsonl` when `dead_letter` is set.
fn keyed_count_pipeline(
    dir: &std::path::Path,
    input: &str,
    split: u32,
    count: u32,
    dead_letter: bool,
) -> std::path::PathBuf {
    std::fs::write(dir.join("input.txt"), input).unwrap();
    let (policy, dead) = if dead_letter {
        ("dead-letter", "[[sinks]]\nname = \"dead\"\ntype = \"file\"\ninput = \"count.dead-letter\"\npath = \"dead.jsonl\"\n")
    } else {
        ("fail", "")
    };
    write_pipeline(
        dir,
        &format!(
            r#"
manifest_version = 1
name = "keyed"

[[sources]]
name = "lines"
type = "file"
path = "input.txt"

[[operators]]
name = "split"
plugin = "{{plugins}}/fixture_split_key.wasm"
input = "lines"
parallelism = {split}

[[operators]]
name = "count"
plugin = "{{plugins}}/fixture_keyed_count.wasm"
input = "split"
key_by = "key"
parallelism = {count}
on_error = "{policy}"

[[sinks]]
name = "out"
type = "file"
input = "count"
path = "out.jsonl"

{dead}"#
        ),
    )
}

#[test]
fn state_persists_across_calls_and_instances_and_is_scoped_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let backend = StateBackend::open(&dir.path().join("db"), true).unwrap();
    let runtime = Runtime::new(Some(compile_cache())).unwrap();
    let plugin = runtime.load(&plugin(fixtures::KEYED_COUNT)).unwrap();
    let metrics = Arc::new(Metrics::default());
    let state = backend.operator("count", 1 << 20).unwrap();
    let mut inst = plugin
        .instantiate(InstanceConfig::new("count"), Some(state), metrics.clone())
        .unwrap();

    let r = inst
        .process(&[rec("a", "1"), rec("b", "2"), rec("a", "3")])
        .unwrap();
    assert_eq!(
        counts(&r),
        [("a".into(), 1), ("b".into(), 1), ("a".into(), 2)]
    );
    let r = inst.process(&[rec("b", "4"), rec("a", "5")]).unwrap();
    assert_eq!(counts(&r), [("b".into(), 2), ("a".into(), 3)]);

    // A fresh instance (as after a trap or a swap) continues from the host's state.
    inst.reset().unwrap();
    let r = inst.process(&[rec("a", "6"), rec("c", "7")]).unwrap();
    assert_eq!(counts(&r), [("a".into(), 4), ("c".into(), 1)]);

    // After a flush, a new subtask state handle reads the same values from RocksDB.
    inst.state_mut().unwrap().flush().unwrap();
    drop(inst);
    let state = backend.operator("count", 1 << 20).unwrap();
    let mut inst = plugin
        .instantiate(InstanceConfig::new("count"), Some(state), metrics)
        .unwrap();
    let r = inst.process(&[rec("b", "8")]).unwrap();
    assert_eq!(counts(&r), [("b".into(), 3)]);
}

#[test]
fn keyed_state_in_a_stateless_operator_traps_with_a_hint() {
    let runtime = Runtime::new(Some(compile_cache())).unwrap();
    let plugin = runtime.load(&plugin(fixtures::KEYED_COUNT)).unwrap();
    let mut inst = plugin
        .instantiate(
            InstanceConfig::new("count"),
            None,
            Arc::new(Metrics::default()),
        )
        .unwrap();
    let err = inst.process(&[rec("a", "1")]).unwrap_err().to_string();
    assert!(err.contains("is not keyed; set key_by = \"key\""), "{err}");
}

#[test]
fn keys_do_not_mix_under_parallelism_and_small_batches() {
    let dir = tempfile::tempdir().unwrap();
    let keys = 37;
    let n = 20_000;
    let input: String = (0..n).map(|i| format!("k{}:{i}\n", i % keys)).collect();
    let pipeline = keyed_count_pipeline(dir.path(), &input, 2, 3, false);
    // Batches of 16: a key's count crosses hundreds of batches and three subtasks' caches.
    let (summary, _) = run_in_process(&pipeline, &dir.path().join("state"), 16).unwrap();
    assert_eq!(summary.records_in, n);
    assert_eq!(summary.records_out, n);

    let mut per_key: BTreeMap<String, (BTreeSet<u64>, BTreeSet<u64>)> = BTreeMap::new();
    for v in read_jsonl(&dir.path().join("out.jsonl")) {
        let key = v["key"].as_str().unwrap().to_string();
        let value = v["value"].as_str().unwrap();
        let (prefix, seq) = value.split_once(':').unwrap();
        assert_eq!(
            prefix, key,
            "a record of key {prefix} was counted under key {key}"
        );
        let e = per_key.entry(key).or_default();
        assert!(
            e.0.insert(v["count"].as_u64().unwrap()),
            "count repeated for {value}"
        );
        assert!(
            e.1.insert(seq.parse().unwrap()),
            "record {value} counted twice"
        );
    }
    assert_eq!(per_key.len(), keys as usize);
    for (key, (counts, seqs)) in per_key {
        let expected = (0..n).filter(|i| format!("k{}", i % keys) == key).count() as u64;
        assert_eq!(seqs.len() as u64, expected, "{key}: records");
        assert_eq!(
            counts,
            (1..=expected).collect::<BTreeSet<_>>(),
            "{key}: counts must be exactly 1..={expected}"
        );
    }
}

#[test]
fn a_trapping_call_leaves_no_state_behind() {
    let dir = tempfile::tempdir().unwrap();
    let backend = StateBackend::open(&dir.path().join("db"), true).unwrap();
    let runtime = Runtime::new(Some(compile_cache())).unwrap();
    let plugin = runtime.load(&plugin(fixtures::KEYED_COUNT)).unwrap();
    let state = backend.operator("count", 1 << 20).unwrap();
    let mut inst = plugin
        .instantiate(
            InstanceConfig::new("count"),
            Some(state),
            Arc::new(Metrics::default()),
        )
        .unwrap();
    assert_eq!(
        counts(&inst.process(&[rec("a", "1")]).unwrap()),
        [("a".into(), 1)]
    );
    // The second record counts a and b, then traps: the whole call's writes go.
    let err = inst
        .process(&[rec("b", "2"), rec("a", "trap")])
        .unwrap_err();
    assert!(
        err.to_string().contains("fixture trap after counting trap"),
        "{err}"
    );
    inst.reset().unwrap();
    assert_eq!(
        counts(&inst.process(&[rec("a", "3"), rec("b", "4")]).unwrap()),
        [("a".into(), 2), ("b".into(), 1)]
    );
}

#[test]
fn the_dataflow_retries_a_trapping_batch_record_by_record_keeping_good_records_state() {
    let dir = tempfile::tempdir().unwrap();
    let input: String = (0..100)
        .map(|i| {
            if i == 41 {
                "k1:trap\n".to_string()
            } else {
                format!("k{}:{i}\n", i % 3)
            }
        })
        .collect();
    let pipeline = keyed_count_pipeline(dir.path(), &input, 1, 1, true);
    run_in_process(&pipeline, &dir.path().join("state"), 64).unwrap();
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for v in read_jsonl(&dir.path().join("out.jsonl")) {
        let key = v["key"].as_str().unwrap().to_string();
        let count = v["count"].as_u64().unwrap();
        let prev = last.insert(key.clone(), count).unwrap_or(0);
        assert_eq!(
            count,
            prev + 1,
            "{key}: the poison record's write must not count"
        );
    }
    // 99 good records: k0 34, k1 32 (33 minus the poison), k2 33.
    assert_eq!(last.values().sum::<u64>(), 99);
    let dead = read_jsonl(&dir.path().join("dead.jsonl"));
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["offset"], 42);
}

//! Hot swap through the control directory, under load: a keyed counter is
//! switched v1 → v2 → v1 while records flow; a component of the wrong kind
//! is rejected and the old version keeps running; a repeated command is
//! applied once.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use sluice_connectors::{taxi_records, GeneratorConfig};
use sluice_tests::*;

const TRIPS: u64 = 30_000;

fn pipeline() -> String {
    format!(
        r#"
manifest_version = 1
name = "swap"

[checkpoints]
interval = "400ms"

[[sources]]
name = "trips"
type = "generator"
seed = 17
count = {TRIPS}
rate = 3000
malformed_ratio = 0.01

[[operators]]
name = "keyed"
plugin = "{{plugins}}/fixture_json_keyed.wasm"
input = "trips"
on_error = "skip"
params = {{ key_field = "pickup_zone", time_field = "pickup_ms" }}

[[operators]]
name = "count"
plugin = "{{plugins}}/fixture_versioned_count_v1.wasm"
input = "keyed"
key_by = "key"
parallelism = 2

[[sinks]]
name = "out"
type = "file"
input = "count"
path = "out.txt"
"#
    )
}

fn deploy(dir: &Path, component: &str, id: &str) -> (bool, String) {
    let wasm = plugin(component).display().to_string();
    let out = sluice(&["plugin", "deploy", "--state-dir", "state", "--id", id, "--timeout", "60", "pipeline.toml", "count", &wasm], dir);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Trips `fixture_json_keyed` keys: JSON with a pickup zone and an integer pickup time.
fn countable() -> usize {
    let config: GeneratorConfig = serde_json::from_value(serde_json::json!({ "seed": 17, "count": TRIPS, "malformed_ratio": 0.01 })).unwrap();
    taxi_records(&config, 0)
        .filter(|r| {
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&r.value) else { return false };
            matches!(v.get("pickup_zone"), Some(serde_json::Value::String(_) | serde_json::Value::Number(_))) && v.get("pickup_ms").and_then(serde_json::Value::as_i64).is_some()
        })
        .count()
}

#[test]
fn a_keyed_counter_is_swapped_v1_v2_v1_under_load_without_loss_duplicate_or_reset() {
    let dir = tempfile::tempdir().unwrap();
    write_pipeline(dir.path(), &pipeline());
    let child = spawn_run(dir.path(), &[]);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(2));

    // The wrong kind of component: rejected, v1 keeps running.
    let (ok, text) = deploy(dir.path(), "fixture_window_count", "wrong-world");
    assert!(!ok && text.contains("rejected") && text.contains("window"), "{text}");
    let (ok, text) = deploy(dir.path(), "fixture_versioned_count_v2", "to-v2");
    assert!(ok && text.contains("applied"), "{text}");
    std::thread::sleep(Duration::from_secs(2));
    // The same command again: it was applied once, and stays so.
    let (ok, text) = deploy(dir.path(), "fixture_versioned_count_v2", "to-v2");
    assert!(ok && text.contains("applied"), "{text}");
    let (ok, text) = deploy(dir.path(), "fixture_versioned_count_v1", "back-to-v1");
    assert!(ok && text.contains("applied"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(9), "the swaps should land while records flow ({:?})", started.elapsed());

    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("already handled"), "the repeated command is recognised: {log}");
    for line in log.lines().filter(|l| l.contains("switched to plugin")) {
        eprintln!("{line}");
    }

    // Per key: counts 1, 2, 3, ... (no loss, no duplicate, no reset) and
    // versions v1… v2… v1… (each switch once, in order).
    let text = std::fs::read_to_string(dir.path().join("out.txt")).unwrap();
    let mut per_key: HashMap<String, (u64, usize, Vec<String>)> = HashMap::new();
    let mut lines = 0;
    for line in text.lines() {
        let mut parts = line.splitn(4, ' ');
        let (key, count, version) = (parts.next().unwrap(), parts.next().unwrap().parse::<u64>().unwrap(), parts.next().unwrap());
        let e = per_key.entry(key.to_string()).or_insert((0, 0, Vec::new()));
        assert_eq!(count, e.0 + 1, "key {key}: count {count} after {}", e.0);
        e.0 = count;
        let phase = match (version, e.1) {
            ("v1", 0) => 0,
            ("v2", 0 | 1) => 1,
            ("v1", 1 | 2) => 2,
            (v, p) => panic!("key {key}: version {v} in phase {p}: a swap went backwards or happened twice"),
        };
        e.1 = phase;
        e.2.push(version.to_string());
        lines += 1;
    }
    assert_eq!(lines, countable(), "every keyed trip is counted exactly once");
    let switched = per_key.values().filter(|(_, phase, _)| *phase == 2).count();
    assert!(switched * 2 > per_key.len(), "most keys saw both swaps ({switched} of {})", per_key.len());
    let saw_v2 = per_key.values().filter(|(_, _, v)| v.iter().any(|v| v == "v2")).count();
    assert!(saw_v2 * 2 > per_key.len(), "most keys were counted by v2 for a while ({saw_v2} of {})", per_key.len());
}

//! Event time: watermarks, windows (tumbling, sliding, session; event and
//! processing time), allowed lateness and the late side output, timers, and
//! state TTL, through real pipelines of Wasm components.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sluice_runtime::{wit, InstanceConfig, Runtime};
use sluice_state::{BackendOptions, StateBackend, StateClock};
use sluice_tests::plugins::fixtures;
use sluice_tests::*;
use sluice_types::metrics::Metrics;

/// `(key, start, end) -> (count, sum)`.
type Windows = BTreeMap<(String, i64, i64), (u64, f64)>;

/// One JSON line per record: `{"key","time","v"}`.
fn line(key: &str, time: i64, v: i64) -> String {
    format!("{{\"key\":\"{key}\",\"time\":{time},\"v\":{v}}}\n")
}

/// 6,000 records over 20 keys, 100 ms apart, with a 60 s pause after every
/// 1,000 (so session windows with a 30 s gap close), in time order.
fn in_order() -> Vec<(String, i64, i64)> {
    (0..6000i64)
        .map(|i| {
            (
                format!("k{}", i % 20),
                1_767_225_600_000 + i * 100 + (i / 1000) * 60_000,
                i % 7,
            )
        })
        .collect()
}

/// The same records, shuffled within blocks of 50 (at most 5 s apart).
fn shuffled(records: &[(String, i64, i64)]) -> Vec<(String, i64, i64)> {
    let mut out = records.to_vec();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for block in out.chunks_mut(50) {
        for i in (1..block.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            block.swap(i, (seed % (i as u64 + 1)) as usize);
        }
    }
    assert_ne!(out, records, "the shuffle changed the order");
    out
}

fn write_input(dir: &Path, records: &[(String, i64, i64)]) {
    let text: String = records.iter().map(|(k, t, v)| line(k, *t, *v)).collect();
    std::fs::write(dir.join("input.jsonl"), text).unwrap();
}

/// file → json-keyed (watermarks) → window count over `v` → out.jsonl, plus
/// the late side output in late.jsonl.
fn window_pipeline(dir: &Path, window: &str, out_of_orderness: &str) -> std::path::PathBuf {
    write_pipeline(
        dir,
        &format!(
            r#"
manifest_version = 1
name = "windows"

[[sources]]
name = "input"
type = "file"
path = "input.jsonl"

[[operators]]
name = "keyed"
plugin = "{{plugins}}/fixture_json_keyed.wasm"
input = "input"
watermarks = {{ out_of_orderness = "{out_of_orderness}" }}

[[operators]]
name = "win"
plugin = "{{plugins}}/fixture_window_count.wasm"
input = "keyed"
key_by = "key"
params = {{ field = "v" }}
window = {window}

[[sinks]]
name = "out"
type = "file"
input = "win"
path = "out.jsonl"

[[sinks]]
name = "late"
type = "file"
input = "win.late"
path = "late.jsonl"
"#
        ),
    )
}

fn run_windows(
    dir: &Path,
    records: &[(String, i64, i64)],
    window: &str,
    ooo: &str,
    batch: usize,
) -> (Vec<serde_json::Value>, Arc<Metrics>) {
    write_input(dir, records);
    let p = window_pipeline(dir, window, ooo);
    let (_, metrics) = run_in_process(&p, &dir.join("state"), batch).expect("pipeline runs");
    (read_jsonl(&dir.join("out.jsonl")), metrics)
}

/// The last result per window (a window that fires again replaces its result).
fn results(out: &[serde_json::Value]) -> Windows {
    out.iter()
        .map(|v| {
            let key = (
                v["key"].as_str().unwrap().to_string(),
                v["start"].as_i64().unwrap(),
                v["end"].as_i64().unwrap(),
            );
            (
                key,
                (v["count"].as_u64().unwrap(), v["sum"].as_f64().unwrap()),
            )
        })
        .collect()
}

fn expected(records: &[(String, i64, i64)], assign: impl Fn(i64) -> Vec<(i64, i64)>) -> Windows {
    let mut w = Windows::new();
    for (k, t, v) in records {
        for (s, e) in assign(*t) {
            let entry = w.entry((k.clone(), s, e)).or_insert((0, 0.0));
            entry.0 += 1;
            entry.1 += *v as f64;
        }
    }
    w
}

fn expected_sessions(records: &[(String, i64, i64)], gap: i64) -> Windows {
    let mut by_key: BTreeMap<&str, Vec<(i64, i64)>> = BTreeMap::new();
    for (k, t, v) in records {
        by_key.entry(k).or_default().push((*t, *v));
    }
    let mut w = Windows::new();
    for (k, mut list) in by_key {
        list.sort();
        let mut current: Option<(i64, i64, u64, f64)> = None;
        for (t, v) in list {
            current = match current {
                Some((s, e, n, sum)) if t <= e => Some((s, e.max(t + gap), n + 1, sum + v as f64)),
                Some((s, e, n, sum)) => {
                    w.insert((k.to_string(), s, e), (n, sum));
                    Some((t, t + gap, 1, v as f64))
                }
                None => Some((t, t + gap, 1, v as f64)),
            };
        }
        if let Some((s, e, n, sum)) = current {
            w.insert((k.to_string(), s, e), (n, sum));
        }
    }
    w
}

#[test]
fn window_results_on_shuffled_input_equal_those_on_ordered_input() {
    let ordered = in_order();
    let mixed = shuffled(&ordered);
    let cases: [(&str, Windows); 3] = [
        (
            r#"{ kind = "tumbling", size = "1m" }"#,
            expected(&ordered, |t| {
                vec![(t - t.rem_euclid(60_000), t - t.rem_euclid(60_000) + 60_000)]
            }),
        ),
        (
            r#"{ kind = "sliding", size = "1m", slide = "20s" }"#,
            expected(&ordered, |t| {
                let last = t - t.rem_euclid(20_000);
                (0..3)
                    .map(|i| last - i * 20_000)
                    .filter(|s| *s > t - 60_000)
                    .map(|s| (s, s + 60_000))
                    .collect()
            }),
        ),
        (
            r#"{ kind = "session", gap = "30s" }"#,
            expected_sessions(&ordered, 30_000),
        ),
    ];
    for (window, want) in cases {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let (in_order_out, m1) = run_windows(a.path(), &ordered, window, "10s", 256);
        let (shuffled_out, m2) = run_windows(b.path(), &mixed, window, "10s", 256);
        assert_eq!(m1.node("win").late_records_dropped.get(), 0, "{window}");
        assert_eq!(m2.node("win").late_records_dropped.get(), 0, "{window}");
        // Each window fires exactly once, and the results agree with each other and with a native computation.
        assert_eq!(
            in_order_out.len(),
            want.len(),
            "{window}: one result per window"
        );
        assert_eq!(
            shuffled_out.len(),
            want.len(),
            "{window}: one result per window"
        );
        assert_eq!(results(&in_order_out), want, "{window}: in order");
        assert_eq!(results(&shuffled_out), want, "{window}: shuffled");
    }
}

#[test]
fn late_records_go_to_the_side_output_and_the_counter_and_allowed_lateness_refires() {
    let dir = tempfile::tempdir().unwrap();
    let base = 1_767_225_600_000i64;
    let mut records: Vec<(String, i64, i64)> = (0..1200i64)
        .map(|i| {
            (
                if i % 2 == 0 { "a" } else { "b" }.to_string(),
                base + (i / 2) * 1000,
                1,
            )
        })
        .collect();
    // Appended after time reached ~600 s: 3 records of [0, 60 s) and 2 of
    // [300 s, 360 s) are past the 2 minutes of allowed lateness; 4 of
    // [480 s, 540 s) are within it, so that window fires again after each.
    let late: Vec<(String, i64, i64)> = [10, 20, 30, 300, 310]
        .iter()
        .map(|s| ("a".to_string(), base + s * 1000, 100))
        .collect();
    let allowed: Vec<(String, i64, i64)> = [500, 501, 502, 503]
        .iter()
        .map(|s| ("a".to_string(), base + s * 1000, 10))
        .collect();
    records.extend(late.iter().cloned());
    records.extend(allowed.iter().cloned());
    let window = r#"{ kind = "tumbling", size = "1m", allowed_lateness = "2m" }"#;
    let (out, metrics) = run_windows(dir.path(), &records, window, "0s", 100);

    assert_eq!(metrics.node("win").late_records_dropped.get(), 5);
    let late_out = read_jsonl(&dir.path().join("late.jsonl"));
    assert_eq!(late_out.len(), 5, "{late_out:?}");
    let times: Vec<i64> = late_out
        .iter()
        .map(|v| v["time"].as_i64().unwrap())
        .collect();
    assert_eq!(times, late.iter().map(|r| r.1).collect::<Vec<_>>());

    let refired: Vec<u64> = out
        .iter()
        .filter(|v| v["key"] == "a" && v["start"].as_i64() == Some(base + 480_000))
        .map(|v| v["count"].as_u64().unwrap())
        .collect();
    assert_eq!(refired, [60, 61, 62, 63, 64], "the window fired on time, then again after each of the 4 allowed late records (as Flink's event-time trigger)");
    let r = results(&out);
    assert_eq!(
        r[&("a".to_string(), base, base + 60_000)],
        (60, 60.0),
        "the late records are not in the closed window"
    );
    assert_eq!(r.len(), 20, "10 minutes x 2 keys");
}

#[test]
fn a_late_record_that_bridges_two_sessions_merges_them() {
    let base = 1_767_225_600_000i64;
    for batch in [1, 1024] {
        let dir = tempfile::tempdir().unwrap();
        // Sessions [0, 40 s) and [60 s, 100 s) with a 30 s gap; the record at
        // 35 s arrives last and overlaps both.
        let mut records: Vec<(String, i64, i64)> = [0, 10, 60, 70]
            .iter()
            .map(|s| ("u".to_string(), base + s * 1000, 1))
            .collect();
        records.push(("other".to_string(), base + 5_000, 1));
        let (out, _) = run_windows(
            dir.path(),
            &records,
            r#"{ kind = "session", gap = "30s" }"#,
            "1m",
            batch,
        );
        let r = results(&out);
        assert_eq!(
            r.get(&("u".to_string(), base, base + 40_000)),
            Some(&(2, 2.0)),
            "batch {batch}: {out:?}"
        );
        assert_eq!(
            r.get(&("u".to_string(), base + 60_000, base + 100_000)),
            Some(&(2, 2.0)),
            "batch {batch}: {out:?}"
        );

        let dir = tempfile::tempdir().unwrap();
        records.push(("u".to_string(), base + 35_000, 1));
        let (out, _) = run_windows(
            dir.path(),
            &records,
            r#"{ kind = "session", gap = "30s" }"#,
            "1m",
            batch,
        );
        let r = results(&out);
        assert_eq!(
            out.len(),
            2,
            "batch {batch}: one merged session for u, one for other: {out:?}"
        );
        assert_eq!(
            r.get(&("u".to_string(), base, base + 100_000)),
            Some(&(5, 5.0)),
            "batch {batch}: {out:?}"
        );
        assert_eq!(
            r.get(&("other".to_string(), base + 5_000, base + 35_000)),
            Some(&(1, 1.0)),
            "batch {batch}"
        );
    }
}

#[test]
fn processing_time_windows_fire_on_the_wall_clock_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = wall_clock_window_pipeline(dir.path(), 3000, 3000, "200ms", "processing");
    run_in_process(&p, &dir.path().join("state"), 64).expect("pipeline runs");
    let out = read_jsonl(&dir.path().join("out.jsonl"));
    let total: u64 = out.iter().map(|v| v["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 3000, "every record is in exactly one window");
    let starts: std::collections::BTreeSet<i64> =
        out.iter().map(|v| v["start"].as_i64().unwrap()).collect();
    assert!(
        starts.len() >= 3,
        "about a second of input spans several 200 ms windows: {starts:?}"
    );
    for v in &out {
        assert_eq!(
            v["end"].as_i64().unwrap() - v["start"].as_i64().unwrap(),
            200
        );
    }
}

#[test]
fn timers_fire_once_in_order_and_not_before_their_time() {
    let dir = tempfile::tempdir().unwrap();
    let base = 1_767_225_600_000i64;
    // Keys a..e, one record per second each for 100 s, a little out of order.
    let mut records: Vec<(String, i64, i64)> = Vec::new();
    for s in 0..100i64 {
        for k in ["a", "b", "c", "d", "e"] {
            records.push((k.to_string(), base + s * 1000, 1));
        }
    }
    let records = shuffled(&records);
    write_input(dir.path(), &records);
    let p = write_pipeline(
        dir.path(),
        r#"
manifest_version = 1
name = "timers"

[[sources]]
name = "input"
type = "file"
path = "input.jsonl"

[[operators]]
name = "keyed"
plugin = "{plugins}/fixture_json_keyed.wasm"
input = "input"
watermarks = { out_of_orderness = "20s" }

[[operators]]
name = "timer"
plugin = "{plugins}/fixture_timer.wasm"
input = "keyed"
key_by = "key"
params = { delay_ms = 1500 }

[[sinks]]
name = "out"
type = "file"
input = "timer"
path = "out.jsonl"
"#,
    );
    run_in_process(&p, &dir.path().join("state"), 16).expect("pipeline runs");
    let out = read_jsonl(&dir.path().join("out.jsonl"));
    // One timer per (key, record time + 1.5 s): each fires exactly once.
    let mut fired: BTreeMap<(String, i64), u32> = BTreeMap::new();
    for v in &out {
        *fired
            .entry((
                v["key"].as_str().unwrap().to_string(),
                v["timestamp"].as_i64().unwrap(),
            ))
            .or_default() += 1;
        assert_eq!(v["domain"], "event");
        // Not before its time: the watermark had reached it (the last ones fire at the end of input).
        if let Some(wm) = v["watermark"].as_i64() {
            assert!(wm >= v["timestamp"].as_i64().unwrap(), "{v}");
        }
    }
    let with_watermark = out
        .iter()
        .filter(|v| v["watermark"].as_i64().is_some_and(|w| w < i64::MAX))
        .count();
    // Only timers within out_of_orderness + delay (21.5 s, 5 keys) of the last record wait for the end of input.
    assert!(
        with_watermark >= 500 - 5 * 23,
        "timers fire on watermarks before the end of input, got {with_watermark}"
    );
    assert_eq!(fired.len(), 500, "{} timers fired", fired.len());
    assert!(fired.values().all(|n| *n == 1), "a timer fired twice");
    // In timestamp order.
    let ts: Vec<i64> = out
        .iter()
        .map(|v| v["timestamp"].as_i64().unwrap())
        .collect();
    assert!(
        ts.windows(2).all(|w| w[0] <= w[1]),
        "timers fired out of order"
    );
    // A timer clears the key's count; every record was counted exactly once.
    let counted: u64 = out.iter().map(|v| v["count"].as_u64().unwrap()).sum();
    assert_eq!(counted, 500);
}

#[test]
fn state_with_a_ttl_is_not_returned_after_it_expires_and_cleanup_shrinks_rocksdb() {
    let dir = tempfile::tempdir().unwrap();
    let clock = StateClock::manual(1_000_000);
    let backend = StateBackend::open_with(
        dir.path(),
        true,
        BackendOptions {
            clock: clock.clone(),
            ttl_cleanup_interval: Duration::from_secs(3600),
        },
    )
    .unwrap();
    let runtime = Runtime::new(Some(compile_cache())).unwrap();
    let plugin = runtime.load(&plugin(fixtures::TTL)).unwrap();
    let config = InstanceConfig {
        params: r#"{"ttl_ms": 1000}"#.into(),
        ..InstanceConfig::new("ttl")
    };
    let state = backend.operator("ttl", 1 << 20).unwrap();
    let mut instance = plugin
        .instantiate(config, Some(state), Arc::new(Metrics::default()))
        .unwrap();
    let rec = |k: &str, v: &str| wit::Record {
        key: Some(k.as_bytes().to_vec()),
        value: v.as_bytes().to_vec(),
        event_time: None,
        headers: vec![],
    };
    let previous = |r: &wit::BatchResult| -> Vec<serde_json::Value> {
        r.emits
            .iter()
            .map(|e| {
                serde_json::from_slice::<serde_json::Value>(&e.record.value).unwrap()["previous"]
                    .clone()
            })
            .collect()
    };

    let keys: Vec<String> = (0..2000).map(|i| format!("k{i}")).collect();
    let batch: Vec<wit::Record> = keys.iter().map(|k| rec(k, "x")).collect();
    let out = instance.process(&batch).unwrap();
    assert!(previous(&out).iter().all(|p| p.is_null()));
    clock.advance(500);
    let out = instance.process(&[rec("k0", "y")]).unwrap();
    assert_eq!(
        previous(&out),
        ["x"],
        "still alive after 500 ms of a 1 s TTL"
    );
    instance.state_mut().unwrap().flush().unwrap();
    backend.cleanup_expired().unwrap();
    assert_eq!(backend.count_keys(), 2000, "nothing expired yet");

    clock.advance(600);
    let out = instance.process(&[rec("k1", "z"), rec("k0", "w")]).unwrap();
    assert_eq!(
        previous(&out),
        [serde_json::Value::Null, "y".into()],
        "k1 expired; k0 was rewritten 600 ms ago"
    );
    instance.state_mut().unwrap().flush().unwrap();
    clock.advance(5_000);
    backend.cleanup_expired().unwrap();
    assert_eq!(
        backend.count_keys(),
        0,
        "every entry expired and was removed from RocksDB"
    );
}

#[test]
fn components_of_contract_0_1_0_still_load_and_run() {
    let runtime = Runtime::new(Some(compile_cache())).unwrap();
    let plugin = runtime
        .load(&plugin(fixtures::CONTRACT_0_1_0))
        .expect("a 0.1.0 component loads on a 0.1.3 host");
    assert_eq!(plugin.info().version, "0.1.0");
    assert!(
        plugin
            .info()
            .exports
            .iter()
            .any(|e| e == "sluice:operator/processor@0.1.0"),
        "{:?}",
        plugin.info().exports
    );
    let mut instance = plugin
        .instantiate(
            InstanceConfig::new("old"),
            None,
            Arc::new(Metrics::default()),
        )
        .unwrap();
    let out = instance
        .process(&[wit::Record {
            key: Some(b"k".to_vec()),
            value: b"hello".to_vec(),
            event_time: Some(7),
            headers: vec![],
        }])
        .unwrap();
    assert_eq!(out.emits.len(), 1);
    assert_eq!(out.emits[0].record.value, b"HELLO");
    assert_eq!(out.emits[0].record.event_time, Some(7));
}

#[test]
fn a_plugin_of_the_wrong_kind_for_its_operator_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    write_input(dir.path(), &[("k".into(), 1, 1)]);
    // A window aggregate without a window table.
    let p = write_pipeline(
        dir.path(),
        r#"
manifest_version = 1
name = "kinds"

[[sources]]
name = "input"
type = "file"
path = "input.jsonl"
[sources.watermarks]
out_of_orderness = "1s"

[[operators]]
name = "win"
plugin = "{plugins}/fixture_window_count.wasm"
input = "input"
key_by = "key"

[[sinks]]
name = "out"
type = "stdout"
input = "win"
"#,
    );
    let err = run_in_process(&p, &dir.path().join("state"), 16)
        .err()
        .expect("refused");
    assert!(
        err.contains("operator `win` has no [operators.window]")
            && err.contains("window-aggregate"),
        "{err}"
    );
    // A process operator with one.
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("fixture_window_count", "fixture_keyed_count")
        .replace(
            "key_by = \"key\"",
            "key_by = \"key\"\nwindow = { kind = \"tumbling\", size = \"1m\" }",
        );
    std::fs::write(&p, text).unwrap();
    let err = run_in_process(&p, &dir.path().join("state"), 16)
        .err()
        .expect("refused");
    assert!(
        err.contains("has a [operators.window]") && err.contains("process-operator"),
        "{err}"
    );
}

#[test]
fn ingestion_time_windows_use_the_arrival_clock() {
    let dir = tempfile::tempdir().unwrap();
    let p = wall_clock_window_pipeline(dir.path(), 2000, 4000, "100ms", "ingestion");
    let before = sluice_runtime::now_ms();
    run_in_process(&p, &dir.path().join("state"), 64).expect("pipeline runs");
    let after = sluice_runtime::now_ms();
    let out = read_jsonl(&dir.path().join("out.jsonl"));
    assert_eq!(
        out.iter()
            .map(|v| v["count"].as_u64().unwrap())
            .sum::<u64>(),
        2000
    );
    for v in &out {
        // The generator's event times are in 2026-01-01; ingestion time is now.
        let start = v["start"].as_i64().unwrap();
        assert!(
            start >= before - 100 && start <= after,
            "window {start} outside the run [{before}, {after}]"
        );
    }
}

/// turbines (rate limited) → tumbling count of `speed_mph` on a wall clock
/// (`time` = processing or ingestion) → out.jsonl.
fn wall_clock_window_pipeline(
    dir: &Path,
    records: u64,
    rate: u64,
    size: &str,
    time: &str,
) -> std::path::PathBuf {
    write_pipeline(
        dir,
        &format!(
            r#"
manifest_version = 1
name = "wall-clock"

[[sources]]
name = "turbines"
type = "turbines"
records = {records}
rate = {rate}

[[operators]]
name = "win"
plugin = "{{plugins}}/fixture_window_count.wasm"
input = "turbines"
key_by = "key"
params = {{ field = "speed_mph" }}
window = {{ kind = "tumbling", size = "{size}", time = "{time}" }}

[[sinks]]
name = "out"
type = "file"
input = "win"
path = "out.jsonl"
"#
        ),
    )
}

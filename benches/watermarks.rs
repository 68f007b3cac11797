//! What per-record watermarks cost: the same event-time pipelines run with
//! per-record watermarks (Sluice's semantics: every record is judged against
//! the watermark as of that record, whatever the batch size) and with the
//! old per-batch ones (every record of a batch judged against the watermark
//! before the batch; `SLUICE_BENCH_PER_BATCH_WATERMARKS=1`), alternating, in
//! one run. Reports the median wall time of each and their ratio.
//!
//! ```text
//! scripts/build-plugins && cargo build --release -p sluice-cli
//! cargo bench -p sluice-benches --bench watermarks
//! SLUICE_BENCH_RECORDS=300000 SLUICE_BENCH_ROUNDS=3 cargo bench -p sluice-benches --bench watermarks
//! ```
//!
//! - **windows**: `turbines` (10,000 keys, a reading per key every second,
//!   2 s of jitter, one split, watermarks out-of-orderness 2 s) → keyed
//!   1-minute tumbling window counting (`bench_window_count`) → file. The
//!   host knows every window's timer up front, so a batch is cut only where a
//!   window fires.
//! - **timers**: the same readings → keyed process function with a timer per
//!   record 1.5 s later (`fixture_timer`) → file: the worst case, where a
//!   timer a record registers is reached by a later record of the same
//!   call, so calls are undone and redone up to that record.
//!
//! Both modes give the same window results here (no record is late by
//! either rule), which the bench checks.

use std::path::Path;
use std::process::Command;

use sluice_tests::{compile_cache, median, sluice_bin, write_pipeline};

mod common;
use common::child::run_child;

fn pipeline(dir: &Path, records: u64, operator: &str) {
    write_pipeline(
        dir,
        &format!(
            r#"
manifest_version = 1
name = "bench-watermarks"

[[sources]]
name = "readings"
type = "turbines"
seed = 7
turbines = 10000
records = {records}
interval_ms = 1000
out_of_order_ms = 2000
late_ratio = 0.0
splits = 1
[sources.watermarks]
out_of_orderness = "2s"

{operator}

[[sinks]]
name = "out"
type = "file"
input = "op"
path = "out.jsonl"
"#
        ),
    );
}

const WINDOWS: &str = r#"[[operators]]
name = "op"
plugin = "{plugins}/bench_window_count.wasm"
input = "readings"
key_by = "key"
window = { kind = "tumbling", size = "1m" }"#;

const TIMERS: &str = r#"[[operators]]
name = "op"
plugin = "{plugins}/fixture_timer.wasm"
input = "readings"
key_by = "key"
params = { delay_ms = 1500 }"#;

/// One run; wall seconds and the sorted output lines.
fn run(dir: &Path, per_batch: bool) -> (f64, Vec<String>) {
    let _ = std::fs::remove_dir_all(dir.join("state"));
    let mut cmd = Command::new(sluice_bin());
    cmd.args(["run", "--quiet", "--state-dir", "state", "pipeline.toml"])
        .current_dir(dir);
    cmd.env("SLUICE_COMPILE_CACHE", compile_cache())
        .env("SLUICE_LOG", "warn");
    if per_batch {
        cmd.env("SLUICE_BENCH_PER_BATCH_WATERMARKS", "1");
    }
    let child = run_child(cmd, dir, if per_batch { "per-batch" } else { "per-record" });
    assert!(
        child.stderr.contains("finished in"),
        "sluice failed:\n{}",
        child.stderr
    );
    let mut lines: Vec<String> = std::fs::read_to_string(dir.join("out.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort_unstable();
    (child.wall.as_secs_f64(), lines)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let records: u64 = std::env::var("SLUICE_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rounds: usize = std::env::var("SLUICE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    println!("per-record against per-batch watermarks, {records} records, {rounds} rounds each, alternating");
    for (name, operator, same_output) in [("windows", WINDOWS, true), ("timers", TIMERS, false)] {
        let dir = tempfile::tempdir().expect("temp dir");
        pipeline(dir.path(), records, operator);
        run(dir.path(), false); // warm-up: fills the compile cache
        let (mut exact, mut batch) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let (t, a) = run(dir.path(), false);
            exact.push(t);
            let (t, b) = run(dir.path(), true);
            batch.push(t);
            if same_output {
                assert!(
                    a == b,
                    "{name}: the two modes disagree on input with no late records"
                );
            }
        }
        let (e, b) = (median(exact), median(batch));
        println!(
            "{name:8} per-record {e:6.2} s ({:8.0} rec/s)   per-batch {b:6.2} s ({:8.0} rec/s)   per-record costs {:+.1} % (ratio {:.3})",
            records as f64 / e,
            records as f64 / b,
            (e / b - 1.0) * 100.0,
            e / b
        );
    }
}

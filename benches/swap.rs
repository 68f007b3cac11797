//! What a hot swap costs, in one run: the pause it causes in a running
//! pipeline against that pipeline's normal largest gap, and the compile and
//! instantiation times of the component (off the hot path and at the
//! barrier, respectively), and what a state migration adds to a swap (in
//! process: 100,000 keys swapped v1 → v4, which moves every count into
//! another state, against v1 → v2, which migrates nothing).
//!
//! ```text
//! scripts/build-plugins && cargo build --release -p sluice-cli
//! cargo bench -p sluice-benches --bench swap      # SLUICE_BENCH_SWAPS (6)
//! ```
//!
//! The pipeline (generated trips at 20,000/s → key → keyed count, p = 2 →
//! stdout, checkpoints every 500 ms) runs as a `sluice run` child; the
//! bench timestamps every output line as it arrives. "Normal gap": the
//! largest gap between two output lines in the second before each swap
//! (checkpoint barriers included). "Swap gap": the largest gap from sending
//! the command until 200 ms after it is applied. Swaps alternate v1 ↔ v2.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_runtime::{InstanceConfig, Runtime};
use sluice_tests::plugins::fixtures;
use sluice_tests::{compile_cache, median, plugin, sluice, sluice_bin, write_pipeline};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let swaps: usize = std::env::var("SLUICE_BENCH_SWAPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let v = [
        plugin(fixtures::VERSIONED_COUNT_V1),
        plugin(fixtures::VERSIONED_COUNT_V2),
    ];

    // Compile (no cache) and instantiate, in-process.
    let mut compile = Vec::new();
    let mut instantiate = Vec::new();
    for round in 0..3 {
        let runtime = Runtime::new(None).unwrap();
        let t = Instant::now();
        let p = runtime.load(&v[round % 2]).unwrap();
        compile.push(t.elapsed().as_secs_f64() * 1e3);
        let metrics = Arc::new(sluice_types::metrics::Metrics::default());
        for _ in 0..200 {
            let t = Instant::now();
            let i = p
                .instantiate(InstanceConfig::new("count"), None, metrics.clone())
                .unwrap();
            instantiate.push(t.elapsed().as_secs_f64() * 1e6);
            drop(i);
        }
    }

    // State migration, in-process: v1's counts of KEYS keys, then a swap to
    // v4 (which moves every key's count into another state) against a swap
    // to v2 (same layout, nothing to migrate).
    const KEYS: usize = 100_000;
    let runtime = Runtime::new(Some(compile_cache())).unwrap();
    let (p1, p2, p4) = (
        runtime.load(&v[0]).unwrap(),
        runtime.load(&v[1]).unwrap(),
        runtime.load(&plugin(fixtures::VERSIONED_COUNT_V4)).unwrap(),
    );
    let (mut plain, mut migrating) = (Vec::new(), Vec::new());
    for round in 0..3 {
        for (to, times) in [(&p2, &mut plain), (&p4, &mut migrating)] {
            let db = tempfile::tempdir().unwrap();
            let backend = sluice_state::StateBackend::open(&db.path().join("db"), true).unwrap();
            let state = backend.operator("count", 256 << 20).unwrap();
            let metrics = Arc::new(sluice_types::metrics::Metrics::default());
            let mut instance = p1
                .instantiate(InstanceConfig::new("count"), Some(state), metrics)
                .unwrap();
            let keys: Vec<sluice_runtime::wit::Record> = (0..KEYS)
                .map(|k| sluice_runtime::wit::Record {
                    key: Some(format!("k{k}-{round}").into_bytes()),
                    value: b"x".to_vec(),
                    event_time: None,
                    headers: vec![],
                })
                .collect();
            for batch in keys.chunks(1024) {
                instance.process(batch).unwrap();
            }
            let t = Instant::now();
            let migrated = instance.swap(to.clone(), None).unwrap();
            times.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(
                migrated.is_some(),
                std::ptr::eq(to, &p4),
                "only v4 migrates"
            );
        }
    }

    // The running pipeline.
    let dir = tempfile::tempdir().unwrap();
    write_pipeline(
        dir.path(),
        r#"
manifest_version = 1
name = "swap"

[checkpoints]
interval = "500ms"

[[sources]]
name = "trips"
type = "generator"
seed = 3
rate = 20000
malformed_ratio = 0.0

[[operators]]
name = "keyed"
plugin = "{plugins}/fixture_json_keyed.wasm"
input = "trips"
params = { key_field = "pickup_zone", time_field = "pickup_ms" }

[[operators]]
name = "count"
plugin = "{plugins}/fixture_versioned_count_v1.wasm"
input = "keyed"
key_by = "key"
parallelism = 2

[[sinks]]
name = "out"
type = "stdout"
input = "count"
"#,
    );
    let mut child = Command::new(sluice_bin())
        .args(["run", "--quiet", "--state-dir", "state", "pipeline.toml"])
        .current_dir(dir.path())
        .env("SLUICE_COMPILE_CACHE", compile_cache())
        .env("SLUICE_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let stdout = child.stdout.take().unwrap();
    let a = arrivals.clone();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if line.is_err() {
                break;
            }
            a.lock().unwrap().push(Instant::now());
        }
    });
    let max_gap = |from: Instant, to: Instant| -> f64 {
        let a = arrivals.lock().unwrap();
        let inside: Vec<Instant> = a
            .iter()
            .copied()
            .filter(|t| *t >= from && *t <= to)
            .collect();
        inside
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64() * 1e3)
            .fold(0.0, f64::max)
    };
    std::thread::sleep(Duration::from_secs(3));
    let (mut normal, mut during) = (Vec::new(), Vec::new());
    for i in 0..swaps {
        let before = Instant::now();
        std::thread::sleep(Duration::from_secs(1));
        let sent = Instant::now();
        normal.push(max_gap(before, sent));
        let component = v[(i + 1) % 2].display().to_string();
        let out = sluice(
            &[
                "plugin",
                "deploy",
                "--state-dir",
                "state",
                "pipeline.toml",
                "count",
                &component,
            ],
            dir.path(),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
        during.push(max_gap(sent, Instant::now()));
        eprintln!(
            "swap {}: normal largest gap {:.1} ms, around the swap {:.1} ms",
            i + 1,
            normal[i],
            during[i]
        );
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let _ = reader.join();
    let log = String::from_utf8_lossy(&out.stderr);
    let at_barrier: Vec<f64> = log
        .lines()
        .filter_map(|l| {
            l.split(" in ")
                .nth(1)
                .filter(|_| l.contains("switched to plugin"))
        })
        .filter_map(|d| {
            let d = d.split_whitespace().next()?;
            d.strip_suffix("µs")
                .map(|n| n.parse::<f64>().ok())
                .or_else(|| {
                    d.strip_suffix("ms")
                        .map(|n| n.parse::<f64>().ok().map(|m| m * 1e3))
                })
                .flatten()
        })
        .collect();

    println!("hot swap of a Rust component (keyed counter, p = 2, 20,000 trips/s), {swaps} swaps ({} cores)", std::thread::available_parallelism().map_or(0, |p| p.get()));
    println!(
        "  compile, no cache (median of 3)          {:>9.1} ms",
        median(compile)
    );
    println!(
        "  instantiate + init (median of 600)       {:>9.1} µs",
        median(instantiate)
    );
    println!(
        "  switch at the barrier, per subtask       {:>9.1} µs (median of {})",
        median(at_barrier.clone()),
        at_barrier.len()
    );
    let (p, m) = (median(plain), median(migrating));
    println!("  swap without migration, {KEYS} keys      {:>9.1} ms", p);
    println!("  swap migrating {KEYS} keys (v1 -> v4)     {:>9.1} ms   {:.0} keys/ms; {:.1}x the plain swap", m, KEYS as f64 / m, m / p);
    let (n, d) = (median(normal.clone()), median(during.clone()));
    println!("  largest output gap, normal (median)      {:>9.1} ms", n);
    println!("  largest output gap, around a swap        {:>9.1} ms   ratio {:.2}x normal (worst {:.1} ms)", d, d / n, during.iter().copied().fold(0.0, f64::max));
}

//! What aligned barrier checkpoints cost: throughput with checkpoints off
//! and every second, and the duration and pause of checkpoints over 1M and
//! 10M keys of keyed state, all in one run, through the real `sluice` binary.
//!
//! ```text
//! scripts/build-plugins && cargo build --release -p sluice-cli
//! cargo bench -p sluice-benches --bench checkpoints
//! SLUICE_BENCH_PART=throughput SLUICE_BENCH_RECORDS=1000000 cargo bench -p sluice-benches --bench checkpoints
//! SLUICE_BENCH_PART=state SLUICE_BENCH_KEYS=1000000 SLUICE_BENCH_CACHE_MB=256 cargo bench -p sluice-benches --bench checkpoints
//! ```
//!
//! Every run is `sluice run --quiet` (the release binary next to this bench)
//! with a fresh `--state-dir`, as a child process; throughput is records in
//! over the run's own elapsed time (the `finished in` summary: from start to
//! the final checkpoint and flush, without process start and component
//! loading). Checkpoint figures come from the manifests
//! (`<state dir>/<pipeline>/checkpoints/chk-<id>/manifest.json`, line 1),
//! with `retain` high enough that every checkpoint of the run is kept.
//! Each run also reports the CPU time the rest of the machine used meanwhile
//! (`/proc/stat` busy time minus the child's): above a second or so, that
//! run was disturbed. The default run takes about 7 minutes on 2 cores.
//!
//! **1. Throughput cost** (`SLUICE_BENCH_PART=throughput`): two pipelines,
//! each run with `[checkpoints] enabled = false` and with `interval = "1s"`,
//! alternating, `SLUICE_BENCH_ROUNDS` (3) times each; the median is
//! reported. On a 2-core machine other work skews single runs.
//!
//! - `taxi`: `generator` (`SLUICE_BENCH_RECORDS` trips, default 3M, no
//!   malformed trips) → `taxi_parse` (parallelism 2) → `taxi_zone_count`
//!   (keyed by pickup zone, two value states, 265 keys, parallelism 2) →
//!   file sink (a line per trip). With checkpoints the file sink is
//!   exactly-once (`.inprogress` → `.pending-<id>` → appended on commit).
//! - `state-1M`: the state pipeline below with 1M keys and
//!   `SLUICE_BENCH_RECORDS` records: `emit = "each"` (a line per record).
//!
//! **2. Duration and pause by state size** (`SLUICE_BENCH_PART=state`): for
//! each N of `SLUICE_BENCH_KEYS` (default `1000000,10000000`):
//! `generator` (`SLUICE_BENCH_PASSES` × N trips; default 5, 2 from 5M keys) →
//! `bench_state_fill` `mode = "key"` (key = `trip_id % N`, parallelism 1) →
//! `bench_state_fill` `mode = "fill"` (`key_by = "key"`, parallelism 2: sets
//! a `u64` value state per record, so the first N records write every key
//! once) → file sink of wall-clock stamps (`emit = "stamp"`: a line per
//! subtask and millisecond). Checkpoints every 1 s (2 s from 5M keys);
//! `--state-cache-mb` is `SLUICE_BENCH_CACHE_MB` (default 2048, enough to
//! hold 10M keys: the cache then never flushes between barriers and every
//! key written in an interval is flushed at the barrier). Only checkpoints
//! whose barrier came after record N (the source position in the manifest
//! is ≥ N: every key has state) and that are not the final one are
//! measured. From the stamps: the longest gap between two records of a
//! keyed subtask that overlaps a measured checkpoint (trigger to manifest)
//! against the longest outside checkpoints, and a split of each
//! checkpoint's duration into trigger → the keyed subtasks stop (barrier in
//! flight behind queued batches), their pause, and the rest (sink
//! pre-commit, RocksDB checkpoint, hashing and linking new SSTs, manifest).
//! `SLUICE_BENCH_INTERVAL` (e.g. `1s`) sets one interval for every N;
//! `SLUICE_BENCH_VERBOSE=1` prints every manifest of these runs;
//! `SLUICE_BENCH_STATE_BASELINE=1` also runs each N with checkpoints off.
//!
//! **3. The synchronous steps alone** (`SLUICE_BENCH_PART=flush`): in this
//! process, one thread, no pipeline: the same N keys of value state over
//! two subtask caches (`sluice_state::OperatorState`, cache never evicting),
//! a barrier `flush` of both and a `StateBackend::snapshot` (RocksDB
//! checkpoint, hashing and linking new SSTs) every
//! `SLUICE_BENCH_FLUSH_INTERVAL_RECORDS` (300,000) records; the median
//! flush per subtask and snapshot over the second pass, and one flush of
//! only ~1,000 dirty keys per subtask in the full cache.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use serde::Deserialize;
use sluice_tests::{compile_cache, median, sluice_bin, write_pipeline};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SEED: u64 = 42;
/// Keep every checkpoint of a run, so that all manifests can be read.
const RETAIN: usize = 100_000;

mod common;
use common::child::run_child;

// ---------------------------------------------------------------------------
// Manifests: the fields this bench reads (line 1 of manifest.json).

#[derive(Deserialize, Debug, Clone)]
struct Manifest {
    id: u64,
    completed_ms: i64,
    duration_ms: u64,
    alignment_ms: u64,
    #[serde(default)]
    sync_ms: u64,
    finished: bool,
    sources: Vec<SourceEntry>,
    state: Option<StateEntry>,
}

#[derive(Deserialize, Debug, Clone)]
struct SourceEntry {
    position: Position,
}

#[derive(Deserialize, Debug, Clone)]
struct Position {
    emitted: u64,
}

#[derive(Deserialize, Debug, Clone)]
struct StateEntry {
    uploaded_bytes: u64,
    total_bytes: u64,
}

impl Manifest {
    fn pause_ms(&self) -> u64 {
        self.alignment_ms + self.sync_ms
    }
    fn started_ms(&self) -> i64 {
        self.completed_ms - self.duration_ms as i64
    }
    fn emitted(&self) -> u64 {
        self.sources.iter().map(|s| s.position.emitted).sum()
    }
}

/// Every complete checkpoint of `pipeline` under `state_dir`, by id.
fn manifests(state_dir: &Path, pipeline: &str) -> Vec<Manifest> {
    let root = state_dir.join(pipeline).join("checkpoints");
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(&root) else {
        return out;
    };
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with("chk-") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(e.path().join("manifest.json")) else {
            continue;
        };
        let line = text.lines().next().unwrap_or_default();
        out.push(
            serde_json::from_str::<Manifest>(line)
                .unwrap_or_else(|err| panic!("{}: bad manifest: {err}", e.path().display())),
        );
    }
    out.sort_by_key(|m| m.id);
    out
}

// ---------------------------------------------------------------------------
// Running a pipeline.

struct Run {
    /// The pipeline's own elapsed time (from its summary).
    elapsed: f64,
    wall: f64,
    cpu: f64,
    rss_mib: f64,
    records_in: u64,
    /// CPU time the rest of the machine used during the run, s (noise).
    others_cpu: f64,
    manifests: Vec<Manifest>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.records_in as f64 / self.elapsed
    }
}

/// `{:.2?}` of a `Duration`: `12.34s`, `850.12ms`, `3.00µs`.
fn parse_duration(s: &str) -> Option<f64> {
    for (suffix, scale) in [("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9), ("s", 1.0)] {
        if let Some(n) = s.strip_suffix(suffix) {
            return n.parse::<f64>().ok().map(|v| v * scale);
        }
    }
    None
}

/// `sluice run` the pipeline file `pipeline` (named `name`) in `dir`.
fn run_sluice(dir: &Path, pipeline: &Path, name: &str, cache_mb: u64, label: &str) -> Run {
    let state = dir.join("state");
    let mut cmd = Command::new(sluice_bin());
    cmd.arg("run")
        .arg("--quiet")
        .arg("--state-dir")
        .arg(&state)
        .arg("--state-cache-mb")
        .arg(cache_mb.to_string())
        .arg(pipeline);
    cmd.env("SLUICE_COMPILE_CACHE", compile_cache())
        .env("SLUICE_LOG", "warn")
        .current_dir(dir);
    let (busy0, _) = machine_cpu();
    let child = run_child(cmd, dir, label);
    let (busy1, _) = machine_cpu();
    let summary = child
        .stderr
        .lines()
        .find(|l| l.contains("finished in"))
        .unwrap_or_else(|| panic!("no summary from sluice:\n{}", child.stderr));
    // pipeline `x` finished in 12.34s: 3000000 records in, 3000000 written, 0 dead letters
    let after = summary
        .split(" finished in ")
        .nth(1)
        .expect("summary format");
    let (time, rest) = after.split_once(": ").expect("summary format");
    let elapsed = parse_duration(time)
        .unwrap_or_else(|| panic!("cannot read the elapsed time in {summary:?}"));
    let records_in: u64 = rest
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no record count in {summary:?}"));
    assert!(
        summary.ends_with(" 0 dead letters"),
        "dead letters: {summary}"
    );
    Run {
        elapsed,
        wall: child.wall.as_secs_f64(),
        cpu: child.cpu.as_secs_f64(),
        rss_mib: child.max_rss_kib as f64 / 1024.0,
        records_in,
        others_cpu: (busy1 - busy0 - child.cpu.as_secs_f64()).max(0.0),
        manifests: manifests(&state, name),
    }
}

fn checkpoints_toml(interval: Option<&str>) -> String {
    match interval {
        None => "[checkpoints]\nenabled = false\n".to_string(),
        Some(i) => {
            format!("[checkpoints]\nenabled = true\ninterval = \"{i}\"\nretain = {RETAIN}\n")
        }
    }
}

fn taxi_pipeline(records: u64, interval: Option<&str>) -> String {
    format!(
        r#"
manifest_version = 1
name = "bench-chk-taxi"

[[sources]]
name = "trips"
type = "generator"
seed = {SEED}
count = {records}
malformed_ratio = 0.0

[[operators]]
name = "parse"
plugin = "{{plugins}}/taxi_parse.wasm"
input = "trips"
parallelism = 2

[[operators]]
name = "zone-stats"
plugin = "{{plugins}}/taxi_zone_count.wasm"
input = "parse"
key_by = "key"
parallelism = 2

[[sinks]]
name = "totals"
type = "file"
input = "zone-stats"
path = "totals.jsonl"

{}"#,
        checkpoints_toml(interval)
    )
}

/// generator → key by `trip_id % keys` → fill (keyed, p=2) → file sink.
fn state_pipeline(records: u64, keys: u64, emit: &str, interval: Option<&str>) -> String {
    format!(
        r#"
manifest_version = 1
name = "bench-chk-state"

[[sources]]
name = "trips"
type = "generator"
seed = {SEED}
count = {records}
malformed_ratio = 0.0
implausible_ratio = 0.0

[[operators]]
name = "key"
plugin = "{{plugins}}/bench_state_fill.wasm"
input = "trips"
parallelism = 1
params = {{ mode = "key", keys = {keys} }}

[[operators]]
name = "fill"
plugin = "{{plugins}}/bench_state_fill.wasm"
input = "key"
key_by = "key"
parallelism = 2
params = {{ mode = "fill", emit = "{emit}" }}
grants = {{ clock = true }}

[[sinks]]
name = "out"
type = "file"
input = "fill"
path = "out.jsonl"

{}"#,
        checkpoints_toml(interval)
    )
}

// ---------------------------------------------------------------------------
// Statistics.

fn median_u(mut v: Vec<u64>) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[v.len() / 2]
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// `/proc/loadavg`'s first three fields: was the machine busy?
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// With `SLUICE_BENCH_VERBOSE`, every manifest of a run on stderr.
fn dump(run: &Run, keys: u64) {
    if std::env::var_os("SLUICE_BENCH_VERBOSE").is_none() {
        return;
    }
    for m in &run.manifests {
        let (up, total) = m
            .state
            .as_ref()
            .map_or((0, 0), |s| (s.uploaded_bytes, s.total_bytes));
        eprintln!(
            "  chk {:>3}: emitted {:>9} duration {:>5} ms alignment {:>4} ms sync {:>4} ms uploaded {:>7.1} MiB of {:>7.1} MiB{}",
            m.id,
            m.emitted(),
            m.duration_ms,
            m.alignment_ms,
            m.sync_ms,
            mib(up),
            mib(total),
            if m.finished { " (final)" } else if m.emitted() < keys { " (filling)" } else { "" }
        );
    }
}

/// Busy and total CPU time of the whole machine so far, s (`/proc/stat`).
fn machine_cpu() -> (f64, f64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<f64> = text
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 5 {
        return (0.0, 0.0);
    }
    let total: f64 = v.iter().take(8).sum();
    let idle = v[3] + v[4];
    // USER_HZ is 100 on Linux.
    ((total - idle) / 100.0, total / 100.0)
}

/// CPU time of this process so far, s.
fn own_cpu() -> f64 {
    // SAFETY: rusage is plain data (all-zero is valid); getrusage only writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

// ---------------------------------------------------------------------------
// Part 1: throughput with checkpoints off and every second.

struct Pair {
    name: String,
    off: Vec<Run>,
    on: Vec<Run>,
}

fn throughput(tmp: &Path, records: u64, rounds: usize, cache_mb: u64) -> Vec<Pair> {
    type Make = Box<dyn Fn(Option<&str>) -> (String, &'static str)>;
    let pipelines: Vec<(&str, Make)> = vec![
        (
            "taxi (265 keys)",
            Box::new(move |i| (taxi_pipeline(records, i), "bench-chk-taxi")),
        ),
        (
            "state fill (1M keys)",
            Box::new(move |i| {
                (
                    state_pipeline(records, 1_000_000, "each", i),
                    "bench-chk-state",
                )
            }),
        ),
    ];
    let mut pairs: Vec<Pair> = pipelines
        .iter()
        .map(|(n, _)| Pair {
            name: n.to_string(),
            off: vec![],
            on: vec![],
        })
        .collect();
    let mut n = 0;
    for round in 1..=rounds {
        for (p, (name, make)) in pipelines.iter().enumerate() {
            // Alternate which goes first, so that drift hits both alike.
            let order: [Option<&str>; 2] = if round % 2 == 1 {
                [None, Some("1s")]
            } else {
                [Some("1s"), None]
            };
            for interval in order {
                n += 1;
                let dir = tmp.join(format!("tp-{n}"));
                std::fs::create_dir_all(&dir).unwrap();
                let (text, pname) = make(interval);
                let file = write_pipeline(&dir, &text);
                let run = run_sluice(&dir, &file, pname, cache_mb, "sluice");
                assert_eq!(run.records_in, records, "{name}: records in");
                let chk = run.manifests.iter().filter(|m| !m.finished).count();
                eprintln!(
                    "round {round}: {name:<22} checkpoints {:<5} {:>10.0} records/s  ({:.2} s, {chk} checkpoints, CPU {:.1} s, other processes' CPU {:.1} s, peak RSS {:.0} MiB)",
                    if interval.is_some() { "1s" } else { "off" },
                    run.rate(),
                    run.elapsed,
                    run.cpu,
                    run.others_cpu,
                    run.rss_mib
                );
                dump(&run, 0);
                if interval.is_some() {
                    pairs[p].on.push(run);
                } else {
                    pairs[p].off.push(run);
                }
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }
    pairs
}

// ---------------------------------------------------------------------------
// Part 2: checkpoints over N keys of state.

/// A wall-clock stamp of a keyed subtask.
#[derive(Deserialize)]
struct Stamp {
    s: u32,
    t: i64,
}

struct StateResult {
    keys: u64,
    interval: &'static str,
    run: Run,
    /// The same run with checkpoints off (`SLUICE_BENCH_STATE_BASELINE=1`), records/s.
    baseline: Option<f64>,
    /// Checkpoints (not the final one), and those measured (all keys written).
    all: usize,
    measured: Vec<Manifest>,
    /// Longest gap between two stamps of a subtask overlapping a measured
    /// checkpoint, the median over checkpoints of that, and the longest
    /// outside checkpoints (over the measured period).
    gap_during_max: i64,
    gap_during_median: i64,
    gap_outside_max: i64,
    /// Medians over measured checkpoints: trigger → keyed subtasks stop,
    /// their longest stop, last resume → manifest.
    split: Option<(i64, i64, i64)>,
}

fn state_run(
    tmp: &Path,
    keys: u64,
    passes: Option<f64>,
    cache_mb: u64,
    interval: Option<&'static str>,
) -> StateResult {
    // Enough records after the first pass for several checkpoints, in about two minutes at most.
    let passes = passes.unwrap_or(if keys >= 5_000_000 { 2.0 } else { 5.0 });
    let records = (keys as f64 * passes).round() as u64;
    let interval = interval.unwrap_or(if keys >= 5_000_000 { "2s" } else { "1s" });
    let dir = tmp.join(format!("state-{keys}"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = write_pipeline(
        &dir,
        &state_pipeline(records, keys, "stamp", Some(interval)),
    );
    let run = run_sluice(&dir, &file, "bench-chk-state", cache_mb, "sluice");
    assert_eq!(run.records_in, records);
    let all = run.manifests.iter().filter(|m| !m.finished).count();
    let measured: Vec<Manifest> = run
        .manifests
        .iter()
        .filter(|m| !m.finished && m.emitted() >= keys)
        .cloned()
        .collect();
    dump(&run, keys);
    // Stamps per subtask, in time order.
    let text = std::fs::read_to_string(dir.join("out.jsonl")).expect("the stamps");
    let mut per: Vec<Vec<i64>> = Vec::new();
    for line in text.lines() {
        let s: Stamp =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("bad stamp {line:?}: {e}"));
        if per.len() <= s.s as usize {
            per.resize_with(s.s as usize + 1, Vec::new);
        }
        per[s.s as usize].push(s.t);
    }
    for v in &mut per {
        v.sort_unstable();
    }
    let windows: Vec<(i64, i64)> = measured
        .iter()
        .map(|m| (m.started_ms(), m.completed_ms))
        .collect();
    let (mut during_max, mut outside_max) = (0i64, 0i64);
    let mut per_checkpoint_gap = vec![0i64; windows.len()];
    // Per checkpoint: earliest stop and latest resume of the longest gap of each subtask in it.
    let mut stops: Vec<Option<(i64, i64)>> = vec![None; windows.len()];
    if let (Some(first), Some(last)) = (windows.first(), windows.last()) {
        for v in &per {
            let mut longest_in: Vec<(i64, i64, i64)> = vec![(0, 0, 0); windows.len()];
            for w in v.windows(2) {
                let (a, b) = (w[0], w[1]);
                if b < first.0 || a > last.1 {
                    continue;
                }
                let gap = b - a;
                let mut inside = false;
                for (i, (s, e)) in windows.iter().enumerate() {
                    if a <= *e && b >= *s {
                        inside = true;
                        if gap > longest_in[i].0 {
                            longest_in[i] = (gap, a, b);
                        }
                    }
                }
                if inside {
                    during_max = during_max.max(gap);
                } else {
                    outside_max = outside_max.max(gap);
                }
            }
            for (i, (gap, a, b)) in longest_in.into_iter().enumerate() {
                per_checkpoint_gap[i] = per_checkpoint_gap[i].max(gap);
                if gap > 0 {
                    stops[i] = Some(match stops[i] {
                        None => (a, b),
                        Some((sa, sb)) => (sa.max(a), sb.max(b)),
                    });
                }
            }
        }
    }
    let gap_during_median = median_u(per_checkpoint_gap.iter().map(|g| *g as u64).collect()) as i64;
    let mut to_stop = vec![];
    let mut paused = vec![];
    let mut rest = vec![];
    for (i, m) in measured.iter().enumerate() {
        if let Some((a, b)) = stops[i] {
            to_stop.push((a - m.started_ms()).max(0) as u64);
            paused.push(per_checkpoint_gap[i] as u64);
            rest.push((m.completed_ms - b).max(0) as u64);
        }
    }
    let split = (!to_stop.is_empty()).then(|| {
        (
            median_u(to_stop) as i64,
            median_u(paused) as i64,
            median_u(rest) as i64,
        )
    });
    let baseline = std::env::var_os("SLUICE_BENCH_STATE_BASELINE")
        .is_some()
        .then(|| {
            let dir = tmp.join(format!("state-{keys}-off"));
            std::fs::create_dir_all(&dir).unwrap();
            let file = write_pipeline(&dir, &state_pipeline(records, keys, "stamp", None));
            let off = run_sluice(&dir, &file, "bench-chk-state", cache_mb, "sluice-off");
            eprintln!(
                "state {keys} keys, checkpoints off: {:.0} records/s, other processes' CPU {:.1} s",
                off.rate(),
                off.others_cpu
            );
            let _ = std::fs::remove_dir_all(&dir);
            off.rate()
        });
    let result = StateResult {
        keys,
        interval,
        run,
        baseline,
        all,
        measured,
        gap_during_max: during_max,
        gap_during_median,
        gap_outside_max: outside_max,
        split,
    };
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn print_state(results: &[StateResult], cache_mb: u64) {
    println!();
    println!(
        "checkpoint duration and pause by keyed state size: generator → key (trip_id % N) → fill (value state per key, p=2) → file sink; --state-cache-mb {cache_mb}; measured = after every key is written, final checkpoint excluded"
    );
    println!(
        "  {:>10} {:>9} {:>5} {:>9} {:>10} {:>11} {:>14} {:>14} {:>16} {:>10} {:>8}",
        "keys",
        "records",
        "every",
        "records/s",
        "chk (meas)",
        "duration ms",
        "pause ms",
        "align+sync ms",
        "uploaded/total",
        "peak RSS",
        "others'"
    );
    println!(
        "  {:>10} {:>9} {:>5} {:>9} {:>10} {:>11} {:>14} {:>14} {:>16} {:>10} {:>8}",
        "",
        "",
        "",
        "",
        "",
        "median/max",
        "median/max",
        "(at max pause)",
        "median MiB",
        "MiB",
        "CPU s"
    );
    for r in results {
        let m = &r.measured;
        let dur: Vec<u64> = m.iter().map(|m| m.duration_ms).collect();
        let pause: Vec<u64> = m.iter().map(Manifest::pause_ms).collect();
        let worst = m.iter().max_by_key(|m| m.pause_ms());
        let up: Vec<u64> = m
            .iter()
            .filter_map(|m| m.state.as_ref().map(|s| s.uploaded_bytes))
            .collect();
        let total: Vec<u64> = m
            .iter()
            .filter_map(|m| m.state.as_ref().map(|s| s.total_bytes))
            .collect();
        println!(
            "  {:>10} {:>9} {:>5} {:>9.0} {:>10} {:>11} {:>14} {:>14} {:>16} {:>10.0} {:>8.1}",
            r.keys,
            r.run.records_in,
            r.interval,
            r.run.rate(),
            format!("{} ({})", r.all, m.len()),
            format!(
                "{}/{}",
                median_u(dur.clone()),
                dur.iter().max().copied().unwrap_or(0)
            ),
            format!(
                "{}/{}",
                median_u(pause.clone()),
                pause.iter().max().copied().unwrap_or(0)
            ),
            worst.map_or("-".into(), |w| format!("{}+{}", w.alignment_ms, w.sync_ms)),
            format!("{:.1}/{:.1}", mib(median_u(up)), mib(median_u(total))),
            r.run.rss_mib,
            r.run.others_cpu,
        );
    }
    println!("  from the keyed subtasks' wall-clock stamps (ms; a gap is the time between two records of one subtask):");
    println!(
        "  {:>10} {:>22} {:>22} {:>40}",
        "keys",
        "max gap in checkpoint",
        "max gap outside",
        "duration split, medians: to stop/stopped/rest"
    );
    for r in results {
        println!(
            "  {:>10} {:>22} {:>22} {:>40}",
            r.keys,
            format!("{} (median {})", r.gap_during_max, r.gap_during_median),
            r.gap_outside_max,
            r.split
                .map_or("-".into(), |(a, b, c)| format!("{a} / {b} / {c}")),
        );
    }
    for r in results {
        if let Some(off) = r.baseline {
            println!("  {} keys: {:.0} records/s with checkpoints every {} vs {off:.0} with checkpoints off: {:.3}x", r.keys, r.run.rate(), r.interval, r.run.rate() / off);
        }
    }
    for r in results {
        // Records between the previous barrier and this one: each is a distinct
        // key (while fewer than N), about half of them in each keyed subtask.
        let mut per_key = vec![];
        let mut dirty = vec![];
        for m in &r.measured {
            let Some(prev) = r.run.manifests.iter().find(|p| p.id + 1 == m.id) else {
                continue;
            };
            let d = (m.emitted() - prev.emitted()).min(r.keys) / 2;
            dirty.push(d);
            per_key.push((m.sync_ms * 1000) as f64 / d.max(1) as f64);
        }
        let sync: Vec<u64> = r.measured.iter().map(|m| m.sync_ms).collect();
        if per_key.is_empty() {
            println!(
                "  {} keys: no checkpoint after every key was written: raise SLUICE_BENCH_PASSES",
                r.keys
            );
            continue;
        }
        println!(
            "  {} keys: barrier sync flush median {} ms (max {}) for a median {:.0}k dirty keys per subtask: {:.2} µs per dirty key (median; assumes the cache holds every key, so nothing is flushed between barriers)",
            r.keys,
            median_u(sync.clone()),
            sync.iter().max().copied().unwrap_or(0),
            median_u(dirty) as f64 / 1000.0,
            median(per_key)
        );
    }
}

// ---------------------------------------------------------------------------
// Part 3: the two synchronous steps in isolation, in this process (one thread,
// no pipeline around them): `OperatorState::flush` at a barrier, and the
// coordinator's `StateBackend::snapshot`.

/// LEB128, as postcard encodes a `u64`.
fn varint(mut v: u64, out: &mut Vec<u8>) {
    out.clear();
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

struct FlushRow {
    keys: u64,
    dirty_per_subtask: u64,
    cached_per_subtask: u64,
    flush_ms: f64,
    snapshot_ms: f64,
    uploaded: u64,
    total: u64,
}

/// Fill `keys` keys over two subtasks' caches as the pipeline does (value
/// state per key, key `i % keys`), with a flush and a snapshot every
/// `per_interval` records; after the first pass, time each flush and
/// snapshot. Returns the medians over the timed intervals, plus a flush of
/// only 1,000 dirty keys per subtask (what scanning the cache costs).
fn flush_micro(tmp: &Path, keys: u64, per_interval: u64) -> Vec<FlushRow> {
    use sluice_state::keygroup::{key_group, subtask_of, MAX_PARALLELISM};
    use sluice_state::{StateBackend, StateKind};
    let dir = tmp.join(format!("flush-{keys}"));
    let _ = std::fs::remove_dir_all(&dir);
    let backend = StateBackend::open(&dir.join("db"), true).unwrap();
    let mut subtasks: Vec<_> = (0..2)
        .map(|_| backend.operator("fill", usize::MAX / 4).unwrap())
        .collect();
    let ids: Vec<_> = subtasks
        .iter_mut()
        .map(|s| s.declare("last", StateKind::Value).unwrap())
        .collect();
    let mut previous = Vec::new();
    let mut n_snap = 0;
    let mut snapshot = |backend: &StateBackend| {
        n_snap += 1;
        let work = dir.join(format!(".work-{n_snap}"));
        let started = Instant::now();
        let info = backend
            .snapshot(
                &work,
                &dir.join(format!("chk-{n_snap}")),
                &dir.join("shared"),
                &previous,
            )
            .unwrap();
        let ms = started.elapsed().as_secs_f64() * 1e3;
        previous = info.files.clone();
        (ms, info.uploaded_bytes, info.total_bytes)
    };
    let (mut key, mut value) = (String::new(), Vec::new());
    let mut write = |subtasks: &mut Vec<sluice_state::OperatorState>, i: u64| {
        use std::fmt::Write;
        key.clear();
        write!(key, "{}", i % keys).unwrap();
        let kg = key_group(key.as_bytes(), MAX_PARALLELISM);
        let s = subtask_of(kg, MAX_PARALLELISM, 2) as usize;
        varint(i, &mut value);
        subtasks[s].put(kg, ids[s], key.as_bytes(), &value);
    };
    // (flush ms per subtask, snapshot ms, uploaded, total, dirty per subtask)
    type Sample = (f64, f64, u64, u64, u64);
    let mut rows: Vec<Sample> = Vec::new();
    let mut i = 0u64;
    let end = 2 * keys;
    while i < end {
        let stop = (i + per_interval).min(end);
        while i < stop {
            write(&mut subtasks, i);
            i += 1;
        }
        let dirty = subtasks
            .iter()
            .map(|s| s.dirty_entries() as u64)
            .max()
            .unwrap_or(0);
        let started = Instant::now();
        for s in &mut subtasks {
            s.flush().unwrap();
        }
        // Per subtask: the two flush one after the other here.
        let flush_ms = started.elapsed().as_secs_f64() * 1e3 / 2.0;
        let (snap_ms, up, total) = snapshot(&backend);
        if i > keys {
            rows.push((flush_ms, snap_ms, up, total, dirty));
        }
    }
    let med = |f: &dyn Fn(&Sample) -> f64| median(rows.iter().map(f).collect());
    let cached = (keys / 2).max(1);
    let mut out = vec![FlushRow {
        keys,
        dirty_per_subtask: med(&|r| r.4 as f64) as u64,
        cached_per_subtask: cached,
        flush_ms: med(&|r| r.0),
        snapshot_ms: med(&|r| r.1),
        uploaded: med(&|r| r.2 as f64) as u64,
        total: med(&|r| r.3 as f64) as u64,
    }];
    // Few dirty keys in a full cache: the flush still walks every cached entry.
    let few = 2_000;
    for j in 0..few {
        write(&mut subtasks, i + j * 7919 % keys);
    }
    let dirty = subtasks
        .iter()
        .map(|s| s.dirty_entries() as u64)
        .max()
        .unwrap_or(0);
    let started = Instant::now();
    for s in &mut subtasks {
        s.flush().unwrap();
    }
    let flush_ms = started.elapsed().as_secs_f64() * 1e3 / 2.0;
    let (snap_ms, up, total) = snapshot(&backend);
    out.push(FlushRow {
        keys,
        dirty_per_subtask: dirty,
        cached_per_subtask: cached,
        flush_ms,
        snapshot_ms: snap_ms,
        uploaded: up,
        total,
    });
    drop(subtasks);
    drop(backend);
    let _ = std::fs::remove_dir_all(&dir);
    out
}

fn print_flush(rows: &[FlushRow], per_interval: u64) {
    println!();
    println!(
        "the synchronous steps alone (in-process, one thread, no pipeline): value state per key over 2 subtask caches, 2 passes, a barrier flush + snapshot every {per_interval} records; medians over the second pass"
    );
    println!(
        "  {:>10} {:>14} {:>14} {:>16} {:>13} {:>16} {:>18}",
        "keys",
        "dirty/subtask",
        "cached/subtask",
        "flush ms/subtask",
        "µs/dirty key",
        "snapshot ms",
        "uploaded/total MiB"
    );
    for r in rows {
        println!(
            "  {:>10} {:>14} {:>14} {:>16.1} {:>13.2} {:>16.1} {:>18}",
            r.keys,
            r.dirty_per_subtask,
            r.cached_per_subtask,
            r.flush_ms,
            r.flush_ms * 1e3 / r.dirty_per_subtask.max(1) as f64,
            r.snapshot_ms,
            format!("{:.1}/{:.1}", mib(r.uploaded), mib(r.total))
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let part = std::env::var("SLUICE_BENCH_PART").unwrap_or_default();
    let records: u64 = env_or("SLUICE_BENCH_RECORDS", 3_000_000);
    let rounds: usize = env_or("SLUICE_BENCH_ROUNDS", 3usize).max(1);
    let passes: Option<f64> = std::env::var("SLUICE_BENCH_PASSES")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .map(|p| p.max(1.0));
    let cache_mb: u64 = env_or("SLUICE_BENCH_CACHE_MB", 2048);
    let keys: Vec<u64> = std::env::var("SLUICE_BENCH_KEYS")
        .unwrap_or_else(|_| "1000000,10000000".into())
        .split(',')
        .filter_map(|k| k.trim().replace('_', "").parse().ok())
        .collect();
    // A fixed interval for every N (default: 1 s, 2 s from 5M keys).
    let state_interval: Option<&'static str> = std::env::var("SLUICE_BENCH_INTERVAL")
        .ok()
        .map(|s| &*s.leak());
    let tmp = tempfile::tempdir().unwrap();
    let load_before = loadavg();
    let cores = std::thread::available_parallelism().map_or(0, |p| p.get());

    // Warm up: compile the components into the cache, fault in the binary.
    {
        let dir = tmp.path().join("warm");
        std::fs::create_dir_all(&dir).unwrap();
        let file = write_pipeline(&dir, &taxi_pipeline(50_000, Some("1s")));
        run_sluice(&dir, &file, "bench-chk-taxi", cache_mb, "warm-taxi");
        let file = write_pipeline(&dir, &state_pipeline(50_000, 1000, "stamp", Some("1s")));
        run_sluice(&dir, &file, "bench-chk-state", cache_mb, "warm-state");
        let _ = std::fs::remove_dir_all(&dir);
    }

    let pairs = if part.is_empty() || part == "throughput" {
        throughput(tmp.path(), records, rounds, cache_mb)
    } else {
        vec![]
    };
    let mut states = vec![];
    if part.is_empty() || part == "state" {
        for &n in &keys {
            let started = Instant::now();
            let r = state_run(tmp.path(), n, passes, cache_mb, state_interval);
            eprintln!(
                "state {n} keys: {} records in {:.1} s ({:.0}/s), {} checkpoints ({} measured), CPU {:.1} s, other processes' CPU {:.1} s, peak RSS {:.0} MiB; bench step {:.0} s",
                r.run.records_in,
                r.run.elapsed,
                r.run.rate(),
                r.all,
                r.measured.len(),
                r.run.cpu,
                r.run.others_cpu,
                r.run.rss_mib,
                started.elapsed().as_secs_f64()
            );
            states.push(r);
        }
    }

    let mut flush_rows = vec![];
    let per_interval: u64 = env_or("SLUICE_BENCH_FLUSH_INTERVAL_RECORDS", 300_000);
    let mut flush_others = 0.0;
    if part.is_empty() || part == "flush" {
        let (busy0, _) = machine_cpu();
        let own0 = own_cpu();
        for &n in &keys {
            flush_rows.extend(flush_micro(tmp.path(), n, per_interval));
        }
        flush_others = (machine_cpu().0 - busy0 - (own_cpu() - own0)).max(0.0);
    }

    println!(
        "load average (1, 5, 15 min) before: {load_before}, after: {}",
        loadavg()
    );
    if !pairs.is_empty() {
        println!(
            "checkpoint throughput cost: {records} records, checkpoints off vs every 1 s, median of {rounds} alternating rounds, --state-cache-mb {cache_mb} ({cores} cores)"
        );
        println!(
            "  {:<22} {:>14} {:>14} {:>9} {:>11} {:>15} {:>13} {:>19}",
            "pipeline",
            "off records/s",
            "1s records/s",
            "on/off",
            "cost",
            "checkpoints",
            "RSS off/on",
            "others' CPU s max"
        );
        for p in &pairs {
            let off = median(p.off.iter().map(Run::rate).collect());
            let on = median(p.on.iter().map(Run::rate).collect());
            let chk = median_u(
                p.on.iter()
                    .map(|r| r.manifests.iter().filter(|m| !m.finished).count() as u64)
                    .collect(),
            );
            let rss_off = median(p.off.iter().map(|r| r.rss_mib).collect());
            let rss_on = median(p.on.iter().map(|r| r.rss_mib).collect());
            let others = p
                .off
                .iter()
                .chain(p.on.iter())
                .map(|r| r.others_cpu)
                .fold(0.0, f64::max);
            println!(
                "  {:<22} {off:>14.0} {on:>14.0} {:>8.3}x {:>10.1}% {chk:>15} {:>13} {others:>19.1}",
                p.name,
                on / off,
                (1.0 - on / off) * 100.0,
                format!("{rss_off:.0}/{rss_on:.0}")
            );
        }
        for p in &pairs {
            let all: Vec<&Manifest> =
                p.on.iter()
                    .flat_map(|r| r.manifests.iter().filter(|m| !m.finished))
                    .collect();
            let dur: Vec<u64> = all.iter().map(|m| m.duration_ms).collect();
            let pause: Vec<u64> = all.iter().map(|m| m.pause_ms()).collect();
            println!(
                "  {}: {} checkpoints over {} runs: duration median {} ms (max {}), pause (alignment + sync) median {} ms (max {}); wall {:.1} s vs {:.1} s per run",
                p.name,
                all.len(),
                p.on.len(),
                median_u(dur.clone()),
                dur.iter().max().copied().unwrap_or(0),
                median_u(pause.clone()),
                pause.iter().max().copied().unwrap_or(0),
                median(p.off.iter().map(|r| r.wall).collect()),
                median(p.on.iter().map(|r| r.wall).collect()),
            );
        }
    }
    if !states.is_empty() {
        print_state(&states, cache_mb);
    }
    if !flush_rows.is_empty() {
        print_flush(&flush_rows, per_interval);
        println!("  (other processes' CPU during this part: {flush_others:.1} s)");
    }
}

//! Event time: a keyed 1-minute tumbling count over 100,000 keys, native
//! Rust against Sluice (the host's window operator with a Wasm aggregate and
//! its accumulators in RocksDB), on the same `turbines` input, in one run.
//!
//! ```text
//! scripts/build-plugins && cargo build --release -p sluice-cli
//! cargo bench -p sluice-benches --bench windows                  # 3M records
//! SLUICE_BENCH_RECORDS=500000 SLUICE_BENCH_ROUNDS=3 cargo bench -p sluice-benches --bench windows
//! ```
//!
//! Input: the `turbines` generator with 100,000 turbines (keys `T000` to
//! `T99999`), a reading per turbine every 10 s (6 per key and window), 2 s
//! of jitter and no late readings, one split. 3M records are 30 ticks, 5
//! minutes of event time: 5 windows per key, 500,000 results.
//!
//! - **sluice**: `turbines` (watermarks: out-of-orderness 2 s) → window
//!   operator (`key_by = "key"`, tumbling 1 m, event time) with
//!   `plugins/bench/window-count` (counts, never reads the value) → file
//!   sink, run as `sluice run --quiet` (the release binary next to this
//!   bench) with a fresh `--state-dir`.
//! - **native**: this binary re-run as a child (`__native`): the same
//!   generator (`datagen::records`), batches of 1,024 records as the source
//!   polls them, the same bounded-out-of-orderness watermark after each
//!   batch (largest event time − 2 s − 1 ms), counts per window and key in a
//!   hashbrown map per open window, and windows whose `end - 1` is at or
//!   below the watermark written (same format) and dropped; single thread.
//!
//! A third child only generates the input, to show the floor under both
//! sides (the generator orders 100,000 pending readings in a binary heap,
//! which is not free). Sluice generates on its source thread, concurrently
//! with the window operator; the native side does everything on one thread.
//! The pipeline uses Sluice's defaults otherwise (state cache, checkpoints).
//!
//! Both sides are child processes, so the wall time includes process start
//! (and, for Sluice, loading the precompiled component from the compile
//! cache, which a warm-up run fills), and the peak RSS is each child's own:
//! `ru_maxrss` from `wait4(2)` (on Linux never below the parent's peak when
//! it spawned the child, so this process stays small and leaves comparing
//! the results to a child as well). CPU time is user + system of the child (the
//! native side is one thread; Sluice runs tokio workers, a blocking source
//! thread and RocksDB's background threads). The two result files must hold
//! the same multiset of `(key, start, end, count)`, or the bench fails.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde::Deserialize;
use sluice_connectors::datagen::{self, TurbineConfig};
use sluice_tests::{compile_cache, median, sluice_bin, write_pipeline};

// The same allocator as the `sluice` binary, for both sides of the comparison.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KEYS: u32 = 100_000;
const INTERVAL_MS: i64 = 10_000;
const OUT_OF_ORDER_MS: i64 = 2_000;
const WINDOW_MS: i64 = 60_000;
/// Records per source poll: Sluice's default `--batch-size`, after which its
/// source emits a watermark.
const BATCH: usize = 1024;
const SEED: u64 = 42;

fn turbines(records: u64) -> TurbineConfig {
    TurbineConfig {
        seed: SEED,
        turbines: KEYS,
        records,
        interval_ms: INTERVAL_MS,
        out_of_order_ms: OUT_OF_ORDER_MS,
        late_ratio: 0.0,
        splits: 1,
        ..TurbineConfig::default()
    }
}

// ---------------------------------------------------------------------------
// The native side (runs in a child process: `<this binary> __native <records> <out>`).

/// Append `{"key":..,"start":..,"end":..,"count":..}` and a newline, as the plugin does.
fn write_result(
    out: &mut impl Write,
    key: &[u8],
    start: i64,
    end: i64,
    count: u64,
) -> std::io::Result<()> {
    out.write_all(b"{\"key\":\"")?;
    match std::str::from_utf8(key) {
        Ok(k) if k.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') => {
            out.write_all(k.as_bytes())?
        }
        _ => {
            for c in String::from_utf8_lossy(key).chars() {
                match c {
                    '"' => out.write_all(b"\\\"")?,
                    '\\' => out.write_all(b"\\\\")?,
                    c if (c as u32) < 0x20 => write!(out, "\\u{:04x}", c as u32)?,
                    c => write!(out, "{c}")?,
                }
            }
        }
    }
    writeln!(
        out,
        "\",\"start\":{start},\"end\":{end},\"count\":{count}}}"
    )
}

/// Open windows by end: per window, count per key.
type Open = BTreeMap<i64, hashbrown::HashMap<Vec<u8>, u64>>;

/// Emit and drop every window whose last millisecond is at or below `wm`.
fn fire(open: &mut Open, wm: i64, out: &mut impl Write) -> std::io::Result<()> {
    while let Some(entry) = open.first_entry() {
        let end = *entry.key();
        if end - 1 > wm {
            break;
        }
        for (key, count) in entry.remove() {
            write_result(out, &key, end - WINDOW_MS, end, count)?;
        }
    }
    Ok(())
}

fn native(records: u64, out_path: &Path) -> std::io::Result<()> {
    let started = Instant::now();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(out_path)?);
    let mut input = datagen::records(&turbines(records), 0);
    let mut open = Open::new();
    let (mut max_ts, mut wm, mut late) = (i64::MIN, i64::MIN, 0u64);
    loop {
        let mut n = 0;
        for r in input.by_ref().take(BATCH) {
            n += 1;
            let ts = r.event_time.expect("turbine readings have event times");
            max_ts = max_ts.max(ts);
            let end = ts - ts.rem_euclid(WINDOW_MS) + WINDOW_MS;
            if end - 1 <= wm {
                late += 1;
                continue;
            }
            let key = r.key.expect("turbine readings have keys");
            let counts = open.entry(end).or_default();
            match counts.get_mut(key.as_slice()) {
                Some(c) => *c += 1,
                None => {
                    counts.insert(key, 1);
                }
            }
        }
        if n == 0 {
            break;
        }
        // The source's watermark after a batch; the operator fires on it.
        let next = max_ts.saturating_sub(OUT_OF_ORDER_MS).saturating_sub(1);
        if next > wm {
            wm = next;
            fire(&mut open, wm, &mut out)?;
        }
    }
    // End of input: a watermark of +infinity.
    fire(&mut open, i64::MAX, &mut out)?;
    out.flush()?;
    println!("{} {late}", started.elapsed().as_secs_f64());
    Ok(())
}

/// Only generate the input (the floor under both sides), in a child too.
fn generate_only(records: u64) {
    let started = Instant::now();
    let sum = datagen::records(&turbines(records), 0).fold(0i64, |acc, r| {
        acc.wrapping_add(r.event_time.unwrap_or(0)) ^ r.key.map_or(0, |k| k.len() as i64)
    });
    std::hint::black_box(sum);
    println!("{} 0", started.elapsed().as_secs_f64());
}

mod common;
use common::child::{run_child, self_max_rss_kib, Child};

fn run_native(records: u64, dir: &Path) -> (Child, PathBuf) {
    let out = dir.join("native-windows.jsonl");
    let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
    cmd.arg("__native").arg(records.to_string()).arg(&out);
    let child = run_child(cmd, dir, "native");
    let late: u64 = child
        .stdout
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("native prints its late count");
    assert_eq!(
        late, 0,
        "the native side dropped late records: the input should have none"
    );
    (child, out)
}

fn run_generator(records: u64, dir: &Path) -> Child {
    let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
    cmd.arg("__generate").arg(records.to_string());
    run_child(cmd, dir, "generator")
}

fn run_sluice(records: u64, dir: &Path) -> (Child, PathBuf) {
    let pipeline = write_pipeline(
        dir,
        &format!(
            r#"
manifest_version = 1
name = "bench-windows"

[[sources]]
name = "readings"
type = "turbines"
seed = {SEED}
turbines = {KEYS}
records = {records}
interval_ms = {INTERVAL_MS}
out_of_order_ms = {OUT_OF_ORDER_MS}
late_ratio = 0.0
splits = 1
[sources.watermarks]
out_of_orderness = "{OUT_OF_ORDER_MS}ms"

[[operators]]
name = "count"
plugin = "{{plugins}}/bench_window_count.wasm"
input = "readings"
key_by = "key"
window = {{ kind = "tumbling", size = "{WINDOW_MS}ms", time = "event" }}

[[sinks]]
name = "out"
type = "file"
input = "count"
path = "sluice-windows.jsonl"
"#
        ),
    );
    let state = dir.join("state");
    let mut cmd = Command::new(sluice_bin());
    cmd.arg("run")
        .arg("--quiet")
        .arg("--state-dir")
        .arg(&state)
        .arg("--batch-size")
        .arg(BATCH.to_string())
        .arg(&pipeline);
    cmd.env("SLUICE_COMPILE_CACHE", compile_cache())
        .env("SLUICE_LOG", "warn")
        .current_dir(dir);
    let child = run_child(cmd, dir, "sluice");
    let summary = child
        .stderr
        .lines()
        .find(|l| l.contains("finished in"))
        .unwrap_or_else(|| panic!("no summary from sluice:\n{}", child.stderr));
    assert!(
        summary.contains(&format!(": {records} records in,")),
        "sluice read the wrong number of records: {summary}"
    );
    assert!(
        summary.ends_with(" 0 dead letters"),
        "sluice had dead letters: {summary}"
    );
    (child, dir.join("sluice-windows.jsonl"))
}

// ---------------------------------------------------------------------------
// Checking and reporting.

#[derive(Deserialize, PartialEq, Eq, PartialOrd, Ord, Debug)]
#[serde(deny_unknown_fields)]
struct WindowCount {
    key: String,
    start: i64,
    end: i64,
    count: u64,
}

fn results(path: &Path) -> Vec<WindowCount> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut v: Vec<WindowCount> = text
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}: bad line {l:?}: {e}", path.display()))
        })
        .collect();
    v.sort_unstable();
    v
}

/// Both sides must have produced the same multiset of window results:
/// compared in a child process (`__check`), which prints the number of windows.
fn check(records: u64, native: &Path, sluice: &Path, dir: &Path) -> usize {
    let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
    cmd.arg("__check")
        .arg(records.to_string())
        .arg(native)
        .arg(sluice);
    let child = run_child(cmd, dir, "check");
    child
        .stdout
        .trim()
        .parse()
        .expect("the check prints the number of windows")
}

fn compare(records: u64, native: &Path, sluice: &Path) -> usize {
    let (n, s) = (results(native), results(sluice));
    if n != s {
        let only_n: Vec<_> = n
            .iter()
            .filter(|x| s.binary_search(x).is_err())
            .take(5)
            .collect();
        let only_s: Vec<_> = s
            .iter()
            .filter(|x| n.binary_search(x).is_err())
            .take(5)
            .collect();
        panic!(
            "RESULTS DIFFER: native {} windows, sluice {} windows\n  only native (first 5): {only_n:?}\n  only sluice (first 5): {only_s:?}",
            n.len(),
            s.len()
        );
    }
    let total: u64 = n.iter().map(|w| w.count).sum();
    assert_eq!(
        total, records,
        "every record is counted in exactly one window"
    );
    assert!(n
        .iter()
        .all(|w| w.end - w.start == WINDOW_MS && w.start.rem_euclid(WINDOW_MS) == 0));
    n.len()
}

#[derive(Clone, Copy)]
struct Side {
    wall: f64,
    cpu: f64,
    rss_mib: f64,
}

impl Side {
    fn of(c: &Child) -> Side {
        Side {
            wall: c.wall.as_secs_f64(),
            cpu: c.cpu.as_secs_f64(),
            rss_mib: c.max_rss_kib as f64 / 1024.0,
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__native") {
        let records: u64 = args[2].parse().expect("record count");
        native(records, Path::new(&args[3])).expect("native run");
        return;
    }
    if args.get(1).map(String::as_str) == Some("__check") {
        let windows = compare(
            args[2].parse().expect("record count"),
            Path::new(&args[3]),
            Path::new(&args[4]),
        );
        println!("{windows}");
        return;
    }
    if args.get(1).map(String::as_str) == Some("__generate") {
        generate_only(args[2].parse().expect("record count"));
        return;
    }
    // Otherwise `cargo bench` ran us (with `--bench`); nothing else to parse.
    let records: u64 = std::env::var("SLUICE_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000_000);
    let rounds: usize = std::env::var("SLUICE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let tmp = tempfile::tempdir().unwrap();
    let fresh = |name: &str| {
        let d = tmp.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    };

    // Warm up: compile the component into the cache, fault in both binaries.
    let warm = 2 * KEYS as u64;
    let (_, n) = run_native(warm, &fresh("warm-native"));
    let (_, s) = run_sluice(warm, &fresh("warm-sluice"));
    check(warm, &n, &s, tmp.path());

    let (mut generator_sides, mut native_sides, mut sluice_sides) = (vec![], vec![], vec![]);
    let mut windows = 0;
    for round in 1..=rounds {
        let dir = fresh(&format!("round-{round}"));
        generator_sides.push(Side::of(&run_generator(records, &dir)));
        let (nc, n) = run_native(records, &dir);
        let (sc, s) = run_sluice(records, &dir);
        windows = check(records, &n, &s, &dir);
        let (a, b) = (Side::of(&nc), Side::of(&sc));
        eprintln!(
            "round {round}: native {:.2} s, {:.0} MiB; sluice {:.2} s, {:.0} MiB; {windows} windows identical ({})",
            a.wall,
            a.rss_mib,
            b.wall,
            b.rss_mib,
            sc.stderr.trim()
        );
        native_sides.push(a);
        sluice_sides.push(b);
        // Results and RocksDB files of this round are not needed any more.
        let _ = std::fs::remove_dir_all(&dir);
    }
    let med = |v: &[Side], f: fn(&Side) -> f64| median(v.iter().map(f).collect());
    let summarize = |v: &[Side]| Side {
        wall: med(v, |s| s.wall),
        cpu: med(v, |s| s.cpu),
        rss_mib: med(v, |s| s.rss_mib),
    };
    let (g, n, s) = (
        summarize(&generator_sides),
        summarize(&native_sides),
        summarize(&sluice_sides),
    );
    let rate = |side: &Side| records as f64 / side.wall;

    let cores = std::thread::available_parallelism().map_or(0, |p| p.get());
    println!(
        "keyed 1-minute tumbling count, event time: {records} records, {KEYS} keys, {windows} windows; {} ({cores} cores)",
        if rounds == 1 { "1 round".to_string() } else { format!("median of {rounds} rounds") }
    );
    println!(
        "  {:<28} {:>10} {:>9} {:>13} {:>9} {:>14}",
        "", "records", "wall s", "records/s", "CPU s", "peak RSS MiB"
    );
    for (name, side) in [
        ("native Rust (1 thread)", &n),
        ("sluice (Wasm aggregate, p=1)", &s),
    ] {
        println!(
            "  {name:<28} {records:>10} {:>9.2} {:>13.0} {:>9.2} {:>14.1}",
            side.wall,
            rate(side),
            side.cpu,
            side.rss_mib
        );
    }
    println!(
        "  (generating the input alone, 1 thread: {:.2} s, {:.0} records/s, {:.1} MiB; both sides include it)",
        g.wall,
        rate(&g),
        g.rss_mib
    );
    println!(
        "  (peak RSS of this bench process, a floor under the children's: {:.1} MiB)",
        self_max_rss_kib() as f64 / 1024.0
    );
    println!(
        "  sluice/native throughput {:.3}x   sluice/native peak RSS {:.2}x",
        rate(&s) / rate(&n),
        s.rss_mib / n.rss_mib
    );
}

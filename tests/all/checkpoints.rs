//! Checkpoints and recovery: the `sluice` process is killed with SIGKILL
//! at random moments (and in the middle of checkpoints) and restarted; the
//! committed output must equal that of an uninterrupted run. Also: corrupt
//! checkpoints are detected and skipped, state is redistributed when the
//! parallelism changes, savepoints, and refused pipeline changes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use sluice_tests::*;

/// trips (unique trip ids, event time) → keyed JSON → keyed count (p = count_p)
/// and a 1-minute tumbling window count per pickup zone → two file sinks.
fn pipeline_text(count: u64, rate: u64, count_p: u32, interval: &str) -> String {
    format!(
        r#"
manifest_version = 1
name = "fault"

[checkpoints]
interval = "{interval}"
retain = 4

[[sources]]
name = "trips"
type = "generator"
seed = 11
count = {count}
rate = {rate}
malformed_ratio = 0.01
out_of_order_ratio = 0.0
[sources.watermarks]
out_of_orderness = "1s"

[[operators]]
name = "keyed"
plugin = "{{plugins}}/fixture_json_keyed.wasm"
input = "trips"
on_error = "skip"
params = {{ key_field = "pickup_zone", time_field = "pickup_ms" }}

[[operators]]
name = "count"
plugin = "{{plugins}}/fixture_keyed_count.wasm"
input = "keyed"
key_by = "key"
parallelism = {count_p}

[[operators]]
name = "win"
plugin = "{{plugins}}/fixture_window_count.wasm"
input = "keyed"
key_by = "key"
parallelism = 2
on_error = "skip"
params = {{ field = "passenger_count" }}
window = {{ kind = "tumbling", size = "1m" }}

[[sinks]]
name = "counts"
type = "file"
input = "count"
path = "counts.jsonl"

[[sinks]]
name = "windows"
type = "file"
input = "win"
path = "windows.jsonl"
"#
    )
}

fn spawn(dir: &Path, extra: &[&str]) -> Child {
    spawn_run(dir, &[&["--state-cache-mb", "16"], extra].concat())
}

/// Run to completion; returns stderr.
fn finish(dir: &Path, extra: &[&str]) -> String {
    finish_run(dir, &[&["--state-cache-mb", "16"], extra].concat())
}

fn sorted_lines(path: &Path) -> Vec<String> {
    let mut lines: Vec<String> = std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

fn checkpoints_dir(dir: &Path) -> PathBuf {
    dir.join("state/fault/checkpoints")
}

/// A checkpoint directory without a manifest: one is being taken now.
fn checkpoint_in_progress(dir: &Path) -> bool {
    std::fs::read_dir(checkpoints_dir(dir))
        .map(|entries| {
            entries.flatten().any(|e| {
                e.file_name().to_string_lossy().starts_with("chk-")
                    && !e.path().join("manifest.json").exists()
            })
        })
        .unwrap_or(false)
}

fn complete_checkpoints(dir: &Path) -> Vec<u64> {
    let mut ids: Vec<u64> = std::fs::read_dir(checkpoints_dir(dir))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().join("manifest.json").exists())
                .filter_map(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .strip_prefix("chk-")
                        .and_then(|n| n.parse().ok())
                })
                .collect()
        })
        .unwrap_or_default();
    ids.sort_unstable();
    ids
}

/// The output of an uninterrupted run.
fn reference(count: u64) -> (Vec<String>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    write_pipeline(dir.path(), &pipeline_text(count, 1_000_000, 2, "500ms"));
    finish(dir.path(), &[]);
    let counts = sorted_lines(&dir.path().join("counts.jsonl"));
    let windows = sorted_lines(&dir.path().join("windows.jsonl"));
    assert!(counts.len() as u64 > count * 9 / 10 && !windows.is_empty());
    (counts, windows)
}

/// Per key, the counts in output order are 1, 2, 3, ...: no loss, no duplicate.
fn assert_counts_step_by_one(path: &Path) {
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for v in read_jsonl(path) {
        let key = v["key"].as_str().unwrap().to_string();
        let n = v["count"].as_u64().unwrap();
        let prev = last.insert(key.clone(), n).unwrap_or(0);
        assert_eq!(n, prev + 1, "key {key}: count {n} after {prev}");
    }
}

#[test]
fn killed_twenty_times_the_output_is_still_exactly_once() {
    const RECORDS: u64 = 100_000;
    let (want_counts, want_windows) = reference(RECORDS);

    let dir = tempfile::tempdir().unwrap();
    write_pipeline(dir.path(), &pipeline_text(RECORDS, 5_000, 2, "200ms"));
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let (mut restores, mut during_checkpoint, mut kills) = (0, 0, 0);
    let started = Instant::now();
    while kills < 22 {
        let child = spawn(dir.path(), &[]);
        let t0 = Instant::now();
        if kills % 3 == 2 {
            // Kill while a checkpoint is being taken.
            while t0.elapsed() < Duration::from_secs(5) && !checkpoint_in_progress(dir.path()) {
                std::thread::sleep(Duration::from_millis(1));
            }
            if checkpoint_in_progress(dir.path()) {
                during_checkpoint += 1;
            }
        } else {
            std::thread::sleep(Duration::from_millis(300 + rng.next(1200)));
        }
        let log = kill_run(child);
        kills += 1;
        if log.contains("restoring checkpoint") {
            restores += 1;
        }
        assert!(!log.contains("panicked"), "{log}");
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "the fault loop takes too long"
        );
    }
    let log = finish(dir.path(), &[]);
    eprintln!("{kills} kills ({during_checkpoint} during a checkpoint), {restores} restarts restored a checkpoint, in {:?}", started.elapsed());
    assert!(
        log.contains("restoring checkpoint"),
        "the last run resumes: {log}"
    );
    assert!(
        restores >= 15,
        "only {restores} of {kills} restarts restored a checkpoint"
    );
    assert!(
        during_checkpoint >= 5,
        "only {during_checkpoint} kills landed during a checkpoint"
    );

    assert_eq!(
        sorted_lines(&dir.path().join("counts.jsonl")),
        want_counts,
        "keyed counts differ from the uninterrupted run"
    );
    assert_eq!(
        sorted_lines(&dir.path().join("windows.jsonl")),
        want_windows,
        "window results differ from the uninterrupted run"
    );
    assert_counts_step_by_one(&dir.path().join("counts.jsonl"));
}

/// Run until at least `n` complete checkpoints exist, then kill.
fn run_until_checkpoints(dir: &Path, n: usize) {
    let child = spawn(dir, &[]);
    let t0 = Instant::now();
    while complete_checkpoints(dir).len() < n && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    kill_run(child);
    assert!(
        complete_checkpoints(dir).len() >= n,
        "no checkpoints were taken"
    );
}

#[test]
fn a_source_that_starts_after_the_first_checkpoint_was_asked_for_joins_it() {
    // A connector slow to connect (a loaded machine, a broker just starting)
    // starts its source after the coordinator asked for checkpoint 1; the
    // source must still inject that barrier, or checkpoint 1 and every one
    // after it wait for the 10-minute timeout.
    let dir = tempfile::tempdir().unwrap();
    write_pipeline(dir.path(), &pipeline_text(2_000_000, 20_000, 2, "100ms"));
    let child = run_command(dir.path(), &["--state-cache-mb", "16"])
        .env("SLUICE_FAULT_SOURCE_START_DELAY_MS", "1500")
        .spawn()
        .expect("sluice starts");
    let t0 = Instant::now();
    while complete_checkpoints(dir.path()).len() < 3 && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = kill_run(child);
    let done = complete_checkpoints(dir.path());
    assert!(
        done.len() >= 3,
        "{} checkpoints completed within 30 s of a late start (want 3):\n{log}",
        done.len()
    );
}

#[test]
fn corrupt_or_partial_checkpoints_are_detected_and_skipped() {
    const RECORDS: u64 = 40_000;
    let (want_counts, want_windows) = reference(RECORDS);
    let dir = tempfile::tempdir().unwrap();
    write_pipeline(dir.path(), &pipeline_text(RECORDS, 5_000, 2, "100ms"));
    run_until_checkpoints(dir.path(), 4);
    let ids = complete_checkpoints(dir.path());
    let (newest, second, third) = (ids[ids.len() - 1], ids[ids.len() - 2], ids[ids.len() - 3]);
    let cdir = checkpoints_dir(dir.path());
    // Newest: a missing file. Second: a bit flip in the manifest.
    let db = cdir.join(format!("chk-{newest}/db"));
    let victim = std::fs::read_dir(&db)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("MANIFEST"))
        .unwrap()
        .path();
    std::fs::remove_file(victim).unwrap();
    let manifest = cdir.join(format!("chk-{second}/manifest.json"));
    let mut bytes = std::fs::read(&manifest).unwrap();
    bytes[20] ^= 0x01;
    std::fs::write(&manifest, bytes).unwrap();

    let out = sluice(
        &[
            "checkpoint",
            "list",
            "--state-dir",
            "state",
            "pipeline.toml",
        ],
        dir.path(),
    );
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        list.contains("unusable: the manifest does not match its checksum"),
        "{list}"
    );

    let log = finish(dir.path(), &[]);
    assert!(
        log.contains(&format!("checkpoint {newest} is unusable")),
        "{log}"
    );
    assert!(
        log.contains(&format!("checkpoint {second} is unusable")) && log.contains("checksum"),
        "{log}"
    );
    assert!(
        log.contains(&format!("restoring checkpoint {third}")),
        "{log}"
    );
    assert_eq!(sorted_lines(&dir.path().join("counts.jsonl")), want_counts);
    assert_eq!(
        sorted_lines(&dir.path().join("windows.jsonl")),
        want_windows
    );

    // A truncated shared SST makes every checkpoint that holds it unusable.
    let dir = tempfile::tempdir().unwrap();
    write_pipeline(dir.path(), &pipeline_text(RECORDS, 5_000, 2, "100ms"));
    run_until_checkpoints(dir.path(), 2);
    let shared = checkpoints_dir(dir.path()).join("shared");
    for e in std::fs::read_dir(&shared).unwrap().flatten() {
        let len = e.metadata().unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(e.path())
            .unwrap()
            .set_len(len / 2)
            .unwrap();
    }
    let log = finish(dir.path(), &[]);
    assert!(log.contains("is unusable"), "{log}");
    assert_eq!(sorted_lines(&dir.path().join("counts.jsonl")), want_counts);
}

#[test]
fn rescaling_2_to_4_to_1_gives_the_same_results() {
    const RECORDS: u64 = 40_000;
    let (want_counts, want_windows) = reference(RECORDS);
    let dir = tempfile::tempdir().unwrap();
    write_pipeline(dir.path(), &pipeline_text(RECORDS, 5_000, 2, "100ms"));
    run_until_checkpoints(dir.path(), 3);
    write_pipeline(
        dir.path(),
        &pipeline_text(RECORDS, 5_000, 4, "100ms")
            .replace("parallelism = 2\non_error", "parallelism = 4\non_error"),
    );
    let before = complete_checkpoints(dir.path()).len();
    let child = spawn(dir.path(), &[]);
    let t0 = Instant::now();
    while complete_checkpoints(dir.path())
        .iter()
        .filter(|id| **id as usize > before)
        .count()
        < 3
        && t0.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = kill_run(child);
    assert!(log.contains("restoring checkpoint"), "{log}");
    write_pipeline(
        dir.path(),
        &pipeline_text(RECORDS, 1_000_000, 1, "100ms")
            .replace("parallelism = 2\non_error", "parallelism = 1\non_error"),
    );
    let log = finish(dir.path(), &[]);
    assert!(log.contains("restoring checkpoint"), "{log}");
    assert_eq!(sorted_lines(&dir.path().join("counts.jsonl")), want_counts);
    assert_eq!(
        sorted_lines(&dir.path().join("windows.jsonl")),
        want_windows
    );
    assert_counts_step_by_one(&dir.path().join("counts.jsonl"));
}

#[test]
fn savepoints_stop_and_resume_and_removed_state_is_refused_unless_dropped() {
    const RECORDS: u64 = 40_000;
    let (want_counts, _) = reference(RECORDS);
    let dir = tempfile::tempdir().unwrap();
    write_pipeline(dir.path(), &pipeline_text(RECORDS, 5_000, 2, "1s"));
    let child = spawn(dir.path(), &[]);
    std::thread::sleep(Duration::from_millis(1500));
    let out = sluice(
        &["savepoint", "--state-dir", "state", "pipeline.toml"],
        dir.path(),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("savepoint written to"), "{text}");
    let out = sluice(
        &[
            "stop",
            "--savepoint",
            "--state-dir",
            "state",
            "pipeline.toml",
        ],
        dir.path(),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stopped = child.wait_with_output().unwrap();
    assert!(
        stopped.status.success(),
        "{}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    let savepoint = text
        .trim()
        .strip_prefix("savepoint written to ")
        .expect("a savepoint path")
        .to_string();

    let out = sluice(
        &[
            "checkpoint",
            "list",
            "--state-dir",
            "state",
            "pipeline.toml",
        ],
        dir.path(),
    );
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(list.matches("savepoint ").count() >= 2, "{list}");

    // Without the keyed count, its state would be lost: refused.
    let without = std::fs::read_to_string(dir.path().join("pipeline.toml")).unwrap();
    let start = without.find("[[operators]]\nname = \"count\"").unwrap();
    let end = without[start..]
        .find("[[operators]]\nname = \"win\"")
        .unwrap()
        + start;
    let mut changed = without.clone();
    changed.replace_range(start..end, "");
    let changed = changed.replace("input = \"count\"", "input = \"keyed\"");
    std::fs::write(dir.path().join("pipeline.toml"), &changed).unwrap();
    let out = sluice(
        &[
            "run",
            "--quiet",
            "--state-dir",
            "state",
            "--from",
            &savepoint,
            "pipeline.toml",
        ],
        dir.path(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("operator `count` has keyed state") && err.contains("--allow-dropped-state"),
        "{err}"
    );

    // Resuming the savepoint with the pipeline as it was gives the exact output.
    std::fs::write(dir.path().join("pipeline.toml"), &without).unwrap();
    let log = finish(dir.path(), &["--from", &savepoint]);
    assert!(log.contains("restoring checkpoint"), "{log}");
    assert_eq!(sorted_lines(&dir.path().join("counts.jsonl")), want_counts);
    assert_counts_step_by_one(&dir.path().join("counts.jsonl"));
}

//! The edges of a pipeline's state directory (issue 13): a crafted
//! savepoint cannot write outside it, one run owns it at a time, a stop
//! request left behind does not stop the next run, a stop ends a pause, and
//! a full disk never leaves part of an epoch in a file sink's output.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice_tests::*;

/// trips → file sink, exactly once; deterministic output, no plugins.
fn plain(count: u64, rate: u64, interval: &str) -> String {
    format!(
        r#"manifest_version = 1
name = "plain"

[checkpoints]
interval = "{interval}"

[[sources]]
name = "trips"
type = "generator"
seed = 5
count = {count}
rate = {rate}

[[sinks]]
name = "out"
type = "file"
input = "trips"
path = "out.jsonl"
"#
    )
}

/// trips → keyed JSON → keyed count → file sink: keyed state in RocksDB.
fn keyed(count: u64, rate: u64) -> String {
    format!(
        r#"manifest_version = 1
name = "keyed"

[checkpoints]
interval = "200ms"

[[sources]]
name = "trips"
type = "generator"
seed = 9
count = {count}
rate = {rate}

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

[[sinks]]
name = "counts"
type = "file"
input = "count"
path = "counts.jsonl"
"#
    )
}

/// Wait for `child` to exit within `limit`; kill it and fail otherwise.
fn wait_within(mut child: Child, limit: Duration, what: &str) -> std::process::Output {
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > limit {
            let log = kill_run(child);
            panic!("{what}: still running after {limit:?}:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn complete_checkpoints(store: &Path) -> usize {
    std::fs::read_dir(store)
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name().to_string_lossy().starts_with("chk-")
                        && e.path().join("manifest.json").exists()
                })
                .count()
        })
        .unwrap_or(0)
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !done() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Rewrite the manifest of checkpoint directory `chk` with `edit`, with a
/// valid checksum (as whoever crafts a savepoint can).
fn craft_manifest(chk: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = chk.join("manifest.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut m: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    edit(&mut m);
    let body = m.to_string();
    let sum = sluice_dataflow::control::sha256_hex(body.as_bytes());
    std::fs::write(&path, format!("{body}\n{sum}\n")).unwrap();
}

#[test]
fn a_savepoint_naming_files_outside_the_checkpoint_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_pipeline(dir.path(), &keyed(3_000, 1_000_000));
    finish_run(dir.path(), &[]);
    let store = dir.path().join("state/keyed/checkpoints");
    let chk = std::fs::read_dir(&store)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.join("manifest.json").exists()
                && p.file_name().unwrap().to_string_lossy().starts_with("chk-")
        })
        .expect("a checkpoint");
    let victim = dir.path().join("victim");
    // Relative to the state's RocksDB directory (state/keyed/state), and absolute.
    for hostile in ["../../../victim".to_string(), victim.display().to_string()] {
        std::fs::write(&victim, b"precious").unwrap();
        let savepoint = dir.path().join("crafted");
        let _ = std::fs::remove_dir_all(&savepoint);
        copy_dir(&chk, &savepoint.join("x"));
        let sp = savepoint.join("x");
        std::fs::create_dir_all(sp.join("shared")).unwrap();
        for e in std::fs::read_dir(store.join("shared")).unwrap().flatten() {
            std::fs::copy(e.path(), sp.join("shared").join(e.file_name())).unwrap();
        }
        craft_manifest(&sp, |m| {
            let files = m["state"]["files"].as_array_mut().unwrap();
            let sst = files
                .iter_mut()
                .find(|f| f["shared"] == true)
                .expect("a shared SST");
            sst["name"] = serde_json::Value::String(hostile.clone());
        });
        let out = sluice(
            &[
                "run",
                "--quiet",
                "--state-dir",
                "state",
                "--from",
                sp.to_str().unwrap(),
                "pipeline.toml",
            ],
            dir.path(),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{hostile}: the crafted savepoint was restored:\n{err}"
        );
        assert!(
            err.contains("manifest.json is not valid")
                && err.contains(&format!("{hostile:?}"))
                && err.contains("only plain file names inside the checkpoint are accepted"),
            "{hostile}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(
            std::fs::read(&victim).unwrap(),
            b"precious",
            "{hostile}: the victim was overwritten"
        );
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// The output of an uninterrupted run of `plain(count, ..)`.
fn plain_reference(count: u64) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    write_pipeline(dir.path(), &plain(count, 1_000_000, "1s"));
    finish_run(dir.path(), &[]);
    std::fs::read(dir.path().join("out.jsonl")).unwrap()
}

#[test]
fn a_second_run_on_the_same_state_dir_fails_fast_with_the_pid_and_the_first_is_intact() {
    const COUNT: u64 = 20_000;
    let want = plain_reference(COUNT);
    let dir = tempfile::tempdir().unwrap();
    write_pipeline(dir.path(), &plain(COUNT, 4_000, "200ms"));
    let first = spawn_run(dir.path(), &[]);
    let store = dir.path().join("state/plain/checkpoints");
    wait_for("a first checkpoint", Duration::from_secs(30), || {
        complete_checkpoints(&store) >= 1
    });
    let t0 = Instant::now();
    let second = run_command(dir.path(), &[]).spawn().unwrap();
    let out = wait_within(second, Duration::from_secs(20), "the second run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "the second run took {:?} to give up",
        t0.elapsed()
    );
    assert!(err.contains(&format!("pipeline `plain` did not start: state directory state/plain is in use by sluice run pid {}; stop it first", first.id())), "{err}");
    // The first run goes on; stopped, its output is a prefix of the
    // uninterrupted run's, and a restart completes it exactly.
    let out = sluice(
        &["stop", "--state-dir", "state", "pipeline.toml"],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = wait_within(first, Duration::from_secs(60), "the first run after a stop");
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let got = std::fs::read(dir.path().join("out.jsonl")).unwrap();
    assert!(
        !got.is_empty() && got.len() < want.len() && want.starts_with(&got),
        "the first run's output is not a prefix of the reference ({} of {} bytes)",
        got.len(),
        want.len()
    );
    finish_run(dir.path(), &[]);
    assert_eq!(std::fs::read(dir.path().join("out.jsonl")).unwrap(), want);
}

#[test]
fn a_stop_with_nothing_running_says_so_and_a_stale_request_does_not_stop_the_next_run() {
    const COUNT: u64 = 6_000;
    let dir = tempfile::tempdir().unwrap();
    write_pipeline(dir.path(), &plain(COUNT, 4_000, "200ms"));
    let out = sluice(
        &["stop", "--state-dir", "state", "pipeline.toml"],
        dir.path(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("nothing to stop: no sluice run is using state directory"),
        "{err}"
    );
    assert!(
        !dir.path().join("state").exists(),
        "a stop with nothing running left files behind"
    );
    let out = sluice(
        &["savepoint", "--state-dir", "state", "pipeline.toml"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("no savepoint taken: no sluice run is using state directory"));

    // What an interrupted stop of an earlier sluice left, and one for another run.
    let requests = dir.path().join("state/plain/checkpoints/requests");
    std::fs::create_dir_all(&requests).unwrap();
    std::fs::write(
        requests.join("req-1-1.json"),
        r#"{"savepoint":false,"stop":true}"#,
    )
    .unwrap();
    std::fs::write(
        requests.join("req-2-2.json"),
        r#"{"savepoint":false,"stop":true,"run":"12345-1"}"#,
    )
    .unwrap();
    let child = spawn_run(dir.path(), &[]);
    let store = dir.path().join("state/plain/checkpoints");
    // Leftovers are dropped; one for another run arriving while it runs too.
    wait_for("a first checkpoint", Duration::from_secs(30), || {
        complete_checkpoints(&store) >= 1
    });
    std::fs::create_dir_all(&requests).unwrap();
    std::fs::write(
        requests.join("req-3-3.json"),
        r#"{"savepoint":false,"stop":true,"run":"12345-1"}"#,
    )
    .unwrap();
    let out = wait_within(child, Duration::from_secs(60), "the run");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let lines = std::fs::read(dir.path().join("out.jsonl"))
        .unwrap()
        .iter()
        .filter(|b| **b == b'\n')
        .count() as u64;
    assert_eq!(lines, COUNT, "the run was stopped early:\n{log}");
    assert_eq!(
        std::fs::read_dir(&requests).map(|d| d.count()).unwrap_or(0),
        0,
        "requests left behind"
    );
}

#[test]
fn a_stop_ends_a_pause() {
    let dir = tempfile::tempdir().unwrap();
    write_pipeline(dir.path(), &keyed(1_000_000, 3_000));
    let child = spawn_run(dir.path(), &[]);
    let control = dir.path().join("state/keyed/checkpoints/control");
    let store = dir.path().join("state/keyed/checkpoints");
    wait_for("a first checkpoint", Duration::from_secs(60), || {
        complete_checkpoints(&store) >= 1
    });
    std::fs::create_dir_all(&control).unwrap();
    let pause = serde_json::json!({ "id": "pause-1", "pipeline": "keyed", "operator": "count", "action": "pause" });
    std::fs::write(control.join("pause-1.json"), pause.to_string()).unwrap();
    let result = control.join("results/pause-1.json");
    wait_for("the pause", Duration::from_secs(60), || {
        std::fs::read_to_string(&result).is_ok_and(|t| t.contains("\"applied\""))
    });
    // Paused, with upstream backpressured: a stop must still end the run.
    let t0 = Instant::now();
    let out = sluice(
        &[
            "stop",
            "--state-dir",
            "state",
            "--timeout",
            "30",
            "pipeline.toml",
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = wait_within(child, Duration::from_secs(30), "a paused run after a stop");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("a paused run stopped in {:?}", t0.elapsed());
}

#[test]
fn a_file_size_limit_never_leaves_part_of_an_epoch_in_the_output() {
    // RLIMIT_FSIZE (with SIGXFSZ ignored) makes a write past the limit fail
    // with EFBIG the way a full disk fails with ENOSPC, deterministically:
    // the commit that appends an epoch to `out.jsonl` fails part-way.
    const COUNT: u64 = 100_000;
    const LIMIT_KB: u64 = 2048;
    let want = plain_reference(COUNT);
    assert!(want.len() as u64 > 4 * LIMIT_KB * 1024);
    let dir = tempfile::tempdir().unwrap();
    write_pipeline(dir.path(), &plain(COUNT, 20_000, "100ms"));
    let run = run_command(dir.path(), &[]);
    let mut limited = Command::new("bash");
    limited
        .arg("-c")
        .arg(format!(
            "ulimit -f {LIMIT_KB} && trap '' XFSZ && exec \"$@\""
        ))
        .arg("sluice")
        .arg(run.get_program())
        .args(run.get_args())
        .current_dir(dir.path())
        .envs(run.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let out = wait_within(
        limited.spawn().unwrap(),
        Duration::from_secs(60),
        "the limited run",
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the run must fail at the limit:\n{log}"
    );
    assert!(
        log.contains("appending to sink file") && log.contains("too large"),
        "{log}"
    );
    let got = std::fs::read(dir.path().join("out.jsonl")).unwrap();
    assert!(
        !got.is_empty(),
        "nothing was committed before the limit:\n{log}"
    );
    assert!(
        got.ends_with(b"\n") && want.starts_with(&got),
        "the output holds part of an epoch ({} bytes, limit {} KiB)",
        got.len(),
        LIMIT_KB
    );
    // Without the limit, the restart completes the output exactly once.
    finish_run(dir.path(), &[]);
    assert_eq!(std::fs::read(dir.path().join("out.jsonl")).unwrap(), want);
}

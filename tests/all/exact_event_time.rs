//! Event-time answers are a function of the input: the same pipelines over
//! the same shuffled, late-laden input give byte-identical output at batch
//! sizes 1, 7, 1024 and 8192, equal to a native computation of the
//! per-record semantics (watermark = largest event time before the record −
//! out_of_orderness − 1 ms; sessions merge first, then judge lateness), and
//! the same output again across a SIGKILL and restore.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use sluice_state::keygroup::{key_group, MAX_PARALLELISM};
use sluice_tests::*;

const BASE: i64 = 1_767_225_600_000;
const OOO: i64 = 5_000;
const BATCHES: [usize; 4] = [1, 7, 1024, 8192];

/// `(key, time, v)` in arrival order.
type Input = Vec<(String, i64, i64)>;
/// `(key, start, end) -> (count, sum)`: the last result of each window.
type Results = BTreeMap<(String, i64, i64), (u64, i64)>;

/// 3,000 records over 9 keys, 250 ms apart with up to 4 s of jitter, a
/// 90 s pause after every 400 (sessions close), and one in 25 held back
/// by 20 to 140 s (late by the watermark, some within the allowed lateness).
fn input() -> Input {
    let mut rng = Rng(0x5EED_CAFE);
    let mut out = Vec::new();
    for i in 0..3000i64 {
        let mut t = BASE + i * 250 + (i / 400) * 90_000 + rng.next(4_000) as i64;
        if rng.next(25) == 0 {
            t -= 20_000 + rng.next(120_000) as i64;
        }
        out.push((format!("k{}", i % 9), t, i % 5));
    }
    out
}

/// The watermark before each record, as the host computes it.
fn watermarks(input: &Input) -> Vec<i64> {
    let mut max = i64::MIN;
    input
        .iter()
        .map(|(_, t, _)| {
            let wm = if max == i64::MIN {
                i64::MIN
            } else {
                max - OOO - 1
            };
            max = max.max(*t);
            wm
        })
        .collect()
}

fn pipeline(dir: &Path, operator: &str) {
    write_pipeline(
        dir,
        &format!(
            r#"
manifest_version = 1
name = "exact"

[[sources]]
name = "input"
type = "file"
path = "input.jsonl"

[[operators]]
name = "keyed"
plugin = "{{plugins}}/fixture_json_keyed.wasm"
input = "input"
watermarks = {{ out_of_orderness = "{OOO}ms" }}

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

fn window_op(window: &str) -> String {
    format!(
        r#"[[operators]]
name = "op"
plugin = "{{plugins}}/fixture_window_count.wasm"
input = "keyed"
key_by = "key"
params = {{ field = "v" }}
window = {window}

[[sinks]]
name = "late"
type = "file"
input = "op.late"
path = "late.jsonl"
"#
    )
}

const TIMER_OP: &str = r#"[[operators]]
name = "op"
plugin = "{plugins}/fixture_timer.wasm"
input = "keyed"
key_by = "key"
params = { delay_ms = 1500 }
"#;

/// Run `operator` over `input` at every batch size; assert the outputs are
/// byte-identical and return them (`out.jsonl`, `late.jsonl`).
fn run_all_batch_sizes(input: &Input, operator: &str) -> (String, String) {
    let text: String = input
        .iter()
        .map(|(k, t, v)| format!("{{\"key\":\"{k}\",\"time\":{t},\"v\":{v}}}\n"))
        .collect();
    let mut first: Option<(String, String)> = None;
    for batch in BATCHES {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("input.jsonl"), &text).unwrap();
        pipeline(dir.path(), operator);
        run_in_process(
            &dir.path().join("pipeline.toml"),
            &dir.path().join("state"),
            batch,
        )
        .expect("pipeline runs");
        let out = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
        let late = std::fs::read_to_string(dir.path().join("late.jsonl")).unwrap_or_default();
        match &first {
            None => first = Some((out, late)),
            Some((o, l)) => {
                assert!(
                    *o == out,
                    "batch size {batch}: the output differs from batch size 1 ({} vs {} bytes)",
                    out.len(),
                    o.len()
                );
                assert!(
                    *l == late,
                    "batch size {batch}: the late output differs from batch size 1"
                );
            }
        }
    }
    first.expect("ran")
}

fn results(out: &str) -> Results {
    out.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let key = (
                v["key"].as_str().unwrap().to_string(),
                v["start"].as_i64().unwrap(),
                v["end"].as_i64().unwrap(),
            );
            (
                key,
                (v["count"].as_u64().unwrap(), v["sum"].as_i64().unwrap()),
            )
        })
        .collect()
}

fn late_times(late: &str) -> Vec<i64> {
    late.lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["time"]
                .as_i64()
                .unwrap()
        })
        .collect()
}

/// Tumbling and sliding windows: a record goes into each of its windows
/// not past `last + lateness` at its watermark; late for all, it is late.
fn native_windows(
    input: &Input,
    lateness: i64,
    assign: impl Fn(i64) -> Vec<(i64, i64)>,
) -> (Results, Vec<i64>) {
    let (mut results, mut late) = (Results::new(), Vec::new());
    for ((k, t, v), wm) in input.iter().zip(watermarks(input)) {
        let open: Vec<(i64, i64)> = assign(*t)
            .into_iter()
            .filter(|(_, e)| e - 1 + lateness > wm)
            .collect();
        if open.is_empty() {
            late.push(*t);
        }
        for (s, e) in open {
            let r = results.entry((k.clone(), s, e)).or_default();
            r.0 += 1;
            r.1 += v;
        }
    }
    (results, late)
}

/// Session windows as Flink defines them: before each record the
/// watermark fires sessions that ended and purges those past the allowed
/// lateness; a record merges with the open sessions it touches and is late
/// only if it touches none and its own window is past the lateness; a
/// session that is already due when a record lands in it fires again.
fn native_sessions(input: &Input, gap: i64, lateness: i64) -> (Results, Vec<i64>) {
    #[derive(Clone, Copy)]
    struct Session {
        start: i64,
        end: i64,
        count: u64,
        sum: i64,
        fired: bool,
    }
    let mut open: BTreeMap<String, Vec<Session>> = BTreeMap::new();
    let (mut results, mut late) = (Results::new(), Vec::new());
    let emit = |results: &mut Results, k: &str, s: &Session| {
        results.insert((k.to_string(), s.start, s.end), (s.count, s.sum));
    };
    let advance = |open: &mut BTreeMap<String, Vec<Session>>, results: &mut Results, wm: i64| {
        for (k, list) in open.iter_mut() {
            for s in list.iter_mut().filter(|s| !s.fired && s.end - 1 <= wm) {
                s.fired = true;
                emit(results, k, s);
            }
            list.retain(|s| s.end - 1 + lateness > wm);
        }
    };
    let mut current = i64::MIN;
    for ((k, t, v), wm) in input.iter().zip(watermarks(input)) {
        if wm > current {
            current = wm;
            advance(&mut open, &mut results, wm);
        }
        let list = open.entry(k.clone()).or_default();
        let own = Session {
            start: *t,
            end: t + gap,
            count: 1,
            sum: *v,
            fired: false,
        };
        let touches = |s: &Session| s.start <= own.end && own.start <= s.end;
        if !list.iter().any(touches) && own.end - 1 + lateness <= wm {
            late.push(*t);
            continue;
        }
        let mut merged = own;
        list.retain(|s| {
            if touches(s) || (s.start <= merged.end && merged.start <= s.end) {
                merged = Session {
                    start: merged.start.min(s.start),
                    end: merged.end.max(s.end),
                    count: merged.count + s.count,
                    sum: merged.sum + s.sum,
                    fired: false,
                };
                false
            } else {
                true
            }
        });
        if merged.end - 1 <= wm {
            merged.fired = true;
            emit(&mut results, k, &merged);
        }
        list.push(merged);
    }
    advance(&mut open, &mut results, i64::MAX);
    (results, late)
}

/// The timer fixture, natively: count per key, a timer at `t + 1.5 s` per
/// record; before each record the watermark fires the timers it reached, in
/// (time, key group, key) order, each emitting and clearing the key's count.
fn native_timers(input: &Input) -> String {
    let mut counts: HashMap<&str, u64> = HashMap::new();
    let mut timers: BTreeSet<(i64, u16, &str)> = BTreeSet::new();
    let mut out = String::new();
    let mut fire = |counts: &mut HashMap<&str, u64>,
                    timers: &mut BTreeSet<(i64, u16, &str)>,
                    wm: i64| {
        while timers.first().is_some_and(|t| t.0 <= wm) {
            let (ts, _, k) = timers.pop_first().unwrap();
            let n = counts.remove(k).unwrap_or(0);
            out.push_str(&format!("{{\"key\":\"{k}\",\"timestamp\":{ts},\"domain\":\"event\",\"count\":{n},\"watermark\":{wm}}}\n"));
        }
    };
    let mut current = i64::MIN;
    for ((k, t, _), wm) in input.iter().zip(watermarks(input)) {
        if wm > current {
            current = wm;
            fire(&mut counts, &mut timers, wm);
        }
        *counts.entry(k.as_str()).or_default() += 1;
        timers.insert((
            t + 1500,
            key_group(k.as_bytes(), MAX_PARALLELISM),
            k.as_str(),
        ));
    }
    fire(&mut counts, &mut timers, i64::MAX);
    out
}

#[test]
fn tumbling_windows_with_allowed_lateness_are_exact_at_every_batch_size() {
    let input = input();
    let (out, late) = run_all_batch_sizes(
        &input,
        &window_op(r#"{ kind = "tumbling", size = "1m", allowed_lateness = "30s" }"#),
    );
    let (want, want_late) = native_windows(&input, 30_000, |t| {
        vec![(t - t.rem_euclid(60_000), t - t.rem_euclid(60_000) + 60_000)]
    });
    assert!(
        want_late.len() > 20 && want_late.len() < 120,
        "the input has late records: {}",
        want_late.len()
    );
    assert_eq!(
        late_times(&late),
        want_late,
        "the late records, in input order"
    );
    assert_eq!(results(&out), want);
}

#[test]
fn sliding_windows_are_exact_at_every_batch_size() {
    let input = input();
    let (out, late) = run_all_batch_sizes(
        &input,
        &window_op(r#"{ kind = "sliding", size = "1m", slide = "20s" }"#),
    );
    let (want, want_late) = native_windows(&input, 0, |t| {
        let last = t - t.rem_euclid(20_000);
        (0..3)
            .map(|i| last - i * 20_000)
            .filter(|s| *s > t - 60_000)
            .map(|s| (s, s + 60_000))
            .collect()
    });
    assert_eq!(late_times(&late), want_late);
    assert_eq!(results(&out), want);
}

#[test]
fn session_windows_merge_first_then_judge_lateness_at_every_batch_size() {
    let input = input();
    let (out, late) = run_all_batch_sizes(
        &input,
        &window_op(r#"{ kind = "session", gap = "30s", allowed_lateness = "20s" }"#),
    );
    let (want, want_late) = native_sessions(&input, 30_000, 20_000);
    assert_eq!(late_times(&late), want_late);
    assert_eq!(results(&out), want);
}

#[test]
fn a_record_that_extends_a_session_within_the_allowed_lateness_joins_it() {
    // `u` has the open session [60 s, 90 s). The record at 31 s arrives at
    // watermark 81.999 s: its own window [31 s, 61 s) is past the 20 s
    // lateness alone (61 − 0.001 + 20 < 82), but it extends the session,
    // which is not, so it joins it: one session [31 s, 90 s) of 2.
    let input: Input = vec![
        ("u".into(), BASE + 60_000, 1),
        ("v".into(), BASE + 87_000, 1),
        ("u".into(), BASE + 31_000, 1),
        ("v".into(), BASE + 300_000, 1),
    ];
    let (out, late) = run_all_batch_sizes(
        &input,
        &window_op(r#"{ kind = "session", gap = "30s", allowed_lateness = "20s" }"#),
    );
    assert_eq!(late, "", "nothing is late");
    let r = results(&out);
    assert_eq!(
        r.get(&("u".to_string(), BASE + 31_000, BASE + 90_000)),
        Some(&(2, 2)),
        "{out}"
    );
    assert_eq!(results(&out), native_sessions(&input, 30_000, 20_000).0);
}

#[test]
fn keyed_timers_fire_exactly_where_the_watermark_reaches_them_at_every_batch_size() {
    let input = input();
    let (out, _) = run_all_batch_sizes(&input, TIMER_OP);
    let want = native_timers(&input);
    assert_eq!(out.lines().count(), want.lines().count());
    assert!(
        out == want,
        "the timer output differs from the native computation"
    );
}

/// A rate-limited taxi stream with event-time windows and timers, killed
/// with SIGKILL while running and restored, gives the output of an
/// uninterrupted run byte for byte.
#[test]
fn event_time_output_survives_a_sigkill_byte_for_byte() {
    let text = |rate: u64| {
        format!(
            r#"
manifest_version = 1
name = "exact-kill"
batch_size = 64

[checkpoints]
interval = "150ms"

[[sources]]
name = "trips"
type = "generator"
seed = 5
count = 12000
rate = {rate}
malformed_ratio = 0.0
out_of_order_ratio = 0.2
[sources.watermarks]
out_of_orderness = "2s"

[[operators]]
name = "keyed"
plugin = "{{plugins}}/fixture_json_keyed.wasm"
input = "trips"
params = {{ key_field = "pickup_zone", time_field = "pickup_ms" }}

[[operators]]
name = "win"
plugin = "{{plugins}}/fixture_window_count.wasm"
input = "keyed"
key_by = "key"
params = {{ field = "passenger_count" }}
window = {{ kind = "tumbling", size = "1m", allowed_lateness = "10s" }}

[[operators]]
name = "timer"
plugin = "{{plugins}}/fixture_timer.wasm"
input = "keyed"
key_by = "key"
params = {{ delay_ms = 30000 }}

[[sinks]]
name = "windows"
type = "file"
input = "win"
path = "windows.jsonl"

[[sinks]]
name = "late"
type = "file"
input = "win.late"
path = "late.jsonl"

[[sinks]]
name = "timers"
type = "file"
input = "timer"
path = "timers.jsonl"
"#
        )
    };
    let read = |dir: &Path| {
        ["windows.jsonl", "late.jsonl", "timers.jsonl"]
            .map(|f| std::fs::read_to_string(dir.join(f)).unwrap_or_default())
    };

    let reference = tempfile::tempdir().unwrap();
    write_pipeline(reference.path(), &text(1_000_000));
    finish_run(reference.path(), &[]);
    let want = read(reference.path());
    assert!(
        !want[0].is_empty() && !want[2].is_empty(),
        "windows and timers fired"
    );

    let dir = tempfile::tempdir().unwrap();
    write_pipeline(dir.path(), &text(6_000));
    let child = spawn_run(dir.path(), &[]);
    // Kill once a few checkpoints are complete, about halfway through.
    let checkpoints = dir.path().join("state/exact-kill/checkpoints");
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(20) {
        let complete = std::fs::read_dir(&checkpoints)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().join("manifest.json").exists())
                    .count()
            })
            .unwrap_or(0);
        if complete >= 3 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let log = kill_run(child);
    assert!(
        !log.contains("finished"),
        "the run was killed before it finished:\n{log}"
    );
    let log = finish_run(dir.path(), &[]);
    assert!(
        log.contains("restor"),
        "the restart restored a checkpoint:\n{log}"
    );
    let got = read(dir.path());
    for (i, name) in ["windows", "late", "timers"].iter().enumerate() {
        assert!(
            got[i] == want[i],
            "{name}: the output after a SIGKILL and restore differs from an uninterrupted run"
        );
    }
}

/// The mistakes that silently give wrong event-time answers are refused by
/// `sluice validate` (and `run`), with the line and the fix.
#[test]
fn an_event_time_window_that_no_watermark_reaches_is_refused_with_the_fix() {
    let with = |watermarks: &str, extra_input: &str, batch: &str| {
        format!(
            r#"manifest_version = 1
name = "nowm"
{batch}
[[sources]]
name = "input"
type = "file"
path = "input.jsonl"

[[sources]]
name = "more"
type = "file"
path = "input.jsonl"

[[operators]]
name = "keyed"
plugin = "{{plugins}}/fixture_json_keyed.wasm"
input = ["input"{extra_input}]
{watermarks}

[[operators]]
name = "op"
plugin = "{{plugins}}/fixture_window_count.wasm"
input = "keyed"
key_by = "key"
window = {{ kind = "tumbling", size = "1m" }}

[[sinks]]
name = "out"
type = "file"
input = "op"
path = "out.jsonl"
"#
        )
    };
    let validate = |text: &str| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("input.jsonl"), "").unwrap();
        write_pipeline(dir.path(), text);
        let out = sluice(&["validate", "pipeline.toml"], dir.path());
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned()
                + &String::from_utf8_lossy(&out.stdout),
        )
    };
    let (ok, text) = validate(&with("watermarks = { out_of_orderness = \"1s\" }", "", ""));
    assert!(ok, "{text}");
    let (ok, text) = validate(&with("", "", ""));
    assert!(!ok);
    assert!(
        text.contains("pipeline.toml:21: operator `op`")
            && text.contains("no watermark reaches it: source `input` declares none")
            && text.contains("out_of_orderness"),
        "{text}"
    );
    // A union with watermarks on one input only: the other holds it back forever.
    let (ok, text) = validate(&with("", ", \"more\"", "").replace("type = \"file\"\npath = \"input.jsonl\"\n\n[[sources]]", "type = \"file\"\npath = \"input.jsonl\"\n[sources.watermarks]\nout_of_orderness = \"1s\"\n\n[[sources]]"));
    assert!(!ok);
    assert!(
        text.contains("`keyed` unites `more`, which carries none"),
        "{text}"
    );
    assert!(
        !text.contains("\u{1b}["),
        "no colour codes when stderr is not a terminal: {text:?}"
    );
    // Batch settings live in the file and are checked there.
    let (ok, text) = validate(&with(
        "watermarks = { out_of_orderness = \"1s\" }",
        "",
        "batch_size = 0\n",
    ));
    assert!(
        !ok && text.contains("pipeline.toml:3") && text.contains("batch_size = 0 is out of range"),
        "{text}"
    );
    let (ok, text) = validate(&with(
        "watermarks = { out_of_orderness = \"1s\" }",
        "",
        "batch_size = 64\nbatch_timeout = \"5ms\"\n",
    ));
    assert!(ok, "{text}");
    // Alignment is between sources; an operator cannot wait for its inputs.
    let (ok, text) = validate(&with(
        "watermarks = { out_of_orderness = \"1s\", alignment_group = \"g\" }",
        "",
        "",
    ));
    assert!(
        !ok && text.contains("alignment_group and max_drift apply to sources only")
            && text.contains("[sources.watermarks]"),
        "{text}"
    );
}

/// A plain process operator (no timers) reads the watermark as of each
/// record and where the record came from (contract 0.1.3 `record-info`), at
/// every batch size.
#[test]
fn a_plugin_sees_the_watermark_and_the_source_position_of_each_record() {
    let input = input();
    let operator = r#"[[operators]]
name = "op"
plugin = "{plugins}/fixture_record_info.wasm"
input = "keyed"

[[sinks]]
name = "late"
type = "file"
input = "op.late"
path = "late.jsonl"
"#;
    let (out, late) = run_all_batch_sizes(&input, operator);
    let wms = watermarks(&input);
    let mut want_on_time = Vec::new();
    let mut want_late = Vec::new();
    for (i, ((_, t, _), wm)) in input.iter().zip(&wms).enumerate() {
        let wm = if *wm == i64::MIN {
            "null".to_string()
        } else {
            wm.to_string()
        };
        let line = format!(
            "{{\"offset\":{},\"source\":\"input\",\"split\":0,\"time\":{t},\"watermark\":{wm}}}",
            i + 1
        );
        if wm != "null" && *t <= wms[i] {
            want_late.push(line);
        } else {
            want_on_time.push(line);
        }
    }
    assert!(!want_late.is_empty());
    assert_eq!(out.lines().collect::<Vec<_>>(), want_on_time);
    assert_eq!(late.lines().collect::<Vec<_>>(), want_late);
}

/// A plugin declares its side outputs (`side_outputs = [...]` in the Rust
/// SDK); reading one it never emits is refused before anything runs.
#[test]
fn reading_a_side_output_the_plugin_does_not_declare_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("input.jsonl"), "").unwrap();
    let text = |side: &str| {
        format!(
            "manifest_version = 1\nname = \"sides\"\n\n[[sources]]\nname = \"input\"\ntype = \"file\"\npath = \"input.jsonl\"\n\n[[operators]]\nname = \"op\"\nplugin = \"{{plugins}}/fixture_record_info.wasm\"\ninput = \"input\"\n\n[[sinks]]\nname = \"out\"\ntype = \"file\"\ninput = \"op.{side}\"\npath = \"out.jsonl\"\n"
        )
    };
    write_pipeline(dir.path(), &text("late"));
    let out = sluice(&["validate", "pipeline.toml"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    write_pipeline(dir.path(), &text("lates"));
    let out = sluice(&["validate", "pipeline.toml"], dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("pipeline.toml:17: `out` reads `op.lates`, but the plugin of `op` declares no side output `lates` (it declares `op.late`)"), "{err}");
}

/// Two sources of one alignment group feeding a union: the fast one waits
/// for the slow one instead of racing ahead of it (Flink's watermark
/// alignment), so the union's records stay near its watermark.
#[test]
fn sources_of_an_alignment_group_wait_for_the_slowest() {
    let run = |alignment: &str| {
        let dir = tempfile::tempdir().unwrap();
        let source = |name: &str, rate: &str| {
            format!(
                "[[sources]]\nname = \"{name}\"\ntype = \"turbines\"\nseed = 3\nturbines = 20\nrecords = 12000\ninterval_ms = 1000\nout_of_order_ms = 500\nlate_ratio = 0.0\n{rate}\n[sources.watermarks]\nout_of_orderness = \"1s\"\n{alignment}\n\n"
            )
        };
        let text = format!(
            "manifest_version = 1\nname = \"aligned\"\nbatch_size = 16\n\n{}{}[[operators]]\nname = \"op\"\nplugin = \"{{plugins}}/fixture_record_info.wasm\"\ninput = [\"fast\", \"slow\"]\n\n[[sinks]]\nname = \"out\"\ntype = \"file\"\ninput = \"op\"\npath = \"out.jsonl\"\n\n[[sinks]]\nname = \"late\"\ntype = \"file\"\ninput = \"op.late\"\npath = \"late.jsonl\"\n",
            source("fast", ""),
            source("slow", "rate = 4000.0")
        );
        write_pipeline(dir.path(), &text);
        run_in_process(
            &dir.path().join("pipeline.toml"),
            &dir.path().join("state"),
            16,
        )
        .expect("pipeline runs");
        // How far ahead of the union's watermark the fast source's records were.
        let mut ahead = 0i64;
        let mut n = 0;
        for file in ["out.jsonl", "late.jsonl"] {
            for v in read_jsonl(&dir.path().join(file)) {
                n += 1;
                if let (Some("fast"), Some(t), Some(w)) = (
                    v["source"].as_str(),
                    v["time"].as_i64(),
                    v["watermark"].as_i64(),
                ) {
                    ahead = ahead.max(t - w);
                }
            }
        }
        assert_eq!(n, 24_000, "every record of both sources");
        ahead
    };
    let racing = run("");
    let aligned = run("alignment_group = \"inputs\"\nmax_drift = \"10s\"");
    assert!(
        racing > 120_000,
        "without alignment the fast source races ahead: {racing} ms"
    );
    // max_drift (10 s) + out-of-orderness (1 s) + one batch read past the
    // check (16 records, 0.8 s) + the slow source's records still in flight
    // to the operator (a few seconds on a loaded machine).
    assert!(
        aligned <= 20_000,
        "aligned, the fast source stays near max_drift: {aligned} ms ahead"
    );
}

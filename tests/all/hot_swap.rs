//! Hot swap through the control directory, under load: a keyed counter is
//! switched v1 → v2 → v1 while records flow; a component of the wrong kind
//! is rejected and the old version keeps running; a repeated command is
//! applied once.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use sluice_connectors::datagen::{self, TaxiConfig};
use sluice_tests::plugins::fixtures;
use sluice_tests::*;

const TRIPS: u64 = 30_000;

fn pipeline() -> String {
    pipeline_with("")
}

/// The pipeline, with extra settings for the `count` operator.
fn pipeline_with(count_extra: &str) -> String {
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
{count_extra}

[[sinks]]
name = "out"
type = "file"
input = "count"
path = "out.txt"
"#
    )
}

fn deploy(dir: &Path, component: Plugin, id: &str) -> (bool, String) {
    let wasm = plugin(component).display().to_string();
    let out = sluice(
        &[
            "plugin",
            "deploy",
            "--state-dir",
            "state",
            "--id",
            id,
            "--timeout",
            "60",
            "pipeline.toml",
            "count",
            &wasm,
        ],
        dir,
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Trips `fixture_json_keyed` keys: JSON with a pickup zone and an integer pickup time.
fn countable() -> usize {
    let config: TaxiConfig = serde_json::from_value(
        serde_json::json!({ "seed": 17, "count": TRIPS, "malformed_ratio": 0.01 }),
    )
    .unwrap();
    datagen::records(&config, 0)
        .filter(|r| {
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&r.value) else {
                return false;
            };
            matches!(
                v.get("pickup_zone"),
                Some(serde_json::Value::String(_) | serde_json::Value::Number(_))
            ) && v
                .get("pickup_ms")
                .and_then(serde_json::Value::as_i64)
                .is_some()
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
    let (ok, text) = deploy(dir.path(), fixtures::WINDOW_COUNT, "wrong-world");
    assert!(
        !ok && text.contains("rejected") && text.contains("window"),
        "{text}"
    );
    // A trap in `init`: rejected before any subtask switches.
    let (ok, text) = deploy(dir.path(), fixtures::INIT_FAILS, "bad-init");
    assert!(
        !ok && text.contains("rejected") && text.contains("refuses to start"),
        "{text}"
    );
    let (ok, text) = deploy(dir.path(), fixtures::VERSIONED_COUNT_V2, "to-v2");
    assert!(
        ok && text.contains("applied") && text.contains("after source `trips` at "),
        "{text}"
    );
    std::thread::sleep(Duration::from_secs(2));
    // The same command again: it was applied once, and stays so.
    let (ok, text) = deploy(dir.path(), fixtures::VERSIONED_COUNT_V2, "to-v2");
    assert!(ok && text.contains("applied"), "{text}");
    let (ok, text) = deploy(dir.path(), fixtures::VERSIONED_COUNT_V1, "back-to-v1");
    assert!(ok && text.contains("applied"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "the swaps should land while records flow ({:?})",
        started.elapsed()
    );

    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("already handled"),
        "the repeated command is recognised: {log}"
    );
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
        let (key, count, version) = (
            parts.next().unwrap(),
            parts.next().unwrap().parse::<u64>().unwrap(),
            parts.next().unwrap(),
        );
        let e = per_key.entry(key.to_string()).or_insert((0, 0, Vec::new()));
        assert_eq!(count, e.0 + 1, "key {key}: count {count} after {}", e.0);
        e.0 = count;
        let phase = match (version, e.1) {
            ("v1", 0) => 0,
            ("v2", 0 | 1) => 1,
            ("v1", 1 | 2) => 2,
            (v, p) => panic!(
                "key {key}: version {v} in phase {p}: a swap went backwards or happened twice"
            ),
        };
        e.1 = phase;
        e.2.push(version.to_string());
        lines += 1;
    }
    assert_eq!(
        lines,
        countable(),
        "every keyed trip is counted exactly once"
    );
    let switched = per_key.values().filter(|(_, phase, _)| *phase == 2).count();
    assert!(
        switched * 2 > per_key.len(),
        "most keys saw both swaps ({switched} of {})",
        per_key.len()
    );
    let saw_v2 = per_key
        .values()
        .filter(|(_, _, v)| v.iter().any(|v| v == "v2"))
        .count();
    assert!(
        saw_v2 * 2 > per_key.len(),
        "most keys were counted by v2 for a while ({saw_v2} of {})",
        per_key.len()
    );
}

/// Per key: counts 1, 2, 3, ... and the versions in `phases` order (each
/// switch once). Returns (lines, keys that reached the last phase).
fn check_output(path: &Path, phases: &[&str]) -> (usize, usize, usize) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut per_key: HashMap<String, (u64, usize)> = HashMap::new();
    let mut lines = 0;
    for line in text.lines() {
        let mut parts = line.splitn(4, ' ');
        let (key, count, version) = (
            parts.next().unwrap(),
            parts.next().unwrap().parse::<u64>().unwrap(),
            parts.next().unwrap(),
        );
        let e = per_key.entry(key.to_string()).or_insert((0, 0));
        assert_eq!(count, e.0 + 1, "key {key}: count {count} after {}", e.0);
        e.0 = count;
        let next = (e.1..phases.len())
            .find(|&i| phases[i] == version)
            .unwrap_or_else(|| panic!("key {key}: {version} after phase {} of {phases:?}", e.1));
        e.1 = next;
        lines += 1;
    }
    let last = per_key
        .values()
        .filter(|(_, p)| *p == phases.len() - 1)
        .count();
    (lines, last, per_key.len())
}

#[test]
fn a_swap_survives_a_sigkill_right_after_it_and_rollback_returns_to_the_previous_version() {
    let dir = tempfile::tempdir().unwrap();
    write_pipeline(dir.path(), &pipeline());
    let child = spawn_run(dir.path(), &[]);
    std::thread::sleep(Duration::from_millis(1500));
    let (ok, text) = deploy(dir.path(), fixtures::VERSIONED_COUNT_V2, "v2-then-kill");
    assert!(ok, "{text}");
    kill_run(child);

    // Recovery runs the swapped-in version; then roll it back while it runs.
    let child = spawn_run(dir.path(), &[]);
    std::thread::sleep(Duration::from_millis(1500));
    let out = sluice(
        &[
            "plugin",
            "rollback",
            "--state-dir",
            "state",
            "--timeout",
            "60",
            "pipeline.toml",
            "count",
        ],
        dir.path(),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.contains("applied"), "{text}");
    let list = sluice(
        &["plugin", "list", "--state-dir", "state", "pipeline.toml"],
        dir.path(),
    );
    let listed = String::from_utf8_lossy(&list.stdout);
    let v1 = control_digest(fixtures::VERSIONED_COUNT_V1);
    let v2 = control_digest(fixtures::VERSIONED_COUNT_V2);
    assert!(
        listed.contains(&format!("* sha256:{}", &v1[..16]))
            && listed.contains(&format!("x sha256:{}", &v2[..16])),
        "{listed}"
    );
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("runs the deployed plugin"),
        "recovery loads the deployed version: {log}"
    );

    let (lines, back, keys) = check_output(&dir.path().join("out.txt"), &["v1", "v2", "v1"]);
    assert_eq!(
        lines,
        countable(),
        "every keyed trip is counted exactly once across the kill"
    );
    assert!(
        back * 2 > keys,
        "most keys are back on v1 ({back} of {keys})"
    );
}

#[test]
fn a_version_that_traps_on_every_tenth_record_is_rolled_back_automatically() {
    let dir = tempfile::tempdir().unwrap();
    write_pipeline(
        dir.path(),
        &(pipeline_with("on_error = \"skip\"")
            + "\n[control]\nprobation_records = 500\nmax_error_rate = 0.05\n"),
    );
    let child = spawn_run(dir.path(), &[]);
    std::thread::sleep(Duration::from_millis(1500));
    let (ok, text) = deploy(dir.path(), fixtures::VERSIONED_COUNT_V3, "to-v3");
    assert!(ok, "{text}");
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("rolling back"), "{log}");
    let results =
        std::fs::read_dir(dir.path().join("state/swap/checkpoints/control/results")).unwrap();
    let auto: Vec<String> = results
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("auto-rollback-count-")
        })
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    assert_eq!(auto.len(), 1, "one automatic rollback");
    assert!(
        auto[0].contains("\"applied\"") && auto[0].contains("records failed"),
        "{}",
        auto[0]
    );
    // Counts continue through v3 and back; v3's trapped records were skipped (policy), not counted.
    // (A trapping version is slow: each trap re-runs its batch record by
    // record, so the rollback's barrier reaches it late; some keys only.)
    let (_, back, keys) = check_output(&dir.path().join("out.txt"), &["v1", "v3", "v1"]);
    assert!(
        back > 0,
        "keys are counted by v1 again after the rollback ({back} of {keys})"
    );
}

fn control_digest(component: Plugin) -> String {
    sluice_dataflow::control::sha256_hex(&std::fs::read(plugin(component)).unwrap())
}

#[test]
fn swaps_arrive_through_the_kafka_control_topic_and_the_directory() {
    let bs = sluice_tests::kafka::bootstrap();
    let mut topics = sluice_tests::kafka::Topics::on(&bs);
    let control = topics.create("control", 1);
    let status = format!("{control}.status");
    sluice_tests::kafka::create_topic(&bs, &status, 1);
    let _status_topic = StatusTopic(bs.clone(), status.clone());
    let dir = tempfile::tempdir().unwrap();
    write_pipeline(
        dir.path(),
        &format!(
            "{}\n[control.kafka]\nbootstrap = \"{bs}\"\ntopic = \"{control}\"\n",
            pipeline()
        ),
    );
    let child = spawn_run(dir.path(), &[]);
    std::thread::sleep(Duration::from_millis(1500));

    // v1 → v2 through Kafka (the CLI uses the pipeline's control topic).
    let (ok, text) = deploy(dir.path(), fixtures::VERSIONED_COUNT_V2, "kafka-to-v2");
    if !(ok && text.contains("Kafka topic") && text.contains("applied")) {
        panic!("{text}\n--- sluice log ---\n{}", kill_run(child));
    }
    std::thread::sleep(Duration::from_millis(1500));
    // v2 → v1 through the directory: a command file, as any tool can write
    // it, naming the component by an http URL (served here on loopback).
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1.wasm", server.server_addr().to_ip().unwrap());
    let bytes = std::fs::read(plugin(fixtures::VERSIONED_COUNT_V1)).unwrap();
    let serving = std::thread::spawn(move || {
        let request = server
            .recv_timeout(Duration::from_secs(60))
            .unwrap()
            .expect("the pipeline fetches the component");
        request
            .respond(tiny_http::Response::from_data(bytes))
            .unwrap();
    });
    let command = serde_json::json!({
        "id": "dir-to-v1", "pipeline": "swap", "operator": "count", "action": "deploy",
        "plugin": url, "sha256": control_digest(fixtures::VERSIONED_COUNT_V1),
    });
    let commands = dir.path().join("state/swap/checkpoints/control");
    std::fs::create_dir_all(&commands).unwrap();
    std::fs::write(commands.join("dir-to-v1.json"), command.to_string()).unwrap();
    let result = commands.join("results/dir-to-v1.json");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&result).is_ok_and(|t| t.contains("\"applied\"")) {
        assert!(
            Instant::now() < deadline,
            "the directory command was not applied: {:?}",
            std::fs::read_to_string(&result)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    serving.join().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (lines, back, keys) = check_output(&dir.path().join("out.txt"), &["v1", "v2", "v1"]);
    assert_eq!(
        lines,
        countable(),
        "every keyed trip is counted exactly once"
    );
    assert!(
        back * 2 > keys,
        "most keys are back on v1 ({back} of {keys})"
    );
    // The Kafka command's outcomes are on the status topic: accepted, then applied.
    let outcomes: Vec<String> = sluice_tests::kafka::read_topic(&bs, &status, true)
        .iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect();
    assert!(
        outcomes
            .iter()
            .any(|o| o.contains("kafka-to-v2") && o.contains("\"accepted\"")),
        "{outcomes:?}"
    );
    assert!(
        outcomes
            .iter()
            .any(|o| o.contains("kafka-to-v2") && o.contains("\"applied\"")),
        "{outcomes:?}"
    );
}

/// Deletes the status topic (not made through `Topics`) at the end.
struct StatusTopic(String, String);

impl Drop for StatusTopic {
    fn drop(&mut self) {
        let _ = sluice_kafka::admin::delete_topics(&self.0, &[&self.1]);
    }
}

#[test]
fn a_swap_requested_over_http_in_the_middle_of_a_checkpoint_is_exact_and_a_replay_is_ignored() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    // Commands name components in plugins/dist directly: allow it.
    write_pipeline(
        dir.path(),
        &format!(
            "{}\n[control]\nhttp = \"127.0.0.1:{port}\"\nplugin_dirs = [\"{{plugins}}\"]\n",
            pipeline()
        ),
    );
    let child = spawn_run(dir.path(), &[]);
    let base = format!("http://127.0.0.1:{port}/commands");
    // The run's bearer token, readable by its owner (this test).
    let token_file = dir
        .path()
        .join("state/swap/checkpoints/control/admin.token");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !token_file.is_file() {
        assert!(Instant::now() < deadline, "no admin token");
        std::thread::sleep(Duration::from_millis(20));
    }
    let bearer = format!(
        "Bearer {}",
        std::fs::read_to_string(&token_file).unwrap().trim()
    );
    let checkpoints = dir.path().join("state/swap/checkpoints");
    let in_progress = || {
        std::fs::read_dir(&checkpoints)
            .map(|entries| {
                entries
                    .flatten()
                    .find(|e| {
                        e.file_name().to_string_lossy().starts_with("chk-")
                            && !e.path().join("manifest.json").exists()
                    })
                    .map(|e| e.file_name().to_string_lossy().into_owned())
            })
            .ok()
            .flatten()
    };
    // Once records flow, send the command while a checkpoint is being taken.
    std::thread::sleep(Duration::from_millis(1500));
    let deadline = Instant::now() + Duration::from_secs(20);
    let taking = loop {
        if let Some(c) = in_progress() {
            break c;
        }
        assert!(Instant::now() < deadline, "no checkpoint in progress seen");
        std::thread::sleep(Duration::from_millis(1));
    };
    let command = serde_json::json!({
        "id": "http-to-v2", "pipeline": "swap", "operator": "count", "action": "deploy",
        "plugin": plugin(fixtures::VERSIONED_COUNT_V2), "sha256": control_digest(fixtures::VERSIONED_COUNT_V2),
    })
    .to_string();
    let post = |body: &str| {
        ureq::post(&base)
            .header("Content-Type", "application/json")
            .header("Authorization", &bearer)
            .send(body)
            .map(|r| r.status().as_u16())
    };
    assert_eq!(post(&command).unwrap(), 202);
    let outcome = |id: &str| -> Option<serde_json::Value> {
        ureq::get(format!("{base}/{id}"))
            .header("Authorization", &bearer)
            .call()
            .ok()
            .and_then(|mut r| serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok())
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let applied = loop {
        if let Some(o) = outcome("http-to-v2").filter(|o| o["status"] == "applied") {
            break o;
        }
        assert!(
            Instant::now() < deadline,
            "not applied: {:?}",
            outcome("http-to-v2")
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let taking: u64 = taking.trim_start_matches("chk-").parse().unwrap();
    assert!(
        applied["checkpoint"].as_u64().unwrap() > taking,
        "a swap asked for during checkpoint {taking} takes effect at a later barrier: {applied}"
    );
    // The same command again, as a replayed message would be, through the
    // CLI (which talks to the endpoint): applied once, answered at once.
    let (ok, text) = deploy(dir.path(), fixtures::VERSIONED_COUNT_V2, "http-to-v2");
    assert!(
        ok && text.contains(&format!("to {base}")) && text.contains("applied"),
        "{text}"
    );
    assert_eq!(
        post("{\"not\": \"a command\"}").ok(),
        None,
        "a malformed command is refused with 400"
    );
    // Pause: the output stops (input held, upstream backpressured); resume: it goes on.
    let pause = serde_json::json!({ "id": "pause-1", "pipeline": "swap", "operator": "count", "action": "pause" }).to_string();
    assert_eq!(post(&pause).unwrap(), 202);
    let deadline = Instant::now() + Duration::from_secs(60);
    while outcome("pause-1").is_none_or(|o| o["status"] != "applied") {
        assert!(
            Instant::now() < deadline,
            "pause not applied: {:?}",
            outcome("pause-1")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    let lines = || {
        std::fs::read_to_string(dir.path().join("out.txt"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let held = lines();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(lines(), held, "no output while paused");
    let resume = serde_json::json!({ "id": "resume-1", "pipeline": "swap", "operator": "count", "action": "resume" }).to_string();
    assert_eq!(post(&resume).unwrap(), 202);
    let deadline = Instant::now() + Duration::from_secs(30);
    while outcome("resume-1").is_none_or(|o| o["status"] != "applied") {
        assert!(
            Instant::now() < deadline,
            "resume not applied: {:?}",
            outcome("resume-1")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("`http-to-v2` was already handled"), "{log}");
    let (lines, on_v2, keys) = check_output(&dir.path().join("out.txt"), &["v1", "v2"]);
    assert_eq!(
        lines,
        countable(),
        "every keyed trip is counted exactly once"
    );
    assert!(on_v2 * 2 > keys, "most keys reach v2 ({on_v2} of {keys})");
}

#[test]
fn a_deploy_can_change_params_and_bad_params_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    // Commands name components in plugins/dist directly: allow it.
    write_pipeline(
        dir.path(),
        &format!(
            "{}\n[control]\nplugin_dirs = [\"{{plugins}}\"]\n",
            pipeline()
        ),
    );
    let child = spawn_run(dir.path(), &[]);
    std::thread::sleep(Duration::from_millis(1500));
    let commands = dir.path().join("state/swap/checkpoints/control");
    std::fs::create_dir_all(&commands).unwrap();
    let keyed = plugin(fixtures::JSON_KEYED);
    let send = |id: &str, params: serde_json::Value| -> serde_json::Value {
        let command = serde_json::json!({
            "id": id, "pipeline": "swap", "operator": "keyed", "action": "deploy",
            "plugin": keyed, "sha256": control_digest(fixtures::JSON_KEYED), "params": params,
        });
        std::fs::write(commands.join(format!("{id}.json")), command.to_string()).unwrap();
        let result = commands.join(format!("results/{id}.json"));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(o) = std::fs::read_to_string(&result)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .filter(|o| o["status"] != "accepted")
            {
                return o;
            }
            assert!(Instant::now() < deadline, "no outcome for {id}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let bad = send("bad-params", serde_json::json!({ "no_such_field": 1 }));
    assert_eq!(bad["status"], "rejected", "{bad}");
    let good = send(
        "by-dropoff",
        serde_json::json!({ "key_field": "dropoff_zone", "time_field": "pickup_ms" }),
    );
    assert_eq!(good["status"], "applied", "{good}");
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Keys are pickup zones up to the swap and dropoff zones after it.
    let text = std::fs::read_to_string(dir.path().join("out.txt")).unwrap();
    let mut switched = 0;
    for line in text.lines() {
        let mut parts = line.splitn(4, ' ');
        let key = parts.next().unwrap();
        let trip: serde_json::Value = serde_json::from_str(parts.nth(2).unwrap()).unwrap();
        let (pickup, dropoff) = (
            trip["pickup_zone"].to_string(),
            trip["dropoff_zone"].to_string(),
        );
        if key != pickup {
            assert_eq!(key, dropoff, "{line}");
            switched += 1;
        }
    }
    assert!(
        switched > 1000,
        "the new params took effect ({switched} records keyed by dropoff zone)"
    );
}

#[test]
fn a_deploy_that_migrates_the_state_layout_is_all_or_nothing_and_survives_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    write_pipeline(dir.path(), &pipeline());
    let child = spawn_run(dir.path(), &[]);
    // A key with state by now: the first one in the committed output.
    let deadline = Instant::now() + Duration::from_secs(60);
    let key = loop {
        let text = std::fs::read_to_string(dir.path().join("out.txt")).unwrap_or_default();
        if let Some(k) = text.lines().next().and_then(|l| l.split(' ').next()) {
            break k.to_string();
        }
        assert!(Instant::now() < deadline, "no output within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    };
    let wasm = plugin(fixtures::VERSIONED_COUNT_V4).display().to_string();
    // v4 keeps its count in another state; its migration refuses one key:
    // the deploy is rejected and every subtask keeps v1 with its state as it
    // was (v1 continues every count below).
    let params = serde_json::json!({ "fail_migration_key": key }).to_string();
    let out = sluice(
        &[
            "plugin",
            "deploy",
            "--state-dir",
            "state",
            "--id",
            "v4-refused",
            "--timeout",
            "60",
            "--params",
            &params,
            "pipeline.toml",
            "count",
            &wasm,
        ],
        dir.path(),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success()
            && text.contains("rejected")
            && text.contains(&format!("refusing to migrate key {key}")),
        "{text}"
    );
    let (ok, text) = deploy(dir.path(), fixtures::VERSIONED_COUNT_V4, "to-v4");
    assert!(ok && text.contains("applied"), "{text}");
    let log = kill_run(child);
    assert!(
        log.contains("keys migrated"),
        "the swap reports its migration: {log}"
    );

    // Recovery runs v4 on the migrated state: without the migration its
    // counts would start over.
    let log = finish_run(dir.path(), &[]);
    assert!(
        log.contains("runs the deployed plugin"),
        "recovery loads the deployed version: {log}"
    );
    let (lines, on_v4, keys) = check_output(&dir.path().join("out.txt"), &["v1", "v4"]);
    assert_eq!(
        lines,
        countable(),
        "every keyed trip is counted exactly once across the kill"
    );
    assert!(
        on_v4 * 2 > keys,
        "most keys are counted by v4 ({on_v4} of {keys})"
    );
}

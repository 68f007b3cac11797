//! Kafka end to end, against the real broker `scripts/test` starts
//! (`scripts/kafka start`, 127.0.0.1:9092): exactly-once through repeated
//! SIGKILLs, a broker restart mid-run, dead letters with provenance headers,
//! and the source's offsets in its consumer group.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_connectors::datagen::{self, TaxiConfig};
use sluice_tests::kafka::{bootstrap, create_topic, read_topic, unique_topic, Topics};
use sluice_tests::plugins::examples;
use sluice_tests::*;
use sluice_types::Record;

/// Kafka (read by two subtasks) → JSON key by pickup zone → keyed count
/// (p = 2) → Kafka.
fn counting_pipeline(
    name: &str,
    bootstrap: &str,
    input: &str,
    output: &str,
    stop_at_end: bool,
) -> String {
    format!(
        r#"
manifest_version = 1
name = "{name}"

[checkpoints]
interval = "300ms"
retain = 4

[[sources]]
name = "trips"
type = "kafka"
bootstrap = "{bootstrap}"
topic = "{input}"
stop_at_end = {stop_at_end}
parallelism = 2

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
parallelism = 2

[[sinks]]
name = "counts"
type = "kafka"
input = "count"
bootstrap = "{bootstrap}"
topic = "{output}"
"#
    )
}

fn spawn(dir: &Path) -> Child {
    spawn_run(dir, &[])
}

fn finish(dir: &Path) -> String {
    finish_run(dir, &[])
}

fn kill(child: Child) -> String {
    kill_run(child)
}

fn trips(seed: u64, count: u64) -> Vec<Record> {
    let config: TaxiConfig = serde_json::from_value(
        serde_json::json!({ "seed": seed, "count": count, "malformed_ratio": 0.01 }),
    )
    .unwrap();
    datagen::records(&config, 0).collect()
}

/// Produce `records` on a thread at about `rate` records/s; the flag turns
/// true once all are acknowledged.
fn produce_in_background(
    bootstrap: String,
    topic: String,
    records: Vec<Record>,
    rate: u64,
) -> (std::thread::JoinHandle<()>, Arc<AtomicBool>) {
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    let handle = std::thread::spawn(move || {
        let started = Instant::now();
        let paced = records.into_iter().enumerate().map(move |(i, r)| {
            if i % 500 == 0 {
                let due = Duration::from_secs_f64(i as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            r
        });
        sluice_kafka::admin::produce(&bootstrap, &topic, paced, |_| {}).expect("produce");
        flag.store(true, Ordering::SeqCst);
    });
    (handle, done)
}

/// The committed output as (key, count, value) rows, checking on the way
/// that per key the counts are 1, 2, 3, ... in partition order.
fn counted(bootstrap: &str, topic: &str) -> Vec<(String, u64, String)> {
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut rows = Vec::new();
    for r in read_topic(bootstrap, topic, true) {
        let v: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
        let key = v["key"].as_str().unwrap().to_string();
        assert_eq!(
            r.key.as_deref(),
            Some(key.as_bytes()),
            "the Kafka key is the record key"
        );
        let n = v["count"].as_u64().unwrap();
        let prev = last.insert(key.clone(), n).unwrap_or(0);
        assert_eq!(
            n,
            prev + 1,
            "key {key}: count {n} after {prev}: lost or duplicated output"
        );
        rows.push((key, n, v["value"].as_str().unwrap().to_string()));
    }
    rows.sort();
    rows
}

#[test]
fn kafka_to_kafka_stays_exactly_once_through_a_dozen_sigkills() {
    let bs = bootstrap();
    let mut topics = Topics::on(&bs);
    let (input, output, reference) = (
        topics.create("eos-in", 4),
        topics.create("eos-out", 4),
        topics.create("eos-ref", 4),
    );
    const RECORDS: u64 = 120_000;
    let (producer, produced) =
        produce_in_background(bs.clone(), input.clone(), trips(21, RECORDS), 6_000);

    let dir = tempfile::tempdir().unwrap();
    let name = unique_topic("eos");
    write_pipeline(
        dir.path(),
        &counting_pipeline(&name, &bs, &input, &output, false),
    );
    // First, die in the one window that loses a transaction: checkpoint 3
    // is complete, its transaction is not committed.
    let out = Command::new(sluice_bin())
        .args(["run", "--quiet", "--state-dir", "state", "pipeline.toml"])
        .current_dir(dir.path())
        .env("SLUICE_COMPILE_CACHE", compile_cache())
        .env("SLUICE_FAULT_KAFKA_CRASH_BEFORE_COMMIT", "3")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && log.contains("dying before committing the transaction of checkpoint 3"),
        "{log}"
    );
    let mut rng = Rng(0x5EED_CAFE_0000_0006);
    let (mut kills, mut restores, mut rolled_back) = (0, 0, 0);
    let started = Instant::now();
    while kills < 12 || !produced.load(Ordering::SeqCst) {
        let child = spawn(dir.path());
        std::thread::sleep(Duration::from_millis(800 + rng.next(2200)));
        let log = kill(child);
        if kills == 0 {
            assert!(
                log.contains(
                    "checkpoint 3 is complete but sink `counts` committed only up to checkpoint 2"
                ),
                "recovery starts before the lost transaction: {log}"
            );
        }
        kills += 1;
        restores += log.contains("restoring checkpoint") as u32;
        rolled_back += log.contains("committed only up to") as u32;
        assert!(!log.contains("panicked"), "{log}");
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the kill loop takes too long"
        );
    }
    producer.join().unwrap();
    // The last run reads to the end of the topic and finishes, with one
    // source subtask instead of two: partition offsets move between subtasks.
    write_pipeline(
        dir.path(),
        &counting_pipeline(&name, &bs, &input, &output, true).replace(
            "parallelism = 2\n\n[[operators]]\nname = \"keyed\"",
            "parallelism = 1\n\n[[operators]]\nname = \"keyed\"",
        ),
    );
    let log = finish(dir.path());
    assert!(
        log.contains("restoring checkpoint"),
        "the last run resumes: {log}"
    );
    eprintln!("{kills} kills, {restores} restarts restored a checkpoint, {rolled_back} rolled back past a lost transaction, in {:?}", started.elapsed());
    assert!(
        restores >= 8,
        "only {restores} of {kills} restarts restored a checkpoint"
    );

    // An uninterrupted run over the same input.
    let ref_dir = tempfile::tempdir().unwrap();
    write_pipeline(
        ref_dir.path(),
        &counting_pipeline(&unique_topic("eos-ref"), &bs, &input, &reference, true),
    );
    finish(ref_dir.path());
    let want = counted(&bs, &reference);
    assert!(
        want.len() as u64 > RECORDS * 9 / 10,
        "the reference run counted {} of {RECORDS} records",
        want.len()
    );
    let got = counted(&bs, &output);
    assert_eq!(
        got.len(),
        want.len(),
        "committed outputs after kills vs an uninterrupted run"
    );
    // Partitions interleave differently from run to run, so which trip gets
    // which count may differ; every trip is counted once under its key, and
    // every key reaches the same total.
    let trips = |rows: &[(String, u64, String)]| {
        let mut v: Vec<(String, String)> = rows
            .iter()
            .map(|(k, _, t)| (k.clone(), t.clone()))
            .collect();
        v.sort();
        v
    };
    let totals = |rows: &[(String, u64, String)]| {
        rows.iter().fold(BTreeMap::new(), |mut m, (k, n, _)| {
            let e = m.entry(k.clone()).or_insert(0);
            *e = (*e).max(*n);
            m
        })
    };
    let (got_trips, want_trips) = (trips(&got), trips(&want));
    assert!(
        got_trips.windows(2).all(|w| w[0] != w[1]),
        "a trip is counted twice"
    );
    assert!(
        got_trips == want_trips,
        "the committed output counts other trips than the uninterrupted run"
    );
    assert_eq!(
        totals(&got),
        totals(&want),
        "per-key totals differ from the uninterrupted run's"
    );
    // The transaction lost by the forced crash did write records (aborted
    // since): a read_uncommitted view has more than the committed one.
    assert!(
        read_topic(&bs, &output, false).len() > got.len(),
        "the aborted transaction's records are in the log"
    );
}

#[test]
fn malformed_records_land_in_the_dead_letter_topic_with_provenance_headers() {
    let bs = bootstrap();
    let mut topics = Topics::on(&bs);
    let (input, output, dlq) = (
        topics.create("dlq-in", 3),
        topics.create("dlq-out", 2),
        topics.create("dlq", 1),
    );
    let config: TaxiConfig = serde_json::from_value(
        serde_json::json!({ "seed": 5, "count": 20000, "malformed_ratio": 0.03 }),
    )
    .unwrap();
    sluice_kafka::admin::produce(&bs, &input, datagen::records(&config, 0), |_| {}).unwrap();
    let inputs = read_topic(&bs, &input, true);
    assert_eq!(inputs.len(), 20000);
    let malformed: Vec<&Record> = inputs
        .iter()
        .filter(|r| taxi::parse(&r.value).is_none())
        .collect();
    assert!(
        malformed.len() > 300,
        "the generator made {} malformed trips",
        malformed.len()
    );

    let dir = tempfile::tempdir().unwrap();
    write_pipeline(
        dir.path(),
        &format!(
            r#"
manifest_version = 1
name = "{name}"

[[sources]]
name = "trips"
type = "kafka"
bootstrap = "{bs}"
topic = "{input}"
stop_at_end = true

[[operators]]
name = "parse"
plugin = "{{plugins}}/taxi_parse.wasm"
input = "trips"
parallelism = 2
on_error = "dead-letter"

[[sinks]]
name = "parsed"
type = "kafka"
input = "parse"
bootstrap = "{bs}"
topic = "{output}"

[[sinks]]
name = "dead-letters"
type = "kafka"
input = "parse.dead-letter"
bootstrap = "{bs}"
topic = "{dlq}"
"#,
            name = unique_topic("dlq")
        ),
    );
    finish(dir.path());

    let digest =
        sluice_dataflow::control::sha256_hex(&std::fs::read(plugin(examples::TAXI_PARSE)).unwrap());
    let by_position: BTreeMap<(u32, u64), &Record> = inputs
        .iter()
        .map(|r| ((r.position.unwrap().split, r.position.unwrap().offset), r))
        .collect();
    let dead = read_topic(&bs, &dlq, true);
    assert_eq!(
        dead.len(),
        malformed.len(),
        "every malformed trip, and nothing else, is dead-lettered"
    );
    assert_eq!(
        read_topic(&bs, &output, true).len(),
        inputs.len() - malformed.len()
    );
    let mut seen = std::collections::BTreeSet::new();
    for d in &dead {
        let header = |name: &str| -> String {
            let h = d
                .headers
                .iter()
                .find(|h| h.name == name)
                .unwrap_or_else(|| panic!("dead letter without header {name}: {:?}", d.headers));
            String::from_utf8(h.value.clone()).unwrap()
        };
        assert_eq!(header("sluice.operator"), "parse");
        assert_eq!(header("sluice.plugin-digest"), digest);
        assert!(!header("sluice.error").is_empty());
        assert_eq!(header("sluice.topic"), input);
        let at: (u32, u64) = (
            header("sluice.partition").parse().unwrap(),
            header("sluice.offset").parse().unwrap(),
        );
        assert!(seen.insert(at), "position {at:?} dead-lettered twice");
        let original = by_position.get(&at).unwrap_or_else(|| {
            panic!("the dead letter points at {at:?}, which the input does not have")
        });
        assert!(
            taxi::parse(&original.value).is_none(),
            "the record at {at:?} is not malformed"
        );
        // The body carries the original bytes as well.
        let body: serde_json::Value = serde_json::from_slice(&d.value).unwrap();
        let bytes = match (&body["value"]["utf8"], &body["value"]["base64"]) {
            (serde_json::Value::String(s), _) => s.as_bytes().to_vec(),
            (_, serde_json::Value::String(b)) => {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD.decode(b).unwrap()
            }
            _ => panic!("dead letter without the original value: {body}"),
        };
        assert_eq!(bytes, original.value);
    }
}

#[test]
fn source_commits_its_offsets_to_the_consumer_group_and_can_start_at_latest() {
    let bs = bootstrap();
    let mut topics = Topics::on(&bs);
    let (input, output) = (topics.create("grp-in", 2), topics.create("grp-out", 1));
    sluice_kafka::admin::produce(&bs, &input, trips(3, 3000), |_| {}).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let name = unique_topic("grp");
    write_pipeline(
        dir.path(),
        &counting_pipeline(&name, &bs, &input, &output, true),
    );
    finish(dir.path());
    let group = format!("sluice.{name}.trips");
    let committed = sluice_kafka::admin::committed_offsets(&bs, &group, &input).unwrap();
    let mut ends = sluice_kafka::admin::end_offsets(&bs, &input).unwrap();
    // A partition the (sticky) producer left empty has nothing read, so nothing to commit.
    ends.retain(|_, end| *end > 0);
    assert!(!ends.is_empty());
    assert_eq!(
        committed, ends,
        "after the run, the group's offsets are at the end of every partition that has records"
    );

    // `start = "latest"` with no checkpoint: nothing that was there before.
    let dir = tempfile::tempdir().unwrap();
    let output2 = topics.create("grp-out2", 1);
    let text = counting_pipeline(&unique_topic("grp2"), &bs, &input, &output2, true).replace(
        "stop_at_end = true",
        "stop_at_end = true\nstart = \"latest\"",
    );
    write_pipeline(dir.path(), &text);
    finish(dir.path());
    assert!(read_topic(&bs, &output2, true).is_empty());
}

/// `scripts/kafka <args>` (the repository's broker script).
fn kafka_script(args: &[&str]) {
    let out = Command::new(repo_root().join("scripts/kafka"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("scripts/kafka runs");
    assert!(
        out.status.success(),
        "scripts/kafka {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The trips `fixture_json_keyed` keys (JSON objects with a pickup zone
/// and an integer pickup time): what the counting pipeline must count.
fn countable(records: &[Record]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = records
        .iter()
        .filter_map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.value).ok()?;
            let key = match v.get("pickup_zone")? {
                serde_json::Value::String(s) => s.clone(),
                n @ serde_json::Value::Number(_) => n.to_string(),
                _ => return None,
            };
            v.get("pickup_ms")?.as_i64()?;
            Some((key, String::from_utf8(r.value.clone()).ok()?))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_broker_restart_mid_run_loses_and_duplicates_nothing() {
    // A broker of its own, so that restarting it does not disturb the other tests.
    let port = std::env::var("SLUICE_TEST_RESTART_PORT").unwrap_or_else(|_| "9492".into());
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().display().to_string();
    let broker = ["--port", port.as_str(), "--data-dir", data_dir.as_str()];
    kafka_script(&[&["start"], &broker[..]].concat());
    struct StopBroker(Vec<String>);
    impl Drop for StopBroker {
        fn drop(&mut self) {
            let _ = Command::new(repo_root().join("scripts/kafka"))
                .arg("stop")
                .args(&self.0)
                .output();
        }
    }
    let _stop = StopBroker(broker.iter().map(|s| s.to_string()).collect());
    let bs = format!("127.0.0.1:{port}");
    let (input, output) = (unique_topic("restart-in"), unique_topic("restart-out"));
    create_topic(&bs, &input, 3);
    create_topic(&bs, &output, 3);
    let records = trips(8, 60_000);
    let want = countable(&records);
    let (producer, produced) = produce_in_background(bs.clone(), input.clone(), records, 4_000);

    let dir = tempfile::tempdir().unwrap();
    let name = unique_topic("restart");
    write_pipeline(
        dir.path(),
        &counting_pipeline(&name, &bs, &input, &output, false),
    );
    let mut child = spawn(dir.path());
    // Restart once output is being committed (bounded: a loaded machine
    // starts slowly, and a fresh broker creates its internal topics first).
    let deadline = Instant::now() + Duration::from_secs(120);
    while read_topic(&bs, &output, true).is_empty() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "sluice exited before the restart:\n{}",
            kill(child)
        );
        if Instant::now() > deadline {
            panic!("no output was committed within 120 s:\n{}", kill(child));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let restarted = Instant::now();
    kafka_script(&[&["restart"], &broker[..]].concat());
    eprintln!("broker restarted in {:?}", restarted.elapsed());
    // The pipeline rides through the restart and keeps committing.
    let deadline = Instant::now() + Duration::from_secs(180);
    while !produced.load(Ordering::SeqCst)
        || read_topic(&bs, &output, true).len() < want.len() * 9 / 10
    {
        assert!(
            child.try_wait().unwrap().is_none(),
            "sluice exited during the broker restart:\n{}",
            kill(child)
        );
        if Instant::now() > deadline {
            let committed = read_topic(&bs, &output, true).len();
            panic!("the pipeline did not catch up after the restart ({committed} of {} outputs committed, input fully produced: {}):\n{}", want.len(), produced.load(Ordering::SeqCst), kill(child));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    producer.join().unwrap();
    assert!(
        child.try_wait().unwrap().is_none(),
        "sluice exited:\n{}",
        kill(child)
    );
    // Drain and stop it, then finish what is left with a bounded run.
    let out = sluice(
        &["stop", "--state-dir", "state", "pipeline.toml"],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "sluice stop: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "the stopped run exits cleanly");
    write_pipeline(
        dir.path(),
        &counting_pipeline(&name, &bs, &input, &output, true),
    );
    let log = finish(dir.path());
    assert!(
        log.contains("restoring checkpoint"),
        "the bounded run resumes the stopped one: {log}"
    );
    let got = counted(&bs, &output);
    let mut got_trips: Vec<(String, String)> =
        got.iter().map(|(k, _, t)| (k.clone(), t.clone())).collect();
    got_trips.sort();
    assert!(
        got_trips.windows(2).all(|w| w[0] != w[1]),
        "a trip is counted twice"
    );
    assert_eq!(
        got_trips.len(),
        want.len(),
        "trips counted vs countable trips produced"
    );
    assert!(
        got_trips == want,
        "the output counts other trips than the input has"
    );
}

#[test]
fn the_source_reports_consumer_lag_per_partition() {
    let bs = bootstrap();
    let mut topics = Topics::on(&bs);
    let (input, output) = (topics.create("lag-in", 3), topics.create("lag-out", 1));
    sluice_kafka::admin::produce(&bs, &input, trips(4, 30_000), |_| {}).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Statistics every 20 ms, so that a short run reports several times.
    let text = counting_pipeline(&unique_topic("lag"), &bs, &input, &output, true).replace(
        "parallelism = 2\n\n[[operators]]\nname = \"keyed\"",
        "properties = { \"statistics.interval.ms\" = \"20\" }\n\n[[operators]]\nname = \"keyed\"",
    );
    let pipeline = write_pipeline(dir.path(), &text);
    let (summary, metrics) =
        run_in_process(&pipeline, &dir.path().join("state"), 256).expect("the pipeline runs");
    assert_eq!(summary.records_in, 30_000);
    let text = metrics.encode();
    let lag = |line_start: &str| -> Option<i64> {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    let ends = sluice_kafka::admin::end_offsets(&bs, &input).unwrap();
    for (p, end) in ends.iter().filter(|(_, end)| **end > 0) {
        let v = lag(&format!(
            "sluice_source_partition_lag{{node=\"trips\",partition=\"{p}\"}}"
        ))
        .unwrap_or_else(|| panic!("no lag gauge for partition {p}:\n{text}"));
        assert!(
            (0..=*end).contains(&v),
            "partition {p}: lag {v} outside 0..={end}"
        );
    }
    let max = lag("sluice_records_lag_max{node=\"trips\"}").expect("records_lag_max");
    assert!(max <= *ends.values().max().unwrap());
}

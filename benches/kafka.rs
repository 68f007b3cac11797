//! Kafka → parse/filter/map → Kafka: Sluice against plain rdkafka loops on
//! the same topic and broker, in one run.
//!
//! ```text
//! scripts/kafka start
//! cargo bench -p sluice-benches --bench kafka                    # 1M trips
//! SLUICE_BENCH_TRIPS=300000 cargo bench -p sluice-benches --bench kafka
//! ```
//!
//! The input topic (4 partitions) is loaded once. Each contender reads all
//! of it from the beginning and writes its output to a fresh topic; the time
//! runs from the first poll until the output is acknowledged (committed, for
//! the exactly-once pipeline); sluice's start-up before its first read
//! (loading plugins, connecting, fencing transactional ids), which the loops
//! do before their clock starts, is reported apart. Contenders:
//! - `copy loop`: one thread, BaseConsumer → ThreadedProducer, bytes as they
//!   are (the issue's baseline);
//! - `native loop`: the same with the pipeline's logic in Rust (parse JSON,
//!   plausibility filter, re-encode keyed by zone);
//! - `sluice`: `taxi_parse` → `taxi_filter` as Wasm operators (parallelism
//!   2), exactly-once (one transaction per checkpoint, every 2 s) and
//!   at-least-once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sluice_connectors::datagen::{self, TaxiConfig};
use sluice_tests::kafka::{bootstrap, unique_topic, Topics};
use sluice_tests::taxi::{parse, plausible};
use sluice_tests::{median, run_in_process, write_pipeline};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PARTITIONS: usize = 4;

/// A plain loop over every record of `input`, `f` deciding what to write.
fn plain_loop(
    topics: &mut Topics,
    bs: &str,
    input: &str,
    f: impl Fn(&[u8]) -> Option<(Vec<u8>, Vec<u8>)>,
) -> (f64, u64) {
    let output = topics.create("bench-plain-out", PARTITIONS);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bs)
        .set("group.id", unique_topic("bench-plain"))
        .set("enable.auto.commit", "false")
        .set("queued.min.messages", "200000")
        .set("fetch.wait.max.ms", "50")
        .create()
        .unwrap();
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bs)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("partitioner", "murmur2_random")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for p in 0..PARTITIONS as i32 {
        tpl.add_partition_offset(input, p, Offset::Beginning)
            .unwrap();
        ends.insert(
            p,
            consumer
                .fetch_watermarks(input, p, Duration::from_secs(30))
                .unwrap()
                .1,
        );
    }
    let mut remaining: i64 = ends.values().sum();
    let started = Instant::now();
    consumer.assign(&tpl).unwrap();
    let (mut read, mut written) = (0u64, 0u64);
    while remaining > 0 {
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m.unwrap();
        remaining -= 1;
        read += 1;
        let Some((key, value)) = f(m.payload().unwrap_or_default()) else {
            continue;
        };
        let mut record = BaseRecord::to(&output).key(&key).payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        written += 1;
    }
    producer.flush(Duration::from_secs(60)).unwrap();
    (read as f64 / started.elapsed().as_secs_f64(), written)
}

/// Records/s of a sluice run: over the span the plain loops are timed
/// (from the first read until the output is acknowledged or committed), and
/// over the whole run (plus loading the plugins, connecting and fencing the
/// transactional ids).
fn sluice(
    topics: &mut Topics,
    bs: &str,
    input: &str,
    trips: u64,
    delivery: &str,
    dir: &std::path::Path,
) -> (f64, f64) {
    let output = topics.create("bench-sluice-out", PARTITIONS);
    let pipeline = write_pipeline(
        dir,
        &format!(
            r#"
manifest_version = 1
name = "{name}"

[checkpoints]
interval = "2s"

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
on_error = "skip"

[[operators]]
name = "plausible"
plugin = "{{plugins}}/taxi_filter.wasm"
input = "parse"
parallelism = 2

[[sinks]]
name = "out"
type = "kafka"
input = "plausible"
bootstrap = "{bs}"
topic = "{output}"
delivery = "{delivery}"
"#,
            name = unique_topic("bench")
        ),
    );
    let (summary, _) =
        run_in_process(&pipeline, &dir.join("state"), 1024).expect("the benchmark pipeline runs");
    assert_eq!(
        summary.records_in, trips,
        "sluice read {} of the {trips} trips in `{input}` ({delivery})",
        summary.records_in
    );
    let reading = summary.elapsed - summary.startup.unwrap_or_default();
    (
        trips as f64 / reading.as_secs_f64(),
        trips as f64 / summary.elapsed.as_secs_f64(),
    )
}

fn main() {
    let trips: u64 = std::env::var("SLUICE_BENCH_TRIPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rounds: usize = std::env::var("SLUICE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let bs = bootstrap();
    let mut topics = Topics::on(&bs);
    let input = topics.create("bench-in", PARTITIONS);
    let config: TaxiConfig =
        serde_json::from_value(serde_json::json!({ "seed": 42, "count": trips })).unwrap();
    let loaded = Instant::now();
    sluice_kafka::admin::produce(&bs, &input, datagen::records(&config, 0), |_| {})
        .expect("load the input topic (is the broker up? scripts/kafka start)");
    eprintln!(
        "loaded {trips} trips into `{input}` in {:?}",
        loaded.elapsed()
    );
    let dir = tempfile::tempdir().unwrap();

    let copy = |v: &[u8]| Some((Vec::new(), v.to_vec()));
    let native = |v: &[u8]| {
        let t = parse(v)?;
        plausible(&t).then(|| {
            let key = t.pickup_zone.to_string().into_bytes();
            let value = format!(
                "{{\"trip_id\":{},\"pickup_ms\":{},\"zone\":{},\"total\":{}}}",
                t.trip_id, t.pickup_ms, t.pickup_zone, t.total_amount
            )
            .into_bytes();
            (key, value)
        })
    };
    // Warm up: compile the components into the cache, open connections once.
    sluice(&mut topics, &bs, &input, trips, "at-least-once", dir.path());

    let (mut c, mut n, mut eos, mut alo, mut eos_all, mut alo_all) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        c.push(plain_loop(&mut topics, &bs, &input, copy).0);
        n.push(plain_loop(&mut topics, &bs, &input, native).0);
        let (e, e_all) = sluice(&mut topics, &bs, &input, trips, "exactly-once", dir.path());
        let (a, a_all) = sluice(&mut topics, &bs, &input, trips, "at-least-once", dir.path());
        eos.push(e);
        eos_all.push(e_all);
        alo.push(a);
        alo_all.push(a_all);
        eprintln!(
            "round {}: copy {:.0}/s, native {:.0}/s, sluice exactly-once {e:.0}/s ({e_all:.0}/s with start-up), at-least-once {a:.0}/s ({a_all:.0}/s)",
            round + 1,
            c[round],
            n[round]
        );
    }
    let (c, n, eos, alo, eos_all, alo_all) = (
        median(c),
        median(n),
        median(eos),
        median(alo),
        median(eos_all),
        median(alo_all),
    );
    println!("kafka → parse/filter/map → kafka, {trips} trips, {PARTITIONS} partitions, median of {rounds} rounds ({} cores, broker on the same machine)", std::thread::available_parallelism().map_or(0, |p| p.get()));
    println!("  plain rdkafka copy loop          {c:>10.0} records/s");
    println!(
        "  plain rdkafka native parse/filter {n:>9.0} records/s   ratio {:.2}x copy",
        n / c
    );
    println!("  sluice exactly-once (p=2)        {eos:>10.0} records/s   ratio {:.2}x copy, {:.2}x native", eos / c, eos / n);
    println!("  sluice at-least-once (p=2)       {alo:>10.0} records/s   ratio {:.2}x copy, {:.2}x native", alo / c, alo / n);
    println!("  (sluice timed from the first read, like the loops; with its start-up: exactly-once {eos_all:.0}/s = {:.2}x copy, at-least-once {alo_all:.0}/s = {:.2}x copy)", eos_all / c, alo_all / c);
}

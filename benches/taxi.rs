//! Taxi parse + filter + per-zone count: native Rust against Sluice with the
//! same logic as Wasm operators, in one run, on the same generated input.
//!
//! ```text
//! cargo bench -p sluice-benches --bench taxi            # 1M trips
//! SLUICE_BENCH_TRIPS=200000 cargo bench -p sluice-benches --bench taxi
//! ```
//!
//! Both sides include generating the trips and writing the running totals and
//! dead letters to files, so the ratio isolates what Sluice adds: channels,
//! the component boundary, Wasm execution and keyed state in the host.

use std::collections::HashMap;
use std::io::Write;
use std::time::Instant;

use sluice_connectors::datagen::{self, TaxiConfig};
use sluice_tests::taxi::{parse, plausible};
use sluice_tests::{median, run_in_process, write_pipeline};

// The same allocator as the `sluice` binary, for both sides of the comparison.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn native(trips: u64, dir: &std::path::Path) -> f64 {
    let config: TaxiConfig =
        serde_json::from_value(serde_json::json!({ "seed": 42, "count": trips })).unwrap();
    let started = Instant::now();
    let mut out = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(dir.join("native-totals.jsonl")).unwrap(),
    );
    let mut dead = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(dir.join("native-dead.jsonl")).unwrap(),
    );
    let mut zones: HashMap<Vec<u8>, (u64, i64)> = HashMap::new();
    for r in datagen::records(&config, 0) {
        let trip = match parse(&r.value) {
            Some(t) => t,
            None => {
                let line = serde_json::json!({ "error": "malformed", "offset": r.position.map(|p| p.offset), "value": String::from_utf8_lossy(&r.value) });
                serde_json::to_writer(&mut dead, &line).unwrap();
                dead.write_all(b"\n").unwrap();
                continue;
            }
        };
        if !plausible(&trip) {
            continue;
        }
        let key = trip.pickup_zone.to_string().into_bytes();
        let e = zones.entry(key).or_default();
        e.0 += 1;
        e.1 += (trip.total_amount * 100.0).round() as i64;
        writeln!(
            out,
            "{{\"zone\":{},\"trips\":{},\"revenue_cents\":{}}}",
            trip.pickup_zone, e.0, e.1
        )
        .unwrap();
    }
    out.flush().unwrap();
    dead.flush().unwrap();
    trips as f64 / started.elapsed().as_secs_f64()
}

fn sluice(trips: u64, parallelism: u32, dir: &std::path::Path) -> f64 {
    let pipeline = write_pipeline(
        dir,
        &format!(
            r#"
manifest_version = 1
name = "bench-taxi"

[[sources]]
name = "trips"
type = "generator"
seed = 42
count = {trips}

[[operators]]
name = "parse"
plugin = "{{plugins}}/taxi_parse.wasm"
input = "trips"
parallelism = {parallelism}
on_error = "dead-letter"

[[operators]]
name = "plausible"
plugin = "{{plugins}}/taxi_filter.wasm"
input = "parse"
parallelism = {parallelism}

[[operators]]
name = "zone-stats"
plugin = "{{plugins}}/taxi_zone_count.wasm"
input = "plausible"
key_by = "key"
parallelism = {parallelism}

[[sinks]]
name = "totals"
type = "file"
input = "zone-stats"
path = "sluice-totals.jsonl"

[[sinks]]
name = "dead"
type = "file"
input = "parse.dead-letter"
path = "sluice-dead.jsonl"
"#
        ),
    );
    let (summary, _) =
        run_in_process(&pipeline, &dir.join("state"), 1024).expect("the benchmark pipeline runs");
    assert_eq!(summary.records_in, trips);
    trips as f64 / summary.elapsed.as_secs_f64()
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let trips: u64 = std::env::var("SLUICE_BENCH_TRIPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rounds = 3;
    let dir = tempfile::tempdir().unwrap();
    // Warm up: compile the components into the cache, fault in the code.
    sluice(trips / 10, 1, dir.path());
    native(trips / 10, dir.path());

    let (mut n, mut s1, mut s2) = (vec![], vec![], vec![]);
    for round in 0..rounds {
        // Interleave so that machine noise hits all three alike.
        n.push(native(trips, dir.path()));
        s1.push(sluice(trips, 1, dir.path()));
        s2.push(sluice(trips, 2, dir.path()));
        eprintln!(
            "round {}: native {:.0}/s, sluice p=1 {:.0}/s, sluice p=2 {:.0}/s",
            round + 1,
            n[round],
            s1[round],
            s2[round]
        );
    }
    let (n, s1, s2) = (median(n), median(s1), median(s2));
    println!(
        "taxi parse+filter+count, {trips} trips, median of {rounds} rounds ({} cores)",
        std::thread::available_parallelism().map_or(0, |p| p.get())
    );
    println!("  native Rust (1 thread)        {n:>12.0} records/s");
    println!(
        "  sluice Wasm, parallelism 1    {s1:>12.0} records/s   ratio {:.2}x native",
        s1 / n
    );
    println!(
        "  sluice Wasm, parallelism 2    {s2:>12.0} records/s   ratio {:.2}x native",
        s2 / n
    );
}

//! What the sandbox's CPU limits cost: the taxi parser (JSON → trip) over the
//! same batches with no interruption, with epoch interruption (Sluice's
//! default), and with epoch plus fuel metering, in one run.
//!
//! ```text
//! cargo bench -p sluice-benches --bench sandbox
//! ```

use std::sync::Arc;
use std::time::Instant;

use sluice_connectors::datagen::{self, TaxiConfig};
use sluice_runtime::{wit, EngineOptions, Grants, InstanceConfig, Runtime};
use sluice_tests::plugins::examples;
use sluice_tests::{compile_cache, plugin};
use sluice_types::metrics::Metrics;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn batches(trips: u64) -> Vec<Vec<wit::Record>> {
    let config: TaxiConfig =
        serde_json::from_value(serde_json::json!({ "seed": 3, "count": trips })).unwrap();
    let records: Vec<wit::Record> = datagen::records(&config, 0)
        .map(|mut r| sluice_runtime::to_wit(&mut r))
        .collect();
    records.chunks(1024).map(|c| c.to_vec()).collect()
}

/// Records per second through the parser with these engine options.
fn measure(runtime: &Runtime, options: EngineOptions, input: &[Vec<wit::Record>]) -> f64 {
    let plugin = runtime
        .load_with(&plugin(examples::TAXI_PARSE), options, &Grants::default())
        .unwrap();
    let fuel = options.fuel.then_some(u64::MAX / 2);
    let config = InstanceConfig {
        fuel,
        ..InstanceConfig::new("parse")
    };
    let mut instance = plugin
        .instantiate(config, None, Arc::new(Metrics::default()))
        .unwrap();
    let started = Instant::now();
    let mut n = 0;
    for batch in input {
        let result = instance.process(batch).unwrap();
        n += batch.len();
        std::hint::black_box(result);
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let trips = std::env::var("SLUICE_BENCH_TRIPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let input = batches(trips);
    let runtime = Runtime::new(Some(compile_cache())).unwrap();
    let none = EngineOptions {
        epoch: false,
        fuel: false,
        ..EngineOptions::default()
    };
    let epoch = EngineOptions::default();
    let fuel = EngineOptions {
        fuel: true,
        ..EngineOptions::default()
    };
    // Warm up (compile into the cache).
    for o in [none, epoch, fuel] {
        measure(&runtime, o, &input[..input.len().min(20)]);
    }
    let rounds = 5;
    let (mut a, mut b, mut c) = (vec![], vec![], vec![]);
    for _ in 0..rounds {
        a.push(measure(&runtime, none, &input));
        b.push(measure(&runtime, epoch, &input));
        c.push(measure(&runtime, fuel, &input));
    }
    let (a, b, c) = (median(a), median(b), median(c));
    println!("taxi_parse over {trips} trips in batches of 1024, median of {rounds} rounds");
    println!("  no interruption        {a:>10.0} records/s");
    println!(
        "  epoch (default)        {b:>10.0} records/s   {:.3}x of none",
        b / a
    );
    println!(
        "  epoch + fuel           {c:>10.0} records/s   {:.3}x of none",
        c / a
    );
}

//! Shared support for Sluice's integration tests and benchmarks: where the
//! built plugins and the `sluice` binary are, and helpers to run pipelines.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use sluice_config::Pipeline;
use sluice_dataflow::{RunSummary, Settings, StopHandle};
use sluice_types::metrics::Metrics;
use sluice_world::Runtime;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The built component `plugins/dist/<name>.wasm`.
pub fn plugin(name: &str) -> PathBuf {
    let p = repo_root().join("plugins/dist").join(format!("{name}.wasm"));
    assert!(p.is_file(), "{} is missing: run scripts/build-plugins (scripts/test does)", p.display());
    p
}

/// The `sluice` binary next to this test binary (built by `scripts/test`).
pub fn sluice_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(|d| if d.ends_with("deps") { d.parent() } else { Some(d) }).expect("target dir");
    let bin = dir.join("sluice");
    assert!(bin.is_file(), "{} is missing: build it with `cargo build --release -p sluice-cli` (scripts/test does)", bin.display());
    bin
}

/// A shared compile cache for tests, so each component compiles once per run.
pub fn compile_cache() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent().expect("deps dir").join("sluice-test-compile-cache")
}

/// Run `sluice <args>` with the test compile cache; stdin closed.
pub fn sluice(args: &[&str], cwd: &Path) -> Output {
    Command::new(sluice_bin())
        .args(args)
        .current_dir(cwd)
        .env("SLUICE_COMPILE_CACHE", compile_cache())
        .env("SLUICE_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("sluice runs")
}

/// Write `text` as `pipeline.toml` in `dir`, with `{plugins}` replaced by
/// the absolute path of `plugins/dist`.
pub fn write_pipeline(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("pipeline.toml");
    let dist = repo_root().join("plugins/dist");
    std::fs::write(&path, text.replace("{plugins}", &dist.display().to_string())).expect("write pipeline");
    path
}

/// Run a pipeline in-process (library API), returning the summary and metrics.
pub fn run_in_process(pipeline_file: &Path, state_dir: &Path, batch_size: usize) -> Result<(RunSummary, Arc<Metrics>), String> {
    let pipeline = Pipeline::from_file(pipeline_file, &sluice_dataflow::connectors()).map_err(|e| e.to_string())?;
    let runtime = Runtime::new(Some(compile_cache())).map_err(|e| e.to_string())?;
    let mut plugins = HashMap::new();
    for op in &pipeline.operators {
        plugins.insert(op.name.clone(), sluice_dataflow::load_operator(&runtime, op).map_err(|e| e.to_string())?);
    }
    let settings = Settings { state_dir: state_dir.to_path_buf(), batch_size: Some(batch_size), ..Settings::default() };
    let metrics = Arc::new(Metrics::default());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(sluice_dataflow::THREAD_STACK_BYTES)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let summary = rt
        .block_on(sluice_dataflow::run(&pipeline, &plugins, &settings, metrics.clone(), StopHandle::default()))
        .map_err(|e| e.to_string())?;
    Ok((summary, metrics))
}

/// `sluice run --quiet --state-dir state <extra> pipeline.toml` in `dir`
/// (logging at info to a pipe), for tests that kill and restart it.
pub fn spawn_run(dir: &Path, extra: &[&str]) -> std::process::Child {
    run_command(dir, extra).spawn().expect("sluice starts")
}

/// The command [`spawn_run`] spawns, for tests that add to it (fault
/// injection through the environment).
pub fn run_command(dir: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(sluice_bin());
    c
        .args(["run", "--quiet", "--state-dir", "state"])
        .args(extra)
        .arg("pipeline.toml")
        .current_dir(dir)
        .env("SLUICE_COMPILE_CACHE", compile_cache())
        .env("SLUICE_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    c
}

/// Run to completion ([`spawn_run`]), asserting success; returns stderr.
pub fn finish_run(dir: &Path, extra: &[&str]) -> String {
    let out = spawn_run(dir, extra).wait_with_output().expect("sluice runs");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "sluice failed:\n{err}");
    err
}

/// SIGKILL a run; returns its stderr.
pub fn kill_run(mut child: std::process::Child) -> String {
    let _ = child.kill();
    let out = child.wait_with_output().expect("sluice was running");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A small deterministic generator (xorshift64) for kill times.
pub struct Rng(pub u64);

impl Rng {
    /// The next number below `below`.
    pub fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

/// The median of benchmark rounds (the upper one of an even count; NaN
/// for none).
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Read a JSON-lines file into values.
pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}"))).collect()
}

/// The taxi example's expected semantics, written down again from the spec
/// and shared by the golden test and the benchmark's native baseline. It is
/// deliberately not the plugins' code.
pub mod taxi {
    use serde::Deserialize;

    /// The trip schema (the generator's JSON).
    #[derive(Deserialize)]
    #[allow(missing_docs)]
    pub struct Trip {
        pub trip_id: u64,
        pub vendor_id: u8,
        pub pickup_ms: i64,
        pub dropoff_ms: i64,
        pub passenger_count: u32,
        pub trip_distance: f64,
        pub pickup_zone: u16,
        pub dropoff_zone: u16,
        pub pickup_lon: f64,
        pub pickup_lat: f64,
        pub dropoff_lon: f64,
        pub dropoff_lat: f64,
        pub fare_amount: f64,
        pub tip_amount: f64,
        pub total_amount: f64,
    }

    /// The plausibility rules of `taxi-filter` with its default limits.
    pub fn plausible(t: &Trip) -> bool {
        (1..=6).contains(&t.passenger_count)
            && t.trip_distance > 0.0
            && t.trip_distance <= 100.0
            && t.fare_amount > 0.0
            && t.fare_amount <= 500.0
            && t.dropoff_ms > t.pickup_ms
            && t.dropoff_ms - t.pickup_ms <= 6 * 3600 * 1000
            && t.total_amount >= t.fare_amount
    }

    /// The trip, if `json` is one with both zones in range (what `taxi-parse` accepts).
    pub fn parse(json: &[u8]) -> Option<Trip> {
        serde_json::from_slice::<Trip>(json)
            .ok()
            .filter(|t| (1..=265).contains(&t.pickup_zone) && (1..=265).contains(&t.dropoff_zone))
    }
}

/// A real Kafka broker for tests: `scripts/test` starts one with
/// `scripts/kafka start` (127.0.0.1:9092, or `SLUICE_KAFKA_BOOTSTRAP`).
pub mod kafka {
    use std::sync::Arc;

    use sluice_kafka::KafkaSourceConfig;
    use sluice_types::{Record, Source};

    /// The test broker's bootstrap address.
    pub fn bootstrap() -> String {
        std::env::var("SLUICE_KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into())
    }

    /// A topic name no other test or run uses.
    pub fn unique_topic(prefix: &str) -> String {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        format!("{prefix}-{}-{nanos}", std::process::id())
    }

    /// Topics a test made, deleted when it ends (pass or fail), so that
    /// repeated runs do not fill the development broker's disk.
    pub struct Topics {
        bootstrap: String,
        names: Vec<String>,
    }

    impl Topics {
        /// Nothing yet, on `bootstrap`.
        pub fn on(bootstrap: &str) -> Self {
            Topics { bootstrap: bootstrap.to_string(), names: Vec::new() }
        }

        /// Create a uniquely named topic starting with `prefix`.
        pub fn create(&mut self, prefix: &str, partitions: usize) -> String {
            let name = unique_topic(prefix);
            create_topic(&self.bootstrap, &name, partitions);
            self.names.push(name.clone());
            name
        }
    }

    impl Drop for Topics {
        fn drop(&mut self) {
            let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
            if let Err(e) = sluice_kafka::admin::delete_topics(&self.bootstrap, &names) {
                eprintln!("warning: could not delete test topics {names:?}: {e}");
            }
        }
    }

    /// Create `topic` with `partitions` partitions.
    pub fn create_topic(bootstrap: &str, topic: &str, partitions: usize) {
        sluice_kafka::admin::ensure_topic(bootstrap, topic, partitions).unwrap_or_else(|e| panic!("creating topic {topic} on {bootstrap} (is the broker up? scripts/kafka start): {e}"));
    }

    /// Every record of `topic` up to its current end, as a `read_committed`
    /// consumer sees them (or all, with `read_committed = false`), in
    /// partition order.
    pub fn read_topic(bootstrap: &str, topic: &str, read_committed: bool) -> Vec<Record> {
        let config = KafkaSourceConfig {
            bootstrap: bootstrap.to_string(),
            topic: topic.to_string(),
            group: Some(format!("sluice-tests.reader.{}", super::kafka::unique_topic("g"))),
            start: Default::default(),
            stop_at_end: true,
            read_committed,
            timestamps: true,
            properties: Default::default(),
        };
        let mut source = sluice_kafka::KafkaSource::new(&config, "tests", "reader", 0, sluice_kafka::Subtask::default(), Arc::default()).expect("reader");
        let mut all = Vec::new();
        while let Some(batch) = source.poll_batch(4096).expect("read") {
            all.extend(batch);
        }
        all.sort_by_key(|r| r.position.map(|p| (p.split, p.offset)));
        all
    }
}

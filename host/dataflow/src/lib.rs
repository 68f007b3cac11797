//! The Sluice dataflow: sources → operators → sinks.
//!
//! [`run`] turns a validated [`Pipeline`] into running nodes. Each source,
//! each parallel subtask of an operator, and each sink is one blocking task on
//! the tokio runtime (Wasm calls and RocksDB calls block, so they stay off the
//! async workers). Nodes talk through bounded tokio channels of batches, so a
//! slow sink backpressures the whole pipeline back to its sources.
//!
//! A record's path: a source polls a batch and hands it to its
//! [router](router::Router), which partitions it over the consumers'
//! subtasks (by key group for keyed operators). An operator subtask moves the
//! batch into the contract's record type, calls the plugin once per batch,
//! routes the emits by output, and applies its error policy to records that
//! failed. Sinks write and flush. End of input travels as [`Message::End`]:
//! a node finishes when every producer feeding it has sent one.
#![deny(missing_docs)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_config::{ErrorPolicy, OperatorSpec, Pipeline, SinkKind, SourceKind, DEAD_LETTER_OUTPUT};
use sluice_connectors::{FileSink, FileSource, StdoutSink, TaxiGenerator};
use sluice_state::StateBackend;
use sluice_types::metrics::{Metrics, NodeCounters};
use sluice_types::{Header, Message, Position, Record, Sink, Source};
use sluice_world::{wit, CallError, EngineOptions, InstanceConfig, LoadError, Plugin, Runtime};
use tokio::sync::mpsc::{channel, Receiver, Sender};

mod router;

use router::{Partition, Router, Target};

/// Why a pipeline stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DataflowError {
    /// A record failed in an operator whose policy is `fail`.
    #[error("operator `{operator}` (plugin {plugin}) failed on the record at {position}: {message}\n  help: fix the input or the plugin, or set on_error = \"skip\" or \"dead-letter\" on `{operator}` to keep going")]
    RecordFailed {
        /// Operator name.
        operator: String,
        /// Plugin file and digest.
        plugin: String,
        /// Where the record came from.
        position: String,
        /// The error.
        message: String,
    },
    /// A plugin could not be instantiated or initialised.
    #[error("operator `{operator}` (plugin {plugin}): {source}")]
    Instantiate {
        /// Operator name.
        operator: String,
        /// Plugin file.
        plugin: String,
        /// The failure.
        #[source]
        source: CallError,
    },
    /// A source or sink failed.
    #[error("`{node}`: {source}")]
    Connector {
        /// Node name.
        node: String,
        /// The failure.
        #[source]
        source: sluice_types::ConnectorError,
    },
    /// Keyed state failed.
    #[error("operator `{node}`: state: {source}")]
    State {
        /// Node name.
        node: String,
        /// The failure.
        #[source]
        source: sluice_state::StateError,
    },
    /// A neighbour stopped (because of an error reported separately, or a bug).
    #[error("`{node}`: `{peer}` stopped unexpectedly")]
    Disconnected {
        /// This node.
        node: String,
        /// The neighbour.
        peer: String,
    },
    /// A plugin named in the pipeline was not loaded.
    #[error("operator `{0}`: its plugin was not loaded")]
    MissingPlugin(String),
    /// A node task panicked (a bug in Sluice).
    #[error("internal error in `{node}`: {message}")]
    Internal {
        /// Node name.
        node: String,
        /// Panic message.
        message: String,
    },
}

/// Stack size of the threads that run guests: above the largest Wasm stack an
/// operator may ask for (`limits.stack_kb`), with room for the host's frames.
pub const THREAD_STACK_BYTES: usize = 8 << 20;

/// The engine options an operator's limits call for.
pub fn engine_options(op: &OperatorSpec) -> EngineOptions {
    EngineOptions { stack_bytes: (op.limits.stack_kb as usize) << 10, fuel: op.limits.fuel.is_some(), ..EngineOptions::default() }
}

/// Load (compile, check, pre-instantiate) the plugin of `op` with its limits
/// and grants.
pub fn load_operator(runtime: &Runtime, op: &OperatorSpec) -> Result<Arc<Plugin>, LoadError> {
    runtime.load_with(&op.plugin, engine_options(op), &op.grants)
}

/// Process-level settings (flags and environment, not pipeline).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Directory under which the pipeline's state lives (`<dir>/<pipeline>/state`).
    pub state_dir: PathBuf,
    /// Write-back cache budget for all keyed state, in bytes.
    pub cache_bytes: usize,
    /// Records per batch.
    pub batch_size: usize,
    /// Batches buffered per channel.
    pub channel_capacity: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { state_dir: PathBuf::from(".sluice"), cache_bytes: 256 << 20, batch_size: 1024, channel_capacity: 16 }
    }
}

/// What a finished run did.
#[derive(Clone, Debug)]
pub struct RunSummary {
    /// Wall-clock time.
    pub elapsed: Duration,
    /// Records produced by all sources.
    pub records_in: u64,
    /// Records written by all sinks.
    pub records_out: u64,
    /// Records sent to dead-letter outputs.
    pub dead_letters: u64,
}

/// A cooperative stop signal: sources stop reading and the pipeline drains.
#[derive(Clone, Default)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    /// Ask the sources to stop; what was read is still processed and written.
    pub fn stop(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn stopped(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Consumer-side wiring of one node: its receivers and how many `End`s each
/// subtask must see before it is done.
struct Inbox {
    receivers: Vec<Receiver<Message>>,
    expected_ends: usize,
}

/// Run `pipeline` to completion (bounded sources) or until `stop`.
pub async fn run(
    pipeline: &Pipeline,
    plugins: &HashMap<String, Arc<Plugin>>,
    settings: &Settings,
    metrics: Arc<Metrics>,
    stop: StopHandle,
) -> Result<RunSummary, DataflowError> {
    let started = Instant::now();
    let cap = settings.channel_capacity.max(1);

    // Subtask counts of every producer, by stream head.
    let mut producers: HashMap<&str, usize> = HashMap::new();
    for s in &pipeline.sources {
        producers.insert(&s.name, 1);
    }
    for o in &pipeline.operators {
        producers.insert(&o.name, o.parallelism as usize);
    }
    let head = |stream: &str| stream.split('.').next().unwrap_or(stream).to_string();

    // Channels: one per consumer subtask. Collect senders per (stream, consumer).
    let mut inboxes: HashMap<String, Inbox> = HashMap::new();
    // stream name -> list of (consumer name, senders, partition)
    let mut wiring: HashMap<String, Vec<(String, Vec<Sender<Message>>, Option<usize>, bool)>> = HashMap::new();
    let consumers = pipeline
        .operators
        .iter()
        .map(|o| (o.name.clone(), o.inputs.clone(), o.parallelism as usize, o.key_by.is_some()))
        .chain(pipeline.sinks.iter().map(|s| (s.name.clone(), s.inputs.clone(), 1, false)));
    for (name, inputs, parallelism, keyed) in consumers {
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..parallelism).map(|_| channel::<Message>(cap)).unzip();
        let expected_ends = inputs.iter().map(|i| producers.get(head(i).as_str()).copied().unwrap_or(0)).sum();
        inboxes.insert(name.clone(), Inbox { receivers: rxs, expected_ends });
        for input in inputs {
            let producer_parallelism = producers.get(head(&input).as_str()).copied();
            wiring.entry(input).or_default().push((name.clone(), txs.clone(), producer_parallelism, keyed));
        }
    }

    // A router for producer subtask `subtask` of node `node`.
    let router_for = |node: &str, subtask: usize| -> Router {
        let targets = |stream: &str| -> Vec<Target> {
            wiring
                .get(stream)
                .map(|v| {
                    v.iter()
                        .map(|(consumer, senders, producer_par, keyed)| {
                            let partition = if *keyed {
                                Partition::Keyed
                            } else if Some(senders.len()) == *producer_par {
                                Partition::Forward
                            } else {
                                Partition::RoundRobin
                            };
                            Target::new(consumer.clone(), senders.clone(), partition)
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let prefix = format!("{node}.");
        let sides = wiring
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .map(|side| (side.to_string(), targets(&format!("{node}.{side}"))))
            .collect();
        Router::new(node, subtask, settings.batch_size, targets(node), sides)
    };

    let keyed_subtasks: usize = pipeline.operators.iter().filter(|o| o.key_by.is_some()).map(|o| o.parallelism as usize).sum();
    let backend = if keyed_subtasks > 0 {
        let dir = settings.state_dir.join(&pipeline.name).join("state");
        tracing::info!("keyed state in {} (no checkpoint to restore: starting empty)", dir.display());
        Some(StateBackend::open(&dir, true).map_err(|source| DataflowError::State { node: pipeline.name.clone(), source })?)
    } else {
        None
    };
    let cache_per_subtask = settings.cache_bytes / keyed_subtasks.max(1);

    let mut tasks: Vec<(String, tokio::task::JoinHandle<Result<(), DataflowError>>)> = Vec::new();

    for (index, spec) in pipeline.sources.iter().enumerate() {
        let source: Box<dyn Source> = match &spec.kind {
            SourceKind::Generator(c) => Box::new(TaxiGenerator::new(c, index as u16).map_err(|source| DataflowError::Connector { node: spec.name.clone(), source })?),
            SourceKind::File(c) => Box::new(FileSource::new(c, index as u16).map_err(|source| DataflowError::Connector { node: spec.name.clone(), source })?),
        };
        let mut router = router_for(&spec.name, 0);
        let counters = metrics.node(&spec.name);
        let (name, stop, batch) = (spec.name.clone(), stop.clone(), settings.batch_size);
        tasks.push((name.clone(), tokio::task::spawn_blocking(move || run_source(&name, source, &mut router, &counters, &stop, batch))));
    }

    for op in &pipeline.operators {
        let plugin = plugins.get(&op.name).cloned().ok_or_else(|| DataflowError::MissingPlugin(op.name.clone()))?;
        let inbox = inboxes.remove(&op.name).expect("every operator has an inbox");
        let source_names: Arc<Vec<String>> = Arc::new(pipeline.sources.iter().map(|s| s.name.clone()).collect());
        for (subtask, rx) in inbox.receivers.into_iter().enumerate() {
            let state = match (&backend, op.key_by) {
                (Some(b), Some(_)) => Some(b.operator(&op.name, cache_per_subtask).map_err(|source| DataflowError::State { node: op.name.clone(), source })?),
                _ => None,
            };
            let config = InstanceConfig {
                operator: op.name.clone(),
                subtask: subtask as u32,
                parallelism: op.parallelism,
                params: op.params.to_string(),
                memory_bytes: (op.limits.memory_mb as usize) << 20,
                deadline_ms: op.limits.deadline_ms,
                fuel: op.limits.fuel,
            };
            let task = OperatorTask {
                spec: op.clone(),
                plugin: plugin.clone(),
                router: router_for(&op.name, subtask),
                counters: metrics.node(&op.name),
                source_names: source_names.clone(),
                subtask,
            };
            let (expected, metrics) = (inbox.expected_ends, metrics.clone());
            let name = format!("{}[{subtask}]", op.name);
            tasks.push((name, tokio::task::spawn_blocking(move || task.run(config, state, metrics, rx, expected))));
        }
    }

    for spec in &pipeline.sinks {
        let mut inbox = inboxes.remove(&spec.name).expect("every sink has an inbox");
        let sink: Box<dyn Sink> = match &spec.kind {
            SinkKind::File(c) => Box::new(FileSink::new(c).map_err(|source| DataflowError::Connector { node: spec.name.clone(), source })?),
            SinkKind::Stdout(c) => Box::new(StdoutSink::new(c)),
        };
        let rx = inbox.receivers.pop().expect("a sink has one subtask");
        let counters = metrics.node(&spec.name);
        let (name, expected) = (spec.name.clone(), inbox.expected_ends);
        tasks.push((name.clone(), tokio::task::spawn_blocking(move || run_sink(&name, sink, rx, expected, &counters))));
    }
    // Only the routers hold senders now: a node's channel closes when all its producers are gone.
    drop(wiring);

    let mut first_error: Option<DataflowError> = None;
    for (name, task) in tasks {
        let result = match task.await {
            Ok(r) => r,
            Err(e) => Err(DataflowError::Internal { node: name, message: e.to_string() }),
        };
        if let Err(e) = result {
            // Nodes stop on their own error and cancel their neighbours; keep
            // the root cause, not the disconnections it caused.
            stop.stop();
            let replace = match (&first_error, &e) {
                (None, _) => true,
                (Some(DataflowError::Disconnected { .. }), DataflowError::Disconnected { .. }) => false,
                (Some(DataflowError::Disconnected { .. }), _) => true,
                _ => false,
            };
            if replace {
                first_error = Some(e);
            }
        }
    }
    if let Some(b) = &backend {
        b.flush_to_disk().map_err(|source| DataflowError::State { node: pipeline.name.clone(), source })?;
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let sum = |names: &mut dyn Iterator<Item = &String>, f: fn(&NodeCounters) -> u64| names.map(|n| f(&metrics.node(n))).sum::<u64>();
    Ok(RunSummary {
        elapsed: started.elapsed(),
        records_in: sum(&mut pipeline.sources.iter().map(|s| &s.name), |c| c.records_out.get()),
        records_out: sum(&mut pipeline.sinks.iter().map(|s| &s.name), |c| c.records_in.get()),
        dead_letters: sum(&mut pipeline.operators.iter().map(|o| &o.name), |c| c.dead_letters.get()),
    })
}

fn run_source(name: &str, mut source: Box<dyn Source>, router: &mut Router, counters: &NodeCounters, stop: &StopHandle, batch: usize) -> Result<(), DataflowError> {
    while !stop.stopped() {
        let Some(records) = source.poll_batch(batch).map_err(|source| DataflowError::Connector { node: name.to_string(), source })? else {
            break;
        };
        counters.records_out.inc_by(records.len() as u64);
        for r in records {
            router.push(None, r)?;
        }
        router.flush()?;
    }
    router.finish()
}

fn run_sink(name: &str, mut sink: Box<dyn Sink>, mut rx: Receiver<Message>, expected_ends: usize, counters: &NodeCounters) -> Result<(), DataflowError> {
    let mut ends = 0;
    let err = |source| DataflowError::Connector { node: name.to_string(), source };
    while ends < expected_ends {
        match rx.blocking_recv() {
            Some(Message::Batch(records)) => {
                sink.write(&records).map_err(err)?;
                counters.records_in.inc_by(records.len() as u64);
            }
            Some(Message::End) => ends += 1,
            None => return Err(DataflowError::Disconnected { node: name.to_string(), peer: "an upstream node".into() }),
        }
    }
    sink.flush().map_err(err)
}

/// One parallel subtask of an operator.
struct OperatorTask {
    spec: OperatorSpec,
    plugin: Arc<Plugin>,
    router: Router,
    counters: NodeCounters,
    source_names: Arc<Vec<String>>,
    subtask: usize,
}

impl OperatorTask {
    fn plugin_label(&self) -> String {
        let info = self.plugin.info();
        let file = info.path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        format!("{file} sha256:{}", &info.digest[..12])
    }

    fn run(mut self, config: InstanceConfig, state: Option<sluice_state::OperatorState>, metrics: Arc<Metrics>, mut rx: Receiver<Message>, expected_ends: usize) -> Result<(), DataflowError> {
        let mut instance = self.plugin.instantiate(config, state, metrics).map_err(|source| DataflowError::Instantiate {
            operator: self.spec.name.clone(),
            plugin: self.plugin.info().path.display().to_string(),
            source,
        })?;
        let mut ends = 0;
        while ends < expected_ends {
            match rx.blocking_recv() {
                Some(Message::Batch(records)) => self.process(&mut instance, records)?,
                Some(Message::End) => ends += 1,
                None => return Err(DataflowError::Disconnected { node: self.spec.name.clone(), peer: "an upstream node".into() }),
            }
        }
        if let Some(state) = instance.state_mut() {
            state.flush().map_err(|source| DataflowError::State { node: self.spec.name.clone(), source })?;
        }
        self.router.finish()
    }

    fn process(&mut self, instance: &mut sluice_world::Instance, records: Vec<Record>) -> Result<(), DataflowError> {
        self.counters.records_in.inc_by(records.len() as u64);
        let keyed = self.spec.key_by.is_some();
        let mut positions = Vec::with_capacity(records.len());
        let mut batch = Vec::with_capacity(records.len());
        let max = self.max_record_bytes();
        for mut r in records {
            if keyed && r.key.is_none() {
                let msg = format!("the record has no key, but operator `{}` is keyed (key_by = \"key\"); the upstream operator must set one", self.spec.name);
                self.on_error(sluice_world::to_wit(&mut r), r.position, msg)?;
                continue;
            }
            if r.size_bytes() > max {
                let msg = format!("the record is {} bytes, over the operator's limits.max_record_kb = {}", r.size_bytes(), self.spec.limits.max_record_kb);
                self.on_error(sluice_world::to_wit(&mut r), r.position, msg)?;
                continue;
            }
            positions.push(r.position);
            batch.push(sluice_world::to_wit(&mut r));
        }
        if batch.is_empty() {
            return Ok(());
        }
        match instance.process(&batch) {
            Ok(result) => self.route(result, &positions, &batch)?,
            Err(e) => {
                // Isolate the poison record: the failed call's state writes
                // were rolled back; retry one record at a time on a fresh instance.
                self.trapped(instance, &e)?;
                if batch.len() == 1 {
                    let r = batch.pop().expect("one record");
                    self.on_error(r, positions[0], e.to_string())?;
                } else {
                    for i in 0..batch.len() {
                        match instance.process(&batch[i..i + 1]) {
                            Ok(result) => self.route(result, &positions[i..i + 1], &batch[i..i + 1])?,
                            Err(e) => {
                                self.trapped(instance, &e)?;
                                self.on_error(batch[i].clone(), positions[i], e.to_string())?;
                            }
                        }
                    }
                }
            }
        }
        if let Some(state) = instance.state_mut() {
            state.maintain().map_err(|source| DataflowError::State { node: self.spec.name.clone(), source })?;
        }
        self.router.flush()
    }

    fn trapped(&mut self, instance: &mut sluice_world::Instance, e: &CallError) -> Result<(), DataflowError> {
        self.counters.traps.inc();
        if let CallError::Deadline { .. } = e {
            self.counters.timeouts.inc();
        }
        tracing::debug!(operator = %self.spec.name, subtask = self.subtask, "guest call failed: {e}");
        instance.reset().map_err(|source| DataflowError::Instantiate {
            operator: self.spec.name.clone(),
            plugin: self.plugin.info().path.display().to_string(),
            source,
        })
    }

    /// Route the emits of a successful call over `batch`.
    fn route(&mut self, result: wit::BatchResult, positions: &[Option<Position>], batch: &[wit::Record]) -> Result<(), DataflowError> {
        let mut out = 0u64;
        let max = self.max_record_bytes();
        for emit in result.emits {
            // Every emit must name an input of this batch: its provenance
            // (and later its checkpoint position) comes from there.
            let Some(original) = batch.get(emit.input as usize) else {
                return Err(self.bad_index(emit.input, batch.len(), "an emit"));
            };
            let position = positions.get(emit.input as usize).copied().flatten();
            let record = sluice_world::from_wit(emit.record, position);
            if record.size_bytes() > max {
                let msg = format!("emitted a record of {} bytes, over the operator's limits.max_record_kb = {}", record.size_bytes(), self.spec.limits.max_record_kb);
                self.on_error(original.clone(), position, msg)?;
                continue;
            }
            match &emit.output {
                wit::Output::Main => self.router.push(None, record)?,
                wit::Output::Side(name) => self.router.push(Some(name), record)?,
            }
            out += 1;
        }
        self.counters.records_out.inc_by(out);
        for err in result.errors {
            let i = err.input as usize;
            let Some(original) = batch.get(i) else {
                return Err(self.bad_index(err.input, batch.len(), &err.message));
            };
            self.on_error(original.clone(), positions.get(i).copied().flatten(), err.message)?;
        }
        Ok(())
    }

    fn max_record_bytes(&self) -> usize {
        (self.spec.limits.max_record_kb as usize) << 10
    }

    /// A plugin that names an input index outside the batch is broken.
    fn bad_index(&self, index: u32, len: usize, what: &str) -> DataflowError {
        DataflowError::RecordFailed {
            operator: self.spec.name.clone(),
            plugin: self.plugin_label(),
            position: "an unknown position".into(),
            message: format!("the plugin referred to input {index} of a batch of {len} ({what}); the plugin is broken"),
        }
    }

    fn describe(&self, position: Option<Position>) -> String {
        match position {
            Some(p) => {
                let source = self.source_names.get(p.source as usize).map(String::as_str).unwrap_or("?");
                format!("source `{source}` split {} offset {}", p.split, p.offset)
            }
            None => "an unknown position".into(),
        }
    }

    /// Apply the operator's error policy to one record.
    fn on_error(&mut self, record: wit::Record, position: Option<Position>, message: String) -> Result<(), DataflowError> {
        self.counters.record_errors.inc();
        match self.spec.on_error {
            ErrorPolicy::Fail => Err(DataflowError::RecordFailed {
                operator: self.spec.name.clone(),
                plugin: self.plugin_label(),
                position: self.describe(position),
                message,
            }),
            ErrorPolicy::Skip => {
                self.counters.skipped.inc();
                tracing::debug!(operator = %self.spec.name, "skipped record at {}: {message}", self.describe(position));
                Ok(())
            }
            ErrorPolicy::DeadLetter => {
                self.counters.dead_letters.inc();
                let dl = self.dead_letter(record, position, &message);
                self.router.push(Some(DEAD_LETTER_OUTPUT), dl)
            }
        }
    }

    /// A dead-letter record: the original bytes plus provenance, as a JSON
    /// value and as `sluice.*` headers.
    fn dead_letter(&self, original: wit::Record, position: Option<Position>, error: &str) -> Record {
        use base64::Engine as _;
        let info = self.plugin.info();
        let source = position.and_then(|p| self.source_names.get(p.source as usize).cloned());
        let mut value = serde_json::json!({
            "operator": self.spec.name,
            "subtask": self.subtask,
            "plugin": info.path.file_name().map(|f| f.to_string_lossy().into_owned()),
            "plugin_digest": format!("sha256:{}", info.digest),
            "error": error,
            "source": source,
            "split": position.map(|p| p.split),
            "offset": position.map(|p| p.offset),
            "event_time": original.event_time,
        });
        let text = |b: &[u8]| match std::str::from_utf8(b) {
            Ok(s) => serde_json::json!({ "utf8": s }),
            Err(_) => serde_json::json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) }),
        };
        value["key"] = original.key.as_deref().map(text).unwrap_or(serde_json::Value::Null);
        value["value"] = text(&original.value);
        let mut headers = vec![
            Header { name: "sluice.operator".into(), value: self.spec.name.clone().into_bytes() },
            Header { name: "sluice.plugin-digest".into(), value: info.digest.clone().into_bytes() },
            Header { name: "sluice.error".into(), value: error.as_bytes().to_vec() },
        ];
        if let Some(p) = position {
            headers.push(Header { name: "sluice.source".into(), value: source.unwrap_or_default().into_bytes() });
            headers.push(Header { name: "sluice.split".into(), value: p.split.to_string().into_bytes() });
            headers.push(Header { name: "sluice.offset".into(), value: p.offset.to_string().into_bytes() });
        }
        Record {
            key: original.key,
            value: serde_json::to_vec(&value).expect("a JSON value always serializes"),
            event_time: original.event_time,
            headers,
            position,
        }
    }
}

//! An instantiated operator: [`Instance`], one per operator subtask, in its
//! own `Store` with a memory cap, a CPU deadline and (if loaded with fuel) a
//! fuel budget per call; the calls into its exports (`process`, `on-timer`,
//! the aggregator's), each journaled so that a failed call leaves no state
//! behind; and [`InstanceConfig`], its settings. Hot swaps of an instance are
//! in `swap.rs`.

use std::sync::Arc;
use std::time::Duration;

use sluice_state::OperatorState;
use sluice_types::metrics::Metrics;
use wasmtime::component::ResourceTable;
use wasmtime::Store;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi_http::WasiHttpCtx;

use crate::bindings::{wit, Exports, Guest};
use crate::error::CallError;
use crate::plugin::{OperatorKind, Plugin};
use crate::sandbox::{self, HttpAllowlist};
use crate::store::{StoreData, TimerOp};

/// Settings of one operator instance.
#[derive(Clone, Debug)]
pub struct InstanceConfig {
    /// Operator name.
    pub operator: String,
    /// Subtask index.
    pub subtask: u32,
    /// Operator parallelism.
    pub parallelism: u32,
    /// The operator's params as a JSON object.
    pub params: String,
    /// Linear-memory cap in bytes.
    pub memory_bytes: usize,
    /// CPU deadline per call in milliseconds.
    pub deadline_ms: u64,
    /// Fuel per call, if the plugin was loaded with fuel metering.
    pub fuel: Option<u64>,
    /// The pipeline's source names by index, to name a record's source.
    pub sources: Arc<[String]>,
}

impl InstanceConfig {
    /// Defaults: subtask 0 of 1, no params, 64 MiB, 1 s.
    pub fn new(operator: &str) -> Self {
        InstanceConfig {
            operator: operator.to_string(),
            subtask: 0,
            parallelism: 1,
            params: "{}".into(),
            memory_bytes: 64 << 20,
            deadline_ms: 1000,
            fuel: None,
            sources: Arc::from(Vec::new()),
        }
    }
}

impl Plugin {
    /// A new instance, initialised. `state` is the subtask's keyed state, or
    /// `None` for an operator that is not keyed.
    pub fn instantiate(
        self: &Arc<Self>,
        config: InstanceConfig,
        state: Option<OperatorState>,
        metrics: Arc<Metrics>,
    ) -> Result<Instance, CallError> {
        self.instantiate_keeping(config, state, metrics)
            .map_err(|(e, _)| e)
    }

    /// [`instantiate`](Plugin::instantiate), handing the keyed state back
    /// when it fails (a hot swap keeps the old instance running on it).
    // The keyed state travels back by value on the rare failure (a refused
    // swap); boxing it would only add an allocation to every error.
    #[allow(clippy::result_large_err)]
    pub fn instantiate_keeping(
        self: &Arc<Self>,
        config: InstanceConfig,
        state: Option<OperatorState>,
        metrics: Arc<Metrics>,
    ) -> Result<Instance, (CallError, Option<OperatorState>)> {
        let stderr = MemoryOutputPipe::new(256 << 10);
        let wasi = match sandbox::wasi_ctx(&self.grants, stderr.clone()) {
            Ok(wasi) => wasi,
            Err(e) => return Err((e, state)),
        };
        if self.fuel && config.fuel.is_none() {
            return Err((
                CallError::Init(
                    "the plugin was loaded with fuel metering but the instance has no fuel budget"
                        .into(),
                ),
                state,
            ));
        }
        let limits = sandbox::store_limits(config.memory_bytes);
        let data = StoreData {
            wasi,
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            http_hooks: HttpAllowlist {
                hosts: self.grants.http.clone(),
                timeout: Duration::from_millis(config.deadline_ms),
            },
            limits,
            stderr,
            operator: config.operator.clone(),
            subtask: config.subtask,
            metrics,
            state,
            keys: Vec::new(),
            key_bytes: Vec::new(),
            current: 0,
            watermark: i64::MIN,
            record_watermarks: Vec::new(),
            positions: Vec::new(),
            sources: config.sources.clone(),
            hold: false,
            held_counts: Vec::new(),
            timer_ops: Vec::new(),
        };
        let mut store = Store::new(&self.engine, data);
        store.limiter(|s| &mut s.limits);
        // What one call may make the host copy out of the guest: no more than
        // the guest's own memory cap, even through aliased lists.
        store.set_hostcall_fuel(config.memory_bytes);
        let deadline_ticks = sandbox::deadline_ticks(config.deadline_ms);
        store.set_epoch_deadline(deadline_ticks);
        let built = (|| -> Result<Guest, CallError> {
            if let Some(fuel) = config.fuel {
                store
                    .set_fuel(fuel)
                    .map_err(|e| CallError::Init(format!("{e:#}")))?;
            }
            let instance = self
                .pre
                .instantiate(&mut store)
                .map_err(|e| classify(e, &store, &config))?;
            Ok(match &self.exports {
                Exports::Process {
                    processor,
                    timers,
                    migrator,
                } => Guest::Process {
                    processor: processor
                        .load(&mut store, &instance)
                        .map_err(|e| classify(e, &store, &config))?,
                    timers: match timers {
                        Some(t) => Some(
                            t.load(&mut store, &instance)
                                .map_err(|e| classify(e, &store, &config))?,
                        ),
                        None => None,
                    },
                    migrator: match migrator {
                        Some(m) => Some(
                            m.load(&mut store, &instance)
                                .map_err(|e| classify(e, &store, &config))?,
                        ),
                        None => None,
                    },
                },
                Exports::Window(a) => Guest::Window(
                    a.load(&mut store, &instance)
                        .map_err(|e| classify(e, &store, &config))?,
                ),
            })
        })();
        let guest = match built {
            Ok(g) => g,
            Err(e) => return Err((e, store.into_data().state)),
        };
        let mut instance = Instance {
            store,
            guest,
            plugin: self.clone(),
            config,
            deadline_ticks,
        };
        match instance.init() {
            Ok(()) => Ok(instance),
            Err(e) => Err((e, instance.store.into_data().state)),
        }
    }
}

/// Turn a wasmtime error into a [`CallError`], with the guest's last stderr
/// lines (a Rust panic message, typically) appended.
pub(crate) fn classify(
    e: wasmtime::Error,
    store: &Store<StoreData>,
    config: &InstanceConfig,
) -> CallError {
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => {
            return CallError::Deadline {
                deadline_ms: config.deadline_ms,
            }
        }
        Some(wasmtime::Trap::OutOfFuel) => {
            return CallError::Fuel {
                fuel: config.fuel.unwrap_or(0),
            }
        }
        _ => {}
    }
    let mut msg = format!("{e:#}");
    if msg.contains("growing memory") {
        return CallError::Memory {
            limit_mb: config.memory_bytes >> 20,
        };
    }
    let err = store.data().stderr.contents();
    if !err.is_empty() {
        let text = String::from_utf8_lossy(&err);
        let tail: String = text
            .lines()
            .rev()
            .take(4)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join(" | ");
        msg.push_str(&format!(" (guest stderr: {tail})"));
    }
    CallError::Trap(msg)
}

/// A running instance of an operator plugin, owned by one subtask.
pub struct Instance {
    pub(crate) store: Store<StoreData>,
    pub(crate) guest: Guest,
    pub(crate) plugin: Arc<Plugin>,
    pub(crate) config: InstanceConfig,
    pub(crate) deadline_ticks: u64,
}

/// A call on an export the plugin does not have: a bug in the caller, as the
/// dataflow checks the kind of operator against the pipeline first.
fn missing(what: &str) -> CallError {
    CallError::Trap(format!("the plugin does not export {what}"))
}

impl Instance {
    fn init(&mut self) -> Result<(), CallError> {
        let ctx = wit::InitContext {
            operator: self.config.operator.clone(),
            subtask: self.config.subtask,
            parallelism: self.config.parallelism,
            params: self.config.params.clone(),
        };
        self.arm()?;
        let result = match &self.guest {
            Guest::Process { processor, .. } => processor.call_init(&mut self.store, &ctx),
            Guest::Window(a) => a.call_init(&mut self.store, &ctx),
        };
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(msg)) => Err(CallError::Init(msg)),
            Err(e) => Err(classify(e, &self.store, &self.config)),
        }
    }

    /// The kind of operator this instance is.
    pub fn kind(&self) -> OperatorKind {
        match &self.guest {
            Guest::Process { timers: None, .. } => OperatorKind::Process,
            Guest::Process {
                timers: Some(_), ..
            } => OperatorKind::KeyedProcess,
            Guest::Window(_) => OperatorKind::Window,
        }
    }

    /// Reset the per-call budgets: deadline and fuel.
    pub(crate) fn arm(&mut self) -> Result<(), CallError> {
        self.store.set_epoch_deadline(self.deadline_ticks);
        if let Some(fuel) = self.config.fuel {
            self.store
                .set_fuel(fuel)
                .map_err(|e| CallError::Trap(format!("{e:#}")))?;
        }
        Ok(())
    }

    /// Make `keys` the keys of the call's inputs (for keyed state and
    /// timers), and start journaling state writes.
    fn begin<'a>(&mut self, keys: impl Iterator<Item = Option<&'a [u8]>>) {
        let data = self.store.data_mut();
        data.keys.clear();
        data.key_bytes.clear();
        data.timer_ops.clear();
        data.current = 0;
        if let Some(state) = &mut data.state {
            for k in keys {
                data.keys.push(k.map(|k| {
                    let start = data.key_bytes.len() as u32;
                    data.key_bytes.extend_from_slice(k);
                    (
                        sluice_state::keygroup::key_group(
                            k,
                            sluice_state::keygroup::MAX_PARALLELISM,
                        ),
                        start,
                        k.len() as u32,
                    )
                }));
            }
            state.begin_call();
        } else {
            data.keys.extend(keys.map(|_| None));
        }
    }

    /// Keep the call's state writes if it succeeded, roll them back if not.
    fn end<R>(&mut self, result: wasmtime::Result<R>) -> Result<R, CallError> {
        let data = self.store.data_mut();
        data.record_watermarks.clear();
        data.positions.clear();
        match result {
            Ok(r) => {
                if let Some(state) = data.state.as_mut().filter(|_| !data.hold) {
                    state.commit_call();
                }
                Ok(r)
            }
            Err(e) => {
                data.timer_ops.clear();
                data.held_counts.clear();
                if let Some(state) = &mut data.state {
                    state.rollback_call();
                }
                Err(classify(e, &self.store, &self.config))
            }
        }
    }

    /// Process one batch. Keyed state written by a call that fails is rolled
    /// back; after an error the instance must be [`reset`](Self::reset).
    pub fn process(&mut self, batch: &[wit::Record]) -> Result<wit::BatchResult, CallError> {
        let Guest::Process { processor, .. } = &self.guest else {
            return Err(missing("`processor`"));
        };
        let processor = processor.clone();
        self.begin(batch.iter().map(|r| r.key.as_deref()));
        self.arm()?;
        let result = processor.call_process(&mut self.store, batch);
        self.end(result)
    }

    /// [`process`](Self::process) with the watermark as of each record
    /// (for `timers.current-watermark`), keeping the call's state writes
    /// journaled until [`settle`](Self::settle) when `hold` is set: the
    /// host can then still undo a call whose result it cannot use.
    pub fn process_at(
        &mut self,
        batch: &[wit::Record],
        watermarks: &[i64],
        positions: &[Option<sluice_types::Position>],
        hold: bool,
    ) -> Result<wit::BatchResult, CallError> {
        let data = self.store.data_mut();
        data.record_watermarks.clear();
        data.record_watermarks.extend_from_slice(watermarks);
        data.positions.clear();
        data.positions.extend_from_slice(positions);
        data.hold = hold;
        let result = self.process(batch);
        self.store.data_mut().hold = false;
        result
    }

    /// Keep (`true`) or undo the state writes and timer changes of the last
    /// call made with `hold`. An undone call's instance should be
    /// [`reset`](Self::reset): its memory saw records the state did not.
    pub fn settle(&mut self, keep: bool) {
        let data = self.store.data_mut();
        for (counter, delta) in data.held_counts.drain(..) {
            if keep {
                counter.inc_by(delta);
            }
        }
        let Some(state) = &mut data.state else { return };
        if keep {
            state.commit_call();
        } else {
            state.rollback_call();
            data.timer_ops.clear();
        }
    }

    /// Deliver fired timers (in timestamp order) to `timer-handler.on-timer`.
    pub fn on_timer(&mut self, timers: &[wit::FiredTimer]) -> Result<wit::BatchResult, CallError> {
        let Guest::Process {
            timers: Some(handler),
            ..
        } = &self.guest
        else {
            return Err(missing("`timer-handler`"));
        };
        let handler = handler.clone();
        self.begin(timers.iter().map(|t| Some(t.key.as_slice())));
        self.arm()?;
        let result = handler.call_on_timer(&mut self.store, timers);
        self.end(result)
    }

    /// `aggregator.add`: fold records into accumulators.
    pub fn add(
        &mut self,
        batch: &[wit::Record],
        groups: &[wit::Accumulate],
    ) -> Result<wit::AddResult, CallError> {
        let Guest::Window(a) = &self.guest else {
            return Err(missing("`aggregator`"));
        };
        let a = a.clone();
        self.begin(std::iter::empty());
        self.arm()?;
        let result = a.call_add(&mut self.store, batch, groups);
        self.end(result)
    }

    /// `aggregator.merge`: merge groups of accumulators.
    pub fn merge(&mut self, groups: &[Vec<Vec<u8>>]) -> Result<Vec<Vec<u8>>, CallError> {
        let Guest::Window(a) = &self.guest else {
            return Err(missing("`aggregator`"));
        };
        let a = a.clone();
        self.begin(std::iter::empty());
        self.arm()?;
        let result = a.call_merge(&mut self.store, groups);
        self.end(result)
    }

    /// `aggregator.finish`: the results of fired windows.
    pub fn finish(&mut self, windows: &[wit::FiredWindow]) -> Result<wit::BatchResult, CallError> {
        let Guest::Window(a) = &self.guest else {
            return Err(missing("`aggregator`"));
        };
        let a = a.clone();
        self.begin(std::iter::empty());
        self.arm()?;
        let result = a.call_finish(&mut self.store, windows);
        self.end(result)
    }

    /// Timer changes the last successful call made, in order.
    pub fn take_timer_ops(&mut self) -> Vec<TimerOp> {
        std::mem::take(&mut self.store.data_mut().timer_ops)
    }

    /// Tell the guest the operator's event-time watermark.
    pub fn set_watermark(&mut self, watermark: i64) {
        self.store.data_mut().watermark = watermark;
    }

    /// Replace the instance by a fresh one of the same plugin (after a trap,
    /// whose instance may not be entered again), keeping the keyed state.
    pub fn reset(&mut self) -> Result<(), CallError> {
        let state = self.store.data_mut().state.take();
        let metrics = self.store.data().metrics.clone();
        let watermark = self.store.data().watermark;
        let fresh = self
            .plugin
            .instantiate(self.config.clone(), state, metrics)?;
        *self = fresh;
        self.set_watermark(watermark);
        Ok(())
    }

    /// The plugin this instance runs.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// The keyed state of this subtask, e.g. to flush it.
    pub fn state_mut(&mut self) -> Option<&mut OperatorState> {
        self.store.data_mut().state.as_mut()
    }
}

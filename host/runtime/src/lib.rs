//! The Sluice side of the plugin contract: loading, checking and running
//! operator components with wasmtime.
//!
//! # The model
//!
//! One [`Runtime`] per process owns the wasmtime `Engine`, a `Linker` with the
//! host imports of `sluice:operator@0.1.0` (keyed state, context, logging,
//! metrics) plus a deny-everything WASI, and a thread that advances the
//! engine's epoch so that every guest call has a CPU deadline.
//!
//! [`Runtime::load`] turns a `.wasm` file into a [`Plugin`]: it checks that the
//! file is a component (not a core module), compiles it once (cached on disk by
//! sha256 digest), checks its exports and imports against the contract, and
//! pre-instantiates it. [`Plugin::instantiate`] then makes cheap [`Instance`]s,
//! one per operator subtask, each in its own `Store` with a memory cap.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use std::sync::Arc;
//! use sluice_runtime::{Runtime, InstanceConfig};
//! let runtime = Runtime::new(None)?;
//! let plugin = runtime.load("plugins/dist/taxi_filter.wasm".as_ref())?;
//! let metrics = Arc::new(sluice_types::metrics::Metrics::default());
//! let mut instance = plugin.instantiate(InstanceConfig::new("plausible"), None, metrics)?;
//! let result = instance.process(&[sluice_runtime::wit::Record {
//!     key: None, value: b"...".to_vec(), event_time: None, headers: vec![],
//! }])?;
//! println!("{} emits", result.emits.len());
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use sluice_config::Grants;

use sha2::{Digest, Sha256};
use sluice_state::{OperatorState, StateId, StateKind};
use sluice_types::metrics::Metrics;
use wasmtime::component::{Component, HasSelf, InstancePre, Linker, Resource, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "sluice-host",
        with: {
            "sluice:operator/state.value-state": super::ValueStateHandle,
            "sluice:operator/state.map-state": super::MapStateHandle,
            "sluice:operator/metrics.counter": super::CounterHandle,
        },
        imports: { default: trappable },
    });
}

/// The contract's data types as generated from `wit/operator.wit`.
pub mod wit {
    pub use super::bindings::exports::sluice::operator::aggregator::{Accumulate, AddResult, FiredWindow};
    pub use super::bindings::sluice::operator::types::{
        BatchResult, Emit, FiredTimer, Header, InitContext, Output, Record, RecordError, SourcePosition, TimeDomain, Window,
    };
}

use bindings::exports::sluice::operator::{aggregator, migrator, processor, timer_handler};
use bindings::sluice::operator as api;

/// Where a plugin's exports are, found once at load.
enum Exports {
    Process { processor: processor::GuestIndices, timers: Option<timer_handler::GuestIndices>, migrator: Option<migrator::GuestIndices> },
    Window(aggregator::GuestIndices),
}

/// A running instance's exports.
enum Guest {
    Process { processor: processor::Guest, timers: Option<timer_handler::Guest>, migrator: Option<migrator::Guest> },
    Window(aggregator::Guest),
}

/// The contract package this host implements.
pub const PACKAGE: &str = "sluice:operator";
/// The contract version this host implements. Components built for any
/// `0.1.x` up to this one load (0.x minor versions are additive).
pub const VERSION: &str = "0.1.3";
/// The export of a process operator (worlds `process-operator` and
/// `keyed-process-operator`).
pub const PROCESSOR_EXPORT: &str = "sluice:operator/processor@0.1.3";
/// The export of a keyed process operator with timers.
pub const TIMER_EXPORT: &str = "sluice:operator/timer-handler@0.1.3";
/// The export of a window aggregate (world `window-aggregate`).
pub const AGGREGATOR_EXPORT: &str = "sluice:operator/aggregator@0.1.3";
/// The optional state-migration export of process operators (since 0.1.2).
pub const MIGRATOR_EXPORT: &str = "sluice:operator/migrator@0.1.3";
/// Keys handed to one `migrator.migrate` call.
const MIGRATE_BATCH: usize = 256;
/// Highest patch of contract 0.1 this host implements.
const PATCH: u32 = 3;
/// How often the epoch advances; CPU deadlines are rounded up to it.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Why a plugin was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("plugin {path}: cannot read it: {source}")]
    Read {
        /// The plugin file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Not WebAssembly at all.
    #[error("plugin {path}: not a WebAssembly file (it does not start with the `\\0asm` magic)\n  help: build it with `cargo build --target wasm32-wasip2` or your language's component toolchain")]
    NotWasm {
        /// The plugin file.
        path: PathBuf,
    },
    /// A core module, not a component.
    #[error("plugin {path}: this is a core WebAssembly module, not a component\n  help: Sluice loads components; build for wasm32-wasip2 or run `wasm-tools component new`")]
    CoreModule {
        /// The plugin file.
        path: PathBuf,
    },
    /// wasmtime refused to compile it.
    #[error("plugin {path}: invalid component: {message}")]
    Invalid {
        /// The plugin file.
        path: PathBuf,
        /// wasmtime's reason.
        message: String,
    },
    /// It does not export a Sluice operator.
    #[error("plugin {path}: not a sluice:operator component: it exports neither `{PROCESSOR_EXPORT}` nor `{AGGREGATOR_EXPORT}`\n  it exports: {exports}\n  help: target a world of wit/operator.wit (`process-operator`, `keyed-process-operator` or `window-aggregate`), e.g. with the Rust SDK's #[sluice_sdk::map]")]
    NotAnOperator {
        /// The plugin file.
        path: PathBuf,
        /// What it exports instead.
        exports: String,
    },
    /// It targets another contract version.
    #[error("plugin {path}: built for {found}, but this host runs {PACKAGE}@{VERSION}\n  help: rebuild the plugin against wit/ of this Sluice, or run a Sluice that supports {found}")]
    WrongVersion {
        /// The plugin file.
        path: PathBuf,
        /// The versioned interface it has.
        found: String,
    },
    /// It imports a capability the operator was not granted.
    #[error("plugin {path}: imports `{import}`, which this operator is not granted\n  help: {grant}")]
    NotGranted {
        /// The plugin file.
        path: PathBuf,
        /// The import.
        import: String,
        /// The grant that would allow it, or why none does.
        grant: String,
    },
    /// Its kind does not fit how the pipeline uses it.
    #[error("plugin {path}: operator `{operator}` {expected}, but the plugin is a `{found}` component\n  help: {help}")]
    WrongKind {
        /// The plugin file.
        path: PathBuf,
        /// The operator.
        operator: String,
        /// What the pipeline asks of it.
        expected: String,
        /// The world the plugin targets.
        found: String,
        /// What to do.
        help: String,
    },
    /// It registers timers but cannot receive them.
    #[error("plugin {path}: imports `sluice:operator/timers` but does not export `timer-handler`, so its timers could never fire\n  help: target the `keyed-process-operator` world (Rust SDK: #[sluice_sdk::process(on_timer = my_on_timer)])")]
    TimersWithoutHandler {
        /// The plugin file.
        path: PathBuf,
    },
    /// It imports something the host does not provide.
    #[error("plugin {path}: imports `{import}`, which this host does not provide\n  help: plugins may import the interfaces of {PACKAGE}@{VERSION} and WASI 0.2; remove the dependency that pulls `{import}` in")]
    UnknownImport {
        /// The plugin file.
        path: PathBuf,
        /// The import.
        import: String,
    },
}

/// What `sluice plugin inspect` shows about a component.
#[derive(Clone, Debug)]
pub struct PluginInfo {
    /// The file.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// sha256 of the bytes, hex.
    pub digest: String,
    /// Contract package, e.g. `sluice:operator`.
    pub package: String,
    /// World the exports match, e.g. `process-operator`.
    pub world: String,
    /// What kind of operator the exports make it, if any.
    pub kind: Option<OperatorKind>,
    /// Contract version, e.g. `0.1.3`.
    pub version: String,
    /// Whether it exports `migrator` (worlds `migrating-*`): it can rewrite
    /// the state of the version it replaces.
    pub migrates: bool,
    /// Export names.
    pub exports: Vec<String>,
    /// Import names.
    pub imports: Vec<String>,
    /// The side outputs it declares it emits (the SDKs' `side_outputs`, a
    /// `sluice-side-outputs` custom section), if it declares them.
    pub side_outputs: Option<Vec<String>>,
}

/// The names in a component's `sluice-side-outputs` custom section (in any
/// of its core modules), if there is one.
fn declared_side_outputs(bytes: &[u8]) -> Option<Vec<String>> {
    let mut found: Option<Vec<String>> = None;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let Ok(wasmparser::Payload::CustomSection(section)) = payload else { continue };
        if section.name() == "sluice-side-outputs" {
            let names = String::from_utf8_lossy(section.data()).split('\n').filter(|n| !n.is_empty()).map(str::to_string).collect::<Vec<_>>();
            found.get_or_insert_with(Vec::new).extend(names);
        }
    }
    found
}

/// The kinds of operator a component can be, by the world it targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperatorKind {
    /// `process-operator`: exports `processor`.
    Process,
    /// `keyed-process-operator`: exports `processor` and `timer-handler`.
    KeyedProcess,
    /// `window-aggregate`: exports `aggregator`.
    Window,
}

impl OperatorKind {
    /// The world's name in `wit/operator.wit`.
    pub fn world(self) -> &'static str {
        match self {
            OperatorKind::Process => "process-operator",
            OperatorKind::KeyedProcess => "keyed-process-operator",
            OperatorKind::Window => "window-aggregate",
        }
    }
}

/// A timer registration or deletion a guest made during a call. The host
/// applies them after the call succeeds, and drops them if it fails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimerOp {
    /// Clock of the timer.
    pub domain: wit::TimeDomain,
    /// When it fires, ms.
    pub timestamp: i64,
    /// Key group of the key.
    pub key_group: u16,
    /// The key it was registered for.
    pub key: Vec<u8>,
    /// Delete rather than register.
    pub delete: bool,
    /// Index in the call's batch of the input it was registered for.
    pub input: u32,
}

/// A guest call that failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// A state migration refused a key (`migrator.migrate` returned an error).
    #[error("state migration failed for key {key}: {message}")]
    Migration {
        /// The key, printable.
        key: String,
        /// The plugin's message.
        message: String,
    },
    /// The call ran past its CPU deadline and was interrupted.
    #[error("exceeded its CPU deadline of {deadline_ms} ms and was interrupted")]
    Deadline {
        /// The deadline.
        deadline_ms: u64,
    },
    /// The call used up its fuel.
    #[error("ran out of fuel ({fuel} units per call) and was stopped")]
    Fuel {
        /// The fuel per call.
        fuel: u64,
    },
    /// The guest tried to grow its memory past the cap.
    #[error("tried to grow its linear memory past the cap of {limit_mb} MiB and was stopped")]
    Memory {
        /// The cap.
        limit_mb: usize,
    },
    /// The guest trapped (panic, unreachable, stack overflow, a host-detected
    /// misuse).
    #[error("trapped: {0}")]
    Trap(String),
    /// `init` returned an error.
    #[error("init failed: {0}")]
    Init(String),
}

/// Host-side handle of a `value-state` resource.
pub struct ValueStateHandle(StateId);
/// Host-side handle of a `map-state` resource.
pub struct MapStateHandle(StateId);
/// Host-side handle of a `counter` resource.
pub struct CounterHandle(prometheus_client::metrics::counter::Counter);

/// The per-instance data of a `Store`.
pub struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    stderr: MemoryOutputPipe,
    http: WasiHttpCtx,
    http_hooks: HttpAllowlist,
    operator: String,
    subtask: u32,
    metrics: Arc<Metrics>,
    state: Option<OperatorState>,
    /// Key group, offset and length in `key_bytes` of each record's key in
    /// the batch being processed (one buffer: no allocation per record).
    keys: Vec<Option<(u16, u32, u32)>>,
    key_bytes: Vec<u8>,
    current: usize,
    /// The operator's current event-time watermark, for `timers.current-watermark`.
    watermark: i64,
    /// The watermark as of each input of the current call, if the host gave them.
    record_watermarks: Vec<i64>,
    /// Where each input of the current call came from, if the host gave them.
    positions: Vec<Option<sluice_types::Position>>,
    /// Source names by index, for `record-info.current-position`.
    sources: Arc<[String]>,
    /// Leave the current call's state writes journaled until [`Instance::settle`].
    hold: bool,
    /// Counter increments of a held call, applied when it is kept.
    held_counts: Vec<(prometheus_client::metrics::counter::Counter, u64)>,
    /// Timer changes made by the current call.
    timer_ops: Vec<TimerOp>,
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for GuestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.http_hooks }
    }
}

/// Sends a guest's HTTP request only to the hosts the operator was granted,
/// and never for longer than the operator's CPU deadline (a host-side wait is
/// not interrupted by the epoch).
struct HttpAllowlist {
    hosts: Vec<String>,
    timeout: Duration,
}

type SendResult = wasmtime_wasi_http::Result<(
    http::Response<wasmtime_wasi_http::WasiBody>,
    Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
)>;

impl WasiHttpHooks for HttpAllowlist {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<dyn std::future::Future<Output = SendResult> + Send> {
        _ = fut;
        let host = request.uri().host().unwrap_or_default().to_ascii_lowercase();
        let allowed = self.hosts.iter().any(|h| h.eq_ignore_ascii_case(&host));
        let timeout = self.timeout;
        Box::new(async move {
            if !allowed {
                tracing::debug!("denied an HTTP request to `{host}` (not in grants.http)");
                return Err(wasmtime_wasi_http::Error::HttpRequestDenied);
            }
            use http_body_util::BodyExt;
            let send = wasmtime_wasi_http::default_send_request(request, options);
            let (response, io) = tokio::time::timeout(timeout, send)
                .await
                .map_err(|_| wasmtime_wasi_http::Error::ConnectionReadTimeout)??;
            Ok((response.map(BodyExt::boxed_unsync), Box::new(io) as Box<dyn std::future::Future<Output = _> + Send>))
        })
    }
}

impl GuestState {
    fn with_state<R>(&mut self, f: impl FnOnce(&mut OperatorState, u16, &[u8]) -> Result<R, sluice_state::StateError>) -> wasmtime::Result<R> {
        let GuestState { state, keys, key_bytes, current, operator, .. } = self;
        let Some(state) = state else {
            wasmtime::bail!(
                "operator `{operator}` used keyed state but is not keyed; set key_by = \"key\" on it in the pipeline"
            );
        };
        match keys.get(*current) {
            Some(Some((kg, start, len))) => {
                let key = &key_bytes[*start as usize..(*start + *len) as usize];
                f(state, *kg, key).map_err(|e| wasmtime::format_err!("{e}"))
            }
            Some(None) => wasmtime::bail!("keyed state accessed for a record without a key"),
            None => wasmtime::bail!("keyed state accessed outside `process` (no current record)"),
        }
    }

    fn declare(&mut self, name: &str, kind: StateKind, ttl: Option<Duration>) -> wasmtime::Result<StateId> {
        if name.starts_with('\0') {
            wasmtime::bail!("state names may not start with a NUL character (reserved for the host)");
        }
        match &mut self.state {
            Some(s) => match ttl {
                Some(ttl) => s.declare_with_ttl(name, kind, Some(ttl)),
                None => s.declare(name, kind),
            }
            .map_err(|e| wasmtime::format_err!("{e}")),
            None => wasmtime::bail!(
                "operator `{}` declared {kind} state `{name}` but is not keyed; set key_by = \"key\" on it in the pipeline",
                self.operator
            ),
        }
    }
}

impl api::types::Host for GuestState {}

impl api::context::Host for GuestState {
    fn set_current(&mut self, index: u32) -> wasmtime::Result<()> {
        if index as usize >= self.keys.len() {
            wasmtime::bail!("set-current({index}) is outside the batch of {} records", self.keys.len());
        }
        self.current = index as usize;
        Ok(())
    }

    fn current_key(&mut self) -> wasmtime::Result<Option<Vec<u8>>> {
        let key = self.keys.get(self.current).copied().flatten();
        Ok(key.map(|(_, start, len)| self.key_bytes[start as usize..(start + len) as usize].to_vec()))
    }
}

impl api::state::Host for GuestState {}

impl api::record_info::Host for GuestState {
    fn current_watermark(&mut self) -> wasmtime::Result<i64> {
        Ok(self.record_watermarks.get(self.current).copied().unwrap_or(self.watermark))
    }

    fn current_position(&mut self) -> wasmtime::Result<Option<wit::SourcePosition>> {
        let Some(p) = self.positions.get(self.current).copied().flatten() else { return Ok(None) };
        let source = self.sources.get(p.source as usize).cloned().unwrap_or_else(|| format!("#{}", p.source));
        Ok(Some(wit::SourcePosition { source, split: p.split, offset: p.offset }))
    }
}

impl api::state::HostValueState for GuestState {
    fn new(&mut self, name: String) -> wasmtime::Result<Resource<ValueStateHandle>> {
        let id = self.declare(&name, StateKind::Value, None)?;
        Ok(self.table.push(ValueStateHandle(id))?)
    }

    fn with_ttl(&mut self, name: String, ttl_ms: u64) -> wasmtime::Result<Resource<ValueStateHandle>> {
        let id = self.declare(&name, StateKind::Value, Some(ttl(ttl_ms)?))?;
        Ok(self.table.push(ValueStateHandle(id))?)
    }

    fn get(&mut self, this: Resource<ValueStateHandle>) -> wasmtime::Result<Option<Vec<u8>>> {
        let id = self.table.get(&this)?.0;
        self.with_state(|s, kg, key| Ok(s.get(kg, id, key)?.map(<[u8]>::to_vec)))
    }

    fn set(&mut self, this: Resource<ValueStateHandle>, value: Vec<u8>) -> wasmtime::Result<()> {
        let id = self.table.get(&this)?.0;
        self.with_state(|s, kg, key| {
            s.put(kg, id, key, &value);
            Ok(())
        })
    }

    fn clear(&mut self, this: Resource<ValueStateHandle>) -> wasmtime::Result<()> {
        let id = self.table.get(&this)?.0;
        self.with_state(|s, kg, key| {
            s.delete(kg, id, key);
            Ok(())
        })
    }

    fn drop(&mut self, this: Resource<ValueStateHandle>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl api::state::HostMapState for GuestState {
    fn new(&mut self, name: String) -> wasmtime::Result<Resource<MapStateHandle>> {
        let id = self.declare(&name, StateKind::Map, None)?;
        Ok(self.table.push(MapStateHandle(id))?)
    }

    fn with_ttl(&mut self, name: String, ttl_ms: u64) -> wasmtime::Result<Resource<MapStateHandle>> {
        let id = self.declare(&name, StateKind::Map, Some(ttl(ttl_ms)?))?;
        Ok(self.table.push(MapStateHandle(id))?)
    }

    fn get(&mut self, this: Resource<MapStateHandle>, map_key: Vec<u8>) -> wasmtime::Result<Option<Vec<u8>>> {
        let id = self.table.get(&this)?.0;
        self.with_state(|s, kg, key| Ok(s.map_get(kg, id, key, &map_key)?.map(<[u8]>::to_vec)))
    }

    fn set(&mut self, this: Resource<MapStateHandle>, map_key: Vec<u8>, value: Vec<u8>) -> wasmtime::Result<()> {
        let id = self.table.get(&this)?.0;
        self.with_state(|s, kg, key| {
            s.map_put(kg, id, key, &map_key, &value);
            Ok(())
        })
    }

    fn remove(&mut self, this: Resource<MapStateHandle>, map_key: Vec<u8>) -> wasmtime::Result<()> {
        let id = self.table.get(&this)?.0;
        self.with_state(|s, kg, key| {
            s.map_remove(kg, id, key, &map_key);
            Ok(())
        })
    }

    fn entries(&mut self, this: Resource<MapStateHandle>) -> wasmtime::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let id = self.table.get(&this)?.0;
        self.with_state(|s, kg, key| s.map_entries(kg, id, key))
    }

    fn clear(&mut self, this: Resource<MapStateHandle>) -> wasmtime::Result<()> {
        let id = self.table.get(&this)?.0;
        self.with_state(|s, kg, key| s.map_clear(kg, id, key))
    }

    fn drop(&mut self, this: Resource<MapStateHandle>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

/// A guest-given TTL: at least 1 ms, at most about 292 million years.
fn ttl(ttl_ms: u64) -> wasmtime::Result<Duration> {
    if ttl_ms == 0 || ttl_ms > i64::MAX as u64 / 2 {
        wasmtime::bail!("state TTL of {ttl_ms} ms is out of range (1 ms ..= {} ms)", i64::MAX / 2);
    }
    Ok(Duration::from_millis(ttl_ms))
}

/// Wall-clock now, ms since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl api::timers::Host for GuestState {
    fn register(&mut self, domain: wit::TimeDomain, timestamp: i64) -> wasmtime::Result<()> {
        self.timer_op(domain, timestamp, false)
    }

    fn delete(&mut self, domain: wit::TimeDomain, timestamp: i64) -> wasmtime::Result<()> {
        self.timer_op(domain, timestamp, true)
    }

    fn current_watermark(&mut self) -> wasmtime::Result<i64> {
        Ok(self.record_watermarks.get(self.current).copied().unwrap_or(self.watermark))
    }

    fn current_processing_time(&mut self) -> wasmtime::Result<i64> {
        Ok(now_ms())
    }
}

impl GuestState {
    fn timer_op(&mut self, domain: wit::TimeDomain, timestamp: i64, delete: bool) -> wasmtime::Result<()> {
        if self.state.is_none() {
            wasmtime::bail!("operator `{}` used timers but is not keyed; set key_by = \"key\" on it in the pipeline", self.operator);
        }
        // Bounded like any other output of a call.
        if self.timer_ops.len() >= MAX_TIMER_OPS_PER_CALL {
            wasmtime::bail!("more than {MAX_TIMER_OPS_PER_CALL} timer registrations in one call");
        }
        match self.keys.get(self.current) {
            Some(Some((kg, start, len))) => {
                let key = self.key_bytes[*start as usize..(*start + *len) as usize].to_vec();
                self.timer_ops.push(TimerOp { domain, timestamp, key_group: *kg, key, delete, input: self.current as u32 });
                Ok(())
            }
            Some(None) => wasmtime::bail!("a timer was registered for a record without a key"),
            None => wasmtime::bail!("a timer was registered outside `process` or `on-timer` (no current key)"),
        }
    }
}

/// Timer registrations one guest call may make.
pub const MAX_TIMER_OPS_PER_CALL: usize = 1 << 20;

impl api::log::Host for GuestState {
    fn log(&mut self, level: api::log::Level, message: String) -> wasmtime::Result<()> {
        let (op, sub) = (&self.operator, self.subtask);
        use api::log::Level;
        match level {
            Level::Trace => tracing::trace!(target: "plugin", operator = %op, subtask = sub, "{message}"),
            Level::Debug => tracing::debug!(target: "plugin", operator = %op, subtask = sub, "{message}"),
            Level::Info => tracing::info!(target: "plugin", operator = %op, subtask = sub, "{message}"),
            Level::Warn => tracing::warn!(target: "plugin", operator = %op, subtask = sub, "{message}"),
            Level::Error => tracing::error!(target: "plugin", operator = %op, subtask = sub, "{message}"),
        }
        Ok(())
    }
}

impl api::metrics::Host for GuestState {}

impl api::metrics::HostCounter for GuestState {
    fn new(&mut self, name: String) -> wasmtime::Result<Resource<CounterHandle>> {
        let c = self.metrics.guest_counter(&self.operator, &name);
        Ok(self.table.push(CounterHandle(c))?)
    }

    fn add(&mut self, this: Resource<CounterHandle>, delta: u64) -> wasmtime::Result<()> {
        let counter = &self.table.get(&this)?.0;
        if self.hold {
            // A held call may be undone: count only if it is kept.
            self.held_counts.push((counter.clone(), delta));
        } else {
            counter.inc_by(delta);
        }
        Ok(())
    }

    fn drop(&mut self, this: Resource<CounterHandle>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

/// How an engine runs guests. Operators with different options get
/// different engines (and compiled code); most share the default one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EngineOptions {
    /// Wasm stack per call, in bytes.
    pub stack_bytes: usize,
    /// Meter fuel: a deterministic instruction budget per call.
    pub fuel: bool,
    /// Interrupt calls that pass their deadline. Always on in pipelines; off
    /// only to measure what it costs.
    pub epoch: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions { stack_bytes: 512 << 10, fuel: false, epoch: true }
    }
}

struct EngineEntry {
    engine: Engine,
    linker: Linker<GuestState>,
}

/// The process-wide wasmtime runtime: engines (one per [`EngineOptions`] in
/// use), their linkers, the compile cache, and the epoch ticker.
pub struct Runtime {
    engines: Mutex<HashMap<EngineOptions, Arc<EngineEntry>>>,
    /// Engines the epoch thread advances. The thread runs while the runtime
    /// or any engine (held by a loaded plugin) is alive.
    ticked: Arc<Mutex<Vec<wasmtime::EngineWeak>>>,
    cache_dir: Option<PathBuf>,
}

fn wasm_err(e: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{e:#}")
}

impl Runtime {
    /// A runtime that caches compiled components in `cache_dir` (by digest),
    /// or compiles every time with `None`.
    pub fn new(cache_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        let ticked: Arc<Mutex<Vec<wasmtime::EngineWeak>>> = Arc::default();
        let list = ticked.clone();
        std::thread::Builder::new().name("sluice-epoch".into()).spawn(move || loop {
            std::thread::sleep(EPOCH_TICK);
            let mut engines = list.lock().unwrap_or_else(|p| p.into_inner());
            engines.retain(|weak| match weak.upgrade() {
                Some(engine) => {
                    engine.increment_epoch();
                    true
                }
                None => false,
            });
            // Only this thread holds the list once the runtime is dropped.
            if engines.is_empty() && Arc::strong_count(&list) == 1 {
                break;
            }
        })?;
        let runtime = Runtime { engines: Mutex::default(), ticked, cache_dir };
        runtime.engine(EngineOptions::default())?;
        Ok(runtime)
    }

    fn engine(&self, options: EngineOptions) -> anyhow::Result<Arc<EngineEntry>> {
        let mut engines = self.engines.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = engines.get(&options) {
            return Ok(e.clone());
        }
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(options.epoch);
        config.consume_fuel(options.fuel);
        config.max_wasm_stack(options.stack_bytes);
        // wasmtime requires the async stack to be larger; guests run synchronously.
        config.async_stack_size(options.stack_bytes + (1 << 20));
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        config.parallel_compilation(true);
        let engine = Engine::new(&config).map_err(wasm_err)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(wasm_err)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker).map_err(wasm_err)?;
        bindings::SluiceHost::add_to_linker::<GuestState, HasSelf<GuestState>>(&mut linker, |s| s).map_err(wasm_err)?;
        self.ticked.lock().unwrap_or_else(|p| p.into_inner()).push(engine.weak());
        let entry = Arc::new(EngineEntry { engine, linker });
        engines.insert(options, entry.clone());
        Ok(entry)
    }

    /// The default wasmtime engine.
    pub fn engine_default(&self) -> Engine {
        self.engine(EngineOptions::default()).expect("the default engine is created by Runtime::new").engine.clone()
    }

    fn compile(&self, engine: &Engine, path: &Path, bytes: &[u8], digest: &str) -> Result<Component, LoadError> {
        let invalid = |e: wasmtime::Error| LoadError::Invalid { path: path.to_path_buf(), message: format!("{e:#}") };
        let cached = self.cache_dir.as_ref().map(|dir| {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut h);
            dir.join(format!("{digest}-{:016x}.cwasm", h.finish()))
        });
        if let Some(file) = &cached {
            if file.is_file() {
                // SAFETY: the file was written by `Component::serialize` of an
                // engine with the same compatibility hash (it is in the name),
                // into a cache directory that only Sluice writes.
                match unsafe { Component::deserialize_file(engine, file) } {
                    Ok(c) => return Ok(c),
                    Err(e) => tracing::warn!("ignoring unreadable compile cache entry {}: {e}", file.display()),
                }
            }
        }
        let component = Component::new(engine, bytes).map_err(invalid)?;
        if let Some(file) = &cached {
            let write = || -> std::io::Result<()> {
                std::fs::create_dir_all(file.parent().unwrap_or(Path::new(".")))?;
                let data = component.serialize().map_err(|e| std::io::Error::other(e.to_string()))?;
                let tmp = file.with_extension(format!("tmp{}", std::process::id()));
                std::fs::write(&tmp, data)?;
                std::fs::rename(&tmp, file)
            };
            if let Err(e) = write() {
                tracing::warn!("could not cache the compiled component in {}: {e}", file.display());
            }
        }
        Ok(component)
    }

    /// Read, check, compile and pre-instantiate the component at `path`
    /// with the default engine and no grants.
    pub fn load(&self, path: &Path) -> Result<Arc<Plugin>, LoadError> {
        self.load_with(path, EngineOptions::default(), &Grants::default())
    }

    /// Read, check, compile and pre-instantiate the component at `path`
    /// for an operator with these engine options and grants.
    pub fn load_with(&self, path: &Path, options: EngineOptions, grants: &Grants) -> Result<Arc<Plugin>, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read { path: path.to_path_buf(), source })?;
        check_header(path, &bytes)?;
        let digest = hex::encode(Sha256::digest(&bytes));
        let entry = self.engine(options).map_err(|e| LoadError::Invalid { path: path.to_path_buf(), message: format!("{e:#}") })?;
        let component = self.compile(&entry.engine, path, &bytes, &digest)?;
        let info = describe(&entry.engine, path, &bytes, &digest, &component);
        check_contract(&info, grants)?;
        let pre = entry.linker.instantiate_pre(&component).map_err(|e| {
            let msg = format!("{e:#}");
            let import = msg.split('`').nth(1).unwrap_or(&msg).to_string();
            LoadError::UnknownImport { path: path.to_path_buf(), import }
        })?;
        let invalid = |e: wasmtime::Error| LoadError::Invalid { path: path.to_path_buf(), message: format!("{e:#}") };
        let migrator = if info.migrates { Some(migrator::GuestIndices::new(&pre).map_err(invalid)?) } else { None };
        let exports = match info.kind {
            Some(OperatorKind::Window) => Exports::Window(aggregator::GuestIndices::new(&pre).map_err(invalid)?),
            Some(OperatorKind::KeyedProcess) => Exports::Process {
                processor: processor::GuestIndices::new(&pre).map_err(invalid)?,
                timers: Some(timer_handler::GuestIndices::new(&pre).map_err(invalid)?),
                migrator,
            },
            _ => Exports::Process { processor: processor::GuestIndices::new(&pre).map_err(invalid)?, timers: None, migrator },
        };
        Ok(Arc::new(Plugin { engine: entry.engine.clone(), info, pre, exports, grants: grants.clone(), fuel: options.fuel }))
    }

    /// Describe a component without requiring it to be a valid operator
    /// (for `sluice plugin inspect`).
    pub fn inspect(&self, path: &Path) -> Result<PluginInfo, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read { path: path.to_path_buf(), source })?;
        check_header(path, &bytes)?;
        let digest = hex::encode(Sha256::digest(&bytes));
        let engine = self.engine_default();
        let component = self.compile(&engine, path, &bytes, &digest)?;
        Ok(describe(&engine, path, &bytes, &digest, &component))
    }
}

fn check_header(path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
        return Err(LoadError::NotWasm { path: path.to_path_buf() });
    }
    // Bytes 4..8: version and layer. Layer 0 is a core module, 1 a component.
    if bytes[6..8] == [0, 0] {
        return Err(LoadError::CoreModule { path: path.to_path_buf() });
    }
    Ok(())
}

fn describe(engine: &Engine, path: &Path, bytes: &[u8], digest: &str, component: &Component) -> PluginInfo {
    let size = bytes.len() as u64;
    let side_outputs = declared_side_outputs(bytes);
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
    let has = |interface: &str| exports.iter().find(|e| e.strip_prefix("sluice:operator/").and_then(|r| r.split('@').next()) == Some(interface));
    let kind = match (has("processor"), has("timer-handler"), has("aggregator")) {
        (Some(_), None, None) => Some(OperatorKind::Process),
        (Some(_), Some(_), None) => Some(OperatorKind::KeyedProcess),
        (None, None, Some(_)) => Some(OperatorKind::Window),
        _ => None,
    };
    let (package, world, version) = match exports.iter().find(|e| e.starts_with("sluice:operator/")) {
        Some(e) => {
            let version = e.split('@').nth(1).unwrap_or("?").to_string();
            (PACKAGE.to_string(), kind.map_or("unknown", OperatorKind::world).to_string(), version)
        }
        None => ("(none)".into(), "(none)".into(), "(none)".into()),
    };
    let migrates = has("migrator").is_some();
    let world = if migrates && matches!(kind, Some(OperatorKind::Process | OperatorKind::KeyedProcess)) { format!("migrating-{world}") } else { world };
    PluginInfo { path: path.to_path_buf(), size, digest: digest.to_string(), package, world, kind, version, exports, imports, migrates, side_outputs }
}

/// Whether `name` (`sluice:operator/<interface>@<version>`) has a contract
/// version this host implements: 0.1.0 up to 0.1.PATCH.
fn supported_version(name: &str) -> bool {
    let version = name.split('@').nth(1).unwrap_or("");
    match version.strip_prefix("0.1.").map(str::parse::<u32>) {
        Some(Ok(patch)) => patch <= PATCH,
        _ => false,
    }
}

/// Check that a described component fits the contract and the operator's
/// grants: it exports the interfaces of one operator world at a contract
/// version this host implements, and imports only `sluice:operator@0.1.x`
/// and the WASI interfaces it was granted.
pub fn check_contract(info: &PluginInfo, grants: &Grants) -> Result<(), LoadError> {
    let path = info.path.clone();
    let sluice_exports: Vec<&String> = info.exports.iter().filter(|e| e.starts_with("sluice:operator/")).collect();
    if let Some(e) = sluice_exports.iter().find(|e| !supported_version(e)) {
        return Err(LoadError::WrongVersion { path, found: (*e).clone() });
    }
    if info.kind.is_none() {
        let exports = if info.exports.is_empty() { "nothing".to_string() } else { info.exports.join(", ") };
        return Err(LoadError::NotAnOperator { path, exports });
    }
    if info.kind != Some(OperatorKind::KeyedProcess) && info.imports.iter().any(|i| i.starts_with("sluice:operator/timers@")) {
        return Err(LoadError::TimersWithoutHandler { path });
    }
    // Imports that no grant allows are reported before those a grant would fix.
    let mut imports: Vec<&String> = info.imports.iter().collect();
    imports.sort_by_key(|i| !i.starts_with("wasi:sockets/"));
    for import in imports {
        let not_granted = |grant: &str| LoadError::NotGranted { path: path.clone(), import: import.clone(), grant: grant.to_string() };
        if import.starts_with("sluice:operator/") {
            if !supported_version(import) {
                return Err(LoadError::WrongVersion { path, found: import.clone() });
            }
        } else if import.starts_with("wasi:filesystem/") {
            if grants.read_dir.is_none() {
                return Err(not_granted("grant a read-only directory with `grants = { read_dir = \"<dir>\" }` on the operator (the plugin sees it as /data)"));
            }
        } else if import.starts_with("wasi:sockets/") {
            return Err(not_granted("no grant allows sockets: a plugin never holds a connection; remove the network code from the plugin"));
        } else if import.starts_with("wasi:http/") {
            if grants.http.is_empty() {
                return Err(not_granted("grant the hosts it may call with `grants = { http = [\"api.example.com\"] }` on the operator"));
            }
        } else if !import.starts_with("wasi:") {
            return Err(LoadError::UnknownImport { path, import: import.clone() });
        }
    }
    Ok(())
}

/// A compiled, checked, pre-instantiated operator component.
pub struct Plugin {
    engine: Engine,
    info: PluginInfo,
    pre: InstancePre<GuestState>,
    exports: Exports,
    grants: Grants,
    fuel: bool,
}

/// The clock a plugin sees without the `clock` grant: always 0, so that a
/// replay computes what the first run computed.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

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
    /// What the component is.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// A new instance, initialised. `state` is the subtask's keyed state, or
    /// `None` for an operator that is not keyed.
    pub fn instantiate(self: &Arc<Self>, config: InstanceConfig, state: Option<OperatorState>, metrics: Arc<Metrics>) -> Result<Instance, CallError> {
        self.instantiate_keeping(config, state, metrics).map_err(|(e, _)| e)
    }

    /// [`instantiate`](Plugin::instantiate), handing the keyed state back
    /// when it fails (a hot swap keeps the old instance running on it).
    pub fn instantiate_keeping(
        self: &Arc<Self>,
        config: InstanceConfig,
        state: Option<OperatorState>,
        metrics: Arc<Metrics>,
    ) -> Result<Instance, (CallError, Option<OperatorState>)> {
        let stderr = MemoryOutputPipe::new(256 << 10);
        let mut wasi = WasiCtx::builder();
        wasi.stdout(std::io::empty()).stderr(stderr.clone()).allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false);
        for (k, v) in &self.grants.env {
            wasi.env(k, v);
        }
        if let Some(dir) = &self.grants.read_dir {
            if let Err(e) = wasi.preopened_dir(dir, "/data", FsPerms::ReadOnly) {
                return Err((CallError::Init(format!("cannot open the granted directory {}: {e}", dir.display())), state));
            }
        }
        if !self.grants.clock {
            wasi.wall_clock(FrozenClock).monotonic_clock(FrozenClock);
        }
        let wasi = wasi.build();
        if self.fuel && config.fuel.is_none() {
            return Err((CallError::Init("the plugin was loaded with fuel metering but the instance has no fuel budget".into()), state));
        }
        let limits = StoreLimitsBuilder::new().memory_size(config.memory_bytes).trap_on_grow_failure(true).build();
        let data = GuestState {
            wasi,
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            http_hooks: HttpAllowlist { hosts: self.grants.http.clone(), timeout: Duration::from_millis(config.deadline_ms) },
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
        let deadline_ticks = config.deadline_ms.div_ceil(EPOCH_TICK.as_millis() as u64).max(1) + 1;
        store.set_epoch_deadline(deadline_ticks);
        let built = (|| -> Result<Guest, CallError> {
            if let Some(fuel) = config.fuel {
                store.set_fuel(fuel).map_err(|e| CallError::Init(format!("{e:#}")))?;
            }
            let instance = self.pre.instantiate(&mut store).map_err(|e| classify(e, &store, &config))?;
            Ok(match &self.exports {
                Exports::Process { processor, timers, migrator } => Guest::Process {
                    processor: processor.load(&mut store, &instance).map_err(|e| classify(e, &store, &config))?,
                    timers: match timers {
                        Some(t) => Some(t.load(&mut store, &instance).map_err(|e| classify(e, &store, &config))?),
                        None => None,
                    },
                    migrator: match migrator {
                        Some(m) => Some(m.load(&mut store, &instance).map_err(|e| classify(e, &store, &config))?),
                        None => None,
                    },
                },
                Exports::Window(a) => Guest::Window(a.load(&mut store, &instance).map_err(|e| classify(e, &store, &config))?),
            })
        })();
        let guest = match built {
            Ok(g) => g,
            Err(e) => return Err((e, store.into_data().state)),
        };
        let mut instance = Instance { store, guest, plugin: self.clone(), config, deadline_ticks };
        match instance.init() {
            Ok(()) => Ok(instance),
            Err(e) => Err((e, instance.store.into_data().state)),
        }
    }
}

/// Turn a wasmtime error into a [`CallError`], with the guest's last stderr
/// lines (a Rust panic message, typically) appended.
fn classify(e: wasmtime::Error, store: &Store<GuestState>, config: &InstanceConfig) -> CallError {
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => return CallError::Deadline { deadline_ms: config.deadline_ms },
        Some(wasmtime::Trap::OutOfFuel) => return CallError::Fuel { fuel: config.fuel.unwrap_or(0) },
        _ => {}
    }
    let mut msg = format!("{e:#}");
    if msg.contains("growing memory") {
        return CallError::Memory { limit_mb: config.memory_bytes >> 20 };
    }
    let err = store.data().stderr.contents();
    if !err.is_empty() {
        let text = String::from_utf8_lossy(&err);
        let tail: String = text.lines().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join(" | ");
        msg.push_str(&format!(" (guest stderr: {tail})"));
    }
    CallError::Trap(msg)
}

/// The version a hot swap replaces, as a migrating plugin is told
/// (`migrator.needs-migration`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreviousVersion {
    /// Hex SHA-256 of its component.
    pub digest: String,
    /// The contract version it was built for, e.g. `0.1.1`.
    pub contract: String,
    /// Its params, as a JSON object.
    pub params: String,
}

/// A hot swap between [`Instance::begin_swap`] and [`Instance::finish_swap`]:
/// the old instance, kept to return to.
pub struct PendingSwap {
    old: Instance,
    /// Keys the new plugin's migration rewrote (`None`: it did not migrate).
    pub migrated: Option<u64>,
}

/// A running instance of an operator plugin, owned by one subtask.
pub struct Instance {
    store: Store<GuestState>,
    guest: Guest,
    plugin: Arc<Plugin>,
    config: InstanceConfig,
    deadline_ticks: u64,
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
            Guest::Process { timers: Some(_), .. } => OperatorKind::KeyedProcess,
            Guest::Window(_) => OperatorKind::Window,
        }
    }

    /// Reset the per-call budgets: deadline and fuel.
    fn arm(&mut self) -> Result<(), CallError> {
        self.store.set_epoch_deadline(self.deadline_ticks);
        if let Some(fuel) = self.config.fuel {
            self.store.set_fuel(fuel).map_err(|e| CallError::Trap(format!("{e:#}")))?;
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
                    (sluice_state::keygroup::key_group(k, sluice_state::keygroup::MAX_PARALLELISM), start, k.len() as u32)
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
        let Guest::Process { processor, .. } = &self.guest else { return Err(missing("`processor`")) };
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
    pub fn process_at(&mut self, batch: &[wit::Record], watermarks: &[i64], positions: &[Option<sluice_types::Position>], hold: bool) -> Result<wit::BatchResult, CallError> {
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
        let Guest::Process { timers: Some(handler), .. } = &self.guest else { return Err(missing("`timer-handler`")) };
        let handler = handler.clone();
        self.begin(timers.iter().map(|t| Some(t.key.as_slice())));
        self.arm()?;
        let result = handler.call_on_timer(&mut self.store, timers);
        self.end(result)
    }

    /// `aggregator.add`: fold records into accumulators.
    pub fn add(&mut self, batch: &[wit::Record], groups: &[wit::Accumulate]) -> Result<wit::AddResult, CallError> {
        let Guest::Window(a) = &self.guest else { return Err(missing("`aggregator`")) };
        let a = a.clone();
        self.begin(std::iter::empty());
        self.arm()?;
        let result = a.call_add(&mut self.store, batch, groups);
        self.end(result)
    }

    /// `aggregator.merge`: merge groups of accumulators.
    pub fn merge(&mut self, groups: &[Vec<Vec<u8>>]) -> Result<Vec<Vec<u8>>, CallError> {
        let Guest::Window(a) = &self.guest else { return Err(missing("`aggregator`")) };
        let a = a.clone();
        self.begin(std::iter::empty());
        self.arm()?;
        let result = a.call_merge(&mut self.store, groups);
        self.end(result)
    }

    /// `aggregator.finish`: the results of fired windows.
    pub fn finish(&mut self, windows: &[wit::FiredWindow]) -> Result<wit::BatchResult, CallError> {
        let Guest::Window(a) = &self.guest else { return Err(missing("`aggregator`")) };
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
        let fresh = self.plugin.instantiate(self.config.clone(), state, metrics)?;
        *self = fresh;
        self.set_watermark(watermark);
        Ok(())
    }

    /// Prepare a hot swap to `plugin` (with new `params` if given): a new
    /// instance, initialised, that takes over the keyed state and the
    /// watermark, after it migrated the state if it exports `migrator` and
    /// asks to (see `migrate_open`). From here this
    /// `Instance` is the new one; [`finish_swap`](Self::finish_swap) keeps
    /// it or goes back to the old one, with the state as it was. On error
    /// nothing changed: this instance still runs the old plugin.
    pub fn begin_swap(&mut self, plugin: Arc<Plugin>, params: Option<String>) -> Result<PendingSwap, CallError> {
        let previous = PreviousVersion { digest: self.plugin.info.digest.clone(), contract: self.plugin.info.version.clone(), params: self.config.params.clone() };
        let state = self.store.data_mut().state.take();
        let metrics = self.store.data().metrics.clone();
        let watermark = self.store.data().watermark;
        let mut config = self.config.clone();
        if let Some(p) = params {
            config.params = p;
        }
        let mut fresh = match plugin.instantiate_keeping(config, state, metrics) {
            Ok(fresh) => fresh,
            Err((e, state)) => {
                self.store.data_mut().state = state;
                return Err(e);
            }
        };
        fresh.set_watermark(watermark);
        match fresh.migrate_open(&previous) {
            Ok(migrated) => Ok(PendingSwap { old: std::mem::replace(self, fresh), migrated }),
            Err(e) => {
                self.store.data_mut().state = fresh.store.data_mut().state.take();
                Err(e)
            }
        }
    }

    /// End a swap that [`begin_swap`](Self::begin_swap) prepared: keep the
    /// new plugin (`commit`), or return to the old one with the state as it
    /// was before the migration.
    pub fn finish_swap(&mut self, pending: PendingSwap, commit: bool) {
        let data = self.store.data_mut();
        if commit {
            if let Some(state) = &mut data.state {
                state.commit_call();
            }
            return;
        }
        data.timer_ops.clear();
        let mut state = data.state.take();
        if let Some(s) = &mut state {
            s.rollback_call();
        }
        *self = pending.old;
        self.store.data_mut().state = state;
    }

    /// Run `plugin` from now on: [`begin_swap`](Self::begin_swap) and keep
    /// it. Returns how many keys its migration rewrote.
    pub fn swap(&mut self, plugin: Arc<Plugin>, params: Option<String>) -> Result<Option<u64>, CallError> {
        let pending = self.begin_swap(plugin, params)?;
        let migrated = pending.migrated;
        self.finish_swap(pending, true);
        Ok(migrated)
    }

    /// The plugin's state migration from `from`: `needs-migration`, then, if
    /// it says so, `migrate` over every key of this subtask's key groups in
    /// batches. All or nothing: if a call fails, every state write of the
    /// migration is undone; on success the writes stay journaled
    /// (uncommitted) until [`finish_swap`](Self::finish_swap). Returns how
    /// many keys were migrated (`None`: nothing to do — no `migrator`, no
    /// keyed state, or not needed). Timers it registers are applied like a
    /// call's ([`take_timer_ops`](Self::take_timer_ops)).
    fn migrate_open(&mut self, from: &PreviousVersion) -> Result<Option<u64>, CallError> {
        let Guest::Process { migrator: Some(m), .. } = &self.guest else { return Ok(None) };
        let m = m.clone();
        if self.store.data().state.is_none() {
            return Ok(None);
        }
        let previous = migrator::PreviousVersion { digest: from.digest.clone(), contract: from.contract.clone(), params: from.params.clone() };
        self.arm()?;
        match m.call_needs_migration(&mut self.store, &previous) {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => return Ok(None),
            Ok(Err(msg)) => return Err(CallError::Init(format!("needs-migration refused: {msg}"))),
            Err(e) => return Err(classify(e, &self.store, &self.config)),
        }
        use sluice_state::keygroup::{range_of, MAX_PARALLELISM};
        let groups = range_of(self.config.subtask, MAX_PARALLELISM, self.config.parallelism.max(1));
        let data = self.store.data_mut();
        let state = data.state.as_mut().expect("checked above");
        let keys = state.keys(groups).map_err(|e| CallError::Trap(format!("listing the keys of the state to migrate: {e}")))?;
        // One journal for the whole migration (not one per call), so that a
        // failure in any batch undoes every batch.
        state.begin_call();
        data.timer_ops.clear();
        let mut failure = None;
        for chunk in keys.chunks(MIGRATE_BATCH) {
            let data = self.store.data_mut();
            data.keys.clear();
            data.key_bytes.clear();
            data.current = 0;
            for (kg, k) in chunk {
                let start = data.key_bytes.len() as u32;
                data.key_bytes.extend_from_slice(k);
                data.keys.push(Some((*kg, start, k.len() as u32)));
            }
            let list: Vec<Vec<u8>> = chunk.iter().map(|(_, k)| k.clone()).collect();
            if let Err(e) = self.arm() {
                failure = Some(e);
                break;
            }
            match m.call_migrate(&mut self.store, &list) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    let key = list.get(e.input as usize).map_or_else(|| format!("#{}", e.input), |k| format!("{:?}", String::from_utf8_lossy(k)));
                    failure = Some(CallError::Migration { key, message: e.message });
                    break;
                }
                Err(e) => {
                    failure = Some(classify(e, &self.store, &self.config));
                    break;
                }
            }
        }
        let data = self.store.data_mut();
        let state = data.state.as_mut().expect("checked above");
        match failure {
            None => Ok(Some(keys.len() as u64)),
            Some(e) => {
                state.rollback_call();
                data.timer_ops.clear();
                Err(e)
            }
        }
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

/// Move a host record into the contract's record type.
pub fn to_wit(r: &mut sluice_types::Record) -> wit::Record {
    wit::Record {
        key: r.key.take(),
        value: std::mem::take(&mut r.value),
        event_time: r.event_time,
        headers: std::mem::take(&mut r.headers)
            .into_iter()
            .map(|h| wit::Header { name: h.name, value: h.value })
            .collect(),
    }
}

/// Move a contract record back into a host record.
pub fn from_wit(r: wit::Record, position: Option<sluice_types::Position>) -> sluice_types::Record {
    sluice_types::Record {
        key: r.key,
        value: r.value,
        event_time: r.event_time,
        headers: r.headers.into_iter().map(|h| sluice_types::Header { name: h.name, value: h.value }).collect(),
        position,
    }
}

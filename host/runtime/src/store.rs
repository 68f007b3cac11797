//! [`StoreData`]: the host's data in each instance's wasmtime `Store` (WASI
//! context, resource table, limits, the keyed state of the subtask and the
//! per-call bookkeeping of keys, watermarks and timer changes), and
//! [`TimerOp`], the timer changes a call makes.
//!
//! The host interfaces (`host/`) read and write it during a guest call; the
//! instance (`instance.rs`) sets it up before a call and collects from it
//! after.

use std::sync::Arc;

use sluice_state::OperatorState;
use sluice_types::metrics::Metrics;
use wasmtime::component::ResourceTable;
use wasmtime::StoreLimits;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::bindings::wit;
use crate::sandbox::HttpAllowlist;

/// The per-instance data of a `Store`.
pub struct StoreData {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: StoreLimits,
    pub(crate) stderr: MemoryOutputPipe,
    pub(crate) http: WasiHttpCtx,
    pub(crate) http_hooks: HttpAllowlist,
    pub(crate) operator: String,
    pub(crate) subtask: u32,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) state: Option<OperatorState>,
    /// Key group, offset and length in `key_bytes` of each record's key in
    /// the batch being processed (one buffer: no allocation per record).
    pub(crate) keys: Vec<Option<(u16, u32, u32)>>,
    pub(crate) key_bytes: Vec<u8>,
    pub(crate) current: usize,
    /// The operator's current event-time watermark, for `timers.current-watermark`.
    pub(crate) watermark: i64,
    /// The watermark as of each input of the current call, if the host gave them.
    pub(crate) record_watermarks: Vec<i64>,
    /// Where each input of the current call came from, if the host gave them.
    pub(crate) positions: Vec<Option<sluice_types::Position>>,
    /// Source names by index, for `record-info.current-position`.
    pub(crate) sources: Arc<[String]>,
    /// Leave the current call's state writes journaled until [`Instance::settle`](crate::Instance::settle).
    pub(crate) hold: bool,
    /// Counter increments of a held call, applied when it is kept.
    pub(crate) held_counts: Vec<(prometheus_client::metrics::counter::Counter, u64)>,
    /// Timer changes made by the current call.
    pub(crate) timer_ops: Vec<TimerOp>,
}

impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for StoreData {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
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

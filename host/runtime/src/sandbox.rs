//! What confines a guest (DESIGN.md, decision 6): the epoch ticker behind
//! every call's CPU deadline, the memory cap, what one call may copy out of
//! the guest, and the WASI a plugin sees, which denies everything the
//! operator was not granted (no sockets; HTTP only to granted hosts; files
//! only in a granted read-only directory; a frozen clock unless granted).
//!
//! Fuel and the deadline are re-armed before every call by the instance
//! (`Instance::arm`); a trap they cause becomes a [`CallError`] in
//! `instance.rs` (`classify`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_config::Grants;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, HostMonotonicClock, HostWallClock, WasiCtx};
use wasmtime_wasi_http::WasiHttpHooks;

use crate::error::CallError;

/// How often the epoch advances; CPU deadlines are rounded up to it.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Start the thread that advances the epoch of the engines in `ticked`
/// every [`EPOCH_TICK`], dropping those that are gone. It stops once no
/// engine is left and nothing else holds the list.
pub(crate) fn start_epoch_ticker(
    ticked: &Arc<Mutex<Vec<wasmtime::EngineWeak>>>,
) -> std::io::Result<()> {
    let list = ticked.clone();
    std::thread::Builder::new()
        .name("sluice-epoch".into())
        .spawn(move || loop {
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
    Ok(())
}

/// Epoch ticks before a call of `deadline_ms` is interrupted: the deadline
/// rounded up to whole ticks, plus one for the tick already under way.
pub(crate) fn deadline_ticks(deadline_ms: u64) -> u64 {
    deadline_ms.div_ceil(EPOCH_TICK.as_millis() as u64).max(1) + 1
}

/// The memory cap of an instance: growing linear memory past `memory_bytes`
/// traps.
pub(crate) fn store_limits(memory_bytes: usize) -> StoreLimits {
    StoreLimitsBuilder::new()
        .memory_size(memory_bytes)
        .trap_on_grow_failure(true)
        .build()
}

/// The WASI context of a new instance: no stdout, stderr into `stderr` (kept
/// for error messages), no sockets, and only what `grants` allows: its
/// environment variables, its directory read-only as `/data`, the real clock.
pub(crate) fn wasi_ctx(grants: &Grants, stderr: MemoryOutputPipe) -> Result<WasiCtx, CallError> {
    let mut wasi = WasiCtx::builder();
    wasi.stdout(std::io::empty())
        .stderr(stderr)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    for (k, v) in &grants.env {
        wasi.env(k, v);
    }
    if let Some(dir) = &grants.read_dir {
        if let Err(e) = wasi.preopened_dir(dir, "/data", FsPerms::ReadOnly) {
            return Err(CallError::Init(format!(
                "cannot open the granted directory {}: {e}",
                dir.display()
            )));
        }
    }
    if !grants.clock {
        wasi.wall_clock(FrozenClock).monotonic_clock(FrozenClock);
    }
    Ok(wasi.build())
}

/// Sends a guest's HTTP request only to the hosts the operator was granted,
/// and never for longer than the operator's CPU deadline (a host-side wait is
/// not interrupted by the epoch).
pub(crate) struct HttpAllowlist {
    pub(crate) hosts: Vec<String>,
    pub(crate) timeout: Duration,
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
        let host = request
            .uri()
            .host()
            .unwrap_or_default()
            .to_ascii_lowercase();
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
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn std::future::Future<Output = _> + Send>,
            ))
        })
    }
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

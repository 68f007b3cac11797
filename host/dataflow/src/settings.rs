//! What a run is given beside the pipeline: process-level settings (flags
//! and environment) and the signal that stops it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use sluice_runtime::Runtime;

/// Process-level settings (flags and environment, not pipeline).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Directory under which the pipeline's state lives (`<dir>/<pipeline>/state`).
    pub state_dir: PathBuf,
    /// Write-back cache budget for all keyed state, in bytes.
    pub cache_bytes: usize,
    /// Records per batch, over the pipeline's `batch_size` (the CLI flag).
    pub batch_size: Option<usize>,
    /// Batches buffered per channel.
    pub channel_capacity: usize,
    /// Restore this checkpoint or savepoint directory instead of the latest checkpoint.
    pub restore_from: Option<PathBuf>,
    /// Drop the state of stateful operators the pipeline no longer has.
    pub allow_dropped_state: bool,
    /// The runtime that compiles plugins deployed while the pipeline runs
    /// (and on recovery, the deployed versions); without it, deploys are
    /// rejected.
    pub runtime: Option<RuntimeHandle>,
}

/// A shared [`Runtime`] in [`Settings`].
#[derive(Clone)]
pub struct RuntimeHandle(pub Arc<Runtime>);

impl std::fmt::Debug for RuntimeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Runtime")
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            state_dir: PathBuf::from(".sluice"),
            cache_bytes: 256 << 20,
            batch_size: None,
            channel_capacity: 16,
            restore_from: None,
            allow_dropped_state: false,
            runtime: None,
        }
    }
}

/// A cooperative stop signal: sources stop reading and the pipeline drains.
#[derive(Clone, Default)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    /// Ask the sources to stop; what was read is still processed and written.
    pub fn stop(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub(crate) fn stopped(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

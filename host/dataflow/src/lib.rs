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
//! failed. Sinks write and flush. End of input travels as
//! [`Message::End`](sluice_types::Message::End): a node finishes when every
//! producer feeding it has sent one.
//!
//! The crate reads as plan, then launch: `plan` builds the physical graph
//! (nodes, subtasks, edges) from the pipeline; `launch` restores what a
//! checkpoint holds, creates the channels from the plan's edges and starts
//! one task per subtask (`task::source`, `task::operator`, `task::sink`);
//! [`checkpoint`] and [`control`] run beside the tasks.
#![deny(missing_docs)]

use std::collections::HashMap;
use std::sync::Arc;

use sluice_config::Pipeline;
use sluice_runtime::Plugin;
use sluice_types::metrics::Metrics;

pub mod checkpoint;
mod connectors;
pub mod control;
mod error;
mod event_time;
mod launch;
mod plan;
mod plugins;
mod private;
mod router;
pub mod run_lock;
mod settings;
mod task;

pub use connectors::connectors;
pub use control::token;
pub use error::DataflowError;
pub use launch::RunSummary;
pub use plan::DEFAULT_BATCH_SIZE;
pub use plugins::{check_side_outputs, engine_options, load_operator, THREAD_STACK_BYTES};
pub use settings::{RuntimeHandle, Settings, StopHandle};

/// Run `pipeline` to completion (bounded sources) or until `stop`.
pub async fn run(
    pipeline: &Pipeline,
    plugins: &HashMap<String, Arc<Plugin>>,
    settings: &Settings,
    metrics: Arc<Metrics>,
    stop: StopHandle,
) -> Result<RunSummary, DataflowError> {
    launch::launch(pipeline, plugins, settings, metrics, stop).await
}

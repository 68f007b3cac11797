//! `sluice:operator/log`: a guest's log lines, as `tracing` events of target
//! `plugin` tagged with the operator and subtask.

use crate::bindings::sluice::operator as api;
use crate::store::StoreData;

impl api::log::Host for StoreData {
    fn log(&mut self, level: api::log::Level, message: String) -> wasmtime::Result<()> {
        let (op, sub) = (&self.operator, self.subtask);
        use api::log::Level;
        match level {
            Level::Trace => {
                tracing::trace!(target: "plugin", operator = %op, subtask = sub, "{message}")
            }
            Level::Debug => {
                tracing::debug!(target: "plugin", operator = %op, subtask = sub, "{message}")
            }
            Level::Info => {
                tracing::info!(target: "plugin", operator = %op, subtask = sub, "{message}")
            }
            Level::Warn => {
                tracing::warn!(target: "plugin", operator = %op, subtask = sub, "{message}")
            }
            Level::Error => {
                tracing::error!(target: "plugin", operator = %op, subtask = sub, "{message}")
            }
        }
        Ok(())
    }
}

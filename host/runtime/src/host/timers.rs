//! `sluice:operator/timers`: event- and processing-time timers of the current
//! key. A call's registrations are collected as [`TimerOp`]s in the store and
//! applied by the dataflow only if the call succeeds.

use crate::bindings::sluice::operator as api;
use crate::bindings::wit;
use crate::store::{StoreData, TimerOp};

/// Timer registrations one guest call may make.
pub const MAX_TIMER_OPS_PER_CALL: usize = 1 << 20;

/// Wall-clock now, ms since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl api::timers::Host for StoreData {
    fn register(&mut self, domain: wit::TimeDomain, timestamp: i64) -> wasmtime::Result<()> {
        self.timer_op(domain, timestamp, false)
    }

    fn delete(&mut self, domain: wit::TimeDomain, timestamp: i64) -> wasmtime::Result<()> {
        self.timer_op(domain, timestamp, true)
    }

    fn current_watermark(&mut self) -> wasmtime::Result<i64> {
        Ok(self
            .record_watermarks
            .get(self.current)
            .copied()
            .unwrap_or(self.watermark))
    }

    fn current_processing_time(&mut self) -> wasmtime::Result<i64> {
        Ok(now_ms())
    }
}

impl StoreData {
    /// Note a timer change for the current key, to be applied if the call
    /// succeeds.
    fn timer_op(
        &mut self,
        domain: wit::TimeDomain,
        timestamp: i64,
        delete: bool,
    ) -> wasmtime::Result<()> {
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
                self.timer_ops.push(TimerOp {
                    domain,
                    timestamp,
                    key_group: *kg,
                    key,
                    delete,
                    input: self.current as u32,
                });
                Ok(())
            }
            Some(None) => wasmtime::bail!("a timer was registered for a record without a key"),
            None => wasmtime::bail!(
                "a timer was registered outside `process` or `on-timer` (no current key)"
            ),
        }
    }
}

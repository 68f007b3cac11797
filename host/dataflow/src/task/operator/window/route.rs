//! Where a window operator's outputs go: late records to the late output,
//! results keyed and timed by their window unless they set their own.

use sluice_runtime::wit;
use sluice_types::Position;

use crate::error::DataflowError;
use crate::task::operator::collector::Collector;

/// Late records go to the late output, in input order.
pub(super) fn route_late(
    out: &mut Collector,
    batch: &[wit::Record],
    positions: &[Option<Position>],
    wms: &[i64],
    mut late: Vec<usize>,
    output: &str,
) -> Result<(), DataflowError> {
    late.sort_unstable();
    for i in late {
        out.counters.late_records_dropped.inc();
        let record = sluice_runtime::from_wit(batch[i].clone(), positions[i]);
        out.router.push(Some(output), record, wms[i])?;
    }
    Ok(())
}

/// Results get the window's key and last millisecond unless they set their own.
pub(super) fn route_window_results(
    out: &mut Collector,
    mut result: wit::BatchResult,
    fired: &[wit::FiredWindow],
    positions: &[Option<Position>],
    originals: &[wit::Record],
) -> Result<(), DataflowError> {
    for emit in &mut result.emits {
        if let Some(f) = fired.get(emit.input as usize) {
            if emit.record.key.is_none() {
                emit.record.key = Some(f.key.clone());
            }
            if emit.record.event_time.is_none() {
                emit.record.event_time = Some(f.window.end.saturating_sub(1));
            }
        }
    }
    out.route(result, positions, originals, None)
}

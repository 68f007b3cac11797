//! Record processing in spans: a batch is cut where the watermark reaches
//! a timer or window due, so that one guest call over a span gives the same
//! result as calls record by record (DESIGN.md, decision 8).

use sluice_runtime::{wit, Instance, TimerOp};
use sluice_types::Position;

use super::collector::Collector;
use super::timers::Timers;
use super::window::Windows;
use crate::error::DataflowError;

/// The end of the span from `start`: before the first later record at
/// which the watermark advances to a pending event-time timer, counting
/// the window timers the span's own records would register, and right
/// after a record that makes a window fire again (allowed lateness).
pub(super) fn span_end(
    timers: Option<&Timers>,
    windows: Option<&Windows>,
    batch: &[wit::Record],
    wms: &[i64],
    start: usize,
) -> usize {
    let mut due = timers.and_then(Timers::next_event).unwrap_or(i64::MAX);
    let windows = windows.filter(|w| w.is_event_time());
    let mut scratch = Vec::new();
    for k in start..batch.len() {
        if k > start && wms[k] > wms[k - 1] && due <= wms[k] {
            return k;
        }
        if let (Some(w), Some(ts)) = (windows, batch[k].event_time) {
            match w.first_firing(ts, wms[k], &mut scratch) {
                Some(at) if at <= wms[k] => return k + 1,
                Some(at) => due = due.min(at),
                None => {}
            }
        }
    }
    batch.len()
}

/// One `process` call over a span; how many records it consumed, or
/// `None` if the call failed and its records must go one by one.
/// Operators with timers keep the call's state writes journaled until
/// its timers are checked: a timer a record registered that a later
/// record's watermark reaches must fire between the two, so the call is
/// undone and redone up to that record.
pub(super) fn call_process(
    instance: &mut Instance,
    timers: &mut Option<Timers>,
    out: &mut Collector,
    batch: &[wit::Record],
    positions: &[Option<Position>],
    wms: &[i64],
) -> Result<Option<usize>, DataflowError> {
    let hold = timers.is_some() && batch.len() > 1;
    match instance.process_at(batch, wms, positions, hold) {
        Ok(result) => {
            let ops = instance.take_timer_ops();
            if hold {
                if let Some(k) = first_reached(&ops, wms) {
                    instance.settle(false);
                    out.reset(instance)?;
                    return call_process(
                        instance,
                        timers,
                        out,
                        &batch[..k],
                        &positions[..k],
                        &wms[..k],
                    );
                }
                instance.settle(true);
            }
            if let Some(timers) = timers {
                timers.apply(instance, ops);
            }
            out.route(result, positions, batch, Some(wms))?;
            Ok(Some(batch.len()))
        }
        // The failed call's state writes were rolled back; isolate
        // the poison record on a fresh instance.
        Err(e) => out.failed_span(instance, e, batch, positions),
    }
}

/// The first input of a call at which the watermark reaches an event-time
/// timer the call registered for an earlier input: called record by record,
/// the timer would have fired there, before that input.
fn first_reached(ops: &[TimerOp], wms: &[i64]) -> Option<usize> {
    let advances = |k: usize| wms[k] > wms[k - 1];
    let mut first: Option<usize> = None;
    for op in ops
        .iter()
        .filter(|o| !o.delete && o.domain == wit::TimeDomain::EventTime)
    {
        let after = op.input as usize + 1;
        if after >= wms.len() {
            continue;
        }
        // The watermark never goes back: the first input at or past the timer...
        let at = after + wms[after..].partition_point(|w| *w < op.timestamp);
        // ...fires it if the watermark advanced there, else the next advance does.
        let k = (at..wms.len()).find(|&k| k > 0 && advances(k));
        if let Some(k) = k {
            first = Some(first.map_or(k, |f| f.min(k)));
        }
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timer(input: u32, timestamp: i64) -> TimerOp {
        TimerOp {
            domain: wit::TimeDomain::EventTime,
            timestamp,
            key_group: 0,
            key: b"k".to_vec(),
            delete: false,
            input,
        }
    }

    #[test]
    fn a_timer_is_reached_where_the_watermark_advances_to_it() {
        let wms = [0, 10, 20, 20, 30, 40];
        assert_eq!(first_reached(&[timer(0, 15)], &wms), Some(2));
        assert_eq!(first_reached(&[timer(0, 20)], &wms), Some(2));
        assert_eq!(
            first_reached(&[timer(2, 20)], &wms),
            Some(4),
            "registered at 20, in the past: the next advance fires it"
        );
        assert_eq!(
            first_reached(&[timer(0, 41)], &wms),
            None,
            "not reached in this call"
        );
        assert_eq!(
            first_reached(&[timer(5, 0)], &wms),
            None,
            "registered by the last input"
        );
        assert_eq!(first_reached(&[timer(3, 35), timer(0, 25)], &wms), Some(4));
        let mut deleted = timer(0, 15);
        deleted.delete = true;
        assert_eq!(first_reached(&[deleted], &wms), None);
    }
}

//! Watermarks: generating them where the pipeline declares event time, and
//! merging them where streams meet.
//!
//! A watermark `w` from a producer promises that no record with an event time
//! `<= w` follows from it. The watermark is `max event time - out_of_orderness
//! - 1 ms` and advances record by record: every record carries the watermark
//! in force just before it (see `Message::Batch`), so lateness and firing
//! do not depend on the batch size. `Watermark` messages after a batch carry
//! it on when no record follows. Generators track the largest event time per
//! source split (Kafka partition, Kinesis shard, file), so a split that lags
//! holds the watermark back, and a split silent for longer than the idleness
//! timeout stops doing so. Consumers take the minimum over their producers,
//! ignoring idle ones; a finished producer counts as `i64::MAX`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sluice_config::{Timestamps, WatermarkSpec};
use sluice_types::Record;

/// No watermark yet.
pub(crate) const NO_WATERMARK: i64 = i64::MIN;

/// For `benches/watermarks.rs` only: with `SLUICE_BENCH_PER_BATCH_WATERMARKS=1`
/// every record of a batch carries the watermark from before the batch (the
/// old per-batch semantics, whose answers depend on the batch size), so the
/// bench can measure what per-record watermarks cost in the same run.
pub(crate) fn per_batch_baseline() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        std::env::var_os("SLUICE_BENCH_PER_BATCH_WATERMARKS").is_some_and(|v| v == "1")
    })
}

/// What a generator has to say after a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WatermarkUpdate {
    /// The watermark advanced to this.
    Advance(i64),
    /// Every split is idle.
    Idle,
}

struct Split {
    max_ts: i64,
    last_seen: Instant,
}

/// Bounded-out-of-orderness watermarks, per split.
pub(crate) struct WatermarkGenerator {
    out_of_orderness: i64,
    idle_timeout: Option<Duration>,
    ingestion: bool,
    splits: HashMap<(u16, u32), Split>,
    /// The watermark in force (it only grows).
    emitted: i64,
    /// The last one sent in a `Watermark` message.
    announced: i64,
    idle: bool,
}

impl WatermarkGenerator {
    pub(crate) fn new(spec: &WatermarkSpec) -> Self {
        WatermarkGenerator {
            out_of_orderness: spec.out_of_orderness.0,
            idle_timeout: spec.idle_timeout.map(|m| Duration::from_millis(m.0 as u64)),
            ingestion: spec.timestamps == Timestamps::Ingestion,
            splits: HashMap::new(),
            emitted: NO_WATERMARK,
            announced: NO_WATERMARK,
            idle: false,
        }
    }

    /// Note a record (stamping it first, for ingestion time) and return the
    /// watermark in force just before it. Records without an event time do
    /// not move the watermark.
    pub(crate) fn observe(&mut self, record: &mut Record, now: Instant, now_ms: i64) -> i64 {
        let before = self.emitted;
        if self.ingestion {
            record.event_time = Some(now_ms);
        }
        let Some(ts) = record.event_time else {
            return before;
        };
        let split = record.position.map_or((0, 0), |p| (p.source, p.split));
        let s = self.splits.entry(split).or_insert(Split {
            max_ts: i64::MIN,
            last_seen: now,
        });
        let was = s.max_ts;
        s.max_ts = s.max_ts.max(ts);
        s.last_seen = now;
        let max_ts = s.max_ts;
        // The minimum over splits moves only when the split at it moves.
        if max_ts > was && self.emitted < self.bound(max_ts) {
            if let Some(min) = self.active_min(now) {
                self.emitted = self.emitted.max(self.bound(min));
            }
        }
        before
    }

    /// The watermark a split maximum allows.
    fn bound(&self, max_ts: i64) -> i64 {
        max_ts
            .saturating_sub(self.out_of_orderness)
            .saturating_sub(1)
    }

    /// The smallest maximum over the splits not idle at `now`.
    fn active_min(&self, now: Instant) -> Option<i64> {
        let active = |s: &&Split| {
            self.idle_timeout
                .is_none_or(|t| now.duration_since(s.last_seen) < t)
        };
        self.splits.values().filter(active).map(|s| s.max_ts).min()
    }

    /// Per-split progress, for a checkpoint.
    pub(crate) fn state(&self) -> Vec<(u16, u32, i64)> {
        let mut v: Vec<_> = self
            .splits
            .iter()
            .map(|((src, split), s)| (*src, *split, s.max_ts))
            .collect();
        v.push((u16::MAX, u32::MAX, self.emitted));
        v.sort_unstable();
        v
    }

    /// Continue from a checkpoint's [`state`](Self::state).
    pub(crate) fn restore(&mut self, state: &[(u16, u32, i64)]) {
        let now = Instant::now();
        for (src, split, ts) in state {
            if (*src, *split) == (u16::MAX, u32::MAX) {
                self.emitted = *ts;
                self.announced = *ts;
            } else {
                self.splits.insert(
                    (*src, *split),
                    Split {
                        max_ts: *ts,
                        last_seen: now,
                    },
                );
            }
        }
    }

    /// The watermark in force.
    pub(crate) fn current(&self) -> i64 {
        self.emitted
    }

    /// The watermark to announce now, if it changed since the last call.
    pub(crate) fn poll(&mut self, now: Instant) -> Option<WatermarkUpdate> {
        match self.active_min(now) {
            None if !self.splits.is_empty() && !self.idle => {
                self.idle = true;
                Some(WatermarkUpdate::Idle)
            }
            None => None,
            Some(max_ts) => {
                self.emitted = self.emitted.max(self.bound(max_ts));
                let was_idle = std::mem::replace(&mut self.idle, false);
                if self.emitted > self.announced || (was_idle && self.emitted > NO_WATERMARK) {
                    self.announced = self.emitted;
                    Some(WatermarkUpdate::Advance(self.emitted))
                } else {
                    None
                }
            }
        }
    }
}

/// The sources of one alignment group (`alignment_group`): each source
/// subtask's watermark, so that one too far ahead of the slowest waits.
#[derive(Default)]
pub(crate) struct AlignmentGroup {
    /// Per member: its watermark and when it last moved.
    marks: std::sync::Mutex<HashMap<(usize, usize), (i64, Instant)>>,
}

impl AlignmentGroup {
    /// Member `who` (source index, subtask) exists: until it has a watermark
    /// (or has been silent for the idle timeout) the others wait for it, so a
    /// source that starts late does not let the rest race ahead.
    pub(crate) fn join(&self, who: (usize, usize)) {
        self.marks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(who, (NO_WATERMARK, Instant::now()));
    }

    /// Member `who` is at `wm`; whether it must wait: more than `drift`
    /// ahead of the lowest other member that has not been still for `idle`
    /// (members that finished are gone).
    pub(crate) fn must_wait(
        &self,
        who: (usize, usize),
        wm: i64,
        drift: i64,
        idle: Option<Duration>,
    ) -> bool {
        let now = Instant::now();
        let mut marks = self
            .marks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mine = marks.entry(who).or_insert((wm, now));
        if mine.0 != wm {
            *mine = (wm, now);
        }
        let slowest = marks
            .iter()
            .filter(|(k, (_, moved))| {
                **k != who && idle.is_none_or(|t| now.duration_since(*moved) < t)
            })
            .map(|(_, (at, _))| *at)
            .min();
        wm > NO_WATERMARK && slowest.is_some_and(|s| wm > s.saturating_add(drift))
    }

    /// Member `who` finished: it holds nobody back any more.
    pub(crate) fn leave(&self, who: (usize, usize)) {
        self.marks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&who);
    }
}

#[derive(Clone, Copy)]
struct Mark {
    at: i64,
    idle: bool,
}

/// The watermark of a consumer subtask: the minimum over its producers.
pub(crate) struct InputWatermarks {
    marks: HashMap<u32, Mark>,
    expected: usize,
    current: i64,
}

impl InputWatermarks {
    /// For a consumer fed by `expected` distinct producers.
    pub(crate) fn new(expected: usize) -> Self {
        InputWatermarks {
            marks: HashMap::new(),
            expected,
            current: NO_WATERMARK,
        }
    }

    /// Continue from a checkpointed watermark: it never goes back below it.
    pub(crate) fn restore(&mut self, watermark: i64) {
        self.current = self.current.max(watermark);
    }

    /// The current combined watermark.
    pub(crate) fn current(&self) -> i64 {
        self.current
    }

    /// Whether every producer is idle (or finished) and at least one is idle.
    pub(crate) fn all_idle(&self) -> bool {
        self.marks.len() == self.expected
            && self.marks.values().any(|m| m.idle)
            && self.marks.values().all(|m| m.idle || m.at == i64::MAX)
    }

    /// The watermark `from` had in force before one of its records (see
    /// `Message::Batch`): like a `Watermark` message when it is ahead of
    /// what `from` announced. Returns the combined watermark.
    pub(crate) fn stamp(&mut self, from: u32, at: i64) -> i64 {
        let ahead = match self.marks.get(&from) {
            Some(m) => at > m.at,
            None => at > NO_WATERMARK,
        };
        if ahead {
            self.watermark(from, at);
        }
        self.current
    }

    /// A watermark from `from`; the new combined watermark if it advanced.
    pub(crate) fn watermark(&mut self, from: u32, at: i64) -> Option<i64> {
        let m = self.marks.entry(from).or_insert(Mark { at, idle: false });
        m.at = m.at.max(at);
        m.idle = false;
        self.recompute()
    }

    /// `from` went idle.
    pub(crate) fn idle(&mut self, from: u32) -> Option<i64> {
        let m = self.marks.entry(from).or_insert(Mark {
            at: NO_WATERMARK,
            idle: true,
        });
        m.idle = true;
        self.recompute()
    }

    /// `from` finished.
    pub(crate) fn end(&mut self, from: u32) -> Option<i64> {
        self.marks.insert(
            from,
            Mark {
                at: i64::MAX,
                idle: false,
            },
        );
        self.recompute()
    }

    fn recompute(&mut self) -> Option<i64> {
        if self.marks.len() < self.expected {
            return None;
        }
        let min = self
            .marks
            .values()
            .filter(|m| !m.idle)
            .map(|m| m.at)
            .min()?;
        if min > self.current {
            self.current = min;
            Some(min)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_config::Millis;
    use sluice_types::Position;

    fn rec(split: u32, ts: i64) -> Record {
        Record {
            event_time: Some(ts),
            position: Some(Position {
                source: 0,
                split,
                offset: 0,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn generator_takes_the_minimum_over_splits_minus_out_of_orderness() {
        let spec = WatermarkSpec {
            out_of_orderness: Millis(100),
            ..Default::default()
        };
        let mut g = WatermarkGenerator::new(&spec);
        let t0 = Instant::now();
        g.observe(&mut rec(0, 1_000), t0, 0);
        assert_eq!(g.poll(t0), Some(WatermarkUpdate::Advance(899)));
        g.observe(&mut rec(1, 500), t0, 0);
        // Split 1 is behind: the watermark does not move back, and does not advance.
        assert_eq!(g.poll(t0), None);
        g.observe(&mut rec(0, 5_000), t0, 0);
        assert_eq!(g.poll(t0), None, "split 1 holds it back");
        g.observe(&mut rec(1, 2_000), t0, 0);
        assert_eq!(g.poll(t0), Some(WatermarkUpdate::Advance(1_899)));
    }

    #[test]
    fn each_record_gets_the_watermark_in_force_before_it() {
        let spec = WatermarkSpec {
            out_of_orderness: Millis(10),
            ..Default::default()
        };
        let mut g = WatermarkGenerator::new(&spec);
        let t0 = Instant::now();
        let stamps: Vec<i64> = [100, 50, 200, 150, 120]
            .iter()
            .map(|ts| g.observe(&mut rec(0, *ts), t0, 0))
            .collect();
        assert_eq!(
            stamps,
            vec![NO_WATERMARK, 89, 89, 189, 189],
            "running maximum - 10 - 1, as of the record before"
        );
        assert_eq!(g.current(), 189);
        assert_eq!(g.poll(t0), Some(WatermarkUpdate::Advance(189)));
        assert_eq!(g.poll(t0), None, "announced once");
    }

    #[test]
    fn a_stamp_is_a_watermark_message_when_it_is_ahead() {
        let mut w = InputWatermarks::new(2);
        assert_eq!(
            w.stamp(1, 100),
            NO_WATERMARK,
            "producer 2 not heard from yet"
        );
        assert_eq!(w.stamp(2, 50), 50);
        assert_eq!(
            w.stamp(2, NO_WATERMARK),
            50,
            "no watermark yet in front of a record changes nothing"
        );
        assert_eq!(w.stamp(2, 40), 50, "never back");
        assert_eq!(w.stamp(2, 300), 100);
    }

    #[test]
    fn an_idle_split_stops_holding_the_watermark_back() {
        let spec = WatermarkSpec {
            idle_timeout: Some(Millis(50)),
            ..Default::default()
        };
        let mut g = WatermarkGenerator::new(&spec);
        let t0 = Instant::now();
        g.observe(&mut rec(1, 10), t0, 0);
        g.observe(&mut rec(0, 1_000), t0, 0);
        assert_eq!(g.poll(t0), Some(WatermarkUpdate::Advance(9)));
        let later = t0 + Duration::from_millis(60);
        g.observe(&mut rec(0, 2_000), later, 0);
        assert_eq!(g.poll(later), Some(WatermarkUpdate::Advance(1_999)));
        let much_later = later + Duration::from_millis(60);
        assert_eq!(g.poll(much_later), Some(WatermarkUpdate::Idle));
        assert_eq!(g.poll(much_later), None, "idle is reported once");
    }

    #[test]
    fn inputs_merge_as_minimum_and_skip_idle_producers() {
        let mut w = InputWatermarks::new(2);
        assert_eq!(w.watermark(1, 100), None, "producer 2 not heard from yet");
        assert_eq!(w.watermark(2, 50), Some(50));
        assert_eq!(w.watermark(2, 300), Some(100));
        assert_eq!(w.idle(1), Some(300));
        assert!(!w.all_idle());
        assert_eq!(
            w.watermark(1, 200),
            None,
            "back from idle, behind: holds, never regresses"
        );
        assert_eq!(w.current(), 300);
        assert_eq!(w.end(1), None);
        assert_eq!(w.end(2), Some(i64::MAX));
    }
}

//! The delivery stage of the event-time datasets (turbines, clicks): it
//! turns records generated in event-time order into a realistic emission
//! order, with bounded jitter and late records, and assigns positions.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

use sluice_types::{Position, Record};

/// A record waiting in the [`Delivery`] stage, with a tag the sequence
/// gets back on emission (ground truth for tests). Ordered by `(at, seq)`,
/// smallest first (for a min-heap in [`BinaryHeap`]).
struct Queued<T> {
    /// Arrival time (on-time records) or release time (late records), in
    /// event-time ms.
    at: i64,
    /// Generation order, for a deterministic tie-break.
    seq: u64,
    split: u32,
    late: bool,
    record: Record,
    tag: T,
}

impl<T> PartialEq for Queued<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<T> Eq for Queued<T> {}

impl<T> PartialOrd for Queued<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Queued<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// How a generated record is delivered.
pub(crate) enum Delay {
    /// Arrives `ms` (0 ..= the out-of-order bound) after its event time;
    /// records leave in arrival order.
    OnTime(i64),
    /// Held back until its split has emitted a record at least `ms` newer.
    Late(i64),
}

/// The delivery stage between generation (in nondecreasing event time) and
/// emission. On-time records leave in order of arrival time (event time plus
/// a delay of at most the out-of-order bound), so each is at most that bound
/// behind anything emitted before it. Late records are held back per split
/// and leave right after their split has emitted a record whose event time
/// is at least their delay newer; when generation has ended, the ones still
/// held leave last, in order of release time. Emission assigns positions:
/// per-split offsets counting from 0.
pub(crate) struct Delivery<T> {
    source_index: u16,
    on_time: BinaryHeap<Queued<T>>,
    /// Late records held back, per split, by release time.
    held: Vec<BinaryHeap<Queued<T>>>,
    /// Late records released, in order.
    ready: VecDeque<Queued<T>>,
    /// Largest event time emitted per split.
    split_max: Vec<i64>,
    /// Next offset per split.
    offsets: Vec<u64>,
    seq: u64,
}

impl<T> Delivery<T> {
    pub(crate) fn new(source_index: u16, splits: u32) -> Self {
        let splits = splits.max(1) as usize;
        Delivery {
            source_index,
            on_time: BinaryHeap::new(),
            held: (0..splits).map(|_| BinaryHeap::new()).collect(),
            ready: VecDeque::new(),
            split_max: vec![i64::MIN; splits],
            offsets: vec![0; splits],
            seq: 0,
        }
    }

    /// Take a generated record (with its event time set and no position).
    /// Event times must be pushed in nondecreasing order.
    pub(crate) fn push(&mut self, split: u32, record: Record, delay: Delay, tag: T) {
        let event_time = record
            .event_time
            .expect("generated records have an event time");
        let seq = self.seq;
        self.seq += 1;
        match delay {
            Delay::OnTime(ms) => self.on_time.push(Queued {
                at: event_time.saturating_add(ms),
                seq,
                split,
                late: false,
                record,
                tag,
            }),
            Delay::Late(ms) => self.held[split as usize].push(Queued {
                at: event_time.saturating_add(ms),
                seq,
                split,
                late: true,
                record,
                tag,
            }),
        }
    }

    /// The next record to emit, whether it was generated late, and its tag,
    /// if one can leave now. `horizon` is the event time of the next record
    /// generation would push, or `None` once generation has ended. `None`
    /// means: push more (or, with no horizon, the stage is empty).
    pub(crate) fn pop(&mut self, horizon: Option<i64>) -> Option<(bool, Record, T)> {
        if let Some(q) = self.ready.pop_front() {
            return Some(self.emit(q));
        }
        // A record pushed later arrives at or after the horizon, with a
        // larger `seq`: anything arriving by the horizon can leave.
        if self
            .on_time
            .peek()
            .is_some_and(|q| horizon.is_none_or(|h| q.at <= h))
        {
            let q = self.on_time.pop().expect("peeked");
            let split = q.split as usize;
            let emitted = self.emit(q);
            let max = self.split_max[split];
            let held = &mut self.held[split];
            while held.peek().is_some_and(|q| q.at <= max) {
                self.ready.push_back(held.pop().expect("peeked"));
            }
            return Some(emitted);
        }
        if horizon.is_none() {
            // Generation has ended: flush what is still held.
            let split = (0..self.held.len())
                .filter(|&s| !self.held[s].is_empty())
                .max_by(|&a, &b| self.held[a].peek().cmp(&self.held[b].peek()))?;
            let q = self.held[split].pop().expect("non-empty");
            return Some(self.emit(q));
        }
        None
    }

    fn emit(&mut self, q: Queued<T>) -> (bool, Record, T) {
        let split = q.split as usize;
        let mut record = q.record;
        let event_time = record
            .event_time
            .expect("generated records have an event time");
        self.split_max[split] = self.split_max[split].max(event_time);
        record.position = Some(Position {
            source: self.source_index,
            split: q.split,
            offset: self.offsets[split],
        });
        self.offsets[split] += 1;
        (q.late, record, q.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(t: i64) -> Record {
        Record {
            event_time: Some(t),
            value: t.to_string().into_bytes(),
            ..Default::default()
        }
    }

    fn drain(d: &mut Delivery<()>) -> Vec<(bool, i64, u32, u64)> {
        std::iter::from_fn(|| d.pop(None))
            .map(|(late, r, ())| {
                let p = r.position.unwrap();
                (late, r.event_time.unwrap(), p.split, p.offset)
            })
            .collect()
    }

    #[test]
    fn delivery_orders_by_arrival_and_releases_late_records() {
        let mut d = Delivery::new(3, 2);
        d.push(0, rec(0), Delay::OnTime(50), ());
        d.push(1, rec(10), Delay::OnTime(0), ());
        d.push(0, rec(20), Delay::Late(100), ());
        // Record 10 arrives at 10, before the horizon 30; record 0 at 50 not yet.
        let (late, r, ()) = d.pop(Some(30)).unwrap();
        assert!(!late && r.event_time == Some(10));
        assert_eq!(
            r.position,
            Some(Position {
                source: 3,
                split: 1,
                offset: 0
            })
        );
        assert!(d.pop(Some(30)).is_none());
        d.push(0, rec(130), Delay::OnTime(0), ());
        d.push(0, rec(200), Delay::OnTime(0), ());
        // 0 (arrives 50), 130, then late 20 (released once split 0 reached 120), 200.
        assert_eq!(
            drain(&mut d),
            [
                (false, 0, 0, 0),
                (false, 130, 0, 1),
                (true, 20, 0, 2),
                (false, 200, 0, 3)
            ]
        );
        // Held records that are never released leave at the end, by release time.
        let mut d = Delivery::new(0, 2);
        d.push(1, rec(5), Delay::Late(1_000), ());
        d.push(0, rec(6), Delay::Late(10), ());
        d.push(0, rec(7), Delay::OnTime(0), ());
        assert_eq!(
            drain(&mut d),
            [(false, 7, 0, 0), (true, 6, 0, 1), (true, 5, 1, 0)]
        );
    }
}

//! Barrier alignment at a consumer subtask: once a producer has delivered
//! barrier N, what it sends next belongs to checkpoint N+1 and is held back
//! until every producer has delivered N (or finished). Then the subtask
//! snapshots, and the held-back messages are processed in order.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::time::{Duration, Instant};

use sluice_types::Message;

struct Align {
    id: u64,
    seen: HashSet<u32>,
    held: VecDeque<Message>,
    started: Instant,
}

/// What to do with a received message.
pub(crate) enum Offer {
    /// Process it.
    Handle(Message),
    /// Held back (or a stale duplicate barrier): nothing to do now.
    Held,
    /// Barrier `id` is aligned: snapshot now, then continue.
    Aligned(u64, Duration),
}

/// The alignment state of one consumer subtask.
pub(crate) struct Aligner {
    producers: BTreeSet<u32>,
    finished: HashSet<u32>,
    current: Option<Align>,
    last: u64,
    replay: VecDeque<Message>,
}

fn from(m: &Message) -> u32 {
    match m {
        Message::Batch { from, .. }
        | Message::Barrier { from, .. }
        | Message::Watermark { from, .. }
        | Message::Idle { from }
        | Message::End { from, .. } => *from,
    }
}

impl Aligner {
    /// For a subtask fed by `producers`; barriers up to `last` are done.
    pub(crate) fn new(producers: BTreeSet<u32>, last: u64) -> Self {
        Aligner {
            producers,
            finished: HashSet::new(),
            current: None,
            last,
            replay: VecDeque::new(),
        }
    }

    /// A held-back message to process before receiving more.
    pub(crate) fn replay(&mut self) -> Option<Message> {
        self.replay.pop_front()
    }

    /// Sort a received message.
    pub(crate) fn offer(&mut self, m: Message) -> Offer {
        if let Some(a) = &mut self.current {
            if a.seen.contains(&from(&m)) {
                a.held.push_back(m);
                return Offer::Held;
            }
        }
        match m {
            Message::Barrier { from, id } => {
                if id <= self.last {
                    return Offer::Held;
                }
                match &self.current {
                    // An abandoned checkpoint's barrier, from a producer that
                    // injected it late: the one being aligned follows from it.
                    Some(a) if id < a.id => return Offer::Held,
                    // A producer never injected the checkpoint being aligned
                    // (abandoned before it started): that alignment cannot
                    // complete. Give it up, release what it held back, in
                    // order and first, and align the newer one.
                    Some(a) if id > a.id => {
                        let abandoned = self.current.take().expect("current");
                        for m in abandoned.held.into_iter().rev() {
                            self.replay.push_front(m);
                        }
                    }
                    _ => {}
                }
                let a = self.current.get_or_insert_with(|| Align {
                    id,
                    seen: HashSet::new(),
                    held: VecDeque::new(),
                    started: Instant::now(),
                });
                a.seen.insert(from);
                self.check()
            }
            m => Offer::Handle(m),
        }
    }

    /// A producer finished (its `End` was handled): it no longer holds an
    /// alignment back.
    pub(crate) fn ended(&mut self, producer: u32) -> Option<(u64, Duration)> {
        self.finished.insert(producer);
        match self.check() {
            Offer::Aligned(id, d) => Some((id, d)),
            _ => None,
        }
    }

    fn check(&mut self) -> Offer {
        let Some(a) = &self.current else {
            return Offer::Held;
        };
        if self
            .producers
            .iter()
            .all(|p| a.seen.contains(p) || self.finished.contains(p))
        {
            let a = self.current.take().expect("current");
            self.last = a.id;
            // Held messages come before anything still queued for replay.
            for m in a.held.into_iter().rev() {
                self.replay.push_front(m);
            }
            Offer::Aligned(a.id, a.started.elapsed())
        } else {
            Offer::Held
        }
    }

    /// Nothing is held back or waiting for replay.
    pub(crate) fn idle(&self) -> bool {
        self.replay.is_empty() && self.current.as_ref().is_none_or(|a| a.held.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(from: u32) -> Message {
        Message::Batch {
            from,
            records: Vec::new(),
            watermarks: Vec::new(),
        }
    }

    fn aligned(o: Offer) -> Option<u64> {
        match o {
            Offer::Aligned(id, _) => Some(id),
            _ => None,
        }
    }

    fn handled(o: Offer) -> bool {
        matches!(o, Offer::Handle(_))
    }

    #[test]
    fn holds_back_a_producer_past_its_barrier_until_all_delivered_it() {
        let mut a = Aligner::new([0, 1].into(), 0);
        assert!(aligned(a.offer(Message::Barrier { from: 0, id: 1 })).is_none());
        assert!(
            !handled(a.offer(batch(0))),
            "after its barrier, producer 0 waits"
        );
        assert!(handled(a.offer(batch(1))));
        assert_eq!(
            aligned(a.offer(Message::Barrier { from: 1, id: 1 })),
            Some(1)
        );
        assert!(matches!(a.replay(), Some(Message::Batch { from: 0, .. })));
        assert!(a.idle());
    }

    #[test]
    fn a_newer_barrier_from_a_producer_that_skipped_one_gives_up_the_older_alignment() {
        let mut a = Aligner::new([0, 1].into(), 0);
        assert!(aligned(a.offer(Message::Barrier { from: 0, id: 1 })).is_none());
        assert!(!handled(a.offer(batch(0))));
        // Producer 1 started after checkpoint 1 was abandoned: its first barrier is 2.
        assert!(aligned(a.offer(Message::Barrier { from: 1, id: 2 })).is_none());
        let released = a.replay().expect("producer 0's held batch is released");
        assert!(
            handled(a.offer(released)),
            "it belongs before barrier 2 and is processed"
        );
        assert!(
            !handled(a.offer(batch(1))),
            "producer 1 is past barrier 2 and waits"
        );
        assert_eq!(
            aligned(a.offer(Message::Barrier { from: 0, id: 2 })),
            Some(2)
        );
        assert!(matches!(a.replay(), Some(Message::Batch { from: 1, .. })));
    }

    #[test]
    fn an_abandoned_barrier_that_arrives_late_is_ignored() {
        let mut a = Aligner::new([0, 1].into(), 0);
        assert!(aligned(a.offer(Message::Barrier { from: 1, id: 2 })).is_none());
        assert!(
            !handled(a.offer(Message::Barrier { from: 0, id: 1 })),
            "checkpoint 1 is not aligned any more"
        );
        assert!(handled(a.offer(batch(0))));
        assert_eq!(
            aligned(a.offer(Message::Barrier { from: 0, id: 2 })),
            Some(2)
        );
    }
}

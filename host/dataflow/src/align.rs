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
        Message::Batch { from, .. } | Message::Barrier { from, .. } | Message::Watermark { from, .. } | Message::Idle { from } | Message::End { from, .. } => *from,
    }
}

impl Aligner {
    /// For a subtask fed by `producers`; barriers up to `last` are done.
    pub(crate) fn new(producers: BTreeSet<u32>, last: u64) -> Self {
        Aligner { producers, finished: HashSet::new(), current: None, last, replay: VecDeque::new() }
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
                let a = self.current.get_or_insert_with(|| Align { id, seen: HashSet::new(), held: VecDeque::new(), started: Instant::now() });
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
        let Some(a) = &self.current else { return Offer::Held };
        if self.producers.iter().all(|p| a.seen.contains(p) || self.finished.contains(p)) {
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

//! Undoing a guest call: between [`begin_call`](OperatorState::begin_call)
//! and its commit or rollback, the first write of each key keeps the key's
//! previous cache slot in the journal, so that a trapping or refused call
//! leaves no partial state behind.

use crate::cache::{slot_bytes, OperatorState};

impl OperatorState {
    /// Start journaling writes so that [`rollback_call`](Self::rollback_call)
    /// can undo them.
    pub fn begin_call(&mut self) {
        self.in_call = true;
        self.call_now = None;
        self.call = self.call.wrapping_add(1).max(1);
        match &mut self.journal {
            Some(j) => j.clear(),
            None => self.journal = Some(Vec::new()),
        }
    }

    /// Keep the writes made since [`begin_call`](Self::begin_call).
    pub fn commit_call(&mut self) {
        self.in_call = false;
        if let Some(j) = &mut self.journal {
            j.clear();
        }
    }

    /// Undo the writes made since [`begin_call`](Self::begin_call).
    pub fn rollback_call(&mut self) {
        self.in_call = false;
        let Some(mut journal) = self.journal.take() else {
            return;
        };
        while let Some((key, previous)) = journal.pop() {
            if let Some(current) = self.cache.remove(&key) {
                self.cache_bytes -= slot_bytes(&key, &current);
                if current.dirty {
                    self.dirty -= 1;
                }
            }
            if let Some(prev) = previous {
                self.cache_bytes += slot_bytes(&key, &prev);
                if prev.dirty {
                    self.dirty += 1;
                }
                self.cache.insert(key, prev);
            }
        }
        journal.clear();
        self.journal = Some(journal);
    }
}

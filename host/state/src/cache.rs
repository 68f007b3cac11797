//! [`OperatorState`]: the keyed state of one operator subtask, a write-back
//! cache over the pipeline's database. This file holds the cache itself
//! (storage keys, reads, journaled writes, eviction, flushes) and value
//! state; declaring states and their TTL is in `declare.rs`, map state in
//! `map.rs`, the undo of a guest call in `journal.rs`.

use std::time::Duration;

use hashbrown::HashMap;
use rocksdb::{WriteBatch, WriteOptions};

use crate::backend::StateBackend;
use crate::clock::StateClock;
use crate::encoding::{is_ttl_key, live, prefix_end, Stored};
use crate::error::StateError;
use crate::id::{StateId, StateKind};

/// Bytes counted per cache entry on top of its key and value.
const ENTRY_OVERHEAD: usize = 64;

/// A cached value of one storage key.
pub(crate) struct Slot {
    pub(crate) value: Option<Box<[u8]>>,
    pub(crate) dirty: bool,
    /// RocksDB may hold a value for this key. A removal of a key it cannot
    /// hold (a window created and purged between two flushes) writes nothing.
    pub(crate) stored: bool,
    /// The guest call that last journaled this slot (0: none).
    pub(crate) call: u32,
}

/// A cache key written during a guest call and its slot before the call
/// (`None`: it did not exist), so the call can be undone.
pub(crate) type JournalEntry = (Box<[u8]>, Option<Slot>);

/// The keyed state of one operator subtask: a write-back cache over the
/// pipeline's RocksDB database. Not shared between threads.
pub struct OperatorState {
    pub(crate) backend: StateBackend,
    pub(crate) name: String,
    pub(crate) op: u16,
    pub(crate) states: std::collections::HashMap<String, (StateId, StateKind)>,
    pub(crate) cache: HashMap<Box<[u8]>, Slot, foldhash::fast::RandomState>,
    pub(crate) cache_bytes: usize,
    pub(crate) capacity: usize,
    pub(crate) dirty: usize,
    pub(crate) scratch: Vec<u8>,
    /// Whether `scratch` holds a map entry's key.
    pub(crate) scratch_is_map: bool,
    /// Cache keys of map entries, ordered, so that listing one key's map
    /// does not scan the whole cache. May hold keys evicted since (they are
    /// skipped, and pruned on eviction).
    pub(crate) map_index: std::collections::BTreeSet<Box<[u8]>>,
    /// Pre-call slots of the keys written during the current guest call,
    /// one entry per key (its first write in the call).
    pub(crate) journal: Option<Vec<JournalEntry>>,
    /// Id of the current guest call, for the journal.
    pub(crate) call: u32,
    pub(crate) clock: StateClock,
    /// TTL given to states declared with [`declare`](Self::declare).
    pub(crate) default_ttl: Option<Duration>,
    /// Current TTL in ms of each TTL state, by id without the TTL bit
    /// (empty until a TTL state is declared).
    pub(crate) ttls: Vec<i64>,
    /// Between [`begin_call`](Self::begin_call) and the matching commit or
    /// rollback: "now" is read once and kept in `call_now`.
    pub(crate) in_call: bool,
    pub(crate) call_now: Option<i64>,
}

/// Bytes a cache entry counts against the budget.
pub(crate) fn slot_bytes(key: &[u8], slot: &Slot) -> usize {
    key.len() + slot.value.as_ref().map_or(0, |v| v.len()) + ENTRY_OVERHEAD
}

impl StateBackend {
    /// The state of operator `name` for one subtask, with a write-back cache
    /// of at most `cache_bytes`.
    pub fn operator(&self, name: &str, cache_bytes: usize) -> Result<OperatorState, StateError> {
        let (op, _) = self.id(&format!("op/{name}"), "op-next", None)?;
        Ok(OperatorState {
            backend: self.clone(),
            name: name.to_string(),
            op,
            states: std::collections::HashMap::new(),
            cache: HashMap::with_hasher(foldhash::fast::RandomState::default()),
            cache_bytes: 0,
            capacity: cache_bytes.max(1 << 16),
            dirty: 0,
            scratch: Vec::with_capacity(256),
            scratch_is_map: false,
            map_index: std::collections::BTreeSet::new(),
            journal: None,
            call: 0,
            clock: self.inner.clock.clone(),
            default_ttl: None,
            ttls: Vec::new(),
            in_call: false,
            call_now: None,
        })
    }
}

impl OperatorState {
    /// Build the storage key into the scratch buffer.
    pub(crate) fn key(&mut self, kg: u16, state: StateId, key: &[u8], map_key: Option<&[u8]>) {
        let s = &mut self.scratch;
        s.clear();
        s.extend_from_slice(&kg.to_be_bytes());
        s.extend_from_slice(&self.op.to_be_bytes());
        s.extend_from_slice(&state.0.to_be_bytes());
        s.extend_from_slice(&(key.len() as u32).to_be_bytes());
        s.extend_from_slice(key);
        if let Some(m) = map_key {
            s.extend_from_slice(m);
        }
        self.scratch_is_map = map_key.is_some();
    }

    /// Note a new cache key in the map index if it is a map entry's.
    pub(crate) fn index_new_key(&mut self) {
        if self.scratch_is_map && !self.map_index.contains(self.scratch.as_slice()) {
            self.map_index
                .insert(self.scratch.clone().into_boxed_slice());
        }
    }

    pub(crate) fn read(&mut self) -> Result<Option<&[u8]>, StateError> {
        if !self.cache.contains_key(self.scratch.as_slice()) {
            let value = self
                .backend
                .inner
                .db
                .get(&self.scratch)
                .map_err(|e| self.backend.err(e))?;
            let stored = value.is_some();
            let slot = Slot {
                value: value.map(Vec::into_boxed_slice),
                dirty: false,
                call: 0,
                stored,
            };
            self.cache_bytes += slot_bytes(&self.scratch, &slot);
            self.cache
                .insert(self.scratch.clone().into_boxed_slice(), slot);
            self.index_new_key();
        }
        Ok(self
            .cache
            .get(self.scratch.as_slice())
            .and_then(|s| s.value.as_deref()))
    }

    pub(crate) fn write(&mut self, value: Option<Stored<'_>>) {
        let call = self.call;
        let key = self.scratch.as_slice();
        match self.cache.get_mut(key) {
            Some(existing) => {
                let before = slot_bytes(key, existing);
                match &mut self.journal {
                    // First write of this key in the call: keep the old slot
                    // (moved, not copied) so that a rollback can restore it.
                    // Host writes between calls (timers, windows) are not journaled.
                    Some(journal) if self.in_call && existing.call != call => {
                        let fresh = Slot {
                            value: value.map(Stored::to_box),
                            dirty: true,
                            call,
                            stored: existing.stored,
                        };
                        let previous = std::mem::replace(existing, fresh);
                        if !previous.dirty {
                            self.dirty += 1;
                        }
                        journal.push((key.into(), Some(previous)));
                    }
                    _ => {
                        match (&mut existing.value, value) {
                            // Same length: overwrite in place, no allocation.
                            (Some(old), Some(new)) if old.len() == new.len() => new.copy_to(old),
                            (old, new) => *old = new.map(Stored::to_box),
                        }
                        if !existing.dirty {
                            existing.dirty = true;
                            self.dirty += 1;
                        }
                    }
                }
                let after = slot_bytes(key, existing);
                self.cache_bytes = self.cache_bytes + after - before;
            }
            None => {
                // Not cached: RocksDB may have it.
                let slot = Slot {
                    value: value.map(Stored::to_box),
                    dirty: true,
                    call,
                    stored: true,
                };
                if let Some(journal) = self.journal.as_mut().filter(|_| self.in_call) {
                    journal.push((key.into(), None));
                }
                self.cache_bytes += slot_bytes(key, &slot);
                self.dirty += 1;
                self.cache.insert(key.into(), slot);
                self.index_new_key();
            }
        }
    }

    /// The value of `state` for `key` (in key group `kg`); `None` if there is
    /// none or it has expired.
    pub fn get(
        &mut self,
        kg: u16,
        state: StateId,
        key: &[u8],
    ) -> Result<Option<&[u8]>, StateError> {
        self.key(kg, state, key, None);
        if state.has_ttl() {
            return self.read_live();
        }
        self.read()
    }

    /// Set the value of `state` for `key` (for a TTL state: expiring a TTL
    /// from now).
    pub fn put(&mut self, kg: u16, state: StateId, key: &[u8], value: &[u8]) {
        self.key(kg, state, key, None);
        let expires = self.expiry(state);
        self.write(Some(Stored {
            expires,
            payload: value,
        }));
    }

    /// Remove the value of `state` for `key`.
    pub fn delete(&mut self, kg: u16, state: StateId, key: &[u8]) {
        self.key(kg, state, key, None);
        self.write(None);
    }

    /// Evict if the cache is over budget, expired values first. Call between
    /// guest calls, never during one (a journaled write must not reach
    /// RocksDB early).
    pub fn maintain(&mut self) -> Result<(), StateError> {
        // During a checkpoint only barrier flushes may reach RocksDB: the
        // cache grows past its budget until the checkpoint is taken.
        if self.cache_bytes <= self.capacity || self.backend.frozen() {
            return Ok(());
        }
        self.flush()?;
        if self.has_ttl() {
            // Every slot is clean now: an expired one is not worth keeping.
            let now = self.now();
            let mut bytes = self.cache_bytes;
            self.cache.retain(|k, slot| {
                let expired = is_ttl_key(k)
                    && slot
                        .value
                        .as_deref()
                        .is_some_and(|v| live(v, now).is_none());
                if expired {
                    bytes -= slot_bytes(k, slot);
                }
                !expired
            });
            self.cache_bytes = bytes;
        }
        // Random eviction (hash order) down to half the budget: cheap, and
        // with no per-access bookkeeping on the hot path.
        let target = self.capacity / 2;
        let mut bytes = self.cache_bytes;
        self.cache.retain(|k, slot| {
            if bytes <= target {
                return true;
            }
            bytes -= slot_bytes(k, slot);
            false
        });
        self.cache_bytes = bytes;
        let cache = &self.cache;
        self.map_index.retain(|k| cache.contains_key(k));
        Ok(())
    }

    /// Write every dirty entry to RocksDB in one batch.
    pub fn flush(&mut self) -> Result<(), StateError> {
        if self.dirty == 0 {
            return Ok(());
        }
        // A value that expired before reaching RocksDB is written as a deletion.
        let now = if self.has_ttl() {
            Some(self.now())
        } else {
            None
        };
        let mut freed = 0;
        let mut batch = WriteBatch::default();
        for (k, slot) in self.cache.iter_mut().filter(|(_, s)| s.dirty) {
            if let (Some(now), Some(v)) = (now, &slot.value) {
                if is_ttl_key(k) && live(v, now).is_none() {
                    freed += v.len();
                    slot.value = None;
                }
            }
            match &slot.value {
                Some(v) => batch.put(k, v),
                None if slot.stored => batch.delete(k),
                None => {}
            }
            slot.stored = slot.value.is_some();
            slot.dirty = false;
        }
        self.cache_bytes -= freed;
        let mut wo = WriteOptions::default();
        // Durability comes from checkpoints, not from the WAL.
        wo.disable_wal(true);
        self.backend
            .inner
            .db
            .write_opt(batch, &wo)
            .map_err(|e| self.backend.err(e))?;
        self.dirty = 0;
        if let Some(j) = &mut self.journal {
            j.clear();
        }
        Ok(())
    }

    /// Every key with state of this operator in the key groups `groups`
    /// (a subtask's range), with its key group, in storage order: what a
    /// state migration visits. Flushes the cache first, so that keys written
    /// since the last flush are included (and the journal is cleared: call
    /// this between guest calls). Keys whose only values expired are
    /// included; reads of them return nothing.
    pub fn keys(
        &mut self,
        groups: std::ops::Range<u16>,
    ) -> Result<Vec<(u16, Vec<u8>)>, StateError> {
        self.flush()?;
        let db = &self.backend.inner.db;
        let mut out = Vec::new();
        for kg in groups {
            let mut prefix = Vec::with_capacity(4);
            prefix.extend_from_slice(&kg.to_be_bytes());
            prefix.extend_from_slice(&self.op.to_be_bytes());
            let mut opts = rocksdb::ReadOptions::default();
            if let Some(end) = prefix_end(&prefix) {
                opts.set_iterate_upper_bound(end);
            }
            let mut it = db.raw_iterator_opt(opts);
            it.seek(&prefix);
            // States are ordered by id first, so a key recurs once per state.
            let mut seen = std::collections::BTreeSet::new();
            while let Some(k) = it.key() {
                // [kg 2][op 2][state 2][key length 4][key][map key]
                if let Some(len) = k
                    .get(6..10)
                    .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
                {
                    if let Some(key) = k.get(10..10 + len) {
                        if !seen.contains(key) {
                            seen.insert(key.to_vec());
                        }
                    }
                }
                it.next();
            }
            it.status().map_err(|e| self.backend.err(e))?;
            out.extend(seen.into_iter().map(|k| (kg, k)));
        }
        Ok(out)
    }

    /// Bytes the cache holds (approximate).
    pub fn cache_bytes(&self) -> usize {
        self.cache_bytes
    }

    /// Number of dirty entries not yet in RocksDB.
    pub fn dirty_entries(&self) -> usize {
        self.dirty
    }
}

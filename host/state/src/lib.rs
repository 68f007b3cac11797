//! Keyed state for Sluice operators.
//!
//! State lives in the host, never in guest memory (DESIGN.md, decision 1), so a
//! plugin swap or a restart keeps it. One RocksDB database per pipeline holds
//! the state of every operator; each operator subtask owns an
//! [`OperatorState`], a write-back cache in front of that database:
//!
//! - a read is a hash lookup when the key is hot, and a RocksDB point read
//!   (cached afterwards, misses included) when it is not;
//! - a write only touches the cache; dirty entries reach RocksDB in one
//!   `WriteBatch` when the cache is over its byte budget, and on
//!   [`OperatorState::flush`] (at the latest on a checkpoint barrier);
//! - the writes of one guest call can be rolled back
//!   ([`OperatorState::begin_call`] / [`OperatorState::rollback_call`]), so a
//!   trapping call leaves no partial state behind.
//!
//! Storage keys start with the key group, so the state of a key-group range
//! can be moved when an operator's parallelism changes:
//!
//! ```text
//! [key group u16][operator u16][state u16][key length u32][key][map key]
//! ```
#![deny(missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hashbrown::HashMap;
use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};

pub mod keygroup;

const META_CF: &str = "meta";
/// Bytes counted per cache entry on top of its key and value.
const ENTRY_OVERHEAD: usize = 64;

/// State errors.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// RocksDB failed.
    #[error("state store {path}: {source}")]
    Db {
        /// The database directory.
        path: PathBuf,
        /// The RocksDB error.
        #[source]
        source: rocksdb::Error,
    },
    /// A state name was declared with two different kinds.
    #[error("state `{name}` of operator `{operator}` was declared as {existing} state and is now used as {requested} state")]
    KindMismatch {
        /// Operator name.
        operator: String,
        /// State name.
        name: String,
        /// Kind it was first declared with.
        existing: StateKind,
        /// Kind it is used as now.
        requested: StateKind,
    },
    /// Too many operators or states.
    #[error("too many {0} in one pipeline (at most 65535)")]
    TooMany(&'static str),
}

/// The kinds of keyed state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateKind {
    /// One value per key.
    Value,
    /// A map per key.
    Map,
}

impl std::fmt::Display for StateKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StateKind::Value => "value",
            StateKind::Map => "map",
        })
    }
}

/// A handle to a declared state, valid within one [`OperatorState`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StateId(u16);

struct Inner {
    db: DB,
    path: PathBuf,
    /// Serialises id allocation in the meta column family.
    registry: Mutex<()>,
}

/// The state database of one pipeline. Cheap to clone.
#[derive(Clone)]
pub struct StateBackend {
    inner: Arc<Inner>,
}

impl StateBackend {
    /// Open (creating if needed) the database in `dir`. With `fresh`, any
    /// state already there is deleted first.
    pub fn open(dir: &Path, fresh: bool) -> Result<Self, StateError> {
        let db_err = |source| StateError::Db { path: dir.to_path_buf(), source };
        if fresh && dir.exists() {
            DB::destroy(&Options::default(), dir).map_err(db_err)?;
            let _ = std::fs::remove_dir_all(dir);
        }
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        opts.increase_parallelism(2);
        opts.set_write_buffer_size(64 << 20);
        let cfs = vec![
            ColumnFamilyDescriptor::new(rocksdb::DEFAULT_COLUMN_FAMILY_NAME, opts.clone()),
            ColumnFamilyDescriptor::new(META_CF, Options::default()),
        ];
        let db = DB::open_cf_descriptors(&opts, dir, cfs).map_err(db_err)?;
        Ok(StateBackend { inner: Arc::new(Inner { db, path: dir.to_path_buf(), registry: Mutex::new(()) }) })
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn err(&self, source: rocksdb::Error) -> StateError {
        StateError::Db { path: self.inner.path.clone(), source }
    }

    /// Allocate (or look up) the u16 id stored under `meta_key`.
    fn id(&self, meta_key: &str, counter_key: &str, kind: Option<StateKind>) -> Result<(u16, Option<u8>), StateError> {
        let _guard = self.inner.registry.lock().unwrap_or_else(|p| p.into_inner());
        let db = &self.inner.db;
        let cf = db.cf_handle(META_CF).expect("meta column family is created on open");
        if let Some(v) = db.get_cf(&cf, meta_key).map_err(|e| self.err(e))? {
            return Ok((u16::from_be_bytes([v[0], v[1]]), v.get(2).copied()));
        }
        let next = match db.get_cf(&cf, counter_key).map_err(|e| self.err(e))? {
            Some(v) => u16::from_be_bytes([v[0], v[1]]),
            None => 0,
        };
        if next == u16::MAX {
            return Err(StateError::TooMany(if kind.is_some() { "states" } else { "operators" }));
        }
        let mut value = next.to_be_bytes().to_vec();
        if let Some(k) = kind {
            value.push(k as u8);
        }
        let mut batch = WriteBatch::default();
        batch.put_cf(&cf, meta_key, &value);
        batch.put_cf(&cf, counter_key, (next + 1).to_be_bytes());
        db.write(batch).map_err(|e| self.err(e))?;
        Ok((next, value.get(2).copied()))
    }

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
            journal: None,
            call: 0,
        })
    }

    /// Number of keys stored in RocksDB (an estimate from RocksDB's
    /// properties), for tests and metrics.
    pub fn estimated_keys(&self) -> u64 {
        self.inner.db.property_int_value("rocksdb.estimate-num-keys").ok().flatten().unwrap_or(0)
    }

    /// Flush memtables to SST files, e.g. before shutdown.
    pub fn flush_to_disk(&self) -> Result<(), StateError> {
        self.inner.db.flush().map_err(|e| self.err(e))
    }
}

struct Slot {
    value: Option<Box<[u8]>>,
    dirty: bool,
    /// The guest call that last journaled this slot (0: none).
    call: u32,
}

/// The keyed state of one operator subtask: a write-back cache over the
/// pipeline's RocksDB database. Not shared between threads.
pub struct OperatorState {
    backend: StateBackend,
    name: String,
    op: u16,
    states: std::collections::HashMap<String, (StateId, StateKind)>,
    cache: HashMap<Box<[u8]>, Slot, foldhash::fast::RandomState>,
    cache_bytes: usize,
    capacity: usize,
    dirty: usize,
    scratch: Vec<u8>,
    /// Pre-call slots of the keys written during the current guest call,
    /// one entry per key (its first write in the call).
    journal: Option<Vec<(Box<[u8]>, Option<Slot>)>>,
    /// Id of the current guest call, for the journal.
    call: u32,
}

fn slot_bytes(key: &[u8], slot: &Slot) -> usize {
    key.len() + slot.value.as_ref().map_or(0, |v| v.len()) + ENTRY_OVERHEAD
}

impl OperatorState {
    /// Declare (or look up) the state `name` of kind `kind`.
    pub fn declare(&mut self, name: &str, kind: StateKind) -> Result<StateId, StateError> {
        if let Some((id, k)) = self.states.get(name) {
            if *k != kind {
                return Err(self.mismatch(name, *k, kind));
            }
            return Ok(*id);
        }
        let (id, stored) = self.backend.id(&format!("state/{}/{name}", self.op), &format!("state-next/{}", self.op), Some(kind))?;
        let stored = match stored {
            Some(1) => StateKind::Map,
            _ => StateKind::Value,
        };
        if stored != kind {
            return Err(self.mismatch(name, stored, kind));
        }
        self.states.insert(name.to_string(), (StateId(id), kind));
        Ok(StateId(id))
    }

    fn mismatch(&self, name: &str, existing: StateKind, requested: StateKind) -> StateError {
        StateError::KindMismatch { operator: self.name.clone(), name: name.to_string(), existing, requested }
    }

    /// Build the storage key into the scratch buffer.
    fn key(&mut self, kg: u16, state: StateId, key: &[u8], map_key: Option<&[u8]>) {
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
    }

    fn read(&mut self) -> Result<Option<&[u8]>, StateError> {
        if !self.cache.contains_key(self.scratch.as_slice()) {
            let value = self.backend.inner.db.get(&self.scratch).map_err(|e| self.backend.err(e))?;
            let slot = Slot { value: value.map(Vec::into_boxed_slice), dirty: false, call: 0 };
            self.cache_bytes += slot_bytes(&self.scratch, &slot);
            self.cache.insert(self.scratch.clone().into_boxed_slice(), slot);
        }
        Ok(self.cache.get(self.scratch.as_slice()).and_then(|s| s.value.as_deref()))
    }

    fn write(&mut self, value: Option<&[u8]>) {
        let call = self.call;
        let key = self.scratch.as_slice();
        match self.cache.get_mut(key) {
            Some(existing) => {
                let before = slot_bytes(key, existing);
                match &mut self.journal {
                    // First write of this key in the call: keep the old slot
                    // (moved, not copied) so that a rollback can restore it.
                    Some(journal) if existing.call != call => {
                        let fresh = Slot { value: value.map(Into::into), dirty: true, call };
                        let previous = std::mem::replace(existing, fresh);
                        if !previous.dirty {
                            self.dirty += 1;
                        }
                        journal.push((key.into(), Some(previous)));
                    }
                    _ => {
                        match (&mut existing.value, value) {
                            // Same length: overwrite in place, no allocation.
                            (Some(old), Some(new)) if old.len() == new.len() => old.copy_from_slice(new),
                            (old, new) => *old = new.map(Into::into),
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
                let slot = Slot { value: value.map(Into::into), dirty: true, call };
                if let Some(journal) = &mut self.journal {
                    journal.push((key.into(), None));
                }
                self.cache_bytes += slot_bytes(key, &slot);
                self.dirty += 1;
                self.cache.insert(key.into(), slot);
            }
        }
    }

    /// The value of `state` for `key` (in key group `kg`).
    pub fn get(&mut self, kg: u16, state: StateId, key: &[u8]) -> Result<Option<&[u8]>, StateError> {
        self.key(kg, state, key, None);
        self.read()
    }

    /// Set the value of `state` for `key`.
    pub fn put(&mut self, kg: u16, state: StateId, key: &[u8], value: &[u8]) {
        self.key(kg, state, key, None);
        self.write(Some(value));
    }

    /// Remove the value of `state` for `key`.
    pub fn delete(&mut self, kg: u16, state: StateId, key: &[u8]) {
        self.key(kg, state, key, None);
        self.write(None);
    }

    /// The value under `map_key` in map `state` of `key`.
    pub fn map_get(&mut self, kg: u16, state: StateId, key: &[u8], map_key: &[u8]) -> Result<Option<&[u8]>, StateError> {
        self.key(kg, state, key, Some(map_key));
        self.read()
    }

    /// Set `map_key` in map `state` of `key`.
    pub fn map_put(&mut self, kg: u16, state: StateId, key: &[u8], map_key: &[u8], value: &[u8]) {
        self.key(kg, state, key, Some(map_key));
        self.write(Some(value));
    }

    /// Remove `map_key` from map `state` of `key`.
    pub fn map_remove(&mut self, kg: u16, state: StateId, key: &[u8], map_key: &[u8]) {
        self.key(kg, state, key, Some(map_key));
        self.write(None);
    }

    /// All entries of map `state` of `key`, ordered by map key. Merges RocksDB
    /// with the cache, so it costs a scan of the cache: use it off the hot path.
    pub fn map_entries(&mut self, kg: u16, state: StateId, key: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StateError> {
        self.key(kg, state, key, None);
        let prefix = self.scratch.clone();
        let mut entries = std::collections::BTreeMap::new();
        let db = &self.backend.inner.db;
        let mut it = db.raw_iterator();
        it.seek(&prefix);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(&prefix) {
                break;
            }
            entries.insert(k[prefix.len()..].to_vec(), v.to_vec());
            it.next();
        }
        it.status().map_err(|e| self.backend.err(e))?;
        for (k, slot) in self.cache.iter() {
            if k.len() > prefix.len() && k.starts_with(&prefix) {
                match &slot.value {
                    Some(v) => entries.insert(k[prefix.len()..].to_vec(), v.to_vec()),
                    None => entries.remove(&k[prefix.len()..]),
                };
            }
        }
        Ok(entries.into_iter().collect())
    }

    /// Remove every entry of map `state` of `key`.
    pub fn map_clear(&mut self, kg: u16, state: StateId, key: &[u8]) -> Result<(), StateError> {
        for (map_key, _) in self.map_entries(kg, state, key)? {
            self.map_remove(kg, state, key, &map_key);
        }
        Ok(())
    }

    /// Start journaling writes so that [`rollback_call`](Self::rollback_call)
    /// can undo them.
    pub fn begin_call(&mut self) {
        self.call = self.call.wrapping_add(1).max(1);
        match &mut self.journal {
            Some(j) => j.clear(),
            None => self.journal = Some(Vec::new()),
        }
    }

    /// Keep the writes made since [`begin_call`](Self::begin_call).
    pub fn commit_call(&mut self) {
        if let Some(j) = &mut self.journal {
            j.clear();
        }
    }

    /// Undo the writes made since [`begin_call`](Self::begin_call).
    pub fn rollback_call(&mut self) {
        let Some(mut journal) = self.journal.take() else { return };
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

    /// Evict if the cache is over budget. Call between guest calls, never
    /// during one (a journaled write must not reach RocksDB early).
    pub fn maintain(&mut self) -> Result<(), StateError> {
        if self.cache_bytes <= self.capacity {
            return Ok(());
        }
        self.flush()?;
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
        Ok(())
    }

    /// Write every dirty entry to RocksDB in one batch.
    pub fn flush(&mut self) -> Result<(), StateError> {
        if self.dirty == 0 {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        for (k, slot) in self.cache.iter_mut().filter(|(_, s)| s.dirty) {
            match &slot.value {
                Some(v) => batch.put(k, v),
                None => batch.delete(k),
            }
            slot.dirty = false;
        }
        let mut wo = WriteOptions::default();
        // Durability comes from checkpoints, not from the WAL.
        wo.disable_wal(true);
        self.backend.inner.db.write_opt(batch, &wo).map_err(|e| self.backend.err(e))?;
        self.dirty = 0;
        if let Some(j) = &mut self.journal {
            j.clear();
        }
        Ok(())
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

#[cfg(test)]
mod tests;

//! [`StateBackend`]: the RocksDB database of one pipeline, shared by every
//! operator subtask: opening it (column families, compaction filter, MANIFEST
//! bound), the registry of operator and state ids in the `meta` column
//! family, the checkpoint freeze, and the TTL cleanup thread's lifecycle.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, DB};

use crate::clock::StateClock;
use crate::error::StateError;
use crate::id::{StateKind, MAX_STATE_ID, TTL_BIT};
use crate::ttl::{cleanup, run_cleaner, ttl_filter, Cleaner};

pub(crate) const META_CF: &str = "meta";

/// Size at which RocksDB starts a new MANIFEST (holding only the live
/// files), so that the MANIFEST every checkpoint copies stays small.
pub const MAX_MANIFEST_BYTES: usize = 64 << 10;

/// Options of [`StateBackend::open_with`].
#[derive(Clone, Debug)]
pub struct BackendOptions {
    /// The clock that decides when values with a TTL expire.
    pub clock: StateClock,
    /// How often the background thread removes expired values from RocksDB
    /// ([`StateBackend::cleanup_expired`]), once the backend has a state with
    /// a TTL. [`Duration::ZERO`] disables the thread: expired values are then
    /// only removed by RocksDB's own compactions and explicit calls.
    pub ttl_cleanup_interval: Duration,
}

impl Default for BackendOptions {
    /// The wall clock, and a cleanup every 60 s.
    fn default() -> Self {
        BackendOptions {
            clock: StateClock::system(),
            ttl_cleanup_interval: Duration::from_secs(60),
        }
    }
}

/// What the clones of a [`StateBackend`] share.
pub(crate) struct Inner {
    /// Shared with the cleanup thread only through a `Weak`, so the database
    /// closes when the last [`StateBackend`] clone is dropped.
    pub(crate) db: Arc<DB>,
    pub(crate) path: PathBuf,
    /// Serialises id allocation in the meta column family.
    pub(crate) registry: Mutex<()>,
    pub(crate) clock: StateClock,
    pub(crate) ttl_cleanup_interval: Duration,
    /// The TTL cleanup thread, once a TTL state has been declared.
    pub(crate) cleaner: Mutex<Option<Cleaner>>,
    /// While a checkpoint is being taken, caches do not write to RocksDB
    /// except on their checkpoint barrier (see [`StateBackend::freeze`]).
    pub(crate) frozen: std::sync::atomic::AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Stop the cleanup thread and wait for it (it may be in the middle of
        // a compaction), so that the database is closed when this returns.
        let cleaner = self
            .cleaner
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(c) = cleaner {
            c.stop.store(true, Ordering::Release);
            c.thread.thread().unpark();
            let _ = c.thread.join();
        }
    }
}

/// The state database of one pipeline. Cheap to clone.
#[derive(Clone)]
pub struct StateBackend {
    pub(crate) inner: Arc<Inner>,
}

impl StateBackend {
    /// Open (creating if needed) the database in `dir`. With `fresh`, any
    /// state already there is deleted first. Uses the default
    /// [`BackendOptions`] (wall clock, TTL cleanup every 60 s).
    pub fn open(dir: &Path, fresh: bool) -> Result<Self, StateError> {
        Self::open_with(dir, fresh, BackendOptions::default())
    }

    /// [`open`](Self::open) with the given options.
    pub fn open_with(dir: &Path, fresh: bool, options: BackendOptions) -> Result<Self, StateError> {
        let db_err = |source| StateError::Db {
            path: dir.to_path_buf(),
            source,
        };
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
        // Every checkpoint flushes the memtables, which appends a version
        // edit to the MANIFEST, and copies the whole MANIFEST: without a
        // bound it grows with uptime (and so does every checkpoint).
        opts.set_max_manifest_file_size(MAX_MANIFEST_BYTES);
        let mut state_opts = opts.clone();
        state_opts.set_compaction_filter("sluice-state-ttl", ttl_filter(options.clock.clone()));
        let cfs = vec![
            ColumnFamilyDescriptor::new(rocksdb::DEFAULT_COLUMN_FAMILY_NAME, state_opts),
            ColumnFamilyDescriptor::new(META_CF, Options::default()),
        ];
        let db = DB::open_cf_descriptors(&opts, dir, cfs).map_err(db_err)?;
        Ok(StateBackend {
            inner: Arc::new(Inner {
                db: Arc::new(db),
                path: dir.to_path_buf(),
                registry: Mutex::new(()),
                clock: options.clock,
                ttl_cleanup_interval: options.ttl_cleanup_interval,
                cleaner: Mutex::new(None),
                frozen: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// The clock that decides when values with a TTL expire.
    pub fn clock(&self) -> &StateClock {
        &self.inner.clock
    }

    /// Remove expired values of TTL states from RocksDB: flush the memtables
    /// and compact the whole state column family, so that the TTL compaction
    /// filter sees every value. Costs a rewrite of the state; the background
    /// thread calls it every [`BackendOptions::ttl_cleanup_interval`].
    pub fn cleanup_expired(&self) -> Result<(), StateError> {
        cleanup(&self.inner.db).map_err(|e| self.err(e))
    }

    /// Start the TTL cleanup thread, unless it runs already or is disabled.
    pub(crate) fn start_cleaner(&self) {
        let interval = self.inner.ttl_cleanup_interval;
        if interval.is_zero() {
            return;
        }
        let mut cleaner = self.inner.cleaner.lock().unwrap_or_else(|p| p.into_inner());
        if cleaner.is_some() {
            return;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let db = Arc::downgrade(&self.inner.db);
        let path = self.inner.path.clone();
        let stopped = stop.clone();
        let spawned = std::thread::Builder::new()
            .name("sluice-state-ttl".to_string())
            .spawn(move || run_cleaner(&db, &path, interval, &stopped));
        match spawned {
            Ok(thread) => *cleaner = Some(Cleaner { stop, thread }),
            Err(e) => tracing::warn!(
                "state store {}: cannot start the TTL cleanup thread: {e}",
                self.inner.path.display()
            ),
        }
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub(crate) fn err(&self, source: rocksdb::Error) -> StateError {
        StateError::Db {
            path: self.inner.path.clone(),
            source,
        }
    }

    /// Look up, or allocate, the u16 id stored under `meta_key`. For a state,
    /// `state` is its kind and whether it has a TTL; the registry value is
    /// `[id u16][kind u8][ttl u8]` (registries written before TTL support
    /// have no TTL byte: no TTL). Returns the id, and the stored kind byte and
    /// TTL-ness (`None` for an operator).
    pub(crate) fn id(
        &self,
        meta_key: &str,
        counter_key: &str,
        state: Option<(StateKind, bool)>,
    ) -> Result<(u16, Option<(u8, bool)>), StateError> {
        let _guard = self
            .inner
            .registry
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let db = &self.inner.db;
        let cf = db
            .cf_handle(META_CF)
            .expect("meta column family is created on open");
        if let Some(v) = db.get_cf(&cf, meta_key).map_err(|e| self.err(e))? {
            let id = u16::from_be_bytes([v[0], v[1]]);
            return Ok((
                id,
                v.get(2)
                    .map(|kind| (*kind, v.get(3).is_some_and(|ttl| *ttl != 0))),
            ));
        }
        let next = match db.get_cf(&cf, counter_key).map_err(|e| self.err(e))? {
            Some(v) => u16::from_be_bytes([v[0], v[1]]),
            None => 0,
        };
        let mut id = next;
        let mut value = Vec::with_capacity(4);
        match state {
            Some(_) if next > MAX_STATE_ID => {
                return Err(StateError::TooMany(
                    "states in one operator (at most 32768)",
                ))
            }
            Some((kind, ttl)) => {
                if ttl {
                    id |= TTL_BIT;
                }
                value.extend_from_slice(&id.to_be_bytes());
                value.push(kind as u8);
                value.push(u8::from(ttl));
            }
            None if next == u16::MAX => {
                return Err(StateError::TooMany(
                    "operators in one pipeline (at most 65535)",
                ))
            }
            None => value.extend_from_slice(&id.to_be_bytes()),
        }
        let mut batch = WriteBatch::default();
        batch.put_cf(&cf, meta_key, &value);
        batch.put_cf(&cf, counter_key, (next + 1).to_be_bytes());
        db.write(batch).map_err(|e| self.err(e))?;
        Ok((id, state.map(|(kind, ttl)| (kind as u8, ttl))))
    }

    /// Number of keys stored in RocksDB (an estimate from RocksDB's
    /// properties), for tests and metrics.
    pub fn estimated_keys(&self) -> u64 {
        self.inner
            .db
            .property_int_value("rocksdb.estimate-num-keys")
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    /// Exact number of keys in the state column family, by iterating all of
    /// it (expired values not yet cleaned up included): for tests only.
    #[doc(hidden)]
    pub fn count_keys(&self) -> u64 {
        let mut it = self.inner.db.raw_iterator();
        it.seek_to_first();
        let mut n = 0;
        while it.valid() {
            n += 1;
            it.next();
        }
        n
    }

    /// Flush memtables to SST files, e.g. before shutdown.
    pub fn flush_to_disk(&self) -> Result<(), StateError> {
        self.inner.db.flush().map_err(|e| self.err(e))
    }

    /// Stop caches from writing to RocksDB outside checkpoint barriers, so
    /// that what a checkpoint captures is exactly the state at its barriers.
    pub fn freeze(&self) {
        self.inner.frozen.store(true, Ordering::SeqCst);
    }

    /// Undo [`freeze`](Self::freeze) once the snapshot is taken.
    pub fn thaw(&self) {
        self.inner.frozen.store(false, Ordering::SeqCst);
    }

    /// Whether the backend is frozen for a checkpoint.
    pub fn frozen(&self) -> bool {
        self.inner.frozen.load(Ordering::Relaxed)
    }
}

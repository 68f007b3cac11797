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
//!
//! All integers are big-endian. The `meta` column family maps operator and
//! state names to their ids (`op/<name>`, `state/<operator id>/<name>`).
//!
//! # Time-to-live
//!
//! A state can be declared with a TTL ([`OperatorState::declare_with_ttl`],
//! or [`OperatorState::declare`] after
//! [`OperatorState::set_default_ttl`], the pipeline's `state_ttl`). Such a
//! state gets an id with the high bit set (`id | 0x8000`), so a stored key
//! alone tells whether its value carries an expiry. The stored value of a TTL
//! state (in the cache and in RocksDB) is
//!
//! ```text
//! [expires at: ms since the Unix epoch, i64][payload]
//! ```
//!
//! with `expires at = now + ttl`, set on every write (Flink's
//! `OnCreateAndWrite`); a value is expired once `expires at <= now`. Reads
//! ([`OperatorState::get`], [`OperatorState::map_get`],
//! [`OperatorState::map_entries`]) never return an expired value and strip the
//! prefix, so callers never see it. "Now" comes from the backend's
//! [`StateClock`]; during a guest call ([`OperatorState::begin_call`] to the
//! matching commit or rollback) it is read once and kept, so a value does not
//! expire in the middle of a call (outside calls, it is read on each access
//! to a TTL state). States without a TTL store the payload as is and never
//! read the clock.
//!
//! Expired values are removed from RocksDB by a compaction filter, which drops
//! every entry of a TTL state whose expiry is past. It runs during RocksDB's
//! own compactions, and on [`StateBackend::cleanup_expired`], which a
//! background thread calls every [`BackendOptions::ttl_cleanup_interval`]
//! once the backend has a TTL state. Expired values in the write-back cache
//! are ignored by reads, written as deletions by [`OperatorState::flush`] and
//! evicted first by [`OperatorState::maintain`].
//!
//! Whether a state has a TTL is fixed when it is first declared (it is part of
//! its id); its duration is not, and a new duration applies to later writes.
//! State names starting with `'\0'` are the host's own (timers, window
//! accumulators) and never get the default TTL.
#![deny(missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hashbrown::HashMap;
use rocksdb::{ColumnFamilyDescriptor, CompactOptions, CompactionDecision, Options, WriteBatch, WriteOptions, DB};

pub mod checkpoint;
pub mod keygroup;
pub mod restore_paths;

const META_CF: &str = "meta";
/// The high bit of a state id: set for states with a TTL.
const TTL_BIT: u16 = 0x8000;
/// The largest state id counter value (ids are 15 bits plus the TTL bit).
const MAX_STATE_ID: u16 = 0x7FFF;
/// Bytes of the expiry prefix of a TTL state's stored value.
const EXPIRY_BYTES: usize = 8;
/// Longest the cleanup thread sleeps before checking whether the backend is gone.
const CLEANER_STEP: Duration = Duration::from_millis(50);
/// Bytes counted per cache entry on top of its key and value.
const ENTRY_OVERHEAD: usize = 64;
/// Size at which RocksDB starts a new MANIFEST (holding only the live
/// files), so that the MANIFEST every checkpoint copies stays small.
pub const MAX_MANIFEST_BYTES: usize = 64 << 10;

/// State errors.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file of the state or of a checkpoint could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
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
    /// A state name was declared with a TTL and is now declared without one,
    /// or the reverse. Whether a state has a TTL changes how its values are
    /// stored, so it cannot change once the state has been declared.
    #[error(
        "state `{name}` of operator `{operator}` was declared {} a TTL and is now declared {} one; \
         give the state a new name, or drop the operator's existing state",
        with_or_without(.existing_ttl),
        with_or_without(&!.existing_ttl)
    )]
    TtlMismatch {
        /// Operator name.
        operator: String,
        /// State name.
        name: String,
        /// Whether the state was first declared with a TTL.
        existing_ttl: bool,
    },
    /// Too many operators or states.
    #[error("too many {0}")]
    TooMany(&'static str),
    /// A checkpoint manifest names a file that a restore must not touch
    /// (see [`restore_paths`]).
    #[error("{0}")]
    Untrusted(String),
}

fn with_or_without(ttl: &bool) -> &'static str {
    if *ttl {
        "with"
    } else {
        "without"
    }
}

/// The source of "now" for state TTL: the wall clock, or a manual clock for
/// tests. Cheap to clone; clones of a manual clock share its time.
#[derive(Clone, Debug, Default)]
pub struct StateClock {
    /// The manual clock's time in ms, or `None` for the wall clock.
    manual: Option<Arc<AtomicI64>>,
}

impl StateClock {
    /// The wall clock ([`SystemTime::now`]).
    pub fn system() -> Self {
        StateClock { manual: None }
    }

    /// A clock that stands still at `start_ms` (ms since the Unix epoch)
    /// until [`set`](Self::set) or [`advance`](Self::advance) moves it.
    pub fn manual(start_ms: i64) -> Self {
        StateClock { manual: Some(Arc::new(AtomicI64::new(start_ms))) }
    }

    /// Whether this is a manual clock.
    pub fn is_manual(&self) -> bool {
        self.manual.is_some()
    }

    /// Now, in ms since the Unix epoch (0 if the wall clock is before 1970).
    #[inline]
    pub fn now_ms(&self) -> i64 {
        match &self.manual {
            Some(ms) => ms.load(Ordering::Relaxed),
            None => SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        }
    }

    /// Set a manual clock to `ms` (since the Unix epoch). No effect on the
    /// wall clock.
    pub fn set(&self, ms: i64) {
        if let Some(now) = &self.manual {
            now.store(ms, Ordering::Relaxed);
        }
    }

    /// Move a manual clock forward by `ms` (backward if negative). No effect
    /// on the wall clock.
    pub fn advance(&self, ms: i64) {
        if let Some(now) = &self.manual {
            now.fetch_add(ms, Ordering::Relaxed);
        }
    }
}

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
        BackendOptions { clock: StateClock::system(), ttl_cleanup_interval: Duration::from_secs(60) }
    }
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

impl StateId {
    /// Whether the state has a TTL (its values carry an expiry).
    #[inline]
    pub fn has_ttl(self) -> bool {
        self.0 & TTL_BIT != 0
    }
}

/// Whether a storage key belongs to a state with a TTL (the high bit of the
/// state id, bytes 4..6 of the key).
#[inline]
fn is_ttl_key(key: &[u8]) -> bool {
    key.get(4).is_some_and(|b| b & 0x80 != 0)
}

/// The payload of a stored TTL value if it has not expired at `now`.
#[inline]
fn live(stored: &[u8], now: i64) -> Option<&[u8]> {
    let (expires, payload) = stored.split_first_chunk::<EXPIRY_BYTES>()?;
    (i64::from_be_bytes(*expires) > now).then_some(payload)
}

/// The payload of a stored value: the value itself without a TTL (`now` is
/// `None`), the value without its expiry if not expired with one.
#[inline]
fn payload_at(stored: &[u8], now: Option<i64>) -> Option<&[u8]> {
    match now {
        Some(now) => live(stored, now),
        None => Some(stored),
    }
}

/// The compaction filter: drop values of TTL states that expired by the
/// clock's now. Reads the clock only for TTL keys.
fn ttl_filter(clock: StateClock) -> impl FnMut(u32, &[u8], &[u8]) -> CompactionDecision + Send + 'static {
    move |_level, key, value| {
        if is_ttl_key(key) && value.len() >= EXPIRY_BYTES && live(value, clock.now_ms()).is_none() {
            CompactionDecision::Remove
        } else {
            CompactionDecision::Keep
        }
    }
}

/// Flush the default column family's memtables, then compact all of it so
/// that the compaction filter sees every value.
fn cleanup(db: &DB) -> Result<(), rocksdb::Error> {
    db.flush()?;
    let mut opts = CompactOptions::default();
    // Let RocksDB's automatic compactions run alongside.
    opts.set_exclusive_manual_compaction(false);
    db.compact_range_opt(None::<&[u8]>, None::<&[u8]>, &opts);
    Ok(())
}

/// The background thread that calls [`cleanup`] every `interval`.
struct Cleaner {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

struct Inner {
    /// Shared with the cleanup thread only through a `Weak`, so the database
    /// closes when the last [`StateBackend`] clone is dropped.
    db: Arc<DB>,
    path: PathBuf,
    /// Serialises id allocation in the meta column family.
    registry: Mutex<()>,
    clock: StateClock,
    ttl_cleanup_interval: Duration,
    /// The TTL cleanup thread, once a TTL state has been declared.
    cleaner: Mutex<Option<Cleaner>>,
    /// While a checkpoint is being taken, caches do not write to RocksDB
    /// except on their checkpoint barrier (see [`StateBackend::freeze`]).
    frozen: std::sync::atomic::AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Stop the cleanup thread and wait for it (it may be in the middle of
        // a compaction), so that the database is closed when this returns.
        let cleaner = self.cleaner.get_mut().unwrap_or_else(|p| p.into_inner()).take();
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
    inner: Arc<Inner>,
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
    fn start_cleaner(&self) {
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
            Err(e) => tracing::warn!("state store {}: cannot start the TTL cleanup thread: {e}", self.inner.path.display()),
        }
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn err(&self, source: rocksdb::Error) -> StateError {
        StateError::Db { path: self.inner.path.clone(), source }
    }

    /// Look up, or allocate, the u16 id stored under `meta_key`. For a state,
    /// `state` is its kind and whether it has a TTL; the registry value is
    /// `[id u16][kind u8][ttl u8]` (registries written before TTL support
    /// have no TTL byte: no TTL). Returns the id, and the stored kind byte and
    /// TTL-ness (`None` for an operator).
    fn id(&self, meta_key: &str, counter_key: &str, state: Option<(StateKind, bool)>) -> Result<(u16, Option<(u8, bool)>), StateError> {
        let _guard = self.inner.registry.lock().unwrap_or_else(|p| p.into_inner());
        let db = &self.inner.db;
        let cf = db.cf_handle(META_CF).expect("meta column family is created on open");
        if let Some(v) = db.get_cf(&cf, meta_key).map_err(|e| self.err(e))? {
            let id = u16::from_be_bytes([v[0], v[1]]);
            return Ok((id, v.get(2).map(|kind| (*kind, v.get(3).is_some_and(|ttl| *ttl != 0)))));
        }
        let next = match db.get_cf(&cf, counter_key).map_err(|e| self.err(e))? {
            Some(v) => u16::from_be_bytes([v[0], v[1]]),
            None => 0,
        };
        let mut id = next;
        let mut value = Vec::with_capacity(4);
        match state {
            Some(_) if next > MAX_STATE_ID => return Err(StateError::TooMany("states in one operator (at most 32768)")),
            Some((kind, ttl)) => {
                if ttl {
                    id |= TTL_BIT;
                }
                value.extend_from_slice(&id.to_be_bytes());
                value.push(kind as u8);
                value.push(u8::from(ttl));
            }
            None if next == u16::MAX => return Err(StateError::TooMany("operators in one pipeline (at most 65535)")),
            None => value.extend_from_slice(&id.to_be_bytes()),
        }
        let mut batch = WriteBatch::default();
        batch.put_cf(&cf, meta_key, &value);
        batch.put_cf(&cf, counter_key, (next + 1).to_be_bytes());
        db.write(batch).map_err(|e| self.err(e))?;
        Ok((id, state.map(|(kind, ttl)| (kind as u8, ttl))))
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

    /// Number of keys stored in RocksDB (an estimate from RocksDB's
    /// properties), for tests and metrics.
    pub fn estimated_keys(&self) -> u64 {
        self.inner.db.property_int_value("rocksdb.estimate-num-keys").ok().flatten().unwrap_or(0)
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
}

/// The TTL cleanup thread: [`cleanup`] every `interval` until `stop` is set
/// or the database is gone. Sleeps at most [`CLEANER_STEP`] at a time.
fn run_cleaner(db: &Weak<DB>, path: &Path, interval: Duration, stop: &AtomicBool) {
    let mut next = Instant::now() + interval;
    loop {
        if stop.load(Ordering::Acquire) || db.strong_count() == 0 {
            return;
        }
        let now = Instant::now();
        if now < next {
            std::thread::park_timeout((next - now).min(CLEANER_STEP));
            continue;
        }
        let Some(db) = db.upgrade() else { return };
        if let Err(e) = cleanup(&db) {
            tracing::warn!("state store {}: TTL cleanup failed: {e}", path.display());
        }
        drop(db);
        next = Instant::now() + interval;
    }
}

/// A value to store: the payload, behind the expiry for a TTL state.
#[derive(Clone, Copy)]
struct Stored<'a> {
    expires: Option<i64>,
    payload: &'a [u8],
}

impl Stored<'_> {
    #[inline]
    fn len(&self) -> usize {
        self.payload.len() + if self.expires.is_some() { EXPIRY_BYTES } else { 0 }
    }

    /// Write into `out`, of length [`len`](Self::len).
    #[inline]
    fn copy_to(&self, out: &mut [u8]) {
        match self.expires {
            None => out.copy_from_slice(self.payload),
            Some(at) => {
                let (head, tail) = out.split_at_mut(EXPIRY_BYTES);
                head.copy_from_slice(&at.to_be_bytes());
                tail.copy_from_slice(self.payload);
            }
        }
    }

    #[inline]
    fn to_box(self) -> Box<[u8]> {
        match self.expires {
            None => self.payload.into(),
            Some(at) => {
                let mut v = Vec::with_capacity(self.len());
                v.extend_from_slice(&at.to_be_bytes());
                v.extend_from_slice(self.payload);
                v.into_boxed_slice()
            }
        }
    }
}

struct Slot {
    value: Option<Box<[u8]>>,
    dirty: bool,
    /// RocksDB may hold a value for this key. A removal of a key it cannot
    /// hold (a window created and purged between two flushes) writes nothing.
    stored: bool,
    /// The guest call that last journaled this slot (0: none).
    call: u32,
}

/// A cache key written during a guest call and its slot before the call
/// (`None`: it did not exist), so the call can be undone.
type JournalEntry = (Box<[u8]>, Option<Slot>);

/// One entry of a map state: its user key and its value.
pub type MapEntry = (Vec<u8>, Vec<u8>);

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
    /// Whether `scratch` holds a map entry's key.
    scratch_is_map: bool,
    /// Cache keys of map entries, ordered, so that listing one key's map
    /// does not scan the whole cache. May hold keys evicted since (they are
    /// skipped, and pruned on eviction).
    map_index: std::collections::BTreeSet<Box<[u8]>>,
    /// Pre-call slots of the keys written during the current guest call,
    /// one entry per key (its first write in the call).
    journal: Option<Vec<JournalEntry>>,
    /// Id of the current guest call, for the journal.
    call: u32,
    clock: StateClock,
    /// TTL given to states declared with [`declare`](Self::declare).
    default_ttl: Option<Duration>,
    /// Current TTL in ms of each TTL state, by id without the TTL bit
    /// (empty until a TTL state is declared).
    ttls: Vec<i64>,
    /// Between [`begin_call`](Self::begin_call) and the matching commit or
    /// rollback: "now" is read once and kept in `call_now`.
    in_call: bool,
    call_now: Option<i64>,
}

fn slot_bytes(key: &[u8], slot: &Slot) -> usize {
    key.len() + slot.value.as_ref().map_or(0, |v| v.len()) + ENTRY_OVERHEAD
}

impl OperatorState {
    /// Declare (or look up) the state `name` of kind `kind`, with the
    /// operator's default TTL ([`set_default_ttl`](Self::set_default_ttl)),
    /// unless `name` starts with `'\0'` (host-internal state, which never
    /// gets the default TTL).
    pub fn declare(&mut self, name: &str, kind: StateKind) -> Result<StateId, StateError> {
        let ttl = if name.starts_with('\0') { None } else { self.default_ttl };
        self.declare_with_ttl(name, kind, ttl)
    }

    /// Declare (or look up) the state `name` of kind `kind`, whose values
    /// expire `ttl` after their last write (`None`: never). Whether a state
    /// has a TTL cannot change once it is declared
    /// ([`StateError::TtlMismatch`]); the duration can, and applies to later
    /// writes. A zero TTL makes every written value expired at once.
    pub fn declare_with_ttl(&mut self, name: &str, kind: StateKind, ttl: Option<Duration>) -> Result<StateId, StateError> {
        let id = match self.states.get(name) {
            Some((id, k)) => {
                if *k != kind {
                    return Err(self.mismatch(name, *k, kind));
                }
                *id
            }
            None => {
                let (id, stored) =
                    self.backend.id(&format!("state/{}/{name}", self.op), &format!("state-next/{}", self.op), Some((kind, ttl.is_some())))?;
                let (stored_kind, stored_ttl) = stored.unwrap_or((kind as u8, ttl.is_some()));
                let stored_kind = match stored_kind {
                    1 => StateKind::Map,
                    _ => StateKind::Value,
                };
                if stored_kind != kind {
                    return Err(self.mismatch(name, stored_kind, kind));
                }
                let id = StateId(if stored_ttl { id | TTL_BIT } else { id });
                self.states.insert(name.to_string(), (id, kind));
                if stored_ttl {
                    self.backend.start_cleaner();
                }
                id
            }
        };
        if id.has_ttl() != ttl.is_some() {
            return Err(StateError::TtlMismatch { operator: self.name.clone(), name: name.to_string(), existing_ttl: id.has_ttl() });
        }
        if let Some(ttl) = ttl {
            let index = usize::from(id.0 & !TTL_BIT);
            if self.ttls.len() <= index {
                self.ttls.resize(index + 1, 0);
            }
            self.ttls[index] = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        }
        Ok(id)
    }

    /// The TTL that [`declare`](Self::declare) gives to states declared from
    /// now on (the pipeline's `state_ttl`). `None` (the default): no TTL.
    pub fn set_default_ttl(&mut self, ttl: Option<Duration>) {
        self.default_ttl = ttl;
    }

    /// The TTL that [`declare`](Self::declare) gives to new states.
    pub fn default_ttl(&self) -> Option<Duration> {
        self.default_ttl
    }

    /// Whether any state of this operator has a TTL.
    #[inline]
    fn has_ttl(&self) -> bool {
        !self.ttls.is_empty()
    }

    /// Now, in ms: read once per guest call, on every use outside one.
    #[inline]
    fn now(&mut self) -> i64 {
        if !self.in_call {
            return self.clock.now_ms();
        }
        match self.call_now {
            Some(now) => now,
            None => {
                let now = self.clock.now_ms();
                self.call_now = Some(now);
                now
            }
        }
    }

    /// The expiry for a value of `state` written now (`None`: no TTL).
    #[inline]
    fn expiry(&mut self, state: StateId) -> Option<i64> {
        if !state.has_ttl() {
            return None;
        }
        let ttl = self.ttls.get(usize::from(state.0 & !TTL_BIT)).copied();
        debug_assert!(ttl.is_some(), "state id {state:?} was not declared on this operator state");
        // An id not declared here (a misuse): keep the value rather than lose it.
        Some(ttl.map_or(i64::MAX, |ttl| self.now().saturating_add(ttl)))
    }

    /// [`read`](Self::read) for a TTL state: the payload if not expired.
    fn read_live(&mut self) -> Result<Option<&[u8]>, StateError> {
        let now = self.now();
        Ok(self.read()?.and_then(|v| live(v, now)))
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
        self.scratch_is_map = map_key.is_some();
    }

    /// Note a new cache key in the map index if it is a map entry's.
    fn index_new_key(&mut self) {
        if self.scratch_is_map && !self.map_index.contains(self.scratch.as_slice()) {
            self.map_index.insert(self.scratch.clone().into_boxed_slice());
        }
    }

    fn read(&mut self) -> Result<Option<&[u8]>, StateError> {
        if !self.cache.contains_key(self.scratch.as_slice()) {
            let value = self.backend.inner.db.get(&self.scratch).map_err(|e| self.backend.err(e))?;
            let stored = value.is_some();
            let slot = Slot { value: value.map(Vec::into_boxed_slice), dirty: false, call: 0, stored };
            self.cache_bytes += slot_bytes(&self.scratch, &slot);
            self.cache.insert(self.scratch.clone().into_boxed_slice(), slot);
            self.index_new_key();
        }
        Ok(self.cache.get(self.scratch.as_slice()).and_then(|s| s.value.as_deref()))
    }

    fn write(&mut self, value: Option<Stored<'_>>) {
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
                        let fresh = Slot { value: value.map(Stored::to_box), dirty: true, call, stored: existing.stored };
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
                let slot = Slot { value: value.map(Stored::to_box), dirty: true, call, stored: true };
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
    pub fn get(&mut self, kg: u16, state: StateId, key: &[u8]) -> Result<Option<&[u8]>, StateError> {
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
        self.write(Some(Stored { expires, payload: value }));
    }

    /// Remove the value of `state` for `key`.
    pub fn delete(&mut self, kg: u16, state: StateId, key: &[u8]) {
        self.key(kg, state, key, None);
        self.write(None);
    }

    /// The value under `map_key` in map `state` of `key`; `None` if there is
    /// none or it has expired (entries of a map expire one by one).
    pub fn map_get(&mut self, kg: u16, state: StateId, key: &[u8], map_key: &[u8]) -> Result<Option<&[u8]>, StateError> {
        self.key(kg, state, key, Some(map_key));
        if state.has_ttl() {
            return self.read_live();
        }
        self.read()
    }

    /// Set `map_key` in map `state` of `key` (for a TTL state: expiring a TTL
    /// from now).
    pub fn map_put(&mut self, kg: u16, state: StateId, key: &[u8], map_key: &[u8], value: &[u8]) {
        self.key(kg, state, key, Some(map_key));
        let expires = self.expiry(state);
        self.write(Some(Stored { expires, payload: value }));
    }

    /// Remove `map_key` from map `state` of `key`.
    pub fn map_remove(&mut self, kg: u16, state: StateId, key: &[u8], map_key: &[u8]) {
        self.key(kg, state, key, Some(map_key));
        self.write(None);
    }

    /// All entries of map `state` of `key` that have not expired, ordered by
    /// map key. Merges RocksDB with the cache, so it costs a scan of the
    /// cache: use it off the hot path.
    pub fn map_entries(&mut self, kg: u16, state: StateId, key: &[u8]) -> Result<Vec<MapEntry>, StateError> {
        // The payload of a stored value, if it has not expired.
        let now = if state.has_ttl() { Some(self.now()) } else { None };
        self.key(kg, state, key, None);
        let prefix = self.scratch.clone();
        let mut entries = std::collections::BTreeMap::new();
        let db = &self.backend.inner.db;
        // An upper bound keeps the seek from wading through the tombstones
        // of other keys past the prefix.
        let mut opts = rocksdb::ReadOptions::default();
        if let Some(end) = prefix_end(&prefix) {
            opts.set_iterate_upper_bound(end);
        }
        let mut it = db.raw_iterator_opt(opts);
        it.seek(&prefix);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(&prefix) {
                break;
            }
            if let Some(v) = payload_at(v, now) {
                entries.insert(k[prefix.len()..].to_vec(), v.to_vec());
            }
            it.next();
        }
        it.status().map_err(|e| self.backend.err(e))?;
        let range = (std::ops::Bound::Excluded(prefix.as_slice()), std::ops::Bound::Unbounded);
        for k in self.map_index.range::<[u8], _>(range) {
            if !k.starts_with(&prefix) {
                break;
            }
            let Some(slot) = self.cache.get(k) else { continue };
            // The cache is newer than RocksDB: an expired value there
            // hides whatever RocksDB has.
            match slot.value.as_deref().and_then(|v| payload_at(v, now)) {
                Some(v) => entries.insert(k[prefix.len()..].to_vec(), v.to_vec()),
                None => entries.remove(&k[prefix.len()..]),
            };
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
                let expired = is_ttl_key(k) && slot.value.as_deref().is_some_and(|v| live(v, now).is_none());
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
        let now = if self.has_ttl() { Some(self.now()) } else { None };
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
        self.backend.inner.db.write_opt(batch, &wo).map_err(|e| self.backend.err(e))?;
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
    pub fn keys(&mut self, groups: std::ops::Range<u16>) -> Result<Vec<(u16, Vec<u8>)>, StateError> {
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
                if let Some(len) = k.get(6..10).map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize) {
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

/// The smallest key greater than every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests;

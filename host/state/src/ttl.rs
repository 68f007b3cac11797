//! Removing expired values from RocksDB: the compaction filter that drops
//! them, a full compaction that makes it see every value, and the background
//! thread that runs one every `ttl_cleanup_interval`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rocksdb::{CompactOptions, CompactionDecision, DB};

use crate::clock::StateClock;
use crate::encoding::{is_ttl_key, live, EXPIRY_BYTES};

/// Longest the cleanup thread sleeps before checking whether the backend is gone.
const CLEANER_STEP: Duration = Duration::from_millis(50);

/// The compaction filter: drop values of TTL states that expired by the
/// clock's now. Reads the clock only for TTL keys.
pub(crate) fn ttl_filter(
    clock: StateClock,
) -> impl FnMut(u32, &[u8], &[u8]) -> CompactionDecision + Send + 'static {
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
pub(crate) fn cleanup(db: &DB) -> Result<(), rocksdb::Error> {
    db.flush()?;
    let mut opts = CompactOptions::default();
    // Let RocksDB's automatic compactions run alongside.
    opts.set_exclusive_manual_compaction(false);
    db.compact_range_opt(None::<&[u8]>, None::<&[u8]>, &opts);
    Ok(())
}

/// The background thread that calls [`cleanup`] every `interval`.
pub(crate) struct Cleaner {
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) thread: JoinHandle<()>,
}

/// The TTL cleanup thread: [`cleanup`] every `interval` until `stop` is set
/// or the database is gone. Sleeps at most [`CLEANER_STEP`] at a time.
pub(crate) fn run_cleaner(db: &Weak<DB>, path: &Path, interval: Duration, stop: &AtomicBool) {
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

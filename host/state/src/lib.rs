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
//!
//! # Layout
//!
//! - `backend`: [`StateBackend`], the database: open, id registry, freeze;
//! - `cache`: [`OperatorState`], the write-back cache, and value state;
//! - `declare`: declaring states, their TTL and the call's "now";
//! - `map`: map state;
//! - `journal`: undoing the writes of a guest call;
//! - `encoding`: how keys and values are laid out in RocksDB;
//! - `ttl`: the compaction filter and cleanup thread for expired values;
//! - `clock`: [`StateClock`]; `id`: [`StateKind`], [`StateId`];
//!   `error`: [`StateError`];
//! - [`checkpoint`], [`restore_paths`]: snapshots and their safe restore
//!   (`snapshot`: the file list both use);
//!   [`keygroup`]: key groups and subtask ranges.
#![deny(missing_docs)]

mod backend;
mod cache;
pub mod checkpoint;
mod clock;
mod declare;
mod encoding;
mod error;
mod id;
mod journal;
pub mod keygroup;
mod map;
pub mod restore_paths;
mod snapshot;
mod ttl;

pub use backend::{BackendOptions, StateBackend, MAX_MANIFEST_BYTES};
pub use cache::OperatorState;
pub use clock::StateClock;
pub use error::StateError;
pub use id::{StateId, StateKind};
pub use map::MapEntry;

#[cfg(test)]
mod tests;

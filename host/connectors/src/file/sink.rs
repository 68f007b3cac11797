//! The `file` sink: records as lines of a file, at least once or exactly
//! once through checkpoints.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use sluice_types::{ConnectorError, Record, Sink, SinkSnapshot};

use super::config::FileSinkConfig;
use super::disk::{create_parent, io_err};
use super::txn::Txn;
use crate::format::{encode_record, SinkFormat};

/// The `file` sink: writes records as lines to a file. See
/// [`FileSinkConfig`].
///
/// It has two modes, chosen by the constructor:
///
/// * [`FileSink::new`]: **at least once**. The file is truncated when the
///   sink is created and records are appended to it directly (buffered;
///   visible on every flush). Checkpoints only flush; after a crash the
///   replayed records are written again. The checkpoint methods of [`Sink`]
///   keep their default behaviour.
/// * [`FileSink::exactly_once`]: **exactly once through checkpoints**, with
///   a two-phase commit. `<path>` only ever holds committed output; see
///   below.
///
/// # Exactly-once protocol
///
/// Files, all in the directory of `<path>`:
///
/// * `<path>.inprogress`: the records written since the last pre-commit
///   (buffered). Never trusted: deleted on every start.
/// * `<path>.pending-<id>`: the complete output of the epoch ending at
///   checkpoint `<id>`, pre-committed but not yet appended to `<path>`.
/// * `<path>`: committed output only.
///
/// Steps:
///
/// * [`start(None)`](Sink::start) (fresh start): delete leftover
///   `.inprogress`/`.pending-*` files, create or truncate `<path>`, fsync it
///   and the directory.
/// * [`write`](Sink::write): append to `.inprogress` (created on the first
///   non-empty write of an epoch). [`flush`](Sink::flush) only flushes this
///   buffer; nothing becomes visible.
/// * [`pre_commit(id)`](Sink::pre_commit): flush and fsync `.inprogress`,
///   rename it to `.pending-<id>`, fsync the directory. An empty epoch
///   creates no pending file. Checkpoint ids must increase. Returns the
///   snapshot
///   `{"committed_len": L, "pending": "<file name>" | null, "pending_len": n}`
///   where `n` is the size of the epoch and `L` the length `<path>` has once
///   everything up to and including `id` is committed.
/// * [`commit(id)`](Sink::commit): for every pending epoch `<= id`, in id
///   order: cut `<path>` to its committed length (dropping the tail of an
///   interrupted append, if any), append the pending file, fsync `<path>`,
///   delete the pending file; then fsync the directory. If the append fails
///   (`ENOSPC`, `EFBIG`), `<path>` is cut back to its committed length
///   before the error is returned, so that it never keeps part of an epoch
///   (only a crash in the middle of an append leaves one, until the restart
///   cuts it). Committing an already committed id does nothing.
/// * `start(Some((N, snapshot)))` (restart after a crash): let `P` be the
///   pending files on disk with id `< N`, plus `.pending-N` if the snapshot
///   names it, and `S` the sum of their sizes. `<path>` must hold at least
///   `keep = committed_len - S` bytes, otherwise the start fails with a
///   [`ConnectorError::Config`] saying the output was modified or lost
///   outside Sluice. Cut `<path>` to `keep`, then append each file of `P` in
///   id order (append, fsync, delete, as in a commit). Finally delete every
///   other pending file (epochs after `N`, which will be replayed) and
///   `.inprogress`, and fsync the directory. With the usual single pending
///   file this is exactly "truncate to `committed_len - pending_len` and
///   append it if it still exists, else truncate to `committed_len`";
///   several pending files at or before `N` remain when commits were skipped
///   (a later commit commits all earlier epochs).
///
/// # Why a crash at any point is safe
///
/// Three invariants hold between any two system calls:
///
/// 1. **The committed prefix is durable.** The bytes of an epoch are in
///    `<path>` and fsynced before its pending file is deleted, and bytes
///    beyond the committed length are never trusted: every append (commit or
///    restore) first cuts `<path>` to the length it must have, so a torn
///    append, or one whose new size reached the disk before its data, is
///    discarded and redone.
/// 2. **A pending file is complete or absent.** Its content is fsynced
///    before the rename that gives it its name, and `pre_commit` returns (so
///    the checkpoint can complete) only after the directory is fsynced.
/// 3. **Pending files at or before `N` are a suffix of the run's epochs.**
///    They are created and consumed in increasing id order, and a start
///    durably removes all leftovers before the first new epoch, so those on
///    disk belong to the run that took checkpoint `N` and everything before
///    them is in `<path>`: hence `keep = committed_len - S`.
///
/// Crash windows, for a restart from the last completed checkpoint `N`:
///
/// * While writing, or in `pre_commit(k)` before or after the rename but
///   before it returns: checkpoint `k` is not complete, so `N < k`. Only
///   `.inprogress` or `.pending-k` exist for it, and both are deleted; the
///   epoch is replayed from the sources.
/// * After `pre_commit(N)`, before `commit(N)`: `.pending-N` (and maybe
///   earlier uncommitted ones) exist; `<path>` holds exactly `keep` bytes;
///   restore appends them.
/// * In the middle of an append (in a commit or in a restore): the pending
///   file still exists, `<path>` holds `keep` bytes plus a partial or
///   garbage tail; restore cuts the tail and appends again.
/// * After the append and fsync, before the deletion of the pending file
///   (or with the deletion not yet durable): the file is counted in `S`, so
///   its bytes already in `<path>` are cut and appended again: same bytes.
/// * After `commit(N)`, or when later epochs were pre-committed or even
///   partly committed: pending files after `N` are deleted; no pending file
///   at or before `N` is left, so `keep = committed_len` and any longer tail
///   is cut.
/// * During a restore: every step is derived again from the snapshot and
///   the files still on disk (a pending file is deleted only after its bytes
///   are durable in `<path>`, which moves `keep` by exactly its size), so
///   the restore can be repeated.
/// * During a fresh start: nothing committed is to be kept; a new fresh
///   start redoes it.
///
/// An error in the exactly-once mode leaves the sink in an unknown state:
/// every later call fails until the pipeline restarts (calls `start`).
pub struct FileSink {
    path: PathBuf,
    format: SinkFormat,
    buf: Vec<u8>,
    pub(super) mode: Mode,
}

pub(super) enum Mode {
    /// At least once: writes go to the output file directly.
    Plain(BufWriter<File>),
    /// Exactly once through checkpoints.
    ExactlyOnce(Box<Txn>),
}

impl FileSink {
    /// At-least-once mode: create (or truncate) the file, creating missing
    /// parent directories. See [`FileSink`].
    pub fn new(config: &FileSinkConfig) -> Result<Self, ConnectorError> {
        create_parent(&config.path)?;
        let file =
            File::create(&config.path).map_err(io_err("creating sink file", &config.path))?;
        Ok(FileSink {
            path: config.path.clone(),
            format: config.format,
            buf: Vec::with_capacity(64 * 1024),
            mode: Mode::Plain(BufWriter::with_capacity(1 << 20, file)),
        })
    }

    /// Exactly-once mode, through checkpoints (two-phase commit with atomic
    /// renames). Only creates missing parent directories: the files are
    /// touched by [`start`](Sink::start), which must be called before any
    /// write. See [`FileSink`] for the protocol.
    pub fn exactly_once(config: &FileSinkConfig) -> Result<Self, ConnectorError> {
        Ok(FileSink {
            path: config.path.clone(),
            format: config.format,
            buf: Vec::with_capacity(64 * 1024),
            mode: Mode::ExactlyOnce(Box::new(Txn::new(config.path.clone())?)),
        })
    }
}

impl Sink for FileSink {
    fn start(&mut self, restore: Option<(u64, &SinkSnapshot)>) -> Result<(), ConnectorError> {
        match &mut self.mode {
            Mode::Plain(_) => Ok(()),
            Mode::ExactlyOnce(txn) => txn.start(restore),
        }
    }

    fn write(&mut self, batch: &[Record]) -> Result<(), ConnectorError> {
        self.buf.clear();
        for record in batch {
            encode_record(self.format, record, &mut self.buf);
        }
        match &mut self.mode {
            Mode::Plain(writer) => writer
                .write_all(&self.buf)
                .map_err(io_err("writing sink file", &self.path)),
            Mode::ExactlyOnce(txn) => txn.guard(|txn| txn.write(&self.buf)),
        }
    }

    fn flush(&mut self) -> Result<(), ConnectorError> {
        match &mut self.mode {
            Mode::Plain(writer) => writer
                .flush()
                .map_err(io_err("flushing sink file", &self.path)),
            Mode::ExactlyOnce(txn) => txn.guard(Txn::flush),
        }
    }

    fn pre_commit(&mut self, checkpoint: u64) -> Result<SinkSnapshot, ConnectorError> {
        match &mut self.mode {
            Mode::Plain(_) => {
                self.flush()?;
                Ok(SinkSnapshot::Null)
            }
            Mode::ExactlyOnce(txn) => txn.guard(|txn| txn.pre_commit(checkpoint)),
        }
    }

    fn commit(&mut self, checkpoint: u64) -> Result<(), ConnectorError> {
        match &mut self.mode {
            Mode::Plain(_) => Ok(()),
            Mode::ExactlyOnce(txn) => txn.guard(|txn| txn.commit(checkpoint)),
        }
    }

    fn exactly_once(&self) -> bool {
        matches!(self.mode, Mode::ExactlyOnce(_))
    }
}

//! The `file` source and sink: JSON lines on the local filesystem.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sluice_types::{ConnectorError, Position, Record, Sink, SinkSnapshot, Source};

use crate::format::{encode_record, SinkFormat};

/// Configuration of a `file` source (`type = "file"` in `[[sources]]`),
/// which reads a file of JSON lines: every non-empty line becomes one
/// record.
///
/// ```toml
/// [[sources]]
/// name = "trips"
/// type = "file"
/// path = "data/trips.jsonl"
/// ```
///
/// Each record's value is the line's bytes without the line ending (`\n`
/// or `\r\n`); the bytes are not checked, so a malformed line reaches the
/// operators as is. Empty lines are skipped. Records have no key and no
/// event time; their position is `{split: 0, offset: <1-based line number>}`.
/// The source is exhausted at the end of the file.
///
/// A line longer than `max_record_kb` KiB (default 1024, as an operator's
/// `limits.max_record_kb`) stops the pipeline with an error that names the
/// file and the line: the source never holds more than that of one line in
/// memory, and never drops a line silently.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// The file to read. A relative path is relative to the directory of the
    /// pipeline file. Required.
    pub path: PathBuf,
    /// The longest line accepted, in KiB (without the line ending).
    #[serde(default = "default_max_record_kb")]
    pub max_record_kb: u64,
}

/// The default [`FileSourceConfig::max_record_kb`].
pub const DEFAULT_MAX_RECORD_KB: u64 = 1024;

/// The largest [`FileSourceConfig::max_record_kb`] (1 GiB).
pub const MAX_MAX_RECORD_KB: u64 = 1 << 20;

fn default_max_record_kb() -> u64 {
    DEFAULT_MAX_RECORD_KB
}

impl FileSourceConfig {
    /// A config reading `path` with the default limits.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileSourceConfig {
            path: path.into(),
            max_record_kb: DEFAULT_MAX_RECORD_KB,
        }
    }

    /// Check what deserialization alone cannot: `max_record_kb` from 1 to
    /// [`MAX_MAX_RECORD_KB`].
    pub fn validate(&self) -> Result<(), ConnectorError> {
        if !(1..=MAX_MAX_RECORD_KB).contains(&self.max_record_kb) {
            return Err(ConnectorError::Config(format!(
                "file: `max_record_kb` is {}, but it must be from 1 to {MAX_MAX_RECORD_KB} (KiB); \
                 leave it out for the default ({DEFAULT_MAX_RECORD_KB})",
                self.max_record_kb
            )));
        }
        Ok(())
    }
}

/// The `file` source: reads a file of JSON lines, one record per non-empty
/// line. See [`FileSourceConfig`].
pub struct FileSource {
    path: PathBuf,
    reader: BufReader<File>,
    source_index: u16,
    /// Number of the last line read (1-based).
    line: u64,
    done: bool,
    buf: Vec<u8>,
    /// The longest line accepted, in bytes (without the line ending).
    max_line: u64,
}

impl FileSource {
    /// Open the file of the source at `source_index` in the pipeline. A
    /// missing or unreadable file is a [`ConnectorError::Io`] naming it.
    pub fn new(config: &FileSourceConfig, source_index: u16) -> Result<Self, ConnectorError> {
        config.validate()?;
        let file = File::open(&config.path).map_err(|source| ConnectorError::Io {
            what: "opening source file",
            path: config.path.display().to_string(),
            source,
        })?;
        Ok(FileSource {
            path: config.path.clone(),
            reader: BufReader::with_capacity(256 * 1024, file),
            source_index,
            line: 0,
            done: false,
            buf: Vec::with_capacity(1024),
            max_line: config.max_record_kb << 10,
        })
    }
}

impl Source for FileSource {
    fn poll_batch(&mut self, max: usize) -> Result<Option<Vec<Record>>, ConnectorError> {
        if self.done {
            return Ok(None);
        }
        let mut batch = Vec::with_capacity(max.min(4096));
        while batch.len() < max {
            self.buf.clear();
            // Never more than the longest line accepted plus its `\r\n`
            // (and one byte to tell that it is longer).
            let cap = self.max_line + 3;
            let n = (&mut self.reader)
                .take(cap)
                .read_until(b'\n', &mut self.buf)
                .map_err(|source| ConnectorError::Io {
                    what: "reading source file",
                    path: self.path.display().to_string(),
                    source,
                })?;
            if n == 0 {
                self.done = true;
                break;
            }
            self.line += 1;
            let mut line = &self.buf[..];
            if let Some(rest) = line.strip_suffix(b"\n") {
                line = rest;
                if let Some(rest) = line.strip_suffix(b"\r") {
                    line = rest;
                }
            }
            if line.len() as u64 > self.max_line {
                let kb = self.max_line >> 10;
                let message = format!("line {} is longer than the source's max_record_kb = {kb} KiB; raise `max_record_kb` on the source, or split the line", self.line);
                return Err(ConnectorError::Io {
                    what: "reading source file",
                    path: self.path.display().to_string(),
                    source: io::Error::new(io::ErrorKind::InvalidData, message),
                });
            }
            if line.is_empty() {
                continue;
            }
            batch.push(Record {
                value: line.to_vec(),
                position: Some(Position {
                    source: self.source_index,
                    split: 0,
                    offset: self.line,
                }),
                ..Default::default()
            });
        }
        if batch.is_empty() && self.done {
            return Ok(None);
        }
        Ok(Some(batch))
    }
}

/// Configuration of a `file` sink (`type = "file"` in `[[sinks]]`), which
/// writes one line per record.
///
/// ```toml
/// [[sinks]]
/// name = "out"
/// type = "file"
/// input = "clean"
/// path = "out/trips.jsonl"
/// format = "envelope"
/// ```
///
/// The file is created (with missing parent directories) or truncated when
/// the pipeline starts. In the at-least-once mode ([`FileSink::new`]),
/// writes are buffered and reach the operating system at least on every
/// flush (checkpoint) and at the end of the input. In the exactly-once mode
/// ([`FileSink::exactly_once`]), the file only ever holds the output of
/// committed checkpoints: see [`FileSink`].
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// The file to write. A relative path is relative to the directory of
    /// the pipeline file. Required.
    pub path: PathBuf,
    /// How each record is written: `"value"` (the value bytes, the default)
    /// or `"envelope"` (a JSON object with key, value, event time and
    /// headers). See [`SinkFormat`].
    #[serde(default)]
    pub format: SinkFormat,
}

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
    mode: Mode,
}

enum Mode {
    /// At least once: writes go to the output file directly.
    Plain(BufWriter<File>),
    /// Exactly once through checkpoints.
    ExactlyOnce(Box<Txn>),
}

/// The state of the exactly-once mode. See [`FileSink`].
struct Txn {
    /// The output file.
    path: PathBuf,
    /// Its directory (`.` for a bare file name).
    dir: PathBuf,
    /// Its file name.
    file_name: OsString,
    /// `<path>.inprogress`.
    inprogress: PathBuf,
    /// The open in-progress file, if the epoch has written anything.
    writer: Option<BufWriter<File>>,
    /// Bytes written to the in-progress file in this epoch.
    inprogress_len: u64,
    /// Whether `start` succeeded.
    started: bool,
    /// An operation failed: the state is unknown until the next start.
    failed: bool,
    /// The last checkpoint pre-committed or restored.
    last_checkpoint: Option<u64>,
    /// The length of `<path>` with the commits done so far.
    committed_len: u64,
    /// Pre-committed epochs not yet committed: checkpoint id -> size.
    pending: BTreeMap<u64, u64>,
    /// Unit tests: appends fail with `ENOSPC` after this many bytes.
    #[cfg(test)]
    room_for_test: Option<u64>,
}

/// What the exactly-once file sink keeps in a checkpoint.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
struct TxnSnapshot {
    /// Length of `<path>` once everything up to the checkpoint is committed.
    committed_len: u64,
    /// The pending file of the checkpoint's epoch (file name, in the
    /// directory of `<path>`), `None` for an empty epoch.
    pending: Option<String>,
    /// Size of the pending file (0 for an empty epoch).
    pending_len: u64,
}

fn create_parent(path: &Path) -> Result<(), ConnectorError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| ConnectorError::Io {
            what: "creating the directory of sink file",
            path: parent.display().to_string(),
            source: e,
        })?;
    }
    Ok(())
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ConnectorError + 'a {
    move |source| ConnectorError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

/// Make the creations, renames and deletions in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), ConnectorError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("syncing the directory of sink file", dir))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn remove_if_exists(path: &Path) -> Result<(), ConnectorError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("deleting", path)(e)),
        _ => Ok(()),
    }
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
        let path = config.path.clone();
        let file_name = path
            .file_name()
            .ok_or_else(|| {
                ConnectorError::Config(format!(
                    "file sink {}: the path must name a file",
                    path.display()
                ))
            })?
            .to_os_string();
        create_parent(&path)?;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let mut name = file_name.clone();
        name.push(".inprogress");
        let inprogress = dir.join(name);
        Ok(FileSink {
            path: path.clone(),
            format: config.format,
            buf: Vec::with_capacity(64 * 1024),
            mode: Mode::ExactlyOnce(Box::new(Txn {
                path,
                dir,
                file_name,
                inprogress,
                writer: None,
                inprogress_len: 0,
                started: false,
                failed: false,
                last_checkpoint: None,
                committed_len: 0,
                pending: BTreeMap::new(),
                #[cfg(test)]
                room_for_test: None,
            })),
        })
    }
}

impl Txn {
    fn config_err(&self, message: impl fmt::Display) -> ConnectorError {
        ConnectorError::Config(format!("file sink {}: {message}", self.path.display()))
    }

    /// Run `op` unless an earlier operation failed; remember a failure.
    fn guard<T>(
        &mut self,
        op: impl FnOnce(&mut Self) -> Result<T, ConnectorError>,
    ) -> Result<T, ConnectorError> {
        if self.failed {
            return Err(self.config_err(
                "an earlier error left the exactly-once sink in an unknown state; \
                 the pipeline must restart from a checkpoint",
            ));
        }
        if !self.started {
            return Err(self.config_err(
                "start must be called before any other operation of the exactly-once sink",
            ));
        }
        let result = op(self);
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn pending_name(&self, checkpoint: u64) -> OsString {
        let mut name = self.file_name.clone();
        name.push(format!(".pending-{checkpoint}"));
        name
    }

    fn pending_path(&self, checkpoint: u64) -> PathBuf {
        self.dir.join(self.pending_name(checkpoint))
    }

    /// The `<path>.pending-<id>` files on disk, by increasing id. Only
    /// canonical decimal ids count; other names are left alone.
    fn list_pending(&self) -> Result<Vec<(u64, PathBuf)>, ConnectorError> {
        let mut prefix = self.file_name.clone();
        prefix.push(".pending-");
        let prefix = prefix.as_encoded_bytes();
        let mut found = Vec::new();
        let entries = std::fs::read_dir(&self.dir)
            .map_err(io_err("listing the directory of sink file", &self.dir))?;
        for entry in entries {
            let entry = entry.map_err(io_err("listing the directory of sink file", &self.dir))?;
            let name = entry.file_name();
            let Some(rest) = name.as_encoded_bytes().strip_prefix(prefix) else {
                continue;
            };
            let Some(id) = std::str::from_utf8(rest)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            if id.to_string().as_bytes() == rest {
                found.push((id, self.dir.join(&name)));
            }
        }
        found.sort();
        Ok(found)
    }

    /// Open `<path>` for writing, check that it holds at least `keep` bytes
    /// (the committed output), cut it to exactly `keep` and position at the
    /// end.
    fn open_output_at(&self, keep: u64) -> Result<File, ConnectorError> {
        let lost = |len: &dyn fmt::Display| {
            self.config_err(format!(
                "the output file is {len} but must already hold the {keep} bytes of committed output: \
                 it was modified or lost outside Sluice"
            ))
        };
        let mut file = match OpenOptions::new().write(true).open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound && keep > 0 => {
                return Err(lost(&"missing"))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                File::create(&self.path).map_err(io_err("creating sink file", &self.path))?
            }
            Err(e) => return Err(io_err("opening sink file", &self.path)(e)),
        };
        let len = file
            .metadata()
            .map_err(io_err("reading the size of sink file", &self.path))?
            .len();
        if len < keep {
            return Err(lost(&format_args!("{len} bytes long")));
        }
        if len > keep {
            file.set_len(keep)
                .map_err(io_err("truncating sink file", &self.path))?;
        }
        file.seek(SeekFrom::Start(keep))
            .map_err(io_err("seeking in sink file", &self.path))?;
        Ok(file)
    }

    /// Append the `len` bytes of the pending file `pending` to `out`, make
    /// them durable, then delete the pending file.
    fn append_pending(
        &self,
        out: &mut File,
        pending: &Path,
        len: u64,
    ) -> Result<(), ConnectorError> {
        let src = File::open(pending).map_err(io_err("opening pending sink file", pending))?;
        let actual = src
            .metadata()
            .map_err(io_err("reading the size of pending sink file", pending))?
            .len();
        if actual != len {
            return Err(self.config_err(format_args!(
                "the pending file {} is {actual} bytes long instead of {len}: it was modified outside Sluice",
                pending.display()
            )));
        }
        #[cfg(test)]
        if let Some(room) = self.room_for_test.filter(|room| *room < len) {
            // A disk that fills up after `room` more bytes.
            io::copy(&mut (&src).take(room), out)
                .map_err(io_err("appending to sink file", &self.path))?;
            return Err(io_err("appending to sink file", &self.path)(
                io::Error::from_raw_os_error(28),
            ));
        }
        let copied = io::copy(&mut src.take(len), out)
            .map_err(io_err("appending to sink file", &self.path))?;
        if copied != len {
            return Err(self.config_err(format_args!(
                "the pending file {} ended after {copied} of {len} bytes",
                pending.display()
            )));
        }
        out.sync_all()
            .map_err(io_err("syncing sink file", &self.path))?;
        std::fs::remove_file(pending).map_err(io_err("deleting pending sink file", pending))
    }

    /// [`append_pending`](Self::append_pending) to `out`, which holds
    /// `at` bytes; if that fails (a full disk, a file size limit), cut
    /// `out` back to `at` before returning the error, so that `<path>` is
    /// never left holding part of an epoch (shrinking a file needs no
    /// space). The pending file stays, and the restart appends it again.
    fn append_pending_or_cut(
        &self,
        out: &mut File,
        pending: &Path,
        len: u64,
        at: u64,
    ) -> Result<(), ConnectorError> {
        let result = self.append_pending(out, pending, len);
        if result.is_err() {
            if let Err(e) = out.set_len(at).and_then(|_| out.sync_all()) {
                tracing::error!("file sink {}: could not cut off a failed append ({e}): the file ends with part of an epoch until the pipeline restarts", self.path.display());
            }
        }
        result
    }

    fn reset(&mut self, committed_len: u64, last_checkpoint: Option<u64>) {
        self.writer = None;
        self.inprogress_len = 0;
        self.pending.clear();
        self.committed_len = committed_len;
        self.last_checkpoint = last_checkpoint;
        self.failed = false;
        self.started = true;
    }

    fn start(&mut self, restore: Option<(u64, &SinkSnapshot)>) -> Result<(), ConnectorError> {
        // A buffered in-progress file is discarded, not flushed.
        if let Some(writer) = self.writer.take() {
            let _ = writer.into_parts();
        }
        self.started = false;
        match restore {
            None => self.start_fresh()?,
            Some((checkpoint, snapshot)) => self.restore(checkpoint, snapshot)?,
        }
        Ok(())
    }

    fn start_fresh(&mut self) -> Result<(), ConnectorError> {
        for (_, pending) in self.list_pending()? {
            remove_if_exists(&pending)?;
        }
        remove_if_exists(&self.inprogress)?;
        let file = File::create(&self.path).map_err(io_err("creating sink file", &self.path))?;
        file.sync_all()
            .map_err(io_err("syncing sink file", &self.path))?;
        sync_dir(&self.dir)?;
        self.reset(0, None);
        Ok(())
    }

    fn restore(&mut self, checkpoint: u64, snapshot: &SinkSnapshot) -> Result<(), ConnectorError> {
        let snap: TxnSnapshot = serde_json::from_value(snapshot.clone()).map_err(|e| {
            self.config_err(format_args!(
                "checkpoint {checkpoint} holds no valid exactly-once file sink snapshot ({e}): {snapshot}"
            ))
        })?;
        let own_name = self.pending_name(checkpoint);
        if let Some(name) = &snap.pending {
            if own_name.to_str() != Some(name.as_str()) {
                return Err(self.config_err(format_args!(
                    "checkpoint {checkpoint} names the pending file {name:?} instead of {own_name:?}: \
                     was the sink's path changed since?"
                )));
            }
        }
        // Pending files at or before the checkpoint are still to be
        // appended; the others (and `.inprogress`) are epochs to replay.
        let mut replay = Vec::new();
        let mut discard = Vec::new();
        for (id, pending) in self.list_pending()? {
            if id < checkpoint || (id == checkpoint && snap.pending.is_some()) {
                let len = std::fs::metadata(&pending)
                    .map_err(io_err("reading the size of pending sink file", &pending))?
                    .len();
                if id == checkpoint && len != snap.pending_len {
                    return Err(self.config_err(format_args!(
                        "the pending file {} is {len} bytes long but checkpoint {checkpoint} recorded {}: \
                         it was modified outside Sluice",
                        pending.display(),
                        snap.pending_len
                    )));
                }
                replay.push((pending, len));
            } else {
                discard.push(pending);
            }
        }
        let pending_total: u64 = replay.iter().map(|(_, len)| len).sum();
        let keep = snap
            .committed_len
            .checked_sub(pending_total)
            .ok_or_else(|| {
                self.config_err(format_args!(
                "the pending files hold {pending_total} bytes, more than the {} bytes of output of \
                 checkpoint {checkpoint}: they were modified outside Sluice",
                snap.committed_len
            ))
            })?;
        let mut out = self.open_output_at(keep)?;
        out.sync_all()
            .map_err(io_err("syncing sink file", &self.path))?;
        let mut at = keep;
        for (pending, len) in &replay {
            self.append_pending_or_cut(&mut out, pending, *len, at)?;
            at += len;
        }
        drop(out);
        for pending in discard {
            remove_if_exists(&pending)?;
        }
        remove_if_exists(&self.inprogress)?;
        sync_dir(&self.dir)?;
        self.reset(snap.committed_len, Some(checkpoint));
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), ConnectorError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let writer = match &mut self.writer {
            Some(writer) => writer,
            None => {
                let file = File::create(&self.inprogress)
                    .map_err(io_err("creating sink file", &self.inprogress))?;
                self.writer.insert(BufWriter::with_capacity(1 << 20, file))
            }
        };
        writer
            .write_all(bytes)
            .map_err(io_err("writing sink file", &self.inprogress))?;
        self.inprogress_len += bytes.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ConnectorError> {
        match &mut self.writer {
            Some(writer) => writer
                .flush()
                .map_err(io_err("flushing sink file", &self.inprogress)),
            None => Ok(()),
        }
    }

    fn pre_commit(&mut self, checkpoint: u64) -> Result<SinkSnapshot, ConnectorError> {
        if let Some(last) = self.last_checkpoint.filter(|&last| checkpoint <= last) {
            return Err(self.config_err(format_args!(
                "checkpoint ids must increase: pre-commit of checkpoint {checkpoint} after {last}"
            )));
        }
        let len = self.inprogress_len;
        let mut pending = None;
        if let Some(writer) = self.writer.take() {
            let file = writer
                .into_inner()
                .map_err(|e| io_err("flushing sink file", &self.inprogress)(e.into_error()))?;
            file.sync_all()
                .map_err(io_err("syncing sink file", &self.inprogress))?;
            drop(file);
            let pending_path = self.pending_path(checkpoint);
            std::fs::rename(&self.inprogress, &pending_path)
                .map_err(io_err("renaming sink file", &self.inprogress))?;
            sync_dir(&self.dir)?;
            self.pending.insert(checkpoint, len);
            pending = Some(self.pending_name(checkpoint).to_string_lossy().into_owned());
        }
        self.inprogress_len = 0;
        self.last_checkpoint = Some(checkpoint);
        let snapshot = TxnSnapshot {
            committed_len: self.committed_len + self.pending.values().sum::<u64>(),
            pending,
            pending_len: len,
        };
        Ok(serde_json::to_value(snapshot).expect("a snapshot serializes"))
    }

    fn commit(&mut self, checkpoint: u64) -> Result<(), ConnectorError> {
        let due: Vec<(u64, u64)> = self
            .pending
            .range(..=checkpoint)
            .map(|(&id, &len)| (id, len))
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        let mut out = self.open_output_at(self.committed_len)?;
        for (id, len) in due {
            self.append_pending_or_cut(&mut out, &self.pending_path(id), len, self.committed_len)?;
            self.pending.remove(&id);
            self.committed_len += len;
        }
        drop(out);
        sync_dir(&self.dir)
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

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_types::Header;

    fn read_all(source: &mut FileSource, max: usize) -> Vec<Record> {
        let mut all = Vec::new();
        while let Some(batch) = source.poll_batch(max).unwrap() {
            assert!(batch.len() <= max);
            all.extend(batch);
        }
        assert!(source.poll_batch(max).unwrap().is_none(), "stays exhausted");
        all
    }

    #[test]
    fn source_line_numbers_and_empty_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(
            &path,
            b"{\"a\":1}\n\n{\"a\":2}\r\n\r\nnot json\n\n{\"a\":3}",
        )
        .unwrap();
        let mut source = FileSource::new(&FileSourceConfig::new(path), 3).unwrap();
        let records = read_all(&mut source, 2);
        let got: Vec<(&[u8], u64)> = records
            .iter()
            .map(|r| (&r.value[..], r.position.unwrap().offset))
            .collect();
        assert_eq!(
            got,
            vec![
                (&b"{\"a\":1}"[..], 1),
                (&b"{\"a\":2}"[..], 3),
                (&b"not json"[..], 5),
                (&b"{\"a\":3}"[..], 7)
            ]
        );
        for r in &records {
            let pos = r.position.unwrap();
            assert_eq!((pos.source, pos.split), (3, 0));
            assert_eq!((r.key.as_ref(), r.event_time), (None, None));
        }
    }

    #[test]
    fn source_empty_file_is_exhausted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.jsonl");
        std::fs::write(&path, b"\n\n").unwrap();
        let mut source = FileSource::new(&FileSourceConfig::new(path), 0).unwrap();
        assert!(read_all(&mut source, 10).is_empty());
    }

    #[test]
    fn source_refuses_a_line_over_max_record_kb_with_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        let exact = "x".repeat(1024);
        let long = "y".repeat(64 << 10);
        std::fs::write(&path, format!("a\n{exact}\r\n{exact}\n{long}\nb\n")).unwrap();
        let config = FileSourceConfig {
            path: path.clone(),
            max_record_kb: 1,
        };
        let mut source = FileSource::new(&config, 0).unwrap();
        let batch = source.poll_batch(3).unwrap().unwrap();
        assert_eq!(
            batch.iter().map(|r| r.value.len()).collect::<Vec<_>>(),
            vec![1, 1024, 1024],
            "a line of exactly max_record_kb is accepted"
        );
        let err = source.poll_batch(3).unwrap_err().to_string();
        assert!(
            err.contains(&path.display().to_string())
                && err.contains("line 4 is longer than the source's max_record_kb = 1 KiB"),
            "{err}"
        );
        // The reader held at most the limit of the long line.
        assert!(
            source.buf.capacity() < 8 << 10,
            "{} bytes buffered",
            source.buf.capacity()
        );
        // Without a line ending at the end of the file too.
        std::fs::write(&path, "y".repeat(1025)).unwrap();
        let err = FileSource::new(&config, 0)
            .unwrap()
            .poll_batch(3)
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1 is longer"), "{err}");
        let err = FileSource::new(
            &FileSourceConfig {
                path,
                max_record_kb: 0,
            },
            0,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("`max_record_kb` is 0"), "{err}");
    }

    #[test]
    fn source_missing_file_names_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.jsonl");
        let err = FileSource::new(&FileSourceConfig::new(path.clone()), 0)
            .err()
            .unwrap();
        assert!(matches!(err, ConnectorError::Io { .. }));
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
    }

    #[test]
    fn config_parsing() {
        let c: FileSinkConfig = serde_json::from_str(r#"{"path": "x.jsonl"}"#).unwrap();
        assert_eq!(c.format, SinkFormat::Value);
        let c: FileSinkConfig =
            serde_json::from_str(r#"{"path": "x.jsonl", "format": "envelope"}"#).unwrap();
        assert_eq!(c.format, SinkFormat::Envelope);
        assert!(
            serde_json::from_str::<FileSinkConfig>(r#"{"path": "x", "format": "csv"}"#).is_err()
        );
        assert!(
            serde_json::from_str::<FileSinkConfig>(r#"{"path": "x", "fromat": "value"}"#).is_err()
        );
        assert!(serde_json::from_str::<FileSourceConfig>(r#"{"path": "x", "name": "s"}"#).is_err());
        assert!(serde_json::from_str::<FileSourceConfig>(r#"{}"#).is_err());
    }

    #[test]
    fn sink_round_trip_through_source() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/out.jsonl");
        let records: Vec<Record> = crate::taxi_records(
            &crate::GeneratorConfig {
                count: Some(1000),
                malformed_ratio: 0.0,
                ..Default::default()
            },
            0,
        )
        .collect();
        let mut sink = FileSink::new(&FileSinkConfig {
            path: path.clone(),
            format: SinkFormat::Value,
        })
        .unwrap();
        for chunk in records.chunks(77) {
            sink.write(chunk).unwrap();
        }
        sink.flush().unwrap();
        let mut source = FileSource::new(&FileSourceConfig::new(path.clone()), 0).unwrap();
        let back = read_all(&mut source, 100);
        assert_eq!(back.len(), records.len());
        for (i, (a, b)) in records.iter().zip(&back).enumerate() {
            assert_eq!(a.value, b.value);
            assert_eq!(b.position.unwrap().offset, i as u64 + 1);
        }

        // Reopening truncates.
        let mut sink = FileSink::new(&FileSinkConfig {
            path: path.clone(),
            format: SinkFormat::Value,
        })
        .unwrap();
        sink.write(&[Record::from_value("x")]).unwrap();
        drop(sink);
        assert_eq!(std::fs::read(&path).unwrap(), b"x\n");
    }

    #[test]
    fn sink_envelope_with_binary_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("env.jsonl");
        let mut sink = FileSink::new(&FileSinkConfig {
            path: path.clone(),
            format: SinkFormat::Envelope,
        })
        .unwrap();
        let records = vec![
            Record {
                key: Some(b"k".to_vec()),
                value: b"{\"n\": 1.50}".to_vec(),
                event_time: Some(7),
                headers: vec![Header {
                    name: "h".into(),
                    value: b"v".to_vec(),
                }],
                position: None,
            },
            Record::from_value("plain text"),
            Record::from_value(vec![0xff, b'\n', 0x00]),
        ];
        sink.write(&records).unwrap();
        sink.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            vec![
                r#"{"key":"k","value":{"n":1.50},"event_time":7,"headers":{"h":"v"}}"#,
                r#"{"key":null,"value":"plain text","event_time":null,"headers":{}}"#,
                r#"{"key":null,"value_base64":"/woA","event_time":null,"headers":{}}"#,
            ]
        );
    }

    // ---- exactly-once mode ----

    const OUT: &str = "out.jsonl";

    fn eo_sink(dir: &Path) -> FileSink {
        FileSink::exactly_once(&FileSinkConfig {
            path: dir.join(OUT),
            format: SinkFormat::Value,
        })
        .unwrap()
    }

    /// The records of epoch `epoch`: `e<epoch>-<i>` for `i` in `0..n`.
    fn epoch_records(epoch: u64, n: usize) -> Vec<Record> {
        (0..n)
            .map(|i| Record::from_value(format!("e{epoch}-{i}")))
            .collect()
    }

    /// What the output holds once the epochs are committed (`n` records each).
    fn output_of(epochs: impl IntoIterator<Item = (u64, usize)>) -> String {
        let mut out = String::new();
        for (epoch, n) in epochs {
            for i in 0..n {
                out.push_str(&format!("e{epoch}-{i}\n"));
            }
        }
        out
    }

    fn read_out(dir: &Path) -> String {
        std::fs::read_to_string(dir.join(OUT)).unwrap()
    }

    /// Files in `dir` other than the output.
    fn others(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != OUT)
            .collect();
        names.sort();
        names
    }

    /// Write epoch `epoch` (`n` records, in two batches) and pre-commit it.
    fn run_epoch(sink: &mut FileSink, epoch: u64, n: usize) -> SinkSnapshot {
        let records = epoch_records(epoch, n);
        let (a, b) = records.split_at(n / 2);
        sink.write(a).unwrap();
        sink.flush().unwrap();
        sink.write(b).unwrap();
        sink.pre_commit(epoch).unwrap()
    }

    /// A crash: the process dies, nothing is flushed or dropped.
    fn crash(sink: FileSink) {
        std::mem::forget(sink);
    }

    /// Restart from `checkpoint`, check the output is exactly `expected`
    /// with no leftovers, then run and commit one more epoch.
    fn restart_and_continue(dir: &Path, checkpoint: u64, snapshot: &SinkSnapshot, expected: &str) {
        let mut sink = eo_sink(dir);
        sink.start(Some((checkpoint, snapshot))).unwrap();
        assert_eq!(read_out(dir), expected);
        assert!(others(dir).is_empty(), "{:?}", others(dir));
        let next = checkpoint + 1;
        let snap = run_epoch(&mut sink, next, 3);
        assert_eq!(read_out(dir), expected, "not visible before commit");
        let len = (expected.len() + output_of([(next, 3)]).len()) as u64;
        assert_eq!(snap["committed_len"], len);
        sink.commit(next).unwrap();
        assert_eq!(
            read_out(dir),
            format!("{expected}{}", output_of([(next, 3)]))
        );
        assert!(others(dir).is_empty(), "{:?}", others(dir));
    }

    #[test]
    fn exactly_once_a_full_disk_never_leaves_part_of_an_epoch_in_the_output() {
        let committed = output_of([(1, 4)]);
        let epoch = output_of([(2, 50)]);
        for room in [0, 1, 7, epoch.len() as u64 / 2, epoch.len() as u64 - 1] {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            let mut sink = eo_sink(d);
            sink.start(None).unwrap();
            run_epoch(&mut sink, 1, 4);
            sink.commit(1).unwrap();
            let snap = run_epoch(&mut sink, 2, 50);
            let Mode::ExactlyOnce(txn) = &mut sink.mode else {
                unreachable!()
            };
            txn.room_for_test = Some(room);
            let err = sink.commit(2).expect_err("the disk is full");
            assert!(err.to_string().contains("appending to sink file"), "{err}");
            assert_eq!(
                read_out(d),
                committed,
                "room for {room} bytes: the output holds committed epochs only"
            );
            assert_eq!(others(d), vec!["out.jsonl.pending-2"]);
            assert!(sink.commit(2).is_err(), "failed until restarted");
            crash(sink);
            // The restart (with room again) appends the epoch whole.
            restart_and_continue(d, 2, &snap, &format!("{committed}{epoch}"));
        }
    }

    #[test]
    fn exactly_once_fresh_start_truncates_and_cleans_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for name in [
            OUT,
            "out.jsonl.inprogress",
            "out.jsonl.pending-3",
            "out.jsonl.pending-17",
        ] {
            std::fs::write(d.join(name), b"old\n").unwrap();
        }
        // Not ours: left alone.
        for name in [
            "out.jsonl.pending-x",
            "out.jsonl.pending-007",
            "other.jsonl.pending-1",
            "notes.txt",
        ] {
            std::fs::write(d.join(name), b"keep\n").unwrap();
        }
        let mut sink = eo_sink(d);
        assert!(sink.exactly_once());
        assert_eq!(read_out(d), "old\n", "the constructor touches nothing");
        sink.start(None).unwrap();
        assert_eq!(read_out(d), "");
        assert_eq!(
            others(d),
            vec![
                "notes.txt",
                "other.jsonl.pending-1",
                "out.jsonl.pending-007",
                "out.jsonl.pending-x"
            ]
        );

        // Missing file and directories are created.
        let path = d.join("a/b/new.jsonl");
        let mut sink = FileSink::exactly_once(&FileSinkConfig {
            path: path.clone(),
            format: SinkFormat::Value,
        })
        .unwrap();
        sink.start(None).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"");
    }

    #[test]
    fn exactly_once_output_visible_only_after_commit() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut sink = eo_sink(d);
        sink.start(None).unwrap();
        sink.write(&epoch_records(1, 4)).unwrap();
        sink.flush().unwrap();
        assert_eq!(read_out(d), "");
        assert_eq!(others(d), vec!["out.jsonl.inprogress"]);
        assert_eq!(
            std::fs::read_to_string(d.join("out.jsonl.inprogress")).unwrap(),
            output_of([(1, 4)])
        );

        let snap = sink.pre_commit(1).unwrap();
        let n = output_of([(1, 4)]).len() as u64;
        assert_eq!(
            snap,
            serde_json::json!({"committed_len": n, "pending": "out.jsonl.pending-1", "pending_len": n})
        );
        assert_eq!(read_out(d), "");
        assert_eq!(others(d), vec!["out.jsonl.pending-1"]);

        sink.commit(1).unwrap();
        assert_eq!(read_out(d), output_of([(1, 4)]));
        assert!(others(d).is_empty());
    }

    #[test]
    fn exactly_once_epochs_commit_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut sink = eo_sink(d);
        sink.start(None).unwrap();
        let s1 = run_epoch(&mut sink, 1, 3);
        sink.write(&[]).unwrap();
        let s2 = sink.pre_commit(2).unwrap(); // empty epoch
        let s3 = run_epoch(&mut sink, 3, 5);
        let s5 = run_epoch(&mut sink, 5, 2);
        let len = |e: &[(u64, usize)]| output_of(e.iter().copied()).len() as u64;
        assert_eq!(s1["committed_len"], len(&[(1, 3)]));
        assert_eq!(
            s2,
            serde_json::json!({"committed_len": len(&[(1, 3)]), "pending": null, "pending_len": 0})
        );
        assert_eq!(s3["committed_len"], len(&[(1, 3), (3, 5)]));
        assert_eq!(s5["committed_len"], len(&[(1, 3), (3, 5), (5, 2)]));
        assert_eq!(
            others(d),
            vec![
                "out.jsonl.pending-1",
                "out.jsonl.pending-3",
                "out.jsonl.pending-5"
            ]
        );
        assert_eq!(read_out(d), "");

        // A commit commits every epoch up to it, in order.
        sink.commit(3).unwrap();
        assert_eq!(read_out(d), output_of([(1, 3), (3, 5)]));
        assert_eq!(others(d), vec!["out.jsonl.pending-5"]);
        sink.commit(2).unwrap(); // already committed
        sink.commit(4).unwrap(); // nothing pending up to 4
        assert_eq!(read_out(d), output_of([(1, 3), (3, 5)]));
        sink.commit(5).unwrap();
        assert_eq!(read_out(d), output_of([(1, 3), (3, 5), (5, 2)]));
        assert!(others(d).is_empty());

        // The end of a bounded input: a final pre-commit and commit.
        let snap = run_epoch(&mut sink, 6, 1);
        assert_eq!(
            snap["committed_len"],
            len(&[(1, 3), (3, 5), (5, 2), (6, 1)])
        );
        sink.commit(6).unwrap();
        assert_eq!(read_out(d), output_of([(1, 3), (3, 5), (5, 2), (6, 1)]));
    }

    #[test]
    fn exactly_once_commit_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut sink = eo_sink(d);
        sink.start(None).unwrap();
        sink.commit(1).unwrap(); // nothing pre-committed
        run_epoch(&mut sink, 1, 2);
        sink.commit(1).unwrap();
        sink.commit(1).unwrap();
        sink.commit(0).unwrap();
        sink.commit(u64::MAX).unwrap();
        assert_eq!(read_out(d), output_of([(1, 2)]));
        run_epoch(&mut sink, 2, 2);
        sink.commit(2).unwrap();
        sink.commit(2).unwrap();
        sink.commit(1).unwrap();
        assert_eq!(read_out(d), output_of([(1, 2), (2, 2)]));
        assert!(others(d).is_empty());
    }

    /// Fresh start, epochs 1 and 2 committed, epoch 3 pre-committed: returns
    /// the sink and the snapshot of checkpoint 3.
    fn setup_checkpoint_3(d: &Path) -> (FileSink, SinkSnapshot) {
        let mut sink = eo_sink(d);
        sink.start(None).unwrap();
        run_epoch(&mut sink, 1, 4);
        sink.commit(1).unwrap();
        run_epoch(&mut sink, 2, 3);
        sink.commit(2).unwrap();
        let snap = run_epoch(&mut sink, 3, 5);
        (sink, snap)
    }

    const AT_3: [(u64, usize); 3] = [(1, 4), (2, 3), (3, 5)];

    #[test]
    fn exactly_once_restart_after_pre_commit_without_commit() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (mut sink, snap) = setup_checkpoint_3(d);
        // Records of the next epoch were written (and flushed) before the crash.
        sink.write(&epoch_records(4, 2)).unwrap();
        sink.flush().unwrap();
        crash(sink);
        assert_eq!(read_out(d), output_of([(1, 4), (2, 3)]));
        restart_and_continue(d, 3, &snap, &output_of(AT_3));
    }

    #[test]
    fn exactly_once_restart_after_partial_append() {
        let n = output_of([(3, 5)]).len();
        for cut in [0, 1, n / 2, n - 1, n] {
            for garbage in [&b""[..], b"\0\0\0\0"] {
                let dir = tempfile::tempdir().unwrap();
                let d = dir.path();
                let (sink, snap) = setup_checkpoint_3(d);
                crash(sink);
                // A commit of 3 died mid-append (or after the append, before
                // the deletion of the pending file).
                let pending = std::fs::read(d.join("out.jsonl.pending-3")).unwrap();
                let mut out = OpenOptions::new().append(true).open(d.join(OUT)).unwrap();
                out.write_all(&pending[..cut]).unwrap();
                out.write_all(garbage).unwrap();
                drop(out);
                restart_and_continue(d, 3, &snap, &output_of(AT_3));
            }
        }
    }

    #[test]
    fn exactly_once_restart_after_completed_commit() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (mut sink, snap) = setup_checkpoint_3(d);
        sink.commit(3).unwrap();
        sink.write(&epoch_records(4, 2)).unwrap();
        crash(sink);
        assert_eq!(read_out(d), output_of(AT_3));
        restart_and_continue(d, 3, &snap, &output_of(AT_3));
    }

    #[test]
    fn exactly_once_restart_with_later_epochs_pre_committed() {
        // (commit of 3 done?, how much of epoch 4 reached the output by hand)
        for (commit_3, epoch_4_bytes) in [
            (false, None),
            (true, None),
            (true, Some(0.5)),
            (true, Some(1.0)),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            let (mut sink, snap) = setup_checkpoint_3(d);
            if commit_3 {
                sink.commit(3).unwrap();
            }
            run_epoch(&mut sink, 4, 2);
            run_epoch(&mut sink, 5, 3);
            sink.write(&epoch_records(6, 2)).unwrap();
            sink.flush().unwrap();
            crash(sink);
            if let Some(fraction) = epoch_4_bytes {
                // A commit of 4 died mid-append: checkpoint 4 completed, but
                // the pipeline restarts from 3 anyway.
                let pending = std::fs::read(d.join("out.jsonl.pending-4")).unwrap();
                let cut = (pending.len() as f64 * fraction) as usize;
                let mut out = OpenOptions::new().append(true).open(d.join(OUT)).unwrap();
                out.write_all(&pending[..cut]).unwrap();
            }
            restart_and_continue(d, 3, &snap, &output_of(AT_3));
        }
    }

    #[test]
    fn exactly_once_restart_with_several_uncommitted_epochs() {
        // Commits of 2 and 3 were skipped (or 3's died after 2 was appended).
        for appended in [0, 1, 2] {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            let mut sink = eo_sink(d);
            sink.start(None).unwrap();
            run_epoch(&mut sink, 1, 4);
            sink.commit(1).unwrap();
            run_epoch(&mut sink, 2, 3);
            let snap = run_epoch(&mut sink, 3, 5);
            run_epoch(&mut sink, 4, 1);
            crash(sink);
            let pending_2 = std::fs::read(d.join("out.jsonl.pending-2")).unwrap();
            let mut out = OpenOptions::new().append(true).open(d.join(OUT)).unwrap();
            match appended {
                1 => out.write_all(&pending_2[..5]).unwrap(),
                2 => {
                    out.write_all(&pending_2).unwrap();
                    std::fs::remove_file(d.join("out.jsonl.pending-2")).unwrap();
                }
                _ => {}
            }
            drop(out);
            restart_and_continue(d, 3, &snap, &output_of(AT_3));
        }

        // The same with an empty epoch 3.
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut sink = eo_sink(d);
        sink.start(None).unwrap();
        run_epoch(&mut sink, 1, 4);
        run_epoch(&mut sink, 2, 3);
        let snap = sink.pre_commit(3).unwrap();
        assert_eq!(snap["pending"], serde_json::Value::Null);
        crash(sink);
        restart_and_continue(d, 3, &snap, &output_of([(1, 4), (2, 3)]));
    }

    #[test]
    fn exactly_once_restore_can_be_repeated() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (sink, snap) = setup_checkpoint_3(d);
        crash(sink);
        for _ in 0..3 {
            let mut sink = eo_sink(d);
            sink.start(Some((3, &snap))).unwrap();
            sink.write(&epoch_records(4, 2)).unwrap();
            crash(sink);
            assert_eq!(read_out(d), output_of(AT_3));
        }
        restart_and_continue(d, 3, &snap, &output_of(AT_3));
        // The restored checkpoint 0 of an empty output.
        let mut sink = eo_sink(d);
        let empty = serde_json::json!({"committed_len": 0, "pending": null, "pending_len": 0});
        sink.start(Some((0, &empty))).unwrap();
        assert_eq!(read_out(d), "");
    }

    #[test]
    fn exactly_once_restart_fails_on_shortened_output() {
        let expect_lost = |d: &Path, snap: &SinkSnapshot| {
            let err = eo_sink(d)
                .start(Some((3, snap)))
                .expect_err("start must fail");
            assert!(matches!(err, ConnectorError::Config(_)), "{err:?}");
            let message = err.to_string();
            assert!(
                message.contains(&d.join(OUT).display().to_string()),
                "{message}"
            );
            assert!(
                message.contains("modified or lost outside Sluice"),
                "{message}"
            );
        };
        // Committed output, then shortened.
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (mut sink, snap) = setup_checkpoint_3(d);
        sink.commit(3).unwrap();
        crash(sink);
        let len = std::fs::metadata(d.join(OUT)).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(d.join(OUT))
            .unwrap()
            .set_len(len - 1)
            .unwrap();
        expect_lost(d, &snap);
        // Deleted.
        std::fs::remove_file(d.join(OUT)).unwrap();
        expect_lost(d, &snap);

        // Epoch 3 pending, and the committed part before it shortened.
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (sink, snap) = setup_checkpoint_3(d);
        crash(sink);
        let len = std::fs::metadata(d.join(OUT)).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(d.join(OUT))
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        expect_lost(d, &snap);
        assert!(
            d.join("out.jsonl.pending-3").exists(),
            "nothing is deleted on failure"
        );

        // A pending file changed size.
        std::fs::write(d.join("out.jsonl.pending-3"), b"x\n").unwrap();
        let err = eo_sink(d).start(Some((3, &snap))).err().unwrap();
        assert!(err.to_string().contains("modified outside Sluice"), "{err}");

        // Not a file sink snapshot.
        let err = eo_sink(d)
            .start(Some((3, &SinkSnapshot::Null)))
            .err()
            .unwrap();
        assert!(matches!(err, ConnectorError::Config(_)), "{err:?}");
    }

    #[test]
    fn exactly_once_misuse_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut sink = eo_sink(d);
        assert!(
            sink.write(&epoch_records(1, 1)).is_err(),
            "write before start"
        );
        sink.start(None).unwrap();
        run_epoch(&mut sink, 5, 1);
        let err = sink.pre_commit(5).err().unwrap();
        assert!(err.to_string().contains("must increase"), "{err}");
        // The sink is now failed until restarted.
        assert!(sink.commit(5).is_err());
        sink.start(None).unwrap();
        run_epoch(&mut sink, 1, 1);
        sink.commit(1).unwrap();
        assert_eq!(read_out(d), output_of([(1, 1)]));
    }

    #[test]
    fn at_least_once_keeps_default_checkpoint_behaviour() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(OUT);
        std::fs::write(&path, b"old\n").unwrap();
        let mut sink = FileSink::new(&FileSinkConfig {
            path: path.clone(),
            format: SinkFormat::Value,
        })
        .unwrap();
        assert!(!sink.exactly_once());
        assert_eq!(std::fs::read(&path).unwrap(), b"", "truncated on open");
        sink.start(None).unwrap();
        sink.write(&[Record::from_value("a")]).unwrap();
        assert_eq!(sink.pre_commit(1).unwrap(), SinkSnapshot::Null);
        assert_eq!(std::fs::read(&path).unwrap(), b"a\n", "pre-commit flushes");
        sink.commit(1).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"a\n");
        assert_eq!(others(dir.path()), Vec::<String>::new());
        let config = FileSinkConfig {
            path,
            format: SinkFormat::Value,
        };
        let boxed: Box<dyn Sink> = Box::new(FileSink::exactly_once(&config).unwrap());
        assert!(boxed.exactly_once());
    }
}

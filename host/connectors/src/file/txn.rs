//! The exactly-once mode of the file sink: a two-phase commit with atomic
//! renames (the protocol and why a crash at any point is safe are on
//! [`FileSink`](super::FileSink)).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sluice_types::{ConnectorError, SinkSnapshot};

use super::disk::{create_parent, io_err, remove_if_exists, sync_dir};

/// The state of the exactly-once mode. See [`FileSink`].
pub(super) struct Txn {
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
    pub(super) room_for_test: Option<u64>,
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

impl Txn {
    /// The exactly-once state of a sink writing `path`: names its files
    /// and creates missing parent directories; touches no file.
    pub(super) fn new(path: PathBuf) -> Result<Txn, ConnectorError> {
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
        Ok(Txn {
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
        })
    }

    fn config_err(&self, message: impl fmt::Display) -> ConnectorError {
        ConnectorError::Config(format!("file sink {}: {message}", self.path.display()))
    }

    /// Run `op` unless an earlier operation failed; remember a failure.
    pub(super) fn guard<T>(
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

    pub(super) fn start(
        &mut self,
        restore: Option<(u64, &SinkSnapshot)>,
    ) -> Result<(), ConnectorError> {
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

    pub(super) fn write(&mut self, bytes: &[u8]) -> Result<(), ConnectorError> {
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

    pub(super) fn flush(&mut self) -> Result<(), ConnectorError> {
        match &mut self.writer {
            Some(writer) => writer
                .flush()
                .map_err(io_err("flushing sink file", &self.inprogress)),
            None => Ok(()),
        }
    }

    pub(super) fn pre_commit(&mut self, checkpoint: u64) -> Result<SinkSnapshot, ConnectorError> {
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

    pub(super) fn commit(&mut self, checkpoint: u64) -> Result<(), ConnectorError> {
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

//! One run owns a pipeline's state directory at a time (DESIGN.md,
//! decision 10).
//!
//! A run holds an advisory lock (`flock`, through [`std::fs::File::try_lock`])
//! on `run.lock` in the pipeline's state directory (`<state dir>/<pipeline>`)
//! and, when `[checkpoints] dir` puts the checkpoint store elsewhere, on
//! `run.lock` in the store too, for its whole life. The file holds the
//! holder's [`RunInfo`] (pid and run id). A second run fails at once with
//! the holder's pid; the lock goes away with the process, however it ends
//! (a `kill -9` leaves no stale lock).
//!
//! `sluice stop` and `sluice savepoint` do not take the lock (the run must
//! keep it while it answers them): they [`probe`] it, and address their
//! request to the run id they find, so that a request the run did not take
//! can never stop a later run.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sluice_config::Pipeline;

pub use crate::error::RunLockError;

/// The lock file's name.
pub const LOCK_FILE: &str = "run.lock";

/// How long a run retries a busy lock before giving up: long enough for a
/// `sluice stop` that probes the lock at that moment to let go of it.
const ACQUIRE_PATIENCE: Duration = Duration::from_millis(500);

/// How long a probe waits for a run that holds the lock to write who it is.
const PROBE_PATIENCE: Duration = Duration::from_secs(2);

/// Who holds a state directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInfo {
    /// Process id of the `sluice run`.
    pub pid: u32,
    /// Unique id of the run: requests from the CLI name it.
    pub run: String,
    /// When it started, ms since the Unix epoch.
    pub started_ms: i64,
}

/// The directories a run of `pipeline` locks: its state directory, and the
/// checkpoint store if it is not inside that.
pub fn lock_dirs(pipeline: &Pipeline, state_dir: &Path) -> Vec<PathBuf> {
    let own = state_dir.join(&pipeline.name);
    let store = crate::checkpoint::Store::of(pipeline, state_dir).root;
    let mut dirs = vec![own.clone()];
    if !store.starts_with(&own) {
        dirs.push(store);
    }
    dirs
}

/// The held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct RunLock {
    _files: Vec<File>,
    /// This run.
    pub info: RunInfo,
}

fn read_info(file: &mut File) -> Option<RunInfo> {
    use std::io::Seek as _;
    let mut text = String::new();
    file.seek(std::io::SeekFrom::Start(0)).ok()?;
    file.take(4096).read_to_string(&mut text).ok()?;
    serde_json::from_str(text.trim()).ok()
}

fn in_use(dir: &Path, holder: Option<&RunInfo>) -> RunLockError {
    match holder {
        Some(h) => RunLockError::InUseBy {
            dir: dir.to_path_buf(),
            pid: h.pid,
        },
        None => RunLockError::InUse {
            dir: dir.to_path_buf(),
        },
    }
}

impl RunLock {
    /// Lock every directory of `dirs` (created if missing) for this
    /// process, or fail with an error that names the directory and the pid
    /// of the run that holds it.
    pub fn acquire(dirs: &[PathBuf]) -> Result<RunLock, RunLockError> {
        let started_ms = sluice_runtime::now_ms();
        let info = RunInfo {
            pid: std::process::id(),
            run: format!("{}-{started_ms}", std::process::id()),
            started_ms,
        };
        let mut files = Vec::with_capacity(dirs.len());
        for dir in dirs {
            std::fs::create_dir_all(dir).map_err(|source| RunLockError::CreateDir {
                dir: dir.clone(),
                source,
            })?;
            let path = dir.join(LOCK_FILE);
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|source| RunLockError::File {
                    action: "opening",
                    path: path.clone(),
                    source,
                })?;
            let deadline = Instant::now() + ACQUIRE_PATIENCE;
            loop {
                match file.try_lock() {
                    Ok(()) => break,
                    Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Err(TryLockError::WouldBlock) => {
                        return Err(in_use(dir, read_info(&mut file).as_ref()));
                    }
                    Err(TryLockError::Error(source)) => {
                        return Err(RunLockError::File {
                            action: "locking",
                            path,
                            source,
                        });
                    }
                }
            }
            let text = serde_json::to_string(&info).expect("run info serializes");
            // Nothing has moved the file position from 0 since the open.
            file.set_len(0)
                .and_then(|_| file.write_all(text.as_bytes()))
                .map_err(|source| RunLockError::File {
                    action: "writing",
                    path: path.clone(),
                    source,
                })?;
            files.push(file);
        }
        Ok(RunLock {
            _files: files,
            info,
        })
    }
}

/// What a [`probe`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// No run holds the directory.
    Free,
    /// A run holds it.
    Running(RunInfo),
}

/// Whether a run holds `dir` (a directory [`lock_dirs`] names), without
/// creating anything: a directory that was never run is free.
pub fn probe(dir: &Path) -> Result<Probe, RunLockError> {
    let path = dir.join(LOCK_FILE);
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Probe::Free),
        Err(source) => {
            return Err(RunLockError::File {
                action: "opening",
                path,
                source,
            })
        }
    };
    match file.try_lock_shared() {
        // Let go at once: a run starting now retries for a moment.
        Ok(()) => Ok(Probe::Free),
        Err(TryLockError::WouldBlock) => {
            // A run that has just taken the lock writes its info right after.
            let deadline = Instant::now() + PROBE_PATIENCE;
            loop {
                if let Some(info) = read_info(&mut file) {
                    return Ok(Probe::Running(info));
                }
                if Instant::now() >= deadline {
                    return Err(RunLockError::Anonymous { path });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Err(TryLockError::Error(source)) => Err(RunLockError::File {
            action: "locking",
            path,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_fails_with_the_pid_and_a_probe_sees_the_holder() {
        let dir = std::env::temp_dir().join(format!("sluice-run-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(probe(&dir).unwrap(), Probe::Free);
        assert!(!dir.exists(), "a probe creates nothing");
        let lock = RunLock::acquire(std::slice::from_ref(&dir)).unwrap();
        let started = Instant::now();
        let err = RunLock::acquire(std::slice::from_ref(&dir))
            .unwrap_err()
            .to_string();
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(
            err.contains(&format!(
                "is in use by sluice run pid {}",
                std::process::id()
            )) && err.contains(&dir.display().to_string()),
            "{err}"
        );
        assert_eq!(probe(&dir).unwrap(), Probe::Running(lock.info.clone()));
        drop(lock);
        assert_eq!(probe(&dir).unwrap(), Probe::Free);
        let again = RunLock::acquire(std::slice::from_ref(&dir)).unwrap();
        assert_ne!(again.info.run, "");
        drop(again);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

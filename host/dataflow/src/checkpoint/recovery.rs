//! Recovery: which checkpoint a run restores, whether the pipeline can
//! continue from it, and rebuilding the state database from it.

use std::path::{Path, PathBuf};

use sluice_config::Pipeline;
use sluice_state::checkpoint::restore_snapshot;

use super::manifest::{window_kind, Manifest};
use super::store::{state_dirs, verify, Store};
use crate::error::DataflowError;

/// The checkpoint a run restores, and how.
#[derive(Debug)]
pub struct Restore {
    /// Its directory.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

/// Find the checkpoint to restore: `from` if given, else the newest
/// complete, intact checkpoint of the store (falling back past corrupt
/// ones, saying so). `None` for a fresh start.
pub fn find_restore(
    store: &Store,
    from: Option<&Path>,
    limit: Option<(u64, &str)>,
) -> Result<Option<Restore>, DataflowError> {
    if let Some(dir) = from {
        let manifest = verify(dir).map_err(|e| {
            DataflowError::Checkpoint(format!("cannot restore from {}: {e}", dir.display()))
        })?;
        if let Some((point, sink)) = limit.filter(|(p, _)| manifest.id > *p) {
            tracing::warn!("restoring checkpoint {} as asked, but sink `{sink}` committed only up to checkpoint {point}: the output of the checkpoints in between is lost", manifest.id);
        }
        return Ok(Some(Restore {
            dir: dir.to_path_buf(),
            manifest,
        }));
    }
    for l in store.list() {
        if let Some((point, sink)) = limit.filter(|(p, _)| l.id > *p) {
            // Complete, but a sink lost its transaction in the crash: start
            // before it, so that its records are produced again.
            tracing::info!("checkpoint {} is complete but sink `{sink}` committed only up to checkpoint {point}; restoring an earlier one", l.id);
            continue;
        }
        match verify(&l.dir) {
            Ok(manifest) if manifest.finished => {
                tracing::info!("the last run finished (checkpoint {} holds the end of its input): starting from the beginning", manifest.id);
                return Ok(None);
            }
            Ok(manifest) => {
                if let Some((point, sink)) = limit.filter(|(p, _)| manifest.id < *p) {
                    tracing::warn!("sink `{sink}` committed checkpoint {point}, which is gone; restoring checkpoint {}: its output after that checkpoint is written again", manifest.id);
                }
                return Ok(Some(Restore {
                    dir: l.dir,
                    manifest,
                }));
            }
            Err(e) => tracing::warn!(
                "checkpoint {} is unusable: {e}; falling back to the previous checkpoint",
                l.id
            ),
        }
    }
    Ok(None)
}

/// Check that `pipeline` can continue from `manifest`; `allow_drop` lets it
/// drop the state of operators it no longer has.
pub fn check_compatible(
    pipeline: &Pipeline,
    manifest: &Manifest,
    allow_drop: bool,
) -> Result<(), DataflowError> {
    for old in manifest.operators.iter().filter(|o| o.keyed) {
        let problem = match pipeline.operator(&old.name) {
            None => Some(format!("operator `{}` has keyed state in checkpoint {} but is not in the pipeline any more", old.name, manifest.id)),
            Some(op) if op.key_by.is_none() => Some(format!("operator `{}` has keyed state in checkpoint {} but is no longer keyed", old.name, manifest.id)),
            Some(op) => {
                let now = op.window.as_ref().map(|w| window_kind(&w.kind));
                (now != old.window).then(|| {
                    format!(
                        "operator `{}` ran windows `{}` in checkpoint {} and now `{}`: its window state is incompatible",
                        old.name,
                        old.window.as_deref().unwrap_or("none"),
                        manifest.id,
                        now.as_deref().unwrap_or("none")
                    )
                })
            }
        };
        if let Some(p) = problem {
            if allow_drop {
                tracing::warn!("{p}; dropping that state (--allow-dropped-state)");
            } else {
                return Err(DataflowError::Checkpoint(format!(
                    "{p}\n  help: restore the operator, or run with --allow-dropped-state to drop its state, or start over with a new state dir"
                )));
            }
        }
    }
    Ok(())
}

/// Rebuild the state database of a run from `restore`.
pub fn restore_state(restore: &Restore, db: &Path) -> Result<(), DataflowError> {
    if let Some(state) = &restore.manifest.state {
        let (own, shared) = state_dirs(&restore.dir);
        restore_snapshot(&state.files, &own, &shared, db).map_err(|e| {
            DataflowError::Checkpoint(format!("restoring checkpoint {}: {e}", restore.manifest.id))
        })?;
    }
    Ok(())
}

//! What a run continues from: the checkpoint to restore (bounded by what
//! the sinks committed) and the plugins deployed at that checkpoint.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use sluice_config::Pipeline;
use sluice_runtime::{LoadError, Plugin};
use sluice_types::Sink;

use crate::checkpoint::{self, Restore, Store};
use crate::control::ControlDir;
use crate::error::DataflowError;
use crate::plugins::load_operator;
use crate::settings::Settings;

/// The checkpoint this run restores, if any. Sinks that cannot finish a
/// pre-commit after a crash (Kafka) say which checkpoint recovery must
/// start from, so they are asked first.
pub(crate) fn choose(
    pipeline: &Pipeline,
    plugins: &HashMap<String, Arc<Plugin>>,
    settings: &Settings,
    store: &Store,
    sinks: &mut HashMap<String, Box<dyn Sink>>,
) -> Result<Option<Restore>, DataflowError> {
    let recovery_limit = recovery_limit(sinks)?;
    let restore = if pipeline.checkpoints.enabled || settings.restore_from.is_some() {
        checkpoint::find_restore(
            store,
            settings.restore_from.as_deref(),
            recovery_limit.as_ref().map(|(p, s)| (*p, s.as_str())),
        )?
    } else {
        None
    };
    if let Some(r) = &restore {
        checkpoint::check_compatible(pipeline, &r.manifest, settings.allow_dropped_state)?;
        if r.manifest.pipeline_hash != pipeline.hash {
            tracing::info!(
                "the pipeline file changed since checkpoint {}; continuing from its state",
                r.manifest.id
            );
        }
        for old in &r.manifest.operators {
            if let Some(p) = plugins.get(&old.name) {
                if p.info().digest != old.plugin_digest && !old.plugin_digest.is_empty() {
                    tracing::info!("operator `{}` now runs plugin sha256:{} (checkpoint {} ran sha256:{}); its state is kept", old.name, &p.info().digest[..12], r.manifest.id, &old.plugin_digest[..12.min(old.plugin_digest.len())]);
                }
            }
        }
        tracing::info!(
            "restoring checkpoint {} from {}",
            r.manifest.id,
            r.dir.display()
        );
    }
    Ok(restore)
}

/// The oldest checkpoint a sink committed up to, and which sink, if any
/// sink bounds recovery.
fn recovery_limit(
    sinks: &mut HashMap<String, Box<dyn Sink>>,
) -> Result<Option<(u64, String)>, DataflowError> {
    // Concurrently: each may take a few round trips to a broker.
    let points = std::thread::scope(|scope| {
        let calls: Vec<_> = sinks
            .iter_mut()
            .map(|(name, sink)| (name.clone(), scope.spawn(move || sink.recovery_point())))
            .collect();
        calls
            .into_iter()
            .map(|(name, call)| (name, call.join()))
            .collect::<Vec<_>>()
    });
    let mut recovery_limit: Option<(u64, String)> = None;
    for (name, point) in points {
        let point = match point {
            Ok(p) => p.map_err(|source| DataflowError::Connector {
                node: name.clone(),
                source,
            })?,
            Err(_) => {
                return Err(DataflowError::Internal {
                    node: name,
                    message: "panicked while preparing recovery".into(),
                })
            }
        };
        if let Some(point) = point {
            if recovery_limit.as_ref().is_none_or(|(p, _)| point < *p) {
                recovery_limit = Some((point, name));
            }
        }
    }
    Ok(recovery_limit)
}

/// Plugins deployed by control commands that the restored checkpoint ran.
#[derive(Default)]
pub(crate) struct Deployed {
    /// The loaded plugins, by operator.
    pub(crate) plugins: HashMap<String, Arc<Plugin>>,
    /// Their digests, by operator.
    pub(crate) digests: HashMap<String, String>,
    /// The params deployed with them, by operator.
    pub(crate) params: HashMap<String, String>,
}

/// Why a plugin deployed at the restored checkpoint cannot run again.
#[derive(Debug, thiserror::Error)]
enum Unloadable {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("no plugin runtime in this run")]
    NoRuntime,
    #[error("{} is missing from the plugin store", .0.display())]
    Missing(PathBuf),
}

/// Operators that ran a deployed plugin at the checkpoint run it again.
pub(crate) fn deployed(
    pipeline: &Pipeline,
    settings: &Settings,
    control: &ControlDir,
    restore: Option<&Restore>,
) -> Result<Deployed, DataflowError> {
    let mut deployed = Deployed::default();
    let Some(r) = restore else {
        return Ok(deployed);
    };
    for old in r.manifest.operators.iter() {
        let (Some(digest), Some(op)) = (&old.deployed, pipeline.operator(&old.name)) else {
            continue;
        };
        let path = control.plugin(digest);
        let loaded = match (&settings.runtime, path.is_file()) {
            (Some(rt), true) => {
                let mut spec = op.clone();
                spec.plugin = path.clone();
                load_operator(&rt.0, &spec).map_err(Unloadable::Load)
            }
            (None, _) => Err(Unloadable::NoRuntime),
            (_, false) => Err(Unloadable::Missing(path)),
        };
        match loaded {
            Ok(p) => {
                tracing::info!("operator `{}` runs the deployed plugin sha256:{} (as at checkpoint {})", old.name, &digest[..12.min(digest.len())], r.manifest.id);
                if let Some(params) = &old.deployed_params {
                    deployed.params.insert(old.name.clone(), params.clone());
                }
                deployed.plugins.insert(old.name.clone(), p);
                deployed.digests.insert(old.name.clone(), digest.clone());
            }
            Err(e) => return Err(DataflowError::Checkpoint(format!("operator `{}` ran deployed plugin sha256:{digest} at checkpoint {}, which cannot be loaded: {e}\n  help: put the component back into the plugin store, or restore another checkpoint", old.name, r.manifest.id))),
        }
    }
    Ok(deployed)
}

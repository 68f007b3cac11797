//! Control commands and their outcomes, as JSON on the wire and on disk.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What a command asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Run a new plugin version.
    Deploy,
    /// Go back to the previous version (not in this version).
    Rollback,
    /// Hold the operator's input (not in this version).
    Pause,
    /// Release it (not in this version).
    Resume,
}

/// A control command.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    /// Unique id: a command is applied once, however often it is sent.
    pub id: String,
    /// The pipeline's name.
    pub pipeline: String,
    /// The operator to change.
    pub operator: String,
    /// What to do.
    pub action: Action,
    /// The component: a path, or an `http://` URL (for `deploy`).
    #[serde(default)]
    pub plugin: Option<PathBuf>,
    /// Its sha256, hex (for `deploy`).
    #[serde(default)]
    pub sha256: Option<String>,
    /// New params for the operator (a JSON object); without them it keeps
    /// the ones it runs with.
    #[serde(default)]
    pub params: Option<serde_json::Value>,
    /// Why it was sent, when Sluice sends it itself (automatic rollback).
    #[serde(default)]
    pub reason: Option<String>,
}

/// Where a command stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Checked and planned; waiting for its checkpoint.
    Accepted,
    /// In effect from a checkpoint on.
    Applied,
    /// Refused; nothing changed.
    Rejected,
}

/// The result of a command, written to `control/results/<id>.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Outcome {
    /// The command's id.
    pub id: String,
    /// Where it stands.
    pub status: Status,
    /// The operator.
    pub operator: String,
    /// The plugin digest it deploys.
    #[serde(default)]
    pub digest: Option<String>,
    /// The checkpoint at whose barrier it takes (or took) effect.
    #[serde(default)]
    pub checkpoint: Option<u64>,
    /// Why it was rejected.
    #[serde(default)]
    pub reason: Option<String>,
    /// Applied: where each source stood at that checkpoint (every record
    /// before it went to the old version, every record after to the new).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub after: BTreeMap<String, SourceAt>,
}

/// Where a source stood at a checkpoint, in an [`Outcome`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceAt {
    /// Records it had emitted.
    pub records: u64,
    /// Next offset per split (Kafka partition), for sources that have them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub splits: BTreeMap<u32, u64>,
}

impl std::fmt::Display for SourceAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.splits.is_empty() {
            return write!(f, "{} records", self.records);
        }
        let splits: Vec<String> = self
            .splits
            .iter()
            .map(|(s, o)| format!("{s}@{o}"))
            .collect();
        write!(
            f,
            "{} records (next offsets {})",
            self.records,
            splits.join(", ")
        )
    }
}

impl Outcome {
    /// An outcome of `command`, with nothing more said yet.
    pub fn of(command: &Command, status: Status) -> Outcome {
        Outcome {
            id: command.id.clone(),
            status,
            operator: command.operator.clone(),
            digest: None,
            checkpoint: None,
            reason: None,
            after: BTreeMap::new(),
        }
    }

    /// Whether nothing more will happen to the command.
    pub fn is_final(&self) -> bool {
        self.status != Status::Accepted
    }
}

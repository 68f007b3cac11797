//! Why a run stops: the error [`crate::run`] returns.

use sluice_world::CallError;

/// Why a pipeline stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DataflowError {
    /// A record failed in an operator whose policy is `fail`.
    #[error("operator `{operator}` (plugin {plugin}) failed on the record at {position}: {message}\n  help: fix the input or the plugin, or set on_error = \"skip\" or \"dead-letter\" on `{operator}` to keep going")]
    RecordFailed {
        /// Operator name.
        operator: String,
        /// Plugin file and digest.
        plugin: String,
        /// Where the record came from.
        position: String,
        /// The error.
        message: String,
    },
    /// A plugin could not be instantiated or initialised.
    #[error("operator `{operator}` (plugin {plugin}): {source}")]
    Instantiate {
        /// Operator name.
        operator: String,
        /// Plugin file.
        plugin: String,
        /// The failure.
        #[source]
        source: CallError,
    },
    /// A source or sink failed.
    #[error("`{node}`: {source}")]
    Connector {
        /// Node name.
        node: String,
        /// The failure.
        #[source]
        source: sluice_types::ConnectorError,
    },
    /// Keyed state failed.
    #[error("operator `{node}`: state: {source}")]
    State {
        /// Node name.
        node: String,
        /// The failure.
        #[source]
        source: sluice_state::StateError,
    },
    /// A neighbour stopped (because of an error reported separately, or a bug).
    #[error("`{node}`: `{peer}` stopped unexpectedly")]
    Disconnected {
        /// This node.
        node: String,
        /// The neighbour.
        peer: String,
    },
    /// A plugin named in the pipeline was not loaded.
    #[error("operator `{0}`: its plugin was not loaded")]
    MissingPlugin(String),
    /// A checkpoint could not be taken or restored.
    #[error("checkpoints: {0}")]
    Checkpoint(String),
    /// The state directory is in use by another run, or cannot be locked.
    #[error("{0}")]
    StateDir(String),
    /// A node task panicked (a bug in Sluice).
    #[error("internal error in `{node}`: {message}")]
    Internal {
        /// Node name.
        node: String,
        /// Panic message.
        message: String,
    },
}

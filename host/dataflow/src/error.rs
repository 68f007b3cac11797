//! Why a run stops: the error `run` returns, and the errors of the
//! concerns it wraps (the run lock, the control directory, the admin
//! endpoint and its token, the checkpoint store). They live here, not
//! beside their code, so that this module imports none of the modules that
//! return a `DataflowError`.

use std::net::SocketAddr;
use std::path::PathBuf;

use sluice_runtime::CallError;

use crate::private::ReadError;

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
    /// The control directory could not be made owner-only.
    #[error("checkpoints: {0}")]
    ControlDir(#[from] ControlDirError),
    /// The admin endpoint has no usable token.
    #[error("checkpoints: {0}")]
    AdminToken(#[from] TokenError),
    /// The admin endpoint could not start.
    #[error("checkpoints: {0}")]
    Admin(#[from] AdminError),
    /// A checkpoint could not be written to the store.
    #[error("checkpoints: {0}")]
    Store(#[from] StoreError),
    /// A checkpoint could not be taken or restored.
    #[error("checkpoints: {0}")]
    Checkpoint(String),
    /// The state directory is in use by another run, or cannot be locked.
    #[error("{0}")]
    StateDir(RunLockError),
    /// A node task panicked (a bug in Sluice).
    #[error("internal error in `{node}`: {message}")]
    Internal {
        /// Node name.
        node: String,
        /// Panic message.
        message: String,
    },
}

/// Why a state directory could not be locked or probed.
#[derive(Debug, thiserror::Error)]
pub enum RunLockError {
    /// A run with this pid holds it.
    #[error("state directory {} is in use by sluice run pid {pid}; stop it first (`sluice stop` with the same --state-dir), or use another --state-dir", .dir.display())]
    InUseBy {
        /// The directory.
        dir: PathBuf,
        /// The holder's process id.
        pid: u32,
    },
    /// A run that does not say which holds it.
    #[error("state directory {} is in use by another sluice run; stop it first (`sluice stop` with the same --state-dir), or use another --state-dir", .dir.display())]
    InUse {
        /// The directory.
        dir: PathBuf,
    },
    /// A run holds the lock but has not written who it is.
    #[error("a sluice run holds {} but does not say which (an older sluice?); stop it with Ctrl-C", .path.display())]
    Anonymous {
        /// The lock file.
        path: PathBuf,
    },
    /// The state directory could not be created.
    #[error("creating state directory {}: {source}", .dir.display())]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The lock file could not be opened, locked or written.
    #[error("{action} {}: {source}", .path.display())]
    File {
        /// `opening`, `locking` or `writing`.
        action: &'static str,
        /// The lock file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
}

/// Why the control directory or the plugin store could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ControlDirError {
    /// A directory could not be created owner-only.
    #[error("control directory {}: {source}", .dir.display())]
    Secure {
        /// The directory.
        dir: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// A command could not be encoded.
    #[error("{0}")]
    Encode(serde_json::Error),
    /// A command file could not be written.
    #[error("writing {}: {source}", .path.display())]
    Write {
        /// The command file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// A component could not be kept in the plugin store.
    #[error("plugin store {}: {source}", .path.display())]
    Store {
        /// The stored component.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
}

/// Why the admin endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// It was asked to listen beyond loopback.
    #[error("[control] http {addr}: the admin endpoint binds loopback only (it has no TLS)")]
    NotLoopback {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// Binding or starting its threads failed.
    #[error("[control] http {addr}: {source}")]
    Io {
        /// The address.
        addr: SocketAddr,
        /// The failure.
        source: std::io::Error,
    },
}

/// Why there is no usable admin token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token is too short or not printable.
    #[error(
        "the admin token from {from} must be at least {min} printable characters without spaces"
    )]
    Weak {
        /// Where it came from: the variable or the file.
        from: String,
        /// The shortest token accepted.
        min: usize,
    },
    /// The token file could not be read.
    #[error("reading the admin token {}: {source}", .path.display())]
    Read {
        /// The token file.
        path: PathBuf,
        /// The failure.
        source: ReadError,
    },
    /// The token file is not UTF-8.
    #[error("the admin token {} is not text", .path.display())]
    NotText {
        /// The token file.
        path: PathBuf,
    },
    /// No random bytes for a new token.
    #[error("generating the admin token from /dev/urandom: {0}")]
    Generate(std::io::Error),
    /// The generated token could not be written.
    #[error("writing the admin token {}: {source}", .path.display())]
    Write {
        /// The token file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The CLI found no token where the run keeps it.
    #[error("{source}\n  help: run as the user that runs `sluice run` (with the same --state-dir), or set {env}")]
    Client {
        /// Why the token could not be read.
        source: Box<TokenError>,
        /// The environment variable that gives the token.
        env: &'static str,
    },
}

/// Why a checkpoint or savepoint could not be written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file or directory operation failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The manifest could not be encoded.
    #[error("{0}")]
    Encode(serde_json::Error),
}

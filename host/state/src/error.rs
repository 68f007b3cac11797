//! [`StateError`]: what can go wrong with keyed state, its database and its
//! snapshots.

use std::path::PathBuf;

use crate::id::StateKind;

/// State errors.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file of the state or of a checkpoint could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// RocksDB failed.
    #[error("state store {path}: {source}")]
    Db {
        /// The database directory.
        path: PathBuf,
        /// The RocksDB error.
        #[source]
        source: rocksdb::Error,
    },
    /// A state name was declared with two different kinds.
    #[error("state `{name}` of operator `{operator}` was declared as {existing} state and is now used as {requested} state")]
    KindMismatch {
        /// Operator name.
        operator: String,
        /// State name.
        name: String,
        /// Kind it was first declared with.
        existing: StateKind,
        /// Kind it is used as now.
        requested: StateKind,
    },
    /// A state name was declared with a TTL and is now declared without one,
    /// or the reverse. Whether a state has a TTL changes how its values are
    /// stored, so it cannot change once the state has been declared.
    #[error(
        "state `{name}` of operator `{operator}` was declared {} a TTL and is now declared {} one; \
         give the state a new name, or drop the operator's existing state",
        with_or_without(.existing_ttl),
        with_or_without(&!.existing_ttl)
    )]
    TtlMismatch {
        /// Operator name.
        operator: String,
        /// State name.
        name: String,
        /// Whether the state was first declared with a TTL.
        existing_ttl: bool,
    },
    /// Too many operators or states.
    #[error("too many {0}")]
    TooMany(&'static str),
    /// A checkpoint manifest names a file that a restore must not touch
    /// (see [`restore_paths`](crate::restore_paths)).
    #[error("{0}")]
    Untrusted(String),
}

fn with_or_without(ttl: &bool) -> &'static str {
    if *ttl {
        "with"
    } else {
        "without"
    }
}

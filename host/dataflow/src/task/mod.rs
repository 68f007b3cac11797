//! The tasks that run a pipeline's nodes, one blocking task per subtask
//! (Wasm and RocksDB calls block, so they stay off the async workers):
//! [`source`] reads and injects barriers, [`operator`] calls the plugin,
//! [`sink`] writes and commits.

pub(crate) mod operator;
pub(crate) mod sink;
pub(crate) mod source;

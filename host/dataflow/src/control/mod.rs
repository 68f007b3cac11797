//! Hot swap of operator plugins through a control source.
//!
//! A command (JSON, see [`Command`]) names an operator and a plugin with its
//! sha256. The checkpoint coordinator takes it off the hot path: it checks
//! the digest, keeps the bytes in the plugin store (by digest), compiles the
//! component and checks its kind against the operator. Then it plans the swap
//! at the next checkpoint barrier and triggers that checkpoint. Each subtask
//! of the operator switches instances right after it has aligned that
//! barrier: every record before the barrier is processed by the old version,
//! every record after it by the new one, in every subtask. Keyed state stays
//! in RocksDB and the new instance continues from it. The checkpoint's
//! manifest records the new digest, so recovery runs the same code.
//!
//! The control source of this version is a directory: `<checkpoint
//! store>/control/*.json`, with the outcome of each command in
//! `control/results/<id>.json` (`accepted`, then `applied` at a checkpoint,
//! or `rejected` with the reason). Commands are idempotent by id. Deployed
//! components are kept in `control/plugins/<sha256>.wasm`, each operator's
//! versions in `control/history/versions.json` (what `rollback` returns to).
//! All of it is owner-only (`0700` directories, `0600` files): whoever can
//! write it can run code in the pipeline (see `docs/security.md`).
//!
//! A deployed plugin is on probation for its first records
//! (`[control] probation_records`); if more than `max_error_rate` of them
//! fail, Sluice rolls it back by itself, through the same directory.
//!
//! Layout: [`Command`] and [`Outcome`] (the wire format), [`ControlDir`]
//! (the directory, the plugin store, the history), `swap` (the controller
//! the checkpoint coordinator drives), `plan` (what the subtasks apply),
//! `deploy` and `fetch` (preparing a deployed plugin beside the pipeline),
//! `admin` (the HTTP front door to the directory).

mod admin;
mod command;
mod deploy;
mod dir;
mod fetch;
mod plan;
mod swap;
pub mod token;

pub use crate::error::{AdminError, ControlDirError};
pub(crate) use admin::AdminServer;
pub use command::{Action, Command, Outcome, SourceAt, Status};
pub use dir::{sha256_hex, ControlDir, DirectorySource, History, Version};
pub(crate) use plan::{Plan, Swaps};
pub(crate) use swap::{Completed, Running, SwapController};

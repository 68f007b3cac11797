//! Why a plugin was refused ([`LoadError`]) and why a guest call failed
//! ([`CallError`]). Every message names the plugin or the limit and what to
//! do about it.

use std::path::PathBuf;

use crate::bindings::{AGGREGATOR_EXPORT, PACKAGE, PROCESSOR_EXPORT, VERSION};

/// Why a plugin was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("plugin {path}: cannot read it: {source}")]
    Read {
        /// The plugin file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Not WebAssembly at all.
    #[error("plugin {path}: not a WebAssembly file (it does not start with the `\\0asm` magic)\n  help: build it with `cargo build --target wasm32-wasip2` or your language's component toolchain")]
    NotWasm {
        /// The plugin file.
        path: PathBuf,
    },
    /// A core module, not a component.
    #[error("plugin {path}: this is a core WebAssembly module, not a component\n  help: Sluice loads components; build for wasm32-wasip2 or run `wasm-tools component new`")]
    CoreModule {
        /// The plugin file.
        path: PathBuf,
    },
    /// wasmtime refused to compile it.
    #[error("plugin {path}: invalid component: {message}")]
    Invalid {
        /// The plugin file.
        path: PathBuf,
        /// wasmtime's reason.
        message: String,
    },
    /// It does not export a Sluice operator.
    #[error("plugin {path}: not a sluice:operator component: it exports neither `{PROCESSOR_EXPORT}` nor `{AGGREGATOR_EXPORT}`\n  it exports: {exports}\n  help: target a world of wit/operator.wit (`process-operator`, `keyed-process-operator` or `window-aggregate`), e.g. with the Rust SDK's #[sluice_sdk::map]")]
    NotAnOperator {
        /// The plugin file.
        path: PathBuf,
        /// What it exports instead.
        exports: String,
    },
    /// It targets another contract version.
    #[error("plugin {path}: built for {found}, but this host runs {PACKAGE}@{VERSION}\n  help: rebuild the plugin against wit/ of this Sluice, or run a Sluice that supports {found}")]
    WrongVersion {
        /// The plugin file.
        path: PathBuf,
        /// The versioned interface it has.
        found: String,
    },
    /// It imports a capability the operator was not granted.
    #[error(
        "plugin {path}: imports `{import}`, which this operator is not granted\n  help: {grant}"
    )]
    NotGranted {
        /// The plugin file.
        path: PathBuf,
        /// The import.
        import: String,
        /// The grant that would allow it, or why none does.
        grant: String,
    },
    /// Its kind does not fit how the pipeline uses it.
    #[error("plugin {path}: operator `{operator}` {expected}, but the plugin is a `{found}` component\n  help: {help}")]
    WrongKind {
        /// The plugin file.
        path: PathBuf,
        /// The operator.
        operator: String,
        /// What the pipeline asks of it.
        expected: String,
        /// The world the plugin targets.
        found: String,
        /// What to do.
        help: String,
    },
    /// It registers timers but cannot receive them.
    #[error("plugin {path}: imports `sluice:operator/timers` but does not export `timer-handler`, so its timers could never fire\n  help: target the `keyed-process-operator` world (Rust SDK: #[sluice_sdk::process(on_timer = my_on_timer)])")]
    TimersWithoutHandler {
        /// The plugin file.
        path: PathBuf,
    },
    /// It imports something the host does not provide.
    #[error("plugin {path}: imports `{import}`, which this host does not provide\n  help: plugins may import the interfaces of {PACKAGE}@{VERSION} and WASI 0.2; remove the dependency that pulls `{import}` in")]
    UnknownImport {
        /// The plugin file.
        path: PathBuf,
        /// The import.
        import: String,
    },
}

/// A guest call that failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// A state migration refused a key (`migrator.migrate` returned an error).
    #[error("state migration failed for key {key}: {message}")]
    Migration {
        /// The key, printable.
        key: String,
        /// The plugin's message.
        message: String,
    },
    /// The call ran past its CPU deadline and was interrupted.
    #[error("exceeded its CPU deadline of {deadline_ms} ms and was interrupted")]
    Deadline {
        /// The deadline.
        deadline_ms: u64,
    },
    /// The call used up its fuel.
    #[error("ran out of fuel ({fuel} units per call) and was stopped")]
    Fuel {
        /// The fuel per call.
        fuel: u64,
    },
    /// The guest tried to grow its memory past the cap.
    #[error("tried to grow its linear memory past the cap of {limit_mb} MiB and was stopped")]
    Memory {
        /// The cap.
        limit_mb: usize,
    },
    /// The guest trapped (panic, unreachable, stack overflow, a host-detected
    /// misuse).
    #[error("trapped: {0}")]
    Trap(String),
    /// `init` returned an error.
    #[error("init failed: {0}")]
    Init(String),
}

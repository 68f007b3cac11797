//! [`Runtime`]: the process-wide wasmtime engines (one per [`EngineOptions`]
//! in use), each with a linker of the host imports, and the on-disk cache of
//! compiled components. Loading a plugin with it is in `plugin.rs`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

use crate::bindings::SluiceHost;
use crate::error::LoadError;
use crate::sandbox;
use crate::store::StoreData;

/// How an engine runs guests. Operators with different options get
/// different engines (and compiled code); most share the default one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EngineOptions {
    /// Wasm stack per call, in bytes.
    pub stack_bytes: usize,
    /// Meter fuel: a deterministic instruction budget per call.
    pub fuel: bool,
    /// Interrupt calls that pass their deadline. Always on in pipelines; off
    /// only to measure what it costs.
    pub epoch: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            stack_bytes: 512 << 10,
            fuel: false,
            epoch: true,
        }
    }
}

/// An engine and the linker of the host imports for it.
pub(crate) struct EngineEntry {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<StoreData>,
}

/// The process-wide wasmtime runtime: engines (one per [`EngineOptions`] in
/// use), their linkers, the compile cache, and the epoch ticker.
pub struct Runtime {
    engines: Mutex<HashMap<EngineOptions, Arc<EngineEntry>>>,
    /// Engines the epoch thread advances. The thread runs while the runtime
    /// or any engine (held by a loaded plugin) is alive.
    ticked: Arc<Mutex<Vec<wasmtime::EngineWeak>>>,
    cache_dir: Option<PathBuf>,
}

fn wasm_err(e: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{e:#}")
}

impl Runtime {
    /// A runtime that caches compiled components in `cache_dir` (by digest),
    /// or compiles every time with `None`.
    pub fn new(cache_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        let ticked: Arc<Mutex<Vec<wasmtime::EngineWeak>>> = Arc::default();
        sandbox::start_epoch_ticker(&ticked)?;
        let runtime = Runtime {
            engines: Mutex::default(),
            ticked,
            cache_dir,
        };
        runtime.engine(EngineOptions::default())?;
        Ok(runtime)
    }

    /// The engine and linker for `options`, made on first use (and then
    /// ticked by the epoch thread).
    pub(crate) fn engine(&self, options: EngineOptions) -> anyhow::Result<Arc<EngineEntry>> {
        let mut engines = self.engines.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = engines.get(&options) {
            return Ok(e.clone());
        }
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(options.epoch);
        config.consume_fuel(options.fuel);
        config.max_wasm_stack(options.stack_bytes);
        // wasmtime requires the async stack to be larger; guests run synchronously.
        config.async_stack_size(options.stack_bytes + (1 << 20));
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        config.parallel_compilation(true);
        let engine = Engine::new(&config).map_err(wasm_err)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(wasm_err)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker).map_err(wasm_err)?;
        SluiceHost::add_to_linker::<StoreData, HasSelf<StoreData>>(&mut linker, |s| s)
            .map_err(wasm_err)?;
        self.ticked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(engine.weak());
        let entry = Arc::new(EngineEntry { engine, linker });
        engines.insert(options, entry.clone());
        Ok(entry)
    }

    /// The default wasmtime engine.
    pub fn engine_default(&self) -> Engine {
        self.engine(EngineOptions::default())
            .expect("the default engine is created by Runtime::new")
            .engine
            .clone()
    }

    /// Compile a component for `engine`, through the on-disk cache (by
    /// digest and engine compatibility hash) when the runtime has one.
    pub(crate) fn compile(
        &self,
        engine: &Engine,
        path: &Path,
        bytes: &[u8],
        digest: &str,
    ) -> Result<Component, LoadError> {
        let invalid = |e: wasmtime::Error| LoadError::Invalid {
            path: path.to_path_buf(),
            message: format!("{e:#}"),
        };
        let cached = self.cache_dir.as_ref().map(|dir| {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut h);
            dir.join(format!("{digest}-{:016x}.cwasm", h.finish()))
        });
        if let Some(file) = &cached {
            if file.is_file() {
                // SAFETY: the file was written by `Component::serialize` of an
                // engine with the same compatibility hash (it is in the name),
                // into a cache directory that only Sluice writes.
                match unsafe { Component::deserialize_file(engine, file) } {
                    Ok(c) => return Ok(c),
                    Err(e) => tracing::warn!(
                        "ignoring unreadable compile cache entry {}: {e}",
                        file.display()
                    ),
                }
            }
        }
        let component = Component::new(engine, bytes).map_err(invalid)?;
        if let Some(file) = &cached {
            let write = || -> std::io::Result<()> {
                std::fs::create_dir_all(file.parent().unwrap_or(Path::new(".")))?;
                let data = component
                    .serialize()
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                let tmp = file.with_extension(format!("tmp{}", std::process::id()));
                std::fs::write(&tmp, data)?;
                std::fs::rename(&tmp, file)
            };
            if let Err(e) = write() {
                tracing::warn!(
                    "could not cache the compiled component in {}: {e}",
                    file.display()
                );
            }
        }
        Ok(component)
    }
}

//! Loading a component as an operator: read it, check that it is a component,
//! compile it (through the runtime's cache), describe it ([`PluginInfo`]:
//! kind, contract version, imports, exports, declared side outputs), check it
//! against the contract and the operator's grants ([`check_contract`]), and
//! pre-instantiate it into a [`Plugin`]. Making instances of a plugin is in
//! `instance.rs`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use sluice_config::Grants;
use wasmtime::component::{Component, InstancePre};
use wasmtime::Engine;

use crate::bindings::exports::sluice::operator::{aggregator, migrator, processor, timer_handler};
use crate::bindings::{supported_version, Exports, PACKAGE};
use crate::engine::{EngineOptions, Runtime};
use crate::error::LoadError;
use crate::store::StoreData;

/// What `sluice plugin inspect` shows about a component.
#[derive(Clone, Debug)]
pub struct PluginInfo {
    /// The file.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// sha256 of the bytes, hex.
    pub digest: String,
    /// Contract package, e.g. `sluice:operator`.
    pub package: String,
    /// World the exports match, e.g. `process-operator`.
    pub world: String,
    /// What kind of operator the exports make it, if any.
    pub kind: Option<OperatorKind>,
    /// Contract version, e.g. `0.1.3`.
    pub version: String,
    /// Whether it exports `migrator` (worlds `migrating-*`): it can rewrite
    /// the state of the version it replaces.
    pub migrates: bool,
    /// Export names.
    pub exports: Vec<String>,
    /// Import names.
    pub imports: Vec<String>,
    /// The side outputs it declares it emits (the SDKs' `side_outputs`, a
    /// `sluice-side-outputs` custom section), if it declares them.
    pub side_outputs: Option<Vec<String>>,
}

/// The names in a component's `sluice-side-outputs` custom section (in any
/// of its core modules), if there is one.
fn declared_side_outputs(bytes: &[u8]) -> Option<Vec<String>> {
    let mut found: Option<Vec<String>> = None;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let Ok(wasmparser::Payload::CustomSection(section)) = payload else {
            continue;
        };
        if section.name() == "sluice-side-outputs" {
            let names = String::from_utf8_lossy(section.data())
                .split('\n')
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>();
            found.get_or_insert_with(Vec::new).extend(names);
        }
    }
    found
}

/// The kinds of operator a component can be, by the world it targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperatorKind {
    /// `process-operator`: exports `processor`.
    Process,
    /// `keyed-process-operator`: exports `processor` and `timer-handler`.
    KeyedProcess,
    /// `window-aggregate`: exports `aggregator`.
    Window,
}

impl OperatorKind {
    /// The world's name in `wit/operator.wit`.
    pub fn world(self) -> &'static str {
        match self {
            OperatorKind::Process => "process-operator",
            OperatorKind::KeyedProcess => "keyed-process-operator",
            OperatorKind::Window => "window-aggregate",
        }
    }
}

/// A compiled, checked, pre-instantiated operator component.
pub struct Plugin {
    pub(crate) engine: Engine,
    pub(crate) info: PluginInfo,
    pub(crate) pre: InstancePre<StoreData>,
    pub(crate) exports: Exports,
    pub(crate) grants: Grants,
    pub(crate) fuel: bool,
}

impl Plugin {
    /// What the component is.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }
}

impl Runtime {
    /// Read, check, compile and pre-instantiate the component at `path`
    /// with the default engine and no grants.
    pub fn load(&self, path: &Path) -> Result<Arc<Plugin>, LoadError> {
        self.load_with(path, EngineOptions::default(), &Grants::default())
    }

    /// Read, check, compile and pre-instantiate the component at `path`
    /// for an operator with these engine options and grants.
    pub fn load_with(
        &self,
        path: &Path,
        options: EngineOptions,
        grants: &Grants,
    ) -> Result<Arc<Plugin>, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        check_header(path, &bytes)?;
        let digest = hex::encode(Sha256::digest(&bytes));
        let entry = self.engine(options).map_err(|e| LoadError::Invalid {
            path: path.to_path_buf(),
            message: format!("{e:#}"),
        })?;
        let component = self.compile(&entry.engine, path, &bytes, &digest)?;
        let info = describe(&entry.engine, path, &bytes, &digest, &component);
        check_contract(&info, grants)?;
        let pre = entry.linker.instantiate_pre(&component).map_err(|e| {
            let msg = format!("{e:#}");
            let import = msg.split('`').nth(1).unwrap_or(&msg).to_string();
            LoadError::UnknownImport {
                path: path.to_path_buf(),
                import,
            }
        })?;
        let invalid = |e: wasmtime::Error| LoadError::Invalid {
            path: path.to_path_buf(),
            message: format!("{e:#}"),
        };
        let migrator = if info.migrates {
            Some(migrator::GuestIndices::new(&pre).map_err(invalid)?)
        } else {
            None
        };
        let exports = match info.kind {
            Some(OperatorKind::Window) => {
                Exports::Window(aggregator::GuestIndices::new(&pre).map_err(invalid)?)
            }
            Some(OperatorKind::KeyedProcess) => Exports::Process {
                processor: processor::GuestIndices::new(&pre).map_err(invalid)?,
                timers: Some(timer_handler::GuestIndices::new(&pre).map_err(invalid)?),
                migrator,
            },
            _ => Exports::Process {
                processor: processor::GuestIndices::new(&pre).map_err(invalid)?,
                timers: None,
                migrator,
            },
        };
        Ok(Arc::new(Plugin {
            engine: entry.engine.clone(),
            info,
            pre,
            exports,
            grants: grants.clone(),
            fuel: options.fuel,
        }))
    }

    /// Describe a component without requiring it to be a valid operator
    /// (for `sluice plugin inspect`).
    pub fn inspect(&self, path: &Path) -> Result<PluginInfo, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        check_header(path, &bytes)?;
        let digest = hex::encode(Sha256::digest(&bytes));
        let engine = self.engine_default();
        let component = self.compile(&engine, path, &bytes, &digest)?;
        Ok(describe(&engine, path, &bytes, &digest, &component))
    }
}

fn check_header(path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
        return Err(LoadError::NotWasm {
            path: path.to_path_buf(),
        });
    }
    // Bytes 4..8: version and layer. Layer 0 is a core module, 1 a component.
    if bytes[6..8] == [0, 0] {
        return Err(LoadError::CoreModule {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

fn describe(
    engine: &Engine,
    path: &Path,
    bytes: &[u8],
    digest: &str,
    component: &Component,
) -> PluginInfo {
    let size = bytes.len() as u64;
    let side_outputs = declared_side_outputs(bytes);
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
    let has = |interface: &str| {
        exports.iter().find(|e| {
            e.strip_prefix("sluice:operator/")
                .and_then(|r| r.split('@').next())
                == Some(interface)
        })
    };
    let kind = match (has("processor"), has("timer-handler"), has("aggregator")) {
        (Some(_), None, None) => Some(OperatorKind::Process),
        (Some(_), Some(_), None) => Some(OperatorKind::KeyedProcess),
        (None, None, Some(_)) => Some(OperatorKind::Window),
        _ => None,
    };
    let (package, world, version) = match exports.iter().find(|e| e.starts_with("sluice:operator/"))
    {
        Some(e) => {
            let version = e.split('@').nth(1).unwrap_or("?").to_string();
            (
                PACKAGE.to_string(),
                kind.map_or("unknown", OperatorKind::world).to_string(),
                version,
            )
        }
        None => ("(none)".into(), "(none)".into(), "(none)".into()),
    };
    let migrates = has("migrator").is_some();
    let world = if migrates
        && matches!(
            kind,
            Some(OperatorKind::Process | OperatorKind::KeyedProcess)
        ) {
        format!("migrating-{world}")
    } else {
        world
    };
    PluginInfo {
        path: path.to_path_buf(),
        size,
        digest: digest.to_string(),
        package,
        world,
        kind,
        version,
        exports,
        imports,
        migrates,
        side_outputs,
    }
}

/// Check that a described component fits the contract and the operator's
/// grants: it exports the interfaces of one operator world at a contract
/// version this host implements, and imports only `sluice:operator@0.1.x`
/// and the WASI interfaces it was granted.
pub fn check_contract(info: &PluginInfo, grants: &Grants) -> Result<(), LoadError> {
    let path = info.path.clone();
    let sluice_exports: Vec<&String> = info
        .exports
        .iter()
        .filter(|e| e.starts_with("sluice:operator/"))
        .collect();
    if let Some(e) = sluice_exports.iter().find(|e| !supported_version(e)) {
        return Err(LoadError::WrongVersion {
            path,
            found: (*e).clone(),
        });
    }
    if info.kind.is_none() {
        let exports = if info.exports.is_empty() {
            "nothing".to_string()
        } else {
            info.exports.join(", ")
        };
        return Err(LoadError::NotAnOperator { path, exports });
    }
    if info.kind != Some(OperatorKind::KeyedProcess)
        && info
            .imports
            .iter()
            .any(|i| i.starts_with("sluice:operator/timers@"))
    {
        return Err(LoadError::TimersWithoutHandler { path });
    }
    // Imports that no grant allows are reported before those a grant would fix.
    let mut imports: Vec<&String> = info.imports.iter().collect();
    imports.sort_by_key(|i| !i.starts_with("wasi:sockets/"));
    for import in imports {
        let not_granted = |grant: &str| LoadError::NotGranted {
            path: path.clone(),
            import: import.clone(),
            grant: grant.to_string(),
        };
        if import.starts_with("sluice:operator/") {
            if !supported_version(import) {
                return Err(LoadError::WrongVersion {
                    path,
                    found: import.clone(),
                });
            }
        } else if import.starts_with("wasi:filesystem/") {
            if grants.read_dir.is_none() {
                return Err(not_granted("grant a read-only directory with `grants = { read_dir = \"<dir>\" }` on the operator (the plugin sees it as /data)"));
            }
        } else if import.starts_with("wasi:sockets/") {
            return Err(not_granted("no grant allows sockets: a plugin never holds a connection; remove the network code from the plugin"));
        } else if import.starts_with("wasi:http/") {
            if grants.http.is_empty() {
                return Err(not_granted("grant the hosts it may call with `grants = { http = [\"api.example.com\"] }` on the operator"));
            }
        } else if !import.starts_with("wasi:") {
            return Err(LoadError::UnknownImport {
                path,
                import: import.clone(),
            });
        }
    }
    Ok(())
}

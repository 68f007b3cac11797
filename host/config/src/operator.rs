//! `[[operators]]`: the plugin an operator runs, its inputs, keys,
//! window, limits and grants, and how it handles records it cannot process.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sluice_types::MAX_PARALLELISM;
use toml::Spanned;

use crate::error::ConfigError;
use crate::reader::Reader;
use crate::time::{self, Millis, Timestamps, WatermarkSpec, WindowSpec};

/// The largest `batch_size` a pipeline, or one of its operators, may set.
pub const MAX_BATCH_SIZE: usize = 1 << 20;

/// What an operator does with a record it cannot process (a per-record error,
/// a trap, a timeout).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorPolicy {
    /// Stop the pipeline with an error that names the operator and the record.
    #[default]
    Fail,
    /// Drop the record, count it in `records_skipped`, and go on.
    Skip,
    /// Send the original record with provenance to `<operator>.dead-letter`.
    DeadLetter,
}

/// How a keyed operator's input is partitioned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyBy {
    /// By the record key that the upstream operator (or source) set.
    Key,
}

/// Resource limits of one plugin instance. A breach traps the guest call and
/// goes to the operator's error policy; it never fails the host.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Linear-memory cap per instance, in MiB (default 64).
    pub memory_mb: u64,
    /// CPU deadline per guest call, in milliseconds (default 1000), enforced
    /// by epoch interruption.
    pub deadline_ms: u64,
    /// Wasm stack per call, in KiB (default 512, at most 4096).
    pub stack_kb: u64,
    /// Largest record an operator accepts or emits, in KiB (default 1024).
    pub max_record_kb: u64,
    /// Optional fuel per guest call: a deterministic instruction budget, on
    /// top of the deadline. Off by default (it costs throughput).
    pub fuel: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mb: 64,
            deadline_ms: 1000,
            stack_kb: 512,
            max_record_kb: 1024,
            fuel: None,
        }
    }
}

/// The largest `limits.stack_kb`: the host threads that run guests have 8 MiB stacks.
pub const MAX_STACK_KB: u64 = 4096;

/// The largest `limits.memory_mb` (1 TiB, far above the 4 GiB a 32-bit Wasm
/// memory can address): larger values would overflow as a byte count.
pub const MAX_MEMORY_MB: u64 = 1 << 20;

/// The largest `limits.max_record_kb` (1 GiB).
pub const MAX_RECORD_KB: u64 = 1 << 20;

/// The largest `limits.deadline_ms` (one hour).
pub const MAX_DEADLINE_MS: u64 = 3_600_000;

/// Capabilities granted to a plugin. By default a plugin gets none: no
/// filesystem, no network, no environment, and a frozen clock.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Grants {
    /// Environment variables the plugin sees, by name.
    pub env: std::collections::BTreeMap<String, String>,
    /// A directory the plugin may read (never write), visible to it as `/data`.
    /// Relative to the pipeline file.
    pub read_dir: Option<PathBuf>,
    /// Whether the plugin sees the real wall and monotonic clocks (otherwise
    /// both read 0, which keeps replays deterministic).
    pub clock: bool,
    /// Hosts the plugin may send HTTP requests to (outbound only, through
    /// `wasi:http`), e.g. `["api.example.com", "127.0.0.1"]`. A request to any
    /// other host is denied.
    pub http: Vec<String>,
}

/// An `[[operators]]` entry.
#[derive(Clone, Debug)]
pub struct OperatorSpec {
    /// Unique name; also the name of its main output stream.
    pub name: String,
    /// Path of the component, resolved against the pipeline file's folder.
    pub plugin: PathBuf,
    /// Streams it reads.
    pub inputs: Vec<String>,
    /// Line of its `input` key.
    pub input_line: usize,
    /// The `params` table, handed to the plugin's `init` as JSON.
    pub params: serde_json::Value,
    /// Number of parallel instances (1..=128).
    pub parallelism: u32,
    /// How the input is partitioned; `None` for a stateless operator.
    pub key_by: Option<KeyBy>,
    /// What happens to records it cannot process.
    pub on_error: ErrorPolicy,
    /// Resource limits per instance.
    pub limits: Limits,
    /// Capabilities granted to the plugin.
    pub grants: Grants,
    /// Watermarks generated from what it emits (`[operators.watermarks]`);
    /// without, it forwards the watermark of its inputs.
    pub watermarks: Option<WatermarkSpec>,
    /// Its window (`[operators.window]`): the host runs keyed windows and the
    /// plugin is a `window-aggregate`.
    pub window: Option<WindowSpec>,
    /// Default time-to-live of its keyed state, ms (`state_ttl = "1h"`).
    pub state_ttl: Option<i64>,
    /// Records per guest call (`batch_size`), over the pipeline's.
    pub batch_size: Option<usize>,
    /// Line of the entry in the pipeline file.
    pub line: usize,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Inputs {
    One(String),
    Many(Vec<String>),
}

impl Inputs {
    pub(crate) fn into_vec(self) -> Vec<String> {
        match self {
            Inputs::One(s) => vec![s],
            Inputs::Many(v) => v,
        }
    }
}

fn one() -> Spanned<u32> {
    Spanned::new(0..0, 1)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOperator {
    pub(crate) name: String,
    plugin: Spanned<String>,
    input: Option<Inputs>,
    #[serde(default)]
    params: toml::Table,
    #[serde(default = "one")]
    parallelism: Spanned<u32>,
    key_by: Option<KeyBy>,
    #[serde(default)]
    on_error: ErrorPolicy,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    grants: Grants,
    watermarks: Option<WatermarkSpec>,
    window: Option<time::RawWindow>,
    state_ttl: Option<Millis>,
    batch_size: Option<usize>,
}

impl Reader<'_> {
    /// An `[[operators]]` entry, checked (its name was claimed already).
    pub(crate) fn operator(
        &self,
        entry: Spanned<RawOperator>,
    ) -> Result<OperatorSpec, ConfigError> {
        let span = entry.span();
        let line = self.line_of_key(&span, Some("name"));
        let input_line = self.line_of_key(&span, Some("input"));
        let op = entry.into_inner();
        let plugin = self.resolve(Path::new(op.plugin.get_ref()));
        if !plugin.is_file() {
            return Err(self.err(
                Some(op.plugin.span().start),
                format!("operator `{}`: plugin file {} does not exist", op.name, plugin.display()),
                Some("build the plugins with `scripts/build-plugins`, or fix `plugin` (relative to the pipeline file)".into()),
            ));
        }
        let parallelism = *op.parallelism.get_ref();
        if parallelism == 0 || parallelism > MAX_PARALLELISM {
            return Err(self.err(
                Some(op.parallelism.span().start.max(span.start)),
                format!(
                    "operator `{}`: parallelism {parallelism} is out of range",
                    op.name
                ),
                Some(format!("use 1 to {MAX_PARALLELISM}")),
            ));
        }
        let Some(inputs) = op.input else {
            return Err(self.err(
                Some(span.start),
                format!("operator `{}`: missing field `input`", op.name),
                Some("name the stream it reads, e.g. input = \"<source or operator>\"".into()),
            ));
        };
        let params = serde_json::to_value(&op.params).map_err(|e| {
            self.err(
                Some(span.start),
                format!(
                    "operator `{}`: params cannot be passed as JSON: {e}",
                    op.name
                ),
                None,
            )
        })?;
        let limits_line = Some(self.line_of_key(&span, Some("limits")));
        let l = &op.limits;
        if l.memory_mb == 0
            || l.deadline_ms == 0
            || l.stack_kb == 0
            || l.max_record_kb == 0
            || l.fuel == Some(0)
        {
            return Err(ConfigError {
                line: limits_line,
                ..self.err(
                    None,
                    format!("operator `{}`: limits must be positive", op.name),
                    Some("set memory_mb, deadline_ms, stack_kb, max_record_kb and fuel to values above 0 (or leave them out for the defaults)".into()),
                )
            });
        }
        // Larger values would overflow (or wrap) when turned into bytes.
        for (key, value, max, unit) in [
            ("memory_mb", l.memory_mb, MAX_MEMORY_MB, "MiB"),
            ("max_record_kb", l.max_record_kb, MAX_RECORD_KB, "KiB"),
            ("deadline_ms", l.deadline_ms, MAX_DEADLINE_MS, "ms"),
        ] {
            if value > max {
                return Err(ConfigError {
                    line: limits_line,
                    ..self.err(
                        None,
                        format!(
                            "operator `{}`: limits.{key} = {value} is too large",
                            op.name
                        ),
                        Some(format!("use at most {max} ({unit})")),
                    )
                });
            }
        }
        if l.stack_kb > MAX_STACK_KB {
            return Err(ConfigError {
                line: limits_line,
                ..self.err(
                    None,
                    format!(
                        "operator `{}`: limits.stack_kb = {} is too large",
                        op.name, l.stack_kb
                    ),
                    Some(format!("use at most {MAX_STACK_KB}")),
                )
            });
        }
        let mut grants = op.grants;
        if let Some(dir) = &grants.read_dir {
            let dir = self.resolve(dir);
            if !dir.is_dir() {
                return Err(ConfigError {
                    line: Some(self.line_of_key(&span, Some("grants"))),
                    ..self.err(
                        None,
                        format!("operator `{}`: grants.read_dir {} is not a directory", op.name, dir.display()),
                        Some("paths are relative to the pipeline file; create the directory or fix the path".into()),
                    )
                });
            }
            grants.read_dir = Some(dir);
        }
        let op_err = |key: &str, message: String, help: String| ConfigError {
            line: Some(self.line_of_key(&span, Some(key))),
            ..self.err(
                None,
                format!("operator `{}`: {message}", op.name),
                Some(help),
            )
        };
        let window = match op.window {
            Some(w) => Some(w.into_spec().map_err(|(m, h)| op_err("window", m, h))?),
            None => None,
        };
        if window.is_some() && op.key_by.is_none() {
            return Err(op_err(
                "window",
                "windows are keyed, but the operator has no key_by".into(),
                "add key_by = \"key\"; the upstream operator sets each record's key".into(),
            ));
        }
        if op
            .watermarks
            .as_ref()
            .is_some_and(|w| w.alignment_group.is_some() || w.max_drift.is_some())
        {
            return Err(op_err(
                "watermarks",
                "alignment_group and max_drift apply to sources only".into(),
                "set them in [sources.watermarks] of the sources that should wait for each other"
                    .into(),
            ));
        }
        if let Some(w) = &op.watermarks {
            if w.timestamps == Timestamps::Ingestion {
                return Err(op_err(
                    "watermarks",
                    "timestamps = \"ingestion\" applies to sources only".into(),
                    "set it on the source, or use a window with time = \"ingestion\"".into(),
                ));
            }
        }
        let state_ttl = match op.state_ttl {
            Some(Millis(0)) => {
                return Err(op_err(
                    "state_ttl",
                    "state_ttl must be positive".into(),
                    "e.g. state_ttl = \"1h\", or leave it out to keep state forever".into(),
                ))
            }
            Some(Millis(ms)) if op.key_by.is_none() => {
                return Err(op_err(
                    "state_ttl",
                    format!("state_ttl = {ms} ms, but the operator has no keyed state (no key_by)"),
                    "add key_by = \"key\", or remove state_ttl".into(),
                ))
            }
            Some(Millis(ms)) => Some(ms),
            None => None,
        };
        if let Some(n) = op.batch_size.filter(|n| !(1..=MAX_BATCH_SIZE).contains(n)) {
            return Err(op_err("batch_size", format!("batch_size = {n} is out of range"), format!("use 1 to {MAX_BATCH_SIZE} records per call, or leave it out for the pipeline's")));
        }
        Ok(OperatorSpec {
            name: op.name,
            plugin,
            inputs: inputs.into_vec(),
            input_line,
            params,
            parallelism,
            key_by: op.key_by,
            on_error: op.on_error,
            limits: op.limits,
            grants,
            watermarks: op.watermarks,
            window,
            state_ttl,
            batch_size: op.batch_size,
            line,
        })
    }
}

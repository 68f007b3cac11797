//! The Sluice pipeline file.
//!
//! A pipeline is a TOML file with `manifest_version = 1`, a `name`, and
//! `[[sources]]`, `[[operators]]` and `[[sinks]]` sections. Every error names
//! the file and the line, says what was expected, and says what to do:
//!
//! ```text
//! examples/taxi/pipeline.toml:14: source `trips` (generator): unknown field `sede`, expected one of `seed`, `count`, ...
//! ```
//!
//! Streams are named after what produces them: a source `trips` produces the
//! stream `trips`, an operator `parse` its main output `parse`, its side
//! outputs `parse.<side>` and, with `on_error = "dead-letter"`, its dead
//! letters `parse.dead-letter`.
#![deny(missing_docs)]

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use sluice_connectors::{FileSinkConfig, FileSourceConfig, GeneratorConfig, StdoutSinkConfig};
use toml::Spanned;

mod control;
mod time;
pub use control::ControlSpec;
pub use time::{
    CheckpointSpec, Millis, TimeCharacteristic, Timestamps, WatermarkSpec, WindowKind, WindowSpec,
    LATE_OUTPUT,
};

/// The only manifest version this host reads.
pub const MANIFEST_VERSION: u32 = 1;

pub use sluice_state::keygroup::MAX_PARALLELISM;

/// Name of the side output that carries an operator's dead letters.
pub const DEAD_LETTER_OUTPUT: &str = "dead-letter";

/// A pipeline file that could not be read or is invalid.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The pipeline file.
    pub file: PathBuf,
    /// 1-based line of the offending item, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub help: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

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

/// A `[[sources]]` entry.
#[derive(Clone, Debug)]
pub struct SourceSpec {
    /// Unique name; also the name of the stream it produces.
    pub name: String,
    /// What kind of source, with its settings.
    pub kind: SourceKind,
    /// How it generates watermarks (`[sources.watermarks]`); none by default.
    pub watermarks: Option<WatermarkSpec>,
    /// Parallel subtasks reading it (Kafka: partitions are dealt out,
    /// partition `p` to subtask `p % parallelism`); 1 for other kinds.
    pub parallelism: u32,
    /// Line of the entry in the pipeline file.
    pub line: usize,
}

/// The source kinds, by `type`.
#[derive(Clone, Debug)]
pub enum SourceKind {
    /// `type = "generator"`: synthetic NYC taxi trips.
    Generator(GeneratorConfig),
    /// `type = "turbines"`: synthetic wind-turbine readings (event time).
    Turbines(sluice_connectors::TurbineConfig),
    /// `type = "clicks"`: synthetic web-analytics clicks (sessions).
    Clicks(sluice_connectors::ClickConfig),
    /// `type = "file"`: a JSON-lines file.
    File(FileSourceConfig),
    /// `type = "kafka"`: an Apache Kafka topic.
    Kafka(sluice_connectors::KafkaSourceConfig),
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

/// A `[[sinks]]` entry.
#[derive(Clone, Debug)]
pub struct SinkSpec {
    /// Unique name.
    pub name: String,
    /// Streams it writes.
    pub inputs: Vec<String>,
    /// Line of its `input` key.
    pub input_line: usize,
    /// What kind of sink, with its settings.
    pub kind: SinkKind,
    /// Line of the entry in the pipeline file.
    pub line: usize,
}

/// The sink kinds, by `type`.
#[derive(Clone, Debug)]
pub enum SinkKind {
    /// `type = "file"`.
    File(FileSinkConfig),
    /// `type = "stdout"`.
    Stdout(StdoutSinkConfig),
    /// `type = "kafka"`: an Apache Kafka topic.
    Kafka(sluice_connectors::KafkaSinkConfig),
}

/// A parsed and validated pipeline.
#[derive(Clone, Debug)]
pub struct Pipeline {
    /// The pipeline's name; it names its state and checkpoint directories.
    pub name: String,
    /// The file it was read from.
    pub file: PathBuf,
    /// sha256 of the file's bytes, hex.
    pub hash: String,
    /// Sources, in file order.
    pub sources: Vec<SourceSpec>,
    /// Operators, in an order where every operator comes after its inputs.
    pub operators: Vec<OperatorSpec>,
    /// Sinks, in file order.
    pub sinks: Vec<SinkSpec>,
    /// Checkpointing.
    pub checkpoints: CheckpointSpec,
    /// Hot swaps (`[control]`).
    pub control: ControlSpec,
    /// Records per batch (top-level `batch_size`; default 1024). A speed
    /// knob only: event-time results are the same for every batch size.
    pub batch_size: Option<usize>,
    /// How long a source may wait to fill a batch when input is slow, ms
    /// (top-level `batch_timeout`; default 0: send what is there).
    pub batch_timeout: Option<i64>,
}

/// The largest `batch_size` a pipeline may set.
pub const MAX_BATCH_SIZE: usize = 1 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    manifest_version: Spanned<u32>,
    name: Spanned<String>,
    #[serde(default)]
    sources: Vec<Spanned<toml::Table>>,
    #[serde(default)]
    operators: Vec<Spanned<RawOperator>>,
    #[serde(default)]
    sinks: Vec<Spanned<toml::Table>>,
    #[serde(default)]
    checkpoints: CheckpointSpec,
    #[serde(default)]
    control: ControlSpec,
    batch_size: Option<Spanned<usize>>,
    batch_timeout: Option<Spanned<Millis>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Inputs {
    One(String),
    Many(Vec<String>),
}

impl Inputs {
    fn into_vec(self) -> Vec<String> {
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
struct RawOperator {
    name: String,
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

/// Reads and validates pipeline files.
struct Reader<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Reader<'_> {
    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .bytes()
            .filter(|b| *b == b'\n')
            .count()
            + 1
    }

    fn err(
        &self,
        offset: Option<usize>,
        message: impl Into<String>,
        help: Option<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line: offset.map(|o| self.line_of(o)),
            message: message.into(),
            help,
        }
    }

    /// The line of `key = ...` inside an entry, or the entry's first line.
    /// toml spans an `[[array]]` entry by its header only, so the entry is
    /// taken to run until the next header.
    fn line_of_key(&self, span: &std::ops::Range<usize>, key: Option<&str>) -> usize {
        if let Some(key) = key {
            let mut offset = span.start;
            for (i, line) in self.text[span.start.min(self.text.len())..]
                .split_inclusive('\n')
                .enumerate()
            {
                if i > 0 && line.trim_start().starts_with('[') {
                    break;
                }
                let t = line.trim_start();
                if t.strip_prefix(key)
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
                {
                    return self.line_of(offset);
                }
                offset += line.len();
            }
        }
        self.line_of(span.start)
    }

    fn toml_error(&self, e: toml::de::Error) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line: e.span().map(|s| self.line_of(s.start)),
            message: e.message().trim_end().to_string(),
            help: Some("see the pipeline reference in README.md (\"The pipeline file\")".into()),
        }
    }

    /// Splits `name` and `type` off a `[[sources]]`/`[[sinks]]` table and
    /// deserializes the rest with the connector's own config type.
    fn entry<T: serde::de::DeserializeOwned>(
        &self,
        section: &str,
        name: &str,
        kind: &str,
        span: &std::ops::Range<usize>,
        rest: toml::Table,
    ) -> Result<T, ConfigError> {
        rest.try_into::<T>().map_err(|e| {
            let message = e.message().trim_end().to_string();
            let key = message
                .split('`')
                .nth(1)
                .filter(|_| message.contains("field"));
            ConfigError {
                file: self.file.to_path_buf(),
                line: Some(self.line_of_key(span, key)),
                message: format!("{section} `{name}` ({kind}): {message}"),
                help: Some(format!("see the `{kind}` {section} settings in README.md")),
            }
        })
    }

    fn name_and_type(
        &self,
        section: &str,
        span: &std::ops::Range<usize>,
        table: &mut toml::Table,
    ) -> Result<(String, String), ConfigError> {
        let at = Some(span.start);
        let name = match table.remove("name") {
            Some(toml::Value::String(s)) => s,
            Some(_) => {
                return Err(self.err(at, format!("{section}: `name` must be a string"), None))
            }
            None => {
                return Err(self.err(
                    at,
                    format!("{section}: missing field `name`"),
                    Some("give every entry a unique name".into()),
                ))
            }
        };
        let kind = match table.remove("type") {
            Some(toml::Value::String(s)) => s,
            _ => {
                return Err(self.err(
                    at,
                    format!("{section} `{name}`: missing or non-string field `type`"),
                    Some(match section {
                        "source" => {
                            "set type = \"generator\", \"turbines\", \"clicks\" or \"file\"".into()
                        }
                        _ => "set type = \"file\" or type = \"stdout\"".into(),
                    }),
                ))
            }
        };
        Ok((name, kind))
    }

    /// Map what a connector's `validate` refuses to an error on the line of
    /// the key it names (the first one in backquotes).
    fn connector_check<E: fmt::Display>(
        &self,
        section: &str,
        name: &str,
        kind: &str,
        span: &std::ops::Range<usize>,
        checked: Result<(), E>,
    ) -> Result<(), ConfigError> {
        checked.map_err(|e| {
            let message = e.to_string();
            let key = message.split('`').nth(1);
            let message = message
                .strip_prefix(&format!("{kind}: "))
                .unwrap_or(&message);
            ConfigError {
                file: self.file.to_path_buf(),
                line: Some(self.line_of_key(span, key)),
                message: format!("{section} `{name}` ({kind}): {message}"),
                help: Some(format!("see the `{kind}` {section} settings in README.md")),
            }
        })
    }

    /// A file sink's path must name a file that is not a directory, that no
    /// file source reads and that no other sink writes.
    fn check_sink_file(
        &self,
        name: &str,
        span: &std::ops::Range<usize>,
        path: &Path,
        sources: &[(PathBuf, String)],
        sinks: &mut Vec<(PathBuf, String, usize)>,
    ) -> Result<(), ConfigError> {
        let line = self.line_of_key(span, Some("path"));
        let at = |message: String, help: &str| ConfigError {
            file: self.file.to_path_buf(),
            line: Some(line),
            message: format!("sink `{name}`: {message}"),
            help: Some(help.to_string()),
        };
        let name_a_file =
            "name a file, e.g. path = \"out/results.jsonl\" (relative to the pipeline file)";
        if path.is_dir() {
            return Err(at(
                format!("path {} is a directory", path.display()),
                name_a_file,
            ));
        }
        if path.file_name().is_none() {
            return Err(at(
                format!("path {} does not name a file", path.display()),
                name_a_file,
            ));
        }
        let key = normalized(path);
        if let Some((_, source)) = sources.iter().find(|(p, _)| *p == key) {
            return Err(at(
                format!("writes {}, which source `{source}` reads", path.display()),
                "write the output to another file",
            ));
        }
        if let Some((_, other, other_line)) = sinks.iter().find(|(p, _, _)| *p == key) {
            return Err(at(
                format!(
                    "writes {}, which sink `{other}` (line {other_line}) writes too",
                    path.display()
                ),
                "give each file sink its own file",
            ));
        }
        sinks.push((key, name.to_string(), line));
        Ok(())
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.file.parent().unwrap_or(Path::new(".")).join(p)
        }
    }

    fn read(&self) -> Result<Pipeline, ConfigError> {
        let raw: RawPipeline = toml::from_str(self.text).map_err(|e| self.toml_error(e))?;
        if *raw.manifest_version.get_ref() != MANIFEST_VERSION {
            return Err(self.err(
                Some(raw.manifest_version.span().start),
                format!(
                    "manifest_version {} is not supported",
                    raw.manifest_version.get_ref()
                ),
                Some(format!(
                    "this sluice reads manifest_version = {MANIFEST_VERSION}"
                )),
            ));
        }
        let name = raw.name.get_ref().clone();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(self.err(
                Some(raw.name.span().start),
                format!("pipeline name `{name}` is not valid"),
                Some("use letters, digits, `-` and `_` (it names the state directory)".into()),
            ));
        }

        let mut names: HashMap<String, usize> = HashMap::new();
        let mut claim = |reader: &Self, n: &str, line: usize| -> Result<(), ConfigError> {
            if n.is_empty() || n.contains('.') {
                return Err(ConfigError {
                    file: reader.file.to_path_buf(),
                    line: Some(line),
                    message: format!("name `{n}` is not valid"),
                    help: Some("names must be non-empty and must not contain `.` (it separates side outputs)".into()),
                });
            }
            if let Some(first) = names.insert(n.to_string(), line) {
                return Err(ConfigError {
                    file: reader.file.to_path_buf(),
                    line: Some(line),
                    message: format!("name `{n}` is already used on line {first}"),
                    help: Some(
                        "sources, operators and sinks share one namespace; rename one".into(),
                    ),
                });
            }
            Ok(())
        };

        let mut sources = Vec::new();
        // Files that file sources read and file sinks write, normalized:
        // a sink must not write what a source reads or another sink writes.
        let mut source_files: Vec<(PathBuf, String)> = Vec::new();
        let mut sink_files: Vec<(PathBuf, String, usize)> = Vec::new();
        for entry in raw.sources {
            let span = entry.span();
            let mut table = entry.into_inner();
            let (name, kind) = self.name_and_type("source", &span, &mut table)?;
            let line = self.line_of_key(&span, Some("name"));
            claim(self, &name, line)?;
            let watermarks = match table.remove("watermarks") {
                Some(v) => Some(v.try_into::<WatermarkSpec>().map_err(|e| ConfigError {
                    line: Some(self.line_of_key(&span, Some("watermarks"))),
                    ..self.err(
                        None,
                        format!("source `{name}`: watermarks: {}", e.message().trim_end()),
                        Some("see \"Event time\" in README.md".into()),
                    )
                })?),
                None => None,
            };
            let parallelism = match table.remove("parallelism") {
                None => 1,
                Some(v) => {
                    let line = Some(self.line_of_key(&span, Some("parallelism")));
                    let n = v.as_integer().filter(|n| (1..=MAX_PARALLELISM as i64).contains(n)).ok_or_else(|| ConfigError {
                        line,
                        ..self.err(None, format!("source `{name}`: parallelism must be a whole number from 1 to {MAX_PARALLELISM}"), None)
                    })?;
                    if kind != "kafka" && n != 1 {
                        return Err(ConfigError {
                            line,
                            ..self.err(
                                None,
                                format!(
                                    "source `{name}`: a `{kind}` source reads with one subtask"
                                ),
                                Some(
                                    "remove `parallelism`, or set it on the operators that follow"
                                        .into(),
                                ),
                            )
                        });
                    }
                    n as u32
                }
            };
            // What the source's constructor refuses, refused here, with the line.
            let valid = |checked| self.connector_check("source", &name, &kind, &span, checked);
            let kind = match kind.as_str() {
                "generator" => {
                    let c: GeneratorConfig = self.entry("source", &name, &kind, &span, table)?;
                    valid(c.validate())?;
                    SourceKind::Generator(c)
                }
                "turbines" => {
                    let c: sluice_connectors::TurbineConfig =
                        self.entry("source", &name, &kind, &span, table)?;
                    valid(c.validate())?;
                    SourceKind::Turbines(c)
                }
                "clicks" => {
                    let c: sluice_connectors::ClickConfig =
                        self.entry("source", &name, &kind, &span, table)?;
                    valid(c.validate())?;
                    SourceKind::Clicks(c)
                }
                "kafka" => SourceKind::Kafka(self.entry("source", &name, &kind, &span, table)?),
                "file" => {
                    let mut c: FileSourceConfig =
                        self.entry("source", &name, &kind, &span, table)?;
                    valid(c.validate())?;
                    c.path = self.resolve(&c.path);
                    if !c.path.is_file() {
                        return Err(self.err(
                            Some(span.start),
                            format!(
                                "source `{name}`: input file {} does not exist",
                                c.path.display()
                            ),
                            Some("paths are relative to the pipeline file; fix `path`".into()),
                        ));
                    }
                    SourceKind::File(c)
                }
                other => {
                    return Err(ConfigError {
                        line: Some(self.line_of_key(&span, Some("type"))),
                        ..self.err(
                            None,
                            format!("source `{name}`: unknown type `{other}`"),
                            Some(
                                "known source types: generator, turbines, clicks, file, kafka"
                                    .into(),
                            ),
                        )
                    })
                }
            };
            if let SourceKind::File(c) = &kind {
                source_files.push((normalized(&c.path), name.clone()));
            }
            sources.push(SourceSpec {
                name,
                kind,
                watermarks,
                parallelism,
                line,
            });
        }

        let mut operators = Vec::new();
        for entry in raw.operators {
            let span = entry.span();
            let line = self.line_of_key(&span, Some("name"));
            let input_line = self.line_of_key(&span, Some("input"));
            let op = entry.into_inner();
            claim(self, &op.name, line)?;
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
                return Err(op_err("watermarks", "alignment_group and max_drift apply to sources only".into(), "set them in [sources.watermarks] of the sources that should wait for each other".into()));
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
                        format!(
                            "state_ttl = {ms} ms, but the operator has no keyed state (no key_by)"
                        ),
                        "add key_by = \"key\", or remove state_ttl".into(),
                    ))
                }
                Some(Millis(ms)) => Some(ms),
                None => None,
            };
            if let Some(n) = op.batch_size.filter(|n| !(1..=MAX_BATCH_SIZE).contains(n)) {
                return Err(op_err("batch_size", format!("batch_size = {n} is out of range"), format!("use 1 to {MAX_BATCH_SIZE} records per call, or leave it out for the pipeline's")));
            }
            operators.push(OperatorSpec {
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
            });
        }

        let mut sinks = Vec::new();
        for entry in raw.sinks {
            let span = entry.span();
            let mut table = entry.into_inner();
            let inputs = match table.remove("input") {
                Some(v) => Inputs::deserialize(v).map_err(|_| {
                    self.err(
                        Some(span.start),
                        "sink: `input` must be a string or a list of strings",
                        None,
                    )
                })?,
                None => {
                    return Err(self.err(
                        Some(span.start),
                        "sink: missing field `input`",
                        Some("name the stream it writes, e.g. input = \"<operator>\"".into()),
                    ))
                }
            };
            let (name, kind) = self.name_and_type("sink", &span, &mut table)?;
            let line = self.line_of_key(&span, Some("name"));
            let input_line = self.line_of_key(&span, Some("input"));
            claim(self, &name, line)?;
            let kind = match kind.as_str() {
                "file" => {
                    let mut c: FileSinkConfig = self.entry("sink", &name, &kind, &span, table)?;
                    c.path = self.resolve(&c.path);
                    self.check_sink_file(&name, &span, &c.path, &source_files, &mut sink_files)?;
                    SinkKind::File(c)
                }
                "stdout" => SinkKind::Stdout(self.entry("sink", &name, &kind, &span, table)?),
                "kafka" => SinkKind::Kafka(self.entry("sink", &name, &kind, &span, table)?),
                other => {
                    return Err(ConfigError {
                        line: Some(self.line_of_key(&span, Some("type"))),
                        ..self.err(
                            None,
                            format!("sink `{name}`: unknown type `{other}`"),
                            Some("known sink types: file, stdout, kafka".into()),
                        )
                    })
                }
            };
            sinks.push(SinkSpec {
                name,
                inputs: inputs.into_vec(),
                input_line,
                kind,
                line,
            });
        }

        let mut checkpoints = raw.checkpoints;
        if checkpoints.interval.0 < 10 || checkpoints.retain == 0 {
            return Err(self.err(
                None,
                "[checkpoints]: interval must be at least 10ms and retain at least 1",
                Some("e.g. interval = \"10s\", retain = 3".into()),
            ));
        }
        checkpoints.dir = checkpoints.dir.map(|d| self.resolve(&d));
        let mut control = raw.control;
        control
            .check(|p| self.resolve(p))
            .map_err(|(message, help)| self.err(None, message, Some(help)))?;
        if let Some(n) = raw
            .batch_size
            .as_ref()
            .filter(|n| !(1..=MAX_BATCH_SIZE).contains(n.get_ref()))
        {
            return Err(self.err(
                Some(n.span().start),
                format!("batch_size = {} is out of range", n.get_ref()),
                Some(format!(
                    "use 1 to {MAX_BATCH_SIZE} records per batch (default 1024)"
                )),
            ));
        }
        if let Some(t) = raw
            .batch_timeout
            .as_ref()
            .filter(|t| t.get_ref().0 > 60_000)
        {
            return Err(self.err(
                Some(t.span().start),
                format!(
                    "batch_timeout = {} ms is longer than a minute",
                    t.get_ref().0
                ),
                Some(
                    "it bounds the latency added to fill a batch: e.g. batch_timeout = \"10ms\""
                        .into(),
                ),
            ));
        }
        let mut pipeline = Pipeline {
            batch_size: raw.batch_size.map(Spanned::into_inner),
            batch_timeout: raw.batch_timeout.map(|t| t.into_inner().0),
            checkpoints,
            control,
            name,
            file: self.file.to_path_buf(),
            hash: hex::encode(Sha256::digest(self.text.as_bytes())),
            sources,
            operators,
            sinks,
        };
        self.check_graph(&mut pipeline)?;
        Ok(pipeline)
    }

    /// Inputs must name existing streams, the graph must be acyclic, and dead
    /// letters must go somewhere. Orders operators topologically.
    fn check_graph(&self, p: &mut Pipeline) -> Result<(), ConfigError> {
        let sources: HashSet<&str> = p.sources.iter().map(|s| s.name.as_str()).collect();
        let ops: HashMap<&str, &OperatorSpec> =
            p.operators.iter().map(|o| (o.name.as_str(), o)).collect();
        let at = |line: usize| ConfigError {
            file: self.file.to_path_buf(),
            line: Some(line),
            message: String::new(),
            help: None,
        };

        let check = |consumer: &str, input: &str, line: usize| -> Result<(), ConfigError> {
            let (head, side) = match input.split_once('.') {
                Some((h, s)) => (h, Some(s)),
                None => (input, None),
            };
            if sources.contains(head) {
                if side.is_some() {
                    return Err(ConfigError {
                        message: format!(
                            "`{consumer}` reads `{input}`, but source `{head}` has no side outputs"
                        ),
                        help: Some(format!("use input = \"{head}\"")),
                        ..at(line)
                    });
                }
                return Ok(());
            }
            match ops.get(head) {
                Some(op) => {
                    if side == Some(DEAD_LETTER_OUTPUT) && op.on_error != ErrorPolicy::DeadLetter {
                        return Err(ConfigError {
                            message: format!("`{consumer}` reads `{input}`, but operator `{head}` does not dead-letter"),
                            help: Some(format!("set on_error = \"dead-letter\" on operator `{head}`")),
                            ..at(line)
                        });
                    }
                    Ok(())
                }
                None => {
                    let mut known: Vec<&str> =
                        sources.iter().copied().chain(ops.keys().copied()).collect();
                    known.sort();
                    Err(ConfigError {
                        message: format!(
                            "`{consumer}` reads `{input}`, which no source or operator produces"
                        ),
                        help: Some(format!("known streams: {}", known.join(", "))),
                        ..at(line)
                    })
                }
            }
        };
        for op in &p.operators {
            for input in &op.inputs {
                check(&op.name, input, op.input_line)?;
            }
        }
        for sink in &p.sinks {
            for input in &sink.inputs {
                check(&sink.name, input, sink.input_line)?;
            }
        }
        for op in &p.operators {
            let dl = format!("{}.{DEAD_LETTER_OUTPUT}", op.name);
            let consumed = p.operators.iter().any(|o| o.inputs.contains(&dl))
                || p.sinks.iter().any(|s| s.inputs.contains(&dl));
            if op.on_error == ErrorPolicy::DeadLetter && !consumed {
                return Err(ConfigError {
                    message: format!(
                        "operator `{}` dead-letters, but nothing reads `{dl}`",
                        op.name
                    ),
                    help: Some(format!("add a [[sinks]] entry with input = \"{dl}\"")),
                    ..at(op.line)
                });
            }
        }

        // Topological order (Kahn); what is left over is a cycle.
        let mut ordered: Vec<OperatorSpec> = Vec::with_capacity(p.operators.len());
        let mut remaining: Vec<OperatorSpec> = std::mem::take(&mut p.operators);
        while !remaining.is_empty() {
            let done: HashSet<String> = ordered.iter().map(|o| o.name.clone()).collect();
            let ready = remaining.iter().position(|o| {
                o.inputs.iter().all(|i| {
                    let head = i.split('.').next().unwrap_or(i);
                    sources.contains(head) || done.contains(head)
                })
            });
            match ready {
                Some(i) => ordered.push(remaining.remove(i)),
                None => {
                    let names: Vec<&str> = remaining.iter().map(|o| o.name.as_str()).collect();
                    return Err(ConfigError {
                        message: format!("operators {} form a cycle", names.join(", ")),
                        help: Some(
                            "a pipeline is a DAG: remove one of the inputs that close the loop"
                                .into(),
                        ),
                        ..at(remaining[0].line)
                    });
                }
            }
        }
        p.operators = ordered;
        if p.sources.is_empty() {
            return Err(self.err(
                Some(0),
                "the pipeline has no [[sources]]",
                Some("add a source, e.g. type = \"generator\"".into()),
            ));
        }
        if p.sinks.is_empty() {
            return Err(self.err(
                Some(0),
                "the pipeline has no [[sinks]]",
                Some("add a sink, e.g. type = \"stdout\"".into()),
            ));
        }
        self.check_watermarks(p)
    }

    /// An event-time window that no watermark reaches fires only at the end
    /// of the input and never finds a record late: a wrong answer, silently.
    /// Operators are in topological order here.
    fn check_watermarks(&self, p: &Pipeline) -> Result<(), ConfigError> {
        // Per stream head: `None` if a watermark reaches it, else why not.
        let mut missing: HashMap<&str, Option<String>> = p
            .sources
            .iter()
            .map(|s| {
                (
                    s.name.as_str(),
                    s.watermarks
                        .is_none()
                        .then(|| format!("source `{}` declares none", s.name)),
                )
            })
            .collect();
        for op in &p.operators {
            let why: Vec<(&String, Option<String>)> = op
                .inputs
                .iter()
                .map(|i| {
                    (
                        i,
                        missing
                            .get(i.split('.').next().unwrap_or(i))
                            .cloned()
                            .flatten(),
                    )
                })
                .collect();
            let lacking = match why.iter().find(|(_, w)| w.is_some()) {
                Some((input, _)) if why.iter().any(|(_, w)| w.is_none()) => {
                    Some(format!("`{}` unites `{input}`, which carries none, with inputs that do (a union's watermark is the lowest of its inputs')", op.name))
                }
                Some((_, w)) => w.clone(),
                None => None,
            };
            if let (Some(w), Some(why)) = (&op.window, &lacking) {
                if w.time == TimeCharacteristic::Event {
                    return Err(ConfigError {
                        file: self.file.to_path_buf(),
                        line: Some(op.line),
                        message: format!("operator `{}` has an event-time window, but no watermark reaches it: {why}; every window would fire only at the end of the input and no record would ever be late", op.name),
                        help: Some("declare watermarks where event times become known: [sources.watermarks] out_of_orderness = \"5s\" on the source, or watermarks = { out_of_orderness = \"5s\" } on the operator that sets event times; or use time = \"processing\"".into()),
                    });
                }
            }
            missing.insert(
                op.name.as_str(),
                if op.watermarks.is_some() {
                    None
                } else {
                    lacking
                },
            );
        }
        Ok(())
    }
}

/// `path` made comparable: symlinks and `..` resolved as far as the path
/// exists (a sink's file may not exist yet, its directory usually does).
fn normalized(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    if let (Some(parent), Some(name)) = (path.parent(), path.file_name()) {
        if let Ok(p) = parent.canonicalize() {
            return p.join(name);
        }
    }
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

impl Pipeline {
    /// Read and validate the pipeline at `file`.
    pub fn from_file(file: &Path) -> Result<Pipeline, ConfigError> {
        let bytes = std::fs::read(file).map_err(|e| ConfigError {
            file: file.to_path_buf(),
            line: None,
            message: format!("cannot read the pipeline file: {e}"),
            help: Some("check the path".into()),
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let bytes = e.as_bytes();
            let at = e.utf8_error().valid_up_to();
            let line_start = bytes[..at]
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |i| i + 1);
            ConfigError {
                file: file.to_path_buf(),
                line: Some(bytes[..at].iter().filter(|b| **b == b'\n').count() + 1),
                message: format!(
                    "the pipeline file is not UTF-8: byte 0x{:02x} at column {} is not valid",
                    bytes[at],
                    at - line_start + 1
                ),
                help: Some("save the file as UTF-8".into()),
            }
        })?;
        Self::from_str(file, &text)
    }

    /// Parse and validate pipeline text; `file` names it in errors and
    /// anchors relative paths.
    pub fn from_str(file: &Path, text: &str) -> Result<Pipeline, ConfigError> {
        Reader { file, text }.read()
    }

    /// The operator called `name`.
    pub fn operator(&self, name: &str) -> Option<&OperatorSpec> {
        self.operators.iter().find(|o| o.name == name)
    }
}

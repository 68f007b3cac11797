//! Reading a pipeline file: the top-level keys, then each source, operator
//! and sink in file order (the first error stops the reading), then the
//! graph.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use sluice_types::MAX_PARALLELISM;
use toml::Spanned;

use crate::control::ControlSpec;
use crate::entry::{one_of, Connectors, Entry, Files, SinkSpec, SourceSpec};
use crate::error::ConfigError;
use crate::operator::MAX_BATCH_SIZE;
use crate::operator::{Inputs, RawOperator};
use crate::pipeline::{Pipeline, MANIFEST_VERSION};
use crate::reader::Reader;
use crate::time::{CheckpointSpec, Millis, WatermarkSpec};

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

impl Reader<'_> {
    /// Splits `name` and `type` off a `[[sources]]`/`[[sinks]]` table;
    /// `types` are those the connectors know, for the help.
    fn name_and_type(
        &self,
        section: &str,
        span: &std::ops::Range<usize>,
        table: &mut toml::Table,
        types: &[&str],
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
                    Some(format!("set type = {}", one_of(types))),
                ))
            }
        };
        Ok((name, kind))
    }

    fn read(&self, connectors: &dyn Connectors) -> Result<Pipeline, ConfigError> {
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
        // Files that sources read and sinks write: a sink must not write
        // what a source reads or another sink writes.
        let mut files = Files::default();
        for entry in raw.sources {
            let span = entry.span();
            let mut table = entry.into_inner();
            let (name, kind) =
                self.name_and_type("source", &span, &mut table, &connectors.source_types())?;
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
                    if !connectors.parallel_source(&kind) && n != 1 {
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
            let entry = Entry::new(
                self,
                span.clone(),
                "source",
                &name,
                &kind,
                &table,
                &mut files,
            );
            check_entry(entry, &connectors.source_types(), |e| {
                connectors.check_source(e)
            })?;
            sources.push(SourceSpec {
                name,
                connector: kind,
                settings: table,
                watermarks,
                parallelism,
                line,
            });
        }

        let mut operators = Vec::new();
        for entry in raw.operators {
            let line = self.line_of_key(&entry.span(), Some("name"));
            claim(self, &entry.get_ref().name, line)?;
            operators.push(self.operator(entry)?);
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
            let (name, kind) =
                self.name_and_type("sink", &span, &mut table, &connectors.sink_types())?;
            let line = self.line_of_key(&span, Some("name"));
            let input_line = self.line_of_key(&span, Some("input"));
            claim(self, &name, line)?;
            let entry = Entry::new(self, span.clone(), "sink", &name, &kind, &table, &mut files);
            check_entry(entry, &connectors.sink_types(), |e| {
                connectors.check_sink(e)
            })?;
            sinks.push(SinkSpec {
                name,
                inputs: inputs.into_vec(),
                input_line,
                connector: kind,
                settings: table,
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
}

/// Refuse `entry` if its type is not one of `known`, else let its connector
/// `check` its settings: what its constructor would refuse, with the line.
fn check_entry(
    mut entry: Entry<'_>,
    known: &[&str],
    check: impl FnOnce(&mut Entry<'_>) -> Result<(), ConfigError>,
) -> Result<(), ConfigError> {
    if !known.contains(&entry.kind()) {
        return Err(entry.unknown_type(known));
    }
    check(&mut entry)
}

impl Pipeline {
    /// Read and validate the pipeline at `file`; `connectors` check the
    /// settings of its sources and sinks (`sluice_dataflow::connectors()`
    /// knows them all).
    pub fn from_file(file: &Path, connectors: &dyn Connectors) -> Result<Pipeline, ConfigError> {
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
        Self::from_str(file, &text, connectors)
    }

    /// Parse and validate pipeline text; `file` names it in errors and
    /// anchors relative paths.
    pub fn from_str(
        file: &Path,
        text: &str,
        connectors: &dyn Connectors,
    ) -> Result<Pipeline, ConfigError> {
        Reader { file, text }.read(connectors)
    }
}

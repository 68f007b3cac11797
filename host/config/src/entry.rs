//! Sources and sinks as the pipeline sees them: their common keys, and the
//! rest of their table for their connector. The pipeline crate knows no
//! connector: the reader hands each entry to a [`Connectors`] (the
//! registry of `sluice-connectors`), which parses and checks it with the
//! connector's own config type, through an [`Entry`] that puts its errors
//! on the right line.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::error::ConfigError;
use crate::reader::Reader;
use crate::time::WatermarkSpec;

/// A `[[sources]]` entry.
#[derive(Clone, Debug)]
pub struct SourceSpec {
    /// Unique name; also the name of the stream it produces.
    pub name: String,
    /// The connector type (`type = "..."`), a name in the connector registry.
    pub connector: String,
    /// The connector's settings: the entry's table without `name`, `type`,
    /// `parallelism` and `watermarks`. Its connector parses them (checked
    /// when the pipeline was read); relative paths in them are relative to
    /// the pipeline file ([`Pipeline::resolve`](crate::Pipeline::resolve)).
    pub settings: toml::Table,
    /// How it generates watermarks (`[sources.watermarks]`); none by default.
    pub watermarks: Option<WatermarkSpec>,
    /// Parallel subtasks reading it (Kafka: partitions are dealt out,
    /// partition `p` to subtask `p % parallelism`); 1 for other kinds.
    pub parallelism: u32,
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
    /// The connector type (`type = "..."`), a name in the connector registry.
    pub connector: String,
    /// The connector's settings: the entry's table without `name`, `type`
    /// and `input` (see [`SourceSpec::settings`]).
    pub settings: toml::Table,
    /// Line of the entry in the pipeline file.
    pub line: usize,
}

/// The connector types a pipeline may name, as the reader needs them.
/// `sluice_connectors::Registry` implements it: the connectors depend on
/// this crate for their entries, so this crate is handed them.
pub trait Connectors {
    /// The source types, in the order messages list them.
    fn source_types(&self) -> Vec<&str>;

    /// The sink types, in the order messages list them.
    fn sink_types(&self) -> Vec<&str>;

    /// Whether a source of type `kind` may read with several subtasks.
    fn parallel_source(&self, kind: &str) -> bool;

    /// Check a source entry's settings (its type is one of
    /// [`source_types`](Connectors::source_types)).
    fn check_source(&self, entry: &mut Entry<'_>) -> Result<(), ConfigError>;

    /// Check a sink entry's settings (its type is one of
    /// [`sink_types`](Connectors::sink_types)).
    fn check_sink(&self, entry: &mut Entry<'_>) -> Result<(), ConfigError>;
}

/// `"a", "b" or "c"`.
pub(crate) fn one_of(types: &[&str]) -> String {
    let quoted: Vec<String> = types.iter().map(|t| format!("\"{t}\"")).collect();
    match quoted.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// Files that sources read and sinks write, normalized: a sink must not
/// write what a source reads or another sink writes.
#[derive(Default)]
pub(crate) struct Files {
    /// (file, source).
    read: Vec<(PathBuf, String)>,
    /// (file, sink, line of the key that names it).
    written: Vec<(PathBuf, String, usize)>,
}

/// One `[[sources]]` or `[[sinks]]` entry while the pipeline is read, as
/// its connector checks it: its settings, and errors on its lines.
pub struct Entry<'a> {
    reader: &'a Reader<'a>,
    span: Range<usize>,
    section: &'static str,
    name: &'a str,
    kind: &'a str,
    settings: &'a toml::Table,
    files: &'a mut Files,
}

impl<'a> Entry<'a> {
    pub(crate) fn new(
        reader: &'a Reader<'a>,
        span: Range<usize>,
        section: &'static str,
        name: &'a str,
        kind: &'a str,
        settings: &'a toml::Table,
        files: &'a mut Files,
    ) -> Self {
        Entry {
            reader,
            span,
            section,
            name,
            kind,
            settings,
            files,
        }
    }

    /// `"source"` or `"sink"`.
    pub fn section(&self) -> &'static str {
        self.section
    }

    /// The entry's name.
    pub fn name(&self) -> &str {
        self.name
    }

    /// The entry's `type`.
    pub fn kind(&self) -> &str {
        self.kind
    }

    /// The connector's settings (see [`SourceSpec::settings`]).
    pub fn settings(&self) -> &toml::Table {
        self.settings
    }

    /// The settings parsed as the connector's config type; an unknown,
    /// missing or mistyped key is an error on its line.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        self.reader.entry(
            self.section,
            self.name,
            self.kind,
            &self.span,
            self.settings.clone(),
        )
    }

    /// What the connector's own validation refuses, as an error on the line
    /// of the key it names (the first one in backquotes). A leading
    /// `<type>: ` is dropped: the error names the entry and its type.
    pub fn check<E: fmt::Display>(&self, checked: Result<(), E>) -> Result<(), ConfigError> {
        self.reader
            .connector_check(self.section, self.name, self.kind, &self.span, checked)
    }

    /// A path of the settings, relative to the pipeline file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        self.reader.resolve(path)
    }

    /// An error about the entry, on the line of `key` (or the entry's first
    /// line): `<section> `<name>`: <message>`, with what to do.
    pub fn error(
        &self,
        key: Option<&str>,
        message: impl fmt::Display,
        help: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.reader.file.to_path_buf(),
            line: Some(self.reader.line_of_key(&self.span, key)),
            message: format!("{} `{}`: {message}", self.section, self.name),
            help: Some(help.into()),
        }
    }

    /// The error for a `type` that no connector has, listing those of `known`.
    pub fn unknown_type(&self, known: &[&str]) -> ConfigError {
        ConfigError {
            file: self.reader.file.to_path_buf(),
            line: Some(self.reader.line_of_key(&self.span, Some("type"))),
            message: format!(
                "{} `{}`: unknown type `{}`",
                self.section, self.name, self.kind
            ),
            help: Some(format!(
                "known {} types: {}",
                self.section,
                known.join(", ")
            )),
        }
    }

    /// The source reads the file at `path` (resolved): no sink may write it.
    pub fn reads_file(&mut self, path: &Path) {
        self.files
            .read
            .push((normalized(path), self.name.to_string()));
    }

    /// The sink writes the file at `path` (resolved), named by `key`: refused
    /// if a source reads it or another sink writes it.
    pub fn writes_file(&mut self, key: &str, path: &Path) -> Result<(), ConfigError> {
        let line = self.reader.line_of_key(&self.span, Some(key));
        let at = |message: String, help: &str| ConfigError {
            line: Some(line),
            ..self.error(None, message, help)
        };
        let normal = normalized(path);
        if let Some((_, source)) = self.files.read.iter().find(|(p, _)| *p == normal) {
            return Err(at(
                format!("writes {}, which source `{source}` reads", path.display()),
                "write the output to another file",
            ));
        }
        if let Some((_, other, other_line)) =
            self.files.written.iter().find(|(p, _, _)| *p == normal)
        {
            return Err(at(
                format!(
                    "writes {}, which sink `{other}` (line {other_line}) writes too",
                    path.display()
                ),
                "give each file sink its own file",
            ));
        }
        self.files
            .written
            .push((normal, self.name.to_string(), line));
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

//! The `file` source and sink: JSON lines on the local filesystem.
//!
//! - [`config`]: their settings, [`FileSourceConfig`] and [`FileSinkConfig`];
//! - [`source`]: [`FileSource`], one record per non-empty line;
//! - [`sink`]: [`FileSink`], one line per record, at least once or exactly
//!   once (its two-phase commit is in `txn`, its filesystem steps in `disk`).

use sluice_config::{ConfigError, Entry, Pipeline, SinkSpec, SourceSpec};
use sluice_types::{ConnectorError, Sink, Source};

use crate::registry::{parse_settings, Registry, SinkContext, SinkType, SourceContext, SourceType};

pub mod config;
mod disk;
pub mod sink;
pub mod source;
#[cfg(test)]
mod tests;
mod txn;

pub use config::{FileSinkConfig, FileSourceConfig, DEFAULT_MAX_RECORD_KB, MAX_MAX_RECORD_KB};
pub use sink::FileSink;
pub use source::FileSource;

/// Register the `file` source and sink types.
pub fn register(registry: &mut Registry) {
    registry.add_source(FileSourceType);
    registry.add_sink(FileSinkType);
}

/// `[[sources]] type = "file"`.
struct FileSourceType;

/// The source's settings with `path` resolved against the pipeline file's
/// directory.
fn source_config(
    spec: &SourceSpec,
    pipeline: &Pipeline,
) -> Result<FileSourceConfig, ConnectorError> {
    let mut config: FileSourceConfig =
        parse_settings(&format!("source `{}`", spec.name), &spec.settings)?;
    config.path = pipeline.resolve(&config.path);
    Ok(config)
}

impl SourceType for FileSourceType {
    fn name(&self) -> &'static str {
        "file"
    }

    fn check(&self, entry: &mut Entry<'_>) -> Result<(), ConfigError> {
        let mut config: FileSourceConfig = entry.parse()?;
        entry.check(config.validate())?;
        config.path = entry.resolve(&config.path);
        if !config.path.is_file() {
            return Err(entry.error(
                None,
                format!("input file {} does not exist", config.path.display()),
                "paths are relative to the pipeline file; fix `path`",
            ));
        }
        entry.reads_file(&config.path);
        Ok(())
    }

    fn describe(&self, spec: &SourceSpec, pipeline: &Pipeline) -> Result<String, ConnectorError> {
        Ok(format!(
            "file {}",
            source_config(spec, pipeline)?.path.display()
        ))
    }

    fn build(&self, at: &SourceContext<'_>) -> Result<Box<dyn Source>, ConnectorError> {
        Ok(Box::new(FileSource::new(
            &source_config(at.spec, at.pipeline)?,
            at.index,
        )?))
    }
}

/// `[[sinks]] type = "file"`.
struct FileSinkType;

/// The sink's settings with `path` resolved against the pipeline file's
/// directory.
fn sink_config(spec: &SinkSpec, pipeline: &Pipeline) -> Result<FileSinkConfig, ConnectorError> {
    let mut config: FileSinkConfig =
        parse_settings(&format!("sink `{}`", spec.name), &spec.settings)?;
    config.path = pipeline.resolve(&config.path);
    Ok(config)
}

impl SinkType for FileSinkType {
    fn name(&self) -> &'static str {
        "file"
    }

    /// The path must name a file that is not a directory, that no file
    /// source reads and that no other sink writes.
    fn check(&self, entry: &mut Entry<'_>) -> Result<(), ConfigError> {
        let mut config: FileSinkConfig = entry.parse()?;
        config.path = entry.resolve(&config.path);
        let path = &config.path;
        let name_a_file =
            "name a file, e.g. path = \"out/results.jsonl\" (relative to the pipeline file)";
        if path.is_dir() {
            return Err(entry.error(
                Some("path"),
                format!("path {} is a directory", path.display()),
                name_a_file,
            ));
        }
        if path.file_name().is_none() {
            return Err(entry.error(
                Some("path"),
                format!("path {} does not name a file", path.display()),
                name_a_file,
            ));
        }
        entry.writes_file("path", path)
    }

    fn describe(&self, spec: &SinkSpec, pipeline: &Pipeline) -> Result<String, ConnectorError> {
        Ok(format!(
            "file {}",
            sink_config(spec, pipeline)?.path.display()
        ))
    }

    /// Exactly once when the pipeline checkpoints, else at least once.
    fn build(&self, at: &SinkContext<'_>) -> Result<Box<dyn Sink>, ConnectorError> {
        let config = sink_config(at.spec, at.pipeline)?;
        let sink = if at.pipeline.checkpoints.enabled {
            FileSink::exactly_once(&config)?
        } else {
            FileSink::new(&config)?
        };
        Ok(Box::new(sink))
    }
}

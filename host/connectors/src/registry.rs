//! The connector registry: every source and sink type by the `type` name
//! of its `[[sources]]` or `[[sinks]]` entries, with what it takes to check
//! an entry when the pipeline is read, describe it, and build it when the
//! pipeline runs.
//!
//! A connector type parses its own settings (the entry's table without the
//! keys the pipeline handles) into its own config type, so the pipeline
//! crate knows no connector. [`Registry`] implements
//! [`sluice_config::Connectors`], which the pipeline reader asks.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use sluice_config::{ConfigError, Connectors, Entry, Pipeline, SinkSpec, SourceSpec};
use sluice_types::metrics::Metrics;
use sluice_types::{ConnectorError, Sink, Source};

/// What a source type needs to build the source of one subtask.
pub struct SourceContext<'a> {
    /// The pipeline (its name names consumer groups; its file anchors
    /// relative paths).
    pub pipeline: &'a Pipeline,
    /// The source's entry.
    pub spec: &'a SourceSpec,
    /// The index of the source in `[[sources]]`: its records'
    /// [`Position::source`](sluice_types::Position::source).
    pub index: u16,
    /// Which of the `spec.parallelism` subtasks this is, from 0.
    pub subtask: u32,
    /// The pipeline's metrics, for connectors that export their own (lag).
    pub metrics: Arc<Metrics>,
}

/// What a sink type needs to build its sink.
pub struct SinkContext<'a> {
    /// The pipeline (its name names transactional ids; its file anchors
    /// relative paths; with checkpoints on, sinks that can are exactly-once).
    pub pipeline: &'a Pipeline,
    /// The sink's entry.
    pub spec: &'a SinkSpec,
}

/// A source type: what `[[sources]] type = "<name>"` means.
pub trait SourceType: Send + Sync {
    /// The `type` of its entries.
    fn name(&self) -> &'static str;

    /// Whether its sources may read with several subtasks (`parallelism`).
    fn parallel(&self) -> bool {
        false
    }

    /// Check an entry's settings when the pipeline is read: parse them,
    /// refuse what the constructor would refuse, with the line.
    fn check(&self, entry: &mut Entry<'_>) -> Result<(), ConfigError>;

    /// What `sluice validate` says about the source, e.g. `file in.jsonl`.
    fn describe(&self, spec: &SourceSpec, pipeline: &Pipeline) -> Result<String, ConnectorError>;

    /// The topic the source reads, if it has topics: dead letters name it
    /// in their provenance.
    fn topic(&self, _spec: &SourceSpec) -> Option<String> {
        None
    }

    /// Build the source of one subtask.
    fn build(&self, at: &SourceContext<'_>) -> Result<Box<dyn Source>, ConnectorError>;
}

/// A sink type: what `[[sinks]] type = "<name>"` means.
pub trait SinkType: Send + Sync {
    /// The `type` of its entries.
    fn name(&self) -> &'static str;

    /// Check an entry's settings when the pipeline is read.
    fn check(&self, entry: &mut Entry<'_>) -> Result<(), ConfigError>;

    /// What `sluice validate` says about the sink, e.g. `stdout`.
    fn describe(&self, spec: &SinkSpec, pipeline: &Pipeline) -> Result<String, ConnectorError>;

    /// Build the sink.
    fn build(&self, at: &SinkContext<'_>) -> Result<Box<dyn Sink>, ConnectorError>;
}

/// Source and sink types by name, in the order they were added (which is
/// the order messages list them in).
#[derive(Default)]
pub struct Registry {
    sources: Vec<Box<dyn SourceType>>,
    sinks: Vec<Box<dyn SinkType>>,
}

impl Registry {
    /// A registry with no connector.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Add a source type.
    ///
    /// # Panics
    ///
    /// If a source type of that name is registered already.
    pub fn add_source(&mut self, source: impl SourceType + 'static) {
        assert!(
            self.source(source.name()).is_none(),
            "source type `{}` registered twice",
            source.name()
        );
        self.sources.push(Box::new(source));
    }

    /// Add a sink type.
    ///
    /// # Panics
    ///
    /// If a sink type of that name is registered already.
    pub fn add_sink(&mut self, sink: impl SinkType + 'static) {
        assert!(
            self.sink(sink.name()).is_none(),
            "sink type `{}` registered twice",
            sink.name()
        );
        self.sinks.push(Box::new(sink));
    }

    /// The source type called `name`.
    pub fn source(&self, name: &str) -> Option<&dyn SourceType> {
        self.sources
            .iter()
            .find(|s| s.name() == name)
            .map(|s| s.as_ref())
    }

    /// The sink type called `name`.
    pub fn sink(&self, name: &str) -> Option<&dyn SinkType> {
        self.sinks
            .iter()
            .find(|s| s.name() == name)
            .map(|s| s.as_ref())
    }

    fn source_of(&self, spec: &SourceSpec) -> Result<&dyn SourceType, ConnectorError> {
        self.source(&spec.connector).ok_or_else(|| {
            ConnectorError::Config(format!(
                "source `{}`: unknown type `{}`",
                spec.name, spec.connector
            ))
        })
    }

    fn sink_of(&self, spec: &SinkSpec) -> Result<&dyn SinkType, ConnectorError> {
        self.sink(&spec.connector).ok_or_else(|| {
            ConnectorError::Config(format!(
                "sink `{}`: unknown type `{}`",
                spec.name, spec.connector
            ))
        })
    }

    /// Build the source of one subtask, by its type.
    pub fn build_source(&self, at: &SourceContext<'_>) -> Result<Box<dyn Source>, ConnectorError> {
        self.source_of(at.spec)?.build(at)
    }

    /// Build a sink, by its type.
    pub fn build_sink(&self, at: &SinkContext<'_>) -> Result<Box<dyn Sink>, ConnectorError> {
        self.sink_of(at.spec)?.build(at)
    }

    /// What `sluice validate` says about a source.
    pub fn describe_source(
        &self,
        spec: &SourceSpec,
        pipeline: &Pipeline,
    ) -> Result<String, ConnectorError> {
        self.source_of(spec)?.describe(spec, pipeline)
    }

    /// What `sluice validate` says about a sink.
    pub fn describe_sink(
        &self,
        spec: &SinkSpec,
        pipeline: &Pipeline,
    ) -> Result<String, ConnectorError> {
        self.sink_of(spec)?.describe(spec, pipeline)
    }

    /// The topic a source reads, if its type has topics.
    pub fn source_topic(&self, spec: &SourceSpec) -> Option<String> {
        self.source(&spec.connector).and_then(|s| s.topic(spec))
    }
}

impl Connectors for Registry {
    fn source_types(&self) -> Vec<&str> {
        self.sources.iter().map(|s| s.name()).collect()
    }

    fn sink_types(&self) -> Vec<&str> {
        self.sinks.iter().map(|s| s.name()).collect()
    }

    fn parallel_source(&self, kind: &str) -> bool {
        self.source(kind).is_some_and(|s| s.parallel())
    }

    fn check_source(&self, entry: &mut Entry<'_>) -> Result<(), ConfigError> {
        match self.source(entry.kind()) {
            Some(source) => source.check(entry),
            None => Err(entry.unknown_type(&self.source_types())),
        }
    }

    fn check_sink(&self, entry: &mut Entry<'_>) -> Result<(), ConfigError> {
        match self.sink(entry.kind()) {
            Some(sink) => sink.check(entry),
            None => Err(entry.unknown_type(&self.sink_types())),
        }
    }
}

/// Parse a connector's settings when it is built or described (they were
/// checked, with lines, when the pipeline was read). `what` names the entry
/// in the error, e.g. "source `trips`".
pub fn parse_settings<T: DeserializeOwned>(
    what: &str,
    settings: &toml::Table,
) -> Result<T, ConnectorError> {
    settings
        .clone()
        .try_into()
        .map_err(|e| ConnectorError::Config(format!("{what}: {}", e.message().trim_end())))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use sluice_config::Connectors;

    use super::*;
    use crate::builtin;

    const PIPELINE: &str = "manifest_version = 1\nname = \"t\"\n\n[[sources]]\nname = \"trips\"\ntype = \"generator\"\ncount = 3\n\n[[sinks]]\nname = \"out\"\ntype = \"stdout\"\ninput = \"trips\"\n";

    fn read(text: &str) -> Result<Pipeline, ConfigError> {
        Pipeline::from_str(Path::new("p.toml"), text, &builtin())
    }

    #[test]
    fn builtin_types_in_message_order() {
        let registry = builtin();
        assert_eq!(
            registry.source_types(),
            ["generator", "turbines", "clicks", "file"]
        );
        assert_eq!(registry.sink_types(), ["file", "stdout"]);
        assert!(!registry.parallel_source("generator"));
    }

    #[test]
    fn reads_describes_and_builds_by_type() {
        let registry = builtin();
        let pipeline = read(PIPELINE).unwrap();
        let spec = &pipeline.sources[0];
        assert_eq!(spec.connector, "generator");
        assert_eq!(
            registry.describe_source(spec, &pipeline).unwrap(),
            "taxi generator"
        );
        assert_eq!(
            registry
                .describe_sink(&pipeline.sinks[0], &pipeline)
                .unwrap(),
            "stdout"
        );
        assert_eq!(registry.source_topic(spec), None);
        let at = SourceContext {
            pipeline: &pipeline,
            spec,
            index: 0,
            subtask: 0,
            metrics: Arc::default(),
        };
        let mut source = registry.build_source(&at).unwrap();
        assert_eq!(source.poll_batch(10).unwrap().unwrap().len(), 3);
        assert!(registry
            .build_sink(&SinkContext {
                pipeline: &pipeline,
                spec: &pipeline.sinks[0]
            })
            .is_ok());
    }

    #[test]
    fn settings_errors_name_the_line_and_the_types() {
        let err = read(&PIPELINE.replace("count = 3", "cout = 3")).unwrap_err();
        assert_eq!(err.line, Some(7));
        assert!(
            err.message
                .starts_with("source `trips` (generator): unknown field `cout`"),
            "{err}"
        );
        let err = read(&PIPELINE.replace("count = 3", "zones = 0")).unwrap_err();
        assert_eq!((err.line, err.message.as_str()), (Some(7), "source `trips` (generator): `zones` is 0, but there must be at least 1 zone; set e.g. `zones = 265` or leave it out for the default"));
        let err = read(&PIPELINE.replace("\"generator\"", "\"kinesis\"")).unwrap_err();
        assert_eq!(err.line, Some(6));
        assert_eq!(
            err.help.as_deref(),
            Some("known source types: generator, turbines, clicks, file")
        );
        let err = read(&PIPELINE.replace("type = \"stdout\"\n", "")).unwrap_err();
        assert_eq!(
            err.help.as_deref(),
            Some("set type = \"file\" or \"stdout\"")
        );
    }
}

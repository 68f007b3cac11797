//! The `kafka` source and sink types of the connector registry.

use sluice_config::{ConfigError, Entry, Pipeline, SinkSpec, SourceSpec};
use sluice_connectors::registry::{
    parse_settings, Registry, SinkContext, SinkType, SourceContext, SourceType,
};
use sluice_types::{ConnectorError, Sink, Source};

use crate::config::{Delivery, KafkaSinkConfig, KafkaSourceConfig};
use crate::sink::KafkaSink;
use crate::source::{KafkaSource, Subtask};

/// Add the `kafka` source and sink types to `registry`.
pub fn register(registry: &mut Registry) {
    registry.add_source(KafkaSourceType);
    registry.add_sink(KafkaSinkType);
}

/// `[[sources]] type = "kafka"`.
struct KafkaSourceType;

fn source_config(spec: &SourceSpec) -> Result<KafkaSourceConfig, ConnectorError> {
    parse_settings(&format!("source `{}`", spec.name), &spec.settings)
}

impl SourceType for KafkaSourceType {
    fn name(&self) -> &'static str {
        "kafka"
    }

    /// Partitions are dealt out over the subtasks.
    fn parallel(&self) -> bool {
        true
    }

    fn check(&self, entry: &mut Entry<'_>) -> Result<(), ConfigError> {
        entry.parse::<KafkaSourceConfig>().map(drop)
    }

    fn describe(&self, spec: &SourceSpec, _: &Pipeline) -> Result<String, ConnectorError> {
        let c = source_config(spec)?;
        let bounded = if c.stop_at_end {
            ", up to its end at start"
        } else {
            ""
        };
        Ok(format!(
            "kafka topic `{}` on {}, parallelism {}{bounded}",
            c.topic, c.bootstrap, spec.parallelism
        ))
    }

    fn topic(&self, spec: &SourceSpec) -> Option<String> {
        source_config(spec).ok().map(|c| c.topic)
    }

    fn build(&self, at: &SourceContext<'_>) -> Result<Box<dyn Source>, ConnectorError> {
        let config = source_config(at.spec)?;
        let subtask = Subtask {
            index: at.subtask,
            parallelism: at.spec.parallelism,
        };
        Ok(Box::new(KafkaSource::new(
            &config,
            &at.pipeline.name,
            &at.spec.name,
            at.index,
            subtask,
            at.metrics.clone(),
        )?))
    }
}

/// `[[sinks]] type = "kafka"`.
struct KafkaSinkType;

fn sink_config(spec: &SinkSpec) -> Result<KafkaSinkConfig, ConnectorError> {
    parse_settings(&format!("sink `{}`", spec.name), &spec.settings)
}

impl SinkType for KafkaSinkType {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn check(&self, entry: &mut Entry<'_>) -> Result<(), ConfigError> {
        entry.parse::<KafkaSinkConfig>().map(drop)
    }

    fn describe(&self, spec: &SinkSpec, pipeline: &Pipeline) -> Result<String, ConnectorError> {
        let c = sink_config(spec)?;
        let delivery = if c.delivery == Delivery::ExactlyOnce && pipeline.checkpoints.enabled {
            "exactly-once"
        } else {
            "at-least-once"
        };
        Ok(format!(
            "kafka topic `{}` on {}, {delivery}",
            c.topic, c.bootstrap
        ))
    }

    /// Transactional when the pipeline checkpoints (and the sink asks for
    /// exactly-once).
    fn build(&self, at: &SinkContext<'_>) -> Result<Box<dyn Sink>, ConnectorError> {
        let config = sink_config(at.spec)?;
        Ok(Box::new(KafkaSink::new(
            &config,
            &at.pipeline.name,
            &at.spec.name,
            at.pipeline.checkpoints.enabled,
        )?))
    }
}

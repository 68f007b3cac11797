//! Sources, sinks and control sources built from their specs: the one place
//! the dataflow names connector types.

use std::collections::HashMap;
use std::sync::Arc;

use sluice_config::{Pipeline, SinkKind, SourceKind, SourceSpec};
use sluice_connectors::{
    ClickGenerator, FileSink, FileSource, StdoutSink, TaxiGenerator, TurbineGenerator,
};
use sluice_kafka::{KafkaControl, KafkaSink, KafkaSource};
use sluice_types::metrics::Metrics;
use sluice_types::{ControlSource, Sink, Source};

use crate::error::DataflowError;
use crate::task::operator::SourceLabel;

/// The sinks of `pipeline`, by name; exactly-once where `checkpoints` are on
/// and the sink can be.
pub(crate) fn sinks(
    pipeline: &Pipeline,
    checkpoints: bool,
) -> Result<HashMap<String, Box<dyn Sink>>, DataflowError> {
    let mut sinks: HashMap<String, Box<dyn Sink>> = HashMap::new();
    for spec in &pipeline.sinks {
        let connector_err = |source| DataflowError::Connector {
            node: spec.name.clone(),
            source,
        };
        let sink: Box<dyn Sink> = match &spec.kind {
            SinkKind::File(c) if checkpoints => {
                Box::new(FileSink::exactly_once(c).map_err(connector_err)?)
            }
            SinkKind::File(c) => Box::new(FileSink::new(c).map_err(connector_err)?),
            SinkKind::Stdout(c) => Box::new(StdoutSink::new(c)),
            SinkKind::Kafka(c) => Box::new(
                KafkaSink::new(c, &pipeline.name, &spec.name, checkpoints)
                    .map_err(connector_err)?,
            ),
        };
        sinks.insert(spec.name.clone(), sink);
    }
    Ok(sinks)
}

/// Subtask `subtask` of source `spec`, the `index`-th source of `pipeline`
/// (its records carry that index in their positions).
pub(crate) fn source(
    pipeline: &Pipeline,
    spec: &SourceSpec,
    index: usize,
    subtask: usize,
    metrics: &Arc<Metrics>,
) -> Result<Box<dyn Source>, DataflowError> {
    let connector_err = |source| DataflowError::Connector {
        node: spec.name.clone(),
        source,
    };
    let source: Box<dyn Source> = match &spec.kind {
        SourceKind::Generator(c) => {
            Box::new(TaxiGenerator::new(c, index as u16).map_err(connector_err)?)
        }
        SourceKind::Turbines(c) => {
            Box::new(TurbineGenerator::new(c, index as u16).map_err(connector_err)?)
        }
        SourceKind::Clicks(c) => {
            Box::new(ClickGenerator::new(c, index as u16).map_err(connector_err)?)
        }
        SourceKind::File(c) => Box::new(FileSource::new(c, index as u16).map_err(connector_err)?),
        SourceKind::Kafka(c) => {
            let at = sluice_kafka::Subtask {
                index: subtask as u32,
                parallelism: spec.parallelism,
            };
            Box::new(
                KafkaSource::new(
                    c,
                    &pipeline.name,
                    &spec.name,
                    index as u16,
                    at,
                    metrics.clone(),
                )
                .map_err(connector_err)?,
            )
        }
    };
    Ok(source)
}

/// The sources as provenance names them (dead letters, errors), by index.
pub(crate) fn source_labels(pipeline: &Pipeline) -> Arc<Vec<SourceLabel>> {
    Arc::new(
        pipeline
            .sources
            .iter()
            .map(|s| SourceLabel {
                name: s.name.clone(),
                topic: match &s.kind {
                    SourceKind::Kafka(c) => Some(c.topic.clone()),
                    _ => None,
                },
            })
            .collect(),
    )
}

/// The `[control]` sources beside the control directory (which comes first).
pub(crate) fn control_sources(
    pipeline: &Pipeline,
) -> Result<Vec<Box<dyn ControlSource>>, DataflowError> {
    let mut sources: Vec<Box<dyn ControlSource>> = Vec::new();
    if let Some(k) = &pipeline.control.kafka {
        sources.push(Box::new(KafkaControl::new(k, &pipeline.name).map_err(
            |source| DataflowError::Connector {
                node: "[control.kafka]".into(),
                source,
            },
        )?));
    }
    Ok(sources)
}

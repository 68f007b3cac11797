//! Sources, sinks and control sources built from their specs, through the
//! connector registry ([`crate::connectors`]): the dataflow names no
//! connector type but Kafka's control topic.

use std::collections::HashMap;
use std::sync::Arc;

use sluice_config::{Pipeline, SourceSpec};
use sluice_connectors::{Registry, SinkContext, SourceContext};
use sluice_kafka::KafkaControl;
use sluice_types::metrics::Metrics;
use sluice_types::{ControlSource, Sink, Source};

use crate::error::DataflowError;
use crate::task::operator::SourceLabel;

/// The sinks of `pipeline`, by name, built by their types in `registry`;
/// exactly-once where the pipeline checkpoints and the sink can be.
pub(crate) fn sinks(
    registry: &Registry,
    pipeline: &Pipeline,
) -> Result<HashMap<String, Box<dyn Sink>>, DataflowError> {
    let mut sinks: HashMap<String, Box<dyn Sink>> = HashMap::new();
    for spec in &pipeline.sinks {
        let sink = registry
            .build_sink(&SinkContext { pipeline, spec })
            .map_err(|source| DataflowError::Connector {
                node: spec.name.clone(),
                source,
            })?;
        sinks.insert(spec.name.clone(), sink);
    }
    Ok(sinks)
}

/// Subtask `subtask` of source `spec`, the `index`-th source of `pipeline`
/// (its records carry that index in their positions), built by its type in
/// `registry`.
pub(crate) fn source(
    registry: &Registry,
    pipeline: &Pipeline,
    spec: &SourceSpec,
    index: usize,
    subtask: usize,
    metrics: &Arc<Metrics>,
) -> Result<Box<dyn Source>, DataflowError> {
    let at = SourceContext {
        pipeline,
        spec,
        index: index as u16,
        subtask: subtask as u32,
        metrics: metrics.clone(),
    };
    registry
        .build_source(&at)
        .map_err(|source| DataflowError::Connector {
            node: spec.name.clone(),
            source,
        })
}

/// The sources as provenance names them (dead letters, errors), by index.
pub(crate) fn source_labels(registry: &Registry, pipeline: &Pipeline) -> Arc<Vec<SourceLabel>> {
    Arc::new(
        pipeline
            .sources
            .iter()
            .map(|s| SourceLabel {
                name: s.name.clone(),
                topic: registry.source_topic(s),
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

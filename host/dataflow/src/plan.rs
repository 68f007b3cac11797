//! The physical graph of a pipeline, planned before anything starts: its
//! nodes (each source, operator and sink, with its subtasks) and its edges
//! (one per stream a consumer reads, with how records spread over the
//! consumer's subtasks). The launch turns the edges into channels
//! and the nodes into tasks.
//!
//! Producers (sources first, then operators, in pipeline order) number
//! their subtasks pipeline-wide: control messages carry that id, so that a
//! consumer can merge watermarks, barriers and ends per producer.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use sluice_config::{OperatorSpec, Pipeline};

use crate::router::Partition;
use crate::settings::Settings;

/// Records per batch when neither the flag nor the pipeline sets it.
pub const DEFAULT_BATCH_SIZE: usize = 1024;

/// Batch sizes and the sources' batch timeout: the CLI flag over the
/// pipeline file over the default. Batching is a speed knob only.
#[derive(Clone, Copy)]
pub(crate) struct Batching {
    pub(crate) size: usize,
    pub(crate) timeout: Duration,
    flag: Option<usize>,
}

impl Batching {
    fn new(pipeline: &Pipeline, settings: &Settings) -> Self {
        let size = settings
            .batch_size
            .or(pipeline.batch_size)
            .unwrap_or(DEFAULT_BATCH_SIZE)
            .max(1);
        let timeout = Duration::from_millis(pipeline.batch_timeout.unwrap_or(0).max(0) as u64);
        Batching {
            size,
            timeout,
            flag: settings.batch_size,
        }
    }

    /// An operator's batch size: the flag, else its own, else the pipeline's.
    pub(crate) fn of(&self, op: &OperatorSpec) -> usize {
        self.flag.or(op.batch_size).unwrap_or(self.size).max(1)
    }
}

/// What a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NodeKind {
    Source,
    Operator,
    Sink,
}

/// One source, operator or sink of the pipeline.
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) name: String,
    pub(crate) kind: NodeKind,
    /// How many subtasks run it (a sink has one).
    pub(crate) parallelism: usize,
    /// Pipeline-wide producer ids of its subtasks (none for a sink).
    pub(crate) producer_ids: Vec<u32>,
    /// The producer ids of every subtask that feeds it (none for a source).
    pub(crate) upstream: BTreeSet<u32>,
    /// How many `End`s each of its subtasks must see before it is done.
    pub(crate) expected_ends: usize,
}

/// A stream read by one consumer: one entry of its `inputs`.
#[derive(Debug)]
pub(crate) struct Edge {
    /// The stream as the consumer names it: `<producer>` (main output) or
    /// `<producer>.<side>`.
    pub(crate) stream: String,
    /// The consumer's name.
    pub(crate) consumer: String,
    /// How the stream spreads over the consumer's subtasks.
    pub(crate) partition: Partition,
    /// Records per batch sent to the consumer (its batch size).
    pub(crate) batch_size: usize,
}

/// The physical graph of a pipeline.
pub(crate) struct PhysicalPlan {
    /// Sources, then operators, then sinks, in pipeline order.
    pub(crate) nodes: Vec<Node>,
    /// Consumers in node order, each with its inputs in its order.
    pub(crate) edges: Vec<Edge>,
    pub(crate) batching: Batching,
}

/// The producer of a stream: `op.side` is produced by `op`.
fn head(stream: &str) -> &str {
    stream.split('.').next().unwrap_or(stream)
}

impl PhysicalPlan {
    /// Plan `pipeline` (validated: every input names a producer).
    pub(crate) fn new(pipeline: &Pipeline, settings: &Settings) -> Self {
        let batching = Batching::new(pipeline, settings);
        let mut nodes = Vec::new();
        let mut next_id = 0u32;
        let producers = pipeline
            .sources
            .iter()
            .map(|s| (&s.name, NodeKind::Source, s.parallelism))
            .chain(
                pipeline
                    .operators
                    .iter()
                    .map(|o| (&o.name, NodeKind::Operator, o.parallelism)),
            );
        for (name, kind, n) in producers {
            nodes.push(Node {
                name: name.clone(),
                kind,
                parallelism: n as usize,
                producer_ids: (next_id..next_id + n).collect(),
                upstream: BTreeSet::new(),
                expected_ends: 0,
            });
            next_id += n;
        }
        for s in &pipeline.sinks {
            nodes.push(Node {
                name: s.name.clone(),
                kind: NodeKind::Sink,
                parallelism: 1,
                producer_ids: Vec::new(),
                upstream: BTreeSet::new(),
                expected_ends: 0,
            });
        }
        // Subtask counts and ids of every producer, by name.
        let producers = &nodes[..pipeline.sources.len() + pipeline.operators.len()];
        let parallelism: HashMap<&str, usize> = producers
            .iter()
            .map(|n| (n.name.as_str(), n.parallelism))
            .collect();
        let ids: HashMap<&str, Vec<u32>> = producers
            .iter()
            .map(|n| (n.name.as_str(), n.producer_ids.clone()))
            .collect();

        // Consumers: (name, inputs, parallelism, keyed, batch size).
        let consumers = pipeline
            .operators
            .iter()
            .map(|o| {
                (
                    &o.name,
                    &o.inputs,
                    o.parallelism as usize,
                    o.key_by.is_some(),
                    batching.of(o),
                )
            })
            .chain(
                pipeline
                    .sinks
                    .iter()
                    .map(|s| (&s.name, &s.inputs, 1, false, batching.size)),
            );
        let mut edges = Vec::new();
        let mut inboxes: HashMap<String, (BTreeSet<u32>, usize)> = HashMap::new();
        for (name, inputs, consumer_parallelism, keyed, batch_size) in consumers {
            let upstream = inputs
                .iter()
                .flat_map(|i| ids.get(head(i)).cloned().unwrap_or_default())
                .collect();
            let expected_ends = inputs
                .iter()
                .map(|i| parallelism.get(head(i)).copied().unwrap_or(0))
                .sum();
            inboxes.insert(name.clone(), (upstream, expected_ends));
            for input in inputs {
                let partition = if keyed {
                    Partition::Keyed
                } else if Some(consumer_parallelism) == parallelism.get(head(input)).copied() {
                    Partition::Forward
                } else {
                    Partition::RoundRobin
                };
                edges.push(Edge {
                    stream: input.clone(),
                    consumer: name.clone(),
                    partition,
                    batch_size,
                });
            }
        }
        for node in &mut nodes {
            if let Some((upstream, expected_ends)) = inboxes.remove(&node.name) {
                node.upstream = upstream;
                node.expected_ends = expected_ends;
            }
        }
        PhysicalPlan {
            nodes,
            edges,
            batching,
        }
    }

    /// The node named `name`.
    pub(crate) fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .expect("every node of the pipeline is planned")
    }

    /// The edges out of `producer`'s main output (`side == None`) and, by
    /// side-output name, out of its side outputs.
    pub(crate) fn outputs(&self, producer: &str) -> (Vec<&Edge>, HashMap<String, Vec<&Edge>>) {
        let prefix = format!("{producer}.");
        let mut main = Vec::new();
        let mut sides: HashMap<String, Vec<&Edge>> = HashMap::new();
        for e in &self.edges {
            if e.stream == producer {
                main.push(e);
            } else if let Some(side) = e.stream.strip_prefix(&prefix) {
                sides.entry(side.to_string()).or_default().push(e);
            }
        }
        (main, sides)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_name_the_producer_of_main_and_side_outputs() {
        assert_eq!(head("parse"), "parse");
        assert_eq!(head("parse.dead-letter"), "parse");
    }
}

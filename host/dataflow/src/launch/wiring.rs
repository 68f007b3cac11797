//! Channels from the plan's edges: one bounded channel per consumer
//! subtask, whose sender every producer subtask feeding it holds (in its
//! router), so that the channel closes when all its producers are gone.

use std::collections::HashMap;

use sluice_types::Message;
use tokio::sync::mpsc::{channel, Receiver, Sender};

use crate::plan::{NodeKind, PhysicalPlan};
use crate::router::{Router, Target};

/// The channels of a run, before the tasks take their ends.
pub(crate) struct Wiring {
    /// Per consumer, one sender per subtask.
    senders: HashMap<String, Vec<Sender<Message>>>,
    /// Per consumer, one receiver per subtask, until its tasks take them.
    receivers: HashMap<String, Vec<Receiver<Message>>>,
}

impl Wiring {
    /// A channel of `capacity` batches for every subtask of every operator and sink.
    pub(crate) fn new(plan: &PhysicalPlan, capacity: usize) -> Self {
        let mut senders = HashMap::new();
        let mut receivers = HashMap::new();
        for node in plan.nodes.iter().filter(|n| n.kind != NodeKind::Source) {
            let (txs, rxs): (Vec<_>, Vec<_>) = (0..node.parallelism)
                .map(|_| channel::<Message>(capacity))
                .unzip();
            senders.insert(node.name.clone(), txs);
            receivers.insert(node.name.clone(), rxs);
        }
        Wiring { senders, receivers }
    }

    /// The router of subtask `subtask` of producer `node`.
    pub(crate) fn router(&self, plan: &PhysicalPlan, node: &str, subtask: usize) -> Router {
        let target = |e: &crate::plan::Edge| {
            let senders = self.senders.get(&e.consumer).cloned().unwrap_or_default();
            Target::new(e.consumer.clone(), senders, e.partition, e.batch_size)
        };
        let (main, sides) = plan.outputs(node);
        let main = main.into_iter().map(target).collect();
        let sides = sides
            .into_iter()
            .map(|(side, edges)| (side, edges.into_iter().map(target).collect()))
            .collect();
        let producer = plan
            .node(node)
            .producer_ids
            .get(subtask)
            .copied()
            .expect("every producer has an id");
        Router::new(node, subtask, producer, main, sides)
    }

    /// The receivers of `consumer`'s subtasks (taken once).
    pub(crate) fn take_receivers(&mut self, consumer: &str) -> Vec<Receiver<Message>> {
        self.receivers
            .remove(consumer)
            .expect("every operator and sink has an inbox")
    }
}

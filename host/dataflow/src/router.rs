//! Routing records from a producing subtask to the subtasks that consume its
//! streams: by key group for keyed consumers, forward or round-robin for the
//! rest. Records are buffered per target and sent in batches over bounded
//! channels, so a slow consumer backpressures its producers.

use std::collections::HashMap;

use sluice_state::keygroup::{key_group, subtask_of, MAX_PARALLELISM};
use sluice_types::{Message, Record};
use tokio::sync::mpsc::Sender;

use crate::error::DataflowError;

/// How a stream is spread over the subtasks of one consumer.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Partition {
    /// By key group of the record key.
    Keyed,
    /// Producer subtask i feeds consumer subtask i (equal parallelism).
    Forward,
    /// Batches go to consumer subtasks in turn.
    RoundRobin,
}

/// One consumer of a stream, seen from one producing subtask.
pub(crate) struct Target {
    pub(crate) consumer: String,
    pub(crate) senders: Vec<Sender<Message>>,
    pub(crate) partition: Partition,
    /// Records per batch sent to it (the consumer's `batch_size`).
    batch_size: usize,
    /// Per consumer subtask: records, and the watermark before each.
    buffers: Vec<(Vec<Record>, Vec<i64>)>,
    next: usize,
}

impl Target {
    pub(crate) fn new(
        consumer: String,
        senders: Vec<Sender<Message>>,
        partition: Partition,
        batch_size: usize,
    ) -> Self {
        let buffers = senders.iter().map(|_| (Vec::new(), Vec::new())).collect();
        Target {
            consumer,
            senders,
            partition,
            batch_size: batch_size.max(1),
            buffers,
            next: 0,
        }
    }
}

/// Everything one producing subtask sends downstream.
pub(crate) struct Router {
    /// Name of the producing node, for errors.
    node: String,
    subtask: usize,
    /// Pipeline-wide id of this producing subtask, sent with control messages.
    producer: u32,
    /// Consumers of the main output.
    main: Vec<Target>,
    /// Consumers of side outputs, by side-output name.
    sides: HashMap<String, Vec<Target>>,
    /// Side outputs emitted that nothing reads, with a count (warned once).
    pub(crate) unrouted: HashMap<String, u64>,
}

impl Router {
    pub(crate) fn new(
        node: &str,
        subtask: usize,
        producer: u32,
        main: Vec<Target>,
        sides: HashMap<String, Vec<Target>>,
    ) -> Self {
        Router {
            node: node.to_string(),
            subtask,
            producer,
            main,
            sides,
            unrouted: HashMap::new(),
        }
    }

    /// Route one record of the main output (`side == None`) or of a side
    /// output; `watermark` is this producer's output watermark just before
    /// it (see [`Message::Batch`]).
    pub(crate) fn push(
        &mut self,
        side: Option<&str>,
        record: Record,
        watermark: i64,
    ) -> Result<(), DataflowError> {
        let targets = match side {
            None => &mut self.main,
            Some(name) => match self.sides.get_mut(name) {
                Some(t) => t,
                None => {
                    let n = self.unrouted.entry(name.to_string()).or_insert(0);
                    if *n == 0 {
                        tracing::warn!(
                            "`{}` emits to side output `{name}`, which nothing reads; add a sink with input = \"{}.{name}\" to keep these records",
                            self.node, self.node
                        );
                    }
                    *n += 1;
                    return Ok(());
                }
            },
        };
        let (node, subtask, producer) = (&self.node, self.subtask, self.producer);
        let last = targets.len().saturating_sub(1);
        // Clone for all but the last consumer of the stream.
        let mut record = Some(record);
        for (i, t) in targets.iter_mut().enumerate() {
            let r = if i == last {
                record.take().expect("moved only at the last target")
            } else {
                record.clone().expect("present until the last target")
            };
            let idx = match t.partition {
                Partition::Keyed => {
                    let kg = key_group(r.key.as_deref().unwrap_or(&[]), MAX_PARALLELISM);
                    subtask_of(kg, MAX_PARALLELISM, t.senders.len() as u32) as usize
                }
                Partition::Forward => subtask % t.senders.len(),
                Partition::RoundRobin => t.next,
            };
            t.buffers[idx].0.push(r);
            t.buffers[idx].1.push(watermark);
            if t.buffers[idx].0.len() >= t.batch_size {
                send(node, producer, t, idx)?;
                if let Partition::RoundRobin = t.partition {
                    t.next = (t.next + 1) % t.senders.len();
                }
            }
        }
        Ok(())
    }

    /// Send every partly filled buffer.
    pub(crate) fn flush(&mut self) -> Result<(), DataflowError> {
        let (node, producer) = (&self.node, self.producer);
        for t in self
            .main
            .iter_mut()
            .chain(self.sides.values_mut().flatten())
        {
            for idx in 0..t.buffers.len() {
                if !t.buffers[idx].0.is_empty() {
                    send(node, producer, t, idx)?;
                }
            }
            if let Partition::RoundRobin = t.partition {
                t.next = (t.next + 1) % t.senders.len();
            }
        }
        Ok(())
    }

    /// Flush, then send a control message (made by `message` from this
    /// producer's id) to every consumer subtask of every output, after the
    /// records routed before it.
    pub(crate) fn broadcast(
        &mut self,
        message: impl Fn(u32) -> Message,
    ) -> Result<(), DataflowError> {
        self.flush()?;
        for t in self
            .main
            .iter_mut()
            .chain(self.sides.values_mut().flatten())
        {
            for s in &t.senders {
                s.blocking_send(message(self.producer)).map_err(|_| {
                    DataflowError::Disconnected {
                        node: self.node.clone(),
                        peer: t.consumer.clone(),
                    }
                })?;
            }
        }
        Ok(())
    }

    /// Flush, then tell every consumer subtask that this producer is done
    /// (`exhausted`: its input ended, rather than being stopped).
    pub(crate) fn finish(&mut self, exhausted: bool) -> Result<(), DataflowError> {
        self.broadcast(|from| Message::End { from, exhausted })
    }
}

fn send(node: &str, from: u32, t: &mut Target, idx: usize) -> Result<(), DataflowError> {
    let (records, watermarks) = std::mem::take(&mut t.buffers[idx]);
    t.senders[idx]
        .blocking_send(Message::Batch {
            from,
            records,
            watermarks,
        })
        .map_err(|_| DataflowError::Disconnected {
            node: node.to_string(),
            peer: t.consumer.clone(),
        })
}

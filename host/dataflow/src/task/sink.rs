//! A sink subtask: it aligns checkpoint barriers over its inputs, writes,
//! pre-commits its output on each barrier and commits it once the
//! checkpoint is complete.

use std::time::Duration;

use sluice_types::metrics::NodeCounters;
use sluice_types::{Message, Sink, SinkSnapshot};
use tokio::sync::mpsc::Receiver;

use crate::checkpoint::{Ack, Aligner, Offer};
use crate::error::DataflowError;

/// A sink task and what it needs for checkpoints.
pub(crate) struct SinkTask {
    pub(crate) name: String,
    pub(crate) expected_ends: usize,
    pub(crate) counters: NodeCounters,
    pub(crate) aligner: Aligner,
    pub(crate) acks: Option<std::sync::mpsc::Sender<Ack>>,
    pub(crate) completed: tokio::sync::watch::Receiver<u64>,
    pub(crate) final_id: tokio::sync::watch::Receiver<u64>,
    pub(crate) restore: Option<(u64, SinkSnapshot)>,
    /// The newest checkpoint committed to the sink.
    pub(crate) committed: u64,
    /// The newest checkpoint that failed.
    pub(crate) failed: tokio::sync::watch::Receiver<u64>,
    /// How long a sink may wait for a checkpoint to complete.
    pub(crate) commit_timeout: Duration,
}

impl SinkTask {
    pub(crate) fn run(
        mut self,
        mut sink: Box<dyn Sink>,
        mut rx: Receiver<Message>,
    ) -> Result<(), DataflowError> {
        let name = self.name.clone();
        let err = |source| DataflowError::Connector {
            node: name.clone(),
            source,
        };
        sink.start(self.restore.as_ref().map(|(id, s)| (*id, s)))
            .map_err(err)?;
        let handle = tokio::runtime::Handle::current();
        self.committed = self.restore.as_ref().map_or(0, |(id, _)| *id);
        let mut ends = 0;
        while ends < self.expected_ends || !self.aligner.idle() {
            let message = match self.aligner.replay() {
                Some(m) => Some(m),
                None => {
                    if self.acks.is_none() {
                        rx.blocking_recv()
                    } else {
                        // Wake up for completed checkpoints too, to commit them.
                        let completed = &mut self.completed;
                        let got = handle.block_on(async {
                            tokio::select! {
                                m = rx.recv() => Some(m),
                                _ = completed.changed() => None,
                            }
                        });
                        let done = *self.completed.borrow();
                        if done > self.committed {
                            sink.commit(done).map_err(err)?;
                            self.committed = done;
                        }
                        match got {
                            Some(m) => m,
                            None => continue,
                        }
                    }
                }
            };
            let Some(message) = message else {
                return Err(DataflowError::Disconnected {
                    node: self.name.clone(),
                    peer: "an upstream node".into(),
                });
            };
            match self.aligner.offer(message) {
                Offer::Held => {}
                Offer::Aligned(id, alignment) => self.pre_commit(&mut *sink, id, alignment)?,
                Offer::Handle(Message::Batch { records, .. }) => {
                    sink.write(&records).map_err(err)?;
                    self.counters.records_in.inc_by(records.len() as u64);
                }
                Offer::Handle(Message::End { from, .. }) => {
                    ends += 1;
                    if let Some((id, alignment)) = self.aligner.ended(from) {
                        self.pre_commit(&mut *sink, id, alignment)?;
                    }
                }
                Offer::Handle(_) => {}
            }
        }
        let Some(acks) = &self.acks else {
            return sink.flush().map_err(err);
        };
        // The end: pre-commit the rest, and commit it with the final checkpoint.
        let _ = acks.send(Ack::SinkEnded {
            name: self.name.clone(),
        });
        let final_id = &mut self.final_id;
        let Ok(id) = handle.block_on(final_id.wait_for(|v| *v > 0)).map(|v| *v) else {
            return Ok(());
        };
        let snapshot = sink.pre_commit(id).map_err(err)?;
        let _ = acks.send(Ack::SinkDone {
            name: self.name.clone(),
            snapshot,
        });
        let completed = &mut self.completed;
        if handle.block_on(completed.wait_for(|v| *v >= id)).is_ok() {
            sink.commit(id).map_err(err)?;
        }
        Ok(())
    }

    fn pre_commit(
        &mut self,
        sink: &mut dyn Sink,
        id: u64,
        alignment: Duration,
    ) -> Result<(), DataflowError> {
        let err = |source| DataflowError::Connector {
            node: self.name.clone(),
            source,
        };
        let snapshot = sink.pre_commit(id).map_err(err)?;
        if let Some(acks) = &self.acks {
            let _ = acks.send(Ack::Sink {
                id,
                name: self.name.clone(),
                snapshot,
                alignment,
            });
        }
        // A sink with no room for another pending pre-commit waits here
        // (backpressure) until the checkpoint it needs is complete.
        if let Some(wait) = sink.awaiting_commit() {
            let handle = tokio::runtime::Handle::current();
            let (completed, failed) = (&mut self.completed, &mut self.failed);
            let timeout = self.commit_timeout;
            // A later complete checkpoint covers `wait` too; if the one this
            // sink just pre-committed (`id`) fails, no later one can complete
            // while the sink waits: stop rather than hang.
            let reached = handle.block_on(async {
                tokio::time::timeout(timeout, async {
                    tokio::select! {
                        r = completed.wait_for(|v| *v >= wait) => r.map(|v| *v),
                        _ = failed.wait_for(|v| *v >= id) => Ok(0),
                    }
                })
                .await
            });
            match reached {
                Ok(Ok(0)) => {
                    return Err(DataflowError::Checkpoint(format!(
                        "checkpoint {id} failed while sink `{}` held two pre-committed transactions; it cannot take more input\n  help: see the checkpoint's failure above; run again to recover from the last complete checkpoint",
                        self.name
                    )))
                }
                Ok(Ok(done)) => {
                    sink.commit(done).map_err(err)?;
                    self.committed = self.committed.max(done);
                }
                Ok(Err(_)) => return Err(DataflowError::Disconnected { node: self.name.clone(), peer: "the checkpoint coordinator".into() }),
                Err(_) => {
                    return Err(DataflowError::Checkpoint(format!(
                        "sink `{}` waited {:?} for checkpoint {wait} to complete before it could write more; the checkpoint did not complete\n  help: look for the checkpoint's failure above; the pipeline restarts from the last complete checkpoint",
                        self.name, self.commit_timeout
                    )))
                }
            }
        }
        Ok(())
    }
}

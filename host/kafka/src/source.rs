//! The Kafka source: every partition of one topic, assigned explicitly (no
//! consumer-group rebalancing: Sluice's checkpoints, not the group, own the
//! offsets), read from the offsets a restored checkpoint recorded.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message, Timestamp};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sluice_types::metrics::Metrics;
use sluice_types::{ConnectorError, Header, Position, Record, Source};

use crate::client::{client_config, client_error, kafka_error, transient, warn_now, CALL_TIMEOUT};
use crate::config::{KafkaSourceConfig, StartOffset};

/// How long one poll waits for the first record before returning an empty
/// batch, so that the node can send watermarks and barriers while idle.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// How long a finishing source waits for its last offset commit.
const FINAL_COMMIT_WAIT: Duration = Duration::from_secs(10);

/// Consumer context: turns librdkafka's statistics into lag gauges.
struct LagContext {
    topic: String,
    read_committed: bool,
    metrics: Arc<Metrics>,
    node: String,
    gauges: Mutex<HashMap<i32, Gauge<i64, std::sync::atomic::AtomicI64>>>,
}

impl ClientContext for LagContext {
    fn error(&self, error: KafkaError, reason: &str) {
        client_error(error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        let mut gauges = self.gauges.lock().unwrap_or_else(|p| p.into_inner());
        let mut max = 0;
        for (&p, s) in topic.partitions.iter().filter(|(&p, _)| p >= 0) {
            // The end a reader can reach: the last stable offset under read_committed.
            let end = if self.read_committed && s.ls_offset >= 0 {
                s.ls_offset
            } else {
                s.hi_offset
            };
            // Before the first record of a partition reaches the source, its
            // fetch position stands in for the read position.
            let position = if s.app_offset >= 0 {
                s.app_offset
            } else {
                s.next_offset
            };
            if end < 0 || position < 0 {
                continue;
            }
            let lag = (end - position).max(0);
            max = max.max(lag);
            gauges
                .entry(p)
                .or_insert_with(|| self.metrics.partition_lag(&self.node, p as u32))
                .set(lag);
        }
        self.metrics.records_lag_max(&self.node).set(max);
    }
}

impl ConsumerContext for LagContext {}

/// Which parallel subtask of a source this is.
#[derive(Clone, Copy, Debug)]
pub struct Subtask {
    /// 0-based index.
    pub index: u32,
    /// How many subtasks read the source.
    pub parallelism: u32,
}

impl Default for Subtask {
    fn default() -> Self {
        Subtask {
            index: 0,
            parallelism: 1,
        }
    }
}

/// A source reading the partitions of one Kafka topic dealt to its subtask.
pub struct KafkaSource {
    name: String,
    index: u16,
    config: KafkaSourceConfig,
    /// Shared with the thread of the final offset commit (see `finish`).
    consumer: Arc<BaseConsumer<LagContext>>,
    /// The offsets of the last completed checkpoint, committed again,
    /// synchronously, when the source finishes.
    last_commit: Option<TopicPartitionList>,
    partitions: Vec<i32>,
    /// Next offset per partition from a restored checkpoint.
    resume: BTreeMap<u32, u64>,
    assigned: bool,
    /// With `stop_at_end`: the end offset of each partition when the source started.
    ends: HashMap<i32, i64>,
    /// With `stop_at_end`: partitions read up to their end.
    done: HashSet<i32>,
}

impl KafkaSource {
    /// Connect and look up the topic's partitions; subtask `at` reads
    /// partitions `p` with `p % parallelism == index`. `pipeline` and `name`
    /// make the default consumer group; `index` is the source's position in
    /// the pipeline (for record provenance).
    pub fn new(
        config: &KafkaSourceConfig,
        pipeline: &str,
        name: &str,
        index: u16,
        at: Subtask,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ConnectorError> {
        let bootstrap = config.bootstrap.as_str();
        let group = config
            .group
            .clone()
            .unwrap_or_else(|| format!("sluice.{pipeline}.{name}"));
        let context = LagContext {
            topic: config.topic.clone(),
            read_committed: config.read_committed,
            metrics,
            node: name.to_string(),
            gauges: Mutex::default(),
        };
        let isolation = if config.read_committed {
            "read_committed"
        } else {
            "read_uncommitted"
        };
        let consumer: BaseConsumer<LagContext> = client_config(
            bootstrap,
            &[
                ("group.id", group.as_str()),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                (
                    "enable.partition.eof",
                    if config.stop_at_end { "true" } else { "false" },
                ),
                ("isolation.level", isolation),
                ("statistics.interval.ms", "1000"),
                ("allow.auto.create.topics", "false"),
                // A checkpointed offset that retention deleted is an error, not a silent jump.
                ("auto.offset.reset", "error"),
                // Larger fetches: throughput over latency, within librdkafka's bounds.
                ("fetch.wait.max.ms", "50"),
                ("queued.min.messages", "200000"),
            ],
            &config.properties,
        )
        .create_with_context(context)
        .map_err(|e| {
            kafka_error(
                format_args!("source `{name}`: creating the consumer"),
                bootstrap,
                e,
            )
        })?;
        let partitions = match crate::admin::partitions(bootstrap, &config.topic) {
            Ok(Some(n)) => {
                let mine: Vec<i32> = (0..n as i32).filter(|p| *p as u32 % at.parallelism.max(1) == at.index).collect();
                if mine.is_empty() {
                    tracing::warn!(source = name, "subtask {} of {} has no partition of `{}` ({n} partitions): it stays idle", at.index, at.parallelism, config.topic);
                }
                mine
            }
            Ok(None) => {
                return Err(ConnectorError::Config(format!(
                    "source `{name}`: topic `{}` does not exist on {bootstrap}\n  help: create it (`sluice kafka create-topic {} --partitions 4`) or load data into it (`sluice kafka produce`)",
                    config.topic, config.topic
                )))
            }
            Err(e) => return Err(e),
        };
        Ok(KafkaSource {
            name: name.to_string(),
            index,
            config: config.clone(),
            consumer: Arc::new(consumer),
            last_commit: None,
            partitions,
            resume: BTreeMap::new(),
            assigned: false,
            ends: HashMap::new(),
            done: HashSet::new(),
        })
    }

    fn err(&self, what: impl std::fmt::Display, e: KafkaError) -> ConnectorError {
        kafka_error(
            format_args!("source `{}`: {what}", self.name),
            &self.config.bootstrap,
            e,
        )
    }

    /// Assign every partition at its start offset (checkpoint, or configured).
    fn assign(&mut self) -> Result<(), ConnectorError> {
        let mut tpl = TopicPartitionList::new();
        for &p in &self.partitions {
            let offset = match self.resume.get(&(p as u32)) {
                Some(&next) => Offset::Offset(next as i64),
                None if self.config.start == StartOffset::Latest => Offset::End,
                None => Offset::Beginning,
            };
            tpl.add_partition_offset(&self.config.topic, p, offset)
                .map_err(|e| self.err("assigning partitions", e))?;
            if !self.config.stop_at_end && !matches!(offset, Offset::Offset(_)) {
                continue;
            }
            let (low, high) = self
                .consumer
                .fetch_watermarks(&self.config.topic, p, CALL_TIMEOUT)
                .map_err(|e| self.err(format_args!("reading the offsets of partition {p}"), e))?;
            if let Offset::Offset(o) = offset {
                if o < low || o > high {
                    return Err(ConnectorError::Remote {
                        service: "kafka",
                        message: format!(
                            "source `{}`: the checkpoint resumes partition {p} of `{}` at offset {o}, but the partition holds offsets {low}..{high}{}\n  help: restore another checkpoint with `sluice run --from`, or start over with a new state dir",
                            self.name,
                            self.config.topic,
                            if o < low { " (deleted by retention?)" } else { " (was the topic recreated?)" }
                        ),
                    });
                }
            }
            if self.config.stop_at_end {
                self.ends.insert(p, high);
                let start = match offset {
                    Offset::Offset(o) => o,
                    Offset::End => high,
                    _ => low,
                };
                if start >= high {
                    self.done.insert(p);
                }
            }
        }
        self.consumer
            .assign(&tpl)
            .map_err(|e| self.err("assigning partitions", e))?;
        self.assigned = true;
        tracing::info!(source = %self.name, "reading partition(s) {:?} of `{}`", self.partitions, self.config.topic);
        Ok(())
    }

    fn finished(&self) -> bool {
        self.config.stop_at_end && self.done.len() == self.partitions.len()
    }
}

impl Source for KafkaSource {
    fn poll_batch(&mut self, max: usize) -> Result<Option<Vec<Record>>, ConnectorError> {
        if !self.assigned {
            self.assign()?;
        }
        if self.finished() {
            return Ok(None);
        }
        let mut batch = Vec::with_capacity(max.min(4096));
        let deadline = Instant::now() + IDLE_POLL;
        while batch.len() < max && !self.finished() {
            // Wait for the first record; then take what is already fetched.
            let wait = if batch.is_empty() {
                deadline.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            let Some(result) = self.consumer.poll(wait) else {
                if batch.is_empty() && Instant::now() < deadline {
                    continue;
                }
                break;
            };
            let m = match result {
                Ok(m) => m,
                Err(KafkaError::PartitionEOF(p)) => {
                    self.done.insert(p);
                    continue;
                }
                Err(e) if transient(&e) => {
                    if warn_now() {
                        tracing::warn!(source = %self.name, "kafka: {e}; retrying");
                    }
                    continue;
                }
                Err(KafkaError::MessageConsumption(rdkafka::types::RDKafkaErrorCode::AutoOffsetReset)) => {
                    return Err(ConnectorError::Remote {
                        service: "kafka",
                        message: format!(
                            "source `{}`: an offset to resume from is no longer in `{}` (deleted by retention?)\n  help: restore an older or newer checkpoint with `sluice run --from`, or start over with a new state dir (start = \"earliest\" or \"latest\")",
                            self.name, self.config.topic
                        ),
                    })
                }
                Err(e) => return Err(self.err("reading", e)),
            };
            let (partition, offset) = (m.partition(), m.offset());
            if self.config.stop_at_end {
                let end = self.ends.get(&partition).copied().unwrap_or(i64::MAX);
                if offset >= end {
                    // Produced after the source started: not part of this run.
                    self.done.insert(partition);
                    continue;
                }
                if offset + 1 >= end {
                    self.done.insert(partition);
                }
            }
            let event_time = match m.timestamp() {
                Timestamp::CreateTime(t) | Timestamp::LogAppendTime(t)
                    if self.config.timestamps =>
                {
                    Some(t)
                }
                _ => None,
            };
            let headers = m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| Header {
                            name: h.key.to_string(),
                            value: h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            batch.push(Record {
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                event_time,
                headers,
                position: Some(Position {
                    source: self.index,
                    split: partition as u32,
                    offset: offset as u64,
                }),
            });
        }
        if batch.is_empty() && self.finished() {
            return Ok(None);
        }
        Ok(Some(batch))
    }

    fn seek(&mut self, splits: &BTreeMap<u32, u64>) -> Result<bool, ConnectorError> {
        self.resume = splits.clone();
        if let Some(p) = splits
            .keys()
            .find(|&&p| p as usize >= self.partitions.len())
        {
            tracing::warn!(source = %self.name, "the checkpoint has partition {p} of `{}`, which the topic no longer has", self.config.topic);
        }
        Ok(true)
    }

    fn checkpoint_complete(&mut self, splits: &BTreeMap<u32, u64>) -> Result<(), ConnectorError> {
        let mut tpl = TopicPartitionList::new();
        for (&p, &next) in splits {
            tpl.add_partition_offset(&self.config.topic, p as i32, Offset::Offset(next as i64))
                .map_err(|e| self.err("committing offsets", e))?;
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        // Informational (lag tools): Sluice resumes from its checkpoints, so
        // the commit is asynchronous, fire and forget (librdkafka logs a
        // failed one). A synchronous commit would block the source, and with
        // it every checkpoint, for as long as the group coordinator is
        // unreachable; librdkafka waits for it without a timeout.
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::warn!(source = %self.name, "committing offsets to the consumer group: {e}");
        }
        self.last_commit = Some(tpl);
        Ok(())
    }

    fn finish(&mut self) -> Result<(), ConnectorError> {
        // The last offsets, synchronously so that the group shows where the
        // run ended (the asynchronous commit may not have been sent before
        // the process exits), on a thread so that the wait is bounded: a
        // commit stuck on an unreachable coordinator is left behind.
        let Some(tpl) = self.last_commit.take() else {
            return Ok(());
        };
        let consumer = self.consumer.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name(format!("{}-final-commit", self.name))
            .spawn(move || {
                let _ = tx.send(consumer.commit(&tpl, CommitMode::Sync));
            });
        let warn = |why: String| tracing::warn!(source = %self.name, "the consumer group's offsets of the last checkpoint are not committed ({why}); the checkpoint has them, only lag tools see older offsets");
        match spawned {
            Err(e) => warn(format!("cannot start a thread: {e}")),
            Ok(_) => match rx.recv_timeout(FINAL_COMMIT_WAIT) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn(e.to_string()),
                Err(_) => warn(format!("no answer within {FINAL_COMMIT_WAIT:?}")),
            },
        }
        Ok(())
    }
}

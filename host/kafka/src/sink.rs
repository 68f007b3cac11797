//! The Kafka sink: a transactional producer whose transactions follow the
//! checkpoints (see the crate docs), or an idempotent at-least-once producer.

use std::collections::VecDeque;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};
use sluice_types::{ConnectorError, Record, Sink, SinkSnapshot};

use crate::client::{client_config, kafka_error, retry_transient, CALL_TIMEOUT};
use crate::config::{Delivery, KafkaSinkConfig};
use crate::producer::{send, DeliveryContext, KafkaProducer};

/// How a sink delivers.
enum Mode {
    /// Two transactional producers, alternating per checkpoint, so that the
    /// next interval's records flow while the previous transaction waits for
    /// its checkpoint to complete.
    Transactional {
        producers: [KafkaProducer; 2],
        /// The marker group's metadata, for offset commits inside transactions.
        marker: ConsumerGroupMetadata,
        marker_consumer: BaseConsumer,
        /// Producer of the current interval.
        current: usize,
        /// Whether its transaction has begun.
        open: bool,
        /// Pre-committed transactions waiting for their checkpoint: (checkpoint, producer).
        pending: VecDeque<(u64, usize)>,
    },
    /// One idempotent producer.
    AtLeastOnce(KafkaProducer),
}

/// A sink writing one Kafka topic.
pub struct KafkaSink {
    name: String,
    config: KafkaSinkConfig,
    /// Prefix of the transactional ids; also names the marker group.
    txn_prefix: String,
    mode: Mode,
}

impl KafkaSink {
    /// Connect to the brokers and create the topic if it is missing (with
    /// `partitions` partitions). `exactly_once` comes from the pipeline
    /// (checkpoints on) and the sink's `delivery` setting.
    pub fn new(
        config: &KafkaSinkConfig,
        pipeline: &str,
        name: &str,
        checkpoints: bool,
    ) -> Result<Self, ConnectorError> {
        let bootstrap = config.bootstrap.as_str();
        if crate::admin::partitions(bootstrap, &config.topic)?.is_none() {
            return Err(ConnectorError::Config(format!(
                "sink `{name}`: topic `{}` does not exist on {bootstrap}\n  help: create it first (`sluice kafka create-topic {} --partitions 4`)",
                config.topic, config.topic
            )));
        }
        let txn_prefix = config
            .transactional_id
            .clone()
            .unwrap_or_else(|| format!("sluice.{pipeline}.{name}"));
        let base = [
            ("partitioner", "murmur2_random"),
            ("enable.idempotence", "true"),
            ("linger.ms", "5"),
            ("queue.buffering.max.messages", "1000000"),
            ("compression.type", "lz4"),
        ];
        let producer = |id: Option<String>| -> Result<KafkaProducer, ConnectorError> {
            let mut c = client_config(bootstrap, &base, &config.properties);
            if let Some(id) = id {
                c.set("transactional.id", id);
                c.set(
                    "transaction.timeout.ms",
                    config.transaction_timeout_ms.to_string(),
                );
            }
            c.create_with_context(DeliveryContext::default())
                .map_err(|e| {
                    kafka_error(
                        format_args!("sink `{name}`: creating the producer"),
                        bootstrap,
                        e,
                    )
                })
        };
        let mode = if checkpoints && config.delivery == Delivery::ExactlyOnce {
            let marker_consumer: BaseConsumer = client_config(
                bootstrap,
                &[
                    ("group.id", &format!("{txn_prefix}.commits")),
                    ("isolation.level", "read_committed"),
                    ("enable.auto.commit", "false"),
                ],
                [],
            )
            .create()
            .map_err(|e| {
                kafka_error(
                    format_args!("sink `{name}`: creating the commit-marker client"),
                    bootstrap,
                    e,
                )
            })?;
            let marker =
                marker_consumer
                    .group_metadata()
                    .ok_or_else(|| ConnectorError::Remote {
                        service: "kafka",
                        message: format!("sink `{name}`: no group metadata for the commit marker"),
                    })?;
            Mode::Transactional {
                producers: [
                    producer(Some(format!("{txn_prefix}-0")))?,
                    producer(Some(format!("{txn_prefix}-1")))?,
                ],
                marker,
                marker_consumer,
                current: 0,
                open: false,
                pending: VecDeque::new(),
            }
        } else {
            Mode::AtLeastOnce(producer(None)?)
        };
        Ok(KafkaSink {
            name: name.to_string(),
            config: config.clone(),
            txn_prefix,
            mode,
        })
    }

    fn err(&self, what: impl std::fmt::Display, e: KafkaError) -> ConnectorError {
        kafka_error(
            format_args!("sink `{}`: {what}", self.name),
            &self.config.bootstrap,
            e,
        )
    }

    /// The marker partition: the checkpoint id is committed as its offset.
    fn marker_partition(&self, checkpoint: Option<u64>) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        let offset = checkpoint.map_or(Offset::Invalid, |c| Offset::Offset(c as i64));
        tpl.add_partition_offset(&self.config.topic, 0, offset)
            .expect("a valid offset");
        tpl
    }
}

impl Sink for KafkaSink {
    fn recovery_point(&mut self) -> Result<Option<u64>, ConnectorError> {
        let Mode::Transactional {
            producers,
            marker_consumer,
            ..
        } = &self.mode
        else {
            return Ok(None);
        };
        // Fence a predecessor that may still run, and abort what it left open
        // (both ids at once: each call is a few round trips to the coordinator).
        let results: Vec<_> = std::thread::scope(|scope| {
            let calls: Vec<_> = producers
                .iter()
                .map(|p| scope.spawn(move || retry_transient(|| p.init_transactions(CALL_TIMEOUT))))
                .collect();
            calls
                .into_iter()
                .map(|c| c.join().unwrap_or(Err(KafkaError::Canceled)))
                .collect()
        });
        for (i, r) in results.into_iter().enumerate() {
            r.map_err(|e| {
                self.err(
                    format_args!("initialising transactional id {}-{i}", self.txn_prefix),
                    e,
                )
            })?;
        }
        let committed = retry_transient(|| {
            marker_consumer.committed_offsets(self.marker_partition(None), CALL_TIMEOUT)
        })
        .map_err(|e| self.err("reading the last committed checkpoint", e))?;
        let last = committed.elements().first().and_then(|e| match e.offset() {
            Offset::Offset(o) if o > 0 => Some(o as u64),
            _ => None,
        });
        tracing::info!(sink = %self.name, "last checkpoint committed to `{}`: {}", self.config.topic, last.map_or("none".to_string(), |c| c.to_string()));
        Ok(Some(last.unwrap_or(0)))
    }

    fn write(&mut self, batch: &[Record]) -> Result<(), ConnectorError> {
        let bootstrap = self.config.bootstrap.clone();
        let producer = match &mut self.mode {
            Mode::Transactional {
                producers,
                current,
                open,
                ..
            } => {
                let p = &producers[*current];
                if !*open {
                    p.begin_transaction().map_err(|e| {
                        kafka_error(
                            format_args!("sink `{}`: beginning a transaction", self.name),
                            &bootstrap,
                            e,
                        )
                    })?;
                    *open = true;
                }
                p
            }
            Mode::AtLeastOnce(p) => &*p,
        };
        for r in batch {
            send(producer, &self.config.topic, r, &bootstrap)?;
        }
        producer.context().check()
    }

    fn flush(&mut self) -> Result<(), ConnectorError> {
        let producer = match &self.mode {
            Mode::Transactional {
                producers, current, ..
            } => &producers[*current],
            Mode::AtLeastOnce(p) => p,
        };
        producer
            .flush(CALL_TIMEOUT)
            .map_err(|e| self.err("flushing", e))?;
        producer.context().check()
    }

    fn pre_commit(&mut self, checkpoint: u64) -> Result<SinkSnapshot, ConnectorError> {
        self.flush()?;
        let marker_tpl = self.marker_partition(Some(checkpoint));
        let name = self.name.clone();
        let bootstrap = self.config.bootstrap.clone();
        let err = |what: &str, e| {
            kafka_error(
                format_args!("sink `{name}`: checkpoint {checkpoint}: {what}"),
                &bootstrap,
                e,
            )
        };
        let Mode::Transactional {
            producers,
            marker,
            current,
            open,
            pending,
            ..
        } = &mut self.mode
        else {
            return Ok(SinkSnapshot::Null);
        };
        let p = &producers[*current];
        if !*open {
            p.begin_transaction()
                .map_err(|e| err("beginning a transaction", e))?;
        }
        // The transaction says which checkpoint it belongs to (see recovery_point).
        retry_transient(|| p.send_offsets_to_transaction(&marker_tpl, marker, CALL_TIMEOUT))
            .map_err(|e| err("recording the checkpoint in the transaction", e))?;
        pending.push_back((checkpoint, *current));
        let id = format!("{}-{}", self.txn_prefix, *current);
        *current ^= 1;
        *open = false;
        Ok(serde_json::json!({ "transactional_id": id, "checkpoint": checkpoint }))
    }

    fn commit(&mut self, checkpoint: u64) -> Result<(), ConnectorError> {
        let name = self.name.clone();
        let bootstrap = self.config.bootstrap.clone();
        let Mode::Transactional {
            producers, pending, ..
        } = &mut self.mode
        else {
            return Ok(());
        };
        while let Some(&(id, p)) = pending.front() {
            if id > checkpoint {
                break;
            }
            crash_point(id);
            retry_transient(|| producers[p].commit_transaction(CALL_TIMEOUT)).map_err(|e| {
                kafka_error(
                    format_args!("sink `{name}`: committing the transaction of checkpoint {id}"),
                    &bootstrap,
                    e,
                )
            })?;
            pending.pop_front();
        }
        Ok(())
    }

    fn exactly_once(&self) -> bool {
        matches!(self.mode, Mode::Transactional { .. })
    }

    fn awaiting_commit(&self) -> Option<u64> {
        match &self.mode {
            // The next interval's producer still holds a pre-committed transaction.
            Mode::Transactional {
                current, pending, ..
            } => pending
                .iter()
                .find(|(_, p)| p == current)
                .map(|(id, _)| *id),
            Mode::AtLeastOnce(_) => None,
        }
    }
}

/// Fault injection for the recovery tests: with
/// `SLUICE_FAULT_KAFKA_CRASH_BEFORE_COMMIT=N`, the process dies the way a
/// SIGKILL would (no unwinding, no flush) when checkpoint N is complete but
/// its transaction is not yet committed: the one window the commit marker
/// exists for.
fn crash_point(checkpoint: u64) {
    static AT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| {
        std::env::var("SLUICE_FAULT_KAFKA_CRASH_BEFORE_COMMIT")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    if at.is_some_and(|n| checkpoint >= n) {
        eprintln!(
            "fault injection: dying before committing the transaction of checkpoint {checkpoint}"
        );
        std::process::abort();
    }
}

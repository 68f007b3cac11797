//! Hot-swap commands from a Kafka topic, outcomes to a status topic.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use sluice_config::KafkaControlConfig;
use sluice_types::{ConnectorError, ControlSource};

use crate::client::{client_config, kafka_error, transient, CALL_TIMEOUT};
use crate::producer::DeliveryContext;

/// Reads commands from every partition of the control topic, from the
/// group's committed offsets (earliest the first time); a command's offset is
/// committed once it is settled, so a restarted pipeline sees the unsettled
/// ones again.
pub struct KafkaControl {
    config: KafkaControlConfig,
    status_topic: String,
    consumer: BaseConsumer,
    producer: ThreadedProducer<DeliveryContext>,
    next: u64,
    /// Token → (partition, offset) of commands not settled yet.
    pending: BTreeMap<u64, (i32, i64)>,
}

impl KafkaControl {
    /// Connect; `pipeline` names the default group.
    pub fn new(config: &KafkaControlConfig, pipeline: &str) -> Result<Self, ConnectorError> {
        let bs = config.bootstrap.as_str();
        let group = config
            .group
            .clone()
            .unwrap_or_else(|| format!("sluice.{pipeline}.control"));
        let consumer: BaseConsumer = client_config(
            bs,
            &[
                ("group.id", group.as_str()),
                ("enable.auto.commit", "false"),
                ("auto.offset.reset", "earliest"),
                ("isolation.level", "read_committed"),
            ],
            [],
        )
        .create()
        .map_err(|e| kafka_error("control: creating the consumer", bs, e))?;
        let Some(n) = crate::admin::partitions(bs, &config.topic)? else {
            return Err(ConnectorError::Config(format!(
                "[control.kafka]: topic `{}` does not exist on {bs}\n  help: create it (`sluice kafka create-topic {} --partitions 1`)",
                config.topic, config.topic
            )));
        };
        // The group's offsets are looked up here, with retries, rather than
        // by librdkafka on assignment (`Offset::Stored`): librdkafka gives
        // up on a coordinator that is still loading (a broker just started)
        // and then never reads the partition.
        let committed = crate::admin::group_offsets(&consumer, &config.topic, n).map_err(|e| {
            kafka_error(
                format_args!("control: reading the offsets of group `{group}`"),
                bs,
                e,
            )
        })?;
        let mut start = TopicPartitionList::new();
        for (p, offset) in committed {
            let offset = offset.map_or(Offset::Beginning, Offset::Offset);
            start
                .add_partition_offset(&config.topic, p, offset)
                .map_err(|e| kafka_error("control: assigning", bs, e))?;
        }
        consumer
            .assign(&start)
            .map_err(|e| kafka_error("control: assigning", bs, e))?;
        let producer = client_config(
            bs,
            &[("enable.idempotence", "true"), ("linger.ms", "0")],
            [],
        )
        .create_with_context(DeliveryContext::default())
        .map_err(|e| kafka_error("control: creating the status producer", bs, e))?;
        let status_topic = config
            .status_topic
            .clone()
            .unwrap_or_else(|| format!("{}.status", config.topic));
        if crate::admin::partitions(bs, &status_topic)?.is_none() {
            tracing::warn!("[control.kafka]: status topic `{status_topic}` does not exist; outcomes go to the control directory only");
        }
        Ok(KafkaControl {
            config: config.clone(),
            status_topic,
            consumer,
            producer,
            next: 0,
            pending: BTreeMap::new(),
        })
    }

    fn publish(&self, id: &str, outcome: &[u8]) -> Result<(), ConnectorError> {
        let record: BaseRecord<'_, str, [u8]> =
            BaseRecord::to(&self.status_topic).key(id).payload(outcome);
        self.producer.send(record).map_err(|(e, _)| {
            kafka_error("control: publishing an outcome", &self.config.bootstrap, e)
        })?;
        self.producer.flush(CALL_TIMEOUT).map_err(|e| {
            kafka_error("control: publishing an outcome", &self.config.bootstrap, e)
        })?;
        Ok(())
    }
}

impl ControlSource for KafkaControl {
    fn describe(&self) -> String {
        format!("kafka topic `{}`", self.config.topic)
    }

    fn poll(&mut self) -> Result<Vec<(u64, Vec<u8>)>, ConnectorError> {
        let mut out = Vec::new();
        while let Some(m) = self.consumer.poll(Duration::ZERO) {
            let m = match m {
                Ok(m) => m,
                Err(e) if transient(&e) => break,
                Err(e) => {
                    return Err(kafka_error(
                        "control: reading commands",
                        &self.config.bootstrap,
                        e,
                    ))
                }
            };
            self.next += 1;
            self.pending.insert(self.next, (m.partition(), m.offset()));
            out.push((self.next, m.payload().unwrap_or_default().to_vec()));
        }
        Ok(out)
    }

    fn report(&mut self, id: &str, outcome: &[u8]) -> Result<(), ConnectorError> {
        self.publish(id, outcome)
    }

    fn settle(&mut self, token: u64, id: &str, outcome: &[u8]) -> Result<(), ConnectorError> {
        if !id.is_empty() {
            self.publish(id, outcome)?;
        }
        let Some((partition, offset)) = self.pending.remove(&token) else {
            return Ok(());
        };
        // Commit up to the oldest command of this partition still unsettled.
        let oldest = self
            .pending
            .values()
            .filter(|(p, _)| *p == partition)
            .map(|(_, o)| *o)
            .min();
        let next = oldest.unwrap_or(offset + 1);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.config.topic, partition, Offset::Offset(next))
            .map_err(|e| kafka_error("control: committing", &self.config.bootstrap, e))?;
        // Asynchronous: a sync commit would stall the coordinator while the
        // group coordinator is away. A command read again after a lost
        // commit is answered from the outcome ledger, not applied twice.
        self.consumer
            .commit(&tpl, CommitMode::Async)
            .map_err(|e| kafka_error("control: committing", &self.config.bootstrap, e))?;
        Ok(())
    }
}

//! Topic administration and bulk loading, for the CLI (`sluice kafka …`),
//! demos, tests and benchmarks.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use sluice_types::{ConnectorError, Record};

use crate::client::{client_config, kafka_error, retry_transient, CALL_TIMEOUT};
use crate::producer::{send, DeliveryContext};

/// The partition count of `topic`, or `None` if it does not exist.
pub fn partitions(bootstrap: &str, topic: &str) -> Result<Option<usize>, ConnectorError> {
    let consumer: BaseConsumer =
        client_config(bootstrap, &[("allow.auto.create.topics", "false")], [])
            .create()
            .map_err(|e| kafka_error("creating a client", bootstrap, e))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), CALL_TIMEOUT)
        .map_err(|e| {
            kafka_error(
                format_args!("reading the metadata of topic `{topic}`"),
                bootstrap,
                e,
            )
        })?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Ok(None);
    };
    match t.error() {
        None => Ok(Some(t.partitions().len())),
        Some(e) if RDKafkaErrorCode::from(e) == RDKafkaErrorCode::UnknownTopicOrPartition => {
            Ok(None)
        }
        Some(e) => Err(ConnectorError::Remote {
            service: "kafka",
            message: format!("topic `{topic}`: {}", RDKafkaErrorCode::from(e)),
        }),
    }
}

/// Create `topic` with `partitions` partitions (replication factor 1, or 3
/// on a cluster of three or more brokers) unless it exists. Returns whether
/// it was created.
pub fn ensure_topic(
    bootstrap: &str,
    topic: &str,
    partitions: usize,
) -> Result<bool, ConnectorError> {
    if self::partitions(bootstrap, topic)?.is_some() {
        return Ok(false);
    }
    let admin: AdminClient<DefaultClientContext> = client_config(bootstrap, &[], [])
        .create()
        .map_err(|e| kafka_error("creating an admin client", bootstrap, e))?;
    let brokers = {
        let consumer: BaseConsumer = client_config(bootstrap, &[], [])
            .create()
            .map_err(|e| kafka_error("creating a client", bootstrap, e))?;
        consumer
            .fetch_metadata(None, CALL_TIMEOUT)
            .map_err(|e| kafka_error("reading cluster metadata", bootstrap, e))?
            .brokers()
            .len()
    };
    let replication = if brokers >= 3 { 3 } else { 1 };
    let new = NewTopic::new(
        topic,
        partitions.max(1) as i32,
        TopicReplication::Fixed(replication),
    );
    let opts = AdminOptions::new().operation_timeout(Some(CALL_TIMEOUT));
    let results = futures_executor::block_on(admin.create_topics([&new], &opts))
        .map_err(|e| kafka_error(format_args!("creating topic `{topic}`"), bootstrap, e))?;
    for r in results {
        match r {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => return Ok(false),
            Err((name, code)) => {
                return Err(ConnectorError::Remote {
                    service: "kafka",
                    message: format!("creating topic `{name}`: {code}"),
                })
            }
        }
    }
    // Metadata reaches every broker shortly after creation; wait for it so
    // that a producer or consumer started right after sees the partitions.
    let deadline = std::time::Instant::now() + CALL_TIMEOUT;
    while self::partitions(bootstrap, topic)? != Some(partitions.max(1)) {
        if std::time::Instant::now() > deadline {
            return Err(ConnectorError::Remote { service: "kafka", message: format!("topic `{topic}` was created but its partitions did not appear within {CALL_TIMEOUT:?}") });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(true)
}

/// Write `records` to `topic` (partitioned by key, as the sink does) with an
/// idempotent producer, calling `progress` with the running count now and
/// then. Returns the number written once all are acknowledged.
pub fn produce(
    bootstrap: &str,
    topic: &str,
    records: impl IntoIterator<Item = Record>,
    mut progress: impl FnMut(u64),
) -> Result<u64, ConnectorError> {
    let context = DeliveryContext::default();
    let producer: ThreadedProducer<DeliveryContext> = client_config(
        bootstrap,
        &[
            ("enable.idempotence", "true"),
            ("partitioner", "murmur2_random"),
            ("linger.ms", "20"),
            ("queue.buffering.max.messages", "1000000"),
        ],
        [],
    )
    .create_with_context(context)
    .map_err(|e| kafka_error("creating a producer", bootstrap, e))?;
    let mut n = 0u64;
    for r in records {
        send(&producer, topic, &r, bootstrap)?;
        n += 1;
        if n.is_multiple_of(10_000) {
            producer.context().check()?;
            progress(n);
        }
    }
    producer
        .flush(CALL_TIMEOUT)
        .map_err(|e| kafka_error(format_args!("flushing records to `{topic}`"), bootstrap, e))?;
    producer.context().check()?;
    progress(n);
    Ok(n)
}

/// The offsets consumer group `group` has committed for `topic`, by partition.
pub fn committed_offsets(
    bootstrap: &str,
    group: &str,
    topic: &str,
) -> Result<std::collections::BTreeMap<u32, i64>, ConnectorError> {
    let n = partitions(bootstrap, topic)?.unwrap_or(0);
    let consumer: BaseConsumer = client_config(bootstrap, &[("group.id", group)], [])
        .create()
        .map_err(|e| kafka_error("creating a client", bootstrap, e))?;
    let got = group_offsets(&consumer, topic, n).map_err(|e| {
        kafka_error(
            format_args!("reading the offsets of group `{group}`"),
            bootstrap,
            e,
        )
    })?;
    Ok(got
        .into_iter()
        .filter_map(|(p, o)| o.map(|o| (p as u32, o)))
        .collect())
}

/// The offset `consumer`'s group has committed for each of the `n`
/// partitions of `topic` (`None`: nothing committed), asked with retries
/// while the group coordinator moves or loads.
pub(crate) fn group_offsets(
    consumer: &BaseConsumer,
    topic: &str,
    n: usize,
) -> rdkafka::error::KafkaResult<Vec<(i32, Option<i64>)>> {
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..n as i32 {
        tpl.add_partition(topic, p);
    }
    let got = retry_transient(|| consumer.committed_offsets(tpl.clone(), CALL_TIMEOUT))?;
    Ok(got
        .elements()
        .iter()
        .map(|e| match e.offset() {
            rdkafka::Offset::Offset(o) => (e.partition(), Some(o)),
            _ => (e.partition(), None),
        })
        .collect())
}

/// The end offset (high watermark) of every partition of `topic`.
pub fn end_offsets(
    bootstrap: &str,
    topic: &str,
) -> Result<std::collections::BTreeMap<u32, i64>, ConnectorError> {
    let n = partitions(bootstrap, topic)?.unwrap_or(0);
    let consumer: BaseConsumer = client_config(bootstrap, &[], [])
        .create()
        .map_err(|e| kafka_error("creating a client", bootstrap, e))?;
    (0..n as i32)
        .map(|p| {
            let (_, high) = consumer
                .fetch_watermarks(topic, p, CALL_TIMEOUT)
                .map_err(|e| {
                    kafka_error(
                        format_args!("reading the end of `{topic}` partition {p}"),
                        bootstrap,
                        e,
                    )
                })?;
            Ok((p as u32, high))
        })
        .collect()
}

/// Delete `topics` (those that exist).
pub fn delete_topics(bootstrap: &str, topics: &[&str]) -> Result<(), ConnectorError> {
    let admin: AdminClient<DefaultClientContext> = client_config(bootstrap, &[], [])
        .create()
        .map_err(|e| kafka_error("creating an admin client", bootstrap, e))?;
    let opts = AdminOptions::new().operation_timeout(Some(CALL_TIMEOUT));
    let results = futures_executor::block_on(admin.delete_topics(topics, &opts))
        .map_err(|e| kafka_error("deleting topics", bootstrap, e))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((name, code)) => {
                return Err(ConnectorError::Remote {
                    service: "kafka",
                    message: format!("deleting topic `{name}`: {code}"),
                })
            }
        }
    }
    Ok(())
}

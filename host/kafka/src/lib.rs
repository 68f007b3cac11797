//! Apache Kafka for Sluice: a source that reads a topic from checkpointed
//! offsets, a sink that writes a topic in transactions committed with
//! checkpoints, and the small admin helpers the CLI's `kafka` commands use.
//!
//! Both connectors are blocking (librdkafka does the I/O on its own threads)
//! and run on the node threads of the dataflow like every other connector.
//!
//! # Exactly-once
//! The source keeps no state of its own: the checkpoint records the next
//! offset of every partition, and a restored source seeks there. The sink
//! writes the records of each checkpoint interval in one Kafka transaction,
//! flushes it on the checkpoint barrier (pre-commit) and commits it when the
//! checkpoint is complete. A transaction cannot outlive its producer, so a
//! crash between "checkpoint complete" and "transaction committed" loses that
//! transaction; the sink therefore records, inside every transaction, the
//! checkpoint it belongs to (an offset commit of a marker consumer group), and
//! on recovery the pipeline restarts from the newest checkpoint whose
//! transaction did commit ([`sluice_types::Sink::recovery_point`]). What the
//! aborted transaction held is then produced again, exactly once.
#![deny(missing_docs)]

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use sluice_types::ConnectorError;

pub mod admin;
mod control;
mod sink;
mod source;

pub use control::KafkaControl;
pub use sink::KafkaSink;
pub use source::{KafkaSource, Subtask};

/// How long blocking calls to the brokers (metadata, transactions, flushes)
/// may take before the connector gives up with an error.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A client config for `bootstrap`, with the user's extra `properties` last
/// so they win over Sluice's defaults.
pub(crate) fn client_config<'a>(
    bootstrap: &str,
    defaults: &[(&str, &str)],
    properties: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    // librdkafka logs connection trouble at warning level through `log`,
    // which Sluice does not route; errors surface through calls instead.
    c.set("log_level", "3");
    for (k, v) in defaults {
        c.set(*k, *v);
    }
    for (k, v) in properties {
        c.set(k, v);
    }
    c
}

/// A Kafka failure as a connector error that says what was being done and,
/// for failures to reach the cluster, what to check.
pub(crate) fn kafka_error(
    what: impl std::fmt::Display,
    bootstrap: &str,
    e: KafkaError,
) -> ConnectorError {
    use rdkafka::types::RDKafkaErrorCode as C;
    let unreachable = matches!(
        e.rdkafka_error_code(),
        Some(
            C::BrokerTransportFailure
                | C::AllBrokersDown
                | C::OperationTimedOut
                | C::MessageTimedOut
                | C::Resolve
                | C::RequestTimedOut
        )
    ) || matches!(
        e,
        KafkaError::MetadataFetch(C::OperationTimedOut | C::BrokerTransportFailure)
    );
    let help = if unreachable {
        format!("\n  help: is a broker running at {bootstrap}? (`scripts/kafka start` starts one on 127.0.0.1:9092)")
    } else {
        String::new()
    };
    ConnectorError::Remote {
        service: "kafka",
        message: format!("{what}: {e}{help}"),
    }
}

/// librdkafka's client-level errors: most are transient (a broker went
/// away and librdkafka reconnects), so they are warnings, at most one every
/// few seconds (every client reports the same outage); what really fails
/// surfaces through the calls of the connectors. End of partition is a
/// normal event of bounded reading.
pub(crate) fn client_error(error: KafkaError, reason: &str) {
    use rdkafka::types::RDKafkaErrorCode as C;
    if matches!(
        error,
        KafkaError::PartitionEOF(_) | KafkaError::Global(C::PartitionEOF)
    ) {
        return;
    }
    if warn_now() {
        tracing::warn!("kafka: {error}: {reason}");
    } else {
        tracing::debug!("kafka: {error}: {reason}");
    }
}

/// Whether a transient-trouble warning may be logged now (rate limit).
pub(crate) fn warn_now() -> bool {
    static LAST: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    let now = std::time::Instant::now();
    if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(5)) {
        return false;
    }
    *last = Some(now);
    true
}

/// Call `f` again while it fails in a way that a moment's wait cures: a
/// group or transaction coordinator that is moving or still loading (a
/// broker just started or restarted), or a transactional call librdkafka
/// marks retriable. After [`CALL_TIMEOUT`] the last error stands.
pub(crate) fn retry_transient<T>(
    mut f: impl FnMut() -> rdkafka::error::KafkaResult<T>,
) -> rdkafka::error::KafkaResult<T> {
    use rdkafka::types::RDKafkaErrorCode as C;
    let deadline = std::time::Instant::now() + CALL_TIMEOUT;
    loop {
        match f() {
            Err(e)
                if std::time::Instant::now() < deadline
                    && (matches!(&e, KafkaError::Transaction(t) if t.is_retriable())
                        || matches!(
                            e.rdkafka_error_code(),
                            Some(
                                C::NotCoordinator
                                    | C::CoordinatorLoadInProgress
                                    | C::CoordinatorNotAvailable
                            )
                        )) =>
            {
                tracing::debug!("kafka: {e}; retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            r => return r,
        }
    }
}

/// Consumer errors librdkafka recovers from by itself (reconnecting,
/// finding the new leader): the source keeps polling through them.
pub(crate) fn transient(e: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    match e {
        KafkaError::MessageConsumption(code) => matches!(
            code,
            C::AllBrokersDown
                | C::BrokerTransportFailure
                | C::OperationTimedOut
                | C::RequestTimedOut
                | C::NetworkException
                | C::LeaderNotAvailable
                | C::NotLeaderForPartition
                | C::NotCoordinator
                | C::CoordinatorNotAvailable
                | C::CoordinatorLoadInProgress
                | C::Resolve
                | C::UnknownTopicOrPartition
                | C::FencedLeaderEpoch
                | C::UnknownLeaderEpoch
        ),
        _ => false,
    }
}

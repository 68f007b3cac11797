//! librdkafka clients as every part of the crate sets them up, and how their
//! errors are judged: transient or not, worth a warning or not.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use sluice_types::ConnectorError;

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

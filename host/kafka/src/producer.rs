//! The producer that the sink, the admin helpers and the control reader
//! share: deliveries that fail are remembered, and a record waits while
//! librdkafka's queue is full.

use std::sync::Mutex;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{Header as KafkaHeader, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use sluice_types::{ConnectorError, Record};

use crate::client::{client_error, kafka_error};

/// Producer context: remembers the first failed delivery, so that a record
/// the broker refused fails the sink instead of vanishing.
#[derive(Default)]
pub(crate) struct DeliveryContext {
    failed: Mutex<Option<String>>,
}

impl ClientContext for DeliveryContext {
    fn error(&self, error: KafkaError, reason: &str) {
        client_error(error, reason);
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
            failed.get_or_insert_with(|| e.to_string());
        }
    }
}

impl DeliveryContext {
    /// Fail if a delivery failed since the last check.
    pub(crate) fn check(&self) -> Result<(), ConnectorError> {
        match self.failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(e) => Err(ConnectorError::Remote {
                service: "kafka",
                message: format!("a record was not delivered: {e}"),
            }),
            None => Ok(()),
        }
    }
}

/// A producer that remembers failed deliveries.
pub(crate) type KafkaProducer = ThreadedProducer<DeliveryContext>;

/// Enqueue one record, waiting while librdkafka's queue is full.
pub(crate) fn send(
    producer: &KafkaProducer,
    topic: &str,
    r: &Record,
    bootstrap: &str,
) -> Result<(), ConnectorError> {
    let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).payload(r.value.as_slice());
    if let Some(k) = &r.key {
        record = record.key(k.as_slice());
    }
    if let Some(t) = r.event_time {
        record = record.timestamp(t);
    }
    if !r.headers.is_empty() {
        let headers =
            r.headers
                .iter()
                .fold(OwnedHeaders::new_with_capacity(r.headers.len()), |hs, h| {
                    hs.insert(KafkaHeader {
                        key: &h.name,
                        value: Some(h.value.as_slice()),
                    })
                });
        record = record.headers(headers);
    }
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => {
                return Err(kafka_error(
                    format_args!("writing to `{topic}`"),
                    bootstrap,
                    e,
                ))
            }
        }
    }
}

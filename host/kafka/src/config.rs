//! Settings of the Apache Kafka source and sink: what `[[sources]] type =
//! "kafka"` and `[[sinks]] type = "kafka"` deserialize into. (`[control.kafka]`
//! is the pipeline's own section: `sluice_config::KafkaControlConfig`.)

use std::collections::BTreeMap;

use serde::Deserialize;

/// Where a Kafka source starts when no checkpoint says otherwise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartOffset {
    /// The oldest retained record of each partition.
    #[default]
    Earliest,
    /// Only records produced after the source starts.
    Latest,
}

/// `[[sources]] type = "kafka"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// `host:port[,host:port…]` of the brokers.
    pub bootstrap: String,
    /// The topic to read; every partition is assigned to the source.
    pub topic: String,
    /// Consumer group that offsets are committed to after each checkpoint,
    /// so that standard lag tools see the source's progress. Sluice itself
    /// resumes from its checkpoints, not from these offsets. Default
    /// `sluice.<pipeline>.<source>`.
    #[serde(default)]
    pub group: Option<String>,
    /// Where to start without a checkpoint: `earliest` (default) or `latest`.
    #[serde(default)]
    pub start: StartOffset,
    /// Stop once every partition has been read up to the end it had when
    /// the source started (for backfills, tests and benchmarks). Default:
    /// run until stopped.
    #[serde(default)]
    pub stop_at_end: bool,
    /// Read only committed transactional records (default `true`).
    #[serde(default = "yes")]
    pub read_committed: bool,
    /// Use the record's Kafka timestamp as its event time (default `true`).
    #[serde(default = "yes")]
    pub timestamps: bool,
    /// Extra librdkafka consumer properties (e.g. `"fetch.min.bytes" = "1"`).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// Delivery guarantee of a Kafka sink.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Transactions committed with checkpoints (default when checkpoints are on).
    #[default]
    ExactlyOnce,
    /// Idempotent producer, flushed at each checkpoint: records replayed after
    /// a crash may be written again.
    AtLeastOnce,
}

/// `[[sinks]] type = "kafka"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// `host:port[,host:port…]` of the brokers.
    pub bootstrap: String,
    /// The topic to write; records go to partitions by key (murmur2, as
    /// Java clients do), keyless records spread over partitions.
    pub topic: String,
    /// `exactly-once` (default) or `at-least-once`.
    #[serde(default)]
    pub delivery: Delivery,
    /// Prefix of the sink's transactional ids (stable across restarts, so a
    /// restarted pipeline fences its predecessor). Default
    /// `sluice.<pipeline>.<sink>`; two pipelines must not share one.
    #[serde(default)]
    pub transactional_id: Option<String>,
    /// Broker-side timeout of an open transaction (default 15 minutes, the
    /// broker's usual maximum): longer than a checkpoint may take.
    #[serde(default = "default_txn_timeout_ms")]
    pub transaction_timeout_ms: u64,
    /// Extra librdkafka producer properties (e.g. `"linger.ms" = "20"`).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}

fn default_txn_timeout_ms() -> u64 {
    900_000
}

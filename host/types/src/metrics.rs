//! Pipeline metrics, kept in a Prometheus registry. Every counter is an atomic
//! behind an `Arc`: nodes clone their counters once and add on the hot path
//! without locking.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of a per-node metric (a node is a source, operator or sink).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    /// Node name from the pipeline file.
    pub node: String,
}

/// Labels of a counter declared by a guest.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GuestLabels {
    /// Operator name.
    pub node: String,
    /// Counter name chosen by the plugin.
    pub name: String,
}

/// Labels of a per-subtask metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubtaskLabels {
    /// Node name from the pipeline file.
    pub node: String,
    /// Subtask index.
    pub subtask: u32,
}

/// Labels of a per-partition metric of a source.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    /// Source name.
    pub node: String,
    /// Partition (split) number.
    pub partition: u32,
}

/// Event-time gauges of one node subtask, in ms (the smallest i64 before the
/// first watermark).
#[derive(Clone, Debug, Default)]
pub struct WatermarkGauges {
    /// The minimum watermark over its inputs.
    pub input: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// The watermark it last sent downstream.
    pub output: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// Wall clock minus the output watermark, when the latter was set.
    pub lag_ms: Gauge<i64, std::sync::atomic::AtomicI64>,
}

impl WatermarkGauges {
    /// Record a new output watermark (and the lag it implies).
    pub fn set_output(&self, watermark: i64, now_ms: i64) {
        self.output.set(watermark);
        if watermark > i64::MIN && watermark < i64::MAX {
            self.lag_ms.set(now_ms.saturating_sub(watermark));
        }
    }
}

/// Checkpoint lifecycle metrics of a pipeline.
#[derive(Clone, Debug, Default)]
pub struct CheckpointMetrics {
    /// Checkpoints completed (`numberOfCompletedCheckpoints`).
    pub completed: Counter,
    /// Checkpoints that failed or were abandoned (`numberOfFailedCheckpoints`).
    pub failed: Counter,
    /// Trigger to manifest of the last one, ms (`lastCheckpointDuration`).
    pub last_duration_ms: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// State size of the last one, bytes (`lastCheckpointSize`).
    pub last_size_bytes: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// Longest barrier alignment in the last one, ms.
    pub last_alignment_ms: Gauge<i64, std::sync::atomic::AtomicI64>,
}

/// The counters of one node, cloned out of the registry once.
#[derive(Clone, Debug, Default)]
pub struct NodeCounters {
    /// Records received.
    pub records_in: Counter,
    /// Records emitted (operators) or written (sinks, sources).
    pub records_out: Counter,
    /// Records handed to the error policy.
    pub record_errors: Counter,
    /// Records sent to the dead-letter output.
    pub dead_letters: Counter,
    /// Records skipped by the `skip` policy.
    pub skipped: Counter,
    /// Guest calls that trapped (including deadline and memory breaches).
    pub traps: Counter,
    /// Guest calls interrupted at their CPU deadline (also counted in `traps`).
    pub timeouts: Counter,
    /// Records later than a window's allowed lateness (sent to the late side output).
    pub late_records_dropped: Counter,
}

/// All metrics of a running pipeline.
pub struct Metrics {
    /// Checkpoint lifecycle.
    pub checkpoints: CheckpointMetrics,
    registry: Mutex<Registry>,
    records_in: Family<NodeLabels, Counter>,
    records_out: Family<NodeLabels, Counter>,
    record_errors: Family<NodeLabels, Counter>,
    dead_letters: Family<NodeLabels, Counter>,
    skipped: Family<NodeLabels, Counter>,
    traps: Family<NodeLabels, Counter>,
    timeouts: Family<NodeLabels, Counter>,
    late: Family<NodeLabels, Counter>,
    guest: Family<GuestLabels, Counter>,
    input_watermark: Family<SubtaskLabels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    output_watermark: Family<SubtaskLabels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    lag: Family<SubtaskLabels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    partition_lag: Family<PartitionLabels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    records_lag_max: Family<NodeLabels, Gauge<i64, std::sync::atomic::AtomicI64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sluice");
        let m = Metrics {
            checkpoints: CheckpointMetrics::default(),
            registry: Mutex::new(Registry::default()),
            records_in: Family::default(),
            records_out: Family::default(),
            record_errors: Family::default(),
            dead_letters: Family::default(),
            skipped: Family::default(),
            traps: Family::default(),
            timeouts: Family::default(),
            late: Family::default(),
            guest: Family::default(),
            input_watermark: Family::default(),
            output_watermark: Family::default(),
            lag: Family::default(),
            partition_lag: Family::default(),
            records_lag_max: Family::default(),
        };
        registry.register(
            "records_in",
            "Records received by a node",
            m.records_in.clone(),
        );
        registry.register(
            "records_out",
            "Records emitted or written by a node",
            m.records_out.clone(),
        );
        registry.register(
            "record_errors",
            "Records handed to the error policy",
            m.record_errors.clone(),
        );
        registry.register(
            "dead_letters",
            "Records sent to a dead-letter output",
            m.dead_letters.clone(),
        );
        registry.register(
            "records_skipped",
            "Records dropped by the skip policy",
            m.skipped.clone(),
        );
        registry.register("traps", "Guest calls that trapped", m.traps.clone());
        registry.register(
            "timeouts",
            "Guest calls interrupted at their CPU deadline",
            m.timeouts.clone(),
        );
        registry.register("guest", "Counters declared by plugins", m.guest.clone());
        let c = &m.checkpoints;
        registry.register(
            "number_of_completed_checkpoints",
            "Checkpoints completed",
            c.completed.clone(),
        );
        registry.register(
            "number_of_failed_checkpoints",
            "Checkpoints failed or abandoned",
            c.failed.clone(),
        );
        registry.register(
            "last_checkpoint_duration_ms",
            "Duration of the last checkpoint, trigger to manifest",
            c.last_duration_ms.clone(),
        );
        registry.register(
            "last_checkpoint_size_bytes",
            "State size of the last checkpoint",
            c.last_size_bytes.clone(),
        );
        registry.register(
            "last_checkpoint_alignment_ms",
            "Longest barrier alignment in the last checkpoint",
            c.last_alignment_ms.clone(),
        );
        registry.register(
            "num_late_records_dropped",
            "Records later than a window's allowed lateness",
            m.late.clone(),
        );
        registry.register(
            "current_input_watermark",
            "Minimum event-time watermark over a subtask's inputs, ms",
            m.input_watermark.clone(),
        );
        registry.register(
            "current_output_watermark",
            "Event-time watermark a subtask last sent, ms",
            m.output_watermark.clone(),
        );
        registry.register(
            "event_time_lag_ms",
            "Wall clock minus a subtask's output watermark, ms",
            m.lag.clone(),
        );
        registry.register(
            "source_partition_lag",
            "Records between a partition's end and the source's read position (Kafka consumer lag)",
            m.partition_lag.clone(),
        );
        registry.register(
            "records_lag_max",
            "Largest partition lag of a source (Kafka records-lag-max)",
            m.records_lag_max.clone(),
        );
        *m.registry.lock().unwrap() = registry;
        m
    }
}

impl Metrics {
    /// The counters of node `node`.
    pub fn node(&self, node: &str) -> NodeCounters {
        let l = NodeLabels {
            node: node.to_string(),
        };
        NodeCounters {
            records_in: self.records_in.get_or_create(&l).clone(),
            records_out: self.records_out.get_or_create(&l).clone(),
            record_errors: self.record_errors.get_or_create(&l).clone(),
            dead_letters: self.dead_letters.get_or_create(&l).clone(),
            skipped: self.skipped.get_or_create(&l).clone(),
            traps: self.traps.get_or_create(&l).clone(),
            timeouts: self.timeouts.get_or_create(&l).clone(),
            late_records_dropped: self.late.get_or_create(&l).clone(),
        }
    }

    /// The event-time gauges of subtask `subtask` of `node`.
    pub fn watermarks(&self, node: &str, subtask: u32) -> WatermarkGauges {
        let l = SubtaskLabels {
            node: node.to_string(),
            subtask,
        };
        let g = WatermarkGauges {
            input: self.input_watermark.get_or_create(&l).clone(),
            output: self.output_watermark.get_or_create(&l).clone(),
            lag_ms: self.lag.get_or_create(&l).clone(),
        };
        g.input.set(i64::MIN);
        g.output.set(i64::MIN);
        g
    }

    /// Lag gauge of partition `partition` of source `node`, in records.
    pub fn partition_lag(
        &self,
        node: &str,
        partition: u32,
    ) -> Gauge<i64, std::sync::atomic::AtomicI64> {
        self.partition_lag
            .get_or_create(&PartitionLabels {
                node: node.to_string(),
                partition,
            })
            .clone()
    }

    /// The largest partition lag of source `node`, in records.
    pub fn records_lag_max(&self, node: &str) -> Gauge<i64, std::sync::atomic::AtomicI64> {
        self.records_lag_max
            .get_or_create(&NodeLabels {
                node: node.to_string(),
            })
            .clone()
    }

    /// The guest counter `name` of operator `node`.
    pub fn guest_counter(&self, node: &str, name: &str) -> Counter {
        self.guest
            .get_or_create(&GuestLabels {
                node: node.to_string(),
                name: name.to_string(),
            })
            .clone()
    }

    /// The current value of guest counter `name` of `node`.
    pub fn guest_value(&self, node: &str, name: &str) -> u64 {
        self.guest_counter(node, name).get()
    }

    /// Everything, in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }
}

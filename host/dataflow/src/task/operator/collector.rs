//! Where an operator subtask's results go, shared by its record processing,
//! its timers and its windows: emits are routed downstream with the
//! watermark as of their input, records that failed go through the
//! operator's error policy (`fail`, `skip`, `dead-letter`), and watermarks
//! are announced to consumers no record went to.

use std::sync::Arc;
use std::time::Instant;

use sluice_config::{ErrorPolicy, OperatorSpec, DEAD_LETTER_OUTPUT};
use sluice_runtime::{now_ms, wit, CallError, Instance, Plugin};
use sluice_types::metrics::{NodeCounters, WatermarkGauges};
use sluice_types::{Header, Message, Position, Record};

use crate::error::DataflowError;
use crate::event_time::{self, WatermarkGenerator, WatermarkUpdate};
use crate::router::Router;

/// A source as provenance names it: its name and, for Kafka, its topic.
#[derive(Clone, Debug)]
pub(crate) struct SourceLabel {
    pub(crate) name: String,
    pub(crate) topic: Option<String>,
}

/// The output side of one operator subtask.
pub(crate) struct Collector {
    pub(crate) router: Router,
    pub(crate) counters: NodeCounters,
    pub(crate) gauges: WatermarkGauges,
    operator: String,
    subtask: usize,
    policy: ErrorPolicy,
    max_record_kb: u64,
    /// The plugin running now: errors and dead letters name it.
    plugin: Arc<Plugin>,
    sources: Arc<Vec<SourceLabel>>,
    /// The watermark this subtask has acted on (timers fired up to it) and
    /// stamps on its output, record by record.
    pub(crate) current: i64,
    /// The last watermark it sent in a `Watermark` message.
    announced: i64,
    /// Set when the operator generates its own watermarks.
    pub(crate) generator: Option<WatermarkGenerator>,
    /// Records the error policy has handled so far (a newly deployed
    /// plugin's probation counts its failures from here).
    pub(crate) errors: u64,
}

impl Collector {
    /// The output of subtask `subtask` of `spec`, running `plugin`.
    pub(crate) fn new(
        spec: &OperatorSpec,
        subtask: usize,
        plugin: Arc<Plugin>,
        router: Router,
        counters: NodeCounters,
        gauges: WatermarkGauges,
        sources: Arc<Vec<SourceLabel>>,
    ) -> Self {
        Collector {
            router,
            counters,
            gauges,
            operator: spec.name.clone(),
            subtask,
            policy: spec.on_error,
            max_record_kb: spec.limits.max_record_kb,
            plugin,
            sources,
            current: event_time::NO_WATERMARK,
            announced: event_time::NO_WATERMARK,
            generator: spec.watermarks.as_ref().map(WatermarkGenerator::new),
            errors: 0,
        }
    }

    /// The operator's name.
    pub(crate) fn operator(&self) -> &str {
        &self.operator
    }

    /// The plugin running now.
    pub(crate) fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// A hot swap switched the subtask to `plugin`.
    pub(crate) fn set_plugin(&mut self, plugin: Arc<Plugin>) {
        self.plugin = plugin;
    }

    fn plugin_label(&self) -> String {
        let info = self.plugin.info();
        let file = info
            .path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("{file} sha256:{}", &info.digest[..12])
    }

    /// Continue from a restored watermark: acted on and announced already.
    pub(crate) fn restore_watermark(&mut self, wm: i64) {
        self.current = wm;
        self.announced = wm;
    }

    /// The watermark stamped on records this subtask emits now.
    pub(crate) fn output_watermark(&self) -> i64 {
        self.generator
            .as_ref()
            .map_or(self.current, WatermarkGenerator::current)
    }

    /// Send the watermark in force downstream if it moved since last sent
    /// (records already carried it; this reaches consumers no record went to).
    pub(crate) fn announce(&mut self) -> Result<(), DataflowError> {
        if self.generator.is_none() && self.current > self.announced {
            let wm = self.current;
            self.announced = wm;
            self.router
                .broadcast(|from| Message::Watermark { from, at: wm })?;
            self.gauges.set_output(wm, now_ms());
        }
        Ok(())
    }

    /// After a batch, an operator that generates its own watermarks sends
    /// what its generator has to say; the others announce theirs.
    pub(crate) fn after_batch(&mut self) -> Result<(), DataflowError> {
        let Some(g) = &mut self.generator else {
            return self.announce();
        };
        match g.poll(Instant::now()) {
            Some(WatermarkUpdate::Advance(wm)) => {
                self.router
                    .broadcast(|from| Message::Watermark { from, at: wm })?;
                self.gauges.set_output(wm, now_ms());
            }
            Some(WatermarkUpdate::Idle) => self.router.broadcast(|from| Message::Idle { from })?,
            None => {}
        }
        Ok(())
    }

    /// Route the emits of a successful call over `batch`; each carries the
    /// watermark as of its input (`wms`), or the one in force now.
    pub(crate) fn route(
        &mut self,
        result: wit::BatchResult,
        positions: &[Option<Position>],
        batch: &[wit::Record],
        wms: Option<&[i64]>,
    ) -> Result<(), DataflowError> {
        let now_wm = self.output_watermark();
        let batch_wm =
            (self.generator.is_some() && event_time::per_batch_baseline()).then_some(now_wm);
        let mut out = 0u64;
        let max = self.max_record_bytes();
        // One clock read per batch, not per record.
        let now = Instant::now();
        for emit in result.emits {
            // Every emit must name an input of this batch: its provenance
            // (and later its checkpoint position) comes from there.
            let Some(original) = batch.get(emit.input as usize) else {
                return Err(self.bad_index(emit.input, batch.len(), "an emit"));
            };
            let position = positions.get(emit.input as usize).copied().flatten();
            let mut record = sluice_runtime::from_wit(emit.record, position);
            let wm = match &mut self.generator {
                Some(g) => {
                    let before = g.observe(&mut record, now, 0);
                    batch_wm.unwrap_or(before)
                }
                None => wms
                    .and_then(|w| w.get(emit.input as usize))
                    .copied()
                    .unwrap_or(now_wm),
            };
            if record.size_bytes() > max {
                let msg = format!(
                    "emitted a record of {} bytes, over the operator's limits.max_record_kb = {}",
                    record.size_bytes(),
                    self.max_record_kb
                );
                self.on_error(original.clone(), position, msg)?;
                continue;
            }
            match &emit.output {
                wit::Output::Main => self.router.push(None, record, wm)?,
                wit::Output::Side(name) => self.router.push(Some(name), record, wm)?,
            }
            out += 1;
        }
        self.counters.records_out.inc_by(out);
        for err in result.errors {
            let i = err.input as usize;
            let Some(original) = batch.get(i) else {
                return Err(self.bad_index(err.input, batch.len(), &err.message));
            };
            self.on_error(
                original.clone(),
                positions.get(i).copied().flatten(),
                err.message,
            )?;
        }
        Ok(())
    }

    /// The largest record the operator takes or emits, bytes.
    pub(crate) fn max_record_bytes(&self) -> usize {
        (self.max_record_kb as usize) << 10
    }

    /// A plugin that names an input index outside the batch is broken.
    pub(crate) fn bad_index(&self, index: u32, len: usize, what: &str) -> DataflowError {
        DataflowError::RecordFailed {
            operator: self.operator.clone(),
            plugin: self.plugin_label(),
            position: "an unknown position".into(),
            message: format!("the plugin referred to input {index} of a batch of {len} ({what}); the plugin is broken"),
        }
    }

    /// A window call returned something that does not fit what it was given.
    pub(crate) fn broken(&self, what: String) -> DataflowError {
        DataflowError::RecordFailed {
            operator: self.operator.clone(),
            plugin: self.plugin.info().path.display().to_string(),
            position: "a window".into(),
            message: format!("{what}; the plugin is broken"),
        }
    }

    /// Keyed state failed under this operator.
    pub(crate) fn state_error(&self, source: sluice_state::StateError) -> DataflowError {
        DataflowError::State {
            node: self.operator.clone(),
            source,
        }
    }

    fn describe(&self, position: Option<Position>) -> String {
        match position {
            Some(p) => match self.sources.get(p.source as usize) {
                Some(SourceLabel {
                    name,
                    topic: Some(topic),
                }) => format!(
                    "source `{name}` topic `{topic}` partition {} offset {}",
                    p.split, p.offset
                ),
                Some(SourceLabel { name, topic: None }) => {
                    format!("source `{name}` split {} offset {}", p.split, p.offset)
                }
                None => format!("source #{} split {} offset {}", p.source, p.split, p.offset),
            },
            None => "an unknown position".into(),
        }
    }

    /// Apply the operator's error policy to one record.
    pub(crate) fn on_error(
        &mut self,
        record: wit::Record,
        position: Option<Position>,
        message: String,
    ) -> Result<(), DataflowError> {
        self.counters.record_errors.inc();
        self.errors += 1;
        match self.policy {
            ErrorPolicy::Fail => Err(DataflowError::RecordFailed {
                operator: self.operator.clone(),
                plugin: self.plugin_label(),
                position: self.describe(position),
                message,
            }),
            ErrorPolicy::Skip => {
                self.counters.skipped.inc();
                tracing::debug!(operator = %self.operator, "skipped record at {}: {message}", self.describe(position));
                Ok(())
            }
            ErrorPolicy::DeadLetter => {
                self.counters.dead_letters.inc();
                let dl = self.dead_letter(record, position, &message);
                let wm = self.output_watermark();
                self.router.push(Some(DEAD_LETTER_OUTPUT), dl, wm)
            }
        }
    }

    /// A dead-letter record: the original bytes plus provenance, as a JSON
    /// value and as `sluice.*` headers.
    fn dead_letter(
        &self,
        original: wit::Record,
        position: Option<Position>,
        error: &str,
    ) -> Record {
        use base64::Engine as _;
        let info = self.plugin.info();
        let label = position.and_then(|p| self.sources.get(p.source as usize));
        let source = label.map(|l| l.name.clone());
        let topic = label.and_then(|l| l.topic.clone());
        let mut value = serde_json::json!({
            "operator": self.operator,
            "subtask": self.subtask,
            "plugin": info.path.file_name().map(|f| f.to_string_lossy().into_owned()),
            "plugin_digest": format!("sha256:{}", info.digest),
            "error": error,
            "source": source,
            "topic": topic,
            "split": position.map(|p| p.split),
            "offset": position.map(|p| p.offset),
            "event_time": original.event_time,
        });
        let text = |b: &[u8]| match std::str::from_utf8(b) {
            Ok(s) => serde_json::json!({ "utf8": s }),
            Err(_) => {
                serde_json::json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) })
            }
        };
        value["key"] = original
            .key
            .as_deref()
            .map(text)
            .unwrap_or(serde_json::Value::Null);
        value["value"] = text(&original.value);
        let mut headers = vec![
            Header {
                name: "sluice.operator".into(),
                value: self.operator.clone().into_bytes(),
            },
            Header {
                name: "sluice.plugin-digest".into(),
                value: info.digest.clone().into_bytes(),
            },
            Header {
                name: "sluice.error".into(),
                value: error.as_bytes().to_vec(),
            },
        ];
        if let Some(p) = position {
            headers.push(Header {
                name: "sluice.source".into(),
                value: source.unwrap_or_default().into_bytes(),
            });
            headers.push(Header {
                name: "sluice.split".into(),
                value: p.split.to_string().into_bytes(),
            });
            headers.push(Header {
                name: "sluice.offset".into(),
                value: p.offset.to_string().into_bytes(),
            });
            if let Some(topic) = topic {
                headers.push(Header {
                    name: "sluice.topic".into(),
                    value: topic.into_bytes(),
                });
                headers.push(Header {
                    name: "sluice.partition".into(),
                    value: p.split.to_string().into_bytes(),
                });
            }
        }
        Record {
            key: original.key,
            value: serde_json::to_vec(&value).expect("a JSON value always serializes"),
            event_time: original.event_time,
            headers,
            position,
        }
    }

    /// A guest call failed (its state writes were rolled back): count it
    /// and give the instance a fresh start.
    pub(crate) fn trapped(
        &mut self,
        instance: &mut Instance,
        e: &CallError,
    ) -> Result<(), DataflowError> {
        self.counters.traps.inc();
        if let CallError::Deadline { .. } = e {
            self.counters.timeouts.inc();
        }
        tracing::debug!(operator = %self.operator, subtask = self.subtask, "guest call failed: {e}");
        self.reset(instance)
    }

    /// A fresh instance after an undone call (its memory saw records the
    /// state no longer has).
    pub(crate) fn reset(&self, instance: &mut Instance) -> Result<(), DataflowError> {
        instance
            .reset()
            .map_err(|source| DataflowError::Instantiate {
                operator: self.operator.clone(),
                plugin: self.plugin.info().path.display().to_string(),
                source,
            })
    }

    /// A guest call over a lone record failed: the record goes to the
    /// error policy. A span of several is retried one by one (`None`).
    pub(crate) fn failed_span(
        &mut self,
        instance: &mut Instance,
        e: CallError,
        batch: &[wit::Record],
        positions: &[Option<Position>],
    ) -> Result<Option<usize>, DataflowError> {
        self.trapped(instance, &e)?;
        if batch.len() > 1 {
            return Ok(None);
        }
        self.on_error(batch[0].clone(), positions[0], e.to_string())?;
        Ok(Some(1))
    }
}

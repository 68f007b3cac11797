//! Event time in the pipeline file: watermarks, windows, state TTL.
//!
//! Durations are written as humantime strings (`"500ms"`, `"30s"`, `"10m"`,
//! `"1h 30m"`) or as integer milliseconds.

use serde::{Deserialize, Deserializer};

/// A duration in milliseconds, read from `"10m"` or `600000`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Millis(pub i64);

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Ms(i64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Ms(ms) if ms >= 0 => Ok(Millis(ms)),
            Raw::Ms(ms) => Err(serde::de::Error::custom(format!(
                "duration {ms} is negative"
            ))),
            Raw::Text(s) => humantime::parse_duration(&s)
                .ok()
                .and_then(|d| i64::try_from(d.as_millis()).ok())
                .map(Millis)
                .ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "`{s}` is not a duration; write e.g. \"500ms\", \"30s\", \"10m\" or \"1h\""
                    ))
                }),
        }
    }
}

/// Where a source's event times come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Timestamps {
    /// The record's own event time (set by the source, e.g. the generator's
    /// pickup time, or by the operator that parses it).
    #[default]
    Record,
    /// The wall-clock time at which the source read the record (ingestion
    /// time); watermarks follow the wall clock.
    Ingestion,
}

/// How watermarks are generated: on a source (from the records' event times,
/// per split) or on an operator (from the event times of what it emits, per
/// source split the records derive from; this is how a parsing operator
/// declares the timestamp field it extracted).
///
/// ```toml
/// [sources.watermarks]        # or [operators.watermarks]
/// out_of_orderness = "5s"     # bounded out-of-orderness (default 0)
/// idle_timeout = "30s"        # a split silent this long stops holding the watermark back
/// timestamps = "record"       # or "ingestion" (sources only)
/// alignment_group = "inputs"  # sources only: sources of one group wait for the slowest
/// max_drift = "30s"           # ...once their watermark is this far ahead of it
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatermarkSpec {
    /// How far behind the largest event time seen the watermark trails.
    pub out_of_orderness: Millis,
    /// After this much wall-clock time without records, a split no longer
    /// holds the watermark back (until it has records again).
    pub idle_timeout: Option<Millis>,
    /// Where event times come from.
    pub timestamps: Timestamps,
    /// Sources naming the same group wait for the slowest of them (sources
    /// only): a source whose watermark is more than `max_drift` ahead of the
    /// lowest in its group stops reading until the others catch up, so a
    /// union of their streams does not race ahead on the fast one (Flink's
    /// watermark alignment). Idle and finished sources do not hold it back.
    pub alignment_group: Option<String>,
    /// How far ahead of its group's slowest a source may run (default 0
    /// with a group).
    pub max_drift: Option<Millis>,
}

/// Which clock a window follows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimeCharacteristic {
    /// The records' event time; windows fire when the watermark passes their end.
    #[default]
    Event,
    /// The wall clock when the window operator processes the record; windows
    /// fire when the wall clock passes their end.
    Processing,
    /// The wall clock when the record reaches the window operator, written
    /// into the record as its event time; windows fire by that clock.
    Ingestion,
}

/// How records are assigned to windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowKind {
    /// Fixed-size, non-overlapping windows aligned to the epoch.
    Tumbling {
        /// Window size, ms.
        size: i64,
    },
    /// Fixed-size windows that start every `slide`.
    Sliding {
        /// Window size, ms.
        size: i64,
        /// Distance between window starts, ms.
        slide: i64,
    },
    /// Per-key windows that close after `gap` without records.
    Session {
        /// Inactivity gap, ms.
        gap: i64,
    },
}

/// A keyed window operator's `[operators.window]` table.
///
/// ```toml
/// [operators.window]
/// kind = "tumbling"          # tumbling | sliding | session
/// size = "10m"               # tumbling, sliding
/// slide = "1m"               # sliding
/// gap = "30m"                # session
/// time = "event"             # event | processing | ingestion
/// allowed_lateness = "1m"    # default 0
/// late_output = "late"       # side output for records later than that
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowSpec {
    /// Assignment.
    pub kind: WindowKind,
    /// Clock.
    pub time: TimeCharacteristic,
    /// How long after a window's end records are still added (and the window
    /// fires again), ms. Event time only.
    pub allowed_lateness: i64,
    /// Side output for records later than the allowed lateness.
    pub late_output: String,
}

/// Default name of the side output for late records.
pub const LATE_OUTPUT: &str = "late";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWindow {
    kind: String,
    size: Option<Millis>,
    slide: Option<Millis>,
    gap: Option<Millis>,
    #[serde(default)]
    time: TimeCharacteristic,
    #[serde(default)]
    allowed_lateness: Millis,
    late_output: Option<String>,
}

impl RawWindow {
    /// Validate; the error is (message, help).
    pub(crate) fn into_spec(self) -> Result<WindowSpec, (String, String)> {
        let need = |v: Option<Millis>, what: &str| -> Result<i64, (String, String)> {
            match v {
                Some(Millis(ms)) if ms > 0 => Ok(ms),
                Some(_) => Err((
                    format!("window `{what}` must be positive"),
                    format!("e.g. {what} = \"1m\""),
                )),
                None => Err((
                    format!("a {} window needs `{what}`", self.kind),
                    format!("e.g. {what} = \"1m\""),
                )),
            }
        };
        let unused = |v: &Option<Millis>, what: &str| -> Result<(), (String, String)> {
            match v {
                Some(_) => Err((
                    format!("a {} window has no `{what}`", self.kind),
                    format!("remove `{what}`"),
                )),
                None => Ok(()),
            }
        };
        let kind = match self.kind.as_str() {
            "tumbling" => {
                unused(&self.slide, "slide")?;
                unused(&self.gap, "gap")?;
                WindowKind::Tumbling {
                    size: need(self.size, "size")?,
                }
            }
            "sliding" => {
                unused(&self.gap, "gap")?;
                let (size, slide) = (need(self.size, "size")?, need(self.slide, "slide")?);
                if slide > size {
                    return Err((
                        format!("window slide ({slide} ms) is larger than its size ({size} ms)"),
                        "records between windows would be lost; use a slide of at most the size"
                            .into(),
                    ));
                }
                WindowKind::Sliding { size, slide }
            }
            "session" => {
                unused(&self.size, "size")?;
                unused(&self.slide, "slide")?;
                WindowKind::Session {
                    gap: need(self.gap, "gap")?,
                }
            }
            other => {
                return Err((
                    format!("unknown window kind `{other}`"),
                    "use kind = \"tumbling\", \"sliding\" or \"session\"".into(),
                ))
            }
        };
        if self.time != TimeCharacteristic::Event && self.allowed_lateness.0 > 0 {
            return Err((
                "allowed_lateness applies to event-time windows only".into(),
                "remove allowed_lateness, or use time = \"event\"".into(),
            ));
        }
        let late_output = self.late_output.unwrap_or_else(|| LATE_OUTPUT.to_string());
        if late_output.is_empty()
            || late_output.contains('.')
            || late_output == crate::stream::DEAD_LETTER_OUTPUT
        {
            return Err((
                format!("late_output `{late_output}` is not a valid side-output name"),
                "use a name without `.`, other than `dead-letter`".into(),
            ));
        }
        Ok(WindowSpec {
            kind,
            time: self.time,
            allowed_lateness: self.allowed_lateness.0,
            late_output,
        })
    }
}

/// The `[checkpoints]` table: periodic aligned checkpoints (on by default).
///
/// ```toml
/// [checkpoints]
/// interval = "10s"       # how often sources inject barriers
/// retain = 3             # complete checkpoints kept
/// dir = "checkpoints"    # default: <state dir>/<pipeline>/checkpoints
/// timeout = "10m"        # a checkpoint not complete by then is abandoned
/// enabled = true
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointSpec {
    /// Take checkpoints at all. Without, a crash restarts from scratch and
    /// file sinks are not transactional.
    pub enabled: bool,
    /// Time between checkpoints.
    pub interval: Millis,
    /// Number of complete checkpoints kept.
    pub retain: usize,
    /// Checkpoint store; relative to the pipeline file.
    pub dir: Option<std::path::PathBuf>,
    /// How long a checkpoint may take before it is abandoned.
    pub timeout: Millis,
}

impl Default for CheckpointSpec {
    fn default() -> Self {
        CheckpointSpec {
            enabled: true,
            interval: Millis(10_000),
            retain: 3,
            dir: None,
            timeout: Millis(600_000),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_text_and_millis() {
        let m: Millis = toml::Value::String("1m 30s".into()).try_into().unwrap();
        assert_eq!(m, Millis(90_000));
        let m: Millis = toml::Value::Integer(250).try_into().unwrap();
        assert_eq!(m, Millis(250));
        let e = toml::Value::String("ten minutes".into())
            .try_into::<Millis>()
            .unwrap_err();
        assert!(e.to_string().contains("is not a duration"), "{e}");
    }
}

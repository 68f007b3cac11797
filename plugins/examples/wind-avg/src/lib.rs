//! Average wind speed per turbine and window, with alerts: the window
//! aggregate (world `window-aggregate`) of `examples/wind`.
//!
//! **Input**: turbine readings as the `turbines` source produces them,
//! keyed by turbine id, with an event time:
//!
//! ```text
//! {"turbine":"T007","speed_mph":42.7,"time":1767225600000}
//! ```
//!
//! Only `speed_mph` is read (other fields are ignored); the turbine is the
//! record key. A value that is not a JSON object with a finite, non-negative
//! number `speed_mph` is a per-record error (`reading has no valid
//! speed_mph: ...`) and is left out of its window.
//!
//! **Params**: `alert_mph` (number, default `60`): the average speed above
//! which a window also raises an alert. Unknown params are refused.
//!
//! **Accumulator** (`SpeedSum`, postcard): the number of readings and the
//! sum of their speeds in thousandths of a mph, as integers, so the result
//! is exact (for speeds with up to three decimals; the `turbines` source
//! writes one) and the same in whatever order the readings arrive.
//!
//! **Output**, per fired window with at least one reading, on the main
//! output (no key and no event time set, so the host gives it the turbine
//! and the window's last millisecond, `end - 1`):
//!
//! ```text
//! {"turbine":"T007","start":1767225600000,"end":1767225660000,"avg_mph":61.35,"readings":60}
//! ```
//!
//! `avg_mph` is the average rounded half up to two decimals. When the exact
//! average is above `alert_mph`, the window also emits on the side output
//! `alerts` (stream `<operator>.alerts`):
//!
//! ```text
//! {"turbine":"T007","start":1767225600000,"end":1767225660000,"avg_mph":61.35,"alert":"average wind speed above 60 mph"}
//! ```
//!
//! A window whose every reading failed emits nothing.

use serde::{Deserialize, Serialize};
use sluice_sdk::{Aggregate, Error, Record, Window, WindowOutput};

/// The side output that carries alerts.
pub const ALERTS: &str = "alerts";

/// The params.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Average speed (mph) above which a window raises an alert.
    #[serde(default = "default_alert_mph")]
    pub alert_mph: f64,
}

fn default_alert_mph() -> f64 {
    60.0
}

/// The accumulator: readings and their speed sum in thousandths of a mph.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpeedSum {
    /// Readings added.
    pub readings: u64,
    /// Sum of `round(speed_mph * 1000)` over them.
    pub milli_mph: i64,
}

impl SpeedSum {
    /// The average speed in hundredths of a mph, rounded half up; `None`
    /// without readings.
    pub fn avg_hundredths(&self) -> Option<i64> {
        if self.readings == 0 {
            return None;
        }
        // milli / (10 * n), rounded half up (the sum is never negative).
        let (num, den) = (self.milli_mph as i128, 10 * self.readings as i128);
        Some(((2 * num + den) / (2 * den)) as i64)
    }

    /// Whether the exact average is above `mph`.
    pub fn above(&self, mph: f64) -> bool {
        self.readings > 0 && self.milli_mph as f64 > mph * 1000.0 * self.readings as f64
    }
}

#[derive(Deserialize)]
struct Reading {
    speed_mph: f64,
}

#[derive(Serialize)]
struct Average<'a> {
    turbine: &'a str,
    start: i64,
    end: i64,
    avg_mph: f64,
    readings: u64,
}

#[derive(Serialize)]
struct Alert<'a> {
    turbine: &'a str,
    start: i64,
    end: i64,
    avg_mph: f64,
    alert: String,
}

#[sluice_sdk::aggregate]
impl Aggregate for SpeedSum {
    type Params = Config;

    fn add(&mut self, record: &Record, _: &Config) -> Result<(), Error> {
        let reading: Reading = serde_json::from_slice(&record.value)
            .map_err(|e| Error::msg(format!("reading has no valid speed_mph: {e}")))?;
        let speed = reading.speed_mph;
        if !(speed.is_finite() && speed >= 0.0) {
            sluice_sdk::bail!("reading has no valid speed_mph: {speed} is not a speed");
        }
        self.readings += 1;
        self.milli_mph += (speed * 1000.0).round() as i64;
        Ok(())
    }

    fn merge(&mut self, other: Self, _: &Config) {
        self.readings += other.readings;
        self.milli_mph += other.milli_mph;
    }

    fn finish(
        self,
        key: &[u8],
        window: Window,
        out: &mut WindowOutput,
        config: &Config,
    ) -> Result<(), Error> {
        let Some(hundredths) = self.avg_hundredths() else {
            return Ok(());
        };
        let turbine = String::from_utf8_lossy(key);
        let avg_mph = hundredths as f64 / 100.0;
        out.emit(Record::from_json(&Average {
            turbine: &turbine,
            start: window.start,
            end: window.end,
            avg_mph,
            readings: self.readings,
        })?);
        if self.above(config.alert_mph) {
            out.emit_to(
                ALERTS,
                Record::from_json(&Alert {
                    turbine: &turbine,
                    start: window.start,
                    end: window.end,
                    avg_mph,
                    alert: format!("average wind speed above {} mph", config.alert_mph),
                })?,
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use sluice_sdk::aggregate::FiredWindow;
    use sluice_sdk::testing::AggregateHarness;
    use sluice_sdk::{aggregate_harness, Record, Window};

    use super::SpeedSum;

    const T0: i64 = 1_767_225_600_000;

    fn reading(turbine: &str, speed: f64, t: i64) -> Record {
        Record::new(format!(
            r#"{{"turbine":"{turbine}","speed_mph":{speed},"time":{t}}}"#
        ))
        .with_key(turbine)
        .with_event_time(t)
    }

    #[test]
    fn averages_per_turbine_and_minute_with_alerts() {
        let mut h = aggregate_harness!();
        let mut records = Vec::new();
        // T001: 60 readings in the first minute averaging 61.35 (alert).
        for i in 0..60 {
            let speed = if i % 2 == 0 { 61.3 } else { 61.4 };
            records.push(reading("T001", speed, T0 + i * 1000));
        }
        // T002: 3 calm readings, one in the next minute; exactly 60 is no alert.
        records.push(reading("T002", 10.0, T0 + 5_000));
        records.push(reading("T002", 20.5, T0 + 59_999));
        records.push(reading("T002", 60.0, T0 + 60_000));
        let run = h.tumbling(60_000, records);
        assert!(run.record_errors.is_empty(), "{:?}", run.record_errors);
        let end = T0 + 60_000;
        assert_eq!(
            run.result.main_values(),
            [
                format!(
                    r#"{{"turbine":"T001","start":{T0},"end":{end},"avg_mph":61.35,"readings":60}}"#
                ),
                format!(
                    r#"{{"turbine":"T002","start":{T0},"end":{end},"avg_mph":15.25,"readings":2}}"#
                ),
                format!(
                    r#"{{"turbine":"T002","start":{end},"end":{},"avg_mph":60.0,"readings":1}}"#,
                    end + 60_000
                ),
            ]
        );
        let alerts = run.result.side("alerts");
        assert_eq!(alerts.len(), 1);
        assert_eq!(
            alerts[0].value_str().unwrap(),
            format!(
                r#"{{"turbine":"T001","start":{T0},"end":{end},"avg_mph":61.35,"alert":"average wind speed above 60 mph"}}"#
            )
        );
        // The host's defaults: the turbine as key, end - 1 as event time.
        assert_eq!(alerts[0].key_str(), Some("T001"));
        assert_eq!(run.result.main()[0].event_time, Some(end - 1));
        assert_eq!(alerts[0].event_time, Some(end - 1));
    }

    #[test]
    fn alert_threshold_from_params() {
        let mut h = aggregate_harness!(r#"{"alert_mph": 12.5}"#);
        let run = h.tumbling(
            60_000,
            vec![reading("T9", 12.6, T0), reading("T9", 12.5, T0 + 1)],
        );
        let alerts = run.result.side("alerts");
        assert_eq!(alerts.len(), 1);
        assert!(alerts[0]
            .value_str()
            .unwrap()
            .ends_with(r#""avg_mph":12.55,"alert":"average wind speed above 12.5 mph"}"#));
        let err =
            AggregateHarness::try_new(crate::__sluice_operator(), r#"{"alert": 5}"#).unwrap_err();
        assert!(err.message().contains("unknown field `alert`"), "{err}");
    }

    #[test]
    fn rounding_is_exact_and_order_independent() {
        let s = |readings, milli_mph| SpeedSum {
            readings,
            milli_mph,
        };
        assert_eq!(s(3, 100_000).avg_hundredths(), Some(3333)); // 33.333..
        assert_eq!(s(3, 200_000).avg_hundredths(), Some(6667)); // 66.666..
        assert_eq!(s(2, 100_050).avg_hundredths(), Some(5003)); // 50.025 -> up
        assert_eq!(s(0, 0).avg_hundredths(), None);
        assert!(s(2, 120_001).above(60.0) && !s(2, 120_000).above(60.0));
        // 0.1 + 0.2 style float error does not leak into the sum.
        let mut h = aggregate_harness!();
        let forward = h.tumbling(
            60_000,
            [0.1, 0.2, 0.3]
                .iter()
                .map(|v| reading("T", *v, T0))
                .collect(),
        );
        let backward = h.tumbling(
            60_000,
            [0.3, 0.2, 0.1]
                .iter()
                .map(|v| reading("T", *v, T0))
                .collect(),
        );
        assert_eq!(forward.result.main_values(), backward.result.main_values());
        assert!(forward.result.main_values()[0].contains(r#""avg_mph":0.2,"#));
    }

    #[test]
    fn bad_readings_are_record_errors_and_merge_adds_up() {
        let mut h = aggregate_harness!();
        let run = h.tumbling(
            60_000,
            vec![
                Record::new("not json").with_key("T1").with_event_time(T0),
                Record::new(r#"{"speed_mph":-1}"#)
                    .with_key("T1")
                    .with_event_time(T0),
                Record::new(r#"{"speed":3}"#)
                    .with_key("T2")
                    .with_event_time(T0),
            ],
        );
        assert_eq!(
            run.record_errors
                .iter()
                .map(|e| e.input)
                .collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert!(run.record_errors[1].message.contains("-1 is not a speed"));
        // Windows with no valid reading emit nothing.
        assert!(run.result.emits.is_empty(), "{:?}", run.result);

        let enc = |n, m| {
            AggregateHarness::encode(&SpeedSum {
                readings: n,
                milli_mph: m,
            })
        };
        let merged = h.merge(vec![vec![enc(1, 70_000), enc(3, 190_000)]]);
        let out = h.finish(vec![FiredWindow {
            key: b"T3".to_vec(),
            window: Window::new(0, 60_000),
            accumulator: merged[0].clone(),
        }]);
        assert_eq!(
            out.main_values(),
            [r#"{"turbine":"T3","start":0,"end":60000,"avg_mph":65.0,"readings":4}"#]
        );
        assert_eq!(out.side("alerts").len(), 1);
    }
}

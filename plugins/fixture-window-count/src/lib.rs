//! Fixture: a window aggregate (world `window-aggregate`) that counts the
//! records of each window and sums a JSON number field of their values, for
//! the host's window tests.
//!
//! Params: `field` (string, optional, default `"value"`): the name of the
//! top-level field of the record value (a JSON object) to sum.
//!
//! `add`: a record whose value is not JSON is a per-record error
//! `record value is not JSON: <serde_json error>`; one whose value is not an
//! object with a number field `<field>` is a per-record error
//! `record value has no number field `<field>``. Such records are left out
//! of their window (neither counted nor summed).
//!
//! `finish`: per fired window, emits one record on the main output **with no
//! key, no event time and no headers** (so the host gives it the window's key
//! and `end - 1` as event time), whose value is
//!
//! ```text
//! {"key":"<key>","start":<start>,"end":<end>,"count":<n>,"sum":<sum>}
//! ```
//!
//! (fields in this order, no spaces). `<key>` is the window's key as UTF-8
//! (lossy, JSON-escaped). `<sum>` is a JSON integer if every summed value
//! was an integer that fits in an i64 and the sum did not overflow an i64,
//! otherwise a float as serde_json prints an f64 (e.g. `3.5`, `3.0`). An empty
//! window (every record failed) has `"count":0,"sum":0`.
//!
//! The accumulator is `CountSum` encoded with postcard.

use serde::{Deserialize, Serialize};
use sluice_sdk::{Aggregate, Error, Record, Window, WindowOutput};

/// The params.
#[derive(Debug, Deserialize)]
pub struct Config {
    /// The JSON field to sum.
    #[serde(default = "default_field")]
    pub field: String,
}

fn default_field() -> String {
    "value".to_owned()
}

/// The accumulator: a count and a sum kept exact while it is integral.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct CountSum {
    /// Records added.
    pub count: u64,
    /// Sum of the integral values (while `float` is false: the whole sum).
    pub ints: i64,
    /// Sum of the other values.
    pub floats: f64,
    /// Whether the sum is a float: a non-integral value was added or the
    /// integral sum overflowed.
    pub float: bool,
}

impl CountSum {
    fn add_number(&mut self, n: &serde_json::Number) {
        match n.as_i64() {
            Some(i) if !self.float => match self.ints.checked_add(i) {
                Some(sum) => self.ints = sum,
                None => {
                    self.float = true;
                    self.floats += i as f64;
                }
            },
            _ => {
                self.float = true;
                self.floats += n.as_f64().unwrap_or(0.0);
            }
        }
    }

    /// The sum as JSON.
    pub fn sum(&self) -> serde_json::Value {
        if self.float {
            serde_json::json!(self.ints as f64 + self.floats)
        } else {
            serde_json::json!(self.ints)
        }
    }
}

#[derive(Serialize)]
struct Out<'a> {
    key: &'a str,
    start: i64,
    end: i64,
    count: u64,
    sum: serde_json::Value,
}

#[sluice_sdk::aggregate]
impl Aggregate for CountSum {
    type Params = Config;

    fn add(&mut self, record: &Record, config: &Config) -> Result<(), Error> {
        let value: serde_json::Value = serde_json::from_slice(&record.value)
            .map_err(|e| Error::msg(format!("record value is not JSON: {e}")))?;
        let Some(serde_json::Value::Number(n)) = value.get(&config.field) else {
            sluice_sdk::bail!("record value has no number field `{}`", config.field);
        };
        self.count += 1;
        self.add_number(n);
        Ok(())
    }

    fn merge(&mut self, other: Self, _: &Config) {
        self.count += other.count;
        if !self.float && !other.float {
            if let Some(sum) = self.ints.checked_add(other.ints) {
                self.ints = sum;
                return;
            }
        }
        self.float = true;
        self.floats += other.ints as f64 + other.floats;
    }

    fn finish(
        self,
        key: &[u8],
        window: Window,
        out: &mut WindowOutput,
        _: &Config,
    ) -> Result<(), Error> {
        let value = serde_json::to_vec(&Out {
            key: &String::from_utf8_lossy(key),
            start: window.start,
            end: window.end,
            count: self.count,
            sum: self.sum(),
        })?;
        out.emit(Record::new(value));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use sluice_sdk::aggregate::{Accumulate, FiredWindow};
    use sluice_sdk::testing::AggregateHarness;
    use sluice_sdk::{aggregate_harness, Record, Window};

    use super::CountSum;

    fn rec(key: &str, t: i64, value: &str) -> Record {
        Record::new(value).with_key(key).with_event_time(t)
    }

    #[test]
    fn tumbling_windows_count_and_sum() {
        let mut h = aggregate_harness!();
        let run = h.tumbling(
            1000,
            vec![
                rec("a", 10, r#"{"value": 2}"#),
                rec("b", 20, r#"{"value": 1.5}"#),
                rec("a", 999, r#"{"value": 3, "other": "x"}"#),
                rec("a", 1000, r#"{"value": -1}"#),
                rec("a", 30, "not json"),
                rec("b", 40, r#"{"other": 1}"#),
                rec("b", 50, r#"{"value": "2"}"#),
                rec("b", 60, r#"{"value": 2}"#),
            ],
        );
        assert_eq!(
            run.result.main_values(),
            [
                r#"{"key":"a","start":0,"end":1000,"count":2,"sum":5}"#,
                r#"{"key":"b","start":0,"end":1000,"count":2,"sum":3.5}"#,
                r#"{"key":"a","start":1000,"end":2000,"count":1,"sum":-1}"#,
            ]
        );
        // The host's defaults: the window's key and end - 1.
        let first = run.result.main()[0];
        assert_eq!(first.key_str(), Some("a"));
        assert_eq!(first.event_time, Some(999));
        assert_eq!(
            run.record_errors
                .iter()
                .map(|e| (e.input, e.message.as_str()))
                .collect::<Vec<_>>(),
            [
                (
                    4,
                    "record value is not JSON: expected ident at line 1 column 2"
                ),
                (5, "record value has no number field `value`"),
                (6, "record value has no number field `value`"),
            ]
        );
    }

    #[test]
    fn field_param_and_accumulators_across_batches() {
        let mut h = aggregate_harness!(r#"{"field": "fare"}"#);
        let first = h.add(
            vec![
                Record::new(r#"{"fare": 10}"#),
                Record::new(r#"{"value": 1}"#),
            ],
            vec![Accumulate {
                accumulator: None,
                inputs: vec![0, 1],
            }],
        );
        assert_eq!(first.errors.len(), 1);
        assert_eq!(first.errors[0].input, 1);
        let second = h.add(
            vec![Record::new(r#"{"fare": 0.25}"#)],
            vec![Accumulate {
                accumulator: Some(first.accumulators[0].clone()),
                inputs: vec![0],
            }],
        );
        let acc: CountSum = AggregateHarness::decode(&second.accumulators[0]);
        assert_eq!((acc.count, acc.sum()), (2, serde_json::json!(10.25)));
        let out = h.finish(vec![FiredWindow {
            key: b"k".to_vec(),
            window: Window::new(0, 60_000),
            accumulator: second.accumulators[0].clone(),
        }]);
        assert_eq!(
            out.main_values(),
            [r#"{"key":"k","start":0,"end":60000,"count":2,"sum":10.25}"#]
        );
    }

    #[test]
    fn merge_session_windows() {
        let mut h = aggregate_harness!();
        let enc = |c: u64, s: i64| {
            AggregateHarness::encode(&CountSum {
                count: c,
                ints: s,
                ..CountSum::default()
            })
        };
        let merged = h.merge(vec![vec![enc(1, 2), enc(2, 3), enc(1, 1)], vec![enc(4, 4)]]);
        assert_eq!(merged.len(), 2);
        let a: CountSum = AggregateHarness::decode(&merged[0]);
        assert_eq!((a.count, a.sum()), (4, serde_json::json!(6)));
        let b: CountSum = AggregateHarness::decode(&merged[1]);
        assert_eq!((b.count, b.sum()), (4, serde_json::json!(4)));
        let overflow = h.merge(vec![vec![enc(1, i64::MAX), enc(1, 1)]]);
        let o: CountSum = AggregateHarness::decode(&overflow[0]);
        assert!(o.float);
    }

    #[test]
    fn empty_window_and_corrupt_accumulator() {
        let mut h = aggregate_harness!();
        let added = h.add(
            vec![Record::new("{}"), Record::new("{}")],
            vec![
                Accumulate {
                    accumulator: None,
                    inputs: vec![0],
                },
                Accumulate {
                    accumulator: Some(vec![0xff; 3]),
                    inputs: vec![1],
                },
            ],
        );
        // The corrupt accumulator is kept as it was; its record is an error.
        assert_eq!(added.accumulators[1], vec![0xff; 3]);
        assert_eq!(added.errors.len(), 2);
        assert!(added.errors[1]
            .message
            .starts_with("cannot decode the accumulator"));
        let out = h.finish(vec![
            FiredWindow {
                key: b"e".to_vec(),
                window: Window::new(5, 10),
                accumulator: added.accumulators[0].clone(),
            },
            FiredWindow {
                key: b"x".to_vec(),
                window: Window::new(5, 10),
                accumulator: added.accumulators[1].clone(),
            },
        ]);
        assert_eq!(
            out.main_values(),
            [r#"{"key":"e","start":5,"end":10,"count":0,"sum":0}"#]
        );
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].input, 1);
    }
}

//! Benchmark plugin for `benches/checkpoints.rs`: builds a chosen number of
//! distinct keys of keyed state from the `generator` source's taxi trips.
//! One plugin, used twice in a pipeline with different params:
//!
//! - `mode = "key"` (unkeyed, upstream): reads `trip_id` from the trip JSON
//!   (the generator writes it first: `{"trip_id":<n>,...}`) and emits a
//!   record with key `trip_id % keys` (decimal ASCII), value `trip_id`
//!   (8 bytes, little endian), event time kept. So records `0..keys` write
//!   every key once, and the next `keys` records every key again. A value
//!   that does not start with a trip id is a per-record error.
//! - `mode = "fill"` (keyed, `key_by = "key"`): sets the value state
//!   `last` (a `u64`, postcard: a varint of at most 10 bytes) of the
//!   record's key to its value; never reads state. What it emits is `emit`:
//!   - `"none"` (default): nothing;
//!   - `"each"`: per input, a record with the input's key and value
//!     `{"key":"<key>"}`;
//!   - `"stamp"`: whenever the wall clock's millisecond differs from the
//!     one of the previous record of this subtask, an unkeyed record
//!     `{"s":<subtask>,"t":<ms since the epoch>,"n":<records since the
//!     previous stamp>}`, so a benchmark can find pauses (a gap between two
//!     stamps of a subtask) at a resolution of ~1 ms without writing a line
//!     per record. Needs `grants = { clock = true }` (otherwise the clock
//!     reads 0 and only the first record is stamped).
//!
//! Unknown params are refused.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use sluice_sdk::{bail, Context, Error, Record, ValueState};

static LAST: ValueState<u64> = ValueState::new("last");

/// What the operator does.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Key trips by `trip_id % keys`.
    Key,
    /// Set the value state of each record's key.
    Fill,
}

/// What `fill` emits.
#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Emit {
    /// Nothing.
    #[default]
    None,
    /// A small record per input.
    Each,
    /// A wall-clock stamp per millisecond with records.
    Stamp,
}

/// The params.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `"key"` or `"fill"`.
    pub mode: Mode,
    /// Number of distinct keys (`mode = "key"`); at least 1.
    #[serde(default = "default_keys")]
    pub keys: u64,
    /// What `fill` emits.
    #[serde(default)]
    pub emit: Emit,
}

fn default_keys() -> u64 {
    1_000_000
}

thread_local! {
    /// (millisecond of the last stamp, records since).
    static STAMP: Cell<(i64, u64)> = const { Cell::new((i64::MIN, 0)) };
}

/// The `trip_id` at the start of a generator trip.
fn trip_id(json: &[u8]) -> Option<u64> {
    let rest = json.strip_prefix(b"{\"trip_id\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    rest[..digits].iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Key a trip, or fill state for a keyed record.
#[sluice_sdk::process(params = Config)]
pub fn state_fill(record: Record, ctx: &mut Context, config: &Config) -> Result<(), Error> {
    match config.mode {
        Mode::Key => {
            let Some(id) = trip_id(&record.value) else {
                bail!("value does not start with {{\"trip_id\":<n>");
            };
            let key = (id % config.keys.max(1)).to_string();
            ctx.emit(Record {
                key: Some(key.into_bytes()),
                value: id.to_le_bytes().to_vec(),
                event_time: record.event_time,
                headers: Vec::new(),
            });
        }
        Mode::Fill => {
            let Ok(bytes) = <[u8; 8]>::try_from(record.value.as_slice()) else {
                bail!("value is not an 8-byte trip id: key the input with mode = \"key\"");
            };
            LAST.set(&u64::from_le_bytes(bytes))?;
            match config.emit {
                Emit::None => {}
                Emit::Each => {
                    let key = record
                        .key
                        .as_deref()
                        .map(String::from_utf8_lossy)
                        .unwrap_or_default();
                    let value = format!("{{\"key\":\"{key}\"}}");
                    ctx.emit(Record {
                        key: record.key.clone(),
                        value: value.into_bytes(),
                        event_time: record.event_time,
                        headers: Vec::new(),
                    });
                }
                Emit::Stamp => {
                    let now = now_ms();
                    let (last, n) = STAMP.get();
                    if now != last {
                        let value = format!(
                            "{{\"s\":{},\"t\":{now},\"n\":{}}}",
                            ctx.params().subtask(),
                            n + 1
                        );
                        ctx.emit(Record {
                            key: None,
                            value: value.into_bytes(),
                            event_time: record.event_time,
                            headers: Vec::new(),
                        });
                        STAMP.set((now, 0));
                    } else {
                        STAMP.set((last, n + 1));
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use sluice_sdk::testing::Harness;
    use sluice_sdk::{harness, Record};

    fn trip(id: u64) -> Record {
        Record::new(format!("{{\"trip_id\":{id},\"vendor_id\":2}}")).with_event_time(7)
    }

    #[test]
    fn keys_by_trip_id_modulo() {
        let mut h = harness!(r#"{"mode":"key","keys":10}"#);
        let out = h.process(vec![trip(3), trip(13), trip(12345), Record::new("garbage")]);
        let main = out.main();
        let keys: Vec<_> = main
            .iter()
            .map(|r| r.key_str().unwrap().to_string())
            .collect();
        assert_eq!(keys, ["3", "3", "5"]);
        assert_eq!(main[1].value, 13u64.to_le_bytes());
        assert_eq!(main[0].event_time, Some(7));
        assert_eq!(out.errors.len(), 1);
    }

    #[test]
    fn fill_sets_the_value_state() {
        let mut h = harness!(r#"{"mode":"fill","emit":"each"}"#);
        let rec = |k: &str, v: u64| Record::new(v.to_le_bytes().to_vec()).with_key(k);
        let out = h.process(vec![rec("a", 1), rec("b", 2), rec("a", 3)]);
        assert_eq!(
            out.main_values(),
            [r#"{"key":"a"}"#, r#"{"key":"b"}"#, r#"{"key":"a"}"#]
        );
        assert_eq!(h.value::<u64>("last", b"a"), Some(3));
        assert_eq!(h.value::<u64>("last", b"b"), Some(2));
    }

    #[test]
    fn unknown_params_are_refused() {
        let err = Harness::try_new(crate::__sluice_operator(), r#"{"mode":"fill","kyes":3}"#)
            .unwrap_err();
        assert!(err.message().contains("kyes"), "{err}");
    }
}

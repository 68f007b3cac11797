//! Benchmark plugin: a window aggregate (world `window-aggregate`) that only
//! counts the records of each window, for `benches/windows.rs`. It never
//! looks at a record's value, so what the benchmark measures is the host's
//! window machinery, the component calls and the accumulators in RocksDB.
//!
//! The accumulator is the count, a `u64` (postcard: a varint). `finish`
//! emits, per fired window, one record on the main output with no key, no
//! event time and no headers (the host gives it the window's key and
//! `end - 1`), whose value is
//!
//! ```text
//! {"key":"<key>","start":<start>,"end":<end>,"count":<n>}
//! ```
//!
//! (fields in this order, no spaces; `<key>` is the key as UTF-8, lossy,
//! JSON-escaped).

use std::fmt::Write;

use serde::{Deserialize, Serialize};
use sluice_sdk::{Aggregate, Error, Record, Window, WindowOutput};

/// The accumulator: records added to the window.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count(pub u64);

#[sluice_sdk::aggregate]
impl Aggregate for Count {
    type Params = ();

    fn add(&mut self, _: &Record, _: &()) -> Result<(), Error> {
        self.0 += 1;
        Ok(())
    }

    fn merge(&mut self, other: Self, _: &()) {
        self.0 += other.0;
    }

    fn finish(
        self,
        key: &[u8],
        window: Window,
        out: &mut WindowOutput,
        _: &(),
    ) -> Result<(), Error> {
        let key = String::from_utf8_lossy(key);
        let mut value = String::with_capacity(key.len() + 64);
        value.push_str("{\"key\":\"");
        for c in key.chars() {
            match c {
                '"' => value.push_str("\\\""),
                '\\' => value.push_str("\\\\"),
                c if (c as u32) < 0x20 => {
                    write!(value, "\\u{:04x}", c as u32).expect("write to a String")
                }
                c => value.push(c),
            }
        }
        write!(
            value,
            "\",\"start\":{},\"end\":{},\"count\":{}}}",
            window.start, window.end, self.0
        )
        .expect("write to a String");
        out.emit(Record::new(value));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use sluice_sdk::aggregate_harness;
    use sluice_sdk::Record;

    #[test]
    fn counts_per_key_and_tumbling_window() {
        let mut h = aggregate_harness!();
        let rec = |key: &str, t: i64| Record::new("ignored").with_key(key).with_event_time(t);
        let run = h.tumbling(
            1000,
            vec![
                rec("a", 10),
                rec("b", 20),
                rec("a", 999),
                rec("a", 1000),
                rec("q\"\\\n", 5),
            ],
        );
        assert_eq!(
            run.result.main_values(),
            [
                r#"{"key":"a","start":0,"end":1000,"count":2}"#,
                r#"{"key":"b","start":0,"end":1000,"count":1}"#,
                r#"{"key":"q\"\\\u000a","start":0,"end":1000,"count":1}"#,
                r#"{"key":"a","start":1000,"end":2000,"count":1}"#,
            ]
        );
        assert_eq!(run.result.main()[0].key_str(), Some("a"));
        assert_eq!(run.result.main()[0].event_time, Some(999));
    }
}

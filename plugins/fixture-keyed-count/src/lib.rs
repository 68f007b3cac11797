//! Fixture: a keyed counter. Per record key it keeps a count (value state
//! `count`, u64) and a count per distinct value (map state `per-value`,
//! String -> u64), and for each input emits on the main output, with the
//! input's key and event time, the value
//! `{"key":"<key>","count":<n>,"value":"<value>"}` (key and value as UTF-8,
//! lossy, JSON-escaped).
//!
//! A value containing `trap` panics *after* its state writes, so tests can
//! check that the host rolls back the writes of a trapping call.

use serde::Serialize;
use sluice_sdk::{Context, Error, MapState, Record, ValueState};

static COUNT: ValueState<u64> = ValueState::new("count");
static PER_VALUE: MapState<String, u64> = MapState::new("per-value");

#[derive(Serialize)]
struct Out<'a> {
    key: &'a str,
    count: u64,
    value: &'a str,
}

/// Count the record for its key.
#[sluice_sdk::process]
pub fn keyed_count(record: Record, ctx: &mut Context) -> Result<(), Error> {
    let count = COUNT.update(|n| n.unwrap_or(0) + 1)?;
    let value = String::from_utf8_lossy(&record.value).into_owned();
    let seen = PER_VALUE.get(&value)?.unwrap_or(0);
    PER_VALUE.insert(&value, &(seen + 1))?;
    if value.contains("trap") {
        panic!("fixture trap after counting {value}");
    }
    let key = record
        .key
        .as_deref()
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    let out = serde_json::to_vec(&Out {
        key: &key,
        count,
        value: &value,
    })?;
    ctx.emit(Record {
        key: record.key.clone(),
        value: out,
        event_time: record.event_time,
        headers: Vec::new(),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use sluice_sdk::{harness, Record};

    #[test]
    fn counts_per_key_across_batches() {
        let mut h = harness!();
        let out = h.process(vec![
            Record::new("x").with_key("a").with_event_time(10),
            Record::new("y").with_key("b"),
            Record::new("x").with_key("a"),
        ]);
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        assert_eq!(
            out.main_values(),
            [
                r#"{"key":"a","count":1,"value":"x"}"#,
                r#"{"key":"b","count":1,"value":"y"}"#,
                r#"{"key":"a","count":2,"value":"x"}"#,
            ]
        );
        assert_eq!(out.main()[0].key.as_deref(), Some(&b"a"[..]));
        assert_eq!(out.main()[0].event_time, Some(10));
        let out = h.process(vec![Record::new("q\"uote").with_key("a")]);
        assert_eq!(
            out.main_values(),
            [r#"{"key":"a","count":3,"value":"q\"uote"}"#]
        );
        assert_eq!(h.value::<u64>("count", b"a"), Some(3));
        assert_eq!(h.value::<u64>("count", b"b"), Some(1));
    }

    #[test]
    fn map_state_counts_distinct_values_per_key() {
        let mut h = harness!();
        h.process(vec![
            Record::new("x").with_key("a"),
            Record::new("y").with_key("a"),
            Record::new("x").with_key("a"),
            Record::new("x").with_key("b"),
        ]);
        assert_eq!(
            h.map_entries::<String, u64>("per-value", b"a"),
            [("x".to_owned(), 2), ("y".to_owned(), 1)]
        );
        assert_eq!(
            h.map_entries::<String, u64>("per-value", b"b"),
            [("x".to_owned(), 1)]
        );
        assert!(h.map_entries::<String, u64>("per-value", b"c").is_empty());
    }

    #[test]
    fn unkeyed_records_trap_like_the_host() {
        let mut h = harness!();
        let err = h.try_process(vec![Record::new("x")]).unwrap_err();
        assert!(err.contains("has no key"), "{err}");
    }
}

//! Fixture: keyed state with a time to live taken from the params, for the
//! host's state-TTL tests.
//!
//! Params: `ttl_ms` (non-negative integer, **required**; missing or invalid
//! refuses the plugin with `invalid params: ...`). The value state `last`
//! (a `String`) is declared with that TTL (`value-state.with-ttl("last",
//! ttl_ms)`).
//!
//! For each record (records need a key) it emits on the main output one
//! record with the input's key and event time, no headers, and the value
//!
//! ```text
//! {"key":"<key>","previous":<previous>}
//! ```
//!
//! where `<key>` is the key as UTF-8 (lossy, JSON-escaped) and `<previous>`
//! is the key's `last` as a JSON string, or `null` if unset or expired; then
//! it sets `last` to the record's value (UTF-8, lossy), which restarts its TTL.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_sdk::{Context, Error, Record, ValueState};

/// The raw params.
#[derive(Deserialize)]
struct Raw {
    ttl_ms: u64,
}

/// The params, as the operator uses them: the state handle, built at init
/// with the TTL from the params (see `sluice_sdk::state`, "Handles built at
/// run time").
#[derive(Deserialize)]
#[serde(from = "Raw")]
pub struct Config {
    last: ValueState<String>,
}

impl From<Raw> for Config {
    fn from(raw: Raw) -> Config {
        Config {
            last: ValueState::with_ttl("last", Duration::from_millis(raw.ttl_ms)),
        }
    }
}

#[derive(Serialize)]
struct Out<'a> {
    key: &'a str,
    previous: Option<&'a str>,
}

/// Emit the key's previous value, then remember this one.
#[sluice_sdk::process(params = Config)]
pub fn remember(record: Record, ctx: &mut Context, config: &Config) -> Result<(), Error> {
    let previous = config.last.get()?;
    let key = record
        .key
        .as_deref()
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    let value = serde_json::to_vec(&Out {
        key: &key,
        previous: previous.as_deref(),
    })?;
    config
        .last
        .set(&String::from_utf8_lossy(&record.value).into_owned())?;
    ctx.emit(Record {
        key: record.key.clone(),
        value,
        event_time: record.event_time,
        headers: Vec::new(),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use sluice_sdk::{harness, testing::Harness, Record};

    #[test]
    fn previous_value_until_it_expires() {
        let mut h = harness!(r#"{"ttl_ms": 1000}"#);
        let out = h.process(vec![
            Record::new("one").with_key("a").with_event_time(7),
            Record::new("two").with_key("a"),
            Record::new("x").with_key("b"),
        ]);
        assert_eq!(
            out.main_values(),
            [
                r#"{"key":"a","previous":null}"#,
                r#"{"key":"a","previous":"one"}"#,
                r#"{"key":"b","previous":null}"#,
            ]
        );
        assert_eq!(out.main()[0].key_str(), Some("a"));
        assert_eq!(out.main()[0].event_time, Some(7));
        // Written at processing time 0: visible up to 999, gone at 1000.
        h.advance_processing_time(999);
        assert_eq!(
            h.process(vec![Record::new("three").with_key("a")])
                .main_values(),
            [r#"{"key":"a","previous":"two"}"#]
        );
        // "three" was written at 999: it lives until 1999.
        h.advance_processing_time(1998);
        assert_eq!(h.value::<String>("last", b"a").as_deref(), Some("three"));
        assert_eq!(h.value::<String>("last", b"b"), None);
        h.advance_processing_time(1999);
        assert_eq!(
            h.process(vec![Record::new("four").with_key("a")])
                .main_values(),
            [r#"{"key":"a","previous":null}"#]
        );
    }

    #[test]
    fn ttl_ms_is_required() {
        let err = Harness::try_new(crate::__sluice_operator(), "{}").unwrap_err();
        assert_eq!(err.message(), "invalid params: missing field `ttl_ms`");
        let err = Harness::try_new(crate::__sluice_operator(), r#"{"ttl_ms": -1}"#).unwrap_err();
        assert!(err.message().starts_with("invalid params:"), "{err}");
    }
}

//! Fixture: a keyed process operator with timers (world
//! `keyed-process-operator`), for the host's timer tests.
//!
//! Params (both optional):
//! - `delay_ms` (integer, default `1000`): how far after the record the timer is;
//! - `domain` (`"event"`, the default, or `"processing"`): which clock.
//!
//! On each record (records need a key; in the event domain also an event time,
//! else the record is a per-record error `record has no event time` and
//! nothing changes): increments the value state `count` (u64) of the record's
//! key, then registers for that key an event-time timer at
//! `event_time + delay_ms`, or with `"domain": "processing"` a processing-time
//! timer at `current_processing_time() + delay_ms`. It emits nothing.
//!
//! On each timer: emits on the main output one record whose key is the
//! timer's key, whose event time is the timer's timestamp for an event-time
//! timer and none for a processing-time timer, with no headers, and whose
//! value is
//!
//! ```text
//! {"key":"<key>","timestamp":<ts>,"domain":"event"|"processing","count":<count>,"watermark":<watermark or null>}
//! ```
//!
//! (fields in this order, no spaces; `<key>` is the key as UTF-8, lossy,
//! JSON-escaped; `<count>` the key's `count`, `0` if unset (e.g. a second timer
//! of the same key); `<watermark>` the operator's current watermark, `null`
//! before the first) and then clears `count`.

use serde::{Deserialize, Serialize};
use sluice_sdk::{timers, Context, Error, Record, TimeDomain, Timer, ValueState};

static COUNT: ValueState<u64> = ValueState::new("count");

/// Which clock the timers follow.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Domain {
    /// Event time (the default).
    #[default]
    Event,
    /// Processing time.
    Processing,
}

/// The params.
#[derive(Debug, Deserialize)]
pub struct Config {
    /// Delay of each timer after its record, ms.
    #[serde(default = "default_delay")]
    pub delay_ms: i64,
    /// The clock of the timers.
    #[serde(default)]
    pub domain: Domain,
}

fn default_delay() -> i64 {
    1000
}

#[derive(Serialize)]
struct Fired<'a> {
    key: &'a str,
    timestamp: i64,
    domain: &'static str,
    count: u64,
    watermark: Option<i64>,
}

/// Count the record and arm a timer for its key.
#[sluice_sdk::process(params = Config, on_timer = fire)]
pub fn arm(record: Record, _ctx: &mut Context, config: &Config) -> Result<(), Error> {
    match config.domain {
        Domain::Event => {
            let Some(event_time) = record.event_time else {
                sluice_sdk::bail!("record has no event time");
            };
            COUNT.update(|n| n.unwrap_or(0) + 1)?;
            timers::register_event_time(event_time.saturating_add(config.delay_ms));
        }
        Domain::Processing => {
            COUNT.update(|n| n.unwrap_or(0) + 1)?;
            timers::register_processing_time(
                timers::current_processing_time().saturating_add(config.delay_ms),
            );
        }
    }
    Ok(())
}

/// Report and reset the count of the timer's key.
pub fn fire(timer: Timer, ctx: &mut Context, _config: &Config) -> Result<(), Error> {
    let count = COUNT.get()?.unwrap_or(0);
    COUNT.clear();
    let value = serde_json::to_vec(&Fired {
        key: &String::from_utf8_lossy(&timer.key),
        timestamp: timer.timestamp,
        domain: match timer.domain {
            TimeDomain::EventTime => "event",
            TimeDomain::ProcessingTime => "processing",
        },
        count,
        watermark: timers::current_watermark(),
    })?;
    let event_time = (timer.domain == TimeDomain::EventTime).then_some(timer.timestamp);
    ctx.emit(Record {
        key: Some(timer.key),
        value,
        event_time,
        headers: Vec::new(),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use sluice_sdk::{harness, Record, TimeDomain};

    #[test]
    fn event_time_timers_fire_with_the_watermark() {
        let mut h = harness!();
        let out = h.process(vec![
            Record::new("x").with_key("a").with_event_time(100),
            Record::new("x").with_key("b").with_event_time(150),
            Record::new("x").with_key("a").with_event_time(200),
            Record::new("x").with_key("a").with_event_time(100),
        ]);
        assert!(out.emits.is_empty() && out.errors.is_empty(), "{out:?}");
        assert_eq!(h.value::<u64>("count", b"a"), Some(3));
        assert_eq!(
            h.timers(b"a"),
            [(TimeDomain::EventTime, 1100), (TimeDomain::EventTime, 1200)]
        );
        assert!(h.advance_watermark(1099).emits.is_empty());
        let out = h.advance_watermark(1150);
        assert_eq!(
            out.main_values(),
            [
                r#"{"key":"a","timestamp":1100,"domain":"event","count":3,"watermark":1150}"#,
                r#"{"key":"b","timestamp":1150,"domain":"event","count":1,"watermark":1150}"#,
            ]
        );
        assert_eq!(out.main()[0].key.as_deref(), Some(&b"a"[..]));
        assert_eq!(out.main()[0].event_time, Some(1100));
        assert_eq!(
            out.emits.iter().map(|e| e.input).collect::<Vec<_>>(),
            [0, 1]
        );
        assert_eq!(h.value::<u64>("count", b"a"), None);
        let out = h.advance_watermark(5000);
        assert_eq!(
            out.main_values(),
            [r#"{"key":"a","timestamp":1200,"domain":"event","count":0,"watermark":5000}"#]
        );
        assert!(h.timers(b"a").is_empty() && h.timers(b"b").is_empty());
    }

    #[test]
    fn delay_and_missing_event_time() {
        let mut h = harness!(r#"{"delay_ms": 10}"#);
        let out = h.process(vec![
            Record::new("x").with_key("k"),
            Record::new("x").with_key("k").with_event_time(-5),
        ]);
        assert_eq!(out.error_messages(), ["record has no event time"]);
        assert_eq!(out.errors[0].input, 0);
        assert_eq!(h.timers(b"k"), [(TimeDomain::EventTime, 5)]);
        assert_eq!(h.value::<u64>("count", b"k"), Some(1));
    }

    #[test]
    fn processing_time_timers() {
        let mut h = harness!(r#"{"domain": "processing", "delay_ms": 500}"#);
        h.advance_processing_time(10_000);
        h.process(vec![
            Record::new("x").with_key("p"),
            Record::new("y").with_key("p"),
        ]);
        assert_eq!(h.timers(b"p"), [(TimeDomain::ProcessingTime, 10_500)]);
        // The watermark does not fire processing-time timers.
        assert!(h.advance_watermark(20_000).emits.is_empty());
        let out = h.advance_processing_time(10_500);
        assert_eq!(
            out.main_values(),
            [r#"{"key":"p","timestamp":10500,"domain":"processing","count":2,"watermark":20000}"#]
        );
        assert_eq!(out.main()[0].event_time, None);
    }

    #[test]
    fn watermark_is_null_before_the_first() {
        let mut h = harness!(r#"{"domain": "processing", "delay_ms": 0}"#);
        h.process(vec![Record::new("x").with_key("q\"uote")]);
        assert_eq!(
            h.advance_processing_time(0).main_values(),
            [r#"{"key":"q\"uote","timestamp":0,"domain":"processing","count":1,"watermark":null}"#]
        );
    }

    #[test]
    fn bad_params_refuse_the_plugin() {
        let err = sluice_sdk::testing::Harness::try_new(
            crate::__sluice_operator(),
            r#"{"domain": "wall"}"#,
        )
        .unwrap_err();
        assert!(err.message().contains("unknown variant `wall`"), "{err}");
    }
}

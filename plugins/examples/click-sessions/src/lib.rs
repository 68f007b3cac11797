//! Click sessions per user, closed by an event-time timer after `gap_ms`
//! without clicks: the keyed process operator with timers (world
//! `keyed-process-operator`) of `examples/sessions`.
//!
//! **Input**: clicks as the `clicks` source produces them, keyed by user id,
//! with an event time (the click's `time`):
//!
//! ```text
//! {"user":"u0042","page":"/products/17","time":1767225600000}
//! ```
//!
//! Only `page` is read from the value; the user is the record key and the
//! time the record's event time. A click without an event time, or whose
//! value is not a JSON object with a string `page`, is a per-record error
//! and changes nothing.
//!
//! **Params**: `gap_ms` (integer > 0, default `1800000`, 30 minutes): a
//! session ends once its user has not clicked for this long. Unknown params
//! are refused.
//!
//! **State**, per user, in the host's keyed state (never in guest memory):
//! the value state `session` (`Session`: first and last click time, number
//! of clicks, number of distinct pages) of the open session and the map
//! state `pages` (page -> `()`) of its distinct pages; and one event-time
//! timer at `last + gap_ms`, moved (deleted and registered again) whenever a
//! click makes `last` later.
//!
//! **Per click** at time `t`, with the open session `s`, if any:
//!
//! - no open session: `t` opens one;
//! - `s.start - gap_ms <= t <= s.last + gap_ms`: the click joins `s` (also
//!   when it arrives out of order, before `s.start`);
//! - `t > s.last + gap_ms`: `s` is over by event time, the watermark just has
//!   not reached its timer yet: `s` is emitted and cleared right away (its
//!   timer deleted), and `t` opens a new session;
//! - `t < s.start - gap_ms`: a late click, whose own session was closed
//!   already (only one session per user is open, the latest): it is emitted
//!   at once as a session of its own with one click.
//!
//! A late click that finds no open session (its session was closed by its
//! timer) opens a new session like any click; its timer is then already due
//! and fires at the next watermark, so late clicks that arrive close
//! together form one session. Either way a late click is never lost and
//! never counted twice, but it does not rejoin the session it belonged to.
//! Clicks whose `t + gap_ms` is at or below the watermark when they arrive
//! are counted in the counter `late_clicks`.
//!
//! **Output**, when a session's timer fires (or as above), on the main
//! output, keyed by user, with event time `end - 1` (as the host's window
//! results):
//!
//! ```text
//! {"user":"u0042","start":1767225600000,"end":1767229200000,"clicks":7,"pages":5}
//! ```
//!
//! `start` is the first click's time, `end` the last click's time plus
//! `gap_ms`, `pages` the number of distinct pages. The state is cleared.

use serde::{Deserialize, Serialize};
use sluice_sdk::{timers, Context, Counter, Error, MapState, Record, Timer, ValueState};

static SESSION: ValueState<Session> = ValueState::new("session");
static PAGES: MapState<String, ()> = MapState::new("pages");
static LATE_CLICKS: Counter = Counter::new("late_clicks");

/// The params.
#[derive(Debug, Deserialize)]
#[serde(try_from = "RawConfig")]
pub struct Config {
    /// Inactivity that ends a session, ms.
    pub gap_ms: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_gap_ms")]
    gap_ms: i64,
}

fn default_gap_ms() -> i64 {
    1_800_000
}

impl TryFrom<RawConfig> for Config {
    type Error = String;

    fn try_from(raw: RawConfig) -> Result<Config, String> {
        if raw.gap_ms <= 0 {
            return Err(format!("gap_ms must be positive, got {}", raw.gap_ms));
        }
        Ok(Config { gap_ms: raw.gap_ms })
    }
}

/// A user's open session (the value state `session`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Time of the first click.
    pub start: i64,
    /// Time of the last click.
    pub last: i64,
    /// Clicks in the session.
    pub clicks: u64,
    /// Distinct pages clicked (the entries of the map state `pages`).
    pub pages: u64,
}

#[derive(Deserialize)]
struct Click {
    page: String,
}

#[derive(Serialize)]
struct Out<'a> {
    user: &'a str,
    start: i64,
    end: i64,
    clicks: u64,
    pages: u64,
}

/// The output record of a closed session.
fn closed(user: &[u8], s: &Session, gap: i64) -> Result<Record, Error> {
    let end = s.last.saturating_add(gap);
    Ok(Record::from_json(&Out {
        user: &String::from_utf8_lossy(user),
        start: s.start,
        end,
        clicks: s.clicks,
        pages: s.pages,
    })?
    .with_key(user)
    .with_event_time(end - 1))
}

/// Open a session with one click (the state must be clear).
fn open(t: i64, page: &String, gap: i64) -> Result<(), Error> {
    PAGES.insert(page, &())?;
    SESSION.set(&Session {
        start: t,
        last: t,
        clicks: 1,
        pages: 1,
    })?;
    timers::register_event_time(t.saturating_add(gap));
    Ok(())
}

/// Add a click to its user's session.
#[sluice_sdk::process(params = Config, on_timer = close)]
pub fn sessionize(record: Record, ctx: &mut Context, config: &Config) -> Result<(), Error> {
    let Some(t) = record.event_time else {
        sluice_sdk::bail!("click has no event time");
    };
    let click: Click = record.json()?;
    let Some(user) = record.key else {
        sluice_sdk::bail!("click has no key: key the clicks by user");
    };
    let gap = config.gap_ms;
    if timers::current_watermark().is_some_and(|w| t.saturating_add(gap) <= w) {
        LATE_CLICKS.increment();
    }
    match SESSION.get()? {
        None => open(t, &click.page, gap)?,
        Some(mut s) if t >= s.start.saturating_sub(gap) && t <= s.last.saturating_add(gap) => {
            if t > s.last {
                timers::delete_event_time(s.last.saturating_add(gap));
                timers::register_event_time(t.saturating_add(gap));
                s.last = t;
            }
            s.start = s.start.min(t);
            s.clicks += 1;
            if !PAGES.contains_key(&click.page)? {
                PAGES.insert(&click.page, &())?;
                s.pages += 1;
            }
            SESSION.set(&s)?;
        }
        Some(s) if t > s.last => {
            // Over by event time; the watermark has not reached its timer yet.
            timers::delete_event_time(s.last.saturating_add(gap));
            ctx.emit(closed(&user, &s, gap)?);
            PAGES.clear();
            open(t, &click.page, gap)?;
        }
        Some(_) => {
            // Before the open session by more than the gap: its own session
            // was closed already.
            let alone = Session {
                start: t,
                last: t,
                clicks: 1,
                pages: 1,
            };
            ctx.emit(closed(&user, &alone, gap)?);
        }
    }
    Ok(())
}

/// The timer of a session: emit it and clear the user's state.
pub fn close(timer: Timer, ctx: &mut Context, config: &Config) -> Result<(), Error> {
    let Some(s) = SESSION.get()? else {
        return Ok(());
    };
    if s.last.saturating_add(config.gap_ms) != timer.timestamp {
        // A timer the session has moved past (never left registered).
        return Ok(());
    }
    SESSION.clear();
    PAGES.clear();
    ctx.emit(closed(&timer.key, &s, config.gap_ms)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use sluice_sdk::testing::Harness;
    use sluice_sdk::{harness, Record, TimeDomain};

    use super::Session;

    const T0: i64 = 1_767_225_600_000;
    const MIN: i64 = 60_000;
    const GAP: i64 = 30 * MIN;

    fn click(user: &str, page: &str, t: i64) -> Record {
        Record::new(format!(r#"{{"user":"{user}","page":"{page}","time":{t}}}"#))
            .with_key(user)
            .with_event_time(t)
    }

    fn session(user: &str, start: i64, last: i64, clicks: u64, pages: u64) -> String {
        format!(
            r#"{{"user":"{user}","start":{start},"end":{},"clicks":{clicks},"pages":{pages}}}"#,
            last + GAP
        )
    }

    #[test]
    fn a_session_closes_when_the_watermark_passes_last_click_plus_gap() {
        let mut h = harness!();
        let out = h.process(vec![
            click("u1", "/", T0),
            click("u2", "/cart", T0 + MIN),
            click("u1", "/search", T0 + 10 * MIN),
            click("u1", "/", T0 + 5 * MIN), // out of order, same session
        ]);
        assert!(out.emits.is_empty() && out.errors.is_empty(), "{out:?}");
        // One timer per user, moved to the last click + gap.
        assert_eq!(
            h.timers(b"u1"),
            [(TimeDomain::EventTime, T0 + 10 * MIN + GAP)]
        );
        assert_eq!(
            h.value::<Session>("session", b"u1"),
            Some(Session {
                start: T0,
                last: T0 + 10 * MIN,
                clicks: 3,
                pages: 2
            })
        );
        assert_eq!(h.map_entries::<String, ()>("pages", b"u1").len(), 2);

        assert!(h.advance_watermark(T0 + MIN + GAP - 1).emits.is_empty());
        let out = h.advance_watermark(T0 + MIN + GAP);
        assert_eq!(out.main_values(), [session("u2", T0 + MIN, T0 + MIN, 1, 1)]);
        assert_eq!(out.main()[0].key_str(), Some("u2"));
        assert_eq!(out.main()[0].event_time, Some(T0 + MIN + GAP - 1));
        // A click within the gap of the last one extends the session.
        h.process(vec![click("u1", "/blog/1", T0 + 40 * MIN - 1)]);
        let out = h.advance_watermark(T0 + 200 * MIN);
        assert_eq!(
            out.main_values(),
            [session("u1", T0, T0 + 40 * MIN - 1, 4, 3)]
        );
        // The state is cleared.
        assert_eq!(h.value::<Session>("session", b"u1"), None);
        assert!(h.map_entries::<String, ()>("pages", b"u1").is_empty());
        assert!(h.timers(b"u1").is_empty() && h.timers(b"u2").is_empty());
        assert_eq!(h.counter("late_clicks"), 0);
    }

    #[test]
    fn a_click_after_the_gap_closes_the_session_before_its_timer() {
        let mut h = harness!();
        let out = h.process(vec![
            click("u1", "/", T0),
            click("u1", "/cart", T0 + GAP + 1),
            click("u1", "/cart", T0 + GAP + 2),
        ]);
        assert_eq!(out.main_values(), [session("u1", T0, T0, 1, 1)]);
        assert_eq!(out.emits[0].input, 1);
        assert_eq!(h.timers(b"u1"), [(TimeDomain::EventTime, T0 + 2 * GAP + 2)]);
        let out = h.advance_watermark(i64::MAX);
        assert_eq!(
            out.main_values(),
            [session("u1", T0 + GAP + 1, T0 + GAP + 2, 2, 1)]
        );
    }

    #[test]
    fn late_clicks_start_sessions_of_their_own() {
        let mut h = harness!();
        h.process(vec![click("u1", "/a", T0), click("u1", "/b", T0 + MIN)]);
        let first = h.advance_watermark(T0 + 100 * MIN);
        assert_eq!(first.main_values(), [session("u1", T0, T0 + MIN, 2, 2)]);
        h.process(vec![click("u1", "/c", T0 + 99 * MIN)]);
        // Two late clicks of the closed session, with the next one open:
        // each is a one-click session at once.
        let out = h.process(vec![
            click("u1", "/a", T0 + 2 * MIN),
            click("u1", "/z", T0 + 3 * MIN),
        ]);
        assert_eq!(
            out.main_values(),
            [
                session("u1", T0 + 2 * MIN, T0 + 2 * MIN, 1, 1),
                session("u1", T0 + 3 * MIN, T0 + 3 * MIN, 1, 1)
            ]
        );
        assert_eq!(h.counter("late_clicks"), 2);
        let out = h.advance_watermark(T0 + 200 * MIN);
        assert_eq!(
            out.main_values(),
            [session("u1", T0 + 99 * MIN, T0 + 99 * MIN, 1, 1)]
        );
        // Late clicks with no open session: one session, closed at the next watermark.
        let out = h.process(vec![
            click("u1", "/x", T0 + 4 * MIN),
            click("u1", "/y", T0 + 5 * MIN),
        ]);
        assert!(out.emits.is_empty());
        assert_eq!(h.counter("late_clicks"), 4);
        let out = h.advance_watermark(T0 + 200 * MIN + 1);
        assert_eq!(
            out.main_values(),
            [session("u1", T0 + 4 * MIN, T0 + 5 * MIN, 2, 2)]
        );
    }

    #[test]
    fn gap_param_and_bad_clicks() {
        let mut h = harness!(r#"{"gap_ms": 1000}"#);
        let out = h.process(vec![
            Record::new(r#"{"page":"/"}"#).with_key("u1"),
            Record::new(r#"{"user":"u1"}"#)
                .with_key("u1")
                .with_event_time(5),
            click("u1", "/", 10),
            click("u1", "/", 1010),
        ]);
        assert_eq!(
            out.errors.iter().map(|e| e.input).collect::<Vec<_>>(),
            [0, 1]
        );
        assert_eq!(out.errors[0].message, "click has no event time");
        assert!(
            out.errors[1].message.contains("missing field `page`"),
            "{:?}",
            out.errors
        );
        assert_eq!(h.timers(b"u1"), [(TimeDomain::EventTime, 2010)]);
        let out = h.advance_watermark(2010);
        assert_eq!(
            out.main_values(),
            [r#"{"user":"u1","start":10,"end":2010,"clicks":2,"pages":1}"#]
        );
        for bad in [r#"{"gap_ms": 0}"#, r#"{"gap": 5}"#] {
            assert!(
                Harness::try_new(crate::__sluice_operator(), bad).is_err(),
                "{bad}"
            );
        }
    }
}

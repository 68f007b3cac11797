//! The `clicks` source: synthetic, deterministic web-analytics clicks, for
//! session windows (e.g. sessions per user with a 30-minute gap).
//!
//! Each record is one click as a JSON object, always with these fields in
//! this order:
//!
//! ```json
//! {"user":"u0042","page":"/products/17","time":1767225600000}
//! ```
//!
//! - `user`: the user id, `u` and the user's number `0..users` with at
//!   least four digits (`u0000`, `u0042`, `u12345`);
//! - `page`: the path clicked: `/`, `/products/<1..=500>` (low numbers
//!   more popular), `/category/<1..=12>`, `/search`, `/cart`, `/checkout`,
//!   `/blog/<1..=40>` or `/account` (never anything to escape in JSON);
//! - `time`: when the click happened, in ms since the Unix epoch.
//!
//! Every record has the user id (UTF-8) as key, the JSON as value,
//! `event_time` = `time`, and position `{source: <index of the source>,
//! split: <user number> % splits, offset}`, where `offset` counts the
//! records of that split from 0 in emission order.
//!
//! **Sessions.** Every user's first session starts within the first hour
//! after `start_ms`. A session has 1 to 100 clicks (on average about 6.7,
//! geometrically distributed); within a session, consecutive clicks are
//! 5 seconds to 10 minutes apart (log-uniformly, so a minute is typical; at
//! most `session_gap_ms / 2` if that is shorter than 10 minutes). Between
//! the last click of a session and the first of the user's next session
//! passes more than `session_gap_ms` + 1 minute (plus on average 30 minutes
//! more). So a session window with gap `session_gap_ms` recovers exactly
//! the generated sessions. All users are active at once: clicks of
//! hundreds of sessions interleave. Generation costs O(log users) per
//! click (a binary heap of the users' next click times).
//!
//! **Emission order.** Clicks are generated in event-time order and
//! delivered as follows:
//!
//! - an *on-time* click arrives 0 to `out_of_order_ms` ms after its event
//!   time, and clicks leave in order of arrival (ties in generation order).
//!   So its event time is at most `out_of_order_ms` behind the largest
//!   event time emitted before it;
//! - a *late* click (each with probability `late_ratio`) is held back until
//!   its split has emitted a click whose event time is at least 1 to 10
//!   minutes (uniformly drawn per click) newer, and then leaves right after
//!   it. When a bounded stream ends, clicks still held back leave last, in
//!   order of release time, and may be less late.
//!
//! A record is **late** if its event time is more than `out_of_order_ms`
//! behind the largest event time emitted before it by the source (all
//! splits). That is exactly the records a watermark of "largest event time
//! seen − `out_of_order_ms`" would drop; it holds per split as well. No
//! on-time click is late. Every late click released as above is, by at
//! least 1 minute (in its split and overall); one flushed at the end of a
//! bounded stream is unless its event time is within `out_of_order_ms` of
//! the largest one.
//!
//! The sequence depends only on the config, not on the machine or on the
//! position of the source in the pipeline: the random numbers come from
//! ChaCha8 seeded with `seed`, which is portable.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Write;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use sluice_types::{ConnectorError, Record};

use super::checks::{check_common, check_count};
use super::delivery::{Delay, Delivery};
use super::draw::{below, between, unit};
use super::synthetic::{Dataset, Sequence};

#[cfg(test)]
mod tests;

/// Configuration of a `clicks` source (`type = "clicks"`), which produces
/// synthetic web-analytics clicks as JSON (see the [module docs](self)).
/// All keys are optional.
///
/// ```toml
/// [[sources]]
/// name = "clicks"
/// type = "clicks"
/// seed = 7
/// users = 5000
/// records = 1_000_000        # 0 for an endless stream
/// splits = 4                 # user i goes to split i % 4
/// session_gap_ms = 1_800_000 # 30 minutes
/// out_of_order_ms = 5000
/// late_ratio = 0.005
/// rate = 5000.0
/// ```
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClickConfig {
    /// Seed of the random sequence. The same seed (and other settings) gives
    /// byte-identical records on every run and machine. Default: 42.
    pub seed: u64,
    /// Number of users, `u0000` to `u{users - 1}`. Must be between 1 and
    /// 1,000,000. Default: 1000.
    pub users: u32,
    /// Number of clicks to produce before the source is exhausted; 0 for an
    /// unbounded stream. Default: 100000.
    pub records: u64,
    /// Start of the first hour, in which every user's first session
    /// starts, in ms since the Unix epoch. Default: 1767225600000
    /// (2026-01-01T00:00:00Z).
    pub start_ms: i64,
    /// Records per second, paced like the `generator` source's `rate`. Must
    /// be > 0. Default: as fast as possible.
    pub rate: Option<f64>,
    /// Number of splits (emulated partitions); user `i` goes to split
    /// `i % splits`. Must be between 1 and 1,000,000. Default: 1.
    pub splits: u32,
    /// The session gap the data respects: clicks of one session are less
    /// than this apart, sessions of one user more than this plus a minute.
    /// Must be at least 20000. Default: 1800000 (30 minutes).
    pub session_gap_ms: i64,
    /// Largest amount, in ms, by which an on-time click's event time may
    /// precede that of clicks already emitted. Must be >= 0 and below 60000
    /// (the least delay of a late click). Default: 5000.
    pub out_of_order_ms: i64,
    /// Share of clicks, between 0 and 1, that are late: held back until
    /// their split has emitted clicks 1 to 10 minutes newer. Default: 0.005.
    pub late_ratio: f64,
}

impl Default for ClickConfig {
    fn default() -> Self {
        ClickConfig {
            seed: 42,
            users: 1_000,
            records: 100_000,
            start_ms: 1_767_225_600_000,
            rate: None,
            splits: 1,
            session_gap_ms: 1_800_000,
            out_of_order_ms: 5_000,
            late_ratio: 0.005,
        }
    }
}

/// Least and largest delay of a late click, in event-time ms.
const LATE_MIN_MS: i64 = 60_000;
const LATE_MAX_MS: i64 = 600_000;
/// Least session gap: within-session gaps go up to half of it, from 5 s.
const MIN_SESSION_GAP_MS: i64 = 20_000;

impl ClickConfig {
    /// Check the values that deserialization alone cannot: counts at least
    /// 1, a ratio in `[0, 1]`, a positive rate, an out-of-order bound in
    /// `0..60000`, a session gap of at least 20000.
    pub fn validate(&self) -> Result<(), ConnectorError> {
        check_count("clicks", "users", self.users, "1000")?;
        check_common(
            "clicks",
            self.rate,
            self.splits,
            self.out_of_order_ms,
            LATE_MIN_MS,
            self.late_ratio,
        )?;
        if !(MIN_SESSION_GAP_MS..=i64::MAX / 4).contains(&self.session_gap_ms) {
            return Err(ConnectorError::Config(format!(
                "clicks: `session_gap_ms` is {}, but it must be at least {MIN_SESSION_GAP_MS} \
                 (clicks within a session are 5 s or more apart); set e.g. \
                 `session_gap_ms = 1800000` (30 minutes) or leave it out for the default",
                self.session_gap_ms
            )));
        }
        Ok(())
    }
}

impl Dataset for ClickConfig {
    const TYPE: &'static str = "clicks";
    const DESCRIPTION: &'static str = "clicks generator";
    type Records = Clicks;

    fn validate(&self) -> Result<(), ConnectorError> {
        ClickConfig::validate(self)
    }

    fn rate(&self) -> Option<f64> {
        self.rate
    }

    fn sequence(&self, source_index: u16) -> Clicks {
        Clicks::new(self, source_index)
    }
}

// ---------------------------------------------------------------------------
// The click sequence.

/// Least gap between two clicks of a session, and the largest (unless half
/// the session gap is smaller).
const CLICK_GAP_MIN_MS: i64 = 5_000;
const CLICK_GAP_MAX_MS: i64 = 600_000;
/// Idle time beyond `session_gap_ms` + 1 minute: exponential with this
/// mean, capped.
const IDLE_MEAN_MS: f64 = 1_800_000.0;
const IDLE_CAP_MS: i64 = 6 * 3_600_000;
/// Probability that a session goes on after a click; sessions are capped.
const CONTINUE: f64 = 0.85;
const MAX_SESSION_CLICKS: u32 = 100;
/// Every user's first session starts within this much of `start_ms`.
const FIRST_SESSION_MS: u64 = 3_600_000;

struct User {
    key: Vec<u8>,
    split: u32,
    /// Number of the current session, from 0.
    session: u32,
    /// Clicks of the current session after the next one.
    left: u32,
    /// The next click is the first of its session.
    first: bool,
}

/// Ground truth of a click, for tests: the user's number and session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Truth {
    pub(crate) user: u32,
    pub(crate) session: u32,
}

/// The sequence of clicks a `clicks` source emits, in emission order.
pub struct Clicks {
    rng: ChaCha8Rng,
    users: Vec<User>,
    /// The users' next click times.
    next: BinaryHeap<Reverse<(i64, u32)>>,
    /// 0 for unbounded.
    records: u64,
    generated: u64,
    emitted: u64,
    session_gap_ms: i64,
    /// Largest gap within a session.
    click_gap_max_ms: i64,
    out_of_order_ms: i64,
    late_ratio: f64,
    delivery: Delivery<Truth>,
    scratch: Vec<u8>,
}

impl Clicks {
    pub(crate) fn new(config: &ClickConfig, source_index: u16) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let n = config.users.max(1);
        let splits = config.splits.max(1);
        let session_gap_ms = config.session_gap_ms.max(MIN_SESSION_GAP_MS);
        let mut users = Vec::with_capacity(n as usize);
        let mut next = BinaryHeap::with_capacity(n as usize);
        for i in 0..n {
            let mut user = User {
                key: format!("u{i:04}").into_bytes(),
                split: i % splits,
                session: 0,
                left: 0,
                first: true,
            };
            user.left = session_length(&mut rng) - 1;
            next.push(Reverse((
                config
                    .start_ms
                    .saturating_add(below(&mut rng, FIRST_SESSION_MS) as i64),
                i,
            )));
            users.push(user);
        }
        Clicks {
            rng,
            users,
            next,
            records: config.records,
            generated: 0,
            emitted: 0,
            session_gap_ms,
            click_gap_max_ms: CLICK_GAP_MAX_MS.min(session_gap_ms / 2),
            out_of_order_ms: config.out_of_order_ms.max(0),
            late_ratio: config.late_ratio,
            delivery: Delivery::new(source_index, splits),
            scratch: Vec::with_capacity(64),
        }
    }

    /// Records left before `records` is reached; `None` if unbounded.
    fn remaining_records(&self) -> Option<u64> {
        (self.records > 0).then(|| self.records - self.emitted)
    }

    /// Event time of the next click to generate, if there is one.
    fn horizon(&self) -> Option<i64> {
        if self.records > 0 && self.generated >= self.records {
            return None;
        }
        self.next.peek().map(|Reverse((time, _))| *time)
    }

    /// The next record, whether it was generated late, and its ground truth.
    pub(crate) fn next_labeled(&mut self) -> Option<(bool, Record, Truth)> {
        loop {
            let horizon = self.horizon();
            if let Some(out) = self.delivery.pop(horizon) {
                self.emitted += 1;
                return Some(out);
            }
            horizon?;
            self.generate();
        }
    }

    /// Generate the next click (of the user whose next click is earliest)
    /// into the delivery stage, and schedule that user's next click.
    fn generate(&mut self) {
        let Reverse((time, i)) = self.next.pop().expect("every user has a next click");
        self.generated += 1;
        let rng = &mut self.rng;
        let user = &mut self.users[i as usize];

        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        out.extend_from_slice(b"{\"user\":\"");
        out.extend_from_slice(&user.key);
        out.extend_from_slice(b"\",\"page\":\"");
        write_page(&mut out, rng, user.first);
        write!(out, "\",\"time\":{time}}}").expect("write to a Vec");
        let record = Record {
            key: Some(user.key.clone()),
            value: out.clone(),
            event_time: Some(time),
            headers: Vec::new(),
            position: None,
        };
        self.scratch = out;
        let truth = Truth {
            user: i,
            session: user.session,
        };
        let split = user.split;

        // Schedule the user's next click.
        let gap = if user.left > 0 {
            user.left -= 1;
            user.first = false;
            // Log-uniform between the least and largest gap.
            let ratio = self.click_gap_max_ms as f64 / CLICK_GAP_MIN_MS as f64;
            ((CLICK_GAP_MIN_MS as f64 * ratio.powf(unit(rng))).round() as i64)
                .clamp(CLICK_GAP_MIN_MS, self.click_gap_max_ms)
        } else {
            user.session += 1;
            user.left = session_length(rng) - 1;
            user.first = true;
            let idle = (-(1.0 - unit(rng)).ln() * IDLE_MEAN_MS) as i64;
            self.session_gap_ms + 60_000 + 1 + idle.min(IDLE_CAP_MS)
        };
        self.next.push(Reverse((time.saturating_add(gap), i)));

        let delay = if unit(rng) < self.late_ratio {
            Delay::Late(between(rng, LATE_MIN_MS, LATE_MAX_MS))
        } else {
            Delay::OnTime(between(rng, 0, self.out_of_order_ms))
        };
        self.delivery.push(split, record, delay, truth);
    }
}

/// Clicks in a session: 1 + geometric, capped.
fn session_length(rng: &mut ChaCha8Rng) -> u32 {
    let mut n = 1;
    while n < MAX_SESSION_CLICKS && unit(rng) < CONTINUE {
        n += 1;
    }
    n
}

/// A page path; sessions start on the home page, a product or a blog post.
fn write_page(out: &mut Vec<u8>, rng: &mut ChaCha8Rng, first: bool) {
    let u = below(rng, 100);
    let product = |rng: &mut ChaCha8Rng| 1 + (500.0 * unit(rng).powi(2)) as u64;
    let result = if first {
        match u {
            0..=39 => write!(out, "/"),
            40..=79 => write!(out, "/products/{}", product(rng)),
            _ => write!(out, "/blog/{}", 1 + below(rng, 40)),
        }
    } else {
        match u {
            0..=44 => write!(out, "/products/{}", product(rng)),
            45..=54 => write!(out, "/search"),
            55..=64 => write!(out, "/category/{}", 1 + below(rng, 12)),
            65..=74 => write!(out, "/cart"),
            75..=79 => write!(out, "/checkout"),
            80..=87 => write!(out, "/"),
            88..=93 => write!(out, "/blog/{}", 1 + below(rng, 40)),
            _ => write!(out, "/account"),
        }
    };
    result.expect("write to a Vec");
}

impl Iterator for Clicks {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        self.next_labeled().map(|(_, record, _)| record)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self.remaining() {
            Some(n) => (n as usize, Some(n as usize)),
            None => (usize::MAX, None),
        }
    }
}

impl Sequence for Clicks {
    fn remaining(&self) -> Option<u64> {
        self.remaining_records()
    }
}

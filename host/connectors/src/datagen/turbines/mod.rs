//! The `turbines` source: synthetic, deterministic wind-turbine readings,
//! for event-time windows (e.g. the average wind speed per turbine over
//! 1-minute tumbling windows, with an alert above 60 mph).
//!
//! Each record is one reading as a JSON object, always with these fields in
//! this order:
//!
//! ```json
//! {"turbine":"T007","speed_mph":42.7,"time":1767225600000}
//! ```
//!
//! - `turbine`: the turbine id, `T` and the turbine's number `0..turbines`
//!   with at least three digits (`T000`, `T007`, `T1234`);
//! - `speed_mph`: wind speed in mph with exactly one decimal;
//! - `time`: when the reading was taken, in ms since the Unix epoch.
//!
//! Every record has the turbine id (UTF-8) as key, the JSON as value,
//! `event_time` = `time`, and position `{source: <index of the source>,
//! split: <turbine number> % splits, offset}`, where `offset` counts the
//! records of that split from 0 in emission order.
//!
//! **Readings.** Every turbine takes a reading every `interval_ms`, all at
//! the same ticks `start_ms`, `start_ms + interval_ms`, …; the stream has
//! `records` readings in all (the last tick may be partial). A turbine's
//! speed is its base speed (10–40 mph, fixed per turbine) plus a slow
//! drift (at most ±6 mph) plus noise (at most ±3 mph), so it stays below
//! 50 mph. `round(gust_ratio × turbines)` turbines, picked at random, also
//! have gusts: periods of 2 to 5 minutes at 65–85 mph (± the same drift and
//! noise), 1 to 30 (on average about 12) minutes apart, the first within
//! 15 minutes of `start_ms`. So 1-minute averages above 60 mph occur
//! regularly on those turbines and never on the others.
//!
//! **Emission order.** Readings are generated tick by tick, round-robin over
//! the turbines, and delivered as follows:
//!
//! - an *on-time* reading arrives 0 to `out_of_order_ms` ms after its event
//!   time, and readings leave in order of arrival (ties in generation
//!   order). So its event time is at most `out_of_order_ms` behind the
//!   largest event time emitted before it;
//! - a *late* reading (each with probability `late_ratio`) is held back
//!   until its split has emitted a reading whose event time is at least
//!   2 to 5 minutes (uniformly drawn per reading) newer, and then leaves
//!   right after it. When a bounded stream ends, readings still held back
//!   leave last, in order of release time, and may be less late.
//!
//! A record is **late** if its event time is more than `out_of_order_ms`
//! behind the largest event time emitted before it by the source (all
//! splits). That is exactly the records a watermark of "largest event time
//! seen − `out_of_order_ms`" would drop; it holds per split as well. No
//! on-time reading is late. Every late reading released as above is, by at
//! least 2 minutes (in its split and overall); one flushed at the end of a
//! bounded stream is unless its event time is within `out_of_order_ms` of
//! the largest one.
//!
//! The sequence depends only on the config, not on the machine or on the
//! position of the source in the pipeline: the random numbers come from
//! ChaCha8 seeded with `seed`, which is portable.

use std::io::Write;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use sluice_types::{ConnectorError, Record};

use super::checks::{check_common, check_count, check_ratio};
use super::delivery::{Delay, Delivery};
use super::draw::{below, between, unit};
use super::synthetic::{Dataset, Sequence};

#[cfg(test)]
mod tests;

/// Configuration of a `turbines` source (`type = "turbines"`), which
/// produces synthetic wind-turbine readings as JSON (see the [module
/// docs](self)). All keys are optional.
///
/// ```toml
/// [[sources]]
/// name = "readings"
/// type = "turbines"
/// seed = 7
/// turbines = 50
/// records = 1_000_000        # 0 for an endless stream
/// interval_ms = 1000
/// splits = 4                 # turbine i goes to split i % 4
/// out_of_order_ms = 2000
/// late_ratio = 0.01
/// gust_ratio = 0.2
/// rate = 5000.0
/// ```
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TurbineConfig {
    /// Seed of the random sequence. The same seed (and other settings) gives
    /// byte-identical records on every run and machine. Default: 42.
    pub seed: u64,
    /// Number of turbines, `T000` to `T{turbines - 1}`. Must be between 1
    /// and 1,000,000. Default: 20.
    pub turbines: u32,
    /// Number of readings to produce before the source is exhausted; 0 for
    /// an unbounded stream. Default: 100000.
    pub records: u64,
    /// Time between two readings of one turbine, in ms. Must be >= 1.
    /// Default: 1000.
    pub interval_ms: i64,
    /// Event time of the first readings, in ms since the Unix epoch.
    /// Default: 1767225600000 (2026-01-01T00:00:00Z).
    pub start_ms: i64,
    /// Records per second, paced like the `generator` source's `rate`. Must
    /// be > 0. Default: as fast as possible.
    pub rate: Option<f64>,
    /// Number of splits (emulated partitions); turbine `i` goes to split
    /// `i % splits`. Must be between 1 and 1,000,000. Default: 1.
    pub splits: u32,
    /// Largest amount, in ms, by which an on-time reading's event time may
    /// precede that of readings already emitted. Must be >= 0 and below
    /// 120000 (the least delay of a late reading). Default: 2000.
    pub out_of_order_ms: i64,
    /// Share of readings, between 0 and 1, that are late: held back until
    /// their split has emitted readings 2 to 5 minutes newer.
    /// Default: 0.01.
    pub late_ratio: f64,
    /// Share of turbines, between 0 and 1, that have gust periods above
    /// 60 mph. Default: 0.2.
    pub gust_ratio: f64,
}

impl Default for TurbineConfig {
    fn default() -> Self {
        TurbineConfig {
            seed: 42,
            turbines: 20,
            records: 100_000,
            interval_ms: 1_000,
            start_ms: 1_767_225_600_000,
            rate: None,
            splits: 1,
            out_of_order_ms: 2_000,
            late_ratio: 0.01,
            gust_ratio: 0.2,
        }
    }
}

/// Least and largest delay of a late reading, in event-time ms.
const LATE_MIN_MS: i64 = 120_000;
const LATE_MAX_MS: i64 = 300_000;

impl TurbineConfig {
    /// Check the values that deserialization alone cannot: counts and the
    /// interval at least 1, ratios in `[0, 1]`, a positive rate, an
    /// out-of-order bound in `0..120000`.
    pub fn validate(&self) -> Result<(), ConnectorError> {
        check_count("turbines", "turbines", self.turbines, "20")?;
        check_ratio("turbines", "gust_ratio", self.gust_ratio)?;
        check_common(
            "turbines",
            self.rate,
            self.splits,
            self.out_of_order_ms,
            LATE_MIN_MS,
            self.late_ratio,
        )?;
        if self.interval_ms < 1 {
            return Err(ConnectorError::Config(format!(
                "turbines: `interval_ms` is {}, but it must be at least 1; set the time between \
                 two readings of a turbine in ms (default 1000)",
                self.interval_ms
            )));
        }
        Ok(())
    }
}

impl Dataset for TurbineConfig {
    const TYPE: &'static str = "turbines";
    const DESCRIPTION: &'static str = "turbines generator";
    type Records = Readings;

    fn validate(&self) -> Result<(), ConnectorError> {
        TurbineConfig::validate(self)
    }

    fn rate(&self) -> Option<f64> {
        self.rate
    }

    fn sequence(&self, source_index: u16) -> Readings {
        Readings::new(self, source_index)
    }
}

// ---------------------------------------------------------------------------
// The reading sequence.

/// Drift and noise bounds, in mph.
const MAX_DRIFT: f64 = 6.0;
const NOISE: f64 = 3.0;
/// Gust duration and level.
const GUST_MIN_MS: i64 = 120_000;
const GUST_MAX_MS: i64 = 300_000;
const GUST_MIN_MPH: f64 = 65.0;
const GUST_MAX_MPH: f64 = 85.0;
/// Calm between gusts: 1 minute plus an exponential with this mean, capped.
const CALM_MEAN_MS: f64 = 720_000.0;
const CALM_CAP_MS: i64 = 1_800_000;
/// The first gust starts within this much of `start_ms`.
const FIRST_GUST_MS: i64 = 900_000;

struct Turbine {
    key: Vec<u8>,
    split: u32,
    base: f64,
    drift: f64,
    gusty: bool,
    gust_from: i64,
    gust_until: i64,
    gust_mph: f64,
}

/// The sequence of turbine readings a `turbines` source emits, in emission order.
pub struct Readings {
    rng: ChaCha8Rng,
    turbines: Vec<Turbine>,
    /// 0 for unbounded.
    records: u64,
    /// Readings generated and pushed into `delivery`.
    generated: u64,
    /// Readings emitted.
    emitted: u64,
    interval_ms: i64,
    start_ms: i64,
    out_of_order_ms: i64,
    late_ratio: f64,
    delivery: Delivery<()>,
    scratch: Vec<u8>,
}

impl Readings {
    pub(crate) fn new(config: &TurbineConfig, source_index: u16) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let n = config.turbines.max(1);
        let splits = config.splits.max(1);
        let mut turbines: Vec<Turbine> = (0..n)
            .map(|i| {
                let base = 10.0 + 30.0 * unit(&mut rng);
                Turbine {
                    key: format!("T{i:03}").into_bytes(),
                    split: i % splits,
                    base,
                    drift: 0.0,
                    gusty: false,
                    gust_from: i64::MAX,
                    gust_until: i64::MIN,
                    gust_mph: 0.0,
                }
            })
            .collect();
        // Pick round(gust_ratio × n) gusty turbines: a partial shuffle.
        let gusty = ((config.gust_ratio * n as f64).round() as u32).min(n);
        let mut order: Vec<u32> = (0..n).collect();
        for k in 0..gusty {
            let j = k + below(&mut rng, (n - k) as u64) as u32;
            order.swap(k as usize, j as usize);
            let t = &mut turbines[order[k as usize] as usize];
            t.gusty = true;
            t.gust_from = config
                .start_ms
                .saturating_add(below(&mut rng, FIRST_GUST_MS as u64) as i64);
        }
        Readings {
            rng,
            turbines,
            records: config.records,
            generated: 0,
            emitted: 0,
            interval_ms: config.interval_ms.max(1),
            start_ms: config.start_ms,
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

    /// Event time of the next reading to generate, if there is one.
    fn horizon(&self) -> Option<i64> {
        if self.records > 0 && self.generated >= self.records {
            return None;
        }
        let tick = (self.generated / self.turbines.len() as u64) as i64;
        Some(
            self.start_ms
                .saturating_add(tick.saturating_mul(self.interval_ms)),
        )
    }

    /// The next record and whether it was generated late.
    pub(crate) fn next_labeled(&mut self) -> Option<(bool, Record)> {
        loop {
            let horizon = self.horizon();
            if let Some((late, record, ())) = self.delivery.pop(horizon) {
                self.emitted += 1;
                return Some((late, record));
            }
            let time = horizon?;
            self.generate(time);
        }
    }

    /// Generate the next reading (taken at `time`) into the delivery stage.
    fn generate(&mut self, time: i64) {
        let i = (self.generated % self.turbines.len() as u64) as usize;
        self.generated += 1;
        let rng = &mut self.rng;
        let t = &mut self.turbines[i];

        // Drift: a mean-reverting random walk, bounded.
        t.drift = (0.97 * t.drift + (unit(rng) - 0.5) * 1.2).clamp(-MAX_DRIFT, MAX_DRIFT);
        if t.gusty && time >= t.gust_until && time >= t.gust_from {
            // A new gust; schedule the one after it.
            let length = between(rng, GUST_MIN_MS, GUST_MAX_MS);
            t.gust_until = time.saturating_add(length);
            t.gust_mph = GUST_MIN_MPH + (GUST_MAX_MPH - GUST_MIN_MPH) * unit(rng);
            let calm = (60_000.0 - (1.0 - unit(rng)).ln() * CALM_MEAN_MS) as i64;
            t.gust_from = t.gust_until.saturating_add(calm.min(CALM_CAP_MS));
        }
        let level = if time < t.gust_until {
            t.gust_mph
        } else {
            t.base
        };
        let noise = (unit(rng) + unit(rng) - 1.0) * NOISE;
        let tenths = ((level + t.drift + noise) * 10.0).round().max(0.0) as u64;

        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        out.extend_from_slice(b"{\"turbine\":\"");
        out.extend_from_slice(&t.key);
        write!(
            out,
            "\",\"speed_mph\":{}.{},\"time\":{}}}",
            tenths / 10,
            tenths % 10,
            time
        )
        .expect("write to a Vec");
        let record = Record {
            key: Some(t.key.clone()),
            value: out.clone(),
            event_time: Some(time),
            headers: Vec::new(),
            position: None,
        };
        self.scratch = out;

        let split = t.split;
        let delay = if unit(rng) < self.late_ratio {
            Delay::Late(between(rng, LATE_MIN_MS, LATE_MAX_MS))
        } else {
            Delay::OnTime(between(rng, 0, self.out_of_order_ms))
        };
        self.delivery.push(split, record, delay, ());
    }
}

impl Iterator for Readings {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        self.next_labeled().map(|(_, record)| record)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self.remaining() {
            Some(n) => (n as usize, Some(n as usize)),
            None => (usize::MAX, None),
        }
    }
}

impl Sequence for Readings {
    fn remaining(&self) -> Option<u64> {
        self.remaining_records()
    }
}

//! The `generator` source: synthetic, deterministic NYC taxi trips.
//!
//! Each record is one trip as a JSON object, always with these fields in
//! this order:
//!
//! ```json
//! {"trip_id":0,"vendor_id":2,"pickup_ms":1767225600000,"dropoff_ms":1767226391021,
//!  "passenger_count":1,"trip_distance":3.42,"pickup_zone":161,"dropoff_zone":236,
//!  "pickup_lon":-73.981234,"pickup_lat":40.758123,"dropoff_lon":-73.957812,
//!  "dropoff_lat":40.780456,"fare_amount":11.55,"tip_amount":2.31,"total_amount":14.86}
//! ```
//!
//! (without the line breaks). `trip_id` counts from 0; pickups start at
//! `start_ms` and are on average 300 ms apart; zones `1..=zones` are skewed
//! so that a few (Midtown, Upper East Side, the airports JFK = 132 and
//! LaGuardia = 138) are much busier than the rest; coordinates lie in the NYC
//! box (longitude −74.05..−73.75, latitude 40.60..40.90) near a fixed point
//! per zone; `trip_distance` is 0.30–30.00 miles; `fare_amount` is
//! 3.00 + 2.50 per mile, `tip_amount` 0–30 % of the fare, and
//! `total_amount` = fare + tip + 1.00 fees. Money and distance have two
//! decimals, coordinates six.
//!
//! To exercise error handling and event time, a share of trips are:
//!
//! - **malformed** (`malformed_ratio`): truncated JSON, non-JSON garbage
//!   (CSV text or binary bytes), a field of the wrong type
//!   (`"fare_amount":"n/a"`), a missing field, or a `pickup_zone` outside
//!   `1..=zones`;
//! - **implausible** (`implausible_ratio`): well-formed, but breaking one of
//!   `1 <= passenger_count <= 6`, `0 < trip_distance <= 100`,
//!   `0 < fare_amount <= 500`, `dropoff_ms > pickup_ms`, a duration of at
//!   most 6 hours, `total_amount >= fare_amount`;
//! - **out of order** (`out_of_order_ratio`, independent of the above): the
//!   pickup (and dropoff) moved back by 1 to `max_out_of_order_ms` ms.
//!
//! Every record has no key, the JSON as value, `event_time` = `pickup_ms`
//! (for a malformed record, the pickup time it would have had) and position
//! `{source: <index of the source>, split: 0, offset: trip_id}`.
//!
//! The sequence depends only on the config, not on the machine or on the
//! position of the source in the pipeline: the random numbers come from
//! ChaCha8 seeded with `seed`, which is portable. Two `generator` sources
//! with the same config produce the same trips (with different `Position::source`);
//! give them different seeds for different data.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use sluice_types::{ConnectorError, Position, Record};

use super::synthetic::{Dataset, Sequence};
use json::{push_hundredths, push_i64, push_u64, write_trip, Damage, Trip, FIELDS};

mod json;
#[cfg(test)]
mod tests;

/// Configuration of a `generator` source (`type = "generator"`), which
/// produces synthetic NYC taxi trips as JSON. All keys are optional.
///
/// ```toml
/// [[sources]]
/// name = "trips"
/// type = "generator"
/// seed = 7
/// count = 1_000_000
/// rate = 50_000.0
/// ```
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TaxiConfig {
    /// Seed of the random sequence. The same seed (and other settings) gives
    /// byte-identical records on every run and machine. Default: 42.
    pub seed: u64,
    /// Number of trips to produce before the source is exhausted. Leave it
    /// out for an unbounded stream. Default: unbounded.
    pub count: Option<u64>,
    /// Records per second. The source sleeps to keep this rate over time,
    /// emitting batches at most ~10 ms apart. If it falls behind (a slow
    /// downstream), it catches up with bigger batches, but by at most one
    /// second's worth of records. Leave it out to produce records as fast
    /// as they are consumed. Must be > 0. Default: as fast as possible.
    pub rate: Option<f64>,
    /// Share of records, between 0 and 1, that are malformed: truncated
    /// JSON, non-JSON garbage, a field of the wrong type, a missing field, or
    /// a pickup zone out of range. Default: 0.01.
    pub malformed_ratio: f64,
    /// Share of records, between 0 and 1, that are valid JSON but
    /// implausible (e.g. 0 or 9 passengers, a negative fare, a dropoff
    /// before the pickup). `malformed_ratio + implausible_ratio` must not
    /// exceed 1. Default: 0.02.
    pub implausible_ratio: f64,
    /// Share of records, between 0 and 1, whose pickup time is moved back by
    /// up to `max_out_of_order_ms`, so that event time is out of order.
    /// Default: 0.05.
    pub out_of_order_ratio: f64,
    /// Largest amount, in milliseconds, by which an out-of-order record is
    /// moved back in time. Must be >= 0. Default: 60000 (one minute).
    pub max_out_of_order_ms: i64,
    /// Pickup time of the first trip, in milliseconds since the Unix epoch.
    /// Default: 1767225600000 (2026-01-01T00:00:00Z).
    pub start_ms: i64,
    /// Number of taxi zones; zones are numbered `1..=zones`. Must be >= 1.
    /// Default: 265, as in the NYC TLC zone map (JFK is 132, LaGuardia 138).
    pub zones: u16,
}

impl Default for TaxiConfig {
    fn default() -> Self {
        TaxiConfig {
            seed: 42,
            count: None,
            rate: None,
            malformed_ratio: 0.01,
            implausible_ratio: 0.02,
            out_of_order_ratio: 0.05,
            max_out_of_order_ms: 60_000,
            start_ms: 1_767_225_600_000,
            zones: 265,
        }
    }
}

impl TaxiConfig {
    /// Check the values that deserialization alone cannot: ratios in
    /// `[0, 1]`, a positive rate, a non-negative out-of-order bound, at least
    /// one zone.
    pub fn validate(&self) -> Result<(), ConnectorError> {
        for (name, value) in [
            ("malformed_ratio", self.malformed_ratio),
            ("implausible_ratio", self.implausible_ratio),
            ("out_of_order_ratio", self.out_of_order_ratio),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(ConnectorError::Config(format!(
                    "generator: `{name}` is {value}, but it must be a share between 0 and 1 \
                     (e.g. 0.01 for 1% of records); set it to a value in that range or leave it \
                     out for the default"
                )));
            }
        }
        if self.malformed_ratio + self.implausible_ratio > 1.0 {
            return Err(ConnectorError::Config(format!(
                "generator: `malformed_ratio` ({}) + `implausible_ratio` ({}) exceed 1; \
                 lower one of them so that their sum is at most 1",
                self.malformed_ratio, self.implausible_ratio
            )));
        }
        if let Some(rate) = self.rate {
            if !(rate > 0.0 && rate.is_finite()) {
                return Err(ConnectorError::Config(format!(
                    "generator: `rate` is {rate}, but it must be a positive number of records \
                     per second; set e.g. `rate = 1000.0`, or leave it out to generate as fast \
                     as possible"
                )));
            }
        }
        if self.max_out_of_order_ms < 0 {
            return Err(ConnectorError::Config(format!(
                "generator: `max_out_of_order_ms` is {}, but it must be >= 0; set it to the \
                 largest delay in milliseconds (default 60000)",
                self.max_out_of_order_ms
            )));
        }
        if self.zones == 0 {
            return Err(ConnectorError::Config(
                "generator: `zones` is 0, but there must be at least 1 zone; set e.g. \
                 `zones = 265` or leave it out for the default"
                    .to_string(),
            ));
        }
        Ok(())
    }
}

impl Dataset for TaxiConfig {
    const TYPE: &'static str = "generator";
    const DESCRIPTION: &'static str = "taxi generator";
    type Records = Trips;

    fn validate(&self) -> Result<(), ConnectorError> {
        TaxiConfig::validate(self)
    }

    fn rate(&self) -> Option<f64> {
        self.rate
    }

    fn sequence(&self, source_index: u16) -> Trips {
        Trips::new(self, source_index)
    }
}

// ---------------------------------------------------------------------------
// The trip sequence.

/// What kind of record a trip became (test-visible ground truth).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Plausible,
    Implausible,
    Malformed,
}

/// Busy zones and their weights (TLC zone ids). The remaining zones weigh
/// 1 to 4 each.
const HOT_ZONES: &[(u16, u32)] = &[
    (237, 60), // Upper East Side South
    (161, 60), // Midtown Center
    (236, 55), // Upper East Side North
    (162, 50), // Midtown East
    (132, 50), // JFK Airport
    (186, 45), // Penn Station / Madison Sq West
    (230, 45), // Times Sq / Theatre District
    (142, 40), // Lincoln Square East
    (170, 40), // Murray Hill
    (138, 35), // LaGuardia Airport
    (163, 35), // Midtown North
    (234, 35), // Union Sq
    (239, 35), // Upper West Side South
    (48, 35),  // Clinton East
    (68, 30),  // East Chelsea
    (79, 30),  // East Village
    (141, 30), // Lenox Hill West
    (164, 30), // Midtown South
    (107, 28), // Gramercy
    (140, 28), // Lenox Hill East
    (238, 28), // Upper West Side North
    (249, 25), // West Village
    (113, 25), // Greenwich Village North
    (233, 25), // UN / Turtle Bay South
    (263, 25), // Yorkville West
    (43, 22),  // Central Park
    (262, 22), // Yorkville East
    (229, 22), // Sutton Place / Turtle Bay North
    (100, 22), // Garment District
    (90, 22),  // Flatiron
];
const JFK: u16 = 132;
const LGA: u16 = 138;

// Coordinates in micro-degrees.
const LON_MIN: i64 = -74_050_000;
const LON_MAX: i64 = -73_750_000;
const LAT_MIN: i64 = 40_600_000;
const LAT_MAX: i64 = 40_900_000;
/// Jitter of a point around its zone's centre.
const JITTER: i64 = 4_000;

const MEAN_GAP_MS: f64 = 300.0;
const SIX_HOURS_MS: i64 = 6 * 3600 * 1000;

/// The sequence of trips a `generator` source emits.
pub struct Trips {
    rng: ChaCha8Rng,
    source_index: u16,
    count: Option<u64>,
    next_id: u64,
    next_pickup_ms: i64,
    malformed_ratio: f64,
    implausible_ratio: f64,
    out_of_order_ratio: f64,
    max_out_of_order_ms: i64,
    zones: u16,
    /// Cumulative zone weights; entry `i` is for zone `i + 1`.
    zone_cumulative: Vec<u32>,
    /// Zone centres, indexed by zone id (entry 0 unused).
    zone_centres: Vec<(i64, i64)>,
    scratch: Vec<u8>,
}

impl Trips {
    pub(crate) fn new(config: &TaxiConfig, source_index: u16) -> Self {
        let zones = config.zones.max(1);
        let mut zone_cumulative = Vec::with_capacity(zones as usize);
        let mut zone_centres = Vec::with_capacity(zones as usize + 1);
        zone_centres.push((0, 0));
        let mut total = 0u32;
        for zone in 1..=zones {
            let h = splitmix64(zone as u64 ^ 0x5eed_2071_u64);
            let hot = HOT_ZONES.iter().find(|(z, _)| *z == zone).map(|(_, w)| *w);
            total += hot.unwrap_or(1 + (h % 4) as u32);
            zone_cumulative.push(total);
            let (a, b) = ((h >> 8) & 0xffff, (h >> 24) & 0xffff);
            let centre = match (zone, hot) {
                (JFK, _) => (-73_782_200, 40_641_300),
                (LGA, _) => (-73_874_000, 40_776_900),
                // Manhattan.
                (_, Some(_)) => (
                    -74_012_000 + ((a as i64 * 70_000) >> 16),
                    40_705_000 + ((b as i64 * 95_000) >> 16),
                ),
                _ => (
                    LON_MIN + 10_000 + ((a as i64 * 280_000) >> 16),
                    LAT_MIN + 10_000 + ((b as i64 * 280_000) >> 16),
                ),
            };
            zone_centres.push(centre);
        }
        Trips {
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            source_index,
            count: config.count,
            next_id: 0,
            next_pickup_ms: config.start_ms,
            malformed_ratio: config.malformed_ratio,
            implausible_ratio: config.implausible_ratio,
            out_of_order_ratio: config.out_of_order_ratio,
            max_out_of_order_ms: config.max_out_of_order_ms,
            zones,
            zone_cumulative,
            zone_centres,
            scratch: Vec::with_capacity(512),
        }
    }

    /// Records left before `count` is reached; `None` if unbounded.
    fn remaining_records(&self) -> Option<u64> {
        self.count.map(|c| c.saturating_sub(self.next_id))
    }

    fn unit(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        ((self.rng.next_u64() as u128 * n as u128) >> 64) as u64
    }

    fn zone(&mut self) -> u16 {
        let total = *self.zone_cumulative.last().expect("at least one zone");
        let x = self.below(total as u64) as u32;
        self.zone_cumulative.partition_point(|&c| c <= x) as u16 + 1
    }

    fn point(&mut self, zone: u16) -> (i64, i64) {
        let (lon, lat) = self.zone_centres[zone as usize];
        let dlon = self.below(2 * JITTER as u64 + 1) as i64 - JITTER;
        let dlat = self.below(2 * JITTER as u64 + 1) as i64 - JITTER;
        (
            (lon + dlon).clamp(LON_MIN, LON_MAX),
            (lat + dlat).clamp(LAT_MIN, LAT_MAX),
        )
    }

    /// The next record and what kind it is.
    pub(crate) fn next_labeled(&mut self) -> Option<(Kind, bool, Record)> {
        if self.remaining() == Some(0) {
            return None;
        }
        let trip_id = self.next_id;
        self.next_id += 1;

        // Pickup times: a Poisson process with a 300 ms mean gap.
        let mut pickup_ms = self.next_pickup_ms;
        let gap = -(1.0 - self.unit()).ln() * MEAN_GAP_MS;
        self.next_pickup_ms += gap.round() as i64;

        let u = self.unit();
        let kind = if u < self.malformed_ratio {
            Kind::Malformed
        } else if u < self.malformed_ratio + self.implausible_ratio {
            Kind::Implausible
        } else {
            Kind::Plausible
        };
        let out_of_order = self.unit() < self.out_of_order_ratio && self.max_out_of_order_ms > 0;
        if out_of_order {
            pickup_ms -= 1 + self.below(self.max_out_of_order_ms as u64) as i64;
        }

        let mut trip = self.plausible_trip(trip_id, pickup_ms);
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        match kind {
            Kind::Plausible => write_trip(&mut out, &trip, Damage::None),
            Kind::Implausible => {
                self.make_implausible(&mut trip);
                write_trip(&mut out, &trip, Damage::None);
            }
            Kind::Malformed => self.write_malformed(&mut out, &mut trip),
        }
        let record = Record {
            key: None,
            value: out.clone(),
            event_time: Some(pickup_ms),
            headers: Vec::new(),
            position: Some(Position {
                source: self.source_index,
                split: 0,
                offset: trip_id,
            }),
        };
        self.scratch = out;
        Some((kind, out_of_order, record))
    }

    fn plausible_trip(&mut self, trip_id: u64, pickup_ms: i64) -> Trip {
        let vendor_id = if self.unit() < 0.35 { 1 } else { 2 };
        let passenger_count = match self.below(100) {
            0..=69 => 1,
            70..=84 => 2,
            85..=89 => 3,
            90..=92 => 4,
            93..=96 => 5,
            _ => 6,
        };
        let pickup_zone = self.zone();
        let dropoff_zone = self.zone();
        let (pickup_lon, pickup_lat) = self.point(pickup_zone);
        let (dropoff_lon, dropoff_lat) = self.point(dropoff_zone);
        // Straight-line miles at NYC's latitude, times a street detour.
        let dx = (dropoff_lon - pickup_lon) as f64 * 1e-6 * 52.4;
        let dy = (dropoff_lat - pickup_lat) as f64 * 1e-6 * 69.0;
        let detour = 1.15 + 0.3 * self.unit();
        let miles = (dx * dx + dy * dy).sqrt() * detour + 0.2 * self.unit();
        let distance_c = ((miles * 100.0).round() as i64).clamp(30, 3000);
        let mph = 7.0 + 15.0 * self.unit();
        let duration_ms = (distance_c as f64 / 100.0 / mph * 3_600_000.0) as i64
            + 60_000
            + self.below(180_000) as i64;
        let fare_c = 300 + (5 * distance_c + 1) / 2;
        let tip_c = if self.unit() < 0.2 {
            0
        } else {
            (fare_c as f64 * (0.10 + 0.20 * self.unit())).round() as i64
        };
        Trip {
            trip_id,
            vendor_id,
            pickup_ms,
            dropoff_ms: pickup_ms + duration_ms,
            passenger_count,
            distance_c,
            pickup_zone: pickup_zone as u32,
            dropoff_zone: dropoff_zone as u32,
            pickup_lon,
            pickup_lat,
            dropoff_lon,
            dropoff_lat,
            fare_c,
            tip_c,
            total_c: fare_c + tip_c + 100,
        }
    }

    fn make_implausible(&mut self, trip: &mut Trip) {
        match self.below(6) {
            0 => trip.passenger_count = [0, 7, 8, 9][self.below(4) as usize],
            1 => {
                trip.distance_c = match self.below(3) {
                    0 => 0,
                    1 => -1 - self.below(500) as i64,
                    _ => 10_001 + self.below(90_000) as i64,
                }
            }
            2 => {
                trip.fare_c = match self.below(3) {
                    0 => 0,
                    1 => -1 - self.below(5_000) as i64,
                    _ => 50_001 + self.below(950_000) as i64,
                };
                trip.total_c = trip.fare_c + trip.tip_c + 100;
            }
            3 => trip.dropoff_ms = trip.pickup_ms - self.below(3_600_000) as i64,
            4 => {
                trip.dropoff_ms =
                    trip.pickup_ms + SIX_HOURS_MS + 1 + self.below(42 * 3_600_000) as i64
            }
            _ => trip.total_c = trip.fare_c - 1 - self.below(trip.fare_c as u64) as i64,
        }
    }

    fn write_malformed(&mut self, out: &mut Vec<u8>, trip: &mut Trip) {
        match self.below(5) {
            // Truncated JSON.
            0 => {
                write_trip(out, trip, Damage::None);
                let len = 1 + self.below(out.len() as u64 - 1) as usize;
                out.truncate(len);
            }
            // Garbage: CSV text or binary bytes (never a newline).
            1 => {
                if self.unit() < 0.5 {
                    push_u64(out, trip.trip_id);
                    out.push(b',');
                    push_i64(out, trip.pickup_ms);
                    out.push(b',');
                    push_u64(out, trip.pickup_zone as u64);
                    out.push(b',');
                    push_u64(out, trip.dropoff_zone as u64);
                    out.push(b',');
                    push_hundredths(out, trip.distance_c);
                    out.push(b',');
                    push_hundredths(out, trip.total_c);
                } else {
                    for _ in 0..8 + self.below(33) {
                        out.push(0x80 + self.below(0x80) as u8);
                    }
                }
            }
            // A field of the wrong type.
            2 => {
                let damage = match self.below(4) {
                    0 => Damage::WrongType(12, "\"n/a\""),
                    1 => Damage::WrongType(4, "\"two\""),
                    2 => Damage::WrongType(2, "\"2026-01-01T00:00:00Z\""),
                    _ => Damage::WrongType(5, "null"),
                };
                write_trip(out, trip, damage);
            }
            // A missing field.
            3 => {
                let field = self.below(FIELDS.len() as u64) as usize;
                write_trip(out, trip, Damage::Missing(field));
            }
            // Pickup zone out of range.
            _ => {
                trip.pickup_zone = if self.below(5) == 0 || self.zones >= 999 {
                    if self.below(2) == 0 {
                        0
                    } else {
                        self.zones as u32 + 1
                    }
                } else {
                    999
                };
                write_trip(out, trip, Damage::None);
            }
        }
    }
}

impl Sequence for Trips {
    fn remaining(&self) -> Option<u64> {
        self.remaining_records()
    }
}

impl Iterator for Trips {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        self.next_labeled().map(|(_, _, record)| record)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self.remaining() {
            Some(n) => (n as usize, Some(n as usize)),
            None => (usize::MAX, None),
        }
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

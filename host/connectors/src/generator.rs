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
//! ChaCha8 seeded with `seed`, which is portable. Two generators with the
//! same config produce the same trips (with different `Position::source`);
//! give them different seeds for different data.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use sluice_types::{ConnectorError, Position, Record};

use crate::synth::{Generated, Synthetic};

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
pub struct GeneratorConfig {
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

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
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

impl GeneratorConfig {
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

/// The `generator` source: synthetic NYC taxi trips (see the [module
/// docs](self)), optionally rate limited and bounded.
pub type TaxiGenerator = Generated<Trips>;

impl TaxiGenerator {
    /// A generator for the source at `source_index` in the pipeline (used
    /// only for [`Position::source`]). Fails if the config does not
    /// [validate](GeneratorConfig::validate).
    pub fn new(config: &GeneratorConfig, source_index: u16) -> Result<Self, ConnectorError> {
        config.validate()?;
        Ok(Generated::with_rate(
            Trips::new(config, source_index),
            config.rate,
        ))
    }
}

/// The records a [`TaxiGenerator`] with this config produces, in order, as
/// fast as they are pulled (no rate limiting); ends after `config.count`
/// records if set. Useful to compute expected output in tests.
///
/// # Panics
///
/// If the config does not [validate](GeneratorConfig::validate).
pub fn taxi_records(config: &GeneratorConfig, source_index: u16) -> impl Iterator<Item = Record> {
    if let Err(e) = config.validate() {
        panic!("taxi_records: {e}");
    }
    Trips::new(config, source_index)
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

/// The fields of a trip, with money and distance in hundredths and
/// coordinates in micro-degrees.
struct Trip {
    trip_id: u64,
    vendor_id: u8,
    pickup_ms: i64,
    dropoff_ms: i64,
    passenger_count: u32,
    distance_c: i64,
    pickup_zone: u32,
    dropoff_zone: u32,
    pickup_lon: i64,
    pickup_lat: i64,
    dropoff_lon: i64,
    dropoff_lat: i64,
    fare_c: i64,
    tip_c: i64,
    total_c: i64,
}

const FIELDS: [&str; 15] = [
    "trip_id",
    "vendor_id",
    "pickup_ms",
    "dropoff_ms",
    "passenger_count",
    "trip_distance",
    "pickup_zone",
    "dropoff_zone",
    "pickup_lon",
    "pickup_lat",
    "dropoff_lon",
    "dropoff_lat",
    "fare_amount",
    "tip_amount",
    "total_amount",
];

/// How to damage the JSON of a malformed record.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Damage {
    None,
    /// Leave out field `i`.
    Missing(usize),
    /// Write field `i` with this (wrong-typed) JSON text.
    WrongType(usize, &'static str),
}

/// The sequence of trips a generator emits.
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
    pub(crate) fn new(config: &GeneratorConfig, source_index: u16) -> Self {
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

impl Synthetic for Trips {
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

/// [`write_trip`] without damage, unrolled so that the field names are
/// copied with constant lengths (this is the hot path).
fn write_trip_fast(out: &mut Vec<u8>, t: &Trip) {
    out.reserve(400);
    out.extend_from_slice(b"{\"trip_id\":");
    push_u64(out, t.trip_id);
    out.extend_from_slice(b",\"vendor_id\":");
    push_u64(out, t.vendor_id as u64);
    out.extend_from_slice(b",\"pickup_ms\":");
    push_i64(out, t.pickup_ms);
    out.extend_from_slice(b",\"dropoff_ms\":");
    push_i64(out, t.dropoff_ms);
    out.extend_from_slice(b",\"passenger_count\":");
    push_u64(out, t.passenger_count as u64);
    out.extend_from_slice(b",\"trip_distance\":");
    push_hundredths(out, t.distance_c);
    out.extend_from_slice(b",\"pickup_zone\":");
    push_u64(out, t.pickup_zone as u64);
    out.extend_from_slice(b",\"dropoff_zone\":");
    push_u64(out, t.dropoff_zone as u64);
    out.extend_from_slice(b",\"pickup_lon\":");
    push_micro(out, t.pickup_lon);
    out.extend_from_slice(b",\"pickup_lat\":");
    push_micro(out, t.pickup_lat);
    out.extend_from_slice(b",\"dropoff_lon\":");
    push_micro(out, t.dropoff_lon);
    out.extend_from_slice(b",\"dropoff_lat\":");
    push_micro(out, t.dropoff_lat);
    out.extend_from_slice(b",\"fare_amount\":");
    push_hundredths(out, t.fare_c);
    out.extend_from_slice(b",\"tip_amount\":");
    push_hundredths(out, t.tip_c);
    out.extend_from_slice(b",\"total_amount\":");
    push_hundredths(out, t.total_c);
    out.push(b'}');
}

fn write_trip(out: &mut Vec<u8>, t: &Trip, damage: Damage) {
    if damage == Damage::None {
        return write_trip_fast(out, t);
    }
    out.push(b'{');
    let mut first = true;
    for (i, name) in FIELDS.iter().enumerate() {
        if damage == Damage::Missing(i) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        out.push(b'"');
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
        if let Damage::WrongType(j, text) = damage {
            if i == j {
                out.extend_from_slice(text.as_bytes());
                continue;
            }
        }
        match i {
            0 => push_u64(out, t.trip_id),
            1 => push_u64(out, t.vendor_id as u64),
            2 => push_i64(out, t.pickup_ms),
            3 => push_i64(out, t.dropoff_ms),
            4 => push_u64(out, t.passenger_count as u64),
            5 => push_hundredths(out, t.distance_c),
            6 => push_u64(out, t.pickup_zone as u64),
            7 => push_u64(out, t.dropoff_zone as u64),
            8 => push_micro(out, t.pickup_lon),
            9 => push_micro(out, t.pickup_lat),
            10 => push_micro(out, t.dropoff_lon),
            11 => push_micro(out, t.dropoff_lat),
            12 => push_hundredths(out, t.fare_c),
            13 => push_hundredths(out, t.tip_c),
            _ => push_hundredths(out, t.total_c),
        }
    }
    out.push(b'}');
}

fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    // Append a fixed-size block (an inlined copy) and trim it, instead of
    // copying a variable number of digits.
    let digits = if v == 0 { 1 } else { v.ilog10() as usize + 1 };
    let start = out.len();
    out.extend_from_slice(&[b'0'; 20]);
    for d in out[start..start + digits].iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.truncate(start + digits);
}

fn push_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    push_u64(out, v.unsigned_abs());
}

/// `v / 100` with exactly two decimals.
fn push_hundredths(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    let a = v.unsigned_abs();
    push_u64(out, a / 100);
    let f = (a % 100) as u8;
    out.extend_from_slice(&[b'.', b'0' + f / 10, b'0' + f % 10]);
}

/// `v / 1e6` with exactly six decimals.
fn push_micro(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    let a = v.unsigned_abs();
    push_u64(out, a / 1_000_000);
    out.push(b'.');
    let mut f = a % 1_000_000;
    let mut buf = [b'0'; 6];
    for d in buf.iter_mut().rev() {
        *d = b'0' + (f % 10) as u8;
        f /= 10;
    }
    out.extend_from_slice(&buf);
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_types::Source;
    use std::time::Instant;

    /// The schema a downstream operator would parse, with exactly these
    /// fields and types.
    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct TaxiTrip {
        trip_id: u64,
        vendor_id: u8,
        pickup_ms: i64,
        dropoff_ms: i64,
        passenger_count: u32,
        trip_distance: f64,
        pickup_zone: u16,
        dropoff_zone: u16,
        pickup_lon: f64,
        pickup_lat: f64,
        dropoff_lon: f64,
        dropoff_lat: f64,
        fare_amount: f64,
        tip_amount: f64,
        total_amount: f64,
    }

    fn parse(record: &Record, zones: u16) -> Option<TaxiTrip> {
        let trip: TaxiTrip = serde_json::from_slice(&record.value).ok()?;
        let zone_ok = |z: u16| (1..=zones).contains(&z);
        (zone_ok(trip.pickup_zone) && zone_ok(trip.dropoff_zone)).then_some(trip)
    }

    fn violations(t: &TaxiTrip) -> Vec<&'static str> {
        let mut v = Vec::new();
        if !(1..=6).contains(&t.passenger_count) {
            v.push("passenger_count");
        }
        if !(t.trip_distance > 0.0 && t.trip_distance <= 100.0) {
            v.push("trip_distance");
        }
        if !(t.fare_amount > 0.0 && t.fare_amount <= 500.0) {
            v.push("fare_amount");
        }
        if t.dropoff_ms <= t.pickup_ms {
            v.push("dropoff_before_pickup");
        }
        if t.dropoff_ms - t.pickup_ms > SIX_HOURS_MS {
            v.push("duration");
        }
        if t.total_amount < t.fare_amount {
            v.push("total_amount");
        }
        v
    }

    fn labeled(config: &GeneratorConfig, n: usize) -> Vec<(Kind, bool, Record)> {
        let mut trips = Trips::new(config, 0);
        (0..n).map(|_| trips.next_labeled().unwrap()).collect()
    }

    fn cents(x: f64) -> i64 {
        (x * 100.0).round() as i64
    }

    #[test]
    fn config_defaults_and_unknown_fields() {
        let c: GeneratorConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, GeneratorConfig::default());
        assert_eq!((c.seed, c.count, c.rate, c.zones), (42, None, None, 265));
        assert_eq!(c.start_ms, 1_767_225_600_000);
        c.validate().unwrap();
        let c: GeneratorConfig =
            serde_json::from_str(r#"{"seed": 1, "count": 5, "rate": 10.5}"#).unwrap();
        assert_eq!(
            (c.seed, c.count, c.rate, c.malformed_ratio),
            (1, Some(5), Some(10.5), 0.01)
        );
        for bad in [
            r#"{"name": "x"}"#,
            r#"{"type": "generator"}"#,
            r#"{"sead": 1}"#,
        ] {
            assert!(
                serde_json::from_str::<GeneratorConfig>(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn validation_names_field_and_fix() {
        let check = |c: GeneratorConfig, field: &str| {
            let err = TaxiGenerator::new(&c, 0)
                .err()
                .expect("invalid config accepted");
            assert!(matches!(err, ConnectorError::Config(_)));
            let msg = err.to_string();
            assert!(msg.contains(field), "{msg}");
            msg
        };
        let msg = check(
            GeneratorConfig {
                malformed_ratio: 1.5,
                ..Default::default()
            },
            "`malformed_ratio`",
        );
        assert!(msg.contains("between 0 and 1"), "{msg}");
        check(
            GeneratorConfig {
                implausible_ratio: -0.1,
                ..Default::default()
            },
            "`implausible_ratio`",
        );
        check(
            GeneratorConfig {
                out_of_order_ratio: f64::NAN,
                ..Default::default()
            },
            "`out_of_order_ratio`",
        );
        check(
            GeneratorConfig {
                malformed_ratio: 0.6,
                implausible_ratio: 0.6,
                ..Default::default()
            },
            "sum",
        );
        let msg = check(
            GeneratorConfig {
                rate: Some(0.0),
                ..Default::default()
            },
            "`rate`",
        );
        assert!(msg.contains("positive"), "{msg}");
        check(
            GeneratorConfig {
                rate: Some(f64::INFINITY),
                ..Default::default()
            },
            "`rate`",
        );
        check(
            GeneratorConfig {
                max_out_of_order_ms: -1,
                ..Default::default()
            },
            "`max_out_of_order_ms`",
        );
        check(
            GeneratorConfig {
                zones: 0,
                ..Default::default()
            },
            "`zones`",
        );
    }

    #[test]
    fn deterministic_per_seed() {
        let config = GeneratorConfig {
            count: Some(20_000),
            ..Default::default()
        };
        let a: Vec<Record> = taxi_records(&config, 0).collect();
        let b: Vec<Record> = taxi_records(&config, 0).collect();
        assert_eq!(a.len(), 20_000);
        assert_eq!(a, b);
        let c: Vec<Record> = taxi_records(
            &GeneratorConfig {
                seed: 43,
                ..config.clone()
            },
            0,
        )
        .collect();
        assert_eq!(c.len(), 20_000);
        let same = a.iter().zip(&c).filter(|(x, y)| x.value == y.value).count();
        assert!(same < 10, "{same} identical records for different seeds");
        // The source index only changes the position.
        let d: Vec<Record> = taxi_records(&config, 5).collect();
        assert!(a
            .iter()
            .zip(&d)
            .all(|(x, y)| x.value == y.value && y.position.unwrap().source == 5));
        // A pinned value guards against accidental changes of the sequence
        // (update it deliberately if the generator changes).
        let first = String::from_utf8(a[0].value.clone()).unwrap();
        assert!(
            first.starts_with("{\"trip_id\":0,\"vendor_id\":"),
            "{first}"
        );
        assert!(first.contains("\"pickup_ms\":1767225600000,"), "{first}");
    }

    #[test]
    fn source_matches_taxi_records_and_stops_at_count() {
        let config = GeneratorConfig {
            count: Some(2_500),
            seed: 9,
            ..Default::default()
        };
        let expected: Vec<Record> = taxi_records(&config, 2).collect();
        let mut source = TaxiGenerator::new(&config, 2).unwrap();
        let mut got = Vec::new();
        while let Some(batch) = source.poll_batch(1000).unwrap() {
            assert!(batch.len() <= 1000 && !batch.is_empty());
            got.extend(batch);
        }
        assert!(source.poll_batch(1000).unwrap().is_none());
        assert_eq!(got, expected);
        for (i, r) in got.iter().enumerate() {
            assert_eq!(
                r.position,
                Some(Position {
                    source: 2,
                    split: 0,
                    offset: i as u64
                })
            );
            assert!(r.key.is_none() && r.headers.is_empty());
        }
        let mut empty = TaxiGenerator::new(
            &GeneratorConfig {
                count: Some(0),
                ..Default::default()
            },
            0,
        )
        .unwrap();
        assert!(empty.poll_batch(10).unwrap().is_none());
    }

    #[test]
    fn ratios_roughly_honoured() {
        const N: usize = 100_000;
        let config = GeneratorConfig::default();
        let records = labeled(&config, N);
        let share =
            |k: Kind| records.iter().filter(|(kind, _, _)| *kind == k).count() as f64 / N as f64;
        let ooo = records.iter().filter(|(_, o, _)| *o).count() as f64 / N as f64;
        assert!(
            (share(Kind::Malformed) - 0.01).abs() < 0.002,
            "{}",
            share(Kind::Malformed)
        );
        assert!(
            (share(Kind::Implausible) - 0.02).abs() < 0.003,
            "{}",
            share(Kind::Implausible)
        );
        assert!((ooo - 0.05).abs() < 0.004, "{ooo}");

        // Measured from the data alone, as a consumer sees it.
        let invalid = records
            .iter()
            .filter(|(_, _, r)| parse(r, config.zones).is_none())
            .count();
        let implausible = records
            .iter()
            .filter_map(|(_, _, r)| parse(r, config.zones))
            .filter(|t| !violations(t).is_empty())
            .count();
        assert!(
            (invalid as f64 / N as f64 - 0.01).abs() < 0.002,
            "{invalid}"
        );
        assert!(
            (implausible as f64 / N as f64 - 0.02).abs() < 0.003,
            "{implausible}"
        );
        let mut max_seen = i64::MIN;
        let mut late = 0;
        for (_, _, r) in &records {
            let t = r.event_time.unwrap();
            if t < max_seen {
                late += 1;
            }
            max_seen = max_seen.max(t);
        }
        assert!((late as f64 / N as f64 - 0.05).abs() < 0.005, "{late}");

        // Extremes.
        let none = GeneratorConfig {
            malformed_ratio: 0.0,
            implausible_ratio: 0.0,
            out_of_order_ratio: 0.0,
            ..Default::default()
        };
        assert!(labeled(&none, 10_000)
            .iter()
            .all(|(k, o, _)| *k == Kind::Plausible && !o));
        let all = GeneratorConfig {
            malformed_ratio: 1.0,
            implausible_ratio: 0.0,
            ..Default::default()
        };
        assert!(labeled(&all, 1_000)
            .iter()
            .all(|(k, _, _)| *k == Kind::Malformed));
    }

    #[test]
    fn schema_field_order_and_plausible_values() {
        let config = GeneratorConfig::default();
        let records = labeled(&config, 50_000);
        let mut pickups_in_order = Vec::new();
        for (kind, out_of_order, record) in &records {
            let text = String::from_utf8_lossy(&record.value);
            let Some(trip) = parse(record, config.zones) else {
                assert_eq!(*kind, Kind::Malformed, "{text}");
                continue;
            };
            assert_ne!(*kind, Kind::Malformed, "malformed record parses: {text}");
            // Exactly the fields, in order.
            let mut at = 0;
            for (i, field) in FIELDS.iter().enumerate() {
                let key = format!("{}\"{field}\":", if i == 0 { "{" } else { "," });
                let pos = text[at..]
                    .find(&key)
                    .unwrap_or_else(|| panic!("{field} out of order: {text}"));
                at += pos + key.len();
            }
            assert_eq!(trip.trip_id, record.position.unwrap().offset);
            assert_eq!(Some(trip.pickup_ms), record.event_time);
            let violated = violations(&trip);
            match kind {
                Kind::Implausible => assert!(!violated.is_empty(), "implausible but fine: {text}"),
                _ => assert!(
                    violated.is_empty(),
                    "plausible record violates {violated:?}: {text}"
                ),
            }
            if *kind != Kind::Plausible {
                continue;
            }
            if !out_of_order {
                pickups_in_order.push(trip.pickup_ms);
            }
            assert!(trip.vendor_id == 1 || trip.vendor_id == 2);
            assert!((0.3..=30.0).contains(&trip.trip_distance), "{text}");
            for lon in [trip.pickup_lon, trip.dropoff_lon] {
                assert!((-74.05..=-73.75).contains(&lon), "{text}");
            }
            for lat in [trip.pickup_lat, trip.dropoff_lat] {
                assert!((40.60..=40.90).contains(&lat), "{text}");
            }
            let (fare, tip, total) = (
                cents(trip.fare_amount),
                cents(trip.tip_amount),
                cents(trip.total_amount),
            );
            // 3.00 + 2.50 per mile, half a cent rounded up.
            assert_eq!(
                fare,
                300 + (5 * cents(trip.trip_distance) + 1) / 2,
                "{text}"
            );
            assert!(tip >= 0 && tip * 100 <= fare * 30 + 50, "{text}");
            assert_eq!(total, fare + tip + 100, "{text}");
            // Money and distance have two decimals.
            for field in ["trip_distance", "fare_amount", "tip_amount", "total_amount"] {
                let key = format!("\"{field}\":");
                let rest = &text[text.find(&key).unwrap() + key.len()..];
                let number = &rest[..rest.find([',', '}']).unwrap()];
                assert_eq!(
                    number.len() - number.find('.').unwrap(),
                    3,
                    "{field} in {text}"
                );
            }
        }
        assert!(pickups_in_order.windows(2).all(|w| w[0] <= w[1]));
        let span = pickups_in_order.last().unwrap() - records[0].2.event_time.unwrap();
        let mean_gap = span as f64 / 50_000.0;
        assert!((250.0..350.0).contains(&mean_gap), "mean gap {mean_gap} ms");
    }

    #[test]
    fn malformed_records_fail_to_parse_or_have_bad_zones() {
        let config = GeneratorConfig {
            malformed_ratio: 1.0,
            implausible_ratio: 0.0,
            ..Default::default()
        };
        let mut seen = [0usize; 5]; // truncated/garbage, wrong type, missing, zone, binary
        for (_, _, record) in labeled(&config, 5_000) {
            assert!(
                parse(&record, config.zones).is_none(),
                "{}",
                String::from_utf8_lossy(&record.value)
            );
            assert!(!record.value.contains(&b'\n'));
            match serde_json::from_slice::<serde_json::Value>(&record.value) {
                Err(_) if std::str::from_utf8(&record.value).is_err() => seen[4] += 1,
                Err(_) => seen[0] += 1,
                Ok(v) => {
                    let object = v.as_object().unwrap();
                    if object.len() < FIELDS.len() {
                        seen[2] += 1;
                    } else if object.values().any(|v| v.is_string() || v.is_null()) {
                        seen[1] += 1;
                    } else {
                        seen[3] += 1;
                    }
                }
            }
        }
        assert!(seen.iter().all(|&n| n > 100), "{seen:?}");
    }

    #[test]
    fn fast_writer_matches_generic_writer() {
        let mut trips = Trips::new(&GeneratorConfig::default(), 0);
        for i in 0..1_000 {
            let mut t = trips.plausible_trip(i, 1_767_225_600_000 + i as i64);
            if i % 2 == 0 {
                trips.make_implausible(&mut t);
            }
            let (mut fast, mut generic) = (Vec::new(), Vec::new());
            write_trip_fast(&mut fast, &t);
            write_generic(&mut generic, &t);
            assert_eq!(fast, generic);
        }

        fn write_generic(out: &mut Vec<u8>, t: &Trip) {
            // A damage that never matches a field takes the generic path.
            write_trip(out, t, Damage::Missing(usize::MAX));
        }
    }

    #[test]
    fn zones_skewed_and_in_range() {
        let config = GeneratorConfig {
            malformed_ratio: 0.0,
            ..Default::default()
        };
        let mut counts = vec![0usize; config.zones as usize + 1];
        for (_, _, r) in labeled(&config, 50_000) {
            let t = parse(&r, config.zones).unwrap();
            counts[t.pickup_zone as usize] += 1;
            counts[t.dropoff_zone as usize] += 1;
        }
        let mut ranked: Vec<usize> = (1..counts.len()).collect();
        ranked.sort_by_key(|&z| std::cmp::Reverse(counts[z]));
        let top: Vec<usize> = ranked[..15].to_vec();
        assert!(
            top.contains(&132) && top.contains(&138),
            "top zones {top:?}"
        );
        let busiest = counts[ranked[0]];
        let quietest = counts[*ranked.last().unwrap()];
        assert!(
            busiest > 10 * quietest.max(1),
            "busiest {busiest}, quietest {quietest}"
        );

        let few = GeneratorConfig {
            zones: 10,
            malformed_ratio: 0.0,
            ..Default::default()
        };
        for (_, _, r) in labeled(&few, 5_000) {
            let t = parse(&r, 10).unwrap();
            assert!((1..=10).contains(&t.pickup_zone) && (1..=10).contains(&t.dropoff_zone));
        }
    }

    #[test]
    fn out_of_order_bounded() {
        let config = GeneratorConfig {
            out_of_order_ratio: 0.5,
            max_out_of_order_ms: 5_000,
            ..Default::default()
        };
        // Earlier pickups are at most the current unshifted pickup, so a
        // record is behind the running maximum by at most its shift.
        let mut max_seen = i64::MIN;
        let mut late = 0;
        for (_, ooo, r) in labeled(&config, 20_000) {
            let t = r.event_time.unwrap();
            if t < max_seen {
                late += 1;
                assert!(ooo);
                assert!(max_seen - t <= 5_000, "moved back too far");
            }
            max_seen = max_seen.max(t);
        }
        assert!(late > 8_000, "{late}");
    }

    #[test]
    fn rate_limited() {
        let config = GeneratorConfig {
            count: Some(1_000),
            rate: Some(2_000.0),
            ..Default::default()
        };
        let mut source = TaxiGenerator::new(&config, 0).unwrap();
        let start = Instant::now();
        let mut total = 0;
        let mut batches = 0;
        while let Some(batch) = source.poll_batch(10_000).unwrap() {
            total += batch.len();
            batches += 1;
        }
        let elapsed = start.elapsed().as_secs_f64();
        assert_eq!(total, 1_000);
        assert!(elapsed >= 0.45, "too fast: {elapsed} s");
        assert!(elapsed < 1.5, "too slow: {elapsed} s");
        // Batches about 10 ms apart, not one record at a time.
        assert!((20..=200).contains(&batches), "{batches} batches");
    }

    /// `cargo test --release -p sluice-connectors -- --ignored --nocapture throughput`
    #[test]
    #[ignore]
    fn throughput() {
        const N: u64 = 3_000_000;
        let config = GeneratorConfig::default();
        let mut source = TaxiGenerator::new(&config, 0).unwrap();
        let start = Instant::now();
        let mut n = 0u64;
        let mut bytes = 0usize;
        while n < N {
            let batch = source.poll_batch(1024).unwrap().unwrap();
            n += batch.len() as u64;
            bytes += batch.iter().map(|r| r.value.len()).sum::<usize>();
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "generator: {n} records in {secs:.3} s = {:.2} M records/s, {:.0} MB/s, {:.0} bytes/record",
            n as f64 / secs / 1e6,
            bytes as f64 / secs / 1e6,
            bytes as f64 / n as f64
        );
    }
}

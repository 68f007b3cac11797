//! Drop implausible taxi trips.
//!
//! Input: postcard [`Trip`]s (from `taxi-parse`). A trip is kept only if all
//! hold: 1 <= passenger_count <= 6; 0 < trip_distance <= `max_distance`;
//! 0 < fare_amount <= `max_fare`; dropoff after pickup, at most 6 hours later;
//! total_amount >= fare_amount. Dropped trips are counted in the counter
//! `implausible_trips`.
//!
//! Params: `max_distance` (miles, default 100) and `max_fare` (dollars,
//! default 500).

use serde::Deserialize;
use sluice_sdk::{Counter, Error, Record};
use taxi_model::Trip;

static IMPLAUSIBLE: Counter = Counter::new("implausible_trips");

const SIX_HOURS_MS: i64 = 6 * 60 * 60 * 1000;

/// The filter's params.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Longest plausible trip, in miles.
    #[serde(default = "default_max_distance")]
    pub max_distance: f64,
    /// Highest plausible fare, in dollars.
    #[serde(default = "default_max_fare")]
    pub max_fare: f64,
}

fn default_max_distance() -> f64 {
    100.0
}

fn default_max_fare() -> f64 {
    500.0
}

/// Whether `trip` is plausible under `limits`.
pub fn plausible(trip: &Trip, limits: &Limits) -> bool {
    (1..=6).contains(&trip.passenger_count)
        && trip.trip_distance > 0.0
        && trip.trip_distance <= limits.max_distance
        && trip.fare_amount > 0.0
        && trip.fare_amount <= limits.max_fare
        && trip.dropoff_ms > trip.pickup_ms
        && trip.dropoff_ms - trip.pickup_ms <= SIX_HOURS_MS
        && trip.total_amount >= trip.fare_amount
}

/// Keep plausible trips.
#[sluice_sdk::filter(params = Limits)]
pub fn plausible_trip(record: &Record, limits: &Limits) -> Result<bool, Error> {
    let trip = Trip::decode(&record.value)
        .map_err(|e| Error::msg(format!("value is not a postcard Trip: {e}")))?;
    let keep = plausible(&trip, limits);
    if !keep {
        IMPLAUSIBLE.increment();
    }
    Ok(keep)
}

#[cfg(test)]
mod tests {
    use sluice_sdk::testing::Harness;
    use sluice_sdk::{harness, Record};
    use taxi_model::Trip;

    fn rec(f: impl FnOnce(&mut Trip)) -> Record {
        let mut t = Trip::sample();
        f(&mut t);
        Record::new(t.encode()).with_key("161")
    }

    #[test]
    fn keeps_plausible_drops_the_rest() {
        let mut h = harness!();
        let batch = vec![
            rec(|_| {}),
            rec(|t| t.passenger_count = 0),
            rec(|t| t.passenger_count = 7),
            rec(|t| t.passenger_count = 6),
            rec(|t| t.trip_distance = 0.0),
            rec(|t| t.trip_distance = 100.5),
            rec(|t| t.fare_amount = 0.0),
            rec(|t| t.fare_amount = 501.0),
            rec(|t| t.dropoff_ms = t.pickup_ms),
            rec(|t| t.dropoff_ms = t.pickup_ms + 6 * 3600 * 1000),
            rec(|t| t.dropoff_ms = t.pickup_ms + 6 * 3600 * 1000 + 1),
            rec(|t| t.total_amount = t.fare_amount - 0.01),
            rec(|t| t.total_amount = t.fare_amount),
        ];
        let out = h.process(batch.clone());
        assert!(out.errors.is_empty());
        let kept: Vec<u32> = out.emits.iter().map(|e| e.input).collect();
        assert_eq!(kept, [0, 3, 9, 12]);
        assert_eq!(
            out.main(),
            kept.iter().map(|&i| &batch[i as usize]).collect::<Vec<_>>()
        );
        assert_eq!(h.counter("implausible_trips"), 9);
    }

    #[test]
    fn params_override_limits() {
        let mut h = harness!(r#"{"max_distance": 10, "max_fare": 20}"#);
        let out = h.process(vec![
            rec(|_| {}),
            rec(|t| t.trip_distance = 10.5),
            rec(|t| {
                t.fare_amount = 20.5;
                t.total_amount = 30.0
            }),
        ]);
        assert_eq!(out.emits.iter().map(|e| e.input).collect::<Vec<_>>(), [0]);
        assert_eq!(h.counter("implausible_trips"), 2);
    }

    #[test]
    fn bad_params_refuse_the_plugin() {
        let err =
            Harness::try_new(crate::__sluice_operator(), r#"{"max_fare": "lots"}"#).unwrap_err();
        assert!(
            err.message()
                .starts_with("invalid params: invalid type: string \"lots\", expected f64"),
            "{err}"
        );
        let err = Harness::try_new(crate::__sluice_operator(), r#"{"max_fair": 3}"#).unwrap_err();
        assert!(err.message().contains("unknown field `max_fair`"), "{err}");
    }

    #[test]
    fn undecodable_value_is_a_record_error() {
        let mut h = harness!();
        let out = h.process(vec![Record::new("not postcard")]);
        assert_eq!(out.errors.len(), 1);
        assert!(
            out.errors[0]
                .message
                .starts_with("value is not a postcard Trip"),
            "{:?}",
            out.errors
        );
    }
}

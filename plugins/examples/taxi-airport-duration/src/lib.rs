//! Average trip duration per airport and window: the window aggregate (world
//! `window-aggregate`) of `examples/taxi-windows` behind `taxi-airport`.
//!
//! **Input**: postcard [`Trip`]s keyed by the airport's zone number in
//! decimal ASCII (`b"132"`), as `taxi-airport` emits them. A value that is
//! not a postcard `Trip` (`value is not a postcard Trip: ...`) or a trip
//! whose dropoff is not after its pickup (`trip <id> does not end after it
//! starts`) is a per-record error and is left out of its window.
//!
//! **Params**: `airports` (table from zone number to airport name, default
//! `{ "132" = "JFK", "138" = "LGA" }`, as for `taxi-airport`): names the
//! zones in the output. Unknown params are refused.
//!
//! **Accumulator** (`Durations`, postcard): the number of trips and the sum
//! of their durations (`dropoff_ms - pickup_ms`) in ms, as integers, so the
//! result is exact and independent of arrival order.
//!
//! **Output**, per fired window with at least one trip, on the main output
//! (no key and no event time set, so the host gives it the zone key and the
//! window's `end - 1`):
//!
//! ```text
//! {"airport":"JFK","zone":132,"start":1767225600000,"end":1767229200000,"trips":321,"avg_duration_min":70.76}
//! ```
//!
//! `airport` is the zone's name from `airports`, or `null` for a zone not in
//! it; `avg_duration_min` the average duration in minutes, rounded half up
//! to two decimals. A window whose key is not a zone number fails with
//! `key "<key>" is not a zone number` (handed to the error policy).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sluice_sdk::{Aggregate, Error, Record, Window, WindowOutput};
use taxi_model::Trip;

/// The params.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Airport zones and their names.
    #[serde(default = "default_airports")]
    pub airports: BTreeMap<u16, String>,
}

/// JFK (zone 132) and LaGuardia (zone 138).
pub fn default_airports() -> BTreeMap<u16, String> {
    BTreeMap::from([(132, "JFK".to_owned()), (138, "LGA".to_owned())])
}

/// The accumulator: trips and the sum of their durations.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Durations {
    /// Trips added.
    pub trips: u64,
    /// Sum of `dropoff_ms - pickup_ms` over them.
    pub duration_ms: i64,
}

impl Durations {
    /// The average duration in hundredths of a minute, rounded half up;
    /// `None` without trips.
    pub fn avg_centiminutes(&self) -> Option<i64> {
        if self.trips == 0 {
            return None;
        }
        // ms / (600 * n), rounded half up (durations are positive).
        let (num, den) = (self.duration_ms as i128, 600 * self.trips as i128);
        Some(((2 * num + den) / (2 * den)) as i64)
    }
}

#[derive(Serialize)]
struct Out<'a> {
    airport: Option<&'a str>,
    zone: u16,
    start: i64,
    end: i64,
    trips: u64,
    avg_duration_min: f64,
}

#[sluice_sdk::aggregate]
impl Aggregate for Durations {
    type Params = Config;

    fn add(&mut self, record: &Record, _: &Config) -> Result<(), Error> {
        let trip = Trip::decode(&record.value)
            .map_err(|e| Error::msg(format!("value is not a postcard Trip: {e}")))?;
        if trip.dropoff_ms <= trip.pickup_ms {
            sluice_sdk::bail!("trip {} does not end after it starts", trip.trip_id);
        }
        self.trips += 1;
        self.duration_ms += trip.dropoff_ms - trip.pickup_ms;
        Ok(())
    }

    fn merge(&mut self, other: Self, _: &Config) {
        self.trips += other.trips;
        self.duration_ms += other.duration_ms;
    }

    fn finish(
        self,
        key: &[u8],
        window: Window,
        out: &mut WindowOutput,
        config: &Config,
    ) -> Result<(), Error> {
        let zone: u16 = std::str::from_utf8(key)
            .ok()
            .and_then(|k| k.parse().ok())
            .ok_or_else(|| {
                Error::msg(format!(
                    "key {:?} is not a zone number",
                    String::from_utf8_lossy(key)
                ))
            })?;
        let Some(centiminutes) = self.avg_centiminutes() else {
            return Ok(());
        };
        out.emit(Record::from_json(&Out {
            airport: config.airports.get(&zone).map(String::as_str),
            zone,
            start: window.start,
            end: window.end,
            trips: self.trips,
            avg_duration_min: centiminutes as f64 / 100.0,
        })?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use sluice_sdk::aggregate::FiredWindow;
    use sluice_sdk::testing::AggregateHarness;
    use sluice_sdk::{aggregate_harness, Record, Window};
    use taxi_model::Trip;

    use super::Durations;

    const T0: i64 = 1_767_225_600_000;
    const HOUR: i64 = 3_600_000;

    fn trip(dropoff_zone: u16, pickup: i64, minutes: f64) -> Record {
        let t = Trip {
            dropoff_zone,
            pickup_ms: pickup,
            dropoff_ms: pickup + (minutes * 60_000.0) as i64,
            ..Trip::sample()
        };
        Record::new(t.encode())
            .with_key(dropoff_zone.to_string())
            .with_event_time(pickup)
    }

    #[test]
    fn average_duration_per_airport_and_hour() {
        let mut h = aggregate_harness!();
        let run = h.tumbling(
            HOUR,
            vec![
                trip(132, T0, 20.0),
                trip(132, T0 + HOUR - 1, 25.0),
                trip(132, T0 + 10, 25.5),
                trip(138, T0 + 5, 12.0),
                trip(132, T0 + HOUR, 30.0),
            ],
        );
        assert!(run.record_errors.is_empty());
        let (e1, e2) = (T0 + HOUR, T0 + 2 * HOUR);
        assert_eq!(
            run.result.main_values(),
            [
                format!(
                    r#"{{"airport":"JFK","zone":132,"start":{T0},"end":{e1},"trips":3,"avg_duration_min":23.5}}"#
                ),
                format!(
                    r#"{{"airport":"LGA","zone":138,"start":{T0},"end":{e1},"trips":1,"avg_duration_min":12.0}}"#
                ),
                format!(
                    r#"{{"airport":"JFK","zone":132,"start":{e1},"end":{e2},"trips":1,"avg_duration_min":30.0}}"#
                ),
            ]
        );
        assert_eq!(run.result.main()[1].key_str(), Some("138"));
        assert_eq!(run.result.main()[1].event_time, Some(e1 - 1));
    }

    #[test]
    fn rounding_names_and_errors() {
        let d = |trips, duration_ms| Durations { trips, duration_ms };
        assert_eq!(d(3, 60_000).avg_centiminutes(), Some(33)); // 0.333.. min
        assert_eq!(d(3, 120_000).avg_centiminutes(), Some(67)); // 0.666.. min
        assert_eq!(d(1, 300).avg_centiminutes(), Some(1)); // 0.005 min -> up
        assert_eq!(d(0, 0).avg_centiminutes(), None);

        let mut h = aggregate_harness!(r#"{"airports": {"1": "EWR"}}"#);
        let mut backwards = trip(1, T0, 5.0);
        let mut t = Trip::decode(&backwards.value).unwrap();
        t.dropoff_ms = t.pickup_ms;
        backwards.value = t.encode();
        let run = h.tumbling(HOUR, vec![trip(1, T0, 5.0), backwards, trip(132, T0, 1.0)]);
        assert_eq!(run.record_errors.len(), 1);
        assert_eq!(
            run.record_errors[0].message,
            "trip 1 does not end after it starts"
        );
        assert_eq!(
            run.result.main_values(),
            [
                format!(
                    r#"{{"airport":"EWR","zone":1,"start":{T0},"end":{},"trips":1,"avg_duration_min":5.0}}"#,
                    T0 + HOUR
                ),
                format!(
                    r#"{{"airport":null,"zone":132,"start":{T0},"end":{},"trips":1,"avg_duration_min":1.0}}"#,
                    T0 + HOUR
                ),
            ]
        );
        let out = h.finish(vec![FiredWindow {
            key: b"x".to_vec(),
            window: Window::new(0, 1),
            accumulator: AggregateHarness::encode(&d(1, 1)),
        }]);
        assert_eq!(out.error_messages(), [r#"key "x" is not a zone number"#]);
        let merged = h.merge(vec![vec![
            AggregateHarness::encode(&d(1, 60_000)),
            AggregateHarness::encode(&d(2, 60_000)),
        ]]);
        assert_eq!(
            AggregateHarness::decode::<Durations>(&merged[0]),
            d(3, 120_000)
        );
    }
}

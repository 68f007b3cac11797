//! Trips and revenue per taxi zone and window: the window aggregate (world
//! `window-aggregate`) of `examples/taxi-windows`, used there by a tumbling
//! and a sliding window operator alike (the host assigns the windows; the
//! aggregate does not care which kind).
//!
//! **Input**: postcard [`Trip`]s keyed by a zone number in decimal ASCII
//! (`b"161"`), as `taxi-parse` emits them (keyed by pickup zone). A value
//! that is not a postcard `Trip` is a per-record error (`value is not a
//! postcard Trip: ...`) and is left out of its window.
//!
//! **Params**: none.
//!
//! **Accumulator** (`TripStats`, postcard): the number of trips and their
//! revenue, `round(total_amount * 100)` summed in cents as an integer (as
//! `taxi-zone-count` does), so the result is exact and independent of the
//! order in which trips arrive.
//!
//! **Output**, per fired window, on the main output (no key and no event
//! time set, so the host gives it the zone key and the window's `end - 1`):
//!
//! ```text
//! {"zone":161,"start":1767225600000,"end":1767226200000,"trips":12,"revenue":345.67}
//! ```
//!
//! `zone` is the window's key as a number, `revenue` the cents in dollars.
//! A window whose key is not a zone number fails with `key "<key>" is not a
//! zone number` (handed to the operator's error policy); one whose every
//! trip failed emits `"trips":0,"revenue":0.0`.

use serde::{Deserialize, Serialize};
use sluice_sdk::{Aggregate, Error, Record, Window, WindowOutput};
use taxi_model::Trip;

/// The accumulator: trips and revenue in cents.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TripStats {
    /// Trips added.
    pub trips: u64,
    /// Sum of `round(total_amount * 100)` over them.
    pub revenue_cents: i64,
}

#[derive(Serialize)]
struct Out {
    zone: u16,
    start: i64,
    end: i64,
    trips: u64,
    revenue: f64,
}

/// The zone number a key names.
pub fn zone_of(key: &[u8]) -> Result<u16, Error> {
    std::str::from_utf8(key)
        .ok()
        .and_then(|k| k.parse().ok())
        .ok_or_else(|| {
            Error::msg(format!(
                "key {:?} is not a zone number",
                String::from_utf8_lossy(key)
            ))
        })
}

#[sluice_sdk::aggregate]
impl Aggregate for TripStats {
    type Params = ();

    fn add(&mut self, record: &Record, _: &()) -> Result<(), Error> {
        let trip = Trip::decode(&record.value)
            .map_err(|e| Error::msg(format!("value is not a postcard Trip: {e}")))?;
        self.trips += 1;
        self.revenue_cents += (trip.total_amount * 100.0).round() as i64;
        Ok(())
    }

    fn merge(&mut self, other: Self, _: &()) {
        self.trips += other.trips;
        self.revenue_cents += other.revenue_cents;
    }

    fn finish(
        self,
        key: &[u8],
        window: Window,
        out: &mut WindowOutput,
        _: &(),
    ) -> Result<(), Error> {
        out.emit(Record::from_json(&Out {
            zone: zone_of(key)?,
            start: window.start,
            end: window.end,
            trips: self.trips,
            revenue: self.revenue_cents as f64 / 100.0,
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

    use super::TripStats;

    const T0: i64 = 1_767_225_600_000;
    const TEN_MIN: i64 = 600_000;

    fn trip(zone: u16, total: f64, t: i64) -> Record {
        let trip = Trip {
            pickup_zone: zone,
            pickup_ms: t,
            dropoff_ms: t + 900_000,
            total_amount: total,
            ..Trip::sample()
        };
        Record::new(trip.encode())
            .with_key(zone.to_string())
            .with_event_time(t)
    }

    #[test]
    fn trips_and_revenue_per_zone_and_window() {
        let mut h = aggregate_harness!();
        let run = h.tumbling(
            TEN_MIN,
            vec![
                trip(161, 19.8, T0),
                trip(132, 70.25, T0 + 1),
                trip(161, 0.1, T0 + TEN_MIN - 1),
                trip(161, 0.2, T0 + TEN_MIN - 2),
                trip(161, 5.0, T0 + TEN_MIN),
            ],
        );
        assert!(run.record_errors.is_empty());
        let (e1, e2) = (T0 + TEN_MIN, T0 + 2 * TEN_MIN);
        assert_eq!(
            run.result.main_values(),
            [
                format!(r#"{{"zone":132,"start":{T0},"end":{e1},"trips":1,"revenue":70.25}}"#),
                format!(r#"{{"zone":161,"start":{T0},"end":{e1},"trips":3,"revenue":20.1}}"#),
                format!(r#"{{"zone":161,"start":{e1},"end":{e2},"trips":1,"revenue":5.0}}"#),
            ]
        );
        assert_eq!(run.result.main()[0].key_str(), Some("132"));
        assert_eq!(run.result.main()[0].event_time, Some(e1 - 1));
    }

    #[test]
    fn merge_bad_values_and_bad_keys() {
        let mut h = aggregate_harness!();
        let run = h.tumbling(
            TEN_MIN,
            vec![
                Record::new("not postcard")
                    .with_key("7")
                    .with_event_time(T0),
                trip(7, 1.0, T0),
            ],
        );
        assert_eq!(run.record_errors.len(), 1);
        assert!(run.record_errors[0]
            .message
            .starts_with("value is not a postcard Trip"));
        assert!(run.result.main_values()[0].contains(r#""trips":1,"revenue":1.0"#));

        let enc = |trips, revenue_cents| {
            AggregateHarness::encode(&TripStats {
                trips,
                revenue_cents,
            })
        };
        let merged = h.merge(vec![vec![enc(2, 1050), enc(1, 1)]]);
        let out = h.finish(vec![
            FiredWindow {
                key: b"42".to_vec(),
                window: Window::new(0, 10),
                accumulator: merged[0].clone(),
            },
            FiredWindow {
                key: b"JFK".to_vec(),
                window: Window::new(0, 10),
                accumulator: enc(0, 0),
            },
        ]);
        assert_eq!(
            out.main_values(),
            [r#"{"zone":42,"start":0,"end":10,"trips":3,"revenue":10.51}"#]
        );
        assert_eq!(out.error_messages(), [r#"key "JFK" is not a zone number"#]);
        assert_eq!(out.errors[0].input, 1);
    }
}

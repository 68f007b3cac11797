//! Trips to the airports, keyed by their dropoff zone: the process operator
//! of `examples/taxi-windows` in front of the airport-duration window.
//!
//! **Input**: postcard [`Trip`]s (from `taxi-parse` / `taxi-filter`), any
//! key. A value that is not a postcard `Trip` is a per-record error (`value
//! is not a postcard Trip: ...`).
//!
//! **Params**: `airports` (table from zone number to airport name, default
//! `{ "132" = "JFK", "138" = "LGA" }`, the TLC zones of JFK and LaGuardia):
//! which dropoff zones count as airports. Unknown params are refused.
//!
//! **Output**: for a trip whose `dropoff_zone` is one of the airports, the
//! record unchanged (value, event time, headers) except its key, which
//! becomes the dropoff zone in decimal ASCII (`b"132"`), on the main output.
//! Other trips are dropped. The event time stays the pickup time, so that
//! downstream windows are by pickup time, as the watermark is.

use std::collections::BTreeMap;

use serde::Deserialize;
use sluice_sdk::{Context, Error, Record};
use taxi_model::Trip;

/// TLC zone of JFK Airport.
pub const JFK: u16 = 132;
/// TLC zone of LaGuardia Airport.
pub const LGA: u16 = 138;

/// The params.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Airport zones and their names.
    #[serde(default = "default_airports")]
    pub airports: BTreeMap<u16, String>,
}

/// JFK and LaGuardia.
pub fn default_airports() -> BTreeMap<u16, String> {
    BTreeMap::from([(JFK, "JFK".to_owned()), (LGA, "LGA".to_owned())])
}

/// Keep trips to an airport, keyed by the airport's zone.
#[sluice_sdk::process(params = Config)]
pub fn airport_trips(record: Record, ctx: &mut Context, config: &Config) -> Result<(), Error> {
    let trip = Trip::decode(&record.value)
        .map_err(|e| Error::msg(format!("value is not a postcard Trip: {e}")))?;
    if config.airports.contains_key(&trip.dropoff_zone) {
        ctx.emit(record.with_key(trip.dropoff_zone.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use sluice_sdk::testing::Harness;
    use sluice_sdk::{harness, Record};
    use taxi_model::Trip;

    fn trip(pickup: u16, dropoff: u16) -> Record {
        let t = Trip {
            pickup_zone: pickup,
            dropoff_zone: dropoff,
            ..Trip::sample()
        };
        Record::new(t.encode())
            .with_key(pickup.to_string())
            .with_event_time(t.pickup_ms)
            .with_header("h", "v")
    }

    #[test]
    fn keeps_airport_trips_keyed_by_dropoff_zone() {
        let mut h = harness!();
        let batch = vec![
            trip(161, 132),
            trip(132, 161),
            trip(237, 138),
            trip(138, 138),
        ];
        let out = h.process(batch.clone());
        assert!(out.errors.is_empty());
        assert_eq!(
            out.emits.iter().map(|e| e.input).collect::<Vec<_>>(),
            [0, 2, 3]
        );
        let kept = out.main();
        assert_eq!(
            kept.iter()
                .map(|r| r.key_str().unwrap())
                .collect::<Vec<_>>(),
            ["132", "138", "138"]
        );
        // Everything but the key passes through.
        for (r, i) in kept.iter().zip([0, 2, 3]) {
            assert_eq!(r.value, batch[i].value);
            assert_eq!(r.event_time, batch[i].event_time);
            assert_eq!(r.headers, batch[i].headers);
        }
    }

    #[test]
    fn airports_from_params_and_bad_input() {
        let mut h = harness!(r#"{"airports": {"1": "EWR"}}"#);
        let out = h.process(vec![trip(5, 1), trip(5, 132), Record::new("nope")]);
        assert_eq!(out.main().len(), 1);
        assert_eq!(out.main()[0].key_str(), Some("1"));
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].input, 2);
        assert!(out.errors[0]
            .message
            .starts_with("value is not a postcard Trip"));
        let err = Harness::try_new(crate::__sluice_operator(), r#"{"airport": {}}"#).unwrap_err();
        assert!(err.message().contains("unknown field `airport`"), "{err}");
        let err = Harness::try_new(crate::__sluice_operator(), r#"{"airports": {"x": "?"}}"#)
            .unwrap_err();
        assert!(err.message().starts_with("invalid params"), "{err}");
    }
}

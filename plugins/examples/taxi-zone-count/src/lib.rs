//! Running trip count and revenue per pickup zone.
//!
//! Keyed by pickup zone (decimal ASCII, as `taxi-parse` emits it). Input:
//! postcard [`Trip`]s. Keeps two value states per key, `trips` (u64) and
//! `revenue_cents` (i64, `round(total_amount * 100)` summed), and after each
//! trip emits on the main output the same key with the value
//! `{"zone":161,"trips":12,"revenue_cents":45678}`, event time passed through.

use sluice_sdk::{Context, Error, Record, ValueState};
use taxi_model::Trip;

static TRIPS: ValueState<u64> = ValueState::new("trips");
static REVENUE_CENTS: ValueState<i64> = ValueState::new("revenue_cents");

/// Count one trip for its zone and emit the zone's running totals.
#[sluice_sdk::process]
pub fn zone_count(record: Record, ctx: &mut Context) -> Result<(), Error> {
    let Some(key) = record.key else {
        return Err(Error::msg(
            "record has no key: key the input by pickup zone",
        ));
    };
    let zone: u16 = std::str::from_utf8(&key)
        .ok()
        .and_then(|k| k.parse().ok())
        .ok_or_else(|| {
            Error::msg(format!(
                "key {:?} is not a zone number",
                String::from_utf8_lossy(&key)
            ))
        })?;
    let trip = Trip::decode(&record.value)
        .map_err(|e| Error::msg(format!("value is not a postcard Trip: {e}")))?;
    let trips = TRIPS.update(|n| n.unwrap_or(0) + 1)?;
    let cents = (trip.total_amount * 100.0).round() as i64;
    let revenue_cents = REVENUE_CENTS.update(|r| r.unwrap_or(0) + cents)?;
    ctx.emit(Record {
        key: Some(key),
        value: format!(r#"{{"zone":{zone},"trips":{trips},"revenue_cents":{revenue_cents}}}"#)
            .into_bytes(),
        event_time: record.event_time,
        headers: Vec::new(),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use sluice_sdk::{harness, Record};
    use taxi_model::Trip;

    fn trip(zone: u16, total: f64, t: i64) -> Record {
        let trip = Trip {
            pickup_zone: zone,
            total_amount: total,
            pickup_ms: t,
            ..Trip::sample()
        };
        Record::new(trip.encode())
            .with_key(zone.to_string())
            .with_event_time(t)
    }

    #[test]
    fn counts_per_zone() {
        let mut h = harness!();
        let out = h.process(vec![
            trip(161, 19.8, 1),
            trip(237, 10.0, 2),
            trip(161, 0.125, 3),
        ]);
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        assert_eq!(
            out.main_values(),
            [
                r#"{"zone":161,"trips":1,"revenue_cents":1980}"#,
                r#"{"zone":237,"trips":1,"revenue_cents":1000}"#,
                r#"{"zone":161,"trips":2,"revenue_cents":1993}"#,
            ]
        );
        let main = out.main();
        assert_eq!(main[2].key.as_deref(), Some(&b"161"[..]));
        assert_eq!(
            main.iter().map(|r| r.event_time).collect::<Vec<_>>(),
            [Some(1), Some(2), Some(3)]
        );
        // State persists across batches.
        let out = h.process(vec![trip(237, 5.0, 4)]);
        assert_eq!(
            out.main_values(),
            [r#"{"zone":237,"trips":2,"revenue_cents":1500}"#]
        );
        assert_eq!(h.value::<u64>("trips", b"161"), Some(2));
        assert_eq!(h.value::<i64>("revenue_cents", b"237"), Some(1500));
    }

    #[test]
    fn state_survives_a_swap() {
        let mut h = harness!();
        h.process(vec![trip(1, 1.0, 1)]);
        h.swap(crate::__sluice_operator(), "{}").unwrap();
        assert_eq!(
            h.process(vec![trip(1, 1.0, 2)]).main_values(),
            [r#"{"zone":1,"trips":2,"revenue_cents":200}"#]
        );
    }

    #[test]
    fn bad_records_are_errors() {
        let mut h = harness!();
        let out = h.process(vec![
            Record::new(Trip::sample().encode()),
            trip(1, 1.0, 1).with_key("one"),
            Record::new("x").with_key("5"),
        ]);
        assert!(out.emits.is_empty());
        assert_eq!(
            out.errors[0].message,
            "record has no key: key the input by pickup zone"
        );
        assert_eq!(out.errors[1].message, r#"key "one" is not a zone number"#);
        assert!(out.errors[2]
            .message
            .starts_with("value is not a postcard Trip"));
    }
}

//! Parse the generator's JSON trip lines into postcard [`Trip`]s keyed by
//! pickup zone.
//!
//! Input value: one JSON object with all [`Trip`] fields (extra fields are
//! ignored). Output: key = pickup zone as decimal ASCII (`b"161"`), value =
//! postcard-encoded [`Trip`], event time = `pickup_ms`. Malformed input is a
//! per-record error naming what is wrong.

use sluice_sdk::{bail, Error, Record};
use taxi_model::{Trip, ZONES};

/// Parse one trip line.
#[sluice_sdk::map]
pub fn parse_trip(record: Record) -> Result<Record, Error> {
    let trip = parse(&record.value)?;
    Ok(Record {
        key: Some(trip.pickup_zone.to_string().into_bytes()),
        value: trip.encode(),
        event_time: Some(trip.pickup_ms),
        headers: record.headers,
    })
}

/// Parse and validate one JSON trip.
pub fn parse(json: &[u8]) -> Result<Trip, Error> {
    // serde accepts a struct written as a JSON array too; the schema is an object.
    if json.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        bail!("invalid type: array, expected a JSON object with the trip fields");
    }
    let trip: Trip = serde_json::from_slice(json).map_err(describe)?;
    for (what, zone) in [
        ("pickup_zone", trip.pickup_zone),
        ("dropoff_zone", trip.dropoff_zone),
    ] {
        if !ZONES.contains(&zone) {
            bail!(
                "{what} {zone} out of range {}..={}",
                ZONES.start(),
                ZONES.end()
            );
        }
    }
    Ok(trip)
}

/// serde_json's message, with the position put first for syntax errors
/// ("invalid JSON at column 17: expected value") and left out for data errors
/// ("missing field `fare_amount`").
fn describe(e: serde_json::Error) -> Error {
    let text = e.to_string();
    let bare = match text.rfind(" at line ") {
        Some(i) => &text[..i],
        None => &text,
    };
    match e.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            Error::msg(format!("invalid JSON at column {}: {bare}", e.column()))
        }
        serde_json::error::Category::Data | serde_json::error::Category::Io => Error::msg(bare),
    }
}

#[cfg(test)]
mod tests {
    use sluice_sdk::{harness, Record};
    use taxi_model::Trip;

    const LINE: &str = r#"{"trip_id":7,"vendor_id":2,"pickup_ms":1700000000000,"dropoff_ms":1700000900000,"passenger_count":1,"trip_distance":2.5,"pickup_zone":161,"dropoff_zone":237,"pickup_lon":-73.97,"pickup_lat":40.76,"dropoff_lon":-73.96,"dropoff_lat":40.77,"fare_amount":14.5,"tip_amount":3.0,"total_amount":19.8}"#;

    fn errors_of(values: &[&str]) -> Vec<String> {
        let mut h = harness!();
        let out = h.process(values.iter().map(|v| Record::new(*v)).collect());
        assert!(out.emits.is_empty());
        out.errors.into_iter().map(|e| e.message).collect()
    }

    #[test]
    fn parses_a_trip() {
        let mut h = harness!();
        let out = h.process(vec![Record::new(LINE)]);
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        let r = out.main()[0];
        assert_eq!(r.key.as_deref(), Some(&b"161"[..]));
        assert_eq!(r.event_time, Some(1_700_000_000_000));
        let t = Trip::decode(&r.value).unwrap();
        assert_eq!(
            t,
            Trip {
                trip_id: 7,
                ..Trip::sample()
            }
        );
    }

    #[test]
    fn ignores_unknown_fields_and_accepts_integer_floats() {
        let line = LINE
            .replace(r#""trip_id":7,"#, r#""trip_id":7,"extra":[1,2],"#)
            .replace("2.5", "3");
        let t = super::parse(line.as_bytes()).unwrap();
        assert_eq!(t.trip_distance, 3.0);
    }

    #[test]
    fn reports_what_is_wrong() {
        let missing = LINE.replace(r#","fare_amount":14.5"#, "");
        let zone = LINE.replace(r#""pickup_zone":161"#, r#""pickup_zone":999"#);
        let dropoff = LINE.replace(r#""dropoff_zone":237"#, r#""dropoff_zone":0"#);
        let wrong_type = LINE.replace(r#""vendor_id":2"#, r#""vendor_id":"two""#);
        let overflow = LINE.replace(r#""vendor_id":2"#, r#""vendor_id":300"#);
        let errors = errors_of(&[
            r#"{"trip_id": 7, oops}"#,
            &missing,
            &zone,
            &dropoff,
            &wrong_type,
            &overflow,
            "",
            "[1]",
        ]);
        assert_eq!(errors[0], "invalid JSON at column 16: key must be a string");
        assert_eq!(errors[1], "missing field `fare_amount`");
        assert_eq!(errors[2], "pickup_zone 999 out of range 1..=265");
        assert_eq!(errors[3], "dropoff_zone 0 out of range 1..=265");
        assert_eq!(errors[4], r#"invalid type: string "two", expected u8"#);
        assert_eq!(errors[5], "invalid value: integer `300`, expected u8");
        assert_eq!(
            errors[6],
            "invalid JSON at column 0: EOF while parsing a value"
        );
        assert_eq!(
            errors[7],
            "invalid type: array, expected a JSON object with the trip fields"
        );
    }
}

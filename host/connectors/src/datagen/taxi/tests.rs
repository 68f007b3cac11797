use super::json::write_trip_fast;
use super::*;
use crate::datagen::{self, Synthetic};
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

fn labeled(config: &TaxiConfig, n: usize) -> Vec<(Kind, bool, Record)> {
    let mut trips = Trips::new(config, 0);
    (0..n).map(|_| trips.next_labeled().unwrap()).collect()
}

fn cents(x: f64) -> i64 {
    (x * 100.0).round() as i64
}

#[test]
fn config_defaults_and_unknown_fields() {
    let c: TaxiConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(c, TaxiConfig::default());
    assert_eq!((c.seed, c.count, c.rate, c.zones), (42, None, None, 265));
    assert_eq!(c.start_ms, 1_767_225_600_000);
    c.validate().unwrap();
    let c: TaxiConfig = serde_json::from_str(r#"{"seed": 1, "count": 5, "rate": 10.5}"#).unwrap();
    assert_eq!(
        (c.seed, c.count, c.rate, c.malformed_ratio),
        (1, Some(5), Some(10.5), 0.01)
    );
    for bad in [
        r#"{"name": "x"}"#,
        r#"{"type": "generator"}"#,
        r#"{"sead": 1}"#,
    ] {
        assert!(serde_json::from_str::<TaxiConfig>(bad).is_err(), "{bad}");
    }
}

#[test]
fn validation_names_field_and_fix() {
    let check = |c: TaxiConfig, field: &str| {
        let err = Synthetic::new(&c, 0)
            .err()
            .expect("invalid config accepted");
        assert!(matches!(err, ConnectorError::Config(_)));
        let msg = err.to_string();
        assert!(msg.contains(field), "{msg}");
        msg
    };
    let msg = check(
        TaxiConfig {
            malformed_ratio: 1.5,
            ..Default::default()
        },
        "`malformed_ratio`",
    );
    assert!(msg.contains("between 0 and 1"), "{msg}");
    check(
        TaxiConfig {
            implausible_ratio: -0.1,
            ..Default::default()
        },
        "`implausible_ratio`",
    );
    check(
        TaxiConfig {
            out_of_order_ratio: f64::NAN,
            ..Default::default()
        },
        "`out_of_order_ratio`",
    );
    check(
        TaxiConfig {
            malformed_ratio: 0.6,
            implausible_ratio: 0.6,
            ..Default::default()
        },
        "sum",
    );
    let msg = check(
        TaxiConfig {
            rate: Some(0.0),
            ..Default::default()
        },
        "`rate`",
    );
    assert!(msg.contains("positive"), "{msg}");
    check(
        TaxiConfig {
            rate: Some(f64::INFINITY),
            ..Default::default()
        },
        "`rate`",
    );
    check(
        TaxiConfig {
            max_out_of_order_ms: -1,
            ..Default::default()
        },
        "`max_out_of_order_ms`",
    );
    check(
        TaxiConfig {
            zones: 0,
            ..Default::default()
        },
        "`zones`",
    );
}

#[test]
fn deterministic_per_seed() {
    let config = TaxiConfig {
        count: Some(20_000),
        ..Default::default()
    };
    let a: Vec<Record> = datagen::records(&config, 0).collect();
    let b: Vec<Record> = datagen::records(&config, 0).collect();
    assert_eq!(a.len(), 20_000);
    assert_eq!(a, b);
    let c: Vec<Record> = datagen::records(
        &TaxiConfig {
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
    let d: Vec<Record> = datagen::records(&config, 5).collect();
    assert!(a
        .iter()
        .zip(&d)
        .all(|(x, y)| x.value == y.value && y.position.unwrap().source == 5));
    // A pinned value guards against accidental changes of the sequence
    // (update it deliberately if the dataset changes).
    let first = String::from_utf8(a[0].value.clone()).unwrap();
    assert!(
        first.starts_with("{\"trip_id\":0,\"vendor_id\":"),
        "{first}"
    );
    assert!(first.contains("\"pickup_ms\":1767225600000,"), "{first}");
}

#[test]
fn source_matches_taxi_records_and_stops_at_count() {
    let config = TaxiConfig {
        count: Some(2_500),
        seed: 9,
        ..Default::default()
    };
    let expected: Vec<Record> = datagen::records(&config, 2).collect();
    let mut source = Synthetic::new(&config, 2).unwrap();
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
    let mut empty = Synthetic::new(
        &TaxiConfig {
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
    let config = TaxiConfig::default();
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
    let none = TaxiConfig {
        malformed_ratio: 0.0,
        implausible_ratio: 0.0,
        out_of_order_ratio: 0.0,
        ..Default::default()
    };
    assert!(labeled(&none, 10_000)
        .iter()
        .all(|(k, o, _)| *k == Kind::Plausible && !o));
    let all = TaxiConfig {
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
    let config = TaxiConfig::default();
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
    let config = TaxiConfig {
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
    let mut trips = Trips::new(&TaxiConfig::default(), 0);
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
    let config = TaxiConfig {
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

    let few = TaxiConfig {
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
    let config = TaxiConfig {
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
    let config = TaxiConfig {
        count: Some(1_000),
        rate: Some(2_000.0),
        ..Default::default()
    };
    let mut source = Synthetic::new(&config, 0).unwrap();
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
    let config = TaxiConfig::default();
    let mut source = Synthetic::new(&config, 0).unwrap();
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

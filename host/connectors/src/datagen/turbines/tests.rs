use sluice_types::Source;
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use sluice_types::Position;

use super::*;
use crate::datagen::{self, Synthetic};

/// The schema a downstream operator would parse.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Reading {
    turbine: String,
    speed_mph: f64,
    time: i64,
}

fn parse(record: &Record) -> Reading {
    serde_json::from_slice(&record.value)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&record.value)))
}

fn labeled(config: &TurbineConfig) -> Vec<(bool, Record)> {
    let mut readings = Readings::new(config, 0);
    std::iter::from_fn(|| readings.next_labeled()).collect()
}

#[test]
fn config_defaults_and_unknown_fields() {
    let c: TurbineConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(c, TurbineConfig::default());
    assert_eq!(
        (
            c.seed,
            c.turbines,
            c.records,
            c.interval_ms,
            c.rate,
            c.splits
        ),
        (42, 20, 100_000, 1_000, None, 1)
    );
    assert_eq!(
        (c.start_ms, c.out_of_order_ms, c.late_ratio, c.gust_ratio),
        (1_767_225_600_000, 2_000, 0.01, 0.2)
    );
    c.validate().unwrap();
    let c: TurbineConfig =
        serde_json::from_str(r#"{"seed": 1, "records": 5, "rate": 10.5, "splits": 3}"#).unwrap();
    assert_eq!((c.seed, c.records, c.rate, c.splits), (1, 5, Some(10.5), 3));
    for bad in [
        r#"{"name": "x"}"#,
        r#"{"type": "turbines"}"#,
        r#"{"count": 1}"#,
        r#"{"turbines": -1}"#,
    ] {
        assert!(serde_json::from_str::<TurbineConfig>(bad).is_err(), "{bad}");
    }
}

#[test]
fn validation_names_field_and_fix() {
    let check = |c: TurbineConfig, field: &str| {
        let err = Synthetic::new(&c, 0)
            .err()
            .expect("invalid config accepted");
        assert!(matches!(err, ConnectorError::Config(_)));
        let msg = err.to_string();
        assert!(
            msg.starts_with("turbines: ") && msg.contains(field),
            "{msg}"
        );
    };
    check(
        TurbineConfig {
            turbines: 0,
            ..Default::default()
        },
        "`turbines`",
    );
    check(
        TurbineConfig {
            splits: 0,
            ..Default::default()
        },
        "`splits`",
    );
    check(
        TurbineConfig {
            interval_ms: 0,
            ..Default::default()
        },
        "`interval_ms`",
    );
    check(
        TurbineConfig {
            late_ratio: 1.5,
            ..Default::default()
        },
        "`late_ratio`",
    );
    check(
        TurbineConfig {
            gust_ratio: f64::NAN,
            ..Default::default()
        },
        "`gust_ratio`",
    );
    check(
        TurbineConfig {
            rate: Some(0.0),
            ..Default::default()
        },
        "`rate`",
    );
    check(
        TurbineConfig {
            out_of_order_ms: -1,
            ..Default::default()
        },
        "`out_of_order_ms`",
    );
    check(
        TurbineConfig {
            out_of_order_ms: 120_000,
            ..Default::default()
        },
        "`out_of_order_ms`",
    );
    Synthetic::new(
        &TurbineConfig {
            out_of_order_ms: 119_999,
            late_ratio: 1.0,
            gust_ratio: 0.0,
            ..Default::default()
        },
        0,
    )
    .unwrap();
}

#[test]
fn deterministic_per_seed() {
    let config = TurbineConfig {
        records: 20_000,
        ..Default::default()
    };
    let a: Vec<Record> = datagen::records(&config, 0).collect();
    let b: Vec<Record> = datagen::records(&config, 0).collect();
    assert_eq!(a.len(), 20_000);
    assert_eq!(a, b);
    let c: Vec<Record> = datagen::records(
        &TurbineConfig {
            seed: 43,
            ..config.clone()
        },
        0,
    )
    .collect();
    assert_eq!(c.len(), 20_000);
    let same = a.iter().zip(&c).filter(|(x, y)| x.value == y.value).count();
    assert!(same < 1_000, "{same} identical records for different seeds");
    // The source index only changes the position.
    let d: Vec<Record> = datagen::records(&config, 5).collect();
    assert!(a
        .iter()
        .zip(&d)
        .all(|(x, y)| x.value == y.value && y.position.unwrap().source == 5));
    // A pinned value guards against accidental changes of the sequence
    // (update it deliberately if the dataset changes).
    let first = String::from_utf8(a[0].value.clone()).unwrap();
    assert!(first.starts_with("{\"turbine\":\"T0"), "{first}");
    assert!(first.ends_with(",\"time\":1767225600000}"), "{first}");
}

#[test]
fn source_matches_turbine_records_and_stops_at_count() {
    let config = TurbineConfig {
        records: 2_500,
        seed: 9,
        splits: 3,
        ..Default::default()
    };
    let expected: Vec<Record> = datagen::records(&config, 2).collect();
    assert_eq!(expected.len(), 2_500);
    let mut source = Synthetic::new(&config, 2).unwrap();
    let mut got = Vec::new();
    while let Some(batch) = source.poll_batch(1000).unwrap() {
        assert!(batch.len() <= 1000 && !batch.is_empty());
        got.extend(batch);
    }
    assert!(source.poll_batch(1000).unwrap().is_none());
    assert_eq!(got, expected);
    // Unbounded: keeps going.
    let mut endless = Synthetic::new(
        &TurbineConfig {
            records: 0,
            ..Default::default()
        },
        0,
    )
    .unwrap();
    for _ in 0..150 {
        assert_eq!(endless.poll_batch(1_000).unwrap().unwrap().len(), 1_000);
    }
}

#[test]
fn records_keys_json_and_positions() {
    let config = TurbineConfig {
        splits: 3,
        turbines: 25,
        records: 30_000,
        ..Default::default()
    };
    let records: Vec<Record> = datagen::records(&config, 1).collect();
    assert_eq!(records.len(), 30_000);
    let mut next_offset = [0u64; 3];
    let mut per_turbine: BTreeMap<String, usize> = BTreeMap::new();
    for r in &records {
        let reading = parse(r);
        let text = String::from_utf8(r.value.clone()).unwrap();
        assert!(
            text.starts_with(&format!(
                "{{\"turbine\":\"{}\",\"speed_mph\":",
                reading.turbine
            )),
            "{text}"
        );
        let speed =
            &text[text.find("\"speed_mph\":").unwrap() + 12..text.find(",\"time\"").unwrap()];
        assert_eq!(
            speed.len() - speed.find('.').unwrap(),
            2,
            "one decimal: {text}"
        );
        assert!((0.0..100.0).contains(&reading.speed_mph), "{text}");
        assert_eq!(r.event_time, Some(reading.time));
        assert_eq!(r.key.as_deref(), Some(reading.turbine.as_bytes()));
        assert_eq!(reading.turbine.len(), 4);
        let id: u32 = reading.turbine[1..].parse().unwrap();
        assert!(id < 25);
        let p = r.position.unwrap();
        assert_eq!((p.source, p.split), (1, id % 3));
        assert_eq!(
            p.offset, next_offset[p.split as usize],
            "offsets contiguous per split"
        );
        next_offset[p.split as usize] += 1;
        assert_eq!((reading.time - config.start_ms) % 1_000, 0, "on a tick");
        *per_turbine.entry(reading.turbine).or_default() += 1;
    }
    assert_eq!(per_turbine.len(), 25);
    assert!(per_turbine.values().all(|&n| n == 1_200), "{per_turbine:?}");
    assert_eq!(per_turbine.keys().next().unwrap(), "T000");
    let wide: Vec<Record> = datagen::records(
        &TurbineConfig {
            turbines: 1_500,
            records: 1_500,
            ..Default::default()
        },
        0,
    )
    .collect();
    assert!(wide.iter().any(|r| r.key.as_deref() == Some(&b"T1499"[..])));
}

/// Lateness as the module docs define it: event time more than
/// `out_of_order_ms` behind the largest event time emitted before.
#[test]
fn lateness_matches_definition_and_ratio() {
    for splits in [1, 4] {
        let config = TurbineConfig {
            records: 100_000,
            splits,
            ..Default::default()
        };
        let records = labeled(&config);
        assert_eq!(records.len(), 100_000);
        let last_time = records
            .iter()
            .map(|(_, r)| r.event_time.unwrap())
            .max()
            .unwrap();
        let mut max_seen = i64::MIN;
        let mut split_max: HashMap<u32, i64> = HashMap::new();
        let (mut late, mut labeled_late) = (0, 0);
        for (was_late, r) in &records {
            let t = r.event_time.unwrap();
            let split = r.position.unwrap().split;
            let behind = max_seen.saturating_sub(t);
            let split_behind = split_max.get(&split).map_or(i64::MIN, |m| m - t);
            if behind > config.out_of_order_ms {
                late += 1;
                assert!(was_late, "an on-time reading is {behind} ms behind");
            }
            if *was_late {
                labeled_late += 1;
                // Flushed at the end of the stream: possibly less late.
                if t < last_time - LATE_MAX_MS {
                    assert!(
                        split_behind >= LATE_MIN_MS,
                        "late reading only {split_behind} ms behind in its split"
                    );
                    assert!(behind >= LATE_MIN_MS);
                }
            } else {
                assert!(split_behind <= config.out_of_order_ms && behind <= config.out_of_order_ms);
            }
            max_seen = max_seen.max(t);
            let m = split_max.entry(split).or_insert(i64::MIN);
            *m = (*m).max(t);
        }
        let share = late as f64 / records.len() as f64;
        assert!((share - 0.01).abs() < 0.0015, "late share {share}");
        assert!(
            labeled_late - late <= 5,
            "{labeled_late} generated late, {late} late"
        );
    }
    // No lateness and no jitter: event time never decreases.
    let config = TurbineConfig {
        records: 10_000,
        late_ratio: 0.0,
        out_of_order_ms: 0,
        ..Default::default()
    };
    let times: Vec<i64> = datagen::records(&config, 0)
        .map(|r| r.event_time.unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
    // The default jitter does reorder readings.
    let config = TurbineConfig {
        records: 10_000,
        late_ratio: 0.0,
        ..Default::default()
    };
    let times: Vec<i64> = datagen::records(&config, 0)
        .map(|r| r.event_time.unwrap())
        .collect();
    assert!(times.windows(2).filter(|w| w[0] > w[1]).count() > 1_000);
}

#[test]
fn one_minute_averages_exceed_60_mph_sometimes() {
    let config = TurbineConfig::default();
    let mut windows: HashMap<(String, i64), (f64, u32)> = HashMap::new();
    for r in datagen::records(&config, 0) {
        let reading = parse(&r);
        let w = windows
            .entry((reading.turbine, reading.time.div_euclid(60_000)))
            .or_default();
        w.0 += reading.speed_mph;
        w.1 += 1;
    }
    let averages: Vec<(&String, f64)> = windows
        .iter()
        .filter(|(_, (_, n))| *n == 60)
        .map(|((t, _), (sum, n))| (t, sum / *n as f64))
        .collect();
    let above: Vec<&(&String, f64)> = averages.iter().filter(|(_, avg)| *avg > 60.0).collect();
    let share = above.len() as f64 / averages.len() as f64;
    assert!(
        (0.01..0.15).contains(&share),
        "{} of {} windows above 60 mph",
        above.len(),
        averages.len()
    );
    // Exactly round(0.2 × 20) = 4 turbines gust, each several times.
    let mut gusty: HashMap<&String, usize> = HashMap::new();
    for (t, _) in &above {
        *gusty.entry(*t).or_default() += 1;
    }
    assert_eq!(gusty.len(), 4, "{gusty:?}");
    assert!(gusty.values().all(|&n| n >= 3), "{gusty:?}");
    // Speeds stay plausible.
    assert!(averages.iter().all(|(_, avg)| (5.0..95.0).contains(avg)));
    let calm = TurbineConfig {
        gust_ratio: 0.0,
        records: 20_000,
        ..Default::default()
    };
    assert!(datagen::records(&calm, 0).all(|r| parse(&r).speed_mph < 50.0));
}

#[test]
fn rate_limited() {
    let config = TurbineConfig {
        records: 1_000,
        rate: Some(2_000.0),
        ..Default::default()
    };
    let mut source = Synthetic::new(&config, 0).unwrap();
    let start = Instant::now();
    let mut total = 0;
    while let Some(batch) = source.poll_batch(10_000).unwrap() {
        total += batch.len();
    }
    let elapsed = start.elapsed().as_secs_f64();
    assert_eq!(total, 1_000);
    assert!((0.45..1.5).contains(&elapsed), "{elapsed} s");
}

#[test]
fn positions_are_unique() {
    let config = TurbineConfig {
        records: 5_000,
        splits: 7,
        turbines: 5,
        ..Default::default()
    };
    let positions: Vec<Position> = datagen::records(&config, 0)
        .map(|r| r.position.unwrap())
        .collect();
    let unique: std::collections::HashSet<_> = positions.iter().collect();
    assert_eq!(unique.len(), 5_000);
    // Splits 5 and 6 have no turbine.
    assert!(positions.iter().all(|p| p.split < 5));
}

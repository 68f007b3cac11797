use sluice_types::Source;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use super::*;
use crate::datagen::{self, Synthetic};

/// The schema a downstream operator would parse.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Click {
    user: String,
    page: String,
    time: i64,
}

fn parse(record: &Record) -> Click {
    serde_json::from_slice(&record.value)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&record.value)))
}

fn labeled(config: &ClickConfig) -> Vec<(bool, Record, Truth)> {
    let mut clicks = Clicks::new(config, 0);
    std::iter::from_fn(|| clicks.next_labeled()).collect()
}

#[test]
fn config_defaults_and_unknown_fields() {
    let c: ClickConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(c, ClickConfig::default());
    assert_eq!(
        (c.seed, c.users, c.records, c.rate, c.splits),
        (42, 1_000, 100_000, None, 1)
    );
    assert_eq!(
        (
            c.start_ms,
            c.session_gap_ms,
            c.out_of_order_ms,
            c.late_ratio
        ),
        (1_767_225_600_000, 1_800_000, 5_000, 0.005)
    );
    c.validate().unwrap();
    let c: ClickConfig =
        serde_json::from_str(r#"{"seed": 1, "records": 5, "rate": 10.5, "splits": 3}"#).unwrap();
    assert_eq!((c.seed, c.records, c.rate, c.splits), (1, 5, Some(10.5), 3));
    for bad in [
        r#"{"name": "x"}"#,
        r#"{"type": "clicks"}"#,
        r#"{"count": 1}"#,
        r#"{"gust_ratio": 0.1}"#,
    ] {
        assert!(serde_json::from_str::<ClickConfig>(bad).is_err(), "{bad}");
    }
}

#[test]
fn validation_names_field_and_fix() {
    let check = |c: ClickConfig, field: &str| {
        let err = Synthetic::new(&c, 0)
            .err()
            .expect("invalid config accepted");
        assert!(matches!(err, ConnectorError::Config(_)));
        let msg = err.to_string();
        assert!(msg.starts_with("clicks: ") && msg.contains(field), "{msg}");
    };
    check(
        ClickConfig {
            users: 0,
            ..Default::default()
        },
        "`users`",
    );
    check(
        ClickConfig {
            users: 2_000_000,
            ..Default::default()
        },
        "`users`",
    );
    check(
        ClickConfig {
            splits: 0,
            ..Default::default()
        },
        "`splits`",
    );
    check(
        ClickConfig {
            late_ratio: -0.1,
            ..Default::default()
        },
        "`late_ratio`",
    );
    check(
        ClickConfig {
            rate: Some(f64::INFINITY),
            ..Default::default()
        },
        "`rate`",
    );
    check(
        ClickConfig {
            out_of_order_ms: 60_000,
            ..Default::default()
        },
        "`out_of_order_ms`",
    );
    check(
        ClickConfig {
            session_gap_ms: 19_999,
            ..Default::default()
        },
        "`session_gap_ms`",
    );
    Synthetic::new(
        &ClickConfig {
            session_gap_ms: 20_000,
            out_of_order_ms: 59_999,
            ..Default::default()
        },
        0,
    )
    .unwrap();
}

#[test]
fn deterministic_per_seed() {
    let config = ClickConfig {
        records: 20_000,
        ..Default::default()
    };
    let a: Vec<Record> = datagen::records(&config, 0).collect();
    let b: Vec<Record> = datagen::records(&config, 0).collect();
    assert_eq!(a.len(), 20_000);
    assert_eq!(a, b);
    let c: Vec<Record> = datagen::records(
        &ClickConfig {
            seed: 43,
            ..config.clone()
        },
        0,
    )
    .collect();
    assert_eq!(c.len(), 20_000);
    let same = a.iter().zip(&c).filter(|(x, y)| x.value == y.value).count();
    assert!(same < 10, "{same} identical records for different seeds");
    let d: Vec<Record> = datagen::records(&config, 5).collect();
    assert!(a
        .iter()
        .zip(&d)
        .all(|(x, y)| x.value == y.value && y.position.unwrap().source == 5));
    // A pinned value guards against accidental changes of the sequence
    // (update it deliberately if the dataset changes).
    let first = String::from_utf8(a[0].value.clone()).unwrap();
    assert!(first.starts_with("{\"user\":\"u0"), "{first}");
    assert!(
        a[0].event_time.unwrap() - config.start_ms < 60_000,
        "{first}"
    );
}

#[test]
fn source_matches_click_records_and_stops_at_count() {
    let config = ClickConfig {
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
    let mut endless = Synthetic::new(
        &ClickConfig {
            records: 0,
            users: 3,
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
    let config = ClickConfig {
        splits: 4,
        users: 999,
        records: 30_000,
        ..Default::default()
    };
    let records: Vec<Record> = datagen::records(&config, 1).collect();
    assert_eq!(records.len(), 30_000);
    let mut next_offset = [0u64; 4];
    let mut pages: BTreeMap<String, usize> = BTreeMap::new();
    let mut users = HashSet::new();
    for r in &records {
        let click = parse(r);
        let text = String::from_utf8(r.value.clone()).unwrap();
        assert_eq!(
            text,
            format!(
                "{{\"user\":\"{}\",\"page\":\"{}\",\"time\":{}}}",
                click.user, click.page, click.time
            )
        );
        assert_eq!(r.event_time, Some(click.time));
        assert_eq!(r.key.as_deref(), Some(click.user.as_bytes()));
        assert_eq!(click.user.len(), 5);
        let id: u32 = click.user[1..].parse().unwrap();
        assert!(id < 999);
        users.insert(id);
        let p = r.position.unwrap();
        assert_eq!((p.source, p.split), (1, id % 4));
        assert_eq!(
            p.offset, next_offset[p.split as usize],
            "offsets contiguous per split"
        );
        next_offset[p.split as usize] += 1;
        let kind = click.page.split('/').nth(1).unwrap();
        assert!(
            ["", "products", "category", "search", "cart", "checkout", "blog", "account"]
                .contains(&kind),
            "{text}"
        );
        *pages.entry(kind.to_string()).or_default() += 1;
    }
    assert_eq!(users.len(), 999);
    assert_eq!(pages.len(), 8, "{pages:?}");
    assert!(pages["products"] > pages["checkout"] * 4, "{pages:?}");
}

#[test]
fn lateness_matches_definition_and_ratio() {
    for splits in [1, 4] {
        let config = ClickConfig {
            splits,
            ..Default::default()
        };
        let records = labeled(&config);
        assert_eq!(records.len(), 100_000);
        let last_time = records
            .iter()
            .map(|(_, r, _)| r.event_time.unwrap())
            .max()
            .unwrap();
        let mut max_seen = i64::MIN;
        let mut split_max: HashMap<u32, i64> = HashMap::new();
        let (mut late, mut labeled_late) = (0, 0);
        for (was_late, r, _) in &records {
            let t = r.event_time.unwrap();
            let split = r.position.unwrap().split;
            let behind = max_seen.saturating_sub(t);
            let split_behind = split_max.get(&split).map_or(i64::MIN, |m| m - t);
            if behind > config.out_of_order_ms {
                late += 1;
                assert!(was_late, "an on-time click is {behind} ms behind");
            }
            if *was_late {
                labeled_late += 1;
                if t < last_time - LATE_MAX_MS - 600_000 {
                    assert!(
                        split_behind >= LATE_MIN_MS,
                        "late click only {split_behind} ms behind in its split"
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
        assert!((share - 0.005).abs() < 0.001, "late share {share}");
        assert!(
            labeled_late - late <= 5,
            "{labeled_late} generated late, {late} late"
        );
    }
    let config = ClickConfig {
        records: 10_000,
        late_ratio: 0.0,
        out_of_order_ms: 0,
        ..Default::default()
    };
    let times: Vec<i64> = datagen::records(&config, 0)
        .map(|r| r.event_time.unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
}

/// On the time-sorted clicks of each user (so ignoring jitter and
/// lateness), gaps within a generated session are below the session
/// gap and gaps between sessions above it (by more than a minute).
#[test]
fn sessions_respect_the_gap() {
    for session_gap_ms in [1_800_000, 300_000] {
        let config = ClickConfig {
            session_gap_ms,
            ..Default::default()
        };
        let within_max = (session_gap_ms / 2).min(CLICK_GAP_MAX_MS);
        let mut per_user: HashMap<u32, Vec<(i64, u32)>> = HashMap::new();
        for (_, r, truth) in labeled(&config) {
            assert_eq!(
                r.key.as_deref(),
                Some(format!("u{:04}", truth.user).as_bytes())
            );
            per_user
                .entry(truth.user)
                .or_default()
                .push((r.event_time.unwrap(), truth.session));
        }
        let (mut within, mut between, mut sessions) = (Vec::new(), 0usize, 0usize);
        for clicks in per_user.values_mut() {
            clicks.sort();
            sessions += 1;
            for w in clicks.windows(2) {
                let ((t0, s0), (t1, s1)) = (w[0], w[1]);
                let gap = t1 - t0;
                if s0 == s1 {
                    assert!(
                        (CLICK_GAP_MIN_MS..=within_max).contains(&gap),
                        "gap {gap} within a session"
                    );
                    assert!(gap < session_gap_ms);
                    within.push(gap);
                } else {
                    assert_eq!(s1, s0 + 1);
                    assert!(gap > session_gap_ms + 60_000, "gap {gap} between sessions");
                    between += 1;
                    sessions += 1;
                }
            }
        }
        // Sessions of about 6.7 clicks; a minute or so between clicks.
        let mean_length = 100_000.0 / sessions as f64;
        assert!(
            (4.0..9.0).contains(&mean_length),
            "{mean_length} clicks per session"
        );
        assert!(between > 5_000, "{between}");
        within.sort();
        let median = within[within.len() / 2];
        assert!(
            (2 * CLICK_GAP_MIN_MS..within_max / 2).contains(&median),
            "median gap {median}"
        );
    }
}

#[test]
fn sessions_interleave_across_users() {
    let records: Vec<(bool, Record, Truth)> = labeled(&ClickConfig::default());
    // Any 1000 consecutive clicks (after the first hour) come from
    // hundreds of users in many concurrent sessions.
    for chunk in records[20_000..].chunks(1_000) {
        let users: HashSet<u32> = chunk.iter().map(|(_, _, t)| t.user).collect();
        assert!(users.len() > 100, "{} users in 1000 clicks", users.len());
    }
    // Every user clicks, and users have several sessions.
    let mut sessions: HashMap<u32, u32> = HashMap::new();
    for (_, _, t) in &records {
        let s = sessions.entry(t.user).or_default();
        *s = (*s).max(t.session + 1);
    }
    assert_eq!(sessions.len(), 1_000);
    let mean = sessions.values().sum::<u32>() as f64 / 1_000.0;
    assert!(mean > 5.0, "{mean} sessions per user");
}

#[test]
fn rate_limited() {
    let config = ClickConfig {
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

/// `cargo test --release -p sluice-connectors -- --ignored --nocapture event_time_throughput`
#[test]
#[ignore]
fn event_time_throughput() {
    const N: usize = 2_000_000;
    for name in ["clicks", "turbines"] {
        let start = Instant::now();
        let bytes: usize = match name {
            "clicks" => datagen::records(
                &ClickConfig {
                    records: 0,
                    ..Default::default()
                },
                0,
            )
            .take(N)
            .map(|r| r.value.len())
            .sum(),
            _ => datagen::records(
                &crate::datagen::TurbineConfig {
                    records: 0,
                    ..Default::default()
                },
                0,
            )
            .take(N)
            .map(|r| r.value.len())
            .sum(),
        };
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{name}: {N} records in {secs:.3} s = {:.2} M records/s, {:.0} bytes/record",
            N as f64 / secs / 1e6,
            bytes as f64 / N as f64
        );
    }
}

//! The field examples `examples/wind`, `examples/taxi-windows` and
//! `examples/sessions`: each checked-in pipeline, shrunk for test time, run
//! in-process and compared with a native computation over the same
//! generated records (the source's config is read back from the pipeline,
//! so both see exactly the same input).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;

use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use sluice_config::Pipeline;
use sluice_connectors::datagen::{self, ClickConfig, TaxiConfig, TurbineConfig};
use sluice_tests::taxi::{parse, plausible};
use sluice_tests::*;
use sluice_types::Record;

/// An example pipeline made runnable in a temporary directory.
struct Example {
    dir: tempfile::TempDir,
    pipeline: PathBuf,
}

impl Example {
    /// `examples/<name>/pipeline.toml` with `edits` applied (each `from`
    /// must occur exactly once), plugins resolved to `plugins/dist` and the
    /// sinks' `../../out/<name>/` redirected into the temporary directory.
    fn load(name: &str, edits: &[(&str, &str)]) -> Example {
        let path = repo_root()
            .join("examples")
            .join(name)
            .join("pipeline.toml");
        let mut text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for (from, to) in edits {
            assert_eq!(
                text.matches(from).count(),
                1,
                "`{from}` should occur once in {}",
                path.display()
            );
            text = text.replace(from, to);
        }
        let text = text
            .replace("\"../../plugins/dist/", "\"{plugins}/")
            .replace(&format!("\"../../out/{name}/"), "\"out/");
        assert!(
            !text.contains("../"),
            "a path the test does not redirect is left in {}",
            path.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let pipeline = write_pipeline(dir.path(), &text);
        Example { dir, pipeline }
    }

    /// The config of its only source, of type `kind`, as the pipeline file
    /// has it.
    fn source<T: DeserializeOwned>(&self, kind: &str) -> T {
        let pipeline = self.read();
        assert_eq!(pipeline.sources.len(), 1);
        let source = &pipeline.sources[0];
        assert_eq!(
            source.connector, kind,
            "the example reads a `{kind}` source"
        );
        sluice_connectors::registry::parse_settings(&source.name, &source.settings)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Its pipeline, read.
    fn read(&self) -> Pipeline {
        Pipeline::from_file(&self.pipeline, &sluice_dataflow::connectors())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// How far its source's watermark trails the largest event time, ms.
    fn watermark_bound(&self) -> i64 {
        let pipeline = self.read();
        pipeline.sources[0]
            .watermarks
            .as_ref()
            .expect("the source has watermarks")
            .out_of_orderness
            .0
    }

    /// Run it; returns the metrics.
    fn run(&self, batch_size: usize) -> std::sync::Arc<sluice_types::metrics::Metrics> {
        let (_, metrics) =
            run_in_process(&self.pipeline, &self.dir.path().join("state"), batch_size)
                .unwrap_or_else(|e| panic!("the example runs: {e}"));
        metrics
    }

    /// The lines of the sink file `out/<file>`.
    fn out(&self, file: &str) -> Vec<Value> {
        read_jsonl(&self.out_path(file))
    }

    fn out_path(&self, file: &str) -> PathBuf {
        self.dir.path().join("out").join(file)
    }
}

/// Records that a watermark of "largest event time so far − `bound`" would
/// have passed when they arrived: more than `bound` ms behind the largest
/// event time before them. No other record can be late at a window or
/// timer downstream, whatever the batching.
fn behind(records: &[Record], bound: i64) -> Vec<bool> {
    let mut max = i64::MIN;
    records
        .iter()
        .map(|r| {
            let t = r.event_time.expect("generated records have event times");
            let late = t < max.saturating_sub(bound);
            max = max.max(t);
            late
        })
        .collect()
}

/// `num / den` rounded half up, for `num >= 0`, `den > 0`.
/// An emitted session's (start, end, clicks, pages).
type Session = (i64, i64, u64, u64);

fn round_half_up(num: i128, den: i128) -> i64 {
    ((2 * num + den) / (2 * den)) as i64
}

fn int(v: &Value, field: &str) -> i64 {
    v[field]
        .as_i64()
        .unwrap_or_else(|| panic!("no integer `{field}` in {v}"))
}

fn float(v: &Value, field: &str) -> f64 {
    v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("no number `{field}` in {v}"))
}

fn text<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("no string `{field}` in {v}"))
}

// ---------------------------------------------------------------------------
// Wind turbines.

#[derive(Deserialize)]
struct Reading {
    turbine: String,
    speed_mph: f64,
    time: i64,
}

#[test]
fn wind_averages_alerts_and_late_readings_match_a_native_computation() {
    let ex = Example::load("wind", &[("records = 200000", "records = 100000")]);
    let config: TurbineConfig = ex.source("turbines");
    let records: Vec<Record> = datagen::records(&config, 0).collect();
    assert_eq!(records.len(), 100_000);
    let readings: Vec<Reading> = records
        .iter()
        .map(|r| serde_json::from_slice(&r.value).unwrap())
        .collect();
    let maybe_late = behind(&records, ex.watermark_bound());

    let metrics = ex.run(512);
    let averages = ex.out("averages.jsonl");
    let alerts = ex.out("alerts.jsonl");
    let late: Vec<Reading> = std::fs::read_to_string(ex.out_path("late.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("late line {l:?}: {e}")))
        .collect();

    // Late readings: real input readings, each at most once, each one the
    // watermark could have passed.
    let index: HashMap<(&str, i64), usize> = readings
        .iter()
        .enumerate()
        .map(|(i, r)| ((r.turbine.as_str(), r.time), i))
        .collect();
    assert_eq!(
        index.len(),
        readings.len(),
        "one reading per turbine and tick"
    );
    let mut dropped = HashSet::new();
    for r in &late {
        let i = *index
            .get(&(r.turbine.as_str(), r.time))
            .unwrap_or_else(|| panic!("late reading {} {} is not an input", r.turbine, r.time));
        assert_eq!(readings[i].speed_mph, r.speed_mph);
        assert!(
            dropped.insert(i),
            "reading {} {} is late twice",
            r.turbine,
            r.time
        );
        assert!(
            maybe_late[i],
            "on-time reading {} {} went to the late output",
            r.turbine, r.time
        );
    }
    assert!(
        late.len() > 200,
        "the example has late readings: {}",
        late.len()
    );
    assert_eq!(
        metrics.node("avg-speed").late_records_dropped.get(),
        late.len() as u64
    );

    // Expected: (turbine, window start) -> (readings, speed sum in mph/1000)
    // over every reading that was not late.
    let mut expected: BTreeMap<(String, i64), (u64, i64)> = BTreeMap::new();
    for (i, r) in readings.iter().enumerate() {
        if !dropped.contains(&i) {
            let w = expected
                .entry((r.turbine.clone(), r.time - r.time.rem_euclid(60_000)))
                .or_default();
            w.0 += 1;
            w.1 += (r.speed_mph * 1000.0).round() as i64;
        }
    }
    let mut got: BTreeMap<(String, i64), (u64, f64)> = BTreeMap::new();
    for v in &averages {
        let (start, end) = (int(v, "start"), int(v, "end"));
        assert_eq!(end - start, 60_000, "{v}");
        let previous = got.insert(
            (text(v, "turbine").to_string(), start),
            (int(v, "readings") as u64, float(v, "avg_mph")),
        );
        assert!(previous.is_none(), "window fired twice: {v}");
    }
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "the same windows"
    );
    for (window, (n, milli)) in &expected {
        let avg = round_half_up(*milli as i128, 10 * *n as i128) as f64 / 100.0;
        assert_eq!(got[window], (*n, avg), "window {window:?}");
    }
    // Nothing lost, nothing counted twice.
    let counted: u64 = got.values().map(|(n, _)| n).sum();
    assert_eq!(counted + late.len() as u64, readings.len() as u64);

    // Alerts: exactly the windows whose exact average is above 60 mph.
    let want: BTreeSet<(String, i64)> = expected
        .iter()
        .filter(|(_, (n, milli))| *milli > 60_000 * *n as i64)
        .map(|(w, _)| w.clone())
        .collect();
    let mut raised = BTreeSet::new();
    for v in &alerts {
        let w = (text(v, "turbine").to_string(), int(v, "start"));
        assert_eq!(int(v, "end"), w.1 + 60_000);
        assert_eq!(text(v, "alert"), "average wind speed above 60 mph");
        assert_eq!(float(v, "avg_mph"), got[&w].1, "{v}");
        assert!(raised.insert(w), "alert raised twice: {v}");
    }
    assert!(!want.is_empty(), "gusty turbines exceed 60 mph");
    assert_eq!(raised, want);
}

// ---------------------------------------------------------------------------
// Taxi windows.

const TEN_MINUTES: i64 = 600_000;
const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;

/// A plausible trip of the input, as the windows see it.
struct Plausible {
    trip_id: u64,
    zone: u16,
    dropoff_zone: u16,
    pickup_ms: i64,
    duration_ms: i64,
    cents: i64,
    /// The watermark could have passed it.
    maybe_late: bool,
}

fn plausible_trips(records: &[Record], bound: i64) -> Vec<Plausible> {
    let maybe_late = behind(records, bound);
    records
        .iter()
        .zip(maybe_late)
        .filter_map(|(r, maybe_late)| {
            let t = parse(&r.value).filter(plausible)?;
            Some(Plausible {
                trip_id: t.trip_id,
                zone: t.pickup_zone,
                dropoff_zone: t.dropoff_zone,
                pickup_ms: t.pickup_ms,
                duration_ms: t.dropoff_ms - t.pickup_ms,
                cents: (t.total_amount * 100.0).round() as i64,
                maybe_late,
            })
        })
        .collect()
}

/// `(zone, start) -> (trips, revenue)` of a zone-stats output, each window once.
fn zone_windows(lines: &[Value], size: i64) -> BTreeMap<(u16, i64), (u64, f64)> {
    let mut out = BTreeMap::new();
    for v in lines {
        assert_eq!(int(v, "end") - int(v, "start"), size, "{v}");
        let previous = out.insert(
            (int(v, "zone") as u16, int(v, "start")),
            (int(v, "trips") as u64, float(v, "revenue")),
        );
        assert!(previous.is_none(), "window fired twice: {v}");
    }
    out
}

/// `(zone, start) -> (trips, revenue in cents)` of `trips` in the windows `assign` gives.
fn zone_cents<'a>(
    trips: impl Iterator<Item = &'a Plausible>,
    assign: impl Fn(i64) -> Vec<i64>,
) -> BTreeMap<(u16, i64), (u64, i64)> {
    let mut cents: BTreeMap<(u16, i64), (u64, i64)> = BTreeMap::new();
    for t in trips {
        for start in assign(t.pickup_ms) {
            let w = cents.entry((t.zone, start)).or_default();
            w.0 += 1;
            w.1 += t.cents;
        }
    }
    cents
}

/// Cents as the plugin writes them, in dollars.
fn dollars(cents: BTreeMap<(u16, i64), (u64, i64)>) -> BTreeMap<(u16, i64), (u64, f64)> {
    cents
        .into_iter()
        .map(|(w, (n, c))| (w, (n, c as f64 / 100.0)))
        .collect()
}

/// `(zone, start) -> (trips, revenue)` expected for `trips` in the windows `assign` gives.
fn expected_zone_windows<'a>(
    trips: impl Iterator<Item = &'a Plausible>,
    assign: impl Fn(i64) -> Vec<i64>,
) -> BTreeMap<(u16, i64), (u64, f64)> {
    dollars(zone_cents(trips, assign))
}

fn tumbling(size: i64) -> impl Fn(i64) -> Vec<i64> {
    move |t| vec![t - t.rem_euclid(size)]
}

fn sliding(t: i64) -> Vec<i64> {
    let last = t - t.rem_euclid(MINUTE);
    (0..10).map(|k| last - k * MINUTE).collect()
}

/// `(zone, start) -> (airport, trips, avg minutes)` of the airport output, each window once.
fn airport_windows(lines: &[Value]) -> BTreeMap<(u16, i64), (String, u64, f64)> {
    let mut out = BTreeMap::new();
    for v in lines {
        assert_eq!(int(v, "end") - int(v, "start"), HOUR, "{v}");
        let previous = out.insert(
            (int(v, "zone") as u16, int(v, "start")),
            (
                text(v, "airport").to_string(),
                int(v, "trips") as u64,
                float(v, "avg_duration_min"),
            ),
        );
        assert!(previous.is_none(), "window fired twice: {v}");
    }
    out
}

fn expected_airport_windows<'a>(
    trips: impl Iterator<Item = &'a Plausible>,
) -> BTreeMap<(u16, i64), (String, u64, f64)> {
    let mut sums: BTreeMap<(u16, i64), (u64, i64)> = BTreeMap::new();
    for t in trips.filter(|t| t.dropoff_zone == 132 || t.dropoff_zone == 138) {
        let w = sums
            .entry((t.dropoff_zone, t.pickup_ms - t.pickup_ms.rem_euclid(HOUR)))
            .or_default();
        w.0 += 1;
        w.1 += t.duration_ms;
    }
    sums.into_iter()
        .map(|((zone, start), (n, ms))| {
            let name = if zone == 132 { "JFK" } else { "LGA" };
            (
                (zone, start),
                (
                    name.to_string(),
                    n,
                    round_half_up(ms as i128, 600 * n as i128) as f64 / 100.0,
                ),
            )
        })
        .collect()
}

/// The trip ids in a late output written as envelopes: the value is a
/// postcard `Trip`, whose first field, `trip_id: u64`, is a LEB128 varint.
fn late_trip_ids(lines: &[Value], trips: &HashMap<u64, &Plausible>) -> HashSet<u64> {
    let mut ids = HashSet::new();
    for v in lines {
        let bytes = match (&v["value_base64"], &v["value"]) {
            (Value::String(b), _) => base64::engine::general_purpose::STANDARD.decode(b).unwrap(),
            (_, Value::String(s)) => s.clone().into_bytes(),
            _ => panic!("late trip without its postcard bytes: {v}"),
        };
        let mut id = 0u64;
        for (i, b) in bytes.iter().enumerate() {
            id |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                break;
            }
        }
        let t = trips
            .get(&id)
            .unwrap_or_else(|| panic!("late trip {id} is not a plausible input trip: {v}"));
        assert_eq!(v["event_time"].as_i64(), Some(t.pickup_ms), "{v}");
        assert!(t.maybe_late, "on-time trip {id} went to a late output");
        assert!(ids.insert(id), "trip {id} is late twice");
    }
    ids
}

#[test]
fn taxi_windows_match_a_native_computation() {
    // 50,000 trips ≈ 4 hours of pickups.
    let ex = Example::load("taxi-windows", &[("count = 200000", "count = 50000")]);
    let config: TaxiConfig = ex.source("generator");
    let records: Vec<Record> = datagen::records(&config, 0).collect();
    assert_eq!(ex.watermark_bound(), config.max_out_of_order_ms);
    let trips = plausible_trips(&records, ex.watermark_bound());
    let malformed = records.iter().filter(|r| parse(&r.value).is_none()).count();
    assert!(trips.len() > 45_000);

    let metrics = ex.run(1024);
    // The watermark trails by the generator's largest shift: no trip is late.
    assert!(trips.iter().all(|t| !t.maybe_late));
    for late in [
        "late-tumbling.jsonl",
        "late-sliding.jsonl",
        "late-airports.jsonl",
    ] {
        assert!(ex.out(late).is_empty(), "{late}");
    }
    for op in ["zones-10m", "zones-10m-sliding", "airport-durations"] {
        assert_eq!(metrics.node(op).late_records_dropped.get(), 0, "{op}");
    }
    assert_eq!(ex.out("dead-letters.jsonl").len(), malformed);

    // (a) Tumbling: per pickup zone and 10 minutes, over all plausible trips.
    let tumbling_out = zone_windows(&ex.out("zones-tumbling.jsonl"), TEN_MINUTES);
    assert_eq!(
        tumbling_out,
        expected_zone_windows(trips.iter(), tumbling(TEN_MINUTES))
    );
    assert_eq!(
        tumbling_out.values().map(|w| w.0).sum::<u64>(),
        trips.len() as u64
    );

    // (b) Sliding: each window is the sum of its ten one-minute buckets, and
    // those that start on a 10-minute boundary are the tumbling windows.
    let sliding_out = zone_windows(&ex.out("zones-sliding.jsonl"), TEN_MINUTES);
    let mut from_buckets: BTreeMap<(u16, i64), (u64, i64)> = BTreeMap::new();
    for ((zone, minute), (n, cents)) in zone_cents(trips.iter(), tumbling(MINUTE)) {
        for k in 0..10 {
            let w = from_buckets.entry((zone, minute - k * MINUTE)).or_default();
            w.0 += n;
            w.1 += cents;
        }
    }
    assert_eq!(sliding_out, dollars(from_buckets));
    assert_eq!(sliding_out, expected_zone_windows(trips.iter(), sliding));
    let aligned: BTreeMap<(u16, i64), (u64, f64)> = sliding_out
        .iter()
        .filter(|((_, s), _)| s.rem_euclid(TEN_MINUTES) == 0)
        .map(|(w, v)| (*w, *v))
        .collect();
    assert_eq!(aligned, tumbling_out);

    // (c) Airports: trips dropped off at JFK or LaGuardia, per hour of pickup.
    let airports = airport_windows(&ex.out("airport-durations.jsonl"));
    assert_eq!(airports, expected_airport_windows(trips.iter()));
    let hours: BTreeSet<i64> = airports.keys().map(|(_, start)| *start).collect();
    assert!(hours.len() >= 4, "several hours of pickups: {hours:?}");
    assert!(airports.keys().any(|(z, _)| *z == 132) && airports.keys().any(|(z, _)| *z == 138));
}

#[test]
fn taxi_windows_with_a_tight_watermark_account_for_every_late_trip() {
    // A watermark 1 s behind: trips moved back further can be late.
    let ex = Example::load(
        "taxi-windows",
        &[
            ("count = 200000", "count = 50000"),
            ("out_of_orderness = \"1m\"", "out_of_orderness = \"1s\""),
        ],
    );
    let config: TaxiConfig = ex.source("generator");
    let records: Vec<Record> = datagen::records(&config, 0).collect();
    let trips = plausible_trips(&records, ex.watermark_bound());
    let by_id: HashMap<u64, &Plausible> = trips.iter().map(|t| (t.trip_id, t)).collect();

    // Small batches: the watermark follows the input closely.
    let metrics = ex.run(32);
    let late_tumbling = late_trip_ids(&ex.out("late-tumbling.jsonl"), &by_id);
    let late_sliding = late_trip_ids(&ex.out("late-sliding.jsonl"), &by_id);
    let late_airports = late_trip_ids(&ex.out("late-airports.jsonl"), &by_id);
    assert!(
        late_tumbling.len() > 10,
        "trips are late: {}",
        late_tumbling.len()
    );
    assert_eq!(
        metrics.node("zones-10m").late_records_dropped.get(),
        late_tumbling.len() as u64
    );
    assert_eq!(
        metrics.node("zones-10m-sliding").late_records_dropped.get(),
        late_sliding.len() as u64
    );
    assert_eq!(
        metrics.node("airport-durations").late_records_dropped.get(),
        late_airports.len() as u64
    );

    // Tumbling and airport windows: exactly the trips that were not late.
    let tumbling_out = zone_windows(&ex.out("zones-tumbling.jsonl"), TEN_MINUTES);
    assert_eq!(
        tumbling_out,
        expected_zone_windows(
            trips.iter().filter(|t| !late_tumbling.contains(&t.trip_id)),
            tumbling(TEN_MINUTES)
        )
    );
    let counted: u64 = tumbling_out.values().map(|w| w.0).sum();
    assert_eq!(
        counted + late_tumbling.len() as u64,
        trips.len() as u64,
        "nothing lost, nothing counted twice"
    );
    let airports = airport_windows(&ex.out("airport-durations.jsonl"));
    assert_eq!(
        airports,
        expected_airport_windows(trips.iter().filter(|t| !late_airports.contains(&t.trip_id)))
    );

    // Sliding: a trip can be late for some of its ten windows only, so each
    // window holds at least its on-time trips and at most all of them, and
    // a trip in the late output is in none.
    let sliding_out = zone_windows(&ex.out("zones-sliding.jsonl"), TEN_MINUTES);
    let all = expected_zone_windows(
        trips.iter().filter(|t| !late_sliding.contains(&t.trip_id)),
        sliding,
    );
    let on_time = expected_zone_windows(trips.iter().filter(|t| !t.maybe_late), sliding);
    for (w, (n, _)) in &sliding_out {
        let most = all.get(w).map_or(0, |v| v.0);
        let least = on_time.get(w).map_or(0, |v| v.0);
        assert!(
            (least..=most).contains(n),
            "window {w:?}: {n} trips, expected {least}..={most}"
        );
    }
    for (w, (n, revenue)) in &on_time {
        assert!(
            sliding_out
                .get(w)
                .is_some_and(|v| v.0 >= *n && v.1 >= revenue - 1e-6),
            "window {w:?} lost on-time trips"
        );
    }
}

// ---------------------------------------------------------------------------
// Sessions.

#[derive(Deserialize)]
struct Click {
    user: String,
    page: String,
    time: i64,
}

/// A session as the generator made it: a user's clicks at most the gap apart.
#[derive(Debug, Default)]
struct TrueSession {
    start: i64,
    last: i64,
    clicks: u64,
    pages: BTreeSet<String>,
    /// Whether a click of it may have arrived after the session was closed
    /// (by its timer, or by a click of the user's next session): then it
    /// may be emitted in several parts.
    may_split: bool,
}

/// Run the sessions example with `edits` and check its output against the
/// generated sessions; returns (sessions that may be split, late_clicks).
fn check_sessions(edits: &[(&str, &str)], gap: i64) -> (usize, u64) {
    let ex = Example::load("sessions", edits);
    let pipeline = ex.read();
    let config: ClickConfig = ex.source("clicks");
    assert_eq!(config.session_gap_ms, gap);
    assert_eq!(pipeline.operators[0].params["gap_ms"], gap);
    let bound = ex.watermark_bound();
    let records: Vec<Record> = datagen::records(&config, 0).collect();
    let clicks: Vec<Click> = records
        .iter()
        .map(|r| serde_json::from_slice(&r.value).unwrap())
        .collect();

    // The generated sessions.
    let mut by_user: BTreeMap<&str, Vec<(i64, &str)>> = BTreeMap::new();
    for c in &clicks {
        by_user.entry(&c.user).or_default().push((c.time, &c.page));
    }
    let mut truth: BTreeMap<String, Vec<TrueSession>> = BTreeMap::new();
    for (user, mut list) in by_user {
        list.sort();
        let sessions = truth.entry(user.to_string()).or_default();
        for (t, page) in list {
            match sessions.last_mut() {
                Some(s) if t <= s.last + gap => s.last = t,
                _ => sessions.push(TrueSession {
                    start: t,
                    last: t,
                    ..TrueSession::default()
                }),
            }
            let s = sessions.last_mut().expect("just pushed");
            s.clicks += 1;
            s.pages.insert(page.to_string());
        }
    }
    // In arrival order: could a click's session have been closed before it
    // came? The watermark is at most "largest time before it − bound − 1";
    // a timer at `last + gap` fires once the watermark reaches it.
    let mut max = i64::MIN;
    let mut seen: HashMap<(&str, usize), i64> = HashMap::new();
    let mut newest: HashMap<&str, usize> = HashMap::new();
    let mut late_bound = 0u64;
    for c in &clicks {
        let watermark = max.saturating_sub(bound).saturating_sub(1);
        let sessions = truth.get_mut(&c.user).expect("every user has sessions");
        let i = sessions
            .iter()
            .position(|s| s.start <= c.time && c.time <= s.last)
            .expect("in a session");
        let timer_due = seen
            .get(&(c.user.as_str(), i))
            .is_some_and(|last| last + gap <= watermark);
        let next_arrived = newest.get(c.user.as_str()).is_some_and(|n| *n > i);
        sessions[i].may_split |= timer_due || next_arrived;
        late_bound += u64::from(c.time + gap <= watermark);
        let last = seen.entry((c.user.as_str(), i)).or_insert(c.time);
        *last = (*last).max(c.time);
        let n = newest.entry(c.user.as_str()).or_insert(i);
        *n = (*n).max(i);
        max = max.max(c.time);
    }

    let metrics = ex.run(256);
    let out = ex.out("sessions.jsonl");
    let total: u64 = out.iter().map(|v| int(v, "clicks") as u64).sum();
    assert_eq!(
        total,
        clicks.len() as u64,
        "every click in exactly one session"
    );

    // Each emitted session lies within one generated session; together they hold its clicks.
    let mut parts: BTreeMap<(String, usize), Vec<Session>> = BTreeMap::new();
    for v in &out {
        let user = text(v, "user").to_string();
        let (start, end, n, pages) = (
            int(v, "start"),
            int(v, "end"),
            int(v, "clicks") as u64,
            int(v, "pages") as u64,
        );
        assert!(
            end - start >= gap && n >= 1 && (1..=n).contains(&pages),
            "{v}"
        );
        let sessions = &truth[&user];
        let i = sessions
            .iter()
            .position(|s| s.start <= start && end - gap <= s.last)
            .unwrap_or_else(|| panic!("{v} is not within a generated session"));
        assert!(pages <= sessions[i].pages.len() as u64, "{v}");
        parts
            .entry((user, i))
            .or_default()
            .push((start, end, n, pages));
    }
    let mut split = 0;
    for (user, sessions) in &truth {
        for (i, s) in sessions.iter().enumerate() {
            let got = parts
                .get(&(user.clone(), i))
                .map(Vec::as_slice)
                .unwrap_or_default();
            assert_eq!(
                got.iter().map(|p| p.2).sum::<u64>(),
                s.clicks,
                "{user} session {i}: {s:?} in {got:?}"
            );
            if s.may_split {
                split += 1;
            } else {
                assert_eq!(
                    got,
                    [(s.start, s.last + gap, s.clicks, s.pages.len() as u64)],
                    "{user} session {i}"
                );
            }
        }
        // Sessions of a user are separated by more than the gap (parts of
        // one generated session aside).
        let mut mine: Vec<(usize, &Session)> = (0..sessions.len())
            .flat_map(|i| {
                parts
                    .get(&(user.clone(), i))
                    .into_iter()
                    .flatten()
                    .map(move |p| (i, p))
            })
            .collect();
        mine.sort_by_key(|(_, p)| p.0);
        for pair in mine.windows(2) {
            let ((i, a), (j, b)) = (pair[0], pair[1]);
            assert!(
                i == j || b.0 > a.1,
                "{user}: sessions {a:?} and {b:?} are not separated by the gap"
            );
        }
    }
    let late_clicks = metrics.guest_value("sessionize", "late_clicks");
    assert!(
        late_clicks <= late_bound,
        "{late_clicks} late clicks counted, at most {late_bound} possible"
    );
    (split, late_clicks)
}

#[test]
fn sessions_are_exactly_the_generated_ones() {
    // Late clicks are at most 10 minutes behind, well within the 30-minute
    // gap: they still find their session open, and every session is whole.
    let (split, late_clicks) = check_sessions(
        &[
            ("records = 60000", "records = 20000"),
            ("late_ratio = 0.005", "late_ratio = 0.02"),
        ],
        1_800_000,
    );
    assert_eq!((split, late_clicks), (0, 0));
}

#[test]
fn sessions_with_clicks_later_than_the_gap_lose_no_click() {
    // A 2-minute gap: clicks 1 to 10 minutes late often arrive after their
    // session was closed, and start sessions of their own.
    let (split, late_clicks) = check_sessions(
        &[
            ("records = 60000", "records = 20000"),
            ("late_ratio = 0.005", "late_ratio = 0.02"),
            ("session_gap_ms = 1800000", "session_gap_ms = 120000"),
            (
                "params = { gap_ms = 1800000 }",
                "params = { gap_ms = 120000 }",
            ),
        ],
        120_000,
    );
    assert!(split > 50, "{split} sessions may be split");
    assert!(late_clicks > 50, "{late_clicks} late clicks");
}

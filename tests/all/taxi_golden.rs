//! Golden test of the taxi demo: the pipeline's per-zone counts and revenue
//! against an expectation computed here, independently of the plugins.

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use sluice_connectors::datagen::{self, TaxiConfig};
use sluice_tests::taxi::{parse, plausible};
use sluice_tests::*;

const SEED: u64 = 7;
const COUNT: u64 = 40_000;

#[test]
fn taxi_zone_totals_match_an_independent_computation() {
    // Expected: parse with the test's own schema, filter with the test's own rules.
    let config: TaxiConfig =
        serde_json::from_value(serde_json::json!({ "seed": SEED, "count": COUNT })).unwrap();
    let mut expected: BTreeMap<u16, (u64, i64)> = BTreeMap::new();
    let mut malformed: HashMap<u64, Vec<u8>> = HashMap::new();
    for r in datagen::records(&config, 0) {
        match parse(&r.value) {
            Some(t) => {
                if plausible(&t) {
                    let e = expected.entry(t.pickup_zone).or_default();
                    e.0 += 1;
                    e.1 += (t.total_amount * 100.0).round() as i64;
                }
            }
            None => {
                malformed.insert(r.position.unwrap().offset, r.value.clone());
            }
        }
    }
    assert!(
        expected.len() > 50,
        "the generator should spread trips over many zones"
    );
    assert!(
        malformed.len() as u64 > COUNT / 200,
        "the generator should produce malformed records"
    );

    let dir = tempfile::tempdir().unwrap();
    let pipeline = write_pipeline(
        dir.path(),
        &format!(
            r#"
manifest_version = 1
name = "taxi-golden"

[[sources]]
name = "trips"
type = "generator"
seed = {SEED}
count = {COUNT}

[[operators]]
name = "parse"
plugin = "{{plugins}}/taxi_parse.wasm"
input = "trips"
parallelism = 2
on_error = "dead-letter"

[[operators]]
name = "plausible"
plugin = "{{plugins}}/taxi_filter.wasm"
input = "parse"
parallelism = 2

[[operators]]
name = "zone-stats"
plugin = "{{plugins}}/taxi_zone_count.wasm"
input = "plausible"
key_by = "key"
parallelism = 2

[[sinks]]
name = "totals"
type = "file"
input = "zone-stats"
path = "out/totals.jsonl"

[[sinks]]
name = "dead"
type = "file"
input = "parse.dead-letter"
path = "out/dead.jsonl"
"#
        ),
    );
    let out = sluice(
        &[
            "run",
            pipeline.to_str().unwrap(),
            "--state-dir",
            "state",
            "--batch-size",
            "500",
        ],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "sluice run failed: {stderr}");

    // Running totals: per zone, trips step by exactly one, and the last line is the total.
    let mut actual: BTreeMap<u16, (u64, i64)> = BTreeMap::new();
    for v in read_jsonl(&dir.path().join("out/totals.jsonl")) {
        let zone = v["zone"].as_u64().unwrap() as u16;
        let trips = v["trips"].as_u64().unwrap();
        let cents = v["revenue_cents"].as_i64().unwrap();
        let prev = actual.insert(zone, (trips, cents)).map_or(0, |p| p.0);
        assert_eq!(
            trips,
            prev + 1,
            "zone {zone}: count jumped from {prev} to {trips}"
        );
    }
    assert_eq!(
        actual, expected,
        "per-zone trips and revenue differ from the independent computation"
    );

    // Dead letters: exactly the malformed records, with provenance and the original bytes.
    let dead = read_jsonl(&dir.path().join("out/dead.jsonl"));
    assert_eq!(
        dead.len(),
        malformed.len(),
        "dead letters vs malformed records"
    );
    for d in &dead {
        assert_eq!(d["operator"], "parse");
        assert_eq!(d["source"], "trips");
        assert!(d["plugin_digest"].as_str().unwrap().starts_with("sha256:"));
        assert!(!d["error"].as_str().unwrap().is_empty());
        let offset = d["offset"].as_u64().unwrap();
        let original = malformed
            .get(&offset)
            .unwrap_or_else(|| panic!("dead letter for offset {offset}, which is not malformed"));
        match std::str::from_utf8(original) {
            Ok(text) => assert_eq!(d["value"]["utf8"].as_str(), Some(text)),
            Err(_) => assert_eq!(
                d["value"]["base64"].as_str(),
                Some(
                    base64::engine::general_purpose::STANDARD
                        .encode(original)
                        .as_str()
                )
            ),
        }
    }
    assert!(
        stderr.contains(&format!("{COUNT} records in")),
        "summary line: {stderr}"
    );
}

//! Error policies: a trap or an error return reaches the operator's policy for
//! exactly the record that caused it; every other record is processed.

use sluice_tests::*;

/// Lines 1..=300; every 37th traps, every 53rd (that does not trap) errors.
fn input() -> (String, Vec<u64>, Vec<u64>) {
    let (mut text, mut traps, mut errors) = (String::new(), vec![], vec![]);
    for i in 1..=300u64 {
        if i % 37 == 0 {
            text.push_str(&format!("line {i} trap\n"));
            traps.push(i);
        } else if i % 53 == 0 {
            text.push_str(&format!("line {i} error\n"));
            errors.push(i);
        } else {
            text.push_str(&format!("line {i} ok\n"));
        }
    }
    (text, traps, errors)
}

fn pipeline(dir: &std::path::Path, policy: &str) -> std::path::PathBuf {
    let (text, _, _) = input();
    std::fs::write(dir.join("input.txt"), text).unwrap();
    let dead = if policy == "dead-letter" {
        "[[sinks]]\nname = \"dead\"\ntype = \"file\"\ninput = \"trap.dead-letter\"\npath = \"dead.jsonl\"\n"
    } else {
        ""
    };
    write_pipeline(
        dir,
        &format!(
            r#"
manifest_version = 1
name = "policies"

[[sources]]
name = "lines"
type = "file"
path = "input.txt"

[[operators]]
name = "trap"
plugin = "{{plugins}}/fixture_trap.wasm"
input = "lines"
on_error = "{policy}"

[[sinks]]
name = "out"
type = "file"
input = "trap"
path = "out.txt"

{dead}
"#
        ),
    )
}

#[test]
fn dead_letter_gets_exactly_the_poison_records_with_provenance() {
    let dir = tempfile::tempdir().unwrap();
    let (_, traps, errors) = input();
    let (summary, metrics) = run_in_process(
        &pipeline(dir.path(), "dead-letter"),
        &dir.path().join("state"),
        64,
    )
    .unwrap();

    let out = std::fs::read_to_string(dir.path().join("out.txt")).unwrap();
    let expected: Vec<String> = (1..=300u64)
        .filter(|i| !traps.contains(i) && !errors.contains(i))
        .map(|i| format!("line {i} ok"))
        .collect();
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        expected,
        "every other record is processed, in order"
    );

    let dead = read_jsonl(&dir.path().join("dead.jsonl"));
    let mut offsets: Vec<u64> = dead.iter().map(|d| d["offset"].as_u64().unwrap()).collect();
    offsets.sort();
    let mut poison: Vec<u64> = traps.iter().chain(&errors).copied().collect();
    poison.sort();
    assert_eq!(offsets, poison, "dead letters are exactly the poison lines");
    for d in &dead {
        let offset = d["offset"].as_u64().unwrap();
        assert_eq!(d["operator"], "trap");
        assert_eq!(d["source"], "lines");
        assert!(d["plugin_digest"].as_str().unwrap().starts_with("sha256:"));
        let value = d["value"]["utf8"].as_str().unwrap();
        assert!(value.starts_with(&format!("line {offset} ")), "{value}");
        let error = d["error"].as_str().unwrap();
        if traps.contains(&offset) {
            assert!(
                error.contains("fixture trap on line"),
                "trap message carries the guest's panic: {error}"
            );
        } else {
            assert_eq!(error, format!("fixture error on line {offset} error"));
        }
    }
    assert_eq!(summary.dead_letters, poison.len() as u64);
    let c = metrics.node("trap");
    // Each batch with a trap traps once whole, then once per poison record in the retry.
    assert!(
        c.traps.get() >= traps.len() as u64,
        "traps counted: {}",
        c.traps.get()
    );
    assert_eq!(c.dead_letters.get(), poison.len() as u64);
}

#[test]
fn skip_drops_and_counts_the_poison_records() {
    let dir = tempfile::tempdir().unwrap();
    let (_, traps, errors) = input();
    let (summary, metrics) =
        run_in_process(&pipeline(dir.path(), "skip"), &dir.path().join("state"), 64).unwrap();
    assert_eq!(
        summary.records_out,
        300 - (traps.len() + errors.len()) as u64
    );
    assert_eq!(
        metrics.node("trap").skipped.get(),
        (traps.len() + errors.len()) as u64
    );
}

#[test]
fn fail_stops_the_pipeline_naming_operator_plugin_and_record() {
    let dir = tempfile::tempdir().unwrap();
    let Err(err) = run_in_process(&pipeline(dir.path(), "fail"), &dir.path().join("state"), 64)
    else {
        panic!("the pipeline should fail")
    };
    assert!(err.contains("operator `trap`"), "{err}");
    assert!(err.contains("fixture_trap.wasm sha256:"), "{err}");
    assert!(
        err.contains("source `lines` split 0 offset 37"),
        "the first poison record is line 37: {err}"
    );
    assert!(
        err.contains("on_error = \"skip\" or \"dead-letter\""),
        "{err}"
    );
}

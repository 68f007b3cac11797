//! Bad pipelines and bad components: each is refused with a message that names
//! the file and line (or the plugin) and says what to do. Never a panic.

use sluice_config::Pipeline;
use sluice_runtime::Runtime;
use sluice_tests::plugins::{examples, fixtures};
use sluice_tests::*;

const GOOD: &str = r#"manifest_version = 1
name = "p"

[[sources]]
name = "trips"
type = "generator"
count = 10

[[operators]]
name = "parse"
plugin = "{plugins}/taxi_parse.wasm"
input = "trips"
on_error = "dead-letter"

[[sinks]]
name = "out"
type = "stdout"
input = "parse"

[[sinks]]
name = "dead"
type = "stdout"
input = "parse.dead-letter"
"#;

fn check(text: &str) -> Result<Pipeline, String> {
    let dir = tempfile::tempdir().unwrap();
    // Some cases name a plugin that does not exist on purpose.
    let path = write_pipeline_naming_anything(dir.path(), text);
    Pipeline::from_file(&path, &sluice_dataflow::connectors()).map_err(|e| e.to_string())
}

#[test]
fn the_reference_pipeline_is_valid() {
    let p = check(GOOD).unwrap();
    assert_eq!(p.operators.len(), 1);
}

/// (what is changed, replace this, by this, expected line, expected words)
const CASES: &[(&str, &str, &str, usize, &[&str])] = &[
    (
        "unknown top-level field",
        "name = \"p\"",
        "name = \"p\"\nlog_level = 3",
        3,
        &["unknown field `log_level`"],
    ),
    (
        "unknown source field",
        "count = 10",
        "count = 10\nsede = 4",
        8,
        &["source `trips` (generator)", "unknown field `sede`", "seed"],
    ),
    (
        "unknown operator field",
        "input = \"trips\"",
        "input = \"trips\"\nparalelism = 2",
        13,
        &["unknown field `paralelism`", "parallelism"],
    ),
    (
        "wrong type",
        "on_error = \"dead-letter\"",
        "on_error = \"dead-letter\"\nparallelism = \"two\"",
        14,
        &["invalid type: string \"two\""],
    ),
    (
        "missing plugin file",
        "taxi_parse.wasm",
        "no_such_plugin.wasm",
        11,
        &[
            "plugin file",
            "no_such_plugin.wasm",
            "does not exist",
            "scripts/build-plugins",
        ],
    ),
    (
        "unsupported manifest version",
        "manifest_version = 1",
        "manifest_version = 2",
        1,
        &[
            "manifest_version 2 is not supported",
            "manifest_version = 1",
        ],
    ),
    (
        "unknown input stream",
        "input = \"parse\"\n",
        "input = \"prase\"\n",
        18,
        &["reads `prase`", "known streams: parse, trips"],
    ),
    (
        "dead letters without a reader",
        "input = \"parse.dead-letter\"",
        "input = \"parse\"",
        10,
        &[
            "dead-letters, but nothing reads `parse.dead-letter`",
            "[[sinks]]",
        ],
    ),
    (
        "dead letters of a fail operator",
        "on_error = \"dead-letter\"",
        "on_error = \"fail\"",
        23,
        &["does not dead-letter", "on_error = \\\"dead-letter\\\""],
    ),
    (
        "parallelism out of range",
        "on_error = \"dead-letter\"",
        "on_error = \"dead-letter\"\nparallelism = 0",
        14,
        &["parallelism 0 is out of range", "1 to 128"],
    ),
    (
        "bad error policy",
        "on_error = \"dead-letter\"",
        "on_error = \"retry\"",
        13,
        &["unknown variant `retry`", "dead-letter"],
    ),
    (
        "unknown source type",
        "type = \"generator\"",
        "type = \"kafka2\"",
        6,
        &["unknown type `kafka2`", "generator, turbines, clicks, file"],
    ),
    (
        "duplicate name",
        "name = \"out\"",
        "name = \"parse\"",
        16,
        &["name `parse` is already used on line 10"],
    ),
];

#[test]
fn bad_pipelines_name_the_line_and_the_fix() {
    for (what, from, to, line, words) in CASES {
        assert!(GOOD.contains(from), "{what}: test case does not apply");
        let err = check(&GOOD.replacen(from, to, 1)).expect_err(what);
        assert!(
            err.contains(&format!("pipeline.toml:{line}:")),
            "{what}: expected line {line} in: {err}"
        );
        for w in *words {
            let w = w.replace("\\\"", "\"");
            assert!(err.contains(&w), "{what}: expected `{w}` in: {err}");
        }
    }
}

#[test]
fn a_cycle_is_refused() {
    let text = GOOD.replace("input = \"trips\"", "input = \"loop\"")
        + "\n[[operators]]\nname = \"loop\"\nplugin = \"{plugins}/taxi_filter.wasm\"\ninput = \"parse\"\n";
    let err = check(&text).unwrap_err();
    assert!(err.contains("form a cycle"), "{err}");
}

#[test]
fn the_cli_reports_pipeline_errors_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_pipeline(
        dir.path(),
        &GOOD.replace("count = 10", "count = 10\nsede = 4"),
    );
    let out = sluice(&["validate", path.to_str().unwrap()], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("pipeline.toml:8: source `trips` (generator): unknown field `sede`"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn load_err(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.wasm");
    std::fs::write(&path, bytes).unwrap();
    let runtime = Runtime::new(None).unwrap();
    match runtime.load(&path) {
        Ok(_) => panic!("{} bytes were accepted as a plugin", bytes.len()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_components_are_refused_with_what_is_missing() {
    let err = load_err(b"definitely not wasm");
    assert!(err.contains("not a WebAssembly file"), "{err}");

    let err = load_err(b"\0asm\x01\0\0\0");
    assert!(
        err.contains("core WebAssembly module, not a component"),
        "{err}"
    );

    let real = std::fs::read(plugin(examples::TAXI_FILTER)).unwrap();
    let err = load_err(&real[..real.len() / 3]);
    assert!(err.contains("invalid component"), "{err}");

    let runtime = Runtime::new(None).unwrap();
    let err = runtime
        .load(&plugin(fixtures::NO_EXPORTS))
        .err()
        .expect("no-exports component refused")
        .to_string();
    assert!(err.contains("not a sluice:operator component"), "{err}");
    assert!(err.contains("sluice:operator/processor@0.1.3"), "{err}");

    let err = runtime
        .load(&plugin(fixtures::FUTURE_VERSION))
        .err()
        .expect("0.9 component refused")
        .to_string();
    assert!(err.contains("sluice:operator/processor@0.9.0"), "{err}");
    assert!(
        err.contains("this host runs sluice:operator@0.1.3"),
        "{err}"
    );
}

#[test]
fn random_bytes_never_panic_the_loader() {
    // A small deterministic fuzz of the loading path: random bytes, and
    // corruptions of a real component. Every input must be refused cleanly
    // (or, for harmless corruptions, accepted) without a panic.
    let real = std::fs::read(plugin(examples::TAXI_FILTER)).unwrap();
    let runtime = Runtime::new(None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut state = 0x9e3779b97f4a7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..40 {
        let mut bytes = if i % 2 == 0 {
            (0..(next() % 4096))
                .map(|_| next() as u8)
                .collect::<Vec<u8>>()
        } else {
            real.clone()
        };
        if i % 2 == 1 {
            for _ in 0..8 {
                let at = (next() as usize) % bytes.len();
                bytes[at] = next() as u8;
            }
        }
        if i % 4 == 0 {
            bytes.splice(0..0, b"\0asm\x0d\0\x01\0".iter().copied());
        }
        let path = dir.path().join(format!("fuzz{i}.wasm"));
        std::fs::write(&path, &bytes).unwrap();
        let _ = runtime.load(&path).map(|_| ()).map_err(|e| e.to_string());
    }
}

#[test]
fn inspect_prints_the_contract_facts() {
    let dir = tempfile::tempdir().unwrap();
    let out = sluice(
        &[
            "plugin",
            "inspect",
            plugin(examples::TAXI_ZONE_COUNT).to_str().unwrap(),
        ],
        dir.path(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for w in [
        "package:  sluice:operator",
        "world:    process-operator",
        "version:  0.1.3",
        "sluice:operator/processor@0.1.3",
        "sluice:operator/state@0.1.3",
        "sha256:",
        "size:",
        "verdict:  loadable",
    ] {
        assert!(stdout.contains(w), "expected `{w}` in:\n{stdout}");
    }
    let out = sluice(
        &[
            "plugin",
            "inspect",
            plugin(fixtures::NO_EXPORTS).to_str().unwrap(),
        ],
        dir.path(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout.contains("verdict:  refused: "), "{stdout}");
}

/// (what is changed, replace this, by this, expected line, the exact error
/// after `pipeline.toml:<line>: `): what `run` refuses, `validate` refuses
/// too, with the line.
const RUN_REFUSES: &[(&str, &str, &str, usize, &str)] = &[
    ("rate of 0", "count = 10", "count = 10\nrate = 0.0", 8, "source `trips` (generator): `rate` is 0, but it must be a positive number of records per second"),
    ("negative rate", "count = 10", "count = 10\nrate = -5.0", 8, "source `trips` (generator): `rate` is -5, but it must be a positive number"),
    ("NaN rate", "count = 10", "count = 10\nrate = nan", 8, "source `trips` (generator): `rate` is NaN, but it must be a positive number"),
    ("infinite rate", "count = 10", "count = 10\nrate = inf", 8, "source `trips` (generator): `rate` is inf, but it must be a positive number"),
    ("malformed_ratio above 1", "count = 10", "count = 10\nmalformed_ratio = 1.5", 8, "source `trips` (generator): `malformed_ratio` is 1.5, but it must be a share between 0 and 1"),
    ("malformed_ratio below 0", "count = 10", "count = 10\nmalformed_ratio = -0.1", 8, "source `trips` (generator): `malformed_ratio` is -0.1, but it must be a share between 0 and 1"),
    ("ratios summing above 1", "count = 10", "count = 10\nmalformed_ratio = 0.6\nimplausible_ratio = 0.6", 8, "source `trips` (generator): `malformed_ratio` (0.6) + `implausible_ratio` (0.6) exceed 1"),
    // 2^44 + 1 MiB is 2^64 + 2^20 bytes: it used to wrap to a 1 MiB cap.
    ("memory_mb beyond 64 bits of bytes", "on_error = \"dead-letter\"", "on_error = \"dead-letter\"\nlimits = { memory_mb = 17592186044417 }", 14, "operator `parse`: limits.memory_mb = 17592186044417 is too large\n  help: use at most 1048576 (MiB)"),
    ("max_record_kb beyond 64 bits of bytes", "on_error = \"dead-letter\"", "on_error = \"dead-letter\"\nlimits = { max_record_kb = 18014398509481985 }", 14, "operator `parse`: limits.max_record_kb = 18014398509481985 is too large"),
];

#[test]
fn validate_refuses_what_run_refuses_with_the_line() {
    for (what, from, to, line, error) in RUN_REFUSES {
        assert!(GOOD.contains(from), "{what}: test case does not apply");
        let err = check(&GOOD.replacen(from, to, 1)).expect_err(what);
        let want = format!("pipeline.toml:{line}: {error}");
        assert!(
            err.contains(&want),
            "{what}: expected\n  {want}\nin\n  {err}"
        );
    }
    // Through the CLI: `validate` and `run` refuse alike, before anything runs.
    let dir = tempfile::tempdir().unwrap();
    let path = write_pipeline(
        dir.path(),
        &GOOD.replacen("count = 10", "count = 10\nrate = 0.0", 1),
    );
    for command in ["validate", "run"] {
        let out = sluice(&[command, path.to_str().unwrap()], dir.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        assert!(
            stderr.contains("pipeline.toml:8: source `trips` (generator): `rate` is 0"),
            "{command}: {stderr}"
        );
    }
}

/// A pipeline with a file source (`in.jsonl`) and two file sinks.
const FILES: &str = r#"manifest_version = 1
name = "files"

[[sources]]
name = "lines"
type = "file"
path = "in.jsonl"

[[sinks]]
name = "a"
type = "file"
input = "lines"
path = "out/a.jsonl"

[[sinks]]
name = "b"
type = "file"
input = "lines"
path = "out/b.jsonl"
"#;

#[test]
fn file_sinks_that_collide_are_refused_with_the_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.jsonl"), "{}\n").unwrap();
    std::fs::create_dir_all(dir.path().join("out/dir")).unwrap();
    let check_files = |text: &str| {
        let path = write_pipeline(dir.path(), text);
        Pipeline::from_file(&path, &sluice_dataflow::connectors())
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    check_files(FILES).expect("the reference pipeline is valid");
    let p = |rel: &str| dir.path().join(rel).display().to_string();
    let cases = [
        ("two sinks on one path", "out/b.jsonl", "out/./a.jsonl", format!("pipeline.toml:19: sink `b`: writes {}, which sink `a` (line 13) writes too\n  help: give each file sink its own file", p("out/./a.jsonl"))),
        ("a sink writing its source's file", "out/a.jsonl", "out/../in.jsonl", format!("pipeline.toml:13: sink `a`: writes {}, which source `lines` reads\n  help: write the output to another file", p("out/../in.jsonl"))),
        ("a sink path that is a directory", "out/b.jsonl", "out/dir", format!("pipeline.toml:19: sink `b`: path {} is a directory", p("out/dir"))),
        ("a sink path that names no file", "out/b.jsonl", "out/..", format!("pipeline.toml:19: sink `b`: path {} is a directory", p("out/.."))),
        ("a file source line cap of 0", "path = \"in.jsonl\"", "path = \"in.jsonl\"\nmax_record_kb = 0", "pipeline.toml:8: source `lines` (file): `max_record_kb` is 0, but it must be from 1 to 1048576 (KiB)".to_string()),
    ];
    for (what, from, to, want) in cases {
        let err = check_files(&FILES.replacen(from, to, 1)).expect_err(what);
        assert!(
            err.contains(&want),
            "{what}: expected\n  {want}\nin\n  {err}"
        );
    }
}

#[test]
fn a_pipeline_file_that_is_not_utf8_is_refused_with_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_pipeline(dir.path(), GOOD);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = GOOD.find("trips").unwrap() + 2;
    bytes[at] = 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let err = Pipeline::from_file(&path, &sluice_dataflow::connectors())
        .unwrap_err()
        .to_string();
    assert!(err.contains("pipeline.toml:5: the pipeline file is not UTF-8: byte 0xff at column 11 is not valid\n  help: save the file as UTF-8"), "{err}");
    let out = sluice(&["validate", path.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("pipeline.toml:5: the pipeline file is not UTF-8"));
}

#[test]
fn a_line_longer_than_the_file_sources_cap_stops_the_run_with_the_file_and_line() {
    // 8 MiB on line 2, over the default cap of 1 MiB: the run fails naming
    // the file and the line (no silent drop), holding at most the cap of it.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        format!("{{\"a\":1}}\n\"{}\"\n{{\"a\":2}}\n", "x".repeat(8 << 20)),
    )
    .unwrap();
    let one_sink = FILES.split("\n[[sinks]]\nname = \"b\"").next().unwrap();
    let path = write_pipeline(dir.path(), one_sink);
    let out = sluice(
        &[
            "run",
            "--quiet",
            "--state-dir",
            "state",
            path.to_str().unwrap(),
        ],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: line 2 is longer than the source's max_record_kb = 1024 KiB",
            input.display()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

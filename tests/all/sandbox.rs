//! Hostile plugins fail alone: an infinite loop, a memory bomb, deep
//! recursion, filesystem and network attempts, oversized output. The host
//! keeps going, and every breach goes to the operator's error policy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_runtime::{
    wit, CallError, EngineOptions, Grants, Instance, InstanceConfig, LoadError, Runtime,
};
use sluice_tests::plugins::fixtures;
use sluice_tests::*;
use sluice_types::metrics::Metrics;

fn rec(value: &str) -> wit::Record {
    wit::Record {
        key: None,
        value: value.as_bytes().to_vec(),
        event_time: None,
        headers: vec![],
    }
}

fn runtime() -> Runtime {
    Runtime::new(Some(compile_cache())).unwrap()
}

fn instance(runtime: &Runtime, name: Plugin, config: InstanceConfig) -> Instance {
    let plugin = runtime.load(&plugin(name)).unwrap();
    plugin
        .instantiate(config, None, Arc::new(Metrics::default()))
        .unwrap()
}

fn values(result: &wit::BatchResult) -> Vec<String> {
    result
        .emits
        .iter()
        .map(|e| String::from_utf8_lossy(&e.record.value).into_owned())
        .collect()
}

/// The instance still works after a breach (on a fresh instance, as the dataflow does).
fn still_works(inst: &mut Instance) {
    inst.reset().unwrap();
    assert_eq!(values(&inst.process(&[rec("fine")]).unwrap()), ["fine"]);
}

#[test]
fn an_infinite_loop_is_interrupted_within_twice_its_deadline() {
    let rt = runtime();
    let mut inst = instance(
        &rt,
        fixtures::INFINITE_LOOP,
        InstanceConfig {
            deadline_ms: 200,
            ..InstanceConfig::new("looper")
        },
    );
    let started = Instant::now();
    let err = inst.process(&[rec("ok"), rec("loop")]).unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(err, CallError::Deadline { deadline_ms: 200 }),
        "{err}"
    );
    assert!(
        took >= Duration::from_millis(190),
        "interrupted too early: {took:?}"
    );
    assert!(
        took < Duration::from_millis(400),
        "interrupted after {took:?}, more than twice the 200 ms deadline"
    );
    assert!(err.to_string().contains("CPU deadline of 200 ms"), "{err}");
    still_works(&mut inst);
}

#[test]
fn fuel_stops_an_infinite_loop_deterministically() {
    let rt = runtime();
    let options = EngineOptions {
        fuel: true,
        ..EngineOptions::default()
    };
    let plugin = rt
        .load_with(
            &plugin(fixtures::INFINITE_LOOP),
            options,
            &Grants::default(),
        )
        .unwrap();
    let config = InstanceConfig {
        fuel: Some(5_000_000),
        deadline_ms: 10_000,
        ..InstanceConfig::new("looper")
    };
    let mut inst = plugin
        .instantiate(config, None, Arc::new(Metrics::default()))
        .unwrap();
    let started = Instant::now();
    let err = inst.process(&[rec("loop")]).unwrap_err();
    assert!(matches!(err, CallError::Fuel { fuel: 5_000_000 }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "fuel should stop the loop long before the deadline"
    );
    still_works(&mut inst);
}

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<usize>()
        .unwrap()
        * 4096
}

#[test]
fn a_memory_bomb_traps_at_the_cap_and_host_memory_stays_bounded() {
    let rt = runtime();
    let config = InstanceConfig {
        memory_bytes: 32 << 20,
        ..InstanceConfig::new("bomb")
    };
    let mut inst = instance(&rt, fixtures::MEMORY_BOMB, config);
    let before = rss_bytes();
    for _ in 0..5 {
        let err = inst.process(&[rec("bomb")]).unwrap_err();
        assert!(matches!(err, CallError::Memory { limit_mb: 32 }), "{err}");
        inst.reset().unwrap();
    }
    let grown = rss_bytes().saturating_sub(before);
    // Five bombs at a 32 MiB cap, each instance replaced: the host keeps at most a few caps' worth.
    assert!(grown < 96 << 20, "host RSS grew by {} MiB", grown >> 20);
    still_works(&mut inst);
}

#[test]
fn deep_recursion_traps_without_aborting_the_process() {
    let rt = runtime();
    let mut inst = instance(
        &rt,
        fixtures::DEEP_RECURSION,
        InstanceConfig::new("recurse"),
    );
    let err = inst.process(&[rec("recurse")]).unwrap_err();
    assert!(matches!(err, CallError::Trap(_)), "{err}");
    assert!(err.to_string().contains("call stack exhausted"), "{err}");
    still_works(&mut inst);
}

#[test]
fn filesystem_and_network_imports_are_refused_at_load_naming_the_grant() {
    let rt = runtime();
    match rt.load(&plugin(fixtures::FS_OPEN)) {
        Err(e @ LoadError::NotGranted { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("imports `wasi:filesystem/"), "{msg}");
            assert!(
                msg.contains("read_dir"),
                "the message names the grant: {msg}"
            );
        }
        other => panic!("fixture_fs_open was not refused: {:?}", other.map(|_| ())),
    }
    match rt.load(&plugin(fixtures::SOCKET)) {
        Err(e @ LoadError::NotGranted { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("imports `wasi:sockets/"), "{msg}");
            assert!(msg.contains("no grant allows sockets"), "{msg}");
        }
        other => panic!("fixture_socket was not refused: {:?}", other.map(|_| ())),
    }
}

#[test]
fn a_granted_directory_is_read_only_and_nothing_outside_it_is_visible() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("allowed.txt"), "hello").unwrap();
    let rt = runtime();
    let grants = Grants {
        read_dir: Some(dir.path().to_path_buf()),
        ..Grants::default()
    };
    let plugin = rt
        .load_with(
            &plugin(fixtures::FS_OPEN),
            EngineOptions::default(),
            &grants,
        )
        .unwrap();
    let mut inst = plugin
        .instantiate(
            InstanceConfig::new("fs"),
            None,
            Arc::new(Metrics::default()),
        )
        .unwrap();
    // The fixture reads /etc/passwd: outside the grant, so the read fails inside the guest.
    let result = inst.process(&[rec("fs")]).unwrap();
    assert!(
        result.emits.is_empty(),
        "the host's /etc/passwd leaked: {:?}",
        values(&result)
    );
    assert_eq!(result.errors.len(), 1);
}

#[test]
fn without_the_clock_grant_the_clock_is_frozen() {
    let rt = runtime();
    let mut frozen = instance(&rt, fixtures::CLOCK, InstanceConfig::new("clock"));
    assert_eq!(values(&frozen.process(&[rec("now?")]).unwrap()), ["0"]);

    let grants = Grants {
        clock: true,
        ..Grants::default()
    };
    let plugin = rt
        .load_with(&plugin(fixtures::CLOCK), EngineOptions::default(), &grants)
        .unwrap();
    let mut real = plugin
        .instantiate(
            InstanceConfig::new("clock"),
            None,
            Arc::new(Metrics::default()),
        )
        .unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let seen: i64 = values(&real.process(&[rec("now?")]).unwrap())[0]
        .parse()
        .unwrap();
    assert!(
        (seen - now_ms).abs() < 60_000,
        "granted clock reads {seen}, host {now_ms}"
    );
}

#[test]
fn the_environment_holds_only_granted_variables() {
    // The host process has HOME and PATH; a plugin must not see them.
    let rt = runtime();
    let mut bare = instance(&rt, fixtures::CLOCK, InstanceConfig::new("env"));
    assert_eq!(
        values(&bare.process(&[rec("env:HOME"), rec("env:REGION")]).unwrap()),
        ["unset", "unset"]
    );

    let grants = Grants {
        env: [("REGION".to_string(), "nyc".to_string())].into(),
        ..Grants::default()
    };
    let plugin = rt
        .load_with(&plugin(fixtures::CLOCK), EngineOptions::default(), &grants)
        .unwrap();
    let mut granted = plugin
        .instantiate(
            InstanceConfig::new("env"),
            None,
            Arc::new(Metrics::default()),
        )
        .unwrap();
    assert_eq!(
        values(
            &granted
                .process(&[rec("env:HOME"), rec("env:REGION")])
                .unwrap()
        ),
        ["unset", "nyc"]
    );
}

#[test]
fn oversized_output_goes_to_the_error_policy() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("input.txt"), "a\nbig:4\nb\n").unwrap();
    let pipeline = write_pipeline(
        dir.path(),
        r#"
manifest_version = 1
name = "oversized"

[[sources]]
name = "lines"
type = "file"
path = "input.txt"

[[operators]]
name = "big"
plugin = "{plugins}/fixture_oversized.wasm"
input = "lines"
on_error = "dead-letter"
limits = { max_record_kb = 1024 }

[[sinks]]
name = "out"
type = "file"
input = "big"
path = "out.txt"

[[sinks]]
name = "dead"
type = "file"
input = "big.dead-letter"
path = "dead.jsonl"
"#,
    );
    let (summary, _) = run_in_process(&pipeline, &dir.path().join("state"), 64).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.txt")).unwrap(),
        "a\nb\n"
    );
    let dead = read_jsonl(&dir.path().join("dead.jsonl"));
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["value"]["utf8"], "big:4");
    assert_eq!(dead[0]["offset"], 2);
    let error = dead[0]["error"].as_str().unwrap();
    assert!(
        error.contains(
            "emitted a record of 4194304 bytes, over the operator's limits.max_record_kb = 1024"
        ),
        "{error}"
    );
    assert_eq!(summary.dead_letters, 1);
}

/// Two independent chains in one pipeline: `looper` hits an infinite loop on
/// some records while `steady` processes a rate-limited stream.
fn neighbours(dir: &std::path::Path, loops: bool) -> (Duration, u64, Arc<Metrics>) {
    let lines: String = (0..6)
        .map(|i| {
            if loops && i % 2 == 1 {
                "loop\n".to_string()
            } else {
                format!("ok {i}\n")
            }
        })
        .collect();
    std::fs::write(dir.join("input.txt"), lines).unwrap();
    let pipeline = write_pipeline(
        dir,
        r#"
manifest_version = 1
name = "neighbours"

[[sources]]
name = "lines"
type = "file"
path = "input.txt"

[[sources]]
name = "trips"
type = "generator"
count = 30000
rate = 20000.0

[[operators]]
name = "looper"
plugin = "{plugins}/fixture_infinite_loop.wasm"
input = "lines"
on_error = "skip"
limits = { deadline_ms = 100 }

[[operators]]
name = "steady"
plugin = "{plugins}/fixture_trap.wasm"
input = "trips"

[[sinks]]
name = "looped"
type = "file"
input = "looper"
path = "looped.txt"

[[sinks]]
name = "steady-out"
type = "file"
input = "steady"
path = "steady.jsonl"
"#,
    );
    let (summary, metrics) = run_in_process(&pipeline, &dir.join("state"), 256).unwrap();
    (
        summary.elapsed,
        metrics.node("steady").records_out.get(),
        metrics,
    )
}

#[test]
fn a_looping_plugin_does_not_starve_its_neighbour() {
    let dir = tempfile::tempdir().unwrap();
    let (calm, calm_out, _) = neighbours(dir.path(), false);
    let (hostile, hostile_out, metrics) = neighbours(dir.path(), true);
    assert_eq!(calm_out, 30_000);
    assert_eq!(hostile_out, 30_000, "the neighbour processed every record");
    let looper = metrics.node("looper");
    assert_eq!(
        looper.skipped.get(),
        3,
        "the three looping records were skipped"
    );
    assert!(looper.traps.get() >= 3);
    // The neighbour's stream takes 1.5 s at its rate; the loops cost the looper
    // at least 3 × 100 ms of CPU meanwhile, on the other core.
    let ratio = calm.as_secs_f64() / hostile.as_secs_f64();
    assert!(
        ratio > 0.9,
        "the neighbour ran at {:.0}% of its calm throughput ({calm:?} vs {hostile:?})",
        ratio * 100.0
    );
}

#[test]
fn the_cli_interrupts_a_looping_plugin_and_finishes() {
    // Regression: the deadline must hold for the whole run of `sluice run`,
    // not only while the component loader is alive.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("input.txt"), "ok 1\nloop\nok 2\n").unwrap();
    let pipeline = write_pipeline(
        dir.path(),
        r#"
manifest_version = 1
name = "cli-loop"

[[sources]]
name = "lines"
type = "file"
path = "input.txt"

[[operators]]
name = "looper"
plugin = "{plugins}/fixture_infinite_loop.wasm"
input = "lines"
on_error = "skip"
limits = { deadline_ms = 100, stack_kb = 4096 }

[[sinks]]
name = "out"
type = "file"
input = "looper"
path = "out.txt"
"#,
    );
    let mut child = std::process::Command::new(sluice_bin())
        .args(["run", pipeline.to_str().unwrap(), "--state-dir", "state"])
        .current_dir(dir.path())
        .env("SLUICE_COMPILE_CACHE", compile_cache())
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            panic!("sluice run did not interrupt the loop within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.txt")).unwrap(),
        "ok 1\nok 2\n"
    );
}

/// A one-file HTTP server on loopback that answers `hello` to at most
/// `requests` requests, for at most 30 s.
fn hello_server(requests: usize) -> (u16, std::thread::JoinHandle<usize>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let started = Instant::now();
        let mut served = 0;
        while served < requests && started.elapsed() < Duration::from_secs(30) {
            match listener.accept() {
                Ok((mut conn, _)) => {
                    conn.set_nonblocking(false).unwrap();
                    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let mut buf = [0u8; 4096];
                    let _ = conn.read(&mut buf);
                    let _ = conn.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
                    );
                    served += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
        served
    });
    (port, handle)
}

#[test]
fn outbound_http_goes_only_to_granted_hosts() {
    let rt = runtime();
    match rt.load(&plugin(fixtures::HTTP_GET)) {
        Err(e @ LoadError::NotGranted { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("imports `wasi:http/"), "{msg}");
            assert!(
                msg.contains("grants = { http = ["),
                "the message names the grant: {msg}"
            );
        }
        other => panic!(
            "an HTTP plugin without a grant was not refused: {:?}",
            other.map(|_| ())
        ),
    }

    let (port, server) = hello_server(1);
    let grants = Grants {
        http: vec!["127.0.0.1".into()],
        ..Grants::default()
    };
    let plugin = rt
        .load_with(
            &plugin(fixtures::HTTP_GET),
            EngineOptions::default(),
            &grants,
        )
        .unwrap();
    let mut inst = plugin
        .instantiate(
            InstanceConfig::new("http"),
            None,
            Arc::new(Metrics::default()),
        )
        .unwrap();
    let granted = format!("http://127.0.0.1:{port}/hello");
    // `localhost` is the same machine, but not a granted host name.
    let denied = format!("http://localhost:{port}/hello");
    let result = inst
        .process(&[rec(&granted), rec(&denied), rec("not a url")])
        .unwrap();
    assert_eq!(values(&result), ["hello", "not a url"]);
    assert_eq!(
        result.errors.len(),
        1,
        "{:?}",
        result.errors.iter().map(|e| &e.message).collect::<Vec<_>>()
    );
    assert_eq!(result.errors[0].input, 1);
    assert!(
        result.errors[0].message.to_lowercase().contains("denied"),
        "{}",
        result.errors[0].message
    );
    assert_eq!(
        server.join().unwrap(),
        1,
        "exactly the granted request reached the server"
    );
}

//! The control plane as an attacker on the same machine sees it (issue 13,
//! `docs/security.md`): the admin endpoint wants the run's bearer token,
//! which only its owner can read; deploys read only regular files of
//! bounded size under allowed directories and allowlisted URLs, off the
//! checkpoint coordinator's thread; refusals do not reveal digests; the
//! endpoint and the CLI are bounded in time. Everything on loopback, every
//! wait bounded.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use sluice_tests::plugins::fixtures;
use sluice_tests::*;

/// A running pipeline that emits records for minutes: tests stop it.
fn pipeline(control: &str) -> String {
    format!(
        r#"
manifest_version = 1
name = "guarded"

[checkpoints]
interval = "200ms"

[[sources]]
name = "trips"
type = "generator"
seed = 3
count = 10000000
rate = 2000

[[operators]]
name = "keyed"
plugin = "{{plugins}}/fixture_json_keyed.wasm"
input = "trips"
on_error = "skip"
params = {{ key_field = "pickup_zone", time_field = "pickup_ms" }}

[[sinks]]
name = "out"
type = "file"
input = "keyed"
path = "out.txt"

[control]
{control}
"#
    )
}

/// A `sluice run`, killed when dropped (a failing test never leaves one behind).
struct Run {
    child: Option<Child>,
    log: PathBuf,
}

impl Run {
    fn start(dir: &Path) -> Run {
        let log = dir.join("run.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = run_command(dir, &[])
            .stderr(Stdio::from(file))
            .spawn()
            .expect("sluice starts");
        Run {
            child: Some(child),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `sluice stop`, then wait (bounded) for a clean exit.
    fn stop(mut self, dir: &Path) {
        let out = sluice(
            &[
                "stop",
                "--state-dir",
                "state",
                "--timeout",
                "30",
                "pipeline.toml",
            ],
            dir,
        );
        assert!(
            out.status.success(),
            "sluice stop: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        let mut child = self.child.take().unwrap();
        let status = wait_bounded(&mut child, Duration::from_secs(30))
            .unwrap_or_else(|| panic!("the run did not end after `sluice stop`:\n{}", self.log()));
        assert!(status.success(), "{}", self.log());
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Wait for `child` at most `limit`; `None` (and killed) if it is still running.
fn wait_bounded(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn control_dir(dir: &Path) -> PathBuf {
    dir.join("state/guarded/checkpoints/control")
}

/// Start a run with an admin endpoint; returns it, the endpoint's base URL
/// and the token the run generated.
fn start_with_endpoint(dir: &Path, extra: &str) -> (Run, String, String) {
    let port = free_port();
    write_pipeline(
        dir,
        &pipeline(&format!("http = \"127.0.0.1:{port}\"\n{extra}")),
    );
    let run = Run::start(dir);
    let token_file = control_dir(dir).join("admin.token");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(token_file.is_file() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()) {
        assert!(
            Instant::now() < deadline,
            "no admin endpoint (token {}) within 60 s:\n{}",
            token_file.display(),
            run.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();
    (run, format!("http://127.0.0.1:{port}"), token)
}

/// One HTTP call, bounded: (status, body); status 0 if it failed.
fn call(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&str>,
    limit: Duration,
) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(limit))
        .http_status_as_error(false)
        .build()
        .into();
    let auth = token.map(|t| format!("Bearer {t}"));
    let response = match (method, body) {
        ("POST", Some(b)) => {
            let mut r = agent.post(url).header("Content-Type", "application/json");
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.send(b)
        }
        _ => {
            let mut r = agent.get(url);
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.call()
        }
    };
    match response {
        Ok(mut r) => (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        ),
        Err(e) => (0, e.to_string()),
    }
}

/// A deploy command of `plugin` (a path or URL) claiming `sha256`.
fn deploy_command(id: &str, plugin: &str, sha256: &str) -> String {
    serde_json::json!({ "id": id, "pipeline": "guarded", "operator": "keyed", "action": "deploy", "plugin": plugin, "sha256": sha256 }).to_string()
}

/// Drop a command file into the control directory, as any local tool can.
fn drop_command(dir: &Path, id: &str, command: &str) {
    let commands = control_dir(dir);
    let tmp = commands.join(format!("{id}.tmp"));
    std::fs::write(&tmp, command).unwrap();
    std::fs::rename(&tmp, commands.join(format!("{id}.json"))).unwrap();
}

/// The final outcome of command `id` (from its result file), waiting at most `limit`.
fn final_outcome(dir: &Path, id: &str, limit: Duration, run: &Run) -> serde_json::Value {
    let path = control_dir(dir).join(format!("results/{id}.json"));
    let deadline = Instant::now() + limit;
    loop {
        if let Some(o) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .filter(|o| o["status"] != "accepted")
        {
            return o;
        }
        assert!(
            Instant::now() < deadline,
            "no outcome for `{id}` within {limit:?}: the coordinator is stuck?\n{}",
            run.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The newest complete checkpoint.
fn newest_checkpoint(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join("state/guarded/checkpoints"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().join("manifest.json").is_file())
                .filter_map(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .strip_prefix("chk-")
                        .and_then(|n| n.parse().ok())
                })
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn digest_of(path: &Path) -> String {
    sluice_dataflow::control::sha256_hex(&std::fs::read(path).unwrap())
}

const WRONG: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[test]
fn the_admin_endpoint_refuses_requests_without_the_runs_token_and_accepts_it() {
    let dir = tempfile::tempdir().unwrap();
    let (run, base, token) = start_with_endpoint(dir.path(), "");
    let commands = format!("{base}/commands");
    let copy = dir.path().join("keyed.wasm");
    std::fs::copy(plugin(fixtures::JSON_KEYED), &copy).unwrap();
    let command = deploy_command("with-token", &copy.display().to_string(), &digest_of(&copy));
    let limit = Duration::from_secs(10);

    for presented in [
        None,
        Some("wrong-token-0123456789"),
        Some(&token[..token.len() - 1]),
    ] {
        let (code, body) = call("POST", &commands, presented, Some(&command), limit);
        assert_eq!(code, 401, "POST with {presented:?}: {body}");
        assert_eq!(
            call(
                "GET",
                &format!("{commands}/with-token"),
                presented,
                None,
                limit
            )
            .0,
            401
        );
    }
    assert!(
        !control_dir(dir.path()).join("with-token.json").exists(),
        "a refused command is not queued"
    );
    assert_eq!(mode(&control_dir(dir.path()).join("admin.token")), 0o600);
    assert_eq!(mode(&control_dir(dir.path())), 0o700);

    let (code, body) = call("POST", &commands, Some(&token), Some(&command), limit);
    assert_eq!(code, 202, "{body}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, body) = call(
            "GET",
            &format!("{commands}/with-token"),
            Some(&token),
            None,
            limit,
        );
        if code == 200 && body.contains("\"applied\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not applied: {code} {body}\n{}",
            run.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    run.stop(dir.path());
}

#[test]
fn a_user_who_cannot_read_the_token_is_refused_by_the_admin_endpoint() {
    if std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout != b"0\n")
        .unwrap_or(true)
    {
        eprintln!("skipped: switching to `nobody` needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A working directory other users may enter, as a shared machine has.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (run, base, token) = start_with_endpoint(dir.path(), "");
    let as_nobody = |args: &[&str]| {
        std::process::Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .args(args)
            .output()
            .expect("setpriv runs")
    };

    let token_file = control_dir(dir.path()).join("admin.token");
    let read = as_nobody(&["cat", token_file.to_str().unwrap()]);
    assert!(
        !read.status.success() && !String::from_utf8_lossy(&read.stdout).contains(&token),
        "nobody read the token"
    );
    let dropped = as_nobody(&[
        "sh",
        "-c",
        &format!(
            "echo '{{}}' > {}/from-nobody.json",
            control_dir(dir.path()).display()
        ),
    ]);
    assert!(
        !dropped.status.success(),
        "nobody wrote into the control directory"
    );

    let command = deploy_command("from-nobody", "/etc/shadow", WRONG);
    for header in [
        "X-None: 1",
        "Authorization: Bearer guessed-token-0123456789",
    ] {
        let out = as_nobody(&[
            "curl",
            "-s",
            "-m",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-H",
            header,
            "--data",
            &command,
            &format!("{base}/commands"),
        ]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "401",
            "nobody's POST ({header}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        !control_dir(dir.path())
            .join("results/from-nobody.json")
            .exists()
            && !control_dir(dir.path()).join("from-nobody.json").exists()
    );
    run.stop(dir.path());
}

#[test]
fn fifos_devices_oversized_files_and_slow_urls_are_refused_while_checkpoints_go_on() {
    let dir = tempfile::tempdir().unwrap();
    write_pipeline(
        dir.path(),
        &pipeline("plugin_dirs = [\".\", \"/dev\"]\nmax_plugin_mb = 1\nfetch_timeout = \"4s\"\n"),
    );
    let fifo = dir.path().join("plugin.fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let big = dir.path().join("big.wasm");
    std::fs::write(&big, vec![0u8; 2 << 20]).unwrap();
    // Accepts connections (the kernel does) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let slow_url = format!("http://{}/plugin.wasm", silent.local_addr().unwrap());

    let run = Run::start(dir.path());
    let deadline = Instant::now() + Duration::from_secs(60);
    while newest_checkpoint(dir.path()) < 2 {
        assert!(Instant::now() < deadline, "no checkpoints:\n{}", run.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // The FIFO first: today it would stop the coordinator for good.
    let cases = [
        ("fifo", fifo.display().to_string(), "not a regular file"),
        ("zero", "/dev/zero".into(), "not a regular file"),
        ("big", big.display().to_string(), "max_plugin_mb"),
    ];
    for (id, location, _) in &cases {
        drop_command(dir.path(), id, &deploy_command(id, location, WRONG));
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    for (id, _, reason) in &cases {
        let o = final_outcome(dir.path(), id, Duration::from_secs(20), &run);
        assert!(
            o["status"] == "rejected" && o["reason"].as_str().unwrap().contains(reason),
            "{id}: {o}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "special files are refused quickly ({:?})",
        started.elapsed()
    );

    // A URL that never answers: checkpoints go on while it is fetched.
    drop_command(
        dir.path(),
        "slow",
        &deploy_command("slow", &slow_url, WRONG),
    );
    std::thread::sleep(Duration::from_millis(500));
    let before = newest_checkpoint(dir.path());
    std::thread::sleep(Duration::from_millis(2000));
    assert!(
        !control_dir(dir.path()).join("results/slow.json").exists(),
        "the fetch should still be waiting"
    );
    let after = newest_checkpoint(dir.path());
    assert!(
        after >= before + 2,
        "checkpoints go on during the fetch ({before} → {after})"
    );
    let o = final_outcome(dir.path(), "slow", Duration::from_secs(30), &run);
    assert!(
        o["status"] == "rejected" && o["reason"].as_str().unwrap().contains("fetching"),
        "{o}"
    );
    run.stop(dir.path());
    drop(silent);
}

#[test]
fn a_plugin_outside_the_allowed_places_is_refused_without_its_digest_and_stored_files_are_owner_only(
) {
    let dir = tempfile::tempdir().unwrap();
    write_pipeline(dir.path(), &pipeline(""));
    let elsewhere = tempfile::tempdir().unwrap();
    let secret = elsewhere.path().join("secret.key");
    std::fs::write(&secret, "root-only secret\n").unwrap();
    let secret_digest = digest_of(&secret);
    let inside = dir.path().join("copy.wasm");
    std::fs::copy(plugin(fixtures::JSON_KEYED), &inside).unwrap();
    let inside_digest = digest_of(&inside);

    let run = Run::start(dir.path());
    let deadline = Instant::now() + Duration::from_secs(60);
    while newest_checkpoint(dir.path()) < 1 {
        assert!(Instant::now() < deadline, "no checkpoints:\n{}", run.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let cases = [
        (
            "outside-wrong",
            secret.display().to_string(),
            WRONG.to_string(),
            "not a file under",
        ),
        (
            "outside-right",
            secret.display().to_string(),
            secret_digest.clone(),
            "not a file under",
        ),
        (
            "outside-dotdot",
            format!(
                "{}/../{}/secret.key",
                dir.path().display(),
                elsewhere.path().display()
            ),
            WRONG.to_string(),
            "not a file under",
        ),
        (
            "inside-wrong",
            inside.display().to_string(),
            WRONG.to_string(),
            "digest mismatch",
        ),
        (
            "url-elsewhere",
            "http://192.0.2.1/plugin.wasm".to_string(),
            WRONG.to_string(),
            "not allowed",
        ),
    ];
    for (id, location, sha, _) in &cases {
        drop_command(dir.path(), id, &deploy_command(id, location, sha));
    }
    for (id, _, _, reason) in &cases {
        let o = final_outcome(dir.path(), id, Duration::from_secs(20), &run);
        let text = o.to_string();
        assert!(
            o["status"] == "rejected" && o["reason"].as_str().unwrap().contains(reason),
            "{id}: {o}"
        );
        assert!(
            !text.contains(&secret_digest[..16]) || *id == "outside-right",
            "{id} reveals the secret's digest: {o}"
        );
        assert!(
            !text.contains(&inside_digest[..16]),
            "{id} reveals the actual digest: {o}"
        );
    }
    let store = control_dir(dir.path()).join("plugins");
    assert!(
        !store.join(format!("{secret_digest}.wasm")).exists(),
        "the secret was copied into the plugin store"
    );
    assert_eq!(mode(&control_dir(dir.path())), 0o700);
    assert_eq!(mode(&store), 0o700);
    let stored: Vec<PathBuf> = std::fs::read_dir(&store)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(!stored.is_empty());
    for f in stored.iter().chain(
        std::fs::read_dir(control_dir(dir.path()).join("results"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect::<Vec<_>>()
            .iter(),
    ) {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
    run.stop(dir.path());
}

#[test]
fn a_client_trickling_its_request_does_not_block_the_admin_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (run, base, token) = start_with_endpoint(dir.path(), "");
    let addr = base.trim_start_matches("http://").to_string();
    // Two clients send a body at 2 bytes per second.
    let tricklers: Vec<_> = (0..2)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || -> String {
                let mut s = std::net::TcpStream::connect(&addr).unwrap();
                s.write_all(b"POST /commands HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n").unwrap();
                let started = Instant::now();
                while started.elapsed() < Duration::from_secs(15) {
                    if s.write_all(b"{ ").is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut answer = String::new();
                let _ = s.read_to_string(&mut answer);
                answer
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..3 {
        let started = Instant::now();
        let (code, body) = call(
            "GET",
            &format!("{base}/commands/nothing"),
            Some(&token),
            None,
            Duration::from_secs(3),
        );
        assert_eq!(
            code, 404,
            "a normal request is answered beside the trickling ones: {body}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
    // A body larger than a command is refused before it is read.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.write_all(format!("POST /commands HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 100000000\r\n\r\n").as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    for t in tricklers {
        let answer = t.join().unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 408") || answer.is_empty(),
            "a trickling client is cut off: {answer}"
        );
    }
    run.stop(dir.path());
}

#[test]
fn cli_deploy_with_a_timeout_returns_when_the_endpoint_never_answers() {
    let dir = tempfile::tempdir().unwrap();
    // Accepts connections (the kernel does) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    write_pipeline(
        dir.path(),
        &pipeline(&format!("http = \"{}\"", silent.local_addr().unwrap())),
    );
    let wasm = plugin(fixtures::JSON_KEYED).display().to_string();
    let started = Instant::now();
    let mut child = std::process::Command::new(sluice_bin())
        .args([
            "plugin",
            "deploy",
            "--state-dir",
            "state",
            "--timeout",
            "3",
            "pipeline.toml",
            "keyed",
            &wasm,
        ])
        .current_dir(dir.path())
        .env("SLUICE_COMPILE_CACHE", compile_cache())
        .env("SLUICE_ADMIN_TOKEN", "test-token-0123456789abcdef")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_bounded(&mut child, Duration::from_secs(30));
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    let status = status.unwrap_or_else(|| {
        panic!("`sluice plugin deploy --timeout 3` still waited after 30 s: {err}")
    });
    assert!(
        !status.success() && started.elapsed() < Duration::from_secs(10),
        "{:?} {status}: {err}",
        started.elapsed()
    );
    assert!(err.contains("within 3 s"), "{err}");
    drop(silent);
}

#[test]
fn an_admin_endpoint_on_a_non_loopback_address_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    write_pipeline(dir.path(), &pipeline("http = \"0.0.0.0:9464\""));
    let out = sluice(&["validate", "pipeline.toml"], dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no TLS") && err.contains("loopback"),
        "{err}"
    );
}

//! `sluice plugin ...`: inspect components.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use sluice_runtime::Runtime;

/// Plugin subcommands.
#[derive(Subcommand)]
pub enum PluginCommand {
    /// Print a component's package, world, version, exports, imports, size and digest.
    Inspect {
        /// The component file.
        component: PathBuf,
    },
    /// Hot-swap an operator of a running pipeline to a new component: no
    /// restart; records before the swap's checkpoint barrier go to the old
    /// version, records after it to the new one; keyed state is kept.
    Deploy {
        /// The pipeline file.
        pipeline: PathBuf,
        /// The operator to change.
        operator: String,
        /// The new component.
        component: PathBuf,
        /// New params for the operator, a JSON object (default: keep its params).
        #[arg(long, value_name = "JSON")]
        params: Option<String>,
        #[command(flatten)]
        send: SendArgs,
    },
    /// Return an operator of a running pipeline to its previous version.
    Rollback {
        /// The pipeline file.
        pipeline: PathBuf,
        /// The operator.
        operator: String,
        #[command(flatten)]
        send: SendArgs,
    },
    /// Show each operator's plugin versions: digest, since which checkpoint, by which command.
    List {
        /// The pipeline file.
        pipeline: PathBuf,
        /// The state directory the pipeline runs with.
        #[arg(long, env = "SLUICE_STATE_DIR", default_value = ".sluice")]
        state_dir: PathBuf,
    },
}

/// How a command reaches the running pipeline, and how long to wait.
#[derive(clap::Args)]
pub struct SendArgs {
    /// The state directory the pipeline runs with.
    #[arg(long, env = "SLUICE_STATE_DIR", default_value = ".sluice")]
    state_dir: PathBuf,
    /// Command id (default: derived from the time); a repeated id is applied once.
    #[arg(long)]
    id: Option<String>,
    /// How long to wait for the outcome, in seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

/// Run a plugin subcommand.
pub fn run(cmd: PluginCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PluginCommand::Deploy {
            pipeline,
            operator,
            component,
            params,
            send,
        } => deploy(&pipeline, &operator, &component, params.as_deref(), &send),
        PluginCommand::Rollback {
            pipeline,
            operator,
            send,
        } => rollback(&pipeline, &operator, &send.state_dir, send.id, send.timeout),
        PluginCommand::List {
            pipeline,
            state_dir,
        } => list(&pipeline, &state_dir),
        PluginCommand::Inspect { component } => {
            let runtime = Runtime::new(crate::compile_cache())?;
            let info = match runtime.inspect(&component) {
                Ok(info) => info,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            println!("file:     {}", info.path.display());
            println!("size:     {} bytes", info.size);
            println!("sha256:   {}", info.digest);
            println!("package:  {}", info.package);
            println!("world:    {}", info.world);
            println!("version:  {}", info.version);
            println!("exports:");
            for e in &info.exports {
                println!("  {e}");
            }
            println!("imports:");
            for i in &info.imports {
                println!("  {i}");
            }
            match sluice_runtime::check_contract(&info, &sluice_runtime::Grants::default()) {
                Ok(()) => {
                    println!("verdict:  loadable as a process operator by this host ({}@{}), with no grants", sluice_runtime::PACKAGE, sluice_runtime::VERSION);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    println!("verdict:  refused: {e}");
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}

/// `sluice plugin deploy`: drop a command into the pipeline's control
/// directory and wait for its outcome.
fn deploy(
    pipeline: &std::path::Path,
    operator: &str,
    component: &std::path::Path,
    params: Option<&str>,
    send: &SendArgs,
) -> anyhow::Result<ExitCode> {
    use sluice_dataflow::control::{sha256_hex, Action, Command};
    let (state_dir, id, timeout) = (send.state_dir.as_path(), send.id.clone(), send.timeout);
    let pipeline = match super::read_pipeline(pipeline) {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let params = match params.map(serde_json::from_str::<serde_json::Value>) {
        None => None,
        Some(Ok(v)) if v.is_object() => Some(v),
        Some(Ok(_)) => {
            anyhow::bail!("--params must be a JSON object, such as '{{\"threshold\": 3}}'")
        }
        Some(Err(e)) => anyhow::bail!("--params is not valid JSON: {e}"),
    };
    let bytes = std::fs::read(component)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", component.display()))?;
    let digest = sha256_hex(&bytes);
    // Into the pipeline's plugin store first: the command names the stored copy.
    let store = sluice_dataflow::checkpoint::Store::of(&pipeline, state_dir);
    let component = sluice_dataflow::control::ControlDir::new(&store.root)
        .store_plugin(&digest, &bytes)
        .map_err(|e| anyhow::anyhow!(e))?;
    let component = std::fs::canonicalize(component)?;
    let id = id.unwrap_or_else(|| {
        format!(
            "deploy-{operator}-{}-{}",
            &digest[..12],
            sluice_runtime::now_ms()
        )
    });
    let command = Command {
        id,
        pipeline: pipeline.name.clone(),
        operator: operator.to_string(),
        action: Action::Deploy,
        plugin: Some(component),
        sha256: Some(digest.clone()),
        params,
        reason: None,
    };
    eprintln!(
        "sending `{}`: operator `{operator}` to sha256:{}",
        command.id,
        &digest[..12]
    );
    send_and_wait(&pipeline, state_dir, command, timeout)
}

/// `sluice plugin rollback`.
fn rollback(
    pipeline: &std::path::Path,
    operator: &str,
    state_dir: &std::path::Path,
    id: Option<String>,
    timeout: u64,
) -> anyhow::Result<ExitCode> {
    use sluice_dataflow::control::{Action, Command};
    let pipeline = match super::read_pipeline(pipeline) {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let id = id.unwrap_or_else(|| format!("rollback-{operator}-{}", sluice_runtime::now_ms()));
    let command = Command {
        id,
        pipeline: pipeline.name.clone(),
        operator: operator.to_string(),
        action: Action::Rollback,
        plugin: None,
        sha256: None,
        params: None,
        reason: None,
    };
    send_and_wait(&pipeline, state_dir, command, timeout)
}

/// Drop `command` into the pipeline's control directory and wait for its outcome.
fn send_and_wait(
    pipeline: &sluice_config::Pipeline,
    state_dir: &std::path::Path,
    command: sluice_dataflow::control::Command,
    timeout: u64,
) -> anyhow::Result<ExitCode> {
    use sluice_dataflow::control::ControlDir;
    let store = sluice_dataflow::checkpoint::Store::of(pipeline, state_dir);
    let control = ControlDir::new(&store.root);
    let id = command.id.clone();
    if let Some(addr) = pipeline.control.http {
        let token = match sluice_dataflow::token::client_token(&pipeline.control, &control) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: no admin token for http://{addr}: {e}");
                return Ok(ExitCode::from(1));
            }
        };
        return send_http(addr, &token, &command, timeout);
    }
    let sent_to = match &pipeline.control.kafka {
        // The pipeline's configured control topic.
        Some(k) => {
            let record = sluice_types::Record {
                key: Some(id.clone().into_bytes()),
                value: serde_json::to_vec(&command)?,
                ..Default::default()
            };
            sluice_kafka::admin::produce(&k.bootstrap, &k.topic, [record], |_| {})?;
            eprintln!("sent `{id}` to Kafka topic `{}`", k.topic);
            format!("Kafka topic `{}`", k.topic)
        }
        None => control
            .submit(&command)
            .map_err(|e| anyhow::anyhow!(e))?
            .display()
            .to_string(),
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout);
    let waited = wait_for_outcome(deadline, || control.read(&id));
    waited.unwrap_or_else(|| {
        eprintln!("no outcome within {timeout} s: is `sluice run` running this pipeline with --state-dir {}? The command stays in {sent_to}", state_dir.display());
        Ok(ExitCode::from(1))
    })
}

/// Poll `read` for a command's outcome until it is final (printing it) or
/// `deadline` passes (`None`).
fn wait_for_outcome(
    deadline: std::time::Instant,
    mut read: impl FnMut() -> Option<sluice_dataflow::control::Outcome>,
) -> Option<anyhow::Result<ExitCode>> {
    use sluice_dataflow::control::Status;
    let mut said_accepted = false;
    while std::time::Instant::now() <= deadline {
        if let Some(o) = read() {
            match o.status {
                Status::Accepted if !said_accepted => {
                    said_accepted = true;
                    eprintln!(
                        "accepted: takes effect at checkpoint {}",
                        o.checkpoint.unwrap_or(0)
                    );
                }
                Status::Applied => {
                    let what = o
                        .digest
                        .map(|d| format!("runs sha256:{d}"))
                        .unwrap_or_else(|| "is resumed".into());
                    println!(
                        "applied: operator `{}` {what} since checkpoint {}",
                        o.operator,
                        o.checkpoint.unwrap_or(0)
                    );
                    for (source, at) in &o.after {
                        println!("  after source `{source}` at {at}");
                    }
                    return Some(Ok(ExitCode::SUCCESS));
                }
                Status::Rejected => {
                    eprintln!("rejected: {}", o.reason.unwrap_or_default());
                    return Some(Ok(ExitCode::from(1)));
                }
                Status::Accepted => {}
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    None
}

/// `sluice plugin list`.
fn list(pipeline: &std::path::Path, state_dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    let pipeline = match super::read_pipeline(pipeline) {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let store = sluice_dataflow::checkpoint::Store::of(&pipeline, state_dir);
    let control = sluice_dataflow::control::ControlDir::new(&store.root);
    let history = control.history();
    let runtime = Runtime::new(crate::compile_cache())?;
    // The component's package and contract version, from the stored copy.
    let describe = |digest: &str| match runtime.inspect(&control.plugin(digest)) {
        Ok(info) => format!("{}@{} {}", info.package, info.version, info.world),
        Err(_) => "(not in the plugin store)".to_string(),
    };
    if history.is_empty() {
        println!("no versions recorded yet: run the pipeline (with checkpoints) first");
    }
    for (operator, versions) in &history {
        println!("{operator}");
        let current = versions.iter().rposition(|v| !v.rolled_back);
        for (i, v) in versions.iter().enumerate() {
            let mark = if Some(i) == current {
                "*"
            } else if v.rolled_back {
                "x"
            } else {
                " "
            };
            let since = humantime_ms(v.since_ms);
            println!(
                "  {mark} sha256:{}  {}  since checkpoint {} ({since}), by {}",
                &v.digest[..16.min(v.digest.len())],
                describe(&v.digest),
                v.checkpoint,
                v.command
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Send `command` to the pipeline's admin endpoint (with `token`) and poll
/// it for the outcome, all within `timeout` seconds: every call is bounded,
/// so an endpoint that never answers cannot hold the CLI longer.
fn send_http(
    addr: std::net::SocketAddr,
    token: &str,
    command: &sluice_dataflow::control::Command,
    timeout: u64,
) -> anyhow::Result<ExitCode> {
    use std::time::{Duration, Instant};

    use sluice_dataflow::control::Outcome;
    let base = format!("http://{addr}/commands");
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    // The time left, at most `cap`, and never zero (ureq reads that as no limit).
    let left = |cap: Duration| {
        deadline
            .saturating_duration_since(Instant::now())
            .min(cap)
            .max(Duration::from_millis(1))
    };
    let bearer = format!("Bearer {token}");
    let sent = agent
        .post(&base)
        .header("Content-Type", "application/json")
        .header("Authorization", &bearer)
        .config()
        .timeout_global(Some(left(Duration::MAX)))
        .build()
        .send(&serde_json::to_vec(command)?);
    let mut response = match sent {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: sending the command to {base} (within {timeout} s): {e}\n  help: is `sluice run` running this pipeline? ([control] http = \"{addr}\")");
            return Ok(ExitCode::from(1));
        }
    };
    match response.status().as_u16() {
        200..=299 => {}
        401 => {
            eprintln!("error: {base} refused the admin token\n  help: use the token of the run (its control directory's admin.token, [control] token_file, or {})", sluice_dataflow::token::TOKEN_ENV);
            return Ok(ExitCode::from(1));
        }
        code => {
            let text = response
                .body_mut()
                .with_config()
                .limit(64 << 10)
                .read_to_string()
                .unwrap_or_default();
            eprintln!("error: {base} answered {code}: {text}");
            return Ok(ExitCode::from(1));
        }
    }
    eprintln!("sent `{}` to {base}", command.id);
    let read = || -> Option<Outcome> {
        let url = format!("{base}/{}", command.id);
        let mut response = agent
            .get(&url)
            .header("Authorization", &bearer)
            .config()
            .timeout_global(Some(left(Duration::from_secs(5))))
            .build()
            .call()
            .ok()?;
        if response.status() != 200 {
            return None;
        }
        serde_json::from_str(
            &response
                .body_mut()
                .with_config()
                .limit(1 << 20)
                .read_to_string()
                .ok()?,
        )
        .ok()
    };
    wait_for_outcome(deadline, read).unwrap_or_else(|| {
        eprintln!("no outcome within {timeout} s from {base}");
        Ok(ExitCode::from(1))
    })
}

/// A wall-clock time in ms since the epoch, as RFC 3339 (UTC, seconds).
fn humantime_ms(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

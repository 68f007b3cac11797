//! `sluice checkpoint list`, `sluice savepoint`, `sluice stop`.
//!
//! A running pipeline watches `<checkpoint store>/requests/` (loopback only:
//! the local filesystem); these commands drop a request there and wait for
//! the answer file. They do not take the run's lock on the state directory
//! (the run holds it): they probe it, and address the request to the run
//! that holds it, so that a request it never took cannot stop a later run.
//! With nothing running they say so and write nothing.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use sluice_dataflow::checkpoint::{Listed, Request, Store};
use sluice_dataflow::run_lock::{self, Probe};

/// Where to find a pipeline's checkpoints.
#[derive(Args)]
pub struct Target {
    /// The pipeline file.
    pipeline: PathBuf,
    /// The state directory the pipeline runs with.
    #[arg(long, env = "SLUICE_STATE_DIR", default_value = ".sluice")]
    state_dir: PathBuf,
}

impl Target {
    fn store(&self) -> Result<Store, ExitCode> {
        let pipeline = super::read_pipeline(&self.pipeline)?;
        Ok(Store::of(&pipeline, &self.state_dir))
    }

    /// The store, and the directory whose lock tells which run holds it.
    fn store_and_lock(&self) -> Result<(Store, PathBuf), ExitCode> {
        let pipeline = super::read_pipeline(&self.pipeline)?;
        let lock = run_lock::lock_dirs(&pipeline, &self.state_dir).swap_remove(0);
        Ok((Store::of(&pipeline, &self.state_dir), lock))
    }
}

/// `sluice checkpoint ...`.
#[derive(Subcommand)]
pub enum CheckpointCommand {
    /// List checkpoints and savepoints with size, duration and source positions.
    List(Target),
}

/// Arguments of `sluice savepoint`.
#[derive(Args)]
pub struct SavepointArgs {
    #[command(flatten)]
    target: Target,
    /// How long to wait for the running pipeline, in seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

/// Arguments of `sluice stop`.
#[derive(Args)]
pub struct StopArgs {
    #[command(flatten)]
    target: Target,
    /// Keep the final checkpoint as a savepoint.
    #[arg(long)]
    savepoint: bool,
    /// How long to wait for the running pipeline, in seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

fn print(kind: &str, l: &Listed) {
    match &l.manifest {
        Ok(m) => {
            let size = m.state.as_ref().map_or(0, |s| s.total_bytes);
            let uploaded = m.state.as_ref().map_or(0, |s| s.uploaded_bytes);
            let positions: Vec<String> = m
                .sources
                .iter()
                .map(|s| {
                    let splits: Vec<String> = s
                        .position
                        .splits
                        .iter()
                        .map(|(k, v)| format!("{k}:{v}"))
                        .collect();
                    format!(
                        "{}@{} [{}]{}",
                        s.name,
                        s.position.emitted,
                        splits.join(" "),
                        if s.position.exhausted { " (end)" } else { "" }
                    )
                })
                .collect();
            println!(
                "{kind:<10} {:>6}  {:>10} (+{:>9})  {:>7} ms  {}  {}",
                m.id,
                human(size),
                human(uploaded),
                m.duration_ms,
                if m.finished { "finished" } else { "        " },
                positions.join(", ")
            );
            println!("{:<10} {:>6}  {}", "", "", l.dir.display());
        }
        Err(e) => println!(
            "{kind:<10} {:>6}  unusable: {e}\n{:<10} {:>6}  {}",
            l.id,
            "",
            "",
            l.dir.display()
        ),
    }
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// `sluice checkpoint list`.
pub fn list(cmd: CheckpointCommand) -> anyhow::Result<ExitCode> {
    let CheckpointCommand::List(target) = cmd;
    let store = match target.store() {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let checkpoints = store.list();
    let savepoints = store.list_savepoints();
    if checkpoints.is_empty() && savepoints.is_empty() {
        println!("no checkpoints in {}", store.root.display());
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<10} {:>6}  {:>10} {:>12}  {:>10}  {:8}  positions (source@records [split:next offset])",
        "kind", "id", "size", "(uploaded)", "duration", ""
    );
    for l in &checkpoints {
        print("checkpoint", l);
    }
    for l in &savepoints {
        print("savepoint", l);
    }
    Ok(ExitCode::SUCCESS)
}

/// Drop a request for the run that holds `lock_dir` and wait for its answer.
fn request(
    store: &Store,
    lock_dir: &Path,
    mut req: Request,
    timeout: u64,
) -> anyhow::Result<ExitCode> {
    let what = if req.stop {
        "nothing to stop"
    } else {
        "no savepoint taken"
    };
    let run = match run_lock::probe(lock_dir) {
        Ok(Probe::Running(info)) => info,
        Ok(Probe::Free) => {
            eprintln!(
                "error: {what}: no sluice run is using state directory {}",
                lock_dir.display()
            );
            return Ok(ExitCode::from(1));
        }
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    req.run = Some(run.run.clone());
    let req = &req;
    let dir = store.requests();
    std::fs::create_dir_all(&dir)?;
    let name = format!("req-{}-{}", std::process::id(), sluice_runtime::now_ms());
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, serde_json::to_string(req)?)?;
    std::fs::rename(&tmp, dir.join(format!("{name}.json")))?;
    let answer = dir.join(format!("{name}.done"));
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(timeout) {
        if let Ok(text) = std::fs::read_to_string(&answer) {
            let _ = std::fs::remove_file(&answer);
            let v: serde_json::Value = serde_json::from_str(&text)?;
            if v["ok"] == true {
                println!("savepoint written to {}", v["path"].as_str().unwrap_or("?"));
                return Ok(ExitCode::SUCCESS);
            }
            eprintln!(
                "error: the savepoint failed: {}",
                v["error"].as_str().unwrap_or("?")
            );
            return Ok(ExitCode::from(1));
        }
        if !req.savepoint && !dir.join(format!("{name}.json")).exists() {
            println!(
                "the pipeline (sluice run pid {}) took the stop request",
                run.pid
            );
            return Ok(ExitCode::SUCCESS);
        }
        // The run ended without taking the request: take it back.
        if matches!(run_lock::probe(lock_dir), Ok(Probe::Free)) && !answer.exists() {
            let _ = std::fs::remove_file(dir.join(format!("{name}.json")));
            eprintln!(
                "error: {what}: sluice run pid {} ended before it took the request",
                run.pid
            );
            return Ok(ExitCode::from(1));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_file(dir.join(format!("{name}.json")));
    eprintln!("error: no answer from sluice run pid {} within {timeout} s (are checkpoints on in its pipeline?)", run.pid);
    Ok(ExitCode::from(1))
}

/// `sluice savepoint`.
pub fn savepoint(args: SavepointArgs) -> anyhow::Result<ExitCode> {
    match args.target.store_and_lock() {
        Ok((store, lock)) => request(
            &store,
            &lock,
            Request {
                savepoint: true,
                stop: false,
                run: None,
            },
            args.timeout,
        ),
        Err(code) => Ok(code),
    }
}

/// `sluice stop`.
pub fn stop(args: StopArgs) -> anyhow::Result<ExitCode> {
    match args.target.store_and_lock() {
        Ok((store, lock)) => request(
            &store,
            &lock,
            Request {
                savepoint: args.savepoint,
                stop: true,
                run: None,
            },
            args.timeout,
        ),
        Err(code) => Ok(code),
    }
}

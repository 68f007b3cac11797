//! `sluice run`: run a pipeline, with live throughput on a terminal.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use sluice_dataflow::{Settings, StopHandle};
use sluice_types::metrics::Metrics;

/// Arguments of `sluice run`.
#[derive(Args)]
pub struct RunArgs {
    /// The pipeline file.
    pipeline: PathBuf,
    /// Directory for state (`<dir>/<pipeline>/state`).
    #[arg(long, env = "SLUICE_STATE_DIR", default_value = ".sluice")]
    state_dir: PathBuf,
    /// Write-back cache for keyed state, in MiB, shared by all keyed subtasks.
    #[arg(long, env = "SLUICE_STATE_CACHE_MB", default_value_t = 256)]
    state_cache_mb: usize,
    /// Records per batch handed to a plugin, over the pipeline's
    /// `batch_size` (default 1024). A speed knob: results do not depend on it.
    #[arg(long, env = "SLUICE_BATCH_SIZE")]
    batch_size: Option<usize>,
    /// Never show the live status line (it is off anyway when stderr is not a terminal).
    #[arg(long)]
    quiet: bool,
    /// Restore this checkpoint or savepoint directory (default: the latest
    /// complete checkpoint of the pipeline, if its last run did not finish).
    #[arg(long, value_name = "CHECKPOINT_OR_SAVEPOINT")]
    from: Option<PathBuf>,
    /// Drop the checkpointed state of stateful operators the pipeline no
    /// longer has (or whose state it can no longer read) instead of refusing to start.
    #[arg(long)]
    allow_dropped_state: bool,
}

/// Run the pipeline.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let (pipeline, plugins, runtime) = match super::prepare(&args.pipeline)? {
        Ok(prepared) => prepared,
        Err(code) => return Ok(code),
    };
    if args
        .batch_size
        .is_some_and(|n| !(1..=sluice_config::MAX_BATCH_SIZE).contains(&n))
    {
        anyhow::bail!(
            "--batch-size must be between 1 and {}",
            sluice_config::MAX_BATCH_SIZE
        );
    }
    let settings = Settings {
        state_dir: args.state_dir,
        cache_bytes: args.state_cache_mb.max(1) << 20,
        batch_size: args.batch_size,
        restore_from: args.from,
        allow_dropped_state: args.allow_dropped_state,
        runtime: Some(sluice_dataflow::RuntimeHandle(runtime)),
        ..Settings::default()
    };
    let metrics = Arc::new(Metrics::default());
    let stop = StopHandle::default();
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(sluice_dataflow::THREAD_STACK_BYTES)
        .enable_all()
        .build()?;
    let live = !args.quiet && std::io::stderr().is_terminal();

    let result = tokio.block_on(async {
        let ctrl_c = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\nstopping: draining what was read (Ctrl-C again to abort)");
                ctrl_c.stop();
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
        let status = live.then(|| tokio::spawn(status_line(pipeline.clone(), metrics.clone())));
        let r = sluice_dataflow::run(
            &pipeline,
            &plugins,
            &settings,
            metrics.clone(),
            stop.clone(),
        )
        .await;
        if let Some(s) = status {
            s.abort();
            let _ = s.await;
        }
        r
    });
    match result {
        Ok(summary) => {
            let startup = summary
                .startup
                .map(|s| format!(" ({s:.2?} of it starting up)"))
                .unwrap_or_default();
            eprintln!(
                "pipeline `{}` finished in {:.2?}{startup}: {} records in, {} written, {} dead letters",
                pipeline.name, summary.elapsed, summary.records_in, summary.records_out, summary.dead_letters
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ sluice_dataflow::DataflowError::StateDir(_)) => {
            eprintln!("error: pipeline `{}` did not start: {e}", pipeline.name);
            Ok(ExitCode::from(1))
        }
        Err(e) => {
            eprintln!("error: pipeline `{}` stopped: {e}", pipeline.name);
            Ok(ExitCode::from(1))
        }
    }
}

/// A status line, refreshed every second: records in/out per second and dead letters.
async fn status_line(pipeline: sluice_config::Pipeline, metrics: Arc<Metrics>) {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed} {msg}").expect("the template is valid"),
    );
    let totals = || {
        let inp: u64 = pipeline
            .sources
            .iter()
            .map(|s| metrics.node(&s.name).records_out.get())
            .sum();
        let out: u64 = pipeline
            .sinks
            .iter()
            .map(|s| metrics.node(&s.name).records_in.get())
            .sum();
        let dl: u64 = pipeline
            .operators
            .iter()
            .map(|o| metrics.node(&o.name).dead_letters.get())
            .sum();
        (inp, out, dl)
    };
    let (mut last, mut at) = (totals(), Instant::now());
    let _clear = ClearOnDrop(bar.clone());
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = totals();
        let secs = at.elapsed().as_secs_f64().max(1e-3);
        bar.set_message(format!(
            "in {:>9.0} rec/s | out {:>9.0} rec/s | total in {} out {} | dead letters {}",
            (now.0 - last.0) as f64 / secs,
            (now.1 - last.1) as f64 / secs,
            now.0,
            now.1,
            now.2
        ));
        bar.tick();
        (last, at) = (now, Instant::now());
    }
}

struct ClearOnDrop(ProgressBar);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

//! `sluice`: run stream-processing pipelines whose operators are WebAssembly
//! components. One file per subcommand in `commands/`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;

// The dataflow allocates and frees record buffers across threads; mimalloc
// handles that pattern markedly better than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sluice: a stream processor whose operators are WebAssembly components.
#[derive(Parser)]
#[command(name = "sluice", version, about, long_about = None)]
struct Cli {
    /// Log filter, e.g. `info`, `sluice=debug,plugin=trace`.
    #[arg(long, global = true, env = "SLUICE_LOG", default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline until its sources are exhausted (or Ctrl-C, which drains it).
    Run(commands::run::RunArgs),
    /// Check a pipeline file and its plugins without running it.
    Validate(commands::validate::ValidateArgs),
    /// Work with plugin components.
    #[command(subcommand)]
    Plugin(commands::plugin::PluginCommand),
    /// List a pipeline's checkpoints and savepoints.
    #[command(subcommand)]
    Checkpoint(commands::checkpoint::CheckpointCommand),
    /// Take a savepoint of a running pipeline.
    Savepoint(commands::checkpoint::SavepointArgs),
    /// Stop a running pipeline (draining it), optionally with a savepoint.
    Stop(commands::checkpoint::StopArgs),
    /// Load data into Kafka topics and read them back.
    #[command(subcommand)]
    Kafka(commands::kafka::KafkaCommand),
}

/// Where compiled components are cached, by digest.
pub(crate) fn compile_cache() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SLUICE_COMPILE_CACHE") {
        return (!dir.is_empty()).then(|| PathBuf::from(dir));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/sluice/components"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level).unwrap_or_else(|e| {
        eprintln!("warning: ignoring --log-level `{}`: {e}", cli.log_level);
        tracing_subscriber::EnvFilter::new("info")
    });
    // Colour codes only for a person at a terminal, never into a log file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .init();
    let result = match cli.command {
        Command::Run(args) => commands::run::run(args),
        Command::Validate(args) => commands::validate::run(args),
        Command::Plugin(cmd) => commands::plugin::run(cmd),
        Command::Checkpoint(cmd) => commands::checkpoint::list(cmd),
        Command::Savepoint(args) => commands::checkpoint::savepoint(args),
        Command::Stop(args) => commands::checkpoint::stop(args),
        Command::Kafka(cmd) => commands::kafka::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

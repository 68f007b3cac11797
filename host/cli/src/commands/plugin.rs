//! `sluice plugin ...`: inspect components.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use sluice_world::Runtime;

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
        /// The state directory the pipeline runs with.
        #[arg(long, env = "SLUICE_STATE_DIR", default_value = ".sluice")]
        state_dir: PathBuf,
        /// Command id (default: derived from the digest and time); a repeated id is applied once.
        #[arg(long)]
        id: Option<String>,
        /// How long to wait for the outcome, in seconds.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
}

/// Run a plugin subcommand.
pub fn run(cmd: PluginCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PluginCommand::Deploy { pipeline, operator, component, state_dir, id, timeout } => deploy(&pipeline, &operator, &component, &state_dir, id, timeout),
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
            match sluice_world::check_contract(&info, &sluice_world::Grants::default()) {
                Ok(()) => {
                    println!("verdict:  loadable as a process operator by this host ({}@{}), with no grants", sluice_world::PACKAGE, sluice_world::VERSION);
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
fn deploy(pipeline: &std::path::Path, operator: &str, component: &std::path::Path, state_dir: &std::path::Path, id: Option<String>, timeout: u64) -> anyhow::Result<ExitCode> {
    use sluice_dataflow::control::{sha256_hex, Action, Command, ControlDir, Status};
    let pipeline = match super::read_pipeline(pipeline) {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let bytes = std::fs::read(component).map_err(|e| anyhow::anyhow!("reading {}: {e}", component.display()))?;
    let digest = sha256_hex(&bytes);
    let component = std::fs::canonicalize(component)?;
    let id = id.unwrap_or_else(|| format!("deploy-{operator}-{}-{}", &digest[..12], sluice_world::now_ms()));
    let store = sluice_dataflow::checkpoint::Store::of(&pipeline, state_dir);
    let control = ControlDir::new(&store.root);
    std::fs::create_dir_all(control.commands())?;
    let command = Command { id: id.clone(), pipeline: pipeline.name.clone(), operator: operator.to_string(), action: Action::Deploy, plugin: Some(component), sha256: Some(digest.clone()), params: None };
    let path = control.commands().join(format!("{}.json", id.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_', "_")));
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&command)?)?;
    std::fs::rename(&tmp, &path)?;
    eprintln!("sent `{id}`: operator `{operator}` to sha256:{}", &digest[..12]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout);
    let mut said_accepted = false;
    loop {
        if let Some(o) = control.read(&id) {
            match o.status {
                Status::Accepted if !said_accepted => {
                    said_accepted = true;
                    eprintln!("accepted: takes effect at checkpoint {}", o.checkpoint.unwrap_or(0));
                }
                Status::Applied => {
                    println!("applied: operator `{operator}` runs sha256:{digest} since checkpoint {}", o.checkpoint.unwrap_or(0));
                    return Ok(ExitCode::SUCCESS);
                }
                Status::Rejected => {
                    eprintln!("rejected: {}", o.reason.unwrap_or_default());
                    return Ok(ExitCode::from(1));
                }
                Status::Accepted => {}
            }
        }
        if std::time::Instant::now() > deadline {
            eprintln!("no outcome within {timeout} s: is `sluice run` running this pipeline with --state-dir {}? The command stays in {}", state_dir.display(), path.display());
            return Ok(ExitCode::from(1));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

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
}

/// Run a plugin subcommand.
pub fn run(cmd: PluginCommand) -> anyhow::Result<ExitCode> {
    match cmd {
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

//! `sluice validate`: parse the pipeline and load its plugins, then stop.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

/// Arguments of `sluice validate`.
#[derive(Args)]
pub struct ValidateArgs {
    /// The pipeline file.
    pipeline: PathBuf,
}

/// Validate and print what the pipeline contains.
pub fn run(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let (pipeline, plugins) = match super::prepare(&args.pipeline)? {
        Ok(prepared) => prepared,
        Err(code) => return Ok(code),
    };
    println!("pipeline `{}` is valid ({})", pipeline.name, args.pipeline.display());
    for s in &pipeline.sources {
        println!("  source   {}", s.name);
    }
    for o in &pipeline.operators {
        let info = plugins[&o.name].info();
        let keyed = if o.key_by.is_some() { ", keyed" } else { "" };
        println!(
            "  operator {} <- {} [{} sha256:{}, parallelism {}{keyed}, on_error {:?}]",
            o.name,
            o.inputs.join(", "),
            info.path.file_name().map(|f| f.to_string_lossy()).unwrap_or_default(),
            &info.digest[..12],
            o.parallelism,
            o.on_error
        );
    }
    for s in &pipeline.sinks {
        println!("  sink     {} <- {}", s.name, s.inputs.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

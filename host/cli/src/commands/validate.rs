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
    let (pipeline, plugins, _) = match super::prepare(&args.pipeline)? {
        Ok(prepared) => prepared,
        Err(code) => return Ok(code),
    };
    println!(
        "pipeline `{}` is valid ({})",
        pipeline.name,
        args.pipeline.display()
    );
    let connectors = sluice_dataflow::connectors();
    for s in &pipeline.sources {
        let wm = s
            .watermarks
            .as_ref()
            .map(|w| format!(" [watermarks: out of order {} ms]", w.out_of_orderness.0))
            .unwrap_or_default();
        let what = connectors.describe_source(s, &pipeline)?;
        println!("  source   {} [{what}]{wm}", s.name);
    }
    for o in &pipeline.operators {
        let info = plugins[&o.name].info();
        let keyed = if o.key_by.is_some() { ", keyed" } else { "" };
        let window = o
            .window
            .as_ref()
            .map(|w| format!(", {:?} window ({:?} time)", w.kind, w.time).to_lowercase())
            .unwrap_or_default();
        println!(
            "  operator {} <- {} [{} {} sha256:{}, parallelism {}{keyed}{window}, on_error {:?}]",
            o.name,
            o.inputs.join(", "),
            info.world,
            info.path
                .file_name()
                .map(|f| f.to_string_lossy())
                .unwrap_or_default(),
            &info.digest[..12],
            o.parallelism,
            o.on_error
        );
    }
    for s in &pipeline.sinks {
        let what = connectors.describe_sink(s, &pipeline)?;
        println!("  sink     {} <- {} [{what}]", s.name, s.inputs.join(", "));
    }
    let c = &pipeline.checkpoints;
    if c.enabled {
        println!("  checkpoints every {} ms, {} kept", c.interval.0, c.retain);
    } else {
        println!("  checkpoints off");
    }
    Ok(ExitCode::SUCCESS)
}

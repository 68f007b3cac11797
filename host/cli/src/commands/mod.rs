//! One module per subcommand.

pub mod checkpoint;
pub mod kafka;
pub mod plugin;
pub mod run;
pub mod validate;

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};
use sluice_config::Pipeline;
use sluice_runtime::{Plugin, Runtime};

/// Read and validate a pipeline; on error print it and return exit code 2.
pub(crate) fn read_pipeline(path: &Path) -> Result<Pipeline, ExitCode> {
    Pipeline::from_file(path, &sluice_dataflow::connectors()).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

/// A pipeline ready to run: the file, its operators' plugins by name, the runtime.
pub(crate) type Prepared = (Pipeline, HashMap<String, Arc<Plugin>>, Arc<Runtime>);

/// Read the pipeline and load its plugins: what `run` and `validate` share.
/// The inner error is the exit code of a problem already reported.
pub(crate) fn prepare(path: &Path) -> anyhow::Result<Result<Prepared, ExitCode>> {
    let pipeline = match read_pipeline(path) {
        Ok(p) => p,
        Err(code) => return Ok(Err(code)),
    };
    let runtime = Arc::new(Runtime::new(crate::compile_cache())?);
    Ok(load_plugins(&runtime, &pipeline).map(|plugins| (pipeline, plugins, runtime)))
}

/// Compile and check every operator's plugin, with a progress bar on a terminal.
pub(crate) fn load_plugins(
    runtime: &Runtime,
    pipeline: &Pipeline,
) -> Result<HashMap<String, Arc<Plugin>>, ExitCode> {
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(pipeline.operators.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{spinner} loading plugins [{pos}/{len}] {msg}")
                .expect("the template is valid"),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(100));
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut plugins = HashMap::new();
    for op in &pipeline.operators {
        bar.set_message(format!("{} ({})", op.name, op.plugin.display()));
        let started = std::time::Instant::now();
        let plugin = sluice_dataflow::load_operator(runtime, op).map_err(|e| {
            bar.abandon();
            eprintln!(
                "error: {}:{}: operator `{}`: {e}",
                pipeline.file.display(),
                op.line,
                op.name
            );
            ExitCode::from(2)
        })?;
        tracing::debug!("loaded {} in {:?}", op.plugin.display(), started.elapsed());
        plugins.insert(op.name.clone(), plugin);
        bar.inc(1);
    }
    bar.finish_and_clear();
    if let Err((line, message)) = sluice_dataflow::check_side_outputs(pipeline, &plugins) {
        eprintln!("error: {}:{line}: {message}", pipeline.file.display());
        return Err(ExitCode::from(2));
    }
    Ok(plugins)
}

//! Plugins as the pipeline uses them: loading an operator's plugin with its
//! limits and grants, checking its kind and side outputs against the
//! pipeline, and the settings of each instance.

use std::collections::HashMap;
use std::sync::Arc;

use sluice_config::{OperatorSpec, Pipeline};
use sluice_runtime::{EngineOptions, InstanceConfig, LoadError, OperatorKind, Plugin, Runtime};

/// Stack size of the threads that run guests: above the largest Wasm stack an
/// operator may ask for (`limits.stack_kb`), with room for the host's frames.
pub const THREAD_STACK_BYTES: usize = 8 << 20;

/// The engine options an operator's limits call for.
pub fn engine_options(op: &OperatorSpec) -> EngineOptions {
    EngineOptions {
        stack_bytes: (op.limits.stack_kb as usize) << 10,
        fuel: op.limits.fuel.is_some(),
        ..EngineOptions::default()
    }
}

/// The instance settings of subtask `subtask` of `op`.
pub(crate) fn instance_config(op: &OperatorSpec, subtask: u32) -> InstanceConfig {
    InstanceConfig {
        operator: op.name.clone(),
        subtask,
        parallelism: op.parallelism,
        params: op.params.to_string(),
        // Saturating: a cap that does not fit never wraps to a small one.
        memory_bytes: usize::try_from(op.limits.memory_mb)
            .ok()
            .and_then(|mb| mb.checked_mul(1 << 20))
            .unwrap_or(usize::MAX),
        deadline_ms: op.limits.deadline_ms,
        fuel: op.limits.fuel,
        sources: Arc::from(Vec::new()),
    }
}

/// Load (compile, check, pre-instantiate) the plugin of `op` with its limits
/// and grants, and check that its kind fits how the pipeline uses it.
pub fn load_operator(runtime: &Runtime, op: &OperatorSpec) -> Result<Arc<Plugin>, LoadError> {
    let plugin = runtime.load_with(&op.plugin, engine_options(op), &op.grants)?;
    let info = plugin.info();
    let kind = info.kind.unwrap_or(OperatorKind::Process);
    let wrong = |expected: &str, help: &str| LoadError::WrongKind {
        path: info.path.clone(),
        operator: op.name.clone(),
        expected: expected.to_string(),
        found: kind.world().to_string(),
        help: help.to_string(),
    };
    match (op.window.is_some(), kind) {
        (true, OperatorKind::Window) | (false, OperatorKind::Process) => Ok(plugin.clone()),
        (false, OperatorKind::KeyedProcess) if op.key_by.is_some() => Ok(plugin.clone()),
        (false, OperatorKind::KeyedProcess) => Err(wrong("has no key_by, so it cannot have timers", "add key_by = \"key\" to the operator (timers are per key)")),
        (true, _) => Err(wrong("has a [operators.window]", "build the plugin as a window aggregate (Rust SDK: #[sluice_sdk::aggregate]), or remove the window")),
        (false, _) => Err(wrong("has no [operators.window]", "add a window table to the operator, e.g. window = { kind = \"tumbling\", size = \"1m\" }")),
    }
}

/// A stream `<operator>.<side>` that the operator's plugin declares it never
/// emits would stay empty, silently: refuse it, with the line of the reader
/// and what the plugin does emit. Plugins that declare nothing are not
/// checked. `dead-letter` (and `late` for windows) come from the host.
pub fn check_side_outputs(
    pipeline: &Pipeline,
    plugins: &HashMap<String, Arc<Plugin>>,
) -> Result<(), (usize, String)> {
    let readers = pipeline
        .operators
        .iter()
        .map(|o| (&o.name, &o.inputs, o.input_line))
        .chain(
            pipeline
                .sinks
                .iter()
                .map(|s| (&s.name, &s.inputs, s.input_line)),
        );
    for (reader, inputs, line) in readers {
        for input in inputs {
            let Some((head, side)) = input.split_once('.') else {
                continue;
            };
            let Some(op) = pipeline.operators.iter().find(|o| o.name == head) else {
                continue;
            };
            let host_made = side == sluice_config::DEAD_LETTER_OUTPUT
                || op.window.as_ref().is_some_and(|w| w.late_output == side);
            let Some(declared) = plugins
                .get(head)
                .and_then(|p| p.info().side_outputs.clone())
            else {
                continue;
            };
            if !host_made && !declared.iter().any(|d| d == side) {
                let emits = if declared.is_empty() {
                    "none".to_string()
                } else {
                    declared
                        .iter()
                        .map(|d| format!("`{head}.{d}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                return Err((
                    line,
                    format!("`{reader}` reads `{input}`, but the plugin of `{head}` declares no side output `{side}` (it declares {emits}), so nothing would ever arrive\n  help: read one of the side outputs it declares, or add `{side}` to its side_outputs"),
                ));
            }
        }
    }
    Ok(())
}

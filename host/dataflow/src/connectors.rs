//! The connector registry of the engine: this crate links every connector
//! crate, so it is where their registries meet.

use sluice_connectors::Registry;

/// Every connector type Sluice has: those of `sluice-connectors`, then
/// Kafka. Pipelines are read (`sluice_config::Pipeline::from_file`), shown
/// and built with it. A connector in a crate of its own adds its
/// `register` line here.
pub fn connectors() -> Registry {
    let mut registry = sluice_connectors::builtin();
    sluice_kafka::register(&mut registry);
    registry
}

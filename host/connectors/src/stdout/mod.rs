//! The `stdout` sink: records as lines on standard output.

use sluice_config::{ConfigError, Entry, Pipeline, SinkSpec};
use sluice_types::{ConnectorError, Sink};

use crate::registry::{parse_settings, Registry, SinkContext, SinkType};

pub mod config;
pub mod sink;

pub use config::StdoutSinkConfig;
pub use sink::StdoutSink;

/// Register the `stdout` sink type.
pub fn register(registry: &mut Registry) {
    registry.add_sink(StdoutSinkType);
}

/// `[[sinks]] type = "stdout"`.
struct StdoutSinkType;

impl SinkType for StdoutSinkType {
    fn name(&self) -> &'static str {
        "stdout"
    }

    fn check(&self, entry: &mut Entry<'_>) -> Result<(), ConfigError> {
        entry.parse::<StdoutSinkConfig>().map(drop)
    }

    fn describe(&self, _: &SinkSpec, _: &Pipeline) -> Result<String, ConnectorError> {
        Ok("stdout".to_string())
    }

    fn build(&self, at: &SinkContext<'_>) -> Result<Box<dyn Sink>, ConnectorError> {
        let config: StdoutSinkConfig =
            parse_settings(&format!("sink `{}`", at.spec.name), &at.spec.settings)?;
        Ok(Box::new(StdoutSink::new(&config)))
    }
}

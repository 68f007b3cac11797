//! The `stdout` sink: records as lines on standard output.

use std::io::Write;

use sluice_types::{ConnectorError, Record, Sink};

use super::config::StdoutSinkConfig;
use crate::format::{encode_record, SinkFormat};

/// The `stdout` sink. Each batch is encoded in memory and written with the
/// standard output locked, so lines of one batch are never interleaved with
/// other output.
pub struct StdoutSink {
    format: SinkFormat,
    buf: Vec<u8>,
}

impl StdoutSink {
    /// A sink writing in the configured format.
    pub fn new(config: &StdoutSinkConfig) -> Self {
        StdoutSink {
            format: config.format,
            buf: Vec::with_capacity(64 * 1024),
        }
    }

    /// Encode a batch as this sink writes it (without writing it).
    fn encode(&mut self, batch: &[Record]) -> &[u8] {
        self.buf.clear();
        for record in batch {
            encode_record(self.format, record, &mut self.buf);
        }
        &self.buf
    }
}

fn stdout_err(what: &'static str, source: std::io::Error) -> ConnectorError {
    ConnectorError::Io {
        what,
        path: "<stdout>".to_string(),
        source,
    }
}

impl Sink for StdoutSink {
    fn write(&mut self, batch: &[Record]) -> Result<(), ConnectorError> {
        let bytes = self.encode(batch);
        let mut out = std::io::stdout().lock();
        out.write_all(bytes)
            .map_err(|e| stdout_err("writing to", e))
    }

    fn flush(&mut self) -> Result<(), ConnectorError> {
        std::io::stdout()
            .lock()
            .flush()
            .map_err(|e| stdout_err("flushing", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_unknown_fields() {
        let c: StdoutSinkConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c.format, SinkFormat::Value);
        let c: StdoutSinkConfig = serde_json::from_str(r#"{"format":"envelope"}"#).unwrap();
        assert_eq!(c.format, SinkFormat::Envelope);
        assert!(serde_json::from_str::<StdoutSinkConfig>(r#"{"path":"x"}"#).is_err());
    }

    #[test]
    fn encodes_batches_in_both_formats() {
        let batch = [
            Record::from_value("{\"a\":1}"),
            Record::from_value(vec![0xfe]),
        ];
        let mut sink = StdoutSink::new(&StdoutSinkConfig {
            format: SinkFormat::Value,
        });
        assert_eq!(sink.encode(&batch), b"{\"a\":1}\n\xfe\n");
        let mut sink = StdoutSink::new(&StdoutSinkConfig {
            format: SinkFormat::Envelope,
        });
        assert_eq!(
            sink.encode(&batch),
            b"{\"key\":null,\"value\":{\"a\":1},\"event_time\":null,\"headers\":{}}\n\
              {\"key\":null,\"value_base64\":\"/g==\",\"event_time\":null,\"headers\":{}}\n"
        );
        // An empty batch exercises the locked write without test output.
        sink.write(&[]).unwrap();
        sink.flush().unwrap();
    }
}

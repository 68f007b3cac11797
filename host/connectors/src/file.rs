//! The `file` source and sink: JSON lines on the local filesystem.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;

use serde::Deserialize;
use sluice_types::{ConnectorError, Position, Record, Sink, Source};

use crate::format::{encode_record, SinkFormat};

/// Configuration of a `file` source (`type = "file"` in `[[sources]]`),
/// which reads a file of JSON lines: every non-empty line becomes one
/// record.
///
/// ```toml
/// [[sources]]
/// name = "trips"
/// type = "file"
/// path = "data/trips.jsonl"
/// ```
///
/// Each record's value is the line's bytes without the line ending (`\n`
/// or `\r\n`); the bytes are not checked, so a malformed line reaches the
/// operators as is. Empty lines are skipped. Records have no key and no
/// event time; their position is `{split: 0, offset: <1-based line number>}`.
/// The source is exhausted at the end of the file.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// The file to read. A relative path is relative to the directory of the
    /// pipeline file. Required.
    pub path: PathBuf,
}

/// The `file` source: reads a file of JSON lines, one record per non-empty
/// line. See [`FileSourceConfig`].
pub struct FileSource {
    path: PathBuf,
    reader: BufReader<File>,
    source_index: u16,
    /// Number of the last line read (1-based).
    line: u64,
    done: bool,
    buf: Vec<u8>,
}

impl FileSource {
    /// Open the file of the source at `source_index` in the pipeline. A
    /// missing or unreadable file is a [`ConnectorError::Io`] naming it.
    pub fn new(config: &FileSourceConfig, source_index: u16) -> Result<Self, ConnectorError> {
        let file = File::open(&config.path).map_err(|source| ConnectorError::Io {
            what: "opening source file",
            path: config.path.display().to_string(),
            source,
        })?;
        Ok(FileSource {
            path: config.path.clone(),
            reader: BufReader::with_capacity(256 * 1024, file),
            source_index,
            line: 0,
            done: false,
            buf: Vec::with_capacity(1024),
        })
    }
}

impl Source for FileSource {
    fn poll_batch(&mut self, max: usize) -> Result<Option<Vec<Record>>, ConnectorError> {
        if self.done {
            return Ok(None);
        }
        let mut batch = Vec::with_capacity(max.min(4096));
        while batch.len() < max {
            self.buf.clear();
            let n = self.reader.read_until(b'\n', &mut self.buf).map_err(|source| ConnectorError::Io {
                what: "reading source file",
                path: self.path.display().to_string(),
                source,
            })?;
            if n == 0 {
                self.done = true;
                break;
            }
            self.line += 1;
            let mut line = &self.buf[..];
            if let Some(rest) = line.strip_suffix(b"\n") {
                line = rest;
                if let Some(rest) = line.strip_suffix(b"\r") {
                    line = rest;
                }
            }
            if line.is_empty() {
                continue;
            }
            batch.push(Record {
                value: line.to_vec(),
                position: Some(Position { source: self.source_index, split: 0, offset: self.line }),
                ..Default::default()
            });
        }
        if batch.is_empty() && self.done {
            return Ok(None);
        }
        Ok(Some(batch))
    }
}

/// Configuration of a `file` sink (`type = "file"` in `[[sinks]]`), which
/// writes one line per record.
///
/// ```toml
/// [[sinks]]
/// name = "out"
/// type = "file"
/// input = "clean"
/// path = "out/trips.jsonl"
/// format = "envelope"
/// ```
///
/// The file is created (with missing parent directories) or truncated when
/// the pipeline starts. Writes are buffered and reach the operating system
/// at least on every flush (checkpoint) and at the end of the input.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// The file to write. A relative path is relative to the directory of
    /// the pipeline file. Required.
    pub path: PathBuf,
    /// How each record is written: `"value"` (the value bytes, the default)
    /// or `"envelope"` (a JSON object with key, value, event time and
    /// headers). See [`SinkFormat`].
    #[serde(default)]
    pub format: SinkFormat,
}

/// The `file` sink: writes records as lines to a file. See
/// [`FileSinkConfig`].
pub struct FileSink {
    path: PathBuf,
    format: SinkFormat,
    writer: BufWriter<File>,
    buf: Vec<u8>,
}

impl FileSink {
    /// Create (or truncate) the file, creating missing parent directories.
    pub fn new(config: &FileSinkConfig) -> Result<Self, ConnectorError> {
        let io_err = |what, source| ConnectorError::Io { what, path: config.path.display().to_string(), source };
        if let Some(parent) = config.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| ConnectorError::Io {
                what: "creating the directory of sink file",
                path: parent.display().to_string(),
                source: e,
            })?;
        }
        let file = File::create(&config.path).map_err(|e| io_err("creating sink file", e))?;
        Ok(FileSink {
            path: config.path.clone(),
            format: config.format,
            writer: BufWriter::with_capacity(1 << 20, file),
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    fn io_err(&self, what: &'static str, source: std::io::Error) -> ConnectorError {
        ConnectorError::Io { what, path: self.path.display().to_string(), source }
    }
}

impl Sink for FileSink {
    fn write(&mut self, batch: &[Record]) -> Result<(), ConnectorError> {
        self.buf.clear();
        for record in batch {
            encode_record(self.format, record, &mut self.buf);
        }
        let buf = std::mem::take(&mut self.buf);
        let result = self.writer.write_all(&buf);
        self.buf = buf;
        result.map_err(|e| self.io_err("writing sink file", e))
    }

    fn flush(&mut self) -> Result<(), ConnectorError> {
        self.writer.flush().map_err(|e| self.io_err("flushing sink file", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_types::Header;

    fn read_all(source: &mut FileSource, max: usize) -> Vec<Record> {
        let mut all = Vec::new();
        while let Some(batch) = source.poll_batch(max).unwrap() {
            assert!(batch.len() <= max);
            all.extend(batch);
        }
        assert!(source.poll_batch(max).unwrap().is_none(), "stays exhausted");
        all
    }

    #[test]
    fn source_line_numbers_and_empty_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, b"{\"a\":1}\n\n{\"a\":2}\r\n\r\nnot json\n\n{\"a\":3}").unwrap();
        let mut source = FileSource::new(&FileSourceConfig { path }, 3).unwrap();
        let records = read_all(&mut source, 2);
        let got: Vec<(&[u8], u64)> = records.iter().map(|r| (&r.value[..], r.position.unwrap().offset)).collect();
        assert_eq!(
            got,
            vec![(&b"{\"a\":1}"[..], 1), (&b"{\"a\":2}"[..], 3), (&b"not json"[..], 5), (&b"{\"a\":3}"[..], 7)]
        );
        for r in &records {
            let pos = r.position.unwrap();
            assert_eq!((pos.source, pos.split), (3, 0));
            assert_eq!((r.key.as_ref(), r.event_time), (None, None));
        }
    }

    #[test]
    fn source_empty_file_is_exhausted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.jsonl");
        std::fs::write(&path, b"\n\n").unwrap();
        let mut source = FileSource::new(&FileSourceConfig { path }, 0).unwrap();
        assert!(read_all(&mut source, 10).is_empty());
    }

    #[test]
    fn source_missing_file_names_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.jsonl");
        let err = FileSource::new(&FileSourceConfig { path: path.clone() }, 0).err().unwrap();
        assert!(matches!(err, ConnectorError::Io { .. }));
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
    }

    #[test]
    fn config_parsing() {
        let c: FileSinkConfig = serde_json::from_str(r#"{"path": "x.jsonl"}"#).unwrap();
        assert_eq!(c.format, SinkFormat::Value);
        let c: FileSinkConfig = serde_json::from_str(r#"{"path": "x.jsonl", "format": "envelope"}"#).unwrap();
        assert_eq!(c.format, SinkFormat::Envelope);
        assert!(serde_json::from_str::<FileSinkConfig>(r#"{"path": "x", "format": "csv"}"#).is_err());
        assert!(serde_json::from_str::<FileSinkConfig>(r#"{"path": "x", "fromat": "value"}"#).is_err());
        assert!(serde_json::from_str::<FileSourceConfig>(r#"{"path": "x", "name": "s"}"#).is_err());
        assert!(serde_json::from_str::<FileSourceConfig>(r#"{}"#).is_err());
    }

    #[test]
    fn sink_round_trip_through_source() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/out.jsonl");
        let records: Vec<Record> = crate::taxi_records(
            &crate::GeneratorConfig { count: Some(1000), malformed_ratio: 0.0, ..Default::default() },
            0,
        )
        .collect();
        let mut sink = FileSink::new(&FileSinkConfig { path: path.clone(), format: SinkFormat::Value }).unwrap();
        for chunk in records.chunks(77) {
            sink.write(chunk).unwrap();
        }
        sink.flush().unwrap();
        let mut source = FileSource::new(&FileSourceConfig { path: path.clone() }, 0).unwrap();
        let back = read_all(&mut source, 100);
        assert_eq!(back.len(), records.len());
        for (i, (a, b)) in records.iter().zip(&back).enumerate() {
            assert_eq!(a.value, b.value);
            assert_eq!(b.position.unwrap().offset, i as u64 + 1);
        }

        // Reopening truncates.
        let mut sink = FileSink::new(&FileSinkConfig { path: path.clone(), format: SinkFormat::Value }).unwrap();
        sink.write(&[Record::from_value("x")]).unwrap();
        drop(sink);
        assert_eq!(std::fs::read(&path).unwrap(), b"x\n");
    }

    #[test]
    fn sink_envelope_with_binary_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("env.jsonl");
        let mut sink = FileSink::new(&FileSinkConfig { path: path.clone(), format: SinkFormat::Envelope }).unwrap();
        let records = vec![
            Record {
                key: Some(b"k".to_vec()),
                value: b"{\"n\": 1.50}".to_vec(),
                event_time: Some(7),
                headers: vec![Header { name: "h".into(), value: b"v".to_vec() }],
                position: None,
            },
            Record::from_value("plain text"),
            Record::from_value(vec![0xff, b'\n', 0x00]),
        ];
        sink.write(&records).unwrap();
        sink.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            vec![
                r#"{"key":"k","value":{"n":1.50},"event_time":7,"headers":{"h":"v"}}"#,
                r#"{"key":null,"value":"plain text","event_time":null,"headers":{}}"#,
                r#"{"key":null,"value_base64":"/woA","event_time":null,"headers":{}}"#,
            ]
        );
    }
}

//! The `file` source: one record per non-empty line of a file.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::PathBuf;

use sluice_types::{ConnectorError, Position, Record, Source};

use super::config::FileSourceConfig;

/// The `file` source: reads a file of JSON lines, one record per non-empty
/// line. See [`FileSourceConfig`].
pub struct FileSource {
    path: PathBuf,
    reader: BufReader<File>,
    source_index: u16,
    /// Number of the last line read (1-based).
    line: u64,
    done: bool,
    pub(super) buf: Vec<u8>,
    /// The longest line accepted, in bytes (without the line ending).
    max_line: u64,
}

impl FileSource {
    /// Open the file of the source at `source_index` in the pipeline. A
    /// missing or unreadable file is a [`ConnectorError::Io`] naming it.
    pub fn new(config: &FileSourceConfig, source_index: u16) -> Result<Self, ConnectorError> {
        config.validate()?;
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
            max_line: config.max_record_kb << 10,
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
            // Never more than the longest line accepted plus its `\r\n`
            // (and one byte to tell that it is longer).
            let cap = self.max_line + 3;
            let n = (&mut self.reader)
                .take(cap)
                .read_until(b'\n', &mut self.buf)
                .map_err(|source| ConnectorError::Io {
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
            if line.len() as u64 > self.max_line {
                let kb = self.max_line >> 10;
                let message = format!("line {} is longer than the source's max_record_kb = {kb} KiB; raise `max_record_kb` on the source, or split the line", self.line);
                return Err(ConnectorError::Io {
                    what: "reading source file",
                    path: self.path.display().to_string(),
                    source: io::Error::new(io::ErrorKind::InvalidData, message),
                });
            }
            if line.is_empty() {
                continue;
            }
            batch.push(Record {
                value: line.to_vec(),
                position: Some(Position {
                    source: self.source_index,
                    split: 0,
                    offset: self.line,
                }),
                ..Default::default()
            });
        }
        if batch.is_empty() && self.done {
            return Ok(None);
        }
        Ok(Some(batch))
    }
}

//! The per-record context handed to `#[process]` functions.

use std::cell::OnceCell;

use crate::record::{Emit, Output};
use crate::{sys, Params, Record};

/// What a `#[process]` function can do besides returning: emit any number of
/// records (to the main output or to named side outputs), read the current
/// record's key, and read the params.
///
/// Every record emitted through the context is attributed to the input record
/// being processed (`emit.input`), which the host uses for provenance.
pub struct Context<'a> {
    params: &'a Params,
    emits: &'a mut Vec<Emit>,
    input: u32,
    key: OnceCell<Option<Vec<u8>>>,
}

impl<'a> Context<'a> {
    pub(crate) fn new(params: &'a Params, emits: &'a mut Vec<Emit>) -> Self {
        Context {
            params,
            emits,
            input: 0,
            key: OnceCell::new(),
        }
    }

    #[inline]
    pub(crate) fn start(&mut self, input: u32) {
        self.input = input;
        self.key.take();
    }

    /// Emit `record` on the main output.
    #[inline]
    pub fn emit(&mut self, record: Record) {
        self.emits.push(Emit {
            output: Output::Main,
            record,
            input: self.input,
        });
    }

    /// Emit `record` on the side output called `output` (consumed as
    /// `<operator>.<output>` in the pipeline file).
    pub fn emit_to(&mut self, output: &str, record: Record) {
        self.emits.push(Emit {
            output: Output::Side(output.to_owned()),
            record,
            input: self.input,
        });
    }

    /// The key of the current record (the one keyed state is scoped to), if it
    /// has one. Fetched from the host on first use for each record.
    pub fn key(&self) -> Option<&[u8]> {
        self.key.get_or_init(sys::current_key).as_deref()
    }

    /// The key of the current record as UTF-8, if it has one and it is UTF-8.
    pub fn key_str(&self) -> Option<&str> {
        self.key().and_then(|k| std::str::from_utf8(k).ok())
    }

    /// The operator's params.
    pub fn params(&self) -> &'a Params {
        self.params
    }

    /// Index of the current record in its input batch.
    pub fn input_index(&self) -> u32 {
        self.input
    }

    /// The event-time watermark as of the current record (largest event
    /// time before it upstream − out-of-orderness − 1 ms), `None` before the
    /// first. A record with `event_time <= watermark` is late. Any operator
    /// may ask; no timer handler needed (contract 0.1.3).
    pub fn watermark(&self) -> Option<i64> {
        match sys::record_watermark() {
            i64::MIN => None,
            w => Some(w),
        }
    }

    /// Where the current record came from: source, split and offset (a
    /// file's line number, a Kafka partition and offset), to report where a
    /// late or rejected record came from (contract 0.1.3).
    pub fn position(&self) -> Option<Position> {
        sys::record_position()
    }
}

/// Where a record came from (see [`Context::position`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    /// The source's name in the pipeline file.
    pub source: String,
    /// The split: file index, Kafka partition, generator split.
    pub split: u32,
    /// The offset in the split: 1-based line number, Kafka offset, sequence number.
    pub offset: u64,
}

//! Records, emits and batch results: the data that crosses the component boundary.
//!
//! These types have exactly the shape of the WIT types in `sluice:operator/types`,
//! so the generated bindings use them directly and a batch is never copied
//! between a "binding" type and a "user" type.

use serde::{de::DeserializeOwned, Serialize};

use crate::Error;

/// One record header: a name and opaque bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Header {
    /// Header name, for example `content-type`.
    pub name: String,
    /// Header value, uninterpreted by the host.
    pub value: Vec<u8>,
}

/// One record of a stream.
///
/// Build one with [`Record::new`] and the `with_*` helpers:
///
/// ```
/// use sluice_sdk::Record;
/// let r = Record::new("hello").with_key("user-7").with_event_time(1_700_000_000_000);
/// assert_eq!(r.key_str(), Some("user-7"));
/// assert_eq!(r.value_str(), Some("hello"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Record {
    /// Partitioning key. Keyed operators receive records routed by it, and
    /// keyed state is scoped to it.
    pub key: Option<Vec<u8>>,
    /// The payload, uninterpreted by the host.
    pub value: Vec<u8>,
    /// Event time in milliseconds since the Unix epoch, if the record has one.
    pub event_time: Option<i64>,
    /// Headers carried along with the record.
    pub headers: Vec<Header>,
}

impl Record {
    /// A record with this value and no key, event time or headers.
    pub fn new(value: impl Into<Vec<u8>>) -> Self {
        Record {
            key: None,
            value: value.into(),
            event_time: None,
            headers: Vec::new(),
        }
    }

    /// A record whose value is `value` serialized as JSON.
    pub fn from_json<T: Serialize + ?Sized>(value: &T) -> Result<Self, Error> {
        Ok(Record::new(serde_json::to_vec(value).map_err(|e| {
            Error::msg(format!("cannot encode record value as JSON: {e}"))
        })?))
    }

    /// This record with its key set to `key`.
    pub fn with_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// This record with no key.
    pub fn without_key(mut self) -> Self {
        self.key = None;
        self
    }

    /// This record with its value set to `value`.
    pub fn with_value(mut self, value: impl Into<Vec<u8>>) -> Self {
        self.value = value.into();
        self
    }

    /// This record with its value set to `value` serialized as JSON.
    pub fn with_json<T: Serialize + ?Sized>(mut self, value: &T) -> Result<Self, Error> {
        self.value = serde_json::to_vec(value)
            .map_err(|e| Error::msg(format!("cannot encode record value as JSON: {e}")))?;
        Ok(self)
    }

    /// This record with its event time (ms since the Unix epoch) set.
    pub fn with_event_time(mut self, event_time_ms: i64) -> Self {
        self.event_time = Some(event_time_ms);
        self
    }

    /// This record with one more header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push(Header {
            name: name.into(),
            value: value.into(),
        });
        self
    }

    /// The value of the first header called `name`, if any.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.value.as_slice())
    }

    /// The key as UTF-8, if there is a key and it is valid UTF-8.
    pub fn key_str(&self) -> Option<&str> {
        self.key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
    }

    /// The value as UTF-8, if it is valid UTF-8.
    pub fn value_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.value).ok()
    }

    /// The value parsed as JSON into `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.value)
            .map_err(|e| Error::msg(format!("record value is not the expected JSON: {e}")))
    }
}

/// Where an emitted record goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    /// The operator's main output.
    Main,
    /// A named side output, consumed as `<operator>.<name>` in the pipeline file.
    Side(String),
}

/// A record produced by an operator.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Emit {
    /// Which output the record goes to.
    pub output: Output,
    /// The record itself.
    pub record: Record,
    /// Index, in the input batch, of the record that produced this one.
    pub input: u32,
}

/// An input record the operator could not process.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RecordError {
    /// Index of the record in the input batch.
    pub input: u32,
    /// What went wrong, for a person to read.
    pub message: String,
}

/// What an operator returns for one batch: the emitted records and the
/// per-record errors.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct BatchResult {
    /// Records produced, in order.
    pub emits: Vec<Emit>,
    /// Records that failed; the rest of the batch counts as processed.
    pub errors: Vec<RecordError>,
}

impl BatchResult {
    /// The records emitted on the main output, in order.
    pub fn main(&self) -> Vec<&Record> {
        self.emits
            .iter()
            .filter(|e| e.output == Output::Main)
            .map(|e| &e.record)
            .collect()
    }

    /// The records emitted on the side output called `name`, in order.
    pub fn side(&self, name: &str) -> Vec<&Record> {
        self.emits
            .iter()
            .filter(|e| matches!(&e.output, Output::Side(s) if s == name))
            .map(|e| &e.record)
            .collect()
    }

    /// The values of the records on the main output, as UTF-8 (lossy). Handy in tests.
    pub fn main_values(&self) -> Vec<String> {
        self.main()
            .into_iter()
            .map(|r| String::from_utf8_lossy(&r.value).into_owned())
            .collect()
    }

    /// The error messages, in order.
    pub fn error_messages(&self) -> Vec<&str> {
        self.errors.iter().map(|e| e.message.as_str()).collect()
    }
}

/// What an operator instance learns when it starts (the WIT `init-context`).
#[doc(hidden)]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InitContext {
    /// The operator's name in the pipeline file.
    pub operator: String,
    /// Index of this parallel instance, from 0.
    pub subtask: u32,
    /// Number of parallel instances of this operator.
    pub parallelism: u32,
    /// The operator's `params` table as a JSON object.
    pub params: String,
}

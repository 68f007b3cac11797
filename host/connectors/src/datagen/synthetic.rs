//! The one synthetic source: a [`Dataset`]'s record sequence, bounded or
//! not, optionally rate limited. Every dataset is built by the same
//! constructor, [`Synthetic::new`], and checked by the same function,
//! [`records`].

use serde::de::DeserializeOwned;
use sluice_types::{ConnectorError, Record, Source};

use super::pacer::Pacer;

/// A synthetic record sequence that knows how much of it is left.
pub trait Sequence: Iterator<Item = Record> + Send {
    /// Records left, or `None` for an unbounded sequence.
    fn remaining(&self) -> Option<u64>;
}

/// The settings of one synthetic dataset (taxi trips, turbine readings,
/// clicks): what its `[[sources]]` table deserializes into, and how its
/// record sequence is made from them. The sequence depends only on the
/// settings (and the source's index, for positions), never on the machine.
pub trait Dataset: DeserializeOwned + Send + Sync + 'static {
    /// The `type` of its `[[sources]]` entries.
    const TYPE: &'static str;
    /// What `sluice validate` calls such a source.
    const DESCRIPTION: &'static str;
    /// Its record sequence.
    type Records: Sequence + 'static;

    /// Check the values that deserialization alone cannot. Messages start
    /// with the source type and name the key in backquotes.
    fn validate(&self) -> Result<(), ConnectorError>;

    /// Records per second, or `None` for as fast as they are consumed.
    fn rate(&self) -> Option<f64>;

    /// The sequence of the source at `source_index` in the pipeline (used
    /// only for [`Position::source`](sluice_types::Position::source)), for
    /// settings that [validate](Dataset::validate).
    fn sequence(&self, source_index: u16) -> Self::Records;
}

/// A synthetic source: a dataset's sequence, optionally rate limited.
pub struct Synthetic<S> {
    records: S,
    pacer: Option<Pacer>,
}

impl<S: Sequence> Synthetic<S> {
    /// The source of `config`'s dataset at `source_index` in the pipeline
    /// (used only for [`Position::source`](sluice_types::Position::source)),
    /// paced to its rate. Fails if the config does not
    /// [validate](Dataset::validate).
    pub fn new<D: Dataset<Records = S>>(
        config: &D,
        source_index: u16,
    ) -> Result<Self, ConnectorError> {
        config.validate()?;
        Ok(Synthetic {
            records: config.sequence(source_index),
            pacer: config.rate().map(Pacer::new),
        })
    }
}

/// The records a [`Synthetic`] source with this config produces, in order,
/// as fast as they are pulled (no rate limiting), ending where the source
/// ends. Useful to compute expected output in tests.
///
/// # Panics
///
/// If the config does not [validate](Dataset::validate).
pub fn records<D: Dataset>(config: &D, source_index: u16) -> D::Records {
    if let Err(e) = config.validate() {
        panic!("records of a `{}` source: {e}", D::TYPE);
    }
    config.sequence(source_index)
}

impl<S: Sequence> Source for Synthetic<S> {
    fn poll_batch(&mut self, max: usize) -> Result<Option<Vec<Record>>, ConnectorError> {
        let mut want = max as u64;
        if let Some(remaining) = self.records.remaining() {
            if remaining == 0 {
                return Ok(None);
            }
            want = want.min(remaining);
        }
        if want == 0 {
            return Ok(Some(Vec::new()));
        }
        let n = match &mut self.pacer {
            Some(pacer) => pacer.take(want),
            None => want,
        };
        Ok(Some(self.records.by_ref().take(n as usize).collect()))
    }

    /// Skipping ignores the rate limit.
    fn skip(&mut self, n: u64) -> Result<u64, ConnectorError> {
        Ok(self.records.by_ref().take(n as usize).count() as u64)
    }
}

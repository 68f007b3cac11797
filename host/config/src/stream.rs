//! Names of streams: a source `trips` produces the stream `trips`, an
//! operator `parse` its main output `parse` and its side outputs
//! `parse.<side>`.

/// Name of the side output that carries an operator's dead letters.
pub const DEAD_LETTER_OUTPUT: &str = "dead-letter";

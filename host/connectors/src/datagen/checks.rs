//! The config checks the event-time datasets (turbines, clicks) share. Each
//! message names the source type, the key and the fix.

use sluice_types::ConnectorError;

/// The config checks the event-time sources share. `source` names the
/// source type in messages.
pub(crate) fn check_common(
    source: &str,
    rate: Option<f64>,
    splits: u32,
    out_of_order_ms: i64,
    min_late_ms: i64,
    late_ratio: f64,
) -> Result<(), ConnectorError> {
    check_ratio(source, "late_ratio", late_ratio)?;
    if let Some(rate) = rate {
        if !(rate > 0.0 && rate.is_finite()) {
            return Err(ConnectorError::Config(format!(
                "{source}: `rate` is {rate}, but it must be a positive number of records per \
                 second; set e.g. `rate = 1000.0`, or leave it out to generate as fast as possible"
            )));
        }
    }
    if !(1..=MAX_COUNT as u32).contains(&splits) {
        return Err(ConnectorError::Config(format!(
            "{source}: `splits` is {splits}, but it must be between 1 and {MAX_COUNT}; set it to \
             the number of partitions to emulate, or leave it out for 1"
        )));
    }
    if !(0..min_late_ms).contains(&out_of_order_ms) {
        return Err(ConnectorError::Config(format!(
            "{source}: `out_of_order_ms` is {out_of_order_ms}, but it must be >= 0 and below \
             {min_late_ms} (the least delay of a late record), or on-time and late records \
             could not be told apart; set a smaller bound or leave it out for the default"
        )));
    }
    Ok(())
}

/// Fails unless `value` is in `[0, 1]`.
pub(crate) fn check_ratio(source: &str, name: &str, value: f64) -> Result<(), ConnectorError> {
    if (0.0..=1.0).contains(&value) {
        return Ok(());
    }
    Err(ConnectorError::Config(format!(
        "{source}: `{name}` is {value}, but it must be a share between 0 and 1 (e.g. 0.01 for \
         1%); set it to a value in that range or leave it out for the default"
    )))
}

/// Fails unless `1 <= value <= MAX_COUNT`.
pub(crate) fn check_count(
    source: &str,
    name: &str,
    value: u32,
    example: &str,
) -> Result<(), ConnectorError> {
    if (1..=MAX_COUNT as u32).contains(&value) {
        return Ok(());
    }
    Err(ConnectorError::Config(format!(
        "{source}: `{name}` is {value}, but it must be between 1 and {MAX_COUNT}; set e.g. \
         `{name} = {example}` or leave it out for the default"
    )))
}

/// Largest number of turbines, users or splits (each costs memory).
const MAX_COUNT: u64 = 1_000_000;

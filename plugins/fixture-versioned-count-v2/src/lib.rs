//! Fixture for hot swaps: a keyed counter whose outputs say which version
//! counted them. Per key it keeps a count (value state `count`) and emits
//! `<key> <count> v2 <input value>`. `fixture-versioned-count-v1` is the
//! same with `v1`: swapping one for the other under load must continue
//! every count where the other left it.

use sluice_sdk::{Context, Error, Record, ValueState};

/// The version this build tags its outputs with.
pub const VERSION: &str = "v2";

static COUNT: ValueState<u64> = ValueState::new("count");

/// Count the record for its key and tag the output.
#[sluice_sdk::process]
pub fn versioned_count(record: Record, ctx: &mut Context) -> Result<(), Error> {
    let count = COUNT.update(|n| n.unwrap_or(0) + 1)?;
    let key = String::from_utf8_lossy(record.key.as_deref().unwrap_or_default()).into_owned();
    let value = format!("{key} {count} {VERSION} {}", String::from_utf8_lossy(&record.value)).into_bytes();
    ctx.emit(Record { value, ..record });
    Ok(())
}

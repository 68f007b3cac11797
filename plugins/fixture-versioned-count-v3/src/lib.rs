//! Fixture for automatic rollback: `fixture-versioned-count-v1` tagged `v3`
//! that traps on every tenth record an instance sees (before counting it).

use std::sync::atomic::{AtomicU64, Ordering};

use sluice_sdk::{Context, Error, Record, ValueState};

static COUNT: ValueState<u64> = ValueState::new("count");
static SEEN: AtomicU64 = AtomicU64::new(0);

/// Count the record for its key, tagged `v3`; trap on every tenth.
#[sluice_sdk::process]
pub fn versioned_count(record: Record, ctx: &mut Context) -> Result<(), Error> {
    if SEEN.fetch_add(1, Ordering::Relaxed) % 10 == 9 {
        panic!("fixture-versioned-count-v3 traps on every tenth record");
    }
    let count = COUNT.update(|n| n.unwrap_or(0) + 1)?;
    let key = String::from_utf8_lossy(record.key.as_deref().unwrap_or_default()).into_owned();
    let value = format!("{key} {count} v3 {}", String::from_utf8_lossy(&record.value)).into_bytes();
    ctx.emit(Record { value, ..record });
    Ok(())
}

// Shared by fixture-versioned-count-v1 and -v2 (each sets `VERSION`).
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

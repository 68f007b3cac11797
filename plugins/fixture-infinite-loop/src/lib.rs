//! Fixture (hostile plugin): a stateless map that passes records through
//! unchanged, except that a value containing `loop` makes it spin forever in
//! a busy loop the optimizer cannot remove.
//!
//! It exists for the host's hostile-plugin tests: the host must interrupt a
//! runaway operator (fuel / epoch deadline) and hand the trap to the error
//! policy instead of hanging the pipeline.

use sluice_sdk::{Error, Record};

/// Pass `record` through; never return on a value containing `loop`.
#[sluice_sdk::map]
pub fn loop_or_pass(record: Record) -> Result<Record, Error> {
    if String::from_utf8_lossy(&record.value).contains("loop") {
        spin_forever();
    }
    Ok(record)
}

/// Busy-wait forever. `black_box` makes the counter observable, so the loop
/// body cannot be folded away.
#[inline(never)]
fn spin_forever() -> ! {
    let mut counter: u64 = 0;
    loop {
        std::hint::black_box(&mut counter);
        counter = counter.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use sluice_sdk::harness;

    // Only the pass-through path: the `loop` path never returns.
    #[test]
    fn passes_records_through() {
        harness!().assert_passes_through("lo op");
    }
}

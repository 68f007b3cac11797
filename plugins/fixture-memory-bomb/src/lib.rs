//! Fixture (hostile plugin): a stateless map that passes records through
//! unchanged, except that a value containing `bomb` makes it allocate 1 MiB
//! chunks, each filled with a non-zero byte (so every page is touched), and
//! keep them all alive, forever.
//!
//! It exists for the host's hostile-plugin tests: the host caps each
//! instance's linear memory, so `memory.grow` eventually fails, the
//! allocator reports failure and Rust aborts, which is a trap. The host must
//! survive it (no host OOM) and hand the trap to the error policy.

use sluice_sdk::{Error, Record};

/// Size of one allocation.
const CHUNK: usize = 1 << 20;

/// Pass `record` through; exhaust memory on a value containing `bomb`.
#[sluice_sdk::map]
pub fn bomb_or_pass(record: Record) -> Result<Record, Error> {
    if String::from_utf8_lossy(&record.value).contains("bomb") {
        explode();
    }
    Ok(record)
}

/// Allocate and touch memory until allocation fails (which aborts: a trap).
#[inline(never)]
fn explode() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![0xA5u8; CHUNK]);
        // Keep every chunk observably alive so no allocation is elided.
        std::hint::black_box(&mut hoard);
    }
}

#[cfg(test)]
mod tests {
    use sluice_sdk::harness;

    // Only the pass-through path: the `bomb` path would exhaust native memory.
    #[test]
    fn passes_records_through() {
        harness!().assert_passes_through("bo mb");
    }
}

//! Fixture (hostile plugin): a stateless map that passes records through
//! unchanged, except that a value containing `recurse` starts a non-tail
//! recursion with no bound on its depth.
//!
//! It exists for the host's hostile-plugin tests: the recursion must exhaust
//! the wasm call stack (`limits.stack_kb`) and trap ("call stack
//! exhausted"), which the host must survive and hand to the error policy.
//!
//! The recursion keeps nothing in linear memory, so it is the wasm stack that
//! runs out, whatever `stack_kb` is, and not Rust's shadow stack (1 MiB in
//! linear memory, whose overflow would be an out-of-bounds access trap
//! instead). To keep the optimizer from turning it into a loop or removing
//! it, each level calls the next through a function pointer hidden behind
//! `black_box` and does work on the result after the call.

use sluice_sdk::{Error, Record};

/// Pass `record` through; recurse without bound on a value containing `recurse`.
#[sluice_sdk::map]
pub fn recurse_or_pass(record: Record) -> Result<Record, Error> {
    if String::from_utf8_lossy(&record.value).contains("recurse") {
        let me = std::hint::black_box(Dive(dive));
        let depth = (me.0)(me, 0);
        // Unreachable in practice; returning it keeps the call observable.
        return Ok(record.with_value(depth.to_string()));
    }
    Ok(record)
}

/// The recursive function, passed to itself so every call is indirect.
#[derive(Clone, Copy)]
struct Dive(fn(Dive, u64) -> u64);

/// One level of the recursion. The `u64::MAX` exit is never reached; it only
/// keeps this from being recursion without any exit.
#[inline(never)]
fn dive(me: Dive, depth: u64) -> u64 {
    if depth == u64::MAX {
        return 0;
    }
    // Work on the result after the call: not a tail call.
    (me.0)(me, depth + 1).wrapping_mul(depth | 1).rotate_left(7)
}

#[cfg(test)]
mod tests {
    use sluice_sdk::harness;

    // Only the pass-through path: the `recurse` path overflows the stack.
    #[test]
    fn passes_records_through() {
        harness!().assert_passes_through("re curse");
    }
}

//! Fixture: a WebAssembly component that exports nothing of Sluice (only a
//! plain core function). The host must refuse to load it as an operator, with
//! a message that says the `sluice:operator/processor` export is missing.

/// Adds two numbers; the only thing this component does.
#[no_mangle]
pub extern "C" fn add(a: i32, b: i32) -> i32 {
    a.wrapping_add(b)
}

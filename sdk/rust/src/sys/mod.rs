//! The host imports, behind one small internal API.
//!
//! On `wasm32` these call the real host through the generated bindings; on
//! every other target they go to an in-memory stub ([`native`]) so operators
//! can be unit-tested with `cargo test` (see [`crate::testing`]).

#[cfg(target_arch = "wasm32")]
mod wasm;
#[cfg(target_arch = "wasm32")]
pub(crate) use wasm::*;

#[cfg(not(target_arch = "wasm32"))]
pub(crate) mod native;
#[cfg(not(target_arch = "wasm32"))]
pub(crate) use native::*;

/// Caches which host resource a state or counter handle uses, so that a handle
/// in a `static` resolves its name once. Unused natively.
pub(crate) struct Slot(#[allow(dead_code)] core::sync::atomic::AtomicU32);

impl Slot {
    pub(crate) const fn new() -> Slot {
        Slot(core::sync::atomic::AtomicU32::new(u32::MAX))
    }
}

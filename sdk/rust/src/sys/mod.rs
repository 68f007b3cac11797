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

/// What identifies a keyed state in the host: its name and its TTL (a state
/// declared with a TTL opens the host resource with `with-ttl`), plus the
/// cached resource slot.
pub(crate) struct StateId {
    pub(crate) name: &'static str,
    pub(crate) ttl: Option<Ttl>,
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    pub(crate) slot: Slot,
}

/// A state's time to live, and how to open a host resource with it.
///
/// The opener is a function pointer chosen by the constructor (value or map
/// state), so the `with-ttl` host functions are only linked into, and
/// imported by, components that declare a state with a TTL.
#[derive(Clone, Copy)]
pub(crate) struct Ttl {
    pub(crate) ms: u64,
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    pub(crate) open: TtlOpen,
}

impl StateId {
    pub(crate) const fn new(name: &'static str, ttl: Option<Ttl>) -> StateId {
        StateId {
            name,
            ttl,
            slot: Slot::new(),
        }
    }

    pub(crate) const fn ttl_ms(&self) -> Option<u64> {
        match self.ttl {
            Some(ttl) => Some(ttl.ms),
            None => None,
        }
    }
}

/// Opens a state resource with a TTL (nothing to open natively).
#[cfg(not(target_arch = "wasm32"))]
#[derive(Clone, Copy)]
pub(crate) struct TtlOpen;

#[cfg(not(target_arch = "wasm32"))]
pub(crate) const VALUE_TTL: TtlOpen = TtlOpen;
#[cfg(not(target_arch = "wasm32"))]
pub(crate) const MAP_TTL: TtlOpen = TtlOpen;

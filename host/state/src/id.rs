//! What names a declared state: its [`StateKind`] and its [`StateId`], whose
//! high bit says whether its values carry an expiry (see the crate docs,
//! "Time-to-live").

/// The high bit of a state id: set for states with a TTL.
pub(crate) const TTL_BIT: u16 = 0x8000;

/// The largest state id counter value (ids are 15 bits plus the TTL bit).
pub(crate) const MAX_STATE_ID: u16 = 0x7FFF;

/// The kinds of keyed state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateKind {
    /// One value per key.
    Value,
    /// A map per key.
    Map,
}

impl std::fmt::Display for StateKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StateKind::Value => "value",
            StateKind::Map => "map",
        })
    }
}

/// A handle to a declared state, valid within one [`OperatorState`](crate::OperatorState).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StateId(pub(crate) u16);

impl StateId {
    /// Whether the state has a TTL (its values carry an expiry).
    #[inline]
    pub fn has_ttl(self) -> bool {
        self.0 & TTL_BIT != 0
    }
}

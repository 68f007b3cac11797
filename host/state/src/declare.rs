//! Declaring the states of an operator (kind, id, TTL), and what a TTL
//! needs at run time: "now" (read once per guest call) and the expiry of a
//! value written now.

use std::time::Duration;

use crate::cache::OperatorState;
use crate::encoding::live;
use crate::error::StateError;
use crate::id::{StateId, StateKind, TTL_BIT};

impl OperatorState {
    /// Declare (or look up) the state `name` of kind `kind`, with the
    /// operator's default TTL ([`set_default_ttl`](Self::set_default_ttl)),
    /// unless `name` starts with `'\0'` (host-internal state, which never
    /// gets the default TTL).
    pub fn declare(&mut self, name: &str, kind: StateKind) -> Result<StateId, StateError> {
        let ttl = if name.starts_with('\0') {
            None
        } else {
            self.default_ttl
        };
        self.declare_with_ttl(name, kind, ttl)
    }

    /// Declare (or look up) the state `name` of kind `kind`, whose values
    /// expire `ttl` after their last write (`None`: never). Whether a state
    /// has a TTL cannot change once it is declared
    /// ([`StateError::TtlMismatch`]); the duration can, and applies to later
    /// writes. A zero TTL makes every written value expired at once.
    pub fn declare_with_ttl(
        &mut self,
        name: &str,
        kind: StateKind,
        ttl: Option<Duration>,
    ) -> Result<StateId, StateError> {
        let id = match self.states.get(name) {
            Some((id, k)) => {
                if *k != kind {
                    return Err(self.mismatch(name, *k, kind));
                }
                *id
            }
            None => {
                let (id, stored) = self.backend.id(
                    &format!("state/{}/{name}", self.op),
                    &format!("state-next/{}", self.op),
                    Some((kind, ttl.is_some())),
                )?;
                let (stored_kind, stored_ttl) = stored.unwrap_or((kind as u8, ttl.is_some()));
                let stored_kind = match stored_kind {
                    1 => StateKind::Map,
                    _ => StateKind::Value,
                };
                if stored_kind != kind {
                    return Err(self.mismatch(name, stored_kind, kind));
                }
                let id = StateId(if stored_ttl { id | TTL_BIT } else { id });
                self.states.insert(name.to_string(), (id, kind));
                if stored_ttl {
                    self.backend.start_cleaner();
                }
                id
            }
        };
        if id.has_ttl() != ttl.is_some() {
            return Err(StateError::TtlMismatch {
                operator: self.name.clone(),
                name: name.to_string(),
                existing_ttl: id.has_ttl(),
            });
        }
        if let Some(ttl) = ttl {
            let index = usize::from(id.0 & !TTL_BIT);
            if self.ttls.len() <= index {
                self.ttls.resize(index + 1, 0);
            }
            self.ttls[index] = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        }
        Ok(id)
    }

    /// The TTL that [`declare`](Self::declare) gives to states declared from
    /// now on (the pipeline's `state_ttl`). `None` (the default): no TTL.
    pub fn set_default_ttl(&mut self, ttl: Option<Duration>) {
        self.default_ttl = ttl;
    }

    /// The TTL that [`declare`](Self::declare) gives to new states.
    pub fn default_ttl(&self) -> Option<Duration> {
        self.default_ttl
    }

    /// Whether any state of this operator has a TTL.
    #[inline]
    pub(crate) fn has_ttl(&self) -> bool {
        !self.ttls.is_empty()
    }

    /// Now, in ms: read once per guest call, on every use outside one.
    #[inline]
    pub(crate) fn now(&mut self) -> i64 {
        if !self.in_call {
            return self.clock.now_ms();
        }
        match self.call_now {
            Some(now) => now,
            None => {
                let now = self.clock.now_ms();
                self.call_now = Some(now);
                now
            }
        }
    }

    /// The expiry for a value of `state` written now (`None`: no TTL).
    #[inline]
    pub(crate) fn expiry(&mut self, state: StateId) -> Option<i64> {
        if !state.has_ttl() {
            return None;
        }
        let ttl = self.ttls.get(usize::from(state.0 & !TTL_BIT)).copied();
        debug_assert!(
            ttl.is_some(),
            "state id {state:?} was not declared on this operator state"
        );
        // An id not declared here (a misuse): keep the value rather than lose it.
        Some(ttl.map_or(i64::MAX, |ttl| self.now().saturating_add(ttl)))
    }

    /// [`read`](Self::read) for a TTL state: the payload if not expired.
    pub(crate) fn read_live(&mut self) -> Result<Option<&[u8]>, StateError> {
        let now = self.now();
        Ok(self.read()?.and_then(|v| live(v, now)))
    }

    fn mismatch(&self, name: &str, existing: StateKind, requested: StateKind) -> StateError {
        StateError::KindMismatch {
            operator: self.name.clone(),
            name: name.to_string(),
            existing,
            requested,
        }
    }
}

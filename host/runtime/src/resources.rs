//! What the host keeps behind each resource of the contract: a handle a guest
//! holds is an index into its store's resource table, whose entry is one of
//! these.

use sluice_state::StateId;

/// Host-side handle of a `value-state` resource.
pub struct ValueStateHandle(pub(crate) StateId);
/// Host-side handle of a `map-state` resource.
pub struct MapStateHandle(pub(crate) StateId);
/// Host-side handle of a `counter` resource.
pub struct CounterHandle(pub(crate) prometheus_client::metrics::counter::Counter);

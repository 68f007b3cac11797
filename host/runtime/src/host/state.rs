//! `sluice:operator/state`: keyed value and map state, scoped to the operator
//! and to the current record's key and key group, kept in the subtask's
//! [`OperatorState`] (in the host, never in guest memory: DESIGN.md,
//! decision 1).

use std::time::Duration;

use sluice_state::{OperatorState, StateId, StateKind};
use wasmtime::component::Resource;

use crate::bindings::sluice::operator as api;
use crate::resources::{MapStateHandle, ValueStateHandle};
use crate::store::StoreData;

impl StoreData {
    /// Run `f` on the keyed state of the current record's key (and key
    /// group), or fail the call if there is none.
    fn with_state<R>(
        &mut self,
        f: impl FnOnce(&mut OperatorState, u16, &[u8]) -> Result<R, sluice_state::StateError>,
    ) -> wasmtime::Result<R> {
        let StoreData {
            state,
            keys,
            key_bytes,
            current,
            operator,
            ..
        } = self;
        let Some(state) = state else {
            wasmtime::bail!(
                "operator `{operator}` used keyed state but is not keyed; set key_by = \"key\" on it in the pipeline"
            );
        };
        match keys.get(*current) {
            Some(Some((kg, start, len))) => {
                let key = &key_bytes[*start as usize..(*start + *len) as usize];
                f(state, *kg, key).map_err(|e| wasmtime::format_err!("{e}"))
            }
            Some(None) => wasmtime::bail!("keyed state accessed for a record without a key"),
            None => wasmtime::bail!("keyed state accessed outside `process` (no current record)"),
        }
    }

    /// Declare a guest's state; names starting with NUL are the host's own.
    fn declare(
        &mut self,
        name: &str,
        kind: StateKind,
        ttl: Option<Duration>,
    ) -> wasmtime::Result<StateId> {
        if name.starts_with('\0') {
            wasmtime::bail!(
                "state names may not start with a NUL character (reserved for the host)"
            );
        }
        match &mut self.state {
            Some(s) => match ttl {
                Some(ttl) => s.declare_with_ttl(name, kind, Some(ttl)),
                None => s.declare(name, kind),
            }
            .map_err(|e| wasmtime::format_err!("{e}")),
            None => wasmtime::bail!(
                "operator `{}` declared {kind} state `{name}` but is not keyed; set key_by = \"key\" on it in the pipeline",
                self.operator
            ),
        }
    }
}

impl api::state::Host for StoreData {}

impl api::state::HostValueState for StoreData {
    fn new(&mut self, name: String) -> wasmtime::Result<Resource<ValueStateHandle>> {
        let id = self.declare(&name, StateKind::Value, None)?;
        Ok(self.table.push(ValueStateHandle(id))?)
    }

    fn with_ttl(
        &mut self,
        name: String,
        ttl_ms: u64,
    ) -> wasmtime::Result<Resource<ValueStateHandle>> {
        let id = self.declare(&name, StateKind::Value, Some(ttl(ttl_ms)?))?;
        Ok(self.table.push(ValueStateHandle(id))?)
    }

    fn get(&mut self, this: Resource<ValueStateHandle>) -> wasmtime::Result<Option<Vec<u8>>> {
        let id = self.table.get(&this)?.0;
        self.with_state(|s, kg, key| Ok(s.get(kg, id, key)?.map(<[u8]>::to_vec)))
    }

    fn set(&mut self, this: Resource<ValueStateHandle>, value: Vec<u8>) -> wasmtime::Result<()> {
        let id = self.table.get(&this)?.0;
        self.with_state(|s, kg, key| {
            s.put(kg, id, key, &value);
            Ok(())
        })
    }

    fn clear(&mut self, this: Resource<ValueStateHandle>) -> wasmtime::Result<()> {
        let id = self.table.get(&this)?.0;
        self.with_state(|s, kg, key| {
            s.delete(kg, id, key);
            Ok(())
        })
    }

    fn drop(&mut self, this: Resource<ValueStateHandle>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl api::state::HostMapState for StoreData {
    fn new(&mut self, name: String) -> wasmtime::Result<Resource<MapStateHandle>> {
        let id = self.declare(&name, StateKind::Map, None)?;
        Ok(self.table.push(MapStateHandle(id))?)
    }

    fn with_ttl(
        &mut self,
        name: String,
        ttl_ms: u64,
    ) -> wasmtime::Result<Resource<MapStateHandle>> {
        let id = self.declare(&name, StateKind::Map, Some(ttl(ttl_ms)?))?;
        Ok(self.table.push(MapStateHandle(id))?)
    }

    fn get(
        &mut self,
        this: Resource<MapStateHandle>,
        map_key: Vec<u8>,
    ) -> wasmtime::Result<Option<Vec<u8>>> {
        let id = self.table.get(&this)?.0;
        self.with_state(|s, kg, key| Ok(s.map_get(kg, id, key, &map_key)?.map(<[u8]>::to_vec)))
    }

    fn set(
        &mut self,
        this: Resource<MapStateHandle>,
        map_key: Vec<u8>,
        value: Vec<u8>,
    ) -> wasmtime::Result<()> {
        let id = self.table.get(&this)?.0;
        self.with_state(|s, kg, key| {
            s.map_put(kg, id, key, &map_key, &value);
            Ok(())
        })
    }

    fn remove(&mut self, this: Resource<MapStateHandle>, map_key: Vec<u8>) -> wasmtime::Result<()> {
        let id = self.table.get(&this)?.0;
        self.with_state(|s, kg, key| {
            s.map_remove(kg, id, key, &map_key);
            Ok(())
        })
    }

    fn entries(
        &mut self,
        this: Resource<MapStateHandle>,
    ) -> wasmtime::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let id = self.table.get(&this)?.0;
        self.with_state(|s, kg, key| s.map_entries(kg, id, key))
    }

    fn clear(&mut self, this: Resource<MapStateHandle>) -> wasmtime::Result<()> {
        let id = self.table.get(&this)?.0;
        self.with_state(|s, kg, key| s.map_clear(kg, id, key))
    }

    fn drop(&mut self, this: Resource<MapStateHandle>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

/// A guest-given TTL: at least 1 ms, at most about 292 million years.
fn ttl(ttl_ms: u64) -> wasmtime::Result<Duration> {
    if ttl_ms == 0 || ttl_ms > i64::MAX as u64 / 2 {
        wasmtime::bail!(
            "state TTL of {ttl_ms} ms is out of range (1 ms ..= {} ms)",
            i64::MAX / 2
        );
    }
    Ok(Duration::from_millis(ttl_ms))
}

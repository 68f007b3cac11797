//! `sluice:operator/metrics`: guest-defined counters, registered in the
//! pipeline's metrics under the operator's name. The increments of a held
//! call count only once it is kept.

use wasmtime::component::Resource;

use crate::bindings::sluice::operator as api;
use crate::resources::CounterHandle;
use crate::store::StoreData;

impl api::metrics::Host for StoreData {}

impl api::metrics::HostCounter for StoreData {
    fn new(&mut self, name: String) -> wasmtime::Result<Resource<CounterHandle>> {
        let c = self.metrics.guest_counter(&self.operator, &name);
        Ok(self.table.push(CounterHandle(c))?)
    }

    fn add(&mut self, this: Resource<CounterHandle>, delta: u64) -> wasmtime::Result<()> {
        let counter = &self.table.get(&this)?.0;
        if self.hold {
            // A held call may be undone: count only if it is kept.
            self.held_counts.push((counter.clone(), delta));
        } else {
            counter.inc_by(delta);
        }
        Ok(())
    }

    fn drop(&mut self, this: Resource<CounterHandle>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

//! `sluice:operator/context`: which record of the batch the guest is
//! working on, so that keyed state, timers and `record-info` apply to its key.

use crate::bindings::sluice::operator as api;
use crate::store::StoreData;

impl api::context::Host for StoreData {
    fn set_current(&mut self, index: u32) -> wasmtime::Result<()> {
        if index as usize >= self.keys.len() {
            wasmtime::bail!(
                "set-current({index}) is outside the batch of {} records",
                self.keys.len()
            );
        }
        self.current = index as usize;
        Ok(())
    }

    fn current_key(&mut self) -> wasmtime::Result<Option<Vec<u8>>> {
        let key = self.keys.get(self.current).copied().flatten();
        Ok(key
            .map(|(_, start, len)| self.key_bytes[start as usize..(start + len) as usize].to_vec()))
    }
}

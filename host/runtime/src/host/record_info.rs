//! `sluice:operator/record-info` (since 0.1.3): the watermark and source
//! position as of the current record.

use crate::bindings::sluice::operator as api;
use crate::bindings::wit;
use crate::store::StoreData;

impl api::record_info::Host for StoreData {
    fn current_watermark(&mut self) -> wasmtime::Result<i64> {
        Ok(self
            .record_watermarks
            .get(self.current)
            .copied()
            .unwrap_or(self.watermark))
    }

    fn current_position(&mut self) -> wasmtime::Result<Option<wit::SourcePosition>> {
        let Some(p) = self.positions.get(self.current).copied().flatten() else {
            return Ok(None);
        };
        let source = self
            .sources
            .get(p.source as usize)
            .cloned()
            .unwrap_or_else(|| format!("#{}", p.source));
        Ok(Some(wit::SourcePosition {
            source,
            split: p.split,
            offset: p.offset,
        }))
    }
}

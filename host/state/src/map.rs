//! Map state: a map per key, each entry a storage key of its own (the map
//! key appended to the key), listed by merging RocksDB with the cache.

use crate::cache::OperatorState;
use crate::encoding::{payload_at, prefix_end, Stored};
use crate::error::StateError;
use crate::id::StateId;

/// One entry of a map state: its user key and its value.
pub type MapEntry = (Vec<u8>, Vec<u8>);

impl OperatorState {
    /// The value under `map_key` in map `state` of `key`; `None` if there is
    /// none or it has expired (entries of a map expire one by one).
    pub fn map_get(
        &mut self,
        kg: u16,
        state: StateId,
        key: &[u8],
        map_key: &[u8],
    ) -> Result<Option<&[u8]>, StateError> {
        self.key(kg, state, key, Some(map_key));
        if state.has_ttl() {
            return self.read_live();
        }
        self.read()
    }

    /// Set `map_key` in map `state` of `key` (for a TTL state: expiring a TTL
    /// from now).
    pub fn map_put(&mut self, kg: u16, state: StateId, key: &[u8], map_key: &[u8], value: &[u8]) {
        self.key(kg, state, key, Some(map_key));
        let expires = self.expiry(state);
        self.write(Some(Stored {
            expires,
            payload: value,
        }));
    }

    /// Remove `map_key` from map `state` of `key`.
    pub fn map_remove(&mut self, kg: u16, state: StateId, key: &[u8], map_key: &[u8]) {
        self.key(kg, state, key, Some(map_key));
        self.write(None);
    }

    /// All entries of map `state` of `key` that have not expired, ordered by
    /// map key. Merges RocksDB with the cache, so it costs a scan of the
    /// cache: use it off the hot path.
    pub fn map_entries(
        &mut self,
        kg: u16,
        state: StateId,
        key: &[u8],
    ) -> Result<Vec<MapEntry>, StateError> {
        // The payload of a stored value, if it has not expired.
        let now = if state.has_ttl() {
            Some(self.now())
        } else {
            None
        };
        self.key(kg, state, key, None);
        let prefix = self.scratch.clone();
        let mut entries = std::collections::BTreeMap::new();
        let db = &self.backend.inner.db;
        // An upper bound keeps the seek from wading through the tombstones
        // of other keys past the prefix.
        let mut opts = rocksdb::ReadOptions::default();
        if let Some(end) = prefix_end(&prefix) {
            opts.set_iterate_upper_bound(end);
        }
        let mut it = db.raw_iterator_opt(opts);
        it.seek(&prefix);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(&prefix) {
                break;
            }
            if let Some(v) = payload_at(v, now) {
                entries.insert(k[prefix.len()..].to_vec(), v.to_vec());
            }
            it.next();
        }
        it.status().map_err(|e| self.backend.err(e))?;
        let range = (
            std::ops::Bound::Excluded(prefix.as_slice()),
            std::ops::Bound::Unbounded,
        );
        for k in self.map_index.range::<[u8], _>(range) {
            if !k.starts_with(&prefix) {
                break;
            }
            let Some(slot) = self.cache.get(k) else {
                continue;
            };
            // The cache is newer than RocksDB: an expired value there
            // hides whatever RocksDB has.
            match slot.value.as_deref().and_then(|v| payload_at(v, now)) {
                Some(v) => entries.insert(k[prefix.len()..].to_vec(), v.to_vec()),
                None => entries.remove(&k[prefix.len()..]),
            };
        }
        Ok(entries.into_iter().collect())
    }

    /// Remove every entry of map `state` of `key`.
    pub fn map_clear(&mut self, kg: u16, state: StateId, key: &[u8]) -> Result<(), StateError> {
        for (map_key, _) in self.map_entries(kg, state, key)? {
            self.map_remove(kg, state, key, &map_key);
        }
        Ok(())
    }
}

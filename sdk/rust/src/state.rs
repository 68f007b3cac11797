//! Typed keyed state, held by the host.
//!
//! **State lives in the host, not in the guest.** Every read and write goes to
//! the Sluice host, which keeps it in RocksDB behind a write-back cache and
//! includes it in checkpoints. It is scoped to the operator and to the key of
//! the record being processed, survives a swap of the plugin to a new version
//! and a restart of the process, and is restored exactly with the checkpoint.
//! Anything you keep in guest memory (statics, `thread_local!`, caches)
//! survives **neither** a swap nor a restart: use it only for caches you can
//! rebuild.
//!
//! Values are encoded with [`postcard`], so a `T` must implement serde's
//! `Serialize` and `DeserializeOwned`. If you change `T` in a new plugin
//! version, the new version must still decode what the old one wrote (add
//! fields only in ways postcard can read, or use a new state name).
//!
//! Keyed state needs a keyed operator (`key_by` in the pipeline): the host
//! traps if a record has no key. Handles are cheap: declare them in a `static`
//! (recommended) or create them per call; either way the host resource is
//! opened once per name and instance.
//!
//! ```
//! use sluice_sdk::{MapState, ValueState};
//! static COUNT: ValueState<u64> = ValueState::new("count");
//! static LAST_SEEN: MapState<String, i64> = MapState::new("last-seen");
//! ```

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;

use serde::{de::DeserializeOwned, Serialize};

use crate::sys::{self, Slot};
use crate::Error;

thread_local! {
    /// Scratch buffers for encoding, so a state write does not allocate.
    static SCRATCH: RefCell<(Vec<u8>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

fn encode_into<T: Serialize + ?Sized>(
    buf: &mut Vec<u8>,
    value: &T,
    what: &str,
    name: &str,
) -> Result<(), Error> {
    buf.clear();
    let out = postcard::to_extend(value, std::mem::take(buf))
        .map_err(|e| Error::msg(format!("{what} `{name}`: cannot encode: {e}")))?;
    *buf = out;
    Ok(())
}

fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str, name: &str) -> Result<T, Error> {
    postcard::from_bytes(bytes).map_err(|e| {
        Error::msg(format!(
            "{what} `{name}`: cannot decode the stored bytes as {}: {e}",
            std::any::type_name::<T>()
        ))
    })
}

/// One value of type `T` per key.
///
/// ```no_run
/// use sluice_sdk::{Error, ValueState};
/// static COUNT: ValueState<u64> = ValueState::new("count");
/// fn on_record() -> Result<u64, Error> {
///     COUNT.update(|old| old.unwrap_or(0) + 1)
/// }
/// ```
pub struct ValueState<T> {
    name: &'static str,
    slot: Slot,
    _type: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> ValueState<T> {
    /// Declare the value state called `name` (the same name reopens the same state).
    pub const fn new(name: &'static str) -> Self {
        ValueState {
            name,
            slot: Slot::new(),
            _type: PhantomData,
        }
    }

    /// The state's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The current key's value, if set.
    pub fn get(&self) -> Result<Option<T>, Error> {
        match sys::value_get(self.name, &self.slot) {
            Some(bytes) => decode(&bytes, "value state", self.name).map(Some),
            None => Ok(None),
        }
    }

    /// Set the current key's value.
    pub fn set(&self, value: &T) -> Result<(), Error> {
        SCRATCH.with_borrow_mut(|(buf, _)| {
            encode_into(buf, value, "value state", self.name)?;
            sys::value_set(self.name, &self.slot, buf);
            Ok(())
        })
    }

    /// Remove the current key's value.
    pub fn clear(&self) {
        sys::value_clear(self.name, &self.slot)
    }

    /// Replace the current key's value with `f(old)` and return the new value.
    pub fn update(&self, f: impl FnOnce(Option<T>) -> T) -> Result<T, Error> {
        let new = f(self.get()?);
        self.set(&new)?;
        Ok(new)
    }
}

impl<T> fmt::Debug for ValueState<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValueState")
            .field("name", &self.name)
            .finish()
    }
}

/// A map from `K` to `V` per key.
///
/// Map keys are compared and ordered by their postcard encoding, so
/// [`MapState::entries`] is ordered by encoded bytes (for strings and byte
/// vectors: by length first), not by `K`'s `Ord`.
pub struct MapState<K, V> {
    name: &'static str,
    slot: Slot,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> MapState<K, V> {
    /// Declare the map state called `name` (the same name reopens the same state).
    pub const fn new(name: &'static str) -> Self {
        MapState {
            name,
            slot: Slot::new(),
            _types: PhantomData,
        }
    }

    /// The state's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The value under `key` in the current key's map, if set.
    pub fn get(&self, key: &K) -> Result<Option<V>, Error> {
        let bytes = SCRATCH.with_borrow_mut(|(kbuf, _)| {
            encode_into(kbuf, key, "map state", self.name)?;
            Ok::<_, Error>(sys::map_get(self.name, &self.slot, kbuf))
        })?;
        match bytes {
            Some(bytes) => decode(&bytes, "map state", self.name).map(Some),
            None => Ok(None),
        }
    }

    /// Whether `key` is set in the current key's map.
    pub fn contains_key(&self, key: &K) -> Result<bool, Error> {
        SCRATCH.with_borrow_mut(|(kbuf, _)| {
            encode_into(kbuf, key, "map state", self.name)?;
            Ok(sys::map_get(self.name, &self.slot, kbuf).is_some())
        })
    }

    /// Set `key` to `value` in the current key's map.
    pub fn insert(&self, key: &K, value: &V) -> Result<(), Error> {
        SCRATCH.with_borrow_mut(|(kbuf, vbuf)| {
            encode_into(kbuf, key, "map state", self.name)?;
            encode_into(vbuf, value, "map state", self.name)?;
            sys::map_set(self.name, &self.slot, kbuf, vbuf);
            Ok(())
        })
    }

    /// Remove `key` from the current key's map.
    pub fn remove(&self, key: &K) -> Result<(), Error> {
        SCRATCH.with_borrow_mut(|(kbuf, _)| {
            encode_into(kbuf, key, "map state", self.name)?;
            sys::map_remove(self.name, &self.slot, kbuf);
            Ok(())
        })
    }

    /// All entries of the current key's map, ordered by encoded map key.
    pub fn entries(&self) -> Result<Vec<(K, V)>, Error> {
        sys::map_entries(self.name, &self.slot)
            .into_iter()
            .map(|(k, v)| {
                Ok((
                    decode(&k, "map state", self.name)?,
                    decode(&v, "map state", self.name)?,
                ))
            })
            .collect()
    }

    /// Remove every entry of the current key's map.
    pub fn clear(&self) {
        sys::map_clear(self.name, &self.slot)
    }
}

impl<K, V> fmt::Debug for MapState<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapState")
            .field("name", &self.name)
            .finish()
    }
}

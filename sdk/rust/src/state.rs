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
//!
//! # Time to live
//!
//! [`ValueState::with_ttl`] and [`MapState::with_ttl`] declare a state whose
//! entries expire a fixed time after they were last written (each map entry
//! on its own). The host never returns an expired entry and removes it from
//! RocksDB in the background; the clock is the host's processing time. A
//! pipeline's `state_ttl` applies to states declared without a TTL. The TTL is
//! whole milliseconds (a `Duration` is rounded down).
//!
//! ```
//! use std::time::Duration;
//! use sluice_sdk::{MapState, ValueState};
//! static SESSION: ValueState<String> = ValueState::with_ttl("session", Duration::from_secs(30 * 60));
//! static RECENT: MapState<String, u32> = MapState::with_ttl("recent", Duration::from_secs(60));
//! ```
//!
//! # Handles built at run time
//!
//! The constructors are `const fn`s so handles can live in `static`s, but they
//! work just as well at run time, which is what a TTL taken from the params
//! needs. Keep such a handle in your params type, built by serde from the raw
//! params (`#[serde(from = ...)]`), and it reaches your function as `&P`:
//!
//! ```
//! use std::time::Duration;
//! use serde::Deserialize;
//! use sluice_sdk::{Context, Error, Record, ValueState};
//!
//! #[derive(Deserialize)]
//! struct Raw { ttl_ms: u64 }
//!
//! #[derive(Deserialize)]
//! #[serde(from = "Raw")]
//! struct Config { last: ValueState<String> }
//!
//! impl From<Raw> for Config {
//!     fn from(raw: Raw) -> Config {
//!         Config { last: ValueState::with_ttl("last", Duration::from_millis(raw.ttl_ms)) }
//!     }
//! }
//!
//! #[sluice_sdk::process(params = Config)]
//! fn remember(record: Record, ctx: &mut Context, config: &Config) -> Result<(), Error> {
//!     let previous = config.last.get()?.unwrap_or_default();
//!     config.last.set(&String::from_utf8_lossy(&record.value).into_owned())?;
//!     ctx.emit(record.with_value(previous));
//!     Ok(())
//! }
//! # fn main() {
//! let mut h = sluice_sdk::testing::Harness::new(__sluice_operator(), r#"{"ttl_ms": 1000}"#);
//! h.process(vec![Record::new("a").with_key("k")]);
//! assert_eq!(h.process(vec![Record::new("b").with_key("k")]).main_values(), ["a"]);
//! h.advance_processing_time(1000); // "b" was written at 0: expired at 1000
//! assert_eq!(h.process(vec![Record::new("c").with_key("k")]).main_values(), [""]);
//! # }
//! ```
//!
//! The host resource is opened once per name and TTL and instance, whether
//! the handle is a `static` or not.

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};

use crate::sys::{self, StateId, Ttl};
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

/// A TTL in whole milliseconds, saturating at `u64::MAX`.
const fn ttl_ms(ttl: Duration) -> u64 {
    let ms = ttl.as_millis();
    if ms > u64::MAX as u128 {
        u64::MAX
    } else {
        ms as u64
    }
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
    id: StateId,
    _type: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> ValueState<T> {
    /// Declare the value state called `name` (the same name reopens the same state).
    pub const fn new(name: &'static str) -> Self {
        ValueState {
            id: StateId::new(name, None),
            _type: PhantomData,
        }
    }

    /// Declare the value state called `name` whose entries expire `ttl` after
    /// they were last written (see [the module docs](self#time-to-live)).
    ///
    /// ```
    /// use std::time::Duration;
    /// use sluice_sdk::ValueState;
    /// static LAST_LOGIN: ValueState<i64> = ValueState::with_ttl("last-login", Duration::from_secs(3600));
    /// assert_eq!(LAST_LOGIN.ttl(), Some(Duration::from_secs(3600)));
    /// ```
    pub const fn with_ttl(name: &'static str, ttl: Duration) -> Self {
        ValueState {
            id: StateId::new(
                name,
                Some(Ttl {
                    ms: ttl_ms(ttl),
                    open: sys::VALUE_TTL,
                }),
            ),
            _type: PhantomData,
        }
    }

    /// The state's name.
    pub fn name(&self) -> &'static str {
        self.id.name
    }

    /// The state's time to live, if it was declared with one.
    pub fn ttl(&self) -> Option<Duration> {
        self.id.ttl_ms().map(Duration::from_millis)
    }

    /// The current key's value, if set.
    pub fn get(&self) -> Result<Option<T>, Error> {
        match sys::value_get(&self.id) {
            Some(bytes) => decode(&bytes, "value state", self.id.name).map(Some),
            None => Ok(None),
        }
    }

    /// Set the current key's value.
    pub fn set(&self, value: &T) -> Result<(), Error> {
        SCRATCH.with_borrow_mut(|(buf, _)| {
            encode_into(buf, value, "value state", self.id.name)?;
            sys::value_set(&self.id, buf);
            Ok(())
        })
    }

    /// Remove the current key's value.
    pub fn clear(&self) {
        sys::value_clear(&self.id)
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
            .field("name", &self.id.name)
            .field("ttl_ms", &self.id.ttl_ms())
            .finish()
    }
}

/// A map from `K` to `V` per key.
///
/// Map keys are compared and ordered by their postcard encoding, so
/// [`MapState::entries`] is ordered by encoded bytes (for strings and byte
/// vectors: by length first), not by `K`'s `Ord`.
pub struct MapState<K, V> {
    id: StateId,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> MapState<K, V> {
    /// Declare the map state called `name` (the same name reopens the same state).
    pub const fn new(name: &'static str) -> Self {
        MapState {
            id: StateId::new(name, None),
            _types: PhantomData,
        }
    }

    /// Declare the map state called `name` whose entries each expire `ttl`
    /// after they were last written (see [the module docs](self#time-to-live)).
    ///
    /// ```
    /// use std::time::Duration;
    /// use sluice_sdk::MapState;
    /// static SEEN_IDS: MapState<String, ()> = MapState::with_ttl("seen-ids", Duration::from_secs(600));
    /// assert_eq!(SEEN_IDS.ttl(), Some(Duration::from_secs(600)));
    /// ```
    pub const fn with_ttl(name: &'static str, ttl: Duration) -> Self {
        MapState {
            id: StateId::new(
                name,
                Some(Ttl {
                    ms: ttl_ms(ttl),
                    open: sys::MAP_TTL,
                }),
            ),
            _types: PhantomData,
        }
    }

    /// The state's name.
    pub fn name(&self) -> &'static str {
        self.id.name
    }

    /// The state's time to live, if it was declared with one.
    pub fn ttl(&self) -> Option<Duration> {
        self.id.ttl_ms().map(Duration::from_millis)
    }

    /// The value under `key` in the current key's map, if set.
    pub fn get(&self, key: &K) -> Result<Option<V>, Error> {
        let bytes = SCRATCH.with_borrow_mut(|(kbuf, _)| {
            encode_into(kbuf, key, "map state", self.id.name)?;
            Ok::<_, Error>(sys::map_get(&self.id, kbuf))
        })?;
        match bytes {
            Some(bytes) => decode(&bytes, "map state", self.id.name).map(Some),
            None => Ok(None),
        }
    }

    /// Whether `key` is set in the current key's map.
    pub fn contains_key(&self, key: &K) -> Result<bool, Error> {
        SCRATCH.with_borrow_mut(|(kbuf, _)| {
            encode_into(kbuf, key, "map state", self.id.name)?;
            Ok(sys::map_get(&self.id, kbuf).is_some())
        })
    }

    /// Set `key` to `value` in the current key's map.
    pub fn insert(&self, key: &K, value: &V) -> Result<(), Error> {
        SCRATCH.with_borrow_mut(|(kbuf, vbuf)| {
            encode_into(kbuf, key, "map state", self.id.name)?;
            encode_into(vbuf, value, "map state", self.id.name)?;
            sys::map_set(&self.id, kbuf, vbuf);
            Ok(())
        })
    }

    /// Remove `key` from the current key's map.
    pub fn remove(&self, key: &K) -> Result<(), Error> {
        SCRATCH.with_borrow_mut(|(kbuf, _)| {
            encode_into(kbuf, key, "map state", self.id.name)?;
            sys::map_remove(&self.id, kbuf);
            Ok(())
        })
    }

    /// All entries of the current key's map, ordered by encoded map key.
    pub fn entries(&self) -> Result<Vec<(K, V)>, Error> {
        sys::map_entries(&self.id)
            .into_iter()
            .map(|(k, v)| {
                Ok((
                    decode(&k, "map state", self.id.name)?,
                    decode(&v, "map state", self.id.name)?,
                ))
            })
            .collect()
    }

    /// Remove every entry of the current key's map.
    pub fn clear(&self) {
        sys::map_clear(&self.id)
    }
}

impl<K, V> fmt::Debug for MapState<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapState")
            .field("name", &self.id.name)
            .field("ttl_ms", &self.id.ttl_ms())
            .finish()
    }
}

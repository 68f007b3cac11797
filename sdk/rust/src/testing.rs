//! Run operators natively, without Wasm, in ordinary `cargo test`s.
//!
//! On native targets the SDK replaces the host imports with an in-memory
//! stand-in of the Sluice host: keyed state is a map per state name and record
//! key (so it honours the current record's key exactly as the host does),
//! counters and log lines are recorded. A [`Harness`] owns one such host and
//! one operator instance and drives the operator the way the host does: `init`
//! with the params, then `process` on whole batches, calling `set-current`
//! before each record.
//!
//! ```
//! use sluice_sdk::{Error, Record, ValueState};
//! use sluice_sdk::testing::Harness;
//!
//! static SEEN: ValueState<u64> = ValueState::new("seen");
//!
//! #[sluice_sdk::map]
//! fn number(record: Record) -> Result<Record, Error> {
//!     let n = SEEN.update(|n| n.unwrap_or(0) + 1)?;
//!     Ok(record.with_value(n.to_string()))
//! }
//!
//! fn main() {
//!     let mut h = Harness::new(__sluice_operator(), "{}");
//!     let out = h.process(vec![
//!         Record::new("a").with_key("k1"),
//!         Record::new("b").with_key("k2"),
//!         Record::new("c").with_key("k1"),
//!     ]);
//!     assert_eq!(out.main_values(), ["1", "1", "2"]);
//!     // State persists across batches, per key.
//!     let out = h.process(vec![Record::new("d").with_key("k2")]);
//!     assert_eq!(out.main_values(), ["2"]);
//!     assert_eq!(h.value::<u64>("seen", b"k1"), Some(2));
//! }
//! ```
//!
//! Differences from the real host to keep in mind: a panic is an ordinary
//! test panic (use [`Harness::try_process`] to observe it as the host's trap),
//! and the operator instance is not thrown away after one; nothing is
//! persisted to disk; [`Harness::swap`] re-initialises the operator while
//! keeping state, as a swap does in the host.

use std::panic::{catch_unwind, AssertUnwindSafe};

use serde::de::DeserializeOwned;

use crate::log::Level;
use crate::record::InitContext;
use crate::runtime::Instance;
use crate::sys::native::{swap_host, StubHost};
use crate::{BatchResult, Error, OperatorDef, Record};

/// An operator instance plus an in-memory host, driven natively.
pub struct Harness {
    instance: Option<Instance>,
    host: StubHost,
    operator: String,
    subtask: u32,
    parallelism: u32,
}

/// Installs a stub host on this thread and puts it back when dropped (also
/// when the operator panics).
struct Installed<'a>(&'a mut StubHost);

impl<'a> Installed<'a> {
    fn new(host: &'a mut StubHost) -> Self {
        swap_host(host);
        Installed(host)
    }
}

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        swap_host(self.0);
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

impl Harness {
    /// Initialise `operator` with `params_json` (a JSON object, or `""`).
    /// Panics with the init error if init fails; see [`Harness::try_new`].
    ///
    /// `operator` is the `__sluice_operator()` function the attribute macro
    /// generated next to your function (or use [`harness!`](crate::harness)).
    #[track_caller]
    pub fn new(operator: OperatorDef, params_json: &str) -> Harness {
        match Harness::try_new(operator, params_json) {
            Ok(h) => h,
            Err(e) => panic!("operator init failed: {e}"),
        }
    }

    /// Like [`Harness::new`], but returns the init error (what the host would
    /// refuse the plugin with).
    pub fn try_new(operator: OperatorDef, params_json: &str) -> Result<Harness, Error> {
        let mut h = Harness {
            instance: None,
            host: StubHost::default(),
            operator: "test".to_owned(),
            subtask: 0,
            parallelism: 1,
        };
        h.swap(operator, params_json)?;
        Ok(h)
    }

    /// Replace the operator with a fresh instance of `operator` initialised
    /// with `params_json`, keeping all state, counters and logs — what a swap
    /// (or a restart from a checkpoint) does in the host.
    pub fn swap(&mut self, operator: OperatorDef, params_json: &str) -> Result<(), Error> {
        let ctx = InitContext {
            operator: self.operator.clone(),
            subtask: self.subtask,
            parallelism: self.parallelism,
            params: params_json.to_owned(),
        };
        self.host.current = None;
        self.host.batch_keys.clear();
        let _installed = Installed::new(&mut self.host);
        self.instance = Some(Instance::new(operator, ctx)?);
        Ok(())
    }

    /// Process one batch, as the host's `process` call does. A panic in the
    /// operator (a trap in the host) propagates.
    pub fn process(&mut self, batch: Vec<Record>) -> BatchResult {
        let instance = self.instance.as_mut().expect("operator is initialised");
        self.host.batch_keys = batch.iter().map(|r| r.key.clone()).collect();
        self.host.current = None;
        let calls_before = self.host.set_current_calls;
        let len = batch.len() as u64;
        let result = {
            let _installed = Installed::new(&mut self.host);
            instance.process(batch)
        };
        self.host.current = None;
        debug_assert_eq!(
            self.host.set_current_calls - calls_before,
            len,
            "one set-current per record"
        );
        result
    }

    /// Assert that the operator passes records through unchanged: a record with
    /// key, event time and a header, and `near_miss`, a value close to (but not)
    /// whatever the operator reacts to. For fixtures whose other paths cannot
    /// run natively (they loop, exhaust memory, or touch the machine).
    pub fn assert_passes_through(&mut self, near_miss: &str) {
        let input = vec![
            Record::new("a").with_key("k").with_event_time(5).with_header("h", "v"),
            Record::new(near_miss),
        ];
        let out = self.process(input.clone());
        assert!(out.errors.is_empty(), "unexpected errors: {:?}", out.errors);
        assert_eq!(out.main(), input.iter().collect::<Vec<_>>());
        assert_eq!(out.emits.iter().map(|e| e.input).collect::<Vec<_>>(), [0, 1]);
    }

    /// Process one batch, returning `Err(panic message)` if the operator
    /// panics (where the host sees a trap).
    pub fn try_process(&mut self, batch: Vec<Record>) -> Result<BatchResult, String> {
        catch_unwind(AssertUnwindSafe(|| self.process(batch))).map_err(|p| panic_message(&*p))
    }

    /// The value of the counter called `name` (0 if never added to).
    pub fn counter(&self, name: &str) -> u64 {
        self.host.counters.get(name).copied().unwrap_or(0)
    }

    /// The log lines written so far, in order.
    pub fn logs(&self) -> &[(Level, String)] {
        &self.host.logs
    }

    /// The value state `name` of record key `key`, decoded as `T`.
    /// Panics if the stored bytes do not decode as `T`.
    pub fn value<T: DeserializeOwned>(&self, name: &str, key: &[u8]) -> Option<T> {
        let bytes = self.host.values.get(&(name.to_owned(), key.to_vec()))?;
        Some(
            postcard::from_bytes(bytes)
                .unwrap_or_else(|e| panic!("value state `{name}`: cannot decode: {e}")),
        )
    }

    /// The entries of map state `name` of record key `key`, decoded as `(K, V)`.
    pub fn map_entries<K: DeserializeOwned, V: DeserializeOwned>(
        &self,
        name: &str,
        key: &[u8],
    ) -> Vec<(K, V)> {
        let Some(map) = self.host.maps.get(&(name.to_owned(), key.to_vec())) else {
            return Vec::new();
        };
        map.iter()
            .map(|(k, v)| {
                let k = postcard::from_bytes(k)
                    .unwrap_or_else(|e| panic!("map state `{name}`: cannot decode key: {e}"));
                let v = postcard::from_bytes(v)
                    .unwrap_or_else(|e| panic!("map state `{name}`: cannot decode value: {e}"));
                (k, v)
            })
            .collect()
    }

    /// The params the operator was initialised with.
    pub fn params(&self) -> &crate::Params {
        &self
            .instance
            .as_ref()
            .expect("operator is initialised")
            .params
    }
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("counters", &self.host.counters)
            .finish_non_exhaustive()
    }
}

/// A [`Harness`] for the operator defined at the root of the calling crate:
/// `harness!()` or `harness!(r#"{"max_fare": 100}"#)`.
// `crate` (not `$crate`) on purpose: the operator is in the calling crate.
#[allow(clippy::crate_in_macro_def)]
#[macro_export]
macro_rules! harness {
    () => {
        $crate::testing::Harness::new(crate::__sluice_operator(), "{}")
    };
    ($params:expr) => {
        $crate::testing::Harness::new(crate::__sluice_operator(), $params)
    };
}

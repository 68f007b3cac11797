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
//! **Timers.** The stand-in host records the timers an `on_timer` operator
//! registers, per key ([`Harness::timers`]).
//! [`Harness::advance_watermark`] and [`Harness::advance_processing_time`]
//! move a clock forward and fire the timers that became due, in timestamp
//! order (ties: by key), through the operator's `on_timer` handler, as the
//! host does. The processing-time clock (0 at start) is also the clock of
//! state TTLs: an entry written at `t` with TTL `d` is gone from `t + d` on.
//!
//! **Migrations.** [`Harness::migrate`] runs a `migrate` hook the way the
//! host does after a swap ([`Harness::swap`]): `migrate_if`, then `migrate`
//! for every key that has state, all or nothing.
//!
//! **Aggregates.** [`AggregateHarness`] calls an aggregate's `add`, `merge`
//! and `finish` directly, as the host does, and [`AggregateHarness::tumbling`]
//! runs records through tumbling event-time windows.
//!
//! Differences from the real host to keep in mind: a panic is an ordinary
//! test panic (use [`Harness::try_process`] to observe it as the host's trap),
//! and the operator instance is not thrown away after one; nothing is
//! persisted to disk; [`Harness::swap`] re-initialises the operator while
//! keeping state, as a swap does in the host.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use serde::de::DeserializeOwned;

use crate::aggregate::{Accumulate, AddResult, AggregateInstance, FiredWindow};
use crate::log::Level;
use crate::record::InitContext;
use crate::runtime::Instance;
use crate::sys::native::{swap_host, StubHost};
use crate::{
    AggregateDef, BatchResult, Error, OperatorDef, PreviousVersion, Record, RecordError,
    TimeDomain, Timer, Window,
};

/// How many keys [`Harness::migrate`] hands to one `migrate` call.
const MIGRATE_BATCH: usize = 1000;

/// Why [`Harness::migrate`] failed: what the host would reject the deploy with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationError {
    /// The key whose `migrate` returned the error; `None` if deciding whether
    /// to migrate failed.
    pub key: Option<Vec<u8>>,
    /// The error's message.
    pub message: String,
}

impl fmt::Display for MigrationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(
                f,
                "migrating key {:?}: {}",
                String::from_utf8_lossy(key),
                self.message
            ),
            None => write!(f, "needs-migration: {}", self.message),
        }
    }
}

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

    /// Migrate the state a previous version left, as the host does after a
    /// hot swap: ask the operator's `migrate_if` (for an operator without
    /// `migrate`: no), then call `migrate` for every key that has state (in
    /// key order, in batches of 1000), with that key current. Returns whether
    /// it migrated. Call it after [`Harness::swap`] to the new version.
    ///
    /// All or nothing: on the first `Err`, every state entry and timer is put
    /// back as it was before the call and the error names the key. A panic
    /// (a trap in the host) restores the state too, then propagates. Either
    /// way the new instance stays installed (the host would keep the old
    /// version running: swap back if the test goes on).
    ///
    /// ```
    /// use sluice_sdk::{Context, Error, PreviousVersion, Record, ValueState};
    ///
    /// static TEXT: ValueState<String> = ValueState::new("text");
    ///
    /// #[sluice_sdk::process(migrate = shout)]
    /// fn noop(_record: Record, _ctx: &mut Context) -> Result<(), Error> {
    ///     Ok(())
    /// }
    ///
    /// fn shout(key: &[u8], _from: &PreviousVersion) -> Result<(), Error> {
    ///     if key == b"bad" {
    ///         sluice_sdk::bail!("cannot migrate");
    ///     }
    ///     TEXT.update(|t| t.unwrap_or_default().to_uppercase())?;
    ///     Ok(())
    /// }
    /// # fn main() {
    /// # mod old {
    /// #     use sluice_sdk::{Context, Error, Record, ValueState};
    /// #     static TEXT: ValueState<String> = ValueState::new("text");
    /// #     #[sluice_sdk::process]
    /// #     fn keep(r: Record, _c: &mut Context) -> Result<(), Error> {
    /// #         TEXT.set(&r.value_str().unwrap_or("").to_owned())
    /// #     }
    /// # }
    /// // `old` stores each record's value as `text`.
    /// let mut h = sluice_sdk::testing::Harness::new(old::__sluice_operator(), "{}");
    /// h.process(vec![Record::new("hi").with_key("a"), Record::new("yo").with_key("bad")]);
    /// h.swap(__sluice_operator(), "{}").unwrap();
    /// let err = h.migrate(&PreviousVersion::default()).unwrap_err();
    /// assert_eq!((err.key.as_deref(), err.message.as_str()), (Some(&b"bad"[..]), "cannot migrate"));
    /// assert_eq!(h.value::<String>("text", b"a").as_deref(), Some("hi")); // rolled back
    /// # }
    /// ```
    pub fn migrate(&mut self, from: &PreviousVersion) -> Result<bool, MigrationError> {
        let instance = self.instance.as_mut().expect("operator is initialised");
        self.host.batch_keys.clear();
        self.host.current = None;
        let needs = {
            let _installed = Installed::new(&mut self.host);
            instance.needs_migration(from.clone())
        };
        match needs {
            Ok(true) => {}
            Ok(false) => return Ok(false),
            Err(e) => {
                return Err(MigrationError {
                    key: None,
                    message: e.into_message(),
                })
            }
        }

        let now = self.host.processing_time;
        let keys: Vec<Vec<u8>> = self
            .host
            .values
            .iter()
            .filter(|(_, e)| e.live(now))
            .map(|((_, key), _)| key)
            .chain(
                self.host
                    .maps
                    .iter()
                    .filter(|(_, m)| m.values().any(|e| e.live(now)))
                    .map(|((_, key), _)| key),
            )
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let snapshot = (
            self.host.values.clone(),
            self.host.maps.clone(),
            self.host.event_timers.clone(),
            self.host.processing_timers.clone(),
        );
        let calls_before = self.host.set_current_calls;
        let host = &mut self.host;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            for chunk in keys.chunks(MIGRATE_BATCH) {
                host.batch_keys = chunk.iter().cloned().map(Some).collect();
                host.current = None;
                let result = {
                    let _installed = Installed::new(host);
                    instance.migrate(chunk)
                };
                if let Err(e) = result {
                    return Err(MigrationError {
                        key: chunk.get(e.input as usize).cloned(),
                        message: e.message,
                    });
                }
            }
            Ok(())
        }));
        self.host.batch_keys.clear();
        self.host.current = None;
        let restore = |host: &mut StubHost| {
            (
                host.values,
                host.maps,
                host.event_timers,
                host.processing_timers,
            ) = snapshot;
        };
        match outcome {
            Ok(Ok(())) => {
                debug_assert_eq!(
                    self.host.set_current_calls - calls_before,
                    keys.len() as u64,
                    "one set-current per key"
                );
                Ok(true)
            }
            Ok(Err(e)) => {
                restore(&mut self.host);
                Err(e)
            }
            Err(panic) => {
                restore(&mut self.host);
                resume_unwind(panic)
            }
        }
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

    /// [`process`](Self::process) with the source position of each record,
    /// as `Context::position` reports it in the host.
    pub fn process_from(
        &mut self,
        batch: Vec<Record>,
        positions: Vec<crate::Position>,
    ) -> BatchResult {
        self.host.positions = positions.into_iter().map(Some).collect();
        let result = self.process(batch);
        self.host.positions.clear();
        result
    }

    /// Assert that the operator passes records through unchanged: a record with
    /// key, event time and a header, and `near_miss`, a value close to (but not)
    /// whatever the operator reacts to. For fixtures whose other paths cannot
    /// run natively (they loop, exhaust memory, or touch the machine).
    pub fn assert_passes_through(&mut self, near_miss: &str) {
        let input = vec![
            Record::new("a")
                .with_key("k")
                .with_event_time(5)
                .with_header("h", "v"),
            Record::new(near_miss),
        ];
        let out = self.process(input.clone());
        assert!(out.errors.is_empty(), "unexpected errors: {:?}", out.errors);
        assert_eq!(out.main(), input.iter().collect::<Vec<_>>());
        assert_eq!(
            out.emits.iter().map(|e| e.input).collect::<Vec<_>>(),
            [0, 1]
        );
    }

    /// Move the event-time watermark to `timestamp` (it never goes back: a
    /// smaller one is ignored) and fire every event-time timer at or before
    /// it, through the operator's `on_timer`, in timestamp order (ties: by
    /// key). Timers that the handler registers and that are already due fire
    /// in a further round of the same call. Returns what the handler emitted;
    /// `emit.input` and `errors[].input` count the fired timers of this call
    /// in firing order. A panic in the handler propagates.
    ///
    /// ```
    /// use sluice_sdk::{timers, Context, Error, Record, Timer};
    ///
    /// #[sluice_sdk::process(on_timer = fire)]
    /// fn arm(record: Record, _ctx: &mut Context) -> Result<(), Error> {
    ///     timers::register_event_time(record.event_time.unwrap_or(0) + 10);
    ///     Ok(())
    /// }
    /// fn fire(timer: Timer, ctx: &mut Context) -> Result<(), Error> {
    ///     ctx.emit(Record::new(format!("{}@{}", timer.key_str().unwrap_or("?"), timer.timestamp)));
    ///     Ok(())
    /// }
    /// # fn main() {
    /// let mut h = sluice_sdk::testing::Harness::new(__sluice_operator(), "{}");
    /// h.process(vec![
    ///     Record::new("").with_key("b").with_event_time(5),
    ///     Record::new("").with_key("a").with_event_time(5),
    ///     Record::new("").with_key("a").with_event_time(1),
    /// ]);
    /// assert_eq!(h.advance_watermark(15).main_values(), ["a@11", "a@15", "b@15"]);
    /// assert_eq!(h.watermark(), Some(15));
    /// assert!(h.timers(b"a").is_empty());
    /// # }
    /// ```
    pub fn advance_watermark(&mut self, timestamp: i64) -> BatchResult {
        self.host.watermark = self.host.watermark.max(timestamp);
        self.fire(TimeDomain::EventTime)
    }

    /// Move the processing-time clock to `timestamp` (it never goes back) and
    /// fire every processing-time timer at or before it, as
    /// [`Harness::advance_watermark`] does for event time. The clock is also
    /// the one state TTLs are measured on; it starts at 0.
    ///
    /// ```
    /// use std::time::Duration;
    /// use sluice_sdk::{Error, Record, ValueState};
    ///
    /// static LAST: ValueState<String> = ValueState::with_ttl("last", Duration::from_secs(1));
    ///
    /// #[sluice_sdk::map]
    /// fn swap_last(record: Record) -> Result<Record, Error> {
    ///     let previous = LAST.get()?.unwrap_or_else(|| "-".into());
    ///     LAST.set(&record.value_str().unwrap_or("").to_owned())?;
    ///     Ok(record.with_value(previous))
    /// }
    /// # fn main() {
    /// let mut h = sluice_sdk::testing::Harness::new(__sluice_operator(), "{}");
    /// h.process(vec![Record::new("x").with_key("k")]);      // written at 0
    /// h.advance_processing_time(999);
    /// assert_eq!(h.value::<String>("last", b"k").as_deref(), Some("x"));
    /// h.advance_processing_time(1000);                      // expired
    /// assert_eq!(h.value::<String>("last", b"k"), None);
    /// assert_eq!(h.process(vec![Record::new("y").with_key("k")]).main_values(), ["-"]);
    /// # }
    /// ```
    pub fn advance_processing_time(&mut self, timestamp: i64) -> BatchResult {
        self.host.processing_time = self.host.processing_time.max(timestamp);
        self.fire(TimeDomain::ProcessingTime)
    }

    /// The current event-time watermark, `None` before the first.
    pub fn watermark(&self) -> Option<i64> {
        (self.host.watermark != i64::MIN).then_some(self.host.watermark)
    }

    /// The current processing time (ms; starts at 0).
    pub fn processing_time(&self) -> i64 {
        self.host.processing_time
    }

    /// The timers registered for `key` that have not fired, ordered by
    /// domain (event time first) and timestamp.
    pub fn timers(&self, key: &[u8]) -> Vec<(TimeDomain, i64)> {
        let of = |domain: TimeDomain, set: &std::collections::BTreeSet<(i64, Vec<u8>)>| {
            set.iter()
                .filter(|(_, k)| k == key)
                .map(|(t, _)| (domain, *t))
                .collect::<Vec<_>>()
        };
        let mut all = of(TimeDomain::EventTime, &self.host.event_timers);
        all.extend(of(TimeDomain::ProcessingTime, &self.host.processing_timers));
        all
    }

    /// Fire the due timers of `domain`, in rounds, until none is due.
    fn fire(&mut self, domain: TimeDomain) -> BatchResult {
        let mut result = BatchResult::default();
        let mut fired = 0u32;
        for _round in 0..10_000 {
            let (now, set) = match domain {
                TimeDomain::EventTime => (self.host.watermark, &mut self.host.event_timers),
                TimeDomain::ProcessingTime => {
                    (self.host.processing_time, &mut self.host.processing_timers)
                }
            };
            let rest = set.split_off(&(now.saturating_add(1), Vec::new()));
            let due = std::mem::replace(set, rest);
            if due.is_empty() {
                return result;
            }
            let timers: Vec<Timer> = due
                .into_iter()
                .map(|(timestamp, key)| Timer {
                    key,
                    timestamp,
                    domain,
                })
                .collect();
            let count = timers.len() as u32;
            let instance = self.instance.as_mut().expect("operator is initialised");
            self.host.batch_keys = timers.iter().map(|t| Some(t.key.clone())).collect();
            self.host.current = None;
            let calls_before = self.host.set_current_calls;
            let round = {
                let _installed = Installed::new(&mut self.host);
                instance.on_timer(timers)
            };
            self.host.current = None;
            debug_assert_eq!(
                self.host.set_current_calls - calls_before,
                u64::from(count),
                "one set-current per timer"
            );
            result.emits.extend(round.emits.into_iter().map(|mut e| {
                e.input += fired;
                e
            }));
            result.errors.extend(round.errors.into_iter().map(|mut e| {
                e.input += fired;
                e
            }));
            fired += count;
        }
        panic!(
            "timers kept firing for 10000 rounds: does on_timer register a due timer every time?"
        )
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

    /// The value state `name` of record key `key`, decoded as `T` (`None` if
    /// unset or expired). Panics if the stored bytes do not decode as `T`.
    pub fn value<T: DeserializeOwned>(&self, name: &str, key: &[u8]) -> Option<T> {
        let entry = self.host.values.get(&(name.to_owned(), key.to_vec()))?;
        if !entry.live(self.host.processing_time) {
            return None;
        }
        Some(
            postcard::from_bytes(&entry.bytes)
                .unwrap_or_else(|e| panic!("value state `{name}`: cannot decode: {e}")),
        )
    }

    /// The entries of map state `name` of record key `key`, decoded as `(K, V)`
    /// (expired entries left out).
    pub fn map_entries<K: DeserializeOwned, V: DeserializeOwned>(
        &self,
        name: &str,
        key: &[u8],
    ) -> Vec<(K, V)> {
        let Some(map) = self.host.maps.get(&(name.to_owned(), key.to_vec())) else {
            return Vec::new();
        };
        let now = self.host.processing_time;
        map.iter()
            .filter(|(_, entry)| entry.live(now))
            .map(|(k, entry)| {
                let k = postcard::from_bytes(k)
                    .unwrap_or_else(|e| panic!("map state `{name}`: cannot decode key: {e}"));
                let v = postcard::from_bytes(&entry.bytes)
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

/// A window aggregate instance plus an in-memory host, driven natively: call
/// the aggregator's exports directly ([`add`](AggregateHarness::add),
/// [`merge`](AggregateHarness::merge), [`finish`](AggregateHarness::finish)),
/// or run records through tumbling windows
/// ([`tumbling`](AggregateHarness::tumbling)).
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use sluice_sdk::aggregate::{Accumulate, FiredWindow};
/// use sluice_sdk::testing::AggregateHarness;
/// use sluice_sdk::{Aggregate, Error, Record, Window, WindowOutput};
///
/// #[derive(Default, Serialize, Deserialize)]
/// struct Count(u64);
///
/// #[sluice_sdk::aggregate]
/// impl Aggregate for Count {
///     type Params = ();
///     fn add(&mut self, _: &Record, _: &()) -> Result<(), Error> {
///         self.0 += 1;
///         Ok(())
///     }
///     fn merge(&mut self, other: Self, _: &()) {
///         self.0 += other.0;
///     }
///     fn finish(self, _: &[u8], _: Window, out: &mut WindowOutput, _: &()) -> Result<(), Error> {
///         out.emit(Record::new(self.0.to_string()));
///         Ok(())
///     }
/// }
/// # fn main() {
/// let mut h = AggregateHarness::new(__sluice_operator(), "{}");
/// let batch = vec![Record::new("a"), Record::new("b"), Record::new("c")];
/// let added = h.add(batch, vec![
///     Accumulate { accumulator: None, inputs: vec![0, 2] },
///     Accumulate { accumulator: Some(AggregateHarness::encode(&Count(5))), inputs: vec![1] },
/// ]);
/// assert_eq!(AggregateHarness::decode::<Count>(&added.accumulators[0]).0, 2);
/// assert_eq!(AggregateHarness::decode::<Count>(&added.accumulators[1]).0, 6);
/// let merged = h.merge(vec![added.accumulators.clone()]);
/// let out = h.finish(vec![FiredWindow {
///     key: b"k".to_vec(),
///     window: Window::new(0, 100),
///     accumulator: merged[0].clone(),
/// }]);
/// assert_eq!(out.main_values(), ["8"]);
/// // As the host does: no key -> the window's key; no event time -> end - 1.
/// assert_eq!(out.main()[0].key_str(), Some("k"));
/// assert_eq!(out.main()[0].event_time, Some(99));
/// # }
/// ```
pub struct AggregateHarness {
    instance: AggregateInstance,
    host: StubHost,
}

/// What [`AggregateHarness::tumbling`] produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WindowRun {
    /// The windows that fired, in firing order (by end, then key): the
    /// `input` of `result`'s emits and errors indexes this.
    pub windows: Vec<(Vec<u8>, Window)>,
    /// What `finish` returned, with the host's defaults applied (see
    /// [`AggregateHarness::finish`]).
    pub result: BatchResult,
    /// The records `add` left out, by index in the input records.
    pub record_errors: Vec<RecordError>,
}

impl AggregateHarness {
    /// Initialise `aggregate` (the `__sluice_operator()` that
    /// `#[sluice_sdk::aggregate]` generated) with `params_json` (a JSON
    /// object, or `""`). Panics with the init error if init fails.
    #[track_caller]
    pub fn new(aggregate: AggregateDef, params_json: &str) -> AggregateHarness {
        match AggregateHarness::try_new(aggregate, params_json) {
            Ok(h) => h,
            Err(e) => panic!("aggregate init failed: {e}"),
        }
    }

    /// Like [`AggregateHarness::new`], but returns the init error.
    pub fn try_new(aggregate: AggregateDef, params_json: &str) -> Result<AggregateHarness, Error> {
        let mut host = StubHost::default();
        let ctx = InitContext {
            operator: "test".to_owned(),
            subtask: 0,
            parallelism: 1,
            params: params_json.to_owned(),
        };
        let instance = {
            let _installed = Installed::new(&mut host);
            AggregateInstance::new(aggregate, ctx)?
        };
        Ok(AggregateHarness { instance, host })
    }

    /// The aggregator's `add`: fold the records of `batch` named by each
    /// group into its accumulator; one accumulator per group comes back.
    pub fn add(&mut self, batch: Vec<Record>, groups: Vec<Accumulate>) -> AddResult {
        let _installed = Installed::new(&mut self.host);
        self.instance.add(&batch, groups)
    }

    /// The aggregator's `merge`: one merged accumulator per group.
    pub fn merge(&mut self, groups: Vec<Vec<Vec<u8>>>) -> Vec<Vec<u8>> {
        let _installed = Installed::new(&mut self.host);
        self.instance.merge(groups)
    }

    /// The aggregator's `finish`, plus what the host does with its emits: a
    /// record without a key gets its window's key, one without an event time
    /// gets the window's `end - 1`.
    pub fn finish(&mut self, windows: Vec<FiredWindow>) -> BatchResult {
        let fired: Vec<(Vec<u8>, Window)> =
            windows.iter().map(|w| (w.key.clone(), w.window)).collect();
        let mut result = {
            let _installed = Installed::new(&mut self.host);
            self.instance.finish(windows)
        };
        for emit in &mut result.emits {
            if let Some((key, window)) = fired.get(emit.input as usize) {
                if emit.record.key.is_none() {
                    emit.record.key = Some(key.clone());
                }
                if emit.record.event_time.is_none() {
                    emit.record.event_time = Some(window.max_timestamp());
                }
            }
        }
        result
    }

    /// Run `records` through tumbling event-time windows of `size_ms`
    /// (aligned to the epoch: `[n * size, (n + 1) * size)`), as the host does
    /// for a batch: one `add` call with one group per (key, window), in order
    /// of first appearance, then one `finish` of every window, ordered by end
    /// and then key. A record without a key is in the empty key; a record
    /// without an event time panics.
    pub fn tumbling(&mut self, size_ms: i64, records: Vec<Record>) -> WindowRun {
        assert!(size_ms > 0, "window size must be positive, got {size_ms}");
        let mut order: Vec<(Vec<u8>, Window)> = Vec::new();
        let mut groups: BTreeMap<(Vec<u8>, Window), usize> = BTreeMap::new();
        let mut inputs: Vec<Vec<u32>> = Vec::new();
        for (i, record) in records.iter().enumerate() {
            let Some(t) = record.event_time else {
                panic!("tumbling: record {i} has no event time");
            };
            let start = t.div_euclid(size_ms) * size_ms;
            let id = (
                record.key.clone().unwrap_or_default(),
                Window::new(start, start + size_ms),
            );
            let g = *groups.entry(id.clone()).or_insert_with(|| {
                order.push(id);
                inputs.push(Vec::new());
                inputs.len() - 1
            });
            inputs[g].push(i as u32);
        }
        let added = self.add(
            records,
            inputs
                .into_iter()
                .map(|inputs| Accumulate {
                    accumulator: None,
                    inputs,
                })
                .collect(),
        );
        let mut fired: Vec<FiredWindow> = order
            .into_iter()
            .zip(added.accumulators)
            .map(|((key, window), accumulator)| FiredWindow {
                key,
                window,
                accumulator,
            })
            .collect();
        fired.sort_by(|a, b| (a.window.end, &a.key).cmp(&(b.window.end, &b.key)));
        let windows = fired.iter().map(|w| (w.key.clone(), w.window)).collect();
        let result = self.finish(fired);
        WindowRun {
            windows,
            result,
            record_errors: added.errors,
        }
    }

    /// Encode an accumulator as the SDK stores it (postcard).
    pub fn encode<A: serde::Serialize>(accumulator: &A) -> Vec<u8> {
        crate::aggregate::encode(accumulator)
    }

    /// Decode an accumulator; panics if the bytes do not decode as `A`.
    pub fn decode<A: DeserializeOwned>(bytes: &[u8]) -> A {
        crate::aggregate::decode(bytes).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The value of the counter called `name` (0 if never added to).
    pub fn counter(&self, name: &str) -> u64 {
        self.host.counters.get(name).copied().unwrap_or(0)
    }

    /// The log lines written so far, in order.
    pub fn logs(&self) -> &[(Level, String)] {
        &self.host.logs
    }

    /// The params the aggregate was initialised with.
    pub fn params(&self) -> &crate::Params {
        &self.instance.params
    }
}

impl std::fmt::Debug for AggregateHarness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AggregateHarness")
            .field("counters", &self.host.counters)
            .finish_non_exhaustive()
    }
}

/// An [`AggregateHarness`] for the aggregate defined at the root of the
/// calling crate: `aggregate_harness!()` or `aggregate_harness!(r#"{"field": "x"}"#)`.
#[allow(clippy::crate_in_macro_def)]
#[macro_export]
macro_rules! aggregate_harness {
    () => {
        $crate::testing::AggregateHarness::new(crate::__sluice_operator(), "{}")
    };
    ($params:expr) => {
        $crate::testing::AggregateHarness::new(crate::__sluice_operator(), $params)
    };
}

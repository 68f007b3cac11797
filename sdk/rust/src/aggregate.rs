//! Window aggregates: the host runs the windows, your type is the accumulator.
//!
//! A window aggregate (world `window-aggregate`) is a type that implements
//! [`Aggregate`] and is exported with [`#[sluice_sdk::aggregate]`](macro@crate::aggregate).
//! The host assigns the records of a keyed stream to windows (tumbling,
//! sliding or session, as the pipeline file says), keeps **one accumulator
//! per key and window in RocksDB**, and fires a window when the watermark (or,
//! for processing-time windows, the wall clock) passes its end. Your type is
//! that accumulator: the SDK creates it with `Default`, folds records into it
//! with [`Aggregate::add`], merges two with [`Aggregate::merge`] (session
//! windows that a record bridged) and turns it into result records with
//! [`Aggregate::finish`]. Between calls it lives only in the host, encoded
//! with [`postcard`] (as keyed state is): never keep accumulators in guest
//! memory, and, as for state, a new plugin version must still decode what
//! the old one wrote.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use sluice_sdk::{Aggregate, Error, Record, Window, WindowOutput};
//!
//! /// The number of records and the longest value of each window.
//! #[derive(Default, Serialize, Deserialize)]
//! struct Stats {
//!     count: u64,
//!     longest: usize,
//! }
//!
//! #[sluice_sdk::aggregate]
//! impl Aggregate for Stats {
//!     type Params = ();
//!
//!     fn add(&mut self, record: &Record, _: &()) -> Result<(), Error> {
//!         self.count += 1;
//!         self.longest = self.longest.max(record.value.len());
//!         Ok(())
//!     }
//!
//!     fn merge(&mut self, other: Self, _: &()) {
//!         self.count += other.count;
//!         self.longest = self.longest.max(other.longest);
//!     }
//!
//!     fn finish(self, _key: &[u8], window: Window, out: &mut WindowOutput, _: &()) -> Result<(), Error> {
//!         out.emit(Record::new(format!("{}..{}: {} {}", window.start, window.end, self.count, self.longest)));
//!         Ok(())
//!     }
//! }
//! # fn main() {
//! let mut h = sluice_sdk::testing::AggregateHarness::new(__sluice_operator(), "{}");
//! let run = h.tumbling(1000, vec![
//!     Record::new("a").with_key("k").with_event_time(10),
//!     Record::new("abc").with_key("k").with_event_time(999),
//!     Record::new("ab").with_key("k").with_event_time(1000),
//! ]);
//! assert_eq!(run.result.main_values(), ["0..1000: 2 3", "1000..2000: 1 2"]);
//! # }
//! ```
//!
//! # Params and init
//!
//! [`Aggregate::Params`] is the type the operator's `params` table is
//! deserialized into (serde) once at init; every method gets it as its last
//! argument. Use `()` for an aggregate without params (any table is then
//! accepted). `#[sluice_sdk::aggregate(init = path)]` runs
//! `fn path(params: &Params) -> Result<(), E>` once before anything else; an
//! `Err` refuses the plugin, as do params that do not deserialize.
//!
//! # What the host does with the results
//!
//! [`Aggregate::finish`] emits through a [`WindowOutput`]. A record emitted
//! without a key gets the window's key, and one without an event time gets the
//! window's last millisecond (`end - 1`). An `Err` from `finish` is an error of
//! that window (handed to the operator's error policy); an `Err` from `add`
//! leaves that record out of its accumulator and hands it to the error policy.
//!
//! # Cost
//!
//! The host calls `add` once per input batch with every (key, window) group of
//! the batch, and `finish` once per set of windows that fire together. Per
//! group the SDK decodes the accumulator once, folds all its records, and
//! encodes it once, into the buffer the old accumulator came in.

use std::any::TypeId;

use serde::{de::DeserializeOwned, Serialize};

use crate::record::{Emit, InitContext, Output, RecordError};
use crate::{BatchResult, Error, Params, Record};

/// A window accumulator: what the host keeps per key and window, and how
/// records fold into it. Export it with
/// [`#[sluice_sdk::aggregate]`](macro@crate::aggregate); see the
/// [module docs](self).
pub trait Aggregate: Default + Serialize + DeserializeOwned + 'static {
    /// The operator's params, deserialized once at init and passed to every
    /// method. `()` for none.
    type Params: DeserializeOwned + 'static;

    /// Fold one record in. `Err` is a per-record error: the record is left out
    /// of the window and handed to the error policy. Return `Err` before
    /// changing `self` (the SDK does not roll back a partial change).
    fn add(&mut self, record: &Record, params: &Self::Params) -> Result<(), Error>;

    /// Merge `other` into this accumulator (session windows that a record
    /// bridged). Must agree with `add`: merging the accumulators of two sets
    /// of records gives the accumulator of their union.
    fn merge(&mut self, other: Self, params: &Self::Params);

    /// Produce the result records of the fired window `window` of key `key`
    /// through `out`. `Err` is an error of this window.
    fn finish(
        self,
        key: &[u8],
        window: Window,
        out: &mut WindowOutput<'_>,
        params: &Self::Params,
    ) -> Result<(), Error>;
}

/// A time window: every timestamp `t` with `start <= t < end`, in ms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    /// First millisecond in the window.
    pub start: i64,
    /// First millisecond after the window.
    pub end: i64,
}

impl Window {
    /// The window `[start, end)`.
    pub const fn new(start: i64, end: i64) -> Window {
        Window { start, end }
    }

    /// The last millisecond in the window, `end - 1` (the event time the host
    /// gives results emitted without one).
    pub const fn max_timestamp(&self) -> i64 {
        self.end - 1
    }

    /// Whether `timestamp` is in the window.
    pub const fn contains(&self, timestamp: i64) -> bool {
        self.start <= timestamp && timestamp < self.end
    }
}

/// Where [`Aggregate::finish`] puts the results of a window. Every record
/// emitted is attributed to the window being finished.
pub struct WindowOutput<'a> {
    emits: &'a mut Vec<Emit>,
    input: u32,
}

impl WindowOutput<'_> {
    /// Emit `record` on the main output. Without a key it gets the window's
    /// key; without an event time, the window's last millisecond.
    #[inline]
    pub fn emit(&mut self, record: Record) {
        self.emits.push(Emit {
            output: Output::Main,
            record,
            input: self.input,
        });
    }

    /// Emit `record` on the side output called `output`.
    pub fn emit_to(&mut self, output: &str, record: Record) {
        self.emits.push(Emit {
            output: Output::Side(output.to_owned()),
            record,
            input: self.input,
        });
    }

    /// Index of the window in the host's `finish` call.
    pub fn input_index(&self) -> u32 {
        self.input
    }
}

/// Records of a batch to fold into one accumulator (the WIT
/// `aggregator.accumulate`); used by [`crate::testing::AggregateHarness`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Accumulate {
    /// The accumulator so far; `None` means a new (`Default`) one.
    pub accumulator: Option<Vec<u8>>,
    /// Indices, in the batch, of the records to add, in order.
    pub inputs: Vec<u32>,
}

/// What `add` returns (the WIT `aggregator.add-result`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddResult {
    /// The new accumulators, one per group, in the order of the groups.
    pub accumulators: Vec<Vec<u8>>,
    /// Records that could not be added, by batch index.
    pub errors: Vec<RecordError>,
}

/// A window that fires (the WIT `aggregator.fired-window`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FiredWindow {
    /// The key.
    pub key: Vec<u8>,
    /// The window.
    pub window: Window,
    /// Its accumulator.
    pub accumulator: Vec<u8>,
}

/// Encode an accumulator as the SDK stores it (postcard).
pub fn encode<A: Serialize>(accumulator: &A) -> Vec<u8> {
    postcard::to_allocvec(accumulator).unwrap_or_else(|e| {
        panic!(
            "cannot encode the accumulator {}: {e}",
            std::any::type_name::<A>()
        )
    })
}

/// Decode an accumulator the SDK stored (postcard).
pub fn decode<A: DeserializeOwned>(bytes: &[u8]) -> Result<A, Error> {
    postcard::from_bytes(bytes).map_err(|e| {
        Error::msg(format!(
            "cannot decode the accumulator as {}: {e}",
            std::any::type_name::<A>()
        ))
    })
}

/// Encode into `buf` (cleared first), reusing its allocation.
fn encode_into<A: Serialize>(accumulator: &A, mut buf: Vec<u8>) -> Vec<u8> {
    buf.clear();
    postcard::to_extend(accumulator, buf).unwrap_or_else(|e| {
        panic!(
            "cannot encode the accumulator {}: {e}",
            std::any::type_name::<A>()
        )
    })
}

/// `params` deserialized into `P`; `()` accepts any params.
pub(crate) fn deserialize_params<P: DeserializeOwned + 'static>(
    params: &Params,
) -> Result<P, Error> {
    if TypeId::of::<P>() == TypeId::of::<()>() {
        return serde_json::from_value(serde_json::Value::Null)
            .map_err(|e| Error::msg(format!("invalid params: {e}")));
    }
    params.deserialize()
}

/// An aggregate with its type erased.
pub(crate) trait DynAggregate {
    fn add(&self, batch: &[Record], groups: Vec<Accumulate>) -> AddResult;
    fn merge(&self, groups: Vec<Vec<Vec<u8>>>) -> Vec<Vec<u8>>;
    fn finish(&self, windows: Vec<FiredWindow>) -> BatchResult;
}

struct Typed<A: Aggregate> {
    params: A::Params,
}

impl<A: Aggregate> DynAggregate for Typed<A> {
    fn add(&self, batch: &[Record], groups: Vec<Accumulate>) -> AddResult {
        let mut accumulators = Vec::with_capacity(groups.len());
        let mut errors = Vec::new();
        for group in groups {
            let (mut acc, buf) = match group.accumulator {
                None => (A::default(), Vec::new()),
                Some(bytes) => match decode::<A>(&bytes) {
                    Ok(acc) => (acc, bytes),
                    Err(e) => {
                        // Keep the stored accumulator; its records go to the
                        // error policy.
                        let message = e.into_message();
                        errors.extend(group.inputs.iter().map(|&input| RecordError {
                            input,
                            message: message.clone(),
                        }));
                        accumulators.push(bytes);
                        continue;
                    }
                },
            };
            for &input in &group.inputs {
                let record = batch.get(input as usize).unwrap_or_else(|| {
                    panic!(
                        "sluice: add: input {input} is outside the batch of {} records",
                        batch.len()
                    )
                });
                if let Err(e) = acc.add(record, &self.params) {
                    errors.push(RecordError {
                        input,
                        message: e.into_message(),
                    });
                }
            }
            accumulators.push(encode_into(&acc, buf));
        }
        errors.sort_by_key(|e| e.input);
        AddResult {
            accumulators,
            errors,
        }
    }

    fn merge(&self, groups: Vec<Vec<Vec<u8>>>) -> Vec<Vec<u8>> {
        groups
            .into_iter()
            .map(|group| {
                let mut parts = group.into_iter();
                let Some(first) = parts.next() else {
                    return encode(&A::default());
                };
                let mut acc = decode::<A>(&first).unwrap_or_else(|e| panic!("sluice: merge: {e}"));
                for part in parts {
                    let other = decode::<A>(&part).unwrap_or_else(|e| panic!("sluice: merge: {e}"));
                    acc.merge(other, &self.params);
                }
                encode_into(&acc, first)
            })
            .collect()
    }

    fn finish(&self, windows: Vec<FiredWindow>) -> BatchResult {
        let mut emits = Vec::with_capacity(windows.len());
        let mut errors = Vec::new();
        for (index, fired) in windows.into_iter().enumerate() {
            let input = index as u32;
            let result = decode::<A>(&fired.accumulator).and_then(|acc| {
                let mut out = WindowOutput {
                    emits: &mut emits,
                    input,
                };
                acc.finish(&fired.key, fired.window, &mut out, &self.params)
            });
            if let Err(e) = result {
                errors.push(RecordError {
                    input,
                    message: e.into_message(),
                });
            }
        }
        BatchResult { emits, errors }
    }
}

type Hook = fn(&Params) -> Result<(), Error>;

/// A handle to the aggregate [`#[sluice_sdk::aggregate]`](macro@crate::aggregate)
/// exported: the macro defines `__sluice_operator()` next to the impl,
/// returning one; [`crate::testing::AggregateHarness`] drives it natively.
#[derive(Clone, Copy)]
pub struct AggregateDef {
    make: fn(&Params) -> Result<Box<dyn DynAggregate>, Error>,
    hook: Option<Hook>,
}

impl AggregateDef {
    #[doc(hidden)]
    pub fn of<A: Aggregate>(hook: Option<Hook>) -> AggregateDef {
        AggregateDef {
            make: |params| {
                Ok(Box::new(Typed::<A> {
                    params: deserialize_params::<A::Params>(params)?,
                }))
            },
            hook,
        }
    }
}

impl std::fmt::Debug for AggregateDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AggregateDef")
    }
}

/// One initialised aggregate instance.
pub(crate) struct AggregateInstance {
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub(crate) params: Params,
    agg: Box<dyn DynAggregate>,
}

impl AggregateInstance {
    pub(crate) fn new(def: AggregateDef, ctx: InitContext) -> Result<AggregateInstance, Error> {
        let params = crate::runtime::instance_params(ctx)?;
        crate::sys::allow_timers(false);
        if let Some(hook) = def.hook {
            hook(&params)?;
        }
        let agg = (def.make)(&params)?;
        Ok(AggregateInstance { params, agg })
    }

    pub(crate) fn add(&self, batch: &[Record], groups: Vec<Accumulate>) -> AddResult {
        self.agg.add(batch, groups)
    }

    pub(crate) fn merge(&self, groups: Vec<Vec<Vec<u8>>>) -> Vec<Vec<u8>> {
        self.agg.merge(groups)
    }

    pub(crate) fn finish(&self, windows: Vec<FiredWindow>) -> BatchResult {
        self.agg.finish(windows)
    }
}

thread_local! {
    static INSTANCE: std::cell::RefCell<Option<AggregateInstance>> = const { std::cell::RefCell::new(None) };
}

fn with_instance<R>(what: &str, f: impl FnOnce(&AggregateInstance) -> R) -> R {
    INSTANCE.with_borrow(|instance| match instance {
        Some(instance) => f(instance),
        None => panic!("sluice: `{what}` called before `init`"),
    })
}

/// The aggregator's `init` export.
#[doc(hidden)]
pub fn guest_aggregate_init(def: AggregateDef, ctx: InitContext) -> Result<(), String> {
    let instance = AggregateInstance::new(def, ctx).map_err(Error::into_message)?;
    INSTANCE.set(Some(instance));
    Ok(())
}

/// The aggregator's `add` export.
#[doc(hidden)]
pub fn guest_aggregate_add(batch: Vec<Record>, groups: Vec<Accumulate>) -> AddResult {
    with_instance("add", |i| i.add(&batch, groups))
}

/// The aggregator's `merge` export.
#[doc(hidden)]
pub fn guest_aggregate_merge(groups: Vec<Vec<Vec<u8>>>) -> Vec<Vec<u8>> {
    with_instance("merge", |i| i.merge(groups))
}

/// The aggregator's `finish` export.
#[doc(hidden)]
pub fn guest_aggregate_finish(windows: Vec<FiredWindow>) -> BatchResult {
    with_instance("finish", |i| i.finish(windows))
}

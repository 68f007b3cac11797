//! The batch loop and the glue between the macros, the exports and the harness.

use std::cell::RefCell;

use crate::record::{BatchResult, InitContext, RecordError};
use crate::{sys, Context, Error, Params, Record, Timer};

/// An operator as the attribute macros generate it. Implemented by a hidden
/// type in the plugin crate; you normally never write it yourself.
#[doc(hidden)]
pub trait Operator: Sized + 'static {
    /// Whether the operator has an `on_timer` handler (world
    /// `keyed-process-operator`).
    const TIMERS: bool = false;
    /// Build the instance from the params (runs the init hook, if any).
    fn init(params: &Params) -> Result<Self, Error>;
    /// Process one record.
    fn process(&mut self, record: Record, ctx: &mut Context<'_>) -> Result<(), Error>;
    /// Handle one fired timer (only called if `TIMERS`).
    fn on_timer(&mut self, timer: Timer, ctx: &mut Context<'_>) -> Result<(), Error> {
        let _ = (timer, ctx);
        panic!("sluice: a timer fired for an operator without an `on_timer` handler")
    }
}

/// An operator with its type erased; the loop over a batch is monomorphised
/// per operator, so the only dynamic call is one per batch.
pub(crate) trait DynOperator {
    fn process_batch(&mut self, params: &Params, batch: Vec<Record>) -> BatchResult;
    fn timer_batch(&mut self, params: &Params, timers: Vec<Timer>) -> BatchResult;
}

impl<O: Operator> DynOperator for O {
    fn process_batch(&mut self, params: &Params, batch: Vec<Record>) -> BatchResult {
        // One allocation for the emits of the whole batch; none per record.
        let mut emits = Vec::with_capacity(batch.len());
        let mut errors = Vec::new();
        {
            let mut ctx = Context::new(params, &mut emits);
            for (index, record) in batch.into_iter().enumerate() {
                let index = index as u32;
                sys::set_current(index);
                ctx.start(index);
                if let Err(e) = self.process(record, &mut ctx) {
                    errors.push(RecordError {
                        input: index,
                        message: e.into_message(),
                    });
                }
            }
        }
        BatchResult { emits, errors }
    }

    fn timer_batch(&mut self, params: &Params, timers: Vec<Timer>) -> BatchResult {
        let mut emits = Vec::with_capacity(timers.len());
        let mut errors = Vec::new();
        {
            let mut ctx = Context::new(params, &mut emits);
            for (index, timer) in timers.into_iter().enumerate() {
                let index = index as u32;
                // Makes the timer's key current: state and timers act on it.
                sys::set_current(index);
                ctx.start(index);
                if let Err(e) = self.on_timer(timer, &mut ctx) {
                    errors.push(RecordError {
                        input: index,
                        message: e.into_message(),
                    });
                }
            }
        }
        BatchResult { emits, errors }
    }
}

/// A handle to the operator an attribute macro (`#[filter]`, `#[map]`,
/// `#[process]`) generated. The macro defines `__sluice_operator()` next to
/// the function, returning one; [`crate::testing::Harness`] drives it natively.
#[derive(Clone, Copy)]
pub struct OperatorDef {
    init: fn(&Params) -> Result<Box<dyn DynOperator>, Error>,
    timers: bool,
}

impl OperatorDef {
    #[doc(hidden)]
    pub fn of<O: Operator>() -> OperatorDef {
        OperatorDef {
            init: |params| Ok(Box::new(O::init(params)?)),
            timers: O::TIMERS,
        }
    }

    /// Whether the operator has an `on_timer` handler, i.e. is a
    /// `keyed-process-operator` component.
    pub fn has_timers(&self) -> bool {
        self.timers
    }
}

impl std::fmt::Debug for OperatorDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorDef")
            .field("timers", &self.timers)
            .finish_non_exhaustive()
    }
}

/// One initialised operator instance and its params.
pub(crate) struct Instance {
    pub(crate) params: Params,
    pub(crate) timers: bool,
    op: Box<dyn DynOperator>,
}

/// The params of an instance, with where it runs.
pub(crate) fn instance_params(ctx: InitContext) -> Result<Params, Error> {
    Ok(Params::parse(&ctx.params)?.with_instance(ctx.operator, ctx.subtask, ctx.parallelism))
}

impl Instance {
    pub(crate) fn new(def: OperatorDef, ctx: InitContext) -> Result<Instance, Error> {
        let params = instance_params(ctx)?;
        sys::allow_timers(def.timers);
        let op = (def.init)(&params)?;
        Ok(Instance {
            params,
            timers: def.timers,
            op,
        })
    }

    pub(crate) fn process(&mut self, batch: Vec<Record>) -> BatchResult {
        self.op.process_batch(&self.params, batch)
    }

    pub(crate) fn on_timer(&mut self, timers: Vec<Timer>) -> BatchResult {
        assert!(
            self.timers,
            "sluice: on-timer called for an operator without an `on_timer` handler"
        );
        self.op.timer_batch(&self.params, timers)
    }
}

thread_local! {
    static INSTANCE: RefCell<Option<Instance>> = const { RefCell::new(None) };
}

/// The `init` export.
#[doc(hidden)]
pub fn guest_init(def: OperatorDef, ctx: InitContext) -> Result<(), String> {
    let instance = Instance::new(def, ctx).map_err(Error::into_message)?;
    INSTANCE.set(Some(instance));
    Ok(())
}

/// The `process` export.
#[doc(hidden)]
pub fn guest_process(batch: Vec<Record>) -> BatchResult {
    INSTANCE.with_borrow_mut(|instance| match instance {
        Some(instance) => instance.process(batch),
        None => panic!("sluice: `process` called before `init`"),
    })
}

/// The `on-timer` export.
#[doc(hidden)]
pub fn guest_on_timer(timers: Vec<Timer>) -> BatchResult {
    INSTANCE.with_borrow_mut(|instance| match instance {
        Some(instance) => instance.on_timer(timers),
        None => panic!("sluice: `on-timer` called before `init`"),
    })
}

// The export macros. Each generates, in the plugin crate, the bindings of one
// world with every import mapped to the SDK's own bindings (so only the
// exports and the world's description are generated there), implements the
// world's exports with the SDK's runtime, and exports them. A component thus
// exports exactly the interfaces of its world. `$wit` is the text of
// `wit/operator.wit`, inlined by the attribute macros; `$def` names the
// `fn() -> OperatorDef` (or `AggregateDef`) next to the invocation.

/// Export a `process-operator` component (wasm32 only; nothing natively).
#[doc(hidden)]
#[macro_export]
macro_rules! __export_process_operator {
    ($wit:literal, $def:ident) => {
        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        mod __sluice_component {
            ::sluice_sdk::__private::wit_bindgen::generate!({
                inline: $wit,
                world: "process-operator",
                runtime_path: "::sluice_sdk::__private::wit_bindgen::rt",
                with: {
                    "sluice:operator/types@0.1.1": ::sluice_sdk::__private::types,
                    "sluice:operator/context@0.1.1": ::sluice_sdk::__private::bindings::sluice::operator::context,
                    "sluice:operator/state@0.1.1": ::sluice_sdk::__private::bindings::sluice::operator::state,
                    "sluice:operator/log@0.1.1": ::sluice_sdk::__private::bindings::sluice::operator::log,
                    "sluice:operator/metrics@0.1.1": ::sluice_sdk::__private::bindings::sluice::operator::metrics,
                },
            });

            struct __SluiceGuest;

            impl exports::sluice::operator::processor::Guest for __SluiceGuest {
                fn init(ctx: $crate::__private::InitContext) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__private::guest_init(super::$def(), ctx)
                }
                fn process(batch: ::std::vec::Vec<$crate::Record>) -> $crate::BatchResult {
                    $crate::__private::guest_process(batch)
                }
            }

            export!(__SluiceGuest);
        }
    };
}

/// Export a `keyed-process-operator` component (wasm32 only; nothing natively).
#[doc(hidden)]
#[macro_export]
macro_rules! __export_keyed_process_operator {
    ($wit:literal, $def:ident) => {
        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        mod __sluice_component {
            ::sluice_sdk::__private::wit_bindgen::generate!({
                inline: $wit,
                world: "keyed-process-operator",
                runtime_path: "::sluice_sdk::__private::wit_bindgen::rt",
                with: {
                    "sluice:operator/types@0.1.1": ::sluice_sdk::__private::types,
                    "sluice:operator/context@0.1.1": ::sluice_sdk::__private::bindings::sluice::operator::context,
                    "sluice:operator/state@0.1.1": ::sluice_sdk::__private::bindings::sluice::operator::state,
                    "sluice:operator/log@0.1.1": ::sluice_sdk::__private::bindings::sluice::operator::log,
                    "sluice:operator/metrics@0.1.1": ::sluice_sdk::__private::bindings::sluice::operator::metrics,
                    "sluice:operator/timers@0.1.1": ::sluice_sdk::__private::bindings::sluice::operator::timers,
                },
            });

            struct __SluiceGuest;

            impl exports::sluice::operator::processor::Guest for __SluiceGuest {
                fn init(ctx: $crate::__private::InitContext) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__private::guest_init(super::$def(), ctx)
                }
                fn process(batch: ::std::vec::Vec<$crate::Record>) -> $crate::BatchResult {
                    $crate::__private::guest_process(batch)
                }
            }

            impl exports::sluice::operator::timer_handler::Guest for __SluiceGuest {
                fn on_timer(timers: ::std::vec::Vec<$crate::Timer>) -> $crate::BatchResult {
                    $crate::__private::guest_on_timer(timers)
                }
            }

            export!(__SluiceGuest);
        }
    };
}

/// Export a `window-aggregate` component (wasm32 only; nothing natively).
#[doc(hidden)]
#[macro_export]
macro_rules! __export_window_aggregate {
    ($wit:literal, $def:ident) => {
        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        mod __sluice_component {
            ::sluice_sdk::__private::wit_bindgen::generate!({
                inline: $wit,
                world: "window-aggregate",
                runtime_path: "::sluice_sdk::__private::wit_bindgen::rt",
                with: {
                    "sluice:operator/types@0.1.1": ::sluice_sdk::__private::types,
                    "sluice:operator/context@0.1.1": ::sluice_sdk::__private::bindings::sluice::operator::context,
                    "sluice:operator/state@0.1.1": ::sluice_sdk::__private::bindings::sluice::operator::state,
                    "sluice:operator/log@0.1.1": ::sluice_sdk::__private::bindings::sluice::operator::log,
                    "sluice:operator/metrics@0.1.1": ::sluice_sdk::__private::bindings::sluice::operator::metrics,
                },
            });

            use exports::sluice::operator::aggregator as __agg;

            struct __SluiceGuest;

            impl __agg::Guest for __SluiceGuest {
                fn init(ctx: $crate::__private::InitContext) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__private::guest_aggregate_init(super::$def(), ctx)
                }
                fn add(
                    batch: ::std::vec::Vec<$crate::Record>,
                    groups: ::std::vec::Vec<__agg::Accumulate>,
                ) -> __agg::AddResult {
                    let groups = groups
                        .into_iter()
                        .map(|g| $crate::aggregate::Accumulate {
                            accumulator: g.accumulator,
                            inputs: g.inputs,
                        })
                        .collect();
                    let out = $crate::__private::guest_aggregate_add(batch, groups);
                    __agg::AddResult {
                        accumulators: out.accumulators,
                        errors: out.errors,
                    }
                }
                fn merge(
                    groups: ::std::vec::Vec<::std::vec::Vec<::std::vec::Vec<u8>>>,
                ) -> ::std::vec::Vec<::std::vec::Vec<u8>> {
                    $crate::__private::guest_aggregate_merge(groups)
                }
                fn finish(windows: ::std::vec::Vec<__agg::FiredWindow>) -> $crate::BatchResult {
                    let windows = windows
                        .into_iter()
                        .map(|w| $crate::aggregate::FiredWindow {
                            key: w.key,
                            window: w.window,
                            accumulator: w.accumulator,
                        })
                        .collect();
                    $crate::__private::guest_aggregate_finish(windows)
                }
            }

            export!(__SluiceGuest);
        }
    };
}

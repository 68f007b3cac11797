//! The batch loop and the glue between the macros, the exports and the harness.

use std::cell::RefCell;

use crate::record::{BatchResult, InitContext, RecordError};
use crate::{sys, Context, Error, Params, PreviousVersion, Record, Timer};

/// An operator as the attribute macros generate it. Implemented by a hidden
/// type in the plugin crate; you normally never write it yourself.
#[doc(hidden)]
pub trait Operator: Sized + 'static {
    /// Whether the operator has an `on_timer` handler (world
    /// `keyed-process-operator`).
    const TIMERS: bool = false;
    /// Whether the operator has a `migrate` hook (world
    /// `migrating-process-operator` or `migrating-keyed-process-operator`).
    const MIGRATES: bool = false;
    /// Build the instance from the params (runs the init hook, if any).
    fn init(params: &Params) -> Result<Self, Error>;
    /// Process one record.
    fn process(&mut self, record: Record, ctx: &mut Context<'_>) -> Result<(), Error>;
    /// Handle one fired timer (only called if `TIMERS`).
    fn on_timer(&mut self, timer: Timer, ctx: &mut Context<'_>) -> Result<(), Error> {
        let _ = (timer, ctx);
        panic!("sluice: a timer fired for an operator without an `on_timer` handler")
    }
    /// Whether the state written by `from` needs [`Operator::migrate`]: the
    /// `migrate_if` hook, true without one, false without `migrate`.
    fn needs_migration(&self, from: &PreviousVersion) -> Result<bool, Error> {
        let _ = from;
        Ok(false)
    }
    /// Rewrite the state of `key`, which is current (only called if `MIGRATES`).
    fn migrate(&mut self, key: &[u8], from: &PreviousVersion) -> Result<(), Error> {
        let _ = (key, from);
        panic!("sluice: migrate called for an operator without a `migrate` hook")
    }
}

/// An operator with its type erased; the loop over a batch is monomorphised
/// per operator, so the only dynamic call is one per batch.
pub(crate) trait DynOperator {
    fn process_batch(&mut self, params: &Params, batch: Vec<Record>) -> BatchResult;
    fn timer_batch(&mut self, params: &Params, timers: Vec<Timer>) -> BatchResult;
    fn needs_migration(&self, from: &PreviousVersion) -> Result<bool, Error>;
    fn migrate_batch(
        &mut self,
        keys: &[Vec<u8>],
        from: &PreviousVersion,
    ) -> Result<(), RecordError>;
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

    fn needs_migration(&self, from: &PreviousVersion) -> Result<bool, Error> {
        Operator::needs_migration(self, from)
    }

    fn migrate_batch(
        &mut self,
        keys: &[Vec<u8>],
        from: &PreviousVersion,
    ) -> Result<(), RecordError> {
        for (index, key) in keys.iter().enumerate() {
            let index = index as u32;
            // Makes the key current: state handles act on it.
            sys::set_current(index);
            // The first error rejects the whole migration: no point going on.
            self.migrate(key, from).map_err(|e| RecordError {
                input: index,
                message: e.into_message(),
            })?;
        }
        Ok(())
    }
}

/// A handle to the operator an attribute macro (`#[filter]`, `#[map]`,
/// `#[process]`) generated. The macro defines `__sluice_operator()` next to
/// the function, returning one; [`crate::testing::Harness`] drives it natively.
#[derive(Clone, Copy)]
pub struct OperatorDef {
    init: fn(&Params) -> Result<Box<dyn DynOperator>, Error>,
    timers: bool,
    migrates: bool,
}

impl OperatorDef {
    #[doc(hidden)]
    pub fn of<O: Operator>() -> OperatorDef {
        OperatorDef {
            init: |params| Ok(Box::new(O::init(params)?)),
            timers: O::TIMERS,
            migrates: O::MIGRATES,
        }
    }

    /// Whether the operator has an `on_timer` handler, i.e. is a
    /// `keyed-process-operator` component.
    pub fn has_timers(&self) -> bool {
        self.timers
    }

    /// Whether the operator has a `migrate` hook, i.e. is a
    /// `migrating-process-operator` (or, with timers,
    /// `migrating-keyed-process-operator`) component.
    pub fn migrates(&self) -> bool {
        self.migrates
    }
}

impl std::fmt::Debug for OperatorDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorDef")
            .field("timers", &self.timers)
            .field("migrates", &self.migrates)
            .finish_non_exhaustive()
    }
}

/// One initialised operator instance and its params.
pub(crate) struct Instance {
    pub(crate) params: Params,
    pub(crate) timers: bool,
    migrates: bool,
    /// The version being replaced, once `needs-migration` named it.
    previous: Option<PreviousVersion>,
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
            migrates: def.migrates,
            previous: None,
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

    /// Whether the state `previous` wrote needs migrating; remembers
    /// `previous` for the `migrate` calls that follow.
    pub(crate) fn needs_migration(&mut self, previous: PreviousVersion) -> Result<bool, Error> {
        let needs = self.op.needs_migration(&previous)?;
        self.previous = Some(previous);
        Ok(needs)
    }

    pub(crate) fn migrate(&mut self, keys: &[Vec<u8>]) -> Result<(), RecordError> {
        assert!(
            self.migrates,
            "sluice: migrate called for an operator without a `migrate` hook"
        );
        let Some(previous) = &self.previous else {
            panic!("sluice: `migrate` called before `needs-migration`")
        };
        self.op.migrate_batch(keys, previous)
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

/// The `needs-migration` export.
#[doc(hidden)]
pub fn guest_needs_migration(previous: PreviousVersion) -> Result<bool, String> {
    INSTANCE.with_borrow_mut(|instance| match instance {
        Some(instance) => instance
            .needs_migration(previous)
            .map_err(Error::into_message),
        None => panic!("sluice: `needs-migration` called before `init`"),
    })
}

/// The `migrate` export.
#[doc(hidden)]
pub fn guest_migrate(keys: Vec<Vec<u8>>) -> Result<(), RecordError> {
    INSTANCE.with_borrow_mut(|instance| match instance {
        Some(instance) => instance.migrate(&keys),
        None => panic!("sluice: `migrate` called before `init`"),
    })
}

// The export macros. Each exports one world: it generates, in the plugin
// crate, the bindings of that world with every import mapped to the SDK's own
// bindings (so only the exports and the world's description are generated
// there), implements the world's exports with the SDK's runtime, and exports
// them. A component thus exports exactly the interfaces of its world. `$wit`
// is the text of `wit/operator.wit`, inlined by the attribute macros; `$def`
// names the `fn() -> OperatorDef` (or `AggregateDef`) next to the invocation.

/// Export a `process-operator` component (wasm32 only; nothing natively).
#[doc(hidden)]
#[macro_export]
macro_rules! __export_process_operator {
    ($wit:literal, $def:ident) => {
        $crate::__export_world!($wit, $def, "process-operator", [], [processor]);
    };
}

/// Export a `keyed-process-operator` component (wasm32 only; nothing natively).
#[doc(hidden)]
#[macro_export]
macro_rules! __export_keyed_process_operator {
    ($wit:literal, $def:ident) => {
        $crate::__export_world!(
            $wit,
            $def,
            "keyed-process-operator",
            [timers],
            [processor, timer_handler]
        );
    };
}

/// Export a `migrating-process-operator` component (wasm32 only; nothing
/// natively).
#[doc(hidden)]
#[macro_export]
macro_rules! __export_migrating_process_operator {
    ($wit:literal, $def:ident) => {
        $crate::__export_world!(
            $wit,
            $def,
            "migrating-process-operator",
            [],
            [processor, migrator]
        );
    };
}

/// Export a `migrating-keyed-process-operator` component (wasm32 only;
/// nothing natively).
#[doc(hidden)]
#[macro_export]
macro_rules! __export_migrating_keyed_process_operator {
    ($wit:literal, $def:ident) => {
        $crate::__export_world!(
            $wit,
            $def,
            "migrating-keyed-process-operator",
            [timers],
            [processor, timer_handler, migrator]
        );
    };
}

/// Export a `window-aggregate` component (wasm32 only; nothing natively).
#[doc(hidden)]
#[macro_export]
macro_rules! __export_window_aggregate {
    ($wit:literal, $def:ident) => {
        $crate::__export_world!($wit, $def, "window-aggregate", [], [aggregator]);
    };
}

/// Export world `$world`, implementing each interface in `[$export, ..]`
/// with `__export_guest!`. `[timers]` maps the host's timers for worlds
/// that import them: wit-bindgen refuses a `with` entry the world does not
/// use, so it cannot always be there. The contract version appears only here
/// and in `__private::bindings`.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_world {
    ($wit:literal, $def:ident, $world:literal, [$($timers:ident)?], [$($export:ident),+]) => {
        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        mod __sluice_component {
            ::sluice_sdk::__private::wit_bindgen::generate!({
                inline: $wit,
                world: $world,
                runtime_path: "::sluice_sdk::__private::wit_bindgen::rt",
                with: {
                    "sluice:operator/types@0.1.3": ::sluice_sdk::__private::types,
                    "sluice:operator/context@0.1.3": ::sluice_sdk::__private::bindings::sluice::operator::context,
                    "sluice:operator/record-info@0.1.3": ::sluice_sdk::__private::bindings::sluice::operator::record_info,
                    "sluice:operator/state@0.1.3": ::sluice_sdk::__private::bindings::sluice::operator::state,
                    "sluice:operator/log@0.1.3": ::sluice_sdk::__private::bindings::sluice::operator::log,
                    "sluice:operator/metrics@0.1.3": ::sluice_sdk::__private::bindings::sluice::operator::metrics,
                    $("sluice:operator/timers@0.1.3": ::sluice_sdk::__private::bindings::sluice::operator::$timers,)?
                },
            });

            struct __SluiceGuest;

            $($crate::__export_guest!($export, $def);)+

            export!(__SluiceGuest);
        }
    };
}

/// Implement one exported interface for `__SluiceGuest` with the SDK's
/// runtime, inside the module `__export_world!` generates.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_guest {
    (processor, $def:ident) => {
        impl exports::sluice::operator::processor::Guest for __SluiceGuest {
            fn init(
                ctx: $crate::__private::InitContext,
            ) -> ::core::result::Result<(), ::std::string::String> {
                $crate::__private::guest_init(super::$def(), ctx)
            }
            fn process(batch: ::std::vec::Vec<$crate::Record>) -> $crate::BatchResult {
                $crate::__private::guest_process(batch)
            }
        }
    };
    (timer_handler, $def:ident) => {
        impl exports::sluice::operator::timer_handler::Guest for __SluiceGuest {
            fn on_timer(timers: ::std::vec::Vec<$crate::Timer>) -> $crate::BatchResult {
                $crate::__private::guest_on_timer(timers)
            }
        }
    };
    (migrator, $def:ident) => {
        impl exports::sluice::operator::migrator::Guest for __SluiceGuest {
            fn needs_migration(
                previous: exports::sluice::operator::migrator::PreviousVersion,
            ) -> ::core::result::Result<bool, ::std::string::String> {
                $crate::__private::guest_needs_migration($crate::PreviousVersion {
                    digest: previous.digest,
                    contract: previous.contract,
                    params: previous.params,
                })
            }
            fn migrate(
                keys: ::std::vec::Vec<::std::vec::Vec<u8>>,
            ) -> ::core::result::Result<(), $crate::RecordError> {
                $crate::__private::guest_migrate(keys)
            }
        }
    };
    (aggregator, $def:ident) => {
        use exports::sluice::operator::aggregator as __agg;

        impl __agg::Guest for __SluiceGuest {
            fn init(
                ctx: $crate::__private::InitContext,
            ) -> ::core::result::Result<(), ::std::string::String> {
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
    };
}

//! The batch loop and the glue between the macros, the exports and the harness.

use std::cell::RefCell;

use crate::record::{BatchResult, InitContext, RecordError};
use crate::{sys, Context, Error, Params, Record};

/// An operator as the attribute macros generate it. Implemented by a hidden
/// type in the plugin crate; you normally never write it yourself.
#[doc(hidden)]
pub trait Operator: Sized + 'static {
    /// Build the instance from the params (runs the init hook, if any).
    fn init(params: &Params) -> Result<Self, Error>;
    /// Process one record.
    fn process(&mut self, record: Record, ctx: &mut Context<'_>) -> Result<(), Error>;
}

/// An operator with its type erased; the loop over a batch is monomorphised
/// per operator, so the only dynamic call is one per batch.
pub(crate) trait DynOperator {
    fn process_batch(&mut self, params: &Params, batch: Vec<Record>) -> BatchResult;
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
}

/// A handle to the operator an attribute macro (`#[filter]`, `#[map]`,
/// `#[process]`) generated. The macro defines `__sluice_operator()` next to
/// the function, returning one; [`crate::testing::Harness`] drives it natively.
#[derive(Clone, Copy)]
pub struct OperatorDef {
    init: fn(&Params) -> Result<Box<dyn DynOperator>, Error>,
}

impl OperatorDef {
    #[doc(hidden)]
    pub fn of<O: Operator>() -> OperatorDef {
        OperatorDef {
            init: |params| Ok(Box::new(O::init(params)?)),
        }
    }
}

impl std::fmt::Debug for OperatorDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OperatorDef")
    }
}

/// One initialised operator instance and its params.
pub(crate) struct Instance {
    pub(crate) params: Params,
    op: Box<dyn DynOperator>,
}

impl Instance {
    pub(crate) fn new(def: OperatorDef, ctx: InitContext) -> Result<Instance, Error> {
        let params =
            Params::parse(&ctx.params)?.with_instance(ctx.operator, ctx.subtask, ctx.parallelism);
        let op = (def.init)(&params)?;
        Ok(Instance { params, op })
    }

    pub(crate) fn process(&mut self, batch: Vec<Record>) -> BatchResult {
        self.op.process_batch(&self.params, batch)
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

/// Export the operator from the component (wasm32 only; nothing natively).
/// Used by the attribute macros.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_operator {
    ($def:expr) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __SluiceGuest;
            impl $crate::__private::bindings::exports::sluice::operator::processor::Guest for __SluiceGuest {
                fn init(ctx: $crate::__private::InitContext) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__private::guest_init($def, ctx)
                }
                fn process(batch: ::std::vec::Vec<$crate::Record>) -> $crate::BatchResult {
                    $crate::__private::guest_process(batch)
                }
            }
            $crate::__private::export_process_operator!(__SluiceGuest with_types_in $crate::__private::bindings);
        };
    };
}

//! Fixture: a pass-through operator built against `sluice:operator@0.9.0`
//! (a copy of the WIT with only the version changed, in `wit/`), bound with
//! raw wit-bindgen. A 0.1 host must refuse it, naming the version.

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({
        world: "process-operator",
        path: "wit",
    });

    use exports::sluice::operator::processor::Guest;
    use sluice::operator::context;
    use sluice::operator::types::{BatchResult, Emit, InitContext, Output, Record};

    struct PassThrough;

    impl Guest for PassThrough {
        fn init(_ctx: InitContext) -> Result<(), String> {
            Ok(())
        }

        fn process(batch: Vec<Record>) -> BatchResult {
            let emits = batch
                .into_iter()
                .enumerate()
                .map(|(i, record)| {
                    context::set_current(i as u32);
                    Emit {
                        output: Output::Main,
                        record,
                        input: i as u32,
                    }
                })
                .collect();
            BatchResult {
                emits,
                errors: Vec::new(),
            }
        }
    }

    export!(PassThrough);
}

//! Fixture: proves that components built against the old contract still load.
//!
//! Built **without the SDK**, directly with `wit-bindgen` against the frozen
//! `sluice:operator@0.1.0` WIT in `wit/operator.wit` (world
//! `process-operator`), so the component exports
//! `sluice:operator/processor@0.1.0` and imports `sluice:operator/context@0.1.0`.
//!
//! A stateless map: for each record it calls `set-current(i)` and emits, on the
//! main output with `input` = its index, the same record (same key, event time
//! and headers, in order) with every ASCII letter of the value uppercased
//! (other bytes unchanged, UTF-8 or not). No errors, no state.

/// The value, with ASCII letters uppercased.
pub fn uppercase(mut value: Vec<u8>) -> Vec<u8> {
    value.make_ascii_uppercase();
    value
}

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({
        world: "process-operator",
        path: "wit",
    });

    use exports::sluice::operator::processor::Guest;
    use sluice::operator::context;
    use sluice::operator::types::{BatchResult, Emit, InitContext, Output, Record};

    struct Uppercase;

    impl Guest for Uppercase {
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
                        record: Record {
                            value: super::uppercase(record.value),
                            ..record
                        },
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

    export!(Uppercase);
}

#[cfg(test)]
mod tests {
    use super::uppercase;

    #[test]
    fn uppercases_ascii_only() {
        assert_eq!(uppercase(b"hello, World 42".to_vec()), b"HELLO, WORLD 42");
        assert_eq!(uppercase("ünï".as_bytes().to_vec()), "üNï".as_bytes());
        assert_eq!(uppercase(vec![0xff, b'a']), vec![0xff, b'A']);
    }

    #[test]
    fn wit_is_the_frozen_0_1_0_contract() {
        let wit = include_str!("../wit/operator.wit");
        assert!(wit.contains("package sluice:operator@0.1.0;"));
        assert!(wit.contains("world process-operator"));
    }
}

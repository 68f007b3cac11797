//! Fixture for hot swaps: a keyed counter whose outputs say which version
//! counted them. Per key it keeps a count (value state `count`) and emits
//! `<key> <count> v2 <input value>`. `fixture-versioned-count-v1` is the
//! same with `v1`: swapping one for the other under load must continue
//! every count where the other left it.

use sluice_sdk::{Context, Error, Record, ValueState};

/// The version this build tags its outputs with.
pub const VERSION: &str = "v2";

include!("../../fixture-versioned-count-v1/src/count.rs");

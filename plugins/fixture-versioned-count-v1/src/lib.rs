//! Fixture for hot swaps: a keyed counter whose outputs say which version
//! counted them. Per key it keeps a count (value state `count`) and emits
//! `<key> <count> v1 <input value>`. `fixture-versioned-count-v2` is the
//! same with `v2`: swapping one for the other under load must continue
//! every count where the other left it.

use sluice_sdk::{Context, Error, Record, ValueState};

/// The version this build tags its outputs with.
pub const VERSION: &str = "v1";

include!("count.rs");

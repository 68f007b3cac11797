//! The connector types of this crate, in one list.

use crate::registry::Registry;
use crate::{datagen, file, stdout};

/// A registry with every connector type of this crate: the synthetic
/// sources (`generator`, `turbines`, `clicks`), `file` (source and sink)
/// and `stdout` (sink), in the order messages list them. Connectors in
/// their own crates (Kafka) add themselves with their `register` function.
pub fn builtin() -> Registry {
    let mut registry = Registry::new();
    datagen::register(&mut registry);
    file::register(&mut registry);
    stdout::register(&mut registry);
    registry
}

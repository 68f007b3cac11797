//! Rewriting keyed state when a new plugin version replaces an old one.
//!
//! Keyed state outlives the plugin that wrote it: after a hot swap the new
//! version reads what the old one left in the host. When the new version
//! stores its state differently (another state name, another type), give
//! `#[process]` (or `#[filter]`, `#[map]`) a `migrate` hook, and the
//! component targets world `migrating-process-operator`
//! (`migrating-keyed-process-operator` with `on_timer`):
//!
//! - `migrate = f`, `fn f(key: &[u8], from: &PreviousVersion) -> Result<(), E>`,
//!   is called once for every key that has state in the subtask, with that
//!   key current: [`ValueState`](crate::ValueState) and
//!   [`MapState`](crate::MapState) handles read the old layout and write the
//!   new one for that key.
//! - `migrate_if = g` (optional, only with `migrate`),
//!   `fn g(from: &PreviousVersion) -> bool`, decides once per subtask whether
//!   to migrate at all; without it every swap migrates.
//!
//! The host runs the migration at the swap point, after `init` and before the
//! new version's first record. It is all or nothing: if `f` returns `Err` for
//! one key (or panics), every state write of the migration is undone, the
//! deploy is rejected with the error's message, and the old version keeps
//! running. Run it again from the same state and it must do the same
//! (the host re-runs it when it recovers from a checkpoint taken before the
//! swap), so a migration must be deterministic.
//!
//! The hooks take no params argument: read the new version's params in an
//! `init` hook and keep what the migration needs in a `thread_local!` (the
//! previous version's params are in [`PreviousVersion::params`]).
//!
//! ```
//! use sluice_sdk::{Context, Error, PreviousVersion, Record, ValueState};
//!
//! /// The old layout: a count.
//! static COUNT: ValueState<u64> = ValueState::new("count");
//! /// The new layout: a count and the last value seen.
//! static SEEN: ValueState<(u64, String)> = ValueState::new("seen");
//!
//! #[sluice_sdk::process(migrate = to_seen)]
//! fn remember(record: Record, ctx: &mut Context) -> Result<(), Error> {
//!     let (n, _) = SEEN.get()?.unwrap_or_default();
//!     let value = record.value_str().unwrap_or("").to_owned();
//!     SEEN.set(&(n + 1, value))?;
//!     ctx.emit(record.with_value((n + 1).to_string()));
//!     Ok(())
//! }
//!
//! fn to_seen(_key: &[u8], _from: &PreviousVersion) -> Result<(), Error> {
//!     if let Some(n) = COUNT.get()? {
//!         SEEN.set(&(n, String::new()))?;
//!         COUNT.clear();
//!     }
//!     Ok(())
//! }
//! # fn main() {
//! # mod old {
//! #     use sluice_sdk::{Context, Error, Record, ValueState};
//! #     static COUNT: ValueState<u64> = ValueState::new("count");
//! #     #[sluice_sdk::process]
//! #     fn count(_r: Record, _c: &mut Context) -> Result<(), Error> {
//! #         COUNT.update(|n| n.unwrap_or(0) + 1)?;
//! #         Ok(())
//! #     }
//! # }
//! // The old version counted two records for key "k" ...
//! let mut h = sluice_sdk::testing::Harness::new(old::__sluice_operator(), "{}");
//! h.process(vec![Record::new("").with_key("k"), Record::new("").with_key("k")]);
//! // ... the new one replaces it and migrates ...
//! h.swap(__sluice_operator(), "{}").unwrap();
//! assert_eq!(h.migrate(&PreviousVersion::default()), Ok(true));
//! assert_eq!(h.value::<u64>("count", b"k"), None);
//! // ... and continues the count.
//! assert_eq!(h.process(vec![Record::new("x").with_key("k")]).main_values(), ["3"]);
//! # }
//! ```
//!
//! [`testing::Harness::migrate`](crate::testing::Harness::migrate) runs a
//! migration natively, as the host does. `#[aggregate]` has no migration:
//! window accumulators must stay decodable by the new version.
//!
//! `migrate_if` alone is refused at compile time: it only decides whether
//! `migrate` runs.
//!
//! ```compile_fail
//! use sluice_sdk::{Error, PreviousVersion, Record};
//!
//! #[sluice_sdk::filter(migrate_if = always)] // error: `migrate_if` needs `migrate = path::to::fn`
//! fn keep(_record: &Record) -> Result<bool, Error> {
//!     Ok(true)
//! }
//!
//! fn always(_from: &PreviousVersion) -> bool {
//!     true
//! }
//! ```

use crate::{Error, Params};

/// The plugin version a new one replaces, as the host describes it to
/// `migrate_if` and `migrate` (the WIT `migrator.previous-version`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PreviousVersion {
    /// Hex SHA-256 of the old version's component.
    pub digest: String,
    /// The contract version it was built for, such as `0.1.1`.
    pub contract: String,
    /// Its params, as a JSON object (see [`PreviousVersion::params`]).
    pub params: String,
}

impl PreviousVersion {
    /// The old version's params, parsed (an empty string means none).
    ///
    /// ```
    /// let from = sluice_sdk::PreviousVersion { params: r#"{"unit": "ms"}"#.into(), ..Default::default() };
    /// assert_eq!(from.params().unwrap().get::<String>("unit").unwrap().as_deref(), Some("ms"));
    /// ```
    pub fn params(&self) -> Result<Params, Error> {
        Params::parse(&self.params)
    }
}

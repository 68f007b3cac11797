//! Fixture for hot swaps that migrate state: the keyed counter of
//! `fixture-versioned-count-v1`/`-v2` in a new state layout. Per key it keeps
//! the count as decimal text in value state `tally` (v1 and v2 keep a `u64`
//! in `count`) and emits `<key> <count> v4 <input value>`.
//!
//! Its `migrate` hook turns each key's `count` into `tally` and clears
//! `count` (keys without `count` are left alone), so swapping v1 or v2 for v4
//! under load must continue every count where the old version left it.
//! Params, for the host's tests:
//!
//! - `"fail_migration_key": "<key>"`: migrating that key fails with
//!   `refusing to migrate key <key> (fail_migration_key)`, which must reject
//!   the deploy and undo the writes already made for other keys;
//! - `"skip_migration": true`: `needs-migration` answers false. Counts then
//!   start over (v4 never reads `count` outside the migration), which is what
//!   the migration exists to prevent.
//!
//! Swapping back to v1 or v2 does not carry counts over: they do not read
//! `tally`.

use std::cell::{Cell, RefCell};

use sluice_sdk::{Context, Error, Params, PreviousVersion, Record, ValueState};

/// The version this build tags its outputs with.
pub const VERSION: &str = "v4";

/// The old layout, exactly as v1 and v2 declare it.
static COUNT: ValueState<u64> = ValueState::new("count");
/// This version's layout: the count as decimal text.
static TALLY: ValueState<String> = ValueState::new("tally");

// Guest memory, set by `init` from this version's params. Per thread so that
// native tests with different params do not see each other's.
thread_local! {
    static FAIL_MIGRATION_KEY: RefCell<Option<String>> = const { RefCell::new(None) };
    static SKIP_MIGRATION: Cell<bool> = const { Cell::new(false) };
}

fn read_params(params: &Params) -> Result<(), Error> {
    FAIL_MIGRATION_KEY.set(params.get("fail_migration_key")?);
    SKIP_MIGRATION.set(params.get_or("skip_migration", false)?);
    Ok(())
}

/// Count the record for its key (in `tally`) and tag the output `v4`.
#[sluice_sdk::process(init = read_params, migrate = migrate_count, migrate_if = should_migrate)]
pub fn versioned_count(record: Record, ctx: &mut Context) -> Result<(), Error> {
    let key = String::from_utf8_lossy(record.key.as_deref().unwrap_or_default()).into_owned();
    let before = match TALLY.get()? {
        Some(text) => text
            .parse::<u64>()
            .map_err(|e| Error::msg(format!("state `tally` of key {key} is {text:?}: {e}")))?,
        // Deliberately no fallback to the old `count`: without the migration
        // a count starts over, so a test can tell that the migration ran.
        None => 0,
    };
    let count = before + 1;
    TALLY.set(&count.to_string())?;
    let value = format!(
        "{key} {count} {VERSION} {}",
        String::from_utf8_lossy(&record.value)
    )
    .into_bytes();
    ctx.emit(Record { value, ..record });
    Ok(())
}

fn should_migrate(_from: &PreviousVersion) -> bool {
    !SKIP_MIGRATION.get()
}

/// `count` (u64) -> `tally` (text), for the current key.
fn migrate_count(key: &[u8], _from: &PreviousVersion) -> Result<(), Error> {
    let key = String::from_utf8_lossy(key);
    if FAIL_MIGRATION_KEY.with_borrow(|k| k.as_deref() == Some(&*key)) {
        sluice_sdk::bail!("refusing to migrate key {key} (fail_migration_key)");
    }
    if let Some(count) = COUNT.get()? {
        TALLY.set(&count.to_string())?;
        COUNT.clear();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use sluice_sdk::testing::{Harness, MigrationError};
    use sluice_sdk::{PreviousVersion, Record};

    /// v1, from its own source.
    mod v1 {
        use sluice_sdk::{Context, Error, Record, ValueState};
        const VERSION: &str = "v1";
        include!("../../fixture-versioned-count-v1/src/count.rs");
    }

    fn keyed(key: &str, value: &str) -> Record {
        Record::new(value).with_key(key)
    }

    fn from_v1() -> PreviousVersion {
        PreviousVersion {
            digest: "0".repeat(64),
            contract: "0.1.2".into(),
            params: "{}".into(),
        }
    }

    /// v1 counted `a` twice and `b` once.
    fn after_v1() -> Harness {
        let mut h = Harness::new(v1::__sluice_operator(), "{}");
        let out = h.process(vec![keyed("a", "x"), keyed("b", "y"), keyed("a", "z")]);
        assert_eq!(out.main_values(), ["a 1 v1 x", "b 1 v1 y", "a 2 v1 z"]);
        h
    }

    #[test]
    fn migrates_v1_counts_and_continues_them() {
        let mut h = after_v1();
        h.swap(crate::__sluice_operator(), "{}").unwrap();
        assert_eq!(h.migrate(&from_v1()), Ok(true));
        assert_eq!(h.value::<u64>("count", b"a"), None);
        assert_eq!(h.value::<String>("tally", b"a").as_deref(), Some("2"));
        assert_eq!(h.value::<String>("tally", b"b").as_deref(), Some("1"));
        let out = h.process(vec![keyed("a", "p"), keyed("c", "q"), keyed("b", "r")]);
        assert_eq!(out.main_values(), ["a 3 v4 p", "c 1 v4 q", "b 2 v4 r"]);
        assert_eq!(out.main()[0].key_str(), Some("a"));
        // A v4 -> v4 swap migrates nothing: no key has `count` any more.
        h.swap(crate::__sluice_operator(), "{}").unwrap();
        assert_eq!(h.migrate(&from_v1()), Ok(true));
        assert_eq!(h.value::<String>("tally", b"a").as_deref(), Some("3"));
    }

    #[test]
    fn failing_key_rolls_back_every_key() {
        let mut h = after_v1();
        h.swap(crate::__sluice_operator(), r#"{"fail_migration_key": "b"}"#)
            .unwrap();
        assert_eq!(
            h.migrate(&from_v1()),
            Err(MigrationError {
                key: Some(b"b".to_vec()),
                message: "refusing to migrate key b (fail_migration_key)".into(),
            })
        );
        // `a` came first and was migrated, then undone.
        assert_eq!(h.value::<u64>("count", b"a"), Some(2));
        assert_eq!(h.value::<String>("tally", b"a"), None);
        assert_eq!(h.value::<u64>("count", b"b"), Some(1));
    }

    #[test]
    fn without_migration_counts_start_over() {
        let mut h = after_v1();
        h.swap(crate::__sluice_operator(), r#"{"skip_migration": true}"#)
            .unwrap();
        assert_eq!(h.migrate(&from_v1()), Ok(false));
        assert_eq!(h.value::<u64>("count", b"a"), Some(2));
        let out = h.process(vec![keyed("a", "p"), keyed("a", "q")]);
        assert_eq!(out.main_values(), ["a 1 v4 p", "a 2 v4 q"]);
    }

    #[test]
    fn a_fresh_start_counts_from_one() {
        let mut h = sluice_sdk::harness!();
        let out = h.process(vec![keyed("k", "1"), keyed("k", "2")]);
        assert_eq!(out.main_values(), ["k 1 v4 1", "k 2 v4 2"]);
    }
}

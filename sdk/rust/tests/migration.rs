//! State migration on a swap (`migrate`, `migrate_if`), driven through the
//! native harness: an old version writes one layout, the new one migrates it.

/// The old version: a count per key (`count`, u64), and for values
/// `w:<word>` only a word count (`words`, map of u32) instead.
mod old {
    use sluice_sdk::{Context, Error, MapState, Record, ValueState};

    static COUNT: ValueState<u64> = ValueState::new("count");
    static WORDS: MapState<String, u32> = MapState::new("words");

    #[sluice_sdk::process]
    fn op(record: Record, _ctx: &mut Context) -> Result<(), Error> {
        match record.value_str().unwrap_or("").strip_prefix("w:") {
            Some(word) => {
                let word = word.to_owned();
                WORDS.insert(&word, &(WORDS.get(&word)?.unwrap_or(0) + 1))?;
            }
            None => {
                COUNT.update(|n| n.unwrap_or(0) + 1)?;
            }
        }
        Ok(())
    }
}

/// The new version: the count as text (`tally`) and the words as u64
/// (`words64`). Params: `fail_key` fails the migration of that key,
/// `panic_key` panics on it. A previous version whose params say
/// `"migrated": true` needs no migration.
mod new {
    use std::cell::RefCell;

    use sluice_sdk::{Context, Error, MapState, Params, PreviousVersion, Record, ValueState};

    static COUNT: ValueState<u64> = ValueState::new("count");
    static WORDS: MapState<String, u32> = MapState::new("words");
    static TALLY: ValueState<String> = ValueState::new("tally");
    static WORDS64: MapState<String, u64> = MapState::new("words64");

    thread_local! {
        static FAIL_KEY: RefCell<Option<String>> = const { RefCell::new(None) };
        static PANIC_KEY: RefCell<Option<String>> = const { RefCell::new(None) };
    }

    fn setup(params: &Params) -> Result<(), Error> {
        FAIL_KEY.set(params.get("fail_key")?);
        PANIC_KEY.set(params.get("panic_key")?);
        Ok(())
    }

    #[sluice_sdk::process(init = setup, migrate = to_new, migrate_if = not_yet_migrated)]
    fn op(record: Record, ctx: &mut Context) -> Result<(), Error> {
        let n: u64 = TALLY.get()?.as_deref().unwrap_or("0").parse()?;
        TALLY.set(&(n + 1).to_string())?;
        ctx.emit(record.with_value((n + 1).to_string()));
        Ok(())
    }

    fn not_yet_migrated(from: &PreviousVersion) -> bool {
        !from
            .params()
            .is_ok_and(|p| p.get::<bool>("migrated").ok().flatten() == Some(true))
    }

    fn to_new(key: &[u8], _from: &PreviousVersion) -> Result<(), Error> {
        let key = std::str::from_utf8(key)?;
        if let Some(n) = COUNT.get()? {
            TALLY.set(&n.to_string())?;
            COUNT.clear();
        }
        for (word, n) in WORDS.entries()? {
            WORDS64.insert(&word, &u64::from(n))?;
        }
        WORDS.clear();
        // After the writes, so that a rollback has something to undo.
        if FAIL_KEY.with_borrow(|k| k.as_deref() == Some(key)) {
            sluice_sdk::bail!("refusing to migrate {key}");
        }
        if PANIC_KEY.with_borrow(|k| k.as_deref() == Some(key)) {
            panic!("panicking on {key}");
        }
        Ok(())
    }

    pub fn def() -> sluice_sdk::OperatorDef {
        __sluice_operator()
    }
}

/// A keyed process operator with timers that also migrates.
mod keyed_with_timers {
    use sluice_sdk::{timers, Context, Error, PreviousVersion, Record, Timer, ValueState};

    static COUNT: ValueState<u64> = ValueState::new("count");
    static DOUBLED: ValueState<u64> = ValueState::new("doubled");

    #[sluice_sdk::process(on_timer = fired, migrate = double)]
    fn op(record: Record, _ctx: &mut Context) -> Result<(), Error> {
        timers::register_event_time(record.event_time.unwrap_or(0));
        Ok(())
    }

    fn fired(timer: Timer, ctx: &mut Context) -> Result<(), Error> {
        let n = DOUBLED.get()?.unwrap_or(0);
        ctx.emit(Record::new(n.to_string()).with_key(timer.key));
        Ok(())
    }

    fn double(_key: &[u8], _from: &PreviousVersion) -> Result<(), Error> {
        if let Some(n) = COUNT.get()? {
            DOUBLED.set(&(2 * n))?;
        }
        Ok(())
    }

    pub fn def() -> sluice_sdk::OperatorDef {
        __sluice_operator()
    }
}

/// `migrate` on a `#[map]` (and with `params`).
mod map_with_migrate {
    use sluice_sdk::{Error, PreviousVersion, Record, ValueState};

    static COUNT: ValueState<u64> = ValueState::new("count");

    #[derive(serde::Deserialize)]
    struct P {
        #[serde(default)]
        suffix: String,
    }

    #[sluice_sdk::map(params = P, migrate = reset)]
    fn op(record: Record, p: &P) -> Result<Record, Error> {
        let n = COUNT.update(|n| n.unwrap_or(0) + 1)?;
        Ok(record.with_value(format!("{n}{}", p.suffix)))
    }

    fn reset(_key: &[u8], _from: &PreviousVersion) -> Result<(), Error> {
        COUNT.clear();
        Ok(())
    }

    pub fn def() -> sluice_sdk::OperatorDef {
        __sluice_operator()
    }
}

use sluice_sdk::testing::{Harness, MigrationError};
use sluice_sdk::{PreviousVersion, Record};

fn keyed(key: &str, value: &str) -> Record {
    Record::new(value).with_key(key)
}

/// Old state: `a` counted 2, `b` 1 plus the word `x`, `m` only words.
fn old_harness() -> Harness {
    let mut h = Harness::new(old::__sluice_operator(), "{}");
    h.process(vec![
        keyed("a", ""),
        keyed("b", "w:x"),
        keyed("a", ""),
        keyed("b", ""),
        keyed("m", "w:y"),
        keyed("m", "w:y"),
    ]);
    h
}

fn previous() -> PreviousVersion {
    PreviousVersion {
        digest: "ab".repeat(32),
        contract: "0.1.1".into(),
        params: "{}".into(),
    }
}

fn assert_old_layout(h: &Harness) {
    assert_eq!(h.value::<u64>("count", b"a"), Some(2));
    assert_eq!(h.value::<u64>("count", b"b"), Some(1));
    assert_eq!(h.value::<u64>("count", b"m"), None);
    assert_eq!(
        h.map_entries::<String, u32>("words", b"b"),
        [("x".into(), 1)]
    );
    assert_eq!(
        h.map_entries::<String, u32>("words", b"m"),
        [("y".into(), 2)]
    );
    for key in [&b"a"[..], b"b", b"m"] {
        assert_eq!(h.value::<String>("tally", key), None);
        assert!(h.map_entries::<String, u64>("words64", key).is_empty());
    }
}

#[test]
fn migrate_rewrites_every_key_to_the_new_layout() {
    let mut h = old_harness();
    h.swap(new::def(), "{}").unwrap();
    assert_eq!(h.migrate(&previous()), Ok(true));
    assert_eq!(h.value::<String>("tally", b"a").as_deref(), Some("2"));
    assert_eq!(h.value::<String>("tally", b"b").as_deref(), Some("1"));
    assert_eq!(h.value::<String>("tally", b"m"), None);
    assert_eq!(
        h.map_entries::<String, u64>("words64", b"b"),
        [("x".into(), 1)]
    );
    assert_eq!(
        h.map_entries::<String, u64>("words64", b"m"),
        [("y".into(), 2)]
    );
    for key in [&b"a"[..], b"b", b"m"] {
        assert_eq!(h.value::<u64>("count", key), None);
        assert!(h.map_entries::<String, u32>("words", key).is_empty());
    }
    // The new version continues from the migrated state.
    let out = h.process(vec![keyed("a", ""), keyed("b", ""), keyed("z", "")]);
    assert_eq!(out.main_values(), ["3", "2", "1"]);
}

#[test]
fn migrate_covers_keys_across_batches() {
    let mut h = Harness::new(old::__sluice_operator(), "{}");
    let keys: Vec<String> = (0..2500).map(|i| format!("k{i:04}")).collect();
    h.process(keys.iter().map(|k| keyed(k, "")).collect());
    h.swap(new::def(), "{}").unwrap();
    assert_eq!(h.migrate(&previous()), Ok(true));
    for k in &keys {
        assert_eq!(h.value::<u64>("count", k.as_bytes()), None, "{k}");
        assert_eq!(
            h.value::<String>("tally", k.as_bytes()).as_deref(),
            Some("1"),
            "{k}"
        );
    }
}

#[test]
fn an_error_for_one_key_restores_all_state_and_names_the_key() {
    let mut h = old_harness();
    // `a` is migrated before `b` fails: its writes must be undone too.
    h.swap(new::def(), r#"{"fail_key": "b"}"#).unwrap();
    let err = h.migrate(&previous()).unwrap_err();
    assert_eq!(
        err,
        MigrationError {
            key: Some(b"b".to_vec()),
            message: "refusing to migrate b".into(),
        }
    );
    assert_eq!(
        err.to_string(),
        "migrating key \"b\": refusing to migrate b"
    );
    assert_old_layout(&h);

    // Once the cause is gone, the same state migrates.
    h.swap(new::def(), "{}").unwrap();
    assert_eq!(h.migrate(&previous()), Ok(true));
    assert_eq!(h.value::<String>("tally", b"a").as_deref(), Some("2"));
}

#[test]
fn a_panic_restores_all_state_and_propagates() {
    let mut h = old_harness();
    h.swap(new::def(), r#"{"panic_key": "m"}"#).unwrap();
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = h.migrate(&previous());
    }))
    .unwrap_err();
    assert_eq!(panic.downcast_ref::<String>().unwrap(), "panicking on m");
    assert_old_layout(&h);
}

#[test]
fn migrate_if_false_skips_the_migration() {
    let mut h = old_harness();
    h.swap(new::def(), "{}").unwrap();
    let from = PreviousVersion {
        params: r#"{"migrated": true}"#.into(),
        ..previous()
    };
    assert_eq!(h.migrate(&from), Ok(false));
    assert_old_layout(&h);
}

#[test]
fn operators_without_migrate_never_migrate() {
    assert!(!old::__sluice_operator().migrates());
    assert!(new::def().migrates());
    assert!(!new::def().has_timers());
    let mut h = old_harness();
    h.swap(old::__sluice_operator(), "{}").unwrap();
    assert_eq!(h.migrate(&previous()), Ok(false));
    assert_old_layout(&h);
}

#[test]
fn migrate_works_with_timers() {
    let def = keyed_with_timers::def();
    assert!(def.migrates() && def.has_timers());
    let mut h = old_harness();
    h.swap(def, "{}").unwrap();
    assert_eq!(h.migrate(&previous()), Ok(true));
    assert_eq!(h.value::<u64>("doubled", b"a"), Some(4));
    h.process(vec![keyed("a", "").with_event_time(10)]);
    assert_eq!(h.advance_watermark(10).main_values(), ["4"]);
}

#[test]
fn migrate_works_on_a_map_with_params() {
    let def = map_with_migrate::def();
    assert!(def.migrates() && !def.has_timers());
    let mut h = old_harness();
    h.swap(def, r#"{"suffix": "!"}"#).unwrap();
    assert_eq!(h.migrate(&previous()), Ok(true));
    assert_eq!(h.value::<u64>("count", b"a"), None);
    assert_eq!(h.process(vec![keyed("a", "")]).main_values(), ["1!"]);
}

//! Fixture: a stateless map that passes records through, except that a value
//! containing `trap` panics (a trap in the host) and a value containing
//! `error` is a per-record error `fixture error on <value>`.

use sluice_sdk::{bail, Error, Record};

/// Pass `record` through, trap on `trap`, fail on `error`.
#[sluice_sdk::map]
pub fn trap_or_pass(record: Record) -> Result<Record, Error> {
    let value = String::from_utf8_lossy(&record.value);
    if value.contains("trap") {
        panic!("fixture trap on {value}");
    }
    if value.contains("error") {
        bail!("fixture error on {value}");
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use sluice_sdk::{harness, Record};

    #[test]
    fn passes_records_through() {
        harness!().assert_passes_through("b");
    }

    #[test]
    fn error_is_per_record() {
        let mut h = harness!();
        let out = h.process(vec![
            Record::new("ok"),
            Record::new("an error here"),
            Record::new("fine"),
        ]);
        assert_eq!(out.main_values(), ["ok", "fine"]);
        assert_eq!(
            out.emits.iter().map(|e| e.input).collect::<Vec<_>>(),
            [0, 2]
        );
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].input, 1);
        assert_eq!(out.errors[0].message, "fixture error on an error here");
    }

    #[test]
    fn trap_panics() {
        let mut h = harness!();
        let err = h
            .try_process(vec![Record::new("ok"), Record::new("please trap")])
            .unwrap_err();
        assert_eq!(err, "fixture trap on please trap");
        // The next batch works again (the host would use a fresh instance).
        assert_eq!(h.process(vec![Record::new("x")]).main_values(), ["x"]);
    }
}

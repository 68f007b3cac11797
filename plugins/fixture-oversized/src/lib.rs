//! Fixture (hostile plugin): a stateless map that passes records through
//! unchanged, except that a value containing `big:<n>` (`n` in MiB, e.g.
//! `big:8`) is replaced by `n` MiB of `x` (key, headers and event time kept).
//! A `big:` not followed by a usable number is a per-record error.
//!
//! It exists for the host's hostile-plugin tests: the host must enforce its
//! limits on emitted record / batch size (refuse, fail the record or trap)
//! rather than pass arbitrarily large output downstream.

use sluice_sdk::{bail, Error, Record};

/// The trigger; the size in MiB follows it.
const TRIGGER: &str = "big:";

/// Pass `record` through; emit `n` MiB of `x` on a value containing `big:<n>`.
#[sluice_sdk::map]
pub fn oversize_or_pass(record: Record) -> Result<Record, Error> {
    let value = String::from_utf8_lossy(&record.value);
    let Some(at) = value.find(TRIGGER) else {
        return Ok(record);
    };
    let rest = &value[at + TRIGGER.len()..];
    let digits = &rest[..rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len())];
    let Some(bytes) = digits
        .parse::<usize>()
        .ok()
        .and_then(|mib| mib.checked_mul(1 << 20))
    else {
        bail!("fixture-oversized: bad size in {value:?}, want big:<MiB>");
    };
    Ok(record.with_value(vec![b'x'; bytes]))
}

#[cfg(test)]
mod tests {
    use sluice_sdk::{harness, Record};

    #[test]
    fn passes_records_through() {
        harness!().assert_passes_through("big");
    }

    #[test]
    fn emits_n_mib_of_x() {
        let mut h = harness!();
        let out = h.process(vec![
            Record::new("big:2").with_key("k"),
            Record::new("big:0"),
        ]);
        assert!(out.errors.is_empty());
        let main = out.main();
        assert_eq!(main.len(), 2);
        assert_eq!(main[0].value.len(), 2 << 20);
        assert!(main[0].value.iter().all(|&b| b == b'x'));
        assert_eq!(main[0].key.as_deref(), Some(&b"k"[..]));
        assert!(main[1].value.is_empty());
    }

    #[test]
    fn bad_size_is_a_record_error() {
        let mut h = harness!();
        let out = h.process(vec![Record::new("big:lots"), Record::new("ok")]);
        assert_eq!(out.main_values(), ["ok"]);
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].input, 0);
    }
}

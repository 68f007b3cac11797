//! Fixture: keys each record by the part of its value before the first `:`
//! (`user7:click` gets key `user7`), so tests can feed keyed operators from
//! plain text files.

use sluice_sdk::{bail, Error, Record};

/// Set the key to the value's prefix up to the first `:`.
#[sluice_sdk::map]
pub fn split_key(record: Record) -> Result<Record, Error> {
    let Some(colon) = record.value.iter().position(|b| *b == b':') else {
        bail!("no `:` in {:?}", String::from_utf8_lossy(&record.value));
    };
    let key = record.value[..colon].to_vec();
    Ok(record.with_key(key))
}

#[cfg(test)]
mod tests {
    use sluice_sdk::{harness, Record};

    #[test]
    fn keys_by_prefix_and_rejects_values_without_colon() {
        let mut h = harness!();
        let out = h.process(vec![Record::new("k1:a"), Record::new("nokey"), Record::new("k2:b:c")]);
        let keys: Vec<_> = out.main().iter().map(|r| r.key.clone().unwrap()).collect();
        assert_eq!(keys, [b"k1".to_vec(), b"k2".to_vec()]);
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].input, 1);
    }
}

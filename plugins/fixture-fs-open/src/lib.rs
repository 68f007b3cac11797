//! Fixture (hostile plugin): a stateless map that passes records through
//! unchanged, except that on a value containing `fs` it tries to read
//! `/etc/passwd`. If that somehow succeeds the record's value becomes the
//! file's content (a sandbox escape the test should catch); if it fails
//! (expected: the host grants no filesystem) the record is a per-record error
//! carrying the io error text.
//!
//! It exists for the host's hostile-plugin tests: the component imports
//! `wasi:filesystem`, so the host must either refuse it at load or link it to
//! a filesystem with no preopens, and in no case leak host files.

use sluice_sdk::{bail, Error, Record};

/// The file a sandboxed operator must not be able to read.
const TARGET: &str = "/etc/passwd";

/// Pass `record` through; try to read `/etc/passwd` on a value containing `fs`.
#[sluice_sdk::map]
pub fn fs_or_pass(record: Record) -> Result<Record, Error> {
    if String::from_utf8_lossy(&record.value).contains("fs") {
        return match std::fs::read_to_string(TARGET) {
            Ok(content) => Ok(record.with_value(content)),
            Err(e) => bail!("open {TARGET}: {e}"),
        };
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use sluice_sdk::harness;

    // Only the pass-through path: natively the `fs` path really reads the file.
    #[test]
    fn passes_records_through() {
        harness!().assert_passes_through("f s");
    }
}

//! Fixture (hostile plugin): a stateless map that passes records through
//! unchanged, except that on a value containing `net` it tries to open a TCP
//! connection to `127.0.0.1:9` (discard). On success the record passes
//! through with the value `connected` (a sandbox escape the test should
//! catch); on failure (expected: the host grants no network) the record is a
//! per-record error carrying the io error text.
//!
//! It exists for the host's hostile-plugin tests: the component imports
//! `wasi:sockets`, so the host must either refuse it at load or deny the
//! connection, and in no case open a host socket for it.

use sluice_sdk::{bail, Error, Record};

/// Where the operator tries to connect.
const TARGET: &str = "127.0.0.1:9";

/// Pass `record` through; try to connect to `127.0.0.1:9` on a value containing `net`.
#[sluice_sdk::map]
pub fn net_or_pass(record: Record) -> Result<Record, Error> {
    if String::from_utf8_lossy(&record.value).contains("net") {
        return match std::net::TcpStream::connect(TARGET) {
            Ok(_stream) => Ok(record.with_value("connected")),
            Err(e) => bail!("connect {TARGET}: {e}"),
        };
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use sluice_sdk::harness;

    // Only the pass-through path: natively the `net` path really connects.
    #[test]
    fn passes_records_through() {
        harness!().assert_passes_through("n et");
    }
}

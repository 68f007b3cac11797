//! Fixture (hostile plugin, mildly): a stateless map that replaces every
//! record's value with the wall-clock time, `SystemTime::now()` in decimal
//! milliseconds since the UNIX epoch (`0` if the clock reads before it); key,
//! headers and event time are kept.
//!
//! It exists for the host's clock-policy tests: the component imports
//! `wasi:clocks`, so a test can check whether the host denies, freezes or
//! passes through the real clock (determinism for replay).
//!
//! A value `env:NAME` is replaced by the environment variable `NAME` instead
//! (or `unset`), for the host's environment-grant tests.

use std::time::{SystemTime, UNIX_EPOCH};

use sluice_sdk::{Error, Record};

/// Replace the value with the current wall-clock time in epoch milliseconds.
#[sluice_sdk::map]
pub fn stamp_now(record: Record) -> Result<Record, Error> {
    if let Some(name) = record.value.strip_prefix(b"env:") {
        let name = String::from_utf8_lossy(name).into_owned();
        let value = std::env::var(&name).unwrap_or_else(|_| "unset".to_string());
        return Ok(record.with_value(value));
    }
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    Ok(record.with_value(ms.to_string()))
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use sluice_sdk::{harness, Record};

    fn now_ms() -> u128 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis()
    }

    #[test]
    fn stamps_wall_clock_millis() {
        let mut h = harness!();
        let before = now_ms();
        let out = h.process(vec![Record::new("a").with_key("k").with_header("h", "v")]);
        let after = now_ms();
        assert!(out.errors.is_empty());
        let main = out.main();
        assert_eq!(main.len(), 1);
        assert_eq!(main[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(main[0].header("h"), Some(&b"v"[..]));
        let ms: u128 = main[0].value_str().unwrap().parse().unwrap();
        assert!(
            (before..=after).contains(&ms),
            "{before} <= {ms} <= {after}"
        );
    }
}

//! Fixture: turns a JSON object into a keyed, timestamped record, so tests
//! can feed windows and timers from plain JSON-lines files. The key is the
//! field named by params `key_field` (default `"key"`, a string or a number,
//! as text) and the event time the integer field `time_field` (default
//! `"time"`, ms). The value is kept as is. A record that is not a JSON
//! object or lacks either field is a per-record error naming the field.

use serde::Deserialize;
use sluice_sdk::{bail, Error, Record};

/// Which fields to read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fields {
    #[serde(default = "default_key")]
    key_field: String,
    #[serde(default = "default_time")]
    time_field: String,
}

fn default_key() -> String {
    "key".into()
}

fn default_time() -> String {
    "time".into()
}

/// Set key and event time from the JSON value.
#[sluice_sdk::map(params = Fields)]
pub fn json_keyed(record: Record, fields: &Fields) -> Result<Record, Error> {
    let v: serde_json::Value = serde_json::from_slice(&record.value)?;
    let key = match v.get(&fields.key_field) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(n @ serde_json::Value::Number(_)) => n.to_string(),
        _ => bail!("no string or number field `{}`", fields.key_field),
    };
    let Some(time) = v.get(&fields.time_field).and_then(serde_json::Value::as_i64) else {
        bail!("no integer field `{}`", fields.time_field);
    };
    Ok(record.with_key(key).with_event_time(time))
}

#[cfg(test)]
mod tests {
    use sluice_sdk::{harness, Record};

    #[test]
    fn keys_and_times_from_fields() {
        let mut h = harness!(r#"{"key_field":"user","time_field":"t"}"#);
        let out = h.process(vec![
            Record::new(r#"{"user":"a","t":5}"#),
            Record::new(r#"{"user":7,"t":9}"#),
            Record::new(r#"{"t":1}"#),
            Record::new("not json"),
        ]);
        let main = out.main();
        assert_eq!(main.len(), 2);
        assert_eq!(main[0].key.as_deref(), Some(&b"a"[..]));
        assert_eq!(main[0].event_time, Some(5));
        assert_eq!(main[1].key.as_deref(), Some(&b"7"[..]));
        assert_eq!(out.errors.len(), 2);
        assert!(out.errors[0].message.contains("`user`"), "{}", out.errors[0].message);
    }
}

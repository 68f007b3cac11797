//! How sinks turn records into bytes: the [`SinkFormat`]s shared by the
//! file and stdout sinks.

use std::io::Write as _;

use base64::Engine as _;
use serde::Deserialize;
use sluice_types::Record;

/// How a sink writes each record. One record is always one line.
///
/// In a pipeline file: `format = "value"` (the default) or
/// `format = "envelope"`.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SinkFormat {
    /// The record's value bytes, unchanged, followed by `\n`. Key, event time
    /// and headers are dropped. Right for JSON-lines pipelines; a value that
    /// itself contains `\n` spans several lines.
    #[default]
    Value,
    /// One JSON object per line with the whole record:
    ///
    /// ```json
    /// {"key":"k1","value":{"fare_amount":12.50},"event_time":1767225600000,"headers":{"h":"v"}}
    /// ```
    ///
    /// - `key`: the key as a UTF-8 string, or `null` when there is none. A key
    ///   that is not UTF-8 is written as `"key_base64"` (standard alphabet,
    ///   padded) instead.
    /// - `value`: the value embedded as JSON when it is valid JSON (whitespace
    ///   outside strings removed, numbers kept as written), else as a string
    ///   when it is UTF-8, else as `"value_base64"` instead of `"value"`.
    /// - `event_time`: milliseconds since the Unix epoch, or `null`.
    /// - `headers`: an object from header name to value as a UTF-8 string;
    ///   header values that are not UTF-8 go to a separate
    ///   `"headers_base64"` object, present only when needed.
    Envelope,
}

/// Append the encoding of `record` in `format` to `out`, including the
/// trailing `\n`.
pub fn encode_record(format: SinkFormat, record: &Record, out: &mut Vec<u8>) {
    match format {
        SinkFormat::Value => {
            out.extend_from_slice(&record.value);
            out.push(b'\n');
        }
        SinkFormat::Envelope => encode_envelope(record, out),
    }
}

fn encode_envelope(record: &Record, out: &mut Vec<u8>) {
    let b64 = &base64::engine::general_purpose::STANDARD;
    out.push(b'{');
    match &record.key {
        None => out.extend_from_slice(b"\"key\":null"),
        Some(key) => match std::str::from_utf8(key) {
            Ok(s) => {
                out.extend_from_slice(b"\"key\":");
                push_json_str(out, s);
            }
            Err(_) => {
                out.extend_from_slice(b"\"key_base64\":");
                push_json_str(out, &b64.encode(key));
            }
        },
    }
    out.push(b',');
    let value = &record.value;
    if serde_json::from_slice::<serde::de::IgnoredAny>(value).is_ok() {
        out.extend_from_slice(b"\"value\":");
        push_minified_json(out, value);
    } else if let Ok(s) = std::str::from_utf8(value) {
        out.extend_from_slice(b"\"value\":");
        push_json_str(out, s);
    } else {
        out.extend_from_slice(b"\"value_base64\":");
        push_json_str(out, &b64.encode(value));
    }
    out.extend_from_slice(b",\"event_time\":");
    match record.event_time {
        Some(t) => {
            let _ = write!(out, "{t}");
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"headers\":{");
    let mut first = true;
    let mut binary = false;
    for header in &record.headers {
        match std::str::from_utf8(&header.value) {
            Ok(v) => {
                if !first {
                    out.push(b',');
                }
                first = false;
                push_json_str(out, &header.name);
                out.push(b':');
                push_json_str(out, v);
            }
            Err(_) => binary = true,
        }
    }
    out.push(b'}');
    if binary {
        out.extend_from_slice(b",\"headers_base64\":{");
        let mut first = true;
        for header in &record.headers {
            if std::str::from_utf8(&header.value).is_err() {
                if !first {
                    out.push(b',');
                }
                first = false;
                push_json_str(out, &header.name);
                out.push(b':');
                push_json_str(out, &b64.encode(&header.value));
            }
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"}\n");
}

fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // Writing a &str to a Vec cannot fail.
    serde_json::to_writer(&mut *out, s).expect("serializing a string to memory");
}

/// Copy valid JSON, dropping whitespace outside strings so the result fits
/// on one line. Number and string text is kept exactly as written.
fn push_minified_json(out: &mut Vec<u8>, json: &[u8]) {
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else {
            match b {
                b' ' | b'\t' | b'\n' | b'\r' => {}
                b'"' => {
                    in_string = true;
                    out.push(b);
                }
                _ => out.push(b),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_types::Header;

    fn envelope(record: &Record) -> serde_json::Value {
        let mut out = Vec::new();
        encode_record(SinkFormat::Envelope, record, &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(
            out.iter().filter(|&&b| b == b'\n').count(),
            1,
            "one line per record"
        );
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn value_format_appends_newline() {
        let mut out = Vec::new();
        encode_record(SinkFormat::Value, &Record::from_value("abc"), &mut out);
        encode_record(
            SinkFormat::Value,
            &Record::from_value(vec![0xff, 0]),
            &mut out,
        );
        assert_eq!(out, b"abc\n\xff\x00\n");
    }

    #[test]
    fn envelope_embeds_json_values_verbatim() {
        let record = Record {
            key: Some(b"k1".to_vec()),
            value: b" {\"a\" : 12.50,\n \"s\": \"x y\\\" z\"} ".to_vec(),
            event_time: Some(1767225600000),
            headers: vec![Header {
                name: "h".into(),
                value: b"v".to_vec(),
            }],
            position: None,
        };
        let mut out = Vec::new();
        encode_record(SinkFormat::Envelope, &record, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"key\":\"k1\",\"value\":{\"a\":12.50,\"s\":\"x y\\\" z\"},\
             \"event_time\":1767225600000,\"headers\":{\"h\":\"v\"}}\n"
        );
    }

    #[test]
    fn envelope_text_and_binary_values() {
        let text = envelope(&Record::from_value("not json {"));
        assert_eq!(text["key"], serde_json::Value::Null);
        assert_eq!(text["value"], "not json {");
        assert_eq!(text["event_time"], serde_json::Value::Null);
        assert_eq!(text["headers"], serde_json::json!({}));

        let bytes = vec![0xff, 0xfe, b'\n', 0];
        let record = Record {
            key: Some(vec![0x80]),
            value: bytes.clone(),
            event_time: Some(-5),
            headers: vec![
                Header {
                    name: "bin".into(),
                    value: vec![0xc3],
                },
                Header {
                    name: "txt".into(),
                    value: b"ok".to_vec(),
                },
            ],
            position: None,
        };
        let bin = envelope(&record);
        let b64 = &base64::engine::general_purpose::STANDARD;
        assert!(bin.get("value").is_none());
        assert_eq!(
            b64.decode(bin["value_base64"].as_str().unwrap()).unwrap(),
            bytes
        );
        assert_eq!(
            b64.decode(bin["key_base64"].as_str().unwrap()).unwrap(),
            vec![0x80]
        );
        assert_eq!(bin["event_time"], -5);
        assert_eq!(bin["headers"], serde_json::json!({"txt": "ok"}));
        assert_eq!(
            b64.decode(bin["headers_base64"]["bin"].as_str().unwrap())
                .unwrap(),
            vec![0xc3]
        );
    }
}

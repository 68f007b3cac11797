//! Fixture: a stateless map that fetches URLs. A record whose value is an
//! `http://` or `https://` URL (e.g. `http://127.0.0.1:38211/hello`) is sent
//! as an outbound `GET` through WASI HTTP (`wasi:http/outgoing-handler`), and
//! the record passes through with its value replaced by the response body on
//! status 200. Anything else is a per-record error (never a panic) whose
//! message carries the cause: the `wasi:http` `ErrorCode` debug text (e.g.
//! `ErrorCode::HttpRequestDenied` when the host refuses the request) or
//! `status 404`. Values that are not URLs pass through unchanged.
//!
//! It exists for the host's HTTP allowlist tests: the component imports
//! `wasi:http/outgoing-handler` and `wasi:http/types`, so a host that grants
//! no HTTP must refuse it at load or deny every request, and a host that
//! grants an allowlist must let exactly the allowed authorities through.
//!
//! Natively (`cargo test`) there is no WASI HTTP: a URL is a per-record error.

use sluice_sdk::{bail, Error, Record};

/// Fetch the URL in `record`'s value and emit the body; pass non-URLs through.
#[sluice_sdk::map]
pub fn http_get_or_pass(record: Record) -> Result<Record, Error> {
    let Some(url) = record.value_str().and_then(Url::parse) else {
        return Ok(record);
    };
    let body = get(&url)?;
    Ok(record.with_value(body))
}

/// An `http(s)://authority[/path][?query]` URL, split as `wasi:http` wants it.
#[derive(Debug, PartialEq, Eq)]
struct Url<'a> {
    https: bool,
    /// `host[:port]`, non-empty.
    authority: &'a str,
    /// Starts with `/`; the fragment is dropped.
    path_with_query: String,
}

impl<'a> Url<'a> {
    /// `None` if `s` is not an http(s) URL with a non-empty authority.
    fn parse(s: &'a str) -> Option<Self> {
        let (https, rest) = if let Some(rest) = s.strip_prefix("http://") {
            (false, rest)
        } else {
            (true, s.strip_prefix("https://")?)
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if authority.is_empty() || authority.contains(char::is_whitespace) {
            return None;
        }
        let path_with_query = if tail.starts_with('/') {
            tail.to_owned()
        } else {
            format!("/{tail}")
        };
        Some(Url {
            https,
            authority,
            path_with_query,
        })
    }
}

/// Natively there is no `wasi:http`.
#[cfg(not(target_arch = "wasm32"))]
fn get(url: &Url<'_>) -> Result<Vec<u8>, Error> {
    bail!(
        "GET {}: wasi:http is only available in the component",
        url.authority
    )
}

/// `GET url` through `wasi:http/outgoing-handler`; the body on status 200.
#[cfg(target_arch = "wasm32")]
fn get(url: &Url<'_>) -> Result<Vec<u8>, Error> {
    use wasi::http::outgoing_handler::handle;
    use wasi::http::types::{Fields, Method, OutgoingRequest, Scheme};
    use wasi::io::streams::StreamError;

    let request = OutgoingRequest::new(Fields::new());
    let scheme = if url.https {
        Scheme::Https
    } else {
        Scheme::Http
    };
    let (set_method, set_scheme, set_authority, set_path) = (
        request.set_method(&Method::Get),
        request.set_scheme(Some(&scheme)),
        request.set_authority(Some(url.authority)),
        request.set_path_with_query(Some(&url.path_with_query)),
    );
    if set_method.is_err() || set_scheme.is_err() || set_authority.is_err() || set_path.is_err() {
        bail!(
            "GET {}{}: invalid request",
            url.authority,
            url.path_with_query
        );
    }

    // Request errors (e.g. the host denying it) come from `handle` or the future.
    let future = handle(request, None).map_err(|e| fail(url, e))?;
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(e))) => return Err(fail(url, e)),
        Some(Err(())) => bail!("GET {}: response already taken", url.authority),
        None => bail!("GET {}: response not ready after block", url.authority),
    };
    let status = response.status();
    if status != 200 {
        bail!(
            "GET {}{}: status {status}",
            url.authority,
            url.path_with_query
        );
    }

    // Children before parents: `stream` drops before `body`, `body` before `response`.
    let Ok(body) = response.consume() else {
        bail!("GET {}: body already consumed", url.authority);
    };
    let Ok(stream) = body.stream() else {
        bail!("GET {}: body stream already taken", url.authority);
    };
    let mut out = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => out.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                bail!(
                    "GET {}: reading body: {}",
                    url.authority,
                    e.to_debug_string()
                )
            }
        }
    }
    Ok(out)
}

/// A per-record error carrying the `wasi:http` error code's debug text.
#[cfg(target_arch = "wasm32")]
fn fail(url: &Url<'_>, code: wasi::http::types::ErrorCode) -> Error {
    Error::msg(format!(
        "GET {}{}: {code:?}",
        url.authority, url.path_with_query
    ))
}

#[cfg(test)]
mod tests {
    use super::Url;
    use sluice_sdk::{harness, Record};

    // Only the pass-through path: natively there is no wasi:http to call.
    #[test]
    fn passes_non_urls_through() {
        let mut h = harness!();
        let input = vec![
            Record::new("a")
                .with_key("k")
                .with_event_time(5)
                .with_header("h", "v"),
            Record::new("see http://example.com"),
            Record::new("http://"),
            Record::new("ftp://example.com/x"),
        ];
        let out = h.process(input.clone());
        assert!(out.errors.is_empty());
        assert_eq!(out.main(), input.iter().collect::<Vec<_>>());
    }

    #[test]
    fn parses_urls() {
        let url = |https, authority, path: &str| {
            Some(Url {
                https,
                authority,
                path_with_query: path.to_owned(),
            })
        };
        assert_eq!(
            Url::parse("http://127.0.0.1:38211/hello"),
            url(false, "127.0.0.1:38211", "/hello")
        );
        assert_eq!(Url::parse("https://h"), url(true, "h", "/"));
        assert_eq!(Url::parse("http://h?q=1#f"), url(false, "h", "/?q=1"));
        assert_eq!(Url::parse("http:///x"), None);
        assert_eq!(Url::parse("HTTP://h/"), None);
    }
}

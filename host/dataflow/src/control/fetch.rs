//! Fetching a deployed component: confined to allowed directories and
//! URLs, bounded in size and time, never from a special file.
//!
//! Whoever sends a command chooses the location, so a refusal says why
//! without revealing anything about a file the sender could not read
//! itself: no digest, no size, no I/O error outside the allowed places.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sluice_config::ControlSpec;

use crate::private::{read_regular, ReadError};

/// Why a component could not be fetched. Outside the allowed places the
/// message says no more than that.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    /// Not a file under the allowed directories (or nothing there at all).
    #[error("plugin {} is not a file under the directories deploys may read ({dirs}); deploy it with `sluice plugin deploy` (which copies it into the plugin store), or add its directory to [control] plugin_dirs", .path.display())]
    Outside { path: PathBuf, dirs: String },
    /// Reading a file inside the allowed directories failed.
    #[error("plugin {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A FIFO, a device or a directory.
    #[error("plugin {} is not a regular file (a FIFO, device or directory cannot be deployed)", .path.display())]
    NotRegular { path: PathBuf },
    /// Larger than `max_plugin_mb`.
    #[error("plugin {} is larger than [control] max_plugin_mb = {mib} MiB", .path.display())]
    TooLarge { path: PathBuf, mib: u64 },
    /// A URL outside `plugin_urls`.
    #[error("plugin URL {url} is not allowed (allowed: {allowed}); add its prefix to [control] plugin_urls, or deploy a file with `sluice plugin deploy`")]
    UrlNotAllowed { url: String, allowed: String },
    /// The request failed.
    #[error("fetching {url}: {source}")]
    Request {
        url: String,
        source: Box<ureq::Error>,
    },
    /// The server did not answer 200.
    #[error("fetching {url}: HTTP {status} (redirects are not followed)")]
    Status {
        url: String,
        status: ureq::http::StatusCode,
    },
    /// The body is larger than `max_plugin_mb`.
    #[error("fetching {url}: larger than [control] max_plugin_mb = {mib} MiB")]
    BodyTooLarge { url: String, mib: u64 },
    /// Reading the body failed.
    #[error("fetching {url}: {source} (within [control] fetch_timeout = {timeout:?})")]
    Body {
        url: String,
        source: Box<ureq::Error>,
        timeout: Duration,
    },
}

/// Where and how much a deploy may fetch.
#[derive(Clone, Debug)]
pub(crate) struct FetchPolicy {
    /// Allowed directories, canonical.
    dirs: Vec<PathBuf>,
    /// Allowed URL prefixes; `None`: loopback hosts only.
    urls: Option<Vec<String>>,
    /// Largest component, bytes.
    max_bytes: u64,
    /// Longest URL fetch.
    timeout: Duration,
}

impl FetchPolicy {
    /// The policy of a pipeline: `[control]` settings, the pipeline file's
    /// directory (unless `plugin_dirs` replaces it) and the plugin store.
    pub(crate) fn new(
        spec: &ControlSpec,
        pipeline_file: &Path,
        plugin_store: &Path,
    ) -> FetchPolicy {
        let pipeline_dir = match pipeline_file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut dirs: Vec<PathBuf> = spec
            .plugin_dirs
            .clone()
            .unwrap_or_else(|| vec![pipeline_dir]);
        dirs.push(plugin_store.to_path_buf());
        // A directory that does not exist (yet) allows nothing.
        let dirs = dirs
            .iter()
            .filter_map(|d| std::fs::canonicalize(d).ok())
            .collect();
        FetchPolicy {
            dirs,
            urls: spec.plugin_urls.clone(),
            max_bytes: spec.max_plugin_mb << 20,
            timeout: Duration::from_millis(spec.fetch_timeout.0.max(1) as u64),
        }
    }

    /// The bytes of the component at `location`: a path, or an `http://` URL.
    pub(crate) fn fetch(&self, location: &Path) -> Result<Vec<u8>, FetchError> {
        let text = location.to_string_lossy();
        if text.starts_with("http://") || text.starts_with("https://") {
            return self.fetch_url(&text);
        }
        self.read_file(location)
    }

    fn mib(&self) -> u64 {
        self.max_bytes >> 20
    }

    fn read_file(&self, path: &Path) -> Result<Vec<u8>, FetchError> {
        let outside = || {
            let dirs: Vec<String> = self.dirs.iter().map(|d| d.display().to_string()).collect();
            FetchError::Outside {
                path: path.to_path_buf(),
                dirs: dirs.join(", "),
            }
        };
        let absolute = std::path::absolute(path).map_err(|_| outside())?;
        // Symlinks and `..` are resolved first: the file itself must be inside.
        let canonical = match std::fs::canonicalize(&absolute) {
            Ok(c) => c,
            // Only inside the allowed directories does the reason say more.
            Err(source) if self.allows(&normalize(&absolute)) => {
                return Err(FetchError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
            Err(_) => return Err(outside()),
        };
        if !self.allows(&canonical) {
            return Err(outside());
        }
        read_regular(&canonical, self.max_bytes).map_err(|e| match e {
            ReadError::NotRegular => FetchError::NotRegular {
                path: path.to_path_buf(),
            },
            ReadError::TooLarge(_) => FetchError::TooLarge {
                path: path.to_path_buf(),
                mib: self.mib(),
            },
            ReadError::Io(source) => FetchError::Io {
                path: path.to_path_buf(),
                source,
            },
        })
    }

    fn allows(&self, path: &Path) -> bool {
        self.dirs.iter().any(|d| path.starts_with(d))
    }

    fn fetch_url(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        if !self.url_allowed(url) {
            let allowed = match &self.urls {
                None => "http:// on a loopback host (the default)".to_string(),
                Some(v) if v.is_empty() => "none: [control] plugin_urls = []".to_string(),
                Some(v) => v.join(", "),
            };
            return Err(FetchError::UrlNotAllowed {
                url: url.to_string(),
                allowed,
            });
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(self.timeout))
            // A redirect could leave the allowlist.
            .max_redirects(0)
            .http_status_as_error(false)
            .build()
            .into();
        let mut response = agent.get(url).call().map_err(|e| FetchError::Request {
            url: url.to_string(),
            source: Box::new(e),
        })?;
        if response.status() != 200 {
            return Err(FetchError::Status {
                url: url.to_string(),
                status: response.status(),
            });
        }
        response
            .body_mut()
            .with_config()
            .limit(self.max_bytes)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => FetchError::BodyTooLarge {
                    url: url.to_string(),
                    mib: self.mib(),
                },
                e => FetchError::Body {
                    url: url.to_string(),
                    source: Box::new(e),
                    timeout: self.timeout,
                },
            })
    }

    fn url_allowed(&self, url: &str) -> bool {
        let Some(rest) = url.strip_prefix("http://") else {
            return false;
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        // User info (`a@b`) and backslashes make the host ambiguous.
        if authority.is_empty() || authority.contains(['@', '\\']) || url.contains(['\\', ' ']) {
            return false;
        }
        match &self.urls {
            None => is_loopback_host(authority),
            Some(prefixes) => prefixes.iter().any(|p| {
                url.strip_prefix(p.as_str()).is_some_and(|after| {
                    // The prefix must end at a boundary: `http://a` allows
                    // `http://a/x` and `http://a:1/x`, not `http://a.evil/x`.
                    p.ends_with('/')
                        || after.is_empty()
                        || after.starts_with(['/', '?', '#'])
                        || (after.starts_with(':')
                            && p.strip_prefix("http://")
                                .is_some_and(|host| !host.contains(['/', ':'])))
                })
            }),
        }
    }
}

/// Whether `authority` (`host[:port]`) names a loopback host.
fn is_loopback_host(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `path` with `.` and `..` removed lexically (for a path that does not exist).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(urls: Option<Vec<&str>>, dirs: Vec<PathBuf>) -> FetchPolicy {
        FetchPolicy {
            dirs,
            urls: urls.map(|v| v.into_iter().map(String::from).collect()),
            max_bytes: 1 << 20,
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn urls_default_to_loopback_and_prefixes_end_at_a_boundary() {
        let p = policy(None, vec![]);
        for ok in [
            "http://127.0.0.1:8080/x.wasm",
            "http://localhost/x",
            "http://[::1]:9/x",
            "http://127.0.0.2/x",
        ] {
            assert!(p.url_allowed(ok), "{ok}");
        }
        for no in [
            "http://10.0.0.1/x",
            "http://127.0.0.1@evil.example/x",
            "http://evil.example/127.0.0.1",
            "https://127.0.0.1/x",
            "file:///etc/passwd",
            "http://localhost.evil/x",
        ] {
            assert!(!p.url_allowed(no), "{no}");
        }
        let p = policy(
            Some(vec![
                "http://plugins.internal",
                "http://10.0.0.5:8080/dist/",
            ]),
            vec![],
        );
        assert!(
            p.url_allowed("http://plugins.internal/x.wasm")
                && p.url_allowed("http://plugins.internal:81/x.wasm")
        );
        assert!(p.url_allowed("http://10.0.0.5:8080/dist/x.wasm"));
        assert!(
            !p.url_allowed("http://plugins.internal.evil/x")
                && !p.url_allowed("http://10.0.0.5:8080/other/x")
                && !p.url_allowed("http://127.0.0.1/x")
        );
        assert!(!policy(Some(vec![]), vec![]).url_allowed("http://127.0.0.1/x"));
    }

    #[test]
    fn files_outside_the_allowed_directories_are_refused_without_detail() {
        let allowed = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let p = policy(None, vec![std::fs::canonicalize(allowed.path()).unwrap()]);
        std::fs::write(allowed.path().join("ok.wasm"), b"ok").unwrap();
        std::fs::write(other.path().join("secret"), b"secret").unwrap();
        assert_eq!(p.fetch(&allowed.path().join("ok.wasm")).unwrap(), b"ok");
        for path in [
            other.path().join("secret"),
            allowed
                .path()
                .join("../")
                .join(other.path().file_name().unwrap())
                .join("secret"),
            other.path().join("missing"),
        ] {
            let e = p.fetch(&path).unwrap_err().to_string();
            assert!(
                e.contains("not a file under the directories") && !e.contains("No such file"),
                "{e}"
            );
        }
        std::os::unix::fs::symlink(
            other.path().join("secret"),
            allowed.path().join("link.wasm"),
        )
        .unwrap();
        assert!(p
            .fetch(&allowed.path().join("link.wasm"))
            .unwrap_err()
            .to_string()
            .contains("not a file under"));
        assert!(p
            .fetch(&allowed.path().join("missing.wasm"))
            .unwrap_err()
            .to_string()
            .contains("No such file"));
        assert!(p
            .fetch(allowed.path())
            .unwrap_err()
            .to_string()
            .contains("not a regular file"));
    }
}

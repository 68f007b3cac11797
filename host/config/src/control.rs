//! `[control]`: where hot-swap commands come from, who may send them, and
//! what a deploy may fetch.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::time::Millis;

/// `[control]`: how deployed plugins are watched, and the limits of the
/// control plane (see `docs/security.md`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlSpec {
    /// A newly deployed plugin is on probation for its first this many
    /// records per subtask (default 1000).
    pub probation_records: u64,
    /// If more than this share of them fail (errors and traps), Sluice rolls
    /// the operator back to its previous version by itself (default 0.05;
    /// 1 turns automatic rollback off).
    pub max_error_rate: f64,
    /// Commands from a Kafka topic too (`[control.kafka]`), besides the
    /// control directory.
    pub kafka: Option<KafkaControlConfig>,
    /// An admin HTTP endpoint on this loopback address (e.g.
    /// `"127.0.0.1:9464"`): `POST /commands`, `GET /commands/<id>`, each
    /// with `Authorization: Bearer <token>`. The CLI uses it when it is set.
    pub http: Option<std::net::SocketAddr>,
    /// A file holding the admin endpoint's bearer token (relative to the
    /// pipeline file). Without it (and without `SLUICE_ADMIN_TOKEN`), the
    /// run generates one into `<checkpoint store>/control/admin.token`,
    /// readable only by its owner.
    pub token_file: Option<PathBuf>,
    /// Directories a deploy may read a plugin file from (relative to the
    /// pipeline file). Default: the pipeline file's directory. The plugin
    /// store (where `sluice plugin deploy` copies components) is always
    /// allowed.
    pub plugin_dirs: Option<Vec<PathBuf>>,
    /// URL prefixes a deploy may fetch a plugin from, such as
    /// `"http://10.0.0.5:8080/plugins/"`. Default: `http://` URLs on a
    /// loopback host only; `[]` turns URL deploys off.
    pub plugin_urls: Option<Vec<String>>,
    /// The largest plugin a deploy fetches, in MiB (default 64).
    pub max_plugin_mb: u64,
    /// How long fetching a plugin URL may take (default 30 s).
    pub fetch_timeout: Millis,
}

impl Default for ControlSpec {
    fn default() -> Self {
        ControlSpec {
            probation_records: 1000,
            max_error_rate: 0.05,
            kafka: None,
            http: None,
            token_file: None,
            plugin_dirs: None,
            plugin_urls: None,
            max_plugin_mb: 64,
            fetch_timeout: Millis(30_000),
        }
    }
}

/// The largest `max_plugin_mb`: 1 GiB (a component is compiled in memory).
pub const MAX_PLUGIN_MB: u64 = 1024;

impl ControlSpec {
    /// Check the section and make its paths absolute with `resolve`; on
    /// failure (message, help).
    pub(crate) fn check(
        &mut self,
        resolve: impl Fn(&Path) -> PathBuf,
    ) -> Result<(), (String, String)> {
        if let Some(addr) = self.http.filter(|a| !a.ip().is_loopback()) {
            return Err((
                format!("[control]: http = \"{addr}\" is not a loopback address; the admin endpoint has no TLS, so its bearer token and the commands would cross the network in clear"),
                "bind it to loopback, e.g. http = \"127.0.0.1:9464\", and reach it through an SSH tunnel or a TLS proxy".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.max_error_rate) || self.probation_records == 0 {
            return Err(("[control]: max_error_rate must be between 0 and 1 and probation_records at least 1".into(), "e.g. probation_records = 1000, max_error_rate = 0.05".into()));
        }
        if self.max_plugin_mb == 0 || self.max_plugin_mb > MAX_PLUGIN_MB {
            return Err((
                format!(
                    "[control]: max_plugin_mb = {} is out of range",
                    self.max_plugin_mb
                ),
                format!("use 1 to {MAX_PLUGIN_MB} (default 64)"),
            ));
        }
        if self.fetch_timeout.0 <= 0 {
            return Err((
                "[control]: fetch_timeout must be positive".into(),
                "e.g. fetch_timeout = \"30s\"".into(),
            ));
        }
        for url in self.plugin_urls.iter().flatten() {
            url_prefix_problem(url).map_or(Ok(()), |p| {
                Err((
                    format!("[control]: plugin_urls entry `{url}` {p}"),
                    "write a prefix such as \"http://10.0.0.5:8080/plugins/\"".into(),
                ))
            })?;
        }
        self.token_file = self.token_file.as_deref().map(&resolve);
        self.plugin_dirs = self
            .plugin_dirs
            .take()
            .map(|dirs| dirs.iter().map(|d| resolve(d)).collect());
        Ok(())
    }
}

/// Why `prefix` cannot be an allowlisted URL prefix, if it cannot.
fn url_prefix_problem(prefix: &str) -> Option<&'static str> {
    let Some(rest) = prefix.strip_prefix("http://") else {
        return Some(
            "does not start with http:// (this build fetches plugins over plain http only)",
        );
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() {
        return Some("names no host");
    }
    if authority.contains(['@', '\\']) || rest.contains(['\\', ' ']) {
        return Some("holds `@`, `\\` or a space");
    }
    None
}

/// `[control.kafka]`: hot-swap commands from a Kafka topic.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaControlConfig {
    /// `host:port[,host:port…]` of the brokers.
    pub bootstrap: String,
    /// The topic commands are produced to (JSON values).
    pub topic: String,
    /// Where outcomes are produced (keyed by command id). Default
    /// `<topic>.status`; it must exist (the outcome is also written to the
    /// control directory).
    #[serde(default)]
    pub status_topic: Option<String>,
    /// Consumer group of the pipeline's control reader (its offsets mark
    /// settled commands). Default `sluice.<pipeline>.control`.
    #[serde(default)]
    pub group: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_prefixes_need_an_http_host_without_user_info() {
        assert_eq!(url_prefix_problem("http://10.0.0.5:8080/plugins/"), None);
        assert!(url_prefix_problem("https://example.com/").is_some());
        assert!(url_prefix_problem("http:///x").is_some());
        assert!(url_prefix_problem("http://user@evil.example/").is_some());
    }

    #[test]
    fn a_non_loopback_admin_address_is_refused_with_the_reason() {
        let mut spec = ControlSpec {
            http: Some("0.0.0.0:9464".parse().unwrap()),
            ..ControlSpec::default()
        };
        let (message, help) = spec.check(Path::to_path_buf).unwrap_err();
        assert!(
            message.contains("no TLS") && help.contains("loopback"),
            "{message} / {help}"
        );
    }
}

//! The admin endpoint's bearer token.
//!
//! It comes from, in order: the environment (`SLUICE_ADMIN_TOKEN`), the
//! file `[control] token_file`, or `<checkpoint store>/control/admin.token`,
//! which a run with an admin endpoint generates (32 random bytes, hex,
//! mode `0600` in a `0700` directory). The CLI reads it from the same
//! places, so only users who can read the pipeline's control directory (or
//! are given the token) can send commands over HTTP.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use sluice_config::ControlSpec;

use super::dir::ControlDir;
pub use crate::error::TokenError;

/// The environment variable that gives the token to a run and to the CLI.
pub const TOKEN_ENV: &str = "SLUICE_ADMIN_TOKEN";

/// The shortest token accepted from the environment or a token file.
const MIN_LEN: usize = 16;

/// Where a run's token comes from.
enum Origin {
    Env,
    File(PathBuf),
    Generated(PathBuf),
}

fn origin(spec: &ControlSpec, control: &ControlDir) -> Origin {
    if std::env::var_os(TOKEN_ENV).is_some() {
        return Origin::Env;
    }
    match &spec.token_file {
        Some(f) => Origin::File(f.clone()),
        None => Origin::Generated(control.token_file()),
    }
}

fn check(token: &str, from: &str) -> Result<String, TokenError> {
    let token = token.trim();
    if token.len() < MIN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TokenError::Weak {
            from: from.to_string(),
            min: MIN_LEN,
        });
    }
    Ok(token.to_string())
}

fn read(path: &Path) -> Result<String, TokenError> {
    let bytes = crate::private::read_regular(path, 4096).map_err(|source| TokenError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|_| TokenError::NotText {
        path: path.to_path_buf(),
    })?;
    check(&text, &path.display().to_string())
}

/// The token a run's admin endpoint accepts: from the environment, the
/// configured file, or the control directory (generated there on first
/// use, and again if other users could read it).
pub fn server_token(spec: &ControlSpec, control: &ControlDir) -> Result<String, TokenError> {
    match origin(spec, control) {
        Origin::Env => check(&std::env::var(TOKEN_ENV).unwrap_or_default(), TOKEN_ENV),
        Origin::File(path) => {
            let token = read(&path)?;
            if std::fs::metadata(&path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
                tracing::warn!(
                    "the admin token file {} is readable by other users: chmod 600 it",
                    path.display()
                );
            }
            Ok(token)
        }
        Origin::Generated(path) => {
            let shared =
                std::fs::metadata(&path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0);
            if !shared {
                if let Ok(token) = read(&path) {
                    return Ok(token);
                }
            } else {
                tracing::warn!(
                    "the admin token {} was readable by other users; generating a new one",
                    path.display()
                );
            }
            let token = generate()?;
            crate::private::write_atomic(&path, token.as_bytes()).map_err(|source| {
                TokenError::Write {
                    path: path.clone(),
                    source,
                }
            })?;
            Ok(token)
        }
    }
}

/// The token the CLI sends to a pipeline's admin endpoint, or why there is
/// none (naming where it looked).
pub fn client_token(spec: &ControlSpec, control: &ControlDir) -> Result<String, TokenError> {
    match origin(spec, control) {
        Origin::Env => check(&std::env::var(TOKEN_ENV).unwrap_or_default(), TOKEN_ENV),
        Origin::File(path) | Origin::Generated(path) => {
            read(&path).map_err(|e| TokenError::Client {
                source: Box::new(e),
                env: TOKEN_ENV,
            })
        }
    }
}

/// 32 random bytes from the kernel, hex.
fn generate() -> Result<String, TokenError> {
    use std::io::Read as _;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(TokenError::Generate)?;
    Ok(hex::encode(bytes))
}

/// Whether the `Authorization` header value `presented` carries `token`,
/// compared in constant time (the time does not tell how much matched).
pub fn authorized(token: &str, presented: Option<&str>) -> bool {
    use subtle::ConstantTimeEq as _;
    let Some(value) = presented else { return false };
    let Some((scheme, given)) = value.trim().split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer")
        && bool::from(given.trim().as_bytes().ct_eq(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_is_owner_only_kept_and_replaced_if_shared() {
        let dir = tempfile::tempdir().unwrap();
        let control = ControlDir::new(dir.path());
        let spec = ControlSpec::default();
        if std::env::var_os(TOKEN_ENV).is_some() {
            return;
        }
        let first = server_token(&spec, &control).unwrap();
        assert_eq!(first.len(), 64);
        let mode = std::fs::metadata(control.token_file())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(server_token(&spec, &control).unwrap(), first);
        assert_eq!(client_token(&spec, &control).unwrap(), first);
        std::fs::set_permissions(control.token_file(), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        assert_ne!(server_token(&spec, &control).unwrap(), first);
    }

    #[test]
    fn only_the_exact_bearer_token_is_authorized() {
        let t = "0123456789abcdef0123";
        assert!(authorized(t, Some("Bearer 0123456789abcdef0123")));
        assert!(authorized(t, Some("bearer 0123456789abcdef0123 ")));
        for bad in [
            None,
            Some(""),
            Some("Bearer"),
            Some("Bearer 0123456789abcdef012"),
            Some("Basic 0123456789abcdef0123"),
            Some("Bearer 0123456789abcdef01234"),
        ] {
            assert!(!authorized(t, bad), "{bad:?}");
        }
    }
}

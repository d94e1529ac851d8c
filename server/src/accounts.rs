//! The account, its API key and auth token: from configuration or the environment,
//! else a development account created in the data directory on first start (so that
//! the client commands on the same machine find the key).

use std::path::{Path, PathBuf};

use dialtone_core::config::ServerConfig;
use serde::{Deserialize, Serialize};

use crate::ServerError;

/// The credentials of the one account this server serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// `AC` + 32 hex digits.
    pub account_sid: String,
    /// The REST API password.
    pub auth_token: String,
    /// `SK` + 32 hex digits: the `iss` of access tokens.
    pub api_key_sid: String,
    /// The HS256 secret access tokens are signed with.
    pub api_key_secret: String,
}

/// Where the store, the development account and the development CA live: the
/// configured directory, else `DIALTONE_HOME`, else `$XDG_DATA_HOME/dialtone`, else
/// `~/.local/share/dialtone`.
pub fn data_dir(config: &ServerConfig) -> PathBuf {
    if let Some(d) = &config.data_dir {
        return d.clone();
    }
    if let Some(h) = std::env::var_os("DIALTONE_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(x).join("dialtone");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/share/dialtone")
}

/// Random hex digits from the operating system's generator.
pub fn random_hex(digits: usize) -> String {
    use ring::rand::SecureRandom;
    let mut bytes = vec![0u8; digits.div_ceil(2)];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        // Not expected on any supported OS; fall back to v4 UUID randomness.
        for chunk in bytes.chunks_mut(16) {
            let u = uuid::Uuid::new_v4().into_bytes();
            chunk.copy_from_slice(&u[..chunk.len()]);
        }
    }
    let mut s: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    s.truncate(digits);
    s
}

/// A SID: a two-letter prefix and 32 hex digits.
pub fn new_sid(prefix: &str) -> String {
    format!("{prefix}{}", random_hex(32))
}

const ACCOUNT_FILE: &str = "account.json";

/// The account from configuration (all four values), else the development account of
/// the data directory, created if missing.
pub fn load_or_create(config: &ServerConfig, dir: &Path) -> Result<(Account, bool), ServerError> {
    if let (Some(a), Some(t), Some(k), Some(s)) =
        (&config.account_sid, &config.auth_token, &config.api_key_sid, &config.api_key_secret)
    {
        return Ok((
            Account {
                account_sid: a.clone(),
                auth_token: t.clone(),
                api_key_sid: k.clone(),
                api_key_secret: s.clone(),
            },
            false,
        ));
    }
    if let Some(a) = read_dev_account(dir) {
        return Ok((a, false));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| ServerError::Io(format!("cannot create {}: {e}", dir.display())))?;
    let account = Account {
        account_sid: new_sid("AC"),
        auth_token: random_hex(32),
        api_key_sid: new_sid("SK"),
        api_key_secret: random_hex(64),
    };
    let path = dir.join(ACCOUNT_FILE);
    let text = serde_json::to_string_pretty(&account).map_err(|e| ServerError::Io(e.to_string()))?;
    std::fs::write(&path, text)
        .map_err(|e| ServerError::Io(format!("cannot write {}: {e}", path.display())))?;
    restrict(&path);
    Ok((account, true))
}

/// The development account of a data directory, if one was created there.
pub fn read_dev_account(dir: &Path) -> Option<Account> {
    let text = std::fs::read_to_string(dir.join(ACCOUNT_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

#[cfg(unix)]
fn restrict(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

#[cfg(not(unix))]
fn restrict(_: &Path) {}

//! `dialtone server` and `dialtone token`.

use std::path::PathBuf;

use dialtone_core::config::{Config, ConfigLoader};
use dialtone_core::{ErrorCode, VoiceError};

/// Loads the configuration: `--config FILE` if given, else the default layers.
pub(crate) fn load_config(file: Option<&PathBuf>) -> Result<Config, VoiceError> {
    let loader = match file {
        Some(f) => ConfigLoader::new().file(f),
        None => ConfigLoader::new(),
    };
    loader.load().map_err(|e| VoiceError::new(ErrorCode::MalformedRequest, format!("configuration: {e}")))
}

/// Runs the embedded server until Ctrl-C.
pub(crate) fn serve(config: Option<PathBuf>) -> Result<(), VoiceError> {
    let cfg = load_config(config.as_ref())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| VoiceError::new(ErrorCode::UnknownError, format!("cannot start the runtime: {e}")))?;
    rt.block_on(async {
        let server = dialtone_server::Server::start(&cfg.server)
            .await
            .map_err(|e| VoiceError::new(ErrorCode::ServiceUnavailable, e.to_string()))?;
        print!("{}", server.banner());
        println!("Ctrl-C stops it.");
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("dialtone server: stopping");
        // Every queued call record is committed before the process ends.
        server.shutdown().await;
        Ok(())
    })
}

/// Mints an access token from the configured key, or the development key of the data
/// directory that `dialtone server` created.
pub(crate) fn token(
    config: Option<PathBuf>,
    identity: &str,
    ttl: u64,
    push_credential: Option<&str>,
) -> Result<String, VoiceError> {
    let cfg = load_config(config.as_ref())?;
    let s = &cfg.server;
    let account = match (&s.account_sid, &s.api_key_sid, &s.api_key_secret) {
        (Some(a), Some(k), Some(secret)) => dialtone_server::Account {
            account_sid: a.clone(),
            auth_token: s.auth_token.clone().unwrap_or_default(),
            api_key_sid: k.clone(),
            api_key_secret: secret.clone(),
        },
        _ => {
            let dir = dialtone_server::accounts::data_dir(s);
            dialtone_server::accounts::read_dev_account(&dir).ok_or_else(|| {
                VoiceError::new(
                    ErrorCode::AuthenticationFailed,
                    format!(
                        "no API key configured and no development account in {}: start `dialtone server` once, or set server.api_key_sid and server.api_key_secret",
                        dir.display()
                    ),
                )
            })?
        }
    };
    dialtone_server::token::mint_voice(&account, identity, ttl, None, push_credential)
}

//! Dialtone's default parts in one [`Registry`]: the signaling transports (`ws`,
//! `wss`, `sip`, `sips`), the `rtp` media engine, the codecs (`opus`, `PCMU`, `PCMA`),
//! the audio backends (`cpal`, `synthetic`) and the built-in `log` insights sink;
//! then the `[[plugins]]` a configuration names, loaded into the same registry.
//!
//! Every program that builds a client (the `dialtone` binary, the examples, the test
//! kit) starts here, so a part chosen by configuration is the same part everywhere.
//!
//! ```
//! use dialtone_core::{Config, parts::AudioCodec};
//!
//! let registry = dialtone_defaults::registry();
//! let names: Vec<String> = registry
//!     .configured_codecs(&Config::default())
//!     .unwrap()
//!     .iter()
//!     .map(|c| c.descriptor().name.clone())
//!     .collect();
//! assert_eq!(names, ["opus", "PCMU", "PCMA"]);
//! ```

#![forbid(unsafe_code)]

use std::sync::Arc;

use dialtone_core::parts::AudioCodec;
use dialtone_core::{Config, Registry, RegistryError};
pub use dialtone_plugin_abi::PluginError;

/// A registry with every default part registered under its name.
pub fn registry() -> Registry {
    let mut r = Registry::with_builtins();
    register_defaults(&mut r).unwrap_or_else(|e| unreachable!("the default parts have distinct names: {e}"));
    r
}

/// Registers the default parts in `registry` (a name already taken is refused).
pub fn register_defaults(registry: &mut Registry) -> Result<(), RegistryError> {
    dialtone_transport_ws::register(registry)?;
    dialtone_transport_tcp::register(registry)?;
    dialtone_rtp::engine::register(registry)?;
    dialtone_codec_opus::register(registry)?;
    dialtone_codec_pcmu::register(registry)?;
    dialtone_audio_cpal::register(registry)?;
    dialtone_audio_memory::register(registry)?;
    Ok(())
}

/// The default registry with the configuration's `[[plugins]]` loaded into it. A
/// refused plugin is logged and returned with its reason; the others are registered.
pub fn registry_with_plugins(config: &Config) -> (Registry, Vec<PluginError>) {
    let mut r = registry();
    let refused = load_plugins(&mut r, config);
    (r, refused)
}

/// Loads the configuration's `[[plugins]]` into `registry`; returns the refusals.
pub fn load_plugins(registry: &mut Registry, config: &Config) -> Vec<PluginError> {
    dialtone_plugin_abi::load_configured(registry, &config.plugins)
        .into_iter()
        .filter_map(|outcome| match outcome {
            Ok(name) => {
                tracing::info!(plugin = %name, "plugin loaded");
                None
            }
            Err(e) => Some(e),
        })
        .collect()
}

/// The default codecs in the default order of preference (Opus, PCMU, PCMA),
/// configured as `[codecs]` defaults.
pub fn default_codecs() -> Vec<Arc<dyn AudioCodec>> {
    registry()
        .configured_codecs(&Config::default())
        .unwrap_or_else(|e| unreachable!("the default codecs are registered: {e}"))
}

#[cfg(test)]
mod tests {
    use dialtone_core::parts::{AudioBackend, MediaEngine, SignalingTransport};

    use super::*;

    #[test]
    fn every_default_part_is_registered() {
        let r = registry();
        assert_eq!(r.names::<dyn SignalingTransport>(), ["sip", "sips", "ws", "wss"]);
        assert_eq!(r.names::<dyn MediaEngine>(), ["rtp"]);
        assert_eq!(r.names::<dyn AudioBackend>(), ["cpal", "synthetic"]);
        assert_eq!(default_codecs().len(), 3);
    }

    #[test]
    fn a_missing_plugin_is_refused_and_named() {
        let mut cfg = Config::default();
        cfg.plugins = vec![dialtone_core::config::PluginConfig::file("/nonexistent/libnothing.so")];
        let (r, refused) = registry_with_plugins(&cfg);
        assert_eq!(refused.len(), 1);
        assert!(refused[0].to_string().contains("/nonexistent/libnothing.so"), "{}", refused[0]);
        assert_eq!(r.names::<dyn AudioCodec>(), ["PCMA", "PCMU", "opus"]);
    }
}

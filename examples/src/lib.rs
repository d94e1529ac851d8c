//! Helpers the examples share: an embedded development server on free ports, and a
//! client made of the default parts (SIP over WebSocket, the RTP engine, Opus and
//! G.711) with whatever audio the example wants.
//!
//! The programs are in `src/bin`: `two_clients`, `echo_bot`, `trunk_call`,
//! `plugin_codec`. Run one with `cargo run -p dialtone-examples --bin echo_bot`.

#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::sync::Arc;

use dialtone_core::config::ServerConfig;
use dialtone_core::parts::{AudioCapturer, AudioCodec, AudioRenderer, MediaSessionConfig, TransportTarget};
use dialtone_core::{Config, NotificationDelegate, Voice, VoiceError};
use dialtone_server::Server;
use dialtone_sip_agent::{AgentConfig, SipAgent};

/// Starts the embedded server on free loopback ports with a scratch data directory.
pub async fn dev_server(name: &str) -> Result<Server, String> {
    let mut cfg = ServerConfig::default();
    cfg.sip_udp_port = 0;
    cfg.sip_tcp_port = 0;
    cfg.sip_tls_port = 0;
    cfg.ws_port = 0;
    cfg.wss_port = 0;
    cfg.http_port = 0;
    cfg.data_dir = Some(std::env::temp_dir().join(format!("dialtone-example-{name}-{}", std::process::id())));
    cfg.database_url = Some("sqlite::memory:".into());
    Server::start(&cfg).await.map_err(|e| e.to_string())
}

/// The default codecs from the default registry: Opus, PCMU, PCMA.
pub fn default_codecs() -> Vec<Arc<dyn AudioCodec>> {
    dialtone_defaults::default_codecs()
}

/// Makes each call's audio devices.
pub type AudioFactory =
    Arc<dyn Fn() -> Result<(Box<dyn AudioCapturer>, Box<dyn AudioRenderer>), VoiceError> + Send + Sync>;

/// A `Voice` of the default parts, connected to `server` over WebSocket.
pub fn client(
    server: &Server,
    codecs: Vec<Arc<dyn AudioCodec>>,
    audio: AudioFactory,
    incoming: Option<Arc<dyn NotificationDelegate>>,
) -> Voice {
    let factory = Arc::new(move || {
        let (capturer, renderer) = audio()?;
        Ok(MediaSessionConfig::new(codecs.clone(), capturer, renderer))
    });
    // The parts a default configuration names, from the default registry.
    let mut config = Config::default();
    config.client.server = server.addresses().ws_url();
    let registry = dialtone_defaults::registry();
    let transport = registry.configured_transport(&config).unwrap_or_else(|e| panic!("{e}"));
    let engine = registry.configured_media_engine(&config).unwrap_or_else(|e| panic!("{e}"));
    let target = TransportTarget::new(config.client.server.clone());
    let agent = SipAgent::new(AgentConfig::new(target), transport, engine, factory);
    let mut b = Voice::builder(agent).insights_enabled(false);
    if let Some(d) = incoming {
        b = b.incoming_delegate(d);
    }
    b.build()
}

/// The shared speech recording at `rate` (`DIALTONE_SHARED_AUDIO`, else
/// `../shared/audio`).
pub fn speech(rate: u32) -> Option<PathBuf> {
    let dir = std::env::var_os("DIALTONE_SHARED_AUDIO")
        .map(PathBuf::from)
        .unwrap_or_else(|| "../shared/audio".into());
    let f = dir.join(format!("speech-{}k.wav", rate / 1000));
    f.exists().then_some(f)
}

/// The RMS level of samples.
pub fn rms(s: &[i16]) -> f64 {
    if s.is_empty() {
        return 0.0;
    }
    (s.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / s.len() as f64).sqrt()
}

//! A plugin codec that breaks for good mid-call: concealment covers the gap, then the
//! side whose decoder keeps failing leaves the codec out and renegotiates with a
//! re-INVITE through the server; both sides switch to Opus and audio flows again.

#![allow(clippy::unwrap_used)]

mod sipkit;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use dialtone_core::config::ServerConfig;
use dialtone_core::parts::AudioCodec;
use dialtone_core::parts::TransportTarget;
use dialtone_core::{CallState, PreferredCodec};
use dialtone_rtp::engine::{RtpEngine, RtpEngineConfig};
use dialtone_server::Server;
use dialtone_sip_agent::AgentConfig;
use dialtone_transport_ws::WsTransport;
use sipkit::{Client, Heard, Scratch};

fn build_plugin() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", "dialtone-plugin-misbehaving"])
        .status()
        .unwrap();
    assert!(status.success());
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("debug").join("libdialtone_plugin_misbehaving.so")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_plugin_codec_is_renegotiated_away_mid_call() {
    // The first decoder the process makes breaks after one second of payloads.
    std::env::set_var("DIALTONE_MISBEHAVING_BREAK_AFTER", "50");
    let plugin: Arc<dyn AudioCodec> = dialtone_plugin_abi::load(&build_plugin()).unwrap().codec().unwrap();
    let scratch = Scratch::new("renegotiate");
    let mut cfg = ServerConfig::default();
    (cfg.sip_udp_port, cfg.sip_tcp_port, cfg.sip_tls_port, cfg.ws_port, cfg.wss_port, cfg.http_port) =
        (0, 0, 0, 0, 0, 0);
    cfg.data_dir = Some(scratch.0.clone());
    cfg.database_url = Some("sqlite::memory:".into());
    let srv = Server::start(&cfg).await.unwrap();
    let make = |name: &str| {
        let mut codecs = vec![plugin.clone()];
        codecs.extend(sipkit::codecs());
        let engine = RtpEngine::new(RtpEngineConfig { ports: None, ..Default::default() });
        let config = AgentConfig::new(TransportTarget::new(srv.addresses().ws_url()));
        let mut c =
            Client::with_parts(name, config, Arc::new(WsTransport::default()), Arc::new(engine), codecs);
        c.token = Some(srv.mint_token(name, 600).unwrap());
        c
    };
    let mut alice = make("alice");
    let mut bob = make("bob");
    bob.register().await;
    let prefer = vec![PreferredCodec::from_name("X-DT-MISBEHAVING"), PreferredCodec::from_name("opus")];
    let call = alice.connect_preferring("client:bob", &[], Some(prefer));
    let invite = bob.invite(10).await;
    let answered = invite.accept(bob.delegate());
    alice.wait_for(10, "connected", |e| matches!(e, Heard::Connected)).await;
    assert_eq!(call.codec().as_deref(), Some("X-DT-MISBEHAVING"));

    // Within a few seconds both sides are on Opus, and both hear speech again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while call.codec().as_deref() != Some("opus") || answered.codec().as_deref() != Some("opus") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still on {:?} / {:?}",
            call.codec(),
            answered.codec()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(call.state(), CallState::Connected, "the call went on");
    let (a0, b0) = (alice.heard_len(), bob.heard_len());
    alice.hear_more(3 * 48_000, 10).await;
    bob.hear_more(3 * 48_000, 10).await;
    let (a, b) = (alice.heard(), bob.heard());
    dialtone_tests::assert_speech("alice after the switch", &a[a0 + 12_000..], 48_000, 16_000);
    dialtone_tests::assert_speech("bob after the switch", &b[b0 + 12_000..], 48_000, 16_000);
    call.disconnect();
    bob.wait_for(10, "disconnected", |e| matches!(e, Heard::Disconnected(None))).await;
}

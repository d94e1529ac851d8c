//! A codec plugin chosen by configuration: the G.722 example plugin is loaded from
//! `[[plugins]]` and put first in `[codecs] preferred`, and a call between two clients
//! negotiates it like a built-in codec.
//!
//! The plugin is `target/debug/libdialtone_plugin_g722.so` (build it with `cargo
//! build -p dialtone-plugin-g722`) or the file `DIALTONE_G722_PLUGIN` names.

#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use dialtone_audio_memory::{BufferCapturer, MemoryRenderer};
use dialtone_core::parts::AudioFormat;
use dialtone_core::*;
use dialtone_examples::{client, dev_server, AudioFactory};

struct Invites(Mutex<mpsc::Sender<CallInvite>>);
impl NotificationDelegate for Invites {
    fn call_invite_received(&self, invite: CallInvite) {
        let _ = self.0.lock().map(|tx| tx.send(invite));
    }
    fn cancelled_call_invite_received(&self, _: CancelledCallInvite, _: &VoiceError) {}
}

struct Connected(Mutex<mpsc::Sender<Option<String>>>);
impl CallDelegate for Connected {
    fn did_connect(&self, call: &Call) {
        let _ = self.0.lock().map(|tx| tx.send(call.codec()));
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let plugin = std::env::var_os("DIALTONE_G722_PLUGIN").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/libdialtone_plugin_g722.so")
    });
    let toml =
        format!("[[plugins]]\npath = {:?}\n\n[codecs]\npreferred = [\"G722\", \"opus\", \"PCMU\"]\n", plugin);
    let file = std::env::temp_dir().join(format!("dialtone-plugin-example-{}.toml", std::process::id()));
    std::fs::write(&file, toml)?;
    let config = ConfigLoader::new().no_env().file(&file).load()?;
    let _ = std::fs::remove_file(&file);

    // Built-in codecs, then whatever the configured plugins add.
    let mut registry = Registry::new();
    dialtone_codec_opus::register(&mut registry)?;
    dialtone_codec_pcmu::register(&mut registry)?;
    for loaded in dialtone_plugin_abi::load_configured(&mut registry, &config.plugins) {
        println!("plugin: {}", loaded?);
    }
    let codecs = registry.configured_codecs(&config)?;
    let preferred: Vec<PreferredCodec> =
        config.codecs.preferred.iter().map(|n| PreferredCodec::from_name(n)).collect();

    let server = dev_server("plugin-codec").await?;
    let tone: AudioFactory = Arc::new(|| {
        let f = AudioFormat::new(16_000, 1, 20)?;
        Ok((Box::new(BufferCapturer::tone(f, 300.0, 6000)), Box::new(MemoryRenderer::new(f).0)))
    });
    let (inv_tx, inv_rx) = mpsc::channel();
    let bob = client(&server, codecs.clone(), tone.clone(), Some(Arc::new(Invites(Mutex::new(inv_tx)))));
    bob.register(&server.mint_token("bob", 600)?, "").await?;
    let alice = client(&server, codecs, tone, None);
    let (tx, rx) = mpsc::channel();
    let options = ConnectOptions::builder(server.mint_token("alice", 600)?)
        .param("to", "client:bob")
        .preferred_audio_codecs(preferred)
        .build();
    let call = alice.connect(options, Arc::new(Connected(Mutex::new(tx))));
    let invite = tokio::task::block_in_place(|| inv_rx.recv_timeout(Duration::from_secs(10)))?;
    struct Quiet;
    impl CallDelegate for Quiet {}
    let _answered = invite.accept(Arc::new(Quiet));
    let codec = tokio::task::block_in_place(|| rx.recv_timeout(Duration::from_secs(10)))?;
    println!("negotiated codec: {}", codec.as_deref().unwrap_or("none"));
    if codec.as_deref() != Some("G722") {
        return Err("the configured plugin codec was not negotiated".into());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    call.disconnect();
    println!("done");
    Ok(())
}

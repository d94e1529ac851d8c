//! Mute and hold end to end, through the server: the far end's received level drops
//! while the microphone is private, and speech comes back after. A held call carries
//! no microphone audio either way, and holding longer than the media timeout raises
//! no media loss (the holder keeps sending silence).

#![allow(clippy::unwrap_used)]

mod sipkit;

use std::sync::Arc;
use std::time::Duration;

use dialtone_server::Server;
use dialtone_transport_ws::WsTransport;
use sipkit::{rms, Client, Heard, Scratch};

fn client(server: &Server, identity: &str) -> Client {
    let mut c =
        Client::new(identity, &server.addresses().ws_url(), Arc::new(WsTransport::default()), "127.0.0.1");
    c.token = Some(server.mint_token(identity, 3600).unwrap());
    c
}

/// The level of the last `ms` milliseconds a client heard (48 kHz).
fn recent_level(c: &Client, ms: usize) -> f64 {
    let h = c.heard();
    let n = 48 * ms;
    rms(&h[h.len().saturating_sub(n)..])
}

/// Waits `ms` of heard audio, then returns the level of its second half (the first
/// half covers the jitter buffer's and the codec's delay).
async fn level_after(c: &Client, ms: usize) -> f64 {
    c.render_more(48 * ms, 10).await;
    recent_level(c, ms / 2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mute_and_hold_silence_the_microphone_and_it_comes_back() {
    let scratch = Scratch::new("hold-mute");
    let srv = Server::start(&sipkit::server_config(&scratch)).await.unwrap();
    let mut alice = client(&srv, "alice");
    let mut bob = client(&srv, "bob");
    alice.register().await;
    bob.register().await;
    let (call, _invite, answered) = sipkit::connect_and_answer(&mut alice, &mut bob, "client:bob").await;

    let speaking = level_after(&bob, 1500).await;
    assert!(speaking > 1000.0, "bob hears alice before anything: {speaking:.0}");

    call.mute(true);
    let muted = level_after(&bob, 1000).await;
    assert!(muted < 30.0, "bob hears alice while she is muted: {muted:.0}");
    call.mute(false);
    let back = level_after(&bob, 1000).await;
    assert!(back > 1000.0, "bob hears alice again after unmute: {back:.0}");

    // Hold for longer than the media timeout (5 s): neither side hears the other,
    // and neither reports media lost.
    call.hold(true);
    let bob_held = level_after(&bob, 6000).await;
    let alice_held = level_after(&alice, 1000).await;
    assert!(bob_held < 30.0, "the held party hears the holder: {bob_held:.0}");
    assert!(alice_held < 30.0, "the holder hears the held party: {alice_held:.0}");
    call.hold(false);
    let bob_back = level_after(&bob, 1500).await;
    let alice_back = level_after(&alice, 1500).await;
    assert!(
        bob_back > 1000.0 && alice_back > 1000.0,
        "after resume: bob {bob_back:.0}, alice {alice_back:.0}"
    );

    // Nothing since the call connected was a media loss (the events are still queued).
    for c in [&mut alice, &mut bob] {
        while let Ok(e) = tokio::time::timeout(Duration::from_millis(200), c.next(1)).await {
            assert!(!matches!(e, Heard::Reconnecting(_) | Heard::Disconnected(_)), "{}: {e:?}", c.identity);
        }
    }
    call.disconnect();
    bob.wait_for(10, "disconnected", |e| matches!(e, Heard::Disconnected(None))).await;
    drop(answered);
}

//! Two Dialtone clients register with Kamailio (Debian, websocket module) over
//! WebSocket and call each other through it: invite with custom parameters, answer,
//! audio both ways over SRTP, call messages both ways, hang-up. Then the same with
//! the caller's WebSocket killed mid-call: the call reports reconnecting (53001),
//! re-attaches its dialog, reports reconnected, and audio never stops.

#![allow(clippy::unwrap_used)]

mod sipkit;

use std::sync::Arc;

use dialtone_core::{CallMessage, CallState};
use dialtone_transport_ws::WsTransport;
use std::time::Duration;

use dialtone_core::parts::{TlsSettings, TransportTarget};
use dialtone_rtp::engine::{RtpEngine, RtpEngineConfig};
use dialtone_sip_agent::AgentConfig;
use sipkit::{Client, Heard, Kamailio, NoDtmfEngine, Relay};

fn ws() -> Arc<WsTransport> {
    Arc::new(WsTransport::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_call_each_other_through_kamailio_over_websocket() {
    let kam = Kamailio::start().await;
    let mut alice = Client::new("alice", &kam.ws_url(), ws(), "127.0.0.1");
    let mut bob = Client::new("bob", &kam.ws_url(), ws(), "127.0.0.1");
    alice.register().await;
    bob.register().await;

    let call = alice.connect("client:bob", &[("caller_first_name", "alice"), ("note", "a b&c")]);
    let invite = bob.invite(10).await;
    assert_eq!(invite.from(), Some("client:alice"));
    assert_eq!(invite.to(), "client:bob");
    assert_eq!(invite.custom_parameters()["caller_first_name"], "alice");
    assert_eq!(invite.custom_parameters()["note"], "a b&c", "values are URI-encoded on the way and decoded");
    assert!(invite.call_sid().starts_with("CA") && invite.call_sid().len() == 34);
    alice.wait_for(10, "ringing", |e| matches!(e, Heard::Ringing)).await;

    let answered = invite.accept(bob.delegate());
    bob.wait_for(10, "connected", |e| matches!(e, Heard::Connected)).await;
    alice.wait_for(10, "connected", |e| matches!(e, Heard::Connected)).await;
    assert_eq!(call.state(), CallState::Connected);
    assert_eq!(call.codec().as_deref(), Some("opus"));
    assert_eq!(call.sid().as_deref(), Some(invite.call_sid()), "both legs agree on the call SID");

    // Speech both ways.
    alice.hear_more(3 * 48_000, 10).await;
    bob.hear_more(3 * 48_000, 10).await;
    dialtone_tests::assert_speech("alice hears bob", &alice.heard()[24_000..], 48_000, 16_000);
    dialtone_tests::assert_speech("bob hears alice", &bob.heard()[24_000..], 48_000, 16_000);

    // Call messages both ways, as in-dialog INFO.
    let id = call.send_message(CallMessage::new("{\"from\":\"alice\"}"));
    alice.wait_for(10, "message sent", |e| matches!(e, Heard::MessageSent(s) if *s == id)).await;
    bob.wait_for(10, "message", |e| matches!(e, Heard::MessageReceived(c) if c.contains("alice"))).await;
    let id = answered.send_message(CallMessage::new("{\"from\":\"bob\"}"));
    bob.wait_for(10, "message sent", |e| matches!(e, Heard::MessageSent(s) if *s == id)).await;
    alice.wait_for(10, "message", |e| matches!(e, Heard::MessageReceived(c) if c.contains("bob"))).await;

    // Hold and resume re-INVITE through the proxy; the call stays up.
    call.hold(true);
    call.hold(false);
    // DTMF as RFC 4733 events reaches bob's delegate (digits may come in pieces).
    call.send_digits("12#").unwrap();
    let mut digits = String::new();
    while digits.len() < 3 {
        match bob.wait_for(10, "digits", |e| matches!(e, Heard::Digits(_))).await {
            Heard::Digits(d) => digits.push_str(&d),
            _ => unreachable!(),
        }
    }
    assert_eq!(digits, "12#");

    call.disconnect();
    bob.wait_for(10, "disconnected", |e| matches!(e, Heard::Disconnected(None))).await;
    assert_eq!(answered.state(), CallState::Disconnected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_call_fails_with_the_decline_code_and_a_cancel_reaches_the_callee() {
    let kam = Kamailio::start().await;
    let mut alice = Client::new("alice", &kam.ws_url(), ws(), "127.0.0.1");
    let mut bob = Client::new("bob", &kam.ws_url(), ws(), "127.0.0.1");
    alice.register().await;
    bob.register().await;

    let _call = alice.connect("client:bob", &[]);
    bob.invite(10).await.reject();
    let failed = alice.wait_for(10, "failure", |e| matches!(e, Heard::FailedToConnect(_))).await;
    assert!(matches!(failed, Heard::FailedToConnect(31002)), "600 Call Rejected is 31002: {failed:?}");

    let call = alice.connect("client:bob", &[]);
    let invite = bob.invite(10).await;
    alice.wait_for(10, "ringing", |e| matches!(e, Heard::Ringing)).await;
    call.disconnect();
    let cancelled = bob.wait_for(10, "cancel", |e| matches!(e, Heard::Cancelled(..))).await;
    assert!(
        matches!(cancelled, Heard::Cancelled(ref sid, 31008) if sid == invite.call_sid()),
        "{cancelled:?}"
    );

    // Nobody registered as carol: Kamailio answers 404, which is 31404.
    let _call = alice.connect("client:carol", &[]);
    let failed = alice.wait_for(10, "failure", |e| matches!(e, Heard::FailedToConnect(_))).await;
    assert!(matches!(failed, Heard::FailedToConnect(31404)), "{failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_websocket_reconnects_mid_call_without_stopping_media() {
    let kam = Kamailio::start().await;
    let relay = Relay::start(format!("127.0.0.1:{}", kam.ws).parse().unwrap()).await;
    let relayed = format!("ws://{}", relay.addr);
    let mut alice = Client::new("alice", &relayed, ws(), "127.0.0.1");
    let mut bob = Client::new("bob", &kam.ws_url(), ws(), "127.0.0.1");
    alice.register().await;
    bob.register().await;

    let (call, _invite, answered) = sipkit::connect_and_answer(&mut alice, &mut bob, "client:bob").await;
    alice.hear_more(24_000, 10).await;

    let before = (alice.heard_len(), bob.heard_len());
    relay.cut();
    alice.wait_for(10, "reconnecting", |e| matches!(e, Heard::Reconnecting(53001))).await;
    assert_eq!(call.state(), CallState::Reconnecting);
    alice.wait_for(20, "reconnected", |e| matches!(e, Heard::Reconnected)).await;
    assert_eq!(call.state(), CallState::Connected);
    assert!(relay.accepted() >= 2, "a new connection was made");
    // Media never stopped: audio kept arriving on both sides through the reconnect.
    alice.hear_more(3 * 48_000, 10).await;
    bob.hear_more(3 * 48_000, 10).await;
    dialtone_tests::assert_speech("alice after the reconnect", &alice.heard()[before.0..], 48_000, 16_000);
    dialtone_tests::assert_speech("bob after the reconnect", &bob.heard()[before.1..], 48_000, 16_000);

    // The dialog is re-attached: a message and the hang-up travel the new connection.
    let id = call.send_message(CallMessage::new("{\"after\":\"reconnect\"}"));
    alice.wait_for(10, "message sent", |e| matches!(e, Heard::MessageSent(s) if *s == id)).await;
    bob.wait_for(10, "message", |e| matches!(e, Heard::MessageReceived(c) if c.contains("reconnect"))).await;
    call.disconnect();
    bob.wait_for(10, "disconnected", |e| matches!(e, Heard::Disconnected(None))).await;
    assert_eq!(answered.state(), CallState::Disconnected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_while_ringing_fails_the_call_and_a_server_gone_for_the_window_ends_it() {
    let kam = Kamailio::start().await;
    let relay = Relay::start(format!("127.0.0.1:{}", kam.ws).parse().unwrap()).await;
    let mut config =
        AgentConfig::new(TransportTarget::new(format!("ws://{}", relay.addr))).with_domain("127.0.0.1");
    config.reconnect_window = Duration::from_secs(3);
    let mut alice = Client::with_config("alice", config, ws());
    let mut bob = Client::new("bob", &kam.ws_url(), ws(), "127.0.0.1");
    alice.register().await;
    bob.register().await;

    // Ringing, then the connection drops: the call fails with 53001.
    let call = alice.connect("client:bob", &[]);
    let _invite = bob.invite(10).await;
    alice.wait_for(10, "ringing", |e| matches!(e, Heard::Ringing)).await;
    relay.cut();
    let failed = alice.wait_for(10, "failure", |e| matches!(e, Heard::FailedToConnect(_))).await;
    assert!(matches!(failed, Heard::FailedToConnect(53001)), "{failed:?}");
    assert_eq!(call.state(), CallState::Disconnected);

    // The registration comes back on its own; a connected call then loses the server
    // for longer than the reconnect window and ends with 53001.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let call = alice.connect("client:bob", &[]);
    let invite = bob.invite(10).await;
    let _answered = invite.accept(bob.delegate());
    alice.wait_for(10, "connected", |e| matches!(e, Heard::Connected)).await;
    relay.set_refusing(true);
    relay.cut();
    alice.wait_for(10, "reconnecting", |e| matches!(e, Heard::Reconnecting(53001))).await;
    let started = tokio::time::Instant::now();
    let ended = alice.wait_for(15, "disconnected", |e| matches!(e, Heard::Disconnected(_))).await;
    assert!(matches!(ended, Heard::Disconnected(Some(53001))), "{ended:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "it kept trying for the window, not {:?}",
        started.elapsed()
    );
    assert_eq!(call.state(), CallState::Disconnected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_wss_with_digits_as_sip_info_when_the_media_cannot_carry_them() {
    let kam = Kamailio::start().await;
    // Alice registers over WSS (Kamailio's TLS port speaks WebSocket too), trusting the
    // test CA; her media cannot send RFC 4733 events.
    let target = TransportTarget::new(format!("wss://127.0.0.1:{}", kam.tls))
        .with_tls(TlsSettings::default().with_ca_file(&kam.ca_file));
    let engine = NoDtmfEngine(RtpEngine::new(RtpEngineConfig { ports: None, ..Default::default() }));
    let mut alice = Client::with_engine(
        "alice",
        AgentConfig::new(target).with_domain("127.0.0.1"),
        ws(),
        Arc::new(engine),
    );
    let mut bob = Client::new("bob", &kam.ws_url(), ws(), "127.0.0.1");
    alice.register().await;
    bob.register().await;

    let call = alice.connect("client:bob", &[]);
    let invite = bob.invite(10).await;
    let _answered = invite.accept(bob.delegate());
    alice.wait_for(10, "connected", |e| matches!(e, Heard::Connected)).await;
    bob.wait_for(10, "connected", |e| matches!(e, Heard::Connected)).await;
    call.send_digits("4w2").unwrap();
    let mut digits = String::new();
    while digits.len() < 2 {
        match bob.wait_for(10, "digits", |e| matches!(e, Heard::Digits(_))).await {
            Heard::Digits(d) => digits.push_str(&d),
            _ => unreachable!(),
        }
    }
    assert_eq!(digits, "42", "each digit arrived as an INFO (the pause is not sent)");
    call.disconnect();
    bob.wait_for(10, "disconnected", |e| matches!(e, Heard::Disconnected(None))).await;
}

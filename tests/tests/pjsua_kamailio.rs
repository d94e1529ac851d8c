//! Interop with PJSIP (pjsua2, PyPI `pjsua2-python`): pjsua and a Dialtone client both
//! register with Kamailio over UDP, TCP and TLS, and each calls the other. The
//! Dialtone client sees a CallInvite from pjsua and accepts it; pjsua answers the
//! Dialtone client's call. Speech flows both ways with PCMU and SDES-SRTP, checked on
//! both sides, and the hang-up of either side reaches the other.

#![allow(clippy::unwrap_used)]

mod sipkit;

use std::sync::Arc;

use dialtone_core::parts::{TlsSettings, TransportTarget};
use dialtone_transport_tcp::TcpTransport;
use sipkit::{Client, Heard, Kamailio, Pjsua, Scratch};
use tokio::io::AsyncWriteExt;

fn target(kam: &Kamailio, wire: &str) -> TransportTarget {
    match wire {
        "udp" => TransportTarget::new(format!("sip:127.0.0.1:{}", kam.udp)),
        "tcp" => TransportTarget::new(format!("sip:127.0.0.1:{};transport=tcp", kam.tcp)),
        _ => TransportTarget::new(format!("sips:127.0.0.1:{}", kam.tls))
            .with_tls(TlsSettings::default().with_ca_file(&kam.ca_file)),
    }
}

fn kam_registrar(kam: &Kamailio, wire: &str) -> String {
    let port = match wire {
        "udp" => kam.udp,
        "tcp" => kam.tcp,
        _ => kam.tls,
    };
    format!("127.0.0.1:{port}")
}

async fn pjsua_calls_dialtone(wire: &str) {
    let kam = Kamailio::start().await;
    let scratch = Scratch::new(&format!("pjsua-in-{wire}"));
    let mut bob =
        Client::with_target("bob", target(&kam, wire), Arc::new(TcpTransport::default()), "127.0.0.1");
    bob.register().await;
    let mut pj = Pjsua::start(
        &scratch,
        "call",
        wire,
        &kam_registrar(&kam, wire),
        "sip:bob@127.0.0.1",
        Some(kam.cert_and_key()),
    );
    pj.expect("registered", 20).await;
    pj.stdin.write_all(b"go\n").await.unwrap();

    let invite = bob.invite(20).await;
    assert!(invite.from().is_some_and(|f| f.contains("pjsua")), "from {:?}", invite.from());
    assert_eq!(invite.to(), "client:bob");
    assert!(invite.call_sid().starts_with("CA"));
    let call = invite.accept(bob.delegate());
    bob.wait_for(20, "connected", |e| matches!(e, Heard::Connected)).await;
    assert_eq!(call.codec().as_deref(), Some("PCMU"));
    pj.expect("media-active", 10).await;
    bob.hear_more(48_000, 10).await;
    // pjsua hangs up after 4 s of media.
    bob.wait_for(20, "disconnected", |e| matches!(e, Heard::Disconnected(None))).await;
    dialtone_tests::assert_speech(
        &format!("{wire}: bob hears pjsua's speech"),
        &bob.heard()[12_000..],
        48_000,
        8000,
    );
    let line = pj.expect("disconnected", 10).await;
    assert_eq!(line, "disconnected 200");
    let heard = pj.finish().await;
    dialtone_tests::assert_speech(
        &format!("{wire}: pjsua heard Dialtone's speech"),
        dialtone_tests::middle(&heard, 4_000, 4_000),
        8000,
        8000,
    );
}

async fn dialtone_calls_pjsua(wire: &str) {
    let kam = Kamailio::start().await;
    let scratch = Scratch::new(&format!("pjsua-out-{wire}"));
    let mut pj =
        Pjsua::start(&scratch, "answer", wire, &kam_registrar(&kam, wire), "-", Some(kam.cert_and_key()));
    pj.expect("registered", 20).await;
    let mut alice =
        Client::with_target("alice", target(&kam, wire), Arc::new(TcpTransport::default()), "127.0.0.1");
    let call = alice.connect("sip:pjsua@127.0.0.1", &[]);
    let line = pj.expect("incoming", 20).await;
    assert!(line.contains("alice"), "{line}");
    alice.wait_for(20, "connected", |e| matches!(e, Heard::Connected)).await;
    assert!(call.sid().is_some_and(|s| s.starts_with("CA")));
    alice.hear_more(3 * 48_000, 10).await;
    dialtone_tests::assert_speech(
        &format!("{wire}: alice hears pjsua's speech"),
        &alice.heard()[12_000..],
        48_000,
        8000,
    );
    call.disconnect();
    let line = pj.expect("disconnected", 20).await;
    assert_eq!(line, "disconnected 200");
    let heard = pj.finish().await;
    dialtone_tests::assert_speech(
        &format!("{wire}: pjsua heard Dialtone's speech"),
        dialtone_tests::middle(&heard, 4_000, 4_000),
        8000,
        8000,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pjsua_calls_a_dialtone_client_over_udp_tcp_and_tls() {
    for wire in ["udp", "tcp", "tls"] {
        pjsua_calls_dialtone(wire).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialtone_client_calls_pjsua_over_udp_tcp_and_tls() {
    for wire in ["udp", "tcp", "tls"] {
        dialtone_calls_pjsua(wire).await;
    }
}

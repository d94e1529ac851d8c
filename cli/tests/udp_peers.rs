//! UDP peers are forgotten when idle: a peer that sent nothing for `udp_idle_secs` and
//! holds no call, registration or running transaction is dropped with its memory, and
//! its next request opens a new flow that works as the first did.

#![allow(clippy::unwrap_used)]

mod plain_sip;
mod proc;

use std::time::{Duration, Instant};

use plain_sip::{start_logging, Peer, Scratch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_udp_peer_is_forgotten_and_can_come_back() {
    let home = Scratch::new("udp-idle");
    let server = start_logging(&home.0, "udp_idle_secs = 1", "dialtone_server=debug,warn");
    let peer = Peer::new(server.udp).await;
    let call = |id: &'static str| {
        let peer = &peer;
        async move {
            peer.send(&peer.invite(id)).await;
            let r = peer.final_response(20).await;
            assert_eq!(r.status(), Some(480), "{id}");
            peer.send(&peer.ack(id, &r)).await;
        }
    };
    call("first").await;

    // Its INVITE transaction ends (timer I, 5 s after the ACK); then, idle for 1 s, the
    // peer is forgotten.
    let me = format!("peer={}", peer.me);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match server.log.recv_timeout(left) {
            Ok(l) if l.contains("forgot an idle UDP peer") && l.contains(&me) => break,
            Ok(_) => {}
            Err(_) => panic!("the idle UDP peer {} was never forgotten", peer.me),
        }
    }
    // The same peer again: served on a new flow, as the first time.
    call("again").await;
}

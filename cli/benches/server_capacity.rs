//! Server capacity, measured against `dialtone server` running as its own process:
//!
//! 1. call attempts per second: a trunk peer (the sans-IO user agent over UDP, no
//!    token) places calls to `client:bob`; bob (the user agent over a WebSocket)
//!    answers each; the trunk hangs up at once. Calls are kept `IN_FLIGHT` at a time for
//!    `SECONDS`; the figure is completed calls (INVITE, 200, ACK, BYE, 200 on both
//!    legs) per second.
//! 2. idle registered WebSocket clients: `CLIENTS` connections each REGISTER an
//!    identity and stay open; the server's peak RSS (VmHWM) before and after, per
//!    registration.
//!
//! SDP is a fixed offer and answer: the server passes SDP through, so media plays no
//! part here. Run: `cargo bench -p dialtone-cli --bench server_capacity`.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{start_server, vm};

use dialtone_sip::header::Uri;
use dialtone_sip::ua::{Flow, Transmit, UaConfig, UaEvent, UserAgent};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as Ws;

const SECONDS: u64 = 10;
const IN_FLIGHT: usize = 16;
const CLIENTS: usize = 1000;

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

async fn ws(url: &str) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let addr = url.trim_start_matches("ws://").to_owned();
    let tcp = TcpStream::connect(&addr).await.unwrap();
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", "sip".parse().unwrap());
    tokio_tungstenite::client_async(req, tcp).await.unwrap().0
}

/// bob: answers every INVITE over one WebSocket, until the process ends.
async fn bob(url: String, token: String) {
    let mut s = ws(&url).await;
    let local = "127.0.0.1:9".to_owned();
    let mut ua = UserAgent::new(
        UaConfig::new("bob", "127.0.0.1"),
        Flow { transport: "WS".into(), local, reliable: true },
    );
    ua.set_token(Some(token));
    ua.register(Instant::now());
    loop {
        while let Some(t) = ua.poll_transmit() {
            if let Transmit::Message(b) = t {
                s.send(Ws::text(String::from_utf8(b).unwrap())).await.unwrap();
            }
        }
        while let Some(e) = ua.poll_event() {
            if let UaEvent::Incoming { call, .. } = e {
                ua.answer(call, SDP, Instant::now());
            }
        }
        let wake = ua
            .poll_timeout()
            .map_or(Duration::from_millis(100), |t| t.saturating_duration_since(Instant::now()));
        match tokio::time::timeout(wake.max(Duration::from_millis(1)), s.next()).await {
            Ok(Some(Ok(Ws::Text(t)))) => ua.handle_input(t.as_bytes(), Instant::now()),
            Ok(Some(Ok(_))) => {}
            Ok(_) => return,
            Err(_) => ua.handle_timeout(Instant::now()),
        }
    }
}

/// The trunk: keeps `IN_FLIGHT` calls going for `SECONDS`; returns completed calls.
async fn trunk(server: SocketAddr) -> (usize, usize) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = sock.local_addr().unwrap().to_string();
    let mut ua = UserAgent::new(
        UaConfig::new("pbx", "127.0.0.1"),
        Flow { transport: "UDP".into(), local, reliable: false },
    );
    let target = Uri::parse(&format!("sip:bob@{server}")).unwrap();
    let end = Instant::now() + Duration::from_secs(SECONDS);
    let (mut started, mut done, mut failed, mut live) = (0usize, 0usize, 0usize, 0usize);
    let mut buf = vec![0u8; 65536];
    loop {
        let now = Instant::now();
        while live < IN_FLIGHT && now < end {
            ua.invite(target.clone(), SDP, &[], now);
            started += 1;
            live += 1;
        }
        while let Some(t) = ua.poll_transmit() {
            if let Transmit::Message(b) = t {
                sock.send_to(&b, server).await.unwrap();
            }
        }
        while let Some(e) = ua.poll_event() {
            match e {
                UaEvent::Answered { call, .. } => ua.hangup(call, Instant::now()),
                UaEvent::Ended { .. } => {
                    done += 1;
                    live -= 1;
                }
                UaEvent::Failed { .. } => {
                    failed += 1;
                    live -= 1;
                }
                _ => {}
            }
        }
        if now >= end && live == 0 {
            let _ = started;
            return (done, failed);
        }
        if now >= end + Duration::from_secs(20) {
            return (done, failed);
        }
        match tokio::time::timeout(Duration::from_millis(5), sock.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => ua.handle_input(&buf[..n], Instant::now()),
            _ => ua.handle_timeout(Instant::now()),
        }
    }
}

fn main() {
    let home = std::env::temp_dir().join(format!("dialtone-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    let server = start_server(&home, "database_url = \"sqlite::memory:\"\n");
    let (pid, ws_url, udp) = (server.pid(), server.ws_url.clone(), server.udp.clone());
    let account = dialtone_server::accounts::read_dev_account(&home).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let token = dialtone_server::token::mint(&account, "bob", 3600, None).unwrap();
        tokio::spawn(bob(ws_url.clone(), token));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t0 = Instant::now();
        let (done, failed) = trunk(udp.parse().unwrap()).await;
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "calls: {done} completed, {failed} failed in {secs:.1} s with {IN_FLIGHT} in flight: {:.0} call attempts/s",
            done as f64 / secs
        );

        let before_rss = vm(pid, "VmRSS:");
        let before_hwm = vm(pid, "VmHWM:");
        let mut held = Vec::with_capacity(CLIENTS);
        let t0 = Instant::now();
        for i in 0..CLIENTS {
            let identity = format!("idle{i}");
            let token = dialtone_server::token::mint(&account, &identity, 3600, None).unwrap();
            let mut s = ws(&ws_url).await;
            let mut ua = UserAgent::new(
                UaConfig::new(identity, "127.0.0.1"),
                Flow { transport: "WS".into(), local: format!("127.0.0.1:{}", 10_000 + i), reliable: true },
            );
            ua.set_token(Some(token));
            ua.register(Instant::now());
            while let Some(Transmit::Message(b)) = ua.poll_transmit() {
                s.send(Ws::text(String::from_utf8(b).unwrap())).await.unwrap();
            }
            let ok = matches!(s.next().await, Some(Ok(Ws::Text(t))) if t.starts_with("SIP/2.0 200"));
            assert!(ok, "registration {i} failed");
            held.push(s);
        }
        let reg_secs = t0.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after_rss = vm(pid, "VmRSS:");
        let after_hwm = vm(pid, "VmHWM:");
        println!(
            "idle WebSocket registrations: {CLIENTS} held (registered in {reg_secs:.1} s); server RSS {before_rss} -> {after_rss} KiB, peak {before_hwm} -> {after_hwm} KiB: {:.1} KiB per registration",
            (after_hwm.max(after_rss) as f64 - before_hwm as f64) / CLIENTS as f64
        );
        drop(held);
    });
    drop(server);
    let _ = std::fs::remove_dir_all(&home);
}

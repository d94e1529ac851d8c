//! Idle registered WebSocket clients, the way a restart finds them: `CLIENTS` (default
//! 50,000) connections open at once (256 at a time in flight), each REGISTERs its own
//! identity with its own access token and stays open. Measured against `dialtone
//! server` in its default configuration (the SQLite file), as its own process: the time
//! until every client is registered, and the server's resident memory per registration
//! (VmRSS after, less before).
//!
//! Clients bind source addresses across 127.0.0.0/8 so that no one address runs out of
//! ephemeral ports; the bench raises its own and the server's open-file limit with
//! `prlimit` (run as root). Run: `cargo bench -p dialtone-cli --bench server_registrations`.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::expect_used)]

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{rest_get, start_server, vm};
use dialtone_sip::ua::{Flow, Transmit, UaConfig, UserAgent};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as Ws;

const IN_FLIGHT: usize = 256;
/// Clients per source address: few, since binding port 0 searches the address's used ports.
const PER_SOURCE: usize = 1_000;

/// CPU seconds `pid` has used (user + system).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// The hard open-file limit of `pid`.
fn hard_nofile(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    line.split_whitespace().nth(4).and_then(|v| v.parse().ok()).unwrap_or(1024)
}

/// Raises `pid`'s open-file limit to `n`, or as far as its hard limit allows (a
/// container may forbid more, even to root). Returns the limit set.
fn raise_nofile(pid: u32, n: u64) -> u64 {
    let set = |n: u64| {
        Command::new("prlimit")
            .args([format!("--pid={pid}"), format!("--nofile={n}:{n}")])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if set(n) {
        return n;
    }
    let hard = hard_nofile(pid);
    assert!(set(hard), "prlimit could not set the open-file limit of {pid} to {hard}");
    hard
}

type Held = tokio_tungstenite::WebSocketStream<TcpStream>;

/// One client: connect from `source`, REGISTER `identity`, wait for the 200.
async fn register(server: SocketAddr, source: Ipv4Addr, identity: String, token: String) -> Held {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(source.into(), 0)).unwrap();
    let tcp = sock.connect(server).await.unwrap();
    let mut req = format!("ws://{server}").into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", "sip".parse().unwrap());
    let mut s = tokio_tungstenite::client_async(req, tcp).await.unwrap().0;
    let local = tcp_local(&s);
    let mut ua = UserAgent::new(
        UaConfig::new(identity.clone(), "127.0.0.1"),
        Flow { transport: "WS".into(), local, reliable: true },
    );
    ua.set_token(Some(token));
    ua.register(Instant::now());
    while let Some(Transmit::Message(b)) = ua.poll_transmit() {
        s.send(Ws::text(String::from_utf8(b).unwrap())).await.unwrap();
    }
    loop {
        match tokio::time::timeout(Duration::from_secs(60), s.next()).await {
            Ok(Some(Ok(Ws::Text(t)))) if t.starts_with("SIP/2.0 200") => return s,
            Ok(Some(Ok(Ws::Text(t)))) if t.starts_with("SIP/2.0 1") => continue,
            other => panic!("{identity}: no 200 for the REGISTER: {other:?}"),
        }
    }
}

fn tcp_local(s: &Held) -> String {
    s.get_ref().local_addr().map_or_else(|_| "127.0.0.1:9".into(), |a| a.to_string())
}

/// Opens one client per token (`IN_FLIGHT` at a time), each registered: the clients
/// and how long it took.
async fn wave(server_addr: SocketAddr, tokens: &[String]) -> (Vec<Held>, f64) {
    let gate = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(tokens.len());
    for (i, token) in tokens.iter().cloned().enumerate() {
        let permit = gate.clone().acquire_owned().await.unwrap();
        let source = Ipv4Addr::new(127, 0, 1, 1 + (i / PER_SOURCE) as u8);
        tasks.push(tokio::spawn(async move {
            let s = register(server_addr, source, format!("idle{i}"), token).await;
            drop(permit);
            s
        }));
    }
    let mut held = Vec::with_capacity(tokens.len());
    for t in tasks {
        held.push(t.await.unwrap());
    }
    (held, t0.elapsed().as_secs_f64())
}

/// How many `idle*` identities the registrar holds (the REST API's snapshot).
fn registered(server: &common::Server, account: &dialtone_server::accounts::Account) -> usize {
    let (status, body) =
        rest_get(&server.http, "/v1/Registrations", &account.account_sid, &account.auth_token);
    assert!(status.contains(" 200 "), "{status} {body}");
    body.matches("\"idle").count()
}

/// Drops every client and waits until the registrar is empty; how long that took.
async fn leave(
    held: Vec<Held>,
    server: &common::Server,
    account: &dialtone_server::accounts::Account,
) -> f64 {
    drop(held);
    let t = Instant::now();
    while registered(server, account) > 0 {
        assert!(t.elapsed() < Duration::from_secs(60), "the registrar never emptied");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t.elapsed().as_secs_f64()
}

fn main() {
    let wanted: usize = std::env::var("CLIENTS").ok().and_then(|c| c.parse().ok()).unwrap_or(50_000);
    let nofile = (wanted as u64) + 1_000;
    let got = raise_nofile(std::process::id(), nofile);
    // Each client is one descriptor here and one in the server.
    let clients = wanted.min(got.saturating_sub(1_000) as usize);
    if clients < wanted {
        println!(
            "the open-file limit here is {got} and cannot be raised (a container's hard limit): measuring {clients} clients, not {wanted}"
        );
    }
    let home = std::env::temp_dir().join(format!("dialtone-regs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    let server = start_server(&home, "");
    let pid = server.pid();
    let server_limit = raise_nofile(pid, nofile);
    assert!(server_limit as usize >= clients + 500, "the server may open only {server_limit} files");
    let ws = server.ws_url.trim_start_matches("ws://").to_owned();
    let server_addr: SocketAddr = ws.parse().unwrap();
    let account = dialtone_server::accounts::read_dev_account(&home).unwrap();
    let tokens: Vec<String> = (0..clients)
        .map(|i| dialtone_server::token::mint(&account, &format!("idle{i}"), 3600, None).unwrap())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = vm(pid, "VmRSS:");
        let (cpu0, own0) = (cpu_secs(pid), cpu_secs(std::process::id()));
        let (held, secs) = wave(server_addr, &tokens).await;
        let (cpu, own) = (cpu_secs(pid) - cpu0, cpu_secs(std::process::id()) - own0);
        println!(
            "CPU during the registrations: server {cpu:.2} s ({:.0} µs per registration), clients {own:.2} s, in {secs:.2} s on 2 cores",
            cpu / clients as f64 * 1e6
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(registered(&server, &account), clients, "the registrar holds every client");
        let after = vm(pid, "VmRSS:");
        let per = (after.saturating_sub(before)) as f64 / clients as f64;
        println!(
            "{clients} WebSocket clients registered in {secs:.2} s ({:.0}/s), all held; server RSS {before} -> {after} KiB: {per:.1} KiB per registration",
            clients as f64 / secs
        );
        // After the load: every client leaves; then the same number again. What the
        // server keeps between the waves, and what the second wave adds to it, tell
        // whether the memory went back to the allocator (and how much to the system).
        let emptied = leave(held, &server, &account).await;
        tokio::time::sleep(Duration::from_secs(20)).await;
        let idle = vm(pid, "VmRSS:");
        let (held, secs2) = wave(server_addr, &tokens).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let again = vm(pid, "VmRSS:");
        let emptied2 = leave(held, &server, &account).await;
        tokio::time::sleep(Duration::from_secs(20)).await;
        let end = vm(pid, "VmRSS:");
        println!(
            "after they left (registrar empty in {emptied:.2} s): RSS {idle} KiB; a second wave of {clients} registered in {secs2:.2} s and took it to {again} KiB ({:+.1} KiB per registration over the first wave's peak); after it left (empty in {emptied2:.2} s): {end} KiB",
            (again as f64 - after as f64) / clients as f64
        );
    });
    drop(server);
    let _ = std::fs::remove_dir_all(&home);
}

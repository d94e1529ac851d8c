//! The `dialtone` binary between machines: the server on one host, the clients on
//! others, each host a network namespace of the test's own lab (see `lab/mod.rs`),
//! joined through a router. Speech is scored both ways against what was sent.
//!
//! - two clients on two hosts, the server on a third;
//! - a client behind a NAT router calls a client on an open host (latching alone:
//!   the server relays signaling only);
//! - the media path is cut mid-call: both sides report reconnecting (53405), and
//!   media comes back once the cut is lifted; a cut longer than the reconnect window
//!   ends the call with 53405;
//! - a Twilio application on a host of its own gets the server's signed webhooks over
//!   HTTPS, routes a call, and a slow one fails its call with 31502;
//! - the server pushes to APNs and FCM on another host, and cancels.
//!
//! These tests need root (they make namespaces); without it they fail, loudly.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod lab;
#[path = "../../tests/tests/providers/mod.rs"]
mod providers;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lab::Lab;
use serde_json::Value;

const SERVER_IP: &str = "198.18.1.2";

/// An address on lab network `n`: 198.18.N.H/24, or 2001:db8:N::H/64 (the
/// documentation range) for IPv6.
fn lab_addr(v6: bool, n: usize, host: u8) -> (String, String) {
    if v6 {
        (format!("2001:db8:{n}::{host}"), "64".into())
    } else {
        (format!("198.18.{n}.{host}"), "24".into())
    }
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_dialtone")
}

fn speech_file(rate: u32) -> PathBuf {
    dialtone_tests::shared_audio_dir().join(format!("speech-{}k.wav", rate / 1000))
}

/// Lines of a child's stdout with the time each was read, read on a thread.
fn lines(child: &mut std::process::Child) -> mpsc::Receiver<(Instant, String)> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send((Instant::now(), l));
        }
    });
    rx
}

/// A client's JSON events as they arrive, with the time each was seen.
struct Events {
    rx: mpsc::Receiver<(Instant, String)>,
    seen: Vec<(Instant, Value)>,
    who: &'static str,
}

impl Events {
    fn new(rx: mpsc::Receiver<(Instant, String)>, who: &'static str) -> Events {
        Events { rx, seen: Vec::new(), who }
    }

    /// Waits (up to `secs`) for an event named `name`; returns it with its time.
    fn wait(&mut self, name: &str, secs: u64) -> (Instant, Value) {
        if let Some(e) = self.seen.iter().find(|(_, e)| e["event"] == name) {
            return e.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((at, l)) => {
                    let Ok(v) = serde_json::from_str::<Value>(&l) else { continue };
                    self.seen.push((at, v.clone()));
                    if v["event"] == name {
                        return (at, v);
                    }
                }
                Err(_) => panic!("{}: no {name} event within {secs} s; saw {:?}", self.who, self.names()),
            }
        }
    }

    /// Everything until the stream closes (the process exited), up to `secs`.
    fn drain(&mut self, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while let Ok((at, l)) = self.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            if let Ok(v) = serde_json::from_str::<Value>(&l) {
                self.seen.push((at, v));
            }
        }
    }

    fn names(&self) -> Vec<String> {
        self.seen.iter().map(|(_, e)| e["event"].as_str().unwrap_or("?").to_owned()).collect()
    }
}

/// The server on its own host and a router joining every host.
struct World {
    lab: Lab,
    home: PathBuf,
    client_cfg: PathBuf,
    router: String,
    server_ns: String,
    server: Option<usize>,
    ws_url: String,
    udp_port: u16,
    /// The REST API's port, on the server's address.
    http_port: u16,
    rate: u32,
    hosts: usize,
    v6: bool,
    /// Each client's stderr, read on a thread (a full pipe would stall the client).
    logs: std::collections::HashMap<usize, std::sync::Arc<std::sync::Mutex<String>>>,
}

impl World {
    /// `client_toml` is added to every client's configuration file.
    fn new(name: &str, client_toml: &str) -> World {
        World::with(name, 16_000, "", client_toml)
    }

    /// Clients at `rate` Hz; `server_toml` is added to the server's `[server]`.
    fn with(name: &str, rate: u32, server_toml: &str, client_toml: &str) -> World {
        World::build(name, rate, Some(server_toml), client_toml, false)
    }

    /// Every host on IPv6 only.
    fn v6(name: &str) -> World {
        World::build(name, 16_000, Some(""), "", true)
    }

    /// The server's host with no server running yet: [`World::start_server`] starts it
    /// (once what its configuration names exists).
    fn unstarted(name: &str, client_toml: &str) -> World {
        World::build(name, 16_000, None, client_toml, false)
    }

    fn server_ip(&self) -> String {
        lab_addr(self.v6, 1, 2).0
    }

    fn build(name: &str, rate: u32, server_toml: Option<&str>, client_toml: &str, v6: bool) -> World {
        assert!(speech_file(rate).exists(), "{} is the shared speech", speech_file(rate).display());
        let home = std::env::temp_dir().join(format!("dialtone-hosts-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(&home).unwrap();
        let mut lab = Lab::new();
        let router = lab.host("router");
        lab.forwarding(&router);
        let server_ns = lab.host("server");
        let ((gw, len), (ip, _)) = (lab_addr(v6, 1, 1), lab_addr(v6, 1, 2));
        lab.link(&router, &format!("{gw}/{len}"), &server_ns, &format!("{ip}/{len}"));
        lab.default_route(&server_ns, &gw);
        let client_cfg = home.join("client.toml");
        std::fs::write(&client_cfg, format!("[audio]\nsample_rate = {rate}\n{client_toml}")).unwrap();
        let mut w = World {
            lab,
            home,
            client_cfg,
            router,
            server_ns,
            server: None,
            ws_url: String::new(),
            udp_port: 0,
            http_port: 0,
            rate,
            hosts: 1,
            v6,
            logs: std::collections::HashMap::new(),
        };
        if let Some(extra) = server_toml {
            w.start_server(extra);
        }
        w
    }

    /// Starts (or restarts) the server with `extra` in its `[server]` section.
    fn start_server(&mut self, extra: &str) {
        if let Some(i) = self.server.take() {
            let c = self.lab.child(i);
            let _ = c.kill();
            let _ = c.wait();
        }
        let server_cfg = self.home.join("server.toml");
        let (bind, public) = if self.v6 {
            ("::".to_owned(), format!("[{}]", self.server_ip()))
        } else {
            ("0.0.0.0".to_owned(), self.server_ip())
        };
        std::fs::write(
            &server_cfg,
            format!(
                "[server]\nbind = \"{bind}\"\npublic_host = \"{public}\"\n\
                 sip_udp_port = 0\nsip_tcp_port = 0\nsip_tls_port = 0\nws_port = 0\nwss_port = 0\nhttp_port = 0\n{extra}"
            ),
        )
        .unwrap();
        let mut cmd = self.lab.command(&self.server_ns, bin());
        cmd.args(["server", "--config", server_cfg.to_str().unwrap()])
            .env("DIALTONE_HOME", &self.home)
            .stdout(Stdio::piped());
        let i = self.lab.spawn(cmd);
        self.server = Some(i);
        let out = lines(self.lab.child(i));
        let port_of = |l: &str| l.rsplit(':').next().unwrap().trim().parse::<u16>().unwrap();
        let (mut ws, mut udp, mut http) = (None, None, None);
        while ws.is_none() || udp.is_none() || http.is_none() {
            let (_, l) = out.recv_timeout(Duration::from_secs(30)).expect("the server's banner");
            if l.contains("SIP WS ") {
                ws = Some(port_of(&l));
            }
            if l.contains("SIP UDP ") {
                udp = Some(port_of(&l));
            }
            if l.contains("HTTP API ") {
                http = Some(port_of(&l));
            }
        }
        let host = if self.v6 { format!("[{}]", self.server_ip()) } else { self.server_ip() };
        self.ws_url = format!("ws://{host}:{}", ws.unwrap());
        self.udp_port = udp.unwrap();
        self.http_port = http.unwrap();
    }

    /// A host on the router's network `198.18.N.0/24`: its namespace and address.
    fn open_host(&mut self, name: &str) -> (String, String) {
        let (ns, ip, _) = self.routed_host(name);
        (ns, ip)
    }

    fn routed_host(&mut self, name: &str) -> (String, String, String) {
        self.hosts += 1;
        let n = self.hosts + 1;
        let ns = self.lab.host(name);
        let ((gw, len), (ip, _)) = (lab_addr(self.v6, n, 1), lab_addr(self.v6, n, 2));
        let (_, ifname) = self.lab.link(&self.router, &format!("{gw}/{len}"), &ns, &format!("{ip}/{len}"));
        self.lab.default_route(&ns, &gw);
        (ns, ip, ifname)
    }

    /// A host behind a NAT router: its private network is 198.19.N.0/24, and the
    /// NAT router masquerades it onto the router's network.
    fn host_behind_nat(&mut self, name: &str) -> (String, String) {
        let (nat, _, outside) = self.routed_host(&format!("{name}-nat"));
        self.lab.forwarding(&nat);
        let n = self.hosts + 1;
        let ns = self.lab.host(name);
        let ip = format!("198.19.{n}.2");
        self.lab.link(&nat, &format!("198.19.{n}.1/24"), &ns, &format!("{ip}/24"));
        self.lab.default_route(&ns, &format!("198.19.{n}.1"));
        self.lab.masquerade(&nat, &outside);
        (ns, ip)
    }

    fn client(
        &mut self,
        ns: &str,
        args: &[&str],
        env: &[(&str, &str)],
        who: &'static str,
    ) -> (usize, Events) {
        let mut cmd = self.lab.command(ns, bin());
        cmd.args(args)
            .args(["--server", &self.ws_url, "--json", "--config", self.client_cfg.to_str().unwrap()])
            .arg("--play")
            .arg(speech_file(self.rate))
            .env("DIALTONE_HOME", &self.home)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let i = self.lab.spawn(cmd);
        let ev = Events::new(lines(self.lab.child(i)), who);
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        if let Some(err) = self.lab.child(i).stderr.take() {
            let log = log.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(err).lines().map_while(Result::ok) {
                    let mut s = log.lock().unwrap();
                    s.push_str(&l);
                    s.push('\n');
                }
            });
        }
        self.logs.insert(i, log);
        (i, ev)
    }

    fn listen(&mut self, ns: &str, wav: &Path, env: &[(&str, &str)]) -> (usize, Events) {
        let (i, mut ev) = self.client(
            ns,
            &["listen", "--identity", "bob", "--calls", "1", "--record", wav.to_str().unwrap()],
            env,
            "bob",
        );
        ev.wait("registered", 30);
        (i, ev)
    }

    fn call(&mut self, ns: &str, wav: &Path, secs: u64, env: &[(&str, &str)]) -> (usize, Events) {
        let d = secs.to_string();
        self.client(
            ns,
            &[
                "call",
                "--identity",
                "alice",
                "--to",
                "client:bob",
                "--duration",
                &d,
                "--record",
                wav.to_str().unwrap(),
            ],
            env,
            "alice",
        )
    }

    fn exit_status(&mut self, i: usize, secs: u64) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(s) = self.lab.child(i).try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "a client did not exit within {secs} s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What a client wrote to stderr so far.
    fn stderr(&mut self, i: usize) -> String {
        self.logs.get(&i).map(|l| l.lock().unwrap().clone()).unwrap_or_default()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

fn read_wav(path: &Path, rate: u32) -> Vec<i16> {
    let r = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(r.spec().sample_rate, rate, "{}", path.display());
    r.into_samples::<i16>().map(Result::unwrap).collect()
}

/// Scores `seconds` of a recording from `from_s` on against the looped speech that
/// was sent ([`dialtone_tests::speech_score`]): segmental SNR (dB) and PESQ.
fn score(recording: &[i16], rate: u32, from_s: f64, seconds: f64) -> (f64, f64) {
    let r = f64::from(rate);
    let (start, len) = ((from_s * r) as usize, (seconds * r) as usize);
    assert!(
        recording.len() >= start + len,
        "the recording has {:.1} s; {from_s:.1} s + {seconds:.1} s are to be scored",
        recording.len() as f64 / r
    );
    dialtone_tests::speech_score(&recording[start..start + len], rate, rate)
}

fn assert_speech(who: &str, recording: &[i16], rate: u32, from_s: f64, seconds: f64) {
    let (snr, pesq) = score(recording, rate, from_s, seconds);
    eprintln!("{who}: segmental SNR {snr:.1} dB, PESQ {pesq:.2} over {seconds:.1} s from {from_s:.1} s");
    assert!(
        snr > 5.0 && pesq > 2.0,
        "{who} heard no clean speech: segmental SNR {snr:.1} dB, PESQ {pesq:.2}"
    );
}

fn stats_received(ev: &Events) -> Vec<u64> {
    ev.seen
        .iter()
        .filter(|(_, e)| e["event"] == "stats")
        .filter_map(|(_, e)| e["packets_received"].as_u64())
        .collect()
}

/// Runs one ordinary call from `alice_ns` to `bob_ns` and checks speech both ways.
fn call_and_score(w: &mut World, alice_ns: &str, bob_ns: &str) {
    let (bob_wav, alice_wav) = (w.home.join("bob.wav"), w.home.join("alice.wav"));
    let (bob, mut bob_ev) = w.listen(bob_ns, &bob_wav, &[]);
    let (alice, mut alice_ev) = w.call(alice_ns, &alice_wav, 7, &[]);
    alice_ev.wait("connected", 30);
    bob_ev.wait("connected", 30);
    alice_ev.wait("disconnected", 30);
    assert!(w.exit_status(alice, 30).success(), "alice: {}", w.stderr(alice));
    assert!(w.exit_status(bob, 30).success(), "bob: {}", w.stderr(bob));
    alice_ev.drain(5);
    bob_ev.drain(5);
    let logs = format!("alice's stderr:\n{}\nbob's stderr:\n{}", w.stderr(alice), w.stderr(bob));
    for ev in [&alice_ev, &bob_ev] {
        assert!(!ev.names().contains(&"reconnecting".to_owned()), "{}: {:?}\n{logs}", ev.who, ev.names());
        let got = stats_received(ev);
        assert!(got.last().is_some_and(|&n| n > 100), "{} received {got:?} packets", ev.who);
        let mos: Vec<f64> = ev
            .seen
            .iter()
            .filter(|(_, e)| e["event"] == "stats")
            .filter_map(|(_, e)| e["mos"].as_f64())
            .collect();
        assert!(!mos.is_empty() && mos.iter().all(|&m| m > 4.0), "{}: MOS {mos:?}", ev.who);
    }
    assert_speech("bob", &read_wav(&bob_wav, w.rate), w.rate, 1.0, 4.0);
    assert_speech("alice", &read_wav(&alice_wav, w.rate), w.rate, 1.0, 4.0);
}

#[test]
fn two_clients_on_two_hosts_and_the_server_on_a_third() {
    let mut w = World::new("three", "");
    let (a, _) = w.open_host("alice");
    let (b, _) = w.open_host("bob");
    call_and_score(&mut w, &a, &b);
}

#[test]
fn two_clients_and_the_server_on_an_ipv6_only_network() {
    let mut w = World::v6("ipv6");
    let (a, _) = w.open_host("alice");
    let (b, _) = w.open_host("bob");
    call_and_score(&mut w, &a, &b);
}

#[test]
fn a_client_behind_nat_reaches_an_open_host_by_latching() {
    let mut w = World::new("nat", "");
    let (a, _private_ip) = w.host_behind_nat("alice");
    let (b, _) = w.open_host("bob");
    // alice's SDP names her private address; bob reaches her only by answering to
    // where her authenticated packets come from (the NAT's address).
    call_and_score(&mut w, &a, &b);
}

#[test]
fn a_cut_media_path_reports_53405_and_recovers_or_ends() {
    // short timers so the test is quick: 2 s without media is a loss, 8 s to recover
    let mut w = World::new("cut", "[media]\nmedia_timeout_secs = 2\n[client]\nreconnect_timeout_secs = 8\n");
    let (a, _) = w.open_host("alice");
    let (b, _) = w.open_host("bob");

    // A cut that is lifted: reconnecting (53405), then reconnected, then speech.
    let (bob_wav, alice_wav) = (w.home.join("bob.wav"), w.home.join("alice.wav"));
    let (bob, mut bob_ev) = w.listen(&b, &bob_wav, &[]);
    let (alice, mut alice_ev) = w.call(&a, &alice_wav, 16, &[]);
    let (connected_at, _) = alice_ev.wait("connected", 30);
    let (bob_connected_at, _) = bob_ev.wait("connected", 30);
    std::thread::sleep(Duration::from_secs(2));
    w.lab.cut_udp(&w.router);
    for ev in [&mut alice_ev, &mut bob_ev] {
        let (_, e) = ev.wait("reconnecting", 15);
        assert_eq!(e["error"]["code"], 53405, "{}: {e}", ev.who);
    }
    w.lab.heal(&w.router);
    let (alice_back, _) = alice_ev.wait("reconnected", 15);
    let (bob_back, _) = bob_ev.wait("reconnected", 15);
    alice_ev.wait("disconnected", 30);
    assert!(w.exit_status(alice, 30).success(), "alice: {}", w.stderr(alice));
    assert!(w.exit_status(bob, 30).success(), "bob: {}", w.stderr(bob));
    // Score only what was heard after media came back.
    let after = |back: Instant, since: Instant| (back - since).as_secs_f64() + 0.5;
    let bob_heard = read_wav(&bob_wav, w.rate);
    let alice_heard = read_wav(&alice_wav, w.rate);
    let (bob_from, alice_from) = (after(bob_back, bob_connected_at), after(alice_back, connected_at));
    assert_speech("bob after the cut", &bob_heard, w.rate, bob_from, 3.0);
    assert_speech("alice after the cut", &alice_heard, w.rate, alice_from, 3.0);

    // A cut longer than the window: the call ends with 53405 on both sides.
    let (bob_wav, alice_wav) = (w.home.join("bob2.wav"), w.home.join("alice2.wav"));
    let (bob, mut bob_ev) = w.listen(&b, &bob_wav, &[]);
    let (alice, mut alice_ev) = w.call(&a, &alice_wav, 60, &[]);
    alice_ev.wait("connected", 30);
    bob_ev.wait("connected", 30);
    w.lab.cut_udp(&w.router);
    // The side whose window runs out first ends the call with 53405 and hangs up
    // (signaling still flows); the other ends the same way or by that hang-up.
    let mut codes = Vec::new();
    for ev in [&mut alice_ev, &mut bob_ev] {
        let (lost, e) = ev.wait("reconnecting", 15);
        assert_eq!(e["error"]["code"], 53405, "{}: {e}", ev.who);
        let (ended, e) = ev.wait("disconnected", 30);
        let waited = (ended - lost).as_secs_f64();
        assert!((6.0..14.0).contains(&waited), "{} ended {waited:.1} s after the loss (window 8 s)", ev.who);
        assert!(e["error"].is_null() || e["error"]["code"] == 53405, "{}: {e}", ev.who);
        codes.push(e["error"]["code"].as_u64());
    }
    assert!(codes.contains(&Some(53405)), "no side ended with 53405: {codes:?}");
    let status = w.exit_status(alice, 30);
    let alice_err = w.stderr(alice);
    if codes[0] == Some(53405) {
        assert!(!status.success());
        assert!(alice_err.contains("dialtone: error 53405"), "{alice_err}");
    }
    w.lab.heal(&w.router);
    let _ = w.exit_status(bob, 30);
}

/// A pjsua2 peer (tests/peers/pjsua_ua.py) on host `ns` at `ip`, offering PCMA only
/// with SDES-SRTP; returns its index and its stdout lines.
fn pjsua(
    w: &mut World,
    ns: &str,
    ip: &str,
    mode: &str,
    registrar: &str,
    target: &str,
    record: &Path,
) -> (usize, mpsc::Receiver<(Instant, String)>) {
    let python = dialtone_tests::python();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/peers/pjsua_ua.py");
    let mut cmd = w.lab.command(ns, python.to_str().unwrap());
    cmd.args([script, mode, "udp", registrar, "pjsua", target])
        .arg(speech_file(8000))
        .arg(record)
        .args(["4", "40"])
        .env("PJ_ADDR", ip)
        .env("PJ_CODEC", "PCMA/8000")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let i = w.lab.spawn(cmd);
    let out = lines(w.lab.child(i));
    (i, out)
}

/// pjsua's recording (8 kHz): it writes the WAV header's sizes only when the file
/// closes, which a peer leaving in a hurry may skip, so the samples after the header.
fn read_pjsua_wav(path: &Path) -> Vec<i16> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes.get(44..).unwrap_or(&[]).chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect()
}

fn expect_line(rx: &mpsc::Receiver<(Instant, String)>, prefix: &str, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut said = Vec::new();
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((_, l)) if l.starts_with(prefix) => return l,
            Ok((_, l)) => said.push(l),
            Err(_) => panic!("pjsua said no {prefix:?} within {secs} s; it said {said:?}"),
        }
    }
}

#[test]
fn pjsua_on_another_host_offering_pcma_only_calls_a_client_and_is_called_back() {
    let trusted = "trusted_networks = [\"198.18.0.0/16\"]\n";
    let mut w = World::with("pjsua", 8000, trusted, "");
    let (b, _) = w.open_host("bob");
    let (p, pj_ip) = w.open_host("pjsua");

    // pjsua calls bob (default settings) through the server's UDP trunk listener.
    let bob_wav = w.home.join("bob.wav");
    let pj_heard = w.home.join("pjsua-call.wav");
    let (bob, mut bob_ev) = w.listen(&b, &bob_wav, &[]);
    let registrar = format!("direct:{SERVER_IP}:{}", w.udp_port);
    let (pj, pj_out) =
        pjsua(&mut w, &p, &pj_ip, "call", &registrar, &format!("sip:bob@{SERVER_IP}"), &pj_heard);
    expect_line(&pj_out, "registered", 30);
    {
        use std::io::Write;
        let stdin = w.lab.child(pj).stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
    }
    let (_, connected) = bob_ev.wait("connected", 30);
    assert_eq!(connected["codec"], "PCMA", "{connected}");
    expect_line(&pj_out, "media-active", 20);
    assert_eq!(expect_line(&pj_out, "disconnected", 30), "disconnected 200");
    assert!(w.exit_status(bob, 30).success(), "bob: {}", w.stderr(bob));
    let _ = w.exit_status(pj, 30);
    assert_speech("bob from pjsua", &read_wav(&bob_wav, 8000), 8000, 0.5, 2.5);
    assert_speech("pjsua from bob", &read_pjsua_wav(&pj_heard), 8000, 0.5, 2.5);

    // The client calls pjsua back: the server's application dials it with <Sip>.
    let pj_heard = w.home.join("pjsua-answer.wav");
    let (pj, pj_out) = pjsua(&mut w, &p, &pj_ip, "answer", "direct:-", "-", &pj_heard);
    let at = expect_line(&pj_out, "listening", 30);
    let pj_addr = at.split_whitespace().nth(1).unwrap().to_owned();
    w.start_server(&format!(
        "{trusted}applications = [{{ sid = \"APback\", twiml = \"<Response><Dial><Sip>sip:pjsua@{pj_addr}</Sip></Dial></Response>\" }}]\n"
    ));
    let alice_wav = w.home.join("alice.wav");
    let (alice, mut alice_ev) = w.call(&b, &alice_wav, 5, &[]);
    expect_line(&pj_out, "incoming", 30);
    let (_, connected) = alice_ev.wait("connected", 30);
    assert_eq!(connected["codec"], "PCMA", "{connected}");
    let (_, ended) = alice_ev.wait("disconnected", 30);
    assert!(ended["error"].is_null(), "{ended}");
    assert!(w.exit_status(alice, 30).success(), "alice: {}", w.stderr(alice));
    expect_line(&pj_out, "disconnected", 30);
    let _ = w.exit_status(pj, 30);
    assert_speech("alice from pjsua", &read_wav(&alice_wav, 8000), 8000, 0.5, 2.5);
    assert_speech("pjsua from alice", &read_pjsua_wav(&pj_heard), 8000, 0.5, 2.5);
}

/// A private CA and a certificate for `ip` signed by it, in `dir`: (cert, key, CA).
fn write_pki(dir: &Path, ip: &str) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec![ip.to_owned()]).unwrap().signed_by(&key, &ca).unwrap();
    let paths = (dir.join("app-cert.pem"), dir.join("app-key.pem"), dir.join("app-ca.pem"));
    std::fs::write(&paths.0, leaf.pem()).unwrap();
    std::fs::write(&paths.1, key.serialize_pem()).unwrap();
    std::fs::write(&paths.2, ca.pem()).unwrap();
    paths
}

/// The account of the tests that talk to the REST API or to an application.
const ACCOUNT_SID: &str = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const AUTH_TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// The account and its API key as `[server]` keys (the server's file, and the
/// clients' for minting their tokens).
fn account_toml() -> String {
    format!(
        "account_sid = \"{ACCOUNT_SID}\"\nauth_token = \"{AUTH_TOKEN}\"\n\
         api_key_sid = \"SK{}\"\napi_key_secret = \"{}\"\n",
        "b".repeat(32),
        "c".repeat(32)
    )
}

/// Starts a Python peer of `tests/peers` on lab host `ns`; returns its stdout's lines
/// and the port it printed (`listening PORT`).
fn python_peer(
    w: &mut World,
    ns: &str,
    script: &str,
    args: &[&str],
) -> (mpsc::Receiver<(Instant, String)>, u16) {
    let path = format!("{}/../tests/peers/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut cmd = w.lab.command(ns, dialtone_tests::python().to_str().unwrap());
    cmd.arg(path).args(args).stdout(Stdio::piped());
    let i = w.lab.spawn(cmd);
    let out = lines(w.lab.child(i));
    let (_, first) = out
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{script} printed no port (is the Python venv set up? scripts/setup)"));
    let port = first.strip_prefix("listening ").and_then(|p| p.parse().ok());
    (out, port.unwrap_or_else(|| panic!("{script} printed {first:?}")))
}

/// The JSON line `tests/peers/twilio_app.py` printed for its next request.
fn app_request(app: &mpsc::Receiver<(Instant, String)>) -> Value {
    let (_, l) = app.recv_timeout(Duration::from_secs(20)).expect("a request at the application");
    serde_json::from_str(&l).unwrap_or_else(|e| panic!("the application printed {l:?}: {e}"))
}

/// A Twilio application on a host of its own (`tests/peers/twilio_app.py`, checking
/// every request with Twilio's `RequestValidator`), serving HTTPS with a certificate of
/// a private CA. The `dialtone server` binary, configured by its file, fetches the
/// application's voice URL across the router: the request is signed with the
/// configured auth token, the application's certificate is trusted through
/// `webhook_ca_file`, its TwiML dials bob, and the call carries speech both ways. A
/// voice URL that answers after `webhook_timeout_secs` (2 s; the application takes 6
/// s, inside the 10 s default) fails its call with 31502.
#[test]
fn a_twilio_application_on_another_host_gets_signed_webhooks_over_https() {
    let (account_sid, auth_token) = (ACCOUNT_SID.to_owned(), AUTH_TOKEN);
    let account = account_toml();
    // The clients mint their tokens with the same API key.
    let mut w = World::unstarted("webhooks", &format!("[server]\n{account}"));
    let (app_ns, app_ip) = w.open_host("app");
    let (cert, key, ca) = write_pki(&w.home, &app_ip);
    let args = [auth_token, cert.to_str().unwrap(), key.to_str().unwrap(), &app_ip];
    let (app, port) = python_peer(&mut w, &app_ns, "twilio_app.py", &args);
    w.start_server(&format!(
        "{account}webhook_ca_file = \"{}\"\nwebhook_timeout_secs = 2\n\n\
         [[server.applications]]\nsid = \"AP{}\"\nvoice_url = \"https://{app_ip}:{port}/voice\"\n",
        ca.display(),
        "d".repeat(32)
    ));
    let (a, _) = w.open_host("alice");
    let (b, _) = w.open_host("bob");

    // The application's TwiML (Twilio's builder) dials bob: speech both ways.
    call_and_score(&mut w, &a, &b);
    let voice = app_request(&app);
    assert_eq!((voice["method"].as_str(), voice["path"].as_str()), (Some("POST"), Some("/voice")), "{voice}");
    assert_eq!(voice["valid"], true, "Twilio's RequestValidator refused the server's signature: {voice}");
    assert_eq!(voice["params"]["AccountSid"], account_sid.as_str(), "{voice}");
    assert_eq!(
        (voice["params"]["From"].as_str(), voice["params"]["To"].as_str()),
        (Some("client:alice"), Some("client:bob"))
    );

    // A slow application: the call fails with 31502 once the configured 2 s are up.
    let (alice, mut alice_ev) =
        w.client(&a, &["call", "--identity", "alice", "--to", "client:slow"], &[], "alice");
    let slow = loop {
        let r = app_request(&app);
        assert_eq!(r["valid"], true, "{r}");
        if r["params"]["To"] == "client:slow" {
            break r;
        }
    };
    assert_eq!(slow["path"], "/voice", "{slow}");
    let (_, ended) = alice_ev.wait("disconnected", 30);
    assert_eq!(ended["error"]["code"], 31502, "{ended}\nalice's stderr:\n{}", w.stderr(alice));
    assert!(!w.exit_status(alice, 30).success(), "a failed call exits with an error");
}

/// One REST request to the server, made from lab host `ns` (`tests/peers/rest.py`):
/// its status and JSON body. `content_type` `form` sends `body` (a JSON object)
/// form-encoded.
fn rest(w: &World, ns: &str, method: &str, path: &str, content_type: &str, body: &str) -> (u16, Value) {
    let script = format!("{}/../tests/peers/rest.py", env!("CARGO_MANIFEST_DIR"));
    let url = format!("http://{}:{}{path}", w.server_ip(), w.http_port);
    let mut cmd = w.lab.command(ns, dialtone_tests::python().to_str().unwrap());
    cmd.arg(script).args([method, &url, ACCOUNT_SID, AUTH_TOKEN]);
    if !body.is_empty() {
        cmd.args([content_type, body]);
    }
    let out = cmd.output().unwrap();
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (status, json) = line
        .split_once(' ')
        .unwrap_or_else(|| panic!("rest.py printed {line:?}: {}", String::from_utf8_lossy(&out.stderr)));
    (status.parse().unwrap(), serde_json::from_str(json).unwrap_or(Value::Null))
}

/// Push from the `dialtone server` binary, configured by its file, to APNs and FCM on
/// another host: the local providers of `tests/tests/providers` (HTTP/2 over TLS,
/// certificate of a private CA trusted through `webhook_ca_file`), reached at
/// `apns_url` and `fcm_url` across the router (the lab host relays to the test's Unix
/// socket; TLS is end to end). Credentials are made over REST from a lab host; carol's
/// Pixel is bound over REST, her iPhone by registering with its device token
/// (`dialtone listen --device-token`). A call to carol, whose app is gone, pushes to
/// both, and the caller's end cancels both.
#[test]
fn the_server_binary_pushes_to_apns_and_fcm_on_another_host() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let account = account_toml();
    let mut w = World::unstarted("push", &format!("[server]\n{account}"));
    let (push_ns, push_ip) = w.open_host("push");
    let (cert, key, ca) = write_pki(&w.home, &push_ip);
    let socket = w.home.join("providers.sock");
    let mut got = rt.block_on(providers::providers_on_unix(&cert, &key, &socket));
    let (_relay, port) = python_peer(&mut w, &push_ns, "relay.py", &[&push_ip, socket.to_str().unwrap()]);
    let base = format!("https://{push_ip}:{port}");
    // The credential is for production: the sandbox URL leads nowhere.
    w.start_server(&format!(
        "{account}webhook_ca_file = \"{}\"\napns_url = \"{base}\"\napns_sandbox_url = \"https://{push_ip}:9\"\n\
         fcm_url = \"{base}\"\nring_timeout_secs = 4\n",
        ca.display()
    ));
    let (alice_ns, _) = w.open_host("alice");

    let (apns_key, _) = providers::apns_keypair(&w.home);
    let (sa_key, _) = providers::fcm_keypair(&w.home);
    let apn = serde_json::json!({
        "Type": "apn", "PrivateKey": apns_key, "KeyId": "ABC123DEFG", "TeamId": "TEAM456XYZ",
        "BundleId": "com.example.voice",
    });
    let (status, apn) = rest(&w, &alice_ns, "POST", "/v1/Credentials", "form", &apn.to_string());
    assert_eq!((status, apn["sandbox"].as_bool()), (201, Some(false)), "{apn}");
    let account_json = serde_json::json!({
        "type": "service_account", "project_id": "dialtone-test", "private_key_id": "key-1",
        "private_key": sa_key, "client_email": "push@dialtone-test.iam.gserviceaccount.com",
        "token_uri": format!("{base}/token"),
    });
    let fcm = serde_json::json!({"Type": "fcm", "Secret": account_json.to_string()});
    let (status, fcm) = rest(&w, &alice_ns, "POST", "/v1/Credentials", "form", &fcm.to_string());
    assert_eq!(status, 201, "{fcm}");
    // carol's Pixel is bound over REST; her iPhone binds itself, as a Twilio Voice app
    // does: `dialtone listen --device-token` with a token from `dialtone token
    // --push-credential`. Then the iPhone's app goes away (killed: no unregister).
    let b = serde_json::json!({"identity": "carol", "binding_type": "fcm", "address": "good-carol-pixel", "credential_sid": fcm["sid"]});
    let (status, b) = rest(&w, &alice_ns, "POST", "/v1/Bindings", "application/json", &b.to_string());
    assert_eq!(status, 201, "{b}");
    let minted = std::process::Command::new(bin())
        .args(["token", "--identity", "carol", "--push-credential", apn["sid"].as_str().unwrap()])
        .args(["--config", w.client_cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(minted.status.success(), "{}", String::from_utf8_lossy(&minted.stderr));
    let token = String::from_utf8(minted.stdout).unwrap().trim().to_owned();
    let (carol_ns, _) = w.open_host("carol");
    let (carol, mut carol_ev) = w.client(
        &carol_ns,
        &["listen", "--identity", "carol", "--token", &token, "--device-token", "good-carol-iphone"],
        &[],
        "carol",
    );
    carol_ev.wait("registered", 30);
    let (_, bound) = rest(&w, &alice_ns, "GET", "/v1/Bindings?Identity=carol", "", "");
    let apns_bound = bound["bindings"].as_array().unwrap().iter().any(|b| {
        b["binding_type"] == "apn" && b["address"] == "good-carol-iphone" && b["credential_sid"] == apn["sid"]
    });
    assert!(apns_bound, "{bound}");
    let _ = w.lab.child(carol).kill();
    let _ = w.lab.child(carol).wait();
    let offline = (0..100).any(|_| {
        let (_, regs) = rest(&w, &alice_ns, "GET", "/v1/Registrations", "", "");
        let gone = regs["registrations"].get("carol").is_none();
        if !gone {
            std::thread::sleep(Duration::from_millis(100));
        }
        gone
    });
    assert!(offline, "carol's registration outlived her connection");

    // alice calls carol: both devices are pushed the invite.
    let (alice, mut alice_ev) =
        w.client(&alice_ns, &["call", "--identity", "alice", "--to", "client:carol"], &[], "alice");
    let mut call_sids = Vec::new();
    let mut token_asked = false;
    for _ in 0..3 {
        let r = rt.block_on(providers::next(&mut got, "a push (is the relay reached?)"));
        assert_eq!(r.version, "HTTP/2.0", "{r:?}");
        if r.path.starts_with("/3/device/") {
            assert_eq!(r.path, "/3/device/good-carol-iphone");
            assert_eq!(
                (r.headers["apns-push-type"].as_str(), r.headers["apns-topic"].as_str()),
                ("voip", "com.example.voice.voip")
            );
            assert!(r.headers["authorization"].starts_with("bearer "), "{r:?}");
            let body: Value = serde_json::from_str(&r.body).unwrap();
            assert_eq!(body["twi_message_type"], "twilio.voice.call", "{body}");
            assert_eq!(body["twi_from"], "client:alice", "{body}");
            call_sids.push(body["twi_call_sid"].as_str().unwrap().to_owned());
        } else if r.path == "/token" {
            assert!(r.body.contains("assertion="), "{r:?}");
            token_asked = true;
        } else {
            assert_eq!(r.path, "/v1/projects/dialtone-test/messages:send");
            assert!(token_asked, "the OAuth2 token comes first");
            assert_eq!(r.headers["authorization"], "Bearer ya29.local");
            let m: Value = serde_json::from_str(&r.body).unwrap();
            assert_eq!(
                (m["message"]["token"].as_str(), m["message"]["android"]["priority"].as_str()),
                (Some("good-carol-pixel"), Some("high"))
            );
            call_sids.push(m["message"]["data"]["twi_call_sid"].as_str().unwrap().to_owned());
        }
    }
    assert!(call_sids.len() == 2 && call_sids[0] == call_sids[1], "{call_sids:?}");

    // Nobody answers within ring_timeout_secs: alice's call fails, and both devices
    // are pushed the cancel.
    let (_, ended) = alice_ev.wait("disconnected", 30);
    assert!(ended["error"]["code"].is_u64(), "{ended}");
    assert!(!w.exit_status(alice, 30).success());
    let mut cancels = 0;
    while cancels < 2 {
        let r = rt.block_on(providers::next(&mut got, "a cancel push"));
        let body: Value = serde_json::from_str(&r.body).unwrap_or_default();
        let data = if r.path.starts_with("/3/device/") { &body } else { &body["message"]["data"] };
        if data["twi_message_type"] == "twilio.voice.cancel" {
            assert_eq!(data["twi_call_sid"], call_sids[0].as_str(), "{body}");
            cancels += 1;
        }
    }
}

//! The `dialtone` binary between machines: the server on one host, the clients on
//! others, each host a network namespace of the test's own lab (see `lab/mod.rs`),
//! joined through a router. Speech is scored both ways against what was sent.
//!
//! - two clients on two hosts, the server on a third;
//! - a client behind a NAT router calls a client on an open host (latching alone:
//!   the server relays signaling only);
//! - the media path is cut mid-call: both sides report reconnecting (53405), and
//!   media comes back once the cut is lifted; a cut longer than the reconnect window
//!   ends the call with 53405.
//!
//! These tests need root (they make namespaces); without it they fail, loudly.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod lab;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lab::Lab;
use serde_json::Value;

const SERVER_IP: &str = "198.18.1.2";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_dialtone")
}

fn speech_file() -> PathBuf {
    dialtone_tests::shared_audio_dir().join("speech-16k.wav")
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
    ws_url: String,
    hosts: usize,
}

impl World {
    /// `client_toml` is added to every client's configuration file.
    fn new(name: &str, client_toml: &str) -> World {
        assert!(speech_file().exists(), "{} is the shared speech", speech_file().display());
        let home = std::env::temp_dir().join(format!("dialtone-hosts-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(&home).unwrap();
        let mut lab = Lab::new();
        let router = lab.host("router");
        lab.forwarding(&router);
        let server = lab.host("server");
        lab.link(&router, "198.18.1.1/24", &server, &format!("{SERVER_IP}/24"));
        lab.default_route(&server, "198.18.1.1");
        let server_cfg = home.join("server.toml");
        std::fs::write(
            &server_cfg,
            format!(
                "[server]\nbind = \"0.0.0.0\"\npublic_host = \"{SERVER_IP}\"\ntrusted_networks = []\n\
                 sip_udp_port = 0\nsip_tcp_port = 0\nsip_tls_port = 0\nws_port = 0\nwss_port = 0\nhttp_port = 0\n"
            ),
        )
        .unwrap();
        let client_cfg = home.join("client.toml");
        std::fs::write(&client_cfg, format!("[audio]\nsample_rate = 16000\n{client_toml}")).unwrap();
        let mut cmd = lab.command(&server, bin());
        cmd.args(["server", "--config", server_cfg.to_str().unwrap()])
            .env("DIALTONE_HOME", &home)
            .stdout(Stdio::piped());
        let i = lab.spawn(cmd);
        let out = lines(lab.child(i));
        let ws = loop {
            let (_, l) = out.recv_timeout(Duration::from_secs(30)).expect("the server's banner");
            if l.contains("SIP WS ") {
                break l;
            }
        };
        let port = ws.rsplit(':').next().unwrap().trim().to_owned();
        World { lab, home, client_cfg, router, ws_url: format!("ws://{SERVER_IP}:{port}"), hosts: 1 }
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
        let ip = format!("198.18.{n}.2");
        let (_, ifname) = self.lab.link(&self.router, &format!("198.18.{n}.1/24"), &ns, &format!("{ip}/24"));
        self.lab.default_route(&ns, &format!("198.18.{n}.1"));
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
            .arg(speech_file())
            .env("DIALTONE_HOME", &self.home)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let i = self.lab.spawn(cmd);
        let ev = Events::new(lines(self.lab.child(i)), who);
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

    fn stderr(&mut self, i: usize) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.lab.child(i).stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
        }
        s
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

fn read_wav(path: &Path) -> Vec<i16> {
    let r = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(r.spec().sample_rate, 16_000, "the recording follows [audio] sample_rate");
    r.into_samples::<i16>().map(Result::unwrap).collect()
}

/// Scores `seconds` of a recording from `from_s` on against the looped speech that
/// was sent: the piece is found in the loop, then scored by segmental SNR (dB) and
/// PESQ (wideband). Silence, noise or the wrong audio score near 0 dB and near 1.
fn score(recording: &[i16], from_s: f64, seconds: f64) -> (f64, f64) {
    let speech = dialtone_tests::speech(16_000);
    let start = (from_s * 16_000.0) as usize;
    let len = (seconds * 16_000.0) as usize;
    assert!(
        recording.len() >= start + len,
        "the recording has {:.1} s; {from_s:.1} s + {seconds:.1} s are to be scored",
        recording.len() as f64 / 16_000.0
    );
    let piece = &recording[start..start + len];
    let looped: Vec<i16> = speech.iter().chain(speech.iter()).chain(speech.iter()).copied().collect();
    // where in the loop the piece is: the loop "trails" the piece by that offset
    let offset = dialtone_tests::best_lag(piece, &looped, speech.len());
    let reference = &looped[offset..offset + len];
    let snr = dialtone_tests::segmental_snr_db(reference, piece, 4000, 800);
    let pesq = dialtone_tests::pesq(reference, piece, 16_000);
    (snr, pesq)
}

fn assert_speech(who: &str, recording: &[i16], from_s: f64, seconds: f64) {
    let (snr, pesq) = score(recording, from_s, seconds);
    eprintln!("{who}: segmental SNR {snr:.1} dB, PESQ {pesq:.2} over {seconds:.1} s from {from_s:.1} s");
    assert!(
        snr > 5.0 && pesq > 2.5,
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
    for ev in [&alice_ev, &bob_ev] {
        assert!(!ev.names().contains(&"reconnecting".to_owned()), "{}: {:?}", ev.who, ev.names());
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
    assert_speech("bob", &read_wav(&bob_wav), 1.0, 4.0);
    assert_speech("alice", &read_wav(&alice_wav), 1.0, 4.0);
}

#[test]
fn two_clients_on_two_hosts_and_the_server_on_a_third() {
    let mut w = World::new("three", "");
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
    let bob_heard = read_wav(&bob_wav);
    let alice_heard = read_wav(&alice_wav);
    let (bob_from, alice_from) = (after(bob_back, bob_connected_at), after(alice_back, connected_at));
    assert_speech("bob after the cut", &bob_heard, bob_from, 3.0);
    assert_speech("alice after the cut", &alice_heard, alice_from, 3.0);

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

//! Interop with PJSIP (pjsua2, PyPI `pjsua2-python`): pjsua and a Dialtone client both
//! register with Kamailio over UDP, TCP and TLS, and each calls the other. The
//! Dialtone client sees a CallInvite from pjsua and accepts it; pjsua answers the
//! Dialtone client's call. Speech flows both ways with PCMU and SDES-SRTP, checked on
//! both sides, and the hang-up of either side reaches the other.

#![allow(clippy::unwrap_used)]

mod sipkit;

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use dialtone_core::parts::{TlsSettings, TransportTarget};
use dialtone_transport_tcp::TcpTransport;
use sipkit::{rms, Client, Heard, Kamailio, Scratch};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

fn target(kam: &Kamailio, wire: &str) -> TransportTarget {
    match wire {
        "udp" => TransportTarget::new(format!("sip:127.0.0.1:{}", kam.udp)),
        "tcp" => TransportTarget::new(format!("sip:127.0.0.1:{};transport=tcp", kam.tcp)),
        _ => TransportTarget::new(format!("sips:127.0.0.1:{}", kam.tls))
            .with_tls(TlsSettings::default().with_ca_file(&kam.ca_file)),
    }
}

struct Pjsua {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
    record: std::path::PathBuf,
}

impl Pjsua {
    fn start(kam: &Kamailio, scratch: &Scratch, mode: &str, wire: &str, target: &str) -> Pjsua {
        let port = match wire {
            "udp" => kam.udp,
            "tcp" => kam.tcp,
            _ => kam.tls,
        };
        let record = scratch.0.join(format!("pjsua-{mode}-{wire}.wav"));
        let play = dialtone_tests::shared_audio_dir().join("speech-8k.wav");
        let (cert, key) = kam.cert_and_key();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/pjsua_ua.py");
        let mut child = Command::new(dialtone_tests::python())
            .arg(script)
            .args([mode, wire, &format!("127.0.0.1:{port}"), "pjsua", target])
            .arg(&play)
            .arg(&record)
            .args(["3", "40"])
            .env("PJ_TLS_CERT", cert)
            .env("PJ_TLS_KEY", key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {:?} ({e}); scripts/setup installs it", dialtone_tests::python())
            });
        let stdout = child.stdout.take().unwrap();
        let stdin = child.stdin.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut r = BufReader::new(stdout).lines();
            while let Ok(Some(l)) = r.next_line().await {
                let _ = tx.send(l);
            }
        });
        Pjsua { child, stdin, lines, seen: Vec::new(), record }
    }

    async fn expect(&mut self, prefix: &str, secs: u64) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.lines.recv()).await {
                Ok(Some(l)) => {
                    self.seen.push(l.clone());
                    if l.starts_with(prefix) {
                        return l;
                    }
                }
                _ => panic!("pjsua never said {prefix:?}; it said {:?}", self.seen),
            }
        }
    }

    /// What pjsua heard, once it exited.
    async fn finish(mut self) -> Vec<i16> {
        let _ = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await;
        // pjsua writes the sizes into the WAV header only when the file closes, which a
        // peer leaving in a hurry may skip: read the 16-bit samples after the header.
        let bytes = std::fs::read(&self.record).expect("pjsua recorded what it heard");
        bytes.get(44..).unwrap_or(&[]).chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect()
    }
}

async fn pjsua_calls_dialtone(wire: &str) {
    let kam = Kamailio::start().await;
    let scratch = Scratch::new(&format!("pjsua-in-{wire}"));
    let mut bob =
        Client::with_target("bob", target(&kam, wire), Arc::new(TcpTransport::default()), "127.0.0.1");
    bob.register().await;
    let mut pj = Pjsua::start(&kam, &scratch, "call", wire, "sip:bob@127.0.0.1");
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
    assert!(rms(&bob.heard()[12_000..]) > 300.0, "{wire}: bob hears pjsua's speech");
    // pjsua hangs up after 3 s of media.
    bob.wait_for(20, "disconnected", |e| matches!(e, Heard::Disconnected(None))).await;
    let line = pj.expect("disconnected", 10).await;
    assert_eq!(line, "disconnected 200");
    let heard = pj.finish().await;
    assert!(
        heard.len() > 8_000 && rms(&heard[4_000..]) > 300.0,
        "{wire}: pjsua heard Dialtone's speech ({} samples, rms {:.0})",
        heard.len(),
        rms(&heard)
    );
}

async fn dialtone_calls_pjsua(wire: &str) {
    let kam = Kamailio::start().await;
    let scratch = Scratch::new(&format!("pjsua-out-{wire}"));
    let mut pj = Pjsua::start(&kam, &scratch, "answer", wire, "-");
    pj.expect("registered", 20).await;
    let mut alice =
        Client::with_target("alice", target(&kam, wire), Arc::new(TcpTransport::default()), "127.0.0.1");
    let call = alice.connect("sip:pjsua@127.0.0.1", &[]);
    let line = pj.expect("incoming", 20).await;
    assert!(line.contains("alice"), "{line}");
    alice.wait_for(20, "connected", |e| matches!(e, Heard::Connected)).await;
    assert!(call.sid().is_some_and(|s| s.starts_with("CA")));
    alice.hear_more(96_000, 10).await;
    assert!(rms(&alice.heard()[12_000..]) > 300.0, "{wire}: alice hears pjsua's speech");
    call.disconnect();
    let line = pj.expect("disconnected", 20).await;
    assert_eq!(line, "disconnected 200");
    let heard = pj.finish().await;
    assert!(
        heard.len() > 8_000 && rms(&heard[4_000..]) > 300.0,
        "{wire}: pjsua heard Dialtone's speech ({} samples, rms {:.0})",
        heard.len(),
        rms(&heard)
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

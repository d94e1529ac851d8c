//! The `dialtone` binary builds every part from its configuration file: each test
//! writes a dialtone.toml and watches what the binary does on the wire.
//!
//! - `[media]` (srtp, rtp_ports, advertised_address), `[codecs]` (preferred) and
//!   `[client]` (transport by the URL) show in the INVITE that `dialtone call` sends
//!   to a SIP socket of the test's own;
//! - a codec plugin named only in `[[plugins]]` carries a call between `dialtone
//!   call` and `dialtone listen` through `dialtone server`, and the speech arrives;
//! - a plugin that cannot load is named once on stderr, and the call goes on.

#![allow(clippy::unwrap_used)]

mod proc;

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use proc::{bin, lines, wait_line, Killed};

fn scratch(name: &str) -> PathBuf {
    let home = std::env::temp_dir().join(format!("dialtone-cfg-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    home
}

fn g722_library() -> PathBuf {
    dialtone_tests::build_plugin("dialtone-plugin-g722")
}

/// A token naming `identity`, unsigned: the test's socket verifies nothing.
fn unsigned_token(identity: &str) -> String {
    use base64::Engine as _;
    let b64 = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    format!(
        "{}.{}.x",
        b64(r#"{"alg":"HS256","typ":"JWT"}"#),
        b64(&format!(r#"{{"grants":{{"identity":"{identity}"}},"exp":4102444800}}"#))
    )
}

/// Receives the binary's INVITE on a UDP socket of the test's, answers 486, and
/// returns the INVITE's text.
fn capture_invite(home: &PathBuf, toml: &str) -> (String, String) {
    let cfg = home.join("dialtone.toml");
    std::fs::write(&cfg, toml).unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let server = format!("sip:{};transport=udp", sock.local_addr().unwrap());
    let mut child = bin()
        .args(["call", "--identity", "alice", "--to", "client:bob", "--duration", "1", "--json"])
        .args(["--server", &server, "--config", cfg.to_str().unwrap(), "--token", &unsigned_token("alice")])
        .env("DIALTONE_HOME", home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = vec![0u8; 65_536];
    let invite = loop {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            let _ = child.kill();
            panic!("no INVITE from dialtone call: {:?}", child.wait_with_output());
        };
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !text.starts_with("INVITE ") {
            continue;
        }
        // 486 Busy Here, echoing the transaction's headers
        let keep: Vec<&str> = text
            .lines()
            .take_while(|l| !l.is_empty())
            .filter(|l| ["Via:", "From:", "To:", "Call-ID:", "CSeq:"].iter().any(|h| l.starts_with(h)))
            .collect();
        let resp = format!("SIP/2.0 486 Busy Here\r\n{}\r\nContent-Length: 0\r\n\r\n", keep.join("\r\n"));
        sock.send_to(resp.as_bytes(), from).unwrap();
        break text;
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "a busy callee fails the call");
    assert!(stderr.contains("dialtone: error 31486"), "{stderr}");
    (invite, stderr)
}

fn sdp_line<'a>(invite: &'a str, prefix: &str) -> &'a str {
    invite.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} line in\n{invite}"))
}

#[test]
fn media_and_codecs_sections_shape_the_offer() {
    let home = scratch("offer");
    // The defaults: SRTP required, Opus then PCMU then PCMA, RED around Opus, the
    // signaling interface.
    let (invite, _) = capture_invite(&home, "");
    assert!(sdp_line(&invite, "m=audio").contains(" RTP/SAVP "), "{invite}");
    assert!(invite.contains("a=crypto:"), "{invite}");
    assert_eq!(sdp_line(&invite, "c="), "c=IN IP4 127.0.0.1");
    let names: Vec<&str> = invite
        .lines()
        .filter_map(|l| l.strip_prefix("a=rtpmap:"))
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|c| c.split('/').next().unwrap())
        .filter(|c| *c != "telephone-event")
        .collect();
    assert_eq!(names, ["opus", "PCMU", "PCMA", "red"], "{invite}");
    assert!(invite.contains("a=fmtp:63 111/111"), "RED wraps Opus: {invite}");

    // codecs.opus_red = false: no RED
    let (invite, _) = capture_invite(&home, "[codecs]\nopus_red = false\n");
    assert!(invite.contains("opus/48000") && !invite.contains("red/48000"), "{invite}");

    // Every key changed: plain RTP, a port range, an advertised address, PCMA first.
    let (invite, _) = capture_invite(
        &home,
        "[media]\nsrtp = \"off\"\nrtp_ports = [41000, 41010]\nadvertised_address = \"192.0.2.10\"\n\
         [codecs]\npreferred = [\"PCMA\", \"PCMU\"]\n",
    );
    let m = sdp_line(&invite, "m=audio");
    assert!(m.contains(" RTP/AVP "), "{m}");
    assert!(!invite.contains("a=crypto:"), "{invite}");
    let port: u16 = m.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!((41000..=41010).contains(&port), "{m}");
    assert_eq!(sdp_line(&invite, "c="), "c=IN IP4 192.0.2.10");
    assert!(sdp_line(&invite, "o=").ends_with("IN IP4 192.0.2.10"), "{invite}");
    let first_pt = m.split_whitespace().nth(3).unwrap();
    assert_eq!(first_pt, "8", "PCMA (payload type 8) comes first: {m}");
    assert!(!invite.contains("opus/48000"), "Opus is not configured: {invite}");
    assert!(!invite.contains("red/48000"), "no RED without Opus: {invite}");
    let _ = std::fs::remove_dir_all(&home);
}

#[test]
fn a_plugin_codec_named_only_in_the_file_carries_a_call() {
    let home = scratch("plugin");
    let lib = g722_library();
    let cfg = home.join("dialtone.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nsip_udp_port = 0\nsip_tcp_port = 0\nsip_tls_port = 0\nws_port = 0\nwss_port = 0\nhttp_port = 0\n\
             [audio]\nsample_rate = 16000\n[codecs]\npreferred = [\"G722\"]\n\
             [[plugins]]\npath = \"{}\"\n[[plugins]]\npath = \"{}\"\n",
            lib.display(),
            home.join("libmissing.so").display()
        ),
    )
    .unwrap();
    let speech = dialtone_tests::shared_audio_dir().join("speech-16k.wav");
    let (_server, url, _server_out) = proc::start_server(&cfg, &home);

    let bob_wav = home.join("bob.wav");
    let mut listen = proc::listen_once(&url, &cfg, &home, &speech, &bob_wav).spawn().unwrap();
    let listen_out = lines(&mut listen);
    let mut listen = Killed(listen);
    wait_line(&listen_out, |l| l.contains("\"registered\""), "registration");

    let alice_wav = home.join("alice.wav");
    let call = bin()
        .args(["call", "--identity", "alice", "--server", &url, "--to", "client:bob", "--json"])
        .args(["--duration", "5", "--config", cfg.to_str().unwrap(), "--play"])
        .arg(&speech)
        .arg("--record")
        .arg(&alice_wav)
        .env("DIALTONE_HOME", &home)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&call.stdout);
    let stderr = String::from_utf8_lossy(&call.stderr);
    assert!(call.status.success(), "{stdout}\n{stderr}");
    // The missing plugin is named once, with its reason, and the call went on.
    let refusals: Vec<&str> = stderr.lines().filter(|l| l.contains("libmissing.so")).collect();
    assert_eq!(refusals.len(), 1, "{stderr}");
    assert!(refusals[0].starts_with("dialtone: plugin "), "{stderr}");
    let connected = stdout.lines().find(|l| l.contains("\"connected\"")).unwrap();
    assert!(connected.contains("\"codec\":\"G722\""), "{connected}");
    assert!(listen.0.wait().unwrap().success());

    for (who, wav) in [("bob", &bob_wav), ("alice", &alice_wav)] {
        let r = hound::WavReader::open(wav).unwrap();
        assert_eq!(r.spec().sample_rate, 16_000, "[audio] sample_rate sets the recording's rate");
        let heard: Vec<i16> = r.into_samples::<i16>().map(Result::unwrap).collect();
        assert!(heard.len() > 16_000 * 4, "{who} recorded {} samples", heard.len());
        // G.722 keeps the waveform: three seconds from 1 s on, found in the looped speech
        let (snr, pesq) = dialtone_tests::speech_score(&heard[16_000..16_000 * 4], 16_000, 16_000);
        assert!(snr > 8.0 && pesq > 2.0, "{who} heard speech at {snr:.1} dB segmental SNR, PESQ {pesq:.2}");
    }
    let _ = std::fs::remove_dir_all(&home);
}

#[test]
fn the_client_transport_and_audio_backend_are_chosen_by_name() {
    let home = scratch("names");
    for (toml, key, name) in [
        ("[client]\ntransport = \"carrier-pigeon\"\n", "client.transport", "carrier-pigeon"),
        ("[audio]\nbackend = \"gramophone\"\n", "audio.backend", "gramophone"),
        ("[media]\nengine = \"tin-can\"\n", "media.engine", "tin-can"),
    ] {
        let cfg = home.join("dialtone.toml");
        std::fs::write(&cfg, toml).unwrap();
        let out = bin()
            .args(["call", "--identity", "alice", "--to", "client:bob", "--duration", "1"])
            .args(["--server", "ws://127.0.0.1:9", "--config", cfg.to_str().unwrap()])
            .args(["--token", &unsigned_token("alice")])
            .env("DIALTONE_HOME", &home)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{toml}");
        // one line naming the key, the missing name and what is registered
        assert!(stderr.contains(key) && stderr.contains(name) && stderr.contains("registered:"), "{stderr}");
    }
    let _ = std::fs::remove_dir_all(&home);
}

//! End to end with the built binaries as separate processes over loopback:
//! `dialtone server`, `dialtone listen` and `dialtone call`, checking the JSON events
//! of both clients, the recorded audio, and the exit codes.

#![allow(clippy::unwrap_used)]

mod proc;

use std::path::{Path, PathBuf};
use std::time::Duration;

use proc::{bin, lines, wait_line, Killed};
use serde_json::Value;

fn samples(path: &Path) -> Vec<i16> {
    let bytes = std::fs::read(path).unwrap();
    bytes[44..].chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect()
}

/// GET on the server's REST API with the account's credentials (blocking).
fn get_json(base: &str, path: &str, account: &dialtone_server::Account) -> Value {
    use base64::Engine as _;
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(base.trim_start_matches("http://")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", account.account_sid, account.auth_token));
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let body = resp.split_once("\r\n\r\n").unwrap().1;
    serde_json::from_str(&body[body.find('{').unwrap()..=body.rfind('}').unwrap()]).unwrap()
}

fn events(lines: &[String]) -> Vec<Value> {
    lines.iter().filter_map(|l| serde_json::from_str::<Value>(l).ok()).collect()
}

#[test]
fn server_listen_and_call_as_separate_processes() {
    let home = std::env::temp_dir().join(format!("dialtone-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    let cfg = home.join("dialtone.toml");
    std::fs::write(
        &cfg,
        "[server]\nsip_udp_port = 0\nsip_tcp_port = 0\nsip_tls_port = 0\nws_port = 0\nwss_port = 0\nhttp_port = 0\n",
    )
    .unwrap();
    let speech: PathBuf =
        [env!("CARGO_MANIFEST_DIR"), "..", "..", "shared", "audio", "speech-48k.wav"].iter().collect();
    assert!(speech.exists(), "{} is the shared speech", speech.display());

    let (server, url, server_out) = proc::start_server(&cfg, &home);
    assert!(url.starts_with("ws://127.0.0.1:"), "{url}");
    let banner: Vec<String> =
        std::iter::from_fn(|| server_out.recv_timeout(Duration::from_millis(500)).ok()).collect();
    assert!(banner.iter().any(|l| l.contains("CA file") && l.contains("dev-ca.pem")), "{banner:?}");
    assert!(banner.iter().any(|l| l.contains("dialtone token --identity")), "{banner:?}");
    let http = banner
        .iter()
        .find(|l| l.contains("HTTP API"))
        .and_then(|l| l.split_whitespace().last())
        .unwrap()
        .to_owned();

    // A token minted by the command verifies with the server's key (it registers below).
    let t = bin()
        .args(["token", "--identity", "bob", "--config", cfg.to_str().unwrap()])
        .env("DIALTONE_HOME", &home)
        .output()
        .unwrap();
    assert!(t.status.success());
    assert_eq!(String::from_utf8_lossy(&t.stdout).trim().split('.').count(), 3);

    let bob_wav = home.join("bob.wav");
    let mut listen = proc::listen_once(&url, &cfg, &home, &speech, &bob_wav).spawn().unwrap();
    let listen_out = lines(&mut listen);
    let mut listen = Killed(listen);
    let reg = wait_line(&listen_out, |l| l.contains("\"registered\""), "registration");
    let reg: Value = serde_json::from_str(&reg).unwrap();
    assert_eq!(reg["identity"], "bob");

    let alice_wav = home.join("alice.wav");
    let call = bin()
        .args(["call", "--identity", "alice", "--server", &url, "--to", "client:bob", "--json"])
        .args(["--param", "caller_first_name=alice", "--param", "caller_last_name=smith"])
        .args(["--duration", "5", "--digits", "12", "--message", r#"{"hi":"bob"}"#])
        .args(["--config", cfg.to_str().unwrap(), "--play"])
        .arg(&speech)
        .arg("--record")
        .arg(&alice_wav)
        .env("DIALTONE_HOME", &home)
        // The caller posts its insights events to the server (the environment layer).
        .env("DIALTONE_INSIGHTS__SINK", "http")
        .env("DIALTONE_INSIGHTS__URL", format!("{http}/v1/Insights/Events"))
        .output()
        .unwrap();
    let call_stdout = String::from_utf8_lossy(&call.stdout).to_string();
    assert!(call.status.success(), "{call_stdout}\n{}", String::from_utf8_lossy(&call.stderr));
    let alice: Vec<Value> = events(&call_stdout.lines().map(str::to_owned).collect::<Vec<_>>());
    let names: Vec<&str> = alice.iter().filter_map(|e| e["event"].as_str()).collect();
    for want in ["ringing", "connected", "stats", "message_sent", "disconnected"] {
        assert!(names.contains(&want), "alice's events {names:?} lack {want}");
    }
    assert!(alice.iter().all(|e| e["call_sid"].as_str().is_some_and(|s| s.starts_with("CA"))), "{alice:?}");
    let stats = alice.iter().find(|e| e["event"] == "stats").unwrap();
    assert_eq!(stats["codec"], "opus");
    assert!(stats["mos"].as_f64().unwrap() > 4.0);
    assert_eq!(alice.last().unwrap()["event"], "disconnected");
    assert!(alice.last().unwrap()["error"].is_null());

    // listen exits after its one call.
    let status = listen.0.wait().unwrap();
    assert!(status.success());
    let bob: Vec<Value> = events(
        &std::iter::from_fn(|| listen_out.recv_timeout(Duration::from_millis(200)).ok()).collect::<Vec<_>>(),
    );
    let invite = bob.iter().find(|e| e["event"] == "invite").unwrap();
    assert_eq!(invite["from"], "client:alice");
    assert_eq!(invite["custom_parameters"]["caller_first_name"], "alice");
    assert_eq!(invite["custom_parameters"]["caller_last_name"], "smith");
    assert!(invite["caller_verified"].is_null());
    let digits: String =
        bob.iter().filter(|e| e["event"] == "digits").filter_map(|e| e["digits"].as_str()).collect();
    assert_eq!(digits, "12");
    assert!(bob.iter().any(|e| e["event"] == "message_received" && e["content"] == r#"{"hi":"bob"}"#));
    assert!(bob.iter().any(|e| e["event"] == "disconnected" && e["error"].is_null()));
    for (who, wav) in [("alice", &alice_wav), ("bob", &bob_wav)] {
        let heard = samples(wav);
        // from the second second on (alice's digits go out as RFC 4733 events in place
        // of audio at first) to half a second before the end (the hang-up)
        let end = heard.len().saturating_sub(24_000).max(96_000);
        dialtone_tests::assert_speech(&format!("{who}'s recording"), &heard[96_000..end], 48_000, 16_000);
    }

    // The caller's insights events reached the server's store before it exited.
    let account = dialtone_server::accounts::read_dev_account(&home).unwrap();
    let stored = get_json(&http, "/v1/Insights/Events?Identity=alice", &account);
    let names: Vec<String> = stored["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{}/{}", e["group"].as_str().unwrap(), e["name"].as_str().unwrap()))
        .collect();
    for want in ["connection/outgoing", "connection/connected", "connection/disconnect-called"] {
        assert!(names.contains(&want.to_owned()), "stored insights {names:?} lack {want}");
    }

    // A failure exits non-zero with one line naming the catalogue code.
    let fail = bin()
        .args(["call", "--identity", "alice", "--server", &url, "--to", "client:nobody", "--json"])
        .args(["--config", cfg.to_str().unwrap()])
        .env("DIALTONE_HOME", &home)
        .output()
        .unwrap();
    assert!(!fail.status.success());
    let err = String::from_utf8_lossy(&fail.stderr);
    assert!(err.lines().any(|l| l.starts_with("dialtone: error 31480")), "{err}");
    drop(server);
    let _ = std::fs::remove_dir_all(&home);
}

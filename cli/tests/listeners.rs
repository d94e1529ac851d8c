//! A listener cannot be taken down by running out of file descriptors: the `dialtone
//! server` binary runs with a low descriptor limit, more TCP connections than it can
//! hold are opened to its SIP TCP port, then closed; the port serves SIP again, and the
//! failure was logged once with the listener's address, not once per failed accept.

#![allow(clippy::unwrap_used)]

mod plain_sip;
mod proc;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use plain_sip::Scratch;
use proc::{lines, wait_line, Killed};

/// The descriptors the server may hold: room for its listeners, store and runtime,
/// and a few dozen connections.
const LIMIT: usize = 96;

fn options(n: usize) -> String {
    format!(
        "OPTIONS sip:dialtone SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK-fd{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p{n}\r\nTo: <sip:dialtone>\r\n\
         Call-ID: fd-probe-{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

/// Whether a new connection to `addr` gets a SIP answer within 5 s.
fn answers(addr: SocketAddr, n: usize) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(options(n).as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok() && buf.starts_with(b"SIP/2.0 ")
}

#[test]
fn a_listener_out_of_descriptors_backs_off_and_serves_again() {
    let scratch = Scratch::new("fd");
    let home = scratch.0.clone();
    let cfg = home.join("server.toml");
    std::fs::write(
        &cfg,
        "[server]\nsip_udp_port = 0\nsip_tcp_port = 0\nsip_tls_port = 0\nws_port = 0\nwss_port = 0\nhttp_port = 0\n",
    )
    .unwrap();
    // the shell sets the limit, then becomes the server
    let mut child = Command::new("sh")
        .args(["-c", &format!("ulimit -n {LIMIT} && exec \"$0\" \"$@\"")])
        .arg(env!("CARGO_BIN_EXE_dialtone"))
        .args(["server", "--config", cfg.to_str().unwrap()])
        .env("DIALTONE_HOME", &home)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh runs the dialtone binary");
    let out = lines(&mut child);
    let err = child.stderr.take().unwrap();
    let (log_tx, log) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for l in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            let _ = log_tx.send(l);
        }
    });
    let _server = Killed(child);
    let line = wait_line(&out, |l| l.contains("SIP TCP"), "the banner's SIP TCP line");
    let addr: SocketAddr = line
        .split_whitespace()
        .nth(2)
        .and_then(|u| u.strip_prefix("sip:"))
        .and_then(|u| u.split(';').next())
        .unwrap()
        .parse()
        .unwrap();
    std::thread::spawn(move || while out.recv().is_ok() {});
    assert!(answers(addr, 0), "the port serves SIP at first");

    // More connections than the server has descriptors for: the kernel queues them,
    // the server takes what it can and then fails to accept the rest.
    let flood: Vec<TcpStream> = (0..LIMIT * 2).filter_map(|_| TcpStream::connect(addr).ok()).collect();
    assert!(flood.len() > LIMIT, "{} connections opened", flood.len());
    let deadline = Instant::now() + Duration::from_secs(30);
    let logged = loop {
        match log.recv_timeout(Duration::from_millis(200)) {
            Ok(l) if l.contains("cannot accept connections") => break l,
            Ok(_) => {}
            Err(_) => assert!(Instant::now() < deadline, "no line said the listener could not accept"),
        }
    };
    assert!(logged.contains(&addr.to_string()), "the line names the listener: {logged}");
    drop(flood);

    // Once the connections are gone, the same port answers again.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 1;
    while !answers(addr, n) {
        assert!(
            Instant::now() < deadline,
            "the SIP TCP port never served again after running out of descriptors"
        );
        n += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    // the failures were logged once when they began and once when they ended
    let mut lines_seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(l) = log.recv_timeout(Duration::from_millis(200)) {
            let end = l.contains("accepting connections again");
            lines_seen.push(l);
            if end {
                break;
            }
        }
    }
    let failures = lines_seen.iter().filter(|l| l.contains("cannot accept")).count();
    assert_eq!(failures, 0, "one line when failing began, none per failure: {lines_seen:?}");
    assert!(lines_seen.iter().any(|l| l.contains("accepting connections again")), "{lines_seen:?}");
}

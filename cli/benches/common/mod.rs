//! What the server benches share: `dialtone server` started as its own process on
//! free ports, its banner read, and its memory read from /proc.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running `dialtone server`, killed and reaped when dropped.
pub struct Server {
    pub child: Child,
    /// The `ws://` URL from the banner.
    pub ws_url: String,
    /// The SIP UDP `host:port` from the banner.
    pub udp: String,
    /// The HTTP API's `host:port` from the banner.
    pub http: String,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `dialtone server` with `DIALTONE_HOME=home`, every listener on a free port, and
/// `extra` added to its `[server]` section; logs at `error` only.
pub fn start_server(home: &Path, extra: &str) -> Server {
    let cfg = home.join("dialtone.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nsip_udp_port = 0\nsip_tcp_port = 0\nsip_tls_port = 0\nws_port = 0\nwss_port = 0\nhttp_port = 0\n{extra}"
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dialtone"))
        .args(["server", "--config", cfg.to_str().unwrap()])
        .env("DIALTONE_HOME", home)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut ws_url, mut udp, mut http) = (String::new(), String::new(), String::new());
    for l in lines.by_ref().map_while(Result::ok) {
        if l.contains("SIP WS ") {
            ws_url = l.split_whitespace().last().unwrap().to_owned();
        }
        if l.contains("SIP UDP") {
            udp = l.split_whitespace().last().unwrap().trim_start_matches("sip:").to_owned();
        }
        if l.contains("HTTP API") {
            http = l.split_whitespace().last().unwrap().trim_start_matches("http://").to_owned();
        }
        if l.contains("Ctrl-C") {
            break;
        }
    }
    // The rest of stdout is drained so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    Server { child, ws_url, udp, http }
}

/// A `/proc/PID/status` figure in KiB (`VmRSS:`, `VmHWM:`).
pub fn vm(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A GET of the server's REST API with the account's credentials: the status line and
/// the body.
pub fn rest_get(http: &str, path: &str, account_sid: &str, auth_token: &str) -> (String, String) {
    use base64::Engine as _;
    use std::io::{Read, Write};
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{account_sid}:{auth_token}"));
    let mut s = std::net::TcpStream::connect(http).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {http}\r\nAuthorization: Basic {auth}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.lines().next().unwrap_or("").to_owned(), body.to_owned())
}

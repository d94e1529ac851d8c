//! A `dialtone server` process on free ports, and plain SIP over UDP toward it from a
//! trusted source (127.0.0.0/8): INVITEs to an identity nobody registered, which the
//! server records and answers 480 at once, and REGISTERs.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use dialtone_sip::message::Message;
use tokio::net::UdpSocket;

use crate::proc::{bin, lines, wait_line, Killed};

pub use dialtone_tests::Scratch;

pub struct Running {
    pub child: Killed,
    pub udp: SocketAddr,
    pub http: SocketAddr,
    /// The server's log lines (stderr), also echoed to the test's stderr.
    pub log: std::sync::mpsc::Receiver<String>,
}

/// `dialtone server` on free ports with `extra` in `[server]`; its SIP UDP address.
pub fn start(home: &Path, extra: &str) -> Running {
    start_logging(home, extra, "warn")
}

/// [`start`], with `RUST_LOG=log`.
pub fn start_logging(home: &Path, extra: &str, log: &str) -> Running {
    let cfg = home.join("server.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nsip_udp_port = 0\nsip_tcp_port = 0\nsip_tls_port = 0\nws_port = 0\nwss_port = 0\nhttp_port = 0\n{extra}\n"
        ),
    )
    .unwrap();
    let mut child = bin()
        .args(["server", "--config", cfg.to_str().unwrap()])
        .env("DIALTONE_HOME", home)
        .env("RUST_LOG", log)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the dialtone binary runs");
    let out = lines(&mut child);
    let err = child.stderr.take().expect("stderr is piped");
    let (log_tx, log) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for l in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            eprintln!("server: {l}");
            let _ = log_tx.send(l);
        }
    });
    let child = Killed(child);
    let line = wait_line(&out, |l| l.contains("SIP UDP"), "the banner's SIP UDP line");
    let udp = line.split_whitespace().last().unwrap().trim_start_matches("sip:").parse().unwrap();
    let line = wait_line(&out, |l| l.contains("HTTP API"), "the banner's HTTP line");
    let http = line.split_whitespace().last().unwrap().trim_start_matches("http://").parse().unwrap();
    // The rest of stdout is drained so the server never blocks on a full pipe.
    std::thread::spawn(move || while out.recv().is_ok() {});
    Running { child, udp, http, log }
}

/// A SIP peer on a UDP socket of its own.
pub struct Peer {
    pub sock: UdpSocket,
    pub me: SocketAddr,
    pub server: SocketAddr,
}

impl Peer {
    pub async fn new(server: SocketAddr) -> Peer {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let me = sock.local_addr().unwrap();
        Peer { sock, me, server }
    }

    /// The INVITE of call `id` (its branch and From tag are derived from it).
    pub fn invite(&self, id: &str) -> String {
        let (me, server) = (self.me, self.server);
        format!(
            "INVITE sip:nobody@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{id}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:tester@{me}>;tag=f{id}\r\nTo: <sip:nobody@{server}>\r\n\
             Call-ID: {id}\r\nCSeq: 1 INVITE\r\nContact: <sip:tester@{me}>\r\nContent-Length: 0\r\n\r\n"
        )
    }

    /// The ACK of call `id`'s non-2xx final response `r`.
    pub fn ack(&self, id: &str, r: &Message) -> String {
        let (me, server) = (self.me, self.server);
        format!(
            "ACK sip:nobody@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{id}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:tester@{me}>;tag=f{id}\r\nTo: {}\r\nCall-ID: {id}\r\n\
             CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
            r.header("To").unwrap_or_default()
        )
    }

    /// A REGISTER of `identity` with an access token.
    pub fn register(&self, identity: &str, token: &str) -> String {
        let (me, server) = (self.me, self.server);
        format!(
            "REGISTER sip:{server} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKreg{identity}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{identity}@{server}>;tag=r{identity}\r\nTo: <sip:{identity}@{server}>\r\n\
             Call-ID: reg-{identity}\r\nCSeq: 1 REGISTER\r\nContact: <sip:{identity}@{me}>\r\n\
             Authorization: Bearer {token}\r\nExpires: 60\r\nContent-Length: 0\r\n\r\n"
        )
    }

    pub async fn send(&self, text: &str) {
        self.sock.send_to(text.as_bytes(), self.server).await.unwrap();
    }

    /// The next final response (status >= 200), within `secs`.
    pub async fn final_response(&self, secs: u64) -> Message {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        let mut buf = vec![0u8; 65_536];
        loop {
            let (len, _) = tokio::time::timeout_at(deadline, self.sock.recv_from(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no final response within {secs} s"))
                .unwrap();
            let Ok(r) = Message::parse(&buf[..len], 65_536) else { continue };
            if r.status().is_some_and(|s| s >= 200) {
                return r;
            }
        }
    }
}

/// Places `n` calls to `sip:nobody@` the server, with Call-IDs `{tag}-{i}`, and waits
/// for every final response (480 each), ACKing it.
pub async fn calls(server: SocketAddr, tag: &str, n: usize) -> Vec<String> {
    let peer = Peer::new(server).await;
    let ids: Vec<String> = (0..n).map(|i| format!("{tag}-{i}")).collect();
    for id in &ids {
        peer.send(&peer.invite(id)).await;
    }
    let mut open: HashSet<String> = ids.iter().cloned().collect();
    while !open.is_empty() {
        let r = peer.final_response(30).await;
        let id = r.header("Call-ID").unwrap_or_default().to_owned();
        assert_eq!(r.status(), Some(480), "{id}");
        peer.send(&peer.ack(&id, &r)).await;
        open.remove(&id);
    }
    ids
}

/// `GET path` on the HTTP API with the development account's Basic credentials: the
/// status and the body.
pub async fn rest_get(http: SocketAddr, home: &Path, path: &str) -> (u16, String) {
    use base64::Engine as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let account = dialtone_server::accounts::read_dev_account(home).expect("the development account");
    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", account.account_sid, account.auth_token));
    let path = path.replace("{account}", &account.account_sid);
    let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {http}\r\nAuthorization: Basic {auth}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_string(&mut out)).await.unwrap().unwrap();
    let status = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

//! A Dialtone client against a scripted SIP server on a real loopback TCP socket: the
//! access token rides as `Authorization: Bearer` and `update_token` re-registers with
//! the new one; 401/403 answers become catalogue codes; malformed and oversized input
//! is answered (400, 513) while the connection and its registration survive; TLS
//! trusts a custom CA or a pinned certificate and refuses anything else.

#![allow(clippy::unwrap_used)]

mod sipkit;

use std::sync::Arc;
use std::time::Duration;

use dialtone_core::parts::{SignalingTransport, TlsSettings, TransportTarget};
use dialtone_sip::message::{Frame, Message, DEFAULT_MAX_MESSAGE_SIZE};
use dialtone_sip::ua::response_to;
use dialtone_sip::{Method, StreamFramer};
use dialtone_transport_tcp::TcpTransport;
use sipkit::{token, Client, Scratch};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The server side of one TCP connection, speaking SIP by hand.
struct Scripted {
    stream: TcpStream,
    framer: StreamFramer,
}

impl Scripted {
    async fn accept(listener: &TcpListener) -> Scripted {
        let (stream, _) =
            tokio::time::timeout(Duration::from_secs(10), listener.accept()).await.unwrap().unwrap();
        Scripted { stream, framer: StreamFramer::new(1 << 20) }
    }

    async fn recv(&mut self) -> Message {
        let mut buf = vec![0u8; 65536];
        loop {
            match self.framer.next_frame().unwrap() {
                Some(Frame::Message(m)) => return m,
                Some(_) => continue,
                None => {}
            }
            let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut buf))
                .await
                .expect("the client said something")
                .unwrap();
            assert!(n > 0, "the client closed the connection");
            self.framer.push(&buf[..n]);
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    async fn answer(&mut self, req: &Message, status: u16, extra: &[(&str, &str)]) {
        let mut r = response_to(req, status, Some("srv"));
        if status == 200 && req.method() == Some(Method::Register) {
            let contact = req.header("Contact").unwrap().to_owned();
            r.headers.push("Contact", contact);
        }
        for (n, v) in extra {
            r.headers.push(n, *v);
        }
        self.send(&r.to_bytes()).await;
    }
}

async fn server() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("sip:127.0.0.1:{};transport=tcp", l.local_addr().unwrap().port());
    (l, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_and_auth_failures_map_to_catalogue_codes() {
    let (listener, url) = server().await;
    let alice = Client::new("alice", &url, Arc::new(TcpTransport::default()), "example.test");
    let voice = alice.voice.clone();
    let registering = tokio::spawn(async move { voice.register(&token("alice"), "").await });
    let mut srv = Scripted::accept(&listener).await;
    let req = srv.recv().await;
    assert_eq!(req.method(), Some(Method::Register));
    assert_eq!(req.header("Authorization"), Some(format!("Bearer {}", token("alice")).as_str()));
    assert!(req.header("From").unwrap().contains("sip:alice@example.test"));
    srv.answer(
        &req,
        401,
        &[(
            "WWW-Authenticate",
            "Bearer realm=\"dialtone\", error=\"invalid_token\", error_description=\"the token expired\"",
        )],
    )
    .await;
    let e = registering.await.unwrap().unwrap_err();
    assert_eq!(e.code(), 20104, "{e}");

    let voice = alice.voice.clone();
    let registering = tokio::spawn(async move { voice.register(&token("alice"), "").await });
    let req = srv.recv().await;
    srv.answer(&req, 403, &[("X-Dialtone-Error", "20151 Authentication failed")]).await;
    assert_eq!(registering.await.unwrap().unwrap_err().code(), 20151);

    let voice = alice.voice.clone();
    let registering = tokio::spawn(async move { voice.register(&token("alice"), "").await });
    let req = srv.recv().await;
    srv.answer(&req, 200, &[]).await;
    registering.await.unwrap().unwrap();

    // A fresh token is used at once: the registration is refreshed with it.
    alice.voice.update_token("fresh-token");
    let req = srv.recv().await;
    assert_eq!(req.method(), Some(Method::Register));
    assert_eq!(req.header("Authorization"), Some("Bearer fresh-token"));
    srv.answer(&req, 200, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_input_is_answered_and_the_connection_survives() {
    let (listener, url) = server().await;
    let alice = Client::new("alice", &url, Arc::new(TcpTransport::default()), "example.test");
    let voice = alice.voice.clone();
    let registering = tokio::spawn(async move { voice.register(&token("alice"), "").await });
    let mut srv = Scripted::accept(&listener).await;
    let req = srv.recv().await;
    srv.answer(&req, 200, &[]).await;
    registering.await.unwrap().unwrap();

    let heads = "Via: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKsrv1\r\nFrom: <sip:srv@example.test>;tag=s\r\nTo: <sip:alice@example.test>\r\nCall-ID: bad-1\r\n";
    // A bad CSeq: answered 400.
    srv.send(format!("OPTIONS sip:alice@example.test SIP/2.0\r\n{heads}CSeq: many OPTIONS\r\nContent-Length: 0\r\n\r\n").as_bytes()).await;
    let r = srv.recv().await;
    assert_eq!(r.status(), Some(400));
    assert_eq!(r.call_id(), Some("bad-1"));
    // Over the 64 KiB limit: refused with 513, the body skipped.
    let big = "x".repeat(DEFAULT_MAX_MESSAGE_SIZE + 10);
    let heads2 = heads.replace("bad-1", "big-1").replace("srv1", "srv2");
    srv.send(format!("INFO sip:alice@example.test SIP/2.0\r\n{heads2}CSeq: 1 INFO\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{big}", big.len()).as_bytes()).await;
    let r = srv.recv().await;
    assert_eq!(r.status(), Some(513));
    assert_eq!(r.call_id(), Some("big-1"));
    // Garbage that cannot be answered is dropped; the next good request is served.
    srv.send(b"\x00\x01 not sip at all\r\n\r\n").await;
    let heads3 = heads.replace("bad-1", "ok-1").replace("srv1", "srv3");
    srv.send(
        format!(
            "OPTIONS sip:alice@example.test SIP/2.0\r\n{heads3}CSeq: 7 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    let r = srv.recv().await;
    assert_eq!((r.status(), r.call_id()), (Some(200), Some("ok-1")));
    assert!(r.header("Allow").unwrap().contains("INFO"));
    // A CRLF keepalive ping gets its pong.
    srv.send(b"\r\n\r\n").await;
    let mut pong = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(5), srv.stream.read_exact(&mut pong)).await.unwrap().unwrap();
    assert_eq!(&pong, b"\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_trusts_a_custom_ca_or_a_pinned_certificate_and_nothing_else() {
    let scratch = Scratch::new("tls-trust");
    let ca = sipkit::write_test_pki(&scratch.0);
    let cert_pem = std::fs::read(scratch.0.join("cert.pem")).unwrap();
    let key_pem = std::fs::read(scratch.0.join("key.pem")).unwrap();
    let certs = dialtone_transport_tcp::tls::read_pem_certs(&cert_pem).unwrap();
    let pin = dialtone_transport_tcp::tls::cert_sha256_hex(certs[0].as_ref());
    let key = {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::PrivateKeyDer::from_pem_slice(&key_pem).unwrap()
    };
    let config = rustls::ServerConfig::builder_with_provider(dialtone_transport_tcp::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(s).await {
                    let _ = tls.write_all(b"\r\n").await;
                    let mut b = [0u8; 16];
                    let _ = tls.read(&mut b).await;
                }
            });
        }
    });
    let url = format!("sips:127.0.0.1:{port}");
    let t = TcpTransport::default();
    let with = |tls: TlsSettings| TransportTarget::new(url.clone()).with_tls(tls);
    let conn = t.connect(&with(TlsSettings::default().with_ca_file(&ca))).await.unwrap();
    assert_eq!(conn.info.via_transport, "TLS");
    t.connect(&with(TlsSettings::default().with_pinned_cert_sha256(&pin))).await.unwrap();
    let e = t.connect(&with(TlsSettings::default())).await.err().expect("an unknown CA is refused");
    assert_eq!(e.code(), 53000);
    // the real pin with its last hex digit changed: never the real one
    let last = pin.chars().last().unwrap();
    let wrong = format!("{}{}", &pin[..63], if last == '0' { '1' } else { '0' });
    assert_ne!(wrong, pin);
    let e = t
        .connect(&with(TlsSettings::default().with_pinned_cert_sha256(wrong)))
        .await
        .err()
        .expect("a wrong pin is refused");
    assert_eq!(e.code(), 53000);
    assert!(e.message().contains("TLS"), "{e}");
}

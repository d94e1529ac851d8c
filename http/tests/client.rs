//! The client against real local servers on loopback: HTTP/2 chosen by ALPN over TLS
//! with a test CA given as the CA file, HTTP/1.1 in the clear, a certificate nobody
//! vouches for, a server that never answers, and one connection reused.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dialtone_http::{Client, HttpError, Method, Request, Settings};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use tokio::net::TcpListener;

/// What the server saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    version: String,
    method: String,
    path: String,
    body: String,
    signature: Option<String>,
}

struct TestServer {
    addr: SocketAddr,
    seen: tokio::sync::mpsc::UnboundedReceiver<Seen>,
    /// Connections accepted.
    connections: Arc<AtomicUsize>,
}

/// A CA and a certificate for `localhost`/127.0.0.1 signed by it: (CA PEM, cert PEM,
/// key PEM).
fn test_pki() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, "dialtone-http test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// A server answering every request with 200 and `answer` (after `delay`), over TLS
/// with ALPN h2 and http/1.1 when `tls` is given, else plain HTTP/1.1.
async fn serve(tls: Option<(String, String)>, answer: &'static str, delay: Duration) -> TestServer {
    use rustls::pki_types::pem::PemObject as _;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, seen) = tokio::sync::mpsc::unbounded_channel();
    let acceptor = tls.map(|(cert, key)| {
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
    });
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            count.fetch_add(1, Ordering::SeqCst);
            let (tx, acceptor) = (tx.clone(), acceptor.clone());
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let tx = tx.clone();
                        async move {
                            let version = format!("{:?}", req.version());
                            let method = req.method().to_string();
                            let path = req.uri().to_string();
                            let signature = req
                                .headers()
                                .get("x-twilio-signature")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned);
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let body = String::from_utf8_lossy(&body).into_owned();
                            let _ = tx.send(Seen { version, method, path, body, signature });
                            tokio::time::sleep(delay).await;
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(
                                answer,
                            ))))
                        }
                    });
                let builder =
                    hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                match acceptor {
                    Some(a) => {
                        if let Ok(tls) = a.accept(tcp).await {
                            let _ =
                                builder.serve_connection(hyper_util::rt::TokioIo::new(tls), service).await;
                        }
                    }
                    None => {
                        let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(tcp), service).await;
                    }
                }
            });
        }
    });
    TestServer { addr, seen, connections }
}

fn write_temp(name: &str, text: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("dialtone-http-{}-{name}", std::process::id()));
    std::fs::write(&p, text).unwrap();
    p
}

#[tokio::test]
async fn https_speaks_http2_to_a_server_the_ca_file_vouches_for_and_reuses_the_connection() {
    let (ca, cert, key) = test_pki();
    let mut srv = serve(Some((cert, key)), "<Response/>", Duration::ZERO).await;
    let ca_file = write_temp("ca.pem", &ca);
    let client = Client::new(&Settings { ca_file: Some(ca_file.clone()), ..Default::default() }).unwrap();
    let url = format!("https://localhost:{}/voice?x=1", srv.addr.port());
    for i in 0..3 {
        let r = client
            .send(
                Request::new(Method::Post, &url)
                    .header("X-Twilio-Signature", "sig")
                    .body("application/x-www-form-urlencoded", format!("n={i}")),
            )
            .await
            .unwrap();
        assert_eq!((r.status, r.version.as_str(), r.text().as_str()), (200, "HTTP/2.0", "<Response/>"));
        let seen = srv.seen.recv().await.unwrap();
        assert_eq!(seen.version, "HTTP/2.0");
        assert_eq!((seen.method.as_str(), seen.body.as_str()), ("POST", format!("n={i}").as_str()));
        assert!(seen.path.ends_with("/voice?x=1"), "{seen:?}");
        assert_eq!(seen.signature.as_deref(), Some("sig"));
    }
    assert_eq!(srv.connections.load(Ordering::SeqCst), 1, "one pooled connection for three requests");
    let _ = std::fs::remove_file(ca_file);
}

#[tokio::test]
async fn a_certificate_nobody_vouches_for_is_refused() {
    let (_, cert, key) = test_pki();
    let srv = serve(Some((cert, key)), "x", Duration::ZERO).await;
    let client = Client::new(&Settings::default()).unwrap();
    let e = client
        .send(Request::new(Method::Get, format!("https://localhost:{}/", srv.addr.port())))
        .await
        .unwrap_err();
    assert!(matches!(e, HttpError::Transport { .. }), "{e:?}");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
}

#[tokio::test]
async fn plain_http_is_http1_and_a_slow_server_times_out() {
    let mut srv = serve(None, "ok", Duration::ZERO).await;
    let client = Client::new(&Settings::default()).unwrap();
    let r = client
        .send(Request::new(Method::Get, format!("http://127.0.0.1:{}/a?b=c", srv.addr.port())))
        .await
        .unwrap();
    assert_eq!((r.status, r.version.as_str(), r.text().as_str()), (200, "HTTP/1.1", "ok"));
    let seen = srv.seen.recv().await.unwrap();
    assert_eq!((seen.method.as_str(), seen.path.as_str()), ("GET", "/a?b=c"));

    let slow = serve(None, "late", Duration::from_secs(30)).await;
    let t = Instant::now();
    let e = client
        .send(
            Request::new(Method::Get, format!("http://127.0.0.1:{}/", slow.addr.port()))
                .timeout(Duration::from_millis(300)),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, HttpError::Timeout { .. }) && e.is_transient(), "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(10), "the timeout bounds the request: {:?}", t.elapsed());
}

#[tokio::test]
async fn bad_urls_and_ca_files_are_errors() {
    let client = Client::new(&Settings::default()).unwrap();
    let e = client.send(Request::new(Method::Get, "ftp://example.com/")).await.unwrap_err();
    assert!(matches!(e, HttpError::BadUrl(_)), "{e:?}");
    let junk = write_temp("junk.pem", "not a certificate");
    let e = Client::new(&Settings { ca_file: Some(junk.clone()), ..Default::default() }).unwrap_err();
    assert!(matches!(e, HttpError::Setup(_)), "{e:?}");
    let e = Client::new(&Settings { ca_file: Some("/nonexistent/ca.pem".into()), ..Default::default() })
        .unwrap_err();
    assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    let _ = std::fs::remove_file(junk);
}

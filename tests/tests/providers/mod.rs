//! Local APNs and FCM for the push tests: one HTTP/2 TLS server that answers as each
//! provider documents it and reports every request it got. It listens on TCP (a test
//! on loopback) or on a Unix socket (a test whose server runs in a network namespace
//! of its own reaches it through `tests/peers/relay.py` on a host of the lab).
//!
//! Shared by `tests/tests/server_push_providers.rs` and, through `#[path]`, by the
//! `dialtone` binary's `cli/tests/between_hosts.rs`.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

/// One request a local provider accepted for checking.
#[derive(Debug, Clone)]
pub struct Got {
    /// The HTTP version, as hyper debug-prints it (`HTTP/2.0`).
    pub version: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    pub body: String,
}

/// Runs `openssl` with `args`; panics with its error output if it fails.
pub fn openssl(args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl (scripts/setup installs it)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A private key of `algorithm` in PKCS#8 PEM and its public key: (private, public).
fn keypair(dir: &Path, name: &str, algorithm: &[&str]) -> (String, String) {
    let key = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub.pem"));
    let mut args = vec!["genpkey"];
    args.extend_from_slice(algorithm);
    args.extend_from_slice(&["-out", key.to_str().unwrap()]);
    openssl(&args);
    openssl(&["pkey", "-in", key.to_str().unwrap(), "-pubout", "-out", public.to_str().unwrap()]);
    (std::fs::read_to_string(key).unwrap(), std::fs::read_to_string(public).unwrap())
}

/// An APNs token key (EC P-256, as Apple's `.p8`): (private, public) PEM.
pub fn apns_keypair(dir: &Path) -> (String, String) {
    keypair(dir, "apns", &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"])
}

/// An FCM service account's RSA key: (private, public) PEM.
pub fn fcm_keypair(dir: &Path) -> (String, String) {
    keypair(dir, "fcm", &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
}

/// What the local providers share: where they report, and the devices that were
/// already answered `429` once.
#[derive(Clone)]
struct Providers {
    acceptor: tokio_rustls::TlsAcceptor,
    tx: mpsc::UnboundedSender<Got>,
    busy_seen: Arc<Mutex<std::collections::HashSet<String>>>,
}

impl Providers {
    fn new(cert: &Path, key: &Path) -> (Providers, mpsc::UnboundedReceiver<Got>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Providers { acceptor: acceptor(cert, key), tx, busy_seen: Arc::default() }, rx)
    }

    /// Serves one connection: TLS, then HTTP/2 requests answered as the providers do.
    async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(self, stream: S) {
        let Ok(tls) = self.acceptor.accept(stream).await else { return };
        let Providers { tx, busy_seen, .. } = self;
        let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let (tx, busy_seen) = (tx.clone(), busy_seen.clone());
            async move {
                let version = format!("{:?}", req.version());
                let path = req.uri().path().to_owned();
                let headers = req
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                    .collect();
                let body = String::from_utf8_lossy(&req.into_body().collect().await.unwrap().to_bytes())
                    .into_owned();
                let got = Got { version, path: path.clone(), headers, body: body.clone() };
                let _ = tx.send(got);
                let device = if let Some(d) = path.strip_prefix("/3/device/") {
                    d.to_owned()
                } else if path.ends_with("/messages:send") {
                    let v: Value = serde_json::from_str(&body).unwrap_or_default();
                    v["message"]["token"].as_str().unwrap_or_default().to_owned()
                } else {
                    String::new()
                };
                let apns = path.starts_with("/3/device/");
                let (status, answer) = if path == "/token" {
                    (200, json!({"access_token": "ya29.local", "expires_in": 3599, "token_type": "Bearer"}))
                } else if device.starts_with("gone") {
                    if apns {
                        (410, json!({"reason": "Unregistered", "timestamp": 1}))
                    } else {
                        (
                            404,
                            json!({"error": {"code": 404, "status": "NOT_FOUND", "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]}}),
                        )
                    }
                } else if device.starts_with("busy") && busy_seen.lock().unwrap().insert(device.clone()) {
                    if apns {
                        (429, json!({"reason": "TooManyRequests"}))
                    } else {
                        (
                            429,
                            json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": [{"errorCode": "QUOTA_EXCEEDED"}]}}),
                        )
                    }
                } else if apns {
                    (200, json!({}))
                } else {
                    (200, json!({"name": "projects/dialtone-test/messages/0:1"}))
                };
                let mut r = hyper::Response::new(Full::new(Bytes::from(answer.to_string())));
                *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                if apns && status == 200 {
                    r.headers_mut()
                        .insert("apns-id", "00000000-0000-0000-0000-000000000001".parse().unwrap());
                }
                Ok::<_, std::convert::Infallible>(r)
            }
        });
        let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
            .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
            .await;
    }
}

/// The local APNs and FCM, on one HTTP/2 TLS port of loopback: every request is
/// reported; the answer depends on the device token's prefix (`good`, `gone`, `busy`:
/// 429 the first time).
pub async fn providers(cert: &Path, key: &Path) -> (SocketAddr, mpsc::UnboundedReceiver<Got>) {
    let (p, rx) = Providers::new(cert, key);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(p.clone().serve(tcp));
        }
    });
    (addr, rx)
}

/// The same providers on the Unix socket `path`.
pub async fn providers_on_unix(cert: &Path, key: &Path, path: &Path) -> mpsc::UnboundedReceiver<Got> {
    let (p, rx) = Providers::new(cert, key);
    let listener = tokio::net::UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(p.clone().serve(stream));
        }
    });
    rx
}

/// A TLS acceptor for `cert` and `key` (PEM) offering only HTTP/2, as APNs does.
fn acceptor(cert: &Path, key: &Path) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject as _;
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
    let mut cfg =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
    // APNs speaks only HTTP/2.
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}

/// The next request the providers got, within 15 s.
pub async fn next(rx: &mut mpsc::UnboundedReceiver<Got>, what: &str) -> Got {
    tokio::time::timeout(Duration::from_secs(15), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no {what}"))
        .unwrap()
}

//! # dialtone-http
//!
//! Every request Dialtone makes over HTTP goes through [`Client`]: voice URLs, `<Dial
//! action>`s, message subscriptions, push providers and gateways, and the SDK's
//! insights sink. It is reqwest on rustls with the *ring* provider:
//!
//! - `https://` and `http://`; HTTP/2 where the server offers it by ALPN, else
//!   HTTP/1.1; connections are pooled per host;
//! - a timeout per request (connect to last byte), set per [`Request`];
//! - TLS trust from the system's roots (through `rustls-platform-verifier`) plus the
//!   certificates of an optional CA file ([`Settings::ca_file`]).
//!
//! The client never retries: what is worth retrying, and how, is the caller's policy
//! (the server documents its own in `docs/server.md`).

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How a [`Client`] is made.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// A PEM file of CA certificates trusted beside the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Speak HTTP/2 without TLS ("prior knowledge") to `http://` URLs: only for test
    /// servers and local relays that expect it.
    pub http2_prior_knowledge: bool,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The client could not be built (a bad CA file, no usable roots).
    #[error("HTTP client: {0}")]
    Setup(String),
    /// The URL is not `http://` or `https://`, or does not parse.
    #[error("{0}")]
    BadUrl(String),
    /// No answer within the request's timeout.
    #[error("{url}: no answer within {timeout:?}")]
    Timeout {
        /// The URL.
        url: String,
        /// The timeout.
        timeout: Duration,
    },
    /// Connecting, TLS, or reading the answer failed.
    #[error("{url}: {reason}")]
    Transport {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
}

impl HttpError {
    /// Whether trying again later could succeed (a timeout or a transport failure).
    pub fn is_transient(&self) -> bool {
        matches!(self, HttpError::Timeout { .. } | HttpError::Transport { .. })
    }
}

/// The method of a [`Request`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    Post,
    /// DELETE.
    Delete,
}

/// One request.
#[derive(Clone, Debug)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The URL.
    pub url: String,
    /// Header names and values.
    pub headers: Vec<(String, String)>,
    /// The body (none for GET).
    pub body: Vec<u8>,
    /// The whole request's time limit.
    pub timeout: Duration,
}

impl Request {
    /// A request of `method` to `url`, with no headers or body and a 10 s timeout.
    pub fn new(method: Method, url: impl Into<String>) -> Request {
        Request {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: Duration::from_secs(10),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Request {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body and its `Content-Type`.
    pub fn body(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Request {
        self.headers.push(("Content-Type".into(), content_type.into()));
        self.body = body.into();
        self
    }

    /// Sets the timeout.
    pub fn timeout(mut self, timeout: Duration) -> Request {
        self.timeout = timeout;
        self
    }
}

/// An answer.
#[derive(Clone, Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The HTTP version it came over (`HTTP/2.0`, `HTTP/1.1`).
    pub version: String,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A pooled HTTP client (cheap to clone: clones share the pool).
#[derive(Clone, Debug)]
pub struct Client {
    inner: reqwest::Client,
}

impl Client {
    /// A client trusting the system's roots and `settings.ca_file`.
    pub fn new(settings: &Settings) -> Result<Client, HttpError> {
        let setup = |e: String| HttpError::Setup(e);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let extra = match &settings.ca_file {
            Some(path) => read_pem_certificates(path).map_err(setup)?,
            None => Vec::new(),
        };
        let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
            .map_err(|e| setup(format!("TLS roots: {e}")))?;
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| setup(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut builder = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .pool_idle_timeout(Duration::from_secs(90))
            .redirect(reqwest::redirect::Policy::limited(5))
            .user_agent(concat!("Dialtone/", env!("CARGO_PKG_VERSION")));
        if settings.http2_prior_knowledge {
            builder = builder.http2_prior_knowledge();
        }
        let inner = builder.build().map_err(|e| setup(e.to_string()))?;
        Ok(Client { inner })
    }

    /// Sends `request` and reads the whole answer.
    pub async fn send(&self, request: Request) -> Result<Response, HttpError> {
        let url = request.url.clone();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(HttpError::BadUrl(format!("{url:?} is not an http:// or https:// URL")));
        }
        let method = match request.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Delete => reqwest::Method::DELETE,
        };
        let mut b = self.inner.request(method, &url).timeout(request.timeout);
        for (n, v) in &request.headers {
            b = b.header(n.as_str(), v.as_str());
        }
        if request.method != Method::Get {
            b = b.body(request.body);
        }
        let failed = |e: reqwest::Error| {
            if e.is_timeout() {
                HttpError::Timeout { url: url.clone(), timeout: request.timeout }
            } else if e.is_builder() {
                HttpError::BadUrl(format!("{url}: {e}"))
            } else {
                HttpError::Transport { url: url.clone(), reason: error_chain(&e) }
            }
        };
        let r = b.send().await.map_err(failed)?;
        let status = r.status().as_u16();
        let version = format!("{:?}", r.version());
        let headers = r
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let body = r.bytes().await.map_err(failed)?.to_vec();
        Ok(Response { status, version, headers, body })
    }
}

/// The error and its causes, as one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

/// The certificates of a PEM file.
fn read_pem_certificates(
    path: &std::path::Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject as _;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file", path.display()));
    }
    Ok(certs)
}

//! Signaling transports: something that carries SIP messages to a server and back
//! (WebSocket, TLS, TCP, UDP). A transport only moves whole messages; framing inside a
//! stream (Content-Length) is the SIP core's job, not the transport's.

use std::path::PathBuf;

use async_trait::async_trait;

use crate::error::VoiceError;

/// TLS settings for `wss://` and `sips:` targets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsSettings {
    /// A PEM file of CA certificates to trust in addition to the system roots (for a
    /// development server's self-signed certificate).
    pub ca_file: Option<PathBuf>,
    /// The SHA-256 of the server certificate (hex), to pin one certificate.
    pub pinned_cert_sha256: Option<String>,
}

impl TlsSettings {
    /// Also trusts the CA certificates in this PEM file.
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Trusts exactly the certificate with this SHA-256 (hex, colons allowed).
    pub fn with_pinned_cert_sha256(mut self, sha256_hex: impl Into<String>) -> Self {
        self.pinned_cert_sha256 = Some(sha256_hex.into());
        self
    }
}

/// Where to connect.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportTarget {
    /// `ws://host:port/path`, `wss://…`, `sip:host:port;transport=tcp|udp`, `sips:…`.
    pub url: String,
    /// TLS settings for secure targets.
    pub tls: TlsSettings,
}

impl TransportTarget {
    /// A target with default TLS settings.
    pub fn new(url: impl Into<String>) -> Self {
        TransportTarget { url: url.into(), tls: TlsSettings::default() }
    }

    /// Sets the TLS settings.
    pub fn with_tls(mut self, tls: TlsSettings) -> Self {
        self.tls = tls;
        self
    }
}

/// Facts about an open connection that the SIP core needs for its Via and Contact.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The Via transport token: `WS`, `WSS`, `TLS`, `TCP` or `UDP`.
    pub via_transport: String,
    /// The local address as `host:port`.
    pub local_addr: String,
    /// The remote address as `host:port`.
    pub remote_addr: String,
    /// Whether delivery is reliable (no SIP retransmissions needed).
    pub reliable: bool,
}

impl ConnectionInfo {
    /// Connection facts.
    pub fn new(via_transport: &str, local_addr: String, remote_addr: String, reliable: bool) -> Self {
        ConnectionInfo { via_transport: via_transport.to_owned(), local_addr, remote_addr, reliable }
    }
}

/// The sending half of a connection.
#[async_trait]
pub trait SignalingSender: Send {
    /// Sends one whole SIP message (or a keepalive).
    async fn send(&mut self, message: &[u8]) -> Result<(), VoiceError>;
    /// Sends a keepalive: CRLF CRLF (RFC 5626) by default; a WebSocket sends a ping.
    async fn keepalive(&mut self) -> Result<(), VoiceError> {
        self.send(b"\r\n\r\n").await
    }
    /// Closes the connection.
    async fn close(&mut self) -> Result<(), VoiceError>;
}

/// The receiving half of a connection.
#[async_trait]
pub trait SignalingReceiver: Send {
    /// The next whole message; `None` once the connection closed.
    async fn recv(&mut self) -> Option<Result<Vec<u8>, VoiceError>>;
}

/// An open connection, split so that sending and receiving run concurrently.
pub struct SignalingConnection {
    /// Sends.
    pub sender: Box<dyn SignalingSender>,
    /// Receives.
    pub receiver: Box<dyn SignalingReceiver>,
    /// What the SIP core needs to know about it.
    pub info: ConnectionInfo,
}

/// A kind of signaling transport.
#[async_trait]
pub trait SignalingTransport: Send + Sync {
    /// The URL schemes it serves, for example `["ws", "wss"]`.
    fn schemes(&self) -> Vec<&'static str>;
    /// Opens a connection; failures are 53000 (or 31530 for a name that does not resolve).
    async fn connect(&self, target: &TransportTarget) -> Result<SignalingConnection, VoiceError>;
}

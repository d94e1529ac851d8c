//! # dialtone-transport-tcp
//!
//! SIP over TCP, TLS (rustls, ring) and UDP: the [`SignalingTransport`] for `sip:`
//! and `sips:` targets. Streams are cut into messages by the SIP core's
//! [`StreamFramer`] (Content-Length, RFC 5626 CRLF keepalives, a size limit); a
//! datagram is one message.
//!
//! | target                                  | transport | default port |
//! |-----------------------------------------|-----------|--------------|
//! | `sip:host[:port]` or `;transport=udp`   | UDP       | 5060         |
//! | `sip:host[:port];transport=tcp`         | TCP       | 5060         |
//! | `sips:host[:port]` or `;transport=tls`  | TLS       | 5061         |

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use dialtone_core::parts::{
    ConnectionInfo, SignalingConnection, SignalingReceiver, SignalingSender, SignalingTransport,
    TransportTarget,
};
use dialtone_core::{ErrorCode, VoiceError};
use dialtone_sip::header::Uri;
use dialtone_sip::message::{Frame, DEFAULT_MAX_MESSAGE_SIZE};
use dialtone_sip::StreamFramer;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

pub mod tls;

fn conn_err(msg: impl Into<String>) -> VoiceError {
    VoiceError::new(ErrorCode::SignalingConnectionError, msg)
}

/// Which wire a target names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// UDP datagrams.
    Udp,
    /// A TCP stream.
    Tcp,
    /// A TLS stream.
    Tls,
}

/// Reads a `sip:`/`sips:` target: the wire, the host and the port.
pub fn parse_target(url: &str) -> Result<(Wire, String, u16), VoiceError> {
    let uri = Uri::parse(url)
        .map_err(|e| VoiceError::new(ErrorCode::MalformedRequest, format!("bad SIP target {url:?}: {e}")))?;
    let wire =
        match (uri.scheme.as_str(), uri.params.get("transport").map(str::to_ascii_lowercase).as_deref()) {
            ("sips", _) | (_, Some("tls")) => Wire::Tls,
            ("sip", Some("tcp")) => Wire::Tcp,
            ("sip", None | Some("udp")) => Wire::Udp,
            (s, t) => {
                return Err(VoiceError::new(
                    ErrorCode::MalformedRequest,
                    format!("unsupported SIP target {url:?} (scheme {s}, transport {t:?})"),
                ))
            }
        };
    let port = uri.port.unwrap_or(if wire == Wire::Tls { 5061 } else { 5060 });
    Ok((wire, uri.host.trim_start_matches('[').trim_end_matches(']').to_owned(), port))
}

async fn resolve(host: &str, port: u16) -> Result<SocketAddr, VoiceError> {
    let mut addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| VoiceError::new(ErrorCode::DnsResolutionError, format!("cannot resolve {host}: {e}")))?;
    addrs
        .next()
        .ok_or_else(|| VoiceError::new(ErrorCode::DnsResolutionError, format!("{host} has no address")))
}

/// SIP over TCP, TLS and UDP.
#[derive(Clone, Debug)]
pub struct TcpTransport {
    max_message_size: usize,
}

impl Default for TcpTransport {
    fn default() -> Self {
        TcpTransport { max_message_size: DEFAULT_MAX_MESSAGE_SIZE }
    }
}

impl TcpTransport {
    /// A transport refusing messages over `max_message_size` bytes.
    pub fn new(max_message_size: usize) -> Self {
        TcpTransport { max_message_size }
    }
}

/// Registers this transport under the URL schemes it serves (`sip`, `sips`), sized by
/// `client.max_message_bytes`.
pub fn register(registry: &mut dialtone_core::Registry) -> Result<(), dialtone_core::RegistryError> {
    for scheme in ["sip", "sips"] {
        registry.register::<dyn SignalingTransport>(scheme, |config| {
            Ok(std::sync::Arc::new(TcpTransport::new(config.client.max_message_bytes)))
        })?;
    }
    Ok(())
}

#[async_trait]
impl SignalingTransport for TcpTransport {
    fn schemes(&self) -> Vec<&'static str> {
        vec!["sip", "sips"]
    }

    async fn connect(&self, target: &TransportTarget) -> Result<SignalingConnection, VoiceError> {
        let (wire, host, port) = parse_target(&target.url)?;
        let addr = resolve(&host, port).await?;
        match wire {
            Wire::Udp => {
                let bind: SocketAddr = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
                    .parse()
                    .map_err(|_| conn_err("bad bind address"))?;
                let sock = UdpSocket::bind(bind).await.map_err(|e| conn_err(format!("UDP bind: {e}")))?;
                sock.connect(addr).await.map_err(|e| conn_err(format!("UDP connect to {addr}: {e}")))?;
                let local = sock.local_addr().map_err(|e| conn_err(e.to_string()))?;
                let sock = Arc::new(sock);
                Ok(SignalingConnection {
                    sender: Box::new(UdpSender(sock.clone())),
                    receiver: Box::new(UdpReceiver { sock, max: self.max_message_size }),
                    info: ConnectionInfo::new("UDP", local.to_string(), addr.to_string(), false),
                })
            }
            Wire::Tcp => {
                let stream = TcpStream::connect(addr)
                    .await
                    .map_err(|e| conn_err(format!("TCP connect to {addr}: {e}")))?;
                let _ = stream.set_nodelay(true);
                let local = stream.local_addr().map_err(|e| conn_err(e.to_string()))?;
                Ok(stream_connection(stream, "TCP", local, addr, self.max_message_size))
            }
            Wire::Tls => {
                let stream = TcpStream::connect(addr)
                    .await
                    .map_err(|e| conn_err(format!("TCP connect to {addr}: {e}")))?;
                let _ = stream.set_nodelay(true);
                let local = stream.local_addr().map_err(|e| conn_err(e.to_string()))?;
                let config = tls::client_config(&target.tls)?;
                let connector = tokio_rustls::TlsConnector::from(config);
                let tls = connector
                    .connect(tls::server_name(&host)?, stream)
                    .await
                    .map_err(|e| conn_err(format!("TLS handshake with {addr}: {e}")))?;
                Ok(stream_connection(tls, "TLS", local, addr, self.max_message_size))
            }
        }
    }
}

/// Wraps any byte stream as a SIP connection (used for the server's accepted
/// connections too).
pub fn stream_connection<S>(
    stream: S,
    via: &str,
    local: SocketAddr,
    remote: SocketAddr,
    max_message_size: usize,
) -> SignalingConnection
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (r, w) = tokio::io::split(stream);
    SignalingConnection {
        sender: Box::new(StreamSender(Box::new(w))),
        receiver: Box::new(StreamReceiver {
            read: Box::new(r),
            framer: StreamFramer::new(max_message_size),
            done: false,
        }),
        info: ConnectionInfo::new(via, local.to_string(), remote.to_string(), true),
    }
}

struct StreamSender(Box<dyn AsyncWrite + Send + Unpin>);

#[async_trait]
impl SignalingSender for StreamSender {
    async fn send(&mut self, message: &[u8]) -> Result<(), VoiceError> {
        self.0
            .write_all(message)
            .await
            .map_err(|e| VoiceError::new(ErrorCode::TransportError, e.to_string()))?;
        self.0.flush().await.map_err(|e| VoiceError::new(ErrorCode::TransportError, e.to_string()))
    }

    async fn close(&mut self) -> Result<(), VoiceError> {
        self.0.shutdown().await.map_err(|e| VoiceError::new(ErrorCode::TransportError, e.to_string()))
    }
}

struct StreamReceiver {
    read: Box<dyn AsyncRead + Send + Unpin>,
    framer: StreamFramer,
    done: bool,
}

#[async_trait]
impl SignalingReceiver for StreamReceiver {
    async fn recv(&mut self) -> Option<Result<Vec<u8>, VoiceError>> {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            if self.done {
                return None;
            }
            match self.framer.next_frame() {
                Ok(Some(Frame::Message(m))) => return Some(Ok(m.to_bytes())),
                // The user agent answers a 400 where it can.
                Ok(Some(Frame::Malformed(_, raw))) => return Some(Ok(raw)),
                Ok(Some(Frame::Ping)) => return Some(Ok(b"\r\n\r\n".to_vec())),
                Ok(Some(Frame::Pong)) => continue,
                Ok(None) => {}
                Err(e) => {
                    // The framing is lost: nothing after this can be trusted.
                    self.done = true;
                    return Some(Err(VoiceError::new(
                        ErrorCode::MalformedRequest,
                        format!("stream closed: {e}"),
                    )));
                }
            }
            match self.read.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    self.done = true;
                    return None;
                }
                Ok(n) => self.framer.push(&buf[..n]),
            }
        }
    }
}

struct UdpSender(Arc<UdpSocket>);

#[async_trait]
impl SignalingSender for UdpSender {
    async fn send(&mut self, message: &[u8]) -> Result<(), VoiceError> {
        self.0
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| VoiceError::new(ErrorCode::TransportError, e.to_string()))
    }

    async fn close(&mut self) -> Result<(), VoiceError> {
        Ok(())
    }
}

struct UdpReceiver {
    sock: Arc<UdpSocket>,
    max: usize,
}

#[async_trait]
impl SignalingReceiver for UdpReceiver {
    async fn recv(&mut self) -> Option<Result<Vec<u8>, VoiceError>> {
        let mut buf = vec![0u8; self.max.max(1500) + 1];
        loop {
            match self.sock.recv(&mut buf).await {
                Ok(n) => return Some(Ok(buf[..n].to_vec())),
                // ICMP port unreachable from an earlier send; the flow is still ours.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    tracing::debug!("UDP: the server's port is closed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(_) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(parse_target("sip:127.0.0.1").unwrap(), (Wire::Udp, "127.0.0.1".into(), 5060));
        assert_eq!(parse_target("sip:h:7;transport=TCP").unwrap(), (Wire::Tcp, "h".into(), 7));
        assert_eq!(parse_target("sips:h").unwrap(), (Wire::Tls, "h".into(), 5061));
        assert_eq!(parse_target("sip:[::1]:9;transport=tls").unwrap(), (Wire::Tls, "::1".into(), 9));
        assert!(parse_target("sip:h;transport=sctp").is_err());
        assert!(parse_target("http://x").is_err());
    }
}

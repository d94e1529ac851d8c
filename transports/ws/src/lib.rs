//! # dialtone-transport-ws
//!
//! SIP over WebSocket (RFC 7118): `ws://` and `wss://` targets, the `sip`
//! subprotocol, one SIP message per frame (text frames), Via transport `WS`/`WSS`,
//! and WebSocket pings as keepalives. TLS comes from the TCP crate's rustls settings
//! (webpki roots, a custom CA file, or a pinned certificate).

use std::net::SocketAddr;

use async_trait::async_trait;
use dialtone_core::parts::{
    ConnectionInfo, SignalingConnection, SignalingReceiver, SignalingSender, SignalingTransport,
    TransportTarget,
};
use dialtone_core::{ErrorCode, VoiceError};
use dialtone_transport_tcp::tls;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

/// The largest SIP message taken from a frame by default (64 KiB).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024;

fn conn_err(msg: impl Into<String>) -> VoiceError {
    VoiceError::new(ErrorCode::SignalingConnectionError, msg)
}

/// The parts of a `ws://` or `wss://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsUrl {
    /// Whether TLS is used.
    pub secure: bool,
    /// The host (without IPv6 brackets).
    pub host: String,
    /// The port.
    pub port: u16,
}

/// Reads a WebSocket URL.
pub fn parse_url(url: &str) -> Result<WsUrl, VoiceError> {
    let bad =
        |why: &str| VoiceError::new(ErrorCode::MalformedRequest, format!("bad WebSocket URL {url:?}: {why}"));
    let (secure, rest) = if let Some(r) = url.strip_prefix("wss://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("ws://") {
        (false, r)
    } else {
        return Err(bad("the scheme must be ws or wss"));
    };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let end = v6.find(']').ok_or_else(|| bad("unclosed ["))?;
        (&v6[..end], v6[end + 1..].strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = match port {
        Some(p) => p.parse().map_err(|_| bad("bad port"))?,
        None if secure => 443,
        None => 80,
    };
    Ok(WsUrl { secure, host: host.to_owned(), port })
}

/// SIP over WebSocket.
#[derive(Clone, Debug)]
pub struct WsTransport {
    max_message_size: usize,
}

impl Default for WsTransport {
    fn default() -> Self {
        WsTransport { max_message_size: DEFAULT_MAX_MESSAGE_SIZE }
    }
}

impl WsTransport {
    /// A transport refusing frames over `max_message_size` bytes.
    pub fn new(max_message_size: usize) -> Self {
        WsTransport { max_message_size }
    }
}

/// Registers this transport under the URL schemes it serves (`ws`, `wss`), sized by
/// `client.max_message_bytes`.
pub fn register(registry: &mut dialtone_core::Registry) -> Result<(), dialtone_core::RegistryError> {
    for scheme in ["ws", "wss"] {
        registry.register::<dyn SignalingTransport>(scheme, |config| {
            Ok(std::sync::Arc::new(WsTransport::new(config.client.max_message_bytes)))
        })?;
    }
    Ok(())
}

#[async_trait]
impl SignalingTransport for WsTransport {
    fn schemes(&self) -> Vec<&'static str> {
        vec!["ws", "wss"]
    }

    async fn connect(&self, target: &TransportTarget) -> Result<SignalingConnection, VoiceError> {
        let url = parse_url(&target.url)?;
        let addr = tokio::net::lookup_host((url.host.as_str(), url.port))
            .await
            .map_err(|e| {
                VoiceError::new(ErrorCode::DnsResolutionError, format!("cannot resolve {}: {e}", url.host))
            })?
            .next()
            .ok_or_else(|| {
                VoiceError::new(ErrorCode::DnsResolutionError, format!("{} has no address", url.host))
            })?;
        let tcp =
            TcpStream::connect(addr).await.map_err(|e| conn_err(format!("TCP connect to {addr}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let local = tcp.local_addr().map_err(|e| conn_err(e.to_string()))?;
        if url.secure {
            let connector = tokio_rustls::TlsConnector::from(tls::client_config(&target.tls)?);
            let stream = connector
                .connect(tls::server_name(&url.host)?, tcp)
                .await
                .map_err(|e| conn_err(format!("TLS handshake with {addr}: {e}")))?;
            self.handshake(&target.url, stream, "WSS", local, addr).await
        } else {
            self.handshake(&target.url, tcp, "WS", local, addr).await
        }
    }
}

impl WsTransport {
    async fn handshake<S>(
        &self,
        url: &str,
        stream: S,
        via: &str,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<SignalingConnection, VoiceError>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let mut request =
            url.into_client_request().map_err(|e| conn_err(format!("bad WebSocket URL: {e}")))?;
        request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("sip"));
        // Frames a little over the SIP limit still arrive whole, so that the user agent
        // can refuse the message (513) and the socket lives on; far larger frames are
        // refused by the WebSocket layer itself.
        let ws_limit = self.max_message_size.saturating_mul(16);
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0)
            .max_message_size(Some(ws_limit))
            .max_frame_size(Some(ws_limit));
        let (ws, response) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
            .await
            .map_err(|e| conn_err(format!("WebSocket handshake with {url}: {e}")))?;
        let protocol = response.headers().get("Sec-WebSocket-Protocol").and_then(|v| v.to_str().ok());
        if !protocol.is_some_and(|p| p.eq_ignore_ascii_case("sip")) {
            return Err(conn_err(format!("{url} did not accept the `sip` WebSocket subprotocol")));
        }
        Ok(ws_connection(ws, via, local, remote))
    }
}

/// Wraps an open WebSocket as a SIP connection (the server side uses it for accepted
/// sockets).
pub fn ws_connection<S>(
    ws: WebSocketStream<S>,
    via: &str,
    local: SocketAddr,
    remote: SocketAddr,
) -> SignalingConnection
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (sink, stream) = ws.split();
    SignalingConnection {
        sender: Box::new(WsSender(sink)),
        receiver: Box::new(WsReceiver(stream)),
        info: ConnectionInfo::new(via, local.to_string(), remote.to_string(), true),
    }
}

struct WsSender<S>(SplitSink<WebSocketStream<S>, WsMessage>);

fn transport_err(e: impl std::fmt::Display) -> VoiceError {
    VoiceError::new(ErrorCode::TransportError, e.to_string())
}

#[async_trait]
impl<S: AsyncRead + AsyncWrite + Send + Unpin> SignalingSender for WsSender<S> {
    async fn send(&mut self, message: &[u8]) -> Result<(), VoiceError> {
        let frame = match std::str::from_utf8(message) {
            Ok(text) => WsMessage::text(text),
            Err(_) => WsMessage::binary(message.to_vec()),
        };
        self.0.send(frame).await.map_err(transport_err)
    }

    async fn keepalive(&mut self) -> Result<(), VoiceError> {
        self.0.send(WsMessage::Ping(Vec::new().into())).await.map_err(transport_err)
    }

    async fn close(&mut self) -> Result<(), VoiceError> {
        self.0.close().await.map_err(transport_err)
    }
}

struct WsReceiver<S>(SplitStream<WebSocketStream<S>>);

#[async_trait]
impl<S: AsyncRead + AsyncWrite + Send + Unpin> SignalingReceiver for WsReceiver<S> {
    async fn recv(&mut self) -> Option<Result<Vec<u8>, VoiceError>> {
        loop {
            match self.0.next().await? {
                Ok(WsMessage::Text(t)) => return Some(Ok(t.as_bytes().to_vec())),
                Ok(WsMessage::Binary(b)) => return Some(Ok(b.to_vec())),
                Ok(WsMessage::Close(_)) => return None,
                Ok(_) => continue,
                Err(tokio_tungstenite::tungstenite::Error::Capacity(e)) => {
                    // An oversized frame: refused, and the socket cannot be trusted after it.
                    return Some(Err(VoiceError::new(
                        ErrorCode::MalformedRequest,
                        format!("frame refused: {e}"),
                    )));
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
    fn urls() {
        assert_eq!(
            parse_url("ws://127.0.0.1:5066").unwrap(),
            WsUrl { secure: false, host: "127.0.0.1".into(), port: 5066 }
        );
        assert_eq!(parse_url("wss://example.com/sip").unwrap().port, 443);
        assert_eq!(parse_url("ws://[::1]:9/x").unwrap().host, "::1");
        assert!(parse_url("http://x").is_err());
        assert!(parse_url("ws://:9").is_err());
    }
}

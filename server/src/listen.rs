//! The listeners: SIP over WS, WSS, TLS, TCP and UDP. Each accepted connection (or
//! UDP peer) becomes a flow of the switch: a reader task feeding it and a writer task
//! draining it. Each reader parses what it reads (`Inbound::parse`) on its own task,
//! so the switch's thread only runs the protocol.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dialtone_core::parts::SignalingConnection;
use dialtone_sip::Inbound;
use dialtone_transport_tcp::stream_connection;
use dialtone_transport_ws::ws_connection;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};

use crate::shell::{Out, ShellMsg};
use crate::switch::FlowId;

static NEXT_FLOW: AtomicU64 = AtomicU64::new(1);

fn next_flow() -> FlowId {
    NEXT_FLOW.fetch_add(1, Ordering::Relaxed)
}

/// Hands a connection to the switch: registers the flow, then moves bytes both ways
/// until either side ends.
pub(crate) fn attach(
    conn: SignalingConnection,
    inbox: mpsc::UnboundedSender<ShellMsg>,
    local: SocketAddr,
    remote: SocketAddr,
    max: usize,
) -> Option<FlowId> {
    let id = next_flow();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Out>();
    let transport = conn.info.via_transport.clone();
    let reliable = conn.info.reliable;
    if inbox.send(ShellMsg::Open { id, transport, local, remote, reliable, out: out_tx }).is_err() {
        return None;
    }
    let mut sender = conn.sender;
    let mut receiver = conn.receiver;
    tokio::spawn(async move {
        while let Some(Out::Bytes(b)) = out_rx.recv().await {
            if sender.send(&b).await.is_err() {
                break;
            }
        }
        let _ = sender.close().await;
    });
    tokio::spawn(async move {
        while let Some(item) = receiver.recv().await {
            match item {
                Ok(bytes) => {
                    // Parsed here, on this connection's task, not on the switch's.
                    let parsed = Inbound::parse(&bytes, max);
                    if inbox.send(ShellMsg::Data(id, parsed, std::time::Instant::now())).is_err() {
                        return;
                    }
                }
                Err(e) => tracing::debug!(flow = id, error = %e, "unreadable input"),
            }
        }
        let _ = inbox.send(ShellMsg::Closed(id));
    });
    Some(id)
}

/// A byte stream: a TCP connection, or TLS over one.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Accepts connections, completes the TLS handshake when an acceptor is given, and
/// hands each stream to `serve` with whether it is secure, the local and the remote
/// address, on a task of its own.
fn accept_loop<F, Fut>(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    serve: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(Box<dyn Io>, bool, SocketAddr, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let serve = Arc::new(serve);
    tokio::spawn(async move {
        let Ok(local) = listener.local_addr() else { return };
        let mut failing = AcceptBackoff::default();
        loop {
            let (stream, remote) = match listener.accept().await {
                Ok(accepted) => {
                    failing.recovered(local);
                    accepted
                }
                Err(e) => {
                    // Out of descriptors (EMFILE, ENFILE) or memory, or a connection
                    // reset before it was taken: never fatal. Wait, then take again;
                    // connections closing meanwhile free what was short.
                    let wait = failing.failed(local, &e);
                    tokio::time::sleep(wait).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let (tls, serve) = (tls.clone(), serve.clone());
            tokio::spawn(async move {
                match tls {
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(s) => serve(Box::new(s), true, local, remote).await,
                        Err(e) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                    },
                    None => serve(Box::new(stream), false, local, remote).await,
                }
            });
        }
    })
}

/// Failed accepts on one listener: the wait before the next try, doubling from
/// [`ACCEPT_BACKOFF`]'s first to its last, and a log line when failing starts and when
/// it ends (not one per failure).
#[derive(Debug, Default)]
struct AcceptBackoff {
    failures: u64,
    wait: Duration,
}

/// The first and the longest wait after a failed accept.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

impl AcceptBackoff {
    fn failed(&mut self, local: SocketAddr, e: &std::io::Error) -> Duration {
        if self.failures == 0 {
            tracing::warn!(listener = %local, error = %e, "cannot accept connections; retrying with backoff");
        }
        self.failures += 1;
        self.wait = (self.wait * 2).clamp(ACCEPT_BACKOFF.0, ACCEPT_BACKOFF.1);
        self.wait
    }

    fn recovered(&mut self, local: SocketAddr) {
        if self.failures > 0 {
            tracing::warn!(listener = %local, failed = self.failures, "accepting connections again");
            *self = AcceptBackoff::default();
        }
    }
}

/// SIP over TCP, or over TLS when an acceptor is given.
pub(crate) fn serve_stream(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    inbox: mpsc::UnboundedSender<ShellMsg>,
    max: usize,
) -> tokio::task::JoinHandle<()> {
    accept_loop(listener, tls, move |io, secure, local, remote| {
        let via = if secure { "TLS" } else { "TCP" };
        attach(stream_connection(io, via, local, remote, max), inbox.clone(), local, remote, max);
        std::future::ready(())
    })
}

/// The WebSocket handshake: only the `sip` subprotocol (RFC 7118 §4).
#[allow(clippy::result_large_err)]
fn sip_subprotocol(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    let offered = req
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("sip"));
    if !offered {
        let mut r = ErrorResponse::new(Some("the sip WebSocket subprotocol is required".to_owned()));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return Err(r);
    }
    resp.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("sip"));
    Ok(resp)
}

/// SIP over WebSocket, or secure WebSocket when an acceptor is given.
pub(crate) fn serve_ws(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    inbox: mpsc::UnboundedSender<ShellMsg>,
    max: usize,
) -> tokio::task::JoinHandle<()> {
    use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
    // Small buffers: a SIP connection is mostly idle, and the defaults (128 KiB each
    // way) would cost an idle registration over 100 KiB (docs/benchmarks.md).
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(max.saturating_mul(16)))
        .max_frame_size(Some(max.saturating_mul(16)));
    accept_loop(listener, tls, move |io, secure, local, remote| {
        let inbox = inbox.clone();
        async move {
            match tokio_tungstenite::accept_hdr_async_with_config(io, sip_subprotocol, Some(config)).await {
                Ok(ws) => {
                    let via = if secure { "WSS" } else { "WS" };
                    attach(ws_connection(ws, via, local, remote), inbox, local, remote, max);
                }
                Err(e) => tracing::debug!(%remote, error = %e, "WebSocket handshake failed"),
            }
        }
    })
}

/// The server's UDP socket and its peers, shared by the listener (flows for peers
/// that send first) and the inbox (flows toward trunks it calls out to).
#[derive(Clone)]
pub(crate) struct Udp {
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    peers: Arc<Mutex<HashMap<SocketAddr, FlowId>>>,
    inbox: mpsc::UnboundedSender<ShellMsg>,
}

impl Udp {
    pub(crate) fn new(socket: UdpSocket, inbox: mpsc::UnboundedSender<ShellMsg>) -> std::io::Result<Udp> {
        let local = socket.local_addr()?;
        Ok(Udp { socket: Arc::new(socket), local, peers: Arc::default(), inbox })
    }

    /// The flow for a peer address, opened (and announced to the inbox) on first use.
    /// The inbox hears `Open` before anything sent after this returns.
    pub(crate) fn flow_for(&self, peer: SocketAddr) -> Option<FlowId> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(id) = peers.get(&peer) {
            return Some(*id);
        }
        let id = next_flow();
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Out>();
        let sock = self.socket.clone();
        tokio::spawn(async move {
            while let Some(Out::Bytes(b)) = out_rx.recv().await {
                let _ = sock.send_to(&b, peer).await;
            }
        });
        let open = ShellMsg::Open {
            id,
            transport: "UDP".into(),
            local: self.local,
            remote: peer,
            reliable: false,
            out: out_tx,
        };
        self.inbox.send(open).ok()?;
        peers.insert(peer, id);
        Some(id)
    }

    /// Forgets `peer`'s flow `id` (the inbox found it idle): its next datagram opens a
    /// new flow.
    pub(crate) fn forget(&self, peer: SocketAddr, id: FlowId) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if peers.get(&peer) == Some(&id) {
            peers.remove(&peer);
        }
    }

    /// SIP over UDP: one socket, one flow per peer address.
    pub(crate) fn serve(self, max: usize) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut buf = vec![0u8; max.max(1500) + 1];
            loop {
                let (n, from) = match self.socket.recv_from(&mut buf).await {
                    Ok(x) => x,
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                    Err(_) => return,
                };
                let Some(id) = self.flow_for(from) else { return };
                let parsed = Inbound::parse(&buf[..n], max);
                if self.inbox.send(ShellMsg::Data(id, parsed, std::time::Instant::now())).is_err() {
                    return;
                }
            }
        })
    }
}

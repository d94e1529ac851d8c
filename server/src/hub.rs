//! The SIP side of the server: one task (the hub) owns a sans-IO [`UserAgent`] in
//! server mode for every client flow (a WebSocket, TLS or TCP connection, or a UDP
//! peer), the registrar, and the calls, which it bridges as a back-to-back user agent:
//! the caller's INVITE ends at the caller's flow, and the server places a new INVITE
//! (its own leg, its own call SID) to every registered device of the callee, in
//! parallel. SDP passes through untouched.
//!
//! Listener tasks only move bytes: each flow has a reader feeding the hub and a
//! writer draining it. Time comes from the hub's single timer (the earliest of every
//! user agent's timers and every ring timeout).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use dialtone_core::{ErrorCode, VoiceError};
use dialtone_sip::digest::{Algorithm, Answer, Challenge};
use dialtone_sip::header::{NameAddr, Uri};
use dialtone_sip::message::Message;
use dialtone_sip::ua::{
    response_to, CallId, Failure, Flow, ServerTxKey, Transmit, UaConfig, UaEvent, UserAgent,
};
use dialtone_sip::wire;
use tokio::sync::{mpsc, oneshot};

use crate::accounts::{new_sid, Account};
use crate::records::Records;
use crate::store::{now_ms, CallRecord, Store};
use crate::token;
use crate::twiml::{self, DialTarget, Verb};
use dialtone_core::config::ApplicationConfig;

/// A flow's number inside the hub.
pub(crate) type FlowId = u64;

/// What a flow's writer sends.
pub(crate) enum Out {
    Bytes(Vec<u8>),
}

/// What reaches the hub.
pub(crate) enum HubMsg {
    /// A connection (or UDP peer) appeared.
    Open {
        id: FlowId,
        transport: String,
        local: SocketAddr,
        remote: SocketAddr,
        reliable: bool,
        out: mpsc::UnboundedSender<Out>,
    },
    /// Bytes from a flow (one whole message or keepalive), and when they arrived.
    Data(FlowId, Vec<u8>, Instant),
    /// The flow closed.
    Closed(FlowId),
    /// A snapshot of the registrar, for the API and tests.
    Registrations(oneshot::Sender<HashMap<String, usize>>),
    /// A voice URL answered (or failed) for the call with this SID.
    Routed(String, Result<String, VoiceError>),
    /// Run the rest of a call's TwiML (after a `<Pause>`).
    Resume(String, VecDeque<Verb>),
    /// A connection toward a trunk or SIP URI is up (or failed) for the dial of
    /// `child_sid` in call `sid`.
    Outbound {
        sid: String,
        child_sid: String,
        key: String,
        target: OutTarget,
        result: Result<FlowId, VoiceError>,
    },
    /// Send a call message (JSON content) to the client on the leg with this SID; the
    /// reply is the message's SID.
    SendMessage { call_sid: String, content: String, reply: oneshot::Sender<Result<String, VoiceError>> },
}

/// Settings the hub needs.
pub(crate) struct HubConfig {
    pub(crate) account: Account,
    pub(crate) domain: String,
    /// The host in Via and Contact, instead of the listener's address.
    pub(crate) public_host: Option<String>,
    pub(crate) trusted: Vec<(IpAddr, u8)>,
    pub(crate) ring_timeout: Duration,
    pub(crate) max_message_size: usize,
    pub(crate) applications: Vec<ApplicationConfig>,
    /// SIP trunks.
    pub(crate) trunks: Vec<Trunk>,
    /// The UDP listener's socket, shared for calls out over UDP.
    pub(crate) udp: Option<crate::listen::Udp>,
    /// The hub's own inbox (for work that finishes later).
    pub(crate) inbox: mpsc::UnboundedSender<HubMsg>,
    /// A new INVITE that waited longer than this in the inbox is refused with 503.
    pub(crate) overload_delay: Duration,
    /// A UDP peer idle this long (and holding nothing) is forgotten.
    pub(crate) udp_idle: Duration,
    /// The `Retry-After` of an overload 503, in seconds.
    pub(crate) retry_after_secs: u32,
}

/// A configured SIP trunk, parsed.
#[derive(Clone, Debug)]
pub(crate) struct Trunk {
    pub(crate) name: String,
    /// Where calls out go.
    pub(crate) uri: Option<Uri>,
    /// Source ranges that are this trunk.
    pub(crate) networks: Vec<(IpAddr, u8)>,
    /// What a peer presents to call in as this trunk.
    pub(crate) credentials: Option<(String, String)>,
    /// What the server presents when the trunk challenges a call out.
    pub(crate) outbound_credentials: Option<(String, String)>,
    /// Verifies a TLS trunk.
    pub(crate) tls_ca_file: Option<std::path::PathBuf>,
}

/// Where one `<Sip>` or `<Number>` of a dial goes.
#[derive(Clone, Debug)]
pub(crate) struct OutTarget {
    /// The request-URI.
    uri: Uri,
    /// Digest credentials for a challenge.
    credentials: Option<(String, String)>,
    tls_ca_file: Option<std::path::PathBuf>,
}

/// The realm of the server's digest challenges.
const REALM: &str = "dialtone";
/// How long a digest nonce is good for.
const NONCE_SECS: u64 = 300;

struct FlowState {
    ua: UserAgent,
    out: mpsc::UnboundedSender<Out>,
    remote: SocketAddr,
    /// The wake-up the timer heap holds for this flow's user agent.
    wake: Option<Instant>,
    /// A UDP peer (no connection tells when it is gone): when it last sent.
    last_heard: Option<Instant>,
}

struct Binding {
    flow: FlowId,
    contact: Uri,
    expires_at: Instant,
}

/// A call waiting on a pushed identity: (call SID, leg SID, offer, parameters, From).
type WaitingPush = (String, String, String, std::collections::BTreeMap<String, String>, NameAddr);

/// Devices kept per identity.
const MAX_DEVICES: usize = 10;
/// Call messages per call per minute.
const MESSAGES_PER_MINUTE: usize = 10;
/// The most bytes of one call message.
pub(crate) const MAX_MESSAGE_BYTES: usize = 10 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Caller,
    Callee,
}

struct Leg {
    flow: FlowId,
    call: CallId,
    /// A Dialtone client (it gets call messages), not a trunk or plain SIP peer.
    client: bool,
}

struct Bridge {
    sid: String,
    child_sid: String,
    caller: Leg,
    callees: Vec<Leg>,
    answered: Option<usize>,
    rang: bool,
    ring_deadline: Instant,
    /// A re-INVITE being passed across: (from role, the other side's call).
    reoffer_from: Option<Role>,
    messages: VecDeque<Instant>,
    last_failure: Option<Failure>,
    /// Who is calling (`client:NAME`, or the trunk's From URI).
    caller_party: String,
    /// The caller's offer, passed through to every device.
    offer: String,
    /// Who the callee legs show as caller.
    dial_from: Option<NameAddr>,
    /// Identities reached by push (no live registration), with the parameters of their
    /// invite and the bindings pushed to: a device of theirs that registers now rings.
    pushed: Vec<(String, std::collections::BTreeMap<String, String>, Vec<crate::store::Binding>)>,
    /// Connections toward trunks still being opened for this dial.
    connecting: usize,
    /// The caller's leg is answered (a callee answered once).
    caller_answered: bool,
    /// When the current dial's callee answered.
    answered_at: Option<Instant>,
    /// The current `<Dial action>`, resolved to a URL.
    action: Option<String>,
    /// The verbs after the current `<Dial>`.
    rest: VecDeque<Verb>,
    /// The application's voice URL (relative actions resolve against it).
    voice_url: Option<String>,
    /// Who the caller called (the voice URL's `To`).
    to: String,
}

pub(crate) struct Hub {
    cfg: HubConfig,
    store: Store,
    /// Call records, written off the signaling path.
    records: Records,
    /// How long the message being handled waited in the inbox.
    inbox_delay: Duration,
    /// New calls refused for overload since the last warning, and when that was.
    shed: (u64, Option<Instant>),
    /// Flows whose user agent was handed input or a command since the last drain: only
    /// these are polled, never every flow.
    touched: Vec<FlowId>,
    /// Every flow's next wake-up (stale entries are skipped when they come up).
    timers: BinaryHeap<Reverse<(Instant, FlowId)>>,
    /// Every dial's ring timeout, by call SID (stale once answered or re-dialed).
    ring_timers: BinaryHeap<Reverse<(Instant, String)>>,
    /// When each UDP peer is next checked for idleness.
    idle_timers: BinaryHeap<Reverse<(Instant, FlowId)>>,
    rx: mpsc::UnboundedReceiver<HubMsg>,
    flows: HashMap<FlowId, FlowState>,
    registrar: HashMap<String, Vec<Binding>>,
    bridges: HashMap<String, Bridge>,
    legs: HashMap<(FlowId, CallId), (String, Role)>,
    /// The user agents of closed flows that carried answered calls, kept until their
    /// clients reconnect and re-attach the dialogs (or the window closes).
    orphans: HashMap<FlowId, (UserAgent, Instant)>,
    /// Flows toward trunks and SIP URIs, by connection (reused while open).
    outbound_flows: HashMap<String, FlowId>,
}

/// How long an answered call waits for its client to reconnect.
const RECONNECT_WINDOW: Duration = Duration::from_secs(30);

fn in_network(ip: IpAddr, net: (IpAddr, u8)) -> bool {
    match (ip, net.0) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let bits = u32::from(net.1.min(32));
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let bits = u32::from(net.1.min(128));
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Parses `a.b.c.d/n` (or a bare address).
pub(crate) fn parse_network(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, bits) = match s.split_once('/') {
        Some((ip, b)) => (ip.parse().ok()?, b.parse().ok()?),
        None => {
            let ip: IpAddr = s.parse().ok()?;
            (ip, if ip.is_ipv4() { 32 } else { 128 })
        }
    };
    Some((ip, bits))
}

fn with_error(mut r: Message, e: &VoiceError) -> Message {
    r.headers.push(wire::ERROR_HEADER, wire::error_header(e));
    r
}

fn user_of(header: Option<&str>) -> Option<String> {
    NameAddr::parse(header?).ok()?.uri.user
}

impl Hub {
    pub(crate) fn new(
        cfg: HubConfig,
        store: Store,
        records: Records,
        rx: mpsc::UnboundedReceiver<HubMsg>,
    ) -> Hub {
        Hub {
            cfg,
            store,
            records,
            inbox_delay: Duration::ZERO,
            shed: (0, None),
            touched: Vec::new(),
            timers: BinaryHeap::new(),
            ring_timers: BinaryHeap::new(),
            idle_timers: BinaryHeap::new(),
            rx,
            flows: HashMap::new(),
            registrar: HashMap::new(),
            bridges: HashMap::new(),
            legs: HashMap::new(),
            orphans: HashMap::new(),
            outbound_flows: HashMap::new(),
        }
    }

    pub(crate) async fn run(mut self) {
        loop {
            let wake = self.next_wake();
            let msg = tokio::select! {
                m = self.rx.recv() => m,
                () = sleep_until(wake) => {
                    self.on_timer(Instant::now()).await;
                    continue;
                }
            };
            let Some(msg) = msg else { return };
            let now = Instant::now();
            match msg {
                HubMsg::Open { id, transport, local, remote, reliable, out } => {
                    let mut c = UaConfig::new("dialtone", self.cfg.domain.clone());
                    c.server = true;
                    c.max_message_size = self.cfg.max_message_size;
                    c.seed = uuid::Uuid::new_v4().as_u64_pair().0;
                    let local = match &self.cfg.public_host {
                        Some(h) if h.contains(':') && !h.starts_with('[') => {
                            format!("[{h}]:{}", local.port())
                        }
                        Some(h) => format!("{h}:{}", local.port()),
                        None => local.to_string(),
                    };
                    let flow = Flow { transport, local, reliable };
                    let last_heard = (!reliable).then_some(now);
                    if !reliable {
                        self.idle_timers.push(Reverse((now + self.cfg.udp_idle, id)));
                    }
                    let ua = UserAgent::new(c, flow);
                    self.flows.insert(id, FlowState { ua, out, remote, wake: None, last_heard });
                    self.touched.push(id);
                }
                HubMsg::Data(id, bytes, arrived) => {
                    self.inbox_delay = now.saturating_duration_since(arrived);
                    if let Some(f) = self.flows.get_mut(&id) {
                        if f.last_heard.is_some() {
                            f.last_heard = Some(now);
                        }
                    }
                    if let Some(ua) = self.ua(id) {
                        ua.handle_input(&bytes, now);
                    }
                    self.drain().await;
                    self.inbox_delay = Duration::ZERO;
                }
                HubMsg::Closed(id) => self.on_closed(id).await,
                HubMsg::Routed(sid, result) => {
                    match result.and_then(|doc| twiml::parse(&doc)) {
                        Ok(verbs) => self.run_verbs(&sid, verbs.into()).await,
                        Err(e) => {
                            tracing::warn!(call_sid = %sid, error = %e, "the application failed");
                            let status = if e.kind() == ErrorCode::BadGateway { 502 } else { 500 };
                            self.fail_bridge(&sid, status, "Application Error", Some(&e), "failed").await;
                        }
                    }
                    self.drain().await;
                }
                HubMsg::Resume(sid, verbs) => {
                    self.run_verbs(&sid, verbs).await;
                    self.drain().await;
                }
                HubMsg::Outbound { sid, child_sid, key, target, result } => {
                    self.on_outbound(&sid, &child_sid, key, &target, result, now).await;
                    self.drain().await;
                }
                HubMsg::SendMessage { call_sid, content, reply } => {
                    let _ = reply.send(self.send_message(&call_sid, &content, now));
                    self.drain().await;
                }
                HubMsg::Registrations(reply) => {
                    let now = Instant::now();
                    let snapshot = self
                        .registrar
                        .iter()
                        .map(|(k, v)| (k.clone(), v.iter().filter(|b| b.expires_at > now).count()))
                        .filter(|(_, n)| *n > 0)
                        .collect();
                    let _ = reply.send(snapshot);
                }
            }
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        let ua = self.timers.peek().map(|Reverse((t, _))| *t);
        let ring = self.ring_timers.peek().map(|Reverse((t, _))| *t);
        let idle = self.idle_timers.peek().map(|Reverse((t, _))| *t);
        let orphans = self.orphans.values().map(|(_, d)| *d);
        ua.into_iter().chain(ring).chain(idle).chain(orphans).min()
    }

    async fn on_timer(&mut self, now: Instant) {
        while let Some(&Reverse((t, id))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(f) = self.flows.get_mut(&id) else { continue };
            if f.wake != Some(t) {
                continue; // stale: the flow's wake-up moved, and the heap holds the new one
            }
            f.wake = None;
            if f.ua.poll_timeout().is_some_and(|t| t <= now) {
                f.ua.handle_timeout(now);
            }
            self.touched.push(id);
        }
        let expired: Vec<FlowId> =
            self.orphans.iter().filter(|(_, (_, d))| *d <= now).map(|(f, _)| *f).collect();
        for f in expired {
            self.orphans.remove(&f);
            let lost: Vec<(String, Role)> =
                self.legs.iter().filter(|((lf, _), _)| *lf == f).map(|(_, v)| v.clone()).collect();
            self.legs.retain(|(lf, _), _| *lf != f);
            for (sid, role) in lost {
                let e = VoiceError::new(
                    ErrorCode::SignalingConnectionDisconnected,
                    "the client did not reconnect",
                );
                self.end_bridge(&sid, Some(role), Some(&e), "completed").await;
            }
        }
        self.expire_idle_udp(now);
        let mut timed_out = Vec::new();
        while let Some(Reverse((t, _))) = self.ring_timers.peek() {
            if *t > now {
                break;
            }
            let Some(Reverse((t, sid))) = self.ring_timers.pop() else { break };
            if self.bridges.get(&sid).is_some_and(|b| b.answered.is_none() && b.ring_deadline == t) {
                timed_out.push(sid);
            }
        }
        for sid in timed_out {
            tracing::info!(call_sid = %sid, "ring timeout");
            let e = VoiceError::new(ErrorCode::RequestTimeout, "nobody answered before the ring timeout");
            self.dial_failed(&sid, 408, "Request Timeout", Some(&e), "no-answer").await;
        }
        self.drain().await;
    }

    /// Forgets the UDP peers that sent nothing for `udp_idle` and hold nothing: no call
    /// leg, no registration, no transaction still running. A busy or recently heard
    /// peer is checked again later; a forgotten one that sends again is a new flow.
    fn expire_idle_udp(&mut self, now: Instant) {
        let idle = self.cfg.udp_idle;
        while let Some(&Reverse((t, id))) = self.idle_timers.peek() {
            if t > now {
                break;
            }
            self.idle_timers.pop();
            let Some(f) = self.flows.get(&id) else { continue };
            let Some(heard) = f.last_heard else { continue };
            if now.saturating_duration_since(heard) < idle {
                self.idle_timers.push(Reverse((heard + idle, id)));
                continue;
            }
            let busy = f.ua.poll_timeout().is_some()
                || self.legs.keys().any(|(lf, _)| *lf == id)
                || self.registrar.values().any(|bs| bs.iter().any(|b| b.flow == id && b.expires_at > now));
            if busy {
                self.idle_timers.push(Reverse((now + idle, id)));
                continue;
            }
            let remote = f.remote;
            self.flows.remove(&id);
            self.outbound_flows.retain(|_, f| *f != id);
            self.forget_bindings(id);
            if let Some(udp) = &self.cfg.udp {
                udp.forget(remote, id);
            }
            tracing::debug!(flow = id, peer = %remote, "forgot an idle UDP peer");
        }
    }

    /// Removes every registration bound to `flow` (and identities left with none).
    fn forget_bindings(&mut self, flow: FlowId) {
        for bindings in self.registrar.values_mut() {
            bindings.retain(|b| b.flow != flow);
        }
        self.registrar.retain(|_, v| !v.is_empty());
    }

    /// Sends what every user agent queued and handles their events, until quiet.
    async fn drain(&mut self) {
        for _ in 0..64 {
            let mut ids = std::mem::take(&mut self.touched);
            if ids.is_empty() {
                return;
            }
            ids.sort_unstable();
            ids.dedup();
            let mut events = Vec::new();
            for id in ids {
                let Some(f) = self.flows.get_mut(&id) else { continue };
                while let Some(t) = f.ua.poll_transmit() {
                    let bytes = match t {
                        Transmit::Message(b) => b,
                        Transmit::Keepalive => b"\r\n\r\n".to_vec(),
                        Transmit::Pong => b"\r\n".to_vec(),
                    };
                    let _ = f.out.send(Out::Bytes(bytes));
                }
                while let Some(e) = f.ua.poll_event() {
                    events.push((id, e));
                }
                let wake = f.ua.poll_timeout();
                if wake != f.wake {
                    f.wake = wake;
                    if let Some(t) = wake {
                        self.timers.push(Reverse((t, id)));
                    }
                }
            }
            for (flow, e) in events {
                self.on_event(flow, e).await;
            }
        }
    }

    /// A flow's user agent, marked for the next drain (its output and timer).
    fn ua(&mut self, flow: FlowId) -> Option<&mut UserAgent> {
        let f = self.flows.get_mut(&flow)?;
        self.touched.push(flow);
        Some(&mut f.ua)
    }

    async fn on_closed(&mut self, id: FlowId) {
        let closed = self.flows.remove(&id);
        // Answered calls wait for their client to come back on a new flow.
        let answered_here = self.legs.iter().any(|((f, c), (sid, role))| {
            *f == id
                && self.bridges.get(sid).is_some_and(|b| match role {
                    Role::Caller => b.answered.is_some(),
                    Role::Callee => b
                        .answered
                        .and_then(|i| b.callees.get(i))
                        .is_some_and(|l| l.flow == id && l.call == *c),
                })
        });
        self.forget_bindings(id);
        if let (true, Some(f)) = (answered_here, closed) {
            tracing::info!(flow = id, "a client with answered calls dropped; waiting for it to reconnect");
            self.orphans.insert(id, (f.ua, Instant::now() + RECONNECT_WINDOW));
            return;
        }
        // Calls with a leg on the flow end: the other side hears BYE or CANCEL.
        let affected: Vec<(String, Role, CallId)> = self
            .legs
            .iter()
            .filter(|((f, _), _)| *f == id)
            .map(|((_, c), (sid, role))| (sid.clone(), *role, *c))
            .collect();
        for (sid, role, call) in affected {
            self.legs.remove(&(id, call));
            let e =
                VoiceError::new(ErrorCode::SignalingConnectionDisconnected, "a client's connection closed");
            match role {
                Role::Caller => self.end_bridge(&sid, None, Some(&e), "canceled").await,
                Role::Callee => {
                    let answered_here = self.bridges.get(&sid).is_some_and(|b| {
                        b.answered
                            .is_some_and(|i| b.callees.get(i).is_some_and(|l| l.flow == id && l.call == call))
                    });
                    if answered_here {
                        self.end_bridge(&sid, Some(Role::Callee), Some(&e), "completed").await;
                    } else if let Some(b) = self.bridges.get_mut(&sid) {
                        b.callees.retain(|l| !(l.flow == id && l.call == call));
                        if b.callees.is_empty() && b.answered.is_none() {
                            self.fail_bridge(&sid, 480, "Temporarily Unavailable", Some(&e), "failed").await;
                        }
                    }
                }
            }
        }
        self.drain().await;
    }

    async fn on_event(&mut self, flow: FlowId, e: UaEvent) {
        let now = Instant::now();
        match e {
            UaEvent::Request { call: None, tx, request } => self.on_register(flow, tx, request, now),
            UaEvent::Request { call: Some(call), tx, request } => self.on_info(flow, call, tx, request, now),
            UaEvent::Incoming { call, request } => self.on_invite(flow, call, request, now).await,
            UaEvent::IncomingCancelled { call, .. } => {
                if let Some((sid, Role::Caller)) = self.legs.remove(&(flow, call)) {
                    self.cancel_callees(&sid, None, now);
                    self.finish(&sid, "canceled", "31487 cancelled by the caller").await;
                }
            }
            UaEvent::Progress { call, .. } => {
                let Some((sid, Role::Callee)) = self.legs.get(&(flow, call)).cloned() else { return };
                let Some(b) = self.bridges.get_mut(&sid) else { return };
                if !b.rang {
                    b.rang = true;
                    let (f, c) = (b.caller.flow, b.caller.call);
                    if let Some(ua) = self.ua(f) {
                        ua.provisional(c, 180, now);
                    }
                }
            }
            UaEvent::Answered { call, response } => self.on_answered(flow, call, &response, now).await,
            UaEvent::Failed { call, failure } => {
                let Some((sid, Role::Callee)) = self.legs.remove(&(flow, call)) else { return };
                let Some(b) = self.bridges.get_mut(&sid) else { return };
                b.callees.retain(|l| !(l.flow == flow && l.call == call));
                b.last_failure = Some(failure.clone());
                if b.callees.is_empty() && b.answered.is_none() && b.pushed.is_empty() && b.connecting == 0 {
                    let status = match failure.status {
                        // A device that stopped answering is not the caller's business.
                        408 => 480,
                        s => s,
                    };
                    let e = wire::failure_to_error(&failure, false);
                    let outcome = match status {
                        486 | 600 => "busy",
                        603 => "canceled",
                        _ => "failed",
                    };
                    let reason = failure.reason.clone();
                    self.dial_failed(&sid, status, &reason, Some(&e), outcome).await;
                }
            }
            UaEvent::Ended { call, by_peer, failure } => {
                let Some((sid, role)) = self.legs.remove(&(flow, call)) else { return };
                let e = failure.as_ref().map(|f| wire::failure_to_error(f, false));
                if by_peer || e.is_some() {
                    self.end_bridge(&sid, Some(role), e.as_ref(), "completed").await;
                }
            }
            UaEvent::Reoffer { call, request } => {
                let Some((sid, role)) = self.legs.get(&(flow, call)).cloned() else {
                    if let Some(ua) = self.ua(flow) {
                        ua.answer_reoffer(call, None, now);
                    }
                    return;
                };
                let other = self.other_leg(&sid, role);
                let sdp = String::from_utf8_lossy(&request.body).into_owned();
                let sent = match other {
                    Some((f, c, _)) => self.ua(f).is_some_and(|ua| ua.reinvite(c, &sdp, now)),
                    None => false,
                };
                if sent {
                    if let Some(b) = self.bridges.get_mut(&sid) {
                        b.reoffer_from = Some(role);
                    }
                } else if let Some(ua) = self.ua(flow) {
                    ua.answer_reoffer(call, None, now);
                }
            }
            UaEvent::ReofferAnswered { call, response } => {
                let Some((sid, role)) = self.legs.get(&(flow, call)).cloned() else { return };
                let from = self.bridges.get_mut(&sid).and_then(|b| b.reoffer_from.take());
                if from.is_some_and(|r| r != role) {
                    if let Some((f, c, _)) = self.other_leg(&sid, role) {
                        let sdp = String::from_utf8_lossy(&response.body).into_owned();
                        if let Some(ua) = self.ua(f) {
                            ua.answer_reoffer(c, Some(&sdp), now);
                        }
                    }
                }
            }
            UaEvent::ReofferFailed { call, .. } => {
                let Some((sid, role)) = self.legs.get(&(flow, call)).cloned() else { return };
                if self.bridges.get_mut(&sid).and_then(|b| b.reoffer_from.take()).is_some() {
                    if let Some((f, c, _)) = self.other_leg(&sid, role) {
                        if let Some(ua) = self.ua(f) {
                            ua.answer_reoffer(c, None, now);
                        }
                    }
                }
            }
            UaEvent::UnknownDialog { request } => self.reattach(flow, request, now),
            UaEvent::Malformed(e) => tracing::warn!(flow, error = %e, "malformed SIP from a client"),
            _ => {}
        }
    }

    /// A re-INVITE on a new flow for a dialog of a dropped one: move the dialog to the
    /// new flow's user agent, repoint the call's leg, and let it answer the re-INVITE.
    fn reattach(&mut self, flow: FlowId, request: Message, now: Instant) {
        // The old flow may be closed (an orphan) or not yet seen to close.
        let found = self
            .orphans
            .iter_mut()
            .map(|(f, (ua, _))| (f, ua))
            .chain(self.flows.iter_mut().filter(|(f, _)| **f != flow).map(|(f, st)| (f, &mut st.ua)))
            .find_map(|(old, ua)| ua.take_call(&request).map(|(c, m)| (*old, c, m)));
        if let Some((old, _, _)) = &found {
            if self.flows.contains_key(old) {
                self.touched.push(*old);
            }
        }
        let Some((old_flow, old_call, moved)) = found else {
            if let Some(ua) = self.ua(flow) {
                ua.refuse_unknown(&request, now);
            }
            return;
        };
        let Some(ua) = self.ua(flow) else { return };
        let new_call = ua.adopt_call(moved);
        if let Some((sid, role)) = self.legs.remove(&(old_flow, old_call)) {
            if let Some(b) = self.bridges.get_mut(&sid) {
                let leg = match role {
                    Role::Caller => Some(&mut b.caller),
                    Role::Callee => b.callees.iter_mut().find(|l| l.flow == old_flow && l.call == old_call),
                };
                if let Some(l) = leg {
                    l.flow = flow;
                    l.call = new_call;
                }
            }
            tracing::info!(call_sid = %sid, "a reconnected client re-attached its call");
            self.legs.insert((flow, new_call), (sid, role));
        }
        if !self.legs.keys().any(|(f, _)| *f == old_flow) {
            self.orphans.remove(&old_flow);
        }
        if let Some(ua) = self.ua(flow) {
            ua.handle_input(&request.to_bytes(), now);
        }
    }

    /// The other side of a leg of an answered call, and whether it is a client.
    fn other_leg(&self, sid: &str, role: Role) -> Option<(FlowId, CallId, bool)> {
        let b = self.bridges.get(sid)?;
        let l = match role {
            Role::Caller => b.answered.and_then(|i| b.callees.get(i))?,
            Role::Callee => &b.caller,
        };
        Some((l.flow, l.call, l.client))
    }

    // ------------------------------------------------------------------ registrar

    fn bearer(request: &Message) -> Option<&str> {
        let v = request.header("Authorization")?.trim();
        let (scheme, token) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    }

    fn challenge(request: &Message, e: &VoiceError) -> Message {
        let mut r = response_to(request, 401, Some("srv"));
        let desc = e.message().replace('"', "'");
        let error =
            if e.kind() == ErrorCode::AuthenticationFailed { "" } else { "error=\"invalid_token\", " };
        r.headers.push(
            "WWW-Authenticate",
            format!("Bearer realm=\"dialtone\", {error}error_description=\"{} {desc}\"", e.code()),
        );
        with_error(r, e)
    }

    fn on_register(&mut self, flow: FlowId, tx: ServerTxKey, request: Message, now: Instant) {
        let answer = |hub: &mut Hub, resp: Message| {
            if let Some(ua) = hub.ua(flow) {
                ua.respond(&tx, resp, now);
            }
        };
        let Some(token) = Self::bearer(&request) else {
            let e = VoiceError::new(
                ErrorCode::AuthenticationFailed,
                "REGISTER needs an access token (Authorization: Bearer)",
            );
            return answer(self, Self::challenge(&request, &e));
        };
        let claims = match token::verify(&self.cfg.account, token) {
            Ok(c) => c,
            Err(e) => return answer(self, Self::challenge(&request, &e)),
        };
        let identity = claims.grants.identity.clone().unwrap_or_default();
        let to_user = user_of(request.header("To"));
        if to_user.as_deref() != Some(identity.as_str()) {
            let e = VoiceError::new(
                ErrorCode::AccessTokenGrantsInvalid,
                "the token's identity is not the one registering",
            );
            let r = with_error(response_to(&request, 403, Some("srv")), &e);
            return answer(self, r);
        }
        if let Some(bt) = request.header(wire::BRIDGE_TOKEN_HEADER) {
            let waiting = crate::push::verify_bridge_token(&self.cfg.account.api_key_secret, bt, &identity)
                .and_then(|sid| {
                    let live = self.bridges.values().any(|b| b.child_sid == sid && b.answered.is_none());
                    if live {
                        Ok(sid)
                    } else {
                        Err(VoiceError::new(
                            ErrorCode::InvalidBridgeToken,
                            "invalid bridge token: the call is over",
                        ))
                    }
                });
            if let Err(e) = waiting {
                let r = with_error(response_to(&request, 403, Some("srv")), &e);
                return answer(self, r);
            }
        }
        let default_expires =
            request.header("Expires").and_then(|e| e.trim().parse::<u64>().ok()).unwrap_or(600);
        let mut resp = response_to(&request, 200, Some("srv"));
        let contacts = request.headers.values("Contact");
        let bindings = self.registrar.entry(identity.clone()).or_default();
        bindings.retain(|b| b.expires_at > now);
        for c in contacts {
            if c.trim() == "*" {
                bindings.clear();
                continue;
            }
            let Ok(na) = NameAddr::parse(c) else { continue };
            let expires =
                na.params.get("expires").and_then(|e| e.parse::<u64>().ok()).unwrap_or(default_expires);
            bindings.retain(|b| b.contact != na.uri);
            if expires > 0 {
                let expires = expires.clamp(30, 3600);
                bindings.push(Binding {
                    flow,
                    contact: na.uri.clone(),
                    expires_at: now + Duration::from_secs(expires),
                });
                resp.headers.push("Contact", format!("<{}>;expires={expires}", na.uri));
            }
        }
        // The ten most recent devices.
        while bindings.len() > MAX_DEVICES {
            bindings.remove(0);
        }
        tracing::info!(%identity, devices = bindings.len(), "registered");
        let contacts: Vec<Uri> =
            bindings.iter().filter(|b| b.flow == flow).map(|b| b.contact.clone()).collect();
        answer(self, resp);
        // A device of an identity reached by push came online: ring it.
        let waiting: Vec<WaitingPush> = self
            .bridges
            .values()
            .filter(|b| b.answered.is_none())
            .filter_map(|b| {
                let (_, params, _) = b.pushed.iter().find(|(i, _, _)| *i == identity)?;
                Some((
                    b.sid.clone(),
                    b.child_sid.clone(),
                    b.offer.clone(),
                    params.clone(),
                    b.dial_from.clone()?,
                ))
            })
            .collect();
        for (sid, child_sid, offer, params, from) in waiting {
            let mut extra = vec![(wire::CALL_SID_HEADER, child_sid)];
            if !params.is_empty() {
                extra.push((wire::PARAMS_HEADER, wire::params_header(&params)));
            }
            for contact in &contacts {
                let Some(ua) = self.ua(flow) else { continue };
                let c = ua.invite_from(from.clone(), contact.clone(), &offer, &extra, now);
                self.legs.insert((flow, c), (sid.clone(), Role::Callee));
                if let Some(b) = self.bridges.get_mut(&sid) {
                    b.callees.push(Leg { flow, call: c, client: true });
                }
            }
        }
    }

    // ------------------------------------------------------------------ trunks

    /// Whether a request without a token comes from a trunk: a trusted range, a
    /// trunk's range, or a trunk's digest credentials (challenged when absent or stale).
    fn trunk_caller(&self, remote: Option<IpAddr>, request: &Message) -> TrunkAuth {
        if let Some(ip) = remote {
            if self.cfg.trusted.iter().any(|n| in_network(ip, *n)) {
                return TrunkAuth::Trunk("trusted networks".to_owned());
            }
            if let Some(t) = self.cfg.trunks.iter().find(|t| t.networks.iter().any(|n| in_network(ip, *n))) {
                return TrunkAuth::Trunk(t.name.clone());
            }
        }
        if !self.cfg.trunks.iter().any(|t| t.credentials.is_some()) {
            return TrunkAuth::Refused;
        }
        let Some(answer) = request.headers.get_all("Authorization").find_map(Answer::parse) else {
            return TrunkAuth::Challenge;
        };
        if !nonce_ok(&self.cfg.account.api_key_secret, &answer.nonce, unix_secs()) {
            return TrunkAuth::Challenge;
        }
        if answer.realm != REALM || answer.uri.trim() != request.uri().trim() {
            return TrunkAuth::Refused;
        }
        let trunk = self.cfg.trunks.iter().find(|t| {
            t.credentials.as_ref().is_some_and(|(u, p)| *u == answer.username && answer.verify(p, "INVITE"))
        });
        match trunk {
            Some(t) => TrunkAuth::Trunk(t.name.clone()),
            None => TrunkAuth::Refused,
        }
    }

    /// Where a `<Number>` or `<Sip>` goes: a number through the first trunk with a
    /// URI; a SIP URI as it is, with the credentials of the trunk at its address.
    fn out_target(&self, t: &DialTarget) -> Result<OutTarget, VoiceError> {
        let same_place = |a: &Uri, b: &Uri| a.host.eq_ignore_ascii_case(&b.host) && a.port == b.port;
        match t {
            DialTarget::Number(n) => {
                let ok = !n.is_empty()
                    && n.len() <= 32
                    && n.chars().all(|c| c.is_ascii_digit() || matches!(c, '+' | '*' | '#' | '-'));
                if !ok {
                    return Err(VoiceError::new(ErrorCode::MalformedRequest, format!("<Number> {n:?}")));
                }
                let trunk = self.cfg.trunks.iter().find(|t| t.uri.is_some()).ok_or_else(|| {
                    VoiceError::new(ErrorCode::ServiceUnavailable, "no trunk with a uri to carry <Number>")
                })?;
                let mut uri =
                    trunk.uri.clone().ok_or_else(|| VoiceError::from_kind(ErrorCode::ServiceUnavailable))?;
                uri.user = Some(n.replace('-', ""));
                Ok(OutTarget {
                    uri,
                    credentials: trunk.outbound_credentials.clone(),
                    tls_ca_file: trunk.tls_ca_file.clone(),
                })
            }
            DialTarget::Sip(s) => {
                let uri = Uri::parse(s)
                    .map_err(|e| VoiceError::new(ErrorCode::MalformedRequest, format!("<Sip> {s:?}: {e}")))?;
                let trunk =
                    self.cfg.trunks.iter().find(|t| t.uri.as_ref().is_some_and(|tu| same_place(tu, &uri)));
                Ok(OutTarget {
                    credentials: trunk.and_then(|t| t.outbound_credentials.clone()),
                    tls_ca_file: trunk.and_then(|t| t.tls_ca_file.clone()),
                    uri,
                })
            }
            DialTarget::Client { identity, .. } => Err(VoiceError::new(
                ErrorCode::MalformedRequest,
                format!("client:{identity} is not a SIP target"),
            )),
        }
    }

    /// Calls one `<Sip>`/`<Number>` target: at once on an open flow, else after the
    /// connection is made (`HubMsg::Outbound`).
    fn start_outbound(&mut self, sid: &str, target: OutTarget, now: Instant) {
        let key = format!(
            "{}:{}:{:?};{:?}",
            target.uri.scheme,
            target.uri.host,
            target.uri.port,
            target.uri.params.get("transport")
        );
        if let Some(flow) = self.outbound_flows.get(&key).copied().filter(|f| self.flows.contains_key(f)) {
            return self.invite_outbound(sid, flow, &target, now);
        }
        let Some(b) = self.bridges.get_mut(sid) else { return };
        b.connecting += 1;
        let (sid, child_sid, inbox, udp) =
            (sid.to_owned(), b.child_sid.clone(), self.cfg.inbox.clone(), self.cfg.udp.clone());
        tokio::spawn(async move {
            let result = connect_outbound(&target, udp, inbox.clone()).await;
            let _ = inbox.send(HubMsg::Outbound { sid, child_sid, key, target, result });
        });
    }

    async fn on_outbound(
        &mut self,
        sid: &str,
        child_sid: &str,
        key: String,
        target: &OutTarget,
        result: Result<FlowId, VoiceError>,
        now: Instant,
    ) {
        if let Ok(flow) = &result {
            self.outbound_flows.insert(key, *flow);
        }
        let Some(b) = self.bridges.get_mut(sid) else { return };
        if b.child_sid != child_sid || b.answered.is_some() {
            return;
        }
        b.connecting = b.connecting.saturating_sub(1);
        match result {
            Ok(flow) => self.invite_outbound(sid, flow, target, now),
            Err(e) => {
                tracing::warn!(call_sid = %sid, target = %target.uri, error = %e, "cannot reach a SIP target");
                if b.callees.is_empty() && b.connecting == 0 && b.pushed.is_empty() {
                    self.dial_failed(sid, 503, "Service Unavailable", Some(&e), "failed").await;
                }
            }
        }
    }

    fn invite_outbound(&mut self, sid: &str, flow: FlowId, target: &OutTarget, now: Instant) {
        let Some(b) = self.bridges.get(sid) else { return };
        let (offer, child_sid) = (b.offer.clone(), b.child_sid.clone());
        let from = b
            .dial_from
            .clone()
            .unwrap_or_else(|| NameAddr::new(Uri::sip(Some("anonymous"), &self.cfg.domain)));
        let Some(ua) = self.ua(flow) else { return };
        let c = ua.invite_from(from, target.uri.clone(), &offer, &[(wire::CALL_SID_HEADER, child_sid)], now);
        if let Some((u, p)) = &target.credentials {
            ua.set_call_credentials(c, u, p);
        }
        self.legs.insert((flow, c), (sid.to_owned(), Role::Callee));
        if let Some(b) = self.bridges.get_mut(sid) {
            b.callees.push(Leg { flow, call: c, client: false });
        }
    }

    // ------------------------------------------------------------------ calls

    async fn on_invite(&mut self, flow: FlowId, call: CallId, request: Message, now: Instant) {
        let remote = self.flows.get(&flow).map(|f| f.remote.ip());
        let reject = |hub: &mut Hub, status: u16, e: &VoiceError| {
            let headers = [(wire::ERROR_HEADER, wire::error_header(e))];
            if let Some(ua) = hub.ua(flow) {
                ua.reject_with_headers(call, status, None, &headers, now);
            }
        };
        if let Some(why) = self.overload() {
            return self.shed_call(flow, call, &why, now);
        }
        // Who is calling: a token's identity, or a trusted trunk.
        let mut app_sid = None;
        let mut by_token = false;
        let caller = match Self::bearer(&request).map(|t| token::verify(&self.cfg.account, t)) {
            Some(Ok(claims)) => {
                app_sid = claims
                    .grants
                    .voice
                    .as_ref()
                    .and_then(|v| v.outgoing.as_ref())
                    .and_then(|o| o.application_sid.clone());
                let identity = claims.grants.identity.unwrap_or_default();
                if user_of(request.header("From")).as_deref() != Some(identity.as_str()) {
                    let e = VoiceError::new(
                        ErrorCode::AccessTokenGrantsInvalid,
                        "From is not the token's identity",
                    );
                    return reject(self, 403, &e);
                }
                by_token = true;
                format!("client:{identity}")
            }
            Some(Err(e)) => return reject(self, 403, &e),
            // The same answers whatever identity the request names.
            None => match self.trunk_caller(remote, &request) {
                TrunkAuth::Trunk(name) => {
                    tracing::debug!(trunk = %name, "a call from a trunk");
                    wire::party(request.header("From"), &self.cfg.domain)
                        .unwrap_or_else(|| "anonymous".into())
                }
                TrunkAuth::Challenge => {
                    let e = VoiceError::new(ErrorCode::AuthenticationFailed, "digest credentials required");
                    let challenge = Challenge {
                        realm: REALM.to_owned(),
                        nonce: nonce(&self.cfg.account.api_key_secret, unix_secs()),
                        opaque: None,
                        algorithm: Algorithm::Md5,
                        qop_auth: true,
                    };
                    let headers = [
                        ("WWW-Authenticate", challenge.to_header()),
                        (wire::ERROR_HEADER, wire::error_header(&e)),
                    ];
                    if let Some(ua) = self.ua(flow) {
                        ua.reject_with_headers(call, 401, Some("Unauthorized"), &headers, now);
                    }
                    return;
                }
                TrunkAuth::Refused => {
                    let e = VoiceError::new(ErrorCode::Forbidden, "not authorized");
                    return reject(self, 403, &e);
                }
            },
        };
        let app = self.application(app_sid.as_deref());
        let target = Uri::parse(request.uri()).ok().and_then(|u| u.user).unwrap_or_default();
        let target = target.strip_prefix("client:").unwrap_or(&target).to_owned();
        if app.is_none() && !wire::is_valid_identity(&target) {
            let e = VoiceError::new(ErrorCode::InvalidClientName, format!("{target:?} is not a client name"));
            return reject(self, 404, &e);
        }
        let params = match request.header(wire::PARAMS_HEADER) {
            Some(q) => match dialtone_core::push::parse_custom_parameters(q) {
                Ok(p) => p,
                Err(e) => return reject(self, 400, &e),
            },
            None => Default::default(),
        };
        let sid = new_sid("CA");
        if let Some(ua) = self.ua(flow) {
            ua.set_response_headers(call, &[(wire::CALL_SID_HEADER, sid.clone())]);
        }
        let to = if wire::is_valid_identity(&target) { format!("client:{target}") } else { target.clone() };
        self.record_leg(&sid, None, &caller, &to, "inbound");
        self.legs.insert((flow, call), (sid.clone(), Role::Caller));
        self.bridges.insert(
            sid.clone(),
            Bridge {
                sid: sid.clone(),
                child_sid: new_sid("CA"),
                caller: Leg { flow, call, client: caller.starts_with("client:") && by_token },
                callees: Vec::new(),
                answered: None,
                rang: false,
                // Set when dialing starts; routing itself is bounded by the voice URL's timeout.
                ring_deadline: now + Duration::from_secs(24 * 3600),
                reoffer_from: None,
                messages: VecDeque::new(),
                last_failure: None,
                caller_party: caller.clone(),
                offer: String::from_utf8_lossy(&request.body).into_owned(),
                dial_from: None,
                pushed: Vec::new(),
                connecting: 0,
                caller_answered: false,
                answered_at: None,
                action: None,
                rest: VecDeque::new(),
                voice_url: app.as_ref().and_then(|a| a.voice_url.clone()),
                to: to.clone(),
            },
        );
        tracing::info!(call_sid = %sid, %caller, %to, app = ?app.as_ref().map(|a| a.sid.clone()), "incoming call");
        match app {
            // The development routing: <Dial><Client>NAME</Client></Dial>, with the
            // caller's parameters passed on.
            None => {
                let dial = twiml::Dial {
                    targets: vec![DialTarget::Client { identity: target, params }],
                    ..Default::default()
                };
                self.run_verbs(&sid, VecDeque::from([Verb::Dial(dial)])).await;
            }
            Some(app) => match (&app.twiml, &app.voice_url) {
                (Some(doc), _) => match twiml::parse(doc) {
                    Ok(verbs) => self.run_verbs(&sid, verbs.into()).await,
                    Err(e) => self.fail_bridge(&sid, 500, "Application Error", Some(&e), "failed").await,
                },
                (None, Some(url)) => {
                    let mut form = vec![
                        ("CallSid".to_owned(), sid.clone()),
                        ("AccountSid".to_owned(), self.cfg.account.account_sid.clone()),
                        ("From".to_owned(), caller.clone()),
                        ("To".to_owned(), to.clone()),
                        ("Direction".to_owned(), "inbound".to_owned()),
                    ];
                    form.extend(params);
                    let (url, inbox, sid) = (url.clone(), self.cfg.inbox.clone(), sid.clone());
                    tokio::spawn(async move {
                        let r = twiml::post_form(&url, &form).await;
                        let _ = inbox.send(HubMsg::Routed(sid, r));
                    });
                }
                (None, None) => {
                    let e = VoiceError::new(
                        ErrorCode::ApplicationNotFound,
                        format!("application {} has no voice_url or twiml", app.sid),
                    );
                    self.fail_bridge(&sid, 500, "Application Error", Some(&e), "failed").await;
                }
            },
        }
    }

    /// The application a call runs: the token's, else the only one configured.
    fn application(&self, sid: Option<&str>) -> Option<ApplicationConfig> {
        match sid {
            Some(s) => self.cfg.applications.iter().find(|a| a.sid == s).cloned(),
            None if self.cfg.applications.len() == 1 => self.cfg.applications.first().cloned(),
            None => None,
        }
    }

    /// Runs a call's verbs in order until one dials, rejects, hangs up or pauses.
    async fn run_verbs(&mut self, sid: &str, mut verbs: VecDeque<Verb>) {
        if !self.bridges.contains_key(sid) {
            return;
        }
        // Every verb but a pause ends this run; a pause continues it later.
        if let Some(v) = verbs.pop_front() {
            match v {
                Verb::Pause { length } => {
                    let (inbox, sid) = (self.cfg.inbox.clone(), sid.to_owned());
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(u64::from(length))).await;
                        let _ = inbox.send(HubMsg::Resume(sid, verbs));
                    });
                    return;
                }
                Verb::Reject { reason } => {
                    let (status, text, kind) = if reason.eq_ignore_ascii_case("busy") {
                        (486, "Busy Here", ErrorCode::BusyHere)
                    } else {
                        (603, "Decline", ErrorCode::Decline)
                    };
                    let e = VoiceError::new(kind, format!("the application rejected the call ({reason})"));
                    return self
                        .fail_bridge(
                            sid,
                            status,
                            text,
                            Some(&e),
                            if status == 486 { "busy" } else { "canceled" },
                        )
                        .await;
                }
                Verb::Hangup => {
                    let e = VoiceError::new(ErrorCode::Decline, "the application hung up");
                    return self.fail_bridge(sid, 603, "Decline", Some(&e), "completed").await;
                }
                Verb::Dial(d) => {
                    let action = match d.action.as_deref().map(|a| self.resolve_action(sid, a)).transpose() {
                        Ok(a) => a,
                        Err(e) => {
                            return self.fail_bridge(sid, 500, "Application Error", Some(&e), "failed").await
                        }
                    };
                    if let Some(b) = self.bridges.get_mut(sid) {
                        b.rest = verbs;
                        b.action = action;
                    }
                    return self.dial(sid, d).await;
                }
            }
        }
        let e = VoiceError::new(ErrorCode::Decline, "the application's TwiML ended without dialing");
        self.fail_bridge(sid, 603, "Decline", Some(&e), "completed").await;
    }

    /// Rings every registered device of every `<Client>` of a `<Dial>`, in parallel.
    async fn dial(&mut self, sid: &str, d: twiml::Dial) {
        let now = Instant::now();
        let Some(b) = self.bridges.get(sid) else { return };
        if b.caller_answered {
            // Bridging a connected caller to a new callee needs a re-offer toward the
            // caller; not built yet.
            let e = VoiceError::new(ErrorCode::Decline, "a <Dial> after a connected call is not supported");
            tracing::warn!(call_sid = %sid, "{}", e.message());
            return self.fail_bridge(sid, 603, "Decline", Some(&e), "completed").await;
        }
        let (child_sid, caller, offer) = (b.child_sid.clone(), b.caller_party.clone(), b.offer.clone());
        let from_user = match &d.caller_id {
            Some(id) => Some(id.strip_prefix("client:").unwrap_or(id).to_owned()),
            None => caller.strip_prefix("client:").map(str::to_owned),
        };
        let from = match from_user {
            Some(u) => NameAddr::new(Uri::sip(Some(&u), &self.cfg.domain)),
            None => NameAddr::parse(&caller)
                .unwrap_or_else(|_| NameAddr::new(Uri::sip(Some("anonymous"), "anonymous.invalid"))),
        };
        let mut callees = Vec::new();
        let mut pushed = Vec::new();
        let mut first_to = None;
        let mut outbound = Vec::new();
        let mut target_error = None;
        for t in &d.targets {
            let DialTarget::Client { identity, params } = t else {
                first_to.get_or_insert_with(|| match t {
                    DialTarget::Number(n) => n.clone(),
                    DialTarget::Sip(u) => u.clone(),
                    DialTarget::Client { identity, .. } => format!("client:{identity}"),
                });
                match self.out_target(t) {
                    Ok(o) => outbound.push(o),
                    Err(e) => {
                        tracing::warn!(call_sid = %sid, target = ?t, error = %e, "cannot dial");
                        target_error = Some(e);
                    }
                }
                continue;
            };
            first_to.get_or_insert_with(|| format!("client:{identity}"));
            let devices: Vec<(FlowId, Uri)> = self
                .registrar
                .get(identity)
                .map(|v| {
                    v.iter()
                        .rev()
                        .filter(|b| b.expires_at > now)
                        .map(|b| (b.flow, b.contact.clone()))
                        .collect()
                })
                .unwrap_or_default();
            let mut extra = vec![(wire::CALL_SID_HEADER, child_sid.clone())];
            if !params.is_empty() {
                extra.push((wire::PARAMS_HEADER, wire::params_header(params)));
            }
            if devices.is_empty() {
                // Not connected: wake its devices by push, and ring them when they
                // register with the bridge token.
                let bindings = self.store.bindings(Some(identity)).await.unwrap_or_default();
                if !bindings.is_empty() {
                    let token =
                        crate::push::bridge_token(&self.cfg.account.api_key_secret, &child_sid, identity);
                    for b in &bindings {
                        let body = crate::push::payload(
                            dialtone_core::push::MESSAGE_TYPE_CALL,
                            b,
                            &child_sid,
                            &caller,
                            &self.cfg.account.account_sid,
                            Some(&token),
                            &wire::params_header(params),
                        );
                        let url = b.gateway_url.clone();
                        tokio::spawn(async move { crate::push::post_json(&url, &body).await });
                    }
                    tracing::info!(call_sid = %sid, %identity, bindings = bindings.len(), "pushed");
                    pushed.push((identity.clone(), params.clone(), bindings));
                }
            }
            for (f, contact) in devices {
                if let Some(ua) = self.ua(f) {
                    let c = ua.invite_from(from.clone(), contact, &offer, &extra, now);
                    callees.push(Leg { flow: f, call: c, client: true });
                }
            }
        }
        for l in &callees {
            self.legs.insert((l.flow, l.call), (sid.to_owned(), Role::Callee));
        }
        let timeout = d.timeout.map_or(self.cfg.ring_timeout, |t| Duration::from_secs(u64::from(t.max(1))));
        let to = first_to.unwrap_or_else(|| "nobody".into());
        if let Some(b) = self.bridges.get_mut(sid) {
            b.callees = callees;
            b.ring_deadline = now + timeout;
            self.ring_timers.push(Reverse((b.ring_deadline, sid.to_owned())));
            b.dial_from = Some(from.clone());
            b.pushed = pushed;
        }
        for o in outbound {
            self.start_outbound(sid, o, now);
        }
        let empty = self
            .bridges
            .get(sid)
            .is_none_or(|b| b.callees.is_empty() && b.pushed.is_empty() && b.connecting == 0);
        if empty {
            return match target_error {
                Some(e) => {
                    let status = if e.kind() == ErrorCode::MalformedRequest { 500 } else { 503 };
                    self.dial_failed(sid, status, "Service Unavailable", Some(&e), "failed").await
                }
                None => {
                    let e = VoiceError::new(
                        ErrorCode::TemporarilyUnavailable,
                        format!("{to} has no registered device"),
                    );
                    self.dial_failed(sid, 480, "Temporarily Unavailable", Some(&e), "failed").await
                }
            };
        }
        self.record_leg(&child_sid, Some(sid), &caller, &to, "outbound-dial");
    }

    async fn on_answered(&mut self, flow: FlowId, call: CallId, response: &Message, now: Instant) {
        let Some((sid, Role::Callee)) = self.legs.get(&(flow, call)).cloned() else {
            // An answer for a leg we already gave up on: hang it up.
            if let Some(ua) = self.ua(flow) {
                ua.hangup(call, now);
            }
            return;
        };
        let Some(b) = self.bridges.get_mut(&sid) else { return };
        let Some(i) = b.callees.iter().position(|l| l.flow == flow && l.call == call) else { return };
        b.answered = Some(i);
        b.caller_answered = true;
        b.answered_at = Some(now);
        let (cf, cc, child_sid) = (b.caller.flow, b.caller.call, b.child_sid.clone());
        let sdp = String::from_utf8_lossy(&response.body).into_owned();
        if let Some(ua) = self.ua(cf) {
            ua.answer(cc, &sdp, now);
        }
        self.cancel_callees(&sid, Some(i), now);
        let at = now_ms();
        for s in [&sid, &child_sid] {
            self.records.answered(s, at);
        }
    }

    /// CANCELs every unanswered device leg but `keep`, telling them why when another
    /// device answered.
    fn cancel_callees(&mut self, sid: &str, keep: Option<usize>, now: Instant) {
        let Some(b) = self.bridges.get_mut(sid) else { return };
        let legs: Vec<(usize, FlowId, CallId)> = b
            .callees
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != keep)
            .map(|(i, l)| (i, l.flow, l.call))
            .collect();
        for (_, f, c) in &legs {
            self.legs.remove(&(*f, *c));
            if let Some(ua) = self.ua(*f) {
                match keep {
                    Some(_) => {
                        ua.cancel_with_reason(*c, "SIP;cause=200;text=\"Call completed elsewhere\"", now)
                    }
                    None => ua.hangup(*c, now),
                }
            }
        }
        if let Some(b) = self.bridges.get_mut(sid) {
            if let Some(k) = keep {
                let kept = b.callees.swap_remove(k);
                b.callees = vec![kept];
                b.answered = Some(0);
            } else {
                b.callees.clear();
            }
        }
    }

    /// Why a new call is to be refused now, if it is: the inbox is slow or the record
    /// writer is behind.
    fn overload(&self) -> Option<String> {
        if self.inbox_delay > self.cfg.overload_delay {
            return Some(format!("the INVITE waited {} ms to be read", self.inbox_delay.as_millis()));
        }
        self.records.overloaded().map(|b| format!("{} call-record changes wait for the disk", b.backlog))
    }

    /// Refuses a new call for overload: 503 with Retry-After. The transaction absorbs
    /// the caller's retransmissions; a warning says how many were refused, once a second.
    fn shed_call(&mut self, flow: FlowId, call: CallId, why: &str, now: Instant) {
        let e = VoiceError::new(ErrorCode::ServiceUnavailable, format!("the server is overloaded: {why}"));
        let headers = [
            ("Retry-After", self.cfg.retry_after_secs.to_string()),
            (wire::ERROR_HEADER, wire::error_header(&e)),
        ];
        if let Some(ua) = self.ua(flow) {
            ua.reject_with_headers(call, 503, Some("Service Unavailable"), &headers, now);
        }
        self.shed.0 += 1;
        if self.shed.1.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
            tracing::warn!(refused = self.shed.0, reason = %why, "overloaded: new calls get 503");
            self.shed = (0, Some(now));
        }
    }

    /// Records a new, ringing leg.
    fn record_leg(&self, sid: &str, parent: Option<&str>, from: &str, to: &str, direction: &str) {
        let rec = CallRecord {
            sid: sid.to_owned(),
            parent_sid: parent.map(str::to_owned),
            account_sid: self.cfg.account.account_sid.clone(),
            from: from.to_owned(),
            to: to.to_owned(),
            direction: direction.to_owned(),
            status: "ringing".to_owned(),
            start_time: now_ms(),
            answer_time: None,
            end_time: None,
            duration: None,
            end_cause: None,
        };
        self.records.insert_call(rec);
    }

    /// A dial ended without an answer: the call goes on with the `<Dial action>`'s
    /// TwiML or the verbs after the `<Dial>`, else fails with `status`.
    async fn dial_failed(
        &mut self,
        sid: &str,
        status: u16,
        reason: &str,
        e: Option<&VoiceError>,
        outcome: &str,
    ) {
        let dial_status = match status {
            486 | 600 | 603 => "busy",
            408 | 480 => "no-answer",
            _ => "failed",
        };
        let cause = cause(e, || format!("SIP {status} {reason}"));
        self.cancel_callees(sid, None, Instant::now());
        if self.continue_after_dial(sid, dial_status, &cause).await {
            return;
        }
        self.fail_bridge(sid, status, reason, e, outcome).await;
    }

    /// After a dial ends, runs what follows it: the action URL (POSTed the dial's
    /// outcome; its TwiML runs next) or the verbs after `<Dial>`. False when neither
    /// exists. The dialed leg's record ends with `dial_status`.
    async fn continue_after_dial(&mut self, sid: &str, dial_status: &str, cause: &str) -> bool {
        let now = Instant::now();
        let account = self.cfg.account.account_sid.clone();
        let Some(b) = self.bridges.get_mut(sid) else { return false };
        if b.action.is_none() && b.rest.is_empty() {
            return false;
        }
        let old_child = std::mem::replace(&mut b.child_sid, new_sid("CA"));
        let duration = b.answered_at.take().map_or(0, |t| now.duration_since(t).as_secs());
        b.callees.clear();
        b.answered = None;
        b.pushed.clear();
        b.connecting = 0;
        b.reoffer_from = None;
        b.ring_deadline = now + Duration::from_secs(24 * 3600);
        let (action, rest) = (b.action.take(), std::mem::take(&mut b.rest));
        let form = vec![
            ("CallSid".to_owned(), sid.to_owned()),
            ("AccountSid".to_owned(), account),
            ("From".to_owned(), b.caller_party.clone()),
            ("To".to_owned(), b.to.clone()),
            ("Direction".to_owned(), "inbound".to_owned()),
            ("DialCallStatus".to_owned(), dial_status.to_owned()),
            ("DialCallSid".to_owned(), old_child.clone()),
            ("DialCallDuration".to_owned(), duration.to_string()),
        ];
        self.records.ended(&old_child, dial_status, cause, now_ms());
        let (inbox, sid) = (self.cfg.inbox.clone(), sid.to_owned());
        match action {
            Some(url) => {
                tracing::info!(call_sid = %sid, %url, dial_status, "dial ended; fetching its action");
                tokio::spawn(async move {
                    let r = twiml::post_form(&url, &form).await;
                    let _ = inbox.send(HubMsg::Routed(sid, r));
                });
            }
            None => {
                let _ = inbox.send(HubMsg::Resume(sid, rest));
            }
        }
        true
    }

    /// An action URL: absolute, or relative to the application's voice URL.
    fn resolve_action(&self, sid: &str, action: &str) -> Result<String, VoiceError> {
        if action.starts_with("http://") {
            return Ok(action.to_owned());
        }
        let base = self.bridges.get(sid).and_then(|b| b.voice_url.clone()).ok_or_else(|| {
            VoiceError::new(
                ErrorCode::MalformedRequest,
                format!("bad TwiML: <Dial action={action:?}> needs an http:// URL (no voice URL to resolve it against)"),
            )
        })?;
        let rest = base.strip_prefix("http://").unwrap_or(&base);
        let authority = rest.split('/').next().unwrap_or("");
        Ok(if action.starts_with('/') {
            format!("http://{authority}{action}")
        } else {
            let dir = base.rsplit_once('/').map_or(base.as_str(), |(d, _)| d);
            let dir =
                if dir.len() <= "http:/".len() { format!("http://{authority}") } else { dir.to_owned() };
            format!("{dir}/{action}")
        })
    }

    /// Fails an unanswered call: the caller gets `status`, every device a CANCEL.
    async fn fail_bridge(
        &mut self,
        sid: &str,
        status: u16,
        reason: &str,
        e: Option<&VoiceError>,
        outcome: &str,
    ) {
        let now = Instant::now();
        self.cancel_callees(sid, None, now);
        let Some(b) = self.bridges.get(sid) else { return };
        let (f, c) = (b.caller.flow, b.caller.call);
        self.legs.remove(&(f, c));
        let caller_answered = b.caller_answered;
        let headers: Vec<(&str, String)> =
            e.map(|e| (wire::ERROR_HEADER, wire::error_header(e))).into_iter().collect();
        if let Some(ua) = self.ua(f) {
            if caller_answered {
                ua.hangup(c, now);
            } else {
                ua.reject_with_headers(c, status, Some(reason), &headers, now);
            }
        }
        let cause = cause(e, || format!("SIP {status} {reason}"));
        self.finish(sid, outcome, &cause).await;
    }

    /// Ends an answered (or failing) call from one side: the other side hears BYE.
    async fn end_bridge(&mut self, sid: &str, from: Option<Role>, e: Option<&VoiceError>, outcome: &str) {
        let now = Instant::now();
        let Some(b) = self.bridges.get(sid) else { return };
        if from == Some(Role::Callee) && b.answered.is_some() {
            let cause = cause(e, || "hangup-by-callee".to_owned());
            if self.continue_after_dial(sid, "completed", &cause).await {
                return;
            }
        }
        let Some(b) = self.bridges.get(sid) else { return };
        let answered = b.answered.and_then(|i| b.callees.get(i)).map(|l| (l.flow, l.call));
        let caller = (b.caller.flow, b.caller.call);
        if answered.is_none() {
            // Not answered yet: the caller's side went away.
            self.cancel_callees(sid, None, now);
        }
        for (role, leg) in [(Role::Caller, Some(caller)), (Role::Callee, answered)] {
            let Some((f, c)) = leg else { continue };
            self.legs.remove(&(f, c));
            if from != Some(role) {
                if let Some(ua) = self.ua(f) {
                    ua.hangup(c, now);
                }
            }
        }
        let why = cause(e, || {
            if from == Some(Role::Caller) { "hangup-by-caller" } else { "hangup-by-callee" }.to_owned()
        });
        self.finish(sid, outcome, &why).await;
    }

    async fn finish(&mut self, sid: &str, outcome: &str, cause: &str) {
        let Some(b) = self.bridges.remove(sid) else { return };
        if b.answered.is_none() {
            // The invitee's app hears the hang-up as a cancelled invite.
            for (_, _, bindings) in &b.pushed {
                for binding in bindings {
                    let body = crate::push::payload(
                        dialtone_core::push::MESSAGE_TYPE_CANCEL,
                        binding,
                        &b.child_sid,
                        &b.caller_party,
                        &self.cfg.account.account_sid,
                        None,
                        "",
                    );
                    let url = binding.gateway_url.clone();
                    tokio::spawn(async move { crate::push::post_json(&url, &body).await });
                }
            }
        }
        for l in &b.callees {
            self.legs.remove(&(l.flow, l.call));
        }
        self.legs.remove(&(b.caller.flow, b.caller.call));
        let at = now_ms();
        for s in [&b.sid, &b.child_sid] {
            self.records.ended(s, outcome, cause, at);
        }
        tracing::info!(call_sid = %sid, outcome, cause, "call ended");
    }

    // ------------------------------------------------------------------ call messages

    fn on_info(&mut self, flow: FlowId, call: CallId, tx: ServerTxKey, request: Message, now: Instant) {
        let refuse = |hub: &mut Hub, status: u16, e: VoiceError| {
            let r = with_error(response_to(&request, status, None), &e);
            if let Some(ua) = hub.ua(flow) {
                ua.respond(&tx, r, now);
            }
        };
        let Some((sid, role)) = self.legs.get(&(flow, call)).cloned() else {
            return refuse(self, 481, VoiceError::from_kind(ErrorCode::CallTransactionDoesNotExist));
        };
        let is_message = request.header(wire::MESSAGE_TYPE_HEADER).is_some();
        if is_message {
            let kind = request.header(wire::MESSAGE_TYPE_HEADER).unwrap_or("").trim();
            if kind != "user-defined-message" {
                return refuse(
                    self,
                    400,
                    VoiceError::new(ErrorCode::CallMessageTypeInvalid, format!("message type {kind:?}")),
                );
            }
            if request.body.len() > MAX_MESSAGE_BYTES {
                return refuse(
                    self,
                    413,
                    VoiceError::new(ErrorCode::PayloadSizeExceeded, "a call message is at most 10 KB"),
                );
            }
            let ct = request.header("Content-Type").unwrap_or("").trim().to_ascii_lowercase();
            if ct.starts_with("application/json")
                && serde_json::from_slice::<serde_json::Value>(&request.body).is_err()
            {
                return refuse(
                    self,
                    400,
                    VoiceError::new(ErrorCode::MalformedRequest, "the content is not the JSON its type says"),
                );
            }
        }
        let other = self.other_leg(&sid, role);
        if other.is_none() {
            return refuse(
                self,
                481,
                VoiceError::new(ErrorCode::CallMessageUnexpectedState, "the call is not connected"),
            );
        }
        if is_message {
            if let Err(e) = self.bridges.get_mut(&sid).map_or(Ok(()), |b| admit_message(b, now)) {
                return refuse(self, 429, e);
            }
        }
        if let Some(ua) = self.ua(flow) {
            ua.respond(&tx, response_to(&request, 200, None), now);
        }
        let ct = request.header("Content-Type").unwrap_or("text/plain").to_owned();
        if is_message {
            // Subscriptions on the sending leg hear every message it sends.
            let leg_sid = match (role, self.bridges.get(&sid)) {
                (Role::Caller, _) => sid.clone(),
                (Role::Callee, Some(b)) => b.child_sid.clone(),
                (Role::Callee, None) => sid.clone(),
            };
            let message_sid =
                request.header(wire::EVENT_SID_HEADER).map_or_else(|| new_sid("KX"), |v| v.trim().to_owned());
            let content = String::from_utf8_lossy(&request.body).into_owned();
            let (store, account) = (self.store.clone(), self.cfg.account.account_sid.clone());
            tokio::spawn(deliver_to_subscriptions(store, account, leg_sid, message_sid, ct.clone(), content));
        }
        // DTMF INFO goes to any peer; call messages only to Dialtone clients.
        let Some((f, c, client)) = other else { return };
        if is_message && !client {
            return;
        }
        let extra: Vec<(&str, String)> = [wire::MESSAGE_TYPE_HEADER, wire::EVENT_SID_HEADER]
            .into_iter()
            .filter_map(|h| request.header(h).map(|v| (h, v.to_owned())))
            .collect();
        if let Some(ua) = self.ua(f) {
            ua.info(c, &ct, &extra, &request.body, now);
        }
    }

    /// A call message from the REST API to the client on the leg `call_sid`.
    fn send_message(&mut self, call_sid: &str, content: &str, now: Instant) -> Result<String, VoiceError> {
        crate::http::check_message(content)?;
        let b = self
            .bridges
            .values_mut()
            .find(|b| b.sid == call_sid || b.child_sid == call_sid)
            .ok_or_else(|| VoiceError::new(ErrorCode::NotFound, format!("no live call {call_sid}")))?;
        let leg = if b.sid == call_sid { Some(&b.caller) } else { b.answered.and_then(|i| b.callees.get(i)) };
        let (flow, call) = match leg {
            Some(l) if l.client => (l.flow, l.call),
            Some(_) => {
                return Err(VoiceError::new(
                    ErrorCode::CallMessageUnexpectedState,
                    "that leg is not a Dialtone client",
                ))
            }
            None => {
                return Err(VoiceError::new(
                    ErrorCode::CallMessageUnexpectedState,
                    "the call is not connected",
                ))
            }
        };
        if b.answered.is_none() {
            return Err(VoiceError::new(ErrorCode::CallMessageUnexpectedState, "the call is not connected"));
        }
        admit_message(b, now)?;
        let sid = new_sid("KX");
        let extra = [
            (wire::MESSAGE_TYPE_HEADER, "user-defined-message".to_owned()),
            (wire::EVENT_SID_HEADER, sid.clone()),
        ];
        let ua = self.ua(flow).ok_or_else(|| {
            VoiceError::new(ErrorCode::CallMessageUnexpectedState, "the client is reconnecting")
        })?;
        ua.info(call, "application/json", &extra, content.as_bytes(), now);
        Ok(sid)
    }
}

/// Counts a call message against the call's limit of 10 a minute.
fn admit_message(b: &mut Bridge, now: Instant) -> Result<(), VoiceError> {
    while b.messages.front().is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60)) {
        b.messages.pop_front();
    }
    if b.messages.len() >= MESSAGES_PER_MINUTE {
        return Err(VoiceError::new(ErrorCode::RateExceeded, "at most 10 call messages a minute"));
    }
    b.messages.push_back(now);
    Ok(())
}

/// POSTs a call message to every subscription of the leg that sent it.
async fn deliver_to_subscriptions(
    store: Store,
    account: String,
    leg_sid: String,
    message_sid: String,
    content_type: String,
    content: String,
) {
    let subs = match store.subscriptions(&leg_sid).await {
        Ok(s) => s,
        Err(e) => return tracing::error!(error = %e, "cannot read message subscriptions"),
    };
    for sub in subs {
        let form = vec![
            ("AccountSid".to_owned(), account.clone()),
            ("CallSid".to_owned(), leg_sid.clone()),
            ("Sid".to_owned(), message_sid.clone()),
            ("ContentType".to_owned(), content_type.clone()),
            ("Content".to_owned(), content.clone()),
            ("Timestamp".to_owned(), crate::store::now_ms().to_string()),
        ];
        if let Err(e) = twiml::post_form(&sub.callback, &form).await {
            tracing::warn!(subscription = %sub.sid, error = %e, "a message callback failed");
        }
    }
}

/// Why a leg ended, for its record: the error's code and text, else `otherwise`.
fn cause(e: Option<&VoiceError>, otherwise: impl FnOnce() -> String) -> String {
    e.map_or_else(otherwise, |e| format!("{} {}", e.code(), e.message()))
}

/// How a request without a token fares.
enum TrunkAuth {
    /// It is this trunk's.
    Trunk(String),
    /// Ask for digest credentials (none given, or a stale nonce).
    Challenge,
    /// Not authorized.
    Refused,
}

/// A digest nonce for the second `secs`: the time and an HMAC over it, so that the
/// server keeps no state and nobody without the key can make one.
fn nonce(secret: &str, secs: u64) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, format!("digest-nonce:{secs}").as_bytes());
    let hex: String = tag.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{secs:x}.{hex}")
}

/// Whether `n` is a nonce of ours, at most `NONCE_SECS` old at `now`.
fn nonce_ok(secret: &str, n: &str, now: u64) -> bool {
    let Some(secs) = n.split_once('.').and_then(|(t, _)| u64::from_str_radix(t, 16).ok()) else {
        return false;
    };
    let want = nonce(secret, secs);
    // Constant time over the expected length.
    let same =
        want.len() == n.len() && want.bytes().zip(n.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
    secs <= now + 5 && now.saturating_sub(secs) <= NONCE_SECS && same
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Opens a flow toward a SIP target: the server's own UDP socket for UDP (so the
/// peer sees the server's address), a new TCP or TLS connection otherwise.
async fn connect_outbound(
    target: &OutTarget,
    udp: Option<crate::listen::Udp>,
    hub: mpsc::UnboundedSender<HubMsg>,
) -> Result<FlowId, VoiceError> {
    use dialtone_core::parts::{SignalingTransport as _, TlsSettings, TransportTarget};
    use dialtone_transport_tcp::{parse_target, TcpTransport, Wire};
    let url = target.uri.to_string();
    let (wire, host, port) = parse_target(&url)?;
    let unreachable = |m: String| VoiceError::new(ErrorCode::ConnectionError, m);
    if wire == Wire::Udp {
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| unreachable(format!("{host}: {e}")))?
            .next()
            .ok_or_else(|| unreachable(format!("{host}: no address")))?;
        let udp = udp.ok_or_else(|| unreachable("no UDP listener".into()))?;
        return udp.flow_for(addr).ok_or_else(|| unreachable("the server is stopping".into()));
    }
    let mut tls = TlsSettings::default();
    if let Some(ca) = &target.tls_ca_file {
        tls = tls.with_ca_file(ca);
    }
    let conn = tokio::time::timeout(
        Duration::from_secs(10),
        TcpTransport::default().connect(&TransportTarget::new(url.clone()).with_tls(tls)),
    )
    .await
    .map_err(|_| unreachable(format!("{url}: no connection within 10 s")))?
    .map_err(|e| unreachable(format!("{url}: {}", e.message())))?;
    let addr = |s: &str| s.parse::<SocketAddr>().map_err(|_| unreachable(format!("bad address {s}")));
    let (local, remote) = (addr(&conn.info.local_addr)?, addr(&conn.info.remote_addr)?);
    crate::listen::attach(conn, hub, local, remote)
        .ok_or_else(|| unreachable("the server is stopping".into()))
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        let lo = parse_network("127.0.0.0/8").unwrap();
        assert!(in_network("127.1.2.3".parse().unwrap(), lo));
        assert!(!in_network("10.0.0.1".parse().unwrap(), lo));
        assert!(in_network("10.0.0.1".parse().unwrap(), parse_network("0.0.0.0/0").unwrap()));
        assert!(in_network("::1".parse().unwrap(), parse_network("::1").unwrap()));
        assert!(!in_network("::1".parse().unwrap(), lo));
        assert!(parse_network("nonsense").is_none());
    }

    #[test]
    fn nonces_are_ours_and_fresh() {
        let n = nonce("k", 1_000);
        assert!(nonce_ok("k", &n, 1_000) && nonce_ok("k", &n, 1_000 + NONCE_SECS));
        assert!(!nonce_ok("k", &n, 1_001 + NONCE_SECS), "stale");
        assert!(!nonce_ok("k", &n, 900), "from the future");
        assert!(!nonce_ok("other key", &n, 1_000), "forged");
        assert!(!nonce_ok("k", &n.replace('.', "x"), 1_000));
        assert!(!nonce_ok("k", "", 1_000) && !nonce_ok("k", "ffffffffffffffffffff.00", 1_000));
    }
}

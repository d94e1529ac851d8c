//! # dialtone-sip-agent
//!
//! The tokio shell around the sans-IO SIP core (`dialtone-sip`'s [`UserAgent`]), as
//! quinn wraps quinn-proto: a [`VoiceBackend`] that carries the Dialtone call model
//! over SIP, moving bytes between a [`SignalingTransport`] and the user agent and
//! media between the user agent and a [`MediaEngine`].
//!
//! One driver task owns the user agent and the connection's sending half. Everything
//! else reaches it as a command on a channel: the application's requests (register,
//! place a call, hang up, ...), bytes from the reader task, the results of media work
//! (offers and answers are made on spawned tasks so that the driver never waits on
//! a media engine), and the outcome of reconnection attempts. After each input it
//! sends what the user agent wants sent and maps the user agent's events onto the
//! call model (`CallLink::deliver`, `VoiceLink::incoming_invite`).
//!
//! Reconnection: when the connection drops, established calls report reconnecting
//! (53001) and keep their media; calls still being set up fail with 53001. The driver
//! reconnects with backoff, re-registers, and re-attaches every established dialog
//! with a re-INVITE over the new connection (carrying the new Contact); the answer
//! reports reconnected. After the reconnect window (30 s) the remaining calls end
//! with 53001.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use dialtone_core::parts::{
    MediaEngine, MediaEvent, MediaSession, MediaSessionConfig, SignalingConnection, SignalingSender,
    SignalingTransport, TransportTarget,
};
use dialtone_core::{
    CallCommand, CallEvent, CallLink, CallRequest, CallState, ErrorCode, InviteCommand, InviteDetails,
    InviteEvent, StatsReport, VoiceBackend, VoiceError, VoiceLink,
};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use dialtone_sip::header::Uri;
use dialtone_sip::message::Message;
use dialtone_sip::transaction::Timers;
use dialtone_sip::ua::{CallId, Flow, Transmit, UaConfig, UaEvent, UserAgent};
use dialtone_sip::wire;

/// How a [`SipAgent`] reaches its server.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AgentConfig {
    /// Where to connect (`ws://`, `wss://`, `sip:...;transport=tcp`, `sips:`, `sip:`).
    pub server: TransportTarget,
    /// The domain of our address of record (default: the server's host).
    pub domain: Option<String>,
    /// The registration lifetime asked for, in seconds.
    pub register_expires: u32,
    /// How often a keepalive goes out on an idle stream.
    pub keepalive_interval: Option<Duration>,
    /// How long a dropped connection is retried before the calls it carried end.
    pub reconnect_window: Duration,
    /// The largest SIP message accepted.
    pub max_message_size: usize,
    /// The RFC 3261 timers.
    pub timers: Timers,
}

impl AgentConfig {
    /// Defaults for a server.
    pub fn new(server: TransportTarget) -> Self {
        AgentConfig {
            server,
            domain: None,
            register_expires: 600,
            keepalive_interval: Some(Duration::from_secs(25)),
            reconnect_window: Duration::from_secs(30),
            max_message_size: dialtone_sip::message::DEFAULT_MAX_MESSAGE_SIZE,
            timers: Timers::default(),
        }
    }

    /// Sets the domain of our address of record.
    pub fn with_domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    fn domain(&self) -> String {
        if let Some(d) = &self.domain {
            return d.clone();
        }
        let url = &self.server.url;
        let rest = url.split_once("://").map(|(_, r)| r).or_else(|| url.split_once(':').map(|(_, r)| r));
        let rest = rest.unwrap_or(url);
        let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        let host = if let Some(v6) = rest.strip_prefix('[') {
            format!("[{}]", v6.split(']').next().unwrap_or(""))
        } else {
            rest.split([':', '/', ';', '?']).next().unwrap_or("").to_owned()
        };
        host
    }
}

/// Makes the media configuration (devices, codecs) for each call; the agent then
/// applies the call's options (preferred codecs, jitter buffer, DSCP, ICE) to it.
pub type MediaConfigFactory = Arc<dyn Fn() -> Result<MediaSessionConfig, VoiceError> + Send + Sync>;

/// The identity an access token names (`grants.identity`), read without verifying
/// the signature (the server verifies it).
pub fn token_identity(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("grants")?.get("identity")?.as_str().map(str::to_owned)
}

enum Cmd {
    /// The access token and the device token (empty: none).
    Register(String, String, oneshot::Sender<Result<(), VoiceError>>),
    /// The device token to unbind from push (empty: none).
    Unregister(String, oneshot::Sender<Result<(), VoiceError>>),
    Start(CallLink, CallRequest),
    Call(Uuid, CallCommand),
    Invite(String, InviteCommand),
    Received(u64, Vec<u8>),
    Closed(u64),
    Connected(Result<SignalingConnection, VoiceError>, bool),
    Offer(Uuid, Result<String, VoiceError>),
    Answer(Uuid, Result<String, VoiceError>),
    AnswerApplied(Uuid, Result<(), VoiceError>),
    Reanswer(Uuid, Option<String>),
    Media(Uuid, MediaEvent),
    /// A new offer made on our own (a failing codec left out): send it as a re-INVITE.
    Reoffer(Uuid, Result<String, VoiceError>),
    /// A renegotiation finished: report the codec if it changed.
    CodecCheck(Uuid),
    /// The reconnect window of a media loss (its number) ran out.
    MediaDeadline(Uuid, u64),
    Token(String),
    /// Try to restore a lost registration (after a reconnect window ran out).
    Retry,
    Shutdown,
}

/// What the agent knows of one call beyond its state. The call's state itself is
/// not kept here: core's [`CallState`], read through [`CallLink::state`], says whether
/// it is connecting, connected, reconnecting or over (a call the application hung up
/// is already `Disconnected`), and the user agent keeps the SIP dialog's own state.
/// What is left is facts: the SIP call, the media, what was offered.
struct CallEntry {
    link: CallLink,
    ua: Option<CallId>,
    media: Option<Arc<dyn MediaSession>>,
    target: Option<Uri>,
    extra: Vec<(&'static str, String)>,
    sid: Option<String>,
    /// The offer or answer this side sent; set when SIP starts for the call.
    local_sdp: Option<String>,
    /// Messages in flight: INFO id to voice event SID.
    messages: HashMap<u64, String>,
    /// Re-INVITE purpose: true when it re-attaches after a reconnection.
    reattaching: bool,
    /// Which media loss the reconnect window runs for (53405 reported, media not back).
    media_lost: Option<u64>,
}

impl CallEntry {
    /// A call being prepared: no SIP call and no media yet.
    fn new(link: CallLink, target: Option<Uri>, extra: Vec<(&'static str, String)>) -> CallEntry {
        CallEntry {
            link,
            ua: None,
            media: None,
            target,
            extra,
            sid: None,
            local_sdp: None,
            messages: HashMap::new(),
            reattaching: false,
            media_lost: None,
        }
    }

    /// The SIP side has started: an INVITE went out, or an incoming one was answered.
    /// Before that the call's media is still being prepared.
    fn sip_started(&self) -> Option<CallId> {
        self.ua.filter(|_| self.local_sdp.is_some())
    }

    /// The application hung up (or the call ended) while the agent still holds it.
    fn hung_up(&self) -> bool {
        self.link.state() == CallState::Disconnected
    }

    /// Connected once and not over: media is set up (it may be reconnecting).
    fn established(&self) -> bool {
        matches!(self.link.state(), CallState::Connected | CallState::Reconnecting)
    }
}

struct PendingInvite {
    ua: CallId,
    offer: String,
}

struct Shared {
    tx: mpsc::UnboundedSender<Cmd>,
    sessions: Mutex<HashMap<Uuid, Arc<dyn MediaSession>>>,
    link: Mutex<Option<VoiceLink>>,
}

/// The SIP signaling backend of a [`dialtone_core::Voice`].
pub struct SipAgent {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SipAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SipAgent").finish_non_exhaustive()
    }
}

impl Drop for SipAgent {
    fn drop(&mut self) {
        let _ = self.shared.tx.send(Cmd::Shutdown);
    }
}

impl SipAgent {
    /// An agent; its driver runs on the current tokio runtime until the agent is
    /// dropped.
    pub fn new(
        config: AgentConfig,
        transport: Arc<dyn SignalingTransport>,
        media: Arc<dyn MediaEngine>,
        media_config: MediaConfigFactory,
    ) -> Arc<SipAgent> {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared { tx, sessions: Mutex::new(HashMap::new()), link: Mutex::new(None) });
        let driver = Driver {
            domain: config.domain(),
            config,
            transport,
            media,
            media_config,
            shared: shared.clone(),
            rx,
            ua: None,
            sender: None,
            generation: 0,
            connecting: false,
            reconnect_deadline: None,
            token: None,
            registered_token: None,
            push_device: None,
            register_waiters: Vec::new(),
            unregister_waiters: Vec::new(),
            calls: HashMap::new(),
            by_ua: HashMap::new(),
            pending: HashMap::new(),
            awaiting_bridge: HashMap::new(),
            bridge_header: None,
            queued: Vec::new(),
            signaling_addrs: None,
            media_losses: 0,
            invite_messages: HashMap::new(),
        };
        tokio::spawn(driver.run());
        Arc::new(SipAgent { shared })
    }

    fn send(&self, cmd: Cmd) {
        let _ = self.shared.tx.send(cmd);
    }
}

#[async_trait]
impl VoiceBackend for SipAgent {
    fn attach(&self, link: VoiceLink) {
        *self.shared.link.lock().unwrap_or_else(|p| p.into_inner()) = Some(link);
    }

    async fn register(&self, access_token: &str, device_token: &str) -> Result<(), VoiceError> {
        if !device_token.is_empty() {
            dialtone_sip::ua::check_device_token(device_token)?;
        }
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Register(access_token.to_owned(), device_token.to_owned(), tx));
        rx.await.unwrap_or_else(|_| {
            Err(VoiceError::new(ErrorCode::SignalingConnectionError, "the agent stopped"))
        })
    }

    async fn unregister(&self, _access_token: &str, device_token: &str) -> Result<(), VoiceError> {
        if !device_token.is_empty() {
            dialtone_sip::ua::check_device_token(device_token)?;
        }
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Unregister(device_token.to_owned(), tx));
        rx.await.unwrap_or_else(|_| {
            Err(VoiceError::new(ErrorCode::SignalingConnectionError, "the agent stopped"))
        })
    }

    fn start_call(&self, link: CallLink, request: CallRequest) {
        self.send(Cmd::Start(link, request));
    }

    fn call_command(&self, call: Uuid, command: CallCommand) {
        self.send(Cmd::Call(call, command));
    }

    fn invite_command(&self, invite: &InviteDetails, command: InviteCommand) {
        self.send(Cmd::Invite(invite.call_sid.clone(), command));
    }

    fn update_token(&self, access_token: &str) {
        self.send(Cmd::Token(access_token.to_owned()));
    }

    fn stats(&self, call: Uuid) -> Option<StatsReport> {
        let s = self.shared.sessions.lock().unwrap_or_else(|p| p.into_inner()).get(&call).cloned();
        s.map(|s| s.stats())
    }
}

struct Driver {
    config: AgentConfig,
    domain: String,
    transport: Arc<dyn SignalingTransport>,
    media: Arc<dyn MediaEngine>,
    media_config: MediaConfigFactory,
    shared: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<Cmd>,
    ua: Option<UserAgent>,
    sender: Option<Box<dyn SignalingSender>>,
    generation: u64,
    connecting: bool,
    reconnect_deadline: Option<Instant>,
    token: Option<String>,
    registered_token: Option<String>,
    /// The device token the REGISTERs carry for push (RFC 8599 `pn-prid`).
    push_device: Option<String>,
    register_waiters: Vec<oneshot::Sender<Result<(), VoiceError>>>,
    unregister_waiters: Vec<oneshot::Sender<Result<(), VoiceError>>>,
    calls: HashMap<Uuid, CallEntry>,
    by_ua: HashMap<CallId, Uuid>,
    pending: HashMap<String, PendingInvite>,
    /// Accepted push invites waiting for the server to ring this device: call SID to
    /// the call and its options.
    awaiting_bridge: HashMap<String, (Uuid, dialtone_core::CallOptions)>,
    /// A bridge token to present on the first REGISTER of a new connection.
    bridge_header: Option<String>,
    /// Work waiting for a connection.
    queued: Vec<Cmd>,
    /// The local and remote addresses of the current connection (media advertises
    /// the local one).
    signaling_addrs: Option<(std::net::SocketAddr, std::net::SocketAddr)>,
    /// Media losses so far (numbers each one's deadline).
    media_losses: u64,
    /// Call messages sent from pending invites: (SIP call, INFO id) to the invite's
    /// call SID and the message's voice event SID.
    invite_messages: HashMap<(CallId, u64), (String, String)>,
}

fn conn_lost() -> VoiceError {
    VoiceError::new(ErrorCode::SignalingConnectionDisconnected, "the signaling connection dropped")
}

impl Driver {
    async fn run(mut self) {
        loop {
            let wake = self.ua.as_ref().and_then(UserAgent::poll_timeout);
            let cmd = tokio::select! {
                c = self.rx.recv() => c,
                () = sleep_until(wake) => {
                    if let Some(ua) = self.ua.as_mut() {
                        ua.handle_timeout(Instant::now());
                    }
                    self.flush().await;
                    continue;
                }
            };
            let Some(cmd) = cmd else { break };
            if matches!(cmd, Cmd::Shutdown) {
                break;
            }
            self.handle(cmd).await;
            self.flush().await;
        }
        // Dropped: hang up what is left, best effort.
        let now = Instant::now();
        if let Some(ua) = self.ua.as_mut() {
            for id in ua.calls() {
                ua.hangup(id, now);
            }
        }
        self.flush().await;
        for (_, c) in self.calls.drain() {
            if let Some(m) = c.media {
                m.close().await;
            }
        }
    }

    fn link(&self) -> Option<VoiceLink> {
        self.shared.link.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Sends what the user agent queued and handles its events.
    async fn flush(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(t) = self.ua.as_mut().and_then(UserAgent::poll_transmit) {
                progressed = true;
                let Some(sender) = self.sender.as_mut() else { continue };
                let result = match t {
                    Transmit::Message(bytes) => {
                        tracing::trace!(message = %String::from_utf8_lossy(&bytes), "SIP out");
                        sender.send(&bytes).await
                    }
                    Transmit::Keepalive => sender.keepalive().await,
                    Transmit::Pong => sender.send(b"\r\n").await,
                };
                if let Err(e) = result {
                    tracing::debug!(error = %e, "send failed; the reader will see the connection close");
                }
            }
            while let Some(e) = self.ua.as_mut().and_then(UserAgent::poll_event) {
                progressed = true;
                self.on_event(e);
            }
            if !progressed {
                return;
            }
        }
    }

    /// Starts connecting if there is no connection; queued work runs once connected.
    fn ensure_connected(&mut self, reconnect: bool) {
        if self.sender.is_some() || self.connecting {
            return;
        }
        self.connecting = true;
        let transport = self.transport.clone();
        let target = self.config.server.clone();
        let tx = self.shared.tx.clone();
        let deadline = self.reconnect_deadline;
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(250);
            loop {
                let r = transport.connect(&target).await;
                // Retry with backoff until the reconnect window closes; the last attempt
                // is made right at its end.
                let left = deadline.map_or(Duration::ZERO, |d| d.saturating_duration_since(Instant::now()));
                if !reconnect || r.is_ok() || left.is_zero() {
                    let _ = tx.send(Cmd::Connected(r, reconnect));
                    return;
                }
                let wait = delay.min(left);
                tracing::debug!(?wait, "reconnect attempt failed; retrying");
                tokio::time::sleep(wait).await;
                delay = (delay * 2).min(Duration::from_secs(4));
            }
        });
    }

    fn on_connected(&mut self, conn: SignalingConnection) {
        self.generation += 1;
        let generation = self.generation;
        let flow = Flow {
            transport: conn.info.via_transport.clone(),
            local: conn.info.local_addr.clone(),
            reliable: conn.info.reliable,
        };
        self.signaling_addrs = conn.info.local_addr.parse().ok().zip(conn.info.remote_addr.parse().ok());
        let now = Instant::now();
        match self.ua.as_mut() {
            Some(ua) => ua.set_flow(flow, now),
            None => {
                let identity =
                    self.token.as_deref().and_then(token_identity).unwrap_or_else(|| "anonymous".into());
                let mut c = UaConfig::new(identity, self.domain.clone());
                c.register_expires = self.config.register_expires;
                c.keepalive_interval = self.config.keepalive_interval;
                c.max_message_size = self.config.max_message_size;
                c.timers = self.config.timers;
                c.seed = Uuid::new_v4().as_u64_pair().0;
                let mut ua = UserAgent::new(c, flow);
                ua.set_token(self.token.clone());
                // checked when it was given
                let _ = ua.set_push_device(self.push_device.as_deref());
                self.ua = Some(ua);
            }
        }
        self.sender = Some(conn.sender);
        let mut receiver = conn.receiver;
        let tx = self.shared.tx.clone();
        tokio::spawn(async move {
            while let Some(item) = receiver.recv().await {
                match item {
                    Ok(bytes) => {
                        if tx.send(Cmd::Received(generation, bytes)).is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "signaling receive error"),
                }
            }
            let _ = tx.send(Cmd::Closed(generation));
        });
    }

    async fn handle(&mut self, cmd: Cmd) {
        let now = Instant::now();
        match cmd {
            Cmd::Shutdown => {}
            Cmd::Retry => {
                if self.sender.is_none() && self.registered_token.is_some() {
                    self.reconnect_deadline = Some(now + self.config.reconnect_window);
                    self.ensure_connected(true);
                }
            }
            Cmd::Token(t) => {
                self.token = Some(t.clone());
                if let Some(ua) = self.ua.as_mut() {
                    ua.set_token(Some(t.clone()));
                    if ua.is_registered() {
                        self.registered_token = Some(t);
                        ua.register(now);
                    }
                }
            }
            Cmd::Register(token, device, reply) => {
                if let (Some(ua), Some(_)) = (self.ua.as_ref(), self.sender.as_ref()) {
                    if token_identity(&token).is_some_and(|i| i != ua.config().user) {
                        let _ = reply.send(Err(VoiceError::new(
                            ErrorCode::AccessTokenGrantsInvalid,
                            "this agent is registered as another identity; use one agent per identity",
                        )));
                        return;
                    }
                }
                if token_identity(&token).is_none() {
                    let _ = reply.send(Err(VoiceError::new(
                        ErrorCode::AccessTokenInvalid,
                        "the access token has no grants.identity",
                    )));
                    return;
                }
                self.token = Some(token.clone());
                self.registered_token = Some(token.clone());
                self.push_device = Some(device).filter(|d| !d.is_empty());
                self.register_waiters.push(reply);
                if let Some(ua) = self.ua.as_mut() {
                    let _ = ua.set_push_device(self.push_device.as_deref());
                }
                if self.sender.is_some() {
                    if let Some(ua) = self.ua.as_mut() {
                        ua.set_token(Some(token));
                        ua.register(now);
                    }
                } else {
                    self.ensure_connected(false);
                }
            }
            Cmd::Unregister(device, reply) => {
                self.registered_token = None;
                if let Some(ua) = self.ua.as_mut() {
                    // An expires=0 REGISTER that names the device unbinds it from push;
                    // without one, the device stays reachable by push.
                    let _ = ua.set_push_device(Some(device.as_str()));
                }
                match (self.ua.as_mut(), self.sender.is_some()) {
                    (Some(ua), true) if ua.is_registered() => {
                        ua.unregister(now);
                        self.unregister_waiters.push(reply);
                    }
                    _ => {
                        let _ = reply.send(Ok(()));
                    }
                }
            }
            Cmd::Connected(result, reconnect) => {
                self.connecting = false;
                match result {
                    Ok(conn) => {
                        self.on_connected(conn);
                        if reconnect {
                            self.after_reconnect(now);
                        }
                        if self.registered_token.is_some() {
                            if let Some(ua) = self.ua.as_mut() {
                                ua.set_token(self.token.clone());
                                if let Some(bt) = self.bridge_header.take() {
                                    ua.set_register_headers(&[(wire::BRIDGE_TOKEN_HEADER, bt)]);
                                }
                                ua.register(now);
                            }
                        }
                        for c in std::mem::take(&mut self.queued) {
                            Box::pin(self.handle(c)).await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot reach the signaling server");
                        for w in self.register_waiters.drain(..) {
                            let _ = w.send(Err(e.clone()));
                        }
                        for c in std::mem::take(&mut self.queued) {
                            if let Cmd::Offer(uuid, _) = c {
                                self.fail_call(uuid, e.clone()).await;
                            }
                        }
                        if reconnect {
                            let lost: Vec<Uuid> = self.calls.keys().copied().collect();
                            for uuid in lost {
                                self.end_call(uuid, Some(conn_lost())).await;
                            }
                            self.reconnect_deadline = None;
                            if self.registered_token.is_some() {
                                // Keep the registration's promise: try again later, for
                                // as long as the agent lives.
                                let tx = self.shared.tx.clone();
                                tokio::spawn(async move {
                                    tokio::time::sleep(Duration::from_secs(5)).await;
                                    let _ = tx.send(Cmd::Retry);
                                });
                            }
                        }
                    }
                }
            }
            Cmd::Closed(generation) => {
                if generation == self.generation {
                    self.on_connection_lost(now).await;
                }
            }
            Cmd::Received(generation, bytes) => {
                if generation == self.generation {
                    tracing::trace!(message = %String::from_utf8_lossy(&bytes), "SIP in");
                    if let Some(ua) = self.ua.as_mut() {
                        ua.handle_input(&bytes, now);
                    }
                }
            }
            Cmd::Start(link, request) => self.start(link, request),
            Cmd::Offer(uuid, result) => self.on_offer(uuid, result).await,
            Cmd::Answer(uuid, result) => {
                let Some(c) = self.calls.get_mut(&uuid) else { return };
                match result {
                    Ok(_) if c.hung_up() => {
                        if let (Some(id), Some(ua)) = (c.ua, self.ua.as_mut()) {
                            ua.reject(id, 487, None, now);
                        }
                        self.end_call(uuid, None).await;
                    }
                    Ok(sdp) => {
                        c.local_sdp = Some(sdp.clone());
                        if let (Some(id), Some(ua)) = (c.ua, self.ua.as_mut()) {
                            ua.answer(id, &sdp, now);
                        }
                    }
                    Err(e) => {
                        let id = c.ua;
                        if let (Some(id), Some(ua)) = (id, self.ua.as_mut()) {
                            ua.reject(id, 488, None, now);
                        }
                        self.fail_call(uuid, e).await;
                    }
                }
            }
            Cmd::AnswerApplied(uuid, result) => match result {
                Ok(()) => {
                    let Some(c) = self.calls.get_mut(&uuid) else { return };
                    if let Some(codec) = c.media.as_ref().and_then(|m| m.negotiated_codec()) {
                        c.link.deliver(CallEvent::CodecNegotiated(codec));
                    }
                    let hung_up = c.hung_up();
                    c.link.deliver(CallEvent::Connected);
                    if hung_up {
                        Box::pin(self.handle(Cmd::Call(uuid, CallCommand::Hangup))).await;
                    }
                }
                Err(e) => {
                    if let Some(id) = self.calls.get(&uuid).and_then(|c| c.ua) {
                        if let Some(ua) = self.ua.as_mut() {
                            ua.hangup(id, now);
                        }
                    }
                    self.fail_call(uuid, e).await;
                }
            },
            Cmd::Reanswer(uuid, sdp) => {
                let Some(c) = self.calls.get_mut(&uuid) else { return };
                if let Some(s) = &sdp {
                    c.local_sdp = Some(s.clone());
                }
                if let (Some(id), Some(ua)) = (c.ua, self.ua.as_mut()) {
                    ua.answer_reoffer(id, sdp.as_deref(), now);
                }
            }
            Cmd::Media(uuid, event) => self.on_media_event(uuid, event).await,
            Cmd::Reoffer(uuid, result) => match result {
                Ok(sdp) => {
                    let Some(c) = self.calls.get_mut(&uuid) else { return };
                    c.local_sdp = Some(sdp.clone());
                    if let (Some(id), Some(ua)) = (c.ua, self.ua.as_mut()) {
                        if !ua.reinvite(id, &sdp, now) {
                            tracing::warn!("cannot renegotiate now (an INVITE is in progress)");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot make an offer without the failing codec"),
            },
            Cmd::CodecCheck(uuid) => {
                let Some(c) = self.calls.get(&uuid) else { return };
                if let Some(codec) = c.media.as_ref().and_then(|m| m.negotiated_codec()) {
                    c.link.deliver(CallEvent::CodecNegotiated(codec));
                }
            }
            Cmd::MediaDeadline(uuid, loss) => {
                let Some(c) = self.calls.get(&uuid) else { return };
                if c.media_lost != Some(loss) {
                    return;
                }
                if let (Some(id), Some(ua)) = (c.ua, self.ua.as_mut()) {
                    ua.hangup(id, now);
                }
                if let Some(c) = self.calls.remove(&uuid) {
                    if let Some(id) = c.ua {
                        self.by_ua.remove(&id);
                    }
                    c.link.deliver(CallEvent::Disconnected(Some(VoiceError::new(
                        ErrorCode::MediaConnectionFailed,
                        "media did not come back within the reconnect window",
                    ))));
                }
                self.close_media(uuid).await;
            }
            Cmd::Call(uuid, command) => self.on_call_command(uuid, command, now).await,
            Cmd::Invite(sid, command) => self.on_invite_command(&sid, command, now),
        }
    }

    fn start(&mut self, link: CallLink, request: CallRequest) {
        let uuid = link.uuid();
        let (options, offer, target, extra, accept_sid) = match request {
            CallRequest::Connect(o) => {
                let target = match wire::target_uri(o.to(), &self.domain) {
                    Ok(t) => t,
                    Err(e) => {
                        link.deliver(CallEvent::FailedToConnect(e));
                        return;
                    }
                };
                if self.token.is_none() {
                    self.token = Some(o.access_token.clone());
                }
                let mut params = o.params.clone();
                params.remove("to");
                // The call's own token: it may name another TwiML application.
                let mut extra = vec![("Authorization", format!("Bearer {}", o.access_token))];
                if !params.is_empty() {
                    extra.push((wire::PARAMS_HEADER, wire::params_header(&params)));
                }
                (o.common, None, Some(target), extra, None)
            }
            CallRequest::Accept { invite, options } => match self.pending.get(&invite.call_sid) {
                Some(p) => {
                    (options.common, Some(p.offer.clone()), None, Vec::new(), Some(invite.call_sid.clone()))
                }
                None => match &invite.bridge_token {
                    // A push invite: register presenting the bridge token; the server
                    // then rings this device with the waiting call, which is answered
                    // at once (see `on_incoming`).
                    Some(bt) => {
                        let Some(token) = self.token.clone() else {
                            link.deliver(CallEvent::FailedToConnect(VoiceError::new(
                                ErrorCode::AccessTokenInvalid,
                                "accepting a push invite needs an access token: call Voice::update_token first",
                            )));
                            return;
                        };
                        let uuid = link.uuid();
                        let mut entry = CallEntry::new(link, None, Vec::new());
                        entry.sid = Some(invite.call_sid.clone());
                        self.calls.insert(uuid, entry);
                        self.awaiting_bridge.insert(invite.call_sid.clone(), (uuid, options.common));
                        self.registered_token = Some(token.clone());
                        let header = [(wire::BRIDGE_TOKEN_HEADER, bt.clone())];
                        match (self.ua.as_mut(), self.sender.is_some()) {
                            (Some(ua), true) => {
                                ua.set_register_headers(&header);
                                ua.register(Instant::now());
                            }
                            _ => {
                                self.bridge_header = Some(bt.clone());
                                self.ensure_connected(false);
                            }
                        }
                        return;
                    }
                    None => {
                        link.deliver(CallEvent::FailedToConnect(VoiceError::new(
                            ErrorCode::CallTransactionDoesNotExist,
                            "the invite is no longer pending",
                        )));
                        return;
                    }
                },
            },
            _ => return,
        };
        self.calls.insert(uuid, CallEntry::new(link, target, extra));
        if let Some(sid) = accept_sid {
            // Tie the accepted SIP call to this UUID.
            {
                if let Some(p) = self.pending.remove(&sid) {
                    self.by_ua.insert(p.ua, uuid);
                    if let Some(c) = self.calls.get_mut(&uuid) {
                        c.ua = Some(p.ua);
                        c.sid = Some(sid);
                    }
                }
            }
        }
        self.spawn_media(uuid, options, offer);
    }

    /// Creates the call's media session, then its offer (or its answer to `offer`).
    fn spawn_media(&self, uuid: Uuid, options: dialtone_core::CallOptions, offer: Option<String>) {
        let engine = self.media.clone();
        let factory = self.media_config.clone();
        let tx = self.shared.tx.clone();
        let shared = self.shared.clone();
        let signaling_addrs = self.signaling_addrs;
        // Not connected yet (a first call is prepared before the connection opens):
        // the engine is told where the server is, and advertises the interface that
        // routes there.
        let server_host = self.domain.trim_start_matches('[').trim_end_matches(']').to_owned();
        tokio::spawn(async move {
            let signaling_addrs = match signaling_addrs {
                Some(a) => Some(a),
                None => {
                    tokio::net::lookup_host((server_host.as_str(), 0)).await.ok().and_then(|mut found| {
                        let remote = found.next()?;
                        let any: std::net::IpAddr =
                            if remote.is_ipv4() { [0u8, 0, 0, 0].into() } else { [0u16; 8].into() };
                        Some((std::net::SocketAddr::new(any, 0), remote))
                    })
                }
            };
            let session = async {
                let mut cfg = factory()?;
                cfg.signaling_addrs = signaling_addrs;
                cfg.preferred_codecs = options.preferred_audio_codecs.clone();
                cfg.audio = options.audio.clone();
                cfg.enable_dscp = options.enable_dscp;
                cfg.ice_servers = options.ice_servers.clone();
                cfg.ice_transport_policy = options.ice_transport_policy;
                engine.create_session(cfg).await
            }
            .await;
            let session: Arc<dyn MediaSession> = match session {
                Ok(s) => Arc::from(s),
                Err(e) => {
                    let _ = tx.send(if offer.is_some() {
                        Cmd::Answer(uuid, Err(e))
                    } else {
                        Cmd::Offer(uuid, Err(e))
                    });
                    return;
                }
            };
            shared.sessions.lock().unwrap_or_else(|p| p.into_inner()).insert(uuid, session.clone());
            // Media events flow to the driver for as long as the session lives.
            let events = session.clone();
            let etx = tx.clone();
            tokio::spawn(async move {
                while let Some(e) = events.next_event().await {
                    if etx.send(Cmd::Media(uuid, e)).is_err() {
                        return;
                    }
                }
            });
            match offer {
                Some(o) => {
                    let r = session.create_answer(&o).await;
                    let _ = tx.send(Cmd::Answer(uuid, r));
                }
                None => {
                    let r = session.create_offer().await;
                    let _ = tx.send(Cmd::Offer(uuid, r));
                }
            }
        });
    }

    fn session_of(&self, uuid: Uuid) -> Option<Arc<dyn MediaSession>> {
        self.shared.sessions.lock().unwrap_or_else(|p| p.into_inner()).get(&uuid).cloned()
    }

    async fn on_offer(&mut self, uuid: Uuid, result: Result<String, VoiceError>) {
        let sdp = match result {
            Ok(s) => s,
            Err(e) => return self.fail_call(uuid, e).await,
        };
        if self.sender.is_none() {
            self.queued.push(Cmd::Offer(uuid, Ok(sdp)));
            self.ensure_connected(false);
            return;
        }
        let media = self.session_of(uuid);
        let Some(c) = self.calls.get_mut(&uuid) else { return };
        c.media = media;
        if c.hung_up() {
            return self.end_call(uuid, None).await;
        }
        let (Some(target), Some(ua)) = (c.target.clone(), self.ua.as_mut()) else { return };
        c.local_sdp = Some(sdp.clone());
        let id = ua.invite(target, &sdp, &c.extra, Instant::now());
        c.ua = Some(id);
        self.by_ua.insert(id, uuid);
    }

    async fn fail_call(&mut self, uuid: Uuid, e: VoiceError) {
        if let Some(c) = self.calls.remove(&uuid) {
            if let Some(id) = c.ua {
                self.by_ua.remove(&id);
            }
            c.link.deliver(CallEvent::FailedToConnect(e));
            self.close_media(uuid).await;
        }
    }

    async fn end_call(&mut self, uuid: Uuid, e: Option<VoiceError>) {
        if let Some(c) = self.calls.remove(&uuid) {
            if let Some(id) = c.ua {
                self.by_ua.remove(&id);
                if let Some(ua) = self.ua.as_mut() {
                    ua.forget(id);
                }
            }
            match c.established() {
                true => c.link.deliver(CallEvent::Disconnected(e)),
                false => c.link.deliver(match e {
                    Some(e) => CallEvent::FailedToConnect(e),
                    None => CallEvent::Disconnected(None),
                }),
            }
            self.close_media(uuid).await;
        }
    }

    async fn close_media(&mut self, uuid: Uuid) {
        let s = self.shared.sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(&uuid);
        if let Some(s) = s {
            tokio::spawn(async move { s.close().await });
        }
    }

    async fn on_connection_lost(&mut self, now: Instant) {
        // Worth a warning only when something depended on the connection: a call or
        // a registration. An idle client whose server went away says it quietly.
        if self.calls.is_empty() && self.registered_token.is_none() && self.pending.is_empty() {
            tracing::debug!("signaling connection closed");
        } else {
            tracing::warn!("signaling connection lost");
        }
        self.sender = None;
        let uuids: Vec<Uuid> = self.calls.keys().copied().collect();
        let mut keep = false;
        for uuid in uuids {
            let Some(c) = self.calls.get(&uuid) else { continue };
            if c.established() {
                keep = true;
                // Already reconnecting (media was lost): said once.
                c.link.deliver(CallEvent::Reconnecting(conn_lost()));
            } else if let Some(id) = c.sip_started() {
                if let Some(ua) = self.ua.as_mut() {
                    ua.forget(id);
                }
                self.fail_call(uuid, conn_lost()).await;
            }
        }
        // Pending invites cannot be answered over a new connection.
        let link = self.link();
        for (sid, p) in self.pending.drain() {
            if let Some(ua) = self.ua.as_mut() {
                ua.forget(p.ua);
            }
            if let Some(l) = &link {
                l.invite_event(&sid, InviteEvent::Cancelled(conn_lost()));
            }
        }
        let registered = self.registered_token.is_some();
        if keep || registered {
            if self.reconnect_deadline.is_none() {
                self.reconnect_deadline = Some(now + self.config.reconnect_window);
            }
            self.ensure_connected(true);
        }
    }

    fn after_reconnect(&mut self, now: Instant) {
        self.reconnect_deadline = None;
        let Some(ua) = self.ua.as_mut() else { return };
        // Every established call's dialog was on the lost connection.
        for c in self.calls.values_mut() {
            if !c.established() {
                continue;
            }
            let (Some(id), Some(sdp)) = (c.ua, c.local_sdp.clone()) else { continue };
            c.reattaching = true;
            if !ua.reinvite(id, &sdp, now) {
                c.reattaching = false;
            }
        }
    }

    async fn on_media_event(&mut self, uuid: Uuid, event: MediaEvent) {
        let Some(c) = self.calls.get(&uuid) else { return };
        match event {
            MediaEvent::QualitySample(s) => c.link.deliver(CallEvent::QualitySample(s)),
            MediaEvent::DigitsReceived(d) => c.link.deliver(CallEvent::DigitsReceived(d)),
            MediaEvent::CodecFailing(name) => {
                // Concealment covers the gap; renegotiate to another common codec.
                let Some(media) = c.media.clone() else { return };
                let tx = self.shared.tx.clone();
                tokio::spawn(async move {
                    if media.exclude_codec(&name) {
                        tracing::warn!(codec = %name, "renegotiating away from a failing codec");
                        let offer = media.create_offer().await;
                        let _ = tx.send(Cmd::Reoffer(uuid, offer));
                    } else {
                        tracing::warn!(codec = %name, "the codec keeps failing and no other is common");
                    }
                });
            }
            MediaEvent::Interrupted(e) => {
                if c.media_lost.is_some() || !c.established() {
                    return;
                }
                self.media_losses += 1;
                let loss = self.media_losses;
                let Some(c) = self.calls.get_mut(&uuid) else { return };
                c.media_lost = Some(loss);
                c.link.deliver(CallEvent::Reconnecting(e));
                // Re-offer the same media: the peer answers to where we are now, and
                // a NAT on the way sees traffic again.
                let now = Instant::now();
                if let (Some(id), Some(sdp), Some(ua), true) =
                    (c.ua, c.local_sdp.clone(), self.ua.as_mut(), self.sender.is_some())
                {
                    if !ua.reinvite(id, &sdp, now) {
                        tracing::debug!("media lost while an INVITE is in progress; no re-INVITE");
                    }
                }
                let tx = self.shared.tx.clone();
                let window = self.config.reconnect_window;
                tokio::spawn(async move {
                    tokio::time::sleep(window).await;
                    let _ = tx.send(Cmd::MediaDeadline(uuid, loss));
                });
            }
            MediaEvent::Restored => {
                let Some(c) = self.calls.get_mut(&uuid) else { return };
                // With the signaling connection down or the dialog being re-attached,
                // the re-attachment reports the reconnection instead.
                if c.media_lost.take().is_some() && self.sender.is_some() && !c.reattaching {
                    c.link.deliver(CallEvent::Reconnected);
                }
            }
            MediaEvent::Failed(e) => {
                tracing::warn!(error = %e, "media failed");
                let id = c.ua;
                if let (Some(id), Some(ua)) = (id, self.ua.as_mut()) {
                    ua.hangup(id, Instant::now());
                }
                self.end_call(uuid, Some(e)).await;
            }
            _ => {}
        }
    }

    async fn on_call_command(&mut self, uuid: Uuid, command: CallCommand, now: Instant) {
        let session = self.session_of(uuid);
        let Some(c) = self.calls.get_mut(&uuid) else { return };
        match command {
            CallCommand::Hangup => {
                // The call model is already Disconnected. While media is still being
                // prepared the call ends when the offer or answer arrives; otherwise
                // CANCEL or BYE goes out now and the call is forgotten.
                if let Some(id) = c.sip_started() {
                    if let Some(ua) = self.ua.as_mut() {
                        ua.hangup(id, now);
                    }
                    self.calls.remove(&uuid);
                    self.by_ua.remove(&id);
                    self.close_media(uuid).await;
                }
            }
            CallCommand::SetMuted(m) => {
                if let Some(s) = self.session_of(uuid) {
                    s.set_muted(m);
                }
            }
            CallCommand::SetOnHold(h) => {
                let Some(s) = self.session_of(uuid) else { return };
                s.set_on_hold(h);
                // The re-INVITE says sendonly (hold) or sendrecv (resume).
                let sdp = s.create_offer().await;
                match sdp {
                    Ok(sdp) => {
                        let Some(c) = self.calls.get_mut(&uuid) else { return };
                        c.local_sdp = Some(sdp.clone());
                        if let (Some(id), Some(ua)) = (c.ua, self.ua.as_mut()) {
                            ua.reinvite(id, &sdp, now);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot make the hold offer"),
                }
            }
            CallCommand::SendDigits(digits) => {
                let media_ok = session.map(|s| s.send_digits(&digits));
                if !matches!(media_ok, Some(Ok(()))) {
                    // The peer did not negotiate telephone-event: SIP INFO per digit.
                    let Some(id) = c.ua else { return };
                    if let Some(ua) = self.ua.as_mut() {
                        for d in digits.chars().filter(|d| *d != 'w') {
                            ua.info(id, wire::DTMF_CONTENT_TYPE, &[], &wire::dtmf_body(d), now);
                        }
                    }
                }
            }
            CallCommand::SendMessage(m) => {
                let sid = m.voice_event_sid().unwrap_or("").to_owned();
                let (ct, headers, body) = wire::message_info(&m);
                let sent = match (c.ua, self.ua.as_mut()) {
                    (Some(id), Some(ua)) if self.sender.is_some() => ua.info(id, &ct, &headers, &body, now),
                    _ => None,
                };
                match sent {
                    Some(n) => {
                        c.messages.insert(n, sid);
                    }
                    None => c.link.deliver(CallEvent::MessageFailed(
                        sid,
                        VoiceError::new(
                            ErrorCode::CallMessageUnexpectedState,
                            "the call cannot carry messages now",
                        ),
                    )),
                }
            }
            _ => {}
        }
    }

    fn on_invite_command(&mut self, sid: &str, command: InviteCommand, now: Instant) {
        match command {
            InviteCommand::Reject => {
                if let Some(p) = self.pending.remove(sid) {
                    if let Some(ua) = self.ua.as_mut() {
                        ua.reject(p.ua, wire::REJECT.0, Some(wire::REJECT.1), now);
                    }
                }
            }
            InviteCommand::SendMessage(m) => {
                // INFO in the early dialog of the pending invite; the server relays
                // it to the caller.
                let ves = m.voice_event_sid().unwrap_or("").to_owned();
                let (ct, headers, body) = wire::message_info(&m);
                let sent = match (self.pending.get(sid), self.ua.as_mut()) {
                    (Some(p), Some(ua)) if self.sender.is_some() => {
                        ua.info(p.ua, &ct, &headers, &body, now).map(|n| (p.ua, n))
                    }
                    _ => None,
                };
                match sent {
                    Some(key) => {
                        self.invite_messages.insert(key, (sid.to_owned(), ves));
                    }
                    None => {
                        if let Some(l) = self.link() {
                            l.invite_event(
                                sid,
                                InviteEvent::MessageFailed(
                                    ves,
                                    VoiceError::new(
                                        ErrorCode::CallMessageUnexpectedState,
                                        "the invite cannot carry messages now",
                                    ),
                                ),
                            );
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn on_event(&mut self, event: UaEvent) {
        let now = Instant::now();
        match event {
            UaEvent::Registered { expires } => {
                tracing::debug!(expires, "registered");
                if let Some(ua) = self.ua.as_mut() {
                    ua.set_register_headers(&[]);
                }
                for w in self.register_waiters.drain(..) {
                    let _ = w.send(Ok(()));
                }
            }
            UaEvent::RegistrationFailed(f) => {
                let e = wire::failure_to_error(&f, true);
                tracing::warn!(error = %e, "registration failed");
                if let Some(ua) = self.ua.as_mut() {
                    ua.set_register_headers(&[]);
                }
                for (_, (uuid, _)) in self.awaiting_bridge.drain() {
                    if let Some(c) = self.calls.remove(&uuid) {
                        c.link.deliver(CallEvent::FailedToConnect(e.clone()));
                    }
                }
                if self.register_waiters.is_empty() {
                    self.registered_token = None;
                }
                for w in self.register_waiters.drain(..) {
                    let _ = w.send(Err(e.clone()));
                }
            }
            UaEvent::Unregistered => {
                for w in self.unregister_waiters.drain(..) {
                    let _ = w.send(Ok(()));
                }
            }
            UaEvent::Incoming { call, request } => self.on_incoming(call, &request, now),
            UaEvent::IncomingCancelled { call, request } => {
                let sid = self.pending.iter().find(|(_, p)| p.ua == call).map(|(s, _)| s.clone());
                if let Some(sid) = sid {
                    self.pending.remove(&sid);
                    let reason = request.header("Reason").unwrap_or("").to_owned();
                    let e = VoiceError::new(
                        ErrorCode::CallCancelled,
                        if reason.is_empty() {
                            "the caller hung up before the call was answered".to_owned()
                        } else {
                            format!("the call was cancelled ({reason})")
                        },
                    );
                    if let Some(l) = self.link() {
                        l.invite_event(&sid, InviteEvent::Cancelled(e));
                    }
                }
            }
            UaEvent::Progress { call, response } => {
                let Some(c) = self.by_ua.get(&call).and_then(|u| self.calls.get_mut(u)) else { return };
                if c.sid.is_none() {
                    if let Some(s) = response.header(wire::CALL_SID_HEADER) {
                        c.sid = Some(s.trim().to_owned());
                        c.link.deliver(CallEvent::SidAssigned(s.trim().to_owned()));
                    }
                }
                c.link.deliver(CallEvent::Ringing);
            }
            UaEvent::Answered { call, response } => {
                let Some(&uuid) = self.by_ua.get(&call) else { return };
                let Some(c) = self.calls.get_mut(&uuid) else { return };
                if c.sid.is_none() {
                    let sid = wire::call_sid_of(&response);
                    c.sid = Some(sid.clone());
                    c.link.deliver(CallEvent::SidAssigned(sid));
                }
                let answer = String::from_utf8_lossy(&response.body).into_owned();
                let Some(media) = c.media.clone() else { return };
                let tx = self.shared.tx.clone();
                tokio::spawn(async move {
                    let r = media.apply_answer(&answer).await;
                    let _ = tx.send(Cmd::AnswerApplied(uuid, r));
                });
            }
            UaEvent::Confirmed { call } => {
                let Some(&uuid) = self.by_ua.get(&call) else { return };
                let media = self.session_of(uuid);
                let Some(c) = self.calls.get_mut(&uuid) else { return };
                c.media = media;
                if let Some(codec) = c.media.as_ref().and_then(|m| m.negotiated_codec()) {
                    c.link.deliver(CallEvent::CodecNegotiated(codec));
                }
                c.link.deliver(CallEvent::Connected);
            }
            UaEvent::Failed { call, failure } => {
                let Some(uuid) = self.by_ua.remove(&call) else { return };
                let e = wire::failure_to_error(&failure, false);
                if let Some(c) = self.calls.remove(&uuid) {
                    c.link.deliver(CallEvent::FailedToConnect(e));
                }
                let s = self.shared.sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(&uuid);
                if let Some(s) = s {
                    tokio::spawn(async move { s.close().await });
                }
            }
            UaEvent::Ended { call, failure, .. } => {
                let Some(uuid) = self.by_ua.remove(&call) else { return };
                let e = failure.map(|f| wire::failure_to_error(&f, false));
                if let Some(c) = self.calls.remove(&uuid) {
                    c.link.deliver(CallEvent::Disconnected(e));
                }
                let s = self.shared.sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(&uuid);
                if let Some(s) = s {
                    tokio::spawn(async move { s.close().await });
                }
            }
            UaEvent::Reoffer { call, request } => {
                let Some(&uuid) = self.by_ua.get(&call) else { return };
                let Some(media) = self.session_of(uuid) else { return };
                let offer = String::from_utf8_lossy(&request.body).into_owned();
                let tx = self.shared.tx.clone();
                tokio::spawn(async move {
                    let sdp = if offer.trim().is_empty() {
                        media.create_offer().await.ok()
                    } else {
                        media.create_answer(&offer).await.ok()
                    };
                    let _ = tx.send(Cmd::Reanswer(uuid, sdp));
                    let _ = tx.send(Cmd::CodecCheck(uuid));
                });
            }
            UaEvent::ReofferAnswered { call, response } => {
                let Some(&uuid) = self.by_ua.get(&call) else { return };
                let Some(c) = self.calls.get_mut(&uuid) else { return };
                let answer = String::from_utf8_lossy(&response.body).into_owned();
                if let Some(m) = c.media.clone() {
                    let tx = self.shared.tx.clone();
                    tokio::spawn(async move {
                        if let Err(e) = m.apply_answer(&answer).await {
                            tracing::warn!(error = %e, "cannot apply the re-INVITE answer");
                        }
                        let _ = tx.send(Cmd::CodecCheck(uuid));
                    });
                }
                // Re-attached. If media is still lost, its return says so instead.
                if std::mem::take(&mut c.reattaching) && c.media_lost.is_none() {
                    c.link.deliver(CallEvent::Reconnected);
                }
            }
            UaEvent::ReofferFailed { call, failure } => {
                let Some(&uuid) = self.by_ua.get(&call) else { return };
                let Some(c) = self.calls.get_mut(&uuid) else { return };
                if std::mem::take(&mut c.reattaching) {
                    let id = c.ua;
                    if let (Some(id), Some(ua)) = (id, self.ua.as_mut()) {
                        ua.hangup(id, now);
                    }
                    let e = VoiceError::new(
                        ErrorCode::SignalingConnectionDisconnected,
                        format!(
                            "the call could not be re-attached: SIP/2.0 {} {}",
                            failure.status, failure.reason
                        ),
                    );
                    if let Some(c) = self.calls.remove(&uuid) {
                        c.link.deliver(CallEvent::Disconnected(Some(e)));
                    }
                    self.by_ua.remove(&call);
                } else {
                    tracing::warn!(status = failure.status, "re-INVITE refused");
                }
            }
            UaEvent::Info { call, request } => self.on_info(call, &request),
            UaEvent::InfoResult { call, id, result } => {
                if let Some((sid, ves)) = self.invite_messages.remove(&(call, id)) {
                    let event = match result {
                        Ok(()) => InviteEvent::MessageSent(ves),
                        Err(f) => InviteEvent::MessageFailed(ves, wire::failure_to_error(&f, false)),
                    };
                    if let Some(l) = self.link() {
                        l.invite_event(&sid, event);
                    }
                    return;
                }
                let Some(c) = self.by_ua.get(&call).and_then(|u| self.calls.get_mut(u)) else { return };
                let Some(sid) = c.messages.remove(&id) else { return };
                match result {
                    Ok(()) => c.link.deliver(CallEvent::MessageSent(sid)),
                    Err(f) => {
                        c.link.deliver(CallEvent::MessageFailed(sid, wire::failure_to_error(&f, false)))
                    }
                }
            }
            UaEvent::Malformed(e) => tracing::warn!(error = %e, "malformed SIP input"),
            // Only a server-mode user agent hands requests up; later kinds of event
            // are not the client's business until this agent learns them.
            UaEvent::Request { .. } | UaEvent::UnknownDialog { .. } => {}
            _ => {}
        }
    }

    fn on_incoming(&mut self, call: CallId, request: &Message, now: Instant) {
        let details = match wire::invite_details(request, &self.domain) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable incoming INVITE");
                if let Some(ua) = self.ua.as_mut() {
                    ua.reject(call, 400, Some("Bad Custom Parameters"), now);
                }
                return;
            }
        };
        let offer = String::from_utf8_lossy(&request.body).into_owned();
        if let Some((uuid, options)) = self.awaiting_bridge.remove(&details.call_sid) {
            // The call a push invite was accepted for: answer it now.
            if let Some(c) = self.calls.get_mut(&uuid) {
                c.ua = Some(call);
                self.by_ua.insert(call, uuid);
                if let Some(ua) = self.ua.as_mut() {
                    ua.provisional(call, 180, now);
                }
                self.spawn_media(uuid, options, Some(offer));
            }
            return;
        }
        if offer.trim().is_empty() {
            // An offerless INVITE would need the offer in our 200; not supported.
            if let Some(ua) = self.ua.as_mut() {
                ua.reject(call, 488, Some("An SDP offer is required"), now);
            }
            return;
        }
        let sid = details.call_sid.clone();
        self.pending.insert(sid.clone(), PendingInvite { ua: call, offer });
        if let Some(ua) = self.ua.as_mut() {
            ua.provisional(call, 180, now);
        }
        let delivered = self.link().is_some_and(|l| l.incoming_invite(details));
        if !delivered {
            self.pending.remove(&sid);
            if let Some(ua) = self.ua.as_mut() {
                ua.reject(call, 480, None, now);
            }
        }
    }

    fn on_info(&mut self, call: CallId, request: &Message) {
        match wire::read_info(request) {
            wire::InfoContent::Message(m) => {
                if let Some(c) = self.by_ua.get(&call).and_then(|u| self.calls.get(u)) {
                    c.link.deliver(CallEvent::MessageReceived(m));
                } else if let Some(sid) =
                    self.pending.iter().find(|(_, p)| p.ua == call).map(|(s, _)| s.clone())
                {
                    // the caller's message to an invite not yet answered
                    if let Some(l) = self.link() {
                        l.invite_event(&sid, InviteEvent::MessageReceived(m));
                    }
                }
            }
            wire::InfoContent::Digits(d) => {
                if let Some(c) = self.by_ua.get(&call).and_then(|u| self.calls.get(u)) {
                    c.link.deliver(CallEvent::DigitsReceived(d));
                }
            }
            wire::InfoContent::Other => {}
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

//! The switch: the server's SIP side as a sans-IO core, the way the user agent is one.
//! It owns a server-mode [`UserAgent`](dialtone_sip::ua::UserAgent) for every client
//! flow, the registrar and the calls, which it bridges as a back-to-back user agent:
//! the caller's INVITE ends at the caller's flow, and the switch places a new INVITE
//! (its own leg, its own call SID) to every registered device of the callee, in
//! parallel. SDP passes through untouched.
//!
//! It never awaits, spawns or reads a clock: [`Switch::handle`] takes an [`Input`] and
//! the time, [`Switch::poll_output`] gives what to do (bytes to send, a URL to fetch, a
//! record to write, ...), and [`Switch::poll_timeout`] when to call
//! [`Switch::handle_timeout`]. The tokio shell (`crate::shell`) moves the bytes and
//! does the fetching and the storing; tests drive the switch on virtual time.
//!
//! By concern:
//! - [`flows`]: the flows and their user agents, timers and idle UDP peers;
//! - [`registrar`]: who is registered where;
//! - [`trunks`]: trunk authentication and where calls out go;
//! - [`bridges`]: the calls' state and indexes;
//! - [`calls`]: a call's life, from its INVITE to its end;
//! - [`dial`]: ringing a `<Dial>`'s targets (devices, push, SIP URIs and numbers);
//! - [`interpreter`]: the TwiML program, which returns steps;
//! - [`relay`]: call messages and DTMF between the legs.

mod bridges;
mod calls;
mod dial;
mod flows;
mod interpreter;
mod registrar;
mod relay;
pub(crate) mod trunks;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use dialtone_core::config::ApplicationConfig;
use dialtone_core::VoiceError;
use dialtone_sip::header::NameAddr;
use dialtone_sip::message::Message;
use dialtone_sip::ua::{Inbound, UaEvent};
use dialtone_sip::wire;

use crate::accounts::Account;
use crate::records::RecordWrite;
use bridges::Bridges;
use flows::{FlowSettings, Flows};
use registrar::Registrar;
pub(crate) use relay::check_rest_message;
use trunks::{OutTarget, Trunk, Trunks};

/// A flow's number.
pub(crate) type FlowId = u64;

/// How long an answered call waits for its client to reconnect.
const RECONNECT_WINDOW: Duration = Duration::from_secs(30);

/// What the switch is told.
#[derive(Debug)]
pub(crate) enum Input {
    /// A connection (or UDP peer) appeared.
    Open { flow: FlowId, transport: String, local: SocketAddr, remote: SocketAddr, reliable: bool },
    /// One message (or keepalive) from a flow, parsed where it was read, and how long
    /// it waited to be handled.
    Data { flow: FlowId, inbound: Inbound, waited: Duration },
    /// The flow closed.
    Closed(FlowId),
    /// A voice URL or `<Dial action>` answered (or failed), for the call `sid`.
    Fetched { sid: String, result: Result<String, VoiceError> },
    /// A connection asked for by [`Output::Connect`] is up (or failed).
    Connected {
        sid: String,
        child_sid: String,
        key: String,
        target: OutTarget,
        result: Result<FlowId, VoiceError>,
    },
    /// What became of an [`Output::BindDevice`]: the REGISTER that asked for it is
    /// answered now.
    DeviceBound { key: u64, result: Result<(), VoiceError> },
    /// The push bindings asked for by [`Output::LookupBindings`].
    Bindings {
        sid: String,
        child_sid: String,
        identity: String,
        params: BTreeMap<String, String>,
        bindings: Vec<crate::store::Binding>,
    },
}

/// What the switch asks its shell to do.
#[derive(Debug)]
pub(crate) enum Output {
    /// Send bytes on a flow.
    Transmit { flow: FlowId, bytes: Vec<u8> },
    /// Ask `url` (signed, with `form` as the body or the query) and hand back the
    /// TwiML as [`Input::Fetched`].
    Fetch { sid: String, url: String, method: crate::webhooks::HookMethod, form: Vec<(String, String)> },
    /// Push a payload to a binding's device, through its provider or gateway
    /// (nothing comes back).
    Push { binding: crate::store::Binding, body: serde_json::Value },
    /// Open a flow toward a SIP target and say so with [`Input::Connected`].
    Connect { sid: String, child_sid: String, key: String, target: OutTarget },
    /// Bind (or, with `remove`, unbind) `identity`'s device `device` to the push
    /// credential `credential_sid`, and say so with [`Input::DeviceBound`].
    BindDevice { key: u64, identity: String, credential_sid: String, device: String, remove: bool },
    /// Read `identity`'s push bindings and hand them back as [`Input::Bindings`].
    LookupBindings { sid: String, child_sid: String, identity: String, params: BTreeMap<String, String> },
    /// POST a call message to the subscriptions of the leg that sent it.
    Deliver { leg_sid: String, message_sid: String, content_type: String, content: String },
    /// Write a change of a call record.
    Record(RecordWrite),
    /// A UDP peer was forgotten: drop its binding to this flow.
    ForgetPeer { flow: FlowId, remote: SocketAddr },
}

/// Settings the switch needs.
pub(crate) struct SwitchConfig {
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
    /// A new INVITE that waited longer than this to be handled is refused with 503.
    pub(crate) overload_delay: Duration,
    /// A UDP peer idle this long (and holding nothing) is forgotten.
    pub(crate) udp_idle: Duration,
    /// The `Retry-After` of an overload 503, in seconds.
    pub(crate) retry_after_secs: u32,
}

/// How loaded the server is, as the switch last heard.
#[derive(Default)]
struct Load {
    /// How long the message being handled waited.
    waited: Duration,
    /// Call-record changes waiting for the disk, once over their limit.
    store_backlog: Option<usize>,
    /// New calls refused since the last warning, and when that was.
    shed: u64,
    warned: Option<Instant>,
}

/// The server's SIP core. See the module docs.
pub(crate) struct Switch {
    account: Account,
    domain: String,
    applications: Vec<ApplicationConfig>,
    ring_timeout: Duration,
    overload_delay: Duration,
    retry_after_secs: u32,
    trunks: Trunks,
    flows: Flows,
    registrar: Registrar,
    bridges: Bridges,
    out: VecDeque<Output>,
    /// Calls whose program continues as soon as the current input is handled.
    later: VecDeque<String>,
    /// REGISTERs with a device token, waiting for the store to bind it.
    pending_registers: HashMap<u64, PendingRegister>,
    next_register_key: u64,
    load: Load,
    /// An instant and the wall-clock milliseconds then: every wall-clock time (record
    /// stamps, digest nonces) is read off `now` through it.
    epoch: (Instant, i64),
}

impl Switch {
    /// A switch whose clock reads `unix_ms` at `now`.
    pub(crate) fn new(cfg: SwitchConfig, now: Instant, unix_ms: i64) -> Switch {
        Switch {
            trunks: Trunks {
                trunks: cfg.trunks,
                trusted: cfg.trusted,
                secret: cfg.account.api_key_secret.clone(),
            },
            flows: Flows::new(FlowSettings {
                domain: cfg.domain.clone(),
                public_host: cfg.public_host,
                max_message_size: cfg.max_message_size,
                udp_idle: cfg.udp_idle,
            }),
            account: cfg.account,
            domain: cfg.domain,
            applications: cfg.applications,
            ring_timeout: cfg.ring_timeout,
            overload_delay: cfg.overload_delay,
            retry_after_secs: cfg.retry_after_secs,
            registrar: Registrar::default(),
            bridges: Bridges::default(),
            out: VecDeque::new(),
            later: VecDeque::new(),
            pending_registers: HashMap::new(),
            next_register_key: 0,
            load: Load::default(),
            epoch: (now, unix_ms),
        }
    }

    /// Handles one input at `now`.
    pub(crate) fn handle(&mut self, input: Input, now: Instant) {
        // A message's wait in the inbox counts while what it causes is handled.
        if let Input::Data { waited, .. } = &input {
            self.load.waited = *waited;
        }
        match input {
            Input::Open { flow, transport, local, remote, reliable } => {
                self.flows.open(flow, transport, local, remote, reliable, now);
            }
            Input::Data { flow, inbound, .. } => self.flows.input(flow, inbound, now),
            Input::Closed(flow) => self.on_closed(flow, now),
            Input::Fetched { sid, result } => self.on_fetched(&sid, result, now),
            Input::Connected { sid, child_sid, key, target, result } => {
                self.on_connected(&sid, &child_sid, key, &target, result, now);
            }
            Input::Bindings { sid, child_sid, identity, params, bindings } => {
                self.on_bindings(&sid, &child_sid, identity, params, bindings, now);
            }
            Input::DeviceBound { key, result } => self.on_device_bound(key, result, now),
        }
        self.drain(now);
        self.load.waited = Duration::ZERO;
    }

    /// The next thing to do, if any.
    pub(crate) fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Switch::handle_timeout`] is next due.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.flows.next_wake().into_iter().chain(self.bridges.next_wake()).min()
    }

    /// Runs what is due at `now`: user agents' timers, closed reconnect windows, idle
    /// UDP peers, ring timeouts and pauses.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.flows.run_timers(now);
        for flow in self.flows.expired_orphans(now) {
            for (call, sid, role) in self.bridges.legs_on(flow) {
                self.bridges.unbind(flow, call);
                let e = VoiceError::new(
                    dialtone_core::ErrorCode::SignalingConnectionDisconnected,
                    "the client did not reconnect",
                );
                self.end_bridge(&sid, Some(role), Some(&e), "completed", now);
            }
        }
        self.expire_idle_udp(now);
        for sid in self.bridges.due_rings(now) {
            tracing::info!(call_sid = %sid, "ring timeout");
            let e = VoiceError::new(
                dialtone_core::ErrorCode::RequestTimeout,
                "nobody answered before the ring timeout",
            );
            self.dial_failed(&sid, 408, "Request Timeout", Some(&e), "no-answer", now);
        }
        for sid in self.bridges.due_pauses(now) {
            self.later.push_back(sid);
        }
        self.drain(now);
    }

    /// Tells the switch how far behind the record writer is (`None` while under its
    /// limit); new calls are refused while it is.
    pub(crate) fn set_store_backlog(&mut self, backlog: Option<usize>) {
        self.load.store_backlog = backlog;
    }

    /// How many live devices each registered identity has.
    pub(crate) fn registrations(&self, now: Instant) -> HashMap<String, usize> {
        self.registrar.snapshot(now)
    }

    /// How many calls are up.
    #[cfg(test)]
    pub(crate) fn calls(&self) -> usize {
        self.bridges.len()
    }

    /// The wall-clock milliseconds at `now`.
    fn unix_ms(&self, now: Instant) -> i64 {
        let (at, ms) = self.epoch;
        let since = now.saturating_duration_since(at).as_millis();
        ms.saturating_add(i64::try_from(since).unwrap_or(i64::MAX))
    }

    /// The wall-clock seconds at `now`.
    fn unix_secs(&self, now: Instant) -> u64 {
        u64::try_from(self.unix_ms(now) / 1000).unwrap_or(0)
    }

    fn record(&mut self, w: RecordWrite) {
        self.out.push_back(Output::Record(w));
    }

    /// Forgets the UDP peers that sent nothing for the idle period and hold nothing:
    /// no call leg, no registration, no transaction still running. A forgotten peer
    /// that sends again is a new flow.
    fn expire_idle_udp(&mut self, now: Instant) {
        let (bridges, registrar) = (&self.bridges, &self.registrar);
        let gone = self.flows.expire_idle(now, |f| bridges.has_legs_on(f) || registrar.holds(f, now));
        for (flow, remote) in gone {
            self.registrar.forget_flow(flow);
            self.out.push_back(Output::ForgetPeer { flow, remote });
            tracing::debug!(flow, peer = %remote, "forgot an idle UDP peer");
        }
    }

    /// Moves what every touched user agent queued and handles their events, and runs
    /// the calls whose program continues, until quiet.
    fn drain(&mut self, now: Instant) {
        for _ in 0..64 {
            if !self.flows.has_touched() && self.later.is_empty() {
                return;
            }
            let events = self.flows.collect(&mut self.out);
            for (flow, e) in events {
                self.on_event(flow, e, now);
            }
            while let Some(sid) = self.later.pop_front() {
                self.run_program(&sid, now);
            }
        }
    }

    fn on_event(&mut self, flow: FlowId, e: UaEvent, now: Instant) {
        match e {
            UaEvent::Request { call: None, tx, request } => self.on_register(flow, tx, request, now),
            UaEvent::Request { call: Some(call), tx, request } => self.on_info(flow, call, tx, request, now),
            UaEvent::Incoming { call, request } => self.on_invite(flow, call, request, now),
            UaEvent::IncomingCancelled { call, .. } => self.on_caller_cancel(flow, call, now),
            UaEvent::Progress { call, .. } => self.on_progress(flow, call, now),
            UaEvent::Answered { call, response } => self.on_answered(flow, call, &response, now),
            UaEvent::Failed { call, failure } => self.on_failed(flow, call, failure, now),
            UaEvent::Ended { call, by_peer, failure } => {
                let Some((sid, role)) = self.bridges.unbind(flow, call) else { return };
                let e = failure.as_ref().map(|f| wire::failure_to_error(f, false));
                if by_peer || e.is_some() {
                    self.end_bridge(&sid, Some(role), e.as_ref(), "completed", now);
                }
            }
            UaEvent::Reoffer { call, request } => self.on_reoffer(flow, call, &request, now),
            UaEvent::ReofferAnswered { call, response } => {
                self.on_reoffer_answered(flow, call, &response, now)
            }
            UaEvent::ReofferFailed { call, .. } => self.on_reoffer_failed(flow, call, now),
            UaEvent::UnknownDialog { request } => self.reattach(flow, request, now),
            UaEvent::Malformed(e) => tracing::warn!(flow, error = %e, "malformed SIP from a client"),
            _ => {}
        }
    }

    /// A REGISTER (or another out-of-dialog request) on `flow`.
    fn on_register(
        &mut self,
        flow: FlowId,
        tx: dialtone_sip::ua::ServerTxKey,
        request: Message,
        now: Instant,
    ) {
        let respond = |s: &mut Switch, resp: Message| {
            if let Some(ua) = s.flows.ua(flow) {
                ua.respond(&tx, resp, now);
            }
        };
        let (identity, push_credential) = match registrar::authorize(&self.account, &request) {
            Ok(i) => i,
            Err(resp) => return respond(self, resp),
        };
        if let Some(bt) = request.header(wire::BRIDGE_TOKEN_HEADER) {
            let waiting = crate::push::verify_bridge_token(&self.account.api_key_secret, bt, &identity)
                .and_then(|child| {
                    if self.bridges.is_ringing_leg(&child) {
                        Ok(child)
                    } else {
                        Err(VoiceError::new(
                            dialtone_core::ErrorCode::InvalidBridgeToken,
                            "invalid bridge token: the call is over",
                        ))
                    }
                });
            if let Err(e) = waiting {
                let r = with_error(dialtone_sip::ua::response_to(&request, 403, Some("srv")), &e);
                return respond(self, r);
            }
        }
        if let Some((device, remove)) = registrar::push_device(&request) {
            // The device token becomes a provider's URL path: only what a token holds.
            if let Err(e) = dialtone_sip::ua::check_device_token(&device) {
                return respond(
                    self,
                    with_error(dialtone_sip::ua::response_to(&request, 400, Some("srv")), &e),
                );
            }
            let Some(credential_sid) = push_credential else {
                let e = VoiceError::new(
                    dialtone_core::ErrorCode::AccessTokenGrantsInvalid,
                    "a device token (pn-prid) needs grants.voice.push_credential_sid in the access token",
                );
                return respond(
                    self,
                    with_error(dialtone_sip::ua::response_to(&request, 403, Some("srv")), &e),
                );
            };
            // The REGISTER is answered once the store holds the device's binding.
            let key = self.next_register_key;
            self.next_register_key += 1;
            self.pending_registers
                .insert(key, PendingRegister { flow, tx, request, identity: identity.clone() });
            self.out.push_back(Output::BindDevice { key, identity, credential_sid, device, remove });
            return;
        }
        self.finish_register(flow, &tx, &request, &identity, now);
    }

    /// Binds an authorized REGISTER's contacts and answers it.
    fn finish_register(
        &mut self,
        flow: FlowId,
        tx: &dialtone_sip::ua::ServerTxKey,
        request: &Message,
        identity: &str,
        now: Instant,
    ) {
        let (resp, contacts) = self.registrar.register(identity, flow, request, now);
        if let Some(ua) = self.flows.ua(flow) {
            ua.respond(tx, resp, now);
        }
        // A device of an identity reached by push came online: ring it.
        self.ring_pushed(identity, flow, &contacts, now);
    }

    fn on_device_bound(&mut self, key: u64, result: Result<(), VoiceError>, now: Instant) {
        let Some(p) = self.pending_registers.remove(&key) else { return };
        match result {
            Ok(()) => self.finish_register(p.flow, &p.tx, &p.request, &p.identity, now),
            Err(e) => {
                tracing::warn!(identity = %p.identity, error = %e, "cannot bind the device for push");
                let status = if e.kind() == dialtone_core::ErrorCode::ServiceUnavailable { 503 } else { 403 };
                let resp = with_error(dialtone_sip::ua::response_to(&p.request, status, Some("srv")), &e);
                if let Some(ua) = self.flows.ua(p.flow) {
                    ua.respond(&p.tx, resp, now);
                }
            }
        }
    }
}

/// A REGISTER waiting for [`Input::DeviceBound`].
struct PendingRegister {
    flow: FlowId,
    tx: dialtone_sip::ua::ServerTxKey,
    request: Message,
    identity: String,
}

/// A response carrying the error's code in `X-Dialtone-Error`.
fn with_error(mut r: Message, e: &VoiceError) -> Message {
    r.headers.push(wire::ERROR_HEADER, wire::error_header(e));
    r
}

/// The user part of a From or To header.
fn user_of(header: Option<&str>) -> Option<String> {
    NameAddr::parse(header?).ok()?.uri.user
}

/// Why a leg ended, for its record: the error's code and text, else `otherwise`.
fn cause(e: Option<&VoiceError>, otherwise: impl FnOnce() -> String) -> String {
    e.map_or_else(otherwise, |e| format!("{} {}", e.code(), e.message()))
}

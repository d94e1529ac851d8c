//! The sans-IO SIP user agent: registration, calls (INVITE, ACK, CANCEL, BYE,
//! re-INVITE), INFO and OPTIONS over one signaling flow.
//!
//! Drive it like str0m or quinn-proto: feed it bytes ([`UserAgent::handle_input`]) and
//! time ([`UserAgent::handle_timeout`]) and ask it to act ([`UserAgent::invite`],
//! [`UserAgent::answer`], ...), then drain [`UserAgent::poll_transmit`] and
//! [`UserAgent::poll_event`] and sleep until [`UserAgent::poll_timeout`]. It owns the
//! transactions, dialogs and registration refresh; it knows nothing about sockets,
//! media or the call model (the async agent maps its events onto those).
//!
//! A user agent speaks over one flow at a time (the connection to its server or
//! proxy). After a reconnection, [`UserAgent::set_flow`] gives it the new one; the
//! next requests carry the new Via and Contact.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use dialtone_core::{ErrorCode, VoiceError};

use crate::digest::Challenge;
use crate::header::{NameAddr, Uri, Via};
use crate::message::{bad_request_for, Message, Method, ParseError, StartLine, DEFAULT_MAX_MESSAGE_SIZE};
use crate::timed::{Deadline, TimedMap};
use crate::transaction::{ClientTx, ClientVerdict, ServerTx, Timers, TxTimerAction};

/// The methods this user agent understands (its `Allow` header).
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, INFO, OPTIONS";

/// The connection the user agent speaks over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    /// The Via transport token (`WS`, `WSS`, `TLS`, `TCP`, `UDP`).
    pub transport: String,
    /// Our address as `host:port`.
    pub local: String,
    /// Whether delivery is reliable (no retransmissions).
    pub reliable: bool,
}

impl Flow {
    /// The `transport=` URI parameter for this flow (none for UDP).
    fn uri_transport(&self) -> Option<String> {
        match self.transport.as_str() {
            "UDP" => None,
            "TLS" => Some("tls".into()),
            t => Some(t.to_ascii_lowercase()),
        }
    }
}

/// How a user agent is set up.
#[derive(Clone, Debug)]
pub struct UaConfig {
    /// Our user (the identity).
    pub user: String,
    /// The domain of our address of record (the registrar's host).
    pub domain: String,
    /// The registration lifetime asked for, in seconds.
    pub register_expires: u32,
    /// The `User-Agent` header.
    pub user_agent: String,
    /// Transaction timers.
    pub timers: Timers,
    /// The largest message accepted.
    pub max_message_size: usize,
    /// How often a keepalive goes out while the flow is otherwise idle.
    pub keepalive_interval: Option<Duration>,
    /// Seeds tags, branches and Call-IDs.
    pub seed: u64,
    /// Server side of a flow (the embedded server's end of a client's connection):
    /// REGISTER and in-dialog INFO are handed up as [`UaEvent::Request`] for the server
    /// to answer with [`UserAgent::respond`], and no keepalives are sent.
    pub server: bool,
}

impl UaConfig {
    /// Defaults for `user@domain`.
    pub fn new(user: impl Into<String>, domain: impl Into<String>) -> Self {
        UaConfig {
            user: user.into(),
            domain: domain.into(),
            register_expires: 600,
            user_agent: format!("Dialtone/{}", env!("CARGO_PKG_VERSION")),
            timers: Timers::default(),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            keepalive_interval: Some(Duration::from_secs(25)),
            seed: 0x5eed,
            server: false,
        }
    }
}

/// A call's handle inside one user agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub u64);

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The final status (408 for a transaction timeout).
    pub status: u16,
    /// The reason phrase.
    pub reason: String,
    /// The response, if one came (its headers may say more, such as `X-Dialtone-Error`).
    pub response: Option<Message>,
}

impl Failure {
    fn from_response(r: &Message) -> Failure {
        Failure {
            status: r.status().unwrap_or(500),
            reason: r.reason().to_owned(),
            response: Some(r.clone()),
        }
    }

    fn timeout() -> Failure {
        Failure { status: 408, reason: "Request Timeout (no response)".into(), response: None }
    }
}

/// What to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transmit {
    /// A whole SIP message.
    Message(Vec<u8>),
    /// A keepalive (CRLF CRLF on a stream, a WebSocket ping on WS).
    Keepalive,
    /// The answer to a peer's CRLF CRLF ping (a lone CRLF).
    Pong,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UaEvent {
    /// The registration was accepted for this many seconds.
    Registered {
        /// The lifetime the registrar granted.
        expires: u32,
    },
    /// Registering (or refreshing) failed.
    RegistrationFailed(Failure),
    /// The registration was removed.
    Unregistered,
    /// An INVITE arrived (a 100 Trying went out).
    Incoming {
        /// The new call.
        call: CallId,
        /// The INVITE.
        request: Message,
    },
    /// The caller cancelled an unanswered incoming call (487 went out).
    IncomingCancelled {
        /// The call.
        call: CallId,
        /// The CANCEL (its Reason header says why).
        request: Message,
    },
    /// A provisional response (180, 183) to our INVITE.
    Progress {
        /// The call.
        call: CallId,
        /// The response.
        response: Message,
    },
    /// Our INVITE was answered (the ACK went out).
    Answered {
        /// The call.
        call: CallId,
        /// The 200 OK.
        response: Message,
    },
    /// The ACK for our answer arrived: an incoming call is established.
    Confirmed {
        /// The call.
        call: CallId,
    },
    /// The call could not be set up (a failure response or a timeout).
    Failed {
        /// The call.
        call: CallId,
        /// Why.
        failure: Failure,
    },
    /// The call ended: the peer sent BYE (`by_peer`), or our BYE was answered, or the
    /// dialog was lost (an answer never ACKed, an in-dialog request timed out).
    Ended {
        /// The call.
        call: CallId,
        /// Whether the peer hung up.
        by_peer: bool,
        /// Why, when it was not a normal hang-up.
        failure: Option<Failure>,
    },
    /// The peer sent a re-INVITE; answer with [`UserAgent::answer_reoffer`].
    Reoffer {
        /// The call.
        call: CallId,
        /// The re-INVITE.
        request: Message,
    },
    /// Our re-INVITE was answered with 2xx.
    ReofferAnswered {
        /// The call.
        call: CallId,
        /// The 200 OK.
        response: Message,
    },
    /// Our re-INVITE failed (the dialog continues unless the status ends it).
    ReofferFailed {
        /// The call.
        call: CallId,
        /// Why.
        failure: Failure,
    },
    /// An in-dialog INFO arrived (already answered 200).
    Info {
        /// The call.
        call: CallId,
        /// The INFO.
        request: Message,
    },
    /// The result of an INFO we sent.
    InfoResult {
        /// The call.
        call: CallId,
        /// The id [`UserAgent::info`] returned.
        id: u64,
        /// Success, or why not.
        result: Result<(), Failure>,
    },
    /// A message could not be read (answered 400 when possible, else dropped).
    Malformed(ParseError),
    /// Server mode: a re-INVITE for a dialog this user agent does not hold (a client
    /// that reconnected on a new flow). Move the dialog here with
    /// [`UserAgent::take_call`] and [`UserAgent::adopt_call`] and feed the request
    /// again, or answer it 481 with [`UserAgent::refuse_unknown`].
    UnknownDialog {
        /// The re-INVITE.
        request: Message,
    },
    /// Server mode: a REGISTER, or an in-dialog INFO (`call` set), to answer with
    /// [`UserAgent::respond`].
    Request {
        /// The dialog's call, for an in-dialog request.
        call: Option<CallId>,
        /// The server transaction to answer.
        tx: ServerTxKey,
        /// The request.
        request: Message,
    },
}

impl Call {
    /// A call being set up: ours (`uac`) or the peer's.
    fn early(uac: bool, call_id: String) -> Call {
        Call {
            uac,
            state: DialogState::Early,
            call_id,
            invite: None,
            uas_key: None,
            uas_request: None,
            dialog: None,
            provisional_seen: false,
            cancel_pending: false,
            ack: None,
            ok_retransmit: None,
            reinvite_out: false,
            reoffer_in: None,
            cancel_reason: None,
            response_headers: Vec::new(),
            credentials: None,
            auth_tried: false,
        }
    }

    fn with_dialog(mut self, dialog: Dialog) -> Call {
        self.dialog = Some(dialog);
        self
    }
}

/// A call moved out of one user agent, for another to adopt.
#[derive(Debug)]
pub struct MovedCall(Box<Call>);

/// Names a server transaction (its branch and method) for [`UserAgent::respond`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServerTxKey(String, Method);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    Register,
    Unregister,
    Invite(CallId),
    Cancel(CallId),
    Bye(CallId),
    Reinvite(CallId),
    Info(CallId, u64),
}

#[derive(Clone, Debug)]
struct Dialog {
    call_id: String,
    local_tag: String,
    remote_tag: String,
    local: NameAddr,
    remote: NameAddr,
    local_seq: u32,
    remote_seq: Option<u32>,
    remote_target: Uri,
    route_set: Vec<String>,
}

/// Where the INVITE dialog stands, as RFC 3261 §12–13 sees it: what decides CANCEL or
/// BYE, when an ACK is due and which requests the dialog takes. It is not the call's
/// state: that is core's `CallState`, which the agent reads from the call itself; the
/// two never mirror each other.
/// When an answered call's 2xx next needs attention: its retransmission, else the
/// give-up.
fn ok_deadline(at: Option<Instant>, give_up: Instant) -> Instant {
    at.map_or(give_up, |a| a.min(give_up))
}

impl Deadline for (ClientTx, Purpose) {
    fn deadline(&self) -> Option<Instant> {
        self.0.next_timeout()
    }
}

impl Deadline for ServerTx {
    fn deadline(&self) -> Option<Instant> {
        self.next_timeout()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DialogState {
    /// UAC: INVITE out. UAS: INVITE in, not answered.
    Early,
    /// UAS: 2xx sent, waiting for the ACK.
    Answered,
    Confirmed,
    Ended,
}

#[derive(Debug)]
struct Call {
    uac: bool,
    state: DialogState,
    call_id: String,
    /// UAC: the INVITE as sent (CANCEL and ACK are built from it).
    invite: Option<Message>,
    /// UAS: the INVITE's server transaction key and the request.
    uas_key: Option<(String, Method)>,
    uas_request: Option<Message>,
    dialog: Option<Dialog>,
    provisional_seen: bool,
    cancel_pending: bool,
    /// The ACK for our 2xx-answered INVITE (resent on 2xx retransmissions).
    ack: Option<Vec<u8>>,
    /// UAS 2xx retransmission: bytes, next send, interval, give-up time.
    ok_retransmit: Option<(Vec<u8>, Option<Instant>, Duration, Instant)>,
    /// An INVITE transaction of a re-INVITE in progress (either direction).
    reinvite_out: bool,
    reoffer_in: Option<(String, Method, Message)>,
    cancel_reason: Option<String>,
    /// Headers every response to the incoming INVITE carries.
    response_headers: Vec<(String, String)>,
    /// UAC: digest credentials (username, password) for a 401/407, and whether
    /// they were already tried.
    credentials: Option<(String, String)>,
    auth_tried: bool,
}

/// Checks a device token for push notifications, as a REGISTER's Contact carries it
/// (RFC 8599 `pn-prid`): 1 to 4096 letters, digits and `. _ ~ : -` (APNs tokens are
/// hex; FCM tokens use letters, digits, `:`, `_` and `-`). Anything else is `31100`.
///
/// # Errors
/// `31100` for a token that does not fit.
pub fn check_device_token(device: &str) -> Result<(), VoiceError> {
    if device.is_empty()
        || device.len() > 4096
        || !device.bytes().all(|b| b.is_ascii_alphanumeric() || b"._~:-".contains(&b))
    {
        return Err(VoiceError::new(
            ErrorCode::MalformedRequest,
            "a device token is 1 to 4096 letters, digits and . _ ~ : -",
        ));
    }
    Ok(())
}

/// The sans-IO user agent.
#[derive(Debug)]
pub struct UserAgent {
    config: UaConfig,
    flow: Flow,
    rng: u64,
    token: Option<String>,
    client: TimedMap<(String, Method), (ClientTx, Purpose)>,
    server: TimedMap<(String, Method), ServerTx>,
    /// When each answered call's 2xx is next retransmitted or given up (stale entries
    /// are skipped), so that a wake-up never visits every call.
    ok_timers: BinaryHeap<Reverse<(Instant, CallId)>>,
    calls: HashMap<CallId, Call>,
    next_call: u64,
    next_info: u64,
    reg_call_id: String,
    reg_seq: u32,
    reg_refresh_at: Option<Instant>,
    registered: bool,
    keepalive_at: Option<Instant>,
    register_headers: Vec<(String, String)>,
    /// The device token our REGISTERs carry (RFC 8599 `pn-prid`), if any.
    push_device: Option<String>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<UaEvent>,
}

/// One input from a flow, parsed ([`Inbound::parse`]) and ready for
/// [`UserAgent::handle_inbound`].
#[derive(Debug)]
pub enum Inbound {
    /// A keepalive ping (`CRLFCRLF`): answered with a pong.
    Ping,
    /// Nothing but line ends (a pong): ignored.
    Blank,
    /// A message with every header a transaction needs.
    Message(Box<Message>),
    /// Not a usable message: why, and the `400` (or `513`) to answer it with, when
    /// enough of it could be read to address one.
    Malformed {
        /// Why.
        error: ParseError,
        /// The response's bytes.
        reply: Option<Vec<u8>>,
    },
}

impl Inbound {
    /// Parses one whole message (or keepalive) of at most `max_size` bytes.
    pub fn parse(data: &[u8], max_size: usize) -> Inbound {
        if data == b"\r\n\r\n" {
            return Inbound::Ping;
        }
        if data.iter().all(|b| *b == b'\r' || *b == b'\n') {
            return Inbound::Blank;
        }
        let checked = match crate::message::declared_size(data).filter(|s| *s > max_size) {
            Some(size) => Err(ParseError::TooLarge { size, limit: max_size }),
            None => Message::parse(data, max_size).and_then(|m| check_required(&m).map(|()| m)),
        };
        match checked {
            Ok(m) => Inbound::Message(Box::new(m)),
            Err(error) => {
                let reply = bad_request_for(data, &error).map(|mut r| {
                    if matches!(error, ParseError::TooLarge { .. }) {
                        r.start = StartLine::Response { status: 513, reason: "Message Too Large".into() };
                    }
                    r.to_bytes()
                });
                Inbound::Malformed { error, reply }
            }
        }
    }
}

impl UserAgent {
    /// A user agent speaking over `flow`.
    pub fn new(config: UaConfig, flow: Flow) -> UserAgent {
        let mut ua = UserAgent {
            rng: config.seed | 1,
            config,
            flow,
            token: None,
            client: TimedMap::new(),
            server: TimedMap::new(),
            ok_timers: BinaryHeap::new(),
            calls: HashMap::new(),
            next_call: 1,
            next_info: 1,
            reg_call_id: String::new(),
            reg_seq: 0,
            reg_refresh_at: None,
            registered: false,
            keepalive_at: None,
            register_headers: Vec::new(),
            push_device: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        ua.reg_call_id = ua.random_hex(16);
        ua
    }

    /// The configuration.
    pub fn config(&self) -> &UaConfig {
        &self.config
    }

    /// The access token sent as `Authorization: Bearer` on REGISTER and INVITE.
    pub fn set_token(&mut self, token: Option<String>) {
        self.token = token;
    }

    /// Switches to a new flow (after a reconnection). Client transactions in flight
    /// over the old one are dropped as timed out; retransmissions go to the new one.
    pub fn set_flow(&mut self, flow: Flow, now: Instant) {
        self.flow = flow;
        self.keepalive_at = None;
        self.touch(now);
    }

    /// Whether a registration is in force.
    pub fn is_registered(&self) -> bool {
        self.registered
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: tags and branches need to be unique, not secret.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn random_hex(&mut self, digits: usize) -> String {
        let mut s = String::with_capacity(digits);
        while s.len() < digits {
            s.push_str(&format!("{:016x}", self.random()));
        }
        s.truncate(digits);
        s
    }

    fn branch(&mut self) -> String {
        format!("z9hG4bK{}", self.random_hex(16))
    }

    fn aor(&self) -> Uri {
        Uri::sip(Some(&self.config.user), &self.config.domain)
    }

    /// Our Contact URI on the current flow.
    pub fn contact_uri(&self) -> Uri {
        let mut u = Uri::sip(Some(&self.config.user), &self.flow.local);
        if let Some(t) = self.flow.uri_transport() {
            u.params.set("transport", Some(&t));
        }
        u
    }

    fn via(&mut self) -> String {
        let branch = self.branch();
        format!("SIP/2.0/{} {};branch={branch};rport", self.flow.transport, self.flow.local)
    }

    fn touch(&mut self, now: Instant) {
        if self.flow.reliable && !self.config.server {
            self.keepalive_at = self.config.keepalive_interval.map(|i| now + i);
        }
    }

    fn send(&mut self, msg: &Message, now: Instant) {
        self.transmits.push_back(Transmit::Message(msg.to_bytes()));
        self.touch(now);
    }

    fn start_client(&mut self, req: Message, purpose: Purpose, now: Instant) {
        let Some(branch) = req.top_branch() else { return };
        let method = req.method().unwrap_or(Method::Options);
        let tx = ClientTx::new(req, self.flow.reliable, self.config.timers, now);
        self.transmits.push_back(Transmit::Message(tx.bytes().to_vec()));
        self.touch(now);
        self.client.insert((branch, method), (tx, purpose));
    }

    fn common_headers(&mut self, req: &mut Message, from: &NameAddr, to: &NameAddr, call_id: &str, seq: u32) {
        let via = self.via();
        let method = req.method().unwrap_or(Method::Options);
        req.headers.push("Via", via);
        req.headers.push("Max-Forwards", "70");
        req.headers.push("From", from.to_string());
        req.headers.push("To", to.to_string());
        req.headers.push("Call-ID", call_id);
        req.headers.push("CSeq", format!("{seq} {method}"));
    }

    // ---------------------------------------------------------------- registration

    /// Sends a REGISTER (binding our Contact for `register_expires` seconds). The
    /// registration then refreshes itself at half its lifetime.
    pub fn register(&mut self, now: Instant) {
        self.send_register(self.config.register_expires, Purpose::Register, now);
    }

    /// Extra headers on the next REGISTERs (a push bridge token), until cleared.
    pub fn set_register_headers(&mut self, headers: &[(&str, String)]) {
        self.register_headers = headers.iter().map(|(n, v)| ((*n).to_owned(), v.clone())).collect();
    }

    /// The device token for push notifications that the next REGISTERs carry in their
    /// Contact as RFC 8599's `pn-prid` (none: no push). The registrar binds it to the
    /// push credential of the access token.
    ///
    /// # Errors
    /// A token [`check_device_token`] refuses (`31100`).
    pub fn set_push_device(&mut self, device: Option<&str>) -> Result<(), VoiceError> {
        let device = device.filter(|d| !d.is_empty());
        if let Some(d) = device {
            check_device_token(d)?;
        }
        self.push_device = device.map(str::to_owned);
        Ok(())
    }

    /// Removes our binding (REGISTER with `expires=0`).
    pub fn unregister(&mut self, now: Instant) {
        self.reg_refresh_at = None;
        self.send_register(0, Purpose::Unregister, now);
    }

    fn send_register(&mut self, expires: u32, purpose: Purpose, now: Instant) {
        self.reg_seq += 1;
        let mut req = Message::request(Method::Register, format!("sip:{}", self.config.domain));
        let aor = NameAddr::new(self.aor());
        let mut from = aor.clone();
        let tag = self.random_hex(10);
        from.params.set("tag", Some(&tag));
        let call_id = self.reg_call_id.clone();
        self.common_headers(&mut req, &from, &aor, &call_id, self.reg_seq);
        let mut uri = self.contact_uri();
        if let Some(d) = &self.push_device {
            uri.params.set("pn-prid", Some(d));
        }
        let mut contact = NameAddr::new(uri);
        contact.params.set("expires", Some(&expires.to_string()));
        req.headers.push("Contact", contact.to_string());
        req.headers.push("Expires", expires.to_string());
        self.auth_headers(&mut req);
        req.headers.push("User-Agent", self.config.user_agent.clone());
        req.headers.push("Allow", ALLOW);
        for (n, v) in &self.register_headers {
            req.headers.push(n, v.clone());
        }
        self.start_client(req, purpose, now);
    }

    fn auth_headers(&self, req: &mut Message) {
        if let Some(t) = &self.token {
            req.headers.push("Authorization", format!("Bearer {t}"));
        }
    }

    fn on_register_response(&mut self, purpose: Purpose, resp: &Message, now: Instant) {
        let status = resp.status().unwrap_or(0);
        if status < 200 {
            return;
        }
        if purpose == Purpose::Unregister {
            self.registered = false;
            if status < 300 {
                self.events.push_back(UaEvent::Unregistered);
            }
            return;
        }
        if status == 423 {
            // Interval too brief: ask again with the registrar's minimum.
            if let Some(min) = resp.header("Min-Expires").and_then(|v| v.trim().parse::<u32>().ok()) {
                if min > self.config.register_expires && min <= 86_400 {
                    self.config.register_expires = min;
                    self.register(now);
                    return;
                }
            }
        }
        if (200..300).contains(&status) {
            let expires = self.granted_expires(resp).unwrap_or(self.config.register_expires).max(1);
            self.registered = true;
            // Refresh at half the lifetime (at least a second ahead of expiry).
            let refresh = Duration::from_secs(u64::from(expires)) / 2;
            self.reg_refresh_at = Some(now + refresh.max(Duration::from_millis(500)));
            self.events.push_back(UaEvent::Registered { expires });
        } else {
            self.registered = false;
            self.reg_refresh_at = None;
            self.events.push_back(UaEvent::RegistrationFailed(Failure::from_response(resp)));
        }
    }

    fn granted_expires(&self, resp: &Message) -> Option<u32> {
        let ours = self.contact_uri();
        for c in resp.headers.values("Contact") {
            if let Ok(na) = NameAddr::parse(c) {
                if na.uri.host_port() == ours.host_port() && na.uri.user == ours.user {
                    if let Some(e) = na.params.get("expires").and_then(|e| e.parse().ok()) {
                        return Some(e);
                    }
                }
            }
        }
        resp.header("Expires").and_then(|e| e.trim().parse().ok())
    }

    // ---------------------------------------------------------------- calls (UAC)

    /// Places a call to `target` with an SDP offer; `extra` headers ride on the
    /// INVITE. Returns the call's handle; its progress comes as events.
    pub fn invite(&mut self, target: Uri, sdp: &str, extra: &[(&str, String)], now: Instant) -> CallId {
        let from = NameAddr::new(self.aor());
        self.invite_from(from, target, sdp, extra, now)
    }

    /// Places a call on behalf of `from` (a server's leg toward a callee shows the
    /// caller); otherwise as [`UserAgent::invite`].
    pub fn invite_from(
        &mut self,
        from: NameAddr,
        target: Uri,
        sdp: &str,
        extra: &[(&str, String)],
        now: Instant,
    ) -> CallId {
        let id = CallId(self.next_call);
        self.next_call += 1;
        let call_id = format!("{}@dialtone", self.random_hex(20));
        let mut from = from;
        let tag = self.random_hex(10);
        from.params.set("tag", Some(&tag));
        let to = NameAddr::new(target.clone());
        let mut req = Message::request(Method::Invite, target.to_string());
        self.common_headers(&mut req, &from, &to, &call_id, 1);
        req.headers.push("Contact", NameAddr::new(self.contact_uri()).to_string());
        // A call's own token (in `extra`) wins over the agent's.
        if !extra.iter().any(|(n, _)| n.eq_ignore_ascii_case("Authorization")) {
            self.auth_headers(&mut req);
        }
        req.headers.push("User-Agent", self.config.user_agent.clone());
        req.headers.push("Allow", ALLOW);
        for (n, v) in extra {
            req.headers.push(n, v.clone());
        }
        req.headers.push("Content-Type", "application/sdp");
        req.body = sdp.as_bytes().to_vec();
        self.calls.insert(id, Call { invite: Some(req.clone()), ..Call::early(true, call_id) });
        self.start_client(req, Purpose::Invite(id), now);
        id
    }

    /// Answers a digest challenge (401/407) to this call's INVITE with `username` and
    /// `password`, once. Set it right after [`UserAgent::invite_from`].
    pub fn set_call_credentials(&mut self, id: CallId, username: &str, password: &str) {
        if let Some(c) = self.calls.get_mut(&id) {
            c.credentials = Some((username.to_owned(), password.to_owned()));
        }
    }

    /// Re-sends a challenged INVITE with the answer (RFC 3261 §22.2); false when the
    /// call has no credentials, already tried them, or the challenge is unreadable.
    fn retry_with_credentials(&mut self, id: CallId, resp: &Message, now: Instant) -> bool {
        let status = resp.status().unwrap_or(0);
        let (challenge_header, answer_header) = match status {
            401 => ("WWW-Authenticate", "Authorization"),
            407 => ("Proxy-Authenticate", "Proxy-Authorization"),
            _ => return false,
        };
        let Some(call) = self.calls.get(&id) else { return false };
        let (Some((user, pass)), false, Some(invite)) = (&call.credentials, call.auth_tried, &call.invite)
        else {
            return false;
        };
        let Some(challenge) = resp.headers.get_all(challenge_header).find_map(Challenge::parse) else {
            return false;
        };
        let (user, pass, mut req) = (user.clone(), pass.clone(), invite.clone());
        let cnonce = self.random_hex(16);
        let uri = req.uri().to_owned();
        let seq = req.cseq().map_or(1, |c| c.0) + 1;
        let via = self.via();
        req.headers.remove("Via");
        req.headers.push_front("Via", via);
        req.headers.set("CSeq", format!("{seq} INVITE"));
        req.headers.set(answer_header, challenge.answer(&user, &pass, "INVITE", &uri, &cnonce));
        let Some(call) = self.calls.get_mut(&id) else { return false };
        call.auth_tried = true;
        call.invite = Some(req.clone());
        self.start_client(req, Purpose::Invite(id), now);
        true
    }

    fn on_invite_response(&mut self, id: CallId, resp: &Message, now: Instant) {
        let status = resp.status().unwrap_or(0);
        let Some(call) = self.calls.get_mut(&id) else { return };
        if status < 200 && std::mem::take(&mut call.cancel_pending) {
            call.provisional_seen = true;
            return self.send_cancel(id, now);
        }
        if call.state == DialogState::Ended && !(200..300).contains(&status) {
            if status >= 200 {
                // The answer to an INVITE we cancelled (487) or gave up on.
                self.calls.remove(&id);
            }
            return;
        }
        match status {
            100 => call.provisional_seen = true,
            101..=199 => {
                call.provisional_seen = true;
                // A provisional with a To tag makes an early dialog (RFC 3261 §12.1):
                // the callee side may send INFO in it (a call message from a pending
                // invite). Each leg of a B2BUA has one early dialog.
                let tagged = resp
                    .header("To")
                    .and_then(|t| NameAddr::parse(t).ok())
                    .is_some_and(|n| n.tag().is_some());
                if call.dialog.is_none() && tagged {
                    if let Some(invite) = call.invite.clone() {
                        call.dialog = uac_dialog(&invite, resp);
                    }
                }
                self.events.push_back(UaEvent::Progress { call: id, response: resp.clone() });
            }
            200..=299 => {
                let Some(invite) = call.invite.clone() else { return };
                let early_seq = call.dialog.as_ref().map_or(0, |d| d.local_seq);
                let mut dialog = uac_dialog(&invite, resp);
                if let Some(d) = dialog.as_mut() {
                    // requests sent in the early dialog used CSeq numbers already
                    d.local_seq = d.local_seq.max(early_seq);
                }
                call.dialog = dialog;
                let ack = self.build_ack(id, &invite);
                let Some(call) = self.calls.get_mut(&id) else { return };
                call.ack = ack.clone();
                if let Some(a) = ack {
                    self.transmits.push_back(Transmit::Message(a));
                }
                let Some(call) = self.calls.get_mut(&id) else { return };
                if call.state == DialogState::Ended || call.cancel_pending {
                    // We hung up while this answer was on its way: end it with BYE.
                    call.state = DialogState::Confirmed;
                    call.cancel_pending = false;
                    self.send_bye(id, now);
                } else {
                    call.state = DialogState::Confirmed;
                    self.events.push_back(UaEvent::Answered { call: id, response: resp.clone() });
                }
            }
            _ => {
                if self.retry_with_credentials(id, resp, now) {
                    return;
                }
                self.calls.remove(&id);
                self.events.push_back(UaEvent::Failed { call: id, failure: Failure::from_response(resp) });
            }
        }
    }

    fn build_ack(&mut self, id: CallId, invite: &Message) -> Option<Vec<u8>> {
        let call = self.calls.get(&id)?;
        let d = call.dialog.clone()?;
        let mut ack = Message::request(Method::Ack, d.remote_target.to_string());
        let via = self.via();
        ack.headers.push("Via", via);
        ack.headers.push("Max-Forwards", "70");
        ack.headers.push("From", d.local.to_string());
        ack.headers.push("To", d.remote.to_string());
        ack.headers.push("Call-ID", d.call_id.clone());
        let seq = invite.cseq().map_or(1, |c| c.0);
        ack.headers.push("CSeq", format!("{seq} ACK"));
        for r in &d.route_set {
            ack.headers.push("Route", r.clone());
        }
        Some(ack.to_bytes())
    }

    /// Cancels our unanswered INVITE with a Reason header (RFC 3326), for example
    /// `SIP;cause=200;text="Call completed elsewhere"`; otherwise as
    /// [`UserAgent::hangup`].
    pub fn cancel_with_reason(&mut self, id: CallId, reason: &str, now: Instant) {
        if let Some(c) = self.calls.get_mut(&id) {
            c.cancel_reason = Some(reason.to_owned());
        }
        self.hangup(id, now);
    }

    fn send_cancel(&mut self, id: CallId, now: Instant) {
        let Some(invite) = self.calls.get(&id).and_then(|c| c.invite.clone()) else { return };
        let reason = self.calls.get(&id).and_then(|c| c.cancel_reason.clone());
        let mut cancel = Message::request(Method::Cancel, invite.uri());
        for n in ["Via"] {
            if let Some(v) = invite.headers.values(n).first() {
                cancel.headers.push(n, *v);
            }
        }
        cancel.headers.push("Max-Forwards", "70");
        for n in ["From", "To", "Call-ID"] {
            if let Some(v) = invite.header(n) {
                cancel.headers.push(n, v);
            }
        }
        let seq = invite.cseq().map_or(1, |c| c.0);
        cancel.headers.push("CSeq", format!("{seq} CANCEL"));
        for r in invite.headers.get_all("Route") {
            cancel.headers.push("Route", r);
        }
        if let Some(r) = reason {
            cancel.headers.push("Reason", r);
        }
        self.start_client(cancel, Purpose::Cancel(id), now);
    }

    /// Ends a call the way its state calls for: CANCEL for our unanswered INVITE (sent
    /// once a provisional response shows the INVITE arrived, RFC 3261 §9.1), BYE for an
    /// established dialog, 487 for an unanswered incoming INVITE. Ending an ended call
    /// does nothing.
    pub fn hangup(&mut self, id: CallId, now: Instant) {
        let Some(call) = self.calls.get_mut(&id) else { return };
        match (call.uac, call.state) {
            (_, DialogState::Ended) => {}
            (true, DialogState::Early) => {
                call.state = DialogState::Ended;
                if call.provisional_seen {
                    self.send_cancel(id, now);
                } else {
                    call.cancel_pending = true;
                }
            }
            (false, DialogState::Early) => self.reject(id, 487, None, now),
            (_, DialogState::Answered | DialogState::Confirmed) => self.send_bye(id, now),
        }
    }

    fn send_bye(&mut self, id: CallId, now: Instant) {
        let Some(req) = self.in_dialog_request(id, Method::Bye) else { return };
        if let Some(c) = self.calls.get_mut(&id) {
            c.state = DialogState::Ended;
            c.ok_retransmit = None;
        }
        self.start_client(req, Purpose::Bye(id), now);
    }

    fn in_dialog_request(&mut self, id: CallId, method: Method) -> Option<Message> {
        let via = self.via();
        let call = self.calls.get_mut(&id)?;
        let d = call.dialog.as_mut()?;
        d.local_seq += 1;
        let mut req = Message::request(method.clone(), d.remote_target.to_string());
        req.headers.push("Via", via);
        req.headers.push("Max-Forwards", "70");
        req.headers.push("From", d.local.to_string());
        req.headers.push("To", d.remote.to_string());
        req.headers.push("Call-ID", d.call_id.clone());
        req.headers.push("CSeq", format!("{} {method}", d.local_seq));
        for r in &d.route_set {
            req.headers.push("Route", r.clone());
        }
        Some(req)
    }

    /// Sends a re-INVITE with a new offer (hold, resume, or re-attaching the dialog
    /// after a reconnection; our new Contact rides along). Returns false if the call
    /// has no dialog or an INVITE transaction is already in progress.
    pub fn reinvite(&mut self, id: CallId, sdp: &str, now: Instant) -> bool {
        let busy = self.calls.get(&id).is_none_or(|c| {
            c.state != DialogState::Confirmed
                || c.reinvite_out
                || c.reoffer_in.is_some()
                || c.dialog.is_none()
        });
        if busy {
            return false;
        }
        let contact = NameAddr::new(self.contact_uri()).to_string();
        let Some(mut req) = self.in_dialog_request(id, Method::Invite) else { return false };
        req.headers.push("Contact", contact);
        self.auth_headers(&mut req);
        req.headers.push("Allow", ALLOW);
        req.headers.push("Content-Type", "application/sdp");
        req.body = sdp.as_bytes().to_vec();
        if let Some(c) = self.calls.get_mut(&id) {
            c.reinvite_out = true;
            c.invite = Some(req.clone());
        }
        self.start_client(req, Purpose::Reinvite(id), now);
        true
    }

    fn on_reinvite_response(&mut self, id: CallId, resp: &Message, now: Instant) {
        let status = resp.status().unwrap_or(0);
        if status < 200 {
            return;
        }
        let Some(call) = self.calls.get_mut(&id) else { return };
        call.reinvite_out = false;
        if (200..300).contains(&status) {
            if let (Some(d), Some(c)) = (call.dialog.as_mut(), contact_of(resp)) {
                d.remote_target = c;
            }
            let Some(invite) = call.invite.clone() else { return };
            if let Some(ack) = self.build_ack(id, &invite) {
                self.transmits.push_back(Transmit::Message(ack.clone()));
                if let Some(c) = self.calls.get_mut(&id) {
                    c.ack = Some(ack);
                }
            }
            self.events.push_back(UaEvent::ReofferAnswered { call: id, response: resp.clone() });
        } else {
            let failure = Failure::from_response(resp);
            // 481 and 408 end the dialog (RFC 3261 §14.1).
            if matches!(status, 408 | 481) {
                self.send_bye(id, now);
                self.events.push_back(UaEvent::Ended { call: id, by_peer: false, failure: Some(failure) });
            } else {
                self.events.push_back(UaEvent::ReofferFailed { call: id, failure });
            }
        }
    }

    /// Sends an in-dialog INFO; the result comes as [`UaEvent::InfoResult`] with the
    /// returned id. `None` if the call has no dialog.
    pub fn info(
        &mut self,
        id: CallId,
        content_type: &str,
        extra: &[(&str, String)],
        body: &[u8],
        now: Instant,
    ) -> Option<u64> {
        // A confirmed dialog, or an early one (a call message from a pending invite,
        // relayed by a B2BUA to its caller).
        let usable = self.calls.get(&id).is_some_and(|c| {
            c.state == DialogState::Confirmed || (c.state == DialogState::Early && c.dialog.is_some())
        });
        if !usable {
            return None;
        }
        let mut req = self.in_dialog_request(id, Method::Info)?;
        for (n, v) in extra {
            req.headers.push(n, v.clone());
        }
        req.headers.push("Content-Type", content_type);
        req.body = body.to_vec();
        let n = self.next_info;
        self.next_info += 1;
        self.start_client(req, Purpose::Info(id, n), now);
        Some(n)
    }

    // ---------------------------------------------------------------- calls (UAS)

    fn respond_in(&mut self, key: &(String, Method), resp: Message, now: Instant) {
        let bytes = resp.to_bytes();
        if let Some(mut tx) = self.server.get_mut(key) {
            if !tx.respond(&resp, bytes.clone(), now) {
                return;
            }
        }
        self.transmits.push_back(Transmit::Message(bytes));
        self.touch(now);
    }

    /// Removes the established call whose dialog an in-dialog request names (by
    /// Call-ID and tags) and returns it, to be adopted by another user agent.
    pub fn take_call(&mut self, request: &Message) -> Option<(CallId, MovedCall)> {
        let id = self.find_dialog_call(request)?;
        let call = self.calls.remove(&id)?;
        self.client.retain(|_, (_, p)| {
            !matches!(p, Purpose::Invite(c) | Purpose::Cancel(c) | Purpose::Bye(c) | Purpose::Reinvite(c) | Purpose::Info(c, _) if *c == id)
        });
        Some((id, MovedCall(Box::new(call))))
    }

    /// Takes over a call another user agent gave up with [`UserAgent::take_call`].
    pub fn adopt_call(&mut self, moved: MovedCall) -> CallId {
        let id = CallId(self.next_call);
        self.next_call += 1;
        let mut call = *moved.0;
        call.ok_retransmit = None;
        call.reinvite_out = false;
        call.reoffer_in = None;
        self.calls.insert(id, call);
        id
    }

    /// Answers a request handed up as [`UaEvent::UnknownDialog`] with 481.
    pub fn refuse_unknown(&mut self, request: &Message, now: Instant) {
        self.send(&response_to(request, 481, None), now);
    }

    /// Server mode: answers a request handed up as [`UaEvent::Request`].
    pub fn respond(&mut self, tx: &ServerTxKey, response: Message, now: Instant) {
        self.respond_in(&(tx.0.clone(), tx.1.clone()), response, now);
    }

    /// Headers every later response to an incoming INVITE carries (a server's
    /// `X-Dialtone-Call-Sid`).
    pub fn set_response_headers(&mut self, id: CallId, headers: &[(&str, String)]) {
        if let Some(c) = self.calls.get_mut(&id) {
            c.response_headers = headers.iter().map(|(n, v)| ((*n).to_owned(), v.clone())).collect();
        }
    }

    fn push_response_headers(&self, id: CallId, resp: &mut Message) {
        if let Some(c) = self.calls.get(&id) {
            for (n, v) in &c.response_headers {
                resp.headers.push(n, v.clone());
            }
        }
    }

    /// Sends a provisional response (180 Ringing, 183) to an incoming INVITE.
    pub fn provisional(&mut self, id: CallId, status: u16, now: Instant) {
        let Some(call) = self.calls.get(&id) else { return };
        if call.state != DialogState::Early || call.uac {
            return;
        }
        let (Some(key), Some(req), Some(d)) =
            (call.uas_key.clone(), call.uas_request.clone(), call.dialog.clone())
        else {
            return;
        };
        let mut resp = response_to(&req, status, Some(&d.local_tag));
        resp.headers.push("Contact", NameAddr::new(self.contact_uri()).to_string());
        self.push_response_headers(id, &mut resp);
        self.respond_in(&key, resp, now);
    }

    /// Answers an incoming INVITE with 200 OK and our SDP; the 200 is retransmitted
    /// until the ACK comes ([`UaEvent::Confirmed`]).
    pub fn answer(&mut self, id: CallId, sdp: &str, now: Instant) {
        let Some(call) = self.calls.get(&id) else { return };
        if call.state != DialogState::Early || call.uac {
            return;
        }
        let (Some(key), Some(req), Some(d)) =
            (call.uas_key.clone(), call.uas_request.clone(), call.dialog.clone())
        else {
            return;
        };
        let mut resp = response_to(&req, 200, Some(&d.local_tag));
        resp.headers.push("Contact", NameAddr::new(self.contact_uri()).to_string());
        resp.headers.push("Allow", ALLOW);
        self.push_response_headers(id, &mut resp);
        resp.headers.push("Content-Type", "application/sdp");
        resp.body = sdp.as_bytes().to_vec();
        let bytes = resp.to_bytes();
        self.respond_in(&key, resp, now);
        let t1 = self.config.timers.t1;
        let reliable = self.flow.reliable;
        if let Some(c) = self.calls.get_mut(&id) {
            c.state = DialogState::Answered;
            let (at, give_up) = ((!reliable).then(|| now + t1), now + t1 * 64);
            c.ok_retransmit = Some((bytes, at, t1, give_up));
            self.ok_timers.push(Reverse((ok_deadline(at, give_up), id)));
        }
    }

    /// Refuses an incoming INVITE (600 `Call Rejected`... any final failure status).
    pub fn reject(&mut self, id: CallId, status: u16, reason: Option<&str>, now: Instant) {
        self.reject_with_headers(id, status, reason, &[], now);
    }

    /// Refuses an incoming INVITE with extra headers on the response (a server's
    /// `X-Dialtone-Error`).
    pub fn reject_with_headers(
        &mut self,
        id: CallId,
        status: u16,
        reason: Option<&str>,
        headers: &[(&str, String)],
        now: Instant,
    ) {
        let Some(call) = self.calls.get_mut(&id) else { return };
        if call.state != DialogState::Early || call.uac {
            return;
        }
        call.state = DialogState::Ended;
        let (Some(key), Some(req)) = (call.uas_key.clone(), call.uas_request.clone()) else { return };
        let tag = call.dialog.as_ref().map(|d| d.local_tag.clone());
        let mut resp = response_to(&req, status, tag.as_deref());
        if let Some(r) = reason {
            resp.start = StartLine::Response { status, reason: r.to_owned() };
        }
        for (n, v) in headers {
            resp.headers.push(n, v.clone());
        }
        self.push_response_headers(id, &mut resp);
        self.respond_in(&key, resp, now);
    }

    /// Answers a peer's re-INVITE with 200 and our SDP, or with a failure status when
    /// `sdp` is `None` (488 Not Acceptable Here).
    pub fn answer_reoffer(&mut self, id: CallId, sdp: Option<&str>, now: Instant) {
        let contact = NameAddr::new(self.contact_uri()).to_string();
        let Some(call) = self.calls.get_mut(&id) else { return };
        let Some((branch, method, req)) = call.reoffer_in.take() else { return };
        let tag = call.dialog.as_ref().map(|d| d.local_tag.clone());
        let mut resp = response_to(&req, if sdp.is_some() { 200 } else { 488 }, tag.as_deref());
        if let Some(sdp) = sdp {
            resp.headers.push("Contact", contact);
            resp.headers.push("Content-Type", "application/sdp");
            resp.body = sdp.as_bytes().to_vec();
            let t1 = self.config.timers.t1;
            let bytes = resp.to_bytes();
            let reliable = self.flow.reliable;
            let (at, give_up) = ((!reliable).then(|| now + t1), now + t1 * 64);
            call.ok_retransmit = Some((bytes, at, t1, give_up));
            self.ok_timers.push(Reverse((ok_deadline(at, give_up), id)));
        }
        self.respond_in(&(branch, method), resp, now);
    }

    // ---------------------------------------------------------------- input

    /// Takes one whole message (or a keepalive) from the flow.
    pub fn handle_input(&mut self, data: &[u8], now: Instant) {
        let inbound = Inbound::parse(data, self.config.max_message_size);
        self.handle_inbound(inbound, now);
    }

    /// Takes what [`Inbound::parse`] made of one input from the flow, so that a server
    /// can parse on the thread that read the bytes and keep its user agents' thread
    /// for the protocol.
    pub fn handle_inbound(&mut self, inbound: Inbound, now: Instant) {
        match inbound {
            Inbound::Ping => self.transmits.push_back(Transmit::Pong),
            Inbound::Blank => {}
            Inbound::Malformed { error, reply } => {
                tracing::warn!(error = %error, "malformed SIP message");
                if let Some(r) = reply {
                    self.transmits.push_back(Transmit::Message(r));
                }
                self.events.push_back(UaEvent::Malformed(error));
            }
            Inbound::Message(msg) if msg.is_request() => self.on_request(*msg, now),
            Inbound::Message(msg) => self.on_response(*msg, now),
        }
    }

    fn on_response(&mut self, resp: Message, now: Instant) {
        let (Some(branch), Some((_, method))) = (resp.top_branch(), resp.cseq()) else { return };
        let key = (branch, method.clone());
        let Some(mut entry) = self.client.get_mut(&key) else {
            // A retransmitted 2xx to an INVITE whose transaction is gone: ACK again.
            if method == Method::Invite && resp.status().is_some_and(|s| (200..300).contains(&s)) {
                let ack = self
                    .calls
                    .values()
                    .find(|c| Some(c.call_id.as_str()) == resp.call_id())
                    .and_then(|c| c.ack.clone());
                if let Some(a) = ack {
                    self.transmits.push_back(Transmit::Message(a));
                }
            }
            return;
        };
        let purpose = entry.1;
        let (verdict, ack) = entry.0.on_response(&resp, now);
        drop(entry);
        if let Some(a) = ack {
            self.transmits.push_back(Transmit::Message(a));
        }
        if verdict == ClientVerdict::Absorb {
            return;
        }
        self.dispatch_response(purpose, &resp, now);
    }

    fn dispatch_response(&mut self, purpose: Purpose, resp: &Message, now: Instant) {
        let status = resp.status().unwrap_or(0);
        match purpose {
            Purpose::Register | Purpose::Unregister => self.on_register_response(purpose, resp, now),
            Purpose::Invite(id) => self.on_invite_response(id, resp, now),
            Purpose::Reinvite(id) => self.on_reinvite_response(id, resp, now),
            Purpose::Cancel(_) => {}
            Purpose::Bye(id) => {
                if status >= 200 {
                    let failure = (status >= 300 && status != 481).then(|| Failure::from_response(resp));
                    self.finish_call(id, false, failure);
                }
            }
            Purpose::Info(id, n) => {
                if status >= 200 {
                    let result = if status < 300 { Ok(()) } else { Err(Failure::from_response(resp)) };
                    self.events.push_back(UaEvent::InfoResult { call: id, id: n, result });
                    if matches!(status, 408 | 481) {
                        self.send_bye(id, now);
                        self.finish_call(id, false, Some(Failure::from_response(resp)));
                    }
                }
            }
        }
    }

    fn finish_call(&mut self, id: CallId, by_peer: bool, failure: Option<Failure>) {
        if let Some(c) = self.calls.remove(&id) {
            if c.dialog.is_some() || c.uac {
                self.events.push_back(UaEvent::Ended { call: id, by_peer, failure });
            }
        }
    }

    fn on_request(&mut self, req: Message, now: Instant) {
        let method = req.method().unwrap_or(Method::Options);
        let Some(branch) = req.top_branch() else {
            let resp = response_to(&req, 400, None);
            self.send(&resp, now);
            return;
        };
        if method == Method::Ack {
            return self.on_ack(&req, &branch, now);
        }
        let key = (branch.clone(), method.clone());
        if let Some(tx) = self.server.get(&key) {
            if let Some(bytes) = tx.on_retransmission() {
                self.transmits.push_back(Transmit::Message(bytes));
            }
            return;
        }
        self.server.insert(key.clone(), ServerTx::new(&method, self.flow.reliable, self.config.timers));
        match method {
            Method::Invite => self.on_invite(req, key, now),
            Method::Cancel => self.on_cancel(&req, key, now),
            Method::Bye => match self.find_dialog_call(&req) {
                Some(id) => {
                    self.respond_in(&key, response_to(&req, 200, None), now);
                    self.finish_call(id, true, None);
                }
                None => self.respond_in(&key, response_to(&req, 481, None), now),
            },
            Method::Info => match self.find_dialog_call(&req) {
                Some(id) => {
                    if req.header("Content-Type").is_none() && !req.body.is_empty() {
                        let mut r = response_to(&req, 415, None);
                        r.headers.push("Accept", "application/json, application/dtmf-relay, text/plain");
                        self.respond_in(&key, r, now);
                    } else if self.config.server {
                        let tx = ServerTxKey(key.0.clone(), key.1.clone());
                        self.events.push_back(UaEvent::Request { call: Some(id), tx, request: req });
                    } else {
                        self.respond_in(&key, response_to(&req, 200, None), now);
                        self.events.push_back(UaEvent::Info { call: id, request: req });
                    }
                }
                None => self.respond_in(&key, response_to(&req, 481, None), now),
            },
            Method::Register if self.config.server => {
                let tx = ServerTxKey(key.0.clone(), key.1.clone());
                self.events.push_back(UaEvent::Request { call: None, tx, request: req });
            }
            Method::Options => {
                let mut r = response_to(&req, 200, None);
                r.headers.push("Allow", ALLOW);
                r.headers.push("Accept", "application/sdp");
                self.respond_in(&key, r, now);
            }
            _ => {
                let mut r = response_to(&req, 405, None);
                r.headers.push("Allow", ALLOW);
                self.respond_in(&key, r, now);
            }
        }
    }

    fn find_dialog_call(&mut self, req: &Message) -> Option<CallId> {
        let call_id = req.call_id()?;
        let from_tag =
            req.header("From").and_then(|f| NameAddr::parse(f).ok()).and_then(|n| n.tag().map(str::to_owned));
        let to_tag =
            req.header("To").and_then(|f| NameAddr::parse(f).ok()).and_then(|n| n.tag().map(str::to_owned));
        let seq = req.cseq().map(|c| c.0);
        let (id, call) = self.calls.iter_mut().find(|(_, c)| {
            c.call_id == call_id
                && c.dialog.as_ref().is_some_and(|d| {
                    Some(&d.remote_tag) == from_tag.as_ref() && Some(&d.local_tag) == to_tag.as_ref()
                })
        })?;
        if let (Some(d), Some(seq)) = (call.dialog.as_mut(), seq) {
            d.remote_seq = Some(seq);
        }
        Some(*id)
    }

    fn on_invite(&mut self, req: Message, key: (String, Method), now: Instant) {
        let has_to_tag =
            req.header("To").and_then(|t| NameAddr::parse(t).ok()).is_some_and(|n| n.tag().is_some());
        if has_to_tag {
            // A re-INVITE.
            let Some(id) = self.find_dialog_call(&req) else {
                if self.config.server {
                    // Perhaps a dialog of a client that reconnected on this new flow:
                    // the server may move the dialog here and hand the request back.
                    self.server.remove(&key);
                    self.events.push_back(UaEvent::UnknownDialog { request: req });
                    return;
                }
                return self.respond_in(&key, response_to(&req, 481, None), now);
            };
            let Some(call) = self.calls.get_mut(&id) else { return };
            if call.state == DialogState::Answered {
                // A re-INVITE inside our dialog shows the peer has our 200; its ACK was
                // lost (a connection that dropped right after the answer): take the
                // re-INVITE as the ACK.
                call.state = DialogState::Confirmed;
                call.ok_retransmit = None;
                self.events.push_back(UaEvent::Confirmed { call: id });
            }
            let Some(call) = self.calls.get_mut(&id) else { return };
            if call.reinvite_out || call.reoffer_in.is_some() {
                let mut r = response_to(&req, 491, call.dialog.as_ref().map(|d| d.local_tag.as_str()));
                r.headers.push("Retry-After", "1");
                return self.respond_in(&key, r, now);
            }
            if let (Some(d), Some(c)) = (call.dialog.as_mut(), contact_of(&req)) {
                d.remote_target = c;
            }
            call.reoffer_in = Some((key.0, key.1, req.clone()));
            self.events.push_back(UaEvent::Reoffer { call: id, request: req });
            return;
        }
        let Some(dialog) = self.uas_dialog(&req) else {
            return self.respond_in(&key, response_to(&req, 400, None), now);
        };
        let id = CallId(self.next_call);
        self.next_call += 1;
        self.calls.insert(
            id,
            Call {
                uas_key: Some(key.clone()),
                uas_request: Some(req.clone()),
                ..Call::early(false, dialog.call_id.clone())
            }
            .with_dialog(dialog),
        );
        self.respond_in(&key, response_to(&req, 100, None), now);
        self.events.push_back(UaEvent::Incoming { call: id, request: req });
    }

    fn uas_dialog(&mut self, req: &Message) -> Option<Dialog> {
        let remote = NameAddr::parse(req.header("From")?).ok()?;
        let local = NameAddr::parse(req.header("To")?).ok()?;
        let remote_tag = remote.tag()?.to_owned();
        let local_tag = self.random_hex(10);
        let mut local = local;
        local.params.set("tag", Some(&local_tag));
        Some(Dialog {
            call_id: req.call_id()?.to_owned(),
            local_tag,
            remote_tag,
            local,
            remote,
            local_seq: 0,
            remote_seq: req.cseq().map(|c| c.0),
            remote_target: contact_of(req)?,
            route_set: req.headers.values("Record-Route").into_iter().map(str::to_owned).collect(),
        })
    }

    fn on_cancel(&mut self, req: &Message, key: (String, Method), now: Instant) {
        let invite_key = (key.0.clone(), Method::Invite);
        let found = self
            .calls
            .iter()
            .find(|(_, c)| c.uas_key.as_ref() == Some(&invite_key))
            .map(|(id, c)| (*id, c.state));
        match found {
            Some((id, DialogState::Early)) => {
                self.respond_in(&key, response_to(req, 200, None), now);
                self.reject(id, 487, None, now);
                self.calls.remove(&id);
                self.events.push_back(UaEvent::IncomingCancelled { call: id, request: req.clone() });
            }
            // Answered already: the CANCEL has no effect on the INVITE (RFC 3261 §9.2).
            Some(_) => self.respond_in(&key, response_to(req, 200, None), now),
            None => self.respond_in(&key, response_to(req, 481, None), now),
        }
    }

    fn on_ack(&mut self, req: &Message, branch: &str, now: Instant) {
        if let Some(mut tx) = self.server.get_mut(&(branch.to_owned(), Method::Invite)) {
            if !tx.is_terminated() {
                tx.on_ack(now);
                return;
            }
        }
        let Some(id) = self.find_dialog_call(req) else { return };
        let Some(call) = self.calls.get_mut(&id) else { return };
        call.ok_retransmit = None;
        if let Some(c) = contact_of(req) {
            if let Some(d) = call.dialog.as_mut() {
                d.remote_target = c;
            }
        }
        if call.state == DialogState::Answered {
            call.state = DialogState::Confirmed;
            self.events.push_back(UaEvent::Confirmed { call: id });
        }
    }

    // ---------------------------------------------------------------- time

    /// When [`UserAgent::handle_timeout`] should next run. Found from heaps of deadlines,
    /// not by visiting every transaction and call; it may be early (nothing due then),
    /// never late.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let ok = self.ok_timers.peek().map(|Reverse((t, _))| *t);
        [self.client.next_deadline(), self.server.next_deadline(), ok, self.reg_refresh_at, self.keepalive_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs what is due at `now`: only the transactions and calls whose deadlines
    /// have come.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut fired = Vec::new();
        for key in self.client.due(now) {
            let Some(mut entry) = self.client.get_mut(&key) else { continue };
            let (tx, purpose) = &mut *entry;
            while tx.next_timeout().is_some_and(|t| t <= now) {
                match tx.on_timer(now) {
                    Some(TxTimerAction::Retransmit(b)) => self.transmits.push_back(Transmit::Message(b)),
                    Some(TxTimerAction::TimedOut) => fired.push(*purpose),
                    None => {}
                }
                if tx.is_terminated() {
                    break;
                }
            }
            let done = tx.is_terminated();
            drop(entry);
            if done {
                self.client.remove(&key);
            }
        }
        for purpose in fired {
            self.on_client_timeout(purpose, now);
        }
        let mut no_ack = Vec::new();
        for key in self.server.due(now) {
            let Some(mut tx) = self.server.get_mut(&key) else { continue };
            while tx.next_timeout().is_some_and(|t| t <= now) {
                match tx.on_timer(now) {
                    Some(TxTimerAction::Retransmit(b)) => self.transmits.push_back(Transmit::Message(b)),
                    Some(TxTimerAction::TimedOut) => no_ack.push(()),
                    None => {}
                }
                if tx.is_terminated() {
                    break;
                }
            }
            let done = tx.is_terminated();
            drop(tx);
            if done {
                self.server.remove(&key);
            }
        }
        // 2xx retransmission and timer-H-like give-up for answers never ACKed.
        let mut lost = Vec::new();
        while let Some(&Reverse((t, id))) = self.ok_timers.peek() {
            if t > now {
                break;
            }
            self.ok_timers.pop();
            let Some(call) = self.calls.get_mut(&id) else { continue };
            let Some((bytes, at, interval, give_up)) = call.ok_retransmit.as_mut() else { continue };
            if ok_deadline(*at, *give_up) != t {
                continue; // stale: the heap holds this call's current deadline
            }
            if *give_up <= now {
                lost.push(id);
                continue;
            }
            if at.is_some_and(|a| a <= now) {
                self.transmits.push_back(Transmit::Message(bytes.clone()));
                *interval = (*interval * 2).min(self.config.timers.t2);
                *at = Some(now + *interval);
            }
            let next = ok_deadline(*at, *give_up);
            self.ok_timers.push(Reverse((next, id)));
        }
        for id in lost {
            if let Some(c) = self.calls.get_mut(&id) {
                c.ok_retransmit = None;
                if c.state == DialogState::Answered {
                    c.state = DialogState::Confirmed;
                }
            }
            self.send_bye(id, now);
            self.events.push_back(UaEvent::Ended {
                call: id,
                by_peer: false,
                failure: Some(Failure {
                    status: 408,
                    reason: "no ACK for the answer".into(),
                    response: None,
                }),
            });
        }
        if self.reg_refresh_at.is_some_and(|t| t <= now) {
            self.reg_refresh_at = None;
            self.register(now);
        }
        if self.keepalive_at.is_some_and(|t| t <= now) {
            self.transmits.push_back(Transmit::Keepalive);
            self.touch(now);
        }
    }

    fn on_client_timeout(&mut self, purpose: Purpose, now: Instant) {
        match purpose {
            Purpose::Register => {
                self.registered = false;
                self.events.push_back(UaEvent::RegistrationFailed(Failure::timeout()));
            }
            Purpose::Unregister => self.registered = false,
            Purpose::Invite(id) => {
                if let Some(c) = self.calls.get_mut(&id) {
                    if c.state == DialogState::Early || c.cancel_pending {
                        let was_ended = c.state == DialogState::Ended;
                        c.state = DialogState::Ended;
                        if !was_ended {
                            self.events.push_back(UaEvent::Failed { call: id, failure: Failure::timeout() });
                        }
                    }
                }
            }
            Purpose::Cancel(_) => {}
            Purpose::Bye(id) => self.finish_call(id, false, None),
            Purpose::Reinvite(id) => {
                if let Some(c) = self.calls.get_mut(&id) {
                    c.reinvite_out = false;
                }
                self.send_bye(id, now);
                self.finish_call(id, false, Some(Failure::timeout()));
            }
            Purpose::Info(id, n) => self.events.push_back(UaEvent::InfoResult {
                call: id,
                id: n,
                result: Err(Failure::timeout()),
            }),
        }
    }

    /// The next thing to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<UaEvent> {
        self.events.pop_front()
    }

    /// The calls the user agent still tracks.
    pub fn calls(&self) -> Vec<CallId> {
        let mut v: Vec<CallId> = self.calls.keys().copied().collect();
        v.sort();
        v
    }

    /// Whether the call's dialog is established (answered and not ended).
    pub fn is_established(&self, id: CallId) -> bool {
        self.calls.get(&id).is_some_and(|c| matches!(c.state, DialogState::Confirmed | DialogState::Answered))
    }

    /// Forgets a call without sending anything (its flow is gone for good).
    pub fn forget(&mut self, id: CallId) {
        self.calls.remove(&id);
        self.client.retain(|_, (_, p)| !matches!(p, Purpose::Invite(c) | Purpose::Cancel(c) | Purpose::Bye(c) | Purpose::Reinvite(c) | Purpose::Info(c, _) if *c == id));
    }
}

/// The remote target in a message's Contact.
fn contact_of(m: &Message) -> Option<Uri> {
    let c = m.headers.values("Contact").into_iter().next()?;
    NameAddr::parse(c).ok().map(|n| n.uri)
}

fn uac_dialog(invite: &Message, resp: &Message) -> Option<Dialog> {
    let local = NameAddr::parse(invite.header("From")?).ok()?;
    let remote = NameAddr::parse(resp.header("To")?).ok()?;
    let mut route_set: Vec<String> =
        resp.headers.values("Record-Route").into_iter().map(str::to_owned).collect();
    route_set.reverse();
    Some(Dialog {
        call_id: invite.call_id()?.to_owned(),
        local_tag: local.tag()?.to_owned(),
        remote_tag: remote.tag().unwrap_or("").to_owned(),
        local,
        remote,
        local_seq: invite.cseq().map_or(1, |c| c.0),
        remote_seq: None,
        remote_target: contact_of(resp).or_else(|| Uri::parse(invite.uri()).ok())?,
        route_set,
    })
}

/// Checks that a message has the headers every SIP message must have.
fn check_required(m: &Message) -> Result<(), ParseError> {
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        if m.header(name).is_none() {
            return Err(ParseError::HeaderValue { name: name.into(), reason: "missing".into() });
        }
    }
    let bad = |name: &str, reason: &str| ParseError::HeaderValue { name: name.into(), reason: reason.into() };
    let (_, cseq_method) = m.cseq().ok_or_else(|| bad("CSeq", "not `number METHOD`"))?;
    if let StartLine::Request { method, uri } = &m.start {
        if *method != cseq_method {
            return Err(bad("CSeq", "method differs from the request line"));
        }
        Uri::parse(uri)?;
    }
    for v in m.headers.values("Via") {
        Via::parse(v)?;
    }
    NameAddr::parse(m.header("From").unwrap_or(""))?;
    NameAddr::parse(m.header("To").unwrap_or(""))?;
    Ok(())
}

/// A response to a request (RFC 3261 §8.2.6): Via, From, To (with our tag when
/// given and the request had none), Call-ID and CSeq copied.
pub fn response_to(req: &Message, status: u16, to_tag: Option<&str>) -> Message {
    let mut r = Message::response(status);
    for v in req.headers.get_all("Via") {
        r.headers.push("Via", v);
    }
    for n in ["From"] {
        if let Some(v) = req.header(n) {
            r.headers.push(n, v);
        }
    }
    // A dialog-creating response carries the Record-Route of its request (§12.1.1).
    if req.method() == Some(Method::Invite) && status > 100 && status < 300 {
        for rr in req.headers.get_all("Record-Route") {
            r.headers.push("Record-Route", rr);
        }
    }
    if let Some(to) = req.header("To") {
        match (to_tag, NameAddr::parse(to)) {
            (Some(tag), Ok(mut na)) if na.tag().is_none() && status > 100 => {
                na.params.set("tag", Some(tag));
                r.headers.push("To", na.to_string());
            }
            _ => r.headers.push("To", to),
        }
    }
    for n in ["Call-ID", "CSeq"] {
        if let Some(v) = req.header(n) {
            r.headers.push(n, v);
        }
    }
    r
}

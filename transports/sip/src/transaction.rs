//! The four transaction state machines of RFC 3261 §17, driven by the time you pass
//! in. A transaction owns retransmission and timeouts and nothing else: what a
//! response means for a call is the user agent's business (`ua.rs`).
//!
//! | machine            | states                                        | timers        |
//! |--------------------|-----------------------------------------------|---------------|
//! | INVITE client      | Calling, Proceeding, Completed, Terminated    | A, B, D       |
//! | non-INVITE client  | Trying, Proceeding, Completed, Terminated     | E, F, K       |
//! | INVITE server      | Proceeding, Completed, Confirmed, Terminated  | G, H, I       |
//! | non-INVITE server  | Trying, Proceeding, Completed, Terminated     | J             |
//!
//! On a reliable transport (TCP, TLS, WS) nothing is retransmitted and the waiting
//! timers D, I, J and K are zero, as the RFC says.

use std::time::{Duration, Instant};

use crate::message::{Message, Method};

/// The RFC 3261 timer base values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    /// RTT estimate (500 ms).
    pub t1: Duration,
    /// Longest retransmit interval for non-INVITE requests and INVITE responses (4 s).
    pub t2: Duration,
    /// Longest time a message stays in the network (5 s).
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers { t1: Duration::from_millis(500), t2: Duration::from_secs(4), t4: Duration::from_secs(5) }
    }
}

/// Where a transaction is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxState {
    /// INVITE client: the request is out, no response yet.
    Calling,
    /// Non-INVITE: the request is out (client) or in (server), no response yet.
    Trying,
    /// A provisional response came (client) or went (server).
    Proceeding,
    /// A final response came (client) or went (server); absorbing retransmissions.
    Completed,
    /// INVITE server: the ACK for a failure response arrived.
    Confirmed,
    /// Finished.
    Terminated,
}

/// What a client transaction does with a response.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientVerdict {
    /// Pass the response up to the user agent.
    PassUp,
    /// A retransmission the user agent has already seen.
    Absorb,
}

/// Something a timer made a transaction do.
#[derive(Debug, PartialEq, Eq)]
pub enum TxTimerAction {
    /// Send these bytes again.
    Retransmit(Vec<u8>),
    /// The transaction timed out (B, F for clients; H for an INVITE server waiting for
    /// its ACK).
    TimedOut,
}

/// A client transaction.
#[derive(Debug)]
pub struct ClientTx {
    /// The request as sent.
    pub request: Message,
    bytes: Vec<u8>,
    invite: bool,
    reliable: bool,
    timers: Timers,
    /// The state.
    pub state: TxState,
    retransmit_at: Option<Instant>,
    interval: Duration,
    timeout_at: Option<Instant>,
    ack: Option<Vec<u8>>,
}

impl ClientTx {
    /// A transaction for a request the caller sends right now.
    pub fn new(request: Message, reliable: bool, timers: Timers, now: Instant) -> ClientTx {
        let invite = request.method() == Some(Method::Invite);
        let bytes = request.to_bytes();
        ClientTx {
            request,
            bytes,
            invite,
            reliable,
            timers,
            state: if invite { TxState::Calling } else { TxState::Trying },
            retransmit_at: (!reliable).then(|| now + timers.t1),
            interval: timers.t1,
            timeout_at: Some(now + timers.t1 * 64),
            ack: None,
        }
    }

    /// The request's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Takes a response. For an INVITE failure the ACK to send is returned too (on
    /// every retransmission of that response).
    pub fn on_response(&mut self, response: &Message, now: Instant) -> (ClientVerdict, Option<Vec<u8>>) {
        let status = response.status().unwrap_or(0);
        match (self.state, status) {
            (TxState::Terminated, _) => (ClientVerdict::Absorb, None),
            (TxState::Completed, _) => (ClientVerdict::Absorb, self.ack.clone()),
            (_, 100..=199) => {
                self.state = TxState::Proceeding;
                if self.invite {
                    self.retransmit_at = None;
                } else if !self.reliable {
                    self.retransmit_at = Some(now + self.timers.t2);
                    self.interval = self.timers.t2;
                }
                (ClientVerdict::PassUp, None)
            }
            (_, 200..=299) if self.invite => {
                // The user agent ACKs 2xx itself (a new transaction, RFC 3261 §13.2.2.4).
                self.state = TxState::Terminated;
                self.retransmit_at = None;
                self.timeout_at = None;
                (ClientVerdict::PassUp, None)
            }
            _ => {
                self.state = TxState::Completed;
                self.retransmit_at = None;
                let wait = match (self.invite, self.reliable) {
                    (_, true) => Duration::ZERO,
                    (true, false) => Duration::from_secs(32),
                    (false, false) => self.timers.t4,
                };
                self.timeout_at = Some(now + wait);
                if self.invite {
                    let ack = ack_for_failure(&self.request, response).to_bytes();
                    self.ack = Some(ack.clone());
                    (ClientVerdict::PassUp, Some(ack))
                } else {
                    (ClientVerdict::PassUp, None)
                }
            }
        }
    }

    /// When the transaction next needs [`ClientTx::on_timer`].
    pub fn next_timeout(&self) -> Option<Instant> {
        match (self.retransmit_at, self.timeout_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the timers that are due.
    pub fn on_timer(&mut self, now: Instant) -> Option<TxTimerAction> {
        if self.state == TxState::Terminated {
            return None;
        }
        if self.timeout_at.is_some_and(|t| t <= now) {
            let timed_out = matches!(self.state, TxState::Calling | TxState::Trying | TxState::Proceeding);
            self.state = TxState::Terminated;
            self.retransmit_at = None;
            self.timeout_at = None;
            return timed_out.then_some(TxTimerAction::TimedOut);
        }
        if self.retransmit_at.is_some_and(|t| t <= now) {
            self.interval =
                if self.invite { self.interval * 2 } else { (self.interval * 2).min(self.timers.t2) };
            if self.state == TxState::Proceeding && !self.invite {
                self.interval = self.timers.t2;
            }
            self.retransmit_at = Some(now + self.interval);
            return Some(TxTimerAction::Retransmit(self.bytes.clone()));
        }
        None
    }

    /// Whether the transaction is finished and can be dropped.
    pub fn is_terminated(&self) -> bool {
        self.state == TxState::Terminated
    }
}

/// The ACK for a non-2xx final response to an INVITE (RFC 3261 §17.1.1.3): same
/// branch, Call-ID, From and request URI, the response's To, CSeq method ACK, and the
/// request's Route headers.
pub fn ack_for_failure(invite: &Message, response: &Message) -> Message {
    let mut ack = Message::request(Method::Ack, invite.uri());
    if let Some(via) = invite.headers.values("Via").first() {
        ack.headers.push("Via", *via);
    }
    ack.headers.push("Max-Forwards", "70");
    for name in ["From"] {
        if let Some(v) = invite.header(name) {
            ack.headers.push(name, v);
        }
    }
    if let Some(to) = response.header("To") {
        ack.headers.push("To", to);
    }
    if let Some(c) = invite.call_id() {
        ack.headers.push("Call-ID", c);
    }
    if let Some((n, _)) = invite.cseq() {
        ack.headers.push("CSeq", format!("{n} ACK"));
    }
    for r in invite.headers.get_all("Route") {
        ack.headers.push("Route", r);
    }
    ack
}

/// A server transaction.
#[derive(Debug)]
pub struct ServerTx {
    invite: bool,
    reliable: bool,
    timers: Timers,
    /// The state.
    pub state: TxState,
    last_response: Option<Vec<u8>>,
    retransmit_at: Option<Instant>,
    interval: Duration,
    timeout_at: Option<Instant>,
}

impl ServerTx {
    /// A transaction for a request that just arrived.
    pub fn new(method: &Method, reliable: bool, timers: Timers) -> ServerTx {
        let invite = *method == Method::Invite;
        ServerTx {
            invite,
            reliable,
            timers,
            state: if invite { TxState::Proceeding } else { TxState::Trying },
            last_response: None,
            retransmit_at: None,
            interval: timers.t1,
            timeout_at: None,
        }
    }

    /// The request came again: the bytes to answer with (the last response), if any.
    pub fn on_retransmission(&self) -> Option<Vec<u8>> {
        match self.state {
            TxState::Proceeding | TxState::Completed => self.last_response.clone(),
            _ => None,
        }
    }

    /// Records a response the user agent sends now; returns false if the transaction
    /// can no longer send one (it already sent a final response).
    pub fn respond(&mut self, response: &Message, bytes: Vec<u8>, now: Instant) -> bool {
        if !matches!(self.state, TxState::Trying | TxState::Proceeding) {
            return false;
        }
        let status = response.status().unwrap_or(0);
        self.last_response = Some(bytes);
        if status < 200 {
            self.state = TxState::Proceeding;
        } else if self.invite && status < 300 {
            // 2xx retransmission belongs to the user agent (RFC 3261 §13.3.1.4).
            self.state = TxState::Terminated;
        } else if self.invite {
            self.state = TxState::Completed;
            if !self.reliable {
                self.retransmit_at = Some(now + self.timers.t1);
            }
            self.timeout_at = Some(now + self.timers.t1 * 64);
        } else {
            self.state = TxState::Completed;
            self.timeout_at = Some(now + if self.reliable { Duration::ZERO } else { self.timers.t1 * 64 });
        }
        true
    }

    /// The ACK for a failure response arrived (INVITE only).
    pub fn on_ack(&mut self, now: Instant) {
        if self.invite && self.state == TxState::Completed {
            self.state = TxState::Confirmed;
            self.retransmit_at = None;
            self.timeout_at = Some(now + if self.reliable { Duration::ZERO } else { self.timers.t4 });
        }
    }

    /// When the transaction next needs [`ServerTx::on_timer`].
    pub fn next_timeout(&self) -> Option<Instant> {
        match (self.retransmit_at, self.timeout_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the timers that are due.
    pub fn on_timer(&mut self, now: Instant) -> Option<TxTimerAction> {
        if self.timeout_at.is_some_and(|t| t <= now) {
            let no_ack = self.invite && self.state == TxState::Completed;
            self.state = TxState::Terminated;
            self.retransmit_at = None;
            self.timeout_at = None;
            return no_ack.then_some(TxTimerAction::TimedOut);
        }
        if self.retransmit_at.is_some_and(|t| t <= now) {
            self.interval = (self.interval * 2).min(self.timers.t2);
            self.retransmit_at = Some(now + self.interval);
            return self.last_response.clone().map(TxTimerAction::Retransmit);
        }
        None
    }

    /// Whether the transaction is finished and can be dropped.
    pub fn is_terminated(&self) -> bool {
        self.state == TxState::Terminated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite() -> Message {
        let raw = "INVITE sip:bob@x SIP/2.0\r\nVia: SIP/2.0/UDP h:5060;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nRoute: <sip:proxy;lr>\r\n\r\n";
        Message::parse(raw.as_bytes(), 65536).unwrap()
    }

    fn response(status: u16) -> Message {
        let mut r = Message::response(status);
        r.headers.push("Via", "SIP/2.0/UDP h:5060;branch=z9hG4bK1");
        r.headers.push("To", "<sip:b@x>;tag=2");
        r.headers.push("CSeq", "1 INVITE");
        r
    }

    #[test]
    fn invite_client_retransmits_with_doubling_then_times_out_after_64_t1() {
        let t0 = Instant::now();
        let mut tx = ClientTx::new(invite(), false, Timers::default(), t0);
        let mut sends = Vec::new();
        let mut now = t0;
        while let Some(at) = tx.next_timeout() {
            now = at;
            match tx.on_timer(now) {
                Some(TxTimerAction::Retransmit(_)) => sends.push(now - t0),
                Some(TxTimerAction::TimedOut) => break,
                None => {}
            }
        }
        let ms: Vec<u128> = sends.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, vec![500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!((now - t0).as_millis(), 32000, "timer B is 64*T1");
        assert!(tx.is_terminated());
    }

    #[test]
    fn invite_client_acks_failures_and_absorbs_retransmissions() {
        let t0 = Instant::now();
        let mut tx = ClientTx::new(invite(), false, Timers::default(), t0);
        assert_eq!(tx.on_response(&response(180), t0).0, ClientVerdict::PassUp);
        assert_eq!(tx.next_timeout(), Some(t0 + Duration::from_secs(32)), "no retransmission after 1xx");
        let (v, ack) = tx.on_response(&response(486), t0);
        assert_eq!(v, ClientVerdict::PassUp);
        let ack = Message::parse(&ack.unwrap(), 65536).unwrap();
        assert_eq!(ack.method(), Some(Method::Ack));
        assert_eq!(ack.cseq(), Some((1, Method::Ack)));
        assert_eq!(ack.header("To"), Some("<sip:b@x>;tag=2"));
        assert_eq!(ack.header("Route"), Some("<sip:proxy;lr>"));
        assert_eq!(ack.top_branch().as_deref(), Some("z9hG4bK1"));
        let (v, again) = tx.on_response(&response(486), t0);
        assert_eq!(v, ClientVerdict::Absorb);
        assert!(again.is_some(), "a retransmitted failure is ACKed again");
        assert_eq!(tx.on_timer(t0 + Duration::from_secs(32)), None);
        assert!(tx.is_terminated());
    }

    #[test]
    fn non_invite_client_caps_at_t2_and_reliable_sends_once() {
        let mut req = invite();
        req.start = crate::message::StartLine::Request { method: Method::Options, uri: "sip:x".into() };
        req.headers.set("CSeq", "1 OPTIONS");
        let t0 = Instant::now();
        let mut tx = ClientTx::new(req.clone(), false, Timers::default(), t0);
        let mut sends = Vec::new();
        while let Some(at) = tx.next_timeout() {
            match tx.on_timer(at) {
                Some(TxTimerAction::Retransmit(_)) => sends.push((at - t0).as_millis()),
                Some(TxTimerAction::TimedOut) => break,
                None => {}
            }
        }
        assert_eq!(sends, vec![500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]);
        let mut tx = ClientTx::new(req, true, Timers::default(), t0);
        assert_eq!(tx.next_timeout(), Some(t0 + Duration::from_secs(32)));
        assert_eq!(tx.on_timer(t0 + Duration::from_secs(32)), Some(TxTimerAction::TimedOut));
    }

    #[test]
    fn invite_server_retransmits_failure_until_ack() {
        let t0 = Instant::now();
        let mut tx = ServerTx::new(&Method::Invite, false, Timers::default());
        let r = response(486);
        assert!(tx.respond(&r, r.to_bytes(), t0));
        assert!(!tx.respond(&r, r.to_bytes(), t0), "one final response only");
        assert_eq!(tx.on_retransmission(), Some(r.to_bytes()));
        assert!(matches!(tx.on_timer(t0 + Duration::from_millis(500)), Some(TxTimerAction::Retransmit(_))));
        tx.on_ack(t0 + Duration::from_secs(1));
        assert_eq!(tx.state, TxState::Confirmed);
        assert_eq!(tx.on_timer(t0 + Duration::from_secs(6)), None);
        assert!(tx.is_terminated());
        // Without an ACK, timer H fires.
        let mut tx = ServerTx::new(&Method::Invite, false, Timers::default());
        tx.respond(&r, r.to_bytes(), t0);
        let mut last = None;
        while let Some(at) = tx.next_timeout() {
            last = tx.on_timer(at);
            if tx.is_terminated() {
                break;
            }
        }
        assert_eq!(last, Some(TxTimerAction::TimedOut));
    }
}

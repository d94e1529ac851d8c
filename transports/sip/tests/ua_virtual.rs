//! Two sans-IO user agents talking over an in-memory link on virtual time, with a
//! knob to drop chosen messages: the call flows of RFC 3261 including
//! retransmission, timeouts, CANCEL, re-INVITE, INFO and registration refresh.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use dialtone_sip::message::Message;
use dialtone_sip::ua::{Flow, Transmit, UaConfig, UaEvent, UserAgent};
use dialtone_sip::Method;

const SDP: &str =
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

fn ua(user: &str, port: u16, reliable: bool) -> UserAgent {
    let mut c = UaConfig::new(user, "example.test");
    c.seed = u64::from(port);
    let transport = if reliable { "TCP" } else { "UDP" };
    UserAgent::new(c, Flow { transport: transport.into(), local: format!("127.0.0.1:{port}"), reliable })
}

/// Decides, for a message and whether alice sent it, whether the link loses it.
type DropFilter = Box<dyn FnMut(bool, &Message) -> bool>;

/// Two agents, a clock, and a filter that drops messages it returns true for.
struct Pair {
    a: UserAgent,
    b: UserAgent,
    now: Instant,
    a_events: Vec<UaEvent>,
    b_events: Vec<UaEvent>,
    /// (from a?, message) -> drop?
    drop: DropFilter,
    a_sent: Vec<Message>,
    b_sent: Vec<Message>,
}

impl Pair {
    fn new(reliable: bool) -> Pair {
        Pair {
            a: ua("alice", 5001, reliable),
            b: ua("bob", 5002, reliable),
            now: Instant::now(),
            a_events: Vec::new(),
            b_events: Vec::new(),
            drop: Box::new(|_, _| false),
            a_sent: Vec::new(),
            b_sent: Vec::new(),
        }
    }

    /// Moves messages both ways until both sides are quiet.
    fn pump(&mut self) {
        for _ in 0..1000 {
            let mut moved = false;
            while let Some(t) = self.a.poll_transmit() {
                moved = true;
                if let Transmit::Message(bytes) = t {
                    let m = Message::parse(&bytes, 65536).unwrap();
                    self.a_sent.push(m.clone());
                    if !(self.drop)(true, &m) {
                        self.b.handle_input(&bytes, self.now);
                    }
                }
            }
            while let Some(t) = self.b.poll_transmit() {
                moved = true;
                if let Transmit::Message(bytes) = t {
                    let m = Message::parse(&bytes, 65536).unwrap();
                    self.b_sent.push(m.clone());
                    if !(self.drop)(false, &m) {
                        self.a.handle_input(&bytes, self.now);
                    }
                }
            }
            while let Some(e) = self.a.poll_event() {
                self.a_events.push(e);
            }
            while let Some(e) = self.b.poll_event() {
                self.b_events.push(e);
            }
            if !moved {
                return;
            }
        }
        panic!("the agents never went quiet");
    }

    /// Advances virtual time to `until`, firing every timer on the way.
    fn run_until(&mut self, until: Instant) {
        for _ in 0..10_000 {
            self.pump();
            let next = [self.a.poll_timeout(), self.b.poll_timeout()].into_iter().flatten().min();
            match next {
                Some(t) if t <= until => {
                    self.now = self.now.max(t);
                    self.a.handle_timeout(self.now);
                    self.b.handle_timeout(self.now);
                }
                _ => {
                    self.now = until;
                    self.pump();
                    return;
                }
            }
        }
        panic!("timers never settled");
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    fn sent_count(sent: &[Message], pred: impl Fn(&Message) -> bool) -> usize {
        sent.iter().filter(|m| pred(m)).count()
    }
}

fn is_method(m: &Message, method: Method) -> bool {
    m.is_request() && m.method() == Some(method)
}

fn incoming(events: &[UaEvent]) -> dialtone_sip::CallId {
    events
        .iter()
        .find_map(|e| match e {
            UaEvent::Incoming { call, .. } => Some(*call),
            _ => None,
        })
        .expect("an incoming call")
}

fn b_uri() -> dialtone_sip::header::Uri {
    dialtone_sip::header::Uri::parse("sip:bob@127.0.0.1:5002").unwrap()
}

#[test]
fn a_call_survives_lost_invite_and_lost_200_on_udp() {
    let mut p = Pair::new(false);
    let mut dropped_invite = false;
    let mut dropped_ok = false;
    p.drop = Box::new(move |from_a, m| {
        if from_a && is_method(m, Method::Invite) && !dropped_invite {
            dropped_invite = true;
            return true;
        }
        if !from_a && m.status() == Some(200) && m.method() == Some(Method::Invite) && !dropped_ok {
            dropped_ok = true;
            return true;
        }
        false
    });
    let t0 = p.now;
    let call = p.a.invite(b_uri(), SDP, &[("X-Dialtone-Params", "k=v".into())], p.now);
    p.run_for(Duration::from_millis(600));
    let b_call = incoming(&p.b_events);
    p.b.provisional(b_call, 180, p.now);
    p.b.answer(b_call, SDP, p.now);
    p.run_for(Duration::from_secs(2));
    assert!(p.a_events.iter().any(|e| matches!(e, UaEvent::Progress { call: c, .. } if *c == call)));
    assert!(p.a_events.iter().any(|e| matches!(e, UaEvent::Answered { call: c, .. } if *c == call)));
    assert!(p.b_events.iter().any(|e| matches!(e, UaEvent::Confirmed { call: c } if *c == b_call)));
    assert_eq!(
        Pair::sent_count(&p.a_sent, |m| is_method(m, Method::Invite)),
        2,
        "INVITE retransmitted once at T1"
    );
    assert!(Pair::sent_count(&p.b_sent, |m| m.status() == Some(200)) >= 2, "the lost 200 was retransmitted");
    // A retransmitted 200 that arrives after the ACK is ACKed again, not reported again.
    let answered = p.a_events.iter().filter(|e| matches!(e, UaEvent::Answered { .. })).count();
    assert_eq!(answered, 1);

    // INFO both ways.
    let id = p.a.info(call, "application/json", &[], b"{\"x\":1}", p.now).unwrap();
    p.run_for(Duration::from_millis(10));
    assert!(p
        .a_events
        .iter()
        .any(|e| matches!(e, UaEvent::InfoResult { id: i, result: Ok(()), .. } if *i == id)));
    assert!(p
        .b_events
        .iter()
        .any(|e| matches!(e, UaEvent::Info { request, .. } if request.body == b"{\"x\":1}")));

    // Re-INVITE from B, answered by A.
    assert!(p.b.reinvite(b_call, SDP, p.now));
    p.run_for(Duration::from_millis(10));
    let reoffer = p.a_events.iter().find_map(|e| match e {
        UaEvent::Reoffer { call: c, .. } => Some(*c),
        _ => None,
    });
    assert_eq!(reoffer, Some(call));
    p.a.answer_reoffer(call, Some(SDP), p.now);
    p.run_for(Duration::from_millis(10));
    assert!(p.b_events.iter().any(|e| matches!(e, UaEvent::ReofferAnswered { .. })));

    // BYE from A.
    p.a.hangup(call, p.now);
    p.run_for(Duration::from_secs(40));
    assert!(p.b_events.iter().any(|e| matches!(e, UaEvent::Ended { by_peer: true, .. })));
    assert!(p.a_events.iter().any(|e| matches!(e, UaEvent::Ended { by_peer: false, failure: None, .. })));
    assert!(p.a.calls().is_empty() && p.b.calls().is_empty());
    assert!(p.now - t0 >= Duration::from_secs(40));
}

#[test]
fn an_invite_into_the_void_times_out_after_64_t1() {
    let mut p = Pair::new(false);
    p.drop = Box::new(|from_a, _| from_a);
    let t0 = p.now;
    let call = p.a.invite(b_uri(), SDP, &[], p.now);
    p.run_for(Duration::from_secs(31));
    assert!(p.a_events.is_empty());
    p.run_for(Duration::from_secs(2));
    let failed = p.a_events.iter().find_map(|e| match e {
        UaEvent::Failed { call: c, failure } if *c == call => Some(failure.status),
        _ => None,
    });
    assert_eq!(failed, Some(408));
    assert_eq!(Pair::sent_count(&p.a_sent, |m| is_method(m, Method::Invite)), 7);
    assert!(p.now - t0 >= Duration::from_secs(32));
}

#[test]
fn cancel_before_answer_reaches_the_callee_and_ends_with_487() {
    let mut p = Pair::new(true);
    let call = p.a.invite(b_uri(), SDP, &[], p.now);
    p.run_for(Duration::from_millis(10));
    let b_call = incoming(&p.b_events);
    p.b.provisional(b_call, 180, p.now);
    p.run_for(Duration::from_millis(10));
    p.a.hangup(call, p.now);
    p.run_for(Duration::from_secs(1));
    assert!(p
        .b_events
        .iter()
        .any(|e| matches!(e, UaEvent::IncomingCancelled { call: c, .. } if *c == b_call)));
    assert!(p.b_sent.iter().any(|m| m.status() == Some(487)));
    assert!(p.a_sent.iter().any(|m| is_method(m, Method::Ack)), "the 487 is ACKed");
    assert!(p.a.calls().is_empty() && p.b.calls().is_empty());
    // Answering afterwards sends nothing.
    let before = p.b_sent.len();
    p.b.answer(b_call, SDP, p.now);
    p.run_for(Duration::from_millis(10));
    assert_eq!(p.b_sent.len(), before);
}

#[test]
fn cancel_before_any_provisional_waits_for_one() {
    let mut p = Pair::new(true);
    // B's 100 Trying is lost, so A has seen nothing when it hangs up.
    p.drop = Box::new(|from_a, m| !from_a && m.status() == Some(100));
    let call = p.a.invite(b_uri(), SDP, &[], p.now);
    p.run_for(Duration::from_millis(10));
    p.a.hangup(call, p.now);
    p.run_for(Duration::from_millis(10));
    assert!(!p.a_sent.iter().any(|m| is_method(m, Method::Cancel)), "no CANCEL before a provisional");
    let b_call = incoming(&p.b_events);
    p.b.provisional(b_call, 180, p.now);
    p.run_for(Duration::from_millis(10));
    assert!(p.a_sent.iter().any(|m| is_method(m, Method::Cancel)));
    assert!(p.b_events.iter().any(|e| matches!(e, UaEvent::IncomingCancelled { .. })));
    assert!(!p.a_events.iter().any(|e| matches!(e, UaEvent::Progress { .. })), "no ringing after hang-up");
}

#[test]
fn reject_reaches_the_caller_with_its_status() {
    let mut p = Pair::new(false);
    let call = p.a.invite(b_uri(), SDP, &[], p.now);
    p.run_for(Duration::from_millis(10));
    let b_call = incoming(&p.b_events);
    p.b.reject(b_call, 600, Some("Call Rejected"), p.now);
    p.run_for(Duration::from_secs(1));
    let f = p.a_events.iter().find_map(|e| match e {
        UaEvent::Failed { call: c, failure } if *c == call => Some(failure.clone()),
        _ => None,
    });
    let f = f.unwrap();
    assert_eq!((f.status, f.reason.as_str()), (600, "Call Rejected"));
    // The 600 stopped being retransmitted once the ACK came.
    let sixes = Pair::sent_count(&p.b_sent, |m| m.status() == Some(600));
    p.run_for(Duration::from_secs(40));
    assert_eq!(Pair::sent_count(&p.b_sent, |m| m.status() == Some(600)), sixes);
}

#[test]
fn an_answer_never_acked_ends_the_call_with_bye() {
    let mut p = Pair::new(false);
    p.drop = Box::new(|from_a, m| from_a && is_method(m, Method::Ack));
    p.a.invite(b_uri(), SDP, &[], p.now);
    p.run_for(Duration::from_millis(10));
    let b_call = incoming(&p.b_events);
    p.b.answer(b_call, SDP, p.now);
    p.run_for(Duration::from_secs(33));
    assert!(p
        .b_events
        .iter()
        .any(|e| matches!(e, UaEvent::Ended { failure: Some(f), .. } if f.status == 408)));
    assert!(p.b_sent.iter().any(|m| is_method(m, Method::Bye)));
    // T1 doubling capped at T2: 0.5 1 2 4 4 4 4 4 4 4 (31.5 s) plus the first send.
    assert_eq!(
        Pair::sent_count(&p.b_sent, |m| m.status() == Some(200) && m.method() == Some(Method::Invite)),
        11
    );
}

#[test]
fn malformed_input_gets_400_and_the_call_survives() {
    let mut p = Pair::new(true);
    let call = p.a.invite(b_uri(), SDP, &[], p.now);
    p.run_for(Duration::from_millis(10));
    let b_call = incoming(&p.b_events);
    p.b.answer(b_call, SDP, p.now);
    p.run_for(Duration::from_millis(10));
    let junk = b"INFO sip:bob@127.0.0.1:5002 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5001;branch=z9hG4bKx\r\nFrom: <sip:alice@example.test>;tag=zz\r\nTo: <sip:bob@example.test>\r\nCall-ID: nope\r\nCSeq: x INFO\r\n\r\n";
    p.b.handle_input(junk, p.now);
    p.b.handle_input(b"\x00\xff garbage", p.now);
    p.b.handle_input(&vec![b'a'; 70_000], p.now);
    let mut replies = Vec::new();
    while let Some(Transmit::Message(m)) = p.b.poll_transmit() {
        replies.push(Message::parse(&m, 65536).unwrap());
    }
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].status(), Some(400));
    let malformed =
        std::iter::from_fn(|| p.b.poll_event()).filter(|e| matches!(e, UaEvent::Malformed(_))).count();
    assert_eq!(malformed, 3);
    let id = p.a.info(call, "text/plain", &[], b"still here", p.now).unwrap();
    p.run_for(Duration::from_millis(10));
    assert!(p
        .a_events
        .iter()
        .any(|e| matches!(e, UaEvent::InfoResult { id: i, result: Ok(()), .. } if *i == id)));
    // Keepalive pings are answered with pongs.
    p.b.handle_input(b"\r\n\r\n", p.now);
    assert_eq!(p.b.poll_transmit(), Some(Transmit::Pong));
}

/// A registrar answering REGISTER by hand.
fn answer_register(ua: &mut UserAgent, now: Instant, status: u16, expires: u32) -> Message {
    let Some(Transmit::Message(bytes)) = ua.poll_transmit() else { panic!("no REGISTER") };
    let req = Message::parse(&bytes, 65536).unwrap();
    assert_eq!(req.method(), Some(Method::Register));
    let mut resp = dialtone_sip::ua::response_to(&req, status, Some("reg"));
    if status == 200 {
        let contact = req.header("Contact").unwrap();
        let uri = &contact[..=contact.find('>').unwrap()];
        resp.headers.push("Contact", format!("{uri};expires={expires}"));
    }
    if status == 423 {
        resp.headers.push("Min-Expires", "1200");
    }
    ua.handle_input(&resp.to_bytes(), now);
    req
}

#[test]
fn registration_refreshes_at_half_life_and_reports_failures() {
    let t0 = Instant::now();
    let mut a = ua("alice", 5001, true);
    a.set_token(Some("tok".into()));
    a.register(t0);
    let req = answer_register(&mut a, t0, 423, 0);
    assert_eq!(req.header("Authorization"), Some("Bearer tok"));
    assert_eq!(req.header("Expires"), Some("600"));
    let req = answer_register(&mut a, t0, 200, 120);
    assert_eq!(req.header("Expires"), Some("1200"), "423 raised the interval to Min-Expires");
    assert_eq!(a.poll_event(), Some(UaEvent::Registered { expires: 120 }));
    assert!(a.is_registered());
    // Keepalives on the reliable flow come every 25 s; the refresh at 60 s.
    let mut keepalives = 0;
    let mut now;
    loop {
        now = a.poll_timeout().unwrap();
        a.handle_timeout(now);
        match a.poll_transmit() {
            Some(Transmit::Keepalive) => keepalives += 1,
            Some(Transmit::Message(bytes)) => {
                // The refresh is refused.
                let m = Message::parse(&bytes, 65536).unwrap();
                assert_eq!(m.method(), Some(Method::Register));
                a.handle_input(&dialtone_sip::ua::response_to(&m, 403, Some("r")).to_bytes(), now);
                break;
            }
            None => {} // a transaction's own timer
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(now - t0, Duration::from_secs(60));
    assert_eq!(keepalives, 2);
    match a.poll_event() {
        Some(UaEvent::RegistrationFailed(f)) => assert_eq!(f.status, 403),
        other => panic!("unexpected {other:?}"),
    }
    assert!(!a.is_registered());
}

#[test]
fn a_reinvite_stands_for_a_lost_ack() {
    let mut p = Pair::new(true);
    p.drop = Box::new(|from_a, m| from_a && is_method(m, Method::Ack));
    let call = p.a.invite(b_uri(), SDP, &[], p.now);
    p.run_for(Duration::from_millis(10));
    let b_call = incoming(&p.b_events);
    p.b.answer(b_call, SDP, p.now);
    p.run_for(Duration::from_millis(10));
    assert!(!p.b_events.iter().any(|e| matches!(e, UaEvent::Confirmed { .. })), "the ACK was lost");
    assert!(p.a.reinvite(call, SDP, p.now));
    p.run_for(Duration::from_millis(10));
    assert!(p.b_events.iter().any(|e| matches!(e, UaEvent::Confirmed { call: c } if *c == b_call)));
    assert!(p.b_events.iter().any(|e| matches!(e, UaEvent::Reoffer { call: c, .. } if *c == b_call)));
    assert!(!p.b_sent.iter().any(|m| m.status() == Some(491)));
}

#[test]
fn a_challenged_invite_is_answered_once_with_digest_credentials() {
    use dialtone_sip::digest::{Algorithm, Answer, Challenge};
    for (password, succeeds) in [("secret", true), ("wrong", false)] {
        let mut p = Pair::new(false);
        let from = dialtone_sip::header::NameAddr::parse("<sip:trunk@example.test>").unwrap();
        let call = p.a.invite_from(from, b_uri(), SDP, &[], p.now);
        p.a.set_call_credentials(call, "trunk", password);
        p.pump();
        // Bob challenges the first INVITE (SHA-256, qop=auth).
        let first = incoming(&p.b_events);
        let ch = Challenge {
            realm: "example.test".into(),
            nonce: "abc".into(),
            opaque: None,
            algorithm: Algorithm::Sha256,
            qop_auth: true,
        };
        p.b.reject_with_headers(first, 401, None, &[("WWW-Authenticate", ch.to_header())], p.now);
        p.b_events.clear();
        p.run_for(Duration::from_millis(100));
        let invites: Vec<&Message> = p.a_sent.iter().filter(|m| is_method(m, Method::Invite)).collect();
        assert_eq!(invites.len(), 2, "one retry");
        assert_eq!(invites[1].cseq().unwrap().0, invites[0].cseq().unwrap().0 + 1);
        assert_ne!(invites[0].top_branch(), invites[1].top_branch(), "a new transaction");
        assert_eq!(invites[0].header("Call-ID"), invites[1].header("Call-ID"));
        let answer = Answer::parse(invites[1].header("Authorization").unwrap()).unwrap();
        assert_eq!(answer.verify("secret", "INVITE"), succeeds);
        let second = incoming(&p.b_events);
        if succeeds {
            p.b.answer(second, SDP, p.now);
            p.run_for(Duration::from_secs(1));
            assert!(p.a_events.iter().any(|e| matches!(e, UaEvent::Answered { call: c, .. } if *c == call)));
        } else {
            // A second challenge is not answered again: the call fails with it.
            p.b.reject_with_headers(second, 401, None, &[("WWW-Authenticate", ch.to_header())], p.now);
            p.run_for(Duration::from_secs(1));
            let n = p.a_sent.iter().filter(|m| is_method(m, Method::Invite)).count();
            assert_eq!(n, 2);
            assert!(p.a_events.iter().any(
                |e| matches!(e, UaEvent::Failed { call: c, failure } if *c == call && failure.status == 401)
            ));
        }
    }
}

//! Virtual-time tests of the switch: no sockets, no clock, no tasks. Each peer is a
//! client-mode sans-IO user agent of `dialtone-sip` wired to one flow of the switch;
//! the harness moves bytes both ways until quiet, and time moves only when a test
//! advances it (to each timer in turn).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dialtone_sip::header::Uri;
use dialtone_sip::ua::{CallId, Flow, Inbound, UaConfig, UaEvent, UserAgent};

use super::*;
use crate::accounts::Account;
use crate::records::RecordWrite;

const RING: Duration = Duration::from_secs(30);
const SDP: &str =
    "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

fn account() -> Account {
    Account {
        account_sid: format!("AC{}", "1".repeat(32)),
        auth_token: "t".repeat(32),
        api_key_sid: format!("SK{}", "2".repeat(32)),
        api_key_secret: "s".repeat(32),
    }
}

fn config() -> SwitchConfig {
    SwitchConfig {
        account: account(),
        domain: "dialtone.test".into(),
        public_host: None,
        trusted: vec![trunks::parse_network("10.9.0.0/16").unwrap()],
        ring_timeout: RING,
        max_message_size: 64 * 1024,
        applications: Vec::new(),
        trunks: Vec::new(),
        overload_delay: Duration::from_millis(100),
        udp_idle: Duration::from_secs(120),
        retry_after_secs: 2,
    }
}

struct Peer {
    ua: UserAgent,
    /// The flow it speaks on (a new one after a reconnect).
    flow: FlowId,
    events: Vec<UaEvent>,
    /// Answer every incoming call at once.
    auto_answer: bool,
}

/// The switch and its peers on virtual time.
struct Net {
    switch: Switch,
    now: Instant,
    peers: Vec<Peer>,
    next_flow: FlowId,
    /// Every output but bytes.
    outputs: Vec<Output>,
    /// Bytes held back from the switch (see [`Net::hold`]).
    held: Option<Vec<(FlowId, Vec<u8>)>>,
}

impl Net {
    fn new(cfg: SwitchConfig) -> Net {
        let now = Instant::now();
        Net {
            switch: Switch::new(cfg, now, 1_800_000_000_000),
            now,
            peers: Vec::new(),
            next_flow: 1,
            outputs: Vec::new(),
            held: None,
        }
    }

    fn open_flow(&mut self, remote: SocketAddr, reliable: bool) -> FlowId {
        let flow = self.next_flow;
        self.next_flow += 1;
        let transport = if reliable { "TCP" } else { "UDP" }.to_owned();
        let local: SocketAddr = "10.0.0.1:5060".parse().unwrap();
        self.switch.handle(Input::Open { flow, transport, local, remote, reliable }, self.now);
        flow
    }

    /// A client with a token for `identity`, on a new TCP flow.
    fn client(&mut self, identity: &str) -> usize {
        let n = self.peers.len();
        let remote: SocketAddr = format!("10.1.0.{}:{}", n + 2, 40000 + n).parse().unwrap();
        let flow = self.open_flow(remote, true);
        let mut c = UaConfig::new(identity, "dialtone.test");
        c.seed = 7 + n as u64;
        let mut ua =
            UserAgent::new(c, Flow { transport: "TCP".into(), local: remote.to_string(), reliable: true });
        ua.set_token(Some(crate::token::mint(&account(), identity, 3600, None).unwrap()));
        self.peers.push(Peer { ua, flow, events: Vec::new(), auto_answer: false });
        n
    }

    /// A registered client.
    fn registered(&mut self, identity: &str) -> usize {
        let p = self.client(identity);
        self.peers[p].ua.register(self.now);
        self.pump();
        assert!(
            self.take(p).iter().any(|e| matches!(e, UaEvent::Registered { .. })),
            "{identity} registered"
        );
        p
    }

    fn peer_of(&self, flow: FlowId) -> Option<usize> {
        self.peers.iter().position(|p| p.flow == flow)
    }

    /// Moves bytes both ways until nothing moves.
    fn pump(&mut self) {
        for _ in 0..1000 {
            let mut moved = false;
            while let Some(o) = self.switch.poll_output() {
                match o {
                    Output::Transmit { flow, bytes } => {
                        if let Some(p) = self.peer_of(flow) {
                            self.peers[p].ua.handle_input(&bytes, self.now);
                            moved = true;
                        }
                    }
                    o => self.outputs.push(o),
                }
            }
            for i in 0..self.peers.len() {
                while let Some(t) = self.peers[i].ua.poll_transmit() {
                    let bytes = match t {
                        dialtone_sip::ua::Transmit::Message(b) => b,
                        _ => continue,
                    };
                    let flow = self.peers[i].flow;
                    match &mut self.held {
                        Some(h) => h.push((flow, bytes)),
                        None => {
                            self.switch.handle(
                                Input::Data {
                                    flow,
                                    inbound: Inbound::parse(&bytes, 65_536),
                                    waited: Duration::ZERO,
                                },
                                self.now,
                            );
                            moved = true;
                        }
                    }
                }
                while let Some(e) = self.peers[i].ua.poll_event() {
                    match (&e, self.peers[i].auto_answer) {
                        (UaEvent::Incoming { call, .. }, true) => {
                            self.peers[i].ua.answer(*call, SDP, self.now)
                        }
                        // A client's agent answers a re-offer with its session.
                        (UaEvent::Reoffer { call, .. }, _) => {
                            self.peers[i].ua.answer_reoffer(*call, Some(SDP), self.now)
                        }
                        _ => {}
                    }
                    moved = true;
                    self.peers[i].events.push(e);
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the exchange never settled");
    }

    /// Holds what peers send from now on, instead of delivering it.
    fn hold(&mut self) {
        self.held = Some(Vec::new());
    }

    /// Stops holding; what was held (delivered by the caller, in any order).
    fn release(&mut self) -> Vec<(FlowId, Vec<u8>)> {
        self.pump();
        self.held.take().unwrap_or_default()
    }

    fn deliver(&mut self, flow: FlowId, bytes: Vec<u8>) {
        self.switch.handle(
            Input::Data { flow, inbound: Inbound::parse(&bytes, 65_536), waited: Duration::ZERO },
            self.now,
        );
        self.pump();
    }

    /// Moves time on by `d`, running every timer (the switch's and the peers') when due.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        for _ in 0..100_000 {
            let next = self
                .peers
                .iter()
                .filter_map(|p| p.ua.poll_timeout())
                .chain(self.switch.poll_timeout())
                .min()
                .filter(|t| *t <= end);
            let Some(t) = next else { break };
            self.now = self.now.max(t);
            self.switch.handle_timeout(self.now);
            for p in &mut self.peers {
                if p.ua.poll_timeout().is_some_and(|t| t <= self.now) {
                    p.ua.handle_timeout(self.now);
                }
            }
            self.pump();
        }
        self.now = end;
    }

    fn take(&mut self, p: usize) -> Vec<UaEvent> {
        std::mem::take(&mut self.peers[p].events)
    }

    fn call(&mut self, from: usize, to: &str) -> CallId {
        let uri = Uri::sip(Some(to), "dialtone.test");
        let c = self.peers[from].ua.invite(uri, SDP, &[], self.now);
        self.pump();
        c
    }

    fn incoming(&mut self, p: usize) -> Vec<CallId> {
        self.peers[p]
            .events
            .iter()
            .filter_map(|e| if let UaEvent::Incoming { call, .. } = e { Some(*call) } else { None })
            .collect()
    }

    fn records(&self) -> Vec<&RecordWrite> {
        self.outputs.iter().filter_map(|o| if let Output::Record(w) = o { Some(w) } else { None }).collect()
    }

    fn ended_status(&self, sid_prefix_any: bool) -> Vec<String> {
        let _ = sid_prefix_any;
        self.records()
            .into_iter()
            .filter_map(
                |w| if let RecordWrite::Ended { status, .. } = w { Some(status.clone()) } else { None },
            )
            .collect()
    }
}

fn failed_status(events: &[UaEvent]) -> Option<u16> {
    events
        .iter()
        .find_map(|e| if let UaEvent::Failed { failure, .. } = e { Some(failure.status) } else { None })
}

#[test]
fn an_unanswered_call_fails_at_the_ring_timeout_and_not_before() {
    let mut net = Net::new(config());
    let alice = net.registered("alice");
    let bob = net.registered("bob");
    net.call(alice, "bob");
    assert_eq!(net.incoming(bob).len(), 1, "bob's device rings");
    assert_eq!(net.switch.calls(), 1);
    net.advance(RING - Duration::from_millis(1));
    assert_eq!(failed_status(&net.take(alice)), None, "nothing fails before the timeout");
    assert_eq!(net.switch.calls(), 1);
    net.advance(Duration::from_millis(2));
    assert_eq!(failed_status(&net.take(alice)), Some(408), "the caller hears 408 at the timeout");
    assert!(
        net.take(bob).iter().any(|e| matches!(e, UaEvent::IncomingCancelled { .. })),
        "bob's device is cancelled"
    );
    assert_eq!(net.switch.calls(), 0);
    assert_eq!(net.ended_status(true), ["no-answer", "no-answer"], "both legs' records end no-answer");
}

#[test]
fn the_first_device_to_answer_wins_and_the_others_hear_completed_elsewhere() {
    let mut net = Net::new(config());
    let alice = net.registered("alice");
    let desk = net.registered("bob");
    let phone = net.registered("bob");
    let laptop = net.registered("bob");
    net.call(alice, "bob");
    for p in [desk, phone, laptop] {
        assert_eq!(net.incoming(p).len(), 1, "every device of bob rings in parallel");
    }
    let c = net.incoming(phone)[0];
    net.peers[phone].ua.answer(c, SDP, net.now);
    net.pump();
    assert!(net.take(alice).iter().any(|e| matches!(e, UaEvent::Answered { .. })));
    for p in [desk, laptop] {
        let reason = net.take(p).into_iter().find_map(|e| match e {
            UaEvent::IncomingCancelled { request, .. } => request.header("Reason").map(str::to_owned),
            _ => None,
        });
        assert!(reason.as_deref().is_some_and(|r| r.contains("cause=200")), "{reason:?}");
    }
    assert!(net.take(phone).iter().any(|e| matches!(e, UaEvent::Confirmed { .. })));
    assert_eq!(net.switch.calls(), 1);
    // The ring timeout of an answered call never fires.
    net.advance(RING * 2);
    assert_eq!(net.switch.calls(), 1);
    assert!(net.take(alice).iter().all(|e| !matches!(e, UaEvent::Ended { .. })));
}

/// The caller's CANCEL and a device's 200 cross: in either order both sides end up
/// hung up, and the switch keeps nothing.
#[test]
fn cancel_and_answer_that_cross_leave_nothing_behind() {
    for cancel_first in [true, false] {
        let mut net = Net::new(config());
        let alice = net.registered("alice");
        let bob = net.registered("bob");
        let call = net.call(alice, "bob");
        let c = net.incoming(bob)[0];
        net.hold();
        net.peers[alice].ua.hangup(call, net.now);
        net.peers[bob].ua.answer(c, SDP, net.now);
        let mut held = net.release();
        assert_eq!(held.len(), 2, "the CANCEL and the 200");
        let (af, bf) = (net.peers[alice].flow, net.peers[bob].flow);
        held.sort_by_key(|(f, _)| if cancel_first { u64::from(*f != af) } else { u64::from(*f != bf) });
        for (f, bytes) in held {
            net.deliver(f, bytes);
        }
        net.advance(Duration::from_secs(40));
        assert_eq!(net.switch.calls(), 0, "cancel first: {cancel_first}");
        let bob_events = net.take(bob);
        let bob_over =
            bob_events.iter().any(|e| matches!(e, UaEvent::Ended { .. } | UaEvent::IncomingCancelled { .. }));
        assert!(bob_over, "bob's leg ends (cancel first: {cancel_first}): {bob_events:?}");
        assert!(net.peers[alice].ua.calls().is_empty(), "alice keeps no call");
        assert!(net.peers[bob].ua.calls().is_empty(), "bob keeps no call (cancel first: {cancel_first})");
        assert_eq!(net.ended_status(true).len(), 2, "both legs' records end once");
    }
}

/// An answered call keeps its legs for 30 s when a client's connection drops: the
/// client that re-attaches on a new flow goes on talking; one that never comes back
/// ends the call at the window's end, and not before.
#[test]
fn the_reconnect_window() {
    for comes_back in [true, false] {
        let mut net = Net::new(config());
        let alice = net.registered("alice");
        let bob = net.registered("bob");
        net.peers[bob].auto_answer = true;
        let call = net.call(alice, "bob");
        assert!(net.take(alice).iter().any(|e| matches!(e, UaEvent::Answered { .. })));
        let bob_call = net.incoming(bob)[0];
        let old = net.peers[bob].flow;
        net.switch.handle(Input::Closed(old), net.now);
        net.pump();
        net.advance(Duration::from_secs(10));
        assert_eq!(net.switch.calls(), 1, "the call waits for bob");
        if comes_back {
            let remote: SocketAddr = "10.1.0.99:41000".parse().unwrap();
            let flow = net.open_flow(remote, true);
            net.peers[bob].flow = flow;
            let f = Flow { transport: "TCP".into(), local: remote.to_string(), reliable: true };
            net.peers[bob].ua.set_flow(f, net.now);
            net.pump();
            assert!(net.peers[bob].ua.reinvite(bob_call, SDP, net.now));
            net.pump();
            let events = net.take(bob);
            assert!(events.iter().any(|e| matches!(e, UaEvent::ReofferAnswered { .. })), "{events:?}");
            net.advance(Duration::from_secs(60));
            assert_eq!(net.switch.calls(), 1, "the re-attached call goes on");
            net.peers[alice].ua.hangup(call, net.now);
            net.pump();
            assert!(
                net.take(bob).iter().any(|e| matches!(e, UaEvent::Ended { by_peer: true, .. })),
                "alice's BYE reaches bob's new flow"
            );
            assert_eq!(net.switch.calls(), 0);
        } else {
            net.advance(Duration::from_secs(19));
            assert_eq!(net.switch.calls(), 1, "still inside the window");
            net.advance(Duration::from_secs(2));
            assert_eq!(net.switch.calls(), 0, "the window closed");
            assert!(
                net.take(alice).iter().any(|e| matches!(e, UaEvent::Ended { by_peer: true, .. })),
                "alice hears BYE"
            );
        }
    }
}

/// Ten thousand UDP peers each send a new INVITE at once, as a trunk's burst. Those
/// that waited past the bound get 503 with Retry-After; the rest are routed (to an
/// identity with no device: 480). Once idle, every peer is forgotten and no state is
/// left.
#[test]
fn a_burst_of_ten_thousand_flows_is_shed_then_forgotten() {
    let mut net = Net::new(config());
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    let mut retry_after = 0;
    let mut flows = Vec::new();
    for i in 0..10_000u32 {
        let remote: SocketAddr = format!("10.9.{}.{}:5060", i / 250, 1 + i % 250).parse().unwrap();
        let flow = net.open_flow(remote, false);
        flows.push(flow);
        let invite = format!(
            "INVITE sip:nobody@dialtone.test SIP/2.0\r\nVia: SIP/2.0/UDP {remote};branch=z9hG4bK{i}\r\nMax-Forwards: 70\r\nFrom: <sip:trunk@{remote}>;tag=t{i}\r\nTo: <sip:nobody@dialtone.test>\r\nCall-ID: burst-{i}\r\nCSeq: 1 INVITE\r\nContact: <sip:trunk@{remote}>\r\nContent-Length: 0\r\n\r\n"
        );
        // The later half of the burst waited in the inbox past the bound.
        let waited = if i >= 5_000 { Duration::from_millis(150) } else { Duration::ZERO };
        net.switch.handle(
            Input::Data { flow, inbound: Inbound::parse(invite.as_bytes(), 65_536), waited },
            net.now,
        );
        while let Some(o) = net.switch.poll_output() {
            match o {
                Output::Transmit { bytes, .. } => {
                    let m = dialtone_sip::message::Message::parse(&bytes, 65_536).unwrap();
                    let status = m.status().unwrap_or(0);
                    if status >= 200 {
                        *statuses.entry(status).or_default() += 1;
                        if status == 503 {
                            assert_eq!(m.header("Retry-After").map(str::trim), Some("2"));
                            retry_after += 1;
                        }
                    }
                }
                Output::LookupBindings { sid, child_sid, identity, params } => {
                    let input = Input::Bindings { sid, child_sid, identity, params, bindings: Vec::new() };
                    net.switch.handle(input, net.now);
                }
                _ => {}
            }
        }
    }
    assert_eq!(statuses.get(&503), Some(&5_000), "{statuses:?}");
    assert_eq!(retry_after, 5_000);
    assert_eq!(statuses.get(&480), Some(&5_000), "{statuses:?}");
    assert_eq!(net.switch.calls(), 0);
    assert_eq!(net.switch.flows.len(), 10_000);
    // The transactions finish (timer H/J), then the idle check forgets every peer.
    net.advance(Duration::from_secs(300));
    let forgotten = net.outputs.iter().filter(|o| matches!(o, Output::ForgetPeer { .. })).count();
    assert_eq!(forgotten, 10_000);
    assert_eq!(net.switch.flows.len(), 0, "no flow is kept");
    assert!(net.switch.poll_timeout().is_none(), "nothing is left to wake for");
    let _ = flows;
}

#[test]
fn a_pushed_identity_rings_when_it_registers_with_the_bridge_token() {
    let mut net = Net::new(config());
    let alice = net.registered("alice");
    net.call(alice, "carol");
    let lookup = net.outputs.iter().find_map(|o| match o {
        Output::LookupBindings { sid, child_sid, identity, .. } => {
            Some((sid.clone(), child_sid.clone(), identity.clone()))
        }
        _ => None,
    });
    let (sid, child_sid, identity) = lookup.expect("carol has no device: her push bindings are read");
    assert_eq!(identity, "carol");
    let binding = crate::store::Binding {
        sid: "BS1".into(),
        identity: "carol".into(),
        binding_type: "fcm".into(),
        address: "device-token".into(),
        gateway_url: "http://push.test/".into(),
        created: 0,
        credential_sid: None,
    };
    let input = Input::Bindings {
        sid,
        child_sid: child_sid.clone(),
        identity,
        params: BTreeMap::new(),
        bindings: vec![binding],
    };
    net.switch.handle(input, net.now);
    net.pump();
    let pushed = net.outputs.iter().find_map(|o| match o {
        Output::Push { body, .. } => Some(body.clone()),
        _ => None,
    });
    let body = pushed.expect("a push goes out");
    assert_eq!(body["twi_call_sid"], child_sid.as_str());
    let bridge = body["twi_bridge_token"].as_str().expect("with a bridge token").to_owned();
    let carol = net.client("carol");
    net.peers[carol].ua.set_register_headers(&[(dialtone_sip::wire::BRIDGE_TOKEN_HEADER, bridge)]);
    net.peers[carol].ua.register(net.now);
    net.pump();
    assert_eq!(net.incoming(carol).len(), 1, "carol's device rings once registered");
    let c = net.incoming(carol)[0];
    net.peers[carol].ua.answer(c, SDP, net.now);
    net.pump();
    assert!(net.take(alice).iter().any(|e| matches!(e, UaEvent::Answered { .. })));
}

/// A voice URL's `<Pause>` holds the call exactly as long as it says; its `<Dial
/// action>` hears the dial's status and how long the answered leg lasted, on the
/// switch's clock, and the action's TwiML runs next.
#[test]
fn pauses_hold_the_call_and_dial_actions_hear_the_duration() {
    let mut cfg = config();
    cfg.applications =
        vec![dialtone_core::config::ApplicationConfig::with_voice_url("APx", "http://app.test/voice/in")];
    let mut net = Net::new(cfg);
    let alice = net.registered("alice");
    let bob = net.registered("bob");
    let call = net.call(alice, "support");
    let fetch = |net: &mut Net| {
        let i = net.outputs.iter().position(|o| matches!(o, Output::Fetch { .. })).expect("a fetch");
        match net.outputs.remove(i) {
            Output::Fetch { sid, url, form, .. } => (sid, url, form.into_iter().collect::<HashMap<_, _>>()),
            _ => unreachable!(),
        }
    };
    let (sid, url, form) = fetch(&mut net);
    assert_eq!((url.as_str(), form["To"].as_str()), ("http://app.test/voice/in", "client:support"));
    let doc = r#"<Response><Pause length="3"/><Dial action="after"><Client>bob</Client></Dial></Response>"#;
    net.switch.handle(Input::Fetched { sid: sid.clone(), result: Ok(doc.into()) }, net.now);
    net.pump();
    net.advance(Duration::from_millis(2_999));
    assert!(net.incoming(bob).is_empty(), "the pause holds the call");
    net.advance(Duration::from_millis(2));
    assert_eq!(net.incoming(bob).len(), 1, "bob rings when the pause is over");
    let c = net.incoming(bob)[0];
    net.peers[bob].ua.answer(c, SDP, net.now);
    net.pump();
    assert!(net.take(alice).iter().any(|e| matches!(e, UaEvent::Answered { .. })));
    net.advance(Duration::from_secs(7));
    net.peers[bob].ua.hangup(c, net.now);
    net.pump();
    let (again, url, form) = fetch(&mut net);
    assert_eq!(again, sid);
    assert_eq!(url, "http://app.test/voice/after", "relative to the voice URL's directory");
    assert_eq!(form["DialCallStatus"], "completed");
    assert_eq!(form["DialCallDuration"], "7");
    assert_eq!(net.switch.calls(), 1, "the caller stays on for the action's TwiML");
    net.advance(Duration::from_secs(5));
    assert!(net.peers[alice].ua.is_established(call), "alice waits for the action's answer");
    net.switch.handle(Input::Fetched { sid, result: Ok("<Response><Hangup/></Response>".into()) }, net.now);
    net.pump();
    assert!(net.take(alice).iter().any(|e| matches!(e, UaEvent::Ended { by_peer: true, .. })));
    assert_eq!(net.switch.calls(), 0);
}

/// The catalogue code of a failure's `X-Dialtone-Error`.
fn error_code(f: &dialtone_sip::ua::Failure) -> Option<u32> {
    let h = f.response.as_ref()?.header(wire::ERROR_HEADER)?;
    h.trim().split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// The `Output::BindDevice` the switch asked for, taken out of the outputs.
fn take_bind(net: &mut Net) -> Option<(u64, String, String, String, bool)> {
    let i = net.outputs.iter().position(|o| matches!(o, Output::BindDevice { .. }))?;
    match net.outputs.remove(i) {
        Output::BindDevice { key, identity, credential_sid, device, remove } => {
            Some((key, identity, credential_sid, device, remove))
        }
        _ => None,
    }
}

#[test]
fn a_register_with_a_device_token_is_answered_once_the_device_is_bound() {
    let mut net = Net::new(config());
    let credential = format!("CR{}", "3".repeat(32));
    let p = net.client("frank");
    let token = crate::token::mint_voice(&account(), "frank", 3600, None, Some(&credential)).unwrap();
    net.peers[p].ua.set_token(Some(token));
    net.peers[p].ua.set_push_device(Some("good-frank-iphone")).unwrap();
    net.peers[p].ua.register(net.now);
    net.pump();
    // Nothing is answered before the store has the binding.
    let (key, identity, cred, device, remove) = take_bind(&mut net).expect("the device is to be bound");
    assert_eq!(
        (identity.as_str(), cred.as_str(), device.as_str(), remove),
        ("frank", credential.as_str(), "good-frank-iphone", false)
    );
    assert!(!net.take(p).iter().any(|e| matches!(e, UaEvent::Registered { .. })));
    net.switch.handle(Input::DeviceBound { key, result: Ok(()) }, net.now);
    net.pump();
    assert!(net.take(p).iter().any(|e| matches!(e, UaEvent::Registered { .. })), "registered once bound");
    assert_eq!(net.switch.registrations(net.now).get("frank"), Some(&1));

    // Unregistering names the device: its binding is removed.
    net.peers[p].ua.unregister(net.now);
    net.pump();
    let (key, _, _, device, remove) = take_bind(&mut net).expect("the device is to be unbound");
    assert_eq!((device.as_str(), remove), ("good-frank-iphone", true));
    net.switch.handle(Input::DeviceBound { key, result: Ok(()) }, net.now);
    net.pump();
    assert!(net.take(p).iter().any(|e| matches!(e, UaEvent::Unregistered)));

    // Registered again, then unregistered without naming the device: the contact goes,
    // the binding stays (nothing to unbind).
    net.peers[p].ua.register(net.now);
    net.pump();
    let (key, ..) = take_bind(&mut net).unwrap();
    net.switch.handle(Input::DeviceBound { key, result: Ok(()) }, net.now);
    net.pump();
    assert_eq!(net.switch.registrations(net.now).get("frank"), Some(&1));
    net.peers[p].ua.set_push_device(None).unwrap();
    net.peers[p].ua.unregister(net.now);
    net.pump();
    assert!(take_bind(&mut net).is_none(), "the device stays bound");
    assert!(net.take(p).iter().any(|e| matches!(e, UaEvent::Unregistered)));
    assert_eq!(net.switch.registrations(net.now).get("frank"), None, "the contact is gone");
    net.peers[p].ua.set_push_device(Some("good-frank-iphone")).unwrap();

    // A credential the store does not have: the REGISTER is refused with its code.
    net.peers[p].ua.register(net.now);
    net.pump();
    let (key, ..) = take_bind(&mut net).unwrap();
    let e = VoiceError::new(dialtone_core::ErrorCode::AccessTokenGrantsInvalid, "names no push credential");
    net.switch.handle(Input::DeviceBound { key, result: Err(e) }, net.now);
    net.pump();
    let failed = net.take(p).into_iter().find_map(|e| match e {
        UaEvent::RegistrationFailed(f) => Some(f),
        _ => None,
    });
    let failed = failed.expect("the REGISTER failed");
    assert_eq!((failed.status, error_code(&failed)), (403, Some(20106)), "{failed:?}");
}

#[test]
fn a_device_token_without_a_push_credential_is_refused_at_once() {
    let mut net = Net::new(config());
    let p = net.client("gina");
    net.peers[p].ua.set_push_device(Some("good-gina-pixel")).unwrap();
    net.peers[p].ua.register(net.now);
    net.pump();
    assert!(take_bind(&mut net).is_none(), "nothing to bind");
    let failed = net.take(p).into_iter().find_map(|e| match e {
        UaEvent::RegistrationFailed(f) => Some(f),
        _ => None,
    });
    assert_eq!(failed.map(|f| (f.status, error_code(&f))), Some((403, Some(20106))));
    assert!(net.peers[p].ua.set_push_device(Some("not a token!")).is_err(), "31100 for a bad token");
}

#[test]
fn a_device_token_that_is_not_one_is_refused_with_31100() {
    let mut net = Net::new(config());
    let p = net.client("hal");
    let token =
        crate::token::mint_voice(&account(), "hal", 3600, None, Some(&format!("CR{}", "3".repeat(32))))
            .unwrap();
    // A peer that is not the SDK: pn-prid may hold what a URI parameter may, such as "/".
    let flow = net.peers[p].flow;
    let register = format!(
        "REGISTER sip:dialtone.test SIP/2.0\r\nVia: SIP/2.0/TCP 10.1.0.2:40000;branch=z9hG4bKhal1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:hal@dialtone.test>;tag=h1\r\nTo: <sip:hal@dialtone.test>\r\n\
         Call-ID: hal-1\r\nCSeq: 1 REGISTER\r\n\
         Contact: <sip:hal@10.1.0.2:40000;transport=tcp;pn-prid=../../3/device/x>;expires=600\r\n\
         Authorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n"
    );
    net.switch.handle(
        Input::Data { flow, inbound: Inbound::parse(register.as_bytes(), 65_536), waited: Duration::ZERO },
        net.now,
    );
    assert!(take_bind(&mut net).is_none(), "nothing is bound");
    let sent: Vec<String> = std::iter::from_fn(|| net.switch.poll_output())
        .filter_map(|o| match o {
            Output::Transmit { bytes, .. } => Some(String::from_utf8_lossy(&bytes).into_owned()),
            _ => None,
        })
        .collect();
    let answer = sent.iter().find(|m| m.starts_with("SIP/2.0")).expect("an answer");
    assert!(answer.starts_with("SIP/2.0 400") && answer.contains("X-Dialtone-Error: 31100"), "{answer}");
    assert_eq!(net.switch.registrations(net.now).get("hal"), None);
}

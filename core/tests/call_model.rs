//! The rules of the call model, each checked through the public API with no network:
//! a scripted backend (records what the SDK asks, delivers what the test says) and the
//! in-memory loopback backend (two `Voice`s calling each other).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use dialtone_core::loopback::LoopbackNetwork;
use dialtone_core::*;
use uuid::Uuid;

// ---------- recording delegates ----------

#[derive(Default)]
struct Log(Mutex<Vec<String>>);

impl Log {
    fn push(&self, s: String) {
        self.0.lock().unwrap().push(s);
    }
    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    fn count(&self, prefix: &str) -> usize {
        self.all().iter().filter(|e| e.starts_with(prefix)).count()
    }
}

impl CallDelegate for Log {
    fn did_connect(&self, _: &Call) {
        self.push("connected".into())
    }
    fn did_fail_to_connect(&self, _: &Call, e: &VoiceError) {
        self.push(format!("failed {}", e.code()))
    }
    fn did_disconnect(&self, _: &Call, e: Option<&VoiceError>) {
        self.push(format!("disconnected {:?}", e.map(|e| e.code())))
    }
    fn did_start_ringing(&self, _: &Call) {
        self.push("ringing".into())
    }
    fn is_reconnecting(&self, _: &Call, e: &VoiceError) {
        self.push(format!("reconnecting {}", e.code()))
    }
    fn did_reconnect(&self, _: &Call) {
        self.push("reconnected".into())
    }
    fn did_receive_quality_warnings(
        &self,
        _: &Call,
        c: &BTreeSet<QualityWarning>,
        _: &BTreeSet<QualityWarning>,
    ) {
        self.push(format!("warnings {c:?}"))
    }
}

impl CallMessageDelegate for Log {
    fn did_receive_message(&self, sid: &str, m: &CallMessage) {
        self.push(format!("msg-received {sid} {}", m.content()))
    }
    fn did_send_message(&self, _: &str, id: &str) {
        self.push(format!("msg-sent {id}"))
    }
    fn did_fail_to_send_message(&self, _: &str, id: &str, e: &VoiceError) {
        self.push(format!("msg-failed {id} {}", e.code()))
    }
}

#[derive(Default)]
struct Invites {
    invites: Mutex<Vec<CallInvite>>,
    cancelled: Mutex<Vec<(CancelledCallInvite, u32)>>,
    messages: Arc<Log>,
}

impl Invites {
    fn take(&self) -> CallInvite {
        self.invites.lock().unwrap().pop().expect("an invite was reported")
    }
    fn cancelled(&self) -> usize {
        self.cancelled.lock().unwrap().len()
    }
}

impl NotificationDelegate for Invites {
    fn call_invite_received(&self, invite: CallInvite) {
        self.invites.lock().unwrap().push(invite);
    }
    fn cancelled_call_invite_received(&self, c: CancelledCallInvite, e: &VoiceError) {
        self.cancelled.lock().unwrap().push((c, e.code()));
    }
    fn call_message_delegate(&self) -> Option<Arc<dyn CallMessageDelegate>> {
        Some(self.messages.clone())
    }
}

// ---------- the scripted backend ----------

#[derive(Default)]
struct Scripted {
    links: Mutex<Vec<CallLink>>,
    requests: Mutex<Vec<String>>,
    commands: Mutex<Vec<(Uuid, CallCommand)>>,
    invite_commands: Mutex<Vec<(String, InviteCommand)>>,
}

impl Scripted {
    fn link(&self) -> CallLink {
        self.links.lock().unwrap().last().cloned().expect("a call was started")
    }
    fn hangups(&self) -> usize {
        self.commands.lock().unwrap().iter().filter(|(_, c)| *c == CallCommand::Hangup).count()
    }
}

#[async_trait]
impl VoiceBackend for Scripted {
    fn attach(&self, _: VoiceLink) {}
    async fn register(&self, _: &str, _: &str) -> Result<(), VoiceError> {
        Ok(())
    }
    async fn unregister(&self, _: &str, _: &str) -> Result<(), VoiceError> {
        Ok(())
    }
    fn start_call(&self, link: CallLink, request: CallRequest) {
        let r = match request {
            CallRequest::Connect(o) => format!("connect {}", o.to()),
            CallRequest::Accept { invite, .. } => {
                format!("accept {} {:?}", invite.call_sid, invite.bridge_token)
            }
            other => format!("{other:?}"),
        };
        self.requests.lock().unwrap().push(r);
        self.links.lock().unwrap().push(link);
    }
    fn call_command(&self, call: Uuid, command: CallCommand) {
        self.commands.lock().unwrap().push((call, command));
    }
    fn invite_command(&self, invite: &InviteDetails, command: InviteCommand) {
        self.invite_commands.lock().unwrap().push((invite.call_sid.clone(), command));
    }
    fn stats(&self, _: Uuid) -> Option<StatsReport> {
        None
    }
}

struct Fixture {
    voice: Voice,
    backend: Arc<Scripted>,
    insights: Arc<MemoryInsightsSink>,
    clock: Arc<ManualClock>,
    invites: Arc<Invites>,
}

fn fixture() -> Fixture {
    let backend = Arc::new(Scripted::default());
    let insights = Arc::new(MemoryInsightsSink::new());
    let clock = Arc::new(ManualClock::new());
    let voice = Voice::builder(backend.clone()).insights_sink(insights.clone()).clock(clock.clone()).build();
    Fixture { voice, backend, insights, clock, invites: Arc::new(Invites::default()) }
}

fn push_call(sid: &str) -> String {
    serde_json::json!({
        "twi_message_type": "twilio.voice.call",
        "twi_call_sid": sid,
        "twi_from": "client:alice",
        "twi_to": "bob",
        "twi_account_sid": "AC1",
        "twi_bridge_token": "bridge-1",
        "twi_params": "caller_first_name=alice&caller_last_name=smith",
        "twi_stir_status": "TN-Validation-Passed-B",
    })
    .to_string()
}

fn push_cancel(sid: &str) -> String {
    serde_json::json!({"twi_message_type": "twilio.voice.cancel", "twi_call_sid": sid, "twi_to": "bob"})
        .to_string()
}

impl Fixture {
    fn invite(&self, sid: &str) -> CallInvite {
        assert!(self.voice.handle_notification(push_call(sid), self.invites.clone()).unwrap());
        self.invites.take()
    }
}

// ---------- push payloads become invites ----------

#[test]
fn a_push_payload_becomes_an_invite_with_everything_it_carries() {
    let f = fixture();
    let invite = f.invite("CA1");
    assert_eq!(invite.call_sid(), "CA1");
    assert_eq!(invite.from(), Some("client:alice"));
    assert_eq!(invite.to(), "bob");
    assert_eq!(invite.custom_parameters()["caller_first_name"], "alice");
    assert_eq!(invite.custom_parameters()["caller_last_name"], "smith");
    assert_eq!(invite.caller_info().verified, Some(false));
    assert_eq!(f.insights.names(), ["connection/incoming"]);
    // accepting a push invite presents its bridge token
    invite.accept(Arc::new(Log::default()));
    assert_eq!(f.backend.requests.lock().unwrap()[0], r#"accept CA1 Some("bridge-1")"#);
}

#[test]
fn push_payloads_that_are_not_ours_or_are_broken() {
    let f = fixture();
    let mut map = std::collections::HashMap::new();
    map.insert("aps".to_string(), "alert".to_string());
    assert!(!f.voice.handle_notification(map, f.invites.clone()).unwrap());
    let err = f.voice.handle_notification(r#"{"twi_message_type":"twilio.voice.call"}"#, f.invites.clone());
    assert_eq!(err.unwrap_err().code(), 31100);
    assert!(f.invites.invites.lock().unwrap().is_empty());
}

// ---------- rule: accept always returns a call ----------

#[test]
fn accept_returns_a_call_that_connects() {
    let f = fixture();
    let log = Arc::new(Log::default());
    let call = f.invite("CA1").accept(log.clone());
    assert_eq!(call.state(), CallState::Connecting);
    assert_eq!(call.sid().as_deref(), Some("CA1"));
    assert_eq!(call.from().as_deref(), Some("client:alice"));
    f.backend.link().deliver(CallEvent::Connected);
    assert_eq!(log.all(), ["connected"]);
    assert_eq!(call.state(), CallState::Connected);
}

#[test]
fn accept_after_cancel_still_returns_a_call_that_fails_with_31008() {
    let f = fixture();
    let invite = f.invite("CA1");
    f.voice.handle_notification(push_cancel("CA1"), f.invites.clone()).unwrap();
    let log = Arc::new(Log::default());
    let call = invite.accept_with_options(AcceptOptions::builder().build(), log.clone());
    assert_eq!(log.all(), ["failed 31008"]);
    assert_eq!(call.state(), CallState::Disconnected);
    assert!(f.backend.requests.lock().unwrap().is_empty(), "nothing was sent for a cancelled invite");
}

#[test]
fn accepting_twice_gives_a_second_call_that_fails() {
    let f = fixture();
    let invite = f.invite("CA1");
    let first = Arc::new(Log::default());
    let second = Arc::new(Log::default());
    invite.accept(first.clone());
    let call = invite.accept(second.clone());
    assert_eq!(second.all(), ["failed 31000"]);
    assert_eq!(call.state(), CallState::Disconnected);
    assert_eq!(f.backend.requests.lock().unwrap().len(), 1);
    assert!(first.all().is_empty());
}

// ---------- rule: an accepted invite never reports ringing ----------

#[test]
fn an_accepted_invite_never_reports_ringing() {
    let f = fixture();
    let log = Arc::new(Log::default());
    let call = f.invite("CA1").accept(log.clone());
    let link = f.backend.link();
    link.deliver(CallEvent::Ringing);
    link.deliver(CallEvent::Connected);
    link.deliver(CallEvent::Ringing);
    assert_eq!(log.all(), ["connected"]);
    assert_eq!(call.state(), CallState::Connected);
    assert_eq!(f.insights.count(InsightsEventName::Ringing), 0);
}

// ---------- rule: reject ----------

#[test]
fn reject_publishes_rejected_by_local_and_the_31600_error() {
    let f = fixture();
    let invite = f.invite("CA1");
    invite.reject();
    invite.reject();
    let events = f.insights.events();
    let names: Vec<String> = events.iter().map(InsightsEvent::full_name).collect();
    assert_eq!(names, ["connection/incoming", "connection/rejected-by-local", "connection/error"]);
    let error = &events[2];
    assert_eq!(error.call_sid.as_deref(), Some("CA1"));
    assert_eq!(error.payload["code"], 31600);
    assert_eq!(error.payload["message"], "Busy Everywhere : SIP/2.0 600 Call Rejected");
    assert_eq!(error.level, InsightsLevel::Error);
    let sent = f.backend.invite_commands.lock().unwrap().clone();
    assert_eq!(sent, [("CA1".to_string(), InviteCommand::Reject)], "rejected once");
}

// ---------- rule: send_message on an invite ----------

#[test]
fn invite_messages_get_unique_ids_until_accepted_or_rejected() {
    let f = fixture();
    let invite = f.invite("CA1");
    let a = invite.send_message(CallMessage::new(r#"{"a":1}"#));
    let b = invite.send_message(CallMessage::new(r#"{"b":2}"#));
    assert!(!a.is_empty() && !b.is_empty() && a != b);
    let sent = f.backend.invite_commands.lock().unwrap().clone();
    assert_eq!(sent.len(), 2);
    let InviteCommand::SendMessage(m) = &sent[0].1 else { panic!("{sent:?}") };
    assert_eq!(m.voice_event_sid(), Some(a.as_str()));
    assert_eq!(m.content_type(), "application/json");
    invite.accept(Arc::new(Log::default()));
    assert_eq!(invite.send_message(CallMessage::new("{}")), "");

    let rejected = f.invite("CA2");
    assert!(!rejected.send_message(CallMessage::new("{}")).is_empty());
    rejected.reject();
    assert_eq!(rejected.send_message(CallMessage::new("{}")), "");
}

#[test]
fn invite_messages_over_10kb_or_over_10_a_minute_fail_with_their_codes() {
    let f = fixture();
    let invite = f.invite("CA1");
    let log = f.invites.messages.clone();
    let big = invite.send_message(CallMessage::new("x".repeat(10 * 1024 + 1)));
    assert_eq!(log.all(), [format!("msg-failed {big} 31212")]);
    let typed = invite.send_message(CallMessage::new("{}").with_message_type("other"));
    assert_eq!(log.all()[1], format!("msg-failed {typed} 31210"));
    for _ in 0..10 {
        invite.send_message(CallMessage::new("{}"));
        f.clock.advance(Duration::from_secs(1));
    }
    let eleventh = invite.send_message(CallMessage::new("{}"));
    assert_eq!(log.all().last().unwrap(), &format!("msg-failed {eleventh} 31206"));
    assert_eq!(log.count("msg-failed"), 3);
    assert_eq!(f.insights.count(InsightsEventName::MessageError), 3);
    // a minute after the first, there is room again
    f.clock.advance(Duration::from_secs(51));
    invite.send_message(CallMessage::new("{}"));
    assert_eq!(log.count("msg-failed"), 3);
    assert_eq!(f.backend.invite_commands.lock().unwrap().len(), 11);
}

#[test]
fn the_rate_limit_follows_the_invite_into_its_call() {
    let f = fixture();
    let invite = f.invite("CA1");
    for _ in 0..10 {
        invite.send_message(CallMessage::new("{}"));
    }
    let log = Arc::new(Log::default());
    let call = invite.accept_with_options(
        AcceptOptions::builder().call_message_delegate(log.clone()).build(),
        Arc::new(Log::default()),
    );
    f.backend.link().deliver(CallEvent::Connected);
    let id = call.send_message(CallMessage::new("{}"));
    assert_eq!(log.all(), [format!("msg-failed {id} 31206")]);
}

// ---------- rule: a cancelled invite is never reported after accept or reject ----------

#[test]
fn cancel_is_reported_for_a_pending_invite_once() {
    let f = fixture();
    f.invite("CA1");
    assert!(f.voice.handle_notification(push_cancel("CA1"), f.invites.clone()).unwrap());
    assert!(f.voice.handle_notification(push_cancel("CA1"), f.invites.clone()).unwrap());
    let cancelled = f.invites.cancelled.lock().unwrap().clone();
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0].0.call_sid(), "CA1");
    assert_eq!(cancelled[0].0.from(), Some("client:alice"));
    assert_eq!(cancelled[0].0.custom_parameters()["caller_last_name"], "smith");
    assert_eq!(cancelled[0].1, 31008);
    assert_eq!(f.insights.count(InsightsEventName::Cancel), 1);
}

#[test]
fn cancel_is_never_reported_after_accept_or_reject() {
    let f = fixture();
    f.invite("CA1").accept(Arc::new(Log::default()));
    f.invite("CA2").reject();
    f.voice.handle_notification(push_cancel("CA1"), f.invites.clone()).unwrap();
    f.voice.handle_notification(push_cancel("CA2"), f.invites.clone()).unwrap();
    assert_eq!(f.invites.cancelled(), 0);
    // a cancel for an invite this Voice never saw is still reported
    f.voice.handle_notification(push_cancel("CA3"), f.invites.clone()).unwrap();
    assert_eq!(f.invites.cancelled(), 1);
}

// ---------- rule: disconnect ----------

#[test]
fn disconnect_is_idempotent() {
    let f = fixture();
    let log = Arc::new(Log::default());
    let call =
        f.voice.connect(ConnectOptions::builder("token").param("to", "client:bob").build(), log.clone());
    let link = f.backend.link();
    link.deliver(CallEvent::SidAssigned("CA7".into()));
    link.deliver(CallEvent::Connected);
    call.disconnect();
    call.disconnect();
    call.clone().disconnect();
    link.deliver(CallEvent::Disconnected(None));
    assert_eq!(f.backend.hangups(), 1);
    assert_eq!(log.all(), ["connected", "disconnected None"]);
    assert_eq!(f.insights.count(InsightsEventName::DisconnectCalled), 1);
}

#[test]
fn a_remote_hangup_disconnects_with_no_error_and_a_failure_with_its_code() {
    let f = fixture();
    let log = Arc::new(Log::default());
    f.voice.connect(ConnectOptions::builder("token").param("to", "bob").build(), log.clone());
    let link = f.backend.link();
    link.deliver(CallEvent::Ringing);
    link.deliver(CallEvent::Connected);
    link.deliver(CallEvent::Disconnected(None));
    assert_eq!(log.all(), ["ringing", "connected", "disconnected None"]);

    let log = Arc::new(Log::default());
    f.voice.connect(ConnectOptions::builder("token").param("to", "bob").build(), log.clone());
    f.backend.link().deliver(CallEvent::FailedToConnect(VoiceError::from_sip_response(486, "Busy Here")));
    assert_eq!(log.all(), ["failed 31486"]);
}

#[test]
fn an_empty_token_fails_at_once_with_20101() {
    let f = fixture();
    let log = Arc::new(Log::default());
    let call = f.voice.connect(ConnectOptions::builder("").param("to", "bob").build(), log.clone());
    assert_eq!(log.all(), ["failed 20101"]);
    assert_eq!(call.state(), CallState::Disconnected);
    assert!(f.backend.requests.lock().unwrap().is_empty());
}

#[test]
fn reconnecting_and_quality_warnings_reach_the_delegate() {
    let f = fixture();
    let log = Arc::new(Log::default());
    f.voice.connect(ConnectOptions::builder("token").param("to", "bob").build(), log.clone());
    let link = f.backend.link();
    link.deliver(CallEvent::Connected);
    link.deliver(CallEvent::Reconnecting(VoiceError::from_kind(ErrorCode::SignalingConnectionDisconnected)));
    link.deliver(CallEvent::Reconnected);
    for _ in 0..3 {
        let mut s = QualitySample::default();
        s.jitter_ms = Some(80.0);
        link.deliver(CallEvent::QualitySample(s));
    }
    assert_eq!(log.all(), ["connected", "reconnecting 53001", "reconnected", "warnings {HighJitter}"]);
    assert_eq!(f.insights.count(InsightsEventName::WarningRaised(QualityWarning::HighJitter)), 1);
}

#[test]
fn digits_are_checked_and_forwarded() {
    let f = fixture();
    let call = f
        .voice
        .connect(ConnectOptions::builder("token").param("to", "bob").build(), Arc::new(Log::default()));
    assert_eq!(call.send_digits("12").unwrap_err().code(), 31000, "not connected yet");
    f.backend.link().deliver(CallEvent::Connected);
    assert_eq!(call.send_digits("12x").unwrap_err().code(), 31100);
    call.send_digits("1w2#*").unwrap();
    let cmds = f.backend.commands.lock().unwrap().clone();
    assert_eq!(cmds.last().unwrap().1, CallCommand::SendDigits("1w2#*".into()));
}

#[test]
fn insights_can_be_turned_off() {
    let f = fixture();
    f.voice.set_insights_enabled(false);
    f.invite("CA1").reject();
    assert!(f.insights.events().is_empty());
    assert!(!f.voice.insights_enabled());
}

// ---------- whole calls over the loopback backend ----------

struct Pair {
    alice: Voice,
    _bob: Voice,
    bob_invites: Arc<Invites>,
    alice_insights: Arc<MemoryInsightsSink>,
    bob_insights: Arc<MemoryInsightsSink>,
}

async fn pair() -> Pair {
    let net = LoopbackNetwork::new();
    let alice_insights = Arc::new(MemoryInsightsSink::new());
    let bob_insights = Arc::new(MemoryInsightsSink::new());
    let bob_invites = Arc::new(Invites::default());
    let alice = Voice::builder(net.backend("alice")).insights_sink(alice_insights.clone()).build();
    let bob = Voice::builder(net.backend("bob"))
        .insights_sink(bob_insights.clone())
        .incoming_delegate(bob_invites.clone())
        .build();
    bob.register("bob-token", "").await.unwrap();
    Pair { alice, _bob: bob, bob_invites, alice_insights, bob_insights }
}

fn connect_to_bob(alice: &Voice, log: Arc<Log>) -> Call {
    let options = ConnectOptions::builder("alice-token")
        .param("to", "client:bob")
        .param("caller_first_name", "alice")
        .call_message_delegate(log.clone())
        .build();
    alice.connect(options, log)
}

#[tokio::test]
async fn a_whole_call_in_memory() {
    let p = pair().await;
    let alice_log = Arc::new(Log::default());
    let call = connect_to_bob(&p.alice, alice_log.clone());
    assert_eq!(call.state(), CallState::Ringing);
    let invite = p.bob_invites.take();
    assert_eq!(invite.from(), Some("client:alice"));
    assert_eq!(invite.custom_parameters()["caller_first_name"], "alice");
    assert!(!invite.custom_parameters().contains_key("to"));
    assert_eq!(Some(invite.call_sid().to_owned()), call.sid());

    let bob_log = Arc::new(Log::default());
    let bob_call = invite.accept_with_options(
        AcceptOptions::builder().call_message_delegate(bob_log.clone()).build(),
        bob_log.clone(),
    );
    assert_eq!(call.state(), CallState::Connected);
    assert_eq!(bob_call.state(), CallState::Connected);
    assert_eq!(call.codec().as_deref(), Some("opus"));

    // settings/codec on both sides, accepted-by-local on bob's
    assert_eq!(p.bob_insights.count(InsightsEventName::AcceptedByLocal), 1);
    assert_eq!(p.bob_insights.count(InsightsEventName::Codec), 1);
    assert_eq!(p.alice_insights.count(InsightsEventName::Codec), 1);
    let codec = p.alice_insights.events().into_iter().find(|e| e.is(InsightsEventName::Codec)).unwrap();
    assert_eq!(codec.payload["codec"], "opus");

    // messages both ways
    let id = call.send_message(CallMessage::new(r#"{"hi":"bob"}"#));
    bob_call.send_message(CallMessage::new(r#"{"hi":"alice"}"#));
    let sid = call.sid().unwrap();
    assert!(bob_log.all().contains(&format!(r#"msg-received {sid} {{"hi":"bob"}}"#)));
    assert!(alice_log.all().contains(&format!(r#"msg-received {sid} {{"hi":"alice"}}"#)));
    assert!(alice_log.all().contains(&format!("msg-sent {id}")));

    // bob hangs up: alice hears a normal hang-up
    bob_call.disconnect();
    assert_eq!(alice_log.count("disconnected None"), 1);
    assert_eq!(bob_log.count("disconnected None"), 1);
    assert_eq!(alice_log.count("ringing"), 1);
    assert_eq!(bob_log.count("ringing"), 0);
}

#[tokio::test]
async fn loopback_reject_cancel_and_codec_mismatch() {
    let p = pair().await;
    // reject: alice fails with 31600
    let log = Arc::new(Log::default());
    connect_to_bob(&p.alice, log.clone());
    p.bob_invites.take().reject();
    assert_eq!(log.all(), ["ringing", "failed 31600"]);

    // alice hangs up while ringing: bob's invite is cancelled with 31008
    let log = Arc::new(Log::default());
    let call = connect_to_bob(&p.alice, log.clone());
    call.disconnect();
    assert_eq!(log.all(), ["ringing", "disconnected None"]);
    assert_eq!(p.bob_invites.cancelled(), 1);
    let late = p.bob_invites.take().accept(Arc::new(Log::default()));
    assert_eq!(late.state(), CallState::Disconnected);

    // no codec in common: 53404 on both sides
    let log = Arc::new(Log::default());
    let options = ConnectOptions::builder("t")
        .param("to", "client:bob")
        .preferred_audio_codecs(vec![PreferredCodec::Pcmu])
        .build();
    p.alice.connect(options, log.clone());
    let bob_log = Arc::new(Log::default());
    let opus_only = AcceptOptions::builder()
        .preferred_audio_codecs(vec![PreferredCodec::Opus { max_average_bitrate: None }])
        .build();
    p.bob_invites.take().accept_with_options(opus_only, bob_log.clone());
    assert_eq!(log.all(), ["ringing", "failed 53404"]);
    assert_eq!(bob_log.all(), ["failed 53404"]);

    // nobody registered: 31404
    let log = Arc::new(Log::default());
    p.alice.connect(ConnectOptions::builder("t").param("to", "client:carol").build(), log.clone());
    assert_eq!(log.all(), ["failed 31404"]);
}

//! `dialtone demo`: alice calls bob with custom parameters; bob prints the invite and
//! accepts; both send a call message; alice sends digits, mutes, unmutes, holds and
//! resumes, then hangs up. Every delegate callback and the insights events of both
//! sides are printed. It fails (exit 1, with the catalogue code) if any step does not
//! happen as the call model promises.

use std::collections::BTreeSet;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use dialtone_core::loopback::LoopbackNetwork;
use dialtone_core::{
    AcceptOptions, Call, CallDelegate, CallInvite, CallMessage, CallMessageDelegate, CallState,
    CancelledCallInvite, ConnectOptions, ErrorCode, MemoryInsightsSink, NotificationDelegate, QualityWarning,
    Voice, VoiceError,
};

/// What a party's delegates saw, in order, for the final check.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Invite(String),
    Ringing,
    Connected,
    Disconnected(Option<u32>),
    Failed(u32),
    MessageReceived(String),
    MessageSent,
}

struct Party {
    name: &'static str,
    seen: mpsc::Sender<Seen>,
    invites: Mutex<Vec<CallInvite>>,
}

impl Party {
    fn say(&self, what: impl AsRef<str>) {
        println!("[{:<5}] {}", self.name, what.as_ref());
    }
    fn saw(&self, s: Seen) {
        // The receiver lives as long as the demo; a send can only fail after it returns.
        let _ = self.seen.send(s);
    }
}

impl CallDelegate for Party {
    fn did_start_ringing(&self, call: &Call) {
        self.say(format!("ringing (call SID {})", call.sid().unwrap_or_default()));
        self.saw(Seen::Ringing);
    }
    fn did_connect(&self, call: &Call) {
        self.say(format!("connected, codec {}", call.codec().unwrap_or_else(|| "none".into())));
        self.saw(Seen::Connected);
    }
    fn did_fail_to_connect(&self, _: &Call, error: &VoiceError) {
        self.say(format!("failed to connect: {error}"));
        self.saw(Seen::Failed(error.code()));
    }
    fn did_disconnect(&self, _: &Call, error: Option<&VoiceError>) {
        match error {
            None => self.say("disconnected (normal hang-up)"),
            Some(e) => self.say(format!("disconnected: {e}")),
        }
        self.saw(Seen::Disconnected(error.map(VoiceError::code)));
    }
    fn did_receive_quality_warnings(
        &self,
        _: &Call,
        current: &BTreeSet<QualityWarning>,
        _: &BTreeSet<QualityWarning>,
    ) {
        self.say(format!("quality warnings now {current:?}"));
    }
}

impl CallMessageDelegate for Party {
    fn did_receive_message(&self, _: &str, message: &CallMessage) {
        self.say(format!("message received ({}): {}", message.content_type(), message.content()));
        self.saw(Seen::MessageReceived(message.content().to_owned()));
    }
    fn did_send_message(&self, _: &str, voice_event_sid: &str) {
        self.say(format!("message {voice_event_sid} delivered"));
        self.saw(Seen::MessageSent);
    }
    fn did_fail_to_send_message(&self, _: &str, voice_event_sid: &str, error: &VoiceError) {
        self.say(format!("message {voice_event_sid} failed: {error}"));
    }
}

impl NotificationDelegate for Party {
    fn call_invite_received(&self, invite: CallInvite) {
        self.say(format!(
            "invite: from {} to {}, call SID {}",
            invite.from().unwrap_or("(unknown)"),
            invite.to(),
            invite.call_sid()
        ));
        for (k, v) in invite.custom_parameters() {
            self.say(format!("  custom parameter {k} = {v}"));
        }
        let verified = match invite.caller_info().verified {
            Some(true) => "verified (SHAKEN/STIR A)",
            Some(false) => "not verified",
            None => "unknown",
        };
        self.say(format!("  caller: {verified}"));
        self.saw(Seen::Invite(invite.call_sid().to_owned()));
        self.invites.lock().unwrap_or_else(|p| p.into_inner()).push(invite);
    }
    fn cancelled_call_invite_received(&self, cancelled: CancelledCallInvite, error: &VoiceError) {
        self.say(format!("invite {} cancelled: {error}", cancelled.call_sid()));
    }
}

fn step_failed(what: &str) -> VoiceError {
    VoiceError::new(ErrorCode::UnknownError, format!("demo step failed: {what}"))
}

/// Waits for the next thing a party saw.
fn next(rx: &mpsc::Receiver<Seen>, what: &str) -> Result<Seen, VoiceError> {
    rx.recv_timeout(Duration::from_secs(5)).map_err(|_| step_failed(&format!("no {what}")))
}

fn expect(rx: &mpsc::Receiver<Seen>, want: Seen, what: &str) -> Result<(), VoiceError> {
    let got = next(rx, what)?;
    if got == want {
        Ok(())
    } else {
        Err(step_failed(&format!("expected {what}, got {got:?}")))
    }
}

/// Runs the demo.
pub(crate) fn run() -> Result<(), VoiceError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| VoiceError::new(ErrorCode::UnknownError, format!("cannot start the runtime: {e}")))?;
    println!("Dialtone {} demo: alice calls bob.", Voice::version());
    println!(
        "This build runs the call model over the in-memory loopback backend: no sockets and no audio yet\n\
         (the SIP, server and media parts replace it as they land).\n"
    );

    let (alice_tx, alice_rx) = mpsc::channel();
    let (bob_tx, bob_rx) = mpsc::channel();
    let alice = Arc::new(Party { name: "alice", seen: alice_tx, invites: Mutex::default() });
    let bob = Arc::new(Party { name: "bob", seen: bob_tx, invites: Mutex::default() });
    let alice_insights = Arc::new(MemoryInsightsSink::new());
    let bob_insights = Arc::new(MemoryInsightsSink::new());

    let net = LoopbackNetwork::new();
    let alice_voice = Voice::builder(net.backend("alice")).insights_sink(alice_insights.clone()).build();
    let bob_voice = Voice::builder(net.backend("bob"))
        .insights_sink(bob_insights.clone())
        .incoming_delegate(bob.clone())
        .build();
    rt.block_on(bob_voice.register("dev-token-bob", ""))?;
    bob.say("registered as bob");

    alice.say("calling client:bob with caller_first_name=alice, caller_last_name=smith");
    let options = ConnectOptions::builder("dev-token-alice")
        .param("to", "client:bob")
        .param("caller_first_name", "alice")
        .param("caller_last_name", "smith")
        .call_message_delegate(alice.clone())
        .build();
    let call = alice_voice.connect(options, alice.clone());
    expect(&alice_rx, Seen::Ringing, "ringing")?;
    let Seen::Invite(sid) = next(&bob_rx, "invite")? else { return Err(step_failed("bob got no invite")) };
    let invite = bob.invites.lock().unwrap_or_else(|p| p.into_inner()).pop();
    let invite =
        invite.filter(|i| i.call_sid() == sid).ok_or_else(|| step_failed("the invite went missing"))?;
    if invite.custom_parameters().get("caller_last_name").map(String::as_str) != Some("smith") {
        return Err(step_failed("the custom parameters did not arrive"));
    }

    bob.say("accepting");
    let bob_call = invite.accept_with_options(
        AcceptOptions::builder().call_message_delegate(bob.clone()).build(),
        bob.clone(),
    );
    expect(&alice_rx, Seen::Connected, "alice connected")?;
    expect(&bob_rx, Seen::Connected, "bob connected")?;

    let hello_bob = r#"{"greeting":"hello bob"}"#;
    let hello_alice = r#"{"greeting":"hello alice"}"#;
    alice.say(format!("sending message {hello_bob}"));
    call.send_message(CallMessage::new(hello_bob));
    expect(&bob_rx, Seen::MessageReceived(hello_bob.into()), "bob's message")?;
    expect(&alice_rx, Seen::MessageSent, "alice's delivery report")?;
    bob.say(format!("sending message {hello_alice}"));
    bob_call.send_message(CallMessage::new(hello_alice));
    expect(&alice_rx, Seen::MessageReceived(hello_alice.into()), "alice's message")?;
    expect(&bob_rx, Seen::MessageSent, "bob's delivery report")?;

    call.send_digits("1234#")?;
    alice.say("sent digits 1234# (carried by the media engine once it lands)");
    let report = |label: &str| {
        alice.say(format!("{label} (muted: {}, on hold: {})", call.is_muted(), call.is_on_hold()))
    };
    call.mute(true);
    report("muted");
    call.mute(false);
    report("unmuted");
    call.hold(true);
    report("on hold");
    call.hold(false);
    report("resumed");

    alice.say("hanging up");
    call.disconnect();
    expect(&alice_rx, Seen::Disconnected(None), "alice's hang-up")?;
    expect(&bob_rx, Seen::Disconnected(None), "bob's hang-up report")?;
    if call.state() != CallState::Disconnected || bob_call.state() != CallState::Disconnected {
        return Err(step_failed("a call did not end"));
    }

    for (name, sink) in [("alice", &alice_insights), ("bob", &bob_insights)] {
        println!("\n[{name:<5}] insights events: {}", sink.names().join(", "));
    }
    println!("\nThe call ended normally on both sides.");
    drop(bob_voice);
    Ok(())
}

//! `dialtone demo`: the embedded server starts in this process on free loopback ports,
//! and two clients, alice and bob, register with it over WebSocket. Alice calls
//! `client:bob` with custom parameters; bob prints the invite and accepts; the shared
//! speech flows both ways over Opus with SRTP for about ten seconds while a status line
//! shows state, codec, MOS, jitter, loss, RTT and levels; both send a call message;
//! alice sends digits (bob reports them), mutes, unmutes, holds and resumes, then hangs
//! up. Both print a stats summary and the WAV files of what they heard. It fails (exit
//! 1, with the catalogue code) if any step does not happen as promised.

use dialtone_insights_http::HttpInsightsSink;
use std::collections::BTreeSet;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use dialtone_core::config::ServerConfig;
use dialtone_core::{
    Call, CallDelegate, CallInvite, CallMessage, CallMessageDelegate, CallState, CancelledCallInvite,
    ErrorCode, InsightsSink, NotificationDelegate, QualityWarning, StatsReport, Voice, VoiceError,
};

use crate::stack::{self, ClientSetup};

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
    Digits(String),
}

struct Party {
    name: &'static str,
    seen: mpsc::Sender<Seen>,
    invites: Mutex<Vec<CallInvite>>,
}

/// Whether a status line is being updated in place (a terminal), so the next line
/// must start below it.
static STATUS_PENDING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn println_below(line: &str) {
    if STATUS_PENDING.swap(false, std::sync::atomic::Ordering::SeqCst) {
        println!();
    }
    println!("{line}");
}

impl Party {
    fn say(&self, what: impl AsRef<str>) {
        println_below(&format!("[{:<5}] {}", self.name, what.as_ref()));
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
    fn did_receive_digits(&self, _: &Call, digits: &str) {
        self.say(format!("digits received: {digits}"));
        self.saw(Seen::Digits(digits.to_owned()));
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
    rx.recv_timeout(Duration::from_secs(10)).map_err(|_| step_failed(&format!("no {what}")))
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
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(|e| {
            VoiceError::new(ErrorCode::UnknownError, format!("cannot start the runtime: {e}"))
        })?;
    let _enter = rt.enter();
    println!("Dialtone {} demo: alice calls bob through the embedded server.\n", Voice::version());

    // A scratch home for the server (development account, CA, no database file) and
    // for the recordings.
    let home = std::env::temp_dir().join(format!("dialtone-demo-{}", std::process::id()));
    std::fs::create_dir_all(&home).map_err(|e| {
        VoiceError::new(ErrorCode::UnknownError, format!("cannot create {}: {e}", home.display()))
    })?;
    let mut cfg = ServerConfig::default();
    cfg.sip_udp_port = 0;
    cfg.sip_tcp_port = 0;
    cfg.sip_tls_port = 0;
    cfg.ws_port = 0;
    cfg.wss_port = 0;
    cfg.http_port = 0;
    cfg.data_dir = Some(home.join("server"));
    cfg.database_url = Some("sqlite::memory:".into());
    let server = rt
        .block_on(dialtone_server::Server::start(&cfg))
        .map_err(|e| VoiceError::new(ErrorCode::UnknownError, format!("the server did not start: {e}")))?;
    println!("[server] SIP over WebSocket at {}", server.addresses().ws_url());

    let speech = stack::shared_speech(48_000);
    if speech.is_none() {
        eprintln!("dialtone demo: ../shared/audio/speech-48k.wav not found (set DIALTONE_SHARED_AUDIO); sending silence");
    }
    let (alice_tx, alice_rx) = mpsc::channel();
    let (bob_tx, bob_rx) = mpsc::channel();
    let alice = Arc::new(Party { name: "alice", seen: alice_tx, invites: Mutex::default() });
    let bob = Arc::new(Party { name: "bob", seen: bob_tx, invites: Mutex::default() });
    let alice_token = server.mint_token("alice", 3600)?;
    let bob_token = server.mint_token("bob", 3600)?;
    // Both clients post their insights events to the server, which stores them.
    let insights_url = format!("http://{}/v1/Insights/Events", server.addresses().http);
    let alice_insights = Arc::new(HttpInsightsSink::new(insights_url.clone(), alice_token.clone()));
    let bob_insights = Arc::new(HttpInsightsSink::new(insights_url, bob_token.clone()));
    // The clients are built from the loaded configuration (dialtone.toml, the
    // environment), pointed at this server.
    let mut client_cfg = crate::server_cmd::load_config(None)?;
    client_cfg.client.server = server.addresses().ws_url();
    let registry = Arc::new(stack::registry(&client_cfg));
    let setup = |name: &str, insights: &Arc<HttpInsightsSink>| ClientSetup {
        config: client_cfg.clone(),
        registry: registry.clone(),
        ca_file: None,
        play: speech.clone(),
        record: Some(home.join(format!("{name}-heard.wav"))),
        audio_backend: None,
        insights: Some(Some(insights.clone() as Arc<dyn InsightsSink>)),
    };
    let (alice_voice, alice_agent, alice_wavs) = stack::build(setup("alice", &alice_insights), None)?;
    let (bob_voice, bob_agent, bob_wavs) = stack::build(setup("bob", &bob_insights), Some(bob.clone()))?;
    rt.block_on(bob_voice.register(&bob_token, ""))?;
    bob.say("registered as bob");

    alice.say("calling client:bob with caller_first_name=alice, caller_last_name=smith");
    let options = stack::connect_options(&client_cfg, alice_token)
        .param("to", "client:bob")
        .param("caller_first_name", "alice")
        .param("caller_last_name", "smith")
        .call_message_delegate(alice.clone())
        .build();
    let call = alice_voice.connect(options, alice.clone());
    let Seen::Invite(sid) = next(&bob_rx, "invite")? else { return Err(step_failed("bob got no invite")) };
    expect(&alice_rx, Seen::Ringing, "ringing")?;
    let invite = bob.invites.lock().unwrap_or_else(|p| p.into_inner()).pop();
    let invite =
        invite.filter(|i| i.call_sid() == sid).ok_or_else(|| step_failed("the invite went missing"))?;
    if invite.custom_parameters().get("caller_last_name").map(String::as_str) != Some("smith") {
        return Err(step_failed("the custom parameters did not arrive"));
    }

    bob.say("accepting");
    let bob_call = invite.accept_with_options(
        stack::accept_options(&client_cfg).call_message_delegate(bob.clone()).build(),
        bob.clone(),
    );
    expect(&alice_rx, Seen::Connected, "alice connected")?;
    expect(&bob_rx, Seen::Connected, "bob connected")?;

    let tty = std::io::stdout().is_terminal();
    let status = |second: u32| {
        let line = format!(
            "{second:>2}s alice: {} | bob: {}",
            status_line(&call, call.stats().as_ref()),
            status_line(&bob_call, bob_call.stats().as_ref())
        );
        if tty {
            print!("\r\x1b[2K{line}");
            let _ = std::io::stdout().flush();
            STATUS_PENDING.store(true, std::sync::atomic::Ordering::SeqCst);
        } else {
            println!("[status] {line}");
        }
    };
    let hello_bob = r#"{"greeting":"hello bob"}"#;
    let hello_alice = r#"{"greeting":"hello alice"}"#;
    for second in 1..=10u32 {
        std::thread::sleep(Duration::from_secs(1));
        status(second);
        match second {
            2 => {
                call.send_digits("1234#")?;
                alice.say("sent digits 1234#");
                let mut got = String::new();
                while got.len() < 5 {
                    match next(&bob_rx, "digits")? {
                        Seen::Digits(d) => got.push_str(&d),
                        other => return Err(step_failed(&format!("expected digits, got {other:?}"))),
                    }
                }
                if got != "1234#" {
                    return Err(step_failed(&format!("bob heard digits {got:?}")));
                }
            }
            3 => {
                call.send_message(CallMessage::new(hello_bob));
                expect(&bob_rx, Seen::MessageReceived(hello_bob.into()), "bob's message")?;
                expect(&alice_rx, Seen::MessageSent, "alice's delivery report")?;
                bob_call.send_message(CallMessage::new(hello_alice));
                expect(&alice_rx, Seen::MessageReceived(hello_alice.into()), "alice's message")?;
                expect(&bob_rx, Seen::MessageSent, "bob's delivery report")?;
            }
            4 => {
                call.mute(true);
                alice.say("muted");
            }
            5 => {
                call.mute(false);
                alice.say("unmuted");
            }
            6 => {
                call.hold(true);
                alice.say("on hold");
            }
            7 => {
                call.hold(false);
                alice.say("resumed");
            }
            _ => {}
        }
    }
    let summaries = [("alice", call.stats()), ("bob", bob_call.stats())];
    alice.say("hanging up");
    call.disconnect();
    expect(&alice_rx, Seen::Disconnected(None), "alice's hang-up")?;
    expect(&bob_rx, Seen::Disconnected(None), "bob's hang-up report")?;
    if call.state() != CallState::Disconnected || bob_call.state() != CallState::Disconnected {
        return Err(step_failed("a call did not end"));
    }
    for (name, stats) in summaries {
        println_below(&format!("[{name:<5}] summary: {}", summary(stats.as_ref())));
    }
    // Let the renderers close their files.
    std::thread::sleep(Duration::from_millis(300));
    // The clients go before the server, so that nobody sees a connection drop.
    let _ = rt.block_on(bob_voice.unregister(&bob_token, ""));
    drop(alice_voice);
    drop(bob_voice);
    drop(alice_agent);
    drop(bob_agent);
    std::thread::sleep(Duration::from_millis(200));
    for (name, wavs) in [("alice", &alice_wavs), ("bob", &bob_wavs)] {
        let list: Vec<PathBuf> = wavs.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for w in list {
            let level = stack::wav_rms(&w).unwrap_or(0.0);
            println!("[{name:<5}] heard audio written to {} (RMS {level:.0})", w.display());
            if speech.is_some() && level < 100.0 {
                return Err(step_failed(&format!("{name}'s recording is silent")));
            }
        }
    }
    for (name, sink) in [("alice", &alice_insights), ("bob", &bob_insights)] {
        sink.flush(Duration::from_secs(5));
        println!(
            "[{name:<5}] {} insights events stored by the server (GET /v1/Insights/Events), {} lost",
            sink.sent(),
            sink.dropped()
        );
    }
    println!("\nThe call ended normally on both sides.");
    drop(server);
    Ok(())
}

fn status_line(call: &Call, stats: Option<&StatsReport>) -> String {
    let state = format!("{:?}", call.state()).to_lowercase();
    let Some(s) = stats else { return format!("{state}, no media yet") };
    let local = s.local_audio_tracks.first();
    let remote = s.remote_audio_tracks.first();
    let codec = local.map(|l| l.codec.clone()).unwrap_or_default();
    let mos = remote.and_then(|r| r.mos).map_or("-".into(), |m| format!("{m:.2}"));
    let jitter = remote.map_or(0.0, |r| r.jitter_ms);
    let lost = remote.map_or(0, |r| r.packets_lost);
    let rtt = local.and_then(|l| l.round_trip_time_ms).map_or("-".into(), |r| format!("{r:.0} ms"));
    let level_in = local.map_or(0, |l| l.audio_level);
    let level_out = remote.map_or(0, |r| r.audio_level);
    format!(
        "{state} {codec} MOS {mos} jitter {jitter:.1} ms lost {lost} RTT {rtt} level in {level_in:>5} out {level_out:>5}"
    )
}

fn summary(stats: Option<&StatsReport>) -> String {
    let Some(s) = stats else { return "no media statistics".into() };
    let local = s.local_audio_tracks.first();
    let remote = s.remote_audio_tracks.first();
    format!(
        "codec {}, sent {} packets ({} bytes), received {} packets ({} bytes), lost {}, jitter {:.1} ms, MOS {}",
        local.map(|l| l.codec.as_str()).unwrap_or("-"),
        local.map_or(0, |l| l.packets_sent),
        local.map_or(0, |l| l.bytes_sent),
        remote.map_or(0, |r| r.packets_received),
        remote.map_or(0, |r| r.bytes_received),
        remote.map_or(0, |r| r.packets_lost),
        remote.map_or(0.0, |r| r.jitter_ms),
        remote.and_then(|r| r.mos).map_or("-".into(), |m| format!("{m:.2}")),
    )
}

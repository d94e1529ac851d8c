//! `dialtone listen` and `dialtone call`: a client registering and handling invites,
//! or placing one call, reporting every event as a line (JSON with `--json`; the
//! schema is docs/cli-events.md). Logs go to stderr.

use dialtone_insights_http::HttpInsightsSink;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dialtone_core::{
    Call, CallDelegate, CallInvite, CallMessage, CallMessageDelegate, CallState, CancelledCallInvite, Config,
    ErrorCode, InsightsSink, NotificationDelegate, QualityWarning, VoiceError,
};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::stack::{self, ClientSetup};

/// Options every client command takes.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ClientArgs {
    /// The identity to register or call as.
    #[arg(long)]
    pub(crate) identity: String,
    /// The signaling server (ws://, wss://, sip: or sips:); default: the configured
    /// client.server, which defaults to the embedded server's ws://127.0.0.1:5066.
    #[arg(long)]
    pub(crate) server: Option<String>,
    /// An access token; default: one minted from the configured (or development) key.
    #[arg(long)]
    pub(crate) token: Option<String>,
    /// A PEM CA file to trust for wss:// and sips:// (default: client.tls_ca_file, else
    /// the development server's CA in the data directory, if there is one).
    #[arg(long)]
    pub(crate) ca_file: Option<PathBuf>,
    /// A WAV file played into the call (looped).
    #[arg(long)]
    pub(crate) play: Option<PathBuf>,
    /// Where received audio is written (WAV).
    #[arg(long)]
    pub(crate) record: Option<PathBuf>,
    /// One JSON object per line on stdout.
    #[arg(long)]
    pub(crate) json: bool,
    /// A TOML configuration file.
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// The audio backend when no file is given: cpal (OS devices) or synthetic
    /// (default: the configured audio.backend).
    #[arg(long)]
    pub(crate) audio_backend: Option<String>,
}

/// Prints events.
#[derive(Clone)]
struct Emitter {
    json: bool,
}

impl Emitter {
    fn emit(&self, event: &str, fields: Value) {
        let mut obj = match fields {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        if self.json {
            obj.insert("event".into(), json!(event));
            #[allow(clippy::print_stdout)]
            {
                println!("{}", Value::Object(obj));
            }
        } else {
            let rest: Vec<String> = obj.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("{event} {}", rest.join(" "));
        }
    }
}

fn error_json(e: Option<&VoiceError>) -> Value {
    match e {
        None => Value::Null,
        Some(e) => json!({"code": e.code(), "name": e.name(), "message": e.message()}),
    }
}

/// How a command's calls ended.
#[derive(Debug)]
enum Outcome {
    Ended(Option<VoiceError>),
}

struct Reporter {
    out: Emitter,
    done: mpsc::UnboundedSender<Outcome>,
    calls: Arc<Mutex<Vec<Call>>>,
    mode: ListenMode,
    config: Arc<Config>,
}

impl Reporter {
    fn sid(call: &Call) -> Value {
        call.sid().map_or(Value::Null, Value::from)
    }
}

impl CallDelegate for Reporter {
    fn did_start_ringing(&self, call: &Call) {
        self.out.emit("ringing", json!({"call_sid": Self::sid(call)}));
    }
    fn did_connect(&self, call: &Call) {
        self.out.emit("connected", json!({"call_sid": Self::sid(call), "codec": call.codec()}));
    }
    fn did_fail_to_connect(&self, call: &Call, error: &VoiceError) {
        self.out.emit("disconnected", json!({"call_sid": Self::sid(call), "error": error_json(Some(error))}));
        let _ = self.done.send(Outcome::Ended(Some(error.clone())));
    }
    fn did_disconnect(&self, call: &Call, error: Option<&VoiceError>) {
        self.out.emit("disconnected", json!({"call_sid": Self::sid(call), "error": error_json(error)}));
        let _ = self.done.send(Outcome::Ended(error.cloned()));
    }
    fn is_reconnecting(&self, call: &Call, error: &VoiceError) {
        self.out.emit("reconnecting", json!({"call_sid": Self::sid(call), "error": error_json(Some(error))}));
    }
    fn did_reconnect(&self, call: &Call) {
        self.out.emit("reconnected", json!({"call_sid": Self::sid(call)}));
    }
    fn did_receive_digits(&self, call: &Call, digits: &str) {
        self.out.emit("digits", json!({"call_sid": Self::sid(call), "digits": digits}));
    }
    fn did_receive_quality_warnings(
        &self,
        call: &Call,
        current: &BTreeSet<QualityWarning>,
        previous: &BTreeSet<QualityWarning>,
    ) {
        let names = |s: &BTreeSet<QualityWarning>| s.iter().map(|w| format!("{w:?}")).collect::<Vec<_>>();
        self.out.emit(
            "quality_warnings",
            json!({"call_sid": Self::sid(call), "current": names(current), "previous": names(previous)}),
        );
    }
}

impl CallMessageDelegate for Reporter {
    fn did_receive_message(&self, call_sid: &str, m: &CallMessage) {
        self.out.emit(
            "message_received",
            json!({"call_sid": call_sid, "content": m.content(), "content_type": m.content_type(), "voice_event_sid": m.voice_event_sid()}),
        );
    }
    fn did_send_message(&self, call_sid: &str, voice_event_sid: &str) {
        self.out.emit("message_sent", json!({"call_sid": call_sid, "voice_event_sid": voice_event_sid}));
    }
    fn did_fail_to_send_message(&self, call_sid: &str, voice_event_sid: &str, e: &VoiceError) {
        self.out.emit(
            "message_failed",
            json!({"call_sid": call_sid, "voice_event_sid": voice_event_sid, "error": error_json(Some(e))}),
        );
    }
}

/// What `listen` does with an invite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ListenMode {
    Accept,
    Reject,
    Ignore,
}

struct Listener(Arc<Reporter>);

impl NotificationDelegate for Listener {
    fn call_invite_received(&self, invite: CallInvite) {
        let r = &self.0;
        r.out.emit(
            "invite",
            json!({
                "call_sid": invite.call_sid(),
                "from": invite.from(),
                "to": invite.to(),
                "custom_parameters": invite.custom_parameters(),
                "caller_verified": invite.caller_info().verified,
            }),
        );
        match r.mode {
            ListenMode::Accept => {
                let opts = stack::accept_options(&r.config).call_message_delegate(r.clone()).build();
                let call = invite.accept_with_options(opts, r.clone());
                r.calls.lock().unwrap_or_else(|p| p.into_inner()).push(call);
            }
            ListenMode::Reject => {
                invite.reject();
                let _ = r.done.send(Outcome::Ended(None));
            }
            ListenMode::Ignore => {}
        }
    }
    fn cancelled_call_invite_received(&self, c: CancelledCallInvite, e: &VoiceError) {
        self.0.out.emit("cancelled", json!({"call_sid": c.call_sid(), "error": error_json(Some(e))}));
        let _ = self.0.done.send(Outcome::Ended(None));
    }
    fn call_message_delegate(&self) -> Option<Arc<dyn CallMessageDelegate>> {
        Some(self.0.clone())
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, VoiceError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| VoiceError::new(ErrorCode::UnknownError, format!("cannot start the runtime: {e}")))
}

/// What a client command builds: its parts, its token, and the HTTP insights sink
/// (when configured) to flush before the process exits.
type Setup = (ClientSetup, String, Option<Arc<HttpInsightsSink>>);

fn setup(args: &ClientArgs) -> Result<Setup, VoiceError> {
    let mut cfg = crate::server_cmd::load_config(args.config.as_ref())?;
    if let Some(s) = &args.server {
        cfg.client.server = s.clone();
    }
    let dev_ca = dialtone_server::accounts::data_dir(&cfg.server).join("dev-ca.pem");
    let ca_file =
        args.ca_file.clone().or(cfg.client.tls_ca_file.clone()).or(dev_ca.exists().then_some(dev_ca));
    let token = match &args.token {
        Some(t) => t.clone(),
        None => crate::server_cmd::token(args.config.clone(), &args.identity, 3600, None)?,
    };
    let registry = Arc::new(stack::registry(&cfg));
    // Insights: `sink = "http"` posts them to `url` (the server's
    // /v1/Insights/Events, http or https, trusting the same CA file as signaling) with
    // this client's token; other sinks come from the registry.
    let mut http_sink = None;
    let insights = if cfg.insights.enabled && cfg.insights.sink == "http" {
        let url = cfg.insights.url.clone().ok_or_else(|| {
            VoiceError::new(ErrorCode::MalformedRequest, "insights.sink = \"http\" needs insights.url")
        })?;
        let settings = dialtone_http::Settings { ca_file: ca_file.clone(), ..Default::default() };
        let sink = Arc::new(HttpInsightsSink::with_settings(url, token.clone(), settings));
        http_sink = Some(sink.clone());
        Some(Some(sink as Arc<dyn InsightsSink>))
    } else {
        None
    };
    let setup = ClientSetup {
        config: cfg,
        registry,
        ca_file,
        play: args.play.clone(),
        record: args.record.clone(),
        audio_backend: args.audio_backend.clone(),
        insights,
    };
    Ok((setup, token, http_sink))
}

/// Posts the insights events still queued before the process exits.
fn flush_insights(sink: Option<Arc<HttpInsightsSink>>) {
    if let Some(s) = sink {
        if !s.flush(Duration::from_secs(5)) {
            eprintln!("dialtone: could not post every insights event within 5 s");
        }
    }
}

/// Emits `stats` once a second for every connected call in the list.
fn stats_ticker(out: Emitter, calls: Arc<Mutex<Vec<Call>>>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            let list: Vec<Call> = calls.lock().unwrap_or_else(|p| p.into_inner()).clone();
            for c in list.iter().filter(|c| c.state() == CallState::Connected) {
                let Some(s) = c.stats() else { continue };
                let local = s.local_audio_tracks.first();
                let remote = s.remote_audio_tracks.first();
                out.emit(
                    "stats",
                    json!({
                        "call_sid": c.sid(),
                        "codec": local.map(|l| l.codec.clone()),
                        "mos": remote.and_then(|r| r.mos),
                        "jitter_ms": remote.map(|r| r.jitter_ms),
                        "rtt_ms": local.and_then(|l| l.round_trip_time_ms),
                        "packets_lost": remote.map(|r| r.packets_lost),
                        "packets_received": remote.map(|r| r.packets_received),
                        "bytes_received": remote.map(|r| r.bytes_received),
                        "audio_level_in": local.map(|l| l.audio_level),
                        "audio_level_out": remote.map(|r| r.audio_level),
                    }),
                );
            }
        }
    });
}

/// `dialtone listen`: registers (with `device_token` for push, if not empty) and handles
/// invites until Ctrl-C (or `calls` calls).
pub(crate) fn listen(
    args: ClientArgs,
    mode: ListenMode,
    calls: Option<usize>,
    device_token: String,
) -> Result<(), VoiceError> {
    let rt = runtime()?;
    let _enter = rt.enter();
    let (setup, token, http_sink) = setup(&args)?;
    let out = Emitter { json: args.json };
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let list: Arc<Mutex<Vec<Call>>> = Arc::default();
    let config = Arc::new(setup.config.clone());
    let reporter = Arc::new(Reporter { out: out.clone(), done: done_tx, calls: list.clone(), mode, config });
    let (voice, _agent, _wavs) = stack::build(setup, Some(Arc::new(Listener(reporter))))?;
    let result = rt.block_on(async {
        voice.register(&token, &device_token).await?;
        out.emit("registered", json!({"identity": args.identity}));
        stats_ticker(out.clone(), list.clone());
        let mut ended = 0usize;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                o = done_rx.recv() => {
                    let Some(Outcome::Ended(_)) = o else { break };
                    ended += 1;
                    if calls.is_some_and(|n| ended >= n) {
                        break;
                    }
                }
            }
        }
        for c in list.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            c.disconnect();
        }
        let _ = voice.unregister(&token, "").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(())
    });
    flush_insights(http_sink);
    result
}

/// `dialtone call`: places one call and exits when it ends (0 for a normal end).
pub(crate) struct CallArgs {
    pub(crate) to: String,
    pub(crate) params: Vec<(String, String)>,
    pub(crate) duration: u64,
    pub(crate) digits: Option<String>,
    pub(crate) message: Option<String>,
}

pub(crate) fn call(args: ClientArgs, c: CallArgs) -> Result<(), VoiceError> {
    let rt = runtime()?;
    let _enter = rt.enter();
    let (setup, token, http_sink) = setup(&args)?;
    let out = Emitter { json: args.json };
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let list: Arc<Mutex<Vec<Call>>> = Arc::default();
    let config = Arc::new(setup.config.clone());
    let reporter = Arc::new(Reporter {
        out: out.clone(),
        done: done_tx,
        calls: list.clone(),
        mode: ListenMode::Ignore,
        config: config.clone(),
    });
    let (voice, _agent, _wavs) = stack::build(setup, None)?;
    let mut b = stack::connect_options(&config, token)
        .param("to", c.to.clone())
        .call_message_delegate(reporter.clone());
    for (k, v) in &c.params {
        b = b.param(k.clone(), v.clone());
    }
    let call = voice.connect(b.build(), reporter.clone());
    list.lock().unwrap_or_else(|p| p.into_inner()).push(call.clone());
    let result = rt.block_on(async {
        stats_ticker(out.clone(), list.clone());
        // Wait for the call to connect (or end).
        let connected = async {
            while call.state() != CallState::Connected {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::select! {
            () = connected => {}
            o = done_rx.recv() => return finish(o),
            _ = tokio::signal::ctrl_c() => { call.disconnect(); return Ok(()) }
        }
        if let Some(d) = &c.digits {
            call.send_digits(d)?;
        }
        if let Some(m) = &c.message {
            call.send_message(CallMessage::new(m.clone()));
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(c.duration)) => call.disconnect(),
            o = done_rx.recv() => return finish(o),
            _ = tokio::signal::ctrl_c() => call.disconnect(),
        }
        // Our own hang-up: its disconnected event follows.
        let o = tokio::time::timeout(Duration::from_secs(5), done_rx.recv()).await.ok().flatten();
        tokio::time::sleep(Duration::from_millis(200)).await;
        finish(o)
    });
    flush_insights(http_sink);
    result
}

fn finish(o: Option<Outcome>) -> Result<(), VoiceError> {
    match o {
        Some(Outcome::Ended(Some(e))) => Err(e),
        _ => Ok(()),
    }
}

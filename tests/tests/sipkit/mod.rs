//! Shared pieces of the signaling tests: Kamailio started on free loopback ports,
//! Dialtone clients (SIP agent + RTP engine + in-memory audio) whose delegates record
//! every event, a cuttable TCP relay, and unsigned development tokens.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use dialtone_audio_memory::{BufferCapturer, MemoryRenderer};
use dialtone_core::parts::{
    AudioCodec, AudioFormat, MediaEngine, MediaEvent, MediaSession, MediaSessionConfig, SignalingTransport,
    TransportTarget,
};
use dialtone_core::*;
use dialtone_rtp::engine::{RtpEngine, RtpEngineConfig};
use dialtone_sip_agent::{AgentConfig, SipAgent};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child as TokioChild, ChildStdin, Command as TokioCommand};
use tokio::sync::mpsc;

pub use dialtone_tests::Scratch;

/// A port that was free a moment ago (for peers that cannot bind port 0 and report it).
pub fn free_port() -> u16 {
    let s = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = s.local_addr().unwrap().port();
    drop(s);
    port
}

/// A child process killed when dropped.
pub use dialtone_tests::Peer;

/// A development token: the identity grant is all a proxy without token checks reads.
pub fn token(identity: &str) -> String {
    let b = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.c2lnbmF0dXJl",
        b(serde_json::json!({"alg": "HS256", "typ": "JWT", "cty": "twilio-fpa;v=1"})),
        b(serde_json::json!({"iss": "SKtest", "sub": "ACtest", "exp": 4_102_444_800u64,
            "grants": {"identity": identity, "voice": {"incoming": {"allow": true}}}}))
    )
}

/// Kamailio as a registrar and proxy on loopback: UDP, TCP and WS listeners.
pub struct Kamailio {
    pub udp: u16,
    pub tcp: u16,
    pub ws: u16,
    pub tls: u16,
    /// The CA that signed Kamailio's TLS certificate (PEM file).
    pub ca_file: PathBuf,
    _peer: Peer,
    _dir: Scratch,
}

const KAMAILIO_CFG: &str = r#"#!KAMAILIO
debug=1
log_stderror=yes
fork=yes
children=2
tcp_children=2
auto_aliases=no
tcp_accept_no_cl=yes
enable_tls=yes
listen=tls:127.0.0.1:@TLS@
listen=udp:127.0.0.1:@UDP@
listen=tcp:127.0.0.1:@TCP@
listen=tcp:127.0.0.1:@WS@
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "tls.so"
modparam("tls", "config", "@DIR@/tls.cfg")
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xhttp.so"
loadmodule "websocket.so"
loadmodule "ctl.so"
loadmodule "nathelper.so"
modparam("usrloc", "db_mode", 0)
modparam("nathelper", "received_avp", "$avp(RECEIVED)")
modparam("registrar", "received_avp", "$avp(RECEIVED)")
modparam("ctl", "binrpc", "unix:@DIR@/ctl.sock")
modparam("tm", "fr_inv_timer", 60000)

request_route {
    if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); exit; }
    if (is_method("CANCEL")) {
        if (t_check_trans()) { t_relay(); }
        exit;
    }
    if (!is_method("ACK")) {
        t_check_trans();
    }
    if (has_totag()) {
        if (loose_route()) {
            remove_hf("Authorization");
            t_relay();
            exit;
        }
        if (is_method("ACK")) {
            if (t_check_trans()) { t_relay(); }
            exit;
        }
        sl_send_reply("404", "Not here");
        exit;
    }
    remove_hf("Route");
    # The Bearer token is for this proxy, never for the callee (and PJSIP cannot
    # parse RFC 8898 token68 credentials anyway).
    remove_hf("Authorization");
    if (is_method("REGISTER")) {
        # Browser clients put an unroutable `.invalid` host in their Contact: reach
        # them over the connection they registered on (RFC 7118 section 5).
        if (proto == WS || proto == WSS) { fix_nated_register(); }
        save("location");
        exit;
    }
    if (is_method("INVITE")) { record_route(); }
    if (!lookup("location")) {
        sl_send_reply("404", "Not Found");
        exit;
    }
    t_relay();
}

event_route[xhttp:request] {
    if ($hdr(Upgrade) =~ "websocket" && $hdr(Connection) =~ "Upgrade" && $rm =~ "GET") {
        if (ws_handle_handshake()) { exit; }
    }
    xhttp_reply("404", "Not Found", "", "");
}
"#;

impl Kamailio {
    pub async fn start() -> Kamailio {
        let dir = Scratch::new("kamailio");
        let (udp, tcp, ws, tls) = (free_port(), free_port(), free_port(), free_port());
        let ca_file = write_test_pki(&dir.0);
        std::fs::write(
            dir.0.join("tls.cfg"),
            format!(
                "[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n\
                 private_key = {0}/key.pem\ncertificate = {0}/cert.pem\n\n[client:default]\n\
                 verify_certificate = no\nrequire_certificate = no\n",
                dir.0.display()
            ),
        )
        .unwrap();
        let cfg = KAMAILIO_CFG
            .replace("@TLS@", &tls.to_string())
            .replace("@UDP@", &udp.to_string())
            .replace("@TCP@", &tcp.to_string())
            .replace("@WS@", &ws.to_string())
            .replace("@DIR@", &dir.0.display().to_string());
        let path = dir.0.join("kamailio.cfg");
        std::fs::write(&path, cfg).unwrap();
        let log = std::fs::File::create(dir.0.join("kamailio.log")).unwrap();
        let child = Command::new("kamailio")
            .process_group(0)
            .args([
                "-f",
                path.to_str().unwrap(),
                "-DD",
                "-E",
                "-Y",
                dir.0.to_str().unwrap(),
                "-m",
                "64",
                "-M",
                "8",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("kamailio is installed by scripts/setup");
        let mut peer = Peer(child);
        // Ready once the WS port accepts connections.
        for _ in 0..100 {
            if peer.0.try_wait().ok().flatten().is_some() {
                break;
            }
            if TcpStream::connect(("127.0.0.1", ws)).await.is_ok() {
                return Kamailio { udp, tcp, ws, tls, ca_file, _peer: peer, _dir: dir };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = std::fs::read_to_string(dir.0.join("kamailio.log")).unwrap_or_default();
        panic!("kamailio did not start:\n{log}");
    }

    /// Where Kamailio's certificate and key are (for peers that need one of their own).
    pub fn cert_and_key(&self) -> (PathBuf, PathBuf) {
        (self._dir.0.join("cert.pem"), self._dir.0.join("key.pem"))
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.ws)
    }
}

/// Writes a test CA (`ca.pem`) and a certificate for 127.0.0.1 and localhost signed by
/// it (`cert.pem`, `key.pem`) into `dir`; returns the CA file's path.
pub fn write_test_pki(dir: &Path) -> PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    dir.join("ca.pem")
}

/// Everything a client's delegates heard, in order.
#[derive(Clone, Debug)]
pub enum Heard {
    Invite(CallInvite),
    Cancelled(String, u32),
    Ringing,
    Connected,
    FailedToConnect(u32),
    Disconnected(Option<u32>),
    Reconnecting(u32),
    Reconnected,
    MessageReceived(String),
    MessageSent(String),
    MessageFailed(String, u32),
    Digits(String),
}

pub struct Recorder {
    tx: mpsc::UnboundedSender<Heard>,
}

impl NotificationDelegate for Recorder {
    fn call_invite_received(&self, invite: CallInvite) {
        let _ = self.tx.send(Heard::Invite(invite));
    }
    fn cancelled_call_invite_received(&self, c: CancelledCallInvite, e: &VoiceError) {
        let _ = self.tx.send(Heard::Cancelled(c.call_sid().to_owned(), e.code()));
    }
    fn call_message_delegate(&self) -> Option<Arc<dyn CallMessageDelegate>> {
        Some(Arc::new(Recorder { tx: self.tx.clone() }))
    }
}

impl CallDelegate for Recorder {
    fn did_connect(&self, _: &Call) {
        let _ = self.tx.send(Heard::Connected);
    }
    fn did_fail_to_connect(&self, _: &Call, e: &VoiceError) {
        let _ = self.tx.send(Heard::FailedToConnect(e.code()));
    }
    fn did_disconnect(&self, _: &Call, e: Option<&VoiceError>) {
        let _ = self.tx.send(Heard::Disconnected(e.map(VoiceError::code)));
    }
    fn did_start_ringing(&self, _: &Call) {
        let _ = self.tx.send(Heard::Ringing);
    }
    fn is_reconnecting(&self, _: &Call, e: &VoiceError) {
        let _ = self.tx.send(Heard::Reconnecting(e.code()));
    }
    fn did_reconnect(&self, _: &Call) {
        let _ = self.tx.send(Heard::Reconnected);
    }
    fn did_receive_digits(&self, _: &Call, digits: &str) {
        let _ = self.tx.send(Heard::Digits(digits.to_owned()));
    }
}

impl CallMessageDelegate for Recorder {
    fn did_receive_message(&self, _: &str, m: &CallMessage) {
        let _ = self.tx.send(Heard::MessageReceived(m.content().to_owned()));
    }
    fn did_send_message(&self, _: &str, id: &str) {
        let _ = self.tx.send(Heard::MessageSent(id.to_owned()));
    }
    fn did_fail_to_send_message(&self, _: &str, id: &str, e: &VoiceError) {
        let _ = self.tx.send(Heard::MessageFailed(id.to_owned(), e.code()));
    }
}

/// What each call of a client heard, one recording per call.
pub type Recordings = Arc<Mutex<Vec<Arc<Mutex<Vec<i16>>>>>>;

/// A Dialtone client: a `Voice` over a SIP agent, sending the shared speech and
/// recording what it hears.
pub struct Client {
    pub identity: String,
    pub voice: Voice,
    pub agent: Arc<SipAgent>,
    pub heard_audio: Recordings,
    events: mpsc::UnboundedReceiver<Heard>,
    tx: mpsc::UnboundedSender<Heard>,
    /// The access token to use (default: an unsigned development token).
    pub token: Option<String>,
}

/// The default codecs, from the default registry.
pub fn codecs() -> Vec<Arc<dyn AudioCodec>> {
    dialtone_defaults::default_codecs()
}

/// Logs to stderr when RUST_LOG is set (SIP traffic at `dialtone_sip=trace`).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
}

impl Client {
    pub fn new(identity: &str, server: &str, transport: Arc<dyn SignalingTransport>, domain: &str) -> Client {
        Client::with_target(identity, TransportTarget::new(server), transport, domain)
    }

    pub fn with_target(
        identity: &str,
        target: TransportTarget,
        transport: Arc<dyn SignalingTransport>,
        domain: &str,
    ) -> Client {
        Client::with_config(identity, AgentConfig::new(target).with_domain(domain), transport)
    }

    pub fn with_config(
        identity: &str,
        config: AgentConfig,
        transport: Arc<dyn SignalingTransport>,
    ) -> Client {
        let engine_cfg = RtpEngineConfig { ports: None, ..Default::default() };
        Client::with_engine(identity, config, transport, Arc::new(RtpEngine::new(engine_cfg)))
    }

    pub fn with_engine(
        identity: &str,
        config: AgentConfig,
        transport: Arc<dyn SignalingTransport>,
        engine: Arc<dyn MediaEngine>,
    ) -> Client {
        Client::with_parts(identity, config, transport, engine, codecs())
    }

    pub fn with_parts(
        identity: &str,
        config: AgentConfig,
        transport: Arc<dyn SignalingTransport>,
        engine: Arc<dyn MediaEngine>,
        codec_set: Vec<Arc<dyn AudioCodec>>,
    ) -> Client {
        init_logs();
        let heard_audio: Recordings = Arc::default();
        let sink = heard_audio.clone();
        let factory = Arc::new(move || {
            let format = AudioFormat::new(48_000, 1, 20).unwrap();
            let (renderer, heard) = MemoryRenderer::new(format);
            sink.lock().unwrap().push(heard);
            let capturer = BufferCapturer::new(format, dialtone_tests::speech(48_000), true);
            Ok(MediaSessionConfig::new(codec_set.clone(), Box::new(capturer), Box::new(renderer)))
        });
        let agent = SipAgent::new(config, transport, engine, factory);
        let (tx, events) = mpsc::unbounded_channel();
        let voice = Voice::builder(agent.clone())
            .incoming_delegate(Arc::new(Recorder { tx: tx.clone() }))
            .insights_enabled(false)
            .build();
        Client { identity: identity.to_owned(), voice, agent, heard_audio, events, tx, token: None }
    }

    /// Publishes this client's insights events to `sink` (they are off by default).
    pub fn with_insights(mut self, sink: Arc<dyn InsightsSink>) -> Client {
        self.voice = Voice::builder(self.agent.clone())
            .incoming_delegate(Arc::new(Recorder { tx: self.tx.clone() }))
            .insights_sink(sink)
            .build();
        self
    }

    pub fn delegate(&self) -> Arc<Recorder> {
        Arc::new(Recorder { tx: self.tx.clone() })
    }

    fn access_token(&self) -> String {
        self.token.clone().unwrap_or_else(|| token(&self.identity))
    }

    pub async fn register(&self) {
        self.voice.register(&self.access_token(), "").await.unwrap();
    }

    pub fn connect(&self, to: &str, params: &[(&str, &str)]) -> Call {
        self.connect_preferring(to, params, None)
    }

    pub fn connect_preferring(
        &self,
        to: &str,
        params: &[(&str, &str)],
        codecs: Option<Vec<PreferredCodec>>,
    ) -> Call {
        let mut b = ConnectOptions::builder(self.access_token()).param("to", to);
        if let Some(c) = codecs {
            b = b.preferred_audio_codecs(c);
        }
        for (k, v) in params {
            b = b.param(*k, *v);
        }
        let opts = b.call_message_delegate(self.delegate()).build();
        self.voice.connect(opts, self.delegate())
    }

    /// The next event, within `secs` seconds.
    pub async fn next(&mut self, secs: u64) -> Heard {
        tokio::time::timeout(Duration::from_secs(secs), self.events.recv())
            .await
            .unwrap_or_else(|_| panic!("{}: no event within {secs} s", self.identity))
            .unwrap()
    }

    /// Waits for an event matching `pred`, returning it; other events are skipped.
    pub async fn wait_for(&mut self, secs: u64, what: &str, pred: impl Fn(&Heard) -> bool) -> Heard {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.events.recv()).await {
                Ok(Some(e)) if pred(&e) => return e,
                Ok(Some(e)) => eprintln!("{}: skipping {e:?} while waiting for {what}", self.identity),
                _ => panic!("{}: no {what} within {secs} s", self.identity),
            }
        }
    }

    pub async fn invite(&mut self, secs: u64) -> CallInvite {
        match self.wait_for(secs, "an invite", |e| matches!(e, Heard::Invite(_))).await {
            Heard::Invite(i) => i,
            _ => unreachable!(),
        }
    }

    /// Samples rendered so far on the latest call, silence included: the renderer is
    /// fed every 20 ms whether audio arrives or not, so this is a position in
    /// [`Client::heard`] (where a test's scoring starts), never evidence of audio.
    pub fn heard_len(&self) -> usize {
        self.heard_audio.lock().unwrap().last().map_or(0, |h| h.lock().unwrap().len())
    }

    pub fn heard(&self) -> Vec<i16> {
        self.heard_audio.lock().unwrap().last().map(|h| h.lock().unwrap().clone()).unwrap_or_default()
    }

    /// Waits until `samples` more samples were rendered, silence included: a clock for
    /// a test that measures a silence (mute, hold), not a sign that audio arrived.
    pub async fn render_more(&self, samples: usize, secs: u64) {
        let start = self.heard_len();
        tokio::time::timeout(Duration::from_secs(secs), async {
            while self.heard_len() < start + samples {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{}: the renderer stopped", self.identity));
    }

    /// Waits until `samples` more samples of sound were heard: 20 ms frames whose level
    /// is above the noise floor ([`sound_len`]). Rendered silence does not count, so
    /// this fails when audio stops; whether the sound is the right speech is for
    /// `assert_speech` to say.
    pub async fn hear_more(&self, samples: usize, secs: u64) {
        let start = self.heard_len();
        let sound = || sound_len(&self.heard()[start..]);
        tokio::time::timeout(Duration::from_secs(secs), async {
            while sound() < samples {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{}: audio stopped ({} samples of sound in {} rendered)",
                self.identity,
                sound(),
                self.heard_len() - start
            )
        });
    }
}

/// Samples of sound in `s` (48 kHz): those in 20 ms frames with an RMS level above 150,
/// where the shared speech is about 2,870 and rendered silence is 0. About 81 % of the
/// shared speech's frames are sound.
pub fn sound_len(s: &[i16]) -> usize {
    s.chunks_exact(960).filter(|f| rms(f) > 150.0).count() * 960
}

/// RMS level of samples.
pub fn rms(s: &[i16]) -> f64 {
    if s.is_empty() {
        return 0.0;
    }
    (s.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / s.len() as f64).sqrt()
}

/// A TCP relay in front of a server whose live connections a test can cut.
pub struct Relay {
    pub addr: SocketAddr,
    cut: Arc<tokio::sync::Notify>,
    accepted: Arc<Mutex<usize>>,
    refusing: Arc<std::sync::atomic::AtomicBool>,
}

impl Relay {
    pub async fn start(upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(tokio::sync::Notify::new());
        let accepted = Arc::new(Mutex::new(0));
        let refusing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c, a, r) = (cut.clone(), accepted.clone(), refusing.clone());
        tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                if r.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped at once: the server seems down
                }
                *a.lock().unwrap() += 1;
                let cut = c.clone();
                tokio::spawn(async move {
                    let Ok(mut up) = TcpStream::connect(upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                        () = cut.notified() => {}
                    }
                });
            }
        });
        Relay { addr, cut, accepted, refusing }
    }

    /// Refuses (true) or relays (false) new connections.
    pub fn set_refusing(&self, on: bool) {
        self.refusing.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// Drops every live connection.
    pub fn cut(&self) {
        self.cut.notify_waiters();
    }

    pub fn accepted(&self) -> usize {
        *self.accepted.lock().unwrap()
    }
}

pub fn path_of(p: &Path) -> String {
    p.display().to_string()
}

/// A media engine whose sessions cannot carry RFC 4733 events (as with a peer that did
/// not negotiate telephone-event), so digits must go as SIP INFO.
pub struct NoDtmfEngine(pub RtpEngine);

#[async_trait::async_trait]
impl MediaEngine for NoDtmfEngine {
    async fn create_session(&self, config: MediaSessionConfig) -> Result<Box<dyn MediaSession>, VoiceError> {
        Ok(Box::new(NoDtmf(self.0.create_session(config).await?)))
    }
}

struct NoDtmf(Box<dyn MediaSession>);

#[async_trait::async_trait]
impl MediaSession for NoDtmf {
    async fn create_offer(&self) -> Result<String, VoiceError> {
        self.0.create_offer().await
    }
    async fn apply_answer(&self, sdp: &str) -> Result<(), VoiceError> {
        self.0.apply_answer(sdp).await
    }
    async fn create_answer(&self, offer: &str) -> Result<String, VoiceError> {
        self.0.create_answer(offer).await
    }
    fn negotiated_codec(&self) -> Option<String> {
        self.0.negotiated_codec()
    }
    fn set_muted(&self, muted: bool) {
        self.0.set_muted(muted)
    }
    fn set_on_hold(&self, on_hold: bool) {
        self.0.set_on_hold(on_hold)
    }
    fn send_digits(&self, _: &str) -> Result<(), VoiceError> {
        Err(VoiceError::new(ErrorCode::UnknownError, "no telephone-event negotiated"))
    }
    fn stats(&self) -> StatsReport {
        self.0.stats()
    }
    async fn next_event(&self) -> Option<MediaEvent> {
        self.0.next_event().await
    }
    async fn close(&self) {
        self.0.close().await
    }
}

/// A pjsua2 (PJSIP) peer driven line by line.
pub struct Pjsua {
    pub child: TokioChild,
    pub stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
    record: std::path::PathBuf,
}

impl Pjsua {
    /// Starts the pjsua2 peer (`tests/peers/pjsua_ua.py`). `registrar` is `host:port`, or
    /// `direct:host:port` to call a trunk without registering.
    pub fn start(
        scratch: &Scratch,
        mode: &str,
        wire: &str,
        registrar: &str,
        target: &str,
        cert_and_key: Option<(PathBuf, PathBuf)>,
    ) -> Pjsua {
        Pjsua::start_with(scratch, mode, wire, registrar, target, cert_and_key, &[])
    }

    /// As [`Pjsua::start`], with extra environment (`PJ_AUTH_USER`/`PJ_AUTH_PASS`:
    /// digest credentials; `PJ_RECORD_TAG`: a suffix for the recording's name).
    pub fn start_with(
        scratch: &Scratch,
        mode: &str,
        wire: &str,
        registrar: &str,
        target: &str,
        cert_and_key: Option<(PathBuf, PathBuf)>,
        env: &[(&str, &str)],
    ) -> Pjsua {
        let tag = env.iter().find(|(k, _)| *k == "PJ_RECORD_TAG").map_or("", |(_, v)| *v);
        let record = scratch.0.join(format!("pjsua-{mode}-{wire}{tag}.wav"));
        let play = dialtone_tests::shared_audio_dir().join("speech-8k.wav");
        let (cert, key) = cert_and_key.unwrap_or_default();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/pjsua_ua.py");
        let mut child = TokioCommand::new(dialtone_tests::python())
            .arg(script)
            .args([mode, wire, registrar, "pjsua", target])
            .arg(&play)
            .arg(&record)
            .args(["4", "40"])
            .env("PJ_TLS_CERT", cert)
            .env("PJ_TLS_KEY", key)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {:?} ({e}); scripts/setup installs it", dialtone_tests::python())
            });
        let stdout = child.stdout.take().unwrap();
        let stdin = child.stdin.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut r = BufReader::new(stdout).lines();
            while let Ok(Some(l)) = r.next_line().await {
                let _ = tx.send(l);
            }
        });
        Pjsua { child, stdin, lines, seen: Vec::new(), record }
    }

    pub async fn expect(&mut self, prefix: &str, secs: u64) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.lines.recv()).await {
                Ok(Some(l)) => {
                    self.seen.push(l.clone());
                    if l.starts_with(prefix) {
                        return l;
                    }
                }
                _ => panic!("pjsua never said {prefix:?}; it said {:?}", self.seen),
            }
        }
    }

    /// What pjsua heard, once it exited.
    pub async fn finish(mut self) -> Vec<i16> {
        let _ = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await;
        // pjsua writes the sizes into the WAV header only when the file closes, which a
        // peer leaving in a hurry may skip: read the 16-bit samples after the header.
        let bytes = std::fs::read(&self.record).expect("pjsua recorded what it heard");
        bytes.get(44..).unwrap_or(&[]).chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect()
    }
}

/// A tiny HTTP server: answers every POST with `answer` (XML) and reports each body.
pub async fn http_sink(answer: &'static str) -> (String, mpsc::UnboundedReceiver<String>) {
    let (base, mut posts) = http_routes(vec![("", answer)]).await;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some((_, body)) = posts.recv().await {
            let _ = tx.send(body);
        }
    });
    (format!("{base}/hook"), rx)
}

/// A tiny HTTP application: answers a POST to a path with the answer of the first
/// route whose path it is (`""` matches any), and reports each (path, body). Returns
/// `http://host:port`.
pub async fn http_routes(
    routes: Vec<(&'static str, &'static str)>,
) -> (String, mpsc::UnboundedReceiver<(String, String)>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    let routes = Arc::new(routes);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let (tx, routes) = (tx.clone(), routes.clone());
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = vec![0u8; 8192];
                let mut path = String::new();
                loop {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("Content-Length: "))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if body.len() >= len {
                            path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                            let _ = tx.send((path.clone(), body.to_owned()));
                            break;
                        }
                    }
                }
                let answer = routes.iter().find(|(p, _)| p.is_empty() || *p == path).map_or("", |(_, a)| *a);
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                    answer.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    (base, rx)
}

/// `caller` calls `to` and `callee` accepts; both see the call connect. Returns the
/// caller's call, the invite and the callee's call.
pub async fn connect_and_answer(
    caller: &mut Client,
    callee: &mut Client,
    to: &str,
) -> (Call, CallInvite, Call) {
    let call = caller.connect(to, &[]);
    let invite = callee.invite(10).await;
    let answered = invite.accept(callee.delegate());
    caller.wait_for(10, "connected", |e| matches!(e, Heard::Connected)).await;
    callee.wait_for(10, "connected", |e| matches!(e, Heard::Connected)).await;
    (call, invite, answered)
}

/// A started pjsua2 peer in `call` mode calls `bob` through a server: bob accepts,
/// hears pjsua's speech, and the call ends when pjsua hangs up (200). Returns what
/// pjsua heard.
pub async fn pjsua_calls(mut pj: Pjsua, bob: &mut Client, what: &str) -> Vec<i16> {
    use tokio::io::AsyncWriteExt;
    pj.expect("registered", 20).await;
    pj.stdin.write_all(b"go\n").await.unwrap();
    let invite = bob.invite(20).await;
    assert!(invite.from().is_some_and(|f| f.contains("pjsua")), "{what}: {:?}", invite.from());
    let _call = invite.accept(bob.delegate());
    bob.wait_for(20, "connected", |e| matches!(e, Heard::Connected)).await;
    pj.expect("media-active", 10).await;
    bob.hear_more(48_000, 10).await;
    bob.wait_for(20, "disconnected", |e| matches!(e, Heard::Disconnected(None))).await;
    // pjsua's speech (G.711) over the call's length, after the first quarter second
    dialtone_tests::assert_speech(
        &format!("{what}: bob hears pjsua through the server"),
        &bob.heard()[12_000..],
        48_000,
        8000,
    );
    assert_eq!(pj.expect("disconnected", 10).await, "disconnected 200", "{what}");
    pj.finish().await
}

/// A client of the embedded server over WebSocket, with a token for `identity` (whose
/// outgoing calls run the application `app`, when given).
pub fn server_client(server: &dialtone_server::Server, identity: &str, app: Option<&str>) -> Client {
    let transport = Arc::new(dialtone_transport_ws::WsTransport::default());
    let mut c = Client::new(identity, &server.addresses().ws_url(), transport, "127.0.0.1");
    c.token = Some(match app {
        Some(a) => server.mint_token_for_app(identity, 3600, a).unwrap(),
        None => server.mint_token(identity, 3600).unwrap(),
    });
    c
}

/// A server configuration for tests: every port 0 (free ones), the scratch directory as
/// the data directory, an in-memory store.
pub fn server_config(scratch: &Scratch) -> config::ServerConfig {
    let mut cfg = config::ServerConfig::default();
    (cfg.sip_udp_port, cfg.sip_tcp_port, cfg.sip_tls_port, cfg.ws_port, cfg.wss_port, cfg.http_port) =
        (0, 0, 0, 0, 0, 0);
    cfg.data_dir = Some(scratch.0.clone());
    cfg.database_url = Some("sqlite::memory:".into());
    cfg
}

/// How a REST request authenticates.
pub enum Auth<'a> {
    /// No credentials.
    None,
    /// HTTP Basic with these.
    Basic(&'a str, &'a str),
    /// An access token in `X-Dialtone-Token`.
    Token(&'a str),
}

/// One request to the server's REST API: the status and the JSON body (`null` when
/// there is none).
pub async fn rest(
    http: SocketAddr,
    method: &str,
    path: &str,
    auth: Auth<'_>,
    content_type: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(http).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    match auth {
        Auth::None => {}
        Auth::Basic(u, p) => req.push_str(&format!(
            "Authorization: Basic {}\r\n",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )),
        Auth::Token(t) => req.push_str(&format!("X-Dialtone-Token: {t}\r\n")),
    }
    if !body.is_empty() || method != "GET" {
        req.push_str(&format!("Content-Type: {content_type}\r\nContent-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_string(&mut resp)).await.unwrap().unwrap();
    let status = resp[9..12].parse().unwrap();
    let b = resp.split_once("\r\n\r\n").unwrap().1;
    // A chunked body: take the JSON between the first { and the last }.
    let json = match (b.find('{'), b.rfind('}')) {
        (Some(i), Some(j)) if i < j => serde_json::from_str(&b[i..=j]).unwrap(),
        _ => serde_json::Value::Null,
    };
    (status, json)
}

/// `application/x-www-form-urlencoded` of some pairs.
pub fn form(pairs: &[(&str, &str)]) -> String {
    let enc =
        |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
    pairs.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

/// The pairs of a form body.
pub fn parse_form(body: &str) -> std::collections::HashMap<String, String> {
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned()
            };
            (dec(k), dec(v))
        })
        .collect()
}

/// The content type of a form body.
pub const FORM: &str = "application/x-www-form-urlencoded";

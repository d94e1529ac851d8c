//! The `rtp` media engine: the tokio shell around [`RtpSession`]. It owns a UDP
//! socket per call and one task that, whenever the pipeline's frame clock says a frame
//! is due, reads a frame from the capturer (or takes silence, with no capturer),
//! converts it to the codec's rate, sends what the session makes of it, and plays what
//! the session gives back (or only meters it, with no renderer); between frames it
//! feeds arriving datagrams to the session. The protocol decisions are all the
//! session's, the timing the frame clock's.
//!
//! Hold: [`MediaSession::set_on_hold`] stops playback at once and makes the next
//! offer say `sendonly`; re-offers keep the call's socket and SDES keys.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use dialtone_core::config::{Config, SrtpPolicy};
use dialtone_core::parts::{
    AudioCapturer, AudioCodec, AudioRenderer, EncoderSettings, MediaEngine, MediaEvent, MediaSession,
    MediaSessionConfig,
};
use dialtone_core::registry::{Registry, RegistryError};
use dialtone_core::{ErrorCode, PreferredCodec, StatsReport, VoiceError};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Notify};

use crate::session::{Liveness, Received, RtpSession, SessionConfig};
use dialtone_media::resample::FrameConverter;
use dialtone_media::sdp::{self, Direction, LocalDescription, Negotiated};
use dialtone_media::FrameClock;

/// How the engine binds and protects media.
#[derive(Clone, Debug)]
pub struct RtpEngineConfig {
    /// The address media sockets bind; `None` binds all interfaces of the advertised
    /// address's family.
    pub bind_ip: Option<IpAddr>,
    /// The address or host name SDP advertises; `None` advertises the local address
    /// of the signaling connection (the interface that reaches the server), else the
    /// bound address, else 127.0.0.1.
    pub advertised: Option<String>,
    /// How long without any media before the session reports it lost (53405);
    /// `None` never does.
    pub media_timeout: Option<Duration>,
    /// The lowest and highest port to use; `None` lets the OS choose.
    pub ports: Option<(u16, u16)>,
    /// SRTP use.
    pub srtp: SrtpPolicy,
    /// Jitter buffer least delay.
    pub jitter_min_delay_ms: u32,
    /// Jitter buffer most packets.
    pub jitter_max_packets: usize,
    /// Encoder settings.
    pub encoder: EncoderSettings,
    /// Offer and accept redundant audio around Opus (RFC 2198), `codecs.opus_red`.
    pub red: bool,
}

impl Default for RtpEngineConfig {
    fn default() -> Self {
        RtpEngineConfig::from_config(&Config::default())
    }
}

impl RtpEngineConfig {
    /// The settings of the `[media]` and `[codecs]` sections.
    pub fn from_config(c: &Config) -> Self {
        let mut encoder = EncoderSettings::default();
        encoder.bitrate = c.codecs.opus_max_average_bitrate;
        encoder.complexity = Some(c.codecs.opus_complexity);
        encoder.fec = c.codecs.opus_fec;
        encoder.dtx = c.codecs.opus_dtx;
        RtpEngineConfig {
            bind_ip: c.media.bind_address.as_deref().and_then(|b| b.parse().ok()),
            advertised: c.media.advertised_address.clone(),
            media_timeout: (c.media.media_timeout_secs > 0)
                .then(|| Duration::from_secs(u64::from(c.media.media_timeout_secs))),
            ports: match c.media.rtp_ports[..] {
                [lo, hi] => Some((lo, hi)),
                _ => None,
            },
            srtp: c.media.srtp,
            jitter_min_delay_ms: c.media.jitter_buffer_min_delay_ms,
            jitter_max_packets: c.media.jitter_buffer_max_packets as usize,
            encoder,
            red: c.codecs.opus_red,
        }
    }
}

/// The engine.
#[derive(Clone, Debug, Default)]
pub struct RtpEngine {
    cfg: RtpEngineConfig,
}

impl RtpEngine {
    /// An engine with these settings.
    pub fn new(cfg: RtpEngineConfig) -> Self {
        RtpEngine { cfg }
    }

    /// The address to advertise: the configured one, else the signaling connection's
    /// local address, else the interface routing to the signaling server, else the
    /// bound address, else loopback.
    async fn advertised_ip(&self, signaling: Option<(SocketAddr, SocketAddr)>) -> Result<IpAddr, VoiceError> {
        if let Some(a) = &self.cfg.advertised {
            if let Ok(ip) = a.parse::<IpAddr>() {
                return Ok(ip);
            }
            let found = tokio::net::lookup_host((a.as_str(), 0)).await.map_err(|e| {
                VoiceError::new(
                    ErrorCode::ClientLocalDescFailed,
                    format!("media.advertised_address {a:?} does not resolve: {e}"),
                )
            })?;
            let mut found: Vec<SocketAddr> = found.collect();
            // an address of the bound family first
            found.sort_by_key(|s| self.cfg.bind_ip.is_some_and(|b| b.is_ipv4() != s.is_ipv4()));
            return found.first().map(SocketAddr::ip).ok_or_else(|| {
                VoiceError::new(
                    ErrorCode::ClientLocalDescFailed,
                    format!("media.advertised_address {a:?} has no address"),
                )
            });
        }
        if let Some((local, remote)) = signaling {
            let local = canonical(local.ip());
            if !local.is_unspecified() {
                return Ok(local);
            }
            if let Some(ip) = route_to(canonical(remote.ip())) {
                return Ok(ip);
            }
        }
        match self.cfg.bind_ip {
            Some(b) if !b.is_unspecified() => Ok(b),
            _ => Ok(IpAddr::from([127, 0, 0, 1])),
        }
    }

    async fn bind(&self, advertised: IpAddr) -> Result<UdpSocket, VoiceError> {
        let fail = |e: std::io::Error| {
            VoiceError::new(ErrorCode::ClientLocalDescFailed, format!("cannot bind a media socket: {e}"))
        };
        let ip = self.cfg.bind_ip.unwrap_or_else(|| any_of_family(advertised));
        match self.cfg.ports {
            None => UdpSocket::bind(SocketAddr::new(ip, 0)).await.map_err(fail),
            Some((lo, hi)) => {
                for port in lo..=hi {
                    if let Ok(s) = UdpSocket::bind(SocketAddr::new(ip, port)).await {
                        return Ok(s);
                    }
                }
                Err(VoiceError::new(
                    ErrorCode::ClientLocalDescFailed,
                    format!("no free media port in {lo}-{hi}"),
                ))
            }
        }
    }
}

#[async_trait]
impl MediaEngine for RtpEngine {
    async fn create_session(&self, config: MediaSessionConfig) -> Result<Box<dyn MediaSession>, VoiceError> {
        let advertised = self.advertised_ip(config.signaling_addrs).await?;
        let socket = Arc::new(self.bind(advertised).await?);
        let bound = socket
            .local_addr()
            .map_err(|e| VoiceError::new(ErrorCode::ClientLocalDescFailed, format!("media socket: {e}")))?;
        mark_dscp(&socket, config.enable_dscp);
        // SDP names the advertised address with the bound port
        let local_addr = SocketAddr::new(advertised, bound.port());
        tracing::debug!(%bound, %local_addr, "media socket");
        // codecs in the preferred order, then any others available
        let mut codecs: Vec<Arc<dyn AudioCodec>> = Vec::new();
        for p in &config.preferred_codecs {
            if let Some(c) = config.codecs.iter().find(|c| c.descriptor().name.eq_ignore_ascii_case(p.name()))
            {
                codecs.push(c.clone());
            }
        }
        for c in &config.codecs {
            if !codecs.iter().any(|o| Arc::ptr_eq(o, c)) {
                codecs.push(c.clone());
            }
        }
        let mut encoder = self.cfg.encoder.clone();
        if let Some(PreferredCodec::Opus { max_average_bitrate: Some(b) }) =
            config.preferred_codecs.iter().find(|p| matches!(p, PreferredCodec::Opus { .. }))
        {
            encoder.bitrate = Some(*b);
        }
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let session_id = u64::from(local_addr.port()) << 16 | u64::from(std::process::id() & 0xFFFF);
        Ok(Box::new(RtpMediaSession {
            cfg: self.cfg.clone(),
            encoder,
            jitter_min_delay_ms: config.audio.jitter_buffer_min_delay_ms.max(self.cfg.jitter_min_delay_ms),
            jitter_max_packets: config.audio.jitter_buffer_max_packets as usize,
            socket,
            local_addr,
            codecs,
            excluded: Mutex::new(Vec::new()),
            session_id,
            state: Mutex::new(State {
                io: Some((config.capturer, config.renderer)),
                local: None,
                version: 0,
                on_hold: false,
                muted: false,
            }),
            session: Arc::new(Mutex::new(None)),
            events_tx,
            events_rx: tokio::sync::Mutex::new(events_rx),
            stop: Arc::new(Notify::new()),
        }))
    }
}

/// A call's audio devices, either of which may be absent.
type Devices = (Option<Box<dyn AudioCapturer>>, Option<Box<dyn AudioRenderer>>);

struct State {
    io: Option<Devices>,
    local: Option<LocalDescription>,
    version: u64,
    on_hold: bool,
    muted: bool,
}

type SharedSession = Arc<Mutex<Option<RtpSession>>>;

struct RtpMediaSession {
    cfg: RtpEngineConfig,
    encoder: EncoderSettings,
    jitter_min_delay_ms: u32,
    jitter_max_packets: usize,
    socket: Arc<UdpSocket>,
    local_addr: SocketAddr,
    codecs: Vec<Arc<dyn AudioCodec>>,
    /// Codecs no longer offered or accepted (they kept failing).
    excluded: Mutex<Vec<String>>,
    session_id: u64,
    state: Mutex<State>,
    session: SharedSession,
    events_tx: mpsc::UnboundedSender<MediaEvent>,
    events_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<MediaEvent>>,
    stop: Arc<Notify>,
}

/// DSCP EF (46), as the TOS byte: the class voice is marked with (RFC 4594).
const DSCP_EF_TOS: u32 = 46 << 2;

/// Marks the socket's packets DSCP EF when asked (`media.enable_dscp`, or the call's
/// `enable_dscp` option). IPv4 only: an IPv6 socket's traffic class stays unmarked.
fn mark_dscp(socket: &UdpSocket, enable: bool) {
    let is_v4 = socket.local_addr().is_ok_and(|a| a.is_ipv4());
    if enable && is_v4 {
        if let Err(e) = socket.set_tos_v4(DSCP_EF_TOS) {
            tracing::debug!("cannot mark media DSCP EF: {e}");
        }
    }
}

/// The unspecified address (all interfaces) of `ip`'s family.
fn any_of_family(ip: IpAddr) -> IpAddr {
    if ip.is_ipv4() {
        IpAddr::from([0, 0, 0, 0])
    } else {
        IpAddr::from([0u16; 8])
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The local address the OS would use to reach `remote` (no packet is sent: a UDP
/// `connect` only picks the route).
fn route_to(remote: IpAddr) -> Option<IpAddr> {
    let s = std::net::UdpSocket::bind(SocketAddr::new(any_of_family(remote), 0)).ok()?;
    s.connect(SocketAddr::new(remote, 9)).ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RtpMediaSession {
    fn usable(&self) -> Vec<Arc<dyn AudioCodec>> {
        let excluded = lock(&self.excluded).clone();
        self.codecs
            .iter()
            .filter(|c| !excluded.iter().any(|x| x.eq_ignore_ascii_case(&c.descriptor().name)))
            .cloned()
            .collect()
    }

    /// What SDP offers and accepts: the usable codecs, and RED when configured.
    fn descriptors(&self) -> Vec<dialtone_core::parts::CodecDescriptor> {
        let mut ds: Vec<_> = self.usable().iter().map(|c| c.descriptor().clone()).collect();
        if self.cfg.red {
            ds.push(sdp::red_descriptor());
        }
        ds
    }

    fn new_ssrc() -> u32 {
        let mut b = [0u8; 4];
        rtc_crypto::default_provider().ok().and_then(|p| p.random().fill(&mut b).ok());
        u32::from_be_bytes(b) | 1
    }

    fn wanted_direction(&self, state: &State) -> Direction {
        if state.on_hold {
            Direction::SendOnly
        } else {
            Direction::SendRecv
        }
    }

    /// A session for what was agreed, with a fresh SSRC (no keystream is ever
    /// reused), carrying the call's mute, hold and media-timeout settings.
    fn new_session(&self, neg: Negotiated, codec: &Arc<dyn AudioCodec>) -> Result<RtpSession, VoiceError> {
        let mut session = RtpSession::new(
            SessionConfig {
                negotiated: neg,
                codec: codec.clone(),
                encoder: self.encoder.clone(),
                jitter_min_delay_ms: self.jitter_min_delay_ms,
                jitter_max_packets: self.jitter_max_packets.max(1),
                ssrc: Self::new_ssrc(),
            },
            Instant::now(),
            SystemTime::now(),
        )?;
        let st = lock(&self.state);
        session.set_muted(st.muted);
        session.set_held(st.on_hold);
        session.set_media_timeout(self.cfg.media_timeout);
        Ok(session)
    }

    /// Starts media for what was agreed, or updates a running call (a re-offer).
    fn start(&self, neg: Negotiated) -> Result<(), VoiceError> {
        let codec = self
            .usable()
            .into_iter()
            .find(|c| c.descriptor().name.eq_ignore_ascii_case(&neg.codec.name))
            .ok_or_else(|| {
                VoiceError::new(ErrorCode::NoSupportedCodec, format!("no codec {}", neg.codec.name))
            })?;
        let mut running = lock(&self.session);
        if let Some(s) = running.as_mut() {
            if s.codec_name().eq_ignore_ascii_case(&neg.codec.name) {
                s.set_direction(neg.direction);
                return Ok(());
            }
            // A renegotiation to another codec: a new session (a new SSRC, so that
            // no keystream is reused) in the running media task, which adapts its
            // resampling to the new codec's rate.
            let next = self.new_session(neg, &codec)?;
            tracing::info!(from = s.codec_name(), to = %codec.descriptor().name, "media switches codec");
            *s = next;
            return Ok(());
        }
        let session = self.new_session(neg, &codec)?;
        let (capturer, renderer) = lock(&self.state)
            .io
            .take()
            .ok_or_else(|| VoiceError::new(ErrorCode::UnknownError, "media already started"))?;
        *running = Some(session);
        let task = MediaTask::new(
            self.socket.clone(),
            self.session.clone(),
            (capturer, renderer),
            codec.descriptor(),
            self.events_tx.clone(),
        )?;
        tokio::spawn(task.run(self.stop.clone()));
        Ok(())
    }
}

#[async_trait]
impl MediaSession for RtpMediaSession {
    async fn create_offer(&self) -> Result<String, VoiceError> {
        let mut st = lock(&self.state);
        st.version += 1;
        let direction = self.wanted_direction(&st);
        let excluded = lock(&self.excluded).clone();
        let lists_excluded = |l: &LocalDescription| {
            l.codecs.iter().any(|c| excluded.iter().any(|x| x.eq_ignore_ascii_case(&c.name)))
        };
        let local = match st.local.take() {
            // a re-offer keeps the socket and keys
            Some(mut previous) if !lists_excluded(&previous) => {
                previous.direction = direction;
                previous.version = st.version;
                previous
            }
            // a re-offer without a failed codec: new codec lines, the same keys
            Some(previous) => {
                let mut next = sdp::offer(
                    self.local_addr,
                    &self.descriptors(),
                    self.cfg.srtp,
                    direction,
                    self.session_id,
                    st.version,
                )
                .map_err(|e| VoiceError::new(ErrorCode::ClientLocalDescFailed, e.message()))?;
                if !previous.crypto.is_empty() && !next.crypto.is_empty() {
                    next.crypto = previous.crypto;
                }
                next
            }
            None => sdp::offer(
                self.local_addr,
                &self.descriptors(),
                self.cfg.srtp,
                direction,
                self.session_id,
                st.version,
            )
            .map_err(|e| VoiceError::new(ErrorCode::ClientLocalDescFailed, e.message()))?,
        };
        let text = local.to_sdp();
        st.local = Some(local);
        Ok(text)
    }

    async fn apply_answer(&self, sdp_text: &str) -> Result<(), VoiceError> {
        let remote = sdp::parse(sdp_text)?;
        let local = lock(&self.state).local.clone().ok_or_else(|| {
            VoiceError::new(ErrorCode::ClientRemoteDescFailed, "an answer without an offer")
        })?;
        let neg = sdp::apply_answer(&local, &remote)?;
        self.start(neg)
    }

    async fn create_answer(&self, offer: &str) -> Result<String, VoiceError> {
        let remote = sdp::parse(offer)?;
        let running = lock(&self.session).is_some();
        let (local, neg) = {
            let mut st = lock(&self.state);
            st.version += 1;
            let want = self.wanted_direction(&st);
            let previous = st.local.clone();
            let (mut local, mut neg) = sdp::answer(
                &remote,
                self.local_addr,
                &self.descriptors(),
                self.cfg.srtp,
                want,
                self.session_id,
            )?;
            local.version = st.version;
            // A re-offer (hold, or a signaling reconnect) answered on a running call
            // keeps the keys the media already uses.
            if let Some(prev) = previous.filter(|p| !p.crypto.is_empty()) {
                if !local.crypto.is_empty() && running {
                    // The SDP says the old key, and a session made for a codec switch
                    // uses it too.
                    neg.local_key = prev.crypto.first().cloned();
                    local.crypto = prev.crypto;
                }
            }
            st.local = Some(local.clone());
            (local, neg)
        };
        self.start(neg)?;
        Ok(local.to_sdp())
    }

    fn negotiated_codec(&self) -> Option<String> {
        lock(&self.session).as_ref().map(|s| s.codec_name().to_owned())
    }

    fn set_muted(&self, muted: bool) {
        lock(&self.state).muted = muted;
        if let Some(s) = lock(&self.session).as_mut() {
            s.set_muted(muted);
        }
    }

    fn set_on_hold(&self, on_hold: bool) {
        lock(&self.state).on_hold = on_hold;
        if let Some(s) = lock(&self.session).as_mut() {
            s.set_held(on_hold);
            s.set_direction(if on_hold { Direction::SendOnly } else { Direction::SendRecv });
        }
    }

    fn send_digits(&self, digits: &str) -> Result<(), VoiceError> {
        match lock(&self.session).as_mut() {
            Some(s) => s.send_digits(digits),
            None => Err(VoiceError::new(ErrorCode::UnknownError, "media has not started")),
        }
    }

    fn stats(&self) -> StatsReport {
        lock(&self.session).as_ref().map(RtpSession::stats).unwrap_or_default()
    }

    fn exclude_codec(&self, name: &str) -> bool {
        let others = self.usable().iter().filter(|c| !c.descriptor().name.eq_ignore_ascii_case(name)).count();
        if others == 0 {
            return false;
        }
        let mut ex = lock(&self.excluded);
        if !ex.iter().any(|x| x.eq_ignore_ascii_case(name)) {
            ex.push(name.to_owned());
        }
        true
    }

    async fn next_event(&self) -> Option<MediaEvent> {
        self.events_rx.lock().await.recv().await
    }

    async fn close(&self) {
        self.stop.notify_one();
        lock(&self.session).take();
    }
}

impl Drop for RtpMediaSession {
    fn drop(&mut self) {
        self.stop.notify_one();
    }
}

/// The per-call task: moves frames and datagrams.
struct MediaTask {
    socket: Arc<UdpSocket>,
    session: SharedSession,
    capturer: Option<Box<dyn AudioCapturer>>,
    renderer: Option<Box<dyn AudioRenderer>>,
    to_codec: Option<FrameConverter>,
    to_device: Option<FrameConverter>,
    frame_ms: u32,
    codec_samples: usize,
    events: mpsc::UnboundedSender<MediaEvent>,
    /// The codec the converters are set for, and its sample rate.
    codec: (String, u32),
    /// The codec already reported as failing.
    reported_failing: Option<String>,
}

/// Codec failures in a row (half a second of 20 ms frames) before a codec is
/// reported as failing.
const CODEC_FAILURE_LIMIT: u32 = 25;

/// The converters between the devices present and a codec's rate.
fn converters(
    capturer: Option<&dyn AudioCapturer>,
    renderer: Option<&dyn AudioRenderer>,
    codec_rate: u32,
    frame_ms: u32,
) -> Result<(Option<FrameConverter>, Option<FrameConverter>), VoiceError> {
    let to_codec = capturer
        .map(|c| c.format())
        .map(|f| FrameConverter::new(f.sample_rate(), codec_rate, f.channels(), frame_ms))
        .transpose()?;
    let to_device = renderer
        .map(|r| r.format())
        .map(|f| FrameConverter::new(codec_rate, f.sample_rate(), f.channels(), frame_ms))
        .transpose()?;
    Ok((to_codec, to_device))
}

impl MediaTask {
    fn new(
        socket: Arc<UdpSocket>,
        session: SharedSession,
        (capturer, renderer): Devices,
        codec: &dialtone_core::parts::CodecDescriptor,
        events: mpsc::UnboundedSender<MediaEvent>,
    ) -> Result<Self, VoiceError> {
        let frame_ms = codec.ptime_ms;
        let device_ms = [
            capturer.as_ref().map(|c| c.format().frame_ms()),
            renderer.as_ref().map(|r| r.format().frame_ms()),
        ];
        if let Some(ms) = device_ms.into_iter().flatten().find(|ms| *ms != frame_ms) {
            return Err(VoiceError::new(
                ErrorCode::UnknownError,
                format!("audio devices use {ms} ms frames, the codec {frame_ms} ms"),
            ));
        }
        let (to_codec, to_device) =
            converters(capturer.as_deref(), renderer.as_deref(), codec.sample_rate, frame_ms)?;
        Ok(MediaTask {
            to_codec,
            to_device,
            socket,
            session,
            capturer,
            renderer,
            frame_ms,
            codec_samples: codec.samples_per_packet(),
            events,
            codec: (codec.name.clone(), codec.sample_rate),
            reported_failing: None,
        })
    }

    async fn run(mut self, stop: Arc<Notify>) {
        let period = Duration::from_millis(u64::from(self.frame_ms));
        let mut clock = FrameClock::new(period, Instant::now());
        let mut dev_in = vec![0i16; self.capturer.as_ref().map_or(0, |c| c.format().samples_per_frame())];
        let mut dev_out = vec![0i16; self.renderer.as_ref().map_or(0, |r| r.format().samples_per_frame())];
        let mut codec_in = vec![0i16; self.codec_samples];
        let mut codec_out = vec![0i16; self.codec_samples];
        let mut buf = vec![0u8; 2048];
        loop {
            let wake = tokio::time::Instant::from_std(clock.poll_timeout());
            tokio::select! {
                _ = stop.notified() => break,
                _ = tokio::time::sleep_until(wake) => {
                    while let Some(scheduled) = clock.take(Instant::now()) {
                        if !self.frame(scheduled, &mut dev_in, &mut dev_out, &mut codec_in, &mut codec_out).await {
                            tracing::debug!("media task ended");
                            return;
                        }
                        if codec_in.len() != self.codec_samples {
                            codec_in = vec![0i16; self.codec_samples];
                            codec_out = vec![0i16; self.codec_samples];
                        }
                    }
                }
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, from)) => {
                        let got = match lock(&self.session).as_mut() {
                            Some(s) => s.receive(&buf[..n], from, Instant::now()),
                            None => break,
                        };
                        if let Received::Digit(d) = got {
                            let _ = self.events.send(MediaEvent::DigitsReceived(d.to_string()));
                        }
                    }
                    // ICMP errors from an earlier send surface here on Linux; not fatal
                    Err(e) => tracing::debug!("media socket: {e}"),
                },
            }
        }
        tracing::debug!("media task ended");
    }

    /// Sets the converters and buffers for a new codec rate.
    fn retune(&mut self, codec_rate: u32) -> Result<(), VoiceError> {
        (self.to_codec, self.to_device) =
            converters(self.capturer.as_deref(), self.renderer.as_deref(), codec_rate, self.frame_ms)?;
        self.codec_samples = (codec_rate * self.frame_ms / 1000) as usize;
        if let Some(s) = lock(&self.session).as_ref() {
            self.codec = (s.codec_name().to_owned(), codec_rate);
        }
        Ok(())
    }

    /// One frame period, the one scheduled for `now`; false when the session is gone.
    async fn frame(
        &mut self,
        now: Instant,
        dev_in: &mut [i16],
        dev_out: &mut [i16],
        codec_in: &mut [i16],
        codec_out: &mut [i16],
    ) -> bool {
        match (self.capturer.as_mut(), self.to_codec.as_mut()) {
            (Some(capturer), Some(to_codec)) => match capturer.read_frame(dev_in) {
                Ok(true) => to_codec.device_to_codec(dev_in, codec_in),
                Ok(false) => codec_in.fill(0),
                Err(e) => {
                    tracing::warn!("capture failed: {e}");
                    codec_in.fill(0);
                }
            },
            _ => codec_in.fill(0),
        }
        let (datagrams, dest, rtcp, rtcp_dest, sample, failing) = {
            let mut guard = lock(&self.session);
            let Some(s) = guard.as_mut() else { return false };
            if !s.codec_name().eq_ignore_ascii_case(&self.codec.0) {
                // Renegotiated to another codec: resample for its rate from now on.
                let rate = (s.frame_samples() as u64 * 1000 / u64::from(self.frame_ms.max(1))) as u32;
                drop(guard);
                if let Err(e) = self.retune(rate) {
                    tracing::warn!("cannot adapt to the new codec: {e}");
                    return false;
                }
                return true;
            }
            let datagrams = s.send_frame(codec_in, now).unwrap_or_else(|e| {
                tracing::warn!("encode failed: {e}");
                Vec::new()
            });
            s.play_frame(codec_out, now);
            let (rtcp, sample) = s.poll(now);
            let failing =
                (s.consecutive_codec_failures() >= CODEC_FAILURE_LIMIT).then(|| s.codec_name().to_owned());
            match s.poll_liveness(now) {
                Some(Liveness::Lost) => {
                    tracing::warn!(peer = %s.remote_addr(), "no media from the peer");
                    let _ = self.events.send(MediaEvent::Interrupted(VoiceError::new(
                        ErrorCode::MediaConnectionFailed,
                        format!("no media has arrived from {} for a while", s.remote_addr()),
                    )));
                }
                Some(Liveness::Restored) => {
                    tracing::info!(peer = %s.remote_addr(), "media arrives again");
                    let _ = self.events.send(MediaEvent::Restored);
                }
                None => {}
            }
            (datagrams, s.remote_addr(), rtcp, s.rtcp_addr(), sample, failing)
        };
        if let Some(name) = failing {
            if self.reported_failing.as_deref() != Some(name.as_str()) {
                tracing::warn!(codec = %name, "the codec keeps failing");
                let _ = self.events.send(MediaEvent::CodecFailing(name.clone()));
                self.reported_failing = Some(name);
            }
        }
        for d in &datagrams {
            if let Err(e) = self.socket.send_to(d, dest).await {
                tracing::debug!("media send to {dest}: {e}");
            }
        }
        if let Some(r) = rtcp {
            let _ = self.socket.send_to(&r, rtcp_dest).await;
        }
        if let (Some(renderer), Some(to_device)) = (self.renderer.as_mut(), self.to_device.as_mut()) {
            to_device.codec_to_device(codec_out, dev_out);
            if let Err(e) = renderer.write_frame(dev_out) {
                tracing::warn!("playback failed: {e}");
            }
        }
        if let Some(sample) = sample {
            let _ = self.events.send(MediaEvent::QualitySample(sample));
        }
        true
    }
}

/// Registers the `rtp` engine, configured from `[media]` and `[codecs]`.
pub fn register(registry: &mut Registry) -> Result<(), RegistryError> {
    registry.register::<dyn MediaEngine>("rtp", |config| {
        Ok(Arc::new(RtpEngine::new(RtpEngineConfig::from_config(config))))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn media_sockets_bind_all_interfaces_and_carry_dscp_ef_when_asked() {
        let engine = RtpEngine::default();
        let s = engine.bind(IpAddr::from([127, 0, 0, 1])).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(s.local_addr().unwrap_or_else(|e| panic!("{e}")).ip().is_unspecified());
        mark_dscp(&s, true);
        assert_eq!(s.tos_v4().unwrap_or_else(|e| panic!("{e}")), 0xB8);
        let s = engine.bind(IpAddr::from([127, 0, 0, 1])).await.unwrap_or_else(|e| panic!("{e}"));
        mark_dscp(&s, false);
        assert_eq!(s.tos_v4().unwrap_or_else(|e| panic!("{e}")), 0);
    }

    #[tokio::test]
    async fn the_advertised_address_is_configured_else_the_signaling_interface() {
        let mut cfg = RtpEngineConfig::default();
        let signaling =
            Some((SocketAddr::from(([10, 9, 8, 7], 5000)), SocketAddr::from(([10, 9, 8, 1], 5066))));
        let engine = RtpEngine::new(cfg.clone());
        assert_eq!(engine.advertised_ip(signaling).await.ok(), Some(IpAddr::from([10, 9, 8, 7])));
        assert_eq!(engine.advertised_ip(None).await.ok(), Some(IpAddr::from([127, 0, 0, 1])));
        cfg.advertised = Some("192.0.2.10".into());
        let engine = RtpEngine::new(cfg.clone());
        assert_eq!(engine.advertised_ip(signaling).await.ok(), Some(IpAddr::from([192, 0, 2, 10])));
        cfg.advertised = Some("localhost".into());
        let engine = RtpEngine::new(cfg);
        assert!(engine.advertised_ip(signaling).await.is_ok_and(|ip| ip.is_loopback()));
    }
}

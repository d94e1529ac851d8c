//! One call's RTP session as a sans-IO core: the wire of a call (SSRC and sequence
//! numbers, SRTP, RTCP, latching, RFC 4733 DTMF) around the shared media pipeline
//! (`dialtone-media`: encoding, jitter buffer, playout, meters), which it drives.
//!
//! The shell calls, every frame period: [`RtpSession::send_frame`] with the captured
//! frame (it returns the datagrams to send: audio, or DTMF events while digits are
//! being sent), [`RtpSession::play_frame`] for the frame to render, and
//! [`RtpSession::poll`] for RTCP and the once-a-second quality sample. Every datagram
//! that arrives goes to [`RtpSession::receive`]. Time is always passed in, the wall
//! clock too (for RTCP's NTP times): nothing here reads a clock.
//!
//! A session can also carry encoded frames with no decode, for a forwarder: with
//! [`RtpSession::set_forwarding`] on, received audio comes back from `receive` as
//! [`Received::Forward`] instead of entering the jitter buffer, and
//! [`RtpSession::send_encoded`] sends a frame as it is, under this session's own
//! SSRC, sequence numbers, timestamps and keys.
//!
//! Bad packets (truncated, wrong version, unknown payload type, failed SRTP
//! authentication, replayed, from an unknown SSRC mid-stream) are dropped, counted in
//! [`DropCounters`] and logged once per kind; none of them ends the call.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use dialtone_core::parts::{AudioCodec, EncoderSettings};
use dialtone_core::{ErrorCode, QualitySample, StatsReport, VoiceError};
use dialtone_media::jitter::{JitterConfig, JitterStats, MediaPacket};
use dialtone_media::meter::{self, NetworkMeasures, QualityMeter, TrackFigures};
use dialtone_media::sdp::{CryptoSuite, Direction, Negotiated, SdesKey};
use dialtone_media::{FrameEncoder, Playout};
use rtc_shared::marshal::{Marshal, Unmarshal};
use rtc_srtp::context::Context as SrtpContext;
use rtc_srtp::protection_profile::ProtectionProfile;

use crate::dtmf::{DtmfReceiver, DtmfSender};
use crate::red::{self, Block};

pub use dialtone_media::FrameSource;

/// How often RTCP reports go out.
pub const RTCP_INTERVAL: Duration = Duration::from_secs(1);

/// The most earlier frames a RED payload carries.
const RED_MAX_DISTANCE: usize = 2;
/// The loss the peer reports (RTCP's fraction lost, of 256) from which RED carries two
/// earlier frames instead of one: 3 %.
pub const RED_TWO_FRAMES_FROM: u32 = 8;

/// Why received datagrams were dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropCounters {
    /// Too short to be RTP or RTCP.
    pub truncated: u64,
    /// RTP version other than 2.
    pub bad_version: u64,
    /// A payload type that was not negotiated.
    pub unknown_payload_type: u64,
    /// SRTP/SRTCP authentication or decryption failed.
    pub srtp_failed: u64,
    /// SRTP replay protection refused it.
    pub replayed: u64,
    /// A payload the codec could not decode.
    pub undecodable: u64,
    /// Unreadable RTCP.
    pub bad_rtcp: u64,
    /// Plain RTP of an unknown SSRC from an address other than the peer's.
    pub foreign: u64,
    /// An encoded frame too large to send.
    pub oversized: u64,
    /// A RED (RFC 2198) payload that could not be read, or whose primary is not the
    /// negotiated codec.
    pub bad_red: u64,
}

impl DropCounters {
    /// All drops.
    pub fn total(&self) -> u64 {
        self.truncated
            + self.bad_version
            + self.unknown_payload_type
            + self.srtp_failed
            + self.replayed
            + self.undecodable
            + self.bad_rtcp
            + self.foreign
            + self.oversized
            + self.bad_red
    }
}

/// What [`RtpSession::receive`] made of a datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// An audio packet, queued for playout.
    Audio,
    /// An audio packet, not queued: the session forwards
    /// ([`RtpSession::set_forwarding`]). Its frame is the caller's to send on.
    Forward(MediaPacket),
    /// A DTMF digit, the first time its event was seen.
    Digit(char),
    /// Part of a DTMF event already reported.
    DigitRepeat,
    /// An RTCP report.
    Rtcp,
    /// Dropped (and counted).
    Dropped,
}

/// A change in whether media arrives, from [`RtpSession::poll_liveness`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Nothing authenticated arrived for the media timeout.
    Lost,
    /// Media arrives again after [`Liveness::Lost`].
    Restored,
}

/// What the session needs.
pub struct SessionConfig {
    /// The negotiation's outcome.
    pub negotiated: Negotiated,
    /// The codec it chose.
    pub codec: Arc<dyn AudioCodec>,
    /// Encoder settings for this call.
    pub encoder: EncoderSettings,
    /// The jitter buffer's least delay in ms.
    pub jitter_min_delay_ms: u32,
    /// The jitter buffer's most packets.
    pub jitter_max_packets: usize,
    /// Our SSRC.
    pub ssrc: u32,
}

impl SessionConfig {
    /// A configuration with default encoder settings and a jitter buffer of 20 ms
    /// least delay and 50 packets.
    pub fn new(negotiated: Negotiated, codec: Arc<dyn AudioCodec>, ssrc: u32) -> Self {
        SessionConfig {
            negotiated,
            codec,
            encoder: EncoderSettings::default(),
            jitter_min_delay_ms: 20,
            jitter_max_packets: 50,
            ssrc,
        }
    }
}

/// Receive-side RFC 3550 counters.
#[derive(Debug, Default)]
struct RecvState {
    ssrc: Option<u32>,
    base_seq: Option<u32>,
    max_seq: u32, // extended
    received: u64,
    bytes: u64,
    expected_prior: u64,
    received_prior: u64,
    last_sr: Option<(u32, Instant)>, // middle 32 bits of the SR's NTP time, when it came
}

impl RecvState {
    fn update_seq(&mut self, seq: u16) {
        match self.base_seq {
            None => {
                self.base_seq = Some(u32::from(seq));
                self.max_seq = u32::from(seq);
            }
            Some(_) => {
                let cur = self.max_seq;
                let delta = seq.wrapping_sub(cur as u16) as i16;
                if delta > 0 {
                    self.max_seq = cur.wrapping_add(delta as u32);
                }
            }
        }
    }

    fn expected(&self) -> u64 {
        self.base_seq.map_or(0, |b| u64::from(self.max_seq.wrapping_sub(b)) + 1)
    }

    fn lost(&self) -> i64 {
        self.expected() as i64 - self.received as i64
    }
}

/// One call's media session. See the module docs.
pub struct RtpSession {
    neg: Negotiated,
    codec_name: String,
    frame_samples: usize,
    frame_ts: u32,
    clock_rate: u32,
    // send
    ssrc: u32,
    seq: u16,
    ts: u32,
    event_ts: u32,
    sender: FrameEncoder,
    srtp_out: Option<SrtpContext>,
    srtcp_out_enabled: bool,
    packets_sent: u64,
    octets_sent: u64,
    direction: Direction,
    dtmf_out: DtmfSender,
    /// Forwarded frames: the source stream and the offset from its timestamps to ours.
    forward_ts: Option<(u32, u32)>,
    /// The last frames sent, with their timestamps, for RED's redundant blocks.
    red_history: std::collections::VecDeque<(u32, Vec<u8>)>,
    /// A RED payload being built.
    red_out: Vec<u8>,
    // receive
    srtp_in: Option<SrtpContext>,
    playout: Playout,
    forwarding: bool,
    recv: RecvState,
    dtmf_in: DtmfReceiver,
    drops: DropCounters,
    remote_addr: SocketAddr,
    latched: bool,
    // reports
    rtt_ms: Option<f64>,
    remote_report: Option<(u32, i64, f64)>, // fraction lost, total lost, jitter ms (what the peer says of us)
    next_rtcp: Option<Instant>,
    quality: QualityMeter,
    /// A monotonic instant and the wall-clock time at that instant (RTCP's NTP times).
    anchor: (Instant, SystemTime),
    scratch: Vec<u8>,
    /// How long without media before it counts as lost.
    media_timeout: Option<Duration>,
    /// When an authenticated datagram last arrived (or the watch last started).
    last_heard: Option<Instant>,
    /// Media reported lost and not yet restored.
    media_lost: bool,
}

fn profile(suite: CryptoSuite) -> ProtectionProfile {
    match suite {
        CryptoSuite::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
        CryptoSuite::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
    }
}

fn srtp_context(key: &SdesKey, replay: bool) -> Result<SrtpContext, VoiceError> {
    let (k, s) = key.key_salt.split_at(key.suite.key_len());
    let provider = rtc_crypto::default_provider()
        .map_err(|e| VoiceError::new(ErrorCode::MediaConnectionFailed, format!("no crypto provider: {e}")))?;
    let (rtp_opt, rtcp_opt) = if replay {
        (
            Some(rtc_srtp::option::srtp_replay_protection(64)),
            Some(rtc_srtp::option::srtcp_replay_protection(64)),
        )
    } else {
        (None, None)
    };
    SrtpContext::new(k, s, profile(key.suite), rtp_opt, rtcp_opt, provider.crypto())
        .map_err(|e| VoiceError::new(ErrorCode::MediaConnectionFailed, format!("SRTP context: {e}")))
}

/// NTP time (RFC 5905 64-bit) of a wall-clock time.
fn ntp(t: SystemTime) -> u64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() + 2_208_988_800;
    (secs << 32) | ((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000)
}

impl RtpSession {
    /// A session for what the negotiation agreed, starting at `now`, when the wall
    /// clock says `wall` (both from the shell: the session reads no clock).
    pub fn new(cfg: SessionConfig, now: Instant, wall: SystemTime) -> Result<RtpSession, VoiceError> {
        let d = cfg.codec.descriptor().clone();
        let frame_samples = d.samples_per_packet();
        let frame_ts = d.clock_rate * d.ptime_ms / 1000;
        let sender = FrameEncoder::new(cfg.codec.as_ref(), &cfg.encoder)?;
        let srtp_out = cfg.negotiated.local_key.as_ref().map(|k| srtp_context(k, false)).transpose()?;
        let srtp_in = cfg.negotiated.remote_key.as_ref().map(|k| srtp_context(k, true)).transpose()?;
        let mut playout = Playout::new(
            JitterConfig {
                clock_rate: d.clock_rate,
                frame_ts,
                min_delay_ms: cfg.jitter_min_delay_ms,
                max_packets: cfg.jitter_max_packets.max(1),
            },
            cfg.codec.new_decoder()?,
        );
        playout.set_receiving(cfg.negotiated.direction.receives());
        let seed = cfg.ssrc;
        Ok(RtpSession {
            codec_name: cfg.negotiated.codec.name.clone(),
            remote_addr: cfg.negotiated.remote_addr,
            direction: cfg.negotiated.direction,
            srtcp_out_enabled: srtp_out.is_some(),
            neg: cfg.negotiated,
            frame_samples,
            frame_ts,
            clock_rate: d.clock_rate,
            ssrc: cfg.ssrc,
            seq: (seed >> 16) as u16,
            ts: seed.rotate_left(7),
            event_ts: 0,
            sender,
            srtp_out,
            packets_sent: 0,
            octets_sent: 0,
            dtmf_out: DtmfSender::new(d.ptime_ms, d.clock_rate),
            forward_ts: None,
            red_history: std::collections::VecDeque::with_capacity(RED_MAX_DISTANCE),
            red_out: Vec::with_capacity(1500),
            srtp_in,
            playout,
            forwarding: false,
            recv: RecvState::default(),
            dtmf_in: DtmfReceiver::default(),
            drops: DropCounters::default(),
            latched: false,
            rtt_ms: None,
            remote_report: None,
            next_rtcp: None,
            quality: QualityMeter::default(),
            anchor: (now, wall),
            scratch: Vec::with_capacity(1500),
            media_timeout: None,
            last_heard: None,
            media_lost: false,
        })
    }

    /// PCM samples in one frame at the codec's rate.
    pub fn frame_samples(&self) -> usize {
        self.frame_samples
    }

    /// Where datagrams go (the negotiated address until the peer's packets arrive from
    /// elsewhere: symmetric RTP).
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote_addr
    }

    /// The negotiated codec's name.
    pub fn codec_name(&self) -> &str {
        &self.codec_name
    }

    /// Drop counters.
    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    /// The jitter buffer's counters.
    pub fn jitter_stats(&self) -> &JitterStats {
        self.playout.jitter_stats()
    }

    /// How long the packet of the last frame played had waited in the jitter buffer
    /// and behind the audio decoded before it.
    pub fn last_frame_held(&self) -> Option<Duration> {
        self.playout.last_held()
    }

    /// The playout's time-stretching so far.
    pub fn stretch_stats(&self) -> &dialtone_media::playout::StretchStats {
        self.playout.stretch_stats()
    }

    /// Sends silence instead of the microphone (true) or the microphone (false).
    pub fn set_muted(&mut self, muted: bool) {
        self.sender.set_muted(muted);
    }

    /// Forwards (true): received audio is handed back by [`receive`](Self::receive)
    /// as [`Received::Forward`], with no jitter buffer and no decode. DTMF, RTCP,
    /// latching and the media watch work as ever.
    pub fn set_forwarding(&mut self, forwarding: bool) {
        self.forwarding = forwarding;
    }

    /// Changes the direction (hold sends `sendonly`: we keep sending, stop playing).
    /// A direction that starts receiving restarts the media watch.
    pub fn set_direction(&mut self, direction: Direction) {
        if direction.receives() && !self.direction.receives() {
            self.last_heard = None;
        }
        self.direction = direction;
        self.playout.set_receiving(direction.receives());
    }

    /// On hold by us (true): silence goes out instead of the microphone, so the held
    /// party hears nothing of this side (packets still flow, keeping NAT bindings and
    /// the peer's media watch alive).
    pub fn set_held(&mut self, held: bool) {
        self.sender.set_held(held);
    }

    /// Reports media lost after `timeout` without any authenticated packet
    /// ([`poll_liveness`](Self::poll_liveness)); `None` never does.
    pub fn set_media_timeout(&mut self, timeout: Option<Duration>) {
        self.media_timeout = timeout;
    }

    /// Packets received so far (audio and DTMF).
    pub fn packets_received(&self) -> u64 {
        self.recv.received
    }

    fn heard(&mut self, now: Instant) {
        self.last_heard = Some(now);
    }

    /// Whether media stopped or came back since the last call. The watch runs only
    /// while this side's direction receives; it starts at the first call (or when a
    /// direction starts receiving), so a call whose media never arrives is reported
    /// too. Call it every frame period.
    pub fn poll_liveness(&mut self, now: Instant) -> Option<Liveness> {
        let timeout = self.media_timeout?;
        if !self.direction.receives() {
            self.last_heard = None;
            return self.media_lost.then(|| {
                self.media_lost = false;
                Liveness::Restored
            });
        }
        let last = *self.last_heard.get_or_insert(now);
        let silent = now.saturating_duration_since(last) >= timeout;
        match (silent, self.media_lost) {
            (true, false) => {
                self.media_lost = true;
                Some(Liveness::Lost)
            }
            (false, true) => {
                self.media_lost = false;
                Some(Liveness::Restored)
            }
            _ => None,
        }
    }

    /// Queues DTMF digits (`w` is a 500 ms pause). Errors if the peer did not
    /// negotiate telephone-event (send them by SIP INFO instead) or a digit is bad.
    pub fn send_digits(&mut self, digits: &str) -> Result<(), VoiceError> {
        if self.neg.dtmf_pt.is_none() {
            return Err(VoiceError::new(
                ErrorCode::UnknownError,
                "the peer did not negotiate telephone-event",
            ));
        }
        self.dtmf_out.queue(digits)
    }

    fn wall(&self, now: Instant) -> SystemTime {
        self.anchor.1 + now.saturating_duration_since(self.anchor.0)
    }

    fn protect(&mut self, raw: &[u8]) -> Option<Vec<u8>> {
        match &mut self.srtp_out {
            None => Some(raw.to_vec()),
            Some(ctx) => match ctx.encrypt_rtp(raw) {
                Ok(b) => Some(b.to_vec()),
                Err(e) => {
                    tracing::warn!("SRTP protect failed: {e}");
                    None
                }
            },
        }
    }

    fn packet(&mut self, pt: u8, marker: bool, timestamp: u32, payload: &[u8]) -> Option<Vec<u8>> {
        let pkt = rtc_rtp::packet::Packet {
            header: rtc_rtp::header::Header {
                version: 2,
                marker,
                payload_type: pt,
                sequence_number: self.seq,
                timestamp,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload: Bytes::copy_from_slice(payload),
        };
        self.seq = self.seq.wrapping_add(1);
        let raw = pkt.marshal().ok()?;
        self.packets_sent += 1;
        self.octets_sent += payload.len() as u64;
        self.protect(&raw)
    }

    /// Encodes and packetizes one captured frame (`frame_samples` long at the codec
    /// rate); returns the datagrams to send to [`remote_addr`](Self::remote_addr).
    /// While digits are being sent, DTMF events go instead of audio.
    pub fn send_frame(&mut self, pcm: &[i16], _now: Instant) -> Result<Vec<Vec<u8>>, VoiceError> {
        let frame_ts = self.frame_ts;
        let mut out = Vec::new();
        if !self.direction.sends() {
            self.ts = self.ts.wrapping_add(frame_ts);
            return Ok(out);
        }
        if let Some(dtmf_pt) = self.neg.dtmf_pt {
            let events = self.dtmf_out.tick();
            if !events.is_empty() {
                for e in events {
                    if e.new_event {
                        self.event_ts = self.ts;
                    }
                    let event_ts = self.event_ts;
                    out.extend(self.packet(dtmf_pt, e.marker, event_ts, &e.payload.to_bytes()));
                }
                self.ts = self.ts.wrapping_add(frame_ts);
                return Ok(out);
            }
        }
        let mut frame = std::mem::take(&mut self.scratch);
        frame.clear();
        let encoded = self.sender.encode(pcm).map(|f| f.map(|f| frame.extend_from_slice(f)).is_some());
        // a DTX frame need not be sent
        if let Ok(true) = encoded {
            let (pt, ts) = (self.neg.codec.pt, self.ts);
            match self.neg.red_pt {
                None => out.extend(self.packet(pt, false, ts, &frame)),
                Some(red_pt) => {
                    let payload = self.with_redundancy(pt, ts, &frame);
                    out.extend(self.packet(red_pt, false, ts, &payload));
                    self.red_out = payload;
                }
            }
        }
        self.scratch = frame;
        self.ts = self.ts.wrapping_add(frame_ts);
        encoded.map(|_| out)
    }

    /// How many earlier frames ride along in each RED payload: one, or two while the
    /// peer reports [`RED_TWO_FRAMES_FROM`] loss or more (bursts take more than one
    /// frame in a row).
    fn red_distance(&self) -> usize {
        match self.remote_report {
            Some((fraction, _, _)) if fraction >= RED_TWO_FRAMES_FROM => 2,
            _ => 1,
        }
    }

    /// The RED payload of a frame at `ts`: the last frames sent, then this one, which
    /// joins the history.
    fn with_redundancy(&mut self, pt: u8, ts: u32, frame: &[u8]) -> Vec<u8> {
        let distance = self.red_distance();
        let skip = self.red_history.len().saturating_sub(distance);
        let blocks: Vec<Block<'_>> = self
            .red_history
            .iter()
            .skip(skip)
            .map(|(at, data)| Block { pt, ts_offset: ts.wrapping_sub(*at), data })
            .collect();
        let mut payload = std::mem::take(&mut self.red_out);
        red::build(&blocks, pt, frame, &mut payload);
        if self.red_history.len() == RED_MAX_DISTANCE {
            self.red_history.pop_front();
        }
        self.red_history.push_back((ts, frame.to_vec()));
        payload
    }

    /// Sends one encoded frame as it is (forwarding: no decode, no encode), under this
    /// session's SSRC, sequence numbers and keys. Its timestamp keeps the source's
    /// spacing (a gap in the source stays a gap), offset into this stream's timestamp
    /// space; a new source SSRC starts a new offset. Returns the datagram to send, or
    /// none when this side does not send or the frame is over 1,400 bytes.
    pub fn send_encoded(&mut self, frame: &MediaPacket, _now: Instant) -> Option<Vec<u8>> {
        if !self.direction.sends() {
            return None;
        }
        if frame.payload.len() > 1400 {
            Self::count_once("oversized", &mut self.drops.oversized, &frame.payload.len());
            return None;
        }
        let offset = match self.forward_ts {
            Some((ssrc, offset)) if ssrc == frame.ssrc => offset,
            _ => {
                // continue one frame after what this stream last sent
                let offset = self.ts.wrapping_sub(frame.timestamp);
                self.forward_ts = Some((frame.ssrc, offset));
                offset
            }
        };
        let ts = frame.timestamp.wrapping_add(offset);
        let after = ts.wrapping_add(self.frame_ts);
        // never let the stream's clock run backwards for what send_frame sends next
        if after.wrapping_sub(self.ts) as i32 > 0 {
            self.ts = after;
        }
        self.packet(self.neg.codec.pt, frame.marker, ts, &frame.payload)
    }

    /// How many codec calls in a row failed (encode or decode); a codec that keeps
    /// failing is worth renegotiating away from.
    pub fn consecutive_codec_failures(&self) -> u32 {
        self.sender.consecutive_failures().max(self.playout.consecutive_decode_failures())
    }

    fn count_once(kind: &'static str, counter: &mut u64, detail: &dyn std::fmt::Display) {
        if *counter == 0 {
            tracing::warn!("dropping {kind} packets (first: {detail}); further ones are only counted");
        }
        *counter += 1;
    }

    /// Counts a datagram SRTP/SRTCP refused: a replay, or a failed authentication.
    fn count_srtp_drop(&mut self, e: &rtc_shared::error::Error) {
        use rtc_shared::error::Error as E;
        if matches!(e, E::SrtpSsrcDuplicated(..) | E::SrtcpSsrcDuplicated(..)) {
            Self::count_once("replayed SRTP", &mut self.drops.replayed, e);
        } else {
            Self::count_once("unauthenticated SRTP", &mut self.drops.srtp_failed, e);
        }
    }

    /// Takes one datagram that arrived from `from` at `now`.
    pub fn receive(&mut self, datagram: &[u8], from: SocketAddr, now: Instant) -> Received {
        if datagram.len() < 12 {
            Self::count_once("truncated", &mut self.drops.truncated, &datagram.len());
            return Received::Dropped;
        }
        if datagram[0] >> 6 != 2 {
            Self::count_once("non-version-2", &mut self.drops.bad_version, &(datagram[0] >> 6));
            return Received::Dropped;
        }
        // RFC 5761: RTCP packet types 192-223 sit where RTP has marker+PT 64-95
        if (192..=223).contains(&datagram[1]) {
            return self.receive_rtcp(datagram, now);
        }
        let plain = match &mut self.srtp_in {
            None => Ok(datagram.to_vec()),
            Some(ctx) => ctx.decrypt_rtp(datagram).map(|b| b.to_vec()),
        };
        let plain = match plain {
            Ok(p) => p,
            Err(e) => {
                self.count_srtp_drop(&e);
                return Received::Dropped;
            }
        };
        let pkt = match rtc_rtp::packet::Packet::unmarshal(&mut &plain[..]) {
            Ok(p) => p,
            Err(e) => {
                Self::count_once("truncated", &mut self.drops.truncated, &e);
                return Received::Dropped;
            }
        };
        let h = &pkt.header;
        let is_dtmf = Some(h.payload_type) == self.neg.dtmf_pt;
        let is_red = Some(h.payload_type) == self.neg.red_pt;
        if h.payload_type != self.neg.codec.pt && !is_dtmf && !is_red {
            Self::count_once("unknown payload type", &mut self.drops.unknown_payload_type, &h.payload_type);
            return Received::Dropped;
        }
        // Plain RTP has no authentication: once a stream is known, a packet of
        // another SSRC from another address is someone else's, and never moves us.
        if self.srtp_in.is_none()
            && self.latched
            && from != self.remote_addr
            && self.recv.ssrc.is_some_and(|s| s != h.ssrc)
        {
            Self::count_once("foreign RTP", &mut self.drops.foreign, &from);
            return Received::Dropped;
        }
        self.heard(now);
        // symmetric RTP: answer to where authenticated packets come from
        if !self.latched || self.remote_addr != from {
            if self.remote_addr != from {
                tracing::debug!(from = %from, "latching media to the peer's source address");
            }
            self.remote_addr = from;
            self.latched = true;
        }
        if self.recv.ssrc != Some(h.ssrc) {
            self.recv = RecvState { ssrc: Some(h.ssrc), last_sr: self.recv.last_sr, ..Default::default() };
        }
        self.recv.update_seq(h.sequence_number);
        self.recv.received += 1;
        self.recv.bytes += pkt.payload.len() as u64;
        if is_dtmf {
            return match self.dtmf_in.receive(h.timestamp, &pkt.payload) {
                Some(d) => Received::Digit(d),
                None => Received::DigitRepeat,
            };
        }
        let (primary, redundant) = if is_red {
            match red::parse(&pkt.payload) {
                Ok(blocks) => match blocks.split_last() {
                    Some((p, rest)) if p.pt == self.neg.codec.pt => (p.data.to_vec(), rest.to_vec()),
                    _ => {
                        Self::count_once(
                            "RED with another primary",
                            &mut self.drops.bad_red,
                            &h.payload_type,
                        );
                        return Received::Dropped;
                    }
                },
                Err(e) => {
                    Self::count_once("unreadable RED", &mut self.drops.bad_red, &e);
                    return Received::Dropped;
                }
            }
        } else {
            (pkt.payload.to_vec(), Vec::new())
        };
        let frame = MediaPacket {
            seq: h.sequence_number,
            timestamp: h.timestamp,
            ssrc: h.ssrc,
            marker: h.marker,
            payload: primary,
        };
        if self.forwarding {
            return Received::Forward(frame);
        }
        let (seq, ts, ssrc) = (h.sequence_number, h.timestamp, h.ssrc);
        self.playout.push(frame, now);
        // the copies of earlier frames, nearest first: each fills its frame if missing
        for (back, b) in redundant.iter().rev().enumerate().filter(|(_, b)| b.pt == self.neg.codec.pt) {
            let copy = MediaPacket {
                seq: seq.wrapping_sub(back as u16 + 1),
                timestamp: ts.wrapping_sub(b.ts_offset),
                ssrc,
                marker: false,
                payload: b.data.to_vec(),
            };
            self.playout.push_redundant(copy, now);
        }
        Received::Audio
    }

    fn receive_rtcp(&mut self, datagram: &[u8], now: Instant) -> Received {
        let plain = match &mut self.srtp_in {
            None => Ok(datagram.to_vec()),
            Some(ctx) => ctx.decrypt_rtcp(datagram).map(|b| b.to_vec()),
        };
        let plain = match plain {
            Ok(p) => p,
            Err(e) => {
                self.count_srtp_drop(&e);
                return Received::Dropped;
            }
        };
        let packets = match rtc_rtcp::packet::unmarshal(&mut &plain[..]) {
            Ok(p) => p,
            Err(e) => {
                Self::count_once("unreadable RTCP", &mut self.drops.bad_rtcp, &e);
                return Received::Dropped;
            }
        };
        self.heard(now);
        let now_ntp = ntp(self.wall(now));
        for p in packets {
            let any = p.as_any();
            let reports = if let Some(sr) = any.downcast_ref::<rtc_rtcp::sender_report::SenderReport>() {
                self.recv.last_sr = Some(((sr.ntp_time >> 16) as u32, now));
                sr.reports.clone()
            } else if let Some(rr) = any.downcast_ref::<rtc_rtcp::receiver_report::ReceiverReport>() {
                rr.reports.clone()
            } else {
                continue;
            };
            for r in reports.iter().filter(|r| r.ssrc == self.ssrc) {
                if r.last_sender_report != 0 {
                    let now_mid = (now_ntp >> 16) as u32;
                    let rtt = now_mid.wrapping_sub(r.last_sender_report).wrapping_sub(r.delay);
                    let rtt_ms = f64::from(rtt) * 1000.0 / 65536.0;
                    if rtt_ms < 60_000.0 {
                        self.rtt_ms = Some(rtt_ms);
                    }
                }
                let total = i64::from(r.total_lost & 0x00FF_FFFF);
                let jitter_ms = f64::from(r.jitter) * 1000.0 / f64::from(self.clock_rate);
                self.remote_report = Some((u32::from(r.fraction_lost), total, jitter_ms));
                // the encoder's FEC follows the loss the peer sees, report by report
                self.sender.set_peer_loss_fraction(r.fraction_lost);
            }
        }
        Received::Rtcp
    }

    /// The frame to render now (`frame_samples` long), and where it came from.
    pub fn play_frame(&mut self, out: &mut [i16], now: Instant) -> FrameSource {
        let n = self.frame_samples.min(out.len());
        let source = self.playout.play_frame(&mut out[..n], now);
        self.drops.undecodable = self.playout.undecodable();
        source
    }

    fn rtcp_report(&mut self, now: Instant) -> Option<Vec<u8>> {
        let expected = self.recv.expected();
        let expected_interval = expected.saturating_sub(self.recv.expected_prior);
        let received_interval = self.recv.received.saturating_sub(self.recv.received_prior);
        self.recv.expected_prior = expected;
        self.recv.received_prior = self.recv.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction = (lost_interval << 8).checked_div(expected_interval).unwrap_or(0).min(255) as u8;
        let reports = match self.recv.ssrc {
            Some(ssrc) => vec![rtc_rtcp::reception_report::ReceptionReport {
                ssrc,
                fraction_lost: fraction,
                total_lost: (self.recv.lost().clamp(0, 0x7F_FFFF)) as u32,
                last_sequence_number: self.recv.max_seq,
                jitter: (self.playout.jitter_stats().jitter_ms * f64::from(self.clock_rate) / 1000.0) as u32,
                last_sender_report: self.recv.last_sr.map_or(0, |(lsr, _)| lsr),
                delay: self
                    .recv
                    .last_sr
                    .map_or(0, |(_, at)| (now.saturating_duration_since(at).as_secs_f64() * 65536.0) as u32),
            }],
            None => Vec::new(),
        };
        let packet: Box<dyn rtc_rtcp::packet::Packet> = if self.packets_sent > 0 {
            Box::new(rtc_rtcp::sender_report::SenderReport {
                ssrc: self.ssrc,
                ntp_time: ntp(self.wall(now)),
                rtp_time: self.ts,
                packet_count: self.packets_sent as u32,
                octet_count: self.octets_sent as u32,
                reports,
                ..Default::default()
            })
        } else {
            Box::new(rtc_rtcp::receiver_report::ReceiverReport {
                ssrc: self.ssrc,
                reports,
                ..Default::default()
            })
        };
        let raw = rtc_rtcp::packet::marshal(&[packet]).ok()?;
        match (&mut self.srtp_out, self.srtcp_out_enabled) {
            (Some(ctx), true) => ctx.encrypt_rtcp(&raw).ok().map(|b| b.to_vec()),
            _ => Some(raw.to_vec()),
        }
    }

    /// Where RTCP goes: the RTP address when muxed, else the next port.
    pub fn rtcp_addr(&self) -> SocketAddr {
        if self.neg.rtcp_mux {
            self.remote_addr
        } else {
            SocketAddr::new(self.remote_addr.ip(), self.remote_addr.port().wrapping_add(1))
        }
    }

    /// Periodic work at `now`: an RTCP report to send (to [`rtcp_addr`](Self::rtcp_addr)) when one
    /// is due, and the once-a-second quality sample when it is due.
    pub fn poll(&mut self, now: Instant) -> (Option<Vec<u8>>, Option<QualitySample>) {
        let rtcp = if self.next_rtcp.is_none_or(|t| now >= t) {
            self.next_rtcp = Some(now + RTCP_INTERVAL);
            self.rtcp_report(now)
        } else {
            None
        };
        let network = self.network();
        let muted = self.sender.muted();
        let sample =
            self.quality.poll(now, &network, self.sender.level_mut(), self.playout.level_mut(), muted);
        (rtcp, sample)
    }

    /// The network as measured now.
    fn network(&self) -> NetworkMeasures {
        NetworkMeasures {
            rtt_ms: self.rtt_ms,
            jitter_ms: self.playout.jitter_stats().jitter_ms,
            loss_percent: self.loss_percent(),
            peer_loss_percent: self.remote_report.map(|(f, _, _)| f64::from(f) * 100.0 / 256.0),
            packets_received: self.recv.received,
        }
    }

    fn loss_percent(&self) -> f64 {
        let expected = self.recv.expected();
        if expected == 0 {
            0.0
        } else {
            (self.recv.lost().max(0) as f64 * 100.0 / expected as f64).min(100.0)
        }
    }

    /// The statistics now.
    pub fn stats(&self) -> StatsReport {
        let figures = TrackFigures {
            codec: self.codec_name.clone(),
            connection_id: format!("rtp-{:08x}", self.ssrc),
            local_ssrc: self.ssrc,
            packets_sent: self.packets_sent,
            bytes_sent: self.octets_sent,
            peer_report: self.remote_report.map(|(_, total, jitter)| (total, jitter)),
            remote_ssrc: self.recv.ssrc.unwrap_or(0),
            packets_received: self.recv.received,
            bytes_received: self.recv.bytes,
            packets_lost: self.recv.lost(),
            media_lost: self.media_lost,
        };
        let network = self.network();
        meter::stats_report(&figures, &network, self.sender.level(), self.playout.level())
    }
}

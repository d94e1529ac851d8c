//! Media engines and sessions. A session negotiates by SDP offer/answer, so both raw
//! RTP (SDES-SRTP) and WebRTC (ICE, DTLS-SRTP) fit behind the same trait; the SIP
//! core only moves the SDP text.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::VoiceError;
use crate::options::{AudioOptions, IceServer, IceTransportPolicy, PreferredCodec};
use crate::parts::audio::{AudioCapturer, AudioRenderer};
use crate::parts::codec::AudioCodec;
use crate::quality::QualitySample;
use crate::stats::StatsReport;

/// What a media session is made from.
#[non_exhaustive]
pub struct MediaSessionConfig {
    /// Codecs in order of preference.
    pub preferred_codecs: Vec<PreferredCodec>,
    /// The codecs available (built in or from plugins).
    pub codecs: Vec<Arc<dyn AudioCodec>>,
    /// Jitter buffer settings.
    pub audio: AudioOptions,
    /// Whether to mark packets with DSCP EF.
    pub enable_dscp: bool,
    /// STUN/TURN servers (WebRTC).
    pub ice_servers: Vec<IceServer>,
    /// Which candidates may carry media (WebRTC).
    pub ice_transport_policy: IceTransportPolicy,
    /// Where audio to send comes from; `None` sends silence (a leg with no device,
    /// such as a server's, which forwards or synthesises its audio elsewhere).
    pub capturer: Option<Box<dyn AudioCapturer>>,
    /// Where received audio goes; `None` plays it nowhere (the pipeline still runs,
    /// so levels, stats and the media watch stay honest).
    pub renderer: Option<Box<dyn AudioRenderer>>,
    /// The local and remote addresses of the signaling connection, when it has them:
    /// an engine advertises the local one (the interface that reaches the server)
    /// unless it is configured with an address of its own.
    pub signaling_addrs: Option<(SocketAddr, SocketAddr)>,
}

impl MediaSessionConfig {
    /// A configuration with default options, capturing from `capturer` and playing to
    /// `renderer`.
    pub fn new(
        codecs: Vec<Arc<dyn AudioCodec>>,
        capturer: Box<dyn AudioCapturer>,
        renderer: Box<dyn AudioRenderer>,
    ) -> Self {
        let mut config = MediaSessionConfig::without_audio(codecs);
        config.capturer = Some(capturer);
        config.renderer = Some(renderer);
        config
    }

    /// A configuration with default options and no audio device.
    pub fn without_audio(codecs: Vec<Arc<dyn AudioCodec>>) -> Self {
        MediaSessionConfig {
            preferred_codecs: crate::options::default_preferred_codecs(),
            codecs,
            audio: AudioOptions::default(),
            enable_dscp: true,
            ice_servers: Vec::new(),
            ice_transport_policy: IceTransportPolicy::All,
            capturer: None,
            renderer: None,
            signaling_addrs: None,
        }
    }
}

/// Something a session reports on its own.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq)]
pub enum MediaEvent {
    /// DTMF digits arrived (RFC 4733).
    DigitsReceived(String),
    /// One second of measurements for the quality warning detector.
    QualitySample(QualitySample),
    /// Media stopped (53405) or could not start (53407 for DTLS).
    Failed(VoiceError),
    /// The codec in use keeps failing (a misbehaving plugin): the signaling layer
    /// should exclude it ([`MediaSession::exclude_codec`]) and renegotiate.
    CodecFailing(String),
    /// No media arrived for the configured time (53405): the signaling layer reports
    /// reconnecting, re-offers to re-establish the path, and ends the call if media
    /// does not come back within its reconnect window.
    Interrupted(VoiceError),
    /// Media arrives again after [`MediaEvent::Interrupted`].
    Restored,
}

/// One call's media.
#[async_trait]
pub trait MediaSession: Send + Sync {
    /// Makes an SDP offer (53400 on failure).
    async fn create_offer(&self) -> Result<String, VoiceError>;
    /// Applies the peer's SDP answer (53402 if it cannot, 53404 for no common codec).
    async fn apply_answer(&self, sdp: &str) -> Result<(), VoiceError>;
    /// Applies the peer's offer and makes an answer (53402, 53404, 53400).
    async fn create_answer(&self, offer: &str) -> Result<String, VoiceError>;
    /// The codec in use, once negotiated.
    fn negotiated_codec(&self) -> Option<String>;
    /// Sends silence (true) or the microphone (false).
    fn set_muted(&self, muted: bool);
    /// Holds (the next offer says `sendonly`, playback stops) or resumes.
    fn set_on_hold(&self, on_hold: bool);
    /// Sends DTMF as RFC 4733 events; an error means the peer did not negotiate
    /// telephone-event and the caller should fall back to SIP INFO.
    fn send_digits(&self, digits: &str) -> Result<(), VoiceError>;
    /// The session's statistics now.
    fn stats(&self) -> StatsReport;
    /// Stops offering and accepting a codec (one that keeps failing); the next offer
    /// leaves it out. False if the session cannot, or no other codec would remain.
    fn exclude_codec(&self, name: &str) -> bool {
        let _ = name;
        false
    }
    /// The next event; `None` once the session is closed.
    async fn next_event(&self) -> Option<MediaEvent>;
    /// Stops media and releases sockets and devices.
    async fn close(&self);
}

/// A kind of media (raw RTP, WebRTC).
#[async_trait]
pub trait MediaEngine: Send + Sync {
    /// Creates a session for one call.
    async fn create_session(&self, config: MediaSessionConfig) -> Result<Box<dyn MediaSession>, VoiceError>;
}

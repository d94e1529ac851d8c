//! `ConnectOptions` (placing a call) and `AcceptOptions` (answering an invite), built
//! with builders. Both share the media and message settings of [`CallOptions`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::message::CallMessageDelegate;

/// An audio codec an application prefers, most preferred first in a list.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PreferredCodec {
    /// Opus, with an optional cap on its average bitrate in bits per second.
    Opus {
        /// The Opus max average bitrate (6,000 to 510,000 bit/s); `None` leaves the
        /// encoder's default.
        max_average_bitrate: Option<u32>,
    },
    /// G.711 mu-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
    /// Any other registered codec (a plugin's, for example `G722`), by its SDP name.
    Named(String),
}

impl PreferredCodec {
    /// The codec's SDP encoding name: `opus`, `PCMU`, `PCMA` or the given name.
    pub fn name(&self) -> &str {
        match self {
            PreferredCodec::Opus { .. } => "opus",
            PreferredCodec::Pcmu => "PCMU",
            PreferredCodec::Pcma => "PCMA",
            PreferredCodec::Named(n) => n,
        }
    }

    /// The codec for a configuration name, case-insensitively for the built-in ones.
    pub fn from_name(name: &str) -> Self {
        match name.to_ascii_lowercase().as_str() {
            "opus" => PreferredCodec::Opus { max_average_bitrate: None },
            "pcmu" => PreferredCodec::Pcmu,
            "pcma" => PreferredCodec::Pcma,
            _ => PreferredCodec::Named(name.to_owned()),
        }
    }
}

/// The default preference: Opus first, then PCMU.
pub fn default_preferred_codecs() -> Vec<PreferredCodec> {
    vec![PreferredCodec::Opus { max_average_bitrate: None }, PreferredCodec::Pcmu, PreferredCodec::Pcma]
}

/// A STUN or TURN server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:` or `turn:` URLs.
    pub urls: Vec<String>,
    /// TURN user name.
    pub username: Option<String>,
    /// TURN credential.
    pub credential: Option<String>,
}

/// Which ICE candidates may carry media.
#[non_exhaustive]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IceTransportPolicy {
    /// Any candidate.
    #[default]
    All,
    /// Only TURN relays.
    Relay,
}

/// Audio settings of a call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AudioOptions {
    /// The least delay the jitter buffer keeps, in milliseconds.
    pub jitter_buffer_min_delay_ms: u32,
    /// The most packets the jitter buffer holds.
    pub jitter_buffer_max_packets: u32,
}

impl Default for AudioOptions {
    fn default() -> Self {
        AudioOptions { jitter_buffer_min_delay_ms: 0, jitter_buffer_max_packets: 50 }
    }
}

impl AudioOptions {
    /// Audio options with these jitter buffer bounds.
    pub fn new(jitter_buffer_min_delay_ms: u32, jitter_buffer_max_packets: u32) -> Self {
        AudioOptions { jitter_buffer_min_delay_ms, jitter_buffer_max_packets }
    }
}

/// The settings placing and answering a call share.
#[derive(Clone)]
#[non_exhaustive]
pub struct CallOptions {
    /// The call's UUID (a new one unless set), used to match it with OS call UIs.
    pub uuid: Uuid,
    /// Audio codecs in order of preference (default: Opus, then PCMU).
    pub preferred_audio_codecs: Vec<PreferredCodec>,
    /// STUN/TURN servers (WebRTC media).
    pub ice_servers: Vec<IceServer>,
    /// Which candidates may carry media (WebRTC media).
    pub ice_transport_policy: IceTransportPolicy,
    /// Whether media packets are marked with DSCP EF (default on).
    pub enable_dscp: bool,
    /// Hears about this call's messages.
    pub call_message_delegate: Option<Arc<dyn CallMessageDelegate>>,
    /// Jitter buffer settings.
    pub audio: AudioOptions,
}

impl Default for CallOptions {
    fn default() -> Self {
        CallOptions {
            uuid: Uuid::new_v4(),
            preferred_audio_codecs: default_preferred_codecs(),
            ice_servers: Vec::new(),
            ice_transport_policy: IceTransportPolicy::All,
            enable_dscp: true,
            call_message_delegate: None,
            audio: AudioOptions::default(),
        }
    }
}

impl fmt::Debug for CallOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallOptions")
            .field("uuid", &self.uuid)
            .field("preferred_audio_codecs", &self.preferred_audio_codecs)
            .field("ice_servers", &self.ice_servers)
            .field("ice_transport_policy", &self.ice_transport_policy)
            .field("enable_dscp", &self.enable_dscp)
            .field("call_message_delegate", &self.call_message_delegate.is_some())
            .field("audio", &self.audio)
            .finish()
    }
}

/// The setters both builders share, written once.
macro_rules! call_option_setters {
    () => {
        /// Sets the call's UUID.
        pub fn uuid(mut self, uuid: Uuid) -> Self {
            self.common.uuid = uuid;
            self
        }
        /// Sets the codec preference, most preferred first.
        pub fn preferred_audio_codecs(mut self, codecs: Vec<PreferredCodec>) -> Self {
            self.common.preferred_audio_codecs = codecs;
            self
        }
        /// Sets the STUN/TURN servers.
        pub fn ice_servers(mut self, servers: Vec<IceServer>) -> Self {
            self.common.ice_servers = servers;
            self
        }
        /// Sets which candidates may carry media.
        pub fn ice_transport_policy(mut self, policy: IceTransportPolicy) -> Self {
            self.common.ice_transport_policy = policy;
            self
        }
        /// Turns DSCP marking on or off.
        pub fn enable_dscp(mut self, on: bool) -> Self {
            self.common.enable_dscp = on;
            self
        }
        /// Sets the delegate for this call's messages.
        pub fn call_message_delegate(mut self, delegate: Arc<dyn CallMessageDelegate>) -> Self {
            self.common.call_message_delegate = Some(delegate);
            self
        }
        /// Sets the jitter buffer settings.
        pub fn audio_options(mut self, audio: AudioOptions) -> Self {
            self.common.audio = audio;
            self
        }
    };
}

/// How to place a call.
///
/// ```
/// use dialtone_core::{ConnectOptions, PreferredCodec};
/// let options = ConnectOptions::builder("eyJ...token")
///     .param("to", "client:bob")
///     .param("caller_first_name", "alice")
///     .preferred_audio_codecs(vec![PreferredCodec::Opus { max_average_bitrate: Some(24_000) }])
///     .build();
/// assert_eq!(options.params["to"], "client:bob");
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// The access token that authorizes the call.
    pub access_token: String,
    /// Parameters for the application (TwiML routing); `to` names the callee.
    pub params: BTreeMap<String, String>,
    /// The shared settings.
    pub common: CallOptions,
}

impl ConnectOptions {
    /// Starts a builder with the access token.
    pub fn builder(access_token: impl Into<String>) -> ConnectOptionsBuilder {
        ConnectOptionsBuilder {
            access_token: access_token.into(),
            params: BTreeMap::new(),
            common: CallOptions::default(),
        }
    }

    /// The callee: the `to` parameter, or an empty string.
    pub fn to(&self) -> &str {
        self.params.get("to").map(String::as_str).unwrap_or("")
    }
}

/// Builds [`ConnectOptions`].
#[derive(Clone, Debug)]
pub struct ConnectOptionsBuilder {
    access_token: String,
    params: BTreeMap<String, String>,
    common: CallOptions,
}

impl ConnectOptionsBuilder {
    /// Adds one parameter.
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.insert(name.into(), value.into());
        self
    }
    /// Replaces all parameters.
    pub fn params(mut self, params: BTreeMap<String, String>) -> Self {
        self.params = params;
        self
    }
    call_option_setters!();
    /// The finished options.
    pub fn build(self) -> ConnectOptions {
        ConnectOptions { access_token: self.access_token, params: self.params, common: self.common }
    }
}

/// How to accept an invite.
///
/// ```
/// use dialtone_core::{AcceptOptions, AudioOptions};
/// let options = AcceptOptions::builder().audio_options(AudioOptions::new(40, 30)).build();
/// assert_eq!(options.common.audio.jitter_buffer_min_delay_ms, 40);
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct AcceptOptions {
    /// The shared settings.
    pub common: CallOptions,
}

impl AcceptOptions {
    /// Starts a builder.
    pub fn builder() -> AcceptOptionsBuilder {
        AcceptOptionsBuilder { common: CallOptions::default() }
    }
}

/// Builds [`AcceptOptions`].
#[derive(Clone, Debug)]
pub struct AcceptOptionsBuilder {
    common: CallOptions,
}

impl AcceptOptionsBuilder {
    call_option_setters!();
    /// The finished options.
    pub fn build(self) -> AcceptOptions {
        AcceptOptions { common: self.common }
    }
}

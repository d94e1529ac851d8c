//! Configuration, loaded with figment from four layers. Later layers win:
//!
//! 1. the defaults of this module (what `Config::default()` gives, and what
//!    `dialtone.example.toml` at the repository root writes out with comments);
//! 2. a TOML file: the one given to [`ConfigLoader::file`], else the file named by
//!    `DIALTONE_CONFIG`, else `./dialtone.toml` if it exists;
//! 3. environment variables `DIALTONE_<SECTION>__<KEY>` (two underscores between the
//!    section and the key), for example `DIALTONE_MEDIA__JITTER_BUFFER_MIN_DELAY_MS=40`
//!    or `DIALTONE_CODECS__PREFERRED='["PCMU","opus"]'`; variables without `__`
//!    (`DIALTONE_HOME`, `DIALTONE_CONFIG`) are not configuration keys;
//! 4. values set in code with [`ConfigLoader::set`], for example
//!    `.set("audio.backend", "file")`.
//!
//! Unknown keys are refused (a typo is an error, not a silent default), and every
//! error names its key, where the value came from and what was expected.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::options::{IceServer, IceTransportPolicy};

/// A configuration error: the key, where its value came from, and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration key `{key}`{}: {message}", source_text(.source_name))]
#[non_exhaustive]
pub struct ConfigError {
    /// The dotted key, for example `media.jitter_buffer_max_packets` (empty when the
    /// problem is not one key's, such as an unreadable file).
    pub key: String,
    /// Where the value came from (a file, an environment variable, code), when known.
    pub source_name: Option<String>,
    /// What was wrong and what was expected.
    pub message: String,
}

fn source_text(s: &Option<String>) -> String {
    s.as_ref().map(|s| format!(" (from {s})")).unwrap_or_default()
}

impl ConfigError {
    fn invalid(key: &str, message: impl Into<String>) -> Self {
        ConfigError { key: key.to_owned(), source_name: None, message: message.into() }
    }

    fn from_figment(e: figment::Error) -> Self {
        let key = e.path.join(".");
        let source_name = e.metadata.as_ref().map(|m| match &m.source {
            Some(figment::Source::File(p)) => p.display().to_string(),
            _ if m.name.contains("environment") => {
                format!("environment variable DIALTONE_{}", e.path.join("__").to_ascii_uppercase())
            }
            _ => m.name.to_string(),
        });
        ConfigError { key, source_name, message: e.kind.to_string() }
    }
}

impl From<ConfigError> for crate::VoiceError {
    fn from(e: ConfigError) -> Self {
        crate::VoiceError::new(crate::ErrorCode::UnknownError, e.to_string())
    }
}

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// How a client reaches its server.
    pub client: ClientConfig,
    /// The media engine.
    pub media: MediaConfig,
    /// Codec choice and settings.
    pub codecs: CodecsConfig,
    /// The audio device.
    pub audio: AudioConfig,
    /// Plugins to load: `[[plugins]] path = "…"` or `[[plugins]] dir = "…"`.
    pub plugins: Vec<PluginConfig>,
    /// The embedded server.
    pub server: ServerConfig,
    /// Insights publishing.
    pub insights: InsightsConfig,
}

/// `[client]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The signaling server: `ws://`, `wss://`, `sip:` or `sips:` URL.
    pub server: String,
    /// The transport's registry name; by default the URL's scheme chooses.
    pub transport: Option<String>,
    /// A PEM file of extra CA certificates (a development server's CA file).
    pub tls_ca_file: Option<PathBuf>,
    /// The SHA-256 (hex) of the one server certificate to accept.
    pub tls_pinned_cert_sha256: Option<String>,
    /// Seconds a registration lasts; it is refreshed before it expires.
    pub register_expires_secs: u32,
    /// Seconds to keep trying to reconnect during a call before giving up with 53001.
    pub reconnect_timeout_secs: u32,
    /// The largest SIP message accepted, in bytes.
    pub max_message_bytes: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            server: "ws://127.0.0.1:5066".to_owned(),
            transport: None,
            tls_ca_file: None,
            tls_pinned_cert_sha256: None,
            register_expires_secs: 600,
            reconnect_timeout_secs: 30,
            max_message_bytes: 64 * 1024,
        }
    }
}

/// How SRTP is used by the RTP engine.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum SrtpPolicy {
    /// Offer `RTP/SAVP` only; refuse plain RTP.
    #[default]
    Required,
    /// Offer SRTP, accept plain RTP from peers that cannot.
    Optional,
    /// Plain RTP only.
    Off,
}

/// `[media]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct MediaConfig {
    /// The media engine's registry name (`rtp`, `webrtc`).
    pub engine: String,
    /// SRTP use by the RTP engine.
    pub srtp: SrtpPolicy,
    /// The lowest and highest UDP port for RTP; empty lets the OS choose.
    pub rtp_ports: Vec<u16>,
    /// The least delay the jitter buffer keeps, in milliseconds.
    pub jitter_buffer_min_delay_ms: u32,
    /// The most packets the jitter buffer holds.
    pub jitter_buffer_max_packets: u32,
    /// Whether media packets are marked DSCP EF.
    pub enable_dscp: bool,
    /// STUN/TURN servers (WebRTC).
    pub ice_servers: Vec<IceServer>,
    /// `all` or `relay` (WebRTC).
    pub ice_transport_policy: IceTransportPolicy,
    /// The address media sockets bind; unset binds all interfaces (of the advertised
    /// address's family).
    pub bind_address: Option<String>,
    /// The address (or host name) put in SDP `c=`/`o=`; unset is the local address of
    /// the signaling connection, i.e. the interface that reaches the server.
    pub advertised_address: Option<String>,
    /// Seconds without any media packet before the call reports media lost (53405),
    /// re-INVITEs, and waits out `client.reconnect_timeout_secs`; 0 turns it off.
    pub media_timeout_secs: u32,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            engine: "rtp".to_owned(),
            srtp: SrtpPolicy::Required,
            rtp_ports: Vec::new(),
            jitter_buffer_min_delay_ms: 0,
            jitter_buffer_max_packets: 50,
            enable_dscp: true,
            ice_servers: Vec::new(),
            ice_transport_policy: IceTransportPolicy::All,
            bind_address: None,
            advertised_address: None,
            media_timeout_secs: 5,
        }
    }
}

/// `[codecs]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct CodecsConfig {
    /// Codec names in order of preference (registry names, case-insensitive).
    pub preferred: Vec<String>,
    /// Opus max average bitrate in bit/s (6000-510000); unset leaves libopus's default.
    pub opus_max_average_bitrate: Option<u32>,
    /// Opus encoder complexity, 0-10.
    pub opus_complexity: u8,
    /// Opus in-band FEC, driven by the measured loss.
    pub opus_fec: bool,
    /// Opus discontinuous transmission.
    pub opus_dtx: bool,
    /// Redundant audio around Opus (RFC 2198 `red`, as browsers offer it): each packet
    /// also carries the frame before it (the two before it while the peer reports 3 %
    /// loss or more), so a lost packet's frame arrives with the next one. It is offered
    /// and accepted only with peers that offer or accept it; it doubles (or triples)
    /// the audio bitrate while it is used.
    pub opus_red: bool,
}

impl Default for CodecsConfig {
    fn default() -> Self {
        CodecsConfig {
            preferred: vec!["opus".to_owned(), "PCMU".to_owned(), "PCMA".to_owned()],
            opus_max_average_bitrate: None,
            opus_complexity: 9,
            opus_fec: true,
            opus_dtx: false,
            opus_red: true,
        }
    }
}

/// `[audio]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct AudioConfig {
    /// The audio backend's registry name (`cpal`, `file`, `synthetic`).
    pub backend: String,
    /// The capture device's name; unset is the default device.
    pub input_device: Option<String>,
    /// The playback device's name; unset is the default device.
    pub output_device: Option<String>,
    /// The device sample rate in Hz, 8000-48000.
    pub sample_rate: u32,
    /// 1 or 2.
    pub channels: u8,
    /// 10 or 20.
    pub frame_ms: u32,
}

impl Default for AudioConfig {
    fn default() -> Self {
        AudioConfig {
            backend: "cpal".to_owned(),
            input_device: None,
            output_device: None,
            sample_rate: 48_000,
            channels: 1,
            frame_ms: 20,
        }
    }
}

/// One `[[plugins]]` entry: a library file or a directory of them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct PluginConfig {
    /// A plugin library (`.so`, `.dylib`, `.dll`).
    pub path: Option<PathBuf>,
    /// A directory whose plugin libraries are all loaded.
    pub dir: Option<PathBuf>,
}

impl PluginConfig {
    /// An entry for one library file.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        PluginConfig { path: Some(path.into()), dir: None }
    }

    /// An entry for every library in a directory.
    pub fn directory(dir: impl Into<PathBuf>) -> Self {
        PluginConfig { path: None, dir: Some(dir.into()) }
    }
}

/// `[server]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The address every listener binds (127.0.0.1 unless exposing more is chosen).
    pub bind: IpAddr,
    /// The host the server names itself by in Via, Contact and its SIP domain (a
    /// public address or name, when `bind` is 0.0.0.0 or behind NAT); unset is `bind`.
    pub public_host: Option<String>,
    /// SIP over UDP (0 picks a free port).
    pub sip_udp_port: u16,
    /// SIP over TCP.
    pub sip_tcp_port: u16,
    /// SIP over TLS.
    pub sip_tls_port: u16,
    /// SIP over WebSocket.
    pub ws_port: u16,
    /// SIP over secure WebSocket.
    pub wss_port: u16,
    /// The HTTP (REST) API.
    pub http_port: u16,
    /// Where the store, keys and the development CA live; unset is `DIALTONE_HOME`,
    /// else the platform's data directory.
    pub data_dir: Option<PathBuf>,
    /// The store's URL; unset is a SQLite file in the data directory.
    pub database_url: Option<String>,
    /// The TLS certificate chain (PEM); unset generates a development certificate.
    pub tls_cert_file: Option<PathBuf>,
    /// The TLS private key (PEM).
    pub tls_key_file: Option<PathBuf>,
    /// The account SID; unset creates a development account on first start.
    pub account_sid: Option<String>,
    /// The account's auth token for the REST API.
    pub auth_token: Option<String>,
    /// The API key SID that signs access tokens.
    pub api_key_sid: Option<String>,
    /// The API key secret.
    pub api_key_secret: Option<String>,
    /// Source address ranges trusted to send SIP without a token (trunks).
    pub trusted_networks: Vec<String>,
    /// Seconds a callee rings before the call fails with 31408 (SIP 408 Request Timeout).
    pub ring_timeout_secs: u32,
    /// How long a batch of call-record changes gathers before one transaction commits
    /// it (milliseconds). The store is written off the signaling path; a crash loses at
    /// most the changes of one window (see the server's `records` module).
    pub records_batch_ms: u32,
    /// Call-record changes that may wait for the disk; at this backlog new calls are
    /// refused with `503 Service Unavailable` and `Retry-After` until it drains.
    pub records_backlog: usize,
    /// Overload: a new INVITE that waited longer than this (milliseconds) between
    /// arriving and the server reading it is refused with `503` and `Retry-After`.
    /// Retransmissions, REGISTER and requests inside calls are still served.
    pub overload_delay_ms: u32,
    /// The `Retry-After` (seconds) of an overload `503`.
    pub retry_after_secs: u32,
    /// A UDP peer that sent nothing for this long (seconds) and holds no call,
    /// registration or running transaction is forgotten, with its memory.
    pub udp_idle_secs: u32,
    /// How long (seconds) a voice URL, a `<Dial action>` or a message callback has to
    /// answer; a voice URL or action that does not fails its call with 31502.
    pub webhook_timeout_secs: u32,
    /// A PEM file of CA certificates trusted for webhooks and push, beside the
    /// system's roots (an application with a private certificate).
    pub webhook_ca_file: Option<PathBuf>,
    /// APNs, for bindings with an `apn` credential (production).
    pub apns_url: String,
    /// APNs for credentials marked sandbox (development builds of an app).
    pub apns_sandbox_url: String,
    /// FCM HTTP v1, for bindings with an `fcm` credential.
    pub fcm_url: String,
    /// TwiML applications. An access token's `grants.voice.outgoing.application_sid`
    /// picks one; with exactly one configured, it is the default; with none, the
    /// development routing dials `client:NAME`.
    pub applications: Vec<ApplicationConfig>,
    /// SIP trunks: peers that send calls in without a token (by source range or
    /// digest credentials) and carry `<Number>` and `<Sip>` dials out.
    pub trunks: Vec<TrunkConfig>,
}

/// One SIP trunk.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct TrunkConfig {
    /// A name for logs and call records.
    pub name: String,
    /// Where calls out go: `sip:host[:port][;transport=udp|tcp|tls]` (or `sips:`).
    /// `<Number>` dials `NUMBER@` this host; a `<Sip>` URI whose host and port are
    /// this trunk's uses its credentials. Unset: the trunk only calls in.
    pub uri: Option<String>,
    /// Source address ranges whose requests are this trunk's (no token, no digest).
    pub networks: Vec<String>,
    /// Digest credentials (username) a peer presents to call in as this trunk, from
    /// any address. The server challenges with MD5 (what SIP phones know).
    pub username: Option<String>,
    /// The password of `username`.
    pub password: Option<String>,
    /// Digest credentials for calls out, when the trunk challenges them.
    pub outbound_username: Option<String>,
    /// The password of `outbound_username`.
    pub outbound_password: Option<String>,
    /// The CA file that verifies a `sips:`/`transport=tls` trunk (default: the
    /// platform roots).
    pub tls_ca_file: Option<PathBuf>,
}

impl TrunkConfig {
    /// A trunk named `name` whose calls out go to `uri`.
    pub fn outbound(name: impl Into<String>, uri: impl Into<String>) -> Self {
        TrunkConfig { name: name.into(), uri: Some(uri.into()), ..Default::default() }
    }

    /// A trunk named `name` that calls in with digest credentials.
    pub fn inbound_digest(
        name: impl Into<String>,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        TrunkConfig {
            name: name.into(),
            username: Some(username.into()),
            password: Some(password.into()),
            ..Default::default()
        }
    }
}

/// One TwiML application: a voice URL, or a TwiML document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ApplicationConfig {
    /// `AP` + 32 hex digits (any string is accepted).
    pub sid: String,
    /// Asked (`http://` or `https://`) with `CallSid`, `AccountSid`, `From`, `To`,
    /// `Direction` and the caller's custom parameters, signed with
    /// `X-Twilio-Signature`; answers TwiML.
    #[serde(default)]
    pub voice_url: Option<String>,
    /// How the voice URL is asked: `POST` (the default; a form body) or `GET` (the
    /// parameters in the query), as Twilio's `VoiceMethod`.
    #[serde(default)]
    pub voice_method: Option<String>,
    /// A TwiML document run for every call.
    #[serde(default)]
    pub twiml: Option<String>,
}

impl ApplicationConfig {
    /// An application answering with a fixed TwiML document.
    pub fn with_twiml(sid: impl Into<String>, twiml: impl Into<String>) -> Self {
        ApplicationConfig { sid: sid.into(), voice_url: None, voice_method: None, twiml: Some(twiml.into()) }
    }

    /// An application whose voice URL answers with TwiML.
    pub fn with_voice_url(sid: impl Into<String>, url: impl Into<String>) -> Self {
        ApplicationConfig { sid: sid.into(), voice_url: Some(url.into()), voice_method: None, twiml: None }
    }

    /// The same, asking its voice URL with `method` (`GET` or `POST`).
    pub fn with_voice_method(mut self, method: impl Into<String>) -> Self {
        self.voice_method = Some(method.into());
        self
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: IpAddr::from([127, 0, 0, 1]),
            public_host: None,
            sip_udp_port: 5060,
            sip_tcp_port: 5060,
            sip_tls_port: 5061,
            ws_port: 5066,
            wss_port: 7443,
            http_port: 8080,
            data_dir: None,
            database_url: None,
            tls_cert_file: None,
            tls_key_file: None,
            account_sid: None,
            auth_token: None,
            api_key_sid: None,
            api_key_secret: None,
            trusted_networks: vec!["127.0.0.0/8".to_owned()],
            ring_timeout_secs: 60,
            records_batch_ms: 10,
            records_backlog: 20_000,
            overload_delay_ms: 100,
            retry_after_secs: 2,
            udp_idle_secs: 120,
            webhook_timeout_secs: 10,
            webhook_ca_file: None,
            apns_url: "https://api.push.apple.com".to_owned(),
            apns_sandbox_url: "https://api.sandbox.push.apple.com".to_owned(),
            fcm_url: "https://fcm.googleapis.com".to_owned(),
            applications: Vec::new(),
            trunks: Vec::new(),
        }
    }
}

/// `[insights]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct InsightsConfig {
    /// Whether insights events are published.
    pub enabled: bool,
    /// The sink's registry name (`log` is built in).
    pub sink: String,
    /// Where an HTTP sink posts events.
    pub url: Option<String>,
}

impl Default for InsightsConfig {
    fn default() -> Self {
        InsightsConfig { enabled: true, sink: "log".to_owned(), url: None }
    }
}

impl Config {
    /// Loads with the default layers: file, environment, no values in code.
    pub fn load() -> Result<Config, ConfigError> {
        ConfigLoader::new().load()
    }

    /// Checks the values serde cannot: ranges, choices and combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |k: &str, m: String| Err(ConfigError::invalid(k, m));
        let s = &self.client.server;
        let scheme_ok = ["ws://", "wss://", "sip:", "sips:"].iter().any(|p| s.starts_with(p));
        if !scheme_ok || s.len() < 6 {
            return err("client.server", format!("{s:?} is not a ws://, wss://, sip: or sips: URL"));
        }
        if self.media.engine.is_empty() {
            return err("media.engine", "expected a media engine name".into());
        }
        match self.media.rtp_ports[..] {
            [] => {}
            [lo, hi] if lo > 0 && lo <= hi => {}
            _ => {
                return err(
                    "media.rtp_ports",
                    format!(
                        "{:?}; expected [lowest, highest] with 0 < lowest <= highest",
                        self.media.rtp_ports
                    ),
                )
            }
        }
        if let Some(b) = &self.media.bind_address {
            if b.parse::<IpAddr>().is_err() {
                return err("media.bind_address", format!("{b:?}; expected an IP address"));
            }
        }
        if let Some(a) = &self.media.advertised_address {
            let host_ok =
                !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
            if a.parse::<IpAddr>().is_err() && !host_ok {
                return err(
                    "media.advertised_address",
                    format!("{a:?}; expected an IP address or host name"),
                );
            }
        }
        if self.media.jitter_buffer_max_packets == 0 {
            return err("media.jitter_buffer_max_packets", "0; expected at least 1".into());
        }
        if self.codecs.preferred.is_empty() {
            return err("codecs.preferred", "an empty list; expected at least one codec name".into());
        }
        if let Some(b) = self.codecs.opus_max_average_bitrate {
            if !(6_000..=510_000).contains(&b) {
                return err("codecs.opus_max_average_bitrate", format!("{b}; expected 6000 to 510000 bit/s"));
            }
        }
        if self.codecs.opus_complexity > 10 {
            return err(
                "codecs.opus_complexity",
                format!("{}; expected 0 to 10", self.codecs.opus_complexity),
            );
        }
        if let Err(e) =
            crate::parts::AudioFormat::new(self.audio.sample_rate, self.audio.channels, self.audio.frame_ms)
        {
            let key = if !(8_000..=48_000).contains(&self.audio.sample_rate) {
                "audio.sample_rate"
            } else if !(1..=2).contains(&self.audio.channels) {
                "audio.channels"
            } else {
                "audio.frame_ms"
            };
            return err(key, e.message().to_owned());
        }
        for (i, p) in self.plugins.iter().enumerate() {
            if p.path.is_some() == p.dir.is_some() {
                return err(&format!("plugins[{i}]"), "expected exactly one of path or dir".into());
            }
        }
        let range_ok = |net: &str| {
            net.split_once('/')
                .and_then(|(ip, len)| Some((ip.parse::<IpAddr>().ok()?, len.parse::<u8>().ok()?)))
                .is_some_and(|(ip, len)| len <= if ip.is_ipv4() { 32 } else { 128 })
        };
        for (i, net) in self.server.trusted_networks.iter().enumerate() {
            if !range_ok(net) {
                return err(
                    &format!("server.trusted_networks[{i}]"),
                    format!("{net:?}; expected an address range like 127.0.0.0/8"),
                );
            }
        }
        if let Some(h) = &self.server.public_host {
            let ok = !h.is_empty()
                && h.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
            if !ok {
                return err("server.public_host", format!("{h:?}; expected a host name or address"));
            }
        }
        if self.server.records_backlog == 0 {
            return err("server.records_backlog", "0; at least one change must be able to wait".into());
        }
        if self.server.records_batch_ms > 10_000 {
            let ms = self.server.records_batch_ms;
            return err("server.records_batch_ms", format!("{ms}; at most 10000 (a crash loses one window)"));
        }
        if self.server.overload_delay_ms == 0 {
            return err("server.overload_delay_ms", "0 would refuse every call; at least 1".into());
        }
        for (key, u) in [
            ("server.apns_url", &self.server.apns_url),
            ("server.apns_sandbox_url", &self.server.apns_sandbox_url),
            ("server.fcm_url", &self.server.fcm_url),
        ] {
            if !(u.starts_with("https://") || u.starts_with("http://")) {
                return err(key, format!("{u:?}; expected an https:// URL"));
            }
        }
        if !(1..=600).contains(&self.server.webhook_timeout_secs) {
            let t = self.server.webhook_timeout_secs;
            return err("server.webhook_timeout_secs", format!("{t}; expected 1 to 600"));
        }
        for (i, a) in self.server.applications.iter().enumerate() {
            let key = |k: &str| format!("server.applications[{i}].{k}");
            if let Some(m) = &a.voice_method {
                if !m.eq_ignore_ascii_case("GET") && !m.eq_ignore_ascii_case("POST") {
                    return err(&key("voice_method"), format!("{m:?}; expected GET or POST"));
                }
            }
            if let Some(u) = &a.voice_url {
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    return err(&key("voice_url"), format!("{u:?}; expected an http:// or https:// URL"));
                }
            }
        }
        for (i, t) in self.server.trunks.iter().enumerate() {
            let key = |k: &str| format!("server.trunks[{i}].{k}");
            if let Some(net) = t.networks.iter().find(|n| !range_ok(n)) {
                return err(&key("networks"), format!("{net:?}; expected an address range like 10.0.0.0/8"));
            }
            if t.username.is_some() != t.password.is_some() {
                return err(&key("password"), "username and password go together".into());
            }
            if t.outbound_username.is_some() != t.outbound_password.is_some() {
                return err(
                    &key("outbound_password"),
                    "outbound_username and outbound_password go together".into(),
                );
            }
            if let Some(u) = &t.uri {
                if !(u.starts_with("sip:") || u.starts_with("sips:")) {
                    return err(
                        &key("uri"),
                        format!("{u:?}; expected sip:host[:port][;transport=udp|tcp|tls]"),
                    );
                }
            }
            if t.uri.is_none() && t.networks.is_empty() && t.username.is_none() {
                return err(
                    &format!("server.trunks[{i}]"),
                    "a trunk needs a uri, networks or a username".into(),
                );
            }
        }
        if self.server.tls_cert_file.is_some() != self.server.tls_key_file.is_some() {
            return err("server.tls_key_file", "tls_cert_file and tls_key_file go together".into());
        }
        if self.insights.sink.is_empty() {
            return err("insights.sink", "expected an insights sink name".into());
        }
        Ok(())
    }
}

/// Loads a [`Config`] from its layers (see the module docs for the order).
///
/// ```
/// use dialtone_core::ConfigLoader;
/// let config = ConfigLoader::new()
///     .no_file()
///     .no_env()
///     .set("media.jitter_buffer_min_delay_ms", 40)
///     .set("codecs.preferred", ["PCMU"])
///     .load()
///     .unwrap();
/// assert_eq!(config.media.jitter_buffer_min_delay_ms, 40);
/// assert_eq!(config.codecs.preferred, ["PCMU"]);
///
/// let err = ConfigLoader::new().no_file().no_env().set("audio.channels", 3).load().unwrap_err();
/// assert_eq!(err.key, "audio.channels");
/// ```
#[derive(Debug, Clone)]
pub struct ConfigLoader {
    file: FileChoice,
    env: bool,
    overrides: Vec<(String, figment::value::Value)>,
}

#[derive(Debug, Clone)]
enum FileChoice {
    Default,
    Given(PathBuf),
    None,
}

impl Default for ConfigLoader {
    fn default() -> Self {
        Self::new()
    }
}

impl ConfigLoader {
    /// The default layers: `DIALTONE_CONFIG` or `./dialtone.toml`, and the environment.
    pub fn new() -> Self {
        ConfigLoader { file: FileChoice::Default, env: true, overrides: Vec::new() }
    }

    /// Reads this file (it must exist) instead of the default one.
    pub fn file(mut self, path: impl AsRef<Path>) -> Self {
        self.file = FileChoice::Given(path.as_ref().to_owned());
        self
    }

    /// Reads no file.
    pub fn no_file(mut self) -> Self {
        self.file = FileChoice::None;
        self
    }

    /// Ignores `DIALTONE_*` variables.
    pub fn no_env(mut self) -> Self {
        self.env = false;
        self
    }

    /// Sets a value in code, the strongest layer. `key` is dotted (`audio.backend`).
    /// A value that cannot be represented is reported by [`load`](Self::load).
    pub fn set(mut self, key: &str, value: impl Serialize) -> Self {
        let value = figment::value::Value::serialize(value)
            .unwrap_or_else(|e| figment::value::Value::from(format!("<unserializable: {e}>")));
        self.overrides.push((key.to_owned(), value));
        self
    }

    /// The figment the layers make, for callers that extract their own sections.
    pub fn figment(&self) -> Result<Figment, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        let file = match &self.file {
            FileChoice::Given(p) => {
                if !p.is_file() {
                    return Err(ConfigError {
                        key: String::new(),
                        source_name: Some(p.display().to_string()),
                        message: "the configuration file does not exist".into(),
                    });
                }
                Some(p.clone())
            }
            FileChoice::Default => match std::env::var_os("DIALTONE_CONFIG") {
                Some(p) => {
                    let p = PathBuf::from(p);
                    if !p.is_file() {
                        return Err(ConfigError {
                            key: String::new(),
                            source_name: Some(format!("DIALTONE_CONFIG={}", p.display())),
                            message: "the configuration file does not exist".into(),
                        });
                    }
                    Some(p)
                }
                None => Some(PathBuf::from("dialtone.toml")).filter(|p| p.is_file()),
            },
            FileChoice::None => None,
        };
        if let Some(path) = file {
            fig = fig.merge(Toml::file_exact(path));
        }
        if self.env {
            fig = fig.merge(Env::prefixed("DIALTONE_").filter(|k| k.as_str().contains("__")).split("__"));
        }
        for (key, value) in &self.overrides {
            fig = fig.merge(Serialized::default(key, value.clone()));
        }
        Ok(fig)
    }

    /// Loads and validates.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let config: Config = self.figment()?.extract().map_err(ConfigError::from_figment)?;
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
        let c = ConfigLoader::new().no_file().no_env().load().unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn precedence_is_file_then_env_then_code() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "dialtone.toml",
                "[media]\njitter_buffer_min_delay_ms = 10\njitter_buffer_max_packets = 20\nengine = \"webrtc\"\n",
            )?;
            jail.set_env("DIALTONE_MEDIA__JITTER_BUFFER_MIN_DELAY_MS", "30");
            jail.set_env("DIALTONE_MEDIA__JITTER_BUFFER_MAX_PACKETS", "40");
            jail.set_env("DIALTONE_HOME", "/somewhere");
            let c = ConfigLoader::new().set("media.jitter_buffer_max_packets", 60).load().expect("loads");
            assert_eq!(c.media.engine, "webrtc", "file over default");
            assert_eq!(c.media.jitter_buffer_min_delay_ms, 30, "env over file");
            assert_eq!(c.media.jitter_buffer_max_packets, 60, "code over env");
            Ok(())
        });
    }

    #[test]
    fn env_lists_and_dialtone_config() {
        Jail::expect_with(|jail| {
            jail.create_file("other.toml", "[audio]\nbackend = \"file\"\n")?;
            jail.set_env("DIALTONE_CONFIG", "other.toml");
            jail.set_env("DIALTONE_CODECS__PREFERRED", "[\"PCMU\", \"opus\"]");
            let c = ConfigLoader::new().load().expect("loads");
            assert_eq!(c.audio.backend, "file");
            assert_eq!(c.codecs.preferred, ["PCMU", "opus"]);
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_their_key_and_source() {
        Jail::expect_with(|jail| {
            jail.create_file("dialtone.toml", "[media]\njitter_buffer_max_packets = \"lots\"\n")?;
            let e = ConfigLoader::new().no_env().load().unwrap_err();
            assert_eq!(e.key, "media.jitter_buffer_max_packets");
            assert!(e.source_name.as_deref().unwrap_or("").ends_with("dialtone.toml"), "{e}");
            assert!(e.message.contains("u32"), "{e}");

            jail.create_file("dialtone.toml", "[media]\njiter = 3\n")?;
            let e = ConfigLoader::new().no_env().load().unwrap_err();
            assert!(e.message.contains("unknown field") && e.message.contains("jiter"), "{e}");

            jail.create_file("dialtone.toml", "")?;
            jail.set_env("DIALTONE_AUDIO__SAMPLE_RATE", "loud");
            let e = ConfigLoader::new().load().unwrap_err();
            assert_eq!(e.key, "audio.sample_rate");
            assert!(e.to_string().contains("DIALTONE_AUDIO__SAMPLE_RATE"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn validation_names_the_key() {
        let cases: &[(&str, serde_json::Value, &str)] = &[
            ("client.server", "http://x".into(), "client.server"),
            ("audio.sample_rate", 96_000.into(), "audio.sample_rate"),
            ("audio.frame_ms", 30.into(), "audio.frame_ms"),
            ("codecs.preferred", serde_json::json!([]), "codecs.preferred"),
            ("codecs.opus_max_average_bitrate", 1000.into(), "codecs.opus_max_average_bitrate"),
            ("media.rtp_ports", serde_json::json!([20000, 10000]), "media.rtp_ports"),
            ("plugins", serde_json::json!([{}]), "plugins[0]"),
            ("server.trusted_networks", serde_json::json!(["10.0.0.0/99"]), "server.trusted_networks[0]"),
            (
                "server.trunks",
                serde_json::json!([{"name": "t", "networks": ["x"]}]),
                "server.trunks[0].networks",
            ),
            (
                "server.trunks",
                serde_json::json!([{"name": "t", "username": "u"}]),
                "server.trunks[0].password",
            ),
            ("server.trunks", serde_json::json!([{"name": "t", "uri": "http://x"}]), "server.trunks[0].uri"),
            ("server.trunks", serde_json::json!([{"name": "t"}]), "server.trunks[0]"),
            ("server.public_host", "a b".into(), "server.public_host"),
        ];
        for (key, value, want) in cases {
            let e = ConfigLoader::new().no_file().no_env().set(key, value).load().unwrap_err();
            assert_eq!(e.key, *want, "{e}");
        }
    }

    #[test]
    fn a_missing_named_file_is_an_error() {
        let e = ConfigLoader::new().file("/nonexistent/dialtone.toml").load().unwrap_err();
        assert!(e.to_string().contains("/nonexistent/dialtone.toml"), "{e}");
    }
}

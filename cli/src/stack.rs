//! The client stack the commands share: a `Voice` over a SIP agent whose parts all
//! come from the loaded configuration through the registry (the default parts plus
//! the `[[plugins]]`): the transport (`client.transport`, else the server URL's
//! scheme), the media engine (`media.engine` with every `[media]` key), the codecs
//! (`[codecs]`), the audio devices and format (`[audio]`). A WAV file (`--play`,
//! `--record`) stands in for the devices where given.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dialtone_audio_file::{WavCapturer, WavRenderer};
use dialtone_audio_memory::BufferCapturer;
use dialtone_core::parts::{
    AudioBackend, AudioCapturer, AudioFormat, AudioRenderer, MediaSessionConfig, TlsSettings, TransportTarget,
};
use dialtone_core::{
    AcceptOptions, AcceptOptionsBuilder, AudioOptions, Config, ConnectOptions, ConnectOptionsBuilder,
    ErrorCode, InsightsSink, NotificationDelegate, PreferredCodec, Registry, Voice, VoiceError,
};
use dialtone_sip_agent::{AgentConfig, SipAgent};

/// The shared speech recordings next to the repository (`../shared/audio`), or
/// `DIALTONE_SHARED_AUDIO`.
pub(crate) fn shared_speech(rate: u32) -> Option<PathBuf> {
    let dir = std::env::var_os("DIALTONE_SHARED_AUDIO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared/audio"));
    let f = dir.join(format!("speech-{}k.wav", rate / 1000));
    f.exists().then_some(f)
}

/// The default registry with the configuration's plugins loaded; each refused
/// plugin is named once on stderr with its reason, and the rest go on.
pub(crate) fn registry(config: &Config) -> Registry {
    let (registry, refused) = dialtone_defaults::registry_with_plugins(config);
    for e in refused {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("dialtone: {e}; going on without it");
        }
    }
    registry
}

/// What a client is made of.
pub(crate) struct ClientSetup {
    /// The loaded configuration (`client.server` is the server to use).
    pub(crate) config: Config,
    /// The parts to build from.
    pub(crate) registry: Arc<Registry>,
    /// Extra CA certificates for secure servers.
    pub(crate) ca_file: Option<PathBuf>,
    /// Played into every call (looped); `None` uses the audio device.
    pub(crate) play: Option<PathBuf>,
    /// Where received audio is written, one file per call (`-2`, `-3` ... after the
    /// first); `None` uses the audio device.
    pub(crate) record: Option<PathBuf>,
    /// The audio backend for what `play` and `record` do not cover; `None` is
    /// `audio.backend`.
    pub(crate) audio_backend: Option<String>,
    /// Where insights events go (default: the configured sink); `Some(None)` turns
    /// them off.
    pub(crate) insights: Option<Option<Arc<dyn InsightsSink>>>,
}

/// The OS audio devices to use when no file is given.
#[derive(Clone)]
struct Devices {
    backend: Arc<dyn AudioBackend>,
    input: Option<String>,
    output: Option<String>,
}

static SAID_NO_INPUT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static SAID_NO_OUTPUT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn say_once(flag: &std::sync::atomic::AtomicBool, what: &str) {
    if !flag.swap(true, std::sync::atomic::Ordering::SeqCst) {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("dialtone: {what}");
        }
    }
}

/// A renderer that drops what it is given (no `--record`).
struct Discard(AudioFormat);

impl AudioRenderer for Discard {
    fn format(&self) -> AudioFormat {
        self.0
    }
    fn write_frame(&mut self, _: &[i16]) -> Result<(), VoiceError> {
        Ok(())
    }
}

fn numbered(path: &Path, n: usize) -> PathBuf {
    if n == 1 {
        return path.to_owned();
    }
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let ext = path.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    path.with_file_name(format!("{stem}-{n}{ext}"))
}

fn config_error(what: &str, e: impl std::fmt::Display) -> VoiceError {
    VoiceError::new(ErrorCode::MalformedRequest, format!("{what}: {e}"))
}

/// The configured codec preference (`codecs.preferred`, with the Opus bitrate cap).
fn preferred_codecs(config: &Config) -> Vec<PreferredCodec> {
    config
        .codecs
        .preferred
        .iter()
        .map(|n| match PreferredCodec::from_name(n) {
            PreferredCodec::Opus { .. } => {
                PreferredCodec::Opus { max_average_bitrate: config.codecs.opus_max_average_bitrate }
            }
            other => other,
        })
        .collect()
}

macro_rules! configured_options {
    ($builder:expr, $config:expr) => {{
        let m = &$config.media;
        $builder
            .preferred_audio_codecs(preferred_codecs($config))
            .enable_dscp(m.enable_dscp)
            .ice_servers(m.ice_servers.clone())
            .ice_transport_policy(m.ice_transport_policy)
            .audio_options(AudioOptions::new(m.jitter_buffer_min_delay_ms, m.jitter_buffer_max_packets))
    }};
}

/// Options to place a call with, set from `[codecs]` and `[media]`.
pub(crate) fn connect_options(config: &Config, token: String) -> ConnectOptionsBuilder {
    configured_options!(ConnectOptions::builder(token), config)
}

/// Options to accept an invite with, set from `[codecs]` and `[media]`.
pub(crate) fn accept_options(config: &Config) -> AcceptOptionsBuilder {
    configured_options!(AcceptOptions::builder(), config)
}

/// The recordings a client made, one per call.
pub(crate) type Recordings = Arc<Mutex<Vec<PathBuf>>>;

/// The agent's settings from `[client]`.
fn agent_config(config: &Config, ca_file: Option<&PathBuf>) -> AgentConfig {
    let c = &config.client;
    let mut tls = TlsSettings::default();
    if let Some(ca) = ca_file {
        tls = tls.with_ca_file(ca);
    }
    if let Some(pin) = &c.tls_pinned_cert_sha256 {
        tls = tls.with_pinned_cert_sha256(pin.clone());
    }
    let mut agent = AgentConfig::new(TransportTarget::new(c.server.clone()).with_tls(tls));
    agent.register_expires = c.register_expires_secs;
    agent.reconnect_window = Duration::from_secs(u64::from(c.reconnect_timeout_secs));
    agent.max_message_size = c.max_message_bytes;
    agent
}

/// Builds a `Voice` and its agent; the paths of the recordings made so far are in
/// the returned list.
pub(crate) fn build(
    setup: ClientSetup,
    incoming: Option<Arc<dyn NotificationDelegate>>,
) -> Result<(Voice, Arc<SipAgent>, Recordings), VoiceError> {
    let cfg = &setup.config;
    let registry = &setup.registry;
    let transport = registry.configured_transport(cfg).map_err(|e| config_error("client.transport", e))?;
    let engine = registry.configured_media_engine(cfg).map_err(|e| config_error("media.engine", e))?;
    let codec_set = registry
        .configured_codecs(cfg)
        .map_err(|e| VoiceError::new(ErrorCode::NoSupportedCodec, format!("codecs.preferred: {e}")))?;
    let format = AudioFormat::new(cfg.audio.sample_rate, cfg.audio.channels, cfg.audio.frame_ms)?;
    let devices = if setup.play.is_some() && setup.record.is_some() {
        None
    } else {
        let name = setup.audio_backend.clone().unwrap_or_else(|| cfg.audio.backend.clone());
        let backend =
            registry.create::<dyn AudioBackend>(&name, cfg).map_err(|e| config_error("audio.backend", e))?;
        Some(Devices {
            backend,
            input: cfg.audio.input_device.clone(),
            output: cfg.audio.output_device.clone(),
        })
    };
    let recordings: Recordings = Arc::default();
    let made = recordings.clone();
    let (play, record) = (setup.play.clone(), setup.record.clone());
    let frame_ms = format.frame_ms();
    if let Some(p) = &play {
        // Fail now, not at the first call.
        WavCapturer::open(p, true, frame_ms)?;
    }
    let factory = Arc::new(move || -> Result<MediaSessionConfig, VoiceError> {
        let capturer: Box<dyn AudioCapturer> = match (&play, &devices) {
            (Some(p), _) => Box::new(WavCapturer::open(p, true, frame_ms)?),
            (None, Some(d)) => match d.backend.open_capturer(d.input.as_deref(), format) {
                Ok(c) => c,
                Err(e) => {
                    say_once(
                        &SAID_NO_INPUT,
                        &format!("no audio input device: {}; sending silence", e.message()),
                    );
                    Box::new(BufferCapturer::silence(format))
                }
            },
            (None, None) => Box::new(BufferCapturer::silence(format)),
        };
        let renderer: Box<dyn AudioRenderer> = match (&record, &devices) {
            (Some(r), _) => {
                let mut list = made.lock().unwrap_or_else(|p| p.into_inner());
                let path = numbered(r, list.len() + 1);
                list.push(path.clone());
                Box::new(WavRenderer::create(&path, format)?)
            }
            (None, Some(d)) => d.backend.open_renderer(d.output.as_deref(), format).unwrap_or_else(|e| {
                say_once(
                    &SAID_NO_OUTPUT,
                    &format!("no audio output device: {}; received audio is dropped", e.message()),
                );
                Box::new(Discard(format))
            }),
            (None, None) => Box::new(Discard(format)),
        };
        Ok(MediaSessionConfig::new(codec_set.clone(), capturer, renderer))
    });
    let agent = SipAgent::new(agent_config(cfg, setup.ca_file.as_ref()), transport, engine, factory);
    let mut builder = Voice::builder(agent.clone());
    if let Some(d) = incoming {
        builder = builder.incoming_delegate(d);
    }
    match setup.insights {
        Some(Some(sink)) => builder = builder.insights_sink(sink),
        Some(None) => builder = builder.insights_enabled(false),
        None => {
            if !cfg.insights.enabled {
                builder = builder.insights_enabled(false);
            } else {
                let sink =
                    registry.configured_insights_sink(cfg).map_err(|e| config_error("insights.sink", e))?;
                builder = builder.insights_sink(sink);
            }
        }
    }
    Ok((builder.build(), agent, recordings))
}

/// The RMS level of a WAV file's samples (to check a recording heard something).
pub(crate) fn wav_rms(path: &Path) -> Option<f64> {
    let r = hound::WavReader::open(path).ok()?;
    let s: Vec<i16> = r.into_samples::<i16>().filter_map(Result::ok).collect();
    if s.is_empty() {
        return Some(0.0);
    }
    Some((s.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / s.len() as f64).sqrt())
}

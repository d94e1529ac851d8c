//! The client stack the commands share: a `Voice` over a SIP agent (WebSocket, TLS,
//! TCP or UDP by the server URL's scheme), the RTP engine with Opus and G.711, and
//! audio from a WAV file (or silence) into a WAV file (or nowhere).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use dialtone_audio_file::{WavCapturer, WavRenderer};
use dialtone_audio_memory::BufferCapturer;
use dialtone_codec_opus::Opus;
use dialtone_codec_pcmu::{Law, G711};
use dialtone_core::parts::{
    AudioBackend, AudioCapturer, AudioCodec, AudioFormat, AudioRenderer, EncoderSettings, MediaSessionConfig,
    SignalingTransport, TlsSettings, TransportTarget,
};
use dialtone_core::{ErrorCode, InsightsSink, NotificationDelegate, Voice, VoiceError};
use dialtone_rtp::engine::{RtpEngine, RtpEngineConfig};
use dialtone_sip::{AgentConfig, SipAgent};

/// The shared speech recordings next to the repository (`../shared/audio`), or
/// `DIALTONE_SHARED_AUDIO`.
pub(crate) fn shared_speech(rate: u32) -> Option<PathBuf> {
    let dir = std::env::var_os("DIALTONE_SHARED_AUDIO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared/audio"));
    let f = dir.join(format!("speech-{}k.wav", rate / 1000));
    f.exists().then_some(f)
}

/// What a client is made of.
pub(crate) struct ClientSetup {
    pub(crate) server: String,
    pub(crate) ca_file: Option<PathBuf>,
    /// Played into every call (looped); `None` uses the audio device.
    pub(crate) play: Option<PathBuf>,
    /// Where received audio is written, one file per call (`-2`, `-3` ... after the
    /// first); `None` uses the audio device.
    pub(crate) record: Option<PathBuf>,
    /// The audio backend for what `play` and `record` do not cover (none: silence
    /// in, nothing out).
    pub(crate) devices: Option<Devices>,
    /// The codecs, in order of preference (default: Opus, PCMU, PCMA).
    pub(crate) codecs: Option<Vec<Arc<dyn AudioCodec>>>,
    /// Where insights events go (default: the log); `Some(None)` turns them off.
    pub(crate) insights: Option<Option<Arc<dyn InsightsSink>>>,
}

/// The OS audio devices to use when no file is given.
#[derive(Clone)]
pub(crate) struct Devices {
    pub(crate) backend: Arc<dyn AudioBackend>,
    pub(crate) input: Option<String>,
    pub(crate) output: Option<String>,
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

pub(crate) fn codecs() -> Vec<Arc<dyn AudioCodec>> {
    vec![
        Arc::new(Opus::new(EncoderSettings::default())),
        Arc::new(G711::new(Law::Mu)),
        Arc::new(G711::new(Law::A)),
    ]
}

fn transport_for(url: &str) -> Result<Arc<dyn SignalingTransport>, VoiceError> {
    if url.starts_with("ws://") || url.starts_with("wss://") {
        Ok(Arc::new(dialtone_transport_ws::WsTransport::default()))
    } else if url.starts_with("sip:") || url.starts_with("sips:") {
        Ok(Arc::new(dialtone_transport_tcp::TcpTransport::default()))
    } else {
        Err(VoiceError::new(
            ErrorCode::MalformedRequest,
            format!("--server {url:?}: use ws://, wss://, sip: or sips:"),
        ))
    }
}

/// The recordings a client made, one per call.
pub(crate) type Recordings = Arc<Mutex<Vec<PathBuf>>>;

/// Builds a `Voice` and its agent; the paths of the recordings made so far are in
/// the returned list.
pub(crate) fn build(
    setup: ClientSetup,
    incoming: Option<Arc<dyn NotificationDelegate>>,
) -> Result<(Voice, Arc<SipAgent>, Recordings), VoiceError> {
    let transport = transport_for(&setup.server)?;
    let mut tls = TlsSettings::default();
    if let Some(ca) = &setup.ca_file {
        tls = tls.with_ca_file(ca);
    }
    let target = TransportTarget::new(setup.server.clone()).with_tls(tls);
    let recordings: Recordings = Arc::default();
    let made = recordings.clone();
    let (play, record, devices, insights) = (setup.play, setup.record, setup.devices, setup.insights);
    let codec_set = setup.codecs.unwrap_or_else(codecs);
    if let Some(p) = &play {
        // Fail now, not at the first call.
        WavCapturer::open(p, true, 20)?;
    }
    let factory = Arc::new(move || -> Result<MediaSessionConfig, VoiceError> {
        let format = AudioFormat::new(48_000, 1, 20)?;
        let capturer: Box<dyn AudioCapturer> = match (&play, &devices) {
            (Some(p), _) => Box::new(WavCapturer::open(p, true, 20)?),
            (None, Some(d)) => match d.backend.open_capturer(d.input.as_deref(), format) {
                Ok(c) => c,
                Err(e) => {
                    say_once(&SAID_NO_INPUT, &format!("no input device ({}); sending silence", e.message()));
                    Box::new(BufferCapturer::silence(format))
                }
            },
            (None, None) => {
                say_once(&SAID_NO_INPUT, "no --play file and no audio device: sending silence");
                Box::new(BufferCapturer::silence(format))
            }
        };
        let renderer: Box<dyn AudioRenderer> = match &record {
            Some(r) => {
                let mut list = made.lock().unwrap_or_else(|p| p.into_inner());
                let path = numbered(r, list.len() + 1);
                list.push(path.clone());
                Box::new(WavRenderer::create(&path, format)?)
            }
            None => match &devices {
                Some(d) => d.backend.open_renderer(d.output.as_deref(), format).unwrap_or_else(|e| {
                    say_once(
                        &SAID_NO_OUTPUT,
                        &format!("no output device ({}); received audio is dropped", e.message()),
                    );
                    Box::new(Discard(format))
                }),
                None => Box::new(Discard(format)),
            },
        };
        Ok(MediaSessionConfig::new(codec_set.clone(), capturer, renderer))
    });
    let engine = RtpEngine::new(RtpEngineConfig { ports: None, ..RtpEngineConfig::default() });
    let agent = SipAgent::new(AgentConfig::new(target), transport, Arc::new(engine), factory);
    let mut builder = Voice::builder(agent.clone());
    if let Some(d) = incoming {
        builder = builder.incoming_delegate(d);
    }
    match insights {
        Some(Some(sink)) => builder = builder.insights_sink(sink),
        Some(None) => builder = builder.insights_enabled(false),
        None => {}
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

//! The OS audio devices through cpal. On Linux cpal's PulseAudio host is used (it
//! also serves PipeWire through pipewire-pulse); elsewhere the platform's default host.
//!
//! cpal delivers audio in callbacks on its own threads; the media pipeline works in
//! fixed frames. A ring buffer sits between them: the capture callback fills it and
//! [`AudioCapturer::read_frame`] takes whole frames out; [`AudioRenderer::write_frame`]
//! fills the playback ring and the output callback drains it. A full capture ring
//! drops its oldest samples (an overrun); an output callback that finds too few
//! samples plays silence (an underrun); both are counted ([`XrunCounters`]) and
//! logged once. Each stream lives on a thread of its own, because a cpal stream may
//! not be sent between threads, and stops when its capturer or renderer is dropped.

#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use dialtone_core::parts::{AudioBackend, AudioCapturer, AudioDeviceInfo, AudioFormat, AudioRenderer};
use dialtone_core::registry::{Registry, RegistryError};
use dialtone_core::{ErrorCode, VoiceError};

/// How much audio a ring holds before it overruns: 200 ms.
const RING_MS: u32 = 200;
/// How long opening a stream may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

fn device_error(msg: impl Into<String>) -> VoiceError {
    VoiceError::new(ErrorCode::UnknownError, msg)
}

/// Overruns and underruns of one stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XrunCounters {
    /// Samples dropped because the capture ring was full.
    pub overruns: u64,
    /// Output callbacks that found too few samples and played silence for the rest.
    pub underruns: u64,
}

struct Ring {
    samples: VecDeque<i16>,
    capacity: usize,
    xruns: XrunCounters,
}

type SharedRing = Arc<Mutex<Ring>>;

fn lock(r: &SharedRing) -> MutexGuard<'_, Ring> {
    r.lock().unwrap_or_else(|p| p.into_inner())
}

fn ring(format: AudioFormat) -> SharedRing {
    let capacity = format.samples_per_frame() * (RING_MS / format.frame_ms()) as usize;
    Arc::new(Mutex::new(Ring {
        samples: VecDeque::with_capacity(capacity),
        capacity,
        xruns: XrunCounters::default(),
    }))
}

/// Keeps a stream alive on its own thread until dropped.
struct StreamThread {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StreamThread {
    fn start(
        build: impl FnOnce() -> Result<cpal::Stream, VoiceError> + Send + 'static,
    ) -> Result<Self, VoiceError> {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("dialtone-audio".into())
            .spawn(move || {
                let stream = build().and_then(|s| {
                    s.play().map_err(|e| device_error(format!("cannot start the audio stream: {e}")))?;
                    Ok(s)
                });
                match stream {
                    Ok(s) => {
                        let _ = ready_tx.send(Ok(()));
                        let _ = stop_rx.recv(); // until the owner is dropped
                        drop(s);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| device_error(format!("cannot start an audio thread: {e}")))?;
        match ready_rx.recv_timeout(OPEN_TIMEOUT) {
            Ok(Ok(())) => Ok(StreamThread { stop: Some(stop_tx), thread: Some(thread) }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(device_error("the audio device did not open in time")),
        }
    }
}

impl Drop for StreamThread {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The cpal backend.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpalBackend;

impl CpalBackend {
    /// PulseAudio on Linux (it also serves PipeWire), else the platform's default
    /// host. An unreachable PulseAudio server is an error that says so: the backend
    /// never switches to another host (ALSA) silently.
    fn host() -> Result<cpal::Host, VoiceError> {
        #[cfg(target_os = "linux")]
        {
            cpal::host_from_id(cpal::HostId::PulseAudio).map_err(|e| {
                device_error(format!(
                    "the PulseAudio server is unreachable ({e}); start one or set PULSE_SERVER"
                ))
            })
        }
        #[cfg(not(target_os = "linux"))]
        {
            Ok(cpal::default_host())
        }
    }

    fn name_of(d: &cpal::Device) -> String {
        d.id().map(|id| id.id().to_owned()).unwrap_or_else(|_| "unknown".into())
    }

    fn find(
        devices: impl Iterator<Item = cpal::Device>,
        name: &str,
        kind: &str,
    ) -> Result<cpal::Device, VoiceError> {
        let all: Vec<cpal::Device> = devices.collect();
        let names: Vec<String> = all.iter().map(Self::name_of).collect();
        all.into_iter()
            .find(|d| Self::name_of(d) == name || d.description().map(|x| x.name() == name).unwrap_or(false))
            .ok_or_else(|| device_error(format!("no {kind} device named {name:?}; there are {names:?}")))
    }

    /// One pipeline frame per callback: a server's default (PulseAudio's is up to two
    /// seconds) would drain the ring in one go and play the rest as silence.
    /// The named input (or output) device, or the default one.
    fn device(name: Option<&str>, input: bool) -> Result<cpal::Device, VoiceError> {
        let host = Self::host()?;
        let kind = if input { "input" } else { "output" };
        match name {
            Some(n) => {
                let devices = if input { host.input_devices() } else { host.output_devices() }
                    .map_err(|e| device_error(format!("cannot list devices: {e}")))?;
                Self::find(devices, n, kind)
            }
            None => if input { host.default_input_device() } else { host.default_output_device() }
                .ok_or_else(|| device_error(format!("there is no default {kind} device"))),
        }
    }

    fn stream_config(format: AudioFormat) -> cpal::StreamConfig {
        cpal::StreamConfig {
            channels: u16::from(format.channels()),
            sample_rate: format.sample_rate(),
            buffer_size: cpal::BufferSize::Fixed(format.sample_rate() * format.frame_ms() / 1000),
        }
    }
}

impl AudioBackend for CpalBackend {
    fn devices(&self) -> Result<Vec<AudioDeviceInfo>, VoiceError> {
        let host = Self::host()?;
        let default_in = host.default_input_device().map(|d| Self::name_of(&d));
        let default_out = host.default_output_device().map(|d| Self::name_of(&d));
        let mut out = Vec::new();
        for d in host.input_devices().map_err(|e| device_error(format!("cannot list devices: {e}")))? {
            let n = Self::name_of(&d);
            out.push(AudioDeviceInfo::new(n.clone(), true, false, default_in.as_deref() == Some(&n)));
        }
        for d in host.output_devices().map_err(|e| device_error(format!("cannot list devices: {e}")))? {
            let n = Self::name_of(&d);
            out.push(AudioDeviceInfo::new(n.clone(), false, true, default_out.as_deref() == Some(&n)));
        }
        Ok(out)
    }

    fn open_capturer(
        &self,
        device: Option<&str>,
        format: AudioFormat,
    ) -> Result<Box<dyn AudioCapturer>, VoiceError> {
        Ok(Box::new(CpalCapturer::open(device, format)?))
    }

    fn open_renderer(
        &self,
        device: Option<&str>,
        format: AudioFormat,
    ) -> Result<Box<dyn AudioRenderer>, VoiceError> {
        Ok(Box::new(CpalRenderer::open(device, format)?))
    }
}

/// Captures from an input device.
pub struct CpalCapturer {
    format: AudioFormat,
    ring: SharedRing,
    _stream: StreamThread,
}

impl CpalCapturer {
    /// Opens the named input device (or the default one).
    pub fn open(device: Option<&str>, format: AudioFormat) -> Result<Self, VoiceError> {
        let ring = ring(format);
        let r = ring.clone();
        let name = device.map(str::to_owned);
        let stream = StreamThread::start(move || {
            let dev = CpalBackend::device(name.as_deref(), true)?;
            dev.build_input_stream::<i16, _, _>(
                CpalBackend::stream_config(format),
                move |data: &[i16], _| {
                    let mut ring = lock(&r);
                    ring.samples.extend(data.iter().copied());
                    let excess = ring.samples.len().saturating_sub(ring.capacity);
                    if excess > 0 {
                        if ring.xruns.overruns == 0 {
                            tracing::warn!("audio capture overrun: the pipeline is not reading fast enough");
                        }
                        ring.samples.drain(..excess);
                        ring.xruns.overruns += excess as u64;
                    }
                },
                |e| tracing::warn!("audio capture error: {e}"),
                Some(OPEN_TIMEOUT),
            )
            .map_err(|e| device_error(format!("cannot open the input device: {e}")))
        })?;
        Ok(CpalCapturer { format, ring, _stream: stream })
    }

    /// Overruns and underruns so far.
    pub fn xruns(&self) -> XrunCounters {
        lock(&self.ring).xruns
    }
}

impl AudioCapturer for CpalCapturer {
    fn format(&self) -> AudioFormat {
        self.format
    }

    fn read_frame(&mut self, frame: &mut [i16]) -> Result<bool, VoiceError> {
        let mut ring = lock(&self.ring);
        if ring.samples.len() < frame.len() {
            return Ok(false);
        }
        let n = frame.len();
        for (f, s) in frame.iter_mut().zip(ring.samples.drain(..n)) {
            *f = s;
        }
        Ok(true)
    }
}

/// Plays to an output device.
pub struct CpalRenderer {
    format: AudioFormat,
    ring: SharedRing,
    _stream: StreamThread,
}

impl CpalRenderer {
    /// Opens the named output device (or the default one).
    pub fn open(device: Option<&str>, format: AudioFormat) -> Result<Self, VoiceError> {
        let ring = ring(format);
        let r = ring.clone();
        let name = device.map(str::to_owned);
        let stream = StreamThread::start(move || {
            let dev = CpalBackend::device(name.as_deref(), false)?;
            dev.build_output_stream::<i16, _, _>(
                CpalBackend::stream_config(format),
                move |data: &mut [i16], _| {
                    let mut ring = lock(&r);
                    let have = ring.samples.len().min(data.len());
                    for (d, s) in data.iter_mut().zip(ring.samples.drain(..have)) {
                        *d = s;
                    }
                    if have < data.len() {
                        data[have..].fill(0);
                        ring.xruns.underruns += 1;
                    }
                },
                |e| tracing::warn!("audio playback error: {e}"),
                Some(OPEN_TIMEOUT),
            )
            .map_err(|e| device_error(format!("cannot open the output device: {e}")))
        })?;
        Ok(CpalRenderer { format, ring, _stream: stream })
    }

    /// Overruns and underruns so far.
    pub fn xruns(&self) -> XrunCounters {
        lock(&self.ring).xruns
    }

    /// Samples waiting to be played.
    pub fn queued(&self) -> usize {
        lock(&self.ring).samples.len()
    }
}

impl AudioRenderer for CpalRenderer {
    fn format(&self) -> AudioFormat {
        self.format
    }

    fn write_frame(&mut self, frame: &[i16]) -> Result<(), VoiceError> {
        let mut ring = lock(&self.ring);
        ring.samples.extend(frame.iter().copied());
        let excess = ring.samples.len().saturating_sub(ring.capacity);
        if excess > 0 {
            ring.samples.drain(..excess);
            ring.xruns.overruns += excess as u64;
        }
        Ok(())
    }
}

/// Registers the `cpal` backend.
pub fn register(registry: &mut Registry) -> Result<(), RegistryError> {
    registry.register::<dyn AudioBackend>("cpal", |_| Ok(Arc::new(CpalBackend)))
}

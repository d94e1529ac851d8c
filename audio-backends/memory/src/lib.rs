//! In-memory and synthetic audio for tests and bots: a capturer that plays a buffer
//! (once or looped), a tone or silence, and a renderer that keeps what it is given in
//! a shared buffer. The `synthetic` backend in the registry opens a 440 Hz tone for
//! capture and a memory renderer for playback.

#![forbid(unsafe_code)]

use std::sync::{Arc, Mutex};

use dialtone_core::parts::{AudioBackend, AudioCapturer, AudioDeviceInfo, AudioFormat, AudioRenderer};
use dialtone_core::registry::{Registry, RegistryError};
use dialtone_core::VoiceError;

/// What a [`BufferCapturer`] plays.
enum Source {
    Samples { samples: Arc<Vec<i16>>, pos: usize, looped: bool },
    Tone { hz: f64, amplitude: f64, phase: f64 },
    Silence,
}

/// A capturer that plays samples (interleaved in its format), a tone or silence.
/// After a buffer played once, it gives silence.
pub struct BufferCapturer {
    format: AudioFormat,
    source: Source,
}

impl BufferCapturer {
    /// Plays `samples` once, or over and over.
    pub fn new(format: AudioFormat, samples: Vec<i16>, looped: bool) -> Self {
        BufferCapturer { format, source: Source::Samples { samples: Arc::new(samples), pos: 0, looped } }
    }

    /// A sine tone at `hz` with peak `amplitude` (0 to 32767).
    pub fn tone(format: AudioFormat, hz: f64, amplitude: i16) -> Self {
        BufferCapturer { format, source: Source::Tone { hz, amplitude: f64::from(amplitude), phase: 0.0 } }
    }

    /// Silence.
    pub fn silence(format: AudioFormat) -> Self {
        BufferCapturer { format, source: Source::Silence }
    }
}

impl AudioCapturer for BufferCapturer {
    fn format(&self) -> AudioFormat {
        self.format
    }

    fn read_frame(&mut self, frame: &mut [i16]) -> Result<bool, VoiceError> {
        let channels = usize::from(self.format.channels());
        match &mut self.source {
            Source::Silence => frame.fill(0),
            Source::Tone { hz, amplitude, phase } => {
                let step = 2.0 * std::f64::consts::PI * *hz / f64::from(self.format.sample_rate());
                for f in frame.chunks_mut(channels) {
                    let v = (phase.sin() * *amplitude) as i16;
                    f.fill(v);
                    *phase = (*phase + step) % (2.0 * std::f64::consts::PI);
                }
            }
            Source::Samples { samples, pos, looped } => {
                for s in frame.iter_mut() {
                    if *pos >= samples.len() && *looped && !samples.is_empty() {
                        *pos = 0;
                    }
                    *s = samples.get(*pos).copied().unwrap_or(0);
                    *pos += 1;
                }
            }
        }
        Ok(true)
    }
}

/// A renderer that appends every frame to a shared buffer.
pub struct MemoryRenderer {
    format: AudioFormat,
    out: Arc<Mutex<Vec<i16>>>,
}

impl MemoryRenderer {
    /// A renderer and the buffer it fills.
    pub fn new(format: AudioFormat) -> (Self, Arc<Mutex<Vec<i16>>>) {
        let out = Arc::new(Mutex::new(Vec::new()));
        (MemoryRenderer { format, out: out.clone() }, out)
    }
}

impl AudioRenderer for MemoryRenderer {
    fn format(&self) -> AudioFormat {
        self.format
    }

    fn write_frame(&mut self, frame: &[i16]) -> Result<(), VoiceError> {
        self.out.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(frame);
        Ok(())
    }
}

/// The `synthetic` backend: a 440 Hz tone in, memory out. Devices are named `tone`
/// and `silence`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SyntheticBackend;

impl AudioBackend for SyntheticBackend {
    fn devices(&self) -> Result<Vec<AudioDeviceInfo>, VoiceError> {
        Ok(vec![
            AudioDeviceInfo::new("tone", true, true, true),
            AudioDeviceInfo::new("silence", true, false, false),
        ])
    }

    fn open_capturer(
        &self,
        device: Option<&str>,
        format: AudioFormat,
    ) -> Result<Box<dyn AudioCapturer>, VoiceError> {
        Ok(match device {
            Some("silence") => Box::new(BufferCapturer::silence(format)),
            _ => Box::new(BufferCapturer::tone(format, 440.0, 8000)),
        })
    }

    fn open_renderer(
        &self,
        _device: Option<&str>,
        format: AudioFormat,
    ) -> Result<Box<dyn AudioRenderer>, VoiceError> {
        Ok(Box::new(MemoryRenderer::new(format).0))
    }
}

/// Registers the `synthetic` backend.
pub fn register(registry: &mut Registry) -> Result<(), RegistryError> {
    registry.register::<dyn AudioBackend>("synthetic", |_| Ok(Arc::new(SyntheticBackend)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_tones_and_memory() {
        let f = AudioFormat::new(8000, 1, 20).unwrap();
        let mut c = BufferCapturer::new(f, (0..200).collect(), false);
        let mut frame = vec![0i16; 160];
        assert!(c.read_frame(&mut frame).unwrap());
        assert_eq!(frame[159], 159);
        c.read_frame(&mut frame).unwrap();
        assert_eq!((frame[39], frame[40]), (199, 0), "silence after the end");
        let mut looped = BufferCapturer::new(f, vec![1, 2, 3], true);
        looped.read_frame(&mut frame).unwrap();
        assert_eq!(&frame[..7], &[1, 2, 3, 1, 2, 3, 1]);
        let mut t = BufferCapturer::tone(f, 1000.0, 10_000);
        t.read_frame(&mut frame).unwrap();
        let peak = frame.iter().map(|s| s.abs()).max().unwrap();
        assert!((9_900..=10_000).contains(&peak), "{peak}");
        let (mut r, out) = MemoryRenderer::new(f);
        r.write_frame(&frame).unwrap();
        r.write_frame(&frame).unwrap();
        assert_eq!(out.lock().unwrap().len(), 320);
    }
}

//! WAV files as audio devices: a capturer that reads a 16-bit PCM WAV (optionally in a
//! loop) and a renderer that writes one. The capturer takes the file's own rate and
//! channels as its format; the media pipeline resamples to the codec.

#![forbid(unsafe_code)]

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use dialtone_core::parts::{AudioCapturer, AudioFormat, AudioRenderer};
use dialtone_core::{ErrorCode, VoiceError};

fn file_error(path: &Path, e: impl std::fmt::Display) -> VoiceError {
    VoiceError::new(ErrorCode::UnknownError, format!("{}: {e}", path.display()))
}

/// Plays a WAV file.
pub struct WavCapturer {
    format: AudioFormat,
    samples: Vec<i16>,
    pos: usize,
    looped: bool,
}

impl WavCapturer {
    /// Opens a 16-bit PCM WAV file, 1 or 2 channels, 8 to 48 kHz.
    pub fn open(path: impl AsRef<Path>, looped: bool, frame_ms: u32) -> Result<Self, VoiceError> {
        let path = path.as_ref();
        let reader = hound::WavReader::open(path).map_err(|e| file_error(path, e))?;
        let spec = reader.spec();
        if spec.bits_per_sample != 16 || spec.sample_format != hound::SampleFormat::Int {
            return Err(file_error(path, "only 16-bit integer PCM WAV files are supported"));
        }
        let channels = u8::try_from(spec.channels).map_err(|_| file_error(path, "too many channels"))?;
        let format = AudioFormat::new(spec.sample_rate, channels, frame_ms)
            .map_err(|e| file_error(path, e.message()))?;
        let samples =
            reader.into_samples::<i16>().collect::<Result<Vec<_>, _>>().map_err(|e| file_error(path, e))?;
        Ok(WavCapturer { format, samples, pos: 0, looped })
    }

    /// Whether a non-looping file has played to its end.
    pub fn finished(&self) -> bool {
        !self.looped && self.pos >= self.samples.len()
    }
}

impl AudioCapturer for WavCapturer {
    fn format(&self) -> AudioFormat {
        self.format
    }

    fn read_frame(&mut self, frame: &mut [i16]) -> Result<bool, VoiceError> {
        for s in frame.iter_mut() {
            if self.pos >= self.samples.len() && self.looped && !self.samples.is_empty() {
                self.pos = 0;
            }
            *s = self.samples.get(self.pos).copied().unwrap_or(0);
            self.pos += 1;
        }
        Ok(true)
    }
}

/// Writes a WAV file; the header is completed by [`WavRenderer::finish`] or on drop.
pub struct WavRenderer {
    format: AudioFormat,
    writer: Option<hound::WavWriter<BufWriter<File>>>,
}

impl WavRenderer {
    /// Creates (or truncates) `path`.
    pub fn create(path: impl AsRef<Path>, format: AudioFormat) -> Result<Self, VoiceError> {
        let path = path.as_ref();
        let spec = hound::WavSpec {
            channels: u16::from(format.channels()),
            sample_rate: format.sample_rate(),
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let writer = hound::WavWriter::create(path, spec).map_err(|e| file_error(path, e))?;
        Ok(WavRenderer { format, writer: Some(writer) })
    }

    /// Completes the file.
    pub fn finish(&mut self) -> Result<(), VoiceError> {
        match self.writer.take() {
            Some(w) => {
                w.finalize().map_err(|e| VoiceError::new(ErrorCode::UnknownError, format!("WAV: {e}")))
            }
            None => Ok(()),
        }
    }
}

impl AudioRenderer for WavRenderer {
    fn format(&self) -> AudioFormat {
        self.format
    }

    fn write_frame(&mut self, frame: &[i16]) -> Result<(), VoiceError> {
        let w = self
            .writer
            .as_mut()
            .ok_or_else(|| VoiceError::new(ErrorCode::UnknownError, "WAV already finished"))?;
        for &s in frame {
            w.write_sample(s).map_err(|e| VoiceError::new(ErrorCode::UnknownError, format!("WAV: {e}")))?;
        }
        Ok(())
    }
}

impl Drop for WavRenderer {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            tracing::warn!("could not complete a WAV file: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_back_and_loop() {
        let dir = std::env::temp_dir().join(format!("dialtone-wav-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.wav");
        let f = AudioFormat::new(16_000, 1, 20).unwrap();
        let mut w = WavRenderer::create(&path, f).unwrap();
        let frame: Vec<i16> = (0..320).map(|i| i as i16 * 10).collect();
        w.write_frame(&frame).unwrap();
        w.finish().unwrap();
        let mut r = WavCapturer::open(&path, true, 20).unwrap();
        assert_eq!(r.format(), f);
        let mut got = vec![0i16; 320];
        r.read_frame(&mut got).unwrap();
        assert_eq!(got, frame);
        r.read_frame(&mut got).unwrap();
        assert_eq!(got, frame, "looped");
        let missing = WavCapturer::open(dir.join("missing.wav"), false, 20).err().unwrap();
        assert!(missing.message().contains("missing.wav"));
        std::fs::write(dir.join("bad.wav"), b"RIFF nonsense").unwrap();
        assert!(WavCapturer::open(dir.join("bad.wav"), false, 20).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}

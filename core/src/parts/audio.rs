//! Audio devices: where captured audio comes from and where received audio goes
//! (an OS device, a WAV file, a synthetic tone, memory). Frames are interleaved
//! 16-bit PCM in an [`AudioFormat`].

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, VoiceError};

/// A PCM format: 16-bit samples, 1 or 2 channels, 8 to 48 kHz, 10 or 20 ms frames.
///
/// ```
/// use dialtone_core::parts::AudioFormat;
/// let f = AudioFormat::new(48_000, 1, 20).unwrap();
/// assert_eq!(f.samples_per_frame(), 960);
/// assert_eq!(AudioFormat::new(96_000, 1, 20).unwrap_err().code(), 31000);
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AudioFormat {
    sample_rate: u32,
    channels: u8,
    frame_ms: u32,
}

impl AudioFormat {
    /// A checked format.
    pub fn new(sample_rate: u32, channels: u8, frame_ms: u32) -> Result<Self, VoiceError> {
        let bad = |what: String| Err(VoiceError::new(ErrorCode::UnknownError, what));
        if !(8_000..=48_000).contains(&sample_rate) {
            return bad(format!("sample rate {sample_rate} Hz is outside 8000-48000 Hz"));
        }
        if !(1..=2).contains(&channels) {
            return bad(format!("{channels} channels; expected 1 or 2"));
        }
        if frame_ms != 10 && frame_ms != 20 {
            return bad(format!("{frame_ms} ms frames; expected 10 or 20"));
        }
        if sample_rate * frame_ms % 1000 != 0 {
            return bad(format!("{sample_rate} Hz does not divide into {frame_ms} ms frames"));
        }
        Ok(AudioFormat { sample_rate, channels, frame_ms })
    }

    /// Samples per second per channel.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Channels.
    pub fn channels(&self) -> u8 {
        self.channels
    }

    /// Frame length in milliseconds.
    pub fn frame_ms(&self) -> u32 {
        self.frame_ms
    }

    /// Samples in one frame, all channels.
    pub fn samples_per_frame(&self) -> usize {
        (self.sample_rate * self.frame_ms / 1000) as usize * self.channels as usize
    }
}

/// A device a backend offers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AudioDeviceInfo {
    /// Its name, as configuration names it.
    pub name: String,
    /// Whether it captures.
    pub is_input: bool,
    /// Whether it renders.
    pub is_output: bool,
    /// Whether it is the backend's default.
    pub is_default: bool,
}

impl AudioDeviceInfo {
    /// A device description.
    pub fn new(name: impl Into<String>, is_input: bool, is_output: bool, is_default: bool) -> Self {
        AudioDeviceInfo { name: name.into(), is_input, is_output, is_default }
    }
}

/// Where audio to send comes from.
pub trait AudioCapturer: Send {
    /// The format of its frames.
    fn format(&self) -> AudioFormat;
    /// Copies the next frame into `frame` (`samples_per_frame` long). `Ok(false)` when
    /// no frame is ready yet; `Ok(true)` when one was written.
    fn read_frame(&mut self, frame: &mut [i16]) -> Result<bool, VoiceError>;
}

/// Where received audio goes.
pub trait AudioRenderer: Send {
    /// The format it takes.
    fn format(&self) -> AudioFormat;
    /// Plays (or stores) one frame.
    fn write_frame(&mut self, frame: &[i16]) -> Result<(), VoiceError>;
}

/// A source of capturers and renderers.
pub trait AudioBackend: Send + Sync {
    /// The devices it offers.
    fn devices(&self) -> Result<Vec<AudioDeviceInfo>, VoiceError>;
    /// Opens a capturer on the named device, or the default one.
    fn open_capturer(
        &self,
        device: Option<&str>,
        format: AudioFormat,
    ) -> Result<Box<dyn AudioCapturer>, VoiceError>;
    /// Opens a renderer on the named device, or the default one.
    fn open_renderer(
        &self,
        device: Option<&str>,
        format: AudioFormat,
    ) -> Result<Box<dyn AudioRenderer>, VoiceError>;
}

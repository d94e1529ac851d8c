//! Frame-by-frame sample-rate and channel conversion between an audio device and a
//! codec, on rubato's synchronous FFT resampler with both sides fixed: every device
//! frame becomes exactly one codec frame and back, so the pipeline keeps its 20 ms
//! cadence. Channels are mixed down (averaged) on the way in and copied on the way out.

use dialtone_core::{ErrorCode, VoiceError};
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

/// Converts frames of `(rate, channels)` into mono frames at another rate.
pub struct FrameConverter {
    channels: usize,
    in_frames: usize,
    out_frames: usize,
    fft: Option<Fft<f32>>,
    mono: Vec<f32>,
    out: Vec<f32>,
}

impl FrameConverter {
    /// A converter for `frame_ms` frames from `from_rate` with `channels` to mono at
    /// `to_rate` (or, with `to_device`, from mono at `from_rate` to `channels` at
    /// `to_rate`; the channel count always names the device side).
    pub fn new(from_rate: u32, to_rate: u32, channels: u8, frame_ms: u32) -> Result<Self, VoiceError> {
        let in_frames = (from_rate * frame_ms / 1000) as usize;
        let out_frames = (to_rate * frame_ms / 1000) as usize;
        let fft = if from_rate == to_rate {
            None
        } else {
            Some(
                Fft::<f32>::new(from_rate as usize, to_rate as usize, in_frames, 1, FixedSync::Both)
                    .map_err(|e| {
                        VoiceError::new(
                            ErrorCode::UnknownError,
                            format!("resampler {from_rate}->{to_rate} Hz: {e}"),
                        )
                    })?,
            )
        };
        Ok(FrameConverter {
            channels: usize::from(channels.max(1)),
            in_frames,
            out_frames,
            fft,
            mono: vec![0.0; in_frames],
            out: vec![0.0; out_frames],
        })
    }

    /// Samples (all channels) of one input frame when the input is the device side.
    pub fn device_samples(&self) -> usize {
        self.in_frames * self.channels
    }

    fn resample(&mut self) {
        match &mut self.fft {
            None => self.out.copy_from_slice(&self.mono),
            Some(fft) => {
                let (Ok(input), Ok(mut output)) = (
                    InterleavedSlice::new(&self.mono, 1, self.in_frames),
                    InterleavedSlice::new_mut(&mut self.out, 1, self.out_frames),
                ) else {
                    self.out.fill(0.0);
                    return;
                };
                if let Err(e) = fft.process_into_buffer(&input, &mut output, None) {
                    tracing::warn!("resampling failed: {e}");
                    self.out.fill(0.0);
                }
            }
        }
    }

    /// Device frame (interleaved, `channels`) to a mono frame at the other rate.
    pub fn device_to_codec(&mut self, device: &[i16], codec: &mut [i16]) {
        for (i, m) in self.mono.iter_mut().enumerate() {
            let frame = device.get(i * self.channels..(i + 1) * self.channels).unwrap_or(&[]);
            let sum: f32 = frame.iter().map(|&s| f32::from(s)).sum();
            *m = sum / self.channels as f32;
        }
        self.resample();
        for (c, &v) in codec.iter_mut().zip(&self.out) {
            *c = v.round().clamp(-32768.0, 32767.0) as i16;
        }
    }

    /// Mono frame at the codec rate to a device frame (interleaved, `channels`).
    pub fn codec_to_device(&mut self, codec: &[i16], device: &mut [i16]) {
        for (m, &s) in self.mono.iter_mut().zip(codec) {
            *m = f32::from(s);
        }
        self.resample();
        for (i, &v) in self.out.iter().enumerate() {
            let s = v.round().clamp(-32768.0, 32767.0) as i16;
            if let Some(frame) = device.get_mut(i * self.channels..(i + 1) * self.channels) {
                frame.fill(s);
            }
        }
    }
}

/// A whole mono recording at `from_rate` brought to `to_rate`, 20 ms at a time (a
/// tail shorter than 20 ms is left out): for scoring and storing recordings.
pub fn convert_all(pcm: &[i16], from_rate: u32, to_rate: u32) -> Result<Vec<i16>, VoiceError> {
    let mut c = FrameConverter::new(from_rate, to_rate, 1, 20)?;
    let (n_in, n_out) = ((from_rate / 50) as usize, (to_rate / 50) as usize);
    let mut out = Vec::with_capacity(pcm.len() / n_in.max(1) * n_out);
    let mut frame = vec![0i16; n_out];
    for piece in pcm.chunks_exact(n_in.max(1)) {
        c.device_to_codec(piece, &mut frame);
        out.extend_from_slice(&frame);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, hz: f64, n: usize) -> Vec<i16> {
        (0..n)
            .map(|i| ((i as f64 * 2.0 * std::f64::consts::PI * hz / f64::from(rate)).sin() * 10_000.0) as i16)
            .collect()
    }

    #[test]
    fn a_tone_keeps_its_pitch_and_level_through_48k_to_8k_and_back() {
        let mut down = FrameConverter::new(48_000, 8000, 1, 20).unwrap();
        let mut up = FrameConverter::new(8000, 48_000, 1, 20).unwrap();
        let input = tone(48_000, 440.0, 960 * 50);
        let mut narrow = Vec::new();
        let mut back = Vec::new();
        for f in input.chunks(960) {
            let mut c = [0i16; 160];
            down.device_to_codec(f, &mut c);
            narrow.extend_from_slice(&c);
            let mut d = [0i16; 960];
            up.codec_to_device(&c, &mut d);
            back.extend_from_slice(&d);
        }
        // zero crossings give the pitch; the peak gives the level (after the start-up delay)
        let crossings = |x: &[i16]| x.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
        let narrow_hz = crossings(&narrow[1600..]) as f64 / 2.0 / ((narrow.len() - 1600) as f64 / 8000.0);
        assert!((narrow_hz - 440.0).abs() < 5.0, "{narrow_hz} Hz");
        let peak = back[9600..].iter().map(|s| s.abs()).max().unwrap();
        assert!((9_000..=11_000).contains(&peak), "peak {peak}");
    }

    #[test]
    fn stereo_devices_are_mixed_down_and_copied_up() {
        let mut down = FrameConverter::new(8000, 8000, 2, 20).unwrap();
        let stereo: Vec<i16> = (0..320).map(|i| if i % 2 == 0 { 1000 } else { 3000 }).collect();
        let mut mono = [0i16; 160];
        down.device_to_codec(&stereo, &mut mono);
        assert!(mono.iter().all(|&s| s == 2000));
        let mut up = FrameConverter::new(8000, 8000, 2, 20).unwrap();
        let mut out = [0i16; 320];
        up.codec_to_device(&mono, &mut out);
        assert!(out.iter().all(|&s| s == 2000));
        assert_eq!(up.device_samples(), 320);
    }
}

//! The send half of the pipeline: one PCM frame at the codec's rate in, one encoded
//! frame out (or none, for a DTX frame that need not be sent).
//!
//! It owns the encoder, mute and hold (both send silence, so packets keep flowing and
//! keep NAT bindings and the peer's media watch alive), the input level meter and the
//! count of failed encodes. The loss the peer reports is handed to the encoder here,
//! so Opus sizes its in-band FEC to it.

use dialtone_core::parts::{AudioCodec, AudioEncoder, EncoderSettings};
use dialtone_core::VoiceError;

use crate::meter::Level;

/// Bytes an encoded frame may take (an RTP payload within one Ethernet MTU).
pub const MAX_FRAME_BYTES: usize = 1500;

/// The send half of the pipeline. See the module docs.
pub struct FrameEncoder {
    encoder: Box<dyn AudioEncoder>,
    /// An Opus DTX frame (2 bytes or less) is not sent.
    skip_dtx: bool,
    level: Level,
    muted: bool,
    held: bool,
    silence: Vec<i16>,
    out: Vec<u8>,
    failures: u32,
    expected_loss: u8,
}

impl std::fmt::Debug for FrameEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameEncoder")
            .field("muted", &self.muted)
            .field("held", &self.held)
            .field("failures", &self.failures)
            .field("expected_loss", &self.expected_loss)
            .finish_non_exhaustive()
    }
}

impl FrameEncoder {
    /// An encoder for `codec` with these settings.
    pub fn new(codec: &dyn AudioCodec, settings: &EncoderSettings) -> Result<Self, VoiceError> {
        let d = codec.descriptor();
        Ok(FrameEncoder {
            encoder: codec.new_encoder(settings)?,
            skip_dtx: d.name.eq_ignore_ascii_case("opus"),
            level: Level::default(),
            muted: false,
            held: false,
            silence: vec![0; d.samples_per_packet()],
            out: vec![0; MAX_FRAME_BYTES],
            failures: 0,
            expected_loss: 0,
        })
    }

    /// Sends silence instead of the microphone (true) or the microphone (false).
    pub fn set_muted(&mut self, muted: bool) {
        self.muted = muted;
    }

    /// Whether muted.
    pub fn muted(&self) -> bool {
        self.muted
    }

    /// On hold by us: silence goes out, so the held party hears nothing of this side.
    pub fn set_held(&mut self, held: bool) {
        self.held = held;
    }

    /// Encodes one frame. `Ok(None)` is a DTX frame that need not be sent. A failed
    /// encode is counted ([`consecutive_failures`](Self::consecutive_failures)).
    pub fn encode(&mut self, pcm: &[i16]) -> Result<Option<&[u8]>, VoiceError> {
        let quiet = self.muted || self.held;
        if quiet && self.silence.len() != pcm.len() {
            self.silence = vec![0; pcm.len()];
        }
        let input = if quiet { &self.silence[..] } else { pcm };
        self.level.add(if quiet { &[] } else { pcm });
        match self.encoder.encode(input, &mut self.out) {
            Ok(n) => {
                self.failures = 0;
                Ok((n > 2 || !self.skip_dtx).then(|| &self.out[..n]))
            }
            Err(e) => {
                self.failures = self.failures.saturating_add(1);
                Err(e)
            }
        }
    }

    /// Tells the encoder the loss the peer reports (RTCP's fraction lost, 0 to 255),
    /// so that its FEC follows the network. Only a change reaches the codec.
    pub fn set_peer_loss_fraction(&mut self, fraction: u8) {
        let percent = (u32::from(fraction) * 100 / 256) as u8;
        if percent != self.expected_loss {
            self.expected_loss = percent;
            self.encoder.set_packet_loss_percent(percent);
        }
    }

    /// The loss the encoder expects now, in percent.
    pub fn expected_loss_percent(&self) -> u8 {
        self.expected_loss
    }

    /// The level of what was captured (silence while muted or held).
    pub fn level(&self) -> &Level {
        &self.level
    }

    /// The level meter, to take a sample from.
    pub fn level_mut(&mut self) -> &mut Level {
        &mut self.level
    }

    /// Encodes that failed in a row.
    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use dialtone_codec_opus::Opus;
    use dialtone_codec_pcmu::{Law, G711};
    use dialtone_core::parts::{AudioDecoder, CodecDescriptor};

    use super::*;

    fn loud() -> Vec<i16> {
        (0..160).map(|i| if i % 2 == 0 { 9000 } else { -9000 }).collect()
    }

    #[test]
    fn mute_and_hold_send_silence_and_meter_nothing() {
        let codec = G711::new(Law::Mu);
        let mut e = FrameEncoder::new(&codec, &EncoderSettings::default()).unwrap_or_else(|x| panic!("{x}"));
        let loud_frame = e.encode(&loud()).unwrap_or_else(|x| panic!("{x}")).map(<[u8]>::to_vec);
        assert!(e.level_mut().take() >= 8000);
        e.set_muted(true);
        let muted = e.encode(&loud()).unwrap_or_else(|x| panic!("{x}")).map(<[u8]>::to_vec);
        assert_ne!(loud_frame, muted, "a muted frame is not the microphone's");
        assert_eq!(muted, Some(vec![0xff; 160]), "µ-law silence");
        assert_eq!(e.level_mut().take(), 0);
        e.set_muted(false);
        e.set_held(true);
        assert_eq!(
            e.encode(&loud()).unwrap_or_else(|x| panic!("{x}")).map(<[u8]>::to_vec),
            Some(vec![0xff; 160])
        );
    }

    #[test]
    fn an_opus_dtx_frame_is_not_sent() {
        let mut s = EncoderSettings::default();
        s.dtx = true;
        let codec = Opus::default();
        let mut e = FrameEncoder::new(&codec, &s).unwrap_or_else(|x| panic!("{x}"));
        let silence = vec![0i16; 960];
        // DTX takes a few frames of silence before it stops sending
        let skipped =
            (0..50).filter(|_| e.encode(&silence).unwrap_or_else(|x| panic!("{x}")).is_none()).count();
        assert!(skipped > 30, "{skipped} of 50 silent frames skipped");
    }

    /// A codec that records the expected loss it is told.
    struct Spy(CodecDescriptor, Arc<Mutex<Vec<u8>>>);
    struct SpyEncoder(Arc<Mutex<Vec<u8>>>);
    impl AudioEncoder for SpyEncoder {
        fn encode(&mut self, _pcm: &[i16], out: &mut [u8]) -> Result<usize, VoiceError> {
            out[..3].copy_from_slice(&[1, 2, 3]);
            Ok(3)
        }
        fn set_packet_loss_percent(&mut self, percent: u8) {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).push(percent);
        }
    }
    impl AudioCodec for Spy {
        fn descriptor(&self) -> &CodecDescriptor {
            &self.0
        }
        fn new_encoder(&self, _: &EncoderSettings) -> Result<Box<dyn AudioEncoder>, VoiceError> {
            Ok(Box::new(SpyEncoder(self.1.clone())))
        }
        fn new_decoder(&self) -> Result<Box<dyn AudioDecoder>, VoiceError> {
            Err(VoiceError::new(dialtone_core::ErrorCode::UnknownError, "encode only"))
        }
    }

    #[test]
    fn the_encoder_expects_the_loss_the_peer_reports_and_hears_only_changes() {
        let told = Arc::new(Mutex::new(Vec::new()));
        let codec = Spy(CodecDescriptor::new("opus", 48_000, 48_000, 2), told.clone());
        let mut e = FrameEncoder::new(&codec, &EncoderSettings::default()).unwrap_or_else(|x| panic!("{x}"));
        for fraction in [13, 13, 26, 0, 0] {
            e.set_peer_loss_fraction(fraction);
        }
        assert_eq!(*told.lock().unwrap_or_else(|p| p.into_inner()), [5, 10, 0]);
        assert_eq!(e.expected_loss_percent(), 0);
    }
}

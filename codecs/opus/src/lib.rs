//! Opus (RFC 6716, RTP mapping RFC 7587) on libopus, through the `opus` crate.
//!
//! The encoder runs in VoIP mode at 48 kHz mono with 20 ms packets. Its bitrate (the
//! Opus max average bitrate option), complexity, in-band FEC and DTX come from the
//! `[codecs]` configuration, and per call from [`EncoderSettings`]. FEC only does
//! anything when the encoder knows the loss rate, so the media pipeline passes the
//! measured loss to [`AudioEncoder::set_packet_loss_percent`], which sets libopus's
//! `packet_loss_perc`. The decoder conceals a lost packet with libopus's PLC, or
//! recovers it from the in-band FEC of the next packet ([`AudioDecoder::decode_fec`]).

// libopus is reached only through the safe `opus` crate; no unsafe code here.
#![forbid(unsafe_code)]

use std::sync::Arc;

use dialtone_core::config::CodecsConfig;
use dialtone_core::parts::{AudioCodec, AudioDecoder, AudioEncoder, CodecDescriptor, EncoderSettings};
use dialtone_core::registry::{Registry, RegistryError};
use dialtone_core::{ErrorCode, VoiceError};

/// The PCM rate of the codec.
pub const SAMPLE_RATE: u32 = 48_000;
/// Samples in one 20 ms packet.
pub const FRAME_SAMPLES: usize = 960;
/// The largest payload the encoder writes (RFC 6716 allows 1275 bytes a frame).
pub const MAX_PAYLOAD: usize = 1275;

fn opus_error(what: &str, e: opus::Error) -> VoiceError {
    VoiceError::new(ErrorCode::UnknownError, format!("opus {what}: {e}"))
}

/// The libopus version string, for reports and benchmarks.
pub fn libopus_version() -> &'static str {
    opus::version()
}

/// The Opus codec with its default encoder settings.
#[derive(Debug, Clone)]
pub struct Opus {
    descriptor: CodecDescriptor,
    defaults: EncoderSettings,
}

impl Opus {
    /// Opus with these defaults (each call's [`EncoderSettings`] can raise them).
    pub fn new(defaults: EncoderSettings) -> Self {
        let mut fmtp = vec!["minptime=10".to_owned()];
        if defaults.fec {
            fmtp.push("useinbandfec=1".into());
        }
        if defaults.dtx {
            fmtp.push("usedtx=1".into());
        }
        if let Some(b) = defaults.bitrate {
            fmtp.push(format!("maxaveragebitrate={b}"));
        }
        let descriptor = CodecDescriptor::new("opus", SAMPLE_RATE, SAMPLE_RATE, 1).with_fmtp(fmtp.join(";"));
        Opus { descriptor, defaults }
    }

    /// Opus configured by the `[codecs]` section.
    pub fn from_config(c: &CodecsConfig) -> Self {
        let mut s = EncoderSettings::default();
        s.bitrate = c.opus_max_average_bitrate;
        s.complexity = Some(c.opus_complexity);
        s.fec = c.opus_fec;
        s.dtx = c.opus_dtx;
        Self::new(s)
    }
}

impl Default for Opus {
    fn default() -> Self {
        Self::from_config(&CodecsConfig::default())
    }
}

impl AudioCodec for Opus {
    fn descriptor(&self) -> &CodecDescriptor {
        &self.descriptor
    }

    fn new_encoder(&self, settings: &EncoderSettings) -> Result<Box<dyn AudioEncoder>, VoiceError> {
        let mut enc = opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)
            .map_err(|e| opus_error("encoder", e))?;
        let bitrate = settings.bitrate.or(self.defaults.bitrate);
        if let Some(b) = bitrate {
            let b = i32::try_from(b.clamp(6_000, 510_000)).unwrap_or(510_000);
            enc.set_bitrate(opus::Bitrate::Bits(b)).map_err(|e| opus_error("bitrate", e))?;
        }
        if let Some(c) = settings.complexity.or(self.defaults.complexity) {
            enc.set_complexity(i32::from(c.min(10))).map_err(|e| opus_error("complexity", e))?;
        }
        let fec = settings.fec || self.defaults.fec;
        enc.set_inband_fec(fec).map_err(|e| opus_error("fec", e))?;
        enc.set_dtx(settings.dtx || self.defaults.dtx).map_err(|e| opus_error("dtx", e))?;
        Ok(Box::new(Encoder { enc }))
    }

    fn new_decoder(&self) -> Result<Box<dyn AudioDecoder>, VoiceError> {
        let dec =
            opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono).map_err(|e| opus_error("decoder", e))?;
        Ok(Box::new(Decoder { dec }))
    }
}

struct Encoder {
    enc: opus::Encoder,
}

impl AudioEncoder for Encoder {
    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, VoiceError> {
        self.enc.encode(pcm, out).map_err(|e| opus_error("encode", e))
    }

    fn set_packet_loss_percent(&mut self, percent: u8) {
        if let Err(e) = self.enc.set_packet_loss_perc(i32::from(percent.min(100))) {
            tracing::warn!("opus packet_loss_perc: {e}");
        }
    }

    fn set_bitrate(&mut self, bitrate: u32) -> Result<(), VoiceError> {
        let b = i32::try_from(bitrate.clamp(6_000, 510_000)).unwrap_or(510_000);
        self.enc.set_bitrate(opus::Bitrate::Bits(b)).map_err(|e| opus_error("bitrate", e))
    }
}

struct Decoder {
    dec: opus::Decoder,
}

impl AudioDecoder for Decoder {
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, VoiceError> {
        if payload.is_empty() {
            return Err(VoiceError::new(ErrorCode::UnknownError, "opus decode: empty payload"));
        }
        self.dec.decode(payload, out, false).map_err(|e| opus_error("decode", e))
    }

    fn conceal(&mut self, out: &mut [i16]) -> Result<usize, VoiceError> {
        let n = out.len().min(FRAME_SAMPLES);
        self.dec.decode(&[], &mut out[..n], false).map_err(|e| opus_error("PLC", e))
    }

    fn decode_fec(&mut self, next_payload: &[u8], out: &mut [i16]) -> Result<Option<usize>, VoiceError> {
        if next_payload.is_empty() {
            return Ok(None);
        }
        // libopus fills exactly the requested duration from the FEC data (or with PLC
        // when the packet carries none); `out` is one lost packet long.
        let n = out.len().min(FRAME_SAMPLES);
        self.dec.decode(next_payload, &mut out[..n], true).map(Some).map_err(|e| opus_error("FEC", e))
    }
}

/// Registers `opus`, configured by the `[codecs]` section it is created with.
pub fn register(registry: &mut Registry) -> Result<(), RegistryError> {
    registry.register::<dyn AudioCodec>("opus", |config| Ok(Arc::new(Opus::from_config(&config.codecs))))
}

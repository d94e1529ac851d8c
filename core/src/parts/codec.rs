//! Audio codecs: a small descriptor (the baresip `aucodec` idea: name, rates,
//! channels, ptime, fmtp, payload type) and factories for encoders and decoders.
//! PCM is interleaved 16-bit at the codec's `sample_rate`.

use crate::error::VoiceError;

/// What a codec is, for SDP and for the pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CodecDescriptor {
    /// The SDP encoding name, for example `opus`, `PCMU`, `G722`.
    pub name: String,
    /// The PCM rate the encoder takes and the decoder gives, in Hz.
    pub sample_rate: u32,
    /// The RTP clock rate written in `a=rtpmap` (`G722/8000` carries 16 kHz audio).
    pub clock_rate: u32,
    /// Channels of PCM.
    pub channels: u8,
    /// The packet duration in milliseconds.
    pub ptime_ms: u32,
    /// The SDP `a=fmtp` parameters, if any.
    pub fmtp: Option<String>,
    /// The static RTP payload type (0 for PCMU, 8 for PCMA, 9 for G722), or `None` for
    /// a dynamic one.
    pub payload_type: Option<u8>,
}

impl CodecDescriptor {
    /// A descriptor with a 20 ms ptime and no fmtp or static payload type.
    pub fn new(name: &str, sample_rate: u32, clock_rate: u32, channels: u8) -> Self {
        CodecDescriptor {
            name: name.to_owned(),
            sample_rate,
            clock_rate,
            channels,
            ptime_ms: 20,
            fmtp: None,
            payload_type: None,
        }
    }

    /// Sets the static payload type.
    pub fn with_payload_type(mut self, pt: u8) -> Self {
        self.payload_type = Some(pt);
        self
    }

    /// Sets the fmtp parameters.
    pub fn with_fmtp(mut self, fmtp: impl Into<String>) -> Self {
        self.fmtp = Some(fmtp.into());
        self
    }

    /// PCM samples (all channels) in one packet.
    pub fn samples_per_packet(&self) -> usize {
        (self.sample_rate as usize * self.ptime_ms as usize / 1000) * self.channels as usize
    }
}

/// Encoder settings taken from options and configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EncoderSettings {
    /// Target (Opus: max average) bitrate in bit/s.
    pub bitrate: Option<u32>,
    /// Complexity, 0 to 10.
    pub complexity: Option<u8>,
    /// In-band forward error correction.
    pub fec: bool,
    /// Discontinuous transmission.
    pub dtx: bool,
}

/// Turns PCM frames into payloads.
pub trait AudioEncoder: Send {
    /// Encodes one packet's worth of PCM into `out`; returns the payload length.
    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, VoiceError>;
    /// Tells the encoder the measured loss, so FEC can adapt. Default: ignored.
    fn set_packet_loss_percent(&mut self, percent: u8) {
        let _ = percent;
    }
    /// Changes the bitrate. Default: ignored.
    fn set_bitrate(&mut self, bitrate: u32) -> Result<(), VoiceError> {
        let _ = bitrate;
        Ok(())
    }
}

/// Turns payloads into PCM and hides losses.
pub trait AudioDecoder: Send {
    /// Decodes one payload into `out`; returns the samples written (all channels).
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, VoiceError>;
    /// Fills `out` with concealment for one lost packet (PLC); returns samples written.
    fn conceal(&mut self, out: &mut [i16]) -> Result<usize, VoiceError>;
    /// Recovers a lost packet from the FEC data in the *next* packet, if the codec can;
    /// `Ok(None)` when it cannot (the default).
    fn decode_fec(&mut self, next_payload: &[u8], out: &mut [i16]) -> Result<Option<usize>, VoiceError> {
        let _ = (next_payload, out);
        Ok(None)
    }
}

/// A codec: its descriptor and its encoder and decoder factories.
pub trait AudioCodec: Send + Sync {
    /// What the codec is.
    fn descriptor(&self) -> &CodecDescriptor;
    /// A new encoder.
    fn new_encoder(&self, settings: &EncoderSettings) -> Result<Box<dyn AudioEncoder>, VoiceError>;
    /// A new decoder.
    fn new_decoder(&self) -> Result<Box<dyn AudioDecoder>, VoiceError>;
}

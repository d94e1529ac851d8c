//! G.711 µ-law (`PCMU`, RTP payload type 0) and A-law (`PCMA`, payload type 8) at
//! 8 kHz, mono, 20 ms packets.
//!
//! The sample conversions follow the ITU-T G.191 reference implementation of G.711:
//! a negative input is taken in one's complement (`!x`), µ-law works on 14-bit
//! magnitudes with a bias of 33 and A-law on 12-bit magnitudes, and decoding returns
//! the middle of each quantization interval. `tests/reference.rs` checks all 65,536
//! inputs against an independent table-search formulation of the same standard.
//!
//! Concealment of a lost packet repeats the last good packet at falling gain (-6 dB a
//! packet, silent after four): G.711 has no PLC of its own, and this keeps a single
//! loss from clicking.

#![forbid(unsafe_code)]

use std::sync::Arc;

use dialtone_core::parts::{AudioCodec, AudioDecoder, AudioEncoder, CodecDescriptor, EncoderSettings};
use dialtone_core::registry::{Registry, RegistryError};
use dialtone_core::{ErrorCode, VoiceError};

/// Encodes one sample to µ-law.
#[inline]
pub fn ulaw_encode(x: i16) -> u8 {
    // 14-bit magnitude, one's complement for negatives, plus the bias of 33.
    let mag = (if x < 0 { (!x) >> 2 } else { x >> 2 }) as u16;
    let absno = (mag + 33).min(0x1FFF);
    // segment number 1..=8: one more than the bit length of absno >> 6
    let segno = 1 + (16 - (absno >> 6).leading_zeros()) as u16;
    let high = 8 - segno;
    let low = 0x0F - ((absno >> segno) & 0x0F);
    let code = ((high << 4) | low) as u8;
    if x >= 0 {
        code | 0x80
    } else {
        code
    }
}

/// Decodes one µ-law byte.
#[inline]
pub fn ulaw_decode(code: u8) -> i16 {
    ULAW_TABLE[code as usize]
}

/// Encodes one sample to A-law.
#[inline]
pub fn alaw_encode(x: i16) -> u8 {
    // 12-bit magnitude, one's complement for negatives.
    let mag = (if x < 0 { (!x) >> 4 } else { x >> 4 }) as u16;
    let code = (if mag < 32 {
        mag
    } else {
        // segment 2..=7: the bit length of mag minus 4
        let seg = 16 - mag.leading_zeros() as u16 - 4;
        (seg << 4) | ((mag >> (seg - 1)) & 0x0F)
    }) as u8;
    let signed = if x >= 0 { code | 0x80 } else { code };
    signed ^ 0x55
}

/// Decodes one A-law byte.
#[inline]
pub fn alaw_decode(code: u8) -> i16 {
    ALAW_TABLE[code as usize]
}

const fn ulaw_expand(code: u8) -> i16 {
    let m = !code;
    let exponent = (m >> 4) & 0x07;
    let mantissa = (m & 0x0F) as i32;
    let step = 4i32 << (exponent + 1);
    let magnitude = (0x80i32 << exponent) + step * mantissa + step / 2 - 4 * 33;
    (if code < 0x80 { -magnitude } else { magnitude }) as i16
}

const fn alaw_expand(code: u8) -> i16 {
    let ix = (code ^ 0x55) & 0x7F;
    let exponent = ix >> 4;
    let mut mantissa = (ix & 0x0F) as i32;
    if exponent > 0 {
        mantissa += 16;
    }
    mantissa = (mantissa << 4) + 8;
    if exponent > 1 {
        mantissa <<= exponent - 1;
    }
    (if code > 127 { mantissa } else { -mantissa }) as i16
}

macro_rules! table {
    ($expand:ident) => {{
        let mut t = [0i16; 256];
        let mut i = 0;
        while i < 256 {
            t[i] = $expand(i as u8);
            i += 1;
        }
        t
    }};
}

static ULAW_TABLE: [i16; 256] = table!(ulaw_expand);
static ALAW_TABLE: [i16; 256] = table!(alaw_expand);

/// Which G.711 law.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Law {
    /// µ-law, `PCMU`.
    Mu,
    /// A-law, `PCMA`.
    A,
}

/// A G.711 codec.
#[derive(Debug, Clone)]
pub struct G711 {
    law: Law,
    descriptor: CodecDescriptor,
}

impl G711 {
    /// The codec for `law`.
    pub fn new(law: Law) -> Self {
        let descriptor = match law {
            Law::Mu => CodecDescriptor::new("PCMU", 8000, 8000, 1).with_payload_type(0),
            Law::A => CodecDescriptor::new("PCMA", 8000, 8000, 1).with_payload_type(8),
        };
        G711 { law, descriptor }
    }
}

impl AudioCodec for G711 {
    fn descriptor(&self) -> &CodecDescriptor {
        &self.descriptor
    }

    fn new_encoder(&self, _: &EncoderSettings) -> Result<Box<dyn AudioEncoder>, VoiceError> {
        Ok(Box::new(Encoder { law: self.law }))
    }

    fn new_decoder(&self) -> Result<Box<dyn AudioDecoder>, VoiceError> {
        Ok(Box::new(Decoder { law: self.law, last: Vec::new(), losses: 0 }))
    }
}

fn too_small(need: usize, have: usize) -> VoiceError {
    VoiceError::new(ErrorCode::UnknownError, format!("G.711 needs {need} samples of room, has {have}"))
}

struct Encoder {
    law: Law,
}

impl AudioEncoder for Encoder {
    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, VoiceError> {
        let room = out.len();
        let out = out.get_mut(..pcm.len()).ok_or_else(|| too_small(pcm.len(), room))?;
        let f = if self.law == Law::Mu { ulaw_encode } else { alaw_encode };
        for (o, &x) in out.iter_mut().zip(pcm) {
            *o = f(x);
        }
        Ok(pcm.len())
    }
}

struct Decoder {
    law: Law,
    last: Vec<i16>,
    losses: u32,
}

impl AudioDecoder for Decoder {
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, VoiceError> {
        let room = out.len();
        let out = out.get_mut(..payload.len()).ok_or_else(|| too_small(payload.len(), room))?;
        let t = if self.law == Law::Mu { &ULAW_TABLE } else { &ALAW_TABLE };
        for (o, &b) in out.iter_mut().zip(payload) {
            *o = t[b as usize];
        }
        self.last.clear();
        self.last.extend_from_slice(out);
        self.losses = 0;
        Ok(payload.len())
    }

    fn conceal(&mut self, out: &mut [i16]) -> Result<usize, VoiceError> {
        let n = if self.last.is_empty() { out.len().min(160) } else { self.last.len().min(out.len()) };
        self.losses += 1;
        let shift = self.losses.min(15);
        for (i, o) in out[..n].iter_mut().enumerate() {
            *o = if self.losses > 4 { 0 } else { self.last.get(i).map_or(0, |&s| s >> shift) };
        }
        Ok(n)
    }
}

/// Registers `PCMU` and `PCMA`.
pub fn register(registry: &mut Registry) -> Result<(), RegistryError> {
    registry.register::<dyn AudioCodec>("PCMU", |_| Ok(Arc::new(G711::new(Law::Mu))))?;
    registry.register::<dyn AudioCodec>("PCMA", |_| Ok(Arc::new(G711::new(Law::A))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_values() {
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(ulaw_encode(-1), 0x7F);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(alaw_encode(-1), 0x55);
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xAA), 32256);
        assert_eq!(alaw_decode(0x2A), -32256);
    }

    #[test]
    fn codec_round_trip_and_concealment() {
        let codec = G711::new(Law::Mu);
        assert_eq!(codec.descriptor().samples_per_packet(), 160);
        let mut enc = codec.new_encoder(&EncoderSettings::default()).unwrap();
        let mut dec = codec.new_decoder().unwrap();
        let pcm: Vec<i16> = (0..160).map(|i| ((i as f64 * 0.2).sin() * 8000.0) as i16).collect();
        let mut payload = [0u8; 160];
        assert_eq!(enc.encode(&pcm, &mut payload).unwrap(), 160);
        let mut out = [0i16; 160];
        assert_eq!(dec.decode(&payload, &mut out).unwrap(), 160);
        let err: i64 =
            pcm.iter().zip(&out).map(|(a, b)| (i64::from(*a) - i64::from(*b)).abs()).max().unwrap();
        assert!(err <= 128, "max error {err}");
        let mut plc = [0i16; 160];
        dec.conceal(&mut plc).unwrap();
        assert_eq!(plc[10], out[10] >> 1);
        for _ in 0..4 {
            dec.conceal(&mut plc).unwrap();
        }
        assert!(plc.iter().all(|&s| s == 0));
        assert!(enc.encode(&pcm, &mut [0u8; 10]).is_err(), "a short buffer is an error, not a panic");
    }
}

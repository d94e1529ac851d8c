//! G.722 as a Dialtone codec plugin, and the walkthrough of `plugins/README.md`.
//!
//! The codec (in [`codec`]) is plain safe Rust; [`G722`] describes it through
//! [`PluginCodec`]; `export_codec!(G722)` exports it through the C ABI. Built as a
//! `cdylib`, the library loads with `[[plugins]] path = ".../libdialtone_plugin_g722.so"`
//! and is negotiated in SDP as `G722/8000` (payload type 9): RFC 3551 keeps the 8000 Hz
//! RTP clock of the first G.722 RTP profile although the audio is sampled at 16 kHz.

pub mod codec;

use std::ffi::CStr;

use dialtone_plugin_abi::ffi::DtEncoderSettings;
use dialtone_plugin_abi::{export_codec, PluginCodec, PluginDecoder, PluginEncoder};

/// The G.722 plugin codec at 64 kbit/s.
pub struct G722;

/// The plugin's encoder.
pub struct Encoder {
    inner: codec::Encoder,
    buf: Vec<u8>,
}

/// The plugin's decoder, with a simple concealment: the last frame again, fading.
pub struct Decoder {
    inner: codec::Decoder,
    buf: Vec<i16>,
    last: Vec<i16>,
    losses: u32,
}

impl PluginCodec for G722 {
    const NAME: &'static CStr = c"G722";
    const VERSION: &'static CStr = c"0.1.0";
    const SAMPLE_RATE: u32 = 16_000;
    const CLOCK_RATE: u32 = 8000;
    const PAYLOAD_TYPE: Option<u8> = Some(9);
    type Encoder = Encoder;
    type Decoder = Decoder;

    fn new_encoder(settings: &DtEncoderSettings) -> Result<Encoder, String> {
        if settings.bitrate != 0 && settings.bitrate != 64_000 {
            return Err(format!("G.722 here runs at 64000 bit/s, not {}", settings.bitrate));
        }
        Ok(Encoder { inner: codec::Encoder::new(), buf: Vec::with_capacity(160) })
    }

    fn new_decoder() -> Result<Decoder, String> {
        Ok(Decoder {
            inner: codec::Decoder::new(),
            buf: Vec::with_capacity(320),
            last: Vec::new(),
            losses: 0,
        })
    }
}

impl PluginEncoder for Encoder {
    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, String> {
        if pcm.len() % 2 != 0 {
            return Err(format!("G.722 takes pairs of samples; got {}", pcm.len()));
        }
        self.buf.clear();
        self.inner.encode(pcm, &mut self.buf);
        let out = out.get_mut(..self.buf.len()).ok_or("the output buffer is too small")?;
        out.copy_from_slice(&self.buf);
        Ok(self.buf.len())
    }
}

impl PluginDecoder for Decoder {
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, String> {
        self.buf.clear();
        self.inner.decode(payload, &mut self.buf);
        let out = out.get_mut(..self.buf.len()).ok_or("the output buffer is too small")?;
        out.copy_from_slice(&self.buf);
        self.last.clone_from(&self.buf);
        self.losses = 0;
        Ok(self.buf.len())
    }

    fn conceal(&mut self, out: &mut [i16]) -> Result<usize, String> {
        self.losses += 1;
        let n = out.len().min(if self.last.is_empty() { 320 } else { self.last.len() });
        for (i, o) in out[..n].iter_mut().enumerate() {
            *o = if self.losses > 4 { 0 } else { self.last.get(i).map_or(0, |&s| s >> self.losses) };
        }
        Ok(n)
    }
}

export_codec!(G722);

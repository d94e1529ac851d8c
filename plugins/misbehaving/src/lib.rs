//! A codec plugin that misbehaves on purpose, so the host's containment is tested
//! against a real library: "X-DT-MISBEHAVING" is L16 at 8 kHz whose encoder panics
//! when the first sample is 12345 and whose decoder fails on every payload whose first
//! byte is 0xEE. With `DIALTONE_MISBEHAVING_BREAK_AFTER=N` set, the first decoder the
//! process creates fails every payload after its first N (a codec that breaks for good
//! mid-call, for the renegotiation test). Not for use in calls.

use std::ffi::CStr;

use dialtone_plugin_abi::ffi::DtEncoderSettings;
use dialtone_plugin_abi::{export_codec, PluginCodec, PluginDecoder, PluginEncoder};

/// The misbehaving codec.
pub struct Misbehaving;
/// Its encoder.
pub struct Enc;
/// Its decoder.
pub struct Dec {
    /// Payloads left before it breaks for good (`None`: never).
    breaks_after: Option<u32>,
}

static BREAKER_TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl PluginCodec for Misbehaving {
    const NAME: &'static CStr = c"X-DT-MISBEHAVING";
    const VERSION: &'static CStr = c"0.0.1";
    const SAMPLE_RATE: u32 = 8000;
    const CLOCK_RATE: u32 = 8000;
    type Encoder = Enc;
    type Decoder = Dec;
    fn new_encoder(_: &DtEncoderSettings) -> Result<Enc, String> {
        Ok(Enc)
    }
    fn new_decoder() -> Result<Dec, String> {
        let n = std::env::var("DIALTONE_MISBEHAVING_BREAK_AFTER").ok().and_then(|v| v.parse().ok());
        let breaks_after = n.filter(|_| !BREAKER_TAKEN.swap(true, std::sync::atomic::Ordering::SeqCst));
        Ok(Dec { breaks_after })
    }
}

impl PluginEncoder for Enc {
    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, String> {
        if pcm.first() == Some(&12345) {
            panic!("the misbehaving plugin panics on 12345");
        }
        let out = out.get_mut(..pcm.len() * 2).ok_or("too small")?;
        for (o, s) in out.chunks_exact_mut(2).zip(pcm) {
            o.copy_from_slice(&s.to_be_bytes());
        }
        Ok(pcm.len() * 2)
    }
}

impl PluginDecoder for Dec {
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, String> {
        if payload.first() == Some(&0xEE) {
            return Err("the misbehaving plugin refuses 0xEE".into());
        }
        if let Some(left) = self.breaks_after.as_mut() {
            if *left == 0 {
                return Err("the misbehaving plugin broke for good".into());
            }
            *left -= 1;
        }
        let n = payload.len() / 2;
        let out = out.get_mut(..n).ok_or("too small")?;
        for (o, b) in out.iter_mut().zip(payload.chunks_exact(2)) {
            *o = i16::from_be_bytes([b[0], b[1]]);
        }
        Ok(n)
    }
}

export_codec!(Misbehaving);

//! The authoring side: a Rust plugin author implements [`PluginCodec`] with plain safe
//! code, and [`export_codec!`](crate::export_codec) exports it through the C ABI. The
//! generic `extern "C"` functions here are the only code that crosses the boundary:
//! they check every pointer and length, catch every panic and turn it into
//! `DT_ERR_PANIC` with its message, and never write past a capacity.
#![allow(unsafe_code)]

use std::ffi::{c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::ffi::{
    AudioApi, CodecApi, Descriptor, DtEncoderSettings, DtError, ABI_VERSION, DT_ERR_INTERNAL, DT_ERR_INVALID,
    DT_ERR_PANIC, DT_OK, KIND_CODEC,
};

/// A codec as a plugin author writes it.
pub trait PluginCodec: 'static {
    /// The SDP encoding name, which is also the registry name.
    const NAME: &'static CStr;
    /// The plugin's version.
    const VERSION: &'static CStr;
    /// The PCM rate.
    const SAMPLE_RATE: u32;
    /// The RTP clock rate.
    const CLOCK_RATE: u32;
    /// PCM channels.
    const CHANNELS: u32 = 1;
    /// Packet time.
    const PTIME_MS: u32 = 20;
    /// A static RTP payload type, if the codec has one.
    const PAYLOAD_TYPE: Option<u8> = None;
    /// SDP fmtp parameters.
    const FMTP: Option<&'static CStr> = None;
    /// The encoder.
    type Encoder: PluginEncoder;
    /// The decoder.
    type Decoder: PluginDecoder;
    /// A new encoder.
    fn new_encoder(settings: &DtEncoderSettings) -> Result<Self::Encoder, String>;
    /// A new decoder.
    fn new_decoder() -> Result<Self::Decoder, String>;
}

/// A plugin's encoder.
pub trait PluginEncoder {
    /// Encodes one packet of PCM; returns the payload length.
    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, String>;
}

/// A plugin's decoder.
pub trait PluginDecoder {
    /// Decodes one payload; returns the samples written.
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, String>;
    /// Conceals one lost packet; returns the samples written. By default the codec has
    /// no PLC and the host conceals with silence.
    fn conceal(&mut self, out: &mut [i16]) -> Result<usize, String> {
        let _ = out;
        Err("this codec has no packet loss concealment".into())
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

/// Runs `f`, turning an `Err` or a panic into a code and a message in `error`, which
/// by the ABI is null or the host's writable record (private: every caller passes the
/// pointer the host gave).
fn guarded(error: *mut DtError, f: impl FnOnce() -> Result<i32, (i32, String)>) -> i32 {
    let (code, message) = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(code)) => return code,
        Ok(Err(e)) => e,
        Err(p) => (DT_ERR_PANIC, format!("the plugin panicked: {}", panic_text(p.as_ref()))),
    };
    // SAFETY: null or the host's writable DtError, by the ABI.
    if let Some(e) = unsafe { error.as_mut() } {
        e.set(code, &message);
    }
    code
}

unsafe extern "C" fn encoder_new<C: PluginCodec>(
    settings: *const DtEncoderSettings,
    error: *mut DtError,
) -> *mut c_void {
    let mut handle = std::ptr::null_mut();
    guarded(error, || {
        // SAFETY: null or a valid DtEncoderSettings, by the ABI.
        let s = unsafe { settings.as_ref() }.copied().unwrap_or_default();
        let enc = C::new_encoder(&s).map_err(|m| (DT_ERR_INTERNAL, m))?;
        handle = Box::into_raw(Box::new(enc)).cast::<c_void>();
        Ok(DT_OK)
    });
    handle
}

unsafe extern "C" fn encoder_free<C: PluginCodec>(encoder: *mut c_void) {
    if !encoder.is_null() {
        // SAFETY: made by encoder_new::<C> from a Box<C::Encoder>, freed once by the host.
        let b = unsafe { Box::from_raw(encoder.cast::<C::Encoder>()) };
        let _ = catch_unwind(AssertUnwindSafe(move || drop(b)));
    }
}

unsafe extern "C" fn encode<C: PluginCodec>(
    encoder: *mut c_void,
    pcm: *const i16,
    pcm_len: usize,
    out: *mut u8,
    out_capacity: usize,
    out_len: *mut usize,
    error: *mut DtError,
) -> i32 {
    guarded(error, || {
        if encoder.is_null() || pcm.is_null() || out.is_null() || out_len.is_null() {
            return Err((DT_ERR_INVALID, "a null pointer".into()));
        }
        // SAFETY: non-null, and by the ABI: the encoder of encoder_new::<C>, pcm_len
        // readable samples, out_capacity writable bytes, a writable out_len.
        let (enc, pcm, out) = unsafe {
            (
                &mut *encoder.cast::<C::Encoder>(),
                std::slice::from_raw_parts(pcm, pcm_len),
                std::slice::from_raw_parts_mut(out, out_capacity),
            )
        };
        let n = enc.encode(pcm, out).map_err(|m| (DT_ERR_INTERNAL, m))?;
        // SAFETY: checked non-null above.
        unsafe { *out_len = n.min(out_capacity) };
        Ok(DT_OK)
    })
}

unsafe extern "C" fn decoder_new<C: PluginCodec>(error: *mut DtError) -> *mut c_void {
    let mut handle = std::ptr::null_mut();
    guarded(error, || {
        let dec = C::new_decoder().map_err(|m| (DT_ERR_INTERNAL, m))?;
        handle = Box::into_raw(Box::new(dec)).cast::<c_void>();
        Ok(DT_OK)
    });
    handle
}

unsafe extern "C" fn decoder_free<C: PluginCodec>(decoder: *mut c_void) {
    if !decoder.is_null() {
        // SAFETY: made by decoder_new::<C> from a Box<C::Decoder>, freed once by the host.
        let b = unsafe { Box::from_raw(decoder.cast::<C::Decoder>()) };
        let _ = catch_unwind(AssertUnwindSafe(move || drop(b)));
    }
}

unsafe extern "C" fn decode<C: PluginCodec>(
    decoder: *mut c_void,
    payload: *const u8,
    payload_len: usize,
    out: *mut i16,
    out_capacity: usize,
    out_len: *mut usize,
    error: *mut DtError,
) -> i32 {
    guarded(error, || {
        if decoder.is_null() || payload.is_null() || out.is_null() || out_len.is_null() {
            return Err((DT_ERR_INVALID, "a null pointer".into()));
        }
        // SAFETY: non-null, and by the ABI: the decoder of decoder_new::<C>,
        // payload_len readable bytes, out_capacity writable samples.
        let (dec, payload, out) = unsafe {
            (
                &mut *decoder.cast::<C::Decoder>(),
                std::slice::from_raw_parts(payload, payload_len),
                std::slice::from_raw_parts_mut(out, out_capacity),
            )
        };
        let n = dec.decode(payload, out).map_err(|m| (DT_ERR_INVALID, m))?;
        // SAFETY: checked non-null above.
        unsafe { *out_len = n.min(out_capacity) };
        Ok(DT_OK)
    })
}

unsafe extern "C" fn conceal<C: PluginCodec>(
    decoder: *mut c_void,
    out: *mut i16,
    out_capacity: usize,
    out_len: *mut usize,
    error: *mut DtError,
) -> i32 {
    guarded(error, || {
        if decoder.is_null() || out.is_null() || out_len.is_null() {
            return Err((DT_ERR_INVALID, "a null pointer".into()));
        }
        // SAFETY: non-null; by the ABI the decoder of decoder_new::<C> and
        // out_capacity writable samples.
        let (dec, out) = unsafe {
            (&mut *decoder.cast::<C::Decoder>(), std::slice::from_raw_parts_mut(out, out_capacity))
        };
        let n = dec.conceal(out).map_err(|m| (DT_ERR_INTERNAL, m))?;
        // SAFETY: checked non-null above.
        unsafe { *out_len = n.min(out_capacity) };
        Ok(DT_OK)
    })
}

/// The descriptor of codec `C`, for [`export_codec!`](crate::export_codec).
pub const fn codec_descriptor<C: PluginCodec>() -> Descriptor {
    Descriptor {
        abi_version: ABI_VERSION,
        struct_size: std::mem::size_of::<Descriptor>() as u32,
        kind: KIND_CODEC,
        reserved: 0,
        name: C::NAME.as_ptr(),
        version: C::VERSION.as_ptr(),
        sample_rate: C::SAMPLE_RATE,
        clock_rate: C::CLOCK_RATE,
        channels: C::CHANNELS,
        ptime_ms: C::PTIME_MS,
        payload_type: match C::PAYLOAD_TYPE {
            Some(pt) => pt as i32,
            None => -1,
        },
        reserved2: 0,
        fmtp: match C::FMTP {
            Some(f) => f.as_ptr(),
            None => std::ptr::null(),
        },
        codec: CodecApi {
            encoder_new: Some(encoder_new::<C>),
            encoder_free: Some(encoder_free::<C>),
            encode: Some(encode::<C>),
            decoder_new: Some(decoder_new::<C>),
            decoder_free: Some(decoder_free::<C>),
            decode: Some(decode::<C>),
            conceal: Some(conceal::<C>),
        },
        audio: AudioApi::NONE,
    }
}

/// Exports a [`PluginCodec`] as this library's plugin:
///
/// ```text
/// struct G722;
/// impl dialtone_plugin_abi::PluginCodec for G722 { /* ... */ }
/// dialtone_plugin_abi::export_codec!(G722);
/// ```
///
/// The crate must be a `cdylib` and must not `forbid(unsafe_code)`: the exported
/// symbol is `#[no_mangle]`, which is the one unsafe thing the macro writes.
#[macro_export]
macro_rules! export_codec {
    ($codec:ty) => {
        /// The plugin's descriptor (the Dialtone plugin C ABI).
        #[allow(unsafe_code)]
        #[no_mangle]
        pub extern "C" fn dialtone_plugin_descriptor() -> *const $crate::ffi::Descriptor {
            static DESCRIPTOR: $crate::ffi::StaticDescriptor =
                $crate::ffi::StaticDescriptor($crate::authoring::codec_descriptor::<$codec>());
            &DESCRIPTOR.0
        }
    };
}

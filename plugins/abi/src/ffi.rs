//! The `#[repr(C)]` mirror of `include/dialtone_plugin.h`. Only C types: integers,
//! raw pointers and nullable function pointers. The layout test in `host.rs` and the
//! C plugin of `tests/` keep the two in step.

use std::ffi::{c_char, c_void};

/// The ABI version this crate speaks.
pub const ABI_VERSION: u32 = 1;
/// The exported symbol.
pub const DESCRIPTOR_SYMBOL: &[u8] = b"dialtone_plugin_descriptor";

/// A codec plugin.
pub const KIND_CODEC: u32 = 1;
/// An audio backend plugin.
pub const KIND_AUDIO_BACKEND: u32 = 2;

/// Success.
pub const DT_OK: i32 = 0;
/// No frame yet (audio capture).
pub const DT_NOT_READY: i32 = 1;
/// Bad input.
pub const DT_ERR_INVALID: i32 = -1;
/// The plugin caught a panic of its own.
pub const DT_ERR_PANIC: i32 = -2;
/// Any other failure.
pub const DT_ERR_INTERNAL: i32 = -3;
/// A buffer is too small.
pub const DT_ERR_BUFFER: i32 = -4;

/// The room of an error message.
pub const ERROR_MESSAGE_MAX: usize = 256;

/// `dt_error`: a failure's code and message, owned by the host.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DtError {
    /// The code (negative).
    pub code: i32,
    /// Bytes of `message` used.
    pub message_len: u32,
    /// UTF-8, not necessarily NUL-terminated.
    pub message: [u8; ERROR_MESSAGE_MAX],
}

impl DtError {
    /// An empty error record.
    pub fn empty() -> Self {
        DtError { code: 0, message_len: 0, message: [0; ERROR_MESSAGE_MAX] }
    }

    /// Writes `code` and as much of `message` as fits (cut at a character boundary).
    pub fn set(&mut self, code: i32, message: &str) {
        let mut n = message.len().min(ERROR_MESSAGE_MAX);
        while !message.is_char_boundary(n) {
            n -= 1;
        }
        self.code = code;
        self.message[..n].copy_from_slice(&message.as_bytes()[..n]);
        self.message_len = n as u32;
    }

    /// The message, as much of it as is valid UTF-8 and in bounds.
    pub fn message(&self) -> String {
        let n = (self.message_len as usize).min(ERROR_MESSAGE_MAX);
        String::from_utf8_lossy(&self.message[..n]).into_owned()
    }
}

/// `dt_encoder_settings`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DtEncoderSettings {
    /// bit/s; 0 is the codec's default.
    pub bitrate: u32,
    /// 0-10; 255 is the codec's default.
    pub complexity: u32,
    /// FEC on.
    pub fec: u8,
    /// DTX on.
    pub dtx: u8,
    /// Zero.
    pub reserved: [u8; 2],
}

/// `dt_codec_api`.
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(missing_docs)]
pub struct CodecApi {
    pub encoder_new: Option<unsafe extern "C" fn(*const DtEncoderSettings, *mut DtError) -> *mut c_void>,
    pub encoder_free: Option<unsafe extern "C" fn(*mut c_void)>,
    pub encode: Option<
        unsafe extern "C" fn(*mut c_void, *const i16, usize, *mut u8, usize, *mut usize, *mut DtError) -> i32,
    >,
    pub decoder_new: Option<unsafe extern "C" fn(*mut DtError) -> *mut c_void>,
    pub decoder_free: Option<unsafe extern "C" fn(*mut c_void)>,
    pub decode: Option<
        unsafe extern "C" fn(*mut c_void, *const u8, usize, *mut i16, usize, *mut usize, *mut DtError) -> i32,
    >,
    pub conceal: Option<unsafe extern "C" fn(*mut c_void, *mut i16, usize, *mut usize, *mut DtError) -> i32>,
}

/// `dt_audio_backend_api`.
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(missing_docs)]
pub struct AudioApi {
    pub open_capture: Option<unsafe extern "C" fn(*const c_char, u32, u32, u32, *mut DtError) -> *mut c_void>,
    pub read_frame: Option<unsafe extern "C" fn(*mut c_void, *mut i16, usize, *mut DtError) -> i32>,
    pub open_render: Option<unsafe extern "C" fn(*const c_char, u32, u32, u32, *mut DtError) -> *mut c_void>,
    pub write_frame: Option<unsafe extern "C" fn(*mut c_void, *const i16, usize, *mut DtError) -> i32>,
    pub close: Option<unsafe extern "C" fn(*mut c_void)>,
}

impl AudioApi {
    /// No functions (a codec plugin's audio part).
    pub const NONE: AudioApi =
        AudioApi { open_capture: None, read_frame: None, open_render: None, write_frame: None, close: None };
}

/// `dt_plugin_descriptor`.
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(missing_docs)]
pub struct Descriptor {
    pub abi_version: u32,
    pub struct_size: u32,
    pub kind: u32,
    pub reserved: u32,
    pub name: *const c_char,
    pub version: *const c_char,
    pub sample_rate: u32,
    pub clock_rate: u32,
    pub channels: u32,
    pub ptime_ms: u32,
    pub payload_type: i32,
    pub reserved2: u32,
    pub fmtp: *const c_char,
    pub codec: CodecApi,
    pub audio: AudioApi,
}

/// A descriptor in a `static`: it holds only pointers to `'static` data and
/// functions, so sharing it between threads is sound.
#[repr(transparent)]
pub struct StaticDescriptor(pub Descriptor);

// SAFETY: the pointers in a StaticDescriptor point at 'static, immutable C strings and
// at functions; nothing is ever written through them.
#[allow(unsafe_code)]
unsafe impl Sync for StaticDescriptor {}

//! The host loader, the only code in Dialtone that uses `libloading`. It opens a
//! plugin, checks its descriptor (ABI version first, then struct size, kind, name and
//! the required functions) and adapts it into the core traits, so the registry, SDP
//! negotiation and the media pipeline treat it like a built-in part. Every adapter
//! holds the library, so a library stays loaded while anything from it is alive.
//!
//! Nothing a plugin returns is trusted: lengths past a capacity, null handles and
//! error codes become [`VoiceError`]s naming the plugin; a refused plugin is a
//! [`PluginError`] naming the file and the reason, and the other plugins still load.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dialtone_core::config::PluginConfig;
use dialtone_core::parts::{
    AudioBackend, AudioCapturer, AudioCodec, AudioDecoder, AudioDeviceInfo, AudioEncoder, AudioFormat,
    AudioRenderer, CodecDescriptor, EncoderSettings,
};
use dialtone_core::registry::Registry;
use dialtone_core::{ErrorCode, VoiceError};
use libloading::Library;

use crate::ffi::{
    AudioApi, CodecApi, Descriptor, DtEncoderSettings, DtError, ABI_VERSION, DESCRIPTOR_SYMBOL, DT_NOT_READY,
    DT_OK, KIND_AUDIO_BACKEND, KIND_CODEC,
};

/// Why a plugin was refused.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    /// The file could not be loaded as a library.
    #[error("plugin {path}: cannot load the library: {reason}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The loader's words.
        reason: String,
    },
    /// The file is not a Dialtone plugin, or its descriptor is unusable.
    #[error("plugin {path}: {reason}")]
    Refused {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl PluginError {
    fn refused(path: &Path, reason: impl Into<String>) -> Self {
        PluginError::Refused { path: path.to_owned(), reason: reason.into() }
    }
}

impl From<PluginError> for VoiceError {
    fn from(e: PluginError) -> Self {
        VoiceError::new(ErrorCode::UnknownError, e.to_string())
    }
}

/// What a plugin is.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PluginKind {
    /// An audio codec.
    Codec,
    /// An audio backend.
    AudioBackend,
}

/// A loaded and checked plugin.
pub struct LoadedPlugin {
    lib: Arc<Library>,
    desc: Descriptor,
    path: PathBuf,
    name: String,
    version: String,
    kind: PluginKind,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("path", &self.path)
            .field("name", &self.name)
            .field("version", &self.version)
            .field("kind", &self.kind)
            .finish()
    }
}

/// Reads a C string the plugin gave, if it is non-null UTF-8.
///
/// # Safety
/// `p` is null or points to a NUL-terminated string that outlives the call.
unsafe fn c_str(p: *const c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null, and NUL-terminated by the caller's promise.
    unsafe { CStr::from_ptr(p) }.to_str().ok().map(str::to_owned)
}

/// Loads and checks the plugin at `path`.
pub fn load(path: &Path) -> Result<LoadedPlugin, PluginError> {
    // SAFETY: loading a library runs its initializers; plugins are code the operator
    // chose in configuration, which is the trust this ABI rests on.
    let lib = unsafe { Library::new(path) }
        .map_err(|e| PluginError::Open { path: path.to_owned(), reason: e.to_string() })?;
    // SAFETY: the symbol's type is the ABI's: a function taking nothing and returning
    // a pointer to the descriptor.
    let get = unsafe { lib.get::<unsafe extern "C" fn() -> *const Descriptor>(DESCRIPTOR_SYMBOL) }.map_err(
        |_| {
            PluginError::refused(
                path,
                "it exports no dialtone_plugin_descriptor: it is not a Dialtone plugin",
            )
        },
    )?;
    // SAFETY: calling the plugin's descriptor function, as the ABI defines it.
    let ptr = unsafe { get() };
    if ptr.is_null() {
        return Err(PluginError::refused(path, "dialtone_plugin_descriptor returned NULL"));
    }
    // Read the version alone first: a plugin of another version may have another layout.
    // SAFETY: every version of the descriptor begins with the u32 ABI version.
    let abi = unsafe { std::ptr::read_unaligned(ptr.cast::<u32>()) };
    if abi != ABI_VERSION {
        return Err(PluginError::refused(
            path,
            format!("it was built for plugin ABI version {abi}; this host speaks version {ABI_VERSION}"),
        ));
    }
    // SAFETY: version 1 descriptors have their u32 size right after the version.
    let size = unsafe { std::ptr::read_unaligned(ptr.cast::<u32>().add(1)) };
    let ours = std::mem::size_of::<Descriptor>();
    if (size as usize) < ours {
        return Err(PluginError::refused(
            path,
            format!(
                "its descriptor is {size} bytes, smaller than the {ours} bytes of ABI version {ABI_VERSION}"
            ),
        ));
    }
    // SAFETY: the plugin says (size >= ours) that at least a whole Descriptor is there;
    // the copy does not outlive the library (it is kept with it).
    let desc = unsafe { std::ptr::read_unaligned(ptr) };
    // SAFETY: the ABI says name and version are NUL-terminated strings that live as
    // long as the library.
    let (name, version) = unsafe { (c_str(desc.name), c_str(desc.version)) };
    let name = name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| PluginError::refused(path, "its name is missing or not UTF-8"))?;
    let version = version.unwrap_or_default();
    let kind = match desc.kind {
        KIND_CODEC => PluginKind::Codec,
        KIND_AUDIO_BACKEND => PluginKind::AudioBackend,
        k => return Err(PluginError::refused(path, format!("unknown plugin kind {k}"))),
    };
    let missing =
        |what: &str| PluginError::refused(path, format!("{name}: the required function {what} is missing"));
    match kind {
        PluginKind::Codec => {
            let c = &desc.codec;
            for (f, n) in [
                (c.encoder_new.is_none(), "encoder_new"),
                (c.encoder_free.is_none(), "encoder_free"),
                (c.encode.is_none(), "encode"),
                (c.decoder_new.is_none(), "decoder_new"),
                (c.decoder_free.is_none(), "decoder_free"),
                (c.decode.is_none(), "decode"),
            ] {
                if f {
                    return Err(missing(n));
                }
            }
            if !(8000..=48_000).contains(&desc.sample_rate)
                || !(1..=2).contains(&desc.channels)
                || desc.clock_rate == 0
                || !matches!(desc.ptime_ms, 10 | 20 | 30 | 40 | 60)
                || desc.payload_type > 127
            {
                return Err(PluginError::refused(
                    path,
                    format!(
                        "{name}: unusable codec parameters (rate {}, clock {}, channels {}, ptime {}, payload type {})",
                        desc.sample_rate, desc.clock_rate, desc.channels, desc.ptime_ms, desc.payload_type
                    ),
                ));
            }
        }
        PluginKind::AudioBackend => {
            let a = &desc.audio;
            for (f, n) in [
                (a.open_capture.is_none(), "open_capture"),
                (a.read_frame.is_none(), "read_frame"),
                (a.open_render.is_none(), "open_render"),
                (a.write_frame.is_none(), "write_frame"),
                (a.close.is_none(), "close"),
            ] {
                if f {
                    return Err(missing(n));
                }
            }
        }
    }
    tracing::info!(path = %path.display(), name, version, ?kind, "plugin loaded");
    Ok(LoadedPlugin { lib: Arc::new(lib), desc, path: path.to_owned(), name, version, kind })
}

impl LoadedPlugin {
    /// The registry name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plugin's own version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The file it came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What it is.
    pub fn kind(&self) -> PluginKind {
        self.kind
    }

    /// The codec, if it is a codec plugin.
    pub fn codec(&self) -> Option<Arc<dyn AudioCodec>> {
        (self.kind == PluginKind::Codec).then(|| {
            // SAFETY: the ABI says fmtp is NULL or a NUL-terminated string living as
            // long as the library, which the adapter holds.
            let fmtp = unsafe { c_str(self.desc.fmtp) };
            let mut d = CodecDescriptor::new(
                &self.name,
                self.desc.sample_rate,
                self.desc.clock_rate,
                self.desc.channels as u8,
            );
            d.ptime_ms = self.desc.ptime_ms;
            d.fmtp = fmtp;
            d.payload_type = u8::try_from(self.desc.payload_type).ok();
            Arc::new(PluginCodecAdapter { lib: self.lib.clone(), api: self.desc.codec, descriptor: d })
                as Arc<dyn AudioCodec>
        })
    }

    /// The audio backend, if it is an audio backend plugin.
    pub fn audio_backend(&self) -> Option<Arc<dyn AudioBackend>> {
        (self.kind == PluginKind::AudioBackend).then(|| {
            Arc::new(PluginAudioAdapter {
                lib: self.lib.clone(),
                api: self.desc.audio,
                name: self.name.clone(),
            }) as Arc<dyn AudioBackend>
        })
    }

    /// Registers the plugin's part in `registry` under its name.
    pub fn register(&self, registry: &mut Registry) -> Result<(), PluginError> {
        let refused = |e: dialtone_core::RegistryError| PluginError::refused(&self.path, e.to_string());
        match self.kind {
            PluginKind::Codec => {
                let codec = self.codec().ok_or_else(|| PluginError::refused(&self.path, "not a codec"))?;
                registry.register::<dyn AudioCodec>(&self.name, move |_| Ok(codec.clone())).map_err(refused)
            }
            PluginKind::AudioBackend => {
                let backend =
                    self.audio_backend().ok_or_else(|| PluginError::refused(&self.path, "not a backend"))?;
                registry
                    .register::<dyn AudioBackend>(&self.name, move |_| Ok(backend.clone()))
                    .map_err(refused)
            }
        }
    }
}

/// Whether `path` looks like a shared library of this platform.
fn is_library(path: &Path) -> bool {
    matches!(path.extension().and_then(|e| e.to_str()), Some("so" | "dylib" | "dll"))
}

/// Loads every plugin the `[[plugins]]` configuration names (files, and the libraries
/// in named directories, in name order) and registers it. Returns one outcome per
/// library: its name, or why it was refused. A refused plugin does not stop the rest.
pub fn load_configured(
    registry: &mut Registry,
    plugins: &[PluginConfig],
) -> Vec<Result<String, PluginError>> {
    let mut files = Vec::new();
    for p in plugins {
        if let Some(path) = &p.path {
            files.push(path.clone());
        }
        if let Some(dir) = &p.dir {
            match std::fs::read_dir(dir) {
                Ok(entries) => {
                    let mut found: Vec<PathBuf> =
                        entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| is_library(p)).collect();
                    found.sort();
                    files.extend(found);
                }
                Err(e) => files.push(dir.join(format!("<unreadable directory: {e}>"))),
            }
        }
    }
    files
        .into_iter()
        .map(|path| {
            let outcome = load(&path).and_then(|p| p.register(registry).map(|()| p.name().to_owned()));
            if let Err(e) = &outcome {
                tracing::debug!("{e}");
            }
            outcome
        })
        .collect()
}

fn plugin_error(name: &str, what: &str, code: i32, err: &DtError) -> VoiceError {
    let msg = err.message();
    let detail = if msg.is_empty() { String::new() } else { format!(": {msg}") };
    VoiceError::new(ErrorCode::UnknownError, format!("plugin {name}: {what} failed with code {code}{detail}"))
}

struct PluginCodecAdapter {
    lib: Arc<Library>,
    api: CodecApi,
    descriptor: CodecDescriptor,
}

impl AudioCodec for PluginCodecAdapter {
    fn descriptor(&self) -> &CodecDescriptor {
        &self.descriptor
    }

    fn new_encoder(&self, settings: &EncoderSettings) -> Result<Box<dyn AudioEncoder>, VoiceError> {
        let s = DtEncoderSettings {
            bitrate: settings.bitrate.unwrap_or(0),
            complexity: settings.complexity.map_or(255, u32::from),
            fec: u8::from(settings.fec),
            dtx: u8::from(settings.dtx),
            reserved: [0; 2],
        };
        let mut err = DtError::empty();
        let f =
            self.api.encoder_new.ok_or_else(|| VoiceError::new(ErrorCode::UnknownError, "no encoder_new"))?;
        // SAFETY: checked present at load; valid settings and error records.
        let handle = unsafe { f(&s, &mut err) };
        if handle.is_null() {
            return Err(plugin_error(&self.descriptor.name, "encoder_new", err.code, &err));
        }
        Ok(Box::new(PluginEncoder {
            _lib: self.lib.clone(),
            api: self.api,
            handle,
            name: self.descriptor.name.clone(),
        }))
    }

    fn new_decoder(&self) -> Result<Box<dyn AudioDecoder>, VoiceError> {
        let mut err = DtError::empty();
        let f =
            self.api.decoder_new.ok_or_else(|| VoiceError::new(ErrorCode::UnknownError, "no decoder_new"))?;
        // SAFETY: checked present at load; a valid error record.
        let handle = unsafe { f(&mut err) };
        if handle.is_null() {
            return Err(plugin_error(&self.descriptor.name, "decoder_new", err.code, &err));
        }
        Ok(Box::new(PluginDecoder {
            _lib: self.lib.clone(),
            api: self.api,
            handle,
            name: self.descriptor.name.clone(),
        }))
    }
}

/// Checks a length a plugin reported against the capacity it was given.
fn reported(name: &str, what: &str, n: usize, capacity: usize) -> Result<usize, VoiceError> {
    if n > capacity {
        return Err(VoiceError::new(
            ErrorCode::UnknownError,
            format!("plugin {name}: {what} reported {n} items written into a buffer of {capacity}"),
        ));
    }
    Ok(n)
}

struct PluginEncoder {
    _lib: Arc<Library>,
    api: CodecApi,
    handle: *mut c_void,
    name: String,
}

// SAFETY: the ABI lets a handle be used from any thread, one call at a time; &mut self
// gives exactly that.
unsafe impl Send for PluginEncoder {}

impl AudioEncoder for PluginEncoder {
    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, VoiceError> {
        let (mut n, mut err) = (0usize, DtError::empty());
        let f = self.api.encode.ok_or_else(|| VoiceError::new(ErrorCode::UnknownError, "no encode"))?;
        // SAFETY: the handle is this plugin's live encoder; the slices are valid for
        // their lengths; n and err are writable.
        let rc =
            unsafe { f(self.handle, pcm.as_ptr(), pcm.len(), out.as_mut_ptr(), out.len(), &mut n, &mut err) };
        if rc != DT_OK {
            return Err(plugin_error(&self.name, "encode", rc, &err));
        }
        reported(&self.name, "encode", n, out.len())
    }
}

impl Drop for PluginEncoder {
    fn drop(&mut self) {
        if let Some(f) = self.api.encoder_free {
            // SAFETY: the handle came from encoder_new and is freed once, here.
            unsafe { f(self.handle) };
        }
    }
}

struct PluginDecoder {
    _lib: Arc<Library>,
    api: CodecApi,
    handle: *mut c_void,
    name: String,
}

// SAFETY: as for PluginEncoder.
unsafe impl Send for PluginDecoder {}

impl AudioDecoder for PluginDecoder {
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, VoiceError> {
        let (mut n, mut err) = (0usize, DtError::empty());
        let f = self.api.decode.ok_or_else(|| VoiceError::new(ErrorCode::UnknownError, "no decode"))?;
        // SAFETY: the handle is this plugin's live decoder; the slices are valid for
        // their lengths; n and err are writable.
        let rc = unsafe {
            f(self.handle, payload.as_ptr(), payload.len(), out.as_mut_ptr(), out.len(), &mut n, &mut err)
        };
        if rc != DT_OK {
            return Err(plugin_error(&self.name, "decode", rc, &err));
        }
        reported(&self.name, "decode", n, out.len())
    }

    fn conceal(&mut self, out: &mut [i16]) -> Result<usize, VoiceError> {
        let Some(f) = self.api.conceal else {
            out.fill(0);
            return Ok(out.len());
        };
        let (mut n, mut err) = (0usize, DtError::empty());
        // SAFETY: as for decode.
        let rc = unsafe { f(self.handle, out.as_mut_ptr(), out.len(), &mut n, &mut err) };
        if rc != DT_OK {
            // a codec without PLC of its own: the host conceals with silence
            out.fill(0);
            return Ok(out.len());
        }
        reported(&self.name, "conceal", n, out.len())
    }
}

impl Drop for PluginDecoder {
    fn drop(&mut self) {
        if let Some(f) = self.api.decoder_free {
            // SAFETY: the handle came from decoder_new and is freed once, here.
            unsafe { f(self.handle) };
        }
    }
}

struct PluginAudioAdapter {
    lib: Arc<Library>,
    api: AudioApi,
    name: String,
}

impl PluginAudioAdapter {
    fn open(
        &self,
        device: Option<&str>,
        format: AudioFormat,
        render: bool,
    ) -> Result<PluginStream, VoiceError> {
        let dev = CString::new(device.unwrap_or(""))
            .map_err(|_| VoiceError::new(ErrorCode::UnknownError, "a device name with a NUL byte"))?;
        let f = if render { self.api.open_render } else { self.api.open_capture };
        let f = f.ok_or_else(|| VoiceError::new(ErrorCode::UnknownError, "no open function"))?;
        let mut err = DtError::empty();
        // SAFETY: checked present at load; a NUL-terminated device name and a valid
        // error record.
        let handle = unsafe {
            f(dev.as_ptr(), format.sample_rate(), u32::from(format.channels()), format.frame_ms(), &mut err)
        };
        if handle.is_null() {
            let what = if render { "open_render" } else { "open_capture" };
            return Err(plugin_error(&self.name, what, err.code, &err));
        }
        Ok(PluginStream { _lib: self.lib.clone(), api: self.api, handle, format, name: self.name.clone() })
    }
}

impl AudioBackend for PluginAudioAdapter {
    fn devices(&self) -> Result<Vec<AudioDeviceInfo>, VoiceError> {
        Ok(vec![AudioDeviceInfo::new("default", true, true, true)])
    }

    fn open_capturer(
        &self,
        device: Option<&str>,
        format: AudioFormat,
    ) -> Result<Box<dyn AudioCapturer>, VoiceError> {
        Ok(Box::new(self.open(device, format, false)?))
    }

    fn open_renderer(
        &self,
        device: Option<&str>,
        format: AudioFormat,
    ) -> Result<Box<dyn AudioRenderer>, VoiceError> {
        Ok(Box::new(self.open(device, format, true)?))
    }
}

struct PluginStream {
    _lib: Arc<Library>,
    api: AudioApi,
    handle: *mut c_void,
    format: AudioFormat,
    name: String,
}

// SAFETY: as for PluginEncoder.
unsafe impl Send for PluginStream {}

impl AudioCapturer for PluginStream {
    fn format(&self) -> AudioFormat {
        self.format
    }

    fn read_frame(&mut self, frame: &mut [i16]) -> Result<bool, VoiceError> {
        let f =
            self.api.read_frame.ok_or_else(|| VoiceError::new(ErrorCode::UnknownError, "no read_frame"))?;
        let mut err = DtError::empty();
        // SAFETY: the live capture handle, a writable frame of its length, an error record.
        let rc = unsafe { f(self.handle, frame.as_mut_ptr(), frame.len(), &mut err) };
        match rc {
            DT_OK => Ok(true),
            DT_NOT_READY => Ok(false),
            code => Err(plugin_error(&self.name, "read_frame", code, &err)),
        }
    }
}

impl AudioRenderer for PluginStream {
    fn format(&self) -> AudioFormat {
        self.format
    }

    fn write_frame(&mut self, frame: &[i16]) -> Result<(), VoiceError> {
        let f =
            self.api.write_frame.ok_or_else(|| VoiceError::new(ErrorCode::UnknownError, "no write_frame"))?;
        let mut err = DtError::empty();
        // SAFETY: the live render handle, a readable frame of its length, an error record.
        let rc = unsafe { f(self.handle, frame.as_ptr(), frame.len(), &mut err) };
        if rc == DT_OK {
            Ok(())
        } else {
            Err(plugin_error(&self.name, "write_frame", rc, &err))
        }
    }
}

impl Drop for PluginStream {
    fn drop(&mut self) {
        if let Some(f) = self.api.close {
            // SAFETY: the handle came from open_capture/open_render and is closed once.
            unsafe { f(self.handle) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Rust mirror has the C header's layout on this platform (64-bit).
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn the_layout_matches_the_header() {
        assert_eq!(std::mem::size_of::<DtError>(), 4 + 4 + 256);
        assert_eq!(std::mem::size_of::<DtEncoderSettings>(), 12);
        assert_eq!(std::mem::size_of::<CodecApi>(), 7 * 8);
        assert_eq!(std::mem::size_of::<AudioApi>(), 5 * 8);
        // 4 u32, 2 pointers, 4 u32, i32 + u32, a pointer, then the two tables
        assert_eq!(std::mem::size_of::<Descriptor>(), 16 + 16 + 16 + 8 + 8 + 7 * 8 + 5 * 8);
    }

    #[test]
    fn error_messages_are_cut_at_a_character_boundary() {
        let mut e = DtError::empty();
        e.set(-3, &"é".repeat(200));
        assert_eq!(e.message_len, 256);
        assert_eq!(e.message(), "é".repeat(128));
    }
}

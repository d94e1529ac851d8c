//! The Dialtone plugin boundary: the versioned C ABI (`include/dialtone_plugin.h`,
//! mirrored in [`ffi`]), the host loader ([`host`], the only user of `libloading`) and
//! the authoring side ([`authoring`] and [`export_codec!`]).
//!
//! This crate and the plugins themselves are the only code in Dialtone that uses
//! `unsafe`; each block says why it is sound. See `plugins/README.md` for the ABI, its
//! versioning rule and how to write, build and ship a plugin.

pub mod authoring;
pub mod ffi;
pub mod host;

pub use authoring::{PluginCodec, PluginDecoder, PluginEncoder};
pub use ffi::ABI_VERSION;
pub use host::{load, load_configured, LoadedPlugin, PluginError, PluginKind};

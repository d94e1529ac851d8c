//! The versioned plugin C ABI, the host loader and the authoring macros (the plugins issue).
//!
//! This crate is a placeholder in the workspace layout of the design; the issue
//! named above fills it. It depends on `dialtone-core` so that its parts plug into
//! the core traits and the registry.

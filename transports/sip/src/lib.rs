//! SIP (RFC 3261) as a sans-IO protocol core: messages, transactions, dialogs and SDP offer/answer glue (the signaling issue).
//!
//! This crate is a placeholder in the workspace layout of the design; the issue
//! named above fills it. It depends on `dialtone-core` so that its parts plug into
//! the core traits and the registry.

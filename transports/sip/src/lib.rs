//! # dialtone-sip
//!
//! SIP (RFC 3261) as a sans-IO protocol core: no sockets, no tokio, no clock of its
//! own. The tokio shell that carries the Dialtone call model over it is
//! `dialtone-sip-agent`, as quinn wraps quinn-proto.
//!
//! - [`message`]: parsing and serializing messages (compact forms, folding, lists,
//!   bodies by Content-Length), stream framing and RFC 5626 keepalives.
//! - [`header`]: typed URIs, name-addrs and Vias.
//! - [`digest`]: HTTP Digest (MD5, SHA-256, `qop=auth`): answering a challenge and
//!   checking an answer, for trunks.
//! - [`transaction`]: the four RFC 3261 §17 transaction machines and their timers.
//! - [`ua`]: the user agent: registration with refresh, calls (INVITE, ACK, CANCEL,
//!   BYE, re-INVITE), INFO and OPTIONS. Time and bytes in; transmits, events and
//!   the next wake-up out.
//! - [`wire`]: how the call model rides on SIP (call SID, custom parameters, STIR
//!   status, access token, error codes).
//!
//! Everything except `agent` is free of IO and of clocks: tests drive it on virtual
//! time.

pub mod digest;
pub mod header;
pub mod message;
mod timed;
pub mod transaction;
pub mod ua;
pub mod wire;

pub use message::{Message, Method, ParseError, StreamFramer};
pub use ua::{CallId, Flow, Inbound, Transmit, UaConfig, UaEvent, UserAgent};

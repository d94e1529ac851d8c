//! # dialtone-core
//!
//! The call model an application programs against, and the traits every replaceable
//! part of Dialtone implements. There are no sockets here: the signaling, media,
//! codec and audio crates plug real parts in through [`parts`] and the [`Registry`],
//! and a signaling backend ([`VoiceBackend`]) carries the call model on the wire.
//!
//! ## The call model
//!
//! - [`Voice`] is the SDK entry: [`Voice::register`], [`Voice::handle_notification`],
//!   [`Voice::connect`].
//! - [`CallInvite`] is an incoming call; only the SDK makes one (from a push payload
//!   or an incoming INVITE). [`CallInvite::accept`] always returns a [`Call`];
//!   [`CallInvite::reject`] answers SIP 600. [`CancelledCallInvite`] reports a caller
//!   who hung up first.
//! - [`Call`] is a call in progress; its [`CallDelegate`] hears every state change.
//! - [`CallMessage`]s travel both ways and are reported to a [`CallMessageDelegate`].
//! - Every failure is a [`VoiceError`] with a catalogue [`ErrorCode`].
//!
//! The rules live in a sans-IO state machine (`machine.rs`) that takes inputs and the
//! current time and returns outputs, so they are tested without a network; the
//! [`loopback`] backend runs whole two-party calls in memory.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use dialtone_core::loopback::LoopbackNetwork;
//! use dialtone_core::*;
//!
//! #[derive(Default)]
//! struct Bob(Mutex<Vec<CallInvite>>);
//! impl NotificationDelegate for Bob {
//!     fn call_invite_received(&self, invite: CallInvite) { self.0.lock().unwrap().push(invite) }
//!     fn cancelled_call_invite_received(&self, _: CancelledCallInvite, _: &VoiceError) {}
//! }
//! struct Quiet;
//! impl CallDelegate for Quiet {}
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let net = LoopbackNetwork::new();
//! let alice = Voice::builder(net.backend("alice")).build();
//! let bob_invites = Arc::new(Bob::default());
//! let bob = Voice::builder(net.backend("bob")).incoming_delegate(bob_invites.clone()).build();
//! bob.register("token-for-bob", "").await.unwrap();
//!
//! let options = ConnectOptions::builder("token-for-alice").param("to", "client:bob").build();
//! let call = alice.connect(options, Arc::new(Quiet));
//! assert_eq!(call.state(), CallState::Ringing);
//!
//! let invite = bob_invites.0.lock().unwrap().pop().unwrap();
//! let answered = invite.accept(Arc::new(Quiet));
//! assert_eq!(call.state(), CallState::Connected);
//! assert_eq!(answered.codec().as_deref(), Some("opus"));
//! call.disconnect();
//! assert_eq!(answered.state(), CallState::Disconnected);
//! # });
//! ```
//!
//! ## Configuration
//!
//! [`ConfigLoader`] reads defaults, then `dialtone.toml`, then `DIALTONE_*`
//! environment variables, then values set in code; see [`config`].

#![forbid(unsafe_code)]

mod call;
mod clock;
pub mod config;
mod error;
mod feedback;
mod insights;
mod invite;
pub mod loopback;
mod machine;
mod message;
mod options;
pub mod parts;
pub mod push;
mod quality;
pub mod registry;
mod stats;
mod voice;

pub use call::{Call, CallDelegate, CallState};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{Config, ConfigError, ConfigLoader};
pub use error::{ErrorCode, Result, VoiceError};
pub use feedback::{FeedbackIssue, FeedbackScore};
pub use insights::{
    InsightsEvent, InsightsEventName, InsightsLevel, InsightsSink, LogInsightsSink, MemoryInsightsSink,
};
pub use invite::{CallInvite, CancelledCallInvite};
pub use message::{
    CallMessage, CallMessageDelegate, MessageRateLimiter, DEFAULT_CONTENT_TYPE, MAX_MESSAGES_PER_WINDOW,
    MAX_MESSAGE_BYTES, MESSAGE_RATE_WINDOW, USER_DEFINED_MESSAGE,
};
pub use options::{
    default_preferred_codecs, AcceptOptions, AcceptOptionsBuilder, AudioOptions, CallOptions, ConnectOptions,
    ConnectOptionsBuilder, IceServer, IceTransportPolicy, PreferredCodec,
};
pub use push::{CallerInfo, InviteDetails, NotificationPayload};
pub use quality::{QualitySample, QualityWarning, QualityWarningDetector, QualityWarningsChange};
pub use registry::{Registry, RegistryError};
pub use stats::{
    mos_from_network, CandidatePairStats, LocalAudioTrackStats, RemoteAudioTrackStats, StatsReport,
};
pub use voice::{
    CallCommand, CallEvent, CallLink, CallRequest, InviteCommand, InviteEvent, NotificationDelegate, Voice,
    VoiceBackend, VoiceBuilder, VoiceLink,
};

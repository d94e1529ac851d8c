//! The traits every replaceable part implements. Each kind of part lives in its own
//! crate (or a runtime plugin adapted by the plugin host) and is found by name in the
//! [`crate::Registry`]; the rest of the code sees only these traits.
//!
//! | kind | trait | examples |
//! |---|---|---|
//! | signaling transport | [`SignalingTransport`] | `ws` (ws://, wss://), `tcp` (TCP, TLS, UDP) |
//! | media engine | [`MediaEngine`] -> [`MediaSession`] | `rtp` (RTP/SRTP), `webrtc` |
//! | audio codec | [`AudioCodec`] -> [`AudioEncoder`], [`AudioDecoder`] | `opus`, `PCMU`, a `G722` plugin |
//! | audio device | [`AudioBackend`] -> [`AudioCapturer`], [`AudioRenderer`] | `cpal`, `file`, `synthetic` |
//! | insights sink | [`crate::InsightsSink`] | `log`, `memory` |

mod audio;
mod codec;
mod media;
mod signaling;

pub use audio::{AudioBackend, AudioCapturer, AudioDeviceInfo, AudioFormat, AudioRenderer};
pub use codec::{AudioCodec, AudioDecoder, AudioEncoder, CodecDescriptor, EncoderSettings};
pub use media::{MediaEngine, MediaEvent, MediaSession, MediaSessionConfig};
pub use signaling::{
    ConnectionInfo, SignalingConnection, SignalingReceiver, SignalingSender, SignalingTransport, TlsSettings,
    TransportTarget,
};

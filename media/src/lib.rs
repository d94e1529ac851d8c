//! The media pipeline that every engine and the server share, as a sans-IO core.
//!
//! Nothing here opens a socket, reads a clock, spawns or awaits: every call takes the
//! time it is about (`now`) as an argument, so tests step it on virtual time. The
//! pieces, in the order a frame meets them:
//!
//! | stage | module | what it does |
//! |---|---|---|
//! | frame clock | [`clock`] | when the next frame is due; the shell sleeps until then |
//! | send side | [`encode`] | PCM frame → encoded frame (mute, hold, input level, DTX, the expected loss for FEC) |
//! | receive side | [`jitter`] | encoded frames in arrival order → frames in playout order; the target delay (a quantile of packets' relative delay); redundant copies (RED) fill gaps |
//! | playout | [`playout`] | a frame slot → PCM (decode, FEC from the next packet, PLC), time-stretched to the target delay, output level |
//! | resampling | [`resample`] | device rate and channels ↔ codec rate, mono |
//! | meters | [`meter`] | audio levels, the once-a-second quality sample, MOS inputs, the stats report |
//! | SDP | [`sdp`] | the SDP model and its offer/answer rules (RFC 3264, SDES keys, RED) |
//!
//! It can be driven two ways:
//! - **with PCM**, for a device, a file, a recorder or a stream: [`encode::FrameEncoder`]
//!   on the way out, [`playout::Playout::play_frame`] on the way in;
//! - **with encoded frames**, for forwarding with no decode:
//!   [`playout::Playout::pop_encoded`] hands out the jitter buffer's frames as they
//!   are, and an engine sends an encoded frame as it is (for RTP,
//!   `dialtone_rtp::session::RtpSession::send_encoded`).
//!
//! What it must not hold: anything of a wire. SSRCs, sequence numbers, SRTP, RTCP,
//! latching, DTMF events and the RED payload format belong to the engines
//! (`transports/rtp`, and WebRTC). `docs/media.md` describes the whole and who drives
//! it.

#![forbid(unsafe_code)]

pub mod clock;
pub mod encode;
pub mod jitter;
pub mod meter;
pub mod playout;
pub mod resample;
pub mod sdp;

pub use clock::FrameClock;
pub use encode::FrameEncoder;
pub use jitter::{FrameSlot, JitterBuffer, JitterConfig, JitterStats, MediaPacket, PushOutcome};
pub use meter::{Level, QualityMeter};
pub use playout::{FrameSource, Playout, StretchStats};

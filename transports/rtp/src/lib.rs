//! Raw RTP/RTCP media (RFC 3550/3551) with SDES-SRTP (RFC 3711, RFC 4568), the
//! adaptive jitter buffer and RFC 4733 DTMF, on the `rtc` crate line.
//!
//! The protocol logic is sans-IO: [`jitter`] takes packets and the time and says what
//! to play. The tokio shell around it only moves datagrams and ticks.

#![forbid(unsafe_code)]

pub mod dtmf;
pub mod engine;
pub mod jitter;
pub mod resample;
pub mod sdp;
pub mod session;

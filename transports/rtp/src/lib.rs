//! Raw RTP/RTCP media (RFC 3550/3551) with SDES-SRTP (RFC 3711, RFC 4568) and RFC 4733
//! DTMF, on the `rtc` crate line: the wire of a call. Everything between the wire and
//! the audio (the jitter buffer, playout, resampling, meters, the frame clock and the
//! SDP model) is the shared pipeline in `dialtone-media`, which this crate drives.
//!
//! [`session`] is the sans-IO core: datagrams and the time in, datagrams and frames
//! out. [`engine`] is the tokio shell around it: a socket and a task per call.

#![forbid(unsafe_code)]

pub mod dtmf;
pub mod engine;
pub mod red;
pub mod session;

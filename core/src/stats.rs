//! The stats report of a call and the E-model estimate of its MOS.
//!
//! The media engine fills these records from its real counters; this module only
//! defines them and the MOS arithmetic, so every engine reports the same way.

use serde::{Deserialize, Serialize};

/// A call's statistics at one moment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StatsReport {
    /// The media session's id.
    pub peer_connection_id: String,
    /// The tracks this side sends.
    pub local_audio_tracks: Vec<LocalAudioTrackStats>,
    /// The tracks this side receives.
    pub remote_audio_tracks: Vec<RemoteAudioTrackStats>,
    /// The candidate pair carrying media, where the engine has one (WebRTC).
    pub selected_candidate_pair: Option<CandidatePairStats>,
}

/// Statistics of a track this side sends.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LocalAudioTrackStats {
    /// The track's id.
    pub track_id: String,
    /// The codec, for example `opus`.
    pub codec: String,
    /// The RTP SSRC.
    pub ssrc: u32,
    /// RTP packets sent.
    pub packets_sent: u64,
    /// RTP payload bytes sent.
    pub bytes_sent: u64,
    /// Microphone level, 0 to 32767.
    pub audio_level: u16,
    /// Jitter the peer reports for what we send, in milliseconds.
    pub jitter_ms: f64,
    /// Round-trip time from RTCP, in milliseconds.
    pub round_trip_time_ms: Option<f64>,
    /// Packets the peer reports lost.
    pub packets_lost: i64,
}

/// Statistics of a track this side receives.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RemoteAudioTrackStats {
    /// The track's id.
    pub track_id: String,
    /// The codec, for example `opus`.
    pub codec: String,
    /// The RTP SSRC.
    pub ssrc: u32,
    /// RTP packets received.
    pub packets_received: u64,
    /// RTP payload bytes received.
    pub bytes_received: u64,
    /// Packets lost (RFC 3550 cumulative count).
    pub packets_lost: i64,
    /// Received audio level, 0 to 32767.
    pub audio_level: u16,
    /// Interarrival jitter (RFC 3550) in milliseconds.
    pub jitter_ms: f64,
    /// Mean opinion score from the E-model, 1 to 4.5.
    pub mos: Option<f64>,
}

/// The ICE candidate pair carrying media.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CandidatePairStats {
    /// Local candidate address.
    pub local_address: String,
    /// Remote candidate address.
    pub remote_address: String,
    /// Local candidate type (host, srflx, relay).
    pub local_candidate_type: String,
    /// Remote candidate type.
    pub remote_candidate_type: String,
    /// Current round-trip time in milliseconds.
    pub current_round_trip_time_ms: Option<f64>,
}

/// The mean opinion score the simplified ITU-T G.107 E-model gives for a network
/// state: one-way delay taken as half the RTT plus twice the jitter plus 10 ms of
/// codec delay, and a 2.5 penalty per percent of loss. Returns 1.0 to about 4.4.
///
/// ```
/// use dialtone_core::mos_from_network;
/// let good = mos_from_network(40.0, 2.0, 0.0);
/// let bad = mos_from_network(600.0, 60.0, 10.0);
/// assert!(good > 4.3 && bad < 3.0);
/// ```
pub fn mos_from_network(rtt_ms: f64, jitter_ms: f64, loss_percent: f64) -> f64 {
    let latency = rtt_ms.max(0.0) / 2.0 + 2.0 * jitter_ms.max(0.0) + 10.0;
    let delay_penalty = if latency < 160.0 { latency / 40.0 } else { (latency - 120.0) / 10.0 };
    let r = (93.2 - delay_penalty - 2.5 * loss_percent.clamp(0.0, 100.0)).clamp(0.0, 100.0);
    let mos = 1.0 + 0.035 * r + 7.0e-6 * r * (r - 60.0) * (100.0 - r);
    mos.clamp(1.0, 4.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mos_falls_with_each_impairment() {
        let base = mos_from_network(20.0, 1.0, 0.0);
        assert!(base > 4.3, "{base}");
        assert!(mos_from_network(500.0, 1.0, 0.0) < base);
        assert!(mos_from_network(20.0, 50.0, 0.0) < base);
        assert!(mos_from_network(20.0, 1.0, 5.0) < base);
        assert_eq!(mos_from_network(5000.0, 500.0, 100.0), 1.0);
    }
}

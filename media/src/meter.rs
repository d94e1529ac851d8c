//! Meters: audio levels, the once-a-second quality sample that feeds the call's
//! quality warnings, and the stats report, from measurements an engine hands in.
//!
//! The engine knows its wire (packets, loss, RTT from RTCP, SSRCs); the pipeline knows
//! its audio (levels, the jitter buffer's jitter). This module puts the two together
//! the same way for every engine, and keeps MOS honest: no packets, no score.

use std::time::{Duration, Instant};

use dialtone_core::{
    mos_from_network, LocalAudioTrackStats, QualitySample, RemoteAudioTrackStats, StatsReport,
};

/// The peak level of frames, averaged over the frames since it was last taken.
#[derive(Clone, Debug, Default)]
pub struct Level {
    sum: f64,
    frames: u32,
    last: u16,
}

impl Level {
    /// Adds one frame (an empty frame counts as silence).
    pub fn add(&mut self, frame: &[i16]) {
        let peak = frame.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
        self.sum += f64::from(peak.min(32767));
        self.frames += 1;
    }

    /// The level since the last take (0 to 32767), or the last one when no frame
    /// came since.
    pub fn take(&mut self) -> u16 {
        if self.frames > 0 {
            self.last = (self.sum / f64::from(self.frames)) as u16;
        }
        self.sum = 0.0;
        self.frames = 0;
        self.last
    }

    /// The last level taken.
    pub fn last(&self) -> u16 {
        self.last
    }
}

/// What an engine measured of its network, for a sample or a report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NetworkMeasures {
    /// Round-trip time, when known (RTCP).
    pub rtt_ms: Option<f64>,
    /// Receive jitter in milliseconds.
    pub jitter_ms: f64,
    /// Packets lost in receiving, as a percentage of those expected, so far.
    pub loss_percent: f64,
    /// The loss the peer reports of what we send, as a percentage, when it reported.
    pub peer_loss_percent: Option<f64>,
    /// Packets received so far.
    pub packets_received: u64,
}

impl NetworkMeasures {
    /// The E-model MOS of these measures, using the worse of the two losses.
    pub fn mos(&self) -> f64 {
        let loss = self.peer_loss_percent.unwrap_or(self.loss_percent).max(self.loss_percent);
        mos_from_network(self.rtt_ms.unwrap_or(0.0), self.jitter_ms, loss)
    }
}

/// Makes the quality sample once a second.
#[derive(Clone, Debug, Default)]
pub struct QualityMeter {
    next_sample: Option<Instant>,
    received_at_sample: u64,
}

impl QualityMeter {
    /// When the next sample is due (`None` before the first poll).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_sample
    }

    /// The sample, once a second from the first call (which only starts the clock).
    /// A second without packets has no MOS and no received level: silence is not
    /// scored as a perfect call.
    pub fn poll(
        &mut self,
        now: Instant,
        network: &NetworkMeasures,
        input: &mut Level,
        output: &mut Level,
        muted: bool,
    ) -> Option<QualitySample> {
        if self.next_sample.is_some_and(|t| now < t) {
            return None;
        }
        let first = self.next_sample.is_none();
        self.next_sample = Some(now + Duration::from_secs(1));
        if first {
            return None;
        }
        let heard = network.packets_received > self.received_at_sample;
        self.received_at_sample = network.packets_received;
        let mut s = QualitySample::default();
        s.rtt_ms = network.rtt_ms;
        s.jitter_ms = Some(network.jitter_ms);
        s.packets_lost_percent = Some(network.loss_percent);
        s.mos = heard.then(|| network.mos());
        s.audio_input_level = Some(input.take());
        let out_level = output.take();
        s.audio_output_level = heard.then_some(out_level);
        s.muted = muted;
        Some(s)
    }
}

/// One call's figures for a [`StatsReport`].
#[derive(Clone, Debug, Default)]
pub struct TrackFigures {
    /// The codec's name.
    pub codec: String,
    /// The id of the connection (`rtp-…`, or a WebRTC peer connection's).
    pub connection_id: String,
    /// Our SSRC.
    pub local_ssrc: u32,
    /// Packets and payload bytes sent.
    pub packets_sent: u64,
    /// Payload bytes sent.
    pub bytes_sent: u64,
    /// What the peer reports of our stream: total lost and its jitter in ms.
    pub peer_report: Option<(i64, f64)>,
    /// The peer's SSRC (0 before it is known).
    pub remote_ssrc: u32,
    /// Packets received.
    pub packets_received: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Packets lost in receiving.
    pub packets_lost: i64,
    /// Media was reported lost and has not come back.
    pub media_lost: bool,
}

/// The stats report of a call from its figures, the network measures and the levels.
pub fn stats_report(
    t: &TrackFigures,
    network: &NetworkMeasures,
    input: &Level,
    output: &Level,
) -> StatsReport {
    let mut local = LocalAudioTrackStats::default();
    local.track_id = "local-audio".into();
    local.codec = t.codec.clone();
    local.ssrc = t.local_ssrc;
    local.packets_sent = t.packets_sent;
    local.bytes_sent = t.bytes_sent;
    local.audio_level = input.last();
    local.round_trip_time_ms = network.rtt_ms;
    if let Some((total, jitter)) = t.peer_report {
        local.packets_lost = total;
        local.jitter_ms = jitter;
    }
    let mut remote = RemoteAudioTrackStats::default();
    remote.track_id = "remote-audio".into();
    remote.codec = t.codec.clone();
    remote.ssrc = t.remote_ssrc;
    remote.packets_received = t.packets_received;
    remote.bytes_received = t.bytes_received;
    remote.packets_lost = t.packets_lost;
    remote.audio_level = output.last();
    remote.jitter_ms = network.jitter_ms;
    // the receiving side's own loss only: the report is of what we receive
    let receive_only = NetworkMeasures { peer_loss_percent: None, ..network.clone() };
    remote.mos = (t.packets_received > 0 && !t.media_lost).then(|| receive_only.mos());
    let mut report = StatsReport::default();
    report.peer_connection_id = t.connection_id.clone();
    report.local_audio_tracks = vec![local];
    report.remote_audio_tracks = vec![remote];
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_level_is_the_mean_peak_and_keeps_its_last_value() {
        let mut l = Level::default();
        l.add(&[100, -300]);
        l.add(&[500]);
        assert_eq!(l.take(), 400);
        assert_eq!(l.take(), 400, "no frame since: the last value");
        l.add(&[]);
        assert_eq!(l.take(), 0);
        l.add(&[i16::MIN]);
        assert_eq!(l.take(), 32767);
    }

    #[test]
    fn samples_come_once_a_second_and_a_silent_second_has_no_mos() {
        let t0 = Instant::now();
        let mut q = QualityMeter::default();
        let (mut i, mut o) = (Level::default(), Level::default());
        let mut net = NetworkMeasures { jitter_ms: 5.0, ..Default::default() };
        assert!(q.poll(t0, &net, &mut i, &mut o, false).is_none(), "the first call starts the clock");
        assert!(q.poll(t0 + Duration::from_millis(999), &net, &mut i, &mut o, false).is_none());
        net.packets_received = 50;
        o.add(&[2000]);
        let s =
            q.poll(t0 + Duration::from_secs(1), &net, &mut i, &mut o, false).unwrap_or_else(|| panic!("due"));
        assert!(s.mos.is_some_and(|m| m > 4.0), "{s:?}");
        assert_eq!(s.audio_output_level, Some(2000));
        let s =
            q.poll(t0 + Duration::from_secs(2), &net, &mut i, &mut o, true).unwrap_or_else(|| panic!("due"));
        assert_eq!((s.mos, s.audio_output_level, s.muted), (None, None, true), "no packets in that second");
        assert_eq!(q.poll_timeout(), Some(t0 + Duration::from_secs(3)));
    }

    #[test]
    fn loss_lowers_the_mos_and_a_lost_stream_has_none() {
        let clean = NetworkMeasures { packets_received: 10, ..Default::default() };
        let lossy = NetworkMeasures { loss_percent: 10.0, ..clean.clone() };
        assert!(lossy.mos() < clean.mos() - 0.5, "{} vs {}", lossy.mos(), clean.mos());
        let peer_lossy = NetworkMeasures { peer_loss_percent: Some(10.0), ..clean.clone() };
        assert!((peer_lossy.mos() - lossy.mos()).abs() < 1e-9);
        let mut figures = TrackFigures { packets_received: 10, ..Default::default() };
        let r = stats_report(&figures, &clean, &Level::default(), &Level::default());
        assert!(r.remote_audio_tracks[0].mos.is_some());
        figures.media_lost = true;
        let r = stats_report(&figures, &clean, &Level::default(), &Level::default());
        assert_eq!(r.remote_audio_tracks[0].mos, None);
    }
}

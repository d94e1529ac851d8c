//! The adaptive jitter buffer, a sans-IO core.
//!
//! Packets go in with their arrival time ([`JitterBuffer::push`]); the playout clock
//! asks for one frame every frame period ([`JitterBuffer::pop`]) and gets a packet to
//! decode, an instruction to conceal a loss (with the next packet's payload when it
//! is already here, so an Opus decoder can recover the loss from its FEC), or
//! silence. Nothing here reads a clock or sleeps, so tests drive it on virtual time.
//!
//! How it adapts:
//! - the target delay is `min_delay + 2 × jitter` (RFC 3550 interarrival jitter),
//!   plus one frame for every recent underrun (forgotten one per 10 s without one),
//!   bounded by `max_packets` frames;
//! - playout starts once the target is buffered;
//! - an underrun conceals a frame without moving the playout point, so the delay
//!   grows by that frame and the late packet still plays;
//! - a buffer that holds more than the target plus two frames for half a second
//!   drops its oldest frame to bring the delay back down.
//!
//! What it tolerates: reordering (packets sort by timestamp), duplicates (by sequence
//! number), late packets (dropped and counted), SSRC changes (a new stream: reset),
//! timestamp jumps of over 10 s (resynchronised), DTX gaps (concealment for a few
//! frames, then silence and re-buffering for the next talkspurt, without counting the
//! gap as loss or as an underrun) and overflow (oldest dropped).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// What the buffer is configured with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JitterConfig {
    /// The RTP clock rate of the stream.
    pub clock_rate: u32,
    /// RTP timestamp units in one frame (960 for 20 ms of Opus, 160 for PCMU).
    pub frame_ts: u32,
    /// The least delay to keep, in milliseconds.
    pub min_delay_ms: u32,
    /// The most packets to hold.
    pub max_packets: usize,
}

impl JitterConfig {
    fn frame_ms(&self) -> f64 {
        f64::from(self.frame_ts) * 1000.0 / f64::from(self.clock_rate)
    }
}

/// One received media packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaPacket {
    /// RTP sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// RTP SSRC.
    pub ssrc: u32,
    /// RTP marker bit (start of a talkspurt).
    pub marker: bool,
    /// The codec payload.
    pub payload: Vec<u8>,
}

/// What happened to a pushed packet.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// Queued for playout.
    Queued,
    /// Already received; dropped.
    Duplicate,
    /// Its playout time has passed; dropped.
    Late,
    /// It started a new stream (new SSRC or a timestamp jump); the buffer was reset
    /// and it was queued.
    Reset,
}

/// What to play for the next frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameSlot {
    /// Decode this packet.
    Packet(MediaPacket),
    /// The frame was lost: conceal it. `next` is the following packet's payload when
    /// it is already buffered, for FEC recovery.
    Conceal {
        /// The next packet's payload, if here.
        next: Option<Vec<u8>>,
    },
    /// Nothing to play (not started yet, or a silence/DTX gap).
    Silence,
}

/// Counters and the current delay.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JitterStats {
    /// Packets queued.
    pub queued: u64,
    /// Duplicates dropped.
    pub duplicates: u64,
    /// Late packets dropped.
    pub late: u64,
    /// Frames concealed because their packet never came in time.
    pub concealed: u64,
    /// Frames dropped to bring the delay down, or because the buffer was full.
    pub discarded: u64,
    /// Resets for a new SSRC or a timestamp jump.
    pub resets: u64,
    /// Underruns (the buffer ran dry while playing).
    pub underruns: u64,
    /// The current target delay in milliseconds.
    pub target_delay_ms: f64,
    /// RFC 3550 interarrival jitter in milliseconds.
    pub jitter_ms: f64,
    /// Packets played.
    pub played: u64,
    /// The mean time a played packet waited in the buffer, in milliseconds (WebRTC's
    /// `jitterBufferDelay / jitterBufferEmittedCount`).
    pub mean_held_ms: f64,
}

/// Frames of concealment before a dry buffer turns to silence (a DTX gap or a dead
/// stream, not a loss).
const CONCEAL_LIMIT: u32 = 5;
/// A timestamp this far from the playout point starts over.
const JUMP: Duration = Duration::from_secs(10);
/// Pops in a row over the target (plus two frames) before a frame is dropped.
const OVER_TARGET_POPS: u32 = 25;
/// An underrun's extra frame of delay is forgotten after this long without another.
const UNDERRUN_MEMORY: Duration = Duration::from_secs(10);

/// The buffer. See the module docs.
#[derive(Debug)]
pub struct JitterBuffer {
    cfg: JitterConfig,
    ssrc: Option<u32>,
    /// Extended (unwrapped) timestamp of the last packet pushed, with its raw value.
    ts_ref: Option<(u32, i64)>,
    /// Packets by extended timestamp, with the time each arrived.
    packets: BTreeMap<i64, (MediaPacket, Instant)>,
    /// How long the last packet played had waited in the buffer.
    last_held: Option<Duration>,
    /// Time all played packets waited, in all.
    held_total: Duration,
    recent_seqs: VecDeque<u16>,
    /// The extended timestamp of the next frame to play, once started.
    next_ts: Option<i64>,
    dry_frames: u32,
    over_target_pops: u32,
    extra_frames: u32,
    last_underrun: Option<Instant>,
    // RFC 3550 jitter state
    epoch: Option<Instant>,
    last_transit: Option<f64>,
    jitter_ts: f64,
    stats: JitterStats,
}

impl JitterBuffer {
    /// An empty buffer.
    pub fn new(cfg: JitterConfig) -> Self {
        let mut jb = JitterBuffer {
            cfg,
            ssrc: None,
            ts_ref: None,
            packets: BTreeMap::new(),
            last_held: None,
            held_total: Duration::ZERO,
            recent_seqs: VecDeque::with_capacity(128),
            next_ts: None,
            dry_frames: 0,
            over_target_pops: 0,
            extra_frames: 0,
            last_underrun: None,
            epoch: None,
            last_transit: None,
            jitter_ts: 0.0,
            stats: JitterStats::default(),
        };
        jb.stats.target_delay_ms = jb.target_frames() as f64 * jb.cfg.frame_ms();
        jb
    }

    /// The counters.
    pub fn stats(&self) -> &JitterStats {
        &self.stats
    }

    /// How long the packet of the last frame played had waited in the buffer (`None`
    /// before the first).
    pub fn last_held(&self) -> Option<Duration> {
        self.last_held
    }

    /// Packets held now.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// Whether no packet is held.
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// The target delay in frames.
    pub fn target_frames(&self) -> usize {
        let ms = f64::from(self.cfg.min_delay_ms) + 2.0 * self.jitter_ms();
        let frames = (ms / self.cfg.frame_ms()).ceil() as usize + self.extra_frames as usize;
        frames.clamp(1, self.cfg.max_packets.max(1))
    }

    fn jitter_ms(&self) -> f64 {
        self.jitter_ts * 1000.0 / f64::from(self.cfg.clock_rate)
    }

    fn jump_ts(&self) -> i64 {
        i64::from(self.cfg.clock_rate) * JUMP.as_secs() as i64
    }

    fn reset(&mut self) {
        self.packets.clear();
        self.recent_seqs.clear();
        self.next_ts = None;
        self.ts_ref = None;
        self.dry_frames = 0;
        self.last_transit = None;
        self.stats.resets += 1;
    }

    fn unwrap_ts(&mut self, ts: u32) -> i64 {
        let ext = match self.ts_ref {
            None => i64::from(ts),
            Some((raw, ext)) => ext + i64::from(ts.wrapping_sub(raw) as i32),
        };
        self.ts_ref = Some((ts, ext));
        ext
    }

    /// Takes a packet that arrived at `now`.
    pub fn push(&mut self, p: MediaPacket, now: Instant) -> PushOutcome {
        let mut outcome = PushOutcome::Queued;
        if self.ssrc.is_some_and(|s| s != p.ssrc) {
            tracing::debug!(old = ?self.ssrc, new = p.ssrc, "SSRC changed: new stream");
            self.reset();
            outcome = PushOutcome::Reset;
        }
        self.ssrc = Some(p.ssrc);
        if self.recent_seqs.contains(&p.seq) {
            self.stats.duplicates += 1;
            return PushOutcome::Duplicate;
        }
        let mut ext = self.unwrap_ts(p.timestamp);
        if let Some(next) = self.next_ts {
            if (ext - next).abs() > self.jump_ts() {
                tracing::debug!(jump = ext - next, "timestamp jump: resynchronising");
                self.reset();
                ext = self.unwrap_ts(p.timestamp);
                outcome = PushOutcome::Reset;
            } else if ext < next {
                self.stats.late += 1;
                return PushOutcome::Late;
            }
        }
        self.update_jitter(ext, now);
        if self.recent_seqs.len() == 128 {
            self.recent_seqs.pop_front();
        }
        self.recent_seqs.push_back(p.seq);
        self.packets.insert(ext, (p, now));
        self.stats.queued += 1;
        while self.packets.len() > self.cfg.max_packets.max(1) {
            self.packets.pop_first();
            self.stats.discarded += 1;
        }
        outcome
    }

    fn update_jitter(&mut self, ext: i64, now: Instant) {
        let epoch = *self.epoch.get_or_insert(now);
        let arrival = now.saturating_duration_since(epoch).as_secs_f64() * f64::from(self.cfg.clock_rate);
        let transit = arrival - ext as f64;
        if let Some(last) = self.last_transit {
            let d = (transit - last).abs();
            self.jitter_ts += (d - self.jitter_ts) / 16.0;
        }
        self.last_transit = Some(transit);
        self.stats.jitter_ms = self.jitter_ms();
    }

    /// The next frame to play, asked once per frame period at `now`.
    pub fn pop(&mut self, now: Instant) -> FrameSlot {
        if self.last_underrun.is_some_and(|t| now.saturating_duration_since(t) >= UNDERRUN_MEMORY) {
            self.extra_frames = self.extra_frames.saturating_sub(1);
            self.last_underrun = if self.extra_frames > 0 { Some(now) } else { None };
        }
        let target = self.target_frames();
        self.stats.target_delay_ms = target as f64 * self.cfg.frame_ms();
        let frame = i64::from(self.cfg.frame_ts);

        let Some(next) = self.next_ts else {
            // Not playing yet: start once the target is buffered.
            let (Some((&first, _)), Some((&last, _))) =
                (self.packets.first_key_value(), self.packets.last_key_value())
            else {
                return FrameSlot::Silence;
            };
            if ((last - first) / frame + 1) as usize >= target {
                self.next_ts = Some(first);
                self.dry_frames = 0;
                return self.pop(now);
            }
            return FrameSlot::Silence;
        };

        // Too much delay buffered for half a second: drop the oldest frame.
        let buffered =
            self.packets.last_key_value().map_or(0, |(&last, _)| ((last - next) / frame + 1).max(0) as usize);
        if buffered > target + 2 {
            self.over_target_pops += 1;
        } else {
            self.over_target_pops = 0;
        }
        if self.over_target_pops >= OVER_TARGET_POPS {
            self.over_target_pops = 0;
            if let Some((ts, _)) = self.packets.pop_first() {
                self.stats.discarded += 1;
                self.next_ts = Some(ts.max(next) + frame);
                return self.pop(now);
            }
        }

        match self.packets.first_key_value().map(|(&ts, _)| ts) {
            Some(ts) if ts < next + frame => {
                // this frame's packet (or one that starts inside it)
                let p = self.packets.pop_first().map(|(_, (p, arrived))| {
                    let held = now.saturating_duration_since(arrived);
                    self.last_held = Some(held);
                    self.held_total += held;
                    self.stats.played += 1;
                    self.stats.mean_held_ms =
                        self.held_total.as_secs_f64() * 1000.0 / self.stats.played as f64;
                    p
                });
                self.next_ts = Some(ts.max(next) + frame);
                self.dry_frames = 0;
                p.map_or(FrameSlot::Silence, FrameSlot::Packet)
            }
            Some(_) => {
                // a later packet is here, this one is not: lost
                self.next_ts = Some(next + frame);
                self.dry_frames = 0;
                self.stats.concealed += 1;
                let following = self.packets.first_key_value().filter(|(&ts, _)| ts < next + 2 * frame);
                FrameSlot::Conceal { next: following.map(|(_, (p, _))| p.payload.clone()) }
            }
            None => {
                // Dry: an underrun at first, a silence (DTX) gap if it lasts. The
                // playout point stays put, so a late packet is still played when it
                // comes: each underrun adds a frame of delay.
                self.dry_frames += 1;
                if self.dry_frames == 1 {
                    self.stats.underruns += 1;
                    self.extra_frames = (self.extra_frames + 1).min(self.cfg.max_packets as u32);
                    self.last_underrun = Some(now);
                }
                if self.dry_frames <= CONCEAL_LIMIT {
                    return FrameSlot::Conceal { next: None };
                }
                // A gap this long is silence (DTX) or a pause, not lateness: take back
                // the underrun's penalty and re-buffer when the next talkspurt comes.
                self.stats.underruns -= 1;
                self.extra_frames = self.extra_frames.saturating_sub(1);
                self.next_ts = None;
                FrameSlot::Silence
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: u32 = 160;
    const PERIOD: Duration = Duration::from_millis(20);

    fn cfg() -> JitterConfig {
        JitterConfig { clock_rate: 8000, frame_ts: FRAME, min_delay_ms: 40, max_packets: 50 }
    }

    fn pkt(i: u32) -> MediaPacket {
        MediaPacket {
            seq: i as u16,
            timestamp: 1000 + i * FRAME,
            ssrc: 7,
            marker: false,
            payload: vec![i as u8],
        }
    }

    fn played(p: &FrameSlot) -> Option<u8> {
        match p {
            FrameSlot::Packet(p) => Some(p.payload[0]),
            _ => None,
        }
    }

    /// Pushes packets in `order` (one per period) and pops one frame per period.
    fn run(order: &[u32], extra_pops: usize) -> (Vec<FrameSlot>, JitterBuffer) {
        let mut jb = JitterBuffer::new(cfg());
        let t0 = Instant::now();
        let mut out = Vec::new();
        for (k, &i) in order.iter().enumerate() {
            let now = t0 + PERIOD * k as u32;
            jb.push(pkt(i), now);
            out.push(jb.pop(now));
        }
        for k in 0..extra_pops {
            out.push(jb.pop(t0 + PERIOD * (order.len() + k) as u32));
        }
        (out, jb)
    }

    #[test]
    fn in_order_packets_play_in_order_after_the_target_delay() {
        let order: Vec<u32> = (0..20).collect();
        let (out, jb) = run(&order, 5);
        let got: Vec<u8> = out.iter().filter_map(played).collect();
        assert_eq!(got, (0..20).map(|i| i as u8).collect::<Vec<_>>());
        // 40 ms minimum delay: two frames of silence before the first packet
        assert_eq!(out.iter().take_while(|p| **p == FrameSlot::Silence).count(), 1);
        assert_eq!(jb.stats().concealed, 0);
    }

    #[test]
    fn reordered_packets_come_out_sorted() {
        let order = [0, 1, 3, 2, 5, 4, 6, 8, 7, 9, 10, 11];
        let (out, jb) = run(&order, 6);
        let got: Vec<u8> = out.iter().filter_map(played).collect();
        assert_eq!(got, (0..12).collect::<Vec<u8>>());
        assert_eq!(jb.stats().late, 0);
    }

    #[test]
    fn duplicates_are_dropped_and_counted() {
        let mut jb = JitterBuffer::new(cfg());
        let t = Instant::now();
        assert_eq!(jb.push(pkt(0), t), PushOutcome::Queued);
        assert_eq!(jb.push(pkt(0), t), PushOutcome::Duplicate);
        assert_eq!(jb.stats().duplicates, 1);
        assert_eq!(jb.len(), 1);
    }

    #[test]
    fn a_loss_is_concealed_with_the_next_payload_for_fec() {
        let order = [0, 1, 2, 4, 5, 6, 7, 8];
        let (out, jb) = run(&order, 4);
        let idx = out.iter().position(|p| matches!(p, FrameSlot::Conceal { .. })).unwrap();
        assert_eq!(out[idx], FrameSlot::Conceal { next: Some(vec![4]) });
        assert_eq!(played(&out[idx - 1]), Some(2));
        assert_eq!(played(&out[idx + 1]), Some(4));
        assert_eq!(jb.stats().concealed, 1);
    }

    #[test]
    fn a_late_packet_is_dropped() {
        let mut jb = JitterBuffer::new(cfg());
        let t0 = Instant::now();
        for i in 0..6u32 {
            if i != 2 {
                jb.push(pkt(i), t0 + PERIOD * i);
            }
            jb.pop(t0 + PERIOD * i);
        }
        // packet 2 was concealed; arriving now it is late
        assert_eq!(jb.push(pkt(2), t0 + PERIOD * 6), PushOutcome::Late);
        assert_eq!(jb.stats().late, 1);
    }

    #[test]
    fn a_new_ssrc_resets_the_stream() {
        let mut jb = JitterBuffer::new(cfg());
        let t = Instant::now();
        jb.push(pkt(0), t);
        jb.push(pkt(1), t);
        let mut other = pkt(500);
        other.ssrc = 9;
        assert_eq!(jb.push(other, t), PushOutcome::Reset);
        assert_eq!(jb.len(), 1);
        assert_eq!(jb.stats().resets, 1);
    }

    #[test]
    fn a_timestamp_jump_resynchronises_instead_of_waiting() {
        let mut jb = JitterBuffer::new(cfg());
        let t0 = Instant::now();
        for i in 0..5u32 {
            jb.push(pkt(i), t0 + PERIOD * i);
            jb.pop(t0 + PERIOD * i);
        }
        let mut far = pkt(5);
        far.timestamp = far.timestamp.wrapping_add(8000 * 60); // a minute ahead
        assert_eq!(jb.push(far, t0 + PERIOD * 5), PushOutcome::Reset);
        let mut p = pkt(6);
        p.timestamp = p.timestamp.wrapping_add(8000 * 60);
        jb.push(p, t0 + PERIOD * 6);
        let got: Vec<FrameSlot> = (7..10).map(|k| jb.pop(t0 + PERIOD * k)).collect();
        assert!(got.iter().any(|p| played(p) == Some(5)), "{got:?}");
    }

    #[test]
    fn timestamps_wrap_around() {
        let mut jb = JitterBuffer::new(cfg());
        let t0 = Instant::now();
        let mut got = Vec::new();
        for i in 0..10u32 {
            let mut p = pkt(i);
            p.timestamp = (u32::MAX - 3 * FRAME).wrapping_add(i * FRAME);
            jb.push(p, t0 + PERIOD * i);
            got.extend(played(&jb.pop(t0 + PERIOD * i)));
        }
        for k in 10..14 {
            got.extend(played(&jb.pop(t0 + PERIOD * k)));
        }
        assert_eq!(got, (0..10).collect::<Vec<u8>>());
    }

    #[test]
    fn a_dtx_gap_turns_to_silence_and_playback_resumes() {
        let mut jb = JitterBuffer::new(cfg());
        let t0 = Instant::now();
        let mut out = Vec::new();
        for k in 0..60u32 {
            // talk for 10 frames, silence (no packets) for 40, talk again
            if !(10..50).contains(&k) {
                jb.push(pkt(k), t0 + PERIOD * k);
            }
            out.push(jb.pop(t0 + PERIOD * k));
        }
        let underruns_in_talk = jb.stats().underruns;
        for k in 60..64u32 {
            out.push(jb.pop(t0 + PERIOD * k));
        }
        let conceals = out[..50].iter().filter(|p| matches!(p, FrameSlot::Conceal { .. })).count();
        assert!(conceals <= CONCEAL_LIMIT as usize, "{conceals} concealed frames in a DTX gap");
        assert_eq!(underruns_in_talk, 0, "a DTX gap is not an underrun");
        let played_after: Vec<u8> = out[50..].iter().filter_map(played).collect();
        assert_eq!(played_after.first(), Some(&50), "{out:?}");
    }

    #[test]
    fn jitter_raises_the_target_delay_and_calm_lowers_it() {
        let mut jb = JitterBuffer::new(cfg());
        let t0 = Instant::now();
        let mut x: u32 = 12345;
        for i in 0..300u32 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let wobble = Duration::from_millis(u64::from((x >> 16) % 60));
            jb.push(pkt(i), t0 + PERIOD * i + wobble);
            jb.pop(t0 + PERIOD * i);
        }
        let jittery = jb.stats().target_delay_ms;
        assert!(jb.stats().jitter_ms > 10.0, "{:?}", jb.stats());
        assert!(jittery >= 80.0, "target {jittery} ms under 60 ms of jitter");
        for i in 300..1200u32 {
            jb.push(pkt(i), t0 + PERIOD * i + Duration::from_millis(80));
            jb.pop(t0 + PERIOD * i + Duration::from_millis(80));
        }
        assert!(jb.stats().target_delay_ms < jittery, "{:?}", jb.stats());
    }

    #[test]
    fn overflow_drops_the_oldest() {
        let mut c = cfg();
        c.max_packets = 4;
        let mut jb = JitterBuffer::new(c);
        let t = Instant::now();
        for i in 0..10 {
            jb.push(pkt(i), t);
        }
        assert_eq!(jb.len(), 4);
        assert_eq!(jb.stats().discarded, 6);
    }
}

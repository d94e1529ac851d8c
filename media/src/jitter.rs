//! The adaptive jitter buffer, a sans-IO core.
//!
//! Packets go in with their arrival time ([`JitterBuffer::push`]); the playout clock
//! asks for one frame every frame period ([`JitterBuffer::pop`]) and gets a packet to
//! decode, an instruction to conceal a loss (with the next packet's payload when it
//! is already here, so an Opus decoder can recover the loss from its FEC), or
//! silence. Nothing here reads a clock or sleeps, so tests drive it on virtual time.
//!
//! How it adapts (as WebRTC's NetEQ does, in outline):
//! - every packet's *relative delay* is how much later it came than the fastest
//!   packet of the last few seconds would have (arrival minus RTP time, less the
//!   least of that over the window, which also follows the two clocks' drift);
//! - the target delay is a high quantile ([`TARGET_QUANTILE`]) of those relative
//!   delays, at least `min_delay_ms`: nearly every packet arrives before its frame is
//!   due, without holding speech longer than the network needs;
//! - where the consumer recovers a lost frame from the next packet's FEC
//!   ([`JitterBuffer::set_fec_margin`]) and packets were lost in the last
//!   [`LOSS_MEMORY`], the target keeps half a frame more, so that the next packet is
//!   more often here when a lost frame is due;
//! - the playout delay is how long after its fastest possible arrival the next frame
//!   is taken from the buffer ([`JitterBuffer::delay_error_ms`] gives its distance
//!   from the target), and it is kept at or over the target: a packet whose relative
//!   delay is under the target is always here when its frame is due;
//! - who moves the delay to the target is chosen with [`JitterBuffer::set_stretching`]:
//!   a PCM consumer (the playout) time-stretches speech, shortening or lengthening it
//!   by a pitch period; otherwise the buffer itself drops a whole frame when the delay
//!   stays a frame and a half over the target, and inserts one when it stays under;
//! - playout starts once the first packet has waited for the target;
//! - an underrun (nothing buffered when a frame is due) conceals one frame without
//!   moving the playout point, so a late packet (or the next one, carrying a redundant
//!   copy) still plays; the delay this adds is taken back as above. Further frames of
//!   the same underrun are concealed in their time: a burst of loss adds no delay.
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
    /// Frames of concealment inserted to bring the delay up (only when the consumer
    /// does not time-stretch).
    pub inserted: u64,
    /// Frames filled in from a later packet's redundant copy (RFC 2198).
    pub recovered: u64,
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
/// The share of packets the target delay waits for.
pub const TARGET_QUANTILE: f64 = 0.99;
/// Packets whose relative delay the target is taken from (5 s of 20 ms frames).
const WINDOW: usize = 250;
/// Packets over which the target follows every packet (afterwards, every
/// [`RETARGET_POPS`] pops).
const LEARNING_PACKETS: usize = 50;
/// Pops between two computations of the target (a quantile over the window).
const RETARGET_POPS: u32 = 10;
/// Pops in a row off the target (a frame and a half over, or under it) before the
/// buffer drops or inserts a whole frame (when the consumer does not time-stretch).
const OFF_TARGET_POPS: u32 = 10;
/// How long a loss keeps the FEC margin in the target.
pub const LOSS_MEMORY: Duration = Duration::from_secs(10);
/// The FEC margin, in frames: half a frame more for the next packet to come (a
/// whole frame bought 0.1 of PESQ for 9 ms more delay, in `bad_network.rs`).
const MARGIN_FRAMES: f64 = 0.5;
/// Frames over the target past which even a time-stretching consumer gets whole
/// frames dropped (after a long delay spike, stretching alone would take too long).
const STRETCH_LIMIT_FRAMES: f64 = 8.0;

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
    /// The consumer time-stretches to reach the target.
    stretching: bool,
    /// The consumer recovers losses from FEC: keep a frame for it while loss lasts.
    fec_margin: bool,
    /// When a frame was last lost (concealed, or an underrun).
    last_loss: Option<Instant>,
    over_pops: u32,
    under_pops: u32,
    pops_to_retarget: u32,
    /// Transit times (arrival minus RTP time, ms) of the last packets.
    transits: VecDeque<f64>,
    /// The least transit in the window, and the target delay, as last computed.
    min_transit: Option<f64>,
    target_ms: f64,
    // RFC 3550 jitter state
    epoch: Option<Instant>,
    last_transit: Option<f64>,
    jitter_ts: f64,
    stats: JitterStats,
}

impl JitterBuffer {
    /// An empty buffer.
    pub fn new(cfg: JitterConfig) -> Self {
        let target_ms = f64::from(cfg.min_delay_ms);
        JitterBuffer {
            cfg,
            ssrc: None,
            ts_ref: None,
            packets: BTreeMap::new(),
            last_held: None,
            held_total: Duration::ZERO,
            recent_seqs: VecDeque::with_capacity(128),
            next_ts: None,
            dry_frames: 0,
            stretching: false,
            fec_margin: false,
            last_loss: None,
            over_pops: 0,
            under_pops: 0,
            pops_to_retarget: 0,
            transits: VecDeque::with_capacity(WINDOW),
            min_transit: None,
            target_ms,
            epoch: None,
            last_transit: None,
            jitter_ts: 0.0,
            stats: JitterStats { target_delay_ms: target_ms, ..JitterStats::default() },
        }
    }

    /// Whether the consumer time-stretches speech to bring the delay to the target
    /// (true), or the buffer drops and inserts whole frames itself (false, the
    /// default).
    pub fn set_stretching(&mut self, stretching: bool) {
        self.stretching = stretching;
    }

    /// Whether the consumer recovers a lost frame from the next packet's FEC: while
    /// packets are being lost, the target then keeps half a frame more.
    pub fn set_fec_margin(&mut self, fec: bool) {
        self.fec_margin = fec;
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

    /// The target delay in milliseconds.
    pub fn target_delay_ms(&self) -> f64 {
        self.target_ms
    }

    fn jitter_ms(&self) -> f64 {
        self.jitter_ts * 1000.0 / f64::from(self.cfg.clock_rate)
    }

    fn ts_ms(&self, ext: i64) -> f64 {
        ext as f64 * 1000.0 / f64::from(self.cfg.clock_rate)
    }

    fn since_epoch_ms(&self, now: Instant) -> f64 {
        self.epoch.map_or(0.0, |e| now.saturating_duration_since(e).as_secs_f64() * 1000.0)
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
        self.transits.clear();
        self.min_transit = None;
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
                // its lateness still counts: the target learns from it
                self.observe(ext, now);
                self.stats.late += 1;
                return PushOutcome::Late;
            }
        }
        self.observe(ext, now);
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

    /// Takes a redundant copy of an earlier frame (RFC 2198) that came inside a later
    /// packet at `now`. It fills the frame's place only if that frame is still due and
    /// missing; it is no duplicate, no late packet, and says nothing of the network's
    /// delay. Returns whether it was used.
    pub fn push_redundant(&mut self, p: MediaPacket, now: Instant) -> bool {
        let (Some(ssrc), Some((raw, ext_ref))) = (self.ssrc, self.ts_ref) else { return false };
        if ssrc != p.ssrc {
            return false;
        }
        let ext = ext_ref + i64::from(p.timestamp.wrapping_sub(raw) as i32);
        let gone = self.next_ts.is_some_and(|next| ext < next);
        if gone || self.packets.contains_key(&ext) || self.recent_seqs.contains(&p.seq) {
            return false;
        }
        if self.recent_seqs.len() == 128 {
            self.recent_seqs.pop_front();
        }
        self.recent_seqs.push_back(p.seq);
        self.packets.insert(ext, (p, now));
        self.stats.recovered += 1;
        while self.packets.len() > self.cfg.max_packets.max(1) {
            self.packets.pop_first();
            self.stats.discarded += 1;
        }
        true
    }

    /// Records a packet's transit, for the target and for RFC 3550 jitter.
    fn observe(&mut self, ext: i64, now: Instant) {
        self.epoch.get_or_insert(now);
        let transit = self.since_epoch_ms(now) - self.ts_ms(ext);
        if let Some(last) = self.last_transit {
            let d = (transit - last).abs() * f64::from(self.cfg.clock_rate) / 1000.0;
            self.jitter_ts += (d - self.jitter_ts) / 16.0;
        }
        self.last_transit = Some(transit);
        self.stats.jitter_ms = self.jitter_ms();
        if self.transits.len() == WINDOW {
            self.transits.pop_front();
        }
        self.transits.push_back(transit);
        match self.min_transit {
            Some(m) if m <= transit => {}
            _ => self.min_transit = Some(transit),
        }
        if self.transits.len() <= LEARNING_PACKETS {
            // early on, follow every packet
            self.retarget(now);
        }
    }

    /// The least transit over the window, and the target from the quantile of the
    /// relative delays.
    fn retarget(&mut self, now: Instant) {
        let Some(min) = self.transits.iter().copied().reduce(f64::min) else { return };
        self.min_transit = Some(min);
        let mut rel: Vec<f64> = self.transits.iter().map(|t| t - min).collect();
        let k = (((rel.len() as f64 - 1.0) * TARGET_QUANTILE).round() as usize).min(rel.len() - 1);
        let q = *rel.select_nth_unstable_by(k, f64::total_cmp).1;
        let most = self.cfg.max_packets.max(1) as f64 * self.cfg.frame_ms();
        let lossy = self.last_loss.is_some_and(|t| now.saturating_duration_since(t) < LOSS_MEMORY);
        let margin = if self.fec_margin && lossy { self.cfg.frame_ms() * MARGIN_FRAMES } else { 0.0 };
        self.target_ms = (q + margin).max(f64::from(self.cfg.min_delay_ms)).min(most);
        self.stats.target_delay_ms = self.target_ms;
    }

    /// A frame was lost: with an FEC margin, the target takes a frame more at once.
    fn lost(&mut self, now: Instant) {
        let had_margin = self.last_loss.is_some_and(|t| now.saturating_duration_since(t) < LOSS_MEMORY);
        self.last_loss = Some(now);
        if self.fec_margin && !had_margin {
            self.retarget(now);
        }
    }

    /// How far the playout delay is from the target, in ms (positive: more delay than
    /// needed), if the next frame were played at `now` after `queued_ms` of audio the
    /// consumer already holds. `None` while not playing.
    pub fn delay_error_ms(&self, now: Instant, queued_ms: f64) -> Option<f64> {
        let next = self.next_ts?;
        let min = self.min_transit?;
        let delay = self.since_epoch_ms(now) + queued_ms - (self.ts_ms(next) + min);
        Some(delay - self.target_ms)
    }

    /// The next frame to play, asked once per frame period at `now`.
    pub fn pop(&mut self, now: Instant) -> FrameSlot {
        if self.pops_to_retarget == 0 {
            self.retarget(now);
            self.pops_to_retarget = RETARGET_POPS;
        }
        self.pops_to_retarget -= 1;
        let frame = i64::from(self.cfg.frame_ts);
        let frame_ms = self.cfg.frame_ms();

        let Some(next) = self.next_ts else {
            // Not playing yet: start once the first packet has waited for the target.
            let Some((&first, _)) = self.packets.first_key_value() else {
                return FrameSlot::Silence;
            };
            let waited = self.since_epoch_ms(now) - (self.ts_ms(first) + self.min_transit.unwrap_or(0.0));
            if waited + 0.5 >= self.target_ms {
                self.next_ts = Some(first);
                self.dry_frames = 0;
                self.over_pops = 0;
                self.under_pops = 0;
                return self.pop(now);
            }
            return FrameSlot::Silence;
        };

        // Bring the delay to the target with whole frames, where the consumer does not
        // time-stretch (or the delay is far over).
        let error = self.delay_error_ms(now, 0.0).unwrap_or(0.0);
        // a whole frame moves the delay by a frame: act only past half a frame beyond
        self.over_pops = if error >= 1.5 * frame_ms { self.over_pops + 1 } else { 0 };
        self.under_pops = if error < -1.0 { self.under_pops + 1 } else { 0 };
        let far_over = error >= STRETCH_LIMIT_FRAMES * frame_ms;
        if (self.over_pops >= OFF_TARGET_POPS && !self.stretching) || far_over {
            self.over_pops = 0;
            self.stats.discarded += 1;
            let skipped = self.packets.first_key_value().is_some_and(|(&ts, _)| ts < next + frame);
            if skipped {
                self.packets.pop_first();
            }
            self.next_ts = Some(next + frame);
            return self.pop(now);
        }
        if self.under_pops >= OFF_TARGET_POPS && !self.stretching {
            // a frame of concealment, not moving the playout point: one frame more delay
            self.under_pops = 0;
            self.stats.inserted += 1;
            let following = self.packets.first_key_value().filter(|(&ts, _)| ts < next + frame);
            return FrameSlot::Conceal { next: following.map(|(_, (p, _))| p.payload.clone()) };
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
                self.lost(now);
                let following = self.packets.first_key_value().filter(|(&ts, _)| ts < next + 2 * frame);
                FrameSlot::Conceal { next: following.map(|(_, (p, _))| p.payload.clone()) }
            }
            None => {
                // Dry: an underrun at first, a silence (DTX) gap if it lasts. The
                // playout point stays put, so a late packet is still played when it
                // comes; the delay this adds is taken back towards the target.
                self.dry_frames += 1;
                if self.dry_frames == 1 {
                    // late or lost, the next packet was not here either: for a
                    // consumer with FEC, the target keeps a frame more for a while
                    self.stats.underruns += 1;
                    self.lost(now);
                }
                if self.dry_frames <= CONCEAL_LIMIT {
                    // Held for one frame, a late packet (or the next packet, with its
                    // redundant copy) may still come; past that, the frames are lost,
                    // not late: conceal them in their time, adding no more delay.
                    if self.dry_frames > 1 {
                        self.next_ts = Some(next + frame);
                    }
                    return FrameSlot::Conceal { next: None };
                }
                // A gap this long is silence (DTX) or a pause, not lateness:
                // re-buffer when the next talkspurt comes.
                self.stats.underruns -= 1;
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
        assert_eq!(out.iter().take_while(|p| **p == FrameSlot::Silence).count(), 2);
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
        // the target waits for nearly all of a 0-60 ms spread, and no longer
        assert!((50.0..=70.0).contains(&jittery), "target {jittery} ms under 0-60 ms of jitter");
        assert!(jb.stats().late < 300 / 20, "{:?}", jb.stats());
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

    /// Pushes 20 ms packets arriving `delay(i)` after their send time and pops every
    /// period; returns each frame, with the delay error just before it was popped.
    fn stream(
        jb: &mut JitterBuffer,
        range: std::ops::Range<u32>,
        delay: impl Fn(u32) -> u64,
    ) -> Vec<(FrameSlot, Option<f64>)> {
        let t0 = Instant::now() - PERIOD * range.start;
        let mut out = Vec::new();
        let mut arrivals: Vec<(Instant, u32)> =
            range.clone().map(|i| (t0 + PERIOD * i + Duration::from_millis(delay(i)), i)).collect();
        arrivals.sort();
        let mut next = 0;
        for k in range.start..range.end + 20 {
            let now = t0 + PERIOD * k;
            while next < arrivals.len() && arrivals[next].0 <= now {
                jb.push(pkt(arrivals[next].1), now);
                next += 1;
            }
            let err = jb.delay_error_ms(now, 0.0);
            out.push((jb.pop(now), err));
        }
        out
    }

    #[test]
    fn without_stretching_the_buffer_drops_whole_frames_after_a_delay_spike() {
        let mut c = cfg();
        c.min_delay_ms = 0;
        let mut jb = JitterBuffer::new(c);
        // 300 ms of delay for two seconds, then back to none
        let out = stream(&mut jb, 0..700, |i| if (50..150).contains(&i) { 300 } else { 0 });
        // the target followed the spike, so the delayed packets were waited for ...
        assert!(jb.stats().late <= 5, "{:?}", jb.stats());
        // ... and once the window forgot it, whole frames were dropped to come back
        assert!(jb.stats().discarded >= 10, "{:?}", jb.stats());
        assert!(jb.target_delay_ms() < 5.0, "{:?}", jb.stats());
        let err = out[680].1.unwrap_or(f64::MAX);
        assert!(err.abs() <= 30.0, "back near the target: {err} ms; {:?}", jb.stats());
        assert!(out.iter().filter(|s| matches!(s.0, FrameSlot::Packet(_))).count() > 650);
    }

    #[test]
    fn a_stretching_consumer_gets_no_frame_dropped_for_a_moderate_excess() {
        let mut c = cfg();
        c.min_delay_ms = 0;
        let mut jb = JitterBuffer::new(c);
        jb.set_stretching(true);
        // 100 ms of extra delay for a while: five frames over, under the limit
        stream(&mut jb, 0..300, |i| if (50..100).contains(&i) { 100 } else { 0 });
        assert_eq!(jb.stats().discarded, 0, "{:?}", jb.stats());
        assert_eq!(jb.stats().inserted, 0, "{:?}", jb.stats());
    }

    #[test]
    fn without_stretching_the_buffer_inserts_a_frame_when_the_target_rises() {
        let mut c = cfg();
        c.min_delay_ms = 0;
        let mut jb = JitterBuffer::new(c);
        // calm, then packets alternate between on time and 60 ms late
        stream(&mut jb, 0..100, |_| 0);
        assert!(jb.target_delay_ms() < 5.0);
        let out = stream(&mut jb, 100..400, |i| if i % 2 == 0 { 60 } else { 0 });
        assert!(jb.target_delay_ms() >= 55.0, "{:?}", jb.stats());
        assert!(jb.stats().inserted + jb.stats().underruns >= 2, "{:?}", jb.stats());
        let err = out[290].1.unwrap_or(f64::MAX);
        assert!(err > -25.0, "the delay rose to the target: {err} ms; {:?}", jb.stats());
    }

    #[test]
    fn a_loss_adds_half_a_frame_to_the_target_for_a_consumer_with_fec() {
        for fec in [false, true] {
            let mut c = cfg();
            c.min_delay_ms = 0;
            let mut jb = JitterBuffer::new(c);
            jb.set_fec_margin(fec);
            let t0 = Instant::now();
            for i in 0..40u32 {
                let now = t0 + PERIOD * i;
                if i != 20 {
                    jb.push(pkt(i), now);
                }
                jb.pop(now);
            }
            let target = jb.target_delay_ms();
            if fec {
                assert!((target - 10.0).abs() < 1.0, "half a frame for FEC: {target} ms");
            } else {
                assert!(target < 1.0, "no margin without FEC: {target} ms");
            }
        }
    }
}

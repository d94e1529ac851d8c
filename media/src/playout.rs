//! Playout: the receive half of the pipeline. Encoded frames go in with their arrival
//! time; once per frame period the consumer takes either PCM (decoded, recovered from
//! the next packet's FEC, or concealed by the codec's PLC) or, with no decode, the
//! encoded frame the jitter buffer schedules.
//!
//! With PCM, the playout delay follows the jitter buffer's target by time-stretching
//! speech, as NetEQ's accelerate and expand do: when the delay is more than half a
//! frame over the target, one pitch period is taken out of the decoded audio (two
//! periods become one, cross-faded); when it is under, one is repeated. Speech then
//! plays a little faster or slower for a moment instead of losing or gaining a whole
//! frame, and the drift between the two sides' clocks is absorbed the same way.
//!
//! It owns the jitter buffer, the decoder, the decoded audio not yet played and the
//! output level meter. It does not know where frames came from (RTP, WebRTC, a file)
//! or where PCM goes (a device, a recorder, a stream).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use dialtone_core::parts::AudioDecoder;

use crate::jitter::{FrameSlot, JitterBuffer, JitterConfig, JitterStats, MediaPacket, PushOutcome};
use crate::meter::Level;

/// What [`Playout::play_frame`] produced.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FrameSource {
    /// Decoded from its packet.
    Decoded,
    /// Recovered from the next packet's FEC.
    Fec,
    /// Concealed by the codec's PLC.
    Concealed,
    /// Silence (before playout starts, in a DTX gap, or while not receiving).
    Silence,
}

/// Time-stretching done so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StretchStats {
    /// Times a pitch period was taken out (the delay shortened).
    pub accelerated: u64,
    /// Times a pitch period was repeated (the delay lengthened).
    pub expanded: u64,
    /// Audio taken out, in samples at the codec's rate.
    pub removed_samples: u64,
    /// Audio added, in samples at the codec's rate.
    pub added_samples: u64,
}

/// The receive half of the pipeline. See the module docs.
pub struct Playout {
    jitter: JitterBuffer,
    decoder: Box<dyn AudioDecoder>,
    level: Level,
    receiving: bool,
    decode_failures: u32,
    undecodable: u64,
    /// Decoded audio not yet played.
    fifo: VecDeque<i16>,
    /// One decoded frame.
    frame: Vec<i16>,
    /// A frame's duration.
    frame_ms: f64,
    /// Samples per millisecond at the codec's rate (known from the first frame asked
    /// for: the codec's sample rate may differ from its RTP clock rate).
    per_ms: f64,
    stretch: StretchStats,
    last_held: Option<Duration>,
}

impl std::fmt::Debug for Playout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Playout")
            .field("jitter", &self.jitter)
            .field("receiving", &self.receiving)
            .field("decode_failures", &self.decode_failures)
            .field("stretch", &self.stretch)
            .finish_non_exhaustive()
    }
}

impl Playout {
    /// A playout for one stream, with its jitter buffer's settings and the codec's
    /// decoder.
    pub fn new(jitter: JitterConfig, decoder: Box<dyn AudioDecoder>) -> Self {
        let frame_ms = f64::from(jitter.frame_ts) * 1000.0 / f64::from(jitter.clock_rate.max(1));
        let mut buffer = JitterBuffer::new(jitter);
        buffer.set_stretching(true);
        Playout {
            jitter: buffer,
            decoder,
            level: Level::default(),
            receiving: true,
            decode_failures: 0,
            undecodable: 0,
            fifo: VecDeque::new(),
            frame: Vec::new(),
            frame_ms: frame_ms.max(1.0),
            per_ms: 1.0,
            stretch: StretchStats::default(),
            last_held: None,
        }
    }

    /// Takes an encoded frame that arrived at `now`.
    pub fn push(&mut self, frame: MediaPacket, now: Instant) -> PushOutcome {
        self.jitter.push(frame, now)
    }

    /// Takes a redundant copy of an earlier frame (RFC 2198) that came inside a later
    /// packet: it fills that frame's place if the frame is still due and missing.
    pub fn push_redundant(&mut self, frame: MediaPacket, now: Instant) -> bool {
        self.jitter.push_redundant(frame, now)
    }

    /// Whether frames are played (true) or silenced (false: the call's direction does
    /// not receive, as on hold). Frames are still taken from the jitter buffer while
    /// silenced, so it does not fill up.
    pub fn set_receiving(&mut self, receiving: bool) {
        self.receiving = receiving;
    }

    /// The frame to render now, written to `out` (one frame at the codec's rate), and
    /// where the audio decoded for it came from. A payload the decoder refuses is
    /// counted ([`undecodable`](Self::undecodable)) and concealed.
    pub fn play_frame(&mut self, out: &mut [i16], now: Instant) -> FrameSource {
        let n = out.len();
        if self.frame.len() != n {
            self.frame = vec![0; n];
            self.per_ms = n as f64 / self.frame_ms;
            self.fifo.reserve(n * 3);
        }
        let mut source = None;
        while self.fifo.len() < n {
            source = Some(self.decode_next(now));
        }
        let source = source.unwrap_or(FrameSource::Decoded);
        if matches!(source, FrameSource::Decoded | FrameSource::Fec) {
            self.time_stretch(now, n);
            while self.fifo.len() < n {
                self.decode_next(now);
            }
        }
        for (o, s) in out.iter_mut().zip(self.fifo.drain(..n)) {
            *o = s;
        }
        if !self.receiving {
            out.fill(0);
            return FrameSource::Silence;
        }
        self.level.add(out);
        source
    }

    /// Takes the next frame from the jitter buffer and appends its audio to the FIFO.
    fn decode_next(&mut self, now: Instant) -> FrameSource {
        let queued = self.fifo.len();
        let mut frame = std::mem::take(&mut self.frame);
        let source = match self.jitter.pop(now) {
            FrameSlot::Packet(p) => match self.decoder.decode(&p.payload, &mut frame) {
                Ok(_) => {
                    self.decode_failures = 0;
                    // it waited in the buffer, then behind the audio queued before it
                    self.last_held = self
                        .jitter
                        .last_held()
                        .map(|h| h + Duration::from_secs_f64(queued as f64 / self.per_ms / 1000.0));
                    FrameSource::Decoded
                }
                Err(e) => {
                    if self.undecodable == 0 {
                        tracing::warn!(
                            "dropping undecodable packets (first: {e}); further ones are only counted"
                        );
                    }
                    self.undecodable += 1;
                    self.decode_failures = self.decode_failures.saturating_add(1);
                    self.conceal(&mut frame)
                }
            },
            FrameSlot::Conceal { next: Some(next) } => match self.decoder.decode_fec(&next, &mut frame) {
                Ok(Some(_)) => {
                    // the codec recovers from FEC: worth a frame of delay while loss lasts
                    self.jitter.set_fec_margin(true);
                    FrameSource::Fec
                }
                _ => self.conceal(&mut frame),
            },
            FrameSlot::Conceal { next: None } => self.conceal(&mut frame),
            FrameSlot::Silence => {
                frame.fill(0);
                FrameSource::Silence
            }
        };
        self.fifo.extend(frame.iter().copied());
        self.frame = frame;
        source
    }

    /// Takes a pitch period out, or repeats one, to keep the delay at which the next
    /// packet is taken from the jitter buffer within a frame over the target.
    ///
    /// The next packet is taken at the tick when the FIFO no longer holds a frame:
    /// after as many whole frames as it holds now (this tick's included), which may be
    /// up to a frame before its audio plays. That is the delay the packet must arrive
    /// within, so that is the one kept at or over the target: repeating a period
    /// lengthens the FIFO until a take is put off by a tick; taking periods out
    /// shortens it until a take comes a tick early, which is done only while even that
    /// earlier take would wait for the target.
    fn time_stretch(&mut self, now: Instant, frame: usize) {
        let frame_ms = frame as f64 / self.per_ms;
        let until_next_take_ms = (self.fifo.len() / frame) as f64 * frame_ms;
        let Some(error) = self.jitter.delay_error_ms(now, until_next_take_ms) else { return };
        let accelerate = error >= frame_ms + SLACK_MS.1;
        if !accelerate && error >= -SLACK_MS.0 {
            return;
        }
        let x = self.fifo.make_contiguous();
        let Some((period, similarity, quiet)) = pitch_period(x, self.per_ms) else { return };
        // Taking out a period of speech that does not repeat would be heard;
        // repeating one is safer, and quiet audio can be stretched either way.
        let fits = quiet || if accelerate { similarity >= 0.6 } else { similarity >= 0.3 };
        if !fits {
            return;
        }
        if accelerate {
            shorten(&mut self.fifo, period);
            self.stretch.accelerated += 1;
            self.stretch.removed_samples += period as u64;
        } else {
            lengthen(&mut self.fifo, period);
            self.stretch.expanded += 1;
            self.stretch.added_samples += period as u64;
        }
    }

    /// Time-stretching done so far.
    pub fn stretch_stats(&self) -> &StretchStats {
        &self.stretch
    }

    /// The next frame as the jitter buffer schedules it, with no decode: for a
    /// consumer that keeps the encoding (a recorder writing Opus, a forwarder that
    /// wants paced frames). A lost frame comes as [`FrameSlot::Conceal`] with the next
    /// payload when it is here. The jitter buffer moves the delay by whole frames.
    pub fn pop_encoded(&mut self, now: Instant) -> FrameSlot {
        self.jitter.set_stretching(false);
        self.jitter.pop(now)
    }

    fn conceal(&mut self, out: &mut [i16]) -> FrameSource {
        match self.decoder.conceal(out) {
            Ok(_) => FrameSource::Concealed,
            Err(_) => {
                out.fill(0);
                FrameSource::Silence
            }
        }
    }

    /// The jitter buffer's counters and delay.
    pub fn jitter_stats(&self) -> &JitterStats {
        self.jitter.stats()
    }

    /// How long the packet of the last frame played had waited in the jitter buffer.
    pub fn last_held(&self) -> Option<Duration> {
        self.last_held
    }

    /// The level of what was played.
    pub fn level(&self) -> &Level {
        &self.level
    }

    /// The level meter, to take a sample from.
    pub fn level_mut(&mut self) -> &mut Level {
        &mut self.level
    }

    /// Decodes that failed in a row.
    pub fn consecutive_decode_failures(&self) -> u32 {
        self.decode_failures
    }

    /// Payloads the decoder refused, in all.
    pub fn undecodable(&self) -> u64 {
        self.undecodable
    }
}

/// How far under the target the delay may fall before the playout lengthens it, and
/// how far past a frame over it may rise before the playout shortens it. A take moves
/// the delay by a whole frame, and the shell's ticks wobble by a millisecond or two:
/// without this slack a delay near either edge swings from one to the other, a
/// stretch each way every few frames.
const SLACK_MS: (f64, f64) = (2.0, 3.0);
/// Shortest and longest pitch period searched, in ms (400 Hz to 100 Hz).
const PERIOD_MS: (f64, f64) = (2.5, 10.0);
/// Below this mean absolute level, audio is quiet enough to stretch anywhere.
const QUIET: f64 = 200.0;

/// The pitch period at the start of `x` that repeats best: the lag `T` whose next `T`
/// samples are most like the first `T`, with that normalised correlation, and whether
/// the audio is quiet. A coarse search on every `d`-th sample (`d` brings the rate to
/// about 8 kHz) is refined at the full rate.
fn pitch_period(x: &[i16], per_ms: f64) -> Option<(usize, f64, bool)> {
    let lo = (PERIOD_MS.0 * per_ms) as usize;
    let hi = ((PERIOD_MS.1 * per_ms) as usize).min(x.len() / 2);
    if lo < 2 || hi <= lo {
        return None;
    }
    let corr = |t: usize, step: usize| -> f64 {
        let (mut xy, mut xx, mut yy) = (0f64, 0f64, 0f64);
        for k in (0..t).step_by(step) {
            let (a, b) = (f64::from(x[k]), f64::from(x[t + k]));
            xy += a * b;
            xx += a * a;
            yy += b * b;
        }
        if xx == 0.0 || yy == 0.0 {
            0.0
        } else {
            xy / (xx * yy).sqrt()
        }
    };
    let d = ((per_ms / 8.0).round() as usize).max(1);
    let mut best = (lo, f64::MIN);
    for t in (lo..=hi).step_by(d) {
        let c = corr(t, d);
        if c > best.1 {
            best = (t, c);
        }
    }
    let (from, to) = (best.0.saturating_sub(d).max(lo), (best.0 + d).min(hi));
    best = (best.0, f64::MIN);
    for t in from..=to {
        let c = corr(t, 1);
        if c > best.1 {
            best = (t, c);
        }
    }
    let level =
        x[..2 * best.0].iter().map(|s| f64::from(s.unsigned_abs())).sum::<f64>() / (2 * best.0) as f64;
    Some((best.0, best.1, level < QUIET))
}

/// `a` fading into `b` at step `k` of `n` (linear).
fn fade(a: i16, b: i16, k: usize, n: usize) -> i16 {
    let w = k as f64 / n as f64;
    (f64::from(a) * (1.0 - w) + f64::from(b) * w).round() as i16
}

/// Takes one period out of the start of `x`: the first two periods become one, the
/// first fading into the second. Needs two periods.
fn shorten(x: &mut VecDeque<i16>, period: usize) {
    let s = x.make_contiguous();
    for k in 0..period {
        s[period + k] = fade(s[k], s[period + k], k, period);
    }
    x.drain(..period);
}

/// Repeats one period at the start of `x`: after the first period comes the second
/// fading into the first, then the second again. Needs two periods.
fn lengthen(x: &mut VecDeque<i16>, period: usize) {
    let s = x.make_contiguous();
    let blended: Vec<i16> = (0..period).map(|k| fade(s[period + k], s[k], k, period)).collect();
    let tail = x.split_off(period);
    x.extend(blended);
    x.extend(tail);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use dialtone_codec_opus::Opus;
    use dialtone_codec_pcmu::{Law, G711};
    use dialtone_core::parts::{AudioCodec, EncoderSettings};

    use super::*;

    const PERIOD: Duration = Duration::from_millis(20);

    fn tone(n: usize, rate: f64, k: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                ((((k * n + i) as f64) * 440.0 * 2.0 * std::f64::consts::PI / rate).sin() * 8000.0) as i16
            })
            .collect()
    }

    fn frames(codec: &dyn AudioCodec, count: usize) -> Vec<Vec<u8>> {
        let d = codec.descriptor();
        let mut settings = EncoderSettings::default();
        settings.fec = true;
        let mut enc = codec.new_encoder(&settings).unwrap_or_else(|e| panic!("{e}"));
        enc.set_packet_loss_percent(20);
        (0..count)
            .map(|k| {
                let mut buf = vec![0u8; 1500];
                let pcm = tone(d.samples_per_packet(), f64::from(d.sample_rate), k);
                let n = enc.encode(&pcm, &mut buf).unwrap_or_else(|e| panic!("{e}"));
                buf.truncate(n);
                buf
            })
            .collect()
    }

    fn playout(codec: &dyn AudioCodec) -> Playout {
        let d = codec.descriptor();
        let cfg = JitterConfig {
            clock_rate: d.clock_rate,
            frame_ts: d.clock_rate * d.ptime_ms / 1000,
            min_delay_ms: 0,
            max_packets: 50,
        };
        Playout::new(cfg, codec.new_decoder().unwrap_or_else(|e| panic!("{e}")))
    }

    fn packet(k: usize, frame_ts: u32, payload: Vec<u8>) -> MediaPacket {
        MediaPacket { seq: k as u16, timestamp: k as u32 * frame_ts, ssrc: 1, marker: k == 0, payload }
    }

    /// Plays `count` frames, leaving out the ones in `lost`, and says where each came from.
    fn play(codec: &dyn AudioCodec, count: usize, lost: &[usize]) -> (Vec<FrameSource>, Playout) {
        let d = codec.descriptor().clone();
        let frame_ts = d.clock_rate * d.ptime_ms / 1000;
        let mut p = playout(codec);
        let encoded = frames(codec, count);
        let t0 = Instant::now();
        let mut out = vec![0i16; d.samples_per_packet()];
        let mut sources = Vec::new();
        for (k, payload) in encoded.into_iter().enumerate() {
            let now = t0 + PERIOD * k as u32;
            if !lost.contains(&k) {
                p.push(packet(k, frame_ts, payload), now);
            }
            sources.push(p.play_frame(&mut out, now));
        }
        (sources, p)
    }

    #[test]
    fn frames_are_decoded_and_a_lost_one_is_concealed() {
        let codec = G711::new(Law::Mu);
        let (sources, mut p) = play(&codec, 10, &[5]);
        assert_eq!(sources.iter().filter(|s| **s == FrameSource::Decoded).count(), 8, "{sources:?}");
        assert!(sources.contains(&FrameSource::Concealed), "{sources:?}");
        assert!(p.level_mut().take() > 1000, "a 8000-peak tone was played");
    }

    #[test]
    fn an_opus_loss_is_recovered_from_the_next_packets_fec() {
        let codec = Opus::default();
        // with a frame of delay, the next packet is here when the lost one is due
        let d = codec.descriptor().clone();
        let frame_ts = d.clock_rate * d.ptime_ms / 1000;
        let mut p = playout(&codec);
        let encoded = frames(&codec, 12);
        let t0 = Instant::now();
        let mut out = vec![0i16; d.samples_per_packet()];
        let mut sources = Vec::new();
        for (k, payload) in encoded.into_iter().enumerate() {
            let now = t0 + PERIOD * k as u32;
            if k != 6 {
                p.push(packet(k, frame_ts, payload), now);
            }
            if k >= 1 {
                sources.push(p.play_frame(&mut out, now));
            }
        }
        assert!(sources.contains(&FrameSource::Fec), "{sources:?}");
    }

    #[test]
    fn frames_pass_encoded_with_no_decode_and_a_gap_is_a_conceal_slot() {
        let codec = G711::new(Law::A);
        let mut p = playout(&codec);
        let t0 = Instant::now();
        // every packet but the fourth has arrived before playout asks
        for k in (0..6usize).filter(|k| *k != 3) {
            p.push(packet(k, 160, vec![k as u8; 160]), t0);
        }
        let slots: Vec<FrameSlot> = (0..6u32).map(|k| p.pop_encoded(t0 + PERIOD * k)).collect();
        let first = |s: &FrameSlot| match s {
            FrameSlot::Packet(m) => Some(m.payload[0]),
            _ => None,
        };
        assert_eq!(
            slots.iter().map(first).collect::<Vec<_>>(),
            [Some(0), Some(1), Some(2), None, Some(4), Some(5)]
        );
        // the gap comes with the next frame's payload, for FEC
        assert_eq!(slots[3], FrameSlot::Conceal { next: Some(vec![4; 160]) });
    }

    #[test]
    fn a_playout_that_does_not_receive_plays_silence_and_still_drains() {
        let codec = G711::new(Law::Mu);
        let mut p = playout(&codec);
        p.set_receiving(false);
        let t0 = Instant::now();
        let mut out = vec![0i16; 160];
        let encoded = frames(&codec, 5);
        for (k, payload) in encoded.into_iter().enumerate() {
            let now = t0 + PERIOD * k as u32;
            p.push(packet(k, 160, payload), now);
            assert_eq!(p.play_frame(&mut out, now), FrameSource::Silence);
            assert!(out.iter().all(|s| *s == 0));
        }
        assert!(p.jitter_stats().queued == 5 && p.jitter_stats().discarded == 0);
    }

    #[test]
    fn an_undecodable_payload_is_counted_and_concealed() {
        let codec: Arc<dyn AudioCodec> = Arc::new(Opus::default());
        let mut p = playout(codec.as_ref());
        let t0 = Instant::now();
        let mut out = vec![0i16; 960];
        // an Opus TOC byte announcing more frames than the packet holds
        p.push(packet(0, 960, vec![0xff, 0xff, 0xff]), t0);
        let s = p.play_frame(&mut out, t0);
        assert!(matches!(s, FrameSource::Concealed | FrameSource::Silence), "{s:?}");
        assert_eq!(p.undecodable(), 1);
        assert_eq!(p.consecutive_decode_failures(), 1);
    }

    /// µ-law frames of a 160 Hz tone (a 6.25 ms period, as a voice's pitch).
    struct TonePackets(Box<dyn dialtone_core::parts::AudioEncoder>);

    impl TonePackets {
        fn new(codec: &G711) -> Self {
            TonePackets(codec.new_encoder(&EncoderSettings::default()).unwrap_or_else(|e| panic!("{e}")))
        }

        /// The `k`th frame.
        fn frame(&mut self, k: usize) -> Vec<u8> {
            let pcm: Vec<i16> = (0..160)
                .map(|i| {
                    (((k * 160 + i) as f64 * 160.0 * 2.0 * std::f64::consts::PI / 8000.0).sin() * 8000.0)
                        as i16
                })
                .collect();
            let mut b = vec![0u8; 160];
            self.0.encode(&pcm, &mut b).unwrap_or_else(|e| panic!("{e}"));
            b
        }
    }

    /// A 160 Hz tone (a 6.25 ms period, as a voice's pitch) in µ-law frames, arriving
    /// `delay(k)` ms after they were sent, played every period: the output, the
    /// playout, and the delay error at the end.
    fn stretched(delay: impl Fn(usize) -> u64, frames: usize) -> (Vec<i16>, Playout, f64) {
        let codec = G711::new(Law::Mu);
        let mut tone = TonePackets::new(&codec);
        let mut p = playout(&codec);
        let t0 = Instant::now();
        let mut arrivals: Vec<(Instant, usize, Vec<u8>)> = (0..frames)
            .map(|k| (t0 + PERIOD * k as u32 + Duration::from_millis(delay(k)), k, tone.frame(k)))
            .collect();
        arrivals.sort_by_key(|a| (a.0, a.1));
        let (mut out, mut next, mut err) = (Vec::new(), 0, f64::MAX);
        let mut frame = vec![0i16; 160];
        for k in 0..frames + 10 {
            let now = t0 + PERIOD * k as u32;
            while next < arrivals.len() && arrivals[next].0 <= now {
                let (_, i, b) = arrivals[next].clone();
                p.push(packet(i, 160, b), now);
                next += 1;
            }
            if k == frames - 5 {
                // the delay at which the next packet will be taken (see time_stretch)
                let until_next_take = (p.fifo.len() / 160) as f64 * 20.0;
                err = p.jitter.delay_error_ms(now, until_next_take).unwrap_or(f64::MAX);
            }
            p.play_frame(&mut frame, now);
            out.extend_from_slice(&frame);
        }
        (out, p, err)
    }

    /// The largest step between two samples: a tone of 8000 peak at 160 Hz moves at
    /// most about 1,000 a sample; a splice out of phase jumps far more.
    fn largest_step(pcm: &[i16]) -> i32 {
        pcm.windows(2).map(|w| (i32::from(w[1]) - i32::from(w[0])).abs()).max().unwrap_or(0)
    }

    #[test]
    fn a_delay_over_the_target_is_taken_out_a_pitch_period_at_a_time() {
        // 120 ms of extra delay for a second, then none: once the window has forgotten
        // the spike, the playout speeds up instead of dropping frames
        let (out, p, err) = stretched(|k| if (25..75).contains(&k) { 120 } else { 0 }, 600);
        let s = p.stretch_stats();
        assert!(s.accelerated >= 10, "{s:?}");
        assert_eq!(p.jitter_stats().discarded, 0, "no whole frame dropped: {:?}", p.jitter_stats());
        // each cut is a whole pitch period (50 samples at 8 kHz), give or take
        assert!(s.removed_samples >= 45 * s.accelerated && s.removed_samples <= 55 * s.accelerated, "{s:?}");
        assert!((-2.0..=23.0).contains(&err), "the delay is back within a frame over the target: {err} ms");
        let steady = &out[160 * 100..160 * 580];
        assert!(largest_step(steady) < 1600, "a click: {}", largest_step(steady));
    }

    #[test]
    fn a_delay_under_a_rising_target_is_lengthened_a_pitch_period_at_a_time() {
        // calm, then every other packet 60 ms late: the target rises, and the playout
        // slows for a moment instead of inserting concealment
        let (_, p, _) = stretched(|k| if k >= 100 && k % 2 == 0 { 60 } else { 0 }, 500);
        let s = p.stretch_stats();
        assert!(s.expanded >= 3, "{s:?}; {:?}", p.jitter_stats());
        assert_eq!(p.jitter_stats().inserted, 0, "{:?}", p.jitter_stats());
    }

    fn tone_160(rate: f64, len: usize) -> VecDeque<i16> {
        (0..len)
            .map(|i| ((i as f64 * 160.0 * 2.0 * std::f64::consts::PI / rate).sin() * 8000.0) as i16)
            .collect()
    }

    #[test]
    fn the_pitch_period_is_found_and_a_splice_of_it_is_seamless() {
        for (rate, per_ms) in [(8000.0, 8.0), (16_000.0, 16.0), (48_000.0, 48.0)] {
            let period_of_160_hz = (rate / 160.0) as usize;
            let mut x = tone_160(rate, (rate * 0.04) as usize);
            let (period, similarity, quiet) =
                pitch_period(x.make_contiguous(), per_ms).unwrap_or_else(|| panic!("a period at {rate}"));
            assert!(period.abs_diff(period_of_160_hz) <= 1, "{rate} Hz: {period} for {period_of_160_hz}");
            assert!(similarity > 0.95 && !quiet, "{similarity} {quiet}");
            let len = x.len();
            let limit = (8000.0 * 2.0 * std::f64::consts::PI * 160.0 / rate * 1.5) as i32;
            shorten(&mut x, period);
            assert_eq!(x.len(), len - period);
            assert!(
                largest_step(x.make_contiguous()) < limit,
                "{rate}: {}",
                largest_step(x.make_contiguous())
            );
            let mut y = tone_160(rate, len);
            lengthen(&mut y, period);
            assert_eq!(y.len(), len + period);
            assert!(
                largest_step(y.make_contiguous()) < limit,
                "{rate}: {}",
                largest_step(y.make_contiguous())
            );
        }
        // a wrong period would click: the test can tell
        let mut z = tone_160(8000.0, 320);
        shorten(&mut z, 37);
        assert!(largest_step(z.make_contiguous()) > 1000);
        // silence is quiet, and noise does not repeat
        assert!(pitch_period(&[0i16; 320], 8.0).is_some_and(|(_, _, quiet)| quiet));
        let mut r = 1u32;
        let noise: Vec<i16> = (0..320)
            .map(|_| {
                r = r.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (r >> 16) as i16
            })
            .collect();
        assert!(pitch_period(&noise, 8.0).is_some_and(|(_, c, quiet)| c < 0.5 && !quiet));
    }

    #[test]
    fn a_delay_at_the_edge_of_a_frame_with_wobbling_ticks_is_left_alone() {
        // Packets come 1 ms after a tick, so the next is taken 19 ms after it came:
        // just under a frame over the target. Every other tick comes 3 ms late. A
        // delay this close to an edge must not swing a stretch each way every few
        // frames (it did, with too little slack).
        let codec = G711::new(Law::Mu);
        let mut tone = TonePackets::new(&codec);
        let mut p = playout(&codec);
        let t0 = Instant::now();
        let mut frame = vec![0i16; 160];
        for k in 0..500u32 {
            p.push(
                packet(k as usize, 160, tone.frame(k as usize)),
                t0 + PERIOD * k + Duration::from_millis(1),
            );
            let tick = t0 + PERIOD * (k + 1) + Duration::from_millis(if k % 2 == 1 { 3 } else { 0 });
            p.play_frame(&mut frame, tick);
        }
        let s = p.stretch_stats();
        assert!(s.accelerated + s.expanded <= 1, "{s:?}; {:?}", p.jitter_stats());
        assert_eq!(p.jitter_stats().underruns, 0, "{:?}", p.jitter_stats());
    }
}

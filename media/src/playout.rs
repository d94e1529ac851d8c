//! Playout: the receive half of the pipeline. Encoded frames go in with their arrival
//! time; once per frame period the consumer takes either PCM (decoded, recovered from
//! the next packet's FEC, or concealed by the codec's PLC) or, with no decode, the
//! encoded frame the jitter buffer schedules.
//!
//! It owns the jitter buffer, the decoder and the output level meter. It does not know
//! where frames came from (RTP, WebRTC, a file) or where PCM goes (a device, a
//! recorder, a stream).

use std::time::Instant;

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

/// The receive half of the pipeline. See the module docs.
pub struct Playout {
    jitter: JitterBuffer,
    decoder: Box<dyn AudioDecoder>,
    level: Level,
    receiving: bool,
    decode_failures: u32,
    undecodable: u64,
}

impl std::fmt::Debug for Playout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Playout")
            .field("jitter", &self.jitter)
            .field("receiving", &self.receiving)
            .field("decode_failures", &self.decode_failures)
            .finish_non_exhaustive()
    }
}

impl Playout {
    /// A playout for one stream, with its jitter buffer's settings and the codec's
    /// decoder.
    pub fn new(jitter: JitterConfig, decoder: Box<dyn AudioDecoder>) -> Self {
        Playout {
            jitter: JitterBuffer::new(jitter),
            decoder,
            level: Level::default(),
            receiving: true,
            decode_failures: 0,
            undecodable: 0,
        }
    }

    /// Takes an encoded frame that arrived at `now`.
    pub fn push(&mut self, frame: MediaPacket, now: Instant) -> PushOutcome {
        self.jitter.push(frame, now)
    }

    /// Whether frames are played (true) or silenced (false: the call's direction does
    /// not receive, as on hold). Frames are still taken from the jitter buffer while
    /// silenced, so it does not fill up.
    pub fn set_receiving(&mut self, receiving: bool) {
        self.receiving = receiving;
    }

    /// The frame to render now, written to `out` (one frame at the codec's rate), and
    /// where it came from. A payload the decoder refuses is counted
    /// ([`undecodable`](Self::undecodable)) and concealed.
    pub fn play_frame(&mut self, out: &mut [i16], now: Instant) -> FrameSource {
        let source = match self.jitter.pop(now) {
            FrameSlot::Packet(p) => match self.decoder.decode(&p.payload, out) {
                Ok(_) => {
                    self.decode_failures = 0;
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
                    self.conceal(out)
                }
            },
            FrameSlot::Conceal { next: Some(next) } => match self.decoder.decode_fec(&next, out) {
                Ok(Some(_)) => FrameSource::Fec,
                _ => self.conceal(out),
            },
            FrameSlot::Conceal { next: None } => self.conceal(out),
            FrameSlot::Silence => {
                out.fill(0);
                FrameSource::Silence
            }
        };
        if !self.receiving {
            out.fill(0);
            return FrameSource::Silence;
        }
        self.level.add(out);
        source
    }

    /// The next frame as the jitter buffer schedules it, with no decode: for a
    /// consumer that keeps the encoding (a recorder writing Opus, a forwarder that
    /// wants paced frames). A lost frame comes as [`FrameSlot::Conceal`] with the next
    /// payload when it is here.
    pub fn pop_encoded(&mut self, now: Instant) -> FrameSlot {
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
    pub fn last_held(&self) -> Option<std::time::Duration> {
        self.jitter.last_held()
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
}

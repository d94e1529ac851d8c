//! RFC 4733 telephone-events: the sender's schedule of event packets and the
//! receiver's de-duplication, both sans-IO.
//!
//! A digit is sent as packets every frame period sharing one RTP timestamp (the
//! event's start), the first with the marker bit, each with the duration so far; it
//! lasts 100 ms and its final packet (end bit set) is sent three times, as RFC 4733
//! §2.5.1.4 asks. Digits are 60 ms apart; `w` is a 500 ms pause.

use std::collections::VecDeque;

use dialtone_core::{ErrorCode, VoiceError};

/// How long a digit sounds.
pub const TONE_MS: u32 = 100;
/// The gap after a digit.
pub const GAP_MS: u32 = 60;
/// The pause `w` stands for.
pub const PAUSE_MS: u32 = 500;

/// The event code of a DTMF character.
pub fn event_code(c: char) -> Option<u8> {
    Some(match c {
        '0'..='9' => c as u8 - b'0',
        '*' => 10,
        '#' => 11,
        'A'..='D' => 12 + (c as u8 - b'A'),
        _ => return None,
    })
}

/// The character of an event code.
pub fn event_char(code: u8) -> Option<char> {
    Some(match code {
        0..=9 => (b'0' + code) as char,
        10 => '*',
        11 => '#',
        12..=15 => (b'A' + code - 12) as char,
        _ => return None,
    })
}

/// One telephone-event payload (4 bytes).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct EventPayload {
    /// The event code (0-15 for DTMF).
    pub event: u8,
    /// Whether this is the event's end.
    pub end: bool,
    /// The volume in -dBm0 (0-63).
    pub volume: u8,
    /// The duration so far, in RTP timestamp units.
    pub duration: u16,
}

impl EventPayload {
    /// The four bytes.
    pub fn to_bytes(self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [self.event, (u8::from(self.end) << 7) | (self.volume & 0x3F), d[0], d[1]]
    }

    /// Reads four bytes (more are ignored: RFC 4733 allows redundancy blocks).
    pub fn parse(b: &[u8]) -> Option<EventPayload> {
        let b: &[u8; 4] = b.get(..4)?.try_into().ok()?;
        Some(EventPayload {
            event: b[0],
            end: b[1] & 0x80 != 0,
            volume: b[1] & 0x3F,
            duration: u16::from_be_bytes([b[2], b[3]]),
        })
    }
}

/// One packet the sender should send now.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct EventPacket {
    /// The payload.
    pub payload: EventPayload,
    /// Marker bit (first packet of the event).
    pub marker: bool,
    /// Whether this packet starts a new event, so it takes a new RTP timestamp.
    pub new_event: bool,
}

#[derive(Debug)]
enum Step {
    Tone(u8),
    Quiet(u32),
}

/// The sender's queue, ticked once per frame period.
#[derive(Debug)]
pub struct DtmfSender {
    frame_ms: u32,
    clock_rate: u32,
    queue: VecDeque<Step>,
    /// The current tone: its code and frames sent so far.
    current: Option<(u8, u32)>,
    quiet_frames: u32,
}

impl DtmfSender {
    /// A sender for frames of `frame_ms` at `clock_rate`.
    pub fn new(frame_ms: u32, clock_rate: u32) -> Self {
        DtmfSender { frame_ms, clock_rate, queue: VecDeque::new(), current: None, quiet_frames: 0 }
    }

    /// Queues digits (`0-9 * # A-D`, `w` for a pause). Anything else is 31100 and
    /// queues nothing.
    pub fn queue(&mut self, digits: &str) -> Result<(), VoiceError> {
        let mut steps = Vec::new();
        for c in digits.chars() {
            match (c, event_code(c)) {
                ('w', _) => steps.push(Step::Quiet(PAUSE_MS)),
                (_, Some(code)) => {
                    steps.push(Step::Tone(code));
                    steps.push(Step::Quiet(GAP_MS));
                }
                (_, None) => {
                    return Err(VoiceError::new(
                        ErrorCode::MalformedRequest,
                        format!("{c:?} is not a DTMF digit"),
                    ))
                }
            }
        }
        self.queue.extend(steps);
        Ok(())
    }

    /// Whether digits are being sent (audio packets should pause meanwhile).
    pub fn is_active(&self) -> bool {
        self.current.is_some() || matches!(self.queue.front(), Some(Step::Tone(_)))
    }

    /// Whether nothing is queued.
    pub fn is_idle(&self) -> bool {
        self.current.is_none() && self.queue.is_empty() && self.quiet_frames == 0
    }

    /// The packets for this frame period (none, one, or the three end packets).
    pub fn tick(&mut self) -> Vec<EventPacket> {
        let tone_frames = TONE_MS.div_ceil(self.frame_ms);
        let frame_ts = self.clock_rate * self.frame_ms / 1000;
        if let Some((code, sent)) = self.current {
            let sent = sent + 1;
            let duration = u16::try_from(sent * frame_ts).unwrap_or(u16::MAX);
            let payload = EventPayload { event: code, end: sent >= tone_frames, volume: 10, duration };
            if payload.end {
                self.current = None;
                let p = EventPacket { payload, marker: false, new_event: false };
                return vec![p; 3];
            }
            self.current = Some((code, sent));
            return vec![EventPacket { payload, marker: false, new_event: false }];
        }
        if self.quiet_frames > 0 {
            self.quiet_frames -= 1;
            return Vec::new();
        }
        match self.queue.pop_front() {
            None => Vec::new(),
            Some(Step::Quiet(ms)) => {
                self.quiet_frames = ms.div_ceil(self.frame_ms).saturating_sub(1);
                Vec::new()
            }
            Some(Step::Tone(code)) => {
                self.current = Some((code, 1));
                let duration = u16::try_from(frame_ts).unwrap_or(u16::MAX);
                let payload = EventPayload { event: code, end: false, volume: 10, duration };
                vec![EventPacket { payload, marker: true, new_event: true }]
            }
        }
    }
}

/// The receiver's de-duplication: each event (RTP timestamp) is reported once.
#[derive(Debug, Default)]
pub struct DtmfReceiver {
    last_timestamp: Option<u32>,
}

impl DtmfReceiver {
    /// Takes a telephone-event packet; returns the digit the first time its event is
    /// seen.
    pub fn receive(&mut self, timestamp: u32, payload: &[u8]) -> Option<char> {
        let p = EventPayload::parse(payload)?;
        if self.last_timestamp == Some(timestamp) {
            return None;
        }
        self.last_timestamp = Some(timestamp);
        event_char(p.event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trip() {
        let p = EventPayload { event: 11, end: true, volume: 10, duration: 800 };
        assert_eq!(p.to_bytes(), [11, 0x8A, 0x03, 0x20]);
        assert_eq!(EventPayload::parse(&p.to_bytes()), Some(p));
        assert_eq!(EventPayload::parse(&[1, 2, 3]), None);
    }

    #[test]
    fn a_digit_is_five_packets_then_three_ends_and_a_gap() {
        let mut s = DtmfSender::new(20, 8000);
        s.queue("5").unwrap();
        let mut ticks = Vec::new();
        while !s.is_idle() {
            ticks.push(s.tick());
        }
        let flat: Vec<EventPacket> = ticks.iter().flatten().copied().collect();
        assert_eq!(flat.len(), 4 + 3);
        assert!(flat[0].marker && flat[0].new_event);
        assert!(flat[1..].iter().all(|p| !p.marker && !p.new_event && p.payload.event == 5));
        assert!(flat[4..].iter().all(|p| p.payload.end && p.payload.duration == 800));
        let durations: Vec<u16> = flat[..4].iter().map(|p| p.payload.duration).collect();
        assert_eq!(durations, [160, 320, 480, 640]);
        // 5 frames of tone, then the 60 ms gap (3 frames)
        assert_eq!(ticks.len(), 5 + 3);
    }

    #[test]
    fn w_pauses_half_a_second_and_bad_digits_are_refused() {
        let mut s = DtmfSender::new(20, 8000);
        s.queue("w").unwrap();
        let mut n = 0;
        while !s.is_idle() {
            assert!(s.tick().is_empty());
            n += 1;
        }
        assert_eq!(n, 25);
        assert_eq!(s.queue("1x").unwrap_err().code(), 31100);
        assert!(s.is_idle(), "nothing of a bad string is queued");
    }

    #[test]
    fn the_receiver_reports_each_event_once() {
        let mut r = DtmfReceiver::default();
        let p = |end| EventPayload { event: 11, end, volume: 10, duration: 160 }.to_bytes();
        assert_eq!(r.receive(1000, &p(false)), Some('#'));
        assert_eq!(r.receive(1000, &p(false)), None);
        assert_eq!(r.receive(1000, &p(true)), None);
        assert_eq!(r.receive(2000, &p(false)), Some('#'));
        assert_eq!(r.receive(3000, &[200, 0, 0, 0]), None, "not a DTMF event");
    }
}

//! The frame clock: when each frame period falls due, on time passed in.
//!
//! The shell sleeps until [`FrameClock::poll_timeout`], then calls
//! [`FrameClock::due`] until it says no, running one frame each time. A shell that was
//! late (a busy machine) catches up with a short burst of frames, as a device would
//! drain its buffer; one that was late by more than [`MAX_BURST`] periods skips ahead
//! instead, so a stalled process does not answer with a flood of packets.

use std::time::{Duration, Instant};

/// The most frame periods a late shell catches up on; beyond, the clock skips ahead.
pub const MAX_BURST: u32 = 10;

/// The frame clock. See the module docs.
#[derive(Clone, Debug)]
pub struct FrameClock {
    period: Duration,
    next: Instant,
    skipped: u64,
}

impl FrameClock {
    /// A clock of `period` whose first frame is due at `start`.
    pub fn new(period: Duration, start: Instant) -> Self {
        FrameClock { period: period.max(Duration::from_millis(1)), next: start, skipped: 0 }
    }

    /// When the next frame is due.
    pub fn poll_timeout(&self) -> Instant {
        self.next
    }

    /// The frame period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Whether a frame is due at `now`; if so, the clock moves on by one period.
    pub fn due(&mut self, now: Instant) -> bool {
        self.take(now).is_some()
    }

    /// The time the frame due at `now` was scheduled for, if one is; the clock moves
    /// on by one period. A pipeline driven at the scheduled times sees the frames'
    /// cadence, not the wobble of the shell's wake-ups.
    pub fn take(&mut self, now: Instant) -> Option<Instant> {
        if now < self.next {
            return None;
        }
        let behind = now.saturating_duration_since(self.next);
        if behind >= self.period * MAX_BURST {
            let periods = (behind.as_nanos() / self.period.as_nanos()) as u32;
            let skip = periods.saturating_sub(MAX_BURST - 1);
            self.skipped += u64::from(skip);
            self.next += self.period * skip;
        }
        let scheduled = self.next;
        self.next += self.period;
        Some(scheduled)
    }

    /// Frame periods skipped because the shell was too late to catch up.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Duration = Duration::from_millis(20);

    fn drain(c: &mut FrameClock, now: Instant) -> u32 {
        let mut n = 0;
        while c.due(now) {
            n += 1;
            assert!(n <= MAX_BURST, "a burst is bounded");
        }
        n
    }

    #[test]
    fn frames_fall_due_once_a_period_from_the_start() {
        let t0 = Instant::now();
        let mut c = FrameClock::new(P, t0);
        assert_eq!(drain(&mut c, t0), 1);
        assert_eq!(c.poll_timeout(), t0 + P);
        assert_eq!(drain(&mut c, t0 + P - Duration::from_millis(1)), 0);
        assert_eq!(drain(&mut c, t0 + P), 1);
        // 1 s of periods, polled on time, is 50 frames
        let mut n = 0;
        for k in 2..52u32 {
            n += drain(&mut c, t0 + P * k);
        }
        assert_eq!(n, 50);
        assert_eq!(c.skipped(), 0);
    }

    #[test]
    fn a_late_shell_catches_up_with_a_bounded_burst() {
        let t0 = Instant::now();
        let mut c = FrameClock::new(P, t0);
        assert_eq!(drain(&mut c, t0), 1);
        // 3 periods late: 4 frames now (the due one and 3 missed), each named by the
        // time it was due
        let late = t0 + P * 4;
        let times: Vec<Instant> = std::iter::from_fn(|| c.take(late)).collect();
        assert_eq!(times, [t0 + P, t0 + P * 2, t0 + P * 3, t0 + P * 4]);
        assert_eq!(c.skipped(), 0);
        // 5 s late: a burst of MAX_BURST, the rest skipped, and the cadence goes on
        let late = t0 + Duration::from_secs(5);
        assert_eq!(drain(&mut c, late), MAX_BURST);
        assert!(c.skipped() > 200, "{}", c.skipped());
        assert!(c.poll_timeout() > late && c.poll_timeout() <= late + P);
    }
}

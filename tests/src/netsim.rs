//! A simulated network for media tests and benches, deterministic from a seed: loss
//! models (random, or Gilbert-Elliott bursts) and a one-way link that delays each
//! packet by a uniform draw (which reorders them).

use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// How packets are lost.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Loss {
    /// Each packet independently, with this probability.
    Random(f64),
    /// Gilbert-Elliott: the mean loss, and the mean burst length in packets.
    Bursts {
        /// The share of packets lost, in the long run.
        mean: f64,
        /// The mean length of a burst of losses, in packets.
        burst: f64,
    },
}

/// A seeded generator (xorshift) with a loss model.
#[derive(Clone, Debug)]
pub struct Impairer {
    rng: u64,
    in_burst: bool,
    loss: Loss,
}

impl Impairer {
    /// A generator starting from `state` (made odd), losing by `loss`.
    pub fn new(loss: Loss, state: u64) -> Self {
        Impairer { rng: state | 1, in_burst: false, loss }
    }

    /// A uniform draw in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Whether the next packet is lost (one draw).
    pub fn lost(&mut self) -> bool {
        match self.loss {
            Loss::Random(p) => self.uniform() < p,
            Loss::Bursts { mean, burst } => {
                // leave a burst with 1/burst; enter one so that the mean loss holds
                let leave = 1.0 / burst;
                let enter = mean * leave / (1.0 - mean);
                let r = self.uniform();
                self.in_burst = if self.in_burst { r >= leave } else { r < enter };
                self.in_burst
            }
        }
    }
}

/// A one-way link on virtual time: packets are lost by a model, and each one kept is
/// delayed by whole milliseconds drawn uniformly from `delay_ms` (low inclusive, high
/// exclusive), so packets overtake one another.
#[derive(Debug)]
pub struct Link {
    impairer: Impairer,
    delay_ms: (u64, u64),
    queue: BinaryHeap<std::cmp::Reverse<(Instant, u64, Vec<u8>)>>,
    sent: u64,
}

impl Link {
    /// A link losing by `loss` and delaying by `delay_ms`, from the generator state
    /// `state`.
    pub fn new(loss: Loss, delay_ms: (u64, u64), state: u64) -> Self {
        Link { impairer: Impairer::new(loss, state), delay_ms, queue: BinaryHeap::new(), sent: 0 }
    }

    /// Sends a packet at `now` (one draw for the loss, one for the delay).
    pub fn send(&mut self, packet: Vec<u8>, now: Instant) {
        if self.impairer.lost() {
            return;
        }
        let spread = self.delay_ms.1.saturating_sub(self.delay_ms.0);
        let delay = self.delay_ms.0 + (self.impairer.uniform() * spread as f64) as u64;
        self.sent += 1;
        self.queue.push(std::cmp::Reverse((now + Duration::from_millis(delay), self.sent, packet)));
    }

    /// The packets that have arrived by `now`, in the order they arrived.
    pub fn due(&mut self, now: Instant) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while self.queue.peek().is_some_and(|std::cmp::Reverse((t, _, _))| *t <= now) {
            if let Some(std::cmp::Reverse((_, _, p))) = self.queue.pop() {
                out.push(p);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_and_bursty_loss_keep_their_mean_and_bursts_come_in_runs() {
        for loss in [Loss::Random(0.1), Loss::Bursts { mean: 0.1, burst: 3.0 }] {
            let mut i = Impairer::new(loss, 7);
            let lost: Vec<bool> = (0..200_000).map(|_| i.lost()).collect();
            let share = lost.iter().filter(|l| **l).count() as f64 / lost.len() as f64;
            assert!((share - 0.1).abs() < 0.01, "{loss:?}: {share}");
            let runs = lost.windows(2).filter(|w| w[0] && !w[1]).count() as f64;
            let mean_run = lost.iter().filter(|l| **l).count() as f64 / runs;
            match loss {
                Loss::Random(_) => assert!(mean_run < 1.3, "{mean_run}"),
                Loss::Bursts { .. } => assert!((mean_run - 3.0).abs() < 0.3, "{mean_run}"),
            }
        }
    }

    #[test]
    fn a_link_delays_within_its_range_and_reorders() {
        let mut link = Link::new(Loss::Random(0.0), (10, 70), 3);
        let t0 = Instant::now();
        for k in 0..100u8 {
            link.send(vec![k], t0 + Duration::from_millis(20) * u32::from(k));
        }
        assert!(link.due(t0 + Duration::from_millis(9)).is_empty());
        let all = link.due(t0 + Duration::from_secs(10));
        assert_eq!(all.len(), 100);
        assert!(all.windows(2).any(|w| w[0][0] > w[1][0]), "packets overtake each other");
    }
}

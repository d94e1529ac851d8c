//! Quality warnings and their detector, a sans-IO core fed one sample a second.
//!
//! | warning | raised when | cleared when |
//! |---|---|---|
//! | `HighRtt` | RTT > 400 ms in 3 of the last 5 samples | fewer than 3 of the last 5 |
//! | `HighJitter` | jitter > 30 ms in 3 of the last 5 | fewer than 3 of the last 5 |
//! | `LowMos` | MOS < 3.5 in 3 of the last 5 | fewer than 3 of the last 5 |
//! | `HighPacketsLostFraction` | loss averaged over the last 7 samples > 3 % | that average <= 1 % |
//! | `ConstantAudioInputLevel` | std. deviation of the last 10 input levels <= 1 % of full scale, not muted | > 3 % of full scale, or muted |
//! | `ConstantAudioOutputLevel` | std. deviation of the last 10 output levels <= 1 % of full scale | > 3 % of full scale |
//!
//! The hysteresis on loss and levels keeps a warning from flapping at the threshold.
//! A sample without a value for a metric leaves that metric's window alone.

use std::collections::{BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

/// A call quality warning.
#[non_exhaustive]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QualityWarning {
    /// Round-trip time over 400 ms.
    HighRtt,
    /// Jitter over 30 ms.
    HighJitter,
    /// Over 3 % of packets lost.
    HighPacketsLostFraction,
    /// Mean opinion score under 3.5.
    LowMos,
    /// The microphone gives a constant level (muted by hardware, or broken).
    ConstantAudioInputLevel,
    /// The received audio has a constant level (the other side sends silence).
    ConstantAudioOutputLevel,
}

impl QualityWarning {
    /// The warning's name on the wire, for example `high-rtt`.
    pub fn name(self) -> &'static str {
        match self {
            QualityWarning::HighRtt => "high-rtt",
            QualityWarning::HighJitter => "high-jitter",
            QualityWarning::HighPacketsLostFraction => "high-packets-lost-fraction",
            QualityWarning::LowMos => "low-mos",
            QualityWarning::ConstantAudioInputLevel => "constant-audio-input-level",
            QualityWarning::ConstantAudioOutputLevel => "constant-audio-output-level",
        }
    }

    /// Whether this is an audio-level warning (as opposed to a network-quality one).
    pub fn is_audio_level(self) -> bool {
        matches!(self, QualityWarning::ConstantAudioInputLevel | QualityWarning::ConstantAudioOutputLevel)
    }
}

/// One second's measurements. `None` means not measured this second.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct QualitySample {
    /// Round-trip time in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Receive jitter in milliseconds.
    pub jitter_ms: Option<f64>,
    /// Packets lost in this second as a percentage of those expected (0 to 100).
    pub packets_lost_percent: Option<f64>,
    /// Mean opinion score, 1 to 4.5.
    pub mos: Option<f64>,
    /// Microphone level, 0 to 32767.
    pub audio_input_level: Option<u16>,
    /// Received audio level, 0 to 32767.
    pub audio_output_level: Option<u16>,
    /// Whether the call is muted this second (a muted microphone is constant on purpose).
    pub muted: bool,
}

/// The warnings before and after a sample that changed them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QualityWarningsChange {
    /// The warnings now active.
    pub current: BTreeSet<QualityWarning>,
    /// The warnings active before this sample.
    pub previous: BTreeSet<QualityWarning>,
}

impl QualityWarningsChange {
    /// Warnings in `current` that were not in `previous`.
    pub fn raised(&self) -> impl Iterator<Item = QualityWarning> + '_ {
        self.current.difference(&self.previous).copied()
    }

    /// Warnings in `previous` that are not in `current`.
    pub fn cleared(&self) -> impl Iterator<Item = QualityWarning> + '_ {
        self.previous.difference(&self.current).copied()
    }
}

const FULL_SCALE: f64 = 32767.0;

/// A window of the last `len` values of one metric.
#[derive(Clone, Debug)]
struct Window {
    len: usize,
    values: VecDeque<f64>,
}

impl Window {
    fn new(len: usize) -> Self {
        Window { len, values: VecDeque::with_capacity(len) }
    }

    fn push(&mut self, v: f64) {
        if self.values.len() == self.len {
            self.values.pop_front();
        }
        self.values.push_back(v);
    }

    fn full(&self) -> bool {
        self.values.len() == self.len
    }

    fn count(&self, pred: impl Fn(f64) -> bool) -> usize {
        self.values.iter().filter(|v| pred(**v)).count()
    }

    fn mean(&self) -> f64 {
        self.values.iter().sum::<f64>() / self.values.len().max(1) as f64
    }

    fn std_dev(&self) -> f64 {
        let m = self.mean();
        let var =
            self.values.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / self.values.len().max(1) as f64;
        var.sqrt()
    }

    fn clear(&mut self) {
        self.values.clear();
    }
}

/// Turns a stream of one-second [`QualitySample`]s into warning changes, with the
/// thresholds of the module table.
#[derive(Clone, Debug)]
pub struct QualityWarningDetector {
    rtt: Window,
    jitter: Window,
    mos: Window,
    loss: Window,
    input_level: Window,
    output_level: Window,
    current: BTreeSet<QualityWarning>,
}

impl Default for QualityWarningDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl QualityWarningDetector {
    /// A detector with no history and no active warnings.
    pub fn new() -> Self {
        QualityWarningDetector {
            rtt: Window::new(5),
            jitter: Window::new(5),
            mos: Window::new(5),
            loss: Window::new(7),
            input_level: Window::new(10),
            output_level: Window::new(10),
            current: BTreeSet::new(),
        }
    }

    /// The warnings active now.
    pub fn current(&self) -> &BTreeSet<QualityWarning> {
        &self.current
    }

    /// Takes one second's sample; returns the change when the set of active warnings
    /// changed, and `None` otherwise.
    pub fn push(&mut self, s: &QualitySample) -> Option<QualityWarningsChange> {
        let previous = self.current.clone();
        let three_of_five = |w: &mut Window, v: Option<f64>, bad: &dyn Fn(f64) -> bool| {
            v.map(|v| {
                w.push(v);
                w.count(bad) >= 3
            })
        };
        if let Some(on) = three_of_five(&mut self.rtt, s.rtt_ms, &|v| v > 400.0) {
            self.set(QualityWarning::HighRtt, on);
        }
        if let Some(on) = three_of_five(&mut self.jitter, s.jitter_ms, &|v| v > 30.0) {
            self.set(QualityWarning::HighJitter, on);
        }
        if let Some(on) = three_of_five(&mut self.mos, s.mos, &|v| v < 3.5) {
            self.set(QualityWarning::LowMos, on);
        }
        if let Some(loss) = s.packets_lost_percent {
            self.loss.push(loss);
            if self.loss.full() {
                let avg = self.loss.mean();
                let active = self.current.contains(&QualityWarning::HighPacketsLostFraction);
                if !active && avg > 3.0 {
                    self.set(QualityWarning::HighPacketsLostFraction, true);
                } else if active && avg <= 1.0 {
                    self.set(QualityWarning::HighPacketsLostFraction, false);
                }
            }
        }
        if s.muted {
            self.input_level.clear();
            self.set(QualityWarning::ConstantAudioInputLevel, false);
        } else if let Some(level) = s.audio_input_level {
            Self::level(
                &mut self.input_level,
                level,
                QualityWarning::ConstantAudioInputLevel,
                &mut self.current,
            );
        }
        if let Some(level) = s.audio_output_level {
            Self::level(
                &mut self.output_level,
                level,
                QualityWarning::ConstantAudioOutputLevel,
                &mut self.current,
            );
        }
        (self.current != previous).then(|| QualityWarningsChange { current: self.current.clone(), previous })
    }

    fn level(w: &mut Window, level: u16, warning: QualityWarning, current: &mut BTreeSet<QualityWarning>) {
        w.push(f64::from(level));
        if !w.full() {
            return;
        }
        let sd = w.std_dev();
        if sd <= 0.01 * FULL_SCALE {
            current.insert(warning);
        } else if sd > 0.03 * FULL_SCALE {
            current.remove(&warning);
        }
    }

    fn set(&mut self, w: QualityWarning, on: bool) {
        if on {
            self.current.insert(w);
        } else {
            self.current.remove(&w);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtt(v: f64) -> QualitySample {
        QualitySample { rtt_ms: Some(v), ..Default::default() }
    }

    #[test]
    fn high_rtt_needs_three_of_five() {
        let mut d = QualityWarningDetector::new();
        assert_eq!(d.push(&rtt(500.0)), None);
        assert_eq!(d.push(&rtt(100.0)), None);
        assert_eq!(d.push(&rtt(500.0)), None);
        let change = d.push(&rtt(401.0)).expect("third high sample raises");
        assert_eq!(change.raised().collect::<Vec<_>>(), vec![QualityWarning::HighRtt]);
        assert!(change.previous.is_empty());
        // exactly 400 is not over the threshold
        assert_eq!(d.push(&rtt(400.0)), None);
        // window now [100,500,401,400,100]: two high, cleared
        let change = d.push(&rtt(100.0)).expect("clears");
        assert_eq!(change.cleared().collect::<Vec<_>>(), vec![QualityWarning::HighRtt]);
    }

    #[test]
    fn jitter_and_mos() {
        let mut d = QualityWarningDetector::new();
        for _ in 0..3 {
            d.push(&QualitySample { jitter_ms: Some(31.0), mos: Some(3.4), ..Default::default() });
        }
        assert!(d.current().contains(&QualityWarning::HighJitter));
        assert!(d.current().contains(&QualityWarning::LowMos));
        let mut d = QualityWarningDetector::new();
        for _ in 0..5 {
            d.push(&QualitySample { jitter_ms: Some(30.0), mos: Some(3.5), ..Default::default() });
        }
        assert!(d.current().is_empty());
    }

    #[test]
    fn packet_loss_averages_over_seven_with_hysteresis() {
        let mut d = QualityWarningDetector::new();
        let loss = |p| QualitySample { packets_lost_percent: Some(p), ..Default::default() };
        for _ in 0..6 {
            assert_eq!(d.push(&loss(10.0)), None, "needs seven samples");
        }
        assert!(d.push(&loss(10.0)).is_some());
        // average falls to 2 %: still above the 1 % clearing line
        for _ in 0..7 {
            d.push(&loss(2.0));
        }
        assert!(d.current().contains(&QualityWarning::HighPacketsLostFraction));
        let mut cleared = false;
        for _ in 0..7 {
            cleared |= d.push(&loss(1.0)).is_some();
        }
        assert!(cleared && d.current().is_empty());
    }

    #[test]
    fn constant_input_level_but_not_when_muted() {
        let mut d = QualityWarningDetector::new();
        let lvl = |l, muted| QualitySample { audio_input_level: Some(l), muted, ..Default::default() };
        for _ in 0..9 {
            assert_eq!(d.push(&lvl(0, false)), None);
        }
        let c = d.push(&lvl(0, false)).expect("ten constant samples raise");
        assert!(c.current.contains(&QualityWarning::ConstantAudioInputLevel));
        let c = d.push(&lvl(0, true)).expect("muting clears");
        assert!(c.current.is_empty());
        for _ in 0..20 {
            assert_eq!(d.push(&lvl(0, true)), None, "never raised while muted");
        }
    }

    #[test]
    fn varying_output_level_clears() {
        let mut d = QualityWarningDetector::new();
        let lvl = |l| QualitySample { audio_output_level: Some(l), ..Default::default() };
        for _ in 0..10 {
            d.push(&lvl(100));
        }
        assert!(d.current().contains(&QualityWarning::ConstantAudioOutputLevel));
        let mut cleared = false;
        for i in 0..10 {
            cleared |= d.push(&lvl(if i % 2 == 0 { 0 } else { 8000 })).is_some();
        }
        assert!(cleared && d.current().is_empty());
    }
}

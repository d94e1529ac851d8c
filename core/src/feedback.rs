//! Call feedback: a score and an issue that the person on the call gives afterwards
//! (`Call::post_feedback`), published as the insights event `feedback/received`, or
//! `feedback/received-none` when neither was reported.

use serde::{Deserialize, Serialize};

/// How the person rated the call.
#[non_exhaustive]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FeedbackScore {
    /// No score given.
    #[default]
    NotReported,
    /// 1: impaired to the point of being unusable.
    CollaborationImpaired,
    /// 2
    Poor,
    /// 3
    Fair,
    /// 4
    Good,
    /// 5
    Excellent,
}

impl FeedbackScore {
    /// The score as a number, 0 (not reported) to 5.
    pub fn value(self) -> u8 {
        match self {
            FeedbackScore::NotReported => 0,
            FeedbackScore::CollaborationImpaired => 1,
            FeedbackScore::Poor => 2,
            FeedbackScore::Fair => 3,
            FeedbackScore::Good => 4,
            FeedbackScore::Excellent => 5,
        }
    }
}

/// What went wrong, in the person's words.
#[non_exhaustive]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FeedbackIssue {
    /// No issue given.
    #[default]
    NotReported,
    /// The call dropped.
    DroppedCall,
    /// Audio arrived late.
    AudioLatency,
    /// Only one side could hear.
    OneWayAudio,
    /// Audio was choppy.
    ChoppyAudio,
    /// The call was noisy.
    NoisyCall,
    /// There was echo.
    Echo,
}

impl FeedbackIssue {
    /// The issue's name on the wire, for example `one-way-audio`.
    pub fn as_str(self) -> &'static str {
        match self {
            FeedbackIssue::NotReported => "not-reported",
            FeedbackIssue::DroppedCall => "dropped-call",
            FeedbackIssue::AudioLatency => "audio-latency",
            FeedbackIssue::OneWayAudio => "one-way-audio",
            FeedbackIssue::ChoppyAudio => "choppy-audio",
            FeedbackIssue::NoisyCall => "noisy-call",
            FeedbackIssue::Echo => "echo",
        }
    }
}

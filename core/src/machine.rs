//! The call state machine: a sans-IO core that owns a call's state and the rules of
//! the call model. Feed it an [`Input`] and the current time; it returns what to tell
//! the delegates, what to publish to insights and what to ask of the signaling layer.
//! It never calls anything itself, holds no locks and reads no clock.
//!
//! The rules it enforces (each has a test in this module or in `tests/call_model.rs`):
//! - an incoming (accepted) call never reports ringing;
//! - `disconnect` is idempotent and ends the call with `did_disconnect(None)`;
//! - a remote hang-up of a connected call is `did_disconnect(None)`;
//! - a failure before the call connected is `did_fail_to_connect`, and so is a
//!   signaling drop while connecting or ringing; after it connected, a drop is
//!   `is_reconnecting` and a failure is `did_disconnect(Some(error))`;
//! - no event is reported after the call ended;
//! - call messages are checked for type (31210), size (31212), state (31211) and rate
//!   (31206) and fail through `did_fail_to_send_message`;
//! - `settings/codec` is published when a codec is negotiated.

use std::collections::BTreeSet;
use std::time::Instant;

use serde_json::json;

use crate::call::CallState;
use crate::error::{ErrorCode, VoiceError};
use crate::feedback::{FeedbackIssue, FeedbackScore};
use crate::insights::{InsightsEventName as N, InsightsLevel};
use crate::message::{CallMessage, MessageRateLimiter};
use crate::quality::{QualityWarning, QualityWarningDetector, QualityWarningsChange};
use crate::voice::{CallCommand, CallEvent};

/// Which side placed the call.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// This side accepted an invite.
    Incoming,
    /// This side called `connect`.
    Outgoing,
}

/// Something that happened to the call.
#[derive(Debug)]
pub(crate) enum Input {
    /// The application hung up.
    Disconnect,
    /// The application (un)muted.
    SetMuted(bool),
    /// The application put the call on or off hold.
    SetOnHold(bool),
    /// The application sent a call message under this id.
    SendMessage(CallMessage, String),
    /// The application gave feedback.
    PostFeedback(FeedbackScore, FeedbackIssue),
    /// The signaling or media layer reported an event.
    Event(CallEvent),
}

/// A call to the [`crate::CallDelegate`].
#[derive(Debug, PartialEq)]
pub(crate) enum DelegateCall {
    Ringing,
    Connected,
    FailedToConnect(VoiceError),
    Disconnected(Option<VoiceError>),
    Reconnecting(VoiceError),
    Reconnected,
    QualityWarnings(QualityWarningsChange),
    Digits(String),
}

/// A call to the [`crate::CallMessageDelegate`].
#[derive(Debug, PartialEq)]
pub(crate) enum MessageCall {
    Received(CallMessage),
    Sent(String),
    Failed(String, VoiceError),
}

/// What the machine asks its shell to do.
#[derive(Debug, PartialEq)]
pub(crate) enum Output {
    Delegate(DelegateCall),
    Message(MessageCall),
    Insights(N, InsightsLevel, serde_json::Value),
    Command(CallCommand),
}

/// The state of one call.
#[derive(Debug)]
pub(crate) struct CallMachine {
    direction: Direction,
    state: CallState,
    sid: Option<String>,
    codec: Option<String>,
    muted: bool,
    on_hold: bool,
    connected_once: bool,
    limiter: MessageRateLimiter,
    quality: QualityWarningDetector,
}

impl CallMachine {
    pub(crate) fn new(direction: Direction, sid: Option<String>, limiter: MessageRateLimiter) -> Self {
        CallMachine {
            direction,
            state: CallState::Connecting,
            sid,
            codec: None,
            muted: false,
            on_hold: false,
            connected_once: false,
            limiter,
            quality: QualityWarningDetector::new(),
        }
    }

    pub(crate) fn state(&self) -> CallState {
        self.state
    }
    pub(crate) fn sid(&self) -> Option<&str> {
        self.sid.as_deref()
    }
    pub(crate) fn codec(&self) -> Option<&str> {
        self.codec.as_deref()
    }
    pub(crate) fn is_muted(&self) -> bool {
        self.muted
    }
    pub(crate) fn is_on_hold(&self) -> bool {
        self.on_hold
    }
    pub(crate) fn quality_warnings(&self) -> BTreeSet<QualityWarning> {
        self.quality.current().clone()
    }

    fn ended(&self) -> bool {
        self.state == CallState::Disconnected
    }

    /// Takes one input at time `now`; returns the outputs in the order to carry out.
    pub(crate) fn handle(&mut self, input: Input, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::Disconnect => self.disconnect(&mut out),
            Input::SetMuted(m) => {
                if !self.ended() && m != self.muted {
                    self.muted = m;
                    out.push(Output::Command(CallCommand::SetMuted(m)));
                    out.push(info(if m { N::Muted } else { N::Unmuted }));
                }
            }
            Input::SetOnHold(h) => {
                if matches!(self.state, CallState::Connected | CallState::Reconnecting) && h != self.on_hold {
                    self.on_hold = h;
                    out.push(Output::Command(CallCommand::SetOnHold(h)));
                    out.push(info(if h { N::Hold } else { N::Unhold }));
                }
            }
            Input::SendMessage(message, id) => self.send_message(message, id, now, &mut out),
            Input::PostFeedback(score, issue) => {
                if score == FeedbackScore::NotReported && issue == FeedbackIssue::NotReported {
                    out.push(info(N::FeedbackReceivedNone));
                } else {
                    out.push(Output::Insights(
                        N::FeedbackReceived,
                        InsightsLevel::Info,
                        json!({"score": score.value(), "issue": issue.as_str()}),
                    ));
                }
            }
            Input::Event(e) => self.event(e, &mut out),
        }
        out
    }

    fn disconnect(&mut self, out: &mut Vec<Output>) {
        if self.ended() {
            return;
        }
        self.state = CallState::Disconnected;
        out.push(Output::Command(CallCommand::Hangup));
        out.push(info(N::DisconnectCalled));
        out.push(info(N::DisconnectedByLocal));
        out.push(Output::Delegate(DelegateCall::Disconnected(None)));
    }

    fn send_message(&mut self, message: CallMessage, id: String, now: Instant, out: &mut Vec<Output>) {
        let checked = if self.ended() || self.sid.is_none() {
            Err(VoiceError::new(
                ErrorCode::CallMessageUnexpectedState,
                format!("a call message cannot be sent while the call is {:?}", self.state),
            ))
        } else {
            message.validate().and_then(|()| self.limiter.try_send(now))
        };
        match checked {
            Ok(()) => out.push(Output::Command(CallCommand::SendMessage(message.with_voice_event_sid(id)))),
            Err(e) => {
                out.push(error_insight(N::MessageError, &e));
                out.push(Output::Message(MessageCall::Failed(id, e)));
            }
        }
    }

    fn fail(&mut self, e: VoiceError, out: &mut Vec<Output>) {
        self.state = CallState::Disconnected;
        out.push(error_insight(N::Error, &e));
        if self.connected_once {
            out.push(info(N::DisconnectedByRemote));
            out.push(Output::Delegate(DelegateCall::Disconnected(Some(e))));
        } else {
            out.push(Output::Delegate(DelegateCall::FailedToConnect(e)));
        }
    }

    fn event(&mut self, e: CallEvent, out: &mut Vec<Output>) {
        if self.ended() {
            tracing::debug!(?e, "event for an ended call ignored");
            return;
        }
        match e {
            CallEvent::SidAssigned(sid) => {
                if self.sid.is_none() {
                    self.sid = Some(sid);
                }
            }
            CallEvent::Ringing => {
                if self.direction == Direction::Outgoing && self.state == CallState::Connecting {
                    self.state = CallState::Ringing;
                    out.push(info(N::Ringing));
                    out.push(Output::Delegate(DelegateCall::Ringing));
                }
            }
            CallEvent::Connected => {
                if matches!(self.state, CallState::Connecting | CallState::Ringing) {
                    self.state = CallState::Connected;
                    self.connected_once = true;
                    if self.direction == Direction::Outgoing {
                        out.push(info(N::AcceptedByRemote));
                    }
                    out.push(info(N::Connected));
                    out.push(Output::Delegate(DelegateCall::Connected));
                }
            }
            CallEvent::CodecNegotiated(codec) => {
                if self.codec.as_deref() != Some(codec.as_str()) {
                    out.push(Output::Insights(N::Codec, InsightsLevel::Info, json!({"codec": codec})));
                    self.codec = Some(codec);
                }
            }
            CallEvent::FailedToConnect(err) => self.fail(err, out),
            CallEvent::Disconnected(None) if self.connected_once => {
                self.state = CallState::Disconnected;
                out.push(info(N::DisconnectedByRemote));
                out.push(Output::Delegate(DelegateCall::Disconnected(None)));
            }
            CallEvent::Disconnected(err) => {
                let err = err.unwrap_or_else(|| {
                    VoiceError::new(ErrorCode::ConnectionError, "the call ended before it connected")
                });
                self.fail(err, out)
            }
            CallEvent::Reconnecting(err) => match self.state {
                CallState::Connected => {
                    self.state = CallState::Reconnecting;
                    out.push(Output::Insights(
                        N::Reconnecting,
                        InsightsLevel::Warning,
                        json!({"code": err.code(), "message": err.message()}),
                    ));
                    out.push(Output::Delegate(DelegateCall::Reconnecting(err)));
                }
                CallState::Connecting | CallState::Ringing => self.fail(err, out),
                _ => {}
            },
            CallEvent::Reconnected => {
                if self.state == CallState::Reconnecting {
                    self.state = CallState::Connected;
                    out.push(info(N::Reconnected));
                    out.push(Output::Delegate(DelegateCall::Reconnected));
                }
            }
            CallEvent::DigitsReceived(d) => {
                if matches!(self.state, CallState::Connected | CallState::Reconnecting) && !d.is_empty() {
                    out.push(Output::Delegate(DelegateCall::Digits(d)));
                }
            }
            CallEvent::MessageReceived(m) => {
                out.push(info(N::MessageReceived));
                out.push(Output::Message(MessageCall::Received(m)));
            }
            CallEvent::MessageSent(id) => {
                out.push(info(N::MessageSent));
                out.push(Output::Message(MessageCall::Sent(id)));
            }
            CallEvent::MessageFailed(id, err) => {
                out.push(error_insight(N::MessageError, &err));
                out.push(Output::Message(MessageCall::Failed(id, err)));
            }
            CallEvent::QualitySample(mut sample) => {
                if self.state != CallState::Connected {
                    return;
                }
                sample.muted = self.muted;
                if let Some(change) = self.quality.push(&sample) {
                    for w in change.raised() {
                        out.push(Output::Insights(N::WarningRaised(w), InsightsLevel::Warning, json!({})));
                    }
                    for w in change.cleared() {
                        out.push(info(N::WarningCleared(w)));
                    }
                    out.push(Output::Delegate(DelegateCall::QualityWarnings(change)));
                }
            }
        }
    }
}

fn info(name: N) -> Output {
    Output::Insights(name, InsightsLevel::Info, json!({}))
}

pub(crate) fn error_insight(name: N, e: &VoiceError) -> Output {
    Output::Insights(name, InsightsLevel::Error, json!({"code": e.code(), "message": e.message()}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quality::QualitySample;
    use std::time::Duration;

    fn delegates(out: &[Output]) -> Vec<&DelegateCall> {
        out.iter().filter_map(|o| if let Output::Delegate(d) = o { Some(d) } else { None }).collect()
    }

    fn insights(out: &[Output]) -> Vec<N> {
        out.iter().filter_map(|o| if let Output::Insights(n, ..) = o { Some(*n) } else { None }).collect()
    }

    fn outgoing() -> CallMachine {
        CallMachine::new(Direction::Outgoing, None, MessageRateLimiter::default())
    }

    fn incoming() -> CallMachine {
        CallMachine::new(Direction::Incoming, Some("CA1".into()), MessageRateLimiter::default())
    }

    #[test]
    fn outgoing_rings_then_connects() {
        let t = Instant::now();
        let mut m = outgoing();
        m.handle(Input::Event(CallEvent::SidAssigned("CA9".into())), t);
        let out = m.handle(Input::Event(CallEvent::Ringing), t);
        assert_eq!(delegates(&out), vec![&DelegateCall::Ringing]);
        assert_eq!(m.state(), CallState::Ringing);
        let out = m.handle(Input::Event(CallEvent::Connected), t);
        assert_eq!(delegates(&out), vec![&DelegateCall::Connected]);
        assert_eq!(insights(&out), vec![N::AcceptedByRemote, N::Connected]);
        assert_eq!(m.sid(), Some("CA9"));
    }

    #[test]
    fn incoming_never_reports_ringing() {
        let t = Instant::now();
        let mut m = incoming();
        let out = m.handle(Input::Event(CallEvent::Ringing), t);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(m.state(), CallState::Connecting);
        m.handle(Input::Event(CallEvent::Connected), t);
        assert!(m.handle(Input::Event(CallEvent::Ringing), t).is_empty());
        assert_eq!(m.state(), CallState::Connected);
    }

    #[test]
    fn disconnect_is_idempotent_and_has_no_error() {
        let t = Instant::now();
        let mut m = incoming();
        m.handle(Input::Event(CallEvent::Connected), t);
        let out = m.handle(Input::Disconnect, t);
        assert_eq!(delegates(&out), vec![&DelegateCall::Disconnected(None)]);
        assert!(out.contains(&Output::Command(CallCommand::Hangup)));
        assert_eq!(insights(&out), vec![N::DisconnectCalled, N::DisconnectedByLocal]);
        assert!(m.handle(Input::Disconnect, t).is_empty());
        // and the remote's late BYE is not a second disconnect
        assert!(m.handle(Input::Event(CallEvent::Disconnected(None)), t).is_empty());
    }

    #[test]
    fn remote_hangup_after_connect_is_no_error_but_before_is_a_failure() {
        let t = Instant::now();
        let mut m = outgoing();
        m.handle(Input::Event(CallEvent::Connected), t);
        let out = m.handle(Input::Event(CallEvent::Disconnected(None)), t);
        assert_eq!(delegates(&out), vec![&DelegateCall::Disconnected(None)]);
        assert_eq!(insights(&out), vec![N::DisconnectedByRemote]);

        let mut m = outgoing();
        let out = m.handle(Input::Event(CallEvent::Disconnected(None)), t);
        let [DelegateCall::FailedToConnect(e)] = delegates(&out)[..] else { panic!("{out:?}") };
        assert_eq!(e.code(), 31005);
    }

    #[test]
    fn failure_after_connect_is_a_disconnect_with_the_error() {
        let t = Instant::now();
        let mut m = outgoing();
        m.handle(Input::Event(CallEvent::Connected), t);
        let err = VoiceError::from_kind(ErrorCode::MediaConnectionFailed);
        let out = m.handle(Input::Event(CallEvent::FailedToConnect(err.clone())), t);
        assert_eq!(delegates(&out), vec![&DelegateCall::Disconnected(Some(err))]);
    }

    #[test]
    fn signaling_drop_reconnects_when_connected_and_fails_when_ringing() {
        let t = Instant::now();
        let drop = || VoiceError::from_kind(ErrorCode::SignalingConnectionDisconnected);
        let mut m = outgoing();
        m.handle(Input::Event(CallEvent::Connected), t);
        let out = m.handle(Input::Event(CallEvent::Reconnecting(drop())), t);
        assert_eq!(delegates(&out), vec![&DelegateCall::Reconnecting(drop())]);
        assert_eq!(m.state(), CallState::Reconnecting);
        let out = m.handle(Input::Event(CallEvent::Reconnected), t);
        assert_eq!(delegates(&out), vec![&DelegateCall::Reconnected]);
        assert_eq!(m.state(), CallState::Connected);

        let mut m = outgoing();
        m.handle(Input::Event(CallEvent::Ringing), t);
        let out = m.handle(Input::Event(CallEvent::Reconnecting(drop())), t);
        assert_eq!(delegates(&out), vec![&DelegateCall::FailedToConnect(drop())]);
        assert_eq!(m.state(), CallState::Disconnected);
    }

    #[test]
    fn codec_insight_once_per_codec() {
        let t = Instant::now();
        let mut m = incoming();
        let out = m.handle(Input::Event(CallEvent::CodecNegotiated("opus".into())), t);
        assert_eq!(out, vec![Output::Insights(N::Codec, InsightsLevel::Info, json!({"codec": "opus"}))]);
        assert!(m.handle(Input::Event(CallEvent::CodecNegotiated("opus".into())), t).is_empty());
        assert_eq!(m.handle(Input::Event(CallEvent::CodecNegotiated("PCMU".into())), t).len(), 1);
        assert_eq!(m.codec(), Some("PCMU"));
    }

    fn failed_code(out: &[Output]) -> Option<u32> {
        out.iter().find_map(|o| match o {
            Output::Message(MessageCall::Failed(_, e)) => Some(e.code()),
            _ => None,
        })
    }

    #[test]
    fn messages_are_checked() {
        let t = Instant::now();
        let mut m = outgoing();
        // no SID yet: unexpected state
        let out = m.handle(Input::SendMessage(CallMessage::new("{}"), "KX1".into()), t);
        assert_eq!(failed_code(&out), Some(31211));
        m.handle(Input::Event(CallEvent::SidAssigned("CA1".into())), t);
        let out = m.handle(Input::SendMessage(CallMessage::new("x".repeat(10 * 1024 + 1)), "KX2".into()), t);
        assert_eq!(failed_code(&out), Some(31212));
        assert!(insights(&out).contains(&N::MessageError));
        for i in 0..10 {
            let out = m.handle(
                Input::SendMessage(CallMessage::new("{}"), format!("KX{i}")),
                t + Duration::from_secs(i),
            );
            assert!(matches!(&out[..], [Output::Command(CallCommand::SendMessage(_))]), "{out:?}");
        }
        let out =
            m.handle(Input::SendMessage(CallMessage::new("{}"), "KX11".into()), t + Duration::from_secs(30));
        assert_eq!(failed_code(&out), Some(31206));
        let out =
            m.handle(Input::SendMessage(CallMessage::new("{}"), "KX12".into()), t + Duration::from_secs(61));
        assert_eq!(failed_code(&out), None);
        m.handle(Input::Disconnect, t);
        let out =
            m.handle(Input::SendMessage(CallMessage::new("{}"), "KX13".into()), t + Duration::from_secs(200));
        assert_eq!(failed_code(&out), Some(31211));
    }

    #[test]
    fn mute_hold_and_feedback() {
        let t = Instant::now();
        let mut m = incoming();
        assert!(m.handle(Input::SetOnHold(true), t).is_empty(), "hold needs a connected call");
        m.handle(Input::Event(CallEvent::Connected), t);
        let out = m.handle(Input::SetMuted(true), t);
        assert_eq!(insights(&out), vec![N::Muted]);
        assert!(m.handle(Input::SetMuted(true), t).is_empty());
        assert_eq!(insights(&m.handle(Input::SetOnHold(true), t)), vec![N::Hold]);
        assert_eq!(insights(&m.handle(Input::SetOnHold(false), t)), vec![N::Unhold]);
        let out = m.handle(Input::PostFeedback(FeedbackScore::NotReported, FeedbackIssue::NotReported), t);
        assert_eq!(insights(&out), vec![N::FeedbackReceivedNone]);
        let out = m.handle(Input::PostFeedback(FeedbackScore::Poor, FeedbackIssue::Echo), t);
        assert_eq!(
            out,
            vec![Output::Insights(
                N::FeedbackReceived,
                InsightsLevel::Info,
                json!({"score": 2, "issue": "echo"})
            )]
        );
    }

    #[test]
    fn quality_samples_raise_warnings_only_when_connected() {
        let t = Instant::now();
        let mut m = incoming();
        let high = || QualitySample { rtt_ms: Some(900.0), ..Default::default() };
        for _ in 0..3 {
            assert!(m.handle(Input::Event(CallEvent::QualitySample(high())), t).is_empty());
        }
        m.handle(Input::Event(CallEvent::Connected), t);
        m.handle(Input::Event(CallEvent::QualitySample(high())), t);
        m.handle(Input::Event(CallEvent::QualitySample(high())), t);
        let out = m.handle(Input::Event(CallEvent::QualitySample(high())), t);
        assert_eq!(insights(&out), vec![N::WarningRaised(QualityWarning::HighRtt)]);
        assert!(m.quality_warnings().contains(&QualityWarning::HighRtt));
    }
}

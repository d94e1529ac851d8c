//! `Call`, the handle an application holds for a call, and `CallDelegate`, how it
//! hears about the call. The handle is a thin shell around the sans-IO
//! [`crate::machine`]: every method feeds the machine, then carries out its outputs
//! (delegate calls, insights, commands to the signaling backend) with no lock held.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{ErrorCode, VoiceError};
use crate::feedback::{FeedbackIssue, FeedbackScore};
use crate::machine::{CallMachine, DelegateCall, Input, MessageCall, Output};
use crate::message::{new_voice_event_sid, CallMessage, CallMessageDelegate};
use crate::quality::QualityWarning;
use crate::stats::StatsReport;
use crate::voice::{CallCommand, CallEvent, VoiceShared};

/// Where a call is in its life.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallState {
    /// Being set up.
    Connecting,
    /// The callee's device is ringing (outgoing calls only).
    Ringing,
    /// Media can flow.
    Connected,
    /// The signaling or media connection dropped and is being restored.
    Reconnecting,
    /// Over.
    Disconnected,
}

/// Hears about a call's progress. Every method has an empty default, so a delegate
/// implements only what it needs. Methods are called on the thread that caused the
/// event (the application's, for `disconnect`; the signaling task's otherwise), never
/// with an SDK lock held, so a delegate may call back into the call; it must not block.
pub trait CallDelegate: Send + Sync {
    /// The call connected; media can flow.
    fn did_connect(&self, call: &Call) {
        let _ = call;
    }
    /// The call ended before it connected.
    fn did_fail_to_connect(&self, call: &Call, error: &VoiceError) {
        let _ = (call, error);
    }
    /// The call ended after it connected; `None` for a normal hang-up on either side.
    fn did_disconnect(&self, call: &Call, error: Option<&VoiceError>) {
        let _ = (call, error);
    }
    /// The callee is ringing (outgoing calls only).
    fn did_start_ringing(&self, call: &Call) {
        let _ = call;
    }
    /// The connection dropped (53001 signaling, 53405 media) and is being restored.
    fn is_reconnecting(&self, call: &Call, error: &VoiceError) {
        let _ = (call, error);
    }
    /// The connection was restored.
    fn did_reconnect(&self, call: &Call) {
        let _ = call;
    }
    /// The other side sent DTMF digits (RFC 4733 events or SIP INFO). Not in the Twilio
    /// SDK; bots and IVR-like applications need it.
    fn did_receive_digits(&self, call: &Call, digits: &str) {
        let _ = (call, digits);
    }
    /// The set of quality warnings changed.
    fn did_receive_quality_warnings(
        &self,
        call: &Call,
        current: &BTreeSet<QualityWarning>,
        previous: &BTreeSet<QualityWarning>,
    ) {
        let _ = (call, current, previous);
    }
}

pub(crate) struct CallShared {
    pub(crate) uuid: Uuid,
    pub(crate) from: Option<String>,
    pub(crate) to: String,
    pub(crate) machine: Mutex<CallMachine>,
    pub(crate) delegate: Arc<dyn CallDelegate>,
    pub(crate) message_delegate: Option<Arc<dyn CallMessageDelegate>>,
    pub(crate) voice: Arc<VoiceShared>,
}

/// A call, placed with [`crate::Voice::connect`] or accepted from a
/// [`crate::CallInvite`]. Cloning gives another handle to the same call.
#[derive(Clone)]
pub struct Call {
    pub(crate) inner: Arc<CallShared>,
}

impl fmt::Debug for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("uuid", &self.inner.uuid)
            .field("sid", &self.sid())
            .field("state", &self.state())
            .finish()
    }
}

impl Call {
    fn machine(&self) -> MutexGuard<'_, CallMachine> {
        self.inner.machine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The call SID; `None` for an outgoing call until the server assigned one.
    pub fn sid(&self) -> Option<String> {
        self.machine().sid().map(str::to_owned)
    }

    /// The caller, when known.
    pub fn from(&self) -> Option<String> {
        self.inner.from.clone()
    }

    /// The callee.
    pub fn to(&self) -> &str {
        &self.inner.to
    }

    /// The call's UUID.
    pub fn uuid(&self) -> Uuid {
        self.inner.uuid
    }

    /// Where the call is in its life.
    pub fn state(&self) -> CallState {
        self.machine().state()
    }

    /// The negotiated codec, once there is one.
    pub fn codec(&self) -> Option<String> {
        self.machine().codec().map(str::to_owned)
    }

    /// Whether this side is muted.
    pub fn is_muted(&self) -> bool {
        self.machine().is_muted()
    }

    /// Whether the call is on hold.
    pub fn is_on_hold(&self) -> bool {
        self.machine().is_on_hold()
    }

    /// The quality warnings active now.
    pub fn quality_warnings(&self) -> BTreeSet<QualityWarning> {
        self.machine().quality_warnings()
    }

    /// Hangs up: cancels a call not yet answered, ends one that is. Calling it again,
    /// or after the call ended, does nothing.
    pub fn disconnect(&self) {
        self.drive(Input::Disconnect);
    }

    /// Mutes (sends silence) or unmutes this side.
    pub fn mute(&self, muted: bool) {
        self.drive(Input::SetMuted(muted));
    }

    /// Puts a connected call on hold or takes it off.
    pub fn hold(&self, on_hold: bool) {
        self.drive(Input::SetOnHold(on_hold));
    }

    /// Sends DTMF digits: `0`-`9`, `*`, `#`, `A`-`D`, and `w` for a 500 ms pause.
    /// Another character is 31100; a call that is not connected is 31000 with the
    /// state in the message. The media layer sends RFC 4733 events, or SIP INFO where
    /// the peer cannot take them.
    pub fn send_digits(&self, digits: &str) -> Result<(), VoiceError> {
        if let Some(bad) = digits.chars().find(|c| !matches!(c, '0'..='9' | '*' | '#' | 'A'..='D' | 'w')) {
            return Err(VoiceError::new(
                ErrorCode::MalformedRequest,
                format!("{bad:?} is not a DTMF digit (0-9 * # A-D, w for a pause)"),
            ));
        }
        let state = self.state();
        if state != CallState::Connected {
            return Err(VoiceError::new(
                ErrorCode::UnknownError,
                format!("digits can only be sent on a connected call; this one is {state:?}"),
            ));
        }
        if !digits.is_empty() {
            self.inner
                .voice
                .backend
                .call_command(self.inner.uuid, CallCommand::SendDigits(digits.to_owned()));
        }
        Ok(())
    }

    /// Sends a call message and returns the voice event SID it travels under. Failure
    /// (wrong type 31210, over 10 KB 31212, wrong state 31211, over 10 a minute 31206,
    /// or the peer's refusal) reaches the call message delegate's
    /// `did_fail_to_send_message` with that SID; delivery reaches `did_send_message`.
    pub fn send_message(&self, message: CallMessage) -> String {
        let id = new_voice_event_sid();
        self.drive(Input::SendMessage(message, id.clone()));
        id
    }

    /// Gives feedback on the call (published as `feedback/received` or
    /// `feedback/received-none`).
    pub fn post_feedback(&self, score: FeedbackScore, issue: FeedbackIssue) {
        self.drive(Input::PostFeedback(score, issue));
    }

    /// The call's statistics, when its media engine has any.
    pub fn stats(&self) -> Option<StatsReport> {
        self.inner.voice.backend.stats(self.inner.uuid)
    }

    pub(crate) fn deliver(&self, event: CallEvent) {
        self.drive(Input::Event(event));
    }

    /// Feeds the machine, then carries out its outputs with the machine unlocked.
    pub(crate) fn drive(&self, input: Input) {
        let (outputs, sid) = {
            let mut m = self.machine();
            let out = m.handle(input, self.inner.voice.clock.now());
            (out, m.sid().map(str::to_owned))
        };
        for output in outputs {
            self.carry_out(output, sid.as_deref());
        }
    }

    fn carry_out(&self, output: Output, sid: Option<&str>) {
        let d = &self.inner.delegate;
        match output {
            Output::Command(c) => self.inner.voice.backend.call_command(self.inner.uuid, c),
            Output::Insights(name, level, payload) => {
                self.inner.voice.publish(name, level, sid.map(str::to_owned), payload)
            }
            Output::Delegate(call) => match call {
                DelegateCall::Ringing => d.did_start_ringing(self),
                DelegateCall::Connected => d.did_connect(self),
                DelegateCall::FailedToConnect(e) => d.did_fail_to_connect(self, &e),
                DelegateCall::Disconnected(e) => d.did_disconnect(self, e.as_ref()),
                DelegateCall::Reconnecting(e) => d.is_reconnecting(self, &e),
                DelegateCall::Reconnected => d.did_reconnect(self),
                DelegateCall::Digits(digits) => d.did_receive_digits(self, &digits),
                DelegateCall::QualityWarnings(c) => {
                    d.did_receive_quality_warnings(self, &c.current, &c.previous)
                }
            },
            Output::Message(m) => {
                let Some(md) = &self.inner.message_delegate else { return };
                let sid = sid.unwrap_or("");
                match m {
                    MessageCall::Received(msg) => md.did_receive_message(sid, &msg),
                    MessageCall::Sent(id) => md.did_send_message(sid, &id),
                    MessageCall::Failed(id, e) => md.did_fail_to_send_message(sid, &id, &e),
                }
            }
        }
    }
}

//! `CallInvite` and `CancelledCallInvite`. Only the SDK makes them, from a push
//! payload ([`crate::Voice::handle_notification`]) or an incoming call reported by the
//! signaling backend ([`crate::VoiceLink::incoming_invite`]); they have no public
//! constructor.
//!
//! ```compile_fail
//! // An application cannot make an invite: there is no constructor and no public field.
//! let invite = dialtone_core::CallInvite { inner: unimplemented!() };
//! ```
//!
//! ```compile_fail
//! let cancelled = dialtone_core::CancelledCallInvite { details: unimplemented!() };
//! ```
//!
//! An invite is pending until it is accepted, rejected or cancelled, and then never
//! changes again. Accepting always returns a [`Call`]: accepting an invite that is no
//! longer pending returns a call that fails to connect (31008 if it was cancelled).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use serde_json::json;
use uuid::Uuid;

use crate::call::{Call, CallDelegate, CallShared};
use crate::error::{ErrorCode, VoiceError};
use crate::insights::{InsightsEventName as N, InsightsLevel};
use crate::machine::{CallMachine, Direction};
use crate::message::{new_voice_event_sid, CallMessage, CallMessageDelegate, MessageRateLimiter};
use crate::options::AcceptOptions;
use crate::push::{CallerInfo, InviteDetails};
use crate::voice::{CallEvent, CallLink, CallRequest, InviteCommand, VoiceShared};

/// Where an invite is in its life.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum InviteState {
    Pending,
    Accepted,
    Rejected,
    Cancelled,
}

pub(crate) struct InviteShared {
    pub(crate) details: InviteDetails,
    pub(crate) uuid: Uuid,
    pub(crate) state: Mutex<(InviteState, MessageRateLimiter)>,
    pub(crate) message_delegate: Option<Arc<dyn CallMessageDelegate>>,
    pub(crate) voice: Arc<VoiceShared>,
}

impl InviteShared {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, (InviteState, MessageRateLimiter)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves a pending invite to `to`; false if it was no longer pending.
    pub(crate) fn finish(&self, to: InviteState) -> bool {
        {
            let mut s = self.lock();
            if s.0 != InviteState::Pending {
                return false;
            }
            s.0 = to;
        }
        self.voice.invite_finished(&self.details.call_sid);
        true
    }
}

/// An incoming call, waiting for [`accept`](CallInvite::accept) or
/// [`reject`](CallInvite::reject). Cloning gives another handle to the same invite.
#[derive(Clone)]
pub struct CallInvite {
    pub(crate) inner: Arc<InviteShared>,
}

impl fmt::Debug for CallInvite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallInvite")
            .field("call_sid", &self.inner.details.call_sid)
            .field("from", &self.inner.details.from)
            .field("to", &self.inner.details.to)
            .finish()
    }
}

impl CallInvite {
    /// The caller, when known.
    pub fn from(&self) -> Option<&str> {
        self.inner.details.from.as_deref()
    }

    /// The callee.
    pub fn to(&self) -> &str {
        &self.inner.details.to
    }

    /// The call SID.
    pub fn call_sid(&self) -> &str {
        &self.inner.details.call_sid
    }

    /// The custom parameters the caller's application attached, values decoded.
    pub fn custom_parameters(&self) -> &BTreeMap<String, String> {
        &self.inner.details.custom_parameters
    }

    /// Whether the caller's number was verified.
    pub fn caller_info(&self) -> &CallerInfo {
        &self.inner.details.caller_info
    }

    /// The UUID the accepted call will have (unless accept options set another).
    pub fn uuid(&self) -> Uuid {
        self.inner.uuid
    }

    /// Accepts with default options. Always returns a call; see the module docs.
    pub fn accept(&self, delegate: Arc<dyn CallDelegate>) -> Call {
        let options = AcceptOptions::builder().uuid(self.inner.uuid).build();
        self.accept_with_options(options, delegate)
    }

    /// Accepts with these options. Always returns a call; see the module docs.
    pub fn accept_with_options(&self, options: AcceptOptions, delegate: Arc<dyn CallDelegate>) -> Call {
        let inv = &self.inner;
        let limiter = std::mem::take(&mut inv.lock().1);
        let was = if inv.finish(InviteState::Accepted) { InviteState::Pending } else { inv.lock().0 };
        let message_delegate =
            options.common.call_message_delegate.clone().or_else(|| inv.message_delegate.clone());
        let call = Call {
            inner: Arc::new(CallShared {
                uuid: options.common.uuid,
                from: inv.details.from.clone(),
                to: inv.details.to.clone(),
                machine: Mutex::new(CallMachine::new(
                    Direction::Incoming,
                    Some(inv.details.call_sid.clone()),
                    limiter,
                )),
                delegate,
                message_delegate,
                voice: inv.voice.clone(),
            }),
        };
        match was {
            InviteState::Pending => {
                inv.voice.publish(
                    N::AcceptedByLocal,
                    InsightsLevel::Info,
                    Some(inv.details.call_sid.clone()),
                    json!({}),
                );
                let request = CallRequest::Accept { invite: inv.details.clone(), options };
                inv.voice.backend.start_call(CallLink { call: call.clone() }, request);
            }
            InviteState::Cancelled => call.deliver(CallEvent::FailedToConnect(VoiceError::new(
                ErrorCode::CallCancelled,
                "the caller hung up before the invite was accepted",
            ))),
            InviteState::Accepted | InviteState::Rejected => {
                call.deliver(CallEvent::FailedToConnect(VoiceError::new(
                    ErrorCode::UnknownError,
                    format!(
                        "this invite was already {}",
                        if was == InviteState::Accepted { "accepted" } else { "rejected" }
                    ),
                )))
            }
        }
        call
    }

    /// Rejects the invite: the caller gets SIP 600 (31600). Publishes
    /// `connection/rejected-by-local` and the error event 31600. Does nothing if the
    /// invite is no longer pending.
    pub fn reject(&self) {
        let inv = &self.inner;
        if !inv.finish(InviteState::Rejected) {
            return;
        }
        let sid = Some(inv.details.call_sid.clone());
        inv.voice.publish(N::RejectedByLocal, InsightsLevel::Info, sid.clone(), json!({}));
        let e = VoiceError::from_sip_response(600, "Call Rejected");
        inv.voice.publish(
            N::Error,
            InsightsLevel::Error,
            sid,
            json!({"code": e.code(), "message": e.message()}),
        );
        inv.voice.backend.invite_command(&inv.details, InviteCommand::Reject);
    }

    /// Sends a call message to the caller and returns its voice event SID, or an empty
    /// string once the invite was accepted, rejected or cancelled. A message that fails
    /// its checks (31210, 31212, 31206) is reported to the message delegate.
    pub fn send_message(&self, message: CallMessage) -> String {
        let inv = &self.inner;
        let id = new_voice_event_sid();
        let checked = {
            let mut s = inv.lock();
            if s.0 != InviteState::Pending {
                return String::new();
            }
            let now = inv.voice.clock.now();
            message.validate().and_then(|()| s.1.try_send(now))
        };
        match checked {
            Ok(()) => inv.voice.backend.invite_command(
                &inv.details,
                InviteCommand::SendMessage(message.with_voice_event_sid(id.clone())),
            ),
            Err(e) => {
                let sid = &inv.details.call_sid;
                inv.voice.publish(
                    N::MessageError,
                    InsightsLevel::Error,
                    Some(sid.clone()),
                    json!({"code": e.code(), "message": e.message()}),
                );
                if let Some(md) = &inv.message_delegate {
                    md.did_fail_to_send_message(sid, &id, &e);
                }
            }
        }
        id
    }
}

/// An invite whose caller hung up before it was answered. Reported once, and never
/// for an invite that was accepted or rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CancelledCallInvite {
    pub(crate) details: InviteDetails,
}

impl CancelledCallInvite {
    /// The caller, when known.
    pub fn from(&self) -> Option<&str> {
        self.details.from.as_deref()
    }

    /// The callee.
    pub fn to(&self) -> &str {
        &self.details.to
    }

    /// The call SID.
    pub fn call_sid(&self) -> &str {
        &self.details.call_sid
    }

    /// The custom parameters of the invite.
    pub fn custom_parameters(&self) -> &BTreeMap<String, String> {
        &self.details.custom_parameters
    }
}

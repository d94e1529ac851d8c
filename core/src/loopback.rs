//! An in-memory signaling backend: several [`crate::Voice`]s in one process register
//! identities on a [`LoopbackNetwork`] and call each other with no sockets and no
//! media. It is the harness for the call model's tests and the in-process demo; the
//! SIP user agent replaces it in real deployments.
//!
//! What it does: `client:NAME` (or `NAME`) reaches the `Voice` registered as NAME; the
//! callee gets an invite with a fresh `CA…` call SID, the caller's identity as
//! `client:CALLER` and the connect parameters other than `to` as custom parameters;
//! the caller hears ringing; accepting picks the first codec of the caller's
//! preference that the callee also prefers (none in common is 53404); reject is a
//! SIP 600; a hang-up before the answer cancels the invite (31008); messages go to the
//! other side. Digits, mute and hold are accepted and dropped (there is no media), and
//! `stats` is `None`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use async_trait::async_trait;
use uuid::Uuid;

use crate::error::{ErrorCode, VoiceError};
use crate::options::PreferredCodec;
use crate::push::InviteDetails;
use crate::stats::StatsReport;
use crate::voice::{
    CallCommand, CallEvent, CallLink, CallRequest, InviteCommand, InviteEvent, VoiceBackend, VoiceLink,
};

struct LoopCall {
    sid: String,
    caller: CallLink,
    caller_codecs: Vec<PreferredCodec>,
    callee: VoiceLink,
    callee_call: Option<CallLink>,
}

#[derive(Default)]
struct Net {
    registered: HashMap<String, VoiceLink>,
    calls: Vec<LoopCall>,
}

/// The shared "network" of in-memory backends.
#[derive(Clone, Default)]
pub struct LoopbackNetwork {
    net: Arc<Mutex<Net>>,
}

impl LoopbackNetwork {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// A backend for the `Voice` of `identity`; `Voice::register` puts it on the
    /// network under that name.
    pub fn backend(&self, identity: &str) -> Arc<LoopbackBackend> {
        Arc::new(LoopbackBackend { identity: identity.to_owned(), net: self.clone(), link: OnceLock::new() })
    }

    fn lock(&self) -> MutexGuard<'_, Net> {
        self.net.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes the call that `uuid` belongs to (as caller or callee) and returns it.
    fn take_call(&self, uuid: Uuid) -> Option<LoopCall> {
        let mut net = self.lock();
        let i = net.calls.iter().position(|c| {
            c.caller.uuid() == uuid || c.callee_call.as_ref().is_some_and(|l| l.uuid() == uuid)
        })?;
        Some(net.calls.swap_remove(i))
    }
}

/// One `Voice`'s backend on a [`LoopbackNetwork`].
pub struct LoopbackBackend {
    identity: String,
    net: LoopbackNetwork,
    link: OnceLock<VoiceLink>,
}

impl LoopbackBackend {
    fn new_sid() -> String {
        format!("CA{}", Uuid::new_v4().simple())
    }
}

#[async_trait]
impl VoiceBackend for LoopbackBackend {
    fn attach(&self, link: VoiceLink) {
        let _ = self.link.set(link);
    }

    async fn register(&self, _access_token: &str, _device_token: &str) -> Result<(), VoiceError> {
        let link = self.link.get().cloned().ok_or_else(|| {
            VoiceError::new(ErrorCode::SignalingConnectionError, "the backend is not attached to a Voice")
        })?;
        self.net.lock().registered.insert(self.identity.clone(), link);
        Ok(())
    }

    async fn unregister(&self, _access_token: &str, _device_token: &str) -> Result<(), VoiceError> {
        self.net.lock().registered.remove(&self.identity);
        Ok(())
    }

    fn start_call(&self, link: CallLink, request: CallRequest) {
        match request {
            CallRequest::Connect(options) => {
                let target = options.to().strip_prefix("client:").unwrap_or(options.to()).to_owned();
                let sid = Self::new_sid();
                link.deliver(CallEvent::SidAssigned(sid.clone()));
                let callee = self.net.lock().registered.get(&target).cloned();
                let Some(callee) = callee else {
                    link.deliver(CallEvent::FailedToConnect(VoiceError::from_sip_response(404, "Not Found")));
                    return;
                };
                let params = options.params.iter().filter(|(k, _)| *k != "to");
                let details = InviteDetails::new(sid.clone(), target)
                    .with_from(format!("client:{}", self.identity))
                    .with_custom_parameters(params.map(|(k, v)| (k.clone(), v.clone())).collect());
                self.net.lock().calls.push(LoopCall {
                    sid,
                    caller: link.clone(),
                    caller_codecs: options.common.preferred_audio_codecs.clone(),
                    callee: callee.clone(),
                    callee_call: None,
                });
                link.deliver(CallEvent::Ringing);
                if !callee.incoming_invite(details) {
                    let uuid = link.uuid();
                    self.net.take_call(uuid);
                    link.deliver(CallEvent::FailedToConnect(VoiceError::from_sip_response(
                        480,
                        "Temporarily Unavailable",
                    )));
                }
            }
            CallRequest::Accept { invite, options } => {
                let caller = {
                    let mut net = self.net.lock();
                    let Some(call) = net.calls.iter_mut().find(|c| c.sid == invite.call_sid) else {
                        drop(net);
                        link.deliver(CallEvent::FailedToConnect(VoiceError::new(
                            ErrorCode::CallCancelled,
                            "the call is no longer waiting",
                        )));
                        return;
                    };
                    call.callee_call = Some(link.clone());
                    (call.caller.clone(), call.caller_codecs.clone())
                };
                let (caller, offered) = caller;
                let ours: Vec<&str> =
                    options.common.preferred_audio_codecs.iter().map(PreferredCodec::name).collect();
                match offered
                    .iter()
                    .map(PreferredCodec::name)
                    .find(|c| ours.iter().any(|o| o.eq_ignore_ascii_case(c)))
                {
                    Some(codec) => {
                        for side in [&caller, &link] {
                            side.deliver(CallEvent::CodecNegotiated(codec.to_owned()));
                            side.deliver(CallEvent::Connected);
                        }
                    }
                    None => {
                        self.net.take_call(link.uuid());
                        let e = VoiceError::new(
                            ErrorCode::NoSupportedCodec,
                            "the two sides have no audio codec in common",
                        );
                        caller.deliver(CallEvent::FailedToConnect(e.clone()));
                        link.deliver(CallEvent::FailedToConnect(e));
                    }
                }
            }
        }
    }

    fn call_command(&self, call: Uuid, command: CallCommand) {
        match command {
            CallCommand::Hangup => {
                let Some(c) = self.net.take_call(call) else { return };
                let by_caller = c.caller.uuid() == call;
                match (&c.callee_call, by_caller) {
                    (None, true) => c.callee.invite_event(
                        &c.sid,
                        InviteEvent::Cancelled(VoiceError::new(
                            ErrorCode::CallCancelled,
                            "the caller hung up",
                        )),
                    ),
                    (Some(callee), true) => callee.deliver(CallEvent::Disconnected(None)),
                    (_, false) => c.caller.deliver(CallEvent::Disconnected(None)),
                }
            }
            CallCommand::SendMessage(m) => {
                let id = m.voice_event_sid().unwrap_or_default().to_owned();
                let (me, other, invite) = {
                    let net = self.net.lock();
                    let Some(c) = net.calls.iter().find(|c| {
                        c.caller.uuid() == call || c.callee_call.as_ref().is_some_and(|l| l.uuid() == call)
                    }) else {
                        return;
                    };
                    if c.caller.uuid() == call {
                        (c.caller.clone(), c.callee_call.clone(), Some((c.callee.clone(), c.sid.clone())))
                    } else {
                        (
                            c.callee_call.clone().unwrap_or_else(|| c.caller.clone()),
                            Some(c.caller.clone()),
                            None,
                        )
                    }
                };
                match (other, invite) {
                    (Some(other), _) => other.deliver(CallEvent::MessageReceived(m)),
                    (None, Some((callee, sid))) => callee.invite_event(&sid, InviteEvent::MessageReceived(m)),
                    (None, None) => {}
                }
                me.deliver(CallEvent::MessageSent(id));
            }
            CallCommand::SendDigits(_) | CallCommand::SetMuted(_) | CallCommand::SetOnHold(_) => {}
        }
    }

    fn invite_command(&self, invite: &InviteDetails, command: InviteCommand) {
        let caller = {
            let mut net = self.net.lock();
            let Some(i) = net.calls.iter().position(|c| c.sid == invite.call_sid) else { return };
            match command {
                InviteCommand::Reject => net.calls.swap_remove(i).caller,
                InviteCommand::SendMessage(_) => net.calls[i].caller.clone(),
            }
        };
        match command {
            InviteCommand::Reject => caller
                .deliver(CallEvent::FailedToConnect(VoiceError::from_sip_response(600, "Call Rejected"))),
            InviteCommand::SendMessage(m) => {
                let id = m.voice_event_sid().unwrap_or_default().to_owned();
                caller.deliver(CallEvent::MessageReceived(m));
                if let Some(me) = self.link.get() {
                    me.invite_event(&invite.call_sid, InviteEvent::MessageSent(id));
                }
            }
        }
    }

    fn stats(&self, _call: Uuid) -> Option<StatsReport> {
        None
    }
}

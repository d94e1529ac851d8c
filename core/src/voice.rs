//! `Voice`, the SDK entry, and the boundary between the call model and the signaling
//! layer that carries it ([`VoiceBackend`]).
//!
//! The call model sends the backend [`CallRequest`]s, [`CallCommand`]s and
//! [`InviteCommand`]s; the backend reports back through the [`CallLink`] of each call
//! and the [`VoiceLink`] it was given when the `Voice` was built. The SIP user agent
//! of the signaling issue is one backend; [`crate::loopback`] is an in-memory one for
//! tests and the demo. An application never sees either link: it sees `Call`,
//! `CallInvite` and delegates.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, RwLock, Weak};

use async_trait::async_trait;
use serde_json::json;
use uuid::Uuid;

use crate::call::{Call, CallDelegate, CallShared};
use crate::clock::{Clock, SystemClock};
use crate::error::{ErrorCode, VoiceError};
use crate::insights::{InsightsEvent, InsightsEventName as N, InsightsLevel, InsightsSink, LogInsightsSink};
use crate::invite::{CallInvite, CancelledCallInvite, InviteShared, InviteState};
use crate::machine::{CallMachine, Direction};
use crate::message::{CallMessage, CallMessageDelegate, MessageRateLimiter};
use crate::options::{AcceptOptions, ConnectOptions};
use crate::push::{parse_notification, InviteDetails, Notification, NotificationPayload};
use crate::quality::QualitySample;
use crate::stats::StatsReport;

/// What the signaling or media layer reports about a call.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq)]
pub enum CallEvent {
    /// The server assigned the call SID (outgoing calls).
    SidAssigned(String),
    /// The callee is ringing (SIP 180/183).
    Ringing,
    /// The call connected (SIP 200 and ACK).
    Connected,
    /// A codec was negotiated (SDP answer applied).
    CodecNegotiated(String),
    /// The call could not be set up (a SIP failure, no common codec, ...).
    FailedToConnect(VoiceError),
    /// The other side hung up (`None`), or the call ended with an error.
    Disconnected(Option<VoiceError>),
    /// The connection dropped and is being restored.
    Reconnecting(VoiceError),
    /// The connection was restored.
    Reconnected,
    /// DTMF digits arrived (RFC 4733 events, or SIP INFO).
    DigitsReceived(String),
    /// A call message arrived.
    MessageReceived(CallMessage),
    /// The message with this voice event SID was delivered.
    MessageSent(String),
    /// The message with this voice event SID was refused.
    MessageFailed(String, VoiceError),
    /// One second of media measurements for the quality warning detector.
    QualitySample(QualitySample),
}

/// What the call model asks the backend to do with a call.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq)]
pub enum CallCommand {
    /// End the call: CANCEL if it is not answered yet, BYE if it is.
    Hangup,
    /// Send silence (true) or the microphone (false).
    SetMuted(bool),
    /// Put on hold (true) or resume (false).
    SetOnHold(bool),
    /// Send DTMF digits (`w` is a 500 ms pause).
    SendDigits(String),
    /// Send a call message (its voice event SID is set).
    SendMessage(CallMessage),
}

/// What the call model asks the backend to do with a pending invite.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq)]
pub enum InviteCommand {
    /// Answer SIP 600 `Call Rejected`.
    Reject,
    /// Send a call message to the caller (its voice event SID is set).
    SendMessage(CallMessage),
}

/// What the backend reports about a pending invite.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq)]
pub enum InviteEvent {
    /// The caller hung up before the answer.
    Cancelled(VoiceError),
    /// The caller sent a call message.
    MessageReceived(CallMessage),
    /// The message with this voice event SID was delivered.
    MessageSent(String),
    /// The message with this voice event SID was refused.
    MessageFailed(String, VoiceError),
}

/// How a call starts.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub enum CallRequest {
    /// Place a call.
    Connect(ConnectOptions),
    /// Answer an invite (a push invite carries its bridge token).
    Accept {
        /// The invite being answered.
        invite: InviteDetails,
        /// The answer's options.
        options: AcceptOptions,
    },
}

/// The signaling layer under a [`Voice`]. Methods other than `register` and
/// `unregister` must return quickly: queue the work and report through the links.
#[async_trait]
pub trait VoiceBackend: Send + Sync {
    /// Called once when the `Voice` is built; keep the link to report incoming invites.
    fn attach(&self, link: VoiceLink);
    /// Registers the identity of the access token for incoming calls.
    async fn register(&self, access_token: &str, device_token: &str) -> Result<(), VoiceError>;
    /// Removes the registration.
    async fn unregister(&self, access_token: &str, device_token: &str) -> Result<(), VoiceError>;
    /// Starts a call; report its progress through `link` (keep it until the call ends).
    fn start_call(&self, link: CallLink, request: CallRequest);
    /// Acts on a call started with `start_call`, named by its UUID.
    fn call_command(&self, call: Uuid, command: CallCommand);
    /// Acts on a pending invite.
    fn invite_command(&self, invite: &InviteDetails, command: InviteCommand);
    /// The call's media statistics, if it has media.
    fn stats(&self, call: Uuid) -> Option<StatsReport>;
    /// Uses a new access token from now on (and refreshes the registration with it).
    fn update_token(&self, access_token: &str) {
        let _ = access_token;
    }
}

/// Hears about invites: those a push payload carries
/// ([`Voice::handle_notification`]) and those arriving over the signaling connection
/// ([`Voice::set_incoming_delegate`]).
pub trait NotificationDelegate: Send + Sync {
    /// An invite arrived.
    fn call_invite_received(&self, invite: CallInvite);
    /// The caller of a pending invite hung up.
    fn cancelled_call_invite_received(&self, cancelled: CancelledCallInvite, error: &VoiceError);
    /// Where the call messages of invites reported to this delegate go (none by default).
    fn call_message_delegate(&self) -> Option<Arc<dyn CallMessageDelegate>> {
        None
    }
}

/// A backend's way to report on one call. Only the SDK makes links.
#[derive(Clone)]
pub struct CallLink {
    pub(crate) call: Call,
}

impl CallLink {
    /// The call's UUID, the key of [`VoiceBackend::call_command`].
    pub fn uuid(&self) -> Uuid {
        self.call.uuid()
    }

    /// Reports an event; events after the call ended are ignored.
    pub fn deliver(&self, event: CallEvent) {
        self.call.deliver(event);
    }

    /// The call's SID, once known.
    pub fn sid(&self) -> Option<String> {
        self.call.sid()
    }

    /// The call's state as the application sees it. This is the one record of where
    /// a call stands: a backend reads it here rather than keeping a copy, and every
    /// event it delivers updates it before `deliver` returns. A call the application
    /// hung up is already [`crate::CallState::Disconnected`] when the backend hears the
    /// `Hangup` command.
    pub fn state(&self) -> crate::CallState {
        self.call.state()
    }
}

impl fmt::Debug for CallLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CallLink").field(&self.call.uuid()).finish()
    }
}

/// A backend's way to report invites to its `Voice`. Only the SDK makes links.
#[derive(Clone)]
pub struct VoiceLink {
    voice: Weak<VoiceShared>,
}

impl fmt::Debug for VoiceLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VoiceLink")
    }
}

impl VoiceLink {
    /// Reports an incoming call to the incoming delegate. Returns false if there is no
    /// delegate (the backend should then answer 480) or the `Voice` is gone.
    pub fn incoming_invite(&self, details: InviteDetails) -> bool {
        let Some(voice) = self.voice.upgrade() else { return false };
        let Some(delegate) = voice.incoming_delegate() else {
            tracing::warn!(call_sid = %details.call_sid, "incoming invite but no incoming delegate is set");
            return false;
        };
        voice.invite_arrived(details, delegate);
        true
    }

    /// Reports an event on a pending invite, named by its call SID.
    pub fn invite_event(&self, call_sid: &str, event: InviteEvent) {
        let Some(voice) = self.voice.upgrade() else { return };
        let Some(delegate) = voice.incoming_delegate() else { return };
        voice.invite_event(call_sid, event, delegate);
    }
}

/// Finished invites remembered so that a late cancel for them is not reported.
const FINISHED_INVITES_KEPT: usize = 1024;

#[derive(Default)]
struct Invites {
    by_sid: HashMap<String, Arc<InviteShared>>,
    finished: VecDeque<String>,
}

pub(crate) struct VoiceShared {
    pub(crate) backend: Arc<dyn VoiceBackend>,
    pub(crate) clock: Arc<dyn Clock>,
    insights: Arc<dyn InsightsSink>,
    insights_enabled: RwLock<bool>,
    incoming: RwLock<Option<Arc<dyn NotificationDelegate>>>,
    invites: Mutex<Invites>,
}

impl VoiceShared {
    pub(crate) fn publish(
        &self,
        name: N,
        level: InsightsLevel,
        call_sid: Option<String>,
        payload: serde_json::Value,
    ) {
        if *self.insights_enabled.read().unwrap_or_else(|p| p.into_inner()) {
            self.insights.publish(&InsightsEvent::new(name, level, call_sid, self.clock.wall(), payload));
        }
    }

    fn incoming_delegate(&self) -> Option<Arc<dyn NotificationDelegate>> {
        self.incoming.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn invites(&self) -> std::sync::MutexGuard<'_, Invites> {
        self.invites.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers that the invite `sid` finished; forgets the oldest finished invites
    /// beyond [`FINISHED_INVITES_KEPT`].
    pub(crate) fn invite_finished(&self, sid: &str) {
        let mut inv = self.invites();
        inv.finished.push_back(sid.to_owned());
        while inv.finished.len() > FINISHED_INVITES_KEPT {
            if let Some(old) = inv.finished.pop_front() {
                inv.by_sid.remove(&old);
            }
        }
    }

    fn invite_arrived(self: &Arc<Self>, details: InviteDetails, delegate: Arc<dyn NotificationDelegate>) {
        let invite = {
            let mut inv = self.invites();
            if let Some(existing) = inv.by_sid.get(&details.call_sid) {
                if existing.lock().0 != InviteState::Pending {
                    tracing::debug!(call_sid = %details.call_sid, "repeated invite for a finished call ignored");
                    return;
                }
                existing.clone()
            } else {
                let shared = Arc::new(InviteShared {
                    details,
                    uuid: Uuid::new_v4(),
                    state: Mutex::new((InviteState::Pending, MessageRateLimiter::default())),
                    message_delegate: delegate.call_message_delegate(),
                    voice: self.clone(),
                });
                inv.by_sid.insert(shared.details.call_sid.clone(), shared.clone());
                shared
            }
        };
        self.publish(N::Incoming, InsightsLevel::Info, Some(invite.details.call_sid.clone()), json!({}));
        delegate.call_invite_received(CallInvite { inner: invite });
    }

    fn invite_event(&self, call_sid: &str, event: InviteEvent, delegate: Arc<dyn NotificationDelegate>) {
        let invite = self.invites().by_sid.get(call_sid).cloned();
        match event {
            InviteEvent::Cancelled(error) => {
                let details = match &invite {
                    // Accepted or rejected (or already cancelled): never reported.
                    Some(i) if !i.finish(InviteState::Cancelled) => return,
                    Some(i) => i.details.clone(),
                    None => InviteDetails::new(call_sid, ""),
                };
                self.cancelled(details, error, &delegate);
            }
            other => {
                let Some(i) = invite.filter(|i| i.lock().0 == InviteState::Pending) else { return };
                let Some(md) = &i.message_delegate else { return };
                match other {
                    InviteEvent::MessageReceived(m) => {
                        self.publish(
                            N::MessageReceived,
                            InsightsLevel::Info,
                            Some(call_sid.to_owned()),
                            json!({}),
                        );
                        md.did_receive_message(call_sid, &m)
                    }
                    InviteEvent::MessageSent(id) => {
                        self.publish(
                            N::MessageSent,
                            InsightsLevel::Info,
                            Some(call_sid.to_owned()),
                            json!({}),
                        );
                        md.did_send_message(call_sid, &id)
                    }
                    InviteEvent::MessageFailed(id, e) => {
                        self.publish(
                            N::MessageError,
                            InsightsLevel::Error,
                            Some(call_sid.to_owned()),
                            json!({"code": e.code(), "message": e.message()}),
                        );
                        md.did_fail_to_send_message(call_sid, &id, &e)
                    }
                    InviteEvent::Cancelled(_) => {}
                }
            }
        }
    }

    fn cancelled(&self, details: InviteDetails, error: VoiceError, delegate: &Arc<dyn NotificationDelegate>) {
        self.publish(N::Cancel, InsightsLevel::Info, Some(details.call_sid.clone()), json!({}));
        delegate.cancelled_call_invite_received(CancelledCallInvite { details }, &error);
    }
}

/// The SDK entry: registers for incoming calls, turns push payloads into invites and
/// places calls. Cloning gives another handle to the same instance.
///
/// ```
/// use std::sync::Arc;
/// use dialtone_core::{loopback::LoopbackNetwork, Voice, VoiceError, CallInvite, CancelledCallInvite, NotificationDelegate};
///
/// struct Print;
/// impl NotificationDelegate for Print {
///     fn call_invite_received(&self, invite: CallInvite) {
///         assert_eq!(invite.custom_parameters()["caller_first_name"], "alice");
///     }
///     fn cancelled_call_invite_received(&self, _: CancelledCallInvite, _: &VoiceError) {}
/// }
///
/// let voice = Voice::builder(LoopbackNetwork::new().backend("bob")).build();
/// let payload = r#"{"twi_message_type":"twilio.voice.call","twi_call_sid":"CA1",
///                   "twi_to":"bob","twi_params":"caller_first_name=alice"}"#;
/// assert!(voice.handle_notification(payload, Arc::new(Print)).unwrap());
/// assert!(!voice.handle_notification(r#"{"aps":{}}"#, Arc::new(Print)).unwrap());
/// ```
#[derive(Clone)]
pub struct Voice {
    shared: Arc<VoiceShared>,
}

impl fmt::Debug for Voice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Voice").finish_non_exhaustive()
    }
}

/// Builds a [`Voice`].
pub struct VoiceBuilder {
    backend: Arc<dyn VoiceBackend>,
    clock: Arc<dyn Clock>,
    insights: Arc<dyn InsightsSink>,
    insights_enabled: bool,
    incoming: Option<Arc<dyn NotificationDelegate>>,
}

impl VoiceBuilder {
    /// Uses this clock (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Publishes insights to this sink (default: the log).
    pub fn insights_sink(mut self, sink: Arc<dyn InsightsSink>) -> Self {
        self.insights = sink;
        self
    }

    /// Turns insights publishing on or off (default on).
    pub fn insights_enabled(mut self, on: bool) -> Self {
        self.insights_enabled = on;
        self
    }

    /// Sets the delegate for invites arriving over the signaling connection.
    pub fn incoming_delegate(mut self, delegate: Arc<dyn NotificationDelegate>) -> Self {
        self.incoming = Some(delegate);
        self
    }

    /// The `Voice`; its backend is attached before this returns.
    pub fn build(self) -> Voice {
        let shared = Arc::new(VoiceShared {
            backend: self.backend,
            clock: self.clock,
            insights: self.insights,
            insights_enabled: RwLock::new(self.insights_enabled),
            incoming: RwLock::new(self.incoming),
            invites: Mutex::new(Invites::default()),
        });
        shared.backend.attach(VoiceLink { voice: Arc::downgrade(&shared) });
        Voice { shared }
    }
}

impl Voice {
    /// Starts building a `Voice` over a signaling backend.
    pub fn builder(backend: Arc<dyn VoiceBackend>) -> VoiceBuilder {
        VoiceBuilder {
            backend,
            clock: Arc::new(SystemClock),
            insights: Arc::new(LogInsightsSink),
            insights_enabled: true,
            incoming: None,
        }
    }

    /// The SDK's version.
    pub fn version() -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    /// Registers for incoming calls with an access token; `device_token` names this
    /// device for push notifications (may be empty). Publishes
    /// `registration/registration` or `registration/registration-error`.
    pub async fn register(&self, access_token: &str, device_token: &str) -> Result<(), VoiceError> {
        let result = if access_token.is_empty() {
            Err(VoiceError::new(ErrorCode::AccessTokenInvalid, "the access token is empty"))
        } else {
            self.shared.backend.register(access_token, device_token).await
        };
        self.registration_insight(&result, N::Registration, N::RegistrationError);
        result
    }

    /// Removes the registration. Publishes `registration/unregistration` or
    /// `registration/unregistration-error`.
    pub async fn unregister(&self, access_token: &str, device_token: &str) -> Result<(), VoiceError> {
        let result = self.shared.backend.unregister(access_token, device_token).await;
        self.registration_insight(&result, N::Unregistration, N::UnregistrationError);
        result
    }

    fn registration_insight(&self, result: &Result<(), VoiceError>, ok: N, err: N) {
        match result {
            Ok(()) => self.shared.publish(ok, InsightsLevel::Info, None, json!({})),
            Err(e) => self.shared.publish(
                err,
                InsightsLevel::Error,
                None,
                json!({"code": e.code(), "message": e.message()}),
            ),
        }
    }

    /// Hands the signaling layer a fresh access token before the old one expires: the
    /// next requests carry it and a registration is refreshed with it.
    pub fn update_token(&self, access_token: &str) {
        self.shared.backend.update_token(access_token);
    }

    /// Sets the delegate for invites arriving over the signaling connection.
    pub fn set_incoming_delegate(&self, delegate: Arc<dyn NotificationDelegate>) {
        *self.shared.incoming.write().unwrap_or_else(|p| p.into_inner()) = Some(delegate);
    }

    /// Handles a push payload. `Ok(true)`: it was a Dialtone voice message and the
    /// delegate was told (a `twilio.voice.call` becomes a [`CallInvite`], a
    /// `twilio.voice.cancel` a [`CancelledCallInvite`], unless that invite was
    /// already accepted or rejected). `Ok(false)`: not ours. `Err`: ours but malformed
    /// (31100, naming the key).
    pub fn handle_notification(
        &self,
        payload: impl Into<NotificationPayload>,
        delegate: Arc<dyn NotificationDelegate>,
    ) -> Result<bool, VoiceError> {
        match parse_notification(&payload.into())? {
            None => Ok(false),
            Some(Notification::Call(details)) => {
                self.shared.invite_arrived(details, delegate);
                Ok(true)
            }
            Some(Notification::Cancel(details)) => {
                let sid = details.call_sid.clone();
                let known = self.shared.invites().by_sid.contains_key(&sid);
                if known {
                    self.shared.invite_event(&sid, InviteEvent::Cancelled(cancelled_error()), delegate);
                } else {
                    self.shared.cancelled(details, cancelled_error(), &delegate);
                }
                Ok(true)
            }
        }
    }

    /// Places a call. Always returns a call; its delegate hears whether it connects.
    /// An empty access token fails at once with 20101.
    pub fn connect(&self, options: ConnectOptions, delegate: Arc<dyn CallDelegate>) -> Call {
        let call = Call {
            inner: Arc::new(CallShared {
                uuid: options.common.uuid,
                from: None,
                to: options.to().to_owned(),
                machine: Mutex::new(CallMachine::new(
                    Direction::Outgoing,
                    None,
                    MessageRateLimiter::default(),
                )),
                delegate,
                message_delegate: options.common.call_message_delegate.clone(),
                voice: self.shared.clone(),
            }),
        };
        self.shared.publish(N::Outgoing, InsightsLevel::Info, None, json!({"to": options.to()}));
        if options.access_token.is_empty() {
            call.deliver(CallEvent::FailedToConnect(VoiceError::new(
                ErrorCode::AccessTokenInvalid,
                "the access token is empty",
            )));
        } else {
            self.shared.backend.start_call(CallLink { call: call.clone() }, CallRequest::Connect(options));
        }
        call
    }

    /// Turns insights publishing on or off.
    pub fn set_insights_enabled(&self, on: bool) {
        *self.shared.insights_enabled.write().unwrap_or_else(|p| p.into_inner()) = on;
    }

    /// Whether insights are published.
    pub fn insights_enabled(&self) -> bool {
        *self.shared.insights_enabled.read().unwrap_or_else(|p| p.into_inner())
    }
}

fn cancelled_error() -> VoiceError {
    VoiceError::new(ErrorCode::CallCancelled, "the caller hung up before the call was answered")
}

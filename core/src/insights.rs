//! Insights: the events a call publishes about itself (design.md's catalogue of groups
//! and names) and the [`InsightsSink`] trait that carries them somewhere.
//!
//! This module owns the event names and the event record. Which events fire when is
//! decided by the call state machine; where they go is decided by the sink.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::quality::QualityWarning;

/// The name of an insights event: its group and its name within the group.
#[non_exhaustive]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum InsightsEventName {
    /// connection/incoming: an invite arrived.
    Incoming,
    /// connection/outgoing: `connect` was called.
    Outgoing,
    /// connection/accepted-by-local: the invite was accepted here.
    AcceptedByLocal,
    /// connection/accepted-by-remote: the callee answered.
    AcceptedByRemote,
    /// connection/ringing: the callee is ringing.
    Ringing,
    /// connection/connected
    Connected,
    /// connection/disconnect-called: `disconnect` was called.
    DisconnectCalled,
    /// connection/disconnected-by-local
    DisconnectedByLocal,
    /// connection/disconnected-by-remote
    DisconnectedByRemote,
    /// connection/rejected-by-local: the invite was rejected here.
    RejectedByLocal,
    /// connection/cancel: the caller cancelled the invite.
    Cancel,
    /// connection/listen
    Listen,
    /// connection/listening
    Listening,
    /// connection/listening-error
    ListeningError,
    /// connection/muted
    Muted,
    /// connection/unmuted
    Unmuted,
    /// connection/hold
    Hold,
    /// connection/unhold
    Unhold,
    /// connection/reconnecting
    Reconnecting,
    /// connection/reconnected
    Reconnected,
    /// connection/error: the payload has `code` and `message`.
    Error,
    /// settings/codec: a codec was negotiated; the payload has `codec`.
    Codec,
    /// registration/registration
    Registration,
    /// registration/registration-error
    RegistrationError,
    /// registration/unregistration
    Unregistration,
    /// registration/unregistration-error
    UnregistrationError,
    /// `network-quality-warning-raised/<warning>` or `audio-level-warning-raised/<warning>`
    WarningRaised(QualityWarning),
    /// `network-quality-warning-cleared/<warning>` or `audio-level-warning-cleared/<warning>`
    WarningCleared(QualityWarning),
    /// feedback/received
    FeedbackReceived,
    /// feedback/received-none
    FeedbackReceivedNone,
    /// call-message/sent
    MessageSent,
    /// call-message/received
    MessageReceived,
    /// call-message/error
    MessageError,
}

impl InsightsEventName {
    /// The event's group, for example `connection`.
    pub fn group(self) -> &'static str {
        use InsightsEventName::*;
        match self {
            Codec => "settings",
            Registration | RegistrationError | Unregistration | UnregistrationError => "registration",
            WarningRaised(w) if w.is_audio_level() => "audio-level-warning-raised",
            WarningRaised(_) => "network-quality-warning-raised",
            WarningCleared(w) if w.is_audio_level() => "audio-level-warning-cleared",
            WarningCleared(_) => "network-quality-warning-cleared",
            FeedbackReceived | FeedbackReceivedNone => "feedback",
            MessageSent | MessageReceived | MessageError => "call-message",
            _ => "connection",
        }
    }

    /// The event's name within its group, for example `accepted-by-local`.
    pub fn name(self) -> &'static str {
        use InsightsEventName::*;
        match self {
            Incoming => "incoming",
            Outgoing => "outgoing",
            AcceptedByLocal => "accepted-by-local",
            AcceptedByRemote => "accepted-by-remote",
            Ringing => "ringing",
            Connected => "connected",
            DisconnectCalled => "disconnect-called",
            DisconnectedByLocal => "disconnected-by-local",
            DisconnectedByRemote => "disconnected-by-remote",
            RejectedByLocal => "rejected-by-local",
            Cancel => "cancel",
            Listen => "listen",
            Listening => "listening",
            ListeningError => "listening-error",
            Muted => "muted",
            Unmuted => "unmuted",
            Hold => "hold",
            Unhold => "unhold",
            Reconnecting => "reconnecting",
            Reconnected => "reconnected",
            Error => "error",
            Codec => "codec",
            Registration => "registration",
            RegistrationError => "registration-error",
            Unregistration => "unregistration",
            UnregistrationError => "unregistration-error",
            WarningRaised(w) | WarningCleared(w) => w.name(),
            FeedbackReceived => "received",
            FeedbackReceivedNone => "received-none",
            MessageSent => "sent",
            MessageReceived => "received",
            MessageError => "error",
        }
    }
}

/// How serious an event is.
#[non_exhaustive]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InsightsLevel {
    /// Detail for debugging.
    Debug,
    /// Ordinary progress.
    Info,
    /// Degraded but working.
    Warning,
    /// A failure.
    Error,
}

/// One published event.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct InsightsEvent {
    /// The group, for example `connection`.
    pub group: &'static str,
    /// The name within the group, for example `ringing`.
    pub name: &'static str,
    /// How serious it is.
    pub level: InsightsLevel,
    /// The call it belongs to, when it belongs to a call whose SID is known.
    pub call_sid: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Event-specific detail (an error's `code` and `message`, a codec name, ...).
    pub payload: serde_json::Value,
}

impl InsightsEvent {
    /// Builds an event stamped with `at`.
    pub fn new(
        name: InsightsEventName,
        level: InsightsLevel,
        call_sid: Option<String>,
        at: SystemTime,
        payload: serde_json::Value,
    ) -> Self {
        let timestamp_ms = at
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        InsightsEvent { group: name.group(), name: name.name(), level, call_sid, timestamp_ms, payload }
    }

    /// `group/name`, the way the catalogue writes it.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.group, self.name)
    }

    /// Whether this is the event `name`.
    pub fn is(&self, name: InsightsEventName) -> bool {
        self.group == name.group() && self.name == name.name()
    }
}

/// Where insights events go: a log, an HTTP collector, a test's memory.
///
/// `publish` is called on the thread that caused the event, so it must not block for
/// long; a sink that does I/O queues the event and sends it from its own task.
pub trait InsightsSink: Send + Sync {
    /// Takes one event.
    fn publish(&self, event: &InsightsEvent);
}

/// A sink that writes each event to `tracing` at the event's level.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogInsightsSink;

impl InsightsSink for LogInsightsSink {
    fn publish(&self, event: &InsightsEvent) {
        let name = event.full_name();
        let sid = event.call_sid.as_deref().unwrap_or("");
        match event.level {
            InsightsLevel::Error => {
                tracing::error!(event = %name, call_sid = sid, payload = %event.payload, "insights")
            }
            InsightsLevel::Warning => {
                tracing::warn!(event = %name, call_sid = sid, payload = %event.payload, "insights")
            }
            InsightsLevel::Info => {
                tracing::info!(event = %name, call_sid = sid, payload = %event.payload, "insights")
            }
            InsightsLevel::Debug => {
                tracing::debug!(event = %name, call_sid = sid, payload = %event.payload, "insights")
            }
        }
    }
}

/// A sink that keeps every event in memory, for tests and for bots that inspect
/// their own calls.
#[derive(Debug, Default)]
pub struct MemoryInsightsSink {
    events: Mutex<Vec<InsightsEvent>>,
}

impl MemoryInsightsSink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of every event so far, oldest first.
    pub fn events(&self) -> Vec<InsightsEvent> {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The `group/name` of every event so far, oldest first.
    pub fn names(&self) -> Vec<String> {
        self.events().iter().map(InsightsEvent::full_name).collect()
    }

    /// How many events named `name` were published.
    pub fn count(&self, name: InsightsEventName) -> usize {
        self.events().iter().filter(|e| e.is(name)).count()
    }
}

impl InsightsSink for MemoryInsightsSink {
    fn publish(&self, event: &InsightsEvent) {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).push(event.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_catalogue() {
        let cases = [
            (InsightsEventName::AcceptedByLocal, "connection/accepted-by-local"),
            (InsightsEventName::RejectedByLocal, "connection/rejected-by-local"),
            (InsightsEventName::Codec, "settings/codec"),
            (InsightsEventName::RegistrationError, "registration/registration-error"),
            (
                InsightsEventName::WarningRaised(QualityWarning::HighRtt),
                "network-quality-warning-raised/high-rtt",
            ),
            (
                InsightsEventName::WarningCleared(QualityWarning::ConstantAudioInputLevel),
                "audio-level-warning-cleared/constant-audio-input-level",
            ),
            (InsightsEventName::FeedbackReceivedNone, "feedback/received-none"),
            (InsightsEventName::MessageError, "call-message/error"),
        ];
        for (name, want) in cases {
            let e = InsightsEvent::new(
                name,
                InsightsLevel::Info,
                None,
                SystemTime::UNIX_EPOCH,
                serde_json::Value::Null,
            );
            assert_eq!(e.full_name(), want);
            assert!(e.is(name));
        }
    }
}

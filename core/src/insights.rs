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

/// A sink that POSTs events to an HTTP collector (the Dialtone server's
/// `/v1/Insights/Events`) as JSON arrays, authenticated with the client's access token
/// (`X-Dialtone-Token`).
///
/// `publish` only queues: a thread of the sink's own batches the events (up to 100,
/// or whatever arrived within half a second) and posts them. The queue holds 1,000
/// events; beyond that, and when a post fails, events are dropped and counted
/// ([`dropped`](Self::dropped)), never blocking the call.
pub struct HttpInsightsSink {
    tx: Mutex<std::sync::mpsc::SyncSender<SinkCommand>>,
    token: std::sync::Arc<Mutex<String>>,
    counts: std::sync::Arc<SinkCounts>,
}

#[derive(Default)]
struct SinkCounts {
    sent: std::sync::atomic::AtomicU64,
    dropped: std::sync::atomic::AtomicU64,
}

enum SinkCommand {
    Event(InsightsEvent),
    Flush(std::sync::mpsc::Sender<()>),
}

impl std::fmt::Debug for HttpInsightsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpInsightsSink")
            .field("sent", &self.sent())
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

/// Events per POST.
const HTTP_BATCH: usize = 100;

impl HttpInsightsSink {
    /// A sink posting to `url` (`http://host:port/v1/Insights/Events`) with `token`.
    pub fn new(url: impl Into<String>, token: impl Into<String>) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        use std::sync::mpsc::RecvTimeoutError;
        let (tx, rx) = std::sync::mpsc::sync_channel::<SinkCommand>(1000);
        let token = std::sync::Arc::new(Mutex::new(token.into()));
        let counts = std::sync::Arc::new(SinkCounts::default());
        let (url, tok, c) = (url.into(), token.clone(), counts.clone());
        let post = move |batch: &mut Vec<InsightsEvent>| {
            if batch.is_empty() {
                return;
            }
            let body = serde_json::to_vec(&batch).unwrap_or_default();
            let token = tok.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let r = crate::http::post(
                &url,
                "application/json",
                &[("X-Dialtone-Token", &token)],
                &body,
                std::time::Duration::from_secs(5),
            );
            match r {
                Ok(r) if (200..300).contains(&r.status) => {
                    c.sent.fetch_add(batch.len() as u64, Relaxed);
                }
                Ok(r) => {
                    tracing::warn!(status = r.status, body = %r.body, "the insights collector refused events");
                    c.dropped.fetch_add(batch.len() as u64, Relaxed);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot post insights events");
                    c.dropped.fetch_add(batch.len() as u64, Relaxed);
                }
            }
            batch.clear();
        };
        let spawned = std::thread::Builder::new().name("dialtone-insights".into()).spawn(move || {
            let mut batch = Vec::new();
            loop {
                match rx.recv_timeout(std::time::Duration::from_millis(500)) {
                    Ok(SinkCommand::Event(e)) => {
                        batch.push(e);
                        if batch.len() >= HTTP_BATCH {
                            post(&mut batch);
                        }
                    }
                    Ok(SinkCommand::Flush(done)) => {
                        post(&mut batch);
                        let _ = done.send(());
                    }
                    Err(RecvTimeoutError::Timeout) => post(&mut batch),
                    Err(RecvTimeoutError::Disconnected) => {
                        post(&mut batch);
                        return;
                    }
                }
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the insights thread; events will be dropped");
        }
        HttpInsightsSink { tx: Mutex::new(tx), token, counts }
    }

    /// Uses a new access token from now on (after `Voice::update_token`).
    pub fn set_token(&self, token: impl Into<String>) {
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = token.into();
    }

    /// Posts everything queued so far, waiting at most `timeout`; false if it could
    /// not finish in time.
    pub fn flush(&self, timeout: std::time::Duration) -> bool {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let sent = self.tx.lock().unwrap_or_else(|p| p.into_inner()).send(SinkCommand::Flush(done_tx));
        sent.is_ok() && done_rx.recv_timeout(timeout).is_ok()
    }

    /// Events the collector accepted.
    pub fn sent(&self) -> u64 {
        self.counts.sent.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Events lost: a full queue, a failed post, or a refusal.
    pub fn dropped(&self) -> u64 {
        self.counts.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for HttpInsightsSink {
    /// Posts what is still queued (waiting at most 2 s), so a program that ends right
    /// after a call still reports it.
    fn drop(&mut self) {
        self.flush(std::time::Duration::from_secs(2));
    }
}

impl InsightsSink for HttpInsightsSink {
    fn publish(&self, event: &InsightsEvent) {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        if tx.try_send(SinkCommand::Event(event.clone())).is_err() {
            self.counts.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
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

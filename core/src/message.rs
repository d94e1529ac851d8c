//! User-defined call messages: the message record, its checks (type, size) and the
//! per-call rate limit, and the delegate that hears about them.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, VoiceError};

/// The only message type the catalogue allows.
pub const USER_DEFINED_MESSAGE: &str = "user-defined-message";
/// The content type a message has unless told otherwise.
pub const DEFAULT_CONTENT_TYPE: &str = "application/json";
/// The largest content a message may carry, in bytes (10 KB).
pub const MAX_MESSAGE_BYTES: usize = 10 * 1024;
/// How many messages one call may send in [`MESSAGE_RATE_WINDOW`].
pub const MAX_MESSAGES_PER_WINDOW: usize = 10;
/// The window of the message rate limit: one minute.
pub const MESSAGE_RATE_WINDOW: Duration = Duration::from_secs(60);

/// A user-defined message exchanged during a call.
///
/// ```
/// use dialtone_core::CallMessage;
/// let m = CallMessage::new(r#"{"hello":"bob"}"#);
/// assert_eq!(m.content_type(), "application/json");
/// assert_eq!(m.message_type(), "user-defined-message");
/// assert!(m.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallMessage {
    content: String,
    content_type: String,
    message_type: String,
    voice_event_sid: Option<String>,
}

impl CallMessage {
    /// A message with the default content type and the user-defined type.
    pub fn new(content: impl Into<String>) -> Self {
        CallMessage {
            content: content.into(),
            content_type: DEFAULT_CONTENT_TYPE.to_owned(),
            message_type: USER_DEFINED_MESSAGE.to_owned(),
            voice_event_sid: None,
        }
    }

    /// Sets the content type (default `application/json`).
    pub fn with_content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = content_type.into();
        self
    }

    /// Sets the message type (only `user-defined-message` is accepted when sending).
    pub fn with_message_type(mut self, message_type: impl Into<String>) -> Self {
        self.message_type = message_type.into();
        self
    }

    /// Sets the id the message travels under; the SDK sets it when sending, and a
    /// signaling layer sets it on messages it receives.
    pub fn with_voice_event_sid(mut self, sid: impl Into<String>) -> Self {
        self.voice_event_sid = Some(sid.into());
        self
    }

    /// The content.
    pub fn content(&self) -> &str {
        &self.content
    }

    /// The content type.
    pub fn content_type(&self) -> &str {
        &self.content_type
    }

    /// The message type.
    pub fn message_type(&self) -> &str {
        &self.message_type
    }

    /// The id it travels under, once sent or received.
    pub fn voice_event_sid(&self) -> Option<&str> {
        self.voice_event_sid.as_deref()
    }

    /// Checks the type (31210) and the size (31212).
    pub fn validate(&self) -> Result<(), VoiceError> {
        if self.message_type != USER_DEFINED_MESSAGE {
            return Err(VoiceError::new(
                ErrorCode::CallMessageTypeInvalid,
                format!("message type {:?} is not {USER_DEFINED_MESSAGE}", self.message_type),
            ));
        }
        if self.content.len() > MAX_MESSAGE_BYTES {
            return Err(VoiceError::new(
                ErrorCode::PayloadSizeExceeded,
                format!("content is {} bytes, over the {MAX_MESSAGE_BYTES}-byte limit", self.content.len()),
            ));
        }
        Ok(())
    }
}

/// A new voice event SID: `KX` and 32 hex digits.
pub(crate) fn new_voice_event_sid() -> String {
    format!("KX{}", uuid::Uuid::new_v4().simple())
}

/// The sliding one-minute limit of [`MAX_MESSAGES_PER_WINDOW`] messages on one call.
#[derive(Clone, Debug, Default)]
pub struct MessageRateLimiter {
    sent: VecDeque<Instant>,
}

impl MessageRateLimiter {
    /// Records a send at `now` if the limit allows it; `Err(31206)` otherwise.
    pub fn try_send(&mut self, now: Instant) -> Result<(), VoiceError> {
        while self.sent.front().is_some_and(|t| now.saturating_duration_since(*t) >= MESSAGE_RATE_WINDOW) {
            self.sent.pop_front();
        }
        if self.sent.len() >= MAX_MESSAGES_PER_WINDOW {
            return Err(VoiceError::new(
                ErrorCode::RateExceeded,
                format!("more than {MAX_MESSAGES_PER_WINDOW} call messages within a minute"),
            ));
        }
        self.sent.push_back(now);
        Ok(())
    }
}

/// Hears about the call messages of a call or an invite. Every method has an empty
/// default. Called on the thread that caused the event; do not block in it.
pub trait CallMessageDelegate: Send + Sync {
    /// A message arrived from the other side.
    fn did_receive_message(&self, call_sid: &str, message: &CallMessage) {
        let _ = (call_sid, message);
    }
    /// The message with this id was delivered.
    fn did_send_message(&self, call_sid: &str, voice_event_sid: &str) {
        let _ = (call_sid, voice_event_sid);
    }
    /// The message with this id could not be sent; the error has its catalogue code.
    fn did_fail_to_send_message(&self, call_sid: &str, voice_event_sid: &str, error: &VoiceError) {
        let _ = (call_sid, voice_event_sid, error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_and_type_checks() {
        assert!(CallMessage::new("x".repeat(MAX_MESSAGE_BYTES)).validate().is_ok());
        let big = CallMessage::new("x".repeat(MAX_MESSAGE_BYTES + 1));
        assert_eq!(big.validate().map_err(|e| e.code()), Err(31212));
        let typed = CallMessage::new("{}").with_message_type("other");
        assert_eq!(typed.validate().map_err(|e| e.code()), Err(31210));
    }

    #[test]
    fn rate_limit_slides() {
        let mut l = MessageRateLimiter::default();
        let t0 = Instant::now();
        for i in 0..10 {
            assert!(l.try_send(t0 + Duration::from_secs(i)).is_ok());
        }
        assert_eq!(l.try_send(t0 + Duration::from_secs(59)).map_err(|e| e.code()), Err(31206));
        // the first send leaves the window at t0 + 60 s
        assert!(l.try_send(t0 + Duration::from_secs(60)).is_ok());
        assert!(l.try_send(t0 + Duration::from_secs(60)).is_err());
    }

    #[test]
    fn voice_event_sids_are_unique() {
        let a = new_voice_event_sid();
        assert!(a.starts_with("KX") && a.len() == 34);
        assert_ne!(a, new_voice_event_sid());
    }
}

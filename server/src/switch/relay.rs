//! What passes between the legs of an answered call besides media: user-defined call
//! messages (checked by the SDK core's own rules: type, size, ten a minute) and DTMF
//! INFO. Call messages reach only Dialtone clients, and every subscription of the
//! sending leg hears them; messages sent through the REST API go the same way.

use std::time::Instant;

use dialtone_core::{CallMessage, ErrorCode, VoiceError};
use dialtone_sip::message::Message;
use dialtone_sip::ua::{response_to, CallId, ServerTxKey};
use dialtone_sip::wire;

use super::bridges::Role;
use super::{with_error, FlowId, Output, Switch};
use crate::accounts::new_sid;

/// Checks the content of a call message sent through the REST API: JSON, at most
/// the size limit.
pub(crate) fn check_rest_message(content: &str) -> Result<(), VoiceError> {
    CallMessage::new(content).validate()?;
    if serde_json::from_str::<serde_json::Value>(content).is_err() {
        return Err(VoiceError::new(ErrorCode::MalformedRequest, "Content must be a JSON text"));
    }
    Ok(())
}

impl Switch {
    /// An in-dialog INFO: a call message or DTMF, passed to the other leg.
    pub(super) fn on_info(
        &mut self,
        flow: FlowId,
        call: CallId,
        tx: ServerTxKey,
        request: Message,
        now: Instant,
    ) {
        let refuse = |s: &mut Switch, status: u16, e: VoiceError| {
            let r = with_error(response_to(&request, status, None), &e);
            if let Some(ua) = s.flows.ua(flow) {
                ua.respond(&tx, r, now);
            }
        };
        let Some((sid, role)) = self.bridges.leg(flow, call) else {
            return refuse(self, 481, VoiceError::from_kind(ErrorCode::CallTransactionDoesNotExist));
        };
        let message_type = request.header(wire::MESSAGE_TYPE_HEADER).map(str::trim);
        let ct = request.header("Content-Type").unwrap_or("text/plain").to_owned();
        if let Some(kind) = message_type {
            let content = String::from_utf8_lossy(&request.body);
            let m = CallMessage::new(content).with_message_type(kind).with_content_type(ct.clone());
            if let Err(e) = m.validate() {
                let status = if e.kind() == ErrorCode::PayloadSizeExceeded { 413 } else { 400 };
                return refuse(self, status, e);
            }
            let json = ct.trim().to_ascii_lowercase().starts_with("application/json");
            if json && serde_json::from_slice::<serde_json::Value>(&request.body).is_err() {
                let e =
                    VoiceError::new(ErrorCode::MalformedRequest, "the content is not the JSON its type says");
                return refuse(self, 400, e);
            }
        }
        let Some(other) = self.bridges.other_leg(&sid, role) else {
            let e = VoiceError::new(ErrorCode::CallMessageUnexpectedState, "the call is not connected");
            return refuse(self, 481, e);
        };
        let is_message = message_type.is_some();
        if is_message {
            if let Some(Err(e)) = self.bridges.get_mut(&sid).map(|b| b.messages.try_send(now)) {
                return refuse(self, 429, e);
            }
        }
        if let Some(ua) = self.flows.ua(flow) {
            ua.respond(&tx, response_to(&request, 200, None), now);
        }
        if is_message {
            // Subscriptions on the sending leg hear every message it sends.
            let leg_sid = match (role, self.bridges.get(&sid)) {
                (Role::Callee, Some(b)) => b.child_sid.clone(),
                _ => sid.clone(),
            };
            let message_sid =
                request.header(wire::EVENT_SID_HEADER).map_or_else(|| new_sid("KX"), |v| v.trim().to_owned());
            let content = String::from_utf8_lossy(&request.body).into_owned();
            self.out.push_back(Output::Deliver { leg_sid, message_sid, content_type: ct.clone(), content });
            // Call messages go only to Dialtone clients; DTMF goes to any peer.
            if !other.client {
                return;
            }
        }
        let extra: Vec<(&str, String)> = [wire::MESSAGE_TYPE_HEADER, wire::EVENT_SID_HEADER]
            .into_iter()
            .filter_map(|h| request.header(h).map(|v| (h, v.to_owned())))
            .collect();
        if let Some(ua) = self.flows.ua(other.flow) {
            ua.info(other.call, &ct, &extra, &request.body, now);
        }
    }

    /// A call message from the REST API to the client on the leg `call_sid`; its SID.
    pub(crate) fn send_message(
        &mut self,
        call_sid: &str,
        content: &str,
        now: Instant,
    ) -> Result<String, VoiceError> {
        let r = self.send_message_inner(call_sid, content, now);
        self.drain(now);
        r
    }

    fn send_message_inner(
        &mut self,
        call_sid: &str,
        content: &str,
        now: Instant,
    ) -> Result<String, VoiceError> {
        check_rest_message(content)?;
        let not_connected =
            || VoiceError::new(ErrorCode::CallMessageUnexpectedState, "the call is not connected");
        let b = self
            .bridges
            .by_leg_sid(call_sid)
            .ok_or_else(|| VoiceError::new(ErrorCode::NotFound, format!("no live call {call_sid}")))?;
        let leg = if b.sid == call_sid { Some(b.caller) } else { b.answered_leg().copied() };
        let leg = match leg {
            Some(l) if l.client => l,
            Some(_) => {
                return Err(VoiceError::new(
                    ErrorCode::CallMessageUnexpectedState,
                    "that leg is not a Dialtone client",
                ))
            }
            None => return Err(not_connected()),
        };
        if b.answered.is_none() {
            return Err(not_connected());
        }
        b.messages.try_send(now)?;
        let sid = new_sid("KX");
        let extra = [
            (wire::MESSAGE_TYPE_HEADER, dialtone_core::USER_DEFINED_MESSAGE.to_owned()),
            (wire::EVENT_SID_HEADER, sid.clone()),
        ];
        let ua = self.flows.ua(leg.flow).ok_or_else(|| {
            VoiceError::new(ErrorCode::CallMessageUnexpectedState, "the client is reconnecting")
        })?;
        ua.info(leg.call, "application/json", &extra, content.as_bytes(), now);
        Ok(sid)
    }
}

//! Ringing a `<Dial>`: every registered device of every `<Client>` in parallel, the
//! push bindings of a client with none (its devices ring when they register with the
//! bridge token), and `<Sip>` and `<Number>` targets over a flow toward them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use dialtone_core::{ErrorCode, VoiceError};
use dialtone_sip::header::{NameAddr, Uri};
use dialtone_sip::wire;

use super::bridges::{Leg, Pushed};
use super::trunks::OutTarget;
use super::{FlowId, Output, Switch};
use crate::twiml::{Dial, DialTarget};

impl Switch {
    /// Starts a dial for the call `sid`: the caller's offer goes to every target.
    pub(super) fn start_dial(
        &mut self,
        sid: &str,
        d: Dial,
        action: Option<(String, crate::webhooks::HookMethod)>,
        now: Instant,
    ) {
        let Some(b) = self.bridges.get_mut(sid) else { return };
        b.action = action;
        if b.caller_answered {
            // Bridging a connected caller to a new callee needs a re-offer toward the
            // caller; not built yet.
            let e = VoiceError::new(ErrorCode::Decline, "a <Dial> after a connected call is not supported");
            tracing::warn!(call_sid = %sid, "{}", e.message());
            return self.fail_bridge(sid, 603, "Decline", Some(&e), "completed", now);
        }
        let (child_sid, caller, offer) = (b.child_sid.clone(), b.caller_party.clone(), b.offer.clone());
        let from_user = match &d.caller_id {
            Some(id) => Some(id.strip_prefix("client:").unwrap_or(id).to_owned()),
            None => caller.strip_prefix("client:").map(str::to_owned),
        };
        let from = match from_user {
            Some(u) => NameAddr::new(Uri::sip(Some(&u), &self.domain)),
            None => NameAddr::parse(&caller)
                .unwrap_or_else(|_| NameAddr::new(Uri::sip(Some("anonymous"), "anonymous.invalid"))),
        };
        b.dial_from = Some(from.clone());
        let timeout = d.timeout.map_or(self.ring_timeout, |t| Duration::from_secs(u64::from(t.max(1))));
        self.bridges.arm_ring(sid, now + timeout);
        let mut first_to = None;
        let mut target_error = None;
        for t in &d.targets {
            let DialTarget::Client { identity, params } = t else {
                first_to.get_or_insert_with(|| match t {
                    DialTarget::Number(n) => n.clone(),
                    DialTarget::Sip(u) => u.clone(),
                    DialTarget::Client { identity, .. } => format!("client:{identity}"),
                });
                match self.trunks.out_target(t) {
                    Ok(o) => self.start_outbound(sid, o, now),
                    Err(e) => {
                        tracing::warn!(call_sid = %sid, target = ?t, error = %e, "cannot dial");
                        target_error = Some(e);
                    }
                }
                continue;
            };
            first_to.get_or_insert_with(|| format!("client:{identity}"));
            let devices = self.registrar.devices(identity, now);
            if devices.is_empty() {
                // Not connected: its push bindings are read, and its devices woken.
                if let Some(b) = self.bridges.get_mut(sid) {
                    b.pending += 1;
                }
                self.out.push_back(Output::LookupBindings {
                    sid: sid.to_owned(),
                    child_sid: child_sid.clone(),
                    identity: identity.clone(),
                    params: params.clone(),
                });
            }
            let extra = invite_headers(&child_sid, params);
            for (f, contact) in devices {
                if let Some(ua) = self.flows.ua(f) {
                    let c = ua.invite_from(from.clone(), contact, &offer, &extra, now);
                    self.bridges.add_callee(sid, Leg { flow: f, call: c, client: true });
                }
            }
        }
        let to = first_to.unwrap_or_else(|| "nobody".into());
        let Some(b) = self.bridges.get_mut(sid) else { return };
        b.to_dialed = to.clone();
        if !b.dial_is_empty() {
            return self.record_child(sid, now);
        }
        match target_error {
            Some(e) => {
                let status = if e.kind() == ErrorCode::MalformedRequest { 500 } else { 503 };
                self.dial_failed(sid, status, "Service Unavailable", Some(&e), "failed", now);
            }
            None => self.nobody_to_ring(sid, now),
        }
    }

    /// The dial's leg gets its record once something rings (or is about to).
    fn record_child(&mut self, sid: &str, now: Instant) {
        let Some(b) = self.bridges.get_mut(sid) else { return };
        if b.child_recorded {
            return;
        }
        b.child_recorded = true;
        let (child, caller, to) = (b.child_sid.clone(), b.caller_party.clone(), b.to_dialed.clone());
        self.record_leg(&child, Some(sid), &caller, &to, "outbound-dial", now);
    }

    /// The dial has no device, push or connection left: it fails with 480.
    fn nobody_to_ring(&mut self, sid: &str, now: Instant) {
        let to = self.bridges.get(sid).map(|b| b.to_dialed.clone()).unwrap_or_default();
        let e = VoiceError::new(ErrorCode::TemporarilyUnavailable, format!("{to} has no registered device"));
        self.dial_failed(sid, 480, "Temporarily Unavailable", Some(&e), "failed", now);
    }

    /// The push bindings of an identity of a dial: each gets the call's payload with a
    /// bridge token, and the identity's devices ring when they register with it.
    pub(super) fn on_bindings(
        &mut self,
        sid: &str,
        child_sid: &str,
        identity: String,
        params: BTreeMap<String, String>,
        bindings: Vec<crate::store::Binding>,
        now: Instant,
    ) {
        let Some(b) = self.bridges.get_mut(sid) else { return };
        if b.child_sid != child_sid || b.answered.is_some() {
            return;
        }
        b.pending = b.pending.saturating_sub(1);
        if !bindings.is_empty() {
            let token = crate::push::bridge_token(&self.account.api_key_secret, child_sid, &identity);
            for binding in &bindings {
                let body = crate::push::payload(
                    dialtone_core::push::MESSAGE_TYPE_CALL,
                    binding,
                    child_sid,
                    &b.caller_party,
                    &self.account.account_sid,
                    Some(&token),
                    &wire::params_header(&params),
                );
                self.out.push_back(Output::Push { binding: binding.clone(), body });
            }
            tracing::info!(call_sid = %sid, %identity, bindings = bindings.len(), "pushed");
            self.bridges.add_pushed(sid, Pushed { identity, params, bindings });
            return self.record_child(sid, now);
        }
        if self.bridges.get(sid).is_some_and(|b| b.dial_is_empty()) {
            self.nobody_to_ring(sid, now);
        }
    }

    /// A device of `identity` registered on `flow` with these contacts: the calls
    /// waiting on it by push ring it.
    pub(super) fn ring_pushed(&mut self, identity: &str, flow: FlowId, contacts: &[Uri], now: Instant) {
        for sid in self.bridges.awaiting(identity) {
            let Some(b) = self.bridges.get(&sid) else { continue };
            let Some(p) = b.pushed.iter().find(|p| p.identity == identity) else { continue };
            let Some(from) = b.dial_from.clone() else { continue };
            let extra = invite_headers(&b.child_sid, &p.params);
            let offer = b.offer.clone();
            for contact in contacts {
                let Some(ua) = self.flows.ua(flow) else { continue };
                let c = ua.invite_from(from.clone(), contact.clone(), &offer, &extra, now);
                self.bridges.add_callee(&sid, Leg { flow, call: c, client: true });
            }
        }
    }

    /// Calls one `<Sip>`/`<Number>` target: at once on an open flow, else once the
    /// shell has made the connection ([`Input::Connected`](super::Input::Connected)).
    fn start_outbound(&mut self, sid: &str, target: OutTarget, now: Instant) {
        let key = target.connection_key();
        if let Some(flow) = self.flows.outbound(&key) {
            return self.invite_outbound(sid, flow, &target, now);
        }
        let Some(b) = self.bridges.get_mut(sid) else { return };
        b.pending += 1;
        let child_sid = b.child_sid.clone();
        self.out.push_back(Output::Connect { sid: sid.to_owned(), child_sid, key, target });
    }

    pub(super) fn on_connected(
        &mut self,
        sid: &str,
        child_sid: &str,
        key: String,
        target: &OutTarget,
        result: Result<FlowId, VoiceError>,
        now: Instant,
    ) {
        if let Ok(flow) = &result {
            self.flows.set_outbound(key, *flow);
        }
        let Some(b) = self.bridges.get_mut(sid) else { return };
        if b.child_sid != child_sid || b.answered.is_some() {
            return;
        }
        b.pending = b.pending.saturating_sub(1);
        match result {
            Ok(flow) => self.invite_outbound(sid, flow, target, now),
            Err(e) => {
                tracing::warn!(call_sid = %sid, target = %target.uri, error = %e, "cannot reach a SIP target");
                if b.dial_is_empty() {
                    self.dial_failed(sid, 503, "Service Unavailable", Some(&e), "failed", now);
                }
            }
        }
    }

    fn invite_outbound(&mut self, sid: &str, flow: FlowId, target: &OutTarget, now: Instant) {
        let Some(b) = self.bridges.get(sid) else { return };
        let (offer, child_sid) = (b.offer.clone(), b.child_sid.clone());
        let from =
            b.dial_from.clone().unwrap_or_else(|| NameAddr::new(Uri::sip(Some("anonymous"), &self.domain)));
        let Some(ua) = self.flows.ua(flow) else { return };
        let c = ua.invite_from(from, target.uri.clone(), &offer, &[(wire::CALL_SID_HEADER, child_sid)], now);
        if let Some((u, p)) = &target.credentials {
            ua.set_call_credentials(c, u, p);
        }
        self.bridges.add_callee(sid, Leg { flow, call: c, client: false });
    }
}

/// The headers of a dial's INVITE to a device: the leg's SID and the parameters.
fn invite_headers(child_sid: &str, params: &BTreeMap<String, String>) -> Vec<(&'static str, String)> {
    let mut extra = vec![(wire::CALL_SID_HEADER, child_sid.to_owned())];
    if !params.is_empty() {
        extra.push((wire::PARAMS_HEADER, wire::params_header(params)));
    }
    extra
}

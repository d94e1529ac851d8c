//! A call's life in the switch: its INVITE admitted (or shed, or refused), its TwiML
//! program run step by step, its answer, re-offers passed across, and its end on
//! either side, with the records of each leg.

use std::time::{Duration, Instant};

use dialtone_core::config::ApplicationConfig;
use dialtone_core::{ErrorCode, VoiceError};
use dialtone_sip::header::Uri;
use dialtone_sip::message::Message;
use dialtone_sip::ua::{CallId, Failure};
use dialtone_sip::wire;

use super::bridges::{drop_callee, Bridge, Leg, Role};
use super::interpreter::{Program, Step};
use super::registrar::bearer;
use super::trunks::TrunkAuth;
use super::{cause, user_of, FlowId, Output, Switch, RECONNECT_WINDOW};
use crate::accounts::new_sid;
use crate::records::RecordWrite;
use crate::store::CallRecord;
use crate::token;
use crate::twiml::{self, DialTarget};

impl Switch {
    /// A flow closed. Its answered calls wait for the client to come back on a new
    /// flow; its other calls end (the other side hears BYE or CANCEL).
    pub(super) fn on_closed(&mut self, id: FlowId, now: Instant) {
        let closed = self.flows.close(id);
        let legs = self.bridges.legs_on(id);
        let answered_here = legs.iter().any(|(c, sid, role)| {
            self.bridges.get(sid).is_some_and(|b| match role {
                Role::Caller => b.answered.is_some(),
                Role::Callee => b.answered_leg().is_some_and(|l| l.flow == id && l.call == *c),
            })
        });
        self.registrar.forget_flow(id);
        if let (true, Some(ua)) = (answered_here, closed) {
            tracing::info!(flow = id, "a client with answered calls dropped; waiting for it to reconnect");
            self.flows.keep_orphan(id, ua, now + RECONNECT_WINDOW);
            return;
        }
        for (call, sid, role) in legs {
            self.bridges.unbind(id, call);
            let e =
                VoiceError::new(ErrorCode::SignalingConnectionDisconnected, "a client's connection closed");
            match role {
                Role::Caller => self.end_bridge(&sid, None, Some(&e), "canceled", now),
                Role::Callee => {
                    let answered_here = self
                        .bridges
                        .get(&sid)
                        .is_some_and(|b| b.answered_leg().is_some_and(|l| l.flow == id && l.call == call));
                    if answered_here {
                        self.end_bridge(&sid, Some(Role::Callee), Some(&e), "completed", now);
                    } else if let Some(b) = self.bridges.get_mut(&sid) {
                        drop_callee(b, id, call);
                        if b.dial_is_empty() && b.answered.is_none() {
                            self.fail_bridge(&sid, 480, "Temporarily Unavailable", Some(&e), "failed", now);
                        }
                    }
                }
            }
        }
    }

    /// A re-INVITE on a new flow for a dialog of a dropped one: move the dialog to the
    /// new flow's user agent, repoint the call's leg, and let it answer the re-INVITE.
    pub(super) fn reattach(&mut self, flow: FlowId, request: Message, now: Instant) {
        // The old flow may be closed (an orphan) or not yet seen to close; either way
        // it carries a leg.
        let owners: Vec<FlowId> = self.bridges.flows_with_legs().into_iter().filter(|f| *f != flow).collect();
        let Some((old_flow, old_call, moved)) = self.flows.take_call(&request, owners) else {
            if let Some(ua) = self.flows.ua(flow) {
                ua.refuse_unknown(&request, now);
            }
            return;
        };
        let Some(ua) = self.flows.ua(flow) else { return };
        let new_call = ua.adopt_call(moved);
        if let Some((sid, role)) = self.bridges.unbind(old_flow, old_call) {
            if let Some(b) = self.bridges.get_mut(&sid) {
                let leg = match role {
                    Role::Caller => Some(&mut b.caller),
                    Role::Callee => b.callees.iter_mut().find(|l| l.flow == old_flow && l.call == old_call),
                };
                if let Some(l) = leg {
                    l.flow = flow;
                    l.call = new_call;
                }
            }
            tracing::info!(call_sid = %sid, "a reconnected client re-attached its call");
            self.bridges.bind(flow, new_call, &sid, role);
        }
        if !self.bridges.has_legs_on(old_flow) {
            self.flows.drop_orphan(old_flow);
        }
        if let Some(ua) = self.flows.ua(flow) {
            ua.handle_inbound(dialtone_sip::ua::Inbound::Message(Box::new(request)), now);
        }
    }

    /// A new INVITE: shed under overload; else who is calling (a token's identity, a
    /// trunk), what runs the call (an application, or the development routing to
    /// `client:NAME`), and the first step.
    pub(super) fn on_invite(&mut self, flow: FlowId, call: CallId, request: Message, now: Instant) {
        let remote = self.flows.remote(flow).map(|r| r.ip());
        let reject = |s: &mut Switch, status: u16, e: &VoiceError| {
            let headers = [(wire::ERROR_HEADER, wire::error_header(e))];
            if let Some(ua) = s.flows.ua(flow) {
                ua.reject_with_headers(call, status, None, &headers, now);
            }
        };
        if let Some(why) = self.overload() {
            return self.shed_call(flow, call, &why, now);
        }
        let mut app_sid = None;
        let mut by_token = false;
        let caller = match bearer(&request).map(|t| token::verify(&self.account, t)) {
            Some(Ok(claims)) => {
                app_sid = claims
                    .grants
                    .voice
                    .as_ref()
                    .and_then(|v| v.outgoing.as_ref())
                    .and_then(|o| o.application_sid.clone());
                let identity = claims.grants.identity.unwrap_or_default();
                if user_of(request.header("From")).as_deref() != Some(identity.as_str()) {
                    let e = VoiceError::new(
                        ErrorCode::AccessTokenGrantsInvalid,
                        "From is not the token's identity",
                    );
                    return reject(self, 403, &e);
                }
                by_token = true;
                format!("client:{identity}")
            }
            Some(Err(e)) => return reject(self, 403, &e),
            // The same answers whatever identity the request names.
            None => match self.trunks.caller(remote, &request, self.unix_secs(now)) {
                TrunkAuth::Trunk(name) => {
                    tracing::debug!(trunk = %name, "a call from a trunk");
                    wire::party(request.header("From"), &self.domain).unwrap_or_else(|| "anonymous".into())
                }
                TrunkAuth::Challenge => {
                    let e = VoiceError::new(ErrorCode::AuthenticationFailed, "digest credentials required");
                    let headers = [
                        ("WWW-Authenticate", self.trunks.challenge(self.unix_secs(now))),
                        (wire::ERROR_HEADER, wire::error_header(&e)),
                    ];
                    if let Some(ua) = self.flows.ua(flow) {
                        ua.reject_with_headers(call, 401, Some("Unauthorized"), &headers, now);
                    }
                    return;
                }
                TrunkAuth::Refused => {
                    let e = VoiceError::new(ErrorCode::Forbidden, "not authorized");
                    return reject(self, 403, &e);
                }
            },
        };
        let app = self.application(app_sid.as_deref());
        let target = Uri::parse(request.uri()).ok().and_then(|u| u.user).unwrap_or_default();
        let target = target.strip_prefix("client:").unwrap_or(&target).to_owned();
        if app.is_none() && !wire::is_valid_identity(&target) {
            let e = VoiceError::new(ErrorCode::InvalidClientName, format!("{target:?} is not a client name"));
            return reject(self, 404, &e);
        }
        let params = match request.header(wire::PARAMS_HEADER) {
            Some(q) => match dialtone_core::push::parse_custom_parameters(q) {
                Ok(p) => p,
                Err(e) => return reject(self, 400, &e),
            },
            None => Default::default(),
        };
        let sid = new_sid("CA");
        if let Some(ua) = self.flows.ua(flow) {
            ua.set_response_headers(call, &[(wire::CALL_SID_HEADER, sid.clone())]);
        }
        let to = if wire::is_valid_identity(&target) { format!("client:{target}") } else { target.clone() };
        self.record_leg(&sid, None, &caller, &to, "inbound", now);
        let leg = Leg { flow, call, client: caller.starts_with("client:") && by_token };
        let offer = String::from_utf8_lossy(&request.body).into_owned();
        let program = Program::new(app.as_ref().and_then(|a| a.voice_url.clone()));
        self.bridges.insert(Bridge::new(sid.clone(), leg, caller.clone(), offer, to.clone(), program));
        tracing::info!(call_sid = %sid, %caller, %to, app = ?app.as_ref().map(|a| a.sid.clone()), "incoming call");
        match app {
            // The development routing: <Dial><Client>NAME</Client></Dial>, with the
            // caller's parameters passed on.
            None => {
                let dial = twiml::Dial {
                    targets: vec![DialTarget::Client { identity: target, params }],
                    ..Default::default()
                };
                self.start_dial(&sid, dial, None, now);
            }
            Some(app) => match (&app.twiml, &app.voice_url) {
                (Some(doc), _) => self.on_fetched(&sid, Ok(doc.clone()), now),
                (None, Some(url)) => {
                    let mut form = vec![
                        ("CallSid".to_owned(), sid.clone()),
                        ("AccountSid".to_owned(), self.account.account_sid.clone()),
                        ("From".to_owned(), caller),
                        ("To".to_owned(), to),
                        ("Direction".to_owned(), "inbound".to_owned()),
                    ];
                    form.extend(params);
                    // Validated with the configuration: GET or POST.
                    let method = app
                        .voice_method
                        .as_deref()
                        .and_then(|m| crate::webhooks::HookMethod::parse(m).ok())
                        .unwrap_or_default();
                    self.out.push_back(Output::Fetch { sid, url: url.clone(), method, form });
                }
                (None, None) => {
                    let e = VoiceError::new(
                        ErrorCode::ApplicationNotFound,
                        format!("application {} has no voice_url or twiml", app.sid),
                    );
                    self.fail_bridge(&sid, 500, "Application Error", Some(&e), "failed", now);
                }
            },
        }
    }

    /// The application a call runs: the token's, else the only one configured.
    fn application(&self, sid: Option<&str>) -> Option<ApplicationConfig> {
        match sid {
            Some(s) => self.applications.iter().find(|a| a.sid == s).cloned(),
            None if self.applications.len() == 1 => self.applications.first().cloned(),
            None => None,
        }
    }

    /// A TwiML document (or the failure to get one) for a call: it becomes the call's
    /// program, which runs.
    pub(super) fn on_fetched(&mut self, sid: &str, result: Result<String, VoiceError>, now: Instant) {
        match result.and_then(|doc| twiml::parse(&doc)) {
            Ok(verbs) => {
                if let Some(b) = self.bridges.get_mut(sid) {
                    b.program.load(verbs);
                    self.run_program(sid, now);
                }
            }
            Err(e) => {
                tracing::warn!(call_sid = %sid, error = %e, "the application failed");
                let status = if e.kind() == ErrorCode::BadGateway { 502 } else { 500 };
                self.fail_bridge(sid, status, "Application Error", Some(&e), "failed", now);
            }
        }
    }

    /// Carries out the call's next step.
    pub(super) fn run_program(&mut self, sid: &str, now: Instant) {
        let Some(b) = self.bridges.get_mut(sid) else { return };
        match b.program.next_step() {
            Step::Pause(d) => self.bridges.arm_pause(sid, now + d),
            Step::Dial { dial, action } => self.start_dial(sid, dial, action, now),
            Step::End { status, reason, error, outcome } => {
                self.fail_bridge(sid, status, reason, Some(&error), outcome, now);
            }
        }
    }

    pub(super) fn on_caller_cancel(&mut self, flow: FlowId, call: CallId, now: Instant) {
        if let Some((sid, Role::Caller)) = self.bridges.unbind(flow, call) {
            self.cancel_callees(&sid, None, now);
            self.finish(&sid, "canceled", "31487 cancelled by the caller", now);
        }
    }

    /// A device rings: the caller hears 180 once.
    pub(super) fn on_progress(&mut self, flow: FlowId, call: CallId, now: Instant) {
        let Some((sid, Role::Callee)) = self.bridges.leg(flow, call) else { return };
        let Some(b) = self.bridges.get_mut(&sid) else { return };
        if !b.rang {
            b.rang = true;
            let c = b.caller;
            if let Some(ua) = self.flows.ua(c.flow) {
                ua.provisional(c.call, 180, now);
            }
        }
    }

    /// A device answered: the caller gets its answer, every other device a CANCEL.
    pub(super) fn on_answered(&mut self, flow: FlowId, call: CallId, response: &Message, now: Instant) {
        let Some((sid, Role::Callee)) = self.bridges.leg(flow, call) else {
            // An answer for a leg we already gave up on: hang it up.
            if let Some(ua) = self.flows.ua(flow) {
                ua.hangup(call, now);
            }
            return;
        };
        let Some(b) = self.bridges.get_mut(&sid) else { return };
        let Some(i) = b.callees.iter().position(|l| l.flow == flow && l.call == call) else { return };
        b.answered = Some(i);
        b.caller_answered = true;
        b.answered_at = Some(now);
        let (c, child_sid) = (b.caller, b.child_sid.clone());
        let sdp = String::from_utf8_lossy(&response.body).into_owned();
        if let Some(ua) = self.flows.ua(c.flow) {
            ua.answer(c.call, &sdp, now);
        }
        self.cancel_callees(&sid, Some(i), now);
        let at = self.unix_ms(now);
        for s in [sid, child_sid] {
            self.record(RecordWrite::Answered { sid: s, at });
        }
    }

    /// A device's leg failed; when it was the last hope of the dial, the dial fails.
    pub(super) fn on_failed(&mut self, flow: FlowId, call: CallId, failure: Failure, now: Instant) {
        let Some((sid, Role::Callee)) = self.bridges.unbind(flow, call) else { return };
        let Some(b) = self.bridges.get_mut(&sid) else { return };
        drop_callee(b, flow, call);
        b.last_failure = Some(failure.clone());
        if b.dial_is_empty() && b.answered.is_none() {
            let status = match failure.status {
                // A device that stopped answering is not the caller's business.
                408 => 480,
                s => s,
            };
            let e = wire::failure_to_error(&failure, false);
            let outcome = match status {
                486 | 600 => "busy",
                603 => "canceled",
                _ => "failed",
            };
            self.dial_failed(&sid, status, &failure.reason, Some(&e), outcome, now);
        }
    }

    /// A re-INVITE from one side goes to the other; without another side it is
    /// answered with the current session.
    pub(super) fn on_reoffer(&mut self, flow: FlowId, call: CallId, request: &Message, now: Instant) {
        let Some((sid, role)) = self.bridges.leg(flow, call) else {
            if let Some(ua) = self.flows.ua(flow) {
                ua.answer_reoffer(call, None, now);
            }
            return;
        };
        let sdp = String::from_utf8_lossy(&request.body).into_owned();
        let sent = match self.bridges.other_leg(&sid, role) {
            Some(o) => self.flows.ua(o.flow).is_some_and(|ua| ua.reinvite(o.call, &sdp, now)),
            None => false,
        };
        if sent {
            if let Some(b) = self.bridges.get_mut(&sid) {
                b.reoffer_from = Some(role);
            }
        } else if let Some(ua) = self.flows.ua(flow) {
            ua.answer_reoffer(call, None, now);
        }
    }

    pub(super) fn on_reoffer_answered(
        &mut self,
        flow: FlowId,
        call: CallId,
        response: &Message,
        now: Instant,
    ) {
        let Some((sid, role)) = self.bridges.leg(flow, call) else { return };
        let from = self.bridges.get_mut(&sid).and_then(|b| b.reoffer_from.take());
        if from.is_some_and(|r| r != role) {
            if let Some(o) = self.bridges.other_leg(&sid, role) {
                let sdp = String::from_utf8_lossy(&response.body).into_owned();
                if let Some(ua) = self.flows.ua(o.flow) {
                    ua.answer_reoffer(o.call, Some(&sdp), now);
                }
            }
        }
    }

    pub(super) fn on_reoffer_failed(&mut self, flow: FlowId, call: CallId, now: Instant) {
        let Some((sid, role)) = self.bridges.leg(flow, call) else { return };
        if self.bridges.get_mut(&sid).and_then(|b| b.reoffer_from.take()).is_some() {
            if let Some(o) = self.bridges.other_leg(&sid, role) {
                if let Some(ua) = self.flows.ua(o.flow) {
                    ua.answer_reoffer(o.call, None, now);
                }
            }
        }
    }

    /// CANCELs every unanswered device leg but `keep`, telling them why when another
    /// device answered.
    pub(super) fn cancel_callees(&mut self, sid: &str, keep: Option<usize>, now: Instant) {
        let Some(b) = self.bridges.get_mut(sid) else { return };
        let legs: Vec<Leg> =
            b.callees.iter().enumerate().filter(|(i, _)| Some(*i) != keep).map(|(_, l)| *l).collect();
        match keep {
            Some(k) => {
                let kept = b.callees.swap_remove(k);
                b.callees = vec![kept];
                b.answered = Some(0);
            }
            None => b.callees.clear(),
        }
        for l in legs {
            self.bridges.unbind(l.flow, l.call);
            if let Some(ua) = self.flows.ua(l.flow) {
                match keep {
                    Some(_) => {
                        ua.cancel_with_reason(l.call, "SIP;cause=200;text=\"Call completed elsewhere\"", now)
                    }
                    None => ua.hangup(l.call, now),
                }
            }
        }
    }

    /// Why a new call is to be refused now, if it is: it waited too long to be
    /// handled, or the record writer is behind.
    fn overload(&self) -> Option<String> {
        if self.load.waited > self.overload_delay {
            return Some(format!("the INVITE waited {} ms to be read", self.load.waited.as_millis()));
        }
        self.load.store_backlog.map(|b| format!("{b} call-record changes wait for the disk"))
    }

    /// Refuses a new call for overload: 503 with Retry-After. The transaction absorbs
    /// the caller's retransmissions; a warning says how many were refused, once a second.
    fn shed_call(&mut self, flow: FlowId, call: CallId, why: &str, now: Instant) {
        let e = VoiceError::new(ErrorCode::ServiceUnavailable, format!("the server is overloaded: {why}"));
        let headers = [
            ("Retry-After", self.retry_after_secs.to_string()),
            (wire::ERROR_HEADER, wire::error_header(&e)),
        ];
        if let Some(ua) = self.flows.ua(flow) {
            ua.reject_with_headers(call, 503, Some("Service Unavailable"), &headers, now);
        }
        self.load.shed += 1;
        if self.load.warned.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
            tracing::warn!(refused = self.load.shed, reason = %why, "overloaded: new calls get 503");
            self.load.shed = 0;
            self.load.warned = Some(now);
        }
    }

    /// Records a new, ringing leg.
    pub(super) fn record_leg(
        &mut self,
        sid: &str,
        parent: Option<&str>,
        from: &str,
        to: &str,
        direction: &str,
        now: Instant,
    ) {
        let rec = CallRecord {
            sid: sid.to_owned(),
            parent_sid: parent.map(str::to_owned),
            account_sid: self.account.account_sid.clone(),
            from: from.to_owned(),
            to: to.to_owned(),
            direction: direction.to_owned(),
            status: "ringing".to_owned(),
            start_time: self.unix_ms(now),
            answer_time: None,
            end_time: None,
            duration: None,
            end_cause: None,
        };
        self.record(RecordWrite::Insert(rec));
    }

    /// A dial ended without an answer: the call goes on with the `<Dial action>`'s
    /// TwiML or the verbs after the `<Dial>`, else fails with `status`.
    pub(super) fn dial_failed(
        &mut self,
        sid: &str,
        status: u16,
        reason: &str,
        e: Option<&VoiceError>,
        outcome: &str,
        now: Instant,
    ) {
        let dial_status = match status {
            486 | 600 | 603 => "busy",
            408 | 480 => "no-answer",
            _ => "failed",
        };
        let cause = cause(e, || format!("SIP {status} {reason}"));
        self.cancel_callees(sid, None, now);
        if self.continue_after_dial(sid, dial_status, &cause, now) {
            return;
        }
        self.fail_bridge(sid, status, reason, e, outcome, now);
    }

    /// After a dial ends, runs what follows it: the action URL (POSTed the dial's
    /// outcome; its TwiML runs next) or the verbs after `<Dial>`. False when neither
    /// exists. The dialed leg's record ends with `dial_status`.
    fn continue_after_dial(&mut self, sid: &str, dial_status: &str, cause: &str, now: Instant) -> bool {
        let Some(b) = self.bridges.get(sid) else { return false };
        if b.action.is_none() && !b.program.has_more() {
            return false;
        }
        let Some(old_child) = self.bridges.new_child(sid) else { return false };
        let account = self.account.account_sid.clone();
        let Some(b) = self.bridges.get_mut(sid) else { return false };
        let duration = b.answered_at.take().map_or(0, |t| now.duration_since(t).as_secs());
        b.callees.clear();
        b.answered = None;
        b.pending = 0;
        b.child_recorded = false;
        b.reoffer_from = None;
        b.ring_deadline = None;
        let form = vec![
            ("CallSid".to_owned(), sid.to_owned()),
            ("AccountSid".to_owned(), account),
            ("From".to_owned(), b.caller_party.clone()),
            ("To".to_owned(), b.to.clone()),
            ("Direction".to_owned(), "inbound".to_owned()),
            ("DialCallStatus".to_owned(), dial_status.to_owned()),
            ("DialCallSid".to_owned(), old_child.clone()),
            ("DialCallDuration".to_owned(), duration.to_string()),
        ];
        let action = b.action.take();
        let at = self.unix_ms(now);
        self.record(RecordWrite::Ended {
            sid: old_child,
            status: dial_status.to_owned(),
            cause: cause.to_owned(),
            at,
        });
        match action {
            Some((url, method)) => {
                tracing::info!(call_sid = %sid, %url, dial_status, "dial ended; fetching its action");
                self.out.push_back(Output::Fetch { sid: sid.to_owned(), url, method, form });
            }
            None => self.later.push_back(sid.to_owned()),
        }
        true
    }

    /// Fails an unanswered call: the caller gets `status`, every device a CANCEL (an
    /// answered caller hears BYE).
    pub(super) fn fail_bridge(
        &mut self,
        sid: &str,
        status: u16,
        reason: &str,
        e: Option<&VoiceError>,
        outcome: &str,
        now: Instant,
    ) {
        self.cancel_callees(sid, None, now);
        let Some(b) = self.bridges.get(sid) else { return };
        let (c, caller_answered) = (b.caller, b.caller_answered);
        self.bridges.unbind(c.flow, c.call);
        let headers: Vec<(&str, String)> =
            e.map(|e| (wire::ERROR_HEADER, wire::error_header(e))).into_iter().collect();
        if let Some(ua) = self.flows.ua(c.flow) {
            if caller_answered {
                ua.hangup(c.call, now);
            } else {
                ua.reject_with_headers(c.call, status, Some(reason), &headers, now);
            }
        }
        let cause = cause(e, || format!("SIP {status} {reason}"));
        self.finish(sid, outcome, &cause, now);
    }

    /// Ends an answered (or failing) call from one side: the other side hears BYE.
    pub(super) fn end_bridge(
        &mut self,
        sid: &str,
        from: Option<Role>,
        e: Option<&VoiceError>,
        outcome: &str,
        now: Instant,
    ) {
        let Some(b) = self.bridges.get(sid) else { return };
        if from == Some(Role::Callee) && b.answered.is_some() {
            let cause = cause(e, || "hangup-by-callee".to_owned());
            if self.continue_after_dial(sid, "completed", &cause, now) {
                return;
            }
        }
        let Some(b) = self.bridges.get(sid) else { return };
        let answered = b.answered_leg().copied();
        let caller = b.caller;
        if answered.is_none() {
            // Not answered yet: the caller's side went away.
            self.cancel_callees(sid, None, now);
        }
        for (role, leg) in [(Role::Caller, Some(caller)), (Role::Callee, answered)] {
            let Some(l) = leg else { continue };
            self.bridges.unbind(l.flow, l.call);
            if from != Some(role) {
                if let Some(ua) = self.flows.ua(l.flow) {
                    ua.hangup(l.call, now);
                }
            }
        }
        let why = cause(e, || {
            if from == Some(Role::Caller) { "hangup-by-caller" } else { "hangup-by-callee" }.to_owned()
        });
        self.finish(sid, outcome, &why, now);
    }

    /// Forgets an ended call: its records end, and the devices it pushed hear a cancel.
    pub(super) fn finish(&mut self, sid: &str, outcome: &str, cause: &str, now: Instant) {
        let Some(b) = self.bridges.remove(sid) else { return };
        if b.answered.is_none() {
            // The invitee's app hears the hang-up as a cancelled invite.
            for p in &b.pushed {
                for binding in &p.bindings {
                    let body = crate::push::payload(
                        dialtone_core::push::MESSAGE_TYPE_CANCEL,
                        binding,
                        &b.child_sid,
                        &b.caller_party,
                        &self.account.account_sid,
                        None,
                        "",
                    );
                    self.out.push_back(Output::Push { binding: binding.clone(), body });
                }
            }
        }
        let at = self.unix_ms(now);
        for s in [b.sid, b.child_sid] {
            self.record(RecordWrite::Ended {
                sid: s,
                status: outcome.to_owned(),
                cause: cause.to_owned(),
                at,
            });
        }
        tracing::info!(call_sid = %sid, outcome, cause, "call ended");
    }
}

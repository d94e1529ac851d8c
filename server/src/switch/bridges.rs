//! The calls the switch bridges as a back-to-back user agent: each [`Bridge`] joins
//! the caller's leg to the device legs of its current dial, and [`Bridges`] indexes
//! them by leg, by flow, by the dialed leg's SID and by the identities awaiting push,
//! and holds their ring and pause timers.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::time::Instant;

use dialtone_core::MessageRateLimiter;
use dialtone_sip::header::NameAddr;
use dialtone_sip::ua::{CallId, Failure};

use super::interpreter::Program;
use super::FlowId;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    Caller,
    Callee,
}

/// One SIP leg of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Leg {
    pub(super) flow: FlowId,
    pub(super) call: CallId,
    /// A Dialtone client (it gets call messages), not a trunk or plain SIP peer.
    pub(super) client: bool,
}

/// An identity reached by push: its invite's parameters and the bindings pushed to.
pub(super) struct Pushed {
    pub(super) identity: String,
    pub(super) params: BTreeMap<String, String>,
    pub(super) bindings: Vec<crate::store::Binding>,
}

pub(super) struct Bridge {
    pub(super) sid: String,
    /// The SID of the current dial's leg.
    pub(super) child_sid: String,
    pub(super) caller: Leg,
    pub(super) callees: Vec<Leg>,
    pub(super) answered: Option<usize>,
    pub(super) rang: bool,
    pub(super) ring_deadline: Option<Instant>,
    /// A re-INVITE being passed across: from which role.
    pub(super) reoffer_from: Option<Role>,
    pub(super) messages: MessageRateLimiter,
    pub(super) last_failure: Option<Failure>,
    /// Who is calling (`client:NAME`, or the trunk's From URI).
    pub(super) caller_party: String,
    /// The caller's offer, passed through to every device.
    pub(super) offer: String,
    /// Who the callee legs show as caller.
    pub(super) dial_from: Option<NameAddr>,
    /// Identities reached by push (no live registration): a device of theirs that
    /// registers now rings.
    pub(super) pushed: Vec<Pushed>,
    /// Connections toward trunks still being opened, and push bindings still being
    /// read, for this dial.
    pub(super) pending: usize,
    /// The dialed leg's record exists.
    pub(super) child_recorded: bool,
    /// The caller's leg is answered (a callee answered once).
    pub(super) caller_answered: bool,
    /// When the current dial's callee answered.
    pub(super) answered_at: Option<Instant>,
    /// The current `<Dial action>`, resolved to a URL, and how to ask it.
    pub(super) action: Option<(String, crate::webhooks::HookMethod)>,
    /// What is left of the call's TwiML.
    pub(super) program: Program,
    /// Waiting out a `<Pause>` until then.
    pub(super) paused_until: Option<Instant>,
    /// Who the caller called (the voice URL's `To`).
    pub(super) to: String,
    /// Who the current dial rings first (the dialed leg's `To`).
    pub(super) to_dialed: String,
}

impl Bridge {
    /// A new call from `caller`, not yet routed.
    pub(super) fn new(
        sid: String,
        caller: Leg,
        caller_party: String,
        offer: String,
        to: String,
        program: Program,
    ) -> Bridge {
        Bridge {
            sid,
            child_sid: crate::accounts::new_sid("CA"),
            caller,
            callees: Vec::new(),
            answered: None,
            rang: false,
            ring_deadline: None,
            reoffer_from: None,
            messages: MessageRateLimiter::default(),
            last_failure: None,
            caller_party,
            offer,
            dial_from: None,
            pushed: Vec::new(),
            pending: 0,
            child_recorded: false,
            caller_answered: false,
            answered_at: None,
            action: None,
            program,
            paused_until: None,
            to,
            to_dialed: String::new(),
        }
    }

    /// Nothing is ringing or about to: no device leg, no push, nothing pending.
    pub(super) fn dial_is_empty(&self) -> bool {
        self.callees.is_empty() && self.pushed.is_empty() && self.pending == 0
    }

    /// The answered device leg.
    pub(super) fn answered_leg(&self) -> Option<&Leg> {
        self.answered.and_then(|i| self.callees.get(i))
    }
}

#[derive(Default)]
pub(super) struct Bridges {
    map: HashMap<String, Bridge>,
    legs: HashMap<(FlowId, CallId), (String, Role)>,
    legs_by_flow: HashMap<FlowId, HashSet<CallId>>,
    /// The call SID of each current dial's leg SID.
    by_child: HashMap<String, String>,
    /// The calls waiting on each identity reached by push.
    awaiting_push: HashMap<String, HashSet<String>>,
    /// Every dial's ring timeout (stale once answered or re-dialed).
    ring_timers: BinaryHeap<Reverse<(Instant, String)>>,
    /// Every `<Pause>`'s end (stale once the call ended).
    pause_timers: BinaryHeap<Reverse<(Instant, String)>>,
}

impl Bridges {
    pub(super) fn insert(&mut self, b: Bridge) {
        self.by_child.insert(b.child_sid.clone(), b.sid.clone());
        self.bind(b.caller.flow, b.caller.call, &b.sid, Role::Caller);
        self.map.insert(b.sid.clone(), b);
    }

    pub(super) fn get(&self, sid: &str) -> Option<&Bridge> {
        self.map.get(sid)
    }

    pub(super) fn get_mut(&mut self, sid: &str) -> Option<&mut Bridge> {
        self.map.get_mut(sid)
    }

    /// The call with this SID, or whose current dial's leg has it.
    pub(super) fn by_leg_sid(&mut self, leg_sid: &str) -> Option<&mut Bridge> {
        let sid = if self.map.contains_key(leg_sid) {
            leg_sid.to_owned()
        } else {
            self.by_child.get(leg_sid)?.clone()
        };
        self.map.get_mut(&sid)
    }

    /// Whether `child_sid` is the leg of a dial still ringing.
    pub(super) fn is_ringing_leg(&self, child_sid: &str) -> bool {
        self.by_child.get(child_sid).and_then(|s| self.map.get(s)).is_some_and(|b| b.answered.is_none())
    }

    /// Removes an ended call and every index entry of it.
    pub(super) fn remove(&mut self, sid: &str) -> Option<Bridge> {
        let b = self.map.remove(sid)?;
        self.by_child.remove(&b.child_sid);
        for p in &b.pushed {
            self.unawait(&p.identity, sid);
        }
        for l in b.callees.iter().chain([&b.caller]) {
            self.unbind(l.flow, l.call);
        }
        Some(b)
    }

    /// Starts a new dial's leg SID for the call (the old one is over).
    pub(super) fn new_child(&mut self, sid: &str) -> Option<String> {
        let b = self.map.get_mut(sid)?;
        let old = std::mem::replace(&mut b.child_sid, crate::accounts::new_sid("CA"));
        self.by_child.remove(&old);
        self.by_child.insert(b.child_sid.clone(), sid.to_owned());
        let pushed = std::mem::take(&mut b.pushed);
        for p in pushed {
            self.unawait(&p.identity, sid);
        }
        Some(old)
    }

    /// Marks a leg as the call's, in `role`.
    pub(super) fn bind(&mut self, flow: FlowId, call: CallId, sid: &str, role: Role) {
        self.legs.insert((flow, call), (sid.to_owned(), role));
        self.legs_by_flow.entry(flow).or_default().insert(call);
    }

    /// Forgets a leg; what it was.
    pub(super) fn unbind(&mut self, flow: FlowId, call: CallId) -> Option<(String, Role)> {
        let was = self.legs.remove(&(flow, call))?;
        if let Some(calls) = self.legs_by_flow.get_mut(&flow) {
            calls.remove(&call);
            if calls.is_empty() {
                self.legs_by_flow.remove(&flow);
            }
        }
        Some(was)
    }

    /// Which call a leg belongs to, in which role.
    pub(super) fn leg(&self, flow: FlowId, call: CallId) -> Option<(String, Role)> {
        self.legs.get(&(flow, call)).cloned()
    }

    /// Every leg on a flow.
    pub(super) fn legs_on(&self, flow: FlowId) -> Vec<(CallId, String, Role)> {
        let Some(calls) = self.legs_by_flow.get(&flow) else { return Vec::new() };
        calls.iter().filter_map(|c| self.legs.get(&(flow, *c)).map(|(s, r)| (*c, s.clone(), *r))).collect()
    }

    pub(super) fn has_legs_on(&self, flow: FlowId) -> bool {
        self.legs_by_flow.contains_key(&flow)
    }

    /// The flows that carry legs.
    pub(super) fn flows_with_legs(&self) -> Vec<FlowId> {
        self.legs_by_flow.keys().copied().collect()
    }

    /// Adds a device leg to a call's dial.
    pub(super) fn add_callee(&mut self, sid: &str, leg: Leg) {
        if let Some(b) = self.map.get_mut(sid) {
            b.callees.push(leg);
            self.bind(leg.flow, leg.call, sid, Role::Callee);
        }
    }

    /// Records that the call waits on `identity`'s devices by push.
    pub(super) fn add_pushed(&mut self, sid: &str, pushed: Pushed) {
        let Some(b) = self.map.get_mut(sid) else { return };
        self.awaiting_push.entry(pushed.identity.clone()).or_default().insert(sid.to_owned());
        b.pushed.push(pushed);
    }

    fn unawait(&mut self, identity: &str, sid: &str) {
        if let Some(s) = self.awaiting_push.get_mut(identity) {
            s.remove(sid);
            if s.is_empty() {
                self.awaiting_push.remove(identity);
            }
        }
    }

    /// The unanswered calls waiting on `identity` by push.
    pub(super) fn awaiting(&self, identity: &str) -> Vec<String> {
        let Some(sids) = self.awaiting_push.get(identity) else { return Vec::new() };
        sids.iter().filter(|s| self.map.get(*s).is_some_and(|b| b.answered.is_none())).cloned().collect()
    }

    /// The other side of a leg of an answered call, and whether it is a client.
    pub(super) fn other_leg(&self, sid: &str, role: Role) -> Option<Leg> {
        let b = self.map.get(sid)?;
        match role {
            Role::Caller => b.answered_leg().copied(),
            Role::Callee => Some(b.caller),
        }
    }

    /// Sets (or moves) a call's ring timeout.
    pub(super) fn arm_ring(&mut self, sid: &str, at: Instant) {
        if let Some(b) = self.map.get_mut(sid) {
            b.ring_deadline = Some(at);
            self.ring_timers.push(Reverse((at, sid.to_owned())));
        }
    }

    /// The unanswered calls whose ring timeout has passed.
    pub(super) fn due_rings(&mut self, now: Instant) -> Vec<String> {
        let mut due = Vec::new();
        while self.ring_timers.peek().is_some_and(|Reverse((t, _))| *t <= now) {
            let Some(Reverse((t, sid))) = self.ring_timers.pop() else { break };
            if self.map.get(&sid).is_some_and(|b| b.answered.is_none() && b.ring_deadline == Some(t)) {
                due.push(sid);
            }
        }
        due
    }

    /// Holds a call's program until `at`.
    pub(super) fn arm_pause(&mut self, sid: &str, at: Instant) {
        if let Some(b) = self.map.get_mut(sid) {
            b.paused_until = Some(at);
            self.pause_timers.push(Reverse((at, sid.to_owned())));
        }
    }

    /// The calls whose pause is over.
    pub(super) fn due_pauses(&mut self, now: Instant) -> Vec<String> {
        let mut due = Vec::new();
        while self.pause_timers.peek().is_some_and(|Reverse((t, _))| *t <= now) {
            let Some(Reverse((t, sid))) = self.pause_timers.pop() else { break };
            if let Some(b) = self.map.get_mut(&sid).filter(|b| b.paused_until == Some(t)) {
                b.paused_until = None;
                due.push(sid);
            }
        }
        due
    }

    /// The earliest ring timeout or pause end.
    pub(super) fn next_wake(&self) -> Option<Instant> {
        let ring = self.ring_timers.peek().map(|Reverse((t, _))| *t);
        let pause = self.pause_timers.peek().map(|Reverse((t, _))| *t);
        ring.into_iter().chain(pause).min()
    }

    /// How many calls are up.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }
}

/// Removes a leg from a call's callees (not from the index).
pub(super) fn drop_callee(b: &mut Bridge, flow: FlowId, call: CallId) {
    b.callees.retain(|l| !(l.flow == flow && l.call == call));
}

//! The flows: one sans-IO [`UserAgent`] in server mode per client connection (a
//! WebSocket, TLS or TCP connection) or UDP peer, and the timers that drive them.
//! Only flows handed input or a command since the last collection are polled, and
//! every wake-up comes from a heap.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dialtone_sip::message::Message;
use dialtone_sip::ua::{CallId, Flow, Inbound, MovedCall, Transmit, UaConfig, UaEvent, UserAgent};

use super::{FlowId, Output};

struct FlowState {
    ua: UserAgent,
    remote: SocketAddr,
    /// The wake-up the timer heap holds for this flow's user agent.
    wake: Option<Instant>,
    /// A UDP peer (no connection tells when it is gone): when it last sent.
    last_heard: Option<Instant>,
}

/// How the user agents of new flows are made.
pub(super) struct FlowSettings {
    pub(super) domain: String,
    /// The host in Via and Contact, instead of the listener's address.
    pub(super) public_host: Option<String>,
    pub(super) max_message_size: usize,
    /// A UDP peer idle this long (and holding nothing) is forgotten.
    pub(super) udp_idle: Duration,
}

pub(super) struct Flows {
    settings: FlowSettings,
    flows: HashMap<FlowId, FlowState>,
    /// Flows whose user agent was handed input or a command since the last
    /// collection: only these are polled, never every flow.
    touched: Vec<FlowId>,
    /// Every flow's next wake-up (stale entries are skipped when they come up).
    timers: BinaryHeap<Reverse<(Instant, FlowId)>>,
    /// When each UDP peer is next checked for idleness.
    idle_timers: BinaryHeap<Reverse<(Instant, FlowId)>>,
    /// The user agents of closed flows that carried answered calls, kept until their
    /// clients reconnect and re-attach the dialogs (or the window closes).
    orphans: HashMap<FlowId, (UserAgent, Instant)>,
    /// Flows toward trunks and SIP URIs, by connection (reused while open).
    outbound: HashMap<String, FlowId>,
}

impl Flows {
    pub(super) fn new(settings: FlowSettings) -> Flows {
        Flows {
            settings,
            flows: HashMap::new(),
            touched: Vec::new(),
            timers: BinaryHeap::new(),
            idle_timers: BinaryHeap::new(),
            orphans: HashMap::new(),
            outbound: HashMap::new(),
        }
    }

    /// A new flow: its user agent speaks from `local` (or the public host).
    pub(super) fn open(
        &mut self,
        id: FlowId,
        transport: String,
        local: SocketAddr,
        remote: SocketAddr,
        reliable: bool,
        now: Instant,
    ) {
        let s = &self.settings;
        let mut c = UaConfig::new("dialtone", s.domain.clone());
        c.server = true;
        c.max_message_size = s.max_message_size;
        c.seed = uuid::Uuid::new_v4().as_u64_pair().0;
        let local = match &s.public_host {
            Some(h) if h.contains(':') && !h.starts_with('[') => format!("[{h}]:{}", local.port()),
            Some(h) => format!("{h}:{}", local.port()),
            None => local.to_string(),
        };
        let last_heard = (!reliable).then_some(now);
        if !reliable {
            self.idle_timers.push(Reverse((now + s.udp_idle, id)));
        }
        let ua = UserAgent::new(c, Flow { transport, local, reliable });
        self.flows.insert(id, FlowState { ua, remote, wake: None, last_heard });
        self.touched.push(id);
    }

    /// A parsed input from a flow, handed to its user agent.
    pub(super) fn input(&mut self, id: FlowId, inbound: Inbound, now: Instant) {
        let Some(f) = self.flows.get_mut(&id) else { return };
        if f.last_heard.is_some() {
            f.last_heard = Some(now);
        }
        f.ua.handle_inbound(inbound, now);
        self.touched.push(id);
    }

    /// A flow's user agent, marked for the next collection (its output and timer).
    pub(super) fn ua(&mut self, id: FlowId) -> Option<&mut UserAgent> {
        let f = self.flows.get_mut(&id)?;
        self.touched.push(id);
        Some(&mut f.ua)
    }

    /// The peer's address.
    pub(super) fn remote(&self, id: FlowId) -> Option<SocketAddr> {
        self.flows.get(&id).map(|f| f.remote)
    }

    /// Forgets a closed flow; its user agent is returned (to keep as an orphan).
    pub(super) fn close(&mut self, id: FlowId) -> Option<UserAgent> {
        self.outbound.retain(|_, f| *f != id);
        self.flows.remove(&id).map(|f| f.ua)
    }

    /// Keeps the user agent of a closed flow until `until`, for its client to come back.
    pub(super) fn keep_orphan(&mut self, id: FlowId, ua: UserAgent, until: Instant) {
        self.orphans.insert(id, (ua, until));
    }

    pub(super) fn drop_orphan(&mut self, id: FlowId) {
        self.orphans.remove(&id);
    }

    /// The open flow toward a connection key.
    pub(super) fn outbound(&self, key: &str) -> Option<FlowId> {
        self.outbound.get(key).copied().filter(|f| self.flows.contains_key(f))
    }

    pub(super) fn set_outbound(&mut self, key: String, id: FlowId) {
        self.outbound.insert(key, id);
    }

    /// Moves the dialog `request` belongs to out of whichever of `owners` (an orphan
    /// or another open flow) holds it.
    pub(super) fn take_call(
        &mut self,
        request: &Message,
        owners: impl IntoIterator<Item = FlowId>,
    ) -> Option<(FlowId, CallId, MovedCall)> {
        for old in owners {
            let ua = match self.orphans.get_mut(&old) {
                Some((ua, _)) => ua,
                None => match self.flows.get_mut(&old) {
                    Some(f) => &mut f.ua,
                    None => continue,
                },
            };
            if let Some((c, moved)) = ua.take_call(request) {
                if self.flows.contains_key(&old) {
                    self.touched.push(old);
                }
                return Some((old, c, moved));
            }
        }
        None
    }

    /// The orphans whose reconnect window has closed, forgotten.
    pub(super) fn expired_orphans(&mut self, now: Instant) -> Vec<FlowId> {
        let gone: Vec<FlowId> =
            self.orphans.iter().filter(|(_, (_, d))| *d <= now).map(|(f, _)| *f).collect();
        for f in &gone {
            self.orphans.remove(f);
        }
        gone
    }

    /// Runs the user agents whose timers are due.
    pub(super) fn run_timers(&mut self, now: Instant) {
        while let Some(&Reverse((t, id))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(f) = self.flows.get_mut(&id) else { continue };
            if f.wake != Some(t) {
                continue; // stale: the flow's wake-up moved, and the heap holds the new one
            }
            f.wake = None;
            if f.ua.poll_timeout().is_some_and(|t| t <= now) {
                f.ua.handle_timeout(now);
            }
            self.touched.push(id);
        }
    }

    /// The UDP peers due for an idle check that sent nothing for the idle period and
    /// have no transaction running. `busy` says whether one still holds something (a
    /// leg, a registration); those are checked again a period later. The rest are
    /// forgotten and returned with their addresses.
    pub(super) fn expire_idle(
        &mut self,
        now: Instant,
        busy: impl Fn(FlowId) -> bool,
    ) -> Vec<(FlowId, SocketAddr)> {
        let idle = self.settings.udp_idle;
        let mut gone = Vec::new();
        while let Some(&Reverse((t, id))) = self.idle_timers.peek() {
            if t > now {
                break;
            }
            self.idle_timers.pop();
            let Some(f) = self.flows.get(&id) else { continue };
            let Some(heard) = f.last_heard else { continue };
            if now.saturating_duration_since(heard) < idle {
                self.idle_timers.push(Reverse((heard + idle, id)));
                continue;
            }
            if f.ua.poll_timeout().is_some() || busy(id) {
                self.idle_timers.push(Reverse((now + idle, id)));
                continue;
            }
            let remote = f.remote;
            self.close(id);
            gone.push((id, remote));
        }
        gone
    }

    /// Moves what the touched user agents queued: their bytes to `out`, their events
    /// returned; their new wake-ups go in the heap.
    pub(super) fn collect(&mut self, out: &mut VecDeque<Output>) -> Vec<(FlowId, UaEvent)> {
        let mut ids = std::mem::take(&mut self.touched);
        ids.sort_unstable();
        ids.dedup();
        let mut events = Vec::new();
        for id in ids {
            let Some(f) = self.flows.get_mut(&id) else { continue };
            while let Some(t) = f.ua.poll_transmit() {
                let bytes = match t {
                    Transmit::Message(b) => b,
                    Transmit::Keepalive => b"\r\n\r\n".to_vec(),
                    Transmit::Pong => b"\r\n".to_vec(),
                };
                out.push_back(Output::Transmit { flow: id, bytes });
            }
            while let Some(e) = f.ua.poll_event() {
                events.push((id, e));
            }
            let wake = f.ua.poll_timeout();
            if wake != f.wake {
                f.wake = wake;
                if let Some(t) = wake {
                    self.timers.push(Reverse((t, id)));
                }
            }
        }
        events
    }

    /// Whether any flow was handed work not yet collected.
    pub(super) fn has_touched(&self) -> bool {
        !self.touched.is_empty()
    }

    /// The earliest wake-up: a user agent's timer, an idle check, a reconnect window.
    pub(super) fn next_wake(&self) -> Option<Instant> {
        let ua = self.timers.peek().map(|Reverse((t, _))| *t);
        let idle = self.idle_timers.peek().map(|Reverse((t, _))| *t);
        let orphans = self.orphans.values().map(|(_, d)| *d);
        ua.into_iter().chain(idle).chain(orphans).min()
    }

    /// How many flows are open.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.flows.len()
    }
}

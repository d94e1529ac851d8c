//! The switch's tokio shell. One task owns the [`Switch`] and feeds it what arrives
//! in its inbox (flows opening, bytes, closes, and the answers of work it asked for),
//! with the time; it wakes the switch at its timeout, and carries out its outputs:
//! bytes go to the flows' writers, record changes to the record writer, and URL
//! fetches, pushes, connections and store reads run as tasks whose answers come back
//! through the inbox. Nothing here decides anything about a call.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dialtone_core::{ErrorCode, VoiceError};
use dialtone_sip::Inbound;
use tokio::sync::{mpsc, oneshot};

use crate::records::{RecordWrite, Records};
use crate::store::Store;
use crate::switch::trunks::OutTarget;
use crate::switch::{FlowId, Input, Output, Switch};

/// What a flow's writer sends.
pub(crate) enum Out {
    Bytes(Vec<u8>),
}

/// What reaches the shell's inbox.
pub(crate) enum ShellMsg {
    /// A connection (or UDP peer) appeared.
    Open {
        id: FlowId,
        transport: String,
        local: SocketAddr,
        remote: SocketAddr,
        reliable: bool,
        out: mpsc::UnboundedSender<Out>,
    },
    /// One message (or keepalive) from a flow, parsed by its reader, and when it
    /// arrived.
    Data(FlowId, Inbound, Instant),
    /// The flow closed.
    Closed(FlowId),
    /// A snapshot of the registrar, for the API and tests.
    Registrations(oneshot::Sender<HashMap<String, usize>>),
    /// Work the switch asked for, done.
    Done(Input),
    /// Send a call message (JSON content) to the client on the leg with this SID; the
    /// reply is the message's SID.
    SendMessage { call_sid: String, content: String, reply: oneshot::Sender<Result<String, VoiceError>> },
}

/// What the shell does besides moving bytes.
pub(crate) struct ShellParts {
    pub(crate) store: Store,
    pub(crate) records: Records,
    /// The UDP listener's socket, shared for calls out over UDP.
    pub(crate) udp: Option<crate::listen::Udp>,
    /// The account whose subscriptions hear call messages.
    pub(crate) account_sid: String,
    /// The shell's own inbox (answers of work come back through it).
    pub(crate) inbox: mpsc::UnboundedSender<ShellMsg>,
    /// The largest SIP message a flow toward a trunk accepts.
    pub(crate) max_message_size: usize,
    /// Signed requests to applications.
    pub(crate) webhooks: crate::webhooks::Webhooks,
    /// Pushes through APNs, FCM or a binding's gateway.
    pub(crate) pusher: crate::providers::Pusher,
}

/// Runs the switch until the inbox closes.
pub(crate) async fn run(mut switch: Switch, parts: ShellParts, mut rx: mpsc::UnboundedReceiver<ShellMsg>) {
    let mut writers: HashMap<FlowId, mpsc::UnboundedSender<Out>> = HashMap::new();
    loop {
        let wake = switch.poll_timeout();
        let msg = tokio::select! {
            m = rx.recv() => m,
            () = sleep_until(wake) => {
                switch.handle_timeout(Instant::now());
                carry_out(&mut switch, &parts, &mut writers);
                continue;
            }
        };
        let Some(msg) = msg else { return };
        let now = Instant::now();
        switch.set_store_backlog(parts.records.overloaded().map(|b| b.backlog));
        match msg {
            ShellMsg::Open { id, transport, local, remote, reliable, out } => {
                writers.insert(id, out);
                switch.handle(Input::Open { flow: id, transport, local, remote, reliable }, now);
            }
            ShellMsg::Data(id, inbound, arrived) => {
                let waited = now.saturating_duration_since(arrived);
                switch.handle(Input::Data { flow: id, inbound, waited }, now);
            }
            ShellMsg::Closed(id) => {
                writers.remove(&id);
                switch.handle(Input::Closed(id), now);
            }
            ShellMsg::Done(input) => switch.handle(input, now),
            ShellMsg::SendMessage { call_sid, content, reply } => {
                let _ = reply.send(switch.send_message(&call_sid, &content, now));
            }
            ShellMsg::Registrations(reply) => {
                let _ = reply.send(switch.registrations(now));
            }
        }
        carry_out(&mut switch, &parts, &mut writers);
    }
}

/// Does everything the switch asked for.
fn carry_out(
    switch: &mut Switch,
    parts: &ShellParts,
    writers: &mut HashMap<FlowId, mpsc::UnboundedSender<Out>>,
) {
    while let Some(o) = switch.poll_output() {
        match o {
            Output::Transmit { flow, bytes } => {
                if let Some(w) = writers.get(&flow) {
                    let _ = w.send(Out::Bytes(bytes));
                }
            }
            Output::Record(w) => match w {
                RecordWrite::Insert(rec) => parts.records.insert_call(rec),
                RecordWrite::Answered { sid, at } => parts.records.answered(&sid, at),
                RecordWrite::Ended { sid, status, cause, at } => {
                    parts.records.ended(&sid, &status, &cause, at)
                }
            },
            Output::Fetch { sid, url, method, form } => {
                let (inbox, hooks) = (parts.inbox.clone(), parts.webhooks.clone());
                tokio::spawn(async move {
                    let result = hooks.fetch_twiml(method, &url, &form).await;
                    let _ = inbox.send(ShellMsg::Done(Input::Fetched { sid, result }));
                });
            }
            Output::Push { binding, body } => {
                let pusher = parts.pusher.clone();
                tokio::spawn(async move { pusher.deliver(&binding, &body).await });
            }
            Output::Connect { sid, child_sid, key, target } => {
                let (inbox, udp, max) = (parts.inbox.clone(), parts.udp.clone(), parts.max_message_size);
                tokio::spawn(async move {
                    let result = connect_outbound(&target, udp, inbox.clone(), max).await;
                    let _ =
                        inbox.send(ShellMsg::Done(Input::Connected { sid, child_sid, key, target, result }));
                });
            }
            Output::BindDevice { key, identity, credential_sid, device, remove } => {
                let (store, inbox, account) =
                    (parts.store.clone(), parts.inbox.clone(), parts.account_sid.clone());
                tokio::spawn(async move {
                    let result =
                        bind_device(&store, &account, &identity, &credential_sid, &device, remove).await;
                    let _ = inbox.send(ShellMsg::Done(Input::DeviceBound { key, result }));
                });
            }
            Output::LookupBindings { sid, child_sid, identity, params } => {
                let (store, inbox) = (parts.store.clone(), parts.inbox.clone());
                tokio::spawn(async move {
                    let bindings = match store.bindings(Some(&identity)).await {
                        Ok(b) => b,
                        Err(e) => {
                            tracing::error!(%identity, error = %e, "cannot read push bindings");
                            Vec::new()
                        }
                    };
                    let _ = inbox.send(ShellMsg::Done(Input::Bindings {
                        sid,
                        child_sid,
                        identity,
                        params,
                        bindings,
                    }));
                });
            }
            Output::Deliver { leg_sid, message_sid, content_type, content } => {
                let (store, account, hooks) =
                    (parts.store.clone(), parts.account_sid.clone(), parts.webhooks.clone());
                let message = (leg_sid, message_sid, content_type, content);
                tokio::spawn(deliver_to_subscriptions(store, hooks, account, message));
            }
            Output::ForgetPeer { flow, remote } => {
                writers.remove(&flow);
                if let Some(udp) = &parts.udp {
                    udp.forget(remote, flow);
                }
            }
        }
    }
}

/// Binds `identity`'s `device` to the push credential `credential_sid` (a binding of
/// the credential's type, kept as it is when it is already so), or removes the binding.
async fn bind_device(
    store: &Store,
    account: &str,
    identity: &str,
    credential_sid: &str,
    device: &str,
    remove: bool,
) -> Result<(), dialtone_core::VoiceError> {
    use dialtone_core::{ErrorCode, VoiceError};
    let unavailable = |e: crate::ServerError| VoiceError::new(ErrorCode::ServiceUnavailable, e.to_string());
    if remove {
        return store.delete_device_binding(identity, device).await.map(|_| ()).map_err(unavailable);
    }
    let credentials = store.credentials(account, Some(credential_sid)).await.map_err(unavailable)?;
    let Some(credential) = credentials.first() else {
        return Err(VoiceError::new(
            ErrorCode::AccessTokenGrantsInvalid,
            format!("grants.voice.push_credential_sid {credential_sid:?} names no push credential"),
        ));
    };
    let bound = store.bindings(Some(identity)).await.map_err(unavailable)?;
    if bound.iter().any(|b| {
        b.address == device
            && b.credential_sid.as_deref() == Some(credential_sid)
            && b.binding_type == credential.credential_type
    }) {
        return Ok(()); // a refresh
    }
    let binding = crate::store::Binding {
        sid: crate::accounts::new_sid("BS"),
        identity: identity.to_owned(),
        binding_type: credential.credential_type.clone(),
        address: device.to_owned(),
        gateway_url: String::new(),
        created: crate::store::now_ms(),
        credential_sid: Some(credential_sid.to_owned()),
    };
    tracing::info!(%identity, binding = %binding.sid, kind = %binding.binding_type, "device bound for push");
    store.add_binding(&binding).await.map_err(unavailable)
}

/// POSTs a call message to every subscription of the leg that sent it.
async fn deliver_to_subscriptions(
    store: Store,
    hooks: crate::webhooks::Webhooks,
    account: String,
    (leg_sid, message_sid, content_type, content): (String, String, String, String),
) {
    let subs = match store.subscriptions(&leg_sid).await {
        Ok(s) => s,
        Err(e) => return tracing::error!(error = %e, "cannot read message subscriptions"),
    };
    for sub in subs {
        let form = vec![
            ("AccountSid".to_owned(), account.clone()),
            ("CallSid".to_owned(), leg_sid.clone()),
            ("Sid".to_owned(), message_sid.clone()),
            ("ContentType".to_owned(), content_type.clone()),
            ("Content".to_owned(), content.clone()),
            ("Timestamp".to_owned(), crate::store::now_ms().to_string()),
        ];
        if let Err(e) = hooks.callback(&sub.callback, &form).await {
            tracing::warn!(subscription = %sub.sid, error = %e, "a message callback failed");
        }
    }
}

/// Opens a flow toward a SIP target: the server's own UDP socket for UDP (so the
/// peer sees the server's address), a new TCP or TLS connection otherwise.
async fn connect_outbound(
    target: &OutTarget,
    udp: Option<crate::listen::Udp>,
    inbox: mpsc::UnboundedSender<ShellMsg>,
    max: usize,
) -> Result<FlowId, VoiceError> {
    use dialtone_core::parts::{SignalingTransport as _, TlsSettings, TransportTarget};
    use dialtone_transport_tcp::{parse_target, TcpTransport, Wire};
    let url = target.uri.to_string();
    let (wire, host, port) = parse_target(&url)?;
    let unreachable = |m: String| VoiceError::new(ErrorCode::ConnectionError, m);
    if wire == Wire::Udp {
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| unreachable(format!("{host}: {e}")))?
            .next()
            .ok_or_else(|| unreachable(format!("{host}: no address")))?;
        let udp = udp.ok_or_else(|| unreachable("no UDP listener".into()))?;
        return udp.flow_for(addr).ok_or_else(|| unreachable("the server is stopping".into()));
    }
    let mut tls = TlsSettings::default();
    if let Some(ca) = &target.tls_ca_file {
        tls = tls.with_ca_file(ca);
    }
    let conn = tokio::time::timeout(
        Duration::from_secs(10),
        TcpTransport::default().connect(&TransportTarget::new(url.clone()).with_tls(tls)),
    )
    .await
    .map_err(|_| unreachable(format!("{url}: no connection within 10 s")))?
    .map_err(|e| unreachable(format!("{url}: {}", e.message())))?;
    let addr = |s: &str| s.parse::<SocketAddr>().map_err(|_| unreachable(format!("bad address {s}")));
    let (local, remote) = (addr(&conn.info.local_addr)?, addr(&conn.info.remote_addr)?);
    crate::listen::attach(conn, inbox, local, remote, max)
        .ok_or_else(|| unreachable("the server is stopping".into()))
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

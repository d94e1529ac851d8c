//! The server's REST side of a live call, over real loopback sockets: sending a call
//! message to either leg's client, subscription callbacks that receive what the
//! clients send (with every refusal's code), and the insights events both SDKs post,
//! stored and listed per call and per identity.

#![allow(clippy::unwrap_used)]

mod sipkit;

use std::sync::Arc;
use std::time::Duration;

use dialtone_core::CallMessage;
use dialtone_insights_http::HttpInsightsSink;
use dialtone_server::Server;
use dialtone_transport_ws::WsTransport;
use sipkit::{form, parse_form, rest, Auth, Client, Heard, Scratch};
use tokio::sync::mpsc;

fn client(server: &Server, identity: &str) -> Client {
    let mut c =
        Client::new(identity, &server.addresses().ws_url(), Arc::new(WsTransport::default()), "127.0.0.1");
    c.token = Some(server.mint_token(identity, 3600).unwrap());
    c
}

async fn next_form(rx: &mut mpsc::UnboundedReceiver<String>) -> std::collections::HashMap<String, String> {
    let body = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("a callback").unwrap();
    parse_form(&body)
}

/// A server, a subscription callback sink, and alice and bob registered.
struct World {
    _scratch: Scratch,
    srv: Server,
    http: std::net::SocketAddr,
    acct: dialtone_server::Account,
    calls: String,
    hook: String,
    hooked: mpsc::UnboundedReceiver<String>,
    alice: Client,
    bob: Client,
}

impl World {
    async fn new(name: &str) -> World {
        let scratch = Scratch::new(name);
        let srv = Server::start(&sipkit::server_config(&scratch)).await.unwrap();
        let http = srv.addresses().http;
        let acct = srv.account().clone();
        let calls = format!("/2010-04-01/Accounts/{}/Calls", acct.account_sid);
        let (hook, hooked) = sipkit::http_sink("").await;
        let alice = client(&srv, "alice");
        let bob = client(&srv, "bob");
        alice.register().await;
        bob.register().await;
        World { _scratch: scratch, srv, http, acct, calls, hook, hooked, alice, bob }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_messages_reach_either_leg_and_subscriptions_hear_the_clients() {
    let World { _scratch, srv: _srv, http, acct, calls, hook, mut hooked, mut alice, mut bob } =
        World::new("server-messages").await;
    let basic = || Auth::Basic(&acct.account_sid, &acct.auth_token);
    let (call, invite, answered) = sipkit::connect_and_answer(&mut alice, &mut bob, "client:bob").await;
    let (parent, child) = (call.sid().unwrap(), invite.call_sid().to_owned());

    // A subscription on each leg.
    let mut subs = Vec::new();
    for leg in [&parent, &child] {
        let path = format!("{calls}/{leg}/UserDefinedMessageSubscriptions.json");
        let (status, sub) =
            rest(http, "POST", &path, basic(), sipkit::FORM, &form(&[("Callback", &hook)])).await;
        assert_eq!(status, 201, "{sub}");
        assert!(sub["sid"].as_str().unwrap().starts_with("ZY"));
        assert_eq!(sub["call_sid"], leg.as_str());
        subs.push(sub["sid"].as_str().unwrap().to_owned());
        let (status, list) = rest(http, "GET", &path, basic(), "", "").await;
        assert_eq!(status, 200);
        assert_eq!(list["user_defined_message_subscriptions"].as_array().unwrap().len(), 1);
    }
    let path = format!("{calls}/{parent}/UserDefinedMessageSubscriptions.json");
    let (status, e) =
        rest(http, "POST", &path, basic(), sipkit::FORM, &form(&[("Callback", "ftp://x")])).await;
    assert_eq!((status, e["code"].as_u64()), (400, Some(31400)), "{e}");

    // What each client sends reaches the other client and its own leg's subscription.
    call.send_message(CallMessage::new(r#"{"from":"alice"}"#));
    bob.wait_for(10, "alice's message", |e| matches!(e, Heard::MessageReceived(c) if c.contains("alice")))
        .await;
    let got = next_form(&mut hooked).await;
    assert_eq!(got["CallSid"], parent);
    assert_eq!(got["AccountSid"], acct.account_sid);
    assert_eq!(got["Content"], r#"{"from":"alice"}"#);
    assert!(got["Sid"].starts_with("KX"), "{got:?}");
    answered.send_message(CallMessage::new(r#"{"from":"bob"}"#));
    alice
        .wait_for(10, "bob's message", |e| matches!(e, Heard::MessageReceived(c) if c.contains("bob")))
        .await;
    let got = next_form(&mut hooked).await;
    assert_eq!((got["CallSid"].as_str(), got["Content"].as_str()), (child.as_str(), r#"{"from":"bob"}"#));

    // The REST API sends to the client on the leg it names.
    let send = |leg: String, content: String| {
        let path = format!("{calls}/{leg}/UserDefinedMessages.json");
        async move { rest(http, "POST", &path, basic(), sipkit::FORM, &form(&[("Content", &content)])).await }
    };
    let (status, m) = send(parent.clone(), r#"{"to":"alice"}"#.into()).await;
    assert_eq!(status, 201, "{m}");
    assert!(m["sid"].as_str().unwrap().starts_with("KX"));
    alice
        .wait_for(
            10,
            "REST message",
            |e| matches!(e, Heard::MessageReceived(c) if c.contains(r#""to":"alice""#)),
        )
        .await;
    let (status, _) = send(child.clone(), r#"{"to":"bob"}"#.into()).await;
    assert_eq!(status, 201);
    bob.wait_for(
        10,
        "REST message",
        |e| matches!(e, Heard::MessageReceived(c) if c.contains(r#""to":"bob""#)),
    )
    .await;

    // Refusals, each with its code; none of them counts against the call's rate.
    let (status, e) = send(parent.clone(), "not json".into()).await;
    assert_eq!((status, e["code"].as_u64()), (400, Some(31100)), "{e}");
    let (status, e) = send(parent.clone(), format!(r#"{{"big":"{}"}}"#, "x".repeat(11 * 1024))).await;
    assert_eq!((status, e["code"].as_u64()), (413, Some(31212)), "{e}");
    let (status, e) = send(format!("CA{}", "0".repeat(32)), "{}".into()).await;
    assert_eq!((status, e["code"].as_u64()), (404, Some(31404)), "{e}");
    let path = format!("{calls}/{parent}/UserDefinedMessages.json");
    let (status, e) = rest(http, "POST", &path, basic(), sipkit::FORM, "Other=1").await;
    assert_eq!((status, e["code"].as_u64()), (400, Some(31400)), "{e}");
    let (status, e) = rest(http, "POST", &path, Auth::None, sipkit::FORM, "Content=%7B%7D").await;
    assert_eq!((status, e["code"].as_u64()), (401, Some(20151)), "{e}");

    // Four messages so far this minute: six more pass, the eleventh is 31206.
    for i in 0..6 {
        let (status, m) = send(child.clone(), format!(r#"{{"n":{i}}}"#)).await;
        assert_eq!(status, 201, "message {i}: {m}");
    }
    let (status, e) = send(child.clone(), "{}".into()).await;
    assert_eq!((status, e["code"].as_u64()), (429, Some(31206)), "{e}");

    // A deleted subscription is gone.
    let path = format!("{calls}/{parent}/UserDefinedMessageSubscriptions/{}.json", subs[0]);
    assert_eq!(rest(http, "DELETE", &path, basic(), "", "").await.0, 204);
    let (status, e) = rest(http, "DELETE", &path, basic(), "", "").await;
    assert_eq!((status, e["code"].as_u64()), (404, Some(31404)));

    call.disconnect();
    bob.wait_for(10, "disconnected", |e| matches!(e, Heard::Disconnected(None))).await;
    let (status, e) = send(parent.clone(), "{}".into()).await;
    assert_eq!((status, e["code"].as_u64()), (404, Some(31404)), "an ended call takes no messages: {e}");
    // The subscription store outlives the call (and the store lives in SQLite).
    let path = format!("{calls}/{child}/UserDefinedMessageSubscriptions.json");
    let (_, list) = rest(http, "GET", &path, basic(), "", "").await;
    assert_eq!(list["user_defined_message_subscriptions"][0]["sid"], subs[1].as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insights_events_the_sdks_post_are_stored_and_listed() {
    let scratch = Scratch::new("server-insights");
    let srv = Server::start(&sipkit::server_config(&scratch)).await.unwrap();
    let http = srv.addresses().http;
    let acct = srv.account().clone();
    let basic = || Auth::Basic(&acct.account_sid, &acct.auth_token);
    let url = format!("http://{http}/v1/Insights/Events");
    let sink = |who: &str| Arc::new(HttpInsightsSink::new(url.clone(), srv.mint_token(who, 600).unwrap()));
    let (alice_sink, bob_sink) = (sink("alice"), sink("bob"));
    let mut alice = client(&srv, "alice").with_insights(alice_sink.clone());
    let mut bob = client(&srv, "bob").with_insights(bob_sink.clone());
    alice.register().await;
    bob.register().await;
    let (call, invite, _answered) = sipkit::connect_and_answer(&mut alice, &mut bob, "client:bob").await;
    call.disconnect();
    bob.wait_for(10, "disconnected", |e| matches!(e, Heard::Disconnected(None))).await;
    let (parent, child) = (call.sid().unwrap(), invite.call_sid().to_owned());
    tokio::task::block_in_place(|| {
        assert!(alice_sink.flush(Duration::from_secs(10)) && bob_sink.flush(Duration::from_secs(10)));
    });
    assert_eq!((alice_sink.dropped(), bob_sink.dropped()), (0, 0));
    assert!(alice_sink.sent() >= 4 && bob_sink.sent() >= 4, "{alice_sink:?} {bob_sink:?}");

    let names = |v: &serde_json::Value| -> Vec<String> {
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| format!("{}/{}", e["group"].as_str().unwrap(), e["name"].as_str().unwrap()))
            .collect()
    };
    let (status, list) =
        rest(http, "GET", &format!("/v1/Insights/Events?CallSid={parent}"), basic(), "", "").await;
    assert_eq!(status, 200);
    let got = names(&list);
    for want in ["connection/ringing", "connection/connected", "connection/disconnect-called"] {
        assert!(got.contains(&want.to_owned()), "{want} missing from {got:?}");
    }
    assert!(list["events"].as_array().unwrap().iter().all(|e| e["identity"] == "alice"), "{list}");
    let (_, list) = rest(http, "GET", &format!("/v1/Insights/Events?CallSid={child}"), basic(), "", "").await;
    let got = names(&list);
    for want in ["connection/incoming", "connection/accepted-by-local", "connection/disconnected-by-remote"] {
        assert!(got.contains(&want.to_owned()), "{want} missing from {got:?}");
    }
    let (_, list) = rest(http, "GET", "/v1/Insights/Events?Identity=bob", basic(), "", "").await;
    assert!(names(&list).contains(&"registration/registration".to_owned()), "{list}");

    // Refusals: a forged token, a body that is not events, a listing without credentials.
    let forged = sipkit::token("alice");
    let (status, e) =
        rest(http, "POST", "/v1/Insights/Events", Auth::Token(&forged), "application/json", "[]").await;
    assert_eq!((status, e["code"].as_u64()), (401, Some(20107)), "{e}");
    let good = srv.mint_token("alice", 600).unwrap();
    let (status, e) =
        rest(http, "POST", "/v1/Insights/Events", Auth::Token(&good), "application/json", r#"{"x":1}"#).await;
    assert_eq!((status, e["code"].as_u64()), (400, Some(31400)), "{e}");
    let bad_level = r#"[{"group":"connection","name":"x","level":"loud","timestamp_ms":1}]"#;
    let (status, _) =
        rest(http, "POST", "/v1/Insights/Events", Auth::Token(&good), "application/json", bad_level).await;
    assert_eq!(status, 400);
    let (status, e) = rest(http, "GET", "/v1/Insights/Events", Auth::None, "", "").await;
    assert_eq!((status, e["code"].as_u64()), (401, Some(20151)), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_invite_messages_the_caller_and_its_subscriptions() {
    let World { _scratch, srv: _srv, http, acct, calls, hook, mut hooked, mut alice, mut bob } =
        World::new("invite-messages").await;
    let basic = || Auth::Basic(&acct.account_sid, &acct.auth_token);

    let call = alice.connect("client:bob", &[]);
    let invite = bob.invite(10).await;
    alice.wait_for(10, "ringing", |e| matches!(e, Heard::Ringing)).await;
    let child = invite.call_sid().to_owned();
    let path = format!("{calls}/{child}/UserDefinedMessageSubscriptions.json");
    let (status, sub) = rest(http, "POST", &path, basic(), sipkit::FORM, &form(&[("Callback", &hook)])).await;
    assert_eq!(status, 201, "{sub}");

    // While it rings: the callee's message reaches the caller, the callee hears it
    // was delivered, and the subscription on the callee's leg is called back.
    let id = invite.send_message(CallMessage::new(r#"{"status":"picking up"}"#));
    assert!(id.starts_with("KX"), "{id}");
    alice
        .wait_for(
            10,
            "the invite's message",
            |e| matches!(e, Heard::MessageReceived(c) if c.contains("picking up")),
        )
        .await;
    bob.wait_for(10, "delivery", |e| matches!(e, Heard::MessageSent(s) if *s == id)).await;
    let f = next_form(&mut hooked).await;
    assert_eq!(f["CallSid"], child, "{f:?}");
    assert!(f["Content"].contains("picking up"), "{f:?}");
    assert_eq!(call.state(), dialtone_core::CallState::Ringing);

    // Too big fails through the delegate (31212) without reaching the wire.
    let big = invite.send_message(CallMessage::new(format!(r#"{{"x":"{}"}}"#, "y".repeat(11 * 1024))));
    bob.wait_for(10, "refusal", |e| matches!(e, Heard::MessageFailed(s, 31212) if *s == big)).await;

    // Once accepted, the invite sends nothing (an empty SID); the call carries messages.
    let answered = invite.accept(bob.delegate());
    alice.wait_for(10, "connected", |e| matches!(e, Heard::Connected)).await;
    assert_eq!(invite.send_message(CallMessage::new("{}")), "");
    call.disconnect();
    bob.wait_for(10, "disconnected", |e| matches!(e, Heard::Disconnected(None))).await;
    drop(answered);
}

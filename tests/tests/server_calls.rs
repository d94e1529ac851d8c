//! The embedded server over real loopback sockets: registration with server-minted
//! tokens (and refusals with their codes), a client-to-client call with custom
//! parameters, audio and call messages both ways, parallel ringing where the first
//! answer wins and the other device hears "Call completed elsewhere", cancel, reject,
//! nobody registered, call records over the REST API, and pjsua2 calling a Dialtone
//! client through the UDP trunk listener.

#![allow(clippy::unwrap_used)]

mod sipkit;

use std::sync::Arc;

use dialtone_core::config::ApplicationConfig;
use dialtone_core::{CallMessage, CallState};
use dialtone_server::Server;
use dialtone_transport_ws::WsTransport;
use sipkit::{Client, Heard, Pjsua, Scratch};

async fn server(scratch: &Scratch) -> Server {
    server_with(scratch, Vec::new()).await
}

async fn server_with(scratch: &Scratch, apps: Vec<ApplicationConfig>) -> Server {
    let mut cfg = sipkit::server_config(scratch);
    cfg.applications = apps;
    Server::start(&cfg).await.unwrap()
}

fn client(server: &Server, identity: &str) -> Client {
    let mut c =
        Client::new(identity, &server.addresses().ws_url(), Arc::new(WsTransport::default()), "127.0.0.1");
    c.token = Some(server.mint_token(identity, 3600).unwrap());
    c
}

/// GET on the REST API with the account's credentials (or others).
async fn get(server: &Server, path: &str, auth: Option<(&str, &str)>) -> (u16, serde_json::Value) {
    let auth = auth.map_or(sipkit::Auth::None, |(u, p)| sipkit::Auth::Basic(u, p));
    sipkit::rest(server.addresses().http, "GET", path, auth, "", "").await
}

/// POSTs a body to the REST API with the account's credentials.
async fn post(server: &Server, path: &str, content_type: &str, body: &str) -> (u16, serde_json::Value) {
    let a = server.account();
    let auth = sipkit::Auth::Basic(&a.account_sid, &a.auth_token);
    sipkit::rest(server.addresses().http, "POST", path, auth, content_type, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_to_client_call_through_the_server() {
    let scratch = Scratch::new("server-call");
    let srv = server(&scratch).await;
    let acct = srv.account().clone();
    let auth = Some((acct.account_sid.as_str(), acct.auth_token.as_str()));

    // A forged token is refused with its code; a minted one registers.
    let mut forged = client(&srv, "alice");
    forged.token = Some(sipkit::token("alice"));
    let e = forged.voice.register(&sipkit::token("alice"), "").await.unwrap_err();
    assert_eq!(e.code(), 20107, "{e}");
    let mut alice = client(&srv, "alice");
    let mut bob = client(&srv, "bob");
    alice.register().await;
    bob.register().await;
    let (status, regs) = get(&srv, "/v1/Registrations", auth).await;
    assert_eq!(status, 200);
    assert_eq!(regs["registrations"]["bob"], 1);

    let call = alice.connect("client:bob", &[("caller_first_name", "alice"), ("caller_last_name", "smith")]);
    let invite = bob.invite(10).await;
    assert_eq!(invite.from(), Some("client:alice"));
    assert_eq!(invite.custom_parameters()["caller_first_name"], "alice");
    assert_eq!(invite.custom_parameters()["caller_last_name"], "smith");
    alice.wait_for(10, "ringing", |e| matches!(e, Heard::Ringing)).await;
    let answered = invite.accept(bob.delegate());
    alice.wait_for(10, "connected", |e| matches!(e, Heard::Connected)).await;
    bob.wait_for(10, "connected", |e| matches!(e, Heard::Connected)).await;
    let parent = call.sid().unwrap();
    assert!(parent.starts_with("CA") && parent.len() == 34);
    assert_ne!(parent, invite.call_sid(), "each leg has its own call SID");

    alice.hear_more(3 * 48_000, 10).await;
    bob.hear_more(3 * 48_000, 10).await;
    dialtone_tests::assert_speech("alice hears bob", &alice.heard()[24_000..], 48_000, 16_000);
    dialtone_tests::assert_speech("bob hears alice", &bob.heard()[24_000..], 48_000, 16_000);

    let id = call.send_message(CallMessage::new("{\"hello\":\"bob\"}"));
    alice.wait_for(10, "sent", |e| matches!(e, Heard::MessageSent(s) if *s == id)).await;
    bob.wait_for(10, "message", |e| matches!(e, Heard::MessageReceived(c) if c.contains("bob"))).await;
    let id = answered.send_message(CallMessage::new("{\"hello\":\"alice\"}"));
    bob.wait_for(10, "sent", |e| matches!(e, Heard::MessageSent(s) if *s == id)).await;
    alice.wait_for(10, "message", |e| matches!(e, Heard::MessageReceived(c) if c.contains("alice"))).await;
    // Content that is not the JSON its type says is refused by the server.
    let id = call.send_message(CallMessage::new("not json"));
    let failed = alice.wait_for(10, "failure", |e| matches!(e, Heard::MessageFailed(s, _) if *s == id)).await;
    assert!(matches!(failed, Heard::MessageFailed(_, 31100)), "{failed:?}");

    call.disconnect();
    bob.wait_for(10, "disconnected", |e| matches!(e, Heard::Disconnected(None))).await;
    assert_eq!(answered.state(), CallState::Disconnected);

    // Both legs are on record, completed, with the caller's hang-up as the cause.
    let mut calls = serde_json::Value::Null;
    for _ in 0..50 {
        let (_, c) = get(&srv, &format!("/2010-04-01/Accounts/{}/Calls.json", acct.account_sid), auth).await;
        calls = c["calls"].clone();
        if calls.as_array().unwrap().iter().all(|c| c["status"] == "completed") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let calls = calls.as_array().unwrap();
    assert_eq!(calls.len(), 2, "{calls:?}");
    let p = calls.iter().find(|c| c["sid"] == parent.as_str()).unwrap();
    assert_eq!(p["status"], "completed");
    assert_eq!(p["end_cause"], "hangup-by-caller");
    assert_eq!(p["from"], "client:alice");
    assert!(calls.iter().any(|c| c["parent_call_sid"] == parent.as_str() && c["status"] == "completed"));
    // The REST API refuses wrong credentials and unknown things with JSON errors.
    let (status, body) = get(
        &srv,
        &format!("/2010-04-01/Accounts/{}/Calls.json", acct.account_sid),
        Some((&acct.account_sid, "wrong")),
    )
    .await;
    assert_eq!((status, body["code"].as_u64()), (401, Some(20151)));
    let (status, body) =
        get(&srv, &format!("/2010-04-01/Accounts/{}/Calls.json?PageSize=x", acct.account_sid), auth).await;
    assert_eq!((status, body["code"].as_u64()), (400, Some(31400)));
    let (status, _) = get(&srv, "/nothing/here", auth).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_ringing_cancel_reject_and_nobody_home() {
    let scratch = Scratch::new("server-ring");
    let srv = server(&scratch).await;
    let mut alice = client(&srv, "alice");
    let mut phone = client(&srv, "bob");
    let mut laptop = client(&srv, "bob");
    alice.register().await;
    phone.register().await;
    laptop.register().await;

    // Both of bob's devices ring; the laptop answers; the phone's invite is cancelled.
    let call = alice.connect("client:bob", &[]);
    let on_phone = phone.invite(10).await;
    let on_laptop = laptop.invite(10).await;
    assert_eq!(on_phone.call_sid(), on_laptop.call_sid(), "one leg, two devices");
    let _answered = on_laptop.accept(laptop.delegate());
    alice.wait_for(10, "connected", |e| matches!(e, Heard::Connected)).await;
    let cancelled = phone.wait_for(10, "cancel", |e| matches!(e, Heard::Cancelled(..))).await;
    assert!(
        matches!(cancelled, Heard::Cancelled(ref sid, 31008) if sid == on_phone.call_sid()),
        "{cancelled:?}"
    );
    call.disconnect();
    laptop.wait_for(10, "disconnected", |e| matches!(e, Heard::Disconnected(None))).await;

    // The caller hangs up while both ring: both invites are cancelled.
    let call = alice.connect("client:bob", &[]);
    phone.invite(10).await;
    laptop.invite(10).await;
    alice.wait_for(10, "ringing", |e| matches!(e, Heard::Ringing)).await;
    call.disconnect();
    phone.wait_for(10, "cancel", |e| matches!(e, Heard::Cancelled(_, 31008))).await;
    laptop.wait_for(10, "cancel", |e| matches!(e, Heard::Cancelled(_, 31008))).await;

    // Both devices reject: the caller hears 31002 (600 Call Rejected).
    let _call = alice.connect("client:bob", &[]);
    phone.invite(10).await.reject();
    laptop.invite(10).await.reject();
    let failed = alice.wait_for(10, "failure", |e| matches!(e, Heard::FailedToConnect(_))).await;
    assert!(matches!(failed, Heard::FailedToConnect(31002)), "{failed:?}");

    // Nobody registered as carol: 31480.
    let _call = alice.connect("client:carol", &[]);
    let failed = alice.wait_for(10, "failure", |e| matches!(e, Heard::FailedToConnect(_))).await;
    assert!(matches!(failed, Heard::FailedToConnect(31480)), "{failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pjsua_calls_a_dialtone_client_through_the_udp_and_tcp_trunks() {
    for wire in ["udp", "tcp"] {
        trunk_call_from_pjsua(wire).await;
    }
}

async fn trunk_call_from_pjsua(wire: &str) {
    let scratch = Scratch::new(&format!("server-trunk-{wire}"));
    let srv = server(&scratch).await;
    let mut bob = client(&srv, "bob");
    bob.register().await;
    let addr = if wire == "udp" { srv.addresses().sip_udp } else { srv.addresses().sip_tcp };
    let trunk = format!("direct:{addr}");
    let pj = Pjsua::start(&scratch, "call", wire, &trunk, "sip:bob@127.0.0.1", None);
    let heard = sipkit::pjsua_calls(pj, &mut bob, wire).await;
    dialtone_tests::assert_speech(
        &format!("{wire}: pjsua hears bob through the server"),
        dialtone_tests::middle(&heard, 4_000, 4_000),
        8000,
        8000,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twiml_applications_route_calls_and_their_failures_have_codes() {
    let scratch = Scratch::new("server-twiml");
    let (busy_url, mut posts) = sipkit::http_sink(r#"<Response><Reject reason="busy"/></Response>"#).await;
    let apps = vec![
        ApplicationConfig::with_twiml(
            "APstatic",
            r#"<Response><Pause length="1"/><Dial timeout="20"><Client><Identity>bob</Identity><Parameter name="topic" value="a b&amp;c"/></Client></Dial></Response>"#,
        ),
        ApplicationConfig::with_voice_url("APbusy", busy_url),
        ApplicationConfig::with_voice_url("APdown", "http://127.0.0.1:1/voice"),
        ApplicationConfig::with_twiml("APbroken", "<Response><Dial"),
    ];
    let srv = server_with(&scratch, apps).await;
    let mut bob = client(&srv, "bob");
    bob.register().await;
    let mut alice = client(&srv, "alice");

    // A TwiML document: <Pause> then <Dial><Client> with a <Parameter>.
    alice.token = Some(srv.mint_token_for_app("alice", 600, "APstatic").unwrap());
    let started = std::time::Instant::now();
    let call = alice.connect("anything", &[("ignored_by_twiml", "x")]);
    let invite = bob.invite(10).await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(900), "<Pause length=1> waited");
    assert_eq!(
        invite.custom_parameters()["topic"],
        "a b&c",
        "parameters are URI-encoded on the way and decoded"
    );
    assert!(!invite.custom_parameters().contains_key("ignored_by_twiml"));
    let _answered = invite.accept(bob.delegate());
    alice.wait_for(10, "connected", |e| matches!(e, Heard::Connected)).await;
    call.disconnect();
    bob.wait_for(10, "disconnected", |e| matches!(e, Heard::Disconnected(None))).await;

    // A voice URL: POSTed the call's facts and the caller's parameters; it rejects busy.
    alice.token = Some(srv.mint_token_for_app("alice", 600, "APbusy").unwrap());
    let _call = alice.connect("client:bob", &[("caller_first_name", "alice")]);
    let form = tokio::time::timeout(std::time::Duration::from_secs(10), posts.recv()).await.unwrap().unwrap();
    for field in [
        "CallSid=CA",
        "AccountSid=AC",
        "From=client%3Aalice",
        "To=client%3Abob",
        "Direction=inbound",
        "caller_first_name=alice",
    ] {
        assert!(form.contains(field), "{field} missing in {form}");
    }
    let failed = alice.wait_for(10, "failure", |e| matches!(e, Heard::FailedToConnect(_))).await;
    assert!(matches!(failed, Heard::FailedToConnect(31486)), "{failed:?}");

    // An unreachable voice URL is 31502; broken TwiML is 31100; the server goes on.
    alice.token = Some(srv.mint_token_for_app("alice", 600, "APdown").unwrap());
    let _call = alice.connect("client:bob", &[]);
    let failed = alice.wait_for(15, "failure", |e| matches!(e, Heard::FailedToConnect(_))).await;
    assert!(matches!(failed, Heard::FailedToConnect(31502)), "{failed:?}");
    alice.token = Some(srv.mint_token_for_app("alice", 600, "APbroken").unwrap());
    let _call = alice.connect("client:bob", &[]);
    let failed = alice.wait_for(10, "failure", |e| matches!(e, Heard::FailedToConnect(_))).await;
    assert!(matches!(failed, Heard::FailedToConnect(31100)), "{failed:?}");
    alice.token = Some(srv.mint_token_for_app("alice", 600, "APstatic").unwrap());
    let _call = alice.connect("client:bob", &[]);
    bob.invite(10).await.reject();
    let failed = alice.wait_for(10, "failure", |e| matches!(e, Heard::FailedToConnect(_))).await;
    assert!(matches!(failed, Heard::FailedToConnect(31002)), "{failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_keeps_its_legs_while_the_client_reconnects() {
    let scratch = Scratch::new("server-reconnect");
    let srv = server(&scratch).await;
    let relay = sipkit::Relay::start(srv.addresses().ws).await;
    let mut alice =
        Client::new("alice", &format!("ws://{}", relay.addr), Arc::new(WsTransport::default()), "127.0.0.1");
    alice.token = Some(srv.mint_token("alice", 600).unwrap());
    let mut bob = client(&srv, "bob");
    alice.register().await;
    bob.register().await;
    let (call, _invite, answered) = sipkit::connect_and_answer(&mut alice, &mut bob, "client:bob").await;

    let before = bob.heard_len();
    relay.cut();
    alice.wait_for(10, "reconnecting", |e| matches!(e, Heard::Reconnecting(53001))).await;
    alice.wait_for(20, "reconnected", |e| matches!(e, Heard::Reconnected)).await;
    assert_eq!(answered.state(), CallState::Connected, "bob's leg never noticed");
    bob.hear_more(3 * 48_000, 10).await;
    dialtone_tests::assert_speech("bob through alice's reconnect", &bob.heard()[before..], 48_000, 16_000);

    // The re-attached dialog carries messages and the hang-up.
    let id = call.send_message(CallMessage::new("{\"still\":\"here\"}"));
    alice.wait_for(10, "sent", |e| matches!(e, Heard::MessageSent(s) if *s == id)).await;
    bob.wait_for(10, "message", |e| matches!(e, Heard::MessageReceived(c) if c.contains("still"))).await;
    call.disconnect();
    bob.wait_for(10, "disconnected", |e| matches!(e, Heard::Disconnected(None))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_loses_no_call_records_bindings_subscriptions_or_insights() {
    let scratch = Scratch::new("server-restart");
    let mut cfg = sipkit::server_config(&scratch);
    cfg.database_url = None;
    // The default store: a SQLite file in the data directory.
    let srv = Server::start(&cfg).await.unwrap();
    let acct = srv.account().clone();
    let mut alice = client(&srv, "alice");
    let mut bob = client(&srv, "bob");
    bob.register().await;
    let call = alice.connect("client:bob", &[]);
    let _answered = bob.invite(10).await.accept(bob.delegate());
    alice.wait_for(10, "connected", |e| matches!(e, Heard::Connected)).await;
    call.disconnect();
    bob.wait_for(10, "disconnected", |e| matches!(e, Heard::Disconnected(None))).await;
    let sid = call.sid().unwrap();
    let binding = r#"{"identity":"carol","binding_type":"fcm","address":"carol-1","gateway_url":"http://127.0.0.1:9/push"}"#;
    assert_eq!(post(&srv, "/v1/Bindings", "application/json", binding).await.0, 201);
    let subs =
        format!("/2010-04-01/Accounts/{}/Calls/{sid}/UserDefinedMessageSubscriptions.json", acct.account_sid);
    let (status, sub) = post(&srv, &subs, sipkit::FORM, "Callback=http%3A%2F%2F127.0.0.1%3A9%2Fm").await;
    assert_eq!(status, 201, "{sub}");
    let event = r#"[{"group":"feedback","name":"received","level":"info","call_sid":"CAx","timestamp_ms":1,"payload":{"score":5}}]"#;
    let token = srv.mint_token("alice", 600).unwrap();
    let (status, _) = sipkit::rest(
        srv.addresses().http,
        "POST",
        "/v1/Insights/Events",
        sipkit::Auth::Token(&token),
        "application/json",
        event,
    )
    .await;
    assert_eq!(status, 201);
    drop((alice, bob));
    srv.shutdown().await;

    let srv = Server::start(&cfg).await.unwrap();
    assert_eq!(srv.account(), &acct, "the same development account");
    let auth = Some((acct.account_sid.as_str(), acct.auth_token.as_str()));
    let (status, body) =
        get(&srv, &format!("/2010-04-01/Accounts/{}/Calls/{sid}.json", acct.account_sid), auth).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "completed");
    assert_eq!(body["from"], "client:alice");
    let (status, body) = get(&srv, "/v1/Bindings?Identity=carol", auth).await;
    assert_eq!(status, 200);
    assert_eq!(body["bindings"][0]["address"], "carol-1");
    let (_, body) = get(&srv, &subs, auth).await;
    assert_eq!(body["user_defined_message_subscriptions"][0]["sid"], sub["sid"]);
    let (_, body) = get(&srv, "/v1/Insights/Events?CallSid=CAx", auth).await;
    assert_eq!(body["events"][0]["payload"], r#"{"score":5}"#);
    assert_eq!(body["events"][0]["identity"], "alice");
}

//! Push through the embedded server: a binding registered over the REST API; a call to
//! an identity with no live registration POSTs the `twi_*` payload to the gateway; the
//! app hands it to `Voice::handle_notification`, accepts, and the device joins the
//! waiting call with the bridge token; a tampered token is 31104; a caller who hangs
//! up first reaches the invitee as a cancelled invite.

#![allow(clippy::unwrap_used)]

mod sipkit;

use std::sync::Arc;
use std::time::Duration;

use dialtone_core::CallState;
use dialtone_server::Server;
use dialtone_transport_ws::WsTransport;
use sipkit::{Client, Heard, Scratch};
use tokio::sync::mpsc;

/// A push gateway: reports each JSON body POSTed to it.
async fn gateway() -> (String, mpsc::UnboundedReceiver<serde_json::Value>) {
    let (url, mut bodies) = sipkit::http_sink("").await;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(b) = bodies.recv().await {
            let _ = tx.send(serde_json::from_str(&b).unwrap());
        }
    });
    (url, rx)
}

async fn post_binding(srv: &Server, body: &str) -> (u16, serde_json::Value) {
    let a = srv.account();
    let auth = sipkit::Auth::Basic(&a.account_sid, &a.auth_token);
    sipkit::rest(srv.addresses().http, "POST", "/v1/Bindings", auth, "application/json", body).await
}

async fn next_push(rx: &mut mpsc::UnboundedReceiver<serde_json::Value>) -> serde_json::Value {
    tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("a push").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_wakes_an_unregistered_identity_which_joins_with_the_bridge_token() {
    let scratch = Scratch::new("server-push");
    let srv = Server::start(&sipkit::server_config(&scratch)).await.unwrap();
    let (url, mut pushes) = gateway().await;
    let client = |name: &str| {
        let mut c =
            Client::new(name, &srv.addresses().ws_url(), Arc::new(WsTransport::default()), "127.0.0.1");
        c.token = Some(srv.mint_token(name, 600).unwrap());
        c
    };
    let (status, _) =
        post_binding(
            &srv,
            r#"{"identity":"bob","binding_type":"fcm","address":"bob-device-1","gateway_url":"URL"}"#
                .replace("URL", &url)
                .as_str(),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = post_binding(&srv, r#"{"identity":"carol","binding_type":"apn","address":"carol-1","gateway_url":"URL"}"#.replace("URL", &url).as_str()).await;
    assert_eq!(status, 201);
    let (status, err) = post_binding(
        &srv,
        r#"{"identity":"bad name","binding_type":"fcm","address":"x","gateway_url":"http://x"}"#,
    )
    .await;
    assert_eq!((status, err["code"].as_u64()), (400, Some(31105)));
    let (status, err) = post_binding(&srv, "not json").await;
    assert_eq!((status, err["code"].as_u64()), (400, Some(31400)));

    let mut alice = client("alice");
    let mut bob = client("bob");

    // bob has a binding and no registration: the call is pushed.
    let call = alice.connect("client:bob", &[("caller_first_name", "alice")]);
    let push = next_push(&mut pushes).await;
    assert_eq!(push["twi_message_type"], "twilio.voice.call");
    assert_eq!(push["twi_to"], "client:bob");
    assert_eq!(push["twi_from"], "client:alice");
    assert_eq!(push["device_token"], "bob-device-1");
    assert_eq!(push["twi_params"], "caller_first_name=alice");
    assert!(push["twi_bridge_token"].as_str().is_some_and(|t| !t.is_empty()));
    // The app hands the payload to the SDK, which reports an invite; accepting joins.
    bob.voice.update_token(bob.token.as_deref().unwrap());
    assert!(bob.voice.handle_notification(push.to_string().as_str(), bob.delegate()).unwrap());
    let invite = bob.invite(10).await;
    assert_eq!(invite.custom_parameters()["caller_first_name"], "alice");
    let answered = invite.accept(bob.delegate());
    alice.wait_for(15, "connected", |e| matches!(e, Heard::Connected)).await;
    bob.wait_for(15, "connected", |e| matches!(e, Heard::Connected)).await;
    assert_eq!(answered.sid().as_deref(), push["twi_call_sid"].as_str());
    bob.hear_more(3 * 48_000, 10).await;
    dialtone_tests::assert_speech("bob hears the push call", &bob.heard()[12_000..], 48_000, 16_000);
    call.disconnect();
    bob.wait_for(10, "disconnected", |e| matches!(e, Heard::Disconnected(None))).await;

    // A tampered bridge token is refused with 31104.
    let mut carol = client("carol");
    let _call = alice.connect("client:carol", &[]);
    let mut push = next_push(&mut pushes).await;
    let token = push["twi_bridge_token"].as_str().unwrap().to_owned();
    push["twi_bridge_token"] = serde_json::json!(format!("x{token}"));
    carol.voice.update_token(carol.token.as_deref().unwrap());
    assert!(carol.voice.handle_notification(push.to_string().as_str(), carol.delegate()).unwrap());
    let invite = carol.invite(10).await;
    let refused = invite.accept(carol.delegate());
    let failed = carol.wait_for(10, "failure", |e| matches!(e, Heard::FailedToConnect(_))).await;
    assert!(matches!(failed, Heard::FailedToConnect(31104)), "{failed:?}");
    assert_eq!(refused.state(), CallState::Disconnected);

    // The caller hangs up before the answer: the invitee gets a cancel push.
    let mut later = pushes;
    let call = alice.connect("client:carol", &[]);
    loop {
        let p = next_push(&mut later).await;
        if p["twi_message_type"] == "twilio.voice.call" {
            break;
        }
    }
    call.disconnect();
    let cancel = loop {
        let p = next_push(&mut later).await;
        if p["twi_message_type"] == "twilio.voice.cancel" {
            break p;
        }
    };
    assert!(carol.voice.handle_notification(cancel.to_string().as_str(), carol.delegate()).unwrap());
    carol.wait_for(10, "cancelled", |e| matches!(e, Heard::Cancelled(_, 31008))).await;
}

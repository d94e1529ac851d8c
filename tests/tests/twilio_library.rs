//! Twilio's own libraries (PyPI `twilio`) against Dialtone:
//! - its REST client, with the API domain's base URL set to the Dialtone server, lists
//!   the calls (following Twilio's paging links one call per page), fetches one, sends
//!   a user-defined message that reaches the client on that leg, and gets Twilio-shaped
//!   errors (`code`, `message`, `more_info`) as `TwilioRestException`s;
//! - its TwiML builder's output for every verb and noun Dialtone supports is parsed as
//!   it is.

#![allow(clippy::unwrap_used)]

mod sipkit;

use std::sync::Arc;

use dialtone_server::twiml::{self, DialTarget, Verb};
use dialtone_server::Server;
use dialtone_transport_ws::WsTransport;
use serde_json::Value;
use sipkit::{Client, Heard, Scratch};

fn python(script: &str, args: &[&str]) -> Value {
    let path = format!("{}/peers/{script}", env!("CARGO_MANIFEST_DIR"));
    let out =
        std::process::Command::new(dialtone_tests::python()).arg(&path).args(args).output().unwrap_or_else(
            |e| panic!("cannot run {:?} ({e}); scripts/setup installs it", dialtone_tests::python()),
        );
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{script} printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilios_rest_client_lists_calls_and_sends_a_message_through_dialtone() {
    let scratch = Scratch::new("twilio-rest");
    let srv = Server::start(&sipkit::server_config(&scratch)).await.unwrap();
    let acct = srv.account().clone();
    let client = |name: &str| {
        let mut c =
            Client::new(name, &srv.addresses().ws_url(), Arc::new(WsTransport::default()), "127.0.0.1");
        c.token = Some(srv.mint_token(name, 600).unwrap());
        c
    };
    let (mut alice, mut bob) = (client("alice"), client("bob"));
    alice.register().await;
    bob.register().await;
    let (call, invite, _answered) = sipkit::connect_and_answer(&mut alice, &mut bob, "client:bob").await;
    let parent = call.sid().unwrap();
    let child = invite.call_sid().to_owned();

    let base = format!("http://{}", srv.addresses().http);
    // The library blocks; it runs beside the runtime.
    let args = [base, acct.account_sid.clone(), acct.auth_token.clone(), child.clone()];
    let out = tokio::task::spawn_blocking(move || {
        python("twilio_rest.py", &args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap();

    let calls = out["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2, "both legs, one per page: {out}");
    let p = calls.iter().find(|c| c["sid"] == parent.as_str()).expect("the caller's leg");
    let c = calls.iter().find(|c| c["sid"] == child.as_str()).expect("the dialed leg");
    assert_eq!(
        (p["direction"].as_str(), p["from"].as_str(), p["status"].as_str()),
        (Some("inbound"), Some("client:alice"), Some("in-progress"))
    );
    assert_eq!(c["parent_call_sid"], parent.as_str());
    assert_eq!(c["direction"], "outbound-dial");
    assert!(c["start_time"].as_str().unwrap().contains('T'), "the library parsed the date: {c}");
    assert_eq!(out["fetched"]["sid"], child.as_str());
    assert_eq!(out["message"]["call_sid"], child.as_str());
    assert!(out["message"]["sid"].as_str().unwrap().starts_with("KX"));
    assert!(out["message"]["date_created"].as_str().unwrap().contains('T'), "{out}");
    // The message the library sent reaches bob, the client on that leg.
    bob.wait_for(
        10,
        "the library's message",
        |e| matches!(e, Heard::MessageReceived(m) if m.contains("twilio-python")),
    )
    .await;
    assert_eq!(out["missing"]["status"], 404, "{out}");
    assert_eq!(out["missing"]["code"], 31404);
    assert!(out["missing"]["msg"].as_str().unwrap().contains("no such call"), "the error's message: {out}");
    // The error body is Twilio's shape: code, message, more_info, status.
    let (status, e) = sipkit::rest(
        srv.addresses().http,
        "GET",
        &format!("/2010-04-01/Accounts/{}/Calls/CAnone.json", acct.account_sid),
        sipkit::Auth::Basic(&acct.account_sid, &acct.auth_token),
        "",
        "",
    )
    .await;
    assert_eq!((status, e["code"].as_u64(), e["status"].as_u64()), (404, Some(31404), Some(404)), "{e}");
    assert!(e["message"].is_string() && e["more_info"].as_str().unwrap().ends_with("/31404"), "{e}");
    assert_eq!(
        (out["bad_message"]["status"].as_u64(), out["bad_message"]["code"].as_u64()),
        (Some(400), Some(31100)),
        "{out}"
    );
    call.disconnect();
}

#[test]
fn twilios_twiml_builder_output_is_accepted_as_is() {
    let docs = python("twilio_twiml.py", &[]);
    let parse =
        |k: &str| twiml::parse(docs[k].as_str().unwrap()).unwrap_or_else(|e| panic!("{k}: {e}: {}", docs[k]));
    let v = parse("dial_client");
    let Verb::Dial(d) = &v[0] else { panic!("{v:?}") };
    assert_eq!(
        (d.caller_id.as_deref(), d.timeout, d.action.as_deref()),
        (Some("client:alice"), Some(20), Some("/after"))
    );
    assert_eq!(d.method, Some(dialtone_server::webhooks::HookMethod::Get));
    assert!(d.answer_on_bridge);
    assert_eq!(d.targets[0], DialTarget::Client { identity: "bob".into(), params: Default::default() });
    let v = parse("dial_identity_parameters");
    let Verb::Dial(d) = &v[0] else { panic!("{v:?}") };
    let DialTarget::Client { identity, params } = &d.targets[0] else { panic!("{d:?}") };
    assert_eq!(
        (identity.as_str(), params["topic"].as_str(), params["tier"].as_str()),
        ("carol", "billing", "gold")
    );
    let v = parse("dial_number_sip");
    let Verb::Dial(d) = &v[0] else { panic!("{v:?}") };
    assert_eq!(
        d.targets,
        vec![DialTarget::Number("+15551234567".into()), DialTarget::Sip("sip:desk@pbx.example.com".into())]
    );
    assert_eq!(parse("reject_busy"), vec![Verb::Reject { reason: "busy".into() }]);
    assert_eq!(parse("reject"), vec![Verb::Reject { reason: "rejected".into() }]);
    assert_eq!(parse("pause_hangup"), vec![Verb::Pause { length: 2 }, Verb::Hangup]);
}

//! Webhooks as a Twilio application sees them. The application is
//! `tests/peers/twilio_app.py`, serving HTTPS with a certificate of a test CA (given
//! to the server as `webhook_ca_file`), checking every request with Twilio's own
//! `RequestValidator` (PyPI `twilio`) and answering with TwiML from Twilio's own
//! builder: a POSTed voice URL whose `<Dial action method="GET">` is asked with GET, a
//! voice URL asked with GET (`voice_method`), `<Reject>` and `<Pause>` from the
//! builder, and a message subscription's callback. A request with a wrong signature is
//! refused by the same validator, so the checks can fail.

#![allow(clippy::unwrap_used)]

mod sipkit;

use std::time::Duration;

use dialtone_core::config::ApplicationConfig;
use dialtone_core::CallMessage;
use dialtone_server::Server;
use serde_json::Value;
use sipkit::{form, rest, Auth, Client, Heard, Scratch};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

/// The Python application: its port, and the JSON line it prints per request.
struct App {
    _child: tokio::process::Child,
    port: u16,
    lines: mpsc::UnboundedReceiver<Value>,
}

impl App {
    async fn start(auth_token: &str, cert: &std::path::Path, key: &std::path::Path) -> App {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/twilio_app.py");
        let mut child = tokio::process::Command::new(dialtone_tests::python())
            .arg(script)
            .arg(auth_token)
            .arg(cert)
            .arg(key)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {:?} ({e}); scripts/setup installs it", dialtone_tests::python())
            });
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), out.next_line()).await.unwrap().unwrap();
        let first =
            first.expect("the application printed its port (is PyPI twilio installed? scripts/setup)");
        let port = first.strip_prefix("listening ").unwrap().parse().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(l)) = out.next_line().await {
                let _ = tx.send(serde_json::from_str(&l).unwrap());
            }
        });
        App { _child: child, port, lines }
    }

    /// The next request the application saw.
    async fn next(&mut self) -> Value {
        tokio::time::timeout(Duration::from_secs(20), self.lines.recv()).await.expect("a request").unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }
}

fn client(server: &Server, identity: &str, app: Option<&str>) -> Client {
    sipkit::server_client(server, identity, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilios_request_validator_accepts_every_webhook_over_https() {
    let scratch = Scratch::new("webhooks");
    let ca = sipkit::write_test_pki(&scratch.0);
    let mut cfg = sipkit::server_config(&scratch);
    // The account's auth token is what the application validates with.
    let auth_token = "0123456789abcdef0123456789abcdef".to_owned();
    cfg.account_sid = Some(format!("AC{}", "a".repeat(32)));
    cfg.auth_token = Some(auth_token.clone());
    cfg.api_key_sid = Some(format!("SK{}", "b".repeat(32)));
    cfg.api_key_secret = Some("c".repeat(32));
    cfg.webhook_ca_file = Some(ca);
    let mut app = App::start(&auth_token, &scratch.0.join("cert.pem"), &scratch.0.join("key.pem")).await;
    cfg.applications = vec![
        ApplicationConfig::with_voice_url("APpost", app.url("/voice")),
        ApplicationConfig::with_voice_url("APget", app.url("/voice-get")).with_voice_method("GET"),
        ApplicationConfig::with_voice_url("APreject", app.url("/reject")),
        ApplicationConfig::with_voice_url("APpause", app.url("/pause")),
    ];
    let srv = Server::start(&cfg).await.unwrap();
    let acct = srv.account().clone();
    let mut bob = client(&srv, "bob", None);
    bob.register().await;

    // POST voice URL: the validator accepts it; its TwiML (from Twilio's builder)
    // dials bob; the dial's action is asked with GET, and accepted too.
    let mut alice = client(&srv, "alice", Some("APpost"));
    alice.register().await;
    let call = alice.connect("support", &[("topic", "billing")]);
    let voice = app.next().await;
    assert_eq!((voice["method"].as_str(), voice["path"].as_str()), (Some("POST"), Some("/voice")));
    assert_eq!(voice["valid"], true, "{voice}");
    assert_eq!(voice["params"]["From"], "client:alice");
    assert_eq!(voice["params"]["To"], "client:support");
    assert_eq!(voice["params"]["AccountSid"], acct.account_sid.as_str());
    assert_eq!(voice["params"]["Direction"], "inbound");
    assert_eq!(voice["params"]["topic"], "billing");
    let invite = bob.invite(10).await;
    let bob_call = invite.accept(bob.delegate());
    alice.wait_for(10, "connected", |e| matches!(e, Heard::Connected)).await;

    // A message subscription's callback is signed the same way.
    let sid = call.sid().unwrap();
    let subs =
        format!("/2010-04-01/Accounts/{}/Calls/{sid}/UserDefinedMessageSubscriptions.json", acct.account_sid);
    let basic = Auth::Basic(&acct.account_sid, &acct.auth_token);
    let (status, sub) = rest(
        srv.addresses().http,
        "POST",
        &subs,
        basic,
        sipkit::FORM,
        &form(&[("Callback", &app.url("/messages"))]),
    )
    .await;
    assert_eq!(status, 201, "{sub}");
    call.send_message(CallMessage::new(r#"{"hello":"app"}"#));
    let hook = app.next().await;
    assert_eq!(
        (hook["method"].as_str(), hook["path"].as_str(), hook["valid"].as_bool()),
        (Some("POST"), Some("/messages"), Some(true)),
        "{hook}"
    );
    assert_eq!(hook["params"]["Content"], r#"{"hello":"app"}"#);
    assert_eq!(hook["params"]["CallSid"], sid.as_str());

    bob_call.disconnect();
    let after = app.next().await;
    assert_eq!((after["method"].as_str(), after["path"].as_str()), (Some("GET"), Some("/after")), "{after}");
    assert_eq!(after["valid"], true, "{after}");
    assert_eq!(after["params"]["DialCallStatus"], "completed");
    assert_eq!(after["params"]["CallSid"], sid.as_str());
    alice.wait_for(10, "disconnected", |e| matches!(e, Heard::Disconnected(_))).await;

    // A GET voice URL: the parameters in the query, the signature over the whole URL.
    let mut carol = client(&srv, "carol", Some("APget"));
    carol.register().await;
    let to_bob = carol.connect("client:bob", &[]);
    let voice = app.next().await;
    assert_eq!(
        (voice["method"].as_str(), voice["path"].as_str()),
        (Some("GET"), Some("/voice-get")),
        "{voice}"
    );
    assert_eq!(voice["valid"], true, "{voice}");
    assert_eq!(voice["params"]["From"], "client:carol");
    let invite = bob.invite(10).await;
    invite.reject();
    // The relative action resolves against the voice URL and is POSTed (the default).
    let after = app.next().await;
    assert_eq!(
        (after["method"].as_str(), after["path"].as_str()),
        (Some("POST"), Some("/after-get")),
        "{after}"
    );
    assert_eq!(
        (after["valid"].as_bool(), after["params"]["DialCallStatus"].as_str()),
        (Some(true), Some("busy"))
    );
    carol
        .wait_for(10, "the call ends", |e| matches!(e, Heard::Disconnected(_) | Heard::FailedToConnect(_)))
        .await;
    drop(to_bob);

    // <Reject reason="busy"/> from the builder is a 486 with 31486.
    let mut dave = client(&srv, "dave", Some("APreject"));
    dave.register().await;
    let _c = dave.connect("anyone", &[]);
    assert_eq!(app.next().await["valid"], true);
    let failed = dave.wait_for(10, "rejected", |e| matches!(e, Heard::FailedToConnect(_))).await;
    assert!(matches!(failed, Heard::FailedToConnect(31486)), "{failed:?}");

    // <Pause length="1"/> then <Dial>: bob rings after the pause.
    let erin = client(&srv, "erin", Some("APpause"));
    erin.register().await;
    let _c = erin.connect("anyone", &[]);
    assert_eq!(app.next().await["valid"], true);
    let invite = bob.invite(10).await;
    invite.reject();

    // The validator is really checking: a request signed with another token is refused.
    let http = dialtone_http::Client::new(&dialtone_http::Settings {
        ca_file: Some(scratch.0.join("ca.pem")),
        ..Default::default()
    })
    .unwrap();
    let params = vec![("CallSid".to_owned(), "CAforged".to_owned())];
    let forged =
        dialtone_server::webhooks::Webhooks::new(http, "not-the-auth-token", Duration::from_secs(10));
    let r =
        forged.send(dialtone_server::webhooks::HookMethod::Post, &app.url("/voice"), &params).await.unwrap();
    assert_eq!(r.status, 403);
    let seen = app.next().await;
    assert_eq!(
        (seen["valid"].as_bool(), seen["params"]["CallSid"].as_str()),
        (Some(false), Some("CAforged"))
    );
}

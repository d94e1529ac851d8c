//! Push through APNs and FCM as they document themselves, to local HTTP/2 TLS servers
//! the test starts (trusted through the server's `webhook_ca_file`). Credentials are
//! made over the REST API from keys `openssl` generates (an APNs `.p8` EC key, an FCM
//! service account's RSA key). The local APNs checks each request's path, headers
//! (`apns-push-type: voip`, `apns-topic: <bundle>.voip`, priority 10, expiration 0)
//! and its ES256 provider token against the public key; the local FCM checks the
//! OAuth2 JWT assertion (RS256, `iss`, `scope`, `aud`), the access token, and the
//! high-priority data message. Both answer success, the device is gone (APNs `410
//! Unregistered`, FCM `404 UNREGISTERED`: the binding is removed), or `429` once
//! (retried). What each provider received goes to `Voice::handle_notification`, which
//! reports the invite with its custom parameters, and the cancel as a cancelled invite.

#![allow(clippy::unwrap_used)]

mod providers;
mod sipkit;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dialtone_server::Server;
use dialtone_transport_ws::WsTransport;
use providers::{apns_keypair, fcm_keypair, next, providers};
use serde_json::{json, Value};
use sipkit::{form, rest, Auth, Client, Heard, Scratch};

/// Verifies a JWT with `public` (PEM) for `alg`; its header and claims.
fn verify(
    token: &str,
    public: &str,
    alg: jsonwebtoken::Algorithm,
    aud: Option<&str>,
) -> (jsonwebtoken::Header, Value) {
    let key = match alg {
        jsonwebtoken::Algorithm::ES256 => jsonwebtoken::DecodingKey::from_ec_pem(public.as_bytes()).unwrap(),
        _ => jsonwebtoken::DecodingKey::from_rsa_pem(public.as_bytes()).unwrap(),
    };
    let mut v = jsonwebtoken::Validation::new(alg);
    v.required_spec_claims.clear();
    v.validate_exp = aud.is_some();
    match aud {
        Some(a) => v.set_audience(&[a]),
        None => v.validate_aud = false,
    }
    let data = jsonwebtoken::decode::<Value>(token, &key, &v)
        .unwrap_or_else(|e| panic!("the JWT does not verify: {e}"));
    (data.header, data.claims)
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_and_fcm_get_what_they_document_and_their_answers_are_kept() {
    let scratch = Scratch::new("push-providers");
    let ca = sipkit::write_test_pki(&scratch.0);
    let (apns_key, apns_public) = apns_keypair(&scratch.0);
    let (sa_key, sa_public) = fcm_keypair(&scratch.0);
    let (addr, mut got) = providers(&scratch.0.join("cert.pem"), &scratch.0.join("key.pem")).await;
    let base = format!("https://localhost:{}", addr.port());
    let mut cfg = sipkit::server_config(&scratch);
    cfg.webhook_ca_file = Some(ca);
    cfg.apns_sandbox_url = base.clone();
    cfg.apns_url = "https://127.0.0.1:9".into(); // production is not used: the credential is sandbox
    cfg.fcm_url = base.clone();
    let srv = Server::start(&cfg).await.unwrap();
    let acct = srv.account().clone();
    let http = srv.addresses().http;
    let basic = || Auth::Basic(&acct.account_sid, &acct.auth_token);

    // Credentials over REST; their keys are never shown back.
    let apn = form(&[
        ("Type", "apn"),
        ("FriendlyName", "iOS app"),
        ("PrivateKey", &apns_key),
        ("KeyId", "ABC123DEFG"),
        ("TeamId", "TEAM456XYZ"),
        ("BundleId", "com.example.voice"),
        ("Sandbox", "true"),
    ]);
    let (status, apn) = rest(http, "POST", "/v1/Credentials", basic(), sipkit::FORM, &apn).await;
    assert_eq!(status, 201, "{apn}");
    assert!(
        apn["sid"].as_str().unwrap().starts_with("CR")
            && apn["sandbox"] == true
            && apn.get("secret").is_none()
    );
    let token_uri = format!("{base}/token");
    let account = json!({
        "type": "service_account",
        "project_id": "dialtone-test",
        "private_key_id": "key-1",
        "private_key": sa_key,
        "client_email": "push@dialtone-test.iam.gserviceaccount.com",
        "token_uri": token_uri,
    });
    let fcm = form(&[("Type", "fcm"), ("FriendlyName", "Android app"), ("Secret", &account.to_string())]);
    let (status, fcm) = rest(http, "POST", "/v1/Credentials", basic(), sipkit::FORM, &fcm).await;
    assert_eq!(status, 201, "{fcm}");
    let bad =
        form(&[("Type", "apn"), ("PrivateKey", "junk"), ("KeyId", "k"), ("TeamId", "t"), ("BundleId", "b")]);
    let (status, e) = rest(http, "POST", "/v1/Credentials", basic(), sipkit::FORM, &bad).await;
    assert_eq!((status, e["code"].as_u64()), (400, Some(31400)), "{e}");
    let (_, list) = rest(http, "GET", "/v1/Credentials", basic(), "", "").await;
    assert_eq!(list["credentials"].as_array().unwrap().len(), 2);

    let bind = |identity: &str, kind: &str, device: &str, cred: &Value| {
        json!({"identity": identity, "binding_type": kind, "address": device, "credential_sid": cred["sid"]})
            .to_string()
    };
    let mut bindings = HashMap::new();
    for (who, kind, device, cred) in [
        ("carol", "apn", "good-carol-iphone", &apn),
        ("carol", "fcm", "good-carol-pixel", &fcm),
        ("dave", "apn", "gone-dave-iphone", &apn),
        ("erin", "fcm", "busy-erin-pixel", &fcm),
    ] {
        let (status, b) =
            rest(http, "POST", "/v1/Bindings", basic(), "application/json", &bind(who, kind, device, cred))
                .await;
        assert_eq!(status, 201, "{b}");
        bindings.insert(device, b["sid"].as_str().unwrap().to_owned());
    }
    let (status, e) =
        rest(http, "POST", "/v1/Bindings", basic(), "application/json", &bind("x", "fcm", "d", &apn)).await;
    assert_eq!(status, 400, "a credential of another type: {e}");
    let (status, e) =
        rest(http, "POST", "/v1/Bindings", basic(), "application/json", &bind("x", "apn", "../../x", &apn))
            .await;
    assert_eq!((status, e["code"].as_u64()), (400, Some(31100)), "not a device token: {e}");

    let client = |name: &str| {
        let mut c =
            Client::new(name, &srv.addresses().ws_url(), Arc::new(WsTransport::default()), "127.0.0.1");
        c.token = Some(srv.mint_token(name, 600).unwrap());
        c
    };
    let alice = client("alice");
    let mut carol = client("carol");
    carol.voice.update_token(carol.token.as_deref().unwrap());

    // A call to carol pushes to both her devices.
    let call = alice.connect("client:carol", &[("topic", "billing")]);
    let mut apns_body = None;
    let mut fcm_data = None;
    let mut assertion_seen = false;
    for _ in 0..3 {
        let r = next(&mut got, "a provider request").await;
        if r.path.starts_with("/3/device/") {
            assert_eq!(r.path, "/3/device/good-carol-iphone");
            assert_eq!(r.version, "HTTP/2.0");
            assert_eq!(r.headers["apns-push-type"], "voip");
            assert_eq!(r.headers["apns-topic"], "com.example.voice.voip");
            assert_eq!(r.headers["apns-priority"], "10");
            assert_eq!(r.headers["apns-expiration"], "0");
            let jwt = r.headers["authorization"].strip_prefix("bearer ").expect("a bearer provider token");
            let (header, claims) = verify(jwt, &apns_public, jsonwebtoken::Algorithm::ES256, None);
            assert_eq!(header.kid.as_deref(), Some("ABC123DEFG"));
            assert_eq!(claims["iss"], "TEAM456XYZ");
            assert!((claims["iat"].as_i64().unwrap() - now_secs()).abs() < 120, "{claims}");
            apns_body = Some(r.body);
        } else if r.path == "/token" {
            let f = sipkit::parse_form(&r.body);
            assert_eq!(f["grant_type"], "urn:ietf:params:oauth:grant-type:jwt-bearer");
            let (header, claims) =
                verify(&f["assertion"], &sa_public, jsonwebtoken::Algorithm::RS256, Some(&token_uri));
            assert_eq!(header.kid.as_deref(), Some("key-1"));
            assert_eq!(claims["iss"], "push@dialtone-test.iam.gserviceaccount.com");
            assert_eq!(claims["scope"], "https://www.googleapis.com/auth/firebase.messaging");
            assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 3600);
            assertion_seen = true;
        } else {
            assert_eq!(r.path, "/v1/projects/dialtone-test/messages:send");
            assert!(assertion_seen, "the access token comes first");
            assert_eq!(r.headers["authorization"], "Bearer ya29.local");
            let m: Value = serde_json::from_str(&r.body).unwrap();
            assert_eq!(m["message"]["token"], "good-carol-pixel");
            assert_eq!(m["message"]["android"]["priority"], "high");
            fcm_data = Some(m["message"]["data"].clone());
        }
    }
    // What APNs delivered reaches the SDK as the invite, with its parameters.
    let apns_body: Value = serde_json::from_str(&apns_body.expect("an APNs push")).unwrap();
    assert_eq!(apns_body["twi_message_type"], "twilio.voice.call");
    assert!(apns_body.get("device_token").is_none(), "the provider gets the twi_* keys only: {apns_body}");
    assert!(carol.voice.handle_notification(apns_body.to_string().as_str(), carol.delegate()).unwrap());
    let invite = carol.invite(10).await;
    assert_eq!(invite.custom_parameters()["topic"], "billing");
    assert_eq!(invite.from(), Some("client:alice"));
    // So does FCM's data message (a string map, as Android hands it over).
    let data: HashMap<String, String> = fcm_data
        .expect("an FCM push")
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(data["twi_call_sid"], invite.call_sid());
    let mut carol2 = client("carol");
    carol2.voice.update_token(carol2.token.as_deref().unwrap());
    assert!(carol2.voice.handle_notification(data, carol2.delegate()).unwrap());
    let invite2 = carol2.invite(10).await;
    assert_eq!(invite2.custom_parameters()["topic"], "billing");

    // The caller hangs up: both devices get the cancel, which the SDK reports as a
    // cancelled invite.
    call.disconnect();
    let mut cancels = 0;
    while cancels < 2 {
        let r = next(&mut got, "a cancel push").await;
        let body: Value = serde_json::from_str(&r.body).unwrap();
        if r.path.starts_with("/3/device/") {
            assert_eq!(body["twi_message_type"], "twilio.voice.cancel");
            assert!(carol.voice.handle_notification(body.to_string().as_str(), carol.delegate()).unwrap());
            carol.wait_for(10, "cancelled", |e| matches!(e, Heard::Cancelled(..))).await;
            cancels += 1;
        } else if r.path.ends_with("/messages:send") {
            assert_eq!(body["message"]["data"]["twi_message_type"], "twilio.voice.cancel");
            cancels += 1;
        }
    }

    // dave's iPhone is gone: APNs says 410 Unregistered, and his binding is removed.
    let _c = alice.connect("client:dave", &[]);
    let r = next(&mut got, "dave's push").await;
    assert_eq!(r.path, "/3/device/gone-dave-iphone");
    let results = |b: String| async move {
        for _ in 0..100 {
            let (_, v) = rest(http, "GET", &format!("/v1/PushResults?BindingSid={b}"), basic(), "", "").await;
            if let Some(r) = v["push_results"].as_array().and_then(|a| a.first()).cloned() {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no push result for {b}");
    };
    let dave = results(bindings["gone-dave-iphone"].clone()).await;
    assert_eq!(
        (dave["outcome"].as_str(), dave["status"].as_i64(), dave["reason"].as_str()),
        (Some("removed"), Some(410), Some("Unregistered")),
        "{dave}"
    );
    let (_, left) = rest(http, "GET", "/v1/Bindings?Identity=dave", basic(), "", "").await;
    assert_eq!(left["bindings"].as_array().unwrap().len(), 0, "{left}");

    // erin's phone is throttled once (429), then delivered on the retry.
    let _c = alice.connect("client:erin", &[]);
    let mut sends = 0;
    while sends < 2 {
        let r = next(&mut got, "erin's push").await;
        if r.path.ends_with("/messages:send") {
            sends += 1;
        }
    }
    let erin = results(bindings["busy-erin-pixel"].clone()).await;
    assert_eq!(
        (erin["outcome"].as_str(), erin["attempts"].as_i64(), erin["provider"].as_str()),
        (Some("delivered"), Some(2), Some("fcm")),
        "{erin}"
    );
    let carol_ios = results(bindings["good-carol-iphone"].clone()).await;
    assert_eq!((carol_ios["outcome"].as_str(), carol_ios["status"].as_i64()), (Some("delivered"), Some(200)));
}

/// A device registered the way a Twilio Voice app registers it: `Voice::register` with
/// its device token, and an access token whose voice grant names the push credential
/// (`push_credential_sid`). The REGISTER carries the device token (RFC 8599 `pn-prid`)
/// and the server binds it: once the app is gone, a call to it is pushed to that
/// device; a token without the grant, or naming no credential, fails the registration
/// with 20106; `Voice::unregister` with the device token removes the binding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_registered_through_the_sdk_is_woken_by_push() {
    let scratch = Scratch::new("push-sdk");
    let ca = sipkit::write_test_pki(&scratch.0);
    let (apns_key, _) = apns_keypair(&scratch.0);
    let (addr, mut got) = providers(&scratch.0.join("cert.pem"), &scratch.0.join("key.pem")).await;
    let mut cfg = sipkit::server_config(&scratch);
    cfg.webhook_ca_file = Some(ca);
    cfg.apns_sandbox_url = format!("https://localhost:{}", addr.port());
    let srv = Server::start(&cfg).await.unwrap();
    let acct = srv.account().clone();
    let http = srv.addresses().http;
    let basic = || Auth::Basic(&acct.account_sid, &acct.auth_token);
    let apn = form(&[
        ("Type", "apn"),
        ("PrivateKey", &apns_key),
        ("KeyId", "ABC123DEFG"),
        ("TeamId", "TEAM456XYZ"),
        ("BundleId", "com.example.voice"),
        ("Sandbox", "true"),
    ]);
    let (status, apn) = rest(http, "POST", "/v1/Credentials", basic(), sipkit::FORM, &apn).await;
    assert_eq!(status, 201, "{apn}");
    let credential = apn["sid"].as_str().unwrap();
    let bindings = || async {
        let (_, v) = rest(http, "GET", "/v1/Bindings?Identity=frank", basic(), "", "").await;
        v["bindings"].as_array().unwrap().clone()
    };

    // frank's app registers with its device token, through a connection the test cuts.
    let relay = sipkit::Relay::start(srv.addresses().ws).await;
    let frank =
        Client::new("frank", &format!("ws://{}", relay.addr), Arc::new(WsTransport::default()), "127.0.0.1");
    let token = dialtone_server::token::mint_voice(&acct, "frank", 600, None, Some(credential)).unwrap();
    frank.voice.register(&token, "good-frank-iphone").await.unwrap();
    let bound = bindings().await;
    assert_eq!(bound.len(), 1, "{bound:?}");
    assert_eq!(
        (
            bound[0]["binding_type"].as_str(),
            bound[0]["address"].as_str(),
            bound[0]["credential_sid"].as_str()
        ),
        (Some("apn"), Some("good-frank-iphone"), Some(credential))
    );
    // Registering again keeps the binding as it is.
    frank.voice.register(&token, "good-frank-iphone").await.unwrap();
    assert_eq!(bindings().await[0]["sid"], bound[0]["sid"]);

    // The app goes away: a call to frank wakes his iPhone.
    relay.set_refusing(true);
    relay.cut();
    for _ in 0..100 {
        let (_, regs) = rest(http, "GET", "/v1/Registrations", basic(), "", "").await;
        if regs["registrations"].get("frank").is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let alice = sipkit::server_client(&srv, "alice", None);
    let call = alice.connect("client:frank", &[("topic", "sdk")]);
    let r = next(&mut got, "frank's push").await;
    assert_eq!(r.path, "/3/device/good-frank-iphone");
    let body: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        (body["twi_message_type"].as_str(), body["twi_to"].as_str()),
        (Some("twilio.voice.call"), Some("client:frank"))
    );
    call.disconnect();
    drop(frank);

    // A device token needs the grant, and the grant a credential that exists.
    let grace = sipkit::server_client(&srv, "grace", None);
    let plain = srv.mint_token("grace", 600).unwrap();
    let e = grace.voice.register(&plain, "good-grace-pixel").await.unwrap_err();
    assert_eq!(e.code(), 20106, "{e}");
    let nowhere =
        dialtone_server::token::mint_voice(&acct, "grace", 600, None, Some(&format!("CR{}", "0".repeat(32))))
            .unwrap();
    let e = grace.voice.register(&nowhere, "good-grace-pixel").await.unwrap_err();
    assert_eq!(e.code(), 20106, "{e}");
    let e = grace.voice.register(&plain, "not a device token").await.unwrap_err();
    assert_eq!(e.code(), 31100, "{e}");

    // Unregistering with the device token removes the binding.
    let frank = sipkit::server_client(&srv, "frank", None);
    frank.voice.register(&token, "good-frank-iphone").await.unwrap();
    frank.voice.unregister(&token, "good-frank-iphone").await.unwrap();
    assert!(bindings().await.is_empty(), "the binding is gone");
}

//! Push providers: how a binding's push reaches its device.
//!
//! - A binding with an `apn` credential goes to **APNs** over HTTP/2 with token
//!   authentication: an ES256 JWT (`kid` the key ID, `iss` the team ID, `iat`), made
//!   from the credential's `.p8` key and used for 50 minutes (APNs refuses one older
//!   than an hour). The request is `POST /3/device/<token>` with `apns-push-type:
//!   voip`, `apns-topic: <bundle>.voip`, `apns-priority: 10`, `apns-expiration: 0`, and
//!   the `twi_*` payload as its body; to the sandbox host when the credential says so.
//! - A binding with an `fcm` credential goes to **FCM HTTP v1**: an OAuth2 access token
//!   is got from the service account's `token_uri` with an RS256 JWT assertion
//!   (`iss` the client email, `scope` firebase.messaging, `aud` the token URI) and kept
//!   until a minute before it expires; the message is a high-priority data message
//!   whose data are the `twi_*` keys.
//! - Any other binding is POSTed the payload at its `gateway_url` (a self-hosted relay).
//!
//! Answers: a device the provider says is gone (APNs `410`, or `400 BadDeviceToken`;
//! FCM `404 UNREGISTERED`) removes the binding. `429` and `5xx` are tried twice more,
//! each after the provider's `Retry-After` (at most 5 s) or 1 s; a transport failure
//! after 1 s, then 2 s. Each push's outcome is recorded with the provider's
//! status and reason (`GET /v1/PushResults`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dialtone_http::{Client, Method, Request, Response};
use serde_json::{json, Value};

use crate::store::{now_ms, Binding, Credential, PushResult, Store};

/// How long an APNs provider token is used (APNs takes one for up to an hour).
const APNS_TOKEN_LIFE: Duration = Duration::from_secs(50 * 60);

/// Where the providers are.
#[derive(Clone, Debug)]
pub(crate) struct ProviderUrls {
    pub(crate) apns: String,
    pub(crate) apns_sandbox: String,
    pub(crate) fcm: String,
}

/// Sends pushes (cheap to clone: clones share the token caches).
#[derive(Clone)]
pub(crate) struct Pusher {
    http: Client,
    store: Store,
    account_sid: String,
    urls: ProviderUrls,
    /// Provider tokens by credential SID: the token and until when it is used.
    tokens: Arc<Mutex<HashMap<String, (String, Instant)>>>,
}

/// How one attempt went.
enum Attempt {
    Delivered,
    /// The device is gone: remove the binding.
    Gone(String),
    /// Worth another try (after this long).
    Retry(String, Duration),
    /// Refused for good.
    Refused(String),
}

impl Pusher {
    pub(crate) fn new(http: Client, store: Store, account_sid: String, urls: ProviderUrls) -> Pusher {
        Pusher { http, store, account_sid, urls, tokens: Arc::default() }
    }

    /// Pushes `payload` to `binding`'s device, then records the outcome.
    pub(crate) async fn deliver(&self, binding: &Binding, payload: &Value) {
        let credential = match &binding.credential_sid {
            Some(c) => match self.store.credentials(&self.account_sid, Some(c)).await {
                Ok(mut v) if !v.is_empty() => Some(v.remove(0)),
                Ok(_) => {
                    return self.record(binding, "gateway", "refused", 0, "the credential is gone", 0).await
                }
                Err(e) => return tracing::error!(error = %e, "cannot read a push credential"),
            },
            None => None,
        };
        let provider = credential.as_ref().map_or("gateway", |c| c.credential_type.as_str()).to_owned();
        let mut status = 0;
        let mut reason = String::new();
        for attempt in 1..=3 {
            let result = match &credential {
                Some(c) if c.credential_type == "apn" => self.apns(c, binding, payload).await,
                Some(c) => self.fcm(c, binding, payload).await,
                None => {
                    let r = Request::new(Method::Post, binding.gateway_url.as_str())
                        .body("application/json", payload.to_string());
                    self.http.send(r).await
                }
            };
            let verdict = match result {
                Ok(r) => {
                    status = i64::from(r.status);
                    let (v, why) = judge(&provider, &r);
                    reason = why;
                    v
                }
                Err(e) => {
                    reason = e.to_string();
                    if e.is_transient() {
                        Attempt::Retry(reason.clone(), Duration::from_secs(attempt))
                    } else {
                        Attempt::Refused(reason.clone())
                    }
                }
            };
            match verdict {
                Attempt::Delivered => {
                    tracing::info!(binding = %binding.sid, %provider, attempt, "pushed");
                    return self.record(binding, &provider, "delivered", status, &reason, attempt).await;
                }
                Attempt::Gone(why) => {
                    tracing::info!(binding = %binding.sid, %provider, status, reason = %why, "the device is gone; its binding is removed");
                    if let Err(e) = self.store.delete_binding(&binding.sid).await {
                        tracing::error!(error = %e, "cannot remove a binding");
                    }
                    return self.record(binding, &provider, "removed", status, &why, attempt).await;
                }
                Attempt::Refused(why) => {
                    tracing::warn!(binding = %binding.sid, %provider, status, reason = %why, "the push was refused");
                    return self.record(binding, &provider, "refused", status, &why, attempt).await;
                }
                Attempt::Retry(why, wait) if attempt < 3 => {
                    tracing::debug!(binding = %binding.sid, %provider, status, reason = %why, "push: trying again");
                    tokio::time::sleep(wait).await;
                }
                Attempt::Retry(..) => {}
            }
        }
        let outcome = if status == 429 { "throttled" } else { "failed" };
        tracing::warn!(binding = %binding.sid, %provider, status, %reason, "the push failed after 3 tries");
        self.record(binding, &provider, outcome, status, &reason, 3).await;
    }

    async fn record(
        &self,
        b: &Binding,
        provider: &str,
        outcome: &str,
        status: i64,
        reason: &str,
        attempts: u64,
    ) {
        let r = PushResult {
            sid: crate::accounts::new_sid("NO"),
            binding_sid: b.sid.clone(),
            provider: provider.to_owned(),
            outcome: outcome.to_owned(),
            status,
            reason: reason.to_owned(),
            attempts: i64::try_from(attempts).unwrap_or(i64::MAX),
            at: now_ms(),
        };
        if let Err(e) = self.store.add_push_result(&r).await {
            tracing::error!(error = %e, "cannot record a push result");
        }
    }

    async fn apns(
        &self,
        c: &Credential,
        b: &Binding,
        payload: &Value,
    ) -> Result<Response, dialtone_http::HttpError> {
        let key: Value = serde_json::from_str(&c.secret).unwrap_or_default();
        let field = |k: &str| key[k].as_str().unwrap_or_default().to_owned();
        let jwt = match self.cached(&c.sid) {
            Some(t) => t,
            None => {
                let header = jsonwebtoken::Header {
                    alg: jsonwebtoken::Algorithm::ES256,
                    kid: Some(field("key_id")),
                    ..Default::default()
                };
                let claims = json!({"iss": field("team_id"), "iat": now_ms() / 1000});
                let token = jsonwebtoken::EncodingKey::from_ec_pem(field("private_key").as_bytes())
                    .and_then(|k| jsonwebtoken::encode(&header, &claims, &k))
                    .map_err(|e| {
                        dialtone_http::HttpError::Setup(format!("the APNs key of {}: {e}", c.sid))
                    })?;
                self.keep(&c.sid, &token, APNS_TOKEN_LIFE);
                token
            }
        };
        let base = if c.sandbox { &self.urls.apns_sandbox } else { &self.urls.apns };
        let body = twi_only(payload);
        let r = Request::new(Method::Post, format!("{}/3/device/{}", base.trim_end_matches('/'), b.address))
            .header("authorization", format!("bearer {jwt}"))
            .header("apns-push-type", "voip")
            .header("apns-topic", format!("{}.voip", field("bundle_id")))
            .header("apns-priority", "10")
            .header("apns-expiration", "0")
            .body("application/json", body.to_string());
        self.http.send(r).await
    }

    async fn fcm(
        &self,
        c: &Credential,
        b: &Binding,
        payload: &Value,
    ) -> Result<Response, dialtone_http::HttpError> {
        let account: Value = serde_json::from_str(&c.secret).unwrap_or_default();
        let field = |k: &str| account[k].as_str().unwrap_or_default().to_owned();
        let setup = |m: String| dialtone_http::HttpError::Setup(m);
        let access = match self.cached(&c.sid) {
            Some(t) => t,
            None => {
                let token_uri = field("token_uri");
                let now = now_ms() / 1000;
                let header = jsonwebtoken::Header {
                    alg: jsonwebtoken::Algorithm::RS256,
                    kid: Some(field("private_key_id")),
                    ..Default::default()
                };
                let claims = json!({
                    "iss": field("client_email"),
                    "scope": "https://www.googleapis.com/auth/firebase.messaging",
                    "aud": token_uri,
                    "iat": now,
                    "exp": now + 3600,
                });
                let assertion = jsonwebtoken::EncodingKey::from_rsa_pem(field("private_key").as_bytes())
                    .and_then(|k| jsonwebtoken::encode(&header, &claims, &k))
                    .map_err(|e| setup(format!("the FCM service account of {}: {e}", c.sid)))?;
                let form = format!(
                    "grant_type={}&assertion={assertion}",
                    percent_encoding::utf8_percent_encode(
                        "urn:ietf:params:oauth:grant-type:jwt-bearer",
                        percent_encoding::NON_ALPHANUMERIC
                    )
                );
                let r = self
                    .http
                    .send(
                        Request::new(Method::Post, token_uri.as_str())
                            .body("application/x-www-form-urlencoded", form),
                    )
                    .await?;
                if !r.is_success() {
                    // The provider's refusal of the credential is the push's answer.
                    return Ok(r);
                }
                let t: Value = serde_json::from_slice(&r.body).unwrap_or_default();
                let Some(access) = t["access_token"].as_str().map(str::to_owned) else {
                    return Err(setup(format!("{token_uri} gave no access_token")));
                };
                let life = t["expires_in"].as_u64().unwrap_or(3600).saturating_sub(60).max(1);
                self.keep(&c.sid, &access, Duration::from_secs(life));
                access
            }
        };
        let data: serde_json::Map<String, Value> = twi_only(payload)
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        (k.clone(), Value::String(v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let body = json!({"message": {"token": b.address, "data": data, "android": {"priority": "high"}}});
        let url = format!(
            "{}/v1/projects/{}/messages:send",
            self.urls.fcm.trim_end_matches('/'),
            field("project_id")
        );
        let r = self
            .http
            .send(
                Request::new(Method::Post, url)
                    .header("authorization", format!("Bearer {access}"))
                    .body("application/json", body.to_string()),
            )
            .await?;
        if r.status == 401 {
            // A revoked access token: the next attempt gets a new one.
            self.tokens.lock().unwrap_or_else(|p| p.into_inner()).remove(&c.sid);
        }
        Ok(r)
    }

    fn cached(&self, sid: &str) -> Option<String> {
        let t = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        t.get(sid).filter(|(_, until)| Instant::now() < *until).map(|(t, _)| t.clone())
    }

    fn keep(&self, sid: &str, token: &str, life: Duration) {
        let mut t = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        t.insert(sid.to_owned(), (token.to_owned(), Instant::now() + life));
    }
}

/// The payload's `twi_*` keys only (what the SDK reads): the binding's own fields stay
/// with the server.
fn twi_only(payload: &Value) -> Value {
    match payload.as_object() {
        Some(m) => Value::Object(
            m.iter().filter(|(k, _)| k.starts_with("twi_")).map(|(k, v)| (k.clone(), v.clone())).collect(),
        ),
        None => payload.clone(),
    }
}

/// What a provider's answer means.
fn judge(provider: &str, r: &Response) -> (Attempt, String) {
    let body: Value = serde_json::from_slice(&r.body).unwrap_or_default();
    let reason = match provider {
        "apn" => body["reason"].as_str().unwrap_or_default().to_owned(),
        "fcm" => body["error"]["details"]
            .as_array()
            .and_then(|d| d.iter().find_map(|x| x["errorCode"].as_str()))
            .or_else(|| body["error"]["status"].as_str())
            .unwrap_or_default()
            .to_owned(),
        _ => String::new(),
    };
    let retry_after = r
        .header("retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(5)));
    let why = if reason.is_empty() { format!("HTTP {}", r.status) } else { reason.clone() };
    let verdict = match (provider, r.status) {
        (_, 200..=299) => Attempt::Delivered,
        ("apn", 410) => Attempt::Gone(why.clone()),
        ("apn", 400) if reason == "BadDeviceToken" || reason == "DeviceTokenNotForTopic" => {
            Attempt::Gone(why.clone())
        }
        ("fcm", 404) if reason == "UNREGISTERED" => Attempt::Gone(why.clone()),
        (_, 429) | (_, 500..=599) => {
            Attempt::Retry(why.clone(), retry_after.unwrap_or(Duration::from_secs(1)))
        }
        ("fcm", 401) => Attempt::Retry(why.clone(), Duration::ZERO),
        _ => Attempt::Refused(why.clone()),
    };
    (verdict, why)
}

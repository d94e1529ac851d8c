//! The REST API (axum), authenticated with the account SID and auth token (HTTP Basic),
//! answering bad requests with JSON errors that carry catalogue codes.
//!
//! - `GET /healthz`
//! - `GET /2010-04-01/Accounts/{AccountSid}/Calls.json` (newest first, `?PageSize=`)
//! - `GET /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`
//! - `GET /v1/Registrations` (identities with a live registration and their devices)
//! - `POST /v1/Bindings` (JSON: identity, binding_type, address, and a gateway_url
//!   or a credential_sid), `GET /v1/Bindings?Identity=`, `DELETE /v1/Bindings/{sid}`:
//!   push bindings
//! - `POST`/`GET /v1/Credentials`, `DELETE /v1/Credentials/{sid}`, `GET
//!   /v1/PushResults?BindingSid=`: push credentials and outcomes (`credentials.rs`)
//! - `POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}/UserDefinedMessages.json`
//!   (form: `Content`, a JSON text of at most 10 KB): sends a call message to the
//!   client on that leg
//! - `POST`/`GET .../Calls/{CallSid}/UserDefinedMessageSubscriptions.json` (form:
//!   `Callback`, an `http://` or `https://` URL; `Method`, POST only) and `DELETE
//!   .../UserDefinedMessageSubscriptions/{Sid}.json`: every message the leg's client
//!   sends is POSTed to each callback
//! - `POST /v1/Insights/Events` (a JSON array of SDK insights events, authenticated
//!   with the client's access token: `Authorization: Bearer` or `X-Dialtone-Token`),
//!   `GET /v1/Insights/Events?CallSid=&Identity=&PageSize=` (Basic)

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use dialtone_core::ErrorCode;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::accounts::Account;
use crate::shell::ShellMsg;
use crate::store::Store;

/// The answer a refused request gets (boxed: a response is large).
pub(crate) type Refusal = Box<Response>;

#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) account: Account,
    pub(crate) store: Store,
    /// Call records are written in batches: a read of calls flushes first, so it sees
    /// every change made before the request.
    pub(crate) records: crate::records::Records,
    /// The switch's inbox (registrations, call messages).
    pub(crate) switch: mpsc::UnboundedSender<ShellMsg>,
}

pub(crate) fn error(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    (
        status,
        Json(json!({
            "code": code.code(),
            "name": code.name(),
            "message": message,
            "more_info": format!("https://www.twilio.com/docs/api/errors/{}", code.code()),
            "status": status.as_u16(),
        })),
    )
        .into_response()
}

pub(crate) fn authorized(api: &Api, headers: &HeaderMap) -> Result<(), Refusal> {
    let denied = || {
        Box::new(error(
            StatusCode::UNAUTHORIZED,
            ErrorCode::AuthenticationFailed,
            "HTTP Basic with the account SID and auth token",
        ))
    };
    let value = headers.get("authorization").and_then(|v| v.to_str().ok()).ok_or_else(denied)?;
    let encoded = value.strip_prefix("Basic ").ok_or_else(denied)?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).map_err(|_| denied())?;
    let text = String::from_utf8(decoded).map_err(|_| denied())?;
    let (user, pass) = text.split_once(':').ok_or_else(denied)?;
    if user == api.account.account_sid && pass == api.account.auth_token {
        Ok(())
    } else {
        Err(denied())
    }
}

fn account_matches(api: &Api, sid: &str) -> Result<(), Refusal> {
    if sid == api.account.account_sid {
        Ok(())
    } else {
        Err(Box::new(error(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such account")))
    }
}

async fn list_calls(
    State(api): State<Arc<Api>>,
    Path(account): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorized(&api, &headers).and_then(|()| account_matches(&api, &account)) {
        return *r;
    }
    let size = match q.get("PageSize").map(|s| s.parse::<i64>()) {
        None => 50,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                "PageSize is a number from 1 to 1000",
            )
        }
    };
    let page = match q.get("Page").map(|s| s.parse::<i64>()) {
        None => 0,
        Some(Ok(n)) if (0..=1_000_000).contains(&n) => n,
        Some(_) => return error(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, "Page is a number from 0"),
    };
    api.records.flush().await;
    // One more than the page, to know whether a next page exists.
    match api.store.list_calls(&account, size + 1, page * size).await {
        Ok(mut calls) => {
            let more = calls.len() > usize::try_from(size).unwrap_or(usize::MAX);
            calls.truncate(usize::try_from(size).unwrap_or(usize::MAX));
            let items = calls.iter().map(crate::twilio_shapes::call).collect();
            let path = format!("/2010-04-01/Accounts/{account}/Calls.json");
            Json(crate::twilio_shapes::page("calls", items, &path, page, size, more)).into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::ServiceUnavailable, &e.to_string()),
    }
}

async fn get_call(
    State(api): State<Arc<Api>>,
    Path((account, call)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorized(&api, &headers).and_then(|()| account_matches(&api, &account)) {
        return *r;
    }
    let sid = call.strip_suffix(".json").unwrap_or(&call);
    api.records.flush().await;
    match api.store.get_call(&account, sid).await {
        Ok(Some(c)) => Json(crate::twilio_shapes::call(&c)).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such call"),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::ServiceUnavailable, &e.to_string()),
    }
}

async fn registrations(State(api): State<Arc<Api>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&api, &headers) {
        return *r;
    }
    let (tx, rx) = oneshot::channel();
    if api.switch.send(ShellMsg::Registrations(tx)).is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::ServiceUnavailable, "the SIP side stopped");
    }
    match rx.await {
        Ok(map) => Json(json!({"registrations": map})).into_response(),
        Err(_) => {
            error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::ServiceUnavailable, "the SIP side stopped")
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBinding {
    identity: String,
    binding_type: String,
    address: String,
    #[serde(default)]
    gateway_url: String,
    #[serde(default)]
    credential_sid: Option<String>,
}

async fn add_binding(State(api): State<Arc<Api>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Err(r) = authorized(&api, &headers) {
        return *r;
    }
    let nb: NewBinding = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                &format!("a binding is JSON with identity, binding_type, address, gateway_url: {e}"),
            )
        }
    };
    if !dialtone_sip::wire::is_valid_identity(&nb.identity) {
        return error(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidClientName,
            "identity: 1 to 121 letters, digits and _",
        );
    }
    if !["apn", "fcm", "webhook"].contains(&nb.binding_type.as_str()) {
        return error(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, "binding_type is apn, fcm or webhook");
    }
    if nb.address.is_empty() {
        return error(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, "address (the device token) is empty");
    }
    // An APNs or FCM device token goes into the provider's request (APNs: its URL path):
    // the same check as a REGISTER's `pn-prid`.
    if nb.credential_sid.is_some() {
        if let Err(e) = dialtone_sip::ua::check_device_token(&nb.address) {
            return error(StatusCode::BAD_REQUEST, e.kind(), e.message());
        }
    }
    match &nb.credential_sid {
        Some(c) => {
            let found = match api.store.credentials(&api.account.account_sid, Some(c)).await {
                Ok(v) => v,
                Err(e) => {
                    return error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        ErrorCode::ServiceUnavailable,
                        &e.to_string(),
                    )
                }
            };
            match found.first() {
                None => {
                    return error(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, "no such credential_sid")
                }
                Some(cred) if cred.credential_type != nb.binding_type => {
                    let m = format!(
                        "the credential is {}, the binding {}",
                        cred.credential_type, nb.binding_type
                    );
                    return error(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, &m);
                }
                Some(_) => {}
            }
        }
        None if !is_web_url(&nb.gateway_url) => {
            return error(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                "a binding needs a credential_sid (APNs, FCM) or a gateway_url (http:// or https://)",
            );
        }
        None => {}
    }
    let b = crate::store::Binding {
        sid: crate::accounts::new_sid("BS"),
        identity: nb.identity,
        binding_type: nb.binding_type,
        address: nb.address,
        gateway_url: nb.gateway_url,
        created: crate::store::now_ms(),
        credential_sid: nb.credential_sid,
    };
    match api.store.add_binding(&b).await {
        Ok(()) => (StatusCode::CREATED, Json(b)).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::ServiceUnavailable, &e.to_string()),
    }
}

async fn list_bindings(
    State(api): State<Arc<Api>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorized(&api, &headers) {
        return *r;
    }
    match api.store.bindings(q.get("Identity").map(String::as_str)).await {
        Ok(b) => Json(json!({"bindings": b})).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::ServiceUnavailable, &e.to_string()),
    }
}

async fn delete_binding(
    State(api): State<Arc<Api>>,
    Path(sid): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorized(&api, &headers) {
        return *r;
    }
    match api.store.delete_binding(&sid).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such binding"),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::ServiceUnavailable, &e.to_string()),
    }
}

/// A form body as name/value pairs (the last of a repeated name wins).
pub(crate) fn form(body: &[u8]) -> Result<HashMap<String, String>, Refusal> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body).map(|v| v.into_iter().collect()).map_err(
        |e| Box::new(error(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, &format!("not a form body: {e}"))),
    )
}

/// Whether `u` is an `http://` or `https://` URL with a host.
fn is_web_url(u: &str) -> bool {
    let rest = u.strip_prefix("http://").or_else(|| u.strip_prefix("https://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
}

/// The status a switch refusal is answered with.
fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::RateExceeded => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::PayloadSizeExceeded => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::CallMessageUnexpectedState => StatusCode::CONFLICT,
        ErrorCode::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    }
}

async fn send_message(
    State(api): State<Arc<Api>>,
    Path((account, call)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let f = match authorized(&api, &headers)
        .and_then(|()| account_matches(&api, &account))
        .and_then(|()| form(&body))
    {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let Some(content) = f.get("Content") else {
        return error(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, "Content is required");
    };
    if let Err(e) = crate::switch::check_rest_message(content) {
        return error(status_of(e.kind()), e.kind(), e.message());
    }
    let (tx, rx) = oneshot::channel();
    let msg = ShellMsg::SendMessage { call_sid: call.clone(), content: content.clone(), reply: tx };
    if api.switch.send(msg).is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::ServiceUnavailable, "the SIP side stopped");
    }
    match rx.await {
        Ok(Ok(sid)) => (
            StatusCode::CREATED,
            Json(json!({
                "account_sid": account,
                "call_sid": call,
                "sid": sid,
                "date_created": crate::twilio_shapes::rfc2822(crate::store::now_ms()),
            })),
        )
            .into_response(),
        Ok(Err(e)) => error(status_of(e.kind()), e.kind(), e.message()),
        Err(_) => {
            error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::ServiceUnavailable, "the SIP side stopped")
        }
    }
}

async fn add_subscription(
    State(api): State<Arc<Api>>,
    Path((account, call)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let f = match authorized(&api, &headers)
        .and_then(|()| account_matches(&api, &account))
        .and_then(|()| form(&body))
    {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let Some(callback) = f.get("Callback").filter(|c| is_web_url(c)) else {
        return error(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "Callback is required: an http:// or https:// URL",
        );
    };
    if f.get("Method").is_some_and(|m| !m.eq_ignore_ascii_case("POST")) {
        return error(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, "Method: only POST is supported");
    }
    api.records.flush().await;
    match api.store.get_call(&account, &call).await {
        Ok(Some(_)) => {}
        Ok(None) => return error(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such call"),
        Err(e) => {
            return error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::ServiceUnavailable, &e.to_string())
        }
    }
    let sub = crate::store::Subscription {
        sid: crate::accounts::new_sid("ZY"),
        account_sid: account,
        call_sid: call,
        callback: callback.clone(),
        created: crate::store::now_ms(),
    };
    match api.store.add_subscription(&sub).await {
        Ok(()) => (StatusCode::CREATED, Json(crate::twilio_shapes::subscription(&sub))).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::ServiceUnavailable, &e.to_string()),
    }
}

async fn list_subscriptions(
    State(api): State<Arc<Api>>,
    Path((account, call)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorized(&api, &headers).and_then(|()| account_matches(&api, &account)) {
        return *r;
    }
    match api.store.subscriptions(&call).await {
        Ok(s) => {
            let items: Vec<serde_json::Value> = s.iter().map(crate::twilio_shapes::subscription).collect();
            Json(json!({"user_defined_message_subscriptions": items})).into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::ServiceUnavailable, &e.to_string()),
    }
}

async fn delete_subscription(
    State(api): State<Arc<Api>>,
    Path((account, call, sub)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorized(&api, &headers).and_then(|()| account_matches(&api, &account)) {
        return *r;
    }
    let sid = sub.strip_suffix(".json").unwrap_or(&sub);
    match api.store.delete_subscription(&call, sid).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such subscription"),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::ServiceUnavailable, &e.to_string()),
    }
}

/// The most events one insights POST may carry.
const MAX_INSIGHTS_BATCH: usize = 500;

#[derive(serde::Deserialize)]
struct PostedEvent {
    group: String,
    name: String,
    #[serde(default = "default_level")]
    level: String,
    #[serde(default)]
    call_sid: Option<String>,
    timestamp_ms: i64,
    #[serde(default)]
    payload: serde_json::Value,
}

fn default_level() -> String {
    "info".to_owned()
}

async fn post_insights(State(api): State<Arc<Api>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let token = headers
        .get("x-dialtone-token")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "))
        })
        .map(str::trim);
    let Some(token) = token else {
        return error(
            StatusCode::UNAUTHORIZED,
            ErrorCode::AuthenticationFailed,
            "insights need the client's access token (X-Dialtone-Token or Authorization: Bearer)",
        );
    };
    let claims = match crate::token::verify(&api.account, token) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::UNAUTHORIZED, e.kind(), e.message()),
    };
    let identity = claims.grants.identity.unwrap_or_default();
    let events: Vec<PostedEvent> = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                &format!("a JSON array of events (group, name, level, call_sid, timestamp_ms, payload): {e}"),
            )
        }
    };
    if events.len() > MAX_INSIGHTS_BATCH {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadSizeExceeded,
            &format!("at most {MAX_INSIGHTS_BATCH} events a request"),
        );
    }
    let received = crate::store::now_ms();
    let mut records = Vec::with_capacity(events.len());
    for e in events {
        let short = |s: &str| !s.is_empty() && s.len() <= 64;
        if !short(&e.group)
            || !short(&e.name)
            || !["debug", "info", "warning", "error"].contains(&e.level.as_str())
        {
            return error(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                "group and name are 1 to 64 characters; level is debug, info, warning or error",
            );
        }
        records.push(crate::store::InsightsRecord {
            sid: crate::accounts::new_sid("IE"),
            account_sid: api.account.account_sid.clone(),
            identity: identity.clone(),
            call_sid: e.call_sid.filter(|s| !s.is_empty()),
            group: e.group,
            name: e.name,
            level: e.level,
            timestamp_ms: e.timestamp_ms,
            payload: e.payload.to_string(),
            received,
        });
    }
    match api.store.add_insights(&records).await {
        Ok(()) => (StatusCode::CREATED, Json(json!({"stored": records.len()}))).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::ServiceUnavailable, &e.to_string()),
    }
}

async fn list_insights(
    State(api): State<Arc<Api>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorized(&api, &headers) {
        return *r;
    }
    let size = match q.get("PageSize").map(|s| s.parse::<i64>()) {
        None => 1000,
        Some(Ok(n)) if (1..=10_000).contains(&n) => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                "PageSize is a number from 1 to 10000",
            )
        }
    };
    let (call, identity) = (q.get("CallSid").map(String::as_str), q.get("Identity").map(String::as_str));
    match api.store.insights(&api.account.account_sid, call, identity, size).await {
        Ok(events) => Json(json!({"events": events})).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::ServiceUnavailable, &e.to_string()),
    }
}

pub(crate) fn router(api: Api) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"ok": true})) }))
        .route("/2010-04-01/Accounts/{account}/Calls.json", get(list_calls))
        .route("/2010-04-01/Accounts/{account}/Calls/{call}", get(get_call))
        .route("/2010-04-01/Accounts/{account}/Calls/{call}/UserDefinedMessages.json", post(send_message))
        .route(
            "/2010-04-01/Accounts/{account}/Calls/{call}/UserDefinedMessageSubscriptions.json",
            get(list_subscriptions).post(add_subscription),
        )
        .route(
            "/2010-04-01/Accounts/{account}/Calls/{call}/UserDefinedMessageSubscriptions/{sub}",
            axum::routing::delete(delete_subscription),
        )
        .route("/v1/Insights/Events", get(list_insights).post(post_insights))
        .route("/v1/Registrations", get(registrations))
        .route("/v1/Bindings", get(list_bindings).post(add_binding))
        .route("/v1/Bindings/{sid}", axum::routing::delete(delete_binding))
        .route(
            "/v1/Credentials",
            get(crate::credentials::list_credentials).post(crate::credentials::add_credential),
        )
        .route("/v1/Credentials/{sid}", axum::routing::delete(crate::credentials::delete_credential))
        .route("/v1/PushResults", get(crate::credentials::list_push_results))
        .fallback(|| async { error(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such resource") })
        .with_state(Arc::new(api))
}

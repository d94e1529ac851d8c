//! The REST API (axum), authenticated with the account SID and auth token (HTTP Basic),
//! answering bad requests with JSON errors that carry catalogue codes.
//!
//! - `GET /healthz`
//! - `GET /2010-04-01/Accounts/{AccountSid}/Calls.json` (newest first, `?PageSize=`)
//! - `GET /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`
//! - `GET /v1/Registrations` (identities with a live registration and their devices)
//! - `POST /v1/Bindings` (JSON: identity, binding_type, address, gateway_url),
//!   `GET /v1/Bindings?Identity=`, `DELETE /v1/Bindings/{sid}`: push bindings

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use dialtone_core::ErrorCode;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::accounts::Account;
use crate::hub::HubMsg;
use crate::store::Store;

/// The answer a refused request gets (boxed: a response is large).
type Refusal = Box<Response>;

#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) account: Account,
    pub(crate) store: Store,
    pub(crate) hub: mpsc::UnboundedSender<HubMsg>,
}

fn error(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    (
        status,
        Json(
            json!({"code": code.code(), "name": code.name(), "message": message, "status": status.as_u16()}),
        ),
    )
        .into_response()
}

fn authorized(api: &Api, headers: &HeaderMap) -> Result<(), Refusal> {
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
    match api.store.list_calls(&account, size).await {
        Ok(calls) => Json(json!({"calls": calls})).into_response(),
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
    match api.store.get_call(&account, sid).await {
        Ok(Some(c)) => Json(c).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such call"),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::ServiceUnavailable, &e.to_string()),
    }
}

async fn registrations(State(api): State<Arc<Api>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&api, &headers) {
        return *r;
    }
    let (tx, rx) = oneshot::channel();
    if api.hub.send(HubMsg::Registrations(tx)).is_err() {
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
    gateway_url: String,
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
    if !nb.gateway_url.starts_with("http://") || nb.address.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "gateway_url must be http:// and address non-empty",
        );
    }
    let b = crate::store::Binding {
        sid: crate::accounts::new_sid("BS"),
        identity: nb.identity,
        binding_type: nb.binding_type,
        address: nb.address,
        gateway_url: nb.gateway_url,
        created: crate::store::now_ms(),
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

pub(crate) fn router(api: Api) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"ok": true})) }))
        .route("/2010-04-01/Accounts/{account}/Calls.json", get(list_calls))
        .route("/2010-04-01/Accounts/{account}/Calls/{call}", get(get_call))
        .route("/v1/Registrations", get(registrations))
        .route("/v1/Bindings", get(list_bindings).post(add_binding))
        .route("/v1/Bindings/{sid}", axum::routing::delete(delete_binding))
        .fallback(|| async { error(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such resource") })
        .with_state(Arc::new(api))
}

//! The REST API's push resources beside bindings: push credentials, as Twilio's
//! `/Credentials` has them (`POST /v1/Credentials`, `GET /v1/Credentials`, `DELETE
//! /v1/Credentials/{Sid}`), and what became of each push (`GET
//! /v1/PushResults?BindingSid=`). A credential's key material is never returned.
//!
//! `POST /v1/Credentials` takes a form: `Type` (`apn` or `fcm`), `FriendlyName`, and
//! - for `apn`: `PrivateKey` (the `.p8` token key, PEM), `KeyId`, `TeamId`,
//!   `BundleId` (the topic is `<BundleId>.voip`) and `Sandbox` (`true` for the
//!   development host);
//! - for `fcm`: `Secret`, the service account's JSON key (with `project_id`,
//!   `client_email`, `private_key`, `private_key_id`, `token_uri`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use dialtone_core::ErrorCode;
use serde_json::{json, Value};

use crate::http::{authorized, error, form, Api};
use crate::store::{now_ms, Credential};

/// A credential as the API shows it (no key material).
fn shown(c: &Credential) -> Value {
    json!({
        "sid": c.sid,
        "account_sid": c.account_sid,
        "friendly_name": c.friendly_name,
        "type": c.credential_type,
        "sandbox": c.sandbox,
        "date_created": crate::twilio_shapes::iso8601(c.created),
        "date_updated": crate::twilio_shapes::iso8601(c.created),
        "url": format!("/v1/Credentials/{}", c.sid),
    })
}

/// Checks the key material of a new credential; its JSON to store.
fn secret_of(kind: &str, f: &HashMap<String, String>) -> Result<String, String> {
    let get = |k: &str| f.get(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    match kind {
        "apn" => {
            let (Some(key), Some(key_id), Some(team_id), Some(bundle)) =
                (get("PrivateKey"), get("KeyId"), get("TeamId"), get("BundleId"))
            else {
                return Err("an apn credential needs PrivateKey, KeyId, TeamId and BundleId".into());
            };
            jsonwebtoken::EncodingKey::from_ec_pem(key.as_bytes())
                .map_err(|e| format!("PrivateKey is not an EC (P-256) key in PEM: {e}"))?;
            Ok(json!({"private_key": key, "key_id": key_id, "team_id": team_id, "bundle_id": bundle})
                .to_string())
        }
        "fcm" => {
            let secret =
                get("Secret").ok_or("an fcm credential needs Secret, the service account's JSON key")?;
            let v: Value = serde_json::from_str(&secret).map_err(|e| format!("Secret is not JSON: {e}"))?;
            for k in ["project_id", "client_email", "private_key", "token_uri"] {
                if !v[k].is_string() {
                    return Err(format!("Secret has no {k}"));
                }
            }
            let token_uri = v["token_uri"].as_str().unwrap_or_default();
            if !(token_uri.starts_with("https://") || token_uri.starts_with("http://")) {
                return Err("Secret's token_uri is not a URL".into());
            }
            jsonwebtoken::EncodingKey::from_rsa_pem(v["private_key"].as_str().unwrap_or_default().as_bytes())
                .map_err(|e| format!("Secret's private_key is not an RSA key in PEM: {e}"))?;
            Ok(secret)
        }
        other => Err(format!("Type {other:?} is not apn or fcm")),
    }
}

pub(crate) async fn add_credential(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let f = match authorized(&api, &headers).and_then(|()| form(&body)) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let kind = f.get("Type").map(|t| t.trim().to_ascii_lowercase()).unwrap_or_default();
    let secret = match secret_of(&kind, &f) {
        Ok(s) => s,
        Err(m) => return error(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, &m),
    };
    let c = Credential {
        sid: crate::accounts::new_sid("CR"),
        account_sid: api.account.account_sid.clone(),
        credential_type: kind,
        friendly_name: f.get("FriendlyName").cloned().unwrap_or_default(),
        sandbox: f.get("Sandbox").is_some_and(|s| s.trim().eq_ignore_ascii_case("true")),
        secret,
        created: now_ms(),
    };
    match api.store.add_credential(&c).await {
        Ok(()) => (StatusCode::CREATED, Json(shown(&c))).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::ServiceUnavailable, &e.to_string()),
    }
}

pub(crate) async fn list_credentials(State(api): State<Arc<Api>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&api, &headers) {
        return *r;
    }
    match api.store.credentials(&api.account.account_sid, None).await {
        Ok(cs) => Json(json!({"credentials": cs.iter().map(shown).collect::<Vec<_>>()})).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::ServiceUnavailable, &e.to_string()),
    }
}

pub(crate) async fn delete_credential(
    State(api): State<Arc<Api>>,
    Path(sid): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorized(&api, &headers) {
        return *r;
    }
    match api.store.delete_credential(&api.account.account_sid, &sid).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such credential"),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::ServiceUnavailable, &e.to_string()),
    }
}

pub(crate) async fn list_push_results(
    State(api): State<Arc<Api>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorized(&api, &headers) {
        return *r;
    }
    match api.store.push_results(q.get("BindingSid").map(String::as_str)).await {
        Ok(r) => Json(json!({"push_results": r})).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::ServiceUnavailable, &e.to_string()),
    }
}

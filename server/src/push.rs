//! Push: bridge tokens and the gateway POST.
//!
//! A bridge token is opaque to clients: `base64url(call_sid|identity|expiry)` and an
//! HMAC-SHA256 of it with the API key secret. It is bound to the callee leg's call SID
//! and the identity, and lives 60 s. Presenting a bad one is 31104.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use dialtone_core::{ErrorCode, VoiceError};
use ring::hmac;

use crate::store::Binding;

/// How long a bridge token is good for.
pub const BRIDGE_TOKEN_TTL: Duration = Duration::from_secs(60);

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A bridge token for the leg `call_sid` to `identity`.
pub fn bridge_token(secret: &str, call_sid: &str, identity: &str) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let body = format!("{call_sid}|{identity}|{}", now() + BRIDGE_TOKEN_TTL.as_secs());
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let tag = hmac::sign(&key, body.as_bytes());
    format!("{}.{}", b64.encode(body), b64.encode(tag.as_ref()))
}

/// Checks a bridge token; returns the call SID it is for.
pub fn verify_bridge_token(secret: &str, token: &str, identity: &str) -> Result<String, VoiceError> {
    let bad =
        |why: &str| VoiceError::new(ErrorCode::InvalidBridgeToken, format!("invalid bridge token: {why}"));
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (body, tag) = token.trim().split_once('.').ok_or_else(|| bad("malformed"))?;
    let body = b64.decode(body).map_err(|_| bad("malformed"))?;
    let tag = b64.decode(tag).map_err(|_| bad("malformed"))?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    hmac::verify(&key, &body, &tag).map_err(|_| bad("wrong signature"))?;
    let body = String::from_utf8(body).map_err(|_| bad("malformed"))?;
    let mut parts = body.split('|');
    let (Some(sid), Some(who), Some(exp), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("malformed"));
    };
    if who != identity {
        return Err(bad("it is for another identity"));
    }
    if exp.parse::<u64>().map_or(true, |e| e < now()) {
        return Err(bad("expired"));
    }
    Ok(sid.to_owned())
}

/// The `twi_*` payload of design.md for a call (or its cancellation).
pub fn payload(
    kind: &str,
    binding: &Binding,
    call_sid: &str,
    from: &str,
    account_sid: &str,
    bridge_token: Option<&str>,
    params: &str,
) -> serde_json::Value {
    let mut p = serde_json::json!({
        "twi_message_type": kind,
        "twi_call_sid": call_sid,
        "twi_from": from,
        "twi_to": format!("client:{}", binding.identity),
        "twi_account_sid": account_sid,
        "twi_message_id": crate::accounts::new_sid("NO"),
        "twi_params": params,
        "device_token": binding.address,
        "binding_type": binding.binding_type,
    });
    if let Some(t) = bridge_token {
        p["twi_bridge_token"] = serde_json::json!(t);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_tokens() {
        let t = bridge_token("secret", "CA1", "bob");
        assert_eq!(verify_bridge_token("secret", &t, "bob").unwrap(), "CA1");
        assert_eq!(verify_bridge_token("other", &t, "bob").unwrap_err().code(), 31104);
        assert_eq!(verify_bridge_token("secret", &t, "eve").unwrap_err().code(), 31104);
        assert_eq!(verify_bridge_token("secret", "junk", "bob").unwrap_err().code(), 31104);
        let mut forged = t.clone();
        forged.insert(2, 'x');
        assert_eq!(verify_bridge_token("secret", &forged, "bob").unwrap_err().code(), 31104);
    }
}

//! Access tokens (design.md): JWTs signed HS256 with an API key secret, header
//! `cty: twilio-fpa;v=1`, claims `iss` (API key SID), `sub` (account SID), `exp` (at
//! most 24 h after issue), `grants.identity` and the voice grants. Minting is for the
//! `dialtone token` command and tests; verifying refuses everything else with its
//! catalogue code.

use std::time::{SystemTime, UNIX_EPOCH};

use dialtone_core::{ErrorCode, VoiceError};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::accounts::Account;

/// The longest lifetime a token may have (24 h).
pub const MAX_TTL_SECS: u64 = 24 * 3600;

/// The voice grant.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoiceGrant {
    /// Incoming calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incoming: Option<Incoming>,
    /// Outgoing calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outgoing: Option<Outgoing>,
    /// The push credential (`CR…`) through which this identity's devices are woken:
    /// a REGISTER with a device token (RFC 8599 `pn-prid`) binds the device to it, as
    /// Twilio's `register(accessToken, deviceToken)` does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_credential_sid: Option<String>,
}

/// `grants.voice.incoming`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incoming {
    /// Whether the identity may receive calls.
    pub allow: bool,
}

/// `grants.voice.outgoing`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outgoing {
    /// The TwiML application placed calls run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_sid: Option<String>,
}

/// `grants`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    /// The client identity.
    #[serde(default)]
    pub identity: Option<String>,
    /// The voice grant.
    #[serde(default)]
    pub voice: Option<VoiceGrant>,
}

/// The claims of an access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// A unique id.
    pub jti: String,
    /// The API key SID.
    pub iss: String,
    /// The account SID.
    pub sub: String,
    /// Issued at (seconds since the epoch).
    pub iat: u64,
    /// Not before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Expires at.
    pub exp: u64,
    /// The grants.
    pub grants: Grants,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Mints a token for `identity` valid for `ttl_secs` (at most 24 h: 20157 otherwise).
pub fn mint(
    account: &Account,
    identity: &str,
    ttl_secs: u64,
    application_sid: Option<&str>,
) -> Result<String, VoiceError> {
    mint_voice(account, identity, ttl_secs, application_sid, None)
}

/// [`mint`], with a push credential in the voice grant
/// ([`VoiceGrant::push_credential_sid`]).
pub fn mint_voice(
    account: &Account,
    identity: &str,
    ttl_secs: u64,
    application_sid: Option<&str>,
    push_credential_sid: Option<&str>,
) -> Result<String, VoiceError> {
    if ttl_secs > MAX_TTL_SECS {
        return Err(VoiceError::new(
            ErrorCode::ExpirationTimeExceedsMaxTimeAllowed,
            format!("a token lives at most {MAX_TTL_SECS} s; {ttl_secs} s was asked"),
        ));
    }
    if !dialtone_sip::wire::is_valid_identity(identity) {
        return Err(VoiceError::new(
            ErrorCode::InvalidClientName,
            format!("{identity:?} is not an identity (1 to 121 letters, digits and _)"),
        ));
    }
    let iat = now_secs();
    let claims = Claims {
        jti: format!("{}-{iat}", account.api_key_sid),
        iss: account.api_key_sid.clone(),
        sub: account.account_sid.clone(),
        iat,
        nbf: None,
        exp: iat + ttl_secs,
        grants: Grants {
            identity: Some(identity.to_owned()),
            voice: Some(VoiceGrant {
                incoming: Some(Incoming { allow: true }),
                outgoing: Some(Outgoing { application_sid: application_sid.map(str::to_owned) }),
                push_credential_sid: push_credential_sid.map(str::to_owned),
            }),
        },
    };
    let mut header = Header::new(Algorithm::HS256);
    header.cty = Some("twilio-fpa;v=1".to_owned());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(account.api_key_secret.as_bytes()))
        .map_err(|e| VoiceError::new(ErrorCode::AccessTokenInvalid, format!("cannot sign the token: {e}")))
}

/// Verifies a token: HS256 only, signature, `exp`, `nbf`, a lifetime of at most 24 h,
/// issuer and subject, and an identity grant. Each refusal has its own code.
pub fn verify(account: &Account, token: &str) -> Result<Claims, VoiceError> {
    let err = |kind: ErrorCode, msg: &str| VoiceError::new(kind, msg.to_owned());
    let header = jsonwebtoken::decode_header(token)
        .map_err(|e| VoiceError::new(ErrorCode::AccessTokenInvalid, format!("not a JWT: {e}")))?;
    if header.alg != Algorithm::HS256 {
        return Err(VoiceError::new(
            ErrorCode::AccessTokenHeaderInvalid,
            format!("the token is signed with {:?}; only HS256 is accepted", header.alg),
        ));
    }
    let mut v = Validation::new(Algorithm::HS256);
    v.leeway = 0;
    v.validate_nbf = true;
    v.set_required_spec_claims(&["exp", "iss", "sub"]);
    let data = jsonwebtoken::decode::<Claims>(
        token,
        &DecodingKey::from_secret(account.api_key_secret.as_bytes()),
        &v,
    )
    .map_err(|e| match e.kind() {
        ErrorKind::InvalidSignature => {
            err(ErrorCode::AccessTokenSignatureInvalid, "the token's signature is invalid")
        }
        ErrorKind::ExpiredSignature => err(ErrorCode::AccessTokenExpired, "the token expired"),
        ErrorKind::ImmatureSignature => err(ErrorCode::AccessTokenNotYetValid, "the token is not valid yet"),
        ErrorKind::InvalidAlgorithm => err(ErrorCode::AccessTokenHeaderInvalid, "only HS256 is accepted"),
        ErrorKind::MissingRequiredClaim(c) => {
            VoiceError::new(ErrorCode::AccessTokenInvalid, format!("the token has no {c} claim"))
        }
        _ => VoiceError::new(ErrorCode::AccessTokenInvalid, format!("the token cannot be read: {e}")),
    })?;
    let c = data.claims;
    if c.exp.saturating_sub(c.iat) > MAX_TTL_SECS {
        return Err(err(ErrorCode::ExpirationTimeExceedsMaxTimeAllowed, "the token lives longer than 24 h"));
    }
    if c.iss != account.api_key_sid || c.sub != account.account_sid {
        return Err(err(
            ErrorCode::AccessTokenIssuerInvalid,
            "the token's issuer or subject is not this account",
        ));
    }
    match &c.grants.identity {
        Some(i) if dialtone_sip::wire::is_valid_identity(i) => Ok(c),
        _ => Err(err(ErrorCode::AccessTokenGrantsInvalid, "the token grants no valid identity")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> Account {
        Account {
            account_sid: "ACaaaa".into(),
            auth_token: "t".into(),
            api_key_sid: "SKbbbb".into(),
            api_key_secret: "secret-secret-secret-secret-secret".into(),
        }
    }

    fn forge(claims: serde_json::Value, alg: Algorithm, secret: &str) -> String {
        jsonwebtoken::encode(&Header::new(alg), &claims, &EncodingKey::from_secret(secret.as_bytes()))
            .unwrap()
    }

    #[test]
    fn mint_and_verify() {
        let a = account();
        let t = mint(&a, "alice", 3600, None).unwrap();
        let c = verify(&a, &t).unwrap();
        assert_eq!(c.grants.identity.as_deref(), Some("alice"));
        let h = jsonwebtoken::decode_header(&t).unwrap();
        assert_eq!(h.cty.as_deref(), Some("twilio-fpa;v=1"));
        assert_eq!(mint(&a, "alice", MAX_TTL_SECS + 1, None).unwrap_err().code(), 20157);
        assert_eq!(mint(&a, "bad name", 60, None).unwrap_err().code(), 31105);
    }

    #[test]
    fn every_refusal_has_its_code() {
        let a = account();
        let now = now_secs();
        let ok = serde_json::json!({"jti":"x","iss":"SKbbbb","sub":"ACaaaa","iat":now,"exp":now+60,"grants":{"identity":"bob"}});
        assert!(verify(&a, &forge(ok.clone(), Algorithm::HS256, &a.api_key_secret)).is_ok());
        assert_eq!(verify(&a, &forge(ok.clone(), Algorithm::HS256, "wrong")).unwrap_err().code(), 20107);
        assert_eq!(
            verify(&a, &forge(ok.clone(), Algorithm::HS384, &a.api_key_secret)).unwrap_err().code(),
            20102
        );
        // alg none: a header saying so and no signature.
        let b64 = |v: &serde_json::Value| {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let none = format!("{}.{}.", b64(&serde_json::json!({"alg":"none","typ":"JWT"})), b64(&ok));
        assert!(matches!(verify(&a, &none).unwrap_err().code(), 20101 | 20102));
        let mut expired = ok.clone();
        expired["iat"] = (now - 120).into();
        expired["exp"] = (now - 60).into();
        assert_eq!(
            verify(&a, &forge(expired, Algorithm::HS256, &a.api_key_secret)).unwrap_err().code(),
            20104
        );
        let mut early = ok.clone();
        early["nbf"] = (now + 600).into();
        assert_eq!(verify(&a, &forge(early, Algorithm::HS256, &a.api_key_secret)).unwrap_err().code(), 20105);
        let mut long = ok.clone();
        long["exp"] = (now + MAX_TTL_SECS + 60).into();
        assert_eq!(verify(&a, &forge(long, Algorithm::HS256, &a.api_key_secret)).unwrap_err().code(), 20157);
        let mut other = ok.clone();
        other["iss"] = "SKother".into();
        assert_eq!(verify(&a, &forge(other, Algorithm::HS256, &a.api_key_secret)).unwrap_err().code(), 20103);
        let mut nogrant = ok.clone();
        nogrant["grants"] = serde_json::json!({});
        assert_eq!(
            verify(&a, &forge(nogrant, Algorithm::HS256, &a.api_key_secret)).unwrap_err().code(),
            20106
        );
        assert_eq!(verify(&a, "garbage").unwrap_err().code(), 20101);
    }
}

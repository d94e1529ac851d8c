//! How the call model rides on SIP: which headers carry the call SID, the custom
//! parameters, the caller's verification and the access token, how call targets
//! become request URIs, and how SIP failures become catalogue codes. The server
//! (issue 4) writes what this module reads, so both sides share these names.

use std::collections::BTreeMap;

use dialtone_core::push::{encode_custom_parameters, parse_custom_parameters};
use dialtone_core::{CallMessage, CallerInfo, ErrorCode, InviteDetails, VoiceError};

use crate::header::{NameAddr, Uri};
use crate::message::Message;
use crate::ua::Failure;

/// The call SID of a leg, on INVITEs and their responses.
pub const CALL_SID_HEADER: &str = "X-Dialtone-Call-Sid";
/// The custom parameters, in query-string form (values URI-encoded, names not).
pub const PARAMS_HEADER: &str = "X-Dialtone-Params";
/// A catalogue code and text on a failure response (`X-Dialtone-Error: 20104 Access
/// token expired`), for failures SIP statuses cannot tell apart.
pub const ERROR_HEADER: &str = "X-Dialtone-Error";
/// The STIR verification status, when the server does not put `verstat` on the
/// From or P-Asserted-Identity URI (RFC 8588 / ATIS-1000074).
pub const STIR_HEADER: &str = "X-Dialtone-Stir-Status";
/// The message type of a call message INFO (`user-defined-message`).
pub const MESSAGE_TYPE_HEADER: &str = "X-Dialtone-Message-Type";
/// The voice event SID of a call message INFO.
pub const EVENT_SID_HEADER: &str = "X-Dialtone-Event-Sid";
/// The bridge token a device presents on its REGISTER when accepting a push invite.
pub const BRIDGE_TOKEN_HEADER: &str = "X-Dialtone-Bridge-Token";
/// The content type of DTMF sent as SIP INFO.
pub const DTMF_CONTENT_TYPE: &str = "application/dtmf-relay";
/// The status and reason a rejected invite is answered with.
pub const REJECT: (u16, &str) = (600, "Call Rejected");

/// Whether a name is a valid client identity (at most 121 letters, digits and `_`).
pub fn is_valid_identity(name: &str) -> bool {
    !name.is_empty() && name.len() <= 121 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The request URI for a call target: `client:NAME` (or a bare NAME) is
/// `sip:NAME@domain`; a `sip:`/`sips:` URI is taken as it is; a number (`+` and
/// digits) is `sip:NUMBER@domain;user=phone`. A bad client name is 31105.
pub fn target_uri(to: &str, domain: &str) -> Result<Uri, VoiceError> {
    let to = to.trim();
    if to.starts_with("sip:") || to.starts_with("sips:") {
        return Uri::parse(to)
            .map_err(|e| VoiceError::new(ErrorCode::MalformedRequest, format!("bad target {to:?}: {e}")));
    }
    let number = to.strip_prefix('+').unwrap_or(to);
    if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) && to.len() >= 3 {
        let mut u = Uri::sip(Some(to), domain);
        u.params.set("user", Some("phone"));
        return Ok(u);
    }
    let name = to.strip_prefix("client:").unwrap_or(to);
    if !is_valid_identity(name) {
        return Err(VoiceError::new(
            ErrorCode::InvalidClientName,
            format!("{name:?} is not a client name (1 to 121 letters, digits and _)"),
        ));
    }
    Ok(Uri::sip(Some(name), domain))
}

/// How a party of a call is shown to the application: `client:NAME` for a user of
/// our own domain, the URI otherwise.
pub fn party(header: Option<&str>, domain: &str) -> Option<String> {
    let na = NameAddr::parse(header?).ok()?;
    let user = na.uri.user.as_deref();
    match user {
        Some(u) if na.uri.host.eq_ignore_ascii_case(domain) && is_valid_identity(u) => {
            Some(format!("client:{u}"))
        }
        _ => {
            let mut uri = na.uri.clone();
            uri.params = Default::default();
            Some(uri.to_string())
        }
    }
}

/// A call SID for a message that carries none (a plain SIP peer): `CA` and 32 hex
/// digits derived from the Call-ID, so that both sides of one dialog agree.
pub fn derived_call_sid(call_id: &str) -> String {
    // FNV-1a over two seeds: stable, not secret.
    let mut out = String::from("CA");
    for seed in [0xcbf2_9ce4_8422_2325u64, 0x9e37_79b9_7f4a_7c15] {
        let mut h = seed;
        for b in call_id.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        out.push_str(&format!("{h:016x}"));
    }
    out
}

/// The call SID a message carries, or one derived from its Call-ID.
pub fn call_sid_of(m: &Message) -> String {
    m.header(CALL_SID_HEADER)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| derived_call_sid(m.call_id().unwrap_or("")))
}

/// The STIR status of an INVITE: `verstat` on P-Asserted-Identity or From, or the
/// [`STIR_HEADER`].
pub fn stir_status(m: &Message) -> Option<String> {
    for h in ["P-Asserted-Identity", "From"] {
        for v in m.headers.values(h) {
            if let Ok(na) = NameAddr::parse(v) {
                if let Some(s) = na.uri.params.get("verstat").or_else(|| na.params.get("verstat")) {
                    return Some(s.to_owned());
                }
            }
        }
    }
    m.header(STIR_HEADER).map(|s| s.trim().to_owned())
}

/// The invite an incoming INVITE stands for. Malformed custom parameters are 31100.
pub fn invite_details(m: &Message, domain: &str) -> Result<InviteDetails, VoiceError> {
    let params = match m.header(PARAMS_HEADER) {
        Some(q) => parse_custom_parameters(q)?,
        None => BTreeMap::new(),
    };
    let to = party(m.header("To"), domain).unwrap_or_default();
    let mut d = InviteDetails::new(call_sid_of(m), to)
        .with_custom_parameters(params)
        .with_caller_info(CallerInfo::from_stir_status(stir_status(m).as_deref()));
    if let Some(from) = party(m.header("From"), domain) {
        d = d.with_from(from);
    }
    Ok(d)
}

/// The header value for custom parameters.
pub fn params_header(params: &BTreeMap<String, String>) -> String {
    encode_custom_parameters(params)
}

/// The catalogue error for a failed request. In order: an [`ERROR_HEADER`] naming a
/// catalogue code; a Bearer challenge (RFC 6750 `error="invalid_token"`, expired or
/// not); a transaction timeout (31003 for a call, 53000 for registration); else the
/// status (31000 + status, or the class's x00).
pub fn failure_to_error(f: &Failure, registering: bool) -> VoiceError {
    let Some(resp) = &f.response else {
        let kind =
            if registering { ErrorCode::SignalingConnectionError } else { ErrorCode::ConnectionTimeout };
        return VoiceError::new(kind, format!("no response from the server: {}", f.reason));
    };
    if let Some(v) = resp.header(ERROR_HEADER) {
        let (code, text) = v.trim().split_once(' ').unwrap_or((v.trim(), ""));
        if let Some(kind) = code.parse().ok().and_then(ErrorCode::from_code) {
            let text = if text.is_empty() { kind.description() } else { text };
            return VoiceError::new(kind, format!("{text} (SIP/2.0 {} {})", f.status, f.reason));
        }
    }
    if matches!(f.status, 401 | 407) {
        let challenge = resp.header("WWW-Authenticate").or(resp.header("Proxy-Authenticate")).unwrap_or("");
        let lower = challenge.to_ascii_lowercase();
        let kind = if lower.contains("invalid_token") && lower.contains("expired") {
            if registering {
                ErrorCode::AccessTokenExpired
            } else {
                ErrorCode::JwtExpired
            }
        } else if lower.contains("invalid_token") {
            if registering {
                ErrorCode::AccessTokenInvalid
            } else {
                ErrorCode::InvalidJwt
            }
        } else if registering {
            ErrorCode::AuthenticationFailed
        } else {
            ErrorCode::AuthorizationError
        };
        return VoiceError::new(kind, format!("{} (SIP/2.0 {} {})", kind.description(), f.status, f.reason));
    }
    if f.status == 403 && registering {
        return VoiceError::new(
            ErrorCode::AuthenticationFailed,
            format!("the server refused the registration (SIP/2.0 403 {})", f.reason),
        );
    }
    if f.status == 600 && f.reason.eq_ignore_ascii_case(REJECT.1) {
        return VoiceError::new(
            ErrorCode::ConnectionDeclined,
            "the callee rejected the call (SIP/2.0 600 Call Rejected)",
        );
    }
    VoiceError::from_sip_response(f.status, &f.reason)
}

/// The [`ERROR_HEADER`] value for an error.
pub fn error_header(e: &VoiceError) -> String {
    format!("{} {}", e.code(), e.message().replace(['\r', '\n'], " "))
}

/// A call message as an INFO: content type, extra headers and body.
pub fn message_info(m: &CallMessage) -> (String, Vec<(&'static str, String)>, Vec<u8>) {
    let mut headers = vec![(MESSAGE_TYPE_HEADER, m.message_type().to_owned())];
    if let Some(sid) = m.voice_event_sid() {
        headers.push((EVENT_SID_HEADER, sid.to_owned()));
    }
    (m.content_type().to_owned(), headers, m.content().as_bytes().to_vec())
}

/// What an incoming INFO carries.
#[derive(Clone, Debug, PartialEq)]
pub enum InfoContent {
    /// A call message.
    Message(CallMessage),
    /// DTMF (`application/dtmf-relay`).
    Digits(String),
    /// Something else (ignored).
    Other,
}

/// Reads an incoming INFO.
pub fn read_info(m: &Message) -> InfoContent {
    let ct = m.header("Content-Type").unwrap_or("").trim().to_ascii_lowercase();
    let body = String::from_utf8_lossy(&m.body).into_owned();
    if let Some(kind) = m.header(MESSAGE_TYPE_HEADER) {
        let mut msg = CallMessage::new(body)
            .with_content_type(m.header("Content-Type").unwrap_or("application/json").trim())
            .with_message_type(kind.trim());
        if let Some(sid) = m.header(EVENT_SID_HEADER) {
            msg = msg.with_voice_event_sid(sid.trim());
        }
        return InfoContent::Message(msg);
    }
    if ct.starts_with(DTMF_CONTENT_TYPE) {
        let digits: String = body
            .lines()
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| k.trim().eq_ignore_ascii_case("signal"))
            .map(|(_, v)| v.trim().to_owned())
            .collect();
        return InfoContent::Digits(digits);
    }
    InfoContent::Other
}

/// The INFO body for one DTMF digit.
pub fn dtmf_body(digit: char) -> Vec<u8> {
    format!("Signal={digit}\r\nDuration=160\r\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(target_uri("client:bob", "d").unwrap().to_string(), "sip:bob@d");
        assert_eq!(target_uri("bob", "d").unwrap().to_string(), "sip:bob@d");
        assert_eq!(target_uri("+15551234", "d").unwrap().to_string(), "sip:+15551234@d;user=phone");
        assert_eq!(target_uri("sip:x@example.com;transport=tcp", "d").unwrap().host, "example.com");
        assert_eq!(target_uri("client:bad name", "d").unwrap_err().code(), 31105);
        assert_eq!(target_uri(&format!("client:{}", "a".repeat(122)), "d").unwrap_err().code(), 31105);
    }

    fn failure(raw: &str) -> Failure {
        let m = Message::parse(raw.as_bytes(), 65536).unwrap();
        Failure { status: m.status().unwrap(), reason: m.reason().to_owned(), response: Some(m) }
    }

    #[test]
    fn failures_map_to_catalogue_codes() {
        let f = failure("SIP/2.0 403 Forbidden\r\nX-Dialtone-Error: 20104 Access token expired\r\n\r\n");
        assert_eq!(failure_to_error(&f, true).code(), 20104);
        let f = failure("SIP/2.0 401 Unauthorized\r\nWWW-Authenticate: Bearer error=\"invalid_token\", error_description=\"token expired\"\r\n\r\n");
        assert_eq!(failure_to_error(&f, true).code(), 20104);
        assert_eq!(failure_to_error(&f, false).code(), 31205);
        let f =
            failure("SIP/2.0 401 Unauthorized\r\nWWW-Authenticate: Bearer error=\"invalid_token\"\r\n\r\n");
        assert_eq!(failure_to_error(&f, true).code(), 20101);
        assert_eq!(failure_to_error(&f, false).code(), 31204);
        let f = failure("SIP/2.0 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"x\"\r\n\r\n");
        assert_eq!(failure_to_error(&f, true).code(), 20151);
        assert_eq!(failure_to_error(&f, false).code(), 31201);
        assert_eq!(failure_to_error(&failure("SIP/2.0 486 Busy Here\r\n\r\n"), false).code(), 31486);
        assert_eq!(failure_to_error(&failure("SIP/2.0 600 Call Rejected\r\n\r\n"), false).code(), 31002);
        assert_eq!(failure_to_error(&failure("SIP/2.0 499 Odd\r\n\r\n"), false).code(), 31400);
        let timeout = Failure { status: 408, reason: "x".into(), response: None };
        assert_eq!(failure_to_error(&timeout, false).code(), 31003);
    }

    #[test]
    fn invites_carry_sid_params_and_stir() {
        let raw = "INVITE sip:bob@d SIP/2.0\r\nFrom: <sip:alice@d;verstat=TN-Validation-Passed-A>;tag=1\r\nTo: <sip:bob@d>\r\nCall-ID: x\r\nX-Dialtone-Call-Sid: CA0123\r\nX-Dialtone-Params: caller_first_name=alice&note=a%20b\r\n\r\n";
        let m = Message::parse(raw.as_bytes(), 65536).unwrap();
        let d = invite_details(&m, "d").unwrap();
        assert_eq!(d.call_sid, "CA0123");
        assert_eq!(d.from.as_deref(), Some("client:alice"));
        assert_eq!(d.to, "client:bob");
        assert_eq!(d.custom_parameters["note"], "a b");
        assert_eq!(d.caller_info.verified, Some(true));
        let sid = derived_call_sid("abc");
        assert_eq!(sid.len(), 34);
        assert_eq!(sid, derived_call_sid("abc"));
        assert_ne!(sid, derived_call_sid("abd"));
    }

    #[test]
    fn infos() {
        let m = CallMessage::new("{\"a\":1}").with_voice_event_sid("KX1");
        let (ct, headers, body) = message_info(&m);
        let mut req = Message::request(crate::Method::Info, "sip:x@y");
        req.headers.push("Content-Type", ct);
        for (n, v) in headers {
            req.headers.push(n, v);
        }
        req.body = body;
        assert_eq!(read_info(&req), InfoContent::Message(m));
        let mut d = Message::request(crate::Method::Info, "sip:x@y");
        d.headers.push("Content-Type", DTMF_CONTENT_TYPE);
        d.body = dtmf_body('5');
        assert_eq!(read_info(&d), InfoContent::Digits("5".into()));
    }
}

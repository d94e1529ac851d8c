//! Push payloads: the `twi_*` map a push notification carries, parsed into what an
//! invite or a cancelled invite needs. Also the custom-parameter query string and the
//! SHAKEN/STIR status, which SIP INVITEs carry too.
//!
//! Everything here is a pure function of its input. Bad input is a [`VoiceError`]
//! with code 31100 (malformed request) that names the key at fault; nothing panics.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, VoiceError};

/// `twi_message_type` of an incoming call.
pub const MESSAGE_TYPE_CALL: &str = "twilio.voice.call";
/// `twi_message_type` of a cancelled call.
pub const MESSAGE_TYPE_CANCEL: &str = "twilio.voice.cancel";

/// Whether the caller's number was verified (SHAKEN/STIR).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallerInfo {
    /// `Some(true)` only for attestation A (`TN-Validation-Passed-A`); `Some(false)` for
    /// B, C or a failed validation; `None` when unknown.
    pub verified: Option<bool>,
}

impl CallerInfo {
    /// The caller info for a STIR status string (`twi_stir_status`, or the
    /// `verstat` of a SIP identity header).
    ///
    /// ```
    /// use dialtone_core::CallerInfo;
    /// assert_eq!(CallerInfo::from_stir_status(Some("TN-Validation-Passed-A")).verified, Some(true));
    /// assert_eq!(CallerInfo::from_stir_status(Some("TN-Validation-Passed-C")).verified, Some(false));
    /// assert_eq!(CallerInfo::from_stir_status(None).verified, None);
    /// ```
    pub fn from_stir_status(status: Option<&str>) -> Self {
        let verified = match status.map(str::trim) {
            Some("TN-Validation-Passed-A") => Some(true),
            Some(
                "TN-Validation-Passed-B"
                | "TN-Validation-Passed-C"
                | "TN-Validation-Failed-A"
                | "TN-Validation-Failed-B"
                | "TN-Validation-Failed-C"
                | "TN-Validation-Failed"
                | "No-TN-Validation",
            ) => Some(false),
            _ => None,
        };
        CallerInfo { verified }
    }
}

/// What an invite carries, from a push payload or from an incoming INVITE.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct InviteDetails {
    /// The call SID.
    pub call_sid: String,
    /// The caller, when known.
    pub from: Option<String>,
    /// The callee.
    pub to: String,
    /// The custom parameters, values decoded.
    pub custom_parameters: BTreeMap<String, String>,
    /// Caller verification.
    pub caller_info: CallerInfo,
    /// The account the call belongs to.
    pub account_sid: Option<String>,
    /// The token that joins the waiting call when a push invite is accepted.
    pub bridge_token: Option<String>,
    /// The push message's id.
    pub message_id: Option<String>,
}

impl InviteDetails {
    /// Details with a call SID and a callee; everything else empty.
    pub fn new(call_sid: impl Into<String>, to: impl Into<String>) -> Self {
        InviteDetails {
            call_sid: call_sid.into(),
            from: None,
            to: to.into(),
            custom_parameters: BTreeMap::new(),
            caller_info: CallerInfo::default(),
            account_sid: None,
            bridge_token: None,
            message_id: None,
        }
    }

    /// Sets the caller.
    pub fn with_from(mut self, from: impl Into<String>) -> Self {
        self.from = Some(from.into());
        self
    }

    /// Sets the custom parameters.
    pub fn with_custom_parameters(mut self, params: BTreeMap<String, String>) -> Self {
        self.custom_parameters = params;
        self
    }

    /// Sets the caller info.
    pub fn with_caller_info(mut self, info: CallerInfo) -> Self {
        self.caller_info = info;
        self
    }

    /// Sets the bridge token.
    pub fn with_bridge_token(mut self, token: impl Into<String>) -> Self {
        self.bridge_token = Some(token.into());
        self
    }
}

/// A parsed push payload.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notification {
    /// `twilio.voice.call`: an incoming call.
    Call(InviteDetails),
    /// `twilio.voice.cancel`: the caller hung up before the answer.
    Cancel(InviteDetails),
}

/// A push payload as the application received it: a string map or a JSON text.
#[derive(Clone, Debug, PartialEq)]
pub enum NotificationPayload {
    /// Keys to string values.
    Map(HashMap<String, String>),
    /// A JSON object (its known keys must hold strings).
    Json(String),
}

impl From<HashMap<String, String>> for NotificationPayload {
    fn from(m: HashMap<String, String>) -> Self {
        NotificationPayload::Map(m)
    }
}

impl From<BTreeMap<String, String>> for NotificationPayload {
    fn from(m: BTreeMap<String, String>) -> Self {
        NotificationPayload::Map(m.into_iter().collect())
    }
}

impl From<&str> for NotificationPayload {
    fn from(s: &str) -> Self {
        NotificationPayload::Json(s.to_owned())
    }
}

impl From<String> for NotificationPayload {
    fn from(s: String) -> Self {
        NotificationPayload::Json(s)
    }
}

const KNOWN_KEYS: &[&str] = &[
    "twi_message_type",
    "twi_call_sid",
    "twi_from",
    "twi_to",
    "twi_account_sid",
    "twi_bridge_token",
    "twi_message_id",
    "twi_params",
    "twi_stir_status",
];

fn malformed(msg: impl Into<String>) -> VoiceError {
    VoiceError::new(ErrorCode::MalformedRequest, msg)
}

impl NotificationPayload {
    /// The known `twi_*` keys as strings; unknown keys are dropped.
    fn known_keys(&self) -> Result<HashMap<&'static str, String>, VoiceError> {
        let mut out = HashMap::new();
        match self {
            NotificationPayload::Map(m) => {
                if m.is_empty() {
                    return Err(malformed("the push payload is empty"));
                }
                for key in KNOWN_KEYS {
                    if let Some(v) = m.get(*key) {
                        out.insert(*key, v.clone());
                    }
                }
            }
            NotificationPayload::Json(text) => {
                let value: serde_json::Value = serde_json::from_str(text)
                    .map_err(|e| malformed(format!("the push payload is not JSON: {e}")))?;
                let obj =
                    value.as_object().ok_or_else(|| malformed("the push payload is not a JSON object"))?;
                if obj.is_empty() {
                    return Err(malformed("the push payload is empty"));
                }
                for key in KNOWN_KEYS {
                    match obj.get(*key) {
                        None | Some(serde_json::Value::Null) => {}
                        Some(serde_json::Value::String(s)) => {
                            out.insert(*key, s.clone());
                        }
                        Some(other) => {
                            return Err(malformed(format!(
                                "push payload key {key} holds {other}, expected a string"
                            )))
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Parses a push payload. `Ok(None)` means it is not a Dialtone voice message (no or
/// another `twi_message_type`); the application should handle it itself.
///
/// ```
/// use dialtone_core::push::{parse_notification, Notification};
/// let json = r#"{"twi_message_type":"twilio.voice.call","twi_call_sid":"CA1",
///               "twi_to":"bob","twi_from":"client:alice","twi_params":"name=J%C3%BCrgen"}"#;
/// let Some(Notification::Call(d)) = parse_notification(&json.into()).unwrap() else { panic!() };
/// assert_eq!(d.custom_parameters["name"], "Jürgen");
/// ```
pub fn parse_notification(payload: &NotificationPayload) -> Result<Option<Notification>, VoiceError> {
    let mut keys = payload.known_keys()?;
    let kind = match keys.get("twi_message_type").map(String::as_str) {
        Some(MESSAGE_TYPE_CALL) => MESSAGE_TYPE_CALL,
        Some(MESSAGE_TYPE_CANCEL) => MESSAGE_TYPE_CANCEL,
        _ => return Ok(None),
    };
    let mut required = |key: &'static str| {
        keys.remove(key)
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| malformed(format!("the push payload has no {key}")))
    };
    let call_sid = required("twi_call_sid")?;
    let to = required("twi_to")?;
    let custom_parameters = match keys.get("twi_params") {
        Some(q) => parse_custom_parameters(q)?,
        None => BTreeMap::new(),
    };
    let details = InviteDetails {
        call_sid,
        to,
        from: keys.remove("twi_from").filter(|v| !v.is_empty()),
        custom_parameters,
        caller_info: CallerInfo::from_stir_status(keys.get("twi_stir_status").map(String::as_str)),
        account_sid: keys.remove("twi_account_sid"),
        bridge_token: keys.remove("twi_bridge_token"),
        message_id: keys.remove("twi_message_id"),
    };
    Ok(Some(if kind == MESSAGE_TYPE_CALL {
        Notification::Call(details)
    } else {
        Notification::Cancel(details)
    }))
}

/// Parses custom parameters in query-string form: `name=value&name2=value2`, values
/// percent-decoded (URI encoding: `+` stays `+`), names taken as they are. A pair
/// without `=` has an empty value; empty pairs are skipped; a repeated name keeps its
/// last value. A malformed escape or a value that does not decode to UTF-8 is 31100.
///
/// ```
/// use dialtone_core::push::parse_custom_parameters;
/// let p = parse_custom_parameters("caller_first_name=alice&greeting=hi%20there&a%20b=1").unwrap();
/// assert_eq!(p["greeting"], "hi there");
/// assert_eq!(p["a%20b"], "1");
/// assert!(parse_custom_parameters("x=%G0").is_err());
/// ```
pub fn parse_custom_parameters(query: &str) -> Result<BTreeMap<String, String>, VoiceError> {
    let mut out = BTreeMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, raw) = pair.split_once('=').unwrap_or((pair, ""));
        if name.is_empty() {
            return Err(malformed(format!("custom parameter {pair:?} has no name")));
        }
        let value =
            percent_decode_strict(raw).map_err(|why| malformed(format!("custom parameter {name}: {why}")))?;
        out.insert(name.to_owned(), value);
    }
    Ok(out)
}

/// Encodes custom parameters the way [`parse_custom_parameters`] reads them: values
/// percent-encoded like JavaScript's `encodeURIComponent`, names as they are.
pub fn encode_custom_parameters(params: &BTreeMap<String, String>) -> String {
    const COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'!')
        .remove(b'~')
        .remove(b'*')
        .remove(b'\'')
        .remove(b'(')
        .remove(b')');
    params
        .iter()
        .map(|(k, v)| format!("{k}={}", percent_encoding::utf8_percent_encode(v, COMPONENT)))
        .collect::<Vec<_>>()
        .join("&")
}

fn percent_decode_strict(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(|| format!("truncated escape at byte {i}"))?;
            let digit = |b: u8| (b as char).to_digit(16);
            match (digit(hex[0]), digit(hex[1])) {
                (Some(h), Some(l)) => out.push((h * 16 + l) as u8),
                _ => return Err(format!("bad escape %{}{} at byte {i}", hex[0] as char, hex[1] as char)),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the decoded value is not UTF-8".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn map(pairs: &[(&str, &str)]) -> NotificationPayload {
        NotificationPayload::Map(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    fn call_payload() -> Vec<(&'static str, &'static str)> {
        vec![
            ("twi_message_type", "twilio.voice.call"),
            ("twi_call_sid", "CA0123456789abcdef0123456789abcdef"),
            ("twi_from", "client:alice"),
            ("twi_to", "bob"),
            ("twi_account_sid", "AC1"),
            ("twi_bridge_token", "bt"),
            ("twi_message_id", "m1"),
            ("twi_params", "caller_first_name=alice&caller_last_name=smith&note=50%25%20off"),
            ("twi_stir_status", "TN-Validation-Passed-A"),
            ("some_other_key", "ignored"),
        ]
    }

    #[test]
    fn a_full_call_payload() {
        let Some(Notification::Call(d)) = parse_notification(&map(&call_payload())).unwrap() else {
            panic!("expected a call")
        };
        assert_eq!(d.call_sid, "CA0123456789abcdef0123456789abcdef");
        assert_eq!(d.from.as_deref(), Some("client:alice"));
        assert_eq!(d.to, "bob");
        assert_eq!(d.custom_parameters["caller_first_name"], "alice");
        assert_eq!(d.custom_parameters["caller_last_name"], "smith");
        assert_eq!(d.custom_parameters["note"], "50% off");
        assert_eq!(d.caller_info.verified, Some(true));
        assert_eq!(d.bridge_token.as_deref(), Some("bt"));
        assert_eq!(d.account_sid.as_deref(), Some("AC1"));
        assert_eq!(d.message_id.as_deref(), Some("m1"));
    }

    #[test]
    fn json_payload_equals_map_payload() {
        let obj: serde_json::Map<String, serde_json::Value> = call_payload()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), serde_json::Value::String(v.to_owned())))
            .collect();
        let json = serde_json::Value::Object(obj).to_string();
        assert_eq!(
            parse_notification(&json.as_str().into()).unwrap(),
            parse_notification(&map(&call_payload())).unwrap()
        );
    }

    #[test]
    fn names_are_not_decoded_and_plus_stays() {
        let p = parse_custom_parameters("a%20b=c+d&flag&&x=").unwrap();
        assert_eq!(p["a%20b"], "c+d");
        assert_eq!(p["flag"], "");
        assert_eq!(p["x"], "");
        assert_eq!(p.len(), 3);
    }

    #[test]
    fn other_message_types_are_not_ours() {
        assert_eq!(parse_notification(&map(&[("twi_message_type", "twilio.other")])).unwrap(), None);
        assert_eq!(parse_notification(&map(&[("aps", "x")])).unwrap(), None);
        assert_eq!(parse_notification(&r#"{"data":{"a":1}}"#.into()).unwrap(), None);
    }

    #[test]
    fn cancel_payload() {
        let p =
            map(&[("twi_message_type", "twilio.voice.cancel"), ("twi_call_sid", "CA9"), ("twi_to", "bob")]);
        let Some(Notification::Cancel(d)) = parse_notification(&p).unwrap() else { panic!() };
        assert_eq!(d.call_sid, "CA9");
        assert_eq!(d.from, None);
        assert_eq!(d.caller_info.verified, None);
    }

    #[test]
    fn bad_payloads_are_31100_naming_the_problem() {
        let cases: Vec<(NotificationPayload, &str)> = vec![
            (map(&[]), "empty"),
            ("".into(), "not JSON"),
            ("{}".into(), "empty"),
            ("[1,2]".into(), "not a JSON object"),
            (map(&[("twi_message_type", "twilio.voice.call"), ("twi_to", "bob")]), "twi_call_sid"),
            (map(&[("twi_message_type", "twilio.voice.call"), ("twi_call_sid", "CA1")]), "twi_to"),
            (
                map(&[("twi_message_type", "twilio.voice.call"), ("twi_call_sid", " "), ("twi_to", "b")]),
                "twi_call_sid",
            ),
            (
                map(&[
                    ("twi_message_type", "twilio.voice.call"),
                    ("twi_call_sid", "CA1"),
                    ("twi_to", "b"),
                    ("twi_params", "a=%zz"),
                ]),
                "bad escape",
            ),
            (
                map(&[
                    ("twi_message_type", "twilio.voice.call"),
                    ("twi_call_sid", "CA1"),
                    ("twi_to", "b"),
                    ("twi_params", "a=%4"),
                ]),
                "truncated",
            ),
            (
                map(&[
                    ("twi_message_type", "twilio.voice.call"),
                    ("twi_call_sid", "CA1"),
                    ("twi_to", "b"),
                    ("twi_params", "a=%FF"),
                ]),
                "UTF-8",
            ),
            (
                r#"{"twi_message_type":"twilio.voice.call","twi_call_sid":5,"twi_to":"b"}"#.into(),
                "twi_call_sid",
            ),
        ];
        for (payload, needle) in cases {
            let err = parse_notification(&payload).expect_err(needle);
            assert_eq!(err.code(), 31100, "{payload:?}");
            assert!(err.message().contains(needle), "{:?} lacks {needle:?}", err.message());
        }
    }

    #[test]
    fn stir_statuses() {
        for (s, want) in [
            ("TN-Validation-Passed-A", Some(true)),
            ("TN-Validation-Passed-B", Some(false)),
            ("TN-Validation-Passed-C", Some(false)),
            ("TN-Validation-Failed-A", Some(false)),
            ("No-TN-Validation", Some(false)),
            ("something-new", None),
        ] {
            assert_eq!(CallerInfo::from_stir_status(Some(s)).verified, want, "{s}");
        }
    }

    proptest! {
        #[test]
        fn encode_then_parse_round_trips(params in proptest::collection::btree_map("[a-z_]{1,8}", "\\PC{0,12}", 0..6)) {
            prop_assert_eq!(parse_custom_parameters(&encode_custom_parameters(&params)).unwrap(), params);
        }

        #[test]
        fn arbitrary_query_strings_never_panic(q in "\\PC{0,64}") {
            if let Err(e) = parse_custom_parameters(&q) { prop_assert_eq!(e.code(), 31100); }
        }

        #[test]
        fn arbitrary_json_never_panics(s in "\\PC{0,64}") {
            let _ = parse_notification(&NotificationPayload::Json(s));
        }
    }
}

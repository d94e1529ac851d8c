//! The error catalogue: every failure that reaches an application carries one of
//! these stable numeric codes (the same numbers as the Twilio Voice SDKs).
//!
//! This module owns the table of codes, their names, descriptions and failure
//! reasons, and the mapping between SIP response statuses and codes. It does not
//! decide *when* an error happens; the state machines and parts do.
//!
//! SIP final responses map onto codes as `31000 + status` for the 4xx to 6xx statuses
//! in the catalogue. A status the catalogue does not list maps to the `x00` code of
//! its class, the way RFC 3261 §8.1.3.2 tells a UAC to treat an unknown response
//! (so `488` becomes `31400`, `599` becomes `31500`).

use std::fmt;

macro_rules! catalogue {
    ($( $(#[$doc:meta])* $variant:ident = $code:literal, $name:literal, $description:literal, $reason:literal; )+) => {
        /// A catalogue code. Each variant documents its number; [`ErrorCode::code`]
        /// returns it, [`ErrorCode::name`] a stable name, [`ErrorCode::description`]
        /// a short description and [`ErrorCode::reason`] the likely cause.
        #[non_exhaustive]
        #[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )+
        }

        impl ErrorCode {
            /// Every code in the catalogue, in numeric order.
            pub const ALL: &'static [ErrorCode] = &[ $( ErrorCode::$variant, )+ ];

            /// The stable numeric code, for example `31603`.
            pub const fn code(self) -> u32 {
                match self { $( ErrorCode::$variant => $code, )+ }
            }

            /// The stable name, for example `"Decline"`.
            pub const fn name(self) -> &'static str {
                match self { $( ErrorCode::$variant => $name, )+ }
            }

            /// A short description, for example `"Decline"` or `"Busy Everywhere"`.
            pub const fn description(self) -> &'static str {
                match self { $( ErrorCode::$variant => $description, )+ }
            }

            /// The likely reason for the failure, written for the person reading a log.
            pub const fn reason(self) -> &'static str {
                match self { $( ErrorCode::$variant => $reason, )+ }
            }

            /// The catalogue entry for a numeric code, if there is one.
            pub const fn from_code(code: u32) -> Option<ErrorCode> {
                match code { $( $code => Some(ErrorCode::$variant), )+ _ => None }
            }
        }
    };
}

catalogue! {
    /// 20101
    AccessTokenInvalid = 20101, "AccessTokenInvalid", "Invalid access token",
        "The access token could not be decoded or validated.";
    /// 20102
    AccessTokenHeaderInvalid = 20102, "AccessTokenHeaderInvalid", "Invalid access token header",
        "The access token header is not HS256 with content type twilio-fpa;v=1.";
    /// 20103
    AccessTokenIssuerInvalid = 20103, "AccessTokenIssuerInvalid", "Invalid access token issuer/subject",
        "The issuer (API key SID) or subject (account SID) of the access token is not known.";
    /// 20104
    AccessTokenExpired = 20104, "AccessTokenExpired", "Access token expired or expiration date invalid",
        "The access token's exp claim is in the past or is not a valid time; mint a new token.";
    /// 20105
    AccessTokenNotYetValid = 20105, "AccessTokenNotYetValid", "Access token not yet valid",
        "The access token's nbf claim is in the future; check the clocks of both machines.";
    /// 20106
    AccessTokenGrantsInvalid = 20106, "AccessTokenGrantsInvalid", "Invalid access token grants",
        "The access token has no identity or no voice grant for what was asked.";
    /// 20107
    AccessTokenSignatureInvalid = 20107, "AccessTokenSignatureInvalid", "Invalid access token signature",
        "The access token was not signed with the secret of the API key it names.";
    /// 20151
    AuthenticationFailed = 20151, "AuthenticationFailed", "Authentication failed",
        "The credentials presented were refused.";
    /// 20157
    ExpirationTimeExceedsMaxTimeAllowed = 20157, "ExpirationTimeExceedsMaxTimeAllowed", "Expiration time exceeds maximum time allowed",
        "The access token's time to live is over 24 hours.";
    /// 31000
    UnknownError = 31000, "UnknownError", "Unknown error",
        "An error that has no more specific code; the message says what happened.";
    /// 31001
    ApplicationNotFound = 31001, "ApplicationNotFoundError", "Application not found",
        "The application SID in the access token's outgoing grant is not configured.";
    /// 31002
    ConnectionDeclined = 31002, "ConnectionDeclinedError", "Connection declined",
        "The call was declined before it could be set up.";
    /// 31003
    ConnectionTimeout = 31003, "ConnectionTimeoutError", "Connection timeout",
        "The call could not be set up in time.";
    /// 31005
    ConnectionError = 31005, "ConnectionError", "Connection error",
        "The connection to the signaling server failed or was refused.";
    /// 31008
    CallCancelled = 31008, "CallCancelledError", "Call cancelled",
        "The caller hung up before the call was answered.";
    /// 31009
    TransportError = 31009, "TransportError", "Transport error",
        "The signaling transport failed to send or receive.";
    /// 31100
    MalformedRequest = 31100, "MalformedRequestError", "Malformed request",
        "A request or payload could not be parsed.";
    /// 31104
    InvalidBridgeToken = 31104, "InvalidBridgeTokenError", "Invalid bridge token",
        "The bridge token of a push notification is invalid, expired or for another call.";
    /// 31105
    InvalidClientName = 31105, "InvalidClientNameError", "Invalid client name",
        "A client identity may have at most 121 letters, digits and underscores.";
    /// 31201
    AuthorizationError = 31201, "AuthorizationError", "Authorization error",
        "The access token does not allow what was asked.";
    /// 31204
    InvalidJwt = 31204, "InvalidJwtError", "JWT token is invalid",
        "The access token is not a well-formed JWT.";
    /// 31205
    JwtExpired = 31205, "JwtTokenExpiredError", "JWT token expired",
        "The access token has expired; call update_token with a new one.";
    /// 31206
    RateExceeded = 31206, "RateExceededError", "Rate exceeded",
        "More than the allowed number of requests (for call messages, 10 a minute on one call).";
    /// 31209
    ReconnectNotAuthorized = 31209, "ReconnectAttemptNotAuthorizedError", "Reconnect attempt is not authorized",
        "The server refused to re-attach this call after a signaling reconnect.";
    /// 31210
    CallMessageTypeInvalid = 31210, "CallMessageEventTypeInvalidError", "Call message type invalid",
        "A call message's type must be user-defined-message.";
    /// 31211
    CallMessageUnexpectedState = 31211, "CallMessageUnexpectedStateError", "Call message in unexpected state",
        "A call message can only be sent while the invite is pending or the call is ringing or connected.";
    /// 31212
    PayloadSizeExceeded = 31212, "PayloadSizeExceededError", "Payload size exceeded",
        "A call message's content is over 10 KB.";
    /// 31400
    BadRequest = 31400, "BadRequest", "Bad Request",
        "The peer could not understand the request (SIP 400, or a 4xx it gave no more detail for).";
    /// 31403
    Forbidden = 31403, "Forbidden", "Forbidden",
        "The server understood the request but refused it (SIP 403).";
    /// 31404
    NotFound = 31404, "NotFound", "Not Found",
        "The callee does not exist here (SIP 404).";
    /// 31408
    RequestTimeout = 31408, "RequestTimeout", "Request Timeout",
        "No final answer came in time (SIP 408).";
    /// 31480
    TemporarilyUnavailable = 31480, "TemporarilyUnavailable", "Temporarily Unavailable",
        "The callee is known but not reachable now (SIP 480).";
    /// 31481
    CallTransactionDoesNotExist = 31481, "CallTransactionDoesNotExist", "Call/Transaction Does Not Exist",
        "The request names a call or transaction the peer does not know (SIP 481).";
    /// 31486
    BusyHere = 31486, "BusyHere", "Busy Here",
        "The callee is busy on this device (SIP 486).";
    /// 31487
    RequestTerminated = 31487, "RequestTerminated", "Request Terminated",
        "The request was cancelled (SIP 487).";
    /// 31500
    InternalServerError = 31500, "InternalServerError", "Internal Server Error",
        "The peer failed while handling the request (SIP 500, or a 5xx it gave no more detail for).";
    /// 31502
    BadGateway = 31502, "BadGateway", "Bad Gateway",
        "A gateway got a bad answer from the next hop (SIP 502).";
    /// 31503
    ServiceUnavailable = 31503, "ServiceUnavailable", "Service Unavailable",
        "The peer is overloaded or down for maintenance (SIP 503).";
    /// 31504
    GatewayTimeout = 31504, "GatewayTimeout", "Gateway Timeout",
        "A gateway got no answer in time from the next hop (SIP 504).";
    /// 31530
    DnsResolutionError = 31530, "DNSResolutionError", "DNS Resolution Error",
        "The host name of the server or callee could not be resolved.";
    /// 31600
    BusyEverywhere = 31600, "BusyEverywhere", "Busy Everywhere",
        "The callee is busy everywhere or rejected the call (SIP 600, or a 6xx it gave no more detail for).";
    /// 31603
    Decline = 31603, "Decline", "Decline",
        "The callee does not wish to take the call (SIP 603).";
    /// 31604
    DoesNotExistAnywhere = 31604, "DoesNotExistAnywhere", "Does Not Exist Anywhere",
        "The callee does not exist anywhere (SIP 604).";
    /// 53000
    SignalingConnectionError = 53000, "SignalingConnectionError", "Signaling connection error",
        "The signaling connection could not be established.";
    /// 53001
    SignalingConnectionDisconnected = 53001, "SignalingConnectionDisconnectedError", "Signaling connection disconnected",
        "The signaling connection dropped, for example on a network change.";
    /// 53400
    ClientLocalDescFailed = 53400, "ClientLocalDescFailed", "Client is unable to create or apply a local media description",
        "The local media engine could not make or apply its offer or answer.";
    /// 53401
    ServerLocalDescFailed = 53401, "ServerLocalDescFailed", "Server is unable to create or apply a local media description",
        "The server's media side could not make or apply its offer or answer.";
    /// 53402
    ClientRemoteDescFailed = 53402, "ClientRemoteDescFailed", "Client is unable to apply a remote media description",
        "The peer's SDP could not be applied here.";
    /// 53403
    ServerRemoteDescFailed = 53403, "ServerRemoteDescFailed", "Server is unable to apply a remote media description",
        "The server could not apply this client's SDP.";
    /// 53404
    NoSupportedCodec = 53404, "NoSupportedCodec", "No supported codec",
        "The two sides have no audio codec in common.";
    /// 53405
    MediaConnectionFailed = 53405, "MediaConnectionFailed", "Media connection failed",
        "Media stopped flowing or could not be established.";
    /// 53407
    MediaDtlsTransportFailed = 53407, "MediaDtlsTransportFailedError", "DTLS handshake failed",
        "The DTLS handshake of a WebRTC media connection failed.";
}

impl ErrorCode {
    /// The code for a SIP final response status, or `None` for a status below 400
    /// (not an error) or above 699 (not a SIP status).
    ///
    /// A 4xx-6xx status in the catalogue maps to `31000 + status`; any other status of
    /// those classes maps to the `x00` code of its class (RFC 3261 §8.1.3.2).
    ///
    /// ```
    /// use dialtone_core::ErrorCode;
    /// assert_eq!(ErrorCode::from_sip_status(486), Some(ErrorCode::BusyHere));
    /// assert_eq!(ErrorCode::from_sip_status(488), Some(ErrorCode::BadRequest));
    /// assert_eq!(ErrorCode::from_sip_status(200), None);
    /// ```
    pub fn from_sip_status(status: u16) -> Option<ErrorCode> {
        if !(400..=699).contains(&status) {
            return None;
        }
        let exact =
            ErrorCode::from_code(31000 + u32::from(status)).filter(|c| c.sip_status() == Some(status));
        exact.or_else(|| ErrorCode::from_code(31000 + u32::from(status / 100 * 100)))
    }

    /// The SIP status this code stands for, for the codes `31400` to `31699` that name
    /// a real SIP status (every one of them except `31530`, DNS resolution).
    ///
    /// ```
    /// use dialtone_core::ErrorCode;
    /// assert_eq!(ErrorCode::Decline.sip_status(), Some(603));
    /// assert_eq!(ErrorCode::DnsResolutionError.sip_status(), None);
    /// ```
    pub fn sip_status(self) -> Option<u16> {
        match self {
            ErrorCode::DnsResolutionError => None,
            c if (31400..=31699).contains(&c.code()) => u16::try_from(c.code() - 31000).ok(),
            _ => None,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code(), self.name())
    }
}

/// The one error type of the Dialtone API: a catalogue [`ErrorCode`] and a message
/// saying what happened this time.
///
/// ```
/// use dialtone_core::{ErrorCode, VoiceError};
/// let e = VoiceError::from_sip_response(600, "Call Rejected");
/// assert_eq!(e.code(), 31600);
/// assert_eq!(e.kind(), ErrorCode::BusyEverywhere);
/// assert_eq!(e.message(), "Busy Everywhere : SIP/2.0 600 Call Rejected");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
#[non_exhaustive]
pub struct VoiceError {
    kind: ErrorCode,
    message: String,
}

impl VoiceError {
    /// An error with a message of its own.
    pub fn new(kind: ErrorCode, message: impl Into<String>) -> Self {
        VoiceError { kind, message: message.into() }
    }

    /// An error whose message is the catalogue description.
    pub fn from_kind(kind: ErrorCode) -> Self {
        VoiceError { kind, message: kind.description().to_owned() }
    }

    /// The error for a SIP final response; the message reads
    /// `"<description> : SIP/2.0 <status> <reason phrase>"`. A status below 400 is a
    /// caller's bug and becomes `31000` with the status in the message.
    pub fn from_sip_response(status: u16, reason_phrase: &str) -> Self {
        match ErrorCode::from_sip_status(status) {
            Some(kind) => VoiceError::new(
                kind,
                format!("{} : SIP/2.0 {} {}", kind.description(), status, reason_phrase),
            ),
            None => VoiceError::new(
                ErrorCode::UnknownError,
                format!("SIP/2.0 {status} {reason_phrase} is not an error response"),
            ),
        }
    }

    /// The catalogue entry.
    pub fn kind(&self) -> ErrorCode {
        self.kind
    }

    /// The numeric code, for example `31603`.
    pub fn code(&self) -> u32 {
        self.kind.code()
    }

    /// The catalogue's stable name.
    pub fn name(&self) -> &'static str {
        self.kind.name()
    }

    /// The catalogue's description.
    pub fn description(&self) -> &'static str {
        self.kind.description()
    }

    /// The catalogue's likely reason.
    pub fn reason(&self) -> &'static str {
        self.kind.reason()
    }

    /// What happened this time.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The SIP status to answer with, where the code stands for one.
    pub fn sip_status(&self) -> Option<u16> {
        self.kind.sip_status()
    }
}

impl From<ErrorCode> for VoiceError {
    fn from(kind: ErrorCode) -> Self {
        VoiceError::from_kind(kind)
    }
}

/// The result type of the Dialtone API.
pub type Result<T, E = VoiceError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// The codes of design.md's catalogue, copied by hand: a code removed or renumbered
    /// in the table above fails here.
    const DESIGN_CODES: &[u32] = &[
        20101, 20102, 20103, 20104, 20105, 20106, 20107, 20151, 20157, 31000, 31001, 31002, 31003, 31005,
        31008, 31009, 31100, 31104, 31105, 31201, 31204, 31205, 31206, 31209, 31210, 31211, 31212, 31400,
        31403, 31404, 31408, 31480, 31481, 31486, 31487, 31500, 31502, 31503, 31504, 31530, 31600, 31603,
        31604, 53000, 53001, 53400, 53401, 53402, 53403, 53404, 53405, 53407,
    ];

    #[test]
    fn catalogue_matches_design() {
        let ours: Vec<u32> = ErrorCode::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(ours, DESIGN_CODES);
    }

    #[test]
    fn codes_and_names_are_unique_and_round_trip() {
        let mut names = HashSet::new();
        for &c in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_code(c.code()), Some(c));
            assert!(names.insert(c.name()), "duplicate name {}", c.name());
            assert!(!c.description().is_empty() && !c.reason().is_empty());
        }
        assert_eq!(ErrorCode::from_code(31999), None);
    }

    #[test]
    fn sip_status_maps_both_ways() {
        for &c in ErrorCode::ALL {
            if let Some(status) = c.sip_status() {
                assert_eq!(c.code(), 31000 + u32::from(status));
                assert_eq!(ErrorCode::from_sip_status(status), Some(c));
            }
        }
        let with_status = ErrorCode::ALL.iter().filter(|c| c.sip_status().is_some()).count();
        assert_eq!(with_status, 15);
    }

    #[test]
    fn unknown_statuses_fall_back_to_their_class() {
        assert_eq!(ErrorCode::from_sip_status(488), Some(ErrorCode::BadRequest));
        assert_eq!(ErrorCode::from_sip_status(401), Some(ErrorCode::BadRequest));
        assert_eq!(ErrorCode::from_sip_status(530), Some(ErrorCode::InternalServerError));
        assert_eq!(ErrorCode::from_sip_status(606), Some(ErrorCode::BusyEverywhere));
        assert_eq!(ErrorCode::from_sip_status(399), None);
        assert_eq!(ErrorCode::from_sip_status(700), None);
    }

    #[test]
    fn sip_response_message_and_display() {
        let e = VoiceError::from_sip_response(603, "Decline");
        assert_eq!(e.kind(), ErrorCode::Decline);
        assert_eq!(e.sip_status(), Some(603));
        assert_eq!(e.to_string(), "31603 Decline: Decline : SIP/2.0 603 Decline");
        let odd = VoiceError::from_sip_response(180, "Ringing");
        assert_eq!(odd.code(), 31000);
    }
}

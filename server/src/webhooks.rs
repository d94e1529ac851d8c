//! The server's requests to applications: voice URLs, `<Dial action>`s and message
//! subscription callbacks, over [`dialtone_http`] (https or http, HTTP/2 where
//! offered, pooled), each signed with `X-Twilio-Signature` as Twilio signs its own, so
//! that an application checks it with Twilio's helper libraries (`RequestValidator`).
//!
//! The retry policy (`docs/server.md`): a voice URL or an action is asked once, within
//! its timeout, and a failure (unreachable, slow, not 2xx) fails the call with 31502;
//! a message callback that fails for a transient reason (no answer, a 5xx or 429) is
//! tried twice more, 1 s and 2 s later; a 4xx is final.

use std::time::Duration;

use base64::Engine as _;
use dialtone_core::{ErrorCode, VoiceError};
use dialtone_http::{Client, HttpError, Method, Request, Response};

/// The header an application checks.
pub const SIGNATURE_HEADER: &str = "X-Twilio-Signature";

/// How a webhook is asked: Twilio's `method` (`POST` unless `GET` is chosen).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HookMethod {
    /// Parameters in the URL's query.
    Get,
    /// Parameters as a form body.
    #[default]
    Post,
}

impl HookMethod {
    /// `GET` or `POST` (any case); anything else is refused.
    pub fn parse(s: &str) -> Result<HookMethod, VoiceError> {
        match s.trim().to_ascii_uppercase().as_str() {
            "GET" => Ok(HookMethod::Get),
            "POST" => Ok(HookMethod::Post),
            other => Err(VoiceError::new(
                ErrorCode::MalformedRequest,
                format!("method {other:?} is not GET or POST"),
            )),
        }
    }
}

/// `X-Twilio-Signature` of a request to `url` with these POST parameters (none for a
/// GET, whose parameters are in `url`): HMAC-SHA1, keyed by the auth token, of the URL
/// followed by each parameter's name and value, sorted by name (then value), base64.
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut data = url.to_owned();
    for (k, v) in sorted {
        data.push_str(k);
        data.push_str(v);
    }
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, auth_token.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&key, data.as_bytes()).as_ref())
}

/// Form encoding: everything but the unreserved characters (RFC 3986 §2.3).
fn form_encode(params: &[(String, String)]) -> String {
    const FORM: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    let enc = |s: &str| percent_encoding::utf8_percent_encode(s, FORM).to_string();
    params.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

/// The server's webhook client (cheap to clone).
#[derive(Clone, Debug)]
pub struct Webhooks {
    client: Client,
    auth_token: String,
    timeout: Duration,
}

/// A failed webhook, for the call: 31502 with what went wrong.
fn gateway(msg: impl Into<String>) -> VoiceError {
    VoiceError::new(ErrorCode::BadGateway, msg)
}

impl Webhooks {
    /// Requests signed with `auth_token`, each within `timeout`.
    pub fn new(client: Client, auth_token: impl Into<String>, timeout: Duration) -> Webhooks {
        Webhooks { client, auth_token: auth_token.into(), timeout }
    }

    /// One signed request: the answer, whatever its status.
    pub async fn send(
        &self,
        method: HookMethod,
        url: &str,
        params: &[(String, String)],
    ) -> Result<Response, HttpError> {
        let request = match method {
            HookMethod::Post => Request::new(Method::Post, url)
                .header(SIGNATURE_HEADER, signature(&self.auth_token, url, params))
                .body("application/x-www-form-urlencoded", form_encode(params)),
            HookMethod::Get => {
                let full = if params.is_empty() {
                    url.to_owned()
                } else {
                    let sep = if url.contains('?') { '&' } else { '?' };
                    format!("{url}{sep}{}", form_encode(params))
                };
                Request::new(Method::Get, full.clone())
                    .header(SIGNATURE_HEADER, signature(&self.auth_token, &full, &[]))
            }
        };
        self.client.send(request.timeout(self.timeout)).await
    }

    /// Asks a voice URL or an action for TwiML, once: the body of a 2xx, else 31502.
    pub async fn fetch_twiml(
        &self,
        method: HookMethod,
        url: &str,
        params: &[(String, String)],
    ) -> Result<String, VoiceError> {
        let r = self.send(method, url, params).await.map_err(|e| gateway(e.to_string()))?;
        if !r.is_success() {
            return Err(gateway(format!("{url} answered HTTP {}", r.status)));
        }
        Ok(r.text())
    }

    /// POSTs a callback (a call message to a subscription), retrying a transient
    /// failure twice, 1 s and 2 s later.
    pub async fn callback(&self, url: &str, params: &[(String, String)]) -> Result<(), VoiceError> {
        let mut last = String::new();
        for (attempt, wait) in [0u64, 1, 2].into_iter().enumerate() {
            if wait > 0 {
                tokio::time::sleep(Duration::from_secs(wait)).await;
            }
            match self.send(HookMethod::Post, url, params).await {
                Ok(r) if r.is_success() => return Ok(()),
                Ok(r) if r.status >= 500 || r.status == 429 => last = format!("HTTP {}", r.status),
                Ok(r) => return Err(gateway(format!("{url} answered HTTP {}", r.status))),
                Err(e) if e.is_transient() => last = e.to_string(),
                Err(e) => return Err(gateway(e.to_string())),
            }
            tracing::debug!(%url, attempt, error = %last, "a callback failed; trying again");
        }
        Err(gateway(format!("{url}: {last} (3 tries)")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example request of Twilio's security documentation (its URL, parameters and
    /// auth token); the signature is what Twilio's own `RequestValidator` (PyPI
    /// `twilio`) computes for it. `tests/tests/server_webhooks.rs` checks live requests
    /// with the same validator.
    #[test]
    fn signatures_are_twilios() {
        let params: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let sig = signature("12345", "https://mycompany.com/myapp.php?foo=1&bar=2", &params);
        assert_eq!(sig, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
        let mut shuffled = params.clone();
        shuffled.reverse();
        assert_eq!(signature("12345", "https://mycompany.com/myapp.php?foo=1&bar=2", &shuffled), sig);
        assert_ne!(signature("54321", "https://mycompany.com/myapp.php?foo=1&bar=2", &params), sig);
    }

    #[test]
    fn methods() {
        assert_eq!(HookMethod::parse("get").unwrap(), HookMethod::Get);
        assert_eq!(HookMethod::parse(" POST ").unwrap(), HookMethod::Post);
        assert_eq!(HookMethod::parse("PUT").unwrap_err().code(), 31100);
    }
}

//! The registrar: which devices (contacts on flows) each identity has, checked against
//! its access token, at most ten per identity, each until its `expires`.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use dialtone_core::{ErrorCode, VoiceError};
use dialtone_sip::header::{NameAddr, Uri};
use dialtone_sip::message::Message;
use dialtone_sip::ua::response_to;

use super::{user_of, with_error, FlowId};
use crate::accounts::Account;
use crate::token;

/// Devices kept per identity.
const MAX_DEVICES: usize = 10;

struct Binding {
    flow: FlowId,
    contact: Uri,
    expires_at: Instant,
}

#[derive(Default)]
pub(super) struct Registrar {
    by_identity: HashMap<String, Vec<Binding>>,
    /// The identities with a binding on each flow.
    by_flow: HashMap<FlowId, HashSet<String>>,
}

/// The `Authorization: Bearer` token of a request.
pub(super) fn bearer(request: &Message) -> Option<&str> {
    let v = request.header("Authorization")?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// A `401` asking for a (valid) access token.
fn challenge(request: &Message, e: &VoiceError) -> Message {
    let mut r = response_to(request, 401, Some("srv"));
    let desc = e.message().replace('"', "'");
    let error = if e.kind() == ErrorCode::AuthenticationFailed { "" } else { "error=\"invalid_token\", " };
    r.headers.push(
        "WWW-Authenticate",
        format!("Bearer realm=\"dialtone\", {error}error_description=\"{} {desc}\"", e.code()),
    );
    with_error(r, e)
}

/// The identity a REGISTER may bind (its token's, which must be the one in `To`) and
/// the token's push credential, if it has one. The error is the response to send.
pub(super) fn authorize(account: &Account, request: &Message) -> Result<(String, Option<String>), Message> {
    let Some(token) = bearer(request) else {
        let e = VoiceError::new(
            ErrorCode::AuthenticationFailed,
            "REGISTER needs an access token (Authorization: Bearer)",
        );
        return Err(challenge(request, &e));
    };
    let claims = token::verify(account, token).map_err(|e| challenge(request, &e))?;
    let identity = claims.grants.identity.clone().unwrap_or_default();
    if user_of(request.header("To")).as_deref() != Some(identity.as_str()) {
        let e = VoiceError::new(
            ErrorCode::AccessTokenGrantsInvalid,
            "the token's identity is not the one registering",
        );
        return Err(with_error(response_to(request, 403, Some("srv")), &e));
    }
    let push_credential = claims.grants.voice.and_then(|v| v.push_credential_sid);
    Ok((identity, push_credential))
}

/// Whether two Contact URIs are the same device. A push parameter (RFC 8599 `pn-*`)
/// in only one of them does not tell them apart (RFC 3261 19.1.4: other parameters in
/// only one URI are ignored), so an unregister that does not name the device still
/// removes its contact.
fn same_device(a: &Uri, b: &Uri) -> bool {
    let bare = |u: &Uri| {
        let mut u = u.clone();
        for p in ["pn-provider", "pn-prid", "pn-param"] {
            u.params.remove(p);
        }
        u
    };
    bare(a) == bare(b)
}

/// The device token a REGISTER names for push (RFC 8599 `pn-prid` in a Contact URI),
/// and whether the REGISTER removes that Contact (`expires` 0).
pub(super) fn push_device(request: &Message) -> Option<(String, bool)> {
    let default_expires = request.header("Expires").and_then(|e| e.trim().parse::<u64>().ok());
    request.headers.values("Contact").into_iter().find_map(|c| {
        let na = NameAddr::parse(c).ok()?;
        let device = na.uri.params.get("pn-prid")?.to_owned();
        let expires = na.params.get("expires").and_then(|e| e.parse::<u64>().ok()).or(default_expires);
        Some((device, expires == Some(0)))
    })
}

impl Registrar {
    /// Applies an authorized REGISTER's contacts for `identity` on `flow`: the `200`
    /// to send, and the contacts now bound on this flow.
    pub(super) fn register(
        &mut self,
        identity: &str,
        flow: FlowId,
        request: &Message,
        now: Instant,
    ) -> (Message, Vec<Uri>) {
        let default_expires =
            request.header("Expires").and_then(|e| e.trim().parse::<u64>().ok()).unwrap_or(600);
        let mut resp = response_to(request, 200, Some("srv"));
        let bindings = self.by_identity.entry(identity.to_owned()).or_default();
        let before: HashSet<FlowId> = bindings.iter().map(|b| b.flow).collect();
        bindings.retain(|b| b.expires_at > now);
        for c in request.headers.values("Contact") {
            if c.trim() == "*" {
                bindings.clear();
                continue;
            }
            let Ok(na) = NameAddr::parse(c) else { continue };
            let expires =
                na.params.get("expires").and_then(|e| e.parse::<u64>().ok()).unwrap_or(default_expires);
            bindings.retain(|b| !same_device(&b.contact, &na.uri));
            if expires > 0 {
                let expires = expires.clamp(30, 3600);
                bindings.push(Binding {
                    flow,
                    contact: na.uri.clone(),
                    expires_at: now + Duration::from_secs(expires),
                });
                resp.headers.push("Contact", format!("<{}>;expires={expires}", na.uri));
            }
        }
        // The ten most recent devices.
        while bindings.len() > MAX_DEVICES {
            bindings.remove(0);
        }
        tracing::info!(%identity, devices = bindings.len(), "registered");
        let here: Vec<Uri> = bindings.iter().filter(|b| b.flow == flow).map(|b| b.contact.clone()).collect();
        let after: HashSet<FlowId> = bindings.iter().map(|b| b.flow).collect();
        if bindings.is_empty() {
            self.by_identity.remove(identity);
        }
        for f in before.difference(&after) {
            self.unindex(*f, identity);
        }
        for f in after {
            self.by_flow.entry(f).or_default().insert(identity.to_owned());
        }
        (resp, here)
    }

    fn unindex(&mut self, flow: FlowId, identity: &str) {
        if let Some(ids) = self.by_flow.get_mut(&flow) {
            ids.remove(identity);
            if ids.is_empty() {
                self.by_flow.remove(&flow);
            }
        }
    }

    /// The live devices of `identity`, the most recent first.
    pub(super) fn devices(&self, identity: &str, now: Instant) -> Vec<(FlowId, Uri)> {
        self.by_identity
            .get(identity)
            .map(|v| {
                v.iter().rev().filter(|b| b.expires_at > now).map(|b| (b.flow, b.contact.clone())).collect()
            })
            .unwrap_or_default()
    }

    /// Removes every registration bound to `flow` (and identities left with none).
    pub(super) fn forget_flow(&mut self, flow: FlowId) {
        for identity in self.by_flow.remove(&flow).unwrap_or_default() {
            if let Some(bindings) = self.by_identity.get_mut(&identity) {
                bindings.retain(|b| b.flow != flow);
                if bindings.is_empty() {
                    self.by_identity.remove(&identity);
                }
            }
        }
    }

    /// Whether `flow` holds a live registration.
    pub(super) fn holds(&self, flow: FlowId, now: Instant) -> bool {
        self.by_flow.get(&flow).is_some_and(|ids| {
            ids.iter().any(|i| {
                self.by_identity
                    .get(i)
                    .is_some_and(|bs| bs.iter().any(|b| b.flow == flow && b.expires_at > now))
            })
        })
    }

    /// How many live devices each registered identity has.
    pub(super) fn snapshot(&self, now: Instant) -> HashMap<String, usize> {
        self.by_identity
            .iter()
            .map(|(k, v)| (k.clone(), v.iter().filter(|b| b.expires_at > now).count()))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

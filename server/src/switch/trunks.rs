//! Trunks: who may call in without a token (trusted ranges, a trunk's ranges, or a
//! trunk's digest credentials, with stateless nonces), and where a `<Number>` or a
//! `<Sip>` of a dial goes out.

use std::net::IpAddr;

use dialtone_core::{ErrorCode, VoiceError};
use dialtone_sip::digest::{Algorithm, Answer, Challenge};
use dialtone_sip::header::Uri;
use dialtone_sip::message::Message;

use crate::twiml::DialTarget;

/// The realm of the server's digest challenges.
pub(super) const REALM: &str = "dialtone";
/// How long a digest nonce is good for.
const NONCE_SECS: u64 = 300;

/// A configured SIP trunk, parsed.
#[derive(Clone, Debug)]
pub(crate) struct Trunk {
    pub(crate) name: String,
    /// Where calls out go.
    pub(crate) uri: Option<Uri>,
    /// Source ranges that are this trunk.
    pub(crate) networks: Vec<(IpAddr, u8)>,
    /// What a peer presents to call in as this trunk.
    pub(crate) credentials: Option<(String, String)>,
    /// What the server presents when the trunk challenges a call out.
    pub(crate) outbound_credentials: Option<(String, String)>,
    /// Verifies a TLS trunk.
    pub(crate) tls_ca_file: Option<std::path::PathBuf>,
}

/// Where one `<Sip>` or `<Number>` of a dial goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OutTarget {
    /// The request-URI.
    pub(crate) uri: Uri,
    /// Digest credentials for a challenge.
    pub(crate) credentials: Option<(String, String)>,
    /// Verifies the peer of a `sips:` target.
    pub(crate) tls_ca_file: Option<std::path::PathBuf>,
}

impl OutTarget {
    /// The connection this target travels on: calls to the same place share it.
    pub(crate) fn connection_key(&self) -> String {
        let u = &self.uri;
        format!("{}:{}:{:?};{:?}", u.scheme, u.host, u.port, u.params.get("transport"))
    }
}

/// How a request without a token fares.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum TrunkAuth {
    /// It is this trunk's.
    Trunk(String),
    /// Ask for digest credentials (none given, or a stale nonce).
    Challenge,
    /// Not authorized.
    Refused,
}

/// The trunks and trusted ranges, and the key that signs digest nonces.
pub(super) struct Trunks {
    pub(super) trunks: Vec<Trunk>,
    pub(super) trusted: Vec<(IpAddr, u8)>,
    /// Signs nonces (the account's API key secret).
    pub(super) secret: String,
}

impl Trunks {
    /// Whether a request without a token comes from a trunk: a trusted range, a
    /// trunk's range, or a trunk's digest credentials (challenged when absent or
    /// stale). `unix_secs` is the wall-clock time.
    pub(super) fn caller(&self, remote: Option<IpAddr>, request: &Message, unix_secs: u64) -> TrunkAuth {
        if let Some(ip) = remote {
            if self.trusted.iter().any(|n| in_network(ip, *n)) {
                return TrunkAuth::Trunk("trusted networks".to_owned());
            }
            if let Some(t) = self.trunks.iter().find(|t| t.networks.iter().any(|n| in_network(ip, *n))) {
                return TrunkAuth::Trunk(t.name.clone());
            }
        }
        if !self.trunks.iter().any(|t| t.credentials.is_some()) {
            return TrunkAuth::Refused;
        }
        let Some(answer) = request.headers.get_all("Authorization").find_map(Answer::parse) else {
            return TrunkAuth::Challenge;
        };
        if !nonce_ok(&self.secret, &answer.nonce, unix_secs) {
            return TrunkAuth::Challenge;
        }
        if answer.realm != REALM || answer.uri.trim() != request.uri().trim() {
            return TrunkAuth::Refused;
        }
        let trunk = self.trunks.iter().find(|t| {
            t.credentials.as_ref().is_some_and(|(u, p)| *u == answer.username && answer.verify(p, "INVITE"))
        });
        match trunk {
            Some(t) => TrunkAuth::Trunk(t.name.clone()),
            None => TrunkAuth::Refused,
        }
    }

    /// The `WWW-Authenticate` value of a digest challenge issued at `unix_secs`.
    pub(super) fn challenge(&self, unix_secs: u64) -> String {
        Challenge {
            realm: REALM.to_owned(),
            nonce: nonce(&self.secret, unix_secs),
            opaque: None,
            algorithm: Algorithm::Md5,
            qop_auth: true,
        }
        .to_header()
    }

    /// Where a `<Number>` or `<Sip>` goes: a number through the first trunk with a
    /// URI; a SIP URI as it is, with the credentials of the trunk at its address.
    pub(super) fn out_target(&self, t: &DialTarget) -> Result<OutTarget, VoiceError> {
        let same_place = |a: &Uri, b: &Uri| a.host.eq_ignore_ascii_case(&b.host) && a.port == b.port;
        match t {
            DialTarget::Number(n) => {
                let ok = !n.is_empty()
                    && n.len() <= 32
                    && n.chars().all(|c| c.is_ascii_digit() || matches!(c, '+' | '*' | '#' | '-'));
                if !ok {
                    return Err(VoiceError::new(ErrorCode::MalformedRequest, format!("<Number> {n:?}")));
                }
                let trunk = self.trunks.iter().find(|t| t.uri.is_some()).ok_or_else(|| {
                    VoiceError::new(ErrorCode::ServiceUnavailable, "no trunk with a uri to carry <Number>")
                })?;
                let mut uri =
                    trunk.uri.clone().ok_or_else(|| VoiceError::from_kind(ErrorCode::ServiceUnavailable))?;
                uri.user = Some(n.replace('-', ""));
                Ok(OutTarget {
                    uri,
                    credentials: trunk.outbound_credentials.clone(),
                    tls_ca_file: trunk.tls_ca_file.clone(),
                })
            }
            DialTarget::Sip(s) => {
                let uri = Uri::parse(s)
                    .map_err(|e| VoiceError::new(ErrorCode::MalformedRequest, format!("<Sip> {s:?}: {e}")))?;
                let trunk =
                    self.trunks.iter().find(|t| t.uri.as_ref().is_some_and(|tu| same_place(tu, &uri)));
                Ok(OutTarget {
                    credentials: trunk.and_then(|t| t.outbound_credentials.clone()),
                    tls_ca_file: trunk.and_then(|t| t.tls_ca_file.clone()),
                    uri,
                })
            }
            DialTarget::Client { identity, .. } => Err(VoiceError::new(
                ErrorCode::MalformedRequest,
                format!("client:{identity} is not a SIP target"),
            )),
        }
    }
}

fn in_network(ip: IpAddr, net: (IpAddr, u8)) -> bool {
    match (ip, net.0) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let bits = u32::from(net.1.min(32));
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let bits = u32::from(net.1.min(128));
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Parses `a.b.c.d/n` (or a bare address).
pub(crate) fn parse_network(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, bits) = match s.split_once('/') {
        Some((ip, b)) => (ip.parse().ok()?, b.parse().ok()?),
        None => {
            let ip: IpAddr = s.parse().ok()?;
            (ip, if ip.is_ipv4() { 32 } else { 128 })
        }
    };
    Some((ip, bits))
}

/// A digest nonce for the second `secs`: the time and an HMAC over it, so that the
/// server keeps no state and nobody without the key can make one.
fn nonce(secret: &str, secs: u64) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, format!("digest-nonce:{secs}").as_bytes());
    let hex: String = tag.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{secs:x}.{hex}")
}

/// Whether `n` is a nonce of ours, at most `NONCE_SECS` old at `now`.
fn nonce_ok(secret: &str, n: &str, now: u64) -> bool {
    let Some(secs) = n.split_once('.').and_then(|(t, _)| u64::from_str_radix(t, 16).ok()) else {
        return false;
    };
    let want = nonce(secret, secs);
    // Constant time over the expected length.
    let same =
        want.len() == n.len() && want.bytes().zip(n.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
    secs <= now + 5 && now.saturating_sub(secs) <= NONCE_SECS && same
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        let lo = parse_network("127.0.0.0/8").unwrap();
        assert!(in_network("127.1.2.3".parse().unwrap(), lo));
        assert!(!in_network("10.0.0.1".parse().unwrap(), lo));
        assert!(in_network("10.0.0.1".parse().unwrap(), parse_network("0.0.0.0/0").unwrap()));
        assert!(in_network("::1".parse().unwrap(), parse_network("::1").unwrap()));
        assert!(!in_network("::1".parse().unwrap(), lo));
        assert!(parse_network("nonsense").is_none());
    }

    #[test]
    fn nonces_are_ours_and_fresh() {
        let n = nonce("k", 1_000);
        assert!(nonce_ok("k", &n, 1_000) && nonce_ok("k", &n, 1_000 + NONCE_SECS));
        assert!(!nonce_ok("k", &n, 1_001 + NONCE_SECS), "stale");
        assert!(!nonce_ok("k", &n, 900), "from the future");
        assert!(!nonce_ok("other key", &n, 1_000), "forged");
        assert!(!nonce_ok("k", &n.replace('.', "x"), 1_000));
        assert!(!nonce_ok("k", "", 1_000) && !nonce_ok("k", "ffffffffffffffffffff.00", 1_000));
    }
}

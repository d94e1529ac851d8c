//! HTTP Digest authentication for SIP (RFC 3261 §22, RFC 7616 algorithms, RFC 8760
//! for SIP): reading a challenge and answering it as a client, and checking an answer
//! as a server. MD5 and SHA-256, with or without `qop=auth`.
//!
//! Parsing never panics on any input; what a parser cannot read is `None`.

use md5::{Digest as _, Md5};
use sha2::Sha256;

use crate::message::split_list;

/// A digest algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// MD5 (the SIP default).
    Md5,
    /// SHA-256 (RFC 8760).
    Sha256,
}

impl Algorithm {
    fn parse(s: Option<&str>) -> Option<Algorithm> {
        match s.map(str::to_ascii_uppercase).as_deref() {
            None | Some("MD5") => Some(Algorithm::Md5),
            Some("SHA-256") => Some(Algorithm::Sha256),
            _ => None,
        }
    }

    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    fn hash(self, s: &str) -> String {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        match self {
            Algorithm::Md5 => hex(&Md5::digest(s.as_bytes())),
            Algorithm::Sha256 => hex(&Sha256::digest(s.as_bytes())),
        }
    }
}

/// The `name=value` parameters of a `Digest ...` header value, or `None` when the
/// scheme is not Digest. Quoted values are unquoted (with `\` escapes).
fn params(value: &str) -> Option<Vec<(String, String)>> {
    let value = value.trim_start();
    let (scheme, rest) = value.split_at(value.find(char::is_whitespace)?);
    if !scheme.eq_ignore_ascii_case("digest") {
        return None;
    }
    let mut out = Vec::new();
    for part in split_list(rest) {
        let Some((k, v)) = part.split_once('=') else { continue };
        let v = v.trim();
        let v = match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            Some(q) => {
                let mut s = String::with_capacity(q.len());
                let mut esc = false;
                for c in q.chars() {
                    if esc || c != '\\' {
                        s.push(c);
                        esc = false;
                    } else {
                        esc = true;
                    }
                }
                s
            }
            None => v.to_owned(),
        };
        out.push((k.trim().to_ascii_lowercase(), v));
    }
    Some(out)
}

fn get<'a>(p: &'a [(String, String)], name: &str) -> Option<&'a str> {
    p.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A `WWW-Authenticate` or `Proxy-Authenticate` Digest challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// The realm.
    pub realm: String,
    /// The server's nonce.
    pub nonce: String,
    /// Echoed back when present.
    pub opaque: Option<String>,
    /// The algorithm.
    pub algorithm: Algorithm,
    /// Whether the server offers `qop=auth`.
    pub qop_auth: bool,
}

impl Challenge {
    /// Reads a challenge; `None` for another scheme, an unknown algorithm, or no
    /// realm or nonce.
    pub fn parse(value: &str) -> Option<Challenge> {
        let p = params(value)?;
        Some(Challenge {
            realm: get(&p, "realm")?.to_owned(),
            nonce: get(&p, "nonce")?.to_owned(),
            opaque: get(&p, "opaque").map(str::to_owned),
            algorithm: Algorithm::parse(get(&p, "algorithm"))?,
            qop_auth: get(&p, "qop")
                .is_some_and(|q| q.split(',').any(|t| t.trim().eq_ignore_ascii_case("auth"))),
        })
    }

    /// The header value offering this challenge.
    pub fn to_header(&self) -> String {
        let mut s = format!(
            "Digest realm={}, nonce={}, algorithm={}",
            quote(&self.realm),
            quote(&self.nonce),
            self.algorithm.name()
        );
        if self.qop_auth {
            s.push_str(", qop=\"auth\"");
        }
        if let Some(o) = &self.opaque {
            s.push_str(&format!(", opaque={}", quote(o)));
        }
        s
    }

    /// The `Authorization` (or `Proxy-Authorization`) value answering this challenge
    /// for a request (`method`, request-URI `uri`), with a client nonce for `qop`.
    pub fn answer(&self, username: &str, password: &str, method: &str, uri: &str, cnonce: &str) -> String {
        let nc = "00000001";
        let qop = self.qop_auth.then_some("auth");
        let response = response(
            self.algorithm,
            &Answer {
                username: username.to_owned(),
                realm: self.realm.clone(),
                nonce: self.nonce.clone(),
                uri: uri.to_owned(),
                response: String::new(),
                algorithm: self.algorithm,
                qop: qop.map(str::to_owned),
                nc: qop.map(|_| nc.to_owned()),
                cnonce: qop.map(|_| cnonce.to_owned()),
                opaque: self.opaque.clone(),
            },
            password,
            method,
        );
        let mut s = format!(
            "Digest username={}, realm={}, nonce={}, uri={}, response=\"{response}\", algorithm={}",
            quote(username),
            quote(&self.realm),
            quote(&self.nonce),
            quote(uri),
            self.algorithm.name()
        );
        if qop.is_some() {
            s.push_str(&format!(", qop=auth, nc={nc}, cnonce={}", quote(cnonce)));
        }
        if let Some(o) = &self.opaque {
            s.push_str(&format!(", opaque={}", quote(o)));
        }
        s
    }
}

/// An `Authorization` Digest answer, as a server reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// Who claims to be asking.
    pub username: String,
    /// The realm.
    pub realm: String,
    /// The server nonce being answered.
    pub nonce: String,
    /// The request-URI the client hashed.
    pub uri: String,
    /// The response hash.
    pub response: String,
    /// The algorithm.
    pub algorithm: Algorithm,
    /// `auth` when used.
    pub qop: Option<String>,
    /// The nonce count (with `qop`).
    pub nc: Option<String>,
    /// The client nonce (with `qop`).
    pub cnonce: Option<String>,
    /// The opaque value echoed.
    pub opaque: Option<String>,
}

impl Answer {
    /// Reads an answer; `None` for another scheme, an unknown algorithm, or a
    /// missing field.
    pub fn parse(value: &str) -> Option<Answer> {
        let p = params(value)?;
        let s = |n: &str| get(&p, n).map(str::to_owned);
        Some(Answer {
            username: s("username")?,
            realm: s("realm")?,
            nonce: s("nonce")?,
            uri: s("uri")?,
            response: s("response")?,
            algorithm: Algorithm::parse(get(&p, "algorithm"))?,
            qop: s("qop"),
            nc: s("nc"),
            cnonce: s("cnonce"),
            opaque: s("opaque"),
        })
    }

    /// Whether the answer proves knowledge of `password` for a `method` request.
    pub fn verify(&self, password: &str, method: &str) -> bool {
        if self.qop.is_some() && (self.nc.is_none() || self.cnonce.is_none()) {
            return false;
        }
        let want = response(self.algorithm, self, password, method);
        // Compare in constant time over the expected length.
        let (a, b) = (want.as_bytes(), self.response.to_ascii_lowercase().into_bytes());
        a.len() == b.len() && a.iter().zip(&b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// RFC 7616 §3.4.1: the response hash.
fn response(alg: Algorithm, a: &Answer, password: &str, method: &str) -> String {
    let ha1 = alg.hash(&format!("{}:{}:{}", a.username, a.realm, password));
    let ha2 = alg.hash(&format!("{method}:{}", a.uri));
    match (&a.qop, &a.nc, &a.cnonce) {
        (Some(q), Some(nc), Some(cn)) => alg.hash(&format!("{ha1}:{}:{nc}:{cn}:{q}:{ha2}", a.nonce)),
        _ => alg.hash(&format!("{ha1}:{}:{ha2}", a.nonce)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_2617_example() {
        // RFC 2617 §3.5, the classic MD5 + qop example.
        let ch = Challenge::parse(
            r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        )
        .unwrap();
        assert!(ch.qop_auth);
        let a = ch.answer("Mufasa", "Circle Of Life", "GET", "/dir/index.html", "0a4f113b");
        assert!(a.contains(r#"response="6629fae49393a05397450978507c4ef1""#), "{a}");
        let parsed = Answer::parse(&a).unwrap();
        assert!(parsed.verify("Circle Of Life", "GET"));
        assert!(!parsed.verify("circle of life", "GET"));
        assert!(!parsed.verify("Circle Of Life", "INVITE"));
    }

    #[test]
    fn sha256_without_qop_round_trips() {
        let ch = Challenge {
            realm: "dialtone".into(),
            nonce: "n\"1".into(),
            opaque: Some("o".into()),
            algorithm: Algorithm::Sha256,
            qop_auth: false,
        };
        let back = Challenge::parse(&ch.to_header()).unwrap();
        assert_eq!(back, ch);
        let a = Answer::parse(&ch.answer("trunk", "pw", "INVITE", "sip:bob@h", "c")).unwrap();
        assert_eq!((a.algorithm, a.nonce.as_str(), a.qop.as_deref()), (Algorithm::Sha256, "n\"1", None));
        assert_eq!(a.response.len(), 64);
        assert!(a.verify("pw", "INVITE") && !a.verify("pw2", "INVITE"));
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert!(Challenge::parse("Bearer realm=\"x\"").is_none());
        assert!(Challenge::parse("Digest realm=\"x\"").is_none(), "no nonce");
        assert!(Challenge::parse("Digest realm=x, nonce=y, algorithm=SHA-512-256").is_none());
        assert!(Answer::parse("Digest username=\"u\"").is_none());
        assert!(Answer::parse("").is_none());
        assert!(Answer::parse("Digest").is_none());
        let a = Answer::parse("Digest username=u, realm=r, nonce=n, uri=x, response=ab, qop=auth").unwrap();
        assert!(!a.verify("p", "INVITE"), "qop without nc and cnonce");
    }
}

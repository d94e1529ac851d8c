//! Typed views of the headers the user agent reads: URIs, name-addrs (From, To,
//! Contact, Route), Via. Each parses from the header text and prints back to it;
//! parameters keep their order and case.

use std::fmt;

use crate::message::ParseError;

fn bad(name: &str, reason: impl Into<String>) -> ParseError {
    ParseError::HeaderValue { name: name.to_owned(), reason: reason.into() }
}

/// `;name=value` parameters in order (a value of `None` is a flag).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params(pub Vec<(String, Option<String>)>);

impl Params {
    /// Parses `;a=b;c` (the leading `;` optional).
    pub fn parse(s: &str) -> Params {
        Params(
            s.split(';')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (k.trim().to_owned(), Some(v.trim().to_owned())),
                    None => (p.to_owned(), None),
                })
                .collect(),
        )
    }

    /// A parameter's value (`Some("")` for a flag).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_deref().unwrap_or(""))
    }

    /// Sets or adds a parameter.
    pub fn set(&mut self, name: &str, value: Option<&str>) {
        let value = value.map(str::to_owned);
        match self.0.iter_mut().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
            Some(p) => p.1 = value,
            None => self.0.push((name.to_owned(), value)),
        }
    }

    /// Removes a parameter.
    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    }
}

impl fmt::Display for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, v) in &self.0 {
            match v {
                Some(v) => write!(f, ";{k}={v}")?,
                None => write!(f, ";{k}")?,
            }
        }
        Ok(())
    }
}

/// A `sip:`, `sips:` or `tel:` URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uri {
    /// `sip`, `sips`, `tel`, ...
    pub scheme: String,
    /// The user part (for `tel:`, the number).
    pub user: Option<String>,
    /// The host (IPv6 with brackets), empty for `tel:`.
    pub host: String,
    /// The port.
    pub port: Option<u16>,
    /// URI parameters.
    pub params: Params,
    /// `?headers`, as written.
    pub headers: Option<String>,
}

impl Uri {
    /// Parses a URI.
    pub fn parse(s: &str) -> Result<Uri, ParseError> {
        let s = s.trim();
        let (scheme, rest) = s.split_once(':').ok_or_else(|| bad("URI", format!("{s:?} has no scheme")))?;
        if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) {
            return Err(bad("URI", format!("bad scheme {scheme:?}")));
        }
        let scheme = scheme.to_ascii_lowercase();
        let (rest, headers) = match rest.split_once('?') {
            Some((r, h)) => (r, Some(h.to_owned())),
            None => (rest, None),
        };
        if scheme == "tel" {
            let (number, params) = rest.split_once(';').unwrap_or((rest, ""));
            if number.is_empty() {
                return Err(bad("URI", "empty tel number"));
            }
            return Ok(Uri {
                scheme,
                user: Some(number.to_owned()),
                host: String::new(),
                port: None,
                params: Params::parse(params),
                headers,
            });
        }
        let (user, hostport_params) = match rest.rfind('@') {
            Some(i) => (Some(rest[..i].to_owned()), &rest[i + 1..]),
            None => (None, rest),
        };
        let (hostport, params) = hostport_params.split_once(';').unwrap_or((hostport_params, ""));
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let end = v6.find(']').ok_or_else(|| bad("URI", "unclosed IPv6 bracket"))?;
            let host = format!("[{}]", &v6[..end]);
            let after = &v6[end + 1..];
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p.parse().map_err(|_| bad("URI", format!("bad port {p:?}")))?),
                None if after.is_empty() => None,
                None => return Err(bad("URI", "junk after IPv6 address")),
            };
            (host, port)
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => {
                    (h.to_owned(), Some(p.parse().map_err(|_| bad("URI", format!("bad port {p:?}")))?))
                }
                None => (hostport.to_owned(), None),
            }
        };
        if host.is_empty() || host.bytes().any(|b| b.is_ascii_whitespace() || b"<>\"".contains(&b)) {
            return Err(bad("URI", format!("bad host in {s:?}")));
        }
        Ok(Uri { scheme, user, host, port, params: Params::parse(params), headers })
    }

    /// A `sip:user@host` URI.
    pub fn sip(user: Option<&str>, host: &str) -> Uri {
        Uri {
            scheme: "sip".into(),
            user: user.map(str::to_owned),
            host: host.to_owned(),
            port: None,
            params: Params::default(),
            headers: None,
        }
    }

    /// `host:port` (the port only when given).
    pub fn host_port(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.clone(),
        }
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.scheme)?;
        if self.scheme == "tel" {
            write!(f, "{}", self.user.as_deref().unwrap_or(""))?;
        } else {
            if let Some(u) = &self.user {
                write!(f, "{u}@")?;
            }
            write!(f, "{}", self.host_port())?;
        }
        write!(f, "{}", self.params)?;
        if let Some(h) = &self.headers {
            write!(f, "?{h}")?;
        }
        Ok(())
    }
}

/// `"Display" <uri>;params` (From, To, Contact, Route, Record-Route).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameAddr {
    /// The display name, unquoted.
    pub display: Option<String>,
    /// The URI.
    pub uri: Uri,
    /// Header parameters (`tag`, `expires`, ...).
    pub params: Params,
}

impl NameAddr {
    /// Parses a name-addr or an addr-spec (whose `;params` then belong to the header).
    pub fn parse(s: &str) -> Result<NameAddr, ParseError> {
        let s = s.trim();
        if let Some(lt) = find_unquoted(s, '<') {
            let gt = s[lt..].find('>').map(|i| lt + i).ok_or_else(|| bad("name-addr", "unclosed <"))?;
            let display = s[..lt].trim();
            let display = if display.is_empty() {
                None
            } else if let Some(q) = display.strip_prefix('"') {
                Some(
                    q.strip_suffix('"')
                        .ok_or_else(|| bad("name-addr", "unclosed quote"))?
                        .replace("\\\"", "\""),
                )
            } else {
                Some(display.to_owned())
            };
            let uri = Uri::parse(&s[lt + 1..gt])?;
            Ok(NameAddr { display, uri, params: Params::parse(&s[gt + 1..]) })
        } else {
            // addr-spec: URI parameters cannot be told apart, so they are header's.
            let (uri, params) = match s.find(';') {
                Some(i) => (&s[..i], &s[i..]),
                None => (s, ""),
            };
            Ok(NameAddr { display: None, uri: Uri::parse(uri)?, params: Params::parse(params) })
        }
    }

    /// `<uri>` with no display name or parameters.
    pub fn new(uri: Uri) -> NameAddr {
        NameAddr { display: None, uri, params: Params::default() }
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&str> {
        self.params.get("tag")
    }
}

fn find_unquoted(s: &str, c: char) -> Option<usize> {
    let mut quoted = false;
    for (i, ch) in s.char_indices() {
        match ch {
            '"' => quoted = !quoted,
            x if x == c && !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display {
            write!(f, "\"{}\" ", d.replace('"', "\\\""))?;
        }
        write!(f, "<{}>{}", self.uri, self.params)
    }
}

/// One Via value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Via {
    /// `UDP`, `TCP`, `TLS`, `WS`, `WSS`.
    pub transport: String,
    /// `host[:port]`.
    pub sent_by: String,
    /// Parameters (`branch`, `received`, `rport`).
    pub params: Params,
}

impl Via {
    /// Parses `SIP/2.0/TRANSPORT host[:port];params`.
    pub fn parse(s: &str) -> Result<Via, ParseError> {
        let s = s.trim();
        let (proto, rest) =
            s.split_once(|c: char| c.is_ascii_whitespace()).ok_or_else(|| bad("Via", "no sent-by"))?;
        let mut p = proto.split('/').map(str::trim);
        let (Some(name), Some(version), Some(transport), None) = (p.next(), p.next(), p.next(), p.next())
        else {
            return Err(bad("Via", format!("bad protocol {proto:?}")));
        };
        if !name.eq_ignore_ascii_case("SIP") || version != "2.0" || transport.is_empty() {
            return Err(bad("Via", format!("bad protocol {proto:?}")));
        }
        let rest = rest.trim();
        let (sent_by, params) = rest.split_once(';').unwrap_or((rest, ""));
        if sent_by.trim().is_empty() {
            return Err(bad("Via", "empty sent-by"));
        }
        Ok(Via {
            transport: transport.to_ascii_uppercase(),
            sent_by: sent_by.trim().to_owned(),
            params: Params::parse(params),
        })
    }

    /// A parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name)
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} {}{}", self.transport, self.sent_by, self.params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris() {
        let u = Uri::parse("sip:alice:pw@[::1]:5061;transport=tls;lr?subject=x").unwrap();
        assert_eq!(u.user.as_deref(), Some("alice:pw"));
        assert_eq!(u.host, "[::1]");
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.params.get("transport"), Some("tls"));
        assert_eq!(u.params.get("lr"), Some(""));
        assert_eq!(u.to_string(), "sip:alice:pw@[::1]:5061;transport=tls;lr?subject=x");
        let t = Uri::parse("tel:+15551234;verstat=TN-Validation-Passed-A").unwrap();
        assert_eq!(t.user.as_deref(), Some("+15551234"));
        assert_eq!(t.params.get("verstat"), Some("TN-Validation-Passed-A"));
        assert!(Uri::parse("nothing").is_err());
        assert!(Uri::parse("sip:a@host:port").is_err());
    }

    #[test]
    fn name_addrs() {
        let n = NameAddr::parse("\"Alice \\\"A\\\"\" <sip:alice@example.com;transport=ws>;tag=88").unwrap();
        assert_eq!(n.display.as_deref(), Some("Alice \"A\""));
        assert_eq!(n.tag(), Some("88"));
        assert_eq!(n.uri.params.get("transport"), Some("ws"));
        assert_eq!(NameAddr::parse(&n.to_string()).unwrap(), n);
        let bare = NameAddr::parse("sip:bob@example.com;tag=5").unwrap();
        assert_eq!(bare.tag(), Some("5"));
        assert!(NameAddr::parse("<sip:bob@example.com").is_err());
    }

    #[test]
    fn vias() {
        let v = Via::parse("SIP/2.0/wss  df7jal23ls0d.invalid;rport;branch=z9hG4bKnashds7").unwrap();
        assert_eq!(v.transport, "WSS");
        assert_eq!(v.param("branch"), Some("z9hG4bKnashds7"));
        assert_eq!(v.param("rport"), Some(""));
        assert_eq!(Via::parse(&v.to_string()).unwrap(), v);
        assert!(Via::parse("SIP/3.0/UDP h").is_err());
        assert!(Via::parse("garbage").is_err());
    }
}

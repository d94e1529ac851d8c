//! TwiML: parsing the verbs the server runs.
//!
//! Supported: `<Dial>` (`callerId`, `timeout`, `answerOnBridge`, `action`, `method`) holding
//! `<Client>` (a bare name, or `<Identity>` with `<Parameter name value>`), `<Sip>` and
//! `<Number>`; `<Reject reason>`; `<Hangup>`; `<Pause length>`. The switch runs them
//! (`docs/server.md`): `answerOnBridge` is always the bridge-time answer, since the
//! server has no media of its own. Anything else in a
//! document is ignored, as Twilio ignores what it does not know; a document that is not
//! XML with a `<Response>` root is 31100.

use std::collections::BTreeMap;

use dialtone_core::{ErrorCode, VoiceError};
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

/// One thing to dial.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DialTarget {
    /// A client identity with custom parameters for its invite.
    Client {
        /// The identity.
        identity: String,
        /// `<Parameter>`s, in order.
        params: BTreeMap<String, String>,
    },
    /// A SIP URI.
    Sip(String),
    /// A phone number (through a configured trunk).
    Number(String),
}

/// `<Dial>`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dial {
    /// `callerId`.
    pub caller_id: Option<String>,
    /// `timeout` in seconds (Twilio's default is 30).
    pub timeout: Option<u32>,
    /// `answerOnBridge`.
    pub answer_on_bridge: bool,
    /// `action`.
    pub action: Option<String>,
    /// `method`: how the action is asked (`POST` unless `GET`).
    pub method: Option<crate::webhooks::HookMethod>,
    /// What to dial.
    pub targets: Vec<DialTarget>,
}

/// A verb.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verb {
    /// Dial.
    Dial(Dial),
    /// Refuse the call: `busy` is 486, anything else (`rejected`) 603.
    Reject {
        /// The reason attribute.
        reason: String,
    },
    /// End the call.
    Hangup,
    /// Wait.
    Pause {
        /// Seconds.
        length: u32,
    },
}

fn bad(msg: impl Into<String>) -> VoiceError {
    VoiceError::new(ErrorCode::MalformedRequest, format!("bad TwiML: {}", msg.into()))
}

fn attr(e: &BytesStart<'_>, name: &str) -> Result<Option<String>, VoiceError> {
    for a in e.attributes() {
        let a = a.map_err(|e| bad(e.to_string()))?;
        if a.key.as_ref().eq_ignore_ascii_case(name.as_bytes()) {
            let v = a.normalized_value(quick_xml::XmlVersion::Implicit1_0).map_err(|e| bad(e.to_string()))?;
            return Ok(Some(v.into_owned()));
        }
    }
    Ok(None)
}

/// Parses a TwiML document.
pub fn parse(xml: &str) -> Result<Vec<Verb>, VoiceError> {
    let mut r = Reader::from_str(xml);
    r.config_mut().trim_text(true);
    let mut verbs = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    let mut dial: Option<Dial> = None;
    // The client being built: identity text, params.
    let mut client: Option<(String, BTreeMap<String, String>)> = None;
    let mut text = String::new();
    let mut seen_root = false;
    loop {
        let ev = r.read_event().map_err(|e| bad(format!("not XML: {e}")))?;
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(ev, Event::Empty(_));
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                text.clear();
                match (stack.last().map(String::as_str), name.as_str()) {
                    (None, "Response") => seen_root = true,
                    (None, other) => return Err(bad(format!("the root is <{other}>, not <Response>"))),
                    (Some("Response"), "Dial") => {
                        let timeout = attr(e, "timeout")?
                            .map(|t| t.trim().parse::<u32>().map_err(|_| bad(format!("Dial timeout {t:?}"))))
                            .transpose()?;
                        dial = Some(Dial {
                            caller_id: attr(e, "callerId")?,
                            timeout,
                            answer_on_bridge: attr(e, "answerOnBridge")?
                                .is_some_and(|v| v.eq_ignore_ascii_case("true")),
                            action: attr(e, "action")?,
                            method: attr(e, "method")?
                                .map(|m| {
                                    crate::webhooks::HookMethod::parse(&m)
                                        .map_err(|e| bad(e.message().to_owned()))
                                })
                                .transpose()?,
                            targets: Vec::new(),
                        });
                        if empty {
                            verbs.push(Verb::Dial(dial.take().unwrap_or_default()));
                        }
                    }
                    (Some("Response"), "Reject") => {
                        verbs.push(Verb::Reject {
                            reason: attr(e, "reason")?.unwrap_or_else(|| "rejected".into()),
                        });
                    }
                    (Some("Response"), "Hangup") => verbs.push(Verb::Hangup),
                    (Some("Response"), "Pause") => {
                        let length = attr(e, "length")?
                            .map(|t| t.trim().parse::<u32>().map_err(|_| bad(format!("Pause length {t:?}"))))
                            .transpose()?
                            .unwrap_or(1);
                        verbs.push(Verb::Pause { length });
                    }
                    (Some("Dial"), "Client") => client = Some((String::new(), BTreeMap::new())),
                    (Some("Client"), "Parameter") => {
                        let (Some(n), v) = (attr(e, "name")?, attr(e, "value")?) else {
                            return Err(bad("<Parameter> needs a name"));
                        };
                        if let Some((_, p)) = client.as_mut() {
                            p.insert(n, v.unwrap_or_default());
                        }
                    }
                    _ => {}
                }
                if !empty {
                    stack.push(name);
                }
            }
            Event::Text(t) => {
                let t = t.decode().map_err(|e| bad(e.to_string()))?;
                text.push_str(t.trim());
            }
            Event::GeneralRef(g) => {
                // An entity in text (&amp; and friends).
                let name = String::from_utf8_lossy(g.as_ref()).into_owned();
                let ch = match name.as_str() {
                    "amp" => "&",
                    "lt" => "<",
                    "gt" => ">",
                    "quot" => "\"",
                    "apos" => "'",
                    other => return Err(bad(format!("unknown entity &{other};"))),
                };
                text.push_str(ch);
            }
            Event::End(e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                stack.pop();
                match name.as_str() {
                    "Identity" => {
                        if let Some((id, _)) = client.as_mut() {
                            *id = text.trim().to_owned();
                        }
                    }
                    "Client" => {
                        if let Some((mut id, params)) = client.take() {
                            if id.is_empty() {
                                id = text.trim().to_owned();
                            }
                            if let Some(d) = dial.as_mut() {
                                d.targets.push(DialTarget::Client { identity: id, params });
                            }
                        }
                    }
                    "Sip" => {
                        if let Some(d) = dial.as_mut() {
                            d.targets.push(DialTarget::Sip(text.trim().to_owned()));
                        }
                    }
                    "Number" => {
                        if let Some(d) = dial.as_mut() {
                            d.targets.push(DialTarget::Number(text.trim().to_owned()));
                        }
                    }
                    "Dial" => {
                        if let Some(mut d) = dial.take() {
                            // A bare `<Dial>bob</Dial>` dials a number in Twilio; here a
                            // name dials that client.
                            if d.targets.is_empty() && !text.trim().is_empty() {
                                d.targets.push(DialTarget::Number(text.trim().to_owned()));
                            }
                            verbs.push(Verb::Dial(d));
                        }
                    }
                    _ => {}
                }
                text.clear();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !seen_root {
        return Err(bad("no <Response>"));
    }
    Ok(verbs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs() {
        let v = parse(
            r#"<?xml version="1.0"?><Response><Pause length="2"/><Dial callerId="+1555" timeout="20" answerOnBridge="true" action="/done">
                <Client><Identity>bob</Identity><Parameter name="topic" value="a &amp; b"/></Client>
                <Client>carol</Client><Sip>sip:x@example.com</Sip><Number>+15551234</Number></Dial>
                <Reject reason="busy"/><Hangup/><Say>ignored</Say></Response>"#,
        )
        .unwrap();
        assert_eq!(v[0], Verb::Pause { length: 2 });
        let Verb::Dial(d) = &v[1] else { panic!("{v:?}") };
        assert_eq!(d.caller_id.as_deref(), Some("+1555"));
        assert_eq!(d.timeout, Some(20));
        assert!(d.answer_on_bridge);
        assert_eq!(d.action.as_deref(), Some("/done"));
        let mut p = BTreeMap::new();
        p.insert("topic".to_owned(), "a & b".to_owned());
        assert_eq!(d.targets[0], DialTarget::Client { identity: "bob".into(), params: p });
        assert_eq!(d.targets[1], DialTarget::Client { identity: "carol".into(), params: BTreeMap::new() });
        assert_eq!(d.targets[2], DialTarget::Sip("sip:x@example.com".into()));
        assert_eq!(d.targets[3], DialTarget::Number("+15551234".into()));
        assert_eq!(v[2], Verb::Reject { reason: "busy".into() });
        assert_eq!(v[3], Verb::Hangup);
        assert_eq!(v.len(), 4);
    }

    #[test]
    fn bad_documents_are_31100() {
        for doc in [
            "",
            "not xml <",
            "<Other/>",
            "<Response><Dial timeout=\"x\"/></Response>",
            "<Response><Pause length=\"-1\"/></Response>",
        ] {
            assert_eq!(parse(doc).unwrap_err().code(), 31100, "{doc:?}");
        }
    }
}

//! The TwiML interpreter: it holds a call's remaining verbs and says what the next
//! step is. It never touches a call; the switch carries the steps out.

use std::collections::VecDeque;
use std::time::Duration;

use dialtone_core::{ErrorCode, VoiceError};

use crate::twiml::{Dial, Verb};
use crate::webhooks::HookMethod;

/// What a call does next.
#[derive(Debug)]
pub(super) enum Step {
    /// Wait, then ask for the next step.
    Pause(Duration),
    /// Ring these targets; when the dial ends, `action` (a resolved URL, and how to
    /// ask it) is fetched with its outcome, or the verbs after the `<Dial>` run.
    Dial { dial: Dial, action: Option<(String, HookMethod)> },
    /// End the unanswered call with this SIP status (or hang up an answered one).
    End { status: u16, reason: &'static str, error: VoiceError, outcome: &'static str },
}

/// A call's TwiML program: what is left of its document, and the voice URL relative
/// actions resolve against.
#[derive(Debug, Default)]
pub(super) struct Program {
    verbs: VecDeque<Verb>,
    voice_url: Option<String>,
}

impl Program {
    /// A program for an application with this voice URL (none for inline TwiML or the
    /// development routing).
    pub(super) fn new(voice_url: Option<String>) -> Program {
        Program { verbs: VecDeque::new(), voice_url }
    }

    /// Runs `verbs` next (a new document: an action's answer replaces what was left).
    pub(super) fn load(&mut self, verbs: Vec<Verb>) {
        self.verbs = verbs.into();
    }

    /// Whether verbs are left.
    pub(super) fn has_more(&self) -> bool {
        !self.verbs.is_empty()
    }

    /// The next step. A document that runs out without dialing declines the call.
    pub(super) fn next_step(&mut self) -> Step {
        match self.verbs.pop_front() {
            Some(Verb::Pause { length }) => Step::Pause(Duration::from_secs(u64::from(length))),
            Some(Verb::Reject { reason }) => {
                let busy = reason.eq_ignore_ascii_case("busy");
                let (status, text, kind) = if busy {
                    (486, "Busy Here", ErrorCode::BusyHere)
                } else {
                    (603, "Decline", ErrorCode::Decline)
                };
                let error = VoiceError::new(kind, format!("the application rejected the call ({reason})"));
                Step::End { status, reason: text, error, outcome: if busy { "busy" } else { "canceled" } }
            }
            Some(Verb::Hangup) => Step::End {
                status: 603,
                reason: "Decline",
                error: VoiceError::new(ErrorCode::Decline, "the application hung up"),
                outcome: "completed",
            },
            Some(Verb::Dial(dial)) => match dial.action.as_deref().map(|a| self.resolve(a)).transpose() {
                Ok(url) => {
                    let action = url.map(|u| (u, dial.method.unwrap_or_default()));
                    Step::Dial { dial, action }
                }
                Err(error) => {
                    Step::End { status: 500, reason: "Application Error", error, outcome: "failed" }
                }
            },
            None => Step::End {
                status: 603,
                reason: "Decline",
                error: VoiceError::new(ErrorCode::Decline, "the application's TwiML ended without dialing"),
                outcome: "completed",
            },
        }
    }

    /// An action URL: absolute, or relative to the application's voice URL.
    fn resolve(&self, action: &str) -> Result<String, VoiceError> {
        if action.starts_with("http://") || action.starts_with("https://") {
            return Ok(action.to_owned());
        }
        let base = self.voice_url.as_deref().ok_or_else(|| {
            VoiceError::new(
                ErrorCode::MalformedRequest,
                format!("bad TwiML: <Dial action={action:?}> needs an absolute URL (no voice URL to resolve it against)"),
            )
        })?;
        let (scheme, rest) = base.split_once("://").unwrap_or(("http", base));
        let authority = rest.split('/').next().unwrap_or("");
        let root = format!("{scheme}://{authority}");
        Ok(if action.starts_with('/') {
            format!("{root}{action}")
        } else {
            let dir = rest.rsplit_once('/').map_or(root.clone(), |(d, _)| format!("{scheme}://{d}"));
            format!("{dir}/{action}")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twiml;

    fn program(doc: &str, voice_url: Option<&str>) -> Program {
        let mut p = Program::new(voice_url.map(str::to_owned));
        p.load(twiml::parse(doc).unwrap());
        p
    }

    #[test]
    fn steps_follow_the_document() {
        let mut p = program(
            r#"<Response><Pause length="2"/><Dial action="next"><Client>bob</Client></Dial><Reject reason="busy"/></Response>"#,
            Some("http://app.example:8080/voice/incoming"),
        );
        assert!(matches!(p.next_step(), Step::Pause(d) if d == Duration::from_secs(2)));
        match p.next_step() {
            Step::Dial { action, dial } => {
                assert_eq!(action, Some(("http://app.example:8080/voice/next".to_owned(), HookMethod::Post)));
                assert_eq!(dial.targets.len(), 1);
            }
            s => panic!("{s:?}"),
        }
        assert!(p.has_more());
        assert!(matches!(p.next_step(), Step::End { status: 486, outcome: "busy", .. }));
        assert!(!p.has_more());
        match p.next_step() {
            Step::End { status: 603, error, .. } => assert_eq!(error.kind(), ErrorCode::Decline),
            s => panic!("{s:?}"),
        }
    }

    #[test]
    fn actions_resolve_against_the_voice_url() {
        let p = Program::new(Some("http://h:1/a/b".into()));
        assert_eq!(p.resolve("/x").unwrap(), "http://h:1/x");
        assert_eq!(p.resolve("y").unwrap(), "http://h:1/a/y");
        assert_eq!(p.resolve("http://o/z").unwrap(), "http://o/z");
        let bare = Program::new(Some("http://h:1".into()));
        assert_eq!(bare.resolve("y").unwrap(), "http://h:1/y");
        let tls = Program::new(Some("https://h/app/voice".into()));
        assert_eq!(tls.resolve("next").unwrap(), "https://h/app/next");
        assert_eq!(tls.resolve("/top").unwrap(), "https://h/top");
        let mut get = program(
            r#"<Response><Dial action="n" method="GET"><Client>b</Client></Dial></Response>"#,
            Some("https://h/v"),
        );
        assert!(
            matches!(get.next_step(), Step::Dial { action: Some((u, HookMethod::Get)), .. } if u == "https://h/n")
        );
        let none = Program::new(None);
        assert_eq!(none.resolve("y").unwrap_err().kind(), ErrorCode::MalformedRequest);
        let mut bad = program(r#"<Response><Dial action="y"><Client>b</Client></Dial></Response>"#, None);
        assert!(matches!(bad.next_step(), Step::End { status: 500, outcome: "failed", .. }));
    }
}

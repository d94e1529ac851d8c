//! `dialtone demo` (what `make demo` runs) is run as a separate process and must show
//! the whole call and exit 0.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::process::Command;

#[test]
fn the_demo_shows_the_whole_call_and_exits_0() {
    let shared = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/audio");
    assert!(std::path::Path::new(shared).join("speech-48k.wav").exists(), "the shared speech is at {shared}");
    // The demo keeps its recordings for the person who ran it; this run's go in a
    // folder of the test's own, removed after.
    let tmp = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("demo");
    std::fs::create_dir_all(&tmp).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dialtone"))
        .arg("demo")
        .env("DIALTONE_SHARED_AUDIO", shared)
        .env("TMPDIR", &tmp)
        .output()
        .expect("the binary runs");
    let _ = std::fs::remove_dir_all(&tmp);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "[alice] ringing (call SID CA",
        "[server] SIP over WebSocket at ws://127.0.0.1:",
        "[bob  ] invite: from client:alice to client:bob, call SID CA",
        "[bob  ]   custom parameter caller_first_name = alice",
        "[bob  ]   custom parameter caller_last_name = smith",
        "[alice] connected, codec opus",
        "[bob  ] connected, codec opus",
        r#"[bob  ] message received (application/json): {"greeting":"hello bob"}"#,
        r#"[alice] message received (application/json): {"greeting":"hello alice"}"#,
        "[bob  ] digits received: 1",
        "[alice] on hold",
        "[alice] resumed",
        "10s alice: connected opus MOS",
        "[bob  ] disconnected (normal hang-up)",
        "[alice] disconnected (normal hang-up)",
        "[alice] summary: codec opus, sent",
        "[bob  ] heard audio written to ",
        "The call ended normally on both sides.",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in\n{stdout}");
    }
    // A call that ended normally leaves nothing to warn about.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("WARN") && !stderr.contains("ERROR"), "{stderr}");
}

#[test]
fn an_unknown_command_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_dialtone")).arg("fly").output().expect("the binary runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unrecognized subcommand"));
}

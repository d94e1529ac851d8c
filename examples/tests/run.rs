//! Every example runs to completion (exit 0, "done"), as CI runs them.

#![allow(clippy::unwrap_used)]

use std::process::Command;

fn run(exe: &str) {
    let shared = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/audio");
    // The example's scratch data directory goes in a folder of the test's own, removed after.
    let name = std::path::Path::new(exe).file_name().unwrap().to_string_lossy().into_owned();
    let tmp = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("example-{name}"));
    std::fs::create_dir_all(&tmp).unwrap();
    let out = Command::new(exe).env("DIALTONE_SHARED_AUDIO", shared).env("TMPDIR", &tmp).output().unwrap();
    let _ = std::fs::remove_dir_all(&tmp);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{exe}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.lines().any(|l| l == "done"), "{exe}: {stdout}");
}

#[test]
fn two_clients() {
    run(env!("CARGO_BIN_EXE_two_clients"));
}

#[test]
fn echo_bot() {
    run(env!("CARGO_BIN_EXE_echo_bot"));
}

#[test]
fn trunk_call() {
    run(env!("CARGO_BIN_EXE_trunk_call"));
}

#[test]
fn plugin_codec() {
    let status =
        Command::new(env!("CARGO")).args(["build", "-q", "-p", "dialtone-plugin-g722"]).status().unwrap();
    assert!(status.success());
    run(env!("CARGO_BIN_EXE_plugin_codec"));
}

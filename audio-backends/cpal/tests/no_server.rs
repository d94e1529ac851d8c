//! With no PulseAudio server to reach, the backend says so and does not switch to
//! another host (ALSA) behind the caller's back.

#![allow(clippy::unwrap_used)]

use dialtone_audio_cpal::CpalBackend;
use dialtone_core::parts::{AudioBackend, AudioFormat};

#[test]
fn an_unreachable_pulseaudio_server_is_named_not_replaced() {
    let dir = std::env::temp_dir().join(format!("dialtone-no-pulse-{}", std::process::id()));
    // this test binary's only test: the process environment is ours to set
    std::env::set_var("PULSE_SERVER", format!("unix:{}/nothing-here", dir.display()));
    std::env::set_var("XDG_RUNTIME_DIR", &dir);
    let e = CpalBackend.devices().expect_err("no devices without a server");
    assert!(e.message().contains("PulseAudio server is unreachable"), "{e}");
    let e = CpalBackend.open_capturer(None, AudioFormat::new(48_000, 1, 20).unwrap()).err().unwrap();
    assert!(e.message().contains("PulseAudio server is unreachable"), "{e}");
}

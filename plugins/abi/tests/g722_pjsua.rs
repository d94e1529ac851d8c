//! The G.722 plugin carried through a real call: pjsua2 (PJSIP, which speaks G.722)
//! calls a Dialtone RTP session whose only codec is the plugin loaded from its shared
//! library; both send the shared 16 kHz speech with SDES-SRTP and both recordings are
//! scored with wideband PESQ.

#![allow(clippy::unwrap_used)]

#[path = "../../../transports/rtp/tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::{answer_one_call, read_wav_mono, Peer, Scratch};
use dialtone_plugin_abi::load;
use dialtone_tests::{pesq, python, segmental_snr_db, shared_audio_dir, speech};
use tokio::net::UdpSocket;

fn g722_library() -> PathBuf {
    dialtone_tests::build_plugin("dialtone-plugin-g722")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pjsua_and_the_g722_plugin_hear_each_other() {
    let codec = load(&g722_library()).unwrap().codec().unwrap();
    let scratch = Scratch::new("g722-pjsua");
    let sip = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = sip.local_addr().unwrap().port();
    let record = scratch.0.join("heard.wav");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../transports/rtp/tests/peers/pjsua_call.py");
    let mut cmd = Command::new(python());
    cmd.arg(script)
        .arg(format!("sip:dialtone@127.0.0.1:{port}"))
        .arg(shared_audio_dir().join("speech-16k.wav"))
        .arg(&record)
        .arg("G722/16000")
        .arg("mandatory")
        .arg("16000")
        .arg("25")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut peer = Peer(cmd.spawn().unwrap());
    let answered = answer_one_call(&sip, codec, 16_000).await;
    assert!(answered.offer.contains("a=rtpmap:9 G722/8000"), "{}", answered.offer);
    assert!(
        answered.answer.contains("RTP/SAVP 9") && answered.answer.contains("a=rtpmap:9 G722/8000"),
        "{}",
        answered.answer
    );
    let status = tokio::task::spawn_blocking(move || peer.0.wait()).await.unwrap().unwrap();
    assert!(status.success(), "pjsua ended with {status}");
    let (theirs, rate) = read_wav_mono(&record).unwrap();
    assert_eq!(rate, 16_000);
    let reference = speech(16_000);
    let we_heard = pesq(
        &reference[..16_000 * 3],
        &answered.heard[..(16_000 * 3 + 8000).min(answered.heard.len())],
        16_000,
    );
    let they_heard = pesq(&reference[..16_000 * 3], &theirs[..(16_000 * 3 + 8000).min(theirs.len())], 16_000);
    let we_snr = segmental_snr_db(&reference[..16_000 * 3], &answered.heard, 8000, 8000);
    let they_snr = segmental_snr_db(&reference[..16_000 * 3], &theirs, 8000, 8000);
    eprintln!(
        "G.722: we heard pjsua at wideband PESQ {we_heard:.2} ({we_snr:.1} dB segmental SNR), \
         pjsua heard us at {they_heard:.2} ({they_snr:.1} dB)"
    );
    // The waveform measure is the strict one here: G.722 keeps the waveform, and the
    // segmental SNR aligns piece by piece. (PESQ over three seconds moves with how the
    // two sides' starts line up: 1.9 to 3.0 across runs, where the codec alone scores
    // 3.02 on this recording; it is a sanity floor only.)
    assert!(we_snr > 12.0, "we heard pjsua at {we_snr:.1} dB segmental SNR");
    assert!(they_snr > 12.0, "pjsua heard us at {they_snr:.1} dB segmental SNR");
    assert!(we_heard > 1.5 && they_heard > 1.5, "wideband PESQ {we_heard:.2} / {they_heard:.2}");
}

//! Interop with PJSIP through pjsua2 (PyPI `pjsua2-python`, installed by
//! `scripts/setup`): pjsua calls a Dialtone RTP session with SDES-SRTP mandatory and
//! both exchange the shared speech over PCMU and PCMA. pjsua records what it hears to
//! a WAV file; we keep ours in memory; both are checked.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;

use common::{answer_one_call, read_wav_mono, score, Peer, Scratch};
use dialtone_codec_pcmu::{Law, G711};
use dialtone_tests::shared_audio_dir;
use tokio::net::UdpSocket;

async fn call(law: Law, pjsua_codec: &str) -> (Vec<i16>, Vec<i16>, String) {
    let scratch = Scratch::new(&format!("pjsua-{}", pjsua_codec.replace('/', "-")));
    let sip = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = sip.local_addr().unwrap().port();
    let record = scratch.0.join("heard.wav");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/pjsua_call.py");
    let mut child = Command::new(dialtone_tests::python());
    child
        .arg(script)
        .arg(format!("sip:dialtone@127.0.0.1:{port}"))
        .arg(shared_audio_dir().join("speech-8k.wav"))
        .arg(&record)
        .arg(pjsua_codec)
        .arg("mandatory")
        .arg("8000")
        .arg("25")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let peer =
        Peer(child.spawn().unwrap_or_else(|e| panic!("cannot run {:?} ({e})", dialtone_tests::python())));
    let answered = answer_one_call(&sip, Arc::new(G711::new(law)), 8000).await;
    // pjsua hears the BYE, hangs up, and finishes its recording as it exits
    let mut peer = peer;
    let mut status = tokio::task::spawn_blocking(move || {
        let s = peer.0.wait();
        (s, peer)
    })
    .await
    .unwrap();
    let mut out = String::new();
    if let Some(mut o) = status.1 .0.stdout.take() {
        std::io::Read::read_to_string(&mut o, &mut out).ok();
    }
    assert!(out.contains("media-active"), "pjsua said {out:?}; is pjsua2-python installed (scripts/setup)?");
    assert!(out.contains("disconnected 200"), "pjsua said: {out:?}");
    let (theirs, rate) = read_wav_mono(&record).expect("pjsua recorded what it heard");
    assert_eq!(rate, 8000);
    (answered.heard, theirs, answered.offer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pjsua_pcmu_and_pcma_with_sdes_srtp_both_ways() {
    for (law, codec) in [(Law::Mu, "PCMU/8000"), (Law::A, "PCMA/8000")] {
        let (ours, theirs, offer) = call(law, codec).await;
        assert!(offer.contains("RTP/SAVP") && offer.contains("a=crypto:"), "{offer}");
        eprintln!("{}", offer.lines().filter(|l| l.starts_with("a=crypto")).collect::<Vec<_>>().join(" | "));
        let (we_snr, we_pesq) = score(&ours, 8000, 8000);
        let (they_snr, they_pesq) = score(&theirs, 8000, 8000);
        eprintln!(
            "{codec}: we heard pjsua at {we_snr:.1} dB (PESQ {we_pesq:.2}), \
             pjsua heard us at {they_snr:.1} dB (PESQ {they_pesq:.2}) (segmental SNR)"
        );
        assert!(
            we_snr > 25.0 && we_pesq > 2.0,
            "{codec}: we heard pjsua at {we_snr:.1} dB, PESQ {we_pesq:.2}"
        );
        assert!(
            they_snr > 25.0 && they_pesq > 2.0,
            "{codec}: pjsua heard us at {they_snr:.1} dB, PESQ {they_pesq:.2}"
        );
    }
}

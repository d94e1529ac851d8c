//! Interop with baresip (Debian's `baresip-core`, installed by `scripts/setup`): baresip
//! calls a Dialtone RTP session and both exchange the shared speech, PCMU and Opus,
//! with SDES-SRTP required. The SIP is the minimal test-only answerer of `common`.
//! Both directions are checked on the audio actually received: ours in memory,
//! baresip's in the WAV its `sndfile` module dumps of what it decoded (baresip 1.0's
//! `aufile` is a source only, so `aubridge` stands in for a player). Each is scored
//! against the shared speech by segmental SNR and PESQ (`common::score`).

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{answer_one_call, read_wav_mono, score, Peer, Scratch, CALL_SECS};
use dialtone_codec_opus::Opus;
use dialtone_codec_pcmu::{Law, G711};
use dialtone_core::parts::AudioCodec;
use dialtone_tests::{shared_audio_dir, speech};
use tokio::net::UdpSocket;

/// Starts baresip dialing `target`, sending `source` and dumping what it hears into
/// `dumps`.
fn baresip(dir: &Path, codec: &str, source: &Path, dumps: &Path, target: &str) -> Peer {
    let config = format!(
        "poll_method epoll\nsip_listen 127.0.0.1:0\nnet_interface 127.0.0.1\n\
         audio_player aubridge,dialtone\naudio_source aufile,{}\naudio_alert aufile,/dev/null\n\
         snd_path {}\nmodule_path /usr/lib/baresip/modules\nmodule g711.so\nmodule opus.so\n\
         module srtp.so\nmodule aufile.so\nmodule aubridge.so\nmodule sndfile.so\nmodule menu.so\n\
         module account.so\n",
        source.display(),
        dumps.display()
    );
    std::fs::write(dir.join("config"), config).unwrap();
    std::fs::write(
        dir.join("accounts"),
        format!("<sip:baresip@127.0.0.1>;regint=0;audio_codecs={codec};mediaenc=srtp-mand\n"),
    )
    .unwrap();
    std::fs::write(dir.join("contacts"), "").unwrap();
    let child = Command::new("baresip")
        .process_group(0)
        .arg("-f")
        .arg(dir)
        .arg("-e")
        .arg(format!("/dial {target}"))
        .arg("-t")
        .arg("25")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run baresip ({e}); `make test` installs it through scripts/setup")
        });
    Peer(child)
}

/// One call from baresip: what we heard and what baresip heard.
async fn call(codec: Arc<dyn AudioCodec>, baresip_codec: &str, rate: u32) -> (Vec<i16>, Vec<i16>) {
    let scratch = Scratch::new(&format!("baresip-{baresip_codec}").replace('/', "-"));
    let sip = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = sip.local_addr().unwrap().port();
    // baresip 1.0 does not convert channels: Opus (opus/48000/2) takes a stereo source
    let source = if baresip_codec.ends_with("/2") {
        let stereo = scratch.0.join("speech-stereo.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&stereo, spec).unwrap();
        for s in speech(rate) {
            w.write_sample(s).unwrap();
            w.write_sample(s).unwrap();
        }
        w.finalize().unwrap();
        stereo
    } else {
        shared_audio_dir().join(format!("speech-{}k.wav", rate / 1000))
    };
    let dumps = scratch.0.join("dumps");
    std::fs::create_dir_all(&dumps).unwrap();
    let peer = baresip(&scratch.0, baresip_codec, &source, &dumps, &format!("sip:dialtone@127.0.0.1:{port}"));
    let answered = answer_one_call(&sip, codec, rate).await;
    assert!(answered.offer.contains("RTP/SAVP") && answered.answer.contains("a=crypto:"));
    // baresip completes its dump of the decoded audio when the call ends
    let theirs = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(audio) = decoded_dump(&dumps, rate) {
                return audio;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        let files: Vec<String> = std::fs::read_dir(&dumps)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| {
                        format!("{} ({} bytes)", e.path().display(), e.metadata().map_or(0, |m| m.len()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        panic!("baresip dumped no decoded audio; dump folder holds {files:?}")
    });
    drop(peer);
    (answered.heard, theirs)
}

/// The mono samples of baresip's `*-dec.wav` dump, once it holds the whole call
/// (less its last half second, which the BYE may cut).
fn decoded_dump(dir: &Path, rate: u32) -> Option<Vec<i16>> {
    let path = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with("-dec.wav")))?;
    let (mono, file_rate) = read_wav_mono(&path)?;
    assert_eq!(file_rate, rate, "baresip decoded at {file_rate} Hz");
    (mono.len() * 2 > rate as usize * (2 * CALL_SECS - 1)).then_some(mono)
}

/// Scores both directions of a call with `codec` and asserts each is speech: a
/// segmental SNR over `snr_floor` dB and a PESQ over 2.0 (silence and noise score about
/// 0 dB and 1.0).
async fn both_ways(
    codec: Arc<dyn AudioCodec>,
    baresip_codec: &str,
    rate: u32,
    speech_rate: u32,
    snr_floor: f64,
) {
    let (ours, theirs) = call(codec, baresip_codec, rate).await;
    let (we_snr, we_pesq) = score(&ours, rate, speech_rate);
    let (they_snr, they_pesq) = score(&theirs, rate, speech_rate);
    eprintln!(
        "{baresip_codec}: we heard baresip at {we_snr:.1} dB (PESQ {we_pesq:.2}), \
         baresip heard us at {they_snr:.1} dB (PESQ {they_pesq:.2}) (segmental SNR)"
    );
    assert!(we_snr > snr_floor && we_pesq > 2.0, "we heard baresip at {we_snr:.1} dB, PESQ {we_pesq:.2}");
    assert!(
        they_snr > snr_floor && they_pesq > 2.0,
        "baresip heard us at {they_snr:.1} dB, PESQ {they_pesq:.2}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_pcmu_with_sdes_srtp_both_ways() {
    both_ways(Arc::new(G711::new(Law::Mu)), "PCMU", 8000, 8000, 25.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_opus_with_sdes_srtp_both_ways() {
    // Opus keeps the sound, not the waveform (speech mode shapes it): its segmental
    // SNR is low (about 9 dB for our encoder here, 14 dB for baresip's) where its PESQ
    // is over 4, so the floor is that of any speech (`dialtone_tests::assert_speech`).
    both_ways(Arc::new(Opus::default()), "opus/48000/2", 48_000, 16_000, 5.0).await;
}

//! Interop with baresip (Debian's `baresip-core`, installed by `scripts/setup`): baresip
//! calls a Dialtone RTP session and both exchange the shared speech, PCMU and Opus,
//! with SDES-SRTP required. The SIP is the minimal test-only answerer of `common`.
//! Both directions are checked on the audio actually received: ours in memory,
//! baresip's in the WAV its `sndfile` module dumps of what it decoded (baresip 1.0's
//! `aufile` is a source only, so `aubridge` stands in for a player).

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{answer_one_call, read_wav_mono, Peer, Scratch};
use dialtone_codec_opus::Opus;
use dialtone_codec_pcmu::{Law, G711};
use dialtone_core::parts::AudioCodec;
use dialtone_tests::{segmental_snr_db, shared_audio_dir, speech};
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

/// The mono samples of baresip's `*-dec.wav` dump, once it holds over two seconds.
fn decoded_dump(dir: &Path, rate: u32) -> Option<Vec<i16>> {
    let path = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with("-dec.wav")))?;
    let (mono, file_rate) = read_wav_mono(&path)?;
    assert_eq!(file_rate, rate, "baresip decoded at {file_rate} Hz");
    (mono.len() > rate as usize * 2).then_some(mono)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_pcmu_with_sdes_srtp_both_ways() {
    let (ours, theirs) = call(Arc::new(G711::new(Law::Mu)), "PCMU", 8000).await;
    let pcm = speech(8000);
    let we_heard = segmental_snr_db(&pcm[..8000 * 2], &ours, 4000, 8000);
    assert!(we_heard > 25.0, "we heard baresip at {we_heard:.1} dB segmental SNR");
    let they_heard = segmental_snr_db(&pcm[..8000 * 2], &theirs, 4000, 8000);
    eprintln!(
        "PCMU: we heard baresip at {we_heard:.1} dB, baresip heard us at {they_heard:.1} dB (segmental SNR)"
    );
    assert!(they_heard > 25.0, "baresip heard us at {they_heard:.1} dB segmental SNR");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_opus_with_sdes_srtp_both_ways() {
    let (ours, theirs) = call(Arc::new(Opus::default()), "opus/48000/2", 48_000).await;
    let pcm = speech(48_000);
    let we_heard = segmental_snr_db(&pcm[..48_000 * 2], &ours, 24_000, 48_000);
    assert!(we_heard > 8.0, "we heard baresip at {we_heard:.1} dB segmental SNR");
    let they_heard = segmental_snr_db(&pcm[..48_000 * 2], &theirs, 24_000, 48_000);
    eprintln!(
        "Opus: we heard baresip at {we_heard:.1} dB, baresip heard us at {they_heard:.1} dB (segmental SNR)"
    );
    assert!(they_heard > 8.0, "baresip heard us at {they_heard:.1} dB segmental SNR");
}

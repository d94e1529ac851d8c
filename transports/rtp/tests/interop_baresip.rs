//! Interop with baresip (Debian's `baresip-core`, installed by `scripts/setup`): baresip
//! calls a Dialtone RTP session and both exchange the shared speech, PCMU and Opus,
//! with SDES-SRTP required. The SIP here is a minimal test-only answerer (one INVITE,
//! its 200 OK, a BYE); the SIP stack proper is the signaling crate's. Both directions
//! are checked on the audio actually received: ours in memory, baresip's in the WAV
//! its `sndfile` module dumps of what it decoded (baresip 1.0's `aufile` is a source
//! only, so `aubridge` stands in for a player).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dialtone_audio_memory::{BufferCapturer, MemoryRenderer};
use dialtone_codec_opus::Opus;
use dialtone_codec_pcmu::{Law, G711};
use dialtone_core::parts::{AudioCodec, AudioFormat, MediaEngine, MediaSessionConfig};
use dialtone_rtp::engine::{RtpEngine, RtpEngineConfig};
use dialtone_tests::{segmental_snr_db, shared_audio_dir, speech};
use tokio::net::UdpSocket;

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("dialtone-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Baresip(Child);

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts baresip dialing `target`, sending `source` and dumping what it hears into
/// `dumps`.
fn baresip(dir: &Path, codec: &str, source: &Path, dumps: &Path, target: &str) -> Baresip {
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
    Baresip(child)
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n\r\n").next()?.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn body(msg: &str) -> &str {
    msg.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// Receives SIP requests until one with `method` arrives (answering BYEs meanwhile).
async fn next_request(sock: &UdpSocket, method: &str) -> (String, std::net::SocketAddr) {
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from) = tokio::time::timeout(Duration::from_secs(20), sock.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no SIP {method} from baresip within 20 s"))
            .unwrap();
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        if msg.starts_with(method) || (method == "SIP/2.0" && msg.starts_with("SIP/2.0")) {
            return (msg, from);
        }
    }
}

fn response(req: &str, status: &str, extra: &str, body: &str) -> String {
    let vias: Vec<&str> = req.lines().filter(|l| l.to_ascii_lowercase().starts_with("via:")).collect();
    format!(
        "SIP/2.0 {status}\r\n{}\r\nFrom: {}\r\nTo: {};tag=dialtone1\r\nCall-ID: {}\r\nCSeq: {}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        vias.join("\r\n"),
        header(req, "From").unwrap(),
        header(req, "To").unwrap(),
        header(req, "Call-ID").unwrap(),
        header(req, "CSeq").unwrap(),
        body.len()
    )
}

/// One call from baresip: returns what we heard and what baresip heard.
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
    let proc = baresip(&scratch.0, baresip_codec, &source, &dumps, &format!("sip:dialtone@127.0.0.1:{port}"));

    let format = AudioFormat::new(rate, 1, 20).unwrap();
    let (renderer, heard) = MemoryRenderer::new(format);
    let capturer = BufferCapturer::new(format, speech(rate), false);
    let cfg = MediaSessionConfig::new(vec![codec], Box::new(capturer), Box::new(renderer));
    let media = RtpEngine::new(RtpEngineConfig::default()).create_session(cfg).await.unwrap();

    let (invite, from) = next_request(&sip, "INVITE").await;
    let answer = media.create_answer(body(&invite)).await.unwrap();
    let contact = format!("Contact: <sip:dialtone@127.0.0.1:{port}>\r\nContent-Type: application/sdp\r\n");
    sip.send_to(response(&invite, "200 OK", &contact, &answer).as_bytes(), from).await.unwrap();
    next_request(&sip, "ACK").await;

    wait_for(&heard, rate as usize * 3).await;

    // hang up: BYE to baresip's contact
    let contact_uri = header(&invite, "Contact").unwrap().trim_matches(|c| c == '<' || c == '>').to_owned();
    let bye = format!(
        "BYE {contact_uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKdialtonebye;rport\r\nMax-Forwards: 70\r\n\
         From: {};tag=dialtone1\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
        header(&invite, "To").unwrap(),
        header(&invite, "From").unwrap(),
        header(&invite, "Call-ID").unwrap()
    );
    sip.send_to(bye.as_bytes(), from).await.unwrap();
    let (ok, _) = next_request(&sip, "SIP/2.0").await;
    assert!(ok.starts_with("SIP/2.0 200"), "BYE answered {ok}");
    media.close().await;
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
    drop(proc);
    let ours = heard.lock().unwrap().clone();
    (ours, theirs)
}

/// The mono samples of baresip's `*-dec.wav` dump, once it holds over two seconds.
fn decoded_dump(dir: &Path, rate: u32) -> Option<Vec<i16>> {
    let path = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with("-dec.wav")))?;
    let reader = hound::WavReader::open(&path).ok()?;
    let spec = reader.spec();
    assert_eq!(spec.sample_rate, rate, "baresip decoded at {} Hz", spec.sample_rate);
    let samples: Vec<i16> = reader.into_samples::<i16>().filter_map(Result::ok).collect();
    let channels = usize::from(spec.channels.max(1));
    let mono: Vec<i16> = samples
        .chunks(channels)
        .map(|c| (c.iter().map(|&s| i32::from(s)).sum::<i32>() / c.len() as i32) as i16)
        .collect();
    (mono.len() > rate as usize * 2).then_some(mono)
}

async fn wait_for(heard: &Arc<Mutex<Vec<i16>>>, samples: usize) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while heard.lock().unwrap().len() < samples {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("audio from baresip kept flowing");
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

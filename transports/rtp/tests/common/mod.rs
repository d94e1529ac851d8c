//! The test-only SIP answerer of the media interop tests: it takes one INVITE from an
//! independent peer, answers it with a Dialtone RTP session's SDP, lets audio flow
//! until five seconds were heard, and hangs up with a BYE. Real signaling is the
//! signaling crate's; this is just enough SIP to put media between two real stacks.
//!
//! What each side heard is scored with [`score`], which finds the heard speech in the
//! looped recording wherever it starts: the first packets of a call may be lost (the
//! peer installs its SRTP keys from our answer only when the 200 OK reaches it), so
//! the peer's audio can start ahead of ours as well as behind.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dialtone_audio_memory::{BufferCapturer, MemoryRenderer};
use dialtone_core::parts::{AudioCodec, AudioFormat, MediaEngine, MediaSessionConfig};
use dialtone_rtp::engine::{RtpEngine, RtpEngineConfig};
use dialtone_tests::speech;
use tokio::net::UdpSocket;

/// A scratch directory removed when dropped.
pub(crate) struct Scratch(pub(crate) PathBuf);

impl Scratch {
    pub(crate) fn new(name: &str) -> Self {
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

/// A child process killed, with its process group, when dropped.
pub(crate) use dialtone_tests::Peer;

pub(crate) fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n\r\n").next()?.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

pub(crate) fn body(msg: &str) -> &str {
    msg.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// Receives SIP messages until one that starts with `start` arrives.
pub(crate) async fn next_message(sock: &UdpSocket, start: &str) -> (String, std::net::SocketAddr) {
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from) = tokio::time::timeout(Duration::from_secs(20), sock.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no SIP {start} from the peer within 20 s"))
            .unwrap();
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        if msg.starts_with(start) {
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

/// What the answered call carried.
pub(crate) struct Answered {
    /// What we heard, at the codec's device rate.
    pub(crate) heard: Vec<i16>,
    /// The peer's offer.
    pub(crate) offer: String,
    /// Our answer.
    pub(crate) answer: String,
}

/// Seconds of the peer's audio an answered call lasts for.
pub(crate) const CALL_SECS: usize = 5;

/// Seconds at the start of a call's audio that are not scored (its set-up).
const HEAD_SECS: f64 = 1.5;

/// Segmental SNR (dB) and PESQ of `heard` (at `rate`) from [`HEAD_SECS`] on, against
/// the looped shared speech at `speech_rate` ([`dialtone_tests::speech_score`]).
pub(crate) fn score(heard: &[i16], rate: u32, speech_rate: u32) -> (f64, f64) {
    let head = (HEAD_SECS * f64::from(rate)) as usize;
    dialtone_tests::speech_score(dialtone_tests::middle(heard, head, 0), rate, speech_rate)
}

/// Answers the INVITE arriving on `sip` with a session sending the shared speech,
/// looped, at `rate`, waits until [`CALL_SECS`] seconds were heard, and hangs up.
pub(crate) async fn answer_one_call(sip: &UdpSocket, codec: Arc<dyn AudioCodec>, rate: u32) -> Answered {
    let port = sip.local_addr().unwrap().port();
    let format = AudioFormat::new(rate, 1, 20).unwrap();
    let (renderer, heard) = MemoryRenderer::new(format);
    let capturer = BufferCapturer::new(format, speech(rate), true);
    let cfg = MediaSessionConfig::new(vec![codec], Box::new(capturer), Box::new(renderer));
    let media = RtpEngine::new(RtpEngineConfig::default()).create_session(cfg).await.unwrap();

    let (invite, from) = next_message(sip, "INVITE").await;
    let offer = body(&invite).to_owned();
    let answer = media.create_answer(&offer).await.unwrap();
    let contact = format!("Contact: <sip:dialtone@127.0.0.1:{port}>\r\nContent-Type: application/sdp\r\n");
    sip.send_to(response(&invite, "200 OK", &contact, &answer).as_bytes(), from).await.unwrap();
    next_message(sip, "ACK").await;

    wait_for(&heard, rate as usize * CALL_SECS).await;

    let contact_uri = header(&invite, "Contact").unwrap().trim_matches(|c| c == '<' || c == '>').to_owned();
    let bye = format!(
        "BYE {contact_uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKdialtonebye;rport\r\nMax-Forwards: 70\r\n\
         From: {};tag=dialtone1\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 1 BYE\r\nContact: <sip:dialtone@127.0.0.1:{port}>\r\nContent-Length: 0\r\n\r\n",
        header(&invite, "To").unwrap(),
        header(&invite, "From").unwrap(),
        header(&invite, "Call-ID").unwrap()
    );
    sip.send_to(bye.as_bytes(), from).await.unwrap();
    let (ok, _) = next_message(sip, "SIP/2.0").await;
    assert!(ok.starts_with("SIP/2.0 200"), "BYE answered {ok}");
    media.close().await;
    let heard = heard.lock().unwrap().clone();
    Answered { heard, offer, answer }
}

async fn wait_for(heard: &Arc<Mutex<Vec<i16>>>, samples: usize) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while heard.lock().unwrap().len() < samples {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the call kept going");
}

/// The mono samples of a WAV file (channels averaged), and its rate.
pub(crate) fn read_wav_mono(path: &std::path::Path) -> Option<(Vec<i16>, u32)> {
    let reader = hound::WavReader::open(path).ok()?;
    let spec = reader.spec();
    let samples: Vec<i16> = reader.into_samples::<i16>().filter_map(Result::ok).collect();
    let channels = usize::from(spec.channels.max(1));
    let mono = samples
        .chunks(channels)
        .map(|c| (c.iter().map(|&s| i32::from(s)).sum::<i32>() / c.len() as i32) as i16)
        .collect();
    Some((mono, spec.sample_rate))
}

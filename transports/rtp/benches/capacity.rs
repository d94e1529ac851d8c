//! How many concurrent calls one core carries with no late frame: N call pairs (both
//! directions: encode, SRTP, jitter buffer, decode on each side) are stepped on one
//! thread every 20 ms of real time for 5 s; a tick whose work overruns its 20 ms is a
//! late frame. N doubles until frames are late, then bisects.
//! Run: `cargo bench -p dialtone-rtp --bench capacity`.

#![allow(clippy::unwrap_used, clippy::print_stdout, missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use dialtone_codec_opus::Opus;
use dialtone_codec_pcmu::{Law, G711};
use dialtone_core::config::SrtpPolicy;
use dialtone_core::parts::{AudioCodec, EncoderSettings};
use dialtone_media::sdp;
use dialtone_rtp::session::{RtpSession, SessionConfig};

const PERIOD: Duration = Duration::from_millis(20);
const RUN: Duration = Duration::from_secs(5);

fn pair(codec: &Arc<dyn AudioCodec>) -> (RtpSession, RtpSession) {
    let addr = |p| SocketAddr::from(([127, 0, 0, 1], p));
    let (a, b) =
        sdp::negotiate_in_memory(&[codec.descriptor().clone()], SrtpPolicy::Required, addr(4000), addr(5000))
            .unwrap();
    let mut enc = EncoderSettings::default();
    enc.bitrate = Some(32_000);
    enc.complexity = Some(9);
    enc.fec = true;
    let make = |negotiated, ssrc| {
        let mut cfg = SessionConfig::new(negotiated, codec.clone(), ssrc);
        cfg.encoder = enc.clone();
        cfg.jitter_min_delay_ms = 0;
        RtpSession::new(cfg, Instant::now(), SystemTime::now()).unwrap()
    };
    (make(a, 1), make(b, 2))
}

/// One direction of one call for one frame.
fn step(
    x: &mut RtpSession,
    y: &mut RtpSession,
    frame: &[i16],
    out: &mut [i16],
    from: SocketAddr,
    now: Instant,
) {
    for d in x.send_frame(frame, now).unwrap() {
        y.receive(&d, from, now);
    }
    y.play_frame(out, now);
}

/// Late ticks when running `n` calls.
fn late_ticks(codec: &Arc<dyn AudioCodec>, frames: &[Vec<i16>], n: usize) -> usize {
    let mut calls: Vec<(RtpSession, RtpSession)> = (0..n).map(|_| pair(codec)).collect();
    let samples = frames[0].len();
    let mut out = vec![0i16; samples];
    let from = SocketAddr::from(([127, 0, 0, 1], 4000));
    let start = Instant::now();
    let mut late = 0;
    let mut k = 0u32;
    while start.elapsed() < RUN {
        let deadline = start + PERIOD * (k + 1);
        let now = Instant::now();
        let frame = &frames[k as usize % frames.len()];
        for (a, b) in calls.iter_mut() {
            step(a, b, frame, &mut out, from, now);
            step(b, a, frame, &mut out, from, now);
        }
        let done = Instant::now();
        if done > deadline {
            late += 1;
        } else {
            std::thread::sleep(deadline - done);
        }
        k += 1;
    }
    late
}

fn capacity(name: &str, codec: Arc<dyn AudioCodec>, rate: u32, samples: usize) -> usize {
    let pcm = dialtone_tests::speech(rate);
    let frames: Vec<Vec<i16>> = pcm.chunks_exact(samples).take(250).map(<[i16]>::to_vec).collect();
    let (mut ok, mut bad) = (0usize, 1usize);
    while late_ticks(&codec, &frames, bad) == 0 {
        ok = bad;
        bad *= 2;
    }
    while bad - ok > 1.max(ok / 20) {
        let mid = (ok + bad) / 2;
        if late_ticks(&codec, &frames, mid) == 0 {
            ok = mid;
        } else {
            bad = mid;
        }
    }
    println!("{name}: {ok} concurrent calls (both directions) with no late frame over {RUN:?}; {bad} had late frames");
    ok
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists benchmarks; there is nothing to list
    }
    println!("one thread, 20 ms frames, SRTP on, real time");
    capacity("PCMU+SRTP", Arc::new(G711::new(Law::Mu)), 8000, 160);
    capacity("Opus+SRTP (32 kbit/s, complexity 9, FEC)", Arc::new(Opus::default()), 48_000, 960);
}

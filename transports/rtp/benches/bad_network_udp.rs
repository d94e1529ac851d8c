//! Speech through a bad network over real sockets: two `rtp` engine sessions (the
//! client's defaults: Opus, SRTP, RED, the default jitter buffer; their tokio shells
//! and frame clocks) on 127.0.0.1, each side playing its own talker. A's packets reach
//! B through an impairing UDP relay (a shim: this machine's kernel has no `netem`):
//! random or bursty loss, a 40 ms path with ±30 ms of uniform jitter that reorders,
//! and drift (the path's delay shrinking by 200 µs a second, as a sender clock 200 ppm
//! fast looks to the receiver). B's packets go back through the same relay, clean.
//!
//! Each case is one whole call of the 13 s talker, in real time. What B heard is scored
//! as wideband PESQ against A's talker after the first second, and the mouth-to-ear lag
//! beyond the path's mean delay is reported. Run:
//! `cargo bench -p dialtone-rtp --bench bad_network_udp` (about a minute).

#![allow(clippy::unwrap_used, clippy::print_stdout, missing_docs)]

use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dialtone_audio_memory::{BufferCapturer, MemoryRenderer};
use dialtone_codec_opus::Opus;
use dialtone_core::config::Config;
use dialtone_core::parts::{AudioCodec, AudioFormat, MediaEngine, MediaSession, MediaSessionConfig};
use dialtone_media::resample::convert_all;
use dialtone_rtp::engine::{RtpEngine, RtpEngineConfig};
use dialtone_tests::netsim::{Impairer, Loss};
use dialtone_tests::{best_lag, pesq, speech, speech_b};
use tokio::net::UdpSocket;

#[derive(Clone, Copy, Debug)]
struct Impairment {
    loss: Loss,
    jitter_ms: f64,
    drift_ppm: f64,
}

const PATH_MS: f64 = 40.0;

/// The relay: each side's SDP names the relay as the other side. A sends to
/// `facing_a`, and what goes on to B (at `b`) leaves from `facing_b`; B sends to
/// `facing_b`, and that goes back to A (at `a`) from `facing_a`, at once.
async fn relay(
    facing_a: Arc<UdpSocket>,
    facing_b: Arc<UdpSocket>,
    (a, b): (SocketAddr, SocketAddr),
    imp: Impairment,
    stop: Instant,
) {
    let back = {
        let (facing_a, facing_b) = (facing_a.clone(), facing_b.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while Instant::now() < stop {
                let Ok(Ok((n, _))) =
                    tokio::time::timeout(Duration::from_millis(200), facing_b.recv_from(&mut buf)).await
                else {
                    continue;
                };
                let _ = facing_a.send_to(&buf[..n], a).await;
            }
        })
    };
    let start = Instant::now();
    let mut rng = Impairer::new(imp.loss, 0x9E37_79B9_7F4A_7C15);
    let mut queue: BinaryHeap<std::cmp::Reverse<(Instant, u64, Vec<u8>)>> = BinaryHeap::new();
    let mut n = 0u64;
    let mut buf = vec![0u8; 2048];
    while Instant::now() < stop {
        let due = queue.peek().map(|std::cmp::Reverse((t, _, _))| *t);
        let wait = due.map_or(Duration::from_millis(200), |t| t.saturating_duration_since(Instant::now()));
        tokio::select! {
            r = facing_a.recv_from(&mut buf) => {
                let Ok((len, _)) = r else { continue };
                // RTCP (payload types 200-204) passes unimpaired: it is A's reports
                let rtcp = len > 1 && (192..=223).contains(&buf[1]);
                if !rtcp && rng.lost() {
                    continue;
                }
                let elapsed = start.elapsed().as_secs_f64();
                let jitter = (rng.uniform() * 2.0 - 1.0) * imp.jitter_ms;
                let drift = elapsed * imp.drift_ppm / 1000.0; // ms shed so far
                let delay_ms = (PATH_MS + jitter - drift).max(0.0);
                n += 1;
                queue.push(std::cmp::Reverse((Instant::now() + Duration::from_secs_f64(delay_ms / 1000.0), n, buf[..len].to_vec())));
            }
            _ = tokio::time::sleep(wait) => {
                let now = Instant::now();
                while queue.peek().is_some_and(|std::cmp::Reverse((t, _, _))| *t <= now) {
                    let std::cmp::Reverse((_, _, d)) = queue.pop().unwrap();
                    let _ = facing_b.send_to(&d, b).await;
                }
            }
        }
    }
    back.abort();
}

/// 48 kHz audio brought to 16 kHz for wideband PESQ.
fn to_16k(pcm: &[i16]) -> Vec<i16> {
    convert_all(pcm, 48_000, 16_000).unwrap()
}

/// Rewrites the port of an SDP's `m=audio` line.
fn with_port(sdp: &str, port: u16) -> String {
    sdp.lines()
        .map(|l| match l.strip_prefix("m=audio ") {
            Some(rest) => format!("m=audio {port} {}", rest.split_once(' ').map_or("", |(_, r)| r)),
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\r\n")
        + "\r\n"
}

fn port_of(sdp: &str) -> u16 {
    sdp.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .parse()
        .unwrap()
}

async fn side(say: Vec<i16>) -> (Box<dyn MediaSession>, Arc<Mutex<Vec<i16>>>) {
    let format = AudioFormat::new(48_000, 1, 20).unwrap();
    let (renderer, heard) = MemoryRenderer::new(format);
    let codecs: Vec<Arc<dyn AudioCodec>> = vec![Arc::new(Opus::default())];
    let cfg = MediaSessionConfig::new(
        codecs,
        Box::new(BufferCapturer::new(format, say, false)),
        Box::new(renderer),
    );
    let engine = RtpEngine::new(RtpEngineConfig::from_config(&Config::default()));
    (engine.create_session(cfg).await.unwrap(), heard)
}

/// One call through `imp`: PESQ-WB of what B heard, and the lag beyond the path (ms).
async fn call(imp: Impairment) -> (f64, f64) {
    let said_by_a = speech(48_000);
    let said_by_b = speech_b(48_000);
    let seconds = said_by_a.len() as f64 / 48_000.0;
    let (a, _) = side(said_by_a.clone()).await;
    let (b, heard) = side(said_by_b.clone()).await;
    let facing_a = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let facing_b = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    // each side is told the other is at the relay
    let offer = a.create_offer().await.unwrap();
    let answer = b.create_answer(&with_port(&offer, facing_b.local_addr().unwrap().port())).await.unwrap();
    let ends = (
        SocketAddr::from(([127, 0, 0, 1], port_of(&offer))),
        SocketAddr::from(([127, 0, 0, 1], port_of(&answer))),
    );
    a.apply_answer(&with_port(&answer, facing_a.local_addr().unwrap().port())).await.unwrap();
    let stop = Instant::now() + Duration::from_secs_f64(seconds + 1.0);
    let relay = tokio::spawn(relay(facing_a, facing_b, ends, imp, stop));
    tokio::time::sleep_until(tokio::time::Instant::from_std(stop)).await;
    let _ = relay.await;
    a.close().await;
    b.close().await;
    let got = to_16k(&heard.lock().unwrap());
    let reference = to_16k(&said_by_a);
    let lag = best_lag(&reference[..reference.len() / 2], &got, 8000);
    let skip: usize = 16_000;
    let pesq_wb = pesq(&reference[skip.saturating_sub(lag)..], &got[skip.min(got.len())..], 16_000);
    (pesq_wb, lag as f64 / 16.0 - PATH_MS)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let cases = [
        ("clean", Impairment { loss: Loss::Random(0.0), jitter_ms: 0.0, drift_ppm: 0.0 }),
        (
            "±30 ms jitter, 200 ppm drift",
            Impairment { loss: Loss::Random(0.0), jitter_ms: 30.0, drift_ppm: 200.0 },
        ),
        (
            "5% random loss, ±30 ms jitter, 200 ppm drift",
            Impairment { loss: Loss::Random(0.05), jitter_ms: 30.0, drift_ppm: 200.0 },
        ),
        (
            "10% loss in bursts of 3, ±30 ms jitter",
            Impairment { loss: Loss::Bursts { mean: 0.10, burst: 3.0 }, jitter_ms: 30.0, drift_ppm: 0.0 },
        ),
    ];
    println!("| network A → B | PESQ-WB | mouth-to-ear lag beyond the 40 ms path |");
    println!("|---|---|---|");
    for (name, imp) in cases {
        let (score, lag) = rt.block_on(call(imp));
        println!("| {name} | {score:.2} | {lag:.0} ms |");
    }
}

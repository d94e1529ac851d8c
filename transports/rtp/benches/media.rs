//! The cost of each stage of the media pipeline per 20 ms frame, and of the whole
//! send + receive pipeline, for Opus and PCMU, next to bare libopus encode + decode of
//! the same frames in the same run; and the cost of forwarding one frame between two
//! SRTP legs with no decode (unprotect, re-protect under the other leg's keys).
//! Run: `cargo bench -p dialtone-rtp --bench media`.

#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use dialtone_codec_opus::{Opus, FRAME_SAMPLES, MAX_PAYLOAD};
use dialtone_codec_pcmu::{Law, G711};
use dialtone_core::config::SrtpPolicy;
use dialtone_core::parts::{AudioCodec, EncoderSettings};
use dialtone_media::jitter::{JitterBuffer, JitterConfig, MediaPacket};
use dialtone_media::sdp::{self, CryptoSuite, SdesKey};
use dialtone_rtp::session::{Received, RtpSession, SessionConfig};
use rtc_shared::marshal::Marshal;

fn speech_frames(rate: u32, samples: usize) -> Vec<Vec<i16>> {
    let pcm = dialtone_tests::speech(rate);
    pcm.chunks_exact(samples).take(200).map(<[i16]>::to_vec).collect()
}

fn settings() -> EncoderSettings {
    let mut s = EncoderSettings::default();
    s.bitrate = Some(32_000);
    s.complexity = Some(9);
    s.fec = true;
    s
}

fn pair(codec: Arc<dyn AudioCodec>) -> (RtpSession, RtpSession) {
    pair_with_ssrcs(codec, (1, 2))
}

fn pair_with_ssrcs(codec: Arc<dyn AudioCodec>, ssrcs: (u32, u32)) -> (RtpSession, RtpSession) {
    pair_of(codec, ssrcs, false)
}

/// Two sessions that negotiated `codec` (and RED around it, with `red`) by SDP text.
fn pair_of(codec: Arc<dyn AudioCodec>, ssrcs: (u32, u32), red: bool) -> (RtpSession, RtpSession) {
    let addr = |p| SocketAddr::from(([127, 0, 0, 1], p));
    let mut ours = vec![codec.descriptor().clone()];
    if red {
        ours.push(sdp::red_descriptor());
    }
    let (a, b) = sdp::negotiate_in_memory(&ours, SrtpPolicy::Required, addr(4000), addr(5000)).unwrap();
    assert_eq!(a.red_pt.is_some(), red);
    let make = |negotiated, ssrc| {
        let mut cfg = SessionConfig::new(negotiated, codec.clone(), ssrc);
        cfg.encoder = settings();
        cfg.jitter_min_delay_ms = 0;
        RtpSession::new(cfg, Instant::now(), SystemTime::now()).unwrap()
    };
    (make(a, ssrcs.0), make(b, ssrcs.1))
}

fn srtp(key: &SdesKey) -> rtc_srtp::context::Context {
    let (k, s) = key.key_salt.split_at(16);
    let provider = rtc_crypto::default_provider().unwrap();
    rtc_srtp::context::Context::new(
        k,
        s,
        rtc_srtp::protection_profile::ProtectionProfile::Aes128CmHmacSha1_80,
        None,
        None,
        provider.crypto(),
    )
    .unwrap()
}

fn stages(c: &mut Criterion) {
    let opus_frames = speech_frames(48_000, FRAME_SAMPLES);
    let pcmu_frames = speech_frames(8000, 160);
    let opus = Opus::default();
    let pcmu = G711::new(Law::Mu);
    let mut g = c.benchmark_group("stage");

    for (name, codec, frames) in
        [("opus", &opus as &dyn AudioCodec, &opus_frames), ("pcmu", &pcmu as &dyn AudioCodec, &pcmu_frames)]
    {
        let mut enc = codec.new_encoder(&settings()).unwrap();
        let mut out = vec![0u8; MAX_PAYLOAD];
        let mut i = 0;
        g.bench_function(format!("{name}/encode"), |b| {
            b.iter(|| {
                i = (i + 1) % frames.len();
                black_box(enc.encode(&frames[i], &mut out).unwrap())
            })
        });
        let payloads: Vec<Vec<u8>> = {
            let mut e = codec.new_encoder(&settings()).unwrap();
            frames
                .iter()
                .map(|f| {
                    let n = e.encode(f, &mut out).unwrap();
                    out[..n].to_vec()
                })
                .collect()
        };
        let mut dec = codec.new_decoder().unwrap();
        let mut pcm = vec![0i16; FRAME_SAMPLES];
        g.bench_function(format!("{name}/decode"), |b| {
            b.iter(|| {
                i = (i + 1) % payloads.len();
                black_box(dec.decode(&payloads[i], &mut pcm).unwrap())
            })
        });
        let payload = Bytes::from(payloads[10].clone());
        g.bench_function(format!("{name}/packetize"), |b| {
            let mut seq = 0u16;
            b.iter(|| {
                seq = seq.wrapping_add(1);
                let p = rtc_rtp::packet::Packet {
                    header: rtc_rtp::header::Header {
                        version: 2,
                        payload_type: 0,
                        sequence_number: seq,
                        timestamp: u32::from(seq) * 160,
                        ssrc: 7,
                        ..Default::default()
                    },
                    payload: payload.clone(),
                };
                black_box(p.marshal().unwrap())
            })
        });
        let key = SdesKey::generate(1, CryptoSuite::AesCm128HmacSha1_80).unwrap();
        let raw = rtc_rtp::packet::Packet {
            header: rtc_rtp::header::Header {
                version: 2,
                payload_type: 0,
                sequence_number: 1,
                ssrc: 7,
                ..Default::default()
            },
            payload: payload.clone(),
        }
        .marshal()
        .unwrap();
        let mut tx = srtp(&key);
        g.bench_function(format!("{name}/srtp-protect"), |b| {
            b.iter(|| black_box(tx.encrypt_rtp(&raw).unwrap()))
        });
        let protected = srtp(&key).encrypt_rtp(&raw).unwrap();
        let mut rx = srtp(&key);
        g.bench_function(format!("{name}/srtp-unprotect"), |b| {
            b.iter(|| black_box(rx.decrypt_rtp(&protected).unwrap()))
        });
        let frame_ts = if name == "opus" { 960 } else { 160 };
        let mut jb = JitterBuffer::new(JitterConfig {
            clock_rate: frame_ts * 50,
            frame_ts,
            min_delay_ms: 0,
            max_packets: 50,
        });
        let t0 = Instant::now();
        let mut k = 0u32;
        g.bench_function(format!("{name}/jitter-buffer"), |b| {
            b.iter(|| {
                k += 1;
                let now = t0 + Duration::from_millis(20) * k;
                jb.push(
                    MediaPacket {
                        seq: k as u16,
                        timestamp: k * frame_ts,
                        ssrc: 1,
                        marker: false,
                        payload: payloads[10].clone(),
                    },
                    now,
                );
                black_box(jb.pop(now))
            })
        });
    }
    g.finish();
}

/// One frame through the whole pipeline: A sends it, B takes the datagrams and plays.
fn send_and_receive(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    (mut a, mut b): (RtpSession, RtpSession),
    frames: Vec<Vec<i16>>,
) {
    let from = SocketAddr::from(([127, 0, 0, 1], 4000));
    let t0 = Instant::now();
    let mut k = 0u32;
    let mut out = vec![0i16; frames[0].len()];
    g.bench_function(name, |bench| {
        bench.iter(|| {
            k += 1;
            let now = t0 + Duration::from_millis(20) * k;
            for d in a.send_frame(&frames[k as usize % frames.len()], now).unwrap() {
                b.receive(&d, from, now);
            }
            black_box(b.play_frame(&mut out, now))
        })
    });
}

/// The whole pipeline per frame (encode, packetize, protect; unprotect, jitter buffer,
/// decode) against bare libopus encode + decode of the same frames.
fn pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    let from = SocketAddr::from(([127, 0, 0, 1], 4000));
    for (name, codec, rate, n) in [
        ("opus", Arc::new(Opus::default()) as Arc<dyn AudioCodec>, 48_000, FRAME_SAMPLES),
        ("pcmu", Arc::new(G711::new(Law::Mu)) as Arc<dyn AudioCodec>, 8000, 160),
    ] {
        send_and_receive(&mut g, &format!("{name}/send+receive"), pair(codec), speech_frames(rate, n));
    }
    // Forwarding, as a media anchor does between two SRTP legs: A's packet is
    // unprotected by leg 1 and re-protected by leg 2 under its own SSRC, sequence
    // numbers and keys; no jitter buffer, no decode. A's send is set-up, not timed.
    for (name, codec, rate, n) in [
        ("opus", Arc::new(Opus::default()) as Arc<dyn AudioCodec>, 48_000, FRAME_SAMPLES),
        ("pcmu", Arc::new(G711::new(Law::Mu)) as Arc<dyn AudioCodec>, 8000, 160),
    ] {
        let frames = speech_frames(rate, n);
        let (mut a, mut leg1) = pair(codec.clone());
        let (mut leg2, _b) = pair_with_ssrcs(codec, (3, 4));
        leg1.set_forwarding(true);
        let t0 = Instant::now();
        let mut k = 0u32;
        g.bench_function(format!("{name}/forward-srtp-to-srtp"), |bench| {
            bench.iter_batched(
                || {
                    k += 1;
                    let now = t0 + Duration::from_millis(20) * k;
                    (a.send_frame(&frames[k as usize % frames.len()], now).unwrap(), now)
                },
                |(datagrams, now)| {
                    for d in datagrams {
                        if let Received::Forward(f) = leg1.receive(&d, from, now) {
                            black_box(leg2.send_encoded(&f, now));
                        }
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
    // the client's default: RED around Opus (each packet also carries the last frame)
    let frames = speech_frames(48_000, FRAME_SAMPLES);
    send_and_receive(
        &mut g,
        "opus/send+receive-with-red",
        pair_of(Arc::new(Opus::default()), (1, 2), true),
        frames.clone(),
    );
    let mut enc = opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
    enc.set_bitrate(opus::Bitrate::Bits(32_000)).unwrap();
    enc.set_complexity(9).unwrap();
    enc.set_inband_fec(true).unwrap();
    let mut dec = opus::Decoder::new(48_000, opus::Channels::Mono).unwrap();
    let mut buf = vec![0u8; MAX_PAYLOAD];
    let mut pcm = vec![0i16; FRAME_SAMPLES];
    let mut i = 0;
    g.bench_function("bare-libopus/encode+decode", |bench| {
        bench.iter(|| {
            i = (i + 1) % frames.len();
            let n = enc.encode(&frames[i], &mut buf).unwrap();
            black_box(dec.decode(&buf[..n], &mut pcm, false).unwrap())
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = stages, pipeline
}
criterion_main!(benches);

//! Plugins written in Rust with `export_codec!`, built by cargo as real shared
//! libraries and loaded by the host: the G.722 example, and a plugin that panics and
//! fails on purpose, which must not take the process or a call down.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use dialtone_core::config::SrtpPolicy;
use dialtone_core::parts::{AudioCodec, EncoderSettings};
use dialtone_media::sdp;
use dialtone_plugin_abi::load;
use dialtone_rtp::session::{FrameSource, RtpSession, SessionConfig};

/// Builds a plugin crate and returns its shared library.
fn build(package: &str) -> PathBuf {
    dialtone_tests::build_plugin(package)
}

#[test]
fn the_g722_plugin_loads_with_its_rtp_clock_quirk() {
    let plugin = load(&build("dialtone-plugin-g722")).unwrap();
    assert_eq!(plugin.name(), "G722");
    let codec = plugin.codec().unwrap();
    let d = codec.descriptor();
    // 16 kHz audio on an 8000 Hz RTP clock, static payload type 9
    assert_eq!((d.sample_rate, d.clock_rate, d.payload_type), (16_000, 8000, Some(9)));
    assert_eq!(d.samples_per_packet(), 320);
    let mut enc = codec.new_encoder(&EncoderSettings::default()).unwrap();
    let mut dec = codec.new_decoder().unwrap();
    let tone: Vec<i16> = (0..320 * 20).map(|i| ((i as f64 * 0.3).sin() * 8000.0) as i16).collect();
    let mut out = Vec::new();
    for frame in tone.chunks_exact(320) {
        let mut payload = [0u8; 200];
        let n = enc.encode(frame, &mut payload).unwrap();
        assert_eq!(n, 160, "64 kbit/s: 160 bytes a 20 ms packet");
        let mut pcm = [0i16; 320];
        assert_eq!(dec.decode(&payload[..n], &mut pcm).unwrap(), 320);
        out.extend_from_slice(&pcm);
    }
    assert!(dialtone_tests::aligned_snr_db(&tone, &out, 100) > 20.0);
    let mut bad = EncoderSettings::default();
    bad.bitrate = Some(48_000);
    let e = codec.new_encoder(&bad).err().unwrap();
    assert!(e.message().contains("64000"), "{e}");
}

#[test]
fn a_panicking_plugin_returns_an_error_and_the_process_goes_on() {
    let codec = load(&build("dialtone-plugin-misbehaving")).unwrap().codec().unwrap();
    let mut enc = codec.new_encoder(&EncoderSettings::default()).unwrap();
    let mut out = [0u8; 400];
    let mut trigger = [0i16; 160];
    trigger[0] = 12345;
    let e = enc.encode(&trigger, &mut out).unwrap_err();
    assert!(e.message().contains("panicked") && e.message().contains("12345"), "{e}");
    // the same encoder works afterwards
    assert_eq!(enc.encode(&[7i16; 160], &mut out).unwrap(), 320);
}

#[test]
fn a_plugin_codec_failing_mid_call_is_concealed_and_the_call_goes_on() {
    let codec: Arc<dyn AudioCodec> = load(&build("dialtone-plugin-misbehaving")).unwrap().codec().unwrap();
    let addr = |p| SocketAddr::from(([127, 0, 0, 1], p));
    let (a_neg, b_neg) =
        sdp::negotiate_in_memory(&[codec.descriptor().clone()], SrtpPolicy::Off, addr(4000), addr(5000))
            .unwrap();
    let make = |negotiated, ssrc| {
        RtpSession::new(
            SessionConfig::new(negotiated, codec.clone(), ssrc),
            Instant::now(),
            SystemTime::now(),
        )
        .unwrap()
    };
    let (mut a, mut b) = (make(a_neg, 1), make(b_neg, 2));
    let t0 = Instant::now();
    let mut sources = Vec::new();
    for k in 0..100u32 {
        let now = t0 + Duration::from_millis(20) * k;
        // every tenth frame makes a payload the decoder refuses (first byte 0xEE);
        // frame 50 makes the encoder panic
        let mut frame = [1000i16; 160];
        if k % 10 == 3 {
            frame[0] = i16::from_be_bytes([0xEE, 0x00]);
        }
        if k == 50 {
            frame[0] = 12345;
        }
        match a.send_frame(&frame, now) {
            Ok(datagrams) => {
                for d in datagrams {
                    b.receive(&d, addr(4000), now);
                }
            }
            Err(e) => assert!(e.message().contains("panicked"), "{e}"),
        }
        let mut out = [0i16; 160];
        sources.push(b.play_frame(&mut out, now));
    }
    let decoded = sources.iter().filter(|s| **s == FrameSource::Decoded).count();
    let concealed = sources.iter().filter(|s| **s == FrameSource::Concealed).count();
    assert!(decoded > 80, "{decoded} frames decoded");
    assert!(concealed >= 10, "{concealed} frames concealed");
    assert!(b.drops().undecodable >= 9, "{:?}", b.drops());
}

//! Opus on real speech: quality, FEC recovery, bitrate, DTX, and garbage input.

#![allow(clippy::unwrap_used)]

use dialtone_codec_opus::{Opus, FRAME_SAMPLES, MAX_PAYLOAD};
use dialtone_core::parts::{AudioCodec, AudioDecoder, AudioEncoder, EncoderSettings};
use dialtone_tests::{aligned_correlation, speech};

fn settings(bitrate: u32, fec: bool, dtx: bool) -> EncoderSettings {
    let mut s = EncoderSettings::default();
    s.bitrate = Some(bitrate);
    s.fec = fec;
    s.dtx = dtx;
    s
}

fn encode_all(enc: &mut dyn AudioEncoder, pcm: &[i16]) -> Vec<Vec<u8>> {
    pcm.chunks_exact(FRAME_SAMPLES)
        .map(|frame| {
            let mut out = [0u8; MAX_PAYLOAD];
            let n = enc.encode(frame, &mut out).unwrap();
            out[..n].to_vec()
        })
        .collect()
}

fn decode_frame(dec: &mut dyn AudioDecoder, p: &[u8]) -> Vec<i16> {
    let mut out = vec![0i16; FRAME_SAMPLES];
    let n = dec.decode(p, &mut out).unwrap();
    assert_eq!(n, FRAME_SAMPLES);
    out
}

#[test]
fn speech_survives_opus() {
    let codec = Opus::default();
    assert_eq!(codec.descriptor().name, "opus");
    let pcm = speech(48_000);
    let mut enc = codec.new_encoder(&settings(32_000, true, false)).unwrap();
    let packets = encode_all(enc.as_mut(), &pcm);
    let mut dec = codec.new_decoder().unwrap();
    let out: Vec<i16> = packets.iter().flat_map(|p| decode_frame(dec.as_mut(), p)).collect();
    let corr = aligned_correlation(&pcm, &out, 2000);
    assert!(corr > 0.9, "correlation {corr}");
    let bytes: usize = packets.iter().map(Vec::len).sum();
    let kbps = bytes as f64 * 8.0 / (packets.len() as f64 * 0.02) / 1000.0;
    assert!((20.0..40.0).contains(&kbps), "{kbps} kbit/s at a 32 kbit/s target");
}

#[test]
fn fec_recovers_a_lost_packet_better_than_plc() {
    let codec = Opus::default();
    let pcm = speech(48_000);
    let mut enc = codec.new_encoder(&settings(32_000, true, false)).unwrap();
    enc.set_packet_loss_percent(20);
    let packets = encode_all(enc.as_mut(), &pcm);

    let mut clean_dec = codec.new_decoder().unwrap();
    let clean: Vec<Vec<i16>> = packets.iter().map(|p| decode_frame(clean_dec.as_mut(), p)).collect();

    let mut fec_dec = codec.new_decoder().unwrap();
    let mut plc_dec = codec.new_decoder().unwrap();
    let (mut fec_err, mut plc_err, mut lost) = (0.0f64, 0.0f64, 0);
    for i in 0..packets.len() - 1 {
        if i % 10 == 5 {
            let mut f = vec![0i16; FRAME_SAMPLES];
            assert!(fec_dec.decode_fec(&packets[i + 1], &mut f).unwrap().is_some());
            let mut p = vec![0i16; FRAME_SAMPLES];
            plc_dec.conceal(&mut p).unwrap();
            let err = |x: &[i16]| -> f64 {
                x.iter().zip(&clean[i]).map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2)).sum()
            };
            fec_err += err(&f);
            plc_err += err(&p);
            lost += 1;
        } else {
            decode_frame(fec_dec.as_mut(), &packets[i]);
            decode_frame(plc_dec.as_mut(), &packets[i]);
        }
    }
    assert!(lost > 50);
    assert!(fec_err < 0.5 * plc_err, "FEC error {fec_err:.3e} vs PLC error {plc_err:.3e}");
}

#[test]
fn the_bitrate_setting_is_obeyed() {
    let codec = Opus::default();
    let pcm = &speech(48_000)[..48_000 * 4];
    let size = |bitrate| {
        let mut enc = codec.new_encoder(&settings(bitrate, false, false)).unwrap();
        encode_all(enc.as_mut(), pcm).iter().map(Vec::len).sum::<usize>()
    };
    let (low, high) = (size(12_000), size(48_000));
    assert!(high as f64 > 2.5 * low as f64, "12k: {low} bytes, 48k: {high} bytes");
}

#[test]
fn dtx_sends_almost_nothing_in_silence() {
    let codec = Opus::default();
    let silence = vec![0i16; FRAME_SAMPLES * 50];
    let tiny = |dtx| {
        let mut enc = codec.new_encoder(&settings(32_000, false, dtx)).unwrap();
        encode_all(enc.as_mut(), &silence).iter().filter(|p| p.len() <= 2).count()
    };
    // libopus starts DTX after about 200 ms of silence
    let (with, without) = (tiny(true), tiny(false));
    assert!(with >= 35, "{with} of 50 silent packets were DTX frames");
    assert_eq!(without, 0, "without DTX every packet carries a frame");
}

#[test]
fn garbage_payloads_are_errors_or_audio_never_panics() {
    let codec = Opus::default();
    let mut dec = codec.new_decoder().unwrap();
    let mut out = vec![0i16; FRAME_SAMPLES];
    assert!(dec.decode(&[], &mut out).is_err());
    // a code-3 packet that claims 0 frames is invalid
    assert!(dec.decode(&[0x03, 0x00], &mut out).is_err());
    let mut x: u32 = 0x1234_5678;
    for len in 1..200 {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let _ = dec.decode(&bytes, &mut out);
    }
    // still decodes a good packet afterwards
    let mut enc = codec.new_encoder(&EncoderSettings::default()).unwrap();
    let mut p = [0u8; MAX_PAYLOAD];
    let n = enc.encode(&vec![1000i16; FRAME_SAMPLES], &mut p).unwrap();
    assert_eq!(dec.decode(&p[..n], &mut out).unwrap(), FRAME_SAMPLES);
}

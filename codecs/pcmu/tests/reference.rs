//! All 65,536 16-bit inputs against G.711 written a second way: as a search over the
//! standard's decision intervals, with decoding at each interval's middle (the values
//! of the ITU-T G.191 reference implementation), rather than the bit arithmetic of the
//! crate. Then the round-trip properties every G.711 implementation must have.

#![allow(clippy::unwrap_used)]

use dialtone_codec_pcmu::{alaw_decode, alaw_encode, ulaw_decode, ulaw_encode};

/// Lower edges of the 128 magnitude intervals, plus the end of the last one.
/// µ-law: 14-bit magnitudes biased by 33; segment s starts at 32 << s, step 2 << s.
fn ulaw_edges() -> Vec<i32> {
    let mut e: Vec<i32> = (0..8).flat_map(|s| (0..16).map(move |m| (32 << s) + m * (2 << s))).collect();
    e.push(8192);
    e
}

/// A-law: 12-bit magnitudes; segments 0 and 1 have step 1, segment s >= 1 starts at
/// 16 << (s - 1) with step 1 << (s - 1).
fn alaw_edges() -> Vec<i32> {
    let mut e: Vec<i32> = (0..16).collect();
    e.extend((1..8).flat_map(|s| (0..16).map(move |m| (16 << (s - 1)) + m * (1 << (s - 1)))));
    e.push(2048);
    e
}

fn interval(edges: &[i32], v: i32) -> usize {
    edges.iter().rposition(|&e| e <= v).unwrap().min(127)
}

fn ref_ulaw_encode(x: i16) -> u8 {
    let negative = x < 0;
    let mag14 = if negative { (-(x as i32) - 1) / 4 } else { x as i32 / 4 };
    let k = interval(&ulaw_edges(), (mag14 + 33).min(8191));
    (0x7F - k as u8) | if negative { 0 } else { 0x80 }
}

fn ref_ulaw_decode(code: u8) -> i16 {
    let k = 0x7F - (code & 0x7F) as usize;
    let e = ulaw_edges();
    let mid = (e[k] + e[k + 1]) / 2;
    let v = (mid - 33) * 4;
    (if code & 0x80 != 0 { v } else { -v }) as i16
}

fn ref_alaw_encode(x: i16) -> u8 {
    let negative = x < 0;
    let mag12 = if negative { (-(x as i32) - 1) / 16 } else { x as i32 / 16 };
    let k = interval(&alaw_edges(), mag12) as u8;
    (k | if negative { 0 } else { 0x80 }) ^ 0x55
}

fn ref_alaw_decode(code: u8) -> i16 {
    let k = ((code ^ 0x55) & 0x7F) as usize;
    let e = alaw_edges();
    let v = (e[k] + e[k + 1]) * 8; // the interval's middle, times 16
    (if code & 0x80 != 0 { v } else { -v }) as i16
}

#[test]
fn every_input_matches_the_reference() {
    for x in i16::MIN..=i16::MAX {
        assert_eq!(ulaw_encode(x), ref_ulaw_encode(x), "µ-law encode {x}");
        assert_eq!(alaw_encode(x), ref_alaw_encode(x), "A-law encode {x}");
    }
    for c in 0..=255u8 {
        assert_eq!(ulaw_decode(c), ref_ulaw_decode(c), "µ-law decode {c:#04x}");
        assert_eq!(alaw_decode(c), ref_alaw_decode(c), "A-law decode {c:#04x}");
    }
}

#[test]
fn the_reference_itself_has_the_published_values() {
    assert_eq!(ref_ulaw_decode(0x80), 32124);
    assert_eq!(ref_ulaw_encode(0), 0xFF);
    assert_eq!(ref_alaw_decode(0xAA), 32256);
    assert_eq!(ref_alaw_decode(0xD5), 8);
    assert_eq!(ref_alaw_encode(0), 0xD5);
}

#[test]
fn round_trip_properties() {
    type Law = (fn(i16) -> u8, fn(u8) -> i16, i32);
    // (encode, decode, largest quantization step in the top segment)
    let laws: [Law; 2] = [(ulaw_encode, ulaw_decode, 1024), (alaw_encode, alaw_decode, 1024)];
    for (enc, dec, top_step) in laws {
        // decoding is a fixed point: re-encoding a decoded value gives the same value
        for c in 0..=255u8 {
            assert_eq!(dec(enc(dec(c))), dec(c), "code {c:#04x}");
        }
        let mut prev = i32::MIN;
        for x in i16::MIN..=i16::MAX {
            let y = i32::from(dec(enc(x)));
            // monotonic: a louder input never decodes quieter
            assert!(y >= prev, "not monotonic at {x}");
            prev = y;
            // the error is at most half the largest step (plus the clipping at the ends)
            let err = (i32::from(x) - y).abs();
            assert!(err <= top_step / 2 || i32::from(x).abs() > 32000, "error {err} at {x}");
            // the sign survives (zero-ish inputs may land on either side of zero)
            assert!(i32::from(x).abs() < 16 || (x < 0) == (y < 0), "sign flipped at {x}");
        }
    }
}

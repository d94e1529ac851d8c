//! Our G.722 against a well-kept implementation: PyPI's `G722` (sippy/libg722, the
//! Bellcore/CMU/spandsp lineage, bit-exact with the ITU G.722 test vectors), installed
//! by `scripts/setup`. On the shared 16 kHz speech our encoder must produce the same
//! bytes, and our decoder the same samples from the reference's bytes.

#![allow(clippy::unwrap_used)]

use dialtone_plugin_g722::codec::{Decoder, Encoder};
use dialtone_tests::{aligned_snr_db, python, shared_audio_dir, speech};

/// The reference's (codes, decoded samples) for the shared speech.
fn reference() -> (Vec<u8>, Vec<i16>) {
    let dir = std::env::temp_dir().join(format!("dialtone-g722-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (codes, pcm) = (dir.join("codes.g722"), dir.join("decoded.raw"));
    let script = "import sys, wave, array, G722\n\
        w = wave.open(sys.argv[1]); x = array.array('h', w.readframes(w.getnframes()))\n\
        codes = G722.G722(16000, 64000).encode(x)\n\
        open(sys.argv[2], 'wb').write(codes)\n\
        open(sys.argv[3], 'wb').write(G722.G722(16000, 64000).decode(codes).tobytes())\n";
    let out = std::process::Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(shared_audio_dir().join("speech-16k.wav"))
        .arg(&codes)
        .arg(&pcm)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", python()));
    assert!(
        out.status.success(),
        "the reference failed (is G722 installed by scripts/setup?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let codes = std::fs::read(&codes).unwrap();
    let pcm =
        std::fs::read(&pcm).unwrap().chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
    let _ = std::fs::remove_dir_all(&dir);
    (codes, pcm)
}

#[test]
fn bit_exact_with_the_reference_both_ways() {
    let x = speech(16_000);
    let (ref_codes, ref_pcm) = reference();
    let mut ours = Vec::new();
    Encoder::new().encode(&x, &mut ours);
    assert_eq!(ours.len(), ref_codes.len());
    let first = ours.iter().zip(&ref_codes).position(|(a, b)| a != b);
    assert_eq!(first, None, "encoders differ from byte {first:?}");
    let mut decoded = Vec::new();
    Decoder::new().decode(&ref_codes, &mut decoded);
    let first = decoded.iter().zip(&ref_pcm).position(|(a, b)| a != b);
    assert_eq!(first, None, "decoders differ from sample {first:?}");
    assert_eq!(decoded.len(), ref_pcm.len());
    // and the audio is the speech, delayed by the QMF pair
    let snr = aligned_snr_db(&x, &decoded, 100);
    assert!(snr > 15.0, "SNR {snr:.1} dB");
}

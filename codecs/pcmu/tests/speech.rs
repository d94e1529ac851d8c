//! G.711 on the shared speech: the decoded audio keeps the waveform.

#![allow(clippy::unwrap_used)]

use dialtone_codec_pcmu::{Law, G711};
use dialtone_core::parts::{AudioCodec, EncoderSettings};
use dialtone_tests::{aligned_snr_db, speech};

#[test]
fn speech_through_both_laws_keeps_over_30_db_snr() {
    let pcm = speech(8000);
    for law in [Law::Mu, Law::A] {
        let codec = G711::new(law);
        let mut enc = codec.new_encoder(&EncoderSettings::default()).unwrap();
        let mut dec = codec.new_decoder().unwrap();
        let mut out = Vec::with_capacity(pcm.len());
        for frame in pcm.chunks_exact(160) {
            let mut payload = [0u8; 160];
            let n = enc.encode(frame, &mut payload).unwrap();
            let mut samples = [0i16; 160];
            dec.decode(&payload[..n], &mut samples).unwrap();
            out.extend_from_slice(&samples);
        }
        let snr = aligned_snr_db(&pcm, &out, 10);
        assert!(snr > 30.0, "{law:?}: {snr:.1} dB");
    }
}

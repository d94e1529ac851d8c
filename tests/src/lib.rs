//! The test kit: the shared speech recordings and the measures that tell broken audio
//! from good audio. Used by the media tests of every crate; the end-to-end tests of
//! the binaries live under `tests/`.

#![forbid(unsafe_code)]

use std::path::PathBuf;

/// The folder of shared test audio: `../shared/audio` beside the repository, or the
/// folder named by `DIALTONE_SHARED_AUDIO`.
pub fn shared_audio_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DIALTONE_SHARED_AUDIO") {
        return PathBuf::from(dir);
    }
    // CARGO_MANIFEST_DIR is <repo>/tests
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/audio")
}

/// The shared speech recording at `rate` Hz (8000, 16000 or 48000), mono 16-bit.
///
/// # Panics
/// If the file is missing or unreadable: a test without its input cannot pass.
pub fn speech(rate: u32) -> Vec<i16> {
    let path = shared_audio_dir().join(format!("speech-{}k.wav", rate / 1000));
    let reader =
        hound::WavReader::open(&path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let spec = reader.spec();
    assert_eq!((spec.channels, spec.bits_per_sample, spec.sample_rate), (1, 16, rate), "{}", path.display());
    reader.into_samples::<i16>().map(|s| s.unwrap_or_else(|e| panic!("{}: {e}", path.display()))).collect()
}

/// The lag (in samples, `0..=max_lag`) by which `received` trails `reference`, found
/// by cross-correlation over the first seconds.
pub fn best_lag(reference: &[i16], received: &[i16], max_lag: usize) -> usize {
    let window = reference.len().min(received.len()).min(48_000 * 3);
    (0..=max_lag)
        .max_by(|&a, &b| {
            let c = |lag: usize| -> f64 {
                (0..window.saturating_sub(lag))
                    .map(|i| f64::from(reference[i]) * f64::from(received[i + lag]))
                    .sum()
            };
            c(a).total_cmp(&c(b))
        })
        .unwrap_or(0)
}

/// Signal-to-noise ratio in dB of `received` against `reference` after aligning by
/// [`best_lag`]. Broken audio (silence, noise, wrong rate, reordering) scores near or
/// below 0 dB; G.711 scores over 30 dB on speech.
pub fn aligned_snr_db(reference: &[i16], received: &[i16], max_lag: usize) -> f64 {
    let lag = best_lag(reference, received, max_lag);
    let n = reference.len().min(received.len().saturating_sub(lag));
    let (mut signal, mut noise) = (0.0f64, 0.0f64);
    for i in 0..n {
        let r = f64::from(reference[i]);
        let d = r - f64::from(received[i + lag]);
        signal += r * r;
        noise += d * d;
    }
    10.0 * (signal / noise.max(1.0)).log10()
}

/// Pearson correlation of the two after aligning by [`best_lag`]: 1.0 is the same
/// waveform, 0 unrelated. A measure for codecs that do not keep the waveform exactly.
pub fn aligned_correlation(reference: &[i16], received: &[i16], max_lag: usize) -> f64 {
    let lag = best_lag(reference, received, max_lag);
    let n = reference.len().min(received.len().saturating_sub(lag));
    let a: Vec<f64> = reference[..n].iter().map(|&x| f64::from(x)).collect();
    let b: Vec<f64> = received[lag..lag + n].iter().map(|&x| f64::from(x)).collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (ma, mb) = (mean(&a), mean(&b));
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(&b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    sab / (saa.sqrt() * sbb.sqrt()).max(f64::MIN_POSITIVE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_measures_tell_good_from_broken() {
        let s = speech(8000);
        assert!(s.len() > 8000 * 10);
        let mut delayed = vec![0i16; 37];
        delayed.extend_from_slice(&s);
        assert_eq!(best_lag(&s, &delayed, 100), 37);
        assert!(aligned_snr_db(&s, &delayed, 100) > 90.0);
        let silence = vec![0i16; s.len()];
        assert!(aligned_snr_db(&s, &silence, 100) < 1.0);
        let reversed: Vec<i16> = s.iter().rev().copied().collect();
        assert!(aligned_correlation(&s, &reversed, 100) < 0.2);
        assert!(aligned_correlation(&s, &delayed, 100) > 0.999);
    }
}

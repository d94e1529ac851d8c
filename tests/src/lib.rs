//! The test kit: the shared speech recordings and the measures that tell broken audio
//! from good audio. Used by the media tests of every crate; the end-to-end tests of
//! the binaries live under `tests/`.

#![forbid(unsafe_code)]

pub mod netsim;

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

/// The Python that has the test peers and measures: `DIALTONE_PYTHON`, else the
/// repository's `.venv` that `scripts/setup` makes, else `python3`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("DIALTONE_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python3");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// Builds a plugin package of the workspace (`cargo build -p PACKAGE`) and returns
/// its library, `target/debug/lib<package>.so` (or under `CARGO_TARGET_DIR`).
///
/// # Panics
/// If the build fails or makes no library: a plugin test without its plugin cannot pass.
pub fn build_plugin(package: &str) -> PathBuf {
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", package])
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo: {e}"));
    assert!(status.success(), "cargo build -p {package} failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let lib = target.join("debug").join(format!("lib{}.so", package.replace('-', "_")));
    assert!(lib.exists(), "{} was not built", lib.display());
    lib
}

/// Kills the process group that `leader` leads (a child started with
/// `process_group(0)`), so that the workers a peer forks (Kamailio's, Chromium's)
/// end with it. A process that leads no group is left to the caller.
pub fn kill_group(leader: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{leader}")])
        .stderr(std::process::Stdio::null())
        .status();
}

/// A test peer, started in a process group of its own (`process_group(0)`); dropping
/// it kills the whole group, then reaps the child.
pub struct Peer(pub std::process::Child);

impl Drop for Peer {
    fn drop(&mut self) {
        kill_group(self.0.id());
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn write_wav(path: &std::path::Path, samples: &[i16], rate: u32) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for &s in samples {
        w.write_sample(s).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    w.finalize().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// PESQ (ITU-T P.862) MOS-LQO of `degraded` against `reference`, both at `rate`
/// (8000 Hz: narrowband, 16000 Hz: wideband), from the PyPI `pesq` package that
/// `scripts/setup` installs. PESQ aligns the two itself, delay changes included.
///
/// # Panics
/// If the measure cannot run: a quality test without its measure cannot pass.
pub fn pesq(reference: &[i16], degraded: &[i16], rate: u32) -> f64 {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("dialtone-pesq-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let (r, d) = (dir.join("ref.wav"), dir.join("deg.wav"));
    write_wav(&r, reference, rate);
    write_wav(&d, degraded, rate);
    let script = "import sys, wave, numpy as np\nfrom pesq import pesq\n\
        def read(p):\n    w = wave.open(p)\n    return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32)\n\
        rate = int(sys.argv[3])\nprint(pesq(rate, read(sys.argv[1]), read(sys.argv[2]), 'wb' if rate == 16000 else 'nb'))\n";
    let out = std::process::Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(&r)
        .arg(&d)
        .arg(rate.to_string())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {:?} ({e}); `make test` sets it up through scripts/setup", python())
        });
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().parse().unwrap_or_else(|_| {
        panic!(
            "pesq failed: {text} {}; is the pesq package installed (scripts/setup)?",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A scratch directory under the system's temporary directory, unique to the process
/// and the call, removed when dropped.
#[derive(Debug)]
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// Creates `dialtone-{name}-{pid}-{n}` (`n` counts this process's scratch
    /// directories), empty.
    pub fn new(name: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("dialtone-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The shared speech recording at `rate` Hz (8000, 16000 or 48000), mono 16-bit.
///
/// # Panics
/// If the file is missing or unreadable: a test without its input cannot pass.
pub fn speech(rate: u32) -> Vec<i16> {
    talker(&format!("speech-{}k.wav", rate / 1000), rate)
}

/// The second talker (`speech-b-{8,16,48}k.wav`), for the other side of a call: a test
/// can then tell who is heard.
pub fn speech_b(rate: u32) -> Vec<i16> {
    talker(&format!("speech-b-{}k.wav", rate / 1000), rate)
}

fn talker(name: &str, rate: u32) -> Vec<i16> {
    let path = shared_audio_dir().join(name);
    let reader =
        hound::WavReader::open(&path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let spec = reader.spec();
    assert_eq!((spec.channels, spec.bits_per_sample, spec.sample_rate), (1, 16, rate), "{}", path.display());
    reader.into_samples::<i16>().map(|s| s.unwrap_or_else(|e| panic!("{}: {e}", path.display()))).collect()
}

/// The lag (in samples, `0..=max_lag`) by which `received` trails `reference`: the
/// lag of the highest normalized cross-correlation over the first three seconds, found
/// first on 4-sample averages over every lag, then sample by sample around the best
/// coarse lag.
pub fn best_lag(reference: &[i16], received: &[i16], max_lag: usize) -> usize {
    const STEP: usize = 4;
    let window = reference.len().min(received.len()).min(48_000 * 3);
    let decimate = |x: &[i16]| -> Vec<f64> {
        x.chunks(STEP).map(|c| c.iter().map(|&s| f64::from(s)).sum::<f64>() / STEP as f64).collect()
    };
    let r = decimate(&reference[..window]);
    let g = decimate(&received[..received.len().min(window + max_lag + STEP)]);
    // correlation with the received window at `lag`, divided by that window's energy
    let score = |a: &dyn Fn(usize) -> f64, b: &dyn Fn(usize) -> f64, n: usize, lag: usize| -> f64 {
        let (mut c, mut e) = (0.0, 0.0);
        for i in 0..n {
            let y = b(i + lag);
            c += a(i) * y;
            e += y * y;
        }
        c / e.sqrt().max(1e-9)
    };
    let (ra, ga) = (|i: usize| r[i], |i: usize| g.get(i).copied().unwrap_or(0.0));
    let coarse = (0..=max_lag / STEP)
        .max_by(|&x, &y| score(&ra, &ga, r.len(), x).total_cmp(&score(&ra, &ga, r.len(), y)))
        .unwrap_or(0);
    let fa = |i: usize| f64::from(reference[i]);
    let fb = |i: usize| f64::from(received.get(i).copied().unwrap_or(0));
    let centre = coarse * STEP;
    (centre.saturating_sub(2 * STEP)..=(centre + 2 * STEP).min(max_lag))
        .max_by(|&x, &y| score(&fa, &fb, window, x).total_cmp(&score(&fa, &fb, window, y)))
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

/// Segmental SNR in dB: the reference is cut into `segment`-sample pieces, each piece
/// is aligned on its own (an adaptive jitter buffer changes the delay during a call)
/// and scored, each score is clipped to -10..60 dB, and the scores of the pieces that
/// are not silent are averaged. Silence or noise in place of speech scores near 0 dB.
pub fn segmental_snr_db(reference: &[i16], received: &[i16], segment: usize, max_lag: usize) -> f64 {
    let mut scores = Vec::new();
    for start in (0..reference.len().saturating_sub(segment)).step_by(segment) {
        let piece = &reference[start..start + segment];
        let energy: f64 = piece.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
        if energy / (segment as f64) < 100.0 * 100.0 {
            continue; // a quiet piece says nothing about the channel
        }
        let Some(tail) = received.get(start..) else { break };
        let lag = best_lag(piece, tail, max_lag);
        let noise: f64 = piece
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let d = f64::from(x) - f64::from(tail.get(i + lag).copied().unwrap_or(0));
                d * d
            })
            .sum();
        scores.push((10.0 * (energy / noise.max(1.0)).log10()).clamp(-10.0, 60.0));
    }
    scores.iter().sum::<f64>() / scores.len().max(1) as f64
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

/// Averages blocks of `factor` samples: a crude low-pass and decimation, enough to
/// compare a 48 kHz rendering with the shared speech at 16 or 8 kHz. (A 63-tap
/// windowed sinc raised G.711's segmental SNR but lowered PESQ: its slow roll-off
/// takes the top of the speech band.)
pub fn decimate(samples: &[i16], factor: usize) -> Vec<i16> {
    let f = factor.max(1);
    samples
        .chunks_exact(f)
        .map(|c| (c.iter().map(|&x| i32::from(x)).sum::<i32>() / f as i32) as i16)
        .collect()
}

/// How speech that was sent as the looped shared recording came through: up to four
/// seconds of `received` (at `rate`, 8000 to 48000 Hz) are brought to `speech_rate`
/// (16000 for wideband codecs, 8000 for G.711), found in the loop, and scored by
/// segmental SNR (dB) and PESQ. Silence, noise, the wrong rate or the wrong audio
/// score near 0 dB and a PESQ near 1; speech through a codec scores well above.
///
/// # Panics
/// If fewer than two seconds are given, or the measure cannot run.
pub fn speech_score(received: &[i16], rate: u32, speech_rate: u32) -> (f64, f64) {
    assert!(rate % speech_rate == 0, "{rate} Hz is not a multiple of {speech_rate} Hz");
    let piece = decimate(received, (rate / speech_rate) as usize);
    let r = speech_rate as usize;
    assert!(piece.len() >= 2 * r, "{:.2} s of audio; at least 2 s are scored", piece.len() as f64 / r as f64);
    let piece = &piece[..piece.len().min(4 * r)];
    let reference = speech(speech_rate);
    let looped: Vec<i16> =
        reference.iter().chain(reference.iter()).chain(reference.iter()).copied().collect();
    // where in the loop the piece is: the loop "trails" the piece by that offset
    let offset = best_lag(piece, &looped, reference.len());
    let aligned = &looped[offset..offset + piece.len()];
    // The delay may drift during a call (an adaptive jitter buffer): each segment is
    // aligned on its own within 100 ms either way of the whole piece's alignment.
    let slack = r / 10;
    let later = &looped[offset + slack..offset + piece.len() - slack];
    let snr = segmental_snr_db(later, piece, r / 4, 2 * slack);
    (snr, pesq(aligned, piece, speech_rate))
}

/// `samples` without its first `head` and last `tail` samples (a call's set-up and
/// hang-up), or nothing when it is shorter than that.
pub fn middle(samples: &[i16], head: usize, tail: usize) -> &[i16] {
    let end = samples.len().saturating_sub(tail);
    samples.get(head..end.max(head)).unwrap_or(&[])
}

/// Asserts that `received` holds the shared speech ([`speech_score`]): segmental SNR
/// over 5 dB and PESQ over 2.0. Silence and noise score about 0 dB and 1.0; PESQ is
/// kept low because it punishes the delay changes of a loaded machine (G.711 at
/// 25 dB has scored 2.3 on a busy CI run) that the segmental SNR forgives.
pub fn assert_speech(who: &str, received: &[i16], rate: u32, speech_rate: u32) {
    let (snr, pesq) = speech_score(received, rate, speech_rate);
    tracing_free_log(&format!("{who}: segmental SNR {snr:.1} dB, PESQ {pesq:.2}"));
    assert!(snr > 5.0 && pesq > 2.0, "{who}: no clean speech (segmental SNR {snr:.1} dB, PESQ {pesq:.2})");
}

#[allow(clippy::print_stderr)]
fn tracing_free_log(line: &str) {
    eprintln!("{line}");
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
        assert!(segmental_snr_db(&s, &delayed, 4000, 100) > 59.0);
        assert!(segmental_snr_db(&s, &silence, 4000, 100) < 1.0);
        // a delay that changes halfway is followed piece by piece
        let mut shifting = delayed[..40_000].to_vec();
        shifting.extend(vec![0i16; 160]);
        shifting.extend_from_slice(&delayed[40_000..]);
        let seg = segmental_snr_db(&s, &shifting, 4000, 400);
        assert!(seg > 40.0, "{seg}");
        assert!(aligned_snr_db(&s, &shifting, 400) < 10.0);
        // PESQ scores the recording against itself near the top and noise near the bottom
        let clip = &s[..8000 * 4];
        assert!(pesq(clip, clip, 8000) > 4.0);
        let noise: Vec<i16> =
            (0..clip.len() as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 20) as i16).collect();
        assert!(pesq(clip, &noise, 8000) < 1.5);
    }
}

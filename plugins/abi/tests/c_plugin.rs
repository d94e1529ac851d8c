//! A codec plugin written in C (`tests/c/l16_codec.c`, against
//! `include/dialtone_plugin.h`), compiled here with the `cc` crate into a shared
//! library and loaded by the host: the ABI is C. Then its misbehaving variants, which
//! are refused or contained, and a real call over UDP that negotiates the plugin codec.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dialtone_audio_memory::{BufferCapturer, MemoryRenderer};
use dialtone_core::config::PluginConfig;
use dialtone_core::parts::{AudioCodec, AudioFormat, EncoderSettings, MediaEngine, MediaSessionConfig};
use dialtone_core::registry::Registry;
use dialtone_core::PreferredCodec;
use dialtone_plugin_abi::{load, load_configured, PluginKind};
use dialtone_rtp::engine::{RtpEngine, RtpEngineConfig};
use dialtone_tests::{aligned_snr_db, speech};

fn out_dir() -> PathBuf {
    // under target/ (cargo clean removes it), one folder per run
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("c-plugins-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Compiles `tests/c/<source>` with `defines` into `<name>.so` in a scratch folder.
fn compile(source: &str, name: &str, defines: &[&str]) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let compiler = cc::Build::new()
        .target(&target)
        .host(&target)
        .opt_level(1)
        .cargo_metadata(false)
        .warnings(true)
        .get_compiler();
    let out = out_dir().join(format!("{name}.so"));
    let mut cmd = compiler.to_command();
    cmd.arg("-shared").arg("-fPIC").arg("-Wall").arg("-Werror").arg("-I").arg(root.join("include"));
    for d in defines {
        cmd.arg(format!("-D{d}"));
    }
    cmd.arg("-o").arg(&out).arg(root.join("tests/c").join(source));
    let status = cmd.status().unwrap_or_else(|e| panic!("cannot run the C compiler: {e}"));
    assert!(status.success(), "compiling {source} with {defines:?} failed");
    out
}

#[test]
fn a_c_plugin_loads_registers_and_codes() {
    let path = compile("l16_codec.c", "l16", &[]);
    let plugin = load(&path).unwrap();
    assert_eq!((plugin.name(), plugin.version(), plugin.kind()), ("X-DT-L16", "1.0.0", PluginKind::Codec));
    let codec = plugin.codec().unwrap();
    let d = codec.descriptor();
    assert_eq!(
        (d.sample_rate, d.clock_rate, d.channels, d.ptime_ms, d.payload_type),
        (8000, 8000, 1, 20, None)
    );

    let mut enc = codec.new_encoder(&EncoderSettings::default()).unwrap();
    let mut dec = codec.new_decoder().unwrap();
    let pcm: Vec<i16> = (0..160).map(|i| (i * 397 - 30_000) as i16).collect();
    let mut payload = [0u8; 400];
    let n = enc.encode(&pcm, &mut payload).unwrap();
    assert_eq!(n, 320);
    assert_eq!(&payload[..2], &(pcm[0] as u16).to_be_bytes());
    let mut out = [0i16; 160];
    assert_eq!(dec.decode(&payload[..n], &mut out).unwrap(), 160);
    assert_eq!(out.to_vec(), pcm);
    // the plugin's own errors come back with their message
    let e = dec.decode(&payload[..3], &mut out).unwrap_err();
    assert!(e.message().contains("X-DT-L16") && e.message().contains("even length"), "{e}");
    let e = enc.encode(&pcm, &mut [0u8; 10]).unwrap_err();
    assert!(e.message().contains("too small"), "{e}");

    let mut registry = Registry::new();
    plugin.register(&mut registry).unwrap();
    assert_eq!(registry.names::<dyn AudioCodec>(), ["X-DT-L16"]);
    // the same name twice is refused, naming the file
    let again = load(&path).unwrap().register(&mut registry).unwrap_err();
    assert!(
        again.to_string().contains("already registered") && again.to_string().contains("l16.so"),
        "{again}"
    );
}

#[test]
fn another_abi_version_is_refused_with_a_clear_error() {
    let path = compile("l16_codec.c", "abi99", &["DT_TEST_ABI=99"]);
    let e = load(&path).unwrap_err().to_string();
    assert!(e.contains("abi99.so") && e.contains("ABI version 99") && e.contains("version 1"), "{e}");

    let path = compile("l16_codec.c", "short", &["DT_TEST_STRUCT_SIZE=16"]);
    let e = load(&path).unwrap_err().to_string();
    assert!(e.contains("16 bytes") && e.contains("smaller"), "{e}");

    let path = compile("l16_codec.c", "nodecode", &["DT_TEST_NO_DECODE"]);
    let e = load(&path).unwrap_err().to_string();
    assert!(e.contains("decode is missing"), "{e}");

    let path = compile("not_a_plugin.c", "other", &[]);
    let e = load(&path).unwrap_err().to_string();
    assert!(e.contains("not a Dialtone plugin"), "{e}");

    let text = out_dir().join("text.so");
    std::fs::write(&text, "not a library").unwrap();
    let e = load(&text).unwrap_err().to_string();
    assert!(e.contains("cannot load the library") && e.contains("text.so"), "{e}");
}

#[test]
fn garbage_from_a_plugin_is_an_error_not_a_crash() {
    let path = compile("l16_codec.c", "garbage", &["DT_TEST_GARBAGE"]);
    let codec = load(&path).unwrap().codec().unwrap();
    let mut enc = codec.new_encoder(&EncoderSettings::default()).unwrap();
    let mut out = [0u8; 320];
    let e = enc.encode(&[0i16; 160], &mut out).unwrap_err();
    assert!(e.message().contains("reported 1320 items written into a buffer of 320"), "{e}");
    let e = codec.new_decoder().err().unwrap();
    assert!(e.message().contains("out of mana"), "{e}");
}

#[test]
fn configured_plugins_load_and_a_refused_one_does_not_stop_the_rest() {
    let dir = out_dir().join("plugin-dir");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(compile("l16_codec.c", "good", &[]), dir.join("a-good.so")).unwrap();
    std::fs::copy(compile("l16_codec.c", "old", &["DT_TEST_ABI=0"]), dir.join("b-old.so")).unwrap();
    std::fs::write(dir.join("readme.txt"), "not a plugin, and not a library name").unwrap();
    let mut registry = Registry::new();
    let mut entry = PluginConfig::default();
    entry.dir = Some(dir.clone());
    let outcomes = load_configured(&mut registry, &[entry]);
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    assert_eq!(outcomes[0].as_deref().unwrap(), "X-DT-L16");
    assert!(outcomes[1].as_ref().unwrap_err().to_string().contains("b-old.so"));
    assert!(registry.contains::<dyn AudioCodec>("X-DT-L16"));
}

#[test]
fn an_audio_backend_plugin_in_c_captures_and_renders() {
    use dialtone_core::parts::AudioBackend;
    let plugin = load(&compile("ramp_audio.c", "ramp", &[])).unwrap();
    assert_eq!((plugin.name(), plugin.kind()), ("x-ramp", PluginKind::AudioBackend));
    assert!(plugin.codec().is_none());
    let backend = plugin.audio_backend().unwrap();
    let format = AudioFormat::new(8000, 1, 20).unwrap();
    let mut capture = backend.open_capturer(None, format).unwrap();
    let mut frame = vec![0i16; 160];
    assert!(!capture.read_frame(&mut frame).unwrap(), "the first read is not ready");
    assert!(capture.read_frame(&mut frame).unwrap());
    assert_eq!(&frame[..3], &[0, 1, 2]);
    assert!(capture.read_frame(&mut frame).unwrap());
    assert_eq!(frame[0], 160);
    let mut render = backend.open_renderer(Some("speaker"), format).unwrap();
    render.write_frame(&frame).unwrap();
    let e = render.write_frame(&[-1i16; 160]).unwrap_err();
    assert!(e.message().contains("x-ramp") && e.message().contains("write_frame"), "{e}");
    let e = backend.open_capturer(Some("missing"), format).err().unwrap();
    assert!(e.message().contains("no such device"), "{e}");
    let mut registry = Registry::new();
    plugin.register(&mut registry).unwrap();
    assert!(registry.contains::<dyn AudioBackend>("x-ramp"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_over_udp_negotiates_the_plugin_codec() {
    let codec = load(&compile("l16_codec.c", "call", &[])).unwrap().codec().unwrap();
    let pcm = speech(8000);
    let format = AudioFormat::new(8000, 1, 20).unwrap();
    let mut sides = Vec::new();
    for _ in 0..2 {
        let (renderer, heard) = MemoryRenderer::new(format);
        let mut cfg = MediaSessionConfig::new(
            vec![codec.clone()],
            Box::new(BufferCapturer::new(format, pcm.clone(), false)),
            Box::new(renderer),
        );
        cfg.preferred_codecs = vec![PreferredCodec::Named("X-DT-L16".into())];
        // A deep jitter buffer: the test checks the codec is lossless, so a packet made
        // late by a busy machine (CI runs many tests at once) must still be played.
        let engine =
            RtpEngine::new(RtpEngineConfig { jitter_min_delay_ms: 200, ..RtpEngineConfig::default() });
        sides.push((engine.create_session(cfg).await.unwrap(), heard));
    }
    let offer = sides[0].0.create_offer().await.unwrap();
    assert!(offer.contains("X-DT-L16/8000"), "{offer}");
    let answer = sides[1].0.create_answer(&offer).await.unwrap();
    sides[0].0.apply_answer(&answer).await.unwrap();
    assert_eq!(sides[0].0.negotiated_codec().as_deref(), Some("X-DT-L16"));
    tokio::time::timeout(Duration::from_secs(20), async {
        while sides.iter().any(|(_, h)| h.lock().unwrap().len() < 8000 * 3) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("audio flowed through the plugin codec");
    for (media, heard) in &sides {
        let heard = heard.lock().unwrap().clone();
        // L16 is lossless: the speech arrives exactly, delayed
        let snr = aligned_snr_db(&pcm[..8000 * 2], &heard, 8000);
        assert!(snr > 60.0, "SNR {snr:.1} dB through the plugin codec");
        media.close().await;
    }
    let _ = Arc::strong_count(&codec);
}

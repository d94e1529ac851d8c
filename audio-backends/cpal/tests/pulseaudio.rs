//! The cpal backend against a real PulseAudio server: the test starts its own
//! `pulseaudio` (installed by `scripts/setup`) with a private socket and a null sink,
//! plays a 1 kHz tone into the sink through a [`CpalRenderer`] and captures it back
//! from the sink's monitor through a [`CpalCapturer`].

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dialtone_audio_cpal::{CpalBackend, CpalCapturer, CpalRenderer};
use dialtone_core::parts::{AudioBackend, AudioCapturer, AudioFormat, AudioRenderer};

struct PulseServer {
    child: Child,
    dir: PathBuf,
}

impl Drop for PulseServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_pulseaudio() -> PulseServer {
    let dir = std::env::temp_dir().join(format!("dialtone-pulse-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("native");
    std::fs::write(
        dir.join("default.pa"),
        format!(
            "load-module module-native-protocol-unix socket={} auth-anonymous=1\n\
             load-module module-null-sink sink_name=dialtone_null rate=48000 channels=1\n\
             set-default-sink dialtone_null\nset-default-source dialtone_null.monitor\n",
            socket.display()
        ),
    )
    .unwrap();
    let child = Command::new("pulseaudio")
        .args(["-n", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no", "--disable-shm=yes", "-F"])
        .arg(dir.join("default.pa"))
        .env("HOME", &dir)
        .env("XDG_RUNTIME_DIR", &dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run pulseaudio ({e}); `make test` installs it through scripts/setup")
        });
    let start = Instant::now();
    while !socket.exists() {
        assert!(start.elapsed() < Duration::from_secs(15), "pulseaudio did not open its socket");
        std::thread::sleep(Duration::from_millis(50));
    }
    // this test binary's only test: the process environment is ours to set
    std::env::set_var("PULSE_SERVER", format!("unix:{}", socket.display()));
    // the server's own cookie (it runs with HOME set to the scratch folder)
    std::env::set_var("PULSE_COOKIE", dir.join(".config/pulse/cookie"));
    PulseServer { child, dir }
}

#[test]
fn a_tone_played_to_the_null_sink_comes_back_from_its_monitor() {
    let _server = start_pulseaudio();
    // Ready once the server lists the null sink: its socket opens before the module
    // that makes the sink has loaded.
    let start = Instant::now();
    let names = loop {
        let listed = CpalBackend.devices().map(|d| d.into_iter().map(|d| d.name).collect::<Vec<_>>());
        match listed {
            Ok(names) if names.iter().any(|n| n == "dialtone_null") => break names,
            other if start.elapsed() > Duration::from_secs(15) => {
                panic!("the null sink never showed up: {other:?}")
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    assert!(names.iter().any(|n| n == "dialtone_null"), "{names:?}");
    assert!(names.iter().any(|n| n == "dialtone_null.monitor"), "{names:?}");
    let e = CpalBackend
        .open_capturer(Some("no-such-device"), AudioFormat::new(48_000, 1, 20).unwrap())
        .err()
        .unwrap();
    assert!(e.message().contains("no-such-device") && e.message().contains("dialtone_null"), "{e}");

    let format = AudioFormat::new(48_000, 1, 20).unwrap();
    let mut capture = CpalCapturer::open(Some("dialtone_null.monitor"), format).unwrap();
    let mut play = CpalRenderer::open(Some("dialtone_null"), format).unwrap();
    let n = format.samples_per_frame();
    let step = 2.0 * std::f64::consts::PI * 1000.0 / 48_000.0;
    let mut phase = 0.0f64;
    let mut heard = Vec::new();
    let start = Instant::now();
    // keep about 60 ms queued for playback; collect what the monitor gives back
    while heard.iter().filter(|s: &&i16| s.abs() > 1000).count() < 48_000 {
        assert!(start.elapsed() < Duration::from_secs(20), "only {} loud samples came back", heard.len());
        while play.queued() < 3 * n {
            let frame: Vec<i16> = (0..n)
                .map(|_| {
                    phase += step;
                    (phase.sin() * 8000.0) as i16
                })
                .collect();
            play.write_frame(&frame).unwrap();
        }
        let mut frame = vec![0i16; n];
        while capture.read_frame(&mut frame).unwrap() {
            heard.extend_from_slice(&frame);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // the loud part is a 1 kHz tone at about the level played
    let loud: Vec<i16> = heard.into_iter().skip_while(|s| s.abs() < 1000).take(24_000).collect();
    let crossings = loud.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
    let hz = crossings as f64 / 2.0 / (loud.len() as f64 / 48_000.0);
    assert!((hz - 1000.0).abs() < 30.0, "captured {hz:.0} Hz");
    let peak = loud.iter().map(|s| s.abs()).max().unwrap();
    assert!((7000..=8500).contains(&peak), "peak {peak}");
    assert_eq!(capture.xruns().overruns, 0, "{:?}", capture.xruns());
    // the playback ring was kept fed: at most the start-up callbacks found it short
    assert!(play.xruns().underruns < 10, "{:?}", play.xruns());
}

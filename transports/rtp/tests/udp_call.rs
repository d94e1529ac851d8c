//! Two `rtp` engine sessions over real UDP sockets on 127.0.0.1 (port 0), negotiated
//! through SDP text with SRTP required, carrying the shared speech both ways. The
//! tests wait for audio and events with generous timeouts; they never sleep for a
//! fixed time.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dialtone_audio_memory::{BufferCapturer, MemoryRenderer};
use dialtone_codec_opus::Opus;
use dialtone_codec_pcmu::{Law, G711};
use dialtone_core::parts::{
    AudioCodec, AudioFormat, MediaEngine, MediaEvent, MediaSession, MediaSessionConfig,
};
use dialtone_core::PreferredCodec;
use dialtone_rtp::engine::{RtpEngine, RtpEngineConfig};
use dialtone_tests::{aligned_snr_db, pesq, segmental_snr_db, speech};

struct Side {
    media: Box<dyn MediaSession>,
    heard: Arc<Mutex<Vec<i16>>>,
}

async fn side(
    codecs: Vec<Arc<dyn AudioCodec>>,
    prefer: Vec<PreferredCodec>,
    rate: u32,
    say: Vec<i16>,
) -> Side {
    let format = AudioFormat::new(rate, 1, 20).unwrap();
    let (renderer, heard) = MemoryRenderer::new(format);
    let mut cfg = MediaSessionConfig::new(
        codecs,
        Box::new(BufferCapturer::new(format, say, false)),
        Box::new(renderer),
    );
    cfg.preferred_codecs = prefer;
    // A deep jitter buffer: these tests score the codecs and resampling, so a packet
    // made late by a busy machine (CI runs many tests at once) must still be played
    // rather than concealed. The alignment in the scores allows 500 ms of delay.
    let engine = RtpEngine::new(RtpEngineConfig { jitter_min_delay_ms: 200, ..RtpEngineConfig::default() });
    let media = engine.create_session(cfg).await.unwrap();
    Side { media, heard }
}

async fn connect(a: &Side, b: &Side) {
    let offer = a.media.create_offer().await.unwrap();
    assert!(offer.contains("RTP/SAVP") && offer.contains("a=crypto:"), "{offer}");
    let answer = b.media.create_answer(&offer).await.unwrap();
    a.media.apply_answer(&answer).await.unwrap();
}

/// Waits until `who` has rendered `samples`, for at most 30 s.
async fn wait_for_audio(who: &Side, samples: usize) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while who.heard.lock().unwrap().len() < samples {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("audio kept flowing");
}

fn codecs() -> Vec<Arc<dyn AudioCodec>> {
    vec![Arc::new(Opus::default()), Arc::new(G711::new(Law::Mu))]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcmu_both_ways_over_udp_with_srtp() {
    let pcm = speech(8000);
    let prefer = vec![PreferredCodec::Pcmu];
    let a = side(codecs(), prefer.clone(), 8000, pcm.clone()).await;
    let b = side(codecs(), prefer, 8000, pcm.clone()).await;
    connect(&a, &b).await;
    assert_eq!(a.media.negotiated_codec().as_deref(), Some("PCMU"));
    assert_eq!(b.media.negotiated_codec().as_deref(), Some("PCMU"));
    wait_for_audio(&a, 8000 * 4).await;
    wait_for_audio(&b, 8000 * 4).await;
    for who in [&a, &b] {
        let heard = who.heard.lock().unwrap().clone();
        let snr = segmental_snr_db(&pcm[..8000 * 3], &heard, 4000, 4000);
        assert!(snr > 25.0, "segmental SNR {snr:.1} dB");
        let stats = who.media.stats();
        assert_eq!(stats.local_audio_tracks[0].codec, "PCMU");
        assert!(stats.remote_audio_tracks[0].packets_received > 100, "{stats:?}");
    }
    a.media.close().await;
    b.media.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opus_both_ways_with_resampling_from_16k_devices() {
    // the devices run at 16 kHz; Opus runs at 48 kHz: both directions resample
    let pcm = speech(16_000);
    let prefer = vec![PreferredCodec::Opus { max_average_bitrate: Some(32_000) }, PreferredCodec::Pcmu];
    let a = side(codecs(), prefer.clone(), 16_000, pcm.clone()).await;
    let b = side(codecs(), prefer, 16_000, pcm.clone()).await;
    connect(&a, &b).await;
    assert_eq!(a.media.negotiated_codec().as_deref(), Some("opus"));
    wait_for_audio(&a, 16_000 * 4).await;
    wait_for_audio(&b, 16_000 * 4).await;
    for who in [&a, &b] {
        let heard = who.heard.lock().unwrap().clone();
        let snr = segmental_snr_db(&pcm[..16_000 * 3], &heard, 8000, 8000);
        assert!(snr > 8.0, "segmental SNR {snr:.1} dB");
        let score = pesq(&pcm[..16_000 * 3], &heard[..(16_000 * 3 + 8000).min(heard.len())], 16_000);
        eprintln!("Opus over UDP: wideband PESQ {score:.2}");
        assert!(score > 3.5, "wideband PESQ {score:.2}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digits_and_quality_samples_arrive_and_garbage_is_survived() {
    let a = side(codecs(), vec![PreferredCodec::Pcmu], 8000, speech(8000)).await;
    let b = side(codecs(), vec![PreferredCodec::Pcmu], 8000, speech(8000)).await;
    connect(&a, &b).await;
    wait_for_audio(&b, 8000).await;

    // a stranger throws garbage at b's media port
    let offer = a.media.create_offer().await.unwrap(); // a re-offer reuses its socket and keys
    assert!(offer.contains("a=sendrecv"));
    let b_port: u16 = {
        let ans = b.media.stats();
        assert!(ans.remote_audio_tracks[0].packets_received > 0);
        // b's port is in the answer it gave; find it from a fresh re-offer of b
        let b_offer = b.media.create_offer().await.unwrap();
        let m = b_offer.lines().find(|l| l.starts_with("m=audio ")).unwrap();
        m.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let stranger = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for junk in [&b"\x80\x00garbage-garbage"[..], b"x", &[0xFFu8; 300][..]] {
        stranger.send_to(junk, ("127.0.0.1", b_port)).await.unwrap();
    }

    a.media.send_digits("1#").unwrap();
    let mut digits = String::new();
    let mut samples = 0;
    tokio::time::timeout(Duration::from_secs(20), async {
        while digits.len() < 2 || samples < 2 {
            match b.media.next_event().await {
                Some(MediaEvent::DigitsReceived(d)) => digits.push_str(&d),
                Some(MediaEvent::QualitySample(s)) => {
                    samples += 1;
                    assert!(s.mos.unwrap() > 4.0, "{s:?}");
                }
                Some(_) => {}
                None => panic!("the session ended"),
            }
        }
    })
    .await
    .expect("digits and samples arrived");
    assert_eq!(digits, "1#");
    // audio still flows after the garbage
    let before = b.heard.lock().unwrap().len();
    wait_for_audio(&b, before + 8000).await;
    // (the digits replaced audio packets for a moment, so the delay may have moved:
    // the measure aligns piece by piece)
    let heard = b.heard.lock().unwrap().clone();
    let snr = segmental_snr_db(&speech(8000)[..16_000], &heard, 4000, 4000);
    assert!(snr > 20.0, "segmental SNR {snr:.1} dB");
    assert!(
        aligned_snr_db(&speech(8000)[..8000], &heard, 4000) > 20.0,
        "the first second, before the digits"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_common_codec_is_53404_and_a_bad_answer_is_53402() {
    let a = side(codecs(), vec![PreferredCodec::Opus { max_average_bitrate: None }], 48_000, vec![]).await;
    let b = side(vec![Arc::new(G711::new(Law::A))], vec![PreferredCodec::Pcma], 8000, vec![]).await;
    let offer = a.media.create_offer().await.unwrap();
    // a offers opus and PCMU; b only has PCMA
    let e = b.media.create_answer(&offer).await.unwrap_err();
    assert_eq!(e.code(), 53404);
    let e = a.media.apply_answer("v=0\r\nnonsense").await.unwrap_err();
    assert_eq!(e.code(), 53402);
}

/// A leg with no audio device, as a server opens one: it negotiates, receives and
/// meters the peer's speech, and sends silence the peer can tell apart from speech.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_with_no_audio_device_receives_meters_and_sends_silence() {
    let a = side(codecs(), vec![PreferredCodec::Pcmu], 8000, speech(8000)).await;
    let engine = RtpEngine::new(RtpEngineConfig::default());
    let mut cfg = MediaSessionConfig::without_audio(codecs());
    cfg.preferred_codecs = vec![PreferredCodec::Pcmu];
    let leg = engine.create_session(cfg).await.unwrap();
    let offer = a.media.create_offer().await.unwrap();
    let answer = leg.create_answer(&offer).await.unwrap();
    a.media.apply_answer(&answer).await.unwrap();
    assert_eq!(leg.negotiated_codec().as_deref(), Some("PCMU"));
    // the leg receives: 3 s of packets, for at most 30 s
    tokio::time::timeout(Duration::from_secs(30), async {
        while leg.stats().remote_audio_tracks[0].packets_received < 150 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the deviceless leg receives");
    wait_for_audio(&a, 8000 * 3).await;
    let stats = leg.stats();
    // it decoded and metered the speech it could not play anywhere
    assert!(stats.remote_audio_tracks[0].audio_level > 1000, "{stats:?}");
    assert!(stats.remote_audio_tracks[0].mos.is_some(), "{stats:?}");
    assert!(stats.local_audio_tracks[0].packets_sent > 100, "{stats:?}");
    // and what it sent is silence: no speech at all after the first frames
    let heard = a.heard.lock().unwrap().clone();
    let loudest = heard[4000..].iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
    assert!(loudest < 100, "the peer heard {loudest} from a leg with no capturer");
    let a_stats = a.media.stats();
    assert!(a_stats.remote_audio_tracks[0].packets_received > 100, "{a_stats:?}");
    leg.close().await;
    a.media.close().await;
}

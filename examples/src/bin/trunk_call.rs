//! A trunk call: a plain SIP peer (here the sans-IO `UserAgent` of `dialtone-sip`
//! driven over a UDP socket, as a PBX or carrier would send) calls the server's UDP
//! listener without a token (trusted by source address), and the server rings the
//! client whose name is the request-URI user. The peer sends a tone over PCMU/SRTP,
//! the client hears it, and the peer hangs up.

#![allow(clippy::print_stdout)]

use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use dialtone_audio_memory::{BufferCapturer, MemoryRenderer};
use dialtone_core::parts::{AudioFormat, MediaEngine, MediaSessionConfig};
use dialtone_core::*;
use dialtone_examples::{client, default_codecs, dev_server, rms, AudioFactory};
use dialtone_rtp::engine::{RtpEngine, RtpEngineConfig};
use dialtone_sip::header::Uri;
use dialtone_sip::ua::{Flow, Transmit, UaConfig, UaEvent, UserAgent};

/// What bob heard on each call.
type Recordings = Arc<Mutex<Vec<Arc<Mutex<Vec<i16>>>>>>;

struct Bob(Mutex<mpsc::Sender<CallInvite>>);
impl NotificationDelegate for Bob {
    fn call_invite_received(&self, invite: CallInvite) {
        let _ = self.0.lock().map(|tx| tx.send(invite));
    }
    fn cancelled_call_invite_received(&self, _: CancelledCallInvite, _: &VoiceError) {}
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = dev_server("trunk").await?;
    let heard: Recordings = Arc::default();
    let keep = heard.clone();
    let bob_audio: AudioFactory = Arc::new(move || {
        let f = AudioFormat::new(48_000, 1, 20)?;
        let (r, h) = MemoryRenderer::new(f);
        if let Ok(mut k) = keep.lock() {
            k.push(h);
        }
        Ok((Box::new(BufferCapturer::silence(f)), Box::new(r)))
    });
    let (inv_tx, inv_rx) = mpsc::channel();
    let bob = client(&server, default_codecs(), bob_audio, Some(Arc::new(Bob(Mutex::new(inv_tx)))));
    bob.register(&server.mint_token("bob", 600)?, "").await?;

    // The SIP peer: a UDP socket, a user agent, and an RTP session sending a tone.
    let trunk = server.addresses().sip_udp;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let local = sock.local_addr()?;
    let mut ua = UserAgent::new(
        UaConfig::new("pbx", "127.0.0.1"),
        Flow { transport: "UDP".into(), local: local.to_string(), reliable: false },
    );
    let f8 = AudioFormat::new(8000, 1, 20)?;
    let codecs = vec![Arc::new(dialtone_codec_pcmu::G711::new(dialtone_codec_pcmu::Law::Mu)) as _];
    let media = RtpEngine::new(RtpEngineConfig::default())
        .create_session(MediaSessionConfig::new(
            codecs,
            Box::new(BufferCapturer::tone(f8, 400.0, 8000)),
            Box::new(MemoryRenderer::new(f8).0),
        ))
        .await?;
    let offer = media.create_offer().await?;
    let call = ua.invite(Uri::parse(&format!("sip:bob@{trunk}"))?, &offer, &[], Instant::now());

    let mut buf = vec![0u8; 65536];
    let mut answered_at: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        while let Some(t) = ua.poll_transmit() {
            if let Transmit::Message(bytes) = t {
                sock.send_to(&bytes, trunk).await?;
            }
        }
        while let Some(e) = ua.poll_event() {
            match e {
                UaEvent::Progress { .. } => println!("peer: ringing"),
                UaEvent::Answered { response, .. } => {
                    media.apply_answer(&String::from_utf8_lossy(&response.body)).await?;
                    println!("peer: answered with {}", media.negotiated_codec().unwrap_or_default());
                    answered_at = Some(Instant::now());
                }
                UaEvent::Failed { failure, .. } => {
                    return Err(format!("the call failed: {}", failure.status).into())
                }
                UaEvent::Ended { .. } => {
                    println!("peer: call ended");
                    media.close().await;
                    let samples = heard
                        .lock()
                        .ok()
                        .and_then(|h| h.last().cloned())
                        .map(|h| h.lock().map(|v| v.clone()).unwrap_or_default())
                        .unwrap_or_default();
                    let level = rms(samples.get(24_000..).unwrap_or(&[]));
                    println!("bob heard {} samples, RMS {level:.0}", samples.len());
                    if level < 300.0 {
                        return Err("bob heard nothing".into());
                    }
                    println!("done");
                    return Ok(());
                }
                _ => {}
            }
        }
        if answered_at.is_some_and(|t| t.elapsed() > Duration::from_secs(2)) {
            answered_at = None;
            ua.hangup(call, Instant::now());
            continue;
        }
        if let Ok(invite) = bob_rx_try(&inv_rx) {
            println!("bob: invite from {:?}", invite.from());
            struct Quiet;
            impl CallDelegate for Quiet {}
            invite.accept(Arc::new(Quiet));
        }
        if Instant::now() > deadline {
            return Err("the trunk call did not finish in 20 s".into());
        }
        let wake = ua
            .poll_timeout()
            .map_or(Duration::from_millis(50), |t| t.saturating_duration_since(Instant::now()));
        match tokio::time::timeout(wake.min(Duration::from_millis(50)), sock.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => ua.handle_input(&buf[..n], Instant::now()),
            _ => ua.handle_timeout(Instant::now()),
        }
    }
}

fn bob_rx_try(rx: &mpsc::Receiver<CallInvite>) -> Result<CallInvite, mpsc::TryRecvError> {
    rx.try_recv()
}

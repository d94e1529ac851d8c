//! An echo bot: it answers every call and plays back what it hears, half a second
//! later. A caller sends the shared speech and checks that it hears it back.

#![allow(clippy::print_stdout)]

use std::collections::VecDeque;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use dialtone_audio_memory::MemoryRenderer;
use dialtone_core::parts::{AudioCapturer, AudioFormat, AudioRenderer};
use dialtone_core::*;
use dialtone_examples::{client, default_codecs, dev_server, rms, speech, AudioFactory};

/// What the caller hears back (its renderer's buffer, once the call made one).
type Recording = Arc<Mutex<Option<Arc<Mutex<Vec<i16>>>>>>;

/// What the bot heard, waiting to be played back.
type Loop = Arc<Mutex<VecDeque<i16>>>;

/// The bot's "speaker": what the call delivers goes into the loop.
struct Ear(AudioFormat, Loop);
impl AudioRenderer for Ear {
    fn format(&self) -> AudioFormat {
        self.0
    }
    fn write_frame(&mut self, frame: &[i16]) -> Result<(), VoiceError> {
        if let Ok(mut q) = self.1.lock() {
            q.extend(frame);
        }
        Ok(())
    }
}

/// The bot's "microphone": plays the loop back after a 500 ms delay.
struct Mouth(AudioFormat, Loop);
impl AudioCapturer for Mouth {
    fn format(&self) -> AudioFormat {
        self.0
    }
    fn read_frame(&mut self, frame: &mut [i16]) -> Result<bool, VoiceError> {
        let mut q = self.1.lock().map_err(|_| VoiceError::from_kind(ErrorCode::UnknownError))?;
        if q.len() < self.0.sample_rate() as usize / 2 + frame.len() {
            frame.fill(0);
        } else {
            for s in frame.iter_mut() {
                *s = q.pop_front().unwrap_or(0);
            }
        }
        Ok(true)
    }
}

/// Answers everything.
struct Bot;
impl NotificationDelegate for Bot {
    fn call_invite_received(&self, invite: CallInvite) {
        println!("bot: answering {}", invite.call_sid());
        struct Quiet;
        impl CallDelegate for Quiet {}
        invite.accept(Arc::new(Quiet));
    }
    fn cancelled_call_invite_received(&self, _: CancelledCallInvite, _: &VoiceError) {}
}

struct Connected(Mutex<mpsc::Sender<()>>);
impl CallDelegate for Connected {
    fn did_connect(&self, _: &Call) {
        let _ = self.0.lock().map(|tx| tx.send(()));
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = dev_server("echo-bot").await?;
    let bot_audio: AudioFactory = Arc::new(|| {
        let f = AudioFormat::new(48_000, 1, 20)?;
        let l: Loop = Arc::default();
        Ok((Box::new(Mouth(f, l.clone())), Box::new(Ear(f, l))))
    });
    let bot = client(&server, default_codecs(), bot_audio, Some(Arc::new(Bot)));
    bot.register(&server.mint_token("echo", 600)?, "").await?;

    let heard: Recording = Arc::default();
    let keep = heard.clone();
    let path = speech(48_000).ok_or("the shared speech is missing (set DIALTONE_SHARED_AUDIO)")?;
    let caller_audio: AudioFactory = Arc::new(move || {
        let f = AudioFormat::new(48_000, 1, 20)?;
        let (r, h) = MemoryRenderer::new(f);
        if let Ok(mut k) = keep.lock() {
            *k = Some(h);
        }
        let capture = dialtone_audio_file::WavCapturer::open(&path, true, 20)?;
        Ok((Box::new(capture), Box::new(r)))
    });
    let caller = client(&server, default_codecs(), caller_audio, None);
    let (tx, rx) = mpsc::channel();
    let call = caller.connect(
        ConnectOptions::builder(server.mint_token("caller", 600)?).param("to", "client:echo").build(),
        Arc::new(Connected(Mutex::new(tx))),
    );
    tokio::task::block_in_place(|| rx.recv_timeout(Duration::from_secs(10)))?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    call.disconnect();
    let samples = heard
        .lock()
        .ok()
        .and_then(|h| h.clone())
        .map(|h| h.lock().map(|v| v.clone()).unwrap_or_default())
        .unwrap_or_default();
    // The first half second is the bot's delay; after it, the echo of the speech.
    let level = rms(samples.get(48_000..).unwrap_or(&[]));
    println!("caller heard {} samples back, RMS {level:.0}", samples.len());
    if level < 300.0 {
        return Err("the echo was silent".into());
    }
    println!("done");
    Ok(())
}

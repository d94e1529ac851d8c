//! Two clients in one process: bob registers, alice calls `client:bob` with a custom
//! parameter, bob accepts, they exchange a call message, and alice hangs up.

#![allow(clippy::print_stdout)]

use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use dialtone_audio_memory::{BufferCapturer, MemoryRenderer};
use dialtone_core::parts::AudioFormat;
use dialtone_core::*;
use dialtone_examples::{client, default_codecs, dev_server, AudioFactory};

struct Bob(Mutex<mpsc::Sender<CallInvite>>);
impl NotificationDelegate for Bob {
    fn call_invite_received(&self, invite: CallInvite) {
        let _ = self.0.lock().map(|tx| tx.send(invite));
    }
    fn cancelled_call_invite_received(&self, _: CancelledCallInvite, _: &VoiceError) {}
}

struct Events(&'static str, Mutex<mpsc::Sender<String>>);
impl CallDelegate for Events {
    fn did_connect(&self, call: &Call) {
        println!("{}: connected with {}", self.0, call.codec().unwrap_or_default());
        let _ = self.1.lock().map(|tx| tx.send("connected".into()));
    }
    fn did_disconnect(&self, _: &Call, e: Option<&VoiceError>) {
        println!("{}: disconnected ({e:?})", self.0);
        let _ = self.1.lock().map(|tx| tx.send("disconnected".into()));
    }
}
impl CallMessageDelegate for Events {
    fn did_receive_message(&self, _: &str, m: &CallMessage) {
        println!("{}: message {}", self.0, m.content());
        let _ = self.1.lock().map(|tx| tx.send(format!("message {}", m.content())));
    }
}

fn tone() -> AudioFactory {
    Arc::new(|| {
        let f = AudioFormat::new(48_000, 1, 20)?;
        Ok((Box::new(BufferCapturer::tone(f, 440.0, 8000)), Box::new(MemoryRenderer::new(f).0)))
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = dev_server("two-clients").await?;
    let (inv_tx, inv_rx) = mpsc::channel();
    let bob = client(&server, default_codecs(), tone(), Some(Arc::new(Bob(Mutex::new(inv_tx)))));
    let alice = client(&server, default_codecs(), tone(), None);
    bob.register(&server.mint_token("bob", 600)?, "").await?;

    let (a_tx, a_rx) = mpsc::channel();
    let (b_tx, b_rx) = mpsc::channel();
    let alice_events = Arc::new(Events("alice", Mutex::new(a_tx)));
    let bob_events = Arc::new(Events("bob", Mutex::new(b_tx)));
    let options = ConnectOptions::builder(server.mint_token("alice", 600)?)
        .param("to", "client:bob")
        .param("topic", "hello")
        .call_message_delegate(alice_events.clone())
        .build();
    let call = alice.connect(options, alice_events);
    let invite = tokio::task::block_in_place(|| inv_rx.recv_timeout(Duration::from_secs(10)))?;
    let wait = |rx: &mpsc::Receiver<String>| rx.recv_timeout(Duration::from_secs(10));
    println!("bob: invite from {:?} with topic {}", invite.from(), invite.custom_parameters()["topic"]);
    let bob_call = invite.accept_with_options(
        AcceptOptions::builder().call_message_delegate(bob_events.clone()).build(),
        bob_events,
    );
    tokio::task::block_in_place(|| -> Result<(), Box<dyn std::error::Error>> {
        assert_eq!(wait(&a_rx)?, "connected");
        assert_eq!(wait(&b_rx)?, "connected");
        bob_call.send_message(CallMessage::new(r#"{"hi":"alice"}"#));
        assert_eq!(wait(&a_rx)?, r#"message {"hi":"alice"}"#);
        std::thread::sleep(Duration::from_secs(1));
        call.disconnect();
        assert_eq!(wait(&a_rx)?, "disconnected");
        assert_eq!(wait(&b_rx)?, "disconnected");
        Ok(())
    })?;
    println!("done");
    Ok(())
}

//! The user agent taking arbitrary input: each NUL-separated piece is one message.
//! Nothing panics, and whatever it sends back is a message it can parse itself.
#![no_main]

use std::time::{Duration, Instant};

use dialtone_sip::message::{Message, DEFAULT_MAX_MESSAGE_SIZE};
use dialtone_sip::ua::{Flow, Transmit, UaConfig, UserAgent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut ua = UserAgent::new(
        UaConfig::new("bob", "example.test"),
        Flow { transport: "UDP".into(), local: "127.0.0.1:5060".into(), reliable: false },
    );
    let mut now = Instant::now();
    for piece in data.split(|b| *b == 0).take(16) {
        ua.handle_input(piece, now);
        now += Duration::from_millis(700);
        ua.handle_timeout(now);
        while let Some(t) = ua.poll_transmit() {
            if let Transmit::Message(bytes) = t {
                Message::parse(&bytes, DEFAULT_MAX_MESSAGE_SIZE).expect("the agent sends what it can parse");
            }
        }
        while ua.poll_event().is_some() {}
    }
});

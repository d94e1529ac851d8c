//! Whole-message parsing (a datagram or a WebSocket frame): never panics, and what
//! parses serializes to something that parses to the same message.
#![no_main]

use dialtone_sip::message::{Message, DEFAULT_MAX_MESSAGE_SIZE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::parse(data, DEFAULT_MAX_MESSAGE_SIZE) {
        let again = Message::parse(&m.to_bytes(), DEFAULT_MAX_MESSAGE_SIZE).expect("a serialized message parses");
        assert_eq!(again, m);
        let _ = m.cseq();
        let _ = m.top_branch();
    }
});

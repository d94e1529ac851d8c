//! TwiML documents (what a voice URL answers): never panic; a refusal carries a code.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(xml) = std::str::from_utf8(data) else { return };
    if let Err(e) = dialtone_server::twiml::parse(xml) {
        assert!(e.code() > 0);
    }
});

//! SDP offers and answers from peers: never panic; a refusal carries a code.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(sdp) = std::str::from_utf8(data) else { return };
    if let Err(e) = dialtone_media::sdp::parse(sdp) {
        assert!(e.code() > 0);
    }
});

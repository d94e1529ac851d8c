//! Stream framing (TCP, TLS): any bytes, fed in two pieces, never panic or loop.
#![no_main]

use dialtone_sip::StreamFramer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut f = StreamFramer::new(4096);
    let cut = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    f.push(&data[..cut]);
    for _ in 0..64 {
        match f.next_frame() {
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    f.push(&data[cut..]);
    for _ in 0..256 {
        match f.next_frame() {
            Ok(Some(_)) => {}
            _ => break,
        }
    }
});

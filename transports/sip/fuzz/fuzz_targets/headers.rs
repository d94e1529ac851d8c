//! The typed header parsers (URI, name-addr, Via, comma lists, digest challenges and
//! answers): never panic, and what parses prints to something that parses the same.
#![no_main]

use dialtone_sip::digest::{Answer, Challenge};
use dialtone_sip::header::{NameAddr, Uri, Via};
use dialtone_sip::message::split_list;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Some(c) = Challenge::parse(s) {
        assert_eq!(Challenge::parse(&c.to_header()).as_ref(), Some(&c));
        let a = c.answer("u", "p", "INVITE", "sip:x", "c");
        assert!(Answer::parse(&a).is_some_and(|a| a.verify("p", "INVITE")));
    }
    if let Some(a) = Answer::parse(s) {
        let _ = a.verify("p", "INVITE");
    }
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

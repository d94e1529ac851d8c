//! The push payload a device receives (JSON, or a map of strings) and the custom
//! parameters inside it: parsing never panics, and parameters that parse re-encode to
//! the same parameters.
#![no_main]

use dialtone_core::push::{encode_custom_parameters, parse_custom_parameters, parse_notification};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = parse_notification(&s.into());
    // The same text as the values of a map payload, one `key=value` a line.
    let mut map = std::collections::HashMap::new();
    for line in s.lines() {
        let (k, v) = line.split_once('=').unwrap_or(("twi_message_type", line));
        map.insert(k.to_owned(), v.to_owned());
    }
    let _ = parse_notification(&map.into());
    if let Ok(p) = parse_custom_parameters(s) {
        let again = parse_custom_parameters(&encode_custom_parameters(&p)).expect("re-encoded parameters parse");
        assert_eq!(again, p);
    }
});

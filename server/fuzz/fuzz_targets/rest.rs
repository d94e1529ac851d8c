//! The REST API: any body, query or path segment, with or without valid credentials,
//! gets an HTTP answer (never a panic, never a 500).
#![no_main]

use std::sync::OnceLock;

use dialtone_server::fuzzing::Rest;
use libfuzzer_sys::fuzz_target;

static REST: OnceLock<Rest> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let rest = REST.get_or_init(Rest::new);
    // The input: a head byte (the route in the low nibble; 0x10: send the next line as
    // the Authorization instead of valid credentials), the path segment up to a newline,
    // then (with 0x10) the Authorization line, then the body.
    let Some((&head, input)) = data.split_first() else { return };
    let fuzzed_auth = head & 0x10 != 0;
    let mut parts = input.splitn(if fuzzed_auth { 3 } else { 2 }, |&b| b == b'\n');
    let segment = parts.next().unwrap_or_default();
    let auth = if fuzzed_auth { Some(parts.next().unwrap_or_default()) } else { None };
    let body = parts.next().unwrap_or_default();
    let status = rest.request(head & 0x0f, segment, auth, body);
    assert!(status == 0 || (200..500).contains(&status) || status == 503, "status {status}");
});

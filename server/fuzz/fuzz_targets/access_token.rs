//! Access tokens (SIP Authorization: Bearer, REST insights): verification never panics
//! and never accepts what the account's key did not sign.
#![no_main]

use dialtone_server::Account;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    let account = Account {
        account_sid: format!("AC{}", "0".repeat(32)),
        auth_token: "t".to_owned(),
        api_key_sid: format!("SK{}", "0".repeat(32)),
        api_key_secret: "fuzz-secret-fuzz-secret-fuzz-secret".to_owned(),
    };
    match dialtone_server::token::verify(&account, token) {
        // Only a token signed with the key verifies; the fuzzer cannot forge one.
        Ok(_) => panic!("an unsigned token verified: {token:?}"),
        Err(e) => assert!(e.code() > 0),
    }
    // A bridge token (REGISTER of a device answering a push) is checked the same way.
    let _ = dialtone_server::push::verify_bridge_token(&account.api_key_secret, token, "alice");
});

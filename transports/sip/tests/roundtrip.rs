//! Property tests: any message the serializer writes parses back to itself, and no
//! input (random bytes, or a real message with random damage) makes the parser, the
//! stream framer or the user agent panic.

#![allow(clippy::unwrap_used)]

use std::time::Instant;

use dialtone_sip::message::{Frame, Headers, Message, StartLine, DEFAULT_MAX_MESSAGE_SIZE};
use dialtone_sip::ua::{Flow, UaConfig, UserAgent};
use dialtone_sip::{Method, StreamFramer};
use proptest::prelude::*;

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::Invite),
        Just(Method::Ack),
        Just(Method::Bye),
        Just(Method::Cancel),
        Just(Method::Register),
        Just(Method::Options),
        Just(Method::Info),
        "[A-Z]{3,10}".prop_map(|m| Method::from_token(&m)),
    ]
}

fn start_line() -> impl Strategy<Value = StartLine> {
    prop_oneof![
        (method(), "sips?:[a-z0-9_.+]{1,12}@[a-z0-9.]{1,20}(:[0-9]{1,5})?(;[a-z]{1,8}=[a-z0-9]{1,8})?")
            .prop_map(|(method, uri)| StartLine::Request { method, uri }),
        (100u16..700, "[A-Za-z ]{0,30}").prop_map(|(status, reason)| StartLine::Response {
            status,
            reason: reason.trim_end().to_owned()
        }),
    ]
}

fn headers() -> impl Strategy<Value = Headers> {
    // Names that are not Content-Length (the serializer owns it) and values without
    // leading or trailing blanks (the parser trims them).
    let name = prop_oneof![
        Just("Via".to_owned()),
        Just("From".to_owned()),
        Just("To".to_owned()),
        Just("Call-ID".to_owned()),
        Just("CSeq".to_owned()),
        Just("Contact".to_owned()),
        Just("X-Dialtone-Params".to_owned()),
        "X-[A-Za-z]{1,10}",
    ];
    let value = "[!-~]([ -~]{0,40}[!-~])?";
    proptest::collection::vec((name, value), 0..12).prop_map(|hs| {
        let mut h = Headers::new();
        for (n, v) in hs {
            h.push(&n, v);
        }
        h
    })
}

fn message() -> impl Strategy<Value = Message> {
    (start_line(), headers(), proptest::collection::vec(any::<u8>(), 0..300))
        .prop_map(|(start, headers, body)| Message { start, headers, body })
}

proptest! {
    #[test]
    fn serialize_then_parse_is_identity(m in message()) {
        let bytes = m.to_bytes();
        let parsed = Message::parse(&bytes, DEFAULT_MAX_MESSAGE_SIZE).unwrap();
        prop_assert_eq!(&parsed, &m);
        // And over a stream, cut anywhere.
        let mut f = StreamFramer::new(DEFAULT_MAX_MESSAGE_SIZE);
        let cut = bytes.len() / 3;
        f.push(&bytes[..cut]);
        let first = f.next_frame().unwrap();
        f.push(&bytes[cut..]);
        let frame = match first { Some(fr) => fr, None => f.next_frame().unwrap().unwrap() };
        prop_assert_eq!(frame, Frame::Message(m));
    }

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let _ = Message::parse(&data, DEFAULT_MAX_MESSAGE_SIZE);
        let mut f = StreamFramer::new(4096);
        f.push(&data);
        for _ in 0..100 {
            match f.next_frame() {
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        let mut ua = UserAgent::new(
            UaConfig::new("bob", "example.test"),
            Flow { transport: "TCP".into(), local: "127.0.0.1:5060".into(), reliable: true },
        );
        ua.handle_input(&data, Instant::now());
        while ua.poll_transmit().is_some() {}
    }

    #[test]
    fn damaged_real_messages_never_panic(
        m in message(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = m.to_bytes();
        for (i, b) in flips {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        let _ = Message::parse(&bytes, DEFAULT_MAX_MESSAGE_SIZE);
        let mut ua = UserAgent::new(
            UaConfig::new("bob", "example.test"),
            Flow { transport: "UDP".into(), local: "127.0.0.1:5060".into(), reliable: false },
        );
        ua.handle_input(&bytes, Instant::now());
        ua.handle_timeout(Instant::now());
    }
}

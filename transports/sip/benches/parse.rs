//! Parse and serialize throughput on four real-world messages (an INVITE with SDP
//! from a browser-style client, a REGISTER with a Bearer token, a 200 OK with SDP
//! and Record-Route, an INFO carrying a call message), side by side with `rsip` and
//! `ezk-sip-types` in one run.
//!
//! What "parse" means for each, so the work is comparable (all three keep header
//! values as text; none decodes every header's grammar):
//! - ours: `Message::parse` (start line, headers with compact forms expanded and
//!   folding joined, body cut by Content-Length);
//! - rsip: `SipMessage::try_from(&[u8])`;
//! - ezk-sip-types: it has no whole-message entry point (framing is ezk-sip-core's), so
//!   the bench does what that framing does: `MessageLine::parse` for the start line,
//!   `Line::parse` plus `Headers::insert` per header line, the body sliced.
//!
//! Run: `cargo bench -p dialtone-sip --bench parse`

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dialtone_sip::message::{Message, DEFAULT_MAX_MESSAGE_SIZE};
use ezk_sip_types::msg::{Line, MessageLine};
use ezk_sip_types::parse::Parse;
use ezk_sip_types::print::AppendCtx;
use ezk_sip_types::Headers;
use std::hint::black_box;

const INVITE: &str = "INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK7d62264b6b9cb43a;rport\r\n\
Max-Forwards: 70\r\n\
To: <sip:bob@example.com>\r\n\
From: \"Alice\" <sip:alice@example.com>;tag=ff2d8f9bc9\r\n\
Call-ID: 8f8b992d7c25c0c13a73@dialtone\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:alice@df7jal23ls0d.invalid;transport=ws;ob>\r\n\
Authorization: Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImN0eSI6InR3aWxpby1mcGE7dj0xIn0.eyJpc3MiOiJTS3Rlc3QiLCJzdWIiOiJBQ3Rlc3QiLCJleHAiOjQxMDI0NDQ4MDAsImdyYW50cyI6eyJpZGVudGl0eSI6ImFsaWNlIn19.c2lnbmF0dXJl\r\n\
User-Agent: Dialtone/0.1.0\r\n\
Allow: INVITE, ACK, CANCEL, BYE, INFO, OPTIONS\r\n\
X-Dialtone-Params: caller_first_name=alice&caller_last_name=smith\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 342\r\n\r\n\
v=0\r\n\
o=dialtone 3337516500 1 IN IP4 127.0.0.1\r\n\
s=dialtone\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
m=audio 50926 RTP/SAVP 111 110\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 minptime=10\r\n\
a=rtpmap:110 telephone-event/48000\r\n\
a=fmtp:110 0-16\r\n\
a=ptime:20\r\n\
a=rtcp-mux\r\n\
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:Aty0Ri28j3lrgSRH/b7yheQQPXTHV+T+fVnV0R92\r\n\
a=sendrecv\r\n";

const REGISTER: &str = "REGISTER sip:example.com SIP/2.0\r\n\
Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKnashds7;rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@example.com>;tag=a73kszlfl\r\n\
To: <sip:alice@example.com>\r\n\
Call-ID: 1j9FpLxk3uxtm8tn@example.com\r\n\
CSeq: 1 REGISTER\r\n\
Contact: <sip:alice@df7jal23ls0d.invalid;transport=ws>;expires=600\r\n\
Expires: 600\r\n\
Authorization: Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJncmFudHMiOnsiaWRlbnRpdHkiOiJhbGljZSJ9fQ.c2ln\r\n\
User-Agent: Dialtone/0.1.0\r\n\
Allow: INVITE, ACK, CANCEL, BYE, INFO, OPTIONS\r\n\
Content-Length: 0\r\n\r\n";

const OK: &str = "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/WS 127.0.0.1:46345;branch=z9hG4bK39d5.5e04c07d2dd35358084fec35ed61b6e1.0\r\n\
Via: SIP/2.0/WS 127.0.0.1:56132;received=127.0.0.1;branch=z9hG4bK7d62264b6b9cb43a;rport=56132\r\n\
Record-Route: <sip:127.0.0.1:46345;transport=ws;lr;ftag=ff2d8f9bc9>\r\n\
From: <sip:alice@example.com>;tag=ff2d8f9bc9\r\n\
To: <sip:bob@example.com>;tag=ea923712fd\r\n\
Call-ID: 8f8b992d7c25c0c13a73@dialtone\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:bob@127.0.0.1:56138;transport=ws>\r\n\
Allow: INVITE, ACK, CANCEL, BYE, INFO, OPTIONS\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 285\r\n\r\n\
v=0\r\n\
o=dialtone 3337516501 1 IN IP4 127.0.0.1\r\n\
s=dialtone\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
m=audio 50928 RTP/SAVP 111\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 minptime=10\r\n\
a=ptime:20\r\n\
a=rtcp-mux\r\n\
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:Bty0Ri28j3lrgSRH/b7yheQQPXTHV+T+fVnV0R92\r\n\
a=sendrecv\r\n";

const INFO: &str = "INFO sip:bob@127.0.0.1:56138;transport=ws SIP/2.0\r\n\
Via: SIP/2.0/WS 127.0.0.1:56132;branch=z9hG4bK2402dff220a99ec9;rport\r\n\
Max-Forwards: 70\r\n\
Route: <sip:127.0.0.1:46345;transport=ws;lr;ftag=ff2d8f9bc9>\r\n\
From: <sip:alice@example.com>;tag=ff2d8f9bc9\r\n\
To: <sip:bob@example.com>;tag=ea923712fd\r\n\
Call-ID: 8f8b992d7c25c0c13a73@dialtone\r\n\
CSeq: 2 INFO\r\n\
X-Dialtone-Message-Type: user-defined-message\r\n\
X-Dialtone-Event-Sid: KXa1b2c3d4e5f60718293a4b5c6d7e8f90\r\n\
Content-Type: application/json\r\n\
Content-Length: 44\r\n\r\n\
{\"greeting\":\"hello from alice\",\"seq\":1234}\r\n";

fn messages() -> Vec<(&'static str, Bytes)> {
    let fix = |s: &str| {
        // Set each Content-Length to the real body length.
        let (head, body) = s.split_once("\r\n\r\n").unwrap();
        let head: Vec<String> = head
            .split("\r\n")
            .map(|l| {
                if l.starts_with("Content-Length:") {
                    format!("Content-Length: {}", body.len())
                } else {
                    l.to_owned()
                }
            })
            .collect();
        Bytes::from(format!("{}\r\n\r\n{body}", head.join("\r\n")))
    };
    vec![
        ("invite_sdp", fix(INVITE)),
        ("register", fix(REGISTER)),
        ("200_ok_sdp", fix(OK)),
        ("info", fix(INFO)),
    ]
}

struct EzkMessage {
    line: MessageLine,
    headers: Headers,
    body: Bytes,
}

fn ezk_parse(raw: &Bytes) -> EzkMessage {
    let text = std::str::from_utf8(raw).unwrap();
    let head_end = text.find("\r\n\r\n").unwrap();
    let mut lines = text[..head_end].split("\r\n");
    let (_, line) = MessageLine::parse(raw)(lines.next().unwrap()).unwrap();
    let mut headers = Headers::with_capacity(16);
    for l in lines {
        let (_, Line { name, value }) = Line::parse(raw, l).unwrap();
        headers.insert(name, value);
    }
    EzkMessage { line, headers, body: raw.slice(head_end + 4..) }
}

fn ezk_print(m: &EzkMessage) -> Vec<u8> {
    let mut out = format!("{}\r\n{}\r\n", m.line.default_print_ctx(), m.headers).into_bytes();
    out.extend_from_slice(&m.body);
    out
}

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    for (name, raw) in messages() {
        // Every parser must accept every message before it is timed.
        Message::parse(&raw, DEFAULT_MAX_MESSAGE_SIZE).unwrap();
        rsip::SipMessage::try_from(&raw[..]).unwrap();
        ezk_parse(&raw);
        g.throughput(Throughput::Bytes(raw.len() as u64));
        g.bench_with_input(BenchmarkId::new("dialtone", name), &raw, |b, raw| {
            b.iter(|| Message::parse(black_box(raw), DEFAULT_MAX_MESSAGE_SIZE).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("rsip", name), &raw, |b, raw| {
            b.iter(|| rsip::SipMessage::try_from(black_box(&raw[..])).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("ezk-sip-types", name), &raw, |b, raw| {
            b.iter(|| ezk_parse(black_box(raw)))
        });
    }
    g.finish();
}

fn serialize(c: &mut Criterion) {
    let mut g = c.benchmark_group("serialize");
    for (name, raw) in messages() {
        let ours = Message::parse(&raw, DEFAULT_MAX_MESSAGE_SIZE).unwrap();
        let theirs = rsip::SipMessage::try_from(&raw[..]).unwrap();
        let ezk = ezk_parse(&raw);
        g.throughput(Throughput::Bytes(raw.len() as u64));
        g.bench_function(BenchmarkId::new("dialtone", name), |b| b.iter(|| black_box(&ours).to_bytes()));
        g.bench_function(BenchmarkId::new("rsip", name), |b| b.iter(|| black_box(&theirs).to_string()));
        g.bench_function(BenchmarkId::new("ezk-sip-types", name), |b| b.iter(|| ezk_print(black_box(&ezk))));
    }
    g.finish();
}

criterion_group!(benches, parse, serialize);
criterion_main!(benches);

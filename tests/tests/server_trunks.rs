//! Trunks and dial control on the embedded server, over real loopback sockets:
//! pjsua2 calling in with digest credentials (and refused with wrong ones, with the
//! same answer whatever identity an untrusted request names), `<Number>` dialed out
//! through a trunk to pjsua2 over UDP and TCP with speech both ways, `<Sip>` to a
//! second Dialtone server that challenges the call (answered with the trunk's
//! outbound credentials), and `<Dial action>` and the verbs after `<Dial>`.

#![allow(clippy::unwrap_used)]

mod sipkit;

use std::time::Duration;

use dialtone_core::config::{ApplicationConfig, TrunkConfig};
use dialtone_server::Server;
use sipkit::{parse_form, rest, rms, Auth, Client, Heard, Pjsua, Scratch};
use tokio::io::AsyncWriteExt;

fn client(server: &Server, identity: &str, app: Option<&str>) -> Client {
    sipkit::server_client(server, identity, app)
}

/// The account's call records, once every leg has ended.
async fn records(srv: &Server, legs: usize) -> Vec<serde_json::Value> {
    let a = srv.account();
    let path = format!("/2010-04-01/Accounts/{}/Calls.json", a.account_sid);
    for _ in 0..100 {
        let (_, c) =
            rest(srv.addresses().http, "GET", &path, Auth::Basic(&a.account_sid, &a.auth_token), "", "")
                .await;
        let calls = c["calls"].as_array().unwrap().clone();
        if calls.len() >= legs && calls.iter().all(|c| !c["end_time"].is_null()) {
            return calls;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the call records never all ended");
}

/// One raw INVITE over UDP from loopback (with `sdp` as its body): the status line
/// and the headers of the first final answer.
async fn raw_invite(to: std::net::SocketAddr, user: &str) -> (String, String) {
    raw_invite_with(to, user, "").await
}

async fn raw_invite_with(to: std::net::SocketAddr, user: &str, sdp: &str) -> (String, String) {
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = s.local_addr().unwrap();
    let ct = if sdp.is_empty() { "" } else { "Content-Type: application/sdp\r\n" };
    let msg = format!(
        "INVITE sip:{user}@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{user}1\r\nMax-Forwards: 70\r\nFrom: <sip:x@{me}>;tag=1\r\nTo: <sip:{user}@{to}>\r\nCall-ID: {user}-raw\r\nCSeq: 1 INVITE\r\nContact: <sip:x@{me}>\r\n{ct}Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    s.send_to(msg.as_bytes(), to).await.unwrap();
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, _) =
            tokio::time::timeout(Duration::from_secs(10), s.recv_from(&mut buf)).await.unwrap().unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !text.starts_with("SIP/2.0 1") {
            let (line, rest) = text.split_once("\r\n").unwrap();
            return (line.to_owned(), rest.to_owned());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pjsua_calls_in_with_digest_credentials() {
    let scratch = Scratch::new("trunk-digest-in");
    let mut cfg = sipkit::server_config(&scratch);
    cfg.trusted_networks = Vec::new();
    cfg.trunks = vec![TrunkConfig::inbound_digest("pbx", "pbx1", "s3cret")];
    let srv = Server::start(&cfg).await.unwrap();
    let mut bob = client(&srv, "bob", None);
    bob.register().await;
    let udp = srv.addresses().sip_udp;

    // Without credentials: a challenge, the same for an identity that exists and one
    // that does not.
    let (bob_line, bob_headers) = raw_invite(udp, "bob").await;
    let (nobody_line, nobody_headers) = raw_invite(udp, "nobody").await;
    assert_eq!(bob_line, "SIP/2.0 401 Unauthorized");
    assert_eq!(nobody_line, bob_line);
    for h in [&bob_headers, &nobody_headers] {
        assert!(h.contains("WWW-Authenticate: Digest realm=\"dialtone\""), "{h}");
        assert!(h.contains("algorithm=MD5") && h.contains("qop=\"auth\""), "{h}");
    }

    // Wrong credentials: 403 after the challenge.
    let env = [("PJ_AUTH_USER", "pbx1"), ("PJ_AUTH_PASS", "wrong"), ("PJ_RECORD_TAG", "-wrong")];
    let mut pj =
        Pjsua::start_with(&scratch, "call", "udp", &format!("direct:{udp}"), "sip:bob@127.0.0.1", None, &env);
    pj.expect("registered", 20).await;
    pj.stdin.write_all(b"go\n").await.unwrap();
    assert_eq!(pj.expect("disconnected", 20).await, "disconnected 403");

    // The right ones: the call reaches bob, and speech flows both ways.
    let env = [("PJ_AUTH_USER", "pbx1"), ("PJ_AUTH_PASS", "s3cret")];
    let pj =
        Pjsua::start_with(&scratch, "call", "udp", &format!("direct:{udp}"), "sip:bob@127.0.0.1", None, &env);
    let heard = sipkit::pjsua_calls(pj, &mut bob, "digest").await;
    dialtone_tests::assert_speech(
        "pjsua hears bob",
        dialtone_tests::middle(&heard, 4_000, 4_000),
        8000,
        8000,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_go_out_through_a_trunk_to_pjsua_over_udp_and_tcp() {
    for wire in ["udp", "tcp"] {
        let scratch = Scratch::new(&format!("trunk-out-{wire}"));
        let mut pj = Pjsua::start(&scratch, "answer", wire, "direct:-", "-", None);
        let addr = pj.expect("listening", 20).await;
        let addr = addr.trim_start_matches("listening ").to_owned();
        pj.expect("registered", 20).await;
        let mut cfg = sipkit::server_config(&scratch);
        let param = if wire == "udp" { String::new() } else { format!(";transport={wire}") };
        cfg.trunks = vec![TrunkConfig::outbound("carrier", format!("sip:{addr}{param}"))];
        cfg.applications = vec![ApplicationConfig::with_twiml(
            "APout",
            r#"<Response><Dial callerId="+15550001"><Number>+1-555-123-4567</Number></Dial></Response>"#,
        )];
        let srv = Server::start(&cfg).await.unwrap();
        let mut alice = client(&srv, "alice", Some("APout"));
        alice.register().await;
        let call = alice.connect("+15551234567", &[]);
        let incoming = pj.expect("incoming", 20).await;
        assert!(incoming.contains("+15550001"), "{wire}: the callerId shows: {incoming}");
        alice.wait_for(20, "connected", |e| matches!(e, Heard::Connected)).await;
        pj.expect("media-active", 10).await;
        alice.hear_more(3 * 48_000, 10).await;
        dialtone_tests::assert_speech(
            &format!("{wire}: alice hears pjsua through the trunk"),
            &alice.heard()[12_000..],
            48_000,
            8000,
        );
        call.disconnect();
        assert_eq!(pj.expect("disconnected", 20).await, "disconnected 200");
        let heard = pj.finish().await;
        let level = rms(heard.get(4_000..).unwrap_or(&[]));
        assert!(
            heard.len() > 16_000 && level > 300.0,
            "{wire}: pjsua hears alice ({} samples, RMS {level:.0})",
            heard.len()
        );
        let calls = records(&srv, 2).await;
        let child = calls.iter().find(|c| !c["parent_call_sid"].is_null()).unwrap();
        assert_eq!(child["to"], "+1-555-123-4567");
        assert_eq!(child["status"], "completed");
        assert!(!child["answer_time"].is_null(), "{child}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sip_dial_answers_the_far_servers_digest_challenge() {
    let far_scratch = Scratch::new("trunk-far");
    let mut far_cfg = sipkit::server_config(&far_scratch);
    far_cfg.trusted_networks = Vec::new();
    far_cfg.trunks = vec![TrunkConfig::inbound_digest("near", "near-server", "pa55")];
    let far = Server::start(&far_cfg).await.unwrap();
    let far_udp = far.addresses().sip_udp;
    let mut bob = client(&far, "bob", None);
    bob.register().await;

    let near_scratch = Scratch::new("trunk-near");
    let mut near_cfg = sipkit::server_config(&near_scratch);
    let mut trunk = TrunkConfig::outbound("far", format!("sip:{far_udp}"));
    trunk.outbound_username = Some("near-server".into());
    trunk.outbound_password = Some("pa55".into());
    near_cfg.trunks = vec![trunk];
    let twiml: &'static str =
        Box::leak(format!("<Response><Dial><Sip>sip:bob@{far_udp}</Sip></Dial></Response>").into_boxed_str());
    near_cfg.applications = vec![ApplicationConfig::with_twiml("APsip", twiml)];
    let near = Server::start(&near_cfg).await.unwrap();
    let mut alice = client(&near, "alice", Some("APsip"));
    alice.register().await;

    let call = alice.connect("bob", &[("topic", "trunks")]);
    let invite = bob.invite(20).await;
    let _answered = invite.accept(bob.delegate());
    alice.wait_for(20, "connected", |e| matches!(e, Heard::Connected)).await;
    alice.hear_more(3 * 48_000, 10).await;
    bob.hear_more(3 * 48_000, 10).await;
    dialtone_tests::assert_speech(
        "alice hears bob across two servers",
        &alice.heard()[6_000..],
        48_000,
        16_000,
    );
    dialtone_tests::assert_speech(
        "bob hears alice across two servers",
        &bob.heard()[6_000..],
        48_000,
        16_000,
    );
    call.disconnect();
    bob.wait_for(20, "disconnected", |e| matches!(e, Heard::Disconnected(None))).await;
    // The far server took the call as its trunk's, not from a trusted range.
    let calls = records(&far, 2).await;
    assert!(calls.iter().any(|c| c["direction"] == "inbound" && c["to"] == "client:bob"), "{calls:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_action_runs_after_each_dial_and_verbs_follow_a_dial() {
    let scratch = Scratch::new("trunk-action");
    let (base, mut posts) = sipkit::http_routes(vec![
        (
            "/voice",
            r#"<Response><Dial timeout="10" action="/after-bob"><Client>bob</Client></Dial></Response>"#,
        ),
        ("/after-bob", r#"<Response><Dial action="after-carol"><Client>carol</Client></Dial></Response>"#),
        ("/after-carol", "<Response><Hangup/></Response>"),
    ])
    .await;
    let mut cfg = sipkit::server_config(&scratch);
    cfg.applications = vec![
        ApplicationConfig::with_voice_url("APaction", format!("{base}/voice")),
        ApplicationConfig::with_twiml(
            "APnext",
            "<Response><Dial><Client>nobody</Client></Dial><Pause length=\"1\"/><Dial><Client>carol</Client></Dial></Response>",
        ),
    ];
    let srv = Server::start(&cfg).await.unwrap();
    let mut alice = client(&srv, "alice", Some("APaction"));
    let mut bob = client(&srv, "bob", None);
    let mut carol = client(&srv, "carol", None);
    alice.register().await;
    bob.register().await;
    carol.register().await;

    let call = alice.connect("support", &[]);
    let first = posts.recv().await.unwrap();
    assert_eq!(first.0, "/voice");
    // Bob declines: the action hears busy, and its TwiML dials carol.
    let to_bob = bob.invite(10).await;
    let bob_leg = to_bob.call_sid().to_owned();
    to_bob.reject();
    let (path, form) = tokio::time::timeout(Duration::from_secs(10), posts.recv()).await.unwrap().unwrap();
    let form = parse_form(&form);
    assert_eq!(path, "/after-bob");
    assert_eq!(form["DialCallStatus"], "busy");
    assert_eq!(form["DialCallSid"], bob_leg);
    // Alice learns her call's SID from the first response that carries it (here the
    // answer), so it is compared once she is connected.
    let action_call_sid = form["CallSid"].clone();
    let to_carol = carol.invite(10).await;
    assert_ne!(to_carol.call_sid(), bob_leg, "each dial is a new leg");
    let carol_call = to_carol.accept(carol.delegate());
    alice.wait_for(10, "connected", |e| matches!(e, Heard::Connected)).await;
    let parent = call.sid().unwrap();
    assert_eq!(action_call_sid, parent, "the action hears the caller's call SID");
    // Carol hangs up: the second action hears completed, and its <Hangup> ends the call.
    // (That the duration is the answered leg's, to the second, is the switch's
    // virtual-time test; here it is only a number.)
    carol_call.disconnect();
    let (path, form) = tokio::time::timeout(Duration::from_secs(10), posts.recv()).await.unwrap().unwrap();
    let form = parse_form(&form);
    assert_eq!(path, "/after-carol", "relative to the voice URL's directory");
    assert_eq!(form["DialCallStatus"], "completed");
    assert!(form["DialCallDuration"].parse::<u64>().is_ok(), "{form:?}");
    alice.wait_for(10, "disconnected", |e| matches!(e, Heard::Disconnected(_))).await;
    let calls = records(&srv, 3).await;
    let legs: Vec<_> = calls.iter().filter(|c| c["parent_call_sid"] == parent.as_str()).collect();
    assert_eq!(legs.len(), 2, "{calls:?}");
    assert!(legs.iter().any(|c| c["sid"] == bob_leg.as_str() && c["status"] == "busy"), "{legs:?}");
    assert!(legs.iter().any(|c| c["to"] == "client:carol" && c["status"] == "completed"), "{legs:?}");

    // Without an action, the verbs after a <Dial> run when it fails: nobody has no
    // device, so carol rings next.
    let mut alice = client(&srv, "alice", Some("APnext"));
    alice.register().await;
    let call = alice.connect("support", &[]);
    let to_carol = carol.invite(10).await;
    let _answered = to_carol.accept(carol.delegate());
    alice.wait_for(10, "connected", |e| matches!(e, Heard::Connected)).await;
    call.disconnect();
    carol.wait_for(10, "disconnected", |e| matches!(e, Heard::Disconnected(None))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_host_names_the_server_in_contact() {
    let scratch = Scratch::new("trunk-public-host");
    let mut cfg = sipkit::server_config(&scratch);
    cfg.public_host = Some("sip.test.invalid".into());
    let srv = Server::start(&cfg).await.unwrap();
    let mut bob = client(&srv, "bob", None);
    bob.register().await;
    let udp = srv.addresses().sip_udp;
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n";
    let answer = tokio::spawn(async move { raw_invite_with(udp, "bob", sdp).await });
    let invite = bob.invite(10).await;
    let _call = invite.accept(bob.delegate());
    let (line, headers) = answer.await.unwrap();
    assert_eq!(line, "SIP/2.0 200 OK");
    let contact = headers.lines().find(|l| l.starts_with("Contact:")).unwrap();
    assert_eq!(contact, format!("Contact: <sip:dialtone@sip.test.invalid:{}>", udp.port()));
}

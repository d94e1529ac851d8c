//! Overload is shed, not suffered: while the record writer is behind its bound, a new
//! INVITE gets `503 Service Unavailable` with `Retry-After` and the 31503 error, its
//! retransmission is absorbed by the transaction, a REGISTER is still served, and once
//! the backlog drains calls are taken again. The REST API sees what was written.

#![allow(clippy::unwrap_used)]

mod plain_sip;
mod proc;

use plain_sip::{calls, rest_get, start, Peer, Scratch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlogged_store_sheds_new_calls_with_503_and_serves_the_rest() {
    let home = Scratch::new("overload");
    let home = &home.0;
    // A long batch window and a backlog of two changes: one call's insert and end fill
    // it, and nothing drains it but a reader's flush.
    let server = start(home, "records_batch_ms = 10000\nrecords_backlog = 2\nretry_after_secs = 7");
    calls(server.udp, "first", 1).await;

    let peer = Peer::new(server.udp).await;
    let invite = peer.invite("shed-1");
    peer.send(&invite).await;
    let r = peer.final_response(20).await;
    assert_eq!(r.status(), Some(503), "{r:?}");
    assert_eq!(r.header("Retry-After"), Some("7"));
    let error = r.header(dialtone_sip::wire::ERROR_HEADER).unwrap_or_default();
    assert!(error.contains("31503"), "{error}");
    // The retransmitted INVITE gets the same answer from the transaction.
    peer.send(&invite).await;
    let again = peer.final_response(20).await;
    assert_eq!((again.status(), again.header("To")), (Some(503), r.header("To")));
    peer.send(&peer.ack("shed-1", &r)).await;

    // Registrations go on while calls are shed.
    let account = dialtone_server::accounts::read_dev_account(home).unwrap();
    let token = dialtone_server::token::mint(&account, "alice", 600, None).unwrap();
    let reg = Peer::new(server.udp).await;
    reg.send(&reg.register("alice", &token)).await;
    let ok = reg.final_response(20).await;
    assert_eq!(ok.status(), Some(200), "{ok:?}");

    // A read flushes the writer: the first call is there, the refused one never was.
    let (status, body) = rest_get(server.http, home, "/2010-04-01/Accounts/{account}/Calls.json").await;
    assert_eq!(status, 200, "{body}");
    let inbound = body.matches("\"inbound\"").count();
    assert_eq!(inbound, 1, "one inbound leg recorded: {body}");

    // Drained: a new call is taken (and answered 480: nobody is registered as nobody).
    calls(server.udp, "later", 1).await;
}

//! Call records are written off the signaling path, in batches, and survive the
//! process: what was committed outlives `kill -9` (SQLite in WAL mode), and a clean
//! stop (Ctrl-C) commits everything queued, even inside a long batch window.
//!
//! The calls are plain SIP INVITEs over UDP from a trusted source to an identity that is
//! not registered, so each one ends at once with a record (480 Temporarily Unavailable).

#![allow(clippy::unwrap_used)]

mod plain_sip;
mod proc;

use std::path::Path;
use std::time::{Duration, Instant};

use dialtone_server::store::{CallRecord, Store};
use plain_sip::{calls, start, Scratch};

/// The inbound legs in the store of `home` (opened beside or after the server).
async fn inbound_legs(home: &Path) -> Vec<CallRecord> {
    let db = home.join("dialtone.db");
    let store = Store::open(&format!("sqlite://{}", db.display())).await.unwrap();
    let account = dialtone_server::accounts::read_dev_account(home).expect("the development account");
    let legs = store.list_calls(&account.account_sid, 1000, 0).await.unwrap();
    legs.into_iter().filter(|c| c.direction == "inbound").collect()
}

fn ended(legs: &[CallRecord]) -> usize {
    legs.iter().filter(|c| c.end_time.is_some() && c.status != "ringing").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_records_survive_kill_9_and_a_restart() {
    let home = Scratch::new("records-kill9");
    let home = &home.0;
    let mut server = start(home, "records_batch_ms = 50");
    calls(server.udp, "before", 20).await;

    // Without any reader flushing, the writer commits on its own within its window:
    // another connection to the file sees all 20 legs ended.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let legs = inbound_legs(home).await;
        if ended(&legs) == 20 {
            break;
        }
        assert!(Instant::now() < deadline, "{} of 20 legs committed", ended(&legs));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    server.child.0.kill().unwrap(); // SIGKILL: no shutdown, no flush
    server.child.0.wait().unwrap();

    let legs = inbound_legs(home).await;
    assert_eq!(legs.len(), 20, "every committed leg is there after kill -9");
    assert_eq!(ended(&legs), 20, "and each with its end: {legs:?}");
    assert!(legs.iter().all(|c| c.status == "failed" || c.status == "no-answer"), "{legs:?}");

    // The server starts again on the same file and takes more calls.
    let server = start(home, "records_batch_ms = 50");
    calls(server.udp, "after", 5).await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_commits_what_is_queued() {
    let home = Scratch::new("records-stop");
    let home = &home.0;
    // A window far longer than the test: only the shutdown's flush commits these.
    let mut server = start(home, "records_batch_ms = 10000");
    calls(server.udp, "queued", 10).await;
    assert_eq!(inbound_legs(home).await.len(), 0, "the ten legs wait in the writer's window");

    let pid = server.child.0.id().to_string();
    let status = std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(code) = server.child.0.try_wait().unwrap() {
            break code;
        }
        assert!(Instant::now() < deadline, "the server did not stop on Ctrl-C");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(code.success(), "{code:?}");
    let legs = inbound_legs(home).await;
    assert_eq!((legs.len(), ended(&legs)), (10, 10), "{legs:?}");
}

//! Call records written off the signaling path.
//!
//! The switch never waits for the disk. It hands each change of a call record (a new leg,
//! an answer, an end) to [`Records`], which queues it and returns at once; one writer
//! task commits the queue in batches, one transaction per batch. A batch is what
//! arrived within one window ([`ServerConfig::records_batch_ms`], 10 ms by default)
//! after the first change the writer saw, at most [`MAX_BATCH`] changes.
//!
//! What a crash can lose: with SQLite in WAL mode a committed transaction survives the
//! process being killed (`kill -9`), so what is lost is at most the changes queued
//! since the last commit: one batch window, plus the batch being committed at that
//! instant. A clean shutdown ([`crate::Server::shutdown`], or the last handle dropped
//! while the runtime runs) commits everything queued.
//!
//! The queue is bounded by admission, not by blocking: once [`Records::backlog`] reaches
//! the limit, [`Records::overloaded`] says so and the switch answers new calls `503` with
//! `Retry-After`. The changes of calls already admitted are always queued, so the
//! backlog passes the limit by at most those calls' few changes, and none is dropped.
//!
//! Readers call [`Records::flush`] first, so the REST API sees every change made before
//! the request.
//!
//! [`ServerConfig::records_batch_ms`]: dialtone_core::config::ServerConfig::records_batch_ms

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::store::{CallRecord, Store};

/// The most changes one transaction commits.
pub const MAX_BATCH: usize = 2_000;

/// How often a failing commit is tried before its changes are given up (and logged).
const COMMIT_TRIES: u32 = 5;

/// One change of a call record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordWrite {
    /// A new leg.
    Insert(CallRecord),
    /// The leg was answered at `at` (milliseconds since the epoch).
    Answered {
        /// The leg.
        sid: String,
        /// When.
        at: i64,
    },
    /// The leg ended (the first end wins).
    Ended {
        /// The leg.
        sid: String,
        /// Its final status (`completed`, `busy`, ...).
        status: String,
        /// Why it ended.
        cause: String,
        /// When.
        at: i64,
    },
}

// Writes are nearly every message; boxing them would cost an allocation each.
#[allow(clippy::large_enum_variant)]
enum Op {
    Write(RecordWrite),
    Flush(oneshot::Sender<()>),
}

/// The new leg was refused: the queue of changes not yet committed is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backlogged {
    /// Changes waiting for the disk.
    pub backlog: usize,
}

/// The handle the switch's shell and the REST API write and flush through (cheap to clone).
#[derive(Clone, Debug)]
pub struct Records {
    tx: mpsc::UnboundedSender<Op>,
    queued: Arc<AtomicUsize>,
    limit: usize,
}

impl Records {
    /// Starts the writer task on `store`. `window` is how long a batch gathers after its
    /// first change; `limit` is the backlog at which new legs are refused. The task ends,
    /// after committing what is queued, when every handle is dropped.
    pub fn start(store: Store, window: Duration, limit: usize) -> (Records, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(write_batches(store, rx, queued.clone(), window));
        (Records { tx, queued, limit: limit.max(1) }, task)
    }

    /// Changes queued and not yet committed.
    pub fn backlog(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// The backlog, when it has reached the limit: new calls are to be refused until
    /// it drains. The legs of calls already admitted are still recorded.
    pub fn overloaded(&self) -> Option<Backlogged> {
        let backlog = self.backlog();
        (backlog >= self.limit).then_some(Backlogged { backlog })
    }

    /// Queues a new leg.
    pub fn insert_call(&self, record: CallRecord) {
        self.push(RecordWrite::Insert(record));
    }

    /// Queues a leg's answer.
    pub fn answered(&self, sid: &str, at: i64) {
        self.push(RecordWrite::Answered { sid: sid.to_owned(), at });
    }

    /// Queues a leg's end.
    pub fn ended(&self, sid: &str, status: &str, cause: &str, at: i64) {
        self.push(RecordWrite::Ended {
            sid: sid.to_owned(),
            status: status.to_owned(),
            cause: cause.to_owned(),
            at,
        });
    }

    fn push(&self, w: RecordWrite) {
        self.queued.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(Op::Write(w)).is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            tracing::error!("the record writer has stopped; a call record change is lost");
        }
    }

    /// Returns once every change queued before the call is committed (or given up).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Op::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

async fn write_batches(
    store: Store,
    mut rx: mpsc::UnboundedReceiver<Op>,
    queued: Arc<AtomicUsize>,
    window: Duration,
) {
    let mut batch = Vec::new();
    let mut flushes = Vec::new();
    loop {
        let Some(first) = rx.recv().await else { return };
        let mut closed = false;
        take(first, &mut batch, &mut flushes);
        let deadline = tokio::time::Instant::now() + window;
        // Gather until the window closes, the batch is full, or a reader waits.
        while batch.len() < MAX_BATCH && flushes.is_empty() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(op)) => take(op, &mut batch, &mut flushes),
                Ok(None) => {
                    closed = true;
                    break;
                }
                Err(_) => break,
            }
        }
        commit(&store, &batch).await;
        queued.fetch_sub(batch.len(), Ordering::Relaxed);
        batch.clear();
        for f in flushes.drain(..) {
            let _ = f.send(());
        }
        if closed {
            return;
        }
    }
}

fn take(op: Op, batch: &mut Vec<RecordWrite>, flushes: &mut Vec<oneshot::Sender<()>>) {
    match op {
        Op::Write(w) => batch.push(w),
        Op::Flush(f) => flushes.push(f),
    }
}

async fn commit(store: &Store, batch: &[RecordWrite]) {
    if batch.is_empty() {
        return;
    }
    let mut wait = Duration::from_millis(20);
    for attempt in 1..=COMMIT_TRIES {
        match store.write_batch(batch).await {
            Ok(()) => {
                tracing::trace!(changes = batch.len(), "call records committed");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, attempt, changes = batch.len(), "committing call records failed");
                if attempt < COMMIT_TRIES {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
            }
        }
    }
    // One bad change must not cost the others: each on its own.
    for w in batch {
        if let Err(e) = store.write_batch(std::slice::from_ref(w)).await {
            tracing::error!(error = %e, change = ?w, "a call record change is lost");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leg(sid: &str) -> CallRecord {
        CallRecord {
            sid: sid.to_owned(),
            parent_sid: None,
            account_sid: "ACtest".to_owned(),
            from: "client:alice".to_owned(),
            to: "client:bob".to_owned(),
            direction: "inbound".to_owned(),
            status: "ringing".to_owned(),
            start_time: 1,
            answer_time: None,
            end_time: None,
            duration: None,
            end_cause: None,
        }
    }

    #[tokio::test]
    async fn changes_commit_in_order_and_a_bad_one_costs_no_other() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let (records, writer) = Records::start(store.clone(), Duration::from_millis(5), 100);
        records.insert_call(leg("CA1"));
        records.answered("CA1", 1_000);
        records.insert_call(leg("CA1")); // a duplicate: this change fails
        records.insert_call(leg("CA2"));
        records.ended("CA1", "completed", "hangup-by-caller", 4_000);
        records.ended("CA1", "failed", "a second end is ignored", 9_000);
        assert!(records.backlog() >= 1);
        records.flush().await;
        assert_eq!(records.backlog(), 0);
        let one = store.get_call("ACtest", "CA1").await.unwrap().unwrap();
        assert_eq!(
            (one.status.as_str(), one.answer_time, one.end_time, one.duration),
            ("completed", Some(1_000), Some(4_000), Some(3))
        );
        assert!(store.get_call("ACtest", "CA2").await.unwrap().is_some());
        drop(records);
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn the_backlog_limit_refuses_new_calls_until_it_drains() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        // A long window: nothing commits until a flush.
        let (records, _writer) = Records::start(store.clone(), Duration::from_secs(3600), 3);
        assert_eq!(records.overloaded(), None);
        for i in 0..3 {
            records.insert_call(leg(&format!("CA{i}")));
        }
        assert_eq!(records.overloaded(), Some(Backlogged { backlog: 3 }));
        // An admitted call's changes are still queued past the limit.
        records.ended("CA0", "completed", "x", 2);
        assert_eq!(records.backlog(), 4);
        records.flush().await;
        assert_eq!(records.overloaded(), None);
        assert_eq!(store.list_calls("ACtest", 10, 0).await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn dropping_every_handle_commits_what_is_queued() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let (records, writer) = Records::start(store.clone(), Duration::from_secs(3600), 10);
        records.insert_call(leg("CA9"));
        drop(records);
        writer.await.unwrap();
        assert!(store.get_call("ACtest", "CA9").await.unwrap().is_some());
    }
}

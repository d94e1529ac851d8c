//! # dialtone-insights-http
//!
//! The SDK's HTTP insights sink: [`HttpInsightsSink`] posts a call's insights events to
//! a collector (the Dialtone server's `/v1/Insights/Events`) over [`dialtone_http`], so
//! that `dialtone-core` keeps no socket code.

#![forbid(unsafe_code)]

use std::sync::Mutex;

use dialtone_core::{InsightsEvent, InsightsSink};
use dialtone_http::{Client, Method, Request, Settings};

/// A sink that POSTs events to an HTTP collector (the Dialtone server's
/// `/v1/Insights/Events`) as JSON arrays, authenticated with the client's access token
/// (`X-Dialtone-Token`).
///
/// `publish` only queues: a thread of the sink's own batches the events (up to 100,
/// or whatever arrived within half a second) and posts them. The queue holds 1,000
/// events; beyond that, and when a post fails, events are dropped and counted
/// ([`dropped`](Self::dropped)), never blocking the call.
pub struct HttpInsightsSink {
    tx: Mutex<std::sync::mpsc::SyncSender<SinkCommand>>,
    token: std::sync::Arc<Mutex<String>>,
    counts: std::sync::Arc<SinkCounts>,
}

#[derive(Default)]
struct SinkCounts {
    sent: std::sync::atomic::AtomicU64,
    dropped: std::sync::atomic::AtomicU64,
}

enum SinkCommand {
    Event(InsightsEvent),
    Flush(std::sync::mpsc::Sender<()>),
}

impl std::fmt::Debug for HttpInsightsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpInsightsSink")
            .field("sent", &self.sent())
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

/// Events per POST.
const HTTP_BATCH: usize = 100;

impl HttpInsightsSink {
    /// A sink posting to `url` (`http://` or `https://host:port/v1/Insights/Events`)
    /// with `token`, trusting the system's roots.
    pub fn new(url: impl Into<String>, token: impl Into<String>) -> Self {
        Self::with_settings(url, token, Settings::default())
    }

    /// A sink posting to `url` with `token`, its HTTP client made with `settings` (a
    /// CA file for a collector with a private certificate).
    pub fn with_settings(url: impl Into<String>, token: impl Into<String>, settings: Settings) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        use std::sync::mpsc::RecvTimeoutError;
        let (tx, rx) = std::sync::mpsc::sync_channel::<SinkCommand>(1000);
        let token = std::sync::Arc::new(Mutex::new(token.into()));
        let counts = std::sync::Arc::new(SinkCounts::default());
        let (url, tok, c) = (url.into(), token.clone(), counts.clone());
        // The sink's thread runs its requests on a runtime of its own.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok();
        let client = Client::new(&settings).map_err(|e| e.to_string());
        let post = move |batch: &mut Vec<InsightsEvent>| {
            if batch.is_empty() {
                return;
            }
            let body = serde_json::to_vec(&batch).unwrap_or_default();
            let token = tok.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let request = Request::new(Method::Post, url.as_str())
                .header("X-Dialtone-Token", token)
                .body("application/json", body)
                .timeout(std::time::Duration::from_secs(5));
            let r = match (&rt, &client) {
                (Some(rt), Ok(client)) => rt.block_on(client.send(request)).map_err(|e| e.to_string()),
                (None, _) => Err("no runtime for the insights thread".to_owned()),
                (_, Err(e)) => Err(e.clone()),
            };
            match r {
                Ok(r) if r.is_success() => {
                    c.sent.fetch_add(batch.len() as u64, Relaxed);
                }
                Ok(r) => {
                    tracing::warn!(status = r.status, body = %r.text(), "the insights collector refused events");
                    c.dropped.fetch_add(batch.len() as u64, Relaxed);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot post insights events");
                    c.dropped.fetch_add(batch.len() as u64, Relaxed);
                }
            }
            batch.clear();
        };
        let spawned = std::thread::Builder::new().name("dialtone-insights".into()).spawn(move || {
            let mut batch = Vec::new();
            loop {
                match rx.recv_timeout(std::time::Duration::from_millis(500)) {
                    Ok(SinkCommand::Event(e)) => {
                        batch.push(e);
                        if batch.len() >= HTTP_BATCH {
                            post(&mut batch);
                        }
                    }
                    Ok(SinkCommand::Flush(done)) => {
                        post(&mut batch);
                        let _ = done.send(());
                    }
                    Err(RecvTimeoutError::Timeout) => post(&mut batch),
                    Err(RecvTimeoutError::Disconnected) => {
                        post(&mut batch);
                        return;
                    }
                }
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the insights thread; events will be dropped");
        }
        HttpInsightsSink { tx: Mutex::new(tx), token, counts }
    }

    /// Uses a new access token from now on (after `Voice::update_token`).
    pub fn set_token(&self, token: impl Into<String>) {
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = token.into();
    }

    /// Posts everything queued so far, waiting at most `timeout`; false if it could
    /// not finish in time.
    pub fn flush(&self, timeout: std::time::Duration) -> bool {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let sent = self.tx.lock().unwrap_or_else(|p| p.into_inner()).send(SinkCommand::Flush(done_tx));
        sent.is_ok() && done_rx.recv_timeout(timeout).is_ok()
    }

    /// Events the collector accepted.
    pub fn sent(&self) -> u64 {
        self.counts.sent.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Events lost: a full queue, a failed post, or a refusal.
    pub fn dropped(&self) -> u64 {
        self.counts.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for HttpInsightsSink {
    /// Posts what is still queued (waiting at most 2 s), so a program that ends right
    /// after a call still reports it.
    fn drop(&mut self) {
        self.flush(std::time::Duration::from_secs(2));
    }
}

impl InsightsSink for HttpInsightsSink {
    fn publish(&self, event: &InsightsEvent) {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        if tx.try_send(SinkCommand::Event(event.clone())).is_err() {
            self.counts.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

//! Interop with a browser: Chromium (Debian), driven headless over the DevTools
//! protocol, runs JsSIP (npm, bundled by scripts/setup) which registers over
//! WebSocket with Kamailio and exchanges INVITEs with a Dialtone client (signaling
//! only; WebRTC media is the webrtc crate's issue). JsSIP calls the Dialtone client,
//! which sees the invite with its custom parameter and rejects it (600); the Dialtone
//! client calls JsSIP, which answers 486, reported as 31486.

#![allow(clippy::unwrap_used)]

mod sipkit;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sipkit::{Client, Heard, Kamailio, Scratch};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::WebSocketStream;

fn bundle() -> PathBuf {
    let p = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.peers/jssip.bundle.js"));
    assert!(p.exists(), "{} is missing: run scripts/setup (make test does)", p.display());
    p
}

/// A headless Chromium and a DevTools session on one page.
struct Browser {
    _child: Child,
    ws: WebSocketStream<TcpStream>,
    session: String,
    next_id: u64,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Chromium forks renderers and helpers: end its whole process group.
        if let Some(pid) = self._child.id() {
            dialtone_tests::kill_group(pid);
        }
    }
}

impl Browser {
    async fn open(url: &str, profile: &std::path::Path) -> Browser {
        let mut child = Command::new("/usr/lib/chromium/chromium")
            .process_group(0)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream",
                "--allow-file-access-from-files",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            // its own temporary folders too go in the profile, removed with the test's scratch
            .env("TMPDIR", profile)
            .arg("about:blank")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromium is installed by scripts/setup");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let endpoint = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(l)) = lines.next_line().await {
                if let Some(u) = l.strip_prefix("DevTools listening on ") {
                    return u.trim().to_owned();
                }
            }
            panic!("chromium exited before it listened for DevTools");
        })
        .await
        .expect("chromium started");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let addr = endpoint.trim_start_matches("ws://").split('/').next().unwrap().to_owned();
        let tcp = TcpStream::connect(&addr).await.unwrap();
        let (ws, _) = tokio_tungstenite::client_async(endpoint.as_str(), tcp).await.unwrap();
        let mut b = Browser { _child: child, ws, session: String::new(), next_id: 1 };
        let target = b.call(None, "Target.createTarget", json!({"url": url})).await;
        let target_id = target["targetId"].as_str().unwrap().to_owned();
        let attached =
            b.call(None, "Target.attachToTarget", json!({"targetId": target_id, "flatten": true})).await;
        b.session = attached["sessionId"].as_str().unwrap().to_owned();
        b
    }

    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws.send(Ws::text(msg.to_string())).await.unwrap();
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(20), self.ws.next())
                .await
                .expect("DevTools answered")
                .unwrap()
                .unwrap();
            let Ws::Text(t) = frame else { continue };
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["id"] == json!(id) {
                assert!(v.get("error").is_none(), "{method} failed: {v}");
                return v["result"].clone();
            }
        }
    }

    async fn eval(&mut self, expr: &str) -> Value {
        let s = self.session.clone();
        let r =
            self.call(Some(&s), "Runtime.evaluate", json!({"expression": expr, "returnByValue": true})).await;
        r["result"]["value"].clone()
    }

    /// Waits until the page logged an event starting with `prefix`.
    async fn wait_event(&mut self, prefix: &str, secs: u64) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let events = self.eval("JSON.stringify(window.events || [])").await;
            let list: Vec<String> = serde_json::from_str(events.as_str().unwrap_or("[]")).unwrap_or_default();
            if let Some(e) = list.iter().find(|e| e.starts_with(prefix)) {
                return e.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the page never logged {prefix:?}; it logged {list:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jssip_in_chromium_exchanges_invites_with_a_dialtone_client() {
    let kam = Kamailio::start().await;
    let scratch = Scratch::new("jssip");
    std::fs::copy(bundle(), scratch.0.join("jssip.bundle.js")).unwrap();
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/peers/jssip/page.html"), scratch.0.join("page.html"))
        .unwrap();
    let profile = scratch.0.join("profile");

    let mut bob = Client::new(
        "bob",
        &kam.ws_url(),
        Arc::new(dialtone_transport_ws::WsTransport::default()),
        "127.0.0.1",
    );
    bob.register().await;

    let url = format!("file://{}/page.html?ws={}&domain=127.0.0.1", scratch.0.display(), kam.ws_url());
    let mut browser = Browser::open(&url, &profile).await;
    browser.wait_event("registered", 20).await;

    // JsSIP calls the Dialtone client, which sees the invite and rejects it.
    assert_eq!(browser.eval("callBob()").await, json!("calling"));
    let invite = bob.invite(20).await;
    assert_eq!(invite.from(), Some("client:carol"));
    assert_eq!(invite.to(), "client:bob");
    assert_eq!(invite.custom_parameters()["from_browser"], "yes");
    invite.reject();
    let failed = browser.wait_event("failed", 20).await;
    assert!(failed.starts_with("failed 600"), "JsSIP saw {failed:?}");

    // The Dialtone client calls JsSIP, which is busy.
    let _call = bob.connect("client:carol", &[("topic", "hello browser")]);
    let incoming = browser.wait_event("incoming", 20).await;
    assert_eq!(incoming, "incoming bob topic=hello%20browser");
    let failed = bob.wait_for(20, "failure", |e| matches!(e, Heard::FailedToConnect(_))).await;
    assert!(matches!(failed, Heard::FailedToConnect(31486)), "{failed:?}");
}

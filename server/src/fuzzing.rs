//! Entry points for the fuzz targets in `server/fuzz`: the REST API as a whole, driven
//! in memory (no socket) with bodies, queries and path segments the fuzzer chooses.
//! Not part of the server's API.

use axum::body::Body;
use axum::http::Request;
use base64::Engine as _;
use tower::ServiceExt as _;

use crate::accounts::Account;
use crate::http::{router, Api};
use crate::records::Records;
use crate::store::Store;

/// What a fuzzed request goes to: method, path (`{account}` and `{x}` are filled in),
/// and how its body is sent.
const ROUTES: [(&str, &str, &str); 12] = [
    ("POST", "/v1/Bindings", "application/json"),
    ("GET", "/v1/Bindings?Identity={x}", ""),
    ("DELETE", "/v1/Bindings/{x}", ""),
    ("POST", "/v1/Insights/Events", "application/json"),
    ("GET", "/v1/Insights/Events?PageSize={x}&CallSid={x}", ""),
    ("GET", "/2010-04-01/Accounts/{account}/Calls.json?PageSize={x}", ""),
    ("GET", "/2010-04-01/Accounts/{account}/Calls/{x}", ""),
    (
        "POST",
        "/2010-04-01/Accounts/{account}/Calls/{x}/UserDefinedMessages.json",
        "application/x-www-form-urlencoded",
    ),
    (
        "POST",
        "/2010-04-01/Accounts/{account}/Calls/{x}/UserDefinedMessageSubscriptions.json",
        "application/x-www-form-urlencoded",
    ),
    ("GET", "/2010-04-01/Accounts/{account}/Calls/{x}/UserDefinedMessageSubscriptions.json", ""),
    ("DELETE", "/2010-04-01/Accounts/{account}/Calls/{x}/UserDefinedMessageSubscriptions/{x}", ""),
    ("GET", "/v1/Registrations", ""),
];

/// The REST API over an in-memory store, with no SIP side (requests that need it are
/// answered 503).
pub struct Rest {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
    account: Account,
    basic: String,
    token: String,
}

impl Rest {
    /// A fresh API with a development account.
    pub fn new() -> Rest {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let account = Account {
            account_sid: format!("AC{}", "0".repeat(32)),
            auth_token: "fuzz-auth-token".to_owned(),
            api_key_sid: format!("SK{}", "0".repeat(32)),
            api_key_secret: "fuzz-secret-fuzz-secret-fuzz-secret".to_owned(),
        };
        let router = rt.block_on(async {
            let store = Store::open("sqlite::memory:").await.expect("an in-memory store");
            let (records, _writer) = Records::start(store.clone(), std::time::Duration::ZERO, 1_000);
            // No switch: its receiver is gone, so what needs it gets 503.
            let (switch, _) = tokio::sync::mpsc::unbounded_channel();
            router(Api { account: account.clone(), store, records, switch })
        });
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", account.account_sid, account.auth_token));
        let token = crate::token::mint(&account, "alice", 3600, None).expect("a token");
        Rest { rt, router, account, basic, token }
    }

    /// Sends one request: `route` picks the endpoint, `segment` fills its path and query
    /// slots (percent-encoded), `auth` is the Authorization value to send instead of
    /// the valid one (when given), and `body` is the body. Returns the HTTP status.
    pub fn request(&self, route: u8, segment: &[u8], auth: Option<&[u8]>, body: &[u8]) -> u16 {
        let (method, template, content_type) = ROUTES[usize::from(route) % ROUTES.len()];
        let x = percent_encoding::percent_encode(segment, percent_encoding::NON_ALPHANUMERIC).to_string();
        let path = template.replace("{account}", &self.account.account_sid).replace("{x}", &x);
        let mut req = Request::builder().method(method).uri(path);
        req = match auth {
            Some(a) => match axum::http::HeaderValue::from_bytes(a) {
                Ok(v) => req.header("authorization", v),
                Err(_) => req,
            },
            None => req.header("authorization", format!("Basic {}", self.basic)),
        };
        // Insights are posted with the client's access token.
        if method == "POST" && template == "/v1/Insights/Events" {
            req = req.header("x-dialtone-token", self.token.as_str());
        }
        if !content_type.is_empty() {
            req = req.header("content-type", content_type);
        }
        let Ok(req) = req.body(Body::from(body.to_vec())) else { return 0 };
        let router = self.router.clone();
        self.rt.block_on(async move {
            match router.oneshot(req).await {
                Ok(r) => r.status().as_u16(),
                Err(never) => match never {},
            }
        })
    }
}

impl Default for Rest {
    fn default() -> Self {
        Rest::new()
    }
}

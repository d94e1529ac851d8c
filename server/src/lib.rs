//! # dialtone-server
//!
//! The embedded signaling server: a library a program or a test embeds in-process
//! ([`Server::start`]), and what `dialtone server` runs. It speaks standard SIP on every
//! listener (WS, WSS, TLS, TCP, UDP), so a deployment can put Kamailio in front later.
//!
//! - [`accounts`]: the account and API key (configuration, environment, or a
//!   development account created in the data directory).
//! - [`token`]: minting and verifying access tokens (HS256 only, every refusal with
//!   its catalogue code).
//! - the switch (`switch/`): the registrar, trunks and the back-to-back calls as a
//!   sans-IO core (inputs, outputs and a timeout, no await), on the sans-IO SIP user
//!   agent of `dialtone-sip`, one per client flow; its tokio shell (`shell.rs`) moves
//!   the bytes, fetches TwiML, pushes and talks to the store.
//! - [`store`]: call records in SQLite through sqlx, behind one small interface.
//! - the REST API (`http.rs`, axum).
//!
//! Built: listeners, accounts and tokens, the registrar, TwiML applications (a voice
//! URL or a document: `<Dial>` with `<Client>`, `<Number>`, `<Sip>` and `action`;
//! `<Reject>`, `<Hangup>`, `<Pause>`) and the development routing (`client:NAME`, or a
//! trunk's request-URI user), trunks (source ranges, digest credentials in and out),
//! parallel ringing, CANCEL/BYE/reject/ring-timeout propagation, calls that keep their
//! legs while a client reconnects, push ([`push`]) with bridge tokens, call messages
//! checked, relayed, sent over REST and delivered to subscription callbacks, and call
//! records, push bindings, subscriptions and SDK insights events over REST.
//! `docs/server.md` is the reference.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use dialtone_core::config::ServerConfig;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;

pub mod accounts;
mod credentials;
#[doc(hidden)]
pub mod fuzzing;
mod http;
mod listen;
mod providers;
pub mod push;
pub mod records;
mod shell;
pub mod store;
mod switch;
pub mod token;
mod twilio_shapes;
pub mod twiml;
pub mod webhooks;

pub use accounts::Account;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A listener could not bind.
    #[error("cannot listen on {addr} ({what}): {reason}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS's reason.
        reason: String,
    },
    /// A file could not be read or written.
    #[error("{0}")]
    Io(String),
    /// TLS set-up failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(String),
    /// The configuration is wrong.
    #[error("configuration: {0}")]
    Config(String),
}

/// Where a running server listens (the real ports, when 0 was asked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addresses {
    /// SIP over UDP.
    pub sip_udp: SocketAddr,
    /// SIP over TCP.
    pub sip_tcp: SocketAddr,
    /// SIP over TLS.
    pub sip_tls: SocketAddr,
    /// SIP over WebSocket.
    pub ws: SocketAddr,
    /// SIP over secure WebSocket.
    pub wss: SocketAddr,
    /// The REST API.
    pub http: SocketAddr,
}

impl Addresses {
    /// The `ws://` URL clients connect to.
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.ws)
    }

    /// The `wss://` URL.
    pub fn wss_url(&self) -> String {
        format!("wss://{}", self.wss)
    }
}

/// A running server; dropping it stops every listener.
pub struct Server {
    addrs: Addresses,
    account: Account,
    account_created: bool,
    ca_file: Option<PathBuf>,
    data_dir: PathBuf,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The call-record writer: not aborted on drop, so that it commits what is queued
    /// once the switch and the API have let go of their handles.
    writer: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("addrs", &self.addrs).finish_non_exhaustive()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The configured trunks, parsed.
fn trunks(config: &ServerConfig) -> Result<Vec<switch::trunks::Trunk>, ServerError> {
    config
        .trunks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let bad = |what: String| ServerError::Config(format!("trunks[{i}]: {what}"));
            let uri = t
                .uri
                .as_deref()
                .map(|u| {
                    dialtone_transport_tcp::parse_target(u).map_err(|e| bad(e.message().to_owned()))?;
                    dialtone_sip::header::Uri::parse(u).map_err(|e| bad(format!("uri {u:?}: {e}")))
                })
                .transpose()?;
            let networks = t
                .networks
                .iter()
                .map(|n| {
                    switch::trunks::parse_network(n)
                        .ok_or_else(|| bad(format!("{n:?} is not an address range")))
                })
                .collect::<Result<_, _>>()?;
            Ok(switch::trunks::Trunk {
                name: if t.name.is_empty() { format!("trunk{i}") } else { t.name.clone() },
                uri,
                networks,
                credentials: t.username.clone().zip(t.password.clone()),
                outbound_credentials: t.outbound_username.clone().zip(t.outbound_password.clone()),
                tls_ca_file: t.tls_ca_file.clone(),
            })
        })
        .collect()
}

async fn bind_tcp(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr).await.map_err(|e| ServerError::Bind { what, addr, reason: e.to_string() })
}

mod tls_setup {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use dialtone_core::config::ServerConfig;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    use crate::ServerError;

    /// The TLS acceptor: the configured certificate, else a development CA and
    /// certificate for 127.0.0.1 and localhost kept in the data directory (the CA file
    /// is what clients are pointed at). Returns the CA file for the development case.
    pub(crate) fn acceptor(
        config: &ServerConfig,
        dir: &Path,
    ) -> Result<(tokio_rustls::TlsAcceptor, Option<PathBuf>), ServerError> {
        let (cert_path, key_path, ca) = match (&config.tls_cert_file, &config.tls_key_file) {
            (Some(c), Some(k)) => (c.clone(), k.clone(), None),
            (None, None) => {
                let (c, k, ca) = dev_certificate(dir)?;
                (c, k, Some(ca))
            }
            _ => return Err(ServerError::Config("tls_cert_file and tls_key_file go together".into())),
        };
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| ServerError::Tls(format!("cannot read {}: {e}", p.display())))
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(&cert_path)?)
            .collect::<Result<_, _>>()
            .map_err(|e| ServerError::Tls(format!("{}: {e}", cert_path.display())))?;
        let key = PrivateKeyDer::from_pem_slice(&read(&key_path)?)
            .map_err(|e| ServerError::Tls(format!("{}: {e}", key_path.display())))?;
        let cfg = rustls::ServerConfig::builder_with_provider(dialtone_transport_tcp::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ServerError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| ServerError::Tls(e.to_string()))?;
        Ok((tokio_rustls::TlsAcceptor::from(Arc::new(cfg)), ca))
    }

    fn dev_certificate(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf), ServerError> {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        let (cert, key, ca) = (dir.join("dev-cert.pem"), dir.join("dev-key.pem"), dir.join("dev-ca.pem"));
        if cert.exists() && key.exists() && ca.exists() {
            return Ok((cert, key, ca));
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| ServerError::Io(format!("cannot create {}: {e}", dir.display())))?;
        let tls = |e: rcgen::Error| ServerError::Tls(e.to_string());
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "Dialtone development CA");
        let issuer =
            CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(tls)?).map_err(tls)?;
        let leaf_key = KeyPair::generate().map_err(tls)?;
        let mut leaf =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned(), "::1".to_owned()])
                .map_err(tls)?;
        leaf.distinguished_name.push(DnType::CommonName, "Dialtone development server");
        let leaf = leaf.signed_by(&leaf_key, &issuer).map_err(tls)?;
        let write = |p: &Path, s: String| {
            std::fs::write(p, s).map_err(|e| ServerError::Io(format!("cannot write {}: {e}", p.display())))
        };
        write(&ca, issuer.pem())?;
        write(&cert, leaf.pem())?;
        write(&key, leaf_key.serialize_pem())?;
        Ok((cert, key, ca))
    }
}

impl Server {
    /// Starts every listener of `config` and the SIP switch.
    pub async fn start(config: &ServerConfig) -> Result<Server, ServerError> {
        let data_dir = accounts::data_dir(config);
        let (account, account_created) = accounts::load_or_create(config, &data_dir)?;
        let db_url = match &config.database_url {
            Some(u) => u.clone(),
            None => format!("sqlite://{}", data_dir.join("dialtone.db").display()),
        };
        std::fs::create_dir_all(&data_dir)
            .map_err(|e| ServerError::Io(format!("cannot create {}: {e}", data_dir.display())))?;
        let store = store::Store::open(&db_url).await?;
        let (acceptor, ca_file) = tls_setup::acceptor(config, &data_dir)?;
        let mut trusted = Vec::new();
        for n in &config.trusted_networks {
            trusted.push(switch::trunks::parse_network(n).ok_or_else(|| {
                ServerError::Config(format!("trusted_networks: {n:?} is not an address range"))
            })?);
        }
        let ip = config.bind;
        let sa = |port| SocketAddr::new(ip, port);
        let tcp = bind_tcp("SIP TCP", sa(config.sip_tcp_port)).await?;
        let tls = bind_tcp("SIP TLS", sa(config.sip_tls_port)).await?;
        let ws = bind_tcp("SIP WS", sa(config.ws_port)).await?;
        let wss = bind_tcp("SIP WSS", sa(config.wss_port)).await?;
        let http_l = bind_tcp("HTTP", sa(config.http_port)).await?;
        let udp_addr = sa(config.sip_udp_port);
        let udp = UdpSocket::bind(udp_addr).await.map_err(|e| ServerError::Bind {
            what: "SIP UDP",
            addr: udp_addr,
            reason: e.to_string(),
        })?;
        let local = |l: &TcpListener| l.local_addr().map_err(|e| ServerError::Io(e.to_string()));
        let addrs = Addresses {
            sip_udp: udp.local_addr().map_err(|e| ServerError::Io(e.to_string()))?,
            sip_tcp: local(&tcp)?,
            sip_tls: local(&tls)?,
            ws: local(&ws)?,
            wss: local(&wss)?,
            http: local(&http_l)?,
        };
        let max = 64 * 1024;
        let (inbox, inbox_rx) = mpsc::unbounded_channel();
        let udp = listen::Udp::new(udp, inbox.clone()).map_err(|e| ServerError::Io(e.to_string()))?;
        let switch_cfg = switch::SwitchConfig {
            applications: config.applications.clone(),
            trunks: trunks(config)?,
            account: account.clone(),
            domain: config.public_host.clone().unwrap_or_else(|| ip.to_string()),
            public_host: config.public_host.clone(),
            trusted,
            ring_timeout: Duration::from_secs(u64::from(config.ring_timeout_secs.max(1))),
            max_message_size: max,
            overload_delay: Duration::from_millis(u64::from(config.overload_delay_ms.max(1))),
            udp_idle: Duration::from_secs(u64::from(config.udp_idle_secs.max(1))),
            retry_after_secs: config.retry_after_secs,
        };
        let (records, writer) = records::Records::start(
            store.clone(),
            Duration::from_millis(u64::from(config.records_batch_ms)),
            config.records_backlog,
        );
        let http_client = dialtone_http::Client::new(&dialtone_http::Settings {
            ca_file: config.webhook_ca_file.clone(),
            ..Default::default()
        })
        .map_err(|e| ServerError::Config(format!("webhook_ca_file: {e}")))?;
        let switch = switch::Switch::new(switch_cfg, std::time::Instant::now(), store::now_ms());
        let parts = shell::ShellParts {
            store: store.clone(),
            records: records.clone(),
            udp: Some(udp.clone()),
            account_sid: account.account_sid.clone(),
            inbox: inbox.clone(),
            max_message_size: max,
            webhooks: webhooks::Webhooks::new(
                http_client.clone(),
                account.auth_token.clone(),
                Duration::from_secs(u64::from(config.webhook_timeout_secs.max(1))),
            ),
            pusher: providers::Pusher::new(
                http_client,
                store.clone(),
                account.account_sid.clone(),
                providers::ProviderUrls {
                    apns: config.apns_url.clone(),
                    apns_sandbox: config.apns_sandbox_url.clone(),
                    fcm: config.fcm_url.clone(),
                },
            ),
        };
        let mut tasks = vec![tokio::spawn(shell::run(switch, parts, inbox_rx))];
        tasks.push(listen::serve_stream(tcp, None, inbox.clone(), max));
        tasks.push(listen::serve_stream(tls, Some(acceptor.clone()), inbox.clone(), max));
        tasks.push(listen::serve_ws(ws, None, inbox.clone(), max));
        tasks.push(listen::serve_ws(wss, Some(acceptor), inbox.clone(), max));
        tasks.push(udp.serve(max));
        let api = http::router(http::Api { account: account.clone(), store, records, switch: inbox });
        tasks.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(http_l, api).await {
                tracing::error!(error = %e, "the HTTP API stopped");
            }
        }));
        Ok(Server { addrs, account, account_created, ca_file, data_dir, tasks, writer: Some(writer) })
    }

    /// Stops every listener and the switch, then waits until every queued call-record
    /// change is committed. Dropping the server stops the same way without waiting.
    pub async fn shutdown(mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
        if let Some(w) = self.writer.take() {
            let _ = w.await;
        }
    }

    /// Where it listens.
    pub fn addresses(&self) -> &Addresses {
        &self.addrs
    }

    /// The account it serves.
    pub fn account(&self) -> &Account {
        &self.account
    }

    /// The development CA file clients should trust (`None` with a configured
    /// certificate).
    pub fn ca_file(&self) -> Option<&std::path::Path> {
        self.ca_file.as_deref()
    }

    /// The data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// Mints an access token for `identity` (see [`token::mint`]).
    pub fn mint_token(&self, identity: &str, ttl_secs: u64) -> Result<String, dialtone_core::VoiceError> {
        token::mint(&self.account, identity, ttl_secs, None)
    }

    /// Mints an access token whose outgoing calls run the TwiML application `app_sid`.
    pub fn mint_token_for_app(
        &self,
        identity: &str,
        ttl_secs: u64,
        app_sid: &str,
    ) -> Result<String, dialtone_core::VoiceError> {
        token::mint(&self.account, identity, ttl_secs, Some(app_sid))
    }

    /// The banner `dialtone server` prints: where it listens, the CA file, and how to
    /// mint a token.
    pub fn banner(&self) -> String {
        let a = &self.addrs;
        let mut s = format!(
            "Dialtone server {}\n  SIP WS    {}\n  SIP WSS   {}\n  SIP TLS   sips:{}\n  SIP TCP   sip:{};transport=tcp\n  SIP UDP   sip:{}\n  HTTP API  http://{}\n",
            env!("CARGO_PKG_VERSION"),
            a.ws_url(),
            a.wss_url(),
            a.sip_tls,
            a.sip_tcp,
            a.sip_udp,
            a.http
        );
        s.push_str(&format!("  data      {}\n", self.data_dir.display()));
        if let Some(ca) = &self.ca_file {
            s.push_str(&format!("  CA file   {} (point wss:// and sips:// clients at it)\n", ca.display()));
        }
        s.push_str(&format!(
            "  account   {}{}\n  token     dialtone token --identity alice\n",
            self.account.account_sid,
            if self.account_created { " (development account, created now)" } else { "" }
        ));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_persist_in_the_data_dir() {
        let dir = std::env::temp_dir().join(format!("dialtone-acct-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = ServerConfig::default();
        let (a, created) = accounts::load_or_create(&cfg, &dir).unwrap();
        assert!(created && a.account_sid.starts_with("AC") && a.account_sid.len() == 34);
        let (b, created) = accounts::load_or_create(&cfg, &dir).unwrap();
        assert!(!created);
        assert_eq!(a, b);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

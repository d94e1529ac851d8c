//! The `dialtone` command: `demo` (the embedded server and two clients in one process,
//! a real call between them), `server` (the embedded signaling server) and `token`
//! (mint an access token from the configured or development key).

#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod client_cmd;
mod demo;
mod server_cmd;
mod stack;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// jemalloc (with its background purging thread) gives the memory of a load back to the system once it is over (glibc's
/// allocator kept the peak: docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Dialtone: an open, self-hostable programmable-voice stack.
#[derive(Parser, Debug)]
#[command(name = "dialtone", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Alice calls bob in this process and every step of the call is printed.
    Demo,
    /// Runs the embedded signaling server (SIP over WS, WSS, TLS, TCP, UDP; REST API).
    Server {
        /// A TOML configuration file (default: DIALTONE_CONFIG or ./dialtone.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Registers and handles invites (accepts them by default) until Ctrl-C.
    Listen {
        #[command(flatten)]
        client: client_cmd::ClientArgs,
        /// Accept every invite (the default).
        #[arg(long, conflicts_with_all = ["reject", "ignore"])]
        accept: bool,
        /// Reject every invite (SIP 600).
        #[arg(long, conflicts_with = "ignore")]
        reject: bool,
        /// Let invites ring.
        #[arg(long)]
        ignore: bool,
        /// Exit after this many calls ended.
        #[arg(long)]
        calls: Option<usize>,
        /// A device token to bind for push notifications (RFC 8599 `pn-prid`); the
        /// access token needs a push credential (`dialtone token --push-credential`).
        /// The binding stays when `listen` exits.
        #[arg(long)]
        device_token: Option<String>,
    },
    /// Places a call and exits when it ends.
    Call {
        #[command(flatten)]
        client: client_cmd::ClientArgs,
        /// client:NAME, a sip: URI, or a number.
        #[arg(long)]
        to: String,
        /// A custom parameter, NAME=VALUE (repeatable).
        #[arg(long = "param", value_parser = parse_param)]
        params: Vec<(String, String)>,
        /// Seconds to stay connected before hanging up.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// DTMF digits to send once connected (0-9 * # A-D, w = 500 ms pause).
        #[arg(long)]
        digits: Option<String>,
        /// A call message (JSON) to send once connected.
        #[arg(long)]
        message: Option<String>,
    },
    /// Mints an access token from the configured key (or the development key).
    Token {
        /// The client identity (letters, digits and _, at most 121).
        #[arg(long)]
        identity: String,
        /// Lifetime in seconds (at most 86400).
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        /// A TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The push credential (`CR…`, from `POST /v1/Credentials`) through which the
        /// identity's devices are woken (`grants.voice.push_credential_sid`).
        #[arg(long)]
        push_credential: Option<String>,
    },
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not NAME=VALUE")),
    }
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log piped to a file or a journal stays plain.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo => demo::run(),
        Command::Server { config } => server_cmd::serve(config),
        Command::Listen { client, reject, ignore, calls, device_token, .. } => {
            let mode = if reject {
                client_cmd::ListenMode::Reject
            } else if ignore {
                client_cmd::ListenMode::Ignore
            } else {
                client_cmd::ListenMode::Accept
            };
            client_cmd::listen(client, mode, calls, device_token.unwrap_or_default())
        }
        Command::Call { client, to, params, duration, digits, message } => {
            client_cmd::call(client, client_cmd::CallArgs { to, params, duration, digits, message })
        }
        Command::Token { identity, ttl, config, push_credential } => {
            server_cmd::token(config, &identity, ttl, push_credential.as_deref()).map(|t| println!("{t}"))
        }
    };
    if let Err(e) = result {
        eprintln!("dialtone: error {} {}: {}", e.code(), e.name(), e.message());
        std::process::exit(1);
    }
}

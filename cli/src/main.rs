//! The `dialtone` command: `demo` (the embedded server and two clients in one process,
//! a real call between them), `server` (the embedded signaling server) and `token`
//! (mint an access token from the configured or development key).

#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod demo;
mod server_cmd;
mod stack;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

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
    },
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo => demo::run(),
        Command::Server { config } => server_cmd::serve(config),
        Command::Token { identity, ttl, config } => {
            server_cmd::token(config, &identity, ttl).map(|t| println!("{t}"))
        }
    };
    if let Err(e) = result {
        eprintln!("dialtone: error {} {}: {}", e.code(), e.name(), e.message());
        std::process::exit(1);
    }
}

//! The `dialtone` command.
//!
//! `dialtone demo` runs alice calling bob in one process. Today it runs the call model
//! over the in-memory loopback backend (no sockets, no audio), because the SIP,
//! server and media crates are not built yet; each of them replaces a piece of it as
//! it lands.

#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod demo;

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
    };
    if let Err(e) = result {
        eprintln!("dialtone: error {} {}: {}", e.code(), e.name(), e.message());
        std::process::exit(1);
    }
}

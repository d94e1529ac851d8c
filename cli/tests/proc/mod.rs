//! Running the built `dialtone` binary from a test: the command, a child killed on
//! drop, and its stdout read line by line on a thread.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A child process killed (and reaped) when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The built binary, as a command.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dialtone"))
}

/// A child's stdout lines, read on a thread.
pub fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    rx
}

/// The first line matching `pred` within 30 s of the previous one.
pub fn wait_line(rx: &mpsc::Receiver<String>, pred: impl Fn(&str) -> bool, what: &str) -> String {
    loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) if pred(&l) => return l,
            Ok(_) => {}
            Err(_) => panic!("no {what}"),
        }
    }
}

/// `dialtone server --config CFG` with `DIALTONE_HOME=home`: the running server, its
/// `ws://` URL from the banner, and the rest of its stdout.
pub fn start_server(cfg: &Path, home: &Path) -> (Killed, String, mpsc::Receiver<String>) {
    let mut server = bin()
        .args(["server", "--config", cfg.to_str().expect("a UTF-8 path")])
        .env("DIALTONE_HOME", home)
        .stdout(Stdio::piped())
        .spawn()
        .expect("the dialtone binary runs");
    let out = lines(&mut server);
    let server = Killed(server);
    let ws = wait_line(&out, |l| l.contains("SIP WS"), "banner");
    let url = ws.split_whitespace().last().expect("a URL on the banner line").to_owned();
    (server, url, out)
}

/// `dialtone listen` as bob for one call at `url`, playing `play` and recording into
/// `record`, stdout piped (JSON events).
pub fn listen_once(url: &str, cfg: &Path, home: &Path, play: &Path, record: &Path) -> Command {
    let mut c = bin();
    c.args(["listen", "--identity", "bob", "--server", url, "--json", "--calls", "1"])
        .arg("--config")
        .arg(cfg)
        .arg("--play")
        .arg(play)
        .arg("--record")
        .arg(record)
        .env("DIALTONE_HOME", home)
        .stdout(Stdio::piped());
    c
}

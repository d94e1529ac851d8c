//! A small network lab for tests that cross a network: hosts are Linux network
//! namespaces this test makes, joined by veth pairs it makes, with routers, NAT
//! (an nftables masquerade) and path cuts (an nftables drop rule).
//!
//! Rules it keeps:
//! - every namespace and link has a name made here, unique to this process and
//!   call; a veth pair is created inside the namespaces (`ip -n A link add ...
//!   peer ... netns B`), so no interface of the host is ever named, moved or changed;
//! - addresses are set only inside the namespaces made here (198.18.0.0/15, the
//!   benchmarking range, which no real network uses);
//! - everything is torn down on drop, when the test fails too: the processes
//!   started in a namespace (their whole process groups), then the namespaces,
//!   which takes their links with them;
//! - a missing privilege fails loudly: the lab needs root (CAP_NET_ADMIN).

#![allow(dead_code, unreachable_pub)]

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

static LABS: AtomicUsize = AtomicUsize::new(0);

/// A set of namespaces that is removed on drop.
pub struct Lab {
    id: String,
    namespaces: Vec<String>,
    links: usize,
    children: Vec<Child>,
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}\n(the network lab needs root with CAP_NET_ADMIN, iproute2 and nftables)",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Lab {
    /// A new, empty lab.
    pub fn new() -> Lab {
        let n = LABS.fetch_add(1, Ordering::SeqCst);
        Lab {
            id: format!("{:05}{n}", std::process::id() % 100_000),
            namespaces: Vec::new(),
            links: 0,
            children: Vec::new(),
        }
    }

    /// A new host (a namespace with its loopback up); returns its namespace name.
    pub fn host(&mut self, name: &str) -> String {
        let ns = format!("dtlab-{}-{name}", self.id);
        run(Command::new("ip").args(["netns", "add", &ns]));
        self.namespaces.push(ns.clone());
        run(Command::new("ip").args(["-n", &ns, "link", "set", "lo", "up"]));
        ns
    }

    /// Joins two hosts with a veth pair, `a_addr` and `b_addr` in CIDR form; returns
    /// the interface names (in `a`, in `b`).
    pub fn link(&mut self, a: &str, a_addr: &str, b: &str, b_addr: &str) -> (String, String) {
        self.links += 1;
        let (ia, ib) = (format!("dt{}{}a", self.id, self.links), format!("dt{}{}b", self.id, self.links));
        assert!(ia.len() <= 15, "{ia} is too long for an interface name");
        run(Command::new("ip")
            .args(["-n", a, "link", "add", &ia, "type", "veth", "peer", "name", &ib, "netns", b]));
        for (ns, ifname, addr) in [(a, &ia, a_addr), (b, &ib, b_addr)] {
            let mut cmd = Command::new("ip");
            cmd.args(["-n", ns, "addr", "add", addr, "dev", ifname]);
            if addr.contains(':') {
                // no duplicate address detection: the address is usable at once
                cmd.arg("nodad");
            }
            run(&mut cmd);
            run(Command::new("ip").args(["-n", ns, "link", "set", ifname, "up"]));
        }
        (ia, ib)
    }

    /// Sets a host's default route (IPv4 or IPv6, by the gateway's address).
    pub fn default_route(&self, ns: &str, via: &str) {
        let family = if via.contains(':') { "-6" } else { "-4" };
        run(Command::new("ip").args(["-n", ns, family, "route", "add", "default", "via", via]));
    }

    /// Lets a host forward packets, IPv4 and IPv6 (a router).
    pub fn forwarding(&self, ns: &str) {
        run(Command::new("ip").args(["netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"]));
        run(Command::new("ip").args([
            "netns",
            "exec",
            ns,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.forwarding=1",
        ]));
    }

    /// Loads an nftables ruleset into a host.
    pub fn nft(&self, ns: &str, ruleset: &str) {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run nft: {e}"));
        child.stdin.take().map(|mut i| i.write_all(ruleset.as_bytes()));
        let out = child.wait_with_output().unwrap_or_else(|e| panic!("nft: {e}"));
        assert!(
            out.status.success(),
            "nft in {ns} refused:\n{ruleset}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Masquerades what a router sends out of `out_if` (a NAT router).
    pub fn masquerade(&self, ns: &str, out_if: &str) {
        self.nft(
            ns,
            &format!(
                "table ip dtnat {{\n chain postnat {{\n  type nat hook postrouting priority 100;\n  oifname \"{out_if}\" masquerade\n }}\n}}\n"
            ),
        );
    }

    /// Drops every UDP packet a router forwards (media; TCP signaling still flows).
    pub fn cut_udp(&self, router: &str) {
        self.nft(
            router,
            "table inet dtcut {\n chain cutfwd {\n  type filter hook forward priority 0;\n  meta l4proto udp drop\n }\n}\n",
        );
    }

    /// Lifts [`cut_udp`](Self::cut_udp).
    pub fn heal(&self, router: &str) {
        run(Command::new("ip").args(["netns", "exec", router, "nft", "delete", "table", "inet", "dtcut"]));
    }

    /// A command that runs `program` inside `ns`, in a process group of its own that
    /// the lab kills on drop.
    pub fn command(&self, ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]).process_group(0);
        c
    }

    /// Starts a command made by [`command`](Self::command) and keeps it for cleanup;
    /// returns its index for [`child`](Self::child).
    pub fn spawn(&mut self, mut cmd: Command) -> usize {
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        self.children.push(child);
        self.children.len() - 1
    }

    /// A process started by [`spawn`](Self::spawn).
    pub fn child(&mut self, i: usize) -> &mut Child {
        &mut self.children[i]
    }
}

fn kill_group(child: &mut Child) {
    // The child leads its own process group (process_group(0)): end the whole group,
    // so nothing it started outlives the test.
    let pgid = child.id().to_string();
    let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pgid}")]).stderr(Stdio::null()).status();
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            kill_group(c);
        }
        for ns in self.namespaces.iter().rev() {
            // anything still running inside (started by a child) goes too
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

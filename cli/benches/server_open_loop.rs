//! The server under open-loop load, the way carriers test a SIP server: sipp places
//! calls at fixed rates over a UDP trunk, whatever the server's answers, and measures
//! INVITE→200 at the caller.
//!
//! - **Dialtone**: `dialtone server` in its default configuration (the SQLite file in
//!   its data directory), one TwiML application `<Dial><Sip>` to a sipp UAS that
//!   answers at once. Every call is two legs and two call records.
//! - **Kamailio** from Debian, `tm` + `rr` (a stateful, record-routing proxy) in front
//!   of the same kind of UAS, in the same run, driven the same way.
//!
//! For each rate, `SECONDS` (default 10) of calls with no pause between the 200 and the
//! BYE. INVITE→200 is timed on the wire: tcpdump captures the caller's port on the
//! loopback, and each call's time runs from its first INVITE to its first 200 (sipp's
//! own response times count in 4 ms steps). Failed calls and retransmissions come from
//! sipp's statistics. Then a burst of 10 s at `BURST` calls/s
//! (default three times the highest clean rate found for Dialtone), and 5 s after it
//! 50 probe calls. Rates: `RATES` (default `100,200,500,1000,1500,2000,2500,3000`).
//!
//! Needs `sipp` (Debian `sip-tester`), `tcpdump` and `kamailio`: `bash scripts/setup bench`.
//! Run: `cargo bench -p dialtone-cli --bench server_open_loop`.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::start_server;

/// The caller: INVITE, 200 (response time measured), ACK, BYE at once, 200. In-dialog
/// requests follow the route set, so the same scenario works through a B2BUA (Dialtone)
/// and a record-routing proxy (Kamailio).
const UAC: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="open-loop uac">
  <send retrans="500" start_rtd="1">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
    ]]>
  </send>
  <recv response="100" optional="true"></recv>
  <recv response="180" optional="true"></recv>
  <recv response="183" optional="true"></recv>
  <recv response="200" rtd="1" rrs="true"></recv>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      [routes]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      [routes]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200" crlf="true"></recv>
  <ResponseTimeRepartition value="1, 2, 5, 10, 20, 50, 100, 200, 500, 1000"/>
</scenario>
"#;

/// The callee: answers every INVITE with 200 at once (copying Record-Route, as a UAS
/// must, so that a proxy stays on the path), then takes the ACK and the BYE.
const UAS: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="open-loop uas">
  <recv request="INVITE" crlf="true"></recv>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      [last_Record-Route:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
    ]]>
  </send>
  <recv request="ACK" crlf="true"></recv>
  <recv request="BYE"></recv>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0
    ]]>
  </send>
</scenario>
"#;

const KAMAILIO_CFG: &str = r#"#!KAMAILIO
debug=0
log_stderror=yes
children=4
auto_aliases=no
listen=udp:127.0.0.1:{PORT}
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
request_route {
    if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); exit; }
    if (has_totag()) {
        if (loose_route()) { t_relay(); exit; }
        if (is_method("ACK")) { if (t_check_trans()) { t_relay(); } exit; }
        sl_send_reply("404", "Not here");
        exit;
    }
    if (is_method("CANCEL")) { if (t_check_trans()) { t_relay(); } exit; }
    record_route();
    $du = "sip:127.0.0.1:{UAS}";
    if (!t_relay()) { sl_reply_error(); }
}
"#;

/// Kills and reaps its process when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn need(tool: &str) {
    let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().unwrap();
    assert!(found.status.success(), "{tool} is missing: run `bash scripts/setup bench` first");
}

/// A sipp UAS answering every INVITE at once, on a free port.
fn uas(dir: &Path) -> (Proc, u16) {
    let port = free_udp_port();
    let scenario = dir.join(format!("uas-{port}.xml"));
    std::fs::write(&scenario, UAS).unwrap();
    let child = Command::new("sipp")
        .args(["-sf", scenario.to_str().unwrap(), "-i", "127.0.0.1", "-p", &port.to_string(), "-nostdin"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    (Proc(child), port)
}

/// One fixed-rate run's figures.
#[derive(Debug, Default)]
struct Run {
    calls: u64,
    /// Calls whose INVITE and 200 were both captured (the percentiles' sample).
    timed: u64,
    /// Packets the capture lost.
    dropped: u64,
    /// Calls refused with an error response (a 503 when the server sheds load).
    refused: u64,
    /// Calls that timed out (no answer after every retransmission).
    timed_out: u64,
    ok: u64,
    failed: u64,
    retransmissions: u64,
    p50_ms: f64,
    p99_ms: f64,
}

impl Run {
    fn clean(&self) -> bool {
        self.failed == 0 && self.ok == self.calls && self.p99_ms <= 50.0
    }

    fn cell(&self) -> String {
        if self.timed == 0 {
            return format!("**no call answered**, {} of {} failed", self.failed, self.calls);
        }
        let lost =
            if self.dropped > 0 { format!(", {} packets not captured", self.dropped) } else { String::new() };
        if self.failed > 0 {
            format!(
                "{:.2} / {:.2} ms, **{} of {} failed**, {} retr.{lost}",
                self.p50_ms, self.p99_ms, self.failed, self.calls, self.retransmissions
            )
        } else {
            format!("{:.2} / {:.2} ms, {} retr.{lost}", self.p50_ms, self.p99_ms, self.retransmissions)
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// sipp as the caller: `calls` calls at `rate` calls/s toward `target`.
fn sipp_uac(dir: &Path, target: &str, rate: u32, calls: u64) -> Run {
    let run_dir = dir.join(format!("uac-{rate}-{calls}-{}", rand_tag()));
    std::fs::create_dir_all(&run_dir).unwrap();
    let scenario = run_dir.join("uac.xml");
    std::fs::write(&scenario, UAC).unwrap();
    let limit = (rate * 30).max(1000).to_string();
    let port = free_udp_port();
    let pcap = run_dir.join("calls.pcap");
    let capture = Command::new("tcpdump")
        .args(["-i", "lo", "-n", "-s", "4096", "-B", "65536", "-U", "-w"])
        .arg(&pcap)
        .args(["udp", "and", "port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&pcap);
    let status = Command::new("sipp")
        .arg(target)
        .args(["-sf", scenario.to_str().unwrap(), "-s", "bench", "-i", "127.0.0.1", "-p", &port.to_string()])
        .args(["-r", &rate.to_string(), "-m", &calls.to_string(), "-l", &limit])
        .args(["-trace_stat", "-fd", "1", "-nostdin"])
        .args(["-timeout", "120", "-timeout_error", "-recv_timeout", "10000"])
        .current_dir(&run_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let _ = status;
    std::thread::sleep(Duration::from_millis(300));
    let _ = Command::new("kill").args(["-INT", &capture.id().to_string()]).status();
    let out = capture.wait_with_output().unwrap();
    let dropped = String::from_utf8_lossy(&out.stderr)
        .lines()
        .find(|l| l.contains("dropped by kernel"))
        .and_then(|l| l.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
        .unwrap_or(0);
    let mut run = Run { calls, dropped, ..Run::default() };
    let mut rtts = invite_to_200_ms(&std::fs::read(&pcap).unwrap_or_default(), port);
    run.timed = rtts.len() as u64;
    let mut stat_lines = Vec::new();
    for e in std::fs::read_dir(&run_dir).unwrap().map_while(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with("_.csv") {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            stat_lines = text.lines().map(str::to_owned).collect();
        }
    }
    rtts.sort_by(f64::total_cmp);
    run.p50_ms = percentile(&rtts, 0.50);
    run.p99_ms = percentile(&rtts, 0.99);
    if let (Some(header), Some(last)) = (stat_lines.first(), stat_lines.last()) {
        let cols: Vec<&str> = header.split(';').collect();
        let vals: Vec<&str> = last.split(';').collect();
        let get = |name: &str| {
            cols.iter()
                .position(|c| *c == name)
                .and_then(|i| vals.get(i))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        run.ok = get("SuccessfulCall(C)");
        run.failed = get("FailedCall(C)");
        run.retransmissions = get("Retransmissions(C)");
        run.refused = get("FailedUnexpectedMessage(C)");
        run.timed_out = get("FailedMaxUDPRetrans(C)") + get("FailedTimeoutOnRecv(C)");
    }
    // Calls sipp never finished count as failed too.
    run.failed = run.failed.max(calls.saturating_sub(run.ok));
    let _ = std::fs::remove_dir_all(&run_dir);
    run
}

fn wait_for_file(p: &Path) {
    for _ in 0..100 {
        if p.exists() {
            std::thread::sleep(Duration::from_millis(200));
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("tcpdump did not start writing {}", p.display());
}

/// INVITE→200 of every call in a pcap of the caller's port `port` (loopback, Ethernet
/// framing): from the first INVITE the caller sent to the first 200 for it, in ms.
fn invite_to_200_ms(pcap: &[u8], port: u16) -> Vec<f64> {
    use std::collections::HashMap;
    if pcap.len() < 24 {
        return Vec::new();
    }
    let magic = u32::from_le_bytes(pcap[0..4].try_into().unwrap());
    let nanos = match magic {
        0xa1b2_c3d4 => false,
        0xa1b2_3c4d => true,
        other => panic!("not a little-endian pcap file: {other:#x}"),
    };
    let linktype = u32::from_le_bytes(pcap[20..24].try_into().unwrap());
    let link_header = match linktype {
        1 => 14,   // Ethernet (the loopback on Linux)
        113 => 16, // Linux cooked capture
        other => panic!("link type {other} not handled"),
    };
    let (mut sent, mut answered): (HashMap<String, f64>, HashMap<String, f64>) = Default::default();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let u = |o: usize| u32::from_le_bytes(pcap[at + o..at + o + 4].try_into().unwrap());
        let t = f64::from(u(0)) * 1e3 + f64::from(u(4)) / if nanos { 1e6 } else { 1e3 };
        let caplen = u(8) as usize;
        let packet = &pcap[(at + 16).min(pcap.len())..(at + 16 + caplen).min(pcap.len())];
        at += 16 + caplen;
        let Some(ip) = packet.get(link_header..) else { continue };
        if ip.is_empty() || ip[0] >> 4 != 4 {
            continue;
        }
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let Some(udp) = ip.get(ihl..) else { continue };
        if udp.len() < 8 {
            continue;
        }
        let src = u16::from_be_bytes([udp[0], udp[1]]);
        let text = String::from_utf8_lossy(&udp[8..]);
        let header = |name: &str| {
            text.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
        };
        let Some(call_id) = header("Call-ID") else { continue };
        if src == port && text.starts_with("INVITE ") {
            sent.entry(call_id).or_insert(t);
        } else if src != port
            && text.starts_with("SIP/2.0 200")
            && header("CSeq").is_some_and(|c| c.ends_with("INVITE"))
        {
            answered.entry(call_id).or_insert(t);
        }
    }
    answered.iter().filter_map(|(id, a)| sent.get(id).map(|s| a - s)).collect()
}

fn rand_tag() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        % 1_000_000_007
}

/// `dialtone server` with the default store, dialing every call to the UAS on `uas`.
fn dialtone(home: &Path, uas: u16) -> common::Server {
    start_server(
        home,
        &format!(
            "applications = [{{ sid = \"APbench\", twiml = \"<Response><Dial><Sip>sip:uas@127.0.0.1:{uas}</Sip></Dial></Response>\" }}]\n"
        ),
    )
}

/// Kamailio in a process group of its own: dropping it kills every worker.
fn kamailio(dir: &Path, uas: u16) -> (dialtone_tests::Peer, String) {
    let port = free_udp_port();
    let cfg = dir.join("kamailio.cfg");
    std::fs::write(
        &cfg,
        KAMAILIO_CFG.replace("{PORT}", &port.to_string()).replace("{UAS}", &uas.to_string()),
    )
    .unwrap();
    let child = Command::new("kamailio")
        .args(["-DD", "-E", "-f", cfg.to_str().unwrap(), "-m", "256", "-M", "32"])
        .arg("-P")
        .arg(dir.join("kamailio.pid"))
        .arg("-Y")
        .arg(dir)
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    (dialtone_tests::Peer(child), format!("127.0.0.1:{port}"))
}

use std::os::unix::process::CommandExt as _;

fn rates() -> Vec<u32> {
    std::env::var("RATES")
        .unwrap_or_else(|_| "100,200,500,1000,1500,2000,2500,3000".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect()
}

fn seconds() -> u64 {
    std::env::var("SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10)
}

fn main() {
    need("sipp");
    need("kamailio");
    let dir: PathBuf = std::env::temp_dir().join(format!("dialtone-open-loop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let secs = seconds();
    let rates = rates();

    let mut table: Vec<(u32, String, String)> = Vec::new();
    let mut best_dialtone = 0;
    let mut best_kamailio = 0;
    {
        let (_uas, uas_port) = uas(&dir);
        let home = dir.join("dialtone-home");
        std::fs::create_dir_all(&home).unwrap();
        let server = dialtone(&home, uas_port);
        let target = server.udp.clone();
        let k_dir = dir.join("kamailio");
        std::fs::create_dir_all(&k_dir).unwrap();
        let (_uas2, uas2_port) = uas(&dir);
        let (kam, k_target) = kamailio(&k_dir, uas2_port);
        for &rate in &rates {
            let calls = u64::from(rate) * secs;
            let d = sipp_uac(&dir, &target, rate, calls);
            std::thread::sleep(Duration::from_secs(2));
            let k = sipp_uac(&dir, &k_target, rate, calls);
            std::thread::sleep(Duration::from_secs(2));
            println!("{rate} calls/s: dialtone {d:?}\n{rate} calls/s: kamailio {k:?}");
            if d.clean() {
                best_dialtone = best_dialtone.max(rate);
            }
            if k.clean() {
                best_kamailio = best_kamailio.max(rate);
            }
            table.push((rate, d.cell(), k.cell()));
        }

        // The burst: three times Dialtone's clean capacity for 10 s, then probes.
        let burst: u32 =
            std::env::var("BURST").ok().and_then(|b| b.parse().ok()).unwrap_or((best_dialtone.max(100)) * 3);
        let mut burst_rows = Vec::new();
        for (name, t) in [("dialtone", &target), ("kamailio", &k_target)] {
            let b = sipp_uac(&dir, t, burst, u64::from(burst) * 10);
            std::thread::sleep(Duration::from_secs(5));
            let p = sipp_uac(&dir, t, 50, 50);
            println!("burst {name}: {b:?}\nprobe {name}: {p:?}");
            burst_rows.push((name, b, p));
            std::thread::sleep(Duration::from_secs(3));
        }
        drop(server);
        drop(kam);

        println!("\n| calls/s | Dialtone, default config (SQLite file) | Kamailio (tm+rr) |\n|---|---|---|");
        for (rate, d, k) in &table {
            println!("| {rate} | {d} | {k} |");
        }
        println!(
            "\nHighest rate with 0 failed and p99 <= 50 ms: Dialtone {best_dialtone}, Kamailio {best_kamailio} calls/s (of {rates:?}, {secs} s each).\n"
        );
        println!(
            "| 10 s burst at {burst} calls/s | during the burst | 5 s later, 50 probe calls |\n|---|---|---|"
        );
        for (name, b, p) in &burst_rows {
            println!(
                "| {name} | {} of {} answered, {} refused (503 or another error), {} timed out, {} retr. | {} of 50 ok, p50 {:.2} / p99 {:.2} ms |",
                b.ok, b.calls, b.refused, b.timed_out, b.retransmissions, p.ok, p.p50_ms, p.p99_ms
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

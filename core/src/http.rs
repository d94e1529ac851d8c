//! A minimal blocking HTTP/1.1 client for `http://` URLs: enough to POST a small body
//! and read the answer. The server uses it for voice URLs, push gateways and message
//! callbacks (from a blocking task); [`HttpInsightsSink`](crate::HttpInsightsSink)
//! uses it from its own thread. Standard library only, so the SDK core stays free of
//! a runtime.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The answer to a request: the status and the (de-chunked) body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The body as text (lossy UTF-8).
    pub body: String,
}

/// POSTs `body` to an `http://` URL with the extra `headers`, waiting at most
/// `timeout` for each of connecting, writing and reading. The error is a sentence
/// naming the URL.
pub fn post(
    url: &str,
    content_type: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<HttpResponse, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url:?}: only http:// is supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains(['\r', '\n', ' ']) || path.contains(['\r', '\n', ' ']) {
        return Err(format!("{url:?} is not a usable URL"));
    }
    let host_port = if authority.contains(':') { authority.to_owned() } else { format!("{authority}:80") };
    let addr = host_port
        .to_socket_addrs()
        .map_err(|e| format!("{url}: {e}"))?
        .next()
        .ok_or_else(|| format!("{url}: no address"))?;
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: Dialtone/{}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    for (k, v) in headers {
        if k.contains(['\r', '\n', ':']) || v.contains(['\r', '\n']) {
            return Err(format!("header {k:?} cannot be sent"));
        }
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    let io = |e: std::io::Error| {
        if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) {
            format!("{url} did not answer within {} s", timeout.as_secs_f32())
        } else {
            format!("{url}: {e}")
        }
    };
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(io)?;
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.set_write_timeout(Some(timeout)).map_err(io)?;
    s.write_all(&request).map_err(io)?;
    let mut raw = Vec::new();
    // At most 1 MiB of answer.
    s.take(1 << 20).read_to_end(&mut raw).map_err(io)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("{url}: not HTTP"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{url}: not HTTP"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    Ok(HttpResponse { status, body: if chunked { dechunk(body) } else { body.to_owned() } })
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n || !rest.is_char_boundary(n) {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn posts_and_reads_a_chunked_answer() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = vec![0u8; 4096];
            let mut req = String::new();
            while !req.ends_with("hi") {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "the request ended early: {req}");
                req.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            s.write_all(
                b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            )
            .unwrap();
            req
        });
        let r = post(
            &format!("http://{addr}/x?y=1"),
            "text/plain",
            &[("X-A", "b")],
            b"hi",
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(r, HttpResponse { status: 201, body: "abcde".into() });
        let req = server.join().unwrap();
        assert!(req.starts_with("POST /x?y=1 HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("\r\nX-A: b\r\n") && req.ends_with("\r\n\r\nhi"), "{req}");
    }

    #[test]
    fn refuses_what_it_cannot_send() {
        let t = Duration::from_secs(1);
        assert!(post("https://example.org/", "a/b", &[], b"", t).unwrap_err().contains("only http://"));
        assert!(post("http://a b/", "a/b", &[], b"", t).is_err());
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", l.local_addr().unwrap());
        assert!(post(&url, "a/b", &[("Bad\r\nHeader", "x")], b"", t).is_err());
        drop(l);
        assert!(post(&url, "a/b", &[], b"", t).is_err(), "a closed port is an error");
    }
}

//! SIP messages (RFC 3261 §7): parsing, serializing and stream framing.
//!
//! This module owns the text of a message and nothing else: no transactions, no
//! dialogs. A parsed [`Message`] keeps every header in arrival order with its
//! canonical name (compact forms such as `v` and `i` are expanded, folded lines are
//! joined). `Content-Length` is not kept as a header: the parser uses it to cut the
//! body and the serializer always writes the body's real length, so serializing then
//! parsing gives back the same message.
//!
//! Bad input is a [`ParseError`], never a panic. [`Message::parse`] takes a whole
//! message (a UDP datagram or a WebSocket frame); [`StreamFramer`] cuts messages out
//! of a TCP/TLS byte stream and recognizes the RFC 5626 CRLF keepalives.

use std::fmt;

/// The default largest message accepted (64 KiB).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024;

/// Why a message could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The message is larger than the configured limit.
    #[error("message of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// The size seen so far.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The header section never ends (no empty line).
    #[error("incomplete message: {0}")]
    Incomplete(&'static str),
    /// The start line is not a request line or a status line.
    #[error("bad start line: {0}")]
    StartLine(String),
    /// A header line is malformed.
    #[error("bad header line: {0}")]
    Header(String),
    /// A header's value cannot be understood.
    #[error("bad {name} header: {reason}")]
    HeaderValue {
        /// The header's canonical name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The bytes are not UTF-8 where text is required.
    #[error("the header section is not UTF-8")]
    NotUtf8,
}

/// A SIP method.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Method {
    /// INVITE
    Invite,
    /// ACK
    Ack,
    /// BYE
    Bye,
    /// CANCEL
    Cancel,
    /// REGISTER
    Register,
    /// OPTIONS
    Options,
    /// INFO
    Info,
    /// MESSAGE
    Message,
    /// UPDATE
    Update,
    /// PRACK
    Prack,
    /// SUBSCRIBE
    Subscribe,
    /// NOTIFY
    Notify,
    /// REFER
    Refer,
    /// Any other token.
    Other(String),
}

impl Method {
    /// The method for a token (case-sensitive, as RFC 3261 says).
    pub fn from_token(s: &str) -> Method {
        match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "REGISTER" => Method::Register,
            "OPTIONS" => Method::Options,
            "INFO" => Method::Info,
            "MESSAGE" => Method::Message,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "REFER" => Method::Refer,
            other => Method::Other(other.to_owned()),
        }
    }

    /// The token.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Register => "REGISTER",
            Method::Options => "OPTIONS",
            Method::Info => "INFO",
            Method::Message => "MESSAGE",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first line of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartLine {
    /// `METHOD request-uri SIP/2.0`
    Request {
        /// The method.
        method: Method,
        /// The request URI, as written.
        uri: String,
    },
    /// `SIP/2.0 status reason`
    Response {
        /// The status code, 100 to 699.
        status: u16,
        /// The reason phrase (may be empty).
        reason: String,
    },
}

/// Compact forms (RFC 3261 §7.3.3 and the registry of later RFCs) to full names.
const COMPACT: &[(&str, &str)] = &[
    ("a", "Accept-Contact"),
    ("b", "Referred-By"),
    ("c", "Content-Type"),
    ("d", "Request-Disposition"),
    ("e", "Content-Encoding"),
    ("f", "From"),
    ("i", "Call-ID"),
    ("j", "Reject-Contact"),
    ("k", "Supported"),
    ("l", "Content-Length"),
    ("m", "Contact"),
    ("o", "Event"),
    ("r", "Refer-To"),
    ("s", "Subject"),
    ("t", "To"),
    ("u", "Allow-Events"),
    ("v", "Via"),
    ("x", "Session-Expires"),
    ("y", "Identity"),
];

/// Headers whose usual spelling is not plain title case.
const CANONICAL: &[&str] = &[
    "Accept",
    "Allow",
    "Authorization",
    "Call-ID",
    "Contact",
    "Content-Disposition",
    "Content-Type",
    "CSeq",
    "Expires",
    "From",
    "Max-Forwards",
    "Min-Expires",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Reason",
    "Record-Route",
    "Require",
    "Route",
    "Server",
    "Supported",
    "To",
    "User-Agent",
    "Via",
    "WWW-Authenticate",
    "Warning",
    "P-Asserted-Identity",
    "RSeq",
    "RAck",
    "SIP-ETag",
    "SIP-If-Match",
];

/// The canonical spelling of a header name: compact forms expanded, known names in
/// their usual case, others as written.
pub fn canonical_name(name: &str) -> String {
    if name.len() == 1 {
        if let Some((_, full)) = COMPACT.iter().find(|(c, _)| c.eq_ignore_ascii_case(name)) {
            return (*full).to_owned();
        }
    }
    for (_, full) in COMPACT {
        if full.eq_ignore_ascii_case(name) {
            return (*full).to_owned();
        }
    }
    if let Some(c) = CANONICAL.iter().find(|c| c.eq_ignore_ascii_case(name)) {
        return (*c).to_owned();
    }
    name.to_owned()
}

fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&c)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

/// Headers in arrival order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Headers(Vec::new())
    }

    /// Appends a header (the name is canonicalized).
    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.0.push((canonical_name(name), value.into()));
    }

    /// Inserts a header before all others (used for Via).
    pub fn push_front(&mut self, name: &str, value: impl Into<String>) {
        self.0.insert(0, (canonical_name(name), value.into()));
    }

    /// Replaces every header of this name with one value.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let name = canonical_name(name);
        match self.0.iter().position(|(n, _)| n.eq_ignore_ascii_case(&name)) {
            Some(i) => {
                self.0[i].1 = value.into();
                let mut j = 0;
                self.0.retain(|(n, _)| {
                    j += 1;
                    j - 1 == i || !n.eq_ignore_ascii_case(&name)
                });
            }
            None => self.0.push((name, value.into())),
        }
    }

    /// Removes every header of this name.
    pub fn remove(&mut self, name: &str) {
        let name = canonical_name(name);
        self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
    }

    /// The first value of a header.
    pub fn get(&self, name: &str) -> Option<&str> {
        let name = canonical_name(name);
        self.0.iter().find(|(n, _)| n.eq_ignore_ascii_case(&name)).map(|(_, v)| v.as_str())
    }

    /// Every header line of a name, as written (a line may hold a comma list).
    pub fn get_all<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        let name = canonical_name(name);
        self.0.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(&name)).map(|(_, v)| v.as_str())
    }

    /// Every value of a list header (Via, Contact, Route, ...), comma lists split.
    pub fn values<'a>(&'a self, name: &str) -> Vec<&'a str> {
        self.get_all(name).flat_map(split_list).collect()
    }

    /// All headers in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The number of header lines.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Splits a header value at commas that are outside quotes and angle brackets.
pub fn split_list(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut quoted, mut angle, mut escaped) = (false, false, false);
    let mut start = 0;
    for (i, c) in value.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                let part = value[start..i].trim();
                if !part.is_empty() {
                    out.push(part);
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    let part = value[start..].trim();
    if !part.is_empty() {
        out.push(part);
    }
    out
}

/// A SIP request or response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The request or status line.
    pub start: StartLine,
    /// The headers, without Content-Length.
    pub headers: Headers,
    /// The body.
    pub body: Vec<u8>,
}

impl Message {
    /// A request with no headers.
    pub fn request(method: Method, uri: impl Into<String>) -> Self {
        Message {
            start: StartLine::Request { method, uri: uri.into() },
            headers: Headers::new(),
            body: Vec::new(),
        }
    }

    /// A response with no headers; the reason phrase is the standard one.
    pub fn response(status: u16) -> Self {
        Message {
            start: StartLine::Response { status, reason: reason_phrase(status).to_owned() },
            headers: Headers::new(),
            body: Vec::new(),
        }
    }

    /// The method of a request, or the CSeq method of a response.
    pub fn method(&self) -> Option<Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method.clone()),
            StartLine::Response { .. } => self.cseq().map(|c| c.1),
        }
    }

    /// The status of a response.
    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { status, .. } => Some(status),
            StartLine::Request { .. } => None,
        }
    }

    /// The reason phrase of a response (empty for requests).
    pub fn reason(&self) -> &str {
        match &self.start {
            StartLine::Response { reason, .. } => reason,
            StartLine::Request { .. } => "",
        }
    }

    /// The request URI (empty for responses).
    pub fn uri(&self) -> &str {
        match &self.start {
            StartLine::Request { uri, .. } => uri,
            StartLine::Response { .. } => "",
        }
    }

    /// Whether this is a request.
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// A header's first value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// The Call-ID.
    pub fn call_id(&self) -> Option<&str> {
        self.headers.get("Call-ID")
    }

    /// The CSeq number and method.
    pub fn cseq(&self) -> Option<(u32, Method)> {
        let v = self.headers.get("CSeq")?;
        let mut it = v.split_whitespace();
        let n = it.next()?.parse().ok()?;
        let m = it.next()?;
        if it.next().is_some() || !is_token(m) {
            return None;
        }
        Some((n, Method::from_token(m)))
    }

    /// The branch parameter of the top Via.
    pub fn top_branch(&self) -> Option<String> {
        let via = self.headers.values("Via").into_iter().next()?;
        crate::header::Via::parse(via).ok()?.param("branch").map(str::to_owned)
    }

    /// The bytes on the wire, with the real Content-Length.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::with_capacity(256 + self.headers.len() * 48);
        match &self.start {
            StartLine::Request { method, uri } => {
                out.push_str(method.as_str());
                out.push(' ');
                out.push_str(uri);
                out.push_str(" SIP/2.0\r\n");
            }
            StartLine::Response { status, reason } => {
                out.push_str("SIP/2.0 ");
                out.push_str(&status.to_string());
                out.push(' ');
                out.push_str(reason);
                out.push_str("\r\n");
            }
        }
        for (n, v) in self.headers.iter() {
            out.push_str(n);
            out.push_str(": ");
            out.push_str(v);
            out.push_str("\r\n");
        }
        out.push_str("Content-Length: ");
        out.push_str(&self.body.len().to_string());
        out.push_str("\r\n\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }

    /// Parses a whole message (a datagram or a WebSocket frame). Without a
    /// Content-Length the body is the rest of the input; with one, the body is cut to
    /// it and a body shorter than it is an error.
    pub fn parse(input: &[u8], max_size: usize) -> Result<Message, ParseError> {
        if input.len() > max_size {
            return Err(ParseError::TooLarge { size: input.len(), limit: max_size });
        }
        let start = input.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(input.len());
        let input = &input[start..];
        let head_end =
            find_head_end(input).ok_or(ParseError::Incomplete("no empty line after the headers"))?;
        let (mut msg, content_length) = parse_head(&input[..head_end.0])?;
        let rest = &input[head_end.1..];
        msg.body = match content_length {
            Some(n) if n > rest.len() => {
                return Err(ParseError::HeaderValue {
                    name: "Content-Length".into(),
                    reason: format!("says {n} bytes but the body has {}", rest.len()),
                })
            }
            Some(n) => rest[..n].to_vec(),
            None => rest.to_vec(),
        };
        Ok(msg)
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

/// Where the header section ends: (end of the last header line, start of the body).
fn find_head_end(input: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'\n' {
            // "\n\n" or "\n\r\n" ends the headers.
            if input.get(i + 1) == Some(&b'\n') {
                return Some((i, i + 2));
            }
            if input.get(i + 1) == Some(&b'\r') && input.get(i + 2) == Some(&b'\n') {
                return Some((i, i + 3));
            }
        }
        i += 1;
    }
    None
}

/// Parses the start line and headers; returns the message (empty body) and the
/// Content-Length if one was given.
fn parse_head(head: &[u8]) -> Result<(Message, Option<usize>), ParseError> {
    let head = std::str::from_utf8(head).map_err(|_| ParseError::NotUtf8)?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let first = lines.next().unwrap_or("");
    let start = parse_start_line(first)?;
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut content_length = None;
    for line in lines {
        if line.starts_with(' ') || line.starts_with('\t') {
            let Some(last) = headers.last_mut() else {
                return Err(ParseError::Header("a continuation line before any header".into()));
            };
            let more = line.trim();
            if more.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
                return Err(ParseError::Header(format!("control character in {}", last.0)));
            }
            if !more.is_empty() {
                if !last.1.is_empty() {
                    last.1.push(' ');
                }
                last.1.push_str(more);
            }
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(ParseError::Header(format!("no colon in {:?}", truncate(line))));
        };
        let name = name.trim_end_matches([' ', '\t']);
        if !is_token(name) {
            return Err(ParseError::Header(format!("bad header name {:?}", truncate(name))));
        }
        if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Err(ParseError::Header(format!("control character in {name}")));
        }
        headers.push((canonical_name(name), value.trim().to_owned()));
    }
    // Content-Length is consumed here; the serializer writes the real one.
    let mut kept = Vec::with_capacity(headers.len());
    for (n, v) in headers {
        if n == "Content-Length" {
            let parsed: usize = v.parse().map_err(|_| ParseError::HeaderValue {
                name: n.clone(),
                reason: format!("{:?} is not a number", truncate(&v)),
            })?;
            if content_length.is_some_and(|c| c != parsed) {
                return Err(ParseError::HeaderValue { name: n, reason: "two different values".into() });
            }
            content_length = Some(parsed);
        } else {
            kept.push((n, v));
        }
    }
    Ok((Message { start, headers: Headers(kept), body: Vec::new() }, content_length))
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn parse_start_line(line: &str) -> Result<StartLine, ParseError> {
    if let Some(rest) = line.strip_prefix("SIP/2.0 ") {
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let status: u16 = code
            .parse()
            .ok()
            .filter(|s| (100..=699).contains(s) && code.len() == 3)
            .ok_or_else(|| ParseError::StartLine(format!("bad status code {:?}", truncate(code))))?;
        if reason.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Err(ParseError::StartLine("control character in the reason phrase".into()));
        }
        return Ok(StartLine::Response { status, reason: reason.to_owned() });
    }
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::StartLine(format!("{:?} is not METHOD URI SIP/2.0", truncate(line))));
    };
    if !is_token(method) {
        return Err(ParseError::StartLine(format!("bad method {:?}", truncate(method))));
    }
    if version != "SIP/2.0" {
        return Err(ParseError::StartLine(format!("unsupported version {:?}", truncate(version))));
    }
    if uri.is_empty() || !uri.contains(':') || uri.bytes().any(|b| b.is_ascii_control()) {
        return Err(ParseError::StartLine(format!("bad request URI {:?}", truncate(uri))));
    }
    Ok(StartLine::Request { method: Method::from_token(method), uri: uri.to_owned() })
}

/// The standard reason phrase of a status code.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        420 => "Bad Extension",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => match status / 100 {
            1 => "Session Progress",
            2 => "OK",
            3 => "Redirection",
            4 => "Client Error",
            5 => "Server Error",
            _ => "Global Failure",
        },
    }
}

/// One thing cut from a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A whole message.
    Message(Message),
    /// A message that could not be read, with its bytes skipped (the framing held).
    Malformed(ParseError, Vec<u8>),
    /// An RFC 5626 keepalive ping (CRLF CRLF); answer with a pong (CRLF).
    Ping,
    /// An RFC 5626 keepalive pong (a lone CRLF).
    Pong,
}

/// Cuts SIP messages out of a byte stream (TCP, TLS) by Content-Length.
///
/// A message over the size limit whose Content-Length can be read is skipped whole
/// and reported as [`Frame::Malformed`] with its header section (so that it can be
/// answered); the stream goes on. Only a header section that never ends within the
/// limit, or an unreadable Content-Length, loses the framing.
#[derive(Debug)]
pub struct StreamFramer {
    buf: Vec<u8>,
    max_size: usize,
    skip: usize,
}

impl StreamFramer {
    /// A framer refusing messages over `max_size` bytes.
    pub fn new(max_size: usize) -> Self {
        StreamFramer { buf: Vec::new(), max_size, skip: 0 }
    }

    /// Adds received bytes.
    pub fn push(&mut self, data: &[u8]) {
        let skipped = self.skip.min(data.len());
        self.skip -= skipped;
        self.buf.extend_from_slice(&data[skipped..]);
    }

    /// The next frame, `Ok(None)` when more bytes are needed, or an error after which
    /// the stream cannot be framed any more (the connection should be closed).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, ParseError> {
        // Keepalives between messages.
        if self.buf.starts_with(b"\r\n\r\n") {
            self.buf.drain(..4);
            return Ok(Some(Frame::Ping));
        }
        if self.buf.starts_with(b"\r\n") {
            if self.buf.len() < 4 && b"\r\n\r\n".starts_with(&self.buf) {
                // Might be the start of a ping; a lone CRLF followed by nothing yet
                // is reported as a pong once more bytes or a message follow.
                if self.buf.len() == 2 {
                    self.buf.drain(..2);
                    return Ok(Some(Frame::Pong));
                }
                return Ok(None);
            }
            self.buf.drain(..2);
            return Ok(Some(Frame::Pong));
        }
        if self.buf.is_empty() {
            return Ok(None);
        }
        let Some((head_end, body_start)) = find_head_end(&self.buf) else {
            if self.buf.len() > self.max_size {
                return Err(ParseError::TooLarge { size: self.buf.len(), limit: self.max_size });
            }
            return Ok(None);
        };
        if body_start > self.max_size {
            return Err(ParseError::TooLarge { size: body_start, limit: self.max_size });
        }
        let length = content_length_of(&self.buf[..head_end])?;
        let total = body_start.saturating_add(length);
        if total > self.max_size {
            // Refuse it but keep the stream: drop the body as it arrives.
            let head = self.buf[..body_start].to_vec();
            let have = self.buf.len().min(total);
            self.buf.drain(..have);
            self.skip = total - have;
            return Ok(Some(Frame::Malformed(
                ParseError::TooLarge { size: total, limit: self.max_size },
                head,
            )));
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        let raw: Vec<u8> = self.buf.drain(..total).collect();
        Ok(Some(match Message::parse(&raw, self.max_size) {
            Ok(m) => Frame::Message(m),
            Err(e) => Frame::Malformed(e, raw),
        }))
    }
}

/// The Content-Length of a header section (0 when absent, as on a stream the header
/// is mandatory and a missing one can only mean no body).
fn content_length_of(head: &[u8]) -> Result<usize, ParseError> {
    let text = String::from_utf8_lossy(head);
    let mut found = None;
    for line in text.split('\n') {
        let Some((name, value)) = line.split_once(':') else { continue };
        let name = name.trim();
        if name.eq_ignore_ascii_case("Content-Length") || name.eq_ignore_ascii_case("l") {
            let v: usize = value.trim().parse().map_err(|_| ParseError::HeaderValue {
                name: "Content-Length".into(),
                reason: format!("{:?} is not a number", truncate(value.trim())),
            })?;
            if found.is_some_and(|f| f != v) {
                return Err(ParseError::HeaderValue {
                    name: "Content-Length".into(),
                    reason: "two different values".into(),
                });
            }
            found = Some(v);
        }
    }
    Ok(found.unwrap_or(0))
}

/// The size a message says it has (its header section plus its Content-Length), when
/// both can be read. A stream framer hands on only the header section of a message
/// it refused as too large; this tells the receiver how large it was.
pub fn declared_size(raw: &[u8]) -> Option<usize> {
    let (head_end, body_start) = find_head_end(raw)?;
    let length = content_length_of(&raw[..head_end]).ok()?;
    Some(body_start.saturating_add(length))
}

/// Builds the `400 Bad Request` for a request that could be read far enough to answer
/// (it has Via, From, To, Call-ID and CSeq lines), or `None`.
pub fn bad_request_for(raw: &[u8], error: &ParseError) -> Option<Message> {
    let text = String::from_utf8_lossy(raw);
    let head = text.split("\r\n\r\n").next()?;
    let mut lines = head.split('\n').map(|l| l.trim_end_matches('\r'));
    let first = lines.next()?;
    if first.starts_with("SIP/2.0") {
        return None;
    }
    let method = first.split(' ').next()?;
    if method == "ACK" {
        return None;
    }
    let mut resp = Message::response(400);
    let mut seen = [false; 5];
    for line in lines {
        let Some((n, v)) = line.split_once(':') else { continue };
        let n = canonical_name(n.trim());
        let idx = ["Via", "From", "To", "Call-ID", "CSeq"].iter().position(|k| *k == n);
        if let Some(i) = idx {
            let v = v.trim();
            // A value that cannot be echoed faithfully cannot address a response.
            if v.chars().any(|c| c == char::REPLACEMENT_CHARACTER || (c.is_control() && c != '\t')) {
                return None;
            }
            seen[i] = true;
            resp.headers.push(&n, v);
        }
    }
    if !seen.iter().all(|s| *s) {
        return None;
    }
    let reason = error.to_string().replace(['\r', '\n'], " ");
    resp.start = StartLine::Response { status: 400, reason: format!("Bad Request ({})", truncate(&reason)) };
    Some(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:bob@example.com SIP/2.0\r\n\
v: SIP/2.0/WSS abc.invalid;branch=z9hG4bK776asdhds\r\n\
Max-Forwards: 70\r\n\
t: Bob <sip:bob@example.com>\r\n\
f: \"Alice, A.\" <sip:alice@example.com>;tag=1928301774\r\n\
i: a84b4c76e66710\r\n\
CSeq: 314159 INVITE\r\n\
Subject: a long\r\n  folded subject\r\n\
m: <sip:alice@pc33.example.com>, <sip:alice@other.example.com>\r\n\
c: application/sdp\r\n\
l: 4\r\n\r\nv=0\r\nextra";

    #[test]
    fn compact_forms_folding_lists_and_body() {
        let m = Message::parse(INVITE.as_bytes(), DEFAULT_MAX_MESSAGE_SIZE).unwrap();
        assert_eq!(m.method(), Some(Method::Invite));
        assert_eq!(m.call_id(), Some("a84b4c76e66710"));
        assert_eq!(m.header("Subject"), Some("a long folded subject"));
        assert_eq!(m.headers.values("Contact").len(), 2);
        assert_eq!(m.header("from"), Some("\"Alice, A.\" <sip:alice@example.com>;tag=1928301774"));
        assert_eq!(m.headers.values("From").len(), 1, "a comma inside quotes does not split");
        assert_eq!(m.body, b"v=0\r");
        assert_eq!(m.cseq(), Some((314159, Method::Invite)));
        assert_eq!(m.top_branch().as_deref(), Some("z9hG4bK776asdhds"));
        let again = Message::parse(&m.to_bytes(), DEFAULT_MAX_MESSAGE_SIZE).unwrap();
        assert_eq!(again, m);
    }

    #[test]
    fn errors_are_values() {
        let limit = DEFAULT_MAX_MESSAGE_SIZE;
        assert!(matches!(Message::parse(b"", limit), Err(ParseError::Incomplete(_))));
        assert!(matches!(Message::parse(b"HELLO\r\n\r\n", limit), Err(ParseError::StartLine(_))));
        assert!(matches!(Message::parse(b"SIP/2.0 99 Odd\r\n\r\n", limit), Err(ParseError::StartLine(_))));
        assert!(matches!(
            Message::parse(b"OPTIONS sip:a SIP/2.0\r\nno colon\r\n\r\n", limit),
            Err(ParseError::Header(_))
        ));
        assert!(matches!(
            Message::parse(b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 9\r\n\r\nab", limit),
            Err(ParseError::HeaderValue { .. })
        ));
        let big = vec![b'a'; limit + 1];
        assert!(matches!(Message::parse(&big, limit), Err(ParseError::TooLarge { .. })));
    }

    #[test]
    fn stream_framing_with_keepalives_and_split_reads() {
        let msg = Message::parse(INVITE.as_bytes(), DEFAULT_MAX_MESSAGE_SIZE).unwrap();
        let wire = msg.to_bytes();
        let mut stream = b"\r\n\r\n".to_vec();
        stream.extend_from_slice(&wire);
        stream.extend_from_slice(&wire);
        let mut f = StreamFramer::new(DEFAULT_MAX_MESSAGE_SIZE);
        let mut frames = Vec::new();
        for chunk in stream.chunks(7) {
            f.push(chunk);
            while let Some(fr) = f.next_frame().unwrap() {
                frames.push(fr);
            }
        }
        assert_eq!(frames, vec![Frame::Ping, Frame::Message(msg.clone()), Frame::Message(msg)]);
    }

    #[test]
    fn stream_refuses_oversized_and_bad_length() {
        let mut f = StreamFramer::new(100);
        f.push(b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 500\r\n\r\n");
        f.push(&[b'x'; 300]);
        assert!(matches!(f.next_frame(), Ok(Some(Frame::Malformed(ParseError::TooLarge { .. }, _)))));
        // The rest of the big body is skipped; the next message is read.
        f.push(&[b'x'; 200]);
        f.push(b"OPTIONS sip:a SIP/2.0\r\nl: 0\r\n\r\n");
        assert!(matches!(f.next_frame(), Ok(Some(Frame::Message(_)))));
        let mut f = StreamFramer::new(100);
        f.push(&[b'a'; 101]);
        assert!(
            matches!(f.next_frame(), Err(ParseError::TooLarge { .. })),
            "a header section past the limit"
        );
        let mut f = StreamFramer::new(1000);
        f.push(b"OPTIONS sip:a SIP/2.0\r\nl: lots\r\n\r\n");
        assert!(matches!(f.next_frame(), Err(ParseError::HeaderValue { .. })));
    }

    #[test]
    fn bad_request_needs_the_dialog_headers() {
        let raw = b"INVITE sip:bob@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c1\r\nCSeq: nonsense\r\nbroken line\r\n\r\n";
        let err = Message::parse(raw, 1000).unwrap_err();
        let resp = bad_request_for(raw, &err).unwrap();
        assert_eq!(resp.status(), Some(400));
        assert_eq!(resp.call_id(), Some("c1"));
        assert!(bad_request_for(b"INVITE sip:b SIP/2.0\r\nnothing\r\n\r\n", &err).is_none());
    }
}

//! SDP offer/answer (RFC 3264) for one audio stream over `RTP/AVP` or `RTP/SAVP`,
//! keyed by SDES (RFC 4568).
//!
//! This module owns the text: building offers and answers, and reading the peer's
//! with `rtc-sdp`. Choosing follows two rules: the answerer takes the first codec in
//! the *offer's* order (the caller's preference) that it supports, with no common
//! codec being 53404; and the answerer takes the first crypto suite in the offer that
//! it supports, answering with its own key under the offer's tag. A description that
//! cannot be read is 53402.
//!
//! What it writes: `a=rtpmap`/`a=fmtp` for each codec (Opus as `opus/48000/2`, static
//! payload types 0, 8 and 9 for PCMU, PCMA and G722), `telephone-event` at each audio
//! clock rate, `a=ptime`, `a=rtcp-mux`, `a=crypto` lines and a direction attribute.
//!
//! Redundant audio (RFC 2198, `red/48000/2` with `a=fmtp:63 111/111`, as browsers
//! offer it for Opus) is offered when the list of codecs holds [`red_descriptor`]
//! beside Opus, and agreed only when both sides have it and it wraps the chosen
//! codec: a peer without it never sees its answer change, and RED is never taken
//! for the codec itself.

use std::io::Cursor;
use std::net::{IpAddr, SocketAddr};

use base64::Engine as _;
use dialtone_core::config::SrtpPolicy;
use dialtone_core::parts::CodecDescriptor;
use dialtone_core::{ErrorCode, VoiceError};

/// An SDES crypto suite.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum CryptoSuite {
    /// `AES_CM_128_HMAC_SHA1_80` (RFC 4568): 16-byte key, 14-byte salt.
    AesCm128HmacSha1_80,
    /// `AEAD_AES_128_GCM` (RFC 7714): 16-byte key, 12-byte salt.
    AeadAes128Gcm,
}

impl CryptoSuite {
    /// Suites in the order we offer them.
    pub const ALL: [CryptoSuite; 2] = [CryptoSuite::AesCm128HmacSha1_80, CryptoSuite::AeadAes128Gcm];

    /// The SDP name.
    pub fn sdp_name(self) -> &'static str {
        match self {
            CryptoSuite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            CryptoSuite::AeadAes128Gcm => "AEAD_AES_128_GCM",
        }
    }

    fn from_sdp_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.sdp_name() == name)
    }

    /// Master key length in bytes.
    pub fn key_len(self) -> usize {
        16
    }

    /// Master salt length in bytes.
    pub fn salt_len(self) -> usize {
        match self {
            CryptoSuite::AesCm128HmacSha1_80 => 14,
            CryptoSuite::AeadAes128Gcm => 12,
        }
    }
}

/// One `a=crypto` line: a tag, a suite and the master key followed by the salt.
#[derive(Clone, PartialEq, Eq)]
pub struct SdesKey {
    /// The line's tag.
    pub tag: u32,
    /// The suite.
    pub suite: CryptoSuite,
    /// Master key then master salt.
    pub key_salt: Vec<u8>,
}

impl std::fmt::Debug for SdesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never print key material
        f.debug_struct("SdesKey").field("tag", &self.tag).field("suite", &self.suite).finish_non_exhaustive()
    }
}

impl SdesKey {
    /// A fresh random key for `suite`.
    pub fn generate(tag: u32, suite: CryptoSuite) -> Result<Self, VoiceError> {
        let mut key_salt = vec![0u8; suite.key_len() + suite.salt_len()];
        let provider = rtc_crypto::default_provider().map_err(|e| {
            VoiceError::new(ErrorCode::ClientLocalDescFailed, format!("no crypto provider: {e}"))
        })?;
        provider
            .random()
            .fill(&mut key_salt)
            .map_err(|e| VoiceError::new(ErrorCode::ClientLocalDescFailed, format!("no randomness: {e}")))?;
        Ok(SdesKey { tag, suite, key_salt })
    }

    fn line(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.key_salt);
        format!("a=crypto:{} {} inline:{}", self.tag, self.suite.sdp_name(), b64)
    }

    fn parse(value: &str) -> Option<SdesKey> {
        // "<tag> <suite> inline:<key||salt>[|lifetime][|mki:len] [session params]"
        let mut parts = value.split_whitespace();
        let tag = parts.next()?.parse().ok()?;
        let suite = CryptoSuite::from_sdp_name(parts.next()?)?;
        let inline = parts.next()?.strip_prefix("inline:")?;
        let b64 = inline.split('|').next()?;
        let key_salt = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
        (key_salt.len() == suite.key_len() + suite.salt_len()).then_some(SdesKey { tag, suite, key_salt })
    }
}

/// A media direction.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum Direction {
    /// Both ways.
    #[default]
    SendRecv,
    /// We send only (we hold the call).
    SendOnly,
    /// We receive only (the peer holds the call).
    RecvOnly,
    /// Neither.
    Inactive,
}

impl Direction {
    fn attr(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction the other side sees: sendonly becomes recvonly.
    pub fn reversed(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }

    /// Whether this side sends.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether this side receives.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// What a side that wants `ours` answers to a peer that offered `theirs`.
    pub fn answer(theirs: Direction, ours: Direction) -> Direction {
        let send = ours.sends() && theirs.receives();
        let recv = ours.receives() && theirs.sends();
        match (send, recv) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }
}

/// A codec as one SDP describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SdpCodec {
    /// The payload type.
    pub pt: u8,
    /// The encoding name (`opus`, `PCMU`, ...).
    pub name: String,
    /// The RTP clock rate.
    pub clock_rate: u32,
    /// Channels in the rtpmap (2 for Opus, by RFC 7587).
    pub channels: u8,
    /// The fmtp parameters.
    pub fmtp: Option<String>,
}

impl SdpCodec {
    fn matches(&self, d: &CodecDescriptor) -> bool {
        self.name.eq_ignore_ascii_case(&d.name) && self.clock_rate == d.clock_rate
    }

    fn is_telephone_event(&self) -> bool {
        self.name.eq_ignore_ascii_case("telephone-event")
    }

    fn is_red(&self) -> bool {
        self.name.eq_ignore_ascii_case(RED)
    }

    /// Not an audio codec of its own (DTMF events, or redundancy around a codec).
    fn is_auxiliary(&self) -> bool {
        self.is_telephone_event() || self.is_red()
    }

    /// Whether this is RED wrapping only `primary`'s payload type (`fmtp` `P/P...`).
    fn is_red_for(&self, primary: &SdpCodec) -> bool {
        self.is_red()
            && self.clock_rate == primary.clock_rate
            && self.fmtp.as_deref().is_some_and(|f| {
                let p = primary.pt.to_string();
                f.trim().split('/').all(|x| x.trim() == p)
            })
    }
}

/// The RFC 2198 encoding name.
const RED: &str = "red";

/// The descriptor that asks for redundant audio (RFC 2198) around Opus in an offer or
/// an answer, where it stands beside the real codecs.
pub fn red_descriptor() -> CodecDescriptor {
    CodecDescriptor::new(RED, 48_000, 48_000, 2).with_payload_type(63)
}

/// What one side puts in its description.
#[derive(Clone, Debug)]
pub struct LocalDescription {
    /// Where it receives RTP (and muxed RTCP).
    pub addr: SocketAddr,
    /// Codecs in its order of preference.
    pub codecs: Vec<SdpCodec>,
    /// Its SDES keys (empty: plain RTP).
    pub crypto: Vec<SdesKey>,
    /// `RTP/SAVP` (true) or `RTP/AVP`.
    pub savp: bool,
    /// Its direction.
    pub direction: Direction,
    /// The packet time in milliseconds.
    pub ptime_ms: u32,
    /// The `o=` session id.
    pub session_id: u64,
    /// The `o=` version (incremented for each re-offer).
    pub version: u64,
}

impl LocalDescription {
    /// The SDP text.
    pub fn to_sdp(&self) -> String {
        let ip = self.addr.ip();
        let ipv = if ip.is_ipv4() { "IP4" } else { "IP6" };
        let pts: Vec<String> = self.codecs.iter().map(|c| c.pt.to_string()).collect();
        let proto = if self.savp { "RTP/SAVP" } else { "RTP/AVP" };
        let mut s = format!(
            "v=0\r\no=dialtone {} {} IN {ipv} {ip}\r\ns=dialtone\r\nc=IN {ipv} {ip}\r\nt=0 0\r\nm=audio {} {proto} {}\r\n",
            self.session_id,
            self.version,
            self.addr.port(),
            pts.join(" ")
        );
        for c in &self.codecs {
            if c.channels > 1 {
                s += &format!("a=rtpmap:{} {}/{}/{}\r\n", c.pt, c.name, c.clock_rate, c.channels);
            } else {
                s += &format!("a=rtpmap:{} {}/{}\r\n", c.pt, c.name, c.clock_rate);
            }
            if let Some(f) = &c.fmtp {
                s += &format!("a=fmtp:{} {f}\r\n", c.pt);
            }
        }
        s += &format!("a=ptime:{}\r\na=rtcp-mux\r\n", self.ptime_ms);
        for k in &self.crypto {
            s += &k.line();
            s += "\r\n";
        }
        s += &format!("a={}\r\n", self.direction.attr());
        s
    }
}

/// What the peer's description says.
#[derive(Clone, Debug)]
pub struct RemoteDescription {
    /// Where to send RTP.
    pub addr: SocketAddr,
    /// Its codecs in its order (telephone-event included).
    pub codecs: Vec<SdpCodec>,
    /// Its SDES keys.
    pub crypto: Vec<SdesKey>,
    /// Whether it used `RTP/SAVP`.
    pub savp: bool,
    /// Whether it multiplexes RTCP on the RTP port.
    pub rtcp_mux: bool,
    /// Its direction.
    pub direction: Direction,
    /// Its packet time, if it said.
    pub ptime_ms: Option<u32>,
}

fn bad(msg: impl Into<String>) -> VoiceError {
    VoiceError::new(ErrorCode::ClientRemoteDescFailed, msg)
}

/// The codec a static payload type stands for (RFC 3551), when an offer has no rtpmap.
fn static_codec(pt: u8) -> Option<SdpCodec> {
    let (name, clock) = match pt {
        0 => ("PCMU", 8000),
        8 => ("PCMA", 8000),
        9 => ("G722", 8000),
        _ => return None,
    };
    Some(SdpCodec { pt, name: name.into(), clock_rate: clock, channels: 1, fmtp: None })
}

/// Reads the first audio stream of a description.
pub fn parse(sdp: &str) -> Result<RemoteDescription, VoiceError> {
    let desc = rtc_sdp::description::session::SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes()))
        .map_err(|e| bad(format!("unreadable SDP: {e}")))?;
    let media = desc
        .media_descriptions
        .iter()
        .find(|m| m.media_name.media == "audio")
        .ok_or_else(|| bad("the SDP has no audio stream"))?;
    let proto = media.media_name.protos.join("/");
    let savp = match proto.as_str() {
        "RTP/AVP" => false,
        "RTP/SAVP" => true,
        other => return Err(bad(format!("unsupported transport {other}; expected RTP/AVP or RTP/SAVP"))),
    };
    let conn = media
        .connection_information
        .as_ref()
        .or(desc.connection_information.as_ref())
        .and_then(|c| c.address.as_ref())
        .ok_or_else(|| bad("the SDP has no connection address"))?;
    let ip: IpAddr =
        conn.address.parse().map_err(|_| bad(format!("bad connection address {:?}", conn.address)))?;
    let port = u16::try_from(media.media_name.port.value).map_err(|_| bad("bad media port"))?;

    let attrs = &media.attributes;
    let attr =
        |key: &'static str| attrs.iter().filter(move |a| a.key == key).filter_map(|a| a.value.as_deref());
    let mut codecs = Vec::new();
    for f in &media.media_name.formats {
        let pt: u8 = f.parse().map_err(|_| bad(format!("bad payload type {f:?}")))?;
        let rtpmap = attr("rtpmap").find_map(|v| v.strip_prefix(&format!("{pt} ")));
        let mut codec = match rtpmap {
            Some(map) => {
                let mut it = map.trim().split('/');
                let name = it.next().unwrap_or_default().to_owned();
                let clock_rate = it
                    .next()
                    .and_then(|c| c.parse().ok())
                    .ok_or_else(|| bad(format!("bad rtpmap {map:?}")))?;
                let channels = it.next().and_then(|c| c.parse().ok()).unwrap_or(1);
                SdpCodec { pt, name, clock_rate, channels, fmtp: None }
            }
            None => match static_codec(pt) {
                Some(c) => c,
                None => continue, // a dynamic type without rtpmap: unusable, skip it
            },
        };
        codec.fmtp = attr("fmtp").find_map(|v| v.strip_prefix(&format!("{pt} ")).map(str::to_owned));
        codecs.push(codec);
    }
    let direction = if media.attributes.iter().any(|a| a.key == "inactive") || port == 0 {
        Direction::Inactive
    } else if media.attributes.iter().any(|a| a.key == "sendonly") {
        Direction::SendOnly
    } else if media.attributes.iter().any(|a| a.key == "recvonly") {
        Direction::RecvOnly
    } else {
        Direction::SendRecv
    };
    Ok(RemoteDescription {
        addr: SocketAddr::new(ip, port),
        codecs,
        crypto: attr("crypto").filter_map(SdesKey::parse).collect(),
        savp,
        rtcp_mux: media.attributes.iter().any(|a| a.key == "rtcp-mux"),
        direction,
        ptime_ms: attr("ptime").find_map(|v| v.trim().parse().ok()),
    })
}

/// The outcome of a negotiation: what both sides agreed.
#[derive(Clone, Debug)]
pub struct Negotiated {
    /// Where to send.
    pub remote_addr: SocketAddr,
    /// The audio codec as the wire names it (payload type of the agreement).
    pub codec: SdpCodec,
    /// The telephone-event payload type at the codec's clock rate, if both have it.
    pub dtmf_pt: Option<u8>,
    /// The RED (RFC 2198) payload type, when both sides agreed to redundancy around
    /// the codec.
    pub red_pt: Option<u8>,
    /// Our key (protects what we send), when SRTP is on.
    pub local_key: Option<SdesKey>,
    /// The peer's key (unprotects what we receive).
    pub remote_key: Option<SdesKey>,
    /// Whether RTCP is muxed.
    pub rtcp_mux: bool,
    /// Our direction after the negotiation.
    pub direction: Direction,
}

/// Codecs for a local offer: ours in order, each with its static or a dynamic
/// payload type, then telephone-event at each clock rate.
pub fn offer_codecs(ours: &[CodecDescriptor]) -> Vec<SdpCodec> {
    let mut next_dynamic = 96u8;
    let mut dynamic = |taken: &[SdpCodec]| loop {
        let pt = next_dynamic;
        next_dynamic += 1;
        if !taken.iter().any(|c| c.pt == pt) {
            return pt;
        }
    };
    let mut out: Vec<SdpCodec> = Vec::new();
    let opus_pt = |out: &[SdpCodec]| out.iter().find(|c| c.name.eq_ignore_ascii_case("opus")).map(|c| c.pt);
    for d in ours.iter().filter(|d| !d.name.eq_ignore_ascii_case(RED)) {
        let pt = d.payload_type.unwrap_or_else(|| {
            if d.name.eq_ignore_ascii_case("opus") {
                111
            } else {
                dynamic(&out)
            }
        });
        let channels = if d.name.eq_ignore_ascii_case("opus") { 2 } else { d.channels };
        out.push(SdpCodec {
            pt,
            name: d.name.clone(),
            clock_rate: d.clock_rate,
            channels,
            fmtp: d.fmtp.clone(),
        });
    }
    // RED after the codecs, wrapping Opus, when asked for and Opus is here
    if let (Some(red), Some(primary)) =
        (ours.iter().find(|d| d.name.eq_ignore_ascii_case(RED)), opus_pt(&out))
    {
        out.push(SdpCodec {
            pt: red.payload_type.unwrap_or(63),
            name: RED.into(),
            clock_rate: red.clock_rate,
            channels: 2,
            fmtp: Some(format!("{primary}/{primary}")),
        });
    }
    let mut rates: Vec<u32> =
        ours.iter().filter(|d| !d.name.eq_ignore_ascii_case(RED)).map(|d| d.clock_rate).collect();
    rates.dedup();
    for rate in rates {
        if out.iter().any(|c| c.is_telephone_event() && c.clock_rate == rate) {
            continue;
        }
        let pt = if rate == 8000 {
            101
        } else if rate == 48_000 {
            110
        } else {
            dynamic(&out)
        };
        out.push(SdpCodec {
            pt,
            name: "telephone-event".into(),
            clock_rate: rate,
            channels: 1,
            fmtp: Some("0-16".into()),
        });
    }
    out
}

/// Builds an offer.
pub fn offer(
    addr: SocketAddr,
    ours: &[CodecDescriptor],
    srtp: SrtpPolicy,
    direction: Direction,
    session_id: u64,
    version: u64,
) -> Result<LocalDescription, VoiceError> {
    let crypto = if srtp == SrtpPolicy::Off {
        Vec::new()
    } else {
        CryptoSuite::ALL
            .iter()
            .zip(1..)
            .map(|(&s, tag)| SdesKey::generate(tag, s))
            .collect::<Result<_, _>>()?
    };
    Ok(LocalDescription {
        addr,
        codecs: offer_codecs(ours),
        crypto,
        savp: srtp == SrtpPolicy::Required,
        direction,
        ptime_ms: 20,
        session_id,
        version,
    })
}

fn pick_codec(offered: &[SdpCodec], ours: &[CodecDescriptor]) -> Result<(SdpCodec, Option<u8>), VoiceError> {
    let codec = offered
        .iter()
        .filter(|c| !c.is_auxiliary())
        .find(|c| ours.iter().any(|d| c.matches(d)))
        .cloned()
        .ok_or_else(|| {
            let theirs: Vec<&str> =
                offered.iter().filter(|c| !c.is_auxiliary()).map(|c| c.name.as_str()).collect();
            let mine: Vec<&str> =
                ours.iter().filter(|d| !d.name.eq_ignore_ascii_case(RED)).map(|d| d.name.as_str()).collect();
            VoiceError::new(
                ErrorCode::NoSupportedCodec,
                format!("no codec in common: the peer offers {theirs:?}, this side supports {mine:?}"),
            )
        })?;
    let dtmf =
        offered.iter().find(|c| c.is_telephone_event() && c.clock_rate == codec.clock_rate).map(|c| c.pt);
    Ok((codec, dtmf))
}

/// Answers an offer: picks the codec and the crypto suite, and says what was agreed.
pub fn answer(
    offer: &RemoteDescription,
    addr: SocketAddr,
    ours: &[CodecDescriptor],
    srtp: SrtpPolicy,
    want: Direction,
    session_id: u64,
) -> Result<(LocalDescription, Negotiated), VoiceError> {
    let (codec, dtmf_pt) = pick_codec(&offer.codecs, ours)?;
    let (local_key, remote_key) = match (srtp, offer.crypto.first()) {
        (SrtpPolicy::Off, _) if offer.savp => return Err(bad("the peer requires SRTP and SRTP is off here")),
        (SrtpPolicy::Off, _) => (None, None),
        (_, Some(theirs)) => (Some(SdesKey::generate(theirs.tag, theirs.suite)?), Some(theirs.clone())),
        (SrtpPolicy::Required, None) => {
            return Err(bad("the offer has no usable SDES key and SRTP is required"))
        }
        (_, None) => (None, None), // optional SRTP: plain RTP for a peer without keys
    };
    let mut codecs = vec![codec.clone()];
    // redundancy when we want it and the offer wraps the chosen codec in it
    let wants_red = ours.iter().any(|d| d.name.eq_ignore_ascii_case(RED));
    let red = offer.codecs.iter().find(|c| wants_red && c.is_red_for(&codec)).cloned();
    let red_pt = red.as_ref().map(|r| r.pt);
    codecs.extend(red);
    if let Some(pt) = dtmf_pt {
        codecs.extend(offer.codecs.iter().filter(|c| c.pt == pt).cloned());
    }
    let direction = Direction::answer(offer.direction, want);
    let local = LocalDescription {
        addr,
        codecs,
        crypto: local_key.iter().cloned().collect(),
        savp: offer.savp,
        direction,
        ptime_ms: offer.ptime_ms.unwrap_or(20),
        session_id,
        version: 1,
    };
    let negotiated = Negotiated {
        remote_addr: offer.addr,
        codec,
        dtmf_pt,
        red_pt,
        local_key,
        remote_key,
        rtcp_mux: offer.rtcp_mux,
        direction,
    };
    Ok((local, negotiated))
}

/// Applies the peer's answer to our offer.
pub fn apply_answer(offer: &LocalDescription, answer: &RemoteDescription) -> Result<Negotiated, VoiceError> {
    let codec = answer
        .codecs
        .iter()
        .find(|c| !c.is_auxiliary())
        .ok_or_else(|| VoiceError::new(ErrorCode::NoSupportedCodec, "the answer has no audio codec"))?;
    let ours = offer
        .codecs
        .iter()
        .find(|c| c.name.eq_ignore_ascii_case(&codec.name) && c.clock_rate == codec.clock_rate)
        .ok_or_else(|| bad(format!("the answer chose {}, which was not offered", codec.name)))?;
    let dtmf_pt = answer
        .codecs
        .iter()
        .find(|c| c.is_telephone_event() && c.clock_rate == codec.clock_rate)
        .map(|c| c.pt);
    // redundancy only if we offered it and the answer wraps the chosen codec in it
    let offered_red = offer.codecs.iter().any(SdpCodec::is_red);
    let red_pt = answer.codecs.iter().find(|c| offered_red && c.is_red_for(codec)).map(|c| c.pt);
    let (local_key, remote_key) = match answer.crypto.first() {
        Some(theirs) => {
            let mine = offer
                .crypto
                .iter()
                .find(|k| k.tag == theirs.tag && k.suite == theirs.suite)
                .ok_or_else(|| bad("the answer's crypto tag matches none of the offer's"))?;
            (Some(mine.clone()), Some(theirs.clone()))
        }
        None if offer.savp => return Err(bad("the answer has no SDES key for an RTP/SAVP offer")),
        None => (None, None),
    };
    Ok(Negotiated {
        remote_addr: answer.addr,
        // the answerer's payload type is what it sends; we send with the one it chose
        codec: SdpCodec { fmtp: codec.fmtp.clone().or_else(|| ours.fmtp.clone()), ..codec.clone() },
        dtmf_pt,
        red_pt,
        local_key,
        remote_key,
        rtcp_mux: answer.rtcp_mux,
        direction: Direction::answer(answer.direction, offer.direction),
    })
}

/// Negotiates two local sessions through real SDP text (offer, parse, answer, parse,
/// apply), as two sides of an in-process call do: returns what the offerer (at
/// `offerer`) and the answerer (at `answerer`) agreed. Both support `codecs`.
pub fn negotiate_in_memory(
    codecs: &[CodecDescriptor],
    srtp: SrtpPolicy,
    offerer: SocketAddr,
    answerer: SocketAddr,
) -> Result<(Negotiated, Negotiated), VoiceError> {
    let local = offer(offerer, codecs, srtp, Direction::SendRecv, 1, 1)?;
    let (reply, answered) = answer(&parse(&local.to_sdp())?, answerer, codecs, srtp, Direction::SendRecv, 2)?;
    let offered = apply_answer(&local, &parse(&reply.to_sdp())?)?;
    Ok((offered, answered))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opus() -> CodecDescriptor {
        CodecDescriptor::new("opus", 48_000, 48_000, 1).with_fmtp("minptime=10;useinbandfec=1")
    }
    fn pcmu() -> CodecDescriptor {
        CodecDescriptor::new("PCMU", 8000, 8000, 1).with_payload_type(0)
    }
    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn offer_text_reads_back() {
        let o =
            offer(addr(4000), &[opus(), pcmu()], SrtpPolicy::Required, Direction::SendRecv, 7, 1).unwrap();
        let text = o.to_sdp();
        assert!(text.contains("m=audio 4000 RTP/SAVP 111 0 110 101\r\n"), "{text}");
        assert!(text.contains("a=rtpmap:111 opus/48000/2\r\n"));
        assert!(text.contains("a=fmtp:111 minptime=10;useinbandfec=1\r\n"));
        assert!(text.contains("a=rtpmap:101 telephone-event/8000\r\n"));
        assert!(text.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"));
        assert!(text.contains("a=crypto:2 AEAD_AES_128_GCM inline:"));
        let r = parse(&text).unwrap();
        assert_eq!(r.addr, addr(4000));
        assert!(r.savp && r.rtcp_mux);
        assert_eq!(r.codecs.len(), 4);
        assert_eq!(r.codecs[0].channels, 2);
        assert_eq!(r.crypto.len(), 2);
        assert_eq!(r.crypto[0].key_salt, o.crypto[0].key_salt);
        assert_eq!(r.crypto[1].key_salt.len(), 28);
    }

    #[test]
    fn the_answerer_follows_the_callers_order() {
        let o =
            offer(addr(4000), &[pcmu(), opus()], SrtpPolicy::Required, Direction::SendRecv, 1, 1).unwrap();
        let remote = parse(&o.to_sdp()).unwrap();
        let (a, n) =
            answer(&remote, addr(5000), &[opus(), pcmu()], SrtpPolicy::Required, Direction::SendRecv, 2)
                .unwrap();
        assert_eq!(n.codec.name, "PCMU", "the caller preferred PCMU");
        assert_eq!(n.dtmf_pt, Some(101));
        assert_eq!(n.remote_key.as_ref().unwrap().key_salt, o.crypto[0].key_salt);
        let back = apply_answer(&o, &parse(&a.to_sdp()).unwrap()).unwrap();
        assert_eq!(back.codec.name, "PCMU");
        assert_eq!(back.remote_addr, addr(5000));
        assert_eq!(back.local_key.unwrap().key_salt, o.crypto[0].key_salt);
        assert_eq!(back.remote_key.unwrap().key_salt, n.local_key.unwrap().key_salt);
    }

    #[test]
    fn no_common_codec_is_53404() {
        let o = offer(addr(4000), &[opus()], SrtpPolicy::Off, Direction::SendRecv, 1, 1).unwrap();
        let e = answer(
            &parse(&o.to_sdp()).unwrap(),
            addr(5000),
            &[pcmu()],
            SrtpPolicy::Off,
            Direction::SendRecv,
            2,
        )
        .unwrap_err();
        assert_eq!(e.code(), 53404);
        assert!(e.message().contains("opus"), "{e}");
    }

    #[test]
    fn a_plain_offer_with_static_types_and_no_rtpmap() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 7078 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendonly\r\n";
        let r = parse(sdp).unwrap();
        assert_eq!(r.codecs[0].name, "PCMA");
        assert!(!r.rtcp_mux && !r.savp);
        let (_, n) = answer(&r, addr(5000), &[pcmu()], SrtpPolicy::Optional, Direction::SendRecv, 2).unwrap();
        assert_eq!(n.codec.pt, 0);
        assert!(n.local_key.is_none(), "no SRTP without a key in the offer");
        assert_eq!(n.direction, Direction::RecvOnly, "the peer holds: we only receive");
        let e = answer(&r, addr(5000), &[pcmu()], SrtpPolicy::Required, Direction::SendRecv, 2).unwrap_err();
        assert_eq!(e.code(), 53402);
    }

    #[test]
    fn broken_descriptions_are_53402() {
        for sdp in [
            "",
            "v=0\r\n",
            "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=video 1 RTP/AVP 96\r\n",
            "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=audio 1 UDP/TLS/RTP/SAVPF 111\r\n",
            "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 1 RTP/AVP 0\r\n",
            "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 nowhere\r\nt=0 0\r\nm=audio 1 RTP/AVP 0\r\n",
        ] {
            assert_eq!(parse(sdp).map(|_| ()).unwrap_err().code(), 53402, "{sdp:?}");
        }
    }

    #[test]
    fn hold_directions() {
        assert_eq!(Direction::answer(Direction::SendOnly, Direction::SendRecv), Direction::RecvOnly);
        assert_eq!(Direction::answer(Direction::SendRecv, Direction::SendOnly), Direction::SendOnly);
        assert_eq!(Direction::answer(Direction::Inactive, Direction::SendRecv), Direction::Inactive);
        assert_eq!(Direction::SendOnly.reversed(), Direction::RecvOnly);
    }

    #[test]
    fn malformed_crypto_lines_are_ignored() {
        assert!(SdesKey::parse("1 AES_CM_128_HMAC_SHA1_80 inline:short").is_none());
        assert!(SdesKey::parse("x AES_CM_128_HMAC_SHA1_80 inline:AAAA").is_none());
        assert!(SdesKey::parse("1 F8_128_HMAC_SHA1_80 inline:AAAA").is_none());
        let k = SdesKey::generate(3, CryptoSuite::AesCm128HmacSha1_80).unwrap();
        let line = k.line();
        let parsed = SdesKey::parse(line.strip_prefix("a=crypto:").unwrap()).unwrap();
        assert_eq!(parsed, k);
        assert!(!format!("{k:?}").contains(&format!("{:?}", k.key_salt)), "keys are never printed");
    }

    fn with_red(mut codecs: Vec<CodecDescriptor>) -> Vec<CodecDescriptor> {
        codecs.push(red_descriptor());
        codecs
    }

    #[test]
    fn red_is_offered_around_opus_and_agreed_when_both_have_it() {
        let ours = with_red(vec![opus(), pcmu()]);
        let o = offer(addr(4000), &ours, SrtpPolicy::Required, Direction::SendRecv, 7, 1).unwrap();
        let text = o.to_sdp();
        assert!(text.contains("m=audio 4000 RTP/SAVP 111 0 63 110 101\r\n"), "{text}");
        assert!(text.contains("a=rtpmap:63 red/48000/2\r\na=fmtp:63 111/111\r\n"), "{text}");
        let (reply, answered) =
            answer(&parse(&text).unwrap(), addr(5000), &ours, SrtpPolicy::Required, Direction::SendRecv, 8)
                .unwrap();
        assert_eq!((answered.codec.name.as_str(), answered.red_pt), ("opus", Some(63)));
        let reply_text = reply.to_sdp();
        assert!(reply_text.contains("a=rtpmap:63 red/48000/2"), "{reply_text}");
        let offered = apply_answer(&o, &parse(&reply_text).unwrap()).unwrap();
        assert_eq!((offered.codec.name.as_str(), offered.red_pt), ("opus", Some(63)));
    }

    #[test]
    fn a_peer_without_red_gets_plain_opus_either_way() {
        // we offer RED, the peer does not know it: its answer has none, so neither do we
        let o = offer(addr(4000), &with_red(vec![opus()]), SrtpPolicy::Required, Direction::SendRecv, 7, 1)
            .unwrap();
        let (reply, answered) = answer(
            &parse(&o.to_sdp()).unwrap(),
            addr(5000),
            &[opus()],
            SrtpPolicy::Required,
            Direction::SendRecv,
            8,
        )
        .unwrap();
        assert_eq!(answered.red_pt, None);
        assert!(!reply.to_sdp().contains("red/"));
        assert_eq!(apply_answer(&o, &parse(&reply.to_sdp()).unwrap()).unwrap().red_pt, None);
        // the peer offers RED, we are configured without it
        let o = offer(addr(4000), &with_red(vec![opus()]), SrtpPolicy::Required, Direction::SendRecv, 7, 1)
            .unwrap();
        let (_, answered) = answer(
            &parse(&o.to_sdp()).unwrap(),
            addr(5000),
            &[opus()],
            SrtpPolicy::Required,
            Direction::SendRecv,
            8,
        )
        .unwrap();
        assert_eq!(answered.red_pt, None);
        // we offer no RED and an answer names it anyway: not used
        let o = offer(addr(4000), &[opus()], SrtpPolicy::Required, Direction::SendRecv, 7, 1).unwrap();
        let mut text = o.to_sdp();
        assert!(!text.contains("red/"));
        text = text
            .replace("111 110", "111 63 110")
            .replace("a=ptime", "a=rtpmap:63 red/48000/2\r\na=fmtp:63 111/111\r\na=ptime");
        let r = parse(&text).unwrap();
        let forged = apply_answer(&o, &r).unwrap();
        assert_eq!(forged.red_pt, None);
    }

    #[test]
    fn red_is_never_taken_for_the_codec_and_must_wrap_the_chosen_one() {
        // an offer listing RED first, then Opus: the codec is Opus
        let text = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
            m=audio 4000 RTP/AVP 63 111\r\na=rtpmap:63 red/48000/2\r\na=fmtp:63 111/111\r\n\
            a=rtpmap:111 opus/48000/2\r\n";
        let (_, n) = answer(
            &parse(text).unwrap(),
            addr(5000),
            &with_red(vec![opus()]),
            SrtpPolicy::Optional,
            Direction::SendRecv,
            2,
        )
        .unwrap();
        assert_eq!((n.codec.name.as_str(), n.red_pt), ("opus", Some(63)));
        // RED wrapping another payload type (or mixing two) is not agreed
        for fmtp in ["0/0", "111/0"] {
            let other = text.replace("a=fmtp:63 111/111", &format!("a=fmtp:63 {fmtp}"));
            let (_, n) = answer(
                &parse(&other).unwrap(),
                addr(5000),
                &with_red(vec![opus()]),
                SrtpPolicy::Optional,
                Direction::SendRecv,
                2,
            )
            .unwrap();
            assert_eq!(n.red_pt, None, "{fmtp}");
        }
        // an offer of RED alone has no codec in common
        let only_red = text.replace("m=audio 4000 RTP/AVP 63 111", "m=audio 4000 RTP/AVP 63");
        let e = answer(
            &parse(&only_red).unwrap(),
            addr(5000),
            &with_red(vec![opus()]),
            SrtpPolicy::Optional,
            Direction::SendRecv,
            2,
        )
        .err();
        assert_eq!(e.map(|e| e.code()), Some(53404));
    }
}

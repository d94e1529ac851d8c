//! Redundant audio data (RFC 2198): one RTP payload carrying the current frame and
//! copies of earlier ones, so that a lost packet's frame comes with the next packet.
//!
//! A payload is a list of block headers, then the blocks in the same order. A header
//! for a redundant block is four bytes: F=1, the block's payload type (7 bits), its
//! timestamp offset back from the packet's timestamp (14 bits) and its length (10
//! bits). The last header, for the primary block, is one byte: F=0 and the payload
//! type. The oldest block comes first.

/// One block of a RED payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block<'a> {
    /// The block's payload type.
    pub pt: u8,
    /// How far before the packet's timestamp the block's timestamp is (0 for the
    /// primary).
    pub ts_offset: u32,
    /// The block's data.
    pub data: &'a [u8],
}

/// The most a timestamp offset can say (14 bits).
pub const MAX_TS_OFFSET: u32 = (1 << 14) - 1;
/// The most a redundant block can hold (10 bits).
pub const MAX_BLOCK_LEN: usize = (1 << 10) - 1;

/// Builds a RED payload into `out`: the redundant blocks (oldest first; any that
/// cannot be described, too far back or too long, are left out), then the primary.
pub fn build(redundant: &[Block<'_>], primary_pt: u8, primary: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let fits = |b: &&Block<'_>| b.ts_offset <= MAX_TS_OFFSET && b.data.len() <= MAX_BLOCK_LEN;
    for b in redundant.iter().filter(fits) {
        let len = b.data.len() as u32;
        out.push(0x80 | (b.pt & 0x7F));
        out.push((b.ts_offset >> 6) as u8);
        out.push((((b.ts_offset & 0x3F) << 2) | (len >> 8)) as u8);
        out.push(len as u8);
    }
    out.push(primary_pt & 0x7F);
    for b in redundant.iter().filter(fits) {
        out.extend_from_slice(b.data);
    }
    out.extend_from_slice(primary);
}

/// Why a RED payload could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedError {
    /// The headers or the blocks run past the end.
    Truncated,
    /// More blocks than a payload can sensibly hold.
    TooManyBlocks,
}

impl std::fmt::Display for RedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RedError::Truncated => "a RED payload whose blocks run past its end",
            RedError::TooManyBlocks => "a RED payload of more than 16 blocks",
        })
    }
}

/// The most blocks read from one payload.
const MAX_BLOCKS: usize = 16;

/// Reads a RED payload: its blocks, oldest first, the primary last.
pub fn parse(payload: &[u8]) -> Result<Vec<Block<'_>>, RedError> {
    let mut headers = Vec::new();
    let mut at = 0;
    loop {
        let first = *payload.get(at).ok_or(RedError::Truncated)?;
        if first & 0x80 == 0 {
            headers.push((first & 0x7F, 0u32, None));
            at += 1;
            break;
        }
        let h = payload.get(at..at + 4).ok_or(RedError::Truncated)?;
        let ts_offset = (u32::from(h[1]) << 6) | (u32::from(h[2]) >> 2);
        let len = ((usize::from(h[2]) & 0x03) << 8) | usize::from(h[3]);
        headers.push((first & 0x7F, ts_offset, Some(len)));
        at += 4;
        if headers.len() > MAX_BLOCKS {
            return Err(RedError::TooManyBlocks);
        }
    }
    let mut blocks = Vec::with_capacity(headers.len());
    for (pt, ts_offset, len) in headers {
        let len = len.unwrap_or(payload.len().saturating_sub(at));
        let data = payload.get(at..at + len).ok_or(RedError::Truncated)?;
        at += len;
        blocks.push(Block { pt, ts_offset, data });
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_reads_back_as_built() {
        let (a, b, p) = ([1u8; 40], [2u8; 300], [3u8; 90]);
        let red = [Block { pt: 111, ts_offset: 1920, data: &a }, Block { pt: 111, ts_offset: 960, data: &b }];
        let mut out = Vec::new();
        build(&red, 111, &p, &mut out);
        assert_eq!(out.len(), 4 * 2 + 1 + 40 + 300 + 90);
        let blocks = parse(&out).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(blocks.len(), 3);
        assert_eq!(blocks[..2], red);
        assert_eq!(blocks[2], Block { pt: 111, ts_offset: 0, data: &p });
    }

    #[test]
    fn the_rfc_2198_example_header_is_read() {
        // RFC 2198 section 3: a redundant block of payload type 0 offset 160, 4
        // bytes long, then a primary of payload type 0
        let payload = [0x80, 0x02, 0x80, 0x04, 0x00, 9, 9, 9, 9, 7, 7];
        let blocks = parse(&payload).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(blocks[0], Block { pt: 0, ts_offset: 160, data: &[9, 9, 9, 9] });
        assert_eq!(blocks[1], Block { pt: 0, ts_offset: 0, data: &[7, 7] });
    }

    #[test]
    fn blocks_that_cannot_be_described_are_left_out() {
        let big = [0u8; 1100];
        let red =
            [Block { pt: 111, ts_offset: 20_000, data: &[1] }, Block { pt: 111, ts_offset: 960, data: &big }];
        let mut out = Vec::new();
        build(&red, 111, &[5], &mut out);
        assert_eq!(out, [111, 5], "a bare primary");
    }

    #[test]
    fn a_broken_payload_is_refused() {
        assert_eq!(parse(&[]), Err(RedError::Truncated));
        assert_eq!(parse(&[0x80, 0x00]), Err(RedError::Truncated));
        // a block longer than what follows
        assert_eq!(parse(&[0x80, 0x00, 0x01, 0x10, 0x00, 1, 2]), Err(RedError::Truncated));
        let many: Vec<u8> = (0..20).flat_map(|_| [0x80, 0, 0, 0]).chain([0]).collect();
        assert_eq!(parse(&many), Err(RedError::TooManyBlocks));
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_are_read_or_refused(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            if let Ok(blocks) = parse(&data) {
                let total: usize = blocks.iter().map(|b| b.data.len()).sum();
                proptest::prop_assert!(total <= data.len());
            }
        }
    }
}

//! The DLMS/COSEM TCP-UDP wrapper (IEC 62056-47, Green Book chapter 7.3.3.4): how DLMS APDUs travel over TCP
//! (port 4059) and UDP without HDLC.
//!
//! Every APDU is preceded by an 8-byte header, all fields big-endian `u16`:
//!
//! ```text
//! version (0x0001) | source wPort | destination wPort | length of the APDU
//! ```
//!
//! A wPort plays the role of the HDLC SAP: the client's wPort is its SAP (`0x10` public client, `0x01`
//! management logical device on the server side). This module owns that header: [`encode`], [`decode`],
//! a [`WrapperMatcher`] for the `Bus` (client side) and a [`WrapperDeframer`] for servers reading a
//! stream. It never does I/O and keeps no association state.
//!
//! Panic contract: [`decode`], [`WrapperMatcher`] and [`WrapperDeframer`] never panic on any byte sequence.
//! Buffers are bounded by the 16-bit length field (at most 8 + 65 535 bytes per frame).

use crate::{Check, ReplyMatcher};

/// The IANA-registered DLMS/COSEM port (TCP and UDP).
pub const DLMS_PORT: u16 = 4059;

/// The only wrapper version defined by IEC 62056-47.
pub const VERSION: u16 = 0x0001;

/// Length of the wrapper header.
pub const HEADER_LEN: usize = 8;

/// Largest APDU one wrapper frame can carry (16-bit length field).
pub const MAX_APDU_LEN: usize = u16::MAX as usize;

/// The 8-byte wrapper header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrapperHeader {
    /// Protocol version, `0x0001`.
    pub version: u16,
    /// wPort of the sender.
    pub source: u16,
    /// wPort of the receiver.
    pub destination: u16,
    /// Length of the APDU that follows the header.
    pub length: u16,
}

/// Why bytes are not a wrapper frame, or an APDU cannot be wrapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WrapperError {
    /// The version field is not `0x0001`: the stream is not (or no longer) aligned on a wrapper header.
    #[error("wrapper version 0x{0:04X} (expected 0x0001)")]
    BadVersion(u16),
    /// [`encode`]: the APDU does not fit the 16-bit length field.
    #[error("APDU of {0} bytes exceeds the wrapper's 65535")]
    TooLong(usize),
}

/// Wraps `apdu` for sending from wPort `source` to wPort `destination`.
pub fn encode(source: u16, destination: u16, apdu: &[u8]) -> Result<Vec<u8>, WrapperError> {
    let length = u16::try_from(apdu.len()).map_err(|_| WrapperError::TooLong(apdu.len()))?;
    let mut out = Vec::with_capacity(HEADER_LEN + apdu.len());
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&source.to_be_bytes());
    out.extend_from_slice(&destination.to_be_bytes());
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(apdu);
    Ok(out)
}

/// Parses the header at the start of `buf`, if 8 bytes are there. The version is checked.
fn header(buf: &[u8]) -> Result<Option<WrapperHeader>, WrapperError> {
    let Some(h) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let be = |i: usize| u16::from_be_bytes([h.get(i).copied().unwrap_or(0), h.get(i + 1).copied().unwrap_or(0)]);
    let header = WrapperHeader { version: be(0), source: be(2), destination: be(4), length: be(6) };
    if header.version != VERSION {
        return Err(WrapperError::BadVersion(header.version));
    }
    Ok(Some(header))
}

/// Decodes the wrapper frame at the start of `buf`.
///
/// `Ok(None)`: a plausible prefix, read more. `Ok(Some((header, apdu, used)))`: `buf[..used]` was the
/// frame. `Err(_)`: the first two bytes are not version 1; a stream reader drops one byte and retries.
/// As soon as two bytes are there the version is checked, so garbage is refused without waiting for 8.
pub fn decode(buf: &[u8]) -> Result<Option<(WrapperHeader, Vec<u8>, usize)>, WrapperError> {
    if let (Some(&a), Some(&b)) = (buf.first(), buf.get(1)) {
        let version = u16::from_be_bytes([a, b]);
        if version != VERSION {
            return Err(WrapperError::BadVersion(version));
        }
    }
    let Some(header) = header(buf)? else {
        return Ok(None);
    };
    let used = HEADER_LEN + usize::from(header.length);
    match buf.get(HEADER_LEN..used) {
        Some(apdu) => Ok(Some((header, apdu.to_vec(), used))),
        None => Ok(None),
    }
}

/// Recognises the reply to a wrapper request on the client side: a complete frame from the server's wPort
/// to the client's wPort is `Complete`; a complete frame between other wPorts is `Foreign` (skipped whole);
/// a bad version is `Corrupt` (the bus drains the connection and retries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrapperMatcher {
    /// The client's wPort (destination of the reply).
    pub client: u16,
    /// The server's wPort (source of the reply).
    pub server: u16,
}

impl ReplyMatcher for WrapperMatcher {
    fn check(&self, buf: &[u8]) -> Check {
        match decode(buf) {
            Ok(None) => Check::Incomplete,
            Ok(Some((h, _, used))) if h.source == self.server && h.destination == self.client => {
                Check::Complete { len: used }
            }
            Ok(Some((h, _, used))) => Check::Foreign {
                skip: used,
                what: format!(
                    "wrapper frame from wPort 0x{:04X} to 0x{:04X} (expected 0x{:04X} to 0x{:04X})",
                    h.source, h.destination, self.server, self.client
                ),
            },
            Err(e) => Check::Corrupt { reason: e.to_string() },
        }
    }
}

/// Splits a byte stream into wrapper frames (server side, or a client reading unsolicited pushes).
///
/// Resynchronises on garbage by dropping one byte at a time until a version-1 header appears, and counts
/// what it dropped ([`WrapperDeframer::discarded`]). The buffer never holds more than one maximal frame
/// plus the bytes of one [`WrapperDeframer::push`].
#[derive(Debug, Default)]
pub struct WrapperDeframer {
    buf: Vec<u8>,
    discarded: u64,
}

impl WrapperDeframer {
    /// An empty deframer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `bytes` and returns every complete frame now available, in order, as header and APDU.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<(WrapperHeader, Vec<u8>)> {
        self.buf.extend_from_slice(bytes);
        let mut frames = Vec::new();
        let mut at = 0usize;
        loop {
            let rest = self.buf.get(at..).unwrap_or_default();
            if rest.is_empty() {
                break;
            }
            match decode(rest) {
                Ok(Some((header, apdu, used))) => {
                    frames.push((header, apdu));
                    at += used;
                }
                Ok(None) => break,
                Err(_) => {
                    at += 1;
                    self.discarded = self.discarded.saturating_add(1);
                }
            }
        }
        self.buf.drain(..at.min(self.buf.len()));
        frames
    }

    /// Bytes dropped while resynchronising, since creation.
    pub fn discarded(&self) -> u64 {
        self.discarded
    }

    /// Bytes buffered that do not yet form a complete frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GET.request for the clock time (0-0:1.0.0*255 class 8 attribute 2) wrapped from the public client
    /// (wPort 0x0010) to the management logical device (wPort 0x0001).
    const GET_CLOCK: [u8; 21] = [
        0x00, 0x01, // version 1
        0x00, 0x10, // source wPort: public client
        0x00, 0x01, // destination wPort: management logical device
        0x00, 0x0D, // length 13
        0xC0, 0x01, 0xC1, 0x00, 0x08, 0x00, 0x00, 0x01, 0x00, 0x00, 0xFF, 0x02, 0x00, // GET.request normal
    ];

    #[test]
    fn encode_writes_the_header_fields_big_endian() {
        assert_eq!(encode(0x10, 0x01, &GET_CLOCK[8..]).unwrap(), GET_CLOCK);
    }

    #[test]
    fn decode_returns_header_apdu_and_length_used() {
        let mut buf = GET_CLOCK.to_vec();
        buf.extend_from_slice(&[0x00, 0x01]); // start of the next frame
        let (h, apdu, used) = decode(&buf).unwrap().unwrap();
        assert_eq!(h, WrapperHeader { version: 1, source: 0x10, destination: 0x01, length: 13 });
        assert_eq!(apdu, &GET_CLOCK[8..]);
        assert_eq!(used, 21);
    }

    #[test]
    fn every_proper_prefix_needs_more_bytes() {
        for n in 0..GET_CLOCK.len() {
            assert_eq!(decode(&GET_CLOCK[..n]), Ok(None), "prefix of {n} bytes");
        }
    }

    #[test]
    fn a_wrong_version_is_refused_after_two_bytes() {
        assert_eq!(decode(&[0x00, 0x02]), Err(WrapperError::BadVersion(2)));
        assert_eq!(decode(&[0x7E, 0xA0, 0x07]), Err(WrapperError::BadVersion(0x7EA0)));
    }

    #[test]
    fn an_apdu_longer_than_the_length_field_is_refused() {
        let apdu = vec![0u8; 65_536];
        assert_eq!(encode(1, 1, &apdu), Err(WrapperError::TooLong(65_536)));
        let apdu = vec![0u8; 65_535];
        let frame = encode(1, 1, &apdu).unwrap();
        assert_eq!(&frame[6..8], &[0xFF, 0xFF]);
        assert_eq!(decode(&frame).unwrap().unwrap().2, 65_543);
    }

    #[test]
    fn matcher_takes_the_servers_reply_and_skips_other_wports() {
        let m = WrapperMatcher { client: 0x10, server: 0x01 };
        let reply = encode(0x01, 0x10, &[0xC4, 0x01]).unwrap();
        let other = encode(0x01, 0x20, &[0xC4, 0x01]).unwrap();
        assert_eq!(m.check(&reply[..5]), Check::Incomplete);
        assert_eq!(m.check(&reply), Check::Complete { len: 10 });
        assert!(matches!(m.check(&other), Check::Foreign { skip: 10, .. }));
        // Our own request echoed back (source and destination swapped) is not the reply either.
        let echo = encode(0x10, 0x01, &[0xC0]).unwrap();
        assert!(matches!(m.check(&echo), Check::Foreign { skip: 9, .. }));
        assert!(matches!(m.check(&[0x12, 0x34]), Check::Corrupt { .. }));
    }

    #[test]
    fn deframer_resyncs_after_garbage_and_keeps_partial_frames() {
        let mut d = WrapperDeframer::new();
        let mut stream = vec![0xFF, 0x00, 0x07];
        stream.extend_from_slice(&GET_CLOCK);
        stream.extend_from_slice(&GET_CLOCK[..10]);
        let frames = d.push(&stream);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].1, &GET_CLOCK[8..]);
        assert_eq!(d.discarded(), 3);
        assert_eq!(d.pending(), 10);
        let frames = d.push(&GET_CLOCK[10..]);
        assert_eq!(frames.len(), 1);
        assert_eq!(d.pending(), 0);
    }
}

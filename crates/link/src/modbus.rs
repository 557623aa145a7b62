//! Modbus ADU framing: RTU (`addr | PDU | CRC-16/MODBUS little-endian`) and TCP MBAP
//! (`tid | pid=0 | len | unit | PDU`), and reply matchers for both.
//!
//! This module owns the application data unit around a PDU: the RTU address byte and CRC, the TCP MBAP
//! header, how long a frame is, and whether a frame answers a given request. It never interprets the PDU
//! beyond its function code and byte count (that is `ami_protocols::modbus`).
//!
//! Two directions:
//! - master side (a reply comes in): [`RtuReplyMatcher`] and [`TcpReplyMatcher`] implement
//!   [`ReplyMatcher`] for the `Bus`; [`rtu_reply_pdu`] and [`tcp_reply_pdu`] strip the ADU.
//! - slave side (a request comes in, the simulator): [`decode_rtu_request`] and [`decode_tcp_frame`] tell
//!   "need more bytes" (`Ok(None)`) from "bad bytes" (`Err`); the caller resynchronises by dropping a byte.
//!
//! References: Modbus Application Protocol V1.1b3 (PDU sizes, function codes), Modbus over Serial Line
//! V1.02 (RTU framing, CRC), Modbus Messaging on TCP/IP Implementation Guide V1.0b (MBAP).
//!
//! Panic contract: no function here panics on any input; lengths are checked before every access.

use ami_media::hex;

use crate::crc::crc16_modbus;
use crate::{Check, ReplyMatcher};

/// Longest Modbus PDU (function code + data): 256-byte serial ADU − address − CRC.
pub const MAX_PDU_LEN: usize = 253;
/// Longest RTU ADU: address + [`MAX_PDU_LEN`] + CRC.
pub const MAX_RTU_ADU_LEN: usize = 1 + MAX_PDU_LEN + 2;
/// Largest MBAP length field: unit id + [`MAX_PDU_LEN`].
// invariant: MAX_PDU_LEN is 253, so this compile-time cast is lossless.
const MAX_MBAP_LENGTH: u16 = 1 + MAX_PDU_LEN as u16;
/// MBAP header length including the unit id.
pub const MBAP_HEADER_LEN: usize = 7;
/// Longest TCP ADU: MBAP header + [`MAX_PDU_LEN`].
pub const MAX_TCP_ADU_LEN: usize = MBAP_HEADER_LEN + MAX_PDU_LEN;

/// Byte offsets of the ADU fields, written once.
mod field {
    use std::ops::Range;

    /// RTU: slave address.
    pub(super) const RTU_UNIT: usize = 0;
    /// RTU: function code.
    pub(super) const RTU_FUNCTION: usize = 1;
    /// RTU reply to functions 1–4: byte count.
    pub(super) const RTU_BYTE_COUNT: usize = 2;
    /// RTU request for functions 15/16: byte count after unit, function, address(2), quantity(2).
    pub(super) const RTU_REQ_BYTE_COUNT: usize = 6;
    /// MBAP: transaction id.
    pub(super) const TCP_TRANSACTION: Range<usize> = 0..2;
    /// MBAP: protocol id (0 = Modbus).
    pub(super) const TCP_PROTOCOL: Range<usize> = 2..4;
    /// MBAP: number of following bytes (unit + PDU).
    pub(super) const TCP_LENGTH: Range<usize> = 4..6;
    /// MBAP: unit id.
    pub(super) const TCP_UNIT: usize = 6;
}

/// Bad bytes in a Modbus frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The CRC over the frame does not match the CRC it carries.
    #[error("CRC expected 0x{expected:04X}, got 0x{actual:04X}")]
    Crc {
        /// CRC computed over the received bytes.
        expected: u16,
        /// CRC the frame carried.
        actual: u16,
    },
    /// A function code whose frame length this codec cannot know.
    #[error("unknown function code 0x{0:02X}")]
    UnknownFunction(u8),
    /// A byte count that would make the frame longer than a Modbus ADU can be.
    #[error("byte count {0} is too large for a Modbus frame")]
    ByteCount(u8),
    /// MBAP protocol id other than 0.
    #[error("MBAP protocol id 0x{0:04X} (expected 0)")]
    ProtocolId(u16),
    /// MBAP length field outside 2..=254.
    #[error("MBAP length {0} (expected 2..=254)")]
    Length(u16),
}

/// Builds an RTU ADU: `unit | pdu | CRC` (CRC low byte first).
///
/// `pdu` should be at most [`MAX_PDU_LEN`] bytes; a longer one is framed as given and peers reject it.
pub fn encode_rtu(unit: u8, pdu: &[u8]) -> Vec<u8> {
    let mut adu = Vec::with_capacity(pdu.len().saturating_add(3));
    adu.push(unit);
    adu.extend_from_slice(pdu);
    let crc = crc16_modbus(&adu);
    adu.extend_from_slice(&crc.to_le_bytes());
    adu
}

/// Builds a TCP ADU: MBAP header (`transaction`, protocol 0, length = 1 + pdu.len(), `unit`) and `pdu`.
///
/// `pdu` should be at most [`MAX_PDU_LEN`] bytes; the length field saturates at 0xFFFF beyond that.
pub fn encode_tcp(transaction: u16, unit: u8, pdu: &[u8]) -> Vec<u8> {
    let length = u16::try_from(pdu.len().saturating_add(1)).unwrap_or(u16::MAX);
    let mut adu = Vec::with_capacity(pdu.len().saturating_add(MBAP_HEADER_LEN));
    adu.extend_from_slice(&transaction.to_be_bytes());
    adu.extend_from_slice(&0u16.to_be_bytes());
    adu.extend_from_slice(&length.to_be_bytes());
    adu.push(unit);
    adu.extend_from_slice(pdu);
    adu
}

fn be16(buf: &[u8], at: std::ops::Range<usize>) -> Option<u16> {
    let b = buf.get(at)?;
    Some(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
}

/// Checks the CRC of `frame` (CRC in its last two bytes). `Err((expected, actual))` on mismatch.
fn crc_ok(frame: &[u8]) -> Result<(), (u16, u16)> {
    let split = frame.len().checked_sub(2).ok_or((0, 0))?;
    let (body, tail) = frame.split_at(split);
    let actual = u16::from_le_bytes([*tail.first().ok_or((0, 0))?, *tail.get(1).ok_or((0, 0))?]);
    let expected = crc16_modbus(body);
    if expected == actual {
        Ok(())
    } else {
        Err((expected, actual))
    }
}

/// What the first bytes of a buffer say about the length of an RTU frame.
#[derive(Debug, PartialEq, Eq)]
enum FrameLen {
    /// Not enough bytes to know the length yet.
    NeedMore,
    /// The frame is this long.
    Known(usize),
    /// Function code without a known reply/request layout.
    UnknownFunction(u8),
    /// Byte count too large for a Modbus frame.
    ByteCount(u8),
}

/// Length of an RTU *reply* starting at `buf[0]` (Modbus Application Protocol V1.1b3, 6.1–6.12).
fn rtu_reply_len(buf: &[u8]) -> FrameLen {
    let Some(&function) = buf.get(field::RTU_FUNCTION) else {
        return FrameLen::NeedMore;
    };
    match function {
        // Exception: unit, function | 0x80, exception code, CRC.
        f if f & 0x80 != 0 => FrameLen::Known(5),
        // Read coils / discrete inputs / holding / input registers: unit, function, byte count, data, CRC.
        0x01..=0x04 => match buf.get(field::RTU_BYTE_COUNT) {
            None => FrameLen::NeedMore,
            // The PDU is function + byte count + data.
            Some(&n) if 2 + usize::from(n) > MAX_PDU_LEN => FrameLen::ByteCount(n),
            Some(&n) => FrameLen::Known(3 + usize::from(n) + 2),
        },
        // Write single coil / register, write multiple coils / registers: echo of address + value/quantity.
        0x05 | 0x06 | 0x0F | 0x10 => FrameLen::Known(8),
        other => FrameLen::UnknownFunction(other),
    }
}

/// Length of an RTU *request* starting at `buf[0]`.
fn rtu_request_len(buf: &[u8]) -> FrameLen {
    let Some(&function) = buf.get(field::RTU_FUNCTION) else {
        return FrameLen::NeedMore;
    };
    match function {
        // unit, function, address(2), quantity or value(2), CRC.
        0x01..=0x06 => FrameLen::Known(8),
        // unit, function, address(2), quantity(2), byte count, values, CRC.
        0x0F | 0x10 => match buf.get(field::RTU_REQ_BYTE_COUNT) {
            None => FrameLen::NeedMore,
            Some(&n) if 6 + usize::from(n) > MAX_PDU_LEN => FrameLen::ByteCount(n),
            Some(&n) => FrameLen::Known(9 + usize::from(n)),
        },
        other => FrameLen::UnknownFunction(other),
    }
}

/// Recognises the RTU reply to one request: same unit, same function (or its exception), valid CRC.
///
/// RTU has no start marker, so bytes that do not start with the expected unit are examined: a complete
/// CRC-valid frame (a late reply of another meter) is skipped whole; anything else is skipped up to the
/// next occurrence of the expected unit byte. A reply from the right unit with the same function code
/// cannot be told from a late reply to an earlier request of the same shape: the `Bus` prevents that case
/// by draining the line after every failed attempt and discarding stale input before each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtuReplyMatcher {
    /// Unit (slave address) the request went to.
    pub unit: u8,
    /// Function code of the request.
    pub function: u8,
}

impl RtuReplyMatcher {
    /// Skips bytes up to the next occurrence of the expected unit byte (or all of them).
    fn garbage(&self, buf: &[u8]) -> Check {
        let skip = buf.iter().skip(1).position(|&b| b == self.unit).map_or(buf.len(), |p| p + 1);
        let shown = buf.get(..skip.min(16)).unwrap_or_default();
        Check::Foreign {
            skip,
            what: format!("{skip} garbage byte(s): {}{}", hex(shown), if skip > 16 { " …" } else { "" }),
        }
    }

    /// The buffer does not start with our unit: a foreign frame, or garbage.
    fn check_foreign(&self, buf: &[u8]) -> Check {
        match rtu_reply_len(buf) {
            FrameLen::NeedMore => Check::Incomplete,
            FrameLen::Known(len) => match buf.get(..len) {
                Some(frame) => {
                    if crc_ok(frame).is_ok() {
                        let unit = frame.first().copied().unwrap_or_default();
                        let function = frame.get(field::RTU_FUNCTION).copied().unwrap_or_default();
                        Check::Foreign {
                            skip: len,
                            what: format!("reply from unit {unit}, function 0x{function:02X} ({len} bytes)"),
                        }
                    } else {
                        self.garbage(buf)
                    }
                }
                // Possibly a foreign frame still arriving. If our own complete reply is already in the
                // buffer behind it, the leading bytes were garbage after all: skip to our reply.
                None => {
                    let own = buf.iter().enumerate().skip(1).filter(|(_, &b)| b == self.unit).find_map(|(at, _)| {
                        let rest = buf.get(at..)?;
                        matches!(self.check_own(rest), Check::Complete { .. }).then_some(at)
                    });
                    match own {
                        Some(at) => Check::Foreign {
                            skip: at,
                            what: format!("{at} garbage byte(s): {}", hex(buf.get(..at).unwrap_or_default())),
                        },
                        None => Check::Incomplete,
                    }
                }
            },
            FrameLen::UnknownFunction(_) | FrameLen::ByteCount(_) => self.garbage(buf),
        }
    }

    /// The buffer starts with our unit byte.
    fn check_own(&self, buf: &[u8]) -> Check {
        let len = match rtu_reply_len(buf) {
            FrameLen::NeedMore => return Check::Incomplete,
            FrameLen::Known(len) => len,
            FrameLen::UnknownFunction(f) => {
                return Check::Corrupt { reason: format!("unknown function code 0x{f:02X} in reply") }
            }
            FrameLen::ByteCount(n) => return Check::Corrupt { reason: format!("byte count {n} too large") },
        };
        let Some(frame) = buf.get(..len) else {
            return Check::Incomplete;
        };
        if let Err((expected, actual)) = crc_ok(frame) {
            return Check::Corrupt { reason: format!("CRC expected 0x{expected:04X}, got 0x{actual:04X}") };
        }
        let function = frame.get(field::RTU_FUNCTION).copied().unwrap_or_default();
        if function & 0x7F != self.function & 0x7F {
            return Check::Foreign {
                skip: len,
                what: format!(
                    "reply from unit {} to function 0x{function:02X}, expected 0x{:02X} ({len} bytes)",
                    self.unit, self.function
                ),
            };
        }
        Check::Complete { len }
    }
}

impl ReplyMatcher for RtuReplyMatcher {
    fn check(&self, buf: &[u8]) -> Check {
        match buf.get(field::RTU_UNIT) {
            None => Check::Incomplete,
            Some(&u) if u == self.unit => self.check_own(buf),
            Some(_) => self.check_foreign(buf),
        }
    }
}

/// An [`RtuReplyMatcher`] that also knows the exact length of the normal reply (it follows from the
/// request: `5 + byte count` for reads, 8 for writes).
///
/// RTU has no transaction id, so a late reply to an earlier read from the same unit with the same function
/// looks valid to [`RtuReplyMatcher`]. When its length differs from what this request must get back, it is
/// certainly not our reply: it is reported as [`Check::Foreign`] and the bus keeps waiting for the real one.
/// (A late reply of the very same length cannot be told apart on the wire; the bus's drain after every
/// timeout and the discard of stale input before every request are the protection there.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtuExactReplyMatcher {
    /// Unit and function checks, CRC, resynchronisation.
    pub base: RtuReplyMatcher,
    /// Length in bytes of the normal (non-exception) reply frame, unit and CRC included.
    pub reply_len: usize,
}

impl ReplyMatcher for RtuExactReplyMatcher {
    fn check(&self, buf: &[u8]) -> Check {
        match self.base.check(buf) {
            Check::Complete { len } => {
                let exception = buf.get(field::RTU_FUNCTION).is_some_and(|f| f & 0x80 != 0);
                if exception || len == self.reply_len {
                    Check::Complete { len }
                } else {
                    Check::Foreign {
                        skip: len,
                        what: format!(
                            "reply of {len} bytes from unit {} to function 0x{:02X}, expected {} bytes \
                             (a late reply to an earlier request)",
                            self.base.unit, self.base.function, self.reply_len
                        ),
                    }
                }
            }
            other => other,
        }
    }
}

/// The PDU of a complete RTU frame (without unit and CRC); `None` when shorter than unit + function + CRC.
pub fn rtu_reply_pdu(frame: &[u8]) -> Option<&[u8]> {
    if frame.len() < 4 {
        return None;
    }
    frame.get(1..frame.len().checked_sub(2)?)
}

/// Recognises the Modbus TCP reply to one request: same transaction id, unit and function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpReplyMatcher {
    /// Transaction id of the request.
    pub transaction: u16,
    /// Unit id of the request.
    pub unit: u8,
    /// Function code of the request.
    pub function: u8,
}

impl ReplyMatcher for TcpReplyMatcher {
    fn check(&self, buf: &[u8]) -> Check {
        let header = match tcp_header(buf) {
            Ok(Some(h)) => h,
            Ok(None) => return Check::Incomplete,
            Err(e) => return Check::Corrupt { reason: e.to_string() },
        };
        let Some(frame) = buf.get(..header.frame_len) else {
            return Check::Incomplete;
        };
        let function = frame.get(MBAP_HEADER_LEN).copied().unwrap_or_default();
        if header.transaction != self.transaction || header.unit != self.unit || function & 0x7F != self.function & 0x7F
        {
            return Check::Foreign {
                skip: header.frame_len,
                what: format!(
                    "reply with transaction {}, unit {}, function 0x{function:02X} (expected transaction {}, unit {}, \
                     function 0x{:02X})",
                    header.transaction, header.unit, self.transaction, self.unit, self.function
                ),
            };
        }
        Check::Complete { len: header.frame_len }
    }
}

/// The PDU of a complete Modbus TCP frame (after the MBAP header, as long as the length field says).
pub fn tcp_reply_pdu(frame: &[u8]) -> Option<&[u8]> {
    let header = tcp_header(frame).ok()??;
    frame.get(MBAP_HEADER_LEN..header.frame_len)
}

struct MbapHeader {
    transaction: u16,
    unit: u8,
    frame_len: usize,
}

/// Parses and checks the MBAP header. `Ok(None)`: fewer than 7 bytes.
fn tcp_header(buf: &[u8]) -> Result<Option<MbapHeader>, FrameError> {
    if buf.len() < MBAP_HEADER_LEN {
        return Ok(None);
    }
    let (Some(transaction), Some(protocol), Some(length), Some(&unit)) = (
        be16(buf, field::TCP_TRANSACTION),
        be16(buf, field::TCP_PROTOCOL),
        be16(buf, field::TCP_LENGTH),
        buf.get(field::TCP_UNIT),
    ) else {
        return Ok(None);
    };
    if protocol != 0 {
        return Err(FrameError::ProtocolId(protocol));
    }
    // Length counts the unit id and the PDU (at least a function code, at most MAX_PDU_LEN).
    if !(2..=MAX_MBAP_LENGTH).contains(&length) {
        return Err(FrameError::Length(length));
    }
    Ok(Some(MbapHeader { transaction, unit, frame_len: 6 + usize::from(length) }))
}

/// A request frame received by an RTU slave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtuRequest {
    /// Bytes the frame took from the buffer (unit + PDU + CRC).
    pub len: usize,
    /// Unit (slave address); 0 is broadcast.
    pub unit: u8,
    /// The PDU: function code and data.
    pub pdu: Vec<u8>,
}

/// Decodes one RTU request at the start of `buf`.
///
/// `Ok(None)`: need more bytes. `Err`: the bytes at the start cannot be a request (unknown function code,
/// impossible byte count, bad CRC); a stream reader drops one byte and tries again.
pub fn decode_rtu_request(buf: &[u8]) -> Result<Option<RtuRequest>, FrameError> {
    let len = match rtu_request_len(buf) {
        FrameLen::NeedMore => return Ok(None),
        FrameLen::Known(len) => len,
        FrameLen::UnknownFunction(f) => return Err(FrameError::UnknownFunction(f)),
        FrameLen::ByteCount(n) => return Err(FrameError::ByteCount(n)),
    };
    let Some(frame) = buf.get(..len) else {
        return Ok(None);
    };
    crc_ok(frame).map_err(|(expected, actual)| FrameError::Crc { expected, actual })?;
    let unit = frame.first().copied().unwrap_or_default();
    // A known request length is at least 8 (unit, function, 4 data bytes, CRC), but say so in code.
    let pdu = frame.get(1..len.saturating_sub(2)).unwrap_or_default().to_vec();
    Ok(Some(RtuRequest { len, unit, pdu }))
}

/// Stream deframer for RTU requests on the slave side (the simulator): buffers received bytes, yields
/// complete requests, and resynchronises on bad bytes by dropping one byte at a time (house style 5).
///
/// Dropped bytes are counted and logged once per resynchronisation, so line noise is visible. When the
/// bytes at the front claim a frame longer than what has arrived but a complete, CRC-valid request already
/// sits further on, the front is dropped as noise instead of waiting for bytes that never come. The buffer
/// never holds more than one maximal ADU of unparsed bytes plus what one `push` adds.
#[derive(Debug, Default)]
pub struct RtuRequestDeframer {
    buf: Vec<u8>,
    dropped: u64,
    /// Bytes dropped in the current resynchronisation run (first few kept for the log).
    run: Vec<u8>,
    run_len: usize,
}

impl RtuRequestDeframer {
    /// An empty deframer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received and not yet returned or dropped.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Bytes dropped while resynchronising, in total.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Forgets buffered bytes (a slave does this after an inter-frame silence, when a partial frame can no
    /// longer complete). Returns how many were dropped.
    pub fn clear(&mut self) -> usize {
        let n = self.buf.len();
        self.drop_front(n);
        self.end_run();
        n
    }

    /// The next complete request, or `None` when more bytes are needed.
    pub fn next_request(&mut self) -> Option<RtuRequest> {
        loop {
            if self.buf.is_empty() {
                self.end_run();
                return None;
            }
            match decode_rtu_request(&self.buf) {
                Ok(Some(req)) => {
                    self.buf.drain(..req.len.min(self.buf.len()));
                    self.end_run();
                    return Some(req);
                }
                Ok(None) => {
                    // Is a complete request already waiting behind a front that claims to be longer?
                    let later = (1..self.buf.len())
                        .find(|&at| matches!(self.buf.get(at..).map(decode_rtu_request), Some(Ok(Some(_)))));
                    match later {
                        Some(at) => self.drop_front(at),
                        None => return None,
                    }
                }
                Err(_) => self.drop_front(1),
            }
        }
    }

    fn drop_front(&mut self, n: usize) {
        let n = n.min(self.buf.len());
        for &b in self.buf.get(..n).unwrap_or_default() {
            if self.run.len() < 16 {
                self.run.push(b);
            }
        }
        self.run_len = self.run_len.saturating_add(n);
        self.dropped = self.dropped.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
        self.buf.drain(..n);
    }

    fn end_run(&mut self) {
        if self.run_len > 0 {
            tracing::debug!(
                bytes = self.run_len,
                first = %hex(&self.run),
                "modbus rtu: dropped bytes to resynchronise"
            );
            self.run.clear();
            self.run_len = 0;
        }
    }
}

/// A Modbus TCP frame (either direction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpFrame {
    /// Bytes the frame took from the buffer (MBAP header + PDU).
    pub len: usize,
    /// Transaction id.
    pub transaction: u16,
    /// Unit id.
    pub unit: u8,
    /// The PDU: function code and data.
    pub pdu: Vec<u8>,
}

/// Decodes one Modbus TCP frame at the start of `buf`.
///
/// `Ok(None)`: need more bytes. `Err`: protocol id not 0 or length field out of 2..=254 — TCP cannot
/// resynchronise inside a stream, so a server closes the connection.
pub fn decode_tcp_frame(buf: &[u8]) -> Result<Option<TcpFrame>, FrameError> {
    let Some(header) = tcp_header(buf)? else {
        return Ok(None);
    };
    let Some(pdu) = buf.get(MBAP_HEADER_LEN..header.frame_len) else {
        return Ok(None);
    };
    Ok(Some(TcpFrame { len: header.frame_len, transaction: header.transaction, unit: header.unit, pdu: pdu.to_vec() }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Read holding registers 0..10 from unit 1 (the common worked example).
    const READ_REQ: [u8; 8] = [
        0x01, // unit
        0x03, // function: read holding registers
        0x00, 0x00, // start address 0
        0x00, 0x0A, // quantity 10
        0xC5, 0xCD, // CRC 0xCDC5, low byte first
    ];

    /// Reply of unit 1 to a read of 2 holding registers: values 0x0002, 0x0005.
    fn read_reply(unit: u8, a: u16, b: u16) -> Vec<u8> {
        let [a0, a1] = a.to_be_bytes();
        let [b0, b1] = b.to_be_bytes();
        encode_rtu(unit, &[0x03, 0x04, a0, a1, b0, b1])
    }

    #[test]
    fn exact_matcher_rejects_a_late_reply_of_another_length() {
        // Late reply to "read 2 holding registers": 01 03 04 00 01 00 02 + CRC (9 bytes).
        let late = encode_rtu(1, &[0x03, 0x04, 0x00, 0x01, 0x00, 0x02]);
        // Our reply to "read 3 holding registers" (11 bytes).
        let ours = encode_rtu(1, &[0x03, 0x06, 0x00, 0x0A, 0x00, 0x0B, 0x00, 0x0C]);
        let m = RtuExactReplyMatcher { base: rtu(1, 3), reply_len: 11 };
        let mut buf = late.clone();
        buf.extend_from_slice(&ours);
        assert!(matches!(m.check(&buf), Check::Foreign { skip: 9, .. }));
        assert_eq!(m.check(&ours), Check::Complete { len: 11 });
        // An exception reply is always ours.
        let exc = encode_rtu(1, &[0x83, 0x02]);
        assert_eq!(m.check(&exc), Check::Complete { len: 5 });
    }

    fn rtu(unit: u8, function: u8) -> RtuReplyMatcher {
        RtuReplyMatcher { unit, function }
    }

    // ---- RTU emit/parse pairs ----

    #[test]
    fn emit_rtu_request() {
        assert_eq!(encode_rtu(0x01, &READ_REQ[1..6]), READ_REQ);
    }

    #[test]
    fn parse_rtu_request() {
        let req = decode_rtu_request(&READ_REQ).unwrap().unwrap();
        assert_eq!(req, RtuRequest { len: 8, unit: 1, pdu: READ_REQ[1..6].to_vec() });
    }

    #[test]
    fn parse_rtu_write_multiple_request() {
        let frame = encode_rtu(
            0x11, // unit 17
            &[
                0x10, // function: write multiple registers
                0x00, 0x01, // start address 1
                0x00, 0x02, // quantity 2
                0x04, // byte count
                0x00, 0x0A, 0x01, 0x02, // values 0x000A, 0x0102
            ],
        );
        assert_eq!(frame.len(), 13);
        // One byte short: need more, not an error.
        assert_eq!(decode_rtu_request(&frame[..12]), Ok(None));
        // Trailing bytes of the next frame are left alone.
        let mut two = frame.clone();
        two.extend_from_slice(&READ_REQ);
        let req = decode_rtu_request(&two).unwrap().unwrap();
        assert_eq!((req.len, req.unit, req.pdu.len()), (13, 0x11, 10));
    }

    #[test]
    fn rtu_request_errors_are_typed() {
        let mut bad = READ_REQ;
        bad[7] ^= 0xFF;
        assert_eq!(decode_rtu_request(&bad), Err(FrameError::Crc { expected: 0xCDC5, actual: 0x32C5 }));
        assert_eq!(decode_rtu_request(&[0x01, 0x2B, 0x0E]), Err(FrameError::UnknownFunction(0x2B)));
        assert_eq!(decode_rtu_request(&[0x01, 0x10, 0, 0, 0, 0x7D, 0xFA]), Err(FrameError::ByteCount(0xFA)));
        assert_eq!(decode_rtu_request(&[0x01]), Ok(None));
        assert_eq!(decode_rtu_request(&[]), Ok(None));
    }

    #[test]
    fn emit_rtu_reply() {
        assert_eq!(
            read_reply(1, 2, 5),
            [
                0x01, // unit
                0x03, // function
                0x04, // byte count
                0x00, 0x02, // register 0
                0x00, 0x05, // register 1
                0x9B, 0xF0, // CRC 0xF09B, low byte first
            ]
        );
    }

    #[test]
    fn parse_rtu_reply() {
        let frame = read_reply(1, 2, 5);
        let m = rtu(1, 3);
        for cut in 0..frame.len() {
            assert_eq!(m.check(&frame[..cut]), Check::Incomplete, "prefix of {cut} bytes");
        }
        assert_eq!(m.check(&frame), Check::Complete { len: 9 });
        assert_eq!(rtu_reply_pdu(&frame), Some(&[0x03, 0x04, 0x00, 0x02, 0x00, 0x05][..]));
    }

    #[test]
    fn rtu_reply_lengths_follow_the_function_code() {
        // Exception: unit, 0x83, code 02 (illegal data address), CRC.
        let exc = encode_rtu(1, &[0x83, 0x02]);
        assert_eq!(rtu(1, 3).check(&exc), Check::Complete { len: 5 });
        // Write single register echo.
        let echo = encode_rtu(1, &[0x06, 0x00, 0x01, 0x00, 0x03]);
        assert_eq!(rtu(1, 6).check(&echo), Check::Complete { len: 8 });
        // Write multiple coils echo.
        let echo = encode_rtu(1, &[0x0F, 0x00, 0x13, 0x00, 0x0A]);
        assert_eq!(rtu(1, 0x0F).check(&echo), Check::Complete { len: 8 });
        // Unknown function code from our unit: corrupt.
        assert!(matches!(rtu(1, 3).check(&[0x01, 0x2B, 0x00]), Check::Corrupt { .. }));
    }

    #[test]
    fn rtu_bad_crc_is_corrupt_with_both_values() {
        let mut frame = read_reply(1, 2, 5);
        frame[4] ^= 0x01;
        match rtu(1, 3).check(&frame) {
            Check::Corrupt { reason } => assert!(reason.starts_with("CRC expected 0x"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rtu_reply_of_another_function_is_foreign() {
        // Late reply to a read of input registers (0x04) while we wait for holding registers (0x03).
        let frame = encode_rtu(1, &[0x04, 0x02, 0x12, 0x34]);
        assert!(matches!(rtu(1, 3).check(&frame), Check::Foreign { skip: 7, .. }));
        // An exception to another function is foreign too.
        let exc = encode_rtu(1, &[0x84, 0x02]);
        assert!(matches!(rtu(1, 3).check(&exc), Check::Foreign { skip: 5, .. }));
    }

    #[test]
    fn rtu_reply_of_another_unit_is_skipped_whole() {
        // Unit 2's late reply contains the byte 0x01 inside; it must be skipped as one frame.
        let late = encode_rtu(2, &[0x03, 0x04, 0x00, 0x01, 0x01, 0x01]);
        let ours = read_reply(1, 7, 8);
        let m = rtu(1, 3);
        // While the foreign frame is still arriving: wait.
        assert_eq!(m.check(&late[..5]), Check::Incomplete);
        let mut buf = late.clone();
        buf.extend_from_slice(&ours);
        match m.check(&buf) {
            Check::Foreign { skip, what } => {
                assert_eq!(skip, late.len());
                assert!(what.contains("unit 2"), "{what}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(m.check(&buf[late.len()..]), Check::Complete { len: 9 });
    }

    #[test]
    fn rtu_leading_garbage_is_skipped_up_to_our_unit() {
        let m = rtu(1, 3);
        let ours = read_reply(1, 7, 8);
        // Two noise bytes of line turn-around, then the reply.
        let mut buf = vec![0x00, 0xFF];
        buf.extend_from_slice(&ours);
        assert!(matches!(m.check(&buf), Check::Foreign { skip: 2, .. }), "{:?}", m.check(&buf));
        // A single noise byte that looks like the start of a frame of another unit.
        let mut buf = vec![0x07];
        buf.extend_from_slice(&ours);
        assert!(matches!(m.check(&buf), Check::Foreign { skip: 1, .. }), "{:?}", m.check(&buf));
        // Garbage without our unit byte: all of it goes.
        assert!(matches!(m.check(&[0x00, 0x00, 0x00]), Check::Foreign { skip: 3, .. }));
    }

    #[test]
    fn rtu_garbage_claiming_a_long_frame_does_not_hide_our_reply() {
        let m = rtu(1, 3);
        // 0x09 0x03 0xFA: "unit 9 sends 250 bytes"; then our complete reply.
        let mut buf = vec![0x09, 0x03, 0xFA];
        buf.extend_from_slice(&read_reply(1, 7, 8));
        assert!(matches!(m.check(&buf), Check::Foreign { skip: 3, .. }), "{:?}", m.check(&buf));
    }

    #[test]
    fn deframer_yields_requests_and_resynchronises() {
        let mut d = RtuRequestDeframer::new();
        // Noise, a request split over two pushes, a damaged request, another request.
        d.push(&[0x00, 0xFF]);
        d.push(&READ_REQ[..5]);
        assert_eq!(d.next_request(), None);
        d.push(&READ_REQ[5..]);
        let mut damaged = READ_REQ;
        damaged[4] ^= 0x01;
        d.push(&damaged);
        let write = encode_rtu(0x11, &[0x06, 0x00, 0x01, 0x00, 0x03]);
        d.push(&write);
        assert_eq!(d.next_request().unwrap().pdu, READ_REQ[1..6].to_vec());
        assert_eq!(d.next_request().unwrap().unit, 0x11);
        assert_eq!(d.next_request(), None);
        assert_eq!(d.buffered(), 0);
        assert_eq!(d.dropped(), 2 + 8);
    }

    #[test]
    fn deframer_does_not_wait_behind_noise_that_claims_a_long_frame() {
        let mut d = RtuRequestDeframer::new();
        // "unit 9, write multiple registers, byte count 200" is noise; a whole request follows.
        d.push(&[0x09, 0x10, 0x00, 0x00, 0x00, 0x64, 0xC8]);
        d.push(&READ_REQ);
        assert_eq!(d.next_request().unwrap().len, 8);
        assert_eq!(d.dropped(), 7);
        // A partial frame forgotten after a silence.
        d.push(&READ_REQ[..3]);
        assert_eq!(d.next_request(), None);
        assert_eq!(d.clear(), 3);
    }

    // ---- TCP emit/parse pairs ----

    const TCP_REQ: [u8; 12] = [
        0x00, 0x2A, // transaction 42
        0x00, 0x00, // protocol 0 = Modbus
        0x00, 0x06, // length: unit + 5-byte PDU
        0x01, // unit
        0x03, // function: read holding registers
        0x00, 0x00, // start 0
        0x00, 0x0A, // quantity 10
    ];

    #[test]
    fn emit_tcp_request() {
        assert_eq!(encode_tcp(42, 1, &TCP_REQ[7..]), TCP_REQ);
    }

    #[test]
    fn parse_tcp_request() {
        let f = decode_tcp_frame(&TCP_REQ).unwrap().unwrap();
        assert_eq!(f, TcpFrame { len: 12, transaction: 42, unit: 1, pdu: TCP_REQ[7..].to_vec() });
        assert_eq!(decode_tcp_frame(&TCP_REQ[..11]), Ok(None));
        assert_eq!(decode_tcp_frame(&TCP_REQ[..3]), Ok(None));
    }

    #[test]
    fn tcp_header_errors() {
        let mut bad = TCP_REQ;
        bad[3] = 1; // protocol id 1
        assert_eq!(decode_tcp_frame(&bad), Err(FrameError::ProtocolId(1)));
        let mut bad = TCP_REQ;
        bad[5] = 1; // length 1: no room for a function code
        assert_eq!(decode_tcp_frame(&bad), Err(FrameError::Length(1)));
        let mut bad = TCP_REQ;
        bad[4] = 1; // length 0x0106
        assert_eq!(decode_tcp_frame(&bad), Err(FrameError::Length(0x0106)));
        assert!(matches!(TcpReplyMatcher { transaction: 42, unit: 1, function: 3 }.check(&bad), Check::Corrupt { .. }));
    }

    #[test]
    fn tcp_reply_matching() {
        let m = TcpReplyMatcher { transaction: 7, unit: 1, function: 3 };
        let reply = encode_tcp(7, 1, &[0x03, 0x02, 0x12, 0x34]);
        for cut in 0..reply.len() {
            assert_eq!(m.check(&reply[..cut]), Check::Incomplete);
        }
        assert_eq!(m.check(&reply), Check::Complete { len: 11 });
        assert_eq!(tcp_reply_pdu(&reply), Some(&[0x03, 0x02, 0x12, 0x34][..]));
        // Exception reply to our transaction.
        assert_eq!(m.check(&encode_tcp(7, 1, &[0x83, 0x02])), Check::Complete { len: 9 });
        // Late reply to transaction 6.
        let late = encode_tcp(6, 1, &[0x03, 0x02, 0x12, 0x34]);
        assert!(matches!(m.check(&late), Check::Foreign { skip: 11, .. }));
        // Reply from another unit.
        assert!(matches!(m.check(&encode_tcp(7, 2, &[0x03, 0x02, 0, 0])), Check::Foreign { skip: 11, .. }));
    }

    // ---- properties ----

    fn rtu_request_pdu() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            (1u8..=6, proptest::collection::vec(any::<u8>(), 4)).prop_map(|(f, d)| {
                let mut p = vec![f];
                p.extend(d);
                p
            }),
            (prop_oneof![Just(0x0Fu8), Just(0x10u8)], any::<u32>(), proptest::collection::vec(any::<u8>(), 0..=246))
                .prop_map(|(f, aq, data)| {
                    let mut p = vec![f];
                    p.extend_from_slice(&aq.to_be_bytes());
                    p.push(data.len() as u8);
                    p.extend(data);
                    p
                }),
        ]
    }

    fn rtu_reply_pdu_strategy() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            (1u8..=4, proptest::collection::vec(any::<u8>(), 0..=250)).prop_map(|(f, d)| {
                let mut p = vec![f, d.len() as u8];
                p.extend(d);
                p
            }),
            (prop_oneof![Just(5u8), Just(6), Just(15), Just(16)], any::<u32>()).prop_map(|(f, v)| {
                let mut p = vec![f];
                p.extend_from_slice(&v.to_be_bytes());
                p
            }),
            (1u8..=0x7F, any::<u8>()).prop_map(|(f, code)| vec![f | 0x80, code]),
        ]
    }

    proptest! {
        #[test]
        fn rtu_request_round_trip(unit in any::<u8>(), pdu in rtu_request_pdu()) {
            let frame = encode_rtu(unit, &pdu);
            let req = decode_rtu_request(&frame).unwrap().unwrap();
            prop_assert_eq!(req, RtuRequest { len: frame.len(), unit, pdu });
        }

        #[test]
        fn rtu_reply_round_trip(unit in any::<u8>(), pdu in rtu_reply_pdu_strategy()) {
            let frame = encode_rtu(unit, &pdu);
            let m = RtuReplyMatcher { unit, function: pdu[0] & 0x7F };
            prop_assert_eq!(m.check(&frame), Check::Complete { len: frame.len() });
            prop_assert_eq!(rtu_reply_pdu(&frame), Some(&pdu[..]));
        }

        #[test]
        fn tcp_round_trip(tid in any::<u16>(), unit in any::<u8>(), pdu in proptest::collection::vec(any::<u8>(), 1..=MAX_PDU_LEN)) {
            let frame = encode_tcp(tid, unit, &pdu);
            let f = decode_tcp_frame(&frame).unwrap().unwrap();
            prop_assert_eq!(&f, &TcpFrame { len: frame.len(), transaction: tid, unit, pdu: pdu.clone() });
            let m = TcpReplyMatcher { transaction: tid, unit, function: pdu[0] };
            prop_assert_eq!(m.check(&frame), Check::Complete { len: frame.len() });
            prop_assert_eq!(tcp_reply_pdu(&frame), Some(&pdu[..]));
        }

        #[test]
        fn random_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..300), unit in any::<u8>(), function in any::<u8>(), tid in any::<u16>()) {
            let _ = decode_rtu_request(&buf);
            let _ = decode_tcp_frame(&buf);
            let mut d = RtuRequestDeframer::new();
            d.push(&buf);
            while let Some(req) = d.next_request() {
                prop_assert!(req.len <= buf.len());
            }
            prop_assert!(d.buffered() < MAX_RTU_ADU_LEN);
            let _ = rtu_reply_pdu(&buf);
            let _ = tcp_reply_pdu(&buf);
            for check in [
                RtuReplyMatcher { unit, function }.check(&buf),
                TcpReplyMatcher { transaction: tid, unit, function }.check(&buf),
            ] {
                match check {
                    Check::Complete { len } => prop_assert!(len > 0 && len <= buf.len()),
                    // The bus relies on progress: a skip is never 0 and never past the buffer.
                    Check::Foreign { skip, .. } => prop_assert!(skip > 0 && skip <= buf.len()),
                    Check::Incomplete | Check::Corrupt { .. } => {}
                }
            }
        }

        #[test]
        fn rtu_reply_survives_noise_in_front(noise in proptest::collection::vec(any::<u8>(), 0..8), a in any::<u16>(), b in any::<u16>()) {
            // Whatever noise precedes our reply, repeatedly applying the matcher ends on our frame or
            // reports corruption; it never completes on something else.
            let ours = read_reply(1, a, b);
            let mut buf = noise.clone();
            buf.extend_from_slice(&ours);
            let m = rtu(1, 3);
            let mut guard = 0;
            loop {
                guard += 1;
                prop_assert!(guard < 100);
                match m.check(&buf) {
                    Check::Foreign { skip, .. } => { buf.drain(..skip); }
                    Check::Complete { len } => { prop_assert_eq!(&buf[..len], &ours[..]); break; }
                    Check::Corrupt { .. } | Check::Incomplete => break,
                }
            }
        }
    }
}

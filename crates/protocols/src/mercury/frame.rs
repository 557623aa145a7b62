//! Mercury frames: `address | body | CRC-16/MODBUS (low byte first)`, the one-byte status replies, the
//! addressing rules, the reply matcher for the link `Bus` and the timing table.
//!
//! Frames have no length field and no start marker: a reply's length follows from the request (the
//! matcher [`Expect`] is built from it), or it is the four-byte status reply `address | status | CRC`.
//!
//! References: Incotex, "Описание системы команд приборов учета электроэнергии Меркурий 203.2TD, 204,
//! 208, 230, 231, 234, 236, 238" (05.2023), sections on the frame format, network addresses, the status
//! byte and exchange timing; `../shared/protocols/mercury230.md`.
//!
//! Panic contract: no function here panics on any input; every access is checked.

use std::time::Duration;

use ami_link::crc::crc16_modbus;
use ami_link::{Check, ReplyMatcher};

/// Longest data part of a reply in long-answer mode (255 bytes), plus address and CRC.
pub const MAX_FRAME_LEN: usize = 255 + 3;
/// Length of a status reply: address, status, CRC (2).
pub const STATUS_FRAME_LEN: usize = 4;
/// Shortest frame: address, one byte, CRC.
pub const MIN_FRAME_LEN: usize = 4;

/// A network address (Incotex, "сетевой адрес").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address(pub u8);

impl Address {
    /// `0x00`: any meter, for a point-to-point line only; the meter answers with address `00`, and
    /// refuses writes (it stays silent).
    pub const ANY: Address = Address(0x00);
    /// `0xFE`: every meter on the line; nobody replies.
    pub const BROADCAST: Address = Address(0xFE);
    /// Lowest individual address.
    pub const MIN_INDIVIDUAL: u8 = 0x01;
    /// Highest individual address (240).
    pub const MAX_INDIVIDUAL: u8 = 0xF0;

    /// Whether this is an individual address `01`–`F0`.
    #[must_use]
    pub fn is_individual(self) -> bool {
        (Self::MIN_INDIVIDUAL..=Self::MAX_INDIVIDUAL).contains(&self.0)
    }

    /// Whether a request to this address gets a reply (everything but the broadcast address).
    #[must_use]
    pub fn expects_reply(self) -> bool {
        self != Self::BROADCAST
    }

    /// The factory convention: the last three digits of the serial number; when those exceed 239, the
    /// last two; 0 becomes 1. `from_serial(12_345_123)` is 123, `from_serial(12_345_678)` is 78.
    #[must_use]
    pub fn from_serial(serial: u32) -> Self {
        let three = serial % 1000;
        let a = if three > 239 { serial % 100 } else { three };
        // `a <= 239`, so the conversion cannot fail.
        Address(u8::try_from(a.max(1)).unwrap_or(1))
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0x{:02X}", self.0)
    }
}

/// The status byte of a one-byte reply (its low nibble; Incotex, "байт состояния обмена").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// 0: OK.
    Ok,
    /// 1: invalid command or parameter.
    InvalidCommand,
    /// 2: internal meter error.
    InternalError,
    /// 3: access level too low for the request.
    AccessDenied,
    /// 4: the clock has already been corrected today.
    ClockAlreadyCorrected,
    /// 5: the communication channel is not open.
    ChannelNotOpen,
    /// 6–15: not defined by the document.
    Unknown(u8),
}

impl Status {
    /// The status of a status byte (its low nibble).
    #[must_use]
    pub fn from_byte(byte: u8) -> Self {
        match byte & 0x0F {
            0 => Status::Ok,
            1 => Status::InvalidCommand,
            2 => Status::InternalError,
            3 => Status::AccessDenied,
            4 => Status::ClockAlreadyCorrected,
            5 => Status::ChannelNotOpen,
            other => Status::Unknown(other),
        }
    }

    /// The status code (0–15).
    #[must_use]
    pub fn code(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::InvalidCommand => 1,
            Status::InternalError => 2,
            Status::AccessDenied => 3,
            Status::ClockAlreadyCorrected => 4,
            Status::ChannelNotOpen => 5,
            Status::Unknown(c) => c & 0x0F,
        }
    }
}

impl From<u8> for Status {
    fn from(byte: u8) -> Self {
        Status::from_byte(byte)
    }
}

impl From<Status> for u8 {
    fn from(s: Status) -> u8 {
        s.code()
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            Status::Ok => "ok",
            Status::InvalidCommand => "invalid command or parameter",
            Status::InternalError => "internal meter error",
            Status::AccessDenied => "access level too low",
            Status::ClockAlreadyCorrected => "clock already corrected today",
            Status::ChannelNotOpen => "channel not open",
            Status::Unknown(_) => "unknown status",
        };
        write!(f, "status {} ({text})", self.code())
    }
}

/// Bad bytes in a Mercury frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer bytes than address, one byte and CRC.
    #[error("{0} byte(s) are too short for a Mercury frame (at least 4)")]
    TooShort(usize),
    /// More bytes than the longest reply.
    #[error("{0} bytes are longer than any Mercury frame (at most 258)")]
    TooLong(usize),
    /// The CRC over the frame does not match the CRC it carries.
    #[error("CRC expected 0x{expected:04X}, got 0x{actual:04X}")]
    Crc {
        /// CRC computed over the received bytes.
        expected: u16,
        /// CRC the frame carried.
        actual: u16,
    },
}

/// Bytes as `80 00 60 70` (for logs and error texts).
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&format!("{b:02X}"));
    }
    out
}

/// Frames `address | body` with its CRC (low byte first).
#[must_use]
pub fn encode(address: Address, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(body.len().saturating_add(3));
    frame.push(address.0);
    frame.extend_from_slice(body);
    let crc = crc16_modbus(&frame);
    frame.extend_from_slice(&crc.to_le_bytes());
    frame
}

/// Checks the CRC in the last two bytes of `frame`.
///
/// # Errors
/// [`FrameError::TooShort`] under 4 bytes, [`FrameError::Crc`] on a mismatch.
pub fn check_crc(frame: &[u8]) -> Result<(), FrameError> {
    if frame.len() < MIN_FRAME_LEN {
        return Err(FrameError::TooShort(frame.len()));
    }
    let split = frame.len() - 2;
    let (body, tail) = frame.split_at(split);
    let actual = u16::from_le_bytes([tail.first().copied().unwrap_or(0), tail.get(1).copied().unwrap_or(0)]);
    let expected = crc16_modbus(body);
    if expected == actual {
        Ok(())
    } else {
        Err(FrameError::Crc { expected, actual })
    }
}

/// A checked frame: the address and what lies between it and the CRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The address byte.
    pub address: Address,
    /// The bytes between address and CRC (a request's code and parameters, a reply's data or status).
    pub body: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Checks length and CRC of one complete frame.
    ///
    /// # Errors
    /// A frame shorter than 4 or longer than 258 bytes, or a bad CRC.
    pub fn parse(frame: &'a [u8]) -> Result<Self, FrameError> {
        if frame.len() > MAX_FRAME_LEN {
            return Err(FrameError::TooLong(frame.len()));
        }
        check_crc(frame)?;
        let address = Address(frame.first().copied().unwrap_or(0));
        let body = frame.get(1..frame.len() - 2).unwrap_or_default();
        Ok(Self { address, body })
    }

    /// The status, when this is a one-byte (status) reply.
    #[must_use]
    pub fn status(&self) -> Option<Status> {
        match self.body {
            [s] => Some(Status::from_byte(*s)),
            _ => None,
        }
    }
}

/// A status reply frame: `address | status | CRC`.
#[must_use]
pub fn status_reply(address: Address, status: Status) -> Vec<u8> {
    encode(address, &[status.code()])
}

/// Recognises the reply to one request: the request's address, then either exactly `data_len` data
/// bytes or one status byte, with a valid CRC.
///
/// Frames from another address (a late reply of another meter) are skipped whole when their CRC finds
/// their end, garbage up to the next occurrence of our address byte. A shorter CRC-valid frame from our
/// own address when a longer reply is expected is a late reply to an earlier request and is skipped too.
/// A status reply is only accepted when its status is 1–5 (a real refusal) or `data_len` is 1: a prefix
/// of a data reply that happens to carry a valid CRC (one chance in 65 536 per read) must not be taken
/// for it. When the expected length has arrived with a bad CRC and no later alignment completes, the
/// reply is corrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    /// Address the reply must carry (the request's address; `00` for requests to `00`).
    pub address: Address,
    /// Data bytes of a normal reply (1 for requests answered by a status byte only).
    pub data_len: usize,
}

impl Expect {
    /// Length of the normal reply frame.
    #[must_use]
    pub fn frame_len(&self) -> usize {
        self.data_len.saturating_add(3).clamp(MIN_FRAME_LEN, MAX_FRAME_LEN)
    }

    /// The buffer starts with our address.
    fn check_own(&self, buf: &[u8]) -> Check {
        let full = self.frame_len();
        if let Some(frame) = buf.get(..full) {
            if check_crc(frame).is_ok() {
                return Check::Complete { len: full };
            }
        }
        if let Some(status) = buf.get(..STATUS_FRAME_LEN) {
            let plausible = self.data_len <= 1 || matches!(status.get(1).map(|s| s & 0x0F), Some(1..=5));
            if plausible && check_crc(status).is_ok() {
                return Check::Complete { len: STATUS_FRAME_LEN };
            }
        }
        // A late, shorter reply to an earlier request from the same meter.
        let shorter = (STATUS_FRAME_LEN..full.min(buf.len() + 1))
            .find(|&len| buf.get(..len).is_some_and(|f| check_crc(f).is_ok()));
        if let Some(len) = shorter {
            return Check::Foreign {
                skip: len,
                what: format!("a {len}-byte frame from {} (expected {full} bytes: a late reply)", self.address),
            };
        }
        if buf.len() < full {
            return Check::Incomplete;
        }
        // Our full length is there with a bad CRC: perhaps we started inside other bytes and our reply is
        // further on.
        let later = buf.iter().enumerate().skip(1).filter(|(_, &b)| b == self.address.0).find_map(|(at, _)| {
            let rest = buf.get(at..)?;
            matches!(self.check_own_strict(rest), Check::Complete { .. }).then_some(at)
        });
        match later {
            Some(at) => Check::Foreign {
                skip: at,
                what: format!("{at} garbage byte(s): {}", hex(buf.get(..at).unwrap_or_default())),
            },
            None => {
                let got = buf.get(..full).unwrap_or_default();
                match check_crc(got) {
                    Err(e) => Check::Corrupt { reason: e.to_string() },
                    Ok(()) => Check::Corrupt { reason: "reply could not be delimited".into() },
                }
            }
        }
    }

    /// Only the complete forms of [`Expect::check_own`] (no recursion into alignment search).
    fn check_own_strict(&self, buf: &[u8]) -> Check {
        let full = self.frame_len();
        if buf.get(..full).is_some_and(|f| check_crc(f).is_ok()) {
            return Check::Complete { len: full };
        }
        Check::Incomplete
    }

    /// The buffer does not start with our address.
    fn check_foreign(&self, buf: &[u8]) -> Check {
        let upto = buf.len().min(MAX_FRAME_LEN);
        if let Some(len) = (MIN_FRAME_LEN..=upto).find(|&len| buf.get(..len).is_some_and(|f| check_crc(f).is_ok())) {
            let from = buf.first().copied().unwrap_or(0);
            return Check::Foreign { skip: len, what: format!("a {len}-byte frame from 0x{from:02X}") };
        }
        let skip = buf.iter().skip(1).position(|&b| b == self.address.0).map_or(buf.len(), |p| p + 1);
        let shown = buf.get(..skip.min(16)).unwrap_or_default();
        Check::Foreign {
            skip,
            what: format!("{skip} garbage byte(s): {}{}", hex(shown), if skip > 16 { " …" } else { "" }),
        }
    }
}

impl ReplyMatcher for Expect {
    fn check(&self, buf: &[u8]) -> Check {
        match buf.first() {
            None => Check::Incomplete,
            Some(&a) if a == self.address.0 => self.check_own(buf),
            Some(_) => self.check_foreign(buf),
        }
    }
}

/// Exchange timing at one baud rate (Incotex, section on exchange timing; `n` = the programmable
/// multiplier, default 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Silence between frames (end of a reply to the next request).
    pub gap: Duration,
    /// Longest time the meter takes before it starts replying.
    pub reply_wait: Duration,
    /// Baud rate the values are for.
    pub baud: u32,
}

/// `(lowest baud, gap ms, reply wait ms)` for n = 1, fastest first.
const TIMING_TABLE: [(u32, u64, u64); 8] = [
    (38_400, 2, 150),
    (19_200, 3, 150),
    (9_600, 5, 150),
    (4_800, 10, 180),
    (2_400, 20, 250),
    (1_200, 40, 400),
    (600, 80, 800),
    (300, 160, 1600),
];

impl Timing {
    /// Silence a long answer (more than 16 data bytes) needs.
    pub const LONG_ANSWER_GAP: Duration = Duration::from_millis(25);

    /// The table row for `baud` (the row of the fastest table rate not above it; below 300 the 300 row),
    /// scaled by `multiplier` (0 counts as 1).
    #[must_use]
    pub fn for_baud(baud: u32, multiplier: u8) -> Self {
        let n = u64::from(multiplier.max(1));
        let (_, gap, wait) =
            TIMING_TABLE.iter().copied().find(|(rate, _, _)| baud >= *rate).unwrap_or((300, 160, 1600));
        Self { gap: Duration::from_millis(gap * n), reply_wait: Duration::from_millis(wait * n), baud: baud.max(1) }
    }

    /// Time for `bytes` bytes on the wire at 11 bits a character (8 data, parity, start, stop: the
    /// longest framing).
    #[must_use]
    pub fn transfer(&self, bytes: usize) -> Duration {
        let bits = u64::try_from(bytes).unwrap_or(u64::MAX).saturating_mul(11);
        Duration::from_micros(bits.saturating_mul(1_000_000) / u64::from(self.baud.max(1)))
    }

    /// How long to wait for a reply of `reply_len` bytes after the request of `request_len` bytes has been
    /// written: the request's own transfer time (a UART still sending), the reply wait, the reply's
    /// transfer time.
    #[must_use]
    pub fn reply_timeout(&self, request_len: usize, reply_len: usize) -> Duration {
        self.transfer(request_len) + self.reply_wait + self.transfer(reply_len)
    }

    /// Silence to keep after a reply of `data_len` data bytes.
    #[must_use]
    pub fn gap_after(&self, data_len: usize) -> Duration {
        if data_len > 16 {
            self.gap.max(Self::LONG_ANSWER_GAP)
        } else {
            self.gap
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_channel_frame_vector() {
        // 80 address, 00 test channel, CRC 0x7060 low byte first.
        assert_eq!(encode(Address(0x80), &[0x00]), [0x80, 0x00, 0x60, 0x70]);
        let frame = Frame::parse(&[0x80, 0x00, 0x60, 0x70]).unwrap();
        assert_eq!(frame.address, Address(0x80));
        assert_eq!(frame.status(), Some(Status::Ok));
        assert_eq!(Frame::parse(&[0x80, 0x00, 0x60, 0x71]), Err(FrameError::Crc { expected: 0x7060, actual: 0x7160 }));
        assert_eq!(Frame::parse(&[0x80, 0x00, 0x60]), Err(FrameError::TooShort(3)));
    }

    #[test]
    fn statuses_are_lossless() {
        for b in 0..=0xFFu8 {
            let s = Status::from_byte(b);
            assert_eq!(s.code(), b & 0x0F);
            assert_eq!(Status::from_byte(s.code()), s);
        }
        assert_eq!(status_reply(Address(0x80), Status::ChannelNotOpen), [0x80, 0x05, 0xA0, 0x73]);
    }

    #[test]
    fn address_convention_from_serial() {
        assert_eq!(Address::from_serial(12_345_123), Address(123));
        assert_eq!(Address::from_serial(12_345_678), Address(78));
        assert_eq!(Address::from_serial(12_345_000), Address(1));
        assert_eq!(Address::from_serial(12_345_239), Address(239));
        assert_eq!(Address::from_serial(12_345_240), Address(40));
        assert!(Address(0xF0).is_individual() && !Address(0xF1).is_individual() && !Address::ANY.is_individual());
        assert!(!Address::BROADCAST.expects_reply());
    }

    #[test]
    fn matcher_takes_the_reply_status_replies_and_skips_foreign_frames() {
        let expect = Expect { address: Address(0x80), data_len: 3 };
        let reply = [0x80, 0x00, 0x87, 0x13, 0x0B, 0xD9];
        assert_eq!(expect.check(&reply[..3]), Check::Incomplete);
        assert_eq!(expect.check(&reply), Check::Complete { len: 6 });
        assert_eq!(expect.check(&[0x80, 0x05, 0xA0, 0x73]), Check::Complete { len: 4 });
        // A status 0 frame is not a refusal: with 3 data bytes expected it is a late reply.
        assert!(matches!(expect.check(&[0x80, 0x00, 0x60, 0x70, 0x80]), Check::Foreign { skip: 4, .. }));
        // Another meter's reply first: skipped whole.
        let mut buf = vec![0x00, 0x48, 0x87, 0x70, 0xE2, 0x26];
        buf.extend_from_slice(&reply);
        assert_eq!(expect.check(&buf), Check::Foreign { skip: 6, what: "a 6-byte frame from 0x00".into() });
        assert_eq!(expect.check(&buf[6..]), Check::Complete { len: 6 });
        // Garbage then our reply.
        let buf = [&[0x11, 0x22][..], &reply].concat();
        assert!(matches!(expect.check(&buf), Check::Foreign { skip: 2, .. }));
        // Damaged.
        let bad = [0x80, 0x00, 0x87, 0x13, 0x0B, 0xDA];
        assert!(matches!(expect.check(&bad), Check::Corrupt { .. }));
        // A late 4-byte status-0 frame before our 19-byte reply.
        let energy = Expect { address: Address(0x80), data_len: 16 };
        let mut late = vec![0x80, 0x00, 0x60, 0x70];
        late.extend(encode(Address(0x80), &[0u8; 16]));
        assert!(matches!(energy.check(&late[..4]), Check::Foreign { skip: 4, .. }));
        assert!(matches!(energy.check(&late), Check::Foreign { skip: 4, .. }));
        assert_eq!(energy.check(&late[4..]), Check::Complete { len: 19 });
    }

    #[test]
    fn timing_table_rows_and_multiplier() {
        let t = Timing::for_baud(9600, 1);
        assert_eq!((t.gap, t.reply_wait), (Duration::from_millis(5), Duration::from_millis(150)));
        let t = Timing::for_baud(115_200, 1);
        assert_eq!((t.gap, t.reply_wait), (Duration::from_millis(2), Duration::from_millis(150)));
        let t = Timing::for_baud(2400, 3);
        assert_eq!((t.gap, t.reply_wait), (Duration::from_millis(60), Duration::from_millis(750)));
        let t = Timing::for_baud(110, 0);
        assert_eq!((t.gap, t.reply_wait), (Duration::from_millis(160), Duration::from_millis(1600)));
        assert_eq!(Timing::for_baud(9600, 1).gap_after(19), Timing::LONG_ANSWER_GAP);
        // 19 bytes at 9600 baud, 11 bits each: 21.77 ms.
        assert_eq!(Timing::for_baud(9600, 1).transfer(19), Duration::from_micros(21_770));
    }
}

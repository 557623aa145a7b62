//! Wired M-Bus link layer (EN 13757-2): the single character `E5`, short, control and long frames, their
//! checksum, a checked deframer, and reply matchers for the [`Bus`](crate::Bus).
//!
//! This module owns the frame around the application data: start and stop characters, the repeated length
//! byte, the checksum, the control (C) and address (A) fields, and the CI byte as a code point. It never
//! interprets the user data after the CI field (that is `ami_protocols::mbus::app`), and it never decides
//! the FCB sequence or the secondary search (that is `ami_protocols::mbus::client`).
//!
//! Frame formats (EN 13757-2:2018, 5.4 "Telegram formats", after IEC 60870-5-1 format class FT 1.2;
//! clause numbers shift slightly between editions, the names given with them are the stable reference):
//!
//! | frame | bytes |
//! |---|---|
//! | single character | `E5` |
//! | short | `10 C A CS 16` |
//! | control | `68 03 03 68 C A CI CS 16` |
//! | long | `68 L L 68 C A CI data… CS 16` |
//!
//! `L` counts C, A, CI and the user data (3..=255, so at most [`MAX_DATA_LEN`] = 252 data bytes); `CS` is
//! the arithmetic sum of C through the last data byte modulo 256 (5.4). A long frame with no user data is
//! a control frame: [`Frame::decode`] returns it as [`Frame::Control`].
//!
//! Two directions:
//! - [`Frame::decode`] is the deframer for either side: `Ok(None)` means "need more bytes", `Err` means
//!   "bad bytes" (the caller drops one byte and retries, house style rule 5). It reports a bad length byte
//!   as soon as that byte is there, before waiting for the rest of an impossible frame.
//! - [`AckMatcher`] and [`RspUdMatcher`] implement [`ReplyMatcher`] for the master: the bus (or the sans-IO
//!   client) feeds them what it has received for one request.
//!
//! Panic contract: no function here panics on any input; every access is a checked `get`.

use ami_media::hex;

use crate::{Check, ReplyMatcher};

/// The single-character acknowledgement (EN 13757-2, 5.4): a slave's positive reply to SND_NKE, SND_UD
/// and a secondary-address selection.
pub const ACK: u8 = 0xE5;
/// Start character of a short frame.
pub const START_SHORT: u8 = 0x10;
/// Start character of a control or long frame (sent twice, around the repeated length byte).
pub const START_LONG: u8 = 0x68;
/// Stop character of every frame but the single character.
pub const STOP: u8 = 0x16;
/// Most user-data bytes a long frame carries: the length byte is at most 255 and counts C, A and CI too.
pub const MAX_DATA_LEN: usize = 252;
/// Smallest length byte: a control frame (C, A, CI).
pub const MIN_L: u8 = 3;
/// Length of a short frame.
pub const SHORT_LEN: usize = 5;
/// Bytes of a control or long frame outside the `L` counted ones: `68 L L 68` and `CS 16`.
pub const LONG_OVERHEAD: usize = 6;
/// Longest frame on the wire: a long frame with [`MAX_DATA_LEN`] data bytes.
pub const MAX_FRAME_LEN: usize = LONG_OVERHEAD + 255;

/// Byte offsets of the frame fields, written once.
mod field {
    /// Short frame: control field.
    pub(super) const SHORT_C: usize = 1;
    /// Short frame: address field.
    pub(super) const SHORT_A: usize = 2;
    /// Short frame: checksum.
    pub(super) const SHORT_CS: usize = 3;
    /// Short frame: stop character.
    pub(super) const SHORT_STOP: usize = 4;
    /// Long frame: length byte.
    pub(super) const L: usize = 1;
    /// Long frame: repeated length byte.
    pub(super) const L2: usize = 2;
    /// Long frame: second start character.
    pub(super) const START2: usize = 3;
    /// Long frame: control field (first byte under the checksum).
    pub(super) const LONG_C: usize = 4;
    /// Long frame: address field.
    pub(super) const LONG_A: usize = 5;
    /// Long frame: control information field.
    pub(super) const LONG_CI: usize = 6;
    /// Long frame: first user-data byte.
    pub(super) const LONG_DATA: usize = 7;
}

/// Control-field (C) values and bits (EN 13757-2, 5.5; the function codes of IEC 60870-5-2).
///
/// Master to slave the C field is `0 PRM=1 FCB FCV F3..F0`; slave to master it is `0 PRM=0 ACD DFC F3..F0`.
pub mod control {
    /// SND_NKE: link reset. The slave answers [`ACK`](super::ACK) and resets its FCB state, so the next
    /// request with FCV set must carry FCB = 1.
    pub const SND_NKE: u8 = 0x40;
    /// SND_UD: send user data (selection, application reset, settings), FCB = 0.
    pub const SND_UD: u8 = 0x53;
    /// SND_UD with FCB = 1.
    pub const SND_UD_FCB: u8 = 0x73;
    /// REQ_UD2: request class 2 data (the meter reading), FCB = 0.
    pub const REQ_UD2: u8 = 0x5B;
    /// REQ_UD2 with FCB = 1.
    pub const REQ_UD2_FCB: u8 = 0x7B;
    /// REQ_UD1: request class 1 data (alarms), FCB = 0.
    pub const REQ_UD1: u8 = 0x5A;
    /// RSP_UD: the slave's data response; ACD and DFC may be set on top.
    pub const RSP_UD: u8 = 0x08;
    /// Master: frame count bit, alternated for each new request, kept on a retry (5.5.2).
    pub const FCB: u8 = 0x20;
    /// Master: frame count bit valid (set in REQ_UD2 and SND_UD, clear in SND_NKE).
    pub const FCV: u8 = 0x10;
    /// Slave: access demand (class 1 data waiting).
    pub const ACD: u8 = 0x20;
    /// Slave: data flow control (the slave cannot take more data).
    pub const DFC: u8 = 0x10;
    /// Master: primary message bit (set in every master-to-slave frame).
    pub const PRM: u8 = 0x40;
    /// Mask of the function code and the PRM bit, i.e. C without FCB/FCV or ACD/DFC.
    pub const FUNCTION_MASK: u8 = 0x4F;

    /// REQ_UD2 with the given frame count bit: `0x5B` or `0x7B`.
    #[must_use]
    pub const fn req_ud2(fcb: bool) -> u8 {
        if fcb {
            REQ_UD2_FCB
        } else {
            REQ_UD2
        }
    }

    /// SND_UD with the given frame count bit: `0x53` or `0x73`.
    #[must_use]
    pub const fn snd_ud(fcb: bool) -> u8 {
        if fcb {
            SND_UD_FCB
        } else {
            SND_UD
        }
    }

    /// Whether `c` is an RSP_UD from a slave (any ACD/DFC bits).
    #[must_use]
    pub const fn is_rsp_ud(c: u8) -> bool {
        c & FUNCTION_MASK == RSP_UD
    }

    /// Whether `c` is a REQ_UD2 from the master (either FCB).
    #[must_use]
    pub const fn is_req_ud2(c: u8) -> bool {
        c & FUNCTION_MASK == REQ_UD2 & FUNCTION_MASK
    }

    /// The FCB bit of a master frame.
    #[must_use]
    pub const fn fcb(c: u8) -> bool {
        c & FCB != 0
    }
}

/// Address-field (A) values (EN 13757-2, 5.6). A namespace for the special addresses; addresses are
/// plain `u8` in [`Frame`].
#[derive(Debug)]
pub enum Address {}

impl Address {
    /// 0: the factory address of an unconfigured slave.
    pub const UNCONFIGURED: u8 = 0;
    /// 250: the highest primary address.
    pub const MAX_PRIMARY: u8 = 250;
    /// 253 (0xFD): the slave selected by secondary address (network layer, EN 13757-2, 5.6 / 13757-3).
    pub const SELECTED: u8 = 0xFD;
    /// 254 (0xFE): broadcast, every slave answers (only meaningful point-to-point; collides on a bus).
    pub const BROADCAST_REPLY: u8 = 0xFE;
    /// 255 (0xFF): broadcast, no slave answers.
    pub const BROADCAST_NO_REPLY: u8 = 0xFF;

    /// Whether `a` is a primary address (0..=250).
    #[must_use]
    pub const fn is_primary(a: u8) -> bool {
        a <= Self::MAX_PRIMARY
    }
}

/// Control information (CI) field code points (EN 13757-3, table 2; EN 13757-7). Lossless: unknown codes
/// are kept as [`Ci::Unknown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ci {
    /// 0x50 application reset (master to slave).
    ApplicationReset,
    /// 0x51 data send (master to slave, variable data).
    DataSend,
    /// 0x52 selection of a slave by secondary address (master to slave).
    Selection,
    /// 0x70 application error report (slave to master).
    ApplicationError,
    /// 0x72 variable data response with the long (12-byte) header, LSB first.
    ResponseLong,
    /// 0x73 fixed data structure response (EN 1434-3:1997 fixed format, LSB first).
    ResponseFixed,
    /// 0x76 variable data response with the long header, MSB first (rare).
    ResponseLongMsb,
    /// 0x77 fixed data structure response, MSB first.
    ResponseFixedMsb,
    /// 0x78 variable data response without a header.
    ResponseNoHeader,
    /// 0x7A variable data response with the short (4-byte) header.
    ResponseShort,
    /// Any other CI value.
    Unknown(u8),
}

impl From<u8> for Ci {
    fn from(v: u8) -> Self {
        match v {
            0x50 => Ci::ApplicationReset,
            0x51 => Ci::DataSend,
            0x52 => Ci::Selection,
            0x70 => Ci::ApplicationError,
            0x72 => Ci::ResponseLong,
            0x73 => Ci::ResponseFixed,
            0x76 => Ci::ResponseLongMsb,
            0x77 => Ci::ResponseFixedMsb,
            0x78 => Ci::ResponseNoHeader,
            0x7A => Ci::ResponseShort,
            other => Ci::Unknown(other),
        }
    }
}

impl From<Ci> for u8 {
    fn from(ci: Ci) -> Self {
        match ci {
            Ci::ApplicationReset => 0x50,
            Ci::DataSend => 0x51,
            Ci::Selection => 0x52,
            Ci::ApplicationError => 0x70,
            Ci::ResponseLong => 0x72,
            Ci::ResponseFixed => 0x73,
            Ci::ResponseLongMsb => 0x76,
            Ci::ResponseFixedMsb => 0x77,
            Ci::ResponseNoHeader => 0x78,
            Ci::ResponseShort => 0x7A,
            Ci::Unknown(v) => v,
        }
    }
}

/// Bad bytes in an M-Bus frame. Each variant carries what was received, for the operator's log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The first byte is none of `E5`, `10`, `68`.
    #[error("bad start byte 0x{0:02X} (expected E5, 10 or 68)")]
    BadStart(u8),
    /// The length byte of a control/long frame is below 3.
    #[error("length byte {0} too small (at least 3: C, A, CI)")]
    LengthTooSmall(u8),
    /// The two length bytes differ.
    #[error("length bytes differ: 0x{first:02X} and 0x{second:02X}")]
    LengthMismatch {
        /// First length byte.
        first: u8,
        /// Repeated length byte.
        second: u8,
    },
    /// The byte after the repeated length is not the second `68`.
    #[error("second start byte 0x{0:02X} (expected 68)")]
    BadSecondStart(u8),
    /// The checksum does not match.
    #[error("checksum expected 0x{expected:02X}, got 0x{actual:02X}")]
    Checksum {
        /// Sum computed over the received C..data bytes.
        expected: u8,
        /// Checksum the frame carried.
        actual: u8,
    },
    /// The stop byte is not `16`.
    #[error("stop byte 0x{0:02X} (expected 16)")]
    BadStop(u8),
    /// [`Frame::parse`]: the buffer ends inside the frame.
    #[error("truncated frame: {got} of {needed} bytes")]
    Truncated {
        /// Bytes the frame needs (or at least needs, when the length is not known yet).
        needed: usize,
        /// Bytes present.
        got: usize,
    },
    /// [`Frame::parse`]: bytes after the end of the frame.
    #[error("{0} byte(s) after the end of the frame")]
    TrailingBytes(usize),
    /// [`Frame::encode`]: more user data than a long frame can carry.
    #[error("{0} bytes of user data (a long frame carries at most 252)")]
    DataTooLong(usize),
}

/// One EN 13757-2 frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Frame {
    /// The single character `E5`.
    Ack,
    /// `10 C A CS 16`: SND_NKE, REQ_UD1/2.
    Short {
        /// Control field.
        c: u8,
        /// Address field.
        a: u8,
    },
    /// `68 03 03 68 C A CI CS 16`: a long frame without user data.
    Control {
        /// Control field.
        c: u8,
        /// Address field.
        a: u8,
        /// Control information field.
        ci: u8,
    },
    /// `68 L L 68 C A CI data CS 16` with 1..=252 data bytes. (Encoded with empty data it is a control frame
    /// on the wire and decodes as [`Frame::Control`].)
    Long {
        /// Control field.
        c: u8,
        /// Address field.
        a: u8,
        /// Control information field.
        ci: u8,
        /// User data after the CI field.
        data: Vec<u8>,
    },
}

/// The M-Bus checksum: arithmetic sum of `bytes` modulo 256 (EN 13757-2, 5.4; over C, A, CI and data of a
/// long frame, over C and A of a short frame).
#[must_use]
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b))
}

impl Frame {
    /// SND_NKE to `a` (short frame `10 40 A CS 16`).
    #[must_use]
    pub const fn snd_nke(a: u8) -> Self {
        Frame::Short { c: control::SND_NKE, a }
    }

    /// REQ_UD2 to `a` with the given frame count bit (short frame `10 5B/7B A CS 16`).
    #[must_use]
    pub const fn req_ud2(a: u8, fcb: bool) -> Self {
        Frame::Short { c: control::req_ud2(fcb), a }
    }

    /// The control field (`None` for the single character).
    #[must_use]
    pub fn c(&self) -> Option<u8> {
        match self {
            Frame::Ack => None,
            Frame::Short { c, .. } | Frame::Control { c, .. } | Frame::Long { c, .. } => Some(*c),
        }
    }

    /// The address field (`None` for the single character).
    #[must_use]
    pub fn a(&self) -> Option<u8> {
        match self {
            Frame::Ack => None,
            Frame::Short { a, .. } | Frame::Control { a, .. } | Frame::Long { a, .. } => Some(*a),
        }
    }

    /// The CI field of a control or long frame.
    #[must_use]
    pub fn ci(&self) -> Option<u8> {
        match self {
            Frame::Ack | Frame::Short { .. } => None,
            Frame::Control { ci, .. } | Frame::Long { ci, .. } => Some(*ci),
        }
    }

    /// The user data after the CI field (empty for every frame but [`Frame::Long`]).
    #[must_use]
    pub fn data(&self) -> &[u8] {
        match self {
            Frame::Long { data, .. } => data,
            _ => &[],
        }
    }

    /// Bytes the frame takes on the wire.
    #[must_use]
    pub fn buffer_len(&self) -> usize {
        match self {
            Frame::Ack => 1,
            Frame::Short { .. } => SHORT_LEN,
            Frame::Control { .. } => LONG_OVERHEAD + 3,
            Frame::Long { data, .. } => LONG_OVERHEAD + 3 + data.len(),
        }
    }

    /// Encodes the frame. Fails only for a [`Frame::Long`] with more than [`MAX_DATA_LEN`] data bytes.
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::with_capacity(self.buffer_len());
        match self {
            Frame::Ack => out.push(ACK),
            Frame::Short { c, a } => {
                out.extend_from_slice(&[START_SHORT, *c, *a, checksum(&[*c, *a]), STOP]);
            }
            Frame::Control { c, a, ci } => {
                out.extend_from_slice(&[START_LONG, MIN_L, MIN_L, START_LONG, *c, *a, *ci]);
                out.extend_from_slice(&[checksum(&[*c, *a, *ci]), STOP]);
            }
            Frame::Long { c, a, ci, data } => {
                let l = u8::try_from(data.len().saturating_add(3)).map_err(|_| FrameError::DataTooLong(data.len()))?;
                out.extend_from_slice(&[START_LONG, l, l, START_LONG, *c, *a, *ci]);
                out.extend_from_slice(data);
                let cs = checksum(data).wrapping_add(checksum(&[*c, *a, *ci]));
                out.extend_from_slice(&[cs, STOP]);
            }
        }
        Ok(out)
    }

    /// Decodes the frame at the start of `buf`.
    ///
    /// `Ok(None)`: `buf` is a plausible prefix of a frame, read more. `Ok(Some((frame, len)))`: the frame
    /// takes `buf[..len]`. `Err`: the bytes at the start cannot be a frame; drop one byte and try again to
    /// resynchronise. Header errors (length bytes, second start) are reported as soon as the header is in,
    /// without waiting for the body.
    pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
        let Some(&start) = buf.first() else {
            return Ok(None);
        };
        match start {
            ACK => Ok(Some((Frame::Ack, 1))),
            START_SHORT => Self::decode_short(buf),
            START_LONG => Self::decode_long(buf),
            other => Err(FrameError::BadStart(other)),
        }
    }

    /// Parses `buf` as exactly one frame: no missing and no trailing bytes.
    pub fn parse(buf: &[u8]) -> Result<Frame, FrameError> {
        match Self::decode(buf)? {
            None => Err(FrameError::Truncated { needed: needed_len(buf), got: buf.len() }),
            Some((frame, len)) if len == buf.len() => Ok(frame),
            Some((_, len)) => Err(FrameError::TrailingBytes(buf.len().saturating_sub(len))),
        }
    }

    fn decode_short(buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
        let (Some(&c), Some(&a), Some(&cs), Some(&stop)) =
            (buf.get(field::SHORT_C), buf.get(field::SHORT_A), buf.get(field::SHORT_CS), buf.get(field::SHORT_STOP))
        else {
            return Ok(None);
        };
        let expected = checksum(&[c, a]);
        if cs != expected {
            return Err(FrameError::Checksum { expected, actual: cs });
        }
        if stop != STOP {
            return Err(FrameError::BadStop(stop));
        }
        Ok(Some((Frame::Short { c, a }, SHORT_LEN)))
    }

    fn decode_long(buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
        let Some(&l) = buf.get(field::L) else {
            return Ok(None);
        };
        if l < MIN_L {
            return Err(FrameError::LengthTooSmall(l));
        }
        let Some(&l2) = buf.get(field::L2) else {
            return Ok(None);
        };
        if l2 != l {
            return Err(FrameError::LengthMismatch { first: l, second: l2 });
        }
        let Some(&start2) = buf.get(field::START2) else {
            return Ok(None);
        };
        if start2 != START_LONG {
            return Err(FrameError::BadSecondStart(start2));
        }
        let len = LONG_OVERHEAD + usize::from(l);
        let end = field::LONG_C + usize::from(l);
        let (Some(body), Some(&cs), Some(&stop)) =
            (buf.get(field::LONG_C..end), buf.get(end), buf.get(end.saturating_add(1)))
        else {
            return Ok(None);
        };
        let expected = checksum(body);
        if cs != expected {
            return Err(FrameError::Checksum { expected, actual: cs });
        }
        if stop != STOP {
            return Err(FrameError::BadStop(stop));
        }
        let field_at = |at: usize| buf.get(at).copied().unwrap_or_default();
        let (c, a, ci) = (field_at(field::LONG_C), field_at(field::LONG_A), field_at(field::LONG_CI));
        let frame = if l == MIN_L {
            Frame::Control { c, a, ci }
        } else {
            Frame::Long { c, a, ci, data: buf.get(field::LONG_DATA..end).unwrap_or_default().to_vec() }
        };
        Ok(Some((frame, len)))
    }
}

/// How many bytes a frame starting at `buf[0]` needs at least (for error messages).
fn needed_len(buf: &[u8]) -> usize {
    match (buf.first(), buf.get(field::L)) {
        (Some(&START_SHORT), _) => SHORT_LEN,
        (Some(&START_LONG), Some(&l)) => LONG_OVERHEAD + usize::from(l),
        (Some(&START_LONG), None) => LONG_OVERHEAD + usize::from(MIN_L),
        _ => 1,
    }
}

/// Prefix of a collision reason in [`Check::Corrupt`] from [`AckMatcher`].
pub const COLLISION: &str = "collision";

/// Whether a [`Check`] (or a `LinkError::Corrupt` reason) from [`AckMatcher`] says "several slaves
/// answered at once": the reason starts with [`COLLISION`].
#[must_use]
pub fn is_collision(reason: &str) -> bool {
    reason.starts_with(COLLISION)
}

/// Recognises the single-character acknowledgement `E5` (reply to SND_NKE, SND_UD and a selection).
///
/// - `E5` at the start → [`Check::Complete`] of 1 byte.
/// - a well-formed frame instead (a late RSP_UD, an echo of our own request on a two-wire converter) →
///   [`Check::Foreign`] skipping it; keep waiting.
/// - a damaged frame (start `10`/`68` but bad length, checksum or stop) → [`Check::Corrupt`], so the bus
///   drains and retries.
/// - any other byte → [`Check::Corrupt`] with a reason starting with [`COLLISION`]: on a line with
///   several slaves answering the same selection (secondary search, EN 13757-3 annex on the search
///   procedure) the superposed `E5`s arrive as garbage. [`is_collision`] tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AckMatcher;

impl ReplyMatcher for AckMatcher {
    fn check(&self, buf: &[u8]) -> Check {
        match buf.first() {
            None => Check::Incomplete,
            Some(&ACK) => Check::Complete { len: 1 },
            Some(&START_SHORT | &START_LONG) => match Frame::decode(buf) {
                Ok(None) => Check::Incomplete,
                Ok(Some((frame, len))) => Check::Foreign { skip: len, what: describe(&frame, len) },
                Err(e) => Check::Corrupt { reason: format!("{COLLISION} or damaged frame: {e}: {}", shown(buf)) },
            },
            Some(_) => Check::Corrupt { reason: format!("{COLLISION}: {} instead of E5", shown(buf)) },
        }
    }
}

/// Recognises an RSP_UD (control or long frame, C = `08` with any ACD/DFC bits) from one slave.
///
/// `address: None` accepts any A field: the reply to a request to [`Address::SELECTED`] or
/// [`Address::BROADCAST_REPLY`] carries the slave's own primary address, not the one we sent to.
///
/// - a complete RSP_UD from the address → [`Check::Complete`].
/// - a well-formed frame that is not it (another address, `E5`, a short frame) → [`Check::Foreign`].
/// - bytes that cannot start a frame → [`Check::Foreign`] skipping up to the next `68` (resynchronise).
/// - a damaged frame (bad length bytes, checksum, stop) → [`Check::Corrupt`]: the bus drains and retries,
///   and the client keeps the FCB for that retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RspUdMatcher {
    /// Address of the slave asked; `None` accepts any.
    pub address: Option<u8>,
}

impl ReplyMatcher for RspUdMatcher {
    fn check(&self, buf: &[u8]) -> Check {
        match Frame::decode(buf) {
            Ok(None) => Check::Incomplete,
            Ok(Some((frame, len))) => {
                let rsp = frame.c().is_some_and(control::is_rsp_ud)
                    && matches!(frame, Frame::Control { .. } | Frame::Long { .. });
                let ours = self.address.is_none_or(|want| frame.a() == Some(want));
                if rsp && ours {
                    Check::Complete { len }
                } else {
                    Check::Foreign { skip: len, what: describe(&frame, len) }
                }
            }
            Err(FrameError::BadStart(_)) => {
                let skip = buf.iter().skip(1).position(|&b| b == START_LONG).map_or(buf.len(), |p| p + 1);
                Check::Foreign {
                    skip,
                    what: format!("{skip} garbage byte(s): {}", shown(buf.get(..skip).unwrap_or_default())),
                }
            }
            Err(e) => Check::Corrupt { reason: format!("{e}: {}", shown(buf)) },
        }
    }
}

/// The slave's side of the FCB rule (EN 13757-2, 5.5.2), for simulators and tests: decides whether a
/// request is new (send the next telegram) or a retry (repeat the last one).
///
/// A request without FCV (SND_NKE) is never counted; a request with FCV is new when its FCB differs from
/// the last one seen. SND_NKE clears the stored bit, so the master's first REQ_UD2 after it (FCB = 1) is
/// new. Before any request with FCV, every request is new.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SlaveFcb {
    last: Option<bool>,
}

impl SlaveFcb {
    /// SND_NKE received: the stored FCB is cleared.
    pub fn reset(&mut self) {
        self.last = Some(false);
    }

    /// A request with control field `c` received: `true` when it is a new request, `false` for a retry
    /// (the same FCB as the previous request with FCV set).
    pub fn is_new(&mut self, c: u8) -> bool {
        if c & control::FCV == 0 {
            return true;
        }
        let fcb = control::fcb(c);
        let new = self.last != Some(fcb);
        self.last = Some(fcb);
        new
    }
}

/// A frame for the log.
fn describe(frame: &Frame, len: usize) -> String {
    match frame {
        Frame::Ack => "E5".to_owned(),
        Frame::Short { c, a } => format!("short frame C=0x{c:02X} A={a}"),
        Frame::Control { c, a, ci } => format!("control frame C=0x{c:02X} A={a} CI=0x{ci:02X}"),
        Frame::Long { c, a, ci, .. } => format!("long frame C=0x{c:02X} A={a} CI=0x{ci:02X} ({len} bytes)"),
    }
}

/// At most 16 bytes of `buf` in hex, for a log line.
fn shown(buf: &[u8]) -> String {
    let head = buf.get(..buf.len().min(16)).unwrap_or_default();
    format!("{}{}", hex(head), if buf.len() > 16 { " …" } else { "" })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SND_NKE to primary address 1 (EN 13757-2 / libmbus): start, C, A, CS = 40 + 01, stop.
    const SND_NKE_1: [u8; 5] = [0x10, 0x40, 0x01, 0x41, 0x16];
    /// REQ_UD2 with FCB to address 5: `7B + 05 = 80`.
    const REQ_UD2_FCB_5: [u8; 5] = [0x10, 0x7B, 0x05, 0x80, 0x16];
    /// Application error report (libmbus error-frames/error.hex): control frame, C=08 RSP_UD, A=1, CI=70.
    const ERROR_CONTROL: [u8; 9] = [0x68, 0x03, 0x03, 0x68, 0x08, 0x01, 0x70, 0x79, 0x16];
    /// Selection of id 12345678, any manufacturer/version/medium (SND_UD CI 52 to 253).
    const SELECT: [u8; 17] = [
        0x68, 0x0B, 0x0B, 0x68, // start, L = 11 twice, start
        0x53, 0xFD, 0x52, // SND_UD, address 253, CI selection
        0x78, 0x56, 0x34, 0x12, // id 12345678, BCD LSB first
        0xFF, 0xFF, 0xFF, 0xFF, // manufacturer, version, medium wildcards
        0xB2, 0x16, // CS = 53+FD+52+78+56+34+12+FF*4 mod 256, stop
    ];

    #[test]
    fn short_frames_decode_and_encode() {
        assert_eq!(Frame::decode(&SND_NKE_1), Ok(Some((Frame::snd_nke(1), 5))));
        assert_eq!(Frame::snd_nke(1).encode().unwrap(), SND_NKE_1);
        assert_eq!(Frame::decode(&REQ_UD2_FCB_5), Ok(Some((Frame::req_ud2(5, true), 5))));
        assert_eq!(Frame::req_ud2(5, true).encode().unwrap(), REQ_UD2_FCB_5);
        assert_eq!(Frame::req_ud2(5, false).encode().unwrap(), [0x10, 0x5B, 0x05, 0x60, 0x16]);
    }

    #[test]
    fn control_and_long_frames_decode_and_encode() {
        let ctl = Frame::Control { c: 0x08, a: 1, ci: 0x70 };
        assert_eq!(Frame::decode(&ERROR_CONTROL), Ok(Some((ctl.clone(), 9))));
        assert_eq!(ctl.encode().unwrap(), ERROR_CONTROL);
        let sel = Frame::Long {
            c: control::SND_UD,
            a: Address::SELECTED,
            ci: 0x52,
            data: vec![0x78, 0x56, 0x34, 0x12, 0xFF, 0xFF, 0xFF, 0xFF],
        };
        assert_eq!(checksum(&SELECT[4..15]), 0xB2);
        assert_eq!(Frame::parse(&SELECT), Ok(sel.clone()));
        assert_eq!(sel.encode().unwrap(), SELECT);
        assert_eq!(sel.buffer_len(), SELECT.len());
        // A long frame with empty data is a control frame on the wire.
        let empty = Frame::Long { c: 0x08, a: 1, ci: 0x70, data: vec![] };
        assert_eq!(empty.encode().unwrap(), ERROR_CONTROL);
    }

    #[test]
    fn ack_is_one_byte_and_leaves_the_rest() {
        assert_eq!(Frame::decode(&[0xE5, 0x10]), Ok(Some((Frame::Ack, 1))));
        assert_eq!(Frame::Ack.encode().unwrap(), [0xE5]);
    }

    #[test]
    fn every_prefix_needs_more_and_the_length_is_checked_early() {
        for n in 0..SELECT.len() {
            assert_eq!(Frame::decode(&SELECT[..n]), Ok(None), "prefix of {n} bytes");
        }
        for n in 0..SND_NKE_1.len() {
            assert_eq!(Frame::decode(&SND_NKE_1[..n]), Ok(None));
        }
        // Impossible lengths are refused from the header alone.
        assert_eq!(Frame::decode(&[0x68, 0x02]), Err(FrameError::LengthTooSmall(2)));
        assert_eq!(Frame::decode(&[0x68, 0x0B, 0x0C]), Err(FrameError::LengthMismatch { first: 0x0B, second: 0x0C }));
        assert_eq!(Frame::decode(&[0x68, 0x0B, 0x0B, 0x69]), Err(FrameError::BadSecondStart(0x69)));
        assert_eq!(Frame::decode(&[0x00]), Err(FrameError::BadStart(0x00)));
        assert_eq!(Frame::parse(&SELECT[..10]), Err(FrameError::Truncated { needed: 17, got: 10 }));
        let mut two = SND_NKE_1.to_vec();
        two.push(0xE5);
        assert_eq!(Frame::parse(&two), Err(FrameError::TrailingBytes(1)));
    }

    #[test]
    fn damaged_frames_are_errors() {
        let mut bad = SELECT;
        bad[15] = 0x11;
        assert_eq!(Frame::decode(&bad), Err(FrameError::Checksum { expected: 0xB2, actual: 0x11 }));
        let mut bad = SELECT;
        bad[16] = 0x17;
        assert_eq!(Frame::decode(&bad), Err(FrameError::BadStop(0x17)));
        let mut bad = SND_NKE_1;
        bad[3] = 0;
        assert_eq!(Frame::decode(&bad), Err(FrameError::Checksum { expected: 0x41, actual: 0 }));
    }

    #[test]
    fn oversized_data_does_not_encode() {
        let ok = Frame::Long { c: 0x08, a: 1, ci: 0x72, data: vec![0; MAX_DATA_LEN] };
        assert_eq!(ok.encode().unwrap().len(), MAX_FRAME_LEN);
        let big = Frame::Long { c: 0x08, a: 1, ci: 0x72, data: vec![0; MAX_DATA_LEN + 1] };
        assert_eq!(big.encode(), Err(FrameError::DataTooLong(253)));
    }

    #[test]
    fn ci_codes_are_lossless() {
        for v in 0..=255u8 {
            assert_eq!(u8::from(Ci::from(v)), v);
        }
        assert_eq!(Ci::from(0x72), Ci::ResponseLong);
        assert_eq!(Ci::from(0x7A), Ci::ResponseShort);
        assert_eq!(Ci::from(0x78), Ci::ResponseNoHeader);
        assert_eq!(Ci::from(0x52), Ci::Selection);
    }

    #[test]
    fn control_bits() {
        assert_eq!(control::req_ud2(true), 0x7B);
        assert_eq!(control::req_ud2(false), 0x5B);
        assert!(control::is_rsp_ud(0x08) && control::is_rsp_ud(0x38) && !control::is_rsp_ud(0x5B));
        assert!(control::is_req_ud2(0x7B) && control::is_req_ud2(0x5B) && !control::is_req_ud2(0x40));
        assert!(control::fcb(0x73) && !control::fcb(0x53));
        assert!(Address::is_primary(0) && Address::is_primary(250) && !Address::is_primary(Address::SELECTED));
    }

    #[test]
    fn slave_fcb_tells_new_requests_from_retries() {
        let mut s = SlaveFcb::default();
        assert!(s.is_new(control::SND_NKE));
        s.reset();
        assert!(s.is_new(0x7B), "FCB 1 after SND_NKE is new");
        assert!(!s.is_new(0x7B), "same FCB again is a retry");
        assert!(s.is_new(0x5B));
        assert!(!s.is_new(0x5B));
        assert!(s.is_new(0x7B));
        // After a reset the master starts again with FCB 1.
        s.reset();
        assert!(s.is_new(0x7B));
    }

    #[test]
    fn ack_matcher() {
        let m = AckMatcher;
        assert_eq!(m.check(&[]), Check::Incomplete);
        assert_eq!(m.check(&[0xE5]), Check::Complete { len: 1 });
        // A late RSP_UD is skipped whole.
        assert!(matches!(m.check(&ERROR_CONTROL), Check::Foreign { skip: 9, .. }));
        assert_eq!(m.check(&ERROR_CONTROL[..4]), Check::Incomplete);
        // Garbage is a collision; a damaged frame is corrupt but not garbage.
        match m.check(&[0xE4, 0xFF]) {
            Check::Corrupt { reason } => assert!(is_collision(&reason), "{reason}"),
            other => panic!("{other:?}"),
        }
        let mut bad = ERROR_CONTROL;
        bad[7] = 0;
        assert!(matches!(m.check(&bad), Check::Corrupt { .. }));
    }

    #[test]
    fn rsp_ud_matcher() {
        let m = RspUdMatcher { address: Some(1) };
        assert_eq!(m.check(&ERROR_CONTROL), Check::Complete { len: 9 });
        assert_eq!(RspUdMatcher { address: None }.check(&ERROR_CONTROL), Check::Complete { len: 9 });
        assert!(matches!(RspUdMatcher { address: Some(2) }.check(&ERROR_CONTROL), Check::Foreign { skip: 9, .. }));
        // Our own request echoed back is not the reply.
        assert!(matches!(m.check(&SND_NKE_1), Check::Foreign { skip: 5, .. }));
        assert!(matches!(m.check(&[0xE5]), Check::Foreign { skip: 1, .. }));
        // Noise before the frame is skipped up to the next 68.
        let mut noisy = vec![0x00, 0xFF];
        noisy.extend_from_slice(&ERROR_CONTROL);
        assert!(matches!(m.check(&noisy), Check::Foreign { skip: 2, .. }));
        assert_eq!(m.check(&noisy[2..]), Check::Complete { len: 9 });
        let mut bad = ERROR_CONTROL;
        bad[7] ^= 1;
        match m.check(&bad) {
            Check::Corrupt { reason } => assert!(reason.contains("checksum"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(m.check(&ERROR_CONTROL[..8]), Check::Incomplete);
    }
}

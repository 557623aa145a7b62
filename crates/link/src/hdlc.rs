//! HDLC frames for DLMS/COSEM: IEC 62056-46 (DLMS/COSEM three-layer connection-oriented profile),
//! frame format type 3 of ISO/IEC 13239, as used on RS-485, optical probes and HDLC-over-TCP.
//! Green Book (DLMS UA 1000-2) chapter 8 describes the same layer.
//!
//! This module owns the frame: flag `7E`, the 2-byte format field (type `A`, segmentation bit, 11-bit
//! length), destination and source addresses, the control field ([`Control`]), the header check sequence
//! (HCS, only when an information field follows), the information field and the frame check sequence
//! (FCS). Both checks are CRC-16/X.25 ([`crate::crc::crc16_x25`]), sent low byte first.
//!
//! It never does I/O, never keeps connection state (sequence numbers, windows, SNRM parameters belong to
//! the DLMS client) and never byte-stuffs: IEC 62056-46 frames are delimited by their length field, a `7E`
//! inside the information field is data.
//!
//! Panic contract: [`Frame::decode`] never panics on any byte sequence; it returns `Ok(None)` when more
//! bytes are needed and a [`FrameError`] for bytes that can never become a frame (drop one byte and retry
//! to resynchronise). [`Frame::encode`] never panics; it refuses frames the format cannot carry.

use crate::crc::crc16_x25;

/// The opening and closing flag of every frame.
pub const FLAG: u8 = 0x7E;

/// Largest value of the 11-bit frame length field (format field to FCS inclusive, flags excluded).
pub const MAX_FRAME_LEN: usize = 0x07FF;

/// Smallest frame length: format (2) + destination (1) + source (1) + control (1) + FCS (2).
const MIN_FRAME_LEN: usize = 7;

/// Format type 3 in the upper nibble of the format field (IEC 62056-46 §6.4.1).
const FORMAT_TYPE_3: u16 = 0xA000;
/// The segmentation bit S of the format field: more segments of this APDU follow.
const SEGMENTATION_BIT: u16 = 0x0800;

/// An HDLC address as it travels, 1, 2 or 4 bytes, each byte's LSB the extension bit (1 on the last).
///
/// A client address (the client SAP, e.g. `0x10` public client) is always 1 byte. A server address has an
/// upper HDLC address (the logical device, `1` = management logical device) and optionally a lower HDLC
/// address (the physical device, typically derived from the serial number): 1 byte carries the upper
/// address alone (7 bits), 2 bytes carry 7 + 7 bits, 4 bytes carry 14 + 14 bits (IEC 62056-46 §6.4.2).
///
/// On the wire a frame does not say which of its addresses is the client, so decoding yields the width
/// found; [`Address::client`] and [`Address::server`] build the usual ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Address {
    /// 1 byte: a client SAP, or a server's upper HDLC address alone. 7 bits (`0..=0x7F`).
    One(u8),
    /// 2 bytes: upper and lower HDLC address of a server, 7 bits each.
    Two {
        /// Upper HDLC address (logical device), `0..=0x7F`.
        upper: u8,
        /// Lower HDLC address (physical device), `0..=0x7F`.
        lower: u8,
    },
    /// 4 bytes: upper and lower HDLC address of a server, 14 bits each.
    Four {
        /// Upper HDLC address (logical device), `0..=0x3FFF`.
        upper: u16,
        /// Lower HDLC address (physical device), `0..=0x3FFF`.
        lower: u16,
    },
}

impl Address {
    /// The all-station (broadcast) value of a 1-byte address.
    pub const ALL_STATIONS: Address = Address::One(0x7F);
    /// The public client (SAP `0x10`), no authentication.
    pub const PUBLIC_CLIENT: Address = Address::One(0x10);

    /// A client SAP (1 byte), e.g. `0x10` public client, `0x20`/`0x30` management clients.
    pub fn client(sap: u8) -> Address {
        Address::One(sap)
    }

    /// A server address in the narrowest width that carries `upper` and `lower`: 1 byte when `lower` is
    /// `None` and `upper <= 0x7F`, 2 bytes when both fit 7 bits, else 4 bytes. Values that fit none of these
    /// widths make [`Frame::encode`] fail with [`FrameError::AddressOutOfRange`].
    pub fn server(upper: u16, lower: Option<u16>) -> Address {
        match lower {
            None if upper <= 0x7F => Address::One(upper as u8),
            Some(lower) if upper <= 0x7F && lower <= 0x7F => Address::Two { upper: upper as u8, lower: lower as u8 },
            lower => Address::Four { upper, lower: lower.unwrap_or(0) },
        }
    }

    /// Number of bytes this address takes on the wire.
    pub fn wire_len(&self) -> usize {
        match self {
            Address::One(_) => 1,
            Address::Two { .. } => 2,
            Address::Four { .. } => 4,
        }
    }

    fn emit(&self, out: &mut Vec<u8>) -> Result<(), FrameError> {
        let bad = || FrameError::AddressOutOfRange(*self);
        match *self {
            Address::One(v) => {
                if v > 0x7F {
                    return Err(bad());
                }
                out.push((v << 1) | 1);
            }
            Address::Two { upper, lower } => {
                if upper > 0x7F || lower > 0x7F {
                    return Err(bad());
                }
                out.extend_from_slice(&[upper << 1, (lower << 1) | 1]);
            }
            Address::Four { upper, lower } => {
                if upper > 0x3FFF || lower > 0x3FFF {
                    return Err(bad());
                }
                // Each byte carries 7 bits; `& 0x7F` makes the casts lossless.
                let seven = |v: u16| ((v & 0x7F) as u8) << 1;
                out.extend_from_slice(&[seven(upper >> 7), seven(upper), seven(lower >> 7), seven(lower) | 1]);
            }
        }
        Ok(())
    }

    /// Parses an address at the start of `buf`; returns it and its length.
    fn parse(buf: &[u8]) -> Result<(Address, usize), FrameError> {
        let len = buf.iter().take(4).position(|b| b & 1 == 1).map(|i| i + 1).ok_or(FrameError::BadAddress)?;
        let seven = |i: usize| buf.get(i).map_or(0, |b| b >> 1);
        let address = match len {
            1 => Address::One(seven(0)),
            2 => Address::Two { upper: seven(0), lower: seven(1) },
            4 => Address::Four {
                upper: (u16::from(seven(0)) << 7) | u16::from(seven(1)),
                lower: (u16::from(seven(2)) << 7) | u16::from(seven(3)),
            },
            _ => return Err(FrameError::BadAddress),
        };
        Ok((address, len))
    }
}

/// The control field, modulo-8 numbering (IEC 62056-46 §6.4.3). Lossless: every byte decodes to a value that
/// encodes back to the same byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Control {
    /// `xxxP xxx0` information frame.
    I {
        /// N(S), send sequence number, `0..=7`.
        send_seq: u8,
        /// N(R), receive sequence number, `0..=7`.
        recv_seq: u8,
        /// Poll/final bit.
        poll: bool,
    },
    /// `xxxP 0001` receive ready.
    RR {
        /// N(R), `0..=7`.
        recv_seq: u8,
        /// Poll/final bit.
        poll: bool,
    },
    /// `xxxP 0101` receive not ready.
    RNR {
        /// N(R), `0..=7`.
        recv_seq: u8,
        /// Poll/final bit.
        poll: bool,
    },
    /// `0x83` (`0x93` with P) set normal response mode.
    SNRM {
        /// Poll bit.
        poll: bool,
    },
    /// `0x43` (`0x53` with P) disconnect.
    DISC {
        /// Poll bit.
        poll: bool,
    },
    /// `0x63` (`0x73` with F) unnumbered acknowledge.
    UA {
        /// Final bit.
        poll: bool,
    },
    /// `0x0F` (`0x1F` with F) disconnected mode.
    DM {
        /// Final bit.
        poll: bool,
    },
    /// `0x87` (`0x97` with F) frame reject.
    FRMR {
        /// Final bit.
        poll: bool,
    },
    /// `0x03` (`0x13` with P/F) unnumbered information.
    UI {
        /// Poll/final bit.
        poll: bool,
    },
    /// Any other control byte (e.g. REJ `0x09`, which IEC 62056-46 does not use), kept as received.
    Unknown(u8),
}

const POLL_BIT: u8 = 0x10;

impl From<u8> for Control {
    fn from(b: u8) -> Control {
        let poll = b & POLL_BIT != 0;
        let recv_seq = b >> 5;
        if b & 0x01 == 0 {
            return Control::I { send_seq: (b >> 1) & 0x07, recv_seq, poll };
        }
        match b & 0x0F {
            0x01 => return Control::RR { recv_seq, poll },
            0x05 => return Control::RNR { recv_seq, poll },
            _ => {}
        }
        match b & !POLL_BIT {
            0x83 => Control::SNRM { poll },
            0x43 => Control::DISC { poll },
            0x63 => Control::UA { poll },
            0x0F => Control::DM { poll },
            0x87 => Control::FRMR { poll },
            0x03 => Control::UI { poll },
            _ => Control::Unknown(b),
        }
    }
}

impl From<Control> for u8 {
    fn from(c: Control) -> u8 {
        let p = |poll: bool| if poll { POLL_BIT } else { 0 };
        match c {
            Control::I { send_seq, recv_seq, poll } => ((recv_seq & 0x07) << 5) | p(poll) | ((send_seq & 0x07) << 1),
            Control::RR { recv_seq, poll } => ((recv_seq & 0x07) << 5) | p(poll) | 0x01,
            Control::RNR { recv_seq, poll } => ((recv_seq & 0x07) << 5) | p(poll) | 0x05,
            Control::SNRM { poll } => 0x83 | p(poll),
            Control::DISC { poll } => 0x43 | p(poll),
            Control::UA { poll } => 0x63 | p(poll),
            Control::DM { poll } => 0x0F | p(poll),
            Control::FRMR { poll } => 0x87 | p(poll),
            Control::UI { poll } => 0x03 | p(poll),
            Control::Unknown(b) => b,
        }
    }
}

/// One HDLC frame (IEC 62056-46 frame format type 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The segmentation bit: more segments of the same APDU follow this frame.
    pub segmented: bool,
    /// Destination address (the server in a request, the client in a reply).
    pub dest: Address,
    /// Source address.
    pub src: Address,
    /// Control field.
    pub control: Control,
    /// Information field; empty means the frame has neither information nor HCS.
    pub info: Vec<u8>,
}

/// Why bytes are not an HDLC frame, or a frame cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The first byte is not the flag `7E`.
    #[error("bad opening flag 0x{0:02X} (expected 7E)")]
    BadFlag(u8),
    /// The format field is not of type 3 (`Axxx`).
    #[error("format field 0x{0:04X} is not frame format type 3 (Axxx)")]
    BadFormat(u16),
    /// The length field is below the 7 bytes of the smallest frame.
    #[error("frame length {0} too small (at least 7)")]
    LengthTooSmall(usize),
    /// The byte after `length` bytes is not the closing flag.
    #[error("closing flag 0x{0:02X} (expected 7E)")]
    BadClosingFlag(u8),
    /// An address is not 1, 2 or 4 bytes long, or runs into the FCS.
    #[error("address field is not 1, 2 or 4 bytes")]
    BadAddress,
    /// Bytes follow the control field but are too few for HCS and at least one information byte.
    #[error("{0} bytes between control field and FCS: too few for HCS and information")]
    BadHeader(usize),
    /// The header check sequence does not match.
    #[error("HCS expected 0x{expected:04X}, got 0x{actual:04X}")]
    Hcs {
        /// CRC-16/X.25 computed over the received header.
        expected: u16,
        /// HCS the frame carried.
        actual: u16,
    },
    /// The frame check sequence does not match.
    #[error("FCS expected 0x{expected:04X}, got 0x{actual:04X}")]
    Fcs {
        /// CRC-16/X.25 computed over the received frame.
        expected: u16,
        /// FCS the frame carried.
        actual: u16,
    },
    /// [`Frame::encode`]: an address value does not fit its width.
    #[error("address {0:?} out of range for its width")]
    AddressOutOfRange(Address),
    /// [`Frame::encode`]: the frame would exceed the 11-bit length field.
    #[error("frame length {0} exceeds {MAX_FRAME_LEN}")]
    TooLong(usize),
}

impl Frame {
    /// Length of the frame on the wire, flags included.
    pub fn wire_len(&self) -> usize {
        let header = 2 + self.dest.wire_len() + self.src.wire_len() + 1;
        let info = if self.info.is_empty() { 0 } else { 2 + self.info.len() };
        header + info + 2 + 2
    }

    /// The frame's bytes, from opening to closing flag.
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        let total = self.wire_len();
        let len = total - 2; // wire_len() >= 9: flags excluded.
        if len > MAX_FRAME_LEN {
            return Err(FrameError::TooLong(len));
        }
        let mut out = Vec::with_capacity(total);
        out.push(FLAG);
        // `len <= 0x7FF`, so the cast is lossless.
        let mut format = FORMAT_TYPE_3 | len as u16;
        if self.segmented {
            format |= SEGMENTATION_BIT;
        }
        out.extend_from_slice(&format.to_be_bytes());
        self.dest.emit(&mut out)?;
        self.src.emit(&mut out)?;
        out.push(u8::from(self.control));
        if !self.info.is_empty() {
            let hcs = crc16_x25(out.get(1..).unwrap_or_default());
            out.extend_from_slice(&hcs.to_le_bytes());
            out.extend_from_slice(&self.info);
        }
        let fcs = crc16_x25(out.get(1..).unwrap_or_default());
        out.extend_from_slice(&fcs.to_le_bytes());
        out.push(FLAG);
        Ok(out)
    }

    /// Decodes the frame at the start of `buf`.
    ///
    /// `Ok(None)`: a plausible prefix, read more. `Ok(Some((frame, used)))`: `buf[..used]` was the frame
    /// (plus any extra leading flags, which separate frames on the line). `Err(_)`: the start of `buf` is
    /// not a frame; drop one byte and try again to resynchronise.
    pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
        // Back-to-back flags are inter-frame fill: the frame opens at the last one.
        let skip = buf.iter().take_while(|&&b| b == FLAG).count().saturating_sub(1);
        let buf = buf.get(skip..).unwrap_or_default();
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        if first != FLAG {
            return Err(FrameError::BadFlag(first));
        }
        let (Some(&f0), Some(&f1)) = (buf.get(1), buf.get(2)) else {
            return Ok(None);
        };
        let format = u16::from_be_bytes([f0, f1]);
        if format & 0xF000 != FORMAT_TYPE_3 {
            return Err(FrameError::BadFormat(format));
        }
        let len = usize::from(format & 0x07FF);
        if len < MIN_FRAME_LEN {
            return Err(FrameError::LengthTooSmall(len));
        }
        let Some(&closing) = buf.get(len + 1) else {
            return Ok(None);
        };
        if closing != FLAG {
            return Err(FrameError::BadClosingFlag(closing));
        }
        // `len >= 7` and `buf.len() > len + 1`: format..FCS is `buf[1..=len]`.
        let body = buf.get(1..=len).ok_or(FrameError::LengthTooSmall(len))?;
        let fcs_at = len - 2;

        let mut at = 2;
        let (dest, n) = Address::parse(body.get(at..fcs_at).unwrap_or_default())?;
        at += n;
        let (src, n) = Address::parse(body.get(at..fcs_at).unwrap_or_default())?;
        at += n;
        let &control = body.get(at).filter(|_| at < fcs_at).ok_or(FrameError::BadAddress)?;
        at += 1;

        let rest = fcs_at - at;
        let info = match rest {
            0 => Vec::new(),
            1..=2 => return Err(FrameError::BadHeader(rest)),
            _ => {
                let expected = crc16_x25(body.get(..at).unwrap_or_default());
                let actual = le16(body, at);
                if expected != actual {
                    return Err(FrameError::Hcs { expected, actual });
                }
                body.get(at + 2..fcs_at).unwrap_or_default().to_vec()
            }
        };
        let expected = crc16_x25(body.get(..fcs_at).unwrap_or_default());
        let actual = le16(body, fcs_at);
        if expected != actual {
            return Err(FrameError::Fcs { expected, actual });
        }
        let frame =
            Frame { segmented: format & SEGMENTATION_BIT != 0, dest, src, control: Control::from(control), info };
        Ok(Some((frame, skip + len + 2)))
    }
}

impl Frame {
    /// Checks what can already be checked of a frame whose bytes have not all arrived: opening flag,
    /// format type and length, addresses, and the HCS as soon as the header and HCS are in `buf`.
    ///
    /// `Ok(())` means `buf` may still become a frame (or already is one: use [`Frame::decode`]). An error
    /// means it never will, without waiting for the length the format field announces: a stream reader
    /// drops one byte and resynchronises at once instead of buffering up to 2 KiB of noise behind a
    /// plausible-looking `7E Axx` (IEC 62056-46 puts the HCS in the header for exactly this).
    pub fn check_prefix(buf: &[u8]) -> Result<(), FrameError> {
        let skip = buf.iter().take_while(|&&b| b == FLAG).count().saturating_sub(1);
        let buf = buf.get(skip..).unwrap_or_default();
        let Some(&first) = buf.first() else {
            return Ok(());
        };
        if first != FLAG {
            return Err(FrameError::BadFlag(first));
        }
        let (Some(&f0), Some(&f1)) = (buf.get(1), buf.get(2)) else {
            return Ok(());
        };
        let format = u16::from_be_bytes([f0, f1]);
        if format & 0xF000 != FORMAT_TYPE_3 {
            return Err(FrameError::BadFormat(format));
        }
        let len = usize::from(format & 0x07FF);
        if len < MIN_FRAME_LEN {
            return Err(FrameError::LengthTooSmall(len));
        }
        // Format..FCS as far as it has arrived; `fcs_at` as in `decode`.
        let body = buf.get(1..).unwrap_or_default();
        let body = body.get(..len.min(body.len())).unwrap_or_default();
        let fcs_at = len - 2;
        let mut at = 2;
        for _ in 0..2 {
            let field = body.get(at..fcs_at.min(body.len())).unwrap_or_default();
            match Address::parse(field) {
                Ok((_, n)) => at += n,
                // Not enough bytes yet to tell (fewer than 4 arrived and none ends the address).
                Err(_) if field.len() < 4 && body.len() < fcs_at => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        if at >= fcs_at {
            return Err(FrameError::BadAddress);
        }
        at += 1; // control
        let rest = fcs_at - at;
        match rest {
            0 => Ok(()),
            1..=2 => Err(FrameError::BadHeader(rest)),
            _ => match body.get(at..at + 2) {
                Some(_) => {
                    let expected = crc16_x25(body.get(..at).unwrap_or_default());
                    let actual = le16(body, at);
                    if expected == actual {
                        Ok(())
                    } else {
                        Err(FrameError::Hcs { expected, actual })
                    }
                }
                None => Ok(()),
            },
        }
    }
}

/// Little-endian u16 at `at` (0 for missing bytes; callers checked the bounds).
fn le16(buf: &[u8], at: usize) -> u16 {
    let b = |i: usize| buf.get(i).copied().unwrap_or(0);
    u16::from_le_bytes([b(at), b(at + 1)])
}

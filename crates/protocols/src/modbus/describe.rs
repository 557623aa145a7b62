//! Human-readable descriptions of captured Modbus frames (for `amid decode --protocol modbus --hex …`).
//!
//! [`describe_frame`] takes one RTU or TCP ADU as captured and explains it field by field: the unit, the
//! function with its name, addresses, quantities and register values in hex and decimal, coil bits, the
//! exception name, the CRC (ok, or bad with the value it should have), the MBAP header fields. A damaged
//! or inconsistent frame is still described as far as it goes, with a `note:` line saying what is wrong;
//! only a capture too short to hold a function code is an error.
//!
//! Never panics on any input: every field is read with `get`.

use std::fmt::Write as _;

use ami_link::crc::crc16_modbus;
use ami_link::modbus::MBAP_HEADER_LEN;

use super::{Exception, Framing, Function, PduError, Request};

/// Which way a captured frame went, as far as the caller knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Master to slave.
    Request,
    /// Slave to master (a normal or an exception response).
    Response,
    /// Unknown: guessed from the function code and the frame's shape, and the description says so.
    #[default]
    Auto,
}

/// Why a capture cannot be described at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescribeError {
    /// No bytes.
    #[error("empty frame")]
    Empty,
    /// Too short to hold the ADU header and a function code.
    #[error("{len} byte(s) are too short for a Modbus {framing} frame (at least {min}: {what})")]
    TooShort {
        /// `RTU` or `TCP`.
        framing: &'static str,
        /// Bytes given.
        len: usize,
        /// The least a frame of this framing has.
        min: usize,
        /// What those bytes are.
        what: &'static str,
    },
}

/// Bit 7 of the function code marks an exception response (spec V1.1b3, 7).
const EXCEPTION_FLAG: u8 = 0x80;
/// Shortest RTU ADU: unit, function, CRC (2).
const MIN_RTU: usize = 4;
/// Shortest TCP ADU: MBAP header (unit included) and a function code.
const MIN_TCP: usize = MBAP_HEADER_LEN + 1;
/// Width of the field labels, so values line up.
const LABEL: usize = 13;

/// Describes one captured Modbus ADU, one field per line.
///
/// `framing` says how the bytes are wrapped (RTU: `unit | PDU | CRC`; TCP: MBAP header then PDU).
/// `direction` says whether it is a request or a response; with [`Direction::Auto`] it is guessed from the
/// function code and the length, and the first line says it was guessed (a write of a single coil or
/// register and its echo reply are identical; a 5-byte read of coils may be either).
///
/// Register values appear in hex and decimal (and as a signed number when the top bit is set), addresses
/// and quantities in decimal and hex, coil bits least significant first as on the wire. An RTU capture
/// longer than the function code says is cut at the frame when the CRC there is good, and the rest shown
/// as trailing bytes.
///
/// ```
/// use ami_protocols::modbus::{describe_frame, Direction, Framing};
/// // Spec V1.1b3 6.3: read 3 holding registers from 108 (address 0x006B) of unit 17, as an RTU frame.
/// let text = describe_frame(&[0x11, 0x03, 0x00, 0x6B, 0x00, 0x03, 0x76, 0x87], Framing::Rtu, Direction::Auto).unwrap();
/// assert!(text.contains("read holding registers"));
/// assert!(text.contains("quantity:    3 (0x0003)"));
/// assert!(text.contains("CRC:         0x8776 ok"));
/// ```
pub fn describe_frame(bytes: &[u8], framing: Framing, direction: Direction) -> Result<String, DescribeError> {
    if bytes.is_empty() {
        return Err(DescribeError::Empty);
    }
    match framing {
        Framing::Rtu => rtu(bytes, direction),
        Framing::Tcp => tcp(bytes, direction),
    }
}

/// A request or a response, once decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Request,
    Response,
}

/// The lines of a description.
struct Out {
    lines: Vec<String>,
    notes: Vec<String>,
}

impl Out {
    fn field(&mut self, label: &str, value: impl std::fmt::Display) {
        let label = format!("{label}:");
        self.lines.push(format!("  {label:<LABEL$}{value}"));
    }

    fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    fn finish(self, header: String) -> String {
        let mut text = header;
        for line in &self.lines {
            text.push('\n');
            text.push_str(line);
        }
        for note in &self.notes {
            let _ = write!(text, "\n  note: {note}");
        }
        text
    }
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at.checked_add(1)?)?]))
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len().saturating_mul(3));
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        let _ = write!(s, "{b:02X}");
    }
    s
}

/// `107 (0x006B)`.
fn number(v: u16) -> String {
    format!("{v} (0x{v:04X})")
}

/// `0x022B = 555`, with the signed reading when the top bit is set: `0xFFFE = 65534 (i16 -2)`.
fn register(v: u16) -> String {
    let signed = i16::from_be_bytes(v.to_be_bytes());
    if signed < 0 {
        format!("0x{v:04X} = {v} (i16 {signed})")
    } else {
        format!("0x{v:04X} = {v}")
    }
}

/// Guesses the direction of `pdu` from its function code and length.
fn guess(pdu: &[u8]) -> (Dir, Option<&'static str>) {
    let Some(&code) = pdu.first() else {
        return (Dir::Request, None);
    };
    if code & EXCEPTION_FLAG != 0 {
        return (Dir::Response, None);
    }
    let n = pdu.len();
    match code {
        0x01..=0x04 => {
            // A response is `function | byte count | data`; registers come in pairs.
            let as_response = pdu.get(1).is_some_and(|&c| usize::from(c) + 2 == n && (code <= 0x02 || c % 2 == 0));
            match (n == 5, as_response) {
                (true, true) => (
                    Dir::Request,
                    Some("the same bytes are also a response with byte count 3: pass the direction to read it so"),
                ),
                (false, true) => (Dir::Response, None),
                (true, false) => (Dir::Request, None),
                (false, false) if n > 5 => (Dir::Response, None),
                (false, false) => (Dir::Request, None),
            }
        }
        0x05 | 0x06 => (Dir::Request, Some("a single write and its echo reply are identical")),
        0x0F | 0x10 if n == 5 => (Dir::Response, None),
        _ => (Dir::Request, None),
    }
}

fn resolve(direction: Direction, pdu: &[u8]) -> (Dir, Option<&'static str>) {
    match direction {
        Direction::Request => (Dir::Request, None),
        Direction::Response => (Dir::Response, None),
        Direction::Auto => guess(pdu),
    }
}

fn header(framing: &str, dir: Dir, guessed: bool, len: usize) -> String {
    let what = match dir {
        Dir::Request => "request",
        Dir::Response => "response",
    };
    let guessed = if guessed { " (direction guessed)" } else { "" };
    format!("Modbus {framing} {what}{guessed}, {len} bytes")
}

/// The RTU frame length the function code implies (Modbus over Serial Line V1.02 with the PDU sizes of
/// the application protocol spec), when it does.
fn rtu_len(bytes: &[u8], dir: Dir) -> Option<usize> {
    let code = *bytes.get(1)?;
    if code & EXCEPTION_FLAG != 0 {
        return Some(5);
    }
    match (dir, code) {
        (Dir::Request, 0x01..=0x06) | (Dir::Response, 0x05 | 0x06 | 0x0F | 0x10) => Some(8),
        (Dir::Request, 0x0F | 0x10) => bytes.get(6).map(|&c| 9 + usize::from(c)),
        (Dir::Response, 0x01..=0x04) => bytes.get(2).map(|&c| 5 + usize::from(c)),
        _ => None,
    }
}

fn rtu(bytes: &[u8], direction: Direction) -> Result<String, DescribeError> {
    let len = bytes.len();
    if len < MIN_RTU {
        return Err(DescribeError::TooShort { framing: "RTU", len, min: MIN_RTU, what: "unit, function, CRC" });
    }
    let pdu_of = |frame_len: usize| bytes.get(1..frame_len.saturating_sub(2)).unwrap_or_default();
    let (mut dir, mut hint) = resolve(direction, pdu_of(len));
    let mut out = Out { lines: Vec::new(), notes: Vec::new() };
    // One frame per capture is the normal case; a capture that runs on past the length the function code
    // implies is cut there when the CRC there is good (two frames pasted together, line noise after).
    let mut frame_len = len;
    match rtu_len(bytes, dir) {
        Some(n) if n < len && crc16_modbus(bytes.get(..n).unwrap_or_default()) == 0 => {
            frame_len = n;
            if direction == Direction::Auto {
                (dir, hint) = guess(pdu_of(n));
            }
        }
        Some(n) if n != len => {
            let code = bytes.get(1).copied().unwrap_or_default();
            let what = if code & EXCEPTION_FLAG != 0 {
                "an exception response".to_string()
            } else {
                let dir = if dir == Dir::Request { "request" } else { "response" };
                format!("a {} {dir}", function_name(code))
            };
            out.note(format!("{what} is {n} bytes by its function code; the capture has {len}"));
        }
        _ => {}
    }
    let frame = bytes.get(..frame_len).unwrap_or(bytes);
    let split = frame_len.saturating_sub(2);
    let unit = frame.first().copied().unwrap_or_default();
    out.field("unit", if unit == 0 { "0 (broadcast)".to_string() } else { format!("{unit} (0x{unit:02X})") });
    pdu(&mut out, frame.get(1..split).unwrap_or_default(), dir);
    let carried = u16::from_le_bytes([
        frame.get(split).copied().unwrap_or_default(),
        frame.get(split + 1).copied().unwrap_or_default(),
    ]);
    let expected = crc16_modbus(frame.get(..split).unwrap_or_default());
    if carried == expected {
        out.field("CRC", format!("0x{carried:04X} ok"));
    } else {
        let [lo, hi] = expected.to_le_bytes();
        out.field("CRC", format!("0x{carried:04X} BAD: expected 0x{expected:04X} (bytes {lo:02X} {hi:02X})"));
    }
    if let Some(rest) = bytes.get(frame_len..).filter(|r| !r.is_empty()) {
        out.field("trailing", format!("{} byte(s) after the frame: {}", rest.len(), hex(rest)));
    }
    if let Some(hint) = hint.filter(|_| direction == Direction::Auto) {
        out.note(hint);
    }
    Ok(out.finish(header("RTU", dir, direction == Direction::Auto, frame_len)))
}

fn tcp(bytes: &[u8], direction: Direction) -> Result<String, DescribeError> {
    let len = bytes.len();
    if len < MIN_TCP {
        return Err(DescribeError::TooShort {
            framing: "TCP",
            len,
            min: MIN_TCP,
            what: "transaction, protocol, length, unit, function",
        });
    }
    let mut out = Out { lines: Vec::new(), notes: Vec::new() };
    let (transaction, protocol, length) =
        (be16(bytes, 0).unwrap_or_default(), be16(bytes, 2).unwrap_or_default(), be16(bytes, 4).unwrap_or_default());
    let unit = bytes.get(6).copied().unwrap_or_default();
    out.field("transaction", number(transaction));
    out.field(
        "protocol",
        if protocol == 0 { "0 (Modbus)".to_string() } else { format!("{} (not Modbus: expected 0)", number(protocol)) },
    );
    // The length field counts the unit id and the PDU.
    let follows = len.saturating_sub(6); // the bytes after the length field
    let declared = usize::from(length);
    let frame_len = if (2..=follows).contains(&declared) { 6 + declared } else { len };
    let length_text = if declared == follows {
        format!("{length} (unit + {}-byte PDU)", declared.saturating_sub(1))
    } else if declared < 2 {
        out.note(format!("length {length} leaves no room for a function code (expected 2..=254)"));
        format!("{length} (impossible)")
    } else if declared > follows {
        out.note(format!("the length field says {declared} bytes follow it, the capture has {follows}: truncated"));
        format!("{length} (truncated: {follows} follow)")
    } else {
        format!("{length} (unit + {}-byte PDU)", declared.saturating_sub(1))
    };
    out.field("length", length_text);
    if declared > 254 {
        out.note(format!("length {length} is over the Modbus maximum of 254"));
    }
    out.field("unit", format!("{unit} (0x{unit:02X})"));
    let pdu_bytes = bytes.get(MBAP_HEADER_LEN..frame_len).unwrap_or_default();
    let (dir, hint) = resolve(direction, pdu_bytes);
    pdu(&mut out, pdu_bytes, dir);
    if let Some(rest) = bytes.get(frame_len..).filter(|r| !r.is_empty()) {
        out.field("trailing", format!("{} byte(s) after the frame: {}", rest.len(), hex(rest)));
    }
    if let Some(hint) = hint {
        out.note(hint);
    }
    Ok(out.finish(header("TCP", dir, direction == Direction::Auto, frame_len)))
}

fn function_name(code: u8) -> &'static str {
    Function::from(code & !EXCEPTION_FLAG).name()
}

/// The PDU's fields: function, then what the function and direction say follows.
fn pdu(out: &mut Out, pdu: &[u8], dir: Dir) {
    let Some((&code, data)) = pdu.split_first() else {
        out.note("no function code");
        return;
    };
    if code & EXCEPTION_FLAG != 0 {
        let base = code & !EXCEPTION_FLAG;
        out.field("function", format!("0x{code:02X} exception response to 0x{base:02X} {}", function_name(base)));
        match data {
            [x] => {
                let e = Exception::from(*x);
                out.field("exception", format!("0x{x:02X} {}", e.name()));
            }
            _ => {
                if let Some(x) = data.first() {
                    out.field("exception", format!("0x{x:02X} {}", Exception::from(*x).name()));
                }
                out.note(format!("an exception response carries 1 byte after the function, this one {}", data.len()));
                if let Some(rest) = data.get(1..).filter(|r| !r.is_empty()) {
                    out.field("extra", hex(rest));
                }
            }
        }
        return;
    }
    let function = Function::from(code);
    out.field("function", format!("0x{code:02X} {}", function.name()));
    match (function, dir) {
        (Function::Unknown(_), _) => {
            if !data.is_empty() {
                out.field("data", format!("{} ({} bytes)", hex(data), data.len()));
            }
        }
        (
            Function::ReadCoils
            | Function::ReadDiscreteInputs
            | Function::ReadHoldingRegisters
            | Function::ReadInputRegisters,
            Dir::Request,
        ) => {
            fixed(out, data, "quantity", number);
            request_check(out, pdu);
        }
        (Function::ReadCoils | Function::ReadDiscreteInputs, Dir::Response) => {
            let what = if function == Function::ReadCoils { "coils" } else { "inputs" };
            let body = byte_count(out, data);
            for (i, b) in body.iter().enumerate() {
                let first = i * 8;
                let bits: Vec<&str> = (0..8).map(|k| if b & (1 << k) != 0 { "1" } else { "0" }).collect();
                out.field(&format!("{what} {first}-{}", first + 7), format!("0x{b:02X} = {}", bits.join(" ")));
            }
        }
        (Function::ReadHoldingRegisters | Function::ReadInputRegisters, Dir::Response) => {
            let body = byte_count(out, data);
            if body.len() & 1 != 0 {
                out.note(format!("{} data bytes: registers come in pairs of bytes", body.len()));
            }
            for (i, pair) in body.chunks(2).enumerate() {
                match pair {
                    &[hi, lo] => out.field(&format!("register {i}"), register(u16::from_be_bytes([hi, lo]))),
                    other => out.field("odd byte", hex(other)),
                }
            }
        }
        (Function::WriteSingleCoil, _) => {
            fixed(out, data, "value", |v| match v {
                0xFF00 => "0xFF00 (ON)".to_string(),
                0x0000 => "0x0000 (OFF)".to_string(),
                other => format!("0x{other:04X} (invalid: expected 0xFF00 ON or 0x0000 OFF)"),
            });
        }
        (Function::WriteSingleRegister, _) => fixed(out, data, "value", register),
        (Function::WriteMultipleCoils | Function::WriteMultipleRegisters, Dir::Response) => {
            fixed(out, data, "quantity", number);
        }
        (Function::WriteMultipleCoils | Function::WriteMultipleRegisters, Dir::Request) => {
            write_multiple(out, function, data);
            request_check(out, pdu);
        }
    }
}

/// `address | second` (quantity or value), 4 data bytes.
fn fixed(out: &mut Out, data: &[u8], second: &str, show: impl Fn(u16) -> String) {
    if let Some(a) = be16(data, 0) {
        out.field("address", number(a));
    }
    if let Some(v) = be16(data, 2) {
        out.field(second, show(v));
    }
    if data.len() != 4 {
        out.note(format!("this function carries 4 bytes after the function code, this frame {}", data.len()));
        if let Some(rest) = data.get(4..).filter(|r| !r.is_empty()) {
            out.field("extra", hex(rest));
        }
    }
}

/// `byte count | data` of a read response; returns the data.
fn byte_count<'a>(out: &mut Out, data: &'a [u8]) -> &'a [u8] {
    let Some((&count, body)) = data.split_first() else {
        out.note("no byte count");
        return &[];
    };
    out.field("byte count", count);
    if usize::from(count) != body.len() {
        out.note(format!("byte count {count}, but {} data bytes follow", body.len()));
    }
    body
}

/// FC 15 / 16 request: address, quantity, byte count, values.
fn write_multiple(out: &mut Out, function: Function, data: &[u8]) {
    let (Some(address), Some(quantity), Some((&count, values))) =
        (be16(data, 0), be16(data, 2), data.get(4..).and_then(<[u8]>::split_first))
    else {
        out.note(format!("too short for address, quantity and byte count: {}", hex(data)));
        return;
    };
    out.field("address", number(address));
    out.field("quantity", number(quantity));
    out.field("byte count", count);
    if usize::from(count) != values.len() {
        out.note(format!("byte count {count}, but {} value bytes follow", values.len()));
    }
    if function == Function::WriteMultipleCoils {
        for (i, b) in values.iter().enumerate() {
            let first = i * 8;
            // Bits past the quantity are padding.
            let bits: Vec<&str> = (0..8)
                .map(|k| {
                    if first + k >= usize::from(quantity) {
                        "-"
                    } else if b & (1 << k) != 0 {
                        "1"
                    } else {
                        "0"
                    }
                })
                .collect();
            out.field(&format!("coils +{first}-{}", first + 7), format!("0x{b:02X} = {}", bits.join(" ")));
        }
    } else {
        for (i, pair) in values.chunks(2).enumerate() {
            match pair {
                &[hi, lo] => {
                    let at = address.checked_add(u16::try_from(i).unwrap_or(u16::MAX));
                    let label = at.map_or_else(|| format!("value {i}"), |a| format!("register {a}"));
                    out.field(&label, register(u16::from_be_bytes([hi, lo])));
                }
                other => out.field("odd byte", hex(other)),
            }
        }
    }
}

/// Adds what a server would refuse in a request (quantity limits, table end, byte count), and how.
fn request_check(out: &mut Out, pdu: &[u8]) {
    let Err(e) = Request::decode(pdu) else { return };
    let why = match &e {
        PduError::Invalid(msg) | PduError::BadRequest(msg) => msg.clone(),
        PduError::Exception { exception, .. } => exception.name().to_string(),
    };
    match e.server_exception() {
        Some(x) => out.note(format!("a server answers exception 0x{:02X} {}: {why}", x.code(), x.name())),
        None => out.note(format!("a server ignores this request: {why}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ami_link::modbus::{encode_rtu, encode_tcp};

    fn rtu(bytes: &[u8], d: Direction) -> String {
        describe_frame(bytes, Framing::Rtu, d).unwrap()
    }

    #[test]
    fn spec_6_3_read_holding_registers_request_rtu() {
        // Modbus over Serial Line / Application Protocol 6.3: unit 0x11 reads 3 registers from 0x006B.
        let frame = [
            0x11, // unit 17
            0x03, // read holding registers
            0x00, 0x6B, // address 107
            0x00, 0x03, // quantity 3
            0x76, 0x87, // CRC 0x8776, low byte first
        ];
        assert_eq!(
            rtu(&frame, Direction::Request),
            "Modbus RTU request, 8 bytes\n\
             \x20 unit:        17 (0x11)\n\
             \x20 function:    0x03 read holding registers\n\
             \x20 address:     107 (0x006B)\n\
             \x20 quantity:    3 (0x0003)\n\
             \x20 CRC:         0x8776 ok"
        );
        // Auto finds the same, and says it guessed.
        assert!(rtu(&frame, Direction::Auto).starts_with("Modbus RTU request (direction guessed), 8 bytes\n"));
    }

    #[test]
    fn spec_6_3_read_holding_registers_response_rtu() {
        // Registers 108..110 hold 0x022B (555), 0x0000, 0x0064 (100).
        let frame = encode_rtu(0x11, &[0x03, 0x06, 0x02, 0x2B, 0x00, 0x00, 0x00, 0x64]);
        let crc = u16::from_le_bytes([frame[9], frame[10]]);
        assert_eq!(
            rtu(&frame, Direction::Auto),
            format!(
                "Modbus RTU response (direction guessed), 11 bytes\n\
                 \x20 unit:        17 (0x11)\n\
                 \x20 function:    0x03 read holding registers\n\
                 \x20 byte count:  6\n\
                 \x20 register 0:  0x022B = 555\n\
                 \x20 register 1:  0x0000 = 0\n\
                 \x20 register 2:  0x0064 = 100\n\
                 \x20 CRC:         0x{crc:04X} ok"
            )
        );
    }

    #[test]
    fn bad_crc_shows_the_expected_value() {
        let mut frame = [0x11, 0x03, 0x00, 0x6B, 0x00, 0x03, 0x76, 0x87];
        frame[7] = 0x00;
        let text = rtu(&frame, Direction::Request);
        assert!(text.contains("CRC:         0x0076 BAD: expected 0x8776 (bytes 76 87)"), "{text}");
    }

    #[test]
    fn spec_7_exception_response() {
        // Unit 1 answers a read of holding registers with exception 02: 01 83 02 C0 F1.
        let text = rtu(&[0x01, 0x83, 0x02, 0xC0, 0xF1], Direction::Auto);
        assert!(text.starts_with("Modbus RTU response (direction guessed), 5 bytes"), "{text}");
        assert!(text.contains("function:    0x83 exception response to 0x03 read holding registers"), "{text}");
        assert!(text.contains("exception:   0x02 illegal data address"), "{text}");
        assert!(text.contains("CRC:         0xF1C0 ok"), "{text}");
        let gateway = rtu(&encode_rtu(1, &[0x84, 0x0B]), Direction::Response);
        assert!(gateway.contains("0x0B gateway target device failed to respond"), "{gateway}");
    }

    #[test]
    fn spec_6_3_over_tcp_with_mbap_fields() {
        let frame = [
            0x00, 0x01, // transaction 1
            0x00, 0x00, // protocol 0
            0x00, 0x06, // length 6
            0x11, // unit 17
            0x03, 0x00, 0x6B, 0x00, 0x03,
        ];
        assert_eq!(
            describe_frame(&frame, Framing::Tcp, Direction::Request).unwrap(),
            "Modbus TCP request, 12 bytes\n\
             \x20 transaction: 1 (0x0001)\n\
             \x20 protocol:    0 (Modbus)\n\
             \x20 length:      6 (unit + 5-byte PDU)\n\
             \x20 unit:        17 (0x11)\n\
             \x20 function:    0x03 read holding registers\n\
             \x20 address:     107 (0x006B)\n\
             \x20 quantity:    3 (0x0003)"
        );
        // A wrong protocol id and a short capture are described, with notes.
        let mut bad = frame;
        bad[3] = 0x01;
        let text = describe_frame(&bad[..10], Framing::Tcp, Direction::Request).unwrap();
        assert!(text.contains("protocol:    1 (0x0001) (not Modbus: expected 0)"), "{text}");
        assert!(text.contains("note: the length field says 6 bytes follow it, the capture has 4: truncated"), "{text}");
    }

    #[test]
    fn spec_6_1_read_coils_response_bits_and_the_ambiguity_note() {
        // Coils 20..38: CD 6B 05 (bit 0 of CD is coil 20).
        let pdu = [0x01, 0x03, 0xCD, 0x6B, 0x05];
        let tcp = encode_tcp(7, 1, &pdu);
        let text = describe_frame(&tcp, Framing::Tcp, Direction::Response).unwrap();
        assert!(text.contains("coils 0-7:   0xCD = 1 0 1 1 0 0 1 1"), "{text}");
        assert!(text.contains("coils 16-23: 0x05 = 1 0 1 0 0 0 0 0"), "{text}");
        // Five bytes read either way: Auto reads a request and says so.
        let text = describe_frame(&tcp, Framing::Tcp, Direction::Auto).unwrap();
        assert!(text.starts_with("Modbus TCP request (direction guessed)"), "{text}");
        assert!(text.contains("note: the same bytes are also a response with byte count 3"), "{text}");
    }

    #[test]
    fn spec_writes_single_and_multiple() {
        // 6.5: write coil 173 ON.
        let text = rtu(&encode_rtu(0x11, &[0x05, 0x00, 0xAC, 0xFF, 0x00]), Direction::Auto);
        assert!(text.contains("address:     172 (0x00AC)"), "{text}");
        assert!(text.contains("value:       0xFF00 (ON)"), "{text}");
        assert!(text.contains("note: a single write and its echo reply are identical"), "{text}");
        // 6.6: write register 2 = 3.
        let text = rtu(&encode_rtu(0x11, &[0x06, 0x00, 0x01, 0x00, 0x03]), Direction::Request);
        assert!(text.contains("value:       0x0003 = 3"), "{text}");
        // 6.11: write 10 coils from 20.
        let text = rtu(&encode_rtu(0x11, &[0x0F, 0x00, 0x13, 0x00, 0x0A, 0x02, 0xCD, 0x01]), Direction::Auto);
        assert!(text.contains("quantity:    10 (0x000A)"), "{text}");
        assert!(text.contains("coils +0-7:  0xCD = 1 0 1 1 0 0 1 1"), "{text}");
        assert!(text.contains("coils +8-15: 0x01 = 1 0 - - - - - -"), "{text}");
        // 6.12: write registers 2 and 3 = 0x000A, 0x0102; and the echo reply.
        let text =
            rtu(&encode_rtu(0x11, &[0x10, 0x00, 0x01, 0x00, 0x02, 0x04, 0x00, 0x0A, 0x01, 0x02]), Direction::Auto);
        assert!(text.contains("register 1:  0x000A = 10"), "{text}");
        assert!(text.contains("register 2:  0x0102 = 258"), "{text}");
        let echo = rtu(&encode_rtu(0x11, &[0x10, 0x00, 0x01, 0x00, 0x02]), Direction::Auto);
        assert!(echo.starts_with("Modbus RTU response (direction guessed)"), "{echo}");
        assert!(echo.contains("quantity:    2 (0x0002)"), "{echo}");
    }

    #[test]
    fn signed_registers_and_server_refusals_are_shown() {
        let text = rtu(&encode_rtu(1, &[0x04, 0x02, 0xFF, 0xFE]), Direction::Response);
        assert!(text.contains("register 0:  0xFFFE = 65534 (i16 -2)"), "{text}");
        let text = rtu(&encode_rtu(1, &[0x03, 0x00, 0x00, 0x00, 0x7E]), Direction::Request);
        assert!(
            text.contains(
                "note: a server answers exception 0x03 illegal data value: read holding registers: quantity 126 is \
                 outside 1..=125"
            ),
            "{text}"
        );
        let text = rtu(&encode_rtu(1, &[0x03, 0xFF, 0xFF, 0x00, 0x02]), Direction::Request);
        assert!(text.contains("note: a server answers exception 0x02 illegal data address"), "{text}");
        // An exception frame with a byte after its CRC: the frame, then the trailing byte.
        let text = rtu(&[0x01, 0x83, 0x02, 0xC0, 0xF1, 0x55], Direction::Auto);
        assert!(text.contains("trailing:    1 byte(s) after the frame: 55"), "{text}");
        // An exception frame of the wrong length says so in its own terms.
        let text = rtu(&[0x01, 0x83, 0x02, 0x00, 0xC0, 0xF1], Direction::Auto);
        assert!(
            text.contains("note: an exception response is 5 bytes by its function code; the capture has 6"),
            "{text}"
        );
    }

    #[test]
    fn two_frames_in_one_capture_are_cut_at_the_first() {
        let mut capture = encode_rtu(1, &[0x03, 0x02, 0x00, 0x07]);
        let next = encode_rtu(2, &[0x03, 0x02, 0x00, 0x08]);
        capture.extend_from_slice(&next);
        let text = rtu(&capture, Direction::Response);
        assert!(text.starts_with("Modbus RTU response, 7 bytes"), "{text}");
        assert!(text.contains(&format!("trailing:    7 byte(s) after the frame: {}", hex(&next))), "{text}");
        assert!(text.contains("register 0:  0x0007 = 7"), "{text}");
    }

    #[test]
    fn too_short_is_an_error_naming_what_is_missing() {
        assert_eq!(describe_frame(&[], Framing::Rtu, Direction::Auto), Err(DescribeError::Empty));
        let e = describe_frame(&[0x01, 0x03, 0x00], Framing::Rtu, Direction::Auto).unwrap_err();
        assert_eq!(e.to_string(), "3 byte(s) are too short for a Modbus RTU frame (at least 4: unit, function, CRC)");
        assert!(describe_frame(&[0; 7], Framing::Tcp, Direction::Auto).is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_describe_without_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            for framing in [Framing::Rtu, Framing::Tcp] {
                for d in [Direction::Request, Direction::Response, Direction::Auto] {
                    if let Ok(text) = describe_frame(&bytes, framing, d) {
                        proptest::prop_assert!(text.starts_with("Modbus "));
                    }
                }
            }
        }
    }
}

//! Human-readable descriptions of captured Mercury frames (for `amid decode --protocol mercury`).
//!
//! [`describe`] explains one frame: address, CRC (ok, or what it should be), and what the frame is. A
//! Mercury frame does not say whether it is a request or a reply nor, for a reply, what it answers, so a
//! frame that parses as a known request is described as one, and any other frame as a reply with every
//! reading its data length allows. [`describe_exchange`] decodes a reply exactly, given the request it
//! answers. Passwords in captured open requests are never printed.
//!
//! Never panics on any input.

use std::fmt::Write as _;

use ami_link::crc::crc16_modbus;

use super::frame::{hex, Address, Status, MIN_FRAME_LEN};
use super::request::{Bwri, Request};
use super::value::{
    decode_temperature, Energy, InstantValue, LastRecord, MeterTime, PhaseEnergy, ProfileRecord, SerialInfo, Variant,
};

/// Why a capture cannot be described at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescribeError {
    /// Fewer than 4 bytes.
    #[error("{0} byte(s) are too short for a Mercury frame (address, at least one byte, CRC)")]
    TooShort(usize),
}

fn header(out: &mut String, frame: &[u8]) -> bool {
    let address = Address(frame.first().copied().unwrap_or(0));
    let kind = match address {
        Address::ANY => " (any meter, point-to-point)",
        Address::BROADCAST => " (broadcast)",
        a if a.is_individual() => "",
        _ => " (not an individual address)",
    };
    // An open-channel request carries the password in bytes 3..9: never print it.
    if frame.len() == 11 && frame.get(1) == Some(&0x01) {
        let head = hex(frame.get(..3).unwrap_or_default());
        let crc = hex(frame.get(9..).unwrap_or_default());
        let _ = writeln!(out, "frame:    {head} xx xx xx xx xx xx {crc}");
    } else {
        let _ = writeln!(out, "frame:    {}", hex(frame));
    }
    let _ = writeln!(out, "address:  {address}{kind}");
    let split = frame.len().saturating_sub(2);
    let carried =
        u16::from_le_bytes([frame.get(split).copied().unwrap_or(0), frame.get(split + 1).copied().unwrap_or(0)]);
    let computed = crc16_modbus(frame.get(..split).unwrap_or_default());
    if carried == computed {
        let _ = writeln!(out, "CRC:      0x{carried:04X} ok");
        true
    } else {
        let _ = writeln!(out, "CRC:      0x{carried:04X} BAD (should be 0x{computed:04X})");
        false
    }
}

/// Describes one captured frame, one field per line.
///
/// ```
/// use ami_protocols::mercury::describe;
/// let text = describe(&[0x00, 0x08, 0x11, 0x70, 0x8C, 0x52]).unwrap();
/// assert!(text.contains("request: read temperature"));
/// let text = describe(&[0x80, 0x05, 0xA0, 0x73]).unwrap();
/// assert!(text.contains("status 5 (channel not open)"));
/// ```
///
/// # Errors
/// Fewer than 4 bytes.
pub fn describe(frame: &[u8]) -> Result<String, DescribeError> {
    if frame.len() < MIN_FRAME_LEN {
        return Err(DescribeError::TooShort(frame.len()));
    }
    let mut out = String::new();
    header(&mut out, frame);
    let body = frame.get(1..frame.len() - 2).unwrap_or_default();
    // Parse regardless of the CRC, so a damaged capture is still explained.
    let mut fixed = frame.get(..frame.len() - 2).unwrap_or_default().to_vec();
    fixed.extend_from_slice(&crc16_modbus(&fixed).to_le_bytes());
    if let [s] = body {
        let status = Status::from_byte(*s);
        match s {
            0x00 => {
                let _ = writeln!(out, "either:   request: test channel");
                let _ = writeln!(out, "or:       reply: {status}");
            }
            0x02 => {
                let _ = writeln!(out, "either:   request: close channel");
                let _ = writeln!(out, "or:       reply: {status}");
            }
            _ => {
                let _ = writeln!(out, "reply:    {status}");
            }
        }
        return Ok(out);
    }
    if let Ok((_, request)) = Request::parse(&fixed) {
        if !matches!(request, Request::Other { .. }) {
            let _ = writeln!(out, "request: {}", request.name());
            if let Request::Open { .. } = request {
                let _ = writeln!(out, "password: 6 bytes (not shown)");
            }
            let _ = writeln!(out, "expects:  {} data byte(s) or a status byte", request.reply_len());
            return Ok(out);
        }
    }
    let _ = writeln!(out, "reply:    {} data byte(s): {}", body.len(), hex(body));
    readings(&mut out, body);
    Ok(out)
}

/// Every reading a reply of this length can have.
fn readings(out: &mut String, data: &[u8]) {
    let mut any = false;
    let mut line = |out: &mut String, text: String| {
        any = true;
        let _ = writeln!(out, "as {text}");
    };
    if let Ok(e) = Energy::decode(data) {
        line(out, format!("energy (Wh, varh): {}", energy_text(&e)));
    }
    if let Ok(e) = PhaseEnergy::decode(data) {
        let p = e.phases.map(|v| v.map_or("n/a".to_owned(), |v| v.to_string()));
        line(out, format!("A+ per phase (Wh): L1 {}, L2 {}, L3 {}", p[0], p[1], p[2]));
    }
    if data.len().is_multiple_of(3) && !data.is_empty() && data.len() <= 12 {
        let values: Vec<String> = data
            .chunks_exact(3)
            .map(|c| {
                let v = InstantValue::from_bytes(Bwri(0), [c[0], c[1], c[2]]);
                let flags = match (v.active_reverse, v.reactive_reverse) {
                    (false, false) => "",
                    (true, false) => " (P reverse)",
                    (false, true) => " (Q reverse)",
                    (true, true) => " (P and Q reverse)",
                };
                format!("{}{flags}", v.raw)
            })
            .collect();
        line(
            out,
            format!("instantaneous value(s), raw (÷100 for U, P, Q, S, f; ÷1000 for I, cos φ): {}", values.join(", ")),
        );
    }
    if let Ok(t) = decode_temperature(data) {
        line(out, format!("temperature: {t} °C"));
    }
    if let Ok(s) = SerialInfo::decode(data) {
        line(out, format!("serial number {:08}, made {}", s.serial, s.made));
    }
    if let Ok(t) = MeterTime::decode(data) {
        line(
            out,
            format!(
                "meter time {}:{:02}, weekday {}, {} time",
                t.stamp,
                t.second,
                t.weekday,
                if t.winter { "winter" } else { "summer" }
            ),
        );
    }
    if let Ok(v) = Variant::decode(data) {
        let c = v.constant().map_or("unknown".to_owned(), |c| format!("{c} pulses/kWh"));
        line(out, format!("variant, meter constant {c}"));
    }
    if let Ok(r) = LastRecord::decode(data) {
        line(
            out,
            format!(
                "last power-profile record at 0x{:04X}, {}, period {} min, status 0x{:02X}",
                r.address, r.stamp, r.period, r.status
            ),
        );
    }
    if let Ok(r) = ProfileRecord::decode(data) {
        line(out, format!("power-profile record {}", record_text(&r)));
    }
    if !any {
        let _ = writeln!(out, "(no known reply has {} data bytes)", data.len());
    }
}

fn energy_text(e: &Energy) -> String {
    let v = |x: Option<u32>| x.map_or("n/a".to_owned(), |v| v.to_string());
    format!("A+ {}, A- {}, R+ {}, R- {}", v(e.a_plus), v(e.a_minus), v(e.r_plus), v(e.r_minus))
}

fn record_text(r: &ProfileRecord) -> String {
    let v = |x: Option<u16>| x.map_or("n/a".to_owned(), |v| v.to_string());
    format!(
        "{}, period {} min, status 0x{:02X}, pulses P+ {}, P- {}, Q+ {}, Q- {}",
        r.stamp,
        r.period,
        r.status,
        v(r.counts[0]),
        v(r.counts[1]),
        v(r.counts[2]),
        v(r.counts[3])
    )
}

/// Describes a reply given the request it answers: the decoded values with units.
///
/// # Errors
/// Fewer than 4 bytes in either frame.
pub fn describe_exchange(request: &[u8], reply: &[u8]) -> Result<String, DescribeError> {
    let mut out = describe(request)?;
    if reply.len() < MIN_FRAME_LEN {
        return Err(DescribeError::TooShort(reply.len()));
    }
    let _ = writeln!(out, "--- reply");
    header(&mut out, reply);
    let Ok((_, req)) = Request::parse(request) else {
        let _ = writeln!(out, "(the request does not parse; the reply is not decoded)");
        return Ok(out);
    };
    let data = reply.get(1..reply.len() - 2).unwrap_or_default();
    if let [s] = data {
        let status = Status::from_byte(*s);
        let _ = writeln!(out, "reply:    {status}");
        return Ok(out);
    }
    let text = match &req {
        Request::ReadEnergy { array, .. } if array.reply_len() == 12 => PhaseEnergy::decode(data).map(|e| {
            let p = e.phases.map(|v| v.map_or("n/a".to_owned(), |v| v.to_string()));
            format!("A+ per phase (Wh): L1 {}, L2 {}, L3 {}", p[0], p[1], p[2])
        }),
        Request::ReadEnergy { .. } => Energy::decode(data).map(|e| format!("energy (Wh, varh): {}", energy_text(&e))),
        Request::ReadInstant(b) if *b == Bwri::TEMPERATURE => {
            decode_temperature(data).map(|t| format!("temperature {t} °C"))
        }
        Request::ReadInstant(b) => InstantValue::decode(*b, data).map(|v| format!("{b}: {} {}", v.value(), b.unit())),
        Request::ReadInstantBlock(b) => InstantValue::decode_block(*b, data).map(|vs| {
            vs.iter().map(|v| format!("{}: {} {}", v.bwri, v.value(), v.bwri.unit())).collect::<Vec<_>>().join("; ")
        }),
        Request::ReadSerial => {
            SerialInfo::decode(data).map(|s| format!("serial number {:08}, made {}", s.serial, s.made))
        }
        Request::ReadTime => MeterTime::decode(data).map(|t| format!("meter time {}:{:02}", t.stamp, t.second)),
        Request::ReadVariant => Variant::decode(data).map(|v| format!("meter constant {:?} pulses/kWh", v.constant())),
        Request::ReadLastProfileRecord => LastRecord::decode(data)
            .map(|r| format!("last power-profile record at 0x{:04X}, {}, period {} min", r.address, r.stamp, r.period)),
        Request::ReadMemory { memory: 3, len: 15, .. } => {
            ProfileRecord::decode(data).map(|r| format!("power-profile record {}", record_text(&r)))
        }
        _ => Ok(format!("{} data byte(s): {}", data.len(), hex(data))),
    };
    match text {
        Ok(t) => {
            let _ = writeln!(out, "reply:    {t}");
        }
        Err(e) => {
            let _ = writeln!(out, "reply:    does not decode: {e}");
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_replies_and_damage_are_described() {
        let open = describe(&[0x80, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x16, 0x47]).unwrap();
        assert!(open.contains("request: open channel at level 1 (user)"), "{open}");
        assert!(open.contains("password: 6 bytes (not shown)"));
        assert!(!open.contains("01 01 01 01 01 01"), "the password is not printed: {open}");
        let energy = describe(&[
            0x00, 0x30, 0x00, 0x28, 0xC5, 0xFF, 0xFF, 0xFF, 0xFF, 0x04, 0x00, 0x9C, 0x95, 0xFF, 0xFF, 0xFF, 0xFF, 0x44,
            0xAB,
        ])
        .unwrap();
        assert!(energy.contains("address:  0x00 (any meter, point-to-point)"));
        assert!(energy.contains("A+ 3196200, A- n/a, R+ 300444, R- n/a"), "{energy}");
        let bad = describe(&[0x80, 0x00, 0x87, 0x13, 0x0B, 0xDA]).unwrap();
        assert!(bad.contains("BAD (should be 0xD90B)"), "{bad}");
        assert!(bad.contains("4999"), "{bad}");
        let both = describe(&[0x80, 0x00, 0x60, 0x70]).unwrap();
        assert!(both.contains("test channel") && both.contains("status 0 (ok)"));
        assert_eq!(describe(&[0x80, 0x00]), Err(DescribeError::TooShort(2)));
    }

    #[test]
    fn an_exchange_is_decoded_with_units() {
        let text =
            describe_exchange(&[0x00, 0x08, 0x11, 0x00, 0x8D, 0xB6], &[0x00, 0x48, 0x87, 0x70, 0xE2, 0x26]).unwrap();
        assert!(text.contains("active power P, sum (BWRI 0x00): 5530.95 W"), "{text}");
        let text = describe_exchange(&[0x80, 0x08, 0x00, 0x77, 0xE8], &[0x80, 0x05, 0xA0, 0x73]).unwrap();
        assert!(text.contains("status 5 (channel not open)"), "{text}");
    }
}

//! Decoder harness shared by the cargo-fuzz target `modbus_codec` (`fuzz/`) and a seeded noise test, so
//! CI runs the same code without cargo-fuzz. Built for tests and with the `fuzzing` feature only.
//!
//! [`modbus_codec`] feeds one byte string to every Modbus decoder: RTU and TCP request framing, the reply
//! matchers (RTU, RTU with the exact reply length, TCP) and ADU strippers of `ami_link::modbus`,
//! [`Request::decode`], [`Request::decode_response`] for a few fixed requests and for the request the bytes
//! would answer, [`Encoding::decode`] for every type and order, and [`describe_frame`] for both framings
//! and every direction. The bytes are also wrapped in a valid CRC and a valid MBAP header so that mutations reach the
//! PDU decoders behind the checksum gates. It panics (on purpose: that is what a fuzzer reports) when a
//! decoder panics or breaks one of the invariants the bus and the master rely on.

use ami_link::crc::crc16_modbus;
use ami_link::modbus::{
    decode_rtu_request, decode_tcp_frame, encode_tcp, rtu_reply_pdu, tcp_reply_pdu, RtuExactReplyMatcher,
    RtuReplyMatcher, TcpReplyMatcher,
};
use ami_link::{Check, ReplyMatcher};

use super::value::{ByteOrder, Encoding, ValueType, WordOrder};
use super::{describe_frame, Direction, Framing, Request, Response};

/// Feeds `data` to every Modbus decoder and checks their invariants. Panics only on a bug.
pub fn modbus_codec(data: &[u8]) {
    // As received from the wire.
    frames(data);
    // With a valid CRC appended: an RTU frame whose body is `data`.
    let mut rtu = data.to_vec();
    rtu.extend_from_slice(&crc16_modbus(data).to_le_bytes());
    frames(&rtu);
    // With a valid MBAP header: a TCP frame whose PDU is `data`.
    let transaction = data.first().map_or(0, |b| u16::from(*b) << 8);
    frames(&encode_tcp(transaction, data.get(1).copied().unwrap_or(1), data));

    // `data` as a bare PDU.
    pdu(data);
    values(data);
}

/// Framing and reply matching on one buffer.
fn frames(buf: &[u8]) {
    if let Ok(Some(req)) = decode_rtu_request(buf) {
        assert!(req.len <= buf.len() && req.len == req.pdu.len() + 3, "RTU request length {}", req.len);
        pdu(&req.pdu);
    }
    if let Ok(Some(frame)) = decode_tcp_frame(buf) {
        assert!(frame.len <= buf.len() && frame.len == frame.pdu.len() + 7, "TCP frame length {}", frame.len);
        pdu(&frame.pdu);
    }
    let unit = buf.first().copied().unwrap_or(1);
    let function = buf.get(1).copied().unwrap_or(3);
    for f in [function, 0x03, 0x04, 0x01, 0x10] {
        let matcher = RtuReplyMatcher { unit, function: f };
        if let Some(frame) = matched(&matcher, buf) {
            if let Some(p) = rtu_reply_pdu(frame) {
                pdu(p);
            }
        }
        // The same with the exact reply length the master derives from its request: the whole buffer,
        // and the lengths of a write echo (8), an exception (5) and a 2-register read (9).
        for reply_len in [buf.len(), 8, 5, 9] {
            exact(RtuExactReplyMatcher { base: matcher, reply_len }, buf);
        }
        // Another unit: the buffer is foreign or garbage, never our reply.
        let other = RtuReplyMatcher { unit: unit.wrapping_add(1), function: f };
        if let Some(frame) = matched(&other, buf) {
            assert_eq!(frame.first(), Some(&other.unit), "RTU matcher accepted a reply from another unit");
        }
    }
    let transaction = be16_at(buf, 0);
    let tcp_unit = buf.get(6).copied().unwrap_or(0);
    let tcp_function = buf.get(7).copied().unwrap_or(3);
    let matcher = TcpReplyMatcher { transaction, unit: tcp_unit, function: tcp_function };
    if let Some(frame) = matched(&matcher, buf) {
        match tcp_reply_pdu(frame) {
            Some(p) => pdu(p),
            None => panic!("TCP matcher accepted a frame without a PDU: {frame:02X?}"),
        }
    }
    let wrong = TcpReplyMatcher { transaction: transaction.wrapping_add(1), ..matcher };
    assert!(matched(&wrong, buf).is_none(), "TCP matcher accepted another transaction id");
    describe(buf);
}

/// The human description of a captured frame: refused only when too short to hold a function code.
fn describe(buf: &[u8]) {
    for (framing, min) in [(Framing::Rtu, 4), (Framing::Tcp, 8)] {
        for direction in [Direction::Request, Direction::Response, Direction::Auto] {
            match describe_frame(buf, framing, direction) {
                Ok(text) => assert!(text.starts_with("Modbus ") && text.contains("function:"), "{text}"),
                Err(e) => assert!(buf.len() < min, "{} bytes refused as {framing:?}: {e}", buf.len()),
            }
        }
    }
}

/// [`RtuExactReplyMatcher`] agrees with its base matcher except that a complete normal reply of another
/// length becomes a foreign frame of exactly that length (a late reply the bus skips); an exception reply
/// is always accepted.
fn exact(m: RtuExactReplyMatcher, buf: &[u8]) {
    let verdict = m.check(buf);
    // The bus's invariants hold for the exact matcher on its own.
    matched(&m, buf);
    match (m.base.check(buf), verdict) {
        (Check::Complete { len }, Check::Complete { len: got }) => {
            let exception = buf.get(1).is_some_and(|f| f & 0x80 != 0);
            assert_eq!(len, got, "exact matcher changed the reply length");
            assert!(exception || len == m.reply_len, "exact matcher accepted {len} bytes, expected {}", m.reply_len);
        }
        (Check::Complete { len }, Check::Foreign { skip, .. }) => {
            assert_eq!(skip, len, "a late reply is skipped whole");
            assert_ne!(len, m.reply_len, "exact matcher refused a reply of the expected length");
            assert!(buf.get(1).is_some_and(|f| f & 0x80 == 0), "exact matcher refused an exception reply");
        }
        (base, verdict) => assert_eq!(base, verdict, "exact matcher differs from its base on a non-reply"),
    }
}

/// The big-endian u16 at `at`, 0 when the bytes are not there.
fn be16_at(buf: &[u8], at: usize) -> u16 {
    match (buf.get(at), buf.get(at.saturating_add(1))) {
        (Some(&hi), Some(&lo)) => u16::from_be_bytes([hi, lo]),
        _ => 0,
    }
}

/// Runs a matcher and checks that its verdict is usable by the bus: a complete reply lies inside the
/// buffer, and a foreign frame skips at least one byte and no more than the buffer (else the bus would
/// loop or overrun).
fn matched<'a>(matcher: &dyn ReplyMatcher, buf: &'a [u8]) -> Option<&'a [u8]> {
    match matcher.check(buf) {
        Check::Complete { len } => {
            assert!(len > 0 && len <= buf.len(), "Complete {{ len: {len} }} for {} bytes", buf.len());
            buf.get(..len)
        }
        Check::Foreign { skip, .. } => {
            assert!(skip > 0 && skip <= buf.len(), "Foreign {{ skip: {skip} }} for {} bytes", buf.len());
            None
        }
        Check::Incomplete | Check::Corrupt { .. } => None,
    }
}

/// `p` as a request (server side) and as the response to several requests (master side).
fn pdu(p: &[u8]) {
    if let Ok(req) = Request::decode(p) {
        match req.encode() {
            // Equal but for the unused padding bits of FC 15 coil data.
            Ok(again) => assert_eq!(again.len(), p.len(), "re-encoded {req:?}"),
            Err(e) => panic!("decoded request {req:?} does not encode: {e}"),
        }
    }
    for req in requests_for(p) {
        check_response(&req, p);
    }
}

/// Fixed requests plus the one `p` would be the answer to, so mutations reach the accepting paths.
fn requests_for(p: &[u8]) -> Vec<Request> {
    let mut out = vec![
        Request::ReadHoldingRegisters { address: 0x006B, quantity: 3 },
        Request::ReadInputRegisters { address: 0, quantity: 2 },
        Request::ReadCoils { address: 0x0013, quantity: 19 },
        Request::WriteSingleCoil { address: 0x00AC, value: true },
        Request::WriteMultipleRegisters { address: 1, values: vec![0x000A, 0x0102] },
    ];
    let (Some(&function), count) = (p.first(), p.get(1).copied().unwrap_or(0)) else {
        return out;
    };
    let (address, second) = (be16_at(p, 1), be16_at(p, 3));
    let function = function & 0x7F;
    let bits = (u16::from(count) * 8).saturating_sub(u16::from(p.last().copied().unwrap_or(0) % 8));
    out.push(match function {
        0x01 => Request::ReadCoils { address: 0, quantity: bits },
        0x02 => Request::ReadDiscreteInputs { address: 0, quantity: bits },
        0x03 => Request::ReadHoldingRegisters { address: 0, quantity: u16::from(count / 2) },
        0x04 => Request::ReadInputRegisters { address: 0, quantity: u16::from(count / 2) },
        0x05 => Request::WriteSingleCoil { address, value: second == 0xFF00 },
        0x06 => Request::WriteSingleRegister { address, value: second },
        0x0F => Request::WriteMultipleCoils { address, values: vec![false; usize::from(second.min(2000))] },
        _ => Request::WriteMultipleRegisters { address, values: vec![0; usize::from(second.min(200))] },
    });
    out
}

fn check_response(req: &Request, p: &[u8]) {
    match req.decode_response(p) {
        Ok(Response::Registers(regs)) => match req {
            Request::ReadHoldingRegisters { quantity, .. } | Request::ReadInputRegisters { quantity, .. } => {
                assert_eq!(regs.len(), usize::from(*quantity), "registers for {req:?}");
            }
            _ => panic!("registers in reply to {req:?}"),
        },
        Ok(Response::Bits(bits)) => match req {
            Request::ReadCoils { quantity, .. } | Request::ReadDiscreteInputs { quantity, .. } => {
                assert_eq!(bits.len(), usize::from(*quantity), "bits for {req:?}");
            }
            _ => panic!("bits in reply to {req:?}"),
        },
        Ok(Response::Written) => assert!(req.is_write(), "Written in reply to {req:?}"),
        Err(_) => {}
    }
}

/// `data` as registers, decoded with every type, order and a few scales.
fn values(data: &[u8]) {
    let regs: Vec<u16> = data
        .chunks(2)
        .map(|c| u16::from_be_bytes([c.first().copied().unwrap_or(0), c.get(1).copied().unwrap_or(0)]))
        .collect();
    let scale = data.first().map_or(1.0, |b| f64::from(*b) - 128.0);
    for ty in ValueType::ALL {
        for word_order in WordOrder::ALL {
            for byte_order in ByteOrder::ALL {
                let e = Encoding { ty, word_order, byte_order, scale, offset: -1.5 };
                let n = usize::from(ty.registers());
                if let Some(window) = regs.get(..n) {
                    if let Ok(v) = e.decode(window) {
                        assert!(v.is_finite(), "{e:?} gave {v}");
                    }
                }
                // The whole slice: refused unless its length is exactly right.
                if e.decode(&regs).is_ok() {
                    assert_eq!(regs.len(), n, "{e:?} accepted {} registers", regs.len());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;
    use ami_link::modbus::encode_rtu;

    /// Real frames (spec V1.1b3 worked examples), the same as `fuzz/seeds/modbus_codec`.
    fn seeds() -> Vec<Vec<u8>> {
        let pdus: [&[u8]; 10] = [
            &[0x03, 0x00, 0x6B, 0x00, 0x03],
            &[0x03, 0x06, 0x02, 0x2B, 0x00, 0x00, 0x00, 0x64],
            &[0x01, 0x00, 0x13, 0x00, 0x13],
            &[0x01, 0x03, 0xCD, 0x6B, 0x05],
            &[0x02, 0x03, 0xAC, 0xDB, 0x35],
            &[0x05, 0x00, 0xAC, 0xFF, 0x00],
            &[0x0F, 0x00, 0x13, 0x00, 0x0A, 0x02, 0xCD, 0x01],
            &[0x10, 0x00, 0x01, 0x00, 0x02, 0x04, 0x00, 0x0A, 0x01, 0x02],
            &[0x10, 0x00, 0x01, 0x00, 0x02],
            &[0x83, 0x02],
        ];
        let mut out = Vec::new();
        for (k, p) in pdus.iter().enumerate() {
            out.push(p.to_vec());
            out.push(encode_rtu(0x11, p));
            out.push(encode_tcp(k as u16, 0x11, p));
        }
        out
    }

    #[test]
    fn seed_frames_pass_the_harness_and_decode() {
        for s in seeds() {
            modbus_codec(&s);
        }
        // The harness really reaches the accepting paths: a spec reply decodes via its derived request.
        let reply = [0x03, 0x06, 0x02, 0x2B, 0x00, 0x00, 0x00, 0x64];
        let req = requests_for(&reply).pop().unwrap();
        assert_eq!(req.decode_response(&reply).unwrap(), Response::Registers(vec![555, 0, 100]));
    }

    #[test]
    fn harness_survives_20k_random_and_mutated_byte_strings() {
        let mut rng = Rng(0x5EED_0FA1_1B17_E5AA);
        let seeds = seeds();
        for round in 0..20_000 {
            let data: Vec<u8> = if round % 2 == 0 {
                // Pure noise, mostly short (where the length logic lives), sometimes up to 300 bytes.
                let len = if rng.below(4) == 0 { rng.below(300) } else { rng.below(16) };
                (0..len).map(|_| rng.next() as u8).collect()
            } else {
                // A real frame with a few mutations: flip, replace, insert, truncate.
                let mut d = seeds[rng.below(seeds.len())].clone();
                rng.mutate(&mut d);
                d
            };
            modbus_codec(&data);
        }
    }
}

//! Server session harness shared by the cargo-fuzz target `sim_session` (`fuzz/`) and a seeded noise test,
//! so CI runs the same code without cargo-fuzz. Built for tests and with the `fuzzing` feature only.
//!
//! [`sim_session`] feeds one byte string to a [`Session`] of each framing (RTU and MBAP) serving two
//! simulated meters (units 1 and 2) of a small built-in profile with registers, a gap, coils and controls.
//! The first byte steers the run: bits 0–5 the size of the reads the bytes arrive in (1..=64), bit 6 an
//! inter-frame silence after every fourth read, bit 7 a server that answers unit 1 only. The rest is fed
//! three ways: as received from the wire; wrapped as one request PDU in a valid RTU frame / MBAP header
//! for unit 1, so mutations reach the meter behind the CRC; and once more with dropped and corrupted
//! replies. It panics (on purpose: that is what a fuzzer reports) when the session panics or breaks a
//! promise: every reply is a well-formed frame of a served unit that the master's own reply matcher
//! accepts; the answer to a request the master could have sent is one the master's decoder accepts (a
//! normal response or a Modbus exception, never a malformed one); a request the server cannot decode gets
//! the exception its error maps to; buffered bytes stay bounded and a silence empties them.

use std::sync::OnceLock;

use ami_device::{parse_profile, Profile};
use ami_link::crc::crc16_modbus;
use ami_link::modbus::{
    decode_rtu_request, decode_tcp_frame, encode_rtu, encode_tcp, rtu_reply_pdu, tcp_reply_pdu, RtuReplyMatcher,
    TcpReplyMatcher, MAX_PDU_LEN, MAX_RTU_ADU_LEN,
};
use ami_link::{Check, ReplyMatcher};
use ami_protocols::modbus::{encode_exception, Function, PduError, Request};

use crate::server::MAX_BUFFER;
use crate::{Session, SimFraming, SimMeter, SimOptions, Simulator};

/// Values in input and holding registers with a gap the profile lets the master read across, a coil
/// shared by a value and a relay control, and a register control that accepts only two words.
const PROFILE: &str = r#"<profile id="fuzz-meter" protocol="modbus" manufacturer="ami" model="fuzz">
  <modbus max-block="40" max-gap="4"/>
  <value name="voltage_l1" obis="1-0:32.7.0" unit="V"><modbus table="input" register="0" type="f32"/></value>
  <value name="voltage_l2" obis="1-0:52.7.0" unit="V"><modbus table="input" register="2" type="f32" word-order="low-first"/></value>
  <value name="power_total" obis="1-0:16.7.0" unit="W"><modbus table="input" register="8" type="i32" scale="0.1"/></value>
  <value name="energy_import_total" obis="1-0:1.8.0" unit="Wh"><modbus table="input" register="10" type="u64"/></value>
  <value name="serial_number" obis="0-0:96.1.0" unit="" kind="static"><modbus table="holding" register="0xFFFE" type="u32"/></value>
  <value name="setpoint" obis="0-0:96.50.0" unit="" kind="static"><modbus table="holding" register="100" type="u16" byte-order="little"/></value>
  <value name="relay_state" obis="0-0:96.3.10" unit="" kind="static"><modbus table="coil" register="0"/></value>
  <value name="door" obis="0-0:96.3.11" unit="" kind="static"><modbus table="discrete" register="7"/></value>
  <control name="relay"><modbus coil="0"/></control>
  <control name="breaker"><modbus register="101" on="85" off="170"/></control>
</profile>"#;

fn profile() -> &'static Profile {
    static PROFILE_CELL: OnceLock<Profile> = OnceLock::new();
    PROFILE_CELL.get_or_init(|| match parse_profile(PROFILE, "harness.xml") {
        Ok(p) => p,
        Err(e) => panic!("the harness profile is invalid: {e:?}"),
    })
}

/// Units 1 and 2, each a meter of the harness profile.
fn simulator() -> Simulator {
    let sim = Simulator::new();
    sim.insert(1, SimMeter::new(profile(), 1));
    sim.insert(2, SimMeter::new(profile(), 2));
    sim
}

/// Feeds `data` to server sessions of both framings and checks their promises. Panics only on a bug.
pub fn sim_session(data: &[u8]) {
    let (&control, body) = data.split_first().unwrap_or((&0, &[]));
    for framing in [SimFraming::Rtu, SimFraming::Tcp] {
        stream(framing, control, body, false);
        stream(framing, control, body, true);
        single(framing, body);
    }
}

/// Units a session with this control byte answers.
fn served(control: u8) -> Vec<u8> {
    if control & 0x80 != 0 {
        vec![1]
    } else {
        Vec::new()
    }
}

/// `body` as received from the wire, in reads of a size the control byte chooses.
fn stream(framing: SimFraming, control: u8, body: &[u8], faults: bool) {
    let units = served(control);
    let (drop_rate, corrupt_rate) = if faults { (0.3, 0.3) } else { (0.0, 0.0) };
    let opts = SimOptions { framing, units: units.clone(), drop_rate, corrupt_rate, ..SimOptions::default() };
    let mut s = Session::new(simulator(), &opts, u64::from(control), "fuzz");
    let read = 1 + usize::from(control & 0x3F);
    for (i, piece) in body.chunks(read).enumerate() {
        let result = s.handle_input(piece);
        while let Some(reply) = s.poll_transmit() {
            if !faults {
                check_reply(framing, &units, &reply);
            }
        }
        let bound = match framing {
            SimFraming::Rtu => MAX_RTU_ADU_LEN + piece.len(),
            SimFraming::Tcp => MAX_BUFFER,
        };
        assert!(s.buffered() <= bound, "{} bytes buffered (bound {bound})", s.buffered());
        if let Err(e) = result {
            // Only MBAP gives up on a connection; the driver closes it, nothing more is read.
            assert_eq!(framing, SimFraming::Tcp, "RTU session gave up: {e}");
            assert_eq!(s.buffered(), 0, "a closed session keeps no bytes");
            return;
        }
        if control & 0x40 != 0 && i % 4 == 3 {
            s.handle_silence();
            assert_eq!(s.buffered(), 0, "a silence forgets partial frames");
        }
    }
    s.handle_silence();
    assert_eq!(s.buffered(), 0, "a silence forgets partial frames");
    assert!(s.poll_transmit().is_none(), "a silence answers nothing");
}

/// A reply is one well-formed frame of a served unit that the master's reply matcher accepts whole.
fn check_reply(framing: SimFraming, units: &[u8], reply: &[u8]) {
    let serves = |unit: u8| unit != 0 && (units.is_empty() || units.contains(&unit)) && unit <= 2;
    match framing {
        SimFraming::Rtu => {
            let (Some(&unit), Some(&function)) = (reply.first(), reply.get(1)) else {
                panic!("RTU reply too short: {reply:02X?}");
            };
            assert!(serves(unit), "RTU reply from unit {unit}, which this server does not answer");
            assert_eq!(crc16_modbus(reply), 0, "RTU reply with a bad CRC: {reply:02X?}");
            let m = RtuReplyMatcher { unit, function: function & 0x7F };
            assert_eq!(m.check(reply), Check::Complete { len: reply.len() }, "RTU reply {reply:02X?}");
        }
        SimFraming::Tcp => {
            let frame = match decode_tcp_frame(reply) {
                Ok(Some(frame)) => frame,
                other => panic!("MBAP reply {reply:02X?} does not decode: {other:?}"),
            };
            assert_eq!(frame.len, reply.len(), "MBAP reply with trailing bytes");
            assert!(serves(frame.unit), "MBAP reply from unit {}, which this server does not answer", frame.unit);
            let function = frame.pdu.first().copied().unwrap_or_default() & 0x7F;
            let m = TcpReplyMatcher { transaction: frame.transaction, unit: frame.unit, function };
            assert_eq!(m.check(reply), Check::Complete { len: reply.len() }, "MBAP reply {reply:02X?}");
        }
    }
}

/// `pdu` as one request to unit 1 in a valid ADU: the answer must be what the master accepts.
fn single(framing: SimFraming, pdu: &[u8]) {
    if pdu.is_empty() || pdu.len() > MAX_PDU_LEN {
        return;
    }
    let frame = match framing {
        SimFraming::Rtu => encode_rtu(1, pdu),
        SimFraming::Tcp => encode_tcp(0x5A17, 1, pdu),
    };
    // RTU has no length field: only a frame the deframer takes whole is one request (else it resynchronises
    // inside it, which the stream pass covers).
    if framing == SimFraming::Rtu && !matches!(decode_rtu_request(&frame), Ok(Some(r)) if r.len == frame.len()) {
        return;
    }
    let opts = SimOptions { framing, ..SimOptions::default() };
    let mut s = Session::new(simulator(), &opts, 1, "fuzz");
    if let Err(e) = s.handle_input(&frame) {
        panic!("a valid MBAP frame closed the session: {e}");
    }
    let replies: Vec<Vec<u8>> = std::iter::from_fn(|| s.poll_transmit()).collect();
    assert!(replies.len() <= 1, "{} replies to one request", replies.len());
    assert_eq!(s.buffered(), 0, "a whole request leaves nothing buffered");
    let Some(reply) = replies.first() else {
        // Silence is only for a PDU without a function code, which cannot be here.
        panic!("no answer to {frame:02X?}");
    };
    check_reply(framing, &[], reply);
    let answer = match framing {
        SimFraming::Rtu => rtu_reply_pdu(reply),
        SimFraming::Tcp => tcp_reply_pdu(reply),
    };
    let Some(answer) = answer else { panic!("reply {reply:02X?} carries no PDU") };
    match Request::decode(pdu) {
        Ok(request) => match request.decode_response(answer) {
            Ok(_) | Err(PduError::Exception { .. }) => {}
            Err(e) => panic!("the master refuses the answer {answer:02X?} to {request:?}: {e}"),
        },
        Err(e) => {
            let function = Function::from(pdu.first().copied().unwrap_or_default());
            let expected = e.server_exception().map(|x| encode_exception(function, x));
            assert_eq!(Some(answer.to_vec()), expected, "answer to the undecodable request {pdu:02X?} ({e})");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: a fixed seed keeps the test reproducible.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % n as u64).unwrap_or(0)
        }
    }

    /// Request PDUs the master sends, and a few it never would (the same as `fuzz/seeds/sim_session`).
    pub(crate) fn seed_pdus() -> Vec<Vec<u8>> {
        vec![
            vec![0x04, 0x00, 0x00, 0x00, 0x0E], // read input registers 0..14 (across the gap)
            vec![0x04, 0x00, 0x00, 0x00, 0x02], // read voltage_l1
            vec![0x03, 0xFF, 0xFE, 0x00, 0x02], // read the serial number at the table end
            vec![0x03, 0xFF, 0xFF, 0x00, 0x02], // … one past it: 02
            vec![0x01, 0x00, 0x00, 0x00, 0x01], // read the relay coil
            vec![0x02, 0x00, 0x07, 0x00, 0x01], // read the door input
            vec![0x05, 0x00, 0x00, 0x00, 0x00], // relay off
            vec![0x05, 0x00, 0x00, 0x12, 0x34], // bad coil value: 03
            vec![0x06, 0x00, 0x65, 0x00, 0xAA], // breaker off
            vec![0x06, 0x00, 0x65, 0x00, 0x01], // breaker: a word it refuses
            vec![0x0F, 0x00, 0x00, 0x00, 0x01, 0x01, 0x01], // write one coil
            vec![0x10, 0x00, 0x64, 0x00, 0x02, 0x04, 0x00, 0x03, 0x00, 0x55], // setpoint + breaker on
            vec![0x10, 0xFF, 0xFE, 0x00, 0x02, 0x04, 0, 0, 0, 1], // write the serial number
            vec![0x2B, 0x0E, 0x01, 0x00],       // read device identification: 01
            vec![0x04, 0x00, 0x00, 0x00, 0x7E], // 126 registers: 03
        ]
    }

    /// Seed inputs: a control byte, then frames as a master would send them.
    pub(crate) fn seeds() -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for (k, pdu) in seed_pdus().into_iter().enumerate() {
            let control = u8::try_from(k).unwrap_or(0).wrapping_mul(37);
            let mut rtu = vec![control];
            rtu.extend(encode_rtu(1, &pdu));
            rtu.extend(encode_rtu(2, &pdu));
            out.push(rtu);
            let mut tcp = vec![control];
            tcp.extend(encode_tcp(u16::try_from(k).unwrap_or(0), 1, &pdu));
            out.push(tcp);
            let mut bare = vec![control];
            bare.extend(pdu);
            out.push(bare);
        }
        out
    }

    #[test]
    fn seeds_pass_the_harness_and_get_answers() {
        for s in seeds() {
            sim_session(&s);
        }
        // The harness reaches the answering paths: a read of the relay coil through a whole session.
        let opts = SimOptions { framing: SimFraming::Rtu, ..SimOptions::default() };
        let mut s = Session::new(simulator(), &opts, 1, "t");
        s.handle_input(&encode_rtu(1, &[0x01, 0x00, 0x00, 0x00, 0x01])).unwrap();
        assert_eq!(s.poll_transmit(), Some(encode_rtu(1, &[0x01, 0x01, 0x01])));
    }

    #[test]
    fn harness_survives_5k_random_and_mutated_byte_strings() {
        let mut rng = Rng(0x0005_1E55_10F0_22ED);
        let seeds = seeds();
        for round in 0..5_000 {
            let data: Vec<u8> = if round % 2 == 0 {
                let len = if rng.below(4) == 0 { rng.below(600) } else { rng.below(24) };
                (0..len).map(|_| rng.next() as u8).collect()
            } else {
                let mut d = seeds[rng.below(seeds.len())].clone();
                for _ in 0..=rng.below(3) {
                    let at = rng.below(d.len() + 1);
                    match rng.below(4) {
                        0 if at < d.len() => d[at] ^= 1 << rng.below(8),
                        1 if at < d.len() => d[at] = rng.next() as u8,
                        2 => d.insert(at, rng.next() as u8),
                        _ => d.truncate(at),
                    }
                }
                d
            };
            sim_session(&data);
        }
    }
}

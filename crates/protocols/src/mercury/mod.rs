//! Incotex Mercury 230 / 231 / 234 / 236 electricity meters (the Incotex command set over RS-485).
//!
//! What it owns: the frame (`address | body | CRC-16/MODBUS`, [`frame`]), the requests this crate sends
//! and their reply lengths ([`request`]), the reply data decoders with the protocol's odd byte orders
//! ([`value`]), the sans-IO session of one meter (channel open at level 1 or 2, keep-alive before the
//! meter's 240 s idle limit, re-open on status 5, retries, typed errors: [`session`]), the incremental
//! power-profile walk ([`profile`]), the async driver over the link `Bus` ([`client`]) and frame
//! descriptions for humans ([`describe()`]). It never opens a transport and never reads a clock except in
//! the async driver.
//!
//! Reference: Incotex, "Описание системы команд приборов учета электроэнергии Меркурий 203.2TD, 204, 208,
//! 230, 231, 234, 236, 238" (05.2023, stored as `docs/m236.pdf` in ru-asdx/mercury-em);
//! `../shared/protocols/mercury230.md` holds the checked byte examples, each of which is a test in
//! `tests/mercury_examples.rs`.
//!
//! ```
//! use ami_protocols::mercury::{Address, Bwri, EnergyArray, Request, Tariff};
//! // Energy of January, all tariffs, from meter 0x80.
//! let frame = Request::ReadEnergy { array: EnergyArray::Month(1), tariff: Tariff::SUM }.encode(Address(0x80));
//! assert_eq!(frame, [0x80, 0x05, 0x31, 0x00, 0x2C, 0x75]);
//! assert_eq!(Request::ReadInstant(Bwri::FREQUENCY).encode(Address(0x80)), [0x80, 0x08, 0x11, 0x40, 0xA5, 0x86]);
//! ```
//!
//! Panic contract: no byte sequence from a meter and no call order panics anything here; failures are
//! [`FrameError`], [`DecodeError`] or [`MercuryError`] values.

pub mod client;
pub mod describe;
pub mod frame;
pub mod profile;
pub mod request;
pub mod session;
pub mod value;

pub use client::MercuryClient;
pub use describe::{describe, describe_exchange, DescribeError};
pub use frame::{Address, Expect, Frame, FrameError, Status, Timing};
pub use profile::ProfileWalk;
pub use request::{Bwri, EnergyArray, Level, Password, PasswordError, PowerKind, Quantity, Request, Tariff};
pub use session::{Event, MercuryError, MercuryMeter, RequestId, Session, Transmit};
pub use value::{
    DecodeError, Energy, InstantValue, LastRecord, MeterTime, PhaseEnergy, ProfileRecord, SerialInfo, Stamp, Variant,
};

/// Decoder harness shared by the cargo-fuzz target `mercury` (`fuzz/`) and a seeded test, so CI runs the
/// same code without cargo-fuzz. Built for tests and with the `fuzzing` feature only.
///
/// [`mercury`](harness::mercury) feeds one byte string to the frame parser, the reply matcher, the
/// meter-side request parser, every reply decoder, `describe`, and as line input to a [`Session`]; the
/// bytes are also wrapped in a valid frame so mutations reach the code behind the CRC. It panics (on
/// purpose: that is what a fuzzer reports) when a decoder panics or breaks an invariant callers rely on.
#[cfg(any(test, feature = "fuzzing"))]
pub mod harness {
    use std::time::{Duration, Instant};

    use ami_link::{Check, ReplyMatcher};

    use super::frame::encode;
    use super::value::decode_temperature;
    use super::*;

    /// Feeds `data` to every Mercury decoder and the session. Panics only on a bug.
    pub fn mercury(data: &[u8]) {
        let address = Address(data.first().copied().unwrap_or(0x80));
        let body = data.get(1..).unwrap_or_default();
        let body = body.get(..body.len().min(255)).unwrap_or_default();
        let wrapped = encode(address, body);
        for bytes in [data, wrapped.as_slice()] {
            frames(bytes);
        }
        if let Ok(f) = Frame::parse(&wrapped) {
            assert_eq!(f.address, address);
            assert_eq!(f.body, body);
        }
        decoders(body);
        session(data);
    }

    fn frames(bytes: &[u8]) {
        let _ = Frame::parse(bytes);
        if let Ok((a, r)) = Request::parse(bytes) {
            assert_eq!(r.encode(a), bytes, "request {r:?} re-encodes");
        }
        let _ = describe(bytes);
        let _ = describe_exchange(&Request::ReadSerial.encode(Address(0x80)), bytes);
        let _ = describe_exchange(bytes, bytes);
        let address = Address(bytes.first().copied().unwrap_or(0));
        for data_len in [1, 2, 3, 7, 9, 12, 15, 16] {
            let expect = Expect { address, data_len };
            match expect.check(bytes) {
                Check::Complete { len } => {
                    assert!(
                        len == expect.frame_len() || len == 4,
                        "Complete {{ len: {len} }} for {data_len} data bytes"
                    );
                    let frame = bytes.get(..len).expect("len within the buffer");
                    let f = Frame::parse(frame).unwrap_or_else(|e| panic!("matcher accepted a bad frame: {e}"));
                    assert_eq!(f.address, address);
                }
                Check::Foreign { skip, .. } => {
                    assert!(skip > 0 && skip <= bytes.len(), "Foreign {{ skip: {skip} }} of {}", bytes.len());
                }
                Check::Incomplete | Check::Corrupt { .. } => {}
            }
        }
    }

    fn decoders(data: &[u8]) {
        if let Ok(e) = Energy::decode(data) {
            assert_eq!(e.encode().as_slice(), data);
        }
        if let Ok(e) = PhaseEnergy::decode(data) {
            assert_eq!(e.encode().as_slice(), data);
        }
        let b = Bwri(data.first().copied().unwrap_or(0));
        if let Ok(v) = InstantValue::decode(b, data) {
            assert!(v.value().is_finite());
            assert_eq!(v.to_bytes().as_slice(), data);
        }
        if let Ok(vs) = InstantValue::decode_block(b, data) {
            assert_eq!(vs.len(), b.block_values());
        }
        let _ = decode_temperature(data);
        if let Ok(s) = SerialInfo::decode(data) {
            assert_eq!(s.encode().as_slice(), data);
        }
        if let Ok(t) = MeterTime::decode(data) {
            assert_eq!(MeterTime::decode(&t.encode()), Ok(t));
        }
        if let Ok(v) = Variant::decode(data) {
            let _ = v.constant();
        }
        let last = LastRecord::decode(data);
        if let Ok(r) = last {
            assert_eq!(r.encode().as_slice(), data);
        }
        if let Ok(r) = ProfileRecord::decode(data) {
            assert_eq!(ProfileRecord::decode(&r.encode()), Ok(r));
            let _ = r.mean_power_w(0, 5000);
            let last = LastRecord { address: 0x10, status: 0, stamp: r.stamp, period: r.period };
            let mut walk = ProfileWalk::new(last, r.stamp.plus_minutes(-600), r.stamp, 16);
            let mut steps = 0;
            while walk.next_address().is_some() {
                let shifted = ProfileRecord { stamp: r.stamp.plus_minutes(-30 * steps), ..r };
                walk.handle_record(Some(shifted));
                steps += 1;
                assert!(steps <= 20, "profile walk does not end");
            }
            assert!(walk.finish().len() <= 17);
        }
    }

    /// `data` as everything a meter at 0x80 sends during a few requests; timeouts in between.
    fn session(data: &[u8]) {
        let mut meter = MercuryMeter::new("fuzz", Address(0x80));
        meter.retries = 1;
        let mut s = Session::new(meter);
        let ids = [
            s.request(Request::ReadEnergy { array: EnergyArray::FromReset, tariff: Tariff::SUM }),
            s.request(Request::ReadInstant(Bwri::FREQUENCY)),
            s.close(),
        ];
        let mut now = Instant::now();
        let mut done = Vec::new();
        let mut rest = data;
        for k in 0..64 {
            let tx = s.poll_transmit(now);
            match (rest.split_first(), tx) {
                (Some((&n, tail)), Some(tx)) => {
                    let n = usize::from(n % 24).min(tail.len());
                    let (chunk, tail) = tail.split_at(n);
                    rest = tail;
                    let expect = tx.expect.expect("individual address expects a reply");
                    match expect.check(chunk) {
                        Check::Complete { len } => s.handle_reply(now, chunk.get(..len).unwrap_or_default()),
                        Check::Corrupt { reason } => s.handle_corrupt(now, &reason),
                        _ if k % 3 == 0 => {
                            // A frame the matcher would not pass: the session must cope all the same.
                            s.handle_reply(now, &encode(Address(0x80), chunk));
                        }
                        _ => {
                            now += tx.timeout;
                            s.handle_timeout(now);
                        }
                    }
                }
                (None, Some(tx)) => {
                    now += tx.timeout;
                    s.handle_timeout(now);
                }
                (_, None) => {
                    now += Duration::from_secs(300);
                    s.handle_timeout(now);
                }
            }
            while let Some(e) = s.poll_event() {
                if let Event::Done { id, .. } = e {
                    assert!(ids.contains(&id), "unknown id {id}");
                    assert!(!done.contains(&id), "request {id} ended twice");
                    done.push(id);
                }
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::test_rng::Rng;

        /// The byte examples of the protocol notes and frames built here.
        fn seeds() -> Vec<Vec<u8>> {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/mercury");
            let mut out: Vec<Vec<u8>> = std::fs::read_dir(dir)
                .map(|d| d.filter_map(|e| std::fs::read(e.ok()?.path()).ok()).collect())
                .unwrap_or_default();
            let hexes = [
                "80 00 60 70",
                "80 01 01 01 01 01 01 01 01 16 47",
                "80 05 A0 73",
                "80 05 31 00 2C 75",
                "80 00 87 13 0B D9",
                "00 30 00 28 C5 FF FF FF FF 04 00 9C 95 FF FF FF FF 44 AB",
                "00 48 87 70 E2 26",
                "00 00 18 71 CA",
                "00 02 80 71",
                "4D 00 10 1A 13 00 28 12 22 1E 6A 4A",
            ];
            for h in hexes {
                out.push(h.split(' ').filter_map(|b| u8::from_str_radix(b, 16).ok()).collect());
            }
            let rec = ProfileRecord {
                status: 0,
                stamp: Stamp::new(2026, 1, 1, 12, 30).unwrap_or(Stamp::from_minutes(0)),
                period: 30,
                counts: [Some(1000), Some(0), Some(200), None],
            };
            out.push(encode(Address(0x80), &rec.encode()));
            out.push(encode(Address(0x80), &[12, 34, 56, 78, 1, 2, 21]));
            out.push(encode(Address(0x80), &[0x59, 0x30, 0x13, 0x02, 0x28, 0x12, 0x22, 0x01]));
            out
        }

        #[test]
        fn seed_frames_pass_the_harness() {
            for s in seeds() {
                mercury(&s);
            }
        }

        #[test]
        fn harness_survives_20k_random_and_mutated_byte_strings() {
            let mut rng = Rng(0x5EED_0230_0000_8080);
            let seeds = seeds();
            for round in 0..20_000 {
                let data: Vec<u8> = if round % 2 == 0 {
                    let len = if rng.below(4) == 0 { rng.below(300) } else { rng.below(24) };
                    let mut d: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                    if let Some(first) = d.first_mut() {
                        *first = [0x80, 0x00, *first][rng.below(3)];
                    }
                    d
                } else {
                    let mut d = seeds[rng.below(seeds.len())].clone();
                    rng.mutate(&mut d);
                    d
                };
                mercury(&data);
            }
        }
    }
}

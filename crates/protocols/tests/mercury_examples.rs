//! Every byte example of `../shared/protocols/mercury230.md` ("Byte examples", address 0x80 unless
//! stated): our encoder gives the request bytes, our decoder gives the stated value from the reply bytes,
//! and every CRC in them is what CRC-16/MODBUS gives (low byte first). Plus one field capture of an
//! `08 13` reply (last power-profile record).

use ami_link::crc::crc16_modbus;
use ami_link::{Check, ReplyMatcher};
use ami_protocols::mercury::frame::encode;
use ami_protocols::mercury::{
    describe, Address, Bwri, Energy, EnergyArray, Expect, Frame, InstantValue, LastRecord, Level, Password, Request,
    Stamp, Status, Tariff,
};

const A: Address = Address(0x80);

fn bytes(hex: &str) -> Vec<u8> {
    hex.split_whitespace().map(|b| u8::from_str_radix(b, 16).unwrap()).collect()
}

/// The request frame, its CRC checked against CRC-16/MODBUS of the rest.
fn request(req: &Request, address: Address, hex: &str) {
    let want = bytes(hex);
    assert_eq!(req.encode(address), want, "{}", req.name());
    let split = want.len() - 2;
    assert_eq!(crc16_modbus(&want[..split]).to_le_bytes(), want[split..]);
    assert_eq!(Request::parse(&want).unwrap(), (address, req.clone()));
}

/// The reply frame passes the request's matcher and CRC; returns its data.
fn reply(req: &Request, address: Address, hex: &str) -> Vec<u8> {
    let frame = bytes(hex);
    let expect = Expect { address, data_len: req.reply_len() };
    assert_eq!(expect.check(&frame), Check::Complete { len: frame.len() }, "matcher on {hex}");
    let f = Frame::parse(&frame).unwrap();
    assert_eq!(f.address, address);
    f.body.to_vec()
}

#[test]
fn test_channel() {
    request(&Request::Test, A, "80 00 60 70");
    assert_eq!(Frame::parse(&bytes("80 00 60 70")).unwrap().status(), Some(Status::Ok));
}

#[test]
fn open_level_1_and_2_with_digit_passwords() {
    let open1 = Request::Open { level: Level::User, password: Password::factory_user() };
    request(&open1, A, "80 01 01 01 01 01 01 01 01 16 47");
    assert_eq!(reply(&open1, A, "80 00 60 70"), [0x00]);
    let open2 = Request::Open { level: Level::Admin, password: "020202020202".parse().unwrap() };
    request(&open2, A, "80 01 02 02 02 02 02 02 02 D1 C1");
}

#[test]
fn close_and_channel_not_open() {
    request(&Request::Close, A, "80 02 E1 B1");
    let data = reply(&Request::Close, A, "80 05 A0 73");
    assert_eq!(Frame::parse(&bytes("80 05 A0 73")).unwrap().status(), Some(Status::ChannelNotOpen));
    assert_eq!(data, [0x05]);
}

#[test]
fn energy_from_reset_all_tariffs() {
    request(&Request::ReadEnergy { array: EnergyArray::FromReset, tariff: Tariff::SUM }, A, "80 05 00 00 39 E5");
}

#[test]
fn energy_of_january() {
    let req = Request::ReadEnergy { array: EnergyArray::Month(1), tariff: Tariff::SUM };
    request(&req, A, "80 05 31 00 2C 75");
    // The notes give the data; the CRC (elided there) is computed: 0x0F3F, sent 3F 0F.
    let data = bytes("00 00 70 0A FF FF FF FF 00 00 E8 03 00 00 00 00");
    let frame = encode(A, &data);
    assert_eq!(frame[frame.len() - 2..], [0x3F, 0x0F]);
    let hex: Vec<String> = frame.iter().map(|b| format!("{b:02X}")).collect();
    let got = Energy::decode(&reply(&req, A, &hex.join(" "))).unwrap();
    assert_eq!(got, Energy { a_plus: Some(2672), a_minus: None, r_plus: Some(1000), r_minus: Some(0) });
}

#[test]
fn voltage_of_phase_1() {
    let req = Request::ReadInstant(Bwri::voltage(1));
    request(&req, A, "80 08 11 11 64 7A");
    // Reply data 00 5B 56 (CRC elided in the notes; computed: EA92, sent 92 EA).
    let data = reply(&req, A, "80 00 5B 56 92 EA");
    let v = InstantValue::decode(Bwri::voltage(1), &data).unwrap();
    assert_eq!(v.raw, 22_107);
    assert!((v.value() - 221.07).abs() < 1e-9);
}

#[test]
fn blocks_of_voltage_current_and_power() {
    let u = Request::ReadInstantBlock(Bwri::voltage(1));
    request(&u, A, "80 08 16 11 66 4A");
    assert_eq!(u.reply_len(), 9);
    let i = Request::ReadInstantBlock(Bwri::current(1));
    request(&i, A, "80 08 16 21 66 5E");
    assert_eq!(i.reply_len(), 9);
    assert_eq!(Bwri::current(1).divisor(), 1000.0);
    let p = Request::ReadInstantBlock(Bwri::active_power(0));
    request(&p, A, "80 08 16 00 A6 46");
    assert_eq!(p.reply_len(), 12);
}

#[test]
fn frequency() {
    let req = Request::ReadInstant(Bwri::FREQUENCY);
    request(&req, A, "80 08 11 40 A5 86");
    let v = InstantValue::decode(Bwri::FREQUENCY, &reply(&req, A, "80 00 87 13 0B D9")).unwrap();
    assert_eq!(v.raw, 4999);
    assert!((v.value() - 49.99).abs() < 1e-9);
}

#[test]
fn serial_and_time_requests() {
    request(&Request::ReadSerial, A, "80 08 00 77 E8");
    assert_eq!(Request::ReadSerial.reply_len(), 7);
    request(&Request::ReadTime, A, "80 04 00 72 E8");
    assert_eq!(Request::ReadTime.reply_len(), 8);
}

#[test]
fn address_0_energy_from_reset() {
    let req = Request::ReadEnergy { array: EnergyArray::FromReset, tariff: Tariff::SUM };
    request(&req, Address::ANY, "00 05 00 00 10 25");
    let data = reply(&req, Address::ANY, "00 30 00 28 C5 FF FF FF FF 04 00 9C 95 FF FF FF FF 44 AB");
    let e = Energy::decode(&data).unwrap();
    assert_eq!(e, Energy { a_plus: Some(3_196_200), a_minus: None, r_plus: Some(300_444), r_minus: None });
}

#[test]
fn address_0_active_power_sum_with_reactive_direction_bit() {
    let req = Request::ReadInstant(Bwri::active_power(0));
    request(&req, Address::ANY, "00 08 11 00 8D B6");
    let v = InstantValue::decode(Bwri::active_power(0), &reply(&req, Address::ANY, "00 48 87 70 E2 26")).unwrap();
    assert_eq!(v.raw, 0x08_7087);
    assert_eq!(v.raw, 553_095);
    assert!(v.reactive_reverse, "bit 6: reactive power reverse");
    assert!(!v.active_reverse, "bit 7 clear: active power forward");
    assert!((v.value() - 5530.95).abs() < 1e-9);
}

#[test]
fn address_0_temperature() {
    let req = Request::ReadInstant(Bwri::TEMPERATURE);
    request(&req, Address::ANY, "00 08 11 70 8C 52");
    let data = reply(&req, Address::ANY, "00 00 18 71 CA");
    assert_eq!(ami_protocols::mercury::value::decode_temperature(&data), Ok(24));
}

#[test]
fn address_0_internal_error() {
    let req = Request::ReadInstant(Bwri(0x12));
    request(&req, Address::ANY, "00 08 11 12 0D BB");
    let data = reply(&req, Address::ANY, "00 02 80 71");
    assert_eq!(data, [0x02]);
    assert_eq!(Frame::parse(&bytes("00 02 80 71")).unwrap().status(), Some(Status::InternalError));
    assert!(describe(&bytes("00 02 80 71")).unwrap().contains("status 2 (internal meter error)"));
}

#[test]
fn field_capture_of_the_last_power_profile_record() {
    // A reply to `4D 08 13` quoted in a public field script: record at 0x0010, status 0x1A, 13:00
    // 28.12.2022, 30-minute period.
    let req = Request::ReadLastProfileRecord;
    let data = reply(&req, Address(0x4D), "4D 00 10 1A 13 00 28 12 22 1E 6A 4A");
    let last = LastRecord::decode(&data).unwrap();
    assert_eq!(
        last,
        LastRecord { address: 0x0010, status: 0x1A, stamp: Stamp::new(2022, 12, 28, 13, 0).unwrap(), period: 30 }
    );
    assert_eq!(Request::profile_record(0x0010).encode(Address(0x4D))[..6], [0x4D, 0x06, 0x03, 0x00, 0x10, 0x0F]);
}

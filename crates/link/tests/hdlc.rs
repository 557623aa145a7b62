//! HDLC frame format type 3 (IEC 62056-46): byte vectors both ways, round trip, hostile input.

use ami_link::crc::crc16_x25;
use ami_link::hdlc::{Address, Control, Frame, FrameError};
use proptest::prelude::*;

#[test]
fn crc16_x25_catalogue_check_value() {
    assert_eq!(crc16_x25(b"123456789"), 0x906E);
    assert_eq!(crc16_x25(&[]), 0x0000);
}

#[test]
fn crc16_x25_table_matches_bitwise_reference() {
    fn bitwise(data: &[u8]) -> u16 {
        let mut crc = 0xFFFF_u16;
        for &b in data {
            crc ^= u16::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0x8408 } else { crc >> 1 };
            }
        }
        !crc
    }
    let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    for n in [0, 1, 2, 7, 255, 1000] {
        assert_eq!(crc16_x25(&data[..n]), bitwise(&data[..n]));
    }
}

/// SNRM from the public client (SAP 0x10) to server upper address 1 — the classic short vector.
/// The FCS `0F 01` is what crc16_x25 gives over `A0 07 03 21 93`.
const SNRM: [u8; 9] = [
    0x7E, // flag
    0xA0, 0x07, // format type 3, no segmentation, length 7
    0x03, // destination: server upper address 1 → (1 << 1) | 1
    0x21, // source: client 0x10 → (0x10 << 1) | 1
    0x93, // SNRM with poll bit
    0x0F, 0x01, // FCS, low byte first
    0x7E, // flag
];

fn snrm() -> Frame {
    Frame {
        segmented: false,
        dest: Address::server(1, None),
        src: Address::PUBLIC_CLIENT,
        control: Control::SNRM { poll: true },
        info: Vec::new(),
    }
}

#[test]
fn snrm_vector_decodes() {
    assert_eq!(crc16_x25(&SNRM[1..6]).to_le_bytes(), [0x0F, 0x01]);
    let (frame, used) = Frame::decode(&SNRM).unwrap().unwrap();
    assert_eq!(used, 9);
    assert_eq!(frame, snrm());
}

#[test]
fn snrm_vector_encodes() {
    assert_eq!(snrm().encode().unwrap(), SNRM);
}

/// UA reply without negotiation parameters: server 1 → client 0x10, final bit set.
/// Built from first principles; FCS computed with CRC-16/X.25 over `A0 07 21 03 73`.
const UA: [u8; 9] = [0x7E, 0xA0, 0x07, 0x21, 0x03, 0x73, 0x01, 0x40, 0x7E];

#[test]
fn ua_vector_both_ways() {
    let frame = Frame {
        segmented: false,
        dest: Address::PUBLIC_CLIENT,
        src: Address::server(1, None),
        control: Control::UA { poll: true },
        info: Vec::new(),
    };
    assert_eq!(frame.encode().unwrap(), UA);
    assert_eq!(Frame::decode(&UA).unwrap(), Some((frame, 9)));
}

#[test]
fn i_frame_with_aarq_prefix_has_hcs_and_fcs() {
    let info = vec![0xE6, 0xE6, 0x00, 0x60, 0x1D, 0xA1, 0x09];
    let frame = Frame {
        segmented: false,
        dest: Address::server(1, Some(0x11)),
        src: Address::PUBLIC_CLIENT,
        control: Control::I { send_seq: 0, recv_seq: 0, poll: true },
        info: info.clone(),
    };
    let bytes = frame.encode().unwrap();
    // 2 format + 2 dest + 1 src + 1 control + 2 HCS + 7 info + 2 FCS = 17.
    assert_eq!(&bytes[..7], &[0x7E, 0xA0, 0x11, 0x02, 0x23, 0x21, 0x10]);
    assert_eq!(bytes.len(), 19);
    let hcs = crc16_x25(&bytes[1..7]).to_le_bytes();
    assert_eq!(&bytes[7..9], &hcs);
    assert_eq!(&bytes[9..16], &info[..]);
    let fcs = crc16_x25(&bytes[1..16]).to_le_bytes();
    assert_eq!(&bytes[16..18], &fcs);
    assert_eq!(bytes[18], 0x7E);
    assert_eq!(Frame::decode(&bytes).unwrap(), Some((frame, 19)));
}

#[test]
fn four_byte_server_address_layout() {
    let frame = Frame {
        segmented: true,
        dest: Address::PUBLIC_CLIENT,
        src: Address::server(1, Some(0x3FFF)),
        control: Control::RR { recv_seq: 5, poll: true },
        info: Vec::new(),
    };
    let bytes = frame.encode().unwrap();
    // Segmentation bit set; length 10.
    assert_eq!(&bytes[1..3], &[0xA8, 0x0A]);
    // upper 1 → 00 02, lower 0x3FFF → FE FF (extension bit on the last byte).
    assert_eq!(&bytes[3..9], &[0x21, 0x00, 0x02, 0xFE, 0xFF, 0xB1]);
    assert_eq!(Frame::decode(&bytes).unwrap(), Some((frame, 12)));
}

#[test]
fn prefixes_need_more_bytes() {
    let bytes = snrm().encode().unwrap();
    for n in 0..bytes.len() {
        assert_eq!(Frame::decode(&bytes[..n]), Ok(None), "prefix of {n} bytes");
    }
}

#[test]
fn corrupted_fcs_and_hcs_are_reported_with_both_values() {
    let mut bytes = SNRM;
    bytes[5] = 0x83; // SNRM without poll bit, FCS left as it was
    let expected = crc16_x25(&bytes[1..6]);
    assert_eq!(Frame::decode(&bytes), Err(FrameError::Fcs { expected, actual: 0x010F }));

    let frame = Frame { info: vec![0xE6, 0xE6, 0x00], ..snrm() };
    let mut bytes = frame.encode().unwrap();
    bytes[7] ^= 0xFF;
    assert!(matches!(Frame::decode(&bytes), Err(FrameError::Hcs { .. })));
}

#[test]
fn garbage_before_a_frame_is_a_bad_flag_and_double_flags_are_fill() {
    assert_eq!(Frame::decode(&[0x00, 0x7E]), Err(FrameError::BadFlag(0x00)));
    let mut bytes = vec![0x7E, 0x7E];
    bytes.extend_from_slice(&SNRM);
    let (frame, used) = Frame::decode(&bytes).unwrap().unwrap();
    assert_eq!(frame, snrm());
    assert_eq!(used, 11);
}

#[test]
fn bad_format_and_short_length_are_errors() {
    assert_eq!(Frame::decode(&[0x7E, 0x80, 0x07]), Err(FrameError::BadFormat(0x8007)));
    assert_eq!(Frame::decode(&[0x7E, 0xA0, 0x03]), Err(FrameError::LengthTooSmall(3)));
    let mut bytes = SNRM;
    bytes[8] = 0x00;
    assert_eq!(Frame::decode(&bytes), Err(FrameError::BadClosingFlag(0x00)));
}

#[test]
fn encode_refuses_what_the_format_cannot_carry() {
    let too_long = Frame { info: vec![0; 2048], ..snrm() };
    assert!(matches!(too_long.encode(), Err(FrameError::TooLong(_))));
    let bad = Frame { dest: Address::One(0x80), ..snrm() };
    assert!(matches!(bad.encode(), Err(FrameError::AddressOutOfRange(_))));
}

#[test]
fn every_control_byte_round_trips() {
    for b in 0..=255u8 {
        assert_eq!(u8::from(Control::from(b)), b, "control 0x{b:02X}");
    }
    assert_eq!(Control::from(0x93), Control::SNRM { poll: true });
    assert_eq!(Control::from(0x53), Control::DISC { poll: true });
    assert_eq!(Control::from(0x1F), Control::DM { poll: true });
    assert_eq!(Control::from(0x97), Control::FRMR { poll: true });
    assert_eq!(Control::from(0x13), Control::UI { poll: true });
    assert_eq!(Control::from(0x32), Control::I { send_seq: 1, recv_seq: 1, poll: true });
    assert_eq!(Control::from(0xF1), Control::RR { recv_seq: 7, poll: true });
    assert_eq!(Control::from(0x09), Control::Unknown(0x09));
}

fn address() -> impl Strategy<Value = Address> {
    prop_oneof![
        (0u8..=0x7F).prop_map(Address::One),
        (0u8..=0x7F, 0u8..=0x7F).prop_map(|(upper, lower)| Address::Two { upper, lower }),
        (0u16..=0x3FFF, 0u16..=0x3FFF).prop_map(|(upper, lower)| Address::Four { upper, lower }),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    (any::<bool>(), address(), address(), any::<u8>(), proptest::collection::vec(any::<u8>(), 0..300)).prop_map(
        |(segmented, dest, src, control, info)| Frame { segmented, dest, src, control: Control::from(control), info },
    )
}

proptest! {
    #[test]
    fn encode_then_decode_is_identity(frame in frame()) {
        let bytes = frame.encode().unwrap();
        prop_assert_eq!(bytes.len(), frame.wire_len());
        prop_assert_eq!(Frame::decode(&bytes).unwrap(), Some((frame, bytes.len())));
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Frame::decode(&bytes);
        let mut with_flag = vec![0x7E, 0xA0];
        with_flag.extend_from_slice(&bytes);
        if let Ok(Some((_, used))) = Frame::decode(&with_flag) {
            prop_assert!(used <= with_flag.len());
        }
    }
}

//! A-XDR `Data` codec (IEC 62056-6-2 / Blue Book): byte vectors both ways, round trip, hostile input.

use ami_protocols::dlms::axdr::{
    decode_length, encode_length, AxdrError, BitString, Data, Date, DateTime, Tag, Time, DEVIATION_NOT_SPECIFIED,
    MAX_DEPTH, YEAR_NOT_SPECIFIED,
};
use proptest::prelude::*;

fn both_ways(bytes: &[u8], data: &Data) {
    assert_eq!(Data::decode(bytes), Ok((data.clone(), bytes.len())), "decode {bytes:02X?}");
    assert_eq!(data.to_bytes(), bytes, "encode {data:?}");
}

#[test]
fn obis_code_as_octet_string() {
    // 09 octet-string, 06 length, 1-0:1.8.0*255
    both_ways(&[0x09, 0x06, 0x01, 0x00, 0x01, 0x08, 0x00, 0xFF], &Data::OctetString(vec![1, 0, 1, 8, 0, 255]));
}

#[test]
fn scaler_unit_structure() {
    // 02 structure of 02: 0F integer -2 (scaler), 16 enum 30 (unit Wh)
    both_ways(&[0x02, 0x02, 0x0F, 0xFE, 0x16, 0x1E], &Data::Structure(vec![Data::Integer(-2), Data::Enum(30)]));
}

#[test]
fn register_values_of_every_fixed_width() {
    both_ways(&[0x00], &Data::Null);
    both_ways(&[0x03, 0x01], &Data::Boolean(true));
    both_ways(&[0x05, 0xFF, 0xFF, 0xFF, 0xFE], &Data::DoubleLong(-2));
    both_ways(&[0x06, 0x00, 0x00, 0x30, 0x39], &Data::DoubleLongUnsigned(12345));
    both_ways(&[0x0D, 0x42], &Data::Bcd(0x42));
    both_ways(&[0x10, 0x80, 0x00], &Data::Long(i16::MIN));
    both_ways(&[0x11, 0xFF], &Data::Unsigned(255));
    both_ways(&[0x12, 0x01, 0x00], &Data::LongUnsigned(256));
    both_ways(&[0x14, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], &Data::Long64(-1));
    both_ways(&[0x15, 0, 0, 0, 0, 0, 0, 0x01, 0x00], &Data::Long64Unsigned(256));
    both_ways(&[0x17, 0x3F, 0x80, 0x00, 0x00], &Data::Float32(1.0));
    both_ways(&[0x18, 0x40, 0x09, 0x21, 0xFB, 0x54, 0x44, 0x2D, 0x18], &Data::Float64(std::f64::consts::PI));
    // Any non-zero byte is true.
    assert_eq!(Data::decode(&[0x03, 0x02]), Ok((Data::Boolean(true), 2)));
}

#[test]
fn strings_and_bit_strings() {
    both_ways(&[0x0A, 0x03, b'L', b'G', b'Z'], &Data::VisibleString(b"LGZ".to_vec()));
    both_ways(&[0x0C, 0x02, 0xC3, 0xA9], &Data::Utf8String("é".as_bytes().to_vec()));
    // 04 bit-string, 0A = 10 bits, 2 bytes.
    let bits = BitString::new(vec![0b1010_0000, 0b0100_0000], 10).unwrap();
    assert_eq!(bits.bit(0), Some(true));
    assert_eq!(bits.bit(1), Some(false));
    assert_eq!(bits.bit(9), Some(true));
    assert_eq!(bits.bit(10), None);
    both_ways(&[0x04, 0x0A, 0xA0, 0x40], &Data::BitString(bits));
    assert!(BitString::new(vec![0], 9).is_none());
}

#[test]
fn date_time_as_octet_string_and_tagged() {
    // 2021-01-15 Friday 12:00:00, hundredths not specified, deviation -60 min, clock status 0x80 (DST).
    let content = [
        0x07, 0xE5, // year 2021
        0x01, // month
        0x0F, // day 15
        0x05, // Friday
        0x0C, 0x00, 0x00, // 12:00:00
        0xFF, // hundredths not specified
        0xFF, 0xC4, // deviation -60
        0x80, // clock status: daylight saving active
    ];
    let dt = DateTime {
        date: Date { year: 2021, month: 1, day: 15, weekday: 5 },
        time: Time { hour: 12, minute: 0, second: 0, hundredths: 0xFF },
        deviation: -60,
        clock_status: 0x80,
    };
    let mut octets = vec![0x09, 0x0C];
    octets.extend_from_slice(&content);
    let (data, used) = Data::decode(&octets).unwrap();
    assert_eq!(used, 14);
    let Data::OctetString(bytes) = data else { panic!("not an octet-string: {data:?}") };
    assert_eq!(DateTime::from_bytes(&bytes), Some(dt));
    assert_eq!(dt.to_bytes(), content);
    assert_eq!(dt.deviation(), Some(-60));

    let mut tagged = vec![0x19];
    tagged.extend_from_slice(&content);
    both_ways(&tagged, &Data::DateTime(dt));

    both_ways(
        &[0x1A, 0xFF, 0xFF, 0x0C, 0xFF, 0xFF],
        &Data::Date(Date { year: YEAR_NOT_SPECIFIED, month: 12, day: 0xFF, weekday: 0xFF }),
    );
    both_ways(&[0x1B, 0x17, 0x3B, 0x3B, 0x00], &Data::Time(Time { hour: 23, minute: 59, second: 59, hundredths: 0 }));
    let unspecified = DateTime::from_bytes(&[0xFF; 12]).unwrap();
    assert_eq!(unspecified.deviation, -1);
    let mut not_specified = [0xFF; 12];
    not_specified[9] = 0x80;
    not_specified[10] = 0x00;
    let dt = DateTime::from_bytes(&not_specified).unwrap();
    assert_eq!(dt.deviation, DEVIATION_NOT_SPECIFIED);
    assert_eq!(dt.deviation(), None);
    assert_eq!(DateTime::from_bytes(&[0; 11]), None);
}

#[test]
fn profile_buffer_row_nests_structures_in_an_array() {
    // array of 1: structure { date-time octet-string, double-long-unsigned 1000 }
    let mut bytes = vec![0x01, 0x01, 0x02, 0x02, 0x09, 0x0C];
    bytes.extend_from_slice(&[0x07, 0xEA, 0x0B, 0x18, 0x02, 0x0C, 0x0F, 0x00, 0x00, 0x00, 0x00, 0x00]);
    bytes.extend_from_slice(&[0x06, 0x00, 0x00, 0x03, 0xE8]);
    let (data, used) = Data::decode(&bytes).unwrap();
    assert_eq!(used, bytes.len());
    let Data::Array(rows) = &data else { panic!("{data:?}") };
    assert_eq!(
        rows[0],
        Data::Structure(vec![Data::OctetString(bytes[6..18].to_vec()), Data::DoubleLongUnsigned(1000)])
    );
    assert_eq!(data.to_bytes(), bytes);
}

#[test]
fn compact_array_is_kept_raw() {
    // 13 compact-array; description 01 0003 12 = array of 3 long-unsigned; contents 06 bytes.
    let bytes = [0x13, 0x01, 0x00, 0x03, 0x12, 0x06, 0x00, 0x01, 0x00, 0x02, 0x00, 0x03];
    both_ways(
        &bytes,
        &Data::CompactArray {
            description: vec![0x01, 0x00, 0x03, 0x12],
            contents: vec![0x00, 0x01, 0x00, 0x02, 0x00, 0x03],
        },
    );
    // Structure description: 02 02 12 06 (long-unsigned, double-long-unsigned).
    let bytes = [0x13, 0x02, 0x02, 0x12, 0x06, 0x00];
    both_ways(&bytes, &Data::CompactArray { description: vec![0x02, 0x02, 0x12, 0x06], contents: vec![] });
    assert_eq!(Data::decode(&[0x13, 0x07, 0x00]), Err(AxdrError::UnknownTag(0x07)));
}

#[test]
fn long_lengths_use_the_0x8n_form() {
    let mut out = Vec::new();
    encode_length(0x7F, &mut out);
    encode_length(0x80, &mut out);
    encode_length(300, &mut out);
    encode_length(0x01_0000, &mut out);
    assert_eq!(out, [0x7F, 0x81, 0x80, 0x82, 0x01, 0x2C, 0x83, 0x01, 0x00, 0x00]);
    assert_eq!(decode_length(&[0x82, 0x01, 0x2C]), Ok((300, 3)));
    assert_eq!(decode_length(&[0x80]), Err(AxdrError::BadLength(0x80)));
    assert_eq!(decode_length(&[0x85, 1, 2, 3, 4, 5]), Err(AxdrError::BadLength(0x85)));

    let data = Data::OctetString(vec![0xAB; 300]);
    let bytes = data.to_bytes();
    assert_eq!(&bytes[..4], &[0x09, 0x82, 0x01, 0x2C]);
    assert_eq!(Data::decode(&bytes), Ok((data, 304)));
}

#[test]
fn hostile_lengths_are_truncation_not_allocation() {
    assert!(matches!(Data::decode(&[0x01, 0x84, 0xFF, 0xFF, 0xFF, 0xFF, 0x00]), Err(AxdrError::Truncated { .. })));
    assert!(matches!(Data::decode(&[0x09, 0x84, 0xFF, 0xFF, 0xFF, 0xFF]), Err(AxdrError::Truncated { .. })));
    assert!(matches!(Data::decode(&[0x04, 0x84, 0xFF, 0xFF, 0xFF, 0xFF]), Err(AxdrError::Truncated { .. })));
    assert_eq!(Data::decode(&[0x06, 0x00, 0x00]), Err(AxdrError::Truncated { at: 1, needed: 4, available: 2 }));
    assert!(matches!(Data::decode(&[]), Err(AxdrError::Truncated { .. })));
    assert_eq!(Data::decode(&[0x07]), Err(AxdrError::UnknownTag(7)));
}

#[test]
fn nesting_is_limited() {
    let mut ok = [0x01_u8, 0x01].repeat(MAX_DEPTH);
    ok.push(0x00);
    assert!(Data::decode(&ok).is_ok());
    let mut deep = [0x01_u8, 0x01].repeat(MAX_DEPTH + 1);
    deep.push(0x00);
    assert_eq!(Data::decode(&deep), Err(AxdrError::TooDeep));
}

#[test]
fn every_tag_byte_round_trips() {
    for b in 0..=255u8 {
        assert_eq!(u8::from(Tag::from(b)), b);
    }
    assert_eq!(Tag::from(0x19), Tag::DateTime);
    assert_eq!(Tag::from(0x08), Tag::Unknown(0x08));
}

fn data() -> impl Strategy<Value = Data> {
    let bytes = || proptest::collection::vec(any::<u8>(), 0..200);
    let leaf = prop_oneof![
        Just(Data::Null),
        any::<bool>().prop_map(Data::Boolean),
        (proptest::collection::vec(any::<u8>(), 0..20), 0usize..8).prop_map(|(mut b, extra)| {
            if b.is_empty() {
                return Data::BitString(BitString::new(b, 0).unwrap());
            }
            let bits = (b.len() - 1) * 8 + 1 + extra;
            b.truncate(bits.div_ceil(8));
            Data::BitString(BitString::new(b, bits).unwrap())
        }),
        any::<i32>().prop_map(Data::DoubleLong),
        any::<u32>().prop_map(Data::DoubleLongUnsigned),
        bytes().prop_map(Data::OctetString),
        bytes().prop_map(Data::VisibleString),
        bytes().prop_map(Data::Utf8String),
        any::<u8>().prop_map(Data::Bcd),
        any::<i8>().prop_map(Data::Integer),
        any::<i16>().prop_map(Data::Long),
        any::<u8>().prop_map(Data::Unsigned),
        any::<u16>().prop_map(Data::LongUnsigned),
        bytes().prop_map(|contents| Data::CompactArray { description: vec![0x01, 0x00, 0x02, 0x12], contents }),
        any::<i64>().prop_map(Data::Long64),
        any::<u64>().prop_map(Data::Long64Unsigned),
        any::<u8>().prop_map(Data::Enum),
        any::<u32>().prop_map(|b| Data::Float32(f32::from_bits(b))),
        any::<u64>().prop_map(|b| Data::Float64(f64::from_bits(b))),
        any::<[u8; 12]>().prop_map(|b| Data::DateTime(DateTime::from_bytes(&b).unwrap())),
        any::<[u8; 5]>().prop_map(|b| Data::Date(Date::from_bytes(&b).unwrap())),
        any::<[u8; 4]>().prop_map(|b| Data::Time(Time::from_bytes(&b).unwrap())),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Data::Array),
            proptest::collection::vec(inner, 0..8).prop_map(Data::Structure),
        ]
    })
}

proptest! {
    #[test]
    fn encode_then_decode_is_identity(data in data()) {
        let bytes = data.to_bytes();
        let (back, used) = Data::decode(&bytes).unwrap();
        prop_assert_eq!(used, bytes.len());
        // Compared as bytes: NaN floats are not equal to themselves but must survive bit for bit.
        prop_assert_eq!(back.to_bytes(), bytes);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Ok((data, used)) = Data::decode(&bytes) {
            prop_assert!(used <= bytes.len());
            // What decodes re-encodes to the bytes it came from, booleans aside (any non-zero is true).
            let _ = data.to_bytes();
        }
    }
}

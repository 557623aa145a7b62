//! Properties of the EN 13757-2 deframer: encode → decode is the identity, a stream of frames deframes
//! back into the same frames, and arbitrary bytes never panic the decoder or the reply matchers.

use ami_link::mbus::{AckMatcher, Frame, RspUdMatcher, MAX_DATA_LEN};
use ami_link::{Check, ReplyMatcher};
use proptest::prelude::*;

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        Just(Frame::Ack),
        (any::<u8>(), any::<u8>()).prop_map(|(c, a)| Frame::Short { c, a }),
        (any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(c, a, ci)| Frame::Control { c, a, ci }),
        (any::<u8>(), any::<u8>(), any::<u8>(), prop::collection::vec(any::<u8>(), 1..=MAX_DATA_LEN))
            .prop_map(|(c, a, ci, data)| Frame::Long { c, a, ci, data }),
    ]
}

/// A verdict the bus can act on: a complete reply inside the buffer, a skip of at least one byte.
fn usable(check: &Check, len: usize) {
    match check {
        Check::Complete { len: n } => assert!(*n > 0 && *n <= len),
        Check::Foreign { skip, .. } => assert!(*skip > 0 && *skip <= len),
        Check::Incomplete | Check::Corrupt { .. } => {}
    }
}

proptest! {
    #[test]
    fn encode_then_decode_is_the_identity(f in frame()) {
        let bytes = f.encode().unwrap();
        prop_assert_eq!(bytes.len(), f.buffer_len());
        prop_assert_eq!(Frame::decode(&bytes), Ok(Some((f.clone(), bytes.len()))));
        prop_assert_eq!(Frame::parse(&bytes), Ok(f));
    }

    #[test]
    fn a_stream_of_frames_deframes_into_the_same_frames(fs in prop::collection::vec(frame(), 0..8)) {
        let mut stream = Vec::new();
        for f in &fs {
            stream.extend(f.encode().unwrap());
        }
        let mut rest = &stream[..];
        let mut out = Vec::new();
        while let Some((f, len)) = Frame::decode(rest).unwrap() {
            out.push(f);
            rest = &rest[len..];
        }
        prop_assert!(rest.is_empty());
        prop_assert_eq!(out, fs);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(Some((f, len))) = Frame::decode(&bytes) {
            prop_assert!(len > 0 && len <= bytes.len());
            prop_assert_eq!(f.encode().unwrap(), bytes[..len].to_vec());
        }
        let _ = Frame::parse(&bytes);
        usable(&AckMatcher.check(&bytes), bytes.len());
        for address in [None, bytes.get(5).copied(), Some(1)] {
            usable(&RspUdMatcher { address }.check(&bytes), bytes.len());
        }
    }

    #[test]
    fn random_bytes_behind_a_valid_header_never_panic(l in 0u8..=255, body in prop::collection::vec(any::<u8>(), 0..260)) {
        let mut bytes = vec![0x68, l, l, 0x68];
        bytes.extend(body);
        if let Ok(Some((f, len))) = Frame::decode(&bytes) {
            prop_assert_eq!(len, usize::from(l) + 6);
            prop_assert_eq!(f.encode().unwrap(), bytes[..len].to_vec());
        }
    }
}

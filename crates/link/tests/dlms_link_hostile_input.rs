//! No byte sequence panics the DLMS link layer: HDLC deframer into client and server sessions, wrapper
//! deframer and matcher, mode E parsers and matcher. Random bytes, plus valid messages with one byte
//! flipped (which get further into the parsers than pure noise).

use ami_link::hdlc::{Address, Frame};
use ami_link::hdlc_session::{Deframer, HdlcClient, HdlcParameters, HdlcServer, ServerAction};
use ami_link::mode_e::{self, IdentificationMatcher};
use ami_link::wrapper::{self, WrapperDeframer, WrapperMatcher};
use ami_link::{Check, ReplyMatcher};
use proptest::prelude::*;

const SERVER: Address = Address::One(1);

/// A few valid messages of every kind, to mutate.
fn seeds() -> Vec<Vec<u8>> {
    let mut client = HdlcClient::new(Address::PUBLIC_CLIENT, SERVER, HdlcParameters::default());
    let mut server = HdlcServer::new(SERVER, HdlcParameters::default());
    let snrm = client.snrm();
    let mut out = vec![snrm.clone()];
    if let Some((frame, _)) = Frame::decode(&snrm).ok().flatten() {
        if let ServerAction::Reply(ua) = server.on_frame(&frame) {
            out.push(ua);
        }
    }
    out.push(server.respond(&[0xC4, 0x01, 0xC1, 0x00, 0x06, 0x00, 0x00, 0x00, 0x2A]));
    out.push(wrapper::encode(0x10, 0x01, &[0xC0, 0x01, 0xC1, 0x00, 0x08]).unwrap_or_default());
    out.push(mode_e::identification("LGZ", b'5', "ZMD3104107.B32"));
    out.push(mode_e::sign_on(Some("12345678")));
    out.push(mode_e::ack_hdlc(b'5'));
    out
}

fn feed_everything(bytes: &[u8]) {
    let mut deframer = Deframer::new();
    let mut server = HdlcServer::new(SERVER, HdlcParameters::default());
    let mut client = HdlcClient::new(Address::PUBLIC_CLIENT, SERVER, HdlcParameters::default());
    client.snrm();
    for frame in deframer.push(bytes) {
        let _ = client.on_ua(&frame);
        let _ = client.on_frame(&frame);
        if let ServerAction::Apdu(apdu) = server.on_frame(&frame) {
            let _ = server.respond(&apdu);
        }
    }
    let _ = client.matcher().check(bytes);
    let mut w = WrapperDeframer::new();
    let _ = w.push(bytes);
    let _ = wrapper::decode(bytes);
    let _ = WrapperMatcher { client: 0x10, server: 0x01 }.check(bytes);
    let _ = mode_e::parse_identification(bytes);
    let _ = mode_e::parse_sign_on(bytes);
    let _ = mode_e::parse_ack(bytes);
    if let Check::Complete { len } = IdentificationMatcher.check(bytes) {
        assert!(len <= bytes.len());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..3000)) {
        feed_everything(&bytes);
    }

    #[test]
    fn mutated_messages_never_panic(which in 0usize..7, at in any::<usize>(), xor in 1u8..=255, cut in any::<usize>()) {
        let seeds = seeds();
        let mut bytes = seeds[which % seeds.len()].clone();
        let n = bytes.len().max(1);
        if let Some(b) = bytes.get_mut(at % n) {
            *b ^= xor;
        }
        feed_everything(&bytes);
        bytes.truncate(cut % (n + 1));
        feed_everything(&bytes);
    }

    #[test]
    fn wrapper_deframer_finds_every_frame_however_the_stream_is_cut(
        apdus in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..6),
        cuts in proptest::collection::vec(1usize..200, 1..20),
    ) {
        let stream: Vec<u8> = apdus.iter().flat_map(|a| wrapper::encode(1, 0x10, a).unwrap()).collect();
        let mut d = WrapperDeframer::new();
        let mut got = Vec::new();
        let mut rest = &stream[..];
        for c in cuts.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (now, later) = rest.split_at((*c).min(rest.len()));
            got.extend(d.push(now).into_iter().map(|(_, apdu)| apdu));
            rest = later;
        }
        prop_assert_eq!(got, apdus);
        prop_assert_eq!(d.discarded(), 0);
    }
}

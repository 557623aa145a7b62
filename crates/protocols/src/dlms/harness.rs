//! Decoder harness shared by the cargo-fuzz targets `dlms_apdu`, `dlms_axdr` and `dlms_hdlc` (`fuzz/`) and
//! a seeded noise test, so CI runs the same code without cargo-fuzz. Built for tests and with the `fuzzing`
//! feature only.
//!
//! Each entry point feeds one byte string to the decoders of one layer and panics (on purpose: that is
//! what a fuzzer reports) when a decoder panics or breaks an invariant the rest of the stack relies on:
//! - [`apdu`]: [`Apdu::decode`] (IEC 62056-5-3 / Green Book §9.3), with the canonical re-encoding stable
//!   (`encode(decode(encode(a))) == encode(a)`), the user-information of ACSE APDUs decoded in turn, and
//!   the envelopes opened with a fixed key set;
//! - [`axdr`]: the A-XDR `Data` codec and length decoding (IEC 62056-6-2), with the same stability check;
//! - [`hdlc`]: HDLC frame format type 3 deframing (IEC 62056-46) resynchronising byte by byte, frame
//!   re-encoding, SNRM/UA parameter parsing, the stream deframer, a client and a server link fed the
//!   frames, and the TCP wrapper (IEC 62056-47) decoder and deframer;
//! - [`unwrap_ciphered`]: security suite 0 (Green Book §9.2.7) on arbitrary envelopes, payloads and
//!   HLS-GMAC replies, with protect/unprotect round trips for every security control.

use ami_link::hdlc::{Address, Frame};
use ami_link::hdlc_session::{
    Action, Deframer, HdlcClient, HdlcParameters, HdlcServer, ServerAction, LLC_REPLY, LLC_REQUEST,
};
use ami_link::wrapper::{self, WrapperDeframer};

use super::apdu::{Apdu, GloCiphered, InitiateRequest, InitiateResponse};
use super::axdr::{decode_length, Data};
use super::security::{self, Keys, SystemTitle};

/// Fixed keys of the harness (the Green Book example keys).
fn keys() -> Keys {
    Keys {
        block_cipher_key: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
        authentication_key: [
            0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA, 0xDB, 0xDC, 0xDD, 0xDE, 0xDF,
        ],
    }
}

const TITLE: SystemTitle = [0x4D, 0x4D, 0x4D, 0x00, 0x00, 0xBC, 0x61, 0x4E];

/// Decodes `data` as an APDU; on success the canonical encoding must decode to a value with the same
/// encoding, and what the APDU carries (user-information, ciphered envelopes) is decoded in turn.
pub fn apdu(data: &[u8]) {
    apdu_at(data, 0);
    let _ = InitiateRequest::decode(data);
    let _ = InitiateResponse::decode(data);
}

fn apdu_at(data: &[u8], depth: usize) {
    let Ok(a) = Apdu::decode(data) else { return };
    let bytes = a.encode();
    assert_eq!(bytes.first().copied(), Some(a.tag()), "encoding starts with the tag");
    match Apdu::decode(&bytes) {
        Ok(b) => assert_eq!(b.encode(), bytes, "re-encoding of {a:?} is not stable"),
        Err(e) => panic!("own encoding of {a:?} refused: {e}"),
    }
    if depth > 2 {
        return;
    }
    let inner = match &a {
        Apdu::Aarq(x) => x.user_information.as_deref(),
        Apdu::Aare(x) => x.user_information.as_deref(),
        Apdu::Rlrq(x) | Apdu::Rlre(x) => x.user_information.as_deref(),
        _ => None,
    };
    if let Some(inner) = inner {
        apdu_at(inner, depth + 1);
    }
    if let Ok((_, plain)) = security::unwrap(&keys(), &TITLE, &a) {
        apdu_at(&plain, depth + 1);
    }
}

/// Decodes `data` as one A-XDR value and as a length; a decoded value re-encodes stably.
pub fn axdr(data: &[u8]) {
    if let Ok((len, used)) = decode_length(data) {
        assert!((1..=5).contains(&used) && used <= data.len(), "length {len} took {used} bytes");
    }
    let Ok((value, used)) = Data::decode(data) else { return };
    assert!(used >= 1 && used <= data.len(), "value took {used} of {} bytes", data.len());
    let bytes = value.to_bytes();
    match Data::decode(&bytes) {
        Ok((again, n)) => {
            assert_eq!(n, bytes.len(), "own encoding of {value:?} not consumed whole");
            assert_eq!(again.to_bytes(), bytes, "re-encoding of {value:?} is not stable");
        }
        Err(e) => panic!("own encoding of {value:?} refused: {e}"),
    }
}

/// Feeds `data` to the HDLC deframer (dropping a byte on error, as a line reader resynchronises), the
/// stream deframer, a client and a server link, and the TCP wrapper decoders.
pub fn hdlc(data: &[u8]) {
    let server_addr = Address::server(1, Some(17));
    let client_addr = Address::client(0x10);
    let mut client = HdlcClient::new(client_addr, server_addr, HdlcParameters::default());
    let _ = client.snrm();
    let mut server = HdlcServer::new(server_addr, HdlcParameters::default());

    let mut frames = Vec::new();
    let mut at = 0;
    let mut steps = 0;
    while at < data.len() {
        steps += 1;
        assert!(steps <= data.len() + 1, "deframing does not advance");
        match Frame::decode(data.get(at..).unwrap_or_default()) {
            Ok(Some((frame, used))) => {
                assert!(used >= 9 && at + used <= data.len(), "frame used {used} bytes at {at}");
                at += used;
                frames.push(frame);
            }
            Ok(None) => break,
            Err(_) => at += 1,
        }
    }
    for frame in &frames {
        if let Ok(bytes) = frame.encode() {
            match Frame::decode(&bytes) {
                Ok(Some((again, used))) => {
                    assert_eq!(used, bytes.len());
                    assert_eq!(&again, frame, "frame does not survive re-encoding");
                }
                other => panic!("own frame refused: {other:?}"),
            }
        }
        let _ = HdlcParameters::decode(&frame.info);
        for llc in [LLC_REQUEST, LLC_REPLY] {
            if let Some(inner) = frame.info.strip_prefix(&llc) {
                apdu(inner);
            }
        }
        if let ServerAction::Reply(bytes) = server.on_frame(frame) {
            if !bytes.is_empty() {
                assert!(matches!(Frame::decode(&bytes), Ok(Some(_))), "server reply is not a frame");
            }
        }
        if client.on_ua(frame).is_ok() {
            let _ = client.send_apdu(&[0xC0, 0x01, 0xC1]);
        }
        match client.on_frame(frame) {
            Ok(Action::Send(bytes)) => {
                assert!(matches!(Frame::decode(&bytes), Ok(Some(_))), "client frame is not a frame")
            }
            Ok(Action::Apdu(apdu_bytes)) => apdu(&apdu_bytes),
            Ok(Action::Ignore) | Err(_) => {}
        }
    }

    // The same bytes through the stream deframer, in two pieces.
    let split = data.len() / 2;
    let mut deframer = Deframer::new();
    let mut n = deframer.push(data.get(..split).unwrap_or_default()).len();
    n += deframer.push(data.get(split..).unwrap_or_default()).len();
    // A flag may close one frame and open the next: at least 8 bytes per frame.
    assert!(n <= data.len() / 8 + 1, "{n} frames from {} bytes", data.len());

    // And as TCP wrapper frames.
    let mut at = 0;
    while at < data.len() {
        match wrapper::decode(data.get(at..).unwrap_or_default()) {
            Ok(Some((_, inner, used))) => {
                assert!(used >= 8 && at + used <= data.len());
                at += used;
                apdu(&inner);
            }
            Ok(None) => break,
            Err(_) => at += 1,
        }
    }
    let mut w = WrapperDeframer::new();
    let _ = w.push(data.get(..split).unwrap_or_default());
    let _ = w.push(data.get(split..).unwrap_or_default());
}

/// Security suite 0 on arbitrary input: `data` as an envelope, as the parts of a glo-ciphered envelope,
/// as an HLS-GMAC reply, and as plaintext that must survive protect/unprotect for every security control.
pub fn unwrap_ciphered(data: &[u8]) {
    let k = keys();
    if let Ok(envelope) = Apdu::decode(data) {
        let _ = security::unwrap(&k, &TITLE, &envelope);
    }
    if let [sc, a, b, c, d, payload @ ..] = data {
        let envelope = Apdu::GloCiphered(GloCiphered {
            tag: 204,
            security_control: *sc,
            invocation_counter: u32::from_be_bytes([*a, *b, *c, *d]),
            payload: payload.to_vec(),
        });
        let _ = security::unwrap(&k, &TITLE, &envelope);
        let _ = security::unprotect(&k, *sc, &TITLE, 1, payload);
    }
    let _ = security::verify_hls_gmac(&k, &TITLE, b"P6wRJ21F", data);
    let ic = data.len() as u32;
    for sc in [0x10, 0x20, 0x30] {
        let Ok(protected) = security::protect(&k, sc, &TITLE, ic, data) else { panic!("SC {sc:02X} refused") };
        assert_eq!(security::unprotect(&k, sc, &TITLE, ic, &protected).as_deref(), Ok(data), "SC {sc:02X}");
        if sc != 0x20 {
            // Any change to an authenticated payload is caught.
            let mut bad = protected.clone();
            if let Some(byte) = bad.get_mut(ic as usize % protected.len().max(1)) {
                *byte ^= 0x01;
                assert!(security::unprotect(&k, sc, &TITLE, ic, &bad).is_err(), "SC {sc:02X}: altered payload");
            }
        }
    }
    if let Ok(wrapped) = security::wrap(&k, 0x30, &TITLE, ic, data) {
        let envelope = Apdu::decode(&wrapped).unwrap_or_else(|e| panic!("own envelope refused: {e}"));
        assert_eq!(security::unwrap(&k, &TITLE, &envelope), Ok((ic, data.to_vec())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;
    use ami_link::hdlc::Control;

    fn hex(s: &str) -> Vec<u8> {
        let s: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        s.chunks(2).map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap_or("00"), 16).unwrap_or(0)).collect()
    }

    /// Real APDUs (the vectors of tests/dlms_vectors.rs).
    fn apdu_seeds() -> Vec<Vec<u8>> {
        [
            "601DA109060760857405080101BE10040E01000000065F1F0400007E1F04B0",
            "6036A1090607608574050801018A0207808B0760857405080201AC0A80083132333435363738BE10040E01000000065F1F0400007E1F04B0",
            "6066A109060760857405080103A60A04084D4D4D0000BC614E8A0207808B0760857405080201AC0A80083132333435363738BE34043221303001234567801302FF8A7874133D414CED25B42534D28DB0047720606B175BD52211BE6841DB204D39EE6FDB8E356855",
            "6142A109060760857405080101A203020100A305A10302010E88020780890760857405080205AA0A8008503677524A323146BE10040E0800065F1F040000501F01F40007",
            "611FA109060760857405080101A203020101A305A103020101BE0604040E010601",
            "6161A109060760857405080103A203020100A305A10302010EA40A04084D4D4D0000BC614E88020780890760857405080205AA0A8008503677524A323146BE230421281F3001234567891214A0845E475738383A91BC197117581D85ADB648D979E2FB",
            "6203800100",
            "6328800100BE230421281F3001234567891214A0845E475714383F65BC19745CA235906525E4F3E1C893",
            "C001C10001 00002B0100FF 0200",
            "C002C100000001",
            "C003C1020001 00002A0000FF 0200 0008 0000010000FF 0200",
            "C001C1 0007 0100630100FF 02 01 01 0204 0204 120008 09060000010000FF 0F02 120000 090C07E10A010700000000FFC480 090C07E10A010701000000FFC480 0100",
            "C401C1000600001391",
            "C402C10100000002000309AABB",
            "C403C102000600000001010B",
            "C101C1 0008 0000010000FF 02 00 090C07E50118FF0E303950FFC400",
            "C102C1 00010000800000FF0200 00 00000001 15 093201020304050607080910111213141516171819",
            "C503C10000000002",
            "C301C0000F0000280000FF010109111000001A90E6D2221FA2FD85EED61ACC22",
            "C701C000010009111000001AFDE8857B728A3499106AA665D1",
            "D80102",
            "C81E3001234567411312FF935A47566827C467BC7D825C3BE4A77C3FCC056B6B",
            "C81E1001234567C0010000080000010000FF020006725D910F9221D263877516",
            "DB084D4D4D00000000011E3000000004C037A865ADE5B79EF38D5538F2796D71A94336EC918C41AFC2",
        ]
        .iter()
        .map(|s| hex(s))
        .collect()
    }

    fn axdr_seeds() -> Vec<Vec<u8>> {
        [
            "0204 0204 120008 09060000010000FF 0F02 120000 090C07E10A010700000000FFC480 090C07E10A010701000000FFC480 0100",
            "0102 0203 0600000001 10FFFF 1600 0203 0600000002 10FFFE 161E",
            "1301 0203 0600 1200 0F00 000C 00000001 0001 02 00000002 0002 FE",
            "0403A0 0A03414243 0C0141 0D12 14FFFFFFFFFFFFFFFF 15 0000000000000001 173F800000 18 3FF0000000000000",
            "190C07E10A010700000000FFC480 1A07E10A0107 1B00000000 0301 00",
        ]
        .iter()
        .map(|s| hex(s))
        .collect()
    }

    fn frame(segmented: bool, dest: Address, src: Address, control: Control, info: &[u8]) -> Vec<u8> {
        Frame { segmented, dest, src, control, info: info.to_vec() }.encode().unwrap_or_default()
    }

    fn hdlc_seeds() -> Vec<Vec<u8>> {
        let (c, s) = (Address::client(0x10), Address::server(1, Some(17)));
        let s4 = Address::server(1, Some(0x3000));
        let mut get = LLC_REQUEST.to_vec();
        get.extend(hex("C001C100030100010800FF0200"));
        let mut reply = LLC_REPLY.to_vec();
        reply.extend(hex("C401C1000600001391"));
        let ua_params = hex("818012050180060180070400000001080400000001");
        let mut out = vec![
            frame(false, s, c, Control::SNRM { poll: true }, &[]),
            frame(false, c, s, Control::UA { poll: true }, &ua_params),
            frame(false, s, c, Control::I { send_seq: 0, recv_seq: 0, poll: true }, &get),
            frame(false, c, s, Control::I { send_seq: 0, recv_seq: 1, poll: true }, &reply),
            frame(true, c, s, Control::I { send_seq: 1, recv_seq: 1, poll: true }, &reply),
            frame(false, c, s, Control::RR { recv_seq: 2, poll: true }, &[]),
            frame(false, s4, c, Control::DISC { poll: true }, &[]),
        ];
        // A whole conversation on one line, with fill flags and noise between frames.
        let mut line = vec![0x7E, 0x00];
        for f in out.clone() {
            line.extend(f);
            line.push(0x55);
        }
        out.push(line);
        out.push(wrapper::encode(0x10, 0x01, &hex("C001C100030100010800FF0200")).unwrap_or_default());
        out
    }

    fn run(seed: u64, seeds: &[Vec<u8>], starts: &[u8], f: fn(&[u8])) {
        for s in seeds {
            f(s);
        }
        let mut rng = Rng(seed);
        for round in 0..20_000 {
            let data: Vec<u8> = if round % 2 == 0 {
                let len = if rng.below(4) == 0 { rng.below(300) } else { rng.below(24) };
                let mut d: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                if let Some(first) = d.first_mut() {
                    *first = starts[rng.below(starts.len())];
                }
                d
            } else {
                let mut d = seeds[rng.below(seeds.len())].clone();
                rng.mutate(&mut d);
                d
            };
            f(&data);
        }
    }

    #[test]
    fn seeds_decode() {
        for s in apdu_seeds() {
            let a = Apdu::decode(&s).unwrap_or_else(|e| panic!("{e}: {s:02X?}"));
            assert_eq!(a.encode(), s);
        }
        for s in axdr_seeds() {
            assert!(Data::decode(&s).is_ok(), "{s:02X?}");
        }
        for s in hdlc_seeds().iter().take(7) {
            assert!(matches!(Frame::decode(s), Ok(Some(_))), "{s:02X?}");
        }
    }

    #[test]
    fn apdu_harness_survives_20k_inputs() {
        let starts = [0x60, 0x61, 0x62, 0x63, 0x01, 0x08, 0x0E, 0xC0, 0xC1, 0xC3, 0xC4, 0xC5, 0xC7, 0xD8, 0xC8, 0xDB];
        run(0x5EED_D1A5_0000_0001, &apdu_seeds(), &starts, apdu);
    }

    #[test]
    fn axdr_harness_survives_20k_inputs() {
        let starts: Vec<u8> = (0..=27).collect();
        run(0x5EED_D1A5_0000_0002, &axdr_seeds(), &starts, axdr);
    }

    #[test]
    fn hdlc_harness_survives_20k_inputs() {
        run(0x5EED_D1A5_0000_0003, &hdlc_seeds(), &[0x7E, 0x7E, 0x00], hdlc);
    }

    #[test]
    fn unwrap_ciphered_harness_survives_20k_inputs() {
        run(0x5EED_D1A5_0000_0004, &apdu_seeds(), &[0xC8, 0xCC, 0xDB, 0x21, 0x28, 0x30, 0x10], unwrap_ciphered);
    }
}

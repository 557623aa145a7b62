//! IEC 62056-46 link state: SNRM/UA negotiation against real captures and Gurux's encoder, segmentation
//! both ways, sequence numbers, refusals, retransmissions, and hostile input.

use ami_link::hdlc::{Address, Control, Frame};
use ami_link::hdlc_session::{
    Action, Deframer, HdlcClient, HdlcParameters, HdlcServer, ServerAction, SessionError, LLC_REPLY, LLC_REQUEST,
};
use ami_link::Check;
use proptest::prelude::*;

fn unhex(s: &str) -> Vec<u8> {
    s.split_whitespace().map(|b| u8::from_str_radix(b, 16).unwrap()).collect()
}

fn decode(bytes: &[u8]) -> Frame {
    let (frame, used) = Frame::decode(bytes).unwrap().unwrap();
    assert_eq!(used, bytes.len());
    frame
}

const SERVER: Address = Address::One(1);

/// A client and a server that have agreed on `params` (client's point of view).
fn connected(params: HdlcParameters, server_params: HdlcParameters) -> (HdlcClient, HdlcServer) {
    let mut client = HdlcClient::new(Address::PUBLIC_CLIENT, SERVER, params);
    let mut server = HdlcServer::new(SERVER, server_params);
    let ServerAction::Reply(ua) = server.on_frame(&decode(&client.snrm())) else { panic!("no UA") };
    client.on_ua(&decode(&ua)).unwrap();
    (client, server)
}

/// Sends `apdu` from the client and answers with `reply` from the server; returns what the client got
/// and how many frames went each way.
fn round_trip(client: &mut HdlcClient, server: &mut HdlcServer, apdu: &[u8], reply: &[u8]) -> (Vec<u8>, usize) {
    let mut frames = 0;
    let mut to_server = client.send_apdu(apdu).unwrap();
    let request = loop {
        frames += 1;
        match server.on_frame(&decode(&to_server)) {
            ServerAction::Apdu(a) => break a,
            ServerAction::Reply(rr) => match client.on_frame(&decode(&rr)).unwrap() {
                Action::Send(next) => to_server = next,
                other => panic!("client did not send its next segment: {other:?}"),
            },
            ServerAction::Ignore => panic!("server ignored a request segment"),
        }
    };
    assert_eq!(request, apdu);
    let mut to_client = server.respond(reply);
    loop {
        frames += 1;
        match client.on_frame(&decode(&to_client)).unwrap() {
            Action::Apdu(a) => return (a, frames),
            Action::Send(rr) => match server.on_frame(&decode(&rr)) {
                ServerAction::Reply(next) => to_client = next,
                other => panic!("server did not send its next segment: {other:?}"),
            },
            Action::Ignore => panic!("client ignored a reply segment"),
        }
    }
}

#[test]
fn snrm_matches_gurux_encoding() {
    // Gurux.DLMS.Python 1.0.203 `GXDLMSClient(True, 0x10, 1, …, InterfaceType.HDLC)` with
    // maxInfoTX = maxInfoRX = 512 and windowSizeTX = windowSizeRX = 7, `snrmRequest()`.
    let params = HdlcParameters { max_info_tx: 512, max_info_rx: 512, window_tx: 7, window_rx: 7 };
    let mut client = HdlcClient::new(Address::PUBLIC_CLIENT, SERVER, params);
    assert_eq!(
        client.snrm(),
        unhex("7E A0 20 03 21 93 7D D9 81 80 14 05 02 02 00 06 02 02 00 07 04 00 00 00 07 08 04 00 00 00 07 94 D2 7E")
    );
}

#[test]
fn snrm_to_a_four_byte_address_as_optical_tools_send_it() {
    // A capture published with a Chinese meter-reading tool: SNRM from client 1 to logical device 1,
    // physical address 0x3FFF (all stations of the lower address), 2000 bytes each way.
    let params = HdlcParameters { max_info_tx: 2000, max_info_rx: 2000, window_tx: 1, window_rx: 1 };
    let mut client = HdlcClient::new(Address::client(1), Address::Four { upper: 1, lower: 0x3FFF }, params);
    assert_eq!(
        client.snrm(),
        unhex(
            "7E A0 23 00 02 FE FF 03 93 E4 B0 81 80 14 05 02 07 D0 06 02 07 D0 07 04 00 00 00 01 08 04 00 00 00 01 3A F2 7E"
        )
    );
}

#[test]
fn ua_of_a_kamstrup_omnipower_negotiates_the_smaller_sizes() {
    // UA recorded from a Kamstrup Omnipower 1P (client 18, server upper 16 lower 16): the meter offers
    // 1010 bytes each way (05 02 03 F2, 06 02 03 F2) and window 1.
    let ua = decode(&unhex(
        "7e a0 21 25 20 21 73 50 85 81 80 14 05 02 03 f2 06 02 03 f2 07 04 00 00 00 01 08 04 00 00 00 01 0a 75 7e",
    ));
    assert_eq!(ua.dest, Address::client(18));
    assert_eq!(ua.src, Address::Two { upper: 16, lower: 16 });
    let proposed = HdlcParameters { max_info_tx: 2030, max_info_rx: 2030, window_tx: 1, window_rx: 1 };
    let mut client = HdlcClient::new(Address::client(18), Address::server(16, Some(16)), proposed);
    client.snrm();
    let negotiated = client.on_ua(&ua).unwrap();
    assert_eq!(negotiated, HdlcParameters { max_info_tx: 1010, max_info_rx: 1010, window_tx: 1, window_rx: 1 });
    assert_eq!(client.negotiated(), negotiated);
    assert!(client.is_connected());
}

#[test]
fn ua_is_read_from_the_servers_point_of_view() {
    // Nartis 100 capture (client 0x20, server upper 1 lower 16): 256 bytes each way.
    let ua = decode(&unhex(
        "7e a0 21 41 02 21 73 db d8 81 80 14 05 02 01 00 06 02 01 00 07 04 00 00 00 01 08 04 00 00 00 01 69 6d 7e",
    ));
    let mut client = HdlcClient::new(Address::client(0x20), Address::server(1, Some(16)), HdlcParameters::default());
    client.snrm();
    // We proposed the defaults (128): the smaller wins.
    assert_eq!(client.on_ua(&ua).unwrap(), HdlcParameters::default());

    // A server whose transmit size (its 05) is smaller than its receive size (its 06): our rx is its tx.
    let mut server =
        HdlcServer::new(SERVER, HdlcParameters { max_info_tx: 64, max_info_rx: 200, window_tx: 1, window_rx: 1 });
    let proposed = HdlcParameters { max_info_tx: 512, max_info_rx: 512, window_tx: 1, window_rx: 1 };
    let mut client = HdlcClient::new(Address::PUBLIC_CLIENT, SERVER, proposed);
    let ServerAction::Reply(ua) = server.on_frame(&decode(&client.snrm())) else { panic!() };
    let got = client.on_ua(&decode(&ua)).unwrap();
    assert_eq!(got, HdlcParameters { max_info_tx: 200, max_info_rx: 64, window_tx: 1, window_rx: 1 });
    assert_eq!(server.negotiated(), got.swapped());
}

#[test]
fn ua_without_information_field_means_the_defaults() {
    let mut client = HdlcClient::new(
        Address::PUBLIC_CLIENT,
        SERVER,
        HdlcParameters { max_info_tx: 1024, max_info_rx: 1024, window_tx: 7, window_rx: 7 },
    );
    client.snrm();
    let ua = Frame {
        segmented: false,
        dest: Address::PUBLIC_CLIENT,
        src: SERVER,
        control: Control::UA { poll: true },
        info: vec![],
    };
    assert_eq!(client.on_ua(&ua).unwrap(), HdlcParameters::default());
}

#[test]
fn dm_to_snrm_is_a_refusal() {
    let mut client = HdlcClient::new(Address::PUBLIC_CLIENT, SERVER, HdlcParameters::default());
    client.snrm();
    let dm = Frame {
        segmented: false,
        dest: Address::PUBLIC_CLIENT,
        src: SERVER,
        control: Control::DM { poll: true },
        info: vec![],
    };
    assert_eq!(client.on_ua(&dm), Err(SessionError::Rejected(Control::DM { poll: true })));
    assert!(!client.is_connected());
    assert!(matches!(client.send_apdu(&[0xC0]), Err(SessionError::NotReadyToSend(_))));
}

#[test]
fn a_reply_in_three_segments_is_reassembled_with_an_rr_after_each() {
    let mut client = HdlcClient::new(Address::PUBLIC_CLIENT, SERVER, HdlcParameters::default());
    client.snrm();
    let ua = Frame {
        segmented: false,
        dest: Address::PUBLIC_CLIENT,
        src: SERVER,
        control: Control::UA { poll: true },
        info: vec![],
    };
    client.on_ua(&ua).unwrap();
    let request = client.send_apdu(&[0xC0, 0x01, 0xC1]).unwrap();
    assert_eq!(decode(&request).control, Control::I { send_seq: 0, recv_seq: 0, poll: true });
    assert_eq!(&decode(&request).info[..3], &LLC_REQUEST);

    let mut reply = LLC_REPLY.to_vec();
    reply.extend((0..300u16).map(|i| i as u8));
    let segments: Vec<&[u8]> = vec![&reply[..128], &reply[128..256], &reply[256..]];
    let mut got = None;
    for (i, seg) in segments.iter().enumerate() {
        let last = i == segments.len() - 1;
        let frame = Frame {
            segmented: !last,
            dest: Address::PUBLIC_CLIENT,
            src: SERVER,
            control: Control::I { send_seq: i as u8, recv_seq: 1, poll: true },
            info: seg.to_vec(),
        };
        match client.on_frame(&frame).unwrap() {
            Action::Send(rr) => {
                assert!(!last);
                assert_eq!(decode(&rr).control, Control::RR { recv_seq: i as u8 + 1, poll: true });
                assert_eq!(decode(&rr).dest, SERVER);
            }
            Action::Apdu(apdu) => {
                assert!(last);
                got = Some(apdu);
            }
            Action::Ignore => panic!("segment {i} ignored"),
        }
    }
    assert_eq!(got.unwrap(), &reply[3..]);
}

#[test]
fn a_long_request_goes_out_in_segments_after_each_rr() {
    let (mut client, mut server) = connected(HdlcParameters::default(), HdlcParameters::default());
    let apdu: Vec<u8> = (0..300u16).map(|i| (i * 7) as u8).collect();
    let first = decode(&client.send_apdu(&apdu).unwrap());
    assert!(first.segmented);
    assert_eq!(first.info.len(), 128);
    assert_eq!(first.control, Control::I { send_seq: 0, recv_seq: 0, poll: true });
    // A second APDU cannot start while this one is going out.
    assert!(matches!(client.send_apdu(&[1]), Err(SessionError::NotReadyToSend(_))));

    let ServerAction::Reply(rr) = server.on_frame(&first) else { panic!() };
    assert_eq!(decode(&rr).control, Control::RR { recv_seq: 1, poll: true });
    let Action::Send(second) = client.on_frame(&decode(&rr)).unwrap() else { panic!() };
    let second = decode(&second);
    assert!(second.segmented);
    assert_eq!(second.control, Control::I { send_seq: 1, recv_seq: 0, poll: true });
    let ServerAction::Reply(rr) = server.on_frame(&second) else { panic!() };
    let Action::Send(third) = client.on_frame(&decode(&rr)).unwrap() else { panic!() };
    let third = decode(&third);
    assert!(!third.segmented);
    assert_eq!(third.info.len(), 303 - 256);
    assert_eq!(server.on_frame(&third), ServerAction::Apdu(apdu));
}

#[test]
fn sequence_numbers_wrap_past_seven() {
    let (mut client, mut server) = connected(HdlcParameters::default(), HdlcParameters::default());
    for i in 0..20u8 {
        let sent = client.send_apdu(&[0xC0, i]).unwrap();
        assert_eq!(decode(&sent).control, Control::I { send_seq: i % 8, recv_seq: i % 8, poll: true });
        let ServerAction::Apdu(apdu) = server.on_frame(&decode(&sent)) else { panic!() };
        assert_eq!(apdu, [0xC0, i]);
        let reply = server.respond(&[0xC4, i]);
        assert_eq!(decode(&reply).control, Control::I { send_seq: i % 8, recv_seq: (i + 1) % 8, poll: true });
        assert_eq!(client.on_frame(&decode(&reply)).unwrap(), Action::Apdu(vec![0xC4, i]));
    }
    // And with segments (each segment advances the counters), over several wraps.
    for i in 0..5u8 {
        let apdu = vec![i; 1000];
        let (reply, frames) = round_trip(&mut client, &mut server, &apdu, &vec![i ^ 0xFF; 700]);
        assert_eq!(reply, vec![i ^ 0xFF; 700]);
        assert_eq!(frames, 8 + 6); // ceil(1003 / 128) + ceil(703 / 128)
    }
}

#[test]
fn out_of_sequence_frames_are_errors_and_duplicates_are_ignored() {
    let (mut client, mut server) = connected(HdlcParameters::default(), HdlcParameters::default());
    let sent = decode(&client.send_apdu(&[0xC0]).unwrap());
    let ServerAction::Apdu(_) = server.on_frame(&sent) else { panic!() };
    let reply = decode(&server.respond(&[0xAA; 200]));
    let Action::Send(rr) = client.on_frame(&reply).unwrap() else { panic!() };
    // The server re-sends its first segment (say our RR was slow): the client ignores the duplicate.
    assert_eq!(client.on_frame(&reply).unwrap(), Action::Ignore);
    let ServerAction::Reply(second) = server.on_frame(&decode(&rr)) else { panic!() };
    assert!(matches!(client.on_frame(&decode(&second)).unwrap(), Action::Apdu(_)));

    // A frame with N(S) ahead of what we expect: the link is broken.
    let wrong = Frame {
        segmented: false,
        dest: Address::PUBLIC_CLIENT,
        src: SERVER,
        control: Control::I { send_seq: 5, recv_seq: 1, poll: true },
        info: LLC_REPLY.to_vec(),
    };
    assert!(matches!(client.on_frame(&wrong), Err(SessionError::SequenceError { .. })));
    assert!(!client.is_connected());
}

#[test]
fn server_answers_a_retransmitted_request_with_its_last_reply_once() {
    let (mut client, mut server) = connected(HdlcParameters::default(), HdlcParameters::default());
    let sent = decode(&client.send_apdu(&[0xC0, 0x01]).unwrap());
    assert!(matches!(server.on_frame(&sent), ServerAction::Apdu(_)));
    let reply = server.respond(&[0xC4, 0x01]);
    // The reply was lost; the bus writes the same request again: the server does not see a new APDU.
    assert_eq!(server.on_frame(&sent), ServerAction::Reply(reply.clone()));
    assert_eq!(client.on_frame(&decode(&reply)).unwrap(), Action::Apdu(vec![0xC4, 0x01]));
    // The next request carries on normally.
    let (got, _) = round_trip(&mut client, &mut server, &[0xC0, 0x02], &[0xC4, 0x02]);
    assert_eq!(got, [0xC4, 0x02]);
}

#[test]
fn server_resends_a_segment_whose_rr_repeats() {
    let (mut client, mut server) = connected(HdlcParameters::default(), HdlcParameters::default());
    let sent = decode(&client.send_apdu(&[0xC0]).unwrap());
    server.on_frame(&sent);
    let first = server.respond(&vec![0x55; 300]);
    let Action::Send(rr) = client.on_frame(&decode(&first)).unwrap() else { panic!() };
    let ServerAction::Reply(second) = server.on_frame(&decode(&rr)) else { panic!() };
    // The second segment was lost on the line; the client (its bus) repeats the RR.
    assert_eq!(server.on_frame(&decode(&rr)), ServerAction::Reply(second.clone()));
    let Action::Send(rr2) = client.on_frame(&decode(&second)).unwrap() else { panic!() };
    let ServerAction::Reply(third) = server.on_frame(&decode(&rr2)) else { panic!() };
    assert_eq!(client.on_frame(&decode(&third)).unwrap(), Action::Apdu(vec![0x55; 300]));
}

#[test]
fn server_refuses_what_a_disconnected_meter_must_refuse() {
    let mut server = HdlcServer::new(SERVER, HdlcParameters::default());
    let i_frame = Frame {
        segmented: false,
        dest: SERVER,
        src: Address::PUBLIC_CLIENT,
        control: Control::I { send_seq: 0, recv_seq: 0, poll: true },
        info: vec![0xE6, 0xE6, 0x00, 0xC0],
    };
    // Not connected: DM.
    let ServerAction::Reply(dm) = server.on_frame(&i_frame) else { panic!() };
    assert_eq!(decode(&dm).control, Control::DM { poll: true });
    // DISC while disconnected: DM; after a connection: UA.
    let disc = Frame { control: Control::DISC { poll: true }, info: vec![], ..i_frame.clone() };
    let ServerAction::Reply(dm) = server.on_frame(&disc) else { panic!() };
    assert_eq!(decode(&dm).control, Control::DM { poll: true });
    let snrm = Frame { control: Control::SNRM { poll: true }, info: vec![], ..i_frame.clone() };
    let ServerAction::Reply(ua) = server.on_frame(&snrm) else { panic!() };
    assert_eq!(decode(&ua).control, Control::UA { poll: true });
    assert_eq!(server.client(), Some(Address::PUBLIC_CLIENT));
    // Another client meanwhile: DM for it, the connection stays.
    let other = Frame { src: Address::client(0x20), ..i_frame.clone() };
    let ServerAction::Reply(dm) = server.on_frame(&other) else { panic!() };
    assert_eq!(decode(&dm).dest, Address::client(0x20));
    assert!(server.is_connected());
    // Not our address, or all stations: silence.
    assert_eq!(server.on_frame(&Frame { dest: Address::One(2), ..snrm.clone() }), ServerAction::Ignore);
    assert_eq!(server.on_frame(&Frame { dest: Address::ALL_STATIONS, ..snrm.clone() }), ServerAction::Ignore);
    // Wrong N(S): FRMR.
    let ahead = Frame { control: Control::I { send_seq: 3, recv_seq: 0, poll: true }, ..i_frame.clone() };
    let ServerAction::Reply(frmr) = server.on_frame(&ahead) else { panic!() };
    assert_eq!(decode(&frmr).control, Control::FRMR { poll: true });
    // Missing LLC header: FRMR, no APDU.
    let no_llc = Frame { info: vec![0xC0, 0x01], ..i_frame.clone() };
    assert!(matches!(server.on_frame(&no_llc), ServerAction::Reply(_)));
    let ServerAction::Reply(ua) = server.on_frame(&disc) else { panic!() };
    assert_eq!(decode(&ua).control, Control::UA { poll: true });
    assert!(!server.is_connected());
    assert!(server.respond(&[1]).is_empty());
}

#[test]
fn server_accepts_its_address_in_any_width() {
    let mut server = HdlcServer::new(Address::server(1, Some(17)), HdlcParameters::default());
    let mut client =
        HdlcClient::new(Address::PUBLIC_CLIENT, Address::Four { upper: 1, lower: 17 }, HdlcParameters::default());
    let ServerAction::Reply(ua) = server.on_frame(&decode(&client.snrm())) else { panic!() };
    let ua = decode(&ua);
    // Answered in the width it was addressed with.
    assert_eq!(ua.src, Address::Four { upper: 1, lower: 17 });
    client.on_ua(&ua).unwrap();
}

#[test]
fn matcher_takes_our_servers_frame_only() {
    let client = HdlcClient::new(Address::PUBLIC_CLIENT, SERVER, HdlcParameters::default());
    let m = client.matcher();
    let ours = Frame {
        segmented: false,
        dest: Address::PUBLIC_CLIENT,
        src: SERVER,
        control: Control::RR { recv_seq: 1, poll: true },
        info: vec![],
    }
    .encode()
    .unwrap();
    assert_eq!(m.check(&ours), Check::Complete { len: ours.len() });
    assert_eq!(m.check(&ours[..5]), Check::Incomplete);
    // Another client's reply on the same line, another meter, our own request echoed back.
    for (dest, src) in
        [(Address::client(0x20), SERVER), (Address::PUBLIC_CLIENT, Address::One(2)), (SERVER, Address::PUBLIC_CLIENT)]
    {
        let foreign = Frame { dest, src, ..decode(&ours) }.encode().unwrap();
        assert!(matches!(m.check(&foreign), Check::Foreign { skip, .. } if skip == foreign.len()), "{dest:?} {src:?}");
    }
    // Noise before the flag is skipped; a bad FCS is corrupt.
    let mut noisy = vec![0x00, 0x55];
    noisy.extend_from_slice(&ours);
    assert!(matches!(m.check(&noisy), Check::Foreign { skip: 2, .. }));
    let mut bad = ours.clone();
    let n = bad.len();
    bad[n - 2] ^= 0x01;
    assert!(matches!(m.check(&bad), Check::Corrupt { .. }));
}

#[test]
fn deframer_splits_shared_flags_and_resyncs_on_noise() {
    let a = unhex("7E A0 07 03 21 93 0F 01 7E");
    let b = unhex(
        "7e a0 21 41 02 21 73 db d8 81 80 14 05 02 01 00 06 02 01 00 07 04 00 00 00 01 08 04 00 00 00 01 69 6d 7e",
    );
    let mut stream = vec![0x00, 0xFF, 0x13];
    stream.extend_from_slice(&a);
    stream.extend_from_slice(&b[1..]); // closing flag of `a` is the opening flag of `b`
    stream.extend_from_slice(&a);
    let mut d = Deframer::new();
    // Byte by byte, to prove partial frames wait.
    let mut frames = Vec::new();
    for byte in &stream {
        frames.extend(d.push(std::slice::from_ref(byte)));
    }
    assert_eq!(frames, vec![decode(&a), decode(&b), decode(&a)]);
    assert_eq!(d.discarded(), 3);
    // A frame with a bad FCS is dropped, the next one found.
    let mut bad = a.clone();
    bad[6] ^= 0xFF;
    bad.extend_from_slice(&a);
    assert_eq!(d.push(&bad), vec![decode(&a)]);
}

#[test]
fn disc_after_a_session() {
    let (mut client, mut server) = connected(HdlcParameters::default(), HdlcParameters::default());
    let disc = decode(&client.disc());
    assert_eq!(disc.control, Control::DISC { poll: true });
    let ServerAction::Reply(ua) = server.on_frame(&disc) else { panic!() };
    assert_eq!(decode(&ua).control, Control::UA { poll: true });
    assert!(!client.is_connected());
    assert!(!server.is_connected());
}

fn arb_address() -> impl Strategy<Value = Address> {
    prop_oneof![
        (0u8..=0x7F).prop_map(Address::One),
        (0u8..=0x7F, 0u8..=0x7F).prop_map(|(upper, lower)| Address::Two { upper, lower }),
        (0u16..=0x3FFF, 0u16..=0x3FFF).prop_map(|(upper, lower)| Address::Four { upper, lower }),
        Just(SERVER),
        Just(Address::PUBLIC_CLIENT),
    ]
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    (
        any::<bool>(),
        prop_oneof![arb_address(), Just(SERVER)],
        prop_oneof![arb_address(), Just(Address::PUBLIC_CLIENT)],
        any::<u8>(),
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300),
            proptest::collection::vec(any::<u8>(), 0..20).prop_map(|mut v| {
                let mut i = LLC_REQUEST.to_vec();
                i.append(&mut v);
                i
            }),
            Just(HdlcParameters::default().encode()),
        ],
    )
        .prop_map(|(segmented, dest, src, control, info)| Frame {
            segmented,
            dest,
            src,
            control: Control::from(control),
            info,
        })
}

proptest! {
    #[test]
    fn random_bytes_never_panic_the_deframer(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 0..8)) {
        let mut d = Deframer::new();
        for c in &chunks {
            for f in d.push(c) {
                prop_assert!(f.encode().is_ok());
            }
            prop_assert!(d.pending() <= 2 * 2049 + 600);
        }
    }

    #[test]
    fn random_frames_never_panic_client_or_server(frames in proptest::collection::vec(arb_frame(), 0..40), apdu_len in 0usize..3000) {
        let (mut client, mut server) = connected(HdlcParameters::default(), HdlcParameters::default());
        let _ = client.send_apdu(&vec![0xAB; apdu_len]);
        for (i, f) in frames.iter().enumerate() {
            // Mirror the frame so that some hit the client's addresses too.
            let _ = client.on_frame(&Frame { dest: f.src, src: f.dest, ..f.clone() });
            let _ = client.on_frame(f);
            match server.on_frame(f) {
                ServerAction::Reply(bytes) => prop_assert!(Frame::decode(&bytes).is_ok()),
                ServerAction::Apdu(_) => { let _ = server.respond(&vec![0xCD; apdu_len + i]); }
                ServerAction::Ignore => {}
            }
            if i % 7 == 0 {
                let _ = client.send_apdu(&[0xC0]);
                let _ = client.on_ua(f);
            }
        }
    }

    #[test]
    fn client_and_server_carry_any_apdu(
        request in proptest::collection::vec(any::<u8>(), 0..2500),
        reply in proptest::collection::vec(any::<u8>(), 0..2500),
        tx in 1u16..600, rx in 1u16..600,
    ) {
        let params = HdlcParameters { max_info_tx: tx, max_info_rx: rx, window_tx: 1, window_rx: 1 };
        let (mut client, mut server) = connected(params, HdlcParameters { max_info_tx: 2030, max_info_rx: 2030, window_tx: 1, window_rx: 1 });
        let (got, _) = round_trip(&mut client, &mut server, &request, &reply);
        prop_assert_eq!(got, reply);
    }
}

#[test]
fn server_reassembles_a_segmented_aarq_written_by_gurux() {
    // Gurux.DLMS.Python 1.0.203: `GXDLMSClient(True, 0x10, 1, Authentication.LOW, "12345678",
    // InterfaceType.HDLC)` with maxInfoTX = maxInfoRX = 32, UA parsed, `aarqRequest()` gives two frames.
    // (Gurux puts 3 bytes less than the maximum in the first segment; both sizes are within the limit.)
    let first = decode(&unhex(
        "7E A8 26 03 21 10 54 7E E6 E6 00 60 36 A1 09 06 07 60 85 74 05 08 01 01 8A 02 07 80 8B 07 60 85 74 05 08 \
         02 01 0E 5A 7E",
    ));
    let second = decode(&unhex(
        "7E A0 27 03 21 12 DD 1B AC 0A 80 08 31 32 33 34 35 36 37 38 BE 10 04 0E 01 00 00 00 06 5F 1F 04 00 40 1E \
         5D FF FF 1F 36 7E",
    ));
    let mut server =
        HdlcServer::new(SERVER, HdlcParameters { max_info_tx: 32, max_info_rx: 32, window_tx: 1, window_rx: 1 });
    let snrm = Frame {
        segmented: false,
        dest: SERVER,
        src: Address::PUBLIC_CLIENT,
        control: Control::SNRM { poll: true },
        info: unhex("81 80 06 05 01 20 06 01 20"), // Gurux's SNRM information field for 32/32
    };
    let ServerAction::Reply(ua) = server.on_frame(&snrm) else { panic!() };
    let ua = decode(&ua);
    assert_eq!(HdlcParameters::decode(&ua.info).unwrap().max_info_rx, 32);
    let ServerAction::Reply(rr) = server.on_frame(&first) else { panic!() };
    assert_eq!(decode(&rr).control, Control::RR { recv_seq: 1, poll: true });
    let ServerAction::Apdu(aarq) = server.on_frame(&second) else { panic!() };
    assert_eq!(aarq.len(), 0x38);
    assert_eq!(&aarq[..2], &[0x60, 0x36]);
    assert_eq!(&aarq[aarq.len() - 5..], &[0x40, 0x1E, 0x5D, 0xFF, 0xFF]); // conformance, max PDU size
}

#[test]
fn server_serves_a_segmented_reply_to_gurux_frames() {
    // Frames written by Gurux.DLMS.Python 1.0.203 (`GXDLMSClient(True, 0x10, 1, NONE, None, HDLC)`): the
    // SNRM with defaults, `read(GXDLMSData("1.0.96.1.0.255"), 2)`, then `receiverReady()` after each of
    // our segments. Fed the other way, Gurux's `getData` accepted our UA and reassembled these three
    // segments into the 300-byte octet-string (checked with the same script).
    let mut server = HdlcServer::new(SERVER, HdlcParameters::default());
    let ServerAction::Reply(ua) = server.on_frame(&decode(&unhex("7E A0 07 03 21 93 0F 01 7E"))) else { panic!() };
    assert_eq!(decode(&ua).info, HdlcParameters::default().encode());
    let get = unhex("7E A0 19 03 21 10 7F DA E6 E6 00 C0 01 C1 00 01 01 00 60 01 00 FF 02 00 36 21 7E");
    let ServerAction::Apdu(apdu) = server.on_frame(&decode(&get)) else { panic!() };
    assert_eq!(apdu, unhex("C0 01 C1 00 01 01 00 60 01 00 FF 02 00"));
    let mut reply = unhex("C4 01 C1 00 09 82 01 2C");
    reply.extend((0..300u16).map(|i| i as u8));
    let mut segments = vec![decode(&server.respond(&reply))];
    for rr in ["7E A0 07 03 21 31 17 87 7E", "7E A0 07 03 21 51 11 E4 7E"] {
        let ServerAction::Reply(next) = server.on_frame(&decode(&unhex(rr))) else { panic!() };
        segments.push(decode(&next));
    }
    let controls: Vec<Control> = segments.iter().map(|f| f.control).collect();
    assert_eq!(
        controls,
        [0, 1, 2].map(|ns| Control::I { send_seq: ns, recv_seq: 1, poll: true }),
        "N(S) counts the segments, N(R) acknowledges the one request"
    );
    assert_eq!(segments.iter().map(|f| f.segmented).collect::<Vec<_>>(), [true, true, false]);
    assert_eq!(segments.iter().map(|f| f.info.len()).sum::<usize>(), 3 + 8 + 300);
}

#[test]
fn after_an_inactivity_disconnect_the_client_gets_dm() {
    let (mut client, mut server) = connected(HdlcParameters::default(), HdlcParameters::default());
    server.disconnect();
    assert!(!server.is_connected());
    let request = decode(&client.send_apdu(&[0xC0, 0x01]).unwrap());
    let ServerAction::Reply(dm) = server.on_frame(&request) else { panic!() };
    assert_eq!(client.on_frame(&decode(&dm)), Err(SessionError::Rejected(Control::DM { poll: true })));
    assert!(!client.is_connected());
}

#[test]
fn a_damaged_header_is_refused_before_the_frame_completes() {
    let frame = Frame {
        segmented: false,
        dest: Address::PUBLIC_CLIENT,
        src: SERVER,
        control: Control::I { send_seq: 0, recv_seq: 1, poll: true },
        info: vec![0xE6, 0xE7, 0x00, 0xC4, 0x01, 0xC1, 0x00, 0x06, 0x00, 0x00, 0x00, 0x2A],
    }
    .encode()
    .unwrap();
    let mut damaged = frame.clone();
    damaged[6] ^= 0x01; // HCS low byte
                        // Header and HCS arrived, the rest not: already refused.
    assert!(matches!(Frame::check_prefix(&damaged[..9]), Err(ami_link::hdlc::FrameError::Hcs { .. })));
    let client = HdlcClient::new(Address::PUBLIC_CLIENT, SERVER, HdlcParameters::default());
    assert!(matches!(client.matcher().check(&damaged[..9]), Check::Corrupt { .. }));

    // Noise that looks like the start of a 2 KiB frame does not hold up the real frame behind it.
    let mut stream = vec![0x7E, 0xA7, 0xFF, 0x03, 0x21, 0x10, 0x00, 0x00, 0x55];
    stream.extend_from_slice(&frame);
    let mut d = Deframer::new();
    assert_eq!(d.push(&stream), vec![decode(&frame)]);
    assert_eq!(d.pending(), 1); // the closing flag, kept for a shared-flag successor
}

proptest! {
    #[test]
    fn every_prefix_of_a_valid_frame_passes_the_prefix_check(frame in arb_frame()) {
        let Ok(bytes) = frame.encode() else { return Ok(()) };
        for n in 0..=bytes.len() {
            prop_assert_eq!(Frame::check_prefix(&bytes[..n]), Ok(()), "prefix of {} bytes", n);
        }
    }
}

#[test]
fn client_polls_a_server_that_answers_rr_instead_of_its_reply() {
    let (mut client, mut server) = connected(HdlcParameters::default(), HdlcParameters::default());
    let request = decode(&client.send_apdu(&[0xC0, 0x01]).unwrap());
    let ServerAction::Apdu(_) = server.on_frame(&request) else { panic!() };
    let reply = server.respond(&[0xC4, 0x01]);
    // A strict meter answers our (repeated) request with RR N(R)=1 instead of the reply:
    let rr = Frame {
        segmented: false,
        dest: Address::PUBLIC_CLIENT,
        src: SERVER,
        control: Control::RR { recv_seq: 1, poll: true },
        info: vec![],
    };
    let Action::Send(poll) = client.on_frame(&rr).unwrap() else { panic!() };
    assert_eq!(decode(&poll).control, Control::RR { recv_seq: 0, poll: true });
    // Our server, polled after its reply was lost, sends the reply again.
    assert_eq!(server.on_frame(&decode(&poll)), ServerAction::Reply(reply.clone()));
    assert_eq!(client.on_frame(&decode(&reply)).unwrap(), Action::Apdu(vec![0xC4, 0x01]));

    // RR asking for our last frame again (N(R) = our N(S)): the same frame.
    let sent = client.send_apdu(&[0xC0, 0x02]).unwrap();
    let again = Frame { control: Control::RR { recv_seq: 1, poll: true }, ..rr.clone() };
    assert_eq!(client.on_frame(&again).unwrap(), Action::Send(sent));
    // A server that only ever answers RR: the client gives up after a few polls.
    let only_rr = Frame { control: Control::RR { recv_seq: 2, poll: true }, ..rr };
    for _ in 0..3 {
        assert!(matches!(client.on_frame(&only_rr).unwrap(), Action::Send(_)));
    }
    assert!(matches!(client.on_frame(&only_rr), Err(SessionError::UnexpectedFrame { .. })));
}

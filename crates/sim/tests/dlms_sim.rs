//! The simulated DLMS meter over real sockets, read by ami's own DLMS client
//! (`ami_protocols::dlms::session::Session` over an `ami_link::Bus` on a TCP transport): associations at
//! the three security levels over HDLC and the wrapper, register values against the model, load profile
//! by range and in data blocks, clock setting, disconnect control, refusals, and garbage.

use std::sync::Arc;
use std::time::Duration;

use ami_link::hdlc::{Address, Frame};
use ami_link::hdlc_session::{Action, HdlcClient, HdlcParameters};
use ami_link::{mode_e, Bus, BusConfig, BusHandle};
use ami_media::TcpTransport;
use ami_protocols::dlms::apdu::{AttributeDescriptor, DataAccessResult};
use ami_protocols::dlms::axdr::Data;
use ami_protocols::dlms::client::{Authentication, Ciphering, ClientSettings, DlmsError, MemoryCounter};
use ami_protocols::dlms::cosem;
use ami_protocols::dlms::security::Keys;
use ami_protocols::dlms::session::{Framing, Session, SessionConfig};
use ami_sim::dlms::{
    serve_stream, spawn_tcp, DlmsFaults, DlmsFraming, DlmsMeter, DlmsMeterSpec, DEFAULT_AUTHENTICATION_KEY,
    DEFAULT_BLOCK_CIPHER_KEY, SAP_HLS, SAP_LLS, SAP_PUBLIC,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const IMPORT: [u8; 6] = [1, 0, 1, 8, 0, 255];
const LOAD_PROFILE: [u8; 6] = [1, 0, 99, 1, 0, 255];
const CLIENT_TITLE: [u8; 8] = *b"AMITEST1";

fn keys() -> Keys {
    Keys { block_cipher_key: DEFAULT_BLOCK_CIPHER_KEY, authentication_key: DEFAULT_AUTHENTICATION_KEY }
}

/// The client settings of a security level (by client SAP).
fn settings(sap: u16, password: &[u8]) -> ClientSettings {
    match sap {
        SAP_PUBLIC => ClientSettings::default(),
        SAP_LLS => ClientSettings {
            authentication: Authentication::Low { password: password.to_vec() },
            ..ClientSettings::default()
        },
        _ => ClientSettings {
            authentication: Authentication::HighGmac,
            ciphering: Some(Ciphering::new(keys(), CLIENT_TITLE)),
            ..ClientSettings::default()
        },
    }
}

fn framing(framing: DlmsFraming, sap: u16, spec: &DlmsMeterSpec) -> Framing {
    match framing {
        DlmsFraming::Hdlc => Framing::Hdlc {
            client: u8::try_from(sap).unwrap(),
            server_logical: spec.server_logical,
            server_physical: Some(spec.server_physical),
            params: HdlcParameters::default(),
        },
        DlmsFraming::Wrapper => Framing::Wrapper { client: sap, server: spec.server_logical },
    }
}

async fn bus(addr: std::net::SocketAddr) -> BusHandle {
    let transport = TcpTransport::connect(&addr.ip().to_string(), addr.port()).await.unwrap();
    Bus::spawn(Box::new(transport), BusConfig { id: "dlms-test".into(), ..BusConfig::default() })
}

fn config(framing: Framing, settings: ClientSettings) -> SessionConfig {
    SessionConfig {
        meter: "sim".into(),
        framing,
        optical_mode_e: false,
        settings,
        timeout: Duration::from_secs(2),
        retries: 0,
    }
}

async fn open(
    addr: std::net::SocketAddr,
    spec: &DlmsMeterSpec,
    kind: DlmsFraming,
    sap: u16,
    settings: ClientSettings,
    counter: Arc<MemoryCounter>,
) -> Result<Session, DlmsError> {
    let bus = bus(addr).await;
    Session::open(&bus, config(framing(kind, sap, spec), settings), counter).await
}

/// Energy the meter registers in one capture period at most (the tolerance of "at meter time").
fn interval_energy(meter: &DlmsMeter, t: i64) -> f64 {
    meter.energy_import_wh(t + 900) - meter.energy_import_wh(t - 900)
}

#[tokio::test]
async fn every_security_level_reads_the_model_over_hdlc_and_wrapper() {
    for kind in [DlmsFraming::Hdlc, DlmsFraming::Wrapper] {
        let spec = DlmsMeterSpec::for_serial(20_240_001);
        let meter = DlmsMeter::new(spec.clone());
        let (addr, server) = spawn_tcp("127.0.0.1:0", meter.clone(), kind).await.unwrap();
        for sap in [SAP_PUBLIC, SAP_LLS, SAP_HLS] {
            let counter = Arc::new(MemoryCounter::new(1));
            let mut session = open(addr, &spec, kind, sap, settings(sap, b"00000000"), counter)
                .await
                .unwrap_or_else(|e| panic!("{kind:?} SAP {sap:#x}: {e}"));
            let (wh, su) = session.read_register(IMPORT, 3).await.unwrap();
            let now = meter.now();
            let expected = meter.energy_import_wh(now);
            assert!((wh - expected).abs() <= interval_energy(&meter, now), "{kind:?} SAP {sap:#x}: {wh} vs {expected}");
            assert_eq!(su.map(|s| s.unit_symbol()), Some(Some("Wh")));
            // A register with a non-zero scaler: voltage in 0.1 V.
            let (volts, su) = session.read_register([1, 0, 32, 7, 0, 255], 3).await.unwrap();
            assert!((225.0..=235.0).contains(&volts), "{volts}");
            assert_eq!(su.map(|s| s.scaler), Some(-1));
            let serial = session
                .get(AttributeDescriptor { class_id: 1, instance: [0, 0, 96, 1, 0, 255], attribute: 2 }, None)
                .await
                .unwrap();
            assert_eq!(serial, Data::VisibleString(b"20240001".to_vec()));
            session.close().await.unwrap();
        }
        let stats = meter.stats();
        assert_eq!((stats.associations, stats.rejected), (3, 0), "{kind:?}: {stats:?}");
        server.abort();
    }
}

#[tokio::test]
async fn wrong_password_is_refused_with_authentication_failure() {
    let spec = DlmsMeterSpec::default();
    let meter = DlmsMeter::new(spec.clone());
    let (addr, server) = spawn_tcp("127.0.0.1:0", meter.clone(), DlmsFraming::Hdlc).await.unwrap();
    let counter = Arc::new(MemoryCounter::new(1));
    let refused = open(addr, &spec, DlmsFraming::Hdlc, SAP_LLS, settings(SAP_LLS, b"12345678"), counter).await;
    assert!(matches!(refused, Err(DlmsError::AuthenticationFailed) | Err(DlmsError::Rejected { .. })), "{refused:?}");
    // The public client may not use a password-level SAP without one either.
    let refused =
        open(addr, &spec, DlmsFraming::Hdlc, SAP_LLS, ClientSettings::default(), Arc::new(MemoryCounter::new(1))).await;
    assert!(refused.is_err());
    let stats = meter.stats();
    assert_eq!((stats.associations, stats.auth_failures), (0, 2), "{stats:?}");
    server.abort();
}

#[tokio::test]
async fn hls_with_wrong_keys_or_a_restarted_invocation_counter_is_refused() {
    let spec = DlmsMeterSpec::default();
    let meter = DlmsMeter::new(spec.clone());
    let (addr, server) = spawn_tcp("127.0.0.1:0", meter.clone(), DlmsFraming::Wrapper).await.unwrap();
    let mut wrong = settings(SAP_HLS, b"");
    wrong.ciphering = Some(Ciphering::new(Keys { authentication_key: [0x55; 16], ..keys() }, CLIENT_TITLE));
    assert!(open(addr, &spec, DlmsFraming::Wrapper, SAP_HLS, wrong, Arc::new(MemoryCounter::new(1))).await.is_err());
    // A good association, then a client that starts its counter from 1 again: refused as a replay.
    let counter = Arc::new(MemoryCounter::new(100));
    let session = open(addr, &spec, DlmsFraming::Wrapper, SAP_HLS, settings(SAP_HLS, b""), counter).await.unwrap();
    session.close().await.unwrap();
    let replay =
        open(addr, &spec, DlmsFraming::Wrapper, SAP_HLS, settings(SAP_HLS, b""), Arc::new(MemoryCounter::new(1))).await;
    assert!(replay.is_err());
    let stats = meter.stats();
    assert_eq!(stats.associations, 1, "{stats:?}");
    assert!(stats.auth_failures + stats.deciphering_errors >= 1, "{stats:?}");
    assert!(stats.replayed_counters >= 1, "{stats:?}");
    server.abort();
}

#[tokio::test]
async fn one_day_of_load_profile_by_range_has_96_entries_from_the_model() {
    let spec = DlmsMeterSpec { history_days: 3, ..DlmsMeterSpec::for_serial(5) };
    let meter = DlmsMeter::new(spec.clone());
    let (addr, server) = spawn_tcp("127.0.0.1:0", meter.clone(), DlmsFraming::Hdlc).await.unwrap();
    let counter = Arc::new(MemoryCounter::new(1));
    let mut session = open(addr, &spec, DlmsFraming::Hdlc, SAP_HLS, settings(SAP_HLS, b""), counter).await.unwrap();
    let yesterday = meter.now().div_euclid(86_400) * 86_400 - 86_400;
    let profile = session.read_profile(LOAD_PROFILE, yesterday, yesterday + 86_399).await.unwrap();
    assert_eq!(profile.period_s, Some(900));
    assert_eq!(profile.rows.len(), 96);
    for (i, row) in profile.rows.iter().enumerate() {
        let t = row.time.unwrap();
        assert_eq!(t, yesterday + 900 * i as i64);
        let (import, export) = meter.register_values(t);
        assert_eq!(row.values[1..], [Data::DoubleLongUnsigned(import), Data::DoubleLongUnsigned(export)]);
    }
    session.close().await.unwrap();
    server.abort();
}

#[tokio::test]
async fn the_whole_buffer_arrives_in_blocks_and_history_survives_a_restart_with_another_offset() {
    let spec = DlmsMeterSpec { history_days: 3, ..DlmsMeterSpec::for_serial(6) };
    let meter = DlmsMeter::new(spec.clone());
    let (addr, server) = spawn_tcp("127.0.0.1:0", meter.clone(), DlmsFraming::Wrapper).await.unwrap();
    let small = ClientSettings { max_receive_pdu: 256, ..settings(SAP_LLS, b"00000000") };
    let mut session =
        open(addr, &spec, DlmsFraming::Wrapper, SAP_LLS, small, Arc::new(MemoryCounter::new(1))).await.unwrap();
    let buffer = AttributeDescriptor { class_id: 7, instance: LOAD_PROFILE, attribute: 2 };
    let Data::Array(rows) = session.get(buffer, None).await.unwrap() else { panic!("not an array") };
    assert_eq!(rows.len(), 3 * 96);
    let blocks = meter.stats().blocks_sent;
    assert!(blocks > 20, "{blocks} blocks");
    session.close().await.unwrap();
    server.abort();

    // The same meter restarted with its clock a day behind: the entries of a common day are identical.
    let behind = DlmsMeter::new(DlmsMeterSpec { clock_offset_s: -86_400, ..spec.clone() });
    let (addr, server) = spawn_tcp("127.0.0.1:0", behind.clone(), DlmsFraming::Wrapper).await.unwrap();
    let mut session =
        open(addr, &spec, DlmsFraming::Wrapper, SAP_PUBLIC, ClientSettings::default(), Arc::new(MemoryCounter::new(1)))
            .await
            .unwrap();
    let Data::Array(again) = session.get(buffer, None).await.unwrap() else { panic!("not an array") };
    assert_eq!(again.len(), 3 * 96);
    // `again` ends a day earlier: its last two days are the first two of `rows` shifted by 96 entries.
    let shift = rows.iter().position(|r| r == &again[again.len() - 1]).expect("common entry");
    assert!(shift >= 95, "{shift}");
    assert_eq!(rows[..=shift], again[again.len() - 1 - shift..]);
    session.close().await.unwrap();
    server.abort();
}

#[tokio::test]
async fn setting_the_clock_moves_the_meter_clock() {
    let spec = DlmsMeterSpec::default();
    let meter = DlmsMeter::new(spec.clone());
    let (addr, server) = spawn_tcp("127.0.0.1:0", meter.clone(), DlmsFraming::Hdlc).await.unwrap();
    let mut session =
        open(addr, &spec, DlmsFraming::Hdlc, SAP_LLS, settings(SAP_LLS, b"00000000"), Arc::new(MemoryCounter::new(1)))
            .await
            .unwrap();
    let before = session.read_clock().await.unwrap();
    assert!((before - meter.now()).abs() <= 2);
    session.set_clock(before + 3 * 3600).await.unwrap();
    let offset = meter.clock_offset();
    assert!((offset - 3 * 3600).abs() <= 2, "offset {offset}");
    let after = session.read_clock().await.unwrap();
    assert!((after - before - 3 * 3600).abs() <= 2);
    assert_eq!(meter.stats().clock_sets, 1);
    session.close().await.unwrap();

    // The public client may read but not set it.
    let mut public =
        open(addr, &spec, DlmsFraming::Hdlc, SAP_PUBLIC, ClientSettings::default(), Arc::new(MemoryCounter::new(1)))
            .await
            .unwrap();
    let refused = public.set_clock(before).await;
    assert!(matches!(refused, Err(DlmsError::Access(DataAccessResult::ReadWriteDenied))), "{refused:?}");
    public.close().await.unwrap();
    server.abort();
}

#[tokio::test]
async fn disconnect_and_reconnect_change_the_output_state() {
    let spec = DlmsMeterSpec::default();
    let meter = DlmsMeter::new(spec.clone());
    let (addr, server) = spawn_tcp("127.0.0.1:0", meter.clone(), DlmsFraming::Wrapper).await.unwrap();
    let mut session =
        open(addr, &spec, DlmsFraming::Wrapper, SAP_HLS, settings(SAP_HLS, b""), Arc::new(MemoryCounter::new(1)))
            .await
            .unwrap();
    let output = AttributeDescriptor { class_id: 70, instance: [0, 0, 96, 3, 10, 255], attribute: 2 };
    assert_eq!(session.get(output, None).await.unwrap(), Data::Boolean(true));
    session.disconnect().await.unwrap();
    assert!(!meter.relay_connected());
    assert_eq!(session.get(output, None).await.unwrap(), Data::Boolean(false));
    let control_state = AttributeDescriptor { attribute: 3, ..output };
    assert_eq!(session.get(control_state, None).await.unwrap(), Data::Enum(0));
    session.reconnect().await.unwrap();
    assert!(meter.relay_connected());
    assert_eq!(session.get(output, None).await.unwrap(), Data::Boolean(true));
    assert_eq!(meter.stats().relay_operations, 2);
    session.close().await.unwrap();
    server.abort();
}

#[tokio::test]
async fn unknown_objects_are_undefined_and_lists_answer_item_by_item() {
    let spec = DlmsMeterSpec::default();
    let meter = DlmsMeter::new(spec.clone());
    let (addr, server) = spawn_tcp("127.0.0.1:0", meter.clone(), DlmsFraming::Hdlc).await.unwrap();
    let mut session =
        open(addr, &spec, DlmsFraming::Hdlc, SAP_PUBLIC, ClientSettings::default(), Arc::new(MemoryCounter::new(1)))
            .await
            .unwrap();
    let unknown = AttributeDescriptor { class_id: 3, instance: [1, 0, 99, 99, 99, 255], attribute: 2 };
    let refused = session.get(unknown, None).await;
    assert!(matches!(refused, Err(DlmsError::Access(DataAccessResult::ObjectUndefined))), "{refused:?}");
    let results = session
        .get_list(vec![
            (AttributeDescriptor { class_id: 3, instance: IMPORT, attribute: 2 }, None),
            (unknown, None),
            (AttributeDescriptor { class_id: 3, instance: [1, 0, 1, 8, 1, 255], attribute: 2 }, None),
            (AttributeDescriptor { class_id: 3, instance: [1, 0, 1, 8, 2, 255], attribute: 2 }, None),
        ])
        .await
        .unwrap();
    use ami_protocols::dlms::apdu::GetDataResult;
    let [GetDataResult::Data(total), GetDataResult::Error(DataAccessResult::ObjectUndefined), GetDataResult::Data(t1), GetDataResult::Data(t2)] =
        results.as_slice()
    else {
        panic!("{results:?}")
    };
    let n = |d: &Data| cosem::data_to_i64(d).unwrap();
    // The tariffs sum to the total (read within the same second, or one Wh apart across a second).
    assert!((n(t1) + n(t2) - n(total)).abs() <= 1);
    // The association's object list (what a Gurux client's getObjects reads) names the load profile.
    let list = session
        .get(AttributeDescriptor { class_id: 15, instance: [0, 0, 40, 0, 0, 255], attribute: 2 }, None)
        .await
        .unwrap();
    let Data::Array(objects) = list else { panic!() };
    assert!(objects
        .iter()
        .any(|o| matches!(o, Data::Structure(f) if f.get(2) == Some(&Data::OctetString(LOAD_PROFILE.to_vec())))));
    session.close().await.unwrap();
    server.abort();
}

#[tokio::test]
async fn a_one_byte_server_address_is_answered_too() {
    let spec = DlmsMeterSpec::default();
    let meter = DlmsMeter::new(spec.clone());
    let (addr, server) = spawn_tcp("127.0.0.1:0", meter.clone(), DlmsFraming::Hdlc).await.unwrap();
    let framing =
        Framing::Hdlc { client: 0x10, server_logical: 1, server_physical: None, params: HdlcParameters::default() };
    let bus = bus(addr).await;
    let mut session =
        Session::open(&bus, config(framing, ClientSettings::default()), Arc::new(MemoryCounter::new(1))).await.unwrap();
    assert!(session.read_register(IMPORT, 3).await.is_ok());
    session.close().await.unwrap();
    server.abort();
}

/// Writes `frame`, reads one HDLC frame back.
async fn hdlc_exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(stream: &mut S, frame: &[u8]) -> Frame {
    stream.write_all(frame).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        if let Ok(Some((frame, _))) = Frame::decode(&buf) {
            return frame;
        }
        let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn mode_e_sign_on_then_hdlc_on_a_stream() {
    let meter = DlmsMeter::new(DlmsMeterSpec::default());
    let spec = meter.spec().clone();
    let (mut client, server_side) = tokio::io::duplex(4096);
    let server = tokio::spawn(serve_stream(server_side, meter.clone(), DlmsFraming::Hdlc, true));
    client.write_all(&mode_e::sign_on(None)).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 128];
    while !buf.ends_with(b"\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(2), client.read(&mut chunk)).await.unwrap().unwrap();
        buf.extend_from_slice(&chunk[..n]);
    }
    let ident = mode_e::parse_identification(&buf).unwrap();
    assert!(ident.mode_e);
    assert_eq!(mode_e::baud_rate(ident.baud_char), Some(9600));
    client.write_all(&mode_e::ack_hdlc(ident.baud_char)).await.unwrap();
    let mut hdlc = HdlcClient::new(
        Address::client(0x10),
        Address::server(spec.server_logical, Some(spec.server_physical)),
        HdlcParameters::default(),
    );
    let snrm = hdlc.snrm();
    let ua = hdlc_exchange(&mut client, &snrm).await;
    hdlc.on_ua(&ua).unwrap();
    // An AARQ of the public client over the opened link.
    let mut association =
        ami_protocols::dlms::client::Association::new(ClientSettings::default(), Arc::new(MemoryCounter::new(1)));
    let aarq = association.aarq().unwrap();
    let frame = hdlc.send_apdu(&aarq).unwrap();
    let reply = hdlc_exchange(&mut client, &frame).await;
    let Ok(Action::Apdu(aare)) = hdlc.on_frame(&reply) else { panic!("{reply:?}") };
    assert_eq!(association.on_aare(&aare).unwrap(), None);
    assert!(association.is_associated());
    drop(client);
    server.await.unwrap().unwrap();
    assert_eq!(meter.stats().associations, 1);
}

#[tokio::test]
async fn random_bytes_never_break_the_server() {
    for kind in [DlmsFraming::Hdlc, DlmsFraming::Wrapper] {
        let spec = DlmsMeterSpec::default();
        let meter = DlmsMeter::new(spec.clone());
        let (addr, server) = spawn_tcp("127.0.0.1:0", meter.clone(), kind).await.unwrap();
        let mut rng = StdRng::seed_from_u64(0x5EED);
        for _ in 0..20 {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            for _ in 0..20 {
                let len = rng.gen_range(1..300);
                let mut bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
                // Plausible starts reach deeper: an HDLC flag and format byte, or a wrapper version.
                match rng.gen_range(0..3) {
                    0 => bytes.splice(0..0, [0x7E, 0xA0]).for_each(drop),
                    1 => bytes.splice(0..0, [0x00, 0x01, 0x00, 0x10, 0x00, 0x01]).for_each(drop),
                    _ => {}
                }
                if stream.write_all(&bytes).await.is_err() {
                    break;
                }
            }
            drop(stream);
        }
        // The server still serves a proper client afterwards.
        let mut session =
            open(addr, &spec, kind, SAP_LLS, settings(SAP_LLS, b"00000000"), Arc::new(MemoryCounter::new(1)))
                .await
                .unwrap();
        assert!(session.read_register(IMPORT, 3).await.is_ok());
        session.close().await.unwrap();
        assert!(!server.is_finished());
        server.abort();
    }
}

#[tokio::test]
async fn dropped_hdlc_replies_are_recovered_by_retransmission_and_delay_is_applied() {
    let spec = DlmsMeterSpec::default();
    let meter = DlmsMeter::new(spec.clone());
    meter.set_faults(DlmsFaults { delay: Duration::from_millis(20), drop_every_nth: Some(3) });
    let (addr, server) = spawn_tcp("127.0.0.1:0", meter.clone(), DlmsFraming::Hdlc).await.unwrap();
    let bus = bus(addr).await;
    let cfg = SessionConfig {
        timeout: Duration::from_millis(300),
        retries: 2,
        ..config(framing(DlmsFraming::Hdlc, SAP_LLS, &spec), settings(SAP_LLS, b"00000000"))
    };
    let started = std::time::Instant::now();
    let mut session = Session::open(&bus, cfg, Arc::new(MemoryCounter::new(1))).await.unwrap();
    for _ in 0..4 {
        let (wh, _) = session.read_register(IMPORT, 3).await.unwrap();
        let now = meter.now();
        assert!((wh - meter.energy_import_wh(now)).abs() <= interval_energy(&meter, now));
    }
    // The release may lose its reply (it is not retried); the readings above are what matters.
    let _ = session.close().await;
    let stats = meter.stats();
    assert!(stats.dropped >= 2, "{stats:?}");
    assert_eq!(stats.associations, 1, "a retransmitted AARQ is answered again, not re-associated: {stats:?}");
    // SNRM, AARQ, 2 × (scaler, value) at least, each 20 ms late, plus the retries' timeouts.
    assert!(started.elapsed() >= Duration::from_millis(300 + 6 * 20));
    server.abort();
}

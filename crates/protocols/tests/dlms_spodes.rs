//! Interoperability with an independent DLMS/COSEM server: the spodes-rs 0.7.1 example `hdlc_tcp_server`
//! (HDLC over TCP, server address 1, public client 0x10, no authentication, a Data object `1-0:1.8.0*255`
//! holding double-long-unsigned 42). Our `Session` runs over a real `Bus` with a real TCP transport: SNRM/UA,
//! AARQ/AARE, GET, RLRQ/RLRE, DISC.
//!
//! The server is a test tool only (GPL, never linked): `tests/run.sh` installs it and sets
//! `AMI_SPODES_SERVER`; by hand: `cargo install spodes-rs --version 0.7.1 --example hdlc_tcp_server --root
//! /tmp/spodes`. A missing server fails the test (it is not skipped).

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ami_link::hdlc_session::HdlcParameters;
use ami_link::{Bus, BusConfig};
use ami_media::TcpTransport;
use ami_protocols::dlms::apdu::AttributeDescriptor;
use ami_protocols::dlms::axdr::Data;
use ami_protocols::dlms::client::{ClientSettings, DlmsError, MemoryCounter};
use ami_protocols::dlms::cosem::{parse_obis, CLASS_DATA};
use ami_protocols::dlms::session::{Framing, Session, SessionConfig};

const DEFAULT_SERVER: &str = "/tmp/spodes/bin/hdlc_tcp_server";

/// The server process, killed when the test ends however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn server_binary() -> PathBuf {
    let path = std::env::var_os("AMI_SPODES_SERVER").map_or_else(|| PathBuf::from(DEFAULT_SERVER), PathBuf::from);
    assert!(
        path.is_file(),
        "the spodes-rs example server is not at {} (AMI_SPODES_SERVER or the default {DEFAULT_SERVER}). \
         Run the test suite with tests/run.sh, which installs it and sets AMI_SPODES_SERVER, or install it \
         by hand: cargo install spodes-rs --version 0.7.1 --example hdlc_tcp_server --root /tmp/spodes",
        path.display()
    );
    path
}

/// Starts the server on a free port and waits until it accepts connections.
fn start_server() -> (Server, u16) {
    let binary = server_binary();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(&binary)
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    // A probe connection is accepted and closed at once; the server then serves the next client.
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "spodes-rs server did not listen on port {port} within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, port)
}

fn config(server_logical: u16) -> SessionConfig {
    SessionConfig {
        meter: "spodes".into(),
        framing: Framing::Hdlc {
            client: 0x10,
            server_logical,
            server_physical: None,
            params: HdlcParameters::default(),
        },
        optical_mode_e: false,
        settings: ClientSettings::default(),
        timeout: Duration::from_secs(2),
        retries: 1,
    }
}

#[tokio::test]
async fn reads_energy_register_from_the_spodes_rs_hdlc_server() {
    let (_server, port) = start_server();
    let transport = TcpTransport::connect("127.0.0.1", port).await.unwrap();
    let bus = Bus::spawn(Box::new(transport), BusConfig { id: "spodes".into(), ..BusConfig::default() });

    let mut session = Session::open(&bus, config(1), Arc::new(MemoryCounter::new(1))).await.unwrap();
    assert!(session.association().is_associated());
    let negotiated = session.association().negotiated().unwrap();
    assert!(negotiated.server_max_receive_pdu_size > 0, "{negotiated:?}");

    let energy = parse_obis("1-0:1.8.0*255").unwrap();
    let value = session.get(AttributeDescriptor { class_id: CLASS_DATA, instance: energy, attribute: 2 }, None).await;
    assert_eq!(value.unwrap(), Data::DoubleLongUnsigned(42));
    let (number, scaler) = session.read_register(energy, CLASS_DATA).await.unwrap();
    assert_eq!((number, scaler), (42.0, None));

    // An object the server does not have: a data access error, and the association stays usable.
    let missing = parse_obis("1-0:2.8.0*255").unwrap();
    let refused =
        session.get(AttributeDescriptor { class_id: CLASS_DATA, instance: missing, attribute: 2 }, None).await;
    assert!(matches!(refused, Err(DlmsError::Access(_))), "{refused:?}");
    let again = session.get(AttributeDescriptor { class_id: CLASS_DATA, instance: energy, attribute: 2 }, None).await;
    assert_eq!(again.unwrap(), Data::DoubleLongUnsigned(42));

    let started = Instant::now();
    session.close().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    let stats = bus.stats();
    assert_eq!(stats.total.failures, 0, "{stats:?}");
}

#[tokio::test]
async fn a_server_address_nobody_answers_times_out() {
    let (_server, port) = start_server();
    let transport = TcpTransport::connect("127.0.0.1", port).await.unwrap();
    let bus = Bus::spawn(Box::new(transport), BusConfig { id: "spodes".into(), ..BusConfig::default() });
    let mut cfg = config(0x11);
    cfg.timeout = Duration::from_millis(300);
    cfg.retries = 0;
    let started = Instant::now();
    let opened = Session::open(&bus, cfg, Arc::new(MemoryCounter::new(1))).await;
    assert!(matches!(opened, Err(DlmsError::Link(ami_link::LinkError::Timeout { .. }))), "{opened:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

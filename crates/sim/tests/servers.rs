//! The simulator's servers over real sockets on 127.0.0.1 (and a socat pty pair), driven by raw clients that
//! build frames by hand, so the tests also pin the wire format independently of `ami_link`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ami_device::{
    Control, ControlSource, LineDefaults, ModbusControl, ModbusOptions, ModbusValue, Obis, Profile, Protocol, ValueDef,
    ValueKind, ValueSource,
};
use ami_protocols::modbus::plan::Table;
use ami_protocols::modbus::value::{Encoding, ValueType};
use ami_sim::{spawn_tcp, SimFraming, SimMeter, SimOptions, Simulator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const SHORT: Duration = Duration::from_millis(150);

fn value(name: &str, unit: &str, kind: ValueKind, table: Table, register: u16, ty: ValueType, scale: f64) -> ValueDef {
    ValueDef {
        name: name.into(),
        obis: "1-0:1.8.0*255".parse::<Obis>().unwrap(),
        unit: unit.into(),
        kind,
        description: None,
        source: ValueSource::Modbus(ModbusValue { table, register, encoding: Encoding { scale, ..Encoding::new(ty) } }),
        line: 1,
    }
}

/// A single-phase meter: f32 input registers 0..6, a kWh counter at 0x48, a relay coil at 0.
fn profile() -> Profile {
    use ValueKind::*;
    Profile {
        id: "sim-test".into(),
        path: None,
        manufacturer: "Test".into(),
        model: "S1".into(),
        document: None,
        protocol: Protocol::Modbus,
        line: LineDefaults::default(),
        modbus: ModbusOptions::default(),
        values: vec![
            value("voltage", "V", Instantaneous, Table::Input, 0, ValueType::F32, 1.0),
            value("current", "A", Instantaneous, Table::Input, 6, ValueType::F32, 1.0),
            value("power", "W", Instantaneous, Table::Input, 12, ValueType::F32, 1.0),
            value("energy_import_total", "Wh", Counter, Table::Input, 0x48, ValueType::F32, 1000.0),
            value("setpoint", "", Static, Table::Holding, 10, ValueType::U16, 1.0),
        ],
        controls: vec![Control {
            name: "relay".into(),
            description: None,
            source: ControlSource::Modbus(ModbusControl::Coil { register: 0 }),
        }],
    }
}

fn sim_at(units: &[u8]) -> Simulator {
    let sim = Simulator::new();
    for (i, unit) in units.iter().enumerate() {
        sim.insert(*unit, SimMeter::new(&profile(), i as u64 + 7));
    }
    sim
}

fn opts(framing: SimFraming) -> SimOptions {
    SimOptions { framing, ..SimOptions::default() }
}

// ----- hand-made frames -----------------------------------------------------------------------------------

/// CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF), written independently of ami_link.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc = 0xFFFFu16;
    for b in bytes {
        crc ^= u16::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xA001 } else { crc >> 1 };
        }
    }
    crc
}

fn rtu(unit: u8, pdu: &[u8]) -> Vec<u8> {
    let mut f = vec![unit];
    f.extend_from_slice(pdu);
    let crc = crc16(&f);
    f.extend_from_slice(&crc.to_le_bytes());
    f
}

fn mbap(tid: u16, unit: u8, pdu: &[u8]) -> Vec<u8> {
    let mut f = tid.to_be_bytes().to_vec();
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&(pdu.len() as u16 + 1).to_be_bytes());
    f.push(unit);
    f.extend_from_slice(pdu);
    f
}

fn read_pdu(fc: u8, address: u16, quantity: u16) -> Vec<u8> {
    let mut p = vec![fc];
    p.extend_from_slice(&address.to_be_bytes());
    p.extend_from_slice(&quantity.to_be_bytes());
    p
}

/// Reads one MBAP reply: (transaction, unit, pdu).
async fn read_mbap(s: &mut TcpStream) -> (u16, u8, Vec<u8>) {
    let mut head = [0u8; 7];
    timeout(SHORT, s.read_exact(&mut head)).await.expect("reply in time").unwrap();
    assert_eq!(&head[2..4], &[0, 0], "protocol id");
    let len = u16::from_be_bytes([head[4], head[5]]) as usize;
    let mut pdu = vec![0u8; len - 1];
    timeout(SHORT, s.read_exact(&mut pdu)).await.expect("pdu in time").unwrap();
    (u16::from_be_bytes([head[0], head[1]]), head[6], pdu)
}

/// Reads an RTU reply of known total length and returns it whole (CRC unchecked).
async fn read_exact_n<R: AsyncReadExt + Unpin>(s: &mut R, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    timeout(SHORT, s.read_exact(&mut buf)).await.expect("reply in time").unwrap();
    buf
}

fn crc_ok(frame: &[u8]) -> bool {
    let n = frame.len();
    n >= 4 && crc16(&frame[..n - 2]).to_le_bytes() == [frame[n - 2], frame[n - 1]]
}

fn f32_at(regs: &[u8], i: usize) -> f64 {
    let b = &regs[i * 4..i * 4 + 4];
    f64::from(f32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

async fn expect_silence<R: AsyncReadExt + Unpin>(s: &mut R) {
    let mut byte = [0u8; 1];
    match timeout(SHORT, s.read(&mut byte)).await {
        Err(_) => {}
        Ok(Ok(0)) => panic!("connection closed instead of staying silent"),
        Ok(r) => panic!("expected silence, got {r:?} {byte:02X?}"),
    }
}

// ----- Modbus TCP -----------------------------------------------------------------------------------------

#[tokio::test]
async fn mbap_read_returns_the_encoded_values_with_the_same_transaction() {
    let sim = sim_at(&[1]);
    sim.set_value(1, "voltage", 231.5).unwrap();
    sim.set_value(1, "current", 4.25).unwrap();
    let (addr, server) = spawn_tcp("127.0.0.1:0", sim.clone(), opts(SimFraming::Tcp)).await.unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&mbap(0x1234, 1, &read_pdu(0x04, 0, 2))).await.unwrap();
    let (tid, unit, pdu) = read_mbap(&mut s).await;
    assert_eq!((tid, unit), (0x1234, 1));
    assert_eq!(&pdu[..2], &[0x04, 4]);
    assert_eq!(f32_at(&pdu[2..], 0), 231.5);
    // Two requests in one write are both answered, in order.
    let mut two = mbap(0xFFFE, 1, &read_pdu(0x04, 6, 2));
    two.extend(mbap(0xFFFF, 1, &read_pdu(0x04, 0, 2)));
    s.write_all(&two).await.unwrap();
    let (tid, _, pdu) = read_mbap(&mut s).await;
    assert_eq!((tid, f32_at(&pdu[2..], 0)), (0xFFFE, 4.25));
    let (tid, _, pdu) = read_mbap(&mut s).await;
    assert_eq!((tid, f32_at(&pdu[2..], 0)), (0xFFFF, 231.5));
    // A second request on the same connection, another transaction id.
    s.write_all(&mbap(0x0001, 1, &read_pdu(0x04, 0x48, 2))).await.unwrap();
    let (tid, _, pdu) = read_mbap(&mut s).await;
    assert_eq!(tid, 1);
    let served = f32_at(&pdu[2..], 0) * 1000.0;
    // The counter keeps growing after the read, by well under a Wh in this short time.
    let later = sim.value(1, "energy_import_total").unwrap();
    assert!(served <= later && later - served < 2.0, "{served} vs {later}");
    let stats = sim.stats();
    assert_eq!((stats.requests, stats.replies, stats.connections), (4, 4, 1));
    server.abort();
}

#[tokio::test]
async fn undefined_register_is_exception_02_and_oversized_read_03() {
    let sim = sim_at(&[1]);
    let (addr, server) = spawn_tcp("127.0.0.1:0", sim.clone(), opts(SimFraming::Tcp)).await.unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    // 0..8 then 8..14 is undefined (the current occupies 6..8, power starts at 12).
    s.write_all(&mbap(7, 1, &read_pdu(0x04, 0, 10))).await.unwrap();
    assert_eq!(read_mbap(&mut s).await, (7, 1, vec![0x84, 0x02]));
    s.write_all(&mbap(8, 1, &read_pdu(0x03, 0, 126))).await.unwrap();
    assert_eq!(read_mbap(&mut s).await, (8, 1, vec![0x83, 0x03]));
    assert_eq!(sim.stats().exceptions, 2);
    server.abort();
}

#[tokio::test]
async fn counters_increase_between_reads() {
    let sim = sim_at(&[1]);
    let (addr, server) = spawn_tcp("127.0.0.1:0", sim.clone(), opts(SimFraming::Tcp)).await.unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&mbap(1, 1, &read_pdu(0x04, 0x48, 2))).await.unwrap();
    let first = f32_at(&read_mbap(&mut s).await.2[2..], 0);
    sim.advance(Duration::from_secs(600));
    s.write_all(&mbap(2, 1, &read_pdu(0x04, 0x48, 2))).await.unwrap();
    let second = f32_at(&read_mbap(&mut s).await.2[2..], 0);
    // Ten minutes of a 0.9–2.3 kW single-phase load: 0.15–0.4 kWh.
    let grown = second - first;
    assert!((0.1..=0.5).contains(&grown), "grew {grown} kWh");
    server.abort();
}

#[tokio::test]
async fn coil_write_then_read_back() {
    let sim = sim_at(&[3]);
    let (addr, server) = spawn_tcp("127.0.0.1:0", sim.clone(), opts(SimFraming::Tcp)).await.unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&mbap(1, 3, &read_pdu(0x01, 0, 1))).await.unwrap();
    assert_eq!(read_mbap(&mut s).await.2, vec![0x01, 0x01, 0x01]);
    let off = [0x05, 0x00, 0x00, 0x00, 0x00];
    s.write_all(&mbap(2, 3, &off)).await.unwrap();
    assert_eq!(read_mbap(&mut s).await.2, off.to_vec());
    s.write_all(&mbap(3, 3, &read_pdu(0x01, 0, 1))).await.unwrap();
    assert_eq!(read_mbap(&mut s).await.2, vec![0x01, 0x01, 0x00]);
    assert_eq!(sim.with_meter(3, |m| m.control("relay")).flatten(), Some(false));
    // FC 6 to a holding register the profile defines is stored; elsewhere it is 02.
    s.write_all(&mbap(4, 3, &[0x06, 0x00, 0x0A, 0x01, 0x02])).await.unwrap();
    assert_eq!(read_mbap(&mut s).await.2, vec![0x06, 0x00, 0x0A, 0x01, 0x02]);
    assert_eq!(sim.value(3, "setpoint"), Some(258.0));
    s.write_all(&mbap(5, 3, &[0x06, 0x00, 0x0B, 0x01, 0x02])).await.unwrap();
    assert_eq!(read_mbap(&mut s).await.2, vec![0x86, 0x02]);
    server.abort();
}

#[tokio::test]
async fn requests_for_other_units_get_silence_on_tcp() {
    let sim = sim_at(&[1, 2]);
    let (addr, server) =
        spawn_tcp("127.0.0.1:0", sim.clone(), SimOptions { units: vec![1], ..opts(SimFraming::Tcp) }).await.unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    // Unit 2 exists in the simulator but this server does not answer it; unit 9 exists nowhere.
    s.write_all(&mbap(1, 2, &read_pdu(0x04, 0, 2))).await.unwrap();
    s.write_all(&mbap(2, 9, &read_pdu(0x04, 0, 2))).await.unwrap();
    expect_silence(&mut s).await;
    s.write_all(&mbap(3, 1, &read_pdu(0x04, 0, 2))).await.unwrap();
    assert_eq!(read_mbap(&mut s).await.0, 3);
    assert_eq!(sim.stats().ignored, 2);
    server.abort();
}

#[tokio::test]
async fn bad_mbap_header_closes_the_connection() {
    let sim = sim_at(&[1]);
    let (addr, server) = spawn_tcp("127.0.0.1:0", sim.clone(), opts(SimFraming::Tcp)).await.unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    // Protocol id 0x1234 is not Modbus.
    s.write_all(&[0x00, 0x01, 0x12, 0x34, 0x00, 0x06, 0x01, 0x04, 0x00, 0x00, 0x00, 0x02]).await.unwrap();
    let mut buf = [0u8; 8];
    let n = timeout(SHORT, s.read(&mut buf)).await.expect("closed in time").unwrap_or(0);
    assert_eq!(n, 0);
    // The server still accepts new connections.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&mbap(1, 1, &read_pdu(0x04, 0, 2))).await.unwrap();
    assert_eq!(read_mbap(&mut s).await.0, 1);
    server.abort();
}

// ----- RTU over TCP ---------------------------------------------------------------------------------------

#[tokio::test]
async fn rtu_over_tcp_read_has_a_valid_crc_and_the_values() {
    let sim = sim_at(&[17]);
    sim.set_value(17, "voltage", 229.75).unwrap();
    let (addr, server) = spawn_tcp("127.0.0.1:0", sim.clone(), opts(SimFraming::Rtu)).await.unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&rtu(17, &read_pdu(0x04, 0, 2))).await.unwrap();
    // unit | fc | count | 4 bytes | crc
    let reply = read_exact_n(&mut s, 9).await;
    assert!(crc_ok(&reply), "{reply:02X?}");
    assert_eq!(&reply[..3], &[17, 0x04, 4]);
    assert_eq!(f32_at(&reply[3..7], 0), 229.75);
    server.abort();
}

#[tokio::test]
async fn rtu_resynchronises_after_garbage_and_split_writes_and_skips_other_units() {
    let sim = sim_at(&[1, 2]);
    let (addr, server) =
        spawn_tcp("127.0.0.1:0", sim.clone(), SimOptions { units: vec![1], ..opts(SimFraming::Rtu) }).await.unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    // Noise, then a request for unit 2 (another meter on the line), then ours split in two writes.
    let mut wire = vec![0x00, 0xFF, 0x13, 0x37];
    wire.extend(rtu(2, &read_pdu(0x04, 0, 2)));
    let ours = rtu(1, &read_pdu(0x04, 0, 2));
    wire.extend_from_slice(&ours[..3]);
    s.write_all(&wire).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.write_all(&ours[3..]).await.unwrap();
    let reply = read_exact_n(&mut s, 9).await;
    assert!(crc_ok(&reply));
    assert_eq!(reply[0], 1);
    expect_silence(&mut s).await;
    // A request with a broken CRC is never answered; the next good one is.
    let mut bad = rtu(1, &read_pdu(0x04, 0, 2));
    bad[7] ^= 0x01;
    s.write_all(&bad).await.unwrap();
    s.write_all(&rtu(1, &read_pdu(0x04, 6, 2))).await.unwrap();
    let reply = read_exact_n(&mut s, 9).await;
    assert!(crc_ok(&reply));
    expect_silence(&mut s).await;
    let stats = sim.stats();
    assert_eq!(stats.ignored, 1, "{stats:?}");
    assert!(stats.garbage_bytes >= 4 + 8, "{stats:?}");
    assert_eq!(stats.replies, 2);
    server.abort();
}

#[tokio::test]
async fn one_rtu_server_answers_several_units_on_a_shared_line() {
    let sim = sim_at(&[1, 2, 3]);
    sim.set_value(2, "voltage", 222.0).unwrap();
    sim.set_value(3, "voltage", 233.0).unwrap();
    let (addr, server) = spawn_tcp("127.0.0.1:0", sim.clone(), opts(SimFraming::Rtu)).await.unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    for (unit, v) in [(2u8, 222.0), (3, 233.0)] {
        s.write_all(&rtu(unit, &read_pdu(0x04, 0, 2))).await.unwrap();
        let reply = read_exact_n(&mut s, 9).await;
        assert!(crc_ok(&reply));
        assert_eq!(reply[0], unit);
        assert_eq!(f32_at(&reply[3..7], 0), v);
    }
    // A broadcast write (unit 0) reaches every meter and is not answered.
    s.write_all(&rtu(0, &[0x06, 0x00, 0x0A, 0x00, 0x63])).await.unwrap();
    expect_silence(&mut s).await;
    for unit in 1..=3 {
        assert_eq!(sim.value(unit, "setpoint"), Some(99.0));
    }
    server.abort();
}

// ----- fault injection ------------------------------------------------------------------------------------

#[tokio::test]
async fn drop_rate_one_gives_no_reply() {
    let sim = sim_at(&[1]);
    let (addr, server) =
        spawn_tcp("127.0.0.1:0", sim.clone(), SimOptions { drop_rate: 1.0, ..opts(SimFraming::Rtu) }).await.unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&rtu(1, &read_pdu(0x04, 0, 2))).await.unwrap();
    expect_silence(&mut s).await;
    let stats = sim.stats();
    assert_eq!((stats.requests, stats.dropped, stats.replies), (1, 1, 0));
    server.abort();
}

#[tokio::test]
async fn corrupt_rate_one_gives_a_reply_with_a_bad_crc() {
    let sim = sim_at(&[1]);
    let (addr, server) =
        spawn_tcp("127.0.0.1:0", sim.clone(), SimOptions { corrupt_rate: 1.0, seed: 3, ..opts(SimFraming::Rtu) })
            .await
            .unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    for _ in 0..5 {
        s.write_all(&rtu(1, &read_pdu(0x04, 0, 2))).await.unwrap();
        // Corruption changes a byte but never the length... unless it hit the byte count; read what comes.
        let mut buf = vec![0u8; 64];
        let n = timeout(SHORT, s.read(&mut buf)).await.expect("a reply").unwrap();
        let mut reply = buf[..n].to_vec();
        while reply.len() < 9 {
            let n = timeout(SHORT, s.read(&mut buf)).await.expect("rest of reply").unwrap();
            reply.extend_from_slice(&buf[..n]);
        }
        assert_eq!(reply.len(), 9);
        assert!(!crc_ok(&reply), "{reply:02X?}");
    }
    assert_eq!(sim.stats().corrupted, 5);
    server.abort();
}

#[tokio::test]
async fn a_late_reply_is_still_sent_after_the_delay() {
    let sim = sim_at(&[1]);
    let delay = Duration::from_millis(80);
    let (addr, server) =
        spawn_tcp("127.0.0.1:0", sim.clone(), SimOptions { delay, ..opts(SimFraming::Tcp) }).await.unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let started = tokio::time::Instant::now();
    s.write_all(&mbap(1, 1, &read_pdu(0x04, 0, 2))).await.unwrap();
    // A master with a 30 ms timeout sees nothing …
    let mut byte = [0u8; 1];
    assert!(timeout(Duration::from_millis(30), s.read(&mut byte)).await.is_err());
    // … but the reply still arrives, after the delay.
    let (tid, _, pdu) = read_mbap(&mut s).await;
    assert!(started.elapsed() >= delay);
    assert_eq!((tid, pdu[0]), (1, 0x04));
    server.abort();
}

// ----- serial (pty pair) ----------------------------------------------------------------------------------

struct Socat {
    child: Child,
    a: String,
    b: String,
    _dir: std::path::PathBuf,
}

impl Drop for Socat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

/// Starts `socat` with a linked pty pair, or `None` (with a message) when socat is not installed.
async fn socat_pair() -> Option<Socat> {
    let dir = std::env::temp_dir().join(format!("ami-sim-pty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b) = (dir.join("a").display().to_string(), dir.join("b").display().to_string());
    let child = match Command::new("socat")
        .arg("-d")
        .arg("-d")
        .arg(format!("pty,raw,echo=0,link={a}"))
        .arg(format!("pty,raw,echo=0,link={b}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("skipping pty test: cannot run socat ({e}); install the socat package");
            return None;
        }
    };
    let socat = Socat { child, a, b, _dir: dir };
    for _ in 0..100 {
        if std::path::Path::new(&socat.a).exists() && std::path::Path::new(&socat.b).exists() {
            return Some(socat);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("socat did not create its ptys");
}

#[tokio::test]
async fn rtu_on_a_pty_pair_serves_a_raw_client() {
    let Some(pair) = socat_pair().await else { return };
    let sim = sim_at(&[5]);
    sim.set_value(5, "voltage", 230.25).unwrap();
    let settings = ami_media::SerialSettings::default();
    let server = {
        let (path, sim) = (pair.a.clone(), sim.clone());
        tokio::spawn(async move { ami_sim::serve_serial(&path, &settings, sim, opts(SimFraming::Rtu)).await })
    };
    // The client side: a plain file opened read/write on the other pty (raw mode set by socat).
    let mut client = tokio::fs::OpenOptions::new().read(true).write(true).open(&pair.b).await.unwrap();
    // Give the server a moment to open its end.
    tokio::time::sleep(Duration::from_millis(50)).await;
    client.write_all(&rtu(5, &read_pdu(0x04, 0, 2))).await.unwrap();
    client.flush().await.unwrap();
    let reply = read_exact_n(&mut client, 9).await;
    assert!(crc_ok(&reply), "{reply:02X?}");
    assert_eq!(&reply[..3], &[5, 0x04, 4]);
    assert_eq!(f32_at(&reply[3..7], 0), 230.25);
    // Another unit on the same line: silence; then an exception for an undefined register.
    client.write_all(&rtu(6, &read_pdu(0x04, 0, 2))).await.unwrap();
    client.write_all(&rtu(5, &read_pdu(0x04, 100, 2))).await.unwrap();
    let reply = read_exact_n(&mut client, 5).await;
    assert_eq!(reply, rtu(5, &[0x84, 0x02]));
    assert!(!server.is_finished());
    server.abort();
}

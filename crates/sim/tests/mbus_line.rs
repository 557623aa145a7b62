//! The M-Bus simulator against the real master: `ami_protocols::mbus::client` drivers over an
//! `ami_link::Bus` on a TCP transport from `ami_media::open`, to servers on 127.0.0.1 (and a socat pty pair
//! with a raw client). Replies are checked with the application-layer decoder.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ami_link::mbus::{AckMatcher, ACK};
use ami_link::{Bus, BusConfig, BusHandle, Exchange, LinkError};
use ami_media::MediaUrl;
use ami_protocols::mbus::app::{decode_long_frame, RecordValue, Telegram};
use ami_protocols::mbus::client::{
    read_out, req_ud2, search, snd_nke, ReadOutConfig, SearchConfig, SecondaryMask, Target,
};
use ami_sim::mbus::{spawn_mbus_tcp, MbusFaults, MbusLine, MbusMeterSpec, SharedMbusLine};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Reply timeout per probe: loopback answers in well under a millisecond; generous for a busy CI box.
const PROBE_TIMEOUT: Duration = Duration::from_millis(40);

/// 30 ids: ten sharing seven leading digits, ten sharing six, ten spread over the first digit.
fn thirty_ids() -> Vec<u32> {
    let mut ids: Vec<u32> = (0..10).map(|k| 12_345_670 + k).collect();
    ids.extend((0..10).map(|k| 12_345_600 + k * 3));
    ids.extend((0..10).map(|k| k * 10_000_000 + 4_321));
    ids
}

fn thirty_meters() -> SharedMbusLine {
    let specs = thirty_ids().into_iter().enumerate().map(|(i, id)| {
        let primary = u8::try_from(i * 8 + 3).unwrap();
        match i % 3 {
            0 => MbusMeterSpec::heat_meter(primary, id),
            1 => MbusMeterSpec::water_meter(primary, id),
            _ => MbusMeterSpec::electricity_meter(primary, id),
        }
    });
    Arc::new(Mutex::new(MbusLine::with_meters(specs).unwrap()))
}

async fn bus_to(line: SharedMbusLine, faults: MbusFaults) -> (BusHandle, tokio::task::JoinHandle<std::io::Result<()>>) {
    let (addr, server) = spawn_mbus_tcp("127.0.0.1:0", line, faults).await.unwrap();
    let url: MediaUrl = format!("tcp://{addr}").parse().unwrap();
    let transport = ami_media::open(&url).await.unwrap();
    let config = BusConfig {
        id: "mbus".into(),
        guard_time: Duration::from_millis(1),
        drain_quiet: Duration::from_millis(5),
        ..BusConfig::default()
    };
    (Bus::spawn(transport, config), server)
}

fn decode_all(telegrams: &[ami_link::mbus::Frame]) -> Vec<Telegram> {
    telegrams.iter().map(|f| decode_long_frame(&f.encode().unwrap()).unwrap()).collect()
}

fn read_config() -> ReadOutConfig {
    ReadOutConfig { timeout: Duration::from_millis(150), ..ReadOutConfig::default() }
}

#[tokio::test]
async fn secondary_search_finds_all_30_meters_including_shared_prefixes() {
    let line = thirty_meters();
    let (bus, server) = bus_to(Arc::clone(&line), MbusFaults::default()).await;
    let config = SearchConfig { timeout: PROBE_TIMEOUT, ..SearchConfig::default() };
    let report = search(&bus, "search", config).await.unwrap();
    assert!(report.unresolved.is_empty(), "{:?}", report.unresolved);
    let mut found: Vec<String> = report.found.iter().map(|(id, _)| id.id_digits()).collect();
    found.sort();
    let mut expected: Vec<String> = thirty_ids().iter().map(|id| format!("{id:08}")).collect();
    expected.sort();
    assert_eq!(found, expected);
    // The A field of each read is the meter's primary address.
    for (id, primary) in &report.found {
        let n: u32 = id.id_digits().parse().unwrap();
        let i = thirty_ids().iter().position(|x| *x == n).unwrap();
        assert_eq!(usize::from(*primary), i * 8 + 3);
    }
    assert!(line.lock().unwrap().stats().collisions > 0, "the shared prefixes collide");
    // A found meter is read by its secondary address.
    let (id, _) = report.found.iter().find(|(id, _)| id.id_digits() == "12345675").unwrap();
    let target = Target::Secondary(SecondaryMask::exact(id));
    let report = read_out(&bus, "12345675", target, ReadOutConfig { reset: false, ..read_config() }).await.unwrap();
    let telegrams = decode_all(&report.telegrams);
    assert_eq!(telegrams.len(), 1);
    assert_eq!(telegrams[0].header.id, "12345675");
    server.abort();
}

#[tokio::test]
async fn primary_scan_of_1_to_250_finds_all_30_meters() {
    let (bus, server) = bus_to(thirty_meters(), MbusFaults::default()).await;
    let mut found = Vec::new();
    for a in 1..=250u8 {
        let exchange =
            Exchange::new("scan", snd_nke(a), Some(Box::new(AckMatcher))).with_timeout(PROBE_TIMEOUT).with_retries(0);
        match bus.transact(exchange).await {
            Ok(reply) => {
                assert_eq!(reply.frame, [ACK]);
                found.push(a);
            }
            Err(LinkError::Timeout { .. }) => {}
            Err(e) => panic!("address {a}: {e}"),
        }
    }
    let expected: Vec<u8> = (0..30).map(|i| i * 8 + 3).collect();
    assert_eq!(found, expected);
    server.abort();
}

/// A heat meter whose 10 records take 3 telegrams.
fn three_telegram_line() -> SharedMbusLine {
    let spec = MbusMeterSpec { telegrams: 3, ..MbusMeterSpec::heat_meter(7, 87_654_321) };
    Arc::new(Mutex::new(MbusLine::with_meters([spec]).unwrap()))
}

/// Every record of the read-out, checked against the spec: each one exactly once, in order.
fn assert_complete(telegrams: &[Telegram]) {
    assert_eq!(telegrams.len(), 3);
    assert_eq!(telegrams.iter().map(|t| t.more_records_follow).collect::<Vec<_>>(), [true, true, false]);
    let access: HashSet<u8> = telegrams.iter().map(|t| t.header.access_number).collect();
    assert_eq!(access.len(), 3, "three distinct telegrams");
    let got: Vec<Vec<u8>> = telegrams.iter().flat_map(|t| t.records.iter().map(|r| r.dif_vif_raw.clone())).collect();
    let spec = MbusMeterSpec::heat_meter(7, 87_654_321);
    let want: Vec<Vec<u8>> = spec.records.iter().map(|r| r.dif_vif.clone()).collect();
    assert_eq!(got, want, "all records, no duplicates");
}

fn energy_kwh(telegrams: &[Telegram]) -> f64 {
    let record = telegrams[0].records.iter().find(|r| r.dif_vif_raw == [0x04, 0x06]).unwrap();
    match record.value {
        RecordValue::Number(wh) => wh / 1000.0,
        ref other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_three_telegram_meter_is_read_completely_and_its_counters_only_go_up() {
    let line = three_telegram_line();
    let (bus, server) = bus_to(Arc::clone(&line), MbusFaults::default()).await;
    let first = read_out(&bus, "m7", Target::Primary(7), read_config()).await.unwrap();
    let first = decode_all(&first.telegrams);
    assert_complete(&first);
    assert_eq!(first[0].header.id, "87654321");
    assert_eq!(first[0].header.manufacturer, "KAM");
    line.lock().unwrap().advance(Duration::from_secs(2 * 3600));
    let second = read_out(&bus, "m7", Target::Primary(7), read_config()).await.unwrap();
    let second = decode_all(&second.telegrams);
    assert_complete(&second);
    let (a, b) = (energy_kwh(&first), energy_kwh(&second));
    assert!(b >= a + 5.0, "2.5 kWh per hour over 2 h: {a} then {b}");
    // Without a reset, the next read-out continues with the FCB the last one left.
    let third =
        read_out(&bus, "m7", Target::Primary(7), ReadOutConfig { reset: false, first_fcb: false, ..read_config() })
            .await
            .unwrap();
    let third = decode_all(&third.telegrams);
    assert_complete(&third);
    assert!(energy_kwh(&third) >= b);
    assert_eq!(line.lock().unwrap().stats().repeats, 0);
    server.abort();
}

#[tokio::test]
async fn a_meter_dropping_every_second_reply_is_read_completely_by_fcb_retries() {
    let line = three_telegram_line();
    let faults = MbusFaults { drop_every_nth: Some(2), ..MbusFaults::default() };
    let (bus, server) = bus_to(Arc::clone(&line), faults).await;
    let report = read_out(&bus, "m7", Target::Primary(7), read_config()).await.unwrap();
    assert_complete(&decode_all(&report.telegrams));
    let stats = line.lock().unwrap().stats();
    assert_eq!(stats.dropped, 3, "{stats:?}");
    assert_eq!(stats.repeats, 3, "each dropped telegram was sent again for the retry with the same FCB");
    assert_eq!(bus.stats().total.timeouts, 3);
    server.abort();
}

#[tokio::test]
async fn corrupted_replies_are_retried_and_garbage_from_the_master_is_skipped() {
    let line = three_telegram_line();
    let faults = MbusFaults { corrupt_rate: 0.3, seed: 11, ..MbusFaults::default() };
    let (addr, server) = spawn_mbus_tcp("127.0.0.1:0", Arc::clone(&line), faults).await.unwrap();
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    // Noise, then SND_NKE and REQ_UD2 in one write; the server resynchronises and answers both.
    let mut request = vec![0x00, 0x68, 0xFF, 0x16];
    request.extend(snd_nke(7));
    request.extend(req_ud2(7, true));
    raw.write_all(&request).await.unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 512];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while got.len() < 2 && tokio::time::Instant::now() < deadline {
        let n = tokio::time::timeout(Duration::from_millis(200), raw.read(&mut chunk)).await.unwrap_or(Ok(0)).unwrap();
        got.extend_from_slice(&chunk[..n]);
    }
    assert!(got.len() > 1, "{got:02X?}");
    assert!(line.lock().unwrap().stats().garbage_bytes >= 3);
    server.abort();
    // Through the bus, the read-out survives the corruption (retries keep the FCB).
    let (bus, server) =
        bus_to(Arc::clone(&line), MbusFaults { corrupt_rate: 0.3, seed: 5, ..MbusFaults::default() }).await;
    let config = ReadOutConfig { retries: 6, ..read_config() };
    let report = read_out(&bus, "m7", Target::Primary(7), config).await.unwrap();
    assert_complete(&decode_all(&report.telegrams));
    server.abort();
}

struct Socat {
    child: Child,
    a: String,
    b: String,
    dir: std::path::PathBuf,
}

impl Drop for Socat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts `socat` with a linked pty pair, or `None` (with a message) when socat is not installed.
async fn socat_pair() -> Option<Socat> {
    let dir = std::env::temp_dir().join(format!("ami-sim-mbus-pty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b) = (dir.join("a").display().to_string(), dir.join("b").display().to_string());
    let child = match Command::new("socat")
        .arg(format!("pty,raw,echo=0,link={a}"))
        .arg(format!("pty,raw,echo=0,link={b}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("skipping pty test: cannot run socat ({e}); install the socat package");
            let _ = std::fs::remove_dir_all(&dir);
            return None;
        }
    };
    let socat = Socat { child, a, b, dir };
    for _ in 0..100 {
        if std::path::Path::new(&socat.a).exists() && std::path::Path::new(&socat.b).exists() {
            return Some(socat);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("socat did not create its ptys");
}

async fn read_n(file: &mut tokio::fs::File, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 512];
    while got.len() < n {
        let read = tokio::time::timeout(Duration::from_secs(2), file.read(&mut chunk)).await.unwrap().unwrap();
        assert!(read > 0, "pty closed");
        got.extend_from_slice(&chunk[..read]);
    }
    got
}

#[tokio::test]
async fn serial_server_on_a_pty_pair_answers_a_raw_master() {
    let Some(pair) = socat_pair().await else { return };
    let line = three_telegram_line();
    let settings = ami_media::SerialSettings { baud: 2400, ..ami_media::SerialSettings::default() };
    let server = {
        let (path, line) = (pair.a.clone(), Arc::clone(&line));
        tokio::spawn(
            async move { ami_sim::mbus::serve_mbus_serial(&path, &settings, line, MbusFaults::default()).await },
        )
    };
    let mut client = tokio::fs::OpenOptions::new().read(true).write(true).open(&pair.b).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    client.write_all(&snd_nke(7)).await.unwrap();
    assert_eq!(read_n(&mut client, 1).await, [ACK]);
    let mut telegrams = Vec::new();
    for fcb in [true, false, true] {
        client.write_all(&req_ud2(7, fcb)).await.unwrap();
        let head = read_n(&mut client, 4).await;
        let total = usize::from(head[1]) + 6;
        let mut frame = head.clone();
        if frame.len() < total {
            frame.extend(read_n(&mut client, total - frame.len()).await);
        }
        telegrams.push(decode_long_frame(&frame).unwrap());
    }
    assert_complete(&telegrams);
    assert!(!server.is_finished());
    server.abort();
}

//! The Mercury driver (`ami_protocols::mercury::MercuryClient` over an `ami_link::Bus`) against the
//! simulated Mercury line, over a real TCP socket and over a socat pty pair: channel handling (open,
//! wrong password, a channel that expired on the meter), and read-outs equal to the simulator's model.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ami_link::{Bus, BusConfig, BusHandle};
use ami_media::MediaUrl;
use ami_protocols::mercury::{
    Address, Bwri, EnergyArray, MercuryClient, MercuryError, MercuryMeter, Password, Stamp, Status, Tariff,
};
use ami_sim::mercury::{spawn_tcp, MercuryLine, MercuryMeterSpec, SharedMercuryLine};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn start() -> Stamp {
    Stamp::new(2026, 3, 1, 0, 0).unwrap()
}

/// A Mercury 230 at 0x80 and a Mercury 234 at 0x22, values frozen two hours after midnight.
fn two_meters() -> SharedMercuryLine {
    let mut line = MercuryLine::with_meters(
        start(),
        [MercuryMeterSpec::mercury_230(0x80, 12_345_128), MercuryMeterSpec::mercury_234(0x22, 7_654_034)],
    )
    .unwrap();
    line.freeze(true);
    line.advance(Duration::from_secs(2 * 3600 + 17 * 60));
    Arc::new(Mutex::new(line))
}

fn bus_config() -> BusConfig {
    BusConfig {
        id: "mercury".into(),
        guard_time: Duration::from_millis(1),
        drain_quiet: Duration::from_millis(5),
        ..BusConfig::default()
    }
}

async fn bus_to(line: SharedMercuryLine) -> (BusHandle, tokio::task::JoinHandle<std::io::Result<()>>) {
    let (addr, server) = spawn_tcp("127.0.0.1:0", line, Duration::ZERO).await.unwrap();
    let url: MediaUrl = format!("tcp://{addr}").parse().unwrap();
    let transport = ami_media::open(&url).await.unwrap();
    (Bus::spawn(transport, bus_config()), server)
}

fn meter(id: &str, address: u8) -> MercuryMeter {
    MercuryMeter { timeout: Some(Duration::from_millis(500)), ..MercuryMeter::new(id, Address(address)) }
}

/// Reads everything from `address` and compares it with the model.
async fn read_and_compare(client: &mut MercuryClient, line: &SharedMercuryLine) {
    let a = client.meter().address;
    let model = || line.lock().unwrap();
    for (array, tariff) in [
        (EnergyArray::FromReset, Tariff::SUM),
        (EnergyArray::FromReset, Tariff(1)),
        (EnergyArray::FromReset, Tariff(2)),
        (EnergyArray::Month(3), Tariff::SUM),
        (EnergyArray::Today, Tariff::SUM),
        (EnergyArray::Yesterday, Tariff::SUM),
        (EnergyArray::CurrentYear, Tariff::SUM),
    ] {
        let got = client.read_energy(array, tariff).await.unwrap();
        let want = model().energy(a, array, tariff).unwrap();
        assert_eq!(got, want, "{array}, {tariff}");
    }
    let got = client.read_phase_energy(Tariff::SUM).await.unwrap();
    assert_eq!(Some(got), model().phase_energy(a, Tariff::SUM));
    for bwri in [Bwri::active_power(0), Bwri::reactive_power(2), Bwri::apparent_power(1), Bwri::FREQUENCY] {
        let got = client.read_instant(bwri).await.unwrap();
        let want = model().instant(a, bwri, false).unwrap();
        assert_eq!(vec![got], want, "{bwri}");
    }
    for bwri in [Bwri::voltage(1), Bwri::current(1), Bwri::power_factor(0), Bwri::active_power(0)] {
        let got = client.read_instant_block(bwri).await.unwrap();
        let want = model().instant(a, bwri, true).unwrap();
        assert_eq!(got, want, "block {bwri}");
    }
    assert_eq!(client.read_temperature().await.unwrap(), model().temperature());
    assert_eq!(Some(client.read_serial().await.unwrap()), model().serial(a));
    assert_eq!(client.read_time().await.unwrap(), model().meter_time());
    // The whole profile memory written so far, then nothing new.
    let now = model().meter_time().stamp;
    let from = start().plus_minutes(-7 * 24 * 60);
    let got = client.read_power_profile(from, now).await.unwrap();
    let want = model().profile(a, from, now);
    assert!(want.len() > 40, "{} records", want.len());
    assert_eq!(got, want);
    let newest = got.last().unwrap().stamp;
    assert!(client.read_power_profile(newest, now).await.unwrap().is_empty());
}

#[tokio::test]
async fn read_out_over_tcp_equals_the_model_for_two_meters_on_one_bus() {
    let line = two_meters();
    let (bus, server) = bus_to(Arc::clone(&line)).await;
    let mut m230 = MercuryClient::new(bus.clone(), meter("m230", 0x80));
    let mut m234 = MercuryClient::new(bus.clone(), meter("m234", 0x22));
    // Both at once through the one bus: it runs their exchanges one at a time.
    let (a, b) = tokio::join!(read_and_compare(&mut m230, &line), read_and_compare(&mut m234, &line));
    let ((), ()) = (a, b);
    // The 234's hourly profile: two records since midnight, stamped 01:00 and 02:00.
    let recs = m234.read_power_profile(start(), start().plus_minutes(180)).await.unwrap();
    assert_eq!(recs.iter().map(|r| r.stamp).collect::<Vec<_>>(), [start().plus_minutes(60), start().plus_minutes(120)]);
    assert_eq!(m230.session().opens(), 1, "one channel open for the whole read-out");
    let stats = bus.stats();
    assert_eq!(stats.total.failures, 0);
    assert_eq!(stats.total.timeouts, 0);
    assert_eq!(stats.total.rejected, 0);
    m230.close().await.unwrap();
    assert!(!line.lock().unwrap().is_open(Address(0x80), tokio::time::Instant::now()));
    server.abort();
}

#[tokio::test]
async fn a_wrong_password_is_a_typed_error_naming_the_meter() {
    let line = two_meters();
    let (bus, server) = bus_to(Arc::clone(&line)).await;
    let config = MercuryMeter { password: "313131313131".parse::<Password>().unwrap(), ..meter("feeder-3", 0x80) };
    let mut client = MercuryClient::new(bus, config);
    let err = client.read_energy(EnergyArray::FromReset, Tariff::SUM).await.unwrap_err();
    assert!(
        matches!(&err, MercuryError::OpenRefused { meter, status: Status::InvalidCommand, .. } if meter == "feeder-3"),
        "{err:?}"
    );
    assert!(err.to_string().contains("meter feeder-3"), "{err}");
    assert!(!err.to_string().contains("31"), "the password is not in the message: {err}");
    // Level 2 with the admin password is accepted.
    let admin = MercuryMeter {
        level: ami_protocols::mercury::Level::Admin,
        password: Password::factory_admin(),
        ..meter("feeder-3", 0x80)
    };
    let (bus, server2) = bus_to(Arc::clone(&line)).await;
    MercuryClient::new(bus, admin).open().await.unwrap();
    assert_eq!(line.lock().unwrap().stats().refused_opens, 1);
    server.abort();
    server2.abort();
}

#[tokio::test]
async fn a_channel_that_timed_out_on_the_meter_is_reopened_transparently() {
    let line = two_meters();
    line.lock().unwrap().set_idle_timeout(Duration::from_millis(300));
    let (bus, server) = bus_to(Arc::clone(&line)).await;
    // The client believes the channel lives 240 s; the meter closes it after 300 ms.
    let mut client = MercuryClient::new(bus, meter("m230", 0x80));
    let first = client.read_energy(EnergyArray::FromReset, Tariff::SUM).await.unwrap();
    tokio::time::sleep(Duration::from_millis(450)).await;
    let again = client.read_energy(EnergyArray::FromReset, Tariff::SUM).await.unwrap();
    assert_eq!(first, again, "frozen values");
    assert_eq!(client.session().opens(), 2);
    let stats = line.lock().unwrap().stats();
    assert_eq!((stats.expired, stats.not_open, stats.opens), (1, 1, 2));
    server.abort();
}

#[tokio::test]
async fn a_silent_meter_times_out_with_a_typed_error_and_its_neighbour_still_reads() {
    let line = two_meters();
    let (bus, server) = bus_to(Arc::clone(&line)).await;
    let absent = MercuryMeter {
        timeout: Some(Duration::from_millis(80)),
        retries: 1,
        ..MercuryMeter::new("absent-85", Address(0x55))
    };
    let mut dead = MercuryClient::new(bus.clone(), absent);
    let mut alive = MercuryClient::new(bus.clone(), meter("m230", 0x80));
    let (dead_result, alive_result) =
        tokio::join!(dead.read_energy(EnergyArray::FromReset, Tariff::SUM), alive.read_serial());
    let err = dead_result.unwrap_err();
    assert!(matches!(&err, MercuryError::Timeout { meter, attempts: 2, .. } if meter == "absent-85"), "{err:?}");
    assert!(err.to_string().contains("open channel"), "{err}");
    assert_eq!(alive_result.unwrap().serial, 12_345_128);
    assert_eq!(bus.stats().meters["absent-85"].timeouts, 2);
    assert_eq!(line.lock().unwrap().stats().silent, 2);
    server.abort();
}

#[tokio::test]
async fn keep_alive_holds_the_channel_open_between_read_outs() {
    let line = two_meters();
    line.lock().unwrap().set_idle_timeout(Duration::from_millis(400));
    let (bus, server) = bus_to(Arc::clone(&line)).await;
    let config = MercuryMeter {
        keep_alive: Duration::from_millis(250),
        idle_limit: Duration::from_millis(400),
        ..meter("m230", 0x80)
    };
    let mut client = MercuryClient::new(bus, config);
    client.read_serial().await.unwrap();
    assert!(!client.keep_alive().await.unwrap(), "not due yet");
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(280)).await;
        assert!(client.keep_alive().await.unwrap(), "due after 250 ms idle");
    }
    // 840 ms after opening, with a 400 ms idle limit: still open thanks to the test frames.
    client.read_serial().await.unwrap();
    assert_eq!(client.session().opens(), 1);
    let stats = line.lock().unwrap().stats();
    assert_eq!((stats.expired, stats.not_open), (0, 0));
    server.abort();
}

#[tokio::test]
async fn the_profile_is_read_incrementally_as_time_passes() {
    let line = two_meters();
    let (bus, server) = bus_to(Arc::clone(&line)).await;
    let mut client = MercuryClient::new(bus.clone(), meter("m230", 0x80));
    let now = || line.lock().unwrap().meter_time().stamp;
    // (The stamp is taken before the read: a lock guard must not live across an await.)
    let to = now();
    let first = client.read_power_profile(start(), to).await.unwrap();
    assert_eq!(first.len(), 4, "02:17: records stamped 00:30 … 02:00");
    let mut newest = first.last().unwrap().stamp;
    let mut all = first;
    for _ in 0..3 {
        line.lock().unwrap().advance(Duration::from_secs(3600));
        let requests_before = bus.stats().total.requests;
        let to = now();
        let new = client.read_power_profile(newest, to).await.unwrap();
        assert_eq!(new.len(), 2, "two half hours per hour");
        // 08 13, the two new records and the one before them (which stops the walk).
        assert_eq!(bus.stats().total.requests - requests_before, 4);
        newest = new.last().unwrap().stamp;
        all.extend(new);
    }
    let to = now();
    let want = line.lock().unwrap().profile(Address(0x80), start(), to);
    assert_eq!(all, want);
    server.abort();
}

#[tokio::test]
async fn random_bytes_never_panic_the_simulator() {
    let line = two_meters();
    let (addr, server) = spawn_tcp("127.0.0.1:0", Arc::clone(&line), Duration::ZERO).await.unwrap();
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut x: u64 = 0x5EED_0230;
    for _ in 0..200 {
        let len = (x % 97) as usize;
        let chunk: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        socket.write_all(&chunk).await.unwrap();
    }
    // Whatever came back, a request after a second of silence is still answered.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut sink = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(50), socket.read(&mut sink)).await {
        if n == 0 {
            break;
        }
    }
    socket.write_all(&[0x80, 0x00, 0x60, 0x70]).await.unwrap();
    let mut reply = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(2), socket.read_exact(&mut reply)).await.unwrap().unwrap();
    assert_eq!(reply, [0x80, 0x00, 0x60, 0x70]);
    assert!(!server.is_finished());
    assert!(line.lock().unwrap().stats().garbage_bytes > 0);
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
    let dir = std::env::temp_dir().join(format!("ami-sim-mercury-pty-{}", std::process::id()));
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

#[tokio::test]
async fn read_out_over_a_pty_pair_equals_the_model() {
    let Some(pair) = socat_pair().await else { return };
    let line = two_meters();
    let settings = ami_media::SerialSettings { baud: 9600, ..ami_media::SerialSettings::default() };
    let server = {
        let (path, line) = (pair.a.clone(), Arc::clone(&line));
        tokio::spawn(async move { ami_sim::mercury::serve_serial(&path, &settings, line, Duration::ZERO).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let url: MediaUrl = format!("serial://{}?baud=9600", pair.b).parse().unwrap();
    let transport = ami_media::open(&url).await.unwrap();
    let bus = Bus::spawn(transport, bus_config());
    let mut client = MercuryClient::new(bus.clone(), meter("m230", 0x80));
    read_and_compare(&mut client, &line).await;
    let mut other = MercuryClient::new(bus.clone(), meter("m234", 0x22));
    assert_eq!(other.read_serial().await.unwrap().serial, 7_654_034);
    assert_eq!(bus.stats().total.failures, 0);
    assert!(!server.is_finished());
    server.abort();
}

//! Incotex Mercury meters in the daemon, on an RS-485 line they share with Modbus meters: `amid run` reads
//! a Mercury 230 and two Modbus meters over one pty line (a socat pair; the other end is a simulated mixed
//! line served in this process, so its counters can be checked) for 60 one-minute slots without a collision
//! or a lost reading, stores the meter's power profile once, names a meter whose password is wrong, and
//! re-opens a channel the meter closed without anybody noticing.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ami_collector::mercury::line::{serve, MixedLine};
use ami_collector::mercury::{sim_line, MixedStats};
use ami_media::MediaUrl;
use ami_protocols::mercury::Password;
use ami_sim::mercury::{MercuryMeterSpec, SharedMercuryLine};
use ami_sim::{SimMeter, Simulator};
use common::*;

/// The Mercury meter's level-1 password on this site (not the factory one).
const PASSWORD: [u8; 6] = [0x12, 0x34, 0x56, 0x78, 0x9A, 0xBC];

struct Line {
    _socat: Proc,
    /// The daemon's end of the pty pair.
    tty: PathBuf,
    mercury: SharedMercuryLine,
    stats: Arc<MixedStats>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for Line {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A pty line with a Mercury 230 at address 128 (meter clock on Moscow time, half-hour power profile) and
/// an Eastron SDM630 at unit 1 and an SDM120 at unit 2.
async fn mixed_line(dir: &Path, idle_timeout: Option<Duration>) -> Line {
    let (socat, tty, other) = pty_pair(dir);
    let mut spec = MercuryMeterSpec::mercury_230(128, 41_234_128);
    spec.user_password = Password::new(PASSWORD);
    let mut line = sim_line([spec], 3 * 3600).unwrap();
    if let Some(t) = idle_timeout {
        line.set_idle_timeout(t);
    }
    let mercury = Arc::new(Mutex::new(line));
    let modbus = Simulator::new();
    let devices = [repo().join("devices")];
    for (unit, id) in [(1u8, "eastron-sdm630"), (2, "eastron-sdm120")] {
        let p = ami_device::resolve_profile(id, &devices).unwrap();
        modbus.insert(unit, SimMeter::new(&p, u64::from(unit)));
    }
    let mixed = MixedLine::new(Arc::clone(&mercury), modbus);
    let stats = mixed.stats();
    let url: MediaUrl = format!("serial://{}", other.display()).parse().unwrap();
    let server = tokio::spawn(async move { serve(&url, mixed, Duration::ZERO).await });
    Line { _socat: socat, tty, mercury, stats, server }
}

/// A site config with the three meters of [`mixed_line`] polled every `interval`, the Mercury password
/// in the secrets file.
fn site(dir: &Path, tty: &Path, password: &str, interval: &str) -> PathBuf {
    let secrets = dir.join("secrets.toml");
    std::fs::write(&secrets, format!("[meter.tenant]\npassword = \"{password}\"\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let config = dir.join("amid.toml");
    std::fs::write(
        &config,
        format!(
            "[site]\nid = \"shared-line\"\ndata_dir = \"data\"\nsecrets = \"secrets.toml\"\n\
             [[bus]]\nid = \"rs485\"\nmedia = \"serial://{}\"\ntimeout = \"500ms\"\n\
             [[meter]]\nid = \"tenant\"\nbus = \"rs485\"\nprofile = \"mercury-230\"\naddress = 128\n\
             interval = \"{interval}\"\nprofile_backfill = \"2h\"\n\
             [[meter]]\nid = \"incomer\"\nbus = \"rs485\"\nprofile = \"eastron-sdm630\"\naddress = 1\n\
             interval = \"{interval}\"\n\
             [[meter]]\nid = \"pv\"\nbus = \"rs485\"\nprofile = \"eastron-sdm120\"\naddress = 2\n\
             interval = \"{interval}\"\n",
            tty.display()
        ),
    )
    .unwrap();
    config
}

/// `(reads_ok, reads_failed, last_error)` of a meter.
fn status(db: &Path, meter: &str) -> (i64, i64, Option<String>) {
    rusqlite::Connection::open(db)
        .and_then(|c| {
            c.query_row("SELECT reads_ok, reads_failed, last_error FROM meter_status WHERE meter = ?1", [meter], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
        })
        .unwrap_or((0, 0, None))
}

fn stop(mut daemon: std::process::Child) {
    Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status().unwrap();
    assert!(daemon.wait().unwrap().success(), "amid run exits 0 on SIGTERM");
}

async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !done() {
        assert!(t0.elapsed() < limit, "{what} not reached in {limit:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mercury_and_modbus_meters_share_one_pty_line_for_an_hour_of_minute_slots_without_a_collision() {
    let dir = tempfile::tempdir().unwrap();
    let line = mixed_line(dir.path(), None).await;
    let config = site(dir.path(), &line.tty, "123456789ABC", "1s");
    let db = dir.path().join("data/readings.db");
    let daemon = amid().args(["run", "--config", config.to_str().unwrap()]).stderr(Stdio::null()).spawn().unwrap();
    // Sixty slots: every meter read sixty times, one second standing for one minute of the hour.
    wait_until("60 polls of every meter", Duration::from_secs(180), || {
        ["tenant", "incomer", "pv"].iter().all(|m| status(&db, m).0 >= 60)
    })
    .await;
    stop(daemon);

    let conn = rusqlite::Connection::open(&db).unwrap();
    for meter in ["tenant", "incomer", "pv"] {
        let (ok, failed, error) = status(&db, meter);
        assert_eq!(failed, 0, "{meter}: no poll failed ({error:?})");
        // Zero lost readings: every value of the profile in every poll (interval records aside).
        let mut stmt = conn
            .prepare(
                "SELECT obis, COUNT(*) FROM readings WHERE meter = ?1 AND obis NOT LIKE '1-0:_.29.0%' GROUP BY obis",
            )
            .unwrap();
        let per_value: Vec<(String, i64)> =
            stmt.query_map([meter], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect();
        let expected_values = match meter {
            "tenant" => ami_device::mercury::resolve_mercury_profile("mercury-230", &[repo().join("devices")])
                .unwrap()
                .values
                .len(),
            id => ami_device::resolve_profile(
                if id == "incomer" { "eastron-sdm630" } else { "eastron-sdm120" },
                &[repo().join("devices")],
            )
            .unwrap()
            .values
            .len(),
        };
        assert_eq!(per_value.len(), expected_values, "{meter}: every value of its profile is stored");
        for (obis, n) in &per_value {
            assert_eq!(*n, ok, "{meter} {obis}: one reading per successful poll");
        }
    }
    // The Mercury values mean what the profile says.
    let value = |obis: &str| -> f64 {
        conn.query_row(
            "SELECT value FROM readings WHERE meter = 'tenant' AND obis = ?1 ORDER BY ts_ms DESC LIMIT 1",
            [obis],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert!((220.0..240.0).contains(&value("1-0:32.7.0*255")), "U L1 {}", value("1-0:32.7.0*255"));
    assert!((49.9..50.1).contains(&value("1-0:14.7.0*255")), "f {}", value("1-0:14.7.0*255"));
    assert!(value("1-0:1.8.0*255") > 1_234_567.0, "A+ counts up from the meter's start");
    let serial: String = conn
        .query_row("SELECT text FROM readings WHERE meter = 'tenant' AND obis = '0-0:96.1.0*255' LIMIT 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(serial, "41234128");

    // The power profile: the last two hours of half-hour records on first contact, each stored once, in UTC
    // although the meter keeps Moscow time; the mark is the newest record.
    let records: Vec<i64> = conn
        .prepare("SELECT ts_ms FROM readings WHERE meter = 'tenant' AND obis = '1-0:1.29.0*255' ORDER BY ts_ms")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!((4..=6).contains(&records.len()), "half-hour records of 2 h: {records:?}");
    let now_ms = chrono::Utc::now().timestamp_millis();
    for w in records.windows(2) {
        assert_eq!(w[1] - w[0], 1_800_000, "consecutive half hours: {records:?}");
    }
    for t in &records {
        assert_eq!(t % 1_800_000, 0, "records end on the half hour (UTC): {t}");
        assert!(*t <= now_ms && *t > now_ms - 3 * 3_600_000, "record {t} within the last 2 h (UTC), now {now_ms}");
    }
    let store = ami_collector::store::Store::open(&db).unwrap();
    assert_eq!(store.profile_mark("tenant", "1-0:99.1.0*255").unwrap(), records.last().copied());
    let energy: f64 = conn
        .query_row(
            "SELECT value FROM readings WHERE meter = 'tenant' AND obis = '1-0:1.29.0*255' AND unit = 'Wh' LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!((500.0..2500.0).contains(&energy), "a half hour at about 3 kW: {energy} Wh");

    // Zero collisions: no byte on the line was for nobody, no reply was missed, damaged or foreign; the
    // Mercury channel was opened once and stayed open for the hour.
    assert_eq!(line.stats.dropped.load(Ordering::Relaxed), 0, "bytes the meters could not frame");
    assert!(line.stats.modbus.load(Ordering::Relaxed) >= 120 && line.stats.mercury.load(Ordering::Relaxed) >= 60 * 15);
    let m = line.mercury.lock().unwrap().stats();
    assert_eq!((m.garbage_bytes, m.refused_opens, m.not_open), (0, 0, 0), "{m:?}");
    assert_eq!(m.opens, 1, "one channel open for the whole hour: {m:?}");
    let (timeouts, checksum_errors, rejected): (i64, i64, i64) = conn
        .query_row(
            "SELECT timeouts, checksum_errors, rejected FROM link_counters WHERE bus = 'rs485' AND meter = ''",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((timeouts, checksum_errors, rejected), (0, 0, 0), "the bus saw no timeout, bad CRC or foreign frame");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_an_error_naming_the_meter_and_its_neighbours_are_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let line = mixed_line(dir.path(), None).await;
    let config = site(dir.path(), &line.tty, "010101010101", "1s");
    let db = dir.path().join("data/readings.db");
    let daemon = amid().args(["run", "--config", config.to_str().unwrap()]).stderr(Stdio::null()).spawn().unwrap();
    wait_until("the neighbours read and the Mercury meter failing", Duration::from_secs(30), || {
        status(&db, "incomer").0 >= 3 && status(&db, "pv").0 >= 3 && status(&db, "tenant").1 >= 1
    })
    .await;
    stop(daemon);
    let (ok, failed, error) = status(&db, "tenant");
    assert_eq!(ok, 0);
    assert!(failed >= 1);
    let error = error.expect("an error is recorded");
    assert!(
        error.contains("meter tenant")
            && error.contains("refused to open the channel at level 1")
            && error.contains("password"),
        "{error}"
    );
    assert!(!error.contains("010101010101") && !error.contains("1, 1, 1"), "the password never shows: {error}");
    assert!(line.mercury.lock().unwrap().stats().refused_opens >= 1);

    // The command line says the same, and exits non-zero.
    let tty = line.tty.clone();
    let out = tokio::task::spawn_blocking(move || {
        amid()
            .args(["read", "--profile", "mercury-230", "--media", &format!("serial://{}", tty.display())])
            .args(["--address", "128", "--meter-id", "tenant"])
            .env("AMI_SECRET_TENANT_PASSWORD", "020202020202")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("meter tenant: the meter refused to open the channel"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_the_meter_closed_is_reopened_transparently() {
    let dir = tempfile::tempdir().unwrap();
    // The meter closes its channel after 1 s of silence (240 s on real meters): each 2-s poll finds it closed.
    let line = mixed_line(dir.path(), Some(Duration::from_secs(1))).await;
    let config = site(dir.path(), &line.tty, "123456789ABC", "2s");
    let db = dir.path().join("data/readings.db");
    let daemon = amid().args(["run", "--config", config.to_str().unwrap()]).stderr(Stdio::null()).spawn().unwrap();
    wait_until("4 polls", Duration::from_secs(40), || status(&db, "tenant").0 >= 4).await;
    stop(daemon);
    let (ok, failed, error) = status(&db, "tenant");
    assert_eq!(failed, 0, "no poll failed: {error:?}");
    let m = line.mercury.lock().unwrap().stats();
    assert!(m.not_open >= 3, "the meter answered \"channel not open\" at later polls: {m:?}");
    assert!(m.opens >= ok.try_into().unwrap(), "re-opened at every poll: {m:?}");
    assert_eq!(m.refused_opens, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_channel_is_kept_open_between_polls_further_apart_than_the_channel_timeout() {
    let dir = tempfile::tempdir().unwrap();
    // The meter closes an idle channel after 3 s (240 s on real meters); polls 8 s apart would find it
    // closed every time unless the daemon keeps it open with test frames.
    let line = mixed_line(dir.path(), Some(Duration::from_secs(3))).await;
    let config = site(dir.path(), &line.tty, "123456789ABC", "8s");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace("address = 128\n", "address = 128\nchannel_timeout = \"3s\"\n");
    assert!(text.contains("channel_timeout"));
    std::fs::write(&config, text).unwrap();
    let db = dir.path().join("data/readings.db");
    let daemon = amid().args(["run", "--config", config.to_str().unwrap()]).stderr(Stdio::null()).spawn().unwrap();
    wait_until("3 polls", Duration::from_secs(60), || status(&db, "tenant").0 >= 3).await;
    stop(daemon);
    let (_, failed, error) = status(&db, "tenant");
    assert_eq!(failed, 0, "no poll failed: {error:?}");
    let m = line.mercury.lock().unwrap().stats();
    assert_eq!(m.opens, 1, "the channel was opened once and kept open: {m:?}");
    assert_eq!(m.not_open, 0, "no request found the channel closed: {m:?}");
    assert_eq!(m.expired, 0, "the channel never expired: {m:?}");
}

#[test]
fn amid_simulate_serves_a_mixed_line_that_amid_read_reads_for_both_protocols() {
    let dir = tempfile::tempdir().unwrap();
    let (_socat, a, b) = pty_pair(dir.path());
    let mut sim = amid()
        .args(["simulate", "--profile", "mercury-230", "--listen", &format!("serial://{}", b.display())])
        .args(["--address", "77", "--modbus", "eastron-sdm120@5", "--password", "A1A2A3A4A5A6"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_line(&mut sim, "simulating a mixed line");
    let _sim = Proc(sim);
    let media = format!("serial://{}", a.display());
    let out = amid()
        .args(["read", "--profile", "mercury-230", "--media", &media, "--address", "77", "--format", "json"])
        .args(["--meter-id", "m77", "--profile-since", "1h"])
        .env("AMI_SECRET_M77_PASSWORD", "A1A2A3A4A5A6")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = json_lines(&out.stdout);
    let serial = lines.iter().find(|l| l["obis"] == "0-0:96.1.0*255").expect("serial number");
    assert_eq!(serial["value"], "41234077");
    assert!(lines.iter().any(|l| l["obis"] == "1-0:1.29.0*255" && l["unit"] == "Wh"), "power profile records");
    let out = amid()
        .args(["read", "--profile", "eastron-sdm120", "--media", &media, "--address", "5", "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = json_lines(&out.stdout);
    assert!(lines.iter().any(|l| l["obis"] == "1-0:32.7.0*255" && l["unit"] == "V"), "{lines:#?}");
}

#[test]
fn decode_prints_a_mercury_frame_for_a_human() {
    let out = amid().args(["decode", "--protocol", "mercury", "--hex", "80 08 11 40 A5 86"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("0x80") && text.contains("CRC") && text.contains("ok") && text.contains("frequency"),
        "{text}"
    );
    // The reply, decoded exactly with the request it answers: 49.99 Hz.
    let out = amid()
        .args(["decode", "--protocol", "mercury", "--hex", "80 00 87 13 0B D9", "--request", "80 08 11 40 A5 86"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("49.99"), "{}", String::from_utf8_lossy(&out.stdout));
    // A captured open request never shows its password; a bad CRC exits 2 with the description.
    let out =
        amid().args(["decode", "--protocol", "mercury", "--hex", "80 01 01 01 01 01 01 01 01 16 47"]).output().unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("01 01 01 01 01 01"));
    let out = amid().args(["decode", "--protocol", "mercury", "--hex", "80 08 11 40 A5 87"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("BAD"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn demo_reads_two_simulated_mercury_meters_and_their_power_profiles() {
    let dir = tempfile::tempdir().unwrap();
    let out = amid()
        .args(["demo", "--duration", "4s", "--interval", "1s", "--data-dir", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("tenant-a (Mercury 230, address 128)"), "{stdout}");
    let conn = rusqlite::Connection::open(dir.path().join("data/readings.db")).unwrap();
    let count = |meter: &str, obis: &str| -> i64 {
        conn.query_row("SELECT COUNT(*) FROM readings WHERE meter = ?1 AND obis = ?2", [meter, obis], |r| r.get(0))
            .unwrap()
    };
    for meter in ["tenant-a", "tenant-b"] {
        assert!(count(meter, "1-0:1.8.0*255") >= 2, "{meter}: A+ read at every poll");
        assert!(count(meter, "1-0:32.7.0*255") >= 2, "{meter}: U L1 read at every poll");
    }
    // The first poll backfills a day of the power profile: 48 half hours (230) and 24 hours (234).
    assert!((48..=49).contains(&count("tenant-a", "1-0:1.29.0*255")), "{}", count("tenant-a", "1-0:1.29.0*255"));
    assert!((24..=25).contains(&count("tenant-b", "1-0:1.29.0*255")), "{}", count("tenant-b", "1-0:1.29.0*255"));
    // The password is only in the secrets file.
    let toml = std::fs::read_to_string(dir.path().join("amid.toml")).unwrap();
    assert!(!toml.contains("password"), "{toml}");
    assert!(std::fs::read_to_string(dir.path().join("secrets.toml")).unwrap().contains("[meter.tenant-a]"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_value_of_the_mercury_230_profile_is_what_the_meter_holds() {
    use ami_collector::mercury::{plan, poll, MercuryMeterCfg, PollCtx};
    use ami_device::mercury::{MercuryParameter, MercurySource};
    use ami_device::Value;
    use ami_protocols::mercury::{Address, Bwri, Tariff};
    // A frozen meter clock, so what the meter sends is what the line holds.
    let mut line = sim_line([MercuryMeterSpec::mercury_230(128, 41_234_128)], 0).unwrap();
    line.freeze(true);
    let line: SharedMercuryLine = Arc::new(Mutex::new(line));
    let (addr, server) = ami_sim::mercury::spawn_tcp("127.0.0.1:0", Arc::clone(&line), Duration::ZERO).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("amid.toml");
    std::fs::write(
        &config,
        format!(
            "[site]\nid = \"s\"\n[[bus]]\nid = \"b\"\nmedia = \"tcp://{addr}\"\n[[meter]]\nid = \"m\"\nbus = \"b\"\n\
             profile = \"{}\"\naddress = 128\n",
            repo().join("devices/mercury-230.xml").display()
        ),
    )
    .unwrap();
    let cfg = ami_collector::config::Config::load(&config).unwrap();
    let profile = ami_device::mercury::load_mercury_profile(&repo().join("devices/mercury-230.xml")).unwrap();
    let mut profile_without_records = profile.clone();
    profile_without_records.load_profile = None;
    let p = plan(
        &cfg.meters[0],
        &MercuryMeterCfg::default(),
        profile_without_records,
        Some(&cfg.buses[0].media),
        Duration::from_secs(1),
        2,
    )
    .unwrap();
    let transport = ami_media::open(&cfg.buses[0].media).await.unwrap();
    let bus = ami_link::Bus::spawn(transport, ami_link::BusConfig::default());
    let mut client = p.client(bus);
    let (mut marks, mut constant) = (std::collections::HashMap::new(), None);
    let mut ctx = PollCtx {
        meter: "m",
        marks: &mut marks,
        constant: &mut constant,
        now: chrono::Utc::now(),
        on_window: None,
        stop: None,
    };
    let frames_before = line.lock().unwrap().stats().frames;
    let got = poll(&p, &mut client, &mut ctx).await.unwrap();
    let frames = line.lock().unwrap().stats().frames - frames_before;
    assert!(got.errors.is_empty(), "{:?}", got.errors);
    assert_eq!(got.readings.len(), profile.values.len());
    let l = line.lock().unwrap();
    let a = Address(128);
    for (v, r) in profile.values.iter().zip(&got.readings) {
        let want = match v.source {
            MercurySource::Energy { array, tariff, quantity } => {
                let e = l.energy(a, array, Tariff(tariff)).unwrap();
                Value::Number(f64::from([e.a_plus, e.a_minus, e.r_plus, e.r_minus][quantity.index()].unwrap()))
            }
            MercurySource::PhaseEnergy { tariff, phase } => {
                let e = l.phase_energy(a, Tariff(tariff)).unwrap();
                Value::Number(f64::from(e.phases[usize::from(phase - 1)].unwrap()))
            }
            MercurySource::Instant(b) if b == Bwri::TEMPERATURE => Value::Number(f64::from(l.temperature())),
            MercurySource::Instant(b) => Value::Number(l.instant(a, b, false).unwrap()[0].value()),
            MercurySource::Parameter(MercuryParameter::Serial) => Value::Text("41234128".into()),
            MercurySource::Parameter(MercuryParameter::ManufactureDate) => {
                Value::Text(l.serial(a).unwrap().made.to_string())
            }
        };
        assert_eq!((&r.reading.name, &r.reading.value), (&v.name, &want), "{}", v.name);
        assert_eq!((r.reading.obis, r.reading.unit.as_str(), r.kind), (v.obis, v.unit.as_str(), v.kind));
    }
    // One request per energy array and tariff, one block per quantity of several phases: far fewer frames
    // than values (an open channel request included).
    assert!(frames <= 20, "{frames} frames for {} values", profile.values.len());
    drop(l);
    server.abort();
}

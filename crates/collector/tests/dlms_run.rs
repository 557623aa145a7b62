//! DLMS/COSEM meters in the daemon, end to end with real binaries and sockets: `amid run` against
//! `amid simulate` (and in-process simulated meters where the test must see the meter's state).
//!
//! The acceptance test of the DLMS slice is
//! `a_day_without_the_daemon_is_filled_from_the_meters_load_profile_exactly_once`.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ami_sim::dlms::{DlmsMeter, DlmsMeterSpec};
use common::*;

/// The Green Book test keys the simulator uses by default.
const EK: &str = "000102030405060708090A0B0C0D0E0F";
const AK: &str = "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF";
const PERIOD_MS: i64 = 900_000;
const PROFILE: &str = "1-0:99.1.0*255";

/// `amid simulate` of the generic DLMS profile on a free port; `extra` flags as given.
fn simulate_dlms(query: &str, extra: &[&str]) -> (Proc, u16) {
    let port = free_port();
    let mut child = amid()
        .args(["simulate", "--profile", "generic-iec62056", "--listen", &format!("tcp://127.0.0.1:{port}{query}")])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    wait_for_line(&mut child, "simulating");
    wait_port(port);
    (Proc(child), port)
}

/// A running `amid run` whose log lines are collected.
struct Daemon {
    child: std::process::Child,
    log: std::sync::mpsc::Receiver<String>,
    lines: Vec<String>,
}

fn start_daemon(config: &Path, env: &[(&str, &str)]) -> Daemon {
    let mut cmd = amid();
    cmd.args(["run", "--config", config.to_str().unwrap()]).env("AMI_LOG", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            eprintln!("amid: {line}");
            let _ = tx.send(line);
        }
    });
    Daemon { child, log: rx, lines: Vec::new() }
}

impl Daemon {
    /// Every log line so far.
    fn log(&mut self) -> &[String] {
        self.lines.extend(self.log.try_iter());
        &self.lines
    }

    /// SIGTERM; waits for a clean exit and returns every log line.
    fn stop(mut self) -> Vec<String> {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        let t0 = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "amid did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "amid exited with {status}");
        std::thread::sleep(Duration::from_millis(100));
        self.log();
        std::mem::take(&mut self.lines)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (max `secs`) until `cond` holds, polling every 100 ms.
fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(secs), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn db(dir: &Path) -> PathBuf {
    dir.join("data/readings.db")
}

fn query_i64(db: &Path, sql: &str) -> i64 {
    rusqlite::Connection::open(db).and_then(|c| c.query_row(sql, [], |r| r.get(0))).unwrap_or(0)
}

/// Profile rows of a meter: ts (ms) → (obis → values stored at that ts).
fn profile_rows(db: &Path, meter: &str) -> BTreeMap<i64, HashMap<String, Vec<f64>>> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT ts_ms, obis, value FROM readings WHERE meter = ?1 AND name LIKE 'obis_%' ORDER BY ts_ms")
        .unwrap();
    let mut out: BTreeMap<i64, HashMap<String, Vec<f64>>> = BTreeMap::new();
    for row in
        stmt.query_map([meter], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, f64>(2)?))).unwrap()
    {
        let (ts, obis, v) = row.unwrap();
        out.entry(ts).or_default().entry(obis).or_default().push(v);
    }
    out
}

fn write_secrets(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("secrets.toml");
    std::fs::write(&path, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_without_the_daemon_is_filled_from_the_meters_load_profile_exactly_once() {
    // The head end, so the test also sees what the uplink delivered.
    let central_dir = tempfile::tempdir().unwrap();
    let central_db = central_dir.path().join("c.db");
    let cdb = ami_central::Db::connect(&format!("sqlite:{}", central_db.display())).await.unwrap();
    let token = cdb.add_site_token("lp").await.unwrap();
    let cfg = ami_central::ServerConfig { listen: "127.0.0.1:0".parse().unwrap(), ..Default::default() };
    let (central, _central_task) = ami_central::spawn(cdb, cfg).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("amid.toml");
    let write_config = |port: u16| {
        std::fs::write(
            &config,
            format!(
                "[site]\nid = \"lp\"\ndata_dir = \"data\"\n\
                 [uplink]\nurl = \"http://{central}\"\ntoken = \"{token}\"\ninterval = \"300ms\"\n\
                 [[bus]]\nid = \"dlms\"\nmedia = \"tcp://127.0.0.1:{port}\"\ntimeout = \"2s\"\n\
                 [[meter]]\nid = \"grid\"\nbus = \"dlms\"\nprofile = \"generic-iec62056\"\ninterval = \"1s\"\n\
                 client = 48\nauthentication = \"high-gmac\"\nciphering = true\n"
            ),
        )
        .unwrap();
    };
    let env = [("AMI_SECRET_GRID_BLOCK_CIPHER_KEY", EK), ("AMI_SECRET_GRID_AUTHENTICATION_KEY", AK)];
    let store = db(dir.path());
    let mark = || {
        query_i64(&store, &format!("SELECT last_ms FROM profile_marks WHERE meter = 'grid' AND profile = '{PROFILE}'"))
    };

    // Day 1: the meter believes it is yesterday. The daemon backfills one day and keeps up.
    let (sim, port) = simulate_dlms("", &["--clock-offset", "-1d"]);
    write_config(port);
    let daemon = start_daemon(&config, &env);
    let started = chrono::Utc::now().timestamp_millis();
    wait_until(30, "the first load profile read", || mark() > 0);
    // A few more polls: nothing new arrives (the meter's next interval is 15 minutes away), nothing doubles.
    std::thread::sleep(Duration::from_secs(3));
    let log = daemon.stop();
    let stopped = chrono::Utc::now().timestamp_millis();
    drop(sim);
    assert!(!log.iter().any(|l| l.contains("poll failed")), "{log:#?}");
    // The operator is told once that the meter's clock is a day off.
    let drift: Vec<&String> = log.iter().filter(|l| l.contains("the meter's clock is off")).collect();
    assert_eq!(drift.len(), 1, "{log:#?}");
    assert!(drift[0].contains("drift_s=-864"), "{}", drift[0]);
    let mark_day1 = mark();
    assert_eq!(mark_day1 % PERIOD_MS, 0, "the mark is a meter timestamp on a 15-min boundary");
    // The meter's time, a day behind: the newest interval it had when the daemon stopped.
    assert!(
        mark_day1 <= stopped - 86_400_000 && mark_day1 > started - 86_400_000 - PERIOD_MS,
        "mark {mark_day1}, started {started}"
    );
    let before = profile_rows(&store, "grid");
    assert!(before.len() >= 96, "one day backfilled: {}", before.len());

    // The daemon was down for a day: the meter now tells the true time. The daemon asks for the gap only.
    let (_sim, port) = simulate_dlms("", &[]);
    write_config(port);
    let daemon = start_daemon(&config, &env);
    let now = chrono::Utc::now().timestamp_millis();
    let newest = now.div_euclid(PERIOD_MS) * PERIOD_MS;
    wait_until(30, "the gap to be read", || mark() >= newest);
    std::thread::sleep(Duration::from_secs(2));
    // Everything went up to the head end.
    wait_until(30, "the uplink to drain", || query_i64(&store, "SELECT COUNT(*) FROM readings WHERE sent = 0") == 0);
    let log = daemon.stop();
    assert!(!log.iter().any(|l| l.contains("poll failed") || l.contains("clock is off")), "{log:#?}");
    // The newest interval stored (a quarter hour may have passed since `newest`).
    let newest = mark();

    let rows = profile_rows(&store, "grid");
    let model = DlmsMeter::new(DlmsMeterSpec::default());
    let gap: Vec<i64> = rows.keys().copied().filter(|&t| t > mark_day1).collect();
    let expected: Vec<i64> = (1..).map(|i| mark_day1 + i * PERIOD_MS).take_while(|&t| t <= newest).collect();
    assert!(expected.len() >= 96, "the gap is a day: {}", expected.len());
    assert_eq!(gap, expected, "every 15-min interval of the gap, on the meter's boundaries, none missing");
    // From the first backfill to now: contiguous, each interval once, each value the meter's.
    let first = *rows.keys().next().unwrap();
    let all: Vec<i64> = rows.keys().copied().collect();
    let contiguous: Vec<i64> = (0..).map(|i| first + i * PERIOD_MS).take_while(|&t| t <= newest).collect();
    assert_eq!(all, contiguous, "no interval missing or shifted across the restart");
    for (ts, cols) in &rows {
        let (import, export) = model.register_values(ts / 1000);
        assert_eq!(cols["1-0:1.8.0*255"], vec![f64::from(import)], "import at {ts}");
        assert_eq!(cols["1-0:2.8.0*255"], vec![f64::from(export)], "export at {ts}");
    }
    // The rows before the restart are untouched.
    for (ts, cols) in &before {
        assert_eq!(rows.get(ts), Some(cols));
    }

    // The head end holds each interval exactly once (its key is series + ts) with the same values.
    let c = rusqlite::Connection::open(&central_db).unwrap();
    let mut stmt = c
        .prepare(
            "SELECT r.ts, r.value FROM readings r JOIN series s ON s.id = r.series_id
             WHERE s.meter = 'grid' AND s.obis = '1-0:1.8.0*255' AND r.ts % 900000 = 0 ORDER BY r.ts",
        )
        .unwrap();
    let at_central: Vec<(i64, f64)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<Result<_, _>>().unwrap();
    let ts_central: Vec<i64> = at_central.iter().map(|(t, _)| *t).collect();
    // Everything acknowledged (an interval captured in the last second before the stop may still wait).
    let acked = query_i64(
        &store,
        "SELECT MAX(ts_ms) FROM readings WHERE meter = 'grid' AND name = 'obis_1_0_1_8_0' AND sent = 1",
    );
    assert!(acked >= newest - PERIOD_MS, "{acked}");
    let expected_central: Vec<i64> = contiguous.iter().copied().filter(|&t| t <= acked).collect();
    assert_eq!(ts_central, expected_central, "the central store has every interval once");
    for (t, v) in at_central {
        assert_eq!(v, f64::from(model.register_values(t / 1000).0));
    }
}

#[test]
fn registers_are_read_with_scaler_and_unit_over_hdlc_and_the_wrapper_at_every_security_level() {
    let (_hdlc, hdlc_port) = simulate_dlms("", &[]);
    let (_wrapper, wrapper_port) = simulate_dlms("?framing=wrapper", &[]);
    let dir = tempfile::tempdir().unwrap();
    let mut secrets = String::new();
    let mut text = format!(
        "[site]\nid = \"sec\"\ndata_dir = \"data\"\nsecrets = \"secrets.toml\"\n\
         [[bus]]\nid = \"hdlc\"\nmedia = \"tcp://127.0.0.1:{hdlc_port}\"\ntimeout = \"2s\"\n\
         [[bus]]\nid = \"wrapper\"\nmedia = \"tcp://127.0.0.1:{wrapper_port}\"\ntimeout = \"2s\"\n"
    );
    let levels = [("none", 16, ""), ("low", 32, ""), ("high", 48, "ciphering = true\n")];
    let mut meters = Vec::new();
    for bus in ["hdlc", "wrapper"] {
        for (level, client, extra) in levels {
            let id = format!("{bus}-{level}");
            let auth = if level == "high" { "high-gmac" } else { level };
            text.push_str(&format!(
                "[[meter]]\nid = \"{id}\"\nbus = \"{bus}\"\nprofile = \"generic-iec62056\"\ninterval = \"1s\"\n\
                 framing = \"{bus}\"\nclient = {client}\nauthentication = \"{auth}\"\n{extra}"
            ));
            match level {
                "low" => secrets.push_str(&format!("[meter.{id}]\npassword = \"00000000\"\n")),
                "high" => secrets
                    .push_str(&format!("[meter.{id}]\nblock_cipher_key = \"{EK}\"\nauthentication_key = \"{AK}\"\n")),
                _ => {}
            }
            meters.push(id);
        }
    }
    write_secrets(dir.path(), &secrets);
    let config = dir.path().join("amid.toml");
    std::fs::write(&config, text).unwrap();
    let check = amid().args(["config", "check", config.to_str().unwrap()]).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));

    let daemon = start_daemon(&config, &[]);
    let store = db(dir.path());
    let polls = |m: &str| {
        query_i64(
            &store,
            &format!("SELECT COUNT(DISTINCT ts_ms) FROM readings WHERE meter = '{m}' AND name = 'voltage_l1'"),
        )
    };
    wait_until(40, "two polls of every meter", || meters.iter().all(|m| polls(m) >= 2));
    let log = daemon.stop();
    assert!(!log.iter().any(|l| l.contains("poll failed") || l.contains("values not read")), "{log:#?}");
    let conn = rusqlite::Connection::open(&store).unwrap();
    for m in &meters {
        let row = |name: &str| -> (f64, String, String) {
            conn.query_row(
                "SELECT value, unit, obis FROM readings WHERE meter = ?1 AND name = ?2 ORDER BY ts_ms DESC LIMIT 1",
                [m.as_str(), name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap_or_else(|e| panic!("{m} {name}: {e}"))
        };
        let (v, unit, obis) = row("voltage_l1");
        // Scaler -1: tenths of a volt.
        assert_eq!((unit.as_str(), obis.as_str()), ("V", "1-0:32.7.0*255"), "{m}");
        assert!((180.0..280.0).contains(&v) && ((v * 10.0).round() - v * 10.0).abs() < 1e-6, "{m}: {v}");
        let (a, unit, _) = row("current_l1");
        assert_eq!(unit, "A", "{m}");
        assert!(((a * 100.0).round() - a * 100.0).abs() < 1e-6, "{m}: scaler -2: {a}");
        let (hz, unit, _) = row("frequency");
        assert_eq!(unit, "Hz");
        assert!((49.0..51.0).contains(&hz), "{m}: {hz}");
        let (wh, unit, _) = row("energy_import");
        assert_eq!(unit, "Wh");
        assert!(wh > 1000.0, "{m}: {wh}");
        let kind: String = conn
            .query_row("SELECT kind FROM readings WHERE meter = ?1 AND name = 'energy_import' LIMIT 1", [m], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(kind, "counter");
        // The load profile came too, at every level.
        let intervals = query_i64(
            &store,
            &format!("SELECT COUNT(*) FROM readings WHERE meter = '{m}' AND name = 'obis_1_0_1_8_0'"),
        );
        assert!(intervals >= 96, "{m}: {intervals}");
    }
}

#[test]
fn a_wrong_key_is_a_clear_error_and_the_daemon_keeps_polling_the_others() {
    let (_sim, port) = simulate_dlms("", &[]);
    let dir = tempfile::tempdir().unwrap();
    let wrong = "0F0E0D0C0B0A09080706050403020100";
    write_secrets(
        dir.path(),
        &format!(
            "[meter.good]\nblock_cipher_key = \"{EK}\"\nauthentication_key = \"{AK}\"\n\
             [meter.bad]\nblock_cipher_key = \"{wrong}\"\nauthentication_key = \"{AK}\"\n\
             [meter.badpass]\npassword = \"12345678\"\n"
        ),
    );
    let config = dir.path().join("amid.toml");
    let meter = |id: &str, client: u8, auth: &str| {
        format!(
            "[[meter]]\nid = \"{id}\"\nbus = \"d\"\nprofile = \"generic-iec62056\"\ninterval = \"1s\"\nclient = {client}\n\
             authentication = \"{auth}\"\n{}",
            if auth == "high-gmac" { "ciphering = true\n" } else { "" }
        )
    };
    std::fs::write(
        &config,
        format!(
            "[site]\nid = \"k\"\ndata_dir = \"data\"\nsecrets = \"secrets.toml\"\n\
             [[bus]]\nid = \"d\"\nmedia = \"tcp://127.0.0.1:{port}\"\ntimeout = \"1s\"\nretries = 0\n{}{}{}",
            meter("bad", 48, "high-gmac"),
            meter("good", 48, "high-gmac"),
            meter("badpass", 32, "low"),
        ),
    )
    .unwrap();
    let mut daemon = start_daemon(&config, &[]);
    let store = db(dir.path());
    let good_polls =
        || query_i64(&store, "SELECT COUNT(DISTINCT ts_ms) FROM readings WHERE meter = 'good' AND name = 'voltage_l1'");
    wait_until(40, "the good meter polled 3 times", || good_polls() >= 3);
    wait_until(20, "both bad meters logged", || {
        let log = daemon.log();
        ["meter=bad ", "meter=badpass "].iter().all(|m| log.iter().any(|l| l.contains("poll failed") && l.contains(m)))
    });
    let log = daemon.stop();
    let failures: Vec<&String> = log.iter().filter(|l| l.contains("poll failed")).collect();
    assert!(failures.iter().all(|l| !l.contains("meter=good ")), "{failures:#?}");
    let bad = failures.iter().find(|l| l.contains("meter=bad ")).unwrap();
    assert!(bad.contains("association failed") && bad.to_lowercase().contains("authentication"), "{bad}");
    let badpass = failures.iter().find(|l| l.contains("meter=badpass ")).unwrap();
    assert!(badpass.contains("association failed"), "{badpass}");
    for l in &log {
        assert!(!l.contains(wrong) && !l.contains(EK) && !l.contains("12345678"), "a secret in the log: {l}");
    }
    for m in ["bad", "badpass"] {
        assert_eq!(query_i64(&store, &format!("SELECT COUNT(*) FROM readings WHERE meter = '{m}'")), 0, "{m}");
        let failures = query_i64(&store, &format!("SELECT consecutive_failures FROM meter_status WHERE meter = '{m}'"));
        assert!(failures >= 2, "{m} retried every cycle: {failures}");
    }
}

#[test]
fn the_invocation_counter_keeps_increasing_across_restarts_of_the_daemon() {
    // One simulated meter for both runs: it refuses any ciphered APDU whose counter is not above the last
    // one it saw from this client, so a counter that restarted would fail the association.
    let (_sim, port) = simulate_dlms("?framing=wrapper", &[]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("amid.toml");
    std::fs::write(
        &config,
        format!(
            "[site]\nid = \"ic\"\ndata_dir = \"data\"\n[[bus]]\nid = \"d\"\nmedia = \"tcp://127.0.0.1:{port}\"\n\
             [[meter]]\nid = \"m\"\nbus = \"d\"\nprofile = \"generic-iec62056\"\ninterval = \"1s\"\nframing = \"wrapper\"\n\
             client = 48\nauthentication = \"high-gmac\"\nciphering = true\nsystem_title = \"414D490000000042\"\n"
        ),
    )
    .unwrap();
    let env = [("AMI_SECRET_M_BLOCK_CIPHER_KEY", EK), ("AMI_SECRET_M_AUTHENTICATION_KEY", AK)];
    let store = db(dir.path());
    let polls = || query_i64(&store, "SELECT reads_ok FROM meter_status WHERE meter = 'm'");
    let reserved =
        || query_i64(&store, "SELECT reserved FROM invocation_counters WHERE client_title = '414D490000000042'");
    let mut seen = Vec::new();
    for round in 1..=3 {
        let daemon = start_daemon(&config, &env);
        let target = polls() + 2;
        wait_until(30, "two more polls", || polls() >= target);
        let log = daemon.stop();
        assert!(!log.iter().any(|l| l.contains("poll failed")), "round {round}: {log:#?}");
        seen.push(reserved());
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "the reserved counter only grows: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_and_clock_commands_from_the_central_store_reach_the_dlms_meter() {
    use ami_sim::dlms::{spawn_tcp, DlmsFraming};
    let cdir = tempfile::tempdir().unwrap();
    let cdb = ami_central::Db::connect(&format!("sqlite:{}", cdir.path().join("c.db").display())).await.unwrap();
    let operator = cdb.add_operator_token("ops").await.unwrap();
    let token = cdb.add_site_token("cmd").await.unwrap();
    let cfg = ami_central::ServerConfig { listen: "127.0.0.1:0".parse().unwrap(), ..Default::default() };
    let (central, _task) = ami_central::spawn(cdb, cfg).await.unwrap();

    // The meter's clock is an hour slow.
    let meter = DlmsMeter::new(DlmsMeterSpec { clock_offset_s: -3600, ..DlmsMeterSpec::default() });
    let (addr, _sim) = spawn_tcp("127.0.0.1:0", meter.clone(), DlmsFraming::Hdlc).await.unwrap();
    assert!(meter.relay_connected());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("amid.toml");
    std::fs::write(
        &config,
        format!(
            "[site]\nid = \"cmd\"\ndata_dir = \"data\"\n[uplink]\nurl = \"http://{central}\"\ntoken = \"{token}\"\ninterval = \"300ms\"\n\
             [[bus]]\nid = \"d\"\nmedia = \"tcp://{addr}\"\n\
             [[meter]]\nid = \"grid\"\nbus = \"d\"\nprofile = \"generic-iec62056\"\ninterval = \"1m\"\nclient = 32\n\
             authentication = \"low\"\n"
        ),
    )
    .unwrap();
    let daemon =
        tokio::task::spawn_blocking(move || start_daemon(&config, &[("AMI_SECRET_GRID_PASSWORD", "00000000")]))
            .await
            .unwrap();

    let http = reqwest::Client::new();
    let queue = |body: serde_json::Value| {
        let http = http.clone();
        let operator = operator.clone();
        async move {
            let resp = http
                .post(format!("http://{central}/api/v1/sites/cmd/commands"))
                .bearer_auth(&operator)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 201);
            resp.json::<serde_json::Value>().await.unwrap()["id"].as_i64().unwrap()
        }
    };
    let wait = |id: i64| {
        let http = http.clone();
        let operator = operator.clone();
        async move {
            let t0 = Instant::now();
            loop {
                let cmd: serde_json::Value = http
                    .get(format!("http://{central}/api/v1/sites/cmd/commands/{id}"))
                    .bearer_auth(&operator)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                if cmd["status"] == "done" || cmd["status"] == "failed" {
                    return cmd;
                }
                assert!(t0.elapsed() < Duration::from_secs(30), "command {id} still {}", cmd["status"]);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let off =
        queue(serde_json::json!({"meter": "grid", "action": {"type": "control", "name": "relay", "on": false}})).await;
    let done = wait(off).await;
    assert_eq!(done["status"], "done", "{done}");
    assert!(!meter.relay_connected(), "the meter's disconnector opened");
    let on =
        queue(serde_json::json!({"meter": "grid", "action": {"type": "control", "name": "relay", "on": true}})).await;
    assert_eq!(wait(on).await["status"], "done");
    assert!(meter.relay_connected(), "and closed again");
    let clock = queue(serde_json::json!({"meter": "grid", "action": {"type": "set_clock"}})).await;
    let done = wait(clock).await;
    assert_eq!(done["status"], "done", "{done}");
    assert!(meter.clock_offset().abs() <= 2, "the meter's clock was set: offset {}", meter.clock_offset());
    let unknown =
        queue(serde_json::json!({"meter": "grid", "action": {"type": "control", "name": "valve", "on": true}})).await;
    let done = wait(unknown).await;
    assert_eq!(done["status"], "failed");
    assert!(done["result"]["message"].as_str().unwrap().contains("no control"), "{done}");
    let _log = tokio::task::spawn_blocking(move || daemon.stop()).await.unwrap();
}

#[test]
fn config_check_names_the_missing_secret_and_never_prints_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("amid.toml");
    std::fs::write(
        &config,
        "[site]\nid = \"s\"\n[[bus]]\nid = \"d\"\nmedia = \"tcp://127.0.0.1:4059\"\n\
         [[meter]]\nid = \"grid\"\nbus = \"d\"\nprofile = \"generic-iec62056\"\nauthentication = \"high-gmac\"\n",
    )
    .unwrap();
    let out = amid().args(["config", "check", config.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("meter[0]") && err.contains("block_cipher_key") && err.contains("AMI_SECRET_GRID_"), "{err}");
    // With the keys in the environment it passes; a short key is refused without echoing it.
    let out = amid()
        .args(["config", "check", config.to_str().unwrap()])
        .env("AMI_SECRET_GRID_BLOCK_CIPHER_KEY", EK)
        .env("AMI_SECRET_GRID_AUTHENTICATION_KEY", AK)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = amid()
        .args(["config", "check", config.to_str().unwrap()])
        .env("AMI_SECRET_GRID_BLOCK_CIPHER_KEY", "C0FFEE")
        .env("AMI_SECRET_GRID_AUTHENTICATION_KEY", AK)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AMI_SECRET_GRID_BLOCK_CIPHER_KEY") && err.contains("32 hex digits"), "{err}");
    assert!(!err.contains("C0FFEE"), "{err}");

    // A secrets file others can read: accepted, with a warning that says what to do.
    let secrets = write_secrets(
        dir.path(),
        &format!("[meter.grid]\nblock_cipher_key = \"{EK}\"\nauthentication_key = \"{AK}\"\n"),
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let text =
        std::fs::read_to_string(&config).unwrap().replace("id = \"s\"\n", "id = \"s\"\nsecrets = \"secrets.toml\"\n");
    std::fs::write(&config, text).unwrap();
    let out = amid().args(["config", "check", config.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("chmod 600") && !err.contains(EK), "{err}");
}

#[test]
fn an_optical_probe_on_a_serial_line_opens_with_mode_e_and_reads_the_meter() {
    let dir = tempfile::tempdir().unwrap();
    let (_socat, a, b) = pty_pair(dir.path());
    let mut sim = amid()
        .args(["simulate", "--profile", "generic-iec62056", "--listen", &format!("serial://{}", b.display())])
        .args(["--optical", "--password", "s3cret-pw"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_line(&mut sim, "simulating");
    let _sim = Proc(sim);
    let config = dir.path().join("amid.toml");
    std::fs::write(
        &config,
        format!(
            "[site]\nid = \"opt\"\ndata_dir = \"data\"\n[[bus]]\nid = \"probe\"\nmedia = \"serial://{}\"\ntimeout = \"2s\"\n\
             [[meter]]\nid = \"m\"\nbus = \"probe\"\nprofile = \"generic-iec62056\"\ninterval = \"1s\"\noptical = true\n\
             client = 32\nauthentication = \"low\"\nprofile_backfill = \"2h\"\n",
            a.display()
        ),
    )
    .unwrap();
    let daemon = start_daemon(&config, &[("AMI_SECRET_M_PASSWORD", "s3cret-pw")]);
    let store = db(dir.path());
    let polls = || query_i64(&store, "SELECT reads_ok FROM meter_status WHERE meter = 'm'");
    // One poll: the simulator does not go back to waiting for a mode E sign-on after the HDLC DISC (a real
    // meter's optical port does), so later polls of the same simulator are not part of this test.
    wait_until(30, "a poll over the optical probe", || polls() >= 1);
    let log = daemon.stop();
    assert!(!log.iter().any(|l| l.contains("s3cret")), "the password in the log");
    // profile_backfill = 2h: the first read reached back two hours, no further.
    let intervals = query_i64(&store, "SELECT COUNT(*) FROM readings WHERE meter = 'm' AND name = 'obis_1_0_1_8_0'");
    assert!((8..=9).contains(&intervals), "{intervals}");
    let unit: String = rusqlite::Connection::open(&store)
        .unwrap()
        .query_row("SELECT unit FROM readings WHERE meter = 'm' AND name = 'voltage_l1' LIMIT 1", [], |r| r.get(0))
        .unwrap();
    assert_eq!(unit, "V");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amid_read_and_control_talk_to_a_dlms_meter_from_the_command_line() {
    use ami_sim::dlms::{spawn_tcp, DlmsFraming};
    let meter = DlmsMeter::new(DlmsMeterSpec::default());
    let (addr, _sim) = spawn_tcp("127.0.0.1:0", meter.clone(), DlmsFraming::Wrapper).await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let state_db = state.path().join("cli.db");
    let run = move |args: Vec<String>| {
        let state_db = state_db.clone();
        tokio::task::spawn_blocking(move || {
            amid()
                .args(args)
                .args(["--counter-store", state_db.to_str().unwrap()])
                .env("AMI_SECRET_METER_BLOCK_CIPHER_KEY", EK)
                .env("AMI_SECRET_METER_AUTHENTICATION_KEY", AK)
                .output()
                .unwrap()
        })
    };
    let media = format!("tcp://{addr}?framing=wrapper");
    let base = |cmd: &str| -> Vec<String> {
        [cmd, "--profile", "generic-iec62056", "--media", &media, "--client", "48", "--authentication", "high-gmac"]
            .iter()
            .map(ToString::to_string)
            .chain(["--ciphering".to_string()])
            .collect()
    };
    // Twice: the second run's invocation counter continues from the state file, so the meter accepts it.
    for _ in 0..2 {
        let mut args = base("read");
        args.extend(["--format", "json", "--profile-since", "2h"].map(String::from));
        let out = run(args).await.unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let lines = json_lines(&out.stdout);
        let v = lines.iter().find(|l| l["name"] == "voltage_l1").expect("voltage");
        assert_eq!((v["unit"].as_str(), v["obis"].as_str()), (Some("V"), Some("1-0:32.7.0*255")));
        let intervals: Vec<&serde_json::Value> = lines.iter().filter(|l| l["name"] == "obis_1_0_1_8_0").collect();
        assert!((8..=9).contains(&intervals.len()), "{}", intervals.len());
        for i in intervals {
            let ts = chrono::DateTime::parse_from_rfc3339(i["ts"].as_str().unwrap()).unwrap().timestamp();
            assert_eq!(i["value"].as_f64().unwrap(), f64::from(meter.register_values(ts).0));
        }
    }
    let mut args = base("control");
    args.extend(["--name", "relay", "--state", "off"].map(String::from));
    let out = run(args).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!meter.relay_connected());
    assert_eq!(meter.stats().replayed_counters, 0);
}

#[test]
fn an_outage_longer_than_the_meters_memory_is_caught_up_from_what_the_meter_still_holds() {
    // The meter keeps 10 days of 15-minute entries. The daemon meets it 45 days in the past (by its clock),
    // then again today: the 35 days the meter forgot are skipped, the 10 it holds are read over several
    // polls (a poll reads at most 31 days), each interval once.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("amid.toml");
    let write_config = |port: u16| {
        std::fs::write(
            &config,
            format!(
                "[site]\nid = \"long\"\ndata_dir = \"data\"\n[[bus]]\nid = \"d\"\nmedia = \"tcp://127.0.0.1:{port}?framing=wrapper\"\n\
                 [[meter]]\nid = \"m\"\nbus = \"d\"\nprofile = \"generic-iec62056\"\ninterval = \"1s\"\n\
                 profile_backfill = \"3h\"\n"
            ),
        )
        .unwrap();
    };
    let store = db(dir.path());
    let mark =
        || query_i64(&store, &format!("SELECT last_ms FROM profile_marks WHERE meter = 'm' AND profile = '{PROFILE}'"));

    let (sim, port) = simulate_dlms("?framing=wrapper", &["--clock-offset", "-45d", "--history-days", "10"]);
    write_config(port);
    let daemon = start_daemon(&config, &[]);
    wait_until(30, "the first read", || mark() > 0);
    let log = daemon.stop();
    drop(sim);
    assert!(!log.iter().any(|l| l.contains("poll failed")), "{log:#?}");
    let mark_then = mark();
    let first_rows = profile_rows(&store, "m");
    assert!((12..=13).contains(&first_rows.len()), "3 h backfilled: {}", first_rows.len());

    let (_sim, port) = simulate_dlms("?framing=wrapper", &["--history-days", "10"]);
    write_config(port);
    let daemon = start_daemon(&config, &[]);
    let newest = chrono::Utc::now().timestamp_millis().div_euclid(PERIOD_MS) * PERIOD_MS;
    wait_until(60, "the catch-up", || mark() >= newest);
    let log = daemon.stop();
    assert!(!log.iter().any(|l| l.contains("poll failed")), "{log:#?}");
    assert!(log.iter().any(|l| l.contains("holds no entries")), "the forgotten range is reported: {log:#?}");

    let rows = profile_rows(&store, "m");
    let newest = mark();
    let caught_up: Vec<i64> = rows.keys().copied().filter(|&t| t > mark_then).collect();
    let first = caught_up[0];
    // The meter holds 960 entries; one more may have been captured while the catch-up ran.
    assert!((960..=961).contains(&caught_up.len()), "{}", caught_up.len());
    let contiguous: Vec<i64> = (0..).map(|i| first + i * PERIOD_MS).take_while(|&t| t <= newest).collect();
    assert_eq!(caught_up, contiguous, "the days the meter holds, each interval once");
    let model = DlmsMeter::new(DlmsMeterSpec::default());
    for (ts, cols) in rows.iter().filter(|(t, _)| **t > mark_then) {
        assert_eq!(cols["1-0:1.8.0*255"], vec![f64::from(model.register_values(ts / 1000).0)], "at {ts}");
    }
    // The operator sees how far the load profile is stored.
    let status = amid().args(["status", "--config", config.to_str().unwrap()]).output().unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    let last = chrono::DateTime::from_timestamp_millis(newest).unwrap().format("%Y-%m-%d %H:%M:%SZ").to_string();
    assert!(text.lines().any(|l| l.starts_with("m ") && l.contains(PROFILE) && l.contains(&last)), "{text}");
}

#[test]
fn simulate_and_read_share_a_secrets_file_and_other_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = write_secrets(
        dir.path(),
        "[meter.site-meter]\nblock_cipher_key = \"3A3B3C3D3E3F404142434445464748A9\"\n\
         authentication_key = \"5051525354555657585960616263646F\"\npassword = \"pw-2026\"\n",
    );
    let (_sim, port) =
        simulate_dlms("", &["--secrets", secrets.to_str().unwrap(), "--system-title", "4B464D1020304050"]);
    let read = |client: &str, auth: &str, extra: &[&str], secrets_file: Option<&Path>| {
        let mut cmd = amid();
        cmd.args(["read", "--profile", "generic-iec62056", "--media", &format!("tcp://127.0.0.1:{port}")])
            .args(["--client", client, "--authentication", auth, "--meter-id", "site-meter", "--format", "json"])
            .args(["--counter-store", dir.path().join("cli.db").to_str().unwrap()])
            .args(extra);
        if let Some(f) = secrets_file {
            cmd.args(["--secrets", f.to_str().unwrap()]);
        }
        cmd.output().unwrap()
    };
    for (client, auth, extra) in [("32", "low", &[][..]), ("48", "high-gmac", &["--ciphering"][..])] {
        let out = read(client, auth, extra, Some(&secrets));
        assert!(out.status.success(), "{auth}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(json_lines(&out.stdout).iter().any(|l| l["name"] == "energy_import" && l["unit"] == "Wh"));
    }
    // The simulator's defaults (the Green Book keys) are not its keys any more.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let wrong = write_secrets(
        &other,
        &format!(
            "[meter.site-meter]\nblock_cipher_key = \"{EK}\"\nauthentication_key = \"{AK}\"\npassword = \"00000000\"\n"
        ),
    );
    for (client, auth, extra) in [("32", "low", &[][..]), ("48", "high-gmac", &["--ciphering"][..])] {
        let out = read(client, auth, extra, Some(&wrong));
        assert_eq!(out.status.code(), Some(1), "{auth}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("association failed"), "{auth}: {err}");
    }
}

#[test]
fn a_meter_that_loses_every_fourth_reply_is_still_read_completely_over_hdlc() {
    let (_sim, port) = simulate_dlms("", &["--drop-every", "4"]);
    let out = amid()
        .args(["read", "--profile", "generic-iec62056", "--media", &format!("tcp://127.0.0.1:{port}")])
        .args(["--timeout", "300ms", "--retries", "3", "--format", "json", "--profile-since", "6h"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.iter().filter(|l| l["unit"] == "V").count(), 3, "three voltages");
    let intervals = lines.iter().filter(|l| l["name"] == "obis_1_0_1_8_0").count();
    assert!((24..=25).contains(&intervals), "six hours of 15-min entries, once each: {intervals}");
    assert!(String::from_utf8_lossy(&out.stderr).trim().is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_daemon_killed_or_stopped_in_the_middle_of_a_catch_up_resumes_without_a_gap() {
    // A slow meter (50 ms per reply) and a month to read: SIGKILL lands between two committed windows.
    let (_sim, port) = simulate_dlms("?framing=wrapper", &["--delay", "50ms"]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("amid.toml");
    std::fs::write(
        &config,
        format!(
            "[site]\nid = \"crash\"\ndata_dir = \"data\"\n[[bus]]\nid = \"d\"\nmedia = \"tcp://127.0.0.1:{port}?framing=wrapper\"\n\
             timeout = \"2s\"\n[[meter]]\nid = \"m\"\nbus = \"d\"\nprofile = \"generic-iec62056\"\ninterval = \"1s\"\n\
             profile_backfill = \"20d\"\n"
        ),
    )
    .unwrap();
    let store = db(dir.path());
    let mark =
        || query_i64(&store, &format!("SELECT last_ms FROM profile_marks WHERE meter = 'm' AND profile = '{PROFILE}'"));
    let now = chrono::Utc::now().timestamp_millis();
    let mut daemon = start_daemon(&config, &[]);
    wait_until(60, "the first window", || mark() > 0);
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    let killed_at = mark();
    assert!(killed_at < now - 86_400_000, "the catch-up was still running when killed ({killed_at})");
    let rows = profile_rows(&store, "m");
    assert_eq!(*rows.keys().last().unwrap(), killed_at, "the mark is the last interval committed");

    // Restarted, then stopped politely in the middle: the window in flight finishes, the association is
    // released, the daemon exits at once (not after the shutdown grace period).
    let daemon = start_daemon(&config, &[]);
    wait_until(60, "the catch-up to go on", || mark() > killed_at);
    let t0 = Instant::now();
    let log = daemon.stop();
    assert!(t0.elapsed() < Duration::from_secs(5), "SIGTERM took {:?}", t0.elapsed());
    assert!(!log.iter().any(|l| l.contains("abandoned") || l.contains("poll failed")), "{log:#?}");
    let stopped_at = mark();
    assert!(stopped_at < now - 86_400_000, "the catch-up was still running when stopped ({stopped_at})");

    let daemon = start_daemon(&config, &[]);
    let newest = chrono::Utc::now().timestamp_millis().div_euclid(PERIOD_MS) * PERIOD_MS;
    wait_until(90, "the catch-up to finish", || mark() >= newest);
    drop(daemon.stop());
    let rows = profile_rows(&store, "m");
    let first = *rows.keys().next().unwrap();
    let last = mark();
    let contiguous: Vec<i64> = (0..).map(|i| first + i * PERIOD_MS).take_while(|&t| t <= last).collect();
    assert_eq!(rows.keys().copied().collect::<Vec<_>>(), contiguous, "no gap where the daemon was killed");
    assert!(contiguous.len() >= 20 * 96, "{}", contiguous.len());
    assert!(rows.values().all(|c| c["1-0:1.8.0*255"].len() == 1), "each interval once");
}

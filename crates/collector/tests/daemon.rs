//! `amid run` end to end: simulated meters on two buses (`amid simulate` processes on loopback), the
//! daemon polling them, SQLite checked afterwards.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Starts `amid simulate` serving `profile` at `addresses` on a free port; returns the process and port.
fn simulate(profile: &str, framing_rtu: bool, addresses: &[u8], extra: &[&str]) -> (Proc, u16) {
    let port = free_port();
    let q = if framing_rtu { "?framing=rtu" } else { "" };
    let mut cmd = amid();
    cmd.args(["simulate", "--profile", profile, "--listen", &format!("tcp://127.0.0.1:{port}{q}")]);
    for a in addresses {
        cmd.args(["--address", &a.to_string()]);
    }
    let mut child = cmd.args(extra).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    wait_for_line(&mut child, "simulating");
    wait_port(port);
    (Proc(child), port)
}

struct Daemon {
    child: std::process::Child,
    log: std::sync::mpsc::Receiver<String>,
}

fn start_daemon(config: &Path) -> Daemon {
    let mut child = amid()
        .args(["run", "--config", config.to_str().unwrap()])
        .env("AMI_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            eprintln!("amid: {line}");
            let _ = tx.send(line);
        }
    });
    Daemon { child, log: rx }
}

impl Daemon {
    /// SIGTERM, wait for exit; returns the exit code and every log line.
    fn terminate(mut self) -> (Option<i32>, Vec<String>) {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        let t0 = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "amid did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        std::thread::sleep(Duration::from_millis(100));
        (status.code(), self.log.try_iter().collect())
    }
}

/// `field=value` from a tracing log line.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {name}="))? + name.len() + 2;
    line[at..].split_whitespace().next()
}

/// Readings per meter, with their timestamps in ms.
fn stored(db: &Path) -> HashMap<String, Vec<i64>> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn.prepare("SELECT meter, ts_ms FROM readings ORDER BY ts_ms").unwrap();
    let mut out: HashMap<String, Vec<i64>> = HashMap::new();
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))).unwrap() {
        let (m, ts) = row.unwrap();
        out.entry(m).or_default().push(ts);
    }
    out
}

#[test]
fn dead_meter_does_not_starve_its_neighbours_and_sigterm_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Bus A (Modbus TCP): a live SDM630 at 1; the config also names a meter at 9 that nobody answers.
    let (_sim_a, port_a) = simulate("eastron-sdm630", false, &[1], &[]);
    // Bus B (RTU over TCP): a live SDM120 at 1.
    let (_sim_b, port_b) = simulate("eastron-sdm120", true, &[1], &[]);
    let config = dir.path().join("amid.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[site]
id = "test-site"
data_dir = "data"

[[bus]]
id = "a"
media = "tcp://127.0.0.1:{port_a}"
timeout = "300ms"
retries = 2

[[bus]]
id = "b"
media = "tcp://127.0.0.1:{port_b}?framing=rtu"
timeout = "300ms"

[[meter]]
id = "dead"
bus = "a"
profile = "eastron-sdm630"
address = 9
interval = "1s"

[[meter]]
id = "incomer"
bus = "a"
profile = "eastron-sdm630"
address = 1
interval = "1s"

[[meter]]
id = "pv"
bus = "b"
profile = "eastron-sdm120"
address = 1
interval = "1s"
"#
        ),
    )
    .unwrap();

    let daemon = start_daemon(&config);
    std::thread::sleep(Duration::from_millis(6500));
    let (code, log) = daemon.terminate();
    assert_eq!(code, Some(0), "SIGTERM must end amid with exit code 0");

    let db = dir.path().join("data/readings.db");
    let rows = stored(&db);

    // Every reading the daemon reported as read is in SQLite: nothing lost at SIGTERM.
    let mut read_values: HashMap<String, usize> = HashMap::new();
    for l in log.iter().filter(|l| l.contains(" read ") || l.ends_with(" read")) {
        if let (Some(m), Some(v)) = (field(l, "meter"), field(l, "values")) {
            *read_values.entry(m.to_string()).or_default() += v.parse::<usize>().unwrap();
        }
    }
    for (meter, n) in &read_values {
        assert_eq!(rows.get(meter).map_or(0, Vec::len), *n, "meter {meter}: readings read vs stored");
    }
    assert!(!rows.contains_key("dead"), "the dead meter has no readings");

    // Bus B is never held up by the dead meter on bus A: a poll at (almost) every 1-s slot, each taken
    // within 300 ms of its slot.
    let pv = &rows["pv"];
    let mut slots: Vec<i64> = pv.iter().map(|ts| ts / 1000).collect();
    slots.dedup();
    assert!(slots.len() >= 5, "pv polled at only {} slots: {slots:?}", slots.len());
    for ts in pv {
        assert!(ts % 1000 < 300, "pv reading at {ts} is {} ms late for its slot", ts % 1000);
    }
    // The live neighbour on the dead meter's own bus is still read (in turn, after the dead one's retries).
    assert!(rows.get("incomer").map_or(0, Vec::len) >= 2 * 38, "incomer: {:?}", rows.get("incomer").map(Vec::len));

    // The dead meter's failures are on record.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (fails, err): (i64, String) = conn
        .query_row("SELECT consecutive_failures, last_error FROM meter_status WHERE meter = 'dead'", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert!(fails >= 1, "dead meter failures: {fails}");
    assert!(err.contains("no reply"), "{err}");
    let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(ok, "ok");

    // Link counters per bus and per meter are kept, and `amid status` shows them to an operator.
    let (timeouts, replies): (i64, i64) = conn
        .query_row("SELECT timeouts, replies FROM link_counters WHERE bus = 'a' AND meter = 'dead'", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert!(timeouts >= 3 && replies == 0, "dead: {timeouts} timeouts, {replies} replies");
    let pv_replies: i64 =
        conn.query_row("SELECT replies FROM link_counters WHERE bus = 'b' AND meter = ''", [], |r| r.get(0)).unwrap();
    assert!(pv_replies >= 5, "bus b replies {pv_replies}");
    let out = amid().args(["status", "--config", config.to_str().unwrap()]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dead_line = text.lines().find(|l| l.starts_with("dead ")).unwrap_or_else(|| panic!("{text}"));
    assert!(dead_line.contains("never") && dead_line.contains("no reply"), "{dead_line}");
}

#[test]
fn config_errors_name_the_line_and_key_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("amid.toml");
    std::fs::write(&config, "[site]\nid = \"s\"\n\n[[bus]]\nid = \"a\"\nmedia = \"tcp://127.0.0.1\"\n").unwrap();
    let out = amid().args(["run", "--config", config.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("amid.toml:6: bus[0].media: expected tcp://host:port"), "{err}");

    std::fs::write(
        &config,
        "[site]\nid = \"s\"\n[[bus]]\nid = \"a\"\nmedia = \"tcp://127.0.0.1:1\"\n[[meter]]\nid = \"m\"\nbus = \"a\"\nprofile = \"no-such-meter\"\n",
    )
    .unwrap();
    let out = amid().args(["run", "--config", config.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("amid.toml:6: meter[0].profile:") && err.contains("no-such-meter"), "{err}");
}

//! The README's first command, `amid demo`, works: simulated meters, the daemon, the store, a clean stop.

mod common;

use common::*;

#[test]
fn demo_polls_every_simulated_meter_and_stops_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let out = amid()
        .args(["demo", "--duration", "4s", "--interval", "1s", "--data-dir", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("stopped:") && stdout.contains(" 0 failed"), "{stdout}\n{stderr}");
    assert!(stderr.trim().is_empty(), "the demo logs no warnings: {stderr}");
    let conn = rusqlite::Connection::open(dir.path().join("data/readings.db")).unwrap();
    let meters: Vec<(String, i64)> = conn
        .prepare("SELECT meter, COUNT(DISTINCT ts_ms / 1000) FROM readings GROUP BY meter ORDER BY meter")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let names: Vec<&str> = meters.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(names, ["feeder", "heating", "hvac", "incomer", "pv", "water", "workshop"], "{meters:?}");
    let heat_unit: String = conn
        .query_row("SELECT unit FROM readings WHERE meter = 'heating' AND obis = '6-0:1.0.0*255' LIMIT 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(heat_unit, "Wh", "the M-Bus heat meter's energy");
    assert!(stdout.contains("dashboard: http://127.0.0.1:"), "{stdout}");
    // The readings went up to the embedded ami-central.
    let sent: i64 = conn.query_row("SELECT COUNT(*) FROM readings WHERE sent = 1", [], |r| r.get(0)).unwrap();
    let central = rusqlite::Connection::open(dir.path().join("central.db")).unwrap();
    let at_central: i64 = central.query_row("SELECT COUNT(*) FROM readings", [], |r| r.get(0)).unwrap();
    assert!(sent > 0 && at_central >= sent, "sent {sent}, at central {at_central}");
    for (m, polls) in &meters {
        assert!(*polls >= 2, "{m} polled at only {polls} slots");
    }
}

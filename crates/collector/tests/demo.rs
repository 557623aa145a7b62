//! The README's first command, `amid demo`, works: simulated meters (Modbus, M-Bus, DLMS/COSEM), the
//! daemon, the store, a clean stop.

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
    // tenant-a and tenant-b: the Mercury 230 and 234 behind an RS-485 gateway (tests/mercury_run.rs checks them).
    assert_eq!(
        names,
        ["feeder", "grid", "heating", "hvac", "incomer", "pv", "tenant-a", "tenant-b", "water", "workshop"],
        "{meters:?}"
    );
    let heat_unit: String = conn
        .query_row("SELECT unit FROM readings WHERE meter = 'heating' AND obis = '6-0:1.0.0*255' LIMIT 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(heat_unit, "Wh", "the M-Bus heat meter's energy");
    assert!(stdout.contains("dashboard: http://127.0.0.1:"), "{stdout}");
    // The DLMS meter (HLS-GMAC with glo-ciphering): registers with the meter's units, and its 15-minute load
    // profile backfilled for the last day, on quarter-hour boundaries.
    assert!(stdout.contains("grid (DLMS/COSEM"), "{stdout}");
    let unit: String = conn
        .query_row("SELECT unit FROM readings WHERE meter = 'grid' AND obis = '1-0:32.7.0*255' LIMIT 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(unit, "V");
    let (intervals, off_boundary): (i64, i64) = conn
        .query_row(
            "SELECT COUNT(*), SUM(ts_ms % 900000 != 0) FROM readings WHERE meter = 'grid' AND name = 'obis_1_0_1_8_0'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!((96..=97).contains(&intervals) && off_boundary == 0, "{intervals} intervals, {off_boundary} off");
    let mode = std::fs::metadata(dir.path().join("secrets.toml")).unwrap();
    #[cfg(unix)]
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777, 0o600, "the demo keys file");
    // The readings went up to the embedded ami-central.
    let sent: i64 = conn.query_row("SELECT COUNT(*) FROM readings WHERE sent = 1", [], |r| r.get(0)).unwrap();
    let central = rusqlite::Connection::open(dir.path().join("central.db")).unwrap();
    let at_central: i64 = central.query_row("SELECT COUNT(*) FROM readings", [], |r| r.get(0)).unwrap();
    assert!(sent > 0 && at_central >= sent, "sent {sent}, at central {at_central}");
    for (m, polls) in &meters {
        assert!(*polls >= 2, "{m} polled at only {polls} slots");
    }
}

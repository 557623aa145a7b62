//! M-Bus in the daemon and on the command line: `amid read` reads a simulated multi-telegram heat meter
//! with the generic M-Bus profile, and `amid run` with a Modbus line and an M-Bus line stores both with
//! OBIS codes and units.

mod common;

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ami_sim::mbus::{spawn_mbus_tcp, MbusFaults, MbusLine, MbusMeterSpec};
use common::*;

async fn mbus_line(faults: MbusFaults) -> std::net::SocketAddr {
    let mut heat = MbusMeterSpec::heat_meter(5, 12_345_678);
    heat.telegrams = 3;
    let water = MbusMeterSpec::water_meter(6, 87_654_321);
    let line = MbusLine::with_meters([heat, water]).unwrap();
    let (addr, task) = spawn_mbus_tcp("127.0.0.1:0", Arc::new(Mutex::new(line)), faults).await.unwrap();
    std::mem::forget(task); // serves until the test process ends
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_gets_every_record_of_a_multi_telegram_meter_even_when_every_second_reply_is_lost() {
    let addr = mbus_line(MbusFaults { drop_every_nth: Some(2), ..MbusFaults::default() }).await;
    let out = tokio::task::spawn_blocking(move || {
        amid()
            .args(["read", "--profile", "generic-mbus", "--media", &format!("tcp://{addr}"), "--address", "5"])
            .args(["--format", "json", "--timeout", "200ms", "--retries", "3"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 10, "all 10 records of the 3 telegrams, once each: {lines:#?}");
    let energy = lines.iter().find(|l| l["obis"] == "6-0:1.0.0*255").expect("heat energy");
    assert_eq!(energy["unit"], "Wh");
    assert!(energy["value"].as_f64().unwrap() >= 12_345_000.0, "{energy}");
    let mut obis: Vec<&str> = lines.iter().map(|l| l["obis"].as_str().unwrap()).collect();
    obis.sort_unstable();
    obis.dedup();
    assert_eq!(obis.len(), 10, "unique OBIS codes");

    // By secondary address too.
    let out = tokio::task::spawn_blocking(move || {
        amid()
            .args(["read", "--profile", "generic-mbus", "--media", &format!("tcp://{addr}")])
            .args(["--secondary", "87654321", "--format", "json", "--timeout", "200ms", "--retries", "3"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = json_lines(&out.stdout);
    assert!(
        lines.iter().any(|l| l["obis"].as_str().is_some_and(|o| o.starts_with("8-0:1.0.0")) && l["unit"] == "m3"),
        "{lines:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_stores_modbus_and_mbus_meters_on_separate_buses_with_obis_and_units() {
    let mbus = mbus_line(MbusFaults::default()).await;
    let port = free_port();
    let mut sim = amid()
        .args(["simulate", "--profile", "eastron-sdm120", "--listen", &format!("tcp://127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_line(&mut sim, "simulating");
    let _sim = Proc(sim);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("amid.toml");
    std::fs::write(
        &config,
        format!(
            "[site]\nid = \"mixed\"\ndata_dir = \"data\"\n\
             [[bus]]\nid = \"modbus\"\nmedia = \"tcp://127.0.0.1:{port}\"\n\
             [[bus]]\nid = \"mbus\"\nmedia = \"tcp://{mbus}\"\ntimeout = \"300ms\"\n\
             [[meter]]\nid = \"pv\"\nbus = \"modbus\"\nprofile = \"eastron-sdm120\"\ninterval = \"1s\"\n\
             [[meter]]\nid = \"heat\"\nbus = \"mbus\"\nprofile = \"generic-mbus\"\naddress = 5\ninterval = \"1s\"\n\
             [[meter]]\nid = \"water\"\nbus = \"mbus\"\nprofile = \"generic-mbus\"\nsecondary = \"87654321\"\ninterval = \"1s\"\n"
        ),
    )
    .unwrap();
    let db = dir.path().join("data/readings.db");
    let mut daemon = amid().args(["run", "--config", config.to_str().unwrap()]).stderr(Stdio::null()).spawn().unwrap();
    let count = |meter: &str| -> i64 {
        rusqlite::Connection::open(&db)
            .and_then(|c| c.query_row("SELECT COUNT(*) FROM readings WHERE meter = ?1", [meter], |r| r.get(0)))
            .unwrap_or(0)
    };
    let t0 = Instant::now();
    while !(count("pv") >= 24 && count("heat") >= 20 && count("water") >= 10) {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "pv {} heat {} water {}",
            count("pv"),
            count("heat"),
            count("water")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status().unwrap();
    assert!(daemon.wait().unwrap().success());
    let conn = rusqlite::Connection::open(&db).unwrap();
    let unit_of = |meter: &str, obis: &str| -> String {
        conn.query_row("SELECT unit FROM readings WHERE meter = ?1 AND obis = ?2 LIMIT 1", [meter, obis], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{meter} {obis}: {e}"))
    };
    assert_eq!(unit_of("pv", "1-0:32.7.0*255"), "V");
    assert_eq!(unit_of("heat", "6-0:1.0.0*255"), "Wh");
    assert_eq!(unit_of("water", "8-0:1.0.0*255"), "m3");
    let kind: String = conn
        .query_row("SELECT kind FROM readings WHERE meter = 'heat' AND obis = '6-0:1.0.0*255' LIMIT 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(kind, "counter");
}

fn simulate(profile: &str, listen: &str, addresses: &[u8]) -> Proc {
    let mut cmd = amid();
    cmd.args(["simulate", "--profile", profile, "--listen", listen]);
    for a in addresses {
        cmd.args(["--address", &a.to_string()]);
    }
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    wait_for_line(&mut child, "simulating");
    Proc(child)
}

#[test]
fn amid_simulate_serves_mbus_meters_over_tcp_and_a_pty() {
    // Several addresses on one TCP listener, the generic profile.
    let port = free_port();
    let _sim = simulate("generic-mbus", &format!("tcp://127.0.0.1:{port}"), &[3, 4]);
    for a in ["3", "4"] {
        let out = amid()
            .args(["read", "--profile", "generic-mbus", "--media", &format!("tcp://127.0.0.1:{port}"), "--address", a])
            .args(["--format", "json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "address {a}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(json_lines(&out.stdout).iter().any(|l| l["obis"] == "6-0:1.0.0*255"), "address {a}");
    }
    // A concrete profile on a pty: every value the profile selects is served and read back.
    let dir = tempfile::tempdir().unwrap();
    let (_socat, a, b) = pty_pair(dir.path());
    let _pty_sim = simulate("kamstrup-multical-601", &format!("serial://{}", b.display()), &[1]);
    let out = amid()
        .args(["read", "--profile", "kamstrup-multical-601", "--media", &format!("serial://{}", a.display())])
        .args(["--address", "1", "--format", "json", "--timeout", "1s"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The simulator serves every record the profile selects by DIF/VIF except dates and times.
    let profile = ami_device::mbus::resolve_mbus_profile("kamstrup-multical-601", &[repo().join("devices")]).unwrap();
    let served: Vec<&str> = profile
        .values
        .iter()
        .filter(|v| v.select.dif_vif.as_deref().is_some_and(|dv| !ami_collector::demo::is_date_vif(dv)))
        .map(|v| v.name.as_str())
        .collect();
    let read: Vec<String> = json_lines(&out.stdout).iter().map(|l| l["name"].as_str().unwrap().to_string()).collect();
    for name in &served {
        assert!(read.iter().any(|r| r == name), "{name} not read: {stderr}");
    }
    assert!(served.len() >= 10, "{served:?}");
}

#[test]
fn amid_simulate_multi_telegram_meter_that_drops_every_second_reply_is_read_completely() {
    let port = free_port();
    let mut child = amid()
        .args(["simulate", "--profile", "generic-mbus", "--listen", &format!("tcp://127.0.0.1:{port}")])
        .args(["--address", "9", "--telegrams", "3", "--drop-every", "2"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_line(&mut child, "simulating");
    let _sim = Proc(child);
    let out = amid()
        .args(["read", "--profile", "generic-mbus", "--media", &format!("tcp://127.0.0.1:{port}"), "--address", "9"])
        .args(["--format", "json", "--timeout", "200ms", "--retries", "3"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 10, "the heat meter's 10 records, once each");
}

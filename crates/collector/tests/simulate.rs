//! `amid read` against `amid simulate` over every framing (Modbus TCP, RTU over TCP, RTU on a pty pair):
//! values pinned in the simulator with `--set` come back decoded exactly.

mod common;

use std::process::Stdio;

use common::*;

/// Values pinned in the simulator (tests/data/types.xml), exactly representable in their encodings.
const PINNED: &[(&str, f64)] = &[
    ("u16_plain", 54321.0),
    ("i16_scaled", -20.0),
    ("u32_low_first", 123_456.0),
    ("i32_high_first", -123_456.0),
    ("u64_plain", 4_294_967_298.0),
    ("i64_plain", -2.0),
    ("power", 230.5),
    ("power_byte_swapped", 230.5),
    ("energy", 1_234_500.0),
    ("offset_value", 5.0),
    ("frequency", 50.0),
    ("relay_state", 1.0),
];

fn profile() -> String {
    repo().join("crates/collector/tests/data/types.xml").display().to_string()
}

fn start_simulator(listen: &str) -> Proc {
    let mut cmd = amid();
    cmd.args(["simulate", "--profile", &profile(), "--listen", listen, "--address", "7"]);
    for (name, v) in PINNED {
        cmd.args(["--set", &format!("{name}={v}")]);
    }
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
    wait_for_line(&mut child, "simulating");
    Proc(child)
}

fn read_and_check(media: &str) {
    let out = amid()
        .args(["read", "--profile", &profile(), "--media", media, "--address", "7", "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "amid read failed: {}", String::from_utf8_lossy(&out.stderr));
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), PINNED.len(), "{lines:?}");
    for (l, (name, want)) in lines.iter().zip(PINNED) {
        assert_eq!(l["name"], *name);
        assert_eq!(l["value"].as_f64(), Some(*want), "{name}: {l}");
    }
}

#[test]
fn reads_amid_simulate_over_modbus_tcp() {
    let port = free_port();
    let _sim = start_simulator(&format!("tcp://127.0.0.1:{port}"));
    read_and_check(&format!("tcp://127.0.0.1:{port}"));
}

#[test]
fn reads_amid_simulate_over_rtu_over_tcp() {
    let port = free_port();
    let _sim = start_simulator(&format!("tcp://127.0.0.1:{port}?framing=rtu"));
    read_and_check(&format!("tcp://127.0.0.1:{port}?framing=rtu"));
}

#[test]
fn reads_amid_simulate_over_rtu_on_a_pty_pair() {
    let dir = tempfile::tempdir().unwrap();
    let (_socat, a, b) = pty_pair(dir.path());
    let _sim = start_simulator(&format!("serial://{}?baud=9600", b.display()));
    read_and_check(&format!("serial://{}?baud=9600", a.display()));
}

#[test]
fn simulate_rejects_bad_options_with_exit_2() {
    for args in
        [vec!["--set", "no_such_value=1"], vec!["--set", "power"], vec!["--drop-rate", "1.5"], vec!["--address", "0"]]
    {
        let out = amid()
            .args(["simulate", "--profile", &profile(), "--listen", "tcp://127.0.0.1:0"])
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn control_switches_the_simulated_relay_and_read_shows_it() {
    let port = free_port();
    let listen = format!("tcp://127.0.0.1:{port}");
    let mut child = amid()
        .args(["simulate", "--profile", &profile(), "--listen", &listen, "--address", "3"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_line(&mut child, "simulating");
    let _sim = Proc(child);
    let relay = || {
        let out = amid()
            .args(["read", "--profile", &profile(), "--media", &listen, "--address", "3", "--format", "json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        json_lines(&out.stdout).into_iter().find(|l| l["name"] == "relay_state").unwrap()["value"].as_f64()
    };
    for (state, want) in [("off", 0.0), ("on", 1.0), ("off", 0.0)] {
        let out = amid()
            .args(["control", "--profile", &profile(), "--media", &listen, "--address", "3"])
            .args(["--name", "relay", "--state", state])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(relay(), Some(want), "after --state {state}");
    }
    let out = amid()
        .args(["control", "--profile", &profile(), "--media", &listen, "--address", "3"])
        .args(["--name", "valve", "--state", "on"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no control \"valve\" (controls: relay)"));
}

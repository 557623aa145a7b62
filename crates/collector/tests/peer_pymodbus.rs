//! `amid read` against pymodbus 3.16.1, an independent Modbus implementation, over every framing:
//! Modbus TCP, RTU over TCP, and RTU on a pty pair. The test writes known register words into the slave
//! and checks the decoded values.

mod common;

use std::collections::HashMap;

use common::*;
use serde_json::json;

/// Register words for tests/data/types.xml, and the value each decodes to.
fn slave_data() -> serde_json::Value {
    json!({
        "holding": { "0": [
            54321,                      // 0  u16_plain 54321
            0xFF38,                     // 1  i16_scaled -200 * 0.1 = -20
            0xE240, 0x0001,             // 2  u32_low_first 123456
            0xFFFE, 0x1DC0,             // 4  i32_high_first -123456
            0, 1, 0, 2,                 // 6  u64_plain 4294967298
            0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE, // 10 i64_plain -2
            0x4366, 0x8000,             // 14 power f32 230.5
            0x6643, 0x0080,             // 16 power_byte_swapped 230.5
            0x4093, 0x4A00, 0, 0,       // 18 energy f64 1234.5 * 1000
            1000                        // 22 offset_value 1000 * 0.01 - 5 = 5
        ]},
        "input": { "0": [0x4248, 0x0000] }, // frequency 50.0
        "coils": { "0": [1] }              // relay_state 1
    })
}

fn expected() -> HashMap<&'static str, f64> {
    HashMap::from([
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
    ])
}

fn profile() -> String {
    repo().join("crates/collector/tests/data/types.xml").display().to_string()
}

fn read_and_check(media: &str) {
    let out = amid()
        .args(["read", "--profile", &profile(), "--media", media, "--address", "1", "--format", "json"])
        .args(["--meter-id", "peer", "--timeout", "2s"])
        .output()
        .unwrap();
    assert!(out.status.success(), "amid read failed: {}", String::from_utf8_lossy(&out.stderr));
    let lines = json_lines(&out.stdout);
    let want = expected();
    assert_eq!(lines.len(), want.len(), "{lines:?}");
    for l in &lines {
        let name = l["name"].as_str().unwrap();
        let v = l["value"].as_f64().unwrap_or_else(|| panic!("{name}: not a number: {l}"));
        let w = want[name];
        assert!((v - w).abs() <= 1e-9 * w.abs().max(1.0), "{name}: got {v}, want {w}");
        assert_eq!(l["meter"], "peer");
        assert_eq!(l["quality"], "ok");
    }
    let by_name: HashMap<_, _> = lines.iter().map(|l| (l["name"].as_str().unwrap().to_string(), l)).collect();
    assert_eq!(by_name["power"]["obis"], "1-0:1.7.0*255");
    assert_eq!(by_name["power"]["unit"], "W");
    assert_eq!(by_name["energy"]["unit"], "Wh");
}

#[test]
fn reads_pymodbus_over_modbus_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _slave = pymodbus_slave(dir.path(), &slave_data(), &["--framer", "socket", "--tcp", &port.to_string()]);
    wait_port(port);
    read_and_check(&format!("tcp://127.0.0.1:{port}"));
}

#[test]
fn reads_pymodbus_over_rtu_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _slave = pymodbus_slave(dir.path(), &slave_data(), &["--framer", "rtu", "--tcp", &port.to_string()]);
    wait_port(port);
    read_and_check(&format!("tcp://127.0.0.1:{port}?framing=rtu"));
}

#[test]
fn reads_pymodbus_over_rtu_on_a_pty_pair() {
    let dir = tempfile::tempdir().unwrap();
    let (_socat, a, b) = pty_pair(dir.path());
    let _slave = pymodbus_slave(dir.path(), &slave_data(), &["--framer", "rtu", "--serial", b.to_str().unwrap()]);
    read_and_check(&format!("serial://{}?baud=9600&parity=none&data=8&stop=1", a.display()));
}

#[test]
fn exit_code_1_and_a_clear_message_when_the_meter_does_not_answer() {
    let port = free_port();
    // Nothing listens: connection refused.
    let out =
        amid().args(["read", "--profile", &profile(), "--media", &format!("tcp://127.0.0.1:{port}")]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));

    // A listener that never answers: timeout.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let out = amid()
        .args(["read", "--profile", &profile(), "--media", &format!("tcp://127.0.0.1:{port}")])
        .args(["--timeout", "200ms", "--retries", "1", "--meter-id", "dead"])
        .output()
        .unwrap();
    drop(listener);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("dead") && err.contains("no reply"), "{err}");
}

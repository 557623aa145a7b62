//! `amid decode --protocol modbus`: a captured frame explained for a human; bad input exits 2.

mod common;

use common::*;

#[test]
fn decodes_an_rtu_request_and_a_tcp_response() {
    // Modbus spec V1.1b3 6.3: read 3 holding registers from address 0x006B of unit 17.
    let out = amid().args(["decode", "--protocol", "modbus", "--hex", "11 03 00 6B 00 03 76 87"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("read holding registers") && text.contains("107 (0x006B)") && text.contains("ok"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("capture.hex");
    std::fs::write(&file, "# reply captured on the gateway\n0001 0000 0009 01 03 06\n022B 0000 0064\n").unwrap();
    let out = amid()
        .args(["decode", "--protocol", "modbus", "--framing", "tcp", "--hex-file", file.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("0x022B = 555") && text.contains("0x0064 = 100"), "{text}");
}

#[test]
fn bad_hex_and_bad_crc_are_reported() {
    let out = amid().args(["decode", "--protocol", "modbus", "--hex", "1 2 3"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("odd number of hex digits"));
    // A corrupted CRC is described, not refused: the technician needs to see it.
    let out = amid().args(["decode", "--protocol", "modbus", "--hex", "11 03 00 6B 00 03 76 88"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("CRC") && text.to_lowercase().contains("bad"), "{text}");
}

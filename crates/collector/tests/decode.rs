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

fn corpus(dir: &str, name: &str) -> std::path::PathBuf {
    repo().join("../shared/corpora/mbus-libmbus").join(dir).join(name)
}

#[test]
fn decodes_an_mbus_telegram_as_json_lines_in_telegram_order() {
    let file = corpus("test-frames", "EFE_Engelmann-WaterStar.hex");
    let out = amid()
        .args(["decode", "--protocol", "mbus", "--format", "json", "--hex-file", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = json_lines(&out.stdout);
    let h = &lines[0];
    assert_eq!(
        (h["id"].as_str(), h["manufacturer"].as_str(), h["access_number"].as_u64()),
        (Some("4990254"), Some("EFE"), Some(12))
    );
    assert_eq!(lines.len(), 1 + 12);
    let volume = &lines[3];
    assert_eq!(volume["quantity"], "Volume");
    assert_eq!(volume["unit"], "m3");
    assert_eq!(volume["value"].as_f64(), Some(0.332));
    assert_eq!(volume["function"], "Instantaneous value");
    assert_eq!(volume["storage"], 0);
    assert_eq!(lines[4]["storage"], 1, "the storage-1 volume follows, in telegram order");
    for l in &lines[1..] {
        for key in ["function", "storage", "tariff", "subunit", "unit", "quantity", "value"] {
            assert!(l.get(key).is_some(), "{key} missing in {l}");
        }
    }
}

#[test]
fn broken_mbus_frames_are_clean_errors() {
    let dir = repo().join("../shared/corpora/mbus-libmbus/error-frames");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "hex") {
            continue;
        }
        let out = amid().args(["decode", "--protocol", "mbus", "--hex-file", p.to_str().unwrap()]).output().unwrap();
        assert!(matches!(out.status.code(), Some(0 | 2)), "{}: {:?}", p.display(), out.status);
        assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"), "{}", p.display());
        n += 1;
    }
    assert!(n >= 10, "only {n} error frames found in {}", dir.display());
}

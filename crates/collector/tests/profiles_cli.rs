//! `amid profiles check`: the shipped profiles pass; broken ones fail with exit code 2 and messages that
//! name the file, line and column of the mistake.

mod common;

use common::*;

fn check(files: &[&std::path::Path]) -> (Option<i32>, String, String) {
    let out = amid().arg("profiles").arg("check").args(files).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn shipped_profiles_pass() {
    let dir = repo().join("devices");
    let (code, out, err) = check(&[&dir]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("profile(s) ok"), "{out}");
}

const GOOD_HEAD: &str = r#"<?xml version="1.0"?>
<profile id="t" protocol="modbus" manufacturer="ami" model="t" document="test">
"#;

#[test]
fn broken_profiles_name_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, String, &str)] = &[
        (
            "bad-xml.xml",
            format!("{GOOD_HEAD}  <value name=\"v\" obis=\"1-0:1.8.0\" unit=\"Wh\">\n    <modbus table=\"input\" register=\"0\" type=\"f32\">\n  </value>\n</profile>\n"),
            ":5:",
        ),
        (
            "unknown-type.xml",
            format!("{GOOD_HEAD}  <value name=\"v\" obis=\"1-0:1.8.0\" unit=\"Wh\">\n    <modbus table=\"input\" register=\"0\" type=\"f33\"/>\n  </value>\n</profile>\n"),
            ":4:46: unknown type \"f33\" (expected one of u16, i16, u32, i32, u64, i64, f32, f64)",
        ),
        (
            "missing-register.xml",
            format!("{GOOD_HEAD}  <value name=\"v\" obis=\"1-0:1.8.0\" unit=\"Wh\">\n    <modbus table=\"input\" type=\"f32\"/>\n  </value>\n</profile>\n"),
            ":4:5: missing attribute \"register\"",
        ),
        (
            "duplicate-name.xml",
            format!("{GOOD_HEAD}  <value name=\"v\" obis=\"1-0:1.8.0\" unit=\"Wh\">\n    <modbus table=\"input\" register=\"0\" type=\"f32\"/>\n  </value>\n  <value name=\"v\" obis=\"1-0:2.8.0\" unit=\"Wh\">\n    <modbus table=\"input\" register=\"2\" type=\"f32\"/>\n  </value>\n</profile>\n"),
            ":6:16: duplicate value name \"v\" (first defined at line 3)",
        ),
        (
            "unknown-attribute.xml",
            format!("{GOOD_HEAD}  <value name=\"v\" obis=\"1-0:1.8.0\" unit=\"Wh\">\n    <modbus table=\"input\" registr=\"0\" type=\"f32\"/>\n  </value>\n</profile>\n"),
            ":4:27: unknown attribute \"registr\"",
        ),
    ];
    for (file, text, want) in cases {
        let path = dir.path().join(file);
        std::fs::write(&path, text).unwrap();
        let (code, _, err) = check(&[&path]);
        assert_eq!(code, Some(2), "{file}: {err}");
        let expected = format!("{}{want}", path.display());
        assert!(err.contains(&expected), "{file}: expected {expected:?} in:\n{err}");
    }
}

#[test]
fn a_missing_path_is_bad_input() {
    let (code, _, err) = check(&[std::path::Path::new("/no/such/profile.xml")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("/no/such/profile.xml"), "{err}");
}

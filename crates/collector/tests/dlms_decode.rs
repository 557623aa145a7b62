//! `amid decode --protocol dlms`: an HDLC frame, a wrapper frame or a bare APDU printed for a human; bad
//! input is exit code 2 with the reason.

mod common;

use common::*;

fn decode(hex: &str) -> std::process::Output {
    amid().args(["decode", "--protocol", "dlms", "--hex", hex]).output().unwrap()
}

#[test]
fn decode_prints_an_hdlc_frame_a_wrapper_frame_and_an_apdu() {
    // SNRM from client 16 to server 1 (Green Book / Gurux: 7E A0 07 03 21 93 0F 01 7E).
    let out = decode("7E A0 07 03 21 93 0F 01 7E");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("SNRM"), "{text}");
    // Client SAP 16 to the management logical device 1.
    assert!(text.contains("client SAP 16") && text.contains("server upper 1"), "{text}");
    // GET.request-normal of 1-0:1.8.0*255 attribute 2 (class 3) inside a wrapper frame (source 16, dest 1).
    let out = decode("0001 0010 0001 000D C001C100030100010800FF0200");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("wrapper") && text.contains("wPort 16") && text.contains("wPort 1"), "{text}");
    assert!(text.contains("class 3 (Register), 1-0:1.8.0*255, attribute 2 (value)"), "{text}");
    // The same APDU bare.
    let out = decode("C001C100030100010800FF0200");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("1-0:1.8.0*255"));
}

#[test]
fn undecodable_dlms_bytes_are_bad_input() {
    // An HDLC frame with a broken checksum.
    let out = decode("7E A0 07 03 21 93 0F 02 7E");
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot decode") && err.contains("BAD: FCS expected 0x010F"), "{err}");
    let out = decode("7E A0");
    assert_eq!(out.status.code(), Some(2));
}

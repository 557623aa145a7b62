//! The libmbus capture corpus (`shared/corpora/mbus-libmbus`, 76 RSP_UD frames from real meters) through
//! the EN 13757-2 deframer: every test frame is one long frame that re-encodes byte for byte; every error and
//! unsupported frame gives a value or a clean error, never a panic.
//!
//! The corpus is looked up in `$AMI_MBUS_CORPUS`, then `testdata/mbus-libmbus` in the workspace, then
//! `../shared/corpora/mbus-libmbus` beside the workspace. A missing corpus fails the test (it is the
//! acceptance test of issue 4, it must not pass vacuously).

use std::path::{Path, PathBuf};

use ami_link::mbus::{control, Ci, Frame, FrameError, RspUdMatcher};
use ami_link::{Check, ReplyMatcher};

fn corpus() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let candidates = [
        std::env::var_os("AMI_MBUS_CORPUS").map(PathBuf::from),
        Some(workspace.join("testdata/mbus-libmbus")),
        Some(workspace.join("../shared/corpora/mbus-libmbus")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.join("test-frames").is_dir())
        .expect("M-Bus corpus not found: set AMI_MBUS_CORPUS to the mbus-libmbus directory")
}

/// `(file name, bytes)` of every `.hex` file in `dir`; `Err` for a file that is not valid hex.
fn frames(dir: &Path) -> Vec<(String, Result<Vec<u8>, String>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "hex"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let bytes = text
                .split_whitespace()
                .map(|t| {
                    if t.len() == 2 {
                        u8::from_str_radix(t, 16).map_err(|e| format!("{t}: {e}"))
                    } else {
                        Err(t.to_owned())
                    }
                })
                .collect::<Result<Vec<u8>, String>>();
            (p.file_name().unwrap().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn all_76_corpus_frames_decode_as_long_frames_and_reencode_byte_for_byte() {
    let frames = frames(&corpus().join("test-frames"));
    assert_eq!(frames.len(), 76, "test frames in the corpus");
    for (name, bytes) in frames {
        let bytes = bytes.unwrap_or_else(|e| panic!("{name}: not hex: {e}"));
        let frame = Frame::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let Frame::Long { c, a, ci, ref data } = frame else { panic!("{name}: not a long frame: {frame:?}") };
        assert!(control::is_rsp_ud(c), "{name}: C=0x{c:02X} is not RSP_UD");
        assert!(!data.is_empty(), "{name}");
        assert_eq!(frame.encode().unwrap(), bytes, "{name}: re-encoded");
        // What the master sees on the line: the matcher takes the frame from its own address or from any.
        assert_eq!(RspUdMatcher { address: Some(a) }.check(&bytes), Check::Complete { len: bytes.len() }, "{name}");
        assert_eq!(RspUdMatcher { address: None }.check(&bytes), Check::Complete { len: bytes.len() }, "{name}");
        assert!(
            matches!(RspUdMatcher { address: Some(a.wrapping_add(1)) }.check(&bytes), Check::Foreign { .. }),
            "{name}: another address is foreign"
        );
        // CI of a variable-data response (72 in 74 frames) or the old fixed-data response (73 in
        // manual_frame2/3).
        assert!(matches!(Ci::from(ci), Ci::ResponseLong | Ci::ResponseFixed), "{name}: CI 0x{ci:02X}");
        // Every proper prefix asks for more bytes.
        for n in [0, 1, 3, 4, 7, bytes.len() - 2, bytes.len() - 1] {
            assert_eq!(Frame::decode(&bytes[..n]), Ok(None), "{name}: prefix of {n}");
        }
        // One flipped data bit is a checksum error, never a different frame.
        let mut bad = bytes.clone();
        bad[8] ^= 0x01;
        assert!(matches!(Frame::decode(&bad), Err(FrameError::Checksum { .. })), "{name}");
    }
}

#[test]
fn error_frames_are_well_formed_links_or_clean_errors() {
    let frames = frames(&corpus().join("error-frames"));
    assert_eq!(frames.len(), 20, "error frames in the corpus");
    for (name, bytes) in frames {
        let bytes = bytes.unwrap_or_else(|e| panic!("{name}: not hex: {e}"));
        // The libmbus error frames are damaged in the application layer (premature end of a record, too
        // many DIFEs, application error codes): on the link layer each is a whole, valid RSP_UD.
        let frame = Frame::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(frame.c().is_some_and(control::is_rsp_ud), "{name}");
        assert_eq!(frame.encode().unwrap(), bytes, "{name}");
        // Cut anywhere, the deframer waits or refuses, it never returns a frame of other bytes.
        for n in 0..bytes.len() {
            assert!(matches!(Frame::parse(&bytes[..n]), Err(FrameError::Truncated { .. })), "{name} cut at {n}");
        }
    }
}

#[test]
fn unsupported_frames_give_clean_errors() {
    let frames = frames(&corpus().join("unsupported-frames"));
    assert_eq!(frames.len(), 7, "unsupported frames in the corpus");
    for (name, bytes) in frames {
        let Ok(bytes) = bytes else {
            // manual_frame1.hex starts with a one-digit token: not a frame at all.
            continue;
        };
        match Frame::parse(&bytes) {
            Ok(frame) => assert_eq!(frame.encode().unwrap(), bytes, "{name}"),
            Err(e) => assert!(!e.to_string().is_empty(), "{name}"),
        }
    }
    // invalid_length.hex: L = 0 is refused from the header alone.
    assert_eq!(Frame::decode(&[0x68, 0x00, 0x00, 0x68, 0x08, 0x16]), Err(FrameError::LengthTooSmall(0)));
}

//! The read-out's "more records follow" rule on the 76 real telegrams of the libmbus corpus: the record
//! walk of `client::more_records_follow` agrees with the full application decoder (`app`) on every frame
//! the decoder accepts, and finds DIF `1F` in 13 telegrams, where "the data ends with 1F" would be wrong
//! for 5 of them.

use std::path::{Path, PathBuf};

use ami_link::mbus::Frame;
use ami_protocols::mbus::app::decode_user_data;
use ami_protocols::mbus::client::more_records_follow;

fn corpus() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    [
        std::env::var_os("AMI_MBUS_CORPUS").map(PathBuf::from),
        Some(workspace.join("testdata/mbus-libmbus")),
        Some(workspace.join("../shared/corpora/mbus-libmbus")),
    ]
    .into_iter()
    .flatten()
    .find(|p| p.join("test-frames").is_dir())
    .expect("M-Bus corpus not found: set AMI_MBUS_CORPUS to the mbus-libmbus directory")
}

#[test]
fn more_records_rule_agrees_with_the_application_decoder_on_the_corpus() {
    let dir = corpus().join("test-frames");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "hex"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 76);
    let (mut more, mut compared) = (Vec::new(), 0);
    for path in files {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let bytes: Vec<u8> = std::fs::read_to_string(&path)
            .unwrap()
            .split_whitespace()
            .map(|t| u8::from_str_radix(t, 16).unwrap())
            .collect();
        let frame = Frame::parse(&bytes).unwrap();
        let (ci, data) = (frame.ci().unwrap(), frame.data());
        let ours = more_records_follow(ci, data);
        if let Ok(telegram) = decode_user_data(ci, data) {
            compared += 1;
            assert_eq!(ours, telegram.more_records_follow, "{name}: record walk and decoder disagree");
        }
        if ours {
            more.push(name);
        }
    }
    assert!(compared >= 70, "the decoder accepted only {compared} frames");
    eprintln!("{} telegrams announce more records: {more:?}", more.len());
    // 15 telegrams end with the byte 1F, but the naive "ends with 1F" rule is wrong both ways: Elster-F2
    // has DIF 1F followed by 41 bytes of manufacturer data (more records follow), and the four Itron
    // Cyble telegrams end with DIF 0F and manufacturer data `10 01 1F` (no more records).
    assert!(more.iter().any(|n| n == "Elster-F2"), "{more:?}");
    assert!(!more.iter().any(|n| n.contains("yble")), "{more:?}");
    assert_eq!(more.len(), 13, "{more:?}");
}

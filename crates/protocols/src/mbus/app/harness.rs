//! Decoder harness shared by the cargo-fuzz target `mbus_app` (`fuzz/`) and a seeded noise test, so CI
//! runs the same code without cargo-fuzz. Built for tests and with the `fuzzing` feature only.
//!
//! [`mbus_app`] feeds one byte string to [`decode_long_frame`] as received, and to [`decode_user_data`] as
//! the user data of every CI it handles (and of the CI the bytes start with). The bytes are also wrapped in a
//! valid long frame (length fields, checksum and stop byte right) so that mutations reach the record decoder
//! behind the envelope checks. It panics (on purpose: that is what a fuzzer reports) when a decoder panics
//! or breaks an invariant: a frame and its user data decode alike, the records account for no more bytes
//! than were received, and a telegram re-encoded from its records' raw bytes decodes to itself.

use super::{decode_long_frame, decode_user_data, AppError, Telegram};

/// Feeds `data` to the application-layer decoders and checks their invariants. Panics only on a bug.
pub fn mbus_app(data: &[u8]) {
    // As received from the wire.
    if let Ok(t) = decode_long_frame(data) {
        assert!(data.len() >= 9 && data.first() == Some(&0x68), "accepted a non-frame: {data:02X?}");
        let user = data.get(7..data.len() - 2).unwrap_or_default();
        check(data.get(6).copied().unwrap_or_default(), user, &t);
    }
    // As user data of each CI, whole and without its first byte (a CI the bytes may start with).
    let ci = data.first().copied().unwrap_or(0x72);
    let rest = data.get(1..).unwrap_or_default();
    for (ci, user) in [(0x72, data), (0x73, data), (0x70, data), (ci, rest)] {
        let direct = decode_user_data(ci, user);
        if let Ok(t) = &direct {
            check(ci, user, t);
        }
        // The same user data in a valid long frame decodes alike.
        if let Some(frame) = wrap(ci, user) {
            let framed = decode_long_frame(&frame);
            assert_eq!(format!("{framed:?}"), format!("{direct:?}"), "framed and bare user data differ");
        }
    }
}

/// `68 L L 68 08 01 CI user CS 16`, or `None` when the user data does not fit a long frame.
fn wrap(ci: u8, user: &[u8]) -> Option<Vec<u8>> {
    let len = u8::try_from(user.len().checked_add(3)?).ok()?;
    let mut frame = vec![0x68, len, len, 0x68, 0x08, 0x01, ci];
    frame.extend_from_slice(user);
    let cs = frame.get(4..)?.iter().fold(0u8, |s, b| s.wrapping_add(*b));
    frame.extend_from_slice(&[cs, 0x16]);
    Some(frame)
}

/// Invariants of a decoded telegram against the user data it came from.
fn check(ci: u8, user: &[u8], t: &Telegram) {
    let header = if ci == 0x73 { 16 } else { 12 };
    assert!(user.len() >= header, "CI {ci:#04x}: {} bytes gave a telegram", user.len());
    if ci == 0x73 {
        assert_eq!(t.records.len(), 2, "the fixed data structure has two counters");
        return;
    }
    let record_bytes: usize = t.records.iter().map(|r| r.dif_vif_raw.len() + r.raw.len()).sum();
    let special = t.manufacturer_data.as_ref().map_or(0, |d| d.len() + 1);
    assert!(header + record_bytes + special <= user.len(), "records claim more bytes than received");
    assert!(t.records.iter().all(|r| !r.dif_vif_raw.is_empty()), "a record without DIF");
    assert!(!t.more_records_follow || t.manufacturer_data.is_some(), "1F without its data");

    // Re-encode: header, each record's bytes, the special DIF and its data; no fillers. Same telegram.
    let mut again = user.get(..header).unwrap_or_default().to_vec();
    for r in &t.records {
        again.extend_from_slice(&r.dif_vif_raw);
        again.extend_from_slice(&r.raw);
    }
    if let Some(d) = &t.manufacturer_data {
        again.push(if t.more_records_follow { 0x1F } else { 0x0F });
        again.extend_from_slice(d);
    }
    let redecoded: Result<Telegram, AppError> = decode_user_data(ci, &again);
    // Debug text, not `==`: a real can be NaN.
    assert_eq!(format!("{redecoded:?}"), format!("{:?}", Ok::<_, AppError>(t)), "re-encoded telegram differs");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;
    use std::fs;
    use std::path::Path;

    /// Every frame of the libmbus corpus (test, error and unsupported frames), as `fuzz/seeds/mbus_app`.
    fn seeds() -> Vec<Vec<u8>> {
        let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/corpora/mbus-libmbus"));
        let mut out = Vec::new();
        for dir in ["test-frames", "error-frames", "unsupported-frames"] {
            let mut paths: Vec<_> = fs::read_dir(root.join(dir)).unwrap().map(|e| e.unwrap().path()).collect();
            paths.sort();
            for p in paths.iter().filter(|p| p.extension().is_some_and(|e| e == "hex")) {
                let text = fs::read_to_string(p).unwrap();
                out.push(text.split_whitespace().filter_map(|t| u8::from_str_radix(t, 16).ok()).collect());
            }
        }
        assert!(out.len() >= 100, "corpus not found at {}", root.display());
        out
    }

    #[test]
    fn seed_frames_pass_the_harness_and_decode() {
        let seeds = seeds();
        let mut decoded = 0;
        for s in &seeds {
            mbus_app(s);
            decoded += usize::from(decode_long_frame(s).is_ok());
        }
        // The harness reaches the accepting paths: the 76 test frames (and one unsupported) decode.
        assert_eq!(decoded, 77);
    }

    #[test]
    fn harness_survives_20k_random_and_mutated_byte_strings() {
        let mut rng = Rng(0x5EED_0FA1_1B17_E5AA);
        let seeds = seeds();
        for round in 0..20_000 {
            let data: Vec<u8> = if round % 4 == 0 {
                // Pure noise, mostly short (where the length logic lives), sometimes up to 300 bytes.
                let len = if rng.below(4) == 0 { rng.below(300) } else { rng.below(24) };
                (0..len).map(|_| rng.next() as u8).collect()
            } else {
                // A real frame or its user data, with a few mutations: flip, replace, insert, truncate.
                let seed = &seeds[rng.below(seeds.len())];
                let mut d = if round % 2 == 0 { seed.get(7..).unwrap_or_default().to_vec() } else { seed.clone() };
                rng.mutate(&mut d);
                d
            };
            mbus_app(&data);
        }
    }
}

//! The libmbus corpus (`../shared/corpora/mbus-libmbus`, 76 RSP_UD frames with libmbus' normalized XML
//! decoding, 20 error frames, 7 unsupported frames) through `ami_protocols::mbus::app`.
//!
//! Every test frame is decoded and compared with its `.norm.xml`: slave information (id, manufacturer,
//! version, medium, access number, status) and each record's function, storage number, tariff and device
//! (where libmbus prints them), unit, quantity and value. Units are normalized on both sides to the design
//! map's symbols (`m^3` → `m3`, `°C` → `degC`, `l` → `m3` with the value / 1000 …); numbers compare with a
//! relative tolerance of 1e-9 (libmbus prints six decimals, so absolute 5e-7 as well). libmbus' last
//! "record" for DIF `0F`/`1F` is compared with `Telegram::manufacturer_data`.
//!
//! Where libmbus is wrong, [`KNOWN`] lists the frame, the reason and the exact differences; the test fails
//! when such a frame decodes differently than listed (a regression, or a fix that should shrink the table)
//! and when any other frame differs at all. Error and unsupported frames must give `Err`, never panic.

use std::fs;
use std::path::{Path, PathBuf};

use ami_protocols::mbus::app::{decode_long_frame, RecordValue, Telegram};

fn corpus() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/corpora/mbus-libmbus")).to_path_buf()
}

/// Frames where we believe libmbus (as captured in the corpus) is wrong: name, why, and the differences
/// this decoder reports for it (each string must occur in exactly one reported difference).
const KNOWN: &[(&str, &str, &[&str])] = &[
    (
        "ELS_Elster-F96-Plus",
        "records 4 and 5 are values during an error state whose BCD digits are D/E/B (annex A: digits A–E \
         signal an error); libmbus skips the bad digits and prints 13131113 W and 131.113 m3/h, we keep the \
         bytes raw instead of inventing a number",
        &["record 4 value: ours Raw([189, 235, 221, 221])", "record 5 value: ours Raw([189, 235, 221])"],
    ),
    (
        "abb_f95",
        "records 2 and 3 are values during an error state whose BCD digits are D/E/B (annex A: digits A–E \
         signal an error); libmbus skips the bad digits and prints 1311041.3 W and 11.0413 m3/h, we keep the \
         bytes raw instead of inventing a number",
        &["record 2 value: ours Raw([221, 180, 235, 221])", "record 3 value: ours Raw([221, 180, 235])"],
    ),
    (
        "REL-Relay-Padpuls2",
        "record 1 is a type F date and time with the IV bit (minute byte A1) set: the meter says the time is \
         invalid; libmbus prints a placeholder 1900-01-00T00:00:00Z, we keep the four bytes raw",
        &["record 1 value: ours Raw([161, 21, 233, 23])"],
    ),
    (
        "sen_pollusonic_2",
        "fixed data structure (CI 73): medium code 4 has no inlet/outlet there; libmbus names it \"Heat\", \
         we map the fixed-structure media onto the table 3 codes (04 \"Heat: Outlet\") so one Medium type serves \
         both structures",
        &["medium: ours \"Heat: Outlet\", libmbus \"Heat\""],
    ),
    (
        "sen_pollutherm",
        "record 2 has VIF 7B without the extension bit, so no VIFE says what it is; libmbus prints an empty \
         record and drops the value, we keep the value (302) with no quantity and no unit",
        &["record 2 value: ours Number(302.0), libmbus \"\""],
    ),
];

/// Frames libmbus files under `unsupported-frames/` that are valid telegrams, with what they decode to.
const DECODED_UNSUPPORTED: &[(&str, &str, usize)] = &[(
    "svm_f22_telegram2",
    "a complete RSP_UD (L = DE, checksum and stop byte right) whose records start with DIF 1F: more records \
     follow, everything after it is manufacturer specific; we keep those bytes raw",
    206,
)];

/// Hex text to bytes; tolerant of any whitespace and of a lone nibble (`manual_frame1.hex` starts with `D`).
fn hex(text: &str) -> Vec<u8> {
    text.split_whitespace().filter_map(|t| u8::from_str_radix(t, 16).ok()).collect()
}

/// One `<DataRecord>` or the slave information: the tags in order.
#[derive(Debug, Default)]
struct Block {
    tags: Vec<(String, String)>,
}

impl Block {
    fn get(&self, tag: &str) -> Option<&str> {
        self.tags.iter().find(|(t, _)| t == tag).map(|(_, v)| v.as_str())
    }
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
}

/// libmbus' normalized XML: the slave information and the data records (one tag per line).
fn parse_norm_xml(xml: &str) -> (Block, Vec<Block>) {
    let mut slave = Block::default();
    let mut records = Vec::new();
    let mut current: Option<Block> = None;
    let mut in_slave = false;
    for line in xml.lines().map(str::trim) {
        if line.starts_with("<SlaveInformation") {
            in_slave = true;
        } else if line.starts_with("</SlaveInformation") {
            in_slave = false;
        } else if line.starts_with("<DataRecord") {
            current = Some(Block::default());
        } else if line.starts_with("</DataRecord") {
            records.extend(current.take());
        } else if let Some(rest) = line.strip_prefix('<') {
            let Some((tag, rest)) = rest.split_once('>') else { continue };
            let value = rest.rsplit_once("</").map_or("", |(v, _)| v);
            let entry = (tag.to_string(), unescape(value));
            if let Some(block) = current.as_mut() {
                block.tags.push(entry);
            } else if in_slave {
                slave.tags.push(entry);
            }
        }
    }
    (slave, records)
}

/// libmbus' unit text to the design map's symbol and the factor for its value.
fn lib_unit(unit: &str) -> (&'static str, f64) {
    match unit {
        "Wh" => ("Wh", 1.0),
        "kWh" => ("Wh", 1e3),
        "J" => ("J", 1.0),
        "m^3" => ("m3", 1.0),
        "l" => ("m3", 1e-3),
        "kg" => ("kg", 1.0),
        "s" => ("s", 1.0),
        "W" => ("W", 1.0),
        "J/h" => ("J/h", 1.0),
        "m^3/h" => ("m3/h", 1.0),
        "m^3/min" => ("m3/h", 60.0),
        "m^3/s" => ("m3/h", 3600.0),
        "kg/h" => ("kg/h", 1.0),
        "°C" => ("degC", 1.0),
        "°F" => ("degF", 1.0),
        "K" => ("K", 1.0),
        "bar" => ("bar", 1.0),
        "V" => ("V", 1.0),
        "A" => ("A", 1.0),
        // Dates, text, dimensionless counts, HCA units, reserved codes.
        _ => ("", 1.0),
    }
}

/// Two numbers agree to libmbus' printed precision.
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 5e-7 + 1e-9 * a.abs().max(b.abs())
}

fn hex_text(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect::<Vec<_>>().join(" ")
}

/// Every difference between our decoding and libmbus' for one frame.
fn compare(t: &Telegram, slave: &Block, records: &[Block]) -> Vec<String> {
    let mut diffs = Vec::new();
    let h = &t.header;
    let mut check = |what: &str, ours: String, theirs: Option<&str>| {
        if let Some(theirs) = theirs {
            if ours != theirs {
                diffs.push(format!("{what}: ours {ours:?}, libmbus {theirs:?}"));
            }
        }
    };
    check("id", h.id.clone(), slave.get("Id"));
    check("manufacturer", h.manufacturer.clone(), slave.get("Manufacturer"));
    check("version", h.version.to_string(), slave.get("Version"));
    check("medium", h.medium.name(), slave.get("Medium"));
    check("access number", h.access_number.to_string(), slave.get("AccessNumber"));
    check("status", format!("{:02X}", h.status), slave.get("Status"));
    check("signature", format!("{:04X}", h.signature), slave.get("Signature"));

    // libmbus' trailing pseudo-record for DIF 0F/1F.
    let (mut lib_records, mut lib_special) = (records, None);
    if let Some((last, rest)) = records.split_last() {
        if matches!(last.get("Function"), Some("Manufacturer specific" | "More records follow")) {
            lib_records = rest;
            lib_special = Some(last);
        }
    }
    match (lib_special, &t.manufacturer_data) {
        (None, None) => {}
        (Some(r), Some(data)) => {
            let follow = r.get("Function") == Some("More records follow");
            if follow != t.more_records_follow {
                diffs.push(format!("more records follow: ours {}, libmbus {follow}", t.more_records_follow));
            }
            if r.get("Value").unwrap_or_default() != hex_text(data) {
                diffs.push(format!("manufacturer data: ours {:?}, libmbus {:?}", hex_text(data), r.get("Value")));
            }
        }
        (ours, theirs) => {
            diffs.push(format!("manufacturer data: ours {theirs:?}, libmbus {:?}", ours.map(|r| &r.tags)))
        }
    }
    if t.records.len() != lib_records.len() {
        diffs.push(format!("record count: ours {}, libmbus {}", t.records.len(), lib_records.len()));
    }
    for (i, (r, lib)) in t.records.iter().zip(lib_records).enumerate() {
        let mut check = |what: &str, ours: String, theirs: Option<&str>| {
            if let Some(theirs) = theirs {
                if ours != theirs {
                    diffs.push(format!("record {i} {what}: ours {ours:?}, libmbus {theirs:?}"));
                }
            }
        };
        check("function", r.function.name().to_string(), lib.get("Function"));
        check("storage", r.storage.to_string(), lib.get("StorageNumber"));
        check("tariff", r.tariff.to_string(), lib.get("Tariff"));
        check("device", r.subunit.to_string(), lib.get("Device"));
        check("quantity", r.quantity.clone(), lib.get("Quantity"));
        let (unit, factor) = lib_unit(lib.get("Unit").unwrap_or_default());
        check("unit", r.unit.clone(), Some(unit));
        let theirs = lib.get("Value").unwrap_or_default();
        let same = match &r.value {
            RecordValue::Number(v) => theirs.parse::<f64>().is_ok_and(|x| close(*v, x * factor)),
            RecordValue::Text(s) | RecordValue::Date(s) | RecordValue::DateTime(s) => s == theirs,
            // libmbus prints variable-length binary data last byte first.
            RecordValue::Raw(b) => {
                let mut rev = b.clone();
                rev.reverse();
                hex_text(&rev) == theirs
            }
        };
        if !same {
            diffs.push(format!("record {i} value: ours {:?}, libmbus {theirs:?}", r.value));
        }
    }
    diffs
}

fn files(dir: &str, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(corpus().join(dir))
        .unwrap_or_else(|e| panic!("corpus {dir} at {}: {e}", corpus().display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(ext))
        .collect();
    out.sort();
    out
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().trim_end_matches(".hex").to_string()
}

#[test]
fn libmbus_test_frames_decode_like_libmbus() {
    let frames = files("test-frames", ".hex");
    assert_eq!(frames.len(), 76, "the corpus has 76 test frames");
    let mut matched = 0;
    let mut failures = Vec::new();
    for path in &frames {
        let name = name(path);
        let bytes = hex(&fs::read_to_string(path).unwrap());
        let xml = fs::read_to_string(path.with_extension("norm.xml")).unwrap();
        let (slave, records) = parse_norm_xml(&xml);
        let diffs = match decode_long_frame(&bytes) {
            Ok(t) => compare(&t, &slave, &records),
            Err(e) => vec![format!("decode error: {e}")],
        };
        let known = KNOWN.iter().find(|(n, _, _)| *n == name);
        match known {
            None if diffs.is_empty() => matched += 1,
            None => failures.push(format!("{name}: differs from libmbus:\n    {}", diffs.join("\n    "))),
            Some((_, reason, expected)) => {
                let listed = diffs.len() == expected.len()
                    && expected.iter().all(|e| diffs.iter().filter(|d| d.contains(e)).count() == 1);
                if listed {
                    println!("{name}: known difference ({reason})");
                } else {
                    failures.push(format!(
                        "{name}: known difference ({reason}) changed; now:\n    {}",
                        if diffs.is_empty() {
                            "no difference (remove it from KNOWN)".to_string()
                        } else {
                            diffs.join("\n    ")
                        }
                    ));
                }
            }
        }
    }
    println!(
        "libmbus corpus: {matched}/{} frames decode exactly like libmbus, {} known differences",
        frames.len(),
        KNOWN.len()
    );
    assert!(failures.is_empty(), "{} frames:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(matched + KNOWN.len(), frames.len());
}

#[test]
fn libmbus_error_and_unsupported_frames_are_clean_errors() {
    for dir in ["error-frames", "unsupported-frames"] {
        let frames = files(dir, ".hex");
        assert!(!frames.is_empty());
        for path in frames {
            let bytes = hex(&fs::read_to_string(&path).unwrap());
            let result = decode_long_frame(&bytes);
            match DECODED_UNSUPPORTED.iter().find(|(n, _, _)| *n == name(&path)) {
                Some((n, reason, len)) => {
                    let t = result.unwrap_or_else(|e| panic!("{n} ({reason}): {e}"));
                    assert!(t.more_records_follow && t.records.is_empty(), "{n}: {t:?}");
                    assert_eq!(t.manufacturer_data.map(|d| d.len()), Some(*len), "{n}");
                    println!("{dir}/{n}: decoded although libmbus does not ({reason})");
                }
                None => assert!(result.is_err(), "{dir}/{} decoded: {result:?}", name(&path)),
            }
        }
    }
}

#[test]
fn every_prefix_of_every_test_frame_is_refused_cleanly() {
    for path in files("test-frames", ".hex") {
        let bytes = hex(&fs::read_to_string(&path).unwrap());
        for n in 0..bytes.len() {
            assert!(decode_long_frame(&bytes[..n]).is_err(), "{} cut at {n}", name(&path));
        }
    }
}

/// Frames where `m-bus-parser` 0.5.3 splits the records differently from us, and why we believe it is wrong.
const PARSER_DISAGREES: &[(&str, &str)] = &[
    (
        "ELS_Elster-F96-Plus",
        "record 4 (DIF 3C: value during error state, BCD filled with DD): it refuses the record as \
         InvalidValueInformation; we keep it, with the bytes raw",
    ),
    (
        "abb_f95",
        "record 2 (DIF 3C: value during error state, BCD filled with DD): it refuses the record as \
         InvalidValueInformation; we keep it, with the bytes raw",
    ),
];

/// `m-bus-parser` (a second, independent decoder) finds the same record boundaries as we do in every test
/// frame. It is given only the records (after the 12-byte header, which it refuses for ids with a hex
/// nibble), and its special-DIF record is compared with our manufacturer data.
#[test]
fn m_bus_parser_agrees_on_record_boundaries() {
    use m_bus_parser::user_data::DataRecords;
    let mut agree = 0;
    let mut failures = Vec::new();
    let frames = files("test-frames", ".hex");
    for path in &frames {
        let name = name(path);
        let bytes = hex(&fs::read_to_string(path).unwrap());
        let t = decode_long_frame(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        if bytes.get(6) != Some(&0x72) {
            agree += 1; // Fixed data structure: no records to split.
            continue;
        }
        let records = &bytes[19..bytes.len() - 2];
        let theirs: Vec<Result<Vec<u8>, String>> = DataRecords::from(records)
            .map(|r| r.map(|r| r.raw_bytes().to_vec()).map_err(|e| format!("{e:?}")))
            .collect();
        let mut ours: Vec<Result<Vec<u8>, String>> =
            t.records.iter().map(|r| Ok([r.dif_vif_raw.as_slice(), r.raw.as_slice()].concat())).collect();
        if let Some(d) = &t.manufacturer_data {
            ours.push(Ok([&[if t.more_records_follow { 0x1F } else { 0x0F }][..], d].concat()));
        }
        let known = PARSER_DISAGREES.iter().find(|(n, _)| *n == name);
        match (theirs == ours, known) {
            (true, None) => agree += 1,
            (false, Some((_, why))) => println!("{name}: m-bus-parser splits differently ({why})"),
            (true, Some(_)) => failures.push(format!("{name}: now agrees, remove it from PARSER_DISAGREES")),
            (false, None) => {
                let first = theirs.iter().zip(&ours).position(|(a, b)| a != b).unwrap_or(theirs.len().min(ours.len()));
                failures.push(format!(
                    "{name}: record {first}: m-bus-parser {:02X?}, ours {:02X?} ({} vs {} records)",
                    theirs.get(first),
                    ours.get(first),
                    theirs.len(),
                    ours.len()
                ));
            }
        }
    }
    println!("m-bus-parser agrees on the record boundaries of {agree}/{} frames", frames.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

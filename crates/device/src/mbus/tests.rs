//! Shipped M-Bus profiles against real telegrams of the libmbus corpus, the generic mapping, selection
//! rules and time stamps.
//!
//! The corpus is looked up in `$AMI_MBUS_CORPUS`, then `testdata/mbus-libmbus` in the workspace, then
//! `../shared/corpora/mbus-libmbus` beside the workspace (as the link and protocol crates do); a missing
//! corpus fails the tests that need it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use ami_protocols::mbus::app::decode_long_frame;
use chrono::TimeZone;

use super::*;

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

fn bytes(s: &str) -> Vec<u8> {
    s.split_whitespace().map(|t| u8::from_str_radix(t, 16).unwrap()).collect()
}

/// The corpus frame `name` (without `.hex`), decoded.
fn telegram(name: &str) -> Telegram {
    let path = corpus().join("test-frames").join(format!("{name}.hex"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    decode_long_frame(&bytes(&text)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn shipped(file: &str) -> MbusProfile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../devices").join(file);
    load_mbus_profile(&path).unwrap_or_else(|e| panic!("{file}: {e:?}"))
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 9, 0, 0).unwrap()
}

fn read(profile: &MbusProfile, frames: &[&str]) -> (Vec<Reading>, Vec<MbusValueError>) {
    let telegrams: Vec<Telegram> = frames.iter().map(|f| telegram(f)).collect();
    readings_from_mbus(profile, "m1", &telegrams, now())
}

fn get<'a>(readings: &'a [Reading], name: &str) -> &'a Reading {
    readings.iter().find(|r| r.name == name).unwrap_or_else(|| panic!("no reading {name}: {readings:#?}"))
}

fn number(readings: &[Reading], name: &str) -> f64 {
    match get(readings, name).value {
        Value::Number(n) => n,
        ref other => panic!("{name}: {other:?}"),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

#[test]
fn kamstrup_multical_601_maps_its_telegram() {
    let p = shipped("kamstrup-multical-601.xml");
    assert_eq!(p.profile.protocol, crate::Protocol::Mbus);
    assert!(p.profile.values.is_empty());
    let (r, errors) = read(&p, &["kamstrup_multical_601"]);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(r.len(), p.values.len());
    for (name, expected, unit) in [
        ("fabrication_no", 6_855_817.0, ""),
        ("energy_heat", 37_351_000.0, "Wh"),
        ("volume", 561.08, "m3"),
        ("operating_time", 3_546_000.0, "s"),
        ("flow_temperature", 101.69, "degC"),
        ("return_temperature", 46.16, "degC"),
        ("temperature_difference", 55.53, "K"),
        ("power", 34_700.0, "W"),
        ("power_max", 44_800.0, "W"),
        ("volume_flow", 0.543, "m3/h"),
        ("volume_flow_max", 0.628, "m3/h"),
        ("energy_heat_tariff1", 0.0, "Wh"),
        ("energy_heat_tariff2", 0.0, "Wh"),
        ("volume_input_a", 0.0, "m3"),
        ("volume_input_b", 0.0, "m3"),
        ("energy_heat_target", 33_361_000.0, "Wh"),
        ("volume_target", 500.98, "m3"),
    ] {
        let got = number(&r, name);
        assert!(close(got, expected), "{name}: {got} != {expected}");
        assert_eq!(get(&r, name).unit, unit, "{name}");
    }
    let energy = get(&r, "energy_heat");
    assert_eq!(energy.obis.to_string(), "6-0:1.0.0*255");
    assert_eq!((energy.meter.as_str(), energy.ts, energy.quality), ("m1", now(), Quality::OK));
    assert_eq!(get(&r, "meter_time").value, Value::Text("2011-01-05T15:26:00Z".into()));
    assert_eq!(get(&r, "target_date").value, Value::Text("2010-12-31".into()));
    // Storage 1 values carry the telegram's storage-1 date.
    let target = Utc.with_ymd_and_hms(2010, 12, 31, 0, 0, 0).unwrap();
    assert_eq!(get(&r, "energy_heat_target").ts, target);
    assert_eq!(get(&r, "volume_target").ts, target);
    assert_eq!(get(&r, "energy_heat_target").obis.to_string(), "6-0:1.0.0*1");
}

#[test]
fn itron_cyble_water_maps_its_telegram_with_plain_text_selectors() {
    let p = shipped("itron-cyble-mbus.xml");
    let (r, errors) = read(&p, &["itron_cyble_m-bus_v1.4_water"]);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(r.len(), 6);
    assert!(close(number(&r, "volume"), 123.49));
    assert_eq!(get(&r, "volume").obis.to_string(), "8-0:1.0.0*255");
    assert!(close(number(&r, "fabrication_no"), 12_000_071.0));
    assert_eq!(get(&r, "customer_id").value, Value::Text("TEST CYBLE".into()));
    assert!(close(number(&r, "battery_time"), 4338.0));
    assert_eq!(get(&r, "meter_time").value, Value::Text("2012-01-24T13:43:00Z".into()));
    // Storage 1 without a storage-1 date: stamped with the read time.
    assert!(close(number(&r, "volume_billing"), 0.0));
    assert_eq!(get(&r, "volume_billing").ts, now());
}

#[test]
fn saia_burgess_ale3_maps_its_telegram() {
    let p = shipped("saia-burgess-ale3.xml");
    let (r, errors) = read(&p, &["SBC_Saia-Burgess-ALE3"]);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(r.len(), p.values.len());
    assert!(close(number(&r, "energy_import_tariff1"), 2930.0));
    assert!(close(number(&r, "energy_import_tariff2"), 60.0));
    assert!(close(number(&r, "voltage_l1"), 223.0));
    assert_eq!(get(&r, "voltage_l1").unit, "V");
    assert!(close(number(&r, "voltage_l2"), 0.0));
    assert!(close(number(&r, "current_l1"), 0.0));
    assert!(close(number(&r, "power_total"), 0.0));
    assert_eq!(get(&r, "energy_import_tariff1").obis.to_string(), "1-0:1.8.1*255");
}

#[test]
fn a_profile_on_the_wrong_meter_names_every_missing_value() {
    // The ALE3 profile reading a Kamstrup heat meter: nothing matches, every value is reported.
    let p = shipped("saia-burgess-ale3.xml");
    let (r, errors) = read(&p, &["kamstrup_multical_601"]);
    assert!(r.is_empty());
    assert_eq!(errors.len(), p.values.len());
    assert!(errors.iter().all(|e| e.kind == MbusValueErrorKind::Missing));
    assert_eq!(errors[0].to_string(), "energy_import_tariff1: no matching record in the read-out");
}

fn profile_text(values: &str, options: &str) -> String {
    format!("<profile id=\"t\" protocol=\"mbus\" manufacturer=\"X\" model=\"Y\">{options}{values}</profile>")
}

#[test]
fn unit_mismatch_and_raw_data_are_errors_naming_the_value() {
    let p = parse_mbus_profile(
        &profile_text(
            "<value name=\"energy\" obis=\"6-0:1.0.0\" unit=\"J\"><mbus quantity=\"Energy\"/></value>\
             <value name=\"flow\" obis=\"6-0:10.0.0\" unit=\"degC\"><mbus dif-vif=\"0A 5A\"/></value>",
            "",
        ),
        "t.xml",
    )
    .unwrap();
    // 04 06: energy in kWh (Wh after decoding); 0A 5A with BCD digit D: an error marker, kept raw.
    let t = decode_long_frame(&long_frame("04 06 01 00 00 00 0A 5A 2D 01")).unwrap();
    let (r, errors) = readings_from_mbus(&p, "m", &[t], now());
    assert!(r.is_empty());
    assert_eq!(
        errors,
        vec![
            MbusValueError {
                name: "energy".into(),
                kind: MbusValueErrorKind::UnitMismatch { expected: "J".into(), actual: "Wh".into() }
            },
            MbusValueError { name: "flow".into(), kind: MbusValueErrorKind::NotDecoded { raw: "2D 01".into() } },
        ]
    );
}

/// A long frame around `records`: header id 12345678, manufacturer ELS, version 1, medium `medium`,
/// status `status`.
fn long_frame_with(records: &str, medium: u8, status: u8) -> Vec<u8> {
    let mut body = bytes(&format!("08 01 72 78 56 34 12 93 15 01 {medium:02X} 55 {status:02X} 00 00 {records}"));
    let cs = body.iter().fold(0u8, |s, b| s.wrapping_add(*b));
    let len = u8::try_from(body.len()).unwrap();
    let mut f = vec![0x68, len, len, 0x68];
    f.append(&mut body);
    f.extend([cs, 0x16]);
    f
}

fn long_frame(records: &str) -> Vec<u8> {
    long_frame_with(records, 0x04, 0x00)
}

#[test]
fn selection_defaults_scale_status_and_multi_telegram() {
    let p = parse_mbus_profile(
        &profile_text(
            "<value name=\"energy\" obis=\"6-0:1.0.0\" unit=\"Wh\"><mbus quantity=\"energy\" scale=\"2\"/></value>\
             <value name=\"energy_t1\" obis=\"6-0:1.0.1\" unit=\"Wh\"><mbus quantity=\"Energy\" tariff=\"1\"/></value>\
             <value name=\"volume\" obis=\"6-0:2.0.0\" unit=\"m3\"><mbus quantity=\"Volume\"/></value>",
            "",
        ),
        "t.xml",
    )
    .unwrap();
    // Telegram 1: maximum energy first (not taken: function defaults to instantaneous), storage 1 energy
    // (not taken: storage defaults to 0), then the current energy 5 kWh, tariff 1 energy 7 kWh.
    // Telegram 2 (status 0x08, permanent error): the volume.
    let t1 =
        decode_long_frame(&long_frame("14 06 09 00 00 00 44 06 08 00 00 00 04 06 05 00 00 00 84 10 06 07 00 00 00"))
            .unwrap();
    let t2 = decode_long_frame(&long_frame_with("04 13 10 00 00 00", 0x04, 0x08)).unwrap();
    let (r, errors) = readings_from_mbus(&p, "m", &[t1, t2], now());
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(get(&r, "energy").value, Value::Number(10_000.0));
    assert_eq!(get(&r, "energy").quality, Quality::OK);
    assert_eq!(get(&r, "energy_t1").value, Value::Number(7000.0));
    assert_eq!(get(&r, "volume").value, Value::Number(0.016));
    assert!(get(&r, "volume").quality.meter_error);
}

#[test]
fn generic_profile_maps_every_record_of_the_corpus_to_unique_names_and_codes() {
    let p = shipped("generic-mbus.xml");
    assert!(p.all_records && p.values.is_empty());
    let dir = corpus().join("test-frames");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "hex"))
        .collect();
    files.sort();
    let mut frames = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let Ok(t) = decode_long_frame(&bytes(&text)) else { continue };
        frames += 1;
        let records = t.records.len();
        let (r, errors) = readings_from_mbus(&p, "m", std::slice::from_ref(&t), now());
        assert!(errors.is_empty());
        assert_eq!(r.len(), records, "{}", f.display());
        let names: HashSet<&str> = r.iter().map(|x| x.name.as_str()).collect();
        let codes: HashSet<Obis> = r.iter().map(|x| x.obis).collect();
        assert_eq!(names.len(), records, "{}: names not unique", f.display());
        assert_eq!(codes.len(), records, "{}: OBIS codes not unique", f.display());
        for x in &r {
            assert!(crate::profile::valid_name_for_tests(&x.name), "{}: bad name {}", f.display(), x.name);
        }
        // Pure: the same record derives the same pair on every call.
        for rec in &t.records {
            assert_eq!(derive_mbus_name_obis(&t.header.medium, rec), derive_mbus_name_obis(&t.header.medium, rec));
        }
    }
    assert!(frames >= 70, "only {frames} corpus frames decoded");
}

#[test]
fn generic_names_and_codes_of_known_meters() {
    let p = shipped("generic-mbus.xml");
    let (r, _) = read(&p, &["kamstrup_multical_601"]);
    let pairs: Vec<(String, String)> = r.iter().map(|x| (x.name.clone(), x.obis.to_string())).collect();
    for (name, obis) in [
        ("energy", "6-0:1.0.0*255"),
        ("volume", "6-0:2.0.0*255"),
        ("flow_temperature", "6-0:10.0.0*255"),
        ("return_temperature", "6-0:11.0.0*255"),
        ("temperature_difference", "6-0:12.0.0*255"),
        ("power", "6-0:8.0.0*255"),
        ("power_max", "6-0:8.5.0*255"),
        ("volume_flow", "6-0:9.0.0*255"),
        ("volume_flow_max", "6-0:9.5.0*255"),
        ("energy_t1", "6-0:1.0.1*255"),
        ("energy_t2", "6-0:1.0.2*255"),
        ("volume_u1", "6-1:2.0.0*255"),
        ("volume_u2", "6-2:2.0.0*255"),
        ("energy_u3", "6-3:1.0.0*255"),
        ("energy_s1", "6-0:1.0.0*1"),
        ("power_max_s1", "6-0:8.5.0*1"),
    ] {
        assert!(pairs.contains(&(name.to_string(), obis.to_string())), "{name} {obis} not in {pairs:#?}");
    }
    // Fabrication number (0C 78) has no medium code: the fallback.
    let fab = get(&r, "mbus_0c78");
    assert_eq!(fab.obis.0[..3], [0, 0, 96]);
    assert!(fab.obis.0[3] >= 128);
    assert_eq!(fab.obis.0[5], 255);
    // Storage 1 values are stamped with the storage-1 date.
    assert_eq!(get(&r, "energy_s1").ts, Utc.with_ymd_and_hms(2010, 12, 31, 0, 0, 0).unwrap());

    let (w, _) = read(&p, &["itron_cyble_m-bus_v1.4_water"]);
    assert_eq!(get(&w, "volume").obis.to_string(), "8-0:1.0.0*255");
    assert_eq!(get(&w, "volume_s1").obis.to_string(), "8-0:1.0.0*1");
    // 04 94 7F: a manufacturer-specific VIFE changes the meaning: fallback, not a second 8-0:1.0.0.
    assert_eq!(get(&w, "mbus_04947f").obis.0[..3], [0, 0, 96]);

    let (e, _) = read(&p, &["kamstrup_382_005"]);
    assert_eq!(get(&e, "energy").obis.to_string(), "1-0:1.8.0*255");
    assert_eq!(get(&e, "power").obis.to_string(), "1-0:1.7.0*255");
    assert_eq!(get(&e, "power_max").obis.to_string(), "1-0:1.6.0*255");
    assert_eq!(get(&e, "energy_t1_u1").obis.to_string(), "1-1:1.8.1*255");
}

#[test]
fn repeated_records_get_suffixed_names_and_free_codes() {
    // The Eastron frame repeats `0B FD 47` six times.
    let p = shipped("generic-mbus.xml");
    let (r, _) = read(&p, &["eastron_sdm630"]);
    let voltages: Vec<&Reading> = r.iter().filter(|x| x.name.starts_with("voltage")).collect();
    let names: Vec<&str> = voltages.iter().map(|x| x.name.as_str()).collect();
    assert_eq!(names, ["voltage", "voltage_2", "voltage_3", "voltage_4", "voltage_5", "voltage_6"]);
    assert_eq!(voltages[0].obis.to_string(), "1-0:12.7.0*255");
    assert!(voltages[1..].iter().all(|x| x.obis.0[..3] == [0, 0, 96]));
}

#[test]
fn explicit_values_take_their_records_out_of_the_generic_set() {
    let p = parse_mbus_profile(
        &profile_text(
            "<value name=\"heat\" obis=\"6-0:1.0.0\" unit=\"Wh\"><mbus dif-vif=\"04 06\"/></value>",
            "<mbus all-records=\"true\"/>",
        ),
        "t.xml",
    )
    .unwrap();
    let (r, errors) = read(&p, &["kamstrup_multical_601"]);
    assert!(errors.is_empty());
    assert_eq!(r.len(), telegram("kamstrup_multical_601").records.len());
    assert_eq!(r.iter().filter(|x| x.obis.to_string() == "6-0:1.0.0*255").count(), 1);
    assert_eq!(r.iter().find(|x| x.obis.to_string() == "6-0:1.0.0*255").unwrap().name, "heat");
}

#[test]
fn fallback_names_stay_short_and_split_headers() {
    let long = Record {
        function: Function::Instantaneous,
        storage: 0,
        tariff: 0,
        subunit: 0,
        has_dife: false,
        unit: String::new(),
        lib_unit: String::new(),
        quantity: "x".repeat(30),
        value: RecordValue::Number(1.0),
        dif_vif_raw: [vec![0x0D, 0x7C, 30], vec![b'x'; 30]].concat(),
        raw: Vec::new(),
    };
    let (name, obis) = derive_mbus_name_obis(&Medium::Water, &long);
    assert!(name.len() <= 64 && name.starts_with("mbus_0d7c1e"), "{name}");
    assert_eq!(obis.0[2], 96);

    let h = split_dif_vif(&bytes("84 C1 23 FD C9 FF 01")).unwrap();
    assert_eq!((h.storage, h.tariff, h.subunit), (1 << 1 | 3 << 5, 2 << 2, 1));
    assert_eq!((h.vif, h.vifes.as_slice()), (0xFD, &[0xC9, 0xFF, 0x01][..]));
    for bad in ["", "84", "04", "04 86", "04 06 00", "0F", "1F 06", "04 7C 03 41"] {
        assert_eq!(split_dif_vif(&bytes(bad)), None, "{bad}");
    }
}

#[test]
fn historic_values_take_the_date_time_of_their_storage() {
    let p = shipped("generic-mbus.xml");
    // Storage 2 (DIF 84, DIFE 01): energy 3 kWh and date-time 2021-02-08 21:12 (type F); storage 3 energy
    // without a date; storage 0 energy.
    let t = decode_long_frame(&long_frame(
        "84 01 06 03 00 00 00 84 01 6D 0C 15 A8 22 C4 01 06 04 00 00 00 04 06 01 00 00 00",
    ))
    .unwrap();
    let (r, errors) = readings_from_mbus(&p, "m", &[t], now());
    assert!(errors.is_empty());
    let s2 = get(&r, "energy_s2");
    assert_eq!(s2.ts, Utc.with_ymd_and_hms(2021, 2, 8, 21, 12, 0).unwrap());
    assert_eq!(s2.obis.to_string(), "6-0:1.0.0*2");
    assert_eq!(get(&r, "energy_s3").ts, now());
    assert_eq!(get(&r, "energy").ts, now());
    assert_eq!(p.kind("energy", "Wh"), ValueKind::Counter);
    assert_eq!(p.kind("flow_temperature", "degC"), ValueKind::Instantaneous);
}

#[test]
fn a_profile_built_in_memory_has_no_m_bus_part_to_reload() {
    let p = shipped("itron-cyble-mbus.xml");
    let mut common = p.profile.clone();
    assert_eq!(MbusProfile::from_profile(&common).unwrap(), p);
    common.path = None;
    assert!(matches!(MbusProfile::from_profile(&common), Err(ResolveError::NotFound { .. })));
    let found =
        resolve_mbus_profile("itron-cyble-mbus", &[Path::new(env!("CARGO_MANIFEST_DIR")).join("../../devices")])
            .unwrap();
    assert_eq!(found.values, p.values);
    assert!(matches!(
        resolve_mbus_profile("eastron-sdm630", &[Path::new(env!("CARGO_MANIFEST_DIR")).join("../../devices")]),
        Err(ResolveError::Invalid(_))
    ));
}

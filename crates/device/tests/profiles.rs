//! Profile format behaviour users rely on: the shipped profiles are valid, broken profiles are reported
//! at the right `file:line:col`, and no input makes the parser panic.

use std::path::{Path, PathBuf};

use ami_device::mbus::MbusProfile;
use ami_device::modbus::plan_modbus;
use ami_device::{
    check_paths, default_search_dirs, load_profile, parse_profile, resolve_profile, Control, ControlSource,
    LineDefaults, ModbusControl, ModbusOptions, ModbusValue, Profile, ProfileLibrary, Protocol, ResolveError, ValueDef,
    ValueKind, ValueSource,
};
use ami_protocols::modbus::plan::Table;
use ami_protocols::modbus::value::{ByteOrder, Encoding, ValueType, WordOrder};
use proptest::prelude::*;

fn devices_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../devices")
}

/// A small valid profile; the broken variants below are edits of single lines of it.
const GOOD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<profile id="test-meter" protocol="modbus" manufacturer="Acme" model="M1" document="Acme M1 Modbus map v2">
  <line baud="9600" parity="even" data="8" stop="1" address="7" timeout="500ms"/>
  <modbus max-block="40" max-gap="2" word-order="low-first"/>
  <value name="voltage_l1" obis="1-0:32.7.0" unit="V">
    <modbus table="input" register="0x0000" type="f32"/>
  </value>
  <value name="energy_import_total" obis="1-0:1.8.0" unit="Wh" description="kWh register">
    <modbus table="holding" register="72" type="u32" word-order="high-first" byte-order="little" scale="1000" offset="-5"/>
  </value>
  <value name="relay_state" obis="0-0:96.3.10" unit="" kind="static">
    <modbus table="coil" register="0x0010"/>
  </value>
  <control name="relay" description="load relay">
    <modbus coil="0x0010"/>
  </control>
  <control name="tariff">
    <modbus register="0x1000" on="2" off="1"/>
  </control>
</profile>
"#;

/// Replaces line `line` (1-based) of [`GOOD`] by `with`.
fn edit(line: usize, with: &str) -> String {
    let mut lines: Vec<&str> = GOOD.lines().collect();
    lines[line - 1] = with;
    lines.join("\n") + "\n"
}

/// Parses `text` as `t.xml` and returns the errors as displayed.
fn errors(text: &str) -> Vec<String> {
    match parse_profile(text, "devices/t.xml") {
        Ok(p) => panic!("expected errors, parsed {p:?}"),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

/// 1-based column of the first occurrence of `needle` in line `line` of `text`.
fn col(text: &str, line: usize, needle: &str) -> usize {
    text.lines().nth(line - 1).and_then(|l| l.find(needle)).expect("needle on line") + 1
}

#[test]
fn every_shipped_profile_is_valid() {
    let dir = devices_dir();
    let errors = check_paths(std::slice::from_ref(&dir));
    assert!(errors.is_empty(), "{}", errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"));
    let (lib, errors) = ProfileLibrary::load_dir(&dir);
    assert!(errors.is_empty());
    let ids: Vec<&str> = lib.profiles().iter().map(|p| p.id.as_str()).collect();
    for wanted in ["abb-b23", "carlo-gavazzi-em24", "eastron-sdm120", "eastron-sdm630"] {
        assert!(ids.contains(&wanted), "{wanted} missing from {ids:?}");
    }
    for p in lib.profiles() {
        assert!(p.document.as_deref().is_some_and(|d| !d.is_empty()), "{} names no document", p.id);
        if p.protocol == Protocol::Mbus {
            // M-Bus values live in the M-Bus part: a meter profile selects several records, the generic
            // one takes them all.
            let m = MbusProfile::from_profile(p).expect("M-Bus part");
            assert!(m.all_records || m.values.len() >= 5, "{} has only {} values", p.id, m.values.len());
            for v in &m.values {
                if matches!(v.unit.as_str(), "Wh" | "m3") {
                    assert_eq!(v.kind, ValueKind::Counter, "{}/{}", p.id, v.name);
                }
            }
            continue;
        }
        if p.protocol == Protocol::Mercury {
            // Mercury values and the power profile live in the Mercury part
            // (crates/device/tests/mercury_profiles.rs checks them in detail).
            let m = ami_device::mercury::MercuryProfile::from_profile(p).expect("Mercury part");
            assert!(m.values.len() >= 10, "{} has only {} values", p.id, m.values.len());
            assert!(m.load_profile.is_some(), "{} reads no power profile", p.id);
            for v in &m.values {
                if matches!(v.unit.as_str(), "Wh" | "varh") {
                    assert_eq!(v.kind, ValueKind::Counter, "{}/{}", p.id, v.name);
                }
            }
            continue;
        }
        if p.protocol == Protocol::Dlms {
            // DLMS values, load profiles and the disconnect control live in the DLMS part
            // (crates/device/tests/dlms_profiles.rs checks them in detail).
            let d = ami_device::dlms::DlmsProfile::from_profile(p).expect("DLMS part");
            assert!(d.values.len() >= 5, "{} has only {} values", p.id, d.values.len());
            continue;
        }
        // Meters read many values; a relay module (controls, no energy) reads only its relay states.
        if p.controls.is_empty() {
            assert!(p.values.len() >= 10, "{} has only {} values", p.id, p.values.len());
        } else {
            assert!(p.values.len() >= p.controls.len(), "{}: every relay's state should be readable", p.id);
        }
        let stem = p.path.as_deref().and_then(Path::file_stem).and_then(|s| s.to_str());
        assert_eq!(stem, Some(p.id.as_str()), "file name and id differ");
        for v in &p.values {
            if matches!(v.unit.as_str(), "Wh" | "varh") {
                assert_eq!(v.kind, ValueKind::Counter, "{}/{}", p.id, v.name);
            }
        }
    }
}

#[test]
fn shipped_register_maps_match_the_manufacturer_documents() {
    let lib = ProfileLibrary::load_dir(devices_dir()).0;
    let modbus = |id: &str, name: &str| -> ModbusValue {
        let p = lib.find(id).expect("profile");
        let v = p.value(name).unwrap_or_else(|| panic!("{id}/{name}"));
        let ValueSource::Modbus(m) = &v.source;
        m.clone()
    };
    // Eastron: float32 input registers, kWh scaled to Wh.
    let e = modbus("eastron-sdm630", "energy_import_total");
    assert_eq!((e.table, e.register, e.encoding.ty, e.encoding.scale), (Table::Input, 0x0048, ValueType::F32, 1000.0));
    assert_eq!(modbus("eastron-sdm630", "energy_import_l2").register, 0x015C);
    assert_eq!(modbus("eastron-sdm120", "frequency").register, 0x0046);
    // Carlo Gavazzi EM24: INT32 least significant word first, kWh×10.
    let e = modbus("carlo-gavazzi-em24", "energy_import_total");
    assert_eq!(e.encoding.word_order, WordOrder::LowFirst);
    assert_eq!((e.encoding.ty, e.encoding.scale), (ValueType::I32, 100.0));
    let v = modbus("carlo-gavazzi-em24", "voltage_l1");
    assert_eq!((v.register, v.encoding.scale), (0x0000, 0.1));
    assert_eq!(lib.find("carlo-gavazzi-em24").unwrap().modbus.max_block, 11);
    // ABB B23: u64 energy in 0.01 kWh.
    let e = modbus("abb-b23", "energy_import_total");
    assert_eq!((e.table, e.register, e.encoding.ty, e.encoding.scale), (Table::Holding, 0x5000, ValueType::U64, 10.0));
}

#[test]
fn a_small_profile_round_trips_into_the_model() {
    let p = parse_profile(GOOD, "devices/t.xml").expect("valid");
    let expected = Profile {
        id: "test-meter".into(),
        path: None,
        manufacturer: "Acme".into(),
        model: "M1".into(),
        document: Some("Acme M1 Modbus map v2".into()),
        protocol: Protocol::Modbus,
        line: LineDefaults {
            baud: Some(9600),
            parity: Some("even".into()),
            data_bits: Some(8),
            stop_bits: Some(1),
            address: Some(7),
            timeout_ms: Some(500),
        },
        modbus: ModbusOptions { max_block: 40, max_gap: 2 },
        values: vec![
            ValueDef {
                name: "voltage_l1".into(),
                obis: "1-0:32.7.0".parse().unwrap(),
                unit: "V".into(),
                kind: ValueKind::Instantaneous,
                description: None,
                source: ValueSource::Modbus(ModbusValue {
                    table: Table::Input,
                    register: 0,
                    // The profile-wide word order applies.
                    encoding: Encoding { word_order: WordOrder::LowFirst, ..Encoding::new(ValueType::F32) },
                }),
                line: 5,
            },
            ValueDef {
                name: "energy_import_total".into(),
                obis: "1-0:1.8.0".parse().unwrap(),
                unit: "Wh".into(),
                kind: ValueKind::Counter,
                description: Some("kWh register".into()),
                source: ValueSource::Modbus(ModbusValue {
                    table: Table::Holding,
                    register: 72,
                    encoding: Encoding {
                        ty: ValueType::U32,
                        word_order: WordOrder::HighFirst,
                        byte_order: ByteOrder::Little,
                        scale: 1000.0,
                        offset: -5.0,
                    },
                }),
                line: 8,
            },
            ValueDef {
                name: "relay_state".into(),
                obis: "0-0:96.3.10".parse().unwrap(),
                unit: String::new(),
                kind: ValueKind::Static,
                description: None,
                source: ValueSource::Modbus(ModbusValue {
                    table: Table::Coil,
                    register: 0x10,
                    encoding: Encoding::new(ValueType::U16),
                }),
                line: 11,
            },
        ],
        controls: vec![
            Control {
                name: "relay".into(),
                description: Some("load relay".into()),
                source: ControlSource::Modbus(ModbusControl::Coil { register: 0x10 }),
            },
            Control {
                name: "tariff".into(),
                description: None,
                source: ControlSource::Modbus(ModbusControl::Register { register: 0x1000, on: 2, off: 1 }),
            },
        ],
    };
    assert_eq!(p, expected);
}

#[test]
fn id_defaults_to_the_file_stem_and_kind_to_the_unit() {
    let text = GOOD.replace(r#"id="test-meter" "#, "");
    let p = parse_profile(&text, "devices/my-meter.xml").unwrap();
    assert_eq!(p.id, "my-meter");
    assert_eq!(p.value("energy_import_total").unwrap().kind, ValueKind::Counter);
    assert_eq!(p.value("voltage_l1").unwrap().kind, ValueKind::Instantaneous);
}

#[test]
fn bad_xml_names_file_line_and_column() {
    let text = edit(7, "  </valeu>");
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("devices/t.xml:7:3: bad XML"), "{e:?}");

    let e = errors(&edit(6, r#"    <modbus table="input register="0x0000" type="f32"/>"#));
    assert!(e[0].starts_with("devices/t.xml:6:"), "{e:?}");
    assert!(e[0].contains("bad XML"), "{e:?}");
}

#[test]
fn unknown_type_is_reported_at_the_type() {
    let text = edit(6, r#"    <modbus table="input" register="0x0000" type="f33"/>"#);
    let c = col(&text, 6, "f33");
    assert_eq!(
        errors(&text),
        [format!("devices/t.xml:6:{c}: unknown type \"f33\" (expected one of u16, i16, u32, i32, u64, i64, f32, f64)")]
    );
}

#[test]
fn missing_register_is_reported_at_the_element() {
    let text = edit(6, r#"    <modbus table="input" type="f32"/>"#);
    assert_eq!(errors(&text), ["devices/t.xml:6:5: missing attribute \"register\" on <modbus>"]);
}

#[test]
fn duplicate_name_is_reported_at_the_second_one() {
    let text = edit(8, r#"  <value name="voltage_l1" obis="1-0:1.8.0" unit="Wh" description="kWh register">"#);
    let c = col(&text, 8, "voltage_l1");
    assert_eq!(
        errors(&text),
        [format!("devices/t.xml:8:{c}: duplicate value name \"voltage_l1\" (first defined at line 5)")]
    );
}

#[test]
fn duplicate_obis_is_an_error() {
    let text = edit(8, r#"  <value name="energy_import_total" obis="1-0:32.7.0*255" unit="Wh">"#);
    let c = col(&text, 8, "1-0:32.7.0*255");
    assert_eq!(
        errors(&text),
        [format!(
            "devices/t.xml:8:{c}: duplicate OBIS code 1-0:32.7.0*255 (already used by value \"voltage_l1\" at line 5)"
        )]
    );
}

#[test]
fn unknown_attribute_lists_the_expected_ones() {
    let text = edit(6, r#"    <modbus table="input" registr="0x0000" type="f32"/>"#);
    let c = col(&text, 6, "registr");
    assert_eq!(
        errors(&text),
        [
            "devices/t.xml:6:5: missing attribute \"register\" on <modbus>".to_string(),
            format!(
                "devices/t.xml:6:{c}: unknown attribute \"registr\" on <modbus> (expected one of table, register, \
                 type, word-order, byte-order, scale, offset)"
            ),
        ]
    );
}

#[test]
fn unknown_element_is_an_error_and_the_value_has_no_source() {
    let text = edit(6, r#"    <modbuss table="input" register="0x0000" type="f32"/>"#);
    assert_eq!(
        errors(&text),
        [
            "devices/t.xml:5:3: <value name=\"voltage_l1\"> has no source: add a <modbus> element",
            "devices/t.xml:6:5: unknown element <modbuss> in <value> (expected modbus)",
        ]
    );
    let text = edit(4, r#"  <options max-block="40"/>"#);
    assert_eq!(
        errors(&text),
        ["devices/t.xml:4:3: unknown element <options> in <profile> (expected one of line, modbus, mbus, value, control)"]
    );
}

#[test]
fn bad_obis_is_reported_at_the_code() {
    let text = edit(5, r#"  <value name="voltage_l1" obis="1-0:32.7" unit="V">"#);
    let c = col(&text, 5, "1-0:32.7");
    let e = errors(&text);
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with(&format!("devices/t.xml:5:{c}: bad OBIS code \"1-0:32.7\"")), "{e:?}");
}

#[test]
fn every_error_of_a_file_is_reported_in_order() {
    let mut text = edit(6, r#"    <modbus table="inputs" register="0x10000" type="f32" scale="0"/>"#);
    text = text.replace(r#"unit="Wh" description"#, r#"unit="kWh" description"#);
    text = text.replace(r#"baud="9600""#, r#"baud="fast""#);
    let e = errors(&text);
    let lines: Vec<&str> = e.iter().map(|m| m.split(": ").next().unwrap()).collect();
    assert_eq!(e.len(), 5, "{e:#?}");
    assert!(e[0].contains("bad baud rate"), "{e:#?}");
    assert!(e[1].contains("unknown table \"inputs\" (expected one of coil, discrete, holding, input)"));
    assert!(e[2].contains("bad register"));
    assert!(e[3].contains("scale must not be 0"));
    assert!(e[4].contains("unknown unit \"kWh\""));
    let mut sorted = lines.clone();
    sorted.sort_by_key(|l| {
        let mut it = l.rsplit(':');
        let c: u32 = it.next().unwrap().parse().unwrap();
        let l: u32 = it.next().unwrap().parse().unwrap();
        (l, c)
    });
    assert_eq!(lines, sorted);
}

#[test]
fn structural_mistakes_are_errors() {
    // A value without any source.
    let text = GOOD.replace("    <modbus table=\"input\" register=\"0x0000\" type=\"f32\"/>\n", "");
    assert_eq!(errors(&text), ["devices/t.xml:5:3: <value name=\"voltage_l1\"> has no source: add a <modbus> element"]);
    // A source of another protocol.
    let text = edit(6, r#"    <dlms class="3" obis="1-0:32.7.0" attribute="2"/>"#);
    assert_eq!(errors(&text), ["devices/t.xml:6:5: <dlms> source does not match the profile's protocol \"modbus\""]);
    // No values at all.
    let text = "<profile protocol=\"modbus\" manufacturer=\"A\" model=\"B\">\n</profile>\n";
    assert_eq!(errors(text), ["devices/t.xml:1:1: empty profile: <profile> defines no <value>"]);
    // An empty file and a file with another root element.
    assert_eq!(errors(""), ["devices/t.xml:1:1: empty profile: no <profile> element"]);
    assert_eq!(errors("<meter/>"), ["devices/t.xml:1:1: root element is <meter>, expected <profile>"]);
    // A reserved, not yet implemented protocol.
    let text = GOOD.replace(r#"protocol="modbus""#, r#"protocol="iec62056-21""#);
    assert!(errors(&text)[0]
        .contains("protocol \"iec62056-21\" is not supported yet (supported: modbus, mbus, dlms, mercury)"));
    // Modbus sources in a Mercury profile.
    let text = GOOD.replace(r#"protocol="modbus""#, r#"protocol="mercury""#);
    assert!(errors(&text).iter().any(|e| e.contains("<modbus> source in a profile whose protocol is not modbus")));
    // Modbus elements in an M-Bus profile.
    let text = GOOD.replace(r#"protocol="modbus""#, r#"protocol="mbus""#);
    assert!(errors(&text).iter().any(|e| e.contains("<modbus> source in a profile whose protocol is not modbus")));
    // Bits take no decoding attributes; registers must not run past 0xFFFF.
    let text = edit(12, r#"    <modbus table="coil" register="0x0010" type="u16"/>"#);
    assert!(errors(&text)[0].contains("attribute \"type\" does not apply to table \"coil\""));
    let text = edit(6, r#"    <modbus table="input" register="0xFFFF" type="f32"/>"#);
    assert!(errors(&text)[0].contains("runs past the last register"));
    // Text where only elements belong.
    let text = edit(6, "    voltage is here");
    assert!(errors(&text).iter().any(|e| e.starts_with("devices/t.xml:6:5: unexpected text inside <value>")));
}

#[test]
fn unreadable_and_non_utf8_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.xml");
    let e = load_profile(&missing).unwrap_err();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].line, 0);
    assert!(e[0].to_string().starts_with(&format!("{}: cannot read profile", missing.display())));

    let bad = dir.path().join("bad.xml");
    std::fs::write(&bad, b"<profile>\n  <value name=\"\xff\"/>").unwrap();
    let e = load_profile(&bad).unwrap_err();
    assert_eq!((e[0].line, e[0].col), (2, 16));
    assert!(e[0].message.contains("UTF-8"));
}

#[test]
fn truncated_profiles_never_panic_and_always_fail() {
    for cut in (0..GOOD.len()).filter(|&i| GOOD.is_char_boundary(i)) {
        let text = &GOOD[..cut];
        // Cuts inside the trailing newline still hold a whole profile.
        if text.trim_end().ends_with("</profile>") {
            continue;
        }
        let e = parse_profile(text, "t.xml").expect_err(text);
        assert!(!e.is_empty() && e.iter().all(|e| e.line >= 1 && e.col >= 1), "{cut}: {e:?}");
    }
    for entry in std::fs::read_dir(devices_dir()).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for cut in (0..text.len()).step_by(7).filter(|&i| text.is_char_boundary(i)) {
            if text[..cut].trim_end().ends_with("</profile>") {
                continue;
            }
            assert!(parse_profile(&text[..cut], "t.xml").is_err(), "{}: {cut}", path.display());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        let _ = parse_profile(&text, "t.xml");
    }

    #[test]
    fn xml_like_text_never_panics(parts in proptest::collection::vec(prop_oneof![
        Just("<profile"), Just("<value"), Just("<modbus"), Just("<line"), Just("<control"), Just("</value>"),
        Just("</profile>"), Just("/>"), Just(">"), Just(" name=\"a\""), Just(" obis=\"1-0:1.8.0\""),
        Just(" unit=\"Wh\""), Just(" table=\"input\""), Just(" register=\"0x10\""), Just(" type=\"f32\""),
        Just(" protocol=\"modbus\""), Just(" manufacturer=\"m\""), Just(" model=\"m\""), Just("&amp;"),
        Just("&bogus;"), Just("<![CDATA[x]]>"), Just("<!-- c -->"), Just("\""), Just("'"), Just("="),
        Just("\n"), Just("é"), Just("<?xml version=\"1.0\"?>"), Just("<!DOCTYPE p>"),
    ], 0..60)) {
        let text: String = parts.concat();
        if let Err(errors) = parse_profile(&text, "t.xml") {
            prop_assert!(!errors.is_empty());
            for e in errors {
                prop_assert!(e.line >= 1 && e.col >= 1);
            }
        }
    }

    #[test]
    fn mutated_profiles_never_panic(cut in 0usize..1000, insert in "\\PC{0,5}") {
        let mut text = GOOD.to_string();
        let mut at = cut.min(text.len());
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.insert_str(at, &insert);
        let _ = parse_profile(&text, "t.xml");
    }
}

#[test]
fn profiles_resolve_by_id_by_stem_and_by_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("acme.xml"), GOOD).unwrap();
    std::fs::write(dir.path().join("broken.xml"), "<profile").unwrap();
    let dirs = vec![dir.path().to_path_buf()];

    // By the id attribute (the file is called acme.xml), skipping the broken file.
    assert_eq!(resolve_profile("test-meter", &dirs).unwrap().id, "test-meter");
    // By file stem.
    assert_eq!(resolve_profile("acme", &dirs).unwrap().id, "test-meter");
    // By path.
    let path = dir.path().join("acme.xml");
    let p = resolve_profile(path.to_str().unwrap(), &[]).unwrap();
    assert_eq!(p.path.as_deref(), Some(path.as_path()));
    // Not found, and found but invalid.
    match resolve_profile("nope", &dirs) {
        Err(ResolveError::NotFound { id, searched }) => {
            assert_eq!((id.as_str(), searched), ("nope", dirs.clone()))
        }
        other => panic!("{other:?}"),
    }
    match resolve_profile("broken", &dirs) {
        Err(ResolveError::Invalid(e)) => assert!(e[0].to_string().contains("broken.xml:1:")),
        other => panic!("{other:?}"),
    }
    assert!(matches!(resolve_profile("no/such.xml", &dirs), Err(ResolveError::NotFound { .. })));

    // The shipped profiles are found through the default search path from any working directory.
    assert_eq!(resolve_profile("eastron-sdm630", &default_search_dirs()).unwrap().id, "eastron-sdm630");
}

#[test]
fn a_library_reports_broken_files_and_keeps_the_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.xml"), GOOD).unwrap();
    std::fs::write(dir.path().join("b.xml"), GOOD).unwrap();
    std::fs::write(dir.path().join("c.xml"), edit(6, r#"    <modbus table="input" type="f32"/>"#)).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a profile").unwrap();
    let (lib, errors) = ProfileLibrary::load_dir(dir.path());
    assert_eq!(lib.len(), 1);
    assert!(lib.find("test-meter").is_some());
    assert!(lib.find(dir.path().join("a.xml").to_str().unwrap()).is_some());
    let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(shown.len(), 2, "{shown:?}");
    assert!(shown[0].contains("b.xml: duplicate profile id \"test-meter\""), "{shown:?}");
    assert!(shown[1].contains("c.xml:6:5: missing attribute \"register\""), "{shown:?}");

    // `profiles check` on the same files: one duplicate id and one missing register.
    let checked = check_paths(&[dir.path().to_path_buf()]);
    assert_eq!(checked.len(), 2);
    let empty = tempfile::tempdir().unwrap();
    assert!(check_paths(&[empty.path().to_path_buf()])[0].message.contains("no *.xml"));
}

#[test]
fn sdm630_is_read_in_few_requests() {
    let p = load_profile(&devices_dir().join("eastron-sdm630.xml")).unwrap();
    let plan = plan_modbus(&p);
    assert_eq!(plan.items.len(), p.values.len());
    // 38 values in 8 contiguous runs of the register map.
    assert_eq!(plan.requests(), 8, "{:#?}", plan.blocks);
    for b in &plan.blocks {
        assert!(b.count <= p.modbus.max_block);
        for &m in &b.members {
            assert!(b.contains(&plan.items[m]));
        }
    }
    let covered: usize = plan.blocks.iter().map(|b| b.members.len()).sum();
    assert_eq!(covered, p.values.len());

    // The EM24 limit of 11 registers per request is honoured.
    let em24 = load_profile(&devices_dir().join("carlo-gavazzi-em24.xml")).unwrap();
    assert!(plan_modbus(&em24).blocks.iter().all(|b| b.count <= 11));
}

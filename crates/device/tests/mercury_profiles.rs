//! Mercury profiles as users rely on them: the shipped Mercury 230 / 234 profiles read what hourly
//! accounting needs, profile sources become the documented request bytes, and every mistake in a Mercury
//! profile is a `file:line:col` error (a password never goes into a profile).

use std::path::{Path, PathBuf};

use ami_device::mercury::{
    load_mercury_profile, parse_mercury_profile, resolve_mercury_profile, EnergyQuantity, MercuryOptions,
    MercuryParameter, MercuryProfile, MercurySource,
};
use ami_device::{load_profile, parse_profile, Protocol, ResolveError, ValueKind};
use ami_protocols::mercury::{Address, Bwri, EnergyArray, Level, Request, Tariff};

fn devices_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../devices")
}

fn shipped(id: &str) -> MercuryProfile {
    load_mercury_profile(&devices_dir().join(format!("{id}.xml")))
        .unwrap_or_else(|e| panic!("{id}: {}", e.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")))
}

/// The request a profile source stands for (what the collector sends for it).
fn request(source: &MercurySource) -> Request {
    match *source {
        MercurySource::Energy { array, tariff, .. } => Request::ReadEnergy { array, tariff: Tariff(tariff) },
        MercurySource::PhaseEnergy { tariff, .. } => {
            Request::ReadEnergy { array: EnergyArray::PhasesFromReset, tariff: Tariff(tariff) }
        }
        MercurySource::Instant(bwri) => Request::ReadInstant(bwri),
        MercurySource::Parameter(_) => Request::ReadSerial,
    }
}

const GOOD: &str = r#"<profile id="m" protocol="mercury" manufacturer="Incotex" model="Mercury 230" document="d">
  <line baud="9600" address="128"/>
  <mercury level="2" multiplier="3" profile-records="2048"/>
  <value name="energy_january" obis="1-0:1.8.0*1" unit="Wh"><mercury energy="month" month="1" quantity="A+"/></value>
  <value name="u1" obis="1-0:32.7.0" unit="V"><mercury instant="voltage" phase="1"/></value>
  <value name="f" obis="1-0:14.7.0" unit="Hz"><mercury instant="frequency"/></value>
  <value name="p" obis="1-0:16.7.0" unit="W"><mercury instant="power-active"/></value>
  <value name="t" obis="0-0:96.9.0" unit="degC"><mercury instant="temperature"/></value>
  <value name="serial" obis="0-0:96.1.0" unit=""><mercury parameter="serial"/></value>
  <value name="a_l2" obis="1-0:41.8.0" unit="Wh"><mercury energy="phases" phase="2" tariff="1"/></value>
  <load-profile name="lp" obis="1-0:99.1.0" period="1800">
    <column quantity="A+" name="import_wh"/>
    <column quantity="R-"/>
  </load-profile>
</profile>
"#;

fn errors(text: &str) -> Vec<String> {
    match parse_mercury_profile(text, "devices/m.xml") {
        Ok(p) => panic!("expected errors, parsed {p:?}"),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

/// `GOOD` with line `line` (1-based) replaced.
fn edit(line: usize, new: &str) -> String {
    let mut lines: Vec<&str> = GOOD.lines().collect();
    lines[line - 1] = new;
    lines.join("\n") + "\n"
}

#[test]
fn shipped_mercury_230_reads_energy_instant_values_and_the_half_hour_profile() {
    let p = shipped("mercury-230");
    assert_eq!((p.id.as_str(), p.manufacturer.as_str()), ("mercury-230", "Incotex"));
    assert_eq!(p.options, MercuryOptions { level: Level::User, multiplier: 1, profile_records: 4096 });
    assert_eq!(p.line.baud, Some(9600));
    assert_eq!(p.line.address, None, "the network address is site config");
    let e = p.value("energy_import_total").expect("A+ total");
    assert_eq!(
        e.source,
        MercurySource::Energy { array: EnergyArray::FromReset, tariff: 0, quantity: EnergyQuantity::ActiveImport }
    );
    assert_eq!((e.unit.as_str(), e.kind, e.obis.to_string().as_str()), ("Wh", ValueKind::Counter, "1-0:1.8.0*255"));
    let r = p.value("reactive_export_total").expect("R- total");
    assert_eq!(r.unit, "varh");
    assert_eq!(
        p.value("energy_import_t3").map(|v| v.source),
        Some(MercurySource::Energy {
            array: EnergyArray::FromReset,
            tariff: 3,
            quantity: EnergyQuantity::ActiveImport
        })
    );
    assert_eq!(p.value("energy_import_l3").map(|v| v.source), Some(MercurySource::PhaseEnergy { tariff: 0, phase: 3 }));
    assert_eq!(p.value("voltage_l2").map(|v| v.source), Some(MercurySource::Instant(Bwri::voltage(2))));
    assert_eq!(p.value("power_active").map(|v| v.source), Some(MercurySource::Instant(Bwri::active_power(0))));
    assert_eq!(p.value("power_reactive").map(|v| v.source), Some(MercurySource::Instant(Bwri::reactive_power(0))));
    assert_eq!(p.value("frequency").map(|v| v.source), Some(MercurySource::Instant(Bwri::FREQUENCY)));
    assert_eq!(
        p.value("temperature").map(|v| (v.source, v.unit.as_str())),
        Some((MercurySource::Instant(Bwri::TEMPERATURE), "degC"))
    );
    let serial = p.value("serial_number").expect("serial");
    assert_eq!((serial.source, serial.kind), (MercurySource::Parameter(MercuryParameter::Serial), ValueKind::Static));
    let lp = p.load_profile.as_ref().expect("power profile");
    assert_eq!((lp.name.as_str(), lp.period_s), ("power_profile", 1800));
    let columns: Vec<(EnergyQuantity, &str)> = lp.columns.iter().map(|c| (c.quantity, c.name.as_str())).collect();
    assert_eq!(
        columns,
        [
            (EnergyQuantity::ActiveImport, "obis_1_0_1_29_0"),
            (EnergyQuantity::ActiveExport, "obis_1_0_2_29_0"),
            (EnergyQuantity::ReactiveImport, "obis_1_0_3_29_0"),
            (EnergyQuantity::ReactiveExport, "obis_1_0_4_29_0"),
        ]
    );
    // Names and store keys are unique, and every value's unit is the one its quantity comes in.
    let mut keys: Vec<_> = p.values.iter().map(|v| v.obis).chain([lp.obis]).collect();
    keys.sort_by_key(|o| o.0);
    keys.dedup();
    assert_eq!(keys.len(), p.values.len() + 1);
    for v in &p.values {
        assert_eq!(v.unit, v.source.unit(), "{}", v.name);
    }
}

#[test]
fn shipped_mercury_234_reads_hourly_records_and_line_voltages() {
    let p = shipped("mercury-234");
    assert_eq!(p.load_profile.as_ref().map(|lp| lp.period_s), Some(3600));
    assert_eq!(p.value("line_voltage_l1_l2").map(|v| v.source), Some(MercurySource::Instant(Bwri(0x81))));
    // The 234 reads everything the 230 profile reads.
    let p230 = shipped("mercury-230");
    for v in &p230.values {
        let w = p.value(&v.name).unwrap_or_else(|| panic!("234 lacks {}", v.name));
        assert_eq!((w.source, w.obis), (v.source, v.obis), "{}", v.name);
    }
}

#[test]
fn profile_sources_are_the_documented_request_bytes() {
    let p = parse_mercury_profile(GOOD, "devices/m.xml").expect("valid");
    // Byte examples of mercury230.md (address 0x80).
    let bytes = |name: &str| request(&p.value(name).expect(name).source).encode(Address(0x80));
    assert_eq!(bytes("energy_january"), [0x80, 0x05, 0x31, 0x00, 0x2C, 0x75]);
    assert_eq!(bytes("u1"), [0x80, 0x08, 0x11, 0x11, 0x64, 0x7A]);
    assert_eq!(bytes("f"), [0x80, 0x08, 0x11, 0x40, 0xA5, 0x86]);
    assert_eq!(bytes("serial"), [0x80, 0x08, 0x00, 0x77, 0xE8]);
    // (address 0x00) P sum and temperature.
    let at0 = |name: &str| request(&p.value(name).expect(name).source).encode(Address(0x00));
    assert_eq!(at0("p"), [0x00, 0x08, 0x11, 0x00, 0x8D, 0xB6]);
    assert_eq!(at0("t"), [0x00, 0x08, 0x11, 0x70, 0x8C, 0x52]);
    // The rest of the model.
    assert_eq!(p.options, MercuryOptions { level: Level::Admin, multiplier: 3, profile_records: 2048 });
    assert_eq!(p.line.address, Some(128));
    assert_eq!(p.value("a_l2").map(|v| v.source), Some(MercurySource::PhaseEnergy { tariff: 1, phase: 2 }));
    let lp = p.load_profile.expect("lp");
    let columns: Vec<(EnergyQuantity, &str)> = lp.columns.iter().map(|c| (c.quantity, c.name.as_str())).collect();
    assert_eq!(
        columns,
        [(EnergyQuantity::ActiveImport, "import_wh"), (EnergyQuantity::ReactiveExport, "obis_1_0_4_29_0")]
    );
    // The common view knows the protocol and keeps Mercury values out of Profile::values.
    let common = parse_profile(GOOD, "devices/m.xml").expect("valid");
    assert_eq!(common.protocol, Protocol::Mercury);
    assert!(common.values.is_empty() && common.controls.is_empty());
}

#[test]
fn a_password_in_a_profile_points_at_the_site_config() {
    let text = edit(3, r#"  <mercury level="1" password="010101010101"/>"#);
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("devices/m.xml:3:22: attribute \"password\" on <mercury>: keys and passwords never go"));
    assert!(e[0].contains("site config (amid.toml) or its secrets file"), "{}", e[0]);
    let text = edit(
        5,
        r#"  <value name="u1" obis="1-0:32.7.0" unit="V"><mercury instant="voltage" phase="1" pwd-key="x"/></value>"#,
    );
    assert!(errors(&text)[0].contains("keys and passwords never go in a profile"));
}

#[test]
fn mistakes_in_mercury_sources_are_located_and_explained() {
    let cases: &[(usize, &str, &str)] = &[
        (
            5,
            r#"  <value name="u1" obis="1-0:32.7.0" unit="V"><mercury instant="voltage"/></value>"#,
            "devices/m.xml:5:47: instant=\"voltage\" needs phase=\"1\", \"2\" or \"3\"",
        ),
        (
            6,
            r#"  <value name="f" obis="1-0:14.7.0" unit="Hz"><mercury instant="frequency" phase="1"/></value>"#,
            "devices/m.xml:6:76: attribute \"phase\" does not apply to instant=\"frequency\"",
        ),
        (
            5,
            r#"  <value name="u1" obis="1-0:32.7.0" unit="V"><mercury instant="voltage" phase="4"/></value>"#,
            "devices/m.xml:5:81: bad phase (1..3) \"4\" in attribute \"phase\"",
        ),
        (
            5,
            r#"  <value name="u1" obis="1-0:32.7.0" unit="V"><mercury instant="volts" phase="1"/></value>"#,
            "devices/m.xml:5:65: unknown instantaneous quantity \"volts\" (expected one of voltage, current, angle, \
             thd, line-voltage, power-active, power-reactive, power-apparent, power-factor, frequency, temperature)",
        ),
        (
            4,
            r#"  <value name="e" obis="1-0:1.8.0" unit="kWh"><mercury energy="from-reset" quantity="A+"/></value>"#,
            "unknown unit \"kWh\"",
        ),
        (
            4,
            r#"  <value name="e" obis="1-0:1.8.0" unit="varh"><mercury energy="from-reset" quantity="A+"/></value>"#,
            "devices/m.xml:4:42: unit \"varh\" does not match the Mercury source, which reads in \"Wh\"",
        ),
        (
            4,
            r#"  <value name="e" obis="1-0:1.8.0" unit="Wh"><mercury energy="month" quantity="A+"/></value>"#,
            "devices/m.xml:4:46: energy=\"month\" needs month=\"1\"..\"12\"",
        ),
        (
            4,
            r#"  <value name="e" obis="1-0:1.8.0" unit="Wh"><mercury energy="month" month="13" quantity="A+"/></value>"#,
            "bad month (1..12) \"13\"",
        ),
        (
            4,
            r#"  <value name="e" obis="1-0:1.8.0" unit="Wh"><mercury energy="from-reset"/></value>"#,
            "devices/m.xml:4:46: missing attribute \"quantity\" on <mercury> (A+, A-, R+ or R-)",
        ),
        (
            4,
            r#"  <value name="e" obis="1-0:1.8.0" unit="Wh"><mercury energy="from-reset" quantity="A+" tariff="5"/></value>"#,
            "bad tariff (0 = sum of tariffs, 1..4) \"5\"",
        ),
        (
            4,
            r#"  <value name="e" obis="1-0:1.8.0" unit="Wh"><mercury energy="phases" phase="1" quantity="R+"/></value>"#,
            "energy=\"phases\" holds A+ per phase only, not quantity \"R+\"",
        ),
        (
            4,
            r#"  <value name="e" obis="1-0:1.8.0" unit="Wh"><mercury energy="from-reset" quantity="A+" instant="voltage"/></value>"#,
            "attribute \"instant\" together with \"energy\": a <mercury> source reads one thing",
        ),
        (
            4,
            r#"  <value name="e" obis="1-0:1.8.0" unit="Wh"><mercury/></value>"#,
            "<mercury> in <value> names nothing to read",
        ),
        (
            4,
            r#"  <value name="e" obis="1-0:1.8.0" unit="Wh"><modbus table="input" register="0" type="u32"/></value>"#,
            "<modbus> source in a profile whose protocol is not modbus",
        ),
        (3, r#"  <mercury level="3"/>"#, "bad access level \"3\" in attribute \"level\" (expected 1 = user"),
        (3, r#"  <mercury multiplier="0"/>"#, "bad timing multiplier (1..255) \"0\""),
        (2, r#"  <line address="241"/>"#, "bad Mercury network address (0..240) \"241\""),
        (
            11,
            r#"  <load-profile name="lp" obis="1-0:99.1.0" period="90">"#,
            "period 90: a Mercury power profile integrates over whole minutes",
        ),
        (12, r#"    <column quantity="A*"/>"#, "unknown energy quantity \"A*\" (expected one of A+, A-, R+, R-)"),
        (13, r#"    <column quantity="A+"/>"#, "devices/m.xml:13:5: duplicate column A+ (first at line 12)"),
        (
            10,
            r#"  <control name="relay"><mercury/></control>"#,
            "devices/m.xml:10:3: <control> in a mercury profile: ami does not switch Mercury load relays",
        ),
    ];
    for (line, new, wanted) in cases {
        let e = errors(&edit(*line, new));
        assert!(e.iter().any(|m| m.contains(wanted)), "line {line} {new}\nwanted: {wanted}\ngot: {e:#?}");
        assert!(e.iter().all(|m| m.starts_with("devices/m.xml:")), "{e:?}");
    }
}

#[test]
fn a_meter_stores_one_power_profile_and_profile_options_belong_to_mercury() {
    let second =
        GOOD.replace("</profile>", "  <load-profile name=\"lp2\" obis=\"1-0:99.2.0\" period=\"3600\"/>\n</profile>");
    let e = errors(&second);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("devices/m.xml:15:3: second <load-profile> \"lp2\": a Mercury meter stores one power"));
    // <mercury> options in a Modbus profile, and a Mercury source in a DLMS profile.
    let text =
        "<profile protocol=\"modbus\" manufacturer=\"A\" model=\"B\">\n  <mercury level=\"1\"/>\n  <value name=\"x\" \
                obis=\"1-0:1.8.0\" unit=\"Wh\"><mercury energy=\"from-reset\" quantity=\"A+\"/></value>\n</profile>\n";
    let e: Vec<String> = parse_profile(text, "t.xml").expect_err("refused").iter().map(ToString::to_string).collect();
    assert_eq!(
        e,
        [
            "t.xml:2:3: <mercury> options in a profile whose protocol is not mercury",
            "t.xml:3:46: <mercury> source does not match the profile's protocol \"modbus\"",
        ]
    );
    // An empty Mercury profile says what it may hold.
    let empty = "<profile protocol=\"mercury\" manufacturer=\"A\" model=\"B\">\n</profile>\n";
    assert_eq!(errors(empty), ["devices/m.xml:1:1: empty profile: <profile> defines no <value> or <load-profile>"]);
}

#[test]
fn mercury_profiles_resolve_by_id_and_other_protocols_are_refused() {
    let dirs = [devices_dir()];
    let p = resolve_mercury_profile("mercury-234", &dirs).expect("found by id");
    assert_eq!(p.model, "Mercury 234 ARTM");
    assert!(p.path.is_some());
    let common = load_profile(&devices_dir().join("mercury-230.xml")).expect("valid");
    assert_eq!(MercuryProfile::from_profile(&common).map(|m| m.id), Ok("mercury-230".to_string()));
    match resolve_mercury_profile("eastron-sdm630", &dirs) {
        Err(ResolveError::Invalid(e)) => {
            assert!(e[0].to_string().contains("protocol \"modbus\" is not mercury: not a Mercury profile"), "{e:?}");
        }
        other => panic!("a Modbus profile as Mercury: {other:?}"),
    }
    assert!(matches!(resolve_mercury_profile("no-such-meter", &dirs), Err(ResolveError::NotFound { .. })));
}

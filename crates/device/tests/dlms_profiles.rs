//! DLMS profiles as users rely on them: the shipped ones parse into the objects and association defaults
//! their documents name, the defaults of an omitted `<dlms>` are the public client's, and every mistake is
//! reported at its `file:line:col` — keys and passwords included, which never belong in a profile.

use std::path::{Path, PathBuf};

use ami_device::dlms::{
    load_dlms_profile, parse_dlms_profile, resolve_dlms_profile, DlmsAuth, DlmsColumnDef, DlmsControlDef, DlmsFraming,
    DlmsLoadProfileDef, DlmsOptions, DlmsProfile, DlmsValueDef,
};
use ami_device::mbus::parse_mbus_profile;
use ami_device::{parse_profile, resolve_profile, LineDefaults, Obis, ProfileLibrary, Protocol, ValueKind};

fn devices_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../devices")
}

fn obis(s: &str) -> Obis {
    s.parse().unwrap()
}

/// A valid DLMS profile; the broken variants below edit single lines of it.
const GOOD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<profile id="test-dlms" protocol="dlms" manufacturer="Acme" model="D1" document="Acme D1 object list v3">
  <line baud="9600" parity="none" data="8" stop="1" timeout="2s"/>
  <dlms client="32" server-logical="1" server-physical="17" authentication="low" ciphering="true" max-info="256" window="3"/>
  <value name="energy_import" obis="1-0:1.8.0" unit="Wh" description="A+">
    <dlms class="3" attribute="2"/>
  </value>
  <value name="voltage_l1" obis="1-0:32.7.0"><dlms class="3"/></value>
  <value name="serial" obis="0-0:96.1.0"><dlms class="1"/></value>
  <load-profile name="lp" obis="1-0:99.1.0" period="900">
    <column obis="1-0:1.8.0" attribute="2" name="energy_import"/>
    <column obis="1-0:2.8.0"/>
  </load-profile>
  <control name="relay" description="breaker">
    <dlms class="70" obis="0-0:96.3.10"/>
  </control>
</profile>
"#;

/// Replaces line `line` (1-based) of [`GOOD`] by `with`.
fn edit(line: usize, with: &str) -> String {
    let mut lines: Vec<&str> = GOOD.lines().collect();
    lines[line - 1] = with;
    lines.join("\n") + "\n"
}

/// The errors of `text` (parsed as `devices/d.xml`) as displayed; the common and the DLMS view agree.
fn errors(text: &str) -> Vec<String> {
    let dlms = match parse_dlms_profile(text, "devices/d.xml") {
        Ok(p) => panic!("expected errors, parsed {p:?}"),
        Err(e) => e.iter().map(ToString::to_string).collect::<Vec<_>>(),
    };
    let common: Vec<String> =
        parse_profile(text, "devices/d.xml").unwrap_err().iter().map(ToString::to_string).collect();
    assert_eq!(dlms, common, "the DLMS view and the common view report different errors");
    dlms
}

/// `devices/d.xml:LINE:COL: ` where COL is the 1-based column of `needle` in line `line` of `text`.
fn at(text: &str, line: usize, needle: &str) -> String {
    let col = text.lines().nth(line - 1).and_then(|l| l.find(needle)).expect("needle on line") + 1;
    format!("devices/d.xml:{line}:{col}: ")
}

/// Asserts `text` has exactly one error, at `needle` in `line`, whose message contains `message`.
fn one_error(text: &str, line: usize, needle: &str, message: &str) {
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    let prefix = at(text, line, needle);
    assert!(errs[0].starts_with(&prefix), "expected {prefix}…, got {}", errs[0]);
    assert!(errs[0].contains(message), "expected {message:?} in {}", errs[0]);
}

#[test]
fn a_dlms_profile_round_trips_into_the_model() {
    let p = parse_dlms_profile(GOOD, "devices/d.xml").expect("valid");
    let expected = DlmsProfile {
        id: "test-dlms".into(),
        path: None,
        manufacturer: "Acme".into(),
        model: "D1".into(),
        document: Some("Acme D1 object list v3".into()),
        line: LineDefaults {
            baud: Some(9600),
            parity: Some("none".into()),
            data_bits: Some(8),
            stop_bits: Some(1),
            address: None,
            timeout_ms: Some(2000),
        },
        options: DlmsOptions {
            client: 32,
            server_logical: 1,
            server_physical: Some(17),
            authentication: DlmsAuth::Low,
            ciphering: true,
            framing: DlmsFraming::Hdlc,
            optical: false,
            max_info: Some(256),
            window: Some(3),
        },
        values: vec![
            DlmsValueDef {
                name: "energy_import".into(),
                obis: obis("1-0:1.8.0"),
                class_id: 3,
                attribute: 2,
                kind: ValueKind::Counter,
                unit: Some("Wh".into()),
                description: Some("A+".into()),
            },
            DlmsValueDef {
                name: "voltage_l1".into(),
                obis: obis("1-0:32.7.0"),
                class_id: 3,
                attribute: 2,
                kind: ValueKind::Instantaneous,
                unit: None,
                description: None,
            },
            DlmsValueDef {
                name: "serial".into(),
                obis: obis("0-0:96.1.0"),
                class_id: 1,
                attribute: 2,
                kind: ValueKind::Static,
                unit: None,
                description: None,
            },
        ],
        load_profiles: vec![DlmsLoadProfileDef {
            name: "lp".into(),
            obis: obis("1-0:99.1.0"),
            period_s: 900,
            columns: vec![
                DlmsColumnDef { obis: obis("1-0:1.8.0"), attribute: Some(2), name: "energy_import".into() },
                DlmsColumnDef { obis: obis("1-0:2.8.0"), attribute: None, name: "obis_1_0_2_8_0".into() },
            ],
            description: None,
        }],
        disconnect: Some(DlmsControlDef {
            name: "relay".into(),
            obis: obis("0-0:96.3.10"),
            description: Some("breaker".into()),
        }),
    };
    assert_eq!(p, expected);
    // The common view: protocol dlms, the DLMS objects only in the DLMS view.
    let common = parse_profile(GOOD, "devices/d.xml").unwrap();
    assert_eq!(common.protocol, Protocol::Dlms);
    assert!(common.values.is_empty() && common.controls.is_empty());
    assert_eq!(common.line, p.line);
}

#[test]
fn an_omitted_dlms_element_means_the_public_client_over_hdlc() {
    let text = "<profile protocol=\"dlms\" manufacturer=\"A\" model=\"B\">\n  \
                <value name=\"e\" obis=\"1-0:1.8.0\"><dlms class=\"3\"/></value>\n</profile>\n";
    let p = parse_dlms_profile(text, "devices/minimal.xml").unwrap();
    assert_eq!(p.id, "minimal");
    assert_eq!(p.options, DlmsOptions::default());
    assert_eq!(
        p.options,
        DlmsOptions {
            client: 16,
            server_logical: 1,
            server_physical: None,
            authentication: DlmsAuth::None,
            ciphering: false,
            framing: DlmsFraming::Hdlc,
            optical: false,
            max_info: None,
            window: None,
        }
    );
    assert_eq!(p.line, LineDefaults::default());
    // Without unit or kind, an electricity energy code is a counter.
    assert_eq!(p.values[0].kind, ValueKind::Counter);
    assert!(p.load_profiles.is_empty() && p.disconnect.is_none());
    // A profile of load profiles only is a valid profile too.
    let text = "<profile protocol=\"dlms\" manufacturer=\"A\" model=\"B\">\n  \
                <load-profile name=\"lp\" obis=\"1-0:99.1.0\" period=\"60\"/>\n</profile>\n";
    assert_eq!(parse_dlms_profile(text, "devices/lp.xml").unwrap().load_profiles[0].period_s, 60);
}

#[test]
fn every_shipped_dlms_profile_parses_with_its_documented_defaults() {
    let (lib, errs) = ProfileLibrary::load_dir(devices_dir());
    assert!(errs.is_empty(), "{errs:?}");
    let dlms: Vec<_> = lib.profiles().iter().filter(|p| p.protocol == Protocol::Dlms).collect();
    assert!(dlms.len() >= 3, "generic plus at least two models: {dlms:?}");
    for p in &dlms {
        let d = DlmsProfile::from_profile(p).unwrap_or_else(|e| panic!("{}: {e}", p.id));
        assert!(d.document.as_deref().is_some_and(|s| !s.is_empty()), "{} cites no document", d.id);
        assert_eq!(d.line.address, None);
        assert_eq!(d.load_profile("load_profile_15min").map(|l| (l.obis, l.period_s)), Some((obis("1-0:99.1.0"), 900)));
        for v in &d.values {
            if v.unit.as_deref() == Some("Wh") || v.unit.as_deref() == Some("varh") {
                assert_eq!(v.kind, ValueKind::Counter, "{}/{}", d.id, v.name);
            }
        }
    }

    let generic = load_dlms_profile(&devices_dir().join("generic-iec62056.xml")).unwrap();
    assert_eq!(generic.options, DlmsOptions::default());
    let codes: Vec<String> = generic.values.iter().map(|v| v.obis.to_string()).collect();
    for code in [
        "1-0:1.8.0",
        "1-0:1.8.1",
        "1-0:1.8.2",
        "1-0:2.8.0",
        "1-0:2.8.1",
        "1-0:2.8.2",
        "1-0:32.7.0",
        "1-0:52.7.0",
        "1-0:72.7.0",
        "1-0:31.7.0",
        "1-0:51.7.0",
        "1-0:71.7.0",
        "1-0:21.7.0",
        "1-0:41.7.0",
        "1-0:61.7.0",
        "1-0:1.7.0",
        "1-0:2.7.0",
        "1-0:14.7.0",
    ] {
        assert!(codes.contains(&format!("{code}*255")), "generic profile lacks {code}");
    }
    assert!(generic.values.iter().all(|v| v.class_id == 3 && v.attribute == 2));
    assert_eq!(generic.value("frequency").and_then(|v| v.unit.as_deref()), Some("Hz"));
    assert!(generic.load_profiles[0].columns.is_empty(), "every capture object but the clock");
    assert_eq!(generic.disconnect.as_ref().map(|c| c.obis), Some(obis("0-0:96.3.10")));

    let sl7000 = resolve_dlms_profile("itron-sl7000", &[devices_dir()]).unwrap();
    assert_eq!(
        (sl7000.options.client, sl7000.options.server_logical, sl7000.options.authentication),
        (3, 1, DlmsAuth::Low)
    );
    let kaifa = resolve_dlms_profile("kaifa-ma309m", &[devices_dir()]).unwrap();
    assert_eq!((kaifa.options.client, kaifa.options.server_logical), (1, 1));
    assert_eq!((kaifa.options.authentication, kaifa.options.framing), (DlmsAuth::Low, DlmsFraming::Wrapper));
    assert!(kaifa.disconnect.is_some());
}

#[test]
fn other_protocols_are_not_dlms_profiles_and_the_reverse() {
    let modbus = devices_dir().join("eastron-sdm630.xml");
    let errs = load_dlms_profile(&modbus).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert!(errs[0].message.contains("protocol \"modbus\" is not dlms"), "{}", errs[0]);
    assert!(matches!(
        resolve_dlms_profile("generic-mbus", &[devices_dir()]),
        Err(ami_device::ResolveError::Invalid(_))
    ));
    let errs = parse_mbus_profile(GOOD, "devices/d.xml").unwrap_err();
    assert!(errs[0].to_string().starts_with(&at(GOOD, 2, "dlms\" manufacturer")), "{}", errs[0]);
    // A DLMS profile through the generic resolver keeps its path, so the DLMS view can be reloaded.
    let p = resolve_profile("generic-iec62056", &[devices_dir()]).unwrap();
    assert_eq!(DlmsProfile::from_profile(&p).unwrap().path, p.path);
}

#[test]
fn keys_and_passwords_are_refused_with_a_pointer_to_the_site_config() {
    for attr in ["password", "lls-password", "authentication-key", "block-cipher-key", "akey", "secret"] {
        let line = format!(r#"  <dlms client="32" authentication="low" {attr}="00000001"/>"#);
        let text = edit(4, &line);
        one_error(&text, 4, attr, "keys and passwords never go in a profile");
        assert!(errors(&text)[0].contains("site config (amid.toml) or its secrets file"));
    }
    // Anywhere in the file, not only on <dlms>.
    let text = edit(8, r#"  <value name="voltage_l1" obis="1-0:32.7.0" password="x"><dlms class="3"/></value>"#);
    one_error(&text, 8, "password", "keys and passwords never go in a profile");
}

#[test]
fn association_options_are_checked() {
    let cases: [(&str, &str, &str); 9] = [
        (r#"  <dlms client="0"/>"#, "0\"", "bad client SAP (1..127) \"0\""),
        (r#"  <dlms client="128"/>"#, "128", "bad client SAP (1..127)"),
        (r#"  <dlms server-logical="16382"/>"#, "16382", "bad server logical address (1..16381)"),
        (
            r#"  <dlms authentication="high"/>"#,
            "high",
            "unknown authentication \"high\" (expected one of none, low, high-gmac)",
        ),
        (r#"  <dlms framing="tcp"/>"#, "tcp", "unknown framing \"tcp\" (expected one of hdlc, wrapper)"),
        (r#"  <dlms ciphering="yes"/>"#, "yes", "unknown ciphering value \"yes\""),
        (r#"  <dlms max-info="2031"/>"#, "2031", "bad HDLC max information field length (32..2030)"),
        (r#"  <dlms window="8"/>"#, "8\"", "bad HDLC window size (1..7)"),
        (r#"  <dlms framing="wrapper" server-physical="17"/>"#, "server-physical", "applies to HDLC framing only"),
    ];
    for (line, needle, message) in cases {
        one_error(&edit(4, line), 4, needle, message);
    }
    one_error(
        &edit(4, r#"  <dlms clinet="16"/>"#),
        4,
        "clinet",
        "unknown attribute \"clinet\" on <dlms> (expected one of client,",
    );
    one_error(
        &edit(3, r#"  <line baud="9600" address="5"/>"#),
        3,
        "address",
        "\"address\" does not apply to a DLMS profile",
    );
    let text = GOOD.replace("</profile>", "  <dlms client=\"1\"/>\n</profile>");
    one_error(&text, 17, "<dlms", "duplicate <dlms> element (first one at line 4)");
}

#[test]
fn values_name_an_object_the_client_can_read() {
    one_error(
        &edit(8, r#"  <value name="voltage_l1" obis="1-0:32.7"><dlms class="3"/></value>"#),
        8,
        "1-0:32.7",
        "bad OBIS code",
    );
    one_error(
        &edit(8, r#"  <value name="voltage_l1" obis="1-0:32.7.0"><dlms class="2"/></value>"#),
        8,
        "2\"",
        "class 2 is not read as a value",
    );
    one_error(
        &edit(8, r#"  <value name="voltage_l1" obis="1-0:32.7.0"><dlms class="7"/></value>"#),
        8,
        "7\"",
        "class 7 (Profile generic) is not a value: read it with <load-profile",
    );
    one_error(
        &edit(8, r#"  <value name="voltage_l1" obis="1-0:32.7.0"><dlms class="3" attribute="4"/></value>"#),
        8,
        "4\"",
        "class 3 (Register) has attributes 1..3, not 4",
    );
    one_error(
        &edit(8, r#"  <value name="voltage_l1" obis="1-0:32.7.0"><dlms class="3" attribute="0"/></value>"#),
        8,
        "0\"/>",
        "bad attribute index",
    );
    one_error(
        &edit(8, r#"  <value name="voltage_l1" obis="1-0:32.7.0"><dlms/></value>"#),
        8,
        "<dlms",
        "missing attribute \"class\" on <dlms>",
    );
    one_error(
        &edit(8, r#"  <value name="voltage_l1" obis="1-0:32.7.0"><dlms class="3" obis="1-0:32.7.0"/></value>"#),
        8,
        "obis=\"1-0:32.7.0\"/",
        "the value's own obis is the object's logical name",
    );
    one_error(
        &edit(8, r#"  <value name="voltage_l1" obis="1-0:32.7.0" unit="kV"><dlms class="3"/></value>"#),
        8,
        "kV",
        "write unit=\"V\"",
    );
    one_error(
        &edit(8, r#"  <value name="energy_import" obis="1-0:32.7.0"><dlms class="3"/></value>"#),
        8,
        "energy_import",
        "duplicate value name \"energy_import\" (first defined at line 5)",
    );
    one_error(
        &edit(8, r#"  <value name="voltage_l1" obis="1-0:1.8.0*255"><dlms class="3"/></value>"#),
        8,
        "1-0:1.8.0*255",
        "duplicate OBIS code 1-0:1.8.0*255",
    );
    one_error(
        &edit(8, r#"  <value name="voltage_l1" obis="1-0:32.7.0"><modbus table="input"/></value>"#),
        8,
        "<modbus",
        "<modbus> source in a profile whose protocol is not modbus",
    );
    one_error(
        &edit(8, r#"  <value name="voltage_l1" obis="1-0:32.7.0"><dlms class="3"/><dlms class="3"/></value>"#),
        8,
        "<dlms class=\"3\"/></",
        "more than one <dlms> source",
    );
    one_error(
        &edit(8, r#"  <registr name="voltage_l1"/>"#),
        8,
        "<registr",
        "unknown element <registr> in <profile> (expected one of line, dlms, value, load-profile, control)",
    );
}

#[test]
fn load_profiles_are_periodic_profile_generics() {
    one_error(&edit(10, r#"  <load-profile name="lp" obis="1-0:99.1.0" period="0">"#), 10, "0\">", "period 0");
    one_error(
        &edit(10, r#"  <load-profile name="lp" obis="1-0:99.1.0" period="900" class="3">"#),
        10,
        "3\">",
        "a load profile is a Profile generic, class 7",
    );
    one_error(
        &edit(10, r#"  <load-profile name="lp" obis="1-0:99.1.0" period="2678401">"#),
        10,
        "2678401",
        "longer than a month",
    );
    one_error(
        &edit(10, r#"  <load-profile name="lp" obis="1-0:99.1" period="900">"#),
        10,
        "1-0:99.1\"",
        "bad OBIS code",
    );
    one_error(
        &edit(10, r#"  <load-profile name="serial" obis="1-0:99.1.0" period="900">"#),
        10,
        "serial",
        "duplicate name \"serial\" (first defined at line 9)",
    );
    one_error(
        &edit(10, r#"  <load-profile name="lp" obis="1-0:99.1.0">"#),
        10,
        "<load-profile",
        "missing attribute \"period\"",
    );
    one_error(
        &edit(12, r#"    <column obis="1-0:1.8.0" attribute="2" name="x"/>"#),
        12,
        "<column",
        "duplicate column 1-0:1.8.0*255",
    );
    one_error(
        &edit(12, r#"    <column obis="1-0:2.8.0" name="energy_import"/>"#),
        12,
        "energy_import",
        "duplicate column name \"energy_import\" (first defined at line 11)",
    );
    one_error(
        &edit(12, r#"    <capture obis="1-0:2.8.0"/>"#),
        12,
        "<capture",
        "unknown element <capture> in <load-profile> (expected column)",
    );
    one_error(&edit(12, r#"    <column obis="1-0:2.8.0" name="Export"/>"#), 12, "Export", "bad column name");
    // A load profile in a Modbus profile.
    let text = "<profile protocol=\"modbus\" manufacturer=\"A\" model=\"B\">\n  \
                <load-profile name=\"lp\" obis=\"1-0:99.1.0\" period=\"900\"/>\n</profile>\n";
    let errs = parse_profile(text, "devices/d.xml").unwrap_err();
    assert!(
        errs.iter()
            .any(|e| e.to_string() == "devices/d.xml:2:3: <load-profile> in a profile whose protocol is not dlms"),
        "{errs:?}"
    );
}

#[test]
fn the_control_is_one_disconnect_control() {
    one_error(
        &edit(15, r#"    <dlms class="3" obis="0-0:96.3.10"/>"#),
        15,
        "3\"",
        "a DLMS control is a Disconnect control, class 70",
    );
    one_error(&edit(15, r#"    <dlms class="70"/>"#), 15, "<dlms", "missing attribute \"obis\" on <dlms>");
    one_error(
        &edit(15, r#"    <modbus coil="1"/>"#),
        15,
        "<modbus",
        "<modbus> target in a profile whose protocol is not modbus",
    );
    let text = GOOD.replace(
        "</profile>",
        "  <control name=\"relay2\"><dlms class=\"70\" obis=\"0-0:96.3.11\"/></control>\n</profile>",
    );
    one_error(
        &text,
        17,
        "<control",
        "second DLMS control \"relay2\": a DLMS profile has one disconnect control (\"relay\" at line 14)",
    );
}

#[test]
fn errors_are_sorted_and_all_reported() {
    let text = GOOD
        .replace(r#"client="32""#, r#"client="999""#)
        .replace(r#"period="900""#, r#"period="0""#)
        .replace(r#"class="70""#, r#"class="71""#);
    let errs = errors(&text);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(errs[0].starts_with("devices/d.xml:4:"));
    assert!(errs[1].starts_with("devices/d.xml:10:"));
    assert!(errs[2].starts_with("devices/d.xml:15:"));
}

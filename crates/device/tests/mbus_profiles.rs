//! M-Bus profile elements: a good profile parses into the model, every mistake is reported at its
//! `file:line:col`, and an M-Bus profile never passes for another protocol's.

use ami_device::mbus::{parse_mbus_profile, MbusSelect};
use ami_device::{parse_profile, Protocol, ValueKind};
use ami_protocols::mbus::app::Function;

const GOOD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<profile id="heat" protocol="mbus" manufacturer="Kamstrup" model="MULTICAL" document="doc 1.0">
  <line baud="2400" parity="even" data="8" stop="1" address="250" timeout="2s"/>
  <value name="energy_heat" obis="6-0:1.0.0" unit="Wh">
    <mbus quantity="Energy" function="instantaneous" storage="0" tariff="0" subunit="0" dif-vif="04 06"/>
  </value>
  <value name="volume" obis="6-0:2.0.0" unit="m3"><mbus quantity="Volume" scale="0.5"/></value>
  <value name="cust" obis="0-0:96.1.1" unit="" kind="static"><mbus description="cust. ID"/></value>
</profile>
"#;

/// `GOOD` with line `n` (1-based) replaced.
fn edit(n: usize, line: &str) -> String {
    let mut lines: Vec<&str> = GOOD.lines().collect();
    lines[n - 1] = line;
    lines.join("\n") + "\n"
}

fn errors(text: &str) -> Vec<String> {
    match parse_mbus_profile(text, "devices/t.xml") {
        Ok(p) => panic!("accepted: {p:#?}"),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

/// 1-based column of `needle` in line `line`.
fn col(text: &str, line: usize, needle: &str) -> usize {
    text.lines().nth(line - 1).and_then(|l| l.find(needle)).expect("needle on line") + 1
}

#[test]
fn a_good_profile_parses_into_the_model() {
    let p = parse_mbus_profile(GOOD, "devices/t.xml").unwrap();
    assert_eq!(p.profile.protocol, Protocol::Mbus);
    assert_eq!(p.profile.line.address, Some(250));
    assert_eq!(p.profile.line.timeout_ms, Some(2000));
    assert!(!p.all_records);
    assert_eq!(p.values.len(), 3);
    let e = &p.values[0];
    assert_eq!((e.name.as_str(), e.obis.to_string().as_str(), e.unit.as_str()), ("energy_heat", "6-0:1.0.0*255", "Wh"));
    assert_eq!(e.kind, ValueKind::Counter);
    assert_eq!(e.line, 4);
    assert_eq!(
        e.select,
        MbusSelect {
            dif_vif: Some(vec![0x04, 0x06]),
            quantity: Some("Energy".into()),
            function: Some(Function::Instantaneous),
            storage: Some(0),
            tariff: Some(0),
            subunit: Some(0),
            description: None,
            scale: 1.0,
        }
    );
    assert_eq!(p.values[1].select.scale, 0.5);
    assert_eq!(p.values[2].select.description.as_deref(), Some("cust. ID"));
    // The protocol-independent view: valid, with the M-Bus values kept in the M-Bus part.
    let common = parse_profile(GOOD, "devices/t.xml").unwrap();
    assert_eq!(common.protocol, Protocol::Mbus);
    assert!(common.values.is_empty());
    assert_eq!(common, p.profile);
}

#[test]
fn the_generic_option_needs_no_values() {
    let text = "<profile id=\"g\" protocol=\"mbus\" manufacturer=\"a\" model=\"b\">\n  <mbus all-records=\"true\"/>\n</profile>\n";
    let p = parse_mbus_profile(text, "g.xml").unwrap();
    assert!(p.all_records && p.values.is_empty());
    let text = "<profile id=\"g\" protocol=\"mbus\" manufacturer=\"a\" model=\"b\">\n</profile>\n";
    assert_eq!(
        errors(text),
        ["devices/t.xml:1:1: empty profile: <profile> defines no <value> (or <mbus all-records=\"true\"/>)"]
    );
    let text = "<profile id=\"g\" protocol=\"mbus\" manufacturer=\"a\" model=\"b\">\n  <mbus all-records=\"yes\" x=\"1\"/>\n</profile>\n";
    assert_eq!(
        errors(text),
        [
            "devices/t.xml:1:1: empty profile: <profile> defines no <value> (or <mbus all-records=\"true\"/>)",
            "devices/t.xml:2:22: unknown all-records value \"yes\" (expected one of true, false)",
            "devices/t.xml:2:27: unknown attribute \"x\" on <mbus> (expected one of all-records)",
        ]
    );
}

#[test]
fn unknown_attributes_and_elements_are_located() {
    let text = edit(7, r#"  <value name="volume" obis="6-0:2.0.0" unit="m3"><mbus quantty="Volume"/></value>"#);
    let c = col(&text, 7, "quantty");
    let e = errors(&text);
    assert_eq!(e.len(), 2, "{e:#?}");
    assert_eq!(
        e[0],
        format!(
            "devices/t.xml:7:{}: <mbus> selects no record: give \"dif-vif\", \"quantity\" or \"description\"",
            col(&text, 7, "<mbus")
        )
    );
    assert_eq!(
        e[1],
        format!(
            "devices/t.xml:7:{c}: unknown attribute \"quantty\" on <mbus> (expected one of dif-vif, quantity, \
             function, storage, tariff, subunit, description, scale)"
        )
    );
    let text =
        edit(7, r#"  <value name="volume" obis="6-0:2.0.0" unit="m3"><mbus quantity="Volume"><x/></mbus></value>"#);
    assert_eq!(
        errors(&text),
        [format!(
            "devices/t.xml:7:{}: unexpected element <x> inside <mbus> (it takes no children)",
            col(&text, 7, "<x/>")
        )]
    );
}

#[test]
fn bad_selector_values_are_located_at_the_value() {
    for (attr, value, message) in [
        ("dif-vif", "04 0G", "bad dif-vif \"04 0G\" (expected hex bytes, e.g. \"04 06\")"),
        ("dif-vif", "4 06", "bad dif-vif \"4 06\" (expected hex bytes, e.g. \"04 06\")"),
        (
            "dif-vif",
            "84 06",
            "dif-vif \"84 06\" is not one record header (DIF, DIFEs, VIF, VIFEs with consistent extension bits)",
        ),
        (
            "dif-vif",
            "04 06 00",
            "dif-vif \"04 06 00\" is not one record header (DIF, DIFEs, VIF, VIFEs with consistent extension bits)",
        ),
        (
            "function",
            "max",
            "unknown function \"max\" (expected one of instantaneous, maximum, minimum, error, actual, stored)",
        ),
        ("storage", "-1", "bad storage number (0..2^41-1) \"-1\" in attribute \"storage\""),
        ("tariff", "x", "bad tariff (0..2^20-1) \"x\" in attribute \"tariff\""),
        ("subunit", "1024", "bad sub-unit (0..1023) \"1024\" in attribute \"subunit\""),
        ("scale", "0", "scale must not be 0"),
        ("scale", "1e999", "bad number \"1e999\" in attribute \"scale\""),
        ("quantity", " ", "attribute \"quantity\" on <mbus> is empty"),
    ] {
        let line = format!(
            r#"  <value name="volume" obis="6-0:2.0.0" unit="m3"><mbus dif-vif="04 14" {attr}="{value}"/></value>"#
        );
        let line = if attr == "dif-vif" {
            format!(r#"  <value name="volume" obis="6-0:2.0.0" unit="m3"><mbus dif-vif="{value}"/></value>"#)
        } else {
            line
        };
        let text = edit(7, &line);
        let c = col(&text, 7, &format!("{attr}=\"{value}\"")) + attr.len() + 2;
        assert_eq!(errors(&text), [format!("devices/t.xml:7:{c}: {message}")], "{attr}={value}");
    }
}

#[test]
fn explicit_criteria_must_agree_with_dif_vif() {
    // 44 06: storage 1; 14 06: maximum; 84 10 06: tariff 1; 84 40 06: sub-unit 1.
    for (dif_vif, attr, value, implied) in [
        ("44 06", "storage", "0", "storage 1"),
        ("14 06", "function", "instantaneous", "function Maximum value"),
        ("84 10 06", "tariff", "2", "tariff 1"),
        ("84 40 06", "subunit", "0", "subunit 1"),
    ] {
        let line = format!(r#"    <mbus dif-vif="{dif_vif}" {attr}="{value}"/>"#);
        let text = edit(5, &line);
        let c = col(&text, 5, &format!("{attr}=\"")) + attr.len() + 2;
        assert_eq!(
            errors(&text),
            [format!("devices/t.xml:5:{c}: {attr} {value} contradicts dif-vif \"{dif_vif}\", which means {implied}")]
        );
    }
    // Consistent ones are fine.
    let text = edit(5, r#"    <mbus dif-vif="84 50 06" tariff="1" subunit="1" storage="0" function="instantaneous"/>"#);
    assert!(parse_mbus_profile(&text, "t.xml").is_ok());
}

#[test]
fn protocols_do_not_mix() {
    // A Modbus source and options in an M-Bus profile.
    let text = edit(
        7,
        r#"  <value name="volume" obis="6-0:2.0.0" unit="m3"><modbus table="input" register="0" type="f32"/></value>"#,
    );
    assert_eq!(
        errors(&text),
        [format!(
            "devices/t.xml:7:{}: <modbus> source in a profile whose protocol is not modbus",
            col(&text, 7, "<modbus")
        )]
    );
    // An M-Bus source in a Modbus profile.
    let text = GOOD.replace(r#"protocol="mbus""#, r#"protocol="modbus""#);
    let e = match parse_profile(&text, "devices/t.xml") {
        Ok(p) => panic!("accepted {p:?}"),
        Err(e) => e,
    };
    // (Address 250 is an M-Bus address, not a Modbus one: that is reported too.)
    let located: Vec<(u32, u32)> = e
        .iter()
        .filter(|e| e.message == "<mbus> source in a profile whose protocol is not mbus")
        .map(|e| (e.line, e.col))
        .collect();
    assert_eq!(located, [(5, 5), (7, 51), (8, 62)], "{e:#?}");
    assert!(e.iter().any(|e| e.message.contains("bad Modbus address (1..247) \"250\"")));
    // A Modbus profile is not an M-Bus profile: the error points at the protocol.
    let modbus = "<profile id=\"m\" protocol=\"modbus\" manufacturer=\"a\" model=\"b\">\n  <value name=\"v\" obis=\"1-0:32.7.0\" unit=\"V\"><modbus table=\"input\" register=\"0\" type=\"f32\"/></value>\n</profile>\n";
    assert_eq!(errors(modbus), ["devices/t.xml:1:27: protocol \"modbus\" is not mbus: not an M-Bus profile"]);
    // Controls and out-of-range primary addresses.
    let text = edit(8, r#"  <control name="relay"><mbus/></control>"#);
    assert_eq!(
        errors(&text),
        ["devices/t.xml:8:3: <control> in an mbus profile: M-Bus profiles have no writable controls"]
    );
    let text = edit(3, r#"  <line address="251"/>"#);
    assert_eq!(
        errors(&text),
        ["devices/t.xml:3:18: bad M-Bus primary address (0..250) \"251\" in attribute \"address\""]
    );
    // Duplicate profile-level <mbus>.
    let text = edit(3, r#"  <mbus all-records="false"/><mbus/>"#);
    assert_eq!(errors(&text), ["devices/t.xml:3:30: duplicate <mbus> element (first one at line 3)"]);
}

#[test]
fn mutated_mbus_profiles_never_panic() {
    // Every prefix of a good profile, and every single-byte deletion: errors or a profile, never a panic.
    for end in 0..GOOD.len() {
        if let Some(prefix) = GOOD.get(..end) {
            let _ = parse_mbus_profile(prefix, "t.xml");
        }
    }
    for at in 0..GOOD.len() {
        if GOOD.is_char_boundary(at) && GOOD.is_char_boundary(at + 1) {
            let text = format!("{}{}", &GOOD[..at], &GOOD[at + 1..]);
            let _ = parse_mbus_profile(&text, "t.xml");
            let _ = parse_profile(&text, "t.xml");
        }
    }
}

//! Profile parser harness shared by the cargo-fuzz target `profile_xml` (`fuzz/`) and a seeded mutation
//! test, so CI runs the same code without cargo-fuzz. Built for tests and with the `fuzzing` feature only.
//!
//! [`profile_xml`] reads arbitrary bytes as (lossy) UTF-8 text and parses it as a profile. It panics (on
//! purpose: that is what a fuzzer reports) when the parser panics or breaks a promise callers rely on:
//! a refused profile has at least one error, every error points at a real `line:col` of the text and names
//! the file, errors come sorted by position; an accepted profile has unique value names and OBIS codes,
//! and its Modbus read plan covers every value exactly once with requests that encode. The M-Bus view
//! ([`parse_mbus_profile`]) agrees with the common one: same errors when both refuse, same common part when
//! both accept, and only M-Bus profiles accepted. The DLMS view ([`parse_dlms_profile`]) agrees the same way,
//! and an accepted DLMS profile keeps its promises (unique names and codes, readable classes, periods > 0,
//! a class 70 disconnect control). The Mercury view ([`parse_mercury_profile`]) agrees the same way, and an
//! accepted Mercury profile has unique names and codes, units matching its sources, at most one power
//! profile with whole-minute periods and at least one column.

use std::collections::HashSet;

use crate::dlms::{parse_dlms_profile, DlmsProfile};
use crate::mbus::{parse_mbus_profile, MbusProfile};
use crate::mercury::{parse_mercury_profile, MercuryProfile};
use crate::modbus::plan_modbus;
use crate::{parse_profile, Protocol, ValueSource};

/// The file name the harness passes to the parser (and expects back in every error).
const FILE: &str = "fuzz/profile.xml";

/// Parses `data` as a profile and checks the parser's promises. Panics only on a bug.
pub fn profile_xml(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let common = parse_profile(&text, FILE);
    match &common {
        Ok(profile) => accepted(profile),
        Err(errors) => refused(&text, errors),
    }
    // The M-Bus view of the same text: refused whenever the common view is, and then for the same
    // reasons; accepted only for an M-Bus profile, with the same common part.
    match (parse_dlms_profile(&text, FILE), &common) {
        (Ok(d), Ok(p)) => {
            assert_eq!(p.protocol, Protocol::Dlms, "a DLMS profile of protocol {}", p.protocol);
            assert!(p.values.is_empty() && p.controls.is_empty(), "DLMS objects leaked into Profile");
            assert_eq!((&d.id, &d.manufacturer, &d.model, &d.line), (&p.id, &p.manufacturer, &p.model, &p.line));
            accepted_dlms(&d);
        }
        (Ok(_), Err(e)) => panic!("accepted as DLMS, refused as a profile: {e:?}"),
        (Err(errors), Ok(p)) => {
            assert_ne!(p.protocol, Protocol::Dlms, "a valid DLMS profile refused by the DLMS view: {errors:?}");
            refused(&text, &errors);
        }
        (Err(dlms), Err(all)) => assert_eq!(&dlms, all, "the DLMS and common views disagree on the errors"),
    }
    match (parse_mercury_profile(&text, FILE), &common) {
        (Ok(m), Ok(p)) => {
            assert_eq!(p.protocol, Protocol::Mercury, "a Mercury profile of protocol {}", p.protocol);
            assert!(p.values.is_empty() && p.controls.is_empty(), "Mercury values leaked into Profile");
            assert_eq!((&m.id, &m.manufacturer, &m.model, &m.line), (&p.id, &p.manufacturer, &p.model, &p.line));
            accepted_mercury(&m);
        }
        (Ok(_), Err(e)) => panic!("accepted as Mercury, refused as a profile: {e:?}"),
        (Err(errors), Ok(p)) => {
            assert_ne!(
                p.protocol,
                Protocol::Mercury,
                "a valid Mercury profile refused by the Mercury view: {errors:?}"
            );
            refused(&text, &errors);
        }
        (Err(m), Err(all)) => assert_eq!(&m, all, "the Mercury and common views disagree on the errors"),
    }
    match (parse_mbus_profile(&text, FILE), common) {
        (Ok(m), Ok(p)) => {
            assert_eq!(p.protocol, Protocol::Mbus, "an M-Bus profile of protocol {}", p.protocol);
            assert_eq!(m.profile, p, "the M-Bus view changed the common part");
            assert!(p.values.is_empty(), "M-Bus values leaked into Profile::values");
            accepted_mbus(&m);
        }
        (Ok(_), Err(e)) => panic!("accepted as M-Bus, refused as a profile: {e:?}"),
        (Err(errors), Ok(p)) => {
            assert_ne!(p.protocol, Protocol::Mbus, "a valid M-Bus profile refused by the M-Bus view: {errors:?}");
            refused(&text, &errors);
        }
        (Err(mbus), Err(all)) => assert_eq!(mbus, all, "the two views disagree on the errors"),
    }
}

fn accepted_mbus(profile: &MbusProfile) {
    let mut names = HashSet::new();
    let mut obis = HashSet::new();
    for v in &profile.values {
        assert!(names.insert(v.name.as_str()), "duplicate value name {}", v.name);
        assert!(obis.insert(v.obis), "duplicate OBIS {}", v.obis);
        let s = &v.select;
        assert!(s.dif_vif.is_some() || s.quantity.is_some() || s.description.is_some(), "{} selects nothing", v.name);
        assert!(s.scale.is_finite() && s.scale != 0.0, "{}: scale {}", v.name, s.scale);
    }
    assert!(profile.all_records || !profile.values.is_empty(), "an M-Bus profile that reads nothing");
}

fn accepted_dlms(profile: &DlmsProfile) {
    let mut names = HashSet::new();
    let mut obis = HashSet::new();
    for v in &profile.values {
        assert!(names.insert(v.name.as_str()), "duplicate name {}", v.name);
        assert!(obis.insert(v.obis), "duplicate OBIS {}", v.obis);
        assert!([1, 3, 4, 5, 8, 70].contains(&v.class_id), "{}: class {}", v.name, v.class_id);
        assert_ne!(v.attribute, 0, "{}: attribute 0", v.name);
    }
    for lp in &profile.load_profiles {
        assert!(names.insert(lp.name.as_str()), "duplicate name {}", lp.name);
        assert!(obis.insert(lp.obis), "duplicate OBIS {}", lp.obis);
        assert!(lp.period_s > 0, "{}: period 0", lp.name);
        let mut columns = HashSet::new();
        for c in &lp.columns {
            assert!(columns.insert(c.name.as_str()), "{}: duplicate column {}", lp.name, c.name);
        }
    }
    assert!(!profile.values.is_empty() || !profile.load_profiles.is_empty(), "a DLMS profile that reads nothing");
    let o = &profile.options;
    assert!((1..=0x7F).contains(&o.client) && (1..=0x3FFD).contains(&o.server_logical), "{o:?}");
    assert!(o.window.is_none_or(|w| (1..=7).contains(&w)), "{o:?}");
}

fn accepted_mercury(profile: &MercuryProfile) {
    let mut names = HashSet::new();
    let mut obis = HashSet::new();
    for v in &profile.values {
        assert!(names.insert(v.name.as_str()), "duplicate name {}", v.name);
        assert!(obis.insert(v.obis), "duplicate OBIS {}", v.obis);
        assert_eq!(v.unit, v.source.unit(), "{}: unit", v.name);
    }
    if let Some(lp) = &profile.load_profile {
        assert!(names.insert(lp.name.as_str()), "duplicate name {}", lp.name);
        assert!(obis.insert(lp.obis), "duplicate OBIS {}", lp.obis);
        assert!(lp.period_s >= 60 && lp.period_s % 60 == 0 && lp.period_s <= 255 * 60, "{}: period", lp.name);
        assert!(!lp.columns.is_empty(), "{}: no columns", lp.name);
        let mut columns = HashSet::new();
        for c in &lp.columns {
            assert!(columns.insert(c.name.as_str()), "{}: duplicate column {}", lp.name, c.name);
        }
    }
    assert!(!profile.values.is_empty() || profile.load_profile.is_some(), "a Mercury profile that reads nothing");
    let o = &profile.options;
    assert!(o.multiplier >= 1 && (1..=4096).contains(&o.profile_records), "{o:?}");
}

fn refused(text: &str, errors: &[crate::ProfileError]) {
    assert!(!errors.is_empty(), "a refused profile must say why");
    // `Lines::locate` counts lines from 1; the last possible line is the one after the last newline.
    let lines = u32::try_from(text.bytes().filter(|&b| b == b'\n').count().saturating_add(1)).unwrap_or(u32::MAX);
    let mut previous = (0, 0);
    for e in errors {
        assert_eq!(e.file, FILE, "error names another file: {e}");
        assert!(e.line >= 1 && e.line <= lines, "line {} outside 1..={lines}: {e}", e.line);
        assert!(e.col >= 1, "column {} is not 1-based: {e}", e.col);
        assert!(!e.message.is_empty(), "empty message at {}:{}", e.line, e.col);
        assert!((e.line, e.col) >= previous, "errors not sorted by position: {e} after {previous:?}");
        previous = (e.line, e.col);
        let shown = e.to_string();
        assert!(shown.starts_with(&format!("{FILE}:{}:{}: ", e.line, e.col)), "{shown}");
    }
}

fn accepted(profile: &crate::Profile) {
    let mut names = HashSet::new();
    let mut obis = HashSet::new();
    for v in &profile.values {
        assert!(names.insert(v.name.as_str()), "duplicate value name {}", v.name);
        assert!(obis.insert(v.obis), "duplicate OBIS {}", v.obis);
    }
    let mut controls = HashSet::new();
    for c in &profile.controls {
        assert!(controls.insert(c.name.as_str()), "duplicate control name {}", c.name);
    }
    let plan = plan_modbus(profile);
    let modbus_values = profile.values.iter().filter(|v| matches!(v.source, ValueSource::Modbus(_))).count();
    assert_eq!(plan.items.len(), modbus_values, "one plan item per Modbus value");
    let mut covered = vec![0u32; plan.items.len()];
    for block in &plan.blocks {
        if let Err(e) = block.request().encode() {
            panic!("block {block:?} of an accepted profile does not encode: {e}");
        }
        for &member in &block.members {
            let item = plan.items.get(member).unwrap_or_else(|| panic!("block member {member} out of range"));
            assert!(block.contains(item), "block {block:?} does not contain its member {item:?}");
            if let Some(n) = covered.get_mut(member) {
                *n += 1;
            }
        }
    }
    for (i, n) in covered.iter().enumerate() {
        let item = plan.items.get(i);
        // An item with count 0 reads nothing (cannot come out of a valid profile, but say so if it does).
        assert!(*n == 1 || item.is_some_and(|it| it.count == 0), "item {i} {item:?} is in {n} blocks");
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// xorshift64*: a fixed seed keeps the test reproducible.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % n as u64).unwrap_or(0)
        }
    }

    /// The shipped profiles (the same files seed `fuzz/seeds/profile_xml`).
    fn shipped() -> Vec<Vec<u8>> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../devices");
        let mut out: Vec<Vec<u8>> = std::fs::read_dir(dir)
            .expect("devices/ exists")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "xml"))
            .map(|p| std::fs::read(p).expect("readable profile"))
            .collect();
        out.sort();
        assert!(out.len() >= 8, "the shipped profiles are there");
        out
    }

    #[test]
    fn shipped_profiles_pass_the_harness_and_are_accepted() {
        for bytes in shipped() {
            profile_xml(&bytes);
            let text = String::from_utf8(bytes).expect("UTF-8");
            assert!(parse_profile(&text, FILE).is_ok());
        }
    }

    #[test]
    fn harness_survives_mutated_profiles() {
        let seeds = shipped();
        // Fragments a mutation may splice in: markup that reaches the validator's branches.
        let tokens: [&[u8]; 29] = [
            b"protocol=\"mercury\"",
            b"<mercury level=\"2\" multiplier=\"4\" profile-records=\"16\"/>",
            b"<value name=\"m\" obis=\"1-0:1.8.1\" unit=\"Wh\"><mercury energy=\"month\" month=\"2\" quantity=\"A+\"/></value>",
            b"<value name=\"u\" obis=\"1-0:32.7.0\" unit=\"V\"><mercury instant=\"voltage\" phase=\"1\"/></value>",
            b"<load-profile name=\"pp\" obis=\"1-0:99.1.0\" period=\"1800\"><column quantity=\"R-\"/></load-profile>",
            b"protocol=\"dlms\"",
            b"<dlms client=\"1\" server-logical=\"17\" server-physical=\"16383\" authentication=\"high-gmac\"/>",
            b"<value name=\"z\" obis=\"1-0:2.8.0\"><dlms class=\"3\" attribute=\"-1\"/></value>",
            b"<load-profile name=\"lp\" obis=\"1-0:99.2.0\" period=\"60\"><column obis=\"1-0:1.8.0\"/></load-profile>",
            b"<control name=\"d\"><dlms class=\"70\" obis=\"0-0:96.3.10\"/></control>",
            b" password=\"x\"",
            b"framing=\"wrapper\"",
            b"<value name=\"y\" obis=\"6-0:1.0.0\" unit=\"Wh\"><mbus dif-vif=\"04 06\" quantity=\"Energy\"/></value>",
            b"<mbus all-records=\"true\"/>",
            b"protocol=\"mbus\"",
            b"dif-vif=\"84 C0 40 06\"",
            b"storage=\"3\"",
            b"<value name=\"x\" obis=\"1-0:1.8.0\" unit=\"Wh\"><modbus table=\"input\" register=\"0\" type=\"f32\"/></value>",
            b"<control name=\"r\"><modbus coil=\"1\"/></control>",
            b"register=\"0xFFFF\"",
            b"type=\"f64\"",
            b"table=\"coil\"",
            b"<modbus max-block=\"1\" max-gap=\"65535\"/>",
            b"<![CDATA[x]]>",
            b"&amp;",
            b"</value>",
            b"<",
            b"\"",
            "é\u{feff}".as_bytes(),
        ];
        let mut rng = Rng(0xA11C_E5ED_0BAD_F00D);
        for _ in 0..3_000 {
            let mut d = seeds[rng.below(seeds.len())].clone();
            for _ in 0..=rng.below(4) {
                let at = rng.below(d.len() + 1);
                match rng.below(5) {
                    0 if at < d.len() => d[at] ^= 1 << rng.below(8),
                    1 if at < d.len() => {
                        let end = (at + rng.below(64)).min(d.len());
                        d.drain(at..end);
                    }
                    2 => {
                        let t = tokens[rng.below(tokens.len())];
                        d.splice(at..at, t.iter().copied());
                    }
                    3 if at < d.len() => d[at] = rng.next() as u8,
                    _ => d.truncate(at),
                }
            }
            profile_xml(&d);
        }
    }
}

//! Every profile shipped in `devices/` is served completely and plausibly by the simulator: each value's
//! registers can be read on their own, decode to a finite number in a believable band, counters grow.

use std::path::PathBuf;
use std::time::Duration;

use ami_device::{load_profile, Profile, ValueKind, ValueSource};
use ami_protocols::modbus::plan::Table;
use ami_protocols::modbus::{Request, Response};
use ami_sim::SimMeter;

fn shipped_profiles() -> Vec<Profile> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../devices");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no profiles in {}", dir.display());
    paths.iter().map(|p| load_profile(p).unwrap_or_else(|e| panic!("{}: {e:?}", p.display()))).collect()
}

/// Reads one value's registers through the request handler, as a master would, and decodes them.
fn read(meter: &mut SimMeter, profile: &Profile, name: &str) -> f64 {
    let def = profile.values.iter().find(|v| v.name == name).unwrap();
    let ValueSource::Modbus(source) = &def.source;
    let n = source.encoding.ty.registers();
    let request = match source.table {
        Table::Holding => Request::ReadHoldingRegisters { address: source.register, quantity: n },
        Table::Input => Request::ReadInputRegisters { address: source.register, quantity: n },
        Table::Coil => Request::ReadCoils { address: source.register, quantity: 1 },
        Table::Discrete => Request::ReadDiscreteInputs { address: source.register, quantity: 1 },
    };
    match meter.handle_request(&request) {
        Ok(Response::Registers(words)) => source.encoding.decode(&words).unwrap(),
        Ok(Response::Bits(bits)) => f64::from(u8::from(bits[0])),
        other => panic!("{} {name}: {other:?}", profile.id),
    }
}

#[test]
fn every_shipped_profile_is_served_plausibly() {
    for profile in shipped_profiles() {
        let mut meter = SimMeter::new(&profile, 1);
        meter.update(Duration::ZERO);
        let before: Vec<f64> = profile.values.iter().map(|v| read(&mut meter, &profile, &v.name)).collect();
        // Ten hours: long enough for the slow export counters to pass one step of a 100 Wh resolution.
        meter.update(Duration::from_secs(36_000));
        for (def, before) in profile.values.iter().zip(before) {
            let now = read(&mut meter, &profile, &def.name);
            let id = format!("{} {} = {now} {}", profile.id, def.name, def.unit);
            assert!(now.is_finite(), "{id}");
            assert_eq!(meter.value(&def.name), Some(now), "{id}");
            match def.kind {
                ValueKind::Counter => assert!(now > before, "{id}: counter did not grow from {before}"),
                ValueKind::Static => assert_eq!(now, before, "{id}"),
                ValueKind::Instantaneous => {}
            }
            let ok = match def.unit.as_str() {
                "V" => (225.0..=235.0).contains(&now) || (390.0..=410.0).contains(&now),
                "A" => (0.0..=30.0).contains(&now),
                "Hz" => (49.9..=50.1).contains(&now),
                "W" | "VA" | "var" => (0.0..=25_000.0).contains(&now),
                "" if def.name.contains("factor") => (0.89..=1.0).contains(&now),
                _ => true,
            };
            assert!(ok, "{id}: implausible");
        }
    }
}

/// The collector reads a profile in planned blocks (merged across up to `max-gap` unlisted registers); the
/// simulator must answer every one of them, as the real meter does, without an exception.
#[test]
fn every_planned_block_of_every_shipped_profile_is_answered() {
    for profile in shipped_profiles() {
        let mut meter = SimMeter::new(&profile, 1);
        let plan = ami_device::modbus::plan_modbus(&profile);
        for block in &plan.blocks {
            let reply = meter.handle_request(&block.request());
            assert!(reply.is_ok(), "{}: block {block:?} refused: {reply:?}", profile.id);
        }
    }
}

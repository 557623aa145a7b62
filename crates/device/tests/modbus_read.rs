//! Reading a profile from a Modbus RTU slave on a loopback line: values decode into readings in profile
//! order, a refused block costs only its own values, a silent meter fails the read, controls write.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ami_device::modbus::{plan_modbus, read_modbus, write_control, ControlError, ReadError, ValueErrorKind};
use ami_device::{parse_profile, Profile, Quality, Value};
use ami_link::modbus::encode_rtu;
use ami_link::{Bus, BusConfig, LinkError};
use ami_media::loopback::pair;
use ami_media::LoopbackTransport;
use ami_protocols::modbus::plan::Table;
use ami_protocols::modbus::{encode_exception, encode_response, Exception, Framing, Master, Request, Response};
use chrono::{DateTime, TimeZone, Utc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PROFILE: &str = r#"<profile id="t" protocol="modbus" manufacturer="Acme" model="M1">
  <modbus max-block="10" max-gap="0"/>
  <value name="voltage_l1" obis="1-0:32.7.0" unit="V">
    <modbus table="input" register="0" type="f32"/>
  </value>
  <value name="current_l1" obis="1-0:31.7.0" unit="A">
    <modbus table="input" register="2" type="i16" scale="0.01"/>
  </value>
  <value name="not_available" obis="1-0:52.7.0" unit="V">
    <modbus table="input" register="3" type="f32"/>
  </value>
  <value name="refused" obis="1-0:72.7.0" unit="V">
    <modbus table="input" register="0x0100" type="u16"/>
  </value>
  <value name="energy_import_total" obis="1-0:1.8.0" unit="Wh">
    <modbus table="holding" register="0x10" type="u32" word-order="low-first" scale="100"/>
  </value>
  <value name="relay_state" obis="0-0:96.3.10" unit="" kind="static">
    <modbus table="coil" register="5"/>
  </value>
  <control name="relay"><modbus coil="5"/></control>
  <control name="mode"><modbus register="0x20" on="3" off="7"/></control>
</profile>"#;

/// Register contents of the test slave, and the writes it received.
#[derive(Default)]
struct Memory {
    registers: HashMap<(Table, u16), u16>,
    coils: HashMap<u16, bool>,
    writes: Vec<Request>,
}

/// A Modbus RTU slave answering every 8-byte request (all reads and single writes are 8 bytes).
async fn serve(mut io: LoopbackTransport, unit: u8, memory: Arc<Mutex<Memory>>, silent: bool) {
    let mut frame = [0u8; 8];
    while io.read_exact(&mut frame).await.is_ok() {
        if silent {
            continue;
        }
        let request = Request::decode(&frame[1..6]).expect("valid request");
        let pdu = {
            let mut m = memory.lock().unwrap();
            let read = |table: Table, address: u16, quantity: u16| -> Option<Vec<u16>> {
                (address..address + quantity).map(|a| m.registers.get(&(table, a)).copied()).collect()
            };
            let response = match &request {
                Request::ReadInputRegisters { address, quantity } => {
                    read(Table::Input, *address, *quantity).map(Response::Registers)
                }
                Request::ReadHoldingRegisters { address, quantity } => {
                    read(Table::Holding, *address, *quantity).map(Response::Registers)
                }
                Request::ReadCoils { address, quantity } => (*address..address + quantity)
                    .map(|a| m.coils.get(&a).copied())
                    .collect::<Option<Vec<bool>>>()
                    .map(Response::Bits),
                Request::WriteSingleCoil { .. } | Request::WriteSingleRegister { .. } => {
                    m.writes.push(request.clone());
                    Some(Response::Written)
                }
                _ => None,
            };
            match response {
                Some(r) => encode_response(&request, &r),
                None => encode_exception(request.function(), Exception::IllegalDataAddress),
            }
        };
        if io.write_all(&encode_rtu(unit, &pdu)).await.is_err() {
            return;
        }
    }
}

fn line(silent: bool) -> (Master, Arc<Mutex<Memory>>) {
    let (a, b) = pair();
    let memory = Arc::new(Mutex::new(Memory::default()));
    tokio::spawn(serve(b, 9, memory.clone(), silent));
    let config = BusConfig {
        id: "test".into(),
        guard_time: Duration::from_millis(1),
        timeout: Duration::from_millis(40),
        retries: 0,
        drain_quiet: Duration::from_millis(5),
        ..BusConfig::default()
    };
    (Master::new(Bus::spawn(Box::new(a), config), Framing::Rtu), memory)
}

fn profile() -> Profile {
    parse_profile(PROFILE, "t.xml").expect("valid test profile")
}

fn clock() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 9, 0, 0).unwrap()
}

#[tokio::test]
async fn every_value_is_read_and_a_refused_block_costs_only_its_values() {
    let (master, memory) = line(false);
    {
        let mut m = memory.lock().unwrap();
        let [hi, lo] = [(231.5f32.to_bits() >> 16) as u16, 231.5f32.to_bits() as u16];
        m.registers.insert((Table::Input, 0), hi);
        m.registers.insert((Table::Input, 1), lo);
        m.registers.insert((Table::Input, 2), (-512i16) as u16);
        // A float NaN ("not available").
        m.registers.insert((Table::Input, 3), 0x7FC0);
        m.registers.insert((Table::Input, 4), 0x0000);
        // 0x0001_86A0 = 100000 counts of 0.1 kWh, sent low word first.
        m.registers.insert((Table::Holding, 0x10), 0x86A0);
        m.registers.insert((Table::Holding, 0x11), 0x0001);
        m.coils.insert(5, true);
    }
    let p = profile();
    assert_eq!(plan_modbus(&p).requests(), 4);
    let outcome = read_modbus(&p, &master, "m1", 9, clock).await.expect("meter answers");

    let values: Vec<(&str, f64)> = outcome
        .readings
        .iter()
        .map(|r| match r.value {
            Value::Number(n) => (r.name.as_str(), n),
            Value::Text(_) => panic!("text"),
        })
        .collect();
    assert_eq!(
        values,
        [("voltage_l1", 231.5), ("current_l1", -5.12), ("energy_import_total", 10_000_000.0), ("relay_state", 1.0)]
    );
    let r = &outcome.readings[2];
    assert_eq!((r.meter.as_str(), r.unit.as_str(), r.ts, r.quality), ("m1", "Wh", clock(), Quality::OK));
    assert_eq!(r.obis.to_string(), "1-0:1.8.0*255");

    let errors: Vec<&str> = outcome.errors.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(errors, ["not_available", "refused"]);
    assert!(matches!(outcome.errors[0].kind, ValueErrorKind::Decode(_)));
    assert!(matches!(
        outcome.errors[1].kind,
        ValueErrorKind::Exception { exception: Exception::IllegalDataAddress, .. }
    ));
    assert!(outcome.errors[1].to_string().starts_with("value refused (1-0:72.7.0*255): meter replied with exception"));
}

#[tokio::test]
async fn a_meter_that_does_not_answer_fails_the_read() {
    let (master, _memory) = line(true);
    let err = read_modbus(&profile(), &master, "m1", 9, clock).await.unwrap_err();
    let ReadError::NoAnswer { meter, error } = &err;
    assert_eq!(meter, "m1");
    assert!(matches!(error, LinkError::Timeout { .. }), "{error:?}");
    assert!(err.to_string().starts_with("meter m1 does not answer: "));
}

#[tokio::test]
async fn controls_write_a_coil_or_a_register() {
    let (master, memory) = line(false);
    let p = profile();
    write_control(&p, &master, "m1", 9, "relay", false).await.unwrap();
    write_control(&p, &master, "m1", 9, "mode", true).await.unwrap();
    write_control(&p, &master, "m1", 9, "mode", false).await.unwrap();
    assert_eq!(
        memory.lock().unwrap().writes,
        [
            Request::WriteSingleCoil { address: 5, value: false },
            Request::WriteSingleRegister { address: 0x20, value: 3 },
            Request::WriteSingleRegister { address: 0x20, value: 7 },
        ]
    );
    let err = write_control(&p, &master, "m1", 9, "valve", true).await.unwrap_err();
    assert!(matches!(err, ControlError::UnknownControl { .. }));
    assert_eq!(err.to_string(), "profile t has no control \"valve\" (controls: relay, mode)");
}

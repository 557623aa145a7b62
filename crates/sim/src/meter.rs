//! One simulated Modbus meter: a [`RegisterMap`] built from a profile, values that evolve with an injected
//! clock, controls (relays), and the server-side request handler.
//!
//! Only addresses the profile defines exist: a read or write touching any other address is refused with
//! exception 02 (illegal data address), as real meters do. A read of more than 125 registers (2000 bits) is
//! refused with exception 03 (illegal data value). Nothing here panics on any request bytes.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use ami_device::{ControlSource, ModbusControl, Profile, ValueKind, ValueSource};
use ami_protocols::modbus::plan::Table;
use ami_protocols::modbus::value::Encoding;
use ami_protocols::modbus::{encode_exception, encode_response, Exception, Function, Request, Response};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::model::{Behaviour, Phase, Physics};
use crate::SimError;

/// Spec limit of registers in one read (FC 3 / 4).
const MAX_READ_REGISTERS: u16 = 125;
/// Spec limit of bits in one read (FC 1 / 2).
const MAX_READ_BITS: u16 = 2000;

/// The four Modbus tables of one meter: which addresses exist and what they hold.
///
/// Registers (holding, input) hold `u16` words, bits (coils, discrete inputs) hold `bool`s. An address is
/// defined once something is stored at it; reads and writes of undefined addresses fail with
/// [`Exception::IllegalDataAddress`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegisterMap {
    holding: BTreeMap<u16, u16>,
    input: BTreeMap<u16, u16>,
    coils: BTreeMap<u16, bool>,
    discrete: BTreeMap<u16, bool>,
}

impl RegisterMap {
    /// An empty map: every read fails with exception 02.
    pub fn new() -> Self {
        Self::default()
    }

    fn words(&self, table: Table) -> Option<&BTreeMap<u16, u16>> {
        match table {
            Table::Holding => Some(&self.holding),
            Table::Input => Some(&self.input),
            Table::Coil | Table::Discrete => None,
        }
    }

    fn words_mut(&mut self, table: Table) -> Option<&mut BTreeMap<u16, u16>> {
        match table {
            Table::Holding => Some(&mut self.holding),
            Table::Input => Some(&mut self.input),
            Table::Coil | Table::Discrete => None,
        }
    }

    fn bits(&self, table: Table) -> Option<&BTreeMap<u16, bool>> {
        match table {
            Table::Coil => Some(&self.coils),
            Table::Discrete => Some(&self.discrete),
            Table::Holding | Table::Input => None,
        }
    }

    fn bits_mut(&mut self, table: Table) -> Option<&mut BTreeMap<u16, bool>> {
        match table {
            Table::Coil => Some(&mut self.coils),
            Table::Discrete => Some(&mut self.discrete),
            Table::Holding | Table::Input => None,
        }
    }

    /// Defines (or overwrites) consecutive registers of a register table starting at `address`. Words that
    /// would run past address 65535 and bit tables are ignored.
    pub fn set_registers(&mut self, table: Table, address: u16, words: &[u16]) {
        if let Some(map) = self.words_mut(table) {
            for (i, w) in words.iter().enumerate() {
                let Some(a) = u16::try_from(i).ok().and_then(|i| address.checked_add(i)) else {
                    break;
                };
                map.insert(a, *w);
            }
        }
    }

    /// Defines (or overwrites) one bit of a bit table. Register tables are ignored.
    pub fn set_bit(&mut self, table: Table, address: u16, value: bool) {
        if let Some(map) = self.bits_mut(table) {
            map.insert(address, value);
        }
    }

    /// True when `address` exists in `table`.
    pub fn is_defined(&self, table: Table, address: u16) -> bool {
        match table {
            Table::Holding | Table::Input => self.words(table).is_some_and(|m| m.contains_key(&address)),
            Table::Coil | Table::Discrete => self.bits(table).is_some_and(|m| m.contains_key(&address)),
        }
    }

    /// Number of defined addresses in `table`.
    pub fn len(&self, table: Table) -> usize {
        self.words(table).map_or(0, BTreeMap::len) + self.bits(table).map_or(0, BTreeMap::len)
    }

    /// True when no table defines any address.
    pub fn is_empty(&self) -> bool {
        self.holding.is_empty() && self.input.is_empty() && self.coils.is_empty() && self.discrete.is_empty()
    }

    /// The half-open range `address..address+quantity`, or 02 when it runs past 65535.
    fn span(address: u16, quantity: u16) -> Result<std::ops::Range<u32>, Exception> {
        let end = u32::from(address) + u32::from(quantity);
        if end > 0x1_0000 {
            return Err(Exception::IllegalDataAddress);
        }
        Ok(u32::from(address)..end)
    }

    /// Reads `quantity` registers (FC 3 / 4). 03 for a quantity outside 1..=125, 02 when any address in
    /// the range is undefined.
    pub fn read_registers(&self, table: Table, address: u16, quantity: u16) -> Result<Vec<u16>, Exception> {
        if quantity == 0 || quantity > MAX_READ_REGISTERS {
            return Err(Exception::IllegalDataValue);
        }
        let span = Self::span(address, quantity)?;
        let map = self.words(table).ok_or(Exception::IllegalFunction)?;
        let words: Vec<u16> =
            map.range(address..).take_while(|(a, _)| span.contains(&u32::from(**a))).map(|(_, w)| *w).collect();
        if words.len() != usize::from(quantity) {
            return Err(Exception::IllegalDataAddress);
        }
        Ok(words)
    }

    /// Reads `quantity` bits (FC 1 / 2). 03 for a quantity outside 1..=2000, 02 when any address in the
    /// range is undefined.
    pub fn read_bits(&self, table: Table, address: u16, quantity: u16) -> Result<Vec<bool>, Exception> {
        if quantity == 0 || quantity > MAX_READ_BITS {
            return Err(Exception::IllegalDataValue);
        }
        let span = Self::span(address, quantity)?;
        let map = self.bits(table).ok_or(Exception::IllegalFunction)?;
        let bits: Vec<bool> =
            map.range(address..).take_while(|(a, _)| span.contains(&u32::from(**a))).map(|(_, b)| *b).collect();
        if bits.len() != usize::from(quantity) {
            return Err(Exception::IllegalDataAddress);
        }
        Ok(bits)
    }

    /// Checks that every address of `address..address+quantity` exists in `table` (for writes).
    fn check_defined(&self, table: Table, address: u16, quantity: usize) -> Result<(), Exception> {
        let quantity = u16::try_from(quantity).map_err(|_| Exception::IllegalDataValue)?;
        let span = Self::span(address, quantity)?;
        let all = span.clone().all(|a| u16::try_from(a).is_ok_and(|a| self.is_defined(table, a)));
        if all {
            Ok(())
        } else {
            Err(Exception::IllegalDataAddress)
        }
    }
}

/// The writable state of one control.
#[derive(Debug, Clone)]
struct SimControl {
    name: String,
    target: ModbusControl,
}

/// One profile value being served.
#[derive(Debug, Clone)]
struct SimValue {
    name: String,
    table: Table,
    register: u16,
    encoding: Encoding,
    behaviour: Behaviour,
    /// The model value (exact; the map holds it encoded).
    model: f64,
    /// Pinned by `set_value` or a Modbus write: the generator leaves it alone.
    pinned: bool,
}

impl SimValue {
    fn is_bit(&self) -> bool {
        matches!(self.table, Table::Coil | Table::Discrete)
    }

    fn width(&self) -> u16 {
        if self.is_bit() {
            1
        } else {
            self.encoding.ty.registers()
        }
    }

    /// True when the value occupies any address of `table` in `start..start+len`.
    fn overlaps(&self, table: Table, start: u16, len: usize) -> bool {
        let (a0, a1) = (u32::from(self.register), u32::from(self.register) + u32::from(self.width()));
        let (b0, b1) = (u32::from(start), u32::from(start).saturating_add(u32::try_from(len).unwrap_or(u32::MAX)));
        self.table == table && a0 < b1 && b0 < a1
    }
}

/// A simulated Modbus meter serving one profile.
///
/// Build it with [`SimMeter::new`], advance its clock with [`SimMeter::update`] (time since an arbitrary
/// start; the simulator passes its own clock), answer request PDUs with [`SimMeter::handle_pdu`]. Counters
/// only grow (energy by power × elapsed time), instantaneous values wander around plausible nominal values
/// (230 V, 50 Hz, a few amperes, power factor 0.9–1.0, power = V × I × PF), static values stay fixed.
/// Same seed, same profile and same `update` times give the same values.
///
/// Values pinned with [`SimMeter::set_value`] or written by a master (FC 5/6/15/16 to an address the profile
/// defines) stop evolving until [`SimMeter::release`].
#[derive(Debug, Clone)]
pub struct SimMeter {
    profile_id: String,
    map: RegisterMap,
    values: Vec<SimValue>,
    by_name: HashMap<String, usize>,
    controls: Vec<SimControl>,
    physics: Physics,
    last: Option<Duration>,
}

/// The largest and smallest values an encoding can represent, in value units.
fn encodable_range(encoding: &Encoding) -> (f64, f64) {
    use ami_protocols::modbus::value::ValueType as T;
    let (lo, hi) = match encoding.ty {
        T::U16 => (0.0, f64::from(u16::MAX)),
        T::I16 => (f64::from(i16::MIN), f64::from(i16::MAX)),
        T::U32 => (0.0, f64::from(u32::MAX)),
        T::I32 => (f64::from(i32::MIN), f64::from(i32::MAX)),
        // Stay inside the range where f64 → integer conversion is exact enough.
        T::U64 => (0.0, 9.0e15),
        T::I64 => (-9.0e15, 9.0e15),
        T::F32 => (-1.0e30, 1.0e30),
        T::F64 => (-1.0e300, 1.0e300),
    };
    let (a, b) = (lo * encoding.scale + encoding.offset, hi * encoding.scale + encoding.offset);
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

impl SimMeter {
    /// A meter serving every Modbus value and control of `profile`, seeded.
    ///
    /// Values that overlap (two definitions of the same register) are served as the later one encodes them.
    /// Controls get their address defined even when no value reads it: a coil control starts on (relay
    /// closed), a register control starts at its `on` value.
    pub fn new(profile: &Profile, seed: u64) -> SimMeter {
        let mut rng = StdRng::seed_from_u64(seed);
        let phases = if profile.values.iter().any(|v| Phase::from_name(&v.name).is_polyphase()) { 3 } else { 1 };
        let physics = Physics::new(phases, &mut rng);
        let mut meter = SimMeter {
            profile_id: profile.id.clone(),
            map: RegisterMap::new(),
            values: Vec::new(),
            by_name: HashMap::new(),
            controls: Vec::new(),
            physics,
            last: None,
        };
        for control in &profile.controls {
            let ControlSource::Modbus(target) = &control.source;
            match target {
                ModbusControl::Coil { register } => meter.map.set_bit(Table::Coil, *register, true),
                ModbusControl::Register { register, on, .. } => {
                    meter.map.set_registers(Table::Holding, *register, &[*on]);
                }
            }
            meter.controls.push(SimControl { name: control.name.clone(), target: target.clone() });
        }
        for def in &profile.values {
            let ValueSource::Modbus(source) = &def.source;
            let is_bit = matches!(source.table, Table::Coil | Table::Discrete);
            let behaviour =
                if is_bit { Behaviour::Fixed } else { Behaviour::classify(def.kind, &def.unit, &def.name, &mut rng) };
            let (lo, hi) = encodable_range(&source.encoding);
            let model = if is_bit {
                // A bit shared with a control shows the control's state.
                if meter.map.bits(source.table).and_then(|m| m.get(&source.register)).copied().unwrap_or(false) {
                    1.0
                } else {
                    0.0
                }
            } else {
                match def.kind {
                    // Leave the counter room to grow before its encoding saturates.
                    ValueKind::Counter => behaviour.initial_counter(&mut rng).min(hi / 4.0).max(lo.max(0.0)),
                    ValueKind::Static => {
                        let lower = def.name.to_ascii_lowercase();
                        if lower.contains("serial") {
                            f64::from(rng.gen_range(10_000_000u32..100_000_000)).min(hi)
                        } else {
                            1.0
                        }
                    }
                    ValueKind::Instantaneous => 0.0,
                }
            };
            let index = meter.values.len();
            meter.values.push(SimValue {
                name: def.name.clone(),
                table: source.table,
                register: source.register,
                encoding: source.encoding,
                behaviour,
                model: model.clamp(lo.min(hi), hi.max(lo)),
                pinned: false,
            });
            meter.by_name.insert(def.name.clone(), index);
        }
        meter.fill_gaps(profile.modbus.max_gap);
        meter.refresh_instantaneous();
        for i in 0..meter.values.len() {
            meter.store(i);
        }
        meter
    }

    /// A profile with `max-gap > 0` says the meter answers reads that span up to that many registers it
    /// does not list (real meters hold quantities there the profile does not read). Those registers exist
    /// here too, reading 0xFFFF ("not available"), so the collector's merged reads work as on the meter.
    fn fill_gaps(&mut self, max_gap: u16) {
        if max_gap == 0 {
            return;
        }
        for table in [Table::Holding, Table::Input] {
            let mut spans: Vec<(u16, u16)> = self
                .values
                .iter()
                .filter(|v| v.table == table)
                .map(|v| (v.register, v.register.saturating_add(v.encoding.ty.registers())))
                .collect();
            spans.sort_unstable();
            for pair in spans.windows(2) {
                let &[(_, end), (next, _)] = pair else { continue };
                if next > end && next - end <= max_gap {
                    for r in end..next {
                        if !self.map.is_defined(table, r) {
                            self.map.set_registers(table, r, &[0xFFFF]);
                        }
                    }
                }
            }
        }
    }

    /// The profile id this meter serves.
    pub fn profile_id(&self) -> &str {
        &self.profile_id
    }

    /// The register map as a master sees it now.
    pub fn map(&self) -> &RegisterMap {
        &self.map
    }

    /// Advances the simulation to `now` (time since an arbitrary start, monotonic). A `now` earlier than the
    /// last one is ignored, so counters never go down.
    pub fn update(&mut self, now: Duration) {
        let Some(last) = self.last else {
            self.last = Some(now);
            return;
        };
        let Some(dt) = now.checked_sub(last).filter(|d| !d.is_zero()) else {
            return;
        };
        self.last = Some(now);
        let dt = dt.as_secs_f64();
        // Counters integrate the rate at both ends of the step (trapezoid): rate before the step …
        let before: Vec<f64> = self.values.iter().map(|v| self.counter_rate(v)).collect();
        self.physics.step(dt);
        for v in &mut self.values {
            if let Behaviour::Own(walk) = &mut v.behaviour {
                self.physics.step_own(walk, dt);
            }
        }
        for (i, rate_before) in before.into_iter().enumerate() {
            let Some(v) = self.values.get(i) else { continue };
            if v.pinned || !matches!(v.behaviour, Behaviour::Counter { .. }) {
                continue;
            }
            let rate_after = self.counter_rate(v);
            let (_, hi) = encodable_range(&v.encoding);
            let grown = v.model + (rate_before + rate_after) / 2.0 * dt;
            if let Some(v) = self.values.get_mut(i) {
                // Saturate rather than wrap: a counter never goes down.
                v.model = if grown.is_finite() { grown.min(hi).max(v.model) } else { v.model };
            }
        }
        self.refresh_instantaneous();
        for i in 0..self.values.len() {
            self.store(i);
        }
    }

    /// A counter's growth per second in the value's unit, 0 for other values.
    fn counter_rate(&self, v: &SimValue) -> f64 {
        match v.behaviour {
            Behaviour::Counter { rate, phase, divisor } => self.physics.rate(rate, phase) / divisor,
            _ => 0.0,
        }
    }

    /// Recomputes every unpinned measured value from the physics.
    fn refresh_instantaneous(&mut self) {
        for v in &mut self.values {
            if v.pinned {
                continue;
            }
            match &v.behaviour {
                Behaviour::Measured { quantity, phase, divisor } => {
                    v.model = self.physics.measure(*quantity, *phase) / divisor;
                }
                Behaviour::Own(walk) => v.model = walk.value,
                Behaviour::Counter { .. } | Behaviour::Fixed => {}
            }
        }
    }

    /// Writes value `i`'s model into the map.
    fn store(&mut self, i: usize) {
        let Some(v) = self.values.get(i) else { return };
        if v.is_bit() {
            self.map.set_bit(v.table, v.register, v.model != 0.0);
        } else {
            let words = v.encoding.encode(v.model);
            self.map.set_registers(v.table, v.register, &words);
        }
    }

    /// The value as a master decodes it from the map now, or `None` for an unknown name.
    pub fn value(&self, name: &str) -> Option<f64> {
        let v = self.values.get(*self.by_name.get(name)?)?;
        self.served(v)
    }

    fn served(&self, v: &SimValue) -> Option<f64> {
        if v.is_bit() {
            let bits = self.map.read_bits(v.table, v.register, 1).ok()?;
            return Some(if bits.first().copied().unwrap_or(false) { 1.0 } else { 0.0 });
        }
        let words = self.map.read_registers(v.table, v.register, v.encoding.ty.registers()).ok()?;
        v.encoding.decode(&words).ok()
    }

    /// Pins a value: it is served as `value` (encoded with its encoding, so rounded to what the encoding
    /// can carry and clamped to its range) and no longer evolves until [`SimMeter::release`]. For bits, any
    /// non-zero value is 1.
    pub fn set_value(&mut self, name: &str, value: f64) -> Result<(), SimError> {
        let i = *self.by_name.get(name).ok_or_else(|| SimError::UnknownValue(name.to_string()))?;
        if !value.is_finite() {
            return Err(SimError::NotFinite { name: name.to_string(), value });
        }
        if let Some(v) = self.values.get_mut(i) {
            let (lo, hi) = encodable_range(&v.encoding);
            v.model = if v.is_bit() { f64::from(u8::from(value != 0.0)) } else { value.clamp(lo, hi) };
            v.pinned = true;
        }
        self.store(i);
        Ok(())
    }

    /// Lets a pinned value evolve again, starting from where it is (a counter continues from its pinned
    /// value). Unknown names are an error.
    pub fn release(&mut self, name: &str) -> Result<(), SimError> {
        let i = *self.by_name.get(name).ok_or_else(|| SimError::UnknownValue(name.to_string()))?;
        if let Some(v) = self.values.get_mut(i) {
            v.pinned = false;
        }
        Ok(())
    }

    /// Every value as a master would decode it now, in profile order.
    pub fn snapshot(&self) -> Vec<(String, f64)> {
        self.values.iter().filter_map(|v| Some((v.name.clone(), self.served(v)?))).collect()
    }

    /// Names of the profile's controls, in profile order.
    pub fn control_names(&self) -> impl Iterator<Item = &str> {
        self.controls.iter().map(|c| c.name.as_str())
    }

    /// The state of a control (`true` = on / relay closed), or `None` for an unknown name.
    pub fn control(&self, name: &str) -> Option<bool> {
        let c = self.controls.iter().find(|c| c.name == name)?;
        match c.target {
            ModbusControl::Coil { register } => self.map.coils.get(&register).copied(),
            ModbusControl::Register { register, on, .. } => self.map.holding.get(&register).map(|w| *w == on),
        }
    }

    /// Switches a control as a master's write would.
    pub fn set_control(&mut self, name: &str, on: bool) -> Result<(), SimError> {
        let c =
            self.controls.iter().find(|c| c.name == name).ok_or_else(|| SimError::UnknownControl(name.to_string()))?;
        let request = match c.target {
            ModbusControl::Coil { register } => Request::WriteSingleCoil { address: register, value: on },
            ModbusControl::Register { register, on: on_word, off } => {
                Request::WriteSingleRegister { address: register, value: if on { on_word } else { off } }
            }
        };
        self.handle_request(&request).map(|_| ()).map_err(SimError::Refused)
    }

    /// Answers one request. Reads come from the map; writes must target addresses the profile defines
    /// (values or controls) in a writable table (coils, holding registers), and a register control accepts
    /// only its `on` and `off` words (else 03). Values overlapping a write are re-decoded from the written
    /// words and pinned.
    pub fn handle_request(&mut self, request: &Request) -> Result<Response, Exception> {
        match request {
            Request::ReadCoils { address, quantity } => {
                self.map.read_bits(Table::Coil, *address, *quantity).map(Response::Bits)
            }
            Request::ReadDiscreteInputs { address, quantity } => {
                self.map.read_bits(Table::Discrete, *address, *quantity).map(Response::Bits)
            }
            Request::ReadHoldingRegisters { address, quantity } => {
                self.map.read_registers(Table::Holding, *address, *quantity).map(Response::Registers)
            }
            Request::ReadInputRegisters { address, quantity } => {
                self.map.read_registers(Table::Input, *address, *quantity).map(Response::Registers)
            }
            Request::WriteSingleCoil { address, value } => self.write_bits(*address, &[*value]),
            Request::WriteMultipleCoils { address, values } => self.write_bits(*address, values),
            Request::WriteSingleRegister { address, value } => self.write_registers(*address, &[*value]),
            Request::WriteMultipleRegisters { address, values } => self.write_registers(*address, values),
        }
    }

    fn write_bits(&mut self, address: u16, bits: &[bool]) -> Result<Response, Exception> {
        self.map.check_defined(Table::Coil, address, bits.len())?;
        for (a, bit) in (address..=u16::MAX).zip(bits) {
            self.map.set_bit(Table::Coil, a, *bit);
        }
        self.reload_written(Table::Coil, address, bits.len());
        Ok(Response::Written)
    }

    fn write_registers(&mut self, address: u16, words: &[u16]) -> Result<Response, Exception> {
        self.map.check_defined(Table::Holding, address, words.len())?;
        // A register control accepts only its on and off words; check before writing anything.
        for c in &self.controls {
            if let ModbusControl::Register { register, on, off } = c.target {
                let Some(offset) = register.checked_sub(address) else {
                    continue;
                };
                if let Some(w) = words.get(usize::from(offset)) {
                    if *w != on && *w != off {
                        return Err(Exception::IllegalDataValue);
                    }
                }
            }
        }
        self.map.set_registers(Table::Holding, address, words);
        self.reload_written(Table::Holding, address, words.len());
        Ok(Response::Written)
    }

    /// Re-decodes and pins every value overlapping a written range.
    fn reload_written(&mut self, table: Table, address: u16, len: usize) {
        let touched: Vec<usize> = (0..self.values.len())
            .filter(|i| self.values.get(*i).is_some_and(|v| v.overlaps(table, address, len)))
            .collect();
        for i in touched {
            let decoded = self.values.get(i).and_then(|v| self.served(v));
            if let (Some(v), Some(x)) = (self.values.get_mut(i), decoded) {
                v.model = x;
                v.pinned = true;
            }
        }
    }

    /// Applies a broadcast request PDU (unit 0): writes take effect, reads and bad PDUs are ignored, and
    /// nothing is answered (Modbus over serial line V1.02, 2.1).
    pub fn handle_broadcast(&mut self, pdu: &[u8]) {
        if let Ok(request) = Request::decode(pdu) {
            if request.is_write() {
                // A broadcast has no reply, so a refusal has nowhere to go.
                let _ = self.handle_request(&request);
            }
        }
    }

    /// Answers a request PDU with a response PDU (normal or exception). `None` only for an empty PDU (there
    /// is no function code to answer). Never panics on any bytes.
    pub fn handle_pdu(&mut self, pdu: &[u8]) -> Option<Vec<u8>> {
        let function = Function::from(*pdu.first()?);
        match Request::decode(pdu) {
            Ok(request) => Some(match self.handle_request(&request) {
                Ok(response) => encode_response(&request, &response),
                Err(exception) => encode_exception(function, exception),
            }),
            Err(e) => e.server_exception().map(|exception| encode_exception(function, exception)),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ami_device::{Control, LineDefaults, ModbusOptions, ModbusValue, Obis, Protocol, ValueDef};
    use ami_protocols::modbus::value::{ValueType, WordOrder};
    use proptest::prelude::*;

    fn value(name: &str, unit: &str, kind: ValueKind, table: Table, register: u16, encoding: Encoding) -> ValueDef {
        ValueDef {
            name: name.into(),
            obis: "1-0:1.8.0*255".parse::<Obis>().unwrap(),
            unit: unit.into(),
            kind,
            description: None,
            source: ValueSource::Modbus(ModbusValue { table, register, encoding }),
            line: 1,
        }
    }

    /// An SDM630-like profile: f32 input registers with a gap, a kWh counter (scale 1000 → Wh), a static
    /// serial number in holding registers, a writable setpoint, a relay coil and a register control.
    pub(crate) fn profile() -> Profile {
        let f32 = Encoding::new(ValueType::F32);
        let kwh = Encoding { scale: 1000.0, ..f32 };
        use ValueKind::*;
        Profile {
            id: "test-meter".into(),
            path: None,
            manufacturer: "Test".into(),
            model: "T1".into(),
            document: None,
            protocol: Protocol::Modbus,
            line: LineDefaults::default(),
            modbus: ModbusOptions::default(),
            values: vec![
                value("voltage_l1", "V", Instantaneous, Table::Input, 0, f32),
                value("voltage_l2", "V", Instantaneous, Table::Input, 2, f32),
                value("voltage_l3", "V", Instantaneous, Table::Input, 4, f32),
                value("current_l1", "A", Instantaneous, Table::Input, 6, f32),
                value("current_l2", "A", Instantaneous, Table::Input, 8, f32),
                value("current_l3", "A", Instantaneous, Table::Input, 10, f32),
                // gap 12..52
                value("power_total", "W", Instantaneous, Table::Input, 52, f32),
                value("power_factor_total", "", Instantaneous, Table::Input, 62, f32),
                value("frequency", "Hz", Instantaneous, Table::Input, 70, f32),
                value("energy_import_total", "Wh", Counter, Table::Input, 72, kwh),
                value("energy_export_total", "Wh", Counter, Table::Input, 74, kwh),
                value(
                    "energy_u32",
                    "Wh",
                    Counter,
                    Table::Input,
                    80,
                    Encoding { word_order: WordOrder::LowFirst, scale: 10.0, ..Encoding::new(ValueType::U32) },
                ),
                value("serial_number", "", Static, Table::Holding, 0xFC00, Encoding::new(ValueType::U32)),
                value("setpoint", "", Static, Table::Holding, 200, Encoding::new(ValueType::U16)),
                value("relay_state", "", Static, Table::Coil, 0, Encoding::new(ValueType::U16)),
            ],
            controls: vec![
                Control {
                    name: "relay".into(),
                    description: None,
                    source: ControlSource::Modbus(ModbusControl::Coil { register: 0 }),
                },
                Control {
                    name: "breaker".into(),
                    description: None,
                    source: ControlSource::Modbus(ModbusControl::Register { register: 100, on: 0x55, off: 0xAA }),
                },
            ],
        }
    }

    fn regs(meter: &mut SimMeter, request: Request) -> Vec<u16> {
        match meter.handle_request(&request) {
            Ok(Response::Registers(r)) => r,
            other => panic!("{request:?}: {other:?}"),
        }
    }

    #[test]
    fn reads_serve_the_encoded_values() {
        let mut m = SimMeter::new(&profile(), 1);
        let r = regs(&mut m, Request::ReadInputRegisters { address: 0, quantity: 12 });
        let f32 = Encoding::new(ValueType::F32);
        for (i, name) in
            ["voltage_l1", "voltage_l2", "voltage_l3", "current_l1", "current_l2", "current_l3"].iter().enumerate()
        {
            let decoded = f32.decode(&r[i * 2..i * 2 + 2]).unwrap();
            assert_eq!(Some(decoded), m.value(name), "{name}");
        }
        let v = m.value("voltage_l1").unwrap();
        assert!((227.0..=233.0).contains(&v), "{v}");
        let serial = regs(&mut m, Request::ReadHoldingRegisters { address: 0xFC00, quantity: 2 });
        let serial = Encoding::new(ValueType::U32).decode(&serial).unwrap();
        assert!((1e7..1e8).contains(&serial), "{serial}");
        // The kWh counter is served in kWh and shown in Wh.
        let e = regs(&mut m, Request::ReadInputRegisters { address: 72, quantity: 2 });
        let kwh = f32.decode(&e).unwrap();
        assert!((m.value("energy_import_total").unwrap() - kwh * 1000.0).abs() < 1e-6);
    }

    #[test]
    fn undefined_addresses_are_exception_02_and_big_reads_03() {
        let mut m = SimMeter::new(&profile(), 1);
        // 0..14 runs into the gap at 12.
        assert_eq!(
            m.handle_request(&Request::ReadInputRegisters { address: 0, quantity: 14 }),
            Err(Exception::IllegalDataAddress)
        );
        assert_eq!(
            m.handle_request(&Request::ReadInputRegisters { address: 12, quantity: 1 }),
            Err(Exception::IllegalDataAddress)
        );
        // The holding table has no register 0 (the serial number lives at 0xFC00).
        assert_eq!(
            m.handle_request(&Request::ReadHoldingRegisters { address: 0, quantity: 1 }),
            Err(Exception::IllegalDataAddress)
        );
        assert_eq!(
            m.handle_request(&Request::ReadDiscreteInputs { address: 0, quantity: 1 }),
            Err(Exception::IllegalDataAddress)
        );
        assert_eq!(
            m.handle_request(&Request::ReadInputRegisters { address: 0, quantity: 126 }),
            Err(Exception::IllegalDataValue)
        );
        // Half a value is still a defined address: real meters serve it.
        assert!(m.handle_request(&Request::ReadInputRegisters { address: 1, quantity: 1 }).is_ok());
        // Through the PDU codec: FC 4, address 0, quantity 200 → 0x84 0x03; quantity 14 → 0x84 0x02.
        assert_eq!(m.handle_pdu(&[0x04, 0x00, 0x00, 0x00, 0xC8]), Some(vec![0x84, 0x03]));
        assert_eq!(m.handle_pdu(&[0x04, 0x00, 0x00, 0x00, 0x0E]), Some(vec![0x84, 0x02]));
        assert_eq!(m.handle_pdu(&[0x04, 0x00, 0x00, 0x00, 0x00]), Some(vec![0x84, 0x03]));
        // Unknown function → 01; empty PDU → nothing to answer.
        assert_eq!(m.handle_pdu(&[0x2B, 0x0E, 0x01, 0x00]), Some(vec![0xAB, 0x01]));
        assert_eq!(m.handle_pdu(&[]), None);
    }

    #[test]
    fn counters_only_grow_at_a_plausible_rate() {
        let mut m = SimMeter::new(&profile(), 5);
        m.update(Duration::ZERO);
        let start = m.value("energy_import_total").unwrap();
        let start_export = m.value("energy_export_total").unwrap();
        let mut last = start;
        for s in 1..=3600 {
            m.update(Duration::from_secs(s));
            let now = m.value("energy_import_total").unwrap();
            assert!(now >= last, "counter went down at {s}s: {last} → {now}");
            last = now;
        }
        // Three phases of 2–10 A at ~230 V with PF ≥ 0.9: 1.2 .. 6.9 kW → that many Wh in an hour.
        let grown = last - start;
        assert!((1_000.0..=7_000.0).contains(&grown), "grew {grown} Wh in an hour");
        let export = m.value("energy_export_total").unwrap() - start_export;
        assert!(export > 0.0 && export < grown / 10.0, "{export}");
        // A clock going backwards changes nothing.
        m.update(Duration::from_secs(10));
        assert_eq!(m.value("energy_import_total"), Some(last));
    }

    #[test]
    fn instantaneous_values_wander_within_plausible_bands() {
        let mut m = SimMeter::new(&profile(), 9);
        let mut voltages = Vec::new();
        for s in 0..600 {
            m.update(Duration::from_secs(s));
            let v = m.value("voltage_l2").unwrap();
            let f = m.value("frequency").unwrap();
            let pf = m.value("power_factor_total").unwrap();
            let p = m.value("power_total").unwrap();
            assert!((227.0..=233.0).contains(&v), "{v}");
            assert!((49.95..=50.05).contains(&f), "{f}");
            assert!((0.9..=1.0).contains(&pf), "{pf}");
            let vi: f64 = (1..=3)
                .map(|p| m.value(&format!("voltage_l{p}")).unwrap() * m.value(&format!("current_l{p}")).unwrap())
                .sum();
            // P = Σ V·I·PF: between 0.9 and 1.0 of Σ V·I (f32 rounding aside).
            assert!(p <= vi * 1.0001 && p >= vi * 0.8999, "{p} vs {vi}");
            voltages.push(v);
        }
        let min = voltages.iter().copied().fold(f64::MAX, f64::min);
        let max = voltages.iter().copied().fold(f64::MIN, f64::max);
        assert!(max - min > 0.5, "voltage never moved: {min}..{max}");
    }

    #[test]
    fn same_seed_same_values() {
        let run = |seed| {
            let mut m = SimMeter::new(&profile(), seed);
            for s in 0..50 {
                m.update(Duration::from_millis(s * 700));
            }
            m.snapshot()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn pinned_values_stay_until_released() {
        let mut m = SimMeter::new(&profile(), 2);
        m.update(Duration::ZERO);
        m.set_value("voltage_l1", 231.5).unwrap();
        m.set_value("energy_import_total", 12_345_000.0).unwrap();
        m.update(Duration::from_secs(100));
        assert_eq!(m.value("voltage_l1"), Some(231.5));
        assert_eq!(m.value("energy_import_total"), Some(12_345_000.0));
        m.release("energy_import_total").unwrap();
        m.update(Duration::from_secs(200));
        let e = m.value("energy_import_total").unwrap();
        assert!(e > 12_345_000.0, "{e}");
        assert_eq!(m.set_value("nope", 1.0), Err(SimError::UnknownValue("nope".into())));
        assert!(matches!(m.set_value("voltage_l1", f64::NAN), Err(SimError::NotFinite { .. })));
        // Integer encodings saturate instead of wrapping.
        m.set_value("setpoint", 1e9).unwrap();
        assert_eq!(m.value("setpoint"), Some(65535.0));
    }

    #[test]
    fn relay_coil_write_reads_back() {
        let mut m = SimMeter::new(&profile(), 3);
        assert_eq!(m.control("relay"), Some(true));
        assert_eq!(m.value("relay_state"), Some(1.0));
        // FC 5 coil 0 off: 05 0000 0000 → echo.
        assert_eq!(m.handle_pdu(&[0x05, 0x00, 0x00, 0x00, 0x00]), Some(vec![0x05, 0x00, 0x00, 0x00, 0x00]));
        assert_eq!(m.handle_pdu(&[0x01, 0x00, 0x00, 0x00, 0x01]), Some(vec![0x01, 0x01, 0x00]));
        assert_eq!(m.control("relay"), Some(false));
        assert_eq!(m.value("relay_state"), Some(0.0));
        m.set_control("relay", true).unwrap();
        assert_eq!(m.handle_pdu(&[0x01, 0x00, 0x00, 0x00, 0x01]), Some(vec![0x01, 0x01, 0x01]));
        // Coil 1 does not exist.
        assert_eq!(m.handle_pdu(&[0x05, 0x00, 0x01, 0xFF, 0x00]), Some(vec![0x85, 0x02]));
        assert_eq!(m.set_control("nope", true), Err(SimError::UnknownControl("nope".into())));
    }

    #[test]
    fn register_control_accepts_only_its_on_and_off_words() {
        let mut m = SimMeter::new(&profile(), 3);
        assert_eq!(m.control("breaker"), Some(true));
        assert_eq!(
            m.handle_request(&Request::WriteSingleRegister { address: 100, value: 0xAA }),
            Ok(Response::Written)
        );
        assert_eq!(m.control("breaker"), Some(false));
        assert_eq!(regs(&mut m, Request::ReadHoldingRegisters { address: 100, quantity: 1 }), vec![0xAA]);
        assert_eq!(
            m.handle_request(&Request::WriteSingleRegister { address: 100, value: 7 }),
            Err(Exception::IllegalDataValue)
        );
        assert_eq!(m.control("breaker"), Some(false));
    }

    #[test]
    fn holding_writes_store_and_pin_values_and_undefined_writes_are_02() {
        let mut m = SimMeter::new(&profile(), 4);
        // FC 16 to the serial number (2 registers): 0x0001_E240 = 123456.
        assert_eq!(
            m.handle_request(&Request::WriteMultipleRegisters { address: 0xFC00, values: vec![0x0001, 0xE240] }),
            Ok(Response::Written)
        );
        assert_eq!(m.value("serial_number"), Some(123_456.0));
        assert_eq!(m.handle_request(&Request::WriteSingleRegister { address: 200, value: 42 }), Ok(Response::Written));
        m.update(Duration::from_secs(1000));
        assert_eq!(m.value("setpoint"), Some(42.0));
        assert_eq!(
            m.handle_request(&Request::WriteSingleRegister { address: 201, value: 1 }),
            Err(Exception::IllegalDataAddress)
        );
        // Partly defined: refused as a whole, nothing written.
        assert_eq!(
            m.handle_request(&Request::WriteMultipleRegisters { address: 200, values: vec![1, 2] }),
            Err(Exception::IllegalDataAddress)
        );
        assert_eq!(m.value("setpoint"), Some(42.0));
        // Input registers are not writable: FC 6 addresses the holding table, where 0 does not exist.
        assert_eq!(
            m.handle_request(&Request::WriteSingleRegister { address: 0, value: 1 }),
            Err(Exception::IllegalDataAddress)
        );
    }

    #[test]
    fn broadcast_writes_apply_without_reply() {
        let mut m = SimMeter::new(&profile(), 4);
        m.handle_broadcast(&[0x06, 0x00, 0xC8, 0x00, 0x07]);
        assert_eq!(m.value("setpoint"), Some(7.0));
        m.handle_broadcast(&[0x03, 0x00, 0xC8, 0x00, 0x01]);
        m.handle_broadcast(&[0xFF]);
    }

    #[test]
    fn register_map_edges() {
        let mut map = RegisterMap::new();
        assert!(map.is_empty());
        map.set_registers(Table::Holding, 0xFFFE, &[1, 2, 3]);
        assert_eq!(map.len(Table::Holding), 2);
        assert_eq!(map.read_registers(Table::Holding, 0xFFFE, 2), Ok(vec![1, 2]));
        assert_eq!(map.read_registers(Table::Holding, 0xFFFF, 2), Err(Exception::IllegalDataAddress));
        map.set_bit(Table::Discrete, 5, true);
        assert_eq!(map.read_bits(Table::Discrete, 5, 1), Ok(vec![true]));
        assert_eq!(map.read_bits(Table::Discrete, 5, 2001), Err(Exception::IllegalDataValue));
        assert!(map.is_defined(Table::Discrete, 5));
        assert!(!map.is_defined(Table::Coil, 5));
    }

    proptest! {
        #[test]
        fn any_pdu_gets_a_well_formed_answer(pdu in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut m = SimMeter::new(&profile(), 0);
            match m.handle_pdu(&pdu) {
                None => prop_assert!(pdu.is_empty()),
                Some(reply) => {
                    prop_assert!(!reply.is_empty());
                    prop_assert_eq!(reply[0] & 0x7F, pdu[0] & 0x7F);
                    if reply[0] & 0x80 != 0 {
                        prop_assert_eq!(reply.len(), 2);
                    }
                }
            }
            m.handle_broadcast(&pdu);
        }

        #[test]
        fn reads_of_defined_ranges_decode_back(start in 0u16..12, len in 1u16..12) {
            let mut m = SimMeter::new(&profile(), 0);
            let r = m.handle_request(&Request::ReadInputRegisters { address: start, quantity: len });
            if start + len <= 12 {
                prop_assert!(matches!(r, Ok(Response::Registers(ref w)) if w.len() == usize::from(len)));
            } else {
                prop_assert_eq!(r, Err(Exception::IllegalDataAddress));
            }
        }
    }
}

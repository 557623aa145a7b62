//! The COSEM objects of the simulated meter (Blue Book DLMS UA 1000-1 interface classes) and their
//! attributes and methods, computed from the meter's model and state.
//!
//! | OBIS | class | what |
//! |---|---|---|
//! | 0.0.1.0.0.255 | 8 Clock | time (octet-string date-time, deviation 0 = UTC), time zone 0; SET attr 2 moves the clock |
//! | 0.0.96.1.0.255 | 1 Data | serial number, visible-string of 8 digits |
//! | 0.0.42.0.0.255 | 1 Data | logical device name, octet-string `AMISIM` + 10 digits |
//! | 1.0.1.8.0.255, 1.0.1.8.1.255, 1.0.1.8.2.255 | 3 Register | import total / tariff 1 / tariff 2, double-long-unsigned Wh, scaler 0 |
//! | 1.0.2.8.0.255, 1.0.2.8.1.255, 1.0.2.8.2.255 | 3 Register | export total / tariff 1 / tariff 2, Wh |
//! | 1.0.1.7.0.255, 1.0.2.7.0.255 | 3 Register | import / export power, double-long W |
//! | 1.0.21.7.0.255, 1.0.41.7.0.255, 1.0.61.7.0.255 | 3 Register | import power per phase, double-long W |
//! | 1.0.32.7.0.255, 1.0.52.7.0.255, 1.0.72.7.0.255 | 3 Register | voltage per phase, long-unsigned, scaler −1 V |
//! | 1.0.31.7.0.255, 1.0.51.7.0.255, 1.0.71.7.0.255 | 3 Register | current per phase, long-unsigned, scaler −2 A |
//! | 1.0.14.7.0.255 | 3 Register | frequency, long-unsigned, scaler −2 Hz |
//! | 1.0.1.6.0.255 | 4 Extended register | today's maximum 15-min import demand, W, with its capture time (attr 5) |
//! | 1.0.1.4.0.255 | 5 Demand register | current / last average import demand of the capture period, W |
//! | 1.0.99.1.0.255 | 7 Profile generic | load profile: clock, 1.8.0, 2.8.0 every capture period |
//! | 0.0.96.3.10.255 | 70 Disconnect control | output_state, control_state, control_mode 1; methods 1 disconnect, 2 reconnect |
//! | 0.0.40.0.0.255 | 15 Association LN | object list (attr 2), partners, status; method 1 reply_to_HLS_authentication |
//!
//! Errors: an unknown logical name is object-undefined, a known one with another class
//! object-class-inconsistent, an attribute or method the class does not have object-undefined, a write
//! or method from the public client (or to a read-only attribute) read-write-denied.

use ami_protocols::dlms::apdu::{DataAccessResult, LogicalName, SelectiveAccess};
use ami_protocols::dlms::axdr::{encode_length, Data};
use ami_protocols::dlms::cosem;

use super::model::wh_u32;
use super::{system_now, DlmsMeter, SAP_PUBLIC};

/// Unit enum values (Blue Book table "enum unit").
mod unit {
    pub(super) const WATT: u8 = 27;
    pub(super) const WATT_HOUR: u8 = 30;
    pub(super) const AMPERE: u8 = 33;
    pub(super) const VOLT: u8 = 35;
    pub(super) const HERTZ: u8 = 44;
}

/// What a register measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quantity {
    ImportTotal,
    ImportT1,
    ImportT2,
    ExportTotal,
    ExportT1,
    ExportT2,
    ImportPower,
    ExportPower,
    PhasePower(usize),
    Voltage(usize),
    Current(usize),
    Frequency,
}

/// The kind of an object, deciding its attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Clock,
    SerialNumber,
    DeviceName,
    Register { quantity: Quantity, scaler: i8, unit: u8 },
    MaxDemand,
    Demand,
    LoadProfile,
    Disconnect,
    Association,
}

/// One object: class, version, logical name, kind.
#[derive(Debug, Clone, Copy)]
struct Object {
    class: u16,
    version: u8,
    ln: LogicalName,
    kind: Kind,
}

const fn reg(c: u8, d: u8, e: u8, quantity: Quantity, scaler: i8, unit: u8) -> Object {
    Object { class: 3, version: 0, ln: [1, 0, c, d, e, 255], kind: Kind::Register { quantity, scaler, unit } }
}

/// The load profile's logical name.
pub(crate) const LOAD_PROFILE: LogicalName = [1, 0, 99, 1, 0, 255];

/// Every object of the meter, in object-list order.
const OBJECTS: &[Object] = &[
    Object { class: 15, version: 0, ln: [0, 0, 40, 0, 0, 255], kind: Kind::Association },
    Object { class: 8, version: 0, ln: [0, 0, 1, 0, 0, 255], kind: Kind::Clock },
    Object { class: 1, version: 0, ln: [0, 0, 96, 1, 0, 255], kind: Kind::SerialNumber },
    Object { class: 1, version: 0, ln: [0, 0, 42, 0, 0, 255], kind: Kind::DeviceName },
    reg(1, 8, 0, Quantity::ImportTotal, 0, unit::WATT_HOUR),
    reg(1, 8, 1, Quantity::ImportT1, 0, unit::WATT_HOUR),
    reg(1, 8, 2, Quantity::ImportT2, 0, unit::WATT_HOUR),
    reg(2, 8, 0, Quantity::ExportTotal, 0, unit::WATT_HOUR),
    reg(2, 8, 1, Quantity::ExportT1, 0, unit::WATT_HOUR),
    reg(2, 8, 2, Quantity::ExportT2, 0, unit::WATT_HOUR),
    reg(1, 7, 0, Quantity::ImportPower, 0, unit::WATT),
    reg(2, 7, 0, Quantity::ExportPower, 0, unit::WATT),
    reg(21, 7, 0, Quantity::PhasePower(0), 0, unit::WATT),
    reg(41, 7, 0, Quantity::PhasePower(1), 0, unit::WATT),
    reg(61, 7, 0, Quantity::PhasePower(2), 0, unit::WATT),
    reg(32, 7, 0, Quantity::Voltage(0), -1, unit::VOLT),
    reg(52, 7, 0, Quantity::Voltage(1), -1, unit::VOLT),
    reg(72, 7, 0, Quantity::Voltage(2), -1, unit::VOLT),
    reg(31, 7, 0, Quantity::Current(0), -2, unit::AMPERE),
    reg(51, 7, 0, Quantity::Current(1), -2, unit::AMPERE),
    reg(71, 7, 0, Quantity::Current(2), -2, unit::AMPERE),
    reg(14, 7, 0, Quantity::Frequency, -2, unit::HERTZ),
    Object { class: 4, version: 0, ln: [1, 0, 1, 6, 0, 255], kind: Kind::MaxDemand },
    Object { class: 5, version: 0, ln: [1, 0, 1, 4, 0, 255], kind: Kind::Demand },
    Object { class: 7, version: 1, ln: LOAD_PROFILE, kind: Kind::LoadProfile },
    Object { class: 70, version: 0, ln: [0, 0, 96, 3, 10, 255], kind: Kind::Disconnect },
];

/// The load profile's columns: (class, logical name, attribute).
const PROFILE_COLUMNS: [(u16, LogicalName, i8); 3] =
    [(8, [0, 0, 1, 0, 0, 255], 2), (3, [1, 0, 1, 8, 0, 255], 2), (3, [1, 0, 2, 8, 0, 255], 2)];

impl Kind {
    /// Number of attributes of the class.
    fn attributes(self) -> i8 {
        match self {
            Kind::SerialNumber | Kind::DeviceName => 2,
            Kind::Register { .. } => 3,
            Kind::MaxDemand => 5,
            Kind::Demand | Kind::Clock => 9,
            Kind::LoadProfile | Kind::Association => 8,
            Kind::Disconnect => 4,
        }
    }

    /// Number of methods of the class the meter implements.
    fn methods(self) -> i8 {
        match self {
            Kind::Disconnect => 2,
            Kind::Association => 1,
            _ => 0,
        }
    }

    /// Whether a (non-public) client may write the attribute.
    fn writable(self, attribute: i8) -> bool {
        matches!((self, attribute), (Kind::Clock, 2 | 3))
    }
}

/// Who asks, and when (meter time).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub(crate) meter: &'a DlmsMeter,
    pub(crate) now: i64,
    pub(crate) client_sap: u16,
}

/// A selection of load profile entries, encoded lazily.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rows {
    /// Timestamp of the first entry.
    first: i64,
    /// Number of entries.
    count: u32,
    /// Capture period.
    period: i64,
    /// Column indexes into the capture objects, ascending.
    columns: Vec<usize>,
}

/// The value of an attribute: data, or profile entries encoded on demand.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Data(Data),
    Rows(Rows),
}

/// A date-time octet-string (deviation 0: UTC, clock status 0) of `unix`.
pub(crate) fn datetime(unix: i64) -> Data {
    Data::OctetString(cosem::unix_to_datetime(unix, Some(0)).to_bytes().to_vec())
}

/// An `f64` rounded into an integer type, saturating.
fn round_u16(v: f64) -> u16 {
    // Saturating float-to-int cast.
    v.round().max(0.0) as u16
}

fn round_i32(v: f64) -> i32 {
    v.round() as i32
}

fn round_u32(v: f64) -> u32 {
    v.round().max(0.0) as u32
}

fn find(ln: &LogicalName) -> Option<&'static Object> {
    OBJECTS.iter().find(|o| &o.ln == ln)
}

/// Looks `ln` up and checks the class.
fn lookup(class: u16, ln: &LogicalName) -> Result<&'static Object, DataAccessResult> {
    let object = find(ln).ok_or(DataAccessResult::ObjectUndefined)?;
    if object.class != class {
        return Err(DataAccessResult::ObjectClassInconsistent);
    }
    Ok(object)
}

impl Rows {
    /// Encodes entry `i` (0-based) into `out`.
    fn encode_row(&self, meter: &DlmsMeter, i: u32, out: &mut Vec<u8>) {
        let ts = self.first + i64::from(i) * self.period;
        let (import, export) = meter.register_values(ts);
        let fields: Vec<Data> = self
            .columns
            .iter()
            .map(|&c| match c {
                0 => datetime(ts),
                1 => Data::DoubleLongUnsigned(import),
                _ => Data::DoubleLongUnsigned(export),
            })
            .collect();
        Data::Structure(fields).encode(out);
    }

    fn header(&self) -> Vec<u8> {
        let mut h = vec![1u8];
        encode_length(self.count as usize, &mut h);
        h
    }

    /// Bytes of one encoded entry (every entry has the same length: fixed-size fields only).
    fn row_len(&self, meter: &DlmsMeter) -> usize {
        let mut one = Vec::new();
        self.encode_row(meter, 0, &mut one);
        one.len()
    }

    /// Length of the whole encoding.
    pub(crate) fn encoded_len(&self, meter: &DlmsMeter) -> usize {
        self.header().len() + self.count as usize * self.row_len(meter)
    }

    /// Bytes `from..to` of the encoding (clamped to its length), generating only the entries they touch.
    pub(crate) fn encoded_range(&self, meter: &DlmsMeter, from: usize, to: usize) -> Vec<u8> {
        let header = self.header();
        let row_len = self.row_len(meter).max(1);
        let total = header.len() + self.count as usize * row_len;
        let (from, to) = (from.min(total), to.min(total));
        let mut out = Vec::with_capacity(to.saturating_sub(from));
        if from < header.len() {
            out.extend_from_slice(header.get(from..to.min(header.len())).unwrap_or_default());
        }
        let body_from = from.saturating_sub(header.len());
        let body_to = to.saturating_sub(header.len());
        if body_to > body_from {
            let first_row = body_from / row_len;
            let last_row = (body_to - 1) / row_len;
            let mut rows = Vec::with_capacity((last_row - first_row + 1) * row_len);
            for i in first_row..=last_row {
                // i < count, which is a u32.
                self.encode_row(meter, i as u32, &mut rows);
            }
            let skip = body_from - first_row * row_len;
            out.extend_from_slice(rows.get(skip..skip + (body_to - body_from)).unwrap_or_default());
        }
        out
    }

    /// The whole encoding.
    pub(crate) fn encode_all(&self, meter: &DlmsMeter) -> Vec<u8> {
        self.encoded_range(meter, 0, usize::MAX)
    }

    /// Number of entries.
    #[cfg(test)]
    pub(crate) fn count(&self) -> u32 {
        self.count
    }
}

impl Value {
    /// The encoded length.
    pub(crate) fn encoded_len(&self, meter: &DlmsMeter) -> usize {
        match self {
            Value::Data(d) => d.to_bytes().len(),
            Value::Rows(r) => r.encoded_len(meter),
        }
    }

    /// The whole encoding.
    pub(crate) fn encode(&self, meter: &DlmsMeter) -> Vec<u8> {
        match self {
            Value::Data(d) => d.to_bytes(),
            Value::Rows(r) => r.encode_all(meter),
        }
    }
}

/// GET of `attribute` of object (`class`, `ln`), with optional selective access.
pub(crate) fn get(
    ctx: &Ctx<'_>,
    class: u16,
    ln: &LogicalName,
    attribute: i8,
    access: Option<&SelectiveAccess>,
) -> Result<Value, DataAccessResult> {
    let object = lookup(class, ln)?;
    if attribute < 1 || attribute > object.kind.attributes() {
        return Err(DataAccessResult::ObjectUndefined);
    }
    if attribute == 1 {
        return Ok(Value::Data(Data::OctetString(object.ln.to_vec())));
    }
    if access.is_some() && !(object.kind == Kind::LoadProfile && attribute == 2) {
        return Err(DataAccessResult::ReadWriteDenied);
    }
    let meter = ctx.meter;
    let model = meter.model();
    let now = ctx.now;
    let data = match (object.kind, attribute) {
        (Kind::Clock, 2) => datetime(now),
        (Kind::Clock, 3) => Data::Long(0),
        (Kind::Clock, 4) => Data::Unsigned(0),
        (Kind::Clock, 5 | 6) => {
            // Last Sunday of March / October, 02:00 / 03:00, any year (wildcards).
            let (month, hour) = if attribute == 5 { (3, 2) } else { (10, 3) };
            Data::OctetString(vec![0xFF, 0xFF, month, 0xFE, 7, hour, 0, 0, 0, 0x80, 0x00, 0xFF])
        }
        (Kind::Clock, 7) => Data::Integer(60),
        (Kind::Clock, 8) => Data::Boolean(false),
        (Kind::Clock, _) => Data::Enum(1),
        (Kind::SerialNumber, _) => Data::VisibleString(format!("{:08}", meter.spec().serial).into_bytes()),
        (Kind::DeviceName, _) => Data::OctetString(format!("AMISIM{:010}", meter.spec().serial).into_bytes()),
        (Kind::Register { quantity, .. }, 2) => register_value(meter, quantity, now),
        (Kind::Register { scaler, unit, .. }, _) => scaler_unit(scaler, unit),
        (Kind::MaxDemand, _) => {
            let (w, at) = max_demand_today(meter, now);
            match attribute {
                2 => Data::DoubleLongUnsigned(round_u32(w)),
                3 => scaler_unit(0, unit::WATT),
                4 => Data::Unsigned(0),
                _ => datetime(at),
            }
        }
        (Kind::Demand, _) => {
            let period = i64::from(meter.period_s());
            let start = now.div_euclid(period) * period;
            match attribute {
                2 => Data::DoubleLongUnsigned(round_u32(model.average_import_w(start, now.max(start + 1)))),
                3 => Data::DoubleLongUnsigned(round_u32(model.average_import_w(start - period, start))),
                4 => scaler_unit(0, unit::WATT),
                5 => Data::Unsigned(0),
                6 => datetime(start),
                7 => datetime(start),
                8 => Data::DoubleLongUnsigned(meter.period_s()),
                _ => Data::LongUnsigned(1),
            }
        }
        (Kind::LoadProfile, 2) => return profile_buffer(meter, now, access),
        (Kind::LoadProfile, 3) => Data::Array(
            PROFILE_COLUMNS
                .iter()
                .map(|(c, ln, a)| {
                    Data::Structure(vec![
                        Data::LongUnsigned(*c),
                        Data::OctetString(ln.to_vec()),
                        Data::Integer(*a),
                        Data::LongUnsigned(0),
                    ])
                })
                .collect(),
        ),
        (Kind::LoadProfile, 4) => Data::DoubleLongUnsigned(meter.period_s()),
        (Kind::LoadProfile, 5) => Data::Enum(1),
        // sort_object: the clock column (entries are in time order; some clients restrict ranges on it).
        (Kind::LoadProfile, 6) => Data::Structure(vec![
            Data::LongUnsigned(8),
            Data::OctetString(PROFILE_COLUMNS[0].1.to_vec()),
            Data::Integer(2),
            Data::LongUnsigned(0),
        ]),
        (Kind::LoadProfile, _) => Data::DoubleLongUnsigned(meter.profile_entries()),
        (Kind::Disconnect, 2) => Data::Boolean(meter.control_state() == 1),
        (Kind::Disconnect, 3) => Data::Enum(meter.control_state()),
        (Kind::Disconnect, _) => Data::Enum(1),
        (Kind::Association, 2) => object_list(),
        (Kind::Association, 3) => Data::Structure(vec![
            // SAPs are 7 bits on HDLC; a wrapper wPort beyond 127 shows as its low byte.
            Data::Integer(i8::try_from(ctx.client_sap & 0x7F).unwrap_or(0)),
            Data::LongUnsigned(meter.spec().server_logical),
        ]),
        (Kind::Association, 8) => Data::Enum(2),
        (Kind::Association, _) => return Err(DataAccessResult::ReadWriteDenied),
    };
    Ok(Value::Data(data))
}

fn scaler_unit(scaler: i8, unit: u8) -> Data {
    Data::Structure(vec![Data::Integer(scaler), Data::Enum(unit)])
}

fn register_value(meter: &DlmsMeter, quantity: Quantity, t: i64) -> Data {
    let m = meter.model();
    match quantity {
        Quantity::ImportTotal => Data::DoubleLongUnsigned(wh_u32(m.import_wh(t))),
        Quantity::ImportT1 => Data::DoubleLongUnsigned(wh_u32(m.import_t1_wh(t))),
        Quantity::ImportT2 => {
            Data::DoubleLongUnsigned(wh_u32(m.import_wh(t)).saturating_sub(wh_u32(m.import_t1_wh(t))))
        }
        Quantity::ExportTotal => Data::DoubleLongUnsigned(wh_u32(m.export_wh(t))),
        Quantity::ExportT1 => Data::DoubleLongUnsigned(wh_u32(m.export_t1_wh(t))),
        Quantity::ExportT2 => {
            Data::DoubleLongUnsigned(wh_u32(m.export_wh(t)).saturating_sub(wh_u32(m.export_t1_wh(t))))
        }
        Quantity::ImportPower => Data::DoubleLong(round_i32(m.import_w(t))),
        Quantity::ExportPower => Data::DoubleLong(round_i32(m.export_w(t))),
        Quantity::PhasePower(p) => Data::DoubleLong(round_i32(m.phase_power_w(t, p))),
        Quantity::Voltage(p) => Data::LongUnsigned(round_u16(m.voltage_v(t, p) * 10.0)),
        Quantity::Current(p) => Data::LongUnsigned(round_u16(m.current_a(t, p) * 100.0)),
        Quantity::Frequency => Data::LongUnsigned(round_u16(m.frequency_hz(t) * 100.0)),
    }
}

/// Today's (UTC day of `now`) largest average import demand over a completed capture period, and the end
/// of that period. Before the first period of the day ends: 0 W at midnight.
fn max_demand_today(meter: &DlmsMeter, now: i64) -> (f64, i64) {
    let period = i64::from(meter.period_s());
    let midnight = now.div_euclid(86_400) * 86_400;
    let mut best = (0.0, midnight);
    let mut end = midnight + period;
    while end <= now {
        let w = meter.model().average_import_w(end - period, end);
        if w > best.0 {
            best = (w, end);
        }
        end += period;
    }
    best
}

/// The load profile buffer at `now`, whole or selected by `access` (selector 1 by range on the clock
/// column, selector 2 by entry).
fn profile_buffer(meter: &DlmsMeter, now: i64, access: Option<&SelectiveAccess>) -> Result<Value, DataAccessResult> {
    let (oldest, newest, entries) = meter.profile_span(now);
    let period = i64::from(meter.period_s());
    let all_columns: Vec<usize> = (0..PROFILE_COLUMNS.len()).collect();
    let Some(access) = access else {
        return Ok(Value::Rows(Rows { first: oldest, count: entries, period, columns: all_columns }));
    };
    let Data::Structure(params) = &access.parameters else {
        return Err(DataAccessResult::TypeUnmatched);
    };
    match access.selector {
        1 => {
            let (restricting, from, to) = match params.as_slice() {
                [r, f, t] | [r, f, t, _] => (r, f, t),
                _ => return Err(DataAccessResult::TypeUnmatched),
            };
            // An empty restricting object (class 0, as a client copies an unset sort_object) means the
            // clock column.
            let unset = matches!(restricting, Data::Structure(f) if f.first().and_then(cosem::data_to_i64) == Some(0));
            let restricting = if unset { 0 } else { column_of(restricting).ok_or(DataAccessResult::TypeUnmatched)? };
            if restricting != 0 {
                // Only the clock column orders the buffer.
                return Err(DataAccessResult::ReadWriteDenied);
            }
            let columns = match params.get(3) {
                None => all_columns,
                Some(Data::Array(selected)) if selected.is_empty() => all_columns,
                Some(Data::Array(selected)) => {
                    let mut cols = selected
                        .iter()
                        .map(column_of)
                        .collect::<Option<Vec<_>>>()
                        .ok_or(DataAccessResult::TypeUnmatched)?;
                    cols.sort_unstable();
                    cols.dedup();
                    cols
                }
                Some(_) => return Err(DataAccessResult::TypeUnmatched),
            };
            let bound = |d: &Data, unspecified: i64| match d {
                Data::Null => Ok(unspecified),
                d => cosem::data_to_unix(d).ok_or(DataAccessResult::TypeUnmatched),
            };
            let from = bound(from, i64::MIN)?;
            let to = bound(to, i64::MAX)?;
            // First entry at or after `from`, last at or before `to`.
            let first = from.saturating_add(period - 1).div_euclid(period).saturating_mul(period).max(oldest);
            let last = to.div_euclid(period).saturating_mul(period).min(newest);
            let count = if last >= first { u32::try_from((last - first) / period + 1).unwrap_or(0) } else { 0 };
            Ok(Value::Rows(Rows { first, count, period, columns }))
        }
        2 => {
            let number = |d: Option<&Data>| d.and_then(cosem::data_to_i64).ok_or(DataAccessResult::TypeUnmatched);
            let from_entry = number(params.first())?.max(1);
            let to_entry = match number(params.get(1))? {
                0 => i64::from(entries),
                n => n.min(i64::from(entries)),
            };
            let from_col = params.get(2).map_or(Ok(1), |d| number(Some(d)))?.max(1);
            let to_col = match params.get(3).map_or(Ok(0), |d| number(Some(d)))? {
                0 => PROFILE_COLUMNS.len() as i64,
                n => n.min(PROFILE_COLUMNS.len() as i64),
            };
            let columns: Vec<usize> = (from_col..=to_col).filter_map(|c| usize::try_from(c - 1).ok()).collect();
            if columns.is_empty() {
                return Err(DataAccessResult::ReadWriteDenied);
            }
            let count = if to_entry >= from_entry { u32::try_from(to_entry - from_entry + 1).unwrap_or(0) } else { 0 };
            Ok(Value::Rows(Rows { first: oldest + (from_entry - 1) * period, count, period, columns }))
        }
        _ => Err(DataAccessResult::ReadWriteDenied),
    }
}

/// The index of the profile column a capture object definition names.
fn column_of(d: &Data) -> Option<usize> {
    let Data::Structure(f) = d else { return None };
    let class = u16::try_from(cosem::data_to_i64(f.first()?)?).ok()?;
    let Data::OctetString(ln) = f.get(1)? else { return None };
    let attribute = i8::try_from(cosem::data_to_i64(f.get(2)?)?).ok()?;
    PROFILE_COLUMNS.iter().position(|(c, l, a)| *c == class && l.as_slice() == ln.as_slice() && *a == attribute)
}

/// The Association LN object list (version 0 access rights: attribute access enum, method access boolean).
fn object_list() -> Data {
    Data::Array(
        OBJECTS
            .iter()
            .map(|o| {
                let attributes = (1..=o.kind.attributes())
                    .map(|a| {
                        let mode = if o.kind.writable(a) { 3 } else { 1 };
                        let selectors = if o.kind == Kind::LoadProfile && a == 2 {
                            Data::Array(vec![Data::Integer(1), Data::Integer(2)])
                        } else {
                            Data::Null
                        };
                        Data::Structure(vec![Data::Integer(a), Data::Enum(mode), selectors])
                    })
                    .collect();
                let methods = (1..=o.kind.methods())
                    .map(|m| Data::Structure(vec![Data::Integer(m), Data::Boolean(true)]))
                    .collect();
                Data::Structure(vec![
                    Data::LongUnsigned(o.class),
                    Data::Unsigned(o.version),
                    Data::OctetString(o.ln.to_vec()),
                    Data::Structure(vec![Data::Array(attributes), Data::Array(methods)]),
                ])
            })
            .collect(),
    )
}

/// SET of `attribute` of object (`class`, `ln`) to `value`.
pub(crate) fn set(ctx: &Ctx<'_>, class: u16, ln: &LogicalName, attribute: i8, value: &Data) -> DataAccessResult {
    let object = match lookup(class, ln) {
        Ok(o) => o,
        Err(e) => return e,
    };
    if attribute < 1 || attribute > object.kind.attributes() {
        return DataAccessResult::ObjectUndefined;
    }
    if ctx.client_sap == SAP_PUBLIC || !object.kind.writable(attribute) {
        return DataAccessResult::ReadWriteDenied;
    }
    match (object.kind, attribute) {
        (Kind::Clock, 2) => {
            let Some(dt) = cosem::data_to_datetime(value) else {
                return DataAccessResult::TypeUnmatched;
            };
            let Some(unix) = cosem::datetime_to_unix(&dt) else {
                return DataAccessResult::OtherReason;
            };
            ctx.meter.set_clock_offset(unix.saturating_sub(system_now()));
            ctx.meter.count(|s| s.clock_sets = s.clock_sets.saturating_add(1));
            DataAccessResult::Success
        }
        // The time zone is fixed at UTC: accept 0 only.
        (Kind::Clock, _) => match cosem::data_to_i64(value) {
            Some(0) => DataAccessResult::Success,
            Some(_) => DataAccessResult::OtherReason,
            None => DataAccessResult::TypeUnmatched,
        },
        _ => DataAccessResult::ReadWriteDenied,
    }
}

/// The outcome of an ACTION: Action-Result and optional return data.
pub(crate) type ActionOutcome = (u8, Option<Data>);

/// Action-Result values.
pub(crate) mod action_result {
    pub(crate) const SUCCESS: u8 = 0;
    pub(crate) const READ_WRITE_DENIED: u8 = 3;
    pub(crate) const OBJECT_UNDEFINED: u8 = 4;
    pub(crate) const OBJECT_CLASS_INCONSISTENT: u8 = 9;
}

/// ACTION of `method` of object (`class`, `ln`) other than the association's HLS method (handled by the
/// association itself).
pub(crate) fn action(ctx: &Ctx<'_>, class: u16, ln: &LogicalName, method: i8) -> ActionOutcome {
    let object = match lookup(class, ln) {
        Ok(o) => o,
        Err(DataAccessResult::ObjectClassInconsistent) => return (action_result::OBJECT_CLASS_INCONSISTENT, None),
        Err(_) => return (action_result::OBJECT_UNDEFINED, None),
    };
    if method < 1 || method > object.kind.methods() {
        return (action_result::OBJECT_UNDEFINED, None);
    }
    if ctx.client_sap == SAP_PUBLIC {
        return (action_result::READ_WRITE_DENIED, None);
    }
    match (object.kind, method) {
        // remote_disconnect: connected or ready → disconnected (transitions b, c).
        (Kind::Disconnect, 1) => {
            ctx.meter.set_control_state(0);
            (action_result::SUCCESS, None)
        }
        // remote_reconnect in control mode 1: → connected (transition d).
        (Kind::Disconnect, _) => {
            ctx.meter.set_control_state(1);
            (action_result::SUCCESS, None)
        }
        _ => (action_result::READ_WRITE_DENIED, None),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{DlmsMeter, DlmsMeterSpec, SAP_LLS};
    use super::*;

    fn ctx(meter: &DlmsMeter, now: i64) -> Ctx<'_> {
        Ctx { meter, now, client_sap: SAP_LLS }
    }

    fn data(v: Result<Value, DataAccessResult>) -> Data {
        match v {
            Ok(Value::Data(d)) => d,
            other => panic!("not data: {other:?}"),
        }
    }

    #[test]
    fn tariff_registers_sum_to_the_total() {
        let meter = DlmsMeter::new(DlmsMeterSpec::default());
        let now = 1_767_225_600 + 13 * 3600 + 17;
        let c = ctx(&meter, now);
        let read = |ln: [u8; 6]| match data(get(&c, 3, &ln, 2, None)) {
            Data::DoubleLongUnsigned(v) => v,
            other => panic!("{other:?}"),
        };
        let total = read([1, 0, 1, 8, 0, 255]);
        assert_eq!(total, wh_u32(meter.energy_import_wh(now)));
        assert_eq!(read([1, 0, 1, 8, 1, 255]) + read([1, 0, 1, 8, 2, 255]), total);
        assert_eq!(read([1, 0, 2, 8, 1, 255]) + read([1, 0, 2, 8, 2, 255]), read([1, 0, 2, 8, 0, 255]));
        assert_eq!(
            data(get(&c, 3, &[1, 0, 32, 7, 0, 255], 3, None)),
            Data::Structure(vec![Data::Integer(-1), Data::Enum(35)])
        );
    }

    #[test]
    fn wrong_object_class_or_attribute_is_refused() {
        let meter = DlmsMeter::new(DlmsMeterSpec::default());
        let c = ctx(&meter, 1_767_225_600);
        assert_eq!(get(&c, 3, &[1, 0, 9, 9, 9, 255], 2, None), Err(DataAccessResult::ObjectUndefined));
        assert_eq!(get(&c, 1, &[1, 0, 1, 8, 0, 255], 2, None), Err(DataAccessResult::ObjectClassInconsistent));
        assert_eq!(get(&c, 3, &[1, 0, 1, 8, 0, 255], 4, None), Err(DataAccessResult::ObjectUndefined));
        assert_eq!(
            set(&c, 3, &[1, 0, 1, 8, 0, 255], 2, &Data::DoubleLongUnsigned(0)),
            DataAccessResult::ReadWriteDenied
        );
        let public = Ctx { client_sap: SAP_PUBLIC, ..c };
        assert_eq!(set(&public, 8, &[0, 0, 1, 0, 0, 255], 2, &datetime(0)), DataAccessResult::ReadWriteDenied);
        assert_eq!(action(&public, 70, &[0, 0, 96, 3, 10, 255], 1).0, action_result::READ_WRITE_DENIED);
    }

    #[test]
    fn lazy_rows_encode_like_the_whole_array() {
        let meter = DlmsMeter::new(DlmsMeterSpec { history_days: 1, ..DlmsMeterSpec::default() });
        let now = 1_767_225_600 + 3 * 3600 + 5;
        let Ok(Value::Rows(rows)) = get(&ctx(&meter, now), 7, &LOAD_PROFILE, 2, None) else { panic!() };
        assert_eq!(rows.count(), 96);
        let whole = rows.encode_all(&meter);
        let (decoded, used) = Data::decode(&whole).unwrap();
        assert_eq!(used, whole.len());
        assert_eq!(whole.len(), rows.encoded_len(&meter));
        let Data::Array(entries) = decoded else { panic!() };
        assert_eq!(entries.len(), 96);
        let mut pieces = Vec::new();
        let mut at = 0;
        while at < whole.len() {
            pieces.extend(rows.encoded_range(&meter, at, at + 37));
            at += 37;
        }
        assert_eq!(pieces, whole);
        // The newest entry is the last boundary before now, with the model's values.
        let Data::Structure(last) = &entries[95] else { panic!() };
        assert_eq!(last[0], datetime(1_767_225_600 + 3 * 3600));
        assert_eq!(last[1], Data::DoubleLongUnsigned(meter.register_values(1_767_225_600 + 3 * 3600).0));
    }

    #[test]
    fn range_and_entry_selection() {
        let meter = DlmsMeter::new(DlmsMeterSpec::default());
        let day = 1_767_225_600;
        let now = day + 86_400 + 100;
        let c = ctx(&meter, now);
        let access = cosem::range_access(day, day + 86_399, Some(0));
        let Ok(Value::Rows(rows)) = get(&c, 7, &LOAD_PROFILE, 2, Some(&access)) else { panic!() };
        assert_eq!((rows.first, rows.count, rows.columns.len()), (day, 96, 3));
        let by_entry = SelectiveAccess {
            selector: 2,
            parameters: Data::Structure(vec![
                Data::DoubleLongUnsigned(1),
                Data::DoubleLongUnsigned(2),
                Data::LongUnsigned(2),
                Data::LongUnsigned(2),
            ]),
        };
        let Ok(Value::Rows(rows)) = get(&c, 7, &LOAD_PROFILE, 2, Some(&by_entry)) else { panic!() };
        assert_eq!((rows.count, rows.columns.clone()), (2, vec![1]));
        assert_eq!(rows.first, meter.profile_span(now).0);
        // A client that copies an unset sort_object (class 0) as the restricting object gets the clock.
        let mut unset = cosem::range_access(day, day + 3599, Some(0));
        if let Data::Structure(p) = &mut unset.parameters {
            p[0] = Data::Structure(vec![
                Data::LongUnsigned(0),
                Data::OctetString(vec![0; 6]),
                Data::Integer(0),
                Data::LongUnsigned(0),
            ]);
        }
        let Ok(Value::Rows(rows)) = get(&c, 7, &LOAD_PROFILE, 2, Some(&unset)) else { panic!() };
        assert_eq!((rows.first, rows.count), (day, 4));
        // Restricting on a value column is refused.
        let mut on_value = cosem::range_access(day, day + 3599, Some(0));
        if let Data::Structure(p) = &mut on_value.parameters {
            p[0] = Data::Structure(vec![
                Data::LongUnsigned(3),
                Data::OctetString(vec![1, 0, 1, 8, 0, 255]),
                Data::Integer(2),
                Data::LongUnsigned(0),
            ]);
        }
        assert_eq!(get(&c, 7, &LOAD_PROFILE, 2, Some(&on_value)), Err(DataAccessResult::ReadWriteDenied));
        // Range outside the history: empty.
        let access = cosem::range_access(0, 1000, Some(0));
        let Ok(Value::Rows(rows)) = get(&c, 7, &LOAD_PROFILE, 2, Some(&access)) else { panic!() };
        assert_eq!(rows.count, 0);
        assert_eq!(Data::decode(&rows.encode_all(&meter)).unwrap().0, Data::Array(vec![]));
    }

    #[test]
    fn object_list_names_every_object() {
        let Data::Array(list) = object_list() else { panic!() };
        assert_eq!(list.len(), OBJECTS.len());
        let bytes = object_list().to_bytes();
        assert_eq!(Data::decode(&bytes).unwrap().1, bytes.len());
    }
}

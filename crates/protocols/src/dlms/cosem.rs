//! COSEM interface classes read with meaning (Blue Book DLMS UA 1000-1, IEC 62056-6-2): OBIS codes as text,
//! register scaler/unit (classes 3, 4, 5), the unit table, COSEM date-time ↔ Unix time, profile generic
//! (class 7) capture objects, selective access by range and buffer rows, and the well-known objects the
//! client touches (clock class 8, disconnect control class 70, the current association class 15).
//!
//! Pure functions over [`Data`]: no I/O, no clock. Date maths are done here (proleptic Gregorian calendar,
//! no leap seconds) rather than with a date crate.
//!
//! # Deviation (Blue Book §4.1.6.1)
//! The deviation of a COSEM date-time is the number of minutes from local time to UTC: `UTC = local +
//! deviation`, so Central European winter time (UTC+1) carries `-60`. Gurux reads it the same way by
//! default (its `UseUtc2NormalTime` switch is for meters that send the opposite sign). A date-time whose
//! deviation is not specified (`0x8000`) is taken as UTC.
//!
//! Panic contract: nothing here panics on any `Data` a meter sends; meaning errors are [`DlmsError`]s.

use super::apdu::{AttributeDescriptor, LogicalName, MethodDescriptor, SelectiveAccess};
use super::axdr::{Data, Date, DateTime, Time, DEVIATION_NOT_SPECIFIED, NOT_SPECIFIED, YEAR_NOT_SPECIFIED};
use super::client::DlmsError;
use crate::civil::{civil_from_days, days_from_civil, days_in_month};

/// Class id of Data (1).
pub const CLASS_DATA: u16 = 1;
/// Class id of Register (3).
pub const CLASS_REGISTER: u16 = 3;
/// Class id of Extended register (4).
pub const CLASS_EXTENDED_REGISTER: u16 = 4;
/// Class id of Demand register (5).
pub const CLASS_DEMAND_REGISTER: u16 = 5;
/// Class id of Profile generic (7).
pub const CLASS_PROFILE_GENERIC: u16 = 7;
/// Class id of Clock (8).
pub const CLASS_CLOCK: u16 = 8;
/// Class id of Association LN (15).
pub const CLASS_ASSOCIATION_LN: u16 = 15;
/// Class id of Disconnect control (70).
pub const CLASS_DISCONNECT_CONTROL: u16 = 70;

/// The clock object `0.0.1.0.0.255`.
pub const CLOCK: LogicalName = [0, 0, 1, 0, 0, 255];
/// The disconnect control object `0.0.96.3.10.255`.
pub const DISCONNECT_CONTROL: LogicalName = [0, 0, 96, 3, 10, 255];

/// Clock attribute 2 `time` (read, and written to set the clock).
pub const CLOCK_TIME: AttributeDescriptor =
    AttributeDescriptor { class_id: CLASS_CLOCK, instance: CLOCK, attribute: 2 };

/// Disconnect control method 1 `remote_disconnect` (parameter `integer(0)`).
pub const REMOTE_DISCONNECT: MethodDescriptor =
    MethodDescriptor { class_id: CLASS_DISCONNECT_CONTROL, instance: DISCONNECT_CONTROL, method: 1 };
/// Disconnect control method 2 `remote_reconnect` (parameter `integer(0)`).
pub const REMOTE_RECONNECT: MethodDescriptor =
    MethodDescriptor { class_id: CLASS_DISCONNECT_CONTROL, instance: DISCONNECT_CONTROL, method: 2 };

/// Register (3), extended register (4) attribute 3 and demand register (5) attribute 4: `scaler_unit`.
pub fn scaler_unit_attribute(class_id: u16) -> Option<i8> {
    match class_id {
        CLASS_REGISTER | CLASS_EXTENDED_REGISTER => Some(3),
        CLASS_DEMAND_REGISTER => Some(4),
        _ => None,
    }
}

/// Profile generic attributes: 2 buffer, 3 capture objects, 4 capture period (seconds), 7 entries in use.
pub mod profile_attribute {
    /// `buffer`
    pub const BUFFER: i8 = 2;
    /// `capture_objects`
    pub const CAPTURE_OBJECTS: i8 = 3;
    /// `capture_period` (double-long-unsigned seconds, 0 = not periodic)
    pub const CAPTURE_PERIOD: i8 = 4;
    /// `entries_in_use`
    pub const ENTRIES_IN_USE: i8 = 7;
}

/// An OBIS code as text: `A-B:C.D.E.F`, e.g. `1-0:1.8.0.255`.
pub fn obis_to_string(ln: &LogicalName) -> String {
    let [a, b, c, d, e, f] = *ln;
    format!("{a}-{b}:{c}.{d}.{e}.{f}")
}

/// Parses an OBIS code: `1-0:1.8.0.255`, `1-0:1.8.0*255`, `1.0.1.8.0.255`, or five groups with `F` = 255
/// (`1-0:1.8.0`). Each group is a decimal number 0..=255; separators are `-`, `:`, `.`, `*`.
pub fn parse_obis(s: &str) -> Option<LogicalName> {
    let mut out = [0u8; 6];
    let mut n = 0usize;
    for part in s.trim().split(['-', ':', '.', '*']) {
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *out.get_mut(n)? = part.parse().ok()?;
        n += 1;
    }
    match n {
        6 => Some(out),
        5 => {
            out[5] = 255;
            Some(out)
        }
        _ => None,
    }
}

/// A register's `scaler_unit`: value × 10^scaler in `unit` (Blue Book §4.3.2 and the unit table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ScalerUnit {
    /// Power of ten applied to the raw value.
    pub scaler: i8,
    /// Unit enumeration (Blue Book §4.3.2 table "Enumerated values for physical units").
    pub unit: u8,
}

/// (unit code, symbol) from the Blue Book unit table.
const UNITS: &[(u8, &str)] = &[
    (1, "a"),
    (2, "mo"),
    (3, "wk"),
    (4, "d"),
    (5, "h"),
    (6, "min"),
    (7, "s"),
    (8, "°"),
    (9, "°C"),
    (10, "currency"),
    (11, "m"),
    (12, "m/s"),
    (13, "m³"),
    (14, "m³"),
    (15, "m³/h"),
    (16, "m³/h"),
    (17, "m³/d"),
    (18, "m³/d"),
    (19, "l"),
    (20, "kg"),
    (21, "N"),
    (22, "Nm"),
    (23, "Pa"),
    (24, "bar"),
    (25, "J"),
    (26, "J/h"),
    (27, "W"),
    (28, "VA"),
    (29, "var"),
    (30, "Wh"),
    (31, "VAh"),
    (32, "varh"),
    (33, "A"),
    (34, "C"),
    (35, "V"),
    (36, "V/m"),
    (37, "F"),
    (38, "Ω"),
    (39, "Ωm²/m"),
    (40, "Wb"),
    (41, "T"),
    (42, "A/m"),
    (43, "H"),
    (44, "Hz"),
    (45, "1/(Wh)"),
    (46, "1/(varh)"),
    (47, "1/(VAh)"),
    (48, "V²h"),
    (49, "A²h"),
    (50, "kg/s"),
    (51, "S"),
    (52, "K"),
    (53, "1/(V²h)"),
    (54, "1/(A²h)"),
    (55, "1/m³"),
    (56, "%"),
    (57, "Ah"),
    (60, "Wh/m³"),
    (61, "J/m³"),
    (62, "mol%"),
    (63, "g/m³"),
    (64, "Pa s"),
    (65, "J/kg"),
    (66, "g/cm²"),
    (67, "atm"),
    (70, "dBm"),
    (71, "dBµV"),
    (72, "dB"),
];

impl ScalerUnit {
    /// Unit code 255: a count, no unit.
    pub const COUNT: u8 = 255;

    /// From the attribute value `structure { integer scaler, enum unit }` (other integer types are accepted
    /// for either field when the value fits).
    pub fn from_data(data: &Data) -> Result<ScalerUnit, DlmsError> {
        let bad = || DlmsError::Unexpected(format!("scaler_unit is not structure {{ integer, enum }}: {data:?}"));
        let Data::Structure(items) = data else {
            return Err(bad());
        };
        let [scaler, unit] = items.as_slice() else {
            return Err(bad());
        };
        let scaler = data_to_i64(scaler).and_then(|v| i8::try_from(v).ok()).ok_or_else(bad)?;
        let unit = data_to_i64(unit).and_then(|v| u8::try_from(v).ok()).ok_or_else(bad)?;
        Ok(ScalerUnit { scaler, unit })
    }

    /// `value × 10^scaler`, or `None` when `value` is not a number. Negative scalers divide by the power
    /// of ten, so `12345` with scaler `-3` is exactly the `f64` nearest 12.345.
    pub fn apply(&self, value: &Data) -> Option<f64> {
        data_to_f64(value).map(|v| scale(v, self.scaler))
    }

    /// The unit symbol (`Wh`, `V`, …); `None` for 0, 254 (other unit), 255 (count) and unknown codes.
    pub fn unit_symbol(&self) -> Option<&'static str> {
        unit_symbol(self.unit)
    }
}

/// `v × 10^scaler`.
pub fn scale(v: f64, scaler: i8) -> f64 {
    let p = 10f64.powi(i32::from(scaler).abs());
    if scaler < 0 {
        v / p
    } else {
        v * p
    }
}

/// The symbol of a Blue Book unit code; `None` for 0, 254 (other unit), 255 (count) and unknown codes.
pub fn unit_symbol(unit: u8) -> Option<&'static str> {
    UNITS.iter().find(|(u, _)| *u == unit).map(|(_, s)| *s)
}

/// A number held by `data` as `f64`: every integer type, float32/64, enum and boolean (0/1) and bcd (two
/// decimal digits); `None` for anything else (strings, structures, null-data, a bcd with a non-decimal
/// nibble).
pub fn data_to_f64(data: &Data) -> Option<f64> {
    match data {
        Data::Float32(v) => Some(f64::from(*v)),
        Data::Float64(v) => Some(*v),
        // Exact up to 2^53; meter registers never exceed it.
        Data::Long64(v) => Some(*v as f64),
        Data::Long64Unsigned(v) => Some(*v as f64),
        other => data_to_i64(other).map(|v| v as f64),
    }
}

/// An integer held by `data` (integer types, enum, boolean, bcd); `None` otherwise.
pub fn data_to_i64(data: &Data) -> Option<i64> {
    Some(match data {
        Data::Boolean(b) => i64::from(*b),
        Data::DoubleLong(v) => i64::from(*v),
        Data::DoubleLongUnsigned(v) => i64::from(*v),
        Data::Integer(v) => i64::from(*v),
        Data::Long(v) => i64::from(*v),
        Data::Unsigned(v) | Data::Enum(v) => i64::from(*v),
        Data::LongUnsigned(v) => i64::from(*v),
        Data::Long64(v) => *v,
        Data::Long64Unsigned(v) => i64::try_from(*v).ok()?,
        Data::Bcd(v) => {
            let (hi, lo) = (v >> 4, v & 0x0F);
            if hi > 9 || lo > 9 {
                return None;
            }
            i64::from(hi * 10 + lo)
        }
        _ => return None,
    })
}

/// Unix seconds of a COSEM date-time: `UTC = local + deviation` (module doc); a deviation not specified is
/// taken as UTC. Seconds and hundredths not specified (`0xFF`) count as 0; `None` when the year, month, day,
/// hour or minute is not specified or out of range (including the DST/last-day wildcards).
pub fn datetime_to_unix(dt: &DateTime) -> Option<i64> {
    datetime_to_unix_or(dt, None)
}

/// Like [`datetime_to_unix`], with `default_deviation` for a date-time whose deviation is not specified
/// (e.g. the deviation of the meter's clock, for profile entries stamped without one).
pub fn datetime_to_unix_or(dt: &DateTime, default_deviation: Option<i16>) -> Option<i64> {
    let Date { year, month, day, .. } = dt.date;
    let Time { hour, minute, second, .. } = dt.time;
    if year == YEAR_NOT_SPECIFIED || !(1..=12).contains(&month) || hour > 23 || minute > 59 {
        return None;
    }
    let y = i64::from(year);
    if day == 0 || day > days_in_month(y, month) {
        return None;
    }
    let second = match second {
        NOT_SPECIFIED => 0,
        s if s <= 59 => s,
        _ => return None,
    };
    let local = days_from_civil(y, u32::from(month), u32::from(day)) * 86_400
        + i64::from(hour) * 3600
        + i64::from(minute) * 60
        + i64::from(second);
    Some(local + dt.deviation().or(default_deviation).map_or(0, |d| i64::from(d) * 60))
}

/// The COSEM date-time of Unix time `secs`, as local time with `deviation` minutes (`UTC = local +
/// deviation`), or as UTC with the deviation "not specified" when `None`. Hundredths 0, clock status 0.
/// Years outside 0..=65534 come out as "year not specified".
pub fn unix_to_datetime(secs: i64, deviation_minutes: Option<i16>) -> DateTime {
    let local = secs.saturating_sub(deviation_minutes.map_or(0, |d| i64::from(d) * 60));
    let days = local.div_euclid(86_400);
    let tod = local.rem_euclid(86_400);
    let (y, month, day) = civil_from_days(days);
    // 1970-01-01 was a Thursday (4); COSEM weekdays are 1 = Monday ..= 7 = Sunday.
    let weekday = (days + 3).rem_euclid(7) as u8 + 1;
    DateTime {
        date: Date {
            year: u16::try_from(y).ok().filter(|&y| y != YEAR_NOT_SPECIFIED).unwrap_or(YEAR_NOT_SPECIFIED),
            month,
            day,
            weekday,
        },
        // tod is 0..86400, so every field fits.
        time: Time { hour: (tod / 3600) as u8, minute: (tod / 60 % 60) as u8, second: (tod % 60) as u8, hundredths: 0 },
        deviation: deviation_minutes.unwrap_or(DEVIATION_NOT_SPECIFIED),
        clock_status: 0,
    }
}

/// The date-time held by `data`: a date-time, or the 12-byte octet-string most meters send instead.
pub fn data_to_datetime(data: &Data) -> Option<DateTime> {
    match data {
        Data::DateTime(dt) => Some(*dt),
        Data::OctetString(b) => DateTime::from_bytes(b),
        _ => None,
    }
}

/// Unix seconds of a date-time held by `data` (see [`data_to_datetime`], [`datetime_to_unix`]).
pub fn data_to_unix(data: &Data) -> Option<i64> {
    data_to_datetime(data).as_ref().and_then(datetime_to_unix)
}

/// One entry of a profile generic's `capture_objects` (attribute 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CaptureObject {
    /// Interface class of the captured object.
    pub class_id: u16,
    /// Its logical name.
    pub instance: LogicalName,
    /// The captured attribute.
    pub attribute: i8,
    /// Element of the attribute (0 = the whole attribute).
    pub data_index: u16,
}

impl CaptureObject {
    /// The capture object definition as sent in selective access:
    /// `structure { long-unsigned class, octet-string ln, integer attribute, long-unsigned data index }`.
    pub fn to_data(&self) -> Data {
        Data::Structure(vec![
            Data::LongUnsigned(self.class_id),
            Data::OctetString(self.instance.to_vec()),
            Data::Integer(self.attribute),
            Data::LongUnsigned(self.data_index),
        ])
    }

    /// Whether this column is the clock's time (class 8 attribute 2).
    pub fn is_clock_time(&self) -> bool {
        self.class_id == CLASS_CLOCK && self.attribute == 2
    }
}

/// The capture objects from attribute 3 of a profile generic: an array of the structures described at
/// [`CaptureObject::to_data`].
pub fn parse_capture_objects(data: &Data) -> Result<Vec<CaptureObject>, DlmsError> {
    let Data::Array(items) = data else {
        return Err(DlmsError::Unexpected(format!("capture_objects is not an array: {data:?}")));
    };
    items
        .iter()
        .map(|item| {
            let bad = || DlmsError::Unexpected(format!("bad capture object definition: {item:?}"));
            let Data::Structure(f) = item else {
                return Err(bad());
            };
            let [class_id, ln, attribute, data_index] = f.as_slice() else {
                return Err(bad());
            };
            let class_id = data_to_i64(class_id).and_then(|v| u16::try_from(v).ok()).ok_or_else(bad)?;
            let Data::OctetString(ln) = ln else {
                return Err(bad());
            };
            let instance: LogicalName = ln.as_slice().try_into().map_err(|_| bad())?;
            let attribute = data_to_i64(attribute).and_then(|v| i8::try_from(v).ok()).ok_or_else(bad)?;
            let data_index = data_to_i64(data_index).and_then(|v| u16::try_from(v).ok()).ok_or_else(bad)?;
            Ok(CaptureObject { class_id, instance, attribute, data_index })
        })
        .collect()
}

/// The clock's time as a capture object (class 8, `0.0.1.0.0.255`, attribute 2, whole attribute).
pub const CLOCK_COLUMN: CaptureObject =
    CaptureObject { class_id: CLASS_CLOCK, instance: CLOCK, attribute: 2, data_index: 0 };

/// Selective access by range (selector 1, Blue Book §4.3.6 profile generic) restricted on the clock
/// `0.0.1.0.0.255` attribute 2: entries from `from_unix` to `to_unix` (both inclusive), all columns. The
/// bounds travel as 12-byte date-time octet-strings in local time with `deviation` (see
/// [`unix_to_datetime`]) with the weekday not specified.
pub fn range_access(from_unix: i64, to_unix: i64, deviation: Option<i16>) -> SelectiveAccess {
    range_access_on(&CLOCK_COLUMN, from_unix, to_unix, deviation)
}

/// Like [`range_access`] with another restricting column (a profile whose time column is not the clock).
pub fn range_access_on(
    restricting: &CaptureObject,
    from_unix: i64,
    to_unix: i64,
    deviation: Option<i16>,
) -> SelectiveAccess {
    let bound = |t| {
        let mut dt = unix_to_datetime(t, deviation);
        // Weekday "not specified", as Gurux sends range bounds (the meter compares date and time).
        dt.date.weekday = NOT_SPECIFIED;
        Data::OctetString(dt.to_bytes().to_vec())
    };
    SelectiveAccess {
        selector: 1,
        parameters: Data::Structure(vec![
            restricting.to_data(),
            bound(from_unix),
            bound(to_unix),
            Data::Array(Vec::new()),
        ]),
    }
}

/// One entry of a profile generic buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileRow {
    /// Unix time of the entry from its time column (see [`profile_rows`]); `None` when it has none.
    pub time: Option<i64>,
    /// Every column's value in capture-object order (the time column included, as sent).
    pub values: Vec<Data>,
}

/// The entries of a profile generic `buffer` (an array of structures, one field per capture object).
///
/// The time column is the first capture object that is the clock's time (class 8 attribute 2), else the
/// first column holding a date-time in the first entry. A time column holding null-data is the previous
/// entry's time plus the capture period (Blue Book §4.3.6: meters compress periodic timestamps so); without a
/// previous time or a period the entry's time is `None`. `columns` may be empty (then only the date-time
/// guess applies and the field counts are not checked).
pub fn profile_rows(
    buffer: &Data,
    columns: &[CaptureObject],
    period_s: Option<u32>,
) -> Result<Vec<ProfileRow>, DlmsError> {
    profile_rows_or(buffer, columns, period_s, None)
}

/// Like [`profile_rows`], taking entry times without a deviation as local time with `default_deviation`
/// (see [`datetime_to_unix_or`]).
pub fn profile_rows_or(
    buffer: &Data,
    columns: &[CaptureObject],
    period_s: Option<u32>,
    default_deviation: Option<i16>,
) -> Result<Vec<ProfileRow>, DlmsError> {
    let entries = match buffer {
        Data::Array(entries) => entries,
        Data::Null => return Ok(Vec::new()),
        other => return Err(DlmsError::Unexpected(format!("profile buffer is not an array: {}", short(other)))),
    };
    let mut time_col = columns.iter().position(CaptureObject::is_clock_time);
    let mut rows = Vec::with_capacity(entries.len());
    let mut previous: Option<i64> = None;
    let period = period_s.filter(|&p| p > 0).map(i64::from);
    for (i, entry) in entries.iter().enumerate() {
        let Data::Structure(fields) = entry else {
            return Err(DlmsError::Unexpected(format!("profile entry {i} is not a structure: {}", short(entry))));
        };
        if !columns.is_empty() && fields.len() != columns.len() {
            return Err(DlmsError::Unexpected(format!(
                "profile entry {i} has {} fields for {} capture objects",
                fields.len(),
                columns.len()
            )));
        }
        if time_col.is_none() && i == 0 {
            time_col = fields.iter().position(|f| data_to_datetime(f).is_some());
        }
        let time = match time_col.and_then(|c| fields.get(c)) {
            Some(Data::Null) => previous.zip(period).map(|(p, d)| p + d),
            Some(field) => data_to_datetime(field).and_then(|dt| datetime_to_unix_or(&dt, default_deviation)),
            None => None,
        };
        previous = time;
        rows.push(ProfileRow { time, values: fields.clone() });
    }
    Ok(rows)
}

/// A bounded rendering of a value for error messages.
fn short(data: &Data) -> String {
    let mut s = format!("{data:?}");
    if s.len() > 120 {
        let mut cut = 117;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

/// The name of an interface class (DLMS UA 1000-1, Blue Book), for messages and printouts.
pub fn class_name(class_id: u16) -> Option<&'static str> {
    Some(match class_id {
        1 => "Data",
        3 => "Register",
        4 => "Extended register",
        5 => "Demand register",
        6 => "Register activation",
        7 => "Profile generic",
        8 => "Clock",
        9 => "Script table",
        11 => "Special days table",
        12 => "Association SN",
        15 => "Association LN",
        17 => "SAP assignment",
        18 => "Image transfer",
        20 => "Activity calendar",
        21 => "Register monitor",
        22 => "Single action schedule",
        23 => "IEC HDLC setup",
        40 => "Push setup",
        41 => "TCP-UDP setup",
        42 => "IPv4 setup",
        64 => "Security setup",
        70 => "Disconnect control",
        71 => "Limiter",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn obis_text_both_ways() {
        assert_eq!(obis_to_string(&[1, 0, 1, 8, 0, 255]), "1-0:1.8.0.255");
        for s in ["1-0:1.8.0.255", "1-0:1.8.0*255", "1.0.1.8.0.255", "1-0:1.8.0", " 1-0:1.8.0*255 "] {
            assert_eq!(parse_obis(s), Some([1, 0, 1, 8, 0, 255]), "{s}");
        }
        assert_eq!(parse_obis("0-0:96.3.10.255"), Some(DISCONNECT_CONTROL));
        for bad in ["", "1-0:1.8", "1-0:1.8.0.255.1", "1-0:1.8.256", "1--0:1.8.0", "a-0:1.8.0", "1-0:1.8.+1"] {
            assert_eq!(parse_obis(bad), None, "{bad}");
        }
    }

    #[test]
    fn unit_table_and_scaler() {
        let su = ScalerUnit::from_data(&Data::Structure(vec![Data::Integer(-3), Data::Enum(30)])).unwrap();
        assert_eq!(su, ScalerUnit { scaler: -3, unit: 30 });
        assert_eq!(su.unit_symbol(), Some("Wh"));
        assert_eq!(su.apply(&Data::DoubleLongUnsigned(12_345)), Some(12.345));
        assert_eq!(ScalerUnit { scaler: 2, unit: 27 }.apply(&Data::Long(-7)), Some(-700.0));
        assert_eq!(ScalerUnit { scaler: 0, unit: 35 }.apply(&Data::Float32(230.5)), Some(230.5));
        assert_eq!(su.apply(&Data::OctetString(vec![1])), None);
        for (code, sym) in
            [(27, "W"), (28, "VA"), (29, "var"), (31, "VAh"), (32, "varh"), (33, "A"), (35, "V"), (44, "Hz")]
        {
            assert_eq!(unit_symbol(code), Some(sym), "{code}");
        }
        assert_eq!(unit_symbol(255), None);
        assert_eq!(unit_symbol(0), None);
        assert!(ScalerUnit::from_data(&Data::Structure(vec![Data::Integer(0)])).is_err());
        assert!(ScalerUnit::from_data(&Data::Structure(vec![Data::Long(300), Data::Enum(30)])).is_err());
        assert!(ScalerUnit::from_data(&Data::Null).is_err());
    }

    #[test]
    fn numbers_from_data() {
        assert_eq!(data_to_f64(&Data::Bcd(0x42)), Some(42.0));
        assert_eq!(data_to_f64(&Data::Bcd(0x4A)), None);
        assert_eq!(data_to_f64(&Data::Long64Unsigned(u64::MAX)), Some(u64::MAX as f64));
        assert_eq!(data_to_f64(&Data::Boolean(true)), Some(1.0));
        assert_eq!(data_to_f64(&Data::Null), None);
    }

    fn dt(y: u16, mo: u8, d: u8, h: u8, mi: u8, s: u8, dev: i16) -> DateTime {
        DateTime {
            date: Date { year: y, month: mo, day: d, weekday: 0xFF },
            time: Time { hour: h, minute: mi, second: s, hundredths: 0 },
            deviation: dev,
            clock_status: 0,
        }
    }

    #[test]
    fn datetime_and_unix_with_deviation() {
        // 2021-01-01 00:00:00 UTC = 1609459200.
        assert_eq!(datetime_to_unix(&dt(2021, 1, 1, 0, 0, 0, DEVIATION_NOT_SPECIFIED)), Some(1_609_459_200));
        assert_eq!(datetime_to_unix(&dt(2021, 1, 1, 0, 0, 0, 0)), Some(1_609_459_200));
        // 01:00 local in CET (deviation -60: UTC = local - 1 h) is midnight UTC.
        assert_eq!(datetime_to_unix(&dt(2021, 1, 1, 1, 0, 0, -60)), Some(1_609_459_200));
        // 2024-02-29 12:34:56 UTC.
        assert_eq!(datetime_to_unix(&dt(2024, 2, 29, 12, 34, 56, 0)), Some(1_709_210_096));
        assert_eq!(datetime_to_unix(&dt(2023, 2, 29, 0, 0, 0, 0)), None);
        assert_eq!(datetime_to_unix(&dt(0xFFFF, 1, 1, 0, 0, 0, 0)), None);
        assert_eq!(datetime_to_unix(&dt(2021, 1, 0xFE, 0, 0, 0, 0)), None);
        assert_eq!(datetime_to_unix(&dt(2021, 1, 1, 0xFF, 0, 0, 0)), None);
        // A deviation not specified takes the default when one is given.
        assert_eq!(
            datetime_to_unix_or(&dt(2021, 1, 1, 1, 0, 0, DEVIATION_NOT_SPECIFIED), Some(-60)),
            Some(1_609_459_200)
        );
        assert_eq!(datetime_to_unix_or(&dt(2021, 1, 1, 1, 0, 0, 0), Some(-60)), Some(1_609_462_800));
        // Seconds not specified count as 0.
        assert_eq!(datetime_to_unix(&dt(2021, 1, 1, 0, 0, 0xFF, 0)), Some(1_609_459_200));

        let back = unix_to_datetime(1_609_459_200, Some(-60));
        assert_eq!((back.date.year, back.date.month, back.date.day, back.date.weekday), (2021, 1, 1, 5));
        assert_eq!((back.time.hour, back.time.minute, back.deviation), (1, 0, -60));
        assert_eq!(back.to_bytes(), [0x07, 0xE5, 1, 1, 5, 1, 0, 0, 0, 0xFF, 0xC4, 0]);
        let utc = unix_to_datetime(1_709_210_096, None);
        assert_eq!(utc.deviation, DEVIATION_NOT_SPECIFIED);
        assert_eq!((utc.date.month, utc.date.day, utc.date.weekday, utc.time.second), (2, 29, 4, 56));
        for t in [-86_400 * 365 * 10 - 1, 0, 951_782_400, 4_102_444_799, 1_709_210_096] {
            for dev in [None, Some(-120), Some(0), Some(330)] {
                assert_eq!(datetime_to_unix(&unix_to_datetime(t, dev)), Some(t), "{t} {dev:?}");
            }
        }
        // Octet-string form.
        let os = Data::OctetString(back.to_bytes().to_vec());
        assert_eq!(data_to_unix(&os), Some(1_609_459_200));
        assert_eq!(data_to_unix(&Data::OctetString(vec![0; 11])), None);
    }

    #[test]
    fn capture_objects_parse() {
        let data = Data::Array(vec![
            CLOCK_COLUMN.to_data(),
            Data::Structure(vec![
                Data::LongUnsigned(3),
                Data::OctetString(vec![1, 0, 1, 8, 0, 255]),
                Data::Integer(2),
                Data::LongUnsigned(0),
            ]),
        ]);
        let cols = parse_capture_objects(&data).unwrap();
        assert_eq!(cols.len(), 2);
        assert!(cols[0].is_clock_time());
        assert_eq!(cols[1], CaptureObject { class_id: 3, instance: [1, 0, 1, 8, 0, 255], attribute: 2, data_index: 0 });
        let bad = Data::Array(vec![Data::Structure(vec![
            Data::LongUnsigned(3),
            Data::OctetString(vec![1, 0, 1]),
            Data::Integer(2),
            Data::LongUnsigned(0),
        ])]);
        assert!(parse_capture_objects(&bad).is_err());
        assert!(parse_capture_objects(&Data::Null).is_err());
    }

    #[test]
    fn profile_rows_fill_compressed_clock() {
        let cols =
            [CLOCK_COLUMN, CaptureObject { class_id: 3, instance: [1, 0, 1, 8, 0, 255], attribute: 2, data_index: 0 }];
        let t0 = 1_609_459_200;
        let ts = |t| Data::OctetString(unix_to_datetime(t, Some(-60)).to_bytes().to_vec());
        let buffer = Data::Array(vec![
            Data::Structure(vec![ts(t0), Data::DoubleLongUnsigned(1)]),
            Data::Structure(vec![Data::Null, Data::DoubleLongUnsigned(2)]),
            Data::Structure(vec![Data::Null, Data::DoubleLongUnsigned(3)]),
            Data::Structure(vec![ts(t0 + 3600), Data::DoubleLongUnsigned(4)]),
            Data::Structure(vec![Data::Null, Data::DoubleLongUnsigned(5)]),
        ]);
        let rows = profile_rows(&buffer, &cols, Some(900)).unwrap();
        let times: Vec<_> = rows.iter().map(|r| r.time).collect();
        assert_eq!(times, [Some(t0), Some(t0 + 900), Some(t0 + 1800), Some(t0 + 3600), Some(t0 + 4500)]);
        assert_eq!(rows[2].values[1], Data::DoubleLongUnsigned(3));
        // Without a period, compressed entries have no time.
        let rows = profile_rows(&buffer, &cols, None).unwrap();
        assert_eq!(rows[1].time, None);
        assert_eq!(rows[3].time, Some(t0 + 3600));
        // Without capture objects the date-time column is guessed.
        let rows = profile_rows(&buffer, &[], Some(900)).unwrap();
        assert_eq!(rows[4].time, Some(t0 + 4500));
        // Field count must match the capture objects.
        let short_row = Data::Array(vec![Data::Structure(vec![ts(t0)])]);
        assert!(profile_rows(&short_row, &cols, Some(900)).is_err());
        assert!(profile_rows(&Data::Array(vec![Data::Null]), &cols, None).is_err());
        assert_eq!(profile_rows(&Data::Array(vec![]), &cols, None).unwrap(), vec![]);
    }

    #[test]
    fn range_access_parameters() {
        let sa = range_access(1_609_459_200, 1_609_462_800, Some(-60));
        assert_eq!(sa.selector, 1);
        let Data::Structure(p) = &sa.parameters else { panic!() };
        assert_eq!(p[0], CLOCK_COLUMN.to_data());
        assert_eq!(p[1], Data::OctetString(vec![0x07, 0xE5, 1, 1, 0xFF, 1, 0, 0, 0, 0xFF, 0xC4, 0]));
        assert_eq!(p[3], Data::Array(vec![]));
    }

    proptest::proptest! {
        /// Unix → date-time → Unix is the identity for every second of years 1 to 9999 and every deviation.
        #[test]
        fn unix_datetime_round_trip(t in -62_135_596_800i64..253_402_300_799, dev in proptest::option::of(-720i16..=720)) {
            let dt = unix_to_datetime(t, dev);
            proptest::prop_assert_eq!(datetime_to_unix(&dt), Some(t));
            proptest::prop_assert_eq!(DateTime::from_bytes(&dt.to_bytes()), Some(dt));
        }

        /// Any 12 bytes a meter sends as a date-time are taken or refused, never a panic.
        #[test]
        fn any_datetime_bytes_are_safe(b in proptest::prelude::any::<[u8; 12]>()) {
            let _ = data_to_unix(&Data::OctetString(b.to_vec()));
        }
    }
}

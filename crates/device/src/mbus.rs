//! An M-Bus profile at work: which records of an RSP_UD read-out (EN 13757-3, decoded by
//! `ami_protocols::mbus::app`) become which [`Reading`]s, and the derived name and OBIS code of every
//! record for the generic profile.
//!
//! # Selecting a record
//!
//! A `<value>` of an M-Bus profile holds one `<mbus>` selector ([`MbusSelect`]). A record matches when
//! every criterion given matches:
//! - `dif-vif`: the record's DIF, DIFEs, VIF (with plain text) and VIFEs exactly as received
//!   ([`Record::dif_vif_raw`](ami_protocols::mbus::app::Record::dif_vif_raw)), e.g. `"04 06"`. These bytes
//!   already fix function, storage, tariff and sub-unit (the parser checks that any of those given as well
//!   agree with them).
//! - `quantity` (the decoder's name, `Energy`, `Volume`, `Flow temperature`, …; ASCII case ignored),
//!   `function` (`instantaneous`, `maximum`, `minimum`, `error`, and `actual`/`stored` for the fixed data
//!   structure), `storage`, `tariff`, `subunit`, and `description` (the meter's own text of a plain-text VIF
//!   record, e.g. `bat. time`).
//! - Without `dif-vif`, criteria not given take defaults: function instantaneous (or actual), storage 0,
//!   tariff 0, sub-unit 0. So `quantity="Energy"` alone means "the current total energy".
//!
//! The first matching record in telegram order (over every telegram of a multi-telegram read-out) is
//! taken. Its value, with the exponent already applied by the decoder, is multiplied by `scale` (default
//! 1). The record's unit must equal the value's `unit` (units are normalized by the decoder: an energy in
//! kWh or MWh arrives in `Wh`); a mismatch is an error for that value, never a silent conversion. Text,
//! dates and date-times become [`Value::Text`]; a field the decoder kept raw (BCD error marker, NaN) is an
//! error for that value.
//!
//! # The generic profile
//!
//! `<mbus all-records="true"/>` in `<profile>` turns every record not taken by an explicit value into a
//! reading, named and coded by [`derive_mbus_name_obis`] (with the record's own unit; raw fields as hex
//! text). Within one read every name and OBIS code is unique: when two records derive the same pair (a
//! meter repeating a record, or two codings of one quantity), the later one gets a `_2`, `_3` … name suffix
//! and the next free fallback code.
//!
//! # Derived OBIS codes (EN 13757-1 value groups for A = 4–9, IEC 62056-6-1 for A = 1)
//!
//! - A from the medium: electricity 1; cooling 5; heat (outlet, inlet, heat/cooling, steam) 6; gas 7;
//!   cold water and water 8; warm and hot water 9.
//! - B (channel) = the sub-unit; E = the tariff (0 = total); F = the storage number ("VZ", historic value),
//!   255 for storage 0 (the current value). Mapped only when sub-unit ≤ 64, tariff ≤ 63, storage ≤ 99.
//! - C from the quantity — heat and cooling: energy 1, volume 2, mass 3, power 8, volume flow 9, flow
//!   temperature 10, return temperature 11, temperature difference 12; water: volume 1, volume flow 2, flow
//!   temperature 3; gas: volume 3; electricity: energy 1 (D 8), power 1 (D 7), current 11 (D 7), voltage
//!   12 (D 7).
//! - D from the function — A = 4–9: 0 current value, 4 minimum, 5 maximum (gas: current value only);
//!   electricity: 7 instantaneous, 8 energy (time integral), 6 maximum and 3 minimum of power.
//! - A record is mapped only when its VIF is a plain primary or `FD`/`FB` table entry whose VIFEs are
//!   orthogonal scale corrections (EN 13757-3 table 15); any other VIFE (direction, phase, manufacturer
//!   specific) changes the meaning, so such a record takes the fallback.
//! - Fallback, for everything else: `0-B:96.D.E*F` with B the sub-unit (≤ 255), F as above (254 for
//!   storage ≥ 254), and D.E a 15-bit FNV-1a hash of the record's DIF/DIFE/VIF/VIFE bytes with D ≥ 128 (so
//!   never an assigned `96.x` code of IEC 62056-6-1). The name is `mbus_` and those bytes in hex, so the
//!   name identifies the record exactly and the code is stable across reads.
//!
//! Names of mapped records: the quantity (`energy`, `volume`, `power`, `volume_flow`, `flow_temperature`,
//! `return_temperature`, `temperature_difference`, `mass`, `voltage`, `current`), then `_max`, `_min`
//! for the function, `_s<n>` for storage n > 0, `_t<n>` for tariff n > 0, `_u<n>` for sub-unit n > 0.
//!
//! # Timestamps
//!
//! Current values (storage 0) are stamped `now` (collector time, as the design map says for instantaneous
//! values). A historic value (storage n > 0) is stamped with the telegram's date or date-time record of
//! the same storage number (and sub-unit) when there is one — meter time, taken as UTC because M-Bus
//! carries no time zone, a date meaning midnight — and `now` otherwise (the meter did not say when it
//! stored the value; its OBIS F group still tells the value apart from the current one).
//!
//! # Quality
//!
//! `meter_error` is set for every reading of a telegram whose status byte flags an application error
//! (bits 0–1) or a permanent or temporary error (bits 3–4), and for a record whose function is "value
//! during error state".

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use ami_protocols::mbus::app::{Function, Medium, Record, RecordValue, Telegram};
use chrono::{DateTime, NaiveDate, Utc};

use crate::{Obis, Profile, ProfileError, Quality, Reading, ResolveError, Value, ValueKind};

/// Which record of a read-out a value takes (see the module documentation for the matching rules).
#[derive(Debug, Clone, PartialEq)]
pub struct MbusSelect {
    /// DIF, DIFEs, VIF and VIFEs exactly as received, e.g. `[0x04, 0x06]`.
    pub dif_vif: Option<Vec<u8>>,
    /// The decoder's quantity name (`Energy`), compared ignoring ASCII case.
    pub quantity: Option<String>,
    /// The DIF's function field.
    pub function: Option<Function>,
    /// Storage number.
    pub storage: Option<u64>,
    /// Tariff.
    pub tariff: Option<u32>,
    /// Sub-unit (device).
    pub subunit: Option<u32>,
    /// The text of a plain-text VIF record, compared ignoring ASCII case.
    pub description: Option<String>,
    /// Extra factor applied to numbers (default 1).
    pub scale: f64,
}

impl MbusSelect {
    /// Whether `record` is the one this selector names.
    pub fn matches(&self, record: &Record) -> bool {
        if let Some(dv) = &self.dif_vif {
            if *dv != record.dif_vif_raw {
                return false;
            }
        }
        let defaults = self.dif_vif.is_none();
        let function_ok = match self.function {
            Some(f) => f == record.function,
            None => !defaults || matches!(record.function, Function::Instantaneous | Function::Actual),
        };
        let storage_ok = self.storage.map_or(!defaults || record.storage == 0, |s| s == record.storage);
        let tariff_ok = self.tariff.map_or(!defaults || record.tariff == 0, |t| t == record.tariff);
        let subunit_ok = self.subunit.map_or(!defaults || record.subunit == 0, |s| s == record.subunit);
        let quantity_ok = self.quantity.as_ref().is_none_or(|q| q.eq_ignore_ascii_case(&record.quantity));
        let description_ok = self.description.as_ref().is_none_or(|d| {
            is_plain_text(&record.dif_vif_raw) && d.trim().eq_ignore_ascii_case(record.quantity.trim())
        });
        function_ok && storage_ok && tariff_ok && subunit_ok && quantity_ok && description_ok
    }
}

/// One value of an M-Bus profile: the common value attributes and its record selector.
#[derive(Debug, Clone, PartialEq)]
pub struct MbusValueDef {
    /// Unique name within the profile.
    pub name: String,
    /// OBIS code (unique within the profile).
    pub obis: Obis,
    /// Unit symbol the record must carry (after the decoder's normalization), `""` for dimensionless
    /// values, text and dates.
    pub unit: String,
    /// Kind of value.
    pub kind: ValueKind,
    /// Optional human description.
    pub description: Option<String>,
    /// Which record.
    pub select: MbusSelect,
    /// 1-based line in the profile file.
    pub line: u32,
}

/// A parsed M-Bus profile.
///
/// `profile` holds what every protocol shares (id, manufacturer, model, document, line defaults;
/// `protocol` is [`Protocol::Mbus`](crate::Protocol::Mbus)); its `values` list is empty because a
/// [`ValueSource`](crate::ValueSource) names Modbus registers only — the M-Bus values are in `values`
/// here.
#[derive(Debug, Clone, PartialEq)]
pub struct MbusProfile {
    /// The protocol-independent part.
    pub profile: Profile,
    /// The selected values, in file order.
    pub values: Vec<MbusValueDef>,
    /// `<mbus all-records="true"/>`: every record not taken by a value becomes a reading under its
    /// derived name and OBIS code.
    pub all_records: bool,
}

impl MbusProfile {
    /// The value called `name`.
    pub fn value(&self, name: &str) -> Option<&MbusValueDef> {
        self.values.iter().find(|v| v.name == name)
    }

    /// The kind of the reading called `name` with unit `unit`: the value's `kind` when the profile defines
    /// the name, else (a record of the generic profile) the default for the unit, as for a value without
    /// `kind` ([`ValueKind::default_for_unit`]).
    pub fn kind(&self, name: &str, unit: &str) -> ValueKind {
        self.value(name).map_or_else(|| ValueKind::default_for_unit(unit), |v| v.kind)
    }

    /// The M-Bus part of a profile found by [`resolve_profile`](crate::resolve_profile) or
    /// [`load_profile`](crate::load_profile): the file is read again from `profile.path`.
    ///
    /// # Errors
    /// [`ResolveError::NotFound`] when the profile has no path (built in memory) and
    /// [`ResolveError::Invalid`] when the file is not (or no longer) a valid M-Bus profile.
    pub fn from_profile(profile: &Profile) -> Result<MbusProfile, ResolveError> {
        let Some(path) = profile.path.as_deref() else {
            return Err(ResolveError::NotFound { id: profile.id.clone(), searched: Vec::new() });
        };
        load_mbus_profile(path).map_err(ResolveError::Invalid)
    }
}

/// Parses and validates an M-Bus profile (as [`parse_profile`](crate::parse_profile) does for every
/// protocol), keeping the M-Bus selections. A valid profile of another protocol is an error at its
/// `protocol` attribute.
///
/// # Errors
/// Every problem found, as `file:line:col` errors sorted by position.
pub fn parse_mbus_profile(text: &str, file: &str) -> Result<MbusProfile, Vec<ProfileError>> {
    crate::profile::parse_mbus(text, file)
}

/// Loads and validates the M-Bus profile at `path` (same file handling as
/// [`load_profile`](crate::load_profile)).
///
/// # Errors
/// The file cannot be read, is not UTF-8, or is not a valid M-Bus profile.
pub fn load_mbus_profile(path: &Path) -> Result<MbusProfile, Vec<ProfileError>> {
    let (text, file) = crate::library::read_profile_text(path)?;
    let mut p = parse_mbus_profile(&text, &file)?;
    p.profile.path = Some(path.to_path_buf());
    Ok(p)
}

/// Resolves `--profile ID|PATH` (as [`resolve_profile`](crate::resolve_profile)) to an M-Bus profile.
///
/// # Errors
/// As [`resolve_profile`](crate::resolve_profile); a profile of another protocol is
/// [`ResolveError::Invalid`].
pub fn resolve_mbus_profile(id_or_path: &str, search_dirs: &[PathBuf]) -> Result<MbusProfile, ResolveError> {
    let p = crate::resolve_profile(id_or_path, search_dirs)?;
    MbusProfile::from_profile(&p)
}

/// Why one value of an M-Bus profile has no reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MbusValueErrorKind {
    /// No record of the read-out matches the value's selector.
    Missing,
    /// The record's unit is not the value's.
    UnitMismatch {
        /// The profile's unit.
        expected: String,
        /// The record's unit.
        actual: String,
    },
    /// The decoder kept the data raw (BCD error marker, NaN, binary): not a reading.
    NotDecoded {
        /// The data field in hex.
        raw: String,
    },
}

/// One value of an M-Bus profile without a reading, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MbusValueError {
    /// The value's name.
    pub name: String,
    /// What went wrong.
    pub kind: MbusValueErrorKind,
}

impl fmt::Display for MbusValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            MbusValueErrorKind::Missing => write!(f, "{}: no matching record in the read-out", self.name),
            MbusValueErrorKind::UnitMismatch { expected, actual } => {
                write!(f, "{}: record unit \"{actual}\" is not the profile's unit \"{expected}\"", self.name)
            }
            MbusValueErrorKind::NotDecoded { raw } => {
                write!(f, "{}: the meter sent data that is not a value (raw {raw})", self.name)
            }
        }
    }
}

impl std::error::Error for MbusValueError {}

/// Turns a (multi-telegram) read-out into readings for `profile`: one per value whose record is present
/// (else an error naming the value) and, for a generic profile, one per other record.
pub fn readings_from_mbus(
    profile: &MbusProfile,
    meter: &str,
    telegrams: &[Telegram],
    now: DateTime<Utc>,
) -> (Vec<Reading>, Vec<MbusValueError>) {
    let mut readings = Vec::new();
    let mut errors = Vec::new();
    let mut taken: HashSet<(usize, usize)> = HashSet::new();
    let mut names: HashSet<String> = HashSet::new();
    let mut codes: HashSet<Obis> = HashSet::new();

    for def in &profile.values {
        names.insert(def.name.clone());
        codes.insert(def.obis);
        let found = telegrams
            .iter()
            .enumerate()
            .flat_map(|(t, tg)| tg.records.iter().enumerate().map(move |(r, rec)| (t, r, tg, rec)))
            .find(|(_, _, _, rec)| def.select.matches(rec));
        let Some((t, r, tg, rec)) = found else {
            errors.push(MbusValueError { name: def.name.clone(), kind: MbusValueErrorKind::Missing });
            continue;
        };
        taken.insert((t, r));
        if rec.unit != def.unit {
            let kind = MbusValueErrorKind::UnitMismatch { expected: def.unit.clone(), actual: rec.unit.clone() };
            errors.push(MbusValueError { name: def.name.clone(), kind });
            continue;
        }
        let value = match &rec.value {
            RecordValue::Number(n) => Value::Number(n * def.select.scale),
            RecordValue::Text(s) | RecordValue::Date(s) | RecordValue::DateTime(s) => Value::Text(s.clone()),
            RecordValue::Raw(raw) => {
                errors.push(MbusValueError {
                    name: def.name.clone(),
                    kind: MbusValueErrorKind::NotDecoded { raw: hex(raw) },
                });
                continue;
            }
        };
        readings.push(Reading {
            meter: meter.to_string(),
            name: def.name.clone(),
            obis: def.obis,
            value,
            unit: def.unit.clone(),
            ts: timestamp(tg, telegrams, rec, now),
            quality: quality(tg, rec),
        });
    }

    if profile.all_records {
        for (t, tg) in telegrams.iter().enumerate() {
            for (r, rec) in tg.records.iter().enumerate() {
                if taken.contains(&(t, r)) {
                    continue;
                }
                let (name, obis) = derive_mbus_name_obis(&tg.header.medium, rec);
                let name = unique_name(name, &mut names);
                let obis = unique_obis(obis, rec, &mut codes);
                let value = match &rec.value {
                    RecordValue::Number(n) => Value::Number(*n),
                    RecordValue::Text(s) | RecordValue::Date(s) | RecordValue::DateTime(s) => Value::Text(s.clone()),
                    RecordValue::Raw(raw) => Value::Text(hex(raw)),
                };
                readings.push(Reading {
                    meter: meter.to_string(),
                    name,
                    obis,
                    value,
                    unit: rec.unit.clone(),
                    ts: timestamp(tg, telegrams, rec, now),
                    quality: quality(tg, rec),
                });
            }
        }
    }
    (readings, errors)
}

/// `name`, or `name_2`, `name_3` … whichever is free; records it as used.
fn unique_name(name: String, used: &mut HashSet<String>) -> String {
    if used.insert(name.clone()) {
        return name;
    }
    let mut k = 2u64;
    loop {
        let candidate = format!("{name}_{k}");
        if used.insert(candidate.clone()) {
            return candidate;
        }
        k = k.saturating_add(1);
    }
}

/// `obis`, or the record's fallback code, or the next free code after it (E, then D, within the
/// fallback space `0-B:96.128..255.0..255*F`); records it as used.
fn unique_obis(obis: Obis, record: &Record, used: &mut HashSet<Obis>) -> Obis {
    if used.insert(obis) {
        return obis;
    }
    let start = fallback_obis(record);
    let [a, b, c, d0, e0, f] = start.0;
    let first = u16::from(d0 & 0x7F) << 8 | u16::from(e0);
    for i in 0..0x8000u16 {
        let n = first.wrapping_add(i) & 0x7FFF;
        let [hi, lo] = n.to_be_bytes();
        let candidate = Obis([a, b, c, 0x80 | hi, lo, f]);
        if used.insert(candidate) {
            return candidate;
        }
    }
    // Every one of the 32768 codes of this B/F pair is taken: cannot happen within one read-out (a long
    // frame holds at most 252 bytes of records), but stay total.
    obis
}

/// Quality flags from the telegram status and the record's function.
fn quality(telegram: &Telegram, record: &Record) -> Quality {
    let status = telegram.header.status;
    Quality { meter_error: status & 0x1B != 0 || record.function == Function::ValueDuringErrorState, ..Quality::OK }
}

/// The time stamp of a record (see the module documentation).
fn timestamp(telegram: &Telegram, all: &[Telegram], record: &Record, now: DateTime<Utc>) -> DateTime<Utc> {
    if record.storage == 0 {
        return now;
    }
    let is_date_of = |r: &&Record| {
        r.storage == record.storage
            && r.subunit == record.subunit
            && matches!(r.value, RecordValue::Date(_) | RecordValue::DateTime(_))
    };
    let date =
        telegram.records.iter().find(is_date_of).or_else(|| all.iter().flat_map(|t| &t.records).find(is_date_of));
    match date.map(|r| &r.value) {
        Some(RecordValue::DateTime(s)) => DateTime::parse_from_rfc3339(s).map_or(now, |d| d.with_timezone(&Utc)),
        Some(RecordValue::Date(s)) => NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map_or(now, |d| d.and_utc()),
        _ => now,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(" ")
}

/// The parts of a record header `DIF DIFE* VIF [plain text] VIFE*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DifVif {
    /// Function field of the DIF.
    pub(crate) function: Function,
    /// Storage number.
    pub(crate) storage: u64,
    /// Tariff.
    pub(crate) tariff: u32,
    /// Sub-unit.
    pub(crate) subunit: u32,
    /// The VIF byte.
    pub(crate) vif: u8,
    /// Whether the VIF is a plain-text VIF (`7C`/`FC`).
    pub(crate) plain_text: bool,
    /// VIFEs in order.
    pub(crate) vifes: Vec<u8>,
}

/// Splits a record header as received; `None` when the bytes are not exactly one header (an extension
/// bit promises a byte that is missing, bytes follow the last VIFE, a special DIF, more than ten DIFEs
/// or VIFEs).
pub(crate) fn split_dif_vif(bytes: &[u8]) -> Option<DifVif> {
    let (&dif, mut rest) = bytes.split_first()?;
    if dif & 0x0F == 0x0F {
        return None;
    }
    let function = match (dif >> 4) & 0x03 {
        0 => Function::Instantaneous,
        1 => Function::Maximum,
        2 => Function::Minimum,
        _ => Function::ValueDuringErrorState,
    };
    let mut storage = u64::from((dif >> 6) & 0x01);
    let (mut tariff, mut subunit) = (0u32, 0u32);
    let mut ext = dif & 0x80 != 0;
    let mut n = 0usize;
    while ext {
        if n == 10 {
            return None;
        }
        let (&dife, r) = rest.split_first()?;
        rest = r;
        storage |= u64::from(dife & 0x0F) << (1 + 4 * n);
        tariff |= u32::from((dife >> 4) & 0x03) << (2 * n);
        subunit |= u32::from((dife >> 6) & 0x01) << n;
        n += 1;
        ext = dife & 0x80 != 0;
    }
    let (&vif, r) = rest.split_first()?;
    rest = r;
    let plain_text = vif & 0x7F == 0x7C;
    if plain_text {
        let (&len, r) = rest.split_first()?;
        rest = r.get(usize::from(len)..)?;
    }
    let mut vifes = Vec::new();
    let mut ext = vif & 0x80 != 0;
    while ext {
        if vifes.len() == 10 {
            return None;
        }
        let (&vife, r) = rest.split_first()?;
        rest = r;
        vifes.push(vife);
        ext = vife & 0x80 != 0;
    }
    rest.is_empty().then_some(DifVif { function, storage, tariff, subunit, vif, plain_text, vifes })
}

fn is_plain_text(dif_vif: &[u8]) -> bool {
    split_dif_vif(dif_vif).is_some_and(|h| h.plain_text)
}

/// Whether a VIFE only rescales the value (EN 13757-3 table 15: `E111 0nnn`, `E111 10nn`, `E111 1101`).
fn is_scale_correction(vife: u8) -> bool {
    matches!(vife & 0x7F, 0x70..=0x7B | 0x7D)
}

/// The derived name and OBIS code of a record for the generic profile: the EN 13757-1 / IEC 62056-6-1
/// code where one exists, else the manufacturer-neutral `0-B:96.D.E*F` fallback (see the module
/// documentation for the whole mapping). Pure: the same record always derives the same pair.
pub fn derive_mbus_name_obis(medium: &Medium, record: &Record) -> (String, Obis) {
    mapped(medium, record).unwrap_or_else(|| (fallback_name(record), fallback_obis(record)))
}

/// Value group A for a medium, when EN 13757-1 / IEC 62056-6-1 assign one.
fn medium_group(medium: &Medium) -> Option<u8> {
    Some(match medium {
        Medium::Electricity => 1,
        Medium::CoolingOutlet | Medium::CoolingInlet => 5,
        Medium::HeatOutlet | Medium::HeatInlet | Medium::HeatCooling | Medium::Steam => 6,
        Medium::Gas => 7,
        Medium::ColdWater | Medium::Water => 8,
        Medium::WarmWater | Medium::HotWater => 9,
        _ => return None,
    })
}

fn mapped(medium: &Medium, record: &Record) -> Option<(String, Obis)> {
    let a = medium_group(medium)?;
    let header = split_dif_vif(&record.dif_vif_raw)?;
    // A table entry plus scale corrections only; FD/FB take their first VIFE as the table code.
    let corrections = match header.vif {
        0xFD | 0xFB => header.vifes.get(1..)?,
        v if v & 0x7F == 0x7C || v & 0x7F == 0x7F || v & 0x7F == 0x7E || v & 0x7F == 0x7B || v & 0x7F == 0x7D => {
            return None
        }
        _ => header.vifes.as_slice(),
    };
    if !corrections.iter().all(|&v| is_scale_correction(v)) {
        return None;
    }
    let b = u8::try_from(record.subunit).ok().filter(|&b| b <= 64)?;
    let e = u8::try_from(record.tariff).ok().filter(|&e| e <= 63)?;
    let f = match record.storage {
        0 => 255,
        s @ 1..=99 => u8::try_from(s).ok()?,
        _ => return None,
    };
    let unit = record.unit.as_str();
    let q = record.quantity.as_str();
    let function = match record.function {
        Function::Instantaneous | Function::Actual | Function::Stored => Function::Instantaneous,
        other => other,
    };
    let (base, c, d) = if a == 1 {
        match (q, unit, function) {
            ("Energy", "Wh", Function::Instantaneous) => ("energy", 1, 8),
            ("Power", "W", Function::Instantaneous) => ("power", 1, 7),
            ("Power", "W", Function::Maximum) => ("power", 1, 6),
            ("Power", "W", Function::Minimum) => ("power", 1, 3),
            ("Current", "A", Function::Instantaneous) => ("current", 11, 7),
            ("Voltage", "V", Function::Instantaneous) => ("voltage", 12, 7),
            _ => return None,
        }
    } else {
        let d = match (a, function) {
            (_, Function::Instantaneous) => 0,
            (7, _) => return None,
            (_, Function::Minimum) => 4,
            (_, Function::Maximum) => 5,
            _ => return None,
        };
        let (base, c) = match (a, q, unit) {
            (5 | 6, "Energy", "Wh" | "J") => ("energy", 1),
            (5 | 6, "Volume", "m3") => ("volume", 2),
            (5 | 6, "Mass", "kg") => ("mass", 3),
            (5 | 6, "Power", "W" | "J/h") => ("power", 8),
            (5 | 6, "Volume flow", "m3/h") => ("volume_flow", 9),
            (5 | 6, "Flow temperature", "degC") => ("flow_temperature", 10),
            (5 | 6, "Return temperature", "degC") => ("return_temperature", 11),
            (5 | 6, "Temperature difference", "K") => ("temperature_difference", 12),
            (8 | 9, "Volume", "m3") => ("volume", 1),
            (8 | 9, "Volume flow", "m3/h") => ("volume_flow", 2),
            (8 | 9, "Flow temperature", "degC") => ("flow_temperature", 3),
            (7, "Volume", "m3") => ("volume", 3),
            _ => return None,
        };
        (base, c, d)
    };
    let mut name = base.to_string();
    match record.function {
        Function::Maximum => name.push_str("_max"),
        Function::Minimum => name.push_str("_min"),
        _ => {}
    }
    if record.storage > 0 {
        name.push_str(&format!("_s{}", record.storage));
    }
    if record.tariff > 0 {
        name.push_str(&format!("_t{}", record.tariff));
    }
    if record.subunit > 0 {
        name.push_str(&format!("_u{}", record.subunit));
    }
    Some((name, Obis([a, b, c, d, e, f])))
}

/// FNV-1a, 32 bits.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811C_9DC5u32, |h, &b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

fn fallback_name(record: &Record) -> String {
    let hex: String = record.dif_vif_raw.iter().map(|b| format!("{b:02x}")).collect();
    if hex.len() <= 59 {
        format!("mbus_{hex}")
    } else {
        // Names stay within 64 characters: a prefix of the bytes plus their hash.
        format!("mbus_{}_{:08x}", hex.get(..40).unwrap_or(""), fnv1a(&record.dif_vif_raw))
    }
}

fn fallback_obis(record: &Record) -> Obis {
    let h = fnv1a(&record.dif_vif_raw);
    let folded = (h ^ (h >> 15)) & 0x7FFF;
    let [_, _, hi, lo] = folded.to_be_bytes();
    let b = u8::try_from(record.subunit).unwrap_or(255);
    let f = match record.storage {
        0 => 255,
        s => u8::try_from(s).ok().filter(|&s| s < 254).unwrap_or(254),
    };
    Obis([0, b, 96, 0x80 | hi, lo, f])
}

#[cfg(test)]
mod tests;

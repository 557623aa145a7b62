//! Incotex Mercury 230 / 231 / 234 / 236 device profiles: which energy arrays, instantaneous values and
//! identity parameters of a meter ami reads, its stored power profile, and the channel defaults (access
//! level, timing multiplier, profile memory size) of a factory-new meter.
//!
//! This module owns the Mercury part of the profile format and its validation; the client that reads the
//! meter is `ami_protocols::mercury` (Incotex, "Описание системы команд приборов учета электроэнергии
//! Меркурий 203.2TD, 204, 208, 230, 231, 234, 236, 238", 05.2023). A profile never holds a password: an
//! attribute asking for one is an error pointing at the site config (the six-byte channel password of
//! each meter comes from `amid.toml` or its secrets file). Parsing never panics on any input (the
//! `profile_xml` fuzz harness runs this parser too); every mistake is a `file:line:col`
//! [`ProfileError`].
//!
//! # The format
//!
//! ```xml
//! <profile id="mercury-230" protocol="mercury" manufacturer="Incotex" model="Mercury 230 ART"
//!          document="Incotex command description 05.2023">
//!   <line baud="9600" parity="none" data="8" stop="1" timeout="150ms"/>
//!   <mercury level="1" multiplier="1" profile-records="4096"/>
//!   <value name="energy_import_total" obis="1-0:1.8.0" unit="Wh">
//!     <mercury energy="from-reset" tariff="0" quantity="A+"/>
//!   </value>
//!   <value name="voltage_l1" obis="1-0:32.7.0" unit="V"><mercury instant="voltage" phase="1"/></value>
//!   <value name="serial_number" obis="0-0:96.1.0" unit="" kind="static"><mercury parameter="serial"/></value>
//!   <load-profile name="power_profile" obis="1-0:99.1.0" period="1800"/>
//! </profile>
//! ```
//!
//! - `<mercury>` directly in `<profile>` (optional, [`MercuryOptions`]): `level` (access level the channel
//!   is opened at, `1` user or `2` admin; default 1 — reading needs level 1 only), `multiplier` (the
//!   meter's programmable timing multiplier n, 1–255, default 1: silence and reply wait scale with it),
//!   `profile-records` (records in the power-profile ring, 1–4096, default 4096: the Mercury 230's 64 KiB
//!   of 16-byte records). The password is never here.
//! - A `<value>`'s source `<mercury>` ([`MercurySource`]) holds exactly one of:
//!   - `energy` — an energy array of command `05`: `from-reset`, `current-year`, `previous-year`,
//!     `month` (with `month="1".."12"`), `today`, `yesterday`, each with `quantity` (`A+`, `A-`, `R+`,
//!     `R-`; required) and `tariff` (`0` = sum of tariffs, default, or `1`–`4`); or `phases` (A+ per
//!     phase from reset, with `phase="1".."3"`, `tariff` as above, `quantity` absent or `A+`). Active
//!     energy is in `Wh`, reactive in `varh` (the meter counts in Wh/varh: no scale).
//!   - `instant` — an instantaneous value of `08 11`: `voltage`, `current`, `angle` (between phase
//!     voltages), `thd`, `line-voltage` with `phase="1".."3"` (required); `power-active`,
//!     `power-reactive`, `power-apparent`, `power-factor` with `phase="0".."3"` (0 = sum, the default);
//!     `frequency` and `temperature` without `phase`. Active and reactive power are signed (the direction
//!     bits of the reply are honoured: export and capacitive are negative).
//!   - `parameter="serial"` — the serial number (`08 00`) as text; `parameter="manufacture-date"` — the
//!     manufacture date as `YYYY-MM-DD` text. Both are `static`.
//!
//!   The value's `unit` must be the one the quantity comes in ([`MercurySource::unit`]): `Wh`, `varh`,
//!   `V`, `A`, `W`, `var`, `VA`, `""` (cos φ), `Hz`, `deg`, `%`, `degC`; a different one is an error.
//! - `<load-profile name="…" obis="1-0:99.1.0" period="1800">` ([`MercuryLoadProfileDef`]): the meter's
//!   stored power profile (memory 3), one record per integration period (`period` in seconds, a whole
//!   number of minutes, 60–15300; the meter's own period, usually 1800 or 3600, is in every record and
//!   wins when they differ). At most one. Its optional `<column quantity="A+" name="…"/>` children pick
//!   which of the record's four energies (A+, A−, R+, R−, in Wh / varh per period) are stored; without
//!   any, all four are, named by [`MercuryLoadProfileDef::default_column_name`].
//! - `<line>`: `baud`, `parity`, `data`, `stop`, `timeout` as usual; `address` is the factory network
//!   address (`0` = any meter, point-to-point only; `1`–`240`).
//! - `<control>` is refused: ami does not switch Mercury load relays.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use ami_protocols::mercury::{Bwri, EnergyArray, Level};

use crate::profile::{parse_in_range, valid_name, Ctx};
use crate::xml::{Attr, Element};
use crate::{LineDefaults, Obis, Profile, ProfileError, ResolveError, ValueKind};

/// Channel defaults of a meter model (`<mercury>` in `<profile>`); site config may override each one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MercuryOptions {
    /// Access level the channel is opened at. Default [`Level::User`] (1).
    pub level: Level,
    /// The meter's programmable timing multiplier. Default 1.
    pub multiplier: u8,
    /// Records in the power-profile ring. Default 4096 (the Mercury 230's).
    pub profile_records: u16,
}

impl Default for MercuryOptions {
    fn default() -> Self {
        Self { level: Level::User, multiplier: 1, profile_records: 4096 }
    }
}

/// One of the four energies of a `05` reply or a power-profile record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EnergyQuantity {
    /// `A+`: active import (Wh).
    ActiveImport,
    /// `A-`: active export (Wh).
    ActiveExport,
    /// `R+`: reactive import (varh).
    ReactiveImport,
    /// `R-`: reactive export (varh).
    ReactiveExport,
}

impl EnergyQuantity {
    /// All four, in the order of the meter's replies and records.
    pub const ALL: [EnergyQuantity; 4] = [
        EnergyQuantity::ActiveImport,
        EnergyQuantity::ActiveExport,
        EnergyQuantity::ReactiveImport,
        EnergyQuantity::ReactiveExport,
    ];

    /// The name used in profiles (`A+`).
    pub fn name(self) -> &'static str {
        match self {
            EnergyQuantity::ActiveImport => "A+",
            EnergyQuantity::ActiveExport => "A-",
            EnergyQuantity::ReactiveImport => "R+",
            EnergyQuantity::ReactiveExport => "R-",
        }
    }

    /// Position in a `05` reply and in a power-profile record (0 = A+ … 3 = R−).
    pub fn index(self) -> usize {
        match self {
            EnergyQuantity::ActiveImport => 0,
            EnergyQuantity::ActiveExport => 1,
            EnergyQuantity::ReactiveImport => 2,
            EnergyQuantity::ReactiveExport => 3,
        }
    }

    /// `Wh` for active, `varh` for reactive energy.
    pub fn unit(self) -> &'static str {
        match self {
            EnergyQuantity::ActiveImport | EnergyQuantity::ActiveExport => "Wh",
            EnergyQuantity::ReactiveImport | EnergyQuantity::ReactiveExport => "varh",
        }
    }

    /// The IEC 62056-6-1 code of this energy over one capture period (`1-0:1.29.0` for A+ …).
    pub fn interval_obis(self) -> Obis {
        let c = u8::try_from(self.index() + 1).unwrap_or(1);
        Obis([1, 0, c, 29, 0, 255])
    }
}

/// An identity parameter read with `08 00`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MercuryParameter {
    /// `serial`: the serial number, as text (8 digits).
    Serial,
    /// `manufacture-date`: the manufacture date, as `YYYY-MM-DD` text.
    ManufactureDate,
}

/// Where a Mercury value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MercurySource {
    /// One energy of a 16-byte energy array (`05`, array ≠ per phase).
    Energy {
        /// The array.
        array: EnergyArray,
        /// 0 = sum of tariffs, 1–4.
        tariff: u8,
        /// Which of the four energies.
        quantity: EnergyQuantity,
    },
    /// A+ of one phase from reset (`05 6T`).
    PhaseEnergy {
        /// 0 = sum of tariffs, 1–4.
        tariff: u8,
        /// Phase 1–3.
        phase: u8,
    },
    /// One instantaneous value (`08 11 BWRI`); temperature is `Bwri::TEMPERATURE`.
    Instant(Bwri),
    /// An identity parameter (`08 00`).
    Parameter(MercuryParameter),
}

impl MercurySource {
    /// The unit the value comes in (the value's `unit` must be this one).
    pub fn unit(&self) -> &'static str {
        use ami_protocols::mercury::{PowerKind, Quantity};
        match self {
            MercurySource::Energy { quantity, .. } => quantity.unit(),
            MercurySource::PhaseEnergy { .. } => "Wh",
            MercurySource::Instant(b) => match b.quantity() {
                Quantity::Power(PowerKind::Active) => "W",
                Quantity::Power(PowerKind::Reactive) => "var",
                Quantity::Power(_) => "VA",
                Quantity::Voltage | Quantity::LineVoltage => "V",
                Quantity::Current => "A",
                Quantity::Frequency => "Hz",
                Quantity::Angle => "deg",
                Quantity::Thd => "%",
                Quantity::Temperature => "degC",
                Quantity::PowerFactor | Quantity::Other(_) => "",
            },
            MercurySource::Parameter(_) => "",
        }
    }
}

/// One value a Mercury profile reads.
#[derive(Debug, Clone, PartialEq)]
pub struct MercuryValueDef {
    /// Unique name within the profile.
    pub name: String,
    /// OBIS code (the store key, unique within the profile).
    pub obis: Obis,
    /// Unit symbol ([`MercurySource::unit`] of the source).
    pub unit: String,
    /// Kind of value.
    pub kind: ValueKind,
    /// Optional human description.
    pub description: Option<String>,
    /// What to read.
    pub source: MercurySource,
    /// 1-based line in the profile file.
    pub line: u32,
}

/// One stored column of the power profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MercuryColumnDef {
    /// Which energy of the record.
    pub quantity: EnergyQuantity,
    /// Reading name of the column.
    pub name: String,
}

/// The meter's stored power profile (memory 3), read incrementally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MercuryLoadProfileDef {
    /// Unique name within the profile, e.g. `power_profile`.
    pub name: String,
    /// OBIS code naming the profile (store key of its progress), e.g. `1-0:99.1.0`.
    pub obis: Obis,
    /// Expected integration period in seconds (a whole number of minutes).
    pub period_s: u32,
    /// Stored columns (never empty after parsing: the default is all four energies).
    pub columns: Vec<MercuryColumnDef>,
    /// Optional human description.
    pub description: Option<String>,
}

impl MercuryLoadProfileDef {
    /// The reading name of a column given without `name`: `obis_` and the interval code of the energy
    /// (`A+` → `obis_1_0_1_29_0`), as DLMS load-profile columns are named.
    pub fn default_column_name(quantity: EnergyQuantity) -> String {
        crate::dlms::column_name(quantity.interval_obis())
    }
}

/// A parsed Mercury profile.
#[derive(Debug, Clone, PartialEq)]
pub struct MercuryProfile {
    /// Profile id.
    pub id: String,
    /// File the profile came from, if any.
    pub path: Option<PathBuf>,
    /// Manufacturer name.
    pub manufacturer: String,
    /// Model name.
    pub model: String,
    /// The public document the values and defaults come from.
    pub document: Option<String>,
    /// Default line settings (`address` is the factory network address).
    pub line: LineDefaults,
    /// Channel defaults.
    pub options: MercuryOptions,
    /// Values in file order.
    pub values: Vec<MercuryValueDef>,
    /// The power profile, if the model stores one and the profile reads it.
    pub load_profile: Option<MercuryLoadProfileDef>,
}

impl MercuryProfile {
    /// The value called `name`.
    pub fn value(&self, name: &str) -> Option<&MercuryValueDef> {
        self.values.iter().find(|v| v.name == name)
    }

    /// The Mercury part of a profile found by [`resolve_profile`](crate::resolve_profile) or
    /// [`load_profile`](crate::load_profile): the file is read again from `profile.path`.
    ///
    /// # Errors
    /// [`ResolveError::NotFound`] when the profile has no path (built in memory) and
    /// [`ResolveError::Invalid`] when the file is not (or no longer) a valid Mercury profile.
    pub fn from_profile(profile: &Profile) -> Result<MercuryProfile, ResolveError> {
        let Some(path) = profile.path.as_deref() else {
            return Err(ResolveError::NotFound { id: profile.id.clone(), searched: Vec::new() });
        };
        load_mercury_profile(path).map_err(ResolveError::Invalid)
    }
}

/// Parses and validates a Mercury profile (as [`parse_profile`](crate::parse_profile) does for every
/// protocol). A valid profile of another protocol is an error at its `protocol` attribute.
///
/// # Errors
/// Every problem found, as `file:line:col` errors sorted by position.
pub fn parse_mercury_profile(text: &str, file: &str) -> Result<MercuryProfile, Vec<ProfileError>> {
    crate::profile::parse_mercury(text, file)
}

/// Loads and validates the Mercury profile at `path` (same file handling as
/// [`load_profile`](crate::load_profile)).
///
/// # Errors
/// The file cannot be read, is not UTF-8, or is not a valid Mercury profile.
pub fn load_mercury_profile(path: &Path) -> Result<MercuryProfile, Vec<ProfileError>> {
    let (text, file) = crate::library::read_profile_text(path)?;
    let mut p = parse_mercury_profile(&text, &file)?;
    p.path = Some(path.to_path_buf());
    Ok(p)
}

/// Resolves `--profile ID|PATH` (as [`resolve_profile`](crate::resolve_profile)) to a Mercury profile.
///
/// # Errors
/// As [`resolve_profile`](crate::resolve_profile); a profile of another protocol is
/// [`ResolveError::Invalid`].
pub fn resolve_mercury_profile(id_or_path: &str, search_dirs: &[PathBuf]) -> Result<MercuryProfile, ResolveError> {
    let p = crate::resolve_profile(id_or_path, search_dirs)?;
    MercuryProfile::from_profile(&p)
}

// ---- validation of the Mercury elements (called from `profile.rs`) ----

const OPTION_ATTRS: &[&str] = &["level", "multiplier", "profile-records"];
const VALUE_SOURCE_ATTRS: &[&str] = &["energy", "month", "tariff", "quantity", "phase", "instant", "parameter"];
const LOAD_PROFILE_ATTRS: &[&str] = &["name", "obis", "period", "description"];
const COLUMN_ATTRS: &[&str] = &["quantity", "name"];
const LEVELS: &[(&str, Level)] = &[("1", Level::User), ("2", Level::Admin)];
const QUANTITIES: &[(&str, EnergyQuantity)] = &[
    ("A+", EnergyQuantity::ActiveImport),
    ("A-", EnergyQuantity::ActiveExport),
    ("R+", EnergyQuantity::ReactiveImport),
    ("R-", EnergyQuantity::ReactiveExport),
];
const PARAMETERS: &[(&str, MercuryParameter)] =
    &[("serial", MercuryParameter::Serial), ("manufacture-date", MercuryParameter::ManufactureDate)];

/// The `energy` names: `None` marks `month` (needs `month=`) and `phases`.
#[derive(Clone, Copy)]
enum ArrayName {
    Fixed(EnergyArray),
    Month,
    Phases,
}

const ARRAYS: &[(&str, ArrayName)] = &[
    ("from-reset", ArrayName::Fixed(EnergyArray::FromReset)),
    ("current-year", ArrayName::Fixed(EnergyArray::CurrentYear)),
    ("previous-year", ArrayName::Fixed(EnergyArray::PreviousYear)),
    ("month", ArrayName::Month),
    ("today", ArrayName::Fixed(EnergyArray::Today)),
    ("yesterday", ArrayName::Fixed(EnergyArray::Yesterday)),
    ("phases", ArrayName::Phases),
];

/// Which phases an instantaneous quantity takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phases {
    /// 1–3, required.
    One,
    /// 0 (sum, default) – 3.
    SumOrOne,
    /// No `phase` attribute.
    None,
}

/// `instant` names: BWRI high bits, the phase rule.
const INSTANTS: &[(&str, (u8, Phases))] = &[
    ("voltage", (0x10, Phases::One)),
    ("current", (0x20, Phases::One)),
    ("angle", (0x50, Phases::One)),
    ("thd", (0x60, Phases::One)),
    ("line-voltage", (0x80, Phases::One)),
    ("power-active", (0x00, Phases::SumOrOne)),
    ("power-reactive", (0x04, Phases::SumOrOne)),
    ("power-apparent", (0x08, Phases::SumOrOne)),
    ("power-factor", (0x30, Phases::SumOrOne)),
    ("frequency", (0x40, Phases::None)),
    ("temperature", (0x70, Phases::None)),
];

/// Shortest and longest integration period (1 to 255 minutes), in seconds.
const MIN_PERIOD_S: u64 = 60;
const MAX_PERIOD_S: u64 = 255 * 60;

/// `<mercury>` directly in `<profile>`.
pub(crate) fn options(ctx: &mut Ctx<'_>, el: &Element) -> MercuryOptions {
    ctx.check_attrs(el, OPTION_ATTRS);
    ctx.no_children(el);
    let mut o = MercuryOptions::default();
    if let Some(a) = el.attr("level") {
        match a.value.trim() {
            v if LEVELS.iter().any(|(n, _)| *n == v) => {
                o.level = LEVELS.iter().find(|(n, _)| *n == v).map_or(Level::User, |(_, l)| *l);
            }
            _ => ctx.error(
                a.value_pos,
                format!(
                    "bad access level \"{}\" in attribute \"level\" (expected 1 = user, read only, or 2 = admin)",
                    a.value
                ),
            ),
        }
    }
    if let Some(v) = el.attr("multiplier").and_then(|a| {
        ctx.parse_with(a, "timing multiplier (1..255)", |s| {
            parse_in_range(s, 1, 255).and_then(|v| u8::try_from(v).ok())
        })
    }) {
        o.multiplier = v;
    }
    if let Some(v) = el.attr("profile-records").and_then(|a| {
        ctx.parse_with(a, "power-profile ring size in records (1..4096)", |s| {
            parse_in_range(s, 1, 4096).and_then(|v| u16::try_from(v).ok())
        })
    }) {
        o.profile_records = v;
    }
    o
}

/// `<mercury …>` inside a `<value>`.
pub(crate) fn value_source(ctx: &mut Ctx<'_>, el: &Element) -> Option<MercurySource> {
    ctx.check_attrs(el, VALUE_SOURCE_ATTRS);
    ctx.no_children(el);
    let picks: Vec<&Attr> = ["energy", "instant", "parameter"].iter().filter_map(|n| el.attr(n)).collect();
    match picks.as_slice() {
        [] => {
            ctx.error(
                el.pos,
                "<mercury> in <value> names nothing to read: give one of energy=\"…\", instant=\"…\" or parameter=\"…\"",
            );
            None
        }
        [one] => match one.name.as_str() {
            "energy" => energy_source(ctx, el, one),
            "instant" => instant_source(ctx, el, one),
            _ => parameter_source(ctx, el, one),
        },
        [_, second, ..] => {
            ctx.error(
                second.pos,
                format!(
                    "attribute \"{}\" together with \"{}\": a <mercury> source reads one thing (energy, instant or \
                     parameter)",
                    second.name, picks[0].name
                ),
            );
            None
        }
    }
}

/// Reports each attribute of `names` present on `el` as not applying to `what`.
fn refuse(ctx: &mut Ctx<'_>, el: &Element, names: &[&str], what: &str) -> bool {
    let mut ok = true;
    for n in names {
        if let Some(a) = el.attr(n) {
            ctx.error(a.pos, format!("attribute \"{n}\" does not apply to {what}"));
            ok = false;
        }
    }
    ok
}

fn tariff(ctx: &mut Ctx<'_>, el: &Element) -> Option<u8> {
    match el.attr("tariff") {
        Some(a) => ctx.parse_with(a, "tariff (0 = sum of tariffs, 1..4)", |s| {
            parse_in_range(s, 0, 4).and_then(|v| u8::try_from(v).ok())
        }),
        None => Some(0),
    }
}

fn energy_source(ctx: &mut Ctx<'_>, el: &Element, a: &Attr) -> Option<MercurySource> {
    let ok = refuse(ctx, el, &["instant", "parameter"], "an energy array");
    let array = ctx.choice(a, "energy array", ARRAYS);
    let tariff = tariff(ctx, el);
    match array? {
        ArrayName::Phases => {
            let mut ok = ok & refuse(ctx, el, &["month"], "energy=\"phases\"");
            if let Some(q) = el.attr("quantity") {
                if q.value.trim() != "A+" {
                    ctx.error(
                        q.value_pos,
                        format!("energy=\"phases\" holds A+ per phase only, not quantity \"{}\"", q.value),
                    );
                    ok = false;
                }
            }
            let phase = match el.attr("phase") {
                Some(p) => {
                    ctx.parse_with(p, "phase (1..3)", |s| parse_in_range(s, 1, 3).and_then(|v| u8::try_from(v).ok()))
                }
                None => {
                    ctx.error(el.pos, "energy=\"phases\" needs phase=\"1\", \"2\" or \"3\"");
                    None
                }
            };
            ok.then_some(())?;
            Some(MercurySource::PhaseEnergy { tariff: tariff?, phase: phase? })
        }
        name => {
            let mut ok = ok & refuse(ctx, el, &["phase"], "an energy array other than energy=\"phases\"");
            let array = match name {
                ArrayName::Fixed(array) => {
                    ok &= refuse(ctx, el, &["month"], "an energy array other than energy=\"month\"");
                    Some(array)
                }
                _ => match el.attr("month") {
                    Some(m) => ctx
                        .parse_with(m, "month (1..12)", |s| parse_in_range(s, 1, 12).and_then(|v| u8::try_from(v).ok()))
                        .map(EnergyArray::Month),
                    None => {
                        ctx.error(el.pos, "energy=\"month\" needs month=\"1\"..\"12\"");
                        None
                    }
                },
            };
            let quantity = match el.attr("quantity") {
                Some(q) => ctx.choice(q, "energy quantity", QUANTITIES),
                None => {
                    ctx.error(el.pos, "missing attribute \"quantity\" on <mercury> (A+, A-, R+ or R-)");
                    None
                }
            };
            ok.then_some(())?;
            Some(MercurySource::Energy { array: array?, tariff: tariff?, quantity: quantity? })
        }
    }
}

fn instant_source(ctx: &mut Ctx<'_>, el: &Element, a: &Attr) -> Option<MercurySource> {
    let ok = refuse(ctx, el, &["month", "tariff", "quantity"], "an instantaneous value");
    let (base, rule) = ctx.choice(a, "instantaneous quantity", INSTANTS)?;
    let phase = match (rule, el.attr("phase")) {
        (Phases::None, Some(p)) => {
            ctx.error(p.pos, format!("attribute \"phase\" does not apply to instant=\"{}\"", a.value));
            None
        }
        (Phases::None, None) => Some(0),
        (Phases::One, None) => {
            ctx.error(el.pos, format!("instant=\"{}\" needs phase=\"1\", \"2\" or \"3\"", a.value));
            None
        }
        (Phases::One, Some(p)) => {
            ctx.parse_with(p, "phase (1..3)", |s| parse_in_range(s, 1, 3).and_then(|v| u8::try_from(v).ok()))
        }
        (Phases::SumOrOne, None) => Some(0),
        (Phases::SumOrOne, Some(p)) => {
            ctx.parse_with(p, "phase (0 = sum, 1..3)", |s| parse_in_range(s, 0, 3).and_then(|v| u8::try_from(v).ok()))
        }
    };
    ok.then_some(())?;
    Some(MercurySource::Instant(Bwri(base | phase?)))
}

fn parameter_source(ctx: &mut Ctx<'_>, el: &Element, a: &Attr) -> Option<MercurySource> {
    let ok = refuse(ctx, el, &["month", "tariff", "quantity", "phase"], "a parameter");
    let p = ctx.choice(a, "parameter", PARAMETERS)?;
    ok.then_some(MercurySource::Parameter(p))
}

/// The unit check of a Mercury value: `unit` must be the source's. Reported at the unit attribute.
pub(crate) fn check_unit(ctx: &mut Ctx<'_>, unit_attr: Option<&Attr>, unit: &str, source: &MercurySource) -> bool {
    let expected = source.unit();
    if unit == expected {
        return true;
    }
    let hint = match unit {
        "kWh" | "kvarh" | "kW" | "kvar" | "kVA" => " (the meter reports base units; no scale is applied)",
        _ => "",
    };
    if let Some(a) = unit_attr {
        ctx.error(
            a.value_pos,
            format!("unit \"{unit}\" does not match the Mercury source, which reads in \"{expected}\"{hint}"),
        );
    }
    false
}

/// The default kind of a Mercury value: counters for energy, static for parameters, else instantaneous.
pub(crate) fn default_kind(source: &MercurySource) -> ValueKind {
    match source {
        MercurySource::Energy { .. } | MercurySource::PhaseEnergy { .. } => ValueKind::Counter,
        MercurySource::Parameter(_) => ValueKind::Static,
        MercurySource::Instant(_) => ValueKind::Instantaneous,
    }
}

/// `<load-profile>` of a Mercury profile: the stored power profile. `names` and `obis_seen` are shared
/// with the values.
pub(crate) fn load_profile(
    ctx: &mut Ctx<'_>,
    el: &Element,
    names: &mut std::collections::HashMap<String, usize>,
    obis_seen: &mut std::collections::HashMap<Obis, (String, usize)>,
) -> Option<MercuryLoadProfileDef> {
    ctx.check_attrs(el, LOAD_PROFILE_ATTRS);
    ctx.no_text(el);
    let name = ctx.required(el, "name").and_then(|a| {
        if !valid_name(&a.value) {
            ctx.error(
                a.value_pos,
                format!("bad load profile name \"{}\" (expected [a-z][a-z0-9_]*, at most 64 characters)", a.value),
            );
            return None;
        }
        if let Some(&first) = names.get(&a.value) {
            let first_line = ctx.line_of(first);
            ctx.error(a.value_pos, format!("duplicate name \"{}\" (first defined at line {first_line})", a.value));
            return None;
        }
        names.insert(a.value.clone(), el.pos);
        Some(a.value.clone())
    });
    let lp_obis = ctx.required(el, "obis").and_then(|a| {
        let o = match Obis::from_str(a.value.trim()) {
            Ok(o) => o,
            Err(e) => {
                ctx.error(a.value_pos, e.to_string());
                return None;
            }
        };
        if let Some((other, first)) = obis_seen.get(&o) {
            let first_line = ctx.line_of(*first);
            ctx.error(
                a.value_pos,
                format!("duplicate OBIS code {o} (already used by \"{other}\" at line {first_line})"),
            );
            return None;
        }
        let owner = el.attr("name").map_or_else(String::new, |n| n.value.clone());
        obis_seen.insert(o, (owner, el.pos));
        Some(o)
    });
    let period = ctx.required(el, "period").and_then(|a| {
        let v = ctx.parse_with(a, "integration period in seconds", crate::profile::parse_uint)?;
        if !(MIN_PERIOD_S..=MAX_PERIOD_S).contains(&v) || v % 60 != 0 {
            ctx.error(
                a.value_pos,
                format!(
                    "period {v}: a Mercury power profile integrates over whole minutes, 1 to 255 \
                     (period=\"60\" to \"{MAX_PERIOD_S}\" seconds; usually 1800 or 3600)"
                ),
            );
            return None;
        }
        u32::try_from(v).ok()
    });
    let description = el.attr("description").map(|a| a.value.trim().to_string());

    let mut columns = Vec::new();
    let mut ok = true;
    let mut col_names: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut seen: std::collections::HashMap<EnergyQuantity, usize> = std::collections::HashMap::new();
    for child in &el.children {
        if child.name != "column" {
            ctx.error(child.pos, format!("unknown element <{}> in <load-profile> (expected column)", child.name));
            ok = false;
            continue;
        }
        ctx.check_attrs(child, COLUMN_ATTRS);
        ctx.no_children(child);
        let quantity = ctx.required(child, "quantity").and_then(|a| ctx.choice(a, "energy quantity", QUANTITIES));
        if let Some(q) = quantity {
            if let Some(&first) = seen.get(&q) {
                let first_line = ctx.line_of(first);
                ctx.error(child.pos, format!("duplicate column {} (first at line {first_line})", q.name()));
                ok = false;
            } else {
                seen.insert(q, child.pos);
            }
        }
        let col_name = match (child.attr("name"), quantity) {
            (Some(a), _) => column(ctx, a.value_pos, &a.value, child.pos, &mut col_names),
            (None, Some(q)) => {
                column(ctx, child.pos, &MercuryLoadProfileDef::default_column_name(q), child.pos, &mut col_names)
            }
            (None, None) => None,
        };
        match (quantity, col_name) {
            (Some(quantity), Some(name)) => columns.push(MercuryColumnDef { quantity, name }),
            _ => ok = false,
        }
    }
    if el.children.is_empty() {
        columns = EnergyQuantity::ALL
            .iter()
            .map(|&q| MercuryColumnDef { quantity: q, name: MercuryLoadProfileDef::default_column_name(q) })
            .collect();
    }
    if !ok {
        return None;
    }
    Some(MercuryLoadProfileDef { name: name?, obis: lp_obis?, period_s: period?, columns, description })
}

fn column(
    ctx: &mut Ctx<'_>,
    pos: usize,
    name: &str,
    el_pos: usize,
    names: &mut std::collections::HashMap<String, usize>,
) -> Option<String> {
    if !valid_name(name) {
        ctx.error(pos, format!("bad column name \"{name}\" (expected [a-z][a-z0-9_]*, at most 64 characters)"));
        return None;
    }
    if let Some(&first) = names.get(name) {
        let first_line = ctx.line_of(first);
        ctx.error(pos, format!("duplicate column name \"{name}\" (first defined at line {first_line})"));
        return None;
    }
    names.insert(name.to_string(), el_pos);
    Some(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_codes_and_column_names() {
        assert_eq!(EnergyQuantity::ActiveImport.interval_obis().to_string(), "1-0:1.29.0*255");
        assert_eq!(MercuryLoadProfileDef::default_column_name(EnergyQuantity::ReactiveExport), "obis_1_0_4_29_0");
    }

    #[test]
    fn source_units() {
        assert_eq!(MercurySource::Instant(Bwri::active_power(0)).unit(), "W");
        assert_eq!(MercurySource::Instant(Bwri::TEMPERATURE).unit(), "degC");
        assert_eq!(MercurySource::Instant(Bwri::angle(1)).unit(), "deg");
        assert_eq!(
            MercurySource::Energy {
                array: EnergyArray::FromReset,
                tariff: 0,
                quantity: EnergyQuantity::ReactiveExport
            }
            .unit(),
            "varh"
        );
    }
}

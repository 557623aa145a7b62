//! DLMS/COSEM device profiles (IEC 62056): which COSEM objects of a meter ami reads, its load profiles,
//! its disconnect control, and the association defaults (HDLC addressing, authentication level, framing)
//! of a factory-new meter.
//!
//! This module owns the DLMS part of the profile format and its validation; the client that reads the
//! objects is `ami_protocols::dlms`. A profile never holds a key or a password: an attribute asking for
//! one (`password`, `key`, `*-key`, …) is an error pointing at the site config, because profiles are
//! shared and checked in. Parsing never panics on any input (the `profile_xml` fuzz harness runs this
//! parser too); every mistake is a `file:line:col` [`ProfileError`].
//!
//! # The format
//!
//! ```xml
//! <profile id="generic-iec62056" protocol="dlms" manufacturer="any" model="IEC 62056 electricity meter"
//!          document="IEC 62056-6-1 OBIS codes, DLMS UA 1000-1 (Blue Book) interface classes">
//!   <line baud="9600" parity="none" data="8" stop="1" timeout="3s"/>
//!   <dlms client="16" server-logical="1" authentication="none" framing="hdlc"/>
//!   <value name="energy_import" obis="1-0:1.8.0" unit="Wh"><dlms class="3"/></value>
//!   <value name="voltage_l1" obis="1-0:32.7.0" unit="V"><dlms class="3" attribute="2"/></value>
//!   <load-profile name="load_profile_15min" obis="1-0:99.1.0" period="900"/>
//!   <control name="relay" description="supply disconnector"><dlms class="70" obis="0-0:96.3.10"/></control>
//! </profile>
//! ```
//!
//! - `<dlms>` directly in `<profile>` (optional, [`DlmsOptions`]): `client` (client SAP, 1–127, default
//!   16 = public client), `server-logical` (upper HDLC address / server wPort, 1–16381, default 1 =
//!   management logical device), `server-physical` (lower HDLC address, 1–16383, e.g. 16 + the last
//!   digits of the serial number on RS-485; absent = the server address is the logical address alone),
//!   `authentication` (`none`, `low` = LLS password, `high-gmac` = HLS mechanism 5; default `none`),
//!   `ciphering` (`true`/`false`, default `false`: glo-ciphering with security suite 0), `framing`
//!   (`hdlc`, default, or `wrapper` = IEC 62056-47 over TCP), `optical` (`true`: open with the
//!   IEC 62056-21 mode E sign-on at 300 baud, then HDLC at the `<line>` baud), `max-info` (HDLC maximum
//!   information field length proposed in SNRM, 32–2030) and `window` (HDLC window size, 1–7). The
//!   password, the keys and the client system title come from the site config, never from here.
//! - `<value>`: as for every protocol (`name`, `obis` — the COSEM logical name and the store key —,
//!   `kind`, `description`), with an optional `unit`: the meter reports value, scaler and unit (register
//!   attribute 3, read once per association), so `unit` is the unit the meter is expected to report in
//!   base units (`Wh`, not `kWh`: the reading is value × 10^scaler); a different unit from the meter is an
//!   error for that value. `kind` defaults from the unit, or without one from the OBIS code (electricity
//!   `D = 8/9` counters, `0-x:…` identifiers static). Its source `<dlms class="3" attribute="2"/>`: class
//!   1 Data, 3 Register, 4 Extended register, 5 Demand register, 8 Clock or 70 Disconnect control
//!   (a profile generic, class 7, is a `<load-profile>`), attribute default 2 (the value).
//! - `<load-profile name="…" obis="…" period="900">` ([`DlmsLoadProfileDef`]): a profile generic
//!   (class 7; `class="7"` may be written, any other class is an error) captured every `period`
//!   seconds (1 s to 31 days). Its optional `<column obis="…" attribute="2" name="…"/>` children pick
//!   capture objects by logical name (and attribute); without any, every capture object except the
//!   clock is stored, named by [`column_name`].
//! - `<control name="…"><dlms class="70" obis="0-0:96.3.10"/></control>` ([`DlmsControlDef`]): the
//!   disconnect control (at most one): on = method 2 `remote_reconnect`, off = method 1
//!   `remote_disconnect`.
//! - `<line>`: `baud`, `parity`, `data`, `stop`, `timeout` as usual; `address` is refused (the HDLC
//!   addresses are in `<dlms>`).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::profile::{parse_in_range, parse_uint, valid_name, Ctx};
use crate::xml::{Attr, Element};
use crate::{LineDefaults, Obis, Profile, ProfileError, ResolveError, ValueKind};

/// Authentication level of the association (the AARQ's mechanism name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DlmsAuth {
    /// No authentication, mechanism 0 (`authentication="none"`): the public client.
    #[default]
    None,
    /// Low level security, mechanism 1 (`authentication="low"`): a password (from the site config).
    Low,
    /// High level security with GMAC, mechanism 5 (`authentication="high-gmac"`): keys from the site config.
    HighGmac,
}

impl DlmsAuth {
    /// The name used in profiles.
    pub fn name(self) -> &'static str {
        match self {
            DlmsAuth::None => "none",
            DlmsAuth::Low => "low",
            DlmsAuth::HighGmac => "high-gmac",
        }
    }
}

/// How APDUs travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DlmsFraming {
    /// HDLC, IEC 62056-46 (`framing="hdlc"`, the default), over serial, optical probe or TCP.
    #[default]
    Hdlc,
    /// The TCP wrapper, IEC 62056-47 (`framing="wrapper"`).
    Wrapper,
}

impl DlmsFraming {
    /// The name used in profiles.
    pub fn name(self) -> &'static str {
        match self {
            DlmsFraming::Hdlc => "hdlc",
            DlmsFraming::Wrapper => "wrapper",
        }
    }
}

/// Association defaults of a meter model (`<dlms>` in `<profile>`); site config may override each one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DlmsOptions {
    /// Client SAP (HDLC client address / client wPort). Default 16, the public client.
    pub client: u8,
    /// Server logical device: upper HDLC address / server wPort. Default 1, the management logical device.
    pub server_logical: u16,
    /// Lower HDLC address (physical device). Default `None`: the server address is the logical one alone.
    pub server_physical: Option<u16>,
    /// Authentication level. Default [`DlmsAuth::None`].
    pub authentication: DlmsAuth,
    /// Glo-ciphering with security suite 0. Default `false`.
    pub ciphering: bool,
    /// HDLC or the TCP wrapper. Default [`DlmsFraming::Hdlc`].
    pub framing: DlmsFraming,
    /// Open an optical port with the IEC 62056-21 mode E sign-on first. Default `false`.
    pub optical: bool,
    /// HDLC maximum information field length proposed in SNRM (both directions). Default `None`: the
    /// client's default (128, the HDLC default when SNRM carries no parameters).
    pub max_info: Option<u16>,
    /// HDLC receive window proposed in SNRM. Default `None`: the client's default (1).
    pub window: Option<u8>,
}

impl Default for DlmsOptions {
    fn default() -> Self {
        Self {
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
    }
}

/// One value read from a COSEM object attribute.
#[derive(Debug, Clone, PartialEq)]
pub struct DlmsValueDef {
    /// Unique name within the profile.
    pub name: String,
    /// The object's logical name, also the store key (unique within the profile).
    pub obis: Obis,
    /// Interface class: 1, 3, 4, 5, 8 or 70.
    pub class_id: u16,
    /// Attribute index (default 2, the value).
    pub attribute: i8,
    /// Kind of value.
    pub kind: ValueKind,
    /// Expected unit symbol (from [`UNITS`](crate::UNITS), base units): the meter's unit must match.
    pub unit: Option<String>,
    /// Optional human description.
    pub description: Option<String>,
}

/// One stored column of a load profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlmsColumnDef {
    /// Logical name of the capture object.
    pub obis: Obis,
    /// Attribute of the capture object; `None` takes the first capture object with that logical name.
    pub attribute: Option<i8>,
    /// Reading name of the column (default [`column_name`] of the OBIS code).
    pub name: String,
}

/// A load profile: a profile generic (class 7) captured periodically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlmsLoadProfileDef {
    /// Unique name within the profile, e.g. `load_profile_15min`.
    pub name: String,
    /// Logical name of the profile generic, e.g. `1-0:99.1.0*255`.
    pub obis: Obis,
    /// Capture period in seconds (> 0).
    pub period_s: u32,
    /// Columns to store; empty = every capture object except the clock, named by [`column_name`].
    pub columns: Vec<DlmsColumnDef>,
    /// Optional human description.
    pub description: Option<String>,
}

/// The disconnect control (class 70): on = `remote_reconnect` (method 2), off = `remote_disconnect`
/// (method 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlmsControlDef {
    /// Control name, e.g. `relay`.
    pub name: String,
    /// Logical name of the disconnect control object, usually `0-0:96.3.10*255`.
    pub obis: Obis,
    /// Optional description.
    pub description: Option<String>,
}

impl DlmsControlDef {
    /// Class id of the disconnect control.
    pub const CLASS_ID: u16 = 70;
    /// Method 1, `remote_disconnect` (control off).
    pub const METHOD_DISCONNECT: i8 = 1;
    /// Method 2, `remote_reconnect` (control on).
    pub const METHOD_RECONNECT: i8 = 2;
}

/// A parsed DLMS profile.
#[derive(Debug, Clone, PartialEq)]
pub struct DlmsProfile {
    /// Profile id.
    pub id: String,
    /// File the profile came from, if any.
    pub path: Option<PathBuf>,
    /// Manufacturer name.
    pub manufacturer: String,
    /// Model name.
    pub model: String,
    /// The public document the object list and defaults come from.
    pub document: Option<String>,
    /// Default line settings (`address` is always `None`: HDLC addresses are in `options`).
    pub line: LineDefaults,
    /// Association defaults.
    pub options: DlmsOptions,
    /// Values in file order.
    pub values: Vec<DlmsValueDef>,
    /// Load profiles in file order.
    pub load_profiles: Vec<DlmsLoadProfileDef>,
    /// The disconnect control, if the meter has one.
    pub disconnect: Option<DlmsControlDef>,
}

impl DlmsProfile {
    /// The value called `name`.
    pub fn value(&self, name: &str) -> Option<&DlmsValueDef> {
        self.values.iter().find(|v| v.name == name)
    }

    /// The load profile called `name`.
    pub fn load_profile(&self, name: &str) -> Option<&DlmsLoadProfileDef> {
        self.load_profiles.iter().find(|l| l.name == name)
    }

    /// The DLMS part of a profile found by [`resolve_profile`](crate::resolve_profile) or
    /// [`load_profile`](crate::load_profile): the file is read again from `profile.path`.
    ///
    /// # Errors
    /// [`ResolveError::NotFound`] when the profile has no path (built in memory) and
    /// [`ResolveError::Invalid`] when the file is not (or no longer) a valid DLMS profile.
    pub fn from_profile(profile: &Profile) -> Result<DlmsProfile, ResolveError> {
        let Some(path) = profile.path.as_deref() else {
            return Err(ResolveError::NotFound { id: profile.id.clone(), searched: Vec::new() });
        };
        load_dlms_profile(path).map_err(ResolveError::Invalid)
    }
}

/// A capture object of a profile generic as the meter lists it (attribute 3): class, logical name,
/// attribute.
pub type CaptureRef = (u16, Obis, i8);

impl DlmsLoadProfileDef {
    /// Which capture objects (`capture`, in the meter's order) are stored, and under which name: with
    /// explicit columns, the first capture object matching each column's logical name (and attribute, when
    /// given) — the column names that match none are returned second; without columns, every capture object
    /// except the clock (class 8), named by [`column_name`].
    pub fn select_columns(&self, capture: &[CaptureRef]) -> (Vec<(usize, String)>, Vec<String>) {
        if self.columns.is_empty() {
            let found = capture
                .iter()
                .enumerate()
                .filter(|(_, (class, _, _))| *class != 8)
                .map(|(i, (_, obis, _))| (i, column_name(*obis)))
                .collect();
            return (found, Vec::new());
        }
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for col in &self.columns {
            let hit = capture
                .iter()
                .position(|(_, obis, attr)| *obis == col.obis && col.attribute.is_none_or(|a| a == *attr));
            match hit {
                Some(i) => found.push((i, col.name.clone())),
                None => missing.push(col.name.clone()),
            }
        }
        (found, missing)
    }
}

/// The reading name of a load-profile column taken without an explicit name: `obis_` and the value
/// groups, F left out when it is 255 (`1-0:1.8.0*255` → `obis_1_0_1_8_0`).
pub fn column_name(obis: Obis) -> String {
    let [a, b, c, d, e, f] = obis.0;
    if f == 255 {
        format!("obis_{a}_{b}_{c}_{d}_{e}")
    } else {
        format!("obis_{a}_{b}_{c}_{d}_{e}_{f}")
    }
}

/// The name of an interface class (DLMS UA 1000-1), for messages and `amid decode`.
pub fn class_name(class_id: u16) -> Option<&'static str> {
    ami_protocols::dlms::cosem::class_name(class_id)
}

/// Parses and validates a DLMS profile (as [`parse_profile`](crate::parse_profile) does for every
/// protocol). A valid profile of another protocol is an error at its `protocol` attribute.
///
/// # Errors
/// Every problem found, as `file:line:col` errors sorted by position.
pub fn parse_dlms_profile(text: &str, file: &str) -> Result<DlmsProfile, Vec<ProfileError>> {
    crate::profile::parse_dlms(text, file)
}

/// Loads and validates the DLMS profile at `path` (same file handling as
/// [`load_profile`](crate::load_profile)).
///
/// # Errors
/// The file cannot be read, is not UTF-8, or is not a valid DLMS profile.
pub fn load_dlms_profile(path: &Path) -> Result<DlmsProfile, Vec<ProfileError>> {
    let (text, file) = crate::library::read_profile_text(path)?;
    let mut p = parse_dlms_profile(&text, &file)?;
    p.path = Some(path.to_path_buf());
    Ok(p)
}

/// Resolves `--profile ID|PATH` (as [`resolve_profile`](crate::resolve_profile)) to a DLMS profile.
///
/// # Errors
/// As [`resolve_profile`](crate::resolve_profile); a profile of another protocol is
/// [`ResolveError::Invalid`].
pub fn resolve_dlms_profile(id_or_path: &str, search_dirs: &[PathBuf]) -> Result<DlmsProfile, ResolveError> {
    let p = crate::resolve_profile(id_or_path, search_dirs)?;
    DlmsProfile::from_profile(&p)
}

// ---- validation of the DLMS elements (called from `profile.rs`) ----

const OPTION_ATTRS: &[&str] = &[
    "client",
    "server-logical",
    "server-physical",
    "authentication",
    "ciphering",
    "framing",
    "optical",
    "max-info",
    "window",
];
const VALUE_SOURCE_ATTRS: &[&str] = &["class", "attribute"];
const LOAD_PROFILE_ATTRS: &[&str] = &["name", "obis", "period", "class", "description"];
const COLUMN_ATTRS: &[&str] = &["obis", "attribute", "name"];
const CONTROL_ATTRS: &[&str] = &["class", "obis"];
const AUTHS: &[(&str, DlmsAuth)] =
    &[("none", DlmsAuth::None), ("low", DlmsAuth::Low), ("high-gmac", DlmsAuth::HighGmac)];
const FRAMINGS: &[(&str, DlmsFraming)] = &[("hdlc", DlmsFraming::Hdlc), ("wrapper", DlmsFraming::Wrapper)];
const BOOLS: &[(&str, bool)] = &[("true", true), ("false", false)];
/// Longest capture period: a month.
const MAX_PERIOD_S: u64 = 31 * 86_400;

/// The class and attribute of a `<value>`'s `<dlms>` source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DlmsSource {
    pub(crate) class_id: u16,
    pub(crate) attribute: i8,
}

/// The highest attribute index of the classes a value may read (DLMS UA 1000-1).
fn max_attribute(class_id: u16) -> i8 {
    match class_id {
        1 => 2,
        3 => 3,
        4 => 5,
        5 => 9,
        8 => 9,
        70 => 4,
        _ => 127,
    }
}

/// `<dlms>` directly in `<profile>`.
pub(crate) fn options(ctx: &mut Ctx<'_>, el: &Element) -> DlmsOptions {
    ctx.check_attrs(el, OPTION_ATTRS);
    ctx.no_children(el);
    let mut o = DlmsOptions::default();
    let number = |ctx: &mut Ctx<'_>, name: &str, min: u64, max: u64, what: &str| {
        el.attr(name)
            .and_then(|a| ctx.parse_with(a, &format!("{what} ({min}..{max})"), |s| parse_in_range(s, min, max)))
    };
    if let Some(v) = number(ctx, "client", 1, 0x7F, "client SAP").and_then(|v| u8::try_from(v).ok()) {
        o.client = v;
    }
    if let Some(v) =
        number(ctx, "server-logical", 1, 0x3FFD, "server logical address").and_then(|v| u16::try_from(v).ok())
    {
        o.server_logical = v;
    }
    o.server_physical =
        number(ctx, "server-physical", 1, 0x3FFF, "server physical address").and_then(|v| u16::try_from(v).ok());
    if let Some(a) = el.attr("authentication") {
        if let Some(v) = ctx.choice(a, "authentication", AUTHS) {
            o.authentication = v;
        }
    }
    if let Some(a) = el.attr("ciphering") {
        o.ciphering = ctx.choice(a, "ciphering value", BOOLS).unwrap_or(false);
    }
    if let Some(a) = el.attr("framing") {
        if let Some(v) = ctx.choice(a, "framing", FRAMINGS) {
            o.framing = v;
        }
    }
    if let Some(a) = el.attr("optical") {
        o.optical = ctx.choice(a, "optical value", BOOLS).unwrap_or(false);
    }
    o.max_info =
        number(ctx, "max-info", 32, 2030, "HDLC max information field length").and_then(|v| u16::try_from(v).ok());
    o.window = number(ctx, "window", 1, 7, "HDLC window size").and_then(|v| u8::try_from(v).ok());
    if o.framing == DlmsFraming::Wrapper {
        for name in ["server-physical", "optical", "max-info", "window"] {
            if let Some(a) = el.attr(name) {
                ctx.error(a.pos, format!("attribute \"{name}\" applies to HDLC framing only, not framing=\"wrapper\""));
            }
        }
    }
    o
}

/// Parses a signed attribute index: 1..=127, or -128..=-1 for manufacturer-specific attributes.
fn parse_attribute(s: &str) -> Option<i8> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s),
    };
    let v = i64::try_from(parse_uint(digits)?).ok()?;
    let v = if neg { -v } else { v };
    i8::try_from(v).ok().filter(|&a| a != 0)
}

fn attribute(ctx: &mut Ctx<'_>, a: &Attr, class_id: Option<u16>) -> Option<i8> {
    let v = ctx.parse_with(a, "attribute index (1..127, or -128..-1 manufacturer specific)", parse_attribute)?;
    if let Some(class) = class_id {
        let max = max_attribute(class);
        if v > max {
            let name = class_name(class).unwrap_or("?");
            ctx.error(a.value_pos, format!("class {class} ({name}) has attributes 1..{max}, not {v}"));
            return None;
        }
    }
    Some(v)
}

/// An OBIS attribute, reported at its value when bad.
fn obis(ctx: &mut Ctx<'_>, a: &Attr) -> Option<Obis> {
    match Obis::from_str(a.value.trim()) {
        Ok(o) => Some(o),
        Err(e) => {
            ctx.error(a.value_pos, e.to_string());
            None
        }
    }
}

/// `<dlms class attribute>` inside a `<value>`.
pub(crate) fn value_source(ctx: &mut Ctx<'_>, el: &Element) -> Option<DlmsSource> {
    if let Some(a) = el.attr("obis") {
        ctx.error(
            a.pos,
            "attribute \"obis\" does not belong on a value's <dlms>: the value's own obis is the object's logical name",
        );
    }
    let allowed: Vec<&str> = VALUE_SOURCE_ATTRS.iter().copied().chain(el.attr("obis").map(|_| "obis")).collect();
    ctx.check_attrs(el, &allowed);
    ctx.no_children(el);
    let class_id = ctx.required(el, "class").and_then(|a| {
        let class = ctx.parse_with(a, "interface class (1, 3, 4, 5, 8 or 70)", |s| {
            parse_uint(s).and_then(|v| u16::try_from(v).ok())
        })?;
        match class {
            1 | 3 | 4 | 5 | 8 | 70 => Some(class),
            7 => {
                ctx.error(
                    a.value_pos,
                    "class 7 (Profile generic) is not a value: read it with <load-profile name=\"…\" obis=\"…\" period=\"…\"/>",
                );
                None
            }
            other => {
                let name = class_name(other).map_or_else(String::new, |n| format!(" ({n})"));
                ctx.error(
                    a.value_pos,
                    format!(
                        "class {other}{name} is not read as a value (expected 1 Data, 3 Register, 4 Extended register, \
                         5 Demand register, 8 Clock or 70 Disconnect control)"
                    ),
                );
                None
            }
        }
    });
    let attr = match el.attr("attribute") {
        Some(a) => attribute(ctx, a, class_id)?,
        None => 2,
    };
    Some(DlmsSource { class_id: class_id?, attribute: attr })
}

/// `<dlms class="70" obis="…">` inside a `<control>`: the disconnect control object's logical name.
pub(crate) fn control_target(ctx: &mut Ctx<'_>, el: &Element) -> Option<Obis> {
    ctx.check_attrs(el, CONTROL_ATTRS);
    ctx.no_children(el);
    let mut ok = true;
    if let Some(a) = el.attr("class") {
        match parse_uint(a.value.trim()) {
            Some(70) => {}
            _ => {
                ctx.error(
                    a.value_pos,
                    format!(
                        "class \"{}\": a DLMS control is a Disconnect control, class 70 (on = remote_reconnect, \
                         off = remote_disconnect)",
                        a.value
                    ),
                );
                ok = false;
            }
        }
    }
    let target = ctx.required(el, "obis").and_then(|a| obis(ctx, a));
    target.filter(|_| ok)
}

/// `<load-profile>`: a profile generic read as interval data. `names` and `obis_seen` are shared with the
/// values (a load profile's name and logical name are unique among them too).
pub(crate) fn load_profile(
    ctx: &mut Ctx<'_>,
    el: &Element,
    names: &mut std::collections::HashMap<String, usize>,
    obis_seen: &mut std::collections::HashMap<Obis, (String, usize)>,
) -> Option<DlmsLoadProfileDef> {
    ctx.check_attrs(el, LOAD_PROFILE_ATTRS);
    ctx.no_text(el);
    let name = ctx.required(el, "name").and_then(|a| unique_name(ctx, a, el.pos, names, "load profile"));
    let mut class_ok = true;
    if let Some(a) = el.attr("class") {
        if parse_uint(a.value.trim()) != Some(7) {
            ctx.error(
                a.value_pos,
                format!(
                    "class \"{}\": a load profile is a Profile generic, class 7 (read other classes with <value>)",
                    a.value
                ),
            );
            class_ok = false;
        }
    }
    let lp_obis = ctx.required(el, "obis").and_then(|a| {
        let o = obis(ctx, a)?;
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
        let v = ctx.parse_with(a, "capture period in seconds", parse_uint)?;
        if v == 0 {
            ctx.error(
                a.value_pos,
                "period 0: a profile generic with capture period 0 is filled on events, not periodically; \
                 give the capture period in seconds, e.g. period=\"900\" for 15 minutes",
            );
            return None;
        }
        if v > MAX_PERIOD_S {
            ctx.error(a.value_pos, format!("period {v} s is longer than a month ({MAX_PERIOD_S} s)"));
            return None;
        }
        u32::try_from(v).ok()
    });
    let description = el.attr("description").map(|a| a.value.trim().to_string());

    let mut columns = Vec::new();
    let mut ok = true;
    let mut col_names: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut col_keys: std::collections::HashMap<(Obis, Option<i8>), usize> = std::collections::HashMap::new();
    for child in &el.children {
        if child.name != "column" {
            ctx.error(child.pos, format!("unknown element <{}> in <load-profile> (expected column)", child.name));
            ok = false;
            continue;
        }
        ctx.check_attrs(child, COLUMN_ATTRS);
        ctx.no_children(child);
        let col_obis = ctx.required(child, "obis").and_then(|a| obis(ctx, a));
        let attr = match child.attr("attribute") {
            Some(a) => ctx
                .parse_with(a, "attribute index (1..127, or -128..-1 manufacturer specific)", parse_attribute)
                .map(Some),
            None => Some(None),
        };
        let col_name = match (child.attr("name"), col_obis) {
            (Some(a), _) => unique_column(ctx, a.value_pos, &a.value, child.pos, &mut col_names),
            (None, Some(o)) => unique_column(ctx, child.pos, &column_name(o), child.pos, &mut col_names),
            (None, None) => None,
        };
        if let (Some(o), Some(at)) = (col_obis, attr) {
            if let Some(first) = col_keys.get(&(o, at)) {
                let first_line = ctx.line_of(*first);
                ctx.error(child.pos, format!("duplicate column {o} (first at line {first_line})"));
                ok = false;
            } else {
                col_keys.insert((o, at), child.pos);
            }
        }
        match (col_obis, attr, col_name) {
            (Some(obis), Some(attribute), Some(name)) => columns.push(DlmsColumnDef { obis, attribute, name }),
            _ => ok = false,
        }
    }
    if !ok || !class_ok {
        return None;
    }
    Some(DlmsLoadProfileDef { name: name?, obis: lp_obis?, period_s: period?, columns, description })
}

/// Registers a value or load-profile name, reporting a bad or duplicate one.
fn unique_name(
    ctx: &mut Ctx<'_>,
    a: &Attr,
    el_pos: usize,
    names: &mut std::collections::HashMap<String, usize>,
    what: &str,
) -> Option<String> {
    if !valid_name(&a.value) {
        ctx.error(
            a.value_pos,
            format!("bad {what} name \"{}\" (expected [a-z][a-z0-9_]*, at most 64 characters)", a.value),
        );
        return None;
    }
    if let Some(&first) = names.get(&a.value) {
        let first_line = ctx.line_of(first);
        ctx.error(a.value_pos, format!("duplicate name \"{}\" (first defined at line {first_line})", a.value));
        return None;
    }
    names.insert(a.value.clone(), el_pos);
    Some(a.value.clone())
}

fn unique_column(
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

/// For a unit with a decimal prefix (`kWh`), the base unit a DLMS profile should name instead.
pub(crate) fn base_unit_hint(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "kWh" | "MWh" | "GWh" => "Wh",
        "kW" | "MW" => "W",
        "kvar" | "Mvar" => "var",
        "kvarh" | "Mvarh" => "varh",
        "kVA" | "MVA" => "VA",
        "kVAh" | "MVAh" => "VAh",
        "kV" | "mV" => "V",
        "kA" | "mA" => "A",
        _ => return None,
    })
}

/// The kind of a DLMS value without `kind` and `unit`: electricity energies (`A = 1`, `D = 8` or 9) are
/// counters, abstract objects (`A = 0`: identifiers, settings) static, the rest instantaneous.
pub(crate) fn default_kind(obis: Option<Obis>) -> ValueKind {
    match obis.map(|o| o.0) {
        Some([1, _, _, 8 | 9, _, _]) => ValueKind::Counter,
        Some([0, ..]) => ValueKind::Static,
        _ => ValueKind::Instantaneous,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_indices() {
        assert_eq!(parse_attribute("2"), Some(2));
        assert_eq!(parse_attribute("-1"), Some(-1));
        assert_eq!(parse_attribute("-128"), Some(-128));
        for bad in ["0", "128", "-129", "", "-", "+2", "x"] {
            assert_eq!(parse_attribute(bad), None, "{bad}");
        }
    }

    #[test]
    fn derived_column_names_are_valid_names() {
        assert_eq!(column_name("1-0:1.8.0".parse().unwrap()), "obis_1_0_1_8_0");
        assert_eq!(column_name("0-0:96.10.1*3".parse().unwrap()), "obis_0_0_96_10_1_3");
        assert!(crate::profile::valid_name_for_tests(&column_name(Obis([255; 6]))));
    }

    #[test]
    fn default_columns_skip_the_clock() {
        let lp = DlmsLoadProfileDef {
            name: "lp".into(),
            obis: "1-0:99.1.0".parse().unwrap(),
            period_s: 900,
            columns: Vec::new(),
            description: None,
        };
        let capture = [
            (8, "0-0:1.0.0".parse().unwrap(), 2),
            (1, "0-0:96.10.1".parse().unwrap(), 2),
            (3, "1-0:1.8.0".parse().unwrap(), 2),
        ];
        let (found, missing) = lp.select_columns(&capture);
        assert_eq!(found, vec![(1, "obis_0_0_96_10_1".to_string()), (2, "obis_1_0_1_8_0".to_string())]);
        assert!(missing.is_empty());
        let explicit = DlmsLoadProfileDef {
            columns: vec![
                DlmsColumnDef { obis: "1-0:1.8.0".parse().unwrap(), attribute: Some(2), name: "import".into() },
                DlmsColumnDef { obis: "1-0:2.8.0".parse().unwrap(), attribute: None, name: "export".into() },
            ],
            ..lp
        };
        let (found, missing) = explicit.select_columns(&capture);
        assert_eq!(found, vec![(2, "import".to_string())]);
        assert_eq!(missing, vec!["export".to_string()]);
    }

    #[test]
    fn default_kinds() {
        assert_eq!(default_kind(Some("1-0:1.8.0".parse().unwrap())), ValueKind::Counter);
        assert_eq!(default_kind(Some("1-0:32.7.0".parse().unwrap())), ValueKind::Instantaneous);
        assert_eq!(default_kind(Some("0-0:96.1.0".parse().unwrap())), ValueKind::Static);
    }
}

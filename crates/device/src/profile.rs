//! Validation of the XML element tree into a typed [`Profile`], with every error located as
//! `file:line:col`. The format itself is described in the crate documentation.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use ami_protocols::mbus::app::Function;
use ami_protocols::modbus::plan::Table;
use ami_protocols::modbus::value::{ByteOrder, Encoding, ValueType, WordOrder};

use crate::dlms::{self, DlmsControlDef, DlmsLoadProfileDef, DlmsOptions, DlmsProfile, DlmsSource, DlmsValueDef};
use crate::mbus::{split_dif_vif, MbusProfile, MbusSelect, MbusValueDef};
use crate::mercury::{self, MercuryLoadProfileDef, MercuryOptions, MercuryProfile, MercurySource, MercuryValueDef};
use crate::xml::{self, Attr, Element};
use crate::{
    Control, ControlSource, LineDefaults, ModbusControl, ModbusOptions, ModbusValue, Obis, Profile, Protocol, ValueDef,
    ValueKind, ValueSource,
};

/// Unit symbols a value may carry (design map, plus `%` and `K` for ratios and temperature
/// differences); the empty string is a dimensionless value such as a power factor.
pub const UNITS: &[&str] =
    &["Wh", "W", "V", "A", "Hz", "var", "varh", "VA", "VAh", "m3", "m3/h", "degC", "K", "J", "s", "%", "deg", ""];

/// Units whose values are cumulative registers: their `kind` defaults to `counter`.
const COUNTER_UNITS: &[&str] = &["Wh", "varh", "VAh", "m3", "J"];

/// Protocol names reserved for the same profile format; `modbus`, `mbus`, `dlms` and `mercury` are
/// implemented so far.
const FUTURE_PROTOCOLS: &[&str] = &["iec62056-21"];

/// One problem in a profile file, located at the offending element or attribute.
///
/// `Display` is `file:line:col: message` (1-based line and column, column counted in characters),
/// the format editors and CI logs understand. An error about the whole file (it cannot be read) has
/// `line == 0` and displays as `file: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileError {
    /// The file as given by the caller (e.g. `devices/x.xml`).
    pub file: String,
    /// 1-based line, or 0 when the error is about the whole file.
    pub line: u32,
    /// 1-based column in characters, or 0 when the error is about the whole file.
    pub col: u32,
    /// What is wrong, e.g. `unknown type "f33" (expected one of u16, …)`.
    pub message: String,
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}:{}:{}: {}", self.file, self.line, self.col, self.message)
        }
    }
}

impl std::error::Error for ProfileError {}

impl ProfileError {
    /// An error about the whole file (unreadable, not UTF-8 …).
    pub fn whole_file(file: &str, message: impl Into<String>) -> Self {
        Self { file: file.to_string(), line: 0, col: 0, message: message.into() }
    }
}

impl Protocol {
    /// Every implemented protocol, in the order error messages list them.
    pub const ALL: [Protocol; 4] = [Protocol::Modbus, Protocol::Mbus, Protocol::Dlms, Protocol::Mercury];

    /// The name used in profiles (`protocol="modbus"`) and as the source element name.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Modbus => "modbus",
            Protocol::Mbus => "mbus",
            Protocol::Dlms => "dlms",
            Protocol::Mercury => "mercury",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl ValueKind {
    /// The name used in profiles (`kind="counter"`).
    pub fn name(self) -> &'static str {
        match self {
            ValueKind::Instantaneous => "instantaneous",
            ValueKind::Counter => "counter",
            ValueKind::Static => "static",
        }
    }

    /// The default kind for a unit: `counter` for energy, volume and heat, otherwise `instantaneous`.
    pub fn default_for_unit(unit: &str) -> ValueKind {
        if COUNTER_UNITS.contains(&unit) {
            ValueKind::Counter
        } else {
            ValueKind::Instantaneous
        }
    }
}

impl fmt::Display for ValueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Profile {
    /// The value called `name`.
    pub fn value(&self, name: &str) -> Option<&ValueDef> {
        self.values.iter().find(|v| v.name == name)
    }

    /// The control called `name`.
    pub fn control(&self, name: &str) -> Option<&Control> {
        self.controls.iter().find(|c| c.name == name)
    }
}

/// Maps byte offsets to 1-based `line:col` (column in characters).
struct Lines<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.bytes().enumerate().filter(|&(_, b)| b == b'\n').map(|(i, _)| i + 1));
        Self { text, starts }
    }

    fn locate(&self, pos: usize) -> (u32, u32) {
        let pos = pos.min(self.text.len());
        let line = self.starts.partition_point(|&s| s <= pos).max(1);
        let start = self.starts.get(line.saturating_sub(1)).copied().unwrap_or(0);
        // `start <= pos` by the partition above; `get` refuses an offset inside a UTF-8 sequence.
        let col = self.text.get(start..pos).map_or(pos.saturating_sub(start), |s| s.chars().count()) + 1;
        (u32::try_from(line).unwrap_or(u32::MAX), u32::try_from(col).unwrap_or(u32::MAX))
    }
}

/// Collects errors while walking the tree.
pub(crate) struct Ctx<'a> {
    file: &'a str,
    lines: Lines<'a>,
    errors: Vec<ProfileError>,
}

/// Whether an attribute name asks for a secret (a password or a key), which a profile never holds.
fn names_a_secret(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["password", "passwd", "secret", "key", "pin"].iter().any(|w| n.split(['-', '_']).any(|part| part == *w))
        || n.ends_with("key")
        || n.contains("password")
}

impl Ctx<'_> {
    pub(crate) fn error(&mut self, pos: usize, message: impl Into<String>) {
        let (line, col) = self.lines.locate(pos);
        self.errors.push(ProfileError { file: self.file.to_string(), line, col, message: message.into() });
    }

    pub(crate) fn line_of(&self, pos: usize) -> u32 {
        self.lines.locate(pos).0
    }

    /// Reports attributes of `el` not in `allowed`; a password or key attribute gets its own message
    /// (profiles are shared and checked in: secrets live in the site config or the secrets file).
    pub(crate) fn check_attrs(&mut self, el: &Element, allowed: &[&str]) {
        for a in &el.attrs {
            if !allowed.contains(&a.name.as_str()) && names_a_secret(&a.name) {
                self.error(
                    a.pos,
                    format!(
                        "attribute \"{}\" on <{}>: keys and passwords never go in a profile (profiles are shared); \
                         give them per meter in the site config (amid.toml) or its secrets file",
                        a.name, el.name
                    ),
                );
            } else if !allowed.contains(&a.name.as_str()) {
                self.error(
                    a.pos,
                    format!(
                        "unknown attribute \"{}\" on <{}> (expected one of {})",
                        a.name,
                        el.name,
                        allowed.join(", ")
                    ),
                );
            }
        }
    }

    /// The attribute `name`, or an error at the element when it is missing.
    pub(crate) fn required<'e>(&mut self, el: &'e Element, name: &str) -> Option<&'e Attr> {
        let found = el.attr(name);
        if found.is_none() {
            self.error(el.pos, format!("missing attribute \"{name}\" on <{}>", el.name));
        }
        found
    }

    /// Reports text inside an element that only holds other elements.
    pub(crate) fn no_text(&mut self, el: &Element) {
        for (pos, _) in &el.text {
            self.error(
                *pos,
                format!("unexpected text inside <{}> (profiles use attributes and elements only)", el.name),
            );
        }
    }

    /// Reports every child of `el` (used for elements that must be empty).
    pub(crate) fn no_children(&mut self, el: &Element) {
        self.no_text(el);
        for c in &el.children {
            self.error(c.pos, format!("unexpected element <{}> inside <{}> (it takes no children)", c.name, el.name));
        }
    }

    pub(crate) fn parse_with<T>(&mut self, a: &Attr, what: &str, f: impl FnOnce(&str) -> Option<T>) -> Option<T> {
        let v = f(a.value.trim());
        if v.is_none() {
            self.error(a.value_pos, format!("bad {what} \"{}\" in attribute \"{}\"", a.value, a.name));
        }
        v
    }

    /// Parses an enumerated attribute value, reporting the allowed names.
    pub(crate) fn choice<T: Copy>(&mut self, a: &Attr, what: &str, options: &[(&str, T)]) -> Option<T> {
        let found = options.iter().find(|(n, _)| *n == a.value).map(|(_, v)| *v);
        if found.is_none() {
            let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
            self.error(a.value_pos, format!("unknown {what} \"{}\" (expected one of {})", a.value, names.join(", ")));
        }
        found
    }
}

/// Parses a non-negative integer written in decimal or `0x` hexadecimal.
pub(crate) fn parse_uint(s: &str) -> Option<u64> {
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(hex, 16).ok()
    } else {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    }
}

pub(crate) fn parse_in_range(s: &str, min: u64, max: u64) -> Option<u64> {
    parse_uint(s).filter(|v| (min..=max).contains(v))
}

/// Parses a finite decimal number (`1000`, `0.1`, `-3e2`).
fn parse_f64(s: &str) -> Option<f64> {
    let ok_chars = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b));
    if !ok_chars {
        return None;
    }
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Parses a duration `250ms`, `2s` or `1.5s` into milliseconds.
fn parse_duration_ms(s: &str) -> Option<u64> {
    if let Some(ms) = s.strip_suffix("ms") {
        return parse_uint(ms).filter(|_| !ms.starts_with("0x"));
    }
    let secs = s.strip_suffix('s')?;
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let v = secs.parse::<f64>().ok()?;
    let ms = (v * 1000.0).round();
    // Bounded to one day, so the cast below is exact.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let whole = ms as u64;
    (0.0..=86_400_000.0).contains(&ms).then_some(whole)
}

/// Names: `[a-z][a-z0-9_]*`, at most 64 characters.
pub(crate) fn valid_name(s: &str) -> bool {
    let mut b = s.bytes();
    s.len() <= 64
        && b.next().is_some_and(|c| c.is_ascii_lowercase())
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
}

/// [`valid_name`] for the tests of other modules.
#[cfg(test)]
pub(crate) fn valid_name_for_tests(s: &str) -> bool {
    valid_name(s)
}

/// Profile ids: `[a-z0-9][a-z0-9._-]*`, at most 64 characters.
pub(crate) fn valid_id(s: &str) -> bool {
    let mut b = s.bytes();
    s.len() <= 64
        && b.next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(&c))
}

const PROFILE_ATTRS: &[&str] = &["id", "protocol", "manufacturer", "model", "document"];
const PROFILE_CHILDREN: &[&str] = &["line", "modbus", "mbus", "value", "control"];
/// The children of a DLMS `<profile>`.
const DLMS_PROFILE_CHILDREN: &[&str] = &["line", "dlms", "value", "load-profile", "control"];
/// The children of a Mercury `<profile>`.
const MERCURY_PROFILE_CHILDREN: &[&str] = &["line", "mercury", "value", "load-profile"];
const LINE_ATTRS: &[&str] = &["baud", "parity", "data", "stop", "address", "timeout"];
const MODBUS_OPTION_ATTRS: &[&str] = &["max-block", "max-gap", "word-order", "byte-order"];
const VALUE_ATTRS: &[&str] = &["name", "obis", "unit", "kind", "description"];
const MODBUS_VALUE_ATTRS: &[&str] = &["table", "register", "type", "word-order", "byte-order", "scale", "offset"];
const CONTROL_ATTRS: &[&str] = &["name", "description"];
const MODBUS_CONTROL_ATTRS: &[&str] = &["coil", "register", "on", "off"];
const MBUS_OPTION_ATTRS: &[&str] = &["all-records"];
const MBUS_VALUE_ATTRS: &[&str] =
    &["dif-vif", "quantity", "function", "storage", "tariff", "subunit", "description", "scale"];
/// Longest `dif-vif` selector: DIF, 10 DIFEs, VIF, a plain-text VIF of up to 32 characters, 10 VIFEs.
const MAX_DIF_VIF: usize = 1 + 10 + 1 + 1 + 32 + 10;
const FUNCTIONS: &[(&str, Function)] = &[
    ("instantaneous", Function::Instantaneous),
    ("maximum", Function::Maximum),
    ("minimum", Function::Minimum),
    ("error", Function::ValueDuringErrorState),
    ("actual", Function::Actual),
    ("stored", Function::Stored),
];

const TABLES: &[(&str, Table)] =
    &[("coil", Table::Coil), ("discrete", Table::Discrete), ("holding", Table::Holding), ("input", Table::Input)];
const WORD_ORDERS: &[(&str, WordOrder)] = &[("high-first", WordOrder::HighFirst), ("low-first", WordOrder::LowFirst)];
const BYTE_ORDERS: &[(&str, ByteOrder)] = &[("big", ByteOrder::Big), ("little", ByteOrder::Little)];
const KINDS: &[(&str, ValueKind)] =
    &[("instantaneous", ValueKind::Instantaneous), ("counter", ValueKind::Counter), ("static", ValueKind::Static)];

/// Profile-wide Modbus settings: options plus decoding defaults for values.
#[derive(Clone, Copy, Default)]
struct ModbusDefaults {
    options: ModbusOptions,
    word_order: WordOrder,
    byte_order: ByteOrder,
}

/// Parses and validates one profile. `file` is used in error messages (and, when the profile has no
/// `id` attribute, its stem becomes the id). Every error found is returned, sorted by position.
pub fn parse_profile(text: &str, file: &str) -> Result<Profile, Vec<ProfileError>> {
    parse_any(text, file).map(|(p, _)| p)
}

/// The error of a valid profile of another protocol asked for as `wanted` (`"an M-Bus"`), at the root
/// element's `protocol` attribute.
fn wrong_protocol(text: &str, file: &str, profile: &Profile, wanted: Protocol, what: &str) -> Vec<ProfileError> {
    let mut ctx = Ctx { file, lines: Lines::new(text), errors: Vec::new() };
    // Point at the protocol attribute of the (valid, hence well-formed) root element.
    let pos =
        xml::parse(text).ok().and_then(|d| d.root).and_then(|r| r.attr("protocol").map(|a| a.value_pos)).unwrap_or(0);
    ctx.error(pos, format!("protocol \"{}\" is not {wanted}: not {what} profile", profile.protocol));
    ctx.errors
}

/// [`crate::mbus::parse_mbus_profile`]: the profile plus its M-Bus part.
pub(crate) fn parse_mbus(text: &str, file: &str) -> Result<MbusProfile, Vec<ProfileError>> {
    let (profile, part) = parse_any(text, file)?;
    match part {
        Part::Mbus(m) => Ok(MbusProfile { profile, values: m.values, all_records: m.all_records }),
        _ => Err(wrong_protocol(text, file, &profile, Protocol::Mbus, "an M-Bus")),
    }
}

/// [`crate::dlms::parse_dlms_profile`]: the profile's common part and its DLMS part, together.
pub(crate) fn parse_dlms(text: &str, file: &str) -> Result<DlmsProfile, Vec<ProfileError>> {
    let (profile, part) = parse_any(text, file)?;
    match part {
        Part::Dlms(d) => Ok(DlmsProfile {
            id: profile.id,
            path: profile.path,
            manufacturer: profile.manufacturer,
            model: profile.model,
            document: profile.document,
            line: profile.line,
            options: d.options,
            values: d.values,
            load_profiles: d.load_profiles,
            disconnect: d.disconnect,
        }),
        _ => Err(wrong_protocol(text, file, &profile, Protocol::Dlms, "a DLMS")),
    }
}

/// [`crate::mercury::parse_mercury_profile`]: the profile's common part and its Mercury part, together.
pub(crate) fn parse_mercury(text: &str, file: &str) -> Result<MercuryProfile, Vec<ProfileError>> {
    let (profile, part) = parse_any(text, file)?;
    match part {
        Part::Mercury(m) => Ok(MercuryProfile {
            id: profile.id,
            path: profile.path,
            manufacturer: profile.manufacturer,
            model: profile.model,
            document: profile.document,
            line: profile.line,
            options: m.options,
            values: m.values,
            load_profile: m.load_profile,
        }),
        _ => Err(wrong_protocol(text, file, &profile, Protocol::Mercury, "a Mercury")),
    }
}

/// The Mercury part of a profile.
struct MercuryPart {
    options: MercuryOptions,
    values: Vec<MercuryValueDef>,
    load_profile: Option<MercuryLoadProfileDef>,
}

/// The M-Bus part of a profile.
struct MbusPart {
    values: Vec<MbusValueDef>,
    all_records: bool,
}

/// The DLMS part of a profile.
struct DlmsPart {
    options: DlmsOptions,
    values: Vec<DlmsValueDef>,
    load_profiles: Vec<DlmsLoadProfileDef>,
    disconnect: Option<DlmsControlDef>,
}

/// The protocol-specific part that does not fit [`Profile`].
enum Part {
    /// Modbus: everything is in [`Profile`].
    None,
    Mbus(MbusPart),
    Dlms(DlmsPart),
    Mercury(MercuryPart),
}

/// What one `<value>` parsed into.
enum ParsedValue {
    Modbus(ValueDef),
    Mbus(MbusValueDef),
    Dlms(DlmsValueDef),
    Mercury(MercuryValueDef),
}

/// The source element of a `<value>`.
enum ParsedSource {
    Modbus(ModbusValue),
    Mbus(MbusSelect),
    Dlms(DlmsSource),
    Mercury(MercurySource),
}

/// What one `<control>` parsed into.
enum ParsedControl {
    Common(Control),
    Dlms(DlmsControlDef),
}

fn parse_any(text: &str, file: &str) -> Result<(Profile, Part), Vec<ProfileError>> {
    let mut ctx = Ctx { file, lines: Lines::new(text), errors: Vec::new() };
    let doc = match xml::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            ctx.error(e.pos, e.message);
            return Err(ctx.errors);
        }
    };
    for (pos, name) in &doc.extra_roots {
        ctx.error(*pos, format!("second root element <{name}> (a profile file holds one <profile>)"));
    }
    for pos in &doc.stray_text {
        ctx.error(*pos, "unexpected text outside <profile>");
    }
    let Some(root) = doc.root else {
        ctx.error(text.len(), "empty profile: no <profile> element");
        return Err(ctx.errors);
    };
    let profile = if root.name == "profile" {
        profile(&mut ctx, &root)
    } else {
        ctx.error(root.pos, format!("root element is <{}>, expected <profile>", root.name));
        None
    };
    match profile {
        Some(p) if ctx.errors.is_empty() => Ok(p),
        _ => {
            let mut errors = ctx.errors;
            errors.sort_by_key(|e| (e.line, e.col));
            Err(errors)
        }
    }
}

fn profile(ctx: &mut Ctx<'_>, el: &Element) -> Option<(Profile, Part)> {
    ctx.check_attrs(el, PROFILE_ATTRS);
    ctx.no_text(el);

    let id = match el.attr("id") {
        Some(a) => {
            let ok = valid_id(&a.value);
            if !ok {
                ctx.error(
                    a.value_pos,
                    format!("bad profile id \"{}\" (use lowercase letters, digits, '.', '-', '_')", a.value),
                );
            }
            ok.then(|| a.value.clone())
        }
        None => {
            let stem = Path::new(ctx.file).file_stem().and_then(|s| s.to_str()).unwrap_or("").to_string();
            let ok = valid_id(&stem);
            if !ok {
                ctx.error(
                    el.pos,
                    format!("<profile> has no \"id\" attribute and the file name \"{stem}\" is not a valid id"),
                );
            }
            ok.then_some(stem)
        }
    };

    let protocol = ctx.required(el, "protocol").and_then(|a| {
        let found = Protocol::ALL.into_iter().find(|p| p.name() == a.value);
        if found.is_none() {
            let expected: Vec<&str> = Protocol::ALL.iter().map(|p| p.name()).collect();
            let msg = if FUTURE_PROTOCOLS.contains(&a.value.as_str()) {
                format!("protocol \"{}\" is not supported yet (supported: {})", a.value, expected.join(", "))
            } else {
                format!("unknown protocol \"{}\" (expected one of {})", a.value, expected.join(", "))
            };
            ctx.error(a.value_pos, msg);
        }
        found
    });
    let text_attr = |ctx: &mut Ctx<'_>, name: &str| {
        let a = ctx.required(el, name)?;
        if a.value.trim().is_empty() {
            ctx.error(a.value_pos, format!("attribute \"{name}\" on <profile> is empty"));
            return None;
        }
        Some(a.value.trim().to_string())
    };
    let manufacturer = text_attr(ctx, "manufacturer");
    let model = text_attr(ctx, "model");
    let document = el.attr("document").map(|a| a.value.trim().to_string());

    // Profile-wide elements first, so values can use the Modbus defaults wherever they appear.
    let mut line = LineDefaults::default();
    let mut modbus = ModbusDefaults::default();
    let mut all_records = false;
    let mut dlms_options = DlmsOptions::default();
    let (mut seen_line, mut seen_modbus, mut seen_mbus) = (None::<usize>, None::<usize>, None::<usize>);
    let mut seen_dlms = None::<usize>;
    let mut mercury_options = MercuryOptions::default();
    let mut seen_mercury = None::<usize>;
    for child in &el.children {
        match child.name.as_str() {
            "line" => {
                if let Some(first) = seen_line {
                    let first_line = ctx.line_of(first);
                    ctx.error(child.pos, format!("duplicate <line> element (first one at line {first_line})"));
                } else {
                    seen_line = Some(child.pos);
                    line = line_defaults(ctx, child, protocol);
                }
            }
            "modbus" => {
                if let Some(first) = seen_modbus {
                    let first_line = ctx.line_of(first);
                    ctx.error(child.pos, format!("duplicate <modbus> element (first one at line {first_line})"));
                } else {
                    seen_modbus = Some(child.pos);
                    if protocol.is_some_and(|p| p != Protocol::Modbus) {
                        ctx.error(child.pos, "<modbus> options in a profile whose protocol is not modbus");
                    }
                    modbus = modbus_defaults(ctx, child);
                }
            }
            "mbus" => {
                if let Some(first) = seen_mbus {
                    let first_line = ctx.line_of(first);
                    ctx.error(child.pos, format!("duplicate <mbus> element (first one at line {first_line})"));
                } else {
                    seen_mbus = Some(child.pos);
                    if protocol.is_some_and(|p| p != Protocol::Mbus) {
                        ctx.error(child.pos, "<mbus> options in a profile whose protocol is not mbus");
                    }
                    all_records = mbus_options(ctx, child);
                }
            }
            "dlms" => {
                if let Some(first) = seen_dlms {
                    let first_line = ctx.line_of(first);
                    ctx.error(child.pos, format!("duplicate <dlms> element (first one at line {first_line})"));
                } else {
                    seen_dlms = Some(child.pos);
                    if protocol.is_some_and(|p| p != Protocol::Dlms) {
                        ctx.error(child.pos, "<dlms> options in a profile whose protocol is not dlms");
                    }
                    dlms_options = dlms::options(ctx, child);
                }
            }
            "mercury" => {
                if let Some(first) = seen_mercury {
                    let first_line = ctx.line_of(first);
                    ctx.error(child.pos, format!("duplicate <mercury> element (first one at line {first_line})"));
                } else {
                    seen_mercury = Some(child.pos);
                    if protocol.is_some_and(|p| p != Protocol::Mercury) {
                        ctx.error(child.pos, "<mercury> options in a profile whose protocol is not mercury");
                    }
                    mercury_options = mercury::options(ctx, child);
                }
            }
            "value" | "control" | "load-profile" => {}
            other => {
                let children = match protocol {
                    Some(Protocol::Dlms) => DLMS_PROFILE_CHILDREN,
                    Some(Protocol::Mercury) => MERCURY_PROFILE_CHILDREN,
                    _ => PROFILE_CHILDREN,
                };
                let msg = if FUTURE_PROTOCOLS.contains(&other) {
                    format!("<{other}> options are not supported yet (expected one of {})", children.join(", "))
                } else {
                    format!("unknown element <{other}> in <profile> (expected one of {})", children.join(", "))
                };
                ctx.error(child.pos, msg);
            }
        }
    }

    let mut values = Vec::new();
    let mut mbus_values = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut obis_seen: HashMap<Obis, (String, usize)> = HashMap::new();
    let mut controls = Vec::new();
    let mut control_names: HashMap<String, usize> = HashMap::new();
    let mut dlms_values = Vec::new();
    let mut load_profiles = Vec::new();
    let mut disconnect: Option<(DlmsControlDef, usize)> = None;
    let mut mercury_values = Vec::new();
    let mut power_profile: Option<(MercuryLoadProfileDef, usize)> = None;
    for child in &el.children {
        match child.name.as_str() {
            "value" => match value(ctx, child, protocol, &modbus, &mut names, &mut obis_seen) {
                Some(ParsedValue::Modbus(v)) => values.push(v),
                Some(ParsedValue::Mbus(v)) => mbus_values.push(v),
                Some(ParsedValue::Dlms(v)) => dlms_values.push(v),
                Some(ParsedValue::Mercury(v)) => mercury_values.push(v),
                None => {}
            },
            "load-profile" if protocol == Some(Protocol::Mercury) => {
                if let Some(lp) = mercury::load_profile(ctx, child, &mut names, &mut obis_seen) {
                    if let Some((first, pos)) = &power_profile {
                        let first_line = ctx.line_of(*pos);
                        ctx.error(
                            child.pos,
                            format!(
                                "second <load-profile> \"{}\": a Mercury meter stores one power profile (\"{}\" at \
                                 line {first_line})",
                                lp.name, first.name
                            ),
                        );
                    } else {
                        power_profile = Some((lp, child.pos));
                    }
                }
            }
            "load-profile" => {
                if protocol.is_some_and(|p| p != Protocol::Dlms) {
                    ctx.error(child.pos, "<load-profile> in a profile whose protocol is not dlms");
                    continue;
                }
                if let Some(lp) = dlms::load_profile(ctx, child, &mut names, &mut obis_seen) {
                    load_profiles.push(lp);
                }
            }
            "control" => match control(ctx, child, protocol, &mut control_names) {
                Some(ParsedControl::Common(c)) => controls.push(c),
                Some(ParsedControl::Dlms(c)) => {
                    if let Some((first, pos)) = &disconnect {
                        let first_line = ctx.line_of(*pos);
                        ctx.error(
                            child.pos,
                            format!(
                                "second DLMS control \"{}\": a DLMS profile has one disconnect control (\"{}\" at \
                                 line {first_line})",
                                c.name, first.name
                            ),
                        );
                    } else {
                        disconnect = Some((c, child.pos));
                    }
                }
                None => {}
            },
            _ => {}
        }
    }
    let reads_something = el.children.iter().any(|c| c.name == "value" || c.name == "load-profile");
    if !reads_something && !all_records {
        let hint = match protocol {
            Some(Protocol::Mbus) => " (or <mbus all-records=\"true\"/>)",
            Some(Protocol::Dlms | Protocol::Mercury) => " or <load-profile>",
            _ => "",
        };
        ctx.error(el.pos, format!("empty profile: <profile> defines no <value>{hint}"));
    }
    let part = match protocol {
        Some(Protocol::Mbus) => Part::Mbus(MbusPart { values: mbus_values, all_records }),
        Some(Protocol::Dlms) => Part::Dlms(DlmsPart {
            options: dlms_options,
            values: dlms_values,
            load_profiles,
            disconnect: disconnect.map(|(c, _)| c),
        }),
        Some(Protocol::Mercury) => Part::Mercury(MercuryPart {
            options: mercury_options,
            values: mercury_values,
            load_profile: power_profile.map(|(lp, _)| lp),
        }),
        _ => Part::None,
    };

    let profile = Profile {
        id: id?,
        path: None,
        manufacturer: manufacturer?,
        model: model?,
        document,
        protocol: protocol?,
        line,
        modbus: modbus.options,
        values,
        controls,
    };
    Some((profile, part))
}

/// `<mbus>` directly in `<profile>`: returns `all-records`.
fn mbus_options(ctx: &mut Ctx<'_>, el: &Element) -> bool {
    ctx.check_attrs(el, MBUS_OPTION_ATTRS);
    ctx.no_children(el);
    el.attr("all-records")
        .and_then(|a| ctx.choice(a, "all-records value", &[("true", true), ("false", false)]))
        .unwrap_or(false)
}

fn line_defaults(ctx: &mut Ctx<'_>, el: &Element, protocol: Option<Protocol>) -> LineDefaults {
    ctx.check_attrs(el, LINE_ATTRS);
    ctx.no_children(el);
    let mut line = LineDefaults::default();
    if let Some(a) = el.attr("baud") {
        line.baud = ctx.parse_with(a, "baud rate (50..4000000)", |s| {
            parse_in_range(s, 50, 4_000_000).and_then(|v| u32::try_from(v).ok())
        });
    }
    if let Some(a) = el.attr("parity") {
        line.parity = ctx.choice(a, "parity", &[("none", "none"), ("even", "even"), ("odd", "odd")]).map(String::from);
    }
    if let Some(a) = el.attr("data") {
        line.data_bits =
            ctx.parse_with(a, "data bits (5..8)", |s| parse_in_range(s, 5, 8).and_then(|v| u8::try_from(v).ok()));
    }
    if let Some(a) = el.attr("stop") {
        line.stop_bits =
            ctx.parse_with(a, "stop bits (1 or 2)", |s| parse_in_range(s, 1, 2).and_then(|v| u8::try_from(v).ok()));
    }
    if let Some(a) = el.attr("address") {
        // Modbus unit ids 1..247 (0 is broadcast); other protocols use the full byte.
        let (min, max, what) = match protocol {
            Some(Protocol::Modbus) | None => (1, 247, "Modbus address (1..247)"),
            // M-Bus primary addresses 1..250, and 0 for a factory-new (unconfigured) meter.
            Some(Protocol::Mbus) => (0, 250, "M-Bus primary address (0..250)"),
            Some(Protocol::Dlms) => (0, 0, ""),
            // Mercury network addresses 1..240, and 0 = any meter (point-to-point lines only).
            Some(Protocol::Mercury) => (0, 240, "Mercury network address (0..240)"),
        };
        if protocol == Some(Protocol::Dlms) {
            ctx.error(
                a.pos,
                "attribute \"address\" does not apply to a DLMS profile: give the HDLC addresses as \
                 <dlms server-logical=\"…\" server-physical=\"…\"/>",
            );
        } else {
            line.address = ctx.parse_with(a, what, |s| parse_in_range(s, min, max).and_then(|v| u8::try_from(v).ok()));
        }
    }
    if let Some(a) = el.attr("timeout") {
        line.timeout_ms =
            ctx.parse_with(a, "timeout (e.g. 500ms or 2s)", |s| parse_duration_ms(s).filter(|&ms| ms > 0));
    }
    line
}

fn modbus_defaults(ctx: &mut Ctx<'_>, el: &Element) -> ModbusDefaults {
    ctx.check_attrs(el, MODBUS_OPTION_ATTRS);
    ctx.no_children(el);
    let mut d = ModbusDefaults::default();
    if let Some(a) = el.attr("max-block") {
        if let Some(v) = ctx.parse_with(a, "block size (1..125 registers)", |s| {
            parse_in_range(s, 1, 125).and_then(|v| u16::try_from(v).ok())
        }) {
            d.options.max_block = v;
        }
    }
    if let Some(a) = el.attr("max-gap") {
        if let Some(v) = ctx
            .parse_with(a, "gap (0..124 registers)", |s| parse_in_range(s, 0, 124).and_then(|v| u16::try_from(v).ok()))
        {
            d.options.max_gap = v;
        }
    }
    if d.options.max_gap >= d.options.max_block {
        if let Some(a) = el.attr("max-gap") {
            let msg = format!("max-gap {} must be smaller than max-block {}", d.options.max_gap, d.options.max_block);
            ctx.error(a.value_pos, msg);
        }
    }
    if let Some(a) = el.attr("word-order") {
        if let Some(v) = ctx.choice(a, "word order", WORD_ORDERS) {
            d.word_order = v;
        }
    }
    if let Some(a) = el.attr("byte-order") {
        if let Some(v) = ctx.choice(a, "byte order", BYTE_ORDERS) {
            d.byte_order = v;
        }
    }
    d
}

fn value(
    ctx: &mut Ctx<'_>,
    el: &Element,
    protocol: Option<Protocol>,
    modbus: &ModbusDefaults,
    names: &mut HashMap<String, usize>,
    obis_seen: &mut HashMap<Obis, (String, usize)>,
) -> Option<ParsedValue> {
    ctx.check_attrs(el, VALUE_ATTRS);
    ctx.no_text(el);

    let name = ctx.required(el, "name").and_then(|a| {
        if !valid_name(&a.value) {
            ctx.error(
                a.value_pos,
                format!("bad value name \"{}\" (expected [a-z][a-z0-9_]*, at most 64 characters)", a.value),
            );
            return None;
        }
        if let Some(&first) = names.get(&a.value) {
            let first_line = ctx.line_of(first);
            ctx.error(
                a.value_pos,
                format!("duplicate value name \"{}\" (first defined at line {first_line})", a.value),
            );
            return None;
        }
        names.insert(a.value.clone(), el.pos);
        Some(a.value.clone())
    });

    let obis = ctx.required(el, "obis").and_then(|a| match Obis::from_str(a.value.trim()) {
        Ok(o) => {
            if let Some((other, first)) = obis_seen.get(&o) {
                let first_line = ctx.line_of(*first);
                let msg = format!("duplicate OBIS code {o} (already used by value \"{other}\" at line {first_line})");
                ctx.error(a.value_pos, msg);
                return None;
            }
            let owner = el.attr("name").map_or_else(String::new, |n| n.value.clone());
            obis_seen.insert(o, (owner, el.pos));
            Some(o)
        }
        Err(e) => {
            ctx.error(a.value_pos, e.to_string());
            None
        }
    });

    // DLMS meters report their unit (register attribute 3): in a DLMS profile the unit is optional, an
    // expectation checked against the meter's.
    let is_dlms = protocol == Some(Protocol::Dlms);
    let unit_attr = if is_dlms { el.attr("unit") } else { ctx.required(el, "unit") };
    let unit = unit_attr.and_then(|a| {
        if UNITS.contains(&a.value.as_str()) {
            Some(a.value.clone())
        } else {
            let list: Vec<String> = UNITS.iter().map(|u| format!("\"{u}\"")).collect();
            let hint = match dlms::base_unit_hint(&a.value) {
                Some(base) if is_dlms => format!(
                    " — a DLMS meter reports base units and a scaler (10^3 for k): write unit=\"{base}\", \
                     the reading is value × 10^scaler {base}"
                ),
                _ => String::new(),
            };
            ctx.error(a.value_pos, format!("unknown unit \"{}\" (expected one of {}){hint}", a.value, list.join(", ")));
            None
        }
    });
    let unit_ok = unit.is_some() || unit_attr.is_none();

    let kind = match el.attr("kind") {
        Some(a) => ctx.choice(a, "kind", KINDS),
        None if is_dlms => Some(unit.as_deref().map_or_else(
            || dlms::default_kind(el.attr("obis").and_then(|a| Obis::from_str(a.value.trim()).ok())),
            ValueKind::default_for_unit,
        )),
        None => unit.as_deref().map(ValueKind::default_for_unit),
    };
    let description = el.attr("description").map(|a| a.value.trim().to_string());

    let mut source = None;
    let mut source_count = 0;
    for child in &el.children {
        match child.name.as_str() {
            "modbus" => {
                source_count += 1;
                if source_count > 1 {
                    ctx.error(child.pos, "more than one <modbus> source in <value>");
                    continue;
                }
                if protocol.is_some_and(|p| p != Protocol::Modbus) {
                    ctx.error(child.pos, "<modbus> source in a profile whose protocol is not modbus");
                    continue;
                }
                source = modbus_value(ctx, child, modbus).map(ParsedSource::Modbus);
            }
            "mbus" => {
                source_count += 1;
                if source_count > 1 {
                    ctx.error(child.pos, "more than one <mbus> source in <value>");
                    continue;
                }
                if protocol.is_some_and(|p| p != Protocol::Mbus) {
                    ctx.error(child.pos, "<mbus> source in a profile whose protocol is not mbus");
                    continue;
                }
                source = mbus_select(ctx, child).map(ParsedSource::Mbus);
            }
            "dlms" if protocol == Some(Protocol::Dlms) => {
                source_count += 1;
                if source_count > 1 {
                    ctx.error(child.pos, "more than one <dlms> source in <value>");
                    continue;
                }
                source = dlms::value_source(ctx, child).map(ParsedSource::Dlms);
            }
            "mercury" if protocol == Some(Protocol::Mercury) => {
                source_count += 1;
                if source_count > 1 {
                    ctx.error(child.pos, "more than one <mercury> source in <value>");
                    continue;
                }
                source = mercury::value_source(ctx, child).map(ParsedSource::Mercury);
            }
            other if FUTURE_PROTOCOLS.contains(&other) || other == "dlms" || other == "mercury" => {
                source_count += 1;
                let p = protocol.map_or("unknown", Protocol::name);
                ctx.error(child.pos, format!("<{other}> source does not match the profile's protocol \"{p}\""));
            }
            other => {
                let expected = protocol.map_or("modbus", Protocol::name);
                ctx.error(child.pos, format!("unknown element <{other}> in <value> (expected {expected})"));
            }
        }
    }
    if source_count == 0 {
        let expected = protocol.map_or("modbus", Protocol::name);
        let shown = el.attr("name").map_or_else(String::new, |n| format!(" name=\"{}\"", n.value));
        ctx.error(el.pos, format!("<value{shown}> has no source: add a <{expected}> element"));
    }

    let line = ctx.line_of(el.pos);
    Some(match source? {
        ParsedSource::Modbus(m) => ParsedValue::Modbus(ValueDef {
            name: name?,
            obis: obis?,
            unit: unit?,
            kind: kind?,
            description,
            source: ValueSource::Modbus(m),
            line,
        }),
        ParsedSource::Mbus(select) => ParsedValue::Mbus(MbusValueDef {
            name: name?,
            obis: obis?,
            unit: unit?,
            kind: kind?,
            description,
            select,
            line,
        }),
        ParsedSource::Mercury(src) => {
            let unit = unit?;
            if !mercury::check_unit(ctx, unit_attr, &unit, &src) {
                return None;
            }
            ParsedValue::Mercury(MercuryValueDef {
                name: name?,
                obis: obis?,
                unit,
                kind: match el.attr("kind") {
                    Some(_) => kind?,
                    None => mercury::default_kind(&src),
                },
                description,
                source: src,
                line,
            })
        }
        ParsedSource::Dlms(src) => {
            if !unit_ok {
                return None;
            }
            ParsedValue::Dlms(DlmsValueDef {
                name: name?,
                obis: obis?,
                class_id: src.class_id,
                attribute: src.attribute,
                kind: kind?,
                unit,
                description,
            })
        }
    })
}

/// Parses `dif-vif` hex: bytes as two hex digits each, optionally separated by spaces.
fn parse_hex_bytes(s: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if digits.is_empty() || !digits.len().is_multiple_of(2) || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    // Every token must be whole bytes: "4 06" is refused rather than read as "40 6…".
    if s.split_whitespace().any(|t| !t.len().is_multiple_of(2)) {
        return None;
    }
    digits.chunks(2).map(|pair| std::str::from_utf8(pair).ok().and_then(|p| u8::from_str_radix(p, 16).ok())).collect()
}

fn mbus_select(ctx: &mut Ctx<'_>, el: &Element) -> Option<MbusSelect> {
    ctx.check_attrs(el, MBUS_VALUE_ATTRS);
    ctx.no_children(el);
    let mut ok = true;
    let dif_vif = el.attr("dif-vif").and_then(|a| {
        let Some(bytes) = parse_hex_bytes(&a.value) else {
            ctx.error(a.value_pos, format!("bad dif-vif \"{}\" (expected hex bytes, e.g. \"04 06\")", a.value));
            ok = false;
            return None;
        };
        if bytes.len() > MAX_DIF_VIF {
            ctx.error(a.value_pos, format!("dif-vif has {} bytes (at most {MAX_DIF_VIF})", bytes.len()));
            ok = false;
            return None;
        }
        match split_dif_vif(&bytes) {
            Some(h) => Some((bytes, h)),
            None => {
                ctx.error(
                    a.value_pos,
                    format!(
                        "dif-vif \"{}\" is not one record header (DIF, DIFEs, VIF, VIFEs with consistent extension bits)",
                        a.value
                    ),
                );
                ok = false;
                None
            }
        }
    });
    let text = |ctx: &mut Ctx<'_>, name: &str, ok: &mut bool| {
        el.attr(name).and_then(|a| {
            if a.value.trim().is_empty() {
                ctx.error(a.value_pos, format!("attribute \"{name}\" on <mbus> is empty"));
                *ok = false;
                return None;
            }
            Some(a.value.trim().to_string())
        })
    };
    let quantity = text(ctx, "quantity", &mut ok);
    let description = text(ctx, "description", &mut ok);
    let function = el.attr("function").and_then(|a| {
        let f = ctx.choice(a, "function", FUNCTIONS);
        ok &= f.is_some();
        f
    });
    let mut number = |ctx: &mut Ctx<'_>, name: &str, max: u64, what: &str| {
        el.attr(name).and_then(|a| {
            let v = ctx.parse_with(a, what, |s| parse_in_range(s, 0, max));
            ok &= v.is_some();
            v
        })
    };
    let storage = number(ctx, "storage", (1u64 << 41) - 1, "storage number (0..2^41-1)");
    let tariff = number(ctx, "tariff", (1u64 << 20) - 1, "tariff (0..2^20-1)").and_then(|v| u32::try_from(v).ok());
    let subunit = number(ctx, "subunit", (1u64 << 10) - 1, "sub-unit (0..1023)").and_then(|v| u32::try_from(v).ok());
    let mut scale = 1.0;
    if let Some(a) = el.attr("scale") {
        match parse_f64(a.value.trim()) {
            Some(v) if v != 0.0 => scale = v,
            Some(_) => {
                ctx.error(a.value_pos, "scale must not be 0");
                ok = false;
            }
            None => {
                ctx.error(a.value_pos, format!("bad number \"{}\" in attribute \"scale\"", a.value));
                ok = false;
            }
        }
    }
    // The DIF/DIFEs already fix function, storage, tariff and sub-unit: the explicit ones must agree.
    if let Some((_, h)) = &dif_vif {
        let checks: [(&str, Option<String>, String); 4] = [
            ("function", function.map(|f| f.name().to_string()), h.function.name().to_string()),
            ("storage", storage.map(|v| v.to_string()), h.storage.to_string()),
            ("tariff", tariff.map(|v| v.to_string()), h.tariff.to_string()),
            ("subunit", subunit.map(|v| v.to_string()), h.subunit.to_string()),
        ];
        for (name, given, implied) in checks {
            if let (Some(given), Some(a)) = (given, el.attr(name)) {
                if given != implied {
                    ctx.error(
                        a.value_pos,
                        format!(
                            "{name} {} contradicts dif-vif \"{}\", which means {name} {implied}",
                            a.value,
                            el.attr("dif-vif").map_or("", |d| d.value.as_str())
                        ),
                    );
                    ok = false;
                }
            }
        }
    }
    let selects = ["dif-vif", "quantity", "description"];
    if !selects.iter().any(|n| el.attr(n).is_some()) {
        ctx.error(el.pos, "<mbus> selects no record: give \"dif-vif\", \"quantity\" or \"description\"");
        ok = false;
    }
    ok.then(|| MbusSelect {
        dif_vif: dif_vif.map(|(b, _)| b),
        quantity,
        function,
        storage,
        tariff,
        subunit,
        description,
        scale,
    })
}

fn modbus_value(ctx: &mut Ctx<'_>, el: &Element, defaults: &ModbusDefaults) -> Option<ModbusValue> {
    ctx.check_attrs(el, MODBUS_VALUE_ATTRS);
    ctx.no_children(el);
    let table = ctx.required(el, "table").and_then(|a| ctx.choice(a, "table", TABLES));
    let register = ctx.required(el, "register").and_then(|a| {
        ctx.parse_with(a, "register (0..65535, decimal or 0x hex)", |s| {
            parse_uint(s).and_then(|v| u16::try_from(v).ok())
        })
    });

    let is_bit = matches!(table, Some(Table::Coil | Table::Discrete));
    let mut encoding = Encoding {
        ty: ValueType::U16,
        word_order: defaults.word_order,
        byte_order: defaults.byte_order,
        scale: 1.0,
        offset: 0.0,
    };
    if is_bit {
        // A bit reads as 0 or 1; decoding attributes would be meaningless.
        for name in ["type", "word-order", "byte-order", "scale", "offset"] {
            if let Some(a) = el.attr(name) {
                let t = table.map_or("", |t| TABLES.iter().find(|(_, x)| *x == t).map_or("", |(n, _)| *n));
                ctx.error(a.pos, format!("attribute \"{name}\" does not apply to table \"{t}\" (bits read as 0 or 1)"));
            }
        }
        encoding.word_order = WordOrder::HighFirst;
        encoding.byte_order = ByteOrder::Big;
    } else {
        let ty = ctx.required(el, "type").and_then(|a| {
            let found = ValueType::from_str(&a.value).ok();
            if found.is_none() {
                let names: Vec<&str> = ValueType::ALL.iter().map(|t| t.name()).collect();
                ctx.error(a.value_pos, format!("unknown type \"{}\" (expected one of {})", a.value, names.join(", ")));
            }
            found
        });
        if let Some(ty) = ty {
            encoding.ty = ty;
        }
        if let Some(a) = el.attr("word-order") {
            if let Some(v) = ctx.choice(a, "word order", WORD_ORDERS) {
                encoding.word_order = v;
            }
        }
        if let Some(a) = el.attr("byte-order") {
            if let Some(v) = ctx.choice(a, "byte order", BYTE_ORDERS) {
                encoding.byte_order = v;
            }
        }
        if let Some(a) = el.attr("scale") {
            match parse_f64(a.value.trim()) {
                Some(v) if v != 0.0 => encoding.scale = v,
                Some(_) => ctx.error(a.value_pos, "scale must not be 0"),
                None => ctx.error(a.value_pos, format!("bad number \"{}\" in attribute \"scale\"", a.value)),
            }
        }
        if let Some(a) = el.attr("offset") {
            match parse_f64(a.value.trim()) {
                Some(v) => encoding.offset = v,
                None => ctx.error(a.value_pos, format!("bad number \"{}\" in attribute \"offset\"", a.value)),
            }
        }
        if let (Some(r), Some(ty)) = (register, ty) {
            let last = u32::from(r) + u32::from(ty.registers()) - 1;
            if last > 0xFFFF {
                if let Some(a) = el.attr("register") {
                    ctx.error(a.value_pos, format!("{ty} at register {r:#06x} runs past the last register 0xffff"));
                }
            }
        }
        ty?;
    }
    Some(ModbusValue { table: table?, register: register?, encoding })
}

fn control(
    ctx: &mut Ctx<'_>,
    el: &Element,
    protocol: Option<Protocol>,
    names: &mut HashMap<String, usize>,
) -> Option<ParsedControl> {
    if protocol == Some(Protocol::Mbus) {
        ctx.error(el.pos, "<control> in an mbus profile: M-Bus profiles have no writable controls");
        return None;
    }
    if protocol == Some(Protocol::Mercury) {
        ctx.error(el.pos, "<control> in a mercury profile: ami does not switch Mercury load relays");
        return None;
    }
    ctx.check_attrs(el, CONTROL_ATTRS);
    ctx.no_text(el);
    let name = ctx.required(el, "name").and_then(|a| {
        if !valid_name(&a.value) {
            ctx.error(
                a.value_pos,
                format!("bad control name \"{}\" (expected [a-z][a-z0-9_]*, at most 64 characters)", a.value),
            );
            return None;
        }
        if let Some(&first) = names.get(&a.value) {
            let first_line = ctx.line_of(first);
            ctx.error(
                a.value_pos,
                format!("duplicate control name \"{}\" (first defined at line {first_line})", a.value),
            );
            return None;
        }
        names.insert(a.value.clone(), el.pos);
        Some(a.value.clone())
    });
    let description = el.attr("description").map(|a| a.value.trim().to_string());

    let mut source = None;
    let mut dlms_target = None;
    let mut count = 0;
    for child in &el.children {
        match child.name.as_str() {
            "modbus" => {
                count += 1;
                if count > 1 {
                    ctx.error(child.pos, "more than one <modbus> target in <control>");
                    continue;
                }
                if protocol.is_some_and(|p| p != Protocol::Modbus) {
                    ctx.error(child.pos, "<modbus> target in a profile whose protocol is not modbus");
                    continue;
                }
                source = modbus_control(ctx, child).map(ControlSource::Modbus);
            }
            "dlms" if protocol == Some(Protocol::Dlms) => {
                count += 1;
                if count > 1 {
                    ctx.error(child.pos, "more than one <dlms> target in <control>");
                    continue;
                }
                dlms_target = dlms::control_target(ctx, child);
            }
            other if FUTURE_PROTOCOLS.contains(&other) || other == "dlms" || other == "mercury" => {
                count += 1;
                let p = protocol.map_or("unknown", Protocol::name);
                ctx.error(child.pos, format!("<{other}> target does not match the profile's protocol \"{p}\""));
            }
            other => {
                let expected = protocol.map_or("modbus", Protocol::name);
                ctx.error(child.pos, format!("unknown element <{other}> in <control> (expected {expected})"));
            }
        }
    }
    if count == 0 {
        let expected = protocol.map_or("modbus", Protocol::name);
        ctx.error(el.pos, format!("<control> has no target: add a <{expected}> element"));
    }
    if protocol == Some(Protocol::Dlms) {
        return Some(ParsedControl::Dlms(DlmsControlDef { name: name?, obis: dlms_target?, description }));
    }
    Some(ParsedControl::Common(Control { name: name?, description, source: source? }))
}

fn modbus_control(ctx: &mut Ctx<'_>, el: &Element) -> Option<ModbusControl> {
    ctx.check_attrs(el, MODBUS_CONTROL_ATTRS);
    ctx.no_children(el);
    let address = |ctx: &mut Ctx<'_>, a: &Attr| {
        ctx.parse_with(a, "address (0..65535, decimal or 0x hex)", |s| {
            parse_uint(s).and_then(|v| u16::try_from(v).ok())
        })
    };
    match (el.attr("coil"), el.attr("register")) {
        (Some(coil), None) => {
            for name in ["on", "off"] {
                if let Some(a) = el.attr(name) {
                    ctx.error(
                        a.pos,
                        format!("attribute \"{name}\" does not apply to a coil (on writes 0xFF00, off 0x0000)"),
                    );
                }
            }
            address(ctx, coil).map(|register| ModbusControl::Coil { register })
        }
        (None, Some(reg)) => {
            let register = address(ctx, reg);
            let word = |ctx: &mut Ctx<'_>, name: &str, default: u16| match el.attr(name) {
                Some(a) => ctx
                    .parse_with(a, "register value (0..65535)", |s| parse_uint(s).and_then(|v| u16::try_from(v).ok())),
                None => Some(default),
            };
            let on = word(ctx, "on", 1);
            let off = word(ctx, "off", 0);
            if let (Some(on), Some(off), Some(a)) = (on, off, el.attr("on")) {
                if on == off {
                    ctx.error(a.value_pos, format!("\"on\" and \"off\" are both {on}"));
                }
            }
            Some(ModbusControl::Register { register: register?, on: on?, off: off? })
        }
        (Some(_), Some(reg)) => {
            ctx.error(reg.pos, "a control writes either a \"coil\" or a \"register\", not both");
            None
        }
        (None, None) => {
            ctx.error(el.pos, "missing attribute \"coil\" or \"register\" on <modbus>");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_accept_decimal_and_hex_only() {
        assert_eq!(parse_uint("0x0048"), Some(0x48));
        assert_eq!(parse_uint("72"), Some(72));
        for bad in ["", "0x", "-1", "+1", "1_000", "0b1", " 1", "1.0", "0xg"] {
            assert_eq!(parse_uint(bad), None, "{bad}");
        }
        assert_eq!(parse_f64("0.001"), Some(0.001));
        assert_eq!(parse_f64("inf"), None);
        assert_eq!(parse_f64("NaN"), None);
        assert_eq!(parse_f64("1e999"), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("500ms"), Some(500));
        assert_eq!(parse_duration_ms("2s"), Some(2000));
        assert_eq!(parse_duration_ms("1.5s"), Some(1500));
        for bad in ["", "5", "ms", "s", "-1s", "1h", "0x10ms", "1e3s"] {
            assert_eq!(parse_duration_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn names_and_ids() {
        assert!(valid_name("energy_import_total"));
        assert!(valid_name("v1"));
        for bad in ["", "1v", "Voltage", "a-b", "_a", "a b"] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(valid_id("eastron-sdm630"));
        assert!(valid_id("abb.b23_v2"));
        assert!(!valid_id("Eastron"));
        assert!(!valid_id("-x"));
    }

    #[test]
    fn columns_count_characters() {
        let lines = Lines::new("ab\nµé<x");
        assert_eq!(lines.locate(0), (1, 1));
        assert_eq!(lines.locate(3), (2, 1));
        // 'µ' and 'é' are two bytes each; '<' is the third character of line 2.
        assert_eq!(lines.locate(7), (2, 3));
        assert_eq!(lines.locate(999), (2, 5));
    }
}

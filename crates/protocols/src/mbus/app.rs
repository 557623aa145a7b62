//! EN 13757-3 application layer: the user data of an RSP_UD telegram decoded into a fixed header and
//! typed records with normalized units. Sans-IO and pure: bytes in, [`Telegram`] or [`AppError`] out.
//!
//! What it decodes (clause and table numbers as in EN 13757-3; they shift slightly between editions, the
//! names given with them are the stable reference):
//! - the CI field (5, table 2): `72` variable data structure with the 12-byte long header (6.1), `73`
//!   fixed data structure (annex G), `70` application error reports (annex I) as [`AppError::Application`];
//!   the MSB-first variants `76`/`77` and every other CI are refused as [`AppError::UnsupportedCi`];
//! - the long header (6.1, 6.3): identification number (BCD; a nibble above 9 is kept as a hex digit the way
//!   libmbus prints it, `500023E`), manufacturer (three letters packed in 15 bits), version, medium
//!   (table 3, [`Medium`]), access number, status, signature;
//! - data records (6.2–6.4): DIF with function field, storage number LSB and data field coding (table 4),
//!   up to ten DIFEs (storage number, tariff, sub-unit; 6.3.4), the primary VIF (table 10), the `FD` and
//!   `FB` extension tables (tables 12 and 14), plain-text VIFs (`7C`/`FC`, 6.4.4; the text comes right after
//!   the VIF, as the meters of the corpus send it), up to ten VIFEs with the orthogonal corrections of
//!   table 15 (`E111 0nnn` ×10^(nnn−6), `E111 10nn` +10^(nn−3), `E111 1101` ×1000);
//! - data field codings (annex A): integers (type B, signed), BCD (type A, `F` in the top nibble = negative),
//!   32-bit reals (type H), dates (type G), date and time (types F and I), variable length data (LVAR,
//!   table 6: text, BCD, binary); BCD with a digit A–E (the standard's error marker, e.g. a value during an
//!   error state filled with `DD`), NaN/infinite reals and dates flagged invalid are kept as
//!   [`RecordValue::Raw`], never turned into a number;
//! - the special DIFs (table 5): `2F` idle filler skipped, `0F`/`1F` manufacturer specific data kept raw in
//!   [`Telegram::manufacturer_data`] (never dropped), `1F` also sets [`Telegram::more_records_follow`].
//!
//! Values have the VIF's exponent applied and units are the design map's symbols (`Wh`, `J`, `m3`,
//! `m3/h`, `W`, `degC`, `K`, `s`, `V`, `A`, …; volume flow per minute or second is converted to `m3/h`);
//! [`Record::lib_unit`] and [`Record::quantity`] keep libmbus' texts so that the decoding can be compared
//! with libmbus' (`tests/mbus_corpus.rs` does that for the 76 frames of the libmbus corpus).
//!
//! `m-bus-parser` 0.5.3 (MIT) decodes the same layer and is the second opinion in the corpus test, but this
//! module does not wrap it: it rejects identification numbers with a hex nibble (libmbus' `500023E`),
//! underflows on 4–5-byte inputs starting with `68`, reads plain-text VIFs in the other order unless a
//! feature is set, and silently truncates a data field longer than the input where libmbus (and the
//! standard) call the telegram broken. Covering those in a wrapper meant re-parsing every record header, so
//! the decoder below is our own, written from the standard and checked against both.
//!
//! Panic contract: no input panics [`decode_user_data`] or [`decode_long_frame`] (fuzz target `mbus_app`);
//! every length is checked before it is used.

#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod harness;
mod vif;

use std::fmt;

use thiserror::Error;

/// Most DIFEs (and VIFEs) one record may carry (EN 13757-3 6.3.4 / 6.4.1: at most 10).
const MAX_EXTENSIONS: usize = 10;

/// Why user data could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AppError {
    /// The bytes are not a long frame `68 L L 68 … CS 16`.
    #[error("not an M-Bus long frame: {0}")]
    Frame(&'static str),
    /// The long frame's checksum does not match.
    #[error("long frame checksum: expected {expected:#04x}, received {actual:#04x}")]
    BadChecksum {
        /// Sum of the C field up to the end of the user data, modulo 256.
        expected: u8,
        /// The CS byte received.
        actual: u8,
    },
    /// A CI field this decoder does not handle.
    #[error("unsupported CI field {0:#04x}")]
    UnsupportedCi(u8),
    /// The meter answered with an application error report (CI `70`, EN 13757-3 annex I).
    #[error("application error from the meter: {}", application_error_text(*.0))]
    Application(Option<u8>),
    /// The data ends inside a structure (`what` names it, `at` is the offset into the user data).
    #[error("user data truncated in {what} at offset {at}")]
    Truncated {
        /// The structure being read: header, DIF, DIFE, VIF, VIFE, plain-text VIF, data.
        what: &'static str,
        /// Offset into the user data (after the CI field).
        at: usize,
    },
    /// More than ten DIFEs or VIFEs in one record.
    #[error("more than 10 {what} in the record at offset {at}")]
    TooManyExtensions {
        /// `"DIFEs"` or `"VIFEs"`.
        what: &'static str,
        /// Offset of the record's DIF.
        at: usize,
    },
    /// A reserved special DIF (`3F`–`6F`, or the global readout request `7F` in a reply).
    #[error("special DIF {dif:#04x} at offset {at} is not allowed in a reply")]
    BadSpecialDif {
        /// The DIF.
        dif: u8,
        /// Its offset.
        at: usize,
    },
    /// An LVAR code the standard reserves.
    #[error("reserved variable-length code {lvar:#04x} at offset {at}")]
    BadLvar {
        /// The LVAR byte.
        lvar: u8,
        /// Its offset.
        at: usize,
    },
}

/// The text for an application error code (EN 13757-3 annex I, the names libmbus uses).
fn application_error_text(code: Option<u8>) -> String {
    let text = match code {
        None | Some(0) => "unspecified error",
        Some(1) => "unimplemented CI-field",
        Some(2) => "buffer too long, truncated",
        Some(3) => "too many records",
        Some(4) => "premature end of record",
        Some(5) => "more than 10 DIFEs",
        Some(6) => "more than 10 VIFEs",
        Some(7) => "reserved",
        Some(8) => "application too busy for handling readout request",
        Some(9) => "too many readouts (for slaves with limited readouts per time)",
        Some(_) => "reserved",
    };
    match code {
        Some(c) => format!("{text} ({c:#04x})"),
        None => text.to_string(),
    }
}

macro_rules! media {
    ($($(#[$doc:meta])* $var:ident = $code:literal, $name:literal;)*) => {
        /// Medium / device type of the header (EN 13757-3 table 3). Lossless: unlisted codes are
        /// [`Medium::Unknown`]. [`Medium::name`] gives the texts libmbus prints.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Medium {
            $($(#[$doc])* #[doc = concat!("`", stringify!($code), "` ", $name)] $var,)*
            /// A reserved or unassigned code.
            Unknown(u8),
        }

        impl From<u8> for Medium {
            fn from(code: u8) -> Self {
                match code {
                    $($code => Self::$var,)*
                    other => Self::Unknown(other),
                }
            }
        }

        impl From<Medium> for u8 {
            fn from(medium: Medium) -> u8 {
                match medium {
                    $(Medium::$var => $code,)*
                    Medium::Unknown(code) => code,
                }
            }
        }

        impl Medium {
            /// The medium's name as libmbus prints it (`"Heat: Outlet"`, `"Water"`, `"Electricity"`).
            #[must_use]
            pub fn name(self) -> String {
                match self {
                    $(Self::$var => $name.to_string(),)*
                    Self::Unknown(code @ (0x22..=0x24 | 0x26 | 0x27 | 0x2A..=0x2F | 0x31..=0x34 | 0x38..=0x3F)) => {
                        let _ = code;
                        "Reserved".to_string()
                    }
                    Self::Unknown(code) => format!("Unknown medium (0x{code:02x})"),
                }
            }
        }
    };
}

media! {
    Other = 0x00, "Other";
    Oil = 0x01, "Oil";
    Electricity = 0x02, "Electricity";
    Gas = 0x03, "Gas";
    HeatOutlet = 0x04, "Heat: Outlet";
    Steam = 0x05, "Steam";
    WarmWater = 0x06, "Warm water (30-90°C)";
    Water = 0x07, "Water";
    HeatCostAllocator = 0x08, "Heat Cost Allocator";
    CompressedAir = 0x09, "Compressed Air";
    CoolingOutlet = 0x0A, "Cooling load meter: Outlet";
    CoolingInlet = 0x0B, "Cooling load meter: Inlet";
    HeatInlet = 0x0C, "Heat: Inlet";
    HeatCooling = 0x0D, "Heat / Cooling load meter";
    BusSystem = 0x0E, "Bus/System";
    UnknownMedium = 0x0F, "Unknown Medium";
    IrrigationWater = 0x10, "Irrigation Water";
    WaterLogger = 0x11, "Water Logger";
    GasLogger = 0x12, "Gas Logger";
    GasConverter = 0x13, "Gas Converter";
    CalorificValue = 0x14, "Calorific value";
    HotWater = 0x15, "Hot water (>90°C)";
    ColdWater = 0x16, "Cold water";
    DualWater = 0x17, "Dual water";
    Pressure = 0x18, "Pressure";
    AdConverter = 0x19, "A/D Converter";
    SmokeDetector = 0x1A, "Smoke Detector";
    AmbientSensor = 0x1B, "Ambient Sensor";
    GasDetector = 0x1C, "Gas Detector";
    Breaker = 0x20, "Breaker: Electricity";
    Valve = 0x21, "Valve: Gas or Water";
    DisplayDevice = 0x25, "Customer Unit: Display Device";
    WasteWater = 0x28, "Waste Water";
    Garbage = 0x29, "Garbage";
    ServiceUnit = 0x30, "Service Unit";
    RadioConverterSystem = 0x36, "Radio Converter: System";
    RadioConverterMeter = 0x37, "Radio Converter: Meter";
}

impl fmt::Display for Medium {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// The header of a telegram: who sent it and in which state (EN 13757-3 6.1; for the fixed data
/// structure, annex G).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedHeader {
    /// Identification number: the 8 BCD digits as libmbus prints them (leading zeros dropped, a nibble
    /// above 9 kept as a hex digit: `500023E`).
    pub id: String,
    /// Manufacturer's three-letter code (`KAM`); empty for the fixed data structure, which has none.
    pub manufacturer: String,
    /// Version (generation) of the meter; 0 for the fixed data structure.
    pub version: u8,
    /// Medium; for the fixed data structure the one its counter units name.
    pub medium: Medium,
    /// Access number, incremented by the meter per telegram.
    pub access_number: u8,
    /// Status byte (6.3.3: bit 0–1 application errors, 2 power low, 3 permanent and 4 temporary error).
    pub status: u8,
    /// Signature (configuration field) as a little-endian word; 0 when unencrypted.
    pub signature: u16,
}

/// The function field of a DIF (EN 13757-3 table 4), plus the two values of the fixed data structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Function {
    /// `00` instantaneous value.
    Instantaneous,
    /// `01` maximum value.
    Maximum,
    /// `10` minimum value.
    Minimum,
    /// `11` value during error state.
    ValueDuringErrorState,
    /// Fixed data structure, status bit 6 clear: the counters are current.
    Actual,
    /// Fixed data structure, status bit 6 set: the counters are stored (fixed date) values.
    Stored,
}

impl Function {
    /// The name libmbus prints (`"Instantaneous value"`, `"Maximum value"`, …).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Instantaneous => "Instantaneous value",
            Self::Maximum => "Maximum value",
            Self::Minimum => "Minimum value",
            Self::ValueDuringErrorState => "Value during error state",
            Self::Actual => "Actual value",
            Self::Stored => "Stored value",
        }
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A record's value.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordValue {
    /// A number with the exponent and the VIFE corrections applied, in [`Record::unit`]; always finite.
    Number(f64),
    /// Text (variable-length ASCII data, sent last character first, here in reading order).
    Text(String),
    /// A date (type G), ISO 8601 `YYYY-MM-DD` (fields printed as sent, even when out of range).
    Date(String),
    /// A date and time (types F and I), ISO 8601 `YYYY-MM-DDThh:mm:ssZ` (the meter's local time).
    DateTime(String),
    /// Bytes it cannot interpret: variable-length binary data, BCD with a digit A–E (an error marker), a
    /// NaN or infinite real, a date flagged invalid (in the order sent).
    Raw(Vec<u8>),
}

/// One data record (EN 13757-3 6.2).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Function field of the DIF.
    pub function: Function,
    /// Storage number (DIF bit 6 and 4 bits per DIFE).
    pub storage: u64,
    /// Tariff (2 bits per DIFE).
    pub tariff: u32,
    /// Sub-unit (device; 1 bit per DIFE).
    pub subunit: u32,
    /// Whether the record carried DIFEs (libmbus prints tariff and device only then).
    pub has_dife: bool,
    /// Design-map unit symbol (`Wh`, `m3`, `degC`, …), `""` for dimensionless values, dates and text.
    pub unit: String,
    /// The unit as libmbus writes it (`m^3`, `°C`, `-`, …).
    pub lib_unit: String,
    /// The quantity (`"Energy"`, `"Volume"`, `"Flow temperature"`, `"Time point (date)"`; for a plain-text
    /// VIF the meter's own text, for the fixed data structure the quantity its unit implies).
    pub quantity: String,
    /// The value.
    pub value: RecordValue,
    /// The DIF, DIFEs, VIF, plain-text VIF and VIFEs as received.
    pub dif_vif_raw: Vec<u8>,
    /// The data field as received.
    pub raw: Vec<u8>,
}

/// A decoded RSP_UD telegram.
#[derive(Debug, Clone, PartialEq)]
pub struct Telegram {
    /// Who sent it.
    pub header: FixedHeader,
    /// The data records in telegram order.
    pub records: Vec<Record>,
    /// DIF `1F`: the meter has more records; the master sends another REQ_UD2 (FCB toggled).
    pub more_records_follow: bool,
    /// Manufacturer-specific data after DIF `0F` or `1F` (the DIF itself not included), kept raw.
    pub manufacturer_data: Option<Vec<u8>>,
}

/// Decodes a whole long frame `68 L L 68 C A CI data CS 16` (EN 13757-2 5.4), checking the envelope
/// (start bytes, both length fields, the frame's size, checksum and stop byte) before the user data.
///
/// # Errors
/// [`AppError::Frame`] or [`AppError::BadChecksum`] for a bad envelope, else as [`decode_user_data`].
pub fn decode_long_frame(frame: &[u8]) -> Result<Telegram, AppError> {
    let (&[start, l1, l2, start2], rest) = split::<4>(frame).ok_or(AppError::Frame("shorter than 4 bytes"))?;
    if start != 0x68 || start2 != 0x68 {
        return Err(AppError::Frame("start bytes are not 68 … 68"));
    }
    if l1 != l2 {
        return Err(AppError::Frame("the two length fields differ"));
    }
    let len = usize::from(l1);
    if len < 3 {
        return Err(AppError::Frame("length field below 3 (C, A, CI)"));
    }
    if rest.len() < len + 2 {
        return Err(AppError::Frame("shorter than its length field says"));
    }
    if rest.len() > len + 2 {
        return Err(AppError::Frame("longer than its length field says"));
    }
    let (body, tail) = rest.split_at(len);
    let (Some(&cs), Some(&stop)) = (tail.first(), tail.get(1)) else {
        return Err(AppError::Frame("no checksum and stop byte"));
    };
    let expected = body.iter().fold(0u8, |s, b| s.wrapping_add(*b));
    if expected != cs {
        return Err(AppError::BadChecksum { expected, actual: cs });
    }
    if stop != 0x16 {
        return Err(AppError::Frame("stop byte is not 16"));
    }
    match body {
        [_c, _a, ci, data @ ..] => decode_user_data(*ci, data),
        _ => Err(AppError::Frame("length field below 3 (C, A, CI)")),
    }
}

/// The first `n` bytes as an array and the rest.
fn split<const N: usize>(b: &[u8]) -> Option<(&[u8; N], &[u8])> {
    let head = b.get(..N)?.try_into().ok()?;
    Some((head, b.get(N..)?))
}

/// Decodes the user data that follows the CI field of an RSP_UD.
///
/// # Errors
/// [`AppError::UnsupportedCi`] for CI fields other than `72`/`73`, [`AppError::Application`] for an
/// application error report (`70`), and [`AppError::Truncated`], [`AppError::TooManyExtensions`],
/// [`AppError::BadSpecialDif`], [`AppError::BadLvar`] for broken records.
pub fn decode_user_data(ci: u8, data: &[u8]) -> Result<Telegram, AppError> {
    match ci {
        0x70 => Err(AppError::Application(data.first().copied())),
        0x72 => decode_variable(data),
        0x73 => decode_fixed(data),
        other => Err(AppError::UnsupportedCi(other)),
    }
}

/// The identification number as libmbus prints it: the BCD nibbles as hex, leading zeros dropped.
fn id_text(b: [u8; 4]) -> String {
    format!("{:X}", u32::from_le_bytes(b))
}

/// The three letters packed into the manufacturer field (EN 13757-3 6.3.2: 5 bits per letter, `A` = 1).
fn manufacturer_text(code: u16) -> String {
    [10u16, 5, 0].iter().map(|shift| char::from(((code >> shift) & 0x1F) as u8 + 64)).collect()
}

fn decode_variable(data: &[u8]) -> Result<Telegram, AppError> {
    let (h, body) = split::<12>(data).ok_or(AppError::Truncated { what: "header", at: data.len() })?;
    let header = FixedHeader {
        id: id_text([h[0], h[1], h[2], h[3]]),
        manufacturer: manufacturer_text(u16::from_le_bytes([h[4], h[5]])),
        version: h[6],
        medium: Medium::from(h[7]),
        access_number: h[8],
        status: h[9],
        signature: u16::from_le_bytes([h[10], h[11]]),
    };
    let mut telegram = Telegram { header, records: Vec::new(), more_records_follow: false, manufacturer_data: None };
    let mut at = 0;
    while let Some(&dif) = body.get(at) {
        match dif {
            0x2F => at += 1,
            0x0F | 0x1F => {
                telegram.more_records_follow = dif == 0x1F;
                telegram.manufacturer_data = Some(body.get(at + 1..).unwrap_or_default().to_vec());
                break;
            }
            0x3F | 0x4F | 0x5F | 0x6F | 0x7F => return Err(AppError::BadSpecialDif { dif, at: at + 12 }),
            _ => {
                let (record, next) = decode_record(body, at)?;
                telegram.records.push(record);
                at = next;
            }
        }
    }
    Ok(telegram)
}

/// Reads one byte of a record, or says which part ended early.
fn byte(body: &[u8], at: usize, what: &'static str) -> Result<u8, AppError> {
    body.get(at).copied().ok_or(AppError::Truncated { what, at: at + 12 })
}

/// Decodes the record whose DIF is at `start`; returns it and the offset after it.
fn decode_record(body: &[u8], start: usize) -> Result<(Record, usize), AppError> {
    let dif = byte(body, start, "DIF")?;
    let mut at = start + 1;
    let mut storage = u64::from((dif >> 6) & 0x01);
    let (mut tariff, mut subunit) = (0u32, 0u32);
    let mut ext = dif & 0x80 != 0;
    let mut difes = 0usize;
    while ext {
        if difes == MAX_EXTENSIONS {
            return Err(AppError::TooManyExtensions { what: "DIFEs", at: start + 12 });
        }
        let dife = byte(body, at, "DIFE")?;
        at += 1;
        // Widths per DIFE: storage 4 bits (after the DIF's one), tariff 2, sub-unit 1; ten DIFEs fit.
        storage |= u64::from(dife & 0x0F) << (1 + 4 * difes);
        tariff |= u32::from((dife >> 4) & 0x03) << (2 * difes);
        subunit |= u32::from((dife >> 6) & 0x01) << difes;
        difes += 1;
        ext = dife & 0x80 != 0;
    }

    let vif = byte(body, at, "VIF")?;
    at += 1;
    let mut plain_text = None;
    if vif & 0x7F == 0x7C {
        let len = usize::from(byte(body, at, "plain-text VIF")?);
        let text = body.get(at + 1..at + 1 + len).ok_or(AppError::Truncated { what: "plain-text VIF", at: at + 12 })?;
        // Sent last character first (6.4.4).
        plain_text = Some(text.iter().rev().map(|&b| char::from(b)).collect::<String>());
        at += 1 + len;
    }
    let mut vifes = Vec::new();
    let mut ext = vif & 0x80 != 0;
    while ext {
        if vifes.len() == MAX_EXTENSIONS {
            return Err(AppError::TooManyExtensions { what: "VIFEs", at: start + 12 });
        }
        let vife = byte(body, at, "VIFE")?;
        at += 1;
        vifes.push(vife);
        ext = vife & 0x80 != 0;
    }
    let header_end = at;

    // Data field length from the DIF's coding (table 4) or the LVAR (table 6).
    let coding = dif & 0x0F;
    let (data_start, len) = match coding {
        0x00 | 0x08 => (at, 0),
        0x01 | 0x09 => (at, 1),
        0x02 | 0x0A => (at, 2),
        0x03 | 0x0B => (at, 3),
        0x04 | 0x05 | 0x0C => (at, 4),
        0x06 | 0x0E => (at, 6),
        0x07 => (at, 8),
        _ => {
            let lvar = byte(body, at, "LVAR")?;
            let len = match lvar {
                0x00..=0xBF => usize::from(lvar),
                0xC0..=0xCF => usize::from(lvar - 0xC0),
                0xD0..=0xDF => usize::from(lvar - 0xD0),
                0xE0..=0xEF => usize::from(lvar - 0xE0),
                0xF0..=0xF4 => 4 * usize::from(lvar - 0xEC),
                0xF5 => 48,
                0xF6 => 64,
                _ => return Err(AppError::BadLvar { lvar, at: at + 12 }),
            };
            (at + 1, len)
        }
    };
    let data =
        body.get(data_start..data_start + len).ok_or(AppError::Truncated { what: "data", at: data_start + 12 })?;
    let lvar = (coding == 0x0D).then(|| body.get(at).copied()).flatten();

    let function = match (dif >> 4) & 0x03 {
        0 => Function::Instantaneous,
        1 => Function::Maximum,
        2 => Function::Minimum,
        _ => Function::ValueDuringErrorState,
    };
    let meaning = meaning(vif, &vifes, plain_text.as_deref());
    let value = value(coding, lvar, vif, &vifes, data, &meaning);
    let record = Record {
        function,
        storage,
        tariff,
        subunit,
        has_dife: difes > 0,
        unit: meaning.unit.to_string(),
        lib_unit: meaning.lib_unit.to_string(),
        quantity: meaning.quantity,
        value,
        dif_vif_raw: body.get(start..header_end).unwrap_or_default().to_vec(),
        raw: body.get(header_end..data_start + len).unwrap_or_default().to_vec(),
    };
    Ok((record, data_start + len))
}

/// What a VIB means: the table entry, with the quantity owned (plain text is the meter's).
struct Meaning {
    quantity: String,
    lib_unit: &'static str,
    unit: &'static str,
    factor: f64,
    /// The VIFE whose orthogonal correction applies (libmbus applies the first VIFE after a primary VIF).
    correction: Option<u8>,
}

fn meaning(vif: u8, vifes: &[u8], plain_text: Option<&str>) -> Meaning {
    let code = vif & 0x7F;
    let correction = if vif & 0x80 != 0 && vif != 0xFD && vif != 0xFB { vifes.first().copied() } else { None };
    let entry = match (vif, code) {
        (0xFD, _) => vifes.first().map(|&e| vif::fd(e)),
        (0xFB, _) => vifes.first().map(|&e| vif::fb(e)),
        (_, 0x7C) => {
            return Meaning {
                quantity: plain_text.unwrap_or_default().to_string(),
                lib_unit: "-",
                unit: "",
                factor: 1.0,
                correction,
            }
        }
        _ => vif::primary(code),
    };
    match entry {
        Some(e) => Meaning {
            quantity: e.quantity.to_string(),
            lib_unit: e.lib_unit,
            unit: e.unit,
            factor: e.factor,
            correction,
        },
        // 7B/7D without their extension byte, or FB/FD without a VIFE: nothing to go by.
        None => Meaning { quantity: String::new(), lib_unit: "", unit: "", factor: 1.0, correction: None },
    }
}

/// The value of a data field of `coding` (DIF bits 0–3).
fn value(coding: u8, lvar: Option<u8>, vif: u8, vifes: &[u8], data: &[u8], meaning: &Meaning) -> RecordValue {
    let code = vif & 0x7F;
    let first_vife = vifes.first().map(|v| v & 0x7F);
    let datetime = code == 0x6D || (vif == 0xFD && matches!(first_vife, Some(0x30 | 0x70)));
    // A real that is NaN or infinite (type H allows both) is no reading: kept raw.
    let number = |raw: f64| {
        let scaled = raw * meaning.factor;
        let v = meaning.correction.map_or(scaled, |c| vif::correct(c, scaled));
        if v.is_finite() {
            RecordValue::Number(v)
        } else {
            RecordValue::Raw(data.to_vec())
        }
    };
    match (coding, data) {
        (0x02, &[a, b]) if code == 0x6C => RecordValue::Date(date_g(a, b)),
        (0x04, &[a, b, c, d]) if datetime => date_f([a, b, c, d]),
        (0x06, &[a, b, c, d, e, f]) if datetime => date_i([a, b, c, d, e, f]),
        (0x05, &[a, b, c, d]) => number(f64::from(f32::from_le_bytes([a, b, c, d]))),
        (0x01..=0x04 | 0x06 | 0x07, _) => number(int(data)),
        (0x09..=0x0C | 0x0E, _) => bcd(data).map_or_else(|| RecordValue::Raw(data.to_vec()), number),
        (0x0D, _) => match lvar {
            Some(0x00..=0xBF) => RecordValue::Text(data.iter().rev().map(|&b| char::from(b)).collect()),
            Some(0xC0..=0xCF) => bcd_digits(data).map_or_else(|| RecordValue::Raw(data.to_vec()), number),
            Some(0xD0..=0xDF) => bcd_digits(data).map_or_else(|| RecordValue::Raw(data.to_vec()), |v| number(-v)),
            _ => RecordValue::Raw(data.to_vec()),
        },
        _ => RecordValue::Raw(data.to_vec()),
    }
}

/// Signed little-endian integer (type B), up to 8 bytes.
fn int(b: &[u8]) -> f64 {
    let neg = b.last().is_some_and(|x| x & 0x80 != 0);
    let mut v: i64 = if neg { -1 } else { 0 };
    for &x in b.iter().rev().take(8) {
        v = (v << 8) | i64::from(x);
    }
    v as f64
}

/// BCD (type A), least significant byte first; `F` as the most significant digit means negative. `None`
/// when any other digit is above 9: annex A leaves A–E to signal an error (meters fill a value during an
/// error state with `DD`), so such a field is not a number (libmbus reads it as one, skipping bad digits).
fn bcd(b: &[u8]) -> Option<f64> {
    let (last, rest) = b.split_last()?;
    let (sign, top) = if last >> 4 == 0x0F { (-1.0, 0) } else { (1.0, last >> 4) };
    let mut v = 0.0;
    for d in std::iter::once(top)
        .chain(std::iter::once(last & 0x0F))
        .chain(rest.iter().rev().flat_map(|x| [x >> 4, x & 0x0F]))
    {
        if d > 9 {
            return None;
        }
        v = v * 10.0 + f64::from(d);
    }
    Some(sign * v)
}

/// BCD digits of a variable-length field (LVAR `C0`–`DF`), least significant byte first; `None` for a digit
/// above 9.
fn bcd_digits(b: &[u8]) -> Option<f64> {
    b.iter().rev().flat_map(|x| [x >> 4, x & 0x0F]).try_fold(0.0, |v, d| (d <= 9).then(|| v * 10.0 + f64::from(d)))
}

/// The year of a type F/G/I date: 7 bits, 0–80 taken as 2000–2080, the rest as 1981–2027 (annex A).
fn year(low: u8, high: u8) -> u32 {
    let y = u32::from(((low & 0xE0) >> 5) | ((high & 0xF0) >> 1));
    if y <= 80 {
        2000 + y
    } else {
        1900 + y
    }
}

/// Type G date (2 bytes).
fn date_g(a: u8, b: u8) -> String {
    format!("{:04}-{:02}-{:02}", year(a, b), b & 0x0F, a & 0x1F)
}

/// Type F date and time (4 bytes); bit 7 of the minute byte flags it invalid.
fn date_f(b: [u8; 4]) -> RecordValue {
    if b[0] & 0x80 != 0 {
        return RecordValue::Raw(b.to_vec());
    }
    RecordValue::DateTime(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:00Z",
        year(b[2], b[3]),
        b[3] & 0x0F,
        b[2] & 0x1F,
        b[1] & 0x1F,
        b[0] & 0x3F
    ))
}

/// Type I date and time (6 bytes); bit 7 of the minute byte flags it invalid.
fn date_i(b: [u8; 6]) -> RecordValue {
    if b[1] & 0x80 != 0 {
        return RecordValue::Raw(b.to_vec());
    }
    RecordValue::DateTime(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        year(b[3], b[4]),
        b[4] & 0x0F,
        b[3] & 0x1F,
        b[2] & 0x1F,
        b[1] & 0x3F,
        b[0] & 0x3F
    ))
}

/// The fixed data structure (CI `73`, EN 13757-3 annex G): id, access number, status, the two counters'
/// medium and unit, two 4-byte counters (BCD, or binary when status bit 0 is set).
fn decode_fixed(data: &[u8]) -> Result<Telegram, AppError> {
    let (h, _) = split::<16>(data).ok_or(AppError::Truncated { what: "fixed data structure", at: data.len() })?;
    let status = h[5];
    let (type1, type2) = (h[6], h[7]);
    // The medium is 4 bits, two from each unit byte's top bits (table G.1).
    let medium = match ((type1 & 0xC0) >> 6) | ((type2 & 0xC0) >> 4) {
        0x0 => Medium::Other,
        0x1 => Medium::Oil,
        0x2 => Medium::Electricity,
        0x3 => Medium::Gas,
        0x4 => Medium::HeatOutlet,
        0x5 => Medium::Steam,
        0x6 => Medium::WarmWater,
        0x7 => Medium::Water,
        0x8 => Medium::HeatCostAllocator,
        code => Medium::Unknown(0xF0 | code),
    };
    let header = FixedHeader {
        id: id_text([h[0], h[1], h[2], h[3]]),
        manufacturer: String::new(),
        version: 0,
        medium,
        access_number: h[4],
        status,
        signature: 0,
    };
    let function = if status & 0x40 != 0 { Function::Stored } else { Function::Actual };
    let records = [(type1, [h[8], h[9], h[10], h[11]]), (type2, [h[12], h[13], h[14], h[15]])]
        .into_iter()
        .map(|(unit_code, counter)| {
            let u = vif::fixed_unit(unit_code);
            let raw = if status & 0x01 != 0 { Some(f64::from(i32::from_le_bytes(counter))) } else { bcd(&counter) };
            Record {
                function,
                storage: u64::from(status & 0x40 != 0),
                tariff: 0,
                subunit: 0,
                has_dife: false,
                unit: u.unit.to_string(),
                lib_unit: u.lib_unit.to_string(),
                quantity: u.quantity.to_string(),
                value: raw.map_or_else(|| RecordValue::Raw(counter.to_vec()), |v| RecordValue::Number(v * u.factor)),
                dif_vif_raw: vec![unit_code],
                raw: counter.to_vec(),
            }
        })
        .collect();
    Ok(Telegram { header, records, more_records_follow: false, manufacturer_data: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kamstrup Multical 601 from the libmbus corpus, first records.
    const KAMSTRUP: &str = "68 F7 F7 68 08 11 72 17 58 85 06 2D 2C 08 04 04 00 00 00 0C 78 17 58 85 06 04 06 E7 91 00 00 04 14 2C DB 00 00";

    fn bytes(s: &str) -> Vec<u8> {
        s.split_whitespace().map(|t| u8::from_str_radix(t, 16).unwrap()).collect()
    }

    #[test]
    fn header_and_records_of_a_heat_meter() {
        let f = bytes(KAMSTRUP);
        // User data after CI 72: header and three records.
        let t = decode_user_data(0x72, f.get(7..).unwrap()).unwrap();
        assert_eq!(t.header.id, "6855817");
        assert_eq!(t.header.manufacturer, "KAM");
        assert_eq!(t.header.medium, Medium::HeatOutlet);
        assert_eq!(t.header.medium.name(), "Heat: Outlet");
        assert_eq!(t.header.access_number, 4);
        assert_eq!(t.records.len(), 3);
        let energy = &t.records[1];
        assert_eq!((energy.unit.as_str(), energy.quantity.as_str()), ("Wh", "Energy"));
        // 0x91E7 = 37351 kWh (VIF 06: 10^3 Wh).
        assert_eq!(energy.value, RecordValue::Number(37_351_000.0));
        assert_eq!(t.records[2].unit, "m3");
        assert_eq!(t.records[2].value, RecordValue::Number(561.08));
    }

    #[test]
    fn hex_nibbles_in_the_id_are_kept() {
        assert_eq!(id_text([0x3E, 0x02, 0x00, 0x05]), "500023E");
        assert_eq!(id_text([0, 0, 0, 0]), "0");
    }

    #[test]
    fn short_and_broken_frames_are_errors_not_panics() {
        for n in 0..10 {
            let f = vec![0x68; n];
            assert!(decode_long_frame(&f).is_err());
        }
        assert_eq!(decode_long_frame(&bytes("68 04 04 68 08 01 70 08 81 16")), Err(AppError::Application(Some(8))));
        assert_eq!(
            decode_user_data(0x72, &bytes("78 56 34 12 24 40 01 07 55 00 00 00 8B 60 04 37")),
            Err(AppError::Truncated { what: "data", at: 15 })
        );
    }

    #[test]
    fn special_dif_keeps_manufacturer_data_and_more_records_follow() {
        let t = decode_user_data(0x72, &bytes("78 56 34 12 24 40 01 07 55 00 00 00 2F 1F 01 02 03")).unwrap();
        assert!(t.more_records_follow);
        assert_eq!(t.manufacturer_data, Some(vec![1, 2, 3]));
        assert!(t.records.is_empty());
    }

    #[test]
    fn dates_and_plain_text_vifs() {
        // 42 6C: storage 1, type G date 5F 1C: day 31, month 12, year 0b0001010 = 2010.
        let t = decode_user_data(
            0x72,
            &bytes("78 56 34 12 24 40 01 07 55 00 00 00 42 6C 5F 1C 02 FC 03 48 52 25 74 D4 11"),
        )
        .unwrap();
        assert_eq!(t.records[0].value, RecordValue::Date("2010-12-31".into()));
        assert_eq!(t.records[0].storage, 1);
        assert_eq!(t.records[1].quantity, "%RH");
        assert_eq!(t.records[1].value, RecordValue::Number(45.64));
    }

    /// User data of CI 72: a header (id 12345678, manufacturer `ELS` = 0x1593, version 1, water, access 0x55,
    /// status 0, signature 0) followed by `records`.
    fn with_header(records: &str) -> Vec<u8> {
        bytes(&format!("78 56 34 12 93 15 01 07 55 00 00 00 {records}"))
    }

    fn one(records: &str) -> Record {
        let t = decode_user_data(0x72, &with_header(records)).unwrap();
        assert_eq!(t.records.len(), 1, "{t:?}");
        t.records.into_iter().next().unwrap()
    }

    #[test]
    fn integers_are_signed_and_bcd_carries_its_sign_in_the_top_digit() {
        // 02 13: 16-bit integer volume in litres; FF FF = -1 l.
        assert_eq!(one("02 13 FF FF").value, RecordValue::Number(-0.001));
        // 0C 13: 8-digit BCD, 00 00 00 00 12 → 12 l.
        assert_eq!(one("0C 13 12 00 00 00").value, RecordValue::Number(0.012));
        // 0A 5A: 4-digit BCD flow temperature in 0.1 degC, top digit F = negative: -12.3 degC.
        let r = one("0A 5A 23 F1");
        assert_eq!((r.unit.as_str(), r.quantity.as_str()), ("degC", "Flow temperature"));
        assert_eq!(r.value, RecordValue::Number(-12.3));
        // A digit A-E is an error marker, not a number: raw.
        assert_eq!(one("0A 5A 2D 01").value, RecordValue::Raw(vec![0x2D, 0x01]));
        // 05 2B: 32-bit real power in W; NaN is no reading.
        assert_eq!(one("05 2B 00 00 C0 3F").value, RecordValue::Number(1.5));
        assert_eq!(one("05 2B 00 00 C0 7F").value, RecordValue::Raw(bytes("00 00 C0 7F")));
        // 07 03: 64-bit integer energy in Wh.
        assert_eq!(one("07 03 01 00 00 00 00 00 00 80").value, RecordValue::Number(-9_223_372_036_854_775_807.0));
    }

    #[test]
    fn dife_chain_gives_storage_tariff_and_subunit() {
        // DIF 84 (storage bit 0), DIFE C1 (ext, subunit 1, tariff 0, storage 1), DIFE 23 (tariff 2, storage 3).
        let r = one("84 C1 23 03 0A 00 00 00");
        assert_eq!(r.storage, 1 << 1 | 3 << 5);
        assert_eq!(r.tariff, 2 << 2);
        assert_eq!(r.subunit, 1);
        assert!(r.has_dife);
        assert_eq!(r.dif_vif_raw, bytes("84 C1 23 03"));
        assert_eq!(r.raw, bytes("0A 00 00 00"));
        // The function field: maximum, minimum, value during error state.
        assert_eq!(one("12 2B 10 00").function, Function::Maximum);
        assert_eq!(one("22 2B 10 00").function, Function::Minimum);
        assert_eq!(one("32 2B 10 00").function, Function::ValueDuringErrorState);
    }

    #[test]
    fn extension_tables_and_orthogonal_corrections() {
        // FD 48: voltage in 0.1 V (0x08E8 = 2280); FD 59: current in 1 mA.
        let v = one("02 FD 48 E8 08");
        assert_eq!(
            (v.unit.as_str(), v.quantity.as_str(), v.value.clone()),
            ("V", "Voltage", RecordValue::Number(228.0))
        );
        let a = one("02 FD 59 10 00");
        assert_eq!((a.unit.as_str(), a.value), ("A", RecordValue::Number(0.016)));
        // FD 17 error flags: a dimensionless number.
        assert_eq!(one("01 FD 17 04").quantity, "Error flags");
        // FB 01: energy in MWh.
        assert_eq!(one("01 FB 01 02").value, RecordValue::Number(2e6));
        // 83 74: energy in Wh, VIFE 74 = x10^-2.
        assert_eq!(one("01 83 74 64").value, RecordValue::Number(1.0));
        // 83 7A: additive correction +10^-1.
        assert_eq!(one("01 83 7A 02").value, RecordValue::Number(2.1));
        // 43: volume flow in 10^-4 m3/min, converted to m3/h.
        let f = one("01 43 0A");
        assert_eq!(f.unit, "m3/h");
        let RecordValue::Number(x) = f.value else { panic!() };
        assert!((x - 0.06).abs() < 1e-12);
    }

    #[test]
    fn variable_length_data_text_bcd_and_binary() {
        // LVAR 03: ASCII sent last character first.
        assert_eq!(one("0D 78 03 43 42 41").value, RecordValue::Text("ABC".into()));
        // LVAR C2: positive BCD, 2 bytes; LVAR D2: negative.
        assert_eq!(one("0D 13 C2 34 12").value, RecordValue::Number(1.234));
        assert_eq!(one("0D 13 D2 34 12").value, RecordValue::Number(-1.234));
        // LVAR E2: binary, kept raw.
        assert_eq!(one("0D FD 17 E2 01 02").value, RecordValue::Raw(vec![1, 2]));
        // LVAR F7 is reserved.
        assert!(matches!(
            decode_user_data(0x72, &with_header("0D 13 F7 00")),
            Err(AppError::BadLvar { lvar: 0xF7, .. })
        ));
    }

    #[test]
    fn date_and_time_types() {
        // 04 6D type F: 0C 15 A8 22 → minute 12, hour 21, day 8, month 2, year 0b0010101 = 21.
        assert_eq!(one("04 6D 0C 15 A8 22").value, RecordValue::DateTime("2021-02-08T21:12:00Z".into()));
        // 06 6D type I: seconds too.
        assert_eq!(one("06 6D 1E 0C 15 A8 22 00").value, RecordValue::DateTime("2021-02-08T21:12:30Z".into()));
        // IV bit set: raw.
        assert_eq!(one("04 6D 8C 15 A8 22").value, RecordValue::Raw(bytes("8C 15 A8 22")));
    }

    #[test]
    fn limits_and_envelope_errors() {
        let dife = format!("8B {} 0B 13 00 00 00", "80 ".repeat(10));
        assert_eq!(
            decode_user_data(0x72, &with_header(&dife)),
            Err(AppError::TooManyExtensions { what: "DIFEs", at: 12 })
        );
        let vife = format!("0B 93 {} 00 00 00 00", "80 ".repeat(10));
        assert!(matches!(
            decode_user_data(0x72, &with_header(&vife)),
            Err(AppError::TooManyExtensions { what: "VIFEs", .. })
        ));
        assert!(matches!(decode_user_data(0x72, &with_header("7F")), Err(AppError::BadSpecialDif { dif: 0x7F, .. })));
        assert_eq!(decode_user_data(0x76, &[]), Err(AppError::UnsupportedCi(0x76)));
        assert_eq!(
            decode_long_frame(&bytes("68 04 04 68 08 01 70 08 80 16")),
            Err(AppError::BadChecksum { expected: 0x81, actual: 0x80 })
        );
        assert!(matches!(decode_long_frame(&bytes("68 04 05 68 08 01 70 08 81 16")), Err(AppError::Frame(_))));
        assert!(matches!(decode_long_frame(&bytes("68 04 04 68 08 01 70 08 81 15")), Err(AppError::Frame(_))));
        assert!(matches!(decode_long_frame(&bytes("68 04 04 68 08 01 70 08 81 16 E5")), Err(AppError::Frame(_))));
    }

    #[test]
    fn fixed_data_structure() {
        // CI 73: id 12345678, access 0A, status 00, units E9 (l, medium bits 11) 7E, counters BCD 1 and 135.
        let t = decode_long_frame(&bytes("68 13 13 68 08 05 73 78 56 34 12 0A 00 E9 7E 01 00 00 00 35 01 00 00 3C 16"))
            .unwrap();
        assert_eq!(t.header.id, "12345678");
        assert_eq!(t.header.medium, Medium::Water);
        assert_eq!(t.records[0].function, Function::Actual);
        assert_eq!((t.records[0].unit.as_str(), t.records[0].value.clone()), ("m3", RecordValue::Number(0.001)));
        assert_eq!(t.records[1].value, RecordValue::Number(135.0));
    }

    #[test]
    fn medium_codes_round_trip() {
        for code in 0..=u8::MAX {
            assert_eq!(u8::from(Medium::from(code)), code);
        }
        assert_eq!(Medium::from(0x16).name(), "Cold water");
        assert_eq!(Medium::from(0x22).name(), "Reserved");
        assert_eq!(Medium::from(0x40).name(), "Unknown medium (0x40)");
    }
}

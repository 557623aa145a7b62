//! Simulated wired M-Bus slaves (EN 13757-2 link layer, EN 13757-3 variable data structure) on one line.
//!
//! This module owns the slave side of an M-Bus line: [`MbusMeterSpec`] describes a meter (primary and
//! secondary address, records with value models, how many RSP_UD telegrams its read-out takes),
//! [`MbusLine`] holds the meters of one line and answers master frames without I/O
//! ([`MbusLine::handle_frame`]), and the [`server`] submodule serves a line over TCP, a serial port or a pty
//! with seeded fault injection ([`MbusFaults`]).
//!
//! Behaviour of the line (what a master sees):
//! - SND_NKE to a primary address: `E5`; the meter's FCB and telegram cursor are reset and it is
//!   deselected. To 253 it resets the selected meter, to 254 every meter (each answers `E5`), to 255
//!   every meter without a reply.
//! - Selection (SND_UD, CI `52`, to 253): every meter whose secondary address matches the mask is
//!   selected, every other one deselected. One match answers `E5`; several answer at once, which the
//!   master receives as garbled bytes (a collision, see [`ami_link::mbus::is_collision`]); none is silence.
//! - REQ_UD2 to a primary address, to 253 (the selected meter) or 254 (every meter): RSP_UD (C `08`,
//!   CI `72`, fixed header, then records). A new FCB advances to the next telegram of a multi-telegram
//!   read-out (all but the last end with DIF `1F`), a repeated FCB re-sends the same telegram byte for
//!   byte; after the last telegram the next new request starts over with fresh values.
//! - Other SND_UD frames addressed to a meter are acknowledged with `E5` (CI `50`, application reset, also
//!   resets the telegram cursor); everything else is silence.
//!
//! Values evolve with the line's clock ([`MbusLine::advance`], [`MbusLine::catch_up`]): counters only go
//! up, "around" values wander within their spread. Record values are raw data-field numbers, before the
//! VIF's exponent (energy `04 06` counts kWh, volume `04 13` litres, flow temperature `02 59` 0.01 °C).
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use ami_link::mbus::{Frame, ACK};
//! use ami_sim::mbus::{MbusLine, MbusMeterSpec};
//!
//! let mut line = MbusLine::with_meters([
//!     MbusMeterSpec::heat_meter(1, 12_345_678),
//!     MbusMeterSpec { telegrams: 2, ..MbusMeterSpec::water_meter(2, 12_345_679) },
//! ])
//! .unwrap();
//! assert_eq!(line.handle_frame(&Frame::snd_nke(2)), Some(vec![ACK]));
//! let rsp_ud = line.handle_frame(&Frame::req_ud2(2, true)).unwrap();
//! assert_eq!(rsp_ud[0], 0x68);
//! // Servers share the line: `serve_mbus_tcp(listener, Arc::new(Mutex::new(line)), MbusFaults::default())`.
//! let _shared = Arc::new(Mutex::new(line));
//! ```
//!
//! Panic contract: no frame and no byte sequence panics anything here.

pub mod server;

use std::time::Duration;

use ami_link::mbus::{control, Address, Frame, ACK};
use ami_protocols::mbus::client::{SecondaryId, SecondaryMask};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

pub use server::{
    serve_mbus, serve_mbus_serial, serve_mbus_stream, serve_mbus_tcp, spawn_mbus_tcp, MbusFaults, MbusSession,
    SharedMbusLine,
};

/// CI of a secondary-address selection (EN 13757-3 table 2).
const CI_SELECTION: u8 = 0x52;
/// CI of an application reset.
const CI_APPLICATION_RESET: u8 = 0x50;
/// CI of an RSP_UD with the long (12-byte) header.
const CI_RSP_UD_LONG: u8 = 0x72;
/// DIF "more records follow in the next telegram".
const DIF_MORE_RECORDS: u8 = 0x1F;
/// Fixed header bytes of a CI `72` telegram.
const HEADER_LEN: usize = 12;
/// Largest id with 8 decimal digits.
const MAX_ID: u32 = 99_999_999;

/// Why a meter specification was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MbusSimError {
    /// The id has more than 8 decimal digits.
    #[error("id {0} has more than 8 decimal digits")]
    BadId(u32),
    /// Primary addresses are 0..=250 (251..=255 are reserved or special).
    #[error("primary address {0} is not 0..=250")]
    BadPrimary(u8),
    /// The manufacturer code is not three letters A–Z.
    #[error("manufacturer code {0:?} is not three letters A-Z")]
    BadManufacturer(String),
    /// A record's DIF/VIF bytes are empty, cut short, special (`0F`/`1F`/`2F`/`7F`) or a plain-text VIF.
    #[error("record {index}: bad DIF/VIF bytes {bytes:02X?}: {why}")]
    BadDifVif {
        /// Record index in the spec.
        index: usize,
        /// The bytes given.
        bytes: Vec<u8>,
        /// What is wrong.
        why: &'static str,
    },
    /// A DIF data field this simulator cannot encode (variable length, selection for read-out, special).
    #[error("DIF {0:02X}: its data field code is not supported (int, BCD or real32 only)")]
    UnsupportedDataField(u8),
    /// One telegram's records do not fit in a long frame (252 data bytes).
    #[error("telegram {telegram} would carry {len} data bytes (at most 252); use more telegrams")]
    TelegramTooLong {
        /// Telegram index.
        telegram: usize,
        /// Data bytes it would carry.
        len: usize,
    },
}

/// How a record's value evolves with the line's clock. Numbers are raw data-field values (before the
/// VIF's exponent).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueModel {
    /// A counter: `start + per_hour × hours`; never goes down (a negative `per_hour` counts as 0).
    Counter {
        /// Value at clock 0.
        start: f64,
        /// Growth per hour of the line clock.
        per_hour: f64,
    },
    /// A measurement wandering uniformly within `nominal ± spread`, fresh at every telegram.
    Around {
        /// Centre.
        nominal: f64,
        /// Half-width.
        spread: f64,
    },
    /// Always the same value.
    Fixed(f64),
}

impl ValueModel {
    /// The value at `clock` (`rng` drives [`ValueModel::Around`]). Non-finite parameters give 0.
    fn at(&self, clock: Duration, rng: &mut StdRng) -> f64 {
        let finite = |v: f64| if v.is_finite() { v } else { 0.0 };
        match *self {
            ValueModel::Counter { start, per_hour } => {
                finite(start) + finite(per_hour).max(0.0) * clock.as_secs_f64() / 3600.0
            }
            ValueModel::Around { nominal, spread } => {
                let spread = finite(spread).abs();
                let offset = if spread > 0.0 { rng.gen_range(-spread..=spread) } else { 0.0 };
                finite(nominal) + offset
            }
            ValueModel::Fixed(v) => finite(v),
        }
    }
}

/// One data record of a simulated meter: its DIF, DIFEs, VIF and VIFEs as sent, and how its value evolves.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordSpec {
    /// DIF, DIFEs, VIF, VIFEs (e.g. `[0x04, 0x06]` energy kWh as a 32-bit integer, `[0x44, 0x06]` the same
    /// at storage 1, `[0x0C, 0x78]` fabrication number as BCD8). The DIF's data field code decides the
    /// encoding: integers of 8/16/24/32/48/64 bits, BCD of 2/4/6/8/12 digits, or a 32-bit real.
    pub dif_vif: Vec<u8>,
    /// Value model (raw data-field numbers).
    pub value: ValueModel,
}

impl RecordSpec {
    /// A counter record.
    pub fn counter(dif_vif: impl Into<Vec<u8>>, start: f64, per_hour: f64) -> Self {
        Self { dif_vif: dif_vif.into(), value: ValueModel::Counter { start, per_hour } }
    }

    /// A record wandering around `nominal`.
    pub fn around(dif_vif: impl Into<Vec<u8>>, nominal: f64, spread: f64) -> Self {
        Self { dif_vif: dif_vif.into(), value: ValueModel::Around { nominal, spread } }
    }

    /// A record with a fixed value.
    pub fn fixed(dif_vif: impl Into<Vec<u8>>, value: f64) -> Self {
        Self { dif_vif: dif_vif.into(), value: ValueModel::Fixed(value) }
    }

    /// Checks the DIF/VIF chain: one DIF (not special) with its DIFEs, one VIF (not plain text) with its
    /// VIFEs, nothing after; returns the DIF.
    fn check(&self, index: usize) -> Result<u8, MbusSimError> {
        let bad = |why| MbusSimError::BadDifVif { index, bytes: self.dif_vif.clone(), why };
        let bytes = &self.dif_vif;
        let dif = *bytes.first().ok_or_else(|| bad("empty"))?;
        if dif & 0x0F == 0x0F {
            return Err(bad("special DIF (manufacturer data, more records follow, idle filler)"));
        }
        data_len(dif)?;
        let mut at = 1;
        let mut ext = dif & 0x80 != 0;
        while ext {
            let b = *bytes.get(at).ok_or_else(|| bad("DIFE chain cut short"))?;
            ext = b & 0x80 != 0;
            at += 1;
        }
        let vif = *bytes.get(at).ok_or_else(|| bad("no VIF"))?;
        if vif & 0x7F == 0x7C {
            return Err(bad("plain-text VIF is not supported"));
        }
        at += 1;
        let mut ext = vif & 0x80 != 0;
        while ext {
            let b = *bytes.get(at).ok_or_else(|| bad("VIFE chain cut short"))?;
            ext = b & 0x80 != 0;
            at += 1;
        }
        if at != bytes.len() {
            return Err(bad("bytes after the last VIFE"));
        }
        Ok(dif)
    }
}

/// Data-field length of a DIF (EN 13757-3 table 5), for the codes this simulator encodes.
fn data_len(dif: u8) -> Result<usize, MbusSimError> {
    match dif & 0x0F {
        0x0 => Ok(0),
        0x1 | 0x9 => Ok(1),
        0x2 | 0xA => Ok(2),
        0x3 | 0xB => Ok(3),
        0x4 | 0x5 | 0xC => Ok(4),
        0x6 | 0xE => Ok(6),
        0x7 => Ok(8),
        _ => Err(MbusSimError::UnsupportedDataField(dif)),
    }
}

/// Encodes `value` as the data field of `dif` (EN 13757-3 table 5): integers little-endian two's
/// complement (rounded, saturated to the field), BCD least significant byte first (rounded, saturated;
/// a negative value has the sign nibble `F` as its top digit), real32 IEEE 754 little-endian.
/// Non-finite values are sent as 0.
///
/// # Errors
/// [`MbusSimError::UnsupportedDataField`] for variable-length, selection-for-read-out and special codes.
pub fn encode_data_field(dif: u8, value: f64) -> Result<Vec<u8>, MbusSimError> {
    let len = data_len(dif)?;
    let value = if value.is_finite() { value } else { 0.0 };
    let code = dif & 0x0F;
    if code == 0x5 {
        #[allow(clippy::cast_possible_truncation)] // f32 is the wire format
        return Ok((value as f32).to_le_bytes().to_vec());
    }
    if code >= 0x9 {
        let digits = u32::try_from(len * 2).unwrap_or(12);
        let negative = value < 0.0;
        let magnitude_digits = if negative { digits - 1 } else { digits };
        let max = 10f64.powi(i32::try_from(magnitude_digits).unwrap_or(12)) - 1.0;
        // Saturated to at most 12 digits, so the cast is exact.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let mut n = value.abs().round().min(max) as u64;
        let mut out = Vec::with_capacity(len);
        for i in 0..len {
            let lo = (n % 10) as u8;
            n /= 10;
            let mut hi = (n % 10) as u8;
            n /= 10;
            if negative && i + 1 == len {
                hi = 0xF;
            }
            out.push(hi << 4 | lo);
        }
        return Ok(out);
    }
    let bits = len * 8;
    if bits == 0 {
        return Ok(Vec::new());
    }
    let max = if bits >= 64 { i64::MAX as f64 } else { ((1i64 << (bits - 1)) - 1) as f64 };
    let min = if bits >= 64 { i64::MIN as f64 } else { -((1i64 << (bits - 1)) as f64) };
    // Clamped into the field's range first.
    #[allow(clippy::cast_possible_truncation)]
    let n = value.round().clamp(min, max) as i64;
    Ok(n.to_le_bytes().get(..len).unwrap_or_default().to_vec())
}

/// Packs a three-letter manufacturer code (EN 13757-3 / DLMS FLAG id, `KAM`) into its 15-bit form.
///
/// # Errors
/// [`MbusSimError::BadManufacturer`] unless exactly three ASCII letters.
pub fn pack_manufacturer(code: &str) -> Result<u16, MbusSimError> {
    let bad = || MbusSimError::BadManufacturer(code.to_owned());
    let bytes = code.as_bytes();
    if bytes.len() != 3 || !bytes.iter().all(u8::is_ascii_alphabetic) {
        return Err(bad());
    }
    Ok(bytes.iter().fold(0u16, |acc, b| (acc << 5) | u16::from(b.to_ascii_uppercase() - b'A' + 1)))
}

/// A simulated M-Bus meter: addresses, identity and records.
#[derive(Debug, Clone, PartialEq)]
pub struct MbusMeterSpec {
    /// Primary address 0..=250 (0 = unconfigured; several meters may share one, they then collide).
    pub primary: u8,
    /// Identification number, up to 8 decimal digits (sent as BCD: 12345678 is `78 56 34 12`).
    pub id: u32,
    /// Manufacturer code in its 15-bit form (see [`pack_manufacturer`]).
    pub manufacturer: u16,
    /// Version (generation).
    pub version: u8,
    /// Medium (device type: `04` heat, `07` water, `02` electricity, …).
    pub medium: u8,
    /// The records, in telegram order.
    pub records: Vec<RecordSpec>,
    /// Telegrams of one read-out (0 counts as 1): the records are split evenly, every telegram but the last
    /// ends with DIF `1F`.
    pub telegrams: usize,
}

impl MbusMeterSpec {
    /// A heat meter like a Kamstrup Multical (`KAM`, medium heat, one telegram): energy (kWh counter),
    /// volume (0.01 m³ counter), power (100 W), flow (l/h), flow and return temperature (0.01 °C),
    /// temperature difference (0.01 K), operating hours (counter), energy at storage 1 (last billing date,
    /// DIF storage bit) and the fabrication number (BCD8).
    pub fn heat_meter(primary: u8, id: u32) -> Self {
        Self {
            primary,
            id,
            manufacturer: 0x2C2D, // KAM
            version: 0x34,
            medium: 0x04,
            records: vec![
                RecordSpec::counter([0x04, 0x06], 12_345.0, 2.5),
                RecordSpec::counter([0x04, 0x14], 98_765.0, 6.5),
                RecordSpec::around([0x04, 0x2D], 25.0, 5.0),
                RecordSpec::around([0x04, 0x3B], 650.0, 50.0),
                RecordSpec::around([0x02, 0x59], 7_000.0, 200.0),
                RecordSpec::around([0x02, 0x5D], 4_000.0, 200.0),
                RecordSpec::around([0x02, 0x61], 3_000.0, 100.0),
                RecordSpec::counter([0x04, 0x22], 20_000.0, 1.0),
                RecordSpec::fixed([0x44, 0x06], 11_000.0),
                RecordSpec::fixed([0x0C, 0x78], f64::from(id % 100_000_000)),
            ],
            telegrams: 1,
        }
    }

    /// A water meter (`ZRI`, medium water, one telegram): volume (litre counter), volume at storage 1
    /// (litres at the last billing date), flow (l/h), operating hours and the fabrication number.
    pub fn water_meter(primary: u8, id: u32) -> Self {
        Self {
            primary,
            id,
            manufacturer: 0x6A49, // ZRI
            version: 0x01,
            medium: 0x07,
            records: vec![
                RecordSpec::counter([0x04, 0x13], 123_456.0, 12.0),
                RecordSpec::fixed([0x44, 0x13], 120_000.0),
                RecordSpec::around([0x02, 0x3B], 80.0, 60.0),
                RecordSpec::counter([0x04, 0x22], 15_000.0, 1.0),
                RecordSpec::fixed([0x0C, 0x78], f64::from(id % 100_000_000)),
            ],
            telegrams: 1,
        }
    }

    /// An electricity meter (`ABB`, medium electricity, one telegram): active energy import (0.01 kWh
    /// counter, BCD8), the same for tariffs 1 and 2 (DIFE), power (W), voltage (0.1 V, FD table),
    /// current (mA, FD table) and the fabrication number.
    pub fn electricity_meter(primary: u8, id: u32) -> Self {
        Self {
            primary,
            id,
            manufacturer: 0x0442, // ABB
            version: 0x20,
            medium: 0x02,
            records: vec![
                RecordSpec::counter([0x0C, 0x04], 4_567_800.0, 150.0),
                RecordSpec::counter([0x8C, 0x10, 0x04], 3_000_000.0, 100.0),
                RecordSpec::counter([0x8C, 0x20, 0x04], 1_567_800.0, 50.0),
                RecordSpec::around([0x04, 0x2B], 1_500.0, 500.0),
                RecordSpec::around([0x02, 0xFD, 0x48], 2_300.0, 50.0),
                RecordSpec::around([0x04, 0xFD, 0x59], 6_500.0, 2_000.0),
                RecordSpec::fixed([0x0C, 0x78], f64::from(id % 100_000_000)),
            ],
            telegrams: 1,
        }
    }

    /// The same meter with the three-letter manufacturer code `code` (`"KAM"`).
    ///
    /// # Errors
    /// [`MbusSimError::BadManufacturer`] unless exactly three ASCII letters.
    pub fn with_manufacturer(self, code: &str) -> Result<Self, MbusSimError> {
        Ok(Self { manufacturer: pack_manufacturer(code)?, ..self })
    }

    /// The secondary address this meter answers to.
    ///
    /// # Errors
    /// [`MbusSimError::BadId`] for more than 8 digits.
    pub fn secondary_id(&self) -> Result<SecondaryId, MbusSimError> {
        Ok(SecondaryId {
            id_bcd: id_bcd(self.id)?,
            manufacturer: self.manufacturer,
            version: self.version,
            medium: self.medium,
        })
    }

    /// Checks addresses, id, records and telegram sizes (with the largest data fields).
    fn check(&self) -> Result<Vec<u8>, MbusSimError> {
        if self.primary > Address::MAX_PRIMARY {
            return Err(MbusSimError::BadPrimary(self.primary));
        }
        id_bcd(self.id)?;
        let difs = self.records.iter().enumerate().map(|(i, r)| r.check(i)).collect::<Result<Vec<u8>, _>>()?;
        for (telegram, range) in split(self.records.len(), self.telegrams).into_iter().enumerate() {
            let records: usize = self
                .records
                .get(range)
                .unwrap_or_default()
                .iter()
                .map(|r| r.dif_vif.len() + r.dif_vif.first().map_or(0, |d| data_len(*d).unwrap_or(0)))
                .sum();
            let len = HEADER_LEN + records + 1;
            if len > ami_link::mbus::MAX_DATA_LEN {
                return Err(MbusSimError::TelegramTooLong { telegram, len });
            }
        }
        Ok(difs)
    }
}

/// The BCD bytes (least significant first) of an id with up to 8 decimal digits.
fn id_bcd(id: u32) -> Result<[u8; 4], MbusSimError> {
    if id > MAX_ID {
        return Err(MbusSimError::BadId(id));
    }
    let mut n = id;
    let mut out = [0u8; 4];
    for b in &mut out {
        let lo = (n % 10) as u8;
        let hi = (n / 10 % 10) as u8;
        *b = hi << 4 | lo;
        n /= 100;
    }
    Ok(out)
}

/// Splits `n` records over `parts` telegrams (at least one, each but possibly the last non-empty).
fn split(n: usize, parts: usize) -> Vec<std::ops::Range<usize>> {
    let parts = parts.max(1);
    let per = n.div_ceil(parts).max(1);
    let mut out: Vec<std::ops::Range<usize>> = (0..parts).map(|i| (i * per).min(n)..((i + 1) * per).min(n)).collect();
    // More telegrams than records: the surplus ones are empty but still sent (a meter may well do that).
    if out.is_empty() {
        out.push(0..0);
    }
    out
}

/// Counters of an [`MbusLine`] and the servers sharing it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MbusStats {
    /// Well-formed frames handled by the line.
    pub frames: u64,
    /// Frames answered by the line (before fault injection), collisions included.
    pub replies: u64,
    /// Of those, collisions (several meters answering at once).
    pub collisions: u64,
    /// REQ_UD2 taken as retries (the same telegram sent again).
    pub repeats: u64,
    /// Replies dropped by fault injection.
    pub dropped: u64,
    /// Replies corrupted by fault injection.
    pub corrupted: u64,
    /// Bytes dropped by server deframers to resynchronise (garbage, stale partial frames).
    pub garbage_bytes: u64,
    /// Connections accepted or ports opened by servers.
    pub connections: u64,
}

/// One meter on the line, with its link state.
#[derive(Debug, Clone)]
struct MbusMeter {
    spec: MbusMeterSpec,
    id: SecondaryId,
    difs: Vec<u8>,
    fcb: ami_link::mbus::SlaveFcb,
    /// Telegram last sent.
    cursor: Option<usize>,
    /// Bytes of the telegram last sent, for a retry.
    last: Option<Vec<u8>>,
    access: u8,
    selected: bool,
    rng: StdRng,
}

impl MbusMeter {
    fn reset_link(&mut self) {
        self.fcb.reset();
        self.cursor = None;
        self.last = None;
        self.selected = false;
    }

    /// The reply to a REQ_UD2 with control field `c` at `clock`; `repeat` tells whether it was a retry.
    fn req_ud2(&mut self, c: u8, clock: Duration) -> (Vec<u8>, bool) {
        let new = self.fcb.is_new(c);
        if !new {
            if let Some(last) = &self.last {
                return (last.clone(), true);
            }
        }
        let parts = split(self.spec.records.len(), self.spec.telegrams);
        let index = match self.cursor {
            Some(i) if i + 1 < parts.len() => i + 1,
            _ => 0,
        };
        self.cursor = Some(index);
        self.access = self.access.wrapping_add(1);
        let mut data = self.id.to_bytes().to_vec();
        data.extend_from_slice(&[self.access, 0x00, 0x00, 0x00]);
        let range = parts.get(index).cloned().unwrap_or(0..0);
        for (k, record) in self.spec.records.get(range.clone()).unwrap_or_default().iter().enumerate() {
            let dif = self.difs.get(range.start + k).copied().unwrap_or(0);
            let value = record.value.at(clock, &mut self.rng);
            data.extend_from_slice(&record.dif_vif);
            // invariant: the DIF was checked when the meter was added.
            data.extend(encode_data_field(dif, value).unwrap_or_default());
        }
        if index + 1 < parts.len() {
            data.push(DIF_MORE_RECORDS);
        }
        let frame = Frame::Long { c: control::RSP_UD, a: self.spec.primary, ci: CI_RSP_UD_LONG, data };
        // invariant: the telegram size was checked when the meter was added.
        let bytes = frame.encode().unwrap_or_default();
        self.last = Some(bytes.clone());
        (bytes, false)
    }
}

/// The meters of one M-Bus line and their link state; answers master frames without I/O.
#[derive(Debug, Clone)]
pub struct MbusLine {
    meters: Vec<MbusMeter>,
    clock: Duration,
    wall: Option<Instant>,
    stats: MbusStats,
}

impl Default for MbusLine {
    fn default() -> Self {
        Self::new()
    }
}

impl MbusLine {
    /// A line without meters, clock at 0.
    pub fn new() -> Self {
        Self { meters: Vec::new(), clock: Duration::ZERO, wall: None, stats: MbusStats::default() }
    }

    /// A line with `specs`.
    ///
    /// # Errors
    /// As [`MbusLine::add`].
    pub fn with_meters(specs: impl IntoIterator<Item = MbusMeterSpec>) -> Result<Self, MbusSimError> {
        let mut line = Self::new();
        for spec in specs {
            line.add(spec)?;
        }
        Ok(line)
    }

    /// Adds a meter (link reset, not selected).
    ///
    /// # Errors
    /// A bad primary address or id, a record that cannot be encoded, a telegram longer than a long frame.
    pub fn add(&mut self, spec: MbusMeterSpec) -> Result<(), MbusSimError> {
        let difs = spec.check()?;
        let id = spec.secondary_id()?;
        let seed = u64::from(spec.id) << 8 | u64::from(spec.primary);
        self.meters.push(MbusMeter {
            spec,
            id,
            difs,
            fcb: ami_link::mbus::SlaveFcb::default(),
            cursor: None,
            last: None,
            access: 0,
            selected: false,
            rng: StdRng::seed_from_u64(seed),
        });
        Ok(())
    }

    /// Removes the meter with id `id` (it then stays silent, like a dead meter); returns its spec.
    pub fn remove(&mut self, id: u32) -> Option<MbusMeterSpec> {
        let at = self.meters.iter().position(|m| m.spec.id == id)?;
        Some(self.meters.remove(at).spec)
    }

    /// Number of meters.
    pub fn len(&self) -> usize {
        self.meters.len()
    }

    /// Whether the line has no meters.
    pub fn is_empty(&self) -> bool {
        self.meters.is_empty()
    }

    /// The meters' specifications, in the order added.
    pub fn specs(&self) -> impl Iterator<Item = &MbusMeterSpec> {
        self.meters.iter().map(|m| &m.spec)
    }

    /// Ids (as numbers) of the meters currently selected by secondary address.
    pub fn selected(&self) -> Vec<u32> {
        self.meters.iter().filter(|m| m.selected).map(|m| m.spec.id).collect()
    }

    /// The line's clock.
    pub fn clock(&self) -> Duration {
        self.clock
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&mut self, by: Duration) {
        self.clock = self.clock.saturating_add(by);
    }

    /// Moves the clock forward by the time passed since the previous `catch_up` (the first call only
    /// remembers `now`). Servers call this before every frame, so several servers sharing the line agree.
    pub fn catch_up(&mut self, now: Instant) {
        if let Some(wall) = self.wall {
            self.advance(now.saturating_duration_since(wall));
        }
        if self.wall.is_none_or(|w| now > w) {
            self.wall = Some(now);
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> MbusStats {
        self.stats.clone()
    }

    /// Counters kept by the servers.
    pub(crate) fn stats_mut(&mut self) -> &mut MbusStats {
        &mut self.stats
    }

    /// The current value of record `record` of the meter with id `id` as the next telegram would compute it
    /// (raw data-field number; a [`ValueModel::Around`] gives its nominal).
    pub fn value(&self, id: u32, record: usize) -> Option<f64> {
        let meter = self.meters.iter().find(|m| m.spec.id == id)?;
        let spec = meter.spec.records.get(record)?;
        match spec.value {
            ValueModel::Around { nominal, .. } => Some(nominal),
            model => Some(model.at(self.clock, &mut StdRng::seed_from_u64(0))),
        }
    }

    /// Parses `request` as one frame and answers it (see [`MbusLine::handle_frame`]); `None` for bytes that
    /// are not exactly one frame.
    pub fn handle_bytes(&mut self, request: &[u8]) -> Option<Vec<u8>> {
        let frame = Frame::parse(request).ok()?;
        self.handle_frame(&frame)
    }

    /// Answers one master frame: the reply bytes, or `None` for silence (see the module doc).
    pub fn handle_frame(&mut self, frame: &Frame) -> Option<Vec<u8>> {
        self.stats.frames = self.stats.frames.saturating_add(1);
        let clock = self.clock;
        let mut replies: Vec<Vec<u8>> = Vec::new();
        let mut repeats = 0u64;
        match frame {
            Frame::Short { c, a } if *c & control::FUNCTION_MASK == control::SND_NKE => {
                for m in self.meters.iter_mut().filter(|m| addressed(m, *a)) {
                    m.reset_link();
                    replies.push(vec![ACK]);
                }
            }
            Frame::Short { c, a } if control::is_req_ud2(*c) => {
                for m in self.meters.iter_mut().filter(|m| addressed(m, *a)) {
                    let (reply, repeat) = m.req_ud2(*c, clock);
                    repeats += u64::from(repeat);
                    replies.push(reply);
                }
            }
            Frame::Long { c, a: Address::SELECTED, ci: CI_SELECTION, .. } => {
                // A selection: the FCB of a SND_UD does not matter for it.
                let _ = c;
                let mask = SecondaryMask::from_frame(frame)?;
                for m in &mut self.meters {
                    m.selected = mask.matches(&m.id);
                    if m.selected {
                        replies.push(vec![ACK]);
                    }
                }
            }
            Frame::Long { c, a, ci, .. } | Frame::Control { c, a, ci }
                if *c & control::FUNCTION_MASK == control::SND_UD & control::FUNCTION_MASK =>
            {
                for m in self.meters.iter_mut().filter(|m| addressed(m, *a)) {
                    m.fcb.is_new(*c);
                    if *ci == CI_APPLICATION_RESET {
                        m.cursor = None;
                        m.last = None;
                    }
                    replies.push(vec![ACK]);
                }
            }
            _ => {}
        }
        self.stats.repeats = self.stats.repeats.saturating_add(repeats);
        if frame.a() == Some(Address::BROADCAST_NO_REPLY) {
            return None;
        }
        let reply = match replies.len() {
            0 => return None,
            1 => replies.pop()?,
            _ => {
                self.stats.collisions = self.stats.collisions.saturating_add(1);
                collide(&replies)
            }
        };
        self.stats.replies = self.stats.replies.saturating_add(1);
        Some(reply)
    }
}

/// Whether a frame to address `a` is for meter `m`.
fn addressed(m: &MbusMeter, a: u8) -> bool {
    match a {
        Address::SELECTED => m.selected,
        Address::BROADCAST_REPLY | Address::BROADCAST_NO_REPLY => true,
        _ => m.spec.primary == a,
    }
}

/// What the master receives when several slaves answer at once: the replies superposed with one byte of
/// skew each (the line ANDs the bits: a slave drawing current sends a 0). Never a valid frame or a clean
/// `E5`: a superposition that happens to be valid gets its first byte damaged, as a real skewed collision
/// would.
fn collide(replies: &[Vec<u8>]) -> Vec<u8> {
    let len = replies.iter().enumerate().map(|(k, r)| r.len() + k).max().unwrap_or(0);
    let mut out: Vec<u8> = (0..len)
        .map(|i| {
            replies.iter().enumerate().fold(0xFF, |acc, (k, r)| {
                let byte = i.checked_sub(k).and_then(|j| r.get(j)).copied();
                acc & byte.unwrap_or(0xFF)
            })
        })
        .collect();
    let clean = matches!(out.first(), Some(&ACK)) || matches!(Frame::decode(&out), Ok(Some(_)));
    if clean {
        if let Some(first) = out.first_mut() {
            // E5 with a bit smeared by the second slave's start bit: F5 (never 10 or 68).
            *first |= 0x10;
            if *first == ACK || *first == ami_link::mbus::START_LONG || *first == ami_link::mbus::START_SHORT {
                *first = 0xFE;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ami_link::mbus::{AckMatcher, RspUdMatcher};
    use ami_link::{Check, ReplyMatcher};
    use ami_protocols::mbus::app::{decode_long_frame, RecordValue};

    #[test]
    fn data_fields_encode_per_dif() {
        assert_eq!(encode_data_field(0x01, 300.0).unwrap(), [0x7F]);
        assert_eq!(encode_data_field(0x02, -2.0).unwrap(), [0xFE, 0xFF]);
        assert_eq!(encode_data_field(0x03, 0x12_3456 as f64).unwrap(), [0x56, 0x34, 0x12]);
        assert_eq!(encode_data_field(0x04, 1.6).unwrap(), [2, 0, 0, 0]);
        assert_eq!(encode_data_field(0x05, 1.5).unwrap(), 1.5f32.to_le_bytes());
        assert_eq!(encode_data_field(0x06, 1.0).unwrap(), [1, 0, 0, 0, 0, 0]);
        assert_eq!(encode_data_field(0x07, -1.0).unwrap(), [0xFF; 8]);
        assert_eq!(encode_data_field(0x09, 42.0).unwrap(), [0x42]);
        assert_eq!(encode_data_field(0x0A, 1234.0).unwrap(), [0x34, 0x12]);
        assert_eq!(encode_data_field(0x0B, 1e9).unwrap(), [0x99, 0x99, 0x99]);
        assert_eq!(encode_data_field(0x0C, 12_345_678.0).unwrap(), [0x78, 0x56, 0x34, 0x12]);
        assert_eq!(encode_data_field(0x0A, -12.0).unwrap(), [0x12, 0xF0]);
        assert_eq!(encode_data_field(0x0E, 123_456_789_012.0).unwrap(), [0x12, 0x90, 0x78, 0x56, 0x34, 0x12]);
        assert_eq!(encode_data_field(0x00, 5.0).unwrap(), Vec::<u8>::new());
        assert_eq!(encode_data_field(0x04, f64::NAN).unwrap(), [0, 0, 0, 0]);
        for dif in [0x08, 0x0D, 0x0F] {
            assert_eq!(encode_data_field(dif, 1.0), Err(MbusSimError::UnsupportedDataField(dif)));
        }
    }

    #[test]
    fn manufacturer_codes_pack() {
        assert_eq!(pack_manufacturer("KAM"), Ok(0x2C2D));
        assert_eq!(pack_manufacturer("ZRI"), Ok(0x6A49));
        assert_eq!(pack_manufacturer("ABB"), Ok(0x0442));
        assert!(pack_manufacturer("K4M").is_err());
        assert!(pack_manufacturer("KAMS").is_err());
        let spec = MbusMeterSpec::water_meter(1, 1).with_manufacturer("sen").unwrap();
        assert_eq!(spec.manufacturer, pack_manufacturer("SEN").unwrap());
        let mut line = MbusLine::with_meters([spec]).unwrap();
        let t = decode_long_frame(&line.handle_frame(&Frame::req_ud2(1, true)).unwrap()).unwrap();
        assert_eq!(t.header.manufacturer, "SEN");
        assert!(line.remove(1).is_some());
        assert!(line.is_empty());
        assert_eq!(line.handle_frame(&Frame::req_ud2(1, true)), None);
    }

    #[test]
    fn bad_specs_are_refused() {
        let mut line = MbusLine::new();
        assert_eq!(line.add(MbusMeterSpec::heat_meter(251, 1)), Err(MbusSimError::BadPrimary(251)));
        assert_eq!(line.add(MbusMeterSpec::heat_meter(1, 100_000_000)), Err(MbusSimError::BadId(100_000_000)));
        let mut spec = MbusMeterSpec::water_meter(1, 1);
        spec.records.push(RecordSpec::fixed([0x04], 1.0));
        assert!(matches!(line.add(spec), Err(MbusSimError::BadDifVif { index: 5, .. })));
        let mut spec = MbusMeterSpec::water_meter(1, 1);
        spec.records.push(RecordSpec::fixed([0x0D, 0x13], 1.0));
        assert_eq!(line.add(spec), Err(MbusSimError::UnsupportedDataField(0x0D)));
        let mut spec = MbusMeterSpec::water_meter(1, 1);
        spec.records = vec![RecordSpec::fixed([0x07, 0x13], 1.0); 30];
        assert!(matches!(line.add(spec.clone()), Err(MbusSimError::TelegramTooLong { telegram: 0, .. })));
        spec.telegrams = 2;
        assert_eq!(line.add(spec), Ok(()));
        assert_eq!(line.len(), 1);
    }

    #[test]
    fn ready_made_meters_decode_to_their_records() {
        for spec in [
            MbusMeterSpec::heat_meter(1, 12_345_678),
            MbusMeterSpec::water_meter(2, 22_222_222),
            MbusMeterSpec::electricity_meter(3, 33_333_333),
        ] {
            let mut line = MbusLine::with_meters([spec.clone()]).unwrap();
            let reply = line.handle_frame(&Frame::req_ud2(spec.primary, true)).unwrap();
            let t = decode_long_frame(&reply).unwrap();
            assert_eq!(t.header.id, spec.id.to_string());
            assert_eq!(t.header.access_number, 1);
            assert!(!t.more_records_follow);
            assert_eq!(t.records.len(), spec.records.len());
            for (r, s) in t.records.iter().zip(&spec.records) {
                assert_eq!(r.dif_vif_raw, s.dif_vif);
                assert!(matches!(r.value, RecordValue::Number(_)), "{r:?}");
            }
        }
        let mut line = MbusLine::with_meters([MbusMeterSpec::heat_meter(1, 12_345_678)]).unwrap();
        let t = decode_long_frame(&line.handle_frame(&Frame::req_ud2(1, true)).unwrap()).unwrap();
        assert_eq!(t.header.manufacturer, "KAM");
        let energy = &t.records[0];
        assert_eq!((energy.unit.as_str(), &energy.value), ("Wh", &RecordValue::Number(12_345_000.0)));
        let historic = &t.records[8];
        assert_eq!(historic.storage, 1);
        let flow_temp = &t.records[4];
        let RecordValue::Number(v) = flow_temp.value else { panic!() };
        assert!((68.0..=72.0).contains(&v), "{v}");
        assert_eq!(t.records[9].value, RecordValue::Number(12_345_678.0));
    }

    #[test]
    fn fcb_repeats_and_advances_multi_telegram_read_outs() {
        let spec = MbusMeterSpec { telegrams: 3, ..MbusMeterSpec::heat_meter(5, 1) };
        let mut line = MbusLine::with_meters([spec]).unwrap();
        assert_eq!(line.handle_frame(&Frame::snd_nke(5)), Some(vec![ACK]));
        let t1 = line.handle_frame(&Frame::req_ud2(5, true)).unwrap();
        line.advance(Duration::from_secs(3600));
        assert_eq!(line.handle_frame(&Frame::req_ud2(5, true)).unwrap(), t1, "a retry repeats the telegram");
        let t2 = line.handle_frame(&Frame::req_ud2(5, false)).unwrap();
        let t3 = line.handle_frame(&Frame::req_ud2(5, true)).unwrap();
        let decoded: Vec<_> = [&t1, &t2, &t3].iter().map(|t| decode_long_frame(t).unwrap()).collect();
        assert_eq!(decoded.iter().map(|t| t.more_records_follow).collect::<Vec<_>>(), [true, true, false]);
        assert_eq!(decoded.iter().map(|t| t.header.access_number).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(decoded.iter().map(|t| t.records.len()).sum::<usize>(), 10);
        // A new request after the last telegram starts over.
        let again = decode_long_frame(&line.handle_frame(&Frame::req_ud2(5, false)).unwrap()).unwrap();
        assert!(again.more_records_follow);
        assert_eq!(again.records[0].dif_vif_raw, [0x04, 0x06]);
        assert_eq!(line.stats().repeats, 1);
        // SND_NKE resets the cursor: FCB 1 is new again.
        line.handle_frame(&Frame::snd_nke(5));
        let first = decode_long_frame(&line.handle_frame(&Frame::req_ud2(5, true)).unwrap()).unwrap();
        assert_eq!(first.header.access_number, 5);
        assert_eq!(first.records[0].dif_vif_raw, [0x04, 0x06]);
    }

    fn mask(digits: &str) -> Frame {
        SecondaryMask::from_digits(digits).unwrap().frame()
    }

    #[test]
    fn selection_acks_one_collides_on_several_and_is_silent_on_none() {
        let mut line = MbusLine::with_meters([
            MbusMeterSpec::water_meter(0, 12_345_670),
            MbusMeterSpec::water_meter(0, 12_345_671),
            MbusMeterSpec::heat_meter(0, 99_000_000),
        ])
        .unwrap();
        assert_eq!(line.handle_frame(&mask("12345670")), Some(vec![ACK]));
        assert_eq!(line.selected(), [12_345_670]);
        let reply = line.handle_frame(&Frame::req_ud2(Address::SELECTED, true)).unwrap();
        assert_eq!(decode_long_frame(&reply).unwrap().header.id, "12345670");
        let collision = line.handle_frame(&mask("1234567F")).unwrap();
        match AckMatcher.check(&collision) {
            Check::Corrupt { reason } => assert!(ami_link::mbus::is_collision(&reason), "{reason}"),
            other => panic!("{other:?}"),
        }
        // Both selected now: a REQ_UD2 to 253 is a damaged frame for the master.
        let both = line.handle_frame(&Frame::req_ud2(Address::SELECTED, false)).unwrap();
        assert!(matches!(RspUdMatcher { address: None }.check(&both), Check::Corrupt { .. }), "{both:02X?}");
        assert_eq!(line.handle_frame(&mask("5FFFFFFF")), None);
        assert!(line.selected().is_empty(), "a selection that does not match deselects");
        assert_eq!(line.handle_frame(&Frame::req_ud2(Address::SELECTED, true)), None);
        // SND_NKE to 253 deselects.
        line.handle_frame(&mask("99FFFFFF"));
        assert_eq!(line.handle_frame(&Frame::snd_nke(Address::SELECTED)), Some(vec![ACK]));
        assert!(line.selected().is_empty());
        // Broadcasts: 255 never answers, 254 collides with several meters.
        assert_eq!(line.handle_frame(&Frame::snd_nke(Address::BROADCAST_NO_REPLY)), None);
        assert!(line.handle_frame(&Frame::snd_nke(Address::BROADCAST_REPLY)).is_some_and(|r| r != [ACK]));
        assert_eq!(line.stats().collisions, 3);
    }

    #[test]
    fn counters_only_go_up_with_the_clock() {
        let mut line = MbusLine::with_meters([MbusMeterSpec::heat_meter(1, 7)]).unwrap();
        let energy = |line: &mut MbusLine, fcb| {
            let t = decode_long_frame(&line.handle_frame(&Frame::req_ud2(1, fcb)).unwrap()).unwrap();
            match t.records[0].value {
                RecordValue::Number(v) => v,
                _ => panic!(),
            }
        };
        let a = energy(&mut line, true);
        line.advance(Duration::from_secs(4 * 3600));
        let b = energy(&mut line, false);
        assert_eq!(b - a, 10_000.0, "2.5 kWh per hour for 4 hours");
        let start = Instant::now();
        line.catch_up(start);
        line.catch_up(start + Duration::from_secs(3600));
        line.catch_up(start); // time never runs backwards
        assert_eq!(line.clock(), Duration::from_secs(5 * 3600));
        assert_eq!(line.value(7, 0), Some(12_345.0 + 12.5));
    }

    #[test]
    fn other_frames_are_silent_or_acknowledged() {
        let mut line = MbusLine::with_meters([MbusMeterSpec::heat_meter(1, 7)]).unwrap();
        assert_eq!(line.handle_frame(&Frame::Ack), None);
        assert_eq!(line.handle_frame(&Frame::Short { c: control::REQ_UD1, a: 1 }), None);
        assert_eq!(line.handle_frame(&Frame::snd_nke(2)), None);
        let reset = Frame::Control { c: control::SND_UD, a: 1, ci: CI_APPLICATION_RESET };
        assert_eq!(line.handle_frame(&reset), Some(vec![ACK]));
        assert_eq!(line.handle_bytes(&[0x10, 0x40, 0x01, 0x41, 0x16]), Some(vec![ACK]));
        assert_eq!(line.handle_bytes(&[0x10, 0x40, 0x01, 0x42, 0x16]), None);
    }

    proptest::proptest! {
        #[test]
        fn any_frame_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let mut line = MbusLine::with_meters([
                MbusMeterSpec { telegrams: 3, ..MbusMeterSpec::heat_meter(1, 12_345_678) },
                MbusMeterSpec::water_meter(1, 12_345_679),
            ]).unwrap();
            let _ = line.handle_bytes(&bytes);
            if let Ok(Some((frame, _))) = Frame::decode(&bytes) {
                let _ = line.handle_frame(&frame);
            }
            // Also wrapped in a long frame so mutations reach the handlers behind the checksum.
            if let (Some(&c), Some(&a), Some(&ci)) = (bytes.first(), bytes.get(1), bytes.get(2)) {
                let data = bytes.get(3..).unwrap_or_default().iter().take(252).copied().collect();
                let _ = line.handle_frame(&Frame::Long { c, a, ci, data });
                let _ = line.handle_frame(&Frame::Short { c, a });
            }
        }
    }
}

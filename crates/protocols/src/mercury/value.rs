//! Mercury reply data: decoders (and, for the simulator and round-trip tests, encoders) of the data part
//! of replies.
//!
//! Byte orders (Incotex command description, 05.2023; `../shared/protocols/mercury230.md`):
//! - energy (`05`): 4 bytes `[B2 B1 B4 B3]`, B1 most significant, Wh or varh; `FF FF FF FF` = not
//!   applicable ([`decode_energy_value`]);
//! - instantaneous values (`08 11`, `08 16`): 3 bytes `[B1 B3 B2]`, B1 most significant with bit 7 = active
//!   power reverse and bit 6 = reactive power reverse, 22 value bits ([`InstantValue`]); temperature is 2
//!   bytes big-endian °C;
//! - serial number (`08 00`): 4 bytes, each printed as two decimal digits, then day, month, year;
//! - clock (`04 00`): 8 BCD bytes second, minute, hour, weekday, day, month, year, winter flag;
//! - last power-profile record (`08 13`): record address (2, big-endian), status, stamp (hour, minute, day,
//!   month, year, BCD), integration period in minutes;
//! - power-profile record (`06 03 …`): status, stamp (5 BCD), period, then P+, P−, Q+, Q− as 16-bit
//!   little-endian pulse counts (`FF FF` = no data). One record is 16 bytes of memory. The counts convert
//!   to energy over the period as `N / (2·A)` kWh, A being the meter constant in pulses per kWh from the
//!   variant (`08 12`, low nibble of its second byte).
//!
//! Panic contract: every decoder returns a value or a [`DecodeError`] for any input.

use super::request::Bwri;
use super::request::{PowerKind, Quantity};
use crate::civil::{civil_from_days, days_from_civil, days_in_month};

/// Why reply data could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The data part has the wrong length.
    #[error("{what}: expected {expected} data byte(s), got {actual}")]
    Length {
        /// What was being decoded.
        what: &'static str,
        /// Bytes expected.
        expected: usize,
        /// Bytes received.
        actual: usize,
    },
    /// A byte that should be BCD is not.
    #[error("{what}: 0x{byte:02X} is not a BCD number")]
    Bcd {
        /// Which field.
        what: &'static str,
        /// The byte.
        byte: u8,
    },
    /// A field outside its range (month 13, hour 25, serial byte 100).
    #[error("{what}: {value} is out of range")]
    Range {
        /// Which field.
        what: &'static str,
        /// The value.
        value: u32,
    },
}

fn exact<'a, const N: usize>(data: &'a [u8], what: &'static str) -> Result<&'a [u8; N], DecodeError> {
    <&[u8; N]>::try_from(data).map_err(|_| DecodeError::Length { what, expected: N, actual: data.len() })
}

/// One BCD byte as a number (0–99).
///
/// # Errors
/// A nibble above 9.
pub fn from_bcd(byte: u8, what: &'static str) -> Result<u8, DecodeError> {
    let (hi, lo) = (byte >> 4, byte & 0x0F);
    if hi > 9 || lo > 9 {
        return Err(DecodeError::Bcd { what, byte });
    }
    Ok(hi * 10 + lo)
}

/// A number 0–99 as one BCD byte (values above 99 are taken modulo 100).
#[must_use]
pub fn to_bcd(value: u8) -> u8 {
    let v = value % 100;
    ((v / 10) << 4) | (v % 10)
}

/// One energy value from its 4 wire bytes `[B2 B1 B4 B3]`; `None` for `FF FF FF FF` (not applicable).
#[must_use]
pub fn decode_energy_value(b: [u8; 4]) -> Option<u32> {
    if b == [0xFF; 4] {
        return None;
    }
    let [b0, b1, b2, b3] = b;
    Some(u32::from_be_bytes([b1, b0, b3, b2]))
}

/// The 4 wire bytes of an energy value (`None` → `FF FF FF FF`). `u32::MAX` cannot be sent: it reads as
/// not applicable.
#[must_use]
pub fn encode_energy_value(v: Option<u32>) -> [u8; 4] {
    match v {
        None => [0xFF; 4],
        Some(v) => {
            let [b1, b0, b3, b2] = v.to_be_bytes();
            [b0, b1, b2, b3]
        }
    }
}

/// The four energies of a `05` reply, in Wh and varh; `None` = not applicable (`FF FF FF FF`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Energy {
    /// Active import A+ (Wh).
    pub a_plus: Option<u32>,
    /// Active export A− (Wh).
    pub a_minus: Option<u32>,
    /// Reactive R+ (varh).
    pub r_plus: Option<u32>,
    /// Reactive R− (varh).
    pub r_minus: Option<u32>,
}

impl Energy {
    /// Decodes 16 data bytes.
    ///
    /// # Errors
    /// Any other length.
    pub fn decode(data: &[u8]) -> Result<Self, DecodeError> {
        let d: &[u8; 16] = exact(data, "energy array")?;
        let v = |i: usize| decode_energy_value([d[i], d[i + 1], d[i + 2], d[i + 3]]);
        Ok(Self { a_plus: v(0), a_minus: v(4), r_plus: v(8), r_minus: v(12) })
    }

    /// The 16 data bytes.
    #[must_use]
    pub fn encode(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        for (chunk, v) in out.chunks_exact_mut(4).zip([self.a_plus, self.a_minus, self.r_plus, self.r_minus]) {
            chunk.copy_from_slice(&encode_energy_value(v));
        }
        out
    }
}

/// A+ per phase from a `05 6x` reply (Wh); `None` = not applicable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PhaseEnergy {
    /// Phases L1, L2, L3.
    pub phases: [Option<u32>; 3],
}

impl PhaseEnergy {
    /// Decodes 12 data bytes.
    ///
    /// # Errors
    /// Any other length.
    pub fn decode(data: &[u8]) -> Result<Self, DecodeError> {
        let d: &[u8; 12] = exact(data, "per-phase energy array")?;
        let v = |i: usize| decode_energy_value([d[i], d[i + 1], d[i + 2], d[i + 3]]);
        Ok(Self { phases: [v(0), v(4), v(8)] })
    }

    /// The 12 data bytes.
    #[must_use]
    pub fn encode(&self) -> [u8; 12] {
        let mut out = [0u8; 12];
        for (chunk, v) in out.chunks_exact_mut(4).zip(self.phases) {
            chunk.copy_from_slice(&encode_energy_value(v));
        }
        out
    }
}

/// One instantaneous value as sent: 22 value bits and the two direction bits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InstantValue {
    /// What it is.
    pub bwri: Bwri,
    /// The 22-bit magnitude as sent (before scaling).
    pub raw: u32,
    /// Bit 7 of B1: active power flows in reverse (export).
    pub active_reverse: bool,
    /// Bit 6 of B1: reactive power is in reverse (capacitive).
    pub reactive_reverse: bool,
}

impl InstantValue {
    /// Largest magnitude (22 bits).
    pub const MAX_RAW: u32 = 0x3F_FFFF;

    /// Decodes 3 wire bytes `[B1 B3 B2]`.
    #[must_use]
    pub fn from_bytes(bwri: Bwri, b: [u8; 3]) -> Self {
        let [b1, b3, b2] = b;
        Self {
            bwri,
            raw: u32::from_be_bytes([0, b1 & 0x3F, b2, b3]),
            active_reverse: b1 & 0x80 != 0,
            reactive_reverse: b1 & 0x40 != 0,
        }
    }

    /// The 3 wire bytes (`raw` is cut to 22 bits).
    #[must_use]
    pub fn to_bytes(&self) -> [u8; 3] {
        let [_, hi, b2, b3] = (self.raw & Self::MAX_RAW).to_be_bytes();
        let flags = (u8::from(self.active_reverse) << 7) | (u8::from(self.reactive_reverse) << 6);
        [hi | flags, b3, b2]
    }

    /// The value in its unit with the direction bits honoured: active power is negative when
    /// `active_reverse`, reactive power when `reactive_reverse`; other quantities are magnitudes.
    #[must_use]
    pub fn value(&self) -> f64 {
        let magnitude = f64::from(self.raw) / self.bwri.divisor();
        let negative = match self.bwri.quantity() {
            Quantity::Power(PowerKind::Active) => self.active_reverse,
            Quantity::Power(PowerKind::Reactive) => self.reactive_reverse,
            _ => false,
        };
        if negative {
            -magnitude
        } else {
            magnitude
        }
    }

    /// Decodes the data of an `08 11` reply: one value of `bwri` (3 bytes; temperature is handled by
    /// [`decode_temperature`]).
    ///
    /// # Errors
    /// Any other length.
    pub fn decode(bwri: Bwri, data: &[u8]) -> Result<Self, DecodeError> {
        let d: &[u8; 3] = exact(data, "instantaneous value")?;
        Ok(Self::from_bytes(bwri, *d))
    }

    /// Decodes the data of an `08 16` block reply: [`Bwri::block_values`] values, the first of `bwri`,
    /// the next ones of the following phases.
    ///
    /// # Errors
    /// Any other length than [`Bwri::block_len`].
    pub fn decode_block(bwri: Bwri, data: &[u8]) -> Result<Vec<Self>, DecodeError> {
        let n = bwri.block_values();
        if bwri.quantity() == Quantity::Temperature || data.len() != 3 * n {
            return Err(DecodeError::Length {
                what: "block of instantaneous values",
                expected: bwri.block_len(),
                actual: data.len(),
            });
        }
        Ok(data
            .chunks_exact(3)
            .enumerate()
            .map(|(k, c)| {
                // Each next value is the next phase (k < 4, so the add cannot overflow the nibble).
                let b = Bwri(bwri.0.wrapping_add(u8::try_from(k).unwrap_or(0)));
                Self::from_bytes(b, [c[0], c[1], c[2]])
            })
            .collect())
    }
}

/// Decodes the temperature of an `08 11 70` reply: 2 bytes big-endian, °C (signed).
///
/// # Errors
/// Any other length.
pub fn decode_temperature(data: &[u8]) -> Result<i16, DecodeError> {
    let d: &[u8; 2] = exact(data, "temperature")?;
    Ok(i16::from_be_bytes(*d))
}

/// A calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    /// Year (2000–2099).
    pub year: u16,
    /// Month 1–12.
    pub month: u8,
    /// Day 1–31.
    pub day: u8,
}

impl std::fmt::Display for Date {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// Serial number and manufacture date (`08 00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SerialInfo {
    /// The serial number (8 decimal digits).
    pub serial: u32,
    /// Manufacture date.
    pub made: Date,
}

impl SerialInfo {
    /// Decodes 7 data bytes: 4 serial bytes each 0–99, then day, month, year (binary).
    ///
    /// # Errors
    /// Another length, a serial byte above 99, an impossible date.
    pub fn decode(data: &[u8]) -> Result<Self, DecodeError> {
        let d: &[u8; 7] = exact(data, "serial number")?;
        let mut serial = 0u32;
        for &b in &d[..4] {
            if b > 99 {
                return Err(DecodeError::Range { what: "serial number byte", value: u32::from(b) });
            }
            serial = serial * 100 + u32::from(b);
        }
        let made = check_date(d[6], d[5], d[4])?;
        Ok(Self { serial, made })
    }

    /// The 7 data bytes (the serial taken modulo 10⁸).
    #[must_use]
    pub fn encode(&self) -> [u8; 7] {
        let s = self.serial % 100_000_000;
        let digit_pair = |div: u32| u8::try_from((s / div) % 100).unwrap_or(0);
        [
            digit_pair(1_000_000),
            digit_pair(10_000),
            digit_pair(100),
            digit_pair(1),
            self.made.day,
            self.made.month,
            u8::try_from(self.made.year % 100).unwrap_or(0),
        ]
    }
}

fn check_date(yy: u8, month: u8, day: u8) -> Result<Date, DecodeError> {
    if yy > 99 {
        return Err(DecodeError::Range { what: "year", value: u32::from(yy) });
    }
    let year = 2000 + u16::from(yy);
    if !(1..=12).contains(&month) {
        return Err(DecodeError::Range { what: "month", value: u32::from(month) });
    }
    if day == 0 || day > days_in_month(i64::from(year), month) {
        return Err(DecodeError::Range { what: "day", value: u32::from(day) });
    }
    Ok(Date { year, month, day })
}

/// A point in meter time to the minute (meters keep local time without a zone), 2000–2099.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp {
    /// The date.
    pub date: Date,
    /// Hour 0–23.
    pub hour: u8,
    /// Minute 0–59.
    pub minute: u8,
}

impl Stamp {
    /// The stamp at `date` `hour:minute` (not checked; see [`Stamp::new`]).
    #[must_use]
    pub fn at(date: Date, hour: u8, minute: u8) -> Self {
        Self { date, hour, minute }
    }

    /// A checked stamp.
    ///
    /// # Errors
    /// A field out of range.
    pub fn new(year: u16, month: u8, day: u8, hour: u8, minute: u8) -> Result<Self, DecodeError> {
        let yy = year.checked_sub(2000).and_then(|y| u8::try_from(y).ok()).unwrap_or(u8::MAX);
        let date = check_date(yy, month, day)?;
        if hour > 23 {
            return Err(DecodeError::Range { what: "hour", value: u32::from(hour) });
        }
        if minute > 59 {
            return Err(DecodeError::Range { what: "minute", value: u32::from(minute) });
        }
        Ok(Self { date, hour, minute })
    }

    /// Minutes since 2000-01-01 00:00.
    #[must_use]
    pub fn minutes(&self) -> i64 {
        let days = days_from_civil(i64::from(self.date.year), u32::from(self.date.month), u32::from(self.date.day))
            - days_from_civil(2000, 1, 1);
        days * 1440 + i64::from(self.hour) * 60 + i64::from(self.minute)
    }

    /// The stamp `minutes` after 2000-01-01 00:00 (clamped to 2000-01-01 … 2099-12-31 23:59).
    #[must_use]
    pub fn from_minutes(minutes: i64) -> Self {
        let max = Stamp { date: Date { year: 2099, month: 12, day: 31 }, hour: 23, minute: 59 }.minutes();
        let m = minutes.clamp(0, max);
        let (y, mo, d) = civil_from_days(days_from_civil(2000, 1, 1) + m.div_euclid(1440));
        let in_day = m.rem_euclid(1440);
        let small = |v: i64| u8::try_from(v).unwrap_or(0);
        Self {
            date: Date { year: u16::try_from(y).unwrap_or(2000), month: mo, day: d },
            hour: small(in_day / 60),
            minute: small(in_day % 60),
        }
    }

    /// This stamp moved by `minutes` (clamped like [`Stamp::from_minutes`]).
    #[must_use]
    pub fn plus_minutes(&self, minutes: i64) -> Self {
        Self::from_minutes(self.minutes().saturating_add(minutes))
    }

    /// Decodes the 5 BCD bytes hour, minute, day, month, year.
    ///
    /// # Errors
    /// A byte that is not BCD, a field out of range.
    pub fn decode_bcd(b: [u8; 5]) -> Result<Self, DecodeError> {
        let [h, m, d, mo, y] = b;
        let hour = from_bcd(h, "hour")?;
        let minute = from_bcd(m, "minute")?;
        let day = from_bcd(d, "day")?;
        let month = from_bcd(mo, "month")?;
        let yy = from_bcd(y, "year")?;
        Self::new(2000 + u16::from(yy), month, day, hour, minute)
    }

    /// The 5 BCD bytes hour, minute, day, month, year.
    #[must_use]
    pub fn encode_bcd(&self) -> [u8; 5] {
        [
            to_bcd(self.hour),
            to_bcd(self.minute),
            to_bcd(self.date.day),
            to_bcd(self.date.month),
            to_bcd(u8::try_from(self.date.year % 100).unwrap_or(0)),
        ]
    }
}

impl std::fmt::Display for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:02}:{:02}", self.date, self.hour, self.minute)
    }
}

/// The meter clock (`04 00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeterTime {
    /// Date, hour and minute.
    pub stamp: Stamp,
    /// Second 0–59.
    pub second: u8,
    /// Day of the week as the meter counts it (1–7).
    pub weekday: u8,
    /// Winter time (`1`) or summer time (`0`).
    pub winter: bool,
}

impl MeterTime {
    /// Decodes 8 BCD bytes second, minute, hour, weekday, day, month, year, winter flag.
    ///
    /// # Errors
    /// Another length, a byte that is not BCD, a field out of range.
    pub fn decode(data: &[u8]) -> Result<Self, DecodeError> {
        let d: &[u8; 8] = exact(data, "meter time")?;
        let second = from_bcd(d[0], "second")?;
        if second > 59 {
            return Err(DecodeError::Range { what: "second", value: u32::from(second) });
        }
        let weekday = from_bcd(d[3], "weekday")?;
        let stamp = Stamp::decode_bcd([d[2], d[1], d[4], d[5], d[6]])?;
        Ok(Self { stamp, second, weekday, winter: d[7] != 0 })
    }

    /// The 8 data bytes.
    #[must_use]
    pub fn encode(&self) -> [u8; 8] {
        let [h, m, d, mo, y] = self.stamp.encode_bcd();
        [to_bcd(self.second), m, h, to_bcd(self.weekday), d, mo, y, u8::from(self.winter)]
    }
}

/// Pulses per kWh of the meter constant code (low nibble of the variant's second byte).
#[must_use]
pub fn meter_constant(code: u8) -> Option<u32> {
    match code & 0x0F {
        0 => Some(5000),
        1 => Some(25_000),
        2 => Some(1250),
        3 => Some(500),
        4 => Some(1000),
        5 => Some(250),
        _ => None,
    }
}

/// The variant (`08 12`): six bytes describing the meter; the meter constant is what this crate uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variant {
    /// The six bytes as sent.
    pub raw: [u8; 6],
}

impl Variant {
    /// Decodes 6 data bytes.
    ///
    /// # Errors
    /// Any other length.
    pub fn decode(data: &[u8]) -> Result<Self, DecodeError> {
        Ok(Self { raw: *exact::<6>(data, "variant")? })
    }

    /// The meter constant A in pulses per kWh (`None` for an unknown code).
    #[must_use]
    pub fn constant(&self) -> Option<u32> {
        meter_constant(self.raw[1])
    }
}

/// Where the newest power-profile record is (`08 13`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastRecord {
    /// Byte address of the record in memory 3.
    pub address: u16,
    /// The status byte as sent.
    pub status: u8,
    /// The record's stamp.
    pub stamp: Stamp,
    /// Integration period in minutes (30 or 60 on the meters in use; 1–255 possible).
    pub period: u8,
}

impl LastRecord {
    /// Decodes 9 data bytes.
    ///
    /// # Errors
    /// Another length, a bad stamp, a period of 0.
    pub fn decode(data: &[u8]) -> Result<Self, DecodeError> {
        let d: &[u8; 9] = exact(data, "last power-profile record")?;
        let stamp = Stamp::decode_bcd([d[3], d[4], d[5], d[6], d[7]])?;
        if d[8] == 0 {
            return Err(DecodeError::Range { what: "integration period", value: 0 });
        }
        Ok(Self { address: u16::from_be_bytes([d[0], d[1]]), status: d[2], stamp, period: d[8] })
    }

    /// The 9 data bytes.
    #[must_use]
    pub fn encode(&self) -> [u8; 9] {
        let [hi, lo] = self.address.to_be_bytes();
        let [h, m, d, mo, y] = self.stamp.encode_bcd();
        [hi, lo, self.status, h, m, d, mo, y, self.period]
    }
}

/// One power-profile record (`06 03 …`): the pulse counts of one integration period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProfileRecord {
    /// The status byte as sent.
    pub status: u8,
    /// The stamp the meter wrote with the record.
    pub stamp: Stamp,
    /// Integration period in minutes.
    pub period: u8,
    /// Pulse counts P+, P−, Q+, Q− (`None` = no data, `FF FF`).
    pub counts: [Option<u16>; 4],
}

impl ProfileRecord {
    /// Decodes 15 data bytes.
    ///
    /// # Errors
    /// Another length, a bad stamp (never-written memory reads `FF`), a period of 0.
    pub fn decode(data: &[u8]) -> Result<Self, DecodeError> {
        let d: &[u8; 15] = exact(data, "power-profile record")?;
        let stamp = Stamp::decode_bcd([d[1], d[2], d[3], d[4], d[5]])?;
        if d[6] == 0 {
            return Err(DecodeError::Range { what: "integration period", value: 0 });
        }
        let count = |i: usize| Some(u16::from_le_bytes([d[i], d[i + 1]])).filter(|v| *v != 0xFFFF);
        Ok(Self { status: d[0], stamp, period: d[6], counts: [count(7), count(9), count(11), count(13)] })
    }

    /// The 15 data bytes (a count of `0xFFFF` reads back as no data).
    #[must_use]
    pub fn encode(&self) -> [u8; 15] {
        let mut out = [0u8; 15];
        out[0] = self.status;
        out[1..6].copy_from_slice(&self.stamp.encode_bcd());
        out[6] = self.period;
        for (k, c) in self.counts.iter().enumerate() {
            let [lo, hi] = c.unwrap_or(0xFFFF).to_le_bytes();
            out[7 + 2 * k] = lo;
            out[8 + 2 * k] = hi;
        }
        out
    }

    /// Energy over the period in Wh (P±) or varh (Q±) for a meter constant of `constant` pulses per
    /// kWh: `N / (2·A)` kWh. Index 0 = P+, 1 = P−, 2 = Q+, 3 = Q−.
    #[must_use]
    pub fn energy_wh(&self, index: usize, constant: u32) -> Option<f64> {
        let n = (*self.counts.get(index)?)?;
        (constant > 0).then(|| f64::from(n) * 1000.0 / (2.0 * f64::from(constant)))
    }

    /// Mean power over the period in W (P±) or var (Q±): the energy times `60 / period`.
    #[must_use]
    pub fn mean_power_w(&self, index: usize, constant: u32) -> Option<f64> {
        Some(self.energy_wh(index, constant)? * 60.0 / f64::from(self.period.max(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn energy_byte_order() {
        // A+ 2672 Wh arrives as 00 00 70 0A.
        assert_eq!(decode_energy_value([0x00, 0x00, 0x70, 0x0A]), Some(2672));
        assert_eq!(encode_energy_value(Some(2672)), [0x00, 0x00, 0x70, 0x0A]);
        assert_eq!(decode_energy_value([0x30, 0x00, 0x28, 0xC5]), Some(3_196_200));
        assert_eq!(decode_energy_value([0xFF; 4]), None);
        let e = Energy { a_plus: Some(1), a_minus: None, r_plus: Some(0x0102_0304), r_minus: Some(0) };
        assert_eq!(Energy::decode(&e.encode()), Ok(e));
        assert!(matches!(Energy::decode(&[0; 15]), Err(DecodeError::Length { expected: 16, actual: 15, .. })));
    }

    #[test]
    fn instant_values_honour_direction_bits() {
        let p = InstantValue::from_bytes(Bwri::active_power(0), [0x48, 0x87, 0x70]);
        assert_eq!(p.raw, 553_095);
        assert!(p.reactive_reverse && !p.active_reverse);
        assert!((p.value() - 5530.95).abs() < 1e-9);
        let q = InstantValue { bwri: Bwri::reactive_power(0), ..p };
        assert!((q.value() + 5530.95).abs() < 1e-9);
        let export = InstantValue::from_bytes(Bwri::active_power(1), [0x80, 0x10, 0x00]);
        assert!((export.value() + 0.16).abs() < 1e-9);
        assert_eq!(export.to_bytes(), [0x80, 0x10, 0x00]);
        assert_eq!(p.to_bytes(), [0x48, 0x87, 0x70]);
        let block =
            InstantValue::decode_block(Bwri::voltage(1), &[0, 0x5B, 0x56, 0, 0x5C, 0x56, 0, 0x5D, 0x56]).unwrap();
        assert_eq!(block.iter().map(|v| v.bwri.phase()).collect::<Vec<_>>(), [1, 2, 3]);
        assert!((block[2].value() - 221.09).abs() < 1e-9);
        assert!(InstantValue::decode_block(Bwri::voltage(1), &[0; 12]).is_err());
    }

    #[test]
    fn serial_time_and_stamps() {
        let s = SerialInfo::decode(&[12, 34, 56, 78, 15, 3, 21]).unwrap();
        assert_eq!(s.serial, 12_345_678);
        assert_eq!(s.made, Date { year: 2021, month: 3, day: 15 });
        assert_eq!(s.encode(), [12, 34, 56, 78, 15, 3, 21]);
        assert!(SerialInfo::decode(&[12, 34, 56, 178, 15, 3, 21]).is_err());
        assert!(SerialInfo::decode(&[12, 34, 56, 78, 30, 2, 21]).is_err());
        let t = MeterTime::decode(&[0x59, 0x30, 0x13, 0x02, 0x28, 0x12, 0x22, 0x01]).unwrap();
        assert_eq!(t.stamp, Stamp::new(2022, 12, 28, 13, 30).unwrap());
        assert_eq!((t.second, t.weekday, t.winter), (59, 2, true));
        assert_eq!(t.encode(), [0x59, 0x30, 0x13, 0x02, 0x28, 0x12, 0x22, 0x01]);
        assert!(MeterTime::decode(&[0x5A, 0x30, 0x13, 0x02, 0x28, 0x12, 0x22, 0x01]).is_err());
        let a = Stamp::new(2024, 2, 28, 23, 30).unwrap();
        assert_eq!(a.plus_minutes(60), Stamp::new(2024, 2, 29, 0, 30).unwrap());
        assert_eq!(Stamp::from_minutes(a.minutes()), a);
        assert_eq!(Stamp::new(2000, 1, 1, 0, 0).unwrap().minutes(), 0);
    }

    #[test]
    fn profile_records() {
        let rec = ProfileRecord {
            status: 0,
            stamp: Stamp::new(2022, 12, 28, 13, 0).unwrap(),
            period: 30,
            counts: [Some(500), None, Some(0x1234), Some(0)],
        };
        let bytes = rec.encode();
        assert_eq!(bytes[7..9], [0xF4, 0x01]);
        assert_eq!(bytes[9..11], [0xFF, 0xFF]);
        assert_eq!(ProfileRecord::decode(&bytes), Ok(rec));
        // 500 pulses at 5000 pulses/kWh: 500 / 10 000 kWh = 50 Wh in 30 min = 100 W.
        assert_eq!(rec.energy_wh(0, 5000), Some(50.0));
        assert_eq!(rec.mean_power_w(0, 5000), Some(100.0));
        assert_eq!(rec.energy_wh(1, 5000), None);
        assert!(ProfileRecord::decode(&[0xFF; 15]).is_err());
        assert_eq!(Variant::decode(&[0, 0x40, 0, 0, 0, 0]).unwrap().constant(), Some(5000));
        assert_eq!(meter_constant(0x03), Some(500));
    }

    proptest::proptest! {
        #[test]
        fn stamps_round_trip(m in 0i64..52_000_000) {
            let s = Stamp::from_minutes(m);
            proptest::prop_assert_eq!(s.minutes(), m);
            proptest::prop_assert_eq!(Stamp::decode_bcd(s.encode_bcd()), Ok(s));
        }

        #[test]
        fn instant_values_round_trip(raw in 0u32..=InstantValue::MAX_RAW, a: bool, r: bool, b: u8) {
            let v = InstantValue { bwri: Bwri(b), raw, active_reverse: a, reactive_reverse: r };
            proptest::prop_assert_eq!(InstantValue::from_bytes(Bwri(b), v.to_bytes()), v);
        }

        #[test]
        fn energy_values_round_trip(v in 0u32..u32::MAX) {
            proptest::prop_assert_eq!(decode_energy_value(encode_energy_value(Some(v))), Some(v));
        }
    }
}

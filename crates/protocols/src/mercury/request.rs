//! Mercury requests: the command codes and parameters this crate sends, how long their replies are, and
//! the meter-side parse of a request frame (for the simulator and `describe`).
//!
//! Codes (Incotex command description, 05.2023): `00` test channel, `01` open channel, `02` close
//! channel, `04 00` read the clock, `05` read energy arrays (4.3.1), `06` read memory (power-profile
//! memory `03`), `08` read parameters (`00` serial number and manufacture date, `11` one instantaneous
//! value, `12` variant, `13` last power-profile record, `16` a block of instantaneous values). Every
//! other request is kept losslessly as [`Request::Other`].
//!
//! Panic contract: nothing here panics on any input.

use zeroize::Zeroize;

use super::frame::{encode, Address, Frame, FrameError};

/// An access level for opening the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// 1: user (read only).
    User,
    /// 2: administrator (read and write parameters).
    Admin,
    /// Any other level byte (kept as received).
    Other(u8),
}

impl From<u8> for Level {
    fn from(b: u8) -> Self {
        match b {
            1 => Level::User,
            2 => Level::Admin,
            other => Level::Other(other),
        }
    }
}

impl From<Level> for u8 {
    fn from(l: Level) -> u8 {
        match l {
            Level::User => 1,
            Level::Admin => 2,
            Level::Other(b) => b,
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Level::User => write!(f, "1 (user)"),
            Level::Admin => write!(f, "2 (admin)"),
            Level::Other(b) => write!(f, "{b}"),
        }
    }
}

/// A six-byte channel password, sent as given. Factory passwords are `01 01 01 01 01 01` (level 1) and
/// `02 02 02 02 02 02` (level 2). Debug output never shows it; it is wiped when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Password([u8; 6]);

impl Password {
    /// The factory level-1 password `010101010101`.
    #[must_use]
    pub fn factory_user() -> Self {
        Self([1; 6])
    }

    /// The factory level-2 password `020202020202`.
    #[must_use]
    pub fn factory_admin() -> Self {
        Self([2; 6])
    }

    /// A password of six raw bytes.
    #[must_use]
    pub fn new(bytes: [u8; 6]) -> Self {
        Self(bytes)
    }

    /// The raw bytes (to put on the wire).
    #[must_use]
    pub fn bytes(&self) -> &[u8; 6] {
        &self.0
    }
}

impl Default for Password {
    /// The factory level-1 password.
    fn default() -> Self {
        Self::factory_user()
    }
}

impl Drop for Password {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Why a password text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a Mercury password is 12 hex digits (six raw bytes, e.g. 010101010101), got {len} character(s)")]
pub struct PasswordError {
    /// Characters given.
    pub len: usize,
}

impl std::str::FromStr for Password {
    type Err = PasswordError;

    /// Twelve hex digits, e.g. `010101010101` (the digits 1,1,1,1,1,1 as raw bytes) or `313131313131`
    /// (ASCII "111111", as some meters are configured).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PasswordError { len: s.chars().count() };
        if s.len() != 12 || !s.is_ascii() {
            return Err(err());
        }
        let mut out = [0u8; 6];
        for (i, byte) in out.iter_mut().enumerate() {
            let pair = s.get(2 * i..2 * i + 2).ok_or_else(err)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| err())?;
        }
        Ok(Self(out))
    }
}

/// Which energy array a `05` request reads (high nibble of the parameter byte; the low nibble is the
/// month for [`EnergyArray::Month`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EnergyArray {
    /// `00`: accumulated from reset.
    FromReset,
    /// `10`: the current year.
    CurrentYear,
    /// `20`: the previous year.
    PreviousYear,
    /// `3M`: month M (1–12).
    Month(u8),
    /// `40`: the current day.
    Today,
    /// `50`: the previous day.
    Yesterday,
    /// `60`: A+ per phase from reset (12 bytes: L1, L2, L3).
    PhasesFromReset,
    /// Any other parameter byte (kept as given).
    Other(u8),
}

impl EnergyArray {
    /// The parameter byte.
    #[must_use]
    pub fn param(self) -> u8 {
        match self {
            EnergyArray::FromReset => 0x00,
            EnergyArray::CurrentYear => 0x10,
            EnergyArray::PreviousYear => 0x20,
            EnergyArray::Month(m) => 0x30 | (m & 0x0F),
            EnergyArray::Today => 0x40,
            EnergyArray::Yesterday => 0x50,
            EnergyArray::PhasesFromReset => 0x60,
            EnergyArray::Other(b) => b,
        }
    }

    /// Data bytes of the reply: 12 for the per-phase array, 16 (A+, A−, R+, R−) otherwise.
    #[must_use]
    pub fn reply_len(self) -> usize {
        if self.param() & 0xF0 == 0x60 {
            12
        } else {
            16
        }
    }
}

impl From<u8> for EnergyArray {
    fn from(b: u8) -> Self {
        match b {
            0x00 => EnergyArray::FromReset,
            0x10 => EnergyArray::CurrentYear,
            0x20 => EnergyArray::PreviousYear,
            0x31..=0x3C => EnergyArray::Month(b & 0x0F),
            0x40 => EnergyArray::Today,
            0x50 => EnergyArray::Yesterday,
            0x60 => EnergyArray::PhasesFromReset,
            other => EnergyArray::Other(other),
        }
    }
}

impl std::fmt::Display for EnergyArray {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnergyArray::FromReset => f.write_str("from reset"),
            EnergyArray::CurrentYear => f.write_str("current year"),
            EnergyArray::PreviousYear => f.write_str("previous year"),
            EnergyArray::Month(m) => write!(f, "month {m}"),
            EnergyArray::Today => f.write_str("current day"),
            EnergyArray::Yesterday => f.write_str("previous day"),
            EnergyArray::PhasesFromReset => f.write_str("A+ per phase from reset"),
            EnergyArray::Other(b) => write!(f, "array 0x{b:02X}"),
        }
    }
}

/// A tariff selector: 0 = sum of tariffs, 1–4 = T1–T4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tariff(pub u8);

impl Tariff {
    /// The sum over all tariffs.
    pub const SUM: Tariff = Tariff(0);
}

impl std::fmt::Display for Tariff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            0 => f.write_str("sum of tariffs"),
            t => write!(f, "tariff {t}"),
        }
    }
}

/// What an instantaneous value is: the quantity in the high nibble of the BWRI byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quantity {
    /// `0`: power; bits 3..2 of the BWRI byte select P, Q or S.
    Power(PowerKind),
    /// `1`: phase voltage, V ÷ 100.
    Voltage,
    /// `2`: current, A ÷ 1000.
    Current,
    /// `3`: power factor cos φ ÷ 1000.
    PowerFactor,
    /// `4`: frequency, Hz ÷ 100.
    Frequency,
    /// `5`: angle between phase voltages, degrees ÷ 100.
    Angle,
    /// `6`: total harmonic distortion, % ÷ 100.
    Thd,
    /// `7`: temperature inside the meter, °C (two bytes, big-endian).
    Temperature,
    /// `8`: line voltage, V ÷ 100.
    LineVoltage,
    /// Any other high nibble.
    Other(u8),
}

/// Which power a power BWRI selects (bits 3..2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PowerKind {
    /// `00`: active power P, W ÷ 100.
    Active,
    /// `01`: reactive power Q, var ÷ 100.
    Reactive,
    /// `10`: apparent power S, VA ÷ 100.
    Apparent,
    /// `11`: not defined.
    Other,
}

/// The BWRI byte of `08 11` / `08 16`: quantity (high nibble) and phase (low nibble: 0 sum, 1–3; for
/// power the low two bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Bwri(pub u8);

impl Bwri {
    /// Active power P of `phase` (0 = sum).
    #[must_use]
    pub fn active_power(phase: u8) -> Self {
        Bwri(phase & 0x03)
    }

    /// Reactive power Q of `phase` (0 = sum).
    #[must_use]
    pub fn reactive_power(phase: u8) -> Self {
        Bwri(0x04 | (phase & 0x03))
    }

    /// Apparent power S of `phase` (0 = sum).
    #[must_use]
    pub fn apparent_power(phase: u8) -> Self {
        Bwri(0x08 | (phase & 0x03))
    }

    /// Phase voltage of phase 1–3.
    #[must_use]
    pub fn voltage(phase: u8) -> Self {
        Bwri(0x10 | (phase & 0x0F))
    }

    /// Current of phase 1–3.
    #[must_use]
    pub fn current(phase: u8) -> Self {
        Bwri(0x20 | (phase & 0x0F))
    }

    /// cos φ of `phase` (0 = sum).
    #[must_use]
    pub fn power_factor(phase: u8) -> Self {
        Bwri(0x30 | (phase & 0x0F))
    }

    /// Frequency.
    pub const FREQUENCY: Bwri = Bwri(0x40);
    /// Temperature inside the meter.
    pub const TEMPERATURE: Bwri = Bwri(0x70);

    /// Angle between the phase voltages starting at phase 1–3.
    #[must_use]
    pub fn angle(phase: u8) -> Self {
        Bwri(0x50 | (phase & 0x0F))
    }

    /// The quantity.
    #[must_use]
    pub fn quantity(self) -> Quantity {
        match self.0 >> 4 {
            0 => Quantity::Power(match (self.0 >> 2) & 0x03 {
                0 => PowerKind::Active,
                1 => PowerKind::Reactive,
                2 => PowerKind::Apparent,
                _ => PowerKind::Other,
            }),
            1 => Quantity::Voltage,
            2 => Quantity::Current,
            3 => Quantity::PowerFactor,
            4 => Quantity::Frequency,
            5 => Quantity::Angle,
            6 => Quantity::Thd,
            7 => Quantity::Temperature,
            8 => Quantity::LineVoltage,
            other => Quantity::Other(other),
        }
    }

    /// The phase: 0 = sum (or none), 1–3.
    #[must_use]
    pub fn phase(self) -> u8 {
        match self.quantity() {
            Quantity::Power(_) => self.0 & 0x03,
            _ => self.0 & 0x0F,
        }
    }

    /// Divisor from the raw number to the unit (100 or 1000; 1 for temperature).
    #[must_use]
    pub fn divisor(self) -> f64 {
        match self.quantity() {
            Quantity::Current | Quantity::PowerFactor => 1000.0,
            Quantity::Temperature => 1.0,
            _ => 100.0,
        }
    }

    /// The unit, for humans.
    #[must_use]
    pub fn unit(self) -> &'static str {
        match self.quantity() {
            Quantity::Power(PowerKind::Active) => "W",
            Quantity::Power(PowerKind::Reactive) => "var",
            Quantity::Power(_) => "VA",
            Quantity::Voltage | Quantity::LineVoltage => "V",
            Quantity::Current => "A",
            Quantity::PowerFactor => "",
            Quantity::Frequency => "Hz",
            Quantity::Angle => "°",
            Quantity::Thd => "%",
            Quantity::Temperature => "°C",
            Quantity::Other(_) => "",
        }
    }

    /// Data bytes of the `08 11` reply: 2 for temperature, 3 otherwise.
    #[must_use]
    pub fn single_len(self) -> usize {
        if self.quantity() == Quantity::Temperature {
            2
        } else {
            3
        }
    }

    /// Values in the `08 16` block reply: from this phase up to phase 3 (4 with the sum), one for
    /// frequency and temperature.
    #[must_use]
    pub fn block_values(self) -> usize {
        match self.quantity() {
            Quantity::Frequency | Quantity::Temperature => 1,
            _ => usize::from(4u8.saturating_sub(self.phase().min(3))),
        }
    }

    /// Data bytes of the `08 16` block reply.
    #[must_use]
    pub fn block_len(self) -> usize {
        if self.quantity() == Quantity::Temperature {
            2
        } else {
            3 * self.block_values()
        }
    }
}

impl std::fmt::Display for Bwri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.quantity() {
            Quantity::Power(PowerKind::Active) => "active power P",
            Quantity::Power(PowerKind::Reactive) => "reactive power Q",
            Quantity::Power(PowerKind::Apparent) => "apparent power S",
            Quantity::Power(PowerKind::Other) => "power (undefined kind)",
            Quantity::Voltage => "phase voltage",
            Quantity::Current => "current",
            Quantity::PowerFactor => "cos φ",
            Quantity::Frequency => "frequency",
            Quantity::Angle => "angle between phases",
            Quantity::Thd => "THD",
            Quantity::Temperature => "temperature",
            Quantity::LineVoltage => "line voltage",
            Quantity::Other(_) => "unknown quantity",
        };
        match (self.quantity(), self.phase()) {
            (Quantity::Frequency | Quantity::Temperature, _) => write!(f, "{what} (BWRI 0x{:02X})", self.0),
            (_, 0) => write!(f, "{what}, sum (BWRI 0x{:02X})", self.0),
            (_, p) => write!(f, "{what}, L{p} (BWRI 0x{:02X})", self.0),
        }
    }
}

/// The power-profile memory (memory number 3 of command `06`).
pub const PROFILE_MEMORY: u8 = 0x03;
/// Bytes of one power-profile record in memory (it is read as 15 bytes).
pub const PROFILE_RECORD_SIZE: u16 = 0x10;
/// Bytes read per power-profile record.
pub const PROFILE_READ_LEN: u8 = 0x0F;

/// One request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `00`: test the channel (answered with status 0 whether or not the channel is open).
    Test,
    /// `01 level password[6]`: open the channel.
    Open {
        /// Access level.
        level: Level,
        /// Password.
        password: Password,
    },
    /// `02`: close the channel.
    Close,
    /// `04 00`: read the clock (8 BCD bytes).
    ReadTime,
    /// `05 array tariff`: read an energy array.
    ReadEnergy {
        /// Which array.
        array: EnergyArray,
        /// Which tariff.
        tariff: Tariff,
    },
    /// `06 memory address(2, big-endian) length`: read meter memory.
    ReadMemory {
        /// Memory number (3 = power profile).
        memory: u8,
        /// Byte address.
        address: u16,
        /// Bytes to read.
        len: u8,
    },
    /// `08 00`: serial number and manufacture date (7 bytes).
    ReadSerial,
    /// `08 12`: variant (6 bytes; the meter constant is in the second).
    ReadVariant,
    /// `08 13`: the last power-profile record's address, stamp and period (9 bytes).
    ReadLastProfileRecord,
    /// `08 11 bwri`: one instantaneous value.
    ReadInstant(Bwri),
    /// `08 16 bwri`: a block of instantaneous values.
    ReadInstantBlock(Bwri),
    /// Anything else: the code and the parameters as given.
    Other {
        /// Request code.
        code: u8,
        /// Parameter bytes after the code.
        params: Vec<u8>,
    },
}

impl Request {
    /// The power-profile record at byte `address` of memory 3.
    #[must_use]
    pub fn profile_record(address: u16) -> Self {
        Request::ReadMemory { memory: PROFILE_MEMORY, address, len: PROFILE_READ_LEN }
    }

    /// The bytes after the address (code and parameters).
    #[must_use]
    pub fn body(&self) -> Vec<u8> {
        match self {
            Request::Test => vec![0x00],
            Request::Open { level, password } => {
                let mut b = vec![0x01, u8::from(*level)];
                b.extend_from_slice(password.bytes());
                b
            }
            Request::Close => vec![0x02],
            Request::ReadTime => vec![0x04, 0x00],
            Request::ReadEnergy { array, tariff } => vec![0x05, array.param(), tariff.0],
            Request::ReadMemory { memory, address, len } => {
                let [hi, lo] = address.to_be_bytes();
                vec![0x06, *memory, hi, lo, *len]
            }
            Request::ReadSerial => vec![0x08, 0x00],
            Request::ReadVariant => vec![0x08, 0x12],
            Request::ReadLastProfileRecord => vec![0x08, 0x13],
            Request::ReadInstant(b) => vec![0x08, 0x11, b.0],
            Request::ReadInstantBlock(b) => vec![0x08, 0x16, b.0],
            Request::Other { code, params } => {
                let mut b = vec![*code];
                b.extend_from_slice(params);
                b
            }
        }
    }

    /// The complete frame to `address`.
    #[must_use]
    pub fn encode(&self, address: Address) -> Vec<u8> {
        encode(address, &self.body())
    }

    /// Data bytes of the normal reply (1 for requests answered by a status byte only). For
    /// [`Request::Other`] the status byte is assumed.
    #[must_use]
    pub fn reply_len(&self) -> usize {
        match self {
            Request::Test | Request::Open { .. } | Request::Close | Request::Other { .. } => 1,
            Request::ReadTime => 8,
            Request::ReadEnergy { array, .. } => array.reply_len(),
            Request::ReadMemory { len, .. } => usize::from(*len).max(1),
            Request::ReadSerial => 7,
            Request::ReadVariant => 6,
            Request::ReadLastProfileRecord => 9,
            Request::ReadInstant(b) => b.single_len(),
            Request::ReadInstantBlock(b) => b.block_len(),
        }
    }

    /// Whether the meter answers it only on an open channel (everything but test and open).
    #[must_use]
    pub fn needs_channel(&self) -> bool {
        !matches!(self, Request::Test | Request::Open { .. })
    }

    /// A short name for logs and errors.
    #[must_use]
    pub fn name(&self) -> String {
        match self {
            Request::Test => "test channel".into(),
            Request::Open { level, .. } => format!("open channel at level {level}"),
            Request::Close => "close channel".into(),
            Request::ReadTime => "read time".into(),
            Request::ReadEnergy { array, tariff } => format!("read energy ({array}, {tariff})"),
            Request::ReadMemory { memory, address, len } => {
                format!("read memory {memory} at 0x{address:04X}, {len} bytes")
            }
            Request::ReadSerial => "read serial number and manufacture date".into(),
            Request::ReadVariant => "read variant".into(),
            Request::ReadLastProfileRecord => "read last power-profile record".into(),
            Request::ReadInstant(b) => format!("read {b}"),
            Request::ReadInstantBlock(b) => format!("read block of {b}"),
            Request::Other { code, params } => format!("request 0x{code:02X} with {} parameter byte(s)", params.len()),
        }
    }

    /// Meter side: the address and request of one complete request frame. Known codes with a length that
    /// does not fit them are [`Request::Other`] (a real meter stays silent on them).
    ///
    /// # Errors
    /// Bad length or CRC (see [`Frame::parse`]); an empty body.
    pub fn parse(frame: &[u8]) -> Result<(Address, Request), FrameError> {
        let f = Frame::parse(frame)?;
        let body = f.body;
        let request = match body {
            [0x00] => Request::Test,
            [0x01, level, p0, p1, p2, p3, p4, p5] => {
                Request::Open { level: Level::from(*level), password: Password([*p0, *p1, *p2, *p3, *p4, *p5]) }
            }
            [0x02] => Request::Close,
            [0x04, 0x00] => Request::ReadTime,
            [0x05, array, tariff] => Request::ReadEnergy { array: EnergyArray::from(*array), tariff: Tariff(*tariff) },
            [0x06, memory, hi, lo, len] => {
                Request::ReadMemory { memory: *memory, address: u16::from_be_bytes([*hi, *lo]), len: *len }
            }
            [0x08, 0x00] => Request::ReadSerial,
            [0x08, 0x12] => Request::ReadVariant,
            [0x08, 0x13] => Request::ReadLastProfileRecord,
            [0x08, 0x11, b] => Request::ReadInstant(Bwri(*b)),
            [0x08, 0x16, b] => Request::ReadInstantBlock(Bwri(*b)),
            [code, params @ ..] => Request::Other { code: *code, params: params.to_vec() },
            [] => return Err(FrameError::TooShort(frame.len())),
        };
        Ok((f.address, request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_parses_hex_and_hides_itself() {
        let p: Password = "010101010101".parse().unwrap();
        assert_eq!(p, Password::factory_user());
        assert_eq!("313131313131".parse::<Password>().unwrap().bytes(), b"111111");
        assert!("0101".parse::<Password>().is_err());
        assert!("01010101010G".parse::<Password>().is_err());
        assert!("ЖЖЖЖЖЖ".parse::<Password>().is_err());
        assert_eq!(format!("{p:?}"), "Password(<redacted>)");
        let r = Request::Open { level: Level::Admin, password: Password::factory_admin() };
        assert!(!format!("{r:?}").contains("2, 2"));
    }

    #[test]
    fn requests_round_trip_through_the_meter_side_parse() {
        let all = [
            Request::Test,
            Request::Open { level: Level::User, password: Password::factory_user() },
            Request::Close,
            Request::ReadTime,
            Request::ReadEnergy { array: EnergyArray::Month(1), tariff: Tariff(2) },
            Request::ReadEnergy { array: EnergyArray::PhasesFromReset, tariff: Tariff::SUM },
            Request::profile_record(0x1230),
            Request::ReadSerial,
            Request::ReadVariant,
            Request::ReadLastProfileRecord,
            Request::ReadInstant(Bwri::reactive_power(2)),
            Request::ReadInstantBlock(Bwri::voltage(1)),
            Request::Other { code: 0x03, params: vec![0x0C, 0x01] },
        ];
        for r in all {
            assert_eq!(Request::parse(&r.encode(Address(0x2A))).unwrap(), (Address(0x2A), r.clone()), "{}", r.name());
        }
    }

    #[test]
    fn bwri_fields_and_reply_sizes() {
        assert_eq!(Bwri(0x00).block_values(), 4);
        assert_eq!(Bwri(0x11).block_values(), 3);
        assert_eq!(Bwri(0x21).block_len(), 9);
        assert_eq!(Bwri(0x30).block_len(), 12);
        assert_eq!(Bwri::FREQUENCY.block_len(), 3);
        assert_eq!(Bwri::TEMPERATURE.single_len(), 2);
        assert_eq!(Bwri(0x06).quantity(), Quantity::Power(PowerKind::Reactive));
        assert_eq!(Bwri(0x06).phase(), 2);
        assert_eq!(Bwri::current(1).divisor(), 1000.0);
        assert_eq!(Bwri::apparent_power(0).to_string(), "apparent power S, sum (BWRI 0x08)");
        assert_eq!(EnergyArray::from(0x31), EnergyArray::Month(1));
        for b in 0..=0xFFu8 {
            assert_eq!(EnergyArray::from(b).param(), b);
            let level = Level::from(b);
            assert_eq!(u8::from(level), b);
        }
    }
}

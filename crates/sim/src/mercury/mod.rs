//! Simulated Incotex Mercury 230 / 234 meters on one RS-485 line (the Incotex command set).
//!
//! This module owns the meter side of a Mercury line: [`MercuryMeterSpec`] describes a meter (address,
//! serial number, passwords, meter constant, profile period, load), [`MercuryLine`] holds the meters of
//! one line with their channel state and answers request frames without I/O
//! ([`MercuryLine::handle_frame`]), and [`server`] serves a line over TCP, a serial port or a pty.
//!
//! Behaviour of the line (what a master sees):
//! - silence on a bad CRC, an address no meter has, the broadcast address `FE`, a write (`03`/`07`) to
//!   address `00`, and a known request code with a length that does not fit it;
//! - address `00` is answered by the first meter (point-to-point use), with address `00` in the reply;
//! - `00` (test) is answered with status 0 whether the channel is open or not;
//! - `01` opens the channel at level 1 or 2 when the password of that level matches, and answers status
//!   1 (invalid parameter) otherwise; `02` closes it (status 5 when it was not open);
//! - every other request needs an open channel (status 5 otherwise); the channel closes itself after
//!   [`MercuryLine::idle_timeout`] (240 s, shorter in tests) without a valid request, measured on the wall
//!   clock the servers pass in;
//! - writes (`03`, `07`) answer status 3 at level 1 and status 1 (not simulated) at level 2; unknown
//!   arrays, BWRI quantities and memories answer status 1.
//!
//! Values come from a deterministic model over the line's value clock ([`MercuryLine::advance`],
//! [`MercuryLine::catch_up`], or frozen with [`MercuryLine::freeze`] for exact comparisons): active power
//! follows a daily curve `L·(1 − a·cos ωt)` (lowest at midnight, highest at noon, meter time), and the
//! energy counters are its exact integral, so instantaneous power, energy arrays and the power profile
//! agree with each other. The power-profile memory holds one record per integration period, stamped with
//! the period's end, for [`MercuryMeterSpec::profile_history`] periods before the value clock's start and
//! every completed period since, in a ring of [`MercuryMeterSpec::profile_records`] 16-byte records.
//!
//! Panic contract: no request and no byte sequence panics anything here.

pub mod server;

use std::f64::consts::PI;
use std::time::Duration;

use ami_protocols::mercury::frame::{encode, status_reply};
use ami_protocols::mercury::request::{PowerKind, Quantity, PROFILE_MEMORY, PROFILE_RECORD_SIZE};
use ami_protocols::mercury::value::{meter_constant, Date};
use ami_protocols::mercury::{
    Address, Bwri, Energy, EnergyArray, InstantValue, LastRecord, Level, MeterTime, Password, PhaseEnergy,
    ProfileRecord, Request, SerialInfo, Stamp, Status, Tariff,
};
use tokio::time::Instant;

pub use server::{serve, serve_serial, serve_stream, serve_tcp, spawn_tcp, MercurySession, SharedMercuryLine};

/// One simulated meter.
#[derive(Debug, Clone, PartialEq)]
pub struct MercuryMeterSpec {
    /// Network address (`01`–`F0`).
    pub address: Address,
    /// Serial number (8 digits).
    pub serial: u32,
    /// Manufacture date.
    pub made: Date,
    /// Level-1 password. Default `010101010101`.
    pub user_password: Password,
    /// Level-2 password. Default `020202020202`.
    pub admin_password: Password,
    /// Meter constant code (low nibble of the variant's second byte): 0 = 5000 pulses/kWh (default),
    /// 1 = 25 000, 2 = 1250, 3 = 500, 4 = 1000, 5 = 250.
    pub constant_code: u8,
    /// Power-profile integration period in minutes. Default 30.
    pub period: u8,
    /// Power-profile records written before the value clock's start. Default 96 (two days of half hours).
    pub profile_history: u32,
    /// Records in the power-profile ring. Default 4096 (Mercury 230: 64 KiB).
    pub profile_records: u16,
    /// Mean active power over a day, W. Default 3000 (the peak, 1.3× that, keeps a half-hour record
    /// under the 16-bit pulse count at 5000 pulses/kWh).
    pub load_w: f64,
    /// Daily swing `a` of the active power, 0..1. Default 0.3.
    pub swing: f64,
    /// Reactive power as a fraction of active power. Default 0.25.
    pub reactive_ratio: f64,
    /// The active power flows to the grid (a generator): A− counts, P has its reverse bit. Default false.
    pub export: bool,
    /// The reactive power is capacitive: R− counts, Q has its reverse bit. Default false.
    pub capacitive: bool,
    /// Nominal phase voltage, V. Default 230.
    pub voltage: f64,
    /// A+ (or A− when exporting) at value clock 0, Wh. Default 1 234 567.
    pub start_wh: u32,
}

impl MercuryMeterSpec {
    /// A Mercury 230 ART at `address` with serial `serial` and defaults.
    #[must_use]
    pub fn mercury_230(address: u8, serial: u32) -> Self {
        Self {
            address: Address(address),
            serial,
            made: Date { year: 2021, month: 3, day: 15 },
            user_password: Password::factory_user(),
            admin_password: Password::factory_admin(),
            constant_code: 0,
            period: 30,
            profile_history: 96,
            profile_records: 4096,
            load_w: 3000.0,
            swing: 0.3,
            reactive_ratio: 0.25,
            export: false,
            capacitive: false,
            voltage: 230.0,
            start_wh: 1_234_567,
        }
    }

    /// A Mercury 234 ARTM: the same command set here; a larger load (meter constant 1000 pulses/kWh so the
    /// profile counts stay in 16 bits) and hourly profile records.
    #[must_use]
    pub fn mercury_234(address: u8, serial: u32) -> Self {
        Self { constant_code: 4, period: 60, load_w: 12_000.0, ..Self::mercury_230(address, serial) }
    }

    /// Pulses per kWh.
    #[must_use]
    pub fn constant(&self) -> u32 {
        meter_constant(self.constant_code).unwrap_or(5000)
    }
}

/// Counters of a [`MercuryLine`] and the servers sharing it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MercuryStats {
    /// Complete, CRC-valid frames handled.
    pub frames: u64,
    /// Frames answered.
    pub replies: u64,
    /// Frames left unanswered (wrong address, broadcast, write to 00, wrong length).
    pub silent: u64,
    /// Channels opened.
    pub opens: u64,
    /// Open requests refused (wrong password or level).
    pub refused_opens: u64,
    /// Channels that closed themselves after the idle timeout.
    pub expired: u64,
    /// Status 5 (channel not open) replies.
    pub not_open: u64,
    /// Bytes dropped by server deframers to resynchronise.
    pub garbage_bytes: u64,
    /// Connections accepted or ports opened by servers.
    pub connections: u64,
}

/// One meter with its channel state.
#[derive(Debug, Clone)]
struct Meter {
    spec: MercuryMeterSpec,
    /// Open level and the wall time of the last valid request.
    channel: Option<(Level, Instant)>,
}

/// The meters of one Mercury line; answers request frames without I/O.
#[derive(Debug, Clone)]
pub struct MercuryLine {
    meters: Vec<Meter>,
    start: Stamp,
    clock: Duration,
    wall: Option<Instant>,
    frozen: bool,
    idle_timeout: Duration,
    stats: MercuryStats,
}

/// Why a meter specification was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MercurySimError {
    /// Individual addresses are `01`–`F0`.
    #[error("address {0} is not an individual address (01..F0)")]
    BadAddress(Address),
    /// Two meters with one address.
    #[error("address {0} is already taken on this line")]
    DuplicateAddress(Address),
    /// The integration period must divide an hour or a day evenly (1–255 minutes, not 0).
    #[error("integration period 0 minutes")]
    BadPeriod,
}

/// Seconds in a day.
const DAY: f64 = 86_400.0;

impl MercuryLine {
    /// Lowest and highest meter-time moment the model serves.
    const MIN_MINUTES: i64 = 0;

    /// A line without meters whose meter clocks show `start` at value clock 0; idle timeout 240 s.
    #[must_use]
    pub fn new(start: Stamp) -> Self {
        Self {
            meters: Vec::new(),
            start,
            clock: Duration::ZERO,
            wall: None,
            frozen: false,
            idle_timeout: Duration::from_secs(240),
            stats: MercuryStats::default(),
        }
    }

    /// A line with `specs`, starting at `start`.
    ///
    /// # Errors
    /// As [`MercuryLine::add`].
    pub fn with_meters(
        start: Stamp,
        specs: impl IntoIterator<Item = MercuryMeterSpec>,
    ) -> Result<Self, MercurySimError> {
        let mut line = Self::new(start);
        for s in specs {
            line.add(s)?;
        }
        Ok(line)
    }

    /// Adds a meter (channel closed).
    ///
    /// # Errors
    /// A non-individual or duplicate address, a period of 0.
    pub fn add(&mut self, spec: MercuryMeterSpec) -> Result<(), MercurySimError> {
        if !spec.address.is_individual() {
            return Err(MercurySimError::BadAddress(spec.address));
        }
        if self.meters.iter().any(|m| m.spec.address == spec.address) {
            return Err(MercurySimError::DuplicateAddress(spec.address));
        }
        if spec.period == 0 {
            return Err(MercurySimError::BadPeriod);
        }
        self.meters.push(Meter { spec, channel: None });
        Ok(())
    }

    /// The meters' specifications.
    pub fn specs(&self) -> impl Iterator<Item = &MercuryMeterSpec> {
        self.meters.iter().map(|m| &m.spec)
    }

    /// The channel idle timeout (240 s by default).
    #[must_use]
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// Sets the channel idle timeout (short values for tests).
    pub fn set_idle_timeout(&mut self, timeout: Duration) {
        self.idle_timeout = timeout;
    }

    /// Stops (`true`) or restarts the value clock following the wall clock in [`MercuryLine::catch_up`];
    /// [`MercuryLine::advance`] still moves it.
    pub fn freeze(&mut self, frozen: bool) {
        self.frozen = frozen;
        self.wall = None;
    }

    /// The value clock.
    #[must_use]
    pub fn clock(&self) -> Duration {
        self.clock
    }

    /// Moves the value clock forward.
    pub fn advance(&mut self, by: Duration) {
        self.clock = self.clock.saturating_add(by);
    }

    /// Moves the value clock forward by the wall time passed since the previous call (not when frozen).
    pub fn catch_up(&mut self, now: Instant) {
        if self.frozen {
            return;
        }
        if let Some(wall) = self.wall {
            self.advance(now.saturating_duration_since(wall));
        }
        if self.wall.is_none_or(|w| now > w) {
            self.wall = Some(now);
        }
    }

    /// The counters so far.
    #[must_use]
    pub fn stats(&self) -> MercuryStats {
        self.stats.clone()
    }

    pub(crate) fn stats_mut(&mut self) -> &mut MercuryStats {
        &mut self.stats
    }

    /// Whether the channel of the meter at `address` is open at wall time `now`.
    #[must_use]
    pub fn is_open(&self, address: Address, now: Instant) -> bool {
        self.meter(address)
            .is_some_and(|m| m.channel.is_some_and(|(_, last)| now.saturating_duration_since(last) < self.idle_timeout))
    }

    fn meter(&self, address: Address) -> Option<&Meter> {
        self.meters.iter().find(|m| m.spec.address == address)
    }

    /// Meter-time seconds since 2000-01-01 at the value clock.
    fn now_seconds(&self) -> f64 {
        // Minutes since 2000 fit f64 exactly; the clock adds its fraction.
        (self.start.minutes() as f64) * 60.0 + self.clock.as_secs_f64()
    }

    /// The meter time at the value clock.
    #[must_use]
    pub fn meter_time(&self) -> MeterTime {
        let secs = self.now_seconds();
        let minutes = (secs / 60.0).floor();
        let stamp = Stamp::from_minutes(minutes as i64);
        let second = u8::try_from(((secs - minutes * 60.0).floor() as i64).clamp(0, 59)).unwrap_or(0);
        let days = stamp.minutes().div_euclid(1440);
        // 2000-01-01 was a Saturday; the meter counts Monday = 1 … Sunday = 7 here.
        let weekday = u8::try_from((days + 5).rem_euclid(7) + 1).unwrap_or(1);
        let winter = !(4..=10).contains(&stamp.date.month);
        MeterTime { stamp, second, weekday, winter }
    }

    /// Active power (total, W, magnitude) at meter-time second `s`.
    fn power(spec: &MercuryMeterSpec, s: f64) -> f64 {
        let a = spec.swing.clamp(0.0, 1.0);
        finite(spec.load_w).max(0.0) * (1.0 - a * (2.0 * PI * s / DAY).cos())
    }

    /// Energy (Wh) of the power curve from meter-time second 0 to `s` (the exact integral).
    fn integral_wh(spec: &MercuryMeterSpec, s: f64) -> f64 {
        let a = spec.swing.clamp(0.0, 1.0);
        let w = 2.0 * PI / DAY;
        finite(spec.load_w).max(0.0) * (s - a / w * (w * s).sin()) / 3600.0
    }

    /// The active-energy counter growth (Wh) from value clock 0 to meter-time second `s`.
    fn grown_wh(&self, spec: &MercuryMeterSpec, s: f64) -> f64 {
        let s0 = self.start.minutes() as f64 * 60.0;
        Self::integral_wh(spec, s) - Self::integral_wh(spec, s0)
    }

    /// All four counters (Wh, varh) at meter-time second `s`, for tariff `tariff` (0 = sum; tariff 1
    /// takes 70 %, tariff 2 the rest, tariffs 3 and 4 nothing).
    fn counters(&self, spec: &MercuryMeterSpec, s: f64, tariff: u8) -> [f64; 4] {
        let grown = self.grown_wh(spec, s);
        let base = f64::from(spec.start_wh);
        let active = (base + grown).max(0.0);
        let reactive = (base * spec.reactive_ratio + grown * spec.reactive_ratio).max(0.0);
        let (a_plus, a_minus) = if spec.export { (1000.0, active) } else { (active, 1000.0) };
        let (r_plus, r_minus) = if spec.capacitive { (500.0, reactive) } else { (reactive, 500.0) };
        let share = match tariff {
            0 => 1.0,
            1 => 0.7,
            2 => 0.3,
            _ => 0.0,
        };
        [a_plus * share, a_minus * share, r_plus * share, r_minus * share]
    }

    /// The energy array `array` for `tariff` of the meter at `address`, as it would answer now; `None` for
    /// an unknown meter, array or tariff.
    #[must_use]
    pub fn energy(&self, address: Address, array: EnergyArray, tariff: Tariff) -> Option<Energy> {
        let spec = &self.meter(address)?.spec;
        if tariff.0 > 4 {
            return None;
        }
        let now = self.now_seconds();
        let t = self.meter_time().stamp;
        let midnight = Stamp::at(t.date, 0, 0).minutes() as f64 * 60.0;
        let at_minutes = |s: Stamp| s.minutes() as f64 * 60.0;
        let year_start = |y: u16| at_minutes(Stamp::at(Date { year: y, month: 1, day: 1 }, 0, 0));
        let (from, to) = match array {
            EnergyArray::FromReset => return Some(self.energy_at(spec, now, None, tariff.0)),
            EnergyArray::CurrentYear => (year_start(t.date.year), now),
            EnergyArray::PreviousYear => (year_start(t.date.year.saturating_sub(1)), year_start(t.date.year)),
            EnergyArray::Month(m) if (1..=12).contains(&m) => {
                let start = at_minutes(Stamp::at(Date { year: t.date.year, month: m, day: 1 }, 0, 0));
                let end = if m == 12 {
                    year_start(t.date.year + 1)
                } else {
                    at_minutes(Stamp::at(Date { year: t.date.year, month: m + 1, day: 1 }, 0, 0))
                };
                (start.min(now), end.min(now))
            }
            EnergyArray::Today => (midnight, now),
            EnergyArray::Yesterday => (midnight - DAY, midnight),
            _ => return None,
        };
        Some(self.energy_at(spec, to, Some(from), tariff.0))
    }

    /// Counters at `to`, minus those at `from` when given.
    fn energy_at(&self, spec: &MercuryMeterSpec, to: f64, from: Option<f64>, tariff: u8) -> Energy {
        let end = self.counters(spec, to, tariff);
        let start = from.map_or([0.0; 4], |f| self.counters(spec, f, tariff));
        let v = |i: usize| Some(wh(end[i] - start[i]));
        Energy { a_plus: v(0), a_minus: v(1), r_plus: v(2), r_minus: v(3) }
    }

    /// A+ per phase from reset (shares 36 %, 33 %, 31 %), `None` for an unknown meter or tariff.
    #[must_use]
    pub fn phase_energy(&self, address: Address, tariff: Tariff) -> Option<PhaseEnergy> {
        let e = self.energy(address, EnergyArray::FromReset, tariff)?;
        let total = f64::from(e.a_plus.unwrap_or(0));
        Some(PhaseEnergy { phases: SHARES.map(|k| Some(wh(total * k))) })
    }

    /// The instantaneous value(s) of `bwri` as `08 11` (one) or `08 16` (`block`) would answer now;
    /// `None` for an unknown meter or quantity (and for temperature, see [`MercuryLine::temperature`]).
    #[must_use]
    pub fn instant(&self, address: Address, bwri: Bwri, block: bool) -> Option<Vec<InstantValue>> {
        let spec = &self.meter(address)?.spec;
        let n = if block { bwri.block_values() } else { 1 };
        let s = self.now_seconds();
        (0..n)
            .map(|k| {
                let b = Bwri(bwri.0.wrapping_add(u8::try_from(k).unwrap_or(0)));
                let (value, power) = Self::quantity(spec, b, s)?;
                let raw = (value.abs() * b.divisor()).round().clamp(0.0, f64::from(InstantValue::MAX_RAW));
                Some(InstantValue {
                    bwri: b,
                    raw: raw as u32,
                    active_reverse: power && spec.export,
                    reactive_reverse: power && spec.capacitive,
                })
            })
            .collect()
    }

    /// Value (in its unit, magnitude) of one BWRI and whether it is a power (direction bits apply).
    fn quantity(spec: &MercuryMeterSpec, b: Bwri, s: f64) -> Option<(f64, bool)> {
        let phase = b.phase();
        let p_total = Self::power(spec, s);
        let share = |ph: u8| match ph {
            0 => 1.0,
            1..=3 => SHARES[usize::from(ph - 1)],
            _ => 0.0,
        };
        let voltage = |ph: u8| {
            let offset = [0.6, -0.4, 0.2].get(usize::from(ph.max(1) - 1)).copied().unwrap_or(0.0);
            finite(spec.voltage) + offset + 1.5 * (2.0 * PI * s * 7.0 / DAY + f64::from(ph)).sin()
        };
        let p = |ph: u8| p_total * share(ph);
        let q = |ph: u8| p(ph) * spec.reactive_ratio;
        let apparent = |ph: u8| (p(ph).powi(2) + q(ph).powi(2)).sqrt();
        Some(match b.quantity() {
            Quantity::Power(PowerKind::Active) if phase <= 3 => (p(phase), true),
            Quantity::Power(PowerKind::Reactive) if phase <= 3 => (q(phase), true),
            Quantity::Power(PowerKind::Apparent) if phase <= 3 => (apparent(phase), true),
            Quantity::Voltage if (1..=3).contains(&phase) => (voltage(phase), false),
            Quantity::LineVoltage if (1..=3).contains(&phase) => (voltage(phase) * 3f64.sqrt(), false),
            Quantity::Current if (1..=3).contains(&phase) => (apparent(phase) / voltage(phase).max(1.0), false),
            Quantity::PowerFactor if phase <= 3 => {
                let s_ph = apparent(phase);
                (if s_ph > 0.0 { p(phase) / s_ph } else { 1.0 }, false)
            }
            Quantity::Frequency => (50.0 + 0.03 * (2.0 * PI * s * 13.0 / DAY).sin(), false),
            Quantity::Angle if (1..=3).contains(&phase) => (120.0, false),
            Quantity::Thd if (1..=3).contains(&phase) => (2.5, false),
            _ => return None,
        })
    }

    /// The temperature inside the meter, °C.
    #[must_use]
    pub fn temperature(&self) -> i16 {
        let s = self.now_seconds();
        (24.0 + 3.0 * (2.0 * PI * s / DAY).sin()).round() as i16
    }

    /// Serial number and manufacture date of the meter at `address`.
    #[must_use]
    pub fn serial(&self, address: Address) -> Option<SerialInfo> {
        let spec = &self.meter(address)?.spec;
        Some(SerialInfo { serial: spec.serial % 100_000_000, made: spec.made })
    }

    /// Index of the newest completed profile period (period k ends at `start + k·T`), and the first one
    /// ever written.
    fn periods(&self, spec: &MercuryMeterSpec) -> (i64, i64) {
        let t = i64::from(spec.period.max(1));
        let elapsed = i64::try_from(self.clock.as_secs() / 60).unwrap_or(i64::MAX);
        let last = elapsed / t;
        let first = 1 - i64::from(spec.profile_history);
        (last, first.min(last))
    }

    /// The record of period `k` (ending at `start + k·T` meter time).
    fn record(&self, spec: &MercuryMeterSpec, k: i64) -> ProfileRecord {
        let t = i64::from(spec.period.max(1));
        let end_min = self.start.minutes() + k * t;
        let end = end_min as f64 * 60.0;
        let begin = end - t as f64 * 60.0;
        let pulses = |wh_: f64| {
            let n = (wh_ * 2.0 * f64::from(spec.constant()) / 1000.0).round();
            Some(n.clamp(0.0, 65_534.0) as u16)
        };
        let e = Self::integral_wh(spec, end) - Self::integral_wh(spec, begin);
        let (p_plus, p_minus) = if spec.export { (0.0, e) } else { (e, 0.0) };
        let (q_plus, q_minus) =
            if spec.capacitive { (0.0, e * spec.reactive_ratio) } else { (e * spec.reactive_ratio, 0.0) };
        ProfileRecord {
            status: 0,
            stamp: Stamp::from_minutes(end_min.max(Self::MIN_MINUTES)),
            period: spec.period,
            counts: [pulses(p_plus), pulses(p_minus), pulses(q_plus), pulses(q_minus)],
        }
    }

    /// Ring slot (record index) of period `k`.
    fn slot(spec: &MercuryMeterSpec, k: i64) -> i64 {
        (k - 1 + i64::from(spec.profile_history)).rem_euclid(i64::from(spec.profile_records.max(1)))
    }

    /// The newest profile record's address, stamp and period of the meter at `address`.
    #[must_use]
    pub fn last_record(&self, address: Address) -> Option<LastRecord> {
        let spec = &self.meter(address)?.spec;
        let (last, _) = self.periods(spec);
        let rec = self.record(spec, last);
        let slot = Self::slot(spec, last);
        let addr = u16::try_from(slot * i64::from(PROFILE_RECORD_SIZE)).unwrap_or(0);
        Some(LastRecord { address: addr, status: 0, stamp: rec.stamp, period: spec.period })
    }

    /// The 16 bytes of profile memory slot `slot` (`FF` when never written).
    fn slot_bytes(&self, spec: &MercuryMeterSpec, slot: i64) -> [u8; 16] {
        let (last, first) = self.periods(spec);
        let ring = i64::from(spec.profile_records.max(1));
        // The newest period in this slot: the largest k <= last with slot(k) == slot.
        let k = last - (Self::slot(spec, last) - slot).rem_euclid(ring);
        let mut out = [0xFF; 16];
        if k >= first {
            out[..15].copy_from_slice(&self.record(spec, k).encode());
        }
        out
    }

    /// `len` bytes of profile memory from byte `address` (wrapping at the ring's end).
    fn read_profile_memory(&self, spec: &MercuryMeterSpec, address: u16, len: u8) -> Vec<u8> {
        let ring = i64::from(spec.profile_records.max(1)) * i64::from(PROFILE_RECORD_SIZE);
        (0..i64::from(len))
            .map(|i| {
                let a = (i64::from(address) + i).rem_euclid(ring);
                let bytes = self.slot_bytes(spec, a / 16);
                bytes.get(usize::try_from(a % 16).unwrap_or(0)).copied().unwrap_or(0xFF)
            })
            .collect()
    }

    /// The profile records with `from < stamp <= to` of the meter at `address`, oldest first (what a
    /// complete read-out must give).
    #[must_use]
    pub fn profile(&self, address: Address, from: Stamp, to: Stamp) -> Vec<ProfileRecord> {
        let Some(m) = self.meter(address) else { return Vec::new() };
        let (last, first) = self.periods(&m.spec);
        let oldest = first.max(last - i64::from(m.spec.profile_records) + 1);
        (oldest..=last).map(|k| self.record(&m.spec, k)).filter(|r| r.stamp > from && r.stamp <= to).collect()
    }

    /// Parses `request` as one frame and answers it at wall time `now`; `None` for silence.
    pub fn handle_frame(&mut self, now: Instant, request: &[u8]) -> Option<Vec<u8>> {
        let Ok((address, req)) = Request::parse(request) else {
            return None;
        };
        self.stats.frames = self.stats.frames.saturating_add(1);
        let reply = self.answer(now, address, &req);
        match &reply {
            Some(_) => self.stats.replies = self.stats.replies.saturating_add(1),
            None => self.stats.silent = self.stats.silent.saturating_add(1),
        }
        reply
    }

    fn answer(&mut self, now: Instant, address: Address, req: &Request) -> Option<Vec<u8>> {
        let index = if address == Address::ANY {
            if matches!(req, Request::Other { code: 0x03 | 0x07, .. }) {
                return None;
            }
            0
        } else {
            self.meters.iter().position(|m| m.spec.address == address)?
        };
        // A known code with a length that does not fit it: a real meter stays silent.
        if let Request::Other { code: 0x00..=0x02 | 0x04 | 0x05 | 0x06 | 0x08, .. } = req {
            return None;
        }
        let idle = self.idle_timeout;
        let meter = self.meters.get_mut(index)?;
        // The channel closes itself after the idle timeout.
        if let Some((_, last)) = meter.channel {
            if now.saturating_duration_since(last) >= idle {
                meter.channel = None;
                self.stats.expired = self.stats.expired.saturating_add(1);
            }
        }
        let level = meter.channel.map(|(l, _)| l);
        let status = |s: Status| Some(status_reply(address, s));
        let data = |d: &[u8]| Some(encode(address, d));
        let spec = meter.spec.clone();
        let reply = match req {
            Request::Test => status(Status::Ok),
            Request::Open { level: want, password } => {
                let ok = match want {
                    Level::User => *password == spec.user_password,
                    Level::Admin => *password == spec.admin_password,
                    Level::Other(_) => false,
                };
                if ok {
                    if let Some(m) = self.meters.get_mut(index) {
                        m.channel = Some((*want, now));
                    }
                    self.stats.opens = self.stats.opens.saturating_add(1);
                    return status(Status::Ok);
                }
                self.stats.refused_opens = self.stats.refused_opens.saturating_add(1);
                return status(Status::InvalidCommand);
            }
            _ if level.is_none() => {
                self.stats.not_open = self.stats.not_open.saturating_add(1);
                return status(Status::ChannelNotOpen);
            }
            Request::Close => {
                if let Some(m) = self.meters.get_mut(index) {
                    m.channel = None;
                }
                return status(Status::Ok);
            }
            Request::ReadTime => data(&self.meter_time().encode()),
            Request::ReadEnergy { array: EnergyArray::PhasesFromReset, tariff } => {
                match self.phase_energy(spec.address, *tariff) {
                    Some(e) => data(&e.encode()),
                    None => status(Status::InvalidCommand),
                }
            }
            Request::ReadEnergy { array, tariff } => match self.energy(spec.address, *array, *tariff) {
                Some(e) => data(&e.encode()),
                None => status(Status::InvalidCommand),
            },
            Request::ReadMemory { memory: PROFILE_MEMORY, address: at, len } if (1..=16).contains(len) => {
                data(&self.read_profile_memory(&spec, *at, *len))
            }
            Request::ReadMemory { .. } => status(Status::InvalidCommand),
            Request::ReadSerial => data(&self.serial(spec.address).map(|s| s.encode()).unwrap_or_default()),
            Request::ReadVariant => data(&[0x00, spec.constant_code & 0x0F, 0x00, 0x00, 0x00, 0x00]),
            Request::ReadLastProfileRecord => match self.last_record(spec.address) {
                Some(r) => data(&r.encode()),
                None => status(Status::InternalError),
            },
            Request::ReadInstant(b) if *b == Bwri::TEMPERATURE => data(&self.temperature().to_be_bytes()),
            Request::ReadInstantBlock(b) if *b == Bwri::TEMPERATURE => data(&self.temperature().to_be_bytes()),
            Request::ReadInstant(b) | Request::ReadInstantBlock(b) => {
                let block = matches!(req, Request::ReadInstantBlock(_));
                match self.instant(spec.address, *b, block) {
                    Some(values) => data(&values.iter().flat_map(InstantValue::to_bytes).collect::<Vec<u8>>()),
                    None => status(Status::InvalidCommand),
                }
            }
            Request::Other { code: 0x03 | 0x07, .. } if level == Some(Level::User) => status(Status::AccessDenied),
            Request::Other { .. } => status(Status::InvalidCommand),
        };
        if let Some(m) = self.meters.get_mut(index) {
            if let Some((l, _)) = m.channel {
                m.channel = Some((l, now));
            }
        }
        reply
    }
}

/// Phase shares of the total power.
const SHARES: [f64; 3] = [0.36, 0.33, 0.31];

fn finite(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        0.0
    }
}

/// Wh as an energy register value (0 … `u32::MAX − 1`, which is not the "not applicable" pattern).
fn wh(v: f64) -> u32 {
    finite(v).floor().clamp(0.0, f64::from(u32::MAX - 1)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use ami_protocols::mercury::value::decode_temperature;

    fn line() -> MercuryLine {
        let start = Stamp::new(2026, 3, 1, 0, 0).unwrap();
        MercuryLine::with_meters(start, [MercuryMeterSpec::mercury_230(0x80, 12_345_128)]).unwrap()
    }

    fn ask(line: &mut MercuryLine, now: Instant, r: &Request) -> Option<Vec<u8>> {
        line.handle_frame(now, &r.encode(Address(0x80)))
    }

    const OK: [u8; 4] = [0x80, 0x00, 0x60, 0x70];

    #[test]
    fn session_levels_passwords_and_timeout() {
        let mut l = line();
        l.set_idle_timeout(Duration::from_secs(240));
        let t0 = Instant::now();
        assert_eq!(ask(&mut l, t0, &Request::ReadSerial), Some(vec![0x80, 0x05, 0xA0, 0x73]));
        assert_eq!(ask(&mut l, t0, &Request::Test), Some(OK.to_vec()));
        let bad = Request::Open { level: Level::User, password: Password::factory_admin() };
        assert_eq!(ask(&mut l, t0, &bad), Some(status_reply(Address(0x80), Status::InvalidCommand)));
        let open = Request::Open { level: Level::User, password: Password::factory_user() };
        assert_eq!(ask(&mut l, t0, &open), Some(OK.to_vec()));
        let serial = ask(&mut l, t0, &Request::ReadSerial).unwrap();
        assert_eq!(serial[1..8], [12, 34, 51, 28, 15, 3, 21]);
        // Level 1 may not write.
        let write = Request::Other { code: 0x03, params: vec![0x0C, 0x01] };
        assert_eq!(ask(&mut l, t0, &write), Some(status_reply(Address(0x80), Status::AccessDenied)));
        // Each valid request restarts the idle time; 240 s after the last one the channel is gone.
        let t1 = t0 + Duration::from_secs(200);
        assert!(ask(&mut l, t1, &Request::ReadTime).is_some_and(|r| r.len() == 11));
        assert!(l.is_open(Address(0x80), t1 + Duration::from_secs(239)));
        assert_eq!(ask(&mut l, t1 + Duration::from_secs(240), &Request::ReadTime), Some(vec![0x80, 0x05, 0xA0, 0x73]));
        assert_eq!(l.stats().expired, 1);
        assert_eq!(l.stats().refused_opens, 1);
    }

    #[test]
    fn silence_on_wrong_address_bad_crc_broadcast_write_to_0_and_wrong_length() {
        let mut l = line();
        let t0 = Instant::now();
        assert_eq!(l.handle_frame(t0, &Request::Test.encode(Address(0x81))), None);
        assert_eq!(l.handle_frame(t0, &[0x80, 0x00, 0x60, 0x71]), None);
        assert_eq!(l.handle_frame(t0, &Request::Test.encode(Address::BROADCAST)), None);
        let write = Request::Other { code: 0x03, params: vec![0x0C, 0x01] };
        assert_eq!(l.handle_frame(t0, &write.encode(Address::ANY)), None);
        let wrong_len = Request::Other { code: 0x08, params: vec![0x11, 0x40, 0x00] };
        assert_eq!(l.handle_frame(t0, &wrong_len.encode(Address(0x80))), None);
        // Address 00: the meter answers with 00.
        assert_eq!(l.handle_frame(t0, &Request::Test.encode(Address::ANY)), Some(vec![0x00, 0x00, 0x01, 0xB0]));
        assert_eq!(l.stats().silent, 4);
    }

    #[test]
    fn values_are_consistent_and_deterministic() {
        let mut l = line();
        l.freeze(true);
        let a = Address(0x80);
        let e0 = l.energy(a, EnergyArray::FromReset, Tariff::SUM).unwrap();
        assert_eq!(e0.a_plus, Some(1_234_567));
        l.advance(Duration::from_secs(3600));
        let e1 = l.energy(a, EnergyArray::FromReset, Tariff::SUM).unwrap();
        // Around midnight the load is at its low: 3000 W × (1 − 0.3) ≈ 2.1 kWh in the first hour.
        let grown = e1.a_plus.unwrap() - e0.a_plus.unwrap();
        assert!((2100..2150).contains(&grown), "{grown}");
        let today = l.energy(a, EnergyArray::Today, Tariff::SUM).unwrap();
        assert_eq!(today.a_plus, Some(grown));
        let t1 = l.energy(a, EnergyArray::FromReset, Tariff(1)).unwrap().a_plus.unwrap();
        assert!((f64::from(t1) - 0.7 * f64::from(e1.a_plus.unwrap())).abs() <= 1.0);
        // Two half-hour records completed in this hour, and their pulses add up to the energy.
        let recs = l.profile(a, Stamp::new(2026, 3, 1, 0, 0).unwrap(), Stamp::new(2026, 3, 1, 1, 0).unwrap());
        assert_eq!(recs.len(), 2);
        let wh: f64 = recs.iter().map(|r| r.energy_wh(0, 5000).unwrap()).sum();
        assert!((wh - f64::from(grown)).abs() < 2.0, "{wh} vs {grown}");
        let last = l.last_record(a).unwrap();
        assert_eq!(last.stamp, Stamp::new(2026, 3, 1, 1, 0).unwrap());
        let bytes = l.read_profile_memory(&l.meters[0].spec.clone(), last.address, 15);
        assert_eq!(ProfileRecord::decode(&bytes), Ok(recs[1]));
        // Instantaneous power at 01:00 and the block of voltages.
        let p = l.instant(a, Bwri::active_power(0), false).unwrap();
        assert!((p[0].value() - 3000.0 * (1.0 - 0.3 * (2.0 * PI / 24.0).cos())).abs() < 0.01);
        let u = l.instant(a, Bwri::voltage(1), true).unwrap();
        assert_eq!(u.len(), 3);
        assert!(u.iter().all(|v| (225.0..235.0).contains(&v.value())));
        assert_eq!(decode_temperature(&l.temperature().to_be_bytes()), Ok(l.temperature()));
        assert_eq!(l.meter_time().stamp, Stamp::new(2026, 3, 1, 1, 0).unwrap());
        // 2026-03-01 is a Sunday.
        assert_eq!(l.meter_time().weekday, 7);
    }

    #[test]
    fn never_written_profile_memory_reads_ff() {
        let mut l = line();
        l.freeze(true);
        let spec = l.meters[0].spec.clone();
        // 96 history records fill slots 0..=95; slot 96 is blank until the first period completes.
        assert_eq!(l.read_profile_memory(&spec, 96 * 16, 15), vec![0xFF; 15]);
        assert!(ProfileRecord::decode(&l.read_profile_memory(&spec, 95 * 16, 15)).is_ok());
        l.advance(Duration::from_secs(1800));
        assert!(ProfileRecord::decode(&l.read_profile_memory(&spec, 96 * 16, 15)).is_ok());
    }
}

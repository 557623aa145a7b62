//! The deterministic electricity model of a simulated DLMS meter: every value is a closed formula of the
//! meter's time (Unix seconds) and the spec's seed, so the load profile can be generated lazily for any
//! interval, restarting the meter (with any clock offset) yields the same history, and a test can compute
//! what a register must hold.
//!
//! - Import power `P(t) = base + amp · sin(2π·t/day)` W (`amp < base`, so it never goes negative); the
//!   import energy is its integral from [`EPOCH`], in Wh: monotonic, never stored.
//! - Export power `Q(t) = peak/2 · (1 − cos(2π·t/day))` W ≥ 0; its integral is the export energy.
//! - Tariff 1 is 06:00–22:00 UTC, tariff 2 the rest; the tariff registers are integrals over those windows
//!   and (as integers) sum exactly to the totals.
//! - Voltages, currents and frequency wander smoothly around nominal values.

use std::f64::consts::TAU;

/// The model's time origin (2020-01-01T00:00:00Z): energies count from here.
pub(crate) const EPOCH: i64 = 1_577_836_800;
/// Seconds per day.
pub(crate) const DAY: i64 = 86_400;
/// Start of tariff 1 (seconds after midnight UTC).
pub(crate) const TARIFF1_START: i64 = 6 * 3600;
/// End of tariff 1 (seconds after midnight UTC).
pub(crate) const TARIFF1_END: i64 = 22 * 3600;

/// The parameters of one meter's model, derived from its seed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Model {
    /// Mean import power, W.
    base_w: f64,
    /// Amplitude of the daily import swing, W (less than `base_w`).
    amp_w: f64,
    /// Peak export power, W.
    export_peak_w: f64,
    /// Import energy at the epoch, Wh.
    import0_wh: f64,
    /// Export energy at the epoch, Wh.
    export0_wh: f64,
    /// Phase shift of the wandering values, radians.
    phase: f64,
}

/// A small deterministic hash of the seed (splitmix64), so nearby seeds give unrelated meters.
fn mix(seed: u64, salt: u64) -> u64 {
    let mut z = seed.wrapping_add(salt.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A number in `0..1` from the seed.
fn unit(seed: u64, salt: u64) -> f64 {
    (mix(seed, salt) >> 11) as f64 / (1u64 << 53) as f64
}

impl Model {
    /// The model of the meter with `seed`.
    pub(crate) fn new(seed: u64) -> Model {
        let base_w = 300.0 + 700.0 * unit(seed, 1);
        Model {
            base_w,
            amp_w: base_w * (0.3 + 0.5 * unit(seed, 2)),
            export_peak_w: 200.0 + 1800.0 * unit(seed, 3),
            import0_wh: (1_000_000.0 * unit(seed, 4)).floor(),
            export0_wh: (100_000.0 * unit(seed, 5)).floor(),
            phase: TAU * unit(seed, 6),
        }
    }

    /// Seconds since the epoch, as a float (times before the epoch count as the epoch).
    fn since_epoch(t: i64) -> f64 {
        t.saturating_sub(EPOCH).max(0) as f64
    }

    /// Import energy from the epoch to `t` excluding the starting value: ∫ P dt / 3600.
    fn import_integral(&self, s: f64) -> f64 {
        let w = TAU / DAY as f64;
        (self.base_w * s + self.amp_w * (1.0 - (w * s).cos()) / w) / 3600.0
    }

    /// Export energy integral from the epoch, Wh.
    fn export_integral(&self, s: f64) -> f64 {
        let w = TAU / DAY as f64;
        (self.export_peak_w / 2.0) * (s - (w * s).sin() / w) / 3600.0
    }

    /// Active energy import total (register 1-0:1.8.0) at Unix time `t`, Wh.
    pub(crate) fn import_wh(&self, t: i64) -> f64 {
        self.import0_wh + self.import_integral(Self::since_epoch(t))
    }

    /// Active energy export total (register 1-0:2.8.0) at Unix time `t`, Wh.
    pub(crate) fn export_wh(&self, t: i64) -> f64 {
        self.export0_wh + self.export_integral(Self::since_epoch(t))
    }

    /// The part of an integral `f` accumulated inside the tariff 1 windows from the epoch to `t`.
    fn tariff1(f: impl Fn(f64) -> f64, t: i64) -> f64 {
        let s = t.saturating_sub(EPOCH).max(0);
        let (days, in_day) = (s / DAY, s % DAY);
        // The powers are periodic by the day: every full day contributes the same tariff 1 energy.
        let per_day = f(TARIFF1_END as f64) - f(TARIFF1_START as f64);
        let day_start = (days * DAY) as f64;
        let partial = if in_day <= TARIFF1_START {
            0.0
        } else {
            let end = in_day.min(TARIFF1_END) as f64;
            f(day_start + end) - f(day_start + TARIFF1_START as f64)
        };
        days as f64 * per_day + partial
    }

    /// Import energy registered in tariff 1 (06:00–22:00 UTC) at `t`, Wh (the starting value counts as
    /// tariff 1).
    pub(crate) fn import_t1_wh(&self, t: i64) -> f64 {
        self.import0_wh + Self::tariff1(|s| self.import_integral(s), t)
    }

    /// Export energy registered in tariff 1 at `t`, Wh.
    pub(crate) fn export_t1_wh(&self, t: i64) -> f64 {
        self.export0_wh + Self::tariff1(|s| self.export_integral(s), t)
    }

    /// Instantaneous import power at `t`, W.
    pub(crate) fn import_w(&self, t: i64) -> f64 {
        let s = Self::since_epoch(t);
        self.base_w + self.amp_w * (TAU * s / DAY as f64).sin()
    }

    /// Instantaneous export power at `t`, W.
    pub(crate) fn export_w(&self, t: i64) -> f64 {
        let s = Self::since_epoch(t);
        self.export_peak_w / 2.0 * (1.0 - (TAU * s / DAY as f64).cos())
    }

    /// A slow wobble in `-1..=1` for phase `phase` (0..3) and quantity `q`.
    fn wobble(&self, t: i64, phase: usize, q: f64) -> f64 {
        let s = Self::since_epoch(t);
        (TAU * s / (3600.0 + 600.0 * q) + self.phase + phase as f64 * TAU / 3.0).sin()
    }

    /// Voltage of phase `phase` (0..3) at `t`, V.
    pub(crate) fn voltage_v(&self, t: i64, phase: usize) -> f64 {
        230.0 + 3.0 * self.wobble(t, phase, 1.0)
    }

    /// Import power of phase `phase` at `t`, W (the three phases sum to [`Model::import_w`]).
    pub(crate) fn phase_power_w(&self, t: i64, phase: usize) -> f64 {
        let share = [0.36, 0.33, 0.31];
        self.import_w(t) * share.get(phase).copied().unwrap_or(0.0)
    }

    /// Current of phase `phase` at `t`, A.
    pub(crate) fn current_a(&self, t: i64, phase: usize) -> f64 {
        self.phase_power_w(t, phase) / self.voltage_v(t, phase)
    }

    /// Grid frequency at `t`, Hz.
    pub(crate) fn frequency_hz(&self, t: i64) -> f64 {
        50.0 + 0.04 * self.wobble(t, 0, 3.0)
    }

    /// Average import power over `[from, to)`, W (0 for an empty interval).
    pub(crate) fn average_import_w(&self, from: i64, to: i64) -> f64 {
        if to <= from {
            return 0.0;
        }
        (self.import_wh(to) - self.import_wh(from)) * 3600.0 / (to - from) as f64
    }
}

/// An energy as the integer the registers and the profile hold (whole Wh, saturating to `u32`).
pub(crate) fn wh_u32(wh: f64) -> u32 {
    if wh.is_finite() && wh > 0.0 {
        // Saturating float-to-int cast: values beyond u32 become u32::MAX.
        wh.floor() as u32
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn energies_only_grow_and_tariffs_sum_to_the_total() {
        for seed in [0, 1, 42, u64::MAX] {
            let m = Model::new(seed);
            let mut last = (0.0, 0.0);
            let start = 1_767_225_600; // 2026-01-01
            for i in 0..(3 * 96) {
                let t = start + i * 900 + 7;
                let (imp, exp) = (m.import_wh(t), m.export_wh(t));
                assert!(imp >= last.0 && exp >= last.1, "seed {seed} t {t}");
                last = (imp, exp);
                let t1 = m.import_t1_wh(t);
                assert!(t1 <= imp + 1e-6 && t1 >= m.import0_wh);
                let t1e = m.export_t1_wh(t);
                assert!(t1e <= exp + 1e-6);
            }
        }
    }

    #[test]
    fn tariff_one_grows_only_by_day() {
        let m = Model::new(7);
        let midnight = 1_767_225_600;
        let night = m.import_t1_wh(midnight + 3 * 3600);
        assert!((night - m.import_t1_wh(midnight + 5 * 3600)).abs() < 1e-6);
        assert!(m.import_t1_wh(midnight + 12 * 3600) > night);
        // Tariff 1 over a full day equals the import of 06:00–22:00.
        let day = m.import_t1_wh(midnight + DAY) - m.import_t1_wh(midnight);
        let direct = m.import_wh(midnight + TARIFF1_END) - m.import_wh(midnight + TARIFF1_START);
        assert!((day - direct).abs() < 1e-3, "{day} vs {direct}");
    }

    #[test]
    fn power_is_the_derivative_of_energy() {
        let m = Model::new(3);
        let t = 1_767_225_600 + 5 * 3600;
        let avg = m.average_import_w(t, t + 60);
        assert!((avg - m.import_w(t + 30)).abs() < 1.0, "{avg} vs {}", m.import_w(t + 30));
        assert!(m.import_w(t) > 0.0 && m.export_w(t) >= 0.0);
        let phases: f64 = (0..3).map(|p| m.phase_power_w(t, p)).sum();
        assert!((phases - m.import_w(t)).abs() < 1e-6);
        assert!((m.voltage_v(t, 1) - 230.0).abs() <= 3.0);
        assert!((m.frequency_hz(t) - 50.0).abs() <= 0.04);
    }

    #[test]
    fn integer_energies_saturate() {
        assert_eq!(wh_u32(-5.0), 0);
        assert_eq!(wh_u32(f64::NAN), 0);
        assert_eq!(wh_u32(12.9), 12);
        assert_eq!(wh_u32(1e20), u32::MAX);
    }
}

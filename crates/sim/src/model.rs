//! The physics behind a simulated meter: a small seeded model of one installation (phase voltages,
//! currents, power factors, frequency, flow, temperature) that every profile value is derived from.
//!
//! Each quantity is an Ornstein–Uhlenbeck process (a random walk pulled back to its nominal value), stepped
//! with the exact transition for any elapsed time, then clamped to a plausible band. Derived quantities
//! (power = V × I × PF, apparent and reactive power, totals and averages) are computed from the phase state,
//! so a profile's values agree with each other the way a real meter's do. Counters integrate a rate (energy
//! grows by power × elapsed time) and so never go down.
//!
//! Which quantity a profile value shows is decided once, from its kind, unit and name
//! ([`Behaviour::classify`]). Pure and deterministic: the same seed and the same sequence of `step`
//! durations give the same values.

use std::f64::consts::PI;

use ami_device::ValueKind;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// √3, the ratio of line-to-line to phase voltage in a balanced three-phase system.
const SQRT_3: f64 = 1.732_050_807_568_877_2;

/// A mean-reverting random walk clamped to `[min, max]`.
#[derive(Debug, Clone)]
pub(crate) struct Walk {
    /// Current value.
    pub(crate) value: f64,
    mean: f64,
    /// Stationary standard deviation.
    std: f64,
    /// Mean reversion rate in 1/s.
    theta: f64,
    min: f64,
    max: f64,
}

impl Walk {
    fn new(mean: f64, std: f64, tau_s: f64, min: f64, max: f64) -> Self {
        Self { value: mean, mean, std, theta: 1.0 / tau_s, min, max }
    }

    /// Starts somewhere in the stationary distribution rather than exactly at the mean.
    fn randomise(mut self, rng: &mut StdRng) -> Self {
        self.value = (self.mean + self.std * normal(rng)).clamp(self.min, self.max);
        self
    }

    /// Exact Ornstein–Uhlenbeck transition over `dt` seconds.
    fn step(&mut self, dt: f64, rng: &mut StdRng) {
        if dt <= 0.0 || !dt.is_finite() {
            return;
        }
        let decay = (-self.theta * dt).exp();
        let spread = self.std * (1.0 - decay * decay).max(0.0).sqrt();
        let next = self.mean + (self.value - self.mean) * decay + spread * normal(rng);
        self.value = if next.is_finite() { next.clamp(self.min, self.max) } else { self.mean };
    }
}

/// A standard normal sample (Box–Muller).
fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()
}

/// Which phase(s) a value refers to, read from its name (`voltage_l1`, `voltage_l1_l2`, `power_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// One phase (0-based).
    One(usize),
    /// Between two phases (line-to-line voltage).
    Between(usize, usize),
    /// The neutral conductor (`current_n`, `neutral_current`): the phasor sum of the phase currents.
    Neutral,
    /// The meter as a whole: total, sum or average depending on the quantity.
    All,
}

impl Phase {
    /// Reads the phase from a value name: tokens `l1`..`l3`, `p1`..`p3`, `phase1`..`phase3`; two phase
    /// tokens in a row or `l12`/`l23`/`l31` mean line-to-line.
    pub(crate) fn from_name(name: &str) -> Phase {
        let tokens: Vec<&str> = name.split(['_', '-']).collect();
        let single = |t: &str| -> Option<usize> {
            let digits = t.strip_prefix("phase").or_else(|| t.strip_prefix('l')).or_else(|| t.strip_prefix('p'))?;
            match digits {
                "1" => Some(0),
                "2" => Some(1),
                "3" => Some(2),
                _ => None,
            }
        };
        let pair = |t: &str| -> Option<(usize, usize)> {
            match t {
                "l12" | "l1l2" => Some((0, 1)),
                "l23" | "l2l3" => Some((1, 2)),
                "l31" | "l3l1" => Some((2, 0)),
                _ => None,
            }
        };
        for (i, t) in tokens.iter().enumerate() {
            if *t == "n" || *t == "neutral" {
                return Phase::Neutral;
            }
            if let Some((a, b)) = pair(t) {
                return Phase::Between(a, b);
            }
            if let Some(a) = single(t) {
                if let Some(b) = tokens.get(i + 1).and_then(|n| single(n)) {
                    return Phase::Between(a, b);
                }
                return Phase::One(a);
            }
        }
        Phase::All
    }

    /// True when this names phase 2 or 3 (the profile is then a three-phase meter).
    pub(crate) fn is_polyphase(self) -> bool {
        match self {
            Phase::One(p) => p > 0,
            Phase::Between(..) => true,
            Phase::Neutral | Phase::All => false,
        }
    }
}

/// The electrical or physical quantity a value shows, in base units (W, not kW).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Quantity {
    Voltage,
    Current,
    ActivePower,
    ReactivePower,
    ApparentPower,
    PowerFactor,
    Frequency,
    Flow,
    Temperature,
    Distortion,
}

/// What a counter integrates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Rate {
    /// A power quantity (W, var, VA), times `factor` (exports grow slower than imports).
    Power { quantity: Quantity, factor: f64 },
    /// Volume from the flow (m3/h).
    Flow,
    /// A fixed number of units per second (operating time, unknown counters).
    Constant(f64),
}

/// How one value of the profile evolves.
#[derive(Debug, Clone)]
pub(crate) enum Behaviour {
    /// Follows a quantity of the installation, divided by `divisor` (1000 for a `kW` unit).
    Measured { quantity: Quantity, phase: Phase, divisor: f64 },
    /// Its own random walk (a measurement of unknown unit).
    Own(Walk),
    /// Grows by `rate × dt / divisor`.
    Counter { rate: Rate, phase: Phase, divisor: f64 },
    /// Never changes on its own.
    Fixed,
}

/// Splits a multiplier prefix off a unit: `kWh` → (`Wh`, 1000).
fn base_unit(unit: &str) -> (&str, f64) {
    const KNOWN: [&str; 8] = ["W", "Wh", "var", "varh", "VA", "VAh", "J", "m3"];
    for (prefix, factor) in [("k", 1e3), ("M", 1e6), ("G", 1e9)] {
        if let Some(rest) = unit.strip_prefix(prefix) {
            if KNOWN.contains(&rest) {
                return (rest, factor);
            }
        }
    }
    (unit, 1.0)
}

impl Behaviour {
    /// Decides once how a value behaves, from its kind, unit and name. Bits (coils, discrete inputs) are
    /// always [`Behaviour::Fixed`]; the caller decides that.
    pub(crate) fn classify(kind: ValueKind, unit: &str, name: &str, rng: &mut StdRng) -> Behaviour {
        let phase = Phase::from_name(name);
        let (unit, divisor) = base_unit(unit);
        let lower = name.to_ascii_lowercase();
        match kind {
            ValueKind::Static => Behaviour::Fixed,
            ValueKind::Counter => {
                // Exports grow slowly (a little generation behind the meter); "absolute" counts both ways.
                let factor = if lower.contains("export") || lower.contains("delivered") {
                    0.02
                } else if lower.contains("absolute") {
                    1.02
                } else {
                    1.0
                };
                let rate = match unit {
                    "Wh" | "J" => Rate::Power { quantity: Quantity::ActivePower, factor },
                    "varh" => Rate::Power { quantity: Quantity::ReactivePower, factor },
                    "VAh" => Rate::Power { quantity: Quantity::ApparentPower, factor },
                    "m3" => Rate::Flow,
                    "s" => Rate::Constant(1.0),
                    "h" => Rate::Constant(1.0 / 3600.0),
                    _ => Rate::Constant(1.0 / 60.0),
                };
                // Joules are watt-seconds: integrate power per second, not per hour.
                let divisor = if unit == "J" { divisor / 3600.0 } else { divisor };
                Behaviour::Counter { rate, phase, divisor }
            }
            ValueKind::Instantaneous => {
                let quantity = match unit {
                    "V" => Some(Quantity::Voltage),
                    "A" => Some(Quantity::Current),
                    "W" => Some(Quantity::ActivePower),
                    "var" => Some(Quantity::ReactivePower),
                    "VA" => Some(Quantity::ApparentPower),
                    "Hz" => Some(Quantity::Frequency),
                    "m3/h" => Some(Quantity::Flow),
                    "degC" | "°C" => Some(Quantity::Temperature),
                    "%" if lower.contains("thd") || lower.contains("distortion") => Some(Quantity::Distortion),
                    "" if lower.contains("pf") || lower.contains("factor") || lower.contains("cos") => {
                        Some(Quantity::PowerFactor)
                    }
                    _ => None,
                };
                match quantity {
                    Some(quantity) => Behaviour::Measured { quantity, phase, divisor },
                    None => {
                        let mean = if unit == "%" { 50.0 } else { 100.0 };
                        Behaviour::Own(Walk::new(mean, mean * 0.02, 60.0, 0.0, mean * 2.0).randomise(rng))
                    }
                }
            }
        }
    }

    /// A plausible first value for a counter of this behaviour (in the value's unit).
    pub(crate) fn initial_counter(&self, rng: &mut StdRng) -> f64 {
        match self {
            Behaviour::Counter { rate, divisor, .. } => {
                let (lo, hi) = match rate {
                    // 100 kWh .. 10 MWh of history.
                    Rate::Power { factor, .. } if *factor < 1.0 => (1e3, 1e5),
                    Rate::Power { .. } => (1e5, 1e7),
                    Rate::Flow => (10.0, 1000.0),
                    Rate::Constant(r) if *r >= 1.0 => (1e5, 1e7),
                    Rate::Constant(_) => (100.0, 10_000.0),
                };
                (rng.gen_range(lo..hi) / divisor).round()
            }
            _ => 0.0,
        }
    }
}

/// The state of the simulated installation.
#[derive(Debug, Clone)]
pub(crate) struct Physics {
    rng: StdRng,
    phases: usize,
    voltage: [Walk; 3],
    current: [Walk; 3],
    pf: [Walk; 3],
    frequency: Walk,
    flow: Walk,
    temperature: Walk,
    thd: Walk,
}

impl Physics {
    /// A new installation with `phases` phases (1 or 3), seeded.
    pub(crate) fn new(phases: usize, rng: &mut StdRng) -> Physics {
        let mut own = StdRng::seed_from_u64(rng.gen());
        let voltage = [(); 3].map(|_| Walk::new(230.0, 1.5, 60.0, 227.0, 233.0).randomise(&mut own));
        let current = [(); 3].map(|_| {
            let mean = own.gen_range(3.0..6.0);
            Walk::new(mean, 1.0, 120.0, 2.0, 10.0).randomise(&mut own)
        });
        let pf = [(); 3].map(|_| Walk::new(0.95, 0.02, 120.0, 0.9, 1.0).randomise(&mut own));
        let frequency = Walk::new(50.0, 0.02, 30.0, 49.95, 50.05).randomise(&mut own);
        let flow = Walk::new(0.3, 0.1, 300.0, 0.0, 2.0).randomise(&mut own);
        let temperature = Walk::new(20.0, 1.0, 600.0, 15.0, 25.0).randomise(&mut own);
        let thd = Walk::new(3.0, 0.5, 120.0, 0.5, 10.0).randomise(&mut own);
        Physics { rng: own, phases: phases.clamp(1, 3), voltage, current, pf, frequency, flow, temperature, thd }
    }

    /// Advances every walk by `dt` seconds.
    pub(crate) fn step(&mut self, dt: f64) {
        let rng = &mut self.rng;
        for w in self.voltage.iter_mut().chain(&mut self.current).chain(&mut self.pf) {
            w.step(dt, rng);
        }
        for w in [&mut self.frequency, &mut self.flow, &mut self.temperature, &mut self.thd] {
            w.step(dt, rng);
        }
    }

    /// Steps a value's own walk with the model's generator.
    pub(crate) fn step_own(&mut self, walk: &mut Walk, dt: f64) {
        walk.step(dt, &mut self.rng);
    }

    fn phase_values(&self, quantity: Quantity, p: usize) -> f64 {
        let v = self.voltage.get(p).map_or(230.0, |w| w.value);
        let i = self.current.get(p).map_or(0.0, |w| w.value);
        let pf = self.pf.get(p).map_or(1.0, |w| w.value);
        match quantity {
            Quantity::Voltage => v,
            Quantity::Current => i,
            Quantity::ActivePower => v * i * pf,
            Quantity::ApparentPower => v * i,
            Quantity::ReactivePower => v * i * (1.0 - pf * pf).max(0.0).sqrt(),
            Quantity::PowerFactor => pf,
            Quantity::Frequency => self.frequency.value,
            Quantity::Flow => self.flow.value,
            Quantity::Temperature => self.temperature.value,
            Quantity::Distortion => self.thd.value,
        }
    }

    /// The value of `quantity` for `phase`, in base units.
    pub(crate) fn measure(&self, quantity: Quantity, phase: Phase) -> f64 {
        let n = self.phases;
        match phase {
            Phase::One(p) => self.phase_values(quantity, p),
            Phase::Between(a, b) => match quantity {
                // Line-to-line voltage: √3 × the mean of the two phase voltages (balanced 120° system).
                Quantity::Voltage => SQRT_3 * (self.phase_values(quantity, a) + self.phase_values(quantity, b)) / 2.0,
                _ => (self.phase_values(quantity, a) + self.phase_values(quantity, b)) / 2.0,
            },
            Phase::Neutral => {
                // Phase currents 120° apart (phase angles of the loads ignored): |I1 + I2∠−120° + I3∠120°|.
                let (re, im) = (0..n).fold((0.0, 0.0), |(re, im), p| {
                    let angle = -2.0 * PI / 3.0 * p as f64;
                    let v = self.phase_values(quantity, p);
                    (re + v * angle.cos(), im + v * angle.sin())
                });
                (re * re + im * im).sqrt()
            }
            Phase::All => {
                let sum = |q| (0..n).map(|p| self.phase_values(q, p)).sum::<f64>();
                match quantity {
                    Quantity::ActivePower | Quantity::ReactivePower | Quantity::ApparentPower | Quantity::Current => {
                        sum(quantity)
                    }
                    Quantity::Voltage | Quantity::Distortion => sum(quantity) / n as f64,
                    Quantity::PowerFactor => {
                        let s = sum(Quantity::ApparentPower);
                        if s > 0.0 {
                            sum(Quantity::ActivePower) / s
                        } else {
                            1.0
                        }
                    }
                    Quantity::Frequency | Quantity::Flow | Quantity::Temperature => self.phase_values(quantity, 0),
                }
            }
        }
    }

    /// A counter's growth per second (in base units per second; energy in Wh/s).
    pub(crate) fn rate(&self, rate: Rate, phase: Phase) -> f64 {
        match rate {
            Rate::Power { quantity, factor } => self.measure(quantity, phase) * factor / 3600.0,
            Rate::Flow => self.measure(Quantity::Flow, Phase::All) / 3600.0,
            Rate::Constant(r) => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_read_from_names() {
        assert_eq!(Phase::from_name("voltage_l1"), Phase::One(0));
        assert_eq!(Phase::from_name("current_l3"), Phase::One(2));
        assert_eq!(Phase::from_name("voltage_l1_l2"), Phase::Between(0, 1));
        assert_eq!(Phase::from_name("voltage_l31"), Phase::Between(2, 0));
        assert_eq!(Phase::from_name("power_phase2"), Phase::One(1));
        assert_eq!(Phase::from_name("power_total"), Phase::All);
        assert_eq!(Phase::from_name("frequency"), Phase::All);
        assert_eq!(Phase::from_name("pulse_l"), Phase::All);
        assert_eq!(Phase::from_name("current_n"), Phase::Neutral);
    }

    #[test]
    fn units_with_prefixes_are_scaled() {
        assert_eq!(base_unit("kWh"), ("Wh", 1e3));
        assert_eq!(base_unit("kvar"), ("var", 1e3));
        assert_eq!(base_unit("Wh"), ("Wh", 1.0));
        assert_eq!(base_unit("kg"), ("kg", 1.0));
    }

    #[test]
    fn walks_stay_in_band_and_move() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut physics = Physics::new(3, &mut rng);
        let first = physics.measure(Quantity::Voltage, Phase::One(0));
        let mut moved = false;
        for _ in 0..1000 {
            physics.step(1.0);
            let v = physics.measure(Quantity::Voltage, Phase::One(0));
            assert!((227.0..=233.0).contains(&v), "{v}");
            let f = physics.measure(Quantity::Frequency, Phase::All);
            assert!((49.95..=50.05).contains(&f), "{f}");
            let pf = physics.measure(Quantity::PowerFactor, Phase::All);
            assert!((0.9..=1.0).contains(&pf), "{pf}");
            let i = physics.measure(Quantity::Current, Phase::One(1));
            assert!((2.0..=10.0).contains(&i), "{i}");
            moved |= (v - first).abs() > 0.01;
        }
        assert!(moved);
        // Huge and degenerate steps are fine too.
        physics.step(1e12);
        physics.step(f64::NAN);
        physics.step(-1.0);
        let v = physics.measure(Quantity::Voltage, Phase::One(0));
        assert!((227.0..=233.0).contains(&v));
    }

    #[test]
    fn power_follows_voltage_current_and_power_factor() {
        let mut rng = StdRng::seed_from_u64(1);
        let physics = Physics::new(3, &mut rng);
        for p in 0..3 {
            let v = physics.measure(Quantity::Voltage, Phase::One(p));
            let i = physics.measure(Quantity::Current, Phase::One(p));
            let pf = physics.measure(Quantity::PowerFactor, Phase::One(p));
            let w = physics.measure(Quantity::ActivePower, Phase::One(p));
            let va = physics.measure(Quantity::ApparentPower, Phase::One(p));
            let var = physics.measure(Quantity::ReactivePower, Phase::One(p));
            assert!((w - v * i * pf).abs() < 1e-9);
            assert!((va - v * i).abs() < 1e-9);
            assert!((w * w + var * var - va * va).abs() < 1e-6);
        }
        let total: f64 = (0..3).map(|p| physics.measure(Quantity::ActivePower, Phase::One(p))).sum();
        assert!((physics.measure(Quantity::ActivePower, Phase::All) - total).abs() < 1e-9);
        let i: Vec<f64> = (0..3).map(|p| physics.measure(Quantity::Current, Phase::One(p))).collect();
        let neutral = physics.measure(Quantity::Current, Phase::Neutral);
        let max = i.iter().copied().fold(0.0, f64::max);
        assert!(neutral >= 0.0 && neutral <= max, "{neutral} vs {i:?}");
        let vll = physics.measure(Quantity::Voltage, Phase::Between(0, 1));
        assert!((390.0..=405.0).contains(&vll), "{vll}");
        // A plausible base load: a few kW.
        assert!((1000.0..=10_000.0).contains(&total), "{total}");
    }

    #[test]
    fn same_seed_same_values() {
        let run = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut physics = Physics::new(1, &mut rng);
            (0..10)
                .map(|_| {
                    physics.step(0.5);
                    physics.measure(Quantity::ActivePower, Phase::All)
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }

    #[test]
    fn classification_by_unit_and_name() {
        let mut rng = StdRng::seed_from_u64(0);
        let b = Behaviour::classify(ValueKind::Instantaneous, "kW", "power_l2", &mut rng);
        assert!(matches!(
            b,
            Behaviour::Measured { quantity: Quantity::ActivePower, phase: Phase::One(1), divisor } if divisor == 1e3
        ));
        let b = Behaviour::classify(ValueKind::Instantaneous, "", "power_factor_total", &mut rng);
        assert!(matches!(b, Behaviour::Measured { quantity: Quantity::PowerFactor, .. }));
        let b = Behaviour::classify(ValueKind::Counter, "Wh", "energy_export_total", &mut rng);
        assert!(matches!(b, Behaviour::Counter { rate: Rate::Power { factor, .. }, .. } if factor < 1.0));
        let b = Behaviour::classify(ValueKind::Instantaneous, "bar", "pressure", &mut rng);
        assert!(matches!(b, Behaviour::Own(_)));
        let b = Behaviour::classify(ValueKind::Static, "", "serial_number", &mut rng);
        assert!(matches!(b, Behaviour::Fixed));
    }
}

//! Incotex Mercury 230 / 234 meters in the daemon (the Incotex command set through
//! `ami_protocols::mercury`): how a `[[meter]]` with a Mercury profile becomes a [`MercuryMeter`] (network
//! address, access level, six-byte password from the secrets, timing for the line's baud rate), one poll
//! (energy arrays, instantaneous values, identity, the stored power profile read incrementally), the bus
//! guard time a Mercury line needs, and a simulated mixed line (Mercury and Modbus meters on one RS-485
//! line) for `amid simulate` and the tests.
//!
//! The channel: a meter's [`MercuryClient`] lives as long as the daemon, so the channel opened at the first
//! poll stays open between polls; the session re-opens it by itself when it has been idle longer than the
//! meter's 240 s limit, and transparently when the meter answers "channel not open" (status 5: it restarted
//! or closed the channel earlier). A refused open (wrong password or level) fails the poll with an error
//! naming the meter. [`close`] closes the channel at shutdown.
//!
//! Power profile: per meter the store keeps the timestamp of the last record stored (the profile mark,
//! [`crate::store::Store::profile_mark`], keyed by the `<load-profile>` OBIS code). A poll reads the
//! records in `(mark, meter now]` (on first contact `[meter now − profile_backfill, meter now]`) in windows
//! of at most [`PROFILE_WINDOW_S`] and at most [`MAX_CATCH_UP_S`] per poll, each window handed to the store
//! writer with its new mark and committed in one transaction, as DLMS load profiles are. A past window the
//! meter holds no record for (no power, or older than its ring) moves the mark past it. Each record holds
//! the pulse counts of its integration period; they become Wh / varh with the meter constant of its
//! variant (`08 12`, read once).
//!
//! Time: a Mercury meter keeps local time without a zone. Its offset from UTC is the site's `utc_offset`
//! for the meter when given, else the meter's clock minus the collector's rounded to 15 minutes (the rest
//! is clock drift, reported like a DLMS meter's); record stamps are converted with it.
//!
//! The password never reaches a log: [`Password`]'s `Debug` is redacted and the session hides the open
//! frame's bytes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ami_device::mercury::{MercuryLoadProfileDef, MercuryParameter, MercuryProfile, MercurySource};
use ami_device::{Quality, Reading, Value, ValueKind};
use ami_link::BusHandle;
use ami_media::MediaUrl;
use ami_protocols::mercury::{
    Address, Energy, Level, MercuryClient, MercuryError, MercuryMeter, Password, PhaseEnergy, SerialInfo, Stamp, Tariff,
};
use chrono::{DateTime, TimeZone, Utc};
use tracing::{debug, info, warn};

use crate::config::MeterCfg;
use crate::dlms::Intervals;
use crate::store::StoredReading;

/// The longest time range one power-profile read covers (one day: 48 half-hour records), so a long
/// catch-up is committed in steps.
pub const PROFILE_WINDOW_S: i64 = 86_400;

/// The most of a power profile's backlog one poll reads (31 days); the rest follows at the next polls.
pub const MAX_CATCH_UP_S: i64 = 31 * 86_400;

/// Seconds from the Unix epoch to 2000-01-01 00:00 (the origin of [`Stamp::minutes`]).
const EPOCH_2000_S: i64 = 946_684_800;

/// Per-meter Mercury settings from `amid.toml` (each overrides the profile's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MercuryMeterCfg {
    /// Access level the channel is opened at: 1 (user) or 2 (admin).
    pub level: Option<u8>,
    /// The meter's programmable timing multiplier (1..=255).
    pub multiplier: Option<u8>,
    /// The meter clock's offset from UTC in minutes (e.g. 180 for Moscow time). Default: inferred from
    /// the meter's clock at each poll, to the nearest 15 minutes.
    pub utc_offset_min: Option<i32>,
    /// How long the meter keeps an idle channel open (240 s on Incotex meters). The daemon sends a test
    /// frame after 5/6 of it when the next poll is further away, so the channel never closes between polls.
    pub channel_timeout: Option<Duration>,
}

impl MercuryMeterCfg {
    /// True when the config named at least one Mercury-only key for this meter.
    pub fn any_set(&self) -> bool {
        self.level.is_some()
            || self.multiplier.is_some()
            || self.utc_offset_min.is_some()
            || self.channel_timeout.is_some()
    }
}

/// A Mercury meter resolved from its config and profile.
#[derive(Debug, Clone)]
pub struct MercuryPlan {
    /// The Mercury view of the profile (values, power profile).
    pub profile: Arc<MercuryProfile>,
    /// The session settings (address, level, password — redacted in `Debug` —, timing, retries).
    pub meter: MercuryMeter,
    /// The first read of the power profile reaches this far back.
    pub backfill: Duration,
    /// Records in the meter's power-profile ring.
    pub profile_records: u16,
    /// The meter clock's offset from UTC, seconds; `None` = inferred at each poll.
    pub utc_offset_s: Option<i64>,
}

/// Resolves a Mercury meter: the profile's defaults overridden by the meter's config, the password from
/// the secrets. The error says which key to set (never a secret's value).
///
/// `media` is the bus's (its baud rate picks the timing row; on a TCP gateway the reply timeout is the
/// meter's or bus's `timeout`, since the gateway adds its own delay); `retries` is the bus's.
pub fn plan(
    cfg: &MeterCfg,
    mercury: &MercuryMeterCfg,
    profile: MercuryProfile,
    media: Option<&MediaUrl>,
    bus_timeout: Duration,
    retries: u32,
) -> Result<MercuryPlan, String> {
    let address = cfg.address.or(profile.line.address).ok_or_else(|| {
        "a Mercury meter needs its network address: set address = 1..240 (by convention the last three digits of \
         its serial number)"
            .to_string()
    })?;
    if !(1..=240).contains(&address) {
        return Err(format!("address {address} is not a Mercury network address (1..240)"));
    }
    let level = match mercury.level {
        Some(1) => Level::User,
        Some(2) => Level::Admin,
        Some(other) => return Err(format!("level {other} (expected 1 = user or 2 = admin)")),
        None => profile.options.level,
    };
    let password = match &cfg.secrets.password {
        Some(bytes) => {
            let text = std::str::from_utf8(bytes).map_err(|_| bad_password(cfg))?;
            text.trim().parse::<Password>().map_err(|_| bad_password(cfg))?
        }
        None if level == Level::Admin => Password::factory_admin(),
        None => Password::factory_user(),
    };
    let (baud, gateway) = match media {
        Some(MediaUrl::Serial { settings, .. }) => (settings.baud, false),
        Some(MediaUrl::Tcp { .. }) => (profile.line.baud.unwrap_or(9600), true),
        None => (profile.line.baud.unwrap_or(9600), false),
    };
    let configured = cfg.timeout.or(profile.line.timeout_ms.map(Duration::from_millis));
    let mut meter = MercuryMeter::new(cfg.id.clone(), Address(address));
    meter.level = level;
    meter.password = password;
    meter.baud = baud;
    meter.multiplier = mercury.multiplier.unwrap_or(profile.options.multiplier);
    meter.timeout = configured.or(gateway.then_some(bus_timeout));
    meter.retries = retries;
    if let Some(t) = mercury.channel_timeout {
        meter.idle_limit = t;
        meter.keep_alive = t.mul_f64(5.0 / 6.0);
    }
    Ok(MercuryPlan {
        profile_records: profile.options.profile_records,
        profile: Arc::new(profile),
        meter,
        backfill: cfg.dlms.profile_backfill,
        utc_offset_s: mercury.utc_offset_min.map(|m| i64::from(m) * 60),
    })
}

fn bad_password(cfg: &MeterCfg) -> String {
    format!(
        "the password of meter {} is not a Mercury password: give 12 hex digits (six raw bytes, e.g. 010101010101 \
         for the factory level-1 password) as password in [meter.{}] of the secrets file or {}",
        cfg.id,
        cfg.id,
        crate::config::secret_env_var(&cfg.id, "password")
    )
}

impl MercuryPlan {
    /// The silence this meter needs between exchanges on its line (the timing table's inter-frame gap for
    /// its baud rate and multiplier; 25 ms after long answers).
    pub fn guard_time(&self) -> Duration {
        self.meter.timing().gap_after(16)
    }

    /// The client of this meter on `bus` (keep it for the life of the daemon: it knows the channel state).
    pub fn client(&self, bus: BusHandle) -> MercuryClient {
        MercuryClient::new(bus, self.meter.clone()).with_profile_records(self.profile_records)
    }
}

/// The guard time of a bus: the configured one, or longer when a Mercury meter on it needs more silence.
pub fn bus_guard_time<'a>(configured: Duration, meters: impl IntoIterator<Item = &'a MercuryPlan>) -> Duration {
    meters.into_iter().map(MercuryPlan::guard_time).fold(configured, Duration::max)
}

/// A Mercury meter's state in its bus task: the client (channel state), the power-profile mark, the meter
/// constant once read.
#[derive(Debug)]
pub struct MercuryRun {
    /// The client, created when the bus opened.
    pub client: MercuryClient,
    /// Last stored record per power profile (ms since the epoch, UTC).
    pub marks: HashMap<String, i64>,
    /// Pulses per kWh from the meter's variant.
    pub constant: Option<u32>,
    /// Whether the clock drift was reported (once until it is back within bounds).
    pub drift_reported: bool,
    /// No keep-alive before this instant (after one failed: the next poll re-opens the channel anyway).
    pub keep_alive_hold: Option<std::time::Instant>,
}

impl MercuryRun {
    /// The state of `plan`'s meter on `bus`, with the profile marks from the store at `db`.
    pub fn open(db: &std::path::Path, plan: &MercuryPlan, bus: BusHandle) -> MercuryRun {
        let mut marks = HashMap::new();
        if let Some(lp) = &plan.profile.load_profile {
            let key = lp.obis.to_string();
            match crate::store::Store::open(db).and_then(|s| s.profile_mark(&plan.meter.id, &key)) {
                Ok(Some(ms)) => {
                    marks.insert(key, ms);
                }
                Ok(None) => {}
                Err(e) => warn!(meter = %plan.meter.id, "cannot read the power profile mark: {e}"),
            }
        }
        MercuryRun { client: plan.client(bus), marks, constant: None, drift_reported: false, keep_alive_hold: None }
    }
}

impl MercuryRun {
    /// When this meter's open channel needs a test frame to stay open (see [`MercuryRun::keep_alive`]).
    pub fn keep_alive_due(&self) -> Option<tokio::time::Instant> {
        let due = self.client.keep_alive_due()?;
        let at = self.keep_alive_hold.map_or(due, |hold| hold.max(due));
        Some(tokio::time::Instant::from_std(at))
    }

    /// Keeps the channel open between polls: a test frame when it has been idle for the keep-alive time
    /// (the meter closes it after its channel timeout, 240 s). A failure is logged; the next poll re-opens.
    pub async fn keep_alive(&mut self, meter: &str) {
        let outcome = self.client.keep_alive().await;
        let now = std::time::Instant::now();
        match outcome {
            Ok(true) => {
                self.keep_alive_hold = None;
                tracing::debug!(meter, "Mercury channel kept open with a test frame");
            }
            // Not due after all (or the channel expired by itself): look again in a second at the earliest.
            Ok(false) => self.keep_alive_hold = now.checked_add(Duration::from_secs(1)),
            Err(e) => {
                warn!(meter, "Mercury keep-alive failed (the next poll re-opens the channel): {e}");
                self.keep_alive_hold = now.checked_add(Duration::from_secs(30));
            }
        }
    }
}

/// What one poll of a Mercury meter got.
#[derive(Debug, Default)]
pub struct MercuryPoll {
    /// Values, stamped with the collector's time.
    pub readings: Vec<StoredReading>,
    /// Power-profile windows, oldest first (when no sink took them).
    pub intervals: Vec<Intervals>,
    /// Values that could not be read (the meter refused one, a value not applicable, …).
    pub errors: Vec<String>,
    /// The meter's clock minus the collector's, seconds, after the UTC offset (when the clock was read).
    pub clock_drift_s: Option<i64>,
}

/// What a poll needs besides the plan and the client.
pub struct PollCtx<'a> {
    /// The meter id.
    pub meter: &'a str,
    /// Last stored record per power profile (ms); updated as windows are handed out.
    pub marks: &'a mut HashMap<String, i64>,
    /// The meter constant, once read.
    pub constant: &'a mut Option<u32>,
    /// The collector's time.
    pub now: DateTime<Utc>,
    /// Where each power-profile window goes as soon as it is read (the store writer); `None` collects
    /// them in [`MercuryPoll::intervals`].
    pub on_window: Option<&'a mut (dyn FnMut(Intervals) -> Result<(), String> + Send + Sync)>,
    /// Set when the daemon is stopping: a catch-up ends after the window in flight.
    pub stop: Option<&'a tokio::sync::watch::Receiver<bool>>,
}

/// True when the error ends the poll (the meter or the line is gone, or the channel cannot be opened),
/// not just one value.
fn is_fatal(e: &MercuryError) -> bool {
    !matches!(e, MercuryError::Refused { .. } | MercuryError::Decode { .. })
}

/// Polls one meter: every value of its profile, then the power profile since its mark. The channel stays
/// open afterwards (see the module doc).
///
/// # Errors
/// A fatal [`MercuryError`] (no reply, refused open naming the meter, link down) as text.
pub async fn poll(
    plan: &MercuryPlan,
    client: &mut MercuryClient,
    ctx: &mut PollCtx<'_>,
) -> Result<MercuryPoll, String> {
    let mut out = MercuryPoll::default();
    let mut cache = ReadCache::new(&plan.profile.values);
    for v in &plan.profile.values {
        let value = match cache.read(client, &v.source).await {
            Ok(Ok(value)) => value,
            Ok(Err(why)) => {
                out.errors.push(format!("{} ({}): {why}", v.name, v.obis));
                continue;
            }
            Err(e) if is_fatal(&e) => return Err(e.to_string()),
            Err(e) => {
                out.errors.push(format!("{} ({}): {e}", v.name, v.obis));
                continue;
            }
        };
        out.readings.push(StoredReading {
            reading: Reading {
                meter: ctx.meter.to_string(),
                name: v.name.clone(),
                obis: v.obis,
                value,
                unit: v.unit.clone(),
                ts: ctx.now,
                quality: Quality::OK,
            },
            kind: v.kind,
        });
    }
    if let Some(lp) = &plan.profile.load_profile {
        match read_power_profile(plan, client, ctx, lp, &mut out).await {
            Ok(()) => {}
            Err(e) if is_fatal(&e) => return Err(format!("{}: {e}", lp.name)),
            Err(e) => out.errors.push(format!("{} ({}): {e}", lp.name, lp.obis)),
        }
    }
    Ok(out)
}

/// Closes the meter's channel (shutdown); failures are only logged.
pub async fn close(client: &mut MercuryClient) {
    if let Err(e) = client.close().await {
        debug!(meter = %client.meter().id, "close channel: {e}");
    }
}

/// One request per energy array and tariff, per phase-energy tariff, and for the serial number, however
/// many values of the profile come from it; instantaneous values of one quantity wanted for two or more
/// phases come in one block read (`08 16`, from the lowest phase wanted up to L3), with single reads
/// (`08 11`) as the fallback when a meter refuses the block.
#[derive(Default)]
struct ReadCache {
    energy: HashMap<(u8, u8), Energy>,
    phases: HashMap<u8, PhaseEnergy>,
    serial: Option<SerialInfo>,
    /// Per block base: the lowest phase wanted and how many values of it are wanted.
    wanted: HashMap<u8, (u8, usize)>,
    /// Per block base: the block read, or `None` when the meter refused it.
    blocks: HashMap<u8, Option<Vec<ami_protocols::mercury::InstantValue>>>,
}

/// The BWRI of an instantaneous value without its phase (quantity, and for power its kind); `None` for
/// quantities without phases.
fn block_base(b: ami_protocols::mercury::Bwri) -> Option<u8> {
    use ami_protocols::mercury::Quantity;
    match b.quantity() {
        Quantity::Frequency | Quantity::Temperature | Quantity::Other(_) => None,
        Quantity::Power(_) => Some(b.0 & 0xFC),
        _ => Some(b.0 & 0xF0),
    }
}

impl ReadCache {
    fn new(values: &[ami_device::mercury::MercuryValueDef]) -> Self {
        let mut wanted: HashMap<u8, (u8, usize)> = HashMap::new();
        for v in values {
            if let MercurySource::Instant(b) = v.source {
                if let Some(base) = block_base(b) {
                    let e = wanted.entry(base).or_insert((b.phase(), 0));
                    e.0 = e.0.min(b.phase());
                    e.1 += 1;
                }
            }
        }
        Self { wanted, ..Self::default() }
    }

    /// The value of `bwri` from its quantity's block, when the profile wants several phases of it and the
    /// meter answers block reads.
    async fn block_value(
        &mut self,
        client: &mut MercuryClient,
        bwri: ami_protocols::mercury::Bwri,
    ) -> Result<Option<f64>, MercuryError> {
        let Some(base) = block_base(bwri) else { return Ok(None) };
        let Some(&(start, n)) = self.wanted.get(&base) else { return Ok(None) };
        if n < 2 {
            return Ok(None);
        }
        if let std::collections::hash_map::Entry::Vacant(slot) = self.blocks.entry(base) {
            let block = match client.read_instant_block(ami_protocols::mercury::Bwri(base | start)).await {
                Ok(values) => Some(values),
                Err(MercuryError::Refused { .. } | MercuryError::Decode { .. }) => None,
                Err(e) => return Err(e),
            };
            slot.insert(block);
        }
        let index = usize::from(bwri.phase().saturating_sub(start));
        Ok(self.blocks.get(&base).and_then(|b| b.as_ref()?.get(index).map(|v| v.value())))
    }

    /// `Ok(Ok(value))`, `Ok(Err(why))` for a value the meter does not have, `Err` for a failed request.
    async fn read(
        &mut self,
        client: &mut MercuryClient,
        source: &MercurySource,
    ) -> Result<Result<Value, String>, MercuryError> {
        let not_applicable = || "not applicable on this meter (it answers FF FF FF FF)".to_string();
        Ok(match *source {
            MercurySource::Energy { array, tariff, quantity } => {
                let key = (array.param(), tariff);
                let e = match self.energy.get(&key) {
                    Some(e) => *e,
                    None => {
                        let e = client.read_energy(array, Tariff(tariff)).await?;
                        self.energy.insert(key, e);
                        e
                    }
                };
                let v = [e.a_plus, e.a_minus, e.r_plus, e.r_minus].get(quantity.index()).copied().flatten();
                v.map(|v| Value::Number(f64::from(v))).ok_or_else(not_applicable)
            }
            MercurySource::PhaseEnergy { tariff, phase } => {
                let e = match self.phases.get(&tariff) {
                    Some(e) => *e,
                    None => {
                        let e = client.read_phase_energy(Tariff(tariff)).await?;
                        self.phases.insert(tariff, e);
                        e
                    }
                };
                let v = e.phases.get(usize::from(phase.saturating_sub(1))).copied().flatten();
                v.map(|v| Value::Number(f64::from(v))).ok_or_else(not_applicable)
            }
            MercurySource::Instant(bwri) if bwri == ami_protocols::mercury::Bwri::TEMPERATURE => {
                Ok(Value::Number(f64::from(client.read_temperature().await?)))
            }
            MercurySource::Instant(bwri) => match self.block_value(client, bwri).await? {
                Some(v) => Ok(Value::Number(v)),
                None => Ok(Value::Number(client.read_instant(bwri).await?.value())),
            },
            MercurySource::Parameter(p) => {
                let s = match self.serial {
                    Some(s) => s,
                    None => {
                        let s = client.read_serial().await?;
                        self.serial = Some(s);
                        s
                    }
                };
                Ok(Value::Text(match p {
                    MercuryParameter::Serial => format!("{:08}", s.serial),
                    MercuryParameter::ManufactureDate => s.made.to_string(),
                }))
            }
        })
    }
}

/// Unix seconds of a meter stamp whose clock runs `offset_s` ahead of UTC.
pub fn stamp_to_unix(stamp: Stamp, offset_s: i64) -> i64 {
    stamp.minutes() * 60 + EPOCH_2000_S - offset_s
}

/// The meter stamp (minute resolution, rounded down) of Unix second `unix_s` on a clock `offset_s` ahead
/// of UTC.
pub fn unix_to_stamp(unix_s: i64, offset_s: i64) -> Stamp {
    Stamp::from_minutes((unix_s + offset_s - EPOCH_2000_S).div_euclid(60))
}

/// The offset of a zone-less meter clock from UTC: `meter_s − utc_s` rounded to 15 minutes; the rest is
/// the clock's drift. Returns `(offset_s, drift_s)`.
pub fn infer_offset(meter_s: i64, utc_s: i64) -> (i64, i64) {
    let diff = meter_s - utc_s;
    let offset = (diff + 450).div_euclid(900) * 900;
    (offset, diff - offset)
}

/// Reads the power profile from its mark to the meter's now, window by window.
async fn read_power_profile(
    plan: &MercuryPlan,
    client: &mut MercuryClient,
    ctx: &mut PollCtx<'_>,
    lp: &MercuryLoadProfileDef,
    out: &mut MercuryPoll,
) -> Result<(), MercuryError> {
    let time = client.read_time().await?;
    let meter_naive = time.stamp.minutes() * 60 + i64::from(time.second) + EPOCH_2000_S;
    let utc_now = ctx.now.timestamp();
    let (offset, drift) = match plan.utc_offset_s {
        Some(o) => (o, meter_naive - o - utc_now),
        None => infer_offset(meter_naive, utc_now),
    };
    out.clock_drift_s = Some(drift);
    let meter_now = meter_naive - offset;
    let constant = match *ctx.constant {
        Some(c) => c,
        None => {
            let variant = client.read_variant().await?;
            let Some(c) = variant.constant() else {
                out.errors.push(format!(
                    "{} ({}): the meter's variant names no known meter constant; the power profile is not read",
                    lp.name, lp.obis
                ));
                return Ok(());
            };
            *ctx.constant = Some(c);
            c
        }
    };
    let key = lp.obis.to_string();
    let backfill = i64::try_from(plan.backfill.as_secs()).unwrap_or(i64::MAX);
    let mut mark = ctx.marks.get(&key).copied();
    // (mark, now]; first contact: the backfill.
    let from = mark.map_or_else(|| meter_now.saturating_sub(backfill), |ms| ms.div_euclid(1000));
    let until = meter_now.min(from.saturating_add(MAX_CATCH_UP_S));
    let settled = i64::from(lp.period_s).saturating_mul(2);
    let mut window_from = from;
    let mut period_warned = false;
    let mut skipped: Option<(i64, i64)> = None;
    while window_from < until {
        if ctx.stop.is_some_and(|s| *s.borrow()) {
            debug!(meter = %ctx.meter, profile = %lp.name, "stopping: the catch-up goes on at the next start");
            break;
        }
        let window_to = until.min(window_from.saturating_add(PROFILE_WINDOW_S));
        let records =
            client.read_power_profile(unix_to_stamp(window_from, offset), unix_to_stamp(window_to, offset)).await?;
        let mut readings = Vec::new();
        let mut last = None;
        for r in &records {
            let t = stamp_to_unix(r.stamp, offset);
            let t_ms = t.saturating_mul(1000);
            // Strictly after the mark, within the window asked for.
            if mark.is_some_and(|m| t_ms <= m) || t <= window_from || t > window_to {
                continue;
            }
            if u32::from(r.period) * 60 != lp.period_s && !period_warned {
                warn!(meter = %ctx.meter, profile = %lp.name, meter_minutes = r.period, profile_s = lp.period_s,
                      "the meter integrates over another period than the profile says; the meter's records are stored");
                period_warned = true;
            }
            let Some(ts) = Utc.timestamp_opt(t, 0).single() else { continue };
            for c in &lp.columns {
                let Some(wh) = r.energy_wh(c.quantity.index(), constant) else { continue };
                readings.push(StoredReading {
                    reading: Reading {
                        meter: ctx.meter.to_string(),
                        name: c.name.clone(),
                        obis: c.quantity.interval_obis(),
                        value: Value::Number(wh),
                        unit: c.quantity.unit().to_string(),
                        ts,
                        quality: Quality::OK,
                    },
                    kind: ValueKind::Counter,
                });
            }
            last = Some(last.map_or(t_ms, |l: i64| l.max(t_ms)));
        }
        if let Some(l) = last {
            debug!(meter = %ctx.meter, profile = %lp.name, records = records.len(), "power profile window read");
            mark = Some(l);
            ctx.marks.insert(key.clone(), l);
            hand_over(ctx, out, Intervals { profile: key.clone(), readings, last_ms: l })?;
        } else if mark.is_some() && window_to < meter_now.saturating_sub(settled) {
            let l = window_to.saturating_mul(1000);
            skipped = Some((skipped.map_or(window_from, |(f, _)| f), window_to));
            mark = Some(l);
            ctx.marks.insert(key.clone(), l);
            hand_over(ctx, out, Intervals { profile: key.clone(), readings: Vec::new(), last_ms: l })?;
        }
        window_from = window_to;
    }
    if let Some((f, t)) = skipped {
        let at = |s: i64| Utc.timestamp_opt(s, 0).single().map(|d| d.to_rfc3339()).unwrap_or_default();
        info!(meter = %ctx.meter, profile = %lp.name, from = %at(f), to = %at(t),
              "the meter holds no records for this time range; skipped");
    }
    Ok(())
}

/// Hands a window to the caller's sink, or keeps it in `out`.
fn hand_over(ctx: &mut PollCtx<'_>, out: &mut MercuryPoll, window: Intervals) -> Result<(), MercuryError> {
    match ctx.on_window.as_mut() {
        Some(sink) => sink(window).map_err(|e| {
            warn!(meter = %ctx.meter, "power profile window not handed to the store: {e}");
            MercuryError::ChannelLost { meter: ctx.meter.to_string(), request: "store the power profile".into() }
        }),
        None => {
            out.intervals.push(window);
            Ok(())
        }
    }
}

/// Parses a UTC offset for `utc_offset`: `+03:00`, `-05:30`, `+3`, `UTC`, `Z`. Returns minutes.
///
/// # Errors
/// Anything else, or more than 14 hours.
pub fn parse_utc_offset(s: &str) -> Result<i32, String> {
    let t = s.trim();
    if matches!(t, "Z" | "UTC" | "utc" | "0") {
        return Ok(0);
    }
    let bad = || format!("{s:?} (expected a UTC offset such as \"+03:00\", \"-05:30\" or \"UTC\")");
    let (sign, rest) = match t.as_bytes().first() {
        Some(b'+') => (1, &t[1..]),
        Some(b'-') => (-1, &t[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').unwrap_or((rest, "0"));
    let digits = |x: &str| !x.is_empty() && x.len() <= 2 && x.bytes().all(|b| b.is_ascii_digit());
    if !digits(h) || !digits(m) {
        return Err(bad());
    }
    let (h, m): (i32, i32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 14 || m > 59 || (h == 14 && m > 0) {
        return Err(bad());
    }
    Ok(sign * (h * 60 + m))
}

/// `amid decode --protocol mercury`: one frame described for a human; with `request`, the frame is decoded
/// as the reply to that request. Exit code 2 (bad input) when the bytes are no Mercury frame or the CRC
/// does not match.
///
/// # Errors
/// [`crate::BadInput`] for undecodable bytes (with the description, so the operator sees why).
pub fn decode(bytes: &[u8], request: Option<&[u8]>, as_json: bool) -> anyhow::Result<std::process::ExitCode> {
    use ami_protocols::mercury::{describe, describe_exchange, Frame};
    let bad = |m: String| anyhow::anyhow!(crate::BadInput(m));
    if as_json {
        return Err(bad("--format json is not available for Mercury; the description is text".into()));
    }
    let text = match request {
        Some(req) => describe_exchange(req, bytes),
        None => describe(bytes),
    }
    .map_err(|e| bad(format!("cannot decode the Mercury bytes: {e}")))?;
    if Frame::parse(bytes).is_err() {
        return Err(bad(format!("cannot decode the Mercury frame:\n{}", text.trim_end())));
    }
    print!("{text}");
    if !text.ends_with('\n') {
        println!();
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// The simulated meter for a Mercury profile: a Mercury 234 for a `mercury-234…` profile, else a 230, with
/// the profile's power-profile period.
pub fn sim_spec(profile: &MercuryProfile, address: u8, serial: u32) -> ami_sim::mercury::MercuryMeterSpec {
    use ami_sim::mercury::MercuryMeterSpec;
    let mut spec = if profile.id.contains("234") {
        MercuryMeterSpec::mercury_234(address, serial)
    } else {
        MercuryMeterSpec::mercury_230(address, serial)
    };
    if let Some(lp) = &profile.load_profile {
        spec.period = u8::try_from(lp.period_s / 60).unwrap_or(spec.period).max(1);
    }
    spec.profile_records = profile.options.profile_records;
    spec
}

/// A Mercury line whose meter clocks show the system time plus `offset_s` (meters keep local time), to
/// the second. The line's start is the last full hour of meter time and its value clock is advanced to
/// now, so the power-profile records end on the hour and half hour as a real meter's do (the simulator
/// stamps record k at start + k·period).
pub fn sim_line(
    specs: impl IntoIterator<Item = ami_sim::mercury::MercuryMeterSpec>,
    offset_s: i64,
) -> Result<ami_sim::mercury::MercuryLine, String> {
    let now = Utc::now().timestamp() + offset_s;
    let hour = now - now.rem_euclid(3600);
    let mut line =
        ami_sim::mercury::MercuryLine::with_meters(unix_to_stamp(hour, 0), specs).map_err(|e| e.to_string())?;
    line.advance(Duration::from_secs(u64::try_from(now - hour).unwrap_or(0)));
    Ok(line)
}

/// `amid simulate` for a Mercury profile: a line with a meter per `--address` (default 128), the level-1
/// password from `--password` or the secrets file (default `010101010101`), meter clocks at system time
/// plus `--clock-offset`, and with `--modbus PROFILE@UNIT` Modbus RTU meters on the same line (serial
/// lines and ptys only: a mixed RS-485 line).
///
/// # Errors
/// Bad flags ([`crate::BadInput`]) or a server that cannot start.
pub async fn simulate(
    args: &crate::cli::SimulateArgs,
    profile: &ami_device::Profile,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<std::process::ExitCode> {
    use anyhow::{anyhow, Context};
    let bad = |m: String| anyhow!(crate::BadInput(m));
    let mp = MercuryProfile::from_profile(profile).map_err(|e| bad(e.to_string()))?;
    let url: MediaUrl = args.listen.parse().map_err(|e: ami_media::UrlError| bad(e.to_string()))?;
    if args.drop_rate > 0.0 || args.corrupt_rate > 0.0 || args.drop_every.is_some() || !args.set.is_empty() {
        return Err(bad(
            "--drop-rate, --corrupt-rate, --drop-every and --set are not supported for Mercury simulators".into(),
        ));
    }
    let password = match (&args.password, &args.secrets) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(path)) => {
            let all = crate::config::read_secrets_file(path).map_err(|e| bad(e.to_string()))?;
            let entry = match (&args.secrets_meter, all.len()) {
                (Some(id), _) => all.get(id).ok_or_else(|| bad(format!("{}: no [meter.{id}]", path.display())))?,
                (None, 1) => all.values().next().ok_or_else(|| bad("empty secrets file".into()))?,
                (None, n) => return Err(bad(format!("{}: {n} meters; name one with --secrets-meter", path.display()))),
            };
            entry.password.as_ref().map(|p| String::from_utf8_lossy(p).into_owned())
        }
        (None, None) => None,
    };
    let password =
        password.map(|p| p.trim().parse::<Password>().map_err(|e| bad(format!("--password: {e}")))).transpose()?;
    let offset = match &args.clock_offset {
        Some(o) => crate::dlms_cli::parse_offset(o).map_err(|e| bad(format!("--clock-offset: {e}")))?,
        None => 0,
    };
    let addresses = if args.addresses.is_empty() {
        vec![mp.line.address.filter(|a| (1..=240).contains(a)).unwrap_or(128)]
    } else {
        args.addresses.clone()
    };
    let mut specs = Vec::new();
    for &a in &addresses {
        if !(1..=240).contains(&a) {
            return Err(bad(format!("--address {a}: a Mercury network address is 1..=240")));
        }
        let serial = args.serial.unwrap_or(41_234_000) / 1000 * 1000 + u32::from(a);
        let mut spec = sim_spec(&mp, a, serial);
        if let Some(p) = &password {
            spec.user_password = p.clone();
        }
        if let Some(days) = args.history_days {
            spec.profile_history = days.saturating_mul(1440) / u32::from(spec.period.max(1));
        }
        specs.push(spec);
    }
    let mut line = sim_line(specs, offset).map_err(bad)?;
    if let Some(t) = args.channel_timeout {
        line.set_idle_timeout(t);
    }
    let shared = Arc::new(std::sync::Mutex::new(line));
    let delay = args.delay.unwrap_or_default();
    let shown: Vec<String> = addresses.iter().map(u8::to_string).collect();
    let modbus = ami_sim::Simulator::new();
    let mut units = Vec::new();
    for m in &args.modbus {
        let (id, unit) = m
            .rsplit_once('@')
            .and_then(|(p, u)| Some((p, u.parse::<u8>().ok().filter(|u| (1..=247).contains(u))?)))
            .ok_or_else(|| bad(format!("--modbus {m:?}: expected PROFILE@UNIT, e.g. eastron-sdm630@1")))?;
        if addresses.contains(&unit) {
            return Err(bad(format!("--modbus {m:?}: address {unit} is taken by a Mercury meter")));
        }
        let p = crate::cli::load_profile(id)?;
        if p.protocol != ami_device::Protocol::Modbus {
            return Err(bad(format!("--modbus {m:?}: profile {id} speaks {}, not modbus", p.protocol)));
        }
        modbus.insert(unit, ami_sim::SimMeter::new(&p, args.seed.unwrap_or(1).wrapping_add(u64::from(unit))));
        units.push(format!("{id}@{unit}"));
    }
    let serve = async {
        match (&url, units.is_empty()) {
            (MediaUrl::Tcp { host, port, .. }, true) => {
                let listener = tokio::net::TcpListener::bind((host.as_str(), *port))
                    .await
                    .with_context(|| format!("cannot listen on {url}"))?;
                let local = listener.local_addr()?;
                println!("simulating {} (Mercury) at tcp://{local}, address {}", mp.id, shown.join(","));
                ami_sim::mercury::serve_tcp(listener, shared, delay).await.context("simulator stopped")
            }
            (MediaUrl::Serial { .. }, true) => {
                println!("simulating {} (Mercury) at {url}, address {}", mp.id, shown.join(","));
                ami_sim::mercury::serve(&url, shared, delay)
                    .await
                    .with_context(|| format!("simulator on {url} stopped"))
            }
            (MediaUrl::Serial { .. }, false) => {
                println!(
                    "simulating a mixed line at {url}: {} (Mercury) at address {}, Modbus {}",
                    mp.id,
                    shown.join(","),
                    units.join(", ")
                );
                line::serve(&url, line::MixedLine::new(shared, modbus), delay)
                    .await
                    .with_context(|| format!("simulator on {url} stopped"))
            }
            (MediaUrl::Tcp { .. }, false) => {
                Err(bad("--modbus (a mixed RS-485 line) needs a serial:// line or pty, not tcp://".into()))
            }
        }
    };
    tokio::select! {
        r = serve => r?,
        () = shutdown => info!("simulator stopped"),
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// `amid read` of a Mercury meter: the password from `AMI_SECRET_<METER_ID>_PASSWORD` or the `--secrets`
/// file's `[meter.METER_ID]` (default the factory password of the level), the address from `--address`
/// (else the profile's), the power profile only with `--profile-since`. The channel is closed afterwards.
///
/// # Errors
/// Bad arguments ([`crate::BadInput`]); the meter's failure, naming it.
pub async fn read(args: &crate::cli::MeterArgs, meter_id: &str) -> anyhow::Result<(Vec<Reading>, Vec<String>)> {
    use anyhow::{anyhow, Context};
    let bad = |m: String| anyhow!(crate::BadInput(m));
    let profile = crate::cli::load_profile(&args.profile)?;
    let mut mp = MercuryProfile::from_profile(&profile).map_err(|e| bad(e.to_string()))?;
    if args.dlms.profile_since.is_none() {
        mp.load_profile = None;
    }
    let media: MediaUrl = args.media.parse().map_err(|e: ami_media::UrlError| bad(e.to_string()))?;
    let mut secrets = match &args.dlms.secrets {
        Some(path) => {
            let mut all = crate::config::read_secrets_file(path).map_err(|e| bad(e.to_string()))?;
            all.remove(meter_id).unwrap_or_default()
        }
        None => crate::config::MeterSecrets::default(),
    };
    if let Ok(p) = std::env::var(crate::config::secret_env_var(meter_id, "password")) {
        secrets.password = Some(p.into_bytes());
    }
    let mut dlms = crate::config::DlmsMeterCfg::default();
    if let Some(since) = args.dlms.profile_since {
        dlms.profile_backfill = since;
    }
    let cfg = MeterCfg {
        id: meter_id.to_string(),
        bus: "cli".into(),
        profile: args.profile.clone(),
        address: args.address,
        secondary: None,
        interval: Duration::from_secs(900),
        timeout: args.timeout,
        dlms,
        secrets,
        mercury: MercuryMeterCfg::default(),
        line: 0,
    };
    let timeout = args.timeout.unwrap_or(Duration::from_secs(1));
    let plan = plan(&cfg, &MercuryMeterCfg::default(), mp, Some(&media), timeout, args.retries).map_err(bad)?;
    let transport = ami_media::open(&media).await.with_context(|| format!("cannot open {media}"))?;
    let bus = ami_link::Bus::spawn(
        transport,
        ami_link::BusConfig {
            id: "cli".into(),
            guard_time: bus_guard_time(Duration::from_millis(10), [&plan]),
            timeout,
            retries: 0,
            ..ami_link::BusConfig::default()
        },
    );
    let mut client = plan.client(bus);
    let (mut marks, mut constant) = (HashMap::new(), None);
    let mut ctx = PollCtx {
        meter: meter_id,
        marks: &mut marks,
        constant: &mut constant,
        now: Utc::now(),
        on_window: None,
        stop: None,
    };
    let result = poll(&plan, &mut client, &mut ctx).await;
    close(&mut client).await;
    let polled = result.map_err(|e| anyhow!("{e} (at {media} address {})", plan.meter.address.0))?;
    let mut readings: Vec<Reading> = polled.readings.into_iter().map(|r| r.reading).collect();
    readings.extend(polled.intervals.into_iter().flat_map(|w| w.readings.into_iter().map(|r| r.reading)));
    Ok((readings, polled.errors))
}

/// Counters of a simulated mixed line (shared with the task serving it).
#[derive(Debug, Default)]
pub struct MixedStats {
    /// Bytes that were no frame for any meter on the line (noise, or a collision).
    pub dropped: std::sync::atomic::AtomicU64,
    /// Modbus requests answered.
    pub modbus: std::sync::atomic::AtomicU64,
    /// Mercury requests answered.
    pub mercury: std::sync::atomic::AtomicU64,
}

pub mod line {
    //! A simulated RS-485 line with Mercury and Modbus RTU meters on it, as sites have them: requests are
    //! routed by their address byte — a Modbus unit's to the Modbus simulator (frame length from the
    //! function code), a Mercury meter's to the Mercury line (a frame ends where its CRC-16/MODBUS checks,
    //! the protocol has no length field) —; a frame for nobody, or a partial one followed by silence, is
    //! dropped as the meters on a real line would ignore it. Both protocols share the CRC, so every reply
    //! is the meter's own frame, and a master that interleaves them must never collide.

    use std::collections::HashSet;
    use std::io;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;

    use super::MixedStats;

    use ami_link::crc::crc16_modbus;
    use ami_media::MediaUrl;
    use ami_sim::mercury::SharedMercuryLine;
    use ami_sim::Simulator;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::Instant;

    /// Longest request either protocol sends here (Modbus FC 16 with 123 registers is 255 bytes).
    const MAX_FRAME: usize = 256;

    /// The sans-IO router of a mixed line.
    pub struct MixedLine {
        mercury: SharedMercuryLine,
        modbus: Simulator,
        modbus_units: HashSet<u8>,
        buf: Vec<u8>,
        stats: Arc<MixedStats>,
    }

    impl MixedLine {
        /// A line with the Mercury meters of `mercury` and the Modbus units of `modbus`.
        pub fn new(mercury: SharedMercuryLine, modbus: Simulator) -> Self {
            let modbus_units = modbus.units().into_iter().collect();
            Self { mercury, modbus, modbus_units, buf: Vec::new(), stats: Arc::default() }
        }

        /// The line's counters (they stay readable while a task serves the line).
        pub fn stats(&self) -> Arc<MixedStats> {
            Arc::clone(&self.stats)
        }

        /// Feeds request bytes; returns the replies of the complete frames among them.
        pub fn handle_input(&mut self, now: Instant, data: &[u8]) -> Vec<Vec<u8>> {
            self.buf.extend_from_slice(data);
            let mut replies = Vec::new();
            while let Some(&address) = self.buf.first() {
                let len = if self.modbus_units.contains(&address) {
                    match modbus_request_len(&self.buf) {
                        Some(n) if n <= self.buf.len() => n,
                        Some(n) if n <= MAX_FRAME => break,
                        _ => {
                            self.drop_bytes(1);
                            continue;
                        }
                    }
                } else {
                    match (4..=self.buf.len().min(64)).find(|&l| crc16_modbus(&self.buf[..l]) == 0) {
                        Some(n) => n,
                        None if self.buf.len() < 64 => break,
                        None => {
                            self.drop_bytes(1);
                            continue;
                        }
                    }
                };
                let frame: Vec<u8> = self.buf.drain(..len).collect();
                if let Some(r) = self.answer(now, &frame) {
                    replies.push(r);
                }
            }
            replies
        }

        /// The line was silent: a partial frame will not complete.
        pub fn handle_silence(&mut self) {
            let n = self.buf.len();
            self.drop_bytes(n);
        }

        fn drop_bytes(&mut self, n: usize) {
            let n = n.min(self.buf.len());
            self.buf.drain(..n);
            self.stats.dropped.fetch_add(n as u64, Ordering::Relaxed);
        }

        fn answer(&mut self, now: Instant, frame: &[u8]) -> Option<Vec<u8>> {
            let address = *frame.first()?;
            if self.modbus_units.contains(&address) {
                if crc16_modbus(frame) != 0 {
                    return None;
                }
                let pdu = frame.get(1..frame.len() - 2)?;
                let reply_pdu = self.modbus.handle_pdu(address, pdu)?;
                let mut reply = Vec::with_capacity(reply_pdu.len() + 3);
                reply.push(address);
                reply.extend_from_slice(&reply_pdu);
                let crc = crc16_modbus(&reply);
                reply.extend_from_slice(&crc.to_le_bytes());
                self.stats.modbus.fetch_add(1, Ordering::Relaxed);
                return Some(reply);
            }
            let mut line = self.mercury.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            line.catch_up(now);
            let r = line.handle_frame(now, frame);
            if r.is_some() {
                self.stats.mercury.fetch_add(1, Ordering::Relaxed);
            }
            r
        }
    }

    /// Length of the Modbus RTU request at the start of `buf` (from its function code), `None` when the
    /// function is not one a master sends here or the byte count is not there yet.
    fn modbus_request_len(buf: &[u8]) -> Option<usize> {
        match *buf.get(1)? {
            0x01..=0x06 => Some(8),
            0x0F | 0x10 => buf.get(6).map(|&n| 9 + usize::from(n)),
            _ => None,
        }
    }

    /// Serves a mixed line on the serial device or pty at `url` until an I/O error; replies go out after
    /// `delay`. A partial frame is dropped after 50 ms of silence.
    pub async fn serve(url: &MediaUrl, mut line: MixedLine, delay: Duration) -> io::Result<()> {
        let mut port = ami_media::open(url).await.map_err(|e| io::Error::other(e.to_string()))?;
        let mut buf = [0u8; 512];
        loop {
            let read = tokio::time::timeout(Duration::from_millis(50), port.read(&mut buf)).await;
            let n = match read {
                Err(_) => {
                    line.handle_silence();
                    continue;
                }
                Ok(Ok(0)) => return Ok(()),
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(e),
            };
            for reply in line.handle_input(Instant::now(), &buf[..n]) {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                port.write_all(&reply).await?;
                port.flush().await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn meter(extra: &str, media: &str) -> (MeterCfg, MediaUrl) {
        meter_id("m-1", extra, media)
    }

    /// A meter called `id` (tests that set a meter's secrets in the environment use their own id: tests run
    /// in parallel).
    fn meter_id(id: &str, extra: &str, media: &str) -> (MeterCfg, MediaUrl) {
        let text = format!(
            "[site]\nid = \"s\"\n[[bus]]\nid = \"b\"\nmedia = \"{media}\"\n[[meter]]\nid = \"{id}\"\nbus = \"b\"\n\
             profile = \"mercury-230\"\n{extra}"
        );
        let c = Config::parse(&text, Path::new("/etc/ami/amid.toml")).unwrap();
        (c.meters[0].clone(), c.buses[0].media.clone())
    }

    fn profile() -> MercuryProfile {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../devices/mercury-230.xml");
        ami_device::mercury::load_mercury_profile(&path).unwrap()
    }

    #[test]
    fn the_site_gives_the_address_and_overrides_the_profile() {
        let (m, media) = meter("address = 128\n", "serial:///dev/ttyUSB0?baud=19200");
        let p = plan(&m, &m.mercury, profile(), Some(&media), Duration::from_secs(1), 2).unwrap();
        assert_eq!(
            (p.meter.address, p.meter.level, p.meter.baud, p.meter.multiplier),
            (Address(128), Level::User, 19_200, 1)
        );
        assert_eq!(p.meter.password, Password::factory_user(), "the factory password when the secrets name none");
        assert_eq!(p.meter.timeout, None, "serial lines use the timing table");
        assert_eq!((p.meter.retries, p.profile_records, p.utc_offset_s), (2, 4096, None));

        let (m, media) = meter("address = 7\nlevel = 2\nmultiplier = 4\nutc_offset = \"+03:00\"\n", "tcp://gw:4001");
        let p = plan(&m, &m.mercury, profile(), Some(&media), Duration::from_millis(700), 1).unwrap();
        assert_eq!((p.meter.level, p.meter.multiplier, p.utc_offset_s), (Level::Admin, 4, Some(10_800)));
        assert_eq!(p.meter.password, Password::factory_admin());
        assert_eq!(p.meter.timeout, Some(Duration::from_millis(700)), "a TCP gateway adds its own delay");
        // 9600 baud, n = 4: 20 ms of silence between frames, more than the bus default.
        assert_eq!(p.guard_time(), Duration::from_millis(20));
        assert_eq!(bus_guard_time(Duration::from_millis(10), [&p]), p.guard_time());
    }

    #[test]
    fn the_password_comes_from_the_secrets_and_mistakes_name_the_key_not_the_value() {
        std::env::set_var("AMI_SECRET_M_2_PASSWORD", "A1B2C3D4E5F6");
        let (m, media) = meter_id("m-2", "address = 128\n", "serial:///dev/ttyUSB0");
        let p = plan(&m, &m.mercury, profile(), Some(&media), Duration::from_secs(1), 2).unwrap();
        assert_eq!(p.meter.password.bytes(), &[0xA1, 0xB2, 0xC3, 0xD4, 0xE5, 0xF6]);
        assert!(!format!("{p:?}").contains("A1") && !format!("{p:?}").contains("161"), "{p:?}");
        std::env::set_var("AMI_SECRET_M_2_PASSWORD", "hunter2");
        let (m, media) = meter_id("m-2", "address = 128\n", "serial:///dev/ttyUSB0");
        let e = plan(&m, &m.mercury, profile(), Some(&media), Duration::from_secs(1), 2).unwrap_err();
        assert!(e.contains("12 hex digits") && e.contains("AMI_SECRET_M_2_PASSWORD") && !e.contains("hunter2"), "{e}");
        std::env::remove_var("AMI_SECRET_M_2_PASSWORD");
        let (m, media) = meter_id("m-2", "", "serial:///dev/ttyUSB0");
        let e = plan(&m, &m.mercury, profile(), Some(&media), Duration::from_secs(1), 2).unwrap_err();
        assert!(e.contains("needs its network address"), "{e}");
        let (m, media) = meter_id("m-2", "address = 241\n", "serial:///dev/ttyUSB0");
        let e = plan(&m, &m.mercury, profile(), Some(&media), Duration::from_secs(1), 2).unwrap_err();
        assert!(e.contains("1..240"), "{e}");
    }

    #[test]
    fn utc_offsets() {
        assert_eq!(parse_utc_offset("+03:00"), Ok(180));
        assert_eq!(parse_utc_offset("-05:30"), Ok(-330));
        assert_eq!(parse_utc_offset("+5"), Ok(300));
        assert_eq!(parse_utc_offset("UTC"), Ok(0));
        for bad in ["3", "+15:00", "+03:60", "+0300x", "", "+"] {
            assert!(parse_utc_offset(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_mixed_line_routes_by_address_and_drops_frames_for_nobody() {
        use ami_protocols::mercury::Request;
        let spec = ami_sim::mercury::MercuryMeterSpec::mercury_230(128, 41_234_128);
        let line = Arc::new(std::sync::Mutex::new(sim_line([spec], 0).unwrap()));
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../devices/eastron-sdm120.xml");
        let sdm = ami_device::load_profile(&path).unwrap();
        let modbus = ami_sim::Simulator::new();
        modbus.insert(1, ami_sim::SimMeter::new(&sdm, 1));
        let mut mixed = line::MixedLine::new(line, modbus);
        let stats = mixed.stats();
        let now = tokio::time::Instant::now();
        // Mercury test channel, split over two reads, then a Modbus read of 2 input registers at unit 1.
        let test = Request::Test.encode(Address(128));
        assert!(mixed.handle_input(now, &test[..2]).is_empty());
        assert_eq!(mixed.handle_input(now, &test[2..]), std::slice::from_ref(&test));
        let read = [0x01, 0x04, 0x00, 0x00, 0x00, 0x02, 0x71, 0xCB];
        let replies = mixed.handle_input(now, &read);
        assert_eq!(replies.len(), 1);
        assert_eq!(&replies[0][..3], &[0x01, 0x04, 0x04]);
        // A Mercury frame for an address nobody has: silence; noise followed by silence: dropped.
        assert!(mixed.handle_input(now, &Request::Test.encode(Address(9))).is_empty());
        assert!(mixed.handle_input(now, &[0x13, 0x37]).is_empty());
        mixed.handle_silence();
        assert_eq!(stats.dropped.load(std::sync::atomic::Ordering::Relaxed), 2);
        assert_eq!(stats.mercury.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(stats.modbus.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    #[test]
    fn meter_clocks_without_a_zone_are_placed_in_utc() {
        // Moscow time (+3 h), meter 40 s fast.
        let utc = 1_780_000_000;
        let (offset, drift) = infer_offset(utc + 3 * 3600 + 40, utc);
        assert_eq!((offset, drift), (10_800, 40));
        // A clock 6 minutes slow in UTC+5:45 (Nepal) still finds the zone.
        assert_eq!(infer_offset(utc + 5 * 3600 + 45 * 60 - 360, utc), (20_700, -360));
        let stamp = unix_to_stamp(utc, offset);
        assert_eq!(stamp_to_unix(stamp, offset), utc - utc.rem_euclid(60));
        assert_eq!(stamp_to_unix(Stamp::new(2000, 1, 1, 3, 0).unwrap(), 10_800), EPOCH_2000_S);
    }
}

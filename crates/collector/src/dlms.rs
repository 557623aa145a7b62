//! DLMS/COSEM meters in the daemon (IEC 62056-5-3 / -6-2 through `ami_protocols::dlms::session`): how a
//! `[[meter]]` with a DLMS profile becomes a session configuration, one poll (association, registers with
//! their scaler and unit, load profiles read incrementally, release), the relay and clock commands, and
//! the invocation counter kept in the site store.
//!
//! Incremental load profiles: per meter and profile generic the store keeps the meter timestamp of the
//! last interval stored ([`crate::store::Store::profile_mark`]). A poll asks the meter for the entries in
//! `(mark, meter now]` (on first contact `[meter now - profile_backfill, meter now]`) by selective access
//! on the clock column, in windows of at most [`PROFILE_WINDOW_S`] and at most [`MAX_CATCH_UP_S`] per poll
//! (the next poll goes on from there), and hands each window's rows with the new mark to the store
//! writer, which commits both in one transaction. After an outage of the site or the uplink the meter's
//! own memory therefore fills the gap, with the meter's timestamps, exactly once. A past window the meter
//! holds nothing for (it was off, or its memory does not reach back that far) moves the mark past it, so
//! the catch-up never stalls on it; the skipped range is logged.
//!
//! Secrets (password, keys) come from [`crate::config::MeterSecrets`] and go only into the client
//! settings; nothing here logs them (the client's `Debug` output redacts them too).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ami_device::dlms::{DlmsAuth, DlmsFraming, DlmsProfile};
use ami_device::{Obis, Quality, Reading, Value, ValueKind};
use ami_link::hdlc_session::HdlcParameters;
use ami_link::BusHandle;
use ami_media::MediaUrl;
use ami_protocols::dlms::apdu::{AttributeDescriptor, LogicalName};
use ami_protocols::dlms::axdr::Data;
use ami_protocols::dlms::client::{
    Authentication, Ciphering, ClientSettings, DlmsError, InvocationCounter, MemoryCounter,
};
use ami_protocols::dlms::cosem::{self, CaptureObject, ScalerUnit};
use ami_protocols::dlms::security::{Keys, SC_AUTHENTICATED_ENCRYPTED};
use ami_protocols::dlms::session::{Framing, Session, SessionConfig};
use chrono::{DateTime, TimeZone, Utc};
use tracing::{debug, info, warn};

use crate::config::{default_system_title, DlmsAuthCfg, DlmsFramingCfg, MeterCfg};
use crate::store::{InvocationCounterStore, StoredReading};

/// The longest time range asked for in one GET of a profile buffer (one day: 96 entries of a 15-minute
/// profile), so a long catch-up arrives and is committed in steps.
pub const PROFILE_WINDOW_S: i64 = 86_400;

/// The most of a profile's backlog one poll reads (31 days); the rest follows at the next polls, so a
/// meter with months to catch up does not hold its bus for long.
pub const MAX_CATCH_UP_S: i64 = 31 * 86_400;

/// A DLMS meter resolved from its config and profile: everything a session needs except the counter.
#[derive(Clone)]
pub struct DlmsPlan {
    /// The DLMS view of the profile (values, load profiles, disconnect control).
    pub profile: Arc<DlmsProfile>,
    /// HDLC or wrapper, with the effective addresses.
    pub framing: Framing,
    /// Mode E opening (optical probe).
    pub optical: bool,
    /// Association settings (authentication and ciphering with the secrets).
    pub settings: ClientSettings,
    /// The first read of a load profile reaches this far back.
    pub backfill: Duration,
}

impl std::fmt::Debug for DlmsPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // ClientSettings redacts the password and the keys itself.
        f.debug_struct("DlmsPlan")
            .field("profile", &self.profile.id)
            .field("framing", &self.framing)
            .field("optical", &self.optical)
            .field("settings", &self.settings)
            .field("backfill", &self.backfill)
            .finish()
    }
}

/// Resolves a DLMS meter: the profile's defaults overridden by the meter's config, secrets checked against
/// the authentication level. The error says which key to set (never a secret's value).
pub fn plan(cfg: &MeterCfg, site: &str, profile: DlmsProfile, media: Option<&MediaUrl>) -> Result<DlmsPlan, String> {
    let o = profile.options;
    let d = &cfg.dlms;
    let framing = d.framing.unwrap_or(match o.framing {
        DlmsFraming::Wrapper => DlmsFramingCfg::Wrapper,
        DlmsFraming::Hdlc => DlmsFramingCfg::Hdlc,
    });
    let client = d.client.unwrap_or(u16::from(o.client));
    let server_logical = d.server_logical.unwrap_or(o.server_logical);
    let server_physical = d.server_physical.or(o.server_physical);
    let optical = d.optical.unwrap_or(o.optical);
    if framing == DlmsFramingCfg::Wrapper {
        if let Some(MediaUrl::Serial { .. }) = media {
            return Err("framing \"wrapper\" needs a tcp:// bus (IEC 62056-47); use hdlc on serial lines".into());
        }
        if optical {
            return Err("optical (mode E) needs HDLC on a serial line, not the wrapper".into());
        }
    }
    let framing = match framing {
        DlmsFramingCfg::Hdlc => {
            let mut params = HdlcParameters::default();
            if let Some(m) = o.max_info {
                params.max_info_tx = m;
                params.max_info_rx = m;
            }
            if let Some(w) = o.window {
                params.window_tx = w;
            }
            let client = u8::try_from(client).map_err(|_| format!("client {client} does not fit an HDLC address"))?;
            Framing::Hdlc { client, server_logical, server_physical, params }
        }
        DlmsFramingCfg::Wrapper => Framing::Wrapper { client, server: server_logical },
    };
    let auth = d.authentication.unwrap_or(match o.authentication {
        DlmsAuth::None => DlmsAuthCfg::None,
        DlmsAuth::Low => DlmsAuthCfg::Low,
        DlmsAuth::HighGmac => DlmsAuthCfg::HighGmac,
    });
    let ciphered = d.ciphering.unwrap_or(o.ciphering);
    let s = &cfg.secrets;
    let where_ = |name: &str| {
        format!(
            "set {name} in [meter.{}] of the secrets file ([site] secrets) or {}",
            cfg.id,
            crate::config::secret_env_var(&cfg.id, name)
        )
    };
    let authentication = match auth {
        DlmsAuthCfg::None => Authentication::None,
        DlmsAuthCfg::Low => Authentication::Low {
            password: s
                .password
                .clone()
                .ok_or_else(|| format!("authentication \"low\" needs a password: {}", where_("password")))?,
        },
        DlmsAuthCfg::HighGmac => Authentication::HighGmac,
    };
    let ciphering = if ciphered || auth == DlmsAuthCfg::HighGmac {
        let why = if ciphered { "ciphering" } else { "authentication \"high-gmac\"" };
        let ek = s
            .block_cipher_key
            .ok_or_else(|| format!("{why} needs the block cipher key: {}", where_("block_cipher_key")))?;
        let ak = s
            .authentication_key
            .ok_or_else(|| format!("{why} needs the authentication key: {}", where_("authentication_key")))?;
        let keys = Keys { block_cipher_key: ek, authentication_key: ak };
        let system_title = d.system_title.unwrap_or_else(|| default_system_title(site));
        // HLS-GMAC without glo-ciphering: the keys serve the GMAC only (security control 0).
        let security_control = if ciphered { SC_AUTHENTICATED_ENCRYPTED } else { 0 };
        Some(Ciphering { keys, system_title, security_control })
    } else {
        None
    };
    let settings = ClientSettings { authentication, ciphering, ..ClientSettings::default() };
    Ok(DlmsPlan { profile: Arc::new(profile), framing, optical, settings, backfill: d.profile_backfill })
}

impl DlmsPlan {
    /// The session configuration for one association.
    pub fn session_config(&self, meter: &str, timeout: Duration, retries: u32) -> SessionConfig {
        SessionConfig {
            meter: meter.to_string(),
            framing: self.framing.clone(),
            optical_mode_e: self.optical,
            settings: self.settings.clone(),
            timeout,
            retries,
        }
    }

    /// Whether the association uses the invocation counter (ciphering or HLS-GMAC).
    pub fn needs_counter(&self) -> bool {
        self.settings.ciphering.is_some()
    }
}

/// The site store's invocation counter as the client's [`InvocationCounter`].
pub struct StoreCounter(pub InvocationCounterStore);

impl InvocationCounter for StoreCounter {
    fn next(&self) -> Result<u32, DlmsError> {
        self.0.next_value().map_err(|e| DlmsError::Counter(e.to_string()))
    }
}

/// The counter for a meter: persisted in the store at `db`, one per client system title (all DLMS meters
/// of a site share the site's title, and with it one strictly increasing counter, so no IV repeats even
/// when meters share keys); a meter without ciphering gets an in-memory one (it is never asked).
pub fn counter(db: &std::path::Path, meter: &str, plan: &DlmsPlan) -> Result<Arc<dyn InvocationCounter>, String> {
    let Some(c) = plan.settings.ciphering.as_ref() else {
        return Ok(Arc::new(MemoryCounter::new(1)));
    };
    let title: String = c.system_title.iter().map(|b| format!("{b:02X}")).collect();
    InvocationCounterStore::open(db, &title)
        .map(|c| Arc::new(StoreCounter(c)) as Arc<dyn InvocationCounter>)
        .map_err(|e| format!("cannot open the invocation counter of {meter}: {e}"))
}

/// The intervals of one load profile read, for one transaction with the profile's new mark.
#[derive(Debug, Clone)]
pub struct Intervals {
    /// The profile generic's OBIS code (the mark's key).
    pub profile: String,
    /// One reading per stored column and entry, with the meter's timestamps.
    pub readings: Vec<StoredReading>,
    /// Meter timestamp (ms) of the newest entry.
    pub last_ms: i64,
}

/// What one poll of a DLMS meter got.
#[derive(Debug, Default)]
pub struct DlmsPoll {
    /// Register and data values, stamped with the collector's time.
    pub readings: Vec<StoredReading>,
    /// Load profile windows, oldest first.
    pub intervals: Vec<Intervals>,
    /// Values that could not be read (the meter refused one object, a unit did not match, …).
    pub errors: Vec<String>,
    /// The meter's clock minus the collector's, seconds (when the meter's clock was read).
    pub clock_drift_s: Option<i64>,
}

/// What a poll needs besides the plan: the bus, the counter, timing, and the profile marks known so far.
pub struct PollCtx<'a> {
    /// The meter's bus.
    pub bus: &'a BusHandle,
    /// The meter id.
    pub meter: &'a str,
    /// The invocation counter.
    pub counter: Arc<dyn InvocationCounter>,
    /// Per-frame timeout.
    pub timeout: Duration,
    /// Retries per frame.
    pub retries: u32,
    /// Last stored interval per profile OBIS (ms); updated as windows are handed out.
    pub marks: &'a mut HashMap<String, i64>,
    /// The collector's time.
    pub now: DateTime<Utc>,
    /// Where each load profile window goes as soon as it is read (the store writer, so a long catch-up is
    /// committed window by window); `None` collects them in [`DlmsPoll::intervals`].
    pub on_window: Option<&'a mut (dyn FnMut(Intervals) -> Result<(), String> + Send + Sync)>,
    /// Set when the daemon is stopping: a catch-up ends after the window in flight (the next start goes
    /// on from the mark), and the association is released properly.
    pub stop: Option<&'a tokio::sync::watch::Receiver<bool>>,
}

/// The design map's unit spelling of a DLMS unit code (`m3`, `degC`: ASCII), or `None`.
pub fn unit_text(su: &ScalerUnit) -> Option<String> {
    su.unit_symbol().map(|s| match s {
        "m³" => "m3".to_string(),
        "m³/h" => "m3/h".to_string(),
        "m³/d" => "m3/d".to_string(),
        "°C" => "degC".to_string(),
        "°" => "deg".to_string(),
        other => other.to_string(),
    })
}

/// True when the error ends the association (the link or the session is gone), not just one value.
fn is_fatal(e: &DlmsError) -> bool {
    matches!(
        e,
        DlmsError::Link(_) | DlmsError::Hdlc(_) | DlmsError::Counter(_) | DlmsError::State(_) | DlmsError::Security(_)
    )
}

/// Opens an association with the meter; the error says why, for the log.
pub async fn open(plan: &DlmsPlan, ctx: &PollCtx<'_>) -> Result<Session, String> {
    let config = plan.session_config(ctx.meter, ctx.timeout, ctx.retries);
    Session::open(ctx.bus, config, ctx.counter.clone()).await.map_err(|e| format!("association failed: {e}"))
}

/// Polls one meter: association, every value, every load profile since its mark, release.
pub async fn poll(plan: &DlmsPlan, ctx: &mut PollCtx<'_>) -> Result<DlmsPoll, String> {
    let mut session = open(plan, ctx).await?;
    let result = read_all(plan, &mut session, ctx).await;
    if let Err(e) = session.close().await {
        debug!(meter = %ctx.meter, "release: {e}");
    }
    result
}

async fn read_all(plan: &DlmsPlan, session: &mut Session, ctx: &mut PollCtx<'_>) -> Result<DlmsPoll, String> {
    let mut out = DlmsPoll::default();
    for v in &plan.profile.values {
        match read_value(session, v).await {
            Ok((value, unit)) => {
                if let (Some(want), Value::Number(_)) = (&v.unit, &value) {
                    if want != &unit {
                        out.errors
                            .push(format!("{}: the meter reports unit {unit:?}, the profile expects {want:?}", v.name));
                        continue;
                    }
                }
                out.readings.push(StoredReading {
                    reading: Reading {
                        meter: ctx.meter.to_string(),
                        name: v.name.clone(),
                        obis: v.obis,
                        value,
                        unit,
                        ts: ctx.now,
                        quality: Quality::OK,
                    },
                    kind: v.kind,
                });
            }
            Err(e) if is_fatal(&e) => return Err(format!("{}: {e}", v.name)),
            Err(e) => out.errors.push(format!("{} ({}): {e}", v.name, v.obis)),
        }
    }
    if plan.profile.load_profiles.is_empty() {
        return Ok(out);
    }
    let meter_now = match session.read_clock().await {
        Ok(t) => {
            out.clock_drift_s = Some(t - ctx.now.timestamp());
            t
        }
        Err(e) if is_fatal(&e) => return Err(format!("clock: {e}")),
        Err(e) => {
            out.errors.push(format!("clock: {e}; load profiles read up to the collector's time"));
            ctx.now.timestamp()
        }
    };
    for lp in &plan.profile.load_profiles {
        match read_load_profile(plan, session, ctx, lp, meter_now, &mut out.intervals).await {
            Ok(()) => {}
            Err(e) if is_fatal(&e) => return Err(format!("{}: {e}", lp.name)),
            Err(e) => out.errors.push(format!("{} ({}): {e}", lp.name, lp.obis)),
        }
    }
    Ok(out)
}

fn ln(obis: Obis) -> LogicalName {
    obis.0
}

/// Reads one value with meaning: registers scaled with their unit; data and other attributes as numbers
/// or text.
async fn read_value(session: &mut Session, v: &ami_device::dlms::DlmsValueDef) -> Result<(Value, String), DlmsError> {
    let instance = ln(v.obis);
    if v.attribute == 2 && matches!(v.class_id, 3..=5) {
        let (number, su) = session.read_register(instance, v.class_id).await?;
        let unit = su.as_ref().and_then(unit_text).or_else(|| v.unit.clone()).unwrap_or_default();
        return Ok((Value::Number(number), unit));
    }
    let data =
        session.get(AttributeDescriptor { class_id: v.class_id, instance, attribute: v.attribute }, None).await?;
    Ok((data_value(&data), v.unit.clone().unwrap_or_default()))
}

/// A datum as a reading value: numbers as numbers, date-times as RFC 3339 text, strings as text, other
/// octet-strings as hex.
pub fn data_value(data: &Data) -> Value {
    if let Some(n) = cosem::data_to_f64(data) {
        return Value::Number(n);
    }
    if let Some(t) = cosem::data_to_unix(data) {
        if let Some(dt) = Utc.timestamp_opt(t, 0).single() {
            return Value::Text(dt.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        }
    }
    match data {
        Data::VisibleString(b) | Data::Utf8String(b) => Value::Text(String::from_utf8_lossy(b).into_owned()),
        Data::OctetString(b) if !b.is_empty() && b.iter().all(|c| c.is_ascii_graphic() || *c == b' ') => {
            Value::Text(String::from_utf8_lossy(b).into_owned())
        }
        Data::OctetString(b) => Value::Text(b.iter().map(|c| format!("{c:02X}")).collect()),
        Data::Null => Value::Text(String::new()),
        other => Value::Text(format!("{other:?}")),
    }
}

/// Reads a load profile from its mark to `meter_now`, window by window, pushing each window's rows.
async fn read_load_profile(
    plan: &DlmsPlan,
    session: &mut Session,
    ctx: &mut PollCtx<'_>,
    lp: &ami_device::dlms::DlmsLoadProfileDef,
    meter_now: i64,
    out: &mut Vec<Intervals>,
) -> Result<(), DlmsError> {
    let key = lp.obis.to_string();
    let backfill = i64::try_from(plan.backfill.as_secs()).unwrap_or(i64::MAX);
    // (mark, now]: the first second after the last stored entry. First contact: the backfill.
    let from = match ctx.marks.get(&key) {
        Some(&ms) => ms.div_euclid(1000) + 1,
        None => meter_now.saturating_sub(backfill),
    };
    let until = meter_now.min(from.saturating_add(MAX_CATCH_UP_S));
    if from > until {
        return Ok(());
    }
    let (columns, period) = session.profile_columns(ln(lp.obis)).await?;
    // A window that ends this long before the meter's now and holds no entry never will (the meter was off,
    // or its memory does not reach back that far): the mark moves past it so the catch-up goes on.
    let settled = i64::from(period.unwrap_or(lp.period_s)).saturating_mul(2);
    let capture: Vec<(u16, Obis, i8)> = columns.iter().map(|c| (c.class_id, Obis(c.instance), c.attribute)).collect();
    let (selected, missing) = lp.select_columns(&capture);
    if !missing.is_empty() {
        warn!(meter = %ctx.meter, profile = %lp.name, "the meter's profile has no column {}", missing.join(", "));
    }
    // Scaler and unit of each stored column (registers), read once per association.
    let mut scalers: Vec<Option<ScalerUnit>> = Vec::with_capacity(selected.len());
    for (i, _) in &selected {
        let c: &CaptureObject = &columns[*i];
        let su = if c.attribute == 2 && matches!(c.class_id, 3..=5) {
            match session.scaler_unit(c.instance, c.class_id).await {
                Ok(su) => Some(su),
                Err(e) if is_fatal(&e) => return Err(e),
                Err(e) => {
                    warn!(meter = %ctx.meter, column = %Obis(c.instance), "scaler_unit unreadable ({e}); stored unscaled");
                    None
                }
            }
        } else {
            None
        };
        scalers.push(su);
    }
    // A column's kind: the profile value with the same OBIS code says it, else its unit.
    let kinds: HashMap<Obis, ValueKind> = plan.profile.values.iter().map(|v| (v.obis, v.kind)).collect();
    let mut mark = ctx.marks.get(&key).copied();
    let mut window_from = from;
    let mut skipped: Option<(i64, i64)> = None;
    while window_from <= until {
        if ctx.stop.is_some_and(|s| *s.borrow()) {
            debug!(meter = %ctx.meter, profile = %lp.name, "stopping: the rest of the catch-up waits for the next start");
            break;
        }
        let window_to = until.min(window_from.saturating_add(PROFILE_WINDOW_S - 1));
        let profile = session.read_profile(ln(lp.obis), window_from, window_to).await?;
        let mut readings = Vec::new();
        let mut last = None;
        for row in &profile.rows {
            let Some(t) = row.time else { continue };
            let t_ms = t.saturating_mul(1000);
            // Strictly after the mark, within the window asked for (a meter may return a boundary entry).
            if mark.is_some_and(|m| t_ms <= m) || t < window_from || t > window_to {
                continue;
            }
            let Some(ts) = Utc.timestamp_opt(t, 0).single() else { continue };
            for ((i, name), su) in selected.iter().zip(&scalers) {
                let Some(datum) = row.values.get(*i) else { continue };
                let obis = Obis(columns[*i].instance);
                let (value, unit) = match (su, cosem::data_to_f64(datum)) {
                    (Some(su), Some(_)) => {
                        (Value::Number(su.apply(datum).unwrap_or(f64::NAN)), unit_text(su).unwrap_or_default())
                    }
                    _ => (data_value(datum), String::new()),
                };
                let kind = kinds.get(&obis).copied().unwrap_or(if is_counter_unit(&unit) {
                    ValueKind::Counter
                } else {
                    ValueKind::Instantaneous
                });
                readings.push(StoredReading {
                    reading: Reading {
                        meter: ctx.meter.to_string(),
                        name: name.clone(),
                        obis,
                        value,
                        unit,
                        ts,
                        quality: Quality::OK,
                    },
                    kind,
                });
            }
            last = Some(last.map_or(t_ms, |l: i64| l.max(t_ms)));
        }
        if let Some(l) = last {
            debug!(meter = %ctx.meter, profile = %lp.name, entries = profile.rows.len(), "profile window read");
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
        window_from = window_to.saturating_add(1);
    }
    if let Some((f, t)) = skipped {
        let at = |s: i64| Utc.timestamp_opt(s, 0).single().map(|d| d.to_rfc3339()).unwrap_or_default();
        info!(meter = %ctx.meter, profile = %lp.name, from = %at(f), to = %at(t), "the meter holds no entries for this time range; skipped");
    }
    Ok(())
}

/// Hands a window to the caller's sink, or keeps it in `out`.
fn hand_over(ctx: &mut PollCtx<'_>, out: &mut Vec<Intervals>, window: Intervals) -> Result<(), DlmsError> {
    match ctx.on_window.as_mut() {
        Some(sink) => sink(window).map_err(|e| {
            warn!(meter = %ctx.meter, "load profile window not handed to the store: {e}");
            // Fatal for the poll: nothing more can be stored.
            DlmsError::State("the store is closing")
        }),
        None => {
            out.push(window);
            Ok(())
        }
    }
}

/// Units of cumulative registers.
pub fn is_counter_unit(unit: &str) -> bool {
    matches!(unit, "Wh" | "varh" | "VAh" | "m3" | "J" | "Ah")
}

/// Runs a relay or clock command on a DLMS meter in its own association. `Ok` is the operator message.
pub async fn command(plan: &DlmsPlan, ctx: &mut PollCtx<'_>, action: &ami_wire::Action) -> Result<String, String> {
    use ami_wire::Action;
    let mut session = open(plan, ctx).await?;
    let result = match action {
        Action::Control { name, on } => match &plan.profile.disconnect {
            Some(c) if &c.name == name => {
                let r = if *on { session.reconnect().await } else { session.disconnect().await };
                r.map(|()| format!("{name} switched {}", if *on { "on (reconnected)" } else { "off (disconnected)" }))
                    .map_err(|e| format!("{name}: {e}"))
            }
            Some(c) => Err(format!("profile {} has no control {name:?} (controls: {})", plan.profile.id, c.name)),
            None => Err(format!("profile {} has no disconnect control", plan.profile.id)),
        },
        Action::SetClock => {
            let before = session.read_clock().await.ok();
            let now = ctx.now.timestamp();
            match session.set_clock(now).await {
                Ok(()) => {
                    let drift = before.map(|b| format!(" (was {:+} s off)", b - now)).unwrap_or_default();
                    info!(meter = %ctx.meter, "clock set{drift}");
                    Ok(format!("clock set to {}{drift}", ctx.now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
                }
                Err(e) => Err(format!("set clock: {e}")),
            }
        }
        Action::ReadNow => Err("read now is handled by the poll".into()),
    };
    if let Err(e) = session.close().await {
        debug!(meter = %ctx.meter, "release: {e}");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    const PROFILE: &str = r#"<profile id="t" protocol="dlms" manufacturer="m" model="x">
  <dlms client="16" server-logical="1" server-physical="17" authentication="none" framing="hdlc" max-info="256"/>
  <value name="energy_import" obis="1-0:1.8.0" unit="Wh"><dlms class="3"/></value>
  <load-profile name="lp" obis="1-0:99.1.0" period="900"/>
</profile>"#;

    fn meter(extra: &str, media: &str) -> (MeterCfg, Option<MediaUrl>) {
        let text = format!(
            "[site]\nid = \"s\"\n[[bus]]\nid = \"b\"\nmedia = \"{media}\"\n[[meter]]\nid = \"m\"\nbus = \"b\"\nprofile = \"t\"\n{extra}"
        );
        let c = Config::parse(&text, Path::new("/etc/ami/amid.toml")).unwrap();
        (c.meters[0].clone(), Some(c.buses[0].media.clone()))
    }

    fn profile() -> DlmsProfile {
        ami_device::dlms::parse_dlms_profile(PROFILE, "t.xml").unwrap()
    }

    #[test]
    fn the_profile_gives_the_defaults_and_the_site_overrides_them() {
        let (m, media) = meter("", "tcp://h:4059");
        let p = plan(&m, "s", profile(), media.as_ref()).unwrap();
        let Framing::Hdlc { client, server_logical, server_physical, params } = &p.framing else { panic!() };
        assert_eq!((*client, *server_logical, *server_physical, params.max_info_rx), (16, 1, Some(17), 256));
        assert_eq!(p.settings.authentication, Authentication::None);
        assert!(p.settings.ciphering.is_none() && !p.needs_counter());
        assert_eq!(p.backfill, Duration::from_secs(86_400));

        std::env::set_var("AMI_SECRET_M_BLOCK_CIPHER_KEY", "000102030405060708090A0B0C0D0E0F");
        std::env::set_var("AMI_SECRET_M_AUTHENTICATION_KEY", "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF");
        let (m, media) = meter(
            "framing = \"wrapper\"\nclient = 48\nserver_logical = 2\nauthentication = \"high-gmac\"\nprofile_backfill = \"3d\"\n",
            "tcp://h:4059",
        );
        let p = plan(&m, "s", profile(), media.as_ref()).unwrap();
        assert_eq!(p.framing, Framing::Wrapper { client: 48, server: 2 });
        assert_eq!(p.settings.authentication, Authentication::HighGmac);
        // HLS-GMAC without ciphering: the keys sign the challenge only (security control 0).
        let c = p.settings.ciphering.as_ref().unwrap();
        assert_eq!((c.security_control, c.system_title), (0, default_system_title("s")));
        assert!(p.needs_counter());
        assert_eq!(p.backfill, Duration::from_secs(3 * 86_400));
        assert!(!format!("{p:?}").contains("D0D1") && !format!("{p:?}").to_lowercase().contains("d0, d1"));
        std::env::remove_var("AMI_SECRET_M_BLOCK_CIPHER_KEY");
        std::env::remove_var("AMI_SECRET_M_AUTHENTICATION_KEY");
    }

    #[test]
    fn missing_secrets_and_impossible_framings_are_refused_with_the_key_to_set() {
        let (m, media) = meter("authentication = \"low\"\n", "tcp://h:4059");
        let e = plan(&m, "s", profile(), media.as_ref()).unwrap_err();
        assert!(e.contains("password") && e.contains("AMI_SECRET_M_PASSWORD"), "{e}");
        let (m, media) = meter("framing = \"wrapper\"\n", "serial:///dev/ttyUSB0");
        assert!(plan(&m, "s", profile(), media.as_ref()).unwrap_err().contains("tcp://"));
        let (m, media) = meter("optical = true\nframing = \"wrapper\"\n", "tcp://h:1");
        assert!(plan(&m, "s", profile(), media.as_ref()).unwrap_err().contains("optical"));
    }

    #[test]
    fn data_values_become_numbers_or_text() {
        assert_eq!(data_value(&Data::LongUnsigned(5)), Value::Number(5.0));
        assert_eq!(data_value(&Data::VisibleString(b"12345678".to_vec())), Value::Text("12345678".into()));
        assert_eq!(data_value(&Data::OctetString(vec![0x01, 0xFF])), Value::Text("01FF".into()));
        assert_eq!(unit_text(&ScalerUnit { scaler: 0, unit: 14 }).as_deref(), Some("m3"));
        assert_eq!(unit_text(&ScalerUnit { scaler: 0, unit: 9 }).as_deref(), Some("degC"));
    }
}

//! The daemon loop behind `amid run`: one task per bus polling its meters in turn at their aligned slots,
//! buses in parallel, every poll's readings committed to the store by one writer thread.
//!
//! Shutdown (SIGTERM / Ctrl-C): no new poll starts; a poll in flight may finish within the grace period;
//! the writer commits everything it was handed and the process exits 0. A reading that was read is
//! therefore either committed or was never reported as read. A DLMS load profile catch-up stops after the
//! window in flight (each window is committed with its mark as it arrives); the next start goes on from
//! the mark. Mercury meters keep their channel open between polls; at shutdown each bus closes the channels
//! it opened.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::Duration;

use ami_device::{Profile, ValueKind};
use ami_link::backoff::Backoff;
use ami_link::{Bus, BusConfig, BusHandle};
use ami_media::{MediaUrl, Parity, SerialSettings};
use ami_protocols::modbus::Master;
use ami_wire::{Action, Command};
use anyhow::Context;
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch, Notify};

use crate::uplink::{clock_trusted, system_clock, Clock, Uplink};
use tracing::{error, info, warn};

use crate::config::{BusCfg, Config, MeterCfg};
use crate::schedule::{next_slot, retry_at};
use crate::store::{PollStatus, Store, StoredReading};

/// How long a poll in flight may run on after a shutdown request.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// One meter ready to poll: its config and its resolved profile.
#[derive(Debug, Clone)]
pub struct MeterPlan {
    /// From the config.
    pub cfg: MeterCfg,
    /// The profile it names.
    pub profile: Arc<Profile>,
    /// Effective unit address (Modbus unit id or M-Bus primary address).
    pub address: u8,
    /// The M-Bus view of the profile (record selections), for M-Bus meters.
    pub mbus: Option<Arc<ami_device::mbus::MbusProfile>>,
    /// The resolved DLMS settings (profile view, addresses, authentication with secrets), for DLMS meters.
    pub dlms: Option<Arc<crate::dlms::DlmsPlan>>,
    /// The resolved Mercury settings (profile view, address, level, password, timing), for Mercury meters.
    pub mercury: Option<Arc<crate::mercury::MercuryPlan>>,
}

impl MeterPlan {
    /// The master to use for this meter: the meter's configured timeout, else the profile's (slow
    /// models), else the bus default.
    fn master(&self, bus_master: &Master) -> Master {
        let timeout = self.cfg.timeout.or(self.profile.line.timeout_ms.map(Duration::from_millis));
        bus_master.clone().with_timeout(timeout)
    }
}

/// Resolves every meter's profile; errors name the config line and key.
pub fn plan_meters(config: &Config) -> Result<Vec<MeterPlan>, Vec<String>> {
    let mut dirs: Vec<PathBuf> = config.site.profile_dirs.clone();
    dirs.extend(ami_device::default_search_dirs());
    let mut cache: HashMap<String, Arc<Profile>> = HashMap::new();
    let mut errors = Vec::new();
    let mut out = Vec::new();
    for (i, m) in config.meters.iter().enumerate() {
        let profile = match cache.get(&m.profile) {
            Some(p) => p.clone(),
            None => match ami_device::resolve_profile(&m.profile, &dirs) {
                Ok(p) => {
                    let p = Arc::new(p);
                    cache.insert(m.profile.clone(), p.clone());
                    p
                }
                Err(e) => {
                    errors.push(format!("{}:{}: meter[{i}].profile: {e}", config.path.display(), m.line));
                    continue;
                }
            },
        };
        let at = |key: &str| format!("{}:{}: meter[{i}].{key}", config.path.display(), m.line);
        let is_dlms = profile.protocol == ami_device::Protocol::Dlms;
        if !is_dlms && m.dlms.any_set() {
            errors.push(format!(
                "{}: framing, client, server_logical, server_physical, authentication, ciphering, system_title \
                 and optical are for DLMS meters; profile {} speaks {:?}",
                at("profile"),
                profile.id,
                profile.protocol
            ));
            continue;
        }
        if is_dlms {
            if m.address.is_some() || m.secondary.is_some() {
                errors.push(format!(
                    "{}: a DLMS meter is addressed with server_logical and server_physical (and client), not \
                     address or secondary",
                    at(if m.address.is_some() { "address" } else { "secondary" })
                ));
                continue;
            }
            let bus = config.buses.iter().find(|b| b.id == m.bus);
            let media = bus.map(|b| &b.media);
            // `tcp://…?framing=wrapper` on the bus is the default of its DLMS meters.
            let mut m = m.clone();
            if m.dlms.framing.is_none() {
                m.dlms.framing = bus.and_then(|b| b.dlms_framing);
            }
            let m = &m;
            let plan = ami_device::dlms::DlmsProfile::from_profile(&profile)
                .map_err(|e| format!("{}: {e}", at("profile")))
                .and_then(|dp| {
                    crate::dlms::plan(m, &config.site.id, dp, media).map_err(|e| format!("{}: {e}", at("dlms")))
                });
            match plan {
                Ok(p) => {
                    out.push(MeterPlan {
                        cfg: m.clone(),
                        profile,
                        address: 0,
                        mbus: None,
                        dlms: Some(Arc::new(p)),
                        mercury: None,
                    });
                }
                Err(e) => errors.push(e),
            }
            continue;
        }
        let is_mercury = profile.protocol == ami_device::Protocol::Mercury;
        if !is_mercury && m.mercury.any_set() {
            errors.push(format!(
                "{}: level, multiplier and utc_offset are for Mercury meters; profile {} speaks {}",
                at("profile"),
                profile.id,
                profile.protocol
            ));
            continue;
        }
        if is_mercury {
            if m.secondary.is_some() {
                errors.push(format!("{}: only M-Bus meters have a secondary address", at("secondary")));
                continue;
            }
            let bus = config.buses.iter().find(|b| b.id == m.bus);
            let plan = ami_device::mercury::MercuryProfile::from_profile(&profile)
                .map_err(|e| format!("{}: {e}", at("profile")))
                .and_then(|mp| {
                    let (timeout, retries) = bus.map_or((Duration::from_secs(1), 2), |b| (b.timeout, b.retries));
                    crate::mercury::plan(m, &m.mercury, mp, bus.map(|b| &b.media), timeout, retries)
                        .map_err(|e| format!("{}:{}: meter[{i}] ({}): {e}", config.path.display(), m.line, m.id))
                });
            match plan {
                Ok(p) => out.push(MeterPlan {
                    cfg: m.clone(),
                    profile,
                    address: p.meter.address.0,
                    mbus: None,
                    dlms: None,
                    mercury: Some(Arc::new(p)),
                }),
                Err(e) => errors.push(e),
            }
            continue;
        }
        let address = m.address.or(profile.line.address).unwrap_or(1);
        let modbus = profile.protocol == ami_device::Protocol::Modbus;
        if modbus && address > 247 {
            errors.push(format!(
                "{}:{}: meter[{i}].address: {address} (expected 1..=247 for Modbus)",
                config.path.display(),
                m.line
            ));
            continue;
        }
        if modbus && m.secondary.is_some() {
            errors.push(format!(
                "{}:{}: meter[{i}].secondary: only M-Bus meters have a secondary address",
                config.path.display(),
                m.line
            ));
            continue;
        }
        let mbus = if profile.protocol == ami_device::Protocol::Mbus {
            match ami_device::mbus::MbusProfile::from_profile(&profile) {
                Ok(p) => Some(Arc::new(p)),
                Err(e) => {
                    errors.push(format!("{}:{}: meter[{i}].profile: {e}", config.path.display(), m.line));
                    continue;
                }
            }
        } else {
            None
        };
        out.push(MeterPlan { cfg: m.clone(), profile, address, mbus, dlms: None, mercury: None });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// What a store writer is handed.
enum StoreMsg {
    Poll {
        readings: Vec<StoredReading>,
        status: PollStatus,
    },
    /// A load profile window and its new mark, committed together.
    Intervals {
        meter: String,
        intervals: crate::dlms::Intervals,
    },
    Counters(ami_link::BusStats),
    CommandDone {
        id: i64,
        ok: bool,
        message: String,
        at_ms: i64,
    },
}

/// Totals reported at exit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Polls that returned readings.
    pub polls_ok: u64,
    /// Polls that failed.
    pub polls_failed: u64,
    /// Readings committed.
    pub readings_stored: u64,
}

/// The path of the SQLite store inside a data dir.
pub fn store_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("readings.db")
}

/// Runs the daemon until `shutdown` resolves. Returns the totals.
pub async fn run(config: Config, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<RunSummary> {
    run_with_clock(config, shutdown, system_clock()).await
}

/// [`run`] with an injected clock (tests start it in 1970 to show readings are held).
pub async fn run_with_clock(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
    clock: Clock,
) -> anyhow::Result<RunSummary> {
    let meters = plan_meters(&config).map_err(|e| anyhow::anyhow!(crate::BadInput(e.join("\n"))))?;
    std::fs::create_dir_all(&config.site.data_dir)
        .with_context(|| format!("cannot create data_dir {}", config.site.data_dir.display()))?;
    let db = store_path(&config.site.data_dir);
    let mut store = Store::open(&db).with_context(|| format!("cannot open store {}", db.display()))?;
    let interrupted = store.fail_interrupted_commands(clock().timestamp_millis())?;
    if interrupted > 0 {
        warn!(commands = interrupted, "commands interrupted by the last stop are reported failed, not repeated");
    }
    info!(site = %config.site.id, store = %db.display(), buses = config.buses.len(), meters = meters.len(), "amid starting");

    // The writer: one thread owns the connection; it commits each poll in one transaction and ends when
    // every sender is gone, after draining what it was handed.
    let (tx, rx) = std_mpsc::channel::<StoreMsg>();
    let max_size = config.store.max_size;
    let writer = std::thread::spawn(move || -> anyhow::Result<(u64, u64, u64)> {
        let (mut stored, mut ok, mut failed) = (0u64, 0u64, 0u64);
        for msg in rx {
            let (readings, status) = match msg {
                StoreMsg::Poll { readings, status } => (readings, status),
                StoreMsg::Counters(stats) => {
                    if let Err(e) = store.save_counters(&stats, Utc::now()) {
                        warn!(bus = %stats.bus, "cannot save link counters: {e}");
                    }
                    continue;
                }
                StoreMsg::CommandDone { id, ok, message, at_ms } => {
                    store.finish_command(id, ok, &message, at_ms).context("store write failed")?;
                    continue;
                }
                StoreMsg::Intervals { meter, intervals } => {
                    let n = store
                        .insert_intervals(&intervals.readings, &meter, &intervals.profile, intervals.last_ms)
                        .context("store write failed")?;
                    stored += n as u64;
                    tracing::debug!(meter = %meter, profile = %intervals.profile, new = n, "intervals committed");
                    continue;
                }
            };
            if status.error.is_none() {
                ok += 1;
            } else {
                failed += 1;
            }
            let n = store.insert(&readings, Some(&status)).context("store write failed")?;
            stored += n as u64;
            tracing::debug!(meter = %status.meter, values = readings.len(), new = n, "committed");
            if let Err(e) = store.enforce_limit(max_size) {
                warn!("cannot enforce the store size limit: {e}");
            }
        }
        Ok((stored, ok, failed))
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut routes: HashMap<String, mpsc::Sender<Command>> = HashMap::new();
    for bus in &config.buses {
        let on_bus: Vec<MeterPlan> = meters.iter().filter(|m| m.cfg.bus == bus.id).cloned().collect();
        if on_bus.is_empty() {
            warn!(bus = %bus.id, "bus has no meters");
            continue;
        }
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        for m in &on_bus {
            routes.insert(m.cfg.id.clone(), cmd_tx.clone());
        }
        let ctx =
            BusCtx { tx: tx.clone(), stop: stop_rx.clone(), commands: cmd_rx, clock: clock.clone(), db: db.clone() };
        tasks.push(tokio::spawn(bus_loop(bus.clone(), on_bus, ctx)));
    }

    let notify = Arc::new(Notify::new());
    let mut uplink_task = None;
    if let Some(up) = &config.uplink {
        let uplink = Arc::new(Uplink {
            cfg: up.clone(),
            site: config.site.id.clone(),
            db: db.clone(),
            meter_bus: meters.iter().map(|m| (m.cfg.id.clone(), m.cfg.bus.clone())).collect(),
            clock: clock.clone(),
            commands: notify.clone(),
        });
        uplink_task = Some(tokio::spawn(uplink.run(stop_rx.clone())));
    } else {
        info!("no [uplink] configured: readings stay in the site store");
    }
    let dispatcher =
        tokio::spawn(dispatch_commands(db.clone(), routes, notify, tx.clone(), clock.clone(), stop_rx.clone()));
    drop(tx);

    shutdown.await;
    info!("shutdown requested: finishing polls in flight and committing");
    let _ = stop_tx.send(true);
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    let _ = tokio::time::timeout_at(deadline, dispatcher).await;
    for t in tasks {
        match tokio::time::timeout_at(deadline, t).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error!("bus task failed: {e}"),
            Err(_) => warn!("a poll did not finish within the shutdown grace period; it was abandoned"),
        }
    }
    if let Some(t) = uplink_task {
        // A batch in flight is either acknowledged and marked, or sent again after the restart.
        let _ = tokio::time::timeout_at(deadline, t).await;
    }
    let (stored, ok, failed) = tokio::task::spawn_blocking(move || writer.join())
        .await
        .context("writer join")?
        .map_err(|_| anyhow::anyhow!("store writer panicked"))??;
    let summary = RunSummary { polls_ok: ok, polls_failed: failed, readings_stored: stored };
    info!(polls_ok = ok, polls_failed = failed, readings_stored = stored, "amid stopped; store committed");
    Ok(summary)
}

/// Hands received commands to the bus of their meter, claiming each one first so it runs at most once.
async fn dispatch_commands(
    db: PathBuf,
    routes: HashMap<String, mpsc::Sender<Command>>,
    notify: Arc<Notify>,
    tx: std_mpsc::Sender<StoreMsg>,
    clock: Clock,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let db2 = db.clone();
        let claimed = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Command>> {
            let mut store = Store::open(&db2)?;
            let mut out = Vec::new();
            for c in store.runnable_commands()? {
                if store.claim_command(c.id)? {
                    out.push(c);
                }
            }
            Ok(out)
        })
        .await
        .unwrap_or_else(|e| Err(anyhow::anyhow!("{e}")));
        match claimed {
            Ok(commands) => {
                for c in commands {
                    info!(id = c.id, meter = %c.meter, action = ?c.action, "running command");
                    let refused = match routes.get(&c.meter) {
                        None => Some(format!("unknown meter {:?} at this site", c.meter)),
                        Some(route) => route.send(c.clone()).await.err().map(|_| "the meter's bus is stopping".into()),
                    };
                    if let Some(message) = refused {
                        warn!(id = c.id, "command failed: {message}");
                        let at_ms = clock().timestamp_millis();
                        let _ = tx.send(StoreMsg::CommandDone { id: c.id, ok: false, message, at_ms });
                    }
                }
            }
            Err(e) => warn!("cannot read commands from the store: {e:#}"),
        }
        tokio::select! {
            () = notify.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(30)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// What a bus task is handed besides its meters.
struct BusCtx {
    tx: std_mpsc::Sender<StoreMsg>,
    stop: watch::Receiver<bool>,
    commands: mpsc::Receiver<Command>,
    clock: Clock,
    /// The site store (DLMS invocation counters and profile marks).
    db: PathBuf,
}

struct MeterRun {
    plan: MeterPlan,
    next: DateTime<Utc>,
    backoff: Backoff,
    failures: u32,
    dlms: Option<DlmsRun>,
    mercury: Option<crate::mercury::MercuryRun>,
}

/// A DLMS meter's state in its bus task: its invocation counter and the last stored interval per load
/// profile (loaded from the store at start, then advanced as windows are handed to the writer).
struct DlmsRun {
    counter: Result<Arc<dyn ami_protocols::dlms::client::InvocationCounter>, String>,
    marks: HashMap<String, i64>,
    /// Whether the meter's clock drift was reported (once until it is back within bounds).
    drift_reported: bool,
}

/// A meter clock further than this from a trusted site clock is reported (once) to the operator.
const CLOCK_DRIFT_WARN_S: i64 = 300;

impl DlmsRun {
    fn open(db: &std::path::Path, plan: &MeterPlan, dlms: &crate::dlms::DlmsPlan) -> DlmsRun {
        let counter = crate::dlms::counter(db, &plan.cfg.id, dlms);
        let mut marks = HashMap::new();
        match Store::open(db) {
            Ok(store) => {
                for lp in &dlms.profile.load_profiles {
                    let key = lp.obis.to_string();
                    match store.profile_mark(&plan.cfg.id, &key) {
                        Ok(Some(ms)) => {
                            marks.insert(key, ms);
                        }
                        Ok(None) => {}
                        Err(e) => warn!(meter = %plan.cfg.id, "cannot read the load profile mark: {e}"),
                    }
                }
            }
            Err(e) => warn!(meter = %plan.cfg.id, "cannot read the load profile marks: {e}"),
        }
        DlmsRun { counter, marks, drift_reported: false }
    }
}

/// The media a bus opens: a serial URL that names no line settings takes them from the profiles of the
/// meters on that line (a profile's `<line>` gives the model's factory settings), when they agree.
pub fn effective_media(cfg: &BusCfg, meters: &[MeterPlan]) -> MediaUrl {
    let MediaUrl::Serial { path, settings, explicit: false } = &cfg.media else { return cfg.media.clone() };
    let mut s = *settings;
    let mut chosen: Option<SerialSettings> = None;
    for m in meters {
        let line = &m.profile.line;
        let mut want = SerialSettings::default();
        want.baud = line.baud.unwrap_or(want.baud);
        want.data_bits = line.data_bits.unwrap_or(want.data_bits);
        want.stop_bits = line.stop_bits.unwrap_or(want.stop_bits);
        want.parity = match line.parity.as_deref() {
            Some("even") => Parity::Even,
            Some("odd") => Parity::Odd,
            _ => Parity::None,
        };
        match chosen {
            None => chosen = Some(want),
            Some(c) if c == want => {}
            Some(c) => {
                warn!(bus = %cfg.id, "meters on this line have different factory line settings ({c} vs {want}); \
                      using {settings}: set baud/parity in the media URL");
                return cfg.media.clone();
            }
        }
    }
    if let Some(c) = chosen {
        s = c;
    }
    MediaUrl::Serial { path: path.clone(), settings: s, explicit: false }
}

/// Opens a bus's transport, retrying with back-off until it opens or shutdown is requested.
async fn open_bus(cfg: &BusCfg, media: &MediaUrl, stop: &mut watch::Receiver<bool>) -> Option<BusHandle> {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        match ami_media::open(media).await {
            Ok(t) => {
                info!(bus = %cfg.id, media = %t.describe(), "bus open");
                let bc = BusConfig {
                    id: cfg.id.clone(),
                    guard_time: cfg.guard_time,
                    timeout: cfg.timeout,
                    retries: cfg.retries,
                    ..BusConfig::default()
                };
                return Some(Bus::spawn(t, bc));
            }
            Err(e) => {
                let wait = backoff.next().unwrap_or(Duration::from_secs(60));
                warn!(bus = %cfg.id, "cannot open bus: {e}; retrying in {wait:?}");
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => return None,
                }
            }
        }
    }
}

async fn bus_loop(cfg: BusCfg, meters: Vec<MeterPlan>, ctx: BusCtx) {
    let BusCtx { tx, mut stop, mut commands, clock, db } = ctx;
    let media = effective_media(&cfg, &meters);
    // A Mercury meter may need more silence between exchanges than the bus is configured for.
    let guard_time = crate::mercury::bus_guard_time(cfg.guard_time, meters.iter().filter_map(|m| m.mercury.as_deref()));
    let cfg = BusCfg { guard_time, ..cfg };
    let Some(bus) = open_bus(&cfg, &media, &mut stop).await else { return };
    let master = Master::new(bus.clone(), cfg.framing);
    let bus_timeout = cfg.timeout;
    let bus_retries = cfg.retries;
    let now = clock();
    let mut runs: Vec<MeterRun> = meters
        .into_iter()
        .map(|plan| MeterRun {
            next: next_slot(now, plan.cfg.interval),
            backoff: Backoff::new(Duration::from_secs(2), plan.cfg.interval.max(Duration::from_secs(2))),
            failures: 0,
            dlms: plan.dlms.as_deref().map(|d| DlmsRun::open(&db, &plan, d)),
            mercury: plan.mercury.as_deref().map(|p| crate::mercury::MercuryRun::open(&db, p, bus.clone())),
            plan,
        })
        .collect();
    'poll: loop {
        let Some(due) = runs.iter().map(|r| r.next).min() else { return };
        let wait = (due - clock()).to_std().unwrap_or_default();
        let keep_alive = runs.iter().filter_map(|r| r.mercury.as_ref()?.keep_alive_due()).min();
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = sleep_until_some(keep_alive) => {
                // Mercury channels idle since their last poll: a test frame before the meter closes them.
                for run in &mut runs {
                    let due = run.mercury.as_ref().and_then(crate::mercury::MercuryRun::keep_alive_due);
                    if let (Some(state), Some(due)) = (run.mercury.as_mut(), due) {
                        if due <= tokio::time::Instant::now() {
                            state.keep_alive(&run.plan.cfg.id).await;
                        }
                    }
                }
                continue;
            }
            Some(cmd) = commands.recv() => {
                let done = run_command(&mut runs, (&master, &bus, bus_timeout, bus_retries), &cmd, (&tx, &stop), &clock).await;
                let (ok, message) = match done { Ok(m) => (true, m), Err(m) => (false, m) };
                if ok { info!(id = cmd.id, "command done: {message}") } else { warn!(id = cmd.id, "command failed: {message}") }
                let _ = tx.send(StoreMsg::CommandDone { id: cmd.id, ok, message, at_ms: clock().timestamp_millis() });
                continue;
            }
            _ = stop.changed() => break 'poll,
        }
        // Meters on one bus in turn, earliest due first.
        let now = clock();
        let mut order: Vec<usize> = (0..runs.len()).filter(|&i| runs[i].next <= now).collect();
        order.sort_by_key(|&i| runs[i].next);
        for i in order {
            if *stop.borrow() {
                break 'poll;
            }
            let run = &mut runs[i];
            let m = &run.plan;
            let outcome = match (&m.mbus, &m.dlms, &mut run.dlms) {
                _ if m.mercury.is_some() && run.mercury.is_some() => {
                    let (Some(plan), Some(state)) = (&m.mercury, run.mercury.as_mut()) else { continue };
                    poll_mercury(m, plan, state, (&tx, &stop), &clock).await
                }
                (_, Some(plan), Some(state)) => {
                    poll_dlms(m, plan, state, &bus, (bus_timeout, bus_retries), (&tx, &stop), &clock).await
                }
                (Some(mp), _, _) => poll_mbus(m, mp, &bus, bus_timeout, bus_retries, &clock).await,
                _ => poll_meter(m, &master, &clock).await,
            };
            let ended = clock();
            let status = PollStatus { meter: m.cfg.id.clone(), at: ended, error: outcome.as_ref().err().cloned() };
            match &outcome {
                Ok(readings) => {
                    info!(meter = %m.cfg.id, bus = %cfg.id, values = readings.len(), "read");
                    if run.failures > 0 {
                        info!(meter = %m.cfg.id, after = run.failures, "meter answers again");
                    }
                    run.failures = 0;
                    run.backoff.reset();
                    run.next = next_slot(ended, m.cfg.interval);
                }
                Err(e) => {
                    run.failures += 1;
                    let wait = run.backoff.next().unwrap_or(m.cfg.interval);
                    run.next = retry_at(ended, wait, m.cfg.interval);
                    warn!(meter = %m.cfg.id, bus = %cfg.id, failures = run.failures, retry = %run.next.to_rfc3339(), "poll failed: {e}");
                }
            }
            let readings = outcome.unwrap_or_default();
            if tx.send(StoreMsg::Poll { readings, status }).is_err() {
                error!("store writer is gone; stopping bus {}", cfg.id);
                return;
            }
        }
        let _ = tx.send(StoreMsg::Counters(bus.stats()));
    }
    // Shutdown: close the Mercury channels this bus opened (best effort, bounded).
    for run in &mut runs {
        if let Some(state) = run.mercury.as_mut() {
            let _ = tokio::time::timeout(Duration::from_secs(2), crate::mercury::close(&mut state.client)).await;
        }
    }
    let _ = tx.send(StoreMsg::Counters(bus.stats()));
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Polls a Mercury meter: the power-profile windows go to the writer as they are read (each with its
/// mark), the values are returned like any poll's.
async fn poll_mercury(
    m: &MeterPlan,
    plan: &crate::mercury::MercuryPlan,
    state: &mut crate::mercury::MercuryRun,
    (tx, stop): (&std_mpsc::Sender<StoreMsg>, &watch::Receiver<bool>),
    clock: &Clock,
) -> Result<Vec<StoredReading>, String> {
    let mut intervals = 0usize;
    let sender = tx.clone();
    let meter_id = m.cfg.id.clone();
    let mut sink = |window: crate::dlms::Intervals| -> Result<(), String> {
        intervals += window.readings.len();
        sender
            .send(StoreMsg::Intervals { meter: meter_id.clone(), intervals: window })
            .map_err(|_| "the store is closing".to_string())
    };
    let crate::mercury::MercuryRun { client, marks, constant, drift_reported, .. } = state;
    let poll = {
        let mut ctx = crate::mercury::PollCtx {
            meter: &m.cfg.id,
            marks,
            constant,
            now: clock(),
            on_window: Some(&mut sink),
            stop: Some(stop),
        };
        crate::mercury::poll(plan, client, &mut ctx).await
    };
    if intervals > 0 {
        info!(meter = %m.cfg.id, values = intervals, "power profile read");
    }
    let poll = poll?;
    if let Some(drift) = poll.clock_drift_s.filter(|_| clock_trusted(clock())) {
        if drift.abs() > CLOCK_DRIFT_WARN_S && !*drift_reported {
            warn!(meter = %m.cfg.id, drift_s = drift, "the meter's clock is off; power profile timestamps are the meter's");
            *drift_reported = true;
        } else if drift.abs() <= CLOCK_DRIFT_WARN_S {
            *drift_reported = false;
        }
    }
    if let Some(first) = poll.errors.first() {
        warn!(meter = %m.cfg.id, missing = poll.errors.len(), "values not read, first: {first}");
    }
    let mut readings = poll.readings;
    if !clock_trusted(clock()) {
        for r in &mut readings {
            r.reading.quality.clock_untrusted = true;
        }
    }
    Ok(readings)
}

/// Polls a DLMS meter: the load profile windows go to the writer as they are read (each with its mark),
/// the register values are returned like any poll's.
async fn poll_dlms(
    m: &MeterPlan,
    plan: &crate::dlms::DlmsPlan,
    state: &mut DlmsRun,
    bus: &BusHandle,
    (bus_timeout, retries): (Duration, u32),
    (tx, stop): (&std_mpsc::Sender<StoreMsg>, &watch::Receiver<bool>),
    clock: &Clock,
) -> Result<Vec<StoredReading>, String> {
    let counter = state.counter.clone()?;
    let timeout = m.cfg.timeout.or(m.profile.line.timeout_ms.map(Duration::from_millis)).unwrap_or(bus_timeout);
    // Each load profile window goes to the writer as soon as it is read: a long catch-up is committed
    // (with its mark) window by window, so a stop or a crash in the middle loses no finished window.
    let mut intervals = 0usize;
    let sender = tx.clone();
    let meter_id = m.cfg.id.clone();
    let mut sink = |window: crate::dlms::Intervals| -> Result<(), String> {
        intervals += window.readings.len();
        sender
            .send(StoreMsg::Intervals { meter: meter_id.clone(), intervals: window })
            .map_err(|_| "the store is closing".to_string())
    };
    let mut ctx = crate::dlms::PollCtx {
        bus,
        meter: &m.cfg.id,
        counter,
        timeout,
        retries,
        marks: &mut state.marks,
        now: clock(),
        on_window: Some(&mut sink),
        stop: Some(stop),
    };
    let poll = crate::dlms::poll(plan, &mut ctx).await;
    drop(ctx);
    if intervals > 0 {
        info!(meter = %m.cfg.id, values = intervals, "load profile read");
    }
    let poll = poll?;
    if let Some(drift) = poll.clock_drift_s.filter(|_| clock_trusted(clock())) {
        if drift.abs() > CLOCK_DRIFT_WARN_S && !state.drift_reported {
            warn!(meter = %m.cfg.id, drift_s = drift, "the meter's clock is off; load profile timestamps are the meter's (a set_clock command corrects it)");
            state.drift_reported = true;
        } else if drift.abs() <= CLOCK_DRIFT_WARN_S {
            state.drift_reported = false;
        }
    }
    if let Some(first) = poll.errors.first() {
        warn!(meter = %m.cfg.id, missing = poll.errors.len(), "values not read, first: {first}");
    }
    let mut readings = poll.readings;
    if !clock_trusted(clock()) {
        for r in &mut readings {
            r.reading.quality.clock_untrusted = true;
        }
    }
    Ok(readings)
}

/// Runs one command on this bus; `Ok` carries the message for the operator.
async fn run_command(
    runs: &mut [MeterRun],
    (master, bus, bus_timeout, bus_retries): (&Master, &BusHandle, Duration, u32),
    cmd: &Command,
    (tx, stop): (&std_mpsc::Sender<StoreMsg>, &watch::Receiver<bool>),
    clock: &Clock,
) -> Result<String, String> {
    let Some(run) = runs.iter_mut().find(|r| r.plan.cfg.id == cmd.meter) else {
        return Err(format!("meter {:?} is not on this bus", cmd.meter));
    };
    if let (Some(plan), Some(state)) = (run.plan.mercury.clone(), run.mercury.as_mut()) {
        let m = &run.plan;
        return match &cmd.action {
            Action::ReadNow => {
                let readings = poll_mercury(m, &plan, state, (tx, stop), clock).await?;
                let n = readings.len();
                let status = PollStatus { meter: m.cfg.id.clone(), at: clock(), error: None };
                tx.send(StoreMsg::Poll { readings, status }).map_err(|_| "the store is closing".to_string())?;
                Ok(format!("read {n} values"))
            }
            Action::Control { name, .. } => {
                Err(format!("{name}: ami does not switch Mercury load relays ({} has no controls)", m.profile.id))
            }
            Action::SetClock => Err(format!(
                "set clock is not supported for Mercury meters yet ({}: the meter allows one correction a day at \
                 level 2)",
                m.profile.id
            )),
        };
    }
    if let (Some(plan), Some(state)) = (run.plan.dlms.clone(), run.dlms.as_mut()) {
        let m = &run.plan;
        if cmd.action == Action::ReadNow {
            let readings = poll_dlms(m, &plan, state, bus, (bus_timeout, bus_retries), (tx, stop), clock).await?;
            let n = readings.len();
            let status = PollStatus { meter: m.cfg.id.clone(), at: clock(), error: None };
            tx.send(StoreMsg::Poll { readings, status }).map_err(|_| "the store is closing".to_string())?;
            return Ok(format!("read {n} values"));
        }
        if cmd.action == Action::SetClock && !clock_trusted(clock()) {
            return Err("the site clock is not trustworthy yet; the meter's clock was left alone".into());
        }
        let counter = state.counter.clone()?;
        let mut ctx = crate::dlms::PollCtx {
            bus,
            meter: &m.cfg.id,
            counter,
            timeout: m.cfg.timeout.or(m.profile.line.timeout_ms.map(Duration::from_millis)).unwrap_or(bus_timeout),
            retries: bus_retries,
            marks: &mut state.marks,
            now: clock(),
            on_window: None,
            stop: None,
        };
        return crate::dlms::command(&plan, &mut ctx, &cmd.action).await;
    }
    let m = &run.plan;
    match &cmd.action {
        Action::ReadNow => {
            let readings = poll_meter(m, master, clock).await?;
            let n = readings.len();
            let status = PollStatus { meter: m.cfg.id.clone(), at: clock(), error: None };
            tx.send(StoreMsg::Poll { readings, status }).map_err(|_| "the store is closing".to_string())?;
            Ok(format!("read {n} values"))
        }
        Action::Control { name, on } => {
            ami_device::modbus::write_control(&m.profile, &m.master(master), &m.cfg.id, m.address, name, *on)
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!("{name} switched {}", if *on { "on" } else { "off" }))
        }
        Action::SetClock => Err(format!(
            "set clock is not supported by {} ({} meters over Modbus have no settable clock in their profile)",
            m.profile.id, m.profile.model
        )),
    }
}

/// The M-Bus target of a meter: its secondary address when configured, else its primary address.
pub fn mbus_target(address: u8, secondary: Option<&str>) -> Result<ami_protocols::mbus::client::Target, String> {
    use ami_protocols::mbus::client::{SecondaryMask, Target};
    Ok(match secondary {
        Some(id) => Target::Secondary(
            SecondaryMask::from_digits(id).ok_or_else(|| format!("secondary address {id:?} is not 8 digits"))?,
        ),
        None => Target::Primary(address),
    })
}

/// Reads an M-Bus meter completely (all telegrams) and maps the records to readings with its profile;
/// `Err` when the meter did not answer.
pub async fn read_mbus_meter(
    mbus: &ami_device::mbus::MbusProfile,
    bus: &BusHandle,
    meter: &str,
    target: ami_protocols::mbus::client::Target,
    config: ami_protocols::mbus::client::ReadOutConfig,
    now: DateTime<Utc>,
) -> Result<(Vec<ami_device::Reading>, Vec<String>), String> {
    let report = ami_protocols::mbus::client::read_out(bus, meter, target, config).await.map_err(|e| e.to_string())?;
    let mut telegrams = Vec::new();
    for frame in &report.telegrams {
        let bytes = frame.encode().map_err(|e| e.to_string())?;
        telegrams.push(
            ami_protocols::mbus::app::decode_long_frame(&bytes).map_err(|e| format!("undecodable telegram: {e}"))?,
        );
    }
    let (readings, errors) = ami_device::mbus::readings_from_mbus(mbus, meter, &telegrams, now);
    Ok((readings, errors.iter().map(ToString::to_string).collect()))
}

async fn poll_mbus(
    m: &MeterPlan,
    mp: &ami_device::mbus::MbusProfile,
    bus: &BusHandle,
    bus_timeout: Duration,
    retries: u32,
    clock: &Clock,
) -> Result<Vec<StoredReading>, String> {
    let timeout = m.cfg.timeout.or(m.profile.line.timeout_ms.map(Duration::from_millis)).unwrap_or(bus_timeout);
    let target = mbus_target(m.address, m.cfg.secondary.as_deref())?;
    let config = ami_protocols::mbus::client::ReadOutConfig { timeout, retries, ..Default::default() };
    let (mut readings, errors) = read_mbus_meter(mp, bus, &m.cfg.id, target, config, clock()).await?;
    if let Some(first) = errors.first() {
        warn!(meter = %m.cfg.id, missing = errors.len(), "values not read, first: {first}");
    }
    let trusted = clock_trusted(clock());
    Ok(readings
        .drain(..)
        .map(|mut r| {
            r.quality.clock_untrusted |= !trusted;
            let kind = mp.kind(&r.name, &r.unit);
            StoredReading { reading: r, kind }
        })
        .collect())
}

/// Reads every value of one meter; `Err` when the meter did not answer at all. Readings taken while the
/// site clock is not trustworthy are flagged `clock_untrusted`.
async fn poll_meter(m: &MeterPlan, master: &Master, clock: &Clock) -> Result<Vec<StoredReading>, String> {
    let master = m.master(master);
    let mut outcome = ami_device::modbus::read_modbus(&m.profile, &master, &m.cfg.id, m.address, || clock())
        .await
        .map_err(|e| e.to_string())?;
    if !clock_trusted(clock()) {
        for r in &mut outcome.readings {
            r.quality.clock_untrusted = true;
        }
    }
    if let Some(first) = outcome.errors.first() {
        warn!(meter = %m.cfg.id, missing = outcome.errors.len(), "values not read, first: {first}");
    }
    let kinds: HashMap<&str, ValueKind> = m.profile.values.iter().map(|v| (v.name.as_str(), v.kind)).collect();
    Ok(outcome
        .readings
        .into_iter()
        .map(|r| {
            let kind = kinds.get(r.name.as_str()).copied().unwrap_or(ValueKind::Instantaneous);
            StoredReading { reading: r, kind }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn plan_for(media: &str, profiles: &[&str]) -> (BusCfg, Vec<MeterPlan>) {
        let mut text = format!("[site]\nid = \"s\"\n[[bus]]\nid = \"b\"\nmedia = \"{media}\"\n");
        for (i, p) in profiles.iter().enumerate() {
            text.push_str(&format!("[[meter]]\nid = \"m{i}\"\nbus = \"b\"\nprofile = \"{p}\"\n"));
        }
        let cfg = Config::parse(&text, Path::new("/tmp/amid.toml")).unwrap();
        let meters = plan_meters(&cfg).unwrap();
        (cfg.buses[0].clone(), meters)
    }

    #[test]
    fn serial_line_takes_the_profiles_factory_settings_unless_the_url_names_them() {
        // SDM120 ships at 2400 baud.
        let (bus, meters) = plan_for("serial:///dev/ttyUSB0", &["eastron-sdm120"]);
        assert_eq!(effective_media(&bus, &meters).serial_settings().unwrap().baud, 2400);
        let (bus, meters) = plan_for("serial:///dev/ttyUSB0?baud=19200", &["eastron-sdm120"]);
        assert_eq!(effective_media(&bus, &meters).serial_settings().unwrap().baud, 19200);
        // SDM120 (2400) and SDM630 (9600) disagree: the URL's defaults stay.
        let (bus, meters) = plan_for("serial:///dev/ttyUSB0", &["eastron-sdm120", "eastron-sdm630"]);
        assert_eq!(effective_media(&bus, &meters).serial_settings().unwrap().baud, 9600);
    }
}

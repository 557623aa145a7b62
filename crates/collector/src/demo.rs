//! `amid simulate` and `amid demo`: simulated meters on loopback, and the whole daemon against them.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use ami_media::MediaUrl;
use ami_sim::{SimFraming, SimMeter, SimOptions, Simulator};
use anyhow::{anyhow, Context};
use clap::Args;
use tracing::info;

use crate::cli::{load_profile, SimulateArgs};
use crate::config::{parse_duration, Config};
use crate::BadInput;

/// `amid demo` arguments.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Stop by itself after this long (e.g. 30s); default: run until Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Poll interval of the simulated meters.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub interval: Duration,
    /// Keep the stores and the generated amid.toml in this directory (default: a temporary directory,
    /// removed at exit).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Where the embedded ami-central listens (the dashboard). Default: a free port on 127.0.0.1.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub central_listen: std::net::SocketAddr,
}

/// The simulated M-Bus meter for an M-Bus profile: records built from the profile's `dif-vif` selections
/// (counters grow, instantaneous values vary, static values stay), or, for a profile without them (the
/// generic one), a ready-made heat, water or electricity meter chosen by the profile's OBIS medium group.
pub fn mbus_spec(profile: &ami_device::mbus::MbusProfile, primary: u8, id: u32) -> ami_sim::mbus::MbusMeterSpec {
    use ami_device::ValueKind;
    use ami_sim::mbus::{MbusMeterSpec, RecordSpec};
    let group = profile.values.first().map_or(6, |v| v.obis.0[0]);
    let mut spec = match group {
        1 => MbusMeterSpec::electricity_meter(primary, id),
        7..=9 => MbusMeterSpec::water_meter(primary, id),
        _ => MbusMeterSpec::heat_meter(primary, id),
    };
    let records: Vec<RecordSpec> = profile
        .values
        .iter()
        .filter_map(|v| {
            let dv = v.select.dif_vif.clone()?;
            // Dates and times (VIF 6C / 6D) are not simulated: they would need calendar encodings.
            if is_date_vif(&dv) {
                return None;
            }
            // Values are raw data-field numbers, before the VIF's exponent.
            Some(match v.kind {
                ValueKind::Counter => RecordSpec::counter(dv, 10_000.0, 25.0),
                ValueKind::Instantaneous => RecordSpec::around(dv, 500.0, 50.0),
                ValueKind::Static => RecordSpec::fixed(dv, f64::from(id % 100_000_000)),
            })
        })
        .collect();
    if !records.is_empty() {
        spec.records = records;
    }
    spec
}

/// Whether a record header's primary VIF (after the DIF and its DIFEs) is a date (6C) or date-time (6D).
pub fn is_date_vif(dif_vif: &[u8]) -> bool {
    let mut i = 0;
    while dif_vif.get(i).is_some_and(|b| b & 0x80 != 0) {
        i += 1;
    }
    dif_vif.get(i + 1).is_some_and(|v| matches!(v & 0x7F, 0x6C | 0x6D))
}

/// `amid simulate` for an M-Bus profile: one line with a meter per address.
async fn simulate_mbus(
    args: &SimulateArgs,
    profile: &ami_device::Profile,
    url: &MediaUrl,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<ExitCode> {
    use ami_sim::mbus::{MbusFaults, MbusLine};
    let mp = ami_device::mbus::MbusProfile::from_profile(profile).map_err(|e| anyhow!(BadInput(e.to_string())))?;
    let addresses =
        if args.addresses.is_empty() { vec![profile.line.address.unwrap_or(1)] } else { args.addresses.clone() };
    let mut line = MbusLine::new();
    let mut ids = Vec::new();
    for &a in &addresses {
        if a == 0 || a > 250 {
            return Err(anyhow!(BadInput(format!("--address {a}: expected 1..=250"))));
        }
        let id = 10_000_000 + u32::from(a) * 1_001;
        ids.push(format!("{a}={id}"));
        let mut spec = mbus_spec(&mp, a, id);
        spec.telegrams = args.telegrams.max(1);
        line.add(spec).map_err(|e| anyhow!(BadInput(format!("{e}"))))?;
    }
    let faults = MbusFaults {
        drop_every_nth: args.drop_every,
        delay: args.delay.unwrap_or_default(),
        corrupt_rate: args.corrupt_rate,
        seed: args.seed.unwrap_or(1),
    };
    let shared = std::sync::Arc::new(std::sync::Mutex::new(line));
    let serve = async {
        match url {
            MediaUrl::Tcp { host, port, .. } => {
                let listener = tokio::net::TcpListener::bind((host.as_str(), *port))
                    .await
                    .with_context(|| format!("cannot listen on {url}"))?;
                let local = listener.local_addr()?;
                println!("simulating {} (M-Bus) at tcp://{local}, address=id {}", profile.id, ids.join(", "));
                ami_sim::mbus::serve_mbus_tcp(listener, shared, faults).await.context("simulator stopped")
            }
            MediaUrl::Serial { .. } => {
                println!("simulating {} (M-Bus) at {url}, address=id {}", profile.id, ids.join(", "));
                ami_sim::mbus::serve_mbus(url, shared, faults)
                    .await
                    .with_context(|| format!("simulator on {url} stopped"))
            }
        }
    };
    tokio::select! {
        r = serve => r?,
        () = shutdown => info!("simulator stopped"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `amid simulate`: serves one profile at one or more unit addresses until shutdown.
pub async fn simulate(args: SimulateArgs, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<ExitCode> {
    let profile = load_profile(&args.profile)?;
    if profile.protocol == ami_device::Protocol::Dlms {
        return crate::dlms_cli::simulate(&args, &profile, shutdown).await;
    }
    if profile.protocol == ami_device::Protocol::Mercury {
        return crate::mercury::simulate(&args, &profile, shutdown).await;
    }
    if args.channel_timeout.is_some() || !args.modbus.is_empty() {
        return Err(anyhow!(BadInput("--channel-timeout and --modbus are for Mercury simulators".into())));
    }
    let url: MediaUrl = args.listen.parse().map_err(|e: ami_media::UrlError| anyhow!(BadInput(e.to_string())))?;
    for (name, rate) in [("--drop-rate", args.drop_rate), ("--corrupt-rate", args.corrupt_rate)] {
        if !(0.0..=1.0).contains(&rate) {
            return Err(anyhow!(BadInput(format!("{name} {rate} must be between 0 and 1"))));
        }
    }
    if profile.protocol == ami_device::Protocol::Mbus {
        if !args.set.is_empty() || args.drop_rate > 0.0 {
            return Err(anyhow!(BadInput(
                "--set and --drop-rate are not supported for M-Bus simulators yet (use --drop-every)".into()
            )));
        }
        return simulate_mbus(&args, &profile, &url, shutdown).await;
    }
    let framing = match &url {
        MediaUrl::Tcp { framing: Some(f), .. } if f == "rtu" => SimFraming::Rtu,
        MediaUrl::Tcp { .. } => SimFraming::Tcp,
        MediaUrl::Serial { .. } => SimFraming::Rtu,
    };
    let addresses =
        if args.addresses.is_empty() { vec![profile.line.address.unwrap_or(1)] } else { args.addresses.clone() };
    let sim = Simulator::new();
    for &a in &addresses {
        if a == 0 || a > 247 {
            return Err(anyhow!(BadInput(format!("--address {a}: expected 1..=247"))));
        }
        sim.insert(a, SimMeter::new(&profile, args.seed.unwrap_or(1).wrapping_add(u64::from(a))));
    }
    for set in &args.set {
        let (name, value) = set
            .split_once('=')
            .and_then(|(n, v)| Some((n, v.parse::<f64>().ok()?)))
            .ok_or_else(|| anyhow!(BadInput(format!("--set {set:?}: expected NAME=NUMBER"))))?;
        for &a in &addresses {
            sim.set_value(a, name, value).map_err(|e| anyhow!(BadInput(format!("--set {set:?}: {e}"))))?;
        }
    }
    let opts = SimOptions {
        framing,
        units: addresses.clone(),
        delay: args.delay.unwrap_or_default(),
        drop_rate: args.drop_rate,
        corrupt_rate: args.corrupt_rate,
        seed: args.seed.unwrap_or(1),
    };
    let units: Vec<String> = addresses.iter().map(u8::to_string).collect();
    let serve = async {
        match &url {
            MediaUrl::Tcp { host, port, framing } => {
                let listener = tokio::net::TcpListener::bind((host.as_str(), *port))
                    .await
                    .with_context(|| format!("cannot listen on {url}"))?;
                let local = listener.local_addr()?;
                let shown =
                    MediaUrl::Tcp { host: local.ip().to_string(), port: local.port(), framing: framing.clone() };
                println!("simulating {} ({}) at {shown}, address {}", profile.id, profile.model, units.join(","));
                ami_sim::serve_tcp(listener, sim, opts).await.context("simulator stopped")
            }
            MediaUrl::Serial { .. } => {
                println!("simulating {} ({}) at {url}, address {}", profile.id, profile.model, units.join(","));
                ami_sim::serve(&url, sim, opts).await.with_context(|| format!("simulator on {url} stopped"))
            }
        }
    };
    tokio::select! {
        r = serve => r?,
        () = shutdown => info!("simulator stopped"),
    }
    Ok(ExitCode::SUCCESS)
}

/// A simulated line for the demo: profiles at addresses, served with one framing.
struct DemoBus {
    id: &'static str,
    framing: SimFraming,
    meters: &'static [(&'static str, &'static str, u8)],
}

const DEMO_BUSES: &[DemoBus] = &[
    DemoBus {
        id: "modbus-tcp",
        framing: SimFraming::Tcp,
        meters: &[
            ("incomer", "eastron-sdm630", 1),
            ("hvac", "carlo-gavazzi-em24", 2),
            ("feeder", "waveshare-relay-8", 3),
        ],
    },
    DemoBus {
        id: "rs485-gateway",
        framing: SimFraming::Rtu,
        meters: &[("pv", "eastron-sdm120", 1), ("workshop", "abb-b23", 2)],
    },
];

/// `amid demo`: simulated meters on loopback, the daemon polling them into SQLite, a live view.
pub async fn demo(args: DemoArgs, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<ExitCode> {
    let tmp;
    let dir = match &args.data_dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            // Absolute, so the paths written into the generated amid.toml mean the same from its directory.
            d.canonicalize().with_context(|| format!("cannot resolve {}", d.display()))?
        }
        None => {
            tmp = tempdir()?;
            tmp.0.clone()
        }
    };
    let secs = args.interval.as_secs().max(1);

    // The head end: ami-central on SQLite, on loopback.
    let central_db = ami_central::Db::connect(&format!("sqlite:{}", dir.join("central.db").display()))
        .await
        .map_err(|e| anyhow!("cannot open the central store: {e}"))?;
    let site_token = central_db.add_site_token("demo").await.map_err(|e| anyhow!("{e}"))?;
    let operator = central_db.add_operator_token("demo").await.map_err(|e| anyhow!("{e}"))?;
    let central_cfg = ami_central::ServerConfig { listen: args.central_listen, ..ami_central::ServerConfig::default() };
    let (central, central_task) = ami_central::spawn(central_db, central_cfg)
        .await
        .map_err(|e| anyhow!("cannot start ami-central on {}: {e}", args.central_listen))?;

    // The DLMS meter's keys: made up for this demo, handed to the simulated meter and written to the
    // site's secrets file (mode 0600), never into amid.toml.
    // The Mercury meters' level-1 password: made up too, like the DLMS keys (secrets file only).
    let mercury_password: [u8; 6] = rand::random();
    let mercury_hex: String = mercury_password.iter().map(|b| format!("{b:02X}")).collect();
    let demo_keys = ami_protocols::dlms::security::Keys {
        block_cipher_key: rand::random::<[u8; 16]>(),
        authentication_key: rand::random::<[u8; 16]>(),
    };
    let secrets_path = dir.join("secrets.toml");
    write_secret_file(
        &secrets_path,
        &format!(
            "# Generated by amid demo for the simulated DLMS meter.\n[meter.grid]\nblock_cipher_key = \"{}\"\n\
             authentication_key = \"{}\"\n\n# The Mercury meters' level-1 channel password (six raw bytes).\n\
             [meter.tenant-a]\npassword = \"{mercury_hex}\"\n[meter.tenant-b]\npassword = \"{mercury_hex}\"\n",
            hex16(&demo_keys.block_cipher_key),
            hex16(&demo_keys.authentication_key)
        ),
    )?;
    let mut toml = format!(
        "[site]\nid = \"demo\"\ndata_dir = \"{}\"\nsecrets = \"{}\"\n\n[uplink]\nurl = \"http://{central}\"\ntoken = \"{site_token}\"\ninterval = \"{secs}s\"\n",
        dir.join("data").display(),
        secrets_path.display()
    );
    let mut servers = Vec::new();
    for bus in DEMO_BUSES {
        let sim = Simulator::new();
        for &(_, profile, unit) in bus.meters {
            let p = load_profile(profile)?;
            sim.insert(unit, SimMeter::new(&p, u64::from(unit)));
        }
        let opts = SimOptions { framing: bus.framing, ..SimOptions::default() };
        let (addr, task) = ami_sim::spawn_tcp("127.0.0.1:0", sim, opts).await.context("cannot start simulator")?;
        servers.push(task);
        let framing = if bus.framing == SimFraming::Rtu { "?framing=rtu" } else { "" };
        toml.push_str(&format!(
            "\n[[bus]]\nid = \"{}\"\nmedia = \"tcp://{addr}{framing}\"\ntimeout = \"500ms\"\n",
            bus.id
        ));
        for &(id, profile, unit) in bus.meters {
            toml.push_str(&format!(
                "\n[[meter]]\nid = \"{id}\"\nbus = \"{}\"\nprofile = \"{profile}\"\naddress = {unit}\ninterval = \"{secs}s\"\n",
                bus.id
            ));
        }
        println!(
            "simulated {} on tcp://{addr}{framing}: {}",
            bus.id,
            bus.meters.iter().map(|m| format!("{} ({}, address {})", m.0, m.1, m.2)).collect::<Vec<_>>().join(", ")
        );
    }
    // An M-Bus line (a transparent M-Bus/TCP gateway): a heat meter read in 2 telegrams and a water meter.
    {
        use ami_sim::mbus::{spawn_mbus_tcp, MbusFaults, MbusLine, MbusMeterSpec};
        let mut heat = MbusMeterSpec::heat_meter(1, 12_345_678);
        heat.telegrams = 2;
        let line = MbusLine::with_meters([heat, MbusMeterSpec::water_meter(2, 87_654_321)])
            .map_err(|e| anyhow!("demo M-Bus line: {e}"))?;
        let (addr, task) =
            spawn_mbus_tcp("127.0.0.1:0", std::sync::Arc::new(std::sync::Mutex::new(line)), MbusFaults::default())
                .await
                .context("cannot start the M-Bus simulator")?;
        servers.push(task);
        toml.push_str(&format!(
            "\n[[bus]]\nid = \"mbus-gateway\"\nmedia = \"tcp://{addr}\"\ntimeout = \"500ms\"\n\
             \n[[meter]]\nid = \"heating\"\nbus = \"mbus-gateway\"\nprofile = \"generic-mbus\"\naddress = 1\ninterval = \"{secs}s\"\n\
             \n[[meter]]\nid = \"water\"\nbus = \"mbus-gateway\"\nprofile = \"generic-mbus\"\nsecondary = \"87654321\"\ninterval = \"{secs}s\"\n"
        ));
        println!("simulated mbus-gateway on tcp://{addr}: heating (heat meter, address 1), water (secondary 87654321)");
    }
    // A DLMS/COSEM electricity meter, HDLC over TCP, associated with HLS-GMAC and glo-ciphering (client 48),
    // its 15-minute load profile read incrementally (the first poll fetches the last day).
    {
        use ami_sim::dlms::{spawn_tcp, DlmsFraming, DlmsMeter, DlmsMeterSpec};
        let spec = DlmsMeterSpec { keys: demo_keys.clone(), ..DlmsMeterSpec::for_serial(20_261_124) };
        let physical = spec.server_physical;
        let (addr, task) = spawn_tcp("127.0.0.1:0", DlmsMeter::new(spec), DlmsFraming::Hdlc)
            .await
            .context("cannot start the DLMS simulator")?;
        servers.push(task);
        toml.push_str(&format!(
            "\n[[bus]]\nid = \"dlms-tcp\"\nmedia = \"tcp://{addr}\"\ntimeout = \"2s\"\n\
             \n[[meter]]\nid = \"grid\"\nbus = \"dlms-tcp\"\nprofile = \"generic-iec62056\"\ninterval = \"{secs}s\"\n\
             client = 48\nserver_logical = 1\nserver_physical = {physical}\nauthentication = \"high-gmac\"\nciphering = true\n"
        ));
        println!(
            "simulated dlms-tcp on tcp://{addr}: grid (DLMS/COSEM electricity meter, HDLC, HLS-GMAC + ciphering, \
             keys in {}, 15-min load profile)",
            secrets_path.display()
        );
    }
    // Two Incotex Mercury meters behind a transparent RS-485/TCP gateway: a 230 (half-hour power profile)
    // and a 234 (hourly), each read with its channel open at level 1 and its power profile incrementally.
    {
        use ami_sim::mercury::spawn_tcp;
        let mut specs = Vec::new();
        for (profile, address, serial) in [("mercury-230", 128u8, 41_234_128u32), ("mercury-234", 34, 41_235_034)] {
            let mp = ami_device::mercury::resolve_mercury_profile(profile, &ami_device::default_search_dirs())
                .map_err(|e| anyhow!("demo Mercury profile: {e}"))?;
            let mut spec = crate::mercury::sim_spec(&mp, address, serial);
            spec.user_password = ami_protocols::mercury::Password::new(mercury_password);
            specs.push(spec);
        }
        let line = crate::mercury::sim_line(specs, 3 * 3600).map_err(|e| anyhow!("demo Mercury line: {e}"))?;
        let (addr, task) = spawn_tcp("127.0.0.1:0", std::sync::Arc::new(std::sync::Mutex::new(line)), Duration::ZERO)
            .await
            .context("cannot start the Mercury simulator")?;
        servers.push(task);
        toml.push_str(&format!(
            "\n[[bus]]\nid = \"mercury-gateway\"\nmedia = \"tcp://{addr}\"\ntimeout = \"500ms\"\n\
             \n[[meter]]\nid = \"tenant-a\"\nbus = \"mercury-gateway\"\nprofile = \"mercury-230\"\naddress = 128\ninterval = \"{secs}s\"\n\
             \n[[meter]]\nid = \"tenant-b\"\nbus = \"mercury-gateway\"\nprofile = \"mercury-234\"\naddress = 34\ninterval = \"{secs}s\"\n"
        ));
        println!(
            "simulated mercury-gateway on tcp://{addr}: tenant-a (Mercury 230, address 128), tenant-b (Mercury 234, \
             address 34); meter clocks on Moscow time, password in {}",
            secrets_path.display()
        );
    }
    let cfg_path = dir.join("amid.toml");
    std::fs::write(&cfg_path, &toml).with_context(|| format!("cannot write {}", cfg_path.display()))?;
    let config = Config::parse(&toml, &cfg_path).map_err(|e| anyhow!("demo config: {e}"))?;
    let db = crate::run::store_path(&config.site.data_dir);
    println!("config: {}\nstore:  {}", cfg_path.display(), db.display());
    println!("\ndashboard: http://{central}/#autologin={operator}");
    println!("           (operator token {operator}; try the relay: site demo → meter feeder → relay_1 off)\n");
    println!(
        "polling every {secs}s; Ctrl-C stops{}",
        match args.duration {
            Some(d) => format!(" (or after {}s)", d.as_secs()),
            None => String::new(),
        }
    );

    let stop = async {
        match args.duration {
            Some(d) => tokio::select! {
                () = shutdown => {},
                () = tokio::time::sleep(d) => {},
            },
            None => shutdown.await,
        }
    };
    let view = tokio::spawn(live_view(db.clone(), args.interval));
    let summary = crate::run::run(config, stop).await;
    view.abort();
    for s in servers {
        s.abort();
    }
    central_task.abort();
    let summary = summary?;
    println!(
        "\nstopped: {} polls ok, {} failed, {} readings stored in {}",
        summary.polls_ok,
        summary.polls_failed,
        summary.readings_stored,
        db.display()
    );
    if args.data_dir.is_some() {
        println!("try: sqlite3 {} 'SELECT * FROM readings_view ORDER BY ts DESC LIMIT 10'", db.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the latest power and energy of every meter once per interval, read back from the store.
async fn live_view(db: PathBuf, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let db = db.clone();
        let lines = tokio::task::spawn_blocking(move || latest(&db)).await.ok().and_then(Result::ok);
        for l in lines.unwrap_or_default() {
            println!("{l}");
        }
    }
}

fn latest(db: &std::path::Path) -> rusqlite::Result<Vec<String>> {
    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut stmt = conn.prepare(
        "SELECT r.meter, r.name, r.value, r.unit, strftime('%H:%M:%S', r.ts_ms / 1000, 'unixepoch')
         FROM readings r
         JOIN (SELECT meter, obis, MAX(ts_ms) AS ts_ms FROM readings
               WHERE obis IN ('1-0:1.7.0*255', '1-0:16.7.0*255', '1-0:1.8.0*255', '6-0:1.0.0*255', '6-0:8.0.0*255',
                               '8-0:1.0.0*255') GROUP BY meter, obis) l
           ON r.meter = l.meter AND r.obis = l.obis AND r.ts_ms = l.ts_ms
         ORDER BY r.meter, r.obis",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<f64>>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
        ))
    })?;
    let (sent, unsent): (i64, i64) =
        conn.query_row("SELECT COALESCE(SUM(sent = 1), 0), COALESCE(SUM(sent = 0), 0) FROM readings", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    let mut out: Vec<String> = vec![format!("uplink: {sent} readings acknowledged by ami-central, {unsent} waiting")];
    let mut current = String::new();
    for row in rows {
        let (meter, name, value, unit, ts) = row?;
        let v = value.map_or("-".to_string(), |v| format!("{v:.1}"));
        if meter != current {
            out.push(format!("{ts} {meter:<10}"));
            current = meter;
        }
        if let Some(last) = out.last_mut() {
            last.push_str(&format!("  {name}={v} {unit}"));
        }
    }
    Ok(out)
}

/// 16 bytes as 32 upper-case hex digits.
fn hex16(k: &[u8; 16]) -> String {
    k.iter().map(|b| format!("{b:02X}")).collect()
}

/// Writes a file readable by its owner only (0600 on Unix).
fn write_secret_file(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// A temporary directory removed on drop (no extra dependency for one directory).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> anyhow::Result<TempDir> {
    let base = std::env::temp_dir().join(format!("ami-demo-{}", std::process::id()));
    std::fs::create_dir_all(&base).with_context(|| format!("cannot create {}", base.display()))?;
    Ok(TempDir(base))
}

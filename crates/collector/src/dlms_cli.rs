//! DLMS/COSEM on the command line: `amid decode --protocol dlms` prints an HDLC frame, a wrapper frame or
//! a bare APDU for a human, and `amid simulate` serves a simulated DLMS meter (`ami_sim::dlms`) over
//! HDLC (TCP or a serial line / pty, optionally with the IEC 62056-21 mode E opening) or the TCP wrapper.

use std::process::ExitCode;

use ami_media::MediaUrl;
use ami_protocols::dlms::security::Keys;
use ami_sim::dlms::{DlmsFraming, DlmsMeter, DlmsMeterSpec};
use anyhow::{anyhow, Context};
use tracing::info;

use crate::cli::{MeterArgs, SimulateArgs};
use crate::config::{parse_key, parse_system_title};
use crate::BadInput;

/// `amid decode --protocol dlms`: HDLC frames (`7E …`), wrapper frames (`00 01 …`) or a bare APDU, one
/// field per line ([`ami_protocols::dlms::describe`]). Bytes that do not decode are bad input (exit 2), with
/// the description saying why.
pub fn decode(bytes: &[u8], as_json: bool) -> anyhow::Result<ExitCode> {
    if as_json {
        return Err(anyhow!(BadInput("--format json is not available for DLMS; the description is text".into())));
    }
    let text = ami_protocols::dlms::describe::describe(bytes);
    let decodable = match bytes {
        [0x7E, ..] => matches!(ami_link::hdlc::Frame::decode(bytes), Ok(Some(_))),
        [0x00, 0x01, ..] => matches!(ami_link::wrapper::decode(bytes), Ok(Some(_))),
        [] => false,
        _ => ami_protocols::dlms::apdu::Apdu::decode(bytes).is_ok(),
    };
    if !decodable {
        return Err(anyhow!(BadInput(format!("cannot decode the DLMS bytes:\n{}", text.trim_end()))));
    }
    print!("{text}");
    if !text.ends_with('\n') {
        println!();
    }
    Ok(ExitCode::SUCCESS)
}

/// Splits `?framing=hdlc|wrapper` off a listen URL (the media layer knows only rtu|tcp).
pub fn split_framing(listen: &str) -> Result<(String, Option<DlmsFraming>), String> {
    let (url, framing) = crate::config::split_dlms_framing(listen)?;
    Ok((
        url,
        framing.map(|f| match f {
            crate::config::DlmsFramingCfg::Hdlc => DlmsFraming::Hdlc,
            crate::config::DlmsFramingCfg::Wrapper => DlmsFraming::Wrapper,
        }),
    ))
}

/// Parses a clock offset such as `-1d`, `+2h`, `90s`, `0`.
pub fn parse_offset(s: &str) -> Result<i64, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(0);
    }
    let (sign, rest) = match t.strip_prefix('-') {
        Some(r) => (-1i64, r),
        None => (1, t.strip_prefix('+').unwrap_or(t)),
    };
    let d = crate::config::parse_duration(rest)?;
    let secs = i64::try_from(d.as_secs()).map_err(|_| format!("{s:?} is too large"))?;
    Ok(sign * secs)
}

/// The simulated meter's spec from `amid simulate` flags: the sim's defaults (serial 12345678, the Green
/// Book test keys, password `00000000`) unless a flag or the secrets file says otherwise.
pub fn sim_spec(args: &SimulateArgs) -> anyhow::Result<DlmsMeterSpec> {
    let bad = |m: String| anyhow!(BadInput(m));
    let mut spec = match args.serial {
        Some(serial) => DlmsMeterSpec::for_serial(serial),
        None => DlmsMeterSpec::default(),
    };
    if let Some(seed) = args.seed {
        spec.seed = seed;
    }
    if let Some(path) = &args.secrets {
        let all = crate::config::read_secrets_file(path).map_err(|e| bad(e.to_string()))?;
        let chosen = match &args.secrets_meter {
            Some(id) => all.get(id).ok_or_else(|| bad(format!("{}: no [meter.{id}] table", path.display())))?,
            None if all.len() == 1 => all.values().next().ok_or_else(|| bad("empty secrets file".into()))?,
            None => {
                return Err(bad(format!(
                    "{} holds {} meters: name one with --secrets-meter ID",
                    path.display(),
                    all.len()
                )))
            }
        };
        if let Some(p) = &chosen.password {
            spec.password.clone_from(p);
        }
        if let Some(k) = chosen.block_cipher_key {
            spec.keys.block_cipher_key = k;
        }
        if let Some(k) = chosen.authentication_key {
            spec.keys.authentication_key = k;
        }
    }
    if let Some(p) = &args.password {
        spec.password = p.as_bytes().to_vec();
    }
    if let Some(k) = &args.block_key {
        spec.keys.block_cipher_key = parse_key(k).map_err(|e| bad(format!("--block-key: {e}")))?;
    }
    if let Some(k) = &args.auth_key {
        spec.keys.authentication_key = parse_key(k).map_err(|e| bad(format!("--auth-key: {e}")))?;
    }
    if let Some(t) = &args.system_title {
        spec.system_title = parse_system_title(t).map_err(|e| bad(format!("--system-title: {e}")))?;
    }
    if let Some(d) = args.history_days {
        if d == 0 || d > 3660 {
            return Err(bad(format!("--history-days {d}: expected 1..=3660")));
        }
        spec.history_days = d;
    }
    if let Some(o) = &args.clock_offset {
        spec.clock_offset_s = parse_offset(o).map_err(|e| bad(format!("--clock-offset: {e}")))?;
    }
    if let Some(p) = args.server_physical {
        if p > 0x3FFF {
            return Err(bad(format!("--server-physical {p}: expected 0..=16383")));
        }
        spec.server_physical = p;
    }
    if let Some(l) = args.server_logical {
        if l == 0 || l > 0x3FFF {
            return Err(bad(format!("--server-logical {l}: expected 1..=16383")));
        }
        spec.server_logical = l;
    }
    if let Some(p) = args.period {
        let p = u32::try_from(p.as_secs()).unwrap_or(0);
        if p == 0 || 86_400 % p != 0 {
            return Err(bad("--period must divide a day (e.g. 15m, 30m, 1h)".into()));
        }
        spec.period_s = p;
    }
    let _: &Keys = &spec.keys;
    Ok(spec)
}

/// `amid simulate` for a DLMS profile.
pub async fn simulate(
    args: &SimulateArgs,
    profile: &ami_device::Profile,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<ExitCode> {
    let (listen, framing) = split_framing(&args.listen).map_err(|e| anyhow!(BadInput(format!("--listen: {e}"))))?;
    let url: MediaUrl = listen.parse().map_err(|e: ami_media::UrlError| anyhow!(BadInput(e.to_string())))?;
    let framing = framing.unwrap_or(DlmsFraming::Hdlc);
    if !args.addresses.is_empty() {
        return Err(anyhow!(BadInput(
            "--address is for Modbus and M-Bus; a DLMS meter takes --server-logical and --server-physical".into()
        )));
    }
    let spec = sim_spec(args)?;
    if framing == DlmsFraming::Wrapper && (args.optical || matches!(url, MediaUrl::Serial { .. })) {
        return Err(anyhow!(BadInput(
            "the wrapper (IEC 62056-47) runs over TCP only; use HDLC on serial lines".into()
        )));
    }
    if !args.set.is_empty() || args.drop_rate > 0.0 || args.corrupt_rate > 0.0 || args.telegrams > 1 {
        return Err(anyhow!(BadInput(
            "--set, --drop-rate, --corrupt-rate and --telegrams are not available for DLMS meters (use --delay and \
             --drop-every)"
                .into()
        )));
    }
    let meter = DlmsMeter::new(spec.clone());
    meter.set_faults(ami_sim::dlms::DlmsFaults {
        delay: args.delay.unwrap_or_default(),
        drop_every_nth: args.drop_every,
    });
    let framing_name = match framing {
        DlmsFraming::Hdlc => "HDLC",
        DlmsFraming::Wrapper => "wrapper",
    };
    let describe = |at: &str| {
        format!(
            "simulating {} (DLMS, {framing_name}{}) at {at}, serial {}, server logical {} physical {}, clients 16 \
             (none), 32 (low), 48 (high-gmac + ciphering), system title {}, clock offset {} s, {} days of {}-s \
             profile",
            profile.id,
            if args.optical { ", mode E" } else { "" },
            spec.serial,
            spec.server_logical,
            spec.server_physical,
            spec.system_title.iter().map(|b| format!("{b:02X}")).collect::<String>(),
            spec.clock_offset_s,
            spec.history_days,
            spec.period_s,
        )
    };
    let serve = async {
        match &url {
            MediaUrl::Tcp { host, port, .. } => {
                if args.optical {
                    return Err(anyhow!(BadInput("--optical needs a serial:// listen URL".into())));
                }
                let listener = tokio::net::TcpListener::bind((host.as_str(), *port))
                    .await
                    .with_context(|| format!("cannot listen on {url}"))?;
                let local = listener.local_addr()?;
                let q = if framing == DlmsFraming::Wrapper { "?framing=wrapper" } else { "" };
                println!("{}", describe(&format!("tcp://{local}{q}")));
                ami_sim::dlms::serve_tcp(listener, meter, framing).await.context("simulator stopped")
            }
            MediaUrl::Serial { path, settings, .. } => {
                println!("{}", describe(&url.to_string()));
                ami_sim::dlms::serve_serial(path, settings, meter, framing, args.optical)
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

/// The default state file of the command line's invocation counters.
fn default_state() -> std::path::PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("ami").join("amid-cli.db")
}

/// A DLMS meter opened from the command line: its plan, a bus, the counter, timing.
struct CliMeter {
    plan: crate::dlms::DlmsPlan,
    bus: ami_link::BusHandle,
    counter: std::sync::Arc<dyn ami_protocols::dlms::client::InvocationCounter>,
    timeout: std::time::Duration,
    retries: u32,
    media: MediaUrl,
}

async fn open_cli(args: &MeterArgs, meter_id: &str) -> anyhow::Result<CliMeter> {
    use crate::config::{DlmsAuthCfg, DlmsFramingCfg, DlmsMeterCfg, MeterCfg, MeterSecrets};
    let bad = |m: String| anyhow!(BadInput(m));
    let profile = crate::cli::load_profile(&args.profile)?;
    let dp = ami_device::dlms::DlmsProfile::from_profile(&profile).map_err(|e| bad(e.to_string()))?;
    let (listen, url_framing) = split_framing(&args.media).map_err(|e| bad(format!("--media: {e}")))?;
    let media: MediaUrl = listen.parse().map_err(|e: ami_media::UrlError| bad(e.to_string()))?;
    let d = &args.dlms;
    let framing = match args.framing.as_deref() {
        Some("wrapper") => Some(DlmsFramingCfg::Wrapper),
        Some("hdlc") => Some(DlmsFramingCfg::Hdlc),
        Some(other) => return Err(bad(format!("--framing {other}: a DLMS meter takes hdlc or wrapper"))),
        None => url_framing.map(|f| match f {
            DlmsFraming::Hdlc => DlmsFramingCfg::Hdlc,
            DlmsFraming::Wrapper => DlmsFramingCfg::Wrapper,
        }),
    };
    let authentication = match &d.authentication {
        Some(a) => Some(
            DlmsAuthCfg::parse(a)
                .ok_or_else(|| bad(format!("--authentication {a}: expected none, low or high-gmac")))?,
        ),
        None => None,
    };
    let system_title = match &d.system_title {
        Some(t) => Some(parse_system_title(t).map_err(|e| bad(format!("--system-title: {e}")))?),
        None => None,
    };
    if args.address.is_some() {
        return Err(bad(
            "--address is for Modbus and M-Bus; a DLMS meter takes --server-logical and --server-physical".into(),
        ));
    }
    let mut secrets = match &d.secrets {
        Some(path) => {
            let mut all = crate::config::read_secrets_file(path).map_err(|e| bad(e.to_string()))?;
            all.remove(meter_id).unwrap_or_default()
        }
        None => MeterSecrets::default(),
    };
    let var = |name: &str| std::env::var(crate::config::secret_env_var(meter_id, name)).ok();
    if let Some(p) = var("password") {
        secrets.password = Some(p.into_bytes());
    }
    if let Some(k) = var("block_cipher_key") {
        secrets.block_cipher_key = Some(
            parse_key(&k)
                .map_err(|e| bad(format!("{}: {e}", crate::config::secret_env_var(meter_id, "block_cipher_key"))))?,
        );
    }
    if let Some(k) = var("authentication_key") {
        secrets.authentication_key = Some(
            parse_key(&k)
                .map_err(|e| bad(format!("{}: {e}", crate::config::secret_env_var(meter_id, "authentication_key"))))?,
        );
    }
    let cfg = MeterCfg {
        id: meter_id.to_string(),
        bus: "cli".into(),
        profile: args.profile.clone(),
        address: None,
        secondary: None,
        interval: std::time::Duration::from_secs(900),
        timeout: args.timeout,
        dlms: DlmsMeterCfg {
            framing,
            client: d.client,
            server_logical: d.server_logical,
            server_physical: d.server_physical,
            authentication,
            ciphering: d.ciphering.then_some(true),
            system_title,
            optical: d.optical.then_some(true),
            profile_backfill: d.profile_since.unwrap_or(crate::config::DEFAULT_PROFILE_BACKFILL),
        },
        secrets,
        mercury: crate::mercury::MercuryMeterCfg::default(),
        line: 0,
    };
    let plan = crate::dlms::plan(&cfg, "amid-cli", dp, Some(&media)).map_err(bad)?;
    let counter: std::sync::Arc<dyn ami_protocols::dlms::client::InvocationCounter> = if plan.needs_counter() {
        let state = d.counter_store.clone().unwrap_or_else(default_state);
        if let Some(dir) = state.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        // Keyed by system title: the meter counts per client system title.
        let title = plan
            .settings
            .ciphering
            .as_ref()
            .map(|c| c.system_title.iter().map(|b| format!("{b:02X}")).collect::<String>())
            .unwrap_or_default();
        let store = crate::store::InvocationCounterStore::open(&state, &title)
            .with_context(|| format!("cannot open the invocation counter store {}", state.display()))?;
        std::sync::Arc::new(crate::dlms::StoreCounter(store))
    } else {
        std::sync::Arc::new(ami_protocols::dlms::client::MemoryCounter::new(1))
    };
    let timeout = args
        .timeout
        .or(profile.line.timeout_ms.map(std::time::Duration::from_millis))
        .unwrap_or(std::time::Duration::from_secs(3));
    let transport = ami_media::open(&media).await.with_context(|| format!("cannot open {media}"))?;
    let bus = ami_link::Bus::spawn(
        transport,
        ami_link::BusConfig { id: "cli".into(), timeout, retries: args.retries, ..ami_link::BusConfig::default() },
    );
    Ok(CliMeter { plan, bus, counter, timeout, retries: args.retries, media })
}

/// `amid read` of a DLMS meter: every value of the profile, and with `--profile-since` its load profiles.
pub async fn read(args: &MeterArgs, meter_id: &str) -> anyhow::Result<(Vec<ami_device::Reading>, Vec<String>)> {
    let mut m = open_cli(args, meter_id).await?;
    if args.dlms.profile_since.is_none() {
        std::sync::Arc::make_mut(&mut m.plan.profile).load_profiles.clear();
    }
    let mut marks = std::collections::HashMap::new();
    let mut ctx = crate::dlms::PollCtx {
        bus: &m.bus,
        meter: meter_id,
        counter: m.counter.clone(),
        timeout: m.timeout,
        retries: m.retries,
        marks: &mut marks,
        now: chrono::Utc::now(),
        on_window: None,
        stop: None,
    };
    let poll =
        crate::dlms::poll(&m.plan, &mut ctx).await.map_err(|e| anyhow!("meter {meter_id} at {}: {e}", m.media))?;
    let mut readings: Vec<ami_device::Reading> = poll.readings.into_iter().map(|r| r.reading).collect();
    for w in poll.intervals {
        readings.extend(w.readings.into_iter().map(|r| r.reading));
    }
    Ok((readings, poll.errors))
}

/// `amid control` of a DLMS meter: the profile's disconnect control.
pub async fn control(args: &MeterArgs, meter_id: &str, name: &str, on: bool) -> anyhow::Result<ExitCode> {
    let m = open_cli(args, meter_id).await?;
    let mut marks = std::collections::HashMap::new();
    let mut ctx = crate::dlms::PollCtx {
        bus: &m.bus,
        meter: meter_id,
        counter: m.counter.clone(),
        timeout: m.timeout,
        retries: m.retries,
        marks: &mut marks,
        now: chrono::Utc::now(),
        on_window: None,
        stop: None,
    };
    let action = ami_wire::Action::Control { name: name.to_string(), on };
    let msg = crate::dlms::command(&m.plan, &mut ctx, &action).await.map_err(|e| anyhow!("{e}"))?;
    println!("{msg} at {}", m.media);
    Ok(ExitCode::SUCCESS)
}

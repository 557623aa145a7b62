//! The `amid` command line. Exit codes: 0 ok, 1 runtime failure (a meter did not answer), 2 bad input.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use ami_device::{Profile, Reading, Value};
use ami_link::{Bus, BusConfig};
use ami_media::MediaUrl;
use ami_protocols::modbus::{Framing, Master};
use anyhow::{anyhow, Context};
use chrono::Utc;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{default_framing, parse_duration, Config};
use crate::BadInput;

/// ami: the open meter concentrator.
///
/// Reads electricity, heat and water meters over RS-485, M-Bus, optical probes and TCP, stores every
/// reading in a local SQLite store, and ships them to a central store.
#[derive(Parser, Debug)]
#[command(name = "amid", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Log filter (error, warn, info, debug, trace, or a tracing filter such as `ami_link=debug`).
    /// Also settable with AMI_LOG.
    #[arg(long, global = true, env = "AMI_LOG", default_value = "info")]
    pub log: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon: poll every configured meter at its interval, store the readings, and (with an
    /// [uplink]) ship them to the central store and run the commands it sends back.
    Run {
        /// The site config (amid.toml). `amid config example` prints a commented one.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Read every value of a profile from one meter, once, and print it.
    Read(ReadArgs),
    /// Decode a captured frame for a human (e.g. from a logic analyser or `AMI_LOG=ami_media=debug`).
    Decode(DecodeArgs),
    /// Find the meters on a line (M-Bus: by primary address, or by secondary search with --secondary).
    Scan(ScanArgs),
    /// Switch a writable control of a meter (e.g. a relay), as the profile defines it.
    Control(ControlArgs),
    /// Show what the daemon's store says about each meter and line: last good read, failures, link counters.
    Status {
        /// The site config (amid.toml) whose store to read.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Serve a simulated meter built from a profile (for tests, demos and commissioning).
    ///
    /// Modbus: tcp://127.0.0.1:5020 (Modbus TCP, or ?framing=rtu) or serial:///dev/pts/N. M-Bus: the same
    /// URLs, several --address on one line. DLMS (e.g. --profile generic-iec62056): HDLC over
    /// tcp://127.0.0.1:4059, the IEC 62056-47 wrapper with tcp://127.0.0.1:4059?framing=wrapper, or HDLC on
    /// serial:///dev/pts/N (with --optical: mode E opening). The DLMS meter answers client 16 without
    /// authentication, client 32 with the LLS password and client 48 with HLS-GMAC and glo-ciphering; it
    /// holds a clock, registers, a 15-min load profile of --history-days and a disconnect control.
    Simulate(Box<SimulateArgs>),
    /// Check or list device profiles.
    Profiles {
        #[command(subcommand)]
        command: ProfilesCommand,
    },
    /// Site config helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Try ami on this machine: simulated Modbus, M-Bus and DLMS/COSEM meters on loopback (the DLMS meter
    /// over HDLC with HLS-GMAC and glo-ciphering, its 15-minute load profile read incrementally), the daemon
    /// polling them every few seconds into its SQLite store and shipping the readings to an embedded
    /// ami-central, whose dashboard URL it prints. Stops on Ctrl-C or after --duration.
    Demo(crate::demo::DemoArgs),
}

#[derive(Subcommand, Debug)]
enum ProfilesCommand {
    /// Validate profiles (files or directories; default: the profile search path). Exit 2 on any error.
    Check {
        /// Profile files or directories.
        paths: Vec<PathBuf>,
    },
    /// List the profiles found on the search path.
    List,
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Print a commented reference amid.toml.
    Example,
    /// Validate a config file and the profiles it names. Exit 2 on any error.
    Check {
        /// The config file.
        config: PathBuf,
    },
}

/// Output format of `amid read`.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Format {
    /// An aligned table for people.
    Table,
    /// One JSON object per line with the Reading fields.
    Json,
}

/// `amid read` arguments.
#[derive(Args, Debug)]
pub struct ReadArgs {
    #[command(flatten)]
    meter: MeterArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Meter id put in the readings.
    #[arg(long, default_value = "meter")]
    pub meter_id: String,
    /// M-Bus: select the meter by its 8-digit secondary address instead of --address.
    #[arg(long)]
    pub secondary: Option<String>,
}

/// Where a meter is and how to talk to it (shared by `read` and `control`).
#[derive(Args, Debug)]
pub struct MeterArgs {
    /// Profile id (e.g. eastron-sdm630) or path to a profile XML file.
    #[arg(long)]
    pub profile: String,
    /// Where the meter is: tcp://host:port[?framing=rtu] or serial:///dev/ttyUSB0?baud=9600&parity=none.
    #[arg(long)]
    pub media: String,
    /// Unit / slave address (default: the profile's default address, else 1).
    #[arg(long)]
    pub address: Option<u8>,
    /// Modbus framing (rtu, tcp); default rtu on serial and tcp://…?framing=rtu, tcp otherwise. DLMS: hdlc
    /// (default) or wrapper.
    #[arg(long, value_parser = ["rtu", "tcp", "hdlc", "wrapper"])]
    pub framing: Option<String>,
    /// Per-attempt reply timeout (e.g. 500ms); default: the profile's, else 1s.
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Retries after the first attempt.
    #[arg(long, default_value_t = 2)]
    pub retries: u32,
    /// DLMS association settings (defaults: the profile's).
    #[command(flatten)]
    pub dlms: DlmsArgs,
}

/// How to associate with a DLMS meter from the command line. Passwords and keys come from the environment
/// (`AMI_SECRET_<METER_ID>_PASSWORD`, `…_BLOCK_CIPHER_KEY`, `…_AUTHENTICATION_KEY`) or a secrets file, never
/// from arguments (they would show in `ps`).
#[derive(Args, Debug, Default)]
pub struct DlmsArgs {
    /// DLMS: client SAP (16 public, 32 low, 48 high; default the profile's).
    #[arg(long, help_heading = "DLMS")]
    pub client: Option<u16>,
    /// DLMS: server logical address (default the profile's, usually 1).
    #[arg(long, help_heading = "DLMS")]
    pub server_logical: Option<u16>,
    /// DLMS: server physical address, the lower HDLC address.
    #[arg(long, help_heading = "DLMS")]
    pub server_physical: Option<u16>,
    /// DLMS: none, low (password) or high-gmac.
    #[arg(long, help_heading = "DLMS")]
    pub authentication: Option<String>,
    /// DLMS: glo-ciphering (security suite 0) on.
    #[arg(long, help_heading = "DLMS")]
    pub ciphering: bool,
    /// DLMS: this client's system title, 16 hex digits.
    #[arg(long, help_heading = "DLMS")]
    pub system_title: Option<String>,
    /// DLMS: open an optical probe with the IEC 62056-21 mode E sign-on.
    #[arg(long, help_heading = "DLMS")]
    pub optical: bool,
    /// DLMS: a secrets file (`[meter.ID]` tables, as in amid.toml's `[site] secrets`); the table is the
    /// one of --meter-id.
    #[arg(long, help_heading = "DLMS")]
    pub secrets: Option<PathBuf>,
    /// DLMS: where the command line keeps its invocation counters (strictly increasing per system title).
    /// Default: $XDG_STATE_HOME/ami/amid-cli.db, else ~/.local/state/ami/amid-cli.db. With the daemon's
    /// --system-title, name the daemon's store (DATA_DIR/readings.db) so both count on one counter.
    #[arg(long, help_heading = "DLMS")]
    pub counter_store: Option<PathBuf>,
    /// DLMS: how far back to read the load profiles (e.g. 1d); default: no load profile.
    #[arg(long, value_parser = parse_duration, help_heading = "DLMS")]
    pub profile_since: Option<Duration>,
}

/// `amid control` arguments.
#[derive(Args, Debug)]
pub struct ControlArgs {
    #[command(flatten)]
    meter: MeterArgs,
    /// Meter id (DLMS: names the secrets, `AMI_SECRET_<ID>_*`).
    #[arg(long, default_value = "meter")]
    pub meter_id: String,
    /// The control's name in the profile (e.g. relay).
    #[arg(long)]
    name: String,
    /// The state to set.
    #[arg(long, value_parser = ["on", "off"])]
    state: String,
}

/// `amid scan` arguments.
#[derive(Args, Debug)]
pub struct ScanArgs {
    /// Protocol of the line.
    #[arg(long, value_parser = ["mbus"])]
    protocol: String,
    /// The line: serial:///dev/ttyUSB0 (M-Bus default 2400 8E1) or tcp://host:port (a transparent gateway).
    #[arg(long)]
    media: String,
    /// Search by secondary address (wildcard tree walk) instead of probing primary addresses.
    #[arg(long)]
    secondary: bool,
    /// Reply timeout per probe.
    #[arg(long, value_parser = parse_duration, default_value = "300ms")]
    timeout: Duration,
    /// First primary address to probe.
    #[arg(long, default_value_t = 1)]
    from: u8,
    /// Last primary address to probe.
    #[arg(long, default_value_t = 250)]
    to: u8,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// `amid decode` arguments.
#[derive(Args, Debug)]
pub struct DecodeArgs {
    /// Protocol of the frame.
    #[arg(long, value_parser = ["modbus", "mbus", "dlms", "mercury"])]
    protocol: String,
    /// The frame as hex (spaces, colons and 0x prefixes are ignored), e.g. "11 03 00 6B 00 03 76 87".
    #[arg(long, conflicts_with = "hex_file", required_unless_present = "hex_file")]
    hex: Option<String>,
    /// A file holding the frame as hex (one frame; lines starting with # are ignored).
    #[arg(long)]
    hex_file: Option<PathBuf>,
    /// Mercury: the request (hex) the frame answers, so the reply is decoded exactly.
    #[arg(long)]
    request: Option<String>,
    /// Modbus framing of the capture: rtu (serial, gateways) or tcp (MBAP).
    #[arg(long, value_parser = ["rtu", "tcp"], default_value = "rtu")]
    framing: String,
    /// Which way the frame went, if known (Modbus).
    #[arg(long, value_parser = ["request", "response", "auto"], default_value = "auto")]
    direction: String,
    /// Output: text for a human, or JSON lines (M-Bus: one object for the header, then one per record).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// Parses hex text: ignores whitespace, `:`, `,`, `-` and `0x` prefixes.
pub fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let cleaned: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join(" ")
        .replace("0x", " ")
        .replace("0X", " ")
        .chars()
        .filter(|c| !c.is_whitespace() && !":,-".contains(*c))
        .collect();
    if cleaned.is_empty() {
        return Err("no hex digits".into());
    }
    if !cleaned.len().is_multiple_of(2) {
        return Err(format!("odd number of hex digits ({})", cleaned.len()));
    }
    (0..cleaned.len())
        .step_by(2)
        .map(|i| {
            let pair = cleaned.get(i..i + 2).unwrap_or_default();
            u8::from_str_radix(pair, 16).map_err(|_| format!("{pair:?} is not a hex byte"))
        })
        .collect()
}

fn decode(args: DecodeArgs) -> anyhow::Result<ExitCode> {
    use ami_protocols::modbus::{describe_frame, Direction};
    let text = match (&args.hex, &args.hex_file) {
        (Some(h), _) => h.clone(),
        (None, Some(f)) => {
            std::fs::read_to_string(f).map_err(|e| anyhow!(BadInput(format!("{}: {e}", f.display()))))?
        }
        (None, None) => return Err(anyhow!(BadInput("give --hex or --hex-file".into()))),
    };
    let bytes = parse_hex(&text).map_err(|e| anyhow!(BadInput(format!("bad hex: {e}"))))?;
    if args.protocol == "mbus" {
        return crate::mbus_cli::decode(&bytes, args.format == Format::Json);
    }
    if args.protocol == "dlms" {
        return crate::dlms_cli::decode(&bytes, args.format == Format::Json);
    }
    if args.protocol == "mercury" {
        let request = match &args.request {
            Some(r) => Some(parse_hex(r).map_err(|e| anyhow!(BadInput(format!("bad --request hex: {e}"))))?),
            None => None,
        };
        return crate::mercury::decode(&bytes, request.as_deref(), args.format == Format::Json);
    }
    if args.request.is_some() {
        return Err(anyhow!(BadInput("--request is for --protocol mercury".into())));
    }
    let framing = if args.framing == "tcp" { Framing::Tcp } else { Framing::Rtu };
    let direction = match args.direction.as_str() {
        "request" => Direction::Request,
        "response" => Direction::Response,
        _ => Direction::Auto,
    };
    match describe_frame(&bytes, framing, direction) {
        Ok(d) => {
            print!("{d}");
            if !d.ends_with('\n') {
                println!();
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(anyhow!(BadInput(format!("cannot decode: {e}")))),
    }
}

/// `amid simulate` arguments.
#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// Profile id or path; the simulator serves every value it defines.
    #[arg(long)]
    pub profile: String,
    /// Where to serve: tcp://127.0.0.1:5020 (Modbus TCP), tcp://127.0.0.1:5020?framing=rtu (RTU over TCP),
    /// or serial:///dev/ttyS1 (RTU on a serial device or pty). DLMS: tcp://127.0.0.1:4059 (HDLC),
    /// tcp://127.0.0.1:4059?framing=wrapper, serial:///dev/pts/N (HDLC).
    #[arg(long)]
    pub listen: String,
    /// Unit addresses to answer (repeat for several meters on one line; default: the profile's, else 1).
    #[arg(long = "address")]
    pub addresses: Vec<u8>,
    /// Delay before every reply, e.g. 200ms (to test timeouts).
    #[arg(long, value_parser = parse_duration)]
    pub delay: Option<Duration>,
    /// Probability (0..1) of silently dropping a reply.
    #[arg(long, default_value_t = 0.0)]
    pub drop_rate: f64,
    /// Probability (0..1) of corrupting a reply's checksum.
    #[arg(long, default_value_t = 0.0)]
    pub corrupt_rate: f64,
    /// Random seed for values and faults (default 1; DLMS: the model's household, default the simulator's,
    /// 0).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Pin a value: NAME=NUMBER (repeatable), e.g. --set voltage_l1=230.
    #[arg(long = "set", value_name = "NAME=NUMBER")]
    pub set: Vec<String>,
    /// M-Bus: spread each meter's records over this many RSP_UD telegrams (multi-telegram read-out).
    #[arg(long, default_value_t = 1)]
    pub telegrams: usize,
    /// M-Bus and DLMS: drop every N-th reply (2 = every second one) to exercise the master's retries (M-Bus
    /// FCB, HDLC re-sends).
    #[arg(long)]
    pub drop_every: Option<u32>,
    /// DLMS: the LLS password of client 32 (default 00000000). Mercury: the level-1 channel password, 12 hex
    /// digits (default 010101010101).
    #[arg(long, help_heading = "DLMS")]
    pub password: Option<String>,
    /// Mercury: the channel closes after this much idleness (default 240s, the meters').
    #[arg(long, value_parser = parse_duration, help_heading = "Mercury")]
    pub channel_timeout: Option<Duration>,
    /// Mercury: Modbus RTU meters on the same line, PROFILE@UNIT (repeatable), e.g. eastron-sdm630@1: one
    /// mixed RS-485 line on a serial:// device or pty.
    #[arg(long = "modbus", value_name = "PROFILE@UNIT", help_heading = "Mercury")]
    pub modbus: Vec<String>,
    /// DLMS: block cipher key (EK), 32 hex digits (default the Green Book test key 000102…0F).
    #[arg(long, help_heading = "DLMS")]
    pub block_key: Option<String>,
    /// DLMS: authentication key (AK), 32 hex digits (default the Green Book test key D0D1…DF).
    #[arg(long, help_heading = "DLMS")]
    pub auth_key: Option<String>,
    /// DLMS: take password and keys from a secrets file (the format of `[site] secrets` in amid.toml);
    /// flags given as well win.
    #[arg(long, help_heading = "DLMS")]
    pub secrets: Option<PathBuf>,
    /// DLMS: which `[meter.ID]` table of --secrets to use (needed when it holds several).
    #[arg(long, help_heading = "DLMS")]
    pub secrets_meter: Option<String>,
    /// DLMS: the meter's system title, 16 hex digits (default "AMI", 0, then the serial).
    #[arg(long, help_heading = "DLMS")]
    pub system_title: Option<String>,
    /// DLMS: the meter's serial number (0.0.96.1.0.255; default 12345678).
    #[arg(long, help_heading = "DLMS")]
    pub serial: Option<u32>,
    /// DLMS: days of load profile history the meter holds (default 92).
    #[arg(long, help_heading = "DLMS")]
    pub history_days: Option<u32>,
    /// DLMS: load profile capture period (default 15m).
    #[arg(long, value_parser = parse_duration, help_heading = "DLMS")]
    pub period: Option<Duration>,
    /// DLMS: offset of the meter's clock from system time, e.g. -1d (the meter believes it is yesterday),
    /// +90s, 0 (default). The meter's history is a function of absolute time, whatever the offset.
    #[arg(long, allow_hyphen_values = true, help_heading = "DLMS")]
    pub clock_offset: Option<String>,
    /// DLMS: server logical address / wrapper wPort (default 1).
    #[arg(long, help_heading = "DLMS")]
    pub server_logical: Option<u16>,
    /// DLMS: server physical address, the lower HDLC address (default 16 + serial % 100).
    #[arg(long, help_heading = "DLMS")]
    pub server_physical: Option<u16>,
    /// DLMS: answer the IEC 62056-21 mode E sign-on first (an optical probe on a serial:// line).
    #[arg(long, help_heading = "DLMS")]
    pub optical: bool,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Read(_)
            | Command::Decode(_)
            | Command::Profiles { .. }
            | Command::Status { .. }
            | Command::Config { .. }
    ) {
        // One-shot commands end quietly when their output is piped into `head`; the daemon keeps the
        // default (ignored SIGPIPE) so a closed log pipe never kills it.
        restore_sigpipe();
    }
    // The demo prints its own live view; routine info logs would drown it.
    let quiet_demo =
        matches!(cli.command, Command::Demo(_)) && std::env::var_os("AMI_LOG").is_none() && cli.log == "info";
    init_logging(if quiet_demo { "warn" } else { &cli.log });
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("amid: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            if let Some(bad) = e.downcast_ref::<BadInput>() {
                eprintln!("{bad}");
                ExitCode::from(2)
            } else {
                eprintln!("amid: {e:#}");
                ExitCode::from(1)
            }
        }
    }
}

#[cfg(unix)]
#[allow(unsafe_code)]
fn restore_sigpipe() {
    // SAFETY: called once at start-up, before any thread is spawned; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn restore_sigpipe() {}

fn init_logging(filter: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

async fn dispatch(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Run { config } => {
            let cfg = Config::load(&config).map_err(|e| anyhow!(BadInput(e.to_string())))?;
            crate::run::run(cfg, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Read(args) => read(args).await,
        Command::Control(args) => control(args).await,
        Command::Decode(args) => decode(args),
        Command::Scan(args) => {
            let media = parse_media(&args.media)?;
            if args.from == 0 || args.to > 250 || args.from > args.to {
                return Err(anyhow!(BadInput(format!(
                    "--from {} --to {}: expected 1 <= from <= to <= 250",
                    args.from, args.to
                ))));
            }
            let _ = &args.protocol;
            crate::mbus_cli::scan(
                &media,
                args.secondary,
                args.timeout,
                (args.from, args.to),
                args.format == Format::Json,
            )
            .await
        }
        Command::Status { config } => {
            let cfg = Config::load(&config).map_err(|e| anyhow!(BadInput(e.to_string())))?;
            crate::status::print(&cfg)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Simulate(args) => crate::demo::simulate(*args, shutdown_signal()).await,
        Command::Profiles { command: ProfilesCommand::Check { paths } } => profiles_check(&paths),
        Command::Profiles { command: ProfilesCommand::List } => profiles_list(),
        Command::Config { command: ConfigCommand::Example } => {
            print!("{}", crate::config::EXAMPLE);
            Ok(ExitCode::SUCCESS)
        }
        Command::Config { command: ConfigCommand::Check { config } } => {
            let cfg = Config::load(&config).map_err(|e| anyhow!(BadInput(e.to_string())))?;
            let meters = crate::run::plan_meters(&cfg).map_err(|e| anyhow!(BadInput(e.join("\n"))))?;
            println!("{}: ok ({} buses, {} meters)", config.display(), cfg.buses.len(), meters.len());
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => crate::demo::demo(args, shutdown_signal()).await,
    }
}

/// Resolves when SIGTERM or SIGINT (Ctrl-C) arrives.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Finds a profile by id or path on the default search path; a failure is bad input.
pub fn load_profile(id_or_path: &str) -> anyhow::Result<Profile> {
    ami_device::resolve_profile(id_or_path, &ami_device::default_search_dirs())
        .map_err(|e| anyhow!(BadInput(e.to_string())))
}

fn parse_media(url: &str) -> anyhow::Result<MediaUrl> {
    url.parse::<MediaUrl>().map_err(|e| anyhow!(BadInput(e.to_string())))
}

/// A meter opened from the command line: its profile, a master on a fresh bus, its unit address.
struct OpenedMeter {
    profile: Profile,
    master: Master,
    unit: u8,
    media: MediaUrl,
    timeout: Duration,
    retries: u32,
}

async fn open_meter(args: &MeterArgs) -> anyhow::Result<OpenedMeter> {
    let profile = load_profile(&args.profile)?;
    let mut media = parse_media(&args.media)?;
    if profile.protocol == ami_device::Protocol::Mbus {
        media = crate::mbus_cli::mbus_media(&media);
    }
    let framing = match args.framing.as_deref() {
        Some("rtu") => Framing::Rtu,
        Some(_) => Framing::Tcp,
        None => default_framing(&media),
    };
    let unit = args.address.or(profile.line.address).unwrap_or(1);
    let timeout = args.timeout.or(profile.line.timeout_ms.map(Duration::from_millis)).unwrap_or(Duration::from_secs(1));
    let transport = ami_media::open(&media).await.with_context(|| format!("cannot open {media}"))?;
    let bus =
        Bus::spawn(transport, BusConfig { id: "cli".into(), timeout, retries: args.retries, ..BusConfig::default() });
    Ok(OpenedMeter { profile, master: Master::new(bus, framing), unit, media, timeout, retries: args.retries })
}

async fn control(args: ControlArgs) -> anyhow::Result<ExitCode> {
    if load_profile(&args.meter.profile)?.protocol == ami_device::Protocol::Dlms {
        return crate::dlms_cli::control(&args.meter, &args.meter_id, &args.name, args.state == "on").await;
    }
    if load_profile(&args.meter.profile)?.protocol == ami_device::Protocol::Mercury {
        return Err(anyhow!(BadInput(format!("{}: ami does not switch Mercury load relays", args.name))));
    }
    let m = open_meter(&args.meter).await?;
    if m.profile.control(&args.name).is_none() {
        let known: Vec<&str> = m.profile.controls.iter().map(|c| c.name.as_str()).collect();
        return Err(anyhow!(BadInput(format!(
            "profile {} has no control {:?} (controls: {})",
            m.profile.id,
            args.name,
            if known.is_empty() { "none".to_string() } else { known.join(", ") }
        ))));
    }
    let on = args.state == "on";
    ami_device::modbus::write_control(&m.profile, &m.master, "cli", m.unit, &args.name, on)
        .await
        .map_err(|e| anyhow!("{} at {} address {}: {e}", args.name, m.media, m.unit))?;
    println!("{} {} at {} address {}", args.name, args.state, m.media, m.unit);
    Ok(ExitCode::SUCCESS)
}

async fn read(args: ReadArgs) -> anyhow::Result<ExitCode> {
    if load_profile(&args.meter.profile)?.protocol == ami_device::Protocol::Dlms {
        let (readings, errors) = crate::dlms_cli::read(&args.meter, &args.meter_id).await?;
        return print_read(&args, ReadResult { readings, errors });
    }
    if load_profile(&args.meter.profile)?.protocol == ami_device::Protocol::Mercury {
        let (readings, errors) = crate::mercury::read(&args.meter, &args.meter_id).await?;
        return print_read(&args, ReadResult { readings, errors });
    }
    let OpenedMeter { profile, master, unit, media, timeout, retries } = open_meter(&args.meter).await?;
    let outcome = if profile.protocol == ami_device::Protocol::Mbus {
        let mp = ami_device::mbus::MbusProfile::from_profile(&profile).map_err(|e| anyhow!(BadInput(e.to_string())))?;
        let secondary = args.secondary.as_deref();
        let target = crate::run::mbus_target(unit, secondary).map_err(|e| anyhow!(BadInput(e)))?;
        let config = ami_protocols::mbus::client::ReadOutConfig { timeout, retries, ..Default::default() };
        let (readings, errors) =
            crate::run::read_mbus_meter(&mp, master.bus(), &args.meter_id, target, config, Utc::now()).await.map_err(
                |e| {
                    anyhow!(
                        "meter {} at {media} address {}: {e}",
                        args.meter_id,
                        secondary.unwrap_or(&unit.to_string())
                    )
                },
            )?;
        ReadResult { readings, errors }
    } else {
        let o = ami_device::modbus::read_modbus(&profile, &master, &args.meter_id, unit, Utc::now)
            .await
            .map_err(|e| anyhow!("meter {} at {media} address {unit}: {e}", args.meter_id))?;
        ReadResult { readings: o.readings, errors: o.errors.iter().map(ToString::to_string).collect() }
    };
    print_read(&args, outcome)
}

fn print_read(args: &ReadArgs, outcome: ReadResult) -> anyhow::Result<ExitCode> {
    match args.format {
        Format::Json => {
            for r in &outcome.readings {
                println!("{}", r.to_json_line());
            }
        }
        Format::Table => print_table(&outcome.readings),
    }
    for e in &outcome.errors {
        eprintln!("warning: {e}");
    }
    if outcome.readings.is_empty() {
        return Err(anyhow!("meter {} answered but no value could be read", args.meter_id));
    }
    Ok(ExitCode::SUCCESS)
}

/// What one `amid read` got, whatever the protocol.
struct ReadResult {
    readings: Vec<Reading>,
    errors: Vec<String>,
}

/// Prints readings as an aligned table.
pub fn print_table(readings: &[Reading]) {
    let rows: Vec<[String; 4]> = readings
        .iter()
        .map(|r| {
            let v = match &r.value {
                Value::Number(n) => format_number(*n),
                Value::Text(t) => t.clone(),
            };
            [r.name.clone(), r.obis.to_string(), v, r.unit.clone()]
        })
        .collect();
    let head = ["NAME", "OBIS", "VALUE", "UNIT"];
    let mut w = head.map(str::len);
    for row in &rows {
        for (i, c) in row.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    println!("{:<a$}  {:<b$}  {:>c$}  {}", head[0], head[1], head[2], head[3], a = w[0], b = w[1], c = w[2]);
    for [n, o, v, u] in rows {
        println!("{n:<a$}  {o:<b$}  {v:>c$}  {u}", a = w[0], b = w[1], c = w[2]);
    }
}

fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{n:.0}")
    } else {
        let s = format!("{n:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn profiles_check(paths: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let paths: Vec<PathBuf> = if paths.is_empty() {
        ami_device::default_search_dirs().into_iter().filter(|d| d.is_dir()).take(1).collect()
    } else {
        paths.to_vec()
    };
    if paths.is_empty() {
        return Err(anyhow!(BadInput("no profile directory found; name files or directories to check".into())));
    }
    for p in &paths {
        if !p.exists() {
            return Err(anyhow!(BadInput(format!("{}: no such file or directory", p.display()))));
        }
    }
    let errors = ami_device::check_paths(&paths);
    if errors.is_empty() {
        let n = count_xml(&paths);
        println!("{n} profile(s) ok");
        Ok(ExitCode::SUCCESS)
    } else {
        for e in &errors {
            eprintln!("{e}");
        }
        eprintln!("{} error(s)", errors.len());
        Ok(ExitCode::from(2))
    }
}

fn count_xml(paths: &[PathBuf]) -> usize {
    paths
        .iter()
        .map(|p| {
            if p.is_dir() {
                std::fs::read_dir(p)
                    .map(|rd| rd.filter_map(Result::ok).filter(|e| is_xml(&e.path())).count())
                    .unwrap_or(0)
            } else {
                1
            }
        })
        .sum()
}

fn is_xml(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "xml")
}

fn profiles_list() -> anyhow::Result<ExitCode> {
    let mut seen = std::collections::BTreeMap::new();
    for dir in ami_device::default_search_dirs() {
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        let mut files: Vec<PathBuf> = rd.filter_map(Result::ok).map(|e| e.path()).filter(|p| is_xml(p)).collect();
        files.sort();
        for f in files {
            match ami_device::load_profile(&f) {
                Ok(p) => {
                    seen.entry(p.id.clone()).or_insert((p, f));
                }
                Err(errs) => {
                    for e in errs {
                        eprintln!("warning: {e}");
                    }
                }
            }
        }
    }
    for (id, (p, f)) in &seen {
        let dlms = (p.protocol == ami_device::Protocol::Dlms)
            .then(|| ami_device::dlms::DlmsProfile::from_profile(p).ok())
            .flatten();
        let values = match ami_device::mbus::MbusProfile::from_profile(p) {
            _ if dlms.is_some() => {
                let d = dlms.as_ref().map_or((0, 0), |d| (d.values.len(), d.load_profiles.len()));
                format!("{} values, {} load profile{}", d.0, d.1, if d.1 == 1 { "" } else { "s" })
            }
            _ if p.protocol == ami_device::Protocol::Mercury => {
                match ami_device::mercury::MercuryProfile::from_profile(p) {
                    Ok(m) => format!(
                        "{} values{}",
                        m.values.len(),
                        if m.load_profile.is_some() { ", power profile" } else { "" }
                    ),
                    Err(_) => "invalid".to_string(),
                }
            }
            Ok(m) if p.protocol == ami_device::Protocol::Mbus => {
                if m.all_records {
                    "every record".to_string()
                } else {
                    format!("{} values", m.values.len())
                }
            }
            _ => format!("{} values", p.values.len()),
        };
        println!(
            "{id:<24} {:<7} {} {} ({values}) {}",
            format!("{:?}", p.protocol).to_lowercase(),
            p.manufacturer,
            p.model,
            f.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

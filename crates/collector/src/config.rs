//! Site configuration (`amid.toml`): parsed into types, with errors that name the file, line and key.
//!
//! ```toml
//! [site]
//! id = "substation-4"          # required; names this concentrator at the central store
//! data_dir = "/var/lib/ami"    # default: ./data (relative to the config file)
//!
//! [[bus]]
//! id = "rs485-a"               # required, unique
//! media = "serial:///dev/ttyUSB0?baud=9600&parity=none"
//! framing = "rtu"              # rtu | tcp; default rtu for serial and for tcp://…?framing=rtu, else tcp
//! timeout = "300ms"            # per-attempt reply timeout, default 1s
//! retries = 2                  # retries after the first attempt, default 2
//! guard_time = "10ms"          # silence between exchanges, default 10ms
//!
//! [[meter]]
//! id = "incomer"               # required, unique
//! bus = "rs485-a"              # required, a bus id above
//! profile = "eastron-sdm630"   # a profile id (devices/) or a path to an XML file
//! address = 1                  # Modbus unit id 1..=247 (M-Bus primary 1..=250); default: the profile's, else 1
//! secondary = "12345678"       # M-Bus only: select by secondary address instead of the primary one
//! interval = "15m"             # poll interval aligned to the wall clock, default 15m
//! timeout = "500ms"            # optional per-meter override of the bus timeout
//!
//! # DLMS/COSEM meters (profile protocol "dlms"): every key optional, defaults from the profile
//! framing = "hdlc"             # hdlc | wrapper (IEC 62056-47, TCP only); default: the bus URL's
//!                              # ?framing=hdlc|wrapper (tcp://host:4059?framing=wrapper), else the profile's
//! client = 48                  # client SAP (HDLC client address, wrapper source wPort)
//! server_logical = 1           # server logical device (upper HDLC address, wrapper destination wPort)
//! server_physical = 17         # server physical address (lower HDLC address)
//! authentication = "high-gmac" # none | low (password) | high-gmac (HLS mechanism 5)
//! ciphering = true             # glo-ciphering (security suite 0, authenticated and encrypted)
//! system_title = "414D490000000001"  # the client's system title, 16 hex digits (default: "AMI" + site hash)
//! optical = false              # IEC 62056-21 mode E opening (optical probe on a serial port)
//! profile_backfill = "1d"      # how far back the first read of a load profile reaches, default 1d
//!
//! # Incotex Mercury meters (profile protocol "mercury"): address required, the rest optional
//! address = 128                # network address 1..=240 (by convention the serial number's last 3 digits)
//! level = 1                    # channel access level: 1 user (reading), 2 admin; default the profile's
//! multiplier = 1               # the meter's timing multiplier; default the profile's
//! utc_offset = "+03:00"        # the meter clock's zone; default inferred from its clock (15-min steps)
//! channel_timeout = "240s"     # the meter's idle channel timeout; the daemon keeps the channel open
//! profile_backfill = "2d"      # how far back the first read of the power profile reaches, default 1d
//! ```
//!
//! Secrets (the LLS password, the block cipher key and the authentication key) never live in `amid.toml`
//! or in a profile: they come from the file named by `[site] secrets` (TOML, one `[meter.ID]` table per
//! meter with `password`, `block_cipher_key`, `authentication_key`; it should be mode 0600) or from the
//! environment (`AMI_SECRET_<ID>_PASSWORD`, `AMI_SECRET_<ID>_BLOCK_CIPHER_KEY`,
//! `AMI_SECRET_<ID>_AUTHENTICATION_KEY`, the meter id upper-cased with `-` and `.` as `_`; the environment
//! wins). They are never logged and their `Debug` output is redacted. A Mercury meter's channel password is
//! its `password` there too: 12 hex digits, six raw bytes (`010101010101`, the factory level-1 password, is
//! the default when none is given).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ami_media::MediaUrl;
use ami_protocols::modbus::Framing;
use serde::Deserialize;
use toml::Spanned;

/// A config error: `file:line: key: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Config file path as given.
    pub file: String,
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// The key the error is about, e.g. `meter[2].interval`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.key.is_empty()) {
            (0, true) => write!(f, "{}: {}", self.file, self.message),
            (0, false) => write!(f, "{}: {}: {}", self.file, self.key, self.message),
            (l, true) => write!(f, "{}:{l}: {}", self.file, self.message),
            (l, false) => write!(f, "{}:{l}: {}: {}", self.file, self.key, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A list of config errors, displayed one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// `[uplink]`: where and how readings go to the central store.
#[derive(Debug, Clone, PartialEq)]
pub struct UplinkCfg {
    /// Base URL of ami-central, `https://…` (or `http://` on loopback for tests and the demo).
    pub url: String,
    /// The site's bearer token (read from `token_file`, or `token` inline).
    pub token: String,
    /// How often a batch (or a heartbeat) goes up when there is no backlog. Default 60 s.
    pub interval: Duration,
    /// Readings per batch. Default 5000.
    pub batch: usize,
    /// Request timeout. Default 30 s.
    pub timeout: Duration,
    /// Extra trust anchors (PEM) for a private PKI.
    pub ca_file: Option<PathBuf>,
    /// Pinned server certificates: SHA-256 of the DER certificate, hex. When set, only these certificates
    /// are accepted (no CA check), which is how a self-signed head end is trusted.
    pub pin_sha256: Vec<[u8; 32]>,
}

/// `[store]`: the bound of the site store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreCfg {
    /// Largest size of the readings database in bytes. Default 256 MiB.
    pub max_size: u64,
}

impl Default for StoreCfg {
    fn default() -> Self {
        Self { max_size: 256 * 1024 * 1024 }
    }
}

/// The whole site configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Path the config was read from.
    pub path: PathBuf,
    /// `[site]`.
    pub site: Site,
    /// `[uplink]`, if the site sends to a central store.
    pub uplink: Option<UplinkCfg>,
    /// `[store]`.
    pub store: StoreCfg,
    /// `[[bus]]` in file order.
    pub buses: Vec<BusCfg>,
    /// `[[meter]]` in file order.
    pub meters: Vec<MeterCfg>,
}

/// `[site]`.
#[derive(Debug, Clone)]
pub struct Site {
    /// Site id.
    pub id: String,
    /// Data directory (SQLite store). Default `data` next to the config file.
    pub data_dir: PathBuf,
    /// Extra profile directories searched before the defaults.
    pub profile_dirs: Vec<PathBuf>,
    /// The secrets file (DLMS passwords and keys), if any.
    pub secrets: Option<PathBuf>,
}

/// `[[bus]]`.
#[derive(Debug, Clone)]
pub struct BusCfg {
    /// Bus id.
    pub id: String,
    /// Media URL.
    pub media: MediaUrl,
    /// Modbus framing on this bus.
    pub framing: Framing,
    /// Per-attempt timeout. Default 1 s.
    pub timeout: Duration,
    /// Retries after the first attempt. Default 2.
    pub retries: u32,
    /// Silence between exchanges. Default 10 ms.
    pub guard_time: Duration,
    /// The DLMS framing named by the media URL (`tcp://…?framing=wrapper` or `?framing=hdlc`): the default
    /// of the DLMS meters on this bus.
    pub dlms_framing: Option<DlmsFramingCfg>,
}

/// `[[meter]]`.
#[derive(Debug, Clone)]
pub struct MeterCfg {
    /// Meter id.
    pub id: String,
    /// Bus id.
    pub bus: String,
    /// Profile id or path.
    pub profile: String,
    /// Unit address, if given (Modbus unit id, or M-Bus primary address).
    pub address: Option<u8>,
    /// M-Bus secondary address (8-digit identification number): the meter is selected by it and read via
    /// address 253 instead of by primary address.
    pub secondary: Option<String>,
    /// Poll interval. Default 15 min.
    pub interval: Duration,
    /// Timeout override.
    pub timeout: Option<Duration>,
    /// DLMS/COSEM settings (only for meters whose profile speaks DLMS; each overrides the profile).
    pub dlms: DlmsMeterCfg,
    /// The meter's secrets from the secrets file or the environment (never from the profile).
    pub secrets: MeterSecrets,
    /// Incotex Mercury settings (only for meters whose profile speaks Mercury; each overrides the profile).
    pub mercury: crate::mercury::MercuryMeterCfg,
    /// Line of the `[[meter]]` entry (for later errors, e.g. an unknown profile).
    pub line: usize,
}

/// How a DLMS meter's APDUs travel on its bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DlmsFramingCfg {
    /// HDLC (IEC 62056-46), on serial lines and over TCP.
    Hdlc,
    /// The TCP wrapper (IEC 62056-47).
    Wrapper,
}

/// The authentication of a DLMS association.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DlmsAuthCfg {
    /// No authentication (public client).
    None,
    /// Low-level security: a password.
    Low,
    /// High-level security, mechanism 5 (HLS-GMAC): needs the block cipher and authentication keys.
    HighGmac,
}

impl DlmsAuthCfg {
    /// Parses `none`, `low` (`lls`), `high-gmac` (`hls-gmac`, `hls`).
    pub fn parse(s: &str) -> Option<DlmsAuthCfg> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" | "public" => Some(DlmsAuthCfg::None),
            "low" | "lls" | "password" => Some(DlmsAuthCfg::Low),
            "high-gmac" | "high_gmac" | "hls-gmac" | "hls" | "gmac" => Some(DlmsAuthCfg::HighGmac),
            _ => None,
        }
    }

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DlmsAuthCfg::None => "none",
            DlmsAuthCfg::Low => "low",
            DlmsAuthCfg::HighGmac => "high-gmac",
        }
    }
}

/// Per-meter DLMS/COSEM overrides of the profile's defaults (`None`: take the profile's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlmsMeterCfg {
    /// HDLC or wrapper.
    pub framing: Option<DlmsFramingCfg>,
    /// Client SAP (HDLC client address, wrapper source wPort), 1..=127.
    pub client: Option<u16>,
    /// Server logical device address (upper HDLC address), 0..=0x3FFF.
    pub server_logical: Option<u16>,
    /// Server physical address (lower HDLC address), 0..=0x3FFF.
    pub server_physical: Option<u16>,
    /// Authentication level.
    pub authentication: Option<DlmsAuthCfg>,
    /// Glo-ciphering on (security suite 0, authenticated and encrypted) or off.
    pub ciphering: Option<bool>,
    /// The client's system title (8 bytes). Default: `AMI` and five bytes of a hash of the site id.
    pub system_title: Option<[u8; 8]>,
    /// IEC 62056-21 mode E opening (optical probe).
    pub optical: Option<bool>,
    /// How far back the first read of a load profile reaches. Default 1 day.
    pub profile_backfill: Duration,
}

impl Default for DlmsMeterCfg {
    fn default() -> Self {
        Self {
            framing: None,
            client: None,
            server_logical: None,
            server_physical: None,
            authentication: None,
            ciphering: None,
            system_title: None,
            optical: None,
            profile_backfill: DEFAULT_PROFILE_BACKFILL,
        }
    }
}

impl DlmsMeterCfg {
    /// True when the config named at least one DLMS-only key for this meter.
    pub fn any_set(&self) -> bool {
        self.framing.is_some()
            || self.client.is_some()
            || self.server_logical.is_some()
            || self.server_physical.is_some()
            || self.authentication.is_some()
            || self.ciphering.is_some()
            || self.system_title.is_some()
            || self.optical.is_some()
    }
}

/// The default `profile_backfill`: one day.
pub const DEFAULT_PROFILE_BACKFILL: Duration = Duration::from_secs(86_400);

/// A meter's secrets. `Debug` prints which are present, never their values; the bytes are zeroed on drop.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct MeterSecrets {
    /// LLS password (bytes as written).
    pub password: Option<Vec<u8>>,
    /// Global unicast encryption key (EK).
    pub block_cipher_key: Option<[u8; 16]>,
    /// Authentication key (AK).
    pub authentication_key: Option<[u8; 16]>,
    /// Where they came from, for messages (`/etc/ami/secrets.toml`, `environment`), never the values.
    pub source: String,
}

impl fmt::Debug for MeterSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |present: bool| if present { "<redacted>" } else { "-" };
        f.debug_struct("MeterSecrets")
            .field("password", &shown(self.password.is_some()))
            .field("block_cipher_key", &shown(self.block_cipher_key.is_some()))
            .field("authentication_key", &shown(self.authentication_key.is_some()))
            .field("source", &self.source)
            .finish()
    }
}

impl Drop for MeterSecrets {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        if let Some(p) = &mut self.password {
            p.zeroize();
        }
        if let Some(k) = &mut self.block_cipher_key {
            k.zeroize();
        }
        if let Some(k) = &mut self.authentication_key {
            k.zeroize();
        }
    }
}

impl MeterSecrets {
    /// True when no secret is set.
    pub fn is_empty(&self) -> bool {
        self.password.is_none() && self.block_cipher_key.is_none() && self.authentication_key.is_none()
    }
}

/// The environment variable holding one secret of a meter: `AMI_SECRET_<ID>_<NAME>`.
pub fn secret_env_var(meter: &str, name: &str) -> String {
    let id: String =
        meter.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    format!("AMI_SECRET_{id}_{}", name.to_ascii_uppercase())
}

/// Splits `framing=hdlc|wrapper` (DLMS) off a media URL's query; other parameters stay.
pub fn split_dlms_framing(url: &str) -> Result<(String, Option<DlmsFramingCfg>), String> {
    let Some((base, query)) = url.split_once('?') else { return Ok((url.to_string(), None)) };
    let mut framing = None;
    let mut rest = Vec::new();
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        match kv.split_once('=') {
            Some(("framing", "hdlc")) => framing = Some(DlmsFramingCfg::Hdlc),
            Some(("framing", "wrapper")) => framing = Some(DlmsFramingCfg::Wrapper),
            _ => rest.push(kv),
        }
    }
    if framing.is_some() && base.starts_with("serial:") && framing == Some(DlmsFramingCfg::Wrapper) {
        return Err("framing=wrapper is for tcp:// (IEC 62056-47); serial lines carry HDLC".into());
    }
    let url = if rest.is_empty() { base.to_string() } else { format!("{base}?{}", rest.join("&")) };
    Ok((url, framing))
}

/// Parses a 16-byte key from 32 hex digits; the message never repeats the key.
pub fn parse_key(s: &str) -> Result<[u8; 16], String> {
    let t = s.trim();
    let digits = t.chars().filter(char::is_ascii_hexdigit).count();
    if t.len() != 32 || digits != 32 {
        return Err(format!(
            "expected 32 hex digits (16 bytes), got {} characters{}",
            t.chars().count(),
            if digits == t.len() { "" } else { " with non-hex characters" }
        ));
    }
    let mut key = [0u8; 16];
    for (i, k) in key.iter_mut().enumerate() {
        *k = t.get(2 * i..2 * i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()).ok_or("not hex")?;
    }
    Ok(key)
}

/// Parses an 8-byte system title from 16 hex digits.
pub fn parse_system_title(s: &str) -> Result<[u8; 8], String> {
    let t = s.trim();
    if t.len() != 16 || !t.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("{t:?} is not a system title (16 hex digits, e.g. 414D490000000001)"));
    }
    let mut out = [0u8; 8];
    for (i, o) in out.iter_mut().enumerate() {
        *o = t.get(2 * i..2 * i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()).ok_or("not hex")?;
    }
    Ok(out)
}

/// The default client system title of a site: `AMI` then 5 bytes of SHA-256 of the site id.
pub fn default_system_title(site: &str) -> [u8; 8] {
    use sha2::Digest;
    let h = sha2::Sha256::digest(site.as_bytes());
    let mut out = *b"AMI\0\0\0\0\0";
    out[3..].copy_from_slice(&h[..5]);
    out
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUplink {
    url: Spanned<String>,
    token: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    interval: Option<Spanned<String>>,
    batch: Option<Spanned<i64>>,
    timeout: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    #[serde(default)]
    pin_sha256: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    max_size: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    site: Spanned<RawSite>,
    uplink: Option<Spanned<RawUplink>>,
    store: Option<Spanned<RawStore>>,
    #[serde(default)]
    bus: Vec<Spanned<RawBus>>,
    #[serde(default)]
    meter: Vec<Spanned<RawMeter>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSite {
    id: Spanned<String>,
    data_dir: Option<Spanned<String>>,
    #[serde(default)]
    profile_dirs: Vec<String>,
    secrets: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBus {
    id: Spanned<String>,
    media: Spanned<String>,
    framing: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    retries: Option<Spanned<i64>>,
    guard_time: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMeter {
    id: Spanned<String>,
    bus: Spanned<String>,
    profile: Spanned<String>,
    address: Option<Spanned<i64>>,
    secondary: Option<Spanned<String>>,
    interval: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    framing: Option<Spanned<String>>,
    client: Option<Spanned<i64>>,
    server_logical: Option<Spanned<i64>>,
    server_physical: Option<Spanned<i64>>,
    authentication: Option<Spanned<String>>,
    ciphering: Option<Spanned<bool>>,
    system_title: Option<Spanned<String>>,
    optical: Option<Spanned<bool>>,
    profile_backfill: Option<Spanned<String>>,
    level: Option<Spanned<i64>>,
    multiplier: Option<Spanned<i64>>,
    utc_offset: Option<Spanned<String>>,
    channel_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecretsFile {
    #[serde(default)]
    meter: HashMap<String, Spanned<RawSecrets>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecrets {
    password: Option<Spanned<String>>,
    block_cipher_key: Option<Spanned<String>>,
    authentication_key: Option<Spanned<String>>,
}

/// Reads the secrets file: `[meter.ID]` tables. Errors name the file, line and key, never a value.
fn load_secrets(path: &Path, errors: &mut Vec<ConfigError>) -> HashMap<String, MeterSecrets> {
    let file = path.display().to_string();
    let mut push = |line: usize, key: String, message: String| {
        errors.push(ConfigError { file: file.clone(), line, key, message });
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            push(0, String::new(), format!("cannot read the secrets file: {e}"));
            return HashMap::new();
        }
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    file = %file,
                    "the secrets file is readable by others (mode {mode:03o}); chmod 600 it"
                );
            }
        }
    }
    let raw: RawSecretsFile = match toml::from_str(&text) {
        Ok(r) => r,
        Err(e) => {
            // toml's message may quote the offending text; keep only the line.
            let line = e.span().map_or(0, |s| line_of(&text, s.start));
            push(line, String::new(), "not a valid secrets file (expected [meter.ID] tables with password, block_cipher_key, authentication_key)".into());
            return HashMap::new();
        }
    };
    let mut out = HashMap::new();
    for (id, entry) in raw.meter {
        let entry = entry.into_inner();
        let mut s = MeterSecrets::default();
        s.source.clone_from(&file);
        s.password = entry.password.as_ref().map(|p| p.get_ref().as_bytes().to_vec());
        for (k, v, slot) in [
            ("block_cipher_key", &entry.block_cipher_key, &mut s.block_cipher_key),
            ("authentication_key", &entry.authentication_key, &mut s.authentication_key),
        ] {
            if let Some(v) = v {
                match parse_key(v.get_ref()) {
                    Ok(k) => *slot = Some(k),
                    Err(m) => push(line_of(&text, v.span().start), format!("meter.{id}.{k}"), m),
                }
            }
        }
        out.insert(id, s);
    }
    out
}

/// Reads a secrets file on its own (`amid simulate --secrets`): every `[meter.ID]` table.
pub fn read_secrets_file(path: &Path) -> Result<HashMap<String, MeterSecrets>, ConfigErrors> {
    let mut errors = Vec::new();
    let secrets = load_secrets(path, &mut errors);
    if errors.is_empty() {
        Ok(secrets)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Overlays the secrets from the environment (`AMI_SECRET_<ID>_*`) on those from the file.
fn env_secrets(meter: &str, mut s: MeterSecrets, errors: &mut Vec<ConfigError>) -> MeterSecrets {
    let var = |name: &str| std::env::var(secret_env_var(meter, name)).ok();
    if let Some(p) = var("password") {
        s.password = Some(p.into_bytes());
        s.source = "environment".into();
    }
    for (name, slot) in
        [("block_cipher_key", &mut s.block_cipher_key), ("authentication_key", &mut s.authentication_key)]
    {
        if let Some(v) = var(name) {
            match parse_key(&v) {
                Ok(k) => *slot = Some(k),
                Err(m) => errors.push(ConfigError {
                    file: "environment".into(),
                    line: 0,
                    key: secret_env_var(meter, name),
                    message: m,
                }),
            }
        }
    }
    if s.source.is_empty() && !s.is_empty() {
        s.source = "environment".into();
    }
    s
}

/// Parses a duration like `300ms`, `5s`, `15m`, `1h`, `1d` (one number and one unit).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration (expected e.g. 300ms, 5s, 15m, 1h)"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        "" => return Err(format!("{s:?} has no unit (expected ms, s, m, h or d)")),
        u => return Err(format!("unknown unit {u:?} in {s:?} (expected ms, s, m, h or d)")),
    };
    if !secs.is_finite() || secs <= 0.0 || secs > 366.0 * 86400.0 {
        return Err(format!("{s:?} is out of range (must be > 0 and at most a year)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a size like `256MB`, `1GiB`, `500kB` or a plain number of bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size (expected e.g. 256MB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "kib" | "k" => 1024,
        "mb" => 1_000_000,
        "mib" | "m" => 1024 * 1024,
        "gb" => 1_000_000_000,
        "gib" | "g" => 1024 * 1024 * 1024,
        u => return Err(format!("unknown size unit {u:?} in {s:?} (expected B, kB, MB, GB, KiB, MiB, GiB)")),
    };
    let v = n.checked_mul(mult).ok_or_else(|| format!("{s:?} is too large"))?;
    if v < 64 * 1024 {
        return Err(format!("{s:?} is too small (at least 64KiB)"));
    }
    Ok(v)
}

/// Parses a hex SHA-256 fingerprint (64 hex digits; `:` separators allowed).
pub fn parse_pin(s: &str) -> Result<[u8; 32], String> {
    let hex: String = s.chars().filter(|c| *c != ':').collect();
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        return Err(format!("{s:?} is not a SHA-256 fingerprint (64 hex digits)"));
    }
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = hex
            .get(2 * i..2 * i + 2)
            .and_then(|b| u8::from_str_radix(b, 16).ok())
            .ok_or_else(|| format!("{s:?} is not a SHA-256 fingerprint (64 hex digits)"))?;
    }
    Ok(out)
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset.min(text.len())).map_or(0, |t| t.bytes().filter(|&b| b == b'\n').count() + 1)
}

/// The default framing for a media URL: RTU on serial lines and for `tcp://…?framing=rtu`, else TCP.
pub fn default_framing(media: &MediaUrl) -> Framing {
    match media {
        MediaUrl::Serial { .. } => Framing::Rtu,
        MediaUrl::Tcp { framing: Some(f), .. } if f == "rtu" => Framing::Rtu,
        MediaUrl::Tcp { .. } => Framing::Tcp,
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError { file: file.clone(), line: 0, key: String::new(), message: e.to_string() }])
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text; `path` names the file in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
        let file = path.display().to_string();
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| line_of(text, s.start));
            let message = e.message().to_string();
            ConfigErrors(vec![ConfigError { file: file.clone(), line, key: String::new(), message }])
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut errors = Vec::new();
        let mut err = |span: std::ops::Range<usize>, key: String, message: String| {
            errors.push(ConfigError { file: file.clone(), line: line_of(text, span.start), key, message });
        };

        let site_raw = raw.site.into_inner();
        let site_id = site_raw.id.get_ref().trim().to_string();
        if site_id.is_empty() {
            err(site_raw.id.span(), "site.id".into(), "must not be empty".into());
        }
        let data_dir = match &site_raw.data_dir {
            Some(d) => base.join(d.get_ref()),
            None => base.join("data"),
        };
        let secrets_path = site_raw.secrets.as_ref().map(|p| base.join(p.get_ref()));
        let mut secret_errors = Vec::new();
        let mut secrets_by_meter =
            secrets_path.as_deref().map(|p| load_secrets(p, &mut secret_errors)).unwrap_or_default();
        let site = Site {
            id: site_id,
            data_dir,
            profile_dirs: site_raw.profile_dirs.iter().map(|d| base.join(d)).collect(),
            secrets: secrets_path,
        };

        let mut buses = Vec::new();
        let mut bus_ids = HashSet::new();
        for (i, b) in raw.bus.into_iter().enumerate() {
            let b = b.into_inner();
            let key = |k: &str| format!("bus[{i}].{k}");
            let id = b.id.get_ref().clone();
            if !valid_id(&id) {
                err(b.id.span(), key("id"), format!("{id:?} is not a valid id (letters, digits, - _ .)"));
            } else if !bus_ids.insert(id.clone()) {
                err(b.id.span(), key("id"), format!("duplicate bus id {id:?}"));
            }
            // `?framing=wrapper|hdlc` is for DLMS meters; the media layer knows only rtu|tcp.
            let (media_text, dlms_framing) = match split_dlms_framing(b.media.get_ref()) {
                Ok(v) => v,
                Err(m) => {
                    err(b.media.span(), key("media"), m);
                    (b.media.get_ref().clone(), None)
                }
            };
            let media = match media_text.parse::<MediaUrl>() {
                Ok(m) => Some(m),
                Err(e) => {
                    err(b.media.span(), key("media"), e.reason);
                    None
                }
            };
            let framing = match &b.framing {
                None => media.as_ref().map(default_framing),
                Some(f) => match f.get_ref().as_str() {
                    "rtu" => Some(Framing::Rtu),
                    "tcp" => Some(Framing::Tcp),
                    other => {
                        err(f.span(), key("framing"), format!("{other:?} (expected rtu or tcp)"));
                        None
                    }
                },
            };
            let mut dur = |v: &Option<Spanned<String>>, k: &str, default: Duration| match v {
                None => default,
                Some(s) => parse_duration(s.get_ref()).unwrap_or_else(|m| {
                    err(s.span(), key(k), m);
                    default
                }),
            };
            let timeout = dur(&b.timeout, "timeout", Duration::from_secs(1));
            let guard_time = dur(&b.guard_time, "guard_time", Duration::from_millis(10));
            let retries = match &b.retries {
                None => 2,
                Some(r) => match u32::try_from(*r.get_ref()) {
                    Ok(n) if n <= 10 => n,
                    _ => {
                        err(r.span(), key("retries"), format!("{} (expected 0..=10)", r.get_ref()));
                        2
                    }
                },
            };
            if let (Some(media), Some(framing)) = (media, framing) {
                buses.push(BusCfg { id, media, framing, timeout, retries, guard_time, dlms_framing });
            }
        }

        let mut meters = Vec::new();
        let mut meter_ids = HashSet::new();
        for (i, m) in raw.meter.into_iter().enumerate() {
            let line = line_of(text, m.span().start);
            let m = m.into_inner();
            let key = |k: &str| format!("meter[{i}].{k}");
            let id = m.id.get_ref().clone();
            if !valid_id(&id) {
                err(m.id.span(), key("id"), format!("{id:?} is not a valid id (letters, digits, - _ .)"));
            } else if !meter_ids.insert(id.clone()) {
                err(m.id.span(), key("id"), format!("duplicate meter id {id:?}"));
            }
            if !bus_ids.contains(m.bus.get_ref()) {
                let known: Vec<_> = buses.iter().map(|b| b.id.as_str()).collect();
                err(
                    m.bus.span(),
                    key("bus"),
                    format!("unknown bus {:?} (buses: {})", m.bus.get_ref(), known.join(", ")),
                );
            }
            let address = match &m.address {
                None => None,
                Some(a) => match u8::try_from(*a.get_ref()) {
                    // Modbus allows 1..=247, M-Bus 1..=250; the profile's protocol narrows it later.
                    Ok(n) if (1..=250).contains(&n) => Some(n),
                    _ => {
                        err(
                            a.span(),
                            key("address"),
                            format!("{} (expected 1..=247 for Modbus, 1..=250 for M-Bus)", a.get_ref()),
                        );
                        None
                    }
                },
            };
            let secondary = m.secondary.as_ref().and_then(|s| {
                let digits = s.get_ref().trim();
                if digits.len() == 8 && digits.chars().all(|c| c.is_ascii_digit()) {
                    Some(digits.to_string())
                } else {
                    err(
                        s.span(),
                        key("secondary"),
                        format!("{digits:?} (expected the 8-digit M-Bus identification number)"),
                    );
                    None
                }
            });
            let interval = match &m.interval {
                None => Duration::from_secs(900),
                Some(s) => match parse_duration(s.get_ref()) {
                    Ok(d) if d >= Duration::from_secs(1) && d.subsec_nanos() == 0 => d,
                    Ok(_) => {
                        err(s.span(), key("interval"), "must be whole seconds, at least 1s".into());
                        Duration::from_secs(900)
                    }
                    Err(msg) => {
                        err(s.span(), key("interval"), msg);
                        Duration::from_secs(900)
                    }
                },
            };
            let timeout = m.timeout.as_ref().and_then(|s| match parse_duration(s.get_ref()) {
                Ok(d) => Some(d),
                Err(msg) => {
                    err(s.span(), key("timeout"), msg);
                    None
                }
            });
            if m.profile.get_ref().trim().is_empty() {
                err(m.profile.span(), key("profile"), "must not be empty".into());
            }
            let mut dlms = DlmsMeterCfg::default();
            if let Some(f) = &m.framing {
                match f.get_ref().as_str() {
                    "hdlc" => dlms.framing = Some(DlmsFramingCfg::Hdlc),
                    "wrapper" => dlms.framing = Some(DlmsFramingCfg::Wrapper),
                    other => err(f.span(), key("framing"), format!("{other:?} (expected hdlc or wrapper)")),
                }
            }
            let mut addr = |v: &Option<Spanned<i64>>, k: &str, range: std::ops::RangeInclusive<i64>| {
                v.as_ref().and_then(|a| {
                    if range.contains(a.get_ref()) {
                        u16::try_from(*a.get_ref()).ok()
                    } else {
                        err(
                            a.span(),
                            key(k),
                            format!("{} (expected {}..={})", a.get_ref(), range.start(), range.end()),
                        );
                        None
                    }
                })
            };
            dlms.client = addr(&m.client, "client", 1..=127);
            dlms.server_logical = addr(&m.server_logical, "server_logical", 0..=0x3FFF);
            dlms.server_physical = addr(&m.server_physical, "server_physical", 0..=0x3FFF);
            if let Some(a) = &m.authentication {
                match DlmsAuthCfg::parse(a.get_ref()) {
                    Some(v) => dlms.authentication = Some(v),
                    None => err(
                        a.span(),
                        key("authentication"),
                        format!("{:?} (expected none, low or high-gmac)", a.get_ref()),
                    ),
                }
            }
            dlms.ciphering = m.ciphering.as_ref().map(|c| *c.get_ref());
            dlms.optical = m.optical.as_ref().map(|c| *c.get_ref());
            if let Some(t) = &m.system_title {
                match parse_system_title(t.get_ref()) {
                    Ok(v) => dlms.system_title = Some(v),
                    Err(msg) => err(t.span(), key("system_title"), msg),
                }
            }
            if let Some(b) = &m.profile_backfill {
                match parse_duration(b.get_ref()) {
                    Ok(d) => dlms.profile_backfill = d,
                    Err(msg) => err(b.span(), key("profile_backfill"), msg),
                }
            }
            let mut mercury = crate::mercury::MercuryMeterCfg::default();
            if let Some(l) = &m.level {
                match u8::try_from(*l.get_ref()) {
                    Ok(v @ 1..=2) => mercury.level = Some(v),
                    _ => err(l.span(), key("level"), format!("{} (expected 1 = user or 2 = admin)", l.get_ref())),
                }
            }
            if let Some(n) = &m.multiplier {
                match u8::try_from(*n.get_ref()) {
                    Ok(v @ 1..=255) => mercury.multiplier = Some(v),
                    _ => err(n.span(), key("multiplier"), format!("{} (expected 1..=255)", n.get_ref())),
                }
            }
            if let Some(o) = &m.utc_offset {
                match crate::mercury::parse_utc_offset(o.get_ref()) {
                    Ok(v) => mercury.utc_offset_min = Some(v),
                    Err(msg) => err(o.span(), key("utc_offset"), msg),
                }
            }
            if let Some(t) = &m.channel_timeout {
                match parse_duration(t.get_ref()) {
                    Ok(d) if d >= Duration::from_secs(1) => mercury.channel_timeout = Some(d),
                    Ok(_) => err(t.span(), key("channel_timeout"), "at least 1s (Incotex meters: 240s)".to_string()),
                    Err(msg) => err(t.span(), key("channel_timeout"), msg),
                }
            }
            let from_file = secrets_by_meter.remove(&id).unwrap_or_default();
            let secrets = env_secrets(&id, from_file, &mut secret_errors);
            meters.push(MeterCfg {
                id,
                bus: m.bus.get_ref().clone(),
                profile: m.profile.get_ref().clone(),
                address,
                secondary,
                interval,
                timeout,
                dlms,
                secrets,
                mercury,
                line,
            });
        }

        let uplink = raw.uplink.map(|u| {
            let u = u.into_inner();
            let url = u.url.get_ref().trim_end_matches('/').to_string();
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                err(u.url.span(), "uplink.url".into(), format!("{url:?} (expected https://host[:port])"));
            }
            let token = match (&u.token, &u.token_file) {
                (Some(t), None) => t.get_ref().trim().to_string(),
                (None, Some(f)) => {
                    let p = base.join(f.get_ref());
                    match std::fs::read_to_string(&p) {
                        Ok(t) => t.trim().to_string(),
                        Err(e) => {
                            err(f.span(), "uplink.token_file".into(), format!("cannot read {}: {e}", p.display()));
                            String::new()
                        }
                    }
                }
                (Some(t), Some(_)) => {
                    err(t.span(), "uplink.token".into(), "give token or token_file, not both".into());
                    String::new()
                }
                (None, None) => {
                    err(u.url.span(), "uplink".into(), "missing token_file (or token)".into());
                    String::new()
                }
            };
            let mut dur = |v: &Option<Spanned<String>>, k: &str, default: Duration| match v {
                None => default,
                Some(s) => parse_duration(s.get_ref()).unwrap_or_else(|m| {
                    err(s.span(), format!("uplink.{k}"), m);
                    default
                }),
            };
            let interval = dur(&u.interval, "interval", Duration::from_secs(60));
            let timeout = dur(&u.timeout, "timeout", Duration::from_secs(30));
            let batch = match &u.batch {
                None => 5000,
                Some(b) => match usize::try_from(*b.get_ref()) {
                    Ok(n) if (1..=ami_wire::MAX_READINGS_PER_BATCH).contains(&n) => n,
                    _ => {
                        err(b.span(), "uplink.batch".into(), format!("{} (expected 1..=100000)", b.get_ref()));
                        5000
                    }
                },
            };
            let mut pins = Vec::new();
            for p in &u.pin_sha256 {
                match parse_pin(p.get_ref()) {
                    Ok(pin) => pins.push(pin),
                    Err(m) => err(p.span(), "uplink.pin_sha256".into(), m),
                }
            }
            UplinkCfg {
                url,
                token,
                interval,
                batch,
                timeout,
                ca_file: u.ca_file.as_ref().map(|f| base.join(f.get_ref())),
                pin_sha256: pins,
            }
        });
        let store = match raw.store.map(Spanned::into_inner).and_then(|s| s.max_size) {
            None => StoreCfg::default(),
            Some(m) => match parse_size(m.get_ref()) {
                Ok(max_size) => StoreCfg { max_size },
                Err(msg) => {
                    err(m.span(), "store.max_size".into(), msg);
                    StoreCfg::default()
                }
            },
        };

        for unknown in secrets_by_meter.keys() {
            tracing::warn!(meter = %unknown, "the secrets file names a meter that is not in the config");
        }
        errors.extend(secret_errors);
        if errors.is_empty() {
            Ok(Config { path: path.to_path_buf(), site, uplink, store, buses, meters })
        } else {
            Err(ConfigErrors(errors))
        }
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// The commented reference config printed by `amid config example`.
pub const EXAMPLE: &str = r#"# amid.toml: the site configuration of an ami concentrator.

[site]
# Names this concentrator at the central store (required).
id = "substation-4"
# Where the SQLite store lives. Default: "data" next to this file.
data_dir = "/var/lib/ami"
# Extra directories searched for device profiles before the defaults (./devices, /usr/share/ami/devices).
# profile_dirs = ["/etc/ami/devices"]
# DLMS passwords and keys (never in this file, never in a profile). Mode 0600; one table per meter id:
#   [meter.grid]
#   password = "00000000"                                  # LLS (authentication = "low")
#   block_cipher_key = "000102030405060708090A0B0C0D0E0F"  # 32 hex digits
#   authentication_key = "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"
# The environment can give them too (and wins): AMI_SECRET_GRID_BLOCK_CIPHER_KEY=…, AMI_SECRET_GRID_PASSWORD=…
secrets = "/etc/ami/secrets.toml"

# The central store this site sends its readings to (dial-out: the site needs no public address).
[uplink]
url = "https://central.example.net"
token_file = "/etc/ami/token"  # the site token from `ami-central token add SITE`
# interval = "60s"             # send (or heartbeat) at least this often (default 60s)
# batch = 5000                 # readings per batch (default 5000)
# ca_file = "/etc/ami/ca.pem"  # extra trust anchors for a private PKI
# pin_sha256 = ["3f:a1:…"]     # accept only this server certificate (SHA-256 of its DER)

[store]
# The site store keeps readings until the central store acknowledged them. When it reaches this size it
# deletes delivered rows first, then thins old unsent instantaneous values (one per hour, then one per
# day), and only then drops the oldest energy values, counting and reporting every row dropped.
max_size = "256MB"

# One [[bus]] per physical line or TCP connection. Meters on one bus are polled one at a time;
# buses are polled in parallel.
[[bus]]
id = "rs485-a"
media = "serial:///dev/ttyUSB0?baud=9600&parity=none&data=8&stop=1"
# framing = "rtu"      # rtu (default on serial) | tcp (default on tcp://, unless ?framing=rtu)
timeout = "300ms"      # per-attempt reply timeout (default 1s)
retries = 2            # retries after the first attempt (default 2)
# guard_time = "10ms"  # silence between two exchanges (default 10ms)

[[bus]]
id = "gateway"
media = "tcp://192.0.2.10:502"

# A DLMS/COSEM meter reached over TCP (HDLC over TCP, or the IEC 62056-47 wrapper on port 4059); an optical
# probe is a serial bus: media = "serial:///dev/ttyUSB1" with optical = true on the meter.
[[bus]]
id = "dlms"
media = "tcp://192.0.2.20:4059"
timeout = "3s"

[[meter]]
id = "incomer"
bus = "rs485-a"
profile = "eastron-sdm630"   # a profile id from the profile directories, or a path to an XML file
address = 1                  # Modbus unit id (default: the profile's, else 1)
interval = "15m"             # aligned to the wall clock: read at :00, :15, :30, :45 (default 15m)

[[meter]]
id = "pv"
bus = "gateway"
profile = "eastron-sdm120"
address = 2
interval = "1m"
# timeout = "800ms"          # per-meter override of the bus timeout

[[meter]]
id = "grid"
bus = "dlms"
profile = "generic-iec62056" # registers by OBIS code, the 15-min load profile 1-0:99.1.0
interval = "15m"
# Every key below is optional and overrides the profile's default:
framing = "wrapper"          # hdlc | wrapper (or give it on the bus: media = "tcp://…:4059?framing=wrapper")
client = 48                  # client SAP: 16 public, 32 low (password), 48 high (HLS-GMAC)
server_logical = 1           # logical device (wrapper destination wPort / upper HDLC address)
# server_physical = 17       # lower HDLC address (often derived from the serial number)
authentication = "high-gmac" # none | low | high-gmac; passwords and keys come from the secrets file
ciphering = true             # glo-ciphering, security suite 0 (needs both keys)
# system_title = "414D490000000001"  # this concentrator's system title (default: AMI + a hash of site.id)
# optical = false            # IEC 62056-21 mode E opening for an optical probe
profile_backfill = "1d"      # how far back the first read of a load profile reaches (default 1d); after
                             # that amid asks only for the intervals it has not stored yet

# An Incotex Mercury 230 on the RS-485 line beside the Modbus meters (the bus runs them one at a time).
[[meter]]
id = "workshop"
bus = "rs485-a"
profile = "mercury-230"      # energy, U/I/P/Q/S, cos phi, frequency, the half-hour power profile
address = 128                # network address 1..=240 (by convention the serial number's last 3 digits)
interval = "1h"              # the power profile is read incrementally from where the store left off
# level = 1                  # channel access level: 1 user (enough for reading), 2 admin
# multiplier = 1             # the meter's programmable timing multiplier
# utc_offset = "+03:00"      # the meter clock's zone (default: inferred from its clock, in 15-min steps)
# channel_timeout = "240s"   # how long the meter keeps an idle channel open; a test frame keeps it open
# The channel password is the meter's password in the secrets file: 12 hex digits, six raw bytes
#   [meter.workshop]
#   password = "010101010101"  # the factory level-1 password (the default when none is given)
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigErrors> {
        Config::parse(text, Path::new("/etc/ami/amid.toml"))
    }

    #[test]
    fn example_config_parses() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = dir.path().join("secrets.toml");
        std::fs::write(
            &secrets,
            "[meter.grid]\nblock_cipher_key = \"000102030405060708090A0B0C0D0E0F\"\n\
             authentication_key = \"D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF\"\n",
        )
        .unwrap();
        let text = EXAMPLE
            .replace("token_file = \"/etc/ami/token\"", "token = \"t\"")
            .replace("/etc/ami/secrets.toml", secrets.to_str().unwrap());
        let c = parse(&text).unwrap();
        let u = c.uplink.as_ref().unwrap();
        assert_eq!((u.url.as_str(), u.token.as_str(), u.batch), ("https://central.example.net", "t", 5000));
        assert_eq!(c.store.max_size, 256_000_000);
        assert_eq!(c.site.id, "substation-4");
        assert_eq!(c.buses.len(), 3);
        assert_eq!(c.buses[0].framing, Framing::Rtu);
        assert_eq!(c.buses[1].framing, Framing::Tcp);
        assert_eq!(c.buses[0].timeout, Duration::from_millis(300));
        assert_eq!(c.meters[0].interval, Duration::from_secs(900));
        assert_eq!(c.meters[1].address, Some(2));
        let grid = &c.meters[2];
        assert_eq!(grid.dlms.framing, Some(DlmsFramingCfg::Wrapper));
        assert_eq!(grid.dlms.authentication, Some(DlmsAuthCfg::HighGmac));
        assert_eq!((grid.dlms.client, grid.dlms.server_logical), (Some(48), Some(1)));
        assert_eq!(grid.secrets.block_cipher_key.unwrap()[15], 0x0F);
        assert!(grid.secrets.password.is_none());
    }

    #[test]
    fn secrets_never_show_in_debug_or_errors() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = dir.path().join("secrets.toml");
        std::fs::write(
            &secrets,
            "[meter.m]\npassword = \"hunter22\"\nblock_cipher_key = \"C0FFEEC0FFEEC0FFEEC0FFEEC0FFEEC0\"\n\
             authentication_key = \"BADBADBADBAD\"\n",
        )
        .unwrap();
        let text = format!(
            "[site]\nid = \"s\"\nsecrets = \"{}\"\n[[bus]]\nid = \"b\"\nmedia = \"tcp://h:1\"\n\
             [[meter]]\nid = \"m\"\nbus = \"b\"\nprofile = \"x\"\nauthentication = \"low\"\n",
            secrets.display()
        );
        let e = parse(&text).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!((e.0[0].line, e.0[0].key.as_str()), (4, "meter.m.authentication_key"));
        assert!(e.0[0].file.ends_with("secrets.toml"));
        assert!(!e.to_string().contains("BADBAD"), "{e}");
        std::fs::write(
            &secrets,
            "[meter.m]\npassword = \"hunter22\"\nblock_cipher_key = \"C0FFEEC0FFEEC0FFEEC0FFEEC0FFEEC0\"\n",
        )
        .unwrap();
        let c = parse(&text).unwrap();
        let m = &c.meters[0];
        assert_eq!(m.secrets.password.as_deref(), Some(&b"hunter22"[..]));
        assert_eq!(m.dlms.authentication, Some(DlmsAuthCfg::Low));
        let debug = format!("{c:?}");
        assert!(!debug.contains("hunter22") && !debug.to_lowercase().contains("c0ffee"), "{debug}");
        assert!(!debug.contains("104, 117, 110"), "password bytes leak: {debug}");
        assert!(debug.contains("<redacted>"));
    }

    #[test]
    fn dlms_keys_are_checked() {
        let text = "[site]\nid = \"s\"\n[[bus]]\nid = \"b\"\nmedia = \"tcp://h:1\"\n[[meter]]\nid = \"m\"\nbus = \"b\"\n\
                    profile = \"x\"\nframing = \"ppp\"\nclient = 300\nsystem_title = \"41\"\nauthentication = \"hls-md5\"\n";
        let e = parse(text).unwrap_err().to_string();
        assert!(e.contains(":10: meter[0].framing: \"ppp\" (expected hdlc or wrapper)"), "{e}");
        assert!(e.contains(":11: meter[0].client: 300 (expected 1..=127)"), "{e}");
        assert!(e.contains(":12: meter[0].system_title:"), "{e}");
        assert!(e.contains(":13: meter[0].authentication:"), "{e}");
    }

    #[test]
    fn a_dlms_framing_in_the_media_url_is_the_buses_default() {
        let text = "[site]\nid = \"s\"\n[[bus]]\nid = \"w\"\nmedia = \"tcp://h:4059?framing=wrapper\"\n\
                    [[bus]]\nid = \"g\"\nmedia = \"tcp://h:4001?framing=rtu\"\n";
        let c = parse(text).unwrap();
        assert_eq!(c.buses[0].dlms_framing, Some(DlmsFramingCfg::Wrapper));
        assert_eq!(c.buses[0].media.to_string(), "tcp://h:4059");
        assert_eq!((c.buses[1].dlms_framing, c.buses[1].framing), (None, Framing::Rtu));
        let e = parse("[site]\nid = \"s\"\n[[bus]]\nid = \"w\"\nmedia = \"serial:///dev/ttyUSB0?framing=wrapper\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains(":5: bus[0].media: framing=wrapper is for tcp://"), "{e}");
    }

    #[test]
    fn environment_secrets_win_over_the_file() {
        // A meter id no other test uses: the environment is process-wide.
        std::env::set_var(secret_env_var("env-meter.1", "block_cipher_key"), "00112233445566778899aabbccddeeff");
        let text = "[site]\nid = \"s\"\n[[bus]]\nid = \"b\"\nmedia = \"tcp://h:1\"\n\
                    [[meter]]\nid = \"env-meter.1\"\nbus = \"b\"\nprofile = \"x\"\n";
        let c = parse(text).unwrap();
        assert_eq!(secret_env_var("env-meter.1", "password"), "AMI_SECRET_ENV_METER_1_PASSWORD");
        assert_eq!(c.meters[0].secrets.block_cipher_key.unwrap()[15], 0xFF);
        assert_eq!(c.meters[0].secrets.source, "environment");
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let text = "[site]\nid = \"s\"\n\n[[bus]]\nid = \"b\"\nmedia = \"tcp://h:1\"\n\n[[meter]]\nid = \"m\"\nbus = \"b\"\nprofile = \"x\"\ninterval = \"15 parsecs\"\n";
        let e = parse(text).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!(e.0[0].line, 12);
        assert_eq!(e.0[0].key, "meter[0].interval");
        assert!(e.to_string().starts_with("/etc/ami/amid.toml:12: meter[0].interval: unknown unit"), "{e}");
    }

    #[test]
    fn unknown_keys_and_buses_are_errors() {
        let text = "[site]\nid = \"s\"\n[[bus]]\nid = \"b\"\nmedia = \"tcp://h:1\"\nspeed = 9600\n";
        let e = parse(text).unwrap_err().to_string();
        assert!(e.contains(":6:") && e.contains("unknown field `speed`"), "{e}");

        let text = "[site]\nid = \"s\"\n[[meter]]\nid = \"m\"\nbus = \"nope\"\nprofile = \"x\"\naddress = 300\n";
        let e = parse(text).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(":5: meter[0].bus: unknown bus \"nope\""), "{msg}");
        assert!(msg.contains(":7: meter[0].address: 300 (expected 1..=247 for Modbus"), "{msg}");
    }

    #[test]
    fn bad_media_and_duplicates_are_reported() {
        let text = "[site]\nid = \"s\"\n[[bus]]\nid = \"b\"\nmedia = \"udp://x:1\"\n[[bus]]\nid = \"b\"\nmedia = \"tcp://x:1\"\n";
        let e = parse(text).unwrap_err().to_string();
        assert!(e.contains(":5: bus[0].media: unknown scheme"), "{e}");
        assert!(e.contains(":7: bus[1].id: duplicate bus id"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300ms").unwrap(), Duration::from_millis(300));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("fast").is_err());
    }
}

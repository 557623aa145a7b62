//! Gurux's DLMS/COSEM client (gurux-dlms 1.0.203 from PyPI, an independent implementation, driven by
//! tests/peers/gurux_dlms_client.py) reads the simulated DLMS meter over HDLC-over-TCP and the TCP wrapper,
//! as the public client (no authentication), with low level security (password) and with HLS-GMAC and
//! glo-ciphering: energy register, a voltage with its scaler and unit, the clock and two hours of the load
//! profile, all checked against the meter's model. Wrong secrets and replayed invocation counters are refused.
//!
//! The Python comes from $AMI_PYTHON or the repo's .venv (tests/run.sh creates it); a missing one fails the
//! test, so the interop check can never pass by not running.

use std::path::PathBuf;
use std::process::Output;

use ami_protocols::dlms::security::Keys;
use ami_sim::dlms::{spawn_tcp, DlmsFraming, DlmsMeter, DlmsMeterSpec, SAP_HLS, SAP_LLS, SAP_PUBLIC};
use json::Json;

/// Secrets unlike the Green Book defaults, so a test passes only when the configured ones are used.
const PASSWORD: &str = "Lls-8642";
const BLOCK_KEY: [u8; 16] = *b"ami-test-EK-0001";
const AUTH_KEY: [u8; 16] = *b"ami-test-AK-0001";
/// The client's system title (Gurux sends it as calling-AP-title and uses it as its IV).
const CLIENT_TITLE: &str = "4755525800000001";
/// The meter's serial; its HDLC physical address is 0x10 + serial % 100 = 0x17.
const SERIAL: u32 = 20_260_007;
/// Capture period of the load profile, s.
const PERIOD: i64 = 900;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python with gurux-dlms: $AMI_PYTHON, else the repo's .venv; panics with advice when missing.
fn python() -> PathBuf {
    let p = std::env::var_os("AMI_PYTHON").map(PathBuf::from).unwrap_or_else(|| repo().join(".venv/bin/python"));
    assert!(p.exists(), "no Python with gurux-dlms at {}: run ./tests/run.sh (it creates .venv)", p.display());
    p
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

fn iso(unix: i64) -> String {
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm), UTC.
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

fn meter() -> DlmsMeter {
    DlmsMeter::new(DlmsMeterSpec {
        password: PASSWORD.as_bytes().to_vec(),
        keys: Keys { block_cipher_key: BLOCK_KEY, authentication_key: AUTH_KEY },
        ..DlmsMeterSpec::for_serial(SERIAL)
    })
}

#[derive(Clone, Copy, Debug)]
enum Auth {
    None,
    Low,
    HighGmac,
}

/// One run of the Gurux client: how it connects, and what it reads.
struct Gurux {
    framing: DlmsFraming,
    auth: Auth,
    password: String,
    block_key: [u8; 16],
    auth_key: [u8; 16],
    invocation_counter: u32,
    args: Vec<String>,
}

impl Gurux {
    fn new(framing: DlmsFraming, auth: Auth) -> Self {
        Gurux {
            framing,
            auth,
            password: PASSWORD.into(),
            block_key: BLOCK_KEY,
            auth_key: AUTH_KEY,
            invocation_counter: 1,
            args: Vec::new(),
        }
    }

    fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    /// Runs the script against the meter at `port` (blocking: call from spawn_blocking).
    fn run(&self, meter: &DlmsMeter, port: u16) -> Output {
        let spec = meter.spec();
        let mut cmd = std::process::Command::new(python());
        cmd.arg(repo().join("tests/peers/gurux_dlms_client.py")).args(["--port", &port.to_string()]);
        match self.framing {
            DlmsFraming::Hdlc => cmd.args([
                "--framing".to_string(),
                "hdlc".into(),
                "--server-address".into(),
                format!("{}/{}", spec.server_logical, spec.server_physical),
            ]),
            // The wrapper addresses the logical device by its wPort.
            DlmsFraming::Wrapper => cmd.args([
                "--framing".to_string(),
                "wrapper".into(),
                "--server-address".into(),
                spec.server_logical.to_string(),
            ]),
        };
        let (sap, auth) = match self.auth {
            Auth::None => (SAP_PUBLIC, "none"),
            Auth::Low => (SAP_LLS, "low"),
            Auth::HighGmac => (SAP_HLS, "high-gmac"),
        };
        cmd.args(["--client-address", &sap.to_string(), "--auth", auth, "--timeout", "5"]);
        match self.auth {
            Auth::None => {}
            Auth::Low => {
                cmd.args(["--password", &self.password]);
            }
            Auth::HighGmac => {
                cmd.args(["--system-title", CLIENT_TITLE, "--block-key", &hex(&self.block_key)]);
                cmd.args(["--auth-key", &hex(&self.auth_key)]);
                cmd.args(["--invocation-counter", &self.invocation_counter.to_string()]);
            }
        }
        cmd.args(&self.args).output().expect("start the Gurux client script")
    }
}

/// Starts a meter on 127.0.0.1:0 with `framing`, runs `gurux` against it, and returns the meter, the meter
/// time just before and just after the run, and the script's output.
async fn run(framing: DlmsFraming, gurux: Gurux) -> (DlmsMeter, i64, i64, Output) {
    let meter = meter();
    let (addr, server) = spawn_tcp("127.0.0.1:0", meter.clone(), framing).await.expect("bind the simulator");
    let m = meter.clone();
    let before = meter.now();
    let out = tokio::task::spawn_blocking(move || gurux.run(&m, addr.port())).await.unwrap();
    let after = meter.now();
    server.abort();
    (meter, before, after, out)
}

fn success(out: &Output) -> Json {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the Gurux client failed ({}): {stderr}", out.status);
    let stdout = String::from_utf8_lossy(&out.stdout);
    Json::parse(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// The energy register, a voltage, the clock and a 2-hour load profile range, all in one association.
fn full_read(framing: DlmsFraming, auth: Auth, start: i64) -> Gurux {
    Gurux::new(framing, auth)
        .arg("--read")
        .arg("1-0:1.8.0:3")
        .arg("--read")
        .arg("1-0:32.7.0:3")
        .arg("--clock")
        .arg("--profile")
        .arg("1-0:99.1.0")
        .arg("--from")
        .arg(iso(start))
        // The user's "two hours from `start`" is [start, start + 2 h); the selective access range is inclusive
        // at both ends, so it ends one second before the next boundary.
        .arg("--to")
        .arg(iso(start + 2 * 3600 - 1))
}

/// A range start on a period boundary a few hours back, so every entry of the range is already captured.
fn profile_start() -> i64 {
    let now = meter().now();
    now.div_euclid(PERIOD) * PERIOD - 5 * 3600
}

/// Checks what `full_read` printed against the meter's model.
fn check_full_read(meter: &DlmsMeter, before: i64, after: i64, start: i64, out: &Json) {
    // Energy: register 1-0:1.8.0 holds the whole Wh of the model at the moment the meter answered, which lies
    // between `before` and `after` (meter clock, seconds); the model is monotonic, so the value must lie
    // between the model's values at those instants. No other tolerance is needed.
    let e = out.at("registers").at("1-0:1.8.0");
    assert_eq!(e.at("unit").i64(), 30, "unit Wh: {e:?}");
    assert_eq!(e.at("unit_symbol").str(), "Wh");
    let wh = e.at("value").f64();
    let (lo, hi) = (meter.register_values(before).0, meter.register_values(after).0);
    assert!(f64::from(lo) <= wh && wh <= f64::from(hi), "1.8.0 = {wh} Wh, model {lo}..={hi} Wh");

    // A voltage: long-unsigned tenths of a volt, scaler -1, unit V, near nominal.
    let v = out.at("registers").at("1-0:32.7.0");
    assert_eq!((v.at("scaler").i64(), v.at("unit").i64(), v.at("unit_symbol").str()), (-1, 35, "V"), "{v:?}");
    let raw = v.at("raw").i64();
    assert!((2000..=2600).contains(&raw), "voltage raw {raw}");
    assert!((v.at("value").f64() - raw as f64 / 10.0).abs() < 1e-9, "{v:?}");

    // Clock: the meter's own time (UTC, deviation present) at the moment of the read.
    let c = out.at("clock");
    let unix = c.at("unix").i64();
    assert!((before - 1..=after + 1).contains(&unix), "clock {unix}, meter time {before}..{after}");
    assert_eq!(c.at("deviation"), &Json::Bool(true), "{c:?}");

    // Load profile: 8 entries on 15-minute boundaries from `start`, each with the model's register values.
    let p = out.at("profile");
    let cols: Vec<&str> = p.at("columns").arr().iter().map(Json::str).collect();
    assert_eq!(cols, ["0.0.1.0.0.255:2", "1.0.1.8.0.255:2", "1.0.2.8.0.255:2"]);
    let rows = p.at("rows").arr();
    assert_eq!(rows.len(), 8, "{rows:?}");
    for (i, row) in rows.iter().enumerate() {
        let r = row.arr();
        let t = start + i as i64 * PERIOD;
        assert_eq!(r[0].i64(), t, "row {i}: {row:?}");
        let (import, export) = meter.register_values(t);
        assert_eq!((r[1].i64(), r[2].i64()), (i64::from(import), i64::from(export)), "row {i} at {}", iso(t));
    }
    let s = meter.stats();
    assert_eq!((s.associations, s.rejected), (1, 0), "{s:?}");
}

async fn reads_everything(framing: DlmsFraming, auth: Auth) {
    let start = profile_start();
    let (meter, before, after, out) = run(framing, full_read(framing, auth, start)).await;
    check_full_read(&meter, before, after, start, &success(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gurux_reads_over_hdlc_as_the_public_client() {
    reads_everything(DlmsFraming::Hdlc, Auth::None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gurux_reads_over_hdlc_with_a_password() {
    reads_everything(DlmsFraming::Hdlc, Auth::Low).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gurux_reads_over_hdlc_with_hls_gmac_and_ciphering() {
    reads_everything(DlmsFraming::Hdlc, Auth::HighGmac).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gurux_reads_over_the_wrapper_as_the_public_client() {
    reads_everything(DlmsFraming::Wrapper, Auth::None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gurux_reads_over_the_wrapper_with_a_password() {
    reads_everything(DlmsFraming::Wrapper, Auth::Low).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gurux_reads_over_the_wrapper_with_hls_gmac_and_ciphering() {
    reads_everything(DlmsFraming::Wrapper, Auth::HighGmac).await;
}

/// Yesterday's 96 entries (UTC day), ciphered, with a client max PDU of 256 bytes: the meter answers in GET
/// data blocks and Gurux reassembles them; every entry carries the model's values.
async fn reads_a_day_in_blocks(framing: DlmsFraming) {
    let day = meter().now().div_euclid(86_400) * 86_400 - 86_400;
    let g = Gurux::new(framing, Auth::HighGmac)
        .arg("--max-pdu")
        .arg("256")
        .arg("--profile")
        .arg("1-0:99.1.0")
        .arg("--from")
        .arg(iso(day))
        .arg("--to")
        .arg(iso(day + 86_399));
    let (meter, _, _, out) = run(framing, g).await;
    let out = success(&out);
    let rows = out.at("profile").at("rows").arr();
    assert_eq!(rows.len(), 96);
    for (i, row) in rows.iter().enumerate() {
        let t = day + i as i64 * PERIOD;
        let (import, export) = meter.register_values(t);
        let r = row.arr();
        assert_eq!((r[0].i64(), r[1].i64(), r[2].i64()), (t, i64::from(import), i64::from(export)), "row {i}");
    }
    let s = meter.stats();
    assert!(s.blocks_sent >= 8, "a 96-entry buffer in 256-byte PDUs needs several blocks: {s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gurux_reads_a_day_of_load_profile_in_ciphered_blocks_over_hdlc() {
    reads_a_day_in_blocks(DlmsFraming::Hdlc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gurux_reads_a_day_of_load_profile_in_ciphered_blocks_over_the_wrapper() {
    reads_a_day_in_blocks(DlmsFraming::Wrapper).await;
}

/// Gurux picks the HDLC server address width from the address: upper only (1 byte), and upper + a lower
/// (physical) address above 0x7F (2 + 2 bytes, 4 in all). The meter answers both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gurux_addresses_the_meter_with_one_and_four_byte_hdlc_server_addresses() {
    let meter = DlmsMeter::new(DlmsMeterSpec { server_physical: 0x1234, ..DlmsMeterSpec::for_serial(SERIAL) });
    let (addr, server) = spawn_tcp("127.0.0.1:0", meter.clone(), DlmsFraming::Hdlc).await.unwrap();
    for address in ["1", "1/0x1234"] {
        let port = addr.port();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(python())
                .arg(repo().join("tests/peers/gurux_dlms_client.py"))
                .args(["--port", &port.to_string(), "--framing", "hdlc", "--server-address", address])
                .args(["--client-address", "16", "--read", "1-0:1.8.0:3"])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let out = success(&out);
        assert_eq!(out.at("registers").at("1-0:1.8.0").at("unit").i64(), 30, "{address}");
    }
    assert_eq!(meter.stats().associations, 2);
    server.abort();
}

/// The script failed with a message, and the meter counted the refusal and accepted no association.
fn refused(meter: &DlmsMeter, out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "expected a refusal; stdout {}", String::from_utf8_lossy(&out.stdout));
    assert!(stderr.contains("gurux client:"), "{stderr}");
    let s = meter.stats();
    assert!(s.rejected >= 1 && s.associations == 0, "{s:?} / {stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_refused() {
    for framing in [DlmsFraming::Hdlc, DlmsFraming::Wrapper] {
        let mut g = Gurux::new(framing, Auth::Low).arg("--read").arg("1-0:1.8.0:3");
        g.password = "00000000".into();
        let (meter, _, _, out) = run(framing, g).await;
        let err = refused(&meter, &out);
        assert!(meter.stats().auth_failures >= 1, "{framing:?}: {:?} {err}", meter.stats());
        assert!(err.contains("AARQ/AARE"), "{framing:?}: refused in the association: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_keys_are_refused() {
    for (framing, wrong_ek) in [(DlmsFraming::Hdlc, true), (DlmsFraming::Wrapper, false)] {
        let mut g = Gurux::new(framing, Auth::HighGmac).arg("--read").arg("1-0:1.8.0:3");
        if wrong_ek {
            g.block_key[0] ^= 0x01;
        } else {
            g.auth_key[15] ^= 0x80;
        }
        let (meter, _, _, out) = run(framing, g).await;
        let err = refused(&meter, &out);
        assert!(out.stdout.is_empty(), "{framing:?}: printed a reading with wrong keys: {err}");
        assert!(meter.stats().deciphering_errors + meter.stats().auth_failures >= 1, "{:?}", meter.stats());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_invocation_counter_is_refused() {
    let meter = meter();
    let (addr, server) = spawn_tcp("127.0.0.1:0", meter.clone(), DlmsFraming::Hdlc).await.unwrap();
    let port = addr.port();
    let attempt = |ic: u32| {
        let m = meter.clone();
        let mut g = Gurux::new(DlmsFraming::Hdlc, Auth::HighGmac).arg("--read").arg("1-0:1.8.0:3");
        g.invocation_counter = ic;
        tokio::task::spawn_blocking(move || g.run(&m, port))
    };
    success(&attempt(1).await.unwrap());
    // The same counter again (a recorded session played back) is refused...
    let out = attempt(1).await.unwrap();
    assert_eq!(out.status.code(), Some(1), "replayed counter accepted");
    let s = meter.stats();
    assert!(s.replayed_counters >= 1 && s.associations == 1, "{s:?}");
    // ...and a client that moved its counter on is served again.
    success(&attempt(1000).await.unwrap());
    assert_eq!(meter.stats().associations, 2);
    server.abort();
}

/// The little JSON the Gurux script prints (this crate has no JSON dependency): objects, arrays, numbers, strings,
/// booleans and null, enough to read the script's one output object.
mod json {
    #[derive(Debug, Clone, PartialEq)]
    pub(crate) enum Json {
        Null,
        Bool(bool),
        Num(f64),
        Str(String),
        Arr(Vec<Json>),
        Obj(Vec<(String, Json)>),
    }

    impl Json {
        pub(crate) fn parse(text: &str) -> Result<Json, String> {
            let mut p = Parser { s: text.as_bytes(), i: 0 };
            let v = p.value()?;
            p.ws();
            if p.i != p.s.len() {
                return Err(format!("trailing bytes at {}", p.i));
            }
            Ok(v)
        }

        /// The member `key` of an object; panics with the document when missing (tests only).
        pub(crate) fn at(&self, key: &str) -> &Json {
            match self {
                Json::Obj(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
                _ => None,
            }
            .unwrap_or_else(|| panic!("no {key:?} in {self:?}"))
        }

        pub(crate) fn f64(&self) -> f64 {
            match self {
                Json::Num(n) => *n,
                _ => panic!("not a number: {self:?}"),
            }
        }

        pub(crate) fn i64(&self) -> i64 {
            let n = self.f64();
            assert!(n.fract() == 0.0, "not an integer: {n}");
            n as i64
        }

        pub(crate) fn str(&self) -> &str {
            match self {
                Json::Str(s) => s,
                _ => panic!("not a string: {self:?}"),
            }
        }

        pub(crate) fn arr(&self) -> &[Json] {
            match self {
                Json::Arr(a) => a,
                _ => panic!("not an array: {self:?}"),
            }
        }
    }

    struct Parser<'a> {
        s: &'a [u8],
        i: usize,
    }

    impl Parser<'_> {
        fn ws(&mut self) {
            while self.s.get(self.i).is_some_and(|b| b.is_ascii_whitespace()) {
                self.i += 1;
            }
        }

        fn eat(&mut self, lit: &str) -> Result<(), String> {
            if self.s[self.i..].starts_with(lit.as_bytes()) {
                self.i += lit.len();
                Ok(())
            } else {
                Err(format!("expected {lit} at {}", self.i))
            }
        }

        fn value(&mut self) -> Result<Json, String> {
            self.ws();
            match self.s.get(self.i).copied() {
                Some(b'{') => {
                    self.i += 1;
                    let mut m = Vec::new();
                    self.ws();
                    if self.s.get(self.i) == Some(&b'}') {
                        self.i += 1;
                        return Ok(Json::Obj(m));
                    }
                    loop {
                        self.ws();
                        let k = self.string()?;
                        self.ws();
                        self.eat(":")?;
                        m.push((k, self.value()?));
                        self.ws();
                        if self.eat(",").is_err() {
                            self.eat("}")?;
                            return Ok(Json::Obj(m));
                        }
                    }
                }
                Some(b'[') => {
                    self.i += 1;
                    let mut a = Vec::new();
                    self.ws();
                    if self.s.get(self.i) == Some(&b']') {
                        self.i += 1;
                        return Ok(Json::Arr(a));
                    }
                    loop {
                        a.push(self.value()?);
                        self.ws();
                        if self.eat(",").is_err() {
                            self.eat("]")?;
                            return Ok(Json::Arr(a));
                        }
                    }
                }
                Some(b'"') => Ok(Json::Str(self.string()?)),
                Some(b't') => self.eat("true").map(|()| Json::Bool(true)),
                Some(b'f') => self.eat("false").map(|()| Json::Bool(false)),
                Some(b'n') => self.eat("null").map(|()| Json::Null),
                Some(_) => {
                    let start = self.i;
                    while self.s.get(self.i).is_some_and(|b| b"+-.eE0123456789".contains(b)) {
                        self.i += 1;
                    }
                    let t = std::str::from_utf8(&self.s[start..self.i]).map_err(|e| e.to_string())?;
                    t.parse().map(Json::Num).map_err(|e| format!("bad number {t:?}: {e}"))
                }
                None => Err("unexpected end".into()),
            }
        }

        fn string(&mut self) -> Result<String, String> {
            self.eat("\"")?;
            let mut out = String::new();
            loop {
                let b = *self.s.get(self.i).ok_or("unterminated string")?;
                self.i += 1;
                match b {
                    b'"' => return Ok(out),
                    b'\\' => {
                        let e = *self.s.get(self.i).ok_or("unterminated escape")?;
                        self.i += 1;
                        match e {
                            b'u' => {
                                let h = self.s.get(self.i..self.i + 4).ok_or("short \\u escape")?;
                                let c = u32::from_str_radix(std::str::from_utf8(h).map_err(|e| e.to_string())?, 16)
                                    .map_err(|e| e.to_string())?;
                                out.push(char::from_u32(c).unwrap_or('\u{fffd}'));
                                self.i += 4;
                            }
                            b'n' => out.push('\n'),
                            b't' => out.push('\t'),
                            b'r' => out.push('\r'),
                            b'b' => out.push('\u{8}'),
                            b'f' => out.push('\u{c}'),
                            other => out.push(other as char),
                        }
                    }
                    _ => {
                        // Copy a whole UTF-8 sequence.
                        let start = self.i - 1;
                        while self.s.get(self.i).is_some_and(|b| (b & 0xC0) == 0x80) {
                            self.i += 1;
                        }
                        out.push_str(std::str::from_utf8(&self.s[start..self.i]).map_err(|e| e.to_string())?);
                    }
                }
            }
        }
    }
}

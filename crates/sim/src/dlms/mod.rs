//! A simulated DLMS/COSEM electricity meter (IEC 62056-5-3 application layer, Blue Book DLMS UA 1000-1
//! interface classes, Green Book DLMS UA 1000-2 security suite 0) served over HDLC (IEC 62056-46, with the
//! optional IEC 62056-21 mode E opening) or the TCP wrapper (IEC 62056-47).
//!
//! This module owns the meter side of the wire:
//! - [`DlmsMeterSpec`] describes a meter (addresses, system title, secrets, model seed, profile depth);
//!   [`DlmsMeter`] is its shared state (clock offset, relay, invocation counters, [`DlmsSimStats`]), cheap
//!   to clone and shared by every connection;
//! - [`serve_tcp`] / [`spawn_tcp`] serve many clients over TCP, [`serve_stream`] one byte stream (a pty, a
//!   serial port: [`serve_serial`]), both through the simulator drivers of this crate.
//!
//! Behaviour (what a client sees):
//! - Client SAPs (HDLC client address, or the wrapper's source wPort): `0x10` public client, no
//!   authentication, read-only; `0x20` low level security with [`DlmsMeterSpec::password`]; `0x30`
//!   HLS-GMAC (mechanism 5) with glo-ciphering mandatory (application context LN with ciphering, the
//!   InitiateRequest as glo-initiate-request, then glo-get/set/action or general-glo-ciphering). Any other
//!   SAP is refused in the AARE. A wrong password or f(CtoS), a wrong GCM tag or a client invocation
//!   counter that does not increase is refused (AARE diagnostic 13 authentication-failure, an exception
//!   response, or action result read-write-denied) and counted in [`DlmsSimStats`].
//! - Objects: clock, serial number, logical device name, registers 1.8.x/2.8.x (Wh), instantaneous
//!   power/voltage/current/frequency (with scalers), maximum demand (extended register), current demand
//!   (demand register), the 15-minute load profile 1-0:99.1.0 generated lazily from the deterministic
//!   model ([`DlmsMeter::energy_import_wh`]), disconnect control and the current association with its
//!   object list (see `objects` for the list).
//! - Services: GET normal / next (data blocks sized by the client's max receive PDU) / with list, SET
//!   normal, ACTION normal; unknown objects answer object-undefined; undecodable APDUs an exception
//!   response.
//!
//! Panic contract: no byte sequence from a client panics anything here; bad frames are resynchronised
//! (counted as garbage), bad APDUs get exception responses.

mod link;
mod model;
mod objects;
mod server;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ami_media::SerialSettings;
use ami_protocols::dlms::security::Keys;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use self::link::DlmsSession;
use self::model::{wh_u32, Model};
use crate::drive::{self, connection_seed, TCP_STALE_PARTIAL};

/// The Green Book / Gurux test block cipher key `000102030405060708090A0B0C0D0E0F`.
pub const DEFAULT_BLOCK_CIPHER_KEY: [u8; 16] =
    [0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F];
/// The Green Book / Gurux test authentication key `D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF`.
pub const DEFAULT_AUTHENTICATION_KEY: [u8; 16] =
    [0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA, 0xDB, 0xDC, 0xDD, 0xDE, 0xDF];
/// The default LLS password.
pub const DEFAULT_PASSWORD: &[u8] = b"00000000";

/// Client SAP of the public client (no authentication, read-only).
pub const SAP_PUBLIC: u16 = 0x10;
/// Client SAP of the low level security (password) client.
pub const SAP_LLS: u16 = 0x20;
/// Client SAP of the HLS-GMAC client (glo-ciphering mandatory).
pub const SAP_HLS: u16 = 0x30;

/// A simulated DLMS meter. Defaults in each field's doc.
#[derive(Clone)]
pub struct DlmsMeterSpec {
    /// Serial number (COSEM 0.0.96.1.0.255, visible-string of 8 digits). Default 12345678.
    pub serial: u32,
    /// Upper HDLC address / server wPort: the logical device. Default 1 (management logical device).
    pub server_logical: u16,
    /// Lower HDLC address: the physical device (`0..=0x3FFF`). Default `0x10 + serial % 100`.
    pub server_physical: u16,
    /// The meter's system title (responding-AP-title, IV of everything it ciphers). Default `"AMI"`, 0,
    /// then the serial big-endian.
    pub system_title: [u8; 8],
    /// LLS secret of client SAP 0x20. Default `b"00000000"`. Redacted in `Debug`.
    pub password: Vec<u8>,
    /// HLS-GMAC and glo-ciphering keys. Default the Green Book test keys (EK `000102…0F`, AK `D0D1…DF`).
    pub keys: Keys,
    /// Load profile capture period, seconds (must divide a day; 0 counts as 900). Default 900.
    pub period_s: u32,
    /// Days of load profile history the meter holds. Default 92.
    pub history_days: u32,
    /// Seed of the deterministic model (each seed is another household). Default the serial number.
    pub seed: u64,
    /// The meter clock's offset from system time, seconds, at start. Default 0.
    pub clock_offset_s: i64,
    /// Server max receive PDU size (InitiateResponse); replies are bounded by the client's max receive PDU
    /// (GET data blocks beyond it). Default 1024.
    pub max_pdu: u16,
}

impl DlmsMeterSpec {
    /// The default spec for meter `serial`: physical address `0x10 + serial % 100`, system title `AMI`, 0,
    /// serial.
    pub fn for_serial(serial: u32) -> Self {
        let s = serial.to_be_bytes();
        Self {
            serial,
            server_logical: 1,
            // serial % 100 < 100, so the sum fits easily.
            server_physical: 0x10 + (serial % 100) as u16,
            system_title: [b'A', b'M', b'I', 0, s[0], s[1], s[2], s[3]],
            password: DEFAULT_PASSWORD.to_vec(),
            keys: Keys { block_cipher_key: DEFAULT_BLOCK_CIPHER_KEY, authentication_key: DEFAULT_AUTHENTICATION_KEY },
            period_s: 900,
            history_days: 92,
            seed: u64::from(serial),
            clock_offset_s: 0,
            max_pdu: 1024,
        }
    }
}

impl Default for DlmsMeterSpec {
    fn default() -> Self {
        Self::for_serial(12_345_678)
    }
}

impl fmt::Debug for DlmsMeterSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DlmsMeterSpec")
            .field("serial", &self.serial)
            .field("server_logical", &self.server_logical)
            .field("server_physical", &self.server_physical)
            .field("system_title", &self.system_title)
            .field("password", &"<redacted>")
            .field("keys", &self.keys)
            .field("period_s", &self.period_s)
            .field("history_days", &self.history_days)
            .field("seed", &self.seed)
            .field("clock_offset_s", &self.clock_offset_s)
            .field("max_pdu", &self.max_pdu)
            .finish()
    }
}

/// How APDUs travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DlmsFraming {
    /// HDLC (IEC 62056-46), server address `server_logical`/`server_physical` in any width.
    Hdlc,
    /// The TCP wrapper (IEC 62056-47): server wPort `server_logical`, client wPort = client SAP.
    Wrapper,
}

/// Seeded fault injection of a DLMS server (like the other simulators).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DlmsFaults {
    /// Wait before each reply frame is written (a slow meter). Default 0.
    pub delay: Duration,
    /// Drop every n-th reply frame of a connection (`Some(3)`: the 3rd, 6th, …); the request is still
    /// processed, so a client retrying the same frame gets the reply again (HDLC re-sends its last frame).
    /// `None` or `Some(0)`: never. Default `None`.
    pub drop_every_nth: Option<u32>,
}

/// Counters of a simulated DLMS meter, over all its connections.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DlmsSimStats {
    /// Connections served.
    pub connections: u64,
    /// Associations accepted (HLS-GMAC: counted when pass 4 succeeded).
    pub associations: u64,
    /// Everything refused for security reasons: the sum of the next three.
    pub rejected: u64,
    /// Wrong password, wrong f(StoC), missing or wrong mechanism for the client SAP.
    pub auth_failures: u64,
    /// Ciphered APDUs whose GCM tag did not verify (or that could not be deciphered).
    pub deciphering_errors: u64,
    /// Ciphered APDUs (or HLS replies) whose client invocation counter did not increase.
    pub replayed_counters: u64,
    /// xDLMS requests answered (GET, GET next, SET, ACTION).
    pub requests: u64,
    /// GET data blocks sent.
    pub blocks_sent: u64,
    /// Exception responses sent (garbage, services not allowed).
    pub exceptions: u64,
    /// Bytes dropped while resynchronising on frames.
    pub garbage_bytes: u64,
    /// Reply frames dropped by fault injection.
    pub dropped: u64,
    /// Clock settings accepted.
    pub clock_sets: u64,
    /// Disconnect control methods executed.
    pub relay_operations: u64,
}

/// The mutable state of a meter, shared by its connections.
#[derive(Debug)]
struct State {
    clock_offset_s: i64,
    /// Disconnect control state: 0 disconnected, 1 connected, 2 ready for reconnection.
    control_state: u8,
    /// The meter's own invocation counter (last value used).
    server_ic: u32,
    /// The last invocation counter seen per client system title.
    client_ic: std::collections::HashMap<[u8; 8], u32>,
    stats: DlmsSimStats,
    faults: DlmsFaults,
    /// Connections opened so far (seeds the HLS challenges).
    opened: u64,
}

#[derive(Debug)]
struct Inner {
    spec: DlmsMeterSpec,
    model: Model,
    state: Mutex<State>,
}

/// A simulated DLMS meter: the spec, the model and the state every connection shares (see the module
/// doc). Cheap to clone.
#[derive(Debug, Clone)]
pub struct DlmsMeter {
    inner: Arc<Inner>,
}

/// System time, Unix seconds.
fn system_now() -> i64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(now.as_secs()).unwrap_or(i64::MAX)
}

impl DlmsMeter {
    /// A meter from `spec` (clock offset from `spec.clock_offset_s`, relay connected, counters zero).
    pub fn new(spec: DlmsMeterSpec) -> Self {
        let state = State {
            clock_offset_s: spec.clock_offset_s,
            control_state: 1,
            server_ic: 0,
            client_ic: std::collections::HashMap::new(),
            stats: DlmsSimStats::default(),
            faults: DlmsFaults::default(),
            opened: 0,
        };
        let model = Model::new(spec.seed);
        Self { inner: Arc::new(Inner { spec, model, state: Mutex::new(state) }) }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves at worst a counter stale; keep serving.
        self.inner.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The spec this meter was made from.
    pub fn spec(&self) -> &DlmsMeterSpec {
        &self.inner.spec
    }

    /// The meter's clock, Unix seconds: system time plus the clock offset.
    pub fn now(&self) -> i64 {
        system_now().saturating_add(self.state().clock_offset_s)
    }

    /// What register 1-0:1.8.0 and the load profile hold at Unix time `unix` (meter time), Wh, before
    /// truncation to whole Wh: a closed formula of `unix` and the seed, monotonic, independent of the clock
    /// offset.
    pub fn energy_import_wh(&self, unix: i64) -> f64 {
        self.inner.model.import_wh(unix)
    }

    /// What register 1-0:2.8.0 and the load profile hold at `unix`, Wh (see
    /// [`DlmsMeter::energy_import_wh`]).
    pub fn energy_export_wh(&self, unix: i64) -> f64 {
        self.inner.model.export_wh(unix)
    }

    /// The whole-Wh values the registers 1.8.0 and 2.8.0 and the profile columns carry at `unix`.
    pub fn register_values(&self, unix: i64) -> (u32, u32) {
        (wh_u32(self.energy_import_wh(unix)), wh_u32(self.energy_export_wh(unix)))
    }

    /// Whether the disconnect control's output is connected (`output_state`).
    pub fn relay_connected(&self) -> bool {
        self.state().control_state == 1
    }

    /// Sets the clock offset from system time, seconds (what a client's clock SET does).
    pub fn set_clock_offset(&self, s: i64) {
        self.state().clock_offset_s = s;
    }

    /// The clock offset from system time, seconds.
    pub fn clock_offset(&self) -> i64 {
        self.state().clock_offset_s
    }

    /// Replaces the fault injection: the drop rate of connections opened from now on, the reply delay of
    /// servers started from now on ([`serve_tcp`], [`serve_stream`], …).
    pub fn set_faults(&self, faults: DlmsFaults) {
        self.state().faults = faults;
    }

    /// The counters so far.
    pub fn stats(&self) -> DlmsSimStats {
        self.state().stats.clone()
    }

    /// The load profile's timestamps at meter time `now`: (oldest, newest, number of entries). Entries are
    /// on multiples of the capture period.
    pub fn profile_span(&self, now: i64) -> (i64, i64, u32) {
        let period = i64::from(self.period_s());
        let entries = self.profile_entries();
        let newest = now.div_euclid(period) * period;
        let oldest = newest - (i64::from(entries) - 1).max(0) * period;
        (oldest, newest, entries)
    }

    /// The capture period in force (0 in the spec counts as 900).
    fn period_s(&self) -> u32 {
        match self.inner.spec.period_s {
            0 => 900,
            p => p,
        }
    }

    /// Profile depth in entries.
    fn profile_entries(&self) -> u32 {
        let per_day = (86_400 / self.period_s()).max(1);
        self.inner.spec.history_days.saturating_mul(per_day).max(1)
    }

    fn model(&self) -> &Model {
        &self.inner.model
    }

    fn count(&self, f: impl FnOnce(&mut DlmsSimStats)) {
        f(&mut self.state().stats);
    }

    /// The next value of the meter's own invocation counter.
    fn next_server_ic(&self) -> u32 {
        let mut state = self.state();
        state.server_ic = state.server_ic.saturating_add(1);
        state.server_ic
    }

    /// Accepts `ic` from client `title` when it is greater than every value seen from it before.
    fn accept_client_ic(&self, title: [u8; 8], ic: u32) -> bool {
        let mut state = self.state();
        match state.client_ic.get(&title) {
            Some(&last) if ic <= last => false,
            _ => {
                state.client_ic.insert(title, ic);
                true
            }
        }
    }

    fn set_control_state(&self, s: u8) {
        let mut state = self.state();
        state.control_state = s;
        state.stats.relay_operations = state.stats.relay_operations.saturating_add(1);
    }

    fn control_state(&self) -> u8 {
        self.state().control_state
    }

    /// Counts a new connection; returns its seed and fault settings.
    fn open_connection(&self) -> (u64, DlmsFaults) {
        let mut state = self.state();
        state.opened = state.opened.wrapping_add(1);
        state.stats.connections = state.stats.connections.saturating_add(1);
        (connection_seed(self.inner.spec.seed, state.opened), state.faults.clone())
    }
}

/// Serves `meter` on every connection `listener` accepts (one task each), with `framing`. Runs until
/// dropped or aborted; returns an error only after 100 accept failures in a row.
pub async fn serve_tcp(listener: TcpListener, meter: DlmsMeter, framing: DlmsFraming) -> io::Result<()> {
    let delay = meter.state().faults.delay;
    drive::serve_listener(listener, meter.inner.spec.seed, delay, |_, peer| {
        DlmsSession::new(meter.clone(), framing, false, peer.to_string())
    })
    .await
}

/// Binds `addr` (e.g. `127.0.0.1:0`) and serves `meter` there on a new task. Returns the bound address and
/// the task (abort it to stop the server and its connections).
pub async fn spawn_tcp(
    addr: &str,
    meter: DlmsMeter,
    framing: DlmsFraming,
) -> io::Result<(SocketAddr, JoinHandle<io::Result<()>>)> {
    drive::spawn_listener(addr, |listener| serve_tcp(listener, meter, framing)).await
}

/// Serves `meter` on one byte stream (a pty, a serial port, an in-memory duplex) until end of stream or an
/// I/O error. With `mode_e` the meter first answers an IEC 62056-21 sign-on (`/?!`) with its
/// identification and waits for the acknowledgement before HDLC (a client that starts with HDLC directly
/// is served too), and after every DISC it waits for the next sign-on again, as an optical port does. A
/// partial frame is discarded after 1 s of silence.
pub async fn serve_stream<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    meter: DlmsMeter,
    framing: DlmsFraming,
    mode_e: bool,
) -> io::Result<()> {
    let delay = meter.state().faults.delay;
    let session = DlmsSession::new(meter, framing, mode_e, "stream".to_string());
    drive::drive(stream, session, delay, TCP_STALE_PARTIAL).await
}

/// Opens the serial device or pty at `path` with `settings` and serves `meter` there (see
/// [`serve_stream`]). Returns when the device reports an error or end of file.
pub async fn serve_serial(
    path: &str,
    settings: &SerialSettings,
    meter: DlmsMeter,
    framing: DlmsFraming,
    mode_e: bool,
) -> io::Result<()> {
    let delay = meter.state().faults.delay;
    drive::serve_port(
        path,
        settings,
        meter.inner.spec.seed,
        delay,
        drive::serial_stale_partial(settings, 30),
        |_, p| DlmsSession::new(meter, framing, mode_e, p),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_secrets() {
        let spec = DlmsMeterSpec { password: b"hunter22".to_vec(), ..DlmsMeterSpec::default() };
        let shown = format!("{spec:?}");
        assert!(!shown.contains("hunter22") && !shown.contains("104, 117"), "{shown}");
        assert!(shown.contains("<redacted>"));
        let meter = DlmsMeter::new(spec);
        assert!(!format!("{meter:?}").contains("hunter22"));
    }

    #[test]
    fn defaults_follow_the_serial() {
        let spec = DlmsMeterSpec::for_serial(87_654_321);
        assert_eq!(spec.server_physical, 0x10 + 21);
        assert_eq!(&spec.system_title[..3], b"AMI");
        assert_eq!(
            u32::from_be_bytes([
                spec.system_title[4],
                spec.system_title[5],
                spec.system_title[6],
                spec.system_title[7]
            ]),
            87_654_321
        );
        let d = DlmsMeterSpec::default();
        assert_eq!((d.serial, d.server_logical, d.period_s, d.history_days, d.max_pdu), (12_345_678, 1, 900, 92, 1024));
    }

    #[test]
    fn history_does_not_depend_on_the_clock_offset() {
        let a = DlmsMeter::new(DlmsMeterSpec { clock_offset_s: 0, ..DlmsMeterSpec::default() });
        let b = DlmsMeter::new(DlmsMeterSpec { clock_offset_s: -86_400, ..DlmsMeterSpec::default() });
        let t = 1_767_225_600;
        assert_eq!(a.energy_import_wh(t).to_bits(), b.energy_import_wh(t).to_bits());
        assert!(b.now() < a.now() - 86_000);
        let (oldest, newest, n) = a.profile_span(t + 1000);
        assert_eq!(newest, t + 900);
        assert_eq!(n, 92 * 96);
        assert_eq!(newest - oldest, (i64::from(n) - 1) * 900);
    }
}

//! Serving simulated meters: the shared [`Simulator`], the sans-IO server [`Session`] (deframing, unit
//! filtering, fault injection) and the async drivers for TCP listeners and serial ports.
//!
//! A [`Session`] is one server-side connection without I/O: feed it received bytes with
//! [`Session::handle_input`], take replies with [`Session::poll_transmit`], tell it about line silence with
//! [`Session::handle_silence`]. The drivers only pump: read, feed, wait the reply delay, write; that pump,
//! the TCP accept loop and serial-port opening are shared with the M-Bus servers (`crate::drive`).
//!
//! RTU framing resynchronises on garbage or a bad CRC by dropping one byte at a time (the dropped bytes are
//! counted and logged once per episode) and silently skips well-formed requests for units it does not serve
//! (several meters share an RS-485 line). MBAP framing has no way to resynchronise: a bad header closes the
//! connection, as Modbus TCP servers do.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ami_link::modbus::{decode_tcp_frame, encode_rtu, encode_tcp, RtuRequestDeframer};
use ami_media::{MediaUrl, SerialSettings};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::drive::{self, connection_seed, GarbageLog, SimSession, TCP_STALE_PARTIAL};
use crate::{SimError, SimMeter};

/// Unit address 0: an RTU broadcast (writes only, never answered).
const BROADCAST: u8 = 0;
/// Bytes kept while waiting for a frame; more than any Modbus ADU (RTU 256, MBAP 260) plus slack.
pub(crate) const MAX_BUFFER: usize = 1024;
/// Partial-frame discard time on serial lines, in tenths of a character: 3.5 characters (Modbus over
/// serial line V1.02, 2.5.1.1).
const SERIAL_STALE_PARTIAL_TENTHS: u64 = 35;

/// Which ADU the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SimFraming {
    /// RTU: `unit | PDU | CRC-16/MODBUS` (serial lines, and RTU over TCP like a transparent gateway).
    Rtu,
    /// Modbus TCP: MBAP header `transaction | protocol 0 | length | unit`, then the PDU. The default.
    #[default]
    Tcp,
}

impl SimFraming {
    /// The framing a media URL implies: serial lines speak RTU; `tcp://…?framing=rtu` is RTU over TCP;
    /// any other TCP URL is Modbus TCP.
    pub fn for_url(url: &MediaUrl) -> SimFraming {
        match url {
            MediaUrl::Serial { .. } => SimFraming::Rtu,
            MediaUrl::Tcp { .. } if url.framing() == Some("rtu") => SimFraming::Rtu,
            MediaUrl::Tcp { .. } => SimFraming::Tcp,
        }
    }
}

/// `rtu` or `tcp`.
impl std::str::FromStr for SimFraming {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "rtu" => Ok(SimFraming::Rtu),
            "tcp" => Ok(SimFraming::Tcp),
            other => Err(format!("unknown framing {other:?} (expected rtu or tcp)")),
        }
    }
}

/// How a server answers: framing, which units, and seeded fault injection.
#[derive(Debug, Clone, PartialEq)]
pub struct SimOptions {
    /// Framing. Default [`SimFraming::Tcp`].
    pub framing: SimFraming,
    /// Unit addresses this server answers; requests for any other unit get no reply at all (RTU and TCP
    /// alike). Empty (the default) answers every meter of the [`Simulator`].
    pub units: Vec<u8>,
    /// Wait before each reply is written (a slow meter; a delay beyond the master's timeout makes late
    /// replies, which are still sent). Default 0.
    pub delay: Duration,
    /// Probability (0..=1) that a reply is silently not sent. Default 0.
    pub drop_rate: f64,
    /// Probability (0..=1) that one byte of a reply is corrupted: any byte of an RTU frame (its CRC then
    /// fails), a PDU byte of an MBAP frame. Default 0.
    pub corrupt_rate: f64,
    /// Seed of the fault injection. Default 0.
    pub seed: u64,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            framing: SimFraming::Tcp,
            units: Vec::new(),
            delay: Duration::ZERO,
            drop_rate: 0.0,
            corrupt_rate: 0.0,
            seed: 0,
        }
    }
}

/// Counters of a [`Simulator`], summed over every server and connection sharing it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Requests for a served unit that were handled (answered, dropped or broadcast).
    pub requests: u64,
    /// Replies queued for sending, corrupted ones included.
    pub replies: u64,
    /// Of those requests, replies that were exceptions.
    pub exceptions: u64,
    /// Replies silently dropped by fault injection.
    pub dropped: u64,
    /// Replies corrupted by fault injection.
    pub corrupted: u64,
    /// Well-formed requests for units this server does not answer (ignored silently).
    pub ignored: u64,
    /// Bytes dropped while resynchronising (garbage, bad CRC, stale partial frames).
    pub garbage_bytes: u64,
    /// Connections accepted (TCP) or ports opened (serial).
    pub connections: u64,
}

#[derive(Debug, Default)]
struct StatCells {
    requests: AtomicU64,
    replies: AtomicU64,
    exceptions: AtomicU64,
    dropped: AtomicU64,
    corrupted: AtomicU64,
    ignored: AtomicU64,
    garbage_bytes: AtomicU64,
    connections: AtomicU64,
}

impl StatCells {
    fn add(cell: &AtomicU64, n: u64) {
        cell.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self) -> SimStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SimStats {
            requests: get(&self.requests),
            replies: get(&self.replies),
            exceptions: get(&self.exceptions),
            dropped: get(&self.dropped),
            corrupted: get(&self.corrupted),
            ignored: get(&self.ignored),
            garbage_bytes: get(&self.garbage_bytes),
            connections: get(&self.connections),
        }
    }
}

#[derive(Debug)]
struct Shared {
    meters: Mutex<HashMap<u8, SimMeter>>,
    start: Instant,
    /// Time added by [`Simulator::advance`].
    skew: Mutex<Duration>,
    stats: StatCells,
}

/// The meters of one simulated line, by unit address, shared by every server (a cheap clonable handle).
///
/// Its clock is `tokio::time::Instant` since creation plus whatever [`Simulator::advance`] added, so tests
/// can use `tokio::time::pause()` or jump ahead. Every access first brings the meter up to that clock.
#[derive(Debug, Clone)]
pub struct Simulator {
    shared: Arc<Shared>,
}

impl Default for Simulator {
    fn default() -> Self {
        Self::new()
    }
}

impl Simulator {
    /// A line with no meters.
    pub fn new() -> Self {
        Simulator {
            shared: Arc::new(Shared {
                meters: Mutex::new(HashMap::new()),
                start: Instant::now(),
                skew: Mutex::new(Duration::ZERO),
                stats: StatCells::default(),
            }),
        }
    }

    /// A line with one meter at `unit`.
    pub fn single(unit: u8, meter: SimMeter) -> Self {
        let sim = Self::new();
        sim.insert(unit, meter);
        sim
    }

    fn meters(&self) -> MutexGuard<'_, HashMap<u8, SimMeter>> {
        // A panic while holding the lock cannot leave a meter half-updated in a way that matters to a
        // simulator; keep serving.
        self.shared.meters.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds (or replaces) the meter at `unit`, returning the previous one. Its clock starts now.
    pub fn insert(&self, unit: u8, mut meter: SimMeter) -> Option<SimMeter> {
        meter.update(self.elapsed());
        self.meters().insert(unit, meter)
    }

    /// Removes the meter at `unit` (it then stays silent, like a dead meter).
    pub fn remove(&self, unit: u8) -> Option<SimMeter> {
        self.meters().remove(&unit)
    }

    /// Unit addresses with a meter, ascending.
    pub fn units(&self) -> Vec<u8> {
        let mut units: Vec<u8> = self.meters().keys().copied().collect();
        units.sort_unstable();
        units
    }

    /// The simulator's clock: time since creation plus [`Simulator::advance`]s.
    pub fn elapsed(&self) -> Duration {
        let skew = *self.shared.skew.lock().unwrap_or_else(|p| p.into_inner());
        self.shared.start.elapsed().saturating_add(skew)
    }

    /// Moves the simulated clock forward by `by` (counters grow as if that time had passed).
    pub fn advance(&self, by: Duration) {
        let mut skew = self.shared.skew.lock().unwrap_or_else(|p| p.into_inner());
        *skew = skew.saturating_add(by);
    }

    /// Runs `f` on the meter at `unit`, brought up to the clock first. `None` when there is no such meter.
    pub fn with_meter<R>(&self, unit: u8, f: impl FnOnce(&mut SimMeter) -> R) -> Option<R> {
        let now = self.elapsed();
        let mut meters = self.meters();
        let meter = meters.get_mut(&unit)?;
        meter.update(now);
        Some(f(meter))
    }

    /// Pins a value of the meter at `unit` (see [`SimMeter::set_value`]).
    pub fn set_value(&self, unit: u8, name: &str, value: f64) -> Result<(), SimError> {
        self.with_meter(unit, |m| m.set_value(name, value)).unwrap_or(Err(SimError::UnknownUnit(unit)))
    }

    /// A value of the meter at `unit` as a master would decode it now.
    pub fn value(&self, unit: u8, name: &str) -> Option<f64> {
        self.with_meter(unit, |m| m.value(name)).flatten()
    }

    /// Every value of the meter at `unit`, in profile order (empty for an unknown unit).
    pub fn snapshot(&self, unit: u8) -> Vec<(String, f64)> {
        self.with_meter(unit, |m| m.snapshot()).unwrap_or_default()
    }

    /// The counters so far.
    pub fn stats(&self) -> SimStats {
        self.shared.stats.snapshot()
    }

    /// Answers a request PDU for `unit`: `None` when no meter is at that unit (silence) or the PDU is
    /// empty. Unit 0 is not special here (see [`Simulator::broadcast`]).
    pub fn handle_pdu(&self, unit: u8, pdu: &[u8]) -> Option<Vec<u8>> {
        self.with_meter(unit, |meter| meter.handle_pdu(pdu)).flatten()
    }

    /// Applies a broadcast request PDU (RTU unit 0) to every meter: writes take effect, nothing answers.
    pub fn broadcast(&self, pdu: &[u8]) {
        let now = self.elapsed();
        for meter in self.meters().values_mut() {
            meter.update(now);
            meter.handle_broadcast(pdu);
        }
    }
}

/// Why a [`Session`] gave up on its connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// An MBAP header that cannot be a Modbus TCP frame: there is no way to find the next frame.
    #[error("bad Modbus TCP frame: {0}")]
    BadFrame(String),
}

/// One server-side connection without I/O: deframes requests, answers the units it serves through the
/// [`Simulator`], injects faults, and queues replies.
///
/// Contract: after every [`Session::handle_input`] or [`Session::handle_silence`], call
/// [`Session::poll_transmit`] until it returns `None` and write each frame (after the reply delay).
/// No input panics it.
#[derive(Debug)]
pub struct Session {
    sim: Simulator,
    framing: SimFraming,
    units: Vec<u8>,
    drop_rate: f64,
    corrupt_rate: f64,
    rng: StdRng,
    /// RTU: the stream deframer (resynchronises by dropping bytes).
    rtu: RtuRequestDeframer,
    /// MBAP: bytes received and not yet part of a frame.
    buf: Vec<u8>,
    /// Bytes dropped in the current resynchronisation episode (first few kept for the log).
    garbage: GarbageLog,
    out: std::collections::VecDeque<Vec<u8>>,
    peer: String,
}

impl Session {
    /// A session for one connection from `peer` (for logs), with `opts`' framing, units and fault
    /// rates. `seed` drives the fault injection (servers derive one per connection from `opts.seed`).
    pub fn new(sim: Simulator, opts: &SimOptions, seed: u64, peer: impl Into<String>) -> Session {
        Session {
            sim,
            framing: opts.framing,
            units: opts.units.clone(),
            drop_rate: opts.drop_rate,
            corrupt_rate: opts.corrupt_rate,
            rng: StdRng::seed_from_u64(seed),
            rtu: RtuRequestDeframer::new(),
            buf: Vec::new(),
            garbage: GarbageLog::default(),
            out: std::collections::VecDeque::new(),
            peer: peer.into(),
        }
    }

    /// Bytes received and not yet part of a complete frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() + self.rtu.buffered()
    }

    fn serves(&self, unit: u8) -> bool {
        self.units.is_empty() || self.units.contains(&unit)
    }

    fn stats(&self) -> &StatCells {
        &self.sim.shared.stats
    }

    /// Feeds received bytes; complete requests are answered into the transmit queue. An error means the
    /// connection must be closed (MBAP framing only).
    pub fn handle_input(&mut self, data: &[u8]) -> Result<(), SessionError> {
        match self.framing {
            SimFraming::Rtu => {
                self.rtu.push(data);
                self.process_rtu();
                Ok(())
            }
            SimFraming::Tcp => {
                self.buf.extend_from_slice(data);
                let result = self.process_tcp();
                self.bound_buffer();
                result
            }
        }
    }

    /// Keeps the MBAP buffer bounded whatever arrives.
    fn bound_buffer(&mut self) {
        if self.buf.len() > MAX_BUFFER {
            // Cannot happen with a deframer that bounds lengths, but never grow without limit.
            let excess = self.buf.len().saturating_sub(MAX_BUFFER);
            let dropped: Vec<u8> = self.buf.drain(..excess).collect();
            self.note_garbage(&dropped);
            self.flush_garbage_log("buffer overflow");
        }
    }

    /// The line has been silent long enough that a partial frame will never complete: discard it.
    pub fn handle_silence(&mut self) {
        let partial = std::mem::take(&mut self.buf);
        self.note_garbage(&partial);
        let before = self.rtu.dropped();
        self.rtu.clear();
        self.note_dropped_by_deframer(before);
        self.flush_garbage_log("incomplete frame followed by silence");
    }

    /// Counts (and remembers for the log) what the RTU deframer dropped since `before`.
    fn note_dropped_by_deframer(&mut self, before: u64) {
        let n = self.rtu.dropped().saturating_sub(before);
        if n > 0 {
            self.garbage.note_unseen(n);
            StatCells::add(&self.stats().garbage_bytes, n);
        }
    }

    /// The next reply frame to write, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    fn note_garbage(&mut self, bytes: &[u8]) {
        self.garbage.note(bytes);
        StatCells::add(&self.stats().garbage_bytes, u64::try_from(bytes.len()).unwrap_or(u64::MAX));
    }

    fn flush_garbage_log(&mut self, why: &str) {
        self.garbage.flush(<Self as SimSession>::NAME, &self.peer, why);
    }

    fn process_rtu(&mut self) {
        loop {
            let before = self.rtu.dropped();
            let next = self.rtu.next_request();
            self.note_dropped_by_deframer(before);
            let Some(request) = next else { return };
            self.flush_garbage_log("no valid RTU frame");
            let unit = request.unit;
            self.answer(unit, &request.pdu, |pdu| encode_rtu(unit, pdu));
        }
    }

    fn process_tcp(&mut self) -> Result<(), SessionError> {
        loop {
            match decode_tcp_frame(&self.buf) {
                Ok(None) => return Ok(()),
                Ok(Some(frame)) => {
                    self.buf.drain(..frame.len.min(self.buf.len()).max(1));
                    let (unit, transaction) = (frame.unit, frame.transaction);
                    self.answer(unit, &frame.pdu, |pdu| encode_tcp(transaction, unit, pdu));
                }
                Err(e) => {
                    let dropped = std::mem::take(&mut self.buf);
                    self.note_garbage(&dropped);
                    self.flush_garbage_log("bad MBAP header, closing");
                    return Err(SessionError::BadFrame(e.to_string()));
                }
            }
        }
    }

    /// Handles one well-framed request: unit filter, the meter, fault injection, framing of the reply.
    fn answer(&mut self, unit: u8, pdu: &[u8], frame: impl Fn(&[u8]) -> Vec<u8>) {
        if unit == BROADCAST && self.framing == SimFraming::Rtu {
            // Writes to every meter this server answers; a broadcast is never answered.
            StatCells::add(&self.stats().requests, 1);
            for u in self.sim.units().into_iter().filter(|u| self.serves(*u)) {
                self.sim.with_meter(u, |m| m.handle_broadcast(pdu));
            }
            return;
        }
        // Another unit on the line, or a unit no meter answers (a dead meter): silence.
        let reply = if self.serves(unit) { self.sim.handle_pdu(unit, pdu) } else { None };
        let Some(reply) = reply else {
            StatCells::add(&self.stats().ignored, 1);
            return;
        };
        StatCells::add(&self.stats().requests, 1);
        if reply.first().is_some_and(|code| code & 0x80 != 0) {
            StatCells::add(&self.stats().exceptions, 1);
        }
        if chance(&mut self.rng, self.drop_rate) {
            StatCells::add(&self.stats().dropped, 1);
            tracing::debug!(peer = %self.peer, unit, "simulator dropped a reply (fault injection)");
            return;
        }
        let mut bytes = frame(&reply);
        if chance(&mut self.rng, self.corrupt_rate) {
            // RTU: any byte (the CRC detects every single-byte error). MBAP: a PDU byte only, so the
            // stream stays in step and the master sees a wrong reply rather than a broken connection.
            let first = match self.framing {
                SimFraming::Rtu => 0,
                SimFraming::Tcp => 7,
            };
            if bytes.len() > first {
                let at = self.rng.gen_range(first..bytes.len());
                let flip: u8 = self.rng.gen_range(1..=u8::MAX);
                if let Some(b) = bytes.get_mut(at) {
                    *b ^= flip;
                }
                StatCells::add(&self.stats().corrupted, 1);
                tracing::debug!(peer = %self.peer, unit, at, "simulator corrupted a reply (fault injection)");
            }
        }
        StatCells::add(&self.stats().replies, 1);
        self.out.push_back(bytes);
    }
}

/// True with probability `p` (clamped to 0..=1; NaN counts as 0).
fn chance(rng: &mut StdRng, p: f64) -> bool {
    p > 0.0 && rng.gen_bool(p.min(1.0))
}

impl SimSession for Session {
    type Error = SessionError;
    const NAME: &'static str = "simulator";

    fn handle_input(&mut self, _now: Instant, data: &[u8]) -> Result<(), SessionError> {
        Session::handle_input(self, data)
    }

    fn handle_silence(&mut self) {
        Session::handle_silence(self);
    }

    fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        Session::poll_transmit(self)
    }

    fn buffered(&self) -> usize {
        Session::buffered(self)
    }

    fn peer(&self) -> &str {
        &self.peer
    }
}

/// Serves `sim` on any byte stream (an in-memory duplex, a test transport, an accepted socket) until end of
/// stream or an I/O error. A partial frame is discarded after 1 s of silence.
pub async fn serve_stream<S>(stream: S, sim: Simulator, opts: SimOptions) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    StatCells::add(&sim.shared.stats.connections, 1);
    let session = Session::new(sim, &opts, connection_seed(opts.seed, 1), "stream");
    drive::drive(stream, session, opts.delay, TCP_STALE_PARTIAL).await
}

/// Serves `sim` on every connection `listener` accepts, with `opts.framing` (MBAP, or RTU over TCP).
///
/// Runs until the future is dropped or the task aborted; connections end with it. Transient accept
/// errors (a client resetting, too many open files) are logged and retried; it returns the error only after
/// 100 accept failures in a row (about 10 s).
pub async fn serve_tcp(listener: TcpListener, sim: Simulator, opts: SimOptions) -> io::Result<()> {
    drive::serve_listener(listener, opts.seed, opts.delay, |seed, peer| {
        StatCells::add(&sim.shared.stats.connections, 1);
        Session::new(sim.clone(), &opts, seed, peer.to_string())
    })
    .await
}

/// Binds `addr` (e.g. `127.0.0.1:0`) and serves `sim` there on a new task. Returns the bound address and
/// the task (abort it to stop the server and its connections).
pub async fn spawn_tcp(
    addr: &str,
    sim: Simulator,
    opts: SimOptions,
) -> io::Result<(SocketAddr, JoinHandle<io::Result<()>>)> {
    drive::spawn_listener(addr, |listener| serve_tcp(listener, sim, opts)).await
}

/// How long a partial frame may wait for its next byte on a serial line: 3.5 characters (Modbus over
/// serial line V1.02, 2.5.1.1), but at least 50 ms.
fn serial_stale_partial(settings: &SerialSettings) -> Duration {
    drive::serial_stale_partial(settings, SERIAL_STALE_PARTIAL_TENTHS)
}

/// Serves `sim` on a serial device or pty at `path` with `settings` (ptys ignore baud and parity), with
/// `opts.framing` (RTU on a real line). Requests for other units on a shared line are skipped silently.
/// Returns when the device reports an error or end of file.
pub async fn serve_serial(path: &str, settings: &SerialSettings, sim: Simulator, opts: SimOptions) -> io::Result<()> {
    let stale = serial_stale_partial(settings);
    drive::serve_port(path, settings, opts.seed, opts.delay, stale, |seed, path| {
        StatCells::add(&sim.shared.stats.connections, 1);
        Session::new(sim, &opts, seed, path)
    })
    .await
}

/// Serves `sim` where a media URL points: `tcp://host:port` binds and serves TCP connections,
/// `serial:///dev/…` opens the device. `opts.framing` applies to both.
pub async fn serve(url: &MediaUrl, sim: Simulator, opts: SimOptions) -> io::Result<()> {
    match url {
        MediaUrl::Tcp { host, port, .. } => {
            let listener = TcpListener::bind((host.as_str(), *port)).await?;
            tracing::info!(addr = %listener.local_addr()?, framing = ?opts.framing, "simulator listening");
            serve_tcp(listener, sim, opts).await
        }
        MediaUrl::Serial { path, settings, .. } => serve_serial(path, settings, sim, opts).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drive::SERIAL_STALE_PARTIAL_MIN;
    use crate::meter::tests::profile;
    use proptest::prelude::*;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

    fn sim() -> Simulator {
        let sim = Simulator::new();
        sim.insert(1, SimMeter::new(&profile(), 1));
        sim.insert(2, SimMeter::new(&profile(), 2));
        sim
    }

    fn session(framing: SimFraming, units: Vec<u8>) -> (Simulator, Session) {
        let sim = sim();
        let opts = SimOptions { framing, units, ..SimOptions::default() };
        let session = Session::new(sim.clone(), &opts, 0, "test");
        (sim, session)
    }

    fn drain(session: &mut Session) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| session.poll_transmit()).collect()
    }

    /// FC 4, address 0, quantity 2.
    const READ: [u8; 5] = [0x04, 0x00, 0x00, 0x00, 0x02];

    #[test]
    fn rtu_requests_byte_by_byte_are_answered_once_complete() {
        let (_, mut s) = session(SimFraming::Rtu, vec![]);
        let frame = encode_rtu(1, &READ);
        for b in &frame[..frame.len() - 1] {
            s.handle_input(&[*b]).unwrap();
            assert!(s.poll_transmit().is_none());
        }
        s.handle_input(&frame[frame.len() - 1..]).unwrap();
        let replies = drain(&mut s);
        assert_eq!(replies.len(), 1);
        assert_eq!(&replies[0][..3], &[0x01, 0x04, 0x04]);
        assert_eq!(s.buffered(), 0);
    }

    #[test]
    fn rtu_silence_discards_a_partial_frame() {
        let (sim, mut s) = session(SimFraming::Rtu, vec![]);
        // Start of a write-multiple request claiming 246 data bytes, then nothing.
        s.handle_input(&[0x01, 0x10, 0x00, 0x00, 0x00, 0x7B, 0xF6, 0x00]).unwrap();
        assert!(s.buffered() > 0);
        s.handle_silence();
        assert_eq!(s.buffered(), 0);
        assert_eq!(sim.stats().garbage_bytes, 8);
        s.handle_input(&encode_rtu(2, &READ)).unwrap();
        assert_eq!(drain(&mut s).len(), 1);
    }

    #[test]
    fn unit_filter_and_unknown_units_are_silent() {
        let (sim, mut s) = session(SimFraming::Rtu, vec![2]);
        s.handle_input(&encode_rtu(1, &READ)).unwrap();
        s.handle_input(&encode_rtu(9, &READ)).unwrap();
        assert!(drain(&mut s).is_empty());
        s.handle_input(&encode_rtu(2, &READ)).unwrap();
        assert_eq!(drain(&mut s).len(), 1);
        let stats = sim.stats();
        assert_eq!((stats.ignored, stats.requests, stats.replies), (2, 1, 1));
    }

    #[test]
    fn rtu_broadcast_writes_every_served_meter_and_is_not_answered() {
        let (sim, mut s) = session(SimFraming::Rtu, vec![1]);
        // FC 6 register 200 (setpoint) = 5.
        s.handle_input(&encode_rtu(0, &[0x06, 0x00, 0xC8, 0x00, 0x05])).unwrap();
        assert!(drain(&mut s).is_empty());
        assert_eq!(sim.value(1, "setpoint"), Some(5.0));
        // Unit 2 is not served by this session.
        assert_eq!(sim.value(2, "setpoint"), Some(1.0));
    }

    #[test]
    fn mbap_bad_header_is_an_error_and_corruption_keeps_the_header() {
        let (_, mut s) = session(SimFraming::Tcp, vec![]);
        assert!(s.handle_input(&[0, 1, 0, 9, 0, 6, 1, 4, 0, 0, 0, 2]).is_err());
        let sim = sim();
        // Pinned, so the clean reply to compare with does not drift between calls.
        sim.set_value(1, "voltage_l1", 230.0).unwrap();
        let opts = SimOptions { corrupt_rate: 1.0, ..SimOptions::default() };
        let mut s = Session::new(sim.clone(), &opts, 9, "test");
        for tid in 0..50u16 {
            s.handle_input(&encode_tcp(tid, 1, &READ)).unwrap();
            let reply = s.poll_transmit().unwrap();
            let clean = encode_tcp(tid, 1, &sim.handle_pdu(1, &READ).unwrap());
            // Header intact, exactly one PDU byte differs.
            assert_eq!(reply[..7], clean[..7]);
            assert_eq!(reply.iter().zip(&clean).filter(|(a, b)| a != b).count(), 1);
        }
        assert_eq!(sim.stats().corrupted, 50);
    }

    #[test]
    fn fault_rates_outside_0_1_do_not_panic() {
        for rate in [f64::NAN, -1.0, 2.0, f64::INFINITY] {
            let sim = sim();
            let opts = SimOptions { drop_rate: rate, corrupt_rate: rate, ..SimOptions::default() };
            let mut s = Session::new(sim, &opts, 1, "test");
            s.handle_input(&encode_tcp(1, 1, &READ)).unwrap();
            let _ = drain(&mut s);
        }
    }

    #[test]
    fn half_the_replies_dropped_at_rate_one_half() {
        let sim = sim();
        let opts = SimOptions { framing: SimFraming::Rtu, drop_rate: 0.5, seed: 11, ..SimOptions::default() };
        let mut s = Session::new(sim.clone(), &opts, 11, "test");
        for _ in 0..400 {
            s.handle_input(&encode_rtu(1, &READ)).unwrap();
        }
        let sent = drain(&mut s).len();
        assert!((150..=250).contains(&sent), "{sent}");
        let stats = sim.stats();
        assert_eq!(stats.dropped + stats.replies, 400);
    }

    proptest! {
        /// Whatever arrives, the session neither panics nor grows without bound, and every reply is a
        /// well-formed frame for a served unit.
        #[test]
        fn any_bytes_are_handled(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
                                 rtu in any::<bool>()) {
            let framing = if rtu { SimFraming::Rtu } else { SimFraming::Tcp };
            let (_, mut s) = session(framing, vec![]);
            for chunk in &chunks {
                let result = s.handle_input(chunk);
                prop_assert!(rtu || result.is_ok() || s.buffered() == 0);
                prop_assert!(s.buffered() <= MAX_BUFFER + 300);
                for reply in drain(&mut s) {
                    match framing {
                        SimFraming::Rtu => {
                            prop_assert!(reply[0] == 1 || reply[0] == 2);
                            let (body, crc) = reply.split_at(reply.len() - 2);
                            prop_assert_eq!(ami_link::crc::crc16_modbus(body).to_le_bytes(), [crc[0], crc[1]]);
                        }
                        SimFraming::Tcp => prop_assert!(matches!(decode_tcp_frame(&reply), Ok(Some(_)))),
                    }
                }
                if result.is_err() {
                    break;
                }
            }
            s.handle_silence();
            prop_assert_eq!(s.buffered(), 0);
        }

        /// Valid requests surrounded by noise: every one addressed to a served unit is found again, except
        /// when the noise happens to form a frame swallowing it (CRC makes that vanishingly rare).
        #[test]
        fn requests_are_found_between_noise(noise in proptest::collection::vec(any::<u8>(), 0..40), n in 1usize..5) {
            let (_, mut s) = session(SimFraming::Rtu, vec![]);
            for _ in 0..n {
                s.handle_input(&noise).unwrap();
                s.handle_silence();
                s.handle_input(&encode_rtu(1, &READ)).unwrap();
            }
            prop_assert_eq!(drain(&mut s).len(), n);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn delay_is_applied_before_each_reply() {
        let sim = sim();
        let (mut client, server) = duplex(1024);
        let opts = SimOptions { delay: Duration::from_millis(500), ..SimOptions::default() };
        let task = tokio::spawn(serve_stream(server, sim, opts));
        let started = Instant::now();
        client.write_all(&encode_tcp(7, 1, &READ)).await.unwrap();
        let mut reply = [0u8; 13];
        client.read_exact(&mut reply).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(500));
        assert_eq!(&reply[..2], &[0, 7]);
        drop(client);
        assert!(task.await.unwrap().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn stale_partial_frame_is_dropped_after_silence() {
        let sim = sim();
        let (mut client, server) = duplex(1024);
        let opts = SimOptions { framing: SimFraming::Rtu, ..SimOptions::default() };
        let task = tokio::spawn(serve_stream(server, sim.clone(), opts));
        // Half a request, then silence longer than the partial-frame limit, then a whole request.
        let frame = encode_rtu(1, &READ);
        client.write_all(&frame[..4]).await.unwrap();
        tokio::time::sleep(TCP_STALE_PARTIAL * 2).await;
        client.write_all(&frame).await.unwrap();
        let mut reply = [0u8; 9];
        client.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply[..3], &[1, 4, 4]);
        assert_eq!(sim.stats().garbage_bytes, 4);
        drop(client);
        assert!(task.await.unwrap().is_ok());
    }

    #[test]
    fn serial_partial_frame_limit_follows_the_baud_rate() {
        let slow = SerialSettings { baud: 300, ..SerialSettings::default() };
        // 3.5 characters × 10 bits at 300 baud = 116.7 ms.
        assert_eq!(serial_stale_partial(&slow), Duration::from_micros(116_666));
        assert_eq!(serial_stale_partial(&SerialSettings::default()), SERIAL_STALE_PARTIAL_MIN);
    }

    #[test]
    fn framing_from_urls_and_names() {
        let url = |s: &str| s.parse::<MediaUrl>().unwrap();
        assert_eq!(SimFraming::for_url(&url("tcp://127.0.0.1:502")), SimFraming::Tcp);
        assert_eq!(SimFraming::for_url(&url("tcp://127.0.0.1:4001?framing=rtu")), SimFraming::Rtu);
        assert_eq!(SimFraming::for_url(&url("serial:///dev/ttyUSB0?baud=9600")), SimFraming::Rtu);
        assert_eq!("rtu".parse::<SimFraming>(), Ok(SimFraming::Rtu));
        assert!("ascii".parse::<SimFraming>().is_err());
    }

    #[test]
    fn simulator_clock_and_values() {
        let sim = sim();
        assert_eq!(sim.units(), vec![1, 2]);
        let before = sim.value(1, "energy_import_total").unwrap();
        sim.advance(Duration::from_secs(3600));
        assert!(sim.elapsed() >= Duration::from_secs(3600));
        assert!(sim.value(1, "energy_import_total").unwrap() > before);
        assert_eq!(sim.set_value(9, "voltage_l1", 1.0), Err(SimError::UnknownUnit(9)));
        assert!(sim.snapshot(9).is_empty());
        assert_eq!(sim.snapshot(1).len(), profile().values.len());
        sim.broadcast(&[0x06, 0x00, 0xC8, 0x00, 0x03]);
        assert_eq!((sim.value(1, "setpoint"), sim.value(2, "setpoint")), (Some(3.0), Some(3.0)));
        assert!(sim.remove(2).is_some());
        assert_eq!(sim.handle_pdu(2, &READ), None);
    }
}

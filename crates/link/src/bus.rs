//! The per-line Bus owner task.
//!
//! [`Bus::spawn`] starts the one task that owns a transport; every request for every meter on that line
//! goes through its [`BusHandle`]s and runs strictly one at a time, in FIFO order. Per exchange the task:
//!
//! 1. keeps `guard_time` of silence after the previous exchange (Modbus RTU needs 3.5 characters);
//! 2. discards stale input (bytes left by an earlier process, a late reply that arrived while idle);
//! 3. makes sure the transport is connected, then writes the request, reconnecting once if the write fails;
//! 4. reads until the [`ReplyMatcher`] says `Complete`, within the per-attempt timeout. Frames that do not
//!    belong to the request (`Foreign`: a late reply to an earlier request, another slave, another
//!    transaction) are dropped and counted as `rejected`, and reading goes on within the same deadline;
//! 5. after a timeout or a corrupt reply, drains the line until it has been silent for `drain_quiet`, so
//!    the late remains of this attempt can never be taken as the reply to the next one, and retries.
//!
//! Reconnects are rate-limited: after a transport failure (a refused connect, a failed write, the peer
//! closing) the next connect attempt waits for [`BusConfig::reconnect`]'s back-off, and exchanges queued
//! meanwhile fail at once with [`LinkError::Io`] instead of hammering `connect()` once per exchange. The
//! one exception is a connection that had been carrying replies: when it breaks it is re-established at
//! once (a gateway closing an idle connection costs nothing). A reply resets the back-off.
//!
//! Line settings (baud rate, parity) can change between exchanges, in queue order, for openings such as
//! IEC 62056-21 mode E (sign-on at 300 baud 7E1, then HDLC at the meter's baud rate 8N1):
//! [`BusHandle::transact_with_line`] switches before and/or after one exchange without another exchange
//! getting in between, [`BusHandle::set_line`] switches on its own. (These are handle methods, not
//! `Exchange` fields, so that code building an `Exchange` literal keeps compiling.)
//!
//! Counters are kept per meter and per bus. The task never decides what a reply means: that is the
//! protocol's matcher and decoder. It never panics on what it reads.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use ami_media::{hex, SerialSettings, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, timeout_at, Instant};

use crate::backoff::{Backoff, Jitter};
use crate::{Check, ReplyMatcher};

/// How many exchanges may wait in a bus queue before `transact` itself waits.
const QUEUE_DEPTH: usize = 64;
/// Read buffer size per `read` call.
const READ_CHUNK: usize = 512;
/// Bytes buffered while the matcher still says `Incomplete` before the attempt counts as corrupt (no wire
/// format we speak has replies this long; noise on a line must not grow a buffer without bound).
const MAX_REPLY_LEN: usize = 4096;

/// Settings of one bus (one physical line or one TCP connection).
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// Bus id from site config, for logs and counters.
    pub id: String,
    /// Silence kept on the line between the end of one exchange and the next request. Default 10 ms
    /// (covers Modbus RTU's 3.5 characters down to 4800 baud).
    pub guard_time: Duration,
    /// Default per-attempt reply timeout when an [`Exchange`] does not set its own. Default 1 s.
    pub timeout: Duration,
    /// Default number of retries after the first attempt. Default 2.
    pub retries: u32,
    /// After a timeout or a corrupt reply the bus reads and discards until the line has been silent this
    /// long (bounded by 10× this). Default 50 ms.
    pub drain_quiet: Duration,
    /// Delays between connect attempts while the transport is down; exchanges in between fail at once.
    /// Default 250 ms doubling up to 30 s, each up to 25 % shorter at random.
    pub reconnect: Backoff,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            id: "bus".into(),
            guard_time: Duration::from_millis(10),
            timeout: Duration::from_secs(1),
            retries: 2,
            drain_quiet: Duration::from_millis(50),
            reconnect: Backoff::new(Duration::from_millis(250), Duration::from_secs(30))
                .with_jitter(Jitter::Proportional(0.25)),
        }
    }
}

/// One request/response exchange queued on a bus.
///
/// To change the line settings (baud rate, parity) right before or after an exchange, queue it with
/// [`BusHandle::transact_with_line`].
pub struct Exchange {
    /// Meter id the exchange is for (per-meter counters and logs).
    pub meter: String,
    /// The complete frame to write.
    pub request: Vec<u8>,
    /// Recognises the reply. `None` for requests that get no reply (broadcasts): the bus writes, keeps the
    /// guard time and returns an empty [`Reply`].
    pub matcher: Option<Box<dyn ReplyMatcher>>,
    /// Per-attempt timeout; `None` uses the bus default.
    pub timeout: Option<Duration>,
    /// Retries after the first attempt; `None` uses the bus default.
    pub retries: Option<u32>,
}

/// The reply to an [`Exchange`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The complete reply frame, as the matcher delimited it.
    pub frame: Vec<u8>,
    /// How many attempts it took (1 = first try).
    pub attempts: u32,
}

/// Why an exchange failed after all its attempts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// No complete reply within the timeout, on every attempt.
    #[error("no reply from meter {meter} after {attempts} attempt(s) of {timeout_ms} ms")]
    Timeout {
        /// Meter id.
        meter: String,
        /// Attempts made.
        attempts: u32,
        /// Per-attempt timeout in milliseconds.
        timeout_ms: u64,
    },
    /// The last attempt got a damaged reply.
    #[error("corrupt reply from meter {meter} after {attempts} attempt(s): {reason}")]
    Corrupt {
        /// Meter id.
        meter: String,
        /// Attempts made.
        attempts: u32,
        /// The matcher's reason.
        reason: String,
    },
    /// The transport failed (write error, connection refused) and could not be re-opened.
    #[error("bus {bus}: transport error: {message}")]
    Io {
        /// Bus id.
        bus: String,
        /// The OS error text.
        message: String,
    },
    /// The bus task has stopped.
    #[error("bus {bus} is closed")]
    Closed {
        /// Bus id.
        bus: String,
    },
}

/// Counters of one meter or one whole bus.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Exchanges requested (not attempts).
    pub requests: u64,
    /// Exchanges that got their reply.
    pub replies: u64,
    /// Attempts that timed out.
    pub timeouts: u64,
    /// Attempts that got a corrupt reply (bad checksum or impossible frame).
    pub checksum_errors: u64,
    /// Attempts beyond the first.
    pub retries: u64,
    /// Well-formed frames that did not belong to the request (late or foreign replies) and were dropped.
    pub rejected: u64,
    /// Exchanges that failed after all attempts.
    pub failures: u64,
    /// Time of the last successful exchange.
    pub last_success: Option<SystemTime>,
}

/// A snapshot of a bus's counters.
#[derive(Debug, Clone, Default)]
pub struct BusStats {
    /// Bus id.
    pub bus: String,
    /// Totals over the bus.
    pub total: Counters,
    /// Per meter id.
    pub meters: BTreeMap<String, Counters>,
    /// Bytes dropped while draining or resynchronising.
    pub bytes_discarded: u64,
    /// Connections the bus (re-)established explicitly.
    pub connects: u64,
    /// Connect attempts that failed.
    pub connect_failures: u64,
    /// Exchanges failed at once because the transport was down and its next connect attempt not yet due.
    pub rejected_while_down: u64,
}

impl Exchange {
    /// An exchange with the bus's default timeout and retries.
    pub fn new(meter: &str, request: Vec<u8>, matcher: Option<Box<dyn ReplyMatcher>>) -> Self {
        Self { meter: meter.to_string(), request, matcher, timeout: None, retries: None }
    }

    /// Sets the per-attempt timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the retries after the first attempt.
    #[must_use]
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retries = Some(retries);
        self
    }
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange")
            .field("meter", &self.meter)
            .field("request", &hex(&self.request))
            .field("expects_reply", &self.matcher.is_some())
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .finish()
    }
}

/// `from + d` without the overflow panic of an absurd configured duration (then: a year from now, or
/// `from` itself if even that does not fit).
fn after(from: Instant, d: Duration) -> Instant {
    from.checked_add(d).or_else(|| from.checked_add(Duration::from_secs(365 * 24 * 3600))).unwrap_or(from)
}

/// Spawns bus owner tasks.
#[derive(Debug)]
pub struct Bus;

/// A cheap, clonable handle to a running bus task. Dropping every handle stops the task.
#[derive(Clone)]
pub struct BusHandle {
    tx: mpsc::Sender<Job>,
    stats: Arc<Mutex<BusStats>>,
    id: Arc<str>,
}

impl std::fmt::Debug for BusHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusHandle").field("id", &self.id).field("closed", &self.tx.is_closed()).finish()
    }
}

/// One queued exchange and where its outcome goes.
struct Job {
    /// `None`: a line change alone ([`BusHandle::set_line`]); the outcome is an empty reply.
    exchange: Option<Exchange>,
    /// Line settings applied before the request is written.
    line_before: Option<SerialSettings>,
    /// Line settings applied once the exchange has succeeded.
    line_after: Option<SerialSettings>,
    reply: oneshot::Sender<Result<Reply, LinkError>>,
}

impl Bus {
    /// Starts the owner task for `transport` on the current tokio runtime.
    ///
    /// Must be called from inside a tokio runtime. The task runs until every [`BusHandle`] is dropped,
    /// then drops (closes) the transport.
    pub fn spawn(transport: Box<dyn Transport>, config: BusConfig) -> BusHandle {
        let id: Arc<str> = Arc::from(config.id.as_str());
        let stats = Arc::new(Mutex::new(BusStats { bus: config.id.clone(), ..BusStats::default() }));
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let healthy = transport.is_connected();
        let reconnect = config.reconnect.clone();
        let driver = Driver {
            transport,
            config,
            stats: Arc::clone(&stats),
            id: Arc::clone(&id),
            last_activity: None,
            reconnect,
            retry_at: None,
            healthy,
            down_reason: String::new(),
            line: None,
            last_request_len: 0,
        };
        tokio::spawn(driver.run(rx));
        BusHandle { tx, stats, id }
    }
}

impl BusHandle {
    /// Queues an exchange and waits for its outcome. Exchanges run one at a time in FIFO order.
    ///
    /// Cancel safety: dropping the future before the exchange started removes it from the line (the bus
    /// skips it); dropping it later lets the exchange finish on the line, and its outcome is discarded.
    pub async fn transact(&self, exchange: Exchange) -> Result<Reply, LinkError> {
        self.queue(Some(exchange), None, None).await
    }

    /// Like [`BusHandle::transact`], switching the line settings around this one exchange, with no other
    /// exchange in between:
    ///
    /// - `before` is applied after the guard time since the previous exchange, before the request is
    ///   written (stale input is discarded after the switch);
    /// - `after` is applied only when the exchange succeeded (reply received, or for an exchange without
    ///   matcher: request written), once the guard time has passed and the request has had time to leave
    ///   the UART at the settings in force (known when the bus set them: request bytes × bits per
    ///   character ÷ baud). IEC 62056-21 mode E: the `ACK 2 Z 2 CR LF` exchange without matcher, with
    ///   `after` = the meter's baud rate 8N1.
    ///
    /// A failing `set_line` fails the exchange with [`LinkError::Io`]. TCP and test transports accept and
    /// ignore line settings.
    pub async fn transact_with_line(
        &self,
        exchange: Exchange,
        before: Option<SerialSettings>,
        after: Option<SerialSettings>,
    ) -> Result<Reply, LinkError> {
        self.queue(Some(exchange), before, after).await
    }

    /// Queues a change of the line settings: applied in FIFO order, after the guard time since the
    /// previous exchange and after that exchange's request has had time to leave the UART (see
    /// [`BusHandle::transact_with_line`]).
    pub async fn set_line(&self, settings: SerialSettings) -> Result<(), LinkError> {
        self.queue(None, None, Some(settings)).await.map(|_| ())
    }

    async fn queue(
        &self,
        exchange: Option<Exchange>,
        line_before: Option<SerialSettings>,
        line_after: Option<SerialSettings>,
    ) -> Result<Reply, LinkError> {
        let closed = || LinkError::Closed { bus: self.id.to_string() };
        let (reply, outcome) = oneshot::channel();
        self.tx.send(Job { exchange, line_before, line_after, reply }).await.map_err(|_| closed())?;
        outcome.await.map_err(|_| closed())?
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> BusStats {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The bus id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// True when the bus task has stopped.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Why one attempt failed.
enum Failure {
    Timeout,
    Corrupt(String),
    /// The connection broke while waiting for the reply (EOF, read error).
    Io(String),
}

/// The task state: the transport and everything about the line.
struct Driver {
    transport: Box<dyn Transport>,
    config: BusConfig,
    stats: Arc<Mutex<BusStats>>,
    id: Arc<str>,
    /// When bytes were last seen on the line (written or read); the guard time counts from here.
    last_activity: Option<Instant>,
    /// Delays between connect attempts while the transport is down.
    reconnect: Backoff,
    /// Set after a transport failure: no connect attempt before this instant. `None`: connect at will.
    retry_at: Option<Instant>,
    /// The connection has carried a reply since the last failure (or was open at spawn): when it breaks,
    /// one reconnect is tried at once instead of after the back-off.
    healthy: bool,
    /// The last transport failure, for the errors of exchanges refused while down.
    down_reason: String,
    /// Line settings the bus last applied (`None`: whatever the transport was opened with).
    line: Option<SerialSettings>,
    /// Length of the last request written, for the transmission time before a line change.
    last_request_len: usize,
}

impl Driver {
    async fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        tracing::debug!(bus = %self.id, media = %self.transport.describe(), "bus started");
        while let Some(job) = rx.recv().await {
            if job.reply.is_closed() {
                let meter = job.exchange.as_ref().map_or("-", |e| e.meter.as_str());
                tracing::debug!(bus = %self.id, meter = %meter, "caller gave up before its turn; skipped");
                continue;
            }
            let result = self.job(job.exchange, job.line_before, job.line_after).await;
            // The caller may have stopped waiting: nothing to do then.
            let _ = job.reply.send(result);
        }
        tracing::debug!(bus = %self.id, "bus stopped: no handles left");
    }

    fn count(&self, meter: &str, update: impl Fn(&mut Counters)) {
        let mut stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        update(&mut stats.total);
        update(stats.meters.entry(meter.to_string()).or_default());
    }

    fn count_discarded(&self, bytes: usize) {
        let mut stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        stats.bytes_discarded = stats.bytes_discarded.saturating_add(u64::try_from(bytes).unwrap_or(u64::MAX));
    }

    fn io_error(&self, message: String) -> LinkError {
        LinkError::Io { bus: self.id.to_string(), message }
    }

    fn count_bus(&self, update: impl Fn(&mut BusStats)) {
        update(&mut self.stats.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// The transport failed (a connect refused, a write failed, the peer closed or reset): no connect
    /// attempt before the back-off delay, except one at once when the connection had been carrying replies.
    fn connection_failed(&mut self, meter: &str, why: &str) {
        let delay = if self.healthy {
            Duration::ZERO
        } else {
            // The iterator never ends; the fallback only keeps this free of `unwrap`.
            self.reconnect.next().unwrap_or(Duration::from_secs(30))
        };
        self.healthy = false;
        self.retry_at = Some(after(Instant::now(), delay));
        self.down_reason = why.to_string();
        tracing::warn!(bus = %self.id, meter = %meter, reason = %why, next_attempt_in = ?delay, "transport failed");
    }

    /// A reply arrived: the connection works, the back-off starts over.
    fn connection_proven(&mut self) {
        self.healthy = true;
        self.retry_at = None;
        self.reconnect.reset();
    }

    /// Milliseconds until the next connect attempt is due, when one is pending and not due yet.
    fn reconnect_wait(&self) -> Option<u128> {
        let now = Instant::now();
        self.retry_at.filter(|at| *at > now).map(|at| at.saturating_duration_since(now).as_millis())
    }

    /// Makes sure the transport can carry the request: connects when it is down and an attempt is due,
    /// fails at once (without touching the transport) when the next attempt is not due yet.
    async fn ensure_connected(&mut self, meter: &str) -> Result<(), LinkError> {
        if let Some(wait) = self.reconnect_wait() {
            self.count_bus(|s| s.rejected_while_down += 1);
            tracing::debug!(bus = %self.id, meter = %meter, "transport down; exchange refused");
            return Err(
                self.io_error(format!("transport down ({}); next connect attempt in {wait} ms", self.down_reason))
            );
        }
        if self.retry_at.is_none() && self.transport.is_connected() {
            return Ok(());
        }
        match self.transport.reconnect().await {
            Ok(()) => {
                self.retry_at = None;
                self.count_bus(|s| s.connects += 1);
                tracing::debug!(bus = %self.id, media = %self.transport.describe(), "transport connected");
                Ok(())
            }
            Err(e) => {
                self.count_bus(|s| s.connect_failures += 1);
                let why = format!("connect failed: {e}");
                self.connection_failed(meter, &why);
                Err(self.io_error(why))
            }
        }
    }

    /// Runs one queued job: optional line change, exchange, optional line change.
    async fn job(
        &mut self,
        exchange: Option<Exchange>,
        before: Option<SerialSettings>,
        line_after: Option<SerialSettings>,
    ) -> Result<Reply, LinkError> {
        if let Some(settings) = before {
            self.keep_guard_time().await;
            self.apply_line(settings)?;
        }
        let reply = match exchange {
            Some(exchange) => self.exchange(exchange).await?,
            None => Reply { frame: Vec::new(), attempts: 1 },
        };
        if let Some(settings) = line_after {
            self.wait_transmitted().await;
            self.apply_line(settings)?;
        }
        Ok(reply)
    }

    /// Waits until the guard time has passed since the last activity, plus the time the last request
    /// needs to leave the UART at the line settings in force (when the bus knows them): `write` returns
    /// once the bytes are in the driver's buffer, and at 300 baud a 6-byte acknowledgement takes 200 ms.
    async fn wait_transmitted(&mut self) {
        let Some(last) = self.last_activity else { return };
        let tx_time = self.line.map_or(Duration::ZERO, |line| {
            let bits = u64::try_from(self.last_request_len)
                .unwrap_or(u64::MAX)
                .saturating_mul(u64::from(line.bits_per_char()));
            Duration::from_micros(bits.saturating_mul(1_000_000) / u64::from(line.baud.max(1)))
        });
        let until = after(after(last, tx_time), self.config.guard_time);
        if until > Instant::now() {
            sleep_until(until).await;
        }
    }

    /// Applies line settings now; a failure is a transport error.
    fn apply_line(&mut self, settings: SerialSettings) -> Result<(), LinkError> {
        match self.transport.set_line(&settings) {
            Ok(()) => {
                tracing::debug!(bus = %self.id, %settings, "line settings changed");
                self.line = Some(settings);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(bus = %self.id, %settings, error = %e, "changing the line settings failed");
                Err(self.io_error(format!("set line {settings}: {e}")))
            }
        }
    }

    async fn exchange(&mut self, exchange: Exchange) -> Result<Reply, LinkError> {
        let Exchange { meter, request, matcher, timeout, retries } = exchange;
        self.last_request_len = request.len();
        let timeout = timeout.unwrap_or(self.config.timeout);
        let retries = retries.unwrap_or(self.config.retries);
        self.count(&meter, |c| c.requests += 1);

        let Some(matcher) = matcher else {
            // No reply expected (broadcast): write, keep the guard time, done.
            self.prepare(&meter).await;
            if let Err(e) = self.write(&meter, &request, timeout).await {
                self.count(&meter, |c| c.failures += 1);
                return Err(e);
            }
            self.keep_guard_time().await;
            return Ok(Reply { frame: Vec::new(), attempts: 1 });
        };

        let attempts = retries.saturating_add(1);
        let mut last = Failure::Timeout;
        for attempt in 1..=attempts {
            if attempt > 1 {
                self.count(&meter, |c| c.retries += 1);
                tracing::debug!(bus = %self.id, meter = %meter, attempt, "retrying");
            }
            self.prepare(&meter).await;
            if let Err(e) = self.write(&meter, &request, timeout).await {
                self.count(&meter, |c| c.failures += 1);
                return Err(e);
            }
            match self.read_reply(&meter, matcher.as_ref(), timeout).await {
                Ok(frame) => {
                    self.connection_proven();
                    let now = SystemTime::now();
                    self.count(&meter, |c| {
                        c.replies += 1;
                        c.last_success = Some(now);
                    });
                    return Ok(Reply { frame, attempts: attempt });
                }
                Err(Failure::Timeout) => {
                    self.count(&meter, |c| c.timeouts += 1);
                    tracing::debug!(bus = %self.id, meter = %meter, attempt, "no reply within {timeout:?}");
                    self.drain().await;
                    last = Failure::Timeout;
                }
                Err(Failure::Corrupt(reason)) => {
                    self.count(&meter, |c| c.checksum_errors += 1);
                    tracing::warn!(bus = %self.id, meter = %meter, attempt, %reason, "corrupt reply");
                    self.drain().await;
                    last = Failure::Corrupt(reason);
                }
                Err(Failure::Io(message)) => {
                    // The next attempt reconnects if the back-off allows it now; if not, retrying is
                    // pointless and the exchange fails here.
                    self.connection_failed(&meter, &message);
                    if let Some(wait) = self.reconnect_wait() {
                        self.count(&meter, |c| c.failures += 1);
                        return Err(self.io_error(format!("{message}; next connect attempt in {wait} ms")));
                    }
                    last = Failure::Io(message);
                }
            }
        }
        self.count(&meter, |c| c.failures += 1);
        Err(match last {
            Failure::Timeout => LinkError::Timeout {
                meter,
                attempts,
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            },
            Failure::Corrupt(reason) => LinkError::Corrupt { meter, attempts, reason },
            Failure::Io(message) => self.io_error(message),
        })
    }

    /// Waits until the guard time since the last activity has passed, then drops stale input.
    async fn prepare(&mut self, meter: &str) {
        self.keep_guard_time().await;
        match self.transport.discard_input() {
            Ok(0) => {}
            Ok(n) => {
                self.count_discarded(n);
                tracing::warn!(bus = %self.id, meter = %meter, bytes = n, "discarded stale input before the request");
            }
            Err(e) => tracing::debug!(bus = %self.id, error = %e, "discarding stale input failed"),
        }
    }

    /// Sleeps until `guard_time` has passed since the last bytes on the line.
    async fn keep_guard_time(&mut self) {
        if let Some(last) = self.last_activity {
            let until = after(last, self.config.guard_time);
            // A timer that has already expired still waits for the timer driver's next 1 ms tick;
            // on a busy TCP bus that would cost a millisecond per exchange.
            if until > Instant::now() {
                sleep_until(until).await;
            }
        }
    }

    async fn write_once(&mut self, request: &[u8], limit: Duration) -> io::Result<()> {
        let transport = &mut self.transport;
        let write = async {
            transport.write_all(request).await?;
            transport.flush().await
        };
        match tokio::time::timeout(limit, write).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, format!("write did not complete within {limit:?}"))),
        }
    }

    /// Connects if needed, writes the request; on failure reconnects once (when the back-off allows) and
    /// writes again.
    async fn write(&mut self, meter: &str, request: &[u8], limit: Duration) -> Result<(), LinkError> {
        self.ensure_connected(meter).await?;
        let result = match self.write_once(request, limit).await {
            Ok(()) => Ok(()),
            Err(first) => {
                let why = format!("write failed: {first}");
                self.connection_failed(meter, &why);
                if let Some(wait) = self.reconnect_wait() {
                    return Err(self.io_error(format!("{why}; next connect attempt in {wait} ms")));
                }
                match self.ensure_connected(meter).await {
                    Ok(()) => match self.write_once(request, limit).await {
                        Ok(()) => Ok(()),
                        Err(e) => {
                            let why = format!("write failed after reconnecting: {e}");
                            self.connection_failed(meter, &why);
                            Err(self.io_error(why))
                        }
                    },
                    Err(e) => Err(e),
                }
            }
        };
        self.last_activity = Some(Instant::now());
        if let Err(e) = &result {
            tracing::warn!(bus = %self.id, meter = %meter, error = %e, "request not sent");
        }
        result
    }

    /// Reads until the matcher completes a reply, the deadline passes, or the connection breaks.
    async fn read_reply(
        &mut self,
        meter: &str,
        matcher: &dyn ReplyMatcher,
        limit: Duration,
    ) -> Result<Vec<u8>, Failure> {
        let deadline = after(Instant::now(), limit);
        let mut buf: Vec<u8> = Vec::new();
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            while !buf.is_empty() {
                match matcher.check(&buf) {
                    Check::Incomplete => break,
                    Check::Complete { len } if len > 0 && len <= buf.len() => {
                        // `len <= buf.len()` by the match guard.
                        let rest = buf.split_off(len);
                        if !rest.is_empty() {
                            self.count_discarded(rest.len());
                            tracing::warn!(
                                bus = %self.id, meter = %meter, bytes = %hex(&rest),
                                "dropped bytes received after the reply"
                            );
                        }
                        return Ok(buf);
                    }
                    Check::Complete { len } => {
                        return Err(Failure::Corrupt(format!(
                            "matcher reported a {len}-byte reply in {} bytes",
                            buf.len()
                        )));
                    }
                    Check::Foreign { skip, what } => {
                        // Always make progress, never past the buffer (the loop guard keeps `buf` non-empty,
                        // so the clamp bounds are in order).
                        let skip = skip.clamp(1, buf.len().max(1));
                        let dropped: Vec<u8> = buf.drain(..skip).collect();
                        self.count(meter, |c| c.rejected += 1);
                        self.count_discarded(skip);
                        tracing::warn!(
                            bus = %self.id, meter = %meter, %what, bytes = %hex(&dropped),
                            "rejected bytes that do not answer this request"
                        );
                    }
                    Check::Corrupt { reason } => {
                        tracing::debug!(bus = %self.id, meter = %meter, bytes = %hex(&buf), "corrupt reply");
                        self.count_discarded(buf.len());
                        return Err(Failure::Corrupt(reason));
                    }
                }
            }
            if buf.len() > MAX_REPLY_LEN {
                self.count_discarded(buf.len());
                return Err(Failure::Corrupt(format!("{} bytes without a complete reply", buf.len())));
            }
            match timeout_at(deadline, self.transport.read(&mut chunk)).await {
                Err(_elapsed) => {
                    if !buf.is_empty() {
                        tracing::debug!(
                            bus = %self.id, meter = %meter, bytes = %hex(&buf),
                            "incomplete reply at the deadline"
                        );
                        self.count_discarded(buf.len());
                    }
                    return Err(Failure::Timeout);
                }
                Ok(Ok(0)) => return Err(Failure::Io("connection closed by the peer".into())),
                Ok(Ok(n)) => {
                    buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
                    self.last_activity = Some(Instant::now());
                }
                Ok(Err(e)) => return Err(Failure::Io(format!("read failed: {e}"))),
            }
        }
    }

    /// Reads and drops bytes until the line has been quiet for `drain_quiet` (at most 10× that in all),
    /// then drops whatever the OS still holds.
    async fn drain(&mut self) {
        let quiet = self.config.drain_quiet;
        let hard = after(Instant::now(), quiet.saturating_mul(10));
        let mut dropped = 0usize;
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            let now = Instant::now();
            if now >= hard {
                break;
            }
            match timeout_at(after(now, quiet).min(hard), self.transport.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => {
                    dropped = dropped.saturating_add(n);
                    self.last_activity = Some(Instant::now());
                }
                // Quiet long enough, or EOF / an error that the next attempt will meet again.
                _ => break,
            }
        }
        dropped = dropped.saturating_add(self.transport.discard_input().unwrap_or(0));
        if dropped > 0 {
            self.count_discarded(dropped);
            tracing::debug!(bus = %self.id, bytes = dropped, "drained the line");
        }
    }
}

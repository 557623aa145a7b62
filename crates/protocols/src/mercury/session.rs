//! The sans-IO Mercury session of one meter: the channel (open at level 1 or 2 with a six-byte password),
//! keep-alive, re-open on status 5, retries, and the typed errors.
//!
//! Rules it follows (Incotex command description, section on the channel; `mercury230.md`):
//! - every request but `00` (test) and `01` (open) needs an open channel; the meter answers status 5
//!   otherwise;
//! - the meter closes the channel by itself after 240 s without a valid request, so the session opens it
//!   again before a request when the last valid exchange is older than [`MercuryMeter::idle_limit`], and
//!   offers a keep-alive (test channel) after [`MercuryMeter::keep_alive`] of idleness;
//! - a status 5 reply (the meter restarted, or closed the channel earlier than we thought) re-opens the
//!   channel and repeats the request once, transparently;
//! - a refused open (wrong password, wrong level) fails the request with [`MercuryError::OpenRefused`],
//!   naming the meter.
//!
//! Panic contract: no reply bytes and no call order panic anything here.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::frame::{Address, Expect, Frame, Status, Timing};
use super::request::{Level, Password, Request};
use super::value::DecodeError;

/// Settings of one Mercury meter, as site config gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MercuryMeter {
    /// Meter id from site config (logs, counters, errors).
    pub id: String,
    /// Network address (`01`–`F0`; `00` on a point-to-point line).
    pub address: Address,
    /// Access level to open the channel at. Default 1 (user).
    pub level: Level,
    /// Password for that level. Default the factory level-1 password `010101010101`.
    pub password: Password,
    /// Line baud rate, for the timing table. Default 9600.
    pub baud: u32,
    /// The meter's programmable timing multiplier. Default 1.
    pub multiplier: u8,
    /// Reply timeout per attempt; `None` (the default) uses the timing table for the baud rate. Set it
    /// for serial-over-TCP gateways, which add their own delay.
    pub timeout: Option<Duration>,
    /// Retries after the first attempt of a request (same bytes). Default 2.
    pub retries: u32,
    /// Idle time after which the meter has closed the channel by itself. Default 240 s.
    pub idle_limit: Duration,
    /// Idle time after which a keep-alive (test channel) is due. Default 200 s.
    pub keep_alive: Duration,
}

impl MercuryMeter {
    /// A meter at `address` with every other setting at its default.
    #[must_use]
    pub fn new(id: impl Into<String>, address: Address) -> Self {
        Self {
            id: id.into(),
            address,
            level: Level::User,
            password: Password::factory_user(),
            baud: 9600,
            multiplier: 1,
            timeout: None,
            retries: 2,
            idle_limit: Duration::from_secs(240),
            keep_alive: Duration::from_secs(200),
        }
    }

    /// The timing table row for this meter's baud rate and multiplier.
    #[must_use]
    pub fn timing(&self) -> Timing {
        Timing::for_baud(self.baud, self.multiplier)
    }

    /// Reply timeout for `request`.
    #[must_use]
    pub fn timeout_for(&self, request: &Request) -> Duration {
        self.timeout.unwrap_or_else(|| {
            let request_len = request.body().len() + 3;
            self.timing().reply_timeout(request_len, request.reply_len() + 3)
        })
    }
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MercuryError {
    /// The meter refused to open the channel (wrong password or level).
    #[error(
        "meter {meter}: the meter refused to open the channel at level {level} ({status}): wrong password or level?"
    )]
    OpenRefused {
        /// Meter id.
        meter: String,
        /// Level asked for.
        level: Level,
        /// The status it answered.
        status: Status,
    },
    /// The meter answered a request with a non-zero status.
    #[error("meter {meter}: {request}: {status}")]
    Refused {
        /// Meter id.
        meter: String,
        /// The request.
        request: String,
        /// The status.
        status: Status,
    },
    /// No reply on any attempt.
    #[error("meter {meter}: no reply to {request} after {attempts} attempt(s)")]
    Timeout {
        /// Meter id.
        meter: String,
        /// The request.
        request: String,
        /// Attempts made.
        attempts: u32,
    },
    /// Only damaged replies.
    #[error("meter {meter}: corrupt reply to {request} after {attempts} attempt(s): {reason}")]
    Corrupt {
        /// Meter id.
        meter: String,
        /// The request.
        request: String,
        /// Attempts made.
        attempts: u32,
        /// The last damage seen.
        reason: String,
    },
    /// The reply's data could not be decoded.
    #[error("meter {meter}: {request}: {error}")]
    Decode {
        /// Meter id.
        meter: String,
        /// The request.
        request: String,
        /// What is wrong.
        error: DecodeError,
    },
    /// Status 5 again right after re-opening the channel.
    #[error("meter {meter}: {request}: channel not open even after re-opening it")]
    ChannelLost {
        /// Meter id.
        meter: String,
        /// The request.
        request: String,
    },
    /// The bus could not carry the exchange (transport down, bus closed); only from the async driver.
    #[error("meter {meter}: {error}")]
    Link {
        /// Meter id.
        meter: String,
        /// The link error.
        error: ami_link::LinkError,
    },
}

/// A request id handed out by [`Session::request`].
pub type RequestId = u64;

/// What a [`Session`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The channel was opened (explicitly or before a request).
    Opened,
    /// A request ended: its reply data (empty for status-only requests) or why it failed.
    Done {
        /// The id [`Session::request`] returned.
        id: RequestId,
        /// Reply data or error.
        result: Result<Vec<u8>, MercuryError>,
    },
}

/// One frame for the driver to write. Its Debug output hides the bytes of an open-channel frame (they
/// carry the password).
#[derive(Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The complete frame.
    pub bytes: Vec<u8>,
    /// What reply it expects; `None` for broadcasts (no reply).
    pub expect: Option<Expect>,
    /// Per-attempt reply timeout.
    pub timeout: Duration,
    /// 0 for the first attempt, 1.. for retries.
    pub attempt: u32,
}

impl std::fmt::Debug for Transmit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bytes = if self.bytes.get(1) == Some(&0x01) {
            "<open channel, password redacted>".to_owned()
        } else {
            super::frame::hex(&self.bytes)
        };
        f.debug_struct("Transmit")
            .field("bytes", &bytes)
            .field("expect", &self.expect)
            .field("timeout", &self.timeout)
            .field("attempt", &self.attempt)
            .finish()
    }
}

/// Why a frame goes out.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Purpose {
    /// A caller's request.
    User(RequestId),
    /// Opening the channel before the queued request.
    OpenFirst,
    /// Keep-alive test.
    KeepAlive,
}

#[derive(Debug, Clone)]
struct Pending {
    purpose: Purpose,
    request: Request,
    attempt: u32,
    deadline: Option<Instant>,
    /// The channel was already re-opened once for this request.
    reopened: bool,
}

impl Pending {
    fn new(purpose: Purpose, request: Request) -> Self {
        Self { purpose, request, attempt: 0, deadline: None, reopened: false }
    }
}

#[derive(Debug, Clone)]
struct Queued {
    id: RequestId,
    request: Request,
    /// Already re-opened the channel once for this request.
    reopened: bool,
}

/// One Mercury meter's session, without I/O.
///
/// Sans-IO contract (house style rule 1): queue requests with [`request`](Self::request); after that and
/// after every `handle_*` call, the driver calls [`poll_transmit`](Self::poll_transmit) (write what it
/// returns and wait for the reply with its [`Expect`] and timeout), [`poll_event`](Self::poll_event) until
/// `None`, and [`poll_timeout`](Self::poll_timeout) (call [`handle_timeout`](Self::handle_timeout) once that
/// instant has passed: a reply timeout or a due keep-alive). A complete reply frame goes to
/// [`handle_reply`](Self::handle_reply); a reply the driver's matcher found damaged to
/// [`handle_corrupt`](Self::handle_corrupt). Requests run one at a time in order; each ends with exactly
/// one [`Event::Done`]. A spurious `handle_timeout` is a no-op.
#[derive(Debug)]
pub struct Session {
    meter: MercuryMeter,
    open: bool,
    last_valid: Option<Instant>,
    next_id: RequestId,
    queue: VecDeque<Queued>,
    pending: Option<Pending>,
    events: VecDeque<Event>,
    opens: u64,
}

impl Session {
    /// A session with the channel closed.
    #[must_use]
    pub fn new(meter: MercuryMeter) -> Self {
        Self {
            meter,
            open: false,
            last_valid: None,
            next_id: 1,
            queue: VecDeque::new(),
            pending: None,
            events: VecDeque::new(),
            opens: 0,
        }
    }

    /// The meter's settings.
    #[must_use]
    pub fn meter(&self) -> &MercuryMeter {
        &self.meter
    }

    /// Whether the channel is open as far as the session knows at `now` (opened, and the last valid
    /// exchange younger than the idle limit).
    #[must_use]
    pub fn is_open(&self, now: Instant) -> bool {
        self.open && self.last_valid.is_some_and(|t| now.saturating_duration_since(t) < self.meter.idle_limit)
    }

    /// How many times the channel was opened successfully.
    #[must_use]
    pub fn opens(&self) -> u64 {
        self.opens
    }

    /// Whether nothing is queued or outstanding.
    #[must_use]
    pub fn is_idle(&self) -> bool {
        self.pending.is_none() && self.queue.is_empty()
    }

    /// Queues `request`; its outcome comes as [`Event::Done`] with the returned id.
    pub fn request(&mut self, request: Request) -> RequestId {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.queue.push_back(Queued { id, request, reopened: false });
        id
    }

    /// Queues opening the channel with the meter's level and password.
    pub fn open(&mut self) -> RequestId {
        let request = Request::Open { level: self.meter.level, password: self.meter.password.clone() };
        self.request(request)
    }

    /// Queues closing the channel (a reply of status 5, "not open", counts as closed).
    pub fn close(&mut self) -> RequestId {
        self.request(Request::Close)
    }

    /// The next frame to write, if any (once per attempt).
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if self.pending.is_none() {
            self.start_next(now);
        }
        let timeout_of = |m: &MercuryMeter, r: &Request| m.timeout_for(r);
        let pending = self.pending.as_mut()?;
        if pending.deadline.is_some() {
            return None;
        }
        let timeout = timeout_of(&self.meter, &pending.request);
        pending.deadline = Some(now.checked_add(timeout).unwrap_or(now));
        let address = self.meter.address;
        Some(Transmit {
            bytes: pending.request.encode(address),
            expect: address.expects_reply().then(|| Expect { address, data_len: pending.request.reply_len() }),
            timeout,
            attempt: pending.attempt,
        })
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due: the reply deadline, or while idle with the
    /// channel open, the keep-alive time.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if let Some(p) = &self.pending {
            return p.deadline;
        }
        if self.queue.is_empty() && self.open {
            return self.last_valid.and_then(|t| t.checked_add(self.meter.keep_alive));
        }
        None
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Fails the outstanding and every queued request with `error` (the driver lost its bus).
    pub fn abort(&mut self, error: &MercuryError) {
        if let Some(Pending { purpose: Purpose::User(id), .. }) = self.pending.take() {
            self.events.push_back(Event::Done { id, result: Err(error.clone()) });
        }
        while let Some(q) = self.queue.pop_front() {
            self.events.push_back(Event::Done { id: q.id, result: Err(error.clone()) });
        }
    }

    /// The clock passed [`poll_timeout`](Self::poll_timeout): a reply deadline (retry or fail), or a due
    /// keep-alive (a test frame is queued). Anything earlier is a no-op.
    pub fn handle_timeout(&mut self, now: Instant) {
        match &self.pending {
            Some(p) => {
                if p.deadline.is_some_and(|d| now >= d) {
                    self.failed_attempt(None);
                }
            }
            None => {
                let due = self.poll_timeout().is_some_and(|t| now >= t);
                if due && self.is_open(now) {
                    self.pending = Some(Pending::new(Purpose::KeepAlive, Request::Test));
                } else if due {
                    // The channel has expired by itself: nothing to keep alive.
                    self.open = false;
                }
            }
        }
    }

    /// The driver's matcher found the reply damaged: the attempt failed.
    pub fn handle_corrupt(&mut self, _now: Instant, reason: &str) {
        if self.pending.as_ref().is_some_and(|p| p.deadline.is_some()) {
            self.failed_attempt(Some(reason.to_owned()));
        }
    }

    /// A complete reply frame (as the [`Expect`] of the transmit delimited it; an empty frame for a
    /// broadcast). Ignored when nothing is outstanding.
    pub fn handle_reply(&mut self, now: Instant, frame: &[u8]) {
        let Some(pending) = self.pending.take() else { return };
        if pending.deadline.is_none() {
            self.pending = Some(pending);
            return;
        }
        if !self.meter.address.expects_reply() {
            self.finish(&pending, Ok(Vec::new()));
            return;
        }
        let parsed = match Frame::parse(frame) {
            Ok(f) if f.address == self.meter.address => f,
            Ok(f) => {
                self.pending = Some(pending);
                self.failed_attempt(Some(format!(
                    "reply from address {} (expected {})",
                    f.address, self.meter.address
                )));
                return;
            }
            Err(e) => {
                self.pending = Some(pending);
                self.failed_attempt(Some(e.to_string()));
                return;
            }
        };
        // Any answer means the meter heard a valid request: the channel's idle time starts again.
        self.last_valid = Some(now);
        let expected = pending.request.reply_len();
        match (parsed.status(), &pending.purpose) {
            (Some(Status::Ok), Purpose::OpenFirst) => {
                self.opened();
            }
            (Some(status), Purpose::OpenFirst) => {
                self.open = false;
                let level = self.level_of(&pending.request);
                if let Some(q) = self.queue.pop_front() {
                    let meter = self.meter.id.clone();
                    self.events.push_back(Event::Done {
                        id: q.id,
                        result: Err(MercuryError::OpenRefused { meter, level, status }),
                    });
                }
            }
            (None, Purpose::OpenFirst) => {
                let reason = format!("{} data byte(s) in reply to open channel", parsed.body.len());
                self.pending = Some(pending);
                self.failed_attempt(Some(reason));
            }
            (_, Purpose::KeepAlive) => {}
            (Some(Status::Ok), Purpose::User(_)) if expected <= 1 => {
                match &pending.request {
                    Request::Open { .. } => self.opened(),
                    Request::Close => self.open = false,
                    _ => {}
                }
                self.finish(&pending, Ok(Vec::new()));
            }
            (Some(Status::ChannelNotOpen), Purpose::User(id)) => {
                self.open = false;
                if matches!(pending.request, Request::Close) {
                    self.finish(&pending, Ok(Vec::new()));
                    return;
                }
                // Re-open and repeat the request once, at the head of the queue.
                let id = *id;
                if pending.reopened {
                    let (meter, request) = (self.meter.id.clone(), pending.request.name());
                    self.events
                        .push_back(Event::Done { id, result: Err(MercuryError::ChannelLost { meter, request }) });
                } else {
                    tracing::debug!(meter = %self.meter.id, "Mercury: channel not open; re-opening it");
                    self.queue.push_front(Queued { id, request: pending.request, reopened: true });
                }
            }
            (Some(Status::Ok), Purpose::User(_)) => {
                let error = MercuryError::Decode {
                    meter: self.meter.id.clone(),
                    request: pending.request.name(),
                    error: DecodeError::Length { what: "reply", expected, actual: 1 },
                };
                self.finish(&pending, Err(error));
            }
            (Some(status), Purpose::User(_)) => {
                let error = if let Request::Open { level, .. } = pending.request {
                    self.open = false;
                    MercuryError::OpenRefused { meter: self.meter.id.clone(), level, status }
                } else {
                    MercuryError::Refused { meter: self.meter.id.clone(), request: pending.request.name(), status }
                };
                self.finish(&pending, Err(error));
            }
            (None, Purpose::User(_)) => {
                if parsed.body.len() == expected {
                    let data = parsed.body.to_vec();
                    self.finish(&pending, Ok(data));
                } else {
                    let error = MercuryError::Decode {
                        meter: self.meter.id.clone(),
                        request: pending.request.name(),
                        error: DecodeError::Length { what: "reply", expected, actual: parsed.body.len() },
                    };
                    self.finish(&pending, Err(error));
                }
            }
        }
    }

    fn level_of(&self, request: &Request) -> Level {
        match request {
            Request::Open { level, .. } => *level,
            _ => self.meter.level,
        }
    }

    fn opened(&mut self) {
        self.open = true;
        self.opens = self.opens.saturating_add(1);
        self.events.push_back(Event::Opened);
    }

    fn finish(&mut self, pending: &Pending, result: Result<Vec<u8>, MercuryError>) {
        if let Purpose::User(id) = pending.purpose {
            self.events.push_back(Event::Done { id, result });
        }
    }

    /// Starts the head of the queue, opening the channel first when it needs one.
    fn start_next(&mut self, now: Instant) {
        let Some(head) = self.queue.front() else { return };
        if head.request.needs_channel() && !self.is_open(now) {
            self.open = false;
            let request = Request::Open { level: self.meter.level, password: self.meter.password.clone() };
            self.pending = Some(Pending::new(Purpose::OpenFirst, request));
            return;
        }
        if let Some(q) = self.queue.pop_front() {
            self.pending = Some(Pending { reopened: q.reopened, ..Pending::new(Purpose::User(q.id), q.request) });
        }
    }

    /// The outstanding attempt timed out (`None`) or was damaged: retry or fail.
    fn failed_attempt(&mut self, corrupt: Option<String>) {
        let Some(mut pending) = self.pending.take() else { return };
        if pending.attempt < self.meter.retries {
            pending.attempt += 1;
            pending.deadline = None;
            self.pending = Some(pending);
            return;
        }
        let (meter, request, attempts) = (self.meter.id.clone(), pending.request.name(), pending.attempt + 1);
        let error = match corrupt {
            Some(reason) => MercuryError::Corrupt { meter, request, attempts, reason },
            None => MercuryError::Timeout { meter, request, attempts },
        };
        match pending.purpose {
            Purpose::User(_) => self.finish(&pending, Err(error)),
            Purpose::OpenFirst => {
                if let Some(q) = self.queue.pop_front() {
                    self.events.push_back(Event::Done { id: q.id, result: Err(error) });
                }
            }
            Purpose::KeepAlive => {
                // A silent meter: the channel state is unknown; the next request opens it again.
                self.open = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mercury::frame::{encode, status_reply};
    use crate::mercury::request::{Bwri, Password};

    const A: Address = Address(0x80);

    fn session() -> Session {
        Session::new(MercuryMeter::new("m1", A))
    }

    /// Takes the next transmit and checks its request bytes.
    fn sent(s: &mut Session, now: Instant) -> Transmit {
        s.poll_transmit(now).expect("a frame to send")
    }

    fn events(s: &mut Session) -> Vec<Event> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    #[test]
    fn a_request_opens_the_channel_first_and_reuses_it() {
        let mut s = session();
        let t0 = Instant::now();
        let id = s.request(Request::ReadInstant(Bwri::FREQUENCY));
        let tx = sent(&mut s, t0);
        assert_eq!(tx.bytes, [0x80, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x16, 0x47]);
        assert_eq!(tx.expect, Some(Expect { address: A, data_len: 1 }));
        assert!(format!("{tx:?}").contains("password redacted"), "{tx:?}");
        assert_eq!(tx.timeout, Duration::from_micros(150_000 + 12_604 + 4_583));
        assert!(s.poll_transmit(t0).is_none(), "one attempt at a time");
        s.handle_reply(t0, &[0x80, 0x00, 0x60, 0x70]);
        assert_eq!(events(&mut s), [Event::Opened]);
        assert_eq!(sent(&mut s, t0).bytes, [0x80, 0x08, 0x11, 0x40, 0xA5, 0x86]);
        s.handle_reply(t0, &[0x80, 0x00, 0x87, 0x13, 0x0B, 0xD9]);
        assert_eq!(events(&mut s), [Event::Done { id, result: Ok(vec![0x00, 0x87, 0x13]) }]);
        // Within the idle limit the next request goes straight out.
        s.request(Request::ReadSerial);
        assert_eq!(sent(&mut s, t0 + Duration::from_secs(100)).bytes, [0x80, 0x08, 0x00, 0x77, 0xE8]);
        assert_eq!(s.opens(), 1);
    }

    #[test]
    fn status_5_reopens_the_channel_and_repeats_the_request_once() {
        let mut s = session();
        let t0 = Instant::now();
        let id = s.request(Request::ReadSerial);
        sent(&mut s, t0);
        s.handle_reply(t0, &[0x80, 0x00, 0x60, 0x70]);
        sent(&mut s, t0);
        // The meter restarted: channel not open.
        s.handle_reply(t0, &status_reply(A, Status::ChannelNotOpen));
        assert_eq!(events(&mut s), [Event::Opened]);
        assert_eq!(sent(&mut s, t0).bytes[1], 0x01, "re-open");
        s.handle_reply(t0, &[0x80, 0x00, 0x60, 0x70]);
        assert_eq!(sent(&mut s, t0).bytes, [0x80, 0x08, 0x00, 0x77, 0xE8], "the same request again");
        s.handle_reply(t0, &encode(A, &[12, 34, 56, 78, 1, 2, 21]));
        assert_eq!(events(&mut s), [Event::Opened, Event::Done { id, result: Ok(vec![12, 34, 56, 78, 1, 2, 21]) }]);
        assert_eq!(s.opens(), 2);
        // Status 5 right after a re-open: a typed error, no loop.
        let id = s.request(Request::ReadSerial);
        sent(&mut s, t0);
        s.handle_reply(t0, &status_reply(A, Status::ChannelNotOpen));
        sent(&mut s, t0);
        s.handle_reply(t0, &[0x80, 0x00, 0x60, 0x70]);
        sent(&mut s, t0);
        s.handle_reply(t0, &status_reply(A, Status::ChannelNotOpen));
        let ev = events(&mut s);
        assert!(
            matches!(ev.last(), Some(Event::Done { id: i, result: Err(MercuryError::ChannelLost { .. }) }) if *i == id)
        );
    }

    #[test]
    fn a_wrong_password_fails_the_request_naming_the_meter() {
        let mut meter = MercuryMeter::new("feeder-7", A);
        meter.password = Password::new([9; 6]);
        let mut s = Session::new(meter);
        let t0 = Instant::now();
        let id = s.request(Request::ReadSerial);
        sent(&mut s, t0);
        s.handle_reply(t0, &status_reply(A, Status::InvalidCommand));
        let ev = events(&mut s);
        let [Event::Done { id: got, result: Err(e) }] = ev.as_slice() else { panic!("{ev:?}") };
        assert_eq!(*got, id);
        assert!(matches!(e, MercuryError::OpenRefused { level: Level::User, status: Status::InvalidCommand, .. }));
        assert!(e.to_string().contains("meter feeder-7"), "{e}");
        assert!(!s.is_open(t0));
        assert!(s.is_idle());
    }

    #[test]
    fn the_channel_is_reopened_after_the_idle_limit_and_kept_alive_before_it() {
        let mut s = session();
        let t0 = Instant::now();
        let id = s.open();
        sent(&mut s, t0);
        s.handle_reply(t0, &[0x80, 0x00, 0x60, 0x70]);
        assert_eq!(events(&mut s), [Event::Opened, Event::Done { id, result: Ok(vec![]) }]);
        // Idle: the keep-alive is due after 200 s; a spurious early timeout does nothing.
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(200)));
        s.handle_timeout(t0 + Duration::from_secs(10));
        assert!(s.poll_transmit(t0 + Duration::from_secs(10)).is_none());
        let t1 = t0 + Duration::from_secs(200);
        s.handle_timeout(t1);
        assert_eq!(sent(&mut s, t1).bytes, [0x80, 0x00, 0x60, 0x70]);
        s.handle_reply(t1, &[0x80, 0x00, 0x60, 0x70]);
        assert!(events(&mut s).is_empty());
        assert!(s.is_open(t1 + Duration::from_secs(239)));
        // 240 s after the last valid exchange the meter has closed the channel: open first.
        let t2 = t1 + Duration::from_secs(240);
        s.request(Request::ReadTime);
        assert_eq!(sent(&mut s, t2).bytes[1], 0x01);
    }

    #[test]
    fn timeouts_are_retried_then_fail_with_the_attempt_count() {
        let mut s = session();
        let t0 = Instant::now();
        s.open();
        let tx = sent(&mut s, t0);
        s.handle_timeout(t0 + tx.timeout - Duration::from_millis(1));
        assert!(s.poll_transmit(t0).is_none(), "not yet due");
        let mut now = t0;
        for attempt in 0..3 {
            now += tx.timeout;
            s.handle_timeout(now);
            if attempt < 2 {
                assert_eq!(sent(&mut s, now).attempt, attempt + 1);
            }
        }
        let ev = events(&mut s);
        assert!(
            matches!(ev.as_slice(), [Event::Done { result: Err(MercuryError::Timeout { attempts: 3, .. }), .. }]),
            "{ev:?}"
        );
        // A damaged reply counts as a failed attempt too.
        s.request(Request::Test);
        sent(&mut s, now);
        s.handle_reply(now, &[0x80, 0x00, 0x60, 0x71]);
        assert_eq!(sent(&mut s, now).attempt, 1);
    }

    #[test]
    fn refusals_and_wrong_lengths_are_typed() {
        let mut s = session();
        let t0 = Instant::now();
        s.open();
        sent(&mut s, t0);
        s.handle_reply(t0, &[0x80, 0x00, 0x60, 0x70]);
        let id = s.request(Request::ReadInstant(Bwri(0x12)));
        sent(&mut s, t0);
        s.handle_reply(t0, &status_reply(A, Status::InternalError));
        let ev = events(&mut s);
        assert!(
            matches!(ev.last(), Some(Event::Done { id: i, result: Err(MercuryError::Refused { status: Status::InternalError, .. }) }) if *i == id)
        );
        s.request(Request::ReadInstant(Bwri(0x12)));
        sent(&mut s, t0);
        s.handle_reply(t0, &encode(A, &[1, 2, 3, 4]));
        assert!(matches!(events(&mut s).last(), Some(Event::Done { result: Err(MercuryError::Decode { .. }), .. })));
        // Close answered "not open" counts as closed.
        let id = s.close();
        sent(&mut s, t0);
        s.handle_reply(t0, &status_reply(A, Status::ChannelNotOpen));
        assert_eq!(events(&mut s), [Event::Done { id, result: Ok(vec![]) }]);
    }
}

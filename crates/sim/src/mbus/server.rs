//! Serving an [`MbusLine`]: the sans-IO server session [`MbusSession`] (EN 13757-2 deframing with
//! resynchronisation, fault injection) and the async drivers for TCP listeners, serial ports and ptys.
//!
//! The session feeds received bytes to [`Frame::decode`] as a stream deframer: a complete frame goes to
//! the line, "need more" waits, bad bytes (a wrong start, length, checksum or stop) drop one byte and try
//! again. A partial frame that sees no more bytes for a while is discarded ([`MbusSession::handle_silence`]).
//! The drivers only pump: read, feed, wait the reply delay, write; that pump, the TCP accept loop and
//! serial-port opening are shared with the Modbus servers (`crate::drive`).

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ami_link::mbus::{Frame, MAX_FRAME_LEN};
use ami_media::{MediaUrl, SerialSettings};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::MbusLine;
use crate::drive::{self, connection_seed, GarbageLog, SimSession, TCP_STALE_PARTIAL};

/// A line shared by every server and the test or CLI that owns it.
pub type SharedMbusLine = Arc<Mutex<MbusLine>>;

/// Partial-frame discard time on serial lines, in tenths of a character: 3 characters.
const SERIAL_STALE_PARTIAL_TENTHS: u64 = 30;

/// Seeded fault injection of an M-Bus server.
#[derive(Debug, Clone, PartialEq)]
pub struct MbusFaults {
    /// Drop every n-th reply of a connection (`Some(2)`: the 2nd, 4th, … reply is not sent; the request is
    /// still processed, so a retry with the same FCB gets the same telegram). `None` or `Some(0)`: never.
    pub drop_every_nth: Option<u32>,
    /// Wait before each reply is written (a slow meter). Default 0.
    pub delay: Duration,
    /// Probability (0..=1) that one byte of a reply is damaged. Default 0.
    pub corrupt_rate: f64,
    /// Seed of the corruption. Default 0.
    pub seed: u64,
}

impl Default for MbusFaults {
    fn default() -> Self {
        Self { drop_every_nth: None, delay: Duration::ZERO, corrupt_rate: 0.0, seed: 0 }
    }
}

fn lock(line: &SharedMbusLine) -> MutexGuard<'_, MbusLine> {
    // A panic elsewhere while holding the lock leaves at worst one meter's link state stale; keep serving.
    line.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One server-side connection without I/O: deframes master frames, answers them through the line,
/// injects faults, queues replies.
///
/// Contract: after every [`MbusSession::handle_input`] or [`MbusSession::handle_silence`], call
/// [`MbusSession::poll_transmit`] until it returns `None` and write each reply (after the delay).
#[derive(Debug)]
pub struct MbusSession {
    line: SharedMbusLine,
    faults: MbusFaults,
    rng: StdRng,
    buf: Vec<u8>,
    /// Replies produced so far (for `drop_every_nth`).
    replies: u64,
    /// Bytes dropped in the current resynchronisation episode (first few kept for the log).
    garbage: GarbageLog,
    out: std::collections::VecDeque<Vec<u8>>,
    peer: String,
}

impl MbusSession {
    /// A session on `line` for one connection from `peer` (for logs).
    pub fn new(line: SharedMbusLine, faults: &MbusFaults, seed: u64, peer: impl Into<String>) -> Self {
        Self {
            line,
            faults: faults.clone(),
            rng: StdRng::seed_from_u64(seed),
            buf: Vec::new(),
            replies: 0,
            garbage: GarbageLog::default(),
            out: std::collections::VecDeque::new(),
            peer: peer.into(),
        }
    }

    /// Bytes received and not yet part of a complete frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Feeds received bytes at `now` (the line's clock catches up first); complete frames are answered into
    /// the transmit queue.
    pub fn handle_input(&mut self, now: Instant, data: &[u8]) {
        self.buf.extend_from_slice(data);
        loop {
            match Frame::decode(&self.buf) {
                Ok(None) => break,
                Ok(Some((frame, len))) => {
                    self.buf.drain(..len.clamp(1, self.buf.len().max(1)));
                    self.flush_garbage_log("no valid M-Bus frame");
                    self.answer(now, &frame);
                }
                Err(_) => {
                    // Resynchronise: drop one byte and look for a frame at the next.
                    if self.buf.is_empty() {
                        break;
                    }
                    let dropped = self.buf.remove(0);
                    self.note_garbage(&[dropped]);
                }
            }
        }
        if self.buf.len() > MAX_FRAME_LEN {
            // Cannot happen with a deframer that bounds lengths; never grow without limit anyway.
            let excess = self.buf.len().saturating_sub(MAX_FRAME_LEN);
            let dropped: Vec<u8> = self.buf.drain(..excess).collect();
            self.note_garbage(&dropped);
            self.flush_garbage_log("buffer overflow");
        }
    }

    /// The line has been silent long enough that a partial frame will never complete: discard it.
    pub fn handle_silence(&mut self) {
        let partial = std::mem::take(&mut self.buf);
        self.note_garbage(&partial);
        self.flush_garbage_log("incomplete frame followed by silence");
    }

    /// The next reply to write, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    fn answer(&mut self, now: Instant, frame: &Frame) {
        let reply = {
            let mut line = lock(&self.line);
            line.catch_up(now);
            line.handle_frame(frame)
        };
        let Some(mut reply) = reply else { return };
        self.replies = self.replies.saturating_add(1);
        if let Some(n) = self.faults.drop_every_nth.filter(|n| *n > 0) {
            if self.replies.is_multiple_of(u64::from(n)) {
                let mut line = lock(&self.line);
                let stats = line.stats_mut();
                stats.dropped = stats.dropped.saturating_add(1);
                tracing::debug!(peer = %self.peer, "M-Bus simulator dropped a reply (fault injection)");
                return;
            }
        }
        let p = self.faults.corrupt_rate;
        if p > 0.0 && self.rng.gen_bool(p.min(1.0)) && !reply.is_empty() {
            let at = self.rng.gen_range(0..reply.len());
            let flip: u8 = self.rng.gen_range(1..=u8::MAX);
            if let Some(b) = reply.get_mut(at) {
                *b ^= flip;
            }
            let mut line = lock(&self.line);
            let stats = line.stats_mut();
            stats.corrupted = stats.corrupted.saturating_add(1);
            tracing::debug!(peer = %self.peer, at, "M-Bus simulator corrupted a reply (fault injection)");
        }
        self.out.push_back(reply);
    }

    fn note_garbage(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.garbage.note(bytes);
        let mut line = lock(&self.line);
        let stats = line.stats_mut();
        stats.garbage_bytes = stats.garbage_bytes.saturating_add(u64::try_from(bytes.len()).unwrap_or(u64::MAX));
    }

    fn flush_garbage_log(&mut self, why: &str) {
        self.garbage.flush(<Self as SimSession>::NAME, &self.peer, why);
    }
}

impl SimSession for MbusSession {
    type Error = Infallible;
    const NAME: &'static str = "M-Bus simulator";

    fn handle_input(&mut self, now: Instant, data: &[u8]) -> Result<(), Infallible> {
        MbusSession::handle_input(self, now, data);
        Ok(())
    }

    fn handle_silence(&mut self) {
        MbusSession::handle_silence(self);
    }

    fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        MbusSession::poll_transmit(self)
    }

    fn buffered(&self) -> usize {
        MbusSession::buffered(self)
    }

    fn peer(&self) -> &str {
        &self.peer
    }
}

fn count_connection(line: &SharedMbusLine) {
    let mut line = lock(line);
    let stats = line.stats_mut();
    stats.connections = stats.connections.saturating_add(1);
}

/// Serves `line` on any byte stream (an in-memory duplex, an accepted socket) until end of stream or an
/// I/O error. A partial frame is discarded after 1 s of silence.
pub async fn serve_mbus_stream<S>(stream: S, line: SharedMbusLine, faults: MbusFaults) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    count_connection(&line);
    let session = MbusSession::new(line, &faults, connection_seed(faults.seed, 1), "stream");
    drive::drive(stream, session, faults.delay, TCP_STALE_PARTIAL).await
}

/// Serves `line` on every connection `listener` accepts (M-Bus frames over TCP, as a transparent
/// gateway passes them). Runs until dropped or aborted; returns an error only after 100 accept failures
/// in a row.
pub async fn serve_mbus_tcp(listener: TcpListener, line: SharedMbusLine, faults: MbusFaults) -> io::Result<()> {
    drive::serve_listener(listener, faults.seed, faults.delay, |seed, peer| {
        count_connection(&line);
        MbusSession::new(Arc::clone(&line), &faults, seed, peer.to_string())
    })
    .await
}

/// Binds `addr` (e.g. `127.0.0.1:0`) and serves `line` there on a new task. Returns the bound address and
/// the task (abort it to stop the server and its connections).
pub async fn spawn_mbus_tcp(
    addr: &str,
    line: SharedMbusLine,
    faults: MbusFaults,
) -> io::Result<(SocketAddr, JoinHandle<io::Result<()>>)> {
    drive::spawn_listener(addr, |listener| serve_mbus_tcp(listener, line, faults)).await
}

/// How long a partial frame may wait for its next byte on a serial line: 3 characters, at least 50 ms.
fn serial_stale_partial(settings: &SerialSettings) -> Duration {
    drive::serial_stale_partial(settings, SERIAL_STALE_PARTIAL_TENTHS)
}

/// Serves `line` on a serial device or pty at `path` with `settings` (M-Bus lines run 2400 8E1; ptys
/// ignore baud and parity). Returns when the device reports an error or end of file.
pub async fn serve_mbus_serial(
    path: &str,
    settings: &SerialSettings,
    line: SharedMbusLine,
    faults: MbusFaults,
) -> io::Result<()> {
    let stale = serial_stale_partial(settings);
    drive::serve_port(path, settings, faults.seed, faults.delay, stale, |seed, path| {
        count_connection(&line);
        MbusSession::new(line, &faults, seed, path)
    })
    .await
}

/// Serves `line` where a media URL points: `tcp://host:port` binds and serves TCP connections,
/// `serial:///dev/…` opens the device.
pub async fn serve_mbus(url: &MediaUrl, line: SharedMbusLine, faults: MbusFaults) -> io::Result<()> {
    match url {
        MediaUrl::Tcp { host, port, .. } => {
            let listener = TcpListener::bind((host.as_str(), *port)).await?;
            tracing::info!(addr = %listener.local_addr()?, "M-Bus simulator listening");
            serve_mbus_tcp(listener, line, faults).await
        }
        MediaUrl::Serial { path, settings, .. } => serve_mbus_serial(path, settings, line, faults).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drive::SERIAL_STALE_PARTIAL_MIN;
    use crate::mbus::MbusMeterSpec;
    use ami_link::mbus::ACK;
    use ami_media::Parity;

    fn session(faults: MbusFaults) -> (SharedMbusLine, MbusSession) {
        let line = MbusLine::with_meters([MbusMeterSpec::heat_meter(1, 12_345_678)]).unwrap();
        let line = Arc::new(Mutex::new(line));
        let s = MbusSession::new(Arc::clone(&line), &faults, 1, "test");
        (line, s)
    }

    fn drain(s: &mut MbusSession) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| s.poll_transmit()).collect()
    }

    #[test]
    fn frames_between_garbage_and_split_over_reads_are_answered() {
        let (line, mut s) = session(MbusFaults::default());
        let now = Instant::now();
        s.handle_input(now, &[0x00, 0xE5, 0x68, 0x01, 0x10, 0x40]);
        assert!(drain(&mut s).is_empty());
        s.handle_input(now, &[0x01]);
        s.handle_input(now, &[0x41, 0x16]);
        assert_eq!(drain(&mut s), [vec![ACK]]);
        assert_eq!(s.buffered(), 0);
        assert!(lock(&line).stats().garbage_bytes >= 3);
        // Half a frame, then silence: discarded; the next frame is still answered.
        s.handle_input(now, &[0x10, 0x7B]);
        s.handle_silence();
        s.handle_input(now, &[0x10, 0x40, 0x01, 0x41, 0x16]);
        assert_eq!(drain(&mut s), [vec![ACK]]);
    }

    #[test]
    fn every_second_reply_is_dropped_and_corruption_damages_replies() {
        let (line, mut s) = session(MbusFaults { drop_every_nth: Some(2), ..MbusFaults::default() });
        for _ in 0..4 {
            s.handle_input(Instant::now(), &[0x10, 0x40, 0x01, 0x41, 0x16]);
        }
        assert_eq!(drain(&mut s).len(), 2);
        assert_eq!(lock(&line).stats().dropped, 2);
        let (line, mut s) = session(MbusFaults { corrupt_rate: 1.0, ..MbusFaults::default() });
        s.handle_input(Instant::now(), &[0x10, 0x40, 0x01, 0x41, 0x16]);
        assert_ne!(drain(&mut s), [vec![ACK]]);
        assert_eq!(lock(&line).stats().corrupted, 1);
    }

    #[test]
    fn serial_partial_frame_limit_follows_the_baud_rate() {
        let slow = SerialSettings { baud: 300, parity: Parity::Even, ..SerialSettings::default() };
        assert_eq!(serial_stale_partial(&slow), Duration::from_millis(110));
        assert_eq!(serial_stale_partial(&SerialSettings::default()), SERIAL_STALE_PARTIAL_MIN);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_never_panic_and_never_grow_the_buffer(
            chunks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), 0..8),
            silence in proptest::prelude::any::<bool>(),
        ) {
            let (_line, mut s) = session(MbusFaults { drop_every_nth: Some(3), corrupt_rate: 0.3, ..MbusFaults::default() });
            for c in &chunks {
                s.handle_input(Instant::now(), c);
                drain(&mut s);
                proptest::prop_assert!(s.buffered() <= MAX_FRAME_LEN);
            }
            if silence {
                s.handle_silence();
                proptest::prop_assert_eq!(s.buffered(), 0);
            }
        }
    }
}

//! Serving a [`MercuryLine`]: the sans-IO server session [`MercurySession`] (deframing by CRC with
//! resynchronisation) and the async drivers for TCP listeners, byte streams, serial ports and ptys.
//!
//! Mercury requests have no length field and no start marker. The session takes the shortest prefix of
//! its buffer with a valid CRC as a frame; when there is none but the buffer ends with a CRC-valid frame
//! after some garbage (a master's retry after noise: requests are followed by silence while the master
//! waits), the garbage is dropped; beyond the longest request the oldest bytes go. A partial frame that
//! sees no more bytes for a while is discarded. The pump, the TCP accept loop and serial-port opening
//! are shared with the other simulators (`crate::drive`).

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ami_link::crc::crc16_modbus;
use ami_media::{MediaUrl, SerialSettings};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::MercuryLine;
use crate::drive::{self, GarbageLog, SimSession, TCP_STALE_PARTIAL};

/// A line shared by every server and the test or CLI that owns it.
pub type SharedMercuryLine = Arc<Mutex<MercuryLine>>;

/// Longest request the deframer waits for (the longest write of the command set is well below).
const MAX_REQUEST_LEN: usize = 64;
/// Shortest frame: address, code, CRC.
const MIN_REQUEST_LEN: usize = 4;
/// Partial-frame discard time on serial lines, in tenths of a character: 3.5 characters, at least 50 ms.
const SERIAL_STALE_PARTIAL_TENTHS: u64 = 35;

fn lock(line: &SharedMercuryLine) -> MutexGuard<'_, MercuryLine> {
    // A panic elsewhere while holding the lock leaves at worst one meter's channel state stale.
    line.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn crc_ok(frame: &[u8]) -> bool {
    frame.len() >= MIN_REQUEST_LEN && crc16_modbus(frame) == 0
}

/// One server-side connection without I/O: deframes requests, answers them through the line, queues
/// replies.
///
/// Contract: after every [`MercurySession::handle_input`] or [`MercurySession::handle_silence`], call
/// [`MercurySession::poll_transmit`] until it returns `None` and write each reply.
#[derive(Debug)]
pub struct MercurySession {
    line: SharedMercuryLine,
    buf: Vec<u8>,
    garbage: GarbageLog,
    out: std::collections::VecDeque<Vec<u8>>,
    peer: String,
}

impl MercurySession {
    /// A session on `line` for one connection from `peer` (for logs).
    pub fn new(line: SharedMercuryLine, peer: impl Into<String>) -> Self {
        Self {
            line,
            buf: Vec::new(),
            garbage: GarbageLog::default(),
            out: std::collections::VecDeque::new(),
            peer: peer.into(),
        }
    }

    /// Bytes received and not yet part of a complete frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Feeds bytes received at `now` (the line's value clock catches up first); complete requests are
    /// answered into the transmit queue.
    pub fn handle_input(&mut self, now: Instant, data: &[u8]) {
        self.buf.extend_from_slice(data);
        loop {
            let upto = self.buf.len().min(MAX_REQUEST_LEN);
            if let Some(len) = (MIN_REQUEST_LEN..=upto).find(|&l| self.buf.get(..l).is_some_and(crc_ok)) {
                let frame: Vec<u8> = self.buf.drain(..len).collect();
                self.flush_garbage_log("no valid Mercury frame");
                self.answer(now, &frame);
                continue;
            }
            let len = self.buf.len();
            let tail = (1..len.saturating_sub(MIN_REQUEST_LEN - 1))
                .find(|&s| len - s <= MAX_REQUEST_LEN && self.buf.get(s..).is_some_and(crc_ok));
            if let Some(skip) = tail {
                let dropped: Vec<u8> = self.buf.drain(..skip).collect();
                self.note_garbage(&dropped);
                continue;
            }
            if len > MAX_REQUEST_LEN {
                let dropped: Vec<u8> = self.buf.drain(..len - MAX_REQUEST_LEN).collect();
                self.note_garbage(&dropped);
            }
            break;
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

    fn answer(&mut self, now: Instant, frame: &[u8]) {
        let reply = {
            let mut line = lock(&self.line);
            line.catch_up(now);
            line.handle_frame(now, frame)
        };
        if let Some(reply) = reply {
            self.out.push_back(reply);
        }
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

impl SimSession for MercurySession {
    type Error = Infallible;
    const NAME: &'static str = "Mercury simulator";

    fn handle_input(&mut self, now: Instant, data: &[u8]) -> Result<(), Infallible> {
        MercurySession::handle_input(self, now, data);
        Ok(())
    }

    fn handle_silence(&mut self) {
        MercurySession::handle_silence(self);
    }

    fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        MercurySession::poll_transmit(self)
    }

    fn buffered(&self) -> usize {
        MercurySession::buffered(self)
    }

    fn peer(&self) -> &str {
        &self.peer
    }
}

fn count_connection(line: &SharedMercuryLine) {
    let mut line = lock(line);
    let stats = line.stats_mut();
    stats.connections = stats.connections.saturating_add(1);
}

/// Serves `line` on any byte stream (an in-memory duplex, an accepted socket, an opened pty) until end of
/// stream or an I/O error. A partial frame is discarded after 1 s of silence; replies go out after
/// `delay` (a meter's reply time; zero is fine).
pub async fn serve_stream<S>(stream: S, line: SharedMercuryLine, delay: Duration) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    count_connection(&line);
    let session = MercurySession::new(line, "stream");
    drive::drive(stream, session, delay, TCP_STALE_PARTIAL).await
}

/// Serves `line` on every connection `listener` accepts (Mercury frames over TCP, as a transparent
/// RS-485 gateway passes them). Runs until dropped or aborted; returns an error only after 100 accept
/// failures in a row.
pub async fn serve_tcp(listener: TcpListener, line: SharedMercuryLine, delay: Duration) -> io::Result<()> {
    drive::serve_listener(listener, 0, delay, |_, peer| {
        count_connection(&line);
        MercurySession::new(Arc::clone(&line), peer.to_string())
    })
    .await
}

/// Binds `addr` (e.g. `127.0.0.1:0`) and serves `line` there on a new task. Returns the bound address and
/// the task (abort it to stop the server and its connections).
pub async fn spawn_tcp(
    addr: &str,
    line: SharedMercuryLine,
    delay: Duration,
) -> io::Result<(SocketAddr, JoinHandle<io::Result<()>>)> {
    drive::spawn_listener(addr, |listener| serve_tcp(listener, line, delay)).await
}

/// Serves `line` on a serial device or pty at `path` with `settings` (Mercury lines run 9600 8N1 by
/// default; ptys ignore baud and parity). A partial frame is discarded after 3.5 characters of silence
/// (at least 50 ms). Returns when the device reports an error or end of file.
pub async fn serve_serial(
    path: &str,
    settings: &SerialSettings,
    line: SharedMercuryLine,
    delay: Duration,
) -> io::Result<()> {
    let stale = drive::serial_stale_partial(settings, SERIAL_STALE_PARTIAL_TENTHS);
    drive::serve_port(path, settings, 0, delay, stale, |_, path| {
        count_connection(&line);
        MercurySession::new(line, path)
    })
    .await
}

/// Serves `line` where a media URL points: `tcp://host:port` binds and serves TCP connections,
/// `serial:///dev/…` opens the device.
pub async fn serve(url: &MediaUrl, line: SharedMercuryLine, delay: Duration) -> io::Result<()> {
    match url {
        MediaUrl::Tcp { host, port, .. } => {
            let listener = TcpListener::bind((host.as_str(), *port)).await?;
            tracing::info!(addr = %listener.local_addr()?, "Mercury simulator listening");
            serve_tcp(listener, line, delay).await
        }
        MediaUrl::Serial { path, settings, .. } => serve_serial(path, settings, line, delay).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mercury::MercuryMeterSpec;
    use ami_protocols::mercury::{Address, Request, Stamp};

    fn session() -> (SharedMercuryLine, MercurySession) {
        let start = Stamp::new(2026, 3, 1, 0, 0).unwrap();
        let line = MercuryLine::with_meters(start, [MercuryMeterSpec::mercury_230(0x80, 12_345_128)]).unwrap();
        let line = Arc::new(Mutex::new(line));
        let s = MercurySession::new(Arc::clone(&line), "test");
        (line, s)
    }

    fn drain(s: &mut MercurySession) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| s.poll_transmit()).collect()
    }

    #[test]
    fn frames_split_over_reads_and_after_garbage_are_answered() {
        let (line, mut s) = session();
        let now = Instant::now();
        s.handle_input(now, &[0x80, 0x00]);
        assert!(drain(&mut s).is_empty());
        s.handle_input(now, &[0x60, 0x70]);
        assert_eq!(drain(&mut s), [vec![0x80, 0x00, 0x60, 0x70]]);
        // Noise, then the master's retry.
        s.handle_input(now, &[0x13, 0x37, 0xFF]);
        s.handle_input(now, &Request::Test.encode(Address(0x80)));
        assert_eq!(drain(&mut s), [vec![0x80, 0x00, 0x60, 0x70]]);
        assert_eq!(s.buffered(), 0);
        assert_eq!(lock(&line).stats().garbage_bytes, 3);
        // Half a frame, then silence: discarded.
        s.handle_input(now, &[0x80, 0x08]);
        s.handle_silence();
        assert_eq!(s.buffered(), 0);
        // A frame for another address: silence.
        s.handle_input(now, &Request::Test.encode(Address(0x81)));
        assert!(drain(&mut s).is_empty());
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_never_panic_and_never_grow_the_buffer(
            chunks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200), 0..8),
            silence in proptest::prelude::any::<bool>(),
        ) {
            let (_line, mut s) = session();
            for c in &chunks {
                s.handle_input(Instant::now(), c);
                drain(&mut s);
                proptest::prop_assert!(s.buffered() <= MAX_REQUEST_LEN);
            }
            if silence {
                s.handle_silence();
                proptest::prop_assert_eq!(s.buffered(), 0);
            }
        }
    }
}

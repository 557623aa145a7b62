//! The I/O shared by every simulator server, whatever protocol its sessions speak: the [`SimSession`]
//! seam a sans-IO server session implements, the pump [`drive`] that connects one to a byte stream, the
//! TCP accept loop [`serve_listener`] and [`spawn_listener`], serial-port opening ([`open_serial`], [`serve_port`]), the
//! stale-partial-frame timing and the resynchronisation log ([`GarbageLog`]).
//!
//! The protocol modules (`server` for Modbus, `mbus::server` for M-Bus) keep their deframing, fault
//! injection, counters and public entry points; this module only pumps bytes and times silence.

use std::fmt::Display;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use ami_media::{Parity, SerialSettings};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// A partial frame older than this is discarded on a TCP connection (no line timing there).
pub(crate) const TCP_STALE_PARTIAL: Duration = Duration::from_secs(1);
/// Lower bound of the partial-frame discard time on serial lines: USB adapters deliver bytes in bursts
/// up to 16 ms apart, so the protocols' few character times are too strict for them.
pub(crate) const SERIAL_STALE_PARTIAL_MIN: Duration = Duration::from_millis(50);
/// Bytes of dropped garbage shown in the resynchronisation log line.
const GARBAGE_SHOWN: usize = 32;
/// Accept failures in a row after which a TCP server gives up.
const MAX_ACCEPT_FAILURES: u32 = 100;
/// Pause after a failed accept (a client resetting, too many open files).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// One server-side connection without I/O, as the drivers see it.
///
/// Contract: after every [`SimSession::handle_input`] or [`SimSession::handle_silence`], the driver
/// calls [`SimSession::poll_transmit`] until it returns `None` and writes each frame after the reply delay.
pub(crate) trait SimSession {
    /// Why the session gives up on its connection.
    type Error: Display + Send;
    /// The server's name in log lines (`simulator`, `M-Bus simulator`).
    const NAME: &'static str;

    /// Feeds bytes received at `now`; complete frames are answered into the transmit queue. An error
    /// means the connection must be closed (after the replies already queued are written).
    fn handle_input(&mut self, now: Instant, data: &[u8]) -> Result<(), Self::Error>;
    /// The line has been silent long enough that a partial frame will never complete: discard it.
    fn handle_silence(&mut self);
    /// The next reply frame to write, if any.
    fn poll_transmit(&mut self) -> Option<Vec<u8>>;
    /// Bytes received and not yet part of a complete frame.
    fn buffered(&self) -> usize;
    /// The peer, for logs.
    fn peer(&self) -> &str;
}

/// Reads, feeds the session, waits the reply delay, writes. A partial frame that sees no byte for
/// `stale_partial` is discarded. Returns at end of stream, on an I/O error, or (with `Ok`) when the
/// session gives up on the connection.
pub(crate) async fn drive<St, S>(
    mut stream: St,
    mut session: S,
    delay: Duration,
    stale_partial: Duration,
) -> io::Result<()>
where
    St: AsyncRead + AsyncWrite + Unpin,
    S: SimSession,
{
    let mut chunk = [0u8; 512];
    loop {
        let read = if session.buffered() > 0 {
            match tokio::time::timeout(stale_partial, stream.read(&mut chunk)).await {
                Ok(read) => read,
                Err(_) => {
                    session.handle_silence();
                    continue;
                }
            }
        } else {
            stream.read(&mut chunk).await
        };
        let n = read?;
        if n == 0 {
            return Ok(());
        }
        let fed = session.handle_input(Instant::now(), chunk.get(..n).unwrap_or_default());
        let mut wrote = false;
        while let Some(reply) = session.poll_transmit() {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            stream.write_all(&reply).await?;
            wrote = true;
        }
        if wrote {
            stream.flush().await?;
        }
        if let Err(e) = fed {
            tracing::warn!(peer = %session.peer(), error = %e, "{} closing connection", S::NAME);
            return Ok(());
        }
    }
}

/// A per-connection fault-injection seed.
pub(crate) fn connection_seed(seed: u64, connection: u64) -> u64 {
    seed ^ connection.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Serves every connection `listener` accepts with a session from `new_session(seed, peer)`, where `seed`
/// is derived from `seed` per connection (see [`connection_seed`]); `new_session` also counts the
/// connection. Sets TCP_NODELAY (replies are small and latency matters more than packet count).
///
/// Runs until the future is dropped or the task aborted; connections end with it. Transient accept
/// errors are logged and retried; it returns the error only after 100 accept failures in a row (about
/// 10 s).
pub(crate) async fn serve_listener<S, F>(
    listener: TcpListener,
    seed: u64,
    delay: Duration,
    mut new_session: F,
) -> io::Result<()>
where
    S: SimSession + Send + 'static,
    F: FnMut(u64, SocketAddr) -> S,
{
    let mut connections = JoinSet::new();
    let mut accepted: u64 = 0;
    let mut failures = 0u32;
    loop {
        tokio::select! {
            result = listener.accept() => match result {
                Ok((stream, peer)) => {
                    failures = 0;
                    accepted = accepted.wrapping_add(1);
                    let session = new_session(connection_seed(seed, accepted), peer);
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
                    }
                    connections.spawn(async move {
                        tracing::debug!(%peer, "{} connection opened", S::NAME);
                        if let Err(e) = drive(stream, session, delay, TCP_STALE_PARTIAL).await {
                            tracing::debug!(%peer, error = %e, "{} connection ended", S::NAME);
                        }
                    });
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, "{} accept failed", S::NAME);
                    if failures >= MAX_ACCEPT_FAILURES {
                        return Err(e);
                    }
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Binds `addr` (e.g. `127.0.0.1:0`) and runs `serve` on the listener in a new task. Returns the bound
/// address and the task.
pub(crate) async fn spawn_listener<F, Fut>(addr: &str, serve: F) -> io::Result<(SocketAddr, JoinHandle<io::Result<()>>)>
where
    F: FnOnce(TcpListener) -> Fut,
    Fut: Future<Output = io::Result<()>> + Send + 'static,
{
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((local, tokio::spawn(serve(listener))))
}

/// How long a partial frame may wait for its next byte on a serial line: `tenths_of_chars` tenths of a
/// character time at `settings`' baud rate and character size, but at least [`SERIAL_STALE_PARTIAL_MIN`].
pub(crate) fn serial_stale_partial(settings: &SerialSettings, tenths_of_chars: u64) -> Duration {
    let baud = u64::from(settings.baud.max(1));
    let micros = tenths_of_chars.saturating_mul(100_000).saturating_mul(u64::from(settings.bits_per_char())) / baud;
    Duration::from_micros(micros).max(SERIAL_STALE_PARTIAL_MIN)
}

/// Opens the serial device or pty at `path` with `settings` (ptys ignore baud and parity).
pub(crate) fn open_serial(path: &str, settings: &SerialSettings) -> io::Result<tokio_serial::SerialStream> {
    use tokio_serial::SerialPortBuilderExt;
    let parity = match settings.parity {
        Parity::None => tokio_serial::Parity::None,
        Parity::Even => tokio_serial::Parity::Even,
        Parity::Odd => tokio_serial::Parity::Odd,
    };
    let data_bits = match settings.data_bits {
        5 => tokio_serial::DataBits::Five,
        6 => tokio_serial::DataBits::Six,
        7 => tokio_serial::DataBits::Seven,
        _ => tokio_serial::DataBits::Eight,
    };
    let stop_bits = if settings.stop_bits == 2 { tokio_serial::StopBits::Two } else { tokio_serial::StopBits::One };
    tokio_serial::new(path, settings.baud)
        .parity(parity)
        .data_bits(data_bits)
        .stop_bits(stop_bits)
        .open_native_async()
        .map_err(|e| io::Error::other(format!("cannot open {path}: {e}")))
}

/// Opens `path` with `settings`, then serves it with the session `new_session(seed, path)` makes (it also
/// counts the port), where `seed` is the first connection's seed derived from `seed`. A partial frame is
/// discarded after `stale_partial` of silence. Returns when the device reports an error or end of file.
pub(crate) async fn serve_port<S, F>(
    path: &str,
    settings: &SerialSettings,
    seed: u64,
    delay: Duration,
    stale_partial: Duration,
    new_session: F,
) -> io::Result<()>
where
    S: SimSession,
    F: FnOnce(u64, String) -> S,
{
    let port = open_serial(path, settings)?;
    let session = new_session(connection_seed(seed, 1), path.to_string());
    tracing::info!(path, %settings, "{} serving serial line", S::NAME);
    drive(port, session, delay, stale_partial).await
}

/// The bytes dropped in the current resynchronisation episode: how many, and the first few for the log
/// line written when the episode ends.
#[derive(Debug, Default)]
pub(crate) struct GarbageLog {
    shown: Vec<u8>,
    len: usize,
}

impl GarbageLog {
    /// Remembers dropped bytes.
    pub(crate) fn note(&mut self, bytes: &[u8]) {
        let room = GARBAGE_SHOWN.saturating_sub(self.shown.len());
        self.shown.extend(bytes.iter().take(room));
        self.len = self.len.saturating_add(bytes.len());
    }

    /// Remembers `n` dropped bytes whose values are not known (dropped by a deframer).
    pub(crate) fn note_unseen(&mut self, n: u64) {
        self.len = self.len.saturating_add(usize::try_from(n).unwrap_or(usize::MAX));
    }

    /// Ends the episode: logs what was dropped and `why` (nothing when nothing was dropped).
    pub(crate) fn flush(&mut self, name: &str, peer: &str, why: &str) {
        if self.len == 0 {
            return;
        }
        let mut shown: String = self.shown.iter().map(|b| format!(" {b:02X}")).collect();
        if !shown.is_empty() && self.len > self.shown.len() {
            shown.push_str(" …");
        }
        tracing::info!(
            peer = %peer,
            bytes = self.len,
            "{name} dropped {} byte(s) to resynchronise ({why}){}{shown}",
            self.len,
            if shown.is_empty() { "" } else { ":" },
        );
        self.shown.clear();
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_partial_frame_limit_scales_with_character_time() {
        let slow = SerialSettings { baud: 300, ..SerialSettings::default() };
        // 10 bits a character at 300 baud: 33.3 ms a character.
        assert_eq!(serial_stale_partial(&slow, 35), Duration::from_micros(116_666));
        assert_eq!(serial_stale_partial(&slow, 30), Duration::from_micros(100_000));
        assert_eq!(serial_stale_partial(&slow, 10), SERIAL_STALE_PARTIAL_MIN);
        let stopped = SerialSettings { baud: 0, ..SerialSettings::default() };
        assert!(serial_stale_partial(&stopped, 35) >= SERIAL_STALE_PARTIAL_MIN);
    }

    #[test]
    fn connection_seeds_differ_per_connection() {
        assert_ne!(connection_seed(7, 1), connection_seed(7, 2));
        assert_eq!(connection_seed(7, 0), 7);
    }

    #[test]
    fn garbage_log_counts_unseen_bytes_and_resets() {
        let mut log = GarbageLog::default();
        log.note(&[0u8; 40]);
        log.note_unseen(3);
        assert_eq!((log.shown.len(), log.len), (GARBAGE_SHOWN, 43));
        log.flush("simulator", "test", "test");
        assert_eq!((log.shown.len(), log.len), (0, 0));
    }
}

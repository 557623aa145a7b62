//! Hex tracer middleware: wraps any [`Transport`] and logs every byte written (`tx`) and read (`rx`) as
//! hex via `tracing::debug!` (target `ami_media::trace`), optionally keeping a record in memory. The hex
//! is the format test vectors and fuzz seeds are written in, so a field capture can become a test.

use std::fmt::Write as _;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::{BoxFuture, SerialSettings, Transport};

/// Lower-case hex, bytes separated by one space: `01 03 00 00 00 0a c5 cd`.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len().saturating_mul(3));
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Which way bytes went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Written to the transport.
    Tx,
    /// Read from the transport.
    Rx,
    /// Dropped by [`Transport::discard_input`] (only the count is known: the bytes are empty).
    Discarded,
}

/// One traced chunk of bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceRecord {
    /// Direction.
    pub direction: Direction,
    /// The bytes, as one read or write call moved them.
    pub bytes: Vec<u8>,
}

/// A shared in-memory trace, filled by a recording [`Tracer`].
pub type TraceLog = Arc<Mutex<Vec<TraceRecord>>>;

/// A [`Transport`] wrapper that logs traffic.
pub struct Tracer<T> {
    inner: T,
    label: String,
    log: Option<TraceLog>,
}

impl<T: Transport> Tracer<T> {
    /// Wraps `inner`; log lines carry `media = <inner.describe()>`.
    pub fn new(inner: T) -> Self {
        let label = inner.describe();
        Self { inner, label, log: None }
    }

    /// Also appends every chunk to `log`.
    #[must_use]
    pub fn recording(mut self, log: TraceLog) -> Self {
        self.log = Some(log);
        self
    }

    /// The wrapped transport.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Unwraps the inner transport.
    pub fn into_inner(self) -> T {
        self.inner
    }

    fn record(&self, direction: Direction, bytes: &[u8]) {
        match direction {
            Direction::Tx => {
                tracing::debug!(target: "ami_media::trace", media = %self.label, "tx {}", hex(bytes))
            }
            Direction::Rx => {
                tracing::debug!(target: "ami_media::trace", media = %self.label, "rx {}", hex(bytes))
            }
            Direction::Discarded => {}
        }
        if let Some(log) = &self.log {
            let mut log = log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            log.push(TraceRecord { direction, bytes: bytes.to_vec() });
        }
    }
}

impl<T: Transport> AsyncRead for Tracer<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = ready!(Pin::new(&mut this.inner).poll_read(cx, buf));
        match &res {
            Ok(()) => {
                let new = buf.filled().get(before..).unwrap_or_default();
                if new.is_empty() {
                    tracing::debug!(target: "ami_media::trace", media = %this.label, "rx eof");
                } else {
                    this.record(Direction::Rx, new);
                }
            }
            Err(e) => {
                tracing::debug!(target: "ami_media::trace", media = %this.label, error = %e, "rx error")
            }
        }
        Poll::Ready(res)
    }
}

impl<T: Transport> AsyncWrite for Tracer<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = ready!(Pin::new(&mut this.inner).poll_write(cx, buf));
        match &res {
            Ok(n) => this.record(Direction::Tx, buf.get(..*n).unwrap_or(buf)),
            Err(e) => {
                tracing::debug!(target: "ami_media::trace", media = %this.label, error = %e, "tx error")
            }
        }
        Poll::Ready(res)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<T: Transport> Transport for Tracer<T> {
    fn discard_input(&mut self) -> io::Result<usize> {
        let n = self.inner.discard_input()?;
        if n > 0 {
            tracing::debug!(target: "ami_media::trace", media = %self.label, "discarded {n} stale byte(s)");
            self.record(Direction::Discarded, &[]);
        }
        Ok(n)
    }

    fn reconnect(&mut self) -> BoxFuture<'_, io::Result<()>> {
        tracing::debug!(target: "ami_media::trace", media = %self.label, "reconnect");
        self.inner.reconnect()
    }

    fn set_line(&mut self, settings: &SerialSettings) -> io::Result<()> {
        tracing::debug!(target: "ami_media::trace", media = %self.label, %settings, "set line");
        self.inner.set_line(settings)
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn is_connected(&self) -> bool {
        self.inner.is_connected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loopback;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn hex_is_spaced_lower_case() {
        assert_eq!(hex(&[0x01, 0x03, 0xc5, 0xcd]), "01 03 c5 cd");
        assert_eq!(hex(&[]), "");
    }

    #[tokio::test]
    async fn records_tx_and_rx_and_passes_bytes_through() {
        let (a, mut b) = loopback::pair();
        let log = TraceLog::default();
        let mut t = Tracer::new(a).recording(log.clone());
        t.write_all(&[0x01, 0x03, 0x00, 0x00, 0x00, 0x0a, 0xc5, 0xcd]).await.unwrap();
        let mut req = [0u8; 8];
        b.read_exact(&mut req).await.unwrap();
        b.write_all(&[0x01, 0x83, 0x02]).await.unwrap();
        let mut rep = [0u8; 3];
        t.read_exact(&mut rep).await.unwrap();
        assert_eq!(rep, [0x01, 0x83, 0x02]);
        b.write_all(b"zz").await.unwrap();
        assert_eq!(t.discard_input().unwrap(), 2);

        let log = log.lock().unwrap();
        assert_eq!(
            *log,
            vec![
                TraceRecord { direction: Direction::Tx, bytes: vec![0x01, 0x03, 0x00, 0x00, 0x00, 0x0a, 0xc5, 0xcd] },
                TraceRecord { direction: Direction::Rx, bytes: vec![0x01, 0x83, 0x02] },
                TraceRecord { direction: Direction::Discarded, bytes: vec![] },
            ]
        );
        assert_eq!(t.describe(), "loopback:a");
    }
}

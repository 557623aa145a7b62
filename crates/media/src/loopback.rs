//! In-process loopback: two connected [`Transport`]s built on `tokio::io::duplex`, for tests and the
//! in-process demo. What one end writes, the other reads. Dropping one end is seen by the other as EOF
//! on read and `BrokenPipe` on write, like a closed TCP connection.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

use crate::{BoxFuture, SerialSettings, Transport};

/// Default buffer size of each direction of a [`pair`].
pub const DEFAULT_CAPACITY: usize = 64 * 1024;

/// One end of a loopback pair.
#[derive(Debug)]
pub struct LoopbackTransport {
    io: DuplexStream,
    name: String,
}

/// Two connected ends, `loopback:a` and `loopback:b`, each direction buffering [`DEFAULT_CAPACITY`] bytes.
pub fn pair() -> (LoopbackTransport, LoopbackTransport) {
    pair_with_capacity(DEFAULT_CAPACITY)
}

/// Two connected ends with `capacity` bytes of buffer per direction (a writer waits when it is full).
pub fn pair_with_capacity(capacity: usize) -> (LoopbackTransport, LoopbackTransport) {
    let (a, b) = tokio::io::duplex(capacity.max(1));
    (LoopbackTransport { io: a, name: "loopback:a".into() }, LoopbackTransport { io: b, name: "loopback:b".into() })
}

impl LoopbackTransport {
    /// Renames this end for logs (`describe()`).
    #[must_use]
    pub fn named(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }
}

impl AsyncRead for LoopbackTransport {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for LoopbackTransport {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl Transport for LoopbackTransport {
    fn discard_input(&mut self) -> io::Result<usize> {
        // Poll with a no-op waker: take what is already buffered, never wait. A later real poll
        // registers the real waker again.
        let mut cx = Context::from_waker(Waker::noop());
        let mut scratch = [0u8; 1024];
        let mut dropped = 0usize;
        loop {
            let mut rb = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.io).poll_read(&mut cx, &mut rb) {
                Poll::Ready(Ok(())) if !rb.filled().is_empty() => {
                    dropped = dropped.saturating_add(rb.filled().len());
                }
                // EOF, an error, or nothing buffered: done. Errors show up again on the next real read.
                Poll::Ready(_) | Poll::Pending => return Ok(dropped),
            }
        }
    }

    fn reconnect(&mut self) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn set_line(&mut self, _settings: &SerialSettings) -> io::Result<()> {
        Ok(())
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn round_trip_both_ways() {
        let (mut a, mut b) = pair();
        a.write_all(&[0x01, 0x03, 0x00, 0x00, 0x00, 0x0a, 0xc5, 0xcd]).await.unwrap();
        let mut req = [0u8; 8];
        b.read_exact(&mut req).await.unwrap();
        assert_eq!(req, [0x01, 0x03, 0x00, 0x00, 0x00, 0x0a, 0xc5, 0xcd]);
        b.write_all(b"reply").await.unwrap();
        let mut rep = [0u8; 5];
        a.read_exact(&mut rep).await.unwrap();
        assert_eq!(&rep, b"reply");
        assert_eq!(a.describe(), "loopback:a");
        assert_eq!(b.named("meter-sim").describe(), "meter-sim");
    }

    #[tokio::test]
    async fn discard_input_drops_buffered_bytes_without_waiting() {
        let (mut a, mut b) = pair();
        assert_eq!(a.discard_input().unwrap(), 0, "nothing buffered, returns at once");
        b.write_all(&[0xaa; 3000]).await.unwrap();
        assert_eq!(a.discard_input().unwrap(), 3000);
        assert_eq!(a.discard_input().unwrap(), 0);
        b.write_all(b"new").await.unwrap();
        let mut buf = [0u8; 3];
        a.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"new");
    }

    #[tokio::test]
    async fn dropping_one_end_is_eof_for_the_other() {
        let (mut a, b) = pair();
        drop(b);
        let mut buf = [0u8; 4];
        assert_eq!(a.read(&mut buf).await.unwrap(), 0);
        assert!(a.write_all(b"x").await.is_err());
    }
}

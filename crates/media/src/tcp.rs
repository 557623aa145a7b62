//! TCP transport: a Modbus TCP device, a transparent serial-over-TCP gateway, or a meter's own TCP port.
//!
//! Owns one TCP connection and its re-establishment. A connection that the peer closed or reset (seen as
//! EOF or an error on read, write or [`Transport::discard_input`]) is dropped; the next write, or an explicit
//! [`Transport::reconnect`], connects again, so a gateway that dropped us recovers by itself. While
//! disconnected, reads fail at once with [`io::ErrorKind::NotConnected`] instead of hanging, and
//! [`Transport::is_connected`] says so, so that the link layer's `Bus` reconnects explicitly, with its
//! back-off, rather than through the implicit connect of a write.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::{BoxFuture, SerialSettings, Transport};

/// Default bound on one connection attempt (the OS default can be minutes for an unreachable host).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A TCP connection that reconnects on demand.
pub struct TcpTransport {
    host: String,
    port: u16,
    connect_timeout: Duration,
    state: State,
}

enum State {
    Connected(TcpStream),
    Connecting(BoxFuture<'static, io::Result<TcpStream>>),
    Disconnected,
}

impl fmt::Debug for TcpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Connected(_) => "connected",
            State::Connecting(_) => "connecting",
            State::Disconnected => "disconnected",
        };
        f.debug_struct("TcpTransport").field("peer", &self.describe()).field("state", &state).finish()
    }
}

impl TcpTransport {
    /// Connects to `host:port` now (bounded by [`DEFAULT_CONNECT_TIMEOUT`]) with `TCP_NODELAY` set.
    pub async fn connect(host: &str, port: u16) -> io::Result<Self> {
        let mut t = Self::lazy(host, port);
        t.reconnect_now().await?;
        Ok(t)
    }

    /// A transport that connects on its first write (or on [`Transport::reconnect`]) instead of now, for
    /// a daemon that must start while a gateway is down.
    pub fn lazy(host: &str, port: u16) -> Self {
        Self { host: host.to_string(), port, connect_timeout: DEFAULT_CONNECT_TIMEOUT, state: State::Disconnected }
    }

    /// Sets the bound on one connection attempt. Default [`DEFAULT_CONNECT_TIMEOUT`].
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// True while a connection is established (as far as we know: a peer's close is only seen on the next
    /// read, write or discard).
    pub fn is_connected(&self) -> bool {
        matches!(self.state, State::Connected(_))
    }

    fn connect_future(&self) -> BoxFuture<'static, io::Result<TcpStream>> {
        let host = self.host.clone();
        let port = self.port;
        let limit = self.connect_timeout;
        Box::pin(async move {
            let stream =
                tokio::time::timeout(limit, TcpStream::connect((host.as_str(), port))).await.map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, format!("connect to {host}:{port} timed out"))
                })??;
            stream.set_nodelay(true)?;
            // A NAT box or firewall that silently forgets an idle connection would otherwise show up only
            // as timeouts until the kernel gives up (~15 min): probe after 60 s idle, every 15 s, 4 times.
            let keepalive = socket2::TcpKeepalive::new()
                .with_time(std::time::Duration::from_secs(60))
                .with_interval(std::time::Duration::from_secs(15))
                .with_retries(4);
            if let Err(e) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
                tracing::debug!("cannot enable TCP keepalive: {e}");
            }
            Ok(stream)
        })
    }

    async fn reconnect_now(&mut self) -> io::Result<()> {
        self.state = State::Disconnected;
        let stream = self.connect_future().await?;
        tracing::debug!(media = %self.describe(), "tcp connected");
        self.state = State::Connected(stream);
        Ok(())
    }

    /// Drives the state towards `Connected`. Starts a connection when `start` (writes) and fails with
    /// `NotConnected` otherwise (reads). Returns `Ready(Ok)` only in state `Connected`.
    fn poll_connected(&mut self, cx: &mut Context<'_>, start: bool) -> Poll<io::Result<()>> {
        loop {
            match &mut self.state {
                State::Connected(_) => return Poll::Ready(Ok(())),
                State::Disconnected if start => {
                    tracing::debug!(media = %self.describe(), "tcp reconnecting");
                    self.state = State::Connecting(self.connect_future());
                }
                State::Disconnected => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::NotConnected,
                        format!("{} is not connected", self.describe()),
                    )))
                }
                State::Connecting(fut) => {
                    let res = ready!(fut.as_mut().poll(cx));
                    match res {
                        Ok(stream) => {
                            tracing::debug!(media = %self.describe(), "tcp connected");
                            self.state = State::Connected(stream);
                        }
                        Err(e) => {
                            self.state = State::Disconnected;
                            return Poll::Ready(Err(e));
                        }
                    }
                }
            }
        }
    }

    fn drop_connection(&mut self, why: &dyn fmt::Display) {
        if matches!(self.state, State::Connected(_)) {
            tracing::debug!(media = %self.describe(), %why, "tcp connection lost");
        }
        self.state = State::Disconnected;
    }
}

impl AsyncRead for TcpTransport {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_connected(cx, false))?;
        let State::Connected(stream) = &mut this.state else {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        };
        let before = buf.filled().len();
        let want = buf.remaining();
        match ready!(Pin::new(stream).poll_read(cx, buf)) {
            Ok(()) => {
                if want > 0 && buf.filled().len() == before {
                    this.drop_connection(&"closed by peer");
                }
                Poll::Ready(Ok(()))
            }
            Err(e) => {
                this.drop_connection(&e);
                Poll::Ready(Err(e))
            }
        }
    }
}

impl AsyncWrite for TcpTransport {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_connected(cx, true))?;
        let State::Connected(stream) = &mut this.state else {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        };
        match ready!(Pin::new(stream).poll_write(cx, buf)) {
            Ok(0) if !buf.is_empty() => {
                this.drop_connection(&"write returned 0");
                Poll::Ready(Err(io::ErrorKind::WriteZero.into()))
            }
            Ok(n) => Poll::Ready(Ok(n)),
            Err(e) => {
                this.drop_connection(&e);
                Poll::Ready(Err(e))
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match &mut this.state {
            State::Connected(stream) => match ready!(Pin::new(stream).poll_flush(cx)) {
                Ok(()) => Poll::Ready(Ok(())),
                Err(e) => {
                    this.drop_connection(&e);
                    Poll::Ready(Err(e))
                }
            },
            _ => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match &mut this.state {
            State::Connected(stream) => Pin::new(stream).poll_shutdown(cx),
            _ => Poll::Ready(Ok(())),
        }
    }
}

impl Transport for TcpTransport {
    fn discard_input(&mut self) -> io::Result<usize> {
        let State::Connected(stream) = &mut self.state else {
            return Ok(0);
        };
        let mut scratch = [0u8; 1024];
        let mut dropped = 0usize;
        loop {
            match stream.try_read(&mut scratch) {
                Ok(0) => {
                    // The peer closed: forget the connection now so the next write connects afresh
                    // instead of writing into a dead socket.
                    self.drop_connection(&"closed by peer");
                    return Ok(dropped);
                }
                Ok(n) => dropped = dropped.saturating_add(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(dropped),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.drop_connection(&e);
                    return Ok(dropped);
                }
            }
        }
    }

    fn reconnect(&mut self) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(self.reconnect_now())
    }

    fn set_line(&mut self, _settings: &SerialSettings) -> io::Result<()> {
        Ok(())
    }

    fn is_connected(&self) -> bool {
        TcpTransport::is_connected(self)
    }

    fn describe(&self) -> String {
        if self.host.contains(':') {
            format!("tcp://[{}]:{}", self.host, self.port)
        } else {
            format!("tcp://{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn listener() -> (TcpListener, u16) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        (l, port)
    }

    #[tokio::test]
    async fn connections_probe_with_tcp_keepalive() {
        let (l, port) = listener().await;
        let t = TcpTransport::connect("127.0.0.1", port).await.unwrap();
        let _peer = l.accept().await.unwrap();
        let State::Connected(stream) = &t.state else { panic!("not connected") };
        let sock = socket2::SockRef::from(stream);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), std::time::Duration::from_secs(60));
    }

    #[tokio::test]
    async fn reconnects_after_the_server_drops_the_connection() {
        let (l, port) = listener().await;
        let server = tokio::spawn(async move {
            // First connection: read one request, then hang up without answering.
            let (mut c1, _) = l.accept().await.unwrap();
            let mut b = [0u8; 3];
            c1.read_exact(&mut b).await.unwrap();
            assert_eq!(&b, b"one");
            drop(c1);
            // Second connection: echo one request.
            let (mut c2, _) = l.accept().await.unwrap();
            c2.read_exact(&mut b).await.unwrap();
            c2.write_all(&b).await.unwrap();
            b
        });
        let mut t = TcpTransport::connect("127.0.0.1", port).await.unwrap();
        assert!(t.is_connected());
        t.write_all(b"one").await.unwrap();
        let mut b = [0u8; 3];
        // The server hung up: the read sees EOF and the transport forgets the connection.
        assert_eq!(t.read(&mut b).await.unwrap(), 0);
        assert!(!t.is_connected());
        // Reads on a disconnected transport fail promptly instead of hanging.
        let err = t.read(&mut b).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotConnected);
        // The next write connects again by itself.
        t.write_all(b"two").await.unwrap();
        t.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"two");
        assert_eq!(&server.await.unwrap(), b"two");
    }

    #[tokio::test]
    async fn discard_input_notices_a_closed_peer_so_the_next_write_reconnects() {
        let (l, port) = listener().await;
        let server = tokio::spawn(async move {
            let (c1, _) = l.accept().await.unwrap();
            drop(c1);
            let (mut c2, _) = l.accept().await.unwrap();
            let mut b = [0u8; 4];
            c2.read_exact(&mut b).await.unwrap();
            b
        });
        let mut t = TcpTransport::connect("127.0.0.1", port).await.unwrap();
        // Wait until the FIN has arrived.
        for _ in 0..200 {
            t.discard_input().unwrap();
            if !t.is_connected() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(!t.is_connected());
        t.write_all(b"ping").await.unwrap();
        assert_eq!(&server.await.unwrap(), b"ping");
    }

    #[tokio::test]
    async fn discard_input_drops_stale_bytes() {
        let (l, port) = listener().await;
        let mut t = TcpTransport::connect("127.0.0.1", port).await.unwrap();
        let (mut c, _) = l.accept().await.unwrap();
        c.write_all(b"stale reply").await.unwrap();
        // Let the bytes cross loopback.
        let mut dropped = 0;
        for _ in 0..200 {
            dropped += t.discard_input().unwrap();
            if dropped == 11 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(dropped, 11);
        assert!(t.is_connected());
        c.write_all(b"fresh").await.unwrap();
        let mut b = [0u8; 5];
        t.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"fresh");
    }

    #[tokio::test]
    async fn explicit_reconnect_opens_a_new_connection() {
        let (l, port) = listener().await;
        let mut t = TcpTransport::connect("127.0.0.1", port).await.unwrap();
        let (_c1, a1) = l.accept().await.unwrap();
        assert!(Transport::is_connected(&t));
        t.reconnect().await.unwrap();
        let (_c2, a2) = l.accept().await.unwrap();
        assert_ne!(a1.port(), a2.port(), "a new connection has a new source port");
    }

    #[tokio::test]
    async fn connect_failure_is_an_error_and_lazy_connects_on_first_write() {
        let (l, port) = listener().await;
        drop(l);
        assert!(TcpTransport::connect("127.0.0.1", port).await.is_err());
        let mut t = TcpTransport::lazy("127.0.0.1", port);
        assert!(!t.is_connected());
        assert!(t.write_all(b"x").await.is_err(), "nobody listens");
        assert!(!t.is_connected());
        assert_eq!(t.describe(), format!("tcp://127.0.0.1:{port}"));
        // The trait says the same, also through a box (what the bus holds).
        let boxed: Box<dyn Transport> = Box::new(t);
        assert!(!boxed.is_connected());
    }
}

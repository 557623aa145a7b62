//! Reconnect behaviour of the Bus against a scripted gateway: a peer that refuses connections, one that
//! closes a working connection, one that accepts and closes at once. Connect attempts are counted at the
//! transport, and time is paused, so the back-off is checked to the millisecond without sleeping.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use ami_link::backoff::Backoff;
use ami_link::{Bus, BusConfig, BusHandle, Check, Exchange, LinkError, ReplyMatcher};
use ami_media::{BoxFuture, SerialSettings, Transport};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const MS: Duration = Duration::from_millis(1);

/// The gateway as the test scripts it, shared with the transport.
#[derive(Default)]
struct Gateway {
    /// Accepts connections (else: connection refused) and keeps them open.
    up: AtomicBool,
    /// Accepts connections but closes each one right after the request arrived.
    closes_at_once: AtomicBool,
    /// Closes the current connection (seen at the next read or discard), like an idle timeout.
    kick: AtomicBool,
    /// Connect attempts, explicit (`reconnect`) and implicit (a write while disconnected).
    attempts: AtomicU32,
}

/// A transport to the scripted gateway: echoes each request back as its reply.
struct GatewayTransport {
    gw: Arc<Gateway>,
    connected: bool,
    echo: Vec<u8>,
    eof_pending: bool,
    waker: Option<Waker>,
}

impl GatewayTransport {
    fn new(gw: &Arc<Gateway>, connected: bool) -> Self {
        Self { gw: Arc::clone(gw), connected, echo: Vec::new(), eof_pending: false, waker: None }
    }

    fn connect(&mut self) -> io::Result<()> {
        self.gw.attempts.fetch_add(1, Ordering::SeqCst);
        self.echo.clear();
        self.eof_pending = false;
        self.connected = self.gw.up.load(Ordering::SeqCst);
        if self.connected {
            Ok(())
        } else {
            Err(io::ErrorKind::ConnectionRefused.into())
        }
    }

    fn kicked(&mut self) -> bool {
        if self.connected && self.gw.kick.swap(false, Ordering::SeqCst) {
            self.connected = false;
        }
        !self.connected
    }
}

impl AsyncRead for GatewayTransport {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.eof_pending {
            // The gateway closed after taking the request: EOF, like TcpTransport reports it.
            this.eof_pending = false;
            this.connected = false;
            return Poll::Ready(Ok(()));
        }
        if this.kicked() {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        }
        if this.echo.is_empty() {
            this.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = this.echo.len().min(buf.remaining());
        buf.put_slice(&this.echo[..n]);
        this.echo.drain(..n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for GatewayTransport {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.connected {
            // What TcpTransport does: a write while disconnected connects first.
            if let Err(e) = this.connect() {
                return Poll::Ready(Err(e));
            }
        }
        if !this.gw.up.load(Ordering::SeqCst) {
            this.connected = false;
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if this.gw.closes_at_once.load(Ordering::SeqCst) {
            this.eof_pending = true;
        } else {
            this.echo.extend_from_slice(buf);
        }
        if let Some(w) = this.waker.take() {
            w.wake();
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Transport for GatewayTransport {
    fn discard_input(&mut self) -> io::Result<usize> {
        self.kicked();
        let n = self.echo.len();
        self.echo.clear();
        Ok(n)
    }

    fn reconnect(&mut self) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(async move { self.connect() })
    }

    fn set_line(&mut self, _settings: &SerialSettings) -> io::Result<()> {
        Ok(())
    }

    fn describe(&self) -> String {
        "gateway".into()
    }

    fn is_connected(&self) -> bool {
        self.connected
    }
}

/// The reply is the echo of the request.
struct Echo(usize);

impl ReplyMatcher for Echo {
    fn check(&self, buf: &[u8]) -> Check {
        if buf.len() >= self.0 {
            Check::Complete { len: self.0 }
        } else {
            Check::Incomplete
        }
    }
}

fn exchange() -> Exchange {
    Exchange::new("m", vec![0x01, 0x03, 0x00, 0x00], Some(Box::new(Echo(4))))
}

/// A bus to the gateway with a reconnect back-off of 100, 200, 400, 400 … ms.
fn bus(gw: &Arc<Gateway>, connected: bool, retries: u32) -> BusHandle {
    let config = BusConfig {
        id: "gw".into(),
        guard_time: Duration::ZERO,
        timeout: 300 * MS,
        retries,
        drain_quiet: 10 * MS,
        reconnect: Backoff::new(100 * MS, 400 * MS).without_jitter(),
    };
    Bus::spawn(Box::new(GatewayTransport::new(gw, connected)), config)
}

fn io_message(result: Result<ami_link::Reply, LinkError>) -> String {
    match result {
        Err(LinkError::Io { message, .. }) => message,
        other => panic!("expected an I/O error, got {other:?}"),
    }
}

fn attempts(gw: &Gateway) -> u32 {
    gw.attempts.load(Ordering::SeqCst)
}

#[tokio::test(start_paused = true)]
async fn a_refusing_gateway_is_asked_once_per_back_off_step_not_once_per_exchange() {
    let gw = Arc::new(Gateway::default());
    let bus = bus(&gw, false, 2);

    // Twenty meters' exchanges at the same instant: one connect attempt, the rest refused at once.
    let first = io_message(bus.transact(exchange()).await);
    assert!(first.contains("connect failed"), "{first}");
    for _ in 0..19 {
        let m = io_message(bus.transact(exchange()).await);
        assert!(m.contains("transport down (connect failed") && m.contains("next connect attempt in 100 ms"), "{m}");
    }
    assert_eq!(attempts(&gw), 1);

    // The attempts follow the back-off: 100, then 200, then 400 ms (the cap) apart.
    for (wait, total) in [(100, 2), (200, 3), (400, 4), (400, 5)] {
        tokio::time::advance((wait - 1) * MS).await;
        io_message(bus.transact(exchange()).await);
        assert_eq!(attempts(&gw), total - 1, "no attempt 1 ms early");
        tokio::time::advance(MS).await;
        io_message(bus.transact(exchange()).await);
        assert_eq!(attempts(&gw), total, "an attempt once the delay has passed");
    }
    let s = bus.stats();
    assert_eq!((s.connects, s.connect_failures, s.rejected_while_down), (0, 5, 19 + 4));
    assert_eq!((s.total.requests, s.total.failures), (28, 28));

    // The gateway is back: the next due attempt connects, the exchange succeeds, the back-off starts over.
    gw.up.store(true, Ordering::SeqCst);
    tokio::time::advance(400 * MS).await;
    assert_eq!(bus.transact(exchange()).await.unwrap().frame, [0x01, 0x03, 0x00, 0x00]);
    assert_eq!((attempts(&gw), bus.stats().connects), (6, 1));
}

#[tokio::test(start_paused = true)]
async fn a_working_connection_that_closes_is_reopened_at_once_and_a_dead_gateway_then_backs_off() {
    let gw = Arc::new(Gateway::default());
    gw.up.store(true, Ordering::SeqCst);
    let bus = bus(&gw, true, 2);
    assert!(bus.transact(exchange()).await.is_ok());
    assert_eq!(attempts(&gw), 0);

    // The gateway closed the idle connection: noticed before the write, reconnected without waiting.
    gw.kick.store(true, Ordering::SeqCst);
    let r = bus.transact(exchange()).await.unwrap();
    assert_eq!((r.attempts, attempts(&gw)), (1, 1));

    // The gateway dies: the failed write gets one immediate reconnect (refused), then the back-off holds.
    gw.up.store(false, Ordering::SeqCst);
    let m = io_message(bus.transact(exchange()).await);
    assert!(m.contains("connect failed"), "{m}");
    assert_eq!(attempts(&gw), 2);
    let m = io_message(bus.transact(exchange()).await);
    assert!(m.contains("next connect attempt in 100 ms"), "{m}");
    assert_eq!(attempts(&gw), 2);
}

#[tokio::test(start_paused = true)]
async fn a_gateway_that_accepts_and_closes_at_once_costs_one_reconnect_per_exchange_not_one_per_retry() {
    let gw = Arc::new(Gateway::default());
    gw.up.store(true, Ordering::SeqCst);
    gw.closes_at_once.store(true, Ordering::SeqCst);
    let bus = bus(&gw, true, 5);

    // Attempt 1 meets EOF; the connection had been open, so attempt 2 reconnects at once and meets EOF
    // again; attempt 3 would have to wait for the back-off, so the exchange fails instead of using up
    // its retries on connect().
    let m = io_message(bus.transact(exchange()).await);
    assert!(m.contains("next connect attempt in 100 ms"), "{m}");
    assert_eq!(attempts(&gw), 1);
    let c = bus.stats().total;
    assert_eq!((c.retries, c.failures), (1, 1));

    // Once the gateway behaves, the next due attempt recovers.
    gw.closes_at_once.store(false, Ordering::SeqCst);
    tokio::time::advance(100 * MS).await;
    assert!(bus.transact(exchange()).await.is_ok());
    assert_eq!(attempts(&gw), 2);
}

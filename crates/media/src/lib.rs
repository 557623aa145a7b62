//! Byte transports for ami.
//!
//! This crate owns bytes and nothing else: it opens a transport from a URL (`tcp://host:port`,
//! `serial:///dev/ttyUSB0?baud=9600&parity=none&data=8&stop=1`), reads, writes, discards stale input,
//! reconnects and changes line settings. It never interprets a frame, never retries a request and never
//! sleeps on behalf of a protocol: framing, timeouts and retries belong to `ami-link`.
//!
//! Panic contract: nothing here panics on input from the peer or on a malformed URL; every failure is a
//! [`MediaError`] or an [`std::io::Error`].

pub mod fault;
pub mod loopback;
pub mod serial;
pub mod tcp;
pub mod tracer;
mod url;

pub use fault::{FaultConfig, FaultInjector, FaultStats};
pub use loopback::LoopbackTransport;
pub use serial::SerialTransport;
pub use tcp::TcpTransport;
pub use tracer::{hex, Direction, TraceLog, TraceRecord, Tracer};
pub use url::{MediaUrl, Parity, SerialSettings, UrlError};

use std::future::Future;
use std::io;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};

/// A boxed future returned by [`Transport`] methods (the trait is object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One open byte transport: a serial port, a TCP connection, or a test double.
///
/// Reads and writes are the tokio traits. The extra methods are what the link layer needs to keep a line
/// healthy; the `Bus` driver in `ami-link` is the only caller in production.
pub trait Transport: AsyncRead + AsyncWrite + Send + Unpin {
    /// Drops every byte that has already arrived and not been read (serial: `tcflush(TCIFLUSH)`; TCP: a
    /// non-blocking read until it would block). Returns how many bytes were dropped when that is known
    /// (0 when the OS does not say). Never waits for more bytes: waiting "until the line is silent" is the
    /// link layer's job.
    fn discard_input(&mut self) -> io::Result<usize>;

    /// Closes and re-opens the underlying connection (TCP: a new connect; serial: re-open the device).
    /// Transports that cannot reconnect return `Ok(())`.
    fn reconnect(&mut self) -> BoxFuture<'_, io::Result<()>>;

    /// Changes baud rate, parity, data and stop bits. TCP and test doubles accept and ignore it
    /// (a transparent serial-over-TCP gateway has its own fixed settings).
    fn set_line(&mut self, settings: &SerialSettings) -> io::Result<()>;

    /// A short human description for logs, e.g. `tcp://10.0.0.5:502` or `serial:///dev/ttyUSB0@9600 8N1`.
    fn describe(&self) -> String;

    /// Whether the transport believes it can carry bytes now (TCP: a connection is established, as far as
    /// we know; serial: the port is open). Transports that cannot tell say `true`, the default.
    ///
    /// The link layer's `Bus` asks before each write and, when this is `false`, reconnects explicitly and
    /// rate-limited instead of letting a write connect implicitly.
    fn is_connected(&self) -> bool {
        true
    }
}

/// Why a transport could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The URL does not parse.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// The OS refused to open or connect.
    #[error("cannot open {url}: {source}")]
    Open {
        /// The URL as given.
        url: String,
        /// The OS error.
        source: io::Error,
    },
}

/// Opens the transport a URL names. TCP connects now (and reconnects later on demand); serial opens the
/// device with the URL's line settings.
///
/// Must be called inside a tokio runtime (serial ports register with its reactor).
pub async fn open(url: &MediaUrl) -> Result<Box<dyn Transport>, MediaError> {
    let opened: io::Result<Box<dyn Transport>> = match url {
        MediaUrl::Tcp { host, port, .. } => {
            TcpTransport::connect(host, *port).await.map(|t| Box::new(t) as Box<dyn Transport>)
        }
        MediaUrl::Serial { path, settings, .. } => {
            SerialTransport::open(path, *settings).map(|t| Box::new(t) as Box<dyn Transport>)
        }
    };
    opened.map_err(|source| MediaError::Open { url: url.to_string(), source })
}

/// A boxed transport is a transport, so middleware ([`FaultInjector`], [`Tracer`]) can wrap what [`open`]
/// returns.
impl<T: Transport + ?Sized> Transport for Box<T> {
    fn discard_input(&mut self) -> io::Result<usize> {
        (**self).discard_input()
    }

    fn reconnect(&mut self) -> BoxFuture<'_, io::Result<()>> {
        (**self).reconnect()
    }

    fn set_line(&mut self, settings: &SerialSettings) -> io::Result<()> {
        (**self).set_line(settings)
    }

    fn describe(&self) -> String {
        (**self).describe()
    }

    fn is_connected(&self) -> bool {
        (**self).is_connected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn open_reports_the_url_when_the_os_refuses() {
        let url: MediaUrl = "serial:///dev/ami-no-such-port?baud=9600".parse().unwrap();
        let err = open(&url).await.err().expect("no such device");
        let text = err.to_string();
        assert!(text.contains("serial:///dev/ami-no-such-port"), "{text}");
    }

    #[tokio::test]
    async fn open_tcp_connects_and_describes_itself() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let url: MediaUrl = format!("tcp://127.0.0.1:{port}?framing=rtu").parse().unwrap();
        let t = open(&url).await.unwrap();
        assert_eq!(t.describe(), format!("tcp://127.0.0.1:{port}"));
    }
}

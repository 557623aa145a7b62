//! Serial transport: RS-232/RS-485 ports, USB adapters, optical probes and ptys.
//!
//! Owns one open device (a tokio-serial `SerialStream`, no flow control) and its line settings. A read or
//! write error (an unplugged USB adapter, a pty whose other side went away) closes the device; the next
//! write, or an explicit [`Transport::reconnect`], opens the same path again with the current settings.
//! While closed, reads fail at once with [`io::ErrorKind::NotConnected`].

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_serial::{ClearBuffer, DataBits, FlowControl, SerialPort, SerialStream, StopBits};

use crate::{BoxFuture, Parity, SerialSettings, Transport};

/// A serial device opened with explicit line settings.
pub struct SerialTransport {
    path: String,
    settings: SerialSettings,
    stream: Option<SerialStream>,
}

impl fmt::Debug for SerialTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SerialTransport").field("port", &self.describe()).field("open", &self.stream.is_some()).finish()
    }
}

fn data_bits(settings: &SerialSettings) -> io::Result<DataBits> {
    Ok(match settings.data_bits {
        5 => DataBits::Five,
        6 => DataBits::Six,
        7 => DataBits::Seven,
        8 => DataBits::Eight,
        other => {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{other} data bits (expected 5..=8)")))
        }
    })
}

fn stop_bits(settings: &SerialSettings) -> io::Result<StopBits> {
    Ok(match settings.stop_bits {
        1 => StopBits::One,
        2 => StopBits::Two,
        other => {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{other} stop bits (expected 1 or 2)")))
        }
    })
}

fn parity(settings: &SerialSettings) -> tokio_serial::Parity {
    match settings.parity {
        Parity::None => tokio_serial::Parity::None,
        Parity::Even => tokio_serial::Parity::Even,
        Parity::Odd => tokio_serial::Parity::Odd,
    }
}

fn open_stream(path: &str, settings: &SerialSettings) -> io::Result<SerialStream> {
    let builder = tokio_serial::new(path, settings.baud)
        .data_bits(data_bits(settings)?)
        .parity(parity(settings))
        .stop_bits(stop_bits(settings)?)
        .flow_control(FlowControl::None);
    Ok(SerialStream::open(&builder)?)
}

fn apply(stream: &mut SerialStream, settings: &SerialSettings) -> io::Result<()> {
    stream.set_baud_rate(settings.baud)?;
    stream.set_data_bits(data_bits(settings)?)?;
    stream.set_parity(parity(settings))?;
    stream.set_stop_bits(stop_bits(settings)?)?;
    stream.set_flow_control(FlowControl::None)?;
    Ok(())
}

impl SerialTransport {
    /// Opens `path` with `settings`. Must be called inside a tokio runtime.
    pub fn open(path: &str, settings: SerialSettings) -> io::Result<Self> {
        let stream = open_stream(path, &settings)?;
        Ok(Self { path: path.to_string(), settings, stream: Some(stream) })
    }

    /// Wraps an already open stream (e.g. one end of `SerialStream::pair()`). `path` is used by
    /// [`Transport::reconnect`] and in logs; the settings are applied to the stream now.
    pub fn from_stream(mut stream: SerialStream, path: &str, settings: SerialSettings) -> io::Result<Self> {
        apply(&mut stream, &settings)?;
        Ok(Self { path: path.to_string(), settings, stream: Some(stream) })
    }

    /// The line settings in force.
    pub fn settings(&self) -> SerialSettings {
        self.settings
    }

    /// True while the device is open.
    pub fn is_open(&self) -> bool {
        self.stream.is_some()
    }

    fn close(&mut self, why: &dyn fmt::Display) {
        if self.stream.take().is_some() {
            tracing::warn!(media = %self.describe(), %why, "serial port closed after an error");
        }
    }

    fn ensure_open(&mut self) -> io::Result<&mut SerialStream> {
        if self.stream.is_none() {
            tracing::debug!(media = %self.describe(), "re-opening serial port");
            self.stream = Some(open_stream(&self.path, &self.settings)?);
        }
        self.stream.as_mut().ok_or_else(|| io::ErrorKind::NotConnected.into())
    }
}

impl AsyncRead for SerialTransport {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(stream) = this.stream.as_mut() else {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                format!("{} is not open", this.describe()),
            )));
        };
        match ready!(Pin::new(stream).poll_read(cx, buf)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(e) => {
                this.close(&e);
                Poll::Ready(Err(e))
            }
        }
    }
}

impl AsyncWrite for SerialTransport {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let stream = match this.ensure_open() {
            Ok(s) => s,
            Err(e) => return Poll::Ready(Err(e)),
        };
        match ready!(Pin::new(stream).poll_write(cx, buf)) {
            Ok(n) => Poll::Ready(Ok(n)),
            Err(e) => {
                this.close(&e);
                Poll::Ready(Err(e))
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().stream.as_mut() {
            Some(s) => Pin::new(s).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().stream.as_mut() {
            Some(s) => Pin::new(s).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl Transport for SerialTransport {
    fn discard_input(&mut self) -> io::Result<usize> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(0);
        };
        // FIONREAD first so the caller can log how much was stale; not every driver answers it.
        let queued = stream.bytes_to_read().unwrap_or(0);
        stream.clear(ClearBuffer::Input)?;
        Ok(usize::try_from(queued).unwrap_or(usize::MAX))
    }

    fn reconnect(&mut self) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(async move {
            // Close first: the port is opened exclusively (TIOCEXCL), a second open would fail.
            self.stream = None;
            self.stream = Some(open_stream(&self.path, &self.settings)?);
            tracing::debug!(media = %self.describe(), "serial port re-opened");
            Ok(())
        })
    }

    fn set_line(&mut self, settings: &SerialSettings) -> io::Result<()> {
        if let Some(stream) = self.stream.as_mut() {
            apply(stream, settings)?;
        }
        self.settings = *settings;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("serial://{}@{}", self.path, self.settings)
    }

    fn is_connected(&self) -> bool {
        self.is_open()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A socat pty pair, killed on drop.
    struct Socat {
        child: Child,
        a: PathBuf,
        b: PathBuf,
        _dir: tempfile::TempDir,
    }

    impl Drop for Socat {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn socat_pair() -> Option<Socat> {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("ttyA");
        let b = dir.path().join("ttyB");
        let child = match Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", a.display()))
            .arg(format!("pty,raw,echo=0,link={}", b.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                println!("skipping: socat is not installed ({e})");
                return None;
            }
        };
        let s = Socat { child, a, b, _dir: dir };
        for _ in 0..200 {
            if Path::new(&s.a).exists() && Path::new(&s.b).exists() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        println!("skipping: socat did not create the pty links");
        None
    }

    async fn read_n(t: &mut SerialTransport, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        tokio::time::timeout(Duration::from_secs(2), t.read_exact(&mut buf)).await.unwrap().unwrap();
        buf
    }

    #[tokio::test]
    async fn round_trip_discard_set_line_and_reconnect_on_a_socat_pty_pair() {
        let Some(pair) = socat_pair() else { return };
        let settings = SerialSettings { baud: 9600, parity: Parity::Even, data_bits: 8, stop_bits: 1 };
        let mut a = SerialTransport::open(pair.a.to_str().unwrap(), settings).unwrap();
        let mut b = SerialTransport::open(pair.b.to_str().unwrap(), SerialSettings::default()).unwrap();
        assert!(a.describe().ends_with("ttyA@9600 8E1"), "{}", a.describe());

        a.write_all(&[0x01, 0x03, 0x00, 0x00, 0x00, 0x0a, 0xc5, 0xcd]).await.unwrap();
        assert_eq!(read_n(&mut b, 8).await, [0x01, 0x03, 0x00, 0x00, 0x00, 0x0a, 0xc5, 0xcd]);

        // Stale bytes: wait until they are queued at `a`, then discard them.
        b.write_all(b"stale").await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        a.discard_input().unwrap();
        b.write_all(b"fresh").await.unwrap();
        assert_eq!(read_n(&mut a, 5).await, b"fresh");

        // Line settings change at run time (ptys accept and ignore them).
        let slow = SerialSettings { baud: 300, parity: Parity::Even, data_bits: 7, stop_bits: 1 };
        a.set_line(&slow).unwrap();
        assert_eq!(a.settings(), slow);

        // Re-open the device path; the link keeps working with the new settings.
        a.reconnect().await.unwrap();
        assert!(a.is_open());
        assert!(a.describe().ends_with("@300 7E1"));
        b.write_all(b"again").await.unwrap();
        assert_eq!(read_n(&mut a, 5).await, b"again");
    }

    #[tokio::test]
    async fn works_on_an_in_process_pty_pair() {
        let (m, s) = SerialStream::pair().unwrap();
        let mut a = SerialTransport::from_stream(m, "/dev/ptmx", SerialSettings::default()).unwrap();
        let mut b = SerialTransport::from_stream(s, "/dev/pts-test", SerialSettings::default()).unwrap();
        a.write_all(b"hello").await.unwrap();
        assert_eq!(read_n(&mut b, 5).await, b"hello");
        b.write_all(b"reply").await.unwrap();
        assert_eq!(read_n(&mut a, 5).await, b"reply");
    }

    #[tokio::test]
    async fn opening_a_missing_device_fails() {
        let err = SerialTransport::open("/dev/ami-missing-tty", SerialSettings::default()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    }
}

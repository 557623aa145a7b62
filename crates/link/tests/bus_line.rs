//! The Bus switches line settings around an exchange, in queue order — what the IEC 62056-21 mode E
//! opening needs (sign-on at 300 baud 7E1, acknowledgement, then HDLC at the meter's baud rate 8N1).
//!
//! Time is paused: the 300-baud transmission wait runs on tokio's virtual clock.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use ami_link::mode_e::{self, IdentificationMatcher};
use ami_link::{Bus, BusConfig, Exchange, LinkError};
use ami_media::loopback::{self, LoopbackTransport};
use ami_media::{BoxFuture, Parity, SerialSettings, Transport};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

const MS: Duration = Duration::from_millis(1);

const SIGN_ON_LINE: SerialSettings = SerialSettings { baud: 300, parity: Parity::Even, data_bits: 7, stop_bits: 1 };
const HDLC_LINE: SerialSettings = SerialSettings { baud: 9600, parity: Parity::None, data_bits: 8, stop_bits: 1 };

#[derive(Debug, Clone, PartialEq)]
enum Event {
    Wrote(Vec<u8>, Instant),
    Line(SerialSettings, Instant),
}

/// A loopback end that records writes and line changes, and can refuse line changes.
struct Recording {
    io: LoopbackTransport,
    log: Arc<Mutex<Vec<Event>>>,
    refuse_line: bool,
}

impl AsyncRead for Recording {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Recording {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            this.log.lock().unwrap().push(Event::Wrote(buf[..n].to_vec(), Instant::now()));
        }
        r
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl Transport for Recording {
    fn discard_input(&mut self) -> io::Result<usize> {
        self.io.discard_input()
    }
    fn reconnect(&mut self) -> BoxFuture<'_, io::Result<()>> {
        self.io.reconnect()
    }
    fn set_line(&mut self, settings: &SerialSettings) -> io::Result<()> {
        if self.refuse_line {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "baud rate not supported"));
        }
        self.log.lock().unwrap().push(Event::Line(*settings, Instant::now()));
        Ok(())
    }
    fn describe(&self) -> String {
        "recording".into()
    }
}

fn config() -> BusConfig {
    BusConfig { id: "optical".into(), guard_time: 10 * MS, timeout: 500 * MS, retries: 0, ..BusConfig::default() }
}

fn recording(refuse_line: bool) -> (Recording, LoopbackTransport, Arc<Mutex<Vec<Event>>>) {
    let (a, b) = loopback::pair();
    let log = Arc::new(Mutex::new(Vec::new()));
    (Recording { io: a, log: Arc::clone(&log), refuse_line }, b, log)
}

#[tokio::test(start_paused = true)]
async fn mode_e_opening_switches_the_line_before_sign_on_and_after_the_ack_has_left() {
    let (transport, mut meter, log) = recording(false);
    let bus = Bus::spawn(Box::new(transport), config());

    // The simulated optical meter: identification to the sign-on, then silence.
    let meter_task = tokio::spawn(async move {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 64];
        loop {
            let n = meter.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..n]);
            if let Some((None, used)) = mode_e::parse_sign_on(&buf) {
                buf.drain(..used);
                meter.write_all(&mode_e::identification("LGZ", b'5', "ZMD3104107.B32")).await.unwrap();
            }
            if let Some((v, z, y, _)) = mode_e::parse_ack(&buf) {
                return (v, z, y, meter);
            }
        }
    });

    let sign_on = Exchange::new("m1", mode_e::sign_on(None), Some(Box::new(IdentificationMatcher)));
    let reply = bus.transact_with_line(sign_on, Some(SIGN_ON_LINE), None).await.unwrap();
    let id = mode_e::parse_identification(&reply.frame).unwrap();
    assert!(id.mode_e);
    let baud = mode_e::baud_rate(id.baud_char).unwrap();
    assert_eq!(baud, 9600);

    let ack = Exchange::new("m1", mode_e::ack_hdlc(id.baud_char), None);
    let hdlc_line = SerialSettings { baud, ..HDLC_LINE };
    bus.transact_with_line(ack, None, Some(hdlc_line)).await.unwrap();
    let (v, z, y, _meter) = meter_task.await.unwrap();
    assert_eq!((v, z, y), (b'2', b'5', b'2'));

    let log = log.lock().unwrap().clone();
    let kinds: Vec<String> = log
        .iter()
        .map(|e| match e {
            Event::Wrote(b, _) => format!("wrote {}", String::from_utf8_lossy(b).escape_debug()),
            Event::Line(s, _) => format!("line {s}"),
        })
        .collect();
    assert_eq!(
        kinds,
        ["line 300 7E1", "wrote /?!\\r\\n", "wrote \\u{6}252\\r\\n", "line 9600 8N1"],
        "order of line changes and writes"
    );
    let (Event::Wrote(_, ack_at), Event::Line(_, switch_at)) = (&log[2], &log[3]) else { unreachable!() };
    // 6 characters of 10 bits (7E1 + start + stop) at 300 baud = 200 ms on the wire, plus the guard time.
    let waited = *switch_at - *ack_at;
    assert!(waited >= 210 * MS, "switched after only {waited:?}");
    assert!(waited < 260 * MS, "waited too long: {waited:?}");
}

#[tokio::test(start_paused = true)]
async fn the_line_is_not_switched_after_a_failed_exchange() {
    let (transport, _silent_meter, log) = recording(false);
    let bus = Bus::spawn(Box::new(transport), config());
    let sign_on = Exchange::new("m1", mode_e::sign_on(None), Some(Box::new(IdentificationMatcher)));
    let err = bus.transact_with_line(sign_on, Some(SIGN_ON_LINE), Some(HDLC_LINE)).await.unwrap_err();
    assert!(matches!(err, LinkError::Timeout { .. }), "{err}");
    let lines: Vec<SerialSettings> =
        log.lock().unwrap().iter().filter_map(|e| if let Event::Line(s, _) = e { Some(*s) } else { None }).collect();
    assert_eq!(lines, [SIGN_ON_LINE]);
}

#[tokio::test(start_paused = true)]
async fn set_line_runs_in_queue_order_and_a_refusal_is_a_transport_error() {
    let (transport, mut meter, log) = recording(false);
    let bus = Bus::spawn(Box::new(transport), config());
    let first = bus.transact(Exchange::new("m1", b"one".to_vec(), None));
    let switch = bus.set_line(HDLC_LINE);
    let second = bus.transact(Exchange::new("m1", b"two".to_vec(), None));
    let (a, b, c) = tokio::join!(first, switch, second);
    a.unwrap();
    b.unwrap();
    c.unwrap();
    let mut got = [0u8; 6];
    meter.read_exact(&mut got).await.unwrap();
    let kinds: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .map(|e| match e {
            Event::Wrote(b, _) => String::from_utf8_lossy(b).into_owned(),
            Event::Line(s, _) => s.to_string(),
        })
        .collect();
    assert_eq!(kinds, ["one", "9600 8N1", "two"]);

    let (transport, _meter, _log) = recording(true);
    let bus = Bus::spawn(Box::new(transport), config());
    let err = bus.set_line(SIGN_ON_LINE).await.unwrap_err();
    assert!(matches!(&err, LinkError::Io { message, .. } if message.contains("baud rate not supported")), "{err}");
    let err =
        bus.transact_with_line(Exchange::new("m1", b"x".to_vec(), None), Some(SIGN_ON_LINE), None).await.unwrap_err();
    assert!(matches!(err, LinkError::Io { .. }));
}

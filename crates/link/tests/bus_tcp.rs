//! The Bus over a real TCP connection on 127.0.0.1: a gateway that drops the connection is reconnected
//! without the caller noticing more than one failed attempt; a gateway that is down is not asked to
//! connect once per exchange.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ami_link::backoff::Backoff;
use ami_link::modbus::{decode_tcp_frame, encode_tcp, TcpReplyMatcher};
use ami_link::{Bus, BusConfig, Exchange};
use ami_media::TcpTransport;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn config() -> BusConfig {
    BusConfig {
        id: "gw".into(),
        guard_time: Duration::from_millis(1),
        timeout: Duration::from_millis(500),
        retries: 2,
        drain_quiet: Duration::from_millis(10),
        ..BusConfig::default()
    }
}

fn exchange(tid: u16) -> Exchange {
    Exchange::new(
        "m",
        encode_tcp(tid, 1, &[0x03, 0x00, 0x00, 0x00, 0x01]),
        Some(Box::new(TcpReplyMatcher { transaction: tid, unit: 1, function: 3 })),
    )
}

/// Reads one Modbus TCP request; `None` when the client closed.
async fn request(conn: &mut TcpStream) -> Option<u16> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64];
    loop {
        if let Some(f) = decode_tcp_frame(&buf).unwrap() {
            return Some(f.transaction);
        }
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn reply(tid: u16) -> Vec<u8> {
    encode_tcp(tid, 1, &[0x03, 0x02, 0x00, tid as u8])
}

#[tokio::test]
async fn dropped_gateway_connection_is_recovered_by_reconnect() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        // Connection 1 answers one request, then the gateway drops it.
        let (mut c1, _) = listener.accept().await.unwrap();
        let tid = request(&mut c1).await.unwrap();
        c1.write_all(&reply(tid)).await.unwrap();
        drop(c1);
        // Connection 2 serves everything else.
        let (mut c2, _) = listener.accept().await.unwrap();
        while let Some(tid) = request(&mut c2).await {
            c2.write_all(&reply(tid)).await.unwrap();
        }
    });
    let transport = TcpTransport::connect("127.0.0.1", port).await.unwrap();
    let bus = Bus::spawn(Box::new(transport), config());
    assert_eq!(bus.transact(exchange(1)).await.unwrap().frame, reply(1));
    tokio::time::sleep(Duration::from_millis(20)).await; // the FIN arrives
    let r = bus.transact(exchange(2)).await.unwrap();
    assert_eq!(r.frame, reply(2));
    assert_eq!(r.attempts, 1, "the closed connection was noticed before writing");
    assert_eq!(bus.transact(exchange(3)).await.unwrap().frame, reply(3));
    drop(bus);
    server.await.unwrap();
}

#[tokio::test]
async fn gateway_closing_mid_exchange_costs_one_attempt() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        // Connection 1 takes the request and hangs up without answering.
        let (mut c1, _) = listener.accept().await.unwrap();
        request(&mut c1).await.unwrap();
        drop(c1);
        let (mut c2, _) = listener.accept().await.unwrap();
        while let Some(tid) = request(&mut c2).await {
            c2.write_all(&reply(tid)).await.unwrap();
        }
    });
    let transport = TcpTransport::connect("127.0.0.1", port).await.unwrap();
    let bus = Bus::spawn(Box::new(transport), config());
    let r = bus.transact(exchange(9)).await.unwrap();
    assert_eq!(r.frame, reply(9));
    assert_eq!(r.attempts, 2);
    let c = bus.stats().total;
    assert_eq!((c.replies, c.retries, c.failures), (1, 1, 0));
    drop(bus);
    server.await.unwrap();
}

#[tokio::test]
async fn gateway_down_is_an_io_error_connects_are_rate_limited_and_up_again_recovers() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let transport = TcpTransport::lazy("127.0.0.1", port);
    drop(listener);
    let backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(50)).without_jitter();
    let bus = Bus::spawn(Box::new(transport), BusConfig { reconnect: backoff, ..config() });
    let err = bus.transact(exchange(1)).await.unwrap_err();
    assert!(matches!(&err, ami_link::LinkError::Io { message, .. } if message.contains("connect failed")), "{err:?}");

    // A burst of exchanges while the gateway refuses: refused at once, connect() is not called per exchange.
    let started = Instant::now();
    for tid in 2..32 {
        let err = bus.transact(exchange(tid)).await.unwrap_err();
        assert!(matches!(err, ami_link::LinkError::Io { .. }), "{err:?}");
    }
    let steps = u64::try_from(started.elapsed().as_millis() / 50).unwrap();
    let s = bus.stats();
    assert_eq!(s.connect_failures + s.rejected_while_down, 31);
    assert!(s.connect_failures <= 1 + steps, "{} connect attempts in {steps} back-off steps", s.connect_failures);

    // The gateway comes back on the same port: the next due attempt connects.
    let Ok(listener) = TcpListener::bind(("127.0.0.1", port)).await else {
        println!("skipping the recovery half: port {port} was taken meanwhile");
        return;
    };
    let accepted = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut c, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                while let Some(tid) = request(&mut c).await {
                    c.write_all(&reply(tid)).await.unwrap();
                }
            });
        }
    });
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(bus.transact(exchange(40)).await.unwrap().frame, reply(40));
    assert_eq!(bus.transact(exchange(41)).await.unwrap().frame, reply(41));
    assert_eq!((accepted.load(Ordering::SeqCst), bus.stats().connects), (1, 1));
}

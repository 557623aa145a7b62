//! The Bus over a real TCP connection on 127.0.0.1: a gateway that drops the connection is reconnected
//! without the caller noticing more than one failed attempt.

use std::time::Duration;

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
async fn gateway_down_is_an_io_error_and_up_again_recovers() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let transport = TcpTransport::lazy("127.0.0.1", port);
    drop(listener);
    let bus = Bus::spawn(Box::new(transport), config());
    let err = bus.transact(exchange(1)).await.unwrap_err();
    assert!(matches!(err, ami_link::LinkError::Io { .. }), "{err:?}");

    // The gateway comes back on the same port: the next exchange connects again by itself.
    let Ok(listener) = TcpListener::bind(("127.0.0.1", port)).await else {
        println!("skipping the recovery half: port {port} was taken meanwhile");
        return;
    };
    tokio::spawn(async move {
        let (mut c, _) = listener.accept().await.unwrap();
        while let Some(tid) = request(&mut c).await {
            c.write_all(&reply(tid)).await.unwrap();
        }
    });
    assert_eq!(bus.transact(exchange(2)).await.unwrap().frame, reply(2));
}

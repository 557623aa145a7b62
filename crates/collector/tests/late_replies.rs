//! A meter that answers after the timeout never corrupts the next read: the late reply is recognised as
//! not belonging to the next request and dropped, and the next request gets its own answer. Shown against
//! pymodbus (an independent slave) and against `amid simulate`, over Modbus TCP and RTU over TCP.

mod common;

use std::time::Duration;

use ami_link::{Bus, BusConfig, LinkError};
use ami_media::MediaUrl;
use ami_protocols::modbus::{Framing, Master, MasterError, Request, Response};
use common::*;
use serde_json::json;

async fn late_then_next(port: u16, framing: Framing) {
    let q = if framing == Framing::Rtu { "?framing=rtu" } else { "" };
    let url: MediaUrl = format!("tcp://127.0.0.1:{port}{q}").parse().unwrap();
    let transport = ami_media::open(&url).await.unwrap();
    let bus = Bus::spawn(transport, BusConfig { id: "t".into(), retries: 0, ..BusConfig::default() });
    let master = Master::new(bus.clone(), framing);

    // Request A times out: the slave holds its reply.
    let a = master
        .clone()
        .with_timeout(Some(Duration::from_millis(300)))
        .with_retries(Some(0))
        .request("m", 1, &Request::ReadHoldingRegisters { address: 0, quantity: 2 })
        .await;
    assert!(matches!(a, Err(MasterError::Link(LinkError::Timeout { .. }))), "{a:?}");

    // Request B is sent while A's reply is still on its way; B must get B's registers, not A's.
    let b = master
        .clone()
        .with_timeout(Some(Duration::from_secs(3)))
        .request("m", 1, &Request::ReadHoldingRegisters { address: 10, quantity: 3 })
        .await
        .unwrap();
    assert_eq!(b, Response::Registers(vec![10, 11, 12]));

    // And the line is clean afterwards.
    let c = master.request("m", 1, &Request::ReadHoldingRegisters { address: 0, quantity: 2 }).await.unwrap();
    assert_eq!(c, Response::Registers(vec![1, 2]));
    let stats = bus.stats();
    assert_eq!(stats.total.timeouts, 1);
    assert!(stats.total.rejected >= 1, "the late reply was seen and rejected: {stats:?}");
}

fn pymodbus_data() -> serde_json::Value {
    json!({ "holding": { "0": [1, 2], "10": [10, 11, 12] } })
}

#[tokio::test(flavor = "multi_thread")]
async fn late_pymodbus_reply_is_not_taken_for_the_next_read_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _slave = pymodbus_slave(
        dir.path(),
        &pymodbus_data(),
        &["--framer", "socket", "--tcp", &port.to_string(), "--delay-first", "1:800"],
    );
    wait_port(port);
    late_then_next(port, Framing::Tcp).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn late_pymodbus_reply_is_not_taken_for_the_next_read_over_rtu() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _slave = pymodbus_slave(
        dir.path(),
        &pymodbus_data(),
        &["--framer", "rtu", "--tcp", &port.to_string(), "--delay-first", "1:800"],
    );
    wait_port(port);
    late_then_next(port, Framing::Rtu).await;
}

/// `amid simulate` with a reply delay longer than the first request's timeout.
fn slow_simulator(rtu: bool) -> (Proc, u16) {
    let dir = repo().join("crates/collector/tests/data");
    let port = free_port();
    let q = if rtu { "?framing=rtu" } else { "" };
    let mut child = amid()
        .args(["simulate", "--profile", dir.join("types.xml").to_str().unwrap()])
        .args(["--listen", &format!("tcp://127.0.0.1:{port}{q}"), "--delay", "500ms"])
        .args(["--set", "power=230.5", "--set", "power_byte_swapped=230.5"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_line(&mut child, "simulating");
    wait_port(port);
    (Proc(child), port)
}

async fn late_then_next_sim(port: u16, framing: Framing) {
    let q = if framing == Framing::Rtu { "?framing=rtu" } else { "" };
    let url: MediaUrl = format!("tcp://127.0.0.1:{port}{q}").parse().unwrap();
    let bus = Bus::spawn(ami_media::open(&url).await.unwrap(), BusConfig { retries: 0, ..BusConfig::default() });
    let master = Master::new(bus.clone(), framing);
    let a = master
        .clone()
        .with_timeout(Some(Duration::from_millis(200)))
        .request("m", 1, &Request::ReadHoldingRegisters { address: 0, quantity: 2 })
        .await;
    assert!(matches!(a, Err(MasterError::Link(LinkError::Timeout { .. }))), "{a:?}");
    // types.xml: holding 14..15 is f32 power, 16..17 the same byte-swapped; 4 registers, unlike A's 2.
    let b = master
        .clone()
        .with_timeout(Some(Duration::from_secs(3)))
        .request("m", 1, &Request::ReadHoldingRegisters { address: 14, quantity: 4 })
        .await
        .unwrap();
    // 230.5 as f32, then byte-swapped: registers 14..17, not A's late reply.
    assert_eq!(b, Response::Registers(vec![0x4366, 0x8000, 0x6643, 0x0080]));
    assert!(bus.stats().total.rejected >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn late_simulator_reply_is_not_taken_for_the_next_read_over_tcp() {
    let (_sim, port) = slow_simulator(false);
    late_then_next_sim(port, Framing::Tcp).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn late_simulator_reply_is_not_taken_for_the_next_read_over_rtu() {
    let (_sim, port) = slow_simulator(true);
    late_then_next_sim(port, Framing::Rtu).await;
}

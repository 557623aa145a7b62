//! Behaviour of the Bus owner task against a scripted fake meter on the other end of a loopback pair.
//!
//! Time is paused (`start_paused`): timeouts, guard times and drains run on tokio's virtual clock, which
//! jumps ahead whenever every task is idle, so these tests never sleep for real.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ami_link::modbus::{
    decode_rtu_request, decode_tcp_frame, encode_rtu, encode_tcp, RtuReplyMatcher, RtuRequest, TcpFrame,
    TcpReplyMatcher,
};
use ami_link::{Bus, BusConfig, BusHandle, Exchange, LinkError, Reply};
use ami_media::loopback::{self, LoopbackTransport};
use ami_media::{FaultConfig, FaultInjector, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

const MS: Duration = Duration::from_millis(1);

fn config() -> BusConfig {
    BusConfig {
        id: "rs485-a".into(),
        guard_time: 10 * MS,
        timeout: 300 * MS,
        retries: 2,
        drain_quiet: 50 * MS,
        ..BusConfig::default()
    }
}

/// The fake meter's end of the line.
struct Peer {
    io: LoopbackTransport,
    buf: Vec<u8>,
}

impl Peer {
    fn new(io: LoopbackTransport) -> Self {
        Self { io, buf: Vec::new() }
    }

    /// The next RTU request, or `None` at EOF (the bus stopped).
    async fn rtu_request(&mut self) -> Option<RtuRequest> {
        loop {
            match decode_rtu_request(&self.buf) {
                Ok(Some(req)) => {
                    self.buf.drain(..req.len);
                    return Some(req);
                }
                Ok(None) => {}
                Err(e) => panic!("bus wrote a bad frame: {e}: {:02x?}", self.buf),
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// The next Modbus TCP request, or `None` at EOF.
    async fn tcp_request(&mut self) -> Option<TcpFrame> {
        loop {
            if let Some(f) = decode_tcp_frame(&self.buf).expect("bus wrote a bad frame") {
                self.buf.drain(..f.len);
                return Some(f);
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 256];
        match self.io.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
    }

    /// True when nothing more than what was already decoded has arrived.
    fn line_is_idle(&mut self) -> bool {
        self.buf.is_empty() && self.io.discard_input().unwrap() == 0
    }
}

fn read_request(unit: u8, function: u8, address: u16, count: u16) -> Vec<u8> {
    let [a0, a1] = address.to_be_bytes();
    let [c0, c1] = count.to_be_bytes();
    encode_rtu(unit, &[function, a0, a1, c0, c1])
}

fn registers_reply(unit: u8, function: u8, values: &[u16]) -> Vec<u8> {
    let mut pdu = vec![function, (values.len() * 2) as u8];
    for v in values {
        pdu.extend_from_slice(&v.to_be_bytes());
    }
    encode_rtu(unit, &pdu)
}

fn rtu_exchange(meter: &str, unit: u8, function: u8, address: u16, count: u16) -> Exchange {
    Exchange::new(
        meter,
        read_request(unit, function, address, count),
        Some(Box::new(RtuReplyMatcher { unit, function })),
    )
}

fn spawn_bus(config: BusConfig) -> (BusHandle, Peer) {
    let (ours, theirs) = loopback::pair();
    (Bus::spawn(Box::new(ours), config), Peer::new(theirs))
}

#[tokio::test(start_paused = true)]
async fn reply_arrives_and_is_returned() {
    let (bus, mut peer) = spawn_bus(config());
    let meter = tokio::spawn(async move {
        let req = peer.rtu_request().await.unwrap();
        assert_eq!(req.unit, 1);
        assert_eq!(req.pdu, [0x03, 0x00, 0x00, 0x00, 0x02]);
        peer.send(&registers_reply(1, 3, &[230, 50])).await;
        peer
    });
    let reply = bus.transact(rtu_exchange("incomer", 1, 3, 0, 2)).await.unwrap();
    assert_eq!(reply, Reply { frame: registers_reply(1, 3, &[230, 50]), attempts: 1 });
    meter.await.unwrap();

    let stats = bus.stats();
    assert_eq!(stats.bus, "rs485-a");
    assert_eq!(bus.id(), "rs485-a");
    let c = &stats.meters["incomer"];
    assert_eq!((c.requests, c.replies, c.timeouts, c.retries, c.failures), (1, 1, 0, 0, 0));
    assert!(c.last_success.is_some());
    assert_eq!(stats.total, *c);
}

#[tokio::test(start_paused = true)]
async fn no_reply_is_retried_then_times_out_with_counters() {
    let (bus, mut peer) = spawn_bus(config());
    let meter = tokio::spawn(async move {
        let mut seen = 0;
        while peer.rtu_request().await.is_some() {
            seen += 1; // a dead meter: never answers
        }
        seen
    });
    let start = Instant::now();
    let err = bus.transact(rtu_exchange("dead", 7, 4, 0, 2)).await.unwrap_err();
    let took = start.elapsed();
    assert_eq!(err, LinkError::Timeout { meter: "dead".into(), attempts: 3, timeout_ms: 300 });
    // 3 × (300 ms timeout + 50 ms quiet drain); the guard time has passed during the drain.
    assert!(took >= 900 * MS && took <= 1100 * MS, "took {took:?}");

    let c = bus.stats().meters["dead"].clone();
    assert_eq!((c.requests, c.replies, c.timeouts, c.retries, c.failures), (1, 0, 3, 2, 1));
    assert_eq!(c.last_success, None);
    drop(bus);
    assert_eq!(meter.await.unwrap(), 3, "the meter saw the request and two retries");
}

#[tokio::test(start_paused = true)]
async fn per_exchange_timeout_and_retries_override_the_bus_defaults() {
    let (bus, mut peer) = spawn_bus(config());
    tokio::spawn(async move { while peer.rtu_request().await.is_some() {} });
    let start = Instant::now();
    let ex = rtu_exchange("m", 1, 3, 0, 1).with_timeout(1000 * MS).with_retries(0);
    let err = bus.transact(ex).await.unwrap_err();
    assert_eq!(err, LinkError::Timeout { meter: "m".into(), attempts: 1, timeout_ms: 1000 });
    assert!(start.elapsed() >= 1000 * MS && start.elapsed() < 1200 * MS);
}

#[tokio::test(start_paused = true)]
async fn corrupt_reply_then_good_one_succeeds_on_the_second_attempt() {
    let (bus, mut peer) = spawn_bus(config());
    tokio::spawn(async move {
        peer.rtu_request().await.unwrap();
        let mut bad = registers_reply(1, 3, &[1, 2]);
        let last = bad.len() - 1;
        bad[last] ^= 0x55; // damaged CRC
        peer.send(&bad).await;
        peer.rtu_request().await.unwrap();
        peer.send(&registers_reply(1, 3, &[1, 2])).await;
        while peer.rtu_request().await.is_some() {}
    });
    let reply = bus.transact(rtu_exchange("m", 1, 3, 0, 2)).await.unwrap();
    assert_eq!(reply.attempts, 2);
    assert_eq!(reply.frame, registers_reply(1, 3, &[1, 2]));
    let c = bus.stats().meters["m"].clone();
    assert_eq!((c.requests, c.replies, c.checksum_errors, c.retries, c.timeouts, c.failures), (1, 1, 1, 1, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn corrupt_on_every_attempt_fails_as_corrupt() {
    let (bus, mut peer) = spawn_bus(BusConfig { retries: 1, ..config() });
    tokio::spawn(async move {
        while let Some(req) = peer.rtu_request().await {
            let mut bad = registers_reply(req.unit, 3, &[9]);
            bad[3] ^= 0xFF;
            peer.send(&bad).await;
        }
    });
    match bus.transact(rtu_exchange("m", 1, 3, 0, 1)).await {
        Err(LinkError::Corrupt { meter, attempts: 2, reason }) => {
            assert_eq!(meter, "m");
            assert!(reason.starts_with("CRC expected 0x"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let c = bus.stats().total;
    assert_eq!((c.checksum_errors, c.failures, c.retries), (2, 1, 1));
}

/// The classic Modbus RTU bug: meter A answers after the master gave up, while the master already waits
/// for meter B. The late frame must be rejected and B must get its own reply.
#[tokio::test(start_paused = true)]
async fn late_reply_is_never_taken_for_the_next_request() {
    let (bus, mut peer) = spawn_bus(BusConfig { retries: 0, timeout: 100 * MS, ..config() });
    tokio::spawn(async move {
        // Request 1 to unit 1: the slow meter does not answer in time.
        let first = peer.rtu_request().await.unwrap();
        assert_eq!(first.unit, 1);
        // Request 2 to unit 2 arrives; only now does unit 1's late reply hit the line, then unit 2's.
        let second = peer.rtu_request().await.unwrap();
        assert_eq!(second.unit, 2);
        peer.send(&registers_reply(1, 3, &[0xDEAD, 0xBEEF])).await;
        tokio::time::sleep(5 * MS).await;
        peer.send(&registers_reply(2, 3, &[7, 8])).await;
        while peer.rtu_request().await.is_some() {}
    });
    let err = bus.transact(rtu_exchange("a", 1, 3, 0, 2)).await.unwrap_err();
    assert!(matches!(err, LinkError::Timeout { attempts: 1, .. }), "{err:?}");
    let reply = bus.transact(rtu_exchange("b", 2, 3, 0, 2)).await.unwrap();
    assert_eq!(reply.frame, registers_reply(2, 3, &[7, 8]), "meter b got its own reply");
    assert_eq!(reply.attempts, 1);

    let stats = bus.stats();
    assert_eq!(stats.meters["b"].rejected, 1);
    assert_eq!(stats.meters["b"].replies, 1);
    assert_eq!(stats.meters["a"].timeouts, 1);
    assert_eq!(stats.total.rejected, 1);
    assert!(stats.bytes_discarded >= 9, "the late frame was dropped: {}", stats.bytes_discarded);
}

/// Same meter, another function: a late reply to "read input registers" while the master waits for
/// "read holding registers".
#[tokio::test(start_paused = true)]
async fn late_reply_to_another_function_of_the_same_meter_is_rejected() {
    let (bus, mut peer) = spawn_bus(BusConfig { retries: 0, timeout: 100 * MS, ..config() });
    tokio::spawn(async move {
        peer.rtu_request().await.unwrap(); // FC 4, unanswered in time
        peer.rtu_request().await.unwrap(); // FC 3
        peer.send(&registers_reply(1, 4, &[1])).await;
        peer.send(&registers_reply(1, 3, &[2])).await;
        while peer.rtu_request().await.is_some() {}
    });
    assert!(bus.transact(rtu_exchange("m", 1, 4, 0, 1)).await.is_err());
    let reply = bus.transact(rtu_exchange("m", 1, 3, 0, 1)).await.unwrap();
    assert_eq!(reply.frame, registers_reply(1, 3, &[2]));
    assert_eq!(bus.stats().meters["m"].rejected, 1);
}

/// Modbus TCP: the transaction id tells a late reply from the right one even for the same unit and
/// function.
#[tokio::test(start_paused = true)]
async fn late_tcp_reply_with_an_old_transaction_id_is_rejected() {
    let (bus, mut peer) = spawn_bus(BusConfig { retries: 0, timeout: 100 * MS, ..config() });
    tokio::spawn(async move {
        let first = peer.tcp_request().await.unwrap();
        let second = peer.tcp_request().await.unwrap();
        peer.send(&encode_tcp(first.transaction, 1, &[0x03, 0x02, 0x00, 0x01])).await;
        peer.send(&encode_tcp(second.transaction, 1, &[0x03, 0x02, 0x00, 0x02])).await;
        while peer.tcp_request().await.is_some() {}
    });
    let tcp = |tid: u16| {
        Exchange::new(
            "gw-meter",
            encode_tcp(tid, 1, &[0x03, 0x00, 0x00, 0x00, 0x01]),
            Some(Box::new(TcpReplyMatcher { transaction: tid, unit: 1, function: 3 })),
        )
    };
    assert!(bus.transact(tcp(1)).await.is_err());
    let reply = bus.transact(tcp(2)).await.unwrap();
    assert_eq!(reply.frame, encode_tcp(2, 1, &[0x03, 0x02, 0x00, 0x02]));
    assert_eq!(bus.stats().total.rejected, 1);
}

/// A late reply that arrives after the attempt timed out but before the next request (while the bus
/// drains or idles) never reaches the next exchange.
#[tokio::test(start_paused = true)]
async fn late_reply_arriving_between_requests_is_drained() {
    let (bus, mut peer) = spawn_bus(BusConfig { retries: 0, timeout: 100 * MS, ..config() });
    tokio::spawn(async move {
        peer.rtu_request().await.unwrap();
        tokio::time::sleep(120 * MS).await; // 20 ms after the deadline, during the drain
        peer.send(&registers_reply(1, 3, &[0xBAD])).await;
        peer.rtu_request().await.unwrap();
        peer.send(&registers_reply(1, 3, &[0x600D])).await;
        while peer.rtu_request().await.is_some() {}
    });
    assert!(bus.transact(rtu_exchange("m", 1, 3, 0, 1)).await.is_err());
    let reply = bus.transact(rtu_exchange("m", 1, 3, 0, 1)).await.unwrap();
    assert_eq!(reply.frame, registers_reply(1, 3, &[0x600D]));
    assert_eq!(bus.stats().bytes_discarded, 7);
}

#[tokio::test(start_paused = true)]
async fn stale_input_before_a_request_is_discarded() {
    let (bus, mut peer) = spawn_bus(config());
    // Bytes left on the line by an earlier process: they look like a perfect reply.
    peer.send(&registers_reply(1, 3, &[0xBAD, 0xBAD])).await;
    peer.send(&[0x00, 0xFF]).await;
    tokio::spawn(async move {
        peer.rtu_request().await.unwrap();
        peer.send(&registers_reply(1, 3, &[1, 2])).await;
        while peer.rtu_request().await.is_some() {}
    });
    let reply = bus.transact(rtu_exchange("m", 1, 3, 0, 2)).await.unwrap();
    assert_eq!(reply.frame, registers_reply(1, 3, &[1, 2]));
    assert_eq!(bus.stats().bytes_discarded, 11);
    assert_eq!(bus.stats().total.rejected, 0);
}

#[tokio::test(start_paused = true)]
async fn exchanges_from_two_tasks_never_overlap_on_the_line() {
    let (bus, mut peer) = spawn_bus(config());
    let overlap = Arc::new(AtomicBool::new(false));
    let seen_overlap = Arc::clone(&overlap);
    let meter = tokio::spawn(async move {
        let mut served = 0;
        while let Some(req) = peer.rtu_request().await {
            // Turnaround time of a real meter; meanwhile nothing else may arrive.
            tokio::time::sleep(20 * MS).await;
            if !peer.line_is_idle() {
                seen_overlap.store(true, Ordering::SeqCst);
            }
            let address = u16::from_be_bytes([req.pdu[1], req.pdu[2]]);
            peer.send(&registers_reply(req.unit, 3, &[u16::from(req.unit) * 1000 + address])).await;
            served += 1;
        }
        served
    });
    let mut tasks = Vec::new();
    for unit in [1u8, 2] {
        let bus = bus.clone();
        tasks.push(tokio::spawn(async move {
            for address in 0..10u16 {
                let meter = format!("m{unit}");
                let reply = bus.transact(rtu_exchange(&meter, unit, 3, address, 1)).await.unwrap();
                assert_eq!(reply.frame, registers_reply(unit, 3, &[u16::from(unit) * 1000 + address]));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stats = bus.stats();
    drop(bus);
    assert_eq!(meter.await.unwrap(), 20);
    assert!(!overlap.load(Ordering::SeqCst), "a second request arrived before the first was answered");
    assert_eq!(stats.total.replies, 20);
    assert_eq!(stats.meters["m1"].replies, 10);
    assert_eq!(stats.meters["m2"].replies, 10);
}

#[tokio::test(start_paused = true)]
async fn guard_time_is_kept_between_exchanges() {
    let (bus, mut peer) = spawn_bus(BusConfig { guard_time: 40 * MS, ..config() });
    let meter = tokio::spawn(async move {
        let mut times = Vec::new();
        while let Some(req) = peer.rtu_request().await {
            times.push(Instant::now());
            peer.send(&registers_reply(req.unit, 3, &[0])).await;
            times.push(Instant::now());
        }
        times
    });
    for _ in 0..3 {
        bus.transact(rtu_exchange("m", 1, 3, 0, 1)).await.unwrap();
    }
    drop(bus);
    let t = meter.await.unwrap();
    assert_eq!(t.len(), 6);
    // Request k+1 arrives at least the guard time after reply k went out.
    assert!(t[2] - t[1] >= 40 * MS, "{:?}", t[2] - t[1]);
    assert!(t[4] - t[3] >= 40 * MS, "{:?}", t[4] - t[3]);
}

#[tokio::test(start_paused = true)]
async fn exchange_without_reply_returns_after_the_guard_time() {
    let (bus, mut peer) = spawn_bus(config());
    let meter = tokio::spawn(async move { peer.rtu_request().await });
    let start = Instant::now();
    let broadcast = Exchange::new("all", encode_rtu(0, &[0x06, 0x00, 0x01, 0x00, 0x03]), None);
    let reply = bus.transact(broadcast).await.unwrap();
    assert_eq!(reply, Reply { frame: vec![], attempts: 1 });
    assert!(start.elapsed() >= 10 * MS);
    let req = meter.await.unwrap().unwrap();
    assert_eq!(req.unit, 0);
    assert_eq!(bus.stats().meters["all"].requests, 1);
}

#[tokio::test(start_paused = true)]
async fn reply_split_into_small_reads_is_reassembled() {
    let (ours, theirs) = loopback::pair();
    let split = FaultInjector::new(ours, FaultConfig { max_read_chunk: Some(2), seed: 3, ..FaultConfig::default() });
    let bus = Bus::spawn(Box::new(split), config());
    let mut peer = Peer::new(theirs);
    tokio::spawn(async move {
        while let Some(req) = peer.rtu_request().await {
            peer.send(&registers_reply(req.unit, 3, &[1, 2, 3, 4, 5, 6, 7, 8])).await;
        }
    });
    for _ in 0..5 {
        let reply = bus.transact(rtu_exchange("m", 5, 3, 0, 8)).await.unwrap();
        assert_eq!(reply.frame, registers_reply(5, 3, &[1, 2, 3, 4, 5, 6, 7, 8]));
    }
}

#[tokio::test(start_paused = true)]
async fn lost_requests_are_retried_until_one_gets_through() {
    let (ours, theirs) = loopback::pair();
    // Drop half the written frames; the seed makes the pattern repeatable.
    let lossy = FaultInjector::new(ours, FaultConfig { drop_write: 0.5, seed: 11, ..FaultConfig::default() });
    let bus = Bus::spawn(Box::new(lossy), BusConfig { retries: 5, ..config() });
    let mut peer = Peer::new(theirs);
    tokio::spawn(async move {
        while let Some(req) = peer.rtu_request().await {
            peer.send(&registers_reply(req.unit, 3, &[42])).await;
        }
    });
    for _ in 0..10 {
        let reply = bus.transact(rtu_exchange("m", 1, 3, 0, 1)).await.unwrap();
        assert_eq!(reply.frame, registers_reply(1, 3, &[42]));
    }
    let c = bus.stats().total;
    assert_eq!(c.replies, 10);
    assert_eq!(c.timeouts, c.retries, "every lost request cost one timeout and one retry");
    assert!(c.timeouts > 0);
}

#[tokio::test(start_paused = true)]
async fn bus_task_stops_when_every_handle_is_dropped() {
    let (bus, mut peer) = spawn_bus(config());
    let second = bus.clone();
    drop(bus);
    assert!(!second.is_closed());
    drop(second);
    // The task dropped its end of the line: the meter sees EOF.
    assert!(peer.rtu_request().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn peer_gone_is_an_io_error_not_a_hang() {
    let (bus, peer) = spawn_bus(config());
    drop(peer);
    match bus.transact(rtu_exchange("m", 1, 3, 0, 1)).await {
        Err(LinkError::Io { bus, .. }) => assert_eq!(bus, "rs485-a"),
        other => panic!("{other:?}"),
    }
    assert_eq!(bus.stats().total.failures, 1);
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_gave_up_before_its_turn_never_reaches_the_line() {
    let (bus, mut peer) = spawn_bus(BusConfig { retries: 0, ..config() });
    let meter = tokio::spawn(async move {
        let mut units = Vec::new();
        while let Some(req) = peer.rtu_request().await {
            units.push(req.unit);
            if req.unit == 3 {
                peer.send(&registers_reply(3, 3, &[1])).await;
            }
        }
        units
    });
    // Unit 1 is dead and holds the line for its whole timeout.
    let slow = tokio::spawn({
        let bus = bus.clone();
        async move { bus.transact(rtu_exchange("dead", 1, 3, 0, 1)).await }
    });
    tokio::task::yield_now().await;
    // Unit 2's caller gives up while still queued.
    let gave_up = tokio::time::timeout(50 * MS, bus.transact(rtu_exchange("impatient", 2, 3, 0, 1))).await;
    assert!(gave_up.is_err());
    assert!(slow.await.unwrap().is_err());
    bus.transact(rtu_exchange("next", 3, 3, 0, 1)).await.unwrap();
    drop(bus);
    assert_eq!(meter.await.unwrap(), [1, 3], "unit 2's request was never written");
}

//! HdlcClient on the Bus talking to an HdlcServer (and the wrapper client to a wrapper server) across a
//! loopback line: long APDUs segmented both ways, a lossy line, foreign frames on the line.

use std::time::Duration;

use ami_link::hdlc::{Address, Control, Frame};
use ami_link::hdlc_session::{Action, Deframer, HdlcClient, HdlcParameters, HdlcServer, ServerAction};
use ami_link::wrapper::{self, WrapperDeframer, WrapperMatcher};
use ami_link::{Bus, BusConfig, BusHandle, Exchange};
use ami_media::loopback;
use ami_media::{FaultConfig, FaultInjector};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const MS: Duration = Duration::from_millis(1);
const SERVER: Address = Address::Two { upper: 1, lower: 0x11 };

fn config() -> BusConfig {
    BusConfig {
        id: "hdlc".into(),
        guard_time: MS,
        timeout: 200 * MS,
        retries: 3,
        drain_quiet: 20 * MS,
        ..BusConfig::default()
    }
}

/// The meter: answers every request APDU with its bytes reversed followed by `extra` bytes, and before
/// each reply puts a frame for another client on the line (which the client's matcher must skip).
async fn meter<T: AsyncRead + AsyncWrite + Unpin>(mut io: T, params: HdlcParameters, extra: usize) {
    let mut server = HdlcServer::new(SERVER, params);
    let mut deframer = Deframer::new();
    let mut chunk = [0u8; 512];
    loop {
        let n = match io.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        for frame in deframer.push(&chunk[..n]) {
            let out = match server.on_frame(&frame) {
                ServerAction::Reply(bytes) => bytes,
                ServerAction::Apdu(apdu) => {
                    let mut reply: Vec<u8> = apdu.iter().rev().copied().collect();
                    reply.extend((0..extra).map(|i| i as u8));
                    server.respond(&reply)
                }
                ServerAction::Ignore => continue,
            };
            let foreign = Frame {
                segmented: false,
                dest: Address::client(0x20),
                src: SERVER,
                control: Control::RR { recv_seq: 0, poll: true },
                info: vec![],
            };
            if io.write_all(&foreign.encode().unwrap()).await.is_err() || io.write_all(&out).await.is_err() {
                return;
            }
        }
    }
}

/// One APDU exchange through the bus: request segments out, reply segments in.
async fn exchange_apdu(bus: &BusHandle, client: &mut HdlcClient, apdu: &[u8]) -> (Vec<u8>, usize) {
    let mut out = client.send_apdu(apdu).unwrap();
    let mut frames = 0;
    loop {
        frames += 1;
        let reply = bus.transact(Exchange::new("m1", out, Some(client.matcher()))).await.unwrap();
        let (frame, _) = Frame::decode(&reply.frame).unwrap().unwrap();
        match client.on_frame(&frame).unwrap() {
            Action::Apdu(apdu) => return (apdu, frames),
            Action::Send(next) => out = next,
            Action::Ignore => panic!("the bus handed over a frame the session ignores"),
        }
    }
}

async fn connect(bus: &BusHandle, proposed: HdlcParameters) -> HdlcClient {
    let mut client = HdlcClient::new(Address::PUBLIC_CLIENT, SERVER, proposed);
    let ua = bus.transact(Exchange::new("m1", client.snrm(), Some(client.matcher()))).await.unwrap();
    let (ua, _) = Frame::decode(&ua.frame).unwrap().unwrap();
    client.on_ua(&ua).unwrap();
    client
}

#[tokio::test(start_paused = true)]
async fn a_2000_byte_apdu_crosses_the_line_in_128_byte_segments_both_ways() {
    let (a, b) = loopback::pair();
    tokio::spawn(meter(b, HdlcParameters::default(), 0));
    let bus = Bus::spawn(Box::new(a), config());
    let mut client = connect(&bus, HdlcParameters::default()).await;
    assert_eq!(client.negotiated().max_info_tx, 128);

    let request: Vec<u8> = (0..2000u32).map(|i| (i * 31 % 251) as u8).collect();
    let (reply, frames) = exchange_apdu(&bus, &mut client, &request).await;
    let expected: Vec<u8> = request.iter().rev().copied().collect();
    assert_eq!(reply, expected);
    // 2003 bytes with the LLC header each way: 16 segments out, 16 back, 31 bus exchanges.
    assert_eq!(frames, 16 + 16 - 1);
    // Every reply was preceded by a frame for client 0x20, which the matcher skipped.
    assert_eq!(bus.stats().total.rejected, 1 + 31);

    let disc = bus.transact(Exchange::new("m1", client.disc(), Some(client.matcher()))).await.unwrap();
    let (ua, _) = Frame::decode(&disc.frame).unwrap().unwrap();
    assert_eq!(ua.control, Control::UA { poll: true });
}

#[tokio::test(start_paused = true)]
async fn a_lossy_line_costs_retries_not_data() {
    let (a, b) = loopback::pair();
    // One written frame in eight is lost, each way, and reads come in random small pieces. A lost request
    // or a lost reply both end in a bus timeout and the same request written again: the meter must take
    // a repeated I-frame or RR as "send your last frame again", never as a new request.
    let meter_side = FaultInjector::new(
        b,
        FaultConfig { seed: 11, drop_write: 0.125, max_read_chunk: Some(7), ..FaultConfig::default() },
    );
    let params = HdlcParameters { max_info_tx: 64, max_info_rx: 64, window_tx: 1, window_rx: 1 };
    tokio::spawn(meter(meter_side, params, 500));
    let lossy = FaultInjector::new(a, FaultConfig { seed: 7, drop_write: 0.125, ..FaultConfig::default() });
    let bus = Bus::spawn(Box::new(lossy), BusConfig { retries: 10, ..config() });
    let mut client = connect(&bus, HdlcParameters::default()).await;
    for round in 0..5u8 {
        let request = vec![round; 300];
        let (reply, _) = exchange_apdu(&bus, &mut client, &request).await;
        assert_eq!(reply.len(), 800);
        assert!(reply[..300].iter().all(|&b| b == round));
    }
    assert!(bus.stats().total.timeouts > 0, "the fault injector dropped nothing; the test proves nothing");
}

#[tokio::test(start_paused = true)]
async fn wrapper_client_and_server_over_the_bus() {
    let (a, mut b) = loopback::pair();
    tokio::spawn(async move {
        let mut deframer = WrapperDeframer::new();
        let mut chunk = [0u8; 1024];
        loop {
            let n = match b.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            for (header, apdu) in deframer.push(&chunk[..n]) {
                // A push for another client first, then the reply.
                let other = wrapper::encode(header.destination, 0x20, &[0x0F]).unwrap();
                let reply = wrapper::encode(header.destination, header.source, &apdu.repeat(3)).unwrap();
                if b.write_all(&other).await.is_err() || b.write_all(&reply).await.is_err() {
                    return;
                }
            }
        }
    });
    let bus = Bus::spawn(Box::new(a), config());
    let matcher = || Some(Box::new(WrapperMatcher { client: 0x10, server: 0x01 }) as Box<dyn ami_link::ReplyMatcher>);
    let apdu = vec![0xC0, 0x01, 0xC1];
    let reply =
        bus.transact(Exchange::new("m1", wrapper::encode(0x10, 0x01, &apdu).unwrap(), matcher())).await.unwrap();
    let (header, got, used) = wrapper::decode(&reply.frame).unwrap().unwrap();
    assert_eq!((header.source, header.destination, used), (0x01, 0x10, reply.frame.len()));
    assert_eq!(got, apdu.repeat(3));
    assert_eq!(bus.stats().total.rejected, 1);
}

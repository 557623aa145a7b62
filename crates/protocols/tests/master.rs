//! `modbus::Master` against a tiny scripted slave on an in-process loopback line, through a real `Bus`.
//! Time is paused: timeouts and late replies are simulated, nothing sleeps for real.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ami_link::modbus::{decode_rtu_request, decode_tcp_frame, encode_rtu, encode_tcp};
use ami_link::{Bus, BusConfig, LinkError};
use ami_media::loopback::{pair, LoopbackTransport};
use ami_protocols::modbus::plan::Table;
use ami_protocols::modbus::{
    encode_exception, encode_response, Exception, Framing, Function, Master, MasterError, PduError, Request, Response,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the slave does with the n-th request it receives (0-based).
#[derive(Clone, Copy)]
enum Script {
    /// Answer at once.
    Answer,
    /// Answer after this delay.
    Late(Duration),
    /// Say nothing.
    Silent,
    /// Answer with one register fewer than asked (a reply of the wrong shape).
    Short,
}

/// A request as the slave saw it: unit, MBAP transaction id (0 for RTU), PDU.
type Seen = (u8, u16, Vec<u8>);

/// A slave serving holding registers `0..100` (`value = 1000 + address`); anything above is exception 02.
struct Slave {
    /// Requests seen: (unit, transaction or 0, pdu).
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Written registers.
    written: Arc<Mutex<BTreeMap<u16, u16>>>,
}

fn answer(request: &Request, written: &BTreeMap<u16, u16>) -> Vec<u8> {
    let register = |a: u16| written.get(&a).copied().unwrap_or(1000 + a);
    match request {
        Request::ReadHoldingRegisters { address, quantity } if u32::from(*address) + u32::from(*quantity) <= 100 => {
            encode_response(request, &Response::Registers((*address..*address + *quantity).map(register).collect()))
        }
        Request::ReadCoils { address, quantity } => {
            encode_response(request, &Response::Bits((*address..*address + *quantity).map(|a| a % 3 == 0).collect()))
        }
        Request::WriteSingleRegister { .. } | Request::WriteMultipleRegisters { .. } => {
            encode_response(request, &Response::Written)
        }
        _ => encode_exception(request.function(), Exception::IllegalDataAddress),
    }
}

impl Slave {
    fn spawn(mut line: LoopbackTransport, framing: Framing, unit: u8, script: Vec<Script>) -> Slave {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let written = Arc::new(Mutex::new(BTreeMap::new()));
        let (seen2, written2) = (Arc::clone(&seen), Arc::clone(&written));
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut n = 0usize;
            let mut chunk = [0u8; 512];
            loop {
                let got = match line.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(got) => got,
                };
                buf.extend_from_slice(&chunk[..got]);
                loop {
                    let (len, to, transaction, pdu) = match framing {
                        Framing::Rtu => match decode_rtu_request(&buf) {
                            Ok(Some(r)) => (r.len, r.unit, 0, r.pdu),
                            Ok(None) => break,
                            Err(_) => {
                                buf.remove(0);
                                continue;
                            }
                        },
                        Framing::Tcp => match decode_tcp_frame(&buf) {
                            Ok(Some(f)) => (f.len, f.unit, f.transaction, f.pdu),
                            _ => break,
                        },
                    };
                    buf.drain(..len);
                    seen2.lock().unwrap().push((to, transaction, pdu.clone()));
                    let request = Request::decode(&pdu).unwrap();
                    if let Request::WriteSingleRegister { address, value } = request {
                        written2.lock().unwrap().insert(address, value);
                    }
                    if to != unit {
                        continue; // broadcast or another slave: no answer
                    }
                    let step = script.get(n).copied().unwrap_or(Script::Answer);
                    n += 1;
                    let mut reply_pdu = answer(&request, &written2.lock().unwrap());
                    let delay = match step {
                        Script::Answer => Duration::ZERO,
                        Script::Late(d) => d,
                        Script::Silent => continue,
                        Script::Short => {
                            reply_pdu.truncate(reply_pdu.len() - 2);
                            reply_pdu[1] -= 2;
                            Duration::ZERO
                        }
                    };
                    let frame = match framing {
                        Framing::Rtu => encode_rtu(unit, &reply_pdu),
                        Framing::Tcp => encode_tcp(transaction, unit, &reply_pdu),
                    };
                    if delay.is_zero() {
                        if line.write_all(&frame).await.is_err() {
                            return;
                        }
                    } else {
                        // Late replies arrive while the master is already doing something else; keep
                        // reading requests meanwhile, like a real slave's UART would.
                        tokio::time::sleep(delay).await;
                        if line.write_all(&frame).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Slave { seen, written }
    }
}

fn config() -> BusConfig {
    BusConfig {
        id: "test".into(),
        guard_time: Duration::from_millis(5),
        timeout: Duration::from_millis(100),
        retries: 0,
        drain_quiet: Duration::from_millis(20),
        ..BusConfig::default()
    }
}

fn setup(framing: Framing, script: Vec<Script>) -> (Master, Slave) {
    let (master_end, slave_end) = pair();
    let bus = Bus::spawn(Box::new(master_end), config());
    (Master::new(bus, framing), Slave::spawn(slave_end, framing, 7, script))
}

#[tokio::test(start_paused = true)]
async fn rtu_read_returns_the_slaves_registers() {
    let (master, slave) = setup(Framing::Rtu, vec![]);
    let regs = master.read_registers("m1", 7, Table::Holding, 10, 3).await.unwrap();
    assert_eq!(regs, vec![1010, 1011, 1012]);
    let bits = master.read_bits("m1", 7, Table::Coil, 0, 4).await.unwrap();
    assert_eq!(bits, vec![true, false, false, true]);
    let seen = slave.seen.lock().unwrap().clone();
    assert_eq!(seen[0], (7, 0, vec![0x03, 0x00, 0x0A, 0x00, 0x03]));
    assert_eq!(master.bus().stats().total.replies, 2);
}

#[tokio::test(start_paused = true)]
async fn exception_reply_is_a_typed_error_naming_the_exception() {
    let (master, _slave) = setup(Framing::Rtu, vec![]);
    let err = master.read_registers("m1", 7, Table::Holding, 200, 2).await.unwrap_err();
    assert_eq!(
        err,
        MasterError::Pdu(PduError::Exception {
            function: Function::ReadHoldingRegisters,
            exception: Exception::IllegalDataAddress
        })
    );
    assert!(err.to_string().contains("02 illegal data address"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn reply_with_too_few_registers_is_refused() {
    // Modbus TCP: the transaction id says the short reply is ours, so it is an invalid answer.
    let (master, _slave) = setup(Framing::Tcp, vec![Script::Short]);
    let err = master.read_registers("m1", 7, Table::Holding, 0, 3).await.unwrap_err();
    assert!(matches!(&err, MasterError::Pdu(PduError::Invalid(m)) if m.contains("byte count 4, expected 6")), "{err}");
    // The next read is fine.
    assert_eq!(master.read_registers("m1", 7, Table::Holding, 0, 3).await.unwrap(), vec![1000, 1001, 1002]);
}

#[tokio::test(start_paused = true)]
async fn rtu_reply_of_the_wrong_length_is_not_taken_and_the_retry_gets_the_answer() {
    // RTU: a reply of another length cannot be ours (it looks like a late reply to an earlier read), so it
    // is rejected, the attempt times out, and the retry gets the real answer.
    let (master, _slave) = setup(Framing::Rtu, vec![Script::Short]);
    let master = master.with_retries(Some(1));
    assert_eq!(master.read_registers("m1", 7, Table::Holding, 0, 3).await.unwrap(), vec![1000, 1001, 1002]);
    let stats = master.bus().stats().total;
    assert!(stats.rejected >= 1, "{stats:?}");
    assert_eq!(stats.retries, 1, "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn silent_slave_times_out_and_retries_are_honoured() {
    let (master, slave) = setup(Framing::Rtu, vec![Script::Silent, Script::Silent, Script::Silent]);
    let master = master.with_timeout(Some(Duration::from_millis(50))).with_retries(Some(2));
    let err = master.read_registers("m1", 7, Table::Holding, 0, 1).await.unwrap_err();
    assert!(matches!(err, MasterError::Link(LinkError::Timeout { attempts: 3, timeout_ms: 50, .. })), "{err}");
    assert_eq!(slave.seen.lock().unwrap().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn rtu_late_reply_is_not_taken_as_the_next_answer() {
    // The first reply comes 10 ms after the 100 ms timeout, while the bus drains the line (until 20 ms of
    // silence); it is dropped there instead of answering the next request.
    let (master, _slave) = setup(Framing::Rtu, vec![Script::Late(Duration::from_millis(110))]);
    let err = master.read_registers("m1", 7, Table::Holding, 0, 2).await.unwrap_err();
    assert!(matches!(err, MasterError::Link(LinkError::Timeout { .. })), "{err}");
    // Same shape (2 registers, FC 3): only the drain tells them apart.
    assert_eq!(master.read_registers("m1", 7, Table::Holding, 50, 2).await.unwrap(), vec![1050, 1051]);
    // unit + FC + byte count + 4 data bytes + CRC: the late reply was read and thrown away.
    assert!(master.bus().stats().bytes_discarded >= 9);
}

#[tokio::test(start_paused = true)]
async fn tcp_transaction_ids_advance_and_reject_a_late_reply() {
    // The first reply is very late: it arrives after the drain, while the second request waits for its
    // answer. Only the transaction id tells it apart; the matcher drops it and the right answer follows.
    let (master, slave) = setup(Framing::Tcp, vec![Script::Late(Duration::from_millis(150))]);
    let err = master.read_registers("m1", 7, Table::Holding, 0, 2).await.unwrap_err();
    assert!(matches!(err, MasterError::Link(LinkError::Timeout { .. })), "{err}");
    assert_eq!(master.read_registers("m1", 7, Table::Holding, 50, 2).await.unwrap(), vec![1050, 1051]);
    assert_eq!(master.bus().stats().total.rejected, 1, "the late reply was seen and dropped");
    let clone = master.clone();
    assert_eq!(clone.read_registers("m1", 7, Table::Holding, 60, 1).await.unwrap(), vec![1060]);
    let transactions: Vec<u16> = slave.seen.lock().unwrap().iter().map(|s| s.1).collect();
    assert_eq!(transactions, vec![0, 1, 2], "clones share the transaction counter");
}

#[tokio::test(start_paused = true)]
async fn writes_are_confirmed_by_their_echo() {
    let (master, slave) = setup(Framing::Tcp, vec![]);
    master.write_register("m1", 7, 5, 0xBEEF).await.unwrap();
    master.write_registers("m1", 7, 6, &[1, 2]).await.unwrap();
    assert_eq!(slave.written.lock().unwrap().get(&5), Some(&0xBEEF));
    assert_eq!(master.read_registers("m1", 7, Table::Holding, 5, 1).await.unwrap(), vec![0xBEEF]);
}

#[tokio::test(start_paused = true)]
async fn rtu_broadcast_write_expects_no_reply_and_reads_cannot_be_broadcast() {
    let (master, slave) = setup(Framing::Rtu, vec![]);
    let resp = master.request("all", 0, &Request::WriteSingleRegister { address: 3, value: 42 }).await.unwrap();
    assert_eq!(resp, Response::Written);
    let err = master.read_registers("all", 0, Table::Holding, 0, 1).await.unwrap_err();
    assert!(matches!(err, MasterError::Pdu(PduError::BadRequest(_))), "{err}");
    // Let the slave task read the frame.
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(slave.written.lock().unwrap().get(&3), Some(&42));
    assert_eq!(slave.seen.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn bad_requests_never_reach_the_line() {
    let (master, slave) = setup(Framing::Rtu, vec![]);
    let err = master.read_registers("m1", 7, Table::Holding, 0, 126).await.unwrap_err();
    assert!(matches!(err, MasterError::Pdu(PduError::BadRequest(_))), "{err}");
    let err = master.read_registers("m1", 7, Table::Coil, 0, 1).await.unwrap_err();
    assert!(matches!(err, MasterError::Pdu(PduError::BadRequest(_))), "{err}");
    assert!(slave.seen.lock().unwrap().is_empty());
}

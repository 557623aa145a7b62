//! Behaviour of the M-Bus master state machines against a simulated line: the secondary search finds every
//! meter exactly once, the FCB alternates per new request and stays on retries, multi-telegram read-outs
//! are complete and free of duplicates. No I/O and no real time: the driver below only pumps bytes and
//! advances a virtual clock.

use std::time::{Duration, Instant};

use ami_link::mbus::{control, Address, Frame, ACK};
use ami_protocols::mbus::client::{
    more_records_follow, Probe, ReadOut, ReadOutConfig, ReadOutError, ReadOutEvent, SearchConfig, SearchEvent,
    SecondaryId, SecondaryMask, SecondarySearch, Target,
};

/// How several slaves answering at once arrive at the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Collide {
    /// Skewed answers: the master reads garbage.
    Garbage,
    /// Single characters perfectly aligned: the line ANDs the bits (current drawn by any slave is a 0), so
    /// two `E5` look like one clean `E5`. Long replies (RSP_UD) start a few bit times apart (slaves differ
    /// in latency), so they superpose skewed and arrive damaged. (Two RSP_UDs aligned to the bit could AND
    /// into a valid frame, e.g. ids 00000000 and 00000001 with addresses 22 and 23: no master can see
    /// that collision.)
    AlignedAcks,
}

/// One simulated slave with EN 13757-2 FCB handling and multi-telegram replies.
#[derive(Debug, Clone)]
struct Meter {
    primary: u8,
    id: SecondaryId,
    /// Records of each telegram (the last one without `1F`).
    telegrams: Vec<Vec<u8>>,
    /// FCB of the last REQ_UD2 taken as new; `None` after SND_NKE (cleared: the next FCB 1 is new).
    last_fcb: Option<bool>,
    /// Index of the last telegram sent.
    sent: Option<usize>,
    selected: bool,
    /// Drop the reply to every second request (the request is still processed).
    drop_every_second: bool,
    /// Answer this many requests with a damaged frame first.
    corrupt_next: usize,
    requests: usize,
}

impl Meter {
    fn new(primary: u8, id_digits: &str, telegrams: Vec<Vec<u8>>) -> Self {
        let id_bcd = u32::from_str_radix(id_digits, 16).unwrap().to_le_bytes();
        Self {
            primary,
            id: SecondaryId { id_bcd, manufacturer: 0x2C2D, version: 0x08, medium: 0x07 },
            telegrams,
            last_fcb: None,
            sent: None,
            selected: false,
            drop_every_second: false,
            corrupt_next: 0,
            requests: 0,
        }
    }

    /// A meter with one telegram of one volume record.
    fn simple(primary: u8, id_digits: &str) -> Self {
        Self::new(primary, id_digits, vec![vec![0x0C, 0x13, 0x01, 0x00, 0x00, 0x00]])
    }

    fn rsp_ud(&self, index: usize) -> Vec<u8> {
        let mut data = self.id.to_bytes().to_vec();
        // Access number, status, signature.
        data.extend_from_slice(&[index as u8, 0x00, 0x00, 0x00]);
        data.extend_from_slice(&self.telegrams[index]);
        if index + 1 < self.telegrams.len() {
            data.push(0x1F);
        }
        Frame::Long { c: control::RSP_UD, a: self.primary, ci: 0x72, data }.encode().unwrap()
    }

    /// The slave's reply to `frame` addressed to it (None: no reply).
    fn answer(&mut self, frame: &Frame) -> Option<Vec<u8>> {
        self.requests += 1;
        let reply = match frame {
            Frame::Short { c, .. } if *c == control::SND_NKE => {
                self.last_fcb = None;
                self.sent = None;
                vec![ACK]
            }
            Frame::Short { c, .. } if control::is_req_ud2(*c) => {
                let fcb = control::fcb(*c);
                let repeat = self.sent.is_some() && self.last_fcb == Some(fcb);
                let index = match (repeat, self.sent) {
                    (true, Some(i)) => i,
                    (_, Some(i)) => (i + 1) % self.telegrams.len(),
                    (_, None) => 0,
                };
                self.last_fcb = Some(fcb);
                self.sent = Some(index);
                self.rsp_ud(index)
            }
            Frame::Long { .. } if SecondaryMask::from_frame(frame).is_some() => vec![ACK],
            _ => return None,
        };
        if self.corrupt_next > 0 && reply.len() > 1 {
            self.corrupt_next -= 1;
            let mut bad = reply;
            let last = bad.len() - 1;
            bad[last.saturating_sub(1)] ^= 0xFF;
            return Some(bad);
        }
        if self.drop_every_second && self.requests.is_multiple_of(2) {
            return None;
        }
        Some(reply)
    }
}

/// A bus of simulated slaves.
struct Line {
    meters: Vec<Meter>,
    collide: Collide,
    /// Every frame the master sent.
    sent: Vec<Vec<u8>>,
}

impl Line {
    fn new(meters: Vec<Meter>, collide: Collide) -> Self {
        Self { meters, collide, sent: Vec::new() }
    }

    fn exchange(&mut self, request: &[u8]) -> Option<Vec<u8>> {
        self.sent.push(request.to_vec());
        let frame = Frame::parse(request).expect("the master sends valid frames");
        let mut replies = Vec::new();
        if let Some(mask) = SecondaryMask::from_frame(&frame) {
            for m in &mut self.meters {
                // A selection that does not match deselects (EN 13757-3 secondary addressing).
                m.selected = mask.matches(&m.id);
                if m.selected {
                    replies.extend(m.answer(&frame));
                }
            }
        } else {
            let a = frame.a().unwrap();
            for m in &mut self.meters {
                let addressed = if a == Address::SELECTED { m.selected } else { m.primary == a };
                if addressed {
                    replies.extend(m.answer(&frame));
                }
            }
        }
        match replies.len() {
            0 => None,
            1 => replies.pop(),
            _ => Some(match self.collide {
                Collide::Garbage => vec![0xF3, 0x1C, 0xE4],
                Collide::AlignedAcks => {
                    // Reply k starts k bytes late, unless all are the single character.
                    let skew = usize::from(replies.iter().any(|r| r.len() > 1));
                    let len = replies.iter().enumerate().map(|(k, r)| r.len() + k * skew).max().unwrap();
                    (0..len)
                        .map(|i| {
                            replies.iter().enumerate().fold(0xFF, |acc, (k, r)| {
                                let byte = i.checked_sub(k * skew).and_then(|j| r.get(j)).copied();
                                acc & byte.unwrap_or(0xFF)
                            })
                        })
                        .collect()
                }
            }),
        }
    }
}

/// Wire time of `n` bytes at 2400 baud 8E1 (11 bits per byte).
fn wire(n: usize) -> Duration {
    Duration::from_micros(4583 * n as u64)
}

/// Pumps a search through the line until it finishes; returns its events.
fn run_search(search: &mut SecondarySearch, line: &mut Line) -> Vec<SearchEvent> {
    let mut now = Instant::now();
    let mut events = Vec::new();
    for _ in 0..100_000 {
        while let Some(e) = search.poll_event() {
            events.push(e);
        }
        if search.is_done() {
            return events;
        }
        let Some(tx) = search.poll_transmit(now) else { panic!("search stalled: nothing to send, not done") };
        now += wire(tx.bytes.len());
        match line.exchange(&tx.bytes) {
            Some(reply) => {
                now += Duration::from_millis(20) + wire(reply.len());
                // Split the reply in two reads, as a serial port delivers it.
                let (a, b) = reply.split_at(reply.len() / 2);
                search.handle_reply(now, a);
                search.handle_reply(now, b);
            }
            None => {
                now = search.poll_timeout().unwrap();
                search.handle_timeout(now);
            }
        }
    }
    panic!("search did not finish");
}

/// 30 meters: ten share the first seven digits, ten the first four, and some share nothing.
fn thirty_meters() -> Vec<Meter> {
    let mut ids: Vec<String> = (0..10).map(|d| format!("1234567{d}")).collect();
    ids.extend(
        [
            "12340000", "12340001", "12340010", "12340011", "12340100", "12341000", "12349999", "12345680", "12345600",
            "12344567",
        ]
        .map(String::from),
    );
    ids.extend(
        [
            "99999999", "00000000", "00000001", "50000000", "50000001", "10000000", "87654321", "11111111", "22222222",
            "90000009",
        ]
        .map(String::from),
    );
    assert_eq!(ids.len(), 30);
    ids.iter().enumerate().map(|(i, id)| Meter::simple(i as u8 + 1, id)).collect()
}

fn found_ids(events: &[SearchEvent]) -> Vec<String> {
    let mut ids: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            SearchEvent::Found { id, .. } => Some(id.id_digits()),
            _ => None,
        })
        .collect();
    ids.sort();
    ids
}

#[test]
fn secondary_search_finds_30_meters_sharing_leading_digits_exactly_once() {
    let meters = thirty_meters();
    let mut expected: Vec<String> = meters.iter().map(|m| m.id.id_digits()).collect();
    expected.sort();
    let mut line = Line::new(meters, Collide::Garbage);
    let mut search = SecondarySearch::new(SearchConfig::default());
    let events = run_search(&mut search, &mut line);
    assert_eq!(found_ids(&events), expected, "every id exactly once");
    assert!(!events.iter().any(|e| matches!(e, SearchEvent::Unresolved { .. })), "{events:?}");
    let Some(SearchEvent::Finished { found, probes }) = events.last() else { panic!("{events:?}") };
    assert_eq!(*found, 30);
    assert_eq!(*probes, search.probes());
    // The primary addresses came with the ids.
    assert!(events.iter().any(|e| matches!(e, SearchEvent::Found { id, primary: 21 } if id.id_digits() == "99999999")));
    // The root probe plus ten probes under every prefix that two or more ids share (a collision).
    let collisions: std::collections::HashSet<&str> = expected
        .iter()
        .flat_map(|id| (0..8).map(move |n| &id[..n]))
        .filter(|prefix| expected.iter().filter(|id| id.starts_with(prefix)).count() >= 2)
        .collect();
    eprintln!("secondary search: 30 meters in {probes} probes ({} collisions)", collisions.len());
    assert_eq!(*probes, 1 + 10 * collisions.len());
}

#[test]
fn secondary_search_splits_collisions_that_look_like_one_clean_e5() {
    // Aligned answers AND into one clean E5; the collision only shows in the damaged RSP_UD.
    let meters = thirty_meters();
    let mut expected: Vec<String> = meters.iter().map(|m| m.id.id_digits()).collect();
    expected.sort();
    let mut line = Line::new(meters, Collide::AlignedAcks);
    let mut search = SecondarySearch::new(SearchConfig::default());
    let events = run_search(&mut search, &mut line);
    assert_eq!(found_ids(&events), expected);
    assert!(matches!(events.last(), Some(SearchEvent::Finished { found: 30, .. })));
}

#[test]
fn empty_line_finishes_after_one_probe_and_a_single_meter_needs_no_split() {
    let mut line = Line::new(vec![], Collide::Garbage);
    let mut search = SecondarySearch::new(SearchConfig::default());
    let events = run_search(&mut search, &mut line);
    assert_eq!(events, vec![SearchEvent::Finished { found: 0, probes: 1 }]);

    let mut line = Line::new(vec![Meter::simple(7, "12345678")], Collide::Garbage);
    let mut search = SecondarySearch::new(SearchConfig::default());
    let events = run_search(&mut search, &mut line);
    assert_eq!(found_ids(&events), ["12345678"]);
    assert_eq!(events.last(), Some(&SearchEvent::Finished { found: 1, probes: 1 }));
    // Probe, then REQ_UD2 to 253.
    assert_eq!(line.sent.len(), 2);
    assert_eq!(line.sent[1], [0x10, 0x7B, 0xFD, 0x78, 0x16]);
}

#[test]
fn two_meters_with_the_same_id_are_reported_unresolved() {
    let mut twin = Meter::simple(2, "12345678");
    twin.id.manufacturer = 0x1234;
    let meters = vec![Meter::simple(1, "12345678"), twin, Meter::simple(3, "55555555")];
    let mut line = Line::new(meters, Collide::Garbage);
    let mut search = SecondarySearch::new(SearchConfig::default());
    let events = run_search(&mut search, &mut line);
    assert_eq!(found_ids(&events), ["55555555"]);
    let unresolved: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            SearchEvent::Unresolved { mask, .. } => Some(mask.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(unresolved, ["12345678"]);
}

#[test]
fn search_reported_probe_by_probe_walks_the_same_tree() {
    // A driver that classifies the replies itself reports each probe with `handle_probe`.
    let ids = ["12345670", "12345671", "99999999"];
    let ids: Vec<SecondaryId> = ids.iter().map(|d| Meter::simple(1, d).id).collect();
    let mut search = SecondarySearch::new(SearchConfig::default());
    let now = Instant::now();
    let mut found = Vec::new();
    for _ in 0..10_000 {
        while let Some(e) = search.poll_event() {
            if let SearchEvent::Found { id, .. } = e {
                found.push(id.id_digits());
            }
        }
        if search.is_done() {
            break;
        }
        let tx = search.poll_transmit(now).unwrap();
        let frame = Frame::parse(&tx.bytes).unwrap();
        match SecondaryMask::from_frame(&frame) {
            Some(mask) => {
                let matching: Vec<_> = ids.iter().filter(|id| mask.matches(id)).collect();
                let probe = match matching.len() {
                    0 => Probe::None,
                    1 => Probe::One,
                    _ => Probe::Collision,
                };
                search.handle_probe(now, probe);
                if probe == Probe::One {
                    let only = *matching[0];
                    let tx = search.poll_transmit(now).unwrap();
                    assert_eq!(tx.bytes[1], 0x7B, "REQ_UD2 to 253 reads the selected slave");
                    let mut meter = Meter::simple(0, "00000000");
                    meter.id = only;
                    search.handle_reply(now, &meter.rsp_ud(0));
                }
            }
            None => panic!("unexpected {frame:?}"),
        }
    }
    found.sort();
    assert_eq!(found, ["12345670", "12345671", "99999999"]);
    assert_eq!(search.found(), 3);
}

/// Pumps a read-out through the line; returns its events.
fn run_readout(readout: &mut ReadOut, line: &mut Line) -> Vec<ReadOutEvent> {
    let mut now = Instant::now();
    let mut events = Vec::new();
    for _ in 0..10_000 {
        while let Some(e) = readout.poll_event() {
            events.push(e);
        }
        if readout.is_done() {
            return events;
        }
        let tx = readout.poll_transmit(now).expect("a running read-out has something to send");
        now += wire(tx.bytes.len());
        match line.exchange(&tx.bytes) {
            Some(reply) => {
                now += Duration::from_millis(50) + wire(reply.len());
                for chunk in reply.chunks(7) {
                    readout.handle_reply(now, chunk);
                }
            }
            None => {
                // A spurious early timeout changes nothing.
                readout.handle_timeout(now);
                now = readout.poll_timeout().unwrap();
                readout.handle_timeout(now);
            }
        }
    }
    panic!("read-out did not finish");
}

fn three_telegrams() -> Vec<Vec<u8>> {
    // 04 13 <volume>: a distinct value per telegram.
    (1..=3u8).map(|k| vec![0x04, 0x13, k, 0x00, 0x00, 0x00]).collect()
}

/// The telegrams' first record value, in order.
fn values(events: &[ReadOutEvent]) -> Vec<u8> {
    events
        .iter()
        .filter_map(|e| match e {
            ReadOutEvent::Telegram { frame, .. } => Some(frame.data()[14]),
            _ => None,
        })
        .collect()
}

fn control_fields(sent: &[Vec<u8>]) -> Vec<u8> {
    sent.iter().map(|f| Frame::parse(f).unwrap().c().unwrap()).collect()
}

#[test]
fn multi_telegram_readout_collects_both_telegrams_in_order() {
    let telegrams = vec![vec![0x04, 0x13, 0x11, 0, 0, 0], vec![0x04, 0x13, 0x22, 0, 0, 0]];
    let mut line = Line::new(vec![Meter::new(5, "12345678", telegrams)], Collide::Garbage);
    let mut readout = ReadOut::new(Target::Primary(5), ReadOutConfig::default());
    let events = run_readout(&mut readout, &mut line);
    assert_eq!(values(&events), [0x11, 0x22]);
    let more: Vec<bool> = events
        .iter()
        .filter_map(|e| match e {
            ReadOutEvent::Telegram { more, .. } => Some(*more),
            _ => None,
        })
        .collect();
    assert_eq!(more, [true, false], "the first telegram ends with DIF 1F");
    assert_eq!(events.last(), Some(&ReadOutEvent::Finished { telegrams: 2 }));
    // The first telegram's user data really carries the 1F rule input.
    let ReadOutEvent::Telegram { frame, .. } = &events[0] else { panic!() };
    assert!(more_records_follow(frame.ci().unwrap(), frame.data()));
}

#[test]
fn fcb_is_set_after_snd_nke_and_toggles_for_each_new_request() {
    let mut line = Line::new(vec![Meter::new(5, "12345678", three_telegrams())], Collide::Garbage);
    let mut readout = ReadOut::new(Target::Primary(5), ReadOutConfig::default());
    let events = run_readout(&mut readout, &mut line);
    assert_eq!(values(&events), [1, 2, 3]);
    // SND_NKE, then REQ_UD2 with FCB 1, 0, 1.
    assert_eq!(control_fields(&line.sent), [0x40, 0x7B, 0x5B, 0x7B]);
    // The next read-out of this meter without reset continues the sequence.
    assert!(!readout.next_fcb());
}

#[test]
fn lost_replies_are_retried_with_the_same_fcb_and_no_telegram_is_duplicated() {
    let mut meter = Meter::new(5, "12345678", three_telegrams());
    meter.drop_every_second = true;
    let mut line = Line::new(vec![meter], Collide::Garbage);
    let mut readout = ReadOut::new(Target::Primary(5), ReadOutConfig::default());
    let events = run_readout(&mut readout, &mut line);
    assert_eq!(values(&events), [1, 2, 3], "{events:?}");
    assert_eq!(events.last(), Some(&ReadOutEvent::Finished { telegrams: 3 }));
    // Every lost reply is followed by a retry with the same C field (same FCB).
    // SND_NKE ok; 7B lost, 7B ok; 5B lost, 5B ok; 7B lost, 7B ok.
    assert_eq!(control_fields(&line.sent), [0x40, 0x7B, 0x7B, 0x5B, 0x5B, 0x7B, 0x7B]);
}

#[test]
fn a_damaged_reply_is_retried_with_the_same_fcb() {
    let mut meter = Meter::new(5, "12345678", three_telegrams());
    meter.corrupt_next = 2; // the first two RSP_UDs arrive with a bad checksum
    let mut line = Line::new(vec![meter], Collide::Garbage);
    let mut readout = ReadOut::new(Target::Primary(5), ReadOutConfig::default());
    let events = run_readout(&mut readout, &mut line);
    assert_eq!(values(&events), [1, 2, 3]);
    assert_eq!(control_fields(&line.sent), [0x40, 0x7B, 0x7B, 0x7B, 0x5B, 0x7B]);
}

#[test]
fn a_dead_meter_fails_after_the_retries_with_a_timeout() {
    let mut line = Line::new(vec![], Collide::Garbage);
    let config = ReadOutConfig { retries: 2, ..ReadOutConfig::default() };
    let mut readout = ReadOut::new(Target::Primary(9), config);
    let events = run_readout(&mut readout, &mut line);
    assert_eq!(events, [ReadOutEvent::Failed(ReadOutError::Timeout { request: "SND_NKE", attempts: 3 })]);
    assert_eq!(line.sent.len(), 3);
}

#[test]
fn a_meter_announcing_more_records_forever_is_cut_at_max_telegrams() {
    let mut meter = Meter::new(5, "12345678", three_telegrams());
    // Every telegram says "more": the meter cycles.
    meter.telegrams.iter_mut().for_each(|t| t.push(0x1F));
    let mut line = Line::new(vec![meter], Collide::Garbage);
    let config = ReadOutConfig { max_telegrams: 5, ..ReadOutConfig::default() };
    let mut readout = ReadOut::new(Target::Primary(5), config);
    let events = run_readout(&mut readout, &mut line);
    assert_eq!(values(&events).len(), 5);
    assert_eq!(events.last(), Some(&ReadOutEvent::Failed(ReadOutError::TooManyTelegrams(5))));
}

#[test]
fn a_meter_is_read_by_secondary_address_through_253() {
    let meters = vec![Meter::simple(1, "12345678"), Meter::new(0, "87654321", three_telegrams())];
    let mut line = Line::new(meters, Collide::Garbage);
    let mask = SecondaryMask::from_digits("87654321").unwrap();
    let mut readout = ReadOut::new(Target::Secondary(mask), ReadOutConfig::default());
    let events = run_readout(&mut readout, &mut line);
    assert_eq!(values(&events), [1, 2, 3]);
    let sent = control_fields(&line.sent);
    // Selection (SND_UD), then REQ_UD2 to 253 with FCB 1, 0, 1; no SND_NKE (it would deselect).
    assert_eq!(sent, [0x53, 0x7B, 0x5B, 0x7B]);
    assert!(line.sent[1..].iter().all(|f| f[2] == Address::SELECTED));
}

#[test]
fn without_reset_the_read_out_starts_from_the_given_fcb() {
    let mut line = Line::new(vec![Meter::simple(5, "12345678")], Collide::Garbage);
    let config = ReadOutConfig { reset: false, first_fcb: false, ..ReadOutConfig::default() };
    let mut readout = ReadOut::new(Target::Primary(5), config);
    let events = run_readout(&mut readout, &mut line);
    assert_eq!(events.last(), Some(&ReadOutEvent::Finished { telegrams: 1 }));
    assert_eq!(control_fields(&line.sent), [0x5B]);
    assert!(readout.next_fcb());
}

#[test]
fn foreign_frames_and_stray_bytes_are_skipped_within_the_deadline() {
    let meter = Meter::simple(5, "12345678");
    let mut readout = ReadOut::new(Target::Primary(5), ReadOutConfig { reset: false, ..ReadOutConfig::default() });
    let now = Instant::now();
    // Bytes before anything was sent are ignored.
    readout.handle_reply(now, &[0xE5]);
    let tx = readout.poll_transmit(now).unwrap();
    assert_eq!(tx.bytes, [0x10, 0x7B, 0x05, 0x80, 0x16]);
    assert!(readout.poll_transmit(now).is_none(), "one transmit per attempt");
    // Our own request echoed by a converter, noise, then the reply.
    readout.handle_reply(now, &tx.bytes);
    readout.handle_reply(now, &[0x00, 0x55]);
    readout.handle_reply(now, &meter.rsp_ud(0));
    assert!(matches!(readout.poll_event(), Some(ReadOutEvent::Telegram { more: false, .. })));
    assert_eq!(readout.poll_event(), Some(ReadOutEvent::Finished { telegrams: 1 }));
    // After the end, nothing happens any more.
    readout.handle_timeout(now + Duration::from_secs(60));
    assert!(readout.poll_event().is_none() && readout.poll_transmit(now).is_none());
}

mod over_the_bus {
    //! The same line behind a real link `Bus` on an in-process loopback, with paused time: the async
    //! drivers `client::read_out` and `client::search` only pump the state machines.

    use std::sync::{Arc, Mutex};

    use ami_link::{Bus, BusConfig};
    use ami_media::loopback::{pair, LoopbackTransport};
    use ami_protocols::mbus::client::{read_out, search, ReadOutReport};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Serves `line` on the slave end of a loopback: deframes requests, answers as the line does.
    fn serve(mut end: LoopbackTransport, line: Arc<Mutex<Line>>) {
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 512];
            loop {
                let got = match end.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(got) => got,
                };
                buf.extend_from_slice(&chunk[..got]);
                loop {
                    match Frame::decode(&buf) {
                        Ok(Some((_, len))) => {
                            let request: Vec<u8> = buf.drain(..len).collect();
                            let reply = line.lock().unwrap().exchange(&request);
                            if let Some(reply) = reply {
                                if end.write_all(&reply).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Ok(None) => break,
                        Err(_) => {
                            buf.remove(0);
                        }
                    }
                }
            }
        });
    }

    fn bus_over(line: Line) -> (ami_link::BusHandle, Arc<Mutex<Line>>) {
        let (master, slave) = pair();
        let line = Arc::new(Mutex::new(line));
        serve(slave, Arc::clone(&line));
        let config = BusConfig { id: "mbus".into(), ..BusConfig::default() };
        (Bus::spawn(Box::new(master), config), line)
    }

    #[tokio::test(start_paused = true)]
    async fn a_meter_that_drops_every_second_reply_is_read_completely_without_duplicates() {
        let mut meter = Meter::new(5, "12345678", three_telegrams());
        meter.drop_every_second = true;
        let (bus, line) = bus_over(Line::new(vec![meter], Collide::Garbage));
        let report = read_out(&bus, "m5", Target::Primary(5), ReadOutConfig::default()).await.unwrap();
        let values: Vec<u8> = report.telegrams.iter().map(|f| f.data()[14]).collect();
        assert_eq!(values, [1, 2, 3]);
        assert!(!report.next_fcb);
        let sent = line.lock().unwrap().sent.clone();
        assert_eq!(control_fields(&sent), [0x40, 0x7B, 0x7B, 0x5B, 0x5B, 0x7B, 0x7B]);
        assert_eq!(bus.stats().total.timeouts, 3, "{:?}", bus.stats());
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_meter_fails_with_a_timeout_over_the_bus() {
        let (bus, _line) = bus_over(Line::new(vec![], Collide::Garbage));
        let err = read_out(&bus, "m9", Target::Primary(9), ReadOutConfig::default()).await.unwrap_err();
        assert_eq!(err, ReadOutError::Timeout { request: "SND_NKE", attempts: 3 });
    }

    #[tokio::test(start_paused = true)]
    async fn secondary_search_over_the_bus_finds_all_30_meters_then_reads_one_by_its_id() {
        let (bus, _line) = bus_over(Line::new(thirty_meters(), Collide::Garbage));
        let report = search(&bus, "search", SearchConfig::default()).await.unwrap();
        let mut ids: Vec<String> = report.found.iter().map(|(id, _)| id.id_digits()).collect();
        ids.sort();
        let mut expected: Vec<String> = thirty_meters().iter().map(|m| m.id.id_digits()).collect();
        expected.sort();
        assert_eq!(ids, expected);
        assert!(report.unresolved.is_empty(), "{:?}", report.unresolved);
        assert_eq!(report.probes, 271);
        // Read one of the found meters by its full secondary address.
        let (id, _) = report.found.iter().find(|(id, _)| id.id_digits() == "12345675").unwrap();
        let ReadOutReport { telegrams, .. } =
            read_out(&bus, "12345675", Target::Secondary(SecondaryMask::exact(id)), ReadOutConfig::default())
                .await
                .unwrap();
        assert_eq!(telegrams.len(), 1);
        assert_eq!(SecondaryId::from_rsp_ud(0x72, telegrams[0].data()), Some(*id));
    }
}

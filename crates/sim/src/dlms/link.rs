//! The link side of one connection to the simulated DLMS meter: HDLC (IEC 62056-46, through
//! [`HdlcServer`]) or the TCP wrapper (IEC 62056-47), optionally opened by an IEC 62056-21 mode E sign-on,
//! with fault injection; the pump is the crate's common driver.
//!
//! HDLC addressing: the meter answers its upper address alone (1 byte) and its upper/lower address in
//! the 2- and 4-byte forms; the form of the client's SNRM is the one used for the connection. Wrapper: the
//! destination wPort must be the logical device (`server_logical`); the source wPort is the client SAP.

use std::collections::VecDeque;
use std::convert::Infallible;

use ami_link::hdlc::{Address, Control, Frame};
use ami_link::hdlc_session::{Deframer, HdlcParameters, HdlcServer, ServerAction};
use ami_link::{mode_e, wrapper};
use tokio::time::Instant;

use super::server::AppServer;
use super::{DlmsFaults, DlmsFraming, DlmsMeter};
use crate::drive::{GarbageLog, SimSession};

/// The link parameters the meter offers: information fields up to 1024 bytes each way, window 1.
const OFFERED: HdlcParameters = HdlcParameters { max_info_tx: 1024, max_info_rx: 1024, window_tx: 1, window_rx: 1 };

/// Bytes buffered before the mode E sign-on at most (noise before it is dropped beyond this).
const MODE_E_BUFFER: usize = 256;

/// Baud rate character announced in the mode E identification (`5` = 9600 baud).
const MODE_E_BAUD: u8 = b'5';

#[derive(Debug)]
enum Link {
    /// Waiting for the IEC 62056-21 sign-on, then for the acknowledgement, before HDLC.
    ModeE {
        buf: Vec<u8>,
        identified: bool,
    },
    Hdlc {
        server: HdlcServer,
        /// The address `server` answers (the form of the last SNRM).
        own: Address,
        deframer: Deframer,
    },
    Wrapper {
        deframer: ami_link::wrapper::WrapperDeframer,
    },
}

/// One server-side connection (see the module doc).
#[derive(Debug)]
pub(crate) struct DlmsSession {
    meter: DlmsMeter,
    app: AppServer,
    link: Link,
    faults: DlmsFaults,
    replies: u64,
    garbage: GarbageLog,
    /// Deframer discard count already reported.
    discarded_seen: u64,
    out: VecDeque<Vec<u8>>,
    peer: String,
    /// An optical port: after DISC the meter waits for the next IEC 62056-21 sign-on (at 300 baud) again.
    optical: bool,
}

impl DlmsSession {
    /// A session on `meter` for one connection from `peer` (for logs); counts the connection.
    pub(crate) fn new(meter: DlmsMeter, framing: DlmsFraming, mode_e: bool, peer: String) -> Self {
        let (seed, faults) = meter.open_connection();
        let link = match framing {
            DlmsFraming::Hdlc if mode_e => Link::ModeE { buf: Vec::new(), identified: false },
            DlmsFraming::Hdlc => Self::hdlc(&meter),
            DlmsFraming::Wrapper => Link::Wrapper { deframer: wrapper::WrapperDeframer::new() },
        };
        Self {
            app: AppServer::new(meter.clone(), seed),
            meter,
            link,
            faults,
            replies: 0,
            garbage: GarbageLog::default(),
            discarded_seen: 0,
            out: VecDeque::new(),
            peer,
            optical: mode_e && matches!(framing, DlmsFraming::Hdlc),
        }
    }

    fn hdlc(meter: &DlmsMeter) -> Link {
        let spec = meter.spec();
        let own = Address::server(spec.server_logical, Some(spec.server_physical));
        Link::Hdlc { server: HdlcServer::new(own, OFFERED), own, deframer: Deframer::new() }
    }

    /// Queues a reply frame, unless fault injection drops it.
    fn send(&mut self, frame: Vec<u8>) {
        if frame.is_empty() {
            return;
        }
        self.replies = self.replies.saturating_add(1);
        if let Some(n) = self.faults.drop_every_nth.filter(|n| *n > 0) {
            if self.replies.is_multiple_of(u64::from(n)) {
                self.meter.count(|s| s.dropped = s.dropped.saturating_add(1));
                tracing::debug!(peer = %self.peer, "DLMS simulator dropped a reply (fault injection)");
                return;
            }
        }
        self.out.push_back(frame);
    }

    fn note_discarded(&mut self, total: u64) {
        let new = total.saturating_sub(self.discarded_seen);
        self.discarded_seen = total;
        if new > 0 {
            self.garbage.note_unseen(new);
            self.meter.count(|s| s.garbage_bytes = s.garbage_bytes.saturating_add(new));
        }
    }

    fn input(&mut self, data: &[u8]) {
        match &mut self.link {
            Link::ModeE { buf, identified } => {
                buf.extend_from_slice(data);
                if !*identified && buf.first() == Some(&ami_link::hdlc::FLAG) {
                    // A client that skips the opening: HDLC straight away.
                    let rest = std::mem::take(buf);
                    self.link = Self::hdlc(&self.meter);
                    return self.input(&rest);
                }
                if !*identified {
                    if let Some((_, used)) = mode_e::parse_sign_on(buf) {
                        buf.drain(..used.min(buf.len()));
                        *identified = true;
                        let ident = format!("AMI{:08}", self.meter.spec().serial);
                        let reply = mode_e::identification("AMI", MODE_E_BAUD, &ident);
                        self.send(reply);
                    }
                }
                let Link::ModeE { buf, identified } = &mut self.link else { return };
                if *identified {
                    if let Some((_, _, _, used)) = mode_e::parse_ack(buf) {
                        let rest = buf.get(used..).unwrap_or_default().to_vec();
                        self.link = Self::hdlc(&self.meter);
                        if !rest.is_empty() {
                            self.input(&rest);
                        }
                        return;
                    }
                }
                let Link::ModeE { buf, .. } = &mut self.link else { return };
                if buf.len() > MODE_E_BUFFER {
                    let excess = buf.len() - MODE_E_BUFFER;
                    let dropped: Vec<u8> = buf.drain(..excess).collect();
                    self.garbage.note(&dropped);
                    self.meter.count(|s| s.garbage_bytes = s.garbage_bytes.saturating_add(excess as u64));
                }
            }
            Link::Hdlc { deframer, .. } => {
                let frames = deframer.push(data);
                let discarded = deframer.discarded();
                self.note_discarded(discarded);
                for frame in frames {
                    self.garbage.flush(<Self as SimSession>::NAME, &self.peer, "no valid HDLC frame");
                    self.hdlc_frame(&frame);
                }
            }
            Link::Wrapper { deframer } => {
                let frames = deframer.push(data);
                let discarded = deframer.discarded();
                self.note_discarded(discarded);
                for (header, apdu) in frames {
                    self.garbage.flush(<Self as SimSession>::NAME, &self.peer, "no valid wrapper header");
                    let logical = self.meter.spec().server_logical;
                    if header.destination != logical {
                        continue;
                    }
                    if let Some(reply) = self.app.handle(header.source, &apdu) {
                        if let Ok(frame) = wrapper::encode(logical, header.source, &reply) {
                            self.send(frame);
                        }
                    }
                }
            }
        }
    }

    fn hdlc_frame(&mut self, frame: &Frame) {
        let Link::Hdlc { server, own, .. } = &mut self.link else { return };
        let spec = self.meter.spec();
        // The meter answers its upper address alone as well as the upper/lower forms: follow the SNRM.
        if let Control::SNRM { .. } = frame.control {
            let wanted = match frame.dest {
                Address::One(u) if u16::from(u) == spec.server_logical => Some(Address::One(u)),
                Address::One(_) => None,
                _ => Some(Address::server(spec.server_logical, Some(spec.server_physical))),
            };
            if let Some(wanted) = wanted.filter(|w| w != own) {
                *own = wanted;
                *server = HdlcServer::new(wanted, OFFERED);
            }
        }
        if matches!(frame.control, Control::SNRM { .. } | Control::DISC { .. }) {
            self.app.reset();
        }
        let disc = matches!(frame.control, Control::DISC { .. });
        let action = server.on_frame(frame);
        match action {
            ServerAction::Reply(bytes) => {
                self.send(bytes);
                if disc && self.optical {
                    // Like a real optical port: the HDLC link is over, the next client signs on again.
                    self.link = Link::ModeE { buf: Vec::new(), identified: false };
                }
            }
            ServerAction::Ignore => {}
            ServerAction::Apdu(apdu) => {
                let sap = match server.client() {
                    Some(Address::One(sap)) => u16::from(sap),
                    _ => return,
                };
                if let Some(reply) = self.app.handle(sap, &apdu) {
                    let Link::Hdlc { server, .. } = &mut self.link else { return };
                    let bytes = server.respond(&reply);
                    self.send(bytes);
                }
            }
        }
    }
}

impl SimSession for DlmsSession {
    type Error = Infallible;
    const NAME: &'static str = "DLMS simulator";

    fn handle_input(&mut self, _now: Instant, data: &[u8]) -> Result<(), Infallible> {
        self.input(data);
        Ok(())
    }

    fn handle_silence(&mut self) {
        // The deframers keep a partial frame until it completes or noise pushes it out; drop it here.
        let discarded = match &mut self.link {
            Link::ModeE { buf, .. } => std::mem::take(buf).len(),
            Link::Hdlc { deframer, .. } => {
                // A lone byte is the closing flag kept as the next frame's opening flag, not garbage.
                let n = if deframer.pending() > 1 { deframer.pending() } else { 0 };
                *deframer = Deframer::new();
                self.discarded_seen = 0;
                n
            }
            Link::Wrapper { deframer } => {
                let n = deframer.pending();
                *deframer = wrapper::WrapperDeframer::new();
                self.discarded_seen = 0;
                n
            }
        };
        if discarded > 0 {
            self.garbage.note_unseen(discarded as u64);
            self.meter.count(|s| s.garbage_bytes = s.garbage_bytes.saturating_add(discarded as u64));
        }
        self.garbage.flush(Self::NAME, &self.peer, "incomplete frame followed by silence");
    }

    fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    fn buffered(&self) -> usize {
        match &self.link {
            Link::ModeE { buf, .. } => buf.len(),
            // A lone byte is the kept flag (a lone non-flag byte is dropped at once by the deframer).
            Link::Hdlc { deframer, .. } if deframer.pending() <= 1 => 0,
            Link::Hdlc { deframer, .. } => deframer.pending(),
            Link::Wrapper { deframer } => deframer.pending(),
        }
    }

    fn peer(&self) -> &str {
        &self.peer
    }
}

#[cfg(test)]
mod tests {
    use ami_link::hdlc_session::{Action, HdlcClient};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::super::DlmsMeterSpec;
    use super::*;

    fn session(framing: DlmsFraming, mode_e: bool) -> (DlmsMeter, DlmsSession) {
        let meter = DlmsMeter::new(DlmsMeterSpec::for_serial(42));
        let s = DlmsSession::new(meter.clone(), framing, mode_e, "test".into());
        (meter, s)
    }

    /// Feeds `bytes` and returns the frames written back, decoded.
    fn feed(s: &mut DlmsSession, bytes: &[u8]) -> Vec<Frame> {
        s.input(bytes);
        std::iter::from_fn(|| s.poll_transmit())
            .filter_map(|b| Frame::decode(&b).ok().flatten().map(|(f, _)| f))
            .collect()
    }

    fn associate(s: &mut DlmsSession, server: Address) -> HdlcClient {
        let mut client = HdlcClient::new(Address::client(0x10), server, HdlcParameters::default());
        let ua = feed(s, &client.snrm());
        assert_eq!(ua.len(), 1, "no UA to {server:?}");
        assert_eq!(ua[0].src, server, "the reply comes from the address as the client wrote it");
        client.on_ua(&ua[0]).unwrap();
        let aarq = ami_protocols::dlms::apdu::Apdu::Aarq(ami_protocols::dlms::apdu::Aarq {
            application_context: ami_protocols::dlms::apdu::ApplicationContext::LogicalName,
            calling_ap_title: None,
            mechanism: None,
            calling_authentication_value: None,
            user_information: Some(
                ami_protocols::dlms::apdu::InitiateRequest {
                    dedicated_key: None,
                    response_allowed: true,
                    proposed_quality_of_service: None,
                    proposed_dlms_version: 6,
                    proposed_conformance: ami_protocols::dlms::apdu::Conformance(0x00_1E_1D),
                    client_max_receive_pdu_size: 0xFFFF,
                }
                .encode(),
            ),
        })
        .encode();
        let mut frames = feed(s, &client.send_apdu(&aarq).unwrap());
        loop {
            let frame = frames.pop().expect("a reply frame");
            match client.on_frame(&frame).unwrap() {
                Action::Apdu(aare) => {
                    assert_eq!(aare.first(), Some(&0x61));
                    return client;
                }
                Action::Send(rr) => frames = feed(s, &rr),
                Action::Ignore => {}
            }
        }
    }

    #[test]
    fn every_address_width_of_the_meter_is_answered_and_others_are_not() {
        // Serial 42: physical address 0x10 + 42 = 0x3A.
        for server in [Address::One(1), Address::Two { upper: 1, lower: 0x3A }, Address::Four { upper: 1, lower: 0x3A }]
        {
            let (meter, mut s) = session(DlmsFraming::Hdlc, false);
            associate(&mut s, server);
            assert_eq!(meter.stats().associations, 1);
        }
        let (_, mut s) = session(DlmsFraming::Hdlc, false);
        for other in [Address::One(2), Address::Two { upper: 1, lower: 0x3B }, Address::ALL_STATIONS] {
            let mut client = HdlcClient::new(Address::client(0x10), other, HdlcParameters::default());
            assert!(feed(&mut s, &client.snrm()).is_empty(), "{other:?} answered");
        }
    }

    #[test]
    fn wrapper_frames_to_another_wport_are_ignored() {
        let (_, mut s) = session(DlmsFraming::Wrapper, false);
        let rlrq = ami_protocols::dlms::apdu::Apdu::Rlrq(Default::default()).encode();
        s.input(&wrapper::encode(0x10, 2, &rlrq).unwrap());
        assert!(s.poll_transmit().is_none());
        s.input(&wrapper::encode(0x10, 1, &rlrq).unwrap());
        let reply = s.poll_transmit().unwrap();
        let (header, apdu, _) = wrapper::decode(&reply).unwrap().unwrap();
        assert_eq!((header.source, header.destination, apdu.first()), (1, 0x10, Some(&0x63)));
    }

    #[test]
    fn mode_e_identifies_then_takes_hdlc() {
        let (_, mut s) = session(DlmsFraming::Hdlc, true);
        s.input(b"\x00noise/?!\r\n");
        let ident = s.poll_transmit().unwrap();
        let id = mode_e::parse_identification(&ident).unwrap();
        assert_eq!((id.manufacturer.as_str(), id.mode_e, id.ident.as_str()), ("AMI", true, "AMI00000042"));
        s.input(&mode_e::ack_hdlc(id.baud_char));
        associate(&mut s, Address::Two { upper: 1, lower: 0x3A });
        // Without the opening, HDLC straight away.
        let (_, mut s) = session(DlmsFraming::Hdlc, true);
        associate(&mut s, Address::One(1));
    }

    #[test]
    fn an_optical_meter_waits_for_a_new_sign_on_after_disc() {
        let (_, mut s) = session(DlmsFraming::Hdlc, true);
        for round in 0..3 {
            s.input(b"/?!\r\n");
            let ident = s.poll_transmit().unwrap_or_else(|| panic!("no identification in round {round}"));
            let id = mode_e::parse_identification(&ident).unwrap();
            s.input(&mode_e::ack_hdlc(id.baud_char));
            let mut client = associate(&mut s, Address::One(1));
            let ua = feed(&mut s, &client.disc());
            assert_eq!(ua.len(), 1, "DISC is answered in round {round}");
        }
    }

    #[test]
    fn mutated_and_random_input_never_panics_and_the_link_recovers() {
        let mut rng = StdRng::seed_from_u64(0xD1_5EED);
        for framing in [DlmsFraming::Hdlc, DlmsFraming::Wrapper] {
            for mode_e in [false, true] {
                let (meter, mut s) = session(framing, mode_e);
                let mut client = HdlcClient::new(Address::client(0x20), Address::One(1), HdlcParameters::default());
                let seeds: Vec<Vec<u8>> = vec![
                    client.snrm(),
                    wrapper::encode(0x20, 1, &[0x60, 0x1D, 0xA1, 0x09, 0x06, 0x07]).unwrap(),
                    wrapper::encode(0x30, 1, &[0xC0, 0x01, 0xC1, 0x00, 0x08, 0, 0, 1, 0, 0, 255, 2, 0]).unwrap(),
                    b"/?!\r\n\x06252\r\n".to_vec(),
                ];
                for _ in 0..2000 {
                    let mut bytes = seeds[rng.gen_range(0..seeds.len())].clone();
                    for _ in 0..rng.gen_range(0..4) {
                        let at = rng.gen_range(0..bytes.len().max(1));
                        match rng.gen_range(0..3) {
                            0 if at < bytes.len() => bytes[at] ^= rng.gen_range(1..=255u8),
                            1 => bytes.insert(at.min(bytes.len()), rng.gen()),
                            _ if at < bytes.len() => {
                                bytes.remove(at);
                            }
                            _ => {}
                        }
                    }
                    if rng.gen_bool(0.1) {
                        bytes = (0..rng.gen_range(0..100)).map(|_| rng.gen()).collect();
                    }
                    s.input(&bytes);
                    while s.poll_transmit().is_some() {}
                    if rng.gen_bool(0.05) {
                        s.handle_silence();
                    }
                }
                s.handle_silence();
                assert!(s.buffered() <= 1);
                let _ = meter.stats();
            }
        }
        // After noise, a proper client still gets through.
        let (_, mut s) = session(DlmsFraming::Hdlc, false);
        s.input(&[0x7E, 0xA0, 0x55, 0x13, 0x7E, 0x00, 0xFF]);
        s.handle_silence();
        associate(&mut s, Address::One(1));
    }
}

//! The HDLC link state of IEC 62056-46 (Green Book, DLMS UA 1000-2, chapter 8): connection set-up with
//! parameter negotiation (SNRM/UA), numbered information transfer with N(S)/N(R) modulo 8, segmentation
//! of long APDUs, and release (DISC/UA/DM) — for the client ([`HdlcClient`]) and for a simulated meter
//! ([`HdlcServer`]). Frames themselves are [`crate::hdlc::Frame`]; [`Deframer`] cuts a byte stream into
//! them.
//!
//! Sans-IO: the types take decoded frames and APDUs and return encoded frames to write; they never read a
//! clock or a socket. Timeouts and retransmission of a whole request are the `Bus`'s job (it re-writes the
//! same bytes); the state machines here are written so that such a retransmission is harmless:
//!
//! - **Server, repeated I-frame.** An I-frame whose N(S) is the one accepted last (V(R) − 1) and whose
//!   bytes equal the last accepted frame is a retransmission after our reply was lost: the server does not
//!   pass the APDU up again, it re-sends its last reply frame. (A strict ISO/IEC 13239 secondary
//!   would discard the out-of-sequence frame and answer with its current N(R); re-sending the reply gives
//!   the client what it is waiting for in one turn, and the client ignores it if it had it already.)
//! - **Server, repeated RR.** An RR whose N(R) does not acknowledge our last segment asks for that segment
//!   again: it is re-sent.
//! - **Client, RR instead of the reply.** An RR acknowledging our whole request while we wait for the
//!   reply (what a strict secondary sends to a repeated frame) is answered with an RR poll, at most 3
//!   times in a row; an RR asking for our last frame again gets it again.
//! - **Client, repeated I-frame.** An I-frame with the N(S) received last (V(R) − 1) is a duplicate of a
//!   segment already taken: [`Action::Ignore`].
//! - Any other N(S)/N(R) mismatch: the client returns [`SessionError::SequenceError`] (the association is
//!   lost: disconnect and start over); the server answers FRMR.
//!
//! The LLC header (IEC 62056-46 / Green Book chapter 8, LLC sublayer: `E6 E6 00` client→server, `E6 E7 00`
//! server→client) is added to outgoing APDUs and checked and stripped from incoming ones here.
//!
//! Windows: the negotiated window sizes are reported, and a window larger than 1 from the peer is honoured
//! on receive (segments without the poll/final bit are buffered without an RR; the RR answers the segment
//! with P/F set). On send, both sides always transmit one segment at a time with P/F set and wait for the
//! RR — valid for every window size, and what a request/response `Bus` can carry.
//!
//! Panic contract: no frame or sequence of frames panics any method here; reassembly is bounded by
//! [`MAX_APDU_LEN`].

use crate::hdlc::{Address, Control, Frame, FrameError, FLAG, MAX_FRAME_LEN};
use crate::{Check, ReplyMatcher};

/// LLC header of a client→server information field (destination LSAP `E6`, source LSAP `E6`, quality `00`).
pub const LLC_REQUEST: [u8; 3] = [0xE6, 0xE6, 0x00];
/// LLC header of a server→client information field (destination LSAP `E6`, source LSAP `E7`, quality `00`).
pub const LLC_REPLY: [u8; 3] = [0xE6, 0xE7, 0x00];

/// Largest APDU (LLC header included) reassembled from segments or accepted for sending: the xDLMS
/// maximum PDU size is a 16-bit value, so no conforming peer sends more.
pub const MAX_APDU_LEN: usize = 0x1_0000;

/// Largest information field one frame can carry with 4-byte server address and 1-byte client address:
/// the 11-bit length minus format (2), addresses (5), control (1), HCS (2) and FCS (2).
pub const MAX_INFO_PER_FRAME: usize = MAX_FRAME_LEN - 12;

/// Format identifier and group identifier of the SNRM/UA parameter negotiation field (ISO/IEC 13239
/// parameter negotiation: general format `0x81`, HDLC parameter set `0x80`).
const PARAM_FORMAT: u8 = 0x81;
const PARAM_GROUP: u8 = 0x80;
/// Parameter ids of the negotiation field (IEC 62056-46, information field of SNRM and UA).
const PARAM_MAX_INFO_TX: u8 = 0x05;
const PARAM_MAX_INFO_RX: u8 = 0x06;
const PARAM_WINDOW_TX: u8 = 0x07;
const PARAM_WINDOW_RX: u8 = 0x08;

/// HDLC link parameters, from the point of view of the side that holds them: `tx` is what this side
/// sends, `rx` what it receives. Defaults (IEC 62056-46, used when SNRM or UA carries no
/// information field): 128 bytes each way, window 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HdlcParameters {
    /// Largest information field this side sends.
    pub max_info_tx: u16,
    /// Largest information field this side accepts.
    pub max_info_rx: u16,
    /// Frames this side may send before waiting for an acknowledgement, `1..=7`.
    pub window_tx: u8,
    /// Frames this side accepts before acknowledging, `1..=7`.
    pub window_rx: u8,
}

impl Default for HdlcParameters {
    fn default() -> Self {
        Self { max_info_tx: 128, max_info_rx: 128, window_tx: 1, window_rx: 1 }
    }
}

impl HdlcParameters {
    /// The same parameters seen from the other side (tx ↔ rx).
    pub fn swapped(self) -> Self {
        Self {
            max_info_tx: self.max_info_rx,
            max_info_rx: self.max_info_tx,
            window_tx: self.window_rx,
            window_rx: self.window_tx,
        }
    }

    /// The negotiation information field `81 80 len 05 .. 06 .. 07 .. 08 ..` carrying these values (sizes
    /// in 1 byte when they fit, else 2; windows in 4 bytes, as the Green Book example and most meters
    /// write them).
    pub fn encode(&self) -> Vec<u8> {
        let mut params = Vec::with_capacity(20);
        for (id, v) in [(PARAM_MAX_INFO_TX, self.max_info_tx), (PARAM_MAX_INFO_RX, self.max_info_rx)] {
            params.push(id);
            match u8::try_from(v) {
                Ok(b) => params.extend_from_slice(&[1, b]),
                Err(_) => {
                    params.push(2);
                    params.extend_from_slice(&v.to_be_bytes());
                }
            }
        }
        for (id, w) in [(PARAM_WINDOW_TX, self.window_tx), (PARAM_WINDOW_RX, self.window_rx)] {
            params.extend_from_slice(&[id, 4]);
            params.extend_from_slice(&u32::from(w).to_be_bytes());
        }
        let mut out = vec![PARAM_FORMAT, PARAM_GROUP];
        // At most 2 × 4 + 2 × 6 = 20 bytes.
        out.push(u8::try_from(params.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(&params);
        out
    }

    /// Parses a negotiation information field. An empty field means the defaults; parameters absent from
    /// the field keep their defaults; unknown parameter ids are skipped. Values may be 1 to 4 bytes.
    /// Sizes above `u16::MAX` saturate; windows are clamped to `1..=7`; a size of 0 is an error.
    pub fn decode(info: &[u8]) -> Result<Self, SessionError> {
        let mut p = Self::default();
        if info.is_empty() {
            return Ok(p);
        }
        let bad = |why: &str| SessionError::BadParameters(why.to_string());
        let [format, group, len, rest @ ..] = info else {
            return Err(bad("shorter than its 3-byte header"));
        };
        if *format != PARAM_FORMAT || *group != PARAM_GROUP {
            return Err(bad(&format!("header {format:02X} {group:02X} (expected 81 80)")));
        }
        let mut params = rest.get(..usize::from(*len)).ok_or_else(|| bad("group length exceeds the field"))?;
        while let [id, n, tail @ ..] = params {
            let n = usize::from(*n);
            let value = tail.get(..n).ok_or_else(|| bad("parameter length exceeds the group"))?;
            params = tail.get(n..).unwrap_or_default();
            if !(1..=4).contains(&n) {
                if matches!(*id, PARAM_MAX_INFO_TX..=PARAM_WINDOW_RX) {
                    return Err(bad(&format!("parameter {id:02X} has {n} value bytes (1 to 4 allowed)")));
                }
                continue;
            }
            let v = value.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
            let size = || match u16::try_from(v) {
                Ok(0) => Err(bad(&format!("parameter {id:02X}: maximum information length 0"))),
                Ok(s) => Ok(s),
                Err(_) => Ok(u16::MAX),
            };
            // `clamp(1, 7)` makes the cast lossless.
            let window = || v.clamp(1, 7) as u8;
            match *id {
                PARAM_MAX_INFO_TX => p.max_info_tx = size()?,
                PARAM_MAX_INFO_RX => p.max_info_rx = size()?,
                PARAM_WINDOW_TX => p.window_tx = window(),
                PARAM_WINDOW_RX => p.window_rx = window(),
                _ => {}
            }
        }
        if !params.is_empty() {
            return Err(bad("trailing byte in the parameter group"));
        }
        Ok(p)
    }

    /// The values both sides can live with: each size and window the smaller of ours and the peer's (the
    /// peer's given from its own point of view, as in its SNRM or UA).
    fn agree(ours: Self, peers: Self) -> Self {
        Self {
            max_info_tx: ours.max_info_tx.min(peers.max_info_rx),
            max_info_rx: ours.max_info_rx.min(peers.max_info_tx),
            window_tx: ours.window_tx.min(peers.window_rx).max(1),
            window_rx: ours.window_rx.min(peers.window_tx).max(1),
        }
    }

    /// Bytes per transmitted segment: `max_info_tx`, at least 1, at most what a frame can carry.
    fn tx_segment(&self) -> usize {
        usize::from(self.max_info_tx).clamp(1, MAX_INFO_PER_FRAME)
    }
}

/// Why a frame cannot be taken in the current link state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The bytes are not a valid frame.
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    /// A frame type this state does not expect (e.g. an I-frame before the UA, an RR with nothing sent).
    #[error("unexpected {control:?} frame while {state}")]
    UnexpectedFrame {
        /// The frame's control field.
        control: Control,
        /// What the session was doing.
        state: &'static str,
    },
    /// The peer refused: DM (disconnected mode, e.g. SNRM refused or the link was dropped) or FRMR (frame
    /// reject). The session is now disconnected.
    #[error("peer refused with {0:?}")]
    Rejected(Control),
    /// N(S) or N(R) of a frame does not follow on: the link has lost frames beyond repair.
    #[error("sequence error in {control:?}: expected N(S)={expected_send} N(R)={expected_recv}")]
    SequenceError {
        /// The frame's control field.
        control: Control,
        /// N(S) expected (our V(R)).
        expected_send: u8,
        /// N(R) expected (our V(S)).
        expected_recv: u8,
    },
    /// The peer is busy (RNR): poll again later.
    #[error("peer not ready (RNR)")]
    NotReady,
    /// An APDU (or reassembled segments) longer than [`MAX_APDU_LEN`].
    #[error("APDU longer than {MAX_APDU_LEN} bytes")]
    TooLong,
    /// The information field does not start with the LLC header expected for this direction.
    #[error("missing LLC header (expected {expected:02X?})")]
    BadLlc {
        /// The LLC bytes expected.
        expected: [u8; 3],
    },
    /// The SNRM/UA parameter negotiation field is malformed.
    #[error("bad HDLC parameter field: {0}")]
    BadParameters(String),
    /// [`HdlcClient::send_apdu`] before the UA, or while a previous request is still being sent.
    #[error("link not ready to send: {0}")]
    NotReadyToSend(&'static str),
}

/// What the client should do after [`HdlcClient::on_frame`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write these bytes (one encoded frame) and read the next frame: an RR asking for the next reply
    /// segment, or the next segment of our own request after the server's RR.
    Send(Vec<u8>),
    /// A complete, reassembled APDU from the server, LLC header stripped.
    Apdu(Vec<u8>),
    /// Nothing to send and nothing complete: a segment inside a window (no poll bit), a duplicate, or a
    /// frame not addressed to this session. Read the next frame.
    Ignore,
}

/// Same station, whatever width the address was written in (`Two{1, 17}` and `Four{1, 17}` are the same
/// server; a 1-byte address is the upper address alone).
fn same_station(a: Address, b: Address) -> bool {
    fn norm(a: Address) -> (u16, Option<u16>) {
        match a {
            Address::One(u) => (u16::from(u), None),
            Address::Two { upper, lower } => (u16::from(upper), Some(u16::from(lower))),
            Address::Four { upper, lower } => (upper, Some(lower)),
        }
    }
    norm(a) == norm(b)
}

/// `(v + 1) mod 8`.
fn next(v: u8) -> u8 {
    (v + 1) & 0x07
}

/// `(v − 1) mod 8`.
fn prev(v: u8) -> u8 {
    (v + 7) & 0x07
}

/// Encodes a frame this module built; addresses were validated when the session was created and segment
/// sizes respect [`MAX_INFO_PER_FRAME`], so encoding cannot fail for them. Should it ever, the result is
/// empty (nothing written) rather than a panic.
fn emit(frame: &Frame) -> Vec<u8> {
    frame.encode().unwrap_or_default()
}

/// Outgoing segmentation: the bytes (LLC included) still to send and where the next segment starts.
#[derive(Debug, Default)]
struct Outgoing {
    data: Vec<u8>,
    at: usize,
    /// The last frame written (re-sent when the peer's RR asks for it again).
    last: Vec<u8>,
}

impl Outgoing {
    fn pending(&self) -> bool {
        self.at < self.data.len()
    }
}

/// Checks and appends one received information field to a reassembly buffer, bounded.
fn reassemble(buf: &mut Vec<u8>, info: &[u8]) -> Result<(), SessionError> {
    if buf.len().saturating_add(info.len()) > MAX_APDU_LEN {
        buf.clear();
        return Err(SessionError::TooLong);
    }
    buf.extend_from_slice(info);
    Ok(())
}

/// Strips `llc` from a complete reassembled APDU.
fn strip_llc(buf: Vec<u8>, llc: [u8; 3]) -> Result<Vec<u8>, SessionError> {
    match buf.strip_prefix(&llc) {
        Some(apdu) => Ok(apdu.to_vec()),
        None => Err(SessionError::BadLlc { expected: llc }),
    }
}

/// The client (primary station) side of one HDLC connection to one server.
///
/// Contract: call [`HdlcClient::snrm`] and write it; feed the reply to [`HdlcClient::on_ua`]. Then for each
/// APDU call [`HdlcClient::send_apdu`], write the frame, and feed every frame read to
/// [`HdlcClient::on_frame`] until it returns [`Action::Apdu`], writing each [`Action::Send`]. Use
/// [`HdlcClient::matcher`] to let the `Bus` pick this session's frames. [`HdlcClient::disc`] releases.
/// An error from `on_frame`/`on_ua` leaves the session disconnected when it says so (DM/FRMR, sequence
/// error); start over with SNRM.
#[derive(Debug)]
pub struct HdlcClient {
    client: Address,
    server: Address,
    proposed: HdlcParameters,
    negotiated: HdlcParameters,
    connected: bool,
    /// V(S): N(S) of the next I-frame we send.
    send_seq: u8,
    /// V(R): N(S) we expect in the next I-frame received.
    recv_seq: u8,
    /// Whether any I-frame was received since the UA (a duplicate needs a previous frame).
    received_any: bool,
    out: Outgoing,
    rx: Vec<u8>,
    /// RR polls sent since the last I-frame received (bounded by [`MAX_POLLS`]).
    polls: u8,
}

/// How many times in a row the client polls with RR a server that answers its request with RR only.
const MAX_POLLS: u8 = 3;

impl HdlcClient {
    /// A disconnected session from `client` (a 1-byte SAP, e.g. [`Address::PUBLIC_CLIENT`]) to `server`,
    /// proposing `proposed` in the SNRM.
    ///
    /// Addresses are not checked here: a value that does not fit its width (see [`Address::server`]) makes
    /// every frame this session builds empty (nothing to write) instead of panicking. Build addresses
    /// with [`Address::client`] / [`Address::server`] from validated configuration.
    pub fn new(client: Address, server: Address, proposed: HdlcParameters) -> Self {
        Self {
            client,
            server,
            proposed,
            negotiated: HdlcParameters::default(),
            connected: false,
            send_seq: 0,
            recv_seq: 0,
            received_any: false,
            out: Outgoing::default(),
            rx: Vec::new(),
            polls: 0,
        }
    }

    fn frame(&self, control: Control, segmented: bool, info: Vec<u8>) -> Frame {
        Frame { segmented, dest: self.server, src: self.client, control, info }
    }

    fn reset(&mut self) {
        self.send_seq = 0;
        self.recv_seq = 0;
        self.received_any = false;
        self.out = Outgoing::default();
        self.rx.clear();
        self.polls = 0;
    }

    /// The SNRM frame (poll bit set) with the proposed parameters; resets the sequence numbers.
    pub fn snrm(&mut self) -> Vec<u8> {
        self.connected = false;
        self.reset();
        emit(&self.frame(Control::SNRM { poll: true }, false, self.proposed.encode()))
    }

    /// Takes the server's reply to SNRM. UA: connected, returns the negotiated parameters (from our point
    /// of view; a UA without information field means the defaults). DM: [`SessionError::Rejected`].
    pub fn on_ua(&mut self, frame: &Frame) -> Result<HdlcParameters, SessionError> {
        self.check_addresses(frame)?;
        match frame.control {
            Control::UA { .. } => {
                let servers = HdlcParameters::decode(&frame.info)?;
                self.negotiated = HdlcParameters::agree(self.proposed, servers);
                self.connected = true;
                self.reset();
                Ok(self.negotiated)
            }
            Control::DM { .. } | Control::FRMR { .. } => {
                self.connected = false;
                Err(SessionError::Rejected(frame.control))
            }
            control => Err(SessionError::UnexpectedFrame { control, state: "waiting for UA" }),
        }
    }

    fn check_addresses(&self, frame: &Frame) -> Result<(), SessionError> {
        if same_station(frame.dest, self.client) && same_station(frame.src, self.server) {
            Ok(())
        } else {
            Err(SessionError::UnexpectedFrame { control: frame.control, state: "frame for another session" })
        }
    }

    /// Builds the next I-frame of the outgoing APDU (poll bit set), advancing V(S).
    fn next_segment(&mut self) -> Vec<u8> {
        let seg = self.negotiated.tx_segment();
        let end = self.out.at.saturating_add(seg).min(self.out.data.len());
        let info = self.out.data.get(self.out.at..end).unwrap_or_default().to_vec();
        self.out.at = end;
        let control = Control::I { send_seq: self.send_seq, recv_seq: self.recv_seq, poll: true };
        let bytes = emit(&self.frame(control, self.out.pending(), info));
        self.send_seq = next(self.send_seq);
        self.out.last.clone_from(&bytes);
        bytes
    }

    /// The first I-frame carrying `apdu` (LLC header added). When the APDU is longer than the negotiated
    /// `max_info_tx` the frame has the segmentation bit set and the following segments come out of
    /// [`HdlcClient::on_frame`] as [`Action::Send`] after each RR of the server.
    pub fn send_apdu(&mut self, apdu: &[u8]) -> Result<Vec<u8>, SessionError> {
        if !self.connected {
            return Err(SessionError::NotReadyToSend("not connected (no UA yet)"));
        }
        if self.out.pending() {
            return Err(SessionError::NotReadyToSend("the previous APDU is still being sent"));
        }
        if apdu.len().saturating_add(LLC_REQUEST.len()) > MAX_APDU_LEN {
            return Err(SessionError::TooLong);
        }
        let mut data = Vec::with_capacity(apdu.len() + LLC_REQUEST.len());
        data.extend_from_slice(&LLC_REQUEST);
        data.extend_from_slice(apdu);
        self.out = Outgoing { data, at: 0, last: Vec::new() };
        self.rx.clear();
        self.polls = 0;
        Ok(self.next_segment())
    }

    /// Takes one frame from the server while connected. See [`Action`]; DM and FRMR disconnect and return
    /// [`SessionError::Rejected`].
    pub fn on_frame(&mut self, frame: &Frame) -> Result<Action, SessionError> {
        if self.check_addresses(frame).is_err() {
            return Ok(Action::Ignore);
        }
        match frame.control {
            Control::DM { .. } | Control::FRMR { .. } => {
                self.connected = false;
                self.reset();
                Err(SessionError::Rejected(frame.control))
            }
            _ if !self.connected => {
                Err(SessionError::UnexpectedFrame { control: frame.control, state: "disconnected" })
            }
            Control::I { send_seq, recv_seq, poll } => self.on_information(frame, send_seq, recv_seq, poll),
            Control::RR { recv_seq, .. } => self.on_receive_ready(frame.control, recv_seq),
            Control::RNR { .. } => Err(SessionError::NotReady),
            Control::UI { .. } => {
                // Unnumbered information: an unsolicited push (data-notification), outside the sequence.
                strip_llc(frame.info.clone(), LLC_REPLY).map(Action::Apdu)
            }
            control => Err(SessionError::UnexpectedFrame { control, state: "connected" }),
        }
    }

    fn sequence_error(&mut self, control: Control) -> SessionError {
        let e = SessionError::SequenceError { control, expected_send: self.recv_seq, expected_recv: self.send_seq };
        self.connected = false;
        self.reset();
        e
    }

    fn on_information(&mut self, frame: &Frame, ns: u8, nr: u8, poll: bool) -> Result<Action, SessionError> {
        if self.received_any && ns == prev(self.recv_seq) && nr == self.send_seq {
            // The segment we took last, again (the server re-sent it): already in the buffer.
            return Ok(Action::Ignore);
        }
        if ns != self.recv_seq || nr != self.send_seq {
            return Err(self.sequence_error(frame.control));
        }
        if self.out.pending() {
            // The server cannot answer before it has our whole request.
            return Err(self.sequence_error(frame.control));
        }
        self.recv_seq = next(self.recv_seq);
        self.received_any = true;
        self.polls = 0;
        reassemble(&mut self.rx, &frame.info)?;
        if frame.segmented {
            if !poll {
                return Ok(Action::Ignore);
            }
            let rr = self.frame(Control::RR { recv_seq: self.recv_seq, poll: true }, false, Vec::new());
            return Ok(Action::Send(emit(&rr)));
        }
        let apdu = std::mem::take(&mut self.rx);
        strip_llc(apdu, LLC_REPLY).map(Action::Apdu)
    }

    fn on_receive_ready(&mut self, control: Control, nr: u8) -> Result<Action, SessionError> {
        if self.out.pending() && nr == self.send_seq {
            return Ok(Action::Send(self.next_segment()));
        }
        if self.out.last.is_empty() {
            return Err(SessionError::UnexpectedFrame { control, state: "no frame of ours to acknowledge" });
        }
        if nr == prev(self.send_seq) {
            // The server did not get our last frame: send it again.
            return Ok(Action::Send(self.out.last.clone()));
        }
        if nr == self.send_seq {
            // The server has our whole request but answers RR instead of its reply (a strict ISO/IEC 13239
            // secondary does so to a repeated frame): poll it for its I-frames, a bounded number of times.
            self.polls = self.polls.saturating_add(1);
            if self.polls > MAX_POLLS {
                return Err(SessionError::UnexpectedFrame { control, state: "polled for the reply, still only RR" });
            }
            let rr = self.frame(Control::RR { recv_seq: self.recv_seq, poll: true }, false, Vec::new());
            return Ok(Action::Send(emit(&rr)));
        }
        Err(self.sequence_error(control))
    }

    /// The DISC frame (poll bit set). The session counts as disconnected from now on; the server's UA or
    /// DM need not be fed back.
    pub fn disc(&mut self) -> Vec<u8> {
        self.connected = false;
        self.reset();
        emit(&self.frame(Control::DISC { poll: true }, false, Vec::new()))
    }

    /// A [`ReplyMatcher`] for the `Bus`: one complete frame from our server to our client is `Complete`;
    /// frames between other stations (another client's reply on a shared line, our own request echoed by
    /// an optical head) are `Foreign`; bad HCS/FCS or an impossible frame is `Corrupt`; noise before the
    /// opening flag is `Foreign` (skipped up to the next `7E`).
    pub fn matcher(&self) -> Box<dyn ReplyMatcher> {
        Box::new(HdlcMatcher { client: self.client, server: self.server })
    }

    /// The parameters in force (defaults before the UA).
    pub fn negotiated(&self) -> HdlcParameters {
        self.negotiated
    }

    /// True between a UA and a DISC, DM, FRMR or sequence error.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The client address of this session.
    pub fn client(&self) -> Address {
        self.client
    }

    /// The server address of this session.
    pub fn server(&self) -> Address {
        self.server
    }
}

/// The reply matcher of [`HdlcClient::matcher`], public so that other layers can build one directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HdlcMatcher {
    /// Our client address (the reply's destination).
    pub client: Address,
    /// The server's address (the reply's source).
    pub server: Address,
}

impl ReplyMatcher for HdlcMatcher {
    fn check(&self, buf: &[u8]) -> Check {
        let decoded = Frame::decode(buf).and_then(|d| match d {
            // Refuse a damaged header (HCS) without waiting for the rest of the frame.
            None => Frame::check_prefix(buf).map(|()| None),
            some => Ok(some),
        });
        match decoded {
            Ok(None) => Check::Incomplete,
            Ok(Some((frame, used))) => {
                if same_station(frame.dest, self.client) && same_station(frame.src, self.server) {
                    Check::Complete { len: used }
                } else {
                    Check::Foreign {
                        skip: used,
                        what: format!("HDLC {:?} frame from {:?} to {:?}", frame.control, frame.src, frame.dest),
                    }
                }
            }
            Err(FrameError::BadFlag(_)) => {
                let skip = buf.iter().position(|&b| b == FLAG).unwrap_or(buf.len());
                Check::Foreign { skip, what: "noise before the opening flag".into() }
            }
            Err(e) => Check::Corrupt { reason: e.to_string() },
        }
    }
}

/// What the server should do after [`HdlcServer::on_frame`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAction {
    /// Write these bytes (one encoded frame): UA to SNRM (with the negotiated parameters), UA or DM to
    /// DISC, DM to a command while disconnected, RR after a non-final request segment, the next reply
    /// segment after an RR, FRMR to a frame that breaks the sequence, or the last reply again to a
    /// retransmitted request.
    Reply(Vec<u8>),
    /// A complete request APDU, LLC header stripped: answer it with [`HdlcServer::respond`].
    Apdu(Vec<u8>),
    /// Nothing to write: not addressed to us, a broadcast, or a segment inside a window.
    Ignore,
}

/// The server (secondary station) side of HDLC, for the simulated meter: one connection at a time.
///
/// Addressing: the server answers frames whose destination is its own address, in any width (1-, 2- or
/// 4-byte forms of the same upper/lower address are accepted) and replies with its address written as the
/// client wrote it. Frames to the all-stations address are ignored, SNRM included: on a multi-drop line
/// every meter would answer at once.
///
/// Connection: an SNRM from any client (re)starts the connection with that client, resetting sequence
/// numbers and any half-sent reply. Other clients' frames get DM while it lasts. The inactivity time-out
/// of IEC 62056-46 is the caller's (it owns the clock): call [`HdlcServer::disconnect`] when it expires.
#[derive(Debug)]
pub struct HdlcServer {
    own: Address,
    params: HdlcParameters,
    negotiated: HdlcParameters,
    /// The connected client, and our address as it wrote it.
    peer: Option<(Address, Address)>,
    send_seq: u8,
    recv_seq: u8,
    /// The last I-frame accepted, to recognise a retransmission.
    last_request: Option<Frame>,
    /// The last frame sent (RR or I), re-sent for a retransmitted request.
    last_reply: Vec<u8>,
    out: Outgoing,
    rx: Vec<u8>,
}

impl HdlcServer {
    /// A disconnected server answering to `own`, offering at most `params` (its own point of view).
    pub fn new(own: Address, params: HdlcParameters) -> Self {
        Self {
            own,
            params,
            negotiated: params,
            peer: None,
            send_seq: 0,
            recv_seq: 0,
            last_request: None,
            last_reply: Vec::new(),
            out: Outgoing::default(),
            rx: Vec::new(),
        }
    }

    fn reset(&mut self) {
        self.send_seq = 0;
        self.recv_seq = 0;
        self.last_request = None;
        self.last_reply.clear();
        self.out = Outgoing::default();
        self.rx.clear();
    }

    fn to(&self, client: Address, me: Address, control: Control, segmented: bool, info: Vec<u8>) -> Vec<u8> {
        emit(&Frame { segmented, dest: client, src: me, control, info })
    }

    fn is_broadcast(a: Address) -> bool {
        match a {
            Address::One(u) => u == 0x7F,
            Address::Two { upper, lower } => upper == 0x7F || lower == 0x7F,
            Address::Four { upper, lower } => upper == 0x3FFF || lower == 0x3FFF,
        }
    }

    /// Takes one frame from the line.
    pub fn on_frame(&mut self, frame: &Frame) -> ServerAction {
        if Self::is_broadcast(frame.dest) || !same_station(frame.dest, self.own) {
            return ServerAction::Ignore;
        }
        let (client, me) = (frame.src, frame.dest);
        let poll = match frame.control {
            Control::I { poll, .. }
            | Control::RR { poll, .. }
            | Control::RNR { poll, .. }
            | Control::SNRM { poll }
            | Control::DISC { poll }
            | Control::UI { poll } => poll,
            _ => false,
        };
        match frame.control {
            Control::SNRM { .. } => match HdlcParameters::decode(&frame.info) {
                Ok(clients) => {
                    self.negotiated = HdlcParameters::agree(self.params, clients);
                    self.peer = Some((client, me));
                    self.reset();
                    ServerAction::Reply(self.to(client, me, Control::UA { poll }, false, self.negotiated.encode()))
                }
                Err(_) => ServerAction::Reply(self.frmr(client, me, frame, 0x01)),
            },
            Control::DISC { .. } => {
                let connected = self.peer.is_some_and(|(c, _)| same_station(c, client));
                if connected {
                    self.peer = None;
                    self.reset();
                    ServerAction::Reply(self.to(client, me, Control::UA { poll }, false, Vec::new()))
                } else {
                    ServerAction::Reply(self.to(client, me, Control::DM { poll }, false, Vec::new()))
                }
            }
            _ => match self.peer {
                Some((c, _)) if same_station(c, client) => self.connected_frame(frame, client, me),
                // Not connected, or another client: we are in disconnected mode for it.
                _ if poll => ServerAction::Reply(self.to(client, me, Control::DM { poll: true }, false, Vec::new())),
                _ => ServerAction::Ignore,
            },
        }
    }

    /// FRMR with its 3-byte information field (ISO/IEC 13239): the rejected control field,
    /// V(S)/V(R), and the reason bits (W 0x01 invalid control, X 0x02 info not permitted, Y 0x04 too long,
    /// Z 0x08 invalid N(R)).
    fn frmr(&self, client: Address, me: Address, frame: &Frame, reason: u8) -> Vec<u8> {
        let state = (self.recv_seq << 5) | (self.send_seq << 1);
        let info = vec![u8::from(frame.control), state, reason];
        self.to(client, me, Control::FRMR { poll: true }, false, info)
    }

    fn remember(&mut self, reply: Vec<u8>) -> ServerAction {
        self.last_reply.clone_from(&reply);
        ServerAction::Reply(reply)
    }

    fn connected_frame(&mut self, frame: &Frame, client: Address, me: Address) -> ServerAction {
        match frame.control {
            Control::I { send_seq: ns, recv_seq: nr, poll } => {
                if self.last_request.as_ref() == Some(frame) && ns == prev(self.recv_seq) {
                    // The client repeated its last frame: our reply was lost. Send it again.
                    return if self.last_reply.is_empty() {
                        ServerAction::Ignore
                    } else {
                        ServerAction::Reply(self.last_reply.clone())
                    };
                }
                if ns != self.recv_seq || nr != self.send_seq {
                    return ServerAction::Reply(self.frmr(client, me, frame, 0x08));
                }
                if usize::from(self.negotiated.max_info_rx) < frame.info.len() {
                    return ServerAction::Reply(self.frmr(client, me, frame, 0x04));
                }
                self.recv_seq = next(self.recv_seq);
                self.last_request = Some(frame.clone());
                self.last_reply.clear();
                // A new request ends any reply still being segmented (the client gave up on it).
                self.out = Outgoing::default();
                if reassemble(&mut self.rx, &frame.info).is_err() {
                    return ServerAction::Reply(self.frmr(client, me, frame, 0x04));
                }
                if frame.segmented {
                    if !poll {
                        return ServerAction::Ignore;
                    }
                    let rr =
                        self.to(client, me, Control::RR { recv_seq: self.recv_seq, poll: true }, false, Vec::new());
                    return self.remember(rr);
                }
                match strip_llc(std::mem::take(&mut self.rx), LLC_REQUEST) {
                    Ok(apdu) => ServerAction::Apdu(apdu),
                    Err(_) => ServerAction::Reply(self.frmr(client, me, frame, 0x02)),
                }
            }
            Control::RR { recv_seq: nr, poll } => {
                if self.out.pending() && nr == self.send_seq {
                    let bytes = self.next_segment(client, me);
                    self.remember(bytes)
                } else if nr == prev(self.send_seq) && !self.out.last.is_empty() {
                    // The client did not get our last segment: again.
                    ServerAction::Reply(self.out.last.clone())
                } else if nr == self.send_seq && poll {
                    // A poll with nothing to send: say we are ready and where we are.
                    let rr =
                        self.to(client, me, Control::RR { recv_seq: self.recv_seq, poll: true }, false, Vec::new());
                    ServerAction::Reply(rr)
                } else if poll {
                    ServerAction::Reply(self.frmr(client, me, frame, 0x08))
                } else {
                    ServerAction::Ignore
                }
            }
            Control::UI { .. } | Control::RNR { poll: false, .. } => ServerAction::Ignore,
            _ => ServerAction::Reply(self.frmr(client, me, frame, 0x01)),
        }
    }

    fn next_segment(&mut self, client: Address, me: Address) -> Vec<u8> {
        let seg = self.negotiated.tx_segment();
        let end = self.out.at.saturating_add(seg).min(self.out.data.len());
        let info = self.out.data.get(self.out.at..end).unwrap_or_default().to_vec();
        self.out.at = end;
        let control = Control::I { send_seq: self.send_seq, recv_seq: self.recv_seq, poll: true };
        let bytes = self.to(client, me, control, self.out.pending(), info);
        self.send_seq = next(self.send_seq);
        self.out.last.clone_from(&bytes);
        bytes
    }

    /// The first I-frame of the reply `apdu` (LLC header added) to the client of the last request,
    /// segmented by the negotiated `max_info_tx`; further segments come out of [`HdlcServer::on_frame`] on
    /// the client's RR. Empty when no client is connected (nothing to write). An APDU longer than
    /// [`MAX_APDU_LEN`] is cut to that length (a meter's own replies are bounded by its PDU size).
    pub fn respond(&mut self, apdu: &[u8]) -> Vec<u8> {
        let Some((client, me)) = self.peer else {
            return Vec::new();
        };
        let take = apdu.len().min(MAX_APDU_LEN - LLC_REPLY.len());
        let mut data = Vec::with_capacity(take + LLC_REPLY.len());
        data.extend_from_slice(&LLC_REPLY);
        data.extend_from_slice(apdu.get(..take).unwrap_or_default());
        self.out = Outgoing { data, at: 0, last: Vec::new() };
        let bytes = self.next_segment(client, me);
        self.last_reply.clone_from(&bytes);
        bytes
    }

    /// Drops the connection without a frame (inactivity time-out, or the transport closed): the next frame
    /// from the client other than SNRM gets DM.
    pub fn disconnect(&mut self) {
        self.peer = None;
        self.reset();
    }

    /// The client of the current connection (its SAP tells the authentication level).
    pub fn client(&self) -> Option<Address> {
        self.peer.map(|(c, _)| c)
    }

    /// True between a UA to SNRM and the DISC.
    pub fn is_connected(&self) -> bool {
        self.peer.is_some()
    }

    /// The parameters in force, from the server's point of view.
    pub fn negotiated(&self) -> HdlcParameters {
        self.negotiated
    }
}

/// Largest number of bytes a [`Deframer`] buffers: a little over one maximal frame.
const DEFRAMER_CAP: usize = 2 * (MAX_FRAME_LEN + 2);

/// Cuts a byte stream into HDLC frames (server side, or a monitor of a line).
///
/// Resynchronises on garbage by dropping one byte at a time (counted in [`Deframer::discarded`]) until a
/// valid frame starts. A flag shared between two frames (closing flag of one = opening flag of the next)
/// and inter-frame fill flags are accepted. The buffer is bounded: it never holds more than
/// about two maximal frames.
#[derive(Debug, Default)]
pub struct Deframer {
    buf: Vec<u8>,
    discarded: u64,
}

impl Deframer {
    /// An empty deframer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `bytes` and returns every complete, valid frame now available, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Frame> {
        let mut frames = Vec::new();
        // Feed in bounded pieces so that a huge burst of noise never grows the buffer.
        for piece in bytes.chunks(DEFRAMER_CAP / 2) {
            self.buf.extend_from_slice(piece);
            self.drain(&mut frames);
        }
        frames
    }

    fn drain(&mut self, frames: &mut Vec<Frame>) {
        let mut at = 0usize;
        loop {
            let rest = self.buf.get(at..).unwrap_or_default();
            if rest.is_empty() {
                break;
            }
            match Frame::decode(rest) {
                Ok(Some((frame, used))) => {
                    frames.push(frame);
                    // Keep the closing flag: it may be the next frame's opening flag.
                    at += used.saturating_sub(1).max(1);
                }
                // A prefix whose header is already wrong (bad address, HCS) will never complete: resync
                // now rather than wait for the length its format field claims.
                Ok(None) if Frame::check_prefix(rest).is_ok() => break,
                Ok(None) | Err(_) => {
                    at += 1;
                    // A lone flag left from the previous frame is not noise.
                    if rest.first() != Some(&FLAG) {
                        self.discarded = self.discarded.saturating_add(1);
                    }
                }
            }
        }
        self.buf.drain(..at.min(self.buf.len()));
        if self.buf.len() > DEFRAMER_CAP {
            // Unreachable with valid length fields (a prefix waits for at most MAX_FRAME_LEN + 2 bytes);
            // kept as the stated bound.
            let excess = self.buf.len() - DEFRAMER_CAP;
            self.buf.drain(..excess);
            self.discarded = self.discarded.saturating_add(excess as u64);
        }
    }

    /// Bytes dropped while resynchronising, since creation (separating flags are not counted).
    pub fn discarded(&self) -> u64 {
        self.discarded
    }

    /// Bytes buffered that do not yet form a complete frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_parameters_encode_as_the_green_book_example() {
        // The Green Book chapter 8 / IEC 62056-46 example SNRM information field: 128 bytes, window 1 each way.
        let expected = [
            0x81, 0x80, 0x12, // format, group, group length 18
            0x05, 0x01, 0x80, // max info tx: 1 byte, 128
            0x06, 0x01, 0x80, // max info rx: 1 byte, 128
            0x07, 0x04, 0x00, 0x00, 0x00, 0x01, // window tx: 4 bytes, 1
            0x08, 0x04, 0x00, 0x00, 0x00, 0x01, // window rx: 4 bytes, 1
        ];
        assert_eq!(HdlcParameters::default().encode(), expected);
        assert_eq!(HdlcParameters::decode(&expected), Ok(HdlcParameters::default()));
    }

    #[test]
    fn parameters_decode_any_width_and_refuse_bad_groups() {
        let p = HdlcParameters::decode(&[
            0x81, 0x80, 0x0D, 0x05, 0x02, 0x07, 0xEE, 0x07, 0x01, 0x07, 0x08, 0x04, 0, 0, 0, 9,
        ])
        .unwrap();
        assert_eq!(p, HdlcParameters { max_info_tx: 0x07EE, max_info_rx: 128, window_tx: 7, window_rx: 7 });
        assert!(HdlcParameters::decode(&[0x81, 0x80]).is_err());
        assert!(HdlcParameters::decode(&[0x81, 0x81, 0x00]).is_err());
        assert!(HdlcParameters::decode(&[0x81, 0x80, 0x05, 0x05, 0x01]).is_err());
        assert!(HdlcParameters::decode(&[0x81, 0x80, 0x03, 0x05, 0x01, 0x00]).is_err());
        assert!(HdlcParameters::decode(&[0x81, 0x80, 0x04, 0x05, 0x05, 1, 2]).is_err());
        // Unknown parameter ids are skipped.
        assert_eq!(HdlcParameters::decode(&[0x81, 0x80, 0x03, 0x0A, 0x01, 0x00]), Ok(HdlcParameters::default()));
    }

    #[test]
    fn sequence_arithmetic_wraps_modulo_8() {
        assert_eq!(next(7), 0);
        assert_eq!(prev(0), 7);
    }
}

//! M-Bus master requests and the sans-IO read-out and secondary-search state machines.
//!
//! (Clause numbers as in EN 13757-2:2018 and EN 13757-3:2018; they shift slightly between editions, the
//! names given with them are the stable reference.)
//!
//! This module owns the master's side of the EN 13757-2 link procedures: which frame to send next, what
//! reply it expects, when to retry, and the frame count bit. The state machines never touch a transport
//! or a clock ([`read_out`] and [`search`] are the thin async drivers that pump them through the link
//! `Bus`): a driver writes what [`ReadOut::poll_transmit`] / [`SecondarySearch::poll_transmit`] hand out, feeds
//! received bytes to `handle_reply(now, bytes)`, calls `handle_timeout(now)` when `poll_timeout()` has
//! passed, and takes results from `poll_event()`. It does not decode records (that is [`super::app`]); it
//! only walks the record headers far enough to see DIF `1F` (more records follow).
//!
//! # Requests (EN 13757-2:2018, 5.5 "C field", EN 13757-3 for the selection)
//! - [`snd_nke`]: `10 40 A CS 16`, link reset; the slave answers `E5` and clears its FCB.
//! - [`req_ud2`]: `10 5B/7B A CS 16`, request class 2 data; the slave answers RSP_UD.
//! - [`select_secondary`]: SND_UD `68 0B 0B 68 53 FD 52 id(4, BCD LSB first) man(2) ver med CS 16` to
//!   address 253; a matching slave answers `E5` and is then addressed as 253, every other slave
//!   deselects itself. `F` nibbles of the id and `FF` bytes of the rest are wildcards.
//!
//! # The FCB rule (EN 13757-2, 5.5.2; IEC 60870-5-2)
//! REQ_UD2 carries FCV = 1 and a frame count bit. The master toggles the FCB for each *new* request after
//! a successful exchange and sends a *retry* (no reply, damaged reply) with the *same* FCB. A slave that
//! sees the FCB toggled sends its next telegram; a slave that sees it unchanged repeats the last one (with
//! fresh values). After SND_NKE the slave has cleared its FCB, so the first REQ_UD2 carries FCB = 1
//! (`7B`). Keeping the bit on a retry is what makes a lost reply harmless: the repeat is the same
//! telegram, not the next one, so no records are skipped or stored twice.
//!
//! # Multi-telegram read-out and the "more records follow" rule
//! A slave with more data than one telegram ends a telegram's variable data with the special DIF `1F`
//! (EN 13757-3, 6.3.2: "more records follow in the next telegram"), optionally followed by manufacturer
//! data. [`more_records_follow`] decides it from the user data: it walks the record headers (DIF, DIFEs,
//! VIF, VIFEs, plain-text VIF, the data length from the DIF, LVAR for variable length, `2F` fillers) after
//! the fixed header of CI `72`/`76` (12 bytes), `7A` (4 bytes) or `78` (none) and answers `true` iff it
//! meets DIF `1F` before the end; DIF `0F` (manufacturer data to the end) answers `false`. When the walk
//! fails (a record the walk does not understand or cut short) it falls back to "the user data ends with
//! `1F`". Other CIs (fixed data `73`, application errors `70`) never have more records.
//!
//! # The secondary search (EN 13757-3, annex on the secondary-address search; libmbus' tree walk)
//! [`SecondarySearch`] walks the 8-digit id as a 10-ary tree, most significant digit first. It probes the
//! all-wildcard mask `FFFFFFFF` first. For each probe:
//! - no reply ([`Probe::None`]): nobody under this prefix, go on with the next sibling;
//! - `E5` ([`Probe::One`]): exactly one slave matches; it is now selected, so a REQ_UD2 to 253 reads its
//!   full secondary address (id, manufacturer, version, medium) from the RSP_UD header → found;
//! - garbage ([`Probe::Collision`]): several slaves answered at once; fix the next wildcard digit to 0..9
//!   and probe the ten children, depth first.
//!
//! A "One" whose RSP_UD then arrives damaged is treated as a collision too (two `E5`s aligned to the bit
//! superpose into one clean `E5`; two RSP_UDs start at different latencies and arrive damaged). Two
//! replies that superpose into a *valid* frame cannot be seen by any master; the search then reports the
//! one id it read. A collision with all 8 digits fixed (two meters with the same id,
//! e.g. different manufacturers) is reported as [`SearchEvent::Unresolved`]. Ids containing hex digits
//! `A`–`E` are found when their prefix is unique; with [`SearchConfig::hex_digits`] the search also
//! probes `A`–`E` at each level.
//!
//! Panic contract: no reply bytes and no call order panic anything here.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use ami_link::mbus::{control, is_collision, AckMatcher, Address, Frame, RspUdMatcher, MAX_FRAME_LEN};
use ami_link::{BusHandle, Check, Exchange, LinkError, ReplyMatcher};

/// CI 0x52: selection of a slave by secondary address (EN 13757-3, table 2).
const CI_SELECTION: u8 = 0x52;

/// Encodes a frame whose size is fixed by construction (short frames, the 8-byte selection).
fn encoded(frame: &Frame) -> Vec<u8> {
    // invariant: only short frames and long frames with 8 data bytes reach here; `encode` fails only for
    // more than 252 data bytes.
    frame.encode().unwrap_or_default()
}

/// SND_NKE to `address`: `10 40 A CS 16` (link reset; expect `E5`).
#[must_use]
pub fn snd_nke(address: u8) -> Vec<u8> {
    encoded(&Frame::snd_nke(address))
}

/// REQ_UD2 to `address` with the frame count bit `fcb`: `10 5B/7B A CS 16` (expect RSP_UD).
#[must_use]
pub fn req_ud2(address: u8, fcb: bool) -> Vec<u8> {
    encoded(&Frame::req_ud2(address, fcb))
}

/// The selection SND_UD (CI `52`) to address 253 for `mask` (expect `E5` from exactly one slave).
#[must_use]
pub fn select_secondary(mask: &SecondaryMask) -> Vec<u8> {
    encoded(&mask.frame())
}

/// A secondary address as sent in a selection: id digits with `F` wildcards, and optional manufacturer,
/// version and medium (`None` = wildcard `FF`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecondaryMask {
    /// The 8 id digits in BCD, least significant byte first as on the wire (id 12345678 is
    /// `[0x78, 0x56, 0x34, 0x12]`); an `F` nibble matches any digit.
    pub id_bcd: [u8; 4],
    /// Manufacturer code (EN 13757-3 three-letter code packed into 15 bits); `None` matches any.
    pub manufacturer: Option<u16>,
    /// Version (generation); `None` matches any.
    pub version: Option<u8>,
    /// Medium (device type, e.g. 0x04 heat, 0x07 water); `None` matches any.
    pub medium: Option<u8>,
}

impl SecondaryMask {
    /// Number of id digits.
    pub const DIGITS: usize = 8;

    /// The all-wildcard mask `FFFFFFFF FFFF FF FF`: matches every slave.
    #[must_use]
    pub const fn wildcard() -> Self {
        Self { id_bcd: [0xFF; 4], manufacturer: None, version: None, medium: None }
    }

    /// The mask selecting exactly `id` (all four fields fixed).
    #[must_use]
    pub const fn exact(id: &SecondaryId) -> Self {
        Self {
            id_bcd: id.id_bcd,
            manufacturer: Some(id.manufacturer),
            version: Some(id.version),
            medium: Some(id.medium),
        }
    }

    /// The mask for an id written as 8 hex digits, most significant first, `F` for a wildcard
    /// (`"1234FFFF"`); `None` unless exactly 8 hex digits.
    #[must_use]
    pub fn from_digits(digits: &str) -> Option<Self> {
        let v = u32::from_str_radix(digits, 16).ok().filter(|_| digits.len() == Self::DIGITS)?;
        Some(Self { id_bcd: v.to_le_bytes(), ..Self::wildcard() })
    }

    /// Digit `pos` of the id, 0 being the most significant (`0xF` = wildcard).
    #[must_use]
    pub fn digit(&self, pos: usize) -> u8 {
        digit_of(&self.id_bcd, pos)
    }

    /// The same mask with digit `pos` (0 = most significant) set to `value` (low nibble).
    #[must_use]
    pub fn with_digit(mut self, pos: usize, value: u8) -> Self {
        if let Some(byte) = (Self::DIGITS - 1).checked_sub(pos).and_then(|p| self.id_bcd.get_mut(p / 2)) {
            // Digit `pos` from the left sits in byte (7 - pos) / 2 from the LSB end; odd positions from the
            // right are high nibbles.
            if (Self::DIGITS - 1 - pos) % 2 == 1 {
                *byte = (*byte & 0x0F) | (value << 4);
            } else {
                *byte = (*byte & 0xF0) | (value & 0x0F);
            }
        }
        self
    }

    /// How many leading id digits are fixed (not `F`), counting from the most significant.
    #[must_use]
    pub fn fixed_digits(&self) -> usize {
        (0..Self::DIGITS).take_while(|&p| self.digit(p) != 0xF).count()
    }

    /// Whether a slave with secondary address `id` answers this selection (every non-wildcard nibble and
    /// field equal). This is the slave's side of the selection, used by simulators and tests.
    #[must_use]
    pub fn matches(&self, id: &SecondaryId) -> bool {
        (0..Self::DIGITS).all(|p| {
            let want = self.digit(p);
            want == 0xF || want == digit_of(&id.id_bcd, p)
        }) && self.manufacturer.is_none_or(|m| m == id.manufacturer)
            && self.version.is_none_or(|v| v == id.version)
            && self.medium.is_none_or(|m| m == id.medium)
    }

    /// The selection frame: SND_UD (FCB 0) to 253, CI `52`, 8 data bytes.
    #[must_use]
    pub fn frame(&self) -> Frame {
        let mut data = self.id_bcd.to_vec();
        data.extend_from_slice(&self.manufacturer.unwrap_or(0xFFFF).to_le_bytes());
        data.push(self.version.unwrap_or(0xFF));
        data.push(self.medium.unwrap_or(0xFF));
        Frame::Long { c: control::SND_UD, a: Address::SELECTED, ci: CI_SELECTION, data }
    }

    /// The mask carried by a selection frame (SND_UD, CI `52`, at least 8 data bytes); `None` for any
    /// other frame. Slave side, for simulators.
    #[must_use]
    pub fn from_frame(frame: &Frame) -> Option<Self> {
        let Frame::Long { c, ci: CI_SELECTION, data, .. } = frame else {
            return None;
        };
        if *c & control::FUNCTION_MASK != control::SND_UD & control::FUNCTION_MASK {
            return None;
        }
        let id_bcd = [*data.first()?, *data.get(1)?, *data.get(2)?, *data.get(3)?];
        let manufacturer = u16::from_le_bytes([*data.get(4)?, *data.get(5)?]);
        let (version, medium) = (*data.get(6)?, *data.get(7)?);
        Some(Self {
            id_bcd,
            manufacturer: (manufacturer != 0xFFFF).then_some(manufacturer),
            version: (version != 0xFF).then_some(version),
            medium: (medium != 0xFF).then_some(medium),
        })
    }
}

impl std::fmt::Display for SecondaryMask {
    /// `1234FFFF` (id digits, most significant first).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:08X}", u32::from_le_bytes(self.id_bcd))
    }
}

/// Digit `pos` (0 = most significant) of a 4-byte LSB-first BCD id.
fn digit_of(id_bcd: &[u8; 4], pos: usize) -> u8 {
    let Some(from_right) = (SecondaryMask::DIGITS - 1).checked_sub(pos) else {
        return 0xF;
    };
    let byte = id_bcd.get(from_right / 2).copied().unwrap_or(0xFF);
    if from_right % 2 == 1 {
        byte >> 4
    } else {
        byte & 0x0F
    }
}

/// A slave's full secondary address, from the fixed header of its RSP_UD (EN 13757-3, 6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecondaryId {
    /// Identification number, BCD, least significant byte first (may hold non-decimal nibbles).
    pub id_bcd: [u8; 4],
    /// Manufacturer code (15-bit packed three letters).
    pub manufacturer: u16,
    /// Version (generation).
    pub version: u8,
    /// Medium (device type).
    pub medium: u8,
}

impl SecondaryId {
    /// The id from the user data of an RSP_UD with CI `72` (long header: id, manufacturer, version,
    /// medium, access number, status, signature); `None` for other CIs or a short header.
    #[must_use]
    pub fn from_rsp_ud(ci: u8, data: &[u8]) -> Option<Self> {
        if ci != 0x72 {
            return None;
        }
        Some(Self {
            id_bcd: [*data.first()?, *data.get(1)?, *data.get(2)?, *data.get(3)?],
            manufacturer: u16::from_le_bytes([*data.get(4)?, *data.get(5)?]),
            version: *data.get(6)?,
            medium: *data.get(7)?,
        })
    }

    /// The id as 8 hex digits, most significant first (`12345678`; libmbus prints the same).
    #[must_use]
    pub fn id_digits(&self) -> String {
        format!("{:08X}", u32::from_le_bytes(self.id_bcd))
    }

    /// The 8 header bytes as they appear on the wire (id, manufacturer, version, medium).
    #[must_use]
    pub fn to_bytes(&self) -> [u8; 8] {
        let [i0, i1, i2, i3] = self.id_bcd;
        let [m0, m1] = self.manufacturer.to_le_bytes();
        [i0, i1, i2, i3, m0, m1, self.version, self.medium]
    }
}

/// Whether the telegram with CI `ci` and user data `data` announces more records in a next telegram
/// (DIF `1F`). See the module doc for the rule.
#[must_use]
pub fn more_records_follow(ci: u8, data: &[u8]) -> bool {
    let header = match ci {
        0x72 | 0x76 => 12,
        0x7A => 4,
        0x78 => 0,
        _ => return false,
    };
    match walk_records(data.get(header..).unwrap_or_default()) {
        Some(more) => more,
        None => data.last() == Some(&0x1F),
    }
}

/// Walks the variable data records; `Some(true)` on DIF `1F`, `Some(false)` at the clean end or on DIF
/// `0F`, `None` when a record is cut short or not understood.
fn walk_records(records: &[u8]) -> Option<bool> {
    let mut at = 0usize;
    let byte = |at: usize| records.get(at).copied();
    while let Some(dif) = byte(at) {
        at += 1;
        match dif {
            // Idle filler.
            0x2F => continue,
            0x0F => return Some(false),
            0x1F => return Some(true),
            // Global readout request and reserved specials carry no data.
            d if d & 0x0F == 0x0F => continue,
            _ => {}
        }
        // DIFE chain (at most 10, EN 13757-3, 6.3.4).
        let mut ext = dif & 0x80 != 0;
        let mut difes = 0;
        while ext {
            ext = byte(at)? & 0x80 != 0;
            at += 1;
            difes += 1;
            if difes > 10 {
                return None;
            }
        }
        // VIF, then for a plain-text VIF (7C/FC) its length byte and text, then the VIFE chain (FD/FB
        // extension tables are VIFs with the extension bit set). The text comes right after the VIF, as
        // the meters of the libmbus corpus send it (`02 FC 03 'H' 'R' '%' 74 …`), like `app` decodes it.
        let vif = byte(at)?;
        at += 1;
        if vif & 0x7F == 0x7C {
            let n = usize::from(byte(at)?);
            at = at.checked_add(1 + n)?;
        }
        let mut ext = vif & 0x80 != 0;
        let mut vifes = 0;
        while ext {
            ext = byte(at)? & 0x80 != 0;
            at += 1;
            vifes += 1;
            if vifes > 10 {
                return None;
            }
        }
        let len = match dif & 0x0F {
            0x0 | 0x8 => 0,
            0x1 | 0x9 => 1,
            0x2 | 0xA => 2,
            0x3 | 0xB => 3,
            0x4 | 0x5 | 0xC => 4,
            0x6 | 0xE => 6,
            0x7 => 8,
            0xD => {
                let lvar = byte(at)?;
                at += 1;
                match lvar {
                    0x00..=0xBF => usize::from(lvar),
                    0xC0..=0xEF => usize::from(lvar & 0x0F),
                    _ => return None,
                }
            }
            _ => return None,
        };
        at = at.checked_add(len)?;
        if at > records.len() {
            return None;
        }
    }
    Some(false)
}

/// The reply a transmitted frame expects. Implements [`ReplyMatcher`], so a driver that goes through the
/// link `Bus` can hand it over as the matcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The single character `E5` ([`AckMatcher`]).
    Ack,
    /// An RSP_UD from `address` (`None`: any address, for requests to 253/254) ([`RspUdMatcher`]).
    RspUd {
        /// Address the reply must carry.
        address: Option<u8>,
    },
}

impl ReplyMatcher for Expect {
    fn check(&self, buf: &[u8]) -> Check {
        match self {
            Expect::Ack => AckMatcher.check(buf),
            Expect::RspUd { address } => RspUdMatcher { address: *address }.check(buf),
        }
    }
}

/// One frame for the driver to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The encoded frame.
    pub bytes: Vec<u8>,
    /// What reply it expects.
    pub expect: Expect,
    /// Which attempt this is: 0 for the first, 1.. for retries (the same bytes, the same FCB).
    pub attempt: u32,
}

/// How one exchange ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// The complete reply frame.
    Reply(Vec<u8>),
    /// No complete reply before the deadline.
    Timeout,
    /// A damaged reply (or garbage instead of `E5`: a collision).
    Corrupt(String),
}

/// The outstanding request of a state machine: its bytes, deadline and received bytes.
#[derive(Debug, Clone)]
struct Pending {
    bytes: Vec<u8>,
    expect: Expect,
    /// Attempts already made before the current one.
    attempt: u32,
    /// `Some` once handed to the driver.
    deadline: Option<Instant>,
    /// Bytes received for the current attempt.
    buf: Vec<u8>,
}

impl Pending {
    fn new(bytes: Vec<u8>, expect: Expect) -> Self {
        Self { bytes, expect, attempt: 0, deadline: None, buf: Vec::new() }
    }

    /// Hands the frame to the driver once per attempt.
    fn poll_transmit(&mut self, now: Instant, timeout: Duration) -> Option<Transmit> {
        if self.deadline.is_some() {
            return None;
        }
        self.deadline = Some(now.checked_add(timeout).unwrap_or(now));
        self.buf.clear();
        Some(Transmit { bytes: self.bytes.clone(), expect: self.expect, attempt: self.attempt })
    }

    /// Buffers `bytes` and asks the matcher; `None` while the reply is incomplete (or not sent yet).
    fn handle_reply(&mut self, bytes: &[u8]) -> Option<Outcome> {
        self.deadline?;
        self.buf.extend_from_slice(bytes);
        loop {
            match self.expect.check(&self.buf) {
                Check::Incomplete if self.buf.len() > 2 * MAX_FRAME_LEN => {
                    return Some(Outcome::Corrupt(format!("{} bytes without a complete reply", self.buf.len())));
                }
                Check::Incomplete => return None,
                Check::Complete { len } => {
                    let frame = self.buf.get(..len).unwrap_or_default().to_vec();
                    return Some(Outcome::Reply(frame));
                }
                Check::Foreign { skip, what } => {
                    tracing::debug!(%what, "M-Bus: skipped a foreign frame");
                    // A matcher skips at least one byte; guard against a zero skip looping forever.
                    let skip = skip.clamp(1, self.buf.len().max(1));
                    self.buf.drain(..skip.min(self.buf.len()));
                    if self.buf.is_empty() {
                        return None;
                    }
                }
                Check::Corrupt { reason } => return Some(Outcome::Corrupt(reason)),
            }
        }
    }

    /// `Some(Timeout)` when the attempt's deadline has passed.
    fn handle_timeout(&mut self, now: Instant) -> Option<Outcome> {
        let deadline = self.deadline?;
        (now >= deadline).then_some(Outcome::Timeout)
    }

    /// Arms a retry of the same bytes if `retries` allow it; `false` when exhausted.
    fn retry(&mut self, retries: u32) -> bool {
        if self.attempt >= retries {
            return false;
        }
        self.attempt += 1;
        self.deadline = None;
        self.buf.clear();
        true
    }
}

/// Which slave a [`ReadOut`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A primary address (0..=250; 254 point-to-point).
    Primary(u8),
    /// A secondary address: select it, then read via address 253.
    Secondary(SecondaryMask),
}

/// Settings of a [`ReadOut`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOutConfig {
    /// Reply timeout per attempt. Default 1 s: EN 13757-2 allows 330 bit times + 50 ms (0.19 s at 2400
    /// baud, 1.15 s at 300), and some meters answer after more than a second, so set it per meter.
    pub timeout: Duration,
    /// Retries after the first attempt of each request (same bytes, same FCB). Default 2.
    pub retries: u32,
    /// Most telegrams of one multi-telegram read-out before giving up. Default 32.
    pub max_telegrams: usize,
    /// Send SND_NKE before the first REQ_UD2 (primary addressing only: SND_NKE to 253 would deselect the
    /// slave). Default `true`.
    pub reset: bool,
    /// FCB of the first REQ_UD2. Default `true`: after SND_NKE the slave expects FCB = 1. Without a reset,
    /// pass the [`ReadOut::next_fcb`] of the previous read-out of the same meter.
    pub first_fcb: bool,
}

impl Default for ReadOutConfig {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(1), retries: 2, max_telegrams: 32, reset: true, first_fcb: true }
    }
}

/// Why a [`ReadOut`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadOutError {
    /// No reply to a request on any attempt.
    #[error("no reply to {request} after {attempts} attempt(s)")]
    Timeout {
        /// Which request (`SND_NKE`, `selection`, `REQ_UD2`).
        request: &'static str,
        /// Attempts made.
        attempts: u32,
    },
    /// Only damaged replies to a request.
    #[error("corrupt reply to {request} after {attempts} attempt(s): {reason}")]
    Corrupt {
        /// Which request.
        request: &'static str,
        /// Attempts made.
        attempts: u32,
        /// The last damage seen.
        reason: String,
    },
    /// The slave kept announcing more records beyond [`ReadOutConfig::max_telegrams`].
    #[error("more than {0} telegrams")]
    TooManyTelegrams(usize),
    /// The bus could not carry the exchange (transport down, bus closed); only from [`read_out`].
    #[error(transparent)]
    Link(#[from] LinkError),
}

/// What a [`ReadOut`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOutEvent {
    /// One RSP_UD telegram, in order. `more`: it announced more records (DIF `1F`).
    Telegram {
        /// The RSP_UD frame (control or long).
        frame: Frame,
        /// Whether a next telegram follows.
        more: bool,
    },
    /// The read-out completed after this many telegrams.
    Finished {
        /// Telegrams received.
        telegrams: usize,
    },
    /// The read-out stopped.
    Failed(ReadOutError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadStep {
    Reset,
    Select,
    Request,
    Done,
}

/// Reads one slave completely: [SND_NKE or selection], then REQ_UD2 until the last telegram.
///
/// Sans-IO contract (house style rule 1): after creating it and after every `handle_*` call, the driver
/// calls [`poll_transmit`](Self::poll_transmit) (write what it returns, after discarding stale input),
/// [`poll_event`](Self::poll_event) (until `None`) and [`poll_timeout`](Self::poll_timeout) (call
/// [`handle_timeout`](Self::handle_timeout) once that instant has passed). Received bytes go to
/// [`handle_reply`](Self::handle_reply) in any split. A spurious `handle_timeout` or bytes while nothing is
/// outstanding are ignored. The read-out ends with exactly one `Finished` or `Failed` event.
#[derive(Debug, Clone)]
pub struct ReadOut {
    target: Target,
    config: ReadOutConfig,
    step: ReadStep,
    fcb: bool,
    pending: Option<Pending>,
    telegrams: usize,
    events: VecDeque<ReadOutEvent>,
}

impl ReadOut {
    /// A read-out of `target`; nothing is sent before the first [`poll_transmit`](Self::poll_transmit).
    #[must_use]
    pub fn new(target: Target, config: ReadOutConfig) -> Self {
        let mut this = Self {
            target,
            config,
            step: ReadStep::Done,
            fcb: config.first_fcb,
            pending: None,
            telegrams: 0,
            events: VecDeque::new(),
        };
        match target {
            Target::Primary(a) if config.reset => this.start(ReadStep::Reset, snd_nke(a), Expect::Ack),
            Target::Primary(_) => this.request(),
            Target::Secondary(mask) => this.start(ReadStep::Select, select_secondary(&mask), Expect::Ack),
        }
        this
    }

    /// The target slave.
    #[must_use]
    pub fn target(&self) -> Target {
        self.target
    }

    /// The FCB the next new REQ_UD2 to this slave carries (keep it for a later read-out without reset).
    #[must_use]
    pub fn next_fcb(&self) -> bool {
        self.fcb
    }

    /// Telegrams received so far.
    #[must_use]
    pub fn telegrams(&self) -> usize {
        self.telegrams
    }

    /// Whether the read-out has ended (its last event may still be queued).
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.step == ReadStep::Done
    }

    fn start(&mut self, step: ReadStep, bytes: Vec<u8>, expect: Expect) {
        self.step = step;
        self.pending = Some(Pending::new(bytes, expect));
    }

    /// A new REQ_UD2 with the current FCB.
    fn request(&mut self) {
        let (address, expect) = match self.target {
            Target::Primary(a) => (a, Some(a).filter(|a| Address::is_primary(*a))),
            Target::Secondary(_) => (Address::SELECTED, None),
        };
        self.start(ReadStep::Request, req_ud2(address, self.fcb), Expect::RspUd { address: expect });
    }

    fn request_name(&self) -> &'static str {
        match self.step {
            ReadStep::Reset => "SND_NKE",
            ReadStep::Select => "selection",
            ReadStep::Request | ReadStep::Done => "REQ_UD2",
        }
    }

    /// The next frame to write, if any (once per attempt).
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        let timeout = self.config.timeout;
        self.pending.as_mut()?.poll_transmit(now, timeout)
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.as_ref()?.deadline
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ReadOutEvent> {
        self.events.pop_front()
    }

    /// Bytes received from the line (any split).
    pub fn handle_reply(&mut self, _now: Instant, bytes: &[u8]) {
        if let Some(outcome) = self.pending.as_mut().and_then(|p| p.handle_reply(bytes)) {
            self.finish_exchange(outcome);
        }
    }

    /// The clock passed [`poll_timeout`](Self::poll_timeout) (a call before that is a no-op).
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(outcome) = self.pending.as_mut().and_then(|p| p.handle_timeout(now)) {
            self.finish_exchange(outcome);
        }
    }

    /// The driver's own matcher found the reply damaged (for drivers that match replies themselves, like
    /// the link `Bus`): the attempt failed and is retried with the same FCB. Ignored when nothing is
    /// outstanding.
    pub fn handle_corrupt(&mut self, _now: Instant, reason: &str) {
        if self.pending.as_ref().is_some_and(|p| p.deadline.is_some()) {
            self.finish_exchange(Outcome::Corrupt(reason.to_owned()));
        }
    }

    fn finish_exchange(&mut self, outcome: Outcome) {
        let reply = match outcome {
            Outcome::Reply(reply) => reply,
            failure => {
                let retries = self.config.retries;
                let Some(pending) = self.pending.as_mut() else { return };
                // A retry resends the same bytes: the FCB stays as it was (EN 13757-2, 5.5.2).
                if pending.retry(retries) {
                    return;
                }
                let attempts = pending.attempt + 1;
                let request = self.request_name();
                self.fail(match failure {
                    Outcome::Corrupt(reason) => ReadOutError::Corrupt { request, attempts, reason },
                    _ => ReadOutError::Timeout { request, attempts },
                });
                return;
            }
        };
        self.pending = None;
        match self.step {
            ReadStep::Reset | ReadStep::Select => self.request(),
            ReadStep::Request => {
                // A successful exchange: the next new request toggles the FCB.
                self.fcb = !self.fcb;
                let frame = match Frame::parse(&reply) {
                    Ok(frame) => frame,
                    Err(e) => {
                        // The matcher accepted it, so this cannot happen; treat it as damage all the same.
                        let attempts = 1;
                        self.fail(ReadOutError::Corrupt { request: "REQ_UD2", attempts, reason: e.to_string() });
                        return;
                    }
                };
                let more = frame.ci().is_some_and(|ci| more_records_follow(ci, frame.data()));
                self.telegrams += 1;
                self.events.push_back(ReadOutEvent::Telegram { frame, more });
                if !more {
                    self.step = ReadStep::Done;
                    self.events.push_back(ReadOutEvent::Finished { telegrams: self.telegrams });
                } else if self.telegrams >= self.config.max_telegrams {
                    self.fail(ReadOutError::TooManyTelegrams(self.config.max_telegrams));
                } else {
                    self.request();
                }
            }
            ReadStep::Done => {}
        }
    }

    fn fail(&mut self, error: ReadOutError) {
        self.pending = None;
        self.step = ReadStep::Done;
        self.events.push_back(ReadOutEvent::Failed(error));
    }
}

/// The outcome of one selection probe, as the caller saw it on the line (for drivers that do their own
/// matching and report through [`SecondarySearch::handle_probe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// No reply within the timeout: no slave matches.
    None,
    /// A clean `E5`: exactly one slave matches (and is now selected).
    One,
    /// Garbage or a damaged frame: several slaves answered.
    Collision,
}

/// Settings of a [`SecondarySearch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchConfig {
    /// Reply timeout per probe and per read. Default 500 ms (an `E5` takes 4.6 ms at 2400 baud; a probe
    /// without reply costs the whole timeout, so keep it short on a fast line).
    pub timeout: Duration,
    /// Retries of a probe without reply. Default 0: most probes of a search have no reply by design.
    pub probe_retries: u32,
    /// Retries of the REQ_UD2 that reads a found slave's id. Default 2.
    pub read_retries: u32,
    /// Manufacturer, version and medium to restrict the search to (the id part is ignored). Default: all
    /// wildcards.
    pub filter: SecondaryMask,
    /// Also probe the digits `A`–`E` at each level (finds ids with hex digits that share a prefix).
    /// Default `false`: EN 13757-3 ids are BCD.
    pub hex_digits: bool,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(500),
            probe_retries: 0,
            read_retries: 2,
            filter: SecondaryMask::wildcard(),
            hex_digits: false,
        }
    }
}

/// What a [`SecondarySearch`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchEvent {
    /// A slave, reported once: its secondary address from the RSP_UD header and the telegram's A field
    /// (its primary address).
    Found {
        /// The full secondary address.
        id: SecondaryId,
        /// The A field of its RSP_UD (its primary address, often 0).
        primary: u8,
    },
    /// A mask the search could not resolve: a collision with all 8 digits fixed, or a single slave whose
    /// id could not be read.
    Unresolved {
        /// The mask probed.
        mask: SecondaryMask,
        /// Why.
        reason: String,
    },
    /// The search is over.
    Finished {
        /// Slaves found.
        found: usize,
        /// Selection probes sent (retries included).
        probes: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SearchStep {
    /// Waiting for the reply to a selection of this mask.
    Probe(SecondaryMask),
    /// The mask selected one slave; reading its id with REQ_UD2 to 253.
    Read(SecondaryMask),
}

/// The secondary-address search over a whole line (the wildcard tree walk of the module doc).
///
/// Same sans-IO contract as [`ReadOut`]: `poll_transmit(now)`, `handle_reply(now, bytes)`,
/// `handle_timeout(now)`, `poll_timeout()`, `poll_event()`. A driver that classifies probe replies itself
/// (for example with the link `Bus` and [`AckMatcher`]) reports them with
/// [`handle_probe`](Self::handle_probe) instead.
#[derive(Debug, Clone)]
pub struct SecondarySearch {
    config: SearchConfig,
    /// Masks still to probe, depth first (last = next).
    stack: Vec<SecondaryMask>,
    step: Option<SearchStep>,
    pending: Option<Pending>,
    found: HashSet<SecondaryId>,
    probes: usize,
    finished: bool,
    events: VecDeque<SearchEvent>,
}

impl SecondarySearch {
    /// A search starting from the all-wildcard id (with the manufacturer/version/medium of
    /// [`SearchConfig::filter`]).
    #[must_use]
    pub fn new(config: SearchConfig) -> Self {
        let root = SecondaryMask { id_bcd: [0xFF; 4], ..config.filter };
        let mut this = Self {
            config,
            stack: vec![root],
            step: None,
            pending: None,
            found: HashSet::new(),
            probes: 0,
            finished: false,
            events: VecDeque::new(),
        };
        this.next_probe();
        this
    }

    /// Selection probes sent so far (retries included).
    #[must_use]
    pub fn probes(&self) -> usize {
        self.probes
    }

    /// Slaves found so far.
    #[must_use]
    pub fn found(&self) -> usize {
        self.found.len()
    }

    /// Whether the search has ended (its last event may still be queued).
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.finished
    }

    /// The next frame to write: the next probe, a retry, or the REQ_UD2 reading a found slave.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        let timeout = self.config.timeout;
        let transmit = self.pending.as_mut()?.poll_transmit(now, timeout)?;
        if matches!(self.step, Some(SearchStep::Probe(_))) {
            self.probes += 1;
        }
        Some(transmit)
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.as_ref()?.deadline
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<SearchEvent> {
        self.events.pop_front()
    }

    /// Bytes received from the line (any split).
    pub fn handle_reply(&mut self, _now: Instant, bytes: &[u8]) {
        if let Some(outcome) = self.pending.as_mut().and_then(|p| p.handle_reply(bytes)) {
            self.finish_exchange(outcome);
        }
    }

    /// The clock passed [`poll_timeout`](Self::poll_timeout) (a call before that is a no-op).
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(outcome) = self.pending.as_mut().and_then(|p| p.handle_timeout(now)) {
            self.finish_exchange(outcome);
        }
    }

    /// The driver's own matcher found the reply damaged (for drivers that match replies themselves, like
    /// the link `Bus`): a collision for a probe, a retry or a split for the read. Ignored when nothing is
    /// outstanding.
    pub fn handle_corrupt(&mut self, _now: Instant, reason: &str) {
        if self.pending.as_ref().is_some_and(|p| p.deadline.is_some()) {
            self.finish_exchange(Outcome::Corrupt(reason.to_owned()));
        }
    }

    /// Reports the outcome of the outstanding probe directly (instead of bytes and timeouts). Ignored
    /// unless a probe has been transmitted and is waiting.
    pub fn handle_probe(&mut self, _now: Instant, probe: Probe) {
        let sent = self.pending.as_ref().is_some_and(|p| p.deadline.is_some());
        if let (Some(SearchStep::Probe(mask)), true) = (self.step, sent) {
            self.pending = None;
            self.probed(mask, probe);
            self.advance();
        }
    }

    /// After an exchange ended without arming another request: go on with the next probe.
    fn advance(&mut self) {
        if self.pending.is_none() {
            self.step = None;
            self.next_probe();
        }
    }

    /// Starts the next probe from the stack, or finishes.
    fn next_probe(&mut self) {
        if self.finished || self.step.is_some() {
            return;
        }
        match self.stack.pop() {
            Some(mask) => {
                self.step = Some(SearchStep::Probe(mask));
                self.pending = Some(Pending::new(select_secondary(&mask), Expect::Ack));
            }
            None => {
                self.finished = true;
                self.events.push_back(SearchEvent::Finished { found: self.found.len(), probes: self.probes });
            }
        }
    }

    fn finish_exchange(&mut self, outcome: Outcome) {
        match self.step {
            Some(SearchStep::Probe(mask)) => {
                let probe = match outcome {
                    Outcome::Reply(_) => Probe::One,
                    Outcome::Corrupt(reason) => {
                        if !is_collision(&reason) {
                            tracing::debug!(%mask, %reason, "M-Bus search: damaged reply taken as a collision");
                        }
                        Probe::Collision
                    }
                    Outcome::Timeout => {
                        let retries = self.config.probe_retries;
                        if self.pending.as_mut().is_some_and(|p| p.retry(retries)) {
                            return;
                        }
                        Probe::None
                    }
                };
                self.pending = None;
                self.probed(mask, probe);
            }
            Some(SearchStep::Read(mask)) => match outcome {
                Outcome::Reply(reply) => {
                    self.pending = None;
                    self.step = None;
                    self.read(mask, &reply);
                }
                // Two slaves took the selection and both answer the REQ_UD2: split the mask.
                Outcome::Corrupt(_) => {
                    self.pending = None;
                    self.probed(mask, Probe::Collision);
                }
                Outcome::Timeout => {
                    let retries = self.config.read_retries;
                    if self.pending.as_mut().is_some_and(|p| p.retry(retries)) {
                        return;
                    }
                    self.pending = None;
                    self.step = None;
                    let reason = "selected slave did not answer REQ_UD2".to_owned();
                    self.events.push_back(SearchEvent::Unresolved { mask, reason });
                }
            },
            None => self.pending = None,
        }
        self.advance();
    }

    /// Acts on one probe outcome for `mask`.
    fn probed(&mut self, mask: SecondaryMask, probe: Probe) {
        self.step = None;
        match probe {
            Probe::None => {}
            Probe::One => {
                self.step = Some(SearchStep::Read(mask));
                let expect = Expect::RspUd { address: None };
                self.pending = Some(Pending::new(req_ud2(Address::SELECTED, true), expect));
            }
            Probe::Collision => {
                let depth = mask.fixed_digits();
                if depth >= SecondaryMask::DIGITS {
                    let reason = "several slaves answer the same secondary address".to_owned();
                    self.events.push_back(SearchEvent::Unresolved { mask, reason });
                    return;
                }
                let last = if self.config.hex_digits { 0xE } else { 0x9 };
                // Pushed in reverse so that digit 0 is probed first.
                for d in (0..=last).rev() {
                    self.stack.push(mask.with_digit(depth, d));
                }
            }
        }
    }

    /// The RSP_UD read after a single `E5`.
    fn read(&mut self, mask: SecondaryMask, reply: &[u8]) {
        let parsed = Frame::parse(reply).ok().and_then(|f| {
            let id = SecondaryId::from_rsp_ud(f.ci()?, f.data())?;
            Some((id, f.a().unwrap_or_default()))
        });
        match parsed {
            Some((id, primary)) => {
                if self.found.insert(id) {
                    self.events.push_back(SearchEvent::Found { id, primary });
                }
            }
            None => {
                let reason = "the selected slave's RSP_UD has no long header (CI 72)".to_owned();
                self.events.push_back(SearchEvent::Unresolved { mask, reason });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_the_standard_frames() {
        assert_eq!(snd_nke(1), [0x10, 0x40, 0x01, 0x41, 0x16]);
        assert_eq!(req_ud2(1, true), [0x10, 0x7B, 0x01, 0x7C, 0x16]);
        assert_eq!(req_ud2(1, false), [0x10, 0x5B, 0x01, 0x5C, 0x16]);
        let mask = SecondaryMask::from_digits("12345678").unwrap();
        assert_eq!(
            select_secondary(&mask),
            [
                0x68, 0x0B, 0x0B, 0x68, // start, L = 11, L, start
                0x53, 0xFD, 0x52, // SND_UD, address 253, CI selection
                0x78, 0x56, 0x34, 0x12, // id 12345678 BCD, LSB first
                0xFF, 0xFF, 0xFF, 0xFF, // manufacturer, version, medium: wildcards
                0xB2, 0x16 // checksum, stop
            ]
        );
        assert_eq!(SecondaryMask::from_frame(&mask.frame()), Some(mask));
    }

    #[test]
    fn mask_digits_and_matching() {
        let m = SecondaryMask::wildcard().with_digit(0, 1).with_digit(1, 2);
        assert_eq!(m.to_string(), "12FFFFFF");
        assert_eq!(m.fixed_digits(), 2);
        assert_eq!(m.digit(0), 1);
        assert_eq!(m.digit(7), 0xF);
        let id = SecondaryId { id_bcd: [0x78, 0x56, 0x34, 0x12], manufacturer: 0x2C2D, version: 8, medium: 4 };
        assert_eq!(id.id_digits(), "12345678");
        assert!(m.matches(&id));
        assert!(!m.with_digit(2, 4).matches(&id));
        assert!(SecondaryMask::exact(&id).matches(&id));
        assert!(!SecondaryMask { medium: Some(7), ..m }.matches(&id));
        assert_eq!(SecondaryMask::from_digits("1234"), None);
        assert_eq!(SecondaryMask::from_digits("1234567G"), None);
    }

    #[test]
    fn more_records_rule_walks_the_record_headers() {
        let header = [0x78, 0x56, 0x34, 0x12, 0x2D, 0x2C, 8, 4, 1, 0, 0, 0];
        let tele = |records: &[u8]| [&header[..], records].concat();
        // 04 13 <4 bytes volume> then 1F: more.
        assert!(more_records_follow(0x72, &tele(&[0x04, 0x13, 1, 2, 3, 4, 0x1F])));
        // 1F followed by manufacturer data: still more (the naive "ends with 1F" rule misses it).
        assert!(more_records_follow(0x72, &tele(&[0x04, 0x13, 1, 2, 3, 4, 0x1F, 0xAA, 0xBB])));
        // A one-byte value 0x1F at the end is data, not a DIF (the naive rule gets it wrong).
        assert!(!more_records_follow(0x72, &tele(&[0x01, 0xFD, 0x17, 0x1F])));
        // 0F: manufacturer data to the end, no more telegrams, even when that data ends with 1F.
        assert!(!more_records_follow(0x72, &tele(&[0x0F, 0x01, 0x1F])));
        // Plain-text VIF with its length, variable length data, filler.
        assert!(more_records_follow(0x72, &tele(&[0x2F, 0x0D, 0x7C, 0x02, b'a', b'b', 0x02, b'x', b'y', 0x1F])));
        // Plain-text VIF with a VIFE after the text (libmbus corpus, too_long_var_vif): 2-byte value D4 11.
        assert!(more_records_follow(0x72, &tele(&[0x02, 0xFC, 0x03, b'H', b'R', b'%', 0x74, 0xD4, 0x11, 0x1F])));
        assert!(!more_records_follow(0x72, &tele(&[0x02, 0xFC, 0x03, b'H', b'R', b'%', 0x74, 0x1F, 0x11])));
        // Short header (CI 7A) and no header (CI 78).
        assert!(more_records_follow(0x7A, &[1, 0, 0, 0, 0x1F]));
        assert!(more_records_follow(0x78, &[0x1F]));
        assert!(!more_records_follow(0x78, &[]));
        // Cut short: falls back to the last byte.
        assert!(!more_records_follow(0x72, &tele(&[0x04, 0x13, 1])));
        // Fixed data and application errors never continue.
        assert!(!more_records_follow(0x73, &[0x1F]));
        assert!(!more_records_follow(0x70, &[0x1F]));
    }
}

/// What [`read_out`] returns: the telegrams in order and the FCB to start the next read-out without reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOutReport {
    /// Every RSP_UD of the read-out, in order.
    pub telegrams: Vec<Frame>,
    /// [`ReadOut::next_fcb`] at the end.
    pub next_fcb: bool,
}

/// Reads `target` completely through the link `Bus`: a driver that only pumps a [`ReadOut`] (house style
/// rule 11). Each frame goes out as one [`Exchange`] with [`Transmit::expect`] as the matcher, the
/// read-out's timeout and no bus retries: the state machine retries itself, so the FCB rule holds, and the
/// bus still keeps the guard time, discards stale input and drains the line after every failed attempt.
/// `meter` labels the bus counters and logs.
pub async fn read_out(
    bus: &BusHandle,
    meter: &str,
    target: Target,
    config: ReadOutConfig,
) -> Result<ReadOutReport, ReadOutError> {
    let mut r = ReadOut::new(target, config);
    let mut telegrams = Vec::new();
    loop {
        while let Some(event) = r.poll_event() {
            match event {
                ReadOutEvent::Telegram { frame, .. } => telegrams.push(frame),
                ReadOutEvent::Finished { .. } => return Ok(ReadOutReport { telegrams, next_fcb: r.next_fcb() }),
                ReadOutEvent::Failed(e) => return Err(e),
            }
        }
        let now = Instant::now();
        let Some(tx) = r.poll_transmit(now) else {
            // invariant: a read-out that has not ended always has a request to send; end it cleanly anyway.
            return Err(ReadOutError::Timeout { request: "REQ_UD2", attempts: 0 });
        };
        let exchange =
            Exchange::new(meter, tx.bytes, Some(Box::new(tx.expect))).with_timeout(config.timeout).with_retries(0);
        match bus.transact(exchange).await {
            Ok(reply) => r.handle_reply(now, &reply.frame),
            Err(LinkError::Timeout { .. }) => r.handle_timeout(r.poll_timeout().unwrap_or(now)),
            Err(LinkError::Corrupt { reason, .. }) => r.handle_corrupt(now, &reason),
            Err(e) => return Err(ReadOutError::Link(e)),
        }
    }
}

/// What [`search`] returns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SearchReport {
    /// Slaves found, in search order: secondary address and the A field of their RSP_UD.
    pub found: Vec<(SecondaryId, u8)>,
    /// Masks that could not be resolved, with the reason.
    pub unresolved: Vec<(SecondaryMask, String)>,
    /// Selection probes sent.
    pub probes: usize,
}

/// Runs a [`SecondarySearch`] over a whole line through the link `Bus` (same pumping as [`read_out`]; a
/// probe without reply costs [`SearchConfig::timeout`] plus the bus's drain). `meter` labels the bus
/// counters. Fails only when the bus cannot carry exchanges at all.
pub async fn search(bus: &BusHandle, meter: &str, config: SearchConfig) -> Result<SearchReport, LinkError> {
    let mut s = SecondarySearch::new(config);
    let mut report = SearchReport::default();
    loop {
        while let Some(event) = s.poll_event() {
            match event {
                SearchEvent::Found { id, primary } => report.found.push((id, primary)),
                SearchEvent::Unresolved { mask, reason } => report.unresolved.push((mask, reason)),
                SearchEvent::Finished { probes, .. } => {
                    report.probes = probes;
                    return Ok(report);
                }
            }
        }
        let now = Instant::now();
        let Some(tx) = s.poll_transmit(now) else {
            // invariant: a search that has not finished always has a frame to send.
            report.probes = s.probes();
            return Ok(report);
        };
        let exchange =
            Exchange::new(meter, tx.bytes, Some(Box::new(tx.expect))).with_timeout(config.timeout).with_retries(0);
        match bus.transact(exchange).await {
            Ok(reply) => s.handle_reply(now, &reply.frame),
            Err(LinkError::Timeout { .. }) => s.handle_timeout(s.poll_timeout().unwrap_or(now)),
            Err(LinkError::Corrupt { reason, .. }) => s.handle_corrupt(now, &reason),
            Err(e) => return Err(e),
        }
    }
}

/// Decoder harness shared by the cargo-fuzz target `mbus_link` (`fuzz/`) and a seeded noise test, so CI
/// runs the same code without cargo-fuzz. Built for tests and with the `fuzzing` feature only.
///
/// [`mbus_link`](harness::mbus_link) feeds one byte string to the EN 13757-2 deframer (as one buffer and
/// as a stream with resynchronisation), to both reply matchers, to the record walk behind
/// [`more_records_follow`], to the selection and header parsers, and as line input to a [`ReadOut`] and a
/// [`SecondarySearch`]. The bytes are also wrapped in a valid long frame so that mutations reach the
/// paths behind the checksum. It panics (on purpose: that is what a fuzzer reports) when a decoder panics
/// or breaks an invariant the bus and the state machines rely on.
#[cfg(any(test, feature = "fuzzing"))]
pub mod harness {
    use std::time::{Duration, Instant};

    use ami_link::mbus::{control, AckMatcher, Frame, RspUdMatcher, ACK, MAX_DATA_LEN};
    use ami_link::{Check, ReplyMatcher};

    use super::{
        more_records_follow, Probe, ReadOut, ReadOutConfig, ReadOutEvent, SearchConfig, SearchEvent, SecondaryId,
        SecondaryMask, SecondarySearch, Target,
    };

    /// Feeds `data` to every M-Bus link decoder and the master state machines. Panics only on a bug.
    pub fn mbus_link(data: &[u8]) {
        frames(data);
        // The bytes as the user data of a valid RSP_UD, so the checksum gate lets them through.
        let body = data.get(..data.len().min(MAX_DATA_LEN)).unwrap_or_default();
        let a = data.first().copied().unwrap_or(1);
        let ci = data.get(1).copied().unwrap_or(0x72);
        for ci in [ci, 0x72, 0x7A, 0x78] {
            let wrapped = Frame::Long { c: control::RSP_UD, a, ci, data: body.to_vec() };
            let bytes = wrapped.encode().expect("at most 252 data bytes encode");
            match Frame::parse(&bytes) {
                Ok(back) if body.is_empty() => assert_eq!(back, Frame::Control { c: control::RSP_UD, a, ci }),
                Ok(back) => assert_eq!(back, wrapped),
                Err(e) => panic!("own frame refused: {e}"),
            }
            frames(&bytes);
            let _ = more_records_follow(ci, body);
            if let Some(id) = SecondaryId::from_rsp_ud(ci, body) {
                assert_eq!(id.to_bytes().as_slice(), body.get(..8).unwrap_or_default());
                assert!(SecondaryMask::exact(&id).matches(&id));
            }
        }
        selection(data);
        read_out(data);
        search(data);
    }

    /// Deframing and reply matching of one buffer.
    fn frames(buf: &[u8]) {
        if let Ok(Some((frame, len))) = Frame::decode(buf) {
            assert!(len > 0 && len <= buf.len(), "frame of {len} in {} bytes", buf.len());
            let wire = buf.get(..len).unwrap_or_default();
            assert_eq!(frame.encode().ok().as_deref(), Some(wire), "decoded {frame:?} re-encodes");
            assert_eq!(frame.buffer_len(), len);
            assert_eq!(Frame::parse(wire).as_ref(), Ok(&frame));
        }
        // As a stream: decode, drop a byte on error (resynchronise), stop when more bytes are needed.
        let mut rest = buf;
        let mut frames = 0usize;
        while !rest.is_empty() {
            match Frame::decode(rest) {
                Ok(Some((_, len))) => {
                    frames += 1;
                    rest = rest.get(len..).unwrap_or_default();
                }
                Ok(None) => break,
                Err(_) => rest = rest.get(1..).unwrap_or_default(),
            }
        }
        assert!(frames <= buf.len());
        if let Some(len) = matched(&AckMatcher, buf) {
            assert_eq!((len, buf.first()), (1, Some(&ACK)), "AckMatcher accepted something else than E5");
        }
        for address in [None, buf.get(5).copied(), Some(1), Some(0xFD)] {
            let m = RspUdMatcher { address };
            if let Some(len) = matched(&m, buf) {
                let frame = Frame::parse(buf.get(..len).unwrap_or_default())
                    .unwrap_or_else(|e| panic!("RspUdMatcher accepted a bad frame: {e}"));
                assert!(frame.c().is_some_and(control::is_rsp_ud), "not RSP_UD: {frame:?}");
                assert!(matches!(frame, Frame::Control { .. } | Frame::Long { .. }));
                if let Some(want) = address {
                    assert_eq!(frame.a(), Some(want), "RspUdMatcher accepted another address");
                }
            }
        }
    }

    /// Runs a matcher and checks that its verdict is usable by the bus; the length of a complete reply.
    fn matched(matcher: &dyn ReplyMatcher, buf: &[u8]) -> Option<usize> {
        match matcher.check(buf) {
            Check::Complete { len } => {
                assert!(len > 0 && len <= buf.len(), "Complete {{ len: {len} }} for {} bytes", buf.len());
                Some(len)
            }
            Check::Foreign { skip, .. } => {
                assert!(skip > 0 && skip <= buf.len(), "Foreign {{ skip: {skip} }} for {} bytes", buf.len());
                None
            }
            Check::Incomplete | Check::Corrupt { .. } => None,
        }
    }

    /// The first 8 bytes as a selection: the mask survives frame → bytes → frame.
    fn selection(data: &[u8]) {
        let body: Vec<u8> = data.iter().copied().chain(std::iter::repeat(0xFF)).take(8).collect();
        let frame = Frame::Long { c: control::SND_UD, a: 0xFD, ci: 0x52, data: body.clone() };
        let mask = SecondaryMask::from_frame(&frame).expect("an 8-byte selection parses");
        assert_eq!(mask.frame(), frame, "selection mask round trip");
        let _ = mask.to_string();
        let _ = mask.fixed_digits();
        for pos in 0..SecondaryMask::DIGITS {
            let d = data.get(pos).copied().unwrap_or(0) & 0x0F;
            assert_eq!(mask.with_digit(pos, d).digit(pos), d);
        }
    }

    /// Splits `data` into reads: each chunk's first byte gives the next chunk's length.
    fn chunks(data: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut rest = data;
        while let Some(&n) = rest.first() {
            let n = usize::from(n % 64).max(1).min(rest.len());
            let (chunk, tail) = rest.split_at(n);
            out.push(chunk);
            rest = tail;
        }
        out
    }

    /// `data` as everything a meter sends during a read-out; timeouts in between.
    fn read_out(data: &[u8]) {
        let target = match data.first() {
            Some(b) if b & 1 == 1 => Target::Secondary(SecondaryMask::wildcard()),
            Some(b) => Target::Primary(b >> 1),
            None => Target::Primary(1),
        };
        let config = ReadOutConfig { max_telegrams: 4, ..ReadOutConfig::default() };
        let mut r = ReadOut::new(target, config);
        let mut now = Instant::now();
        let (mut telegrams, mut ends) = (0usize, 0usize);
        for (k, chunk) in chunks(data).into_iter().enumerate() {
            let _ = r.poll_transmit(now);
            r.handle_reply(now, chunk);
            if k % 7 == 6 {
                r.handle_corrupt(now, "harness");
            }
            if k % 3 == 2 {
                now += Duration::from_secs(2);
                r.handle_timeout(now);
            }
            while let Some(e) = r.poll_event() {
                assert_eq!(ends, 0, "event after the end: {e:?}");
                match e {
                    ReadOutEvent::Telegram { frame, .. } => {
                        telegrams += 1;
                        assert!(frame.c().is_some_and(control::is_rsp_ud));
                    }
                    ReadOutEvent::Finished { telegrams: n } => {
                        assert_eq!(n, telegrams);
                        ends += 1;
                    }
                    ReadOutEvent::Failed(_) => ends += 1,
                }
            }
        }
        assert!(telegrams <= 4, "{telegrams} telegrams past max_telegrams");
        assert_eq!(ends > 0, r.is_done(), "done without an end event or the reverse");
    }

    /// `data` as the line's answers during a secondary search; a timeout after every third read.
    fn search(data: &[u8]) {
        let mut s = SecondarySearch::new(SearchConfig::default());
        let mut now = Instant::now();
        let mut found = std::collections::HashSet::new();
        for (k, chunk) in chunks(data).into_iter().enumerate() {
            let _ = s.poll_transmit(now);
            match chunk.first().map(|b| b % 8) {
                Some(0) => s.handle_probe(now, Probe::None),
                Some(1) => s.handle_probe(now, Probe::One),
                Some(2) => s.handle_probe(now, Probe::Collision),
                Some(3) => s.handle_corrupt(now, "collision: harness"),
                _ => s.handle_reply(now, chunk),
            }
            if k % 3 == 2 {
                now += Duration::from_secs(1);
                s.handle_timeout(now);
            }
            while let Some(e) = s.poll_event() {
                if let SearchEvent::Found { id, .. } = e {
                    assert!(found.insert(id), "found twice: {id:?}");
                }
            }
        }
        assert!(s.probes() <= data.len() + 1, "{} probes for {} bytes", s.probes(), data.len());
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::test_rng::Rng;

        /// `fuzz/seeds/mbus_link` (the libmbus corpus frames and the master's requests), plus requests
        /// built here so the test has seeds even without the directory.
        fn seeds() -> Vec<Vec<u8>> {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/mbus_link");
            let mut out: Vec<Vec<u8>> = std::fs::read_dir(dir)
                .map(|d| d.filter_map(|e| std::fs::read(e.ok()?.path()).ok()).collect())
                .unwrap_or_default();
            out.push(super::super::snd_nke(1));
            out.push(super::super::req_ud2(0xFD, true));
            out.push(super::super::select_secondary(
                &SecondaryMask::from_digits("1234FFFF").unwrap_or_else(SecondaryMask::wildcard),
            ));
            out.push(vec![0xE5]);
            out.push(vec![0x68, 0x03, 0x03, 0x68, 0x08, 0x01, 0x70, 0x79, 0x16]);
            out
        }

        #[test]
        fn seed_frames_pass_the_harness() {
            let seeds = seeds();
            assert!(seeds.len() > 80, "fuzz/seeds/mbus_link holds the corpus frames ({} seeds)", seeds.len());
            for s in &seeds {
                mbus_link(s);
            }
        }

        #[test]
        fn harness_survives_20k_random_and_mutated_byte_strings() {
            let mut rng = Rng(0x5EED_3B05_0000_E5E5);
            let seeds = seeds();
            for round in 0..20_000 {
                let data: Vec<u8> = if round % 2 == 0 {
                    let len = if rng.below(4) == 0 { rng.below(300) } else { rng.below(16) };
                    let mut d: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                    // Plausible starts, so the length logic is reached often.
                    if let Some(first) = d.first_mut() {
                        *first = [0x68, 0x10, 0xE5, *first][rng.below(4)];
                    }
                    d
                } else {
                    let mut d = seeds[rng.below(seeds.len())].clone();
                    rng.mutate(&mut d);
                    d
                };
                mbus_link(&data);
            }
        }
    }
}

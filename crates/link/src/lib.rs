//! Link layer for ami: frames, time and the line.
//!
//! The sans-IO half ([`crc`], [`modbus`] frame codecs, [`Check`]/[`ReplyMatcher`], [`backoff`]) never
//! touches a socket or a clock. The one async part is the [`Bus`] driver: the only task that writes a given
//! transport. Requests from every meter on that line queue there; it applies guard time, per-request
//! timeout and retries, drains the line after an error, rejects replies that do not belong to the request
//! (late replies are the classic Modbus RTU bug) and counts per meter and per bus.
//!
//! Panic contract: no byte sequence from the wire panics any function here.

pub mod backoff;
mod bus;
pub mod crc;
pub mod hdlc;
pub mod hdlc_session;
pub mod mbus;
pub mod modbus;
pub mod mode_e;
pub mod wrapper;

pub use bus::{Bus, BusConfig, BusHandle, BusStats, Counters, Exchange, LinkError, Reply};

/// What a [`ReplyMatcher`] makes of the bytes received so far for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// The bytes so far are a plausible prefix of the reply: keep reading.
    Incomplete,
    /// `buf[..len]` is the complete reply to this request.
    Complete {
        /// Length of the reply frame at the start of the buffer.
        len: usize,
    },
    /// The bytes at the start of the buffer are a well-formed frame, but it answers something else (a late
    /// reply to an earlier request, another slave, another transaction id). Drop `skip` bytes, count a
    /// rejected reply, and keep reading within the same deadline.
    Foreign {
        /// How many bytes to drop from the start of the buffer.
        skip: usize,
        /// For the log: what the frame was.
        what: String,
    },
    /// The frame is damaged (bad checksum, impossible length). The attempt fails as a checksum error: the
    /// bus drains the line and retries.
    Corrupt {
        /// What is wrong, e.g. `CRC expected 0x1234, got 0x4321`.
        reason: String,
    },
}

/// Decides whether received bytes are the reply to one specific request. Implemented by each wire format
/// (Modbus RTU, Modbus TCP, M-Bus, HDLC, …); pure, no I/O.
pub trait ReplyMatcher: Send + Sync {
    /// Examines the bytes received since the request was written (stale bytes already discarded).
    fn check(&self, buf: &[u8]) -> Check;
}

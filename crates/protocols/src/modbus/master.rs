//! The Modbus master: requests through a link `BusHandle`.
//!
//! [`Master::request`] encodes the PDU, wraps it in the ADU of the line's [`Framing`], hands it to the bus
//! owner with a reply matcher that accepts only the answer to this request (unit, function, and for TCP the
//! transaction id), then validates the reply PDU against the request. Timeouts, retries, draining the line
//! and rejecting late replies are the bus's business; refusing a reply of the wrong shape is ours.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ami_link::modbus::{
    encode_rtu, encode_tcp, rtu_reply_pdu, tcp_reply_pdu, RtuExactReplyMatcher, RtuReplyMatcher, TcpReplyMatcher,
};
use ami_link::{BusHandle, Exchange, LinkError, ReplyMatcher};

use super::plan::Table;
use super::{PduError, Request, Response};

/// Which ADU wraps the PDU on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// RTU: `unit | PDU | CRC` (serial lines and transparent serial-over-TCP gateways).
    #[default]
    Rtu,
    /// Modbus TCP MBAP header.
    Tcp,
}

/// Why a Modbus request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MasterError {
    /// The link failed (timeout, corrupt reply, transport).
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The meter refused or answered nonsense.
    #[error(transparent)]
    Pdu(#[from] PduError),
}

/// Sends Modbus requests through the bus owner of one line.
///
/// Cheap to clone; clones share the bus and the Modbus TCP transaction counter.
#[derive(Clone)]
pub struct Master {
    bus: BusHandle,
    framing: Framing,
    /// Next MBAP transaction id (Modbus TCP); wraps at 65535.
    transaction: Arc<AtomicU16>,
    /// Per-attempt timeout; `None` uses the bus default.
    timeout: Option<Duration>,
    /// Retries after the first attempt; `None` uses the bus default.
    retries: Option<u32>,
}

impl std::fmt::Debug for Master {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Master")
            .field("bus", &self.bus.id())
            .field("framing", &self.framing)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

impl Master {
    /// RTU unit id 0: a broadcast write that no slave answers (Modbus over serial line V1.02, 2.2).
    pub const BROADCAST: u8 = 0;

    /// A master speaking `framing` on `bus`, with the bus's default timeout and retries.
    pub fn new(bus: BusHandle, framing: Framing) -> Self {
        Self { bus, framing, transaction: Arc::new(AtomicU16::new(0)), timeout: None, retries: None }
    }

    /// Sets the per-attempt reply timeout (`None`: the bus default).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the retries after the first attempt (`None`: the bus default).
    #[must_use]
    pub fn with_retries(mut self, retries: Option<u32>) -> Self {
        self.retries = retries;
        self
    }

    /// The framing this master speaks.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// The bus this master sends through.
    pub fn bus(&self) -> &BusHandle {
        &self.bus
    }

    /// Sends one request to `unit` on behalf of `meter` and returns the validated response.
    ///
    /// With RTU framing, unit 0 is a broadcast: only writes may be broadcast, nothing answers, and the
    /// result is [`Response::Written`] once the frame is on the line. With TCP framing unit 0 is an ordinary
    /// unit id (many TCP devices answer on it).
    pub async fn request(&self, meter: &str, unit: u8, request: &Request) -> Result<Response, MasterError> {
        let pdu = request.encode()?;
        let function = request.function().code();
        let broadcast = self.framing == Framing::Rtu && unit == Self::BROADCAST;
        if broadcast && !request.is_write() {
            return Err(PduError::BadRequest(format!(
                "{} cannot be broadcast (unit 0): nothing would answer",
                request.function()
            ))
            .into());
        }
        let (frame, matcher): (Vec<u8>, Option<Box<dyn ReplyMatcher>>) = match self.framing {
            Framing::Rtu => {
                let matcher: Option<Box<dyn ReplyMatcher>> = if broadcast {
                    None
                } else {
                    // RTU has no transaction id: the reply's exact length is what tells a late reply
                    // to an earlier read apart from ours.
                    let base = RtuReplyMatcher { unit, function };
                    Some(Box::new(RtuExactReplyMatcher { base, reply_len: 1 + request.response_pdu_len() + 2 }))
                };
                (encode_rtu(unit, &pdu), matcher)
            }
            Framing::Tcp => {
                let transaction = self.transaction.fetch_add(1, Ordering::Relaxed);
                (encode_tcp(transaction, unit, &pdu), Some(Box::new(TcpReplyMatcher { transaction, unit, function })))
            }
        };
        tracing::trace!(bus = self.bus.id(), meter, unit, request = ?request, "modbus request");
        let reply = self
            .bus
            .transact(Exchange {
                meter: meter.to_string(),
                request: frame,
                matcher,
                timeout: self.timeout,
                retries: self.retries,
            })
            .await?;
        if broadcast {
            return Ok(Response::Written);
        }
        let reply_pdu = match self.framing {
            Framing::Rtu => rtu_reply_pdu(&reply.frame),
            Framing::Tcp => tcp_reply_pdu(&reply.frame),
        };
        let Some(reply_pdu) = reply_pdu else {
            // The matcher delimited the frame, so this means the link and we disagree about the ADU.
            return Err(PduError::Invalid(format!("reply frame of {} bytes carries no PDU", reply.frame.len())).into());
        };
        Ok(request.decode_response(reply_pdu)?)
    }

    /// Reads `count` registers of `table` (holding or input) from `address`.
    pub async fn read_registers(
        &self,
        meter: &str,
        unit: u8,
        table: Table,
        address: u16,
        count: u16,
    ) -> Result<Vec<u16>, MasterError> {
        if table.is_bits() {
            return Err(PduError::BadRequest(format!("{table} is a bit table: read it with read_bits")).into());
        }
        match self.request(meter, unit, &table.read_request(address, count)).await? {
            Response::Registers(regs) => Ok(regs),
            // decode_response only gives registers for FC 3 / 4.
            other => Err(PduError::Invalid(format!("expected registers, got {other:?}")).into()),
        }
    }

    /// Reads `count` bits of `table` (coil or discrete) from `address`.
    pub async fn read_bits(
        &self,
        meter: &str,
        unit: u8,
        table: Table,
        address: u16,
        count: u16,
    ) -> Result<Vec<bool>, MasterError> {
        if !table.is_bits() {
            return Err(
                PduError::BadRequest(format!("{table} is a register table: read it with read_registers")).into()
            );
        }
        match self.request(meter, unit, &table.read_request(address, count)).await? {
            Response::Bits(bits) => Ok(bits),
            // decode_response only gives bits for FC 1 / 2.
            other => Err(PduError::Invalid(format!("expected bits, got {other:?}")).into()),
        }
    }

    /// Writes one coil (FC 5).
    pub async fn write_coil(&self, meter: &str, unit: u8, address: u16, value: bool) -> Result<(), MasterError> {
        self.request(meter, unit, &Request::WriteSingleCoil { address, value }).await.map(drop)
    }

    /// Writes one holding register (FC 6).
    pub async fn write_register(&self, meter: &str, unit: u8, address: u16, value: u16) -> Result<(), MasterError> {
        self.request(meter, unit, &Request::WriteSingleRegister { address, value }).await.map(drop)
    }

    /// Writes consecutive holding registers (FC 16), e.g. a 32-bit value.
    pub async fn write_registers(
        &self,
        meter: &str,
        unit: u8,
        address: u16,
        values: &[u16],
    ) -> Result<(), MasterError> {
        self.request(meter, unit, &Request::WriteMultipleRegisters { address, values: values.to_vec() }).await.map(drop)
    }
}

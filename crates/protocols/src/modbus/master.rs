//! The Modbus master: requests through a link `BusHandle`.

use ami_link::{BusHandle, LinkError};

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
#[derive(Clone)]
pub struct Master {
    bus: BusHandle,
    framing: Framing,
}

impl Master {
    /// A master speaking `framing` on `bus`.
    pub fn new(bus: BusHandle, framing: Framing) -> Self {
        Self { bus, framing }
    }

    /// Sends one request to `unit` on behalf of `meter` and returns the validated response.
    pub async fn request(&self, meter: &str, unit: u8, request: &Request) -> Result<Response, MasterError> {
        let _ = (meter, unit, request, &self.bus, self.framing);
        todo!("helper")
    }
}

//! Modbus PDUs: requests, responses and exceptions.

/// A Modbus function code. Lossless: unknown codes are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Function {
    /// 0x01 read coils
    ReadCoils,
    /// 0x02 read discrete inputs
    ReadDiscreteInputs,
    /// 0x03 read holding registers
    ReadHoldingRegisters,
    /// 0x04 read input registers
    ReadInputRegisters,
    /// 0x05 write single coil
    WriteSingleCoil,
    /// 0x06 write single register
    WriteSingleRegister,
    /// 0x0F write multiple coils
    WriteMultipleCoils,
    /// 0x10 write multiple registers
    WriteMultipleRegisters,
    /// any other code
    Unknown(u8),
}

/// A Modbus exception code from an exception response (function | 0x80). Lossless.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Exception {
    /// 0x01 illegal function
    IllegalFunction,
    /// 0x02 illegal data address
    IllegalDataAddress,
    /// 0x03 illegal data value
    IllegalDataValue,
    /// 0x04 server device failure
    ServerDeviceFailure,
    /// 0x05 acknowledge
    Acknowledge,
    /// 0x06 server device busy
    ServerDeviceBusy,
    /// 0x08 memory parity error
    MemoryParityError,
    /// 0x0A gateway path unavailable
    GatewayPathUnavailable,
    /// 0x0B gateway target device failed to respond
    GatewayTargetFailedToRespond,
    /// any other code
    Unknown(u8),
}

/// A request PDU. Addresses are 0-based protocol addresses (register 0 = "40001"/"30001").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// FC 1
    ReadCoils { address: u16, quantity: u16 },
    /// FC 2
    ReadDiscreteInputs { address: u16, quantity: u16 },
    /// FC 3
    ReadHoldingRegisters { address: u16, quantity: u16 },
    /// FC 4
    ReadInputRegisters { address: u16, quantity: u16 },
    /// FC 5
    WriteSingleCoil { address: u16, value: bool },
    /// FC 6
    WriteSingleRegister { address: u16, value: u16 },
    /// FC 15
    WriteMultipleCoils { address: u16, values: Vec<bool> },
    /// FC 16
    WriteMultipleRegisters { address: u16, values: Vec<u16> },
}

/// A normal (non-exception) response PDU, validated against its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// FC 1 / 2: exactly `quantity` bits.
    Bits(Vec<bool>),
    /// FC 3 / 4: exactly `quantity` registers.
    Registers(Vec<u16>),
    /// FC 5 / 6 / 15 / 16: the echo matched the request.
    Written,
}

/// A response PDU that is not the answer to the request, or a refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PduError {
    /// The meter refused: an exception response.
    #[error("meter replied with exception {exception} to function {function}")]
    Exception { function: Function, exception: Exception },
    /// Malformed or mismatched response (wrong function, byte count, quantity, echo).
    #[error("invalid response: {0}")]
    Invalid(String),
    /// The request itself is out of range (quantity 0 or too large, PDU over 253 bytes).
    #[error("invalid request: {0}")]
    BadRequest(String),
}

impl std::fmt::Display for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::fmt::Display for Exception {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

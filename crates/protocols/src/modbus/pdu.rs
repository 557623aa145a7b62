//! Modbus PDUs: requests, responses and exceptions (Modbus Application Protocol Specification V1.1b3,
//! section 6 for the function codes, section 7 for exceptions).
//!
//! A PDU here is `function | data`, without the unit id, CRC or MBAP header (those are `ami_link::modbus`).
//! The master side encodes a [`Request`] and validates the reply against it with
//! [`Request::decode_response`]; the server side (the simulator) decodes with [`Request::decode`] and answers
//! with [`encode_response`] or [`encode_exception`].
//!
//! Panic contract: no byte slice makes any decoder here panic; every failure is a [`PduError`].

use std::fmt;

/// Most coils or discrete inputs one read may ask for (spec 6.1, 6.2: 1 to 2000).
pub const MAX_READ_BITS: u16 = 2000;
/// Most registers one read may ask for (spec 6.3, 6.4: 1 to 125).
pub const MAX_READ_REGISTERS: u16 = 125;
/// Most coils one FC 15 request may write (spec 6.11: 1 to 0x7B0).
pub const MAX_WRITE_BITS: u16 = 1968;
/// Most registers one FC 16 request may write (spec 6.12: 1 to 0x7B).
pub const MAX_WRITE_REGISTERS: u16 = 123;
/// Largest PDU the serial line ADU can carry (spec 4.1: 256 − unit − 2 CRC bytes).
pub const MAX_PDU_LEN: usize = 253;

/// Bit set on the function code of an exception response (spec 7).
const EXCEPTION_FLAG: u8 = 0x80;
/// FC 5 output value for ON (spec 6.5).
const COIL_ON: u16 = 0xFF00;
/// FC 5 output value for OFF (spec 6.5).
const COIL_OFF: u16 = 0x0000;

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
    ReadCoils {
        /// First coil.
        address: u16,
        /// Coils to read, 1..=2000.
        quantity: u16,
    },
    /// FC 2
    ReadDiscreteInputs {
        /// First input.
        address: u16,
        /// Inputs to read, 1..=2000.
        quantity: u16,
    },
    /// FC 3
    ReadHoldingRegisters {
        /// First register.
        address: u16,
        /// Registers to read, 1..=125.
        quantity: u16,
    },
    /// FC 4
    ReadInputRegisters {
        /// First register.
        address: u16,
        /// Registers to read, 1..=125.
        quantity: u16,
    },
    /// FC 5
    WriteSingleCoil {
        /// The coil.
        address: u16,
        /// On (0xFF00 on the wire) or off (0x0000).
        value: bool,
    },
    /// FC 6
    WriteSingleRegister {
        /// The register.
        address: u16,
        /// The value to write.
        value: u16,
    },
    /// FC 15
    WriteMultipleCoils {
        /// First coil.
        address: u16,
        /// Values, 1..=1968 of them.
        values: Vec<bool>,
    },
    /// FC 16
    WriteMultipleRegisters {
        /// First register.
        address: u16,
        /// Values, 1..=123 of them.
        values: Vec<u16>,
    },
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
    Exception {
        /// The function the meter refused.
        function: Function,
        /// Why.
        exception: Exception,
    },
    /// Malformed or mismatched response (wrong function, byte count, quantity, echo).
    #[error("invalid response: {0}")]
    Invalid(String),
    /// The request itself is out of range (quantity 0 or too large, PDU over 253 bytes).
    #[error("invalid request: {0}")]
    BadRequest(String),
}

// ---------------------------------------------------------------------------------------------------------
// Code points

impl From<u8> for Function {
    fn from(code: u8) -> Self {
        match code {
            0x01 => Function::ReadCoils,
            0x02 => Function::ReadDiscreteInputs,
            0x03 => Function::ReadHoldingRegisters,
            0x04 => Function::ReadInputRegisters,
            0x05 => Function::WriteSingleCoil,
            0x06 => Function::WriteSingleRegister,
            0x0F => Function::WriteMultipleCoils,
            0x10 => Function::WriteMultipleRegisters,
            other => Function::Unknown(other),
        }
    }
}

impl From<Function> for u8 {
    fn from(function: Function) -> u8 {
        match function {
            Function::ReadCoils => 0x01,
            Function::ReadDiscreteInputs => 0x02,
            Function::ReadHoldingRegisters => 0x03,
            Function::ReadInputRegisters => 0x04,
            Function::WriteSingleCoil => 0x05,
            Function::WriteSingleRegister => 0x06,
            Function::WriteMultipleCoils => 0x0F,
            Function::WriteMultipleRegisters => 0x10,
            Function::Unknown(code) => code,
        }
    }
}

impl Function {
    /// The code on the wire.
    pub fn code(self) -> u8 {
        self.into()
    }

    /// Human name, e.g. `read holding registers`.
    pub fn name(self) -> &'static str {
        match self {
            Function::ReadCoils => "read coils",
            Function::ReadDiscreteInputs => "read discrete inputs",
            Function::ReadHoldingRegisters => "read holding registers",
            Function::ReadInputRegisters => "read input registers",
            Function::WriteSingleCoil => "write single coil",
            Function::WriteSingleRegister => "write single register",
            Function::WriteMultipleCoils => "write multiple coils",
            Function::WriteMultipleRegisters => "write multiple registers",
            Function::Unknown(code) if code & EXCEPTION_FLAG != 0 => "exception response",
            Function::Unknown(_) => "unknown function",
        }
    }
}

/// Shows the code in hex and the name: `03 read holding registers`, `10 write multiple registers`.
impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02X} {}", self.code(), self.name())
    }
}

impl From<u8> for Exception {
    fn from(code: u8) -> Self {
        match code {
            0x01 => Exception::IllegalFunction,
            0x02 => Exception::IllegalDataAddress,
            0x03 => Exception::IllegalDataValue,
            0x04 => Exception::ServerDeviceFailure,
            0x05 => Exception::Acknowledge,
            0x06 => Exception::ServerDeviceBusy,
            0x08 => Exception::MemoryParityError,
            0x0A => Exception::GatewayPathUnavailable,
            0x0B => Exception::GatewayTargetFailedToRespond,
            other => Exception::Unknown(other),
        }
    }
}

impl From<Exception> for u8 {
    fn from(exception: Exception) -> u8 {
        match exception {
            Exception::IllegalFunction => 0x01,
            Exception::IllegalDataAddress => 0x02,
            Exception::IllegalDataValue => 0x03,
            Exception::ServerDeviceFailure => 0x04,
            Exception::Acknowledge => 0x05,
            Exception::ServerDeviceBusy => 0x06,
            Exception::MemoryParityError => 0x08,
            Exception::GatewayPathUnavailable => 0x0A,
            Exception::GatewayTargetFailedToRespond => 0x0B,
            Exception::Unknown(code) => code,
        }
    }
}

impl Exception {
    /// The code on the wire.
    pub fn code(self) -> u8 {
        self.into()
    }

    /// Human name, e.g. `illegal data address`.
    pub fn name(self) -> &'static str {
        match self {
            Exception::IllegalFunction => "illegal function",
            Exception::IllegalDataAddress => "illegal data address",
            Exception::IllegalDataValue => "illegal data value",
            Exception::ServerDeviceFailure => "server device failure",
            Exception::Acknowledge => "acknowledge",
            Exception::ServerDeviceBusy => "server device busy",
            Exception::MemoryParityError => "memory parity error",
            Exception::GatewayPathUnavailable => "gateway path unavailable",
            Exception::GatewayTargetFailedToRespond => "gateway target device failed to respond",
            Exception::Unknown(_) => "unknown exception",
        }
    }
}

/// Shows the code in hex and the name: `02 illegal data address`.
impl fmt::Display for Exception {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02X} {}", self.code(), self.name())
    }
}

impl PduError {
    /// The exception a server answers when [`Request::decode`] fails with this error, following the
    /// spec's state diagrams (section 6): unsupported function → 01, address range → 02, quantity, value or
    /// implied length wrong → 03. `None` when the PDU is empty (there is no function code to answer).
    pub fn server_exception(&self) -> Option<Exception> {
        match self {
            PduError::Exception { exception, .. } => Some(*exception),
            PduError::BadRequest(_) => Some(Exception::IllegalDataValue),
            PduError::Invalid(msg) if msg == EMPTY_PDU => None,
            PduError::Invalid(_) => Some(Exception::IllegalDataValue),
        }
    }
}

const EMPTY_PDU: &str = "empty PDU";

// ---------------------------------------------------------------------------------------------------------
// Small byte helpers (never panic)

fn u16_at(pdu: &[u8], at: usize) -> Option<u16> {
    let hi = *pdu.get(at)?;
    let lo = *pdu.get(at.checked_add(1)?)?;
    Some(u16::from_be_bytes([hi, lo]))
}

/// Big-endian 16-bit words of `bytes`; an odd trailing byte is ignored (callers check the length).
fn be_words(bytes: &[u8]) -> Vec<u16> {
    bytes.chunks_exact(2).filter_map(|c| <[u8; 2]>::try_from(c).ok()).map(u16::from_be_bytes).collect()
}

fn push_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Bytes needed for `bits` packed bits.
fn bit_bytes(bits: usize) -> usize {
    bits.div_ceil(8)
}

/// Packs bits LSB first, first bit in bit 0 of the first byte; unused high bits are zero (spec 6.1).
fn pack_bits(bits: &[bool]) -> Vec<u8> {
    let mut out = vec![0u8; bit_bytes(bits.len())];
    for (i, bit) in bits.iter().enumerate() {
        if *bit {
            if let Some(byte) = out.get_mut(i / 8) {
                *byte |= 1 << (i % 8);
            }
        }
    }
    out
}

/// Unpacks `count` bits (LSB first); `None` when `bytes` is too short.
fn unpack_bits(bytes: &[u8], count: usize) -> Option<Vec<bool>> {
    (0..count).map(|i| bytes.get(i / 8).map(|b| b & (1 << (i % 8)) != 0)).collect()
}

fn hex(bytes: &[u8]) -> String {
    const MAX_SHOWN: usize = 16;
    let mut s: String = bytes.iter().take(MAX_SHOWN).map(|b| format!("{b:02X} ")).collect();
    if bytes.len() > MAX_SHOWN {
        s.push('…');
    } else {
        s.pop();
    }
    s
}

/// Why a quantity/address range is out of bounds.
enum RangeError {
    /// Quantity 0 or above the function's maximum.
    Quantity(String),
    /// `address + quantity` runs past address 65535.
    PastEnd(String),
}

impl From<RangeError> for PduError {
    fn from(e: RangeError) -> Self {
        match e {
            RangeError::Quantity(msg) | RangeError::PastEnd(msg) => PduError::BadRequest(msg),
        }
    }
}

/// Checks `1 <= quantity <= max` and that `address..address+quantity` stays inside the 65536-entry table.
fn check_range(what: &str, address: u16, quantity: u16, max: u16) -> Result<(), RangeError> {
    if quantity == 0 || quantity > max {
        return Err(RangeError::Quantity(format!("{what}: quantity {quantity} is outside 1..={max}")));
    }
    if u32::from(address) + u32::from(quantity) > 0x1_0000 {
        return Err(RangeError::PastEnd(format!(
            "{what}: address {address} + quantity {quantity} runs past the end of the table (65535)"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// Requests

impl Request {
    /// The function code of this request.
    pub fn function(&self) -> Function {
        match self {
            Request::ReadCoils { .. } => Function::ReadCoils,
            Request::ReadDiscreteInputs { .. } => Function::ReadDiscreteInputs,
            Request::ReadHoldingRegisters { .. } => Function::ReadHoldingRegisters,
            Request::ReadInputRegisters { .. } => Function::ReadInputRegisters,
            Request::WriteSingleCoil { .. } => Function::WriteSingleCoil,
            Request::WriteSingleRegister { .. } => Function::WriteSingleRegister,
            Request::WriteMultipleCoils { .. } => Function::WriteMultipleCoils,
            Request::WriteMultipleRegisters { .. } => Function::WriteMultipleRegisters,
        }
    }

    /// Length of the normal (non-exception) response PDU this request must get: function code + byte
    /// count + data for reads, function code + address + value/quantity (5 bytes) for writes.
    pub fn response_pdu_len(&self) -> usize {
        match self {
            Request::ReadCoils { quantity, .. } | Request::ReadDiscreteInputs { quantity, .. } => {
                2 + usize::from(*quantity).div_ceil(8)
            }
            Request::ReadHoldingRegisters { quantity, .. } | Request::ReadInputRegisters { quantity, .. } => {
                2 + 2 * usize::from(*quantity)
            }
            Request::WriteSingleCoil { .. }
            | Request::WriteSingleRegister { .. }
            | Request::WriteMultipleCoils { .. }
            | Request::WriteMultipleRegisters { .. } => 5,
        }
    }

    /// Whether this request writes (FC 5, 6, 15, 16). Only writes may be broadcast (unit 0).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Request::WriteSingleCoil { .. }
                | Request::WriteSingleRegister { .. }
                | Request::WriteMultipleCoils { .. }
                | Request::WriteMultipleRegisters { .. }
        )
    }

    /// Checks the quantity limits of the spec (section 6) and the table end.
    pub fn validate(&self) -> Result<(), PduError> {
        self.check_range().map_err(PduError::from)
    }

    fn check_range(&self) -> Result<(), RangeError> {
        let count = |n: usize| u16::try_from(n).unwrap_or(u16::MAX);
        let (address, quantity, max) = match self {
            Request::ReadCoils { address, quantity } | Request::ReadDiscreteInputs { address, quantity } => {
                (*address, *quantity, MAX_READ_BITS)
            }
            Request::ReadHoldingRegisters { address, quantity } | Request::ReadInputRegisters { address, quantity } => {
                (*address, *quantity, MAX_READ_REGISTERS)
            }
            Request::WriteSingleCoil { .. } | Request::WriteSingleRegister { .. } => return Ok(()),
            Request::WriteMultipleCoils { address, values } => (*address, count(values.len()), MAX_WRITE_BITS),
            Request::WriteMultipleRegisters { address, values } => (*address, count(values.len()), MAX_WRITE_REGISTERS),
        };
        check_range(self.function().name(), address, quantity, max)
    }

    /// The request PDU (`function | data`). Fails with [`PduError::BadRequest`] when a quantity is outside
    /// the spec's limits (reads of bits 1..=2000, registers 1..=125; writes of coils 1..=1968, registers
    /// 1..=123) or the range runs past address 65535.
    pub fn encode(&self) -> Result<Vec<u8>, PduError> {
        self.validate()?;
        let mut out = Vec::with_capacity(8);
        out.push(self.function().code());
        match self {
            Request::ReadCoils { address, quantity }
            | Request::ReadDiscreteInputs { address, quantity }
            | Request::ReadHoldingRegisters { address, quantity }
            | Request::ReadInputRegisters { address, quantity } => {
                push_u16(&mut out, *address);
                push_u16(&mut out, *quantity);
            }
            Request::WriteSingleCoil { address, value } => {
                push_u16(&mut out, *address);
                push_u16(&mut out, if *value { COIL_ON } else { COIL_OFF });
            }
            Request::WriteSingleRegister { address, value } => {
                push_u16(&mut out, *address);
                push_u16(&mut out, *value);
            }
            Request::WriteMultipleCoils { address, values } => {
                let packed = pack_bits(values);
                push_u16(&mut out, *address);
                // validate() bounds the count to 1968 coils = 246 bytes: both fit.
                push_u16(&mut out, u16::try_from(values.len()).unwrap_or(u16::MAX));
                out.push(u8::try_from(packed.len()).unwrap_or(u8::MAX));
                out.extend_from_slice(&packed);
            }
            Request::WriteMultipleRegisters { address, values } => {
                push_u16(&mut out, *address);
                // validate() bounds the count to 123 registers = 246 bytes: both fit.
                push_u16(&mut out, u16::try_from(values.len()).unwrap_or(u16::MAX));
                out.push(u8::try_from(values.len() * 2).unwrap_or(u8::MAX));
                for v in values {
                    push_u16(&mut out, *v);
                }
            }
        }
        Ok(out)
    }

    /// Decodes a request PDU (server side, used by the simulator).
    ///
    /// Errors map onto the exception a server should answer ([`PduError::server_exception`]): an
    /// unsupported function is `PduError::Exception { exception: IllegalFunction }`, a range past address
    /// 65535 is `IllegalDataAddress`, a bad quantity or coil value is [`PduError::BadRequest`], a wrong length
    /// or byte count is [`PduError::Invalid`].
    pub fn decode(pdu: &[u8]) -> Result<Request, PduError> {
        let Some((&code, data)) = pdu.split_first() else {
            return Err(PduError::Invalid(EMPTY_PDU.into()));
        };
        let function = Function::from(code);
        let fixed = |data: &[u8]| -> Result<(u16, u16), PduError> {
            match (data.len(), u16_at(data, 0), u16_at(data, 2)) {
                (4, Some(a), Some(b)) => Ok((a, b)),
                (n, ..) => {
                    Err(PduError::Invalid(format!("request {function}: {} bytes, expected 5 ({})", n + 1, hex(pdu))))
                }
            }
        };
        let request = match function {
            Function::ReadCoils
            | Function::ReadDiscreteInputs
            | Function::ReadHoldingRegisters
            | Function::ReadInputRegisters => {
                let (address, quantity) = fixed(data)?;
                match function {
                    Function::ReadCoils => Request::ReadCoils { address, quantity },
                    Function::ReadDiscreteInputs => Request::ReadDiscreteInputs { address, quantity },
                    Function::ReadHoldingRegisters => Request::ReadHoldingRegisters { address, quantity },
                    _ => Request::ReadInputRegisters { address, quantity },
                }
            }
            Function::WriteSingleCoil => {
                let (address, raw) = fixed(data)?;
                let value = match raw {
                    COIL_ON => true,
                    COIL_OFF => false,
                    other => {
                        return Err(PduError::BadRequest(format!(
                            "write single coil: output value 0x{other:04X}, expected 0xFF00 or 0x0000"
                        )))
                    }
                };
                Request::WriteSingleCoil { address, value }
            }
            Function::WriteSingleRegister => {
                let (address, value) = fixed(data)?;
                Request::WriteSingleRegister { address, value }
            }
            Function::WriteMultipleCoils | Function::WriteMultipleRegisters => {
                let (Some(address), Some(quantity), Some(&count)) = (u16_at(data, 0), u16_at(data, 2), data.get(4))
                else {
                    return Err(PduError::Invalid(format!(
                        "request {function}: {} bytes, too short for the header ({})",
                        pdu.len(),
                        hex(pdu)
                    )));
                };
                let is_coils = function == Function::WriteMultipleCoils;
                let (max, expected_count) = if is_coils {
                    (MAX_WRITE_BITS, bit_bytes(usize::from(quantity)))
                } else {
                    (MAX_WRITE_REGISTERS, usize::from(quantity) * 2)
                };
                if quantity == 0 || quantity > max {
                    return Err(PduError::BadRequest(format!(
                        "{}: quantity {quantity} is outside 1..={max}",
                        function.name()
                    )));
                }
                if usize::from(count) != expected_count {
                    return Err(PduError::Invalid(format!(
                        "request {function}: byte count {count}, expected {expected_count} for quantity {quantity}"
                    )));
                }
                let values = data.get(5..).unwrap_or_default();
                if values.len() != expected_count {
                    return Err(PduError::Invalid(format!(
                        "request {function}: {} data bytes, byte count says {expected_count}",
                        values.len()
                    )));
                }
                if is_coils {
                    let values = unpack_bits(values, usize::from(quantity))
                        .ok_or_else(|| PduError::Invalid("coil data truncated".into()))?;
                    Request::WriteMultipleCoils { address, values }
                } else {
                    let values = be_words(values);
                    Request::WriteMultipleRegisters { address, values }
                }
            }
            Function::Unknown(_) => {
                return Err(PduError::Exception { function, exception: Exception::IllegalFunction })
            }
        };
        match request.check_range() {
            Ok(()) => Ok(request),
            // The quantity is fine but the range runs off the table: the spec answers 02.
            Err(RangeError::PastEnd(_)) => {
                Err(PduError::Exception { function, exception: Exception::IllegalDataAddress })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Validates a response PDU against this request.
    ///
    /// An exception PDU (`function | 0x80, code`) becomes [`PduError::Exception`]. Otherwise the function
    /// must match, the byte count must be exactly what the quantity needs and the PDU length must match it,
    /// and a write's echo must repeat address, value or quantity. Anything else is [`PduError::Invalid`]
    /// naming what was received and what was expected.
    pub fn decode_response(&self, pdu: &[u8]) -> Result<Response, PduError> {
        let function = self.function();
        let expected_code = function.code();
        let Some((&code, data)) = pdu.split_first() else {
            return Err(PduError::Invalid(format!("empty reply to {function}")));
        };
        if code == expected_code | EXCEPTION_FLAG {
            return match data {
                [exception] => Err(PduError::Exception { function, exception: Exception::from(*exception) }),
                _ => Err(PduError::Invalid(format!(
                    "exception reply to {function} is {} bytes, expected 2 ({})",
                    pdu.len(),
                    hex(pdu)
                ))),
            };
        }
        if code != expected_code {
            return Err(PduError::Invalid(format!(
                "reply has function {}, expected {function} ({})",
                Function::from(code),
                hex(pdu)
            )));
        }
        match self {
            Request::ReadCoils { quantity, .. } | Request::ReadDiscreteInputs { quantity, .. } => {
                let body = read_body(function, pdu, bit_bytes(usize::from(*quantity)), "bits", *quantity)?;
                let bits = unpack_bits(body, usize::from(*quantity))
                    .ok_or_else(|| PduError::Invalid(format!("reply to {function}: bit data truncated")))?;
                Ok(Response::Bits(bits))
            }
            Request::ReadHoldingRegisters { quantity, .. } | Request::ReadInputRegisters { quantity, .. } => {
                let body = read_body(function, pdu, usize::from(*quantity) * 2, "registers", *quantity)?;
                Ok(Response::Registers(be_words(body)))
            }
            Request::WriteSingleCoil { address, value } => {
                check_echo(function, pdu, *address, if *value { COIL_ON } else { COIL_OFF }, "value")
            }
            Request::WriteSingleRegister { address, value } => check_echo(function, pdu, *address, *value, "value"),
            Request::WriteMultipleCoils { address, values } => {
                let quantity = u16::try_from(values.len()).unwrap_or(u16::MAX);
                check_echo(function, pdu, *address, quantity, "quantity")
            }
            Request::WriteMultipleRegisters { address, values } => {
                let quantity = u16::try_from(values.len()).unwrap_or(u16::MAX);
                check_echo(function, pdu, *address, quantity, "quantity")
            }
        }
    }
}

/// Checks `function | byte count | data` with `byte count == expected` and returns the data.
fn read_body<'a>(
    function: Function,
    pdu: &'a [u8],
    expected: usize,
    what: &str,
    quantity: u16,
) -> Result<&'a [u8], PduError> {
    let Some(&count) = pdu.get(1) else {
        return Err(PduError::Invalid(format!("reply to {function} has no byte count")));
    };
    if usize::from(count) != expected {
        return Err(PduError::Invalid(format!(
            "reply to {function}: byte count {count}, expected {expected} for {quantity} {what}"
        )));
    }
    let body = pdu.get(2..).unwrap_or_default();
    if body.len() != expected {
        return Err(PduError::Invalid(format!(
            "reply to {function}: {} bytes, expected {} (byte count {count})",
            pdu.len(),
            expected + 2
        )));
    }
    Ok(body)
}

/// Checks a write echo `function | address | second` (value or quantity).
fn check_echo(function: Function, pdu: &[u8], address: u16, second: u16, what: &str) -> Result<Response, PduError> {
    if pdu.len() != 5 {
        return Err(PduError::Invalid(format!("reply to {function}: {} bytes, expected 5 ({})", pdu.len(), hex(pdu))));
    }
    let (got_address, got_second) = (u16_at(pdu, 1), u16_at(pdu, 3));
    if got_address != Some(address) {
        return Err(PduError::Invalid(format!(
            "reply to {function} echoes address {}, expected {address}",
            got_address.unwrap_or_default()
        )));
    }
    if got_second != Some(second) {
        return Err(PduError::Invalid(format!(
            "reply to {function} echoes {what} 0x{:04X}, expected 0x{second:04X}",
            got_second.unwrap_or_default()
        )));
    }
    Ok(Response::Written)
}

// ---------------------------------------------------------------------------------------------------------
// Server side

/// The normal response PDU a server sends for `request` (simulator side).
///
/// `response` must fit the request: [`Response::Bits`] with exactly `quantity` bits for FC 1 / 2,
/// [`Response::Registers`] with exactly `quantity` registers for FC 3 / 4, [`Response::Written`] for writes
/// (the echo is built from the request). A response that does not fit (a bug in the server) is answered
/// with exception 04 server device failure rather than a malformed frame.
pub fn encode_response(request: &Request, response: &Response) -> Vec<u8> {
    let function = request.function();
    let mut out = Vec::with_capacity(8);
    out.push(function.code());
    match (request, response) {
        (Request::ReadCoils { quantity, .. } | Request::ReadDiscreteInputs { quantity, .. }, Response::Bits(bits))
            if bits.len() == usize::from(*quantity) && *quantity <= MAX_READ_BITS =>
        {
            let packed = pack_bits(bits);
            out.push(u8::try_from(packed.len()).unwrap_or(u8::MAX));
            out.extend_from_slice(&packed);
        }
        (
            Request::ReadHoldingRegisters { quantity, .. } | Request::ReadInputRegisters { quantity, .. },
            Response::Registers(regs),
        ) if regs.len() == usize::from(*quantity) && *quantity <= MAX_READ_REGISTERS => {
            out.push(u8::try_from(regs.len() * 2).unwrap_or(u8::MAX));
            for r in regs {
                push_u16(&mut out, *r);
            }
        }
        (Request::WriteSingleCoil { address, value }, Response::Written) => {
            push_u16(&mut out, *address);
            push_u16(&mut out, if *value { COIL_ON } else { COIL_OFF });
        }
        (Request::WriteSingleRegister { address, value }, Response::Written) => {
            push_u16(&mut out, *address);
            push_u16(&mut out, *value);
        }
        (Request::WriteMultipleCoils { address, values }, Response::Written) => {
            push_u16(&mut out, *address);
            push_u16(&mut out, u16::try_from(values.len()).unwrap_or(u16::MAX));
        }
        (Request::WriteMultipleRegisters { address, values }, Response::Written) => {
            push_u16(&mut out, *address);
            push_u16(&mut out, u16::try_from(values.len()).unwrap_or(u16::MAX));
        }
        _ => return encode_exception(function, Exception::ServerDeviceFailure),
    }
    out
}

/// An exception response PDU: `function | 0x80, exception` (spec 7).
pub fn encode_exception(function: Function, exception: Exception) -> Vec<u8> {
    vec![function.code() | EXCEPTION_FLAG, exception.code()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(r: &Request) -> Vec<u8> {
        r.encode().unwrap()
    }

    // Worked examples of the Modbus Application Protocol Specification V1.1b3, section 6. Each test checks
    // encode and decode of the request, and decode_response / encode_response of the response.

    #[test]
    fn spec_6_1_read_coils_20_to_38() {
        let req = Request::ReadCoils { address: 0x0013, quantity: 0x0013 };
        // FC 01 | starting address 0x0013 | quantity 0x0013 (19 coils)
        let wire = [0x01, 0x00, 0x13, 0x00, 0x13];
        assert_eq!(enc(&req), wire);
        assert_eq!(Request::decode(&wire).unwrap(), req);
        // FC 01 | byte count 3 | coils 27-20 = 0xCD | 35-28 = 0x6B | 38-36 = 0x05
        let reply = [0x01, 0x03, 0xCD, 0x6B, 0x05];
        let bits = match req.decode_response(&reply).unwrap() {
            Response::Bits(b) => b,
            other => panic!("{other:?}"),
        };
        assert_eq!(bits.len(), 19);
        // 0xCD = 1100 1101: coil 20 on, 21 off, 22 on, 23 on, 24 off, 25 off, 26 on, 27 on.
        assert_eq!(&bits[..8], &[true, false, true, true, false, false, true, true]);
        // 0x05 = 0000 0101: coils 36, 38 on, 37 off.
        assert_eq!(&bits[16..], &[true, false, true]);
        assert_eq!(encode_response(&req, &Response::Bits(bits)), reply);
    }

    #[test]
    fn spec_6_2_read_discrete_inputs_197_to_218() {
        let req = Request::ReadDiscreteInputs { address: 0x00C4, quantity: 0x0016 };
        let wire = [0x02, 0x00, 0xC4, 0x00, 0x16];
        assert_eq!(enc(&req), wire);
        assert_eq!(Request::decode(&wire).unwrap(), req);
        // FC 02 | byte count 3 | 0xAC 0xDB 0x35
        let reply = [0x02, 0x03, 0xAC, 0xDB, 0x35];
        let Response::Bits(bits) = req.decode_response(&reply).unwrap() else { panic!() };
        assert_eq!(bits.len(), 22);
        assert_eq!(&bits[16..], &[true, false, true, false, true, true]); // 0x35 = 11 0101
        assert_eq!(encode_response(&req, &Response::Bits(bits)), reply);
    }

    #[test]
    fn spec_6_3_read_holding_registers_108_to_110() {
        let req = Request::ReadHoldingRegisters { address: 0x006B, quantity: 0x0003 };
        // FC 03 | starting address 0x006B | quantity 3
        let wire = [0x03, 0x00, 0x6B, 0x00, 0x03];
        assert_eq!(enc(&req), wire);
        assert_eq!(Request::decode(&wire).unwrap(), req);
        // FC 03 | byte count 6 | 0x022B (555) | 0x0000 | 0x0064 (100)
        let reply = [0x03, 0x06, 0x02, 0x2B, 0x00, 0x00, 0x00, 0x64];
        let resp = Response::Registers(vec![555, 0, 100]);
        assert_eq!(req.decode_response(&reply).unwrap(), resp);
        assert_eq!(encode_response(&req, &resp), reply);
    }

    #[test]
    fn spec_6_4_read_input_register_9() {
        let req = Request::ReadInputRegisters { address: 0x0008, quantity: 0x0001 };
        let wire = [0x04, 0x00, 0x08, 0x00, 0x01];
        assert_eq!(enc(&req), wire);
        assert_eq!(Request::decode(&wire).unwrap(), req);
        let reply = [0x04, 0x02, 0x00, 0x0A];
        let resp = Response::Registers(vec![10]);
        assert_eq!(req.decode_response(&reply).unwrap(), resp);
        assert_eq!(encode_response(&req, &resp), reply);
    }

    #[test]
    fn spec_6_5_write_single_coil_173_on() {
        let req = Request::WriteSingleCoil { address: 0x00AC, value: true };
        let wire = [0x05, 0x00, 0xAC, 0xFF, 0x00];
        assert_eq!(enc(&req), wire);
        assert_eq!(Request::decode(&wire).unwrap(), req);
        // The normal response is an echo of the request.
        assert_eq!(req.decode_response(&wire).unwrap(), Response::Written);
        assert_eq!(encode_response(&req, &Response::Written), wire);
        let off = Request::WriteSingleCoil { address: 0x00AC, value: false };
        assert_eq!(enc(&off), [0x05, 0x00, 0xAC, 0x00, 0x00]);
        // An echo with the other value is not our answer.
        assert!(matches!(off.decode_response(&wire), Err(PduError::Invalid(_))));
    }

    #[test]
    fn spec_6_6_write_single_register_2() {
        let req = Request::WriteSingleRegister { address: 0x0001, value: 0x0003 };
        let wire = [0x06, 0x00, 0x01, 0x00, 0x03];
        assert_eq!(enc(&req), wire);
        assert_eq!(Request::decode(&wire).unwrap(), req);
        assert_eq!(req.decode_response(&wire).unwrap(), Response::Written);
        assert_eq!(encode_response(&req, &Response::Written), wire);
    }

    #[test]
    fn spec_6_11_write_multiple_coils_20_to_29() {
        // Coils 27-20: 1100 1101 = 0xCD, coils 29-28: 01 = 0x01
        let values = vec![true, false, true, true, false, false, true, true, true, false];
        let req = Request::WriteMultipleCoils { address: 0x0013, values };
        // FC 0F | address 0x0013 | quantity 0x000A | byte count 2 | 0xCD 0x01
        let wire = [0x0F, 0x00, 0x13, 0x00, 0x0A, 0x02, 0xCD, 0x01];
        assert_eq!(enc(&req), wire);
        assert_eq!(Request::decode(&wire).unwrap(), req);
        let reply = [0x0F, 0x00, 0x13, 0x00, 0x0A];
        assert_eq!(req.decode_response(&reply).unwrap(), Response::Written);
        assert_eq!(encode_response(&req, &Response::Written), reply);
    }

    #[test]
    fn spec_6_12_write_multiple_registers_2_and_3() {
        let req = Request::WriteMultipleRegisters { address: 0x0001, values: vec![0x000A, 0x0102] };
        // FC 10 | address 0x0001 | quantity 2 | byte count 4 | 0x000A 0x0102
        let wire = [0x10, 0x00, 0x01, 0x00, 0x02, 0x04, 0x00, 0x0A, 0x01, 0x02];
        assert_eq!(enc(&req), wire);
        assert_eq!(Request::decode(&wire).unwrap(), req);
        let reply = [0x10, 0x00, 0x01, 0x00, 0x02];
        assert_eq!(req.decode_response(&reply).unwrap(), Response::Written);
        assert_eq!(encode_response(&req, &Response::Written), reply);
    }

    #[test]
    fn spec_7_exception_reply_becomes_typed_error() {
        // Spec 7 example: read coils refused with 02. Here read holding registers: 0x83 0x02.
        let req = Request::ReadHoldingRegisters { address: 0x006B, quantity: 3 };
        let err = req.decode_response(&[0x83, 0x02]).unwrap_err();
        assert_eq!(
            err,
            PduError::Exception { function: Function::ReadHoldingRegisters, exception: Exception::IllegalDataAddress }
        );
        assert_eq!(
            err.to_string(),
            "meter replied with exception 02 illegal data address to function 03 read holding registers"
        );
        assert_eq!(encode_exception(Function::ReadHoldingRegisters, Exception::IllegalDataAddress), [0x83, 0x02]);
        // Wrong length of an exception PDU.
        assert!(matches!(req.decode_response(&[0x83, 0x02, 0x00]), Err(PduError::Invalid(_))));
        assert!(matches!(req.decode_response(&[0x83]), Err(PduError::Invalid(_))));
        // An exception for another function is not ours.
        assert!(matches!(req.decode_response(&[0x84, 0x02]), Err(PduError::Invalid(_))));
    }

    #[test]
    fn code_points_round_trip_and_display() {
        for code in 0..=u8::MAX {
            assert_eq!(u8::from(Function::from(code)), code);
            assert_eq!(u8::from(Exception::from(code)), code);
        }
        assert_eq!(Function::from(0x10), Function::WriteMultipleRegisters);
        assert_eq!(Function::from(0x2B), Function::Unknown(0x2B));
        assert_eq!(Exception::from(0x0B), Exception::GatewayTargetFailedToRespond);
        assert_eq!(Exception::from(0x07), Exception::Unknown(0x07));
        assert_eq!(Function::ReadHoldingRegisters.to_string(), "03 read holding registers");
        assert_eq!(Function::WriteMultipleCoils.to_string(), "0F write multiple coils");
        assert_eq!(Function::Unknown(0x2B).to_string(), "2B unknown function");
        assert_eq!(Exception::IllegalDataAddress.to_string(), "02 illegal data address");
        assert_eq!(Exception::GatewayPathUnavailable.to_string(), "0A gateway path unavailable");
        assert_eq!(Exception::Unknown(0x42).to_string(), "42 unknown exception");
    }

    #[test]
    fn quantity_limits_of_the_spec() {
        let ok = |r: Request| assert!(r.encode().is_ok(), "{r:?}");
        let bad = |r: Request| assert!(matches!(r.encode(), Err(PduError::BadRequest(_))), "{r:?}");
        ok(Request::ReadCoils { address: 0, quantity: 2000 });
        bad(Request::ReadCoils { address: 0, quantity: 2001 });
        bad(Request::ReadDiscreteInputs { address: 0, quantity: 0 });
        ok(Request::ReadDiscreteInputs { address: 0, quantity: 1 });
        ok(Request::ReadHoldingRegisters { address: 0, quantity: 125 });
        bad(Request::ReadHoldingRegisters { address: 0, quantity: 126 });
        bad(Request::ReadInputRegisters { address: 0, quantity: 0 });
        ok(Request::WriteMultipleCoils { address: 0, values: vec![true; 1968] });
        bad(Request::WriteMultipleCoils { address: 0, values: vec![true; 1969] });
        bad(Request::WriteMultipleCoils { address: 0, values: vec![] });
        ok(Request::WriteMultipleRegisters { address: 0, values: vec![1; 123] });
        bad(Request::WriteMultipleRegisters { address: 0, values: vec![1; 124] });
        bad(Request::WriteMultipleRegisters { address: 0, values: vec![] });
        // The table ends at 65535.
        ok(Request::ReadHoldingRegisters { address: 0xFFFF, quantity: 1 });
        bad(Request::ReadHoldingRegisters { address: 0xFFFF, quantity: 2 });
        // The largest request PDU fits the serial ADU.
        let big = enc(&Request::WriteMultipleRegisters { address: 0, values: vec![1; 123] });
        assert!(big.len() <= MAX_PDU_LEN);
    }

    #[test]
    fn server_decode_errors_map_to_spec_exceptions() {
        let exc = |pdu: &[u8]| Request::decode(pdu).unwrap_err().server_exception();
        assert_eq!(exc(&[]), None);
        assert_eq!(exc(&[0x2B, 0x0E, 0x01, 0x00]), Some(Exception::IllegalFunction));
        assert_eq!(exc(&[0x03, 0x00, 0x00, 0x00, 0x7E]), Some(Exception::IllegalDataValue)); // 126 registers
        assert_eq!(exc(&[0x03, 0xFF, 0xFF, 0x00, 0x02]), Some(Exception::IllegalDataAddress));
        assert_eq!(exc(&[0x03, 0x00, 0x00, 0x00]), Some(Exception::IllegalDataValue)); // truncated
        assert_eq!(exc(&[0x05, 0x00, 0x01, 0x12, 0x34]), Some(Exception::IllegalDataValue)); // coil value
                                                                                             // Byte count disagrees with quantity.
        assert_eq!(exc(&[0x10, 0x00, 0x01, 0x00, 0x02, 0x02, 0x00, 0x0A]), Some(Exception::IllegalDataValue));
        // Data shorter than the byte count.
        assert_eq!(exc(&[0x10, 0x00, 0x01, 0x00, 0x02, 0x04, 0x00, 0x0A]), Some(Exception::IllegalDataValue));
    }

    #[test]
    fn mismatched_replies_name_what_was_received() {
        let req = Request::ReadHoldingRegisters { address: 0x006B, quantity: 3 };
        let invalid = |pdu: &[u8]| match req.decode_response(pdu) {
            Err(PduError::Invalid(msg)) => msg,
            other => panic!("{pdu:02X?}: {other:?}"),
        };
        // Another function (a late reply to an input register read).
        let msg = invalid(&[0x04, 0x06, 0, 0, 0, 0, 0, 0]);
        assert!(msg.contains("04 read input registers") && msg.contains("expected 03"), "{msg}");
        // Byte count for 2 registers instead of 3: the stale-reply case tokio-modbus lets through.
        let msg = invalid(&[0x03, 0x04, 0x02, 0x2B, 0x00, 0x00]);
        assert!(msg.contains("byte count 4, expected 6"), "{msg}");
        // Byte count right, PDU short or long.
        let msg = invalid(&[0x03, 0x06, 0x02, 0x2B, 0x00, 0x00, 0x00]);
        assert!(msg.contains("7 bytes, expected 8"), "{msg}");
        invalid(&[0x03, 0x06, 0x02, 0x2B, 0x00, 0x00, 0x00, 0x64, 0x00]);
        invalid(&[0x03]);
        invalid(&[]);
        // Write echoes with another address or quantity.
        let w = Request::WriteMultipleRegisters { address: 1, values: vec![10, 258] };
        assert!(
            matches!(w.decode_response(&[0x10, 0x00, 0x02, 0x00, 0x02]), Err(PduError::Invalid(m)) if m.contains("address 2, expected 1"))
        );
        assert!(
            matches!(w.decode_response(&[0x10, 0x00, 0x01, 0x00, 0x03]), Err(PduError::Invalid(m)) if m.contains("quantity 0x0003"))
        );
        assert!(matches!(w.decode_response(&[0x10, 0x00, 0x01, 0x00]), Err(PduError::Invalid(_))));
        let s = Request::WriteSingleRegister { address: 1, value: 3 };
        assert!(matches!(s.decode_response(&[0x06, 0x00, 0x01, 0x00, 0x04]), Err(PduError::Invalid(_))));
        // Bits: byte count must follow from the quantity.
        let c = Request::ReadCoils { address: 0, quantity: 9 };
        assert!(matches!(c.decode_response(&[0x01, 0x01, 0xFF]), Err(PduError::Invalid(_))));
        assert_eq!(c.decode_response(&[0x01, 0x02, 0xFF, 0x01]).unwrap(), Response::Bits(vec![true; 9]));
    }

    #[test]
    fn encode_response_that_does_not_fit_the_request_is_device_failure() {
        let req = Request::ReadHoldingRegisters { address: 0, quantity: 2 };
        assert_eq!(encode_response(&req, &Response::Registers(vec![1])), [0x83, 0x04]);
        assert_eq!(encode_response(&req, &Response::Bits(vec![true, true])), [0x83, 0x04]);
        assert_eq!(encode_response(&req, &Response::Written), [0x83, 0x04]);
        let w = Request::WriteSingleRegister { address: 0, value: 1 };
        assert_eq!(encode_response(&w, &Response::Registers(vec![1])), [0x86, 0x04]);
    }

    fn any_request() -> impl Strategy<Value = Request> {
        prop_oneof![
            (any::<u16>(), 1..=MAX_READ_BITS).prop_map(|(a, q)| Request::ReadCoils { address: a, quantity: q }),
            (any::<u16>(), 1..=MAX_READ_BITS)
                .prop_map(|(a, q)| Request::ReadDiscreteInputs { address: a, quantity: q }),
            (any::<u16>(), 1..=MAX_READ_REGISTERS)
                .prop_map(|(a, q)| { Request::ReadHoldingRegisters { address: a, quantity: q } }),
            (any::<u16>(), 1..=MAX_READ_REGISTERS)
                .prop_map(|(a, q)| Request::ReadInputRegisters { address: a, quantity: q }),
            (any::<u16>(), any::<bool>()).prop_map(|(a, v)| Request::WriteSingleCoil { address: a, value: v }),
            (any::<u16>(), any::<u16>()).prop_map(|(a, v)| Request::WriteSingleRegister { address: a, value: v }),
            (any::<u16>(), proptest::collection::vec(any::<bool>(), 1..=usize::from(MAX_WRITE_BITS)))
                .prop_map(|(a, values)| Request::WriteMultipleCoils { address: a, values }),
            (any::<u16>(), proptest::collection::vec(any::<u16>(), 1..=usize::from(MAX_WRITE_REGISTERS)))
                .prop_map(|(a, values)| Request::WriteMultipleRegisters { address: a, values }),
        ]
    }

    proptest! {
        #[test]
        fn request_encode_decode_round_trip(req in any_request()) {
            match req.encode() {
                Ok(pdu) => {
                    prop_assert!(pdu.len() <= MAX_PDU_LEN);
                    prop_assert_eq!(Request::decode(&pdu).unwrap(), req);
                }
                // Only ranges running past 65535 are refused here.
                Err(PduError::BadRequest(msg)) => prop_assert!(msg.contains("past the end")),
                Err(e) => prop_assert!(false, "{e}"),
            }
        }

        #[test]
        fn server_response_is_accepted_by_the_master(req in any_request(), seed in any::<u64>()) {
            prop_assume!(req.validate().is_ok());
            let mut x = seed | 1;
            let mut next = || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x };
            let resp = match &req {
                Request::ReadCoils { quantity, .. } | Request::ReadDiscreteInputs { quantity, .. } =>
                    Response::Bits((0..*quantity).map(|_| next() & 1 == 1).collect()),
                Request::ReadHoldingRegisters { quantity, .. } | Request::ReadInputRegisters { quantity, .. } =>
                    Response::Registers((0..*quantity).map(|_| next() as u16).collect()),
                _ => Response::Written,
            };
            let pdu = encode_response(&req, &resp);
            prop_assert!(pdu.len() <= MAX_PDU_LEN);
            prop_assert_eq!(req.decode_response(&pdu).unwrap(), resp);
        }

        #[test]
        fn any_bytes_never_panic_request_decode(pdu in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(req) = Request::decode(&pdu) {
                // Whatever decodes re-encodes to the same bytes (padding bits of coils aside).
                let again = req.encode().unwrap();
                prop_assert_eq!(again.len(), pdu.len());
            }
        }

        #[test]
        fn any_bytes_never_panic_decode_response(req in any_request(), pdu in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = req.decode_response(&pdu);
        }

        #[test]
        fn truncated_or_extended_replies_are_rejected(req in any_request(), seed in any::<u8>()) {
            prop_assume!(req.validate().is_ok());
            let resp = match &req {
                Request::ReadCoils { quantity, .. } | Request::ReadDiscreteInputs { quantity, .. } =>
                    Response::Bits(vec![true; usize::from(*quantity)]),
                Request::ReadHoldingRegisters { quantity, .. } | Request::ReadInputRegisters { quantity, .. } =>
                    Response::Registers(vec![0xBEEF; usize::from(*quantity)]),
                _ => Response::Written,
            };
            let pdu = encode_response(&req, &resp);
            let cut = usize::from(seed) % pdu.len();
            prop_assert!(req.decode_response(&pdu[..cut]).is_err());
            let mut longer = pdu.clone();
            longer.push(seed);
            prop_assert!(req.decode_response(&longer).is_err());
        }
    }
}

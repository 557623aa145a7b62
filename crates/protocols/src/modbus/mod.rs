//! Modbus application protocol (Modbus Application Protocol Specification V1.1b3).
//!
//! Why our own codec instead of `tokio-modbus`: its RTU codec is private, it has no timeouts, and it takes a
//! late reply as the answer to the next request (see `shared/protocols/modbus.md`). Framing and reply
//! matching live in `ami_link::modbus`; here we own PDUs, exceptions, value decoding and block planning.
//! [`Master`] sends requests through an `ami_link::BusHandle`, so every Modbus exchange goes through the one
//! owner of its line.

mod describe;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod harness;
mod master;
mod pdu;
pub mod plan;
pub mod value;

pub use describe::{describe_frame, DescribeError, Direction};
pub use master::{Framing, Master, MasterError};
pub use pdu::{
    encode_exception, encode_response, Exception, Function, PduError, Request, Response, MAX_PDU_LEN, MAX_READ_BITS,
    MAX_READ_REGISTERS, MAX_WRITE_BITS, MAX_WRITE_REGISTERS,
};

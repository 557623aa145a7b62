//! Protocol meaning for ami: one module per protocol, each an application codec plus the request logic
//! that turns a meter question into frames for the link layer's `Bus`.
//!
//! No sockets and no clock here: bytes go through `ami_link::BusHandle`, time is the bus's business.
//! Panic contract: no reply from a meter panics any decoder; every failure is a typed error.

mod civil;
pub mod dlms;
pub mod mbus;
pub mod mercury;
pub mod modbus;
#[cfg(test)]
mod test_rng;

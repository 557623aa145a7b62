//! Simulated meters for ami, driven by the same device profiles as the collector, with fault injection.
//!
//! This crate owns the other side of the wire: [`SimMeter`] serves one profile's values from a
//! [`RegisterMap`] (undefined addresses answer exception 02, like real meters), with values that evolve
//! plausibly over an injected clock (energy counters only grow, voltage and power wander around nominal);
//! [`Simulator`] holds the meters of one line by unit address and is shared by every server;
//! [`serve_tcp`], [`serve_serial`] and [`spawn_tcp`] speak Modbus TCP (MBAP) or RTU over a TCP socket, a
//! serial port or a pty, with seeded fault injection ([`SimOptions`]: reply delay, dropped and corrupted
//! replies) and counters ([`SimStats`]).
//!
//! It never reads a real meter and never decides anything for the collector; it is a test peer, used by
//! `amid simulate`, the integration tests, the benchmarks and `amid demo`.
//!
//! Panic contract: no byte sequence from a client panics anything here; bad frames are resynchronised
//! (RTU) or close the connection (MBAP), bad requests get Modbus exceptions.

pub mod dlms;
mod drive;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod harness;
pub mod mbus;
pub mod mercury;
mod meter;
mod model;
mod server;

pub use meter::{RegisterMap, SimMeter};
pub use server::{
    serve, serve_serial, serve_stream, serve_tcp, spawn_tcp, Session, SessionError, SimFraming, SimOptions, SimStats,
    Simulator,
};

use ami_protocols::modbus::Exception;

/// Why a simulator operation was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimError {
    /// The profile has no value of that name.
    #[error("the profile has no value named {0:?}")]
    UnknownValue(String),
    /// The profile has no control of that name.
    #[error("the profile has no control named {0:?}")]
    UnknownControl(String),
    /// The simulator has no meter at that unit address.
    #[error("no simulated meter at unit {0}")]
    UnknownUnit(u8),
    /// A value must be a finite number.
    #[error("value {name}: {value} is not a finite number")]
    NotFinite {
        /// Value name.
        name: String,
        /// The rejected number.
        value: f64,
    },
    /// The meter refused the operation as it would refuse a master's request.
    #[error("the meter refused with exception {0}")]
    Refused(Exception),
}

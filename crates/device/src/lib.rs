//! Device profiles: XML meter models (`devices/*.xml`) parsed into a typed [`Profile`], validated with
//! `file:line:col: message` errors, and the [`Reading`] data model every protocol ends in.
//!
//! A profile never names a port or an address: that is site config. Parsing never panics on any input.

mod model;
mod obis;
mod reading;

pub use model::{
    Control, ControlSource, LineDefaults, ModbusControl, ModbusOptions, ModbusValue, Profile, Protocol,
    ValueDef, ValueKind, ValueSource,
};
pub use obis::{Obis, ObisError};
pub use reading::{Quality, Reading, Value};

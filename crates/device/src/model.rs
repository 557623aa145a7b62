//! The typed profile model.

use std::path::PathBuf;

use ami_protocols::modbus::plan::Table;
use ami_protocols::modbus::value::Encoding;

use crate::Obis;

/// Which protocol a profile speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Modbus RTU / TCP (`protocol="modbus"`).
    Modbus,
    /// Wired M-Bus, EN 13757-2/-3 (`protocol="mbus"`); the values are in
    /// [`MbusProfile`](crate::mbus::MbusProfile).
    Mbus,
    /// DLMS/COSEM, IEC 62056 (`protocol="dlms"`); the values, load profiles and the disconnect control
    /// are in [`DlmsProfile`](crate::dlms::DlmsProfile).
    Dlms,
    /// Incotex Mercury 230/231/234/236 (`protocol="mercury"`); the values and the power profile are in
    /// [`MercuryProfile`](crate::mercury::MercuryProfile).
    Mercury,
}

/// Default line settings for the meter model (site config may override them).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LineDefaults {
    /// Baud rate, e.g. 9600.
    pub baud: Option<u32>,
    /// `none`, `even` or `odd`.
    pub parity: Option<String>,
    /// Data bits.
    pub data_bits: Option<u8>,
    /// Stop bits.
    pub stop_bits: Option<u8>,
    /// Default unit / slave address of a factory-new meter.
    pub address: Option<u8>,
    /// Per-request timeout the meter needs, in milliseconds.
    pub timeout_ms: Option<u64>,
}

/// Modbus-wide options of a profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModbusOptions {
    /// Largest number of registers (or coils) read in one request. Default 100 (spec maximum 125).
    pub max_block: u16,
    /// Largest gap of unused registers merged into one block. Default 0 (only contiguous registers merge);
    /// some meters refuse reads that touch undefined registers.
    pub max_gap: u16,
}

impl Default for ModbusOptions {
    fn default() -> Self {
        Self { max_block: 100, max_gap: 0 }
    }
}

/// How a value behaves over time; decides the store's overflow policy and the simulator's generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueKind {
    /// An instantaneous measurement (voltage, power): may be thinned when the store is full.
    Instantaneous,
    /// A cumulative register (energy, volume) that only grows: never dropped silently.
    Counter,
    /// A setting or identity value (serial number, ratio).
    Static,
}

/// Modbus address and decoding of one value.
#[derive(Debug, Clone, PartialEq)]
pub struct ModbusValue {
    /// Which table (coil, discrete, holding, input).
    pub table: Table,
    /// 0-based register (or coil) address.
    pub register: u16,
    /// Type, word/byte order, scale, offset. Coils and discrete inputs use `U16` with value 0/1.
    pub encoding: Encoding,
}

/// Where a value comes from, per protocol.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueSource {
    /// A Modbus register or bit.
    Modbus(ModbusValue),
}

/// One value a profile reads.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueDef {
    /// Unique name within the profile, `[a-z0-9_]+`, e.g. `energy_import_total`.
    pub name: String,
    /// OBIS code.
    pub obis: Obis,
    /// Unit symbol from the design map (`Wh`, `W`, `V`, …) or empty for dimensionless.
    pub unit: String,
    /// Kind of value.
    pub kind: ValueKind,
    /// Optional human description.
    pub description: Option<String>,
    /// Protocol-specific address and decoding.
    pub source: ValueSource,
    /// 1-based line in the profile file where the value is defined (for later diagnostics).
    pub line: u32,
}

/// Modbus address of a writable control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModbusControl {
    /// A coil written with FC 5: `on` = true.
    Coil {
        /// 0-based coil address.
        register: u16,
    },
    /// A holding register written with FC 6, with the values meaning on and off.
    Register {
        /// 0-based register address.
        register: u16,
        /// Value written for "on".
        on: u16,
        /// Value written for "off".
        off: u16,
    },
}

/// Where a control writes, per protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlSource {
    /// A Modbus coil or register.
    Modbus(ModbusControl),
}

/// A writable control (e.g. a relay).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    /// Unique name, e.g. `relay`.
    pub name: String,
    /// Optional description.
    pub description: Option<String>,
    /// Protocol-specific target.
    pub source: ControlSource,
}

/// A parsed, validated meter profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Profile id, e.g. `eastron-sdm630` (defaults to the file stem).
    pub id: String,
    /// File the profile came from, if any.
    pub path: Option<PathBuf>,
    /// Manufacturer name.
    pub manufacturer: String,
    /// Model name.
    pub model: String,
    /// The manufacturer document (and version) the register map comes from.
    pub document: Option<String>,
    /// Protocol.
    pub protocol: Protocol,
    /// Default line settings.
    pub line: LineDefaults,
    /// Modbus options (present for Modbus profiles).
    pub modbus: ModbusOptions,
    /// Values in file order.
    pub values: Vec<ValueDef>,
    /// Writable controls.
    pub controls: Vec<Control>,
}

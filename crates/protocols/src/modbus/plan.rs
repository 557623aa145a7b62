//! Block planning: read many values in as few requests as the profile allows.

/// The four Modbus data tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Coils, read with FC 1, written with FC 5 / 15 (profile name `coil`).
    Coil,
    /// Discrete inputs, FC 2 (profile name `discrete`).
    Discrete,
    /// Holding registers, FC 3, written with FC 6 / 16 (profile name `holding`).
    Holding,
    /// Input registers, FC 4 (profile name `input`).
    Input,
}

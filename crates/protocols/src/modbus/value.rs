//! Value types carried in registers: u16 … f64 with word and byte order, scale and offset.

use std::fmt;
use std::str::FromStr;

/// The encoding of a value in consecutive registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// unsigned 16-bit, 1 register
    U16,
    /// signed 16-bit, 1 register
    I16,
    /// unsigned 32-bit, 2 registers
    U32,
    /// signed 32-bit, 2 registers
    I32,
    /// unsigned 64-bit, 4 registers
    U64,
    /// signed 64-bit, 4 registers
    I64,
    /// IEEE 754 single, 2 registers
    F32,
    /// IEEE 754 double, 4 registers
    F64,
}

impl ValueType {
    /// Every type, in the order error messages list them.
    pub const ALL: [ValueType; 8] = [
        ValueType::U16,
        ValueType::I16,
        ValueType::U32,
        ValueType::I32,
        ValueType::U64,
        ValueType::I64,
        ValueType::F32,
        ValueType::F64,
    ];

    /// Registers the value occupies.
    pub fn registers(self) -> u16 {
        match self {
            ValueType::U16 | ValueType::I16 => 1,
            ValueType::U32 | ValueType::I32 | ValueType::F32 => 2,
            ValueType::U64 | ValueType::I64 | ValueType::F64 => 4,
        }
    }

    /// The name used in profiles (`u16`, …, `f64`).
    pub fn name(self) -> &'static str {
        match self {
            ValueType::U16 => "u16",
            ValueType::I16 => "i16",
            ValueType::U32 => "u32",
            ValueType::I32 => "i32",
            ValueType::U64 => "u64",
            ValueType::I64 => "i64",
            ValueType::F32 => "f32",
            ValueType::F64 => "f64",
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ValueType {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        ValueType::ALL.into_iter().find(|t| t.name() == s).ok_or(())
    }
}

/// Order of the 16-bit words of a multi-register value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WordOrder {
    /// Most significant word first (`high-first`, the Modbus convention and the default).
    #[default]
    HighFirst,
    /// Least significant word first (`low-first`, "word swapped").
    LowFirst,
}

/// Order of the two bytes inside each register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ByteOrder {
    /// Most significant byte first (`big`, the Modbus convention and the default).
    #[default]
    Big,
    /// Least significant byte first (`little`, "byte swapped").
    Little,
}

/// How to turn registers into a number: type, orders, then `value * scale + offset`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Encoding {
    /// Register type.
    pub ty: ValueType,
    /// Word order.
    pub word_order: WordOrder,
    /// Byte order.
    pub byte_order: ByteOrder,
    /// Multiplier applied after decoding. Default 1.
    pub scale: f64,
    /// Added after scaling. Default 0.
    pub offset: f64,
}

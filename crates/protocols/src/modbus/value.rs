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

impl WordOrder {
    /// Every word order, in the order error messages list them.
    pub const ALL: [WordOrder; 2] = [WordOrder::HighFirst, WordOrder::LowFirst];

    /// The name used in profiles (`high-first`, `low-first`).
    pub fn name(self) -> &'static str {
        match self {
            WordOrder::HighFirst => "high-first",
            WordOrder::LowFirst => "low-first",
        }
    }
}

impl fmt::Display for WordOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for WordOrder {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        WordOrder::ALL.into_iter().find(|t| t.name() == s).ok_or(())
    }
}

impl ByteOrder {
    /// Every byte order, in the order error messages list them.
    pub const ALL: [ByteOrder; 2] = [ByteOrder::Big, ByteOrder::Little];

    /// The name used in profiles (`big`, `little`).
    pub fn name(self) -> &'static str {
        match self {
            ByteOrder::Big => "big",
            ByteOrder::Little => "little",
        }
    }
}

impl fmt::Display for ByteOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ByteOrder {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        ByteOrder::ALL.into_iter().find(|t| t.name() == s).ok_or(())
    }
}

/// Why registers do not make a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The slice does not hold exactly the registers the type needs.
    #[error("{ty} needs {expected} register(s), got {got}")]
    WrongLength {
        /// The value type.
        ty: ValueType,
        /// Registers the type needs.
        expected: u16,
        /// Registers given.
        got: usize,
    },
    /// A float register pair/quad holds NaN or an infinity (meters use NaN for "not available"); also an
    /// infinite result of scaling. Readings carry finite numbers only.
    #[error("{ty} value is not a finite number (registers {registers})")]
    NotFinite {
        /// The value type.
        ty: ValueType,
        /// The registers in hex, for the log.
        registers: String,
    },
}

impl Default for Encoding {
    /// `u16`, high word first, big-endian bytes, scale 1, offset 0.
    fn default() -> Self {
        Encoding::new(ValueType::U16)
    }
}

impl Encoding {
    /// `ty` with the Modbus conventions: high word first, big-endian bytes, scale 1, offset 0.
    pub fn new(ty: ValueType) -> Self {
        Self { ty, word_order: WordOrder::HighFirst, byte_order: ByteOrder::Big, scale: 1.0, offset: 0.0 }
    }

    /// Registers the value occupies (`self.ty.registers()`).
    pub fn registers(&self) -> u16 {
        self.ty.registers()
    }

    /// The raw integer of the registers: byte order applied within each register, then word order, then
    /// the words joined most significant first. `None` unless `regs.len() == self.ty.registers()`.
    fn raw(&self, regs: &[u16]) -> Option<u64> {
        if regs.len() != usize::from(self.ty.registers()) {
            return None;
        }
        let word = |r: &u16| match self.byte_order {
            ByteOrder::Big => *r,
            ByteOrder::Little => r.swap_bytes(),
        };
        let join = |acc: u64, w: u16| (acc << 16) | u64::from(w);
        Some(match self.word_order {
            WordOrder::HighFirst => regs.iter().map(word).fold(0, join),
            WordOrder::LowFirst => regs.iter().rev().map(word).fold(0, join),
        })
    }

    /// Decodes exactly `ty.registers()` registers into a number: byte order within each register, then
    /// word order, then the type, then `value * scale + offset`.
    pub fn decode(&self, regs: &[u16]) -> Result<f64, ValueError> {
        let raw = self.raw(regs).ok_or(ValueError::WrongLength {
            ty: self.ty,
            expected: self.ty.registers(),
            got: regs.len(),
        })?;
        // `raw` holds exactly `registers() * 16` significant bits, so the narrowing casts below keep every
        // bit of the value (the `as` casts reinterpret, which is what the type means).
        #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap, clippy::cast_precision_loss)]
        let value = match self.ty {
            ValueType::U16 => raw as u16 as f64,
            ValueType::I16 => raw as u16 as i16 as f64,
            ValueType::U32 => raw as u32 as f64,
            ValueType::I32 => raw as u32 as i32 as f64,
            ValueType::U64 => raw as f64,
            ValueType::I64 => raw as i64 as f64,
            ValueType::F32 => f64::from(f32::from_bits(raw as u32)),
            ValueType::F64 => f64::from_bits(raw),
        };
        let scaled = value * self.scale + self.offset;
        if !scaled.is_finite() {
            return Err(ValueError::NotFinite {
                ty: self.ty,
                registers: regs.iter().map(|r| format!("{r:04X}")).collect::<Vec<_>>().join(" "),
            });
        }
        Ok(scaled)
    }

    /// The registers that decode to `value` (inverse of [`Encoding::decode`], for the simulator):
    /// `(value - offset) / scale`, rounded to the nearest integer and saturated to the type's range for
    /// integer types (NaN becomes 0), then split into words in the configured word and byte order.
    pub fn encode(&self, value: f64) -> Vec<u16> {
        let raw = (value - self.offset) / self.scale;
        // Float-to-int `as` casts saturate and map NaN to 0: exactly the documented behaviour.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let bits: u64 = match self.ty {
            ValueType::U16 => u64::from(raw.round() as u16),
            ValueType::I16 => u64::from(raw.round() as i16 as u16),
            ValueType::U32 => u64::from(raw.round() as u32),
            ValueType::I32 => u64::from(raw.round() as i32 as u32),
            ValueType::U64 => raw.round() as u64,
            ValueType::I64 => raw.round() as i64 as u64,
            ValueType::F32 => u64::from((raw as f32).to_bits()),
            ValueType::F64 => raw.to_bits(),
        };
        let n = usize::from(self.ty.registers());
        // Most significant word first.
        #[allow(clippy::cast_possible_truncation)]
        let mut words: Vec<u16> = (0..n).rev().map(|i| (bits >> (16 * i)) as u16).collect();
        if self.word_order == WordOrder::LowFirst {
            words.reverse();
        }
        if self.byte_order == ByteOrder::Little {
            for w in &mut words {
                *w = w.swap_bytes();
            }
        }
        words
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(ty: ValueType) -> Encoding {
        Encoding::new(ty)
    }

    #[test]
    fn f32_high_first_big_endian() {
        // 230.5 = 0x43668000 (sign 0, exponent 134, mantissa 0x668000): Eastron SDM voltage layout.
        let e = enc(ValueType::F32);
        assert_eq!(e.decode(&[0x4366, 0x8000]).unwrap(), 230.5);
        assert_eq!(e.encode(230.5), vec![0x4366, 0x8000]);
    }

    #[test]
    fn f32_word_and_byte_swapped() {
        let low = Encoding { word_order: WordOrder::LowFirst, ..enc(ValueType::F32) };
        assert_eq!(low.decode(&[0x8000, 0x4366]).unwrap(), 230.5);
        let little = Encoding { byte_order: ByteOrder::Little, ..enc(ValueType::F32) };
        assert_eq!(little.decode(&[0x6643, 0x0080]).unwrap(), 230.5);
        // Both: the four bytes fully reversed ("little-endian float").
        let both = Encoding { word_order: WordOrder::LowFirst, byte_order: ByteOrder::Little, ..enc(ValueType::F32) };
        assert_eq!(both.decode(&[0x0080, 0x6643]).unwrap(), 230.5);
        assert_eq!(both.encode(230.5), vec![0x0080, 0x6643]);
    }

    #[test]
    fn u32_low_first() {
        // 0x0001_86A0 = 100000
        let e = Encoding { word_order: WordOrder::LowFirst, ..enc(ValueType::U32) };
        assert_eq!(e.decode(&[0x86A0, 0x0001]).unwrap(), 100_000.0);
        assert_eq!(enc(ValueType::U32).decode(&[0x0001, 0x86A0]).unwrap(), 100_000.0);
        assert_eq!(e.encode(100_000.0), vec![0x86A0, 0x0001]);
    }

    #[test]
    fn byte_swapped_u16_and_i32() {
        let e = Encoding { byte_order: ByteOrder::Little, ..enc(ValueType::U16) };
        assert_eq!(e.decode(&[0x3412]).unwrap(), f64::from(0x1234u16));
        let e = Encoding { byte_order: ByteOrder::Little, ..enc(ValueType::I32) };
        // -2 = 0xFFFF_FFFE; bytes swapped inside each word.
        assert_eq!(e.decode(&[0xFFFF, 0xFEFF]).unwrap(), -2.0);
    }

    #[test]
    fn i16_negative() {
        assert_eq!(enc(ValueType::I16).decode(&[0xFF85]).unwrap(), -123.0);
        assert_eq!(enc(ValueType::U16).decode(&[0xFF85]).unwrap(), 65413.0);
        assert_eq!(enc(ValueType::I16).encode(-123.0), vec![0xFF85]);
        assert_eq!(enc(ValueType::I32).decode(&[0xFFFF, 0xFF85]).unwrap(), -123.0);
    }

    #[test]
    fn u64_and_i64() {
        // 0x0000_0001_0000_0002 = 4294967298
        let regs = [0x0000, 0x0001, 0x0000, 0x0002];
        assert_eq!(enc(ValueType::U64).decode(&regs).unwrap(), 4_294_967_298.0);
        let low = Encoding { word_order: WordOrder::LowFirst, ..enc(ValueType::U64) };
        assert_eq!(low.decode(&[0x0002, 0x0000, 0x0001, 0x0000]).unwrap(), 4_294_967_298.0);
        assert_eq!(enc(ValueType::I64).decode(&[0xFFFF; 4]).unwrap(), -1.0);
        assert_eq!(enc(ValueType::U64).encode(4_294_967_298.0), regs.to_vec());
    }

    #[test]
    fn f64_vectors() {
        // 1.0 = 0x3FF0_0000_0000_0000; 230.5 = 0x406C_D000_0000_0000
        assert_eq!(enc(ValueType::F64).decode(&[0x3FF0, 0, 0, 0]).unwrap(), 1.0);
        assert_eq!(enc(ValueType::F64).decode(&[0x406C, 0xD000, 0, 0]).unwrap(), 230.5);
        assert_eq!(enc(ValueType::F64).encode(230.5), vec![0x406C, 0xD000, 0, 0]);
    }

    #[test]
    fn scale_and_offset() {
        // Energy in 0.01 kWh → Wh: raw 12345 * 10 = 123450 Wh.
        let e = Encoding { scale: 10.0, ..enc(ValueType::U32) };
        assert_eq!(e.decode(&[0, 12345]).unwrap(), 123_450.0);
        // Temperature in 0.1 degC with −40 offset: raw 653 → 25.3.
        let t = Encoding { scale: 0.1, offset: -40.0, ..enc(ValueType::U16) };
        assert!((t.decode(&[653]).unwrap() - 25.3).abs() < 1e-9);
        assert_eq!(t.encode(25.3), vec![653]);
    }

    #[test]
    fn encode_rounds_and_saturates_integers() {
        assert_eq!(enc(ValueType::U16).encode(-5.0), vec![0]);
        assert_eq!(enc(ValueType::U16).encode(1e9), vec![0xFFFF]);
        assert_eq!(enc(ValueType::I16).encode(-1e9), vec![0x8000]);
        assert_eq!(enc(ValueType::U16).encode(2.5), vec![3]);
        assert_eq!(enc(ValueType::U16).encode(f64::NAN), vec![0]);
        assert_eq!(enc(ValueType::U32).encode(1e300), vec![0xFFFF, 0xFFFF]);
    }

    #[test]
    fn wrong_register_count_and_non_finite_are_errors() {
        assert_eq!(
            enc(ValueType::F32).decode(&[0x4366]),
            Err(ValueError::WrongLength { ty: ValueType::F32, expected: 2, got: 1 })
        );
        assert!(enc(ValueType::U16).decode(&[]).is_err());
        assert!(enc(ValueType::F64).decode(&[0; 5]).is_err());
        // 0x7FC00000 is a quiet NaN (SDM meters answer it for values they do not have).
        let err = enc(ValueType::F32).decode(&[0x7FC0, 0x0000]).unwrap_err();
        assert_eq!(err.to_string(), "f32 value is not a finite number (registers 7FC0 0000)");
        assert!(enc(ValueType::F32).decode(&[0x7F80, 0x0000]).is_err()); // +inf
    }

    #[test]
    fn names_parse_and_display() {
        for o in WordOrder::ALL {
            assert_eq!(o.name().parse::<WordOrder>(), Ok(o));
            assert_eq!(o.to_string(), o.name());
        }
        for o in ByteOrder::ALL {
            assert_eq!(o.name().parse::<ByteOrder>(), Ok(o));
        }
        for t in ValueType::ALL {
            assert_eq!(t.name().parse::<ValueType>(), Ok(t));
        }
        assert_eq!("low-first".parse(), Ok(WordOrder::LowFirst));
        assert_eq!("little".parse(), Ok(ByteOrder::Little));
        assert!("swapped".parse::<WordOrder>().is_err());
        assert!("Big".parse::<ByteOrder>().is_err());
        let d = Encoding::default();
        assert_eq!((d.word_order, d.byte_order, d.scale, d.offset), (WordOrder::HighFirst, ByteOrder::Big, 1.0, 0.0));
    }

    fn any_encoding() -> impl Strategy<Value = Encoding> {
        (0..8usize, any::<bool>(), any::<bool>()).prop_map(|(t, w, b)| Encoding {
            ty: ValueType::ALL[t],
            word_order: if w { WordOrder::LowFirst } else { WordOrder::HighFirst },
            byte_order: if b { ByteOrder::Little } else { ByteOrder::Big },
            scale: 1.0,
            offset: 0.0,
        })
    }

    proptest! {
        #[test]
        fn integer_registers_round_trip(e in any_encoding(), regs in proptest::collection::vec(any::<u16>(), 4)) {
            let regs = &regs[..usize::from(e.registers())];
            // Floats: NaN payloads do not survive; 64-bit integers above 2^53 lose precision in f64.
            let exact = match e.ty {
                ValueType::F32 | ValueType::F64 => e.decode(regs).is_ok(),
                ValueType::U64 | ValueType::I64 => e.raw(regs).is_some_and(|r| (r >> 52) == 0),
                _ => true,
            };
            if exact {
                let v = e.decode(regs).unwrap();
                prop_assert_eq!(e.encode(v), regs.to_vec());
            }
        }

        #[test]
        fn decode_any_registers_never_panics(e in any_encoding(), scale in any::<f64>(), offset in any::<f64>(),
                                             regs in proptest::collection::vec(any::<u16>(), 0..6)) {
            let e = Encoding { scale, offset, ..e };
            if let Ok(v) = e.decode(&regs) {
                prop_assert!(v.is_finite());
            }
            prop_assert_eq!(e.encode(scale).len(), usize::from(e.registers()));
        }
    }
}

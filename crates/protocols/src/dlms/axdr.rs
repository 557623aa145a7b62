//! A-XDR encoding of DLMS `Data` (IEC 62056-6-2 / Blue Book DLMS UA 1000-1 §4.1.5 "Common data types",
//! Green Book DLMS UA 1000-2 §9.5 A-XDR, IEC 61334-6).
//!
//! This module owns the `Data` CHOICE: a tag byte, then the value (fixed size, or an A-XDR length then the
//! content). Lengths are 1 byte below `0x80`, else `0x8N` followed by N big-endian bytes.
//!
//! Panic contract: [`Data::decode`] never panics and never allocates more than the input could hold: every
//! length and element count is checked against the bytes left before anything is reserved, and nesting is
//! limited to [`MAX_DEPTH`]. [`Data::encode`] never panics.

/// Deepest nesting of arrays/structures (and compact-array type descriptions) that [`Data::decode`]
/// accepts. DLMS objects rarely nest more than 4 levels; 16 leaves room without risking the stack.
pub const MAX_DEPTH: usize = 16;

/// The tag byte of a `Data` CHOICE. Lossless: every byte maps to a tag and back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tag {
    /// 0 null-data
    Null,
    /// 1 array
    Array,
    /// 2 structure
    Structure,
    /// 3 boolean
    Boolean,
    /// 4 bit-string
    BitString,
    /// 5 double-long (i32)
    DoubleLong,
    /// 6 double-long-unsigned (u32)
    DoubleLongUnsigned,
    /// 9 octet-string
    OctetString,
    /// 10 visible-string
    VisibleString,
    /// 12 utf8-string
    Utf8String,
    /// 13 bcd
    Bcd,
    /// 15 integer (i8)
    Integer,
    /// 16 long (i16)
    Long,
    /// 17 unsigned (u8)
    Unsigned,
    /// 18 long-unsigned (u16)
    LongUnsigned,
    /// 19 compact-array
    CompactArray,
    /// 20 long64 (i64)
    Long64,
    /// 21 long64-unsigned (u64)
    Long64Unsigned,
    /// 22 enum
    Enum,
    /// 23 float32
    Float32,
    /// 24 float64
    Float64,
    /// 25 date-time (12 bytes)
    DateTime,
    /// 26 date (5 bytes)
    Date,
    /// 27 time (4 bytes)
    Time,
    /// Any other value (e.g. 255 don't-care in compact-array descriptions); cannot be decoded as data.
    Unknown(u8),
}

const TAGS: [(u8, Tag); 24] = [
    (0, Tag::Null),
    (1, Tag::Array),
    (2, Tag::Structure),
    (3, Tag::Boolean),
    (4, Tag::BitString),
    (5, Tag::DoubleLong),
    (6, Tag::DoubleLongUnsigned),
    (9, Tag::OctetString),
    (10, Tag::VisibleString),
    (12, Tag::Utf8String),
    (13, Tag::Bcd),
    (15, Tag::Integer),
    (16, Tag::Long),
    (17, Tag::Unsigned),
    (18, Tag::LongUnsigned),
    (19, Tag::CompactArray),
    (20, Tag::Long64),
    (21, Tag::Long64Unsigned),
    (22, Tag::Enum),
    (23, Tag::Float32),
    (24, Tag::Float64),
    (25, Tag::DateTime),
    (26, Tag::Date),
    (27, Tag::Time),
];

impl From<u8> for Tag {
    fn from(b: u8) -> Tag {
        TAGS.iter().find(|(v, _)| *v == b).map_or(Tag::Unknown(b), |(_, t)| *t)
    }
}

impl From<Tag> for u8 {
    fn from(t: Tag) -> u8 {
        if let Tag::Unknown(b) = t {
            return b;
        }
        TAGS.iter().find(|(_, v)| *v == t).map_or(0xFF, |(b, _)| *b)
    }
}

/// Why bytes are not A-XDR `Data`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AxdrError {
    /// The input ends inside a value.
    #[error("truncated: {needed} bytes needed at offset {at}, {available} available")]
    Truncated {
        /// Offset of the value being read.
        at: usize,
        /// Bytes the value needs.
        needed: usize,
        /// Bytes left in the input.
        available: usize,
    },
    /// A tag this codec does not know; its length cannot be known, so decoding stops.
    #[error("unknown data tag {0}")]
    UnknownTag(u8),
    /// A length prefix `0x80` (indefinite) or `0x85..` (more than 4 length bytes).
    #[error("bad A-XDR length prefix 0x{0:02X}")]
    BadLength(u8),
    /// Arrays/structures nested deeper than [`MAX_DEPTH`].
    #[error("nesting deeper than {MAX_DEPTH}")]
    TooDeep,
}

/// A bit-string: `bits` bits, most significant bit of the first byte first.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BitString {
    bits: usize,
    bytes: Vec<u8>,
}

impl BitString {
    /// A bit-string of `bits` bits in `bytes`; `None` unless `bytes.len() == bits.div_ceil(8)`.
    pub fn new(bytes: Vec<u8>, bits: usize) -> Option<BitString> {
        (bytes.len() == bits.div_ceil(8)).then_some(BitString { bits, bytes })
    }

    /// Number of bits.
    pub fn len(&self) -> usize {
        self.bits
    }

    /// Whether the bit-string has no bits.
    pub fn is_empty(&self) -> bool {
        self.bits == 0
    }

    /// The bytes holding the bits (trailing unused bits are whatever the sender sent).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Bit `i` (0 = most significant bit of the first byte); `None` past the end.
    pub fn bit(&self, i: usize) -> Option<bool> {
        if i >= self.bits {
            return None;
        }
        self.bytes.get(i / 8).map(|b| b & (0x80 >> (i % 8)) != 0)
    }
}

/// Value of "not specified" for the 1-byte fields of [`Date`], [`Time`] and the clock status.
pub const NOT_SPECIFIED: u8 = 0xFF;
/// Value of "not specified" for the year.
pub const YEAR_NOT_SPECIFIED: u16 = 0xFFFF;
/// Value of "not specified" for the deviation.
pub const DEVIATION_NOT_SPECIFIED: i16 = i16::MIN;

/// COSEM date (Blue Book §4.1.6.1), 5 bytes. Fields are kept as sent: `0xFF` / `0xFFFF` mean not
/// specified, month `0xFD`/`0xFE` are DST end/begin, day `0xFD`/`0xFE` second-last/last day of month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Date {
    /// Year, `0xFFFF` not specified.
    pub year: u16,
    /// Month 1..=12.
    pub month: u8,
    /// Day of month 1..=31.
    pub day: u8,
    /// Day of week 1 (Monday) ..= 7 (Sunday).
    pub weekday: u8,
}

/// COSEM time (Blue Book §4.1.6.1), 4 bytes; `0xFF` means not specified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Time {
    /// Hour 0..=23.
    pub hour: u8,
    /// Minute 0..=59.
    pub minute: u8,
    /// Second 0..=59.
    pub second: u8,
    /// Hundredths of a second 0..=99.
    pub hundredths: u8,
}

/// COSEM date-time (Blue Book §4.1.6.1), 12 bytes: date, time, deviation (minutes local time is behind UTC
/// — sign as in the standard, `0x8000` not specified) and clock status (`0xFF` not specified).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DateTime {
    /// The date part.
    pub date: Date,
    /// The time part.
    pub time: Time,
    /// Deviation of local time from UTC in minutes; [`DEVIATION_NOT_SPECIFIED`] if unknown.
    pub deviation: i16,
    /// Clock status bits (invalid, doubtful, different base, invalid status, DST active); `0xFF` unknown.
    pub clock_status: u8,
}

impl Date {
    /// Length on the wire.
    pub const LEN: usize = 5;

    /// Parses exactly 5 bytes.
    pub fn from_bytes(b: &[u8]) -> Option<Date> {
        let b: [u8; 5] = b.try_into().ok()?;
        Some(Date { year: u16::from_be_bytes([b[0], b[1]]), month: b[2], day: b[3], weekday: b[4] })
    }

    /// The 5 wire bytes.
    pub fn to_bytes(&self) -> [u8; 5] {
        let y = self.year.to_be_bytes();
        [y[0], y[1], self.month, self.day, self.weekday]
    }
}

impl Time {
    /// Length on the wire.
    pub const LEN: usize = 4;

    /// Parses exactly 4 bytes.
    pub fn from_bytes(b: &[u8]) -> Option<Time> {
        let b: [u8; 4] = b.try_into().ok()?;
        Some(Time { hour: b[0], minute: b[1], second: b[2], hundredths: b[3] })
    }

    /// The 4 wire bytes.
    pub fn to_bytes(&self) -> [u8; 4] {
        [self.hour, self.minute, self.second, self.hundredths]
    }
}

impl DateTime {
    /// Length on the wire.
    pub const LEN: usize = 12;

    /// Parses exactly 12 bytes (the content of a date-time, or of the octet-string most meters send).
    pub fn from_bytes(b: &[u8]) -> Option<DateTime> {
        let b: [u8; 12] = b.try_into().ok()?;
        Some(DateTime {
            date: Date::from_bytes(b.get(..5)?)?,
            time: Time::from_bytes(b.get(5..9)?)?,
            deviation: i16::from_be_bytes([b[9], b[10]]),
            clock_status: b[11],
        })
    }

    /// The 12 wire bytes.
    pub fn to_bytes(&self) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[..5].copy_from_slice(&self.date.to_bytes());
        out[5..9].copy_from_slice(&self.time.to_bytes());
        out[9..11].copy_from_slice(&self.deviation.to_be_bytes());
        out[11] = self.clock_status;
        out
    }

    /// The deviation, `None` when not specified.
    pub fn deviation(&self) -> Option<i16> {
        (self.deviation != DEVIATION_NOT_SPECIFIED).then_some(self.deviation)
    }
}

/// A DLMS `Data` value (Blue Book §4.1.5). Strings keep their bytes as sent, so decoding is lossless.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// 0 null-data
    Null,
    /// 1 array (elements should share a type; not enforced)
    Array(Vec<Data>),
    /// 2 structure
    Structure(Vec<Data>),
    /// 3 boolean (any non-zero byte decodes as `true`)
    Boolean(bool),
    /// 4 bit-string
    BitString(BitString),
    /// 5 double-long
    DoubleLong(i32),
    /// 6 double-long-unsigned
    DoubleLongUnsigned(u32),
    /// 9 octet-string (OBIS codes, date-times as most meters send them, …)
    OctetString(Vec<u8>),
    /// 10 visible-string (bytes as sent; ASCII expected)
    VisibleString(Vec<u8>),
    /// 12 utf8-string (bytes as sent)
    Utf8String(Vec<u8>),
    /// 13 bcd (one byte)
    Bcd(u8),
    /// 15 integer
    Integer(i8),
    /// 16 long
    Long(i16),
    /// 17 unsigned
    Unsigned(u8),
    /// 18 long-unsigned
    LongUnsigned(u16),
    /// 19 compact-array, kept raw: the type description bytes (validated) and the array contents.
    CompactArray {
        /// The encoded type description (a tag, with counts and nested descriptions for array/structure).
        description: Vec<u8>,
        /// The array contents: values without their tags, concatenated.
        contents: Vec<u8>,
    },
    /// 20 long64
    Long64(i64),
    /// 21 long64-unsigned
    Long64Unsigned(u64),
    /// 22 enum
    Enum(u8),
    /// 23 float32
    Float32(f32),
    /// 24 float64
    Float64(f64),
    /// 25 date-time
    DateTime(DateTime),
    /// 26 date
    Date(Date),
    /// 27 time
    Time(Time),
}

/// Appends an A-XDR length: 1 byte below `0x80`, else `0x8N` and N big-endian bytes.
pub fn encode_length(len: usize, out: &mut Vec<u8>) {
    if let Ok(short) = u8::try_from(len) {
        if short < 0x80 {
            out.push(short);
            return;
        }
    }
    let bytes = (len as u64).to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    let significant = bytes.get(skip..).unwrap_or_default();
    // At most 8 significant bytes: the cast is lossless.
    out.push(0x80 | significant.len() as u8);
    out.extend_from_slice(significant);
}

/// Reads an A-XDR length at the start of `buf`; returns it and the bytes it took.
pub fn decode_length(buf: &[u8]) -> Result<(usize, usize), AxdrError> {
    let mut r = Reader { buf, at: 0 };
    let len = r.length()?;
    Ok((len, r.at))
}

impl Data {
    /// The tag of this value.
    pub fn tag(&self) -> Tag {
        match self {
            Data::Null => Tag::Null,
            Data::Array(_) => Tag::Array,
            Data::Structure(_) => Tag::Structure,
            Data::Boolean(_) => Tag::Boolean,
            Data::BitString(_) => Tag::BitString,
            Data::DoubleLong(_) => Tag::DoubleLong,
            Data::DoubleLongUnsigned(_) => Tag::DoubleLongUnsigned,
            Data::OctetString(_) => Tag::OctetString,
            Data::VisibleString(_) => Tag::VisibleString,
            Data::Utf8String(_) => Tag::Utf8String,
            Data::Bcd(_) => Tag::Bcd,
            Data::Integer(_) => Tag::Integer,
            Data::Long(_) => Tag::Long,
            Data::Unsigned(_) => Tag::Unsigned,
            Data::LongUnsigned(_) => Tag::LongUnsigned,
            Data::CompactArray { .. } => Tag::CompactArray,
            Data::Long64(_) => Tag::Long64,
            Data::Long64Unsigned(_) => Tag::Long64Unsigned,
            Data::Enum(_) => Tag::Enum,
            Data::Float32(_) => Tag::Float32,
            Data::Float64(_) => Tag::Float64,
            Data::DateTime(_) => Tag::DateTime,
            Data::Date(_) => Tag::Date,
            Data::Time(_) => Tag::Time,
        }
    }

    /// Appends the tagged A-XDR encoding of `self`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(self.tag()));
        match self {
            Data::Null => {}
            Data::Array(items) | Data::Structure(items) => {
                encode_length(items.len(), out);
                for item in items {
                    item.encode(out);
                }
            }
            Data::Boolean(b) => out.push(u8::from(*b)),
            Data::BitString(bits) => {
                encode_length(bits.bits, out);
                out.extend_from_slice(&bits.bytes);
            }
            Data::DoubleLong(v) => out.extend_from_slice(&v.to_be_bytes()),
            Data::DoubleLongUnsigned(v) => out.extend_from_slice(&v.to_be_bytes()),
            Data::OctetString(b) | Data::VisibleString(b) | Data::Utf8String(b) => {
                encode_length(b.len(), out);
                out.extend_from_slice(b);
            }
            Data::Bcd(v) | Data::Unsigned(v) | Data::Enum(v) => out.push(*v),
            Data::Integer(v) => out.extend_from_slice(&v.to_be_bytes()),
            Data::Long(v) => out.extend_from_slice(&v.to_be_bytes()),
            Data::LongUnsigned(v) => out.extend_from_slice(&v.to_be_bytes()),
            Data::CompactArray { description, contents } => {
                out.extend_from_slice(description);
                encode_length(contents.len(), out);
                out.extend_from_slice(contents);
            }
            Data::Long64(v) => out.extend_from_slice(&v.to_be_bytes()),
            Data::Long64Unsigned(v) => out.extend_from_slice(&v.to_be_bytes()),
            Data::Float32(v) => out.extend_from_slice(&v.to_be_bytes()),
            Data::Float64(v) => out.extend_from_slice(&v.to_be_bytes()),
            Data::DateTime(v) => out.extend_from_slice(&v.to_bytes()),
            Data::Date(v) => out.extend_from_slice(&v.to_bytes()),
            Data::Time(v) => out.extend_from_slice(&v.to_bytes()),
        }
    }

    /// The tagged A-XDR encoding of `self` as a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Decodes one value at the start of `buf`; returns it and the number of bytes it took.
    pub fn decode(buf: &[u8]) -> Result<(Data, usize), AxdrError> {
        let mut r = Reader { buf, at: 0 };
        let data = r.data(0)?;
        Ok((data, r.at))
    }
}

/// Cursor over the input; every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], AxdrError> {
        let available = self.buf.len().saturating_sub(self.at);
        let end = self.at.checked_add(n).filter(|_| n <= available);
        let slice = end.and_then(|end| self.buf.get(self.at..end)).ok_or(AxdrError::Truncated {
            at: self.at,
            needed: n,
            available,
        })?;
        self.at += n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], AxdrError> {
        let at = self.at;
        self.take(N)?.try_into().map_err(|_| AxdrError::Truncated { at, needed: N, available: 0 })
    }

    fn u8(&mut self) -> Result<u8, AxdrError> {
        Ok(self.array::<1>()?[0])
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.at)
    }

    fn length(&mut self) -> Result<usize, AxdrError> {
        let first = self.u8()?;
        if first < 0x80 {
            return Ok(usize::from(first));
        }
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 4 {
            return Err(AxdrError::BadLength(first));
        }
        let bytes = self.take(n)?;
        Ok(bytes.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b)))
    }

    /// A count of elements that each take at least one byte: more than the bytes left is truncation, and
    /// checking it here keeps a hostile count from reserving memory.
    fn count(&mut self) -> Result<usize, AxdrError> {
        let at = self.at;
        let count = self.length()?;
        if count > self.remaining() {
            return Err(AxdrError::Truncated { at, needed: count, available: self.remaining() });
        }
        Ok(count)
    }

    fn bytes(&mut self) -> Result<Vec<u8>, AxdrError> {
        let len = self.length()?;
        Ok(self.take(len)?.to_vec())
    }

    fn data(&mut self, depth: usize) -> Result<Data, AxdrError> {
        if depth > MAX_DEPTH {
            return Err(AxdrError::TooDeep);
        }
        let tag = self.u8()?;
        Ok(match Tag::from(tag) {
            Tag::Null => Data::Null,
            t @ (Tag::Array | Tag::Structure) => {
                let count = self.count()?;
                let mut items = Vec::with_capacity(count);
                for _ in 0..count {
                    items.push(self.data(depth + 1)?);
                }
                if t == Tag::Array {
                    Data::Array(items)
                } else {
                    Data::Structure(items)
                }
            }
            Tag::Boolean => Data::Boolean(self.u8()? != 0),
            Tag::BitString => {
                let bits = self.length()?;
                let bytes = self.take(bits.div_ceil(8))?.to_vec();
                Data::BitString(BitString { bits, bytes })
            }
            Tag::DoubleLong => Data::DoubleLong(i32::from_be_bytes(self.array()?)),
            Tag::DoubleLongUnsigned => Data::DoubleLongUnsigned(u32::from_be_bytes(self.array()?)),
            Tag::OctetString => Data::OctetString(self.bytes()?),
            Tag::VisibleString => Data::VisibleString(self.bytes()?),
            Tag::Utf8String => Data::Utf8String(self.bytes()?),
            Tag::Bcd => Data::Bcd(self.u8()?),
            Tag::Integer => Data::Integer(i8::from_be_bytes(self.array()?)),
            Tag::Long => Data::Long(i16::from_be_bytes(self.array()?)),
            Tag::Unsigned => Data::Unsigned(self.u8()?),
            Tag::LongUnsigned => Data::LongUnsigned(u16::from_be_bytes(self.array()?)),
            Tag::CompactArray => {
                let start = self.at;
                self.type_description(depth + 1)?;
                let description = self.buf.get(start..self.at).unwrap_or_default().to_vec();
                let contents = self.bytes()?;
                Data::CompactArray { description, contents }
            }
            Tag::Long64 => Data::Long64(i64::from_be_bytes(self.array()?)),
            Tag::Long64Unsigned => Data::Long64Unsigned(u64::from_be_bytes(self.array()?)),
            Tag::Enum => Data::Enum(self.u8()?),
            Tag::Float32 => Data::Float32(f32::from_be_bytes(self.array()?)),
            Tag::Float64 => Data::Float64(f64::from_be_bytes(self.array()?)),
            Tag::DateTime => {
                Data::DateTime(DateTime::from_bytes(self.take(DateTime::LEN)?).ok_or(AxdrError::BadLength(tag))?)
            }
            Tag::Date => Data::Date(Date::from_bytes(self.take(Date::LEN)?).ok_or(AxdrError::BadLength(tag))?),
            Tag::Time => Data::Time(Time::from_bytes(self.take(Time::LEN)?).ok_or(AxdrError::BadLength(tag))?),
            Tag::Unknown(b) => return Err(AxdrError::UnknownTag(b)),
        })
    }

    /// Skips a compact-array type description (Blue Book §4.1.5: `array` = tag, u16 count, description;
    /// `structure` = tag, count, descriptions; any other known tag stands alone).
    fn type_description(&mut self, depth: usize) -> Result<(), AxdrError> {
        if depth > MAX_DEPTH {
            return Err(AxdrError::TooDeep);
        }
        let tag = self.u8()?;
        match Tag::from(tag) {
            Tag::Array => {
                self.take(2)?;
                self.type_description(depth + 1)
            }
            Tag::Structure => {
                let count = self.count()?;
                for _ in 0..count {
                    self.type_description(depth + 1)?;
                }
                Ok(())
            }
            Tag::Unknown(b) => Err(AxdrError::UnknownTag(b)),
            _ => Ok(()),
        }
    }
}

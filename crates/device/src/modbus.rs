//! A Modbus profile at work: the read plan (values merged into as few block reads as the profile
//! allows), one read of every value through an `ami_protocols::modbus::Master`, decoding into
//! [`Reading`]s, and writing controls.
//!
//! Failure policy of [`read_modbus`]: if the meter does not answer the first request at all (timeout,
//! corrupt reply, transport failure) the read fails with [`ReadError::NoAnswer`] — the meter is not
//! there. Once it has answered, every later problem is confined to the values it touches: a Modbus
//! exception, a reply of the wrong shape, a later timeout, or a register that does not decode (NaN, ±∞)
//! becomes a [`ValueError`] naming the value, and the other blocks are still read. A transport that
//! fails or closes mid-read skips the remaining blocks instead of queueing requests that cannot go out.

use std::fmt;

use ami_link::LinkError;
use ami_protocols::modbus::plan::{plan, Block, Item};
use ami_protocols::modbus::value::ValueError as DecodeError;
use ami_protocols::modbus::{Exception, Function, Master, MasterError, PduError, Response};
use chrono::{DateTime, Utc};

use crate::{ControlSource, ModbusControl, Obis, Profile, Quality, Reading, Value, ValueSource};

/// The block reads for one profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModbusPlan {
    /// Read blocks in request order (by table, then address). `Block::members` index into `items`.
    pub blocks: Vec<Block>,
    /// One item per Modbus value: table, first register (or bit) and count.
    pub items: Vec<Item>,
    /// For each item, the index of its value in `profile.values`.
    pub values: Vec<usize>,
}

impl ModbusPlan {
    /// Number of requests one read of every value takes.
    pub fn requests(&self) -> usize {
        self.blocks.len()
    }
}

/// Plans the reads of every Modbus value of `profile`, honouring its `max-block` and `max-gap`.
pub fn plan_modbus(profile: &Profile) -> ModbusPlan {
    let mut items = Vec::new();
    let mut values = Vec::new();
    for (index, value) in profile.values.iter().enumerate() {
        match &value.source {
            ValueSource::Modbus(m) => {
                let count = if m.table.is_bits() { 1 } else { m.encoding.registers() };
                items.push(Item { table: m.table, address: m.register, count });
                values.push(index);
            }
        }
    }
    let blocks = plan(&items, profile.modbus.max_block, profile.modbus.max_gap);
    ModbusPlan { blocks, items, values }
}

/// What went wrong with one value while the meter itself answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueErrorKind {
    /// The meter refused the block holding the value.
    Exception {
        /// The function refused.
        function: Function,
        /// The exception code.
        exception: Exception,
    },
    /// The reply to the block did not fit the request.
    InvalidReply(String),
    /// The block failed on the link after the meter had answered earlier blocks.
    Link(LinkError),
    /// The registers do not decode to a finite number (meters send NaN for "not available").
    Decode(DecodeError),
    /// Not requested: the transport failed earlier in this read.
    Skipped(String),
}

impl fmt::Display for ValueErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueErrorKind::Exception { function, exception } => {
                write!(f, "meter replied with exception {exception} to function {function}")
            }
            ValueErrorKind::InvalidReply(msg) => write!(f, "invalid reply: {msg}"),
            ValueErrorKind::Link(e) => write!(f, "{e}"),
            ValueErrorKind::Decode(e) => write!(f, "{e}"),
            ValueErrorKind::Skipped(why) => write!(f, "not read: {why}"),
        }
    }
}

/// One value that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    /// The value's name in the profile.
    pub name: String,
    /// Its OBIS code.
    pub obis: Obis,
    /// What went wrong.
    pub kind: ValueErrorKind,
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "value {} ({}): {}", self.name, self.obis, self.kind)
    }
}

impl std::error::Error for ValueError {}

/// The result of reading every value once.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadOutcome {
    /// Values read, in profile order.
    pub readings: Vec<Reading>,
    /// Values that could not be read, in profile order.
    pub errors: Vec<ValueError>,
}

/// Why a whole read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The meter did not answer the first request: nothing was read.
    #[error("meter {meter} does not answer: {error}")]
    NoAnswer {
        /// Meter id.
        meter: String,
        /// The link failure.
        error: LinkError,
    },
}

/// Reads every value of `profile` from `unit` once, one request per planned block. Each reading's `ts`
/// is `now()` taken when its block's reply arrived. See the module docs for the failure policy.
pub async fn read_modbus(
    profile: &Profile,
    master: &Master,
    meter: &str,
    unit: u8,
    now: impl Fn() -> DateTime<Utc>,
) -> Result<ReadOutcome, ReadError> {
    let plan = plan_modbus(profile);
    let mut readings: Vec<(usize, Reading)> = Vec::new();
    let mut errors: Vec<(usize, ValueError)> = Vec::new();
    let mut answered = false;
    let mut dead: Option<String> = None;

    for block in &plan.blocks {
        let fail_all = |errors: &mut Vec<(usize, ValueError)>, kind: ValueErrorKind| {
            for &member in &block.members {
                if let Some((index, value)) = value_of(profile, &plan, member) {
                    errors.push((index, ValueError { name: value.name.clone(), obis: value.obis, kind: kind.clone() }));
                }
            }
        };
        if let Some(why) = &dead {
            fail_all(&mut errors, ValueErrorKind::Skipped(why.clone()));
            continue;
        }
        let result = master.request(meter, unit, &block.request()).await;
        let ts = now();
        match result {
            Ok(response) => {
                answered = true;
                decode_block(profile, &plan, block, &response, meter, ts, &mut readings, &mut errors);
            }
            Err(MasterError::Pdu(PduError::Exception { function, exception })) => {
                answered = true;
                fail_all(&mut errors, ValueErrorKind::Exception { function, exception });
            }
            Err(MasterError::Pdu(e)) => {
                answered = true;
                fail_all(&mut errors, ValueErrorKind::InvalidReply(e.to_string()));
            }
            Err(MasterError::Link(error)) => {
                if !answered {
                    return Err(ReadError::NoAnswer { meter: meter.to_string(), error });
                }
                if matches!(error, LinkError::Io { .. } | LinkError::Closed { .. }) {
                    dead = Some(error.to_string());
                }
                fail_all(&mut errors, ValueErrorKind::Link(error));
            }
        }
    }
    readings.sort_by_key(|(i, _)| *i);
    errors.sort_by_key(|(i, _)| *i);
    Ok(ReadOutcome {
        readings: readings.into_iter().map(|(_, r)| r).collect(),
        errors: errors.into_iter().map(|(_, e)| e).collect(),
    })
}

/// The profile value behind plan item `member`, with its index in `profile.values`.
fn value_of<'p>(profile: &'p Profile, plan: &ModbusPlan, member: usize) -> Option<(usize, &'p crate::ValueDef)> {
    let index = *plan.values.get(member)?;
    Some((index, profile.values.get(index)?))
}

#[allow(clippy::too_many_arguments)]
fn decode_block(
    profile: &Profile,
    plan: &ModbusPlan,
    block: &Block,
    response: &Response,
    meter: &str,
    ts: DateTime<Utc>,
    readings: &mut Vec<(usize, Reading)>,
    errors: &mut Vec<(usize, ValueError)>,
) {
    for &member in &block.members {
        let (Some((index, value)), Some(item)) = (value_of(profile, plan, member), plan.items.get(member)) else {
            continue;
        };
        let ValueSource::Modbus(source) = &value.source;
        let decoded: Result<f64, ValueErrorKind> = match response {
            Response::Registers(regs) => match block.slice(regs, item) {
                Some(regs) => source.encoding.decode(regs).map_err(ValueErrorKind::Decode),
                None => Err(ValueErrorKind::InvalidReply(format!(
                    "{} registers do not cover register {:#06x}",
                    regs.len(),
                    item.address
                ))),
            },
            Response::Bits(bits) => match block.slice(bits, item).and_then(|b| b.first()) {
                Some(&bit) => Ok(if bit { 1.0 } else { 0.0 }),
                None => Err(ValueErrorKind::InvalidReply(format!(
                    "{} bits do not cover bit {:#06x}",
                    bits.len(),
                    item.address
                ))),
            },
            Response::Written => Err(ValueErrorKind::InvalidReply("write acknowledgement to a read".into())),
        };
        match decoded {
            Ok(number) => readings.push((
                index,
                Reading {
                    meter: meter.to_string(),
                    name: value.name.clone(),
                    obis: value.obis,
                    value: Value::Number(number),
                    unit: value.unit.clone(),
                    ts,
                    quality: Quality::OK,
                },
            )),
            Err(kind) => errors.push((index, ValueError { name: value.name.clone(), obis: value.obis, kind })),
        }
    }
}

/// Why a control could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The profile has no control with that name.
    #[error("profile {profile} has no control \"{name}\" (controls: {})", if available.is_empty() { "none".to_string() } else { available.join(", ") })]
    UnknownControl {
        /// Profile id.
        profile: String,
        /// The name asked for.
        name: String,
        /// The controls the profile has.
        available: Vec<String>,
    },
    /// The write failed (meter refused, no answer …).
    #[error("writing control \"{name}\" failed: {error}")]
    Write {
        /// Control name.
        name: String,
        /// The failure.
        error: MasterError,
    },
}

/// Switches the control `name` of `profile` on or off at `unit`: FC 5 for a coil, FC 6 with the
/// profile's `on`/`off` value for a register.
pub async fn write_control(
    profile: &Profile,
    master: &Master,
    meter: &str,
    unit: u8,
    name: &str,
    on: bool,
) -> Result<(), ControlError> {
    let Some(control) = profile.control(name) else {
        return Err(ControlError::UnknownControl {
            profile: profile.id.clone(),
            name: name.to_string(),
            available: profile.controls.iter().map(|c| c.name.clone()).collect(),
        });
    };
    let ControlSource::Modbus(target) = &control.source;
    let result = match *target {
        ModbusControl::Coil { register } => master.write_coil(meter, unit, register, on).await,
        ModbusControl::Register { register, on: on_value, off } => {
            master.write_register(meter, unit, register, if on { on_value } else { off }).await
        }
    };
    result.map_err(|error| ControlError::Write { name: name.to_string(), error })
}

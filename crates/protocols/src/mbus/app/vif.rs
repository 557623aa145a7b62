//! Value information tables of EN 13757-3:2018 (6.4 VIF, 6.4.3 table 10 primary VIFs, table 12 `FD`
//! extension, table 14 `FB` extension, 6.4.5 table 15 orthogonal VIFE corrections) and the fixed data
//! structure's medium/unit codes (annex G, table G.1).
//!
//! Each entry gives the quantity text (the names libmbus prints, so decoded records compare with its
//! output), the unit as libmbus writes it, the unit symbol of ami's design map, and the factor that turns
//! the raw value into that symbol's unit (the decimal exponent, and e.g. minutes into seconds).

/// How a value information code reads: quantity, units and scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Meaning {
    /// Quantity as libmbus names it (`"Energy"`, `"Flow temperature"`, `"Fabrication No"`).
    pub(crate) quantity: &'static str,
    /// Unit text as libmbus writes it (`"m^3"`, `"°C"`, `"-"` for dates, `""` for plain numbers).
    pub(crate) lib_unit: &'static str,
    /// Unit symbol of the design map (`"m3"`, `"degC"`), `""` for dimensionless values.
    pub(crate) unit: &'static str,
    /// Multiply the raw value by this to get a value in `unit`.
    pub(crate) factor: f64,
}

const fn m(quantity: &'static str, lib_unit: &'static str, unit: &'static str, factor: f64) -> Meaning {
    Meaning { quantity, lib_unit, unit, factor }
}

/// 10^`e` for the small exponents of the tables.
fn pow10(e: i32) -> f64 {
    10f64.powi(e)
}

/// Seconds per time unit code `n` of 0 s, 1 min, 2 h, 3 d (table 10 footnote "nn").
fn seconds(n: u8) -> f64 {
    match n & 0x03 {
        0 => 1.0,
        1 => 60.0,
        2 => 3600.0,
        _ => 86400.0,
    }
}

/// Seconds per time unit code `n` of 0 s, 1 min, 2 h, 3 d, 4 month, 5 year (`FD 24`–`29`, `FD 34`–`39`).
fn long_seconds(n: u8) -> f64 {
    match n {
        0..=3 => seconds(n),
        4 => 2_629_743.83,
        _ => 31_556_926.0,
    }
}

/// Seconds per time unit code `n` of 0 h, 1 d, 2 month, 3 year (`FD 68`–`6F`).
fn hours_up(n: u8) -> f64 {
    match n & 0x03 {
        0 => 3600.0,
        1 => 86400.0,
        2 => 2_629_743.83,
        _ => 31_556_926.0,
    }
}

const RESERVED: Meaning = m("Reserved", "Reserved", "", 1.0);

/// Primary VIF (table 10), `code` without the extension bit. `None` for `7B`/`7C`/`7D` (extension
/// and plain-text markers, handled by the caller).
pub(crate) fn primary(code: u8) -> Option<Meaning> {
    let n = code & 0x07;
    let i = i32::from(n);
    let t = code & 0x03;
    let ti = i32::from(t);
    Some(match code & 0x7F {
        0x00..=0x07 => m("Energy", "Wh", "Wh", pow10(i - 3)),
        0x08..=0x0F => m("Energy", "J", "J", pow10(i)),
        0x10..=0x17 => m("Volume", "m^3", "m3", pow10(i - 6)),
        0x18..=0x1F => m("Mass", "kg", "kg", pow10(i - 3)),
        0x20..=0x23 => m("On time", "s", "s", seconds(t)),
        0x24..=0x27 => m("Operating time", "s", "s", seconds(t)),
        0x28..=0x2F => m("Power", "W", "W", pow10(i - 3)),
        0x30..=0x37 => m("Power", "J/h", "J/h", pow10(i)),
        0x38..=0x3F => m("Volume flow", "m^3/h", "m3/h", pow10(i - 6)),
        // Volume flow per minute and per second, converted to m3/h.
        0x40..=0x47 => m("Volume flow", "m^3/min", "m3/h", pow10(i - 7) * 60.0),
        0x48..=0x4F => m("Volume flow", "m^3/s", "m3/h", pow10(i - 9) * 3600.0),
        0x50..=0x57 => m("Mass flow", "kg/h", "kg/h", pow10(i - 3)),
        0x58..=0x5B => m("Flow temperature", "°C", "degC", pow10(ti - 3)),
        0x5C..=0x5F => m("Return temperature", "°C", "degC", pow10(ti - 3)),
        0x60..=0x63 => m("Temperature difference", "K", "K", pow10(ti - 3)),
        0x64..=0x67 => m("External temperature", "°C", "degC", pow10(ti - 3)),
        0x68..=0x6B => m("Pressure", "bar", "bar", pow10(ti - 3)),
        0x6C => m("Time point (date)", "-", "", 1.0),
        0x6D => m("Time point (date & time)", "-", "", 1.0),
        0x6E => m("H.C.A.", "Units for H.C.A.", "", 1.0),
        0x6F => RESERVED,
        0x70..=0x73 => m("Averaging Duration", "s", "s", seconds(t)),
        0x74..=0x77 => m("Actuality Duration", "s", "s", seconds(t)),
        0x78 => m("Fabrication No", "", "", 1.0),
        0x79 => m("(Enhanced) Identification", "", "", 1.0),
        0x7A => m("Bus Address", "", "", 1.0),
        0x7E => m("Any VIF", "", "", 1.0),
        0x7F => m("Manufacturer specific", "", "", 1.0),
        _ => return None,
    })
}

/// Second VIF table, after `FD` (table 12), `code` without the extension bit.
pub(crate) fn fd(code: u8) -> Meaning {
    let c = code & 0x7F;
    let i = i32::from(c & 0x0F);
    let plain = |q| m(q, "", "", 1.0);
    match c {
        0x00..=0x03 => m("Credit", "Currency units", "", pow10(i - 3)),
        0x04..=0x07 => m("Debit", "Currency units", "", pow10(i - 7)),
        0x08 => plain("Access Number (transmission count)"),
        0x09 => plain("Medium"),
        0x0A => plain("Manufacturer"),
        0x0B => plain("Parameter set identification"),
        0x0C => plain("Model / Version"),
        0x0D => plain("Hardware version"),
        0x0E => plain("Firmware version"),
        0x0F => plain("Software version"),
        0x10 => plain("Customer location"),
        0x11 => plain("Customer"),
        0x12 => plain("Access Code User"),
        0x13 => plain("Access Code Operator"),
        0x14 => plain("Access Code System Operator"),
        0x15 => plain("Access Code Developer"),
        0x16 => plain("Password"),
        0x17 => plain("Error flags"),
        0x18 => plain("Error mask"),
        0x1A => plain("Digital Output"),
        0x1B => plain("Digital Input"),
        0x1C => m("Baudrate", "Baud", "Bd", 1.0),
        0x1D => m("Response delay time", "Bittimes", "bit times", 1.0),
        0x1E => plain("Retry"),
        0x20 => plain("First storage # for cyclic storage"),
        0x21 => plain("Last storage # for cyclic storage"),
        0x22 => plain("Size of storage block"),
        0x24..=0x29 => m("Storage interval", "s", "s", long_seconds(c - 0x24)),
        0x2C..=0x2F => m("Duration since last readout", "s", "s", seconds(c)),
        0x31..=0x33 => m("Duration of tariff", "s", "s", seconds(c)),
        0x34..=0x39 => m("Period of tariff", "s", "s", long_seconds(c - 0x34)),
        0x3A => plain("Dimensionless"),
        0x40..=0x4F => m("Voltage", "V", "V", pow10(i - 9)),
        0x50..=0x5F => m("Current", "A", "A", pow10(i - 12)),
        0x60 => plain("Reset counter"),
        0x61 => plain("Cumulation counter"),
        0x62 => plain("Control signal"),
        0x63 => plain("Day of week"),
        0x64 => plain("Week number"),
        0x65 => plain("Time point of day change"),
        0x66 => plain("State of parameter activation"),
        0x67 => plain("Special supplier information"),
        0x68..=0x6B => m("Duration since last cumulation", "s", "s", hours_up(c)),
        0x6C..=0x6F => m("Operating time battery", "s", "s", hours_up(c)),
        0x70 => plain("Date and time of battery change"),
        _ => RESERVED,
    }
}

/// First VIF extension table, after `FB` (table 14), `code` without the extension bit.
pub(crate) fn fb(code: u8) -> Meaning {
    let c = code & 0x7F;
    let one = i32::from(c & 0x01);
    let ti = i32::from(c & 0x03);
    match c {
        // 0.1 MWh and 1 MWh.
        0x00 | 0x01 => m("Energy", "Wh", "Wh", pow10(one + 5)),
        // 0.1 GJ and 1 GJ (libmbus prints the unit as "Reserved").
        0x08 | 0x09 => m("Energy", "Reserved", "J", pow10(one + 8)),
        // 100 m3 and 1000 m3.
        0x10 | 0x11 => m("Volume", "m^3", "m3", pow10(one + 2)),
        // 100 t and 1000 t.
        0x18 | 0x19 => m("Mass", "kg", "kg", pow10(one + 5)),
        0x21 => m("Volume", "feet^3", "ft3", 0.1),
        0x22 | 0x23 => m("Volume", "American gallon", "gal", pow10(one - 1)),
        0x24 => m("Volume flow", "American gallon/min", "gal/min", 0.001),
        0x25 => m("Volume flow", "American gallon/min", "gal/min", 1.0),
        0x26 => m("Volume flow", "American gallon/h", "gal/h", 1.0),
        // 0.1 MW and 1 MW.
        0x28 | 0x29 => m("Power", "W", "W", pow10(one + 5)),
        // 0.1 GJ/h and 1 GJ/h (libmbus prints the unit as "J").
        0x30 | 0x31 => m("Power", "J", "J/h", pow10(one + 8)),
        0x58..=0x5B => m("Flow temperature", "°F", "degF", pow10(ti - 3)),
        0x5C..=0x5F => m("Return temperature", "°F", "degF", pow10(ti - 3)),
        0x60..=0x63 => m("Temperature difference", "°F", "degF", pow10(ti - 3)),
        0x64..=0x67 => m("External temperature", "°F", "degF", pow10(ti - 3)),
        0x70..=0x73 => m("Cold / Warm Temperature Limit", "°F", "degF", pow10(ti - 3)),
        0x74..=0x77 => m("Cold / Warm Temperature Limit", "°C", "degC", pow10(ti - 3)),
        0x78..=0x7F => m("Cumul count max power", "W", "W", pow10(i32::from(c & 0x07) - 3)),
        _ => RESERVED,
    }
}

/// Orthogonal VIFE correction (table 15) applied to a raw value: `E111 0nnn` multiplies by
/// 10^(nnn−6), `E111 10nn` adds 10^(nn−3), `E111 1101` multiplies by 1000.
pub(crate) fn correct(vife: u8, value: f64) -> f64 {
    let c = vife & 0x7F;
    match c {
        0x70..=0x77 => value * pow10(i32::from(c & 0x07) - 6),
        0x78..=0x7B => value + pow10(i32::from(c & 0x03) - 3),
        0x7D => value * 1000.0,
        _ => value,
    }
}

/// Unit code of the fixed data structure (annex G, table G.1): libmbus text, design-map symbol and factor,
/// and the quantity the unit implies.
pub(crate) fn fixed_unit(code: u8) -> Meaning {
    let c = code & 0x3F;
    let energy = |lib, f| m("Energy", lib, "Wh", f);
    let joule = |lib, f| m("Energy", lib, "J", f);
    let power = |lib, f| m("Power", lib, "W", f);
    let jph = |lib, f| m("Power", lib, "J/h", f);
    let volume = |lib, f| m("Volume", lib, "m3", f);
    let flow = |lib, f| m("Volume flow", lib, "m3/h", f);
    match c {
        0x00 => m("Time", "h,m,s", "", 1.0),
        0x01 => m("Date", "D,M,Y", "", 1.0),
        0x02 => energy("Wh", 1.0),
        0x03 => energy("10 Wh", 10.0),
        0x04 => energy("100 Wh", 100.0),
        0x05 => energy("kWh", 1e3),
        0x06 => energy("10 kWh", 1e4),
        0x07 => energy("100 kWh", 1e5),
        0x08 => energy("MWh", 1e6),
        0x09 => energy("10 MWh", 1e7),
        0x0A => energy("100 MWh", 1e8),
        0x0B => joule("kJ", 1e3),
        0x0C => joule("10 kJ", 1e4),
        0x0D => joule("MJ", 1e6),
        0x0E => joule("100 kJ", 1e5),
        0x0F => joule("10 MJ", 1e7),
        0x10 => joule("100 MJ", 1e8),
        0x11 => joule("GJ", 1e9),
        0x12 => joule("10 GJ", 1e10),
        0x13 => joule("100 GJ", 1e11),
        0x14 => power("W", 1.0),
        0x15 => power("10 W", 10.0),
        0x16 => power("100 W", 100.0),
        0x17 => power("kW", 1e3),
        0x18 => power("10 kW", 1e4),
        0x19 => power("100 kW", 1e5),
        0x1A => power("MW", 1e6),
        0x1B => power("10 MW", 1e7),
        0x1C => power("100 MW", 1e8),
        0x1D => jph("kJ/h", 1e3),
        0x1E => jph("10 kJ/h", 1e4),
        0x1F => jph("100 kJ/h", 1e5),
        0x20 => jph("MJ/h", 1e6),
        0x21 => jph("10 MJ/h", 1e7),
        0x22 => jph("100 MJ/h", 1e8),
        0x23 => jph("GJ/h", 1e9),
        0x24 => jph("10 GJ/h", 1e10),
        0x25 => jph("100 GJ/h", 1e11),
        0x26 => volume("ml", 1e-6),
        0x27 => volume("10 ml", 1e-5),
        0x28 => volume("100 ml", 1e-4),
        0x29 => volume("l", 1e-3),
        0x2A => volume("10 l", 1e-2),
        0x2B => volume("100 l", 1e-1),
        0x2C => volume("m^3", 1.0),
        0x2D => volume("10 m^3", 10.0),
        0x2E => volume("100 m^3", 100.0),
        0x2F => flow("ml/h", 1e-6),
        0x30 => flow("10 ml/h", 1e-5),
        0x31 => flow("100 ml/h", 1e-4),
        0x32 => flow("l/h", 1e-3),
        0x33 => flow("10 l/h", 1e-2),
        0x34 => flow("100 l/h", 1e-1),
        0x35 => flow("m^3/h", 1.0),
        0x36 => flow("10 m^3/h", 10.0),
        0x37 => flow("100 m^3/h", 100.0),
        0x38 => m("Temperature", "1e-3 °C", "degC", 1e-3),
        0x39 => m("H.C.A.", "units for HCA", "", 1.0),
        0x3A..=0x3D => m("Reserved", "reserved", "", 1.0),
        0x3E => m("Reserved", "reserved but historic", "", 1.0),
        _ => m("", "without units", "", 1.0),
    }
}

//! IEC 62056-21 mode E: the opening that optical probes (and some RS-485 meters) need before HDLC.
//!
//! The sequence (IEC 62056-21 protocol mode E, Annex E "METERING HDLC protocol using protocol mode E";
//! Green Book chapter 8, direct local connection):
//!
//! 1. the client sets the line to 300 baud 7E1 and sends the sign-on [`sign_on`] `/?!CR LF` (or
//!    `/?ADDRESS!CR LF`);
//! 2. the meter answers its identification `/XXXZ\2ident CR LF` ([`parse_identification`]): `XXX` the
//!    manufacturer's FLAG id, `Z` the baud rate character ([`baud_rate`]), the enhanced identification
//!    `\2` saying the meter speaks HDLC (mode E), then up to 16 characters of identification;
//! 3. the client sends the acknowledgement [`ack_hdlc`] `ACK 2 Z 2 CR LF` (protocol control `2` = HDLC,
//!    mode control `2` = binary) still at 300 baud, waits for it to leave the line, then both sides switch
//!    to the baud rate `Z` with 8N1, and the HDLC session (SNRM …) starts.
//!
//! Step 3's line switch is the `Bus`'s job (`BusHandle::transact_with_line`); this module only builds and
//! parses the messages, both for the client and for a simulated optical meter ([`parse_sign_on`],
//! [`parse_ack`], [`identification`]).
//!
//! Panic contract: no parser here panics on any byte sequence; all scan a bounded prefix.

use crate::{Check, ReplyMatcher};

/// Acknowledge / option select message start character.
pub const ACK: u8 = 0x06;
/// Protocol control character `2`: HDLC (IEC 62056-46) follows — mode E.
pub const PROTOCOL_HDLC: u8 = b'2';
/// Mode control character `2`: binary mode (HDLC).
pub const MODE_BINARY: u8 = b'2';

/// Longest identification message accepted: `/` + 3 + `Z` + `\W` + 16 identification characters + CR LF
/// is 25 bytes; some meters send longer identifications, so up to 64 are tolerated.
pub const MAX_IDENTIFICATION_LEN: usize = 64;

/// Longest device address in a sign-on message (IEC 62056-21 allows 32 characters).
pub const MAX_DEVICE_ADDRESS_LEN: usize = 32;

/// Why bytes are not an identification message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModeEError {
    /// The message does not start with `/`.
    #[error("identification does not start with '/'")]
    NoStart,
    /// No CR LF within the message (or the buffer ends first).
    #[error("identification not terminated by CR LF")]
    Unterminated,
    /// Too short to hold `/XXXZ`.
    #[error("identification too short: {0} bytes")]
    TooShort(usize),
    /// The manufacturer id is not three printable characters.
    #[error("manufacturer id is not three printable characters")]
    BadManufacturer,
    /// A character outside printable ASCII in the identification.
    #[error("non-printable byte 0x{0:02X} in the identification")]
    BadCharacter(u8),
}

/// The sign-on request `/?!CR LF`, or `/?ADDRESS!CR LF` to address one meter on a shared line.
///
/// An address longer than 32 characters is cut to 32 (the meter would not answer a longer one anyway).
pub fn sign_on(device_address: Option<&str>) -> Vec<u8> {
    let mut out = b"/?".to_vec();
    if let Some(address) = device_address {
        out.extend(address.bytes().take(MAX_DEVICE_ADDRESS_LEN));
    }
    out.extend_from_slice(b"!\r\n");
    out
}

/// The meter's identification message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identification {
    /// Three-letter manufacturer id (FLAG), e.g. `LGZ`. A lower-case third letter means the meter answers
    /// within 20 ms (IEC 62056-21, identification message).
    pub manufacturer: String,
    /// The baud rate character `Z` ([`baud_rate`] maps it).
    pub baud_char: u8,
    /// True when the enhanced identification `\2` is present: the meter speaks HDLC (mode E).
    pub mode_e: bool,
    /// The identification proper, e.g. `ZMD3104107.B32`.
    pub ident: String,
}

/// Parses an identification message `/XXXZ[\W]ident CR LF` at the start of `buf` (leading bytes up to the
/// first `/` are skipped, so an optical probe's echo residue does not matter).
pub fn parse_identification(buf: &[u8]) -> Result<Identification, ModeEError> {
    let start = buf.iter().take(MAX_IDENTIFICATION_LEN).position(|&b| b == b'/').ok_or(ModeEError::NoStart)?;
    let msg = buf.get(start..).unwrap_or_default();
    let end = msg.windows(2).take(MAX_IDENTIFICATION_LEN).position(|w| w == b"\r\n").ok_or(ModeEError::Unterminated)?;
    let body = msg.get(1..end).unwrap_or_default(); // between '/' and CR
    if body.len() < 4 {
        return Err(ModeEError::TooShort(end + 2));
    }
    if let Some(&bad) = body.iter().find(|b| !(0x20..=0x7E).contains(*b)) {
        return Err(ModeEError::BadCharacter(bad));
    }
    let manufacturer = body.get(..3).unwrap_or_default();
    if !manufacturer.iter().all(u8::is_ascii_alphanumeric) {
        return Err(ModeEError::BadManufacturer);
    }
    let baud_char = body.get(3).copied().unwrap_or(b'0');
    let mut rest = body.get(4..).unwrap_or_default();
    let mut mode_e = false;
    // Enhanced identification: a backslash and one character; `\2` is mode E (IEC 62056-21 Annex E).
    if let [b'\\', w, tail @ ..] = rest {
        mode_e = *w == b'2';
        rest = tail;
    }
    Ok(Identification {
        manufacturer: String::from_utf8_lossy(manufacturer).into_owned(),
        baud_char,
        mode_e,
        ident: String::from_utf8_lossy(rest).into_owned(),
    })
}

/// The baud rate of a mode C/E baud rate character: `0` 300, `1` 600, `2` 1200, `3` 2400, `4` 4800,
/// `5` 9600, `6` 19200 (IEC 62056-21 mode C/E baud rate table). Other characters (mode B letters, reserved digits): `None`.
pub fn baud_rate(baud_char: u8) -> Option<u32> {
    match baud_char {
        b'0' => Some(300),
        b'1' => Some(600),
        b'2' => Some(1200),
        b'3' => Some(2400),
        b'4' => Some(4800),
        b'5' => Some(9600),
        b'6' => Some(19_200),
        _ => None,
    }
}

/// The acknowledgement that selects HDLC at baud rate `baud_char`: `ACK '2' Z '2' CR LF`.
pub fn ack_hdlc(baud_char: u8) -> Vec<u8> {
    vec![ACK, PROTOCOL_HDLC, baud_char, MODE_BINARY, b'\r', b'\n']
}

/// Recognises the identification reply to a sign-on: `Complete` at the first CR LF after a `/`.
///
/// An echo of our own sign-on (`/?…!CR LF`, half-duplex optical heads echo) and noise before the `/` are
/// `Foreign`; more than [`MAX_IDENTIFICATION_LEN`] bytes without CR LF is `Corrupt`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdentificationMatcher;

impl ReplyMatcher for IdentificationMatcher {
    fn check(&self, buf: &[u8]) -> Check {
        match buf.iter().position(|&b| b == b'/') {
            None => return Check::Foreign { skip: buf.len(), what: "noise before the identification".into() },
            Some(0) => {}
            Some(n) => return Check::Foreign { skip: n, what: "noise before the identification".into() },
        }
        let Some(end) = buf.windows(2).take(MAX_IDENTIFICATION_LEN).position(|w| w == b"\r\n") else {
            if buf.len() >= MAX_IDENTIFICATION_LEN {
                return Check::Corrupt { reason: format!("no CR LF within {MAX_IDENTIFICATION_LEN} bytes") };
            }
            return Check::Incomplete;
        };
        let len = end + 2;
        if buf.get(1) == Some(&b'?') {
            return Check::Foreign { skip: len, what: "echo of the sign-on".into() };
        }
        match parse_identification(buf.get(..len).unwrap_or_default()) {
            Ok(_) => Check::Complete { len },
            Err(e) => Check::Corrupt { reason: e.to_string() },
        }
    }
}

/// Server side: parses a sign-on request `/?[address]!CR LF` at the start of `buf` (bytes before the
/// first `/?` are skipped). Returns the device address (`None` when empty) and the bytes used, or `None`
/// while no complete sign-on is in `buf`.
pub fn parse_sign_on(buf: &[u8]) -> Option<(Option<String>, usize)> {
    let start = buf.windows(2).position(|w| w == b"/?")?;
    let after = start + 2;
    let tail = buf.get(after..)?;
    let end = tail.windows(3).take(MAX_DEVICE_ADDRESS_LEN + 1).position(|w| w == b"!\r\n")?;
    let address = tail.get(..end)?;
    let address = (!address.is_empty()).then(|| String::from_utf8_lossy(address).into_owned());
    Some((address, after + end + 3))
}

/// Server side: parses an acknowledgement/option select `ACK V Z Y CR LF` at the start of `buf` (bytes
/// before the first ACK are skipped). Returns protocol control `V`, baud character `Z`, mode control `Y`
/// and the bytes used, or `None` while none is complete.
pub fn parse_ack(buf: &[u8]) -> Option<(u8, u8, u8, usize)> {
    let start = buf.iter().position(|&b| b == ACK)?;
    match buf.get(start..start + 6)? {
        [_, v, z, y, b'\r', b'\n'] => Some((*v, *z, *y, start + 6)),
        _ => None,
    }
}

/// Server side: the identification message of a mode E meter, `/XXXZ\2ident CR LF`.
pub fn identification(manufacturer: &str, baud_char: u8, ident: &str) -> Vec<u8> {
    let mut out = vec![b'/'];
    out.extend(manufacturer.bytes().take(3));
    out.push(baud_char);
    out.extend_from_slice(b"\\2");
    out.extend(ident.bytes().take(MAX_IDENTIFICATION_LEN - 10));
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_on_with_and_without_address() {
        assert_eq!(sign_on(None), b"/?!\r\n");
        assert_eq!(sign_on(Some("12345678")), b"/?12345678!\r\n");
    }

    #[test]
    fn landis_gyr_mode_e_identification() {
        // Landis+Gyr ZMD: manufacturer LGZ, baud char '5' (9600), enhanced id \2 (HDLC), ident.
        let id = parse_identification(b"/LGZ5\\2ZMD3104107.B32\r\n").unwrap();
        assert_eq!(
            id,
            Identification {
                manufacturer: "LGZ".into(),
                baud_char: b'5',
                mode_e: true,
                ident: "ZMD3104107.B32".into()
            }
        );
        assert_eq!(baud_rate(id.baud_char), Some(9600));
    }

    #[test]
    fn mode_c_identification_has_no_enhanced_id() {
        let id = parse_identification(b"/ISk5ME162-0000\r\n").unwrap();
        assert_eq!(id.manufacturer, "ISk");
        assert!(!id.mode_e);
        assert_eq!(id.ident, "ME162-0000");
        // Another enhanced id (`\W` with W other than 2) is not mode E, and is not part of the ident.
        let id = parse_identification(b"/KFM6\\1MT174\r\n").unwrap();
        assert!(!id.mode_e);
        assert_eq!(id.ident, "MT174");
    }

    #[test]
    fn bad_identifications_are_typed_errors() {
        assert_eq!(parse_identification(b"LGZ5\r\n"), Err(ModeEError::NoStart));
        assert_eq!(parse_identification(b"/LGZ5\\2ZMD"), Err(ModeEError::Unterminated));
        assert_eq!(parse_identification(b"/LG\r\n"), Err(ModeEError::TooShort(5)));
        assert_eq!(parse_identification(b"/L Z5x\r\n"), Err(ModeEError::BadManufacturer));
        assert_eq!(parse_identification(b"/LGZ5\x01\r\n"), Err(ModeEError::BadCharacter(1)));
    }

    #[test]
    fn all_baud_characters() {
        let table = [(b'0', 300), (b'1', 600), (b'2', 1200), (b'3', 2400), (b'4', 4800), (b'5', 9600), (b'6', 19_200)];
        for (c, baud) in table {
            assert_eq!(baud_rate(c), Some(baud), "{}", c as char);
        }
        for c in [b'7', b'9', b'A', b'I', b'/', 0] {
            assert_eq!(baud_rate(c), None);
        }
    }

    #[test]
    fn ack_selects_hdlc_binary_mode() {
        assert_eq!(ack_hdlc(b'5'), [0x06, b'2', b'5', b'2', 0x0D, 0x0A]);
        assert_eq!(parse_ack(&ack_hdlc(b'5')), Some((b'2', b'5', b'2', 6)));
        assert_eq!(parse_ack(&ack_hdlc(b'5')[..5]), None);
    }

    #[test]
    fn server_side_round_trip() {
        assert_eq!(parse_sign_on(b"/?!\r\n"), Some((None, 5)));
        assert_eq!(parse_sign_on(b"\x00/?42!\r\nrest"), Some((Some("42".into()), 8)));
        assert_eq!(parse_sign_on(b"/?42!\r"), None);
        let msg = identification("LGZ", b'5', "ZMD3104107.B32");
        assert_eq!(msg, b"/LGZ5\\2ZMD3104107.B32\r\n");
        let id = parse_identification(&msg).unwrap();
        assert!(id.mode_e);
    }

    #[test]
    fn matcher_skips_echo_and_noise_and_bounds_the_wait() {
        let m = IdentificationMatcher;
        assert_eq!(m.check(b"/LGZ5\\2ZMD"), Check::Incomplete);
        assert_eq!(m.check(b"/LGZ5\\2ZMD3104107.B32\r\n"), Check::Complete { len: 23 });
        assert!(matches!(m.check(b"/?!\r\n/LGZ"), Check::Foreign { skip: 5, .. }));
        assert!(matches!(m.check(b"\x00\x7F/LGZ"), Check::Foreign { skip: 2, .. }));
        assert!(matches!(m.check(&[b'/'; 80]), Check::Corrupt { .. }));
    }
}

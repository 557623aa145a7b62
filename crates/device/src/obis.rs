//! OBIS codes (IEC 62056-6-1): `A-B:C.D.E*F`.

use std::fmt;
use std::str::FromStr;

/// An OBIS code, six value groups A..F. Parsed from `A-B:C.D.E*F` or `A-B:C.D.E` (F defaults to 255);
/// displayed in the full form, e.g. `1-0:1.8.0*255`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Obis(pub [u8; 6]);

/// A string that is not an OBIS code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad OBIS code {input:?}: expected A-B:C.D.E or A-B:C.D.E*F with groups 0..255, e.g. 1-0:1.8.0*255")]
pub struct ObisError {
    /// The text as given.
    pub input: String,
}

impl FromStr for Obis {
    type Err = ObisError;
    fn from_str(s: &str) -> Result<Self, ObisError> {
        let err = || ObisError { input: s.to_string() };
        let (a, rest) = s.split_once('-').ok_or_else(err)?;
        let (b, rest) = rest.split_once(':').ok_or_else(err)?;
        let (cde, f) = match rest.split_once('*') {
            Some((cde, f)) => (cde, f),
            None => (rest, "255"),
        };
        let mut it = cde.split('.');
        let (c, d, e) = (it.next().ok_or_else(err)?, it.next().ok_or_else(err)?, it.next().ok_or_else(err)?);
        if it.next().is_some() {
            return Err(err());
        }
        let mut out = [0u8; 6];
        for (slot, part) in out.iter_mut().zip([a, b, c, d, e, f]) {
            if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err());
            }
            *slot = part.parse().map_err(|_| err())?;
        }
        Ok(Obis(out))
    }
}

impl fmt::Display for Obis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a}-{b}:{c}.{d}.{e}*{g}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_short_and_full_forms() {
        assert_eq!("1-0:1.8.0".parse::<Obis>().unwrap(), Obis([1, 0, 1, 8, 0, 255]));
        assert_eq!("1-0:32.7.0*255".parse::<Obis>().unwrap().to_string(), "1-0:32.7.0*255");
        assert_eq!("0-0:96.1.0*0".parse::<Obis>().unwrap(), Obis([0, 0, 96, 1, 0, 0]));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "1.8.0", "1-0:1.8", "1-0:1.8.0.1", "1-0:1.8.256", "a-0:1.8.0", "1-0:1.8.0*", "1-0:+1.8.0"] {
            assert!(bad.parse::<Obis>().is_err(), "{bad}");
        }
    }
}

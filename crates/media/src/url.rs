//! Media URLs: `tcp://host:port` and `serial:///dev/ttyX?baud=9600&parity=none&data=8&stop=1`.

use std::fmt;
use std::str::FromStr;

/// Serial parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Parity {
    /// No parity bit (`parity=none`, the default).
    #[default]
    None,
    /// Even parity (`parity=even`), as M-Bus (8E1) uses.
    Even,
    /// Odd parity (`parity=odd`).
    Odd,
}

/// Serial line settings. Defaults: 9600 baud, 8 data bits, no parity, 1 stop bit (9600 8N1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SerialSettings {
    /// Baud rate, 50..=4_000_000. Default 9600.
    pub baud: u32,
    /// Parity. Default none.
    pub parity: Parity,
    /// Data bits, 5..=8. Default 8.
    pub data_bits: u8,
    /// Stop bits, 1 or 2. Default 1.
    pub stop_bits: u8,
}

impl Default for SerialSettings {
    fn default() -> Self {
        Self { baud: 9600, parity: Parity::None, data_bits: 8, stop_bits: 1 }
    }
}

impl SerialSettings {
    /// Bits on the wire per character (start + data + parity + stop), used for silence intervals.
    pub fn bits_per_char(&self) -> u32 {
        1 + u32::from(self.data_bits) + u32::from(self.parity != Parity::None) + u32::from(self.stop_bits)
    }
}

impl fmt::Display for SerialSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = match self.parity {
            Parity::None => 'N',
            Parity::Even => 'E',
            Parity::Odd => 'O',
        };
        write!(f, "{} {}{}{}", self.baud, self.data_bits, p, self.stop_bits)
    }
}

/// A parsed media URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaUrl {
    /// `tcp://host:port`: a Modbus TCP device, a transparent serial-over-TCP gateway, or a meter's own
    /// TCP port. Optional query `framing=rtu|tcp` is kept for the protocol layer (media ignores it).
    Tcp {
        /// Host name or address.
        host: String,
        /// TCP port.
        port: u16,
        /// Optional `framing` query parameter, passed to the protocol layer untouched.
        framing: Option<String>,
    },
    /// `serial:///dev/ttyUSB0?baud=9600&parity=none&data=8&stop=1`.
    Serial {
        /// Device path.
        path: String,
        /// Line settings from the query (defaults for missing keys).
        settings: SerialSettings,
        /// True when the URL named any line setting explicitly (profiles may then not override them).
        explicit: bool,
    },
}

/// A media URL that does not parse; the message says which part and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad media URL {url:?}: {reason}")]
pub struct UrlError {
    /// The URL as given.
    pub url: String,
    /// What is wrong.
    pub reason: String,
}

impl MediaUrl {
    /// The serial settings when this is a serial URL.
    pub fn serial_settings(&self) -> Option<SerialSettings> {
        match self {
            MediaUrl::Serial { settings, .. } => Some(*settings),
            MediaUrl::Tcp { .. } => None,
        }
    }

    /// The `framing` query parameter of a TCP URL.
    pub fn framing(&self) -> Option<&str> {
        match self {
            MediaUrl::Tcp { framing, .. } => framing.as_deref(),
            MediaUrl::Serial { .. } => None,
        }
    }
}

impl FromStr for MediaUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| UrlError { url: s.to_string(), reason };
        let (scheme, rest) =
            s.split_once("://").ok_or_else(|| err("expected tcp://host:port or serial:///dev/…".into()))?;
        let (body, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        let params: Vec<(&str, &str)> = match query {
            None | Some("") => Vec::new(),
            Some(q) => q
                .split('&')
                .map(|kv| kv.split_once('=').ok_or_else(|| err(format!("query part {kv:?} is not key=value"))))
                .collect::<Result<_, _>>()?,
        };
        match scheme {
            "tcp" => {
                let (host, port) = body
                    .rsplit_once(':')
                    .ok_or_else(|| err("expected tcp://host:port (the port is required)".into()))?;
                let host = host.trim_start_matches('[').trim_end_matches(']');
                if host.is_empty() {
                    return Err(err("missing host".into()));
                }
                let port: u16 = port
                    .trim_end_matches('/')
                    .parse()
                    .map_err(|_| err(format!("port {port:?} is not a number 1..=65535")))?;
                if port == 0 {
                    return Err(err("port 0 is not allowed".into()));
                }
                let mut framing = None;
                for (k, v) in params {
                    match k {
                        "framing" => match v {
                            "rtu" | "tcp" => framing = Some(v.to_string()),
                            _ => return Err(err(format!("framing {v:?} (expected rtu or tcp)"))),
                        },
                        _ => return Err(err(format!("unknown parameter {k:?} for tcp (expected framing)"))),
                    }
                }
                Ok(MediaUrl::Tcp { host: host.to_string(), port, framing })
            }
            "serial" => {
                if !body.starts_with('/') || body.len() < 2 {
                    return Err(err("expected serial:///dev/ttyX (an absolute device path)".into()));
                }
                let mut settings = SerialSettings::default();
                let explicit = !params.is_empty();
                for (k, v) in params {
                    match k {
                        "baud" => {
                            settings.baud = v
                                .parse()
                                .ok()
                                .filter(|b| (50..=4_000_000).contains(b))
                                .ok_or_else(|| err(format!("baud {v:?} (expected 50..4000000)")))?;
                        }
                        "parity" => {
                            settings.parity = match v {
                                "none" | "n" | "N" => Parity::None,
                                "even" | "e" | "E" => Parity::Even,
                                "odd" | "o" | "O" => Parity::Odd,
                                _ => return Err(err(format!("parity {v:?} (expected none, even or odd)"))),
                            }
                        }
                        "data" => {
                            settings.data_bits = v
                                .parse()
                                .ok()
                                .filter(|d| (5..=8).contains(d))
                                .ok_or_else(|| err(format!("data {v:?} (expected 5, 6, 7 or 8)")))?;
                        }
                        "stop" => {
                            settings.stop_bits = v
                                .parse()
                                .ok()
                                .filter(|d| (1..=2).contains(d))
                                .ok_or_else(|| err(format!("stop {v:?} (expected 1 or 2)")))?;
                        }
                        _ => {
                            return Err(err(format!(
                                "unknown parameter {k:?} for serial (expected baud, parity, data, stop)"
                            )))
                        }
                    }
                }
                Ok(MediaUrl::Serial { path: body.to_string(), settings, explicit })
            }
            other => Err(err(format!("unknown scheme {other:?} (expected tcp or serial)"))),
        }
    }
}

impl fmt::Display for MediaUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MediaUrl::Tcp { host, port, framing } => {
                if host.contains(':') {
                    write!(f, "tcp://[{host}]:{port}")?;
                } else {
                    write!(f, "tcp://{host}:{port}")?;
                }
                if let Some(fr) = framing {
                    write!(f, "?framing={fr}")?;
                }
                Ok(())
            }
            MediaUrl::Serial { path, settings, .. } => {
                let p = match settings.parity {
                    Parity::None => "none",
                    Parity::Even => "even",
                    Parity::Odd => "odd",
                };
                write!(
                    f,
                    "serial://{path}?baud={}&parity={p}&data={}&stop={}",
                    settings.baud, settings.data_bits, settings.stop_bits
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcp() {
        let u: MediaUrl = "tcp://127.0.0.1:502".parse().unwrap();
        assert_eq!(u, MediaUrl::Tcp { host: "127.0.0.1".into(), port: 502, framing: None });
        let u: MediaUrl = "tcp://gw:4001?framing=rtu".parse().unwrap();
        assert_eq!(u.framing(), Some("rtu"));
        assert_eq!(u.to_string(), "tcp://gw:4001?framing=rtu");
    }

    #[test]
    fn parses_serial_with_settings() {
        let u: MediaUrl = "serial:///dev/ttyUSB0?baud=2400&parity=even&data=8&stop=1".parse().unwrap();
        let s = u.serial_settings().unwrap();
        assert_eq!((s.baud, s.parity, s.data_bits, s.stop_bits), (2400, Parity::Even, 8, 1));
        assert_eq!(s.bits_per_char(), 11);
        let back: MediaUrl = u.to_string().parse().unwrap();
        assert_eq!(back, u);
    }

    #[test]
    fn rejects_bad_urls_with_reason() {
        for (bad, needle) in [
            ("udp://x:1", "unknown scheme"),
            ("tcp://host", "port is required"),
            ("tcp://host:99999", "port"),
            ("serial://ttyUSB0", "absolute device path"),
            ("serial:///dev/ttyS0?baud=fast", "baud"),
            ("serial:///dev/ttyS0?parity=mark", "parity"),
            ("serial:///dev/ttyS0?speed=9600", "unknown parameter"),
        ] {
            let e = bad.parse::<MediaUrl>().unwrap_err();
            assert!(e.to_string().contains(needle), "{bad}: {e}");
        }
    }
}

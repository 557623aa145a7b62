//! The one data model every protocol ends in (see `shared/design.md`).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::Obis;

/// A reading's value: a number, or text (serial numbers, status words).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number with scale and offset applied.
    Number(f64),
    /// Text.
    Text(String),
}

/// Quality of a reading: `ok`, or flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Quality {
    /// The meter reported an error status with this value.
    pub meter_error: bool,
    /// The timestamp came from a clock that was not trusted when the value was taken.
    pub clock_untrusted: bool,
    /// The value is estimated, not measured.
    pub estimated: bool,
}

impl Quality {
    /// No flags.
    pub const OK: Quality = Quality { meter_error: false, clock_untrusted: false, estimated: false };

    /// `ok`, or the set flags joined by `,` (`meter_error,clock_untrusted`).
    pub fn as_text(&self) -> String {
        let mut flags = Vec::new();
        if self.meter_error {
            flags.push("meter_error");
        }
        if self.clock_untrusted {
            flags.push("clock_untrusted");
        }
        if self.estimated {
            flags.push("estimated");
        }
        if flags.is_empty() {
            "ok".into()
        } else {
            flags.join(",")
        }
    }

    /// Parses [`Quality::as_text`] output; unknown flags are ignored.
    pub fn from_text(s: &str) -> Quality {
        let mut q = Quality::OK;
        for f in s.split(',') {
            match f.trim() {
                "meter_error" => q.meter_error = true,
                "clock_untrusted" => q.clock_untrusted = true,
                "estimated" => q.estimated = true,
                _ => {}
            }
        }
        q
    }
}

/// One value read from one meter at one time.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Site-unique meter id from config.
    pub meter: String,
    /// The profile's value name.
    pub name: String,
    /// OBIS code.
    pub obis: Obis,
    /// The value.
    pub value: Value,
    /// Unit symbol, empty when dimensionless.
    pub unit: String,
    /// UTC timestamp.
    pub ts: DateTime<Utc>,
    /// Quality flags.
    pub quality: Quality,
}

impl Reading {
    /// The timestamp as RFC 3339 with a `Z` suffix and whole seconds when there is no fraction.
    pub fn ts_text(&self) -> String {
        self.ts.to_rfc3339_opts(SecondsFormat::AutoSi, true)
    }

    /// One JSON object on one line, as the design map's command-line contract says.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

impl Serialize for Reading {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(7))?;
        m.serialize_entry("meter", &self.meter)?;
        m.serialize_entry("name", &self.name)?;
        m.serialize_entry("obis", &self.obis.to_string())?;
        match &self.value {
            Value::Number(n) if n.is_finite() => m.serialize_entry("value", n)?,
            Value::Number(n) => m.serialize_entry("value", &n.to_string())?,
            Value::Text(t) => m.serialize_entry("value", t)?,
        }
        m.serialize_entry("unit", &self.unit)?;
        m.serialize_entry("ts", &self.ts_text())?;
        m.serialize_entry("quality", &self.quality.as_text())?;
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn json_line_has_the_design_map_fields() {
        let r = Reading {
            meter: "m1".into(),
            name: "voltage_l1".into(),
            obis: "1-0:32.7.0".parse().unwrap(),
            value: Value::Number(231.7),
            unit: "V".into(),
            ts: Utc.with_ymd_and_hms(2026, 11, 24, 9, 0, 0).unwrap(),
            quality: Quality::OK,
        };
        assert_eq!(
            r.to_json_line(),
            r#"{"meter":"m1","name":"voltage_l1","obis":"1-0:32.7.0*255","value":231.7,"unit":"V","ts":"2026-11-24T09:00:00Z","quality":"ok"}"#
        );
    }

    #[test]
    fn quality_round_trips() {
        let q = Quality { meter_error: true, clock_untrusted: true, estimated: false };
        assert_eq!(q.as_text(), "meter_error,clock_untrusted");
        assert_eq!(Quality::from_text(&q.as_text()), q);
        assert_eq!(Quality::from_text("ok"), Quality::OK);
    }
}

//! The uplink's wire format: what a site's collector POSTs to `ami-central` and what comes back.
//!
//! This crate is the only code the field crates share with the central store. It owns the JSON shapes,
//! their compression and the limits both sides enforce; it does no I/O.
//!
//! A batch groups readings by series (meter + OBIS) so names, units and ids are sent once, and each point
//! is a compact `[t, v]` or `[t, v, "quality"]` array. The body is gzip-compressed: on a cellular link that
//! is billed per byte this is what keeps a reading to a few bytes on the wire.
//!
//! Panic contract: decoding never panics on any input; every failure is a [`WireError`].

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

/// Ingest endpoint path.
pub const INGEST_PATH: &str = "/api/v1/ingest";

/// Largest compressed request body the central store accepts (bytes).
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// Largest decompressed request body the central store accepts (bytes); guards against gzip bombs.
pub const MAX_DECOMPRESSED: usize = 64 * 1024 * 1024;

/// Largest number of readings in one batch.
pub const MAX_READINGS_PER_BATCH: usize = 100_000;

/// A point's value: a number or text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PointValue {
    /// A number (finite).
    Number(f64),
    /// Text (serial numbers, status words).
    Text(String),
}

/// One reading of a series: timestamp (ms since the Unix epoch, UTC), value, and quality (`None` = ok).
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Milliseconds since 1970-01-01T00:00:00Z.
    pub t: i64,
    /// The value.
    pub v: PointValue,
    /// Quality flags as in the design map (`meter_error,clock_untrusted`); `None` means `ok`.
    pub q: Option<String>,
}

impl Serialize for Point {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(if self.q.is_some() { 3 } else { 2 })?;
        t.serialize_element(&self.t)?;
        t.serialize_element(&self.v)?;
        if let Some(q) = &self.q {
            t.serialize_element(q)?;
        }
        t.end()
    }
}

impl<'de> Deserialize<'de> for Point {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Two(i64, PointValue),
            Three(i64, PointValue, Option<String>),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::Two(t, v) => Point { t, v, q: None },
            Raw::Three(t, v, q) => Point { t, v, q: q.filter(|q| q != "ok") },
        })
    }
}

/// All points of one meter's value in a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Series {
    /// Meter id (site-unique).
    pub meter: String,
    /// The profile's value name.
    pub name: String,
    /// OBIS code `A-B:C.D.E*F`.
    pub obis: String,
    /// Unit symbol; empty for dimensionless.
    #[serde(default)]
    pub unit: String,
    /// `instantaneous`, `counter` or `static`.
    #[serde(default = "default_kind")]
    pub kind: String,
    /// The readings, oldest first.
    pub points: Vec<Point>,
}

fn default_kind() -> String {
    "instantaneous".into()
}

/// A command from the central store to a site, delivered in an ingest response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    /// Central command id; the site runs each id at most once.
    pub id: i64,
    /// Target meter id.
    pub meter: String,
    /// What to do.
    pub action: Action,
}

/// What a command asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Read every value of the meter now and send the readings with the next batch.
    ReadNow,
    /// Switch a control of the meter's profile (e.g. `relay`): `on = false` disconnects.
    Control {
        /// Control name in the profile.
        name: String,
        /// Target state.
        on: bool,
    },
    /// Set the meter's clock to the site's (trusted) time.
    SetClock,
}

/// The outcome of a command, sent up with the next batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandResult {
    /// The command's id.
    pub id: i64,
    /// Whether it succeeded.
    pub ok: bool,
    /// What happened, for an operator.
    pub message: String,
    /// When it finished (ms since the epoch, site clock).
    pub at: i64,
}

/// Per-meter health for the heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct MeterHealth {
    /// Meter id.
    pub meter: String,
    /// Bus id.
    pub bus: String,
    /// Last successful read (ms since the epoch).
    pub last_good: Option<i64>,
    /// Failed polls since the last good one.
    pub consecutive_failures: u64,
    /// Polls that succeeded since the store was created.
    pub reads_ok: u64,
    /// Polls that failed.
    pub reads_failed: u64,
    /// The last error text.
    pub last_error: Option<String>,
}

/// Per-line link counters for the heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct BusHealth {
    /// Bus id.
    pub bus: String,
    /// Exchanges requested.
    pub requests: u64,
    /// Exchanges answered.
    pub replies: u64,
    /// Attempts that timed out.
    pub timeouts: u64,
    /// Attempts with a corrupt reply.
    pub checksum_errors: u64,
    /// Attempts beyond the first.
    pub retries: u64,
    /// Frames that did not belong to the request.
    pub rejected: u64,
    /// Exchanges that failed for good.
    pub failures: u64,
}

/// The site's health, sent with every batch (a heartbeat when there is nothing else to send).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Health {
    /// amid version.
    pub version: String,
    /// Seconds since the daemon started.
    pub uptime_s: u64,
    /// Whether the site clock is trusted (synchronised, not in 1970).
    pub clock_trusted: bool,
    /// Readings stored and not yet acknowledged by the central store.
    pub store_depth: u64,
    /// Timestamp of the oldest unsent reading (ms), if any.
    pub oldest_unsent: Option<i64>,
    /// Readings dropped by the store's overflow policy since the store was created.
    pub dropped: u64,
    /// Readings the central store refused as invalid (kept at the site, set aside) since the store was
    /// created.
    pub rejected: u64,
    /// Per meter.
    pub meters: Vec<MeterHealth>,
    /// Per bus.
    pub buses: Vec<BusHealth>,
}

/// What a site POSTs to [`INGEST_PATH`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct IngestRequest {
    /// The site id (must match the token's site).
    pub site: String,
    /// The site's batch sequence number (for logs; idempotency comes from the reading keys).
    #[serde(default)]
    pub batch: u64,
    /// Site time when the batch was sent (ms).
    #[serde(default)]
    pub sent_at: i64,
    /// Readings grouped by series.
    #[serde(default)]
    pub series: Vec<Series>,
    /// Results of commands run since the last acknowledged batch.
    #[serde(default)]
    pub results: Vec<CommandResult>,
    /// Ids of commands the site has received and stored (the central store stops re-sending them).
    #[serde(default)]
    pub received: Vec<i64>,
    /// Heartbeat.
    #[serde(default)]
    pub health: Option<Health>,
}

impl IngestRequest {
    /// Number of readings in the batch.
    pub fn readings(&self) -> usize {
        self.series.iter().map(|s| s.points.len()).sum()
    }
}

/// What the central store answers to an accepted batch. Only after this arrives may the site mark the
/// batch's readings as sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct IngestResponse {
    /// Readings in the batch.
    pub readings: u64,
    /// Of those, readings that were new (the rest were already stored: a re-sent batch).
    pub inserted: u64,
    /// Commands for the site (including ones sent before and not yet confirmed as received).
    pub commands: Vec<Command>,
}

/// Errors decoding a body.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The body is larger than the limit.
    #[error("body larger than {limit} bytes")]
    TooLarge {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// The gzip stream is damaged.
    #[error("bad gzip body: {0}")]
    Gzip(String),
    /// The JSON does not match the schema; the message names the field and position.
    #[error("bad JSON: {0}")]
    Json(String),
    /// The batch breaks a rule (too many readings, non-finite number, empty ids).
    #[error("invalid batch: {0}")]
    Invalid(String),
}

/// Serialises and gzip-compresses a value.
pub fn encode_gzip<T: Serialize>(value: &T) -> Vec<u8> {
    let json = serde_json::to_vec(value).unwrap_or_default();
    let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(json.len() / 4), flate2::Compression::new(6));
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(&json);
    enc.finish().unwrap_or_default()
}

/// Decompresses (when `gzip`) with a size limit and parses JSON.
pub fn decode_body<T: for<'de> Deserialize<'de>>(body: &[u8], gzip: bool) -> Result<T, WireError> {
    if body.len() > MAX_BODY {
        return Err(WireError::TooLarge { limit: MAX_BODY });
    }
    let json;
    let bytes = if gzip {
        let mut out = Vec::new();
        let limit = u64::try_from(MAX_DECOMPRESSED).unwrap_or(u64::MAX) + 1;
        flate2::read::GzDecoder::new(body)
            .take(limit)
            .read_to_end(&mut out)
            .map_err(|e| WireError::Gzip(e.to_string()))?;
        if out.len() > MAX_DECOMPRESSED {
            return Err(WireError::TooLarge { limit: MAX_DECOMPRESSED });
        }
        json = out;
        &json[..]
    } else {
        body
    };
    serde_json::from_slice(bytes).map_err(|e| WireError::Json(e.to_string()))
}

/// Checks the rules serde cannot: limits, finite numbers, non-empty ids.
pub fn validate(req: &IngestRequest) -> Result<(), WireError> {
    if req.site.is_empty() {
        return Err(WireError::Invalid("site is empty".into()));
    }
    if req.readings() > MAX_READINGS_PER_BATCH {
        return Err(WireError::Invalid(format!("more than {MAX_READINGS_PER_BATCH} readings")));
    }
    for (i, s) in req.series.iter().enumerate() {
        if s.meter.is_empty() || s.obis.is_empty() {
            return Err(WireError::Invalid(format!("series[{i}]: meter and obis must not be empty")));
        }
        if !matches!(s.kind.as_str(), "instantaneous" | "counter" | "static") {
            return Err(WireError::Invalid(format!("series[{i}]: unknown kind {:?}", s.kind)));
        }
        for (j, p) in s.points.iter().enumerate() {
            if let PointValue::Number(n) = p.v {
                if !n.is_finite() {
                    return Err(WireError::Invalid(format!("series[{i}].points[{j}]: value is not finite")));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> IngestRequest {
        IngestRequest {
            site: "s1".into(),
            batch: 7,
            sent_at: 1_700_000_000_000,
            series: vec![Series {
                meter: "m1".into(),
                name: "energy_import_total".into(),
                obis: "1-0:1.8.0*255".into(),
                unit: "Wh".into(),
                kind: "counter".into(),
                points: vec![
                    Point { t: 1_700_000_000_000, v: PointValue::Number(12.5), q: None },
                    Point { t: 1_700_000_900_000, v: PointValue::Text("x".into()), q: Some("estimated".into()) },
                ],
            }],
            results: vec![CommandResult { id: 3, ok: true, message: "relay off".into(), at: 5 }],
            received: vec![3],
            health: Some(Health { store_depth: 4, ..Health::default() }),
        }
    }

    #[test]
    fn points_are_compact_arrays() {
        let json = serde_json::to_string(&sample().series[0].points).unwrap();
        assert_eq!(json, r#"[[1700000000000,12.5],[1700000900000,"x","estimated"]]"#);
    }

    #[test]
    fn gzip_round_trip() {
        let req = sample();
        let body = encode_gzip(&req);
        let back: IngestRequest = decode_body(&body, true).unwrap();
        assert_eq!(back, req);
        validate(&back).unwrap();
    }

    #[test]
    fn hostile_bodies_are_errors_not_panics() {
        assert!(matches!(decode_body::<IngestRequest>(b"\x1f\x8b garbage", true), Err(WireError::Gzip(_))));
        assert!(matches!(decode_body::<IngestRequest>(b"{\"site\":1}", false), Err(WireError::Json(_))));
        assert!(matches!(decode_body::<IngestRequest>(b"{\"site\":\"s\",\"x\":1}", false), Err(WireError::Json(_))));
        let big = vec![b' '; MAX_BODY + 1];
        assert!(matches!(decode_body::<IngestRequest>(&big, false), Err(WireError::TooLarge { .. })));
        // A gzip bomb: 100 MB of zeros compresses to ~100 KB.
        let bomb = {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            let zeros = vec![0u8; 1 << 20];
            for _ in 0..100 {
                enc.write_all(&zeros).unwrap();
            }
            enc.finish().unwrap()
        };
        assert!(matches!(decode_body::<IngestRequest>(&bomb, true), Err(WireError::TooLarge { .. })));
        let mut bad = sample();
        bad.series[0].points[0].v = PointValue::Number(f64::NAN);
        assert!(validate(&bad).is_err());
    }

    #[test]
    fn commands_are_tagged() {
        let c = Command { id: 1, meter: "m".into(), action: Action::Control { name: "relay".into(), on: false } };
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, r#"{"id":1,"meter":"m","action":{"type":"control","name":"relay","on":false}}"#);
        assert_eq!(serde_json::from_str::<Command>(&json).unwrap(), c);
    }
}

//! The readings query: parameters, time buckets and aggregation, JSON and CSV output.
//!
//! Aggregation runs here, on the rows of one series in the requested range (read in time order through
//! the `(series_id, ts)` index), so SQLite and PostgreSQL give identical answers. Buckets are aligned in
//! UTC: 15 min, hour and day on multiples of their length since the epoch, month on the first day of the
//! calendar month. Only numeric readings are aggregated; text readings appear only at `resolution=raw`.
//!
//! Aggregates per bucket: `avg`, `min`, `max`, `last` of the readings in the bucket, and `delta` for
//! counters. `delta` is the counter's advance over the bucket: the first reading of the next bucket
//! (or, for the last bucket of the range, the first reading at or after `to`) minus the first reading
//! of this bucket; with no later reading, the last reading of the bucket minus its first. So hourly
//! deltas add up to the daily delta and to the meter's advance over the whole range, and the energy
//! across a gap in the data is counted in the bucket before the gap.
//!
//! Quality of an aggregated row: `ok`, or the union of the flags of the readings it was made from.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, NaiveDate, SecondsFormat, TimeZone, Utc};
use serde::Serialize;

use crate::db::StoredPoint;

/// Longest range one query may read, in readings across its series (a year of 15-min data is 35 040).
pub const MAX_POINTS: u64 = 2_000_000;

/// Bucket size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Every reading as stored.
    Raw,
    /// 15 minutes.
    Min15,
    /// One hour.
    Hour,
    /// One UTC day.
    Day,
    /// One UTC calendar month.
    Month,
}

impl Resolution {
    /// Parses `raw`, `15m`, `hour`, `day`, `month`.
    pub fn parse(s: &str) -> Option<Resolution> {
        Some(match s {
            "raw" => Resolution::Raw,
            "15m" => Resolution::Min15,
            "hour" => Resolution::Hour,
            "day" => Resolution::Day,
            "month" => Resolution::Month,
            _ => return None,
        })
    }

    /// Start (ms) of the bucket holding `ts`; `None` for `Raw` or a time chrono cannot represent.
    pub fn bucket_start(self, ts: i64) -> Option<i64> {
        let step: i64 = match self {
            Resolution::Raw => return None,
            Resolution::Min15 => 900_000,
            Resolution::Hour => 3_600_000,
            Resolution::Day => 86_400_000,
            Resolution::Month => {
                let t = Utc.timestamp_millis_opt(ts).single()?;
                let first = NaiveDate::from_ymd_opt(t.year(), t.month(), 1)?.and_hms_opt(0, 0, 0)?;
                return Some(first.and_utc().timestamp_millis());
            }
        };
        Some(ts.div_euclid(step) * step)
    }
}

/// Aggregate function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agg {
    /// Mean.
    Avg,
    /// Minimum.
    Min,
    /// Maximum.
    Max,
    /// Last reading in the bucket.
    Last,
    /// Counter advance over the bucket (see the module doc).
    Delta,
}

impl Agg {
    /// Parses `avg`, `min`, `max`, `last`, `delta`.
    pub fn parse(s: &str) -> Option<Agg> {
        Some(match s {
            "avg" => Agg::Avg,
            "min" => Agg::Min,
            "max" => Agg::Max,
            "last" => Agg::Last,
            "delta" => Agg::Delta,
            _ => return None,
        })
    }
}

/// A reading's value in the output.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum OutValue {
    /// Number.
    Number(f64),
    /// Text (raw resolution only).
    Text(String),
}

/// One output row: a stored reading (raw) or a bucket (aggregated), without the series' labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Timestamp (ms); the bucket start for aggregated rows.
    pub ts: i64,
    /// Value.
    pub value: OutValue,
    /// Quality flags; `None` = ok.
    pub quality: Option<String>,
}

struct Bucket {
    start: i64,
    first: f64,
    last: f64,
    min: f64,
    max: f64,
    sum: f64,
    n: u64,
    flags: BTreeSet<String>,
}

/// Rows for one series. `points` are in time order; `after` is the first numeric reading at or after the
/// range's end (only used by `delta`).
pub fn aggregate(points: &[StoredPoint], res: Resolution, agg: Agg, after: Option<f64>) -> Vec<Row> {
    if res == Resolution::Raw {
        return points
            .iter()
            .filter_map(|p| {
                let value = match (&p.value, &p.text) {
                    (Some(v), _) => OutValue::Number(*v),
                    (None, Some(t)) => OutValue::Text(t.clone()),
                    (None, None) => return None,
                };
                Some(Row { ts: p.ts, value, quality: p.quality.clone() })
            })
            .collect();
    }
    let mut buckets: Vec<Bucket> = Vec::new();
    for p in points {
        let (Some(v), Some(start)) = (p.value, res.bucket_start(p.ts)) else { continue };
        let same = buckets.last().is_some_and(|b| b.start == start);
        if !same {
            buckets.push(Bucket { start, first: v, last: v, min: v, max: v, sum: 0.0, n: 0, flags: BTreeSet::new() });
        }
        if let Some(b) = buckets.last_mut() {
            b.last = v;
            b.min = b.min.min(v);
            b.max = b.max.max(v);
            b.sum += v;
            b.n += 1;
            if let Some(q) = &p.quality {
                b.flags.extend(q.split(',').map(str::trim).filter(|f| !f.is_empty() && *f != "ok").map(String::from));
            }
        }
    }
    let firsts: Vec<f64> = buckets.iter().map(|b| b.first).collect();
    buckets
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let value = match agg {
                // n >= 1: a bucket exists only once a reading was added to it.
                Agg::Avg => b.sum / b.n as f64,
                Agg::Min => b.min,
                Agg::Max => b.max,
                Agg::Last => b.last,
                Agg::Delta => {
                    let end = firsts.get(i + 1).copied().or(after).unwrap_or(b.last);
                    end - b.first
                }
            };
            let quality = (!b.flags.is_empty()).then(|| b.flags.iter().cloned().collect::<Vec<_>>().join(","));
            Row { ts: b.start, value: OutValue::Number(value), quality }
        })
        .collect()
}

/// RFC 3339 in UTC with `Z`, fractional seconds only when present (`2026-11-24T09:00:00Z`).
pub fn rfc3339(ms: i64) -> String {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        None => ms.to_string(),
    }
}

/// Parses an RFC 3339 time to ms.
pub fn parse_time(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp_millis())
}

/// A design-map `Reading` as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReadingOut<'a> {
    /// Meter id.
    pub meter: &'a str,
    /// Value name.
    pub name: &'a str,
    /// OBIS code.
    pub obis: &'a str,
    /// Value.
    pub value: &'a OutValue,
    /// Unit.
    pub unit: &'a str,
    /// RFC 3339 time (bucket start for aggregated rows).
    pub ts: String,
    /// `ok` or flags.
    pub quality: &'a str,
}

/// The CSV header line.
pub const CSV_HEADER: &str = "meter,name,obis,ts,value,unit,quality\n";

/// One CSV field, quoted when it holds a comma, quote or line break (RFC 4180).
pub fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        std::borrow::Cow::Owned(format!("\"{}\"", s.replace('"', "\"\"")))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// Appends one reading as a CSV line.
pub fn csv_line(out: &mut String, r: &ReadingOut<'_>) {
    let value = match r.value {
        OutValue::Number(n) => n.to_string(),
        OutValue::Text(t) => t.clone(),
    };
    let fields = [r.meter, r.name, r.obis, &r.ts, &value, r.unit, r.quality];
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&csv_field(f));
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_795_392_000_000; // 2026-11-23T00:00:00Z

    fn counter_day() -> Vec<StoredPoint> {
        (0..96)
            .map(|i| StoredPoint {
                ts: T0 + i * 900_000,
                value: Some(1000.0 + i as f64 * 250.0),
                text: None,
                quality: None,
            })
            .collect()
    }

    #[test]
    fn month_buckets_follow_the_calendar() {
        let t = parse_time("2026-02-28T23:59:59.999Z").unwrap();
        assert_eq!(rfc3339(Resolution::Month.bucket_start(t).unwrap()), "2026-02-01T00:00:00Z");
        let t = parse_time("2024-02-29T12:00:00Z").unwrap();
        assert_eq!(rfc3339(Resolution::Month.bucket_start(t).unwrap()), "2024-02-01T00:00:00Z");
        assert_eq!(rfc3339(Resolution::Day.bucket_start(T0 + 86_399_999).unwrap()), "2026-11-23T00:00:00Z");
        assert_eq!(Resolution::Hour.bucket_start(-1), Some(-3_600_000));
    }

    #[test]
    fn hourly_deltas_add_up_to_the_days_advance() {
        let rows = aggregate(&counter_day(), Resolution::Hour, Agg::Delta, None);
        assert_eq!(rows.len(), 24);
        for r in &rows[..23] {
            assert_eq!(r.value, OutValue::Number(1000.0));
        }
        // The last hour has no later reading: 23:00 .. 23:45 is three intervals.
        assert_eq!(rows[23].value, OutValue::Number(750.0));
        // With the next day's first reading the last hour is whole.
        let rows = aggregate(&counter_day(), Resolution::Hour, Agg::Delta, Some(1000.0 + 96.0 * 250.0));
        assert_eq!(rows[23].value, OutValue::Number(1000.0));
        let day = aggregate(&counter_day(), Resolution::Day, Agg::Delta, Some(1000.0 + 96.0 * 250.0));
        assert_eq!(day.len(), 1);
        assert_eq!(day[0].value, OutValue::Number(24_000.0));
    }

    #[test]
    fn avg_min_max_last_per_bucket() {
        let pts = counter_day();
        let avg = aggregate(&pts, Resolution::Hour, Agg::Avg, None);
        assert_eq!(avg[0].value, OutValue::Number(1000.0 + 1.5 * 250.0));
        assert_eq!(aggregate(&pts, Resolution::Hour, Agg::Min, None)[1].value, OutValue::Number(2000.0));
        assert_eq!(aggregate(&pts, Resolution::Hour, Agg::Max, None)[1].value, OutValue::Number(2750.0));
        assert_eq!(aggregate(&pts, Resolution::Day, Agg::Last, None)[0].value, OutValue::Number(1000.0 + 95.0 * 250.0));
        assert_eq!(avg[5].ts, T0 + 5 * 3_600_000);
    }

    #[test]
    fn text_only_at_raw_and_flags_are_merged() {
        let pts = vec![
            StoredPoint { ts: T0, value: None, text: Some("SN1".into()), quality: None },
            StoredPoint { ts: T0 + 1, value: Some(1.0), text: None, quality: Some("estimated".into()) },
            StoredPoint { ts: T0 + 2, value: Some(3.0), text: None, quality: Some("clock_untrusted,estimated".into()) },
        ];
        let raw = aggregate(&pts, Resolution::Raw, Agg::Avg, None);
        assert_eq!(raw.len(), 3);
        assert_eq!(raw[0].value, OutValue::Text("SN1".into()));
        let agg = aggregate(&pts, Resolution::Min15, Agg::Avg, None);
        assert_eq!(agg.len(), 1);
        assert_eq!(agg[0].value, OutValue::Number(2.0));
        assert_eq!(agg[0].quality.as_deref(), Some("clock_untrusted,estimated"));
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let mut s = String::new();
        let v = OutValue::Text("a,\"b\"".into());
        csv_line(
            &mut s,
            &ReadingOut {
                meter: "m1",
                name: "n",
                obis: "1-0:1.8.0*255",
                value: &v,
                unit: "",
                ts: rfc3339(T0),
                quality: "ok",
            },
        );
        assert_eq!(s, "m1,n,1-0:1.8.0*255,2026-11-23T00:00:00Z,\"a,\"\"b\"\"\",,ok\n");
    }
}

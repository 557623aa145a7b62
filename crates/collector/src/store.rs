//! The site store: every reading the collector takes, in SQLite (WAL), until it has gone upstream.
//!
//! Invariants:
//! - A reading is keyed by `(meter, obis, ts)`; storing the same key twice keeps the first row, so a
//!   re-read or a replay never duplicates a reading.
//! - A batch of readings is written in one transaction: after a crash either all of a poll's readings are
//!   there or none of them (and the poll is repeated at the next slot).
//! - The database runs in WAL mode with `synchronous=FULL`: a committed transaction survives a power cut.
//! - A row leaves the unsent set only when the central store acknowledged the batch that carried it
//!   ([`Store::mark_sent`]); a crash between upload and acknowledgement re-sends it, and the central
//!   store's upsert by the same key makes that harmless (at-least-once delivery, exactly-once storage).
//! - The store is bounded ([`Store::enforce_limit`]): when it is over its size it first deletes rows that
//!   were already sent, then thins old unsent instantaneous values to one per hour, then to one per day
//!   per series, and only as the last resort drops the oldest unsent counter values; every row dropped
//!   unsent is counted ([`Store::dropped_total`]), logged and reported in the heartbeat.

use std::path::Path;

use ami_device::{Quality, Reading, Value, ValueKind};
use ami_link::BusStats;
use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{params, Connection, OptionalExtension};

const SCHEMA: &str = r"
CREATE TABLE IF NOT EXISTS readings (
    id      INTEGER PRIMARY KEY,
    meter   TEXT    NOT NULL,
    name    TEXT    NOT NULL,
    obis    TEXT    NOT NULL,
    value   REAL,
    text    TEXT,
    unit    TEXT    NOT NULL,
    ts_ms   INTEGER NOT NULL,
    quality TEXT    NOT NULL,
    kind    TEXT    NOT NULL,
    sent    INTEGER NOT NULL DEFAULT 0,
    UNIQUE (meter, obis, ts_ms)
);
CREATE INDEX IF NOT EXISTS readings_unsent ON readings (sent, id);
CREATE TABLE IF NOT EXISTS meter_status (
    meter                TEXT PRIMARY KEY,
    last_success_ms      INTEGER,
    last_attempt_ms      INTEGER,
    last_error           TEXT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    reads_ok             INTEGER NOT NULL DEFAULT 0,
    reads_failed         INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS link_counters (
    bus             TEXT    NOT NULL,
    meter           TEXT    NOT NULL,   -- '' for the bus total
    requests        INTEGER NOT NULL,
    replies         INTEGER NOT NULL,
    timeouts        INTEGER NOT NULL,
    checksum_errors INTEGER NOT NULL,
    retries         INTEGER NOT NULL,
    rejected        INTEGER NOT NULL,
    failures        INTEGER NOT NULL,
    last_success_ms INTEGER,
    updated_ms      INTEGER NOT NULL,
    PRIMARY KEY (bus, meter)
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS commands (
    id            INTEGER PRIMARY KEY,   -- the central store's command id
    meter         TEXT    NOT NULL,
    action        TEXT    NOT NULL,      -- ami_wire::Action as JSON
    status        TEXT    NOT NULL,      -- received | running | done | failed
    received_ms   INTEGER NOT NULL,
    receipt_acked INTEGER NOT NULL DEFAULT 0,
    ok            INTEGER,
    message       TEXT,
    finished_ms   INTEGER,
    result_acked  INTEGER NOT NULL DEFAULT 0
);
CREATE VIEW IF NOT EXISTS readings_view AS
    SELECT meter, name, obis, COALESCE(value, text) AS value, unit,
           strftime('%Y-%m-%dT%H:%M:%fZ', ts_ms / 1000.0, 'unixepoch') AS ts, quality, kind, sent
    FROM readings;
";

/// A reading together with its kind (for the overflow policy upstream).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredReading {
    /// The reading.
    pub reading: Reading,
    /// Its kind from the profile.
    pub kind: ValueKind,
}

/// The outcome of one poll of one meter, for `meter_status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollStatus {
    /// Meter id.
    pub meter: String,
    /// When the poll ended.
    pub at: DateTime<Utc>,
    /// `None` on success, else the error text.
    pub error: Option<String>,
}

/// Errors from the store.
pub type StoreError = rusqlite::Error;

/// An open site store.
pub struct Store {
    conn: Connection,
}

fn kind_text(kind: ValueKind) -> &'static str {
    match kind {
        ValueKind::Instantaneous => "instantaneous",
        ValueKind::Counter => "counter",
        ValueKind::Static => "static",
    }
}

impl Store {
    /// The underlying connection (for the outbox and status queries in this crate).
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The underlying connection, mutably (transactions).
    pub(crate) fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Opens (creating if needed) the store at `path`, in WAL mode.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store { conn })
    }

    /// Stores a poll's readings and its status in one transaction. Returns how many readings were new.
    pub fn insert(&mut self, readings: &[StoredReading], status: Option<&PollStatus>) -> Result<usize, StoreError> {
        let tx = self.conn.transaction()?;
        let mut added = 0;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO readings (meter, name, obis, value, text, unit, ts_ms, quality, kind)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (meter, obis, ts_ms) DO NOTHING",
            )?;
            for s in readings {
                let r = &s.reading;
                let (num, text) = match &r.value {
                    Value::Number(n) => (Some(*n), None),
                    Value::Text(t) => (None, Some(t.as_str())),
                };
                added += stmt.execute(params![
                    r.meter,
                    r.name,
                    r.obis.to_string(),
                    num,
                    text,
                    r.unit,
                    r.ts.timestamp_millis(),
                    r.quality.as_text(),
                    kind_text(s.kind),
                ])?;
            }
        }
        if let Some(st) = status {
            let at = st.at.timestamp_millis();
            let ok = st.error.is_none();
            tx.execute(
                "INSERT INTO meter_status (meter, last_success_ms, last_attempt_ms, last_error,
                                           consecutive_failures, reads_ok, reads_failed)
                 VALUES (?1, CASE WHEN ?2 THEN ?3 END, ?3, ?4, CASE WHEN ?2 THEN 0 ELSE 1 END,
                         CASE WHEN ?2 THEN 1 ELSE 0 END, CASE WHEN ?2 THEN 0 ELSE 1 END)
                 ON CONFLICT (meter) DO UPDATE SET
                    last_success_ms = CASE WHEN ?2 THEN ?3 ELSE last_success_ms END,
                    last_attempt_ms = ?3,
                    last_error = ?4,
                    consecutive_failures = CASE WHEN ?2 THEN 0 ELSE consecutive_failures + 1 END,
                    reads_ok = reads_ok + CASE WHEN ?2 THEN 1 ELSE 0 END,
                    reads_failed = reads_failed + CASE WHEN ?2 THEN 0 ELSE 1 END",
                params![st.meter, ok, at, st.error],
            )?;
        }
        tx.commit()?;
        Ok(added)
    }

    /// Records a snapshot of a bus's link counters (totals since the daemon started).
    pub fn save_counters(&mut self, stats: &BusStats, at: DateTime<Utc>) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO link_counters (bus, meter, requests, replies, timeouts, checksum_errors, retries,
                                            rejected, failures, last_success_ms, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (bus, meter) DO UPDATE SET
                    requests = excluded.requests, replies = excluded.replies, timeouts = excluded.timeouts,
                    checksum_errors = excluded.checksum_errors, retries = excluded.retries,
                    rejected = excluded.rejected, failures = excluded.failures,
                    last_success_ms = excluded.last_success_ms, updated_ms = excluded.updated_ms",
            )?;
            let rows = std::iter::once(("", &stats.total)).chain(stats.meters.iter().map(|(m, c)| (m.as_str(), c)));
            for (meter, c) in rows {
                let last = c.last_success.map(|t| DateTime::<Utc>::from(t).timestamp_millis());
                let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
                stmt.execute(params![
                    stats.bus,
                    meter,
                    n(c.requests),
                    n(c.replies),
                    n(c.timeouts),
                    n(c.checksum_errors),
                    n(c.retries),
                    n(c.rejected),
                    n(c.failures),
                    last,
                    at.timestamp_millis(),
                ])?;
            }
        }
        tx.commit()
    }

    /// Number of stored readings.
    pub fn count(&self) -> Result<u64, StoreError> {
        self.conn.query_row("SELECT COUNT(*) FROM readings", [], |r| r.get::<_, i64>(0)).map(|n| n.max(0) as u64)
    }

    /// All readings of a meter in time order (for tests and tools).
    pub fn readings(&self, meter: &str) -> Result<Vec<Reading>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT meter, name, obis, value, text, unit, ts_ms, quality FROM readings
             WHERE meter = ?1 ORDER BY ts_ms, id",
        )?;
        let rows = stmt.query_map([meter], |row| {
            let obis: String = row.get(2)?;
            let num: Option<f64> = row.get(3)?;
            let text: Option<String> = row.get(4)?;
            let ts_ms: i64 = row.get(6)?;
            let quality: String = row.get(7)?;
            Ok(Reading {
                meter: row.get(0)?,
                name: row.get(1)?,
                obis: obis.parse().unwrap_or(ami_device::Obis([0; 6])),
                value: match (num, text) {
                    (Some(n), _) => Value::Number(n),
                    (None, Some(t)) => Value::Text(t),
                    (None, None) => Value::Number(f64::NAN),
                },
                unit: row.get(5)?,
                ts: Utc.timestamp_millis_opt(ts_ms).single().unwrap_or_default(),
                quality: Quality::from_text(&quality),
            })
        })?;
        rows.collect()
    }

    /// Consecutive failures and last error of a meter, if it was ever polled.
    pub fn meter_status(&self, meter: &str) -> Result<Option<(u32, Option<String>)>, StoreError> {
        self.conn
            .query_row("SELECT consecutive_failures, last_error FROM meter_status WHERE meter = ?1", [meter], |r| {
                Ok((r.get::<_, u32>(0)?, r.get(1)?))
            })
            .optional()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(meter: &str, obis: &str, ts_ms: i64, v: f64) -> StoredReading {
        StoredReading {
            reading: Reading {
                meter: meter.into(),
                name: "energy".into(),
                obis: obis.parse().unwrap(),
                value: Value::Number(v),
                unit: "Wh".into(),
                ts: Utc.timestamp_millis_opt(ts_ms).unwrap(),
                quality: Quality::OK,
            },
            kind: ValueKind::Counter,
        }
    }

    #[test]
    fn same_key_is_stored_once_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.db");
        {
            let mut s = Store::open(&path).unwrap();
            let batch = vec![reading("m1", "1-0:1.8.0", 1000, 5.0), reading("m1", "1-0:2.8.0", 1000, 1.0)];
            assert_eq!(s.insert(&batch, None).unwrap(), 2);
            // The same poll replayed: nothing new, first value kept.
            let replay = vec![reading("m1", "1-0:1.8.0", 1000, 99.0)];
            assert_eq!(s.insert(&replay, None).unwrap(), 0);
        }
        let s = Store::open(&path).unwrap();
        let rows = s.readings("m1").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].value, Value::Number(5.0));
        let mode: String = s.conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn link_counters_are_kept_per_bus_and_meter() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("site.db")).unwrap();
        let mut stats = BusStats { bus: "b".into(), ..BusStats::default() };
        stats.total.requests = 5;
        stats.total.timeouts = 2;
        stats.meters.insert("m".into(), ami_link::Counters { requests: 5, timeouts: 2, ..Default::default() });
        s.save_counters(&stats, Utc::now()).unwrap();
        stats.total.requests = 7;
        s.save_counters(&stats, Utc::now()).unwrap();
        let rows: Vec<(String, i64, i64)> = s
            .conn
            .prepare("SELECT meter, requests, timeouts FROM link_counters ORDER BY meter")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows, vec![("".into(), 7, 2), ("m".into(), 5, 2)]);
    }

    #[test]
    fn meter_status_counts_consecutive_failures() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("site.db")).unwrap();
        let st = |e: Option<&str>| PollStatus { meter: "m".into(), at: Utc::now(), error: e.map(String::from) };
        s.insert(&[], Some(&st(Some("timeout")))).unwrap();
        s.insert(&[], Some(&st(Some("timeout")))).unwrap();
        assert_eq!(s.meter_status("m").unwrap(), Some((2, Some("timeout".into()))));
        s.insert(&[], Some(&st(None))).unwrap();
        assert_eq!(s.meter_status("m").unwrap(), Some((0, None)));
    }
}

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
//! - Load profiles are read incrementally: per meter and profile the store keeps the meter timestamp of
//!   the last interval stored (`profile_marks`). The intervals of one read and the advanced mark are
//!   committed in one transaction ([`Store::insert_intervals`]), and the rows' key makes a repeated read
//!   (after a crash between the meter's answer and the commit) store nothing twice.
//! - A DLMS invocation counter ([`InvocationCounterStore`]) is strictly increasing across restarts and
//!   crashes: values are reserved in blocks of [`IC_BLOCK`] and the block's end is committed before the
//!   first value of the block is handed out; after a restart counting resumes at the end of the last
//!   reserved block, so a crash may skip values but never reuses one.

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
CREATE TABLE IF NOT EXISTS profile_marks (
    meter   TEXT    NOT NULL,
    profile TEXT    NOT NULL,   -- the profile generic's OBIS code
    last_ms INTEGER NOT NULL,   -- meter timestamp of the last interval stored
    PRIMARY KEY (meter, profile)
);
CREATE TABLE IF NOT EXISTS invocation_counters (
    client_title TEXT    PRIMARY KEY,   -- the client system title (hex): one counter per title and key
    reserved     INTEGER NOT NULL       -- every value below this may have been used; new blocks start here
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

/// Inserts readings inside a transaction; a row whose key is already stored is skipped.
fn insert_rows(tx: &rusqlite::Transaction<'_>, readings: &[StoredReading]) -> Result<usize, StoreError> {
    let mut added = 0;
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
    Ok(added)
}

/// How many invocation counter values are reserved (committed ahead) at a time.
pub const IC_BLOCK: u32 = 100;

/// Why the next invocation counter value cannot be given.
#[derive(Debug, thiserror::Error)]
pub enum CounterError {
    /// The store could not commit the reservation (the value is not handed out).
    #[error("cannot persist the invocation counter: {0}")]
    Store(#[from] rusqlite::Error),
    /// Every 32-bit value was used: the meter's keys must be changed.
    #[error("invocation counter exhausted (2^32 values used): change the meter's keys")]
    Exhausted,
}

/// A DLMS client invocation counter kept in the site store (see the module invariants), one per client
/// system title: strictly increasing across restarts and crashes, reserved in blocks of [`IC_BLOCK`].
///
/// Every block is taken in an immediate transaction from the stored end of the last block, so several
/// instances on the same title (several meters of one site, another process) never hand out the same
/// value: the GCM IV (system title ‖ invocation counter) is never used twice with one key.
pub struct InvocationCounterStore {
    title: String,
    state: std::sync::Mutex<CounterState>,
}

struct CounterState {
    conn: Connection,
    /// The next value to hand out.
    next: u64,
    /// End (exclusive) of this instance's block; `next == reserved` means a new block is needed.
    reserved: u64,
}

impl std::fmt::Debug for InvocationCounterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InvocationCounterStore").field("title", &self.title).finish_non_exhaustive()
    }
}

impl InvocationCounterStore {
    /// Opens the counter of client system title `title` (hex) in the store at `path`, with its own
    /// connection. The first value is 1 for a new title, else the end of the last reserved block.
    pub fn open(path: &Path, title: &str) -> Result<InvocationCounterStore, StoreError> {
        let store = Store::open(path)?;
        Ok(InvocationCounterStore {
            title: title.to_string(),
            state: std::sync::Mutex::new(CounterState { conn: store.conn, next: 0, reserved: 0 }),
        })
    }

    /// The client system title this counter belongs to.
    pub fn title(&self) -> &str {
        &self.title
    }

    /// The next value: strictly greater than every value handed out before on this title, in this process
    /// or any other, now or earlier. Commits a new block before handing out its first value.
    pub fn next_value(&self) -> Result<u32, CounterError> {
        let mut st = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut value = st.next;
        if value >= st.reserved {
            let tx = st.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let stored: Option<i64> = tx
                .query_row("SELECT reserved FROM invocation_counters WHERE client_title = ?1", [&self.title], |r| {
                    r.get(0)
                })
                .optional()?;
            let start = value.max(stored.map_or(1, |r| u64::try_from(r).unwrap_or(1)).max(1));
            if start > u64::from(u32::MAX) {
                return Err(CounterError::Exhausted);
            }
            let end = (start + u64::from(IC_BLOCK)).min(u64::from(u32::MAX) + 1);
            tx.execute(
                "INSERT INTO invocation_counters (client_title, reserved) VALUES (?1, ?2)
                 ON CONFLICT (client_title) DO UPDATE SET reserved = excluded.reserved",
                params![self.title, i64::try_from(end).unwrap_or(i64::MAX)],
            )?;
            tx.commit()?;
            value = start;
            st.reserved = end;
        }
        st.next = value + 1;
        u32::try_from(value).map_err(|_| CounterError::Exhausted)
    }

    /// Makes every later value at least `floor` (e.g. after the meter reported the counter it expects).
    pub fn raise_to(&self, floor: u32) -> Result<(), CounterError> {
        let mut st = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if u64::from(floor) > st.next {
            st.next = u64::from(floor);
        }
        Ok(())
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
        let added = insert_rows(&tx, readings)?;
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

    /// The meter timestamp (ms) of the last interval stored for a meter's load profile, if any.
    pub fn profile_mark(&self, meter: &str, profile: &str) -> Result<Option<i64>, StoreError> {
        self.conn
            .query_row("SELECT last_ms FROM profile_marks WHERE meter = ?1 AND profile = ?2", [meter, profile], |r| {
                r.get(0)
            })
            .optional()
    }

    /// Stores the intervals of one load profile read and advances the profile's mark to `last_ms` (never
    /// backwards), in one transaction. Rows already stored are kept as they were. Returns how many rows
    /// were new.
    pub fn insert_intervals(
        &mut self,
        readings: &[StoredReading],
        meter: &str,
        profile: &str,
        last_ms: i64,
    ) -> Result<usize, StoreError> {
        let tx = self.conn.transaction()?;
        let added = insert_rows(&tx, readings)?;
        tx.execute(
            "INSERT INTO profile_marks (meter, profile, last_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (meter, profile) DO UPDATE SET last_ms = MAX(last_ms, excluded.last_ms)",
            params![meter, profile, last_ms],
        )?;
        tx.commit()?;
        Ok(added)
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
    fn invocation_counter_never_repeats_across_restarts_and_crashes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.db");
        let mut used = Vec::new();
        for round in 0..5u32 {
            // Each round is a process lifetime that uses a few values and then "crashes" (drops without any
            // shutdown step).
            let c = InvocationCounterStore::open(&path, "414D490000000001").unwrap();
            for _ in 0..(round * 37 + 3) {
                used.push(c.next_value().unwrap());
            }
        }
        assert!(used.windows(2).all(|w| w[0] < w[1]), "strictly increasing: {used:?}");
        let c = InvocationCounterStore::open(&path, "414D490000000001").unwrap();
        let next = c.next_value().unwrap();
        assert!(next > *used.last().unwrap());
        // Titles are independent.
        let other = InvocationCounterStore::open(&path, "414D490000000002").unwrap();
        assert_eq!(other.next_value().unwrap(), 1);
        // The reservation is what is persisted: at most one block is skipped per restart.
        assert!(next - used.last().unwrap() <= IC_BLOCK, "{next}");
        c.raise_to(1_000_000).unwrap();
        assert_eq!(c.next_value().unwrap(), 1_000_000);
        drop(c);
        assert!(InvocationCounterStore::open(&path, "414D490000000001").unwrap().next_value().unwrap() > 1_000_000);
    }

    #[test]
    fn two_counters_on_one_title_never_hand_out_the_same_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.db");
        let a = InvocationCounterStore::open(&path, "T").unwrap();
        let b = InvocationCounterStore::open(&path, "T").unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..1000u32 {
            let c = if i % 7 < 3 { &a } else { &b };
            let v = c.next_value().unwrap();
            assert!(seen.insert(v), "{v} handed out twice");
        }
    }

    #[test]
    fn intervals_and_their_mark_commit_together_and_never_twice() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("site.db")).unwrap();
        assert_eq!(s.profile_mark("m", "1-0:99.1.0*255").unwrap(), None);
        let rows: Vec<_> = (1..=4).map(|i| reading("m", "1-0:1.8.0", i * 900_000, i as f64)).collect();
        assert_eq!(s.insert_intervals(&rows, "m", "1-0:99.1.0*255", 4 * 900_000).unwrap(), 4);
        // The same intervals again (a read repeated after a crash) plus one new one.
        let more: Vec<_> = (3..=5).map(|i| reading("m", "1-0:1.8.0", i * 900_000, i as f64)).collect();
        assert_eq!(s.insert_intervals(&more, "m", "1-0:99.1.0*255", 5 * 900_000).unwrap(), 1);
        assert_eq!(s.profile_mark("m", "1-0:99.1.0*255").unwrap(), Some(5 * 900_000));
        // The mark never goes back.
        s.insert_intervals(&[], "m", "1-0:99.1.0*255", 900_000).unwrap();
        assert_eq!(s.profile_mark("m", "1-0:99.1.0*255").unwrap(), Some(5 * 900_000));
        assert_eq!(s.readings("m").unwrap().len(), 5);
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

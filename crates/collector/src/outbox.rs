//! The store's outbound side: batches for the uplink, acknowledgements, the size bound, and the commands
//! that came back from the central store. See the invariants in [`crate::store`].

use std::collections::BTreeMap;

use ami_wire::{Action, Command, CommandResult, Point, PointValue, Series};
use rusqlite::{params, OptionalExtension};
use tracing::warn;

use crate::store::{Store, StoreError};

/// A batch of unsent readings taken from the store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// Row ids in the batch (to [`Store::mark_sent`] after the acknowledgement).
    pub ids: Vec<i64>,
    /// The readings, grouped by series.
    pub series: Vec<Series>,
}

impl Batch {
    /// Number of readings.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// What one [`Store::enforce_limit`] pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Already-sent rows deleted (no data lost).
    pub sent: u64,
    /// Unsent instantaneous rows thinned away (counted as dropped).
    pub thinned: u64,
    /// Unsent counter or static rows dropped as the last resort (counted as dropped).
    pub counters: u64,
}

/// A command received from the central store, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredCommand {
    /// The command.
    pub command: Command,
    /// `received`, `running`, `done` or `failed`.
    pub status: String,
}

type Row = (i64, String, String, String, Option<f64>, Option<String>, String, i64, String, String);

impl Store {
    /// Takes up to `max` unsent readings: the oldest first, but with `live_share` (0..1) of the batch
    /// reserved for the newest rows, so live data keeps flowing during a long catch-up.
    pub fn next_batch(&self, max: usize, live_share: f64) -> Result<Batch, StoreError> {
        let max = max.max(1);
        let live = ((max as f64) * live_share.clamp(0.0, 1.0)) as usize;
        let old = max - live;
        let sql = |order: &str| {
            format!(
                "SELECT id, meter, name, obis, value, text, unit, ts_ms, quality, kind FROM readings
                 WHERE sent = 0 ORDER BY id {order} LIMIT ?1"
            )
        };
        let map = |r: &rusqlite::Row<'_>| -> rusqlite::Result<Row> {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
                r.get(9)?,
            ))
        };
        let conn = self.conn();
        let mut rows: BTreeMap<i64, Row> = BTreeMap::new();
        for r in conn.prepare_cached(&sql("ASC"))?.query_map([i64::try_from(old).unwrap_or(i64::MAX)], map)? {
            let r = r?;
            rows.insert(r.0, r);
        }
        if live > 0 {
            for r in conn.prepare_cached(&sql("DESC"))?.query_map([i64::try_from(live).unwrap_or(i64::MAX)], map)? {
                let r = r?;
                rows.insert(r.0, r);
            }
        }
        // Group by series, points in time order.
        let mut series: BTreeMap<(String, String), Series> = BTreeMap::new();
        let mut ids = Vec::with_capacity(rows.len());
        for (id, meter, name, obis, value, text, unit, ts, quality, kind) in rows.into_values() {
            ids.push(id);
            let v = match (value, text) {
                (Some(n), _) if n.is_finite() => PointValue::Number(n),
                (_, Some(t)) => PointValue::Text(t),
                // A non-finite number cannot go on the wire; the text says what it was.
                (Some(n), None) => PointValue::Text(n.to_string()),
                (None, None) => PointValue::Text(String::new()),
            };
            let q = if quality == "ok" { None } else { Some(quality) };
            series
                .entry((meter.clone(), obis.clone()))
                .or_insert_with(|| Series { meter, name, obis, unit, kind, points: Vec::new() })
                .points
                .push(Point { t: ts, v, q });
        }
        let mut series: Vec<Series> = series.into_values().collect();
        for s in &mut series {
            s.points.sort_by_key(|p| p.t);
        }
        Ok(Batch { ids, series })
    }

    /// Marks rows as acknowledged by the central store.
    pub fn mark_sent(&mut self, ids: &[i64]) -> Result<(), StoreError> {
        let tx = self.conn_mut().transaction()?;
        {
            let mut stmt = tx.prepare_cached("UPDATE readings SET sent = 1 WHERE id = ?1")?;
            for id in ids {
                stmt.execute([id])?;
            }
        }
        tx.commit()
    }

    /// Sets rows aside that the central store refused as invalid (`sent = 2`): they are kept for an
    /// operator to inspect (`readings_view`), counted, and no longer block the uplink.
    pub fn reject(&mut self, ids: &[i64]) -> Result<u64, StoreError> {
        let tx = self.conn_mut().transaction()?;
        {
            let mut stmt = tx.prepare_cached("UPDATE readings SET sent = 2 WHERE id = ?1 AND sent = 0")?;
            for id in ids {
                stmt.execute([id])?;
            }
        }
        tx.commit()?;
        let n = i64::try_from(ids.len()).unwrap_or(i64::MAX);
        Ok(u64::try_from(self.add_meta("rejected_total", n)?).unwrap_or(0))
    }

    /// Readings the central store refused as invalid, since the store was created.
    pub fn rejected_total(&self) -> Result<u64, StoreError> {
        Ok(u64::try_from(self.meta("rejected_total")?).unwrap_or(0))
    }

    /// Unsent readings and the timestamp of the oldest one.
    pub fn depth(&self) -> Result<(u64, Option<i64>), StoreError> {
        self.conn().query_row("SELECT COUNT(*), MIN(ts_ms) FROM readings WHERE sent = 0", [], |r| {
            Ok((u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0), r.get(1)?))
        })
    }

    fn meta(&self, key: &str) -> Result<i64, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get::<_, i64>(0))
            .optional()?
            .unwrap_or(0))
    }

    fn add_meta(&self, key: &str, by: i64) -> Result<i64, StoreError> {
        self.conn().execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = value + ?2",
            params![key, by],
        )?;
        self.meta(key)
    }

    /// Readings dropped unsent by the overflow policy since the store was created.
    pub fn dropped_total(&self) -> Result<u64, StoreError> {
        Ok(u64::try_from(self.meta("dropped_total")?).unwrap_or(0))
    }

    /// The next batch sequence number (persistent, strictly increasing).
    pub fn next_batch_seq(&self) -> Result<u64, StoreError> {
        Ok(u64::try_from(self.add_meta("batch_seq", 1)?).unwrap_or(0))
    }

    /// Bytes the store's live pages use (the file may be larger: freed pages are reused first).
    pub fn used_bytes(&self) -> Result<u64, StoreError> {
        let c = self.conn();
        let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let free: i64 = c.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
        let size: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        Ok(u64::try_from((pages - free).max(0) * size).unwrap_or(0))
    }

    /// Keeps the store under `max_bytes` with the overflow policy in the module docs. Returns what went.
    pub fn enforce_limit(&mut self, max_bytes: u64) -> Result<Pruned, StoreError> {
        let mut pruned = Pruned::default();
        if self.used_bytes()? <= max_bytes {
            return Ok(pruned);
        }
        // Step 1: rows already delivered, oldest first, in chunks.
        loop {
            let n = self.conn().execute(
                "DELETE FROM readings WHERE id IN (SELECT id FROM readings WHERE sent != 0 ORDER BY id LIMIT 5000)",
                [],
            )?;
            pruned.sent += n as u64;
            if n == 0 || self.used_bytes()? <= max_bytes {
                break;
            }
        }
        // Step 2: thin unsent instantaneous values in the older half of the backlog, first to one per hour,
        // then to one per day per series (Flukso-style aging: old detail matters least).
        for bucket_ms in [3_600_000i64, 86_400_000] {
            if self.used_bytes()? <= max_bytes {
                break;
            }
            let n = self.conn().execute(
                "DELETE FROM readings WHERE sent = 0 AND kind = 'instantaneous'
                   AND ts_ms < (SELECT ts_ms FROM readings WHERE sent = 0 ORDER BY ts_ms
                                LIMIT 1 OFFSET (SELECT COUNT(*) / 2 FROM readings WHERE sent = 0))
                   AND id NOT IN (SELECT MIN(id) FROM readings WHERE sent = 0 AND kind = 'instantaneous'
                                  GROUP BY meter, obis, ts_ms / ?1)",
                [bucket_ms],
            )?;
            pruned.thinned += n as u64;
        }
        // Step 3: the last resort: the oldest unsent rows of any kind, counted and logged.
        while self.used_bytes()? > max_bytes {
            let n = self.conn().execute(
                "DELETE FROM readings WHERE id IN (SELECT id FROM readings WHERE sent = 0 ORDER BY ts_ms, id LIMIT 1000)",
                [],
            )?;
            if n == 0 {
                break;
            }
            pruned.counters += n as u64;
        }
        let dropped = pruned.thinned + pruned.counters;
        if dropped > 0 {
            let total = self.add_meta("dropped_total", i64::try_from(dropped).unwrap_or(i64::MAX))?;
            warn!(
                thinned = pruned.thinned,
                counters = pruned.counters,
                dropped_total = total,
                "site store full: unsent readings dropped (uplink down too long or store too small)"
            );
        }
        Ok(pruned)
    }

    /// Stores commands from the central store. Known ids are ignored (each command runs at most once).
    /// Returns the commands that are new.
    pub fn add_commands(&mut self, commands: &[Command], now_ms: i64) -> Result<Vec<Command>, StoreError> {
        let tx = self.conn_mut().transaction()?;
        let mut new = Vec::new();
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO commands (id, meter, action, status, received_ms) VALUES (?1, ?2, ?3, 'received', ?4)
                 ON CONFLICT (id) DO NOTHING",
            )?;
            for c in commands {
                let action = serde_json::to_string(&c.action).unwrap_or_default();
                if stmt.execute(params![c.id, c.meter, action, now_ms])? == 1 {
                    new.push(c.clone());
                }
            }
        }
        tx.commit()?;
        Ok(new)
    }

    /// Claims a received command for execution (`received` → `running`). False when it was already claimed,
    /// so no command ever runs twice.
    pub fn claim_command(&mut self, id: i64) -> Result<bool, StoreError> {
        Ok(self.conn().execute("UPDATE commands SET status = 'running' WHERE id = ?1 AND status = 'received'", [id])?
            == 1)
    }

    /// Records a command's outcome.
    pub fn finish_command(&mut self, id: i64, ok: bool, message: &str, at_ms: i64) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE commands SET status = CASE WHEN ?2 THEN 'done' ELSE 'failed' END, ok = ?2, message = ?3,
                    finished_ms = ?4
             WHERE id = ?1",
            params![id, ok, message, at_ms],
        )?;
        Ok(())
    }

    /// Commands received and not yet claimed, oldest first.
    pub fn runnable_commands(&self) -> Result<Vec<Command>, StoreError> {
        let mut stmt = self
            .conn()
            .prepare_cached("SELECT id, meter, action FROM commands WHERE status = 'received' ORDER BY id")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, meter, action) = row?;
            match serde_json::from_str::<Action>(&action) {
                Ok(action) => out.push(Command { id, meter, action }),
                Err(e) => warn!(id, "stored command has an unreadable action: {e}"),
            }
        }
        Ok(out)
    }

    /// A command that was running when the daemon stopped is not run again: it fails as interrupted.
    pub fn fail_interrupted_commands(&mut self, now_ms: i64) -> Result<usize, StoreError> {
        self.conn().execute(
            "UPDATE commands SET status = 'failed', ok = 0, message = 'interrupted by a restart of amid; not repeated',
                    finished_ms = ?1
             WHERE status = 'running'",
            [now_ms],
        )
    }

    /// Results not yet acknowledged, and ids whose receipt is not yet acknowledged.
    pub fn unacked_command_news(&self) -> Result<(Vec<CommandResult>, Vec<i64>), StoreError> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT id, ok, message, finished_ms FROM commands
             WHERE status IN ('done', 'failed') AND result_acked = 0 ORDER BY id",
        )?;
        let results = stmt
            .query_map([], |r| {
                Ok(CommandResult {
                    id: r.get(0)?,
                    ok: r.get::<_, Option<bool>>(1)?.unwrap_or(false),
                    message: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                    at: r.get::<_, Option<i64>>(3)?.unwrap_or(0),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut stmt = self.conn().prepare_cached("SELECT id FROM commands WHERE receipt_acked = 0 ORDER BY id")?;
        let received = stmt.query_map([], |r| r.get::<_, i64>(0))?.collect::<Result<Vec<_>, _>>()?;
        Ok((results, received))
    }

    /// The central store acknowledged a batch carrying these results and receipts.
    pub fn ack_command_news(&mut self, results: &[i64], received: &[i64]) -> Result<(), StoreError> {
        let tx = self.conn_mut().transaction()?;
        for id in results {
            tx.execute("UPDATE commands SET result_acked = 1 WHERE id = ?1", [id])?;
        }
        for id in received {
            tx.execute("UPDATE commands SET receipt_acked = 1 WHERE id = ?1", [id])?;
        }
        tx.commit()
    }

    /// A stored command by id (tests and status).
    pub fn command(&self, id: i64) -> Result<Option<StoredCommand>, StoreError> {
        self.conn()
            .query_row("SELECT meter, action, status FROM commands WHERE id = ?1", [id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
            })
            .optional()
            .map(|o| {
                o.and_then(|(meter, action, status)| {
                    let action = serde_json::from_str(&action).ok()?;
                    Some(StoredCommand { command: Command { id, meter, action }, status })
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoredReading;
    use ami_device::{Quality, Reading, Value, ValueKind};
    use chrono::{TimeZone, Utc};
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn reading(meter: &str, obis: &str, ts_ms: i64, kind: ValueKind) -> StoredReading {
        StoredReading {
            reading: Reading {
                meter: meter.into(),
                name: "v".into(),
                obis: obis.parse().unwrap(),
                value: Value::Number(ts_ms as f64),
                unit: "W".into(),
                ts: Utc.timestamp_millis_opt(ts_ms).unwrap(),
                quality: Quality::OK,
            },
            kind,
        }
    }

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.db")).unwrap();
        (dir, s)
    }

    #[test]
    fn batches_are_oldest_first_but_keep_room_for_live_data() {
        let (_d, mut s) = open();
        let rows: Vec<_> = (0..100).map(|i| reading("m", "1-0:1.7.0", i * 1000, ValueKind::Instantaneous)).collect();
        s.insert(&rows, None).unwrap();
        let b = s.next_batch(10, 0.2).unwrap();
        let ts: Vec<i64> = b.series[0].points.iter().map(|p| p.t).collect();
        assert_eq!(ts, vec![0, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 98_000, 99_000]);
        s.mark_sent(&b.ids).unwrap();
        assert_eq!(s.depth().unwrap(), (90, Some(8000)));
        let b2 = s.next_batch(10, 0.2).unwrap();
        assert!(b2.ids.iter().all(|id| !b.ids.contains(id)), "acknowledged rows are never sent again");
    }

    #[test]
    fn overflow_thins_instantaneous_before_touching_counters_and_counts_drops() {
        let (_d, mut s) = open();
        // Two days of 1-min power (instantaneous) and 15-min energy (counter) values.
        let mut rows = Vec::new();
        for i in 0..2880 {
            rows.push(reading("m", "1-0:1.7.0", i * 60_000, ValueKind::Instantaneous));
            if i % 15 == 0 {
                rows.push(reading("m", "1-0:1.8.0", i * 60_000, ValueKind::Counter));
            }
        }
        s.insert(&rows, None).unwrap();
        let counters_before: i64 =
            s.conn().query_row("SELECT COUNT(*) FROM readings WHERE kind = 'counter'", [], |r| r.get(0)).unwrap();
        let limit = s.used_bytes().unwrap() * 2 / 3;
        let p = s.enforce_limit(limit).unwrap();
        assert!(p.thinned > 0 && p.counters == 0, "{p:?}");
        let counters_after: i64 =
            s.conn().query_row("SELECT COUNT(*) FROM readings WHERE kind = 'counter'", [], |r| r.get(0)).unwrap();
        assert_eq!(counters_before, counters_after, "energy registers are not thinned");
        assert_eq!(s.dropped_total().unwrap(), p.thinned);
        assert!(s.used_bytes().unwrap() <= limit);
        // The newest half of the backlog keeps full detail.
        let newest: i64 = s
            .conn()
            .query_row(
                "SELECT COUNT(*) FROM readings WHERE kind = 'instantaneous' AND ts_ms >= 1440 * 60000",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(newest, 1440);
    }

    #[test]
    fn rejected_rows_stop_blocking_and_are_counted() {
        let (_d, mut s) = open();
        let rows: Vec<_> = (0..3).map(|i| reading("m", "1-0:1.8.0", i * 1000, ValueKind::Counter)).collect();
        s.insert(&rows, None).unwrap();
        let b = s.next_batch(1, 0.2).unwrap();
        assert_eq!(s.reject(&b.ids).unwrap(), 1);
        assert_eq!(s.depth().unwrap(), (2, Some(1000)));
        assert_eq!(s.rejected_total().unwrap(), 1);
        assert!(s.next_batch(10, 0.2).unwrap().ids.iter().all(|id| !b.ids.contains(id)));
    }

    #[test]
    fn sent_rows_go_first_when_full() {
        let (_d, mut s) = open();
        let rows: Vec<_> = (0..3000).map(|i| reading("m", "1-0:1.8.0", i * 1000, ValueKind::Counter)).collect();
        s.insert(&rows, None).unwrap();
        let b = s.next_batch(2000, 0.0).unwrap();
        s.mark_sent(&b.ids).unwrap();
        let p = s.enforce_limit(s.used_bytes().unwrap() / 2).unwrap();
        assert!(p.sent > 0 && p.thinned == 0 && p.counters == 0, "{p:?}");
        assert_eq!(s.depth().unwrap().0, 1000);
        assert_eq!(s.dropped_total().unwrap(), 0);
    }

    #[test]
    fn commands_run_at_most_once_and_results_wait_for_acknowledgement() {
        let (_d, mut s) = open();
        let c = Command { id: 7, meter: "m".into(), action: Action::Control { name: "relay".into(), on: false } };
        assert_eq!(s.add_commands(std::slice::from_ref(&c), 1).unwrap().len(), 1);
        // Delivered again (the receipt was not acknowledged yet): not new.
        assert!(s.add_commands(std::slice::from_ref(&c), 2).unwrap().is_empty());
        assert_eq!(s.runnable_commands().unwrap(), vec![c.clone()]);
        assert!(s.claim_command(7).unwrap());
        assert!(!s.claim_command(7).unwrap(), "a command is claimed once");
        s.finish_command(7, true, "relay off", 3).unwrap();
        let (results, received) = s.unacked_command_news().unwrap();
        assert_eq!(results.len(), 1);
        assert_eq!(received, vec![7]);
        s.ack_command_news(&[7], &[7]).unwrap();
        assert_eq!(s.unacked_command_news().unwrap(), (vec![], vec![]));
        assert!(s.runnable_commands().unwrap().is_empty());
    }

    #[test]
    fn a_command_interrupted_by_a_crash_is_not_repeated() {
        let (_d, mut s) = open();
        let c = Command { id: 1, meter: "m".into(), action: Action::ReadNow };
        s.add_commands(&[c], 1).unwrap();
        assert!(s.claim_command(1).unwrap());
        // crash here; at the next start:
        assert_eq!(s.fail_interrupted_commands(5).unwrap(), 1);
        assert!(s.runnable_commands().unwrap().is_empty());
        assert_eq!(s.command(1).unwrap().unwrap().status, "failed");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8),
        Upload(u8),
        Ack,
        Crash,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![(1u8..20).prop_map(Op::Insert), (1u8..30).prop_map(Op::Upload), Just(Op::Ack), Just(Op::Crash),]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Model test (house style 15): against a simple model, whatever the order of inserts, uploads,
        /// acknowledgements and crashes, every inserted reading is eventually acknowledged exactly once and
        /// nothing acknowledged is offered again.
        #[test]
        fn store_model(ops in proptest::collection::vec(op(), 1..40)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s.db");
            let mut s = Store::open(&path).unwrap();
            let mut next_ts = 0i64;
            let mut inserted: BTreeSet<i64> = BTreeSet::new();
            let mut acked: BTreeSet<i64> = BTreeSet::new();
            let mut in_flight: Option<Batch> = None;
            for op in ops {
                match op {
                    Op::Insert(n) => {
                        let rows: Vec<_> = (0..n).map(|i| reading("m", "1-0:1.8.0", next_ts + i64::from(i), ValueKind::Counter)).collect();
                        next_ts += i64::from(n);
                        s.insert(&rows, None).unwrap();
                        inserted.extend(rows.iter().map(|r| r.reading.ts.timestamp_millis()));
                    }
                    Op::Upload(n) => in_flight = Some(s.next_batch(usize::from(n), 0.25).unwrap()),
                    Op::Ack => if let Some(b) = in_flight.take() {
                        for p in b.series.iter().flat_map(|s| &s.points) {
                            prop_assert!(!acked.contains(&p.t), "acknowledged reading {} offered again", p.t);
                            acked.insert(p.t);
                        }
                        s.mark_sent(&b.ids).unwrap();
                    },
                    Op::Crash => { in_flight = None; drop(s); s = Store::open(&path).unwrap(); }
                }
            }
            // Drain: everything not acknowledged is still there and goes up.
            loop {
                let b = s.next_batch(50, 0.25).unwrap();
                if b.is_empty() { break; }
                for p in b.series.iter().flat_map(|s| &s.points) {
                    prop_assert!(acked.insert(p.t), "reading {} sent after acknowledgement", p.t);
                }
                s.mark_sent(&b.ids).unwrap();
            }
            prop_assert_eq!(acked, inserted);
        }
    }
}

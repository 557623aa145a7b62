//! SQLite backend: one writer connection (SQLite has one writer at a time anyway) and a small pool of
//! reader connections, WAL journal so readers never wait for the writer. Every call runs on tokio's
//! blocking pool. `synchronous = FULL`: an acknowledged batch survives a power cut, which the site's
//! "delete after acknowledgement" relies on.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ami_wire::{IngestRequest, MAX_READINGS_PER_BATCH};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::schema::{LATEST, MIGRATIONS, SQLITE_VERSION_TABLE};
use super::{
    health_from, point_columns, principal_from, token_info, CommandRecord, CommandRow, DbError, DbResult, HealthRecord,
    IngestOutcome, Principal, SeriesInfo, SiteSummary, StoredPoint, TokenInfo, TokenKind,
};

/// Idle reader connections kept open.
const MAX_IDLE_READERS: usize = 8;

pub(crate) struct SqliteStore {
    path: Arc<PathBuf>,
    writer: Arc<Mutex<Connection>>,
    readers: Arc<Mutex<Vec<Connection>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a connection half-used: rusqlite rolls back a dropped
    // transaction. So a poisoned lock is safe to take over.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn open_connection(path: &PathBuf) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> DbResult<T> + Send + 'static) -> DbResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| DbError::Task(e.to_string()))?
}

fn migrate(conn: &mut Connection, now: i64) -> DbResult<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(SQLITE_VERSION_TABLE)?;
    let current: i64 = tx.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_version", [], |r| r.get(0))?;
    if current > LATEST {
        return Err(DbError::SchemaTooNew { found: current, known: LATEST });
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        tx.execute_batch(m.sqlite)?;
        tx.execute("INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)", params![m.version, now])?;
        tracing::info!(version = m.version, "sqlite schema migrated");
    }
    tx.commit()?;
    Ok(())
}

const COMMAND_COLUMNS: &str =
    "id, site, meter, action, status, created_at, sent_at, received_at, result_ok, result_message, result_at";

fn command_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CommandRow> {
    Ok(CommandRow {
        id: r.get(0)?,
        site: r.get(1)?,
        meter: r.get(2)?,
        action: r.get(3)?,
        status: r.get(4)?,
        created_at: r.get(5)?,
        sent_at: r.get(6)?,
        received_at: r.get(7)?,
        result_ok: r.get(8)?,
        result_message: r.get(9)?,
        result_at: r.get(10)?,
    })
}

fn ingest_tx(conn: &mut Connection, req: &IngestRequest, now: i64) -> DbResult<IngestOutcome> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let site = req.site.as_str();
    tx.execute(
        "INSERT INTO sites (site, created_at, last_seen, last_batch) VALUES (?1, ?2, ?2, ?3)
         ON CONFLICT (site) DO UPDATE SET last_seen = excluded.last_seen, last_batch = excluded.last_batch",
        params![site, now, to_i64(req.batch)],
    )?;
    let mut inserted = 0u64;
    {
        let mut find =
            tx.prepare_cached("SELECT id, name, unit, kind FROM series WHERE site = ?1 AND meter = ?2 AND obis = ?3")?;
        let mut create = tx.prepare_cached(
            "INSERT INTO series (site, meter, obis, name, unit, kind) VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
        )?;
        let mut relabel = tx.prepare_cached("UPDATE series SET name = ?2, unit = ?3, kind = ?4 WHERE id = ?1")?;
        let mut insert = tx.prepare_cached(
            "INSERT INTO readings (series_id, ts, value, text, quality) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (series_id, ts) DO NOTHING",
        )?;
        let mut stats = tx.prepare_cached(
            "UPDATE series SET readings = readings + ?2,
                 first_ts = CASE WHEN first_ts IS NULL OR first_ts > ?3 THEN ?3 ELSE first_ts END,
                 last_ts = CASE WHEN last_ts IS NULL OR last_ts < ?4 THEN ?4 ELSE last_ts END
             WHERE id = ?1",
        )?;
        for s in &req.series {
            let existing = find
                .query_row(params![site, s.meter, s.obis], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?))
                })
                .optional()?;
            let id = match existing {
                Some((id, name, unit, kind)) => {
                    if name != s.name || unit != s.unit || kind != s.kind {
                        relabel.execute(params![id, s.name, s.unit, s.kind])?;
                    }
                    id
                }
                None => create.query_row(params![site, s.meter, s.obis, s.name, s.unit, s.kind], |r| r.get(0))?,
            };
            let (mut n, mut lo, mut hi) = (0u64, i64::MAX, i64::MIN);
            for p in &s.points {
                let c = point_columns(&p.v);
                if insert.execute(params![id, p.t, c.value, c.text, p.q])? > 0 {
                    n += 1;
                    lo = lo.min(p.t);
                    hi = hi.max(p.t);
                }
            }
            if n > 0 {
                stats.execute(params![id, to_i64(n), lo, hi])?;
                inserted += n;
            }
        }
        let mut result = tx.prepare_cached(
            "UPDATE commands SET status = ?3, result_ok = ?4, result_message = ?5, result_at = ?6, done_at = ?7,
                 received_at = COALESCE(received_at, ?7)
             WHERE id = ?1 AND site = ?2 AND status IN ('pending', 'sent')",
        )?;
        for r in &req.results {
            let status = if r.ok { "done" } else { "failed" };
            result.execute(params![r.id, site, status, r.ok, r.message, r.at, now])?;
        }
        let mut received = tx.prepare_cached(
            "UPDATE commands SET received_at = ?3 WHERE id = ?1 AND site = ?2 AND received_at IS NULL",
        )?;
        for id in &req.received {
            received.execute(params![id, site, now])?;
        }
    }
    if let Some(h) = &req.health {
        let body = serde_json::to_string(h).unwrap_or_else(|_| "{}".into());
        tx.execute(
            "INSERT INTO health (site, received_at, body) VALUES (?1, ?2, ?3)
             ON CONFLICT (site) DO UPDATE SET received_at = excluded.received_at, body = excluded.body",
            params![site, now, body],
        )?;
    }
    let rows: Vec<(i64, String, String)> = {
        let mut pending = tx.prepare_cached(
            "SELECT id, meter, action FROM commands
             WHERE site = ?1 AND status IN ('pending', 'sent') AND received_at IS NULL ORDER BY id",
        )?;
        let rows = pending.query_map(params![site], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    tx.execute(
        "UPDATE commands SET status = 'sent', sent_at = ?2 WHERE site = ?1 AND status = 'pending' AND received_at IS NULL",
        params![site, now],
    )?;
    tx.commit()?;
    Ok(IngestOutcome { inserted, commands: super::deliverable(rows) })
}

impl SqliteStore {
    pub(crate) async fn open(path: PathBuf) -> DbResult<SqliteStore> {
        let path = Arc::new(path);
        let p = Arc::clone(&path);
        let writer = blocking(move || {
            let mut conn = open_connection(&p)?;
            migrate(&mut conn, super::now_ms())?;
            Ok(conn)
        })
        .await?;
        Ok(SqliteStore { path, writer: Arc::new(Mutex::new(writer)), readers: Arc::new(Mutex::new(Vec::new())) })
    }

    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> DbResult<T> + Send + 'static,
    ) -> DbResult<T> {
        let writer = Arc::clone(&self.writer);
        blocking(move || f(&mut lock(&writer))).await
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> DbResult<T> + Send + 'static,
    ) -> DbResult<T> {
        let readers = Arc::clone(&self.readers);
        let path = Arc::clone(&self.path);
        blocking(move || {
            let idle = lock(&readers).pop();
            let conn = match idle {
                Some(c) => c,
                None => open_connection(&path)?,
            };
            let out = f(&conn);
            let mut idle = lock(&readers);
            if idle.len() < MAX_IDLE_READERS {
                idle.push(conn);
            }
            out
        })
        .await
    }

    pub(crate) async fn add_token(&self, kind: TokenKind, name: String, hash: String, now: i64) -> DbResult<()> {
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let site = (kind == TokenKind::Site).then(|| name.clone());
            if let Some(site) = &site {
                tx.execute(
                    "INSERT INTO sites (site, created_at) VALUES (?1, ?2) ON CONFLICT (site) DO NOTHING",
                    params![site, now],
                )?;
            }
            tx.execute(
                "INSERT INTO tokens (hash, kind, site, name, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![hash, kind.as_str(), site, name, now],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn list_tokens(&self) -> DbResult<Vec<TokenInfo>> {
        self.read(|conn| {
            let mut st = conn.prepare("SELECT id, kind, name, created_at, revoked_at FROM tokens ORDER BY id")?;
            let rows = st.query_map([], |r| {
                let kind: String = r.get(1)?;
                Ok(token_info(r.get(0)?, &kind, r.get(2)?, r.get(3)?, r.get(4)?))
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    pub(crate) async fn revoke_token(&self, id: i64, now: i64) -> DbResult<bool> {
        self.write(move |conn| {
            let n = conn
                .execute("UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL", params![id, now])?;
            Ok(n > 0)
        })
        .await
    }

    pub(crate) async fn authenticate(&self, hash: String) -> DbResult<Option<Principal>> {
        self.read(move |conn| {
            let row = conn
                .prepare_cached("SELECT kind, site, name FROM tokens WHERE hash = ?1 AND revoked_at IS NULL")?
                .query_row(params![hash], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            Ok(row.and_then(|(kind, site, name)| principal_from(&kind, site, name)))
        })
        .await
    }

    pub(crate) async fn ingest(&self, req: IngestRequest, now: i64) -> DbResult<IngestOutcome> {
        debug_assert!(req.readings() <= MAX_READINGS_PER_BATCH);
        self.write(move |conn| ingest_tx(conn, &req, now)).await
    }

    pub(crate) async fn sites(&self) -> DbResult<Vec<SiteSummary>> {
        self.read(|conn| {
            let mut st = conn.prepare(
                "SELECT s.site, s.last_seen,
                    (SELECT COUNT(DISTINCT meter) FROM series WHERE site = s.site),
                    (SELECT COALESCE(SUM(readings), 0) FROM series WHERE site = s.site),
                    (SELECT COUNT(*) FROM commands WHERE site = s.site AND status IN ('pending', 'sent'))
                 FROM sites s ORDER BY s.site",
            )?;
            let rows = st.query_map([], |r| {
                Ok(SiteSummary {
                    site: r.get(0)?,
                    last_seen: r.get(1)?,
                    meters: to_u64(r.get(2)?),
                    readings: to_u64(r.get(3)?),
                    pending_commands: to_u64(r.get(4)?),
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    pub(crate) async fn site_exists(&self, site: String) -> DbResult<bool> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached("SELECT 1 FROM sites WHERE site = ?1")?
                .query_row(params![site], |_| Ok(()))
                .optional()?
                .is_some())
        })
        .await
    }

    pub(crate) async fn series(&self, site: String) -> DbResult<Vec<SeriesInfo>> {
        self.read(move |conn| {
            let mut st = conn.prepare_cached(
                "SELECT id, meter, obis, name, unit, kind, first_ts, last_ts, readings
                 FROM series WHERE site = ?1 ORDER BY meter, obis",
            )?;
            let rows = st.query_map(params![site], |r| {
                Ok(SeriesInfo {
                    id: r.get(0)?,
                    meter: r.get(1)?,
                    obis: r.get(2)?,
                    name: r.get(3)?,
                    unit: r.get(4)?,
                    kind: r.get(5)?,
                    first: r.get(6)?,
                    last: r.get(7)?,
                    count: to_u64(r.get(8)?),
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    pub(crate) async fn points(&self, series_id: i64, from: i64, to: i64, limit: i64) -> DbResult<Vec<StoredPoint>> {
        self.read(move |conn| {
            let mut st = conn.prepare_cached(
                "SELECT ts, value, text, quality FROM readings
                 WHERE series_id = ?1 AND ts >= ?2 AND ts < ?3 ORDER BY ts LIMIT ?4",
            )?;
            let rows = st.query_map(params![series_id, from, to, limit], |r| {
                Ok(StoredPoint { ts: r.get(0)?, value: r.get(1)?, text: r.get(2)?, quality: r.get(3)? })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    pub(crate) async fn first_value_from(&self, series_id: i64, at: i64) -> DbResult<Option<f64>> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT value FROM readings WHERE series_id = ?1 AND ts >= ?2 AND value IS NOT NULL
                     ORDER BY ts LIMIT 1",
                )?
                .query_row(params![series_id, at], |r| r.get(0))
                .optional()?)
        })
        .await
    }

    pub(crate) async fn health(&self, site: String) -> DbResult<Option<HealthRecord>> {
        self.read(move |conn| {
            let row = conn
                .prepare_cached("SELECT received_at, body FROM health WHERE site = ?1")?
                .query_row(params![site], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
                .optional()?;
            Ok(row.map(|(at, body)| health_from(site, at, &body)))
        })
        .await
    }

    pub(crate) async fn queue_command(&self, site: String, meter: String, action: String, now: i64) -> DbResult<i64> {
        self.write(move |conn| {
            Ok(conn.query_row(
                "INSERT INTO commands (site, meter, action, status, created_at) VALUES (?1, ?2, ?3, 'pending', ?4)
                 RETURNING id",
                params![site, meter, action, now],
                |r| r.get(0),
            )?)
        })
        .await
    }

    pub(crate) async fn commands(&self, site: String, id: Option<i64>) -> DbResult<Vec<CommandRecord>> {
        self.read(move |conn| {
            let sql = format!(
                "SELECT {COMMAND_COLUMNS} FROM commands WHERE site = ?1 AND (?2 IS NULL OR id = ?2) ORDER BY id DESC"
            );
            let mut st = conn.prepare_cached(&sql)?;
            let rows = st.query_map(params![site, id], command_row)?;
            let rows: Vec<CommandRow> = rows.collect::<rusqlite::Result<_>>()?;
            Ok(rows.into_iter().filter_map(CommandRow::into_record).collect())
        })
        .await
    }
}

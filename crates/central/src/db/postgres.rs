//! PostgreSQL backend: tokio-postgres with a deadpool pool and cached prepared statements.
//!
//! Ingest sends each batch as column arrays through one `INSERT … SELECT FROM UNNEST(…) ON CONFLICT DO
//! NOTHING` (one round trip for the whole batch, no 65 535-parameter limit), whose `RETURNING` rows feed
//! the per-series counters in the same statement. Batches of one site are serialised with a transaction
//! advisory lock on the site id, so a batch re-sent while its first copy is still being written (a site
//! that timed out and retried) waits instead of deadlocking on the series counters.
//!
//! TLS: `sslmode=require` (or `verify-ca`, `verify-full`) in the URL turns on rustls, and the server
//! certificate is always verified, against the webpki roots or the PEM file named by `sslrootcert=PATH`.
//! Without `sslmode`, or with `disable`/`prefer`/`allow`, the connection is plain (loopback, unix-domain
//! deployments).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use ami_wire::IngestRequest;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::SslMode;
use tokio_postgres::{NoTls, Row};

use super::schema::{LATEST, MIGRATIONS, POSTGRES_VERSION_TABLE};
use super::{
    health_from, point_columns, principal_from, token_info, CommandRecord, CommandRow, DbError, DbResult, HealthRecord,
    IngestOutcome, Principal, SeriesInfo, SiteSummary, StoredPoint, TokenInfo, TokenKind,
};

/// Connections in the pool.
const POOL_SIZE: usize = 16;
/// Series ids remembered; the cache is cleared when it grows past this (it refills from the database).
const SERIES_CACHE_MAX: usize = 1_000_000;
/// Advisory lock key serialising migrations of concurrent starts ("amimigr").
const MIGRATION_LOCK: i64 = 0x0061_6d69_6d69_6772;

#[derive(Clone, PartialEq)]
struct SeriesMeta {
    id: i64,
    name: String,
    unit: String,
    kind: String,
}

type SeriesKey = (String, String, String);

pub(crate) struct PgStore {
    pool: Pool,
    series_cache: Mutex<HashMap<SeriesKey, SeriesMeta>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The cache holds plain data; a panic elsewhere cannot leave it inconsistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Splits our TLS parameters off the URL: (URL for tokio-postgres, TLS wanted, root CA file).
fn split_tls_params(url: &str) -> (String, bool, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), false, None);
    };
    let mut tls = false;
    let mut root = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "sslmode" => tls = matches!(v, "require" | "verify-ca" | "verify-full"),
            "sslrootcert" => root = Some(v.to_owned()),
            _ => rest.push(pair),
        }
    }
    let url = if rest.is_empty() { base.to_owned() } else { format!("{base}?{}", rest.join("&")) };
    (url, tls, root)
}

fn tls_connector(root: Option<&str>) -> DbResult<tokio_postgres_rustls::MakeRustlsConnect> {
    let mut roots = rustls::RootCertStore::empty();
    match root {
        Some(path) => {
            use rustls_pki_types::pem::PemObject;
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| DbError::Tls(format!("{path}: {e}")))?;
            for cert in certs {
                let cert = cert.map_err(|e| DbError::Tls(format!("{path}: {e}")))?;
                roots.add(cert).map_err(|e| DbError::Tls(format!("{path}: {e}")))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| DbError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

const COMMAND_COLUMNS: &str =
    "id, site, meter, action, status, created_at, sent_at, received_at, result_ok, result_message, result_at";

fn command_row(r: &Row) -> Result<CommandRow, tokio_postgres::Error> {
    Ok(CommandRow {
        id: r.try_get(0)?,
        site: r.try_get(1)?,
        meter: r.try_get(2)?,
        action: r.try_get(3)?,
        status: r.try_get(4)?,
        created_at: r.try_get(5)?,
        sent_at: r.try_get(6)?,
        received_at: r.try_get(7)?,
        result_ok: r.try_get(8)?,
        result_message: r.try_get(9)?,
        result_at: r.try_get(10)?,
    })
}

const INSERT_READINGS: &str = "
WITH ins AS (
    INSERT INTO readings (series_id, ts, value, text, quality)
    SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::DOUBLE PRECISION[], $4::TEXT[], $5::TEXT[])
    ON CONFLICT (series_id, ts) DO NOTHING
    RETURNING series_id, ts
), agg AS (
    SELECT series_id, COUNT(*) AS n, MIN(ts) AS lo, MAX(ts) AS hi FROM ins GROUP BY series_id
), upd AS (
    UPDATE series s SET readings = s.readings + agg.n,
        first_ts = LEAST(s.first_ts, agg.lo), last_ts = GREATEST(s.last_ts, agg.hi)
    FROM agg WHERE s.id = agg.series_id
    RETURNING agg.n
)
SELECT COALESCE(SUM(n), 0)::BIGINT FROM upd";

impl PgStore {
    pub(crate) async fn connect(url: &str) -> DbResult<PgStore> {
        let (plain_url, tls, root) = split_tls_params(url);
        let mut config: tokio_postgres::Config = plain_url
            .parse()
            .map_err(|e: tokio_postgres::Error| DbError::BadUrl { url: url.into(), reason: e.to_string() })?;
        config.connect_timeout(Duration::from_secs(10));
        if config.get_application_name().is_none() {
            config.application_name("ami-central");
        }
        let mgr_config = ManagerConfig { recycling_method: RecyclingMethod::Fast };
        let manager = if tls {
            config.ssl_mode(SslMode::Require);
            Manager::from_config(config, tls_connector(root.as_deref())?, mgr_config)
        } else {
            config.ssl_mode(SslMode::Disable);
            Manager::from_config(config, NoTls, mgr_config)
        };
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(Duration::from_secs(15)))
            .wait_timeout(Some(Duration::from_secs(60)))
            .build()
            .map_err(|e| DbError::Pool(e.to_string()))?;
        let store = PgStore { pool, series_cache: Mutex::new(HashMap::new()) };
        store.migrate().await?;
        Ok(store)
    }

    async fn client(&self) -> DbResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => DbError::Postgres(e),
            e => DbError::Pool(e.to_string()),
        })
    }

    async fn migrate(&self) -> DbResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
        tx.batch_execute(POSTGRES_VERSION_TABLE).await?;
        let current: i64 =
            tx.query_one("SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_version", &[]).await?.try_get(0)?;
        if current > LATEST {
            return Err(DbError::SchemaTooNew { found: current, known: LATEST });
        }
        let now = super::now_ms();
        for m in MIGRATIONS.iter().filter(|m| m.version > current) {
            tx.batch_execute(m.postgres).await?;
            tx.execute("INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)", &[&m.version, &now]).await?;
            tracing::info!(version = m.version, "postgres schema migrated");
        }
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn add_token(&self, kind: TokenKind, name: &str, hash: &str, now: i64) -> DbResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let site = (kind == TokenKind::Site).then_some(name);
        if let Some(site) = site {
            tx.execute(
                "INSERT INTO sites (site, created_at) VALUES ($1, $2) ON CONFLICT (site) DO NOTHING",
                &[&site, &now],
            )
            .await?;
        }
        tx.execute(
            "INSERT INTO tokens (hash, kind, site, name, created_at) VALUES ($1, $2, $3, $4, $5)",
            &[&hash, &kind.as_str(), &site, &name, &now],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn list_tokens(&self) -> DbResult<Vec<TokenInfo>> {
        let client = self.client().await?;
        let rows = client.query("SELECT id, kind, name, created_at, revoked_at FROM tokens ORDER BY id", &[]).await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get(1)?;
                Ok(token_info(r.try_get(0)?, &kind, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?))
            })
            .collect()
    }

    pub(crate) async fn revoke_token(&self, id: i64, now: i64) -> DbResult<bool> {
        let client = self.client().await?;
        let n = client
            .execute("UPDATE tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL", &[&id, &now])
            .await?;
        Ok(n > 0)
    }

    pub(crate) async fn authenticate(&self, hash: &str) -> DbResult<Option<Principal>> {
        let client = self.client().await?;
        let st =
            client.prepare_cached("SELECT kind, site, name FROM tokens WHERE hash = $1 AND revoked_at IS NULL").await?;
        let Some(row) = client.query_opt(&st, &[&hash]).await? else {
            return Ok(None);
        };
        let kind: String = row.try_get(0)?;
        Ok(principal_from(&kind, row.try_get(1)?, row.try_get(2)?))
    }

    pub(crate) async fn ingest(&self, req: &IngestRequest, now: i64) -> DbResult<IngestOutcome> {
        let site = req.site.as_str();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", &[&site]).await?;
        let st = tx
            .prepare_cached(
                "INSERT INTO sites (site, created_at, last_seen, last_batch) VALUES ($1, $2, $2, $3)
                 ON CONFLICT (site) DO UPDATE SET last_seen = EXCLUDED.last_seen, last_batch = EXCLUDED.last_batch",
            )
            .await?;
        tx.execute(&st, &[&site, &now, &to_i64(req.batch)]).await?;

        // Series ids: from the cache when name, unit and kind are unchanged, else one upsert for all.
        let mut ids: HashMap<(&str, &str), i64> = HashMap::new();
        let mut missing: HashMap<(&str, &str), &ami_wire::Series> = HashMap::new();
        {
            let cache = lock(&self.series_cache);
            for s in &req.series {
                let key = (site.to_owned(), s.meter.clone(), s.obis.clone());
                match cache.get(&key) {
                    Some(m) if m.name == s.name && m.unit == s.unit && m.kind == s.kind => {
                        ids.insert((s.meter.as_str(), s.obis.as_str()), m.id);
                    }
                    _ => {
                        missing.insert((s.meter.as_str(), s.obis.as_str()), s);
                    }
                }
            }
        }
        let mut learned = Vec::new();
        if !missing.is_empty() {
            let mut cols: [Vec<&str>; 5] = Default::default();
            for s in missing.values() {
                for (col, v) in cols.iter_mut().zip([&s.meter, &s.obis, &s.name, &s.unit, &s.kind]) {
                    col.push(v.as_str());
                }
            }
            let st = tx
                .prepare_cached(
                    "INSERT INTO series (site, meter, obis, name, unit, kind)
                     SELECT $1::TEXT, m, o, n, u, k FROM UNNEST($2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[])
                         AS t (m, o, n, u, k)
                     ON CONFLICT (site, meter, obis) DO UPDATE
                         SET name = EXCLUDED.name, unit = EXCLUDED.unit, kind = EXCLUDED.kind
                     RETURNING id, meter, obis",
                )
                .await?;
            let [meters, obis, names, units, kinds] = &cols;
            for row in tx.query(&st, &[&site, meters, obis, names, units, kinds]).await? {
                let id: i64 = row.try_get(0)?;
                let meter: String = row.try_get(1)?;
                let obis: String = row.try_get(2)?;
                if let Some(s) = missing.get(&(meter.as_str(), obis.as_str())).copied() {
                    ids.insert((s.meter.as_str(), s.obis.as_str()), id);
                    learned.push((
                        (site.to_owned(), meter, obis),
                        SeriesMeta { id, name: s.name.clone(), unit: s.unit.clone(), kind: s.kind.clone() },
                    ));
                }
            }
        }

        let total = req.readings();
        let mut sid = Vec::with_capacity(total);
        let mut ts = Vec::with_capacity(total);
        let mut val = Vec::with_capacity(total);
        let mut txt = Vec::with_capacity(total);
        let mut qual = Vec::with_capacity(total);
        for s in &req.series {
            let id = *ids
                .get(&(s.meter.as_str(), s.obis.as_str()))
                .ok_or_else(|| DbError::Task(format!("no series id for {}/{}", s.meter, s.obis)))?;
            for p in &s.points {
                let c = point_columns(&p.v);
                sid.push(id);
                ts.push(p.t);
                val.push(c.value);
                txt.push(c.text);
                qual.push(p.q.as_deref());
            }
        }
        let mut inserted = 0u64;
        if !sid.is_empty() {
            let st = tx.prepare_cached(INSERT_READINGS).await?;
            let n: i64 = tx.query_one(&st, &[&sid, &ts, &val, &txt, &qual]).await?.try_get(0)?;
            inserted = to_u64(n);
        }

        if !req.results.is_empty() {
            let st = tx
                .prepare_cached(
                    "UPDATE commands SET status = $3, result_ok = $4, result_message = $5, result_at = $6,
                         done_at = $7, received_at = COALESCE(received_at, $7)
                     WHERE id = $1 AND site = $2 AND status IN ('pending', 'sent')",
                )
                .await?;
            for r in &req.results {
                let status = if r.ok { "done" } else { "failed" };
                tx.execute(&st, &[&r.id, &site, &status, &r.ok, &r.message, &r.at, &now]).await?;
            }
        }
        if !req.received.is_empty() {
            let st = tx
                .prepare_cached(
                    "UPDATE commands SET received_at = $3 WHERE site = $2 AND id = ANY($1) AND received_at IS NULL",
                )
                .await?;
            tx.execute(&st, &[&req.received, &site, &now]).await?;
        }
        if let Some(h) = &req.health {
            let body = serde_json::to_string(h).unwrap_or_else(|_| "{}".into());
            let st = tx
                .prepare_cached(
                    "INSERT INTO health (site, received_at, body) VALUES ($1, $2, $3)
                     ON CONFLICT (site) DO UPDATE SET received_at = EXCLUDED.received_at, body = EXCLUDED.body",
                )
                .await?;
            tx.execute(&st, &[&site, &now, &body]).await?;
        }
        let st = tx
            .prepare_cached(
                "UPDATE commands SET status = 'sent', sent_at = COALESCE(sent_at, $2)
                 WHERE site = $1 AND status IN ('pending', 'sent') AND received_at IS NULL
                 RETURNING id, meter, action",
            )
            .await?;
        let mut rows = Vec::new();
        for r in tx.query(&st, &[&site, &now]).await? {
            rows.push((r.try_get::<_, i64>(0)?, r.try_get::<_, String>(1)?, r.try_get::<_, String>(2)?));
        }
        rows.sort_by_key(|r| r.0);
        tx.commit().await?;

        // Only committed series ids may be cached: a rolled-back batch would leave ids that do not exist.
        if !learned.is_empty() {
            let mut cache = lock(&self.series_cache);
            if cache.len() + learned.len() > SERIES_CACHE_MAX {
                cache.clear();
            }
            cache.extend(learned);
        }
        Ok(IngestOutcome { inserted, commands: super::deliverable(rows) })
    }

    pub(crate) async fn sites(&self) -> DbResult<Vec<SiteSummary>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT s.site, s.last_seen,
                    (SELECT COUNT(DISTINCT meter) FROM series WHERE site = s.site),
                    (SELECT COALESCE(SUM(readings), 0)::BIGINT FROM series WHERE site = s.site),
                    (SELECT COUNT(*) FROM commands WHERE site = s.site AND status IN ('pending', 'sent'))
                 FROM sites s ORDER BY s.site",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(SiteSummary {
                    site: r.try_get(0)?,
                    last_seen: r.try_get(1)?,
                    meters: to_u64(r.try_get(2)?),
                    readings: to_u64(r.try_get(3)?),
                    pending_commands: to_u64(r.try_get(4)?),
                })
            })
            .collect()
    }

    pub(crate) async fn site_exists(&self, site: &str) -> DbResult<bool> {
        let client = self.client().await?;
        let st = client.prepare_cached("SELECT 1 FROM sites WHERE site = $1").await?;
        Ok(client.query_opt(&st, &[&site]).await?.is_some())
    }

    pub(crate) async fn series(&self, site: &str) -> DbResult<Vec<SeriesInfo>> {
        let client = self.client().await?;
        let st = client
            .prepare_cached(
                "SELECT id, meter, obis, name, unit, kind, first_ts, last_ts, readings
                 FROM series WHERE site = $1 ORDER BY meter, obis",
            )
            .await?;
        client
            .query(&st, &[&site])
            .await?
            .iter()
            .map(|r| {
                Ok(SeriesInfo {
                    id: r.try_get(0)?,
                    meter: r.try_get(1)?,
                    obis: r.try_get(2)?,
                    name: r.try_get(3)?,
                    unit: r.try_get(4)?,
                    kind: r.try_get(5)?,
                    first: r.try_get(6)?,
                    last: r.try_get(7)?,
                    count: to_u64(r.try_get(8)?),
                })
            })
            .collect()
    }

    pub(crate) async fn points(&self, series_id: i64, from: i64, to: i64, limit: i64) -> DbResult<Vec<StoredPoint>> {
        let client = self.client().await?;
        let st = client
            .prepare_cached(
                "SELECT ts, value, text, quality FROM readings
                 WHERE series_id = $1 AND ts >= $2 AND ts < $3 ORDER BY ts LIMIT $4",
            )
            .await?;
        client
            .query(&st, &[&series_id, &from, &to, &limit])
            .await?
            .iter()
            .map(|r| {
                Ok(StoredPoint { ts: r.try_get(0)?, value: r.try_get(1)?, text: r.try_get(2)?, quality: r.try_get(3)? })
            })
            .collect()
    }

    pub(crate) async fn first_value_from(&self, series_id: i64, at: i64) -> DbResult<Option<f64>> {
        let client = self.client().await?;
        let st = client
            .prepare_cached(
                "SELECT value FROM readings WHERE series_id = $1 AND ts >= $2 AND value IS NOT NULL
                 ORDER BY ts LIMIT 1",
            )
            .await?;
        Ok(match client.query_opt(&st, &[&series_id, &at]).await? {
            Some(r) => r.try_get(0)?,
            None => None,
        })
    }

    pub(crate) async fn health(&self, site: &str) -> DbResult<Option<HealthRecord>> {
        let client = self.client().await?;
        let row = client.query_opt("SELECT received_at, body FROM health WHERE site = $1", &[&site]).await?;
        Ok(match row {
            Some(r) => {
                let body: String = r.try_get(1)?;
                Some(health_from(site.to_owned(), r.try_get(0)?, &body))
            }
            None => None,
        })
    }

    pub(crate) async fn queue_command(&self, site: &str, meter: &str, action: &str, now: i64) -> DbResult<i64> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "INSERT INTO commands (site, meter, action, status, created_at) VALUES ($1, $2, $3, 'pending', $4)
                 RETURNING id",
                &[&site, &meter, &action, &now],
            )
            .await?;
        Ok(row.try_get(0)?)
    }

    pub(crate) async fn commands(&self, site: &str, id: Option<i64>) -> DbResult<Vec<CommandRecord>> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {COMMAND_COLUMNS} FROM commands WHERE site = $1 AND ($2::BIGINT IS NULL OR id = $2) ORDER BY id DESC"
        );
        let st = client.prepare_cached(&sql).await?;
        let mut out = Vec::new();
        for r in client.query(&st, &[&site, &id]).await? {
            if let Some(rec) = command_row(&r)?.into_record() {
                out.push(rec);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_off_the_url() {
        assert_eq!(split_tls_params("postgres://u@h/db"), ("postgres://u@h/db".into(), false, None));
        assert_eq!(
            split_tls_params("postgres://u@h/db?sslmode=require&application_name=x&sslrootcert=/ca.pem"),
            ("postgres://u@h/db?application_name=x".into(), true, Some("/ca.pem".into()))
        );
        assert_eq!(split_tls_params("postgres://u@h/db?sslmode=prefer"), ("postgres://u@h/db".into(), false, None));
    }
}

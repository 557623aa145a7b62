//! The central store: one schema on two backends, SQLite (embedded default) and PostgreSQL (utilities).
//!
//! [`Db`] is the only way the API touches storage. It owns the schema and its migrations
//! ([`schema`]), the token table, ingest (one transaction per batch), the command queue and the read
//! queries behind the query API. It never interprets readings beyond storing them; aggregation lives in
//! [`crate::query`].
//!
//! # Data model
//! - `sites(site, created_at, last_seen, last_batch)`: one row per site, created by `token add SITE` or by
//!   its first batch.
//! - `series(id, site, meter, obis, name, unit, kind, first_ts, last_ts, readings)`: one row per
//!   (site, meter, obis), unique. `id` is a surrogate key so a reading row does not repeat three strings;
//!   `first_ts`, `last_ts` and `readings` are kept up to date by ingest so listings never scan readings.
//! - `readings(series_id, ts, value, text, quality)`, primary key `(series_id, ts)`: the natural key
//!   (site, meter, obis, ts) through the series id. Ingest inserts with `ON CONFLICT DO NOTHING`, so a
//!   re-sent batch keeps the first value and counts as `inserted = 0`. `ts` is ms since the Unix epoch.
//! - `health(site, received_at, body)`: the latest heartbeat per site (JSON of `ami_wire::Health`).
//! - `commands(id, site, meter, action, status, created_at, sent_at, received_at, result_*)`: the queue.
//! - `tokens(id, hash, kind, site, name, created_at, revoked_at)`: SHA-256 of site and operator tokens.
//!
//! # Invariants
//! - A batch is written in one transaction: readings, command results, received ids, health and
//!   `last_seen` all land or none does.
//! - A command is delivered in every ingest response until the site lists it in `received`; its first
//!   result is recorded and later results for a finished command are ignored.
//! - Readings are never updated or deleted by the API.
//!
//! Times are `i64` milliseconds since the Unix epoch (UTC) in both backends.

pub mod postgres;
pub mod schema;
pub mod sqlite;

use std::fmt;

use ami_wire::{Action, Health, IngestRequest};
use serde::{Deserialize, Serialize};

use crate::auth;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The `--db` URL is not `sqlite:PATH` or `postgres://…`.
    #[error("bad database URL {url:?}: {reason}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed.
    #[error("postgres: {}", pg_detail(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// No PostgreSQL connection could be taken from the pool.
    #[error("postgres pool: {0}")]
    Pool(String),
    /// The database was migrated by a newer ami-central.
    #[error("database schema version {found} is newer than this ami-central knows ({known})")]
    SchemaTooNew {
        /// Version in the database.
        found: i64,
        /// Latest version this binary has.
        known: i64,
    },
    /// Input the store refuses (bad site id, unknown site).
    #[error("{0}")]
    Invalid(String),
    /// A blocking task panicked or was cancelled.
    #[error("storage task failed: {0}")]
    Task(String),
    /// TLS setup for PostgreSQL failed.
    #[error("postgres TLS: {0}")]
    Tls(String),
}

/// tokio-postgres puts the useful part (the server's message, the OS error) in `source()`.
pub fn pg_detail(e: &tokio_postgres::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

impl DbError {
    /// Whether the error is the caller's fault (bad input) rather than a storage failure.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, DbError::BadUrl { .. } | DbError::Invalid(_))
    }
}

/// Result of store operations.
pub type DbResult<T> = Result<T, DbError>;

/// What a token authorises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// May ingest for one site.
    Site,
    /// May use the query API, the command queue and the dashboard.
    Operator,
}

impl TokenKind {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Site => "site",
            TokenKind::Operator => "operator",
        }
    }

    fn parse(s: &str) -> Option<TokenKind> {
        match s {
            "site" => Some(TokenKind::Site),
            "operator" => Some(TokenKind::Operator),
            _ => None,
        }
    }
}

/// Who a valid token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A site token for this site id.
    Site(String),
    /// An operator token with this name.
    Operator(String),
}

/// A token as `token list` shows it (never the secret).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenInfo {
    /// Token id (for `token revoke`).
    pub id: i64,
    /// Site or operator.
    pub kind: TokenKind,
    /// The site id (site tokens) or the operator's name.
    pub name: String,
    /// Creation time (ms).
    pub created_at: i64,
    /// Revocation time (ms), if revoked.
    pub revoked_at: Option<i64>,
}

/// One row of `GET /api/v1/sites`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SiteSummary {
    /// Site id.
    pub site: String,
    /// Distinct meters with at least one series.
    pub meters: u64,
    /// Readings stored.
    pub readings: u64,
    /// Last ingest (ms), if any.
    pub last_seen: Option<i64>,
    /// Commands not finished yet (`pending` or `sent`).
    pub pending_commands: u64,
}

/// One series of a site (a meter's value).
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesInfo {
    /// Surrogate id.
    pub id: i64,
    /// Meter id.
    pub meter: String,
    /// OBIS code.
    pub obis: String,
    /// The profile's value name.
    pub name: String,
    /// Unit symbol.
    pub unit: String,
    /// `instantaneous`, `counter` or `static`.
    pub kind: String,
    /// Oldest reading (ms).
    pub first: Option<i64>,
    /// Newest reading (ms).
    pub last: Option<i64>,
    /// Readings stored.
    pub count: u64,
}

/// One stored reading of a series.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPoint {
    /// Timestamp (ms).
    pub ts: i64,
    /// Numeric value, when the reading is a number.
    pub value: Option<f64>,
    /// Text value, when the reading is text.
    pub text: Option<String>,
    /// Quality flags; `None` = ok.
    pub quality: Option<String>,
}

/// Command states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    /// Queued, not delivered yet.
    Pending,
    /// Delivered in at least one ingest response, no result yet.
    Sent,
    /// The site reported success.
    Done,
    /// The site reported failure.
    Failed,
}

impl CommandStatus {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandStatus::Pending => "pending",
            CommandStatus::Sent => "sent",
            CommandStatus::Done => "done",
            CommandStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> CommandStatus {
        match s {
            "sent" => CommandStatus::Sent,
            "done" => CommandStatus::Done,
            "failed" => CommandStatus::Failed,
            _ => CommandStatus::Pending,
        }
    }
}

impl fmt::Display for CommandStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A command's outcome as the site reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandOutcome {
    /// Success.
    pub ok: bool,
    /// What happened.
    pub message: String,
    /// When it finished (ms, site clock).
    pub at: i64,
}

/// A command in the queue.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandRecord {
    /// Command id.
    pub id: i64,
    /// Site id.
    pub site: String,
    /// Target meter.
    pub meter: String,
    /// What to do.
    pub action: Action,
    /// State.
    pub status: CommandStatus,
    /// When it was queued (ms).
    pub created_at: i64,
    /// First delivery (ms).
    pub sent_at: Option<i64>,
    /// When the site confirmed it received it (ms).
    pub received_at: Option<i64>,
    /// The result, once reported.
    pub result: Option<CommandOutcome>,
}

/// The latest heartbeat of a site.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthRecord {
    /// Site id.
    pub site: String,
    /// When the central store received it (ms).
    pub received_at: i64,
    /// The site's health.
    pub health: Health,
}

/// What ingest did with a batch.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IngestOutcome {
    /// Readings that were new.
    pub inserted: u64,
    /// Commands to deliver in the response.
    pub commands: Vec<ami_wire::Command>,
}

enum Backend {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PgStore),
}

/// The store, cheap to clone (shared connection pools).
#[derive(Clone)]
pub struct Db {
    backend: std::sync::Arc<Backend>,
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match *self.backend {
            Backend::Sqlite(_) => "Db(sqlite)",
            Backend::Postgres(_) => "Db(postgres)",
        })
    }
}

/// Now in ms since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Checks a site id given to `token add` or in a URL: 1–128 characters of `A–Z a–z 0–9 . _ : -`.
pub fn check_site_id(site: &str) -> DbResult<()> {
    let ok = !site.is_empty()
        && site.len() <= 128
        && site.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'));
    if ok {
        Ok(())
    } else {
        Err(DbError::Invalid(format!("bad site id {site:?}: use 1-128 characters of A-Z a-z 0-9 . _ : -")))
    }
}

impl Db {
    /// Opens the store named by `url` (`sqlite:PATH`, `sqlite://PATH` or `postgres://…` /
    /// `postgresql://…`) and runs the migrations.
    pub async fn connect(url: &str) -> DbResult<Db> {
        let backend = if let Some(rest) = url.strip_prefix("sqlite:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() || path == ":memory:" {
                return Err(DbError::BadUrl {
                    url: url.into(),
                    reason: "give a file path (sqlite:PATH); an in-memory store cannot be shared".into(),
                });
            }
            Backend::Sqlite(sqlite::SqliteStore::open(std::path::PathBuf::from(path)).await?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres(postgres::PgStore::connect(url).await?)
        } else {
            return Err(DbError::BadUrl {
                url: url.into(),
                reason: "expected sqlite:PATH or postgres://USER@HOST:PORT/DB".into(),
            });
        };
        Ok(Db { backend: std::sync::Arc::new(backend) })
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        match *self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Creates a site token (and the site) and returns the secret, which is not stored.
    pub async fn add_site_token(&self, site: &str) -> DbResult<String> {
        check_site_id(site)?;
        self.add_token(TokenKind::Site, site).await
    }

    /// Creates an operator token and returns the secret, which is not stored.
    pub async fn add_operator_token(&self, name: &str) -> DbResult<String> {
        if name.trim().is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err(DbError::Invalid("operator name must be 1-128 printable characters".into()));
        }
        self.add_token(TokenKind::Operator, name).await
    }

    async fn add_token(&self, kind: TokenKind, name: &str) -> DbResult<String> {
        let token = auth::new_token();
        let hash = auth::hash_token(&token);
        let now = now_ms();
        match &*self.backend {
            Backend::Sqlite(s) => s.add_token(kind, name.to_owned(), hash, now).await?,
            Backend::Postgres(p) => p.add_token(kind, name, &hash, now).await?,
        }
        Ok(token)
    }

    /// Every token, oldest first, without secrets.
    pub async fn list_tokens(&self) -> DbResult<Vec<TokenInfo>> {
        match &*self.backend {
            Backend::Sqlite(s) => s.list_tokens().await,
            Backend::Postgres(p) => p.list_tokens().await,
        }
    }

    /// Revokes a token; `false` when no unrevoked token has that id.
    pub async fn revoke_token(&self, id: i64) -> DbResult<bool> {
        let now = now_ms();
        match &*self.backend {
            Backend::Sqlite(s) => s.revoke_token(id, now).await,
            Backend::Postgres(p) => p.revoke_token(id, now).await,
        }
    }

    /// Looks a presented token up by its hash; `None` when unknown or revoked.
    pub async fn authenticate(&self, token: &str) -> DbResult<Option<Principal>> {
        if token.is_empty() || token.len() > 256 {
            return Ok(None);
        }
        let hash = auth::hash_token(token);
        match &*self.backend {
            Backend::Sqlite(s) => s.authenticate(hash).await,
            Backend::Postgres(p) => p.authenticate(&hash).await,
        }
    }

    /// Stores a validated batch in one transaction and returns what to answer. `req.site` must be the
    /// authenticated site; the caller checks that and validates the batch first.
    pub async fn ingest(&self, req: &IngestRequest) -> DbResult<IngestOutcome> {
        let now = now_ms();
        match &*self.backend {
            Backend::Sqlite(s) => s.ingest(req.clone(), now).await,
            Backend::Postgres(p) => p.ingest(req, now).await,
        }
    }

    /// Every site with its counters, by id.
    pub async fn sites(&self) -> DbResult<Vec<SiteSummary>> {
        match &*self.backend {
            Backend::Sqlite(s) => s.sites().await,
            Backend::Postgres(p) => p.sites().await,
        }
    }

    /// Whether the site exists (has a token or sent a batch).
    pub async fn site_exists(&self, site: &str) -> DbResult<bool> {
        match &*self.backend {
            Backend::Sqlite(s) => s.site_exists(site.to_owned()).await,
            Backend::Postgres(p) => p.site_exists(site).await,
        }
    }

    /// Every series of a site, by meter and OBIS code.
    pub async fn series(&self, site: &str) -> DbResult<Vec<SeriesInfo>> {
        match &*self.backend {
            Backend::Sqlite(s) => s.series(site.to_owned()).await,
            Backend::Postgres(p) => p.series(site).await,
        }
    }

    /// Readings of a series with `from <= ts < to`, oldest first, at most `limit`.
    pub async fn points(&self, series_id: i64, from: i64, to: i64, limit: u64) -> DbResult<Vec<StoredPoint>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        match &*self.backend {
            Backend::Sqlite(s) => s.points(series_id, from, to, limit).await,
            Backend::Postgres(p) => p.points(series_id, from, to, limit).await,
        }
    }

    /// The first numeric reading of a series at or after `at` (closes the last bucket of a delta).
    pub async fn first_value_from(&self, series_id: i64, at: i64) -> DbResult<Option<f64>> {
        match &*self.backend {
            Backend::Sqlite(s) => s.first_value_from(series_id, at).await,
            Backend::Postgres(p) => p.first_value_from(series_id, at).await,
        }
    }

    /// The latest heartbeat of a site.
    pub async fn health(&self, site: &str) -> DbResult<Option<HealthRecord>> {
        match &*self.backend {
            Backend::Sqlite(s) => s.health(site.to_owned()).await,
            Backend::Postgres(p) => p.health(site).await,
        }
    }

    /// Queues a command for a meter of a site and returns its id. The site must exist.
    pub async fn queue_command(&self, site: &str, meter: &str, action: &Action) -> DbResult<i64> {
        if meter.is_empty() || meter.len() > 256 || meter.contains('\0') {
            return Err(DbError::Invalid("meter must be 1-256 characters, without NUL".into()));
        }
        if !self.site_exists(site).await? {
            return Err(DbError::Invalid(format!("unknown site {site:?}")));
        }
        let action = serde_json::to_string(action).map_err(|e| DbError::Invalid(e.to_string()))?;
        let now = now_ms();
        match &*self.backend {
            Backend::Sqlite(s) => s.queue_command(site.to_owned(), meter.to_owned(), action, now).await,
            Backend::Postgres(p) => p.queue_command(site, meter, &action, now).await,
        }
    }

    /// One command of a site.
    pub async fn command(&self, site: &str, id: i64) -> DbResult<Option<CommandRecord>> {
        match &*self.backend {
            Backend::Sqlite(s) => s.commands(site.to_owned(), Some(id)).await.map(|v| v.into_iter().next()),
            Backend::Postgres(p) => p.commands(site, Some(id)).await.map(|v| v.into_iter().next()),
        }
    }

    /// Every command of a site, newest first.
    pub async fn commands(&self, site: &str) -> DbResult<Vec<CommandRecord>> {
        match &*self.backend {
            Backend::Sqlite(s) => s.commands(site.to_owned(), None).await,
            Backend::Postgres(p) => p.commands(site, None).await,
        }
    }
}

/// A command row as both backends read it, before the action JSON is parsed.
pub(crate) struct CommandRow {
    pub(crate) id: i64,
    pub(crate) site: String,
    pub(crate) meter: String,
    pub(crate) action: String,
    pub(crate) status: String,
    pub(crate) created_at: i64,
    pub(crate) sent_at: Option<i64>,
    pub(crate) received_at: Option<i64>,
    pub(crate) result_ok: Option<bool>,
    pub(crate) result_message: Option<String>,
    pub(crate) result_at: Option<i64>,
}

impl CommandRow {
    /// The record; `None` (logged) when the stored action is not valid JSON, which only a hand edit causes.
    pub(crate) fn into_record(self) -> Option<CommandRecord> {
        let action: Action = match serde_json::from_str(&self.action) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(id = self.id, error = %e, "command with unreadable action skipped");
                return None;
            }
        };
        let result = match (self.result_ok, self.result_at) {
            (Some(ok), Some(at)) => Some(CommandOutcome { ok, message: self.result_message.unwrap_or_default(), at }),
            _ => None,
        };
        Some(CommandRecord {
            id: self.id,
            site: self.site,
            meter: self.meter,
            action,
            status: CommandStatus::parse(&self.status),
            created_at: self.created_at,
            sent_at: self.sent_at,
            received_at: self.received_at,
            result,
        })
    }
}

/// Parses a stored token kind; unknown kinds (hand edits) grant nothing.
pub(crate) fn principal_from(kind: &str, site: Option<String>, name: String) -> Option<Principal> {
    match TokenKind::parse(kind)? {
        TokenKind::Site => Some(Principal::Site(site?)),
        TokenKind::Operator => Some(Principal::Operator(name)),
    }
}

/// Parses a stored token row for listing.
pub(crate) fn token_info(id: i64, kind: &str, name: String, created_at: i64, revoked_at: Option<i64>) -> TokenInfo {
    TokenInfo { id, kind: TokenKind::parse(kind).unwrap_or(TokenKind::Site), name, created_at, revoked_at }
}

/// Parses a stored heartbeat; a damaged one reads as the default.
pub(crate) fn health_from(site: String, received_at: i64, body: &str) -> HealthRecord {
    HealthRecord { site, received_at, health: serde_json::from_str(body).unwrap_or_default() }
}

/// The columns ingest writes for one point.
pub(crate) struct PointColumns {
    pub(crate) value: Option<f64>,
    pub(crate) text: Option<String>,
}

pub(crate) fn point_columns(v: &ami_wire::PointValue) -> PointColumns {
    match v {
        ami_wire::PointValue::Number(n) => PointColumns { value: Some(*n), text: None },
        ami_wire::PointValue::Text(t) => PointColumns { value: None, text: Some(t.clone()) },
    }
}

/// Commands to deliver, from `(id, meter, action JSON)` rows; unreadable actions are skipped (logged).
pub(crate) fn deliverable(rows: Vec<(i64, String, String)>) -> Vec<ami_wire::Command> {
    rows.into_iter()
        .filter_map(|(id, meter, action)| match serde_json::from_str(&action) {
            Ok(action) => Some(ami_wire::Command { id, meter, action }),
            Err(e) => {
                tracing::warn!(id, error = %e, "command with unreadable action not delivered");
                None
            }
        })
        .collect()
}

//! Shared test setup: a fresh store on SQLite (temporary directory) or PostgreSQL (a new schema in the
//! `test` database, dropped afterwards), tokens, batches, and in-process requests.
//!
//! PostgreSQL: `AMI_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432/test`). When it is not
//! reachable the PostgreSQL tests fail with the reason, unless `AMI_SKIP_POSTGRES=1`.
#![allow(dead_code, unreachable_pub)]

use ami_central::{Db, ServerConfig};
use ami_wire::{IngestRequest, Point, PointValue, Series};
use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use tower::ServiceExt;

/// 2026-11-23T00:00:00Z in ms.
pub const DAY0_MS: i64 = 1_795_392_000_000;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub enum Guard {
    Dir(#[allow(dead_code)] tempfile::TempDir),
    Schema { admin: String, schema: String },
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Guard::Schema { admin, schema } = self {
            let (admin, schema) = (admin.clone(), schema.clone());
            // Drop runs inside the test's runtime: use a thread with its own.
            let _ = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
                rt.block_on(async move {
                    if let Ok((client, conn)) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await {
                        tokio::spawn(conn);
                        let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
                    }
                });
            })
            .join();
        }
    }
}

/// A fresh store with a site token for `s1` and `s2` and an operator token.
pub struct TestDb {
    pub db: Db,
    /// The store's URL (to open it again).
    pub url: String,
    pub backend: Backend,
    pub site_token: String,
    pub other_site_token: String,
    pub operator_token: String,
    _guard: Guard,
}

pub fn postgres_admin_url() -> String {
    std::env::var("AMI_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn random_suffix() -> String {
    use rand::Rng;
    let n: u64 = rand::thread_rng().gen();
    format!("{n:016x}")
}

/// A fresh PostgreSQL store URL (a new schema, dropped with the guard); `None` when skipped by
/// `AMI_SKIP_POSTGRES=1`.
pub async fn fresh_postgres() -> Option<(String, Guard)> {
    let admin = postgres_admin_url();
    let client = match tokio_postgres::connect(&admin, tokio_postgres::NoTls).await {
        Ok((client, conn)) => {
            tokio::spawn(conn);
            client
        }
        Err(e) => {
            if std::env::var("AMI_SKIP_POSTGRES").as_deref() == Ok("1") {
                eprintln!("PostgreSQL test skipped (AMI_SKIP_POSTGRES=1): {e}");
                return None;
            }
            let e = ami_central::db::pg_detail(&e);
            panic!(
                "PostgreSQL is not reachable at {admin}: {e}. Start it (tests/run.sh does: trust auth on \
                 127.0.0.1:5432, database `test`), point AMI_TEST_POSTGRES at one, or set AMI_SKIP_POSTGRES=1 \
                 to skip the PostgreSQL tests"
            );
        }
    };
    let schema = format!("ami_test_{}", random_suffix());
    client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.expect("create test schema");
    let sep = if admin.contains('?') { '&' } else { '?' };
    let url = format!("{admin}{sep}options=-csearch_path%3D{schema}");
    Some((url, Guard::Schema { admin, schema }))
}

impl TestDb {
    pub async fn open(backend: Backend) -> Option<TestDb> {
        let (db, url, guard) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite:{}", dir.path().join("central.db").display());
                (Db::connect(&url).await.unwrap(), url, Guard::Dir(dir))
            }
            Backend::Postgres => {
                let (url, guard) = fresh_postgres().await?;
                (Db::connect(&url).await.unwrap(), url, guard)
            }
        };
        let site_token = db.add_site_token("s1").await.unwrap();
        let other_site_token = db.add_site_token("s2").await.unwrap();
        let operator_token = db.add_operator_token("alice").await.unwrap();
        Some(TestDb { db, url, backend, site_token, other_site_token, operator_token, _guard: guard })
    }

    pub fn app(&self) -> Router {
        ami_central::router(ami_central::state(self.db.clone(), &ServerConfig::default()))
    }

    /// Readings stored for a site, counted from the rows themselves (not only the counters).
    pub async fn stored_readings(&self, site: &str) -> u64 {
        let mut n = 0;
        for s in self.db.series(site).await.unwrap() {
            n += self.db.points(s.id, i64::MIN, i64::MAX, u64::MAX).await.unwrap().len() as u64;
        }
        n
    }

    /// Asserts that nothing from a batch reached the store for `site`.
    pub async fn assert_untouched(&self, site: &str) {
        assert_eq!(self.stored_readings(site).await, 0, "readings were written");
        assert!(self.db.series(site).await.unwrap().is_empty(), "series were written");
        assert!(self.db.health(site).await.unwrap().is_none(), "health was written");
        let sites = self.db.sites().await.unwrap();
        let s = sites.iter().find(|s| s.site == site).unwrap();
        assert_eq!(s.last_seen, None, "last_seen was set");
    }
}

/// Runs each named `async fn NAME(t: TestDb)` against SQLite and PostgreSQL as tests `NAME::sqlite` and
/// `NAME::postgres`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                if let Some(t) = $crate::common::TestDb::open($crate::common::Backend::Sqlite).await {
                    super::$name(t).await
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(t) = $crate::common::TestDb::open($crate::common::Backend::Postgres).await {
                    super::$name(t).await
                }
            }
        }
    )*};
}

/// A response, collected.
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The `error` field of a JSON error body.
    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_else(|| panic!("no error field: {}", self.text())).to_owned()
    }
}

pub async fn call(app: &Router, req: Request<Body>) -> Resp {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
    Resp { status, headers, body }
}

pub fn ingest_request(token: Option<&str>, body: Vec<u8>, gzip: bool) -> Request<Body> {
    let mut b = Request::builder()
        .method(Method::POST)
        .uri(ami_wire::INGEST_PATH)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if gzip {
        b = b.header(header::CONTENT_ENCODING, "gzip");
    }
    b.body(Body::from(body)).unwrap()
}

pub async fn ingest(app: &Router, token: &str, req: &IngestRequest) -> Resp {
    call(app, ingest_request(Some(token), ami_wire::encode_gzip(req), true)).await
}

pub fn get(token: Option<&str>, uri: &str) -> Request<Body> {
    let mut b = Request::builder().method(Method::GET).uri(uri);
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    b.body(Body::empty()).unwrap()
}

pub fn post_json(token: Option<&str>, uri: &str, body: &serde_json::Value) -> Request<Body> {
    let mut b = Request::builder().method(Method::POST).uri(uri).header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    b.body(Body::from(serde_json::to_vec(body).unwrap())).unwrap()
}

/// A day of 15-min data for `meters` meters of `site`: an energy counter (250 Wh per interval from
/// 10 000 Wh) and a power value (1000 + i W).
pub fn day_batch(site: &str, meters: usize) -> IngestRequest {
    let mut series = Vec::new();
    for m in 0..meters {
        let meter = format!("m{m}");
        series.push(Series {
            meter: meter.clone(),
            name: "energy_import_total".into(),
            obis: "1-0:1.8.0*255".into(),
            unit: "Wh".into(),
            kind: "counter".into(),
            points: (0..96)
                .map(|i| Point {
                    t: DAY0_MS + i * 900_000,
                    v: PointValue::Number(10_000.0 + i as f64 * 250.0),
                    q: None,
                })
                .collect(),
        });
        series.push(Series {
            meter,
            name: "power_active_total".into(),
            obis: "1-0:1.7.0*255".into(),
            unit: "W".into(),
            kind: "instantaneous".into(),
            points: (0..96)
                .map(|i| Point { t: DAY0_MS + i * 900_000, v: PointValue::Number(1000.0 + i as f64), q: None })
                .collect(),
        });
    }
    IngestRequest { site: site.into(), batch: 1, sent_at: DAY0_MS, series, ..IngestRequest::default() }
}

//! The HTTP API: routes, authentication, ingest, the query API, the command queue and the dashboard's
//! pages. The contract is `/work/notes/central-api.md` (summarised on each handler).
//!
//! Every error is JSON `{"error": "<reason>"}` with 400 (bad input), 401 (no or unknown token), 403
//! (token of the wrong kind or site), 404, 413 (body over [`ami_wire::MAX_BODY`]) or 500 (storage failed;
//! the detail goes to the log, not to the client). Rejected requests write nothing. No handler panics on
//! any request: bodies are read through a length limit and decoded by `ami_wire` into typed errors.

use std::sync::Arc;
use std::time::Instant;

use ami_wire::{Action, IngestRequest, IngestResponse, MAX_BODY};
use axum::body::{Body, Bytes};
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Form, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::assets;
use crate::auth;
use crate::db::{CommandRecord, Db, DbError, Principal};
use crate::query::{self, Agg, ReadingOut, Resolution};

/// Longest id, name, unit or quality string accepted in a batch (bytes).
const MAX_LABEL: usize = 256;
/// Longest text value accepted in a batch (bytes).
const MAX_TEXT: usize = 4096;
/// Latest timestamp accepted: 9999-12-31T23:59:59.999Z.
const MAX_TS: i64 = 253_402_300_799_999;

/// What the dashboard reads from `GET /api/v1/config`.
#[derive(Debug, Clone, PartialEq)]
pub struct PublicConfig {
    /// Price per kWh.
    pub tariff: f64,
    /// Currency code of the tariff.
    pub currency: String,
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    db: Db,
    config: Arc<PublicConfig>,
    secure_cookies: bool,
}

impl AppState {
    /// State for a store and its configuration. `secure_cookies` adds `Secure` to the session cookie
    /// (set it when serving HTTPS).
    pub fn new(db: Db, config: PublicConfig, secure_cookies: bool) -> AppState {
        AppState { db, config: Arc::new(config), secure_cookies }
    }

    /// The store.
    pub fn db(&self) -> &Db {
        &self.db
    }

    async fn principal(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let token = auth::presented_token(headers).ok_or_else(|| ApiError::unauthorized("missing token"))?;
        self.db.authenticate(&token).await?.ok_or_else(|| ApiError::unauthorized("invalid or revoked token"))
    }

    async fn operator(&self, headers: &HeaderMap) -> Result<String, ApiError> {
        match self.principal(headers).await? {
            Principal::Operator(name) => Ok(name),
            Principal::Site(_) => Err(ApiError::forbidden("site tokens may only ingest; use an operator token")),
        }
    }

    /// The operator's name and a check that the site exists.
    async fn operator_for_site(&self, headers: &HeaderMap, site: &str) -> Result<String, ApiError> {
        let name = self.operator(headers).await?;
        if site.contains('\0') || !self.db.site_exists(site).await? {
            return Err(ApiError::not_found(format!("unknown site {site:?}")));
        }
        Ok(name)
    }
}

/// An API error: status and reason.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into() }
    }
    fn bad_request(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, m)
    }
    fn unauthorized(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, m)
    }
    fn forbidden(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, m)
    }
    fn not_found(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, m)
    }
    fn too_large(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, m)
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> ApiError {
        if e.is_bad_input() {
            ApiError::bad_request(e.to_string())
        } else {
            tracing::error!(error = %e, "storage failed");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage failed; see the server log")
        }
    }
}

impl From<ami_wire::WireError> for ApiError {
    fn from(e: ami_wire::WireError) -> ApiError {
        match e {
            ami_wire::WireError::TooLarge { .. } => ApiError::too_large(e.to_string()),
            _ => ApiError::bad_request(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The application: every route, the body limit and request logging.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(ami_wire::INGEST_PATH, post(ingest))
        .route("/api/v1/sites", get(sites))
        .route("/api/v1/sites/{site}/meters", get(meters))
        .route("/api/v1/sites/{site}/meters/{meter}/readings", get(readings))
        .route("/api/v1/sites/{site}/health", get(site_health))
        .route("/api/v1/sites/{site}/commands", get(list_commands).post(create_command))
        .route("/api/v1/sites/{site}/commands/{id}", get(get_command))
        .route("/api/v1/config", get(config))
        .route("/healthz", get(|| async { "ok" }))
        .route("/", get(index))
        .route("/assets/{file}", get(asset))
        .route("/login", get(|| async { see_other("/", None) }).post(login))
        .route("/logout", get(logout))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let start = Instant::now();
    let resp = next.run(req).await;
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    tracing::info!(target: "ami_central::http", "{method} {path} {} {ms:.1}ms", resp.status().as_u16());
    resp
}

async fn not_found() -> ApiError {
    ApiError::not_found("not found")
}

// ---- ingest ----

/// Checks what `ami_wire::validate` leaves to the store: lengths, timestamps the store can date, and no
/// NUL characters (PostgreSQL text cannot hold them; a batch that can never be stored must be a 400, not
/// a 500 the site would retry forever).
fn check_batch(req: &IngestRequest) -> ApiResult<()> {
    let nul = |what: String| ApiError::bad_request(format!("{what}: contains a NUL character"));
    if req.site.contains('\0') {
        return Err(nul("site".into()));
    }
    for (i, s) in req.series.iter().enumerate() {
        for (what, v) in [("meter", &s.meter), ("name", &s.name), ("obis", &s.obis), ("unit", &s.unit)] {
            if v.len() > MAX_LABEL {
                return Err(ApiError::bad_request(format!("series[{i}]: {what} longer than {MAX_LABEL} bytes")));
            }
            if v.contains('\0') {
                return Err(nul(format!("series[{i}].{what}")));
            }
        }
        for (j, p) in s.points.iter().enumerate() {
            if !(0..=MAX_TS).contains(&p.t) {
                return Err(ApiError::bad_request(format!(
                    "series[{i}].points[{j}]: timestamp {} outside 1970..9999",
                    p.t
                )));
            }
            if p.q.as_ref().is_some_and(|q| q.len() > MAX_LABEL) {
                return Err(ApiError::bad_request(format!("series[{i}].points[{j}]: quality too long")));
            }
            if matches!(&p.v, ami_wire::PointValue::Text(t) if t.len() > MAX_TEXT) {
                return Err(ApiError::bad_request(format!(
                    "series[{i}].points[{j}]: text longer than {MAX_TEXT} bytes"
                )));
            }
            if p.q.as_ref().is_some_and(|q| q.contains('\0'))
                || matches!(&p.v, ami_wire::PointValue::Text(t) if t.contains('\0'))
            {
                return Err(nul(format!("series[{i}].points[{j}]")));
            }
        }
    }
    for (i, r) in req.results.iter().enumerate() {
        if r.message.len() > MAX_TEXT {
            return Err(ApiError::bad_request(format!("results[{i}]: message longer than {MAX_TEXT} bytes")));
        }
        if r.message.contains('\0') {
            return Err(nul(format!("results[{i}].message")));
        }
    }
    Ok(())
}

async fn read_limited(body: Body) -> ApiResult<Bytes> {
    match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(ApiError::too_large(format!("body larger than {MAX_BODY} bytes")))
        }
        Err(e) => Err(ApiError::bad_request(format!("could not read the body: {e}"))),
    }
}

/// `POST /api/v1/ingest` (site token): store a batch, answer with the counts and the site's commands.
async fn ingest(State(st): State<AppState>, headers: HeaderMap, body: Body) -> ApiResult<Json<IngestResponse>> {
    let site = match st.principal(&headers).await? {
        Principal::Site(site) => site,
        Principal::Operator(_) => {
            return Err(ApiError::forbidden("operator tokens cannot ingest; use the site's token"))
        }
    };
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(ApiError::too_large(format!("body larger than {MAX_BODY} bytes")));
    }
    let gzip =
        match headers.get(header::CONTENT_ENCODING).map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase()) {
            None => false,
            Some(e) if e.is_empty() || e == "identity" => false,
            Some(e) if e == "gzip" || e == "x-gzip" => true,
            Some(e) => return Err(ApiError::bad_request(format!("unsupported content-encoding {e:?}; use gzip"))),
        };
    let bytes = read_limited(body).await?;
    let req: IngestRequest = ami_wire::decode_body(&bytes, gzip)?;
    ami_wire::validate(&req)?;
    check_batch(&req)?;
    if req.site != site {
        return Err(ApiError::forbidden(format!("this token is for site {site:?}, not {:?}", req.site)));
    }
    let outcome = st.db.ingest(&req).await?;
    let readings = req.readings() as u64;
    tracing::info!(
        site = %req.site,
        batch = req.batch,
        bytes = bytes.len(),
        readings,
        inserted = outcome.inserted,
        results = req.results.len(),
        commands = outcome.commands.len(),
        "batch stored"
    );
    Ok(Json(IngestResponse { readings, inserted: outcome.inserted, commands: outcome.commands }))
}

// ---- query API ----

/// `GET /api/v1/sites`.
async fn sites(State(st): State<AppState>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    st.operator(&headers).await?;
    let sites = st.db.sites().await?;
    Ok(Json(Value::Array(
        sites
            .iter()
            .map(|s| {
                json!({
                    "site": s.site,
                    "meters": s.meters,
                    "readings": s.readings,
                    "last_seen": s.last_seen.map(query::rfc3339),
                    "pending_commands": s.pending_commands,
                })
            })
            .collect(),
    )))
}

/// `GET /api/v1/sites/{site}/meters`.
async fn meters(State(st): State<AppState>, headers: HeaderMap, Path(site): Path<String>) -> ApiResult<Json<Value>> {
    st.operator_for_site(&headers, &site).await?;
    let series = st.db.series(&site).await?;
    let mut out: Vec<Value> = Vec::new();
    let mut current: Option<(String, Vec<Value>)> = None;
    for s in &series {
        if current.as_ref().is_some_and(|(m, _)| *m != s.meter) {
            if let Some((meter, list)) = current.take() {
                out.push(json!({ "meter": meter, "series": list }));
            }
        }
        let entry = current.get_or_insert_with(|| (s.meter.clone(), Vec::new()));
        entry.1.push(json!({
            "obis": s.obis,
            "name": s.name,
            "unit": s.unit,
            "kind": s.kind,
            "first": s.first.map(query::rfc3339),
            "last": s.last.map(query::rfc3339),
            "count": s.count,
        }));
    }
    if let Some((meter, list)) = current {
        out.push(json!({ "meter": meter, "series": list }));
    }
    Ok(Json(Value::Array(out)))
}

#[derive(Debug, Deserialize)]
struct ReadingsParams {
    obis: Option<String>,
    from: Option<String>,
    to: Option<String>,
    resolution: Option<String>,
    agg: Option<String>,
    format: Option<String>,
}

fn time_param(name: &str, v: Option<&str>) -> ApiResult<Option<i64>> {
    match v.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => query::parse_time(s).map(Some).ok_or_else(|| {
            ApiError::bad_request(format!("{name}: expected RFC 3339 time like 2026-11-24T09:00:00Z, got {s:?}"))
        }),
    }
}

/// `GET /api/v1/sites/{site}/meters/{meter}/readings?obis=&from=&to=&resolution=&agg=&format=`.
async fn readings(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path((site, meter)): Path<(String, String)>,
    params: Result<Query<ReadingsParams>, QueryRejection>,
) -> ApiResult<Response> {
    st.operator_for_site(&headers, &site).await?;
    let Query(p) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let res = match p.resolution.as_deref().filter(|s| !s.is_empty()) {
        None => Resolution::Raw,
        Some(s) => Resolution::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!("resolution: expected raw, 15m, hour, day or month, got {s:?}"))
        })?,
    };
    let agg = match p.agg.as_deref().filter(|s| !s.is_empty()) {
        None => Agg::Avg,
        Some(s) => Agg::parse(s)
            .ok_or_else(|| ApiError::bad_request(format!("agg: expected avg, min, max, last or delta, got {s:?}")))?,
    };
    let csv = match p.format.as_deref().filter(|s| !s.is_empty()) {
        None | Some("json") => false,
        Some("csv") => true,
        Some(s) => return Err(ApiError::bad_request(format!("format: expected json or csv, got {s:?}"))),
    };
    let from = time_param("from", p.from.as_deref())?;
    let to = time_param("to", p.to.as_deref())?;
    let (from, to) = match (from, to) {
        (Some(f), Some(t)) => (f, t),
        (Some(f), None) => (f, crate::db::now_ms()),
        (None, Some(t)) => (t.saturating_sub(86_400_000), t),
        (None, None) => {
            let now = crate::db::now_ms();
            (now.saturating_sub(86_400_000), now)
        }
    };
    if from >= to {
        return Err(ApiError::bad_request("from must be before to"));
    }
    let obis = p.obis.as_deref().filter(|s| !s.is_empty());
    let all = st.db.series(&site).await?;
    if !all.iter().any(|s| s.meter == meter) {
        return Err(ApiError::not_found(format!("unknown meter {meter:?} at site {site:?}")));
    }
    let wanted: Vec<_> = all.iter().filter(|s| s.meter == meter && obis.is_none_or(|o| o == s.obis)).collect();

    let mut budget = query::MAX_POINTS;
    let mut json_rows: Vec<Value> = Vec::new();
    let mut csv_out = String::from(query::CSV_HEADER);
    for s in wanted {
        let points = st.db.points(s.id, from, to, budget.saturating_add(1)).await?;
        let n = points.len() as u64;
        if n > budget {
            return Err(ApiError::bad_request(format!(
                "more than {} readings in the range; narrow from/to",
                query::MAX_POINTS
            )));
        }
        budget -= n;
        let after = if agg == Agg::Delta && res != Resolution::Raw && !points.is_empty() {
            st.db.first_value_from(s.id, to).await?
        } else {
            None
        };
        for row in query::aggregate(&points, res, agg, after) {
            let out = ReadingOut {
                meter: &s.meter,
                name: &s.name,
                obis: &s.obis,
                value: &row.value,
                unit: &s.unit,
                ts: query::rfc3339(row.ts),
                quality: row.quality.as_deref().unwrap_or("ok"),
            };
            if csv {
                query::csv_line(&mut csv_out, &out);
            } else {
                json_rows.push(serde_json::to_value(&out).unwrap_or(Value::Null));
            }
        }
    }
    Ok(if csv {
        ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], csv_out).into_response()
    } else {
        Json(Value::Array(json_rows)).into_response()
    })
}

/// `GET /api/v1/sites/{site}/health`.
async fn site_health(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(site): Path<String>,
) -> ApiResult<Json<Value>> {
    st.operator_for_site(&headers, &site).await?;
    let h = st
        .db
        .health(&site)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no heartbeat from site {site:?} yet")))?;
    Ok(Json(json!({ "site": h.site, "received_at": query::rfc3339(h.received_at), "health": h.health })))
}

// ---- commands ----

fn command_json(c: &CommandRecord) -> Value {
    json!({
        "id": c.id,
        "site": c.site,
        "meter": c.meter,
        "action": c.action,
        "status": c.status,
        "created": query::rfc3339(c.created_at),
        "sent": c.sent_at.map(query::rfc3339),
        "received": c.received_at.map(query::rfc3339),
        "result": c.result.as_ref().map(|r| json!({ "ok": r.ok, "message": r.message, "at": query::rfc3339(r.at) })),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCommand {
    meter: String,
    action: Action,
}

/// `POST /api/v1/sites/{site}/commands` → 201 with the queued command.
async fn create_command(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(site): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let operator = st.operator_for_site(&headers, &site).await?;
    let cmd: NewCommand =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("bad command JSON: {e}")))?;
    if cmd.meter.is_empty() {
        return Err(ApiError::bad_request("meter must not be empty"));
    }
    let id = st.db.queue_command(&site, &cmd.meter, &cmd.action).await?;
    let rec = st.db.command(&site, id).await?.ok_or_else(|| ApiError::not_found("command vanished"))?;
    tracing::info!(site = %site, meter = %cmd.meter, id, operator = %operator, action = ?cmd.action, "command queued");
    Ok((StatusCode::CREATED, Json(command_json(&rec))))
}

/// `GET /api/v1/sites/{site}/commands`, newest first.
async fn list_commands(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(site): Path<String>,
) -> ApiResult<Json<Value>> {
    st.operator_for_site(&headers, &site).await?;
    let list = st.db.commands(&site).await?;
    Ok(Json(Value::Array(list.iter().map(command_json).collect())))
}

/// `GET /api/v1/sites/{site}/commands/{id}`.
async fn get_command(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path((site, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    st.operator_for_site(&headers, &site).await?;
    let id: i64 = id.parse().map_err(|_| ApiError::bad_request(format!("command id must be a number, got {id:?}")))?;
    let rec = st
        .db
        .command(&site, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no command {id} at site {site:?}")))?;
    Ok(Json(command_json(&rec)))
}

/// `GET /api/v1/config`.
async fn config(State(st): State<AppState>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    st.operator(&headers).await?;
    Ok(Json(json!({ "tariff": st.config.tariff, "currency": st.config.currency })))
}

// ---- dashboard ----

fn html(status: StatusCode, body: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], body)
        .into_response()
}

fn see_other(to: &str, cookie: Option<String>) -> Response {
    let mut resp = (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response();
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        resp.headers_mut().insert(header::SET_COOKIE, c);
    }
    resp
}

async fn has_operator_session(st: &AppState, headers: &HeaderMap) -> bool {
    match auth::session_cookie(headers) {
        Some(token) => matches!(st.db.authenticate(&token).await, Ok(Some(Principal::Operator(_)))),
        None => false,
    }
}

/// `GET /`: the app with a valid operator session, else the login page.
async fn index(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if has_operator_session(&st, &headers).await {
        html(StatusCode::OK, assets::DASHBOARD_HTML)
    } else {
        html(StatusCode::OK, assets::LOGIN_HTML)
    }
}

/// `GET /assets/{file}`.
async fn asset(Path(file): Path<String>) -> Response {
    match assets::lookup(&file) {
        Some((body, mime)) => {
            ([(header::CONTENT_TYPE, mime), (header::CACHE_CONTROL, "no-cache")], body).into_response()
        }
        None => ApiError::not_found(format!("no asset {file:?}")).into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    token: String,
}

/// `POST /login` (form `token`): an operator token sets the session cookie and goes to `/`; anything
/// else answers 401 with the login page showing the error.
async fn login(State(st): State<AppState>, form: Result<Form<LoginForm>, FormRejection>) -> Response {
    let token = match form {
        Ok(Form(f)) => f.token.trim().to_owned(),
        Err(_) => String::new(),
    };
    let ok = !token.is_empty()
        && token.bytes().all(|b| b.is_ascii_alphanumeric())
        && matches!(st.db.authenticate(&token).await, Ok(Some(Principal::Operator(_))));
    if ok {
        tracing::info!("dashboard login");
        see_other("/", Some(auth::session_set_cookie(&token, st.secure_cookies)))
    } else {
        tracing::info!("dashboard login refused");
        let page = assets::login_page_with_error("Invalid or revoked operator token.");
        let mut resp = (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")],
            page,
        )
            .into_response();
        if let Ok(c) = HeaderValue::from_str(&auth::session_clear_cookie(st.secure_cookies)) {
            resp.headers_mut().insert(header::SET_COOKIE, c);
        }
        resp
    }
}

/// `GET /logout`: clears the cookie, back to the login page.
async fn logout(State(st): State<AppState>) -> Response {
    see_other("/", Some(auth::session_clear_cookie(st.secure_cookies)))
}

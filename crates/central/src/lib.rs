//! ami-central: the head end. Sites dial out and POST gzip batches to the ingest API; operators query
//! readings (JSON or CSV, aggregated by 15 min, hour, day or month), queue commands for meters and watch
//! the dashboard. SQLite is the embedded default, PostgreSQL the store for utilities.
//!
//! - [`db`] owns the schema, migrations and every SQL statement ([`Db`]).
//! - [`api`] owns the HTTP contract: auth, ingest, query API, commands, dashboard routes.
//! - [`query`] owns time buckets and aggregation.
//! - [`auth`] owns token generation, hashing and where a request carries a token.
//! - [`server`] binds and serves, plain or HTTPS ([`spawn`], [`serve`]).
//!
//! Nothing here panics on a request: bodies are read through limits and decoded into typed errors.
//!
//! Embedding (what `amid demo` does):
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let db = ami_central::Db::connect("sqlite:/tmp/central.db").await?;
//! let site_token = db.add_site_token("s1").await?;
//! let (addr, _task) = ami_central::spawn(db, ami_central::ServerConfig::default()).await?;
//! println!("dashboard at http://{addr}/, site token {site_token}");
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod api;
pub mod assets;
pub mod auth;
pub mod db;
pub mod query;
pub mod server;

pub use api::{AppState, PublicConfig};
pub use db::{Db, DbError};
pub use server::{router, serve, spawn, state, ServeError, ServerConfig};

//! amid: the ami site daemon.
//!
//! Owns the site: config (`amid.toml`), the poll schedule, the SQLite store, and the command-line tool
//! (`read`, `simulate`, `run`, `profiles`, `demo`). Protocol meaning lives in `ami-protocols` and
//! `ami-device`; this crate only decides when to ask and where the answers go.

pub mod cli;
pub mod config;
pub mod demo;
pub mod dlms;
pub mod dlms_cli;
pub mod mbus_cli;
pub mod mercury;
pub mod outbox;
pub mod run;
pub mod schedule;
pub mod status;
pub mod store;
pub mod uplink;

/// An error caused by bad input (config, profile, arguments): the process exits with code 2.
#[derive(Debug)]
pub struct BadInput(pub String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

//! ami-central: the head end. Sites dial out and POST batches to the ingest API; operators query readings,
//! queue commands and watch the dashboard. SQLite is the embedded default, PostgreSQL the store for scale.
//! `ami-central`: see `ami-central --help`.
//!
//! Exit codes: 0 ok, 1 runtime failure (database unreachable, port taken), 2 bad input (arguments, URL,
//! certificate files, unknown token id).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use ami_central::{Db, DbError, ServeError, ServerConfig};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ami-central",
    version,
    about = "ami-central: the head end of ami (ingest API, SQL store, query API, dashboard)",
    after_help = "Examples:
  ami-central token add substation-4 --db sqlite:/var/lib/ami/central.db      # a site's uplink token
  ami-central token add --operator alice --db sqlite:/var/lib/ami/central.db  # dashboard / query API
  ami-central serve --db sqlite:/var/lib/ami/central.db --listen 0.0.0.0:8443 \\
      --tls-cert /etc/ami/cert.pem --tls-key /etc/ami/key.pem --tariff 0.30 --currency EUR
  AMI_CENTRAL_DB='postgres://ami@db.example.net/ami?sslmode=require' ami-central serve --listen 0.0.0.0:8443

Exit codes: 0 ok, 1 runtime failure (database unreachable, port taken), 2 bad input."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct DbArg {
    /// Store: `sqlite:PATH` (embedded) or `postgres://USER@HOST:PORT/DB` (add `?sslmode=require` for TLS).
    #[arg(long, env = "AMI_CENTRAL_DB", value_name = "URL")]
    db: String,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the ingest API, the query API and the dashboard.
    Serve {
        #[command(flatten)]
        db: DbArg,
        /// Address to listen on.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Certificate chain (PEM) for HTTPS; needs --tls-key.
        #[arg(long, value_name = "PEM", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// Private key (PEM) for HTTPS; needs --tls-cert.
        #[arg(long, value_name = "PEM", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Energy price per kWh, for the dashboard's cost view.
        #[arg(long, value_name = "PRICE", default_value_t = 0.30)]
        tariff: f64,
        /// Currency of the tariff.
        #[arg(long, value_name = "CODE", default_value = "EUR")]
        currency: String,
    },
    /// Create, list and revoke tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a site token (`add SITE`) or an operator token (`add --operator NAME`); prints the secret
    /// once on stdout.
    Add {
        /// Site id the token may ingest for (A-Z a-z 0-9 . _ : -).
        #[arg(value_name = "SITE", required_unless_present = "operator", conflicts_with = "operator")]
        site: Option<String>,
        /// Create an operator token (query API, commands, dashboard) for this person or system.
        #[arg(long, value_name = "NAME")]
        operator: Option<String>,
        #[command(flatten)]
        db: DbArg,
    },
    /// List tokens (ids, kinds, names; never the secrets).
    List {
        #[command(flatten)]
        db: DbArg,
    },
    /// Revoke a token by id (see `token list`).
    Revoke {
        /// Token id.
        id: i64,
        #[command(flatten)]
        db: DbArg,
    },
}

/// A failure and its exit code.
enum Failure {
    BadInput(String),
    Runtime(String),
}

impl From<DbError> for Failure {
    fn from(e: DbError) -> Failure {
        if e.is_bad_input() {
            Failure::BadInput(e.to_string())
        } else {
            Failure::Runtime(e.to_string())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let serving = matches!(cli.command, Command::Serve { .. });
    let default_filter = if serving { "info" } else { "warn" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        // A closed stderr (a pipe whose reader went away) must not take the server down.
        .log_internal_errors(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ami-central: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::BadInput(m)) => {
            eprintln!("ami-central: {m}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(m)) => {
            eprintln!("ami-central: {m}");
            ExitCode::from(1)
        }
    }
}

fn time(ms: i64) -> String {
    ami_central::query::rfc3339(ms)
}

async fn run(cmd: Command) -> Result<(), Failure> {
    match cmd {
        Command::Serve { db, listen, tls_cert, tls_key, tariff, currency } => {
            if !tariff.is_finite() || tariff < 0.0 {
                return Err(Failure::BadInput(format!("--tariff must be a non-negative number, got {tariff}")));
            }
            let tls = tls_cert.zip(tls_key);
            let store = Db::connect(&db.db).await?;
            let backend = store.backend_name();
            let https = tls.is_some();
            let cfg = ServerConfig { listen, tls, tariff, currency };
            let shutdown = async {
                let _ = tokio::signal::ctrl_c().await;
                tracing::info!("shutting down");
            };
            let on_bound = |addr: SocketAddr| {
                let scheme = if https { "https" } else { "http" };
                tracing::info!(%addr, backend, "ami-central listening; dashboard at {scheme}://{addr}/");
            };
            match ami_central::serve(store, cfg, on_bound, shutdown).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(Failure::Runtime(format!("server failed: {e}"))),
                Err(e @ ServeError::Tls(_)) => Err(Failure::BadInput(e.to_string())),
                Err(e) => Err(Failure::Runtime(e.to_string())),
            }
        }
        Command::Token { command } => match command {
            TokenCommand::Add { site, operator, db } => {
                let store = Db::connect(&db.db).await?;
                let (token, what) = match (site, operator) {
                    (_, Some(name)) => (store.add_operator_token(&name).await?, format!("operator {name:?}")),
                    (Some(site), None) => (store.add_site_token(&site).await?, format!("site {site:?}")),
                    (None, None) => return Err(Failure::BadInput("give SITE or --operator NAME".into())),
                };
                println!("{token}");
                eprintln!("token for {what} created; it is shown only this once, store it now");
                Ok(())
            }
            TokenCommand::List { db } => {
                let store = Db::connect(&db.db).await?;
                let tokens = store.list_tokens().await?;
                println!("{:>4}  {:<8}  {:<32}  {:<24}  REVOKED", "ID", "KIND", "SITE/NAME", "CREATED");
                for t in tokens {
                    println!(
                        "{:>4}  {:<8}  {:<32}  {:<24}  {}",
                        t.id,
                        t.kind.as_str(),
                        t.name,
                        time(t.created_at),
                        t.revoked_at.map(time).unwrap_or_else(|| "-".into())
                    );
                }
                Ok(())
            }
            TokenCommand::Revoke { id, db } => {
                let store = Db::connect(&db.db).await?;
                if store.revoke_token(id).await? {
                    eprintln!("token {id} revoked");
                    Ok(())
                } else {
                    Err(Failure::BadInput(format!("no active token with id {id}")))
                }
            }
        },
    }
}

//! Serving the router over TCP, plain or HTTPS (rustls with the ring provider, HTTP/1.1).
//!
//! [`spawn`] binds (port 0 picks a free one), returns the bound address and serves on a tokio task —
//! what `amid demo` and the tests embed. [`serve`] does the same in the caller's task until a shutdown
//! future resolves — what `ami-central serve` runs.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::api::{self, AppState, PublicConfig};
use crate::db::Db;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// Server settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port. Default `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// `(certificate chain PEM, private key PEM)`: serve HTTPS. Default `None` (plain HTTP).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Energy price per kWh shown by the dashboard. Default 0.30.
    pub tariff: f64,
    /// Currency of the tariff. Default `EUR`.
    pub currency: String,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig { listen: SocketAddr::from(([127, 0, 0, 1], 0)), tls: None, tariff: 0.30, currency: "EUR".into() }
    }
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The certificate or key could not be loaded.
    #[error("TLS: {0}")]
    Tls(String),
}

/// The router for a store and settings (plain in-process use, e.g. tests with `tower::ServiceExt`).
pub fn router(state: AppState) -> Router {
    api::router(state)
}

/// The state a [`ServerConfig`] asks for.
pub fn state(db: Db, cfg: &ServerConfig) -> AppState {
    AppState::new(db, PublicConfig { tariff: cfg.tariff, currency: cfg.currency.clone() }, cfg.tls.is_some())
}

/// Loads a PEM certificate chain and private key into a rustls acceptor (HTTP/1.1 by ALPN).
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, ServeError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| ServeError::Tls(format!("{}: {e}", cert.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServeError::Tls(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(ServeError::Tls(format!("{}: no certificate in the file", cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| ServeError::Tls(format!("{}: {e}", key.display())))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Binds `cfg.listen` and serves on a new task; returns the bound address and the task. The task ends
/// only on an accept error it cannot recover from (abort it to stop the server).
pub async fn spawn(db: Db, cfg: ServerConfig) -> Result<(SocketAddr, JoinHandle<io::Result<()>>), ServeError> {
    let (listener, app, tls) = prepare(db, &cfg).await?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind { addr: cfg.listen, source })?;
    let handle = tokio::spawn(run(listener, app, tls, std::future::pending::<()>()));
    Ok((addr, handle))
}

/// Binds `cfg.listen` and serves until `shutdown` resolves (then stops accepting and lets requests in
/// flight finish). `on_bound` is told the bound address first.
pub async fn serve(
    db: Db,
    cfg: ServerConfig,
    on_bound: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<io::Result<()>, ServeError> {
    let (listener, app, tls) = prepare(db, &cfg).await?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind { addr: cfg.listen, source })?;
    on_bound(addr);
    Ok(run(listener, app, tls, shutdown).await)
}

async fn prepare(db: Db, cfg: &ServerConfig) -> Result<(TcpListener, Router, Option<TlsAcceptor>), ServeError> {
    let tls = match &cfg.tls {
        Some((cert, key)) => Some(tls_acceptor(cert, key)?),
        None => None,
    };
    let listener =
        TcpListener::bind(cfg.listen).await.map_err(|source| ServeError::Bind { addr: cfg.listen, source })?;
    Ok((listener, router(state(db, cfg)), tls))
}

async fn run(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    match tls {
        None => axum::serve(listener, app).with_graceful_shutdown(shutdown).await,
        Some(acceptor) => serve_tls(listener, app, acceptor, shutdown).await,
    }
}

async fn serve_tls(
    listener: TcpListener,
    app: Router,
    acceptor: TlsAcceptor,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let service = TowerToHyperService::new(app);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

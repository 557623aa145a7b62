//! The uplink: dials out to ami-central and ships stored readings in gzip batches over HTTPS, with a
//! per-site bearer token. The site never needs to be reachable: commands ride back in the responses.
//!
//! Delivery is at-least-once: a batch's rows are marked sent only after the central store answered 200,
//! which it does only after committing them; a batch lost in flight is sent again, and the central store's
//! upsert by `(site, meter, obis, ts)` makes the repeat harmless. Failures back off exponentially with
//! jitter and the loop resumes by itself. Readings are held (heartbeats still go) while the site clock is
//! not trustworthy.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ami_link::backoff::Backoff;
use ami_wire::{encode_gzip, BusHealth, Health, IngestRequest, IngestResponse, MeterHealth, INGEST_PATH};
use anyhow::{anyhow, Context};
use chrono::{DateTime, Datelike, Utc};
use rusqlite::OptionalExtension;
use sha2::{Digest, Sha256};
use tokio::sync::{watch, Notify};
use tracing::{debug, error, info, warn};

use crate::config::UplinkCfg;
use crate::store::Store;

/// The site clock is trusted once it reads 2025 or later: a box without a real-time clock boots in 1970
/// (or at its image's build date) until NTP or GNSS sets the time.
pub fn clock_trusted(now: DateTime<Utc>) -> bool {
    now.year() >= 2025
}

/// The time source the uplink and the poller use (a test can start it in 1970).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(Utc::now)
}

/// Totals of the uplink, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UplinkStats {
    /// Batches acknowledged.
    pub batches: u64,
    /// Readings acknowledged.
    pub readings: u64,
    /// Request bytes sent in acknowledged batches (compressed body).
    pub bytes: u64,
    /// Failed attempts.
    pub failures: u64,
}

/// A certificate verifier that accepts exactly the pinned server certificates (SHA-256 of the DER),
/// for a head end with a self-signed or private certificate. Signatures are still checked.
#[derive(Debug)]
struct PinVerifier {
    pins: Vec<[u8; 32]>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let digest: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if self.pins.contains(&digest) {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "server certificate SHA-256 {} matches no pin in uplink.pin_sha256",
                hex(&digest)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 fingerprint (hex) of the first certificate in a PEM file, as `uplink.pin_sha256` wants it.
pub fn pem_fingerprint(pem: &str) -> Option<String> {
    let b64: String = pem
        .split("-----BEGIN CERTIFICATE-----")
        .nth(1)?
        .split("-----END CERTIFICATE-----")
        .next()?
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = base64_decode(&b64)?;
    Some(hex(&Sha256::digest(der)))
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut buf = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => continue,
            _ => return None,
        };
        buf = (buf << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((buf >> bits) & 0xFF).ok()?);
        }
    }
    Some(out)
}

/// Builds the HTTPS client: rustls, the site token's server, an extra CA file or certificate pins.
pub fn client(cfg: &UplinkCfg) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .timeout(cfg.timeout)
        .connect_timeout(Duration::from_secs(15))
        .user_agent(concat!("amid/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(Duration::from_secs(90));
    if !cfg.pin_sha256.is_empty() {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS setup")?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinVerifier { pins: cfg.pin_sha256.clone(), provider }))
            .with_no_client_auth();
        b = b.use_preconfigured_tls(tls);
    } else {
        b = b.use_rustls_tls();
        if let Some(ca) = &cfg.ca_file {
            let pem = std::fs::read(ca).with_context(|| format!("cannot read uplink.ca_file {}", ca.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("uplink.ca_file {} holds no PEM certificate", ca.display()))?;
            if certs.is_empty() {
                return Err(anyhow!("uplink.ca_file {} holds no PEM certificate", ca.display()));
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
    }
    b.build().context("cannot build the HTTPS client")
}

/// Reads the site's health from the store: per-meter status, per-bus counters, backlog.
pub fn health(
    store: &Store,
    meter_bus: &[(String, String)],
    started: Instant,
    trusted: bool,
) -> anyhow::Result<Health> {
    let conn = store.conn();
    let (depth, oldest) = store.depth()?;
    let mut meters = Vec::new();
    let mut stmt = conn.prepare_cached(
        "SELECT last_success_ms, consecutive_failures, reads_ok, reads_failed, last_error
         FROM meter_status WHERE meter = ?1",
    )?;
    for (meter, bus) in meter_bus {
        let row = stmt
            .query_row([meter], |r| {
                Ok(MeterHealth {
                    meter: meter.clone(),
                    bus: bus.clone(),
                    last_good: r.get(0)?,
                    consecutive_failures: r.get::<_, i64>(1)?.max(0).unsigned_abs(),
                    reads_ok: r.get::<_, i64>(2)?.max(0).unsigned_abs(),
                    reads_failed: r.get::<_, i64>(3)?.max(0).unsigned_abs(),
                    last_error: r.get(4)?,
                })
            })
            .optional()?;
        meters.push(row.unwrap_or(MeterHealth { meter: meter.clone(), bus: bus.clone(), ..MeterHealth::default() }));
    }
    let mut stmt = conn.prepare_cached(
        "SELECT bus, requests, replies, timeouts, checksum_errors, retries, rejected, failures
         FROM link_counters WHERE meter = '' ORDER BY bus",
    )?;
    let n = |v: i64| v.max(0).unsigned_abs();
    let buses = stmt
        .query_map([], |r| {
            Ok(BusHealth {
                bus: r.get(0)?,
                requests: n(r.get(1)?),
                replies: n(r.get(2)?),
                timeouts: n(r.get(3)?),
                checksum_errors: n(r.get(4)?),
                retries: n(r.get(5)?),
                rejected: n(r.get(6)?),
                failures: n(r.get(7)?),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Health {
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_s: started.elapsed().as_secs(),
        clock_trusted: trusted,
        store_depth: depth,
        oldest_unsent: oldest,
        dropped: store.dropped_total()?,
        rejected: store.rejected_total()?,
        meters,
        buses,
    })
}

/// Everything one round needs from the store.
struct Outgoing {
    request: IngestRequest,
    ids: Vec<i64>,
    full: bool,
}

/// The uplink task.
pub struct Uplink {
    /// Config.
    pub cfg: UplinkCfg,
    /// Site id.
    pub site: String,
    /// The store's path (the uplink opens its own connection).
    pub db: PathBuf,
    /// (meter, bus) pairs for the heartbeat.
    pub meter_bus: Vec<(String, String)>,
    /// Time source.
    pub clock: Clock,
    /// Woken when new commands were stored.
    pub commands: Arc<Notify>,
}

impl Uplink {
    fn prepare(&self, store: &Store, started: Instant, batch_size: usize) -> anyhow::Result<Outgoing> {
        let now = (self.clock)();
        let trusted = clock_trusted(now);
        let batch = if trusted { store.next_batch(batch_size, 0.2)? } else { Default::default() };
        let (results, received) = store.unacked_command_news()?;
        let full = batch.len() >= batch_size;
        let request = IngestRequest {
            site: self.site.clone(),
            batch: store.next_batch_seq()?,
            sent_at: now.timestamp_millis(),
            series: batch.series,
            results,
            received,
            health: Some(health(store, &self.meter_bus, started, trusted)?),
        };
        Ok(Outgoing { request, ids: batch.ids, full })
    }

    /// Runs until `stop` turns true. Returns the totals.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) -> UplinkStats {
        let started = Instant::now();
        let mut stats = UplinkStats::default();
        let client = match client(&self.cfg) {
            Ok(c) => c,
            Err(e) => {
                error!("uplink disabled: {e:#}");
                return stats;
            }
        };
        let url = format!("{}{INGEST_PATH}", self.cfg.url);
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        let mut batch_size = self.cfg.batch;
        let mut logged_hold = false;
        info!(url = %self.cfg.url, "uplink started");
        loop {
            if *stop.borrow() {
                break;
            }
            let me = self.clone();
            let prepared = tokio::task::spawn_blocking(move || {
                let store = Store::open(&me.db)?;
                me.prepare(&store, started, batch_size)
            })
            .await
            .unwrap_or_else(|e| Err(anyhow!("store task failed: {e}")));
            let out = match prepared {
                Ok(o) => o,
                Err(e) => {
                    error!("uplink cannot read the store: {e:#}");
                    if wait(&mut stop, backoff.next().unwrap_or(Duration::from_secs(60))).await {
                        break;
                    }
                    continue;
                }
            };
            if !out.request.health.as_ref().is_some_and(|h| h.clock_trusted) {
                if !logged_hold {
                    warn!("site clock is not trustworthy (before 2025): readings are held, heartbeats only");
                    logged_hold = true;
                }
            } else if logged_hold {
                info!("site clock is trustworthy now: sending held readings (flagged when taken before)");
                logged_hold = false;
            }
            let readings = out.request.readings();
            let body = encode_gzip(&out.request);
            let bytes = body.len();
            let result = client
                .post(&url)
                .bearer_auth(&self.cfg.token)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(reqwest::header::CONTENT_ENCODING, "gzip")
                .body(body)
                .send()
                .await;
            let delay = match result {
                Ok(resp) if resp.status().is_success() => match resp
                    .bytes()
                    .await
                    .map_err(|e| error_chain(&e))
                    .and_then(|b| serde_json::from_slice::<IngestResponse>(&b).map_err(|e| e.to_string()))
                {
                    Ok(ack) => {
                        let results: Vec<i64> = out.request.results.iter().map(|r| r.id).collect();
                        let received = out.request.received.clone();
                        let ids = out.ids;
                        let db = self.db.clone();
                        let now_ms = (self.clock)().timestamp_millis();
                        let commands = ack.commands.clone();
                        let stored = tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
                            let mut store = Store::open(&db)?;
                            store.mark_sent(&ids)?;
                            store.ack_command_news(&results, &received)?;
                            Ok(store.add_commands(&commands, now_ms)?.len())
                        })
                        .await
                        .unwrap_or_else(|e| Err(anyhow!("store task failed: {e}")));
                        match stored {
                            Ok(new_commands) => {
                                backoff.reset();
                                // After narrowing down a refused batch, grow back to the configured size.
                                batch_size = (batch_size * 2).min(self.cfg.batch);
                                stats.batches += 1;
                                stats.readings += readings as u64;
                                stats.bytes += bytes as u64;
                                debug!(readings, inserted = ack.inserted, bytes, "batch acknowledged");
                                if readings > 0 {
                                    info!(
                                        readings,
                                        new = ack.inserted,
                                        bytes,
                                        bytes_per_reading = format!("{:.1}", bytes as f64 / readings as f64),
                                        "uplink batch acknowledged"
                                    );
                                }
                                if new_commands > 0 {
                                    info!(commands = new_commands, "commands received from the central store");
                                    self.commands.notify_one();
                                }
                                if out.full {
                                    Duration::ZERO
                                } else {
                                    self.cfg.interval
                                }
                            }
                            Err(e) => {
                                // The central store has the batch; it will be re-sent and deduplicated.
                                error!("cannot record the acknowledgement: {e:#}");
                                backoff.next().unwrap_or(Duration::from_secs(60))
                            }
                        }
                    }
                    Err(e) => {
                        stats.failures += 1;
                        warn!("uplink: unreadable answer from the central store: {e}");
                        backoff.next().unwrap_or(Duration::from_secs(60))
                    }
                },
                Ok(resp) => {
                    stats.failures += 1;
                    let mut return_now = false;
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    let wait = backoff.next().unwrap_or(Duration::from_secs(60));
                    match status.as_u16() {
                        401 | 403 => {
                            error!(%status, "the central store refused this site's token: {text}; retrying in {wait:?}")
                        }
                        413 => {
                            batch_size = (batch_size / 2).max(1);
                            warn!(%status, batch_size, "batch too large for the central store; sending smaller batches");
                        }
                        400 | 422 if out.ids.len() > 1 => {
                            // Something in the batch is invalid to the central store. Halve until the
                            // offending reading is alone, so everything else keeps flowing.
                            batch_size = (out.ids.len() / 2).max(1);
                            warn!(%status, batch_size, "the central store refused a batch: {text}; narrowing it down");
                            backoff.reset();
                            return_now = true;
                        }
                        400 | 422 if out.ids.len() == 1 => {
                            let db = self.db.clone();
                            let ids = out.ids.clone();
                            let total = tokio::task::spawn_blocking(move || Store::open(&db)?.reject(&ids))
                                .await
                                .map_err(|e| anyhow!("{e}"))
                                .and_then(|r| r.map_err(anyhow::Error::from));
                            error!(
                                %status,
                                rejected_total = ?total.ok(),
                                "the central store refused a reading as invalid: {text}; it is set aside in the site \
                                 store (sent = 2) and no longer blocks the uplink"
                            );
                            backoff.reset();
                            return_now = true;
                        }
                        _ => warn!(%status, "the central store refused the batch: {text}; retrying in {wait:?}"),
                    }
                    if return_now {
                        Duration::ZERO
                    } else {
                        wait
                    }
                }
                Err(e) => {
                    stats.failures += 1;
                    let wait = backoff.next().unwrap_or(Duration::from_secs(60));
                    warn!("uplink: {}; retrying in {wait:?}", error_chain(&e));
                    wait
                }
            };
            if wait(&mut stop, delay).await {
                break;
            }
        }
        info!(batches = stats.batches, readings = stats.readings, bytes = stats.bytes, "uplink stopped");
        stats
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Sleeps `d` unless `stop` turns true first; returns true when stopping.
async fn wait(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    if d.is_zero() {
        return *stop.borrow();
    }
    tokio::select! {
        () = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

/// Reads a token file the way `[uplink] token_file` does (for tools).
pub fn read_token(path: &Path) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_clock_in_1970_is_not_trusted() {
        assert!(!clock_trusted(Utc.timestamp_opt(0, 0).unwrap()));
        assert!(!clock_trusted(Utc.with_ymd_and_hms(2024, 12, 31, 23, 0, 0).unwrap()));
        assert!(clock_trusted(Utc.with_ymd_and_hms(2026, 11, 24, 9, 0, 0).unwrap()));
    }

    #[test]
    fn base64_and_fingerprint() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert!(base64_decode("a$b").is_none());
        let pem = "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_fingerprint(pem).unwrap(), hex(&Sha256::digest(b"hello")));
    }
}

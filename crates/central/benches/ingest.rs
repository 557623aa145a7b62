//! Ingest throughput through the real HTTP API (gzip bodies over loopback TCP, reqwest client) into
//! SQLite and PostgreSQL, and bytes on the wire per reading.
//!
//! Run: `cargo bench -p ami-central --bench ingest`. PostgreSQL: `AMI_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/test`); the run uses a fresh schema and drops it. When PostgreSQL is
//! not reachable its rows are skipped with the reason. `AMI_BENCH_BATCHES` changes the batch count
//! (default 200).
//!
//! Workload: 200 batches × 1000 readings = 200 000 readings per backend. A batch is what a site's
//! uplink sends: 10 meters × 2 series (an energy counter in Wh and an active power in W with one
//! decimal) × 50 quarter-hours, the values moving like a real load. Two modes: one site sending its
//! batches one after another (one uplink), and 4 sites sending at once (4 uplinks).

use std::time::{Duration, Instant};

use ami_central::{Db, ServerConfig};
use ami_wire::{IngestRequest, IngestResponse, Point, PointValue, Series};
use rand::{Rng, SeedableRng};

const READINGS_PER_BATCH: usize = 1000;
const METERS_PER_BATCH: usize = 10;
const POINTS_PER_SERIES: usize = READINGS_PER_BATCH / METERS_PER_BATCH / 2;
const CONCURRENT_SITES: usize = 4;
/// 2026-11-23T00:00:00Z
const DAY0_MS: i64 = 1_795_392_000_000;

/// The batches of one site: meters cycle in groups of 10 over 50 meters, time advances per cycle.
fn site_batches(site: &str, count: usize, seed: u64) -> Vec<IngestRequest> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let groups = 50 / METERS_PER_BATCH;
    let mut energy = vec![1_000_000.0f64; 50];
    (0..count)
        .map(|b| {
            let group = b % groups;
            let t0 = DAY0_MS + (b / groups) as i64 * POINTS_PER_SERIES as i64 * 900_000;
            let mut series = Vec::new();
            for m in group * METERS_PER_BATCH..(group + 1) * METERS_PER_BATCH {
                let meter = format!("meter-{m:02}");
                let mut e_points = Vec::with_capacity(POINTS_PER_SERIES);
                let mut p_points = Vec::with_capacity(POINTS_PER_SERIES);
                for i in 0..POINTS_PER_SERIES {
                    let t = t0 + i as i64 * 900_000;
                    let watts: f64 = 400.0 + rng.gen_range(0.0..2600.0);
                    let e = energy.get_mut(m).expect("50 meters");
                    *e += (watts / 4.0).round();
                    e_points.push(Point { t, v: PointValue::Number(*e), q: None });
                    p_points.push(Point { t, v: PointValue::Number((watts * 10.0).round() / 10.0), q: None });
                }
                series.push(Series {
                    meter: meter.clone(),
                    name: "energy_import_total".into(),
                    obis: "1-0:1.8.0*255".into(),
                    unit: "Wh".into(),
                    kind: "counter".into(),
                    points: e_points,
                });
                series.push(Series {
                    meter,
                    name: "power_active_total".into(),
                    obis: "1-0:1.7.0*255".into(),
                    unit: "W".into(),
                    kind: "instantaneous".into(),
                    points: p_points,
                });
            }
            IngestRequest { site: site.into(), batch: b as u64, sent_at: t0, series, ..IngestRequest::default() }
        })
        .collect()
}

struct Encoded {
    site: String,
    bodies: Vec<Vec<u8>>,
}

struct Run {
    backend: &'static str,
    mode: String,
    readings: u64,
    secs: f64,
}

async fn send_all(client: &reqwest::Client, url: &str, token: &str, bodies: &[Vec<u8>]) -> u64 {
    let mut inserted = 0;
    for body in bodies {
        let resp = client
            .post(url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(body.clone())
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200, "ingest failed: {:?}", resp.text().await);
        let r: IngestResponse = resp.json().await.expect("response");
        inserted += r.inserted;
    }
    inserted
}

async fn bench_backend(backend: &'static str, url: &str, sequential: &Encoded, concurrent: &[Encoded]) -> Vec<Run> {
    let db = Db::connect(url).await.expect("connect");
    let mut tokens = Vec::new();
    for e in std::iter::once(sequential).chain(concurrent) {
        tokens.push(db.add_site_token(&e.site).await.expect("token"));
    }
    let (addr, task) = ami_central::spawn(db, ServerConfig::default()).await.expect("serve");
    let ingest_url = format!("http://{addr}{}", ami_wire::INGEST_PATH);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().expect("client");
    let mut runs = Vec::new();

    // Warm-up: a few batches of a throwaway site's worth are not needed; the first batches create the
    // series, which is part of real ingest too.
    let n = (sequential.bodies.len() * READINGS_PER_BATCH) as u64;
    let start = Instant::now();
    let inserted = send_all(&client, &ingest_url, &tokens[0], &sequential.bodies).await;
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(inserted, n, "{backend}: every reading is new");
    runs.push(Run { backend, mode: "1 site, sequential".into(), readings: n, secs });

    let n: u64 = concurrent.iter().map(|e| (e.bodies.len() * READINGS_PER_BATCH) as u64).sum();
    let start = Instant::now();
    let mut handles = Vec::new();
    for (e, token) in concurrent.iter().zip(&tokens[1..]) {
        let client = client.clone();
        let url = ingest_url.clone();
        let token = token.clone();
        let bodies = e.bodies.clone();
        handles.push(tokio::spawn(async move { send_all(&client, &url, &token, &bodies).await }));
    }
    let mut inserted = 0;
    for h in handles {
        inserted += h.await.expect("task");
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(inserted, n, "{backend}: every reading is new");
    runs.push(Run { backend, mode: format!("{CONCURRENT_SITES} sites at once"), readings: n, secs });

    // Re-sending a batch already stored (the retry after a lost acknowledgement).
    let start = Instant::now();
    let again = send_all(&client, &ingest_url, &tokens[0], &sequential.bodies).await;
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(again, 0, "{backend}: a re-sent batch inserts nothing");
    runs.push(Run {
        backend,
        mode: "1 site, re-sent (all duplicates)".into(),
        readings: (sequential.bodies.len() * READINGS_PER_BATCH) as u64,
        secs,
    });
    task.abort();
    runs
}

async fn postgres_url() -> Result<(String, String, String), String> {
    let admin = std::env::var("AMI_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let schema = format!("ami_bench_{:08x}", rand::random::<u32>());
    client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.map_err(|e| e.to_string())?;
    let sep = if admin.contains('?') { '&' } else { '?' };
    Ok((format!("{admin}{sep}options=-csearch_path%3D{schema}"), admin, schema))
}

async fn drop_schema(admin: &str, schema: &str) {
    if let Ok((client, conn)) = tokio_postgres::connect(admin, tokio_postgres::NoTls).await {
        tokio::spawn(conn);
        let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
    }
}

fn main() {
    // `cargo bench` passes `--bench`; this binary takes no options.
    let batches: usize = std::env::var("AMI_BENCH_BATCHES").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async move {
        let make = |site: &str, count: usize, seed: u64| {
            let reqs = site_batches(site, count, seed);
            let plain: usize = reqs.iter().map(|r| serde_json::to_vec(r).map(|v| v.len()).unwrap_or(0)).sum();
            let bodies: Vec<Vec<u8>> = reqs.iter().map(ami_wire::encode_gzip).collect();
            (Encoded { site: site.into(), bodies }, plain)
        };
        let (sequential, plain_bytes) = make("bench-seq", batches, 1);
        let concurrent: Vec<Encoded> = (0..CONCURRENT_SITES)
            .map(|i| make(&format!("bench-par-{i}"), batches / CONCURRENT_SITES, 10 + i as u64).0)
            .collect();
        let gz_bytes: usize = sequential.bodies.iter().map(Vec::len).sum();
        let readings = (batches * READINGS_PER_BATCH) as f64;

        let dir = tempfile::tempdir().expect("tempdir");
        let sqlite_url = format!("sqlite:{}", dir.path().join("bench.db").display());
        let mut runs = bench_backend("sqlite", &sqlite_url, &sequential, &concurrent).await;
        match postgres_url().await {
            Ok((url, admin, schema)) => {
                runs.extend(bench_backend("postgres", &url, &sequential, &concurrent).await);
                drop_schema(&admin, &schema).await;
            }
            Err(e) => println!("postgres skipped: {e}"),
        }

        println!();
        println!(
            "ingest through HTTP, {batches} batches x {READINGS_PER_BATCH} readings per run \
             ({METERS_PER_BATCH} meters x 2 series x {POINTS_PER_SERIES} quarter-hours per batch)"
        );
        println!(
            "{:<10} {:<34} {:>9} {:>8} {:>12} {:>10}",
            "backend", "mode", "readings", "s", "readings/s", "vs sqlite"
        );
        for r in &runs {
            let rate = r.readings as f64 / r.secs;
            let base =
                runs.iter().find(|b| b.backend == "sqlite" && b.mode == r.mode).map(|b| b.readings as f64 / b.secs);
            let ratio = base.map(|b| format!("{:.2}x", rate / b)).unwrap_or_else(|| "-".into());
            println!("{:<10} {:<34} {:>9} {:>8.2} {:>12.0} {:>10}", r.backend, r.mode, r.readings, r.secs, rate, ratio);
        }
        println!();
        println!(
            "bytes on the wire per reading (request body): gzip {:.2} B, uncompressed JSON {:.2} B (gzip ratio {:.1}x)",
            gz_bytes as f64 / readings,
            plain_bytes as f64 / readings,
            plain_bytes as f64 / gz_bytes.max(1) as f64
        );
        println!(
            "per batch: {:.0} B gzip body; HTTP request headers add about 250 B ({:.2} B per reading)",
            gz_bytes as f64 / batches as f64,
            250.0 / READINGS_PER_BATCH as f64
        );
    });
}

//! Every reading reaches the head end exactly once, over a link that drops connections, with collectors
//! killed (`kill -9`) at random points: 10 sites × 50 meters × a day of 15-min data, against the central
//! store on SQLite and on PostgreSQL.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ami_collector::store::{Store, StoredReading};
use ami_device::{Quality, Reading, Value, ValueKind};
use chrono::{TimeZone, Utc};
use common::*;
use rand::{Rng, SeedableRng};

const SITES: usize = 10;
const METERS: usize = 50;
const INTERVALS: i64 = 96;
/// 2026-11-23T00:00:00Z
const DAY0_MS: i64 = 1_795_392_000_000;

/// A day of 15-min data for one site: per meter an energy counter and a power value per interval.
fn fill_site_store(db: &Path, site: usize) -> usize {
    let mut store = Store::open(db).unwrap();
    let mut n = 0;
    for m in 0..METERS {
        let meter = format!("m{m:02}");
        let mut rows = Vec::new();
        for i in 0..INTERVALS {
            let ts = Utc.timestamp_millis_opt(DAY0_MS + i * 900_000).unwrap();
            let energy = (site * 1_000_000 + m * 10_000) as f64 + i as f64 * 250.0;
            let power = 1000.0 + (site * 7 + m * 3) as f64 + i as f64;
            for (name, obis, unit, v, kind) in [
                ("energy_import_total", "1-0:1.8.0", "Wh", energy, ValueKind::Counter),
                ("power_active_total", "1-0:1.7.0", "W", power, ValueKind::Instantaneous),
            ] {
                rows.push(StoredReading {
                    reading: Reading {
                        meter: meter.clone(),
                        name: name.into(),
                        obis: obis.parse().unwrap(),
                        value: Value::Number(v),
                        unit: unit.into(),
                        ts,
                        quality: Quality::OK,
                    },
                    kind,
                });
            }
        }
        n += store.insert(&rows, None).unwrap();
    }
    n
}

/// A TCP proxy on loopback that breaks connections: each connection is cut after a random 20–400 ms, in
/// either direction, mid-request or mid-response; one connection in five is refused at once.
fn flaky_proxy(upstream: SocketAddr, stop: Arc<AtomicBool>, cuts: Arc<AtomicU64>) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        while !stop.load(Ordering::Relaxed) {
            let (client, _) = match listener.accept() {
                Ok(c) => c,
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
            };
            if rng.gen_bool(0.2) {
                cuts.fetch_add(1, Ordering::Relaxed);
                drop(client);
                continue;
            }
            let Ok(server) = std::net::TcpStream::connect(upstream) else { continue };
            client.set_nonblocking(false).unwrap();
            let life = Duration::from_millis(rng.gen_range(20..400));
            let cut = rng.gen_bool(0.5);
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let pipe = |mut a: std::net::TcpStream, mut b: std::net::TcpStream| {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut a, &mut b);
                    let _ = b.shutdown(std::net::Shutdown::Write);
                })
            };
            pipe(client, server);
            pipe(s2.try_clone().unwrap(), c2.try_clone().unwrap());
            if cut {
                let cuts = cuts.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(life);
                    cuts.fetch_add(1, Ordering::Relaxed);
                    let _ = c2.shutdown(std::net::Shutdown::Both);
                    let _ = s2.shutdown(std::net::Shutdown::Both);
                });
            }
        }
    });
    addr
}

struct Site {
    dir: PathBuf,
    config: PathBuf,
    child: Option<Child>,
}

impl Site {
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("amid.log")).unwrap();
        self.child = Some(
            amid()
                .args(["run", "--config", self.config.to_str().unwrap()])
                .env("AMI_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            Command::new("kill").args(["-KILL", &c.id().to_string()]).status().unwrap();
            let _ = c.wait();
        }
    }

    fn depth(&self) -> u64 {
        let conn = rusqlite::Connection::open_with_flags(
            self.dir.join("data/readings.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn.query_row("SELECT COUNT(*) FROM readings WHERE sent = 0", [], |r| r.get::<_, i64>(0)).unwrap() as u64
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.kill9();
    }
}

async fn exactly_once(db_url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = ami_central::Db::connect(db_url).await.unwrap();
    let operator = db.add_operator_token("test").await.unwrap();
    let mut tokens = Vec::new();
    for s in 0..SITES {
        tokens.push(db.add_site_token(&format!("site{s:02}")).await.unwrap());
    }
    let cfg = ami_central::ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: None,
        tariff: 0.3,
        currency: "EUR".into(),
    };
    let (central, _server) = ami_central::spawn(db, cfg).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let cuts = Arc::new(AtomicU64::new(0));
    let proxy = flaky_proxy(central, stop.clone(), cuts.clone());

    let mut sites = Vec::new();
    let mut expected = 0;
    for (s, token) in tokens.iter().enumerate() {
        let sdir = dir.path().join(format!("site{s:02}"));
        std::fs::create_dir_all(sdir.join("data")).unwrap();
        expected += fill_site_store(&sdir.join("data/readings.db"), s);
        let config = sdir.join("amid.toml");
        std::fs::write(
            &config,
            format!(
                "[site]\nid = \"site{s:02}\"\ndata_dir = \"data\"\n\n[uplink]\nurl = \"http://{proxy}\"\ntoken = \"{token}\"\n\
                 interval = \"200ms\"\nbatch = 100\ntimeout = \"2s\"\n"
            ),
        )
        .unwrap();
        sites.push(Site { dir: sdir, config, child: None });
    }
    assert_eq!(expected, SITES * METERS * INTERVALS as usize * 2);
    for s in &mut sites {
        s.start();
    }

    // kill -9 a random collector every 40–200 ms and restart it, until every store is drained.
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let t0 = Instant::now();
    let mut kills = 0;
    loop {
        std::thread::sleep(Duration::from_millis(rng.gen_range(40..200)));
        let i = rng.gen_range(0..SITES);
        sites[i].kill9();
        kills += 1;
        sites[i].start();
        if sites.iter().all(|s| s.depth() == 0) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(240),
            "not drained after 4 min: depths {:?}",
            sites.iter().map(Site::depth).collect::<Vec<_>>()
        );
    }
    for s in &mut sites {
        s.kill9();
    }
    stop.store(true, Ordering::Relaxed);
    assert!(kills >= 5 && cuts.load(Ordering::Relaxed) >= 5, "{kills} kills, {cuts:?} cuts: the test must hurt");

    // The central store holds every reading exactly once, with the right values.
    let http = reqwest::Client::new();
    let base = format!("http://{central}/api/v1");
    let mut total = 0;
    for s in 0..SITES {
        let site = format!("site{s:02}");
        let meters: serde_json::Value = http
            .get(format!("{base}/sites/{site}/meters"))
            .bearer_auth(&operator)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(meters.as_array().unwrap().len(), METERS, "{site}: {meters}");
        for m in [0, METERS / 2, METERS - 1] {
            let meter = format!("m{m:02}");
            let url = format!(
                "{base}/sites/{site}/meters/{meter}/readings?obis=1-0:1.8.0*255&from=2026-11-23T00:00:00Z&to=2026-11-24T00:00:00Z"
            );
            let rows: Vec<serde_json::Value> =
                http.get(url).bearer_auth(&operator).send().await.unwrap().json().await.unwrap();
            assert_eq!(rows.len(), INTERVALS as usize, "{site}/{meter}");
            for (i, r) in rows.iter().enumerate() {
                let want = (s * 1_000_000 + m * 10_000) as f64 + i as f64 * 250.0;
                assert_eq!(r["value"].as_f64(), Some(want), "{site}/{meter} #{i}: {r}");
            }
        }
        let listing: serde_json::Value =
            http.get(format!("{base}/sites")).bearer_auth(&operator).send().await.unwrap().json().await.unwrap();
        let row = listing.as_array().unwrap().iter().find(|r| r["site"] == site.as_str()).unwrap().clone();
        let n = row["readings"].as_u64().unwrap() as usize;
        assert_eq!(n, METERS * INTERVALS as usize * 2, "{site}: {row}");
        total += n;
    }
    assert_eq!(total, expected);
    eprintln!("{expected} readings from {SITES} sites arrived exactly once despite {kills} kills and {cuts:?} cut connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reading_arrives_exactly_once_despite_drops_and_kills_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    exactly_once(&format!("sqlite:{}", dir.path().join("central.db").display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reading_arrives_exactly_once_despite_drops_and_kills_postgres() {
    let db = PgDb::create();
    exactly_once(&db.url).await;
}

/// A fresh PostgreSQL database for one test, dropped afterwards.
struct PgDb {
    url: String,
    name: String,
}

impl PgDb {
    fn create() -> PgDb {
        let base =
            std::env::var("AMI_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let name = format!("ami_e2e_{}_{}", std::process::id(), rand::random::<u32>());
        let status = Command::new("psql").args([&base, "-qc", &format!("CREATE DATABASE {name}")]).status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "PostgreSQL is needed at {base} (./tests/run.sh starts it; set AMI_TEST_POSTGRES to point elsewhere)"
        );
        let url = match base.rsplit_once('/') {
            Some((prefix, _)) => format!("{prefix}/{name}"),
            None => panic!("bad AMI_TEST_POSTGRES {base}"),
        };
        PgDb { url, name }
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let base =
            std::env::var("AMI_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let _ = Command::new("psql")
            .args([&base, "-qc", &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)])
            .status();
    }
}

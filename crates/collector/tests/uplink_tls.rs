//! The uplink over HTTPS to a head end with a private certificate: trusted through `ca_file`, or through a
//! certificate pin; a wrong pin or an unknown certificate delivers nothing (and loses nothing).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use ami_collector::config::Config;
use ami_collector::store::{Store, StoredReading};
use ami_device::{Quality, Reading, Value, ValueKind};
use chrono::{TimeZone, Utc};

struct Head {
    addr: std::net::SocketAddr,
    cert_pem: String,
    token: String,
    _dir: tempfile::TempDir,
}

async fn https_central() -> Head {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert_pem = ck.cert.pem();
    std::fs::write(dir.path().join("cert.pem"), &cert_pem).unwrap();
    std::fs::write(dir.path().join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
    let db = ami_central::Db::connect(&format!("sqlite:{}", dir.path().join("c.db").display())).await.unwrap();
    let token = db.add_site_token("tls-site").await.unwrap();
    let cfg = ami_central::ServerConfig {
        tls: Some((dir.path().join("cert.pem"), dir.path().join("key.pem"))),
        ..ami_central::ServerConfig::default()
    };
    let (addr, _task) = ami_central::spawn(db, cfg).await.unwrap();
    Head { addr, cert_pem, token, _dir: dir }
}

fn fill(db: &Path) {
    let mut s = Store::open(db).unwrap();
    let rows: Vec<StoredReading> = (0..50)
        .map(|i| StoredReading {
            reading: Reading {
                meter: "m".into(),
                name: "energy_import_total".into(),
                obis: "1-0:1.8.0".parse().unwrap(),
                value: Value::Number(f64::from(i)),
                unit: "Wh".into(),
                ts: Utc.timestamp_millis_opt(1_795_392_000_000 + i64::from(i) * 900_000).unwrap(),
                quality: Quality::OK,
            },
            kind: ValueKind::Counter,
        })
        .collect();
    s.insert(&rows, None).unwrap();
}

/// Runs the daemon (uplink only) for up to `for_`, returns the unsent rows left.
async fn run_uplink(head: &Head, trust: &str, for_: Duration) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    fill(&dir.path().join("data/readings.db"));
    std::fs::write(dir.path().join("ca.pem"), &head.cert_pem).unwrap();
    let text = format!(
        "[site]\nid = \"tls-site\"\ndata_dir = \"data\"\n[uplink]\nurl = \"https://localhost:{}\"\ntoken = \"{}\"\n\
         interval = \"200ms\"\n{trust}\n",
        head.addr.port(),
        head.token
    );
    let config = Config::parse(&text, &dir.path().join("amid.toml")).unwrap();
    let db = dir.path().join("data/readings.db");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(ami_collector::run::run(config, async {
        let _ = rx.await;
    }));
    let t0 = Instant::now();
    let depth = || Store::open(&db).unwrap().depth().unwrap().0;
    while depth() > 0 && t0.elapsed() < for_ {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = tx.send(());
    daemon.await.unwrap().unwrap();
    depth()
}

fn fingerprint(pem: &str) -> String {
    ami_collector::uplink::pem_fingerprint(pem).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_ca_file_is_trusted() {
    let head = https_central().await;
    assert_eq!(run_uplink(&head, "ca_file = \"ca.pem\"", Duration::from_secs(20)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_certificate_is_trusted() {
    let head = https_central().await;
    let pin = fingerprint(&head.cert_pem);
    assert_eq!(run_uplink(&head, &format!("pin_sha256 = [\"{pin}\"]"), Duration::from_secs(20)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_pin_or_unknown_certificate_delivers_nothing_and_keeps_everything() {
    let head = https_central().await;
    let wrong = "00".repeat(32);
    assert_eq!(run_uplink(&head, &format!("pin_sha256 = [\"{wrong}\"]"), Duration::from_secs(2)).await, 50);
    assert_eq!(run_uplink(&head, "", Duration::from_secs(2)).await, 50);
}

//! The command path end to end: an operator queues a relay disconnect at ami-central; the site's amid
//! (which the head end never dials) receives it in an ingest response, switches the simulated relay through
//! the profile's control, and the result is visible in the API. Plus the site-clock rule: readings taken
//! before the clock was trustworthy are held, then sent flagged.

mod common;

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ami_collector::config::Config;
use chrono::{TimeZone, Utc};
use common::*;
use serde_json::json;

struct Central {
    addr: std::net::SocketAddr,
    operator: String,
    site_token: String,
    _dir: tempfile::TempDir,
}

async fn central(site: &str) -> Central {
    let dir = tempfile::tempdir().unwrap();
    let db = ami_central::Db::connect(&format!("sqlite:{}", dir.path().join("c.db").display())).await.unwrap();
    let operator = db.add_operator_token("ops").await.unwrap();
    let site_token = db.add_site_token(site).await.unwrap();
    let cfg = ami_central::ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: None,
        tariff: 0.3,
        currency: "EUR".into(),
    };
    let (addr, _task) = ami_central::spawn(db, cfg).await.unwrap();
    Central { addr, operator, site_token, _dir: dir }
}

async fn get(c: &Central, path: &str) -> serde_json::Value {
    let resp =
        reqwest::Client::new().get(format!("http://{}{path}", c.addr)).bearer_auth(&c.operator).send().await.unwrap();
    assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
    resp.json().await.unwrap()
}

async fn queue(c: &Central, site: &str, body: serde_json::Value) -> i64 {
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/v1/sites/{site}/commands", c.addr))
        .bearer_auth(&c.operator)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    resp.json::<serde_json::Value>().await.unwrap()["id"].as_i64().unwrap()
}

async fn wait_command(c: &Central, site: &str, id: i64) -> serde_json::Value {
    let t0 = Instant::now();
    loop {
        let cmd = get(c, &format!("/api/v1/sites/{site}/commands/{id}")).await;
        if cmd["status"] == "done" || cmd["status"] == "failed" {
            return cmd;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "command {id} still {}", cmd["status"]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn relay_state(port: u16) -> f64 {
    let out = amid()
        .args([
            "read",
            "--profile",
            "waveshare-relay-8",
            "--media",
            &format!("tcp://127.0.0.1:{port}"),
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    json_lines(&out.stdout).into_iter().find(|l| l["name"] == "relay_1").unwrap()["value"].as_f64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_disconnect_queued_centrally_switches_the_meter_and_reports_back() {
    let c = central("s1").await;
    // A simulated relay module on Modbus TCP.
    let port = free_port();
    let mut sim = amid()
        .args(["simulate", "--profile", "waveshare-relay-8", "--listen", &format!("tcp://127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_line(&mut sim, "simulating");
    let _sim = Proc(sim);
    assert_eq!(relay_state(port), 1.0, "relays start closed");

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("amid.toml");
    std::fs::write(
        &config,
        format!(
            "[site]\nid = \"s1\"\n[uplink]\nurl = \"http://{}\"\ntoken = \"{}\"\ninterval = \"300ms\"\n\
             [[bus]]\nid = \"b\"\nmedia = \"tcp://127.0.0.1:{port}\"\n\
             [[meter]]\nid = \"feeder\"\nbus = \"b\"\nprofile = \"waveshare-relay-8\"\ninterval = \"1s\"\n",
            c.addr, c.site_token
        ),
    )
    .unwrap();
    let daemon = amid().args(["run", "--config", config.to_str().unwrap()]).stderr(Stdio::null()).spawn().unwrap();
    let _daemon = Proc(daemon);

    let id = queue(&c, "s1", json!({"meter": "feeder", "action": {"type": "control", "name": "relay_1", "on": false}}))
        .await;
    let done = wait_command(&c, "s1", id).await;
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["result"]["ok"], true, "{done}");
    assert_eq!(relay_state(port), 0.0, "the relay opened");

    // Commands that cannot run fail with a reason, and run only once.
    let clock = queue(&c, "s1", json!({"meter": "feeder", "action": {"type": "set_clock"}})).await;
    let unknown = queue(&c, "s1", json!({"meter": "nope", "action": {"type": "read_now"}})).await;
    let clock = wait_command(&c, "s1", clock).await;
    assert_eq!(clock["status"], "failed");
    assert!(clock["result"]["message"].as_str().unwrap().contains("not supported"), "{clock}");
    let unknown = wait_command(&c, "s1", unknown).await;
    assert!(unknown["result"]["message"].as_str().unwrap().contains("unknown meter"), "{unknown}");

    // Readings and the heartbeat arrived too.
    let t0 = Instant::now();
    loop {
        let health = reqwest::Client::new()
            .get(format!("http://{}/api/v1/sites/s1/health", c.addr))
            .bearer_auth(&c.operator)
            .send()
            .await
            .unwrap();
        if health.status().is_success() {
            let h: serde_json::Value = health.json().await.unwrap();
            let meters = h["health"]["meters"].as_array().cloned().unwrap_or_default();
            if meters.iter().any(|m| m["meter"] == "feeder" && m["last_good"].is_i64()) {
                break;
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "no heartbeat with the meter's last good read");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rows = get(&c, "/api/v1/sites/s1/meters/feeder/readings?obis=0-1:96.3.10*255").await;
    assert!(rows.as_array().is_some_and(|r| r.iter().any(|r| r["value"] == 0.0)), "{rows}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_wait_for_a_trustworthy_clock_and_are_flagged() {
    let c = central("s2").await;
    let profile = ami_device::resolve_profile("eastron-sdm120", &ami_device::default_search_dirs()).unwrap();
    let sim = ami_sim::Simulator::single(1, ami_sim::SimMeter::new(&profile, 1));
    let (sim_addr, _sim) = ami_sim::spawn_tcp("127.0.0.1:0", sim, ami_sim::SimOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[site]\nid = \"s2\"\ndata_dir = \"data\"\n[uplink]\nurl = \"http://{}\"\ntoken = \"{}\"\ninterval = \"200ms\"\n\
         [[bus]]\nid = \"b\"\nmedia = \"tcp://{sim_addr}\"\n\
         [[meter]]\nid = \"pv\"\nbus = \"b\"\nprofile = \"eastron-sdm120\"\ninterval = \"1s\"\n",
        c.addr, c.site_token
    );
    let config = Config::parse(&text, &dir.path().join("amid.toml")).unwrap();

    // A box without RTC: the clock starts at 1970-01-01 and runs.
    let synced = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let s2 = synced.clone();
    let clock: ami_collector::uplink::Clock = Arc::new(move || {
        if s2.load(Ordering::Relaxed) {
            Utc::now()
        } else {
            Utc.timestamp_opt(0, 0).unwrap() + chrono::TimeDelta::from_std(start.elapsed()).unwrap()
        }
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(ami_collector::run::run_with_clock(
        config,
        async {
            let _ = stop_rx.await;
        },
        clock,
    ));

    // Heartbeats arrive saying the clock is not trusted; no readings do.
    let t0 = Instant::now();
    loop {
        let r = reqwest::Client::new()
            .get(format!("http://{}/api/v1/sites/s2/health", c.addr))
            .bearer_auth(&c.operator)
            .send()
            .await
            .unwrap();
        if r.status().is_success() {
            let h: serde_json::Value = r.json().await.unwrap();
            if h["health"]["store_depth"].as_u64().unwrap_or(0) >= 24 {
                assert_eq!(h["health"]["clock_trusted"], false);
                break;
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "no heartbeat");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sites = get(&c, "/api/v1/sites").await;
    assert_eq!(sites[0]["readings"], 0, "readings are held while the clock is untrusted: {sites}");

    // NTP syncs: the held readings go up, flagged.
    synced.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    let rows = loop {
        let resp = reqwest::Client::new()
            .get(format!(
                "http://{}/api/v1/sites/s2/meters/pv/readings?obis=1-0:32.7.0*255&from=1970-01-01T00:00:00Z&to=1970-01-02T00:00:00Z",
                c.addr
            ))
            .bearer_auth(&c.operator)
            .send()
            .await
            .unwrap();
        // 404 until the meter's first readings arrive.
        if resp.status().is_success() {
            let rows: serde_json::Value = resp.json().await.unwrap();
            if rows.as_array().is_some_and(|r| !r.is_empty()) {
                break rows;
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "held readings never arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for r in rows.as_array().unwrap() {
        assert!(r["quality"].as_str().unwrap().contains("clock_untrusted"), "{r}");
    }
    let _ = stop_tx.send(());
    daemon.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_the_central_store_refuses_is_set_aside_and_the_rest_flows() {
    use ami_collector::store::{Store, StoredReading};
    use ami_device::{Quality, Reading, Value, ValueKind};
    let c = central("s3").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let db = dir.path().join("data/readings.db");
    {
        let mut s = Store::open(&db).unwrap();
        let rows: Vec<StoredReading> = (0..40)
            .map(|i| StoredReading {
                reading: Reading {
                    meter: "m".into(),
                    name: "status".into(),
                    obis: "0-0:96.5.0".parse().unwrap(),
                    // One status word holds a NUL, which the central store refuses (PostgreSQL text can't).
                    value: Value::Text(if i == 17 { "bad\0word".into() } else { format!("word {i}") }),
                    unit: String::new(),
                    ts: Utc.timestamp_millis_opt(1_795_392_000_000 + i64::from(i) * 900_000).unwrap(),
                    quality: Quality::OK,
                },
                kind: ValueKind::Static,
            })
            .collect();
        s.insert(&rows, None).unwrap();
    }
    let text = format!(
        "[site]\nid = \"s3\"\ndata_dir = \"data\"\n[uplink]\nurl = \"http://{}\"\ntoken = \"{}\"\ninterval = \"100ms\"\nbatch = 16\n",
        c.addr, c.site_token
    );
    let config = Config::parse(&text, &dir.path().join("amid.toml")).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(ami_collector::run::run(config, async {
        let _ = rx.await;
    }));
    let t0 = Instant::now();
    while Store::open(&db).unwrap().depth().unwrap().0 > 0 {
        assert!(t0.elapsed() < Duration::from_secs(20), "the refused reading blocks the uplink");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = tx.send(());
    daemon.await.unwrap().unwrap();
    assert_eq!(Store::open(&db).unwrap().rejected_total().unwrap(), 1);
    let sites = get(&c, "/api/v1/sites").await;
    assert_eq!(sites[0]["readings"], 39, "{sites}");
}

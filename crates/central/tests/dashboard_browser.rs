//! The dashboard in a real browser: Debian's headless chromium loads the pages of an in-process
//! ami-central that holds a day of 15-min data for three meters, ingested through the real
//! `POST /api/v1/ingest`.
//!
//! Screenshot check: the charts draw their series in the colours of `PALETTE` in `assets/app.js`, which
//! the page's chrome does not use except in a few small places (links, buttons, legend swatches). The
//! test decodes each screenshot and counts the pixel columns holding a series colour: a line or a row of
//! bars across the time axis fills hundreds of columns, the chrome a few dozen. The page of a meter with
//! nothing to chart (voltage only) is the control that proves the measure tells the two apart (about 100
//! columns there against over 600 for a chart). The DOM, dumped after the scripts ran, is checked for the
//! tables' content.
//!
//! Login: chromium's command line cannot type or set cookies, so the test opens the login page with
//! `#autologin=<operator token>&next=<route>`: the page POSTs the token to /login like the form does and
//! reloads on the route. A fragment is never sent to the server, so the token stays out of access logs.
//!
//! Screenshots are kept as `target/dashboard-*.png` for a human to look at.
//! chromium missing is a failure (run ./tests/run.sh, which installs it), never a silent skip.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ami_central::{Db, ServerConfig};
use ami_wire::{BusHealth, Health, IngestRequest, MeterHealth, Point, PointValue, Series};

const STEP_MS: i64 = 15 * 60 * 1000;
/// Intervals in the day of data (both ends included).
const INTERVALS: i64 = 96;
/// How long one chromium run may take before the test gives up on it.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(90);
const WINDOW: (u32, u32) = (1280, 900);

/// A running ami-central with data for site `s1` (meters `m1`, `m2`, `m3`) and a pending command.
struct Central {
    addr: SocketAddr,
    operator: String,
    _dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

fn point(t: i64, v: f64) -> Point {
    Point { t, v: PointValue::Number(v), q: None }
}

fn series(meter: &str, name: &str, obis: &str, unit: &str, kind: &str, points: Vec<Point>) -> Series {
    Series { meter: meter.into(), name: name.into(), obis: obis.into(), unit: unit.into(), kind: kind.into(), points }
}

/// Power of a meter over the day (W): a base load with a daily swing, different per meter.
fn power_w(meter: usize, i: i64) -> f64 {
    let phase = std::f64::consts::TAU * i as f64 / INTERVALS as f64;
    match meter {
        0 => 900.0 + 500.0 * phase.sin(),
        _ => 1800.0 + 700.0 * (phase + 1.0).cos(),
    }
}

/// A day of 15-min power and energy-counter readings for `m1` and `m2` and voltage for `m3`, ending at
/// the current quarter hour, and a health report.
fn day_batch(now_ms: i64) -> IngestRequest {
    let end = now_ms - now_ms.rem_euclid(STEP_MS);
    let start = end - INTERVALS * STEP_MS;
    let mut all = Vec::new();
    for (m, meter) in ["m1", "m2"].into_iter().enumerate() {
        let mut counter = 1_000_000.0 * (m as f64 + 1.0);
        let (mut power, mut energy) = (Vec::new(), Vec::new());
        for i in 0..=INTERVALS {
            let t = start + i * STEP_MS;
            let p = power_w(m, i);
            power.push(point(t, p));
            energy.push(point(t, counter));
            counter += p * 0.25;
        }
        all.push(series(meter, "power_active_total", "1-0:16.7.0*255", "W", "instantaneous", power));
        all.push(series(meter, "energy_import_total", "1-0:1.8.0*255", "Wh", "counter", energy));
    }
    // m3 measures voltage only: its meter page has the full page chrome but nothing to chart.
    let voltage = (0..=INTERVALS).map(|i| point(start + i * STEP_MS, 230.0 + (i % 7) as f64 * 0.3)).collect();
    all.push(series("m3", "voltage_l1", "1-0:32.7.0*255", "V", "instantaneous", voltage));
    let meters = ["m1", "m2", "m3"]
        .iter()
        .map(|m| MeterHealth {
            meter: (*m).into(),
            bus: "rs485-1".into(),
            last_good: Some(end),
            reads_ok: 97,
            ..MeterHealth::default()
        })
        .collect();
    let health = Health {
        version: "0.1.0".into(),
        uptime_s: 90_000,
        clock_trusted: true,
        meters,
        buses: vec![BusHealth {
            bus: "rs485-1".into(),
            requests: 400,
            replies: 397,
            timeouts: 3,
            retries: 3,
            ..BusHealth::default()
        }],
        ..Health::default()
    };
    IngestRequest {
        site: "s1".into(),
        batch: 1,
        sent_at: now_ms,
        series: all,
        health: Some(health),
        ..IngestRequest::default()
    }
}

async fn start_central() -> Central {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!("sqlite:{}", dir.path().join("central.db").display())).await.unwrap();
    let site = db.add_site_token("s1").await.unwrap();
    let operator = db.add_operator_token("dashboard-test").await.unwrap();
    let cfg = ServerConfig { listen: "127.0.0.1:0".parse().unwrap(), tls: None, tariff: 0.3, currency: "EUR".into() };
    let (addr, server) = ami_central::spawn(db, cfg).await.unwrap();

    let http = reqwest::Client::new();
    let now_ms = chrono::Utc::now().timestamp_millis();
    let resp = http
        .post(format!("http://{addr}{}", ami_wire::INGEST_PATH))
        .bearer_auth(&site)
        .header("Content-Type", "application/json")
        .header("Content-Encoding", "gzip")
        .body(ami_wire::encode_gzip(&day_batch(now_ms)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "ingest: {}", resp.text().await.unwrap_or_default());
    let resp = http
        .post(format!("http://{addr}/api/v1/sites/s1/commands"))
        .bearer_auth(&operator)
        .json(&serde_json::json!({"meter": "m2", "action": {"type": "control", "name": "relay", "on": false}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "queue command: {}", resp.text().await.unwrap_or_default());
    Central { addr, operator, _dir: dir, server }
}

impl Central {
    /// The login page URL that signs in with the operator token and then shows `route`.
    fn autologin(&self, route: &str) -> String {
        format!("http://{}/#autologin={}&next={route}", self.addr, self.operator)
    }
}

impl Drop for Central {
    fn drop(&mut self) {
        self.server.abort();
    }
}

// ---- chromium ----

fn chromium() -> PathBuf {
    let name = PathBuf::from(std::env::var_os("AMI_CHROMIUM").unwrap_or_else(|| "chromium".into()));
    let found = if name.is_absolute() {
        Some(name.clone()).filter(|p| p.is_file())
    } else {
        std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(&name)).find(|c| c.is_file()))
    };
    found.unwrap_or_else(|| {
        panic!(
            "{} is not installed, and the dashboard test needs a real browser: run ./tests/run.sh (it installs \
             Debian's chromium) or `apt-get install -y chromium`",
            name.display()
        )
    })
}

enum Output {
    Screenshot(PathBuf),
    Dom,
}

/// Runs headless chromium on `url` until its virtual time budget is spent (so the page's fetches and
/// the autologin reload finish) and returns stdout (the DOM for [`Output::Dom`]).
async fn run_chromium(url: &str, out: Output) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--lang=en-US",
        "--virtual-time-budget=8000",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg(format!("--window-size={},{}", WINDOW.0, WINDOW.1));
    match &out {
        Output::Screenshot(file) => cmd.arg(format!("--screenshot={}", file.display())),
        Output::Dom => cmd.arg("--dump-dom"),
    };
    cmd.arg(url).kill_on_drop(true).stdin(std::process::Stdio::null());
    let run = tokio::time::timeout(CHROMIUM_TIMEOUT, cmd.output()).await;
    let output =
        run.unwrap_or_else(|_| panic!("chromium did not finish within {CHROMIUM_TIMEOUT:?} on {url}")).unwrap();
    assert!(
        output.status.success(),
        "chromium failed ({}) on {url}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    if let Output::Screenshot(file) = &out {
        assert!(file.is_file(), "chromium wrote no screenshot: {}", String::from_utf8_lossy(&output.stderr));
    }
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Where the screenshots are kept: `target/` of the build running this test.
fn screenshot_path(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| {
        // target/debug/deps/dashboard_browser-… → target/
        let exe = std::env::current_exe().unwrap();
        exe.ancestors().nth(3).map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("target"))
    });
    std::fs::create_dir_all(&target).unwrap();
    target.join(format!("dashboard-{name}.png"))
}

// ---- pixels ----

/// The series colours, read from app.js so the test follows the dashboard's palette.
fn palette() -> Vec<[u8; 3]> {
    let js = include_str!("../assets/app.js");
    let line = js.lines().find(|l| l.trim_start().starts_with("const PALETTE = [")).expect("PALETTE in app.js");
    let colours: Vec<[u8; 3]> = line
        .split('\'')
        .filter(|s| s.len() == 7 && s.starts_with('#'))
        .map(|s| {
            let c = |i: usize| u8::from_str_radix(&s[i..i + 2], 16).unwrap();
            [c(1), c(3), c(5)]
        })
        .collect();
    assert!(colours.len() >= 2, "PALETTE in app.js has no colours: {line}");
    colours
}

struct Image {
    width: usize,
    height: usize,
    rgb: Vec<[u8; 3]>,
}

fn decode_png(path: &Path) -> Image {
    let mut decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("unexpected PNG colour type {other:?} in {}", path.display()),
    };
    let rgb = buf[..info.buffer_size()].chunks_exact(channels).map(|p| [p[0], p[1], p[2]]).collect();
    Image { width: info.width as usize, height: info.height as usize, rgb }
}

/// Pixels of one colour in a screenshot.
#[derive(Debug)]
struct Coverage {
    pixels: usize,
    columns: usize,
}

impl Image {
    /// Pixels within a small distance of `colour` (the centre of an anti-aliased line or a bar is exact).
    fn coverage(&self, colour: [u8; 3]) -> Coverage {
        let near = |p: &[u8; 3]| p.iter().zip(colour).all(|(a, b)| a.abs_diff(b) <= 16);
        let mut columns = vec![false; self.width];
        let mut pixels = 0;
        for (i, p) in self.rgb.iter().enumerate() {
            if near(p) {
                pixels += 1;
                columns[i % self.width] = true;
            }
        }
        Coverage { pixels, columns: columns.iter().filter(|c| **c).count() }
    }
}

/// A series drawn across the time axis: at least this share of the screenshot's columns.
const SERIES_COLUMNS: f64 = 0.45;

fn assert_drawn(shot: &Path, what: &str, cov: &Coverage, width: usize, min_pixels: usize) {
    let min_columns = (width as f64 * SERIES_COLUMNS) as usize;
    eprintln!("{what}: {} columns, {} pixels", cov.columns, cov.pixels);
    assert!(
        cov.columns >= min_columns && cov.pixels >= min_pixels,
        "{what}: the series colour covers {} columns and {} pixels, expected ≥ {min_columns} columns and ≥ \
         {min_pixels} pixels (see {})",
        cov.columns,
        cov.pixels,
        shot.display()
    );
}

// ---- tests ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meter_page_draws_power_line_and_energy_bars_from_ingested_data() {
    let central = start_central().await;
    let colours = palette();
    let (power, energy) = (colours[0], colours[1]);

    let shot = screenshot_path("meter");
    run_chromium(&central.autologin("/site/s1/meter/m1"), Output::Screenshot(shot.clone())).await;
    let img = decode_png(&shot);
    assert_eq!((img.width, img.height), (WINDOW.0 as usize, WINDOW.1 as usize));
    // The power line: 2 px wide across ~1100 px of plot. The energy bars: 96 bars, ~150 px tall on average.
    assert_drawn(&shot, "power line", &img.coverage(power), img.width, 1_000);
    assert_drawn(&shot, "energy bars", &img.coverage(energy), img.width, 40_000);

    // Control: the page of a meter without power or energy series has the same chrome (buttons, links,
    // tables) and two empty charts.
    let empty = screenshot_path("meter-empty");
    run_chromium(&central.autologin("/site/s1/meter/m3"), Output::Screenshot(empty.clone())).await;
    let img = decode_png(&empty);
    for (name, colour) in [("power", power), ("energy", energy)] {
        let cov = img.coverage(colour);
        eprintln!("control, {name} colour: {} columns, {} pixels", cov.columns, cov.pixels);
        assert!(
            cov.columns < (img.width as f64 * SERIES_COLUMNS / 3.0) as usize,
            "a page without data shows the {name} colour in {} columns: the screenshot check cannot tell a \
             chart from the page chrome (see {})",
            cov.columns,
            empty.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_page_compares_meters_on_one_chart_and_shows_health_and_commands() {
    let central = start_central().await;
    let colours = palette();

    let shot = screenshot_path("site");
    run_chromium(&central.autologin("/site/s1"), Output::Screenshot(shot.clone())).await;
    let img = decode_png(&shot);
    // m1 and m2 get the first two colours; both lines run across the day.
    assert_drawn(&shot, "compare chart, m1", &img.coverage(colours[0]), img.width, 1_000);
    assert_drawn(&shot, "compare chart, m2", &img.coverage(colours[1]), img.width, 1_000);

    let dom = run_chromium(&central.autologin("/site/s1"), Output::Dom).await;
    for expected in [
        "href=\"#/site/s1/meter/m1\"", // the meters table links to the meter pages
        "href=\"#/site/s1/meter/m2\"",
        "relay off (disconnect)",                       // the queued command …
        "<span class=\"badge pending\">pending</span>", // … is pending
        "rs485-1",                                      // bus counters from the health report
        "clock trusted",
        "Queue command", // the command form
    ] {
        assert!(dom.contains(expected), "site page lacks {expected:?}; DOM:\n{dom}");
    }
    assert!(!dom.contains("class=\"alert\""), "site page shows an error; DOM:\n{dom}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_list_after_login_and_login_page_refuses_a_wrong_token() {
    let central = start_central().await;

    let dom = run_chromium(&central.autologin("/"), Output::Dom).await;
    for expected in [
        "href=\"#/site/s1\"",
        "<span class=\"badge ok\" title=\"Reporting, no failing meters\">ok</span>",
        ">485<", // (2 meters × 2 series + 1 series) × 97 readings
        "Log out",
    ] {
        assert!(dom.contains(expected), "sites list lacks {expected:?}; DOM:\n{dom}");
    }
    // The operator token never stays in the address bar or the page.
    assert!(!dom.contains(&central.operator), "the token leaked into the page");

    // Without a session the dashboard is the login form.
    let dom = run_chromium(&format!("http://{}/", central.addr), Output::Dom).await;
    assert!(dom.contains("id=\"login-form\"") && dom.contains("name=\"token\""), "no login form; DOM:\n{dom}");

    // A wrong token is refused with a message and no session.
    let wrong = format!("http://{}/#autologin={}&next=/", central.addr, "0".repeat(64));
    let dom = run_chromium(&wrong, Output::Dom).await;
    assert!(dom.contains("This token was not accepted"), "no refusal shown; DOM:\n{dom}");
    assert!(dom.contains("id=\"login-form\""), "not on the login page; DOM:\n{dom}");
}

//! The query API: sites and meters listings, readings in JSON and CSV at every resolution and
//! aggregate, health.

mod common;

use common::*;
use serde_json::{json, Value};

const FROM: &str = "2026-11-23T00:00:00Z";
const TO: &str = "2026-11-24T00:00:00Z";

async fn readings(app: &axum::Router, token: &str, meter: &str, query: &str) -> Value {
    let r = call(app, get(Some(token), &format!("/api/v1/sites/s1/meters/{meter}/readings?{query}"))).await;
    assert_eq!(r.status, 200, "{query}: {}", r.text());
    r.json()
}

fn values(rows: &Value) -> Vec<f64> {
    rows.as_array().unwrap().iter().map(|r| r["value"].as_f64().unwrap()).collect()
}

async fn a_day_of_counter_data_aggregates_by_hour_and_day(t: TestDb) {
    let app = t.app();
    ingest(&app, &t.site_token, &day_batch("s1", 2)).await;
    let op = &t.operator_token;
    let e = "obis=1-0:1.8.0*255";
    let p = "obis=1-0:1.7.0*255";

    let raw = readings(&app, op, "m0", &format!("{e}&from={FROM}&to={TO}")).await;
    assert_eq!(raw.as_array().unwrap().len(), 96);
    assert_eq!(
        raw[0],
        json!({"meter": "m0", "name": "energy_import_total", "obis": "1-0:1.8.0*255", "value": 10000.0,
               "unit": "Wh", "ts": "2026-11-23T00:00:00Z", "quality": "ok"})
    );

    // Hourly delta: 4 intervals × 250 Wh, the last hour only up to the day's last reading.
    let hourly = readings(&app, op, "m0", &format!("{e}&from={FROM}&to={TO}&resolution=hour&agg=delta")).await;
    let v = values(&hourly);
    assert_eq!(v.len(), 24);
    assert!(v[..23].iter().all(|d| *d == 1000.0), "{v:?}");
    assert_eq!(v[23], 750.0);
    assert_eq!(hourly[1]["ts"], "2026-11-23T01:00:00Z");
    // A range ending mid-day: the last bucket is closed by the first reading at `to`.
    let part =
        readings(&app, op, "m0", &format!("{e}&from={FROM}&to=2026-11-23T06:00:00Z&resolution=hour&agg=delta")).await;
    assert_eq!(values(&part), [1000.0; 6]);

    let daily_last = readings(&app, op, "m0", &format!("{e}&from={FROM}&to={TO}&resolution=day&agg=last")).await;
    assert_eq!(
        daily_last,
        json!([{"meter": "m0", "name": "energy_import_total", "obis": "1-0:1.8.0*255",
        "value": 10000.0 + 95.0 * 250.0, "unit": "Wh", "ts": "2026-11-23T00:00:00Z", "quality": "ok"}])
    );
    let daily_delta = readings(&app, op, "m0", &format!("{e}&from={FROM}&to={TO}&resolution=day&agg=delta")).await;
    assert_eq!(values(&daily_delta), [95.0 * 250.0]);
    let monthly = readings(
        &app,
        op,
        "m0",
        &format!("{e}&from=2026-11-01T00:00:00Z&to=2026-12-01T00:00:00Z&resolution=month&agg=max"),
    )
    .await;
    assert_eq!(monthly[0]["ts"], "2026-11-01T00:00:00Z");

    // Power: hour 0 holds 1000, 1001, 1002, 1003 W.
    let q = |agg: &str| format!("{p}&from={FROM}&to={TO}&resolution=hour&agg={agg}");
    assert_eq!(values(&readings(&app, op, "m0", &q("avg")).await)[0], 1001.5);
    assert_eq!(values(&readings(&app, op, "m0", &q("min")).await)[1], 1004.0);
    assert_eq!(values(&readings(&app, op, "m0", &q("max")).await)[1], 1007.0);
    assert_eq!(values(&readings(&app, op, "m0", &q("last")).await)[23], 1095.0);
    // Default agg is avg; 15-min buckets equal the raw data here.
    assert_eq!(values(&readings(&app, op, "m0", &format!("{p}&from={FROM}&to={TO}&resolution=hour")).await)[0], 1001.5);
    assert_eq!(values(&readings(&app, op, "m0", &format!("{p}&from={FROM}&to={TO}&resolution=15m")).await).len(), 96);
    // Without obis: every series of the meter.
    assert_eq!(
        readings(&app, op, "m0", &format!("from={FROM}&to={TO}&resolution=day&agg=max"))
            .await
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // `to` is exclusive.
    let one = readings(&app, op, "m0", &format!("{p}&from={FROM}&to=2026-11-23T00:15:00Z")).await;
    assert_eq!(values(&one), [1000.0]);
}

async fn csv_has_a_header_and_one_row_per_reading(t: TestDb) {
    let app = t.app();
    ingest(&app, &t.site_token, &day_batch("s1", 1)).await;
    let r = call(
        &app,
        get(Some(&t.operator_token), &format!("/api/v1/sites/s1/meters/m0/readings?obis=1-0:1.8.0*255&from={FROM}&to={TO}&resolution=hour&agg=delta&format=csv")),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.headers["content-type"].to_str().unwrap().starts_with("text/csv"));
    let text = r.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "meter,name,obis,ts,value,unit,quality");
    assert_eq!(lines.len(), 25);
    assert_eq!(lines[1], "m0,energy_import_total,1-0:1.8.0*255,2026-11-23T00:00:00Z,1000,Wh,ok");
    assert_eq!(lines[24], "m0,energy_import_total,1-0:1.8.0*255,2026-11-23T23:00:00Z,750,Wh,ok");
}

async fn text_values_appear_only_at_raw_resolution(t: TestDb) {
    let app = t.app();
    let mut batch = day_batch("s1", 1);
    batch.series.push(ami_wire::Series {
        meter: "m0".into(),
        name: "serial_number".into(),
        obis: "0-0:96.1.0*255".into(),
        unit: String::new(),
        kind: "static".into(),
        points: vec![ami_wire::Point {
            t: DAY0_MS,
            v: ami_wire::PointValue::Text("SN,1".into()),
            q: Some("clock_untrusted".into()),
        }],
    });
    ingest(&app, &t.site_token, &batch).await;
    let q = format!("obis=0-0:96.1.0*255&from={FROM}&to={TO}");
    let raw = readings(&app, &t.operator_token, "m0", &q).await;
    assert_eq!(raw[0]["value"], "SN,1");
    assert_eq!(raw[0]["quality"], "clock_untrusted");
    let agg = readings(&app, &t.operator_token, "m0", &format!("{q}&resolution=hour")).await;
    assert_eq!(agg, json!([]));
    let r =
        call(&app, get(Some(&t.operator_token), &format!("/api/v1/sites/s1/meters/m0/readings?{q}&format=csv"))).await;
    assert!(
        r.text().contains("m0,serial_number,0-0:96.1.0*255,2026-11-23T00:00:00Z,\"SN,1\",,clock_untrusted"),
        "{}",
        r.text()
    );
}

async fn bad_query_parameters_get_400_with_a_reason(t: TestDb) {
    let app = t.app();
    ingest(&app, &t.site_token, &day_batch("s1", 1)).await;
    for q in [
        "resolution=week",
        "agg=median",
        "format=xml",
        "from=yesterday",
        "to=2026-13-01T00:00:00Z",
        "from=2026-11-24T00:00:00Z&to=2026-11-23T00:00:00Z",
    ] {
        let r = call(&app, get(Some(&t.operator_token), &format!("/api/v1/sites/s1/meters/m0/readings?{q}"))).await;
        assert_eq!(r.status, 400, "{q}: {}", r.text());
        assert!(!r.error().is_empty());
    }
    let r = call(&app, get(Some(&t.operator_token), "/api/v1/sites/s1/meters/nope/readings")).await;
    assert_eq!(r.status, 404);
    let r = call(&app, get(Some(&t.operator_token), "/api/v1/sites/nowhere/meters")).await;
    assert_eq!(r.status, 404);
    // An OBIS code the meter does not have is an empty answer, not an error.
    let r = call(
        &app,
        get(
            Some(&t.operator_token),
            &format!("/api/v1/sites/s1/meters/m0/readings?obis=9-9:9.9.9*255&from={FROM}&to={TO}"),
        ),
    )
    .await;
    assert_eq!((r.status.as_u16(), r.json()), (200, json!([])));
}

async fn sites_and_meters_are_listed_with_their_series(t: TestDb) {
    let app = t.app();
    let op = Some(t.operator_token.as_str());
    ingest(&app, &t.site_token, &day_batch("s1", 3)).await;
    let sites = call(&app, get(op, "/api/v1/sites")).await.json();
    assert_eq!(sites[0]["site"], "s1");
    assert_eq!(sites[0]["meters"], 3);
    assert_eq!(sites[0]["readings"], 576);
    assert_eq!(sites[0]["pending_commands"], 0);
    assert!(sites[0]["last_seen"].as_str().unwrap().ends_with('Z'));
    assert_eq!(sites[1], json!({"site": "s2", "meters": 0, "readings": 0, "last_seen": null, "pending_commands": 0}));

    let meters = call(&app, get(op, "/api/v1/sites/s1/meters")).await.json();
    let names: Vec<&str> = meters.as_array().unwrap().iter().map(|m| m["meter"].as_str().unwrap()).collect();
    assert_eq!(names, ["m0", "m1", "m2"]);
    assert_eq!(
        meters[0]["series"][0],
        json!({"obis": "1-0:1.7.0*255", "name": "power_active_total", "unit": "W", "kind": "instantaneous",
               "first": "2026-11-23T00:00:00Z", "last": "2026-11-23T23:45:00Z", "count": 96})
    );
    assert_eq!(meters[0]["series"][1]["kind"], "counter");
    assert_eq!(call(&app, get(op, "/api/v1/sites/s2/meters")).await.json(), json!([]));
}

async fn health_returns_the_latest_heartbeat(t: TestDb) {
    let app = t.app();
    let op = Some(t.operator_token.as_str());
    assert_eq!(call(&app, get(op, "/api/v1/sites/s1/health")).await.status, 404);
    for depth in [5, 7] {
        let req = ami_wire::IngestRequest {
            site: "s1".into(),
            health: Some(ami_wire::Health {
                version: "0.1.0".into(),
                store_depth: depth,
                clock_trusted: true,
                meters: vec![ami_wire::MeterHealth {
                    meter: "m0".into(),
                    bus: "b".into(),
                    reads_ok: 3,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        ingest(&app, &t.site_token, &req).await;
    }
    let h = call(&app, get(op, "/api/v1/sites/s1/health")).await.json();
    assert_eq!(h["site"], "s1");
    assert!(h["received_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(h["health"]["store_depth"], 7);
    assert_eq!(h["health"]["clock_trusted"], true);
    assert_eq!(h["health"]["meters"][0]["reads_ok"], 3);
    let cfg = call(&app, get(op, "/api/v1/config")).await.json();
    assert_eq!(cfg, json!({"tariff": 0.30, "currency": "EUR"}));
    let r = call(&app, get(None, "/healthz")).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "ok"));
}

both_backends!(
    a_day_of_counter_data_aggregates_by_hour_and_day,
    csv_has_a_header_and_one_row_per_reading,
    text_values_appear_only_at_raw_resolution,
    bad_query_parameters_get_400_with_a_reason,
    sites_and_meters_are_listed_with_their_series,
    health_returns_the_latest_heartbeat,
);

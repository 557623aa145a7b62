//! Ingest: idempotent batches, gzip and plain bodies, size limits and malformed bodies rejected with a
//! reason and nothing written — on SQLite and PostgreSQL.

mod common;

use ami_wire::{IngestRequest, IngestResponse, Point, PointValue, Series, MAX_BODY};
use common::*;
use std::io::Write;

async fn same_batch_twice_inserts_nothing_the_second_time(t: TestDb) {
    let app = t.app();
    let batch = day_batch("s1", 3);
    let first = ingest(&app, &t.site_token, &batch).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let r: IngestResponse = serde_json::from_slice(&first.body).unwrap();
    assert_eq!((r.readings, r.inserted), (576, 576));

    let again = ingest(&app, &t.site_token, &batch).await;
    let r: IngestResponse = serde_json::from_slice(&again.body).unwrap();
    assert_eq!((r.readings, r.inserted), (576, 0));
    assert_eq!(t.stored_readings("s1").await, 576);

    // An overlapping batch: half old, half new readings.
    let mut overlap = day_batch("s1", 3);
    for s in &mut overlap.series {
        for p in &mut s.points {
            p.t += 48 * 900_000;
        }
    }
    let r: IngestResponse = serde_json::from_slice(&ingest(&app, &t.site_token, &overlap).await.body).unwrap();
    assert_eq!((r.readings, r.inserted), (576, 288));
    assert_eq!(t.stored_readings("s1").await, 864);
    let sites = t.db.sites().await.unwrap();
    let s1 = sites.iter().find(|s| s.site == "s1").unwrap();
    assert_eq!((s1.readings, s1.meters), (864, 3));
}

async fn the_first_value_of_a_reading_is_kept(t: TestDb) {
    let app = t.app();
    let mut batch = day_batch("s1", 1);
    ingest(&app, &t.site_token, &batch).await;
    for s in &mut batch.series {
        for p in &mut s.points {
            p.v = PointValue::Number(-1.0);
        }
    }
    let r: IngestResponse = serde_json::from_slice(&ingest(&app, &t.site_token, &batch).await.body).unwrap();
    assert_eq!(r.inserted, 0);
    let series = t.db.series("s1").await.unwrap();
    let energy = series.iter().find(|s| s.obis == "1-0:1.8.0*255").unwrap();
    let points = t.db.points(energy.id, 0, i64::MAX, 10).await.unwrap();
    assert_eq!(points[0].value, Some(10_000.0));
}

async fn gzip_and_plain_bodies_store_the_same_readings(t: TestDb) {
    let app = t.app();
    let mut batch = day_batch("s1", 1);
    batch.series[0].points.push(Point {
        t: DAY0_MS + 96 * 900_000,
        v: PointValue::Text("SN-42".into()),
        q: Some("estimated".into()),
    });
    let plain = serde_json::to_vec(&batch).unwrap();
    let r = call(&app, ingest_request(Some(&t.site_token), plain.clone(), false)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["inserted"], 193);
    let gz = ami_wire::encode_gzip(&batch);
    assert!(gz.len() * 3 < plain.len(), "gzip {} vs plain {}", gz.len(), plain.len());
    let r = call(&app, ingest_request(Some(&t.site_token), gz, true)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!((r.json()["readings"].as_u64(), r.json()["inserted"].as_u64()), (Some(193), Some(0)));
    let energy = t.db.series("s1").await.unwrap().into_iter().find(|s| s.obis == "1-0:1.8.0*255").unwrap();
    let pts = t.db.points(energy.id, 0, i64::MAX, 1000).await.unwrap();
    let last = pts.last().unwrap();
    assert_eq!((last.value, last.text.as_deref(), last.quality.as_deref()), (None, Some("SN-42"), Some("estimated")));
}

async fn oversized_bodies_get_413_and_write_nothing(t: TestDb) {
    let app = t.app();
    // Plain body over the limit (padding after valid JSON).
    let mut big = serde_json::to_vec(&day_batch("s1", 1)).unwrap();
    big.resize(MAX_BODY + 1, b' ');
    let r = call(&app, ingest_request(Some(&t.site_token), big, false)).await;
    assert_eq!(r.status, 413);
    assert!(r.error().contains("larger than"), "{}", r.error());
    // A gzip bomb: small on the wire, over the decompressed limit.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(b"{\"site\":\"s1\",\"series\":[").unwrap();
    let spaces = vec![b' '; 1 << 20];
    for _ in 0..(ami_wire::MAX_DECOMPRESSED >> 20) + 1 {
        enc.write_all(&spaces).unwrap();
    }
    let bomb = enc.finish().unwrap();
    assert!(bomb.len() < MAX_BODY);
    let r = call(&app, ingest_request(Some(&t.site_token), bomb, true)).await;
    assert_eq!(r.status, 413, "{}", r.text());
    t.assert_untouched("s1").await;
}

async fn malformed_and_invalid_bodies_get_400_with_a_reason_and_write_nothing(t: TestDb) {
    let app = t.app();
    let good = serde_json::to_value(day_batch("s1", 1)).unwrap();
    let mut cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("not json", b"{\"site\": \"s1\", ".to_vec(), false),
        ("wrong type", br#"{"site": 5}"#.to_vec(), false),
        ("bad gzip", b"\x1f\x8b\x08\x00garbage".to_vec(), true),
        ("binary junk", vec![0xff, 0x00, 0x13, 0x37], false),
        ("empty body", Vec::new(), false),
        (
            "number out of range",
            br#"{"site":"s1","series":[{"meter":"m","name":"n","obis":"o","points":[[1,1e999]]}]}"#.to_vec(),
            false,
        ),
    ];
    let mut unknown_field = good.clone();
    unknown_field["extra"] = serde_json::json!(1);
    cases.push(("unknown field", serde_json::to_vec(&unknown_field).unwrap(), false));
    // A valid series followed by an invalid one: nothing of the batch may land.
    let mut bad_kind = good.clone();
    bad_kind["series"][1]["kind"] = serde_json::json!("weird");
    cases.push(("unknown kind", serde_json::to_vec(&bad_kind).unwrap(), false));
    let mut empty_meter = good.clone();
    empty_meter["series"][1]["meter"] = serde_json::json!("");
    cases.push(("empty meter", serde_json::to_vec(&empty_meter).unwrap(), false));
    let mut bad_ts = good.clone();
    bad_ts["series"][1]["points"][5][0] = serde_json::json!(-5);
    cases.push(("negative timestamp", serde_json::to_vec(&bad_ts).unwrap(), false));
    let mut far_ts = good.clone();
    far_ts["series"][1]["points"][5][0] = serde_json::json!(i64::MAX);
    cases.push(("timestamp past 9999", serde_json::to_vec(&far_ts).unwrap(), false));
    let mut nul_text = good.clone();
    nul_text["series"][1]["points"][3][1] = serde_json::json!("a\0b");
    cases.push(("NUL in a text value", serde_json::to_vec(&nul_text).unwrap(), false));
    let mut nul_meter = good.clone();
    nul_meter["series"][0]["meter"] = serde_json::json!("m\0");
    cases.push(("NUL in a meter id", serde_json::to_vec(&nul_meter).unwrap(), false));
    let mut empty_site = good.clone();
    empty_site["site"] = serde_json::json!("");
    cases.push(("empty site", serde_json::to_vec(&empty_site).unwrap(), false));
    let too_many = IngestRequest {
        site: "s1".into(),
        series: vec![Series {
            meter: "m".into(),
            name: "n".into(),
            obis: "o".into(),
            unit: String::new(),
            kind: "instantaneous".into(),
            points: (0..=ami_wire::MAX_READINGS_PER_BATCH as i64)
                .map(|i| Point { t: i, v: PointValue::Number(0.0), q: None })
                .collect(),
        }],
        ..IngestRequest::default()
    };
    cases.push(("too many readings", ami_wire::encode_gzip(&too_many), true));

    for (what, body, gzip) in cases {
        let r = call(&app, ingest_request(Some(&t.site_token), body, gzip)).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        assert!(!r.error().is_empty(), "{what}: no reason");
    }
    // An encoding we do not speak.
    let mut req = ingest_request(Some(&t.site_token), serde_json::to_vec(&good).unwrap(), false);
    req.headers_mut().insert("content-encoding", "br".parse().unwrap());
    let r = call(&app, req).await;
    assert_eq!(r.status, 400);
    assert!(r.error().contains("content-encoding"), "{}", r.error());
    t.assert_untouched("s1").await;
}

async fn a_heartbeat_without_readings_updates_health_and_last_seen(t: TestDb) {
    let app = t.app();
    let req = IngestRequest {
        site: "s1".into(),
        health: Some(ami_wire::Health { version: "amid 0.1".into(), store_depth: 12, ..Default::default() }),
        ..IngestRequest::default()
    };
    let r = ingest(&app, &t.site_token, &req).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!((r.json()["readings"].as_u64(), r.json()["inserted"].as_u64()), (Some(0), Some(0)));
    let h = t.db.health("s1").await.unwrap().unwrap();
    assert_eq!((h.health.version.as_str(), h.health.store_depth), ("amid 0.1", 12));
    assert!(t.db.sites().await.unwrap().iter().any(|s| s.site == "s1" && s.last_seen.is_some()));
}

async fn hostile_bodies_never_cause_a_server_error(t: TestDb) {
    use rand::{Rng, SeedableRng};
    let app = t.app();
    let good = serde_json::to_vec(&day_batch("s1", 1)).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for round in 0..300 {
        let mut body = good.clone();
        match round % 3 {
            // Flip bytes of valid JSON.
            0 => {
                for _ in 0..rng.gen_range(1..8) {
                    let i = rng.gen_range(0..body.len());
                    body[i] = rng.gen();
                }
            }
            // Truncate it.
            1 => body.truncate(rng.gen_range(0..body.len())),
            // Random bytes, sometimes claiming to be gzip.
            _ => body = (0..rng.gen_range(0..200)).map(|_| rng.gen()).collect(),
        }
        let gzip = round % 7 == 0;
        let r = call(&app, ingest_request(Some(&t.site_token), body, gzip)).await;
        assert!(r.status == 200 || r.status == 400 || r.status == 403, "round {round}: {} {}", r.status, r.text());
        if r.status != 200 {
            assert!(!r.error().is_empty());
        }
    }
}

both_backends!(
    hostile_bodies_never_cause_a_server_error,
    same_batch_twice_inserts_nothing_the_second_time,
    the_first_value_of_a_reading_is_kept,
    gzip_and_plain_bodies_store_the_same_readings,
    oversized_bodies_get_413_and_write_nothing,
    malformed_and_invalid_bodies_get_400_with_a_reason_and_write_nothing,
    a_heartbeat_without_readings_updates_health_and_last_seen,
);

//! Authentication and authorisation: every rejected request gets 401 or 403 and writes nothing.

mod common;

use common::*;
use serde_json::json;

async fn requests_without_a_valid_token_get_401_and_write_nothing(t: TestDb) {
    let app = t.app();
    let body = ami_wire::encode_gzip(&day_batch("s1", 1));
    let r = call(&app, ingest_request(None, body.clone(), true)).await;
    assert_eq!(r.status, 401);
    assert!(r.error().contains("missing"), "{}", r.error());
    let wrong = "0".repeat(64);
    let r = call(&app, ingest_request(Some(&wrong), body.clone(), true)).await;
    assert_eq!(r.status, 401);
    // A revoked token stops working at once.
    let fresh = t.db.add_site_token("s1").await.unwrap();
    let id = t.db.list_tokens().await.unwrap().last().unwrap().id;
    assert!(t.db.revoke_token(id).await.unwrap());
    let r = call(&app, ingest_request(Some(&fresh), body, true)).await;
    assert_eq!(r.status, 401);
    for uri in ["/api/v1/sites", "/api/v1/sites/s1/meters", "/api/v1/sites/s1/meters/m0/readings", "/api/v1/config"] {
        assert_eq!(call(&app, get(None, uri)).await.status, 401, "{uri}");
        assert_eq!(call(&app, get(Some(&wrong), uri)).await.status, 401, "{uri}");
    }
    let r = call(
        &app,
        post_json(None, "/api/v1/sites/s1/commands", &json!({"meter": "m0", "action": {"type": "read_now"}})),
    )
    .await;
    assert_eq!(r.status, 401);
    t.assert_untouched("s1").await;
    assert!(t.db.commands("s1").await.unwrap().is_empty());
}

async fn a_site_token_cannot_write_another_sites_meters(t: TestDb) {
    let app = t.app();
    // s2's token, s1's batch.
    let r = ingest(&app, &t.other_site_token, &day_batch("s1", 2)).await;
    assert_eq!(r.status, 403);
    assert!(r.error().contains("s2"), "{}", r.error());
    t.assert_untouched("s1").await;
    t.assert_untouched("s2").await;
}

async fn an_operator_token_cannot_ingest(t: TestDb) {
    let app = t.app();
    let r = ingest(&app, &t.operator_token, &day_batch("s1", 1)).await;
    assert_eq!(r.status, 403);
    t.assert_untouched("s1").await;
}

async fn a_site_token_cannot_use_the_query_api(t: TestDb) {
    let app = t.app();
    ingest(&app, &t.site_token, &day_batch("s1", 1)).await;
    for uri in [
        "/api/v1/sites",
        "/api/v1/sites/s1/meters",
        "/api/v1/sites/s1/meters/m0/readings",
        "/api/v1/sites/s1/health",
        "/api/v1/sites/s1/commands",
        "/api/v1/config",
    ] {
        let r = call(&app, get(Some(&t.site_token), uri)).await;
        assert_eq!(r.status, 403, "{uri}");
    }
    let r = call(
        &app,
        post_json(
            Some(&t.site_token),
            "/api/v1/sites/s1/commands",
            &json!({"meter": "m0", "action": {"type": "read_now"}}),
        ),
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(t.db.commands("s1").await.unwrap().is_empty(), "a command was queued");
}

async fn operator_tokens_work_as_bearer_or_cookie(t: TestDb) {
    let app = t.app();
    let r = call(&app, get(Some(&t.operator_token), "/api/v1/sites")).await;
    assert_eq!(r.status, 200);
    let names: Vec<_> = r.json().as_array().unwrap().iter().map(|s| s["site"].as_str().unwrap().to_owned()).collect();
    assert_eq!(names, ["s1", "s2"]);
    let req = axum::http::Request::get("/api/v1/sites")
        .header("cookie", format!("theme=dark; ami_session={}", t.operator_token))
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(call(&app, req).await.status, 200);
    // A site token in the cookie is still a site token.
    let req = axum::http::Request::get("/api/v1/sites")
        .header("cookie", format!("ami_session={}", t.site_token))
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(call(&app, req).await.status, 403);
}

both_backends!(
    requests_without_a_valid_token_get_401_and_write_nothing,
    a_site_token_cannot_write_another_sites_meters,
    an_operator_token_cannot_ingest,
    a_site_token_cannot_use_the_query_api,
    operator_tokens_work_as_bearer_or_cookie,
);

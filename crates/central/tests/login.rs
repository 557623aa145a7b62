//! The dashboard's login: an operator token posted to /login becomes an HttpOnly session cookie that
//! opens the app and the API; anything else keeps the login page; /logout clears the cookie.

mod common;

use axum::body::Body;
use axum::http::{header, Request};
use common::*;

fn login(token: &str) -> Request<Body> {
    Request::post("/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!("token={token}")))
        .unwrap()
}

fn with_cookie(uri: &str, cookie: &str) -> Request<Body> {
    Request::get(uri).header(header::COOKIE, cookie).body(Body::empty()).unwrap()
}

async fn an_operator_login_sets_a_session_cookie_that_opens_the_dashboard(t: TestDb) {
    let app = t.app();
    // No session: the login page.
    let r = call(&app, get(None, "/")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), ami_central::assets::LOGIN_HTML);

    let r = call(&app, login(&t.operator_token)).await;
    assert_eq!(r.status, 303);
    assert_eq!(r.headers[header::LOCATION], "/");
    let set = r.headers[header::SET_COOKIE].to_str().unwrap().to_owned();
    assert!(set.starts_with(&format!("ami_session={};", t.operator_token)), "{set}");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set} lacks {attr}");
    }
    let cookie = set.split(';').next().unwrap().to_owned();

    let r = call(&app, with_cookie("/", &cookie)).await;
    assert_eq!(r.text(), ami_central::assets::DASHBOARD_HTML);
    assert!(r.headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    let r = call(&app, with_cookie("/api/v1/sites", &cookie)).await;
    assert_eq!(r.status, 200);

    let r = call(&app, with_cookie("/logout", &cookie)).await;
    assert_eq!(r.status, 303);
    let cleared = r.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(cleared.starts_with("ami_session=;") && cleared.contains("Max-Age=0"), "{cleared}");
}

async fn a_wrong_or_site_token_does_not_log_in(t: TestDb) {
    let app = t.app();
    for token in ["0".repeat(64), t.site_token.clone(), String::new(), "%3Cscript%3E".into()] {
        let r = call(&app, login(&token)).await;
        assert_eq!(r.status, 401, "{token}");
        let set = r.headers.get(header::SET_COOKIE).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        assert!(!set.contains(&t.site_token) && (set.is_empty() || set.contains("Max-Age=0")), "{set}");
        assert!(r.text().contains("Invalid or revoked operator token"), "{}", r.text());
    }
    // A site token in the cookie does not open the dashboard.
    let r = call(&app, with_cookie("/", &format!("ami_session={}", t.site_token))).await;
    assert_eq!(r.text(), ami_central::assets::LOGIN_HTML);
    // Not a form at all.
    let r = call(&app, Request::post("/login").body(Body::from("{}")).unwrap()).await;
    assert_eq!(r.status, 401);
}

async fn assets_are_served_with_their_content_types(t: TestDb) {
    let app = t.app();
    for (file, mime) in [
        ("app.js", "text/javascript"),
        ("style.css", "text/css"),
        ("dashboard.html", "text/html"),
        ("login.html", "text/html"),
    ] {
        let r = call(&app, get(None, &format!("/assets/{file}"))).await;
        assert_eq!(r.status, 200, "{file}");
        assert!(r.headers[header::CONTENT_TYPE].to_str().unwrap().starts_with(mime), "{file}");
        assert_eq!(r.body, ami_central::assets::lookup(file).unwrap().0.as_bytes());
    }
    assert_eq!(call(&app, get(None, "/assets/..%2Fsrc%2Flib.rs")).await.status, 404);
    assert_eq!(call(&app, get(None, "/assets/secret.txt")).await.status, 404);
    assert_eq!(call(&app, get(None, "/no/such/page")).await.status, 404);
}

both_backends!(
    an_operator_login_sets_a_session_cookie_that_opens_the_dashboard,
    a_wrong_or_site_token_does_not_log_in,
    assets_are_served_with_their_content_types,
);

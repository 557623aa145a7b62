//! HTTPS: `ServerConfig::tls` serves the API over rustls; a client that trusts the (self-signed)
//! certificate ingests and queries, a client that does not is refused at the handshake.

mod common;

use ami_central::{Db, ServerConfig};
use common::*;

#[tokio::test]
async fn https_with_a_self_signed_certificate_serves_ingest_and_queries() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert_pem = ck.cert.pem();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, &cert_pem).unwrap();
    std::fs::write(&key_path, ck.signing_key.serialize_pem()).unwrap();

    let db = Db::connect(&format!("sqlite:{}", dir.path().join("c.db").display())).await.unwrap();
    let site = db.add_site_token("s1").await.unwrap();
    let operator = db.add_operator_token("ops").await.unwrap();
    let cfg = ServerConfig { tls: Some((cert_path, key_path)), ..ServerConfig::default() };
    let (addr, task) = ami_central::spawn(db, cfg).await.unwrap();

    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let base = format!("https://localhost:{}", addr.port());
    let ok = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "ok");

    let r = client
        .post(format!("{base}{}", ami_wire::INGEST_PATH))
        .bearer_auth(&site)
        .header("content-encoding", "gzip")
        .body(ami_wire::encode_gzip(&day_batch("s1", 1)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let resp: ami_wire::IngestResponse = r.json().await.unwrap();
    assert_eq!(resp.inserted, 192);
    let sites: serde_json::Value =
        client.get(format!("{base}/api/v1/sites")).bearer_auth(&operator).send().await.unwrap().json().await.unwrap();
    assert_eq!(sites[0]["readings"], 192);

    // The login cookie is marked Secure over HTTPS.
    let no_redirect = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirect.post(format!("{base}/login")).form(&[("token", operator.as_str())]).send().await.unwrap();
    let set = r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect::<Vec<_>>();
    assert!(set.iter().any(|c| c.contains("; Secure")), "{set:?}");

    // A client with only the public roots does not trust the certificate.
    let strict = reqwest::Client::builder().use_rustls_tls().build().unwrap();
    assert!(strict.get(format!("{base}/healthz")).send().await.is_err());
    task.abort();
}

#[tokio::test]
async fn missing_certificate_files_are_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!("sqlite:{}", dir.path().join("c.db").display())).await.unwrap();
    let cfg = ServerConfig {
        tls: Some((dir.path().join("nope.pem"), dir.path().join("key.pem"))),
        ..ServerConfig::default()
    };
    let err = ami_central::spawn(db, cfg).await.unwrap_err();
    assert!(matches!(err, ami_central::ServeError::Tls(_)), "{err}");
    assert!(err.to_string().contains("nope.pem"), "{err}");
}

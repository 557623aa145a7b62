//! The store under concurrency and across restarts: a batch sent several times at once is stored
//! exactly once, migrations run once, and a database from a newer ami-central is refused.

mod common;

use ami_central::Db;
use common::*;

async fn the_same_batch_sent_concurrently_is_stored_exactly_once(t: TestDb) {
    let app = t.app();
    let batch = day_batch("s1", 5);
    let n = batch.readings() as u64;
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let app = app.clone();
        let token = t.site_token.clone();
        let batch = batch.clone();
        tasks.push(tokio::spawn(async move { ingest(&app, &token, &batch).await }));
    }
    let mut inserted = 0;
    for task in tasks {
        let r = task.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        inserted += r.json()["inserted"].as_u64().unwrap();
    }
    assert_eq!(inserted, n, "inserted counts add up to the batch exactly once");
    assert_eq!(t.stored_readings("s1").await, n);
    let sites = t.db.sites().await.unwrap();
    assert_eq!(sites.iter().find(|s| s.site == "s1").unwrap().readings, n);
    // Several sites at once do not block each other into errors.
    let mut tasks = Vec::new();
    for (site, token) in [("s1", t.site_token.clone()), ("s2", t.other_site_token.clone())] {
        let app = app.clone();
        let mut b = day_batch(site, 2);
        for s in &mut b.series {
            for p in &mut s.points {
                p.t += 86_400_000;
            }
        }
        tasks.push(tokio::spawn(async move { ingest(&app, &token, &b).await }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().status, 200);
    }
}

async fn reopening_a_store_keeps_its_data_and_tokens(t: TestDb) {
    let app = t.app();
    ingest(&app, &t.site_token, &day_batch("s1", 1)).await;
    let again = Db::connect(&t.url).await.unwrap();
    assert_eq!(again.series("s1").await.unwrap().len(), 2);
    assert_eq!(again.list_tokens().await.unwrap().len(), 3);
    assert!(again.authenticate(&t.operator_token).await.unwrap().is_some());
}

async fn a_store_migrated_by_a_newer_version_is_refused(t: TestDb) {
    let now = 0i64;
    match t.backend {
        Backend::Sqlite => {
            let path = t.url.trim_start_matches("sqlite:");
            let conn = rusqlite::Connection::open(path).unwrap();
            conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (99, ?1)", [now]).unwrap();
        }
        Backend::Postgres => {
            let (client, conn) = tokio_postgres::connect(&t.url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            client.execute("INSERT INTO schema_version (version, applied_at) VALUES (99, $1)", &[&now]).await.unwrap();
        }
    }
    let err = Db::connect(&t.url).await.unwrap_err();
    assert!(matches!(err, ami_central::DbError::SchemaTooNew { found: 99, .. }), "{err}");
}

both_backends!(
    the_same_batch_sent_concurrently_is_stored_exactly_once,
    reopening_a_store_keeps_its_data_and_tokens,
    a_store_migrated_by_a_newer_version_is_refused,
);

/// When the test server speaks TLS (Debian's default: `ssl = on` with the snakeoil certificate for
/// `localhost`), `sslmode=require` connects over rustls and verifies the certificate: trusted with
/// `sslrootcert`, refused with the public roots only.
#[tokio::test]
async fn postgres_over_tls_verifies_the_server_certificate() {
    let Some((url, _guard)) = fresh_postgres().await else { return };
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let ssl: String = client.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    let cert: String = client.query_one("SHOW ssl_cert_file", &[]).await.unwrap().get(0);
    if ssl != "on" || std::fs::metadata(&cert).is_err() {
        eprintln!("the test server does not serve TLS with a readable certificate; nothing to check");
        return;
    }
    let local = url.replace("@127.0.0.1:", "@localhost:");
    let trusted = format!("{local}&sslmode=require&sslrootcert={cert}");
    let db = Db::connect(&trusted).await.unwrap_or_else(|e| panic!("{trusted}: {e}"));
    db.add_site_token("tls-site").await.unwrap();
    let untrusted = format!("{local}&sslmode=require");
    let err = Db::connect(&untrusted).await.unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
}

//! The `ami-central` command line: tokens are printed once and never listed, bad input exits 2,
//! `serve` answers on the address it reports.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_ami-central");

fn run(args: &[&str], db: &str) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).env("AMI_CENTRAL_DB", db).env_remove("RUST_LOG").output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn token_add_prints_the_secret_once_and_list_never_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("c.db").display());
    let (code, site_token, err) = run(&["token", "add", "substation-4"], &db);
    assert_eq!(code, 0, "{err}");
    let site_token = site_token.trim().to_owned();
    assert_eq!(site_token.len(), 64);
    assert!(err.contains("shown only this once"), "{err}");
    // --db on the command line works as well as the environment.
    let out = Command::new(BIN).args(["token", "add", "--operator", "alice", "--db", &db]).output().unwrap();
    assert!(out.status.success());
    let operator_token = String::from_utf8_lossy(&out.stdout).trim().to_owned();

    let (code, list, _) = run(&["token", "list"], &db);
    assert_eq!(code, 0);
    assert!(list.contains("substation-4") && list.contains("alice") && list.contains("operator"), "{list}");
    assert!(!list.contains(&site_token) && !list.contains(&operator_token), "secret listed:\n{list}");
    // The database holds only hashes.
    let raw = std::fs::read(dir.path().join("c.db")).unwrap();
    let wal = std::fs::read(dir.path().join("c.db-wal")).unwrap_or_default();
    for bytes in [&raw, &wal] {
        assert!(!bytes.windows(64).any(|w| w == site_token.as_bytes()), "token stored in clear");
    }

    let (code, _, _) = run(&["token", "revoke", "1"], &db);
    assert_eq!(code, 0);
    let (_, list, _) = run(&["token", "list"], &db);
    let line = list.lines().find(|l| l.contains("substation-4")).unwrap();
    assert!(!line.trim_end().ends_with('-'), "not shown as revoked: {line}");
}

#[test]
fn bad_input_exits_with_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("c.db").display());
    for (args, db, why) in [
        (vec!["token", "add", "bad site"], db.as_str(), "bad site id"),
        (vec!["token", "add"], db.as_str(), "no site"),
        (vec!["token", "revoke", "42"], db.as_str(), "unknown token"),
        (vec!["token", "list"], "mysql://x", "bad URL"),
        (
            vec!["serve", "--listen", "127.0.0.1:0", "--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"],
            db.as_str(),
            "missing cert",
        ),
        (vec!["serve", "--listen", "nowhere"], db.as_str(), "bad address"),
        (vec!["serve", "--tls-cert", "/x.pem"], db.as_str(), "cert without key"),
    ] {
        let (code, _, err) = run(&args, db);
        assert_eq!(code, 2, "{why}: {err}");
        assert!(!err.is_empty(), "{why}: no message");
    }
    let out = Command::new(BIN).args(["token", "list"]).env_remove("AMI_CENTRAL_DB").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "no --db");
    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("serve"));
}

#[test]
fn serve_reports_its_address_and_answers_there() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("c.db").display());
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--db", &db])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut url = None;
    for line in BufReader::new(stderr).lines().take(50) {
        let line = line.unwrap();
        if let Some(i) = line.find("dashboard at http://") {
            let rest = &line[i + "dashboard at ".len()..];
            url = Some(rest.split_whitespace().next().unwrap().to_owned());
            break;
        }
    }
    let url = url.expect("serve did not report its address");
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    use std::io::{Read, Write};
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    stream.read_to_string(&mut resp).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with("ok"), "{resp}");
}

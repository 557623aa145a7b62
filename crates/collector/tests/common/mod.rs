//! Shared helpers for amid's integration tests: the amid binary, the pymodbus peer, pty pairs, free ports.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// The amid binary built for this test run.
pub fn amid() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_amid"));
    c.env("AMI_DEVICES_DIR", repo().join("devices"));
    c
}

/// The Python with pymodbus 3.16.1: $AMI_PYTHON, else the repo's .venv. Panics with advice when missing,
/// so a peer test can never pass by not running.
pub fn python() -> PathBuf {
    let p = std::env::var_os("AMI_PYTHON").map(PathBuf::from).unwrap_or_else(|| repo().join(".venv/bin/python"));
    assert!(p.exists(), "no Python with pymodbus at {}: run ./tests/run.sh (it creates .venv)", p.display());
    p
}

/// A TCP port free right now on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child process killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until the child prints a line containing `needle` on stdout (max 20 s).
pub fn wait_for_line(child: &mut Child, needle: &str) {
    let out = child.stdout.take().expect("stdout piped");
    let (tx, rx) = std::sync::mpsc::channel();
    let needle = needle.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line.contains(&needle) {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20)).expect("peer did not become ready in 20 s");
}

/// Starts the pymodbus slave with the registers in `data` (JSON, see tests/peers/pymodbus_slave.py).
pub fn pymodbus_slave(dir: &Path, data: &serde_json::Value, args: &[&str]) -> Proc {
    let json = dir.join(format!("regs-{}.json", free_port()));
    std::fs::write(&json, data.to_string()).unwrap();
    let mut child = Command::new(python())
        .arg(repo().join("tests/peers/pymodbus_slave.py"))
        .arg("--data")
        .arg(&json)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start pymodbus slave");
    wait_for_line(&mut child, "READY");
    Proc(child)
}

/// Waits until a TCP port accepts connections (max 10 s).
pub fn wait_port(port: u16) {
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t0.elapsed() < Duration::from_secs(10), "port {port} never opened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A virtual serial pair made by socat: returns the process and the two device paths.
pub fn pty_pair(dir: &Path) -> (Proc, PathBuf, PathBuf) {
    let a = dir.join("ttyA");
    let b = dir.join("ttyB");
    let child = Command::new("socat")
        .arg("-d")
        .arg(format!("pty,raw,echo=0,link={}", a.display()))
        .arg(format!("pty,raw,echo=0,link={}", b.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("socat is needed for pty tests (./tests/run.sh installs it)");
    let t0 = Instant::now();
    while !(a.exists() && b.exists()) {
        assert!(t0.elapsed() < Duration::from_secs(10), "socat did not create the pty pair");
        std::thread::sleep(Duration::from_millis(20));
    }
    (Proc(child), a, b)
}

/// Parses `amid read --format json` output into (name → JSON object).
pub fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

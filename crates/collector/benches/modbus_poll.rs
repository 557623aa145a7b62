//! The concentrator's own cost per transaction: Modbus TCP polls per second and CPU time per poll against
//! a zero-delay loopback slave (`amid simulate` serving the Eastron SDM630 profile in its own process), for
//! ami and, as the baseline in the same run, for a pymodbus 3.16.1 client doing the same reads.
//!
//! A poll is one full read of the profile: every planned block (one request each) and every value decoded.
//!
//! Run: `cargo bench -p ami-collector --bench modbus_poll` (after `./tests/run.sh` made `.venv`).
//! Options via env: AMI_BENCH_POLLS (default 2000).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ami_device::modbus::{plan_modbus, read_modbus};
use ami_link::{Bus, BusConfig};
use ami_protocols::modbus::plan::Table;
use ami_protocols::modbus::{Framing, Master};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repo root")
}

/// CPU time (user + system) of this process so far, from /proc/self/stat (clock ticks of 10 ms).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    // After the comm field: state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime
    // stime (proc(5)): utime and stime are the 12th and 13th fields after the comm.
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

struct Killer(std::process::Child);
impl Drop for Killer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    let polls: usize = std::env::var("AMI_BENCH_POLLS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let devices = repo().join("devices");
    let profile = ami_device::load_profile(&devices.join("eastron-sdm630.xml")).expect("sdm630 profile");
    let plan = plan_modbus(&profile);

    // The slave: `amid simulate` in its own process, so its CPU is not counted as ours.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut sim = Command::new(env!("CARGO_BIN_EXE_amid"))
        .args(["simulate", "--profile", "eastron-sdm630", "--listen", &format!("tcp://127.0.0.1:{port}")])
        .env("AMI_DEVICES_DIR", &devices)
        .env("AMI_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start amid simulate");
    let out = sim.stdout.take().expect("piped stdout");
    let _sim = Killer(sim);
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).expect("simulator banner");

    // ami: one Bus (as the daemon has per line), one Master, read_modbus per poll.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (ami_wall, ami_cpu, values) = rt.block_on(async {
        let url = format!("tcp://127.0.0.1:{port}").parse().unwrap();
        let transport = ami_media::open(&url).await.expect("connect");
        let bus = Bus::spawn(transport, BusConfig { guard_time: Duration::ZERO, ..BusConfig::default() });
        let master = Master::new(bus, Framing::Tcp);
        let mut values = 0;
        for _ in 0..50 {
            read_modbus(&profile, &master, "bench", 1, chrono::Utc::now).await.expect("warm-up read");
        }
        let (w0, c0) = (Instant::now(), cpu_time());
        for _ in 0..polls {
            let r = read_modbus(&profile, &master, "bench", 1, chrono::Utc::now).await.expect("read");
            assert!(r.errors.is_empty(), "{:?}", r.errors);
            values += r.readings.len();
        }
        (w0.elapsed(), cpu_time() - c0, values)
    });

    // Baseline: pymodbus client, same blocks, same slave.
    let blocks: Vec<String> = plan
        .blocks
        .iter()
        .map(|b| {
            let t = if b.table == Table::Input { "input" } else { "holding" };
            format!("{t}:{}:{}", b.address, b.count)
        })
        .collect();
    let python = std::env::var_os("AMI_PYTHON").map(PathBuf::from).unwrap_or_else(|| repo().join(".venv/bin/python"));
    let py_polls = (polls / 4).max(100);
    let out = Command::new(&python)
        .arg(repo().join("tests/peers/pymodbus_client_bench.py"))
        .args(["--port", &port.to_string(), "--polls", &py_polls.to_string(), "--blocks", &blocks.join(",")])
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e} (./tests/run.sh creates .venv)", python.display()));
    assert!(out.status.success(), "pymodbus baseline failed: {}", String::from_utf8_lossy(&out.stderr));
    let py: serde_json::Value = serde_json::from_slice(&out.stdout).expect("baseline JSON");
    let py_wall = py["wall_s"].as_f64().unwrap();
    let py_cpu = py["cpu_s"].as_f64().unwrap();

    let tx = plan.blocks.len();
    let ami_pps = polls as f64 / ami_wall.as_secs_f64();
    let py_pps = py_polls as f64 / py_wall;
    let ami_cpu_us = ami_cpu.as_secs_f64() * 1e6 / polls as f64;
    let py_cpu_us = py_cpu * 1e6 / py_polls as f64;
    println!("modbus_poll: Eastron SDM630 profile, {tx} requests per poll, {} values per poll", values / polls);
    println!(
        "{:<10} {:>8} {:>12} {:>14} {:>16} {:>18}",
        "client", "polls", "polls/s", "transactions/s", "CPU µs/poll", "CPU µs/transaction"
    );
    for (name, n, pps, cpu) in [("ami", polls, ami_pps, ami_cpu_us), ("pymodbus", py_polls, py_pps, py_cpu_us)] {
        println!("{name:<10} {n:>8} {pps:>12.0} {:>14.0} {cpu:>16.1} {:>18.1}", pps * tx as f64, cpu / tx as f64);
    }
    println!("ratio ami/pymodbus: {:.1}x polls/s, {:.1}x less CPU per poll", ami_pps / py_pps, py_cpu_us / ami_cpu_us);
}

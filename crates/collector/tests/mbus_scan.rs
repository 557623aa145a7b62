//! `amid scan --protocol mbus` finds every meter on a simulated 30-meter M-Bus line, by primary address and
//! by secondary search (including ids that share leading digits).

mod common;

use std::sync::{Arc, Mutex};

use ami_sim::mbus::{spawn_mbus_tcp, MbusFaults, MbusLine, MbusMeterSpec};
use common::*;

fn line() -> (Vec<u32>, MbusLine) {
    let mut ids: Vec<u32> = (0..10).map(|i| 12_345_670 + i).collect(); // share 7 leading digits
    ids.extend((0..10).map(|i| 12_340_000 + i * 11)); // share 4
    ids.extend((0..9).map(|i| 70_000_000 + i * 1_000_001));
    ids.push(99_999_999);
    let specs: Vec<MbusMeterSpec> = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            let primary = u8::try_from(i + 1).unwrap();
            match i % 3 {
                0 => MbusMeterSpec::heat_meter(primary, id),
                1 => MbusMeterSpec::water_meter(primary, id),
                _ => MbusMeterSpec::electricity_meter(primary, id),
            }
        })
        .collect();
    (ids, MbusLine::with_meters(specs).unwrap())
}

fn scan(addr: std::net::SocketAddr, extra: &[&str]) -> Vec<serde_json::Value> {
    let out = amid()
        .args(["scan", "--protocol", "mbus", "--media", &format!("tcp://{addr}"), "--format", "json"])
        .args(["--timeout", "60ms"])
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    json_lines(&out.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_finds_all_30_meters_by_primary_address() {
    let (ids, line) = line();
    let (addr, _task) = spawn_mbus_tcp("127.0.0.1:0", Arc::new(Mutex::new(line)), MbusFaults::default()).await.unwrap();
    let found = tokio::task::spawn_blocking(move || scan(addr, &["--to", "40"])).await.unwrap();
    let addresses: Vec<String> = found.iter().map(|m| m["address"].as_str().unwrap().to_string()).collect();
    let want: Vec<String> = (1..=30).map(|a: u32| a.to_string()).collect();
    assert_eq!(addresses, want);
    let mut got_ids: Vec<String> = found.iter().map(|m| m["id"].as_str().unwrap().to_string()).collect();
    let mut want_ids: Vec<String> = ids.iter().map(u32::to_string).collect();
    got_ids.sort();
    want_ids.sort();
    assert_eq!(got_ids, want_ids);
    assert!(found.iter().all(|m| m["manufacturer"].as_str().is_some_and(|s| s.len() == 3)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secondary_search_finds_all_30_meters_including_shared_leading_digits() {
    let (ids, line) = line();
    let (addr, _task) = spawn_mbus_tcp("127.0.0.1:0", Arc::new(Mutex::new(line)), MbusFaults::default()).await.unwrap();
    let found = tokio::task::spawn_blocking(move || scan(addr, &["--secondary"])).await.unwrap();
    let mut got: Vec<String> = found.iter().map(|m| m["id"].as_str().unwrap().to_string()).collect();
    got.sort();
    let mut want: Vec<String> = ids.iter().map(|i| format!("{i:08}")).collect();
    want.sort();
    assert_eq!(got, want);
}

//! Gurux's DLMS/COSEM client (gurux-dlms 1.0.203 from PyPI, driven by tests/peers/gurux_dlms_client.py) reads
//! the real `amid simulate --profile generic-iec62056` binary over HDLC-over-TCP, the TCP wrapper and HDLC on a
//! pty pair, as the public client, with the LLS password and with HLS-GMAC and glo-ciphering (keys from flags or
//! from a 0600 secrets file): the energy register, a voltage with scaler and unit, the clock and two hours of
//! load profile, checked against the simulator's model (`ami_sim::dlms::DlmsMeter` with the same seed). Wrong
//! secrets are refused.

mod common;

use std::process::{Output, Stdio};

use ami_sim::dlms::{DlmsMeter, DlmsMeterSpec};
use common::*;
use serde_json::Value;

const SERIAL: u32 = 31_337_042;
const SEED: u64 = 4242;
const PASSWORD: &str = "Cli-Lls-77";
const BLOCK_KEY: &str = "41435449564543415452494E47313233";
const AUTH_KEY: &str = "415554484B45595F5F5F5F5F5F5F3939";
const CLIENT_TITLE: &str = "4755525800000002";
const PERIOD: i64 = 900;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Framing {
    /// HDLC over TCP.
    Hdlc,
    /// The IEC 62056-47 wrapper over TCP.
    Wrapper,
    /// HDLC on a pty pair (socat): the simulator on one end, Gurux on the other.
    Pty,
}

/// Where Gurux finds the simulator: a TCP port, or the pty end (and the socat process keeping the pair).
enum Target {
    Port(u16),
    Pty { _socat: Proc, path: std::path::PathBuf },
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Secrets {
    /// --password / --block-key / --auth-key on the command line.
    Flags,
    /// The same in a secrets file (`[meter.ID]` table, mode 0600) named by --secrets.
    File,
}

/// The model the simulator serves: its history depends only on the seed and absolute time.
fn model() -> DlmsMeter {
    DlmsMeter::new(DlmsMeterSpec { seed: SEED, ..DlmsMeterSpec::for_serial(SERIAL) })
}

/// Starts `amid simulate` for the generic IEC 62056 meter on a free port (or a pty pair in `dir`); returns it
/// and where Gurux finds it.
fn simulate(framing: Framing, secrets: Secrets, clock_offset: &str, dir: &std::path::Path) -> (Proc, Target) {
    let (listen, target) = match framing {
        Framing::Hdlc => {
            let port = free_port();
            (format!("tcp://127.0.0.1:{port}"), Target::Port(port))
        }
        Framing::Wrapper => {
            let port = free_port();
            (format!("tcp://127.0.0.1:{port}?framing=wrapper"), Target::Port(port))
        }
        Framing::Pty => {
            let (socat, a, b) = pty_pair(dir);
            (format!("serial://{}?baud=9600", b.display()), Target::Pty { _socat: socat, path: a })
        }
    };
    let mut cmd = amid();
    cmd.args(["simulate", "--profile", "generic-iec62056", "--listen", &listen]);
    cmd.args(["--serial", &SERIAL.to_string(), "--seed", &SEED.to_string()]);
    cmd.arg(format!("--clock-offset={clock_offset}"));
    match secrets {
        Secrets::Flags => {
            cmd.args(["--password", PASSWORD, "--block-key", BLOCK_KEY, "--auth-key", AUTH_KEY]);
        }
        Secrets::File => {
            let path = dir.join("secrets.toml");
            std::fs::write(
                &path,
                format!(
                    "[meter.sim]\npassword = \"{PASSWORD}\"\nblock_cipher_key = \"{BLOCK_KEY}\"\n\
                     authentication_key = \"{AUTH_KEY}\"\n"
                ),
            )
            .unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            cmd.arg("--secrets").arg(&path);
        }
    }
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
    wait_for_line(&mut child, "simulating");
    (Proc(child), target)
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Auth {
    None,
    Low,
    HighGmac,
}

/// Runs the Gurux client against the simulator at `target` with `auth` (and the right secrets unless `extra`
/// overrides them; argparse takes the last value).
fn gurux(target: &Target, framing: Framing, auth: Auth, extra: &[String]) -> Output {
    let spec = DlmsMeterSpec::for_serial(SERIAL);
    let mut cmd = std::process::Command::new(python());
    cmd.arg(repo().join("tests/peers/gurux_dlms_client.py")).args(["--timeout", "5"]);
    match target {
        Target::Port(port) => cmd.args(["--port", &port.to_string()]),
        Target::Pty { path, .. } => cmd.arg("--serial").arg(path),
    };
    match framing {
        // The default HDLC server address: logical 1, physical 0x10 + serial % 100.
        Framing::Hdlc | Framing::Pty => {
            cmd.args(["--framing", "hdlc", "--server-address"]).arg(format!("1/{}", spec.server_physical))
        }
        Framing::Wrapper => cmd.args(["--framing", "wrapper", "--server-address", "1"]),
    };
    match auth {
        Auth::None => cmd.args(["--client-address", "16", "--auth", "none"]),
        Auth::Low => cmd.args(["--client-address", "32", "--auth", "low", "--password", PASSWORD]),
        Auth::HighGmac => cmd
            .args(["--client-address", "48", "--auth", "high-gmac", "--system-title", CLIENT_TITLE])
            .args(["--block-key", BLOCK_KEY, "--auth-key", AUTH_KEY]),
    };
    cmd.args(extra).output().expect("start the Gurux client script")
}

/// Civil UTC time of `unix` as ISO 8601 (via chrono).
fn iso(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0).unwrap().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn system_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Reads register, voltage, clock and the 2 h of profile starting 5 h before the meter's last boundary, and
/// checks them against the model; `offset_s` is the simulator's clock offset.
fn reads_everything(framing: Framing, auth: Auth, secrets: Secrets, offset: &str, offset_s: i64) {
    let dir = tempfile::tempdir().unwrap();
    let (_sim, target) = simulate(framing, secrets, offset, dir.path());
    let model = model();
    let start = (system_now() + offset_s).div_euclid(PERIOD) * PERIOD - 5 * 3600;
    let args: Vec<String> = [
        "--read",
        "1-0:1.8.0:3",
        "--read",
        "1-0:32.7.0:3",
        "--clock",
        "--profile",
        "1-0:99.1.0",
        "--from",
        &iso(start),
        // Two hours [start, start + 2 h): the range is inclusive at both ends, so it ends 1 s before.
        "--to",
        &iso(start + 2 * 3600 - 1),
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    let before = system_now() + offset_s;
    let out = gurux(&target, framing, auth, &args);
    let after = system_now() + offset_s;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{framing:?} {auth:?}: the Gurux client failed: {stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stderr}"));

    // 1-0:1.8.0: whole Wh of the model at the moment of the read, which lies between `before` and `after`
    // (meter time); the model is monotonic, so the value lies between its values at those instants.
    let e = &v["registers"]["1-0:1.8.0"];
    assert_eq!((e["scaler"].as_i64(), e["unit_symbol"].as_str()), (Some(0), Some("Wh")), "{e}");
    let wh = e["value"].as_f64().unwrap();
    let (lo, hi) = (model.register_values(before).0, model.register_values(after).0);
    assert!(f64::from(lo) <= wh && wh <= f64::from(hi), "1.8.0 = {wh} Wh, model {lo}..={hi}");

    let u = &v["registers"]["1-0:32.7.0"];
    assert_eq!((u["scaler"].as_i64(), u["unit"].as_i64(), u["unit_symbol"].as_str()), (Some(-1), Some(35), Some("V")));
    let volts = u["value"].as_f64().unwrap();
    assert!((200.0..=260.0).contains(&volts), "voltage {volts} V");

    let clock = v["clock"]["unix"].as_i64().unwrap();
    assert!((before - 1..=after + 1).contains(&clock), "clock {clock}, meter time {before}..{after}");

    let rows = v["profile"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 8, "{rows:?}");
    for (i, row) in rows.iter().enumerate() {
        let t = start + i as i64 * PERIOD;
        let (import, export) = model.register_values(t);
        let got: Vec<i64> = row.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect();
        assert_eq!(got, [t, i64::from(import), i64::from(export)], "row {i} at {}", iso(t));
    }
}

#[test]
fn gurux_reads_amid_simulate_over_hdlc_as_the_public_client() {
    reads_everything(Framing::Hdlc, Auth::None, Secrets::Flags, "0", 0);
}

#[test]
fn gurux_reads_amid_simulate_over_hdlc_with_a_password() {
    reads_everything(Framing::Hdlc, Auth::Low, Secrets::Flags, "0", 0);
}

#[test]
fn gurux_reads_amid_simulate_over_hdlc_with_hls_gmac_keys_from_a_secrets_file() {
    reads_everything(Framing::Hdlc, Auth::HighGmac, Secrets::File, "0", 0);
}

#[test]
fn gurux_reads_amid_simulate_over_the_wrapper_as_the_public_client() {
    reads_everything(Framing::Wrapper, Auth::None, Secrets::Flags, "0", 0);
}

#[test]
fn gurux_reads_amid_simulate_over_the_wrapper_with_a_password_from_a_secrets_file() {
    reads_everything(Framing::Wrapper, Auth::Low, Secrets::File, "0", 0);
}

/// The meter's clock is a day behind: the clock and the profile's timestamps are the meter's own.
#[test]
fn gurux_reads_amid_simulate_over_the_wrapper_with_hls_gmac_from_a_meter_a_day_behind() {
    reads_everything(Framing::Wrapper, Auth::HighGmac, Secrets::Flags, "-1d", -86_400);
}

/// HDLC on a serial line: a pty pair stands in for the optical probe's cable (no mode E opening).
#[test]
fn gurux_reads_amid_simulate_over_hdlc_on_a_pty_with_hls_gmac() {
    reads_everything(Framing::Pty, Auth::HighGmac, Secrets::Flags, "0", 0);
}

#[test]
fn amid_simulate_refuses_gurux_with_a_wrong_password_or_wrong_keys() {
    let dir = tempfile::tempdir().unwrap();
    for framing in [Framing::Hdlc, Framing::Wrapper] {
        let (_sim, target) = simulate(framing, Secrets::Flags, "0", dir.path());
        let read = ["--read", "1-0:1.8.0:3"].map(String::from);
        let cases: [(Auth, Vec<String>); 3] = [
            (Auth::Low, vec!["--password".into(), "00000000".into()]),
            (Auth::HighGmac, vec!["--block-key".into(), "000102030405060708090A0B0C0D0E0F".into()]),
            (Auth::HighGmac, vec!["--auth-key".into(), "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF".into()]),
        ];
        for (auth, wrong) in cases {
            let args: Vec<String> = read.iter().cloned().chain(wrong.iter().cloned()).collect();
            let out = gurux(&target, framing, auth, &args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{framing:?} {wrong:?} accepted: {stderr}");
            assert!(out.stdout.is_empty() && stderr.contains("gurux client:"), "{framing:?} {wrong:?}: {stderr}");
        }
        // The right secrets still work on the same simulator afterwards (the refusals did not wedge it).
        let ok = gurux(&target, framing, Auth::HighGmac, &["--read".into(), "1-0:1.8.0:3".into()]);
        assert!(ok.status.success(), "{framing:?}: {}", String::from_utf8_lossy(&ok.stderr));
    }
}

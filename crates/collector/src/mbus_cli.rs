//! M-Bus on the command line: `amid decode --protocol mbus` explains an RSP_UD telegram; `amid scan
//! --protocol mbus` finds the meters on a line by primary address or by secondary search.

use std::process::ExitCode;
use std::time::Duration;

use ami_link::mbus::{AckMatcher, Frame};
use ami_link::{Bus, BusConfig, BusHandle, Exchange};
use ami_media::{MediaUrl, Parity, SerialSettings};
use ami_protocols::mbus::app::{decode_long_frame, decode_user_data, Medium, RecordValue, Telegram};
use ami_protocols::mbus::client::{read_out, search, ReadOutConfig, SearchConfig, Target};
use anyhow::{anyhow, Context};
use serde_json::json;

use crate::BadInput;

/// The three letters of a packed EN 62056-21 / FLAG manufacturer code.
pub fn manufacturer_letters(code: u16) -> String {
    (0..3).rev().map(|i| char::from(b'@' + u8::try_from((code >> (5 * i)) & 0x1F).unwrap_or(0))).collect()
}

/// M-Bus lines default to 2400 baud 8E1 when the serial URL names no settings.
pub fn mbus_media(url: &MediaUrl) -> MediaUrl {
    match url {
        MediaUrl::Serial { path, explicit: false, .. } => MediaUrl::Serial {
            path: path.clone(),
            settings: SerialSettings { baud: 2400, parity: Parity::Even, data_bits: 8, stop_bits: 1 },
            explicit: false,
        },
        other => other.clone(),
    }
}

/// One meter found by a scan.
struct FoundMeter {
    address: String,
    manufacturer: String,
    medium: String,
    version: u8,
    id: String,
}

async fn scan_primary(bus: &BusHandle, timeout: Duration, from: u8, to: u8) -> Vec<FoundMeter> {
    let mut found = Vec::new();
    for a in from..=to {
        let Ok(request) = Frame::snd_nke(a).encode() else { continue };
        let exchange = Exchange {
            meter: format!("mbus-{a}"),
            request,
            matcher: Some(Box::new(AckMatcher)),
            timeout: Some(timeout),
            retries: Some(1),
        };
        if bus.transact(exchange).await.is_err() {
            continue;
        }
        let config = ReadOutConfig { timeout, reset: false, max_telegrams: 1, ..ReadOutConfig::default() };
        match read_out(bus, &format!("mbus-{a}"), Target::Primary(a), config).await {
            Ok(report) => {
                let header = report
                    .telegrams
                    .first()
                    .and_then(|f| f.encode().ok())
                    .and_then(|bytes| decode_long_frame(&bytes).ok())
                    .map(|t| t.header);
                match header {
                    Some(h) => found.push(FoundMeter {
                        address: a.to_string(),
                        manufacturer: h.manufacturer,
                        medium: h.medium.name(),
                        version: h.version,
                        id: h.id,
                    }),
                    None => found.push(FoundMeter {
                        address: a.to_string(),
                        manufacturer: "?".into(),
                        medium: "?".into(),
                        version: 0,
                        id: "?".into(),
                    }),
                }
            }
            Err(e) => tracing::warn!(address = a, "answers SND_NKE but its RSP_UD could not be read: {e}"),
        }
    }
    found
}

/// `amid scan --protocol mbus`.
pub async fn scan(
    media: &MediaUrl,
    secondary: bool,
    timeout: Duration,
    range: (u8, u8),
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let media = mbus_media(media);
    let transport = ami_media::open(&media).await.with_context(|| format!("cannot open {media}"))?;
    let bus = Bus::spawn(transport, BusConfig { id: "scan".into(), timeout, retries: 0, ..BusConfig::default() });
    let found = if secondary {
        let config = SearchConfig { timeout, ..SearchConfig::default() };
        let report = search(&bus, "scan", config).await.map_err(|e| anyhow!("secondary search on {media}: {e}"))?;
        for (mask, reason) in &report.unresolved {
            eprintln!("warning: unresolved {mask:?}: {reason}");
        }
        eprintln!("{} selection probes", report.probes);
        report
            .found
            .iter()
            .map(|(id, primary)| FoundMeter {
                address: primary.to_string(),
                manufacturer: manufacturer_letters(id.manufacturer),
                medium: Medium::from(id.medium).name(),
                version: id.version,
                id: id.id_digits(),
            })
            .collect()
    } else {
        scan_primary(&bus, timeout, range.0, range.1).await
    };
    if as_json {
        for m in &found {
            println!(
                "{}",
                json!({"address": m.address, "id": m.id, "manufacturer": m.manufacturer, "medium": m.medium, "version": m.version})
            );
        }
    } else {
        println!(
            "{:<8} {:<10} {:<5} {:<28} {:>7}",
            if secondary { "A-FIELD" } else { "ADDRESS" },
            "ID",
            "MAN",
            "MEDIUM",
            "VERSION"
        );
        for m in &found {
            println!("{:<8} {:<10} {:<5} {:<28} {:>7}", m.address, m.id, m.manufacturer, m.medium, m.version);
        }
        println!("{} meter(s) found on {media}", found.len());
    }
    Ok(ExitCode::SUCCESS)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(" ")
}

fn value_json(v: &RecordValue) -> (serde_json::Value, Option<String>) {
    match v {
        RecordValue::Number(n) => (json!(n), None),
        RecordValue::Text(t) | RecordValue::Date(t) | RecordValue::DateTime(t) => (json!(t), None),
        RecordValue::Raw(b) => (serde_json::Value::Null, Some(hex(b))),
    }
}

/// Decodes a long frame (`68 L L 68 …`), or bare user data starting with its CI byte.
fn decode_any(bytes: &[u8]) -> Result<Telegram, String> {
    match bytes.first() {
        Some(0x68) => decode_long_frame(bytes).map_err(|e| e.to_string()),
        Some(&ci) => decode_user_data(ci, bytes.get(1..).unwrap_or_default()).map_err(|e| e.to_string()),
        None => Err("empty frame".into()),
    }
}

/// The JSON lines of `amid decode --protocol mbus --format json`: the header, then one object per record.
pub fn json_lines(t: &Telegram) -> Vec<serde_json::Value> {
    let h = &t.header;
    let mut out = vec![json!({
        "id": h.id,
        "manufacturer": h.manufacturer,
        "version": h.version,
        "medium": h.medium.name(),
        "access_number": h.access_number,
        "status": h.status,
        "signature": h.signature,
        "more_records_follow": t.more_records_follow,
    })];
    for r in &t.records {
        let (value, raw) = value_json(&r.value);
        let mut o = json!({
            "function": r.function.name(),
            "storage": r.storage,
            "tariff": r.tariff,
            "subunit": r.subunit,
            "unit": r.unit,
            "quantity": r.quantity,
            "value": value,
            "dif_vif": hex(&r.dif_vif_raw),
        });
        if let (Some(raw), Some(map)) = (raw, o.as_object_mut()) {
            map.insert("raw".into(), json!(raw));
        }
        out.push(o);
    }
    if let Some(m) = &t.manufacturer_data {
        out.push(json!({ "manufacturer_specific": true, "raw": hex(m) }));
    }
    out
}

/// `amid decode --protocol mbus`.
pub fn decode(bytes: &[u8], as_json: bool) -> anyhow::Result<ExitCode> {
    let t = decode_any(bytes).map_err(|e| anyhow!(BadInput(format!("cannot decode M-Bus telegram: {e}"))))?;
    if as_json {
        for l in json_lines(&t) {
            println!("{l}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let h = &t.header;
    println!("M-Bus RSP_UD, {} bytes", bytes.len());
    println!("  id:            {}", h.id);
    println!("  manufacturer:  {}", h.manufacturer);
    println!("  version:       {}", h.version);
    println!("  medium:        {}", h.medium.name());
    println!("  access number: {}", h.access_number);
    println!("  status:        0x{:02X}", h.status);
    println!(
        "  records:       {}{}",
        t.records.len(),
        if t.more_records_follow { " (more records follow)" } else { "" }
    );
    for (i, r) in t.records.iter().enumerate() {
        let v = match &r.value {
            RecordValue::Number(n) => format!("{n} {}", r.unit),
            RecordValue::Text(s) | RecordValue::Date(s) | RecordValue::DateTime(s) => s.clone(),
            RecordValue::Raw(b) => format!("raw {}", hex(b)),
        };
        let mut tags = vec![r.function.name().to_string()];
        if r.storage > 0 {
            tags.push(format!("storage {}", r.storage));
        }
        if r.tariff > 0 {
            tags.push(format!("tariff {}", r.tariff));
        }
        if r.subunit > 0 {
            tags.push(format!("subunit {}", r.subunit));
        }
        println!("  #{i:<3} {:<28} {v:<24} [{}]  DIF/VIF {}", r.quantity, tags.join(", "), hex(&r.dif_vif_raw));
    }
    if let Some(m) = &t.manufacturer_data {
        println!("  manufacturer-specific data ({} bytes): {}", m.len(), hex(m));
    }
    Ok(ExitCode::SUCCESS)
}

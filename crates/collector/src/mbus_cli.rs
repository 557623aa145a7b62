//! M-Bus on the command line: `amid decode --protocol mbus` explains an RSP_UD telegram.

use std::process::ExitCode;

use ami_protocols::mbus::app::{decode_long_frame, decode_user_data, RecordValue, Telegram};
use anyhow::anyhow;
use serde_json::json;

use crate::BadInput;

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

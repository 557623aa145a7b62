//! `amid status`: what the store says about each meter and each line, for an operator at the cabinet.

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{Connection, OpenFlags};

use crate::config::Config;
use crate::run::store_path;

fn when(ms: Option<i64>) -> String {
    ms.and_then(|ms| Utc.timestamp_millis_opt(ms).single())
        .map_or_else(|| "never".to_string(), |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
}

/// Prints meter status and link counters from the site store named by `config`.
pub fn print(config: &Config) -> anyhow::Result<()> {
    let db = store_path(&config.site.data_dir);
    let conn = Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| anyhow::anyhow!("cannot open store {}: {e} (has amid run started yet?)", db.display()))?;
    let readings: i64 = conn.query_row("SELECT COUNT(*) FROM readings", [], |r| r.get(0))?;
    let oldest: Option<i64> = conn.query_row("SELECT MIN(ts_ms) FROM readings", [], |r| r.get(0))?;
    let newest: Option<i64> = conn.query_row("SELECT MAX(ts_ms) FROM readings", [], |r| r.get(0))?;
    println!("site {}: {readings} readings in {} ({} … {})", config.site.id, db.display(), when(oldest), when(newest));

    println!(
        "\n{:<16} {:<12} {:<21} {:>6} {:>8} {:>8}  LAST ERROR",
        "METER", "BUS", "LAST GOOD READ", "FAILS", "OK", "FAILED"
    );
    let mut stmt = conn.prepare(
        "SELECT last_success_ms, consecutive_failures, reads_ok, reads_failed, last_error
         FROM meter_status WHERE meter = ?1",
    )?;
    for m in &config.meters {
        let row = stmt
            .query_row([&m.id], |r| {
                Ok((
                    r.get::<_, Option<i64>>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<String>>(4)?,
                ))
            })
            .ok();
        match row {
            Some((last, fails, ok, failed, err)) => println!(
                "{:<16} {:<12} {:<21} {fails:>6} {ok:>8} {failed:>8}  {}",
                m.id,
                m.bus,
                when(last),
                err.unwrap_or_default()
            ),
            None => println!("{:<16} {:<12} {:<21} {:>6} {:>8} {:>8}", m.id, m.bus, "not polled yet", "-", "-", "-"),
        }
    }

    // DLMS load profiles: the meter time of the last interval stored (the next read starts after it).
    // Stores written before load profiles existed have no such table.
    let marks: Vec<(String, String, i64)> = conn
        .prepare("SELECT meter, profile, last_ms FROM profile_marks ORDER BY meter, profile")
        .and_then(|mut stmt| {
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<Result<Vec<_>, _>>()
        })
        .unwrap_or_default();
    if !marks.is_empty() {
        println!("\n{:<16} {:<18} LAST INTERVAL STORED (meter time)", "METER", "LOAD PROFILE");
        for (meter, profile, last) in marks {
            println!("{meter:<16} {profile:<18} {}", when(Some(last)));
        }
    }

    println!(
        "\n{:<12} {:<16} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9} {:>9}  LAST SUCCESS",
        "BUS", "METER", "REQUESTS", "REPLIES", "TIMEOUTS", "CHECKSUM", "RETRIES", "REJECTED", "FAILURES"
    );
    let mut stmt = conn.prepare(
        "SELECT bus, meter, requests, replies, timeouts, checksum_errors, retries, rejected, failures, last_success_ms
         FROM link_counters ORDER BY bus, meter",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            [r.get::<_, i64>(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?],
            r.get::<_, Option<i64>>(9)?,
        ))
    })?;
    for row in rows {
        let (bus, meter, c, last) = row?;
        let meter = if meter.is_empty() { "(all)".to_string() } else { meter };
        println!(
            "{bus:<12} {meter:<16} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9} {:>9}  {}",
            c[0],
            c[1],
            c[2],
            c[3],
            c[4],
            c[5],
            c[6],
            when(last)
        );
    }
    Ok(())
}

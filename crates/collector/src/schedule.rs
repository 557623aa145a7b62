//! Poll timing: wall-clock aligned slots and back-off for meters that fail. Pure functions, no clock.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};

/// The first slot strictly after `now` for `interval`, aligned to the Unix epoch in UTC: a 15-min meter
/// is read at :00, :15, :30, :45; an hourly one on the hour; a daily one at 00:00 UTC.
pub fn next_slot(now: DateTime<Utc>, interval: Duration) -> DateTime<Utc> {
    let step = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX).max(1);
    let t = now.timestamp_millis();
    let next = (t.div_euclid(step) + 1).saturating_mul(step);
    Utc.timestamp_millis_opt(next).single().unwrap_or(now + TimeDelta::seconds(1))
}

/// When to try a failed meter again: after `backoff`, but never later than its next regular slot, so a
/// meter that comes back is read on time.
pub fn retry_at(now: DateTime<Utc>, backoff: Duration, interval: Duration) -> DateTime<Utc> {
    let regular = next_slot(now, interval);
    let retry = now + TimeDelta::from_std(backoff).unwrap_or(TimeDelta::MAX);
    retry.min(regular)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn fifteen_minute_meters_are_read_on_the_quarter_hour() {
        let i = Duration::from_secs(900);
        assert_eq!(next_slot(t("2026-11-24T09:07:13Z"), i), t("2026-11-24T09:15:00Z"));
        assert_eq!(next_slot(t("2026-11-24T09:15:00Z"), i), t("2026-11-24T09:30:00Z"));
        assert_eq!(next_slot(t("2026-11-24T23:59:59.999Z"), i), t("2026-11-25T00:00:00Z"));
    }

    #[test]
    fn other_intervals_align_too() {
        assert_eq!(next_slot(t("2026-11-24T09:07:13Z"), Duration::from_secs(3600)), t("2026-11-24T10:00:00Z"));
        assert_eq!(next_slot(t("2026-11-24T09:07:13Z"), Duration::from_secs(5)), t("2026-11-24T09:07:15Z"));
        assert_eq!(next_slot(t("2026-11-24T09:07:13Z"), Duration::from_secs(86400)), t("2026-11-25T00:00:00Z"));
    }

    #[test]
    fn retry_never_skips_the_next_regular_slot() {
        let i = Duration::from_secs(60);
        let now = t("2026-11-24T09:00:50Z");
        assert_eq!(retry_at(now, Duration::from_secs(5), i), t("2026-11-24T09:00:55Z"));
        assert_eq!(retry_at(now, Duration::from_secs(30), i), t("2026-11-24T09:01:00Z"));
    }
}

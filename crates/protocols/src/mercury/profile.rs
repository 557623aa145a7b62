//! Incremental power-profile read-out as a pure planner: which record address to read next, given the
//! last record (`08 13`) and the records read so far.
//!
//! The meter writes one 16-byte record per integration period into memory 3, a ring of
//! [`ProfileWalk::DEFAULT_RECORDS`] records (64 KiB on the Mercury 230: 85 days of half-hour records),
//! and `08 13` says where the newest one is. Each record carries its own stamp, so the walk reads
//! backwards from the newest record (or from a record estimated by time, when `to` lies in the past) and
//! stops at the first record not newer than `from`. Periods without power have no record, so the stamps,
//! not the addresses, decide; an estimate that lands before `to` (records missing in between) falls back
//! to starting at the newest record. The walk also stops at never-written memory (a record that does not
//! decode), at a stamp that does not go back in time (the ring wrapped onto newer records) and after one
//! full turn of the ring.
//!
//! `from` is exclusive and `to` inclusive, both compared with the stamps the meter wrote: reading with
//! `from` = the newest stamp already stored gives exactly the new records.
//!
//! Panic contract: nothing here panics on any input.

use super::request::PROFILE_RECORD_SIZE;
use super::value::{LastRecord, ProfileRecord, Stamp};

/// Plans an incremental power-profile read (see the module doc).
#[derive(Debug, Clone)]
pub struct ProfileWalk {
    from: Stamp,
    to: Stamp,
    last: LastRecord,
    records: u16,
    next: Option<u16>,
    /// The walk started at an estimated address (not at the newest record).
    estimated: bool,
    /// Stamp of the previous record read (the walk goes back in time).
    previous: Option<Stamp>,
    reads: u32,
    found: Vec<ProfileRecord>,
}

impl ProfileWalk {
    /// Records in the Mercury 230's profile memory (65 536 bytes / 16).
    pub const DEFAULT_RECORDS: u16 = 4096;

    /// A walk for the records with `from < stamp <= to`, the newest being `last`, in a ring of `records`
    /// records (0 counts as [`ProfileWalk::DEFAULT_RECORDS`]).
    #[must_use]
    pub fn new(last: LastRecord, from: Stamp, to: Stamp, records: u16) -> Self {
        let records = if records == 0 { Self::DEFAULT_RECORDS } else { records };
        let mut walk =
            Self { from, to, last, records, next: None, estimated: false, previous: None, reads: 0, found: Vec::new() };
        if last.stamp <= from || to <= from {
            return walk;
        }
        if to >= last.stamp {
            walk.next = Some(last.address);
        } else {
            let period = i64::from(last.period.max(1));
            let steps = (last.stamp.minutes() - to.minutes()) / period;
            let steps = u16::try_from(steps.clamp(0, i64::from(records) - 1)).unwrap_or(0);
            walk.next = Some(walk.back(last.address, steps));
            walk.estimated = steps > 0;
        }
        walk
    }

    /// `address` moved back by `steps` records in the ring.
    fn back(&self, address: u16, steps: u16) -> u16 {
        let ring = u32::from(self.records) * u32::from(PROFILE_RECORD_SIZE);
        let offset = u32::from(steps) * u32::from(PROFILE_RECORD_SIZE);
        let a = (u32::from(address) % ring.max(1) + ring - offset % ring.max(1)) % ring.max(1);
        u16::try_from(a).unwrap_or(0)
    }

    /// The byte address of the next record to read, `None` when the walk is over.
    #[must_use]
    pub fn next_address(&self) -> Option<u16> {
        self.next
    }

    /// Whether the walk is over.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.next.is_none()
    }

    /// Records read so far.
    #[must_use]
    pub fn reads(&self) -> u32 {
        self.reads
    }

    /// The record at [`next_address`](Self::next_address) was read: `Some(record)`, or `None` when it did
    /// not decode (never-written memory).
    pub fn handle_record(&mut self, record: Option<ProfileRecord>) {
        let Some(at) = self.next.take() else { return };
        self.reads = self.reads.saturating_add(1);
        let Some(rec) = record else { return };
        let first = self.previous.is_none();
        if self.previous.is_some_and(|p| rec.stamp >= p) {
            // Not going back in time: the ring wrapped onto newer records, or the clock was set back.
            return;
        }
        if first && self.estimated && rec.stamp < self.to {
            // Fewer records than the time span suggests (power cuts): start again from the newest.
            self.estimated = false;
            self.next = Some(self.last.address);
            return;
        }
        self.previous = Some(rec.stamp);
        if rec.stamp <= self.from {
            return;
        }
        if rec.stamp <= self.to {
            self.found.push(rec);
        }
        if self.reads < u32::from(self.records) + 1 {
            self.next = Some(self.back(at, 1));
        }
    }

    /// The records found, oldest first.
    #[must_use]
    pub fn finish(mut self) -> Vec<ProfileRecord> {
        self.found.reverse();
        self.found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(h: u8, m: u8) -> Stamp {
        Stamp::new(2026, 3, 1, h, m).unwrap()
    }

    fn record(s: Stamp) -> ProfileRecord {
        ProfileRecord { status: 0, stamp: s, period: 30, counts: [Some(1), Some(0), Some(2), Some(0)] }
    }

    /// A ring of 8 records; the newest at index `newest`, ending at `last_stamp`; `gap_after` records are
    /// followed by a two-hour hole.
    fn memory(newest: u16, last_stamp: Stamp, written: u16) -> impl Fn(u16) -> Option<ProfileRecord> {
        move |address: u16| {
            let index = address / 16;
            let age = (newest + 8 - index) % 8;
            (age < written).then(|| record(last_stamp.plus_minutes(-30 * i64::from(age))))
        }
    }

    fn run(walk: &mut ProfileWalk, mem: &dyn Fn(u16) -> Option<ProfileRecord>) -> Vec<u16> {
        let mut addresses = Vec::new();
        while let Some(a) = walk.next_address() {
            addresses.push(a);
            walk.handle_record(mem(a));
            assert!(addresses.len() < 100, "walk does not end");
        }
        addresses
    }

    #[test]
    fn new_records_only_newest_first_then_oldest_first_out() {
        let last = LastRecord { address: 0x30, status: 0, stamp: stamp(12, 0), period: 30 };
        let mem = memory(3, stamp(12, 0), 8);
        let mut walk = ProfileWalk::new(last, stamp(10, 30), stamp(23, 0), 8);
        let read = run(&mut walk, &mem);
        assert_eq!(read, [0x30, 0x20, 0x10, 0x00]);
        let got: Vec<Stamp> = walk.finish().iter().map(|r| r.stamp).collect();
        assert_eq!(got, [stamp(11, 0), stamp(11, 30), stamp(12, 0)]);
    }

    #[test]
    fn nothing_new_reads_nothing_and_wrap_stops_the_walk() {
        let last = LastRecord { address: 0x30, status: 0, stamp: stamp(12, 0), period: 30 };
        let walk = ProfileWalk::new(last, stamp(12, 0), stamp(23, 0), 8);
        assert!(walk.is_done());
        // Everything since midnight, but the ring holds 8 records: the walk stops after one turn.
        let mut walk = ProfileWalk::new(last, stamp(0, 0), stamp(23, 0), 8);
        let read = run(&mut walk, &memory(3, stamp(12, 0), 8));
        assert_eq!(read.len(), 9);
        assert_eq!(walk.finish().len(), 8);
        // Only 5 records ever written: stops at the first blank one.
        let mut walk = ProfileWalk::new(last, stamp(0, 0), stamp(23, 0), 8);
        let read = run(&mut walk, &memory(3, stamp(12, 0), 5));
        assert_eq!(read.len(), 6);
        assert_eq!(walk.finish().len(), 5);
    }

    #[test]
    fn a_past_window_starts_at_the_estimated_record() {
        let last = LastRecord { address: 0x70, status: 0, stamp: stamp(12, 0), period: 30 };
        let mem = memory(7, stamp(12, 0), 8);
        let mut walk = ProfileWalk::new(last, stamp(9, 30), stamp(10, 30), 8);
        let read = run(&mut walk, &mem);
        assert_eq!(read, [0x40, 0x30, 0x20]);
        let got: Vec<Stamp> = walk.finish().iter().map(|r| r.stamp).collect();
        assert_eq!(got, [stamp(10, 0), stamp(10, 30)]);
    }

    #[test]
    fn an_estimate_before_the_window_falls_back_to_the_newest_record() {
        // Records every 30 min but no record between 10:00 and 12:00 (a power cut): fewer records than the
        // time span says, so the estimate lands too far back.
        let stamps = [stamp(9, 0), stamp(9, 30), stamp(10, 0), stamp(12, 0)];
        let mem = move |address: u16| stamps.get(usize::from(address / 16)).map(|s| record(*s));
        let last = LastRecord { address: 0x30, status: 0, stamp: stamp(12, 0), period: 30 };
        let mut walk = ProfileWalk::new(last, stamp(9, 0), stamp(11, 0), 8);
        let read = run(&mut walk, &mem);
        assert_eq!(read, [0x10, 0x30, 0x20, 0x10, 0x00]);
        let got: Vec<Stamp> = walk.finish().iter().map(|r| r.stamp).collect();
        assert_eq!(got, [stamp(9, 30), stamp(10, 0)]);
    }
}

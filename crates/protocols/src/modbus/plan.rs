//! Block planning: read many values in as few requests as the profile allows.
//!
//! [`plan`] groups the items of one meter by table, sorts them by address and merges neighbours into
//! read blocks of at most `max_block` registers (or bits), bridging unused gaps of at most `max_gap`.
//! [`Block::request`] is the read for a block; [`Block::slice`] cuts one item's registers out of the reply.
//! Pure and deterministic: the same items always give the same blocks in the same order.

use std::fmt;
use std::str::FromStr;

use super::pdu::{MAX_READ_BITS, MAX_READ_REGISTERS};
use super::{Function, Request};

/// The four Modbus data tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Coils, read with FC 1, written with FC 5 / 15 (profile name `coil`).
    Coil,
    /// Discrete inputs, FC 2 (profile name `discrete`).
    Discrete,
    /// Holding registers, FC 3, written with FC 6 / 16 (profile name `holding`).
    Holding,
    /// Input registers, FC 4 (profile name `input`).
    Input,
}

impl Table {
    /// Every table, in the order error messages list them.
    pub const ALL: [Table; 4] = [Table::Coil, Table::Discrete, Table::Holding, Table::Input];

    /// The name used in profiles (`coil`, `discrete`, `holding`, `input`).
    pub fn name(self) -> &'static str {
        match self {
            Table::Coil => "coil",
            Table::Discrete => "discrete",
            Table::Holding => "holding",
            Table::Input => "input",
        }
    }

    /// The function that reads this table (FC 1, 2, 3 or 4).
    pub fn read_function(self) -> Function {
        match self {
            Table::Coil => Function::ReadCoils,
            Table::Discrete => Function::ReadDiscreteInputs,
            Table::Holding => Function::ReadHoldingRegisters,
            Table::Input => Function::ReadInputRegisters,
        }
    }

    /// Whether entries are single bits (coils, discrete inputs) rather than 16-bit registers.
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::Discrete)
    }

    /// Whether the master can write this table (coils and holding registers).
    pub fn is_writable(self) -> bool {
        matches!(self, Table::Coil | Table::Holding)
    }

    /// The most entries one read of this table may ask for: 2000 bits or 125 registers (spec 6.1–6.4).
    pub fn max_read(self) -> u16 {
        if self.is_bits() {
            MAX_READ_BITS
        } else {
            MAX_READ_REGISTERS
        }
    }

    /// The read request for `count` entries from `address`.
    pub fn read_request(self, address: u16, count: u16) -> Request {
        match self {
            Table::Coil => Request::ReadCoils { address, quantity: count },
            Table::Discrete => Request::ReadDiscreteInputs { address, quantity: count },
            Table::Holding => Request::ReadHoldingRegisters { address, quantity: count },
            Table::Input => Request::ReadInputRegisters { address, quantity: count },
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Table {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Table::ALL.into_iter().find(|t| t.name() == s).ok_or(())
    }
}

/// One value to read: `count` registers (or bits) of `table` starting at `address`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Item {
    /// The table.
    pub table: Table,
    /// First register or bit (0-based protocol address).
    pub address: u16,
    /// Registers or bits; for a register value `ValueType::registers()`.
    pub count: u16,
}

/// One read request covering several items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The table.
    pub table: Table,
    /// First register or bit read.
    pub address: u16,
    /// Registers or bits read.
    pub count: u16,
    /// Indexes into the planned items slice of the items this block covers, in address order.
    pub members: Vec<usize>,
}

impl Block {
    /// The read request for this block.
    pub fn request(&self) -> Request {
        self.table.read_request(self.address, self.count)
    }

    /// One past the last register (or bit) of the block, as u32 (the table ends at 65535).
    pub fn end(&self) -> u32 {
        u32::from(self.address) + u32::from(self.count)
    }

    /// Whether `item` lies wholly inside this block.
    pub fn contains(&self, item: &Item) -> bool {
        item.table == self.table
            && item.address >= self.address
            && u32::from(item.address) + u32::from(item.count) <= self.end()
    }

    /// Cuts `item`'s registers (or bits) out of this block's reply `data` (`Response::Registers` or
    /// `Response::Bits` contents). `None` when the item is not inside the block or `data` is too short.
    pub fn slice<'a, T>(&self, data: &'a [T], item: &Item) -> Option<&'a [T]> {
        if !self.contains(item) {
            return None;
        }
        let start = usize::from(item.address.checked_sub(self.address)?);
        data.get(start..start.checked_add(usize::from(item.count))?)
    }
}

/// Plans the reads for `items`.
///
/// Items are grouped by table (in [`Table::ALL`] order) and sorted by address (ties by index, so the
/// result is deterministic). Neighbours are merged into one block when they are contiguous, overlap, or
/// are separated by at most `max_gap` unused registers, as long as the block stays within `max_block`
/// entries. `max_block` is clamped to the spec limits of the table (1..=125 registers, 1..=2000 bits).
/// An item larger than `max_block` gets a block of its own (whose request the encoder will refuse if it is
/// above the spec limit). Items with `count` 0 read nothing and are left out of every block.
pub fn plan(items: &[Item], max_block: u16, max_gap: u16) -> Vec<Block> {
    let mut blocks = Vec::new();
    for table in Table::ALL {
        let limit = u32::from(max_block.clamp(1, table.max_read()));
        let mut order: Vec<usize> =
            (0..items.len()).filter(|&i| items.get(i).is_some_and(|it| it.table == table && it.count > 0)).collect();
        order.sort_by_key(|&i| items.get(i).map(|it| (it.address, it.count)));

        // The open block: start, end (exclusive, u32), members.
        let mut open: Option<(u32, u32, Vec<usize>)> = None;
        for i in order {
            let Some(item) = items.get(i) else { continue };
            let (start, end) = (u32::from(item.address), u32::from(item.address) + u32::from(item.count));
            if let Some((b_start, b_end, members)) = open.as_mut() {
                let gap = start.saturating_sub(*b_end);
                let new_end = (*b_end).max(end);
                // Items come sorted by address, so the block start is never past its end.
                if gap <= u32::from(max_gap) && new_end.saturating_sub(*b_start) <= limit {
                    *b_end = new_end;
                    members.push(i);
                    continue;
                }
            }
            if let Some(done) = open.replace((start, end, vec![i])) {
                blocks.push(close(table, done));
            }
        }
        if let Some(done) = open {
            blocks.push(close(table, done));
        }
    }
    blocks
}

fn close(table: Table, (start, end, members): (u32, u32, Vec<usize>)) -> Block {
    // Items are u16 address + u16 count, so start fits u16; a block of one item is at most 65535 long and
    // a merged block at most 2000: the fallbacks are unreachable.
    Block {
        table,
        address: u16::try_from(start).unwrap_or(u16::MAX),
        count: u16::try_from(end.saturating_sub(start)).unwrap_or(u16::MAX),
        members,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(address: u16, count: u16) -> Item {
        Item { table: Table::Holding, address, count }
    }

    fn i(address: u16, count: u16) -> Item {
        Item { table: Table::Input, address, count }
    }

    #[test]
    fn contiguous_items_merge_into_one_block() {
        // SDM630 voltages L1..L3 at input registers 0, 2, 4 (f32 each), listed out of order.
        let items = [i(4, 2), i(0, 2), i(2, 2)];
        let blocks = plan(&items, 125, 0);
        assert_eq!(blocks, vec![Block { table: Table::Input, address: 0, count: 6, members: vec![1, 2, 0] }]);
        assert_eq!(blocks[0].request(), Request::ReadInputRegisters { address: 0, quantity: 6 });
        let regs = [10, 11, 20, 21, 40, 41];
        assert_eq!(blocks[0].slice(&regs, &items[0]), Some(&regs[4..6]));
        assert_eq!(blocks[0].slice(&regs, &items[2]), Some(&regs[2..4]));
        // Short reply or item outside the block: None, no panic.
        assert_eq!(blocks[0].slice(&regs[..5], &items[0]), None);
        assert_eq!(blocks[0].slice(&regs, &i(6, 2)), None);
        assert_eq!(blocks[0].slice(&regs, &h(0, 2)), None);
    }

    #[test]
    fn overlapping_items_share_a_block() {
        let items = [h(10, 4), h(12, 2), h(11, 1)];
        let blocks = plan(&items, 125, 0);
        assert_eq!(blocks, vec![Block { table: Table::Holding, address: 10, count: 4, members: vec![0, 2, 1] }]);
    }

    #[test]
    fn max_block_is_respected() {
        let items: Vec<Item> = (0..10).map(|k| h(k * 2, 2)).collect();
        let blocks = plan(&items, 6, 0);
        assert_eq!(blocks.iter().map(|b| (b.address, b.count)).collect::<Vec<_>>(), [(0, 6), (6, 6), (12, 6), (18, 2)]);
        // The spec limit applies when the profile asks for more.
        let many: Vec<Item> = (0..100).map(|k| h(k * 2, 2)).collect();
        let blocks = plan(&many, 1000, 0);
        assert_eq!(blocks.iter().map(|b| b.count).collect::<Vec<_>>(), [124, 76]);
        // max_block 0 acts as 1: every register alone.
        assert_eq!(plan(&[h(0, 1), h(1, 1)], 0, 0).len(), 2);
    }

    #[test]
    fn gaps_are_bridged_up_to_max_gap() {
        let items = [h(0, 2), h(5, 2), h(20, 2)];
        // Gap 0: nothing merges.
        assert_eq!(plan(&items, 125, 0).len(), 3);
        // Gap 3 bridges 2..5 but not 7..20.
        let blocks = plan(&items, 125, 3);
        assert_eq!(blocks.iter().map(|b| (b.address, b.count)).collect::<Vec<_>>(), [(0, 7), (20, 2)]);
        assert_eq!(blocks[0].members, vec![0, 1]);
        let regs: Vec<u16> = (0..7).collect();
        assert_eq!(blocks[0].slice(&regs, &items[1]), Some(&[5u16, 6][..]));
        // A bridged gap still may not break max_block.
        assert_eq!(plan(&items, 6, 3).len(), 3);
    }

    #[test]
    fn tables_are_never_mixed() {
        let items = [
            i(0, 2),
            h(0, 2),
            Item { table: Table::Coil, address: 0, count: 1 },
            h(2, 2),
            Item { table: Table::Discrete, address: 1, count: 1 },
            Item { table: Table::Coil, address: 1, count: 1 },
        ];
        let blocks = plan(&items, 125, 0);
        let got: Vec<_> = blocks.iter().map(|b| (b.table, b.address, b.count, b.members.clone())).collect();
        assert_eq!(
            got,
            vec![
                (Table::Coil, 0, 2, vec![2, 5]),
                (Table::Discrete, 1, 1, vec![4]),
                (Table::Holding, 0, 4, vec![1, 3]),
                (Table::Input, 0, 2, vec![0]),
            ]
        );
        assert_eq!(blocks[0].request(), Request::ReadCoils { address: 0, quantity: 2 });
        let bits = [true, false];
        assert_eq!(blocks[0].slice(&bits, &items[5]), Some(&[false][..]));
    }

    #[test]
    fn bit_tables_allow_2000() {
        let items: Vec<Item> = (0..3000).map(|k| Item { table: Table::Coil, address: k, count: 1 }).collect();
        let blocks = plan(&items, u16::MAX, 0);
        assert_eq!(blocks.iter().map(|b| b.count).collect::<Vec<_>>(), [2000, 1000]);
    }

    #[test]
    fn oversized_item_gets_its_own_block() {
        let items = [h(0, 2), h(2, 10), h(12, 2)];
        let blocks = plan(&items, 4, 0);
        assert_eq!(blocks.iter().map(|b| (b.address, b.count)).collect::<Vec<_>>(), [(0, 2), (2, 10), (12, 2)]);
        // Zero-count items are left out; the end of the table is handled.
        let blocks = plan(&[h(0, 0), h(0xFFFE, 2)], 125, 0);
        assert_eq!(blocks, vec![Block { table: Table::Holding, address: 0xFFFE, count: 2, members: vec![1] }]);
    }

    #[test]
    fn table_names() {
        for t in Table::ALL {
            assert_eq!(t.name().parse::<Table>(), Ok(t));
            assert_eq!(t.to_string(), t.name());
        }
        assert!("holding-register".parse::<Table>().is_err());
        assert_eq!(Table::Input.read_function(), Function::ReadInputRegisters);
        assert_eq!(Table::Coil.read_function().code(), 0x01);
    }

    fn any_item() -> impl Strategy<Value = Item> {
        (0..4usize, 0u16..300, 1u16..8).prop_map(|(t, address, count)| Item { table: Table::ALL[t], address, count })
    }

    proptest! {
        #[test]
        fn every_item_is_in_exactly_one_block_and_blocks_respect_max(
            items in proptest::collection::vec(any_item(), 0..60),
            max_block in 1u16..40,
            max_gap in 0u16..10,
        ) {
            let blocks = plan(&items, max_block, max_gap);
            for (k, item) in items.iter().enumerate() {
                let owners: Vec<&Block> = blocks.iter().filter(|b| b.members.contains(&k)).collect();
                prop_assert_eq!(owners.len(), 1, "item {} {:?}", k, item);
                prop_assert!(owners[0].contains(item));
            }
            for b in &blocks {
                let single_oversized = b.members.len() == 1 && items[b.members[0]].count > max_block;
                prop_assert!(b.count <= max_block || single_oversized, "{:?}", b);
                prop_assert!(b.request().encode().is_ok());
                // The block is no larger than its members need: starts at the first, ends at the last.
                let start = b.members.iter().map(|&m| items[m].address).min().unwrap();
                let end = b.members.iter().map(|&m| u32::from(items[m].address) + u32::from(items[m].count)).max().unwrap();
                prop_assert_eq!((u32::from(b.address), b.end()), (u32::from(start), end));
            }
            prop_assert_eq!(plan(&items, max_block, max_gap), blocks);
        }
    }
}

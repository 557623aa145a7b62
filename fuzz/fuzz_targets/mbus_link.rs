//! Arbitrary bytes into the wired M-Bus link layer and master: the EN 13757-2 deframer and reply matchers
//! (`ami_link::mbus`), the "more records follow" walk, selection masks and the `ReadOut` / `SecondarySearch`
//! state machines fed the bytes as line input (`ami_protocols::mbus::client`). Any input must give a value
//! or an error, never a panic. The harness lives in `ami_protocols::mbus::client::harness` so that a seeded
//! unit test runs the same code in CI without cargo-fuzz.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ami_protocols::mbus::client::harness::mbus_link(data);
});

//! Arbitrary bytes into every Modbus decoder: RTU and TCP framing and reply matching (`ami_link::modbus`),
//! request and response PDUs and register values (`ami_protocols::modbus`). Any input must give a value or
//! an error, never a panic. The harness lives in `ami_protocols::modbus::harness` so that a seeded unit test
//! runs the same code in CI without cargo-fuzz.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ami_protocols::modbus::harness::modbus_codec(data);
});

//! Arbitrary bytes into the Mercury 230 decoders (`ami_protocols::mercury`): frame and CRC check, the reply
//! matcher, the meter-side request parser, every reply-data decoder, `describe`, the power-profile walk and
//! the sans-IO session fed the bytes as line input. Any input must give a value or an error, never a panic.
//! The harness lives in `ami_protocols::mercury::harness` so that a seeded unit test runs the same code in
//! CI without cargo-fuzz. (The `[[bin]]` entry in fuzz/Cargo.toml is added by the lead.)
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ami_protocols::mercury::harness::mercury(data);
});

//! Arbitrary bytes, read as lossy UTF-8 text, into the device profile parser (`ami_device::parse_profile`):
//! any input must give a profile or located errors, never a panic; an accepted profile must plan into
//! Modbus reads that cover every value once. The harness lives in `ami_device::harness` so that a seeded
//! unit test runs the same code in CI without cargo-fuzz.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ami_device::harness::profile_xml(data);
});

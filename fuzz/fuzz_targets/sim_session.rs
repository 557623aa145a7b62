//! Arbitrary bytes into the simulator's server session (`ami_sim::Session`), RTU and MBAP framing: no input
//! panics it, its buffer stays bounded, and every reply is a well-formed frame the master accepts. The
//! harness lives in `ami_sim::harness` so that a seeded unit test runs the same code in CI without
//! cargo-fuzz.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ami_sim::harness::sim_session(data);
});

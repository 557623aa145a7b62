//! Arbitrary bytes into the DLMS/COSEM APDU decoder (`ami_protocols::dlms::apdu`, IEC 62056-5-3): ACSE
//! (AARQ/AARE/RLRQ/RLRE in BER), xDLMS GET/SET/ACTION of every variant, exception responses and the
//! glo-ciphered envelopes, which are then opened with a fixed key set (`dlms::security`). Any input must
//! give a value or an error, never a panic, and a decoded APDU must re-encode stably. The harness lives in
//! `ami_protocols::dlms::harness` so that a seeded unit test runs the same code in CI without cargo-fuzz.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ami_protocols::dlms::harness::apdu(data);
    ami_protocols::dlms::harness::unwrap_ciphered(data);
});

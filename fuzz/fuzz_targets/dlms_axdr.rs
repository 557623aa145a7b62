//! Arbitrary bytes into the A-XDR `Data` codec (`ami_protocols::dlms::axdr`, IEC 62056-6-2): every DLMS
//! data type, nested arrays and structures, compact arrays, date-times and lengths. Any input must give a
//! value or an error, never a panic, and a decoded value must re-encode stably. The harness lives in
//! `ami_protocols::dlms::harness`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ami_protocols::dlms::harness::axdr(data);
});

//! Arbitrary bytes into the M-Bus application-layer decoder (`ami_protocols::mbus::app`): as a long frame,
//! as the user data of each CI, and wrapped in a valid long frame so mutations reach the records. Any input
//! must give a telegram or an error, never a panic; a decoded telegram accounts for no more bytes than it was
//! given and re-decodes to itself. The harness lives in `ami_protocols::mbus::app::harness` so that a
//! seeded unit test runs the same code in CI without cargo-fuzz.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ami_protocols::mbus::app::harness::mbus_app(data);
});
